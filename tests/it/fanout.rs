//! Fan-out handler against DynamoDB Local: stream events built from the real items (the shape Lambda
//! delivers), webhook receivers and an SMTP sink on 127.0.0.1 run by the tests themselves.

use aws_sdk_dynamodb::types::AttributeValue;
use harness::hook::Hook;
use harness::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use zaqar::config::Config;
use zaqar::keys;
use zaqar::types::{ProjectId, QueueName};
use zaqar::App;
use zaqar_fanout::Settings;

// ---------------------------------------------------------------- test servers

/// A minimal SMTP sink: accepts everything and keeps each message's DATA.
async fn smtp_sink() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mails = Arc::new(Mutex::new(Vec::new()));
    let sink = mails.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut reader = BufReader::new(read);
                let _ = write.write_all(b"220 sink ESMTP\r\n").await;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let verb = line.trim_end().to_ascii_uppercase();
                    let reply: &[u8] = if verb.starts_with("EHLO") || verb.starts_with("HELO") {
                        b"250-sink\r\n250 8BITMIME\r\n"
                    } else if verb.starts_with("DATA") {
                        let _ = write.write_all(b"354 go ahead\r\n").await;
                        let mut data = String::new();
                        loop {
                            let mut l = String::new();
                            if reader.read_line(&mut l).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if l == ".\r\n" {
                                break;
                            }
                            data.push_str(&l);
                        }
                        sink.lock().unwrap().push(data);
                        b"250 queued\r\n"
                    } else if verb.starts_with("QUIT") {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        b"250 ok\r\n"
                    };
                    if write.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, mails)
}

// ---------------------------------------------------------------- events

fn settings(budget_ms: u64) -> Settings {
    Settings { budget: Duration::from_millis(budget_ms), attempt_timeout: Duration::from_secs(2), concurrency: 8 }
}

async fn item(app: &App, key: RawItem) -> RawItem {
    raw_item(app, key).await.expect("item exists")
}

fn dynamo_json(item: &HashMap<String, AttributeValue>) -> Value {
    serde_json::to_value(serde_dynamo::Item::from(item.clone())).unwrap()
}

static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1000);

/// A stream record as Lambda delivers it.
fn record(name: &str, new: &HashMap<String, AttributeValue>, old: Option<&HashMap<String, AttributeValue>>) -> Value {
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let keys: HashMap<String, AttributeValue> =
        new.iter().filter(|(k, _)| *k == "pk" || *k == "sk").map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut change = json!({
        "ApproximateCreationDateTime": 1.7e9,
        "Keys": dynamo_json(&keys),
        "NewImage": dynamo_json(new),
        "SequenceNumber": format!("{seq:021}"),
        "SizeBytes": 100,
        "StreamViewType": "NEW_AND_OLD_IMAGES"
    });
    if let Some(old) = old {
        change["OldImage"] = dynamo_json(old);
    }
    json!({
        "eventID": format!("e{seq}"), "eventName": name, "eventVersion": "1.1", "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1", "dynamodb": change,
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:000000000000:table/zaqar-tests/stream/2026-01-01T00:00:00.000"
    })
}

fn ids(c: &Client<'_>) -> (ProjectId, QueueName) {
    (ProjectId::parse(&c.project).unwrap(), QueueName::parse("q1").unwrap())
}

/// Posts messages and returns their INSERT records.
async fn post_records(c: &Client<'_>, body: Value) -> Vec<Value> {
    let r = c.post("/v2/queues/q1/messages", &body.to_string()).await;
    assert_eq!(r.status, 201, "{:?}", r.json_body());
    let (project, queue) = ids(c);
    let mut out = Vec::new();
    for href in r.json_body()["resources"].as_array().unwrap() {
        let id = href.as_str().unwrap().rsplit('/').next().unwrap();
        let key = c.app.store.message_key_of(&project, &queue, id).await.unwrap().unwrap();
        out.push(record("INSERT", &item(c.app, key).await, None));
    }
    out
}

async fn subscribe(c: &Client<'_>, subscriber: &str, options: Value) -> String {
    let r =
        c.post("/v2/queues/q1/subscriptions", &json!({"subscriber": subscriber, "options": options}).to_string()).await;
    assert_eq!(r.status, 201, "{:?}", r.json_body());
    r.json_body()["subscription_id"].as_str().unwrap().to_string()
}

async fn subscription_item(c: &Client<'_>, sid: &str) -> RawItem {
    let (project, queue) = ids(c);
    item(c.app, keys::subscription(&project, &queue, sid)).await
}

async fn run(app: &App, records: Vec<Value>, budget_ms: u64) -> Vec<String> {
    let event = zaqar_fanout::parse_event(json!({ "Records": records }));
    let resp = zaqar_fanout::handle_with(app, &settings(budget_ms), event).await;
    resp.batch_item_failures.into_iter().filter_map(|f| f.item_identifier).collect()
}

fn seq_of(record: &Value) -> String {
    record["dynamodb"]["SequenceNumber"].as_str().unwrap().to_string()
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn each_message_reaches_each_subscriber_with_zaqars_body() {
    let app = app().await;
    let c = Client::new(&app);
    let plain = Hook::ok().await;
    let templated = Hook::ok().await;
    subscribe(&c, &plain.url("/hook"), json!({"post_headers": {"X-Token": "s3cret"}})).await;
    subscribe(
        &c,
        &templated.url("/in"),
        json!({"post_data": "{\"messages\": [{\"body\": \"$zaqar_message$\", \"ttl\": 60}]}"}),
    )
    .await;
    let records = post_records(
        &c,
        json!({"messages": [{"body": {"event": "BackupStarted"}, "ttl": 300}, {"body": "é", "ttl": 120}]}),
    )
    .await;
    assert_eq!(run(&app, records, 3000).await, Vec::<String>::new());
    let got = plain.received();
    assert_eq!(got.len(), 2);
    let mut bodies: Vec<String> = got.iter().map(|r| r.body.clone()).collect();
    bodies.sort();
    assert_eq!(
        bodies,
        vec![
            r#"{"ttl": 120, "body": "\u00e9", "Message_Type": "Notification", "queue_name": "q1"}"#.to_string(),
            r#"{"ttl": 300, "body": {"event": "BackupStarted"}, "Message_Type": "Notification", "queue_name": "q1"}"#
                .to_string(),
        ]
    );
    assert!(got.iter().all(|r| r.path == "/hook"
        && r.headers["content-type"] == "application/json"
        && r.headers["x-token"] == "s3cret"));
    let templated: Vec<String> = templated.received().iter().map(|r| r.body.clone()).collect();
    assert!(templated.contains(
        &r#"{"messages": [{"body": {"ttl": 300, "body": {"event": "BackupStarted"}, "Message_Type": "Notification", "queue_name": "q1"}, "ttl": 60}]}"#.to_string()
    ));
}

#[tokio::test]
async fn delayed_queue_notifications_carry_delay() {
    let app = app().await;
    let c = Client::new(&app);
    assert_eq!(c.put("/v2/queues/q1", Some(r#"{"_default_message_delay": 30}"#)).await.status, 201);
    let hook = Hook::ok().await;
    subscribe(&c, &hook.url("/"), json!({})).await;
    let records = post_records(&c, json!({"messages": [{"body": 1, "ttl": 300}]})).await;
    run(&app, records, 3000).await;
    assert_eq!(
        hook.received()[0].body,
        r#"{"ttl": 300, "body": 1, "delay": 30, "Message_Type": "Notification", "queue_name": "q1"}"#
    );
}

#[tokio::test]
async fn failing_subscriber_is_retried_per_policy_without_blocking_others() {
    let app = app().await;
    let c = Client::new(&app);
    let broken = Hook::responding(Arc::new(|_| (500, vec![]))).await;
    let healthy = Hook::ok().await;
    // Policy: 2 immediate retries, then a backoff starting at 5 s, beyond the 1 s budget.
    let policy = json!({"_retry_policy": {"retries_with_no_delay": 2, "minimum_delay_retries": 0, "maximum_delay_retries": 0, "minimum_delay": 5, "maximum_delay": 15}});
    subscribe(&c, &broken.url("/"), policy).await;
    subscribe(&c, &healthy.url("/"), json!({})).await;
    let records = post_records(&c, json!({"messages": [{"body": "m", "ttl": 300}]})).await;
    let seq = seq_of(&records[0]);
    let started = std::time::Instant::now();
    assert_eq!(run(&app, records.clone(), 1000).await, vec![seq.clone()], "deferred to a stream retry");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(broken.received().len(), 3, "first attempt + 2 immediate retries");
    assert_eq!(healthy.received().len(), 1);
    // The stream's retry: the healthy subscriber is not notified twice.
    assert_eq!(run(&app, records, 1000).await, vec![seq]);
    assert_eq!(broken.received().len(), 6);
    assert_eq!(healthy.received().len(), 1);
}

#[tokio::test]
async fn exhausted_policy_drops_and_4xx_is_not_retried() {
    let app = app().await;
    let c = Client::new(&app);
    let broken = Hook::responding(Arc::new(|_| (503, vec![]))).await;
    let refusing = Hook::responding(Arc::new(|_| (404, vec![]))).await;
    let flaky = Hook::responding(Arc::new(|n| (if n < 3 { 502 } else { 204 }, vec![]))).await;
    // minimum_delay 30 = maximum_delay default: no delayed retries, only the 2 immediate ones.
    let policy = json!({"_retry_policy": {"retries_with_no_delay": 2, "minimum_delay_retries": 0, "maximum_delay_retries": 0, "minimum_delay": 30}});
    subscribe(&c, &broken.url("/"), policy.clone()).await;
    subscribe(&c, &refusing.url("/"), json!({})).await;
    subscribe(&c, &flaky.url("/"), policy).await;
    let records = post_records(&c, json!({"messages": [{"body": "m", "ttl": 300}]})).await;
    assert_eq!(run(&app, records, 3000).await, Vec::<String>::new());
    assert_eq!(broken.received().len(), 3);
    assert_eq!(refusing.received().len(), 1);
    assert_eq!(flaky.received().len(), 3, "succeeded on the second retry");
}

#[tokio::test]
async fn queue_retry_policy_applies_unless_overridden() {
    let app = app().await;
    let c = Client::new(&app);
    let meta = json!({"_retry_policy": {"retries_with_no_delay": 1, "minimum_delay_retries": 0, "maximum_delay_retries": 0, "minimum_delay": 30}});
    assert_eq!(c.put("/v2/queues/q1", Some(&meta.to_string())).await.status, 201);
    let broken = Hook::responding(Arc::new(|_| (500, vec![]))).await;
    subscribe(&c, &broken.url("/"), json!({})).await;
    let records = post_records(&c, json!({"messages": [{"body": "m", "ttl": 300}]})).await;
    assert_eq!(run(&app, records, 3000).await, Vec::<String>::new());
    assert_eq!(broken.received().len(), 2, "queue policy: 1 immediate retry");
}

#[tokio::test]
async fn refused_destinations_get_nothing() {
    let mut config = Config::for_tests("zaqar-tests");
    config.webhook_allow = vec!["hooks.localhost.test".into()];
    let app = app_with(config).await;
    let c = Client::new(&app);
    let target = Hook::ok().await;
    // A name that resolves to loopback is refused after DNS.
    subscribe(&c, &format!("http://localhost:{}/", target.port), json!({})).await;
    let records = post_records(&c, json!({"messages": [{"body": "m", "ttl": 300}]})).await;
    assert_eq!(run(&app, records, 3000).await, Vec::<String>::new(), "refusals are final, not retried");
    assert!(target.received().is_empty());
}

#[tokio::test]
async fn redirects_are_checked_at_every_hop() {
    let mut config = Config::for_tests("zaqar-tests");
    config.webhook_allow = vec!["localhost".into()];
    let app = app_with(config).await;
    let c = Client::new(&app);
    let inner = Hook::ok().await;
    let inner_url = inner.url("/internal");
    let outer = Hook::responding(Arc::new(move |_| (302, vec![("Location".to_string(), inner_url.clone())]))).await;
    subscribe(&c, &format!("http://localhost:{}/", outer.port), json!({})).await;
    let records = post_records(&c, json!({"messages": [{"body": "m", "ttl": 300}]})).await;
    assert_eq!(run(&app, records, 3000).await, Vec::<String>::new());
    assert_eq!(outer.received().len(), 1);
    assert!(inner.received().is_empty(), "the hop to 127.0.0.1 is not allowed");
}

#[tokio::test]
async fn confirmation_flow_end_to_end() {
    let mut config = Config::for_tests("zaqar-tests");
    config.require_confirmation = true;
    config.public_url = Some("http://zaqar.test".into());
    let app = app_with(config).await;
    let c = Client::new(&app);
    let hook = Hook::ok().await;
    let sid = subscribe(&c, &hook.url("/hook"), json!({})).await;
    let created = subscription_item(&c, &sid).await;
    assert_eq!(run(&app, vec![record("INSERT", &created, None)], 3000).await, Vec::<String>::new());
    let got = hook.received();
    assert_eq!(got.len(), 1);
    let doc: Value = serde_json::from_str(&got[0].body).unwrap();
    let path = format!("/v2/queues/q1/subscriptions/{sid}/confirm");
    assert_eq!(doc["Message_Type"], json!("SubscriptionConfirmation"));
    assert_eq!(doc["Message"], json!("You have chosen to subscribe to the queue: q1"));
    assert_eq!(doc["URL-Methods"], json!("PUT"));
    assert_eq!(doc["URL-Paths"], json!(path));
    assert_eq!(doc["X-Project-ID"], json!(c.project));
    assert_eq!(doc["SubscribeBody"], json!({"confirmed": true}));
    assert_eq!(doc["UnsubscribeBody"], json!({"confirmed": false}));
    assert_eq!(doc["WSGISubscribeURL"], json!(format!("http://zaqar.test{path}")));
    assert_eq!(doc["queue_name"], json!("q1"));
    // Unconfirmed: messages are not delivered.
    let records = post_records(&c, json!({"messages": [{"body": "early", "ttl": 300}]})).await;
    run(&app, records, 3000).await;
    assert_eq!(hook.received().len(), 1);
    // The subscriber confirms with exactly the pre-signed headers it received (no project header of its own).
    let s = |k: &str| doc[k].as_str().unwrap().to_string();
    let req = zaqar::ApiRequest::new(http::Method::PUT, &s("URL-Paths"))
        .header("Client-ID", OTHER_CLIENT)
        .header("X-Project-ID", &s("X-Project-ID"))
        .header("URL-Signature", &s("URL-Signature"))
        .header("URL-Methods", &s("URL-Methods"))
        .header("URL-Paths", &s("URL-Paths"))
        .header("URL-Expires", &s("URL-Expires"))
        .header("Content-Type", "application/json")
        .body(r#"{"confirmed": true}"#);
    assert_eq!(call(&app, req.clone()).await.status, 204);
    assert_eq!(sj(&c.get(&format!("/v2/queues/q1/subscriptions/{sid}")).await).1["confirmed"], json!(true));
    // A tampered signature is a bare 404.
    let mut tampered = req.clone();
    tampered.headers.insert("url-signature", http::HeaderValue::from_static("00"));
    assert_eq!(err(&call(&app, tampered).await), (404, "404 Not Found".into(), String::new()));
    // Confirmed: messages flow; the confirmation write itself requests no notification.
    let confirmed = subscription_item(&c, &sid).await;
    assert_eq!(run(&app, vec![record("MODIFY", &confirmed, Some(&created))], 3000).await, Vec::<String>::new());
    let records = post_records(&c, json!({"messages": [{"body": "late", "ttl": 300}]})).await;
    run(&app, records, 3000).await;
    let got = hook.received();
    assert_eq!(got.len(), 2);
    assert!(got[1].body.contains("\"late\""));
    // Unconfirm: an UnsubscribeConfirmation goes out.
    assert_eq!(
        c.put(&format!("/v2/queues/q1/subscriptions/{sid}/confirm"), Some(r#"{"confirmed": false}"#)).await.status,
        204
    );
    let unconfirmed = subscription_item(&c, &sid).await;
    run(&app, vec![record("MODIFY", &unconfirmed, Some(&confirmed))], 3000).await;
    let doc: Value = serde_json::from_str(&hook.received()[2].body).unwrap();
    assert_eq!(doc["Message_Type"], json!("UnsubscribeConfirmation"));
    assert_eq!(
        doc["Message"],
        json!("You have unsubscribed successfully to the queue: q1, you can resubscribe it by using confirmed=True.")
    );
    // Re-posting the unconfirmed subscriber re-sends the confirmation request.
    assert_eq!(
        sj(&c.post("/v2/queues/q1/subscriptions", &json!({"subscriber": hook.url("/hook")}).to_string()).await).0,
        201
    );
    let reposted = subscription_item(&c, &sid).await;
    run(&app, vec![record("MODIFY", &reposted, Some(&unconfirmed))], 3000).await;
    let doc: Value = serde_json::from_str(&hook.received()[3].body).unwrap();
    assert_eq!(doc["Message_Type"], json!("SubscriptionConfirmation"));
}

#[tokio::test]
async fn without_required_confirmation_unconfirmed_subscribers_get_messages() {
    let app = app().await; // require_confirmation = false
    let c = Client::new(&app);
    let hook = Hook::ok().await;
    let sid = subscribe(&c, &hook.url("/"), json!({})).await;
    // No confirmation is requested when confirmation is off.
    let created = subscription_item(&c, &sid).await;
    assert!(!created.contains_key("notify_seq"));
    run(&app, vec![record("INSERT", &created, None)], 3000).await;
    assert!(hook.received().is_empty());
    let records = post_records(&c, json!({"messages": [{"body": "m", "ttl": 300}]})).await;
    run(&app, records, 3000).await;
    assert_eq!(hook.received().len(), 1);
}

#[tokio::test]
async fn expired_subscriptions_and_messages_are_skipped() {
    let app = app().await;
    let c = Client::new(&app);
    let hook = Hook::ok().await;
    let r = c.post("/v2/queues/q1/subscriptions", &json!({"subscriber": hook.url("/"), "ttl": 60}).to_string()).await;
    assert_eq!(r.status, 201);
    let records = post_records(&c, json!({"messages": [{"body": "m", "ttl": 300}]})).await;
    advance(&app, 61);
    run(&app, records, 3000).await;
    assert!(hook.received().is_empty());
}

#[tokio::test]
async fn mailto_goes_through_smtp() {
    let (port, mails) = smtp_sink().await;
    let mut config = Config::for_tests("zaqar-tests");
    config.smtp_url = Some(format!("smtp://127.0.0.1:{port}"));
    let app = app_with(config).await;
    let c = Client::new(&app);
    subscribe(&c, "mailto:ops@example.com?subject=Queue%20news", json!({"from": "zaqar@example.com"})).await;
    let records = post_records(&c, json!({"messages": [{"body": {"event": "mail"}, "ttl": 300}]})).await;
    assert_eq!(run(&app, records, 3000).await, Vec::<String>::new());
    let mails = mails.lock().unwrap().clone();
    assert_eq!(mails.len(), 1);
    // The text is quoted-printable (lines stay under SMTP's length limit): undo soft line breaks.
    let mail = &mails[0].replace("=\r\n", "").replace("=3D", "=");
    assert!(mail.contains("Subject: Queue news"), "{mail}");
    assert!(mail.contains("From: zaqar@example.com"), "{mail}");
    assert!(mail.contains("To: ops@example.com"), "{mail}");
    assert!(
        mail.contains(r#"{"ttl": 300, "body": {"event": "mail"}, "Message_Type": "Notification", "queue_name": "q1"}"#),
        "{mail}"
    );
}

#[tokio::test]
async fn malformed_records_are_skipped_without_failing_the_batch() {
    let app = app().await;
    let c = Client::new(&app);
    let hook = Hook::ok().await;
    subscribe(&c, &hook.url("/"), json!({})).await;
    let good = post_records(&c, json!({"messages": [{"body": "ok", "ttl": 300}]})).await.remove(0);
    // The fixture's malformed records, plus the good one in the middle.
    let fixture: Value = serde_json::from_str(include_str!("../../functions/fanout/events/malformed.json")).unwrap();
    let mut records = fixture["Records"].as_array().unwrap().clone();
    records.insert(2, good);
    assert_eq!(run(&app, records, 3000).await, Vec::<String>::new());
    assert_eq!(hook.received().len(), 1);
    // A non-object payload is an empty batch, not a crash.
    let resp = zaqar_fanout::handle_with(&app, &settings(1000), zaqar_fanout::parse_event(json!("nonsense"))).await;
    assert!(resp.batch_item_failures.is_empty());
}

#[tokio::test]
async fn fixture_event_drives_a_delivery() {
    let app = app().await;
    let c = Client::new(&app);
    let hook = Hook::ok().await;
    subscribe(&c, &hook.url("/"), json!({})).await;
    // The recorded-shape fixture, pointed at this test's queue partition: a committed first message
    // (sequence number 1 of shard 0, as in the fixture's id) makes it a message of a committed post.
    let records = post_records(&c, json!({"messages": [{"ttl": 300, "body": {"notify": true}}]})).await;
    let real_pk = records[0]["dynamodb"]["Keys"]["pk"]["S"].as_str().unwrap().to_string();
    let text =
        include_str!("../../functions/fanout/events/message-insert.json").replace("M#q1#0a1b2c3d4e5f#0#p1", &real_pk);
    let event = zaqar_fanout::parse_event(serde_json::from_str(&text).unwrap());
    assert_eq!(event.records.len(), 1);
    let resp = zaqar_fanout::handle_with(&app, &settings(3000), event).await;
    assert!(resp.batch_item_failures.is_empty());
    assert_eq!(
        hook.received()[0].body,
        r#"{"ttl": 300, "body": {"notify": true}, "Message_Type": "Notification", "queue_name": "q1"}"#
    );
}
