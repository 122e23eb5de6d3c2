//! Fan-out under hostile stored data and slow subscribers: records isolated, the budget kept, stream
//! retries without repeats. Also the subscriber uniqueness race that feeds it.

use crate::{insert_record, seq_of};
use aws_sdk_dynamodb::types::AttributeValue;
use harness::hook::Hook;
use harness::Client;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use zaqar::keys;
use zaqar::types::{ProjectId, QueueName};
use zaqar::App;
use zaqar_fanout::Settings;

fn ids(c: &Client<'_>, queue: &str) -> (ProjectId, QueueName) {
    (ProjectId::parse(&c.project).unwrap(), QueueName::parse(queue).unwrap())
}

async fn subscribe(c: &Client<'_>, queue: &str, subscriber: &str) -> String {
    let r = c.post(&format!("/v2/queues/{queue}/subscriptions"), &json!({"subscriber": subscriber}).to_string()).await;
    assert_eq!(r.status, 201, "{:?}", r.json_body());
    r.json_body()["subscription_id"].as_str().unwrap().to_string()
}

/// Posts one message and returns its INSERT record.
async fn post_one(c: &Client<'_>, queue: &str, body: Value) -> Value {
    let r = c
        .post(&format!("/v2/queues/{queue}/messages"), &json!({"messages": [{"body": body, "ttl": 300}]}).to_string())
        .await;
    assert_eq!(r.status, 201, "{:?}", r.json_body());
    let href = r.json_body()["resources"][0].as_str().unwrap().to_string();
    let (project, queue) = ids(c, queue);
    let key = c.app.store.message_key_of(&project, &queue, href.rsplit('/').next().unwrap()).await.unwrap().unwrap();
    insert_record(&harness::raw_item(c.app, key).await.expect("item exists"))
}

async fn run(app: &App, settings: &Settings, records: Vec<Value>) -> Vec<String> {
    let event = zaqar_fanout::parse_event(json!({ "Records": records }));
    let resp = zaqar_fanout::handle_with(app, settings, event).await;
    resp.batch_item_failures.into_iter().filter_map(|f| f.item_identifier).collect()
}

fn settings(budget_ms: u64, concurrency: usize) -> Settings {
    Settings { budget: Duration::from_millis(budget_ms), attempt_timeout: Duration::from_secs(3), concurrency }
}

#[tokio::test]
async fn a_poisonous_stored_policy_costs_no_other_record() {
    let app = harness::app().await;
    let (bad, good) = (Client::new(&app), Client::new(&app)); // two projects
    let failing = Hook::start(500, Duration::ZERO).await;
    let healthy = Hook::start(204, Duration::ZERO).await;
    let sid = subscribe(&bad, "q", &failing.url("/")).await;
    // A policy stored before policies were range-checked: delays no clock can add.
    let poison = json!({"_retry_policy": {"retries_with_no_delay": 0, "minimum_delay_retries": 1,
        "minimum_delay": i64::MAX, "maximum_delay": i64::MAX}});
    let (project, queue) = ids(&bad, "q");
    app.store
        .client
        .update_item()
        .table_name(&app.store.table)
        .set_key(Some(keys::subscription(&project, &queue, &sid)))
        .update_expression("SET #o = :o")
        .expression_attribute_names("#o", "options")
        .expression_attribute_values(":o", AttributeValue::S(poison.to_string()))
        .send()
        .await
        .unwrap();
    subscribe(&good, "q", &healthy.url("/")).await;
    let poisoned = post_one(&bad, "q", json!("bad")).await;
    let fine = post_one(&good, "q", json!("good")).await;
    let failed = run(&app, &settings(1000, 8), vec![poisoned.clone(), fine]).await;
    assert_eq!(healthy.received().len(), 1, "the other project's record was delivered");
    assert_eq!(failing.received().len(), 1, "first attempt only: the retry is beyond any budget");
    assert_eq!(failed, vec![seq_of(&poisoned)], "left to the stream's retry");
}

#[tokio::test]
async fn no_delivery_starts_after_the_budget_and_retries_skip_whom_was_served() {
    let app = harness::app().await;
    let c = Client::new(&app);
    let mut hooks = Vec::new();
    for _ in 0..6 {
        let hook = Hook::start(204, Duration::from_millis(1000)).await;
        subscribe(&c, "q", &hook.url("/")).await;
        hooks.push(hook);
    }
    let record = post_one(&c, "q", json!("slow")).await;
    // Two at a time, 1 s each, 1.5 s budget: four start in time, two would start at 2 s.
    let s = settings(1500, 2);
    let started = Instant::now();
    let failed = run(&app, &s, vec![record.clone()]).await;
    let took = started.elapsed();
    let served = hooks.iter().filter(|h| h.received().len() == 1).count();
    assert_eq!((served, failed.clone()), (4, vec![seq_of(&record)]), "took {took:?}");
    assert!(took < Duration::from_millis(2800), "the invocation ran past budget + one attempt: {took:?}");
    // The stream's retry of the record serves the other two, and nobody twice.
    assert_eq!(run(&app, &s, vec![record]).await, Vec::<String>::new());
    assert!(
        hooks.iter().all(|h| h.received().len() == 1),
        "{:?}",
        hooks.iter().map(|h| h.received().len()).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_retry_from_a_failed_record_does_not_repeat_the_finished_ones_after_it() {
    let app = harness::app().await;
    let (slow, fast) = (Client::new(&app), Client::new(&app));
    let failing = Hook::start(503, Duration::ZERO).await;
    let healthy = Hook::start(204, Duration::ZERO).await;
    let policy = json!({"subscriber": failing.url("/"), "options": {"_retry_policy": {"retries_with_no_delay": 0,
        "minimum_delay_retries": 0, "maximum_delay_retries": 1, "minimum_delay": 5, "maximum_delay": 15}}});
    assert_eq!(slow.post("/v2/queues/q/subscriptions", &policy.to_string()).await.status, 201);
    subscribe(&fast, "q", &healthy.url("/")).await;
    let first = post_one(&slow, "q", json!(1)).await;
    let second = post_one(&fast, "q", json!(2)).await;
    let s = settings(1000, 8);
    assert_eq!(run(&app, &s, vec![first.clone(), second.clone()]).await, vec![seq_of(&first)]);
    assert_eq!(healthy.received().len(), 1);
    // Lambda re-sends the batch from the first failed record on: the second comes again.
    assert_eq!(run(&app, &s, vec![first.clone(), second]).await, vec![seq_of(&first)]);
    assert_eq!(healthy.received().len(), 1, "the finished record was delivered again");
    assert_eq!(failing.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn creates_racing_over_an_expired_subscription_make_exactly_one() {
    let app = harness::app().await;
    let c = Client::new(&app);
    for round in 0..6 {
        let queue = format!("race{round}");
        let body = json!({"subscriber": "http://127.0.0.1:9/race", "ttl": 60}).to_string();
        assert_eq!(c.post(&format!("/v2/queues/{queue}/subscriptions"), &body).await.status, 201);
        app.store.clock.advance_secs(61); // its marker is now stale
        let path = format!("/v2/queues/{queue}/subscriptions");
        let creates = (0..8).map(|_| c.post(&path, &body));
        let answers = futures::future::join_all(creates).await;
        let mut got: Vec<String> = answers
            .iter()
            .map(|r| {
                assert_eq!(r.status, 201, "{:?}", r.json_body());
                r.json_body()["subscription_id"].as_str().unwrap().to_string()
            })
            .collect();
        got.sort();
        got.dedup();
        let listed = c.get(&format!("/v2/queues/{queue}/subscriptions")).await.json_body();
        let live = listed["subscriptions"].as_array().unwrap().len();
        assert_eq!((live, got.len()), (1, 1), "round {round}: {got:?}");
    }
}
