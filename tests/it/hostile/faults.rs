//! Storage that stops answering or drops connections.

use crate::proxy::{Mode, Proxy};
use crate::{app_at, sdk_for, upstream};
use harness::hook::Hook;
use harness::Client;
use http::Method;
use serde_json::json;
use std::time::{Duration, Instant};
use zaqar::config::Config;

const JSON_PATCH: &str = "application/openstack-messaging-v2.0-json-patch";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frozen_storage_answers_503_with_retry_after_within_5_s() {
    harness::app().await; // the table exists
    let proxy = Proxy::start(upstream()).await;
    let app = app_at(&proxy.endpoint(), Config::for_tests("zaqar-tests")).await;
    let c = Client::new(&app);
    // Connections are pooled and warm when DynamoDB stops answering.
    assert_eq!(c.put("/v2/queues/fz", None).await.status, 201);
    assert_eq!(c.post("/v2/queues/fz/messages", r#"{"messages": [{"body": 1, "ttl": 300}]}"#).await.status, 201);
    proxy.set(Mode::Freeze);
    let json = |m: Method, path: &str, body: &str| {
        c.request(m, path).header("Content-Type", "application/json").body(body.as_bytes().to_vec())
    };
    let requests = vec![
        c.request(Method::PUT, "/v2/queues/fz2"),
        c.request(Method::GET, "/v2/queues/fz"),
        c.request(Method::PATCH, "/v2/queues/fz")
            .header("Content-Type", JSON_PATCH)
            .body(br#"[{"op": "add", "path": "/metadata/a", "value": 1}]"#.to_vec()),
        c.request(Method::GET, "/v2/queues"),
        c.request(Method::GET, "/v2/queues/fz/stats"),
        json(Method::POST, "/v2/queues/fz/messages", r#"{"messages": [{"body": 2, "ttl": 300}]}"#),
        c.request(Method::GET, "/v2/queues/fz/messages?echo=true"),
        json(Method::POST, "/v2/queues/fz/claims", r#"{"ttl": 60, "grace": 60}"#),
        c.request(Method::DELETE, "/v2/queues/fz/messages?pop=2"),
        json(Method::POST, "/v2/queues/fz/subscriptions", r#"{"subscriber": "http://127.0.0.1:9/x"}"#),
        c.request(Method::GET, "/v2/queues/fz/subscriptions"),
        c.request(Method::GET, "/v2/pools").header("X-Roles", "admin"),
        c.request(Method::DELETE, "/v2/queues/fz"),
    ];
    let mut answers = futures::future::join_all(requests.into_iter().map(|req| {
        let c = &c;
        async move {
            let what = format!("{} {}", req.method, req.path);
            let started = Instant::now();
            // Bounded here too, so the test ends (and says which) when a request would hang.
            let resp = tokio::time::timeout(Duration::from_secs(8), c.send(req)).await;
            (what, started.elapsed(), resp)
        }
    }))
    .await;
    // Ping trusts a storage answer of the last 2 s: by now the last one is older.
    let started = Instant::now();
    let ping = tokio::time::timeout(Duration::from_secs(8), c.get("/v2/ping")).await;
    answers.push(("GET /v2/ping".into(), started.elapsed(), ping));
    proxy.set(Mode::Pass);
    let slowest = answers.iter().map(|(_, took, _)| *took).max().unwrap_or_default();
    eprintln!("{} requests against frozen storage, slowest answer after {slowest:?}", answers.len());
    for (what, took, resp) in answers {
        let resp = resp.unwrap_or_else(|_| panic!("{what} still unanswered after 8 s"));
        assert!(took < Duration::from_secs(5), "{what} took {took:?}");
        assert_eq!(resp.status, 503, "{what}: {:?}", resp.json_body());
        let retry_after: u32 = resp.header_value("retry-after").and_then(|v| v.parse().ok()).unwrap_or(0);
        assert!(retry_after >= 1, "{what} has no Retry-After");
        if what != "GET /v2/ping" {
            assert_eq!(resp.json_body()["title"], "Service temporarily unavailable", "{what}");
        }
    }
    // Once DynamoDB answers again, so does the service.
    let back = Instant::now();
    while c.get("/v2/ping").await.status != 204 {
        assert!(back.elapsed() < Duration::from_secs(15), "storage did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(c.get("/v2/queues/fz/stats").await.status, 200);
}

/// The local stack's stream poller loses its connection to the stream; a message posted meanwhile is
/// delivered once the stream is back (it used to restart at LATEST and skip it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stream_poller_resumes_where_it_was_after_an_error() {
    // Its own table: the poller fans out everything in the stream, and other tests must not see it.
    let app = harness::app_with(Config::for_tests("zaqar-hostile-poller")).await;
    let c = Client::new(&app);
    let hook = Hook::start(204, Duration::ZERO).await;
    let sub = json!({"subscriber": hook.url("/p")}).to_string();
    assert_eq!(c.post("/v2/queues/pq/subscriptions", &sub).await.status, 201);
    let proxy = Proxy::start(upstream()).await;
    let streams = aws_sdk_dynamodbstreams::Client::new(&sdk_for(&proxy.endpoint()).await);
    let settings = zaqar_fanout::Settings {
        budget: Duration::from_secs(2),
        attempt_timeout: Duration::from_secs(2),
        concurrency: 4,
    };
    let tables = aws_sdk_dynamodb::Client::new(&sdk_for(&proxy.endpoint()).await);
    let poller = tokio::spawn(zaqar_local::poller::run(app.clone(), tables, streams, settings));
    // The poller positions itself at LATEST: post until a message comes through.
    let mut sent = 0;
    while hook.received().is_empty() {
        assert!(sent < 20, "the poller never delivered");
        sent += 1;
        c.post("/v2/queues/pq/messages", &json!({"messages": [{"body": {"n": sent}, "ttl": 300}]}).to_string()).await;
        hook.wait_for(1, Duration::from_millis(1500)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = hook.received().len();
    // The stream drops every connection; a message is posted meanwhile (straight to DynamoDB).
    proxy.set(Mode::Reset);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = c.post("/v2/queues/pq/messages", r#"{"messages": [{"body": "during the outage", "ttl": 300}]}"#).await;
    assert_eq!(during.status, 201);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.set(Mode::Pass);
    let got = hook.wait_for(before + 1, Duration::from_secs(15)).await;
    poller.abort();
    assert!(got.iter().any(|b| b.contains("during the outage")), "skipped: {got:?}");
    assert_eq!(got.iter().filter(|b| b.contains("during the outage")).count(), 1);
}
