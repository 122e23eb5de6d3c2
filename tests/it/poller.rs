//! The local stream poller end to end, over DynamoDB Local's stream: posts to a queue without
//! subscriptions never invoke the fan-out (the stream filter drops their records before any invocation,
//! as Lambda's event-source filter does), and a post to a subscribed queue does and reaches its webhook.

use harness::hook::Hook;
use harness::*;
use std::time::Duration;
use zaqar::config::Config;

/// Stream and table clients for the test endpoint, as the local server builds them from its environment.
async fn stream_clients() -> (aws_sdk_dynamodb::Client, aws_sdk_dynamodbstreams::Client) {
    let sdk = local_sdk(&endpoint()).load().await;
    (aws_sdk_dynamodb::Client::new(&sdk), aws_sdk_dynamodbstreams::Client::new(&sdk))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_to_queues_without_subscriptions_invoke_no_fan_out() {
    // A table of its own, so no other test's records reach this poller.
    let table = format!("zaqar-poller-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let app = app_with(Config::for_tests(&table)).await;
    let (tables, streams) = stream_clients().await;
    let settings = zaqar_fanout::Settings {
        budget: Duration::from_secs(4),
        attempt_timeout: Duration::from_secs(2),
        concurrency: 8,
    };
    tokio::spawn(zaqar_local::poller::run(app.clone(), tables, streams, settings));
    // The poller reads open shards from LATEST: let it position before anything is written.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c = Client::new(&app);
    let start = zaqar_local::poller::invocations();

    for batch in 0..5 {
        let messages: Vec<_> = (0..5).map(|i| serde_json::json!({"body": {"b": batch, "i": i}, "ttl": 300})).collect();
        let r = c.post("/v2/queues/quiet/messages", &serde_json::json!({ "messages": messages }).to_string()).await;
        assert_eq!(r.status, 201);
    }
    let r = c.post("/v2/queues/quiet/claims?limit=5", r#"{"ttl": 60, "grace": 60}"#).await;
    assert_eq!(r.status, 201);
    // Several poll rounds (200 ms each when idle) pass over those records.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(zaqar_local::poller::invocations(), start, "records of an unsubscribed queue invoked the fan-out");

    // The same poller does invoke it for a subscribed queue: the count above was not zero by accident.
    let hook = Hook::start(200, Duration::ZERO).await;
    let subscription = serde_json::json!({"subscriber": hook.url("/hook"), "ttl": 3600});
    let r = c.post("/v2/queues/loud/subscriptions", &subscription.to_string()).await;
    assert_eq!(r.status, 201, "{:?}", r.json_body());
    let r = c.post("/v2/queues/loud/messages", r#"{"messages": [{"body": "hello", "ttl": 300}]}"#).await;
    assert_eq!(r.status, 201);
    let got = hook.wait_for(1, Duration::from_secs(20)).await;
    assert!(got.iter().any(|b| b.contains("hello")), "the subscribed queue's message never arrived: {got:?}");
    assert!(zaqar_local::poller::invocations() > start);
}
