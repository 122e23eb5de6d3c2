//! Message endpoints against DynamoDB Local (docs/api.md#messages; recorded Zaqar 23 answers).

use harness::*;
use http::Method;
use serde_json::{json, Value};
use zaqar::config::Config;
use zaqar::types::{ProjectId, QueueName};
use zaqar::{ApiResponse, App};

fn text(resp: &ApiResponse) -> String {
    String::from_utf8(resp.body.clone()).unwrap()
}

fn assert_error(resp: &ApiResponse, status: u16, title: &str, description: &str) {
    assert_eq!(err(resp), (status, title.to_string(), description.to_string()), "body: {}", text(resp));
}

/// Posts and returns the new ids, asserting 201.
async fn post(c: &Client<'_>, q: &str, body: &str) -> Vec<String> {
    let r = c.post(&format!("/v2/queues/{q}/messages"), body).await;
    let (s, v) = sj(&r);
    assert_eq!(s, 201, "{v}");
    v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().rsplit('/').next().unwrap().to_string())
        .collect()
}

async fn post_n(c: &Client<'_>, q: &str, n: usize) -> Vec<String> {
    let msgs: Vec<Value> = (0..n).map(|i| json!({"body": i})).collect();
    post(c, q, &json!({ "messages": msgs }).to_string()).await
}

fn ids_of(body: &Value) -> Vec<String> {
    body["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect()
}

async fn list(c: &Client<'_>, q: &str, query: &str) -> Value {
    let (s, v) = sj(&c.get(&format!("/v2/queues/{q}/messages{query}")).await);
    assert_eq!(s, 200, "{query}: {v}");
    v
}

/// Claims and returns (claim id, message ids).
async fn claim(c: &Client<'_>, q: &str, limit: u32, body: &str) -> (String, Vec<String>) {
    let r = c.post(&format!("/v2/queues/{q}/claims?limit={limit}"), body).await;
    assert_eq!(r.status, 201, "{}", text(&r));
    let cid = r.header_value("location").unwrap().rsplit('/').next().unwrap().to_string();
    (cid, ids_of(&r.json_body()))
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

async fn raw_item_exists(app: &App, project: &str, queue: &str, id: &str) -> bool {
    let p = ProjectId::parse(project).unwrap();
    let q = QueueName::parse(queue).unwrap();
    let Some(key) = app.store.message_key_of(&p, &q, id).await.unwrap() else { return false };
    raw_item(app, key).await.is_some()
}

// ---------------------------------------------------------------------------------------------
// Post (docs/api.md#messages-post)

#[tokio::test]
async fn post_returns_resources_and_location() {
    let app = app().await;
    let c = Client::new(&app);
    // #39
    let r = c
        .post(
            "/v2/queues/q1/messages",
            r#"{"messages": [{"ttl": 300, "body": {"event": "one"}}, {"ttl": 300, "body": "two"}, {"body": [3]}]}"#,
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header_value("content-type"), Some("application/json"));
    let body = r.json_body();
    assert_eq!(keys(&body), ["resources"]);
    let hrefs: Vec<&str> = body["resources"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
    assert_eq!(hrefs.len(), 3);
    let ids: Vec<&str> = hrefs.iter().map(|h| h.strip_prefix("/v2/queues/q1/messages/").expect("href shape")).collect();
    for id in &ids {
        assert!(!id.is_empty() && !id.contains(['/', '?', ',']), "{id}");
    }
    assert_eq!(r.header_value("location").unwrap(), format!("/v2/queues/q1/messages?ids={}", ids.join(",")));
    // The exact body layout.
    assert_eq!(text(&r), format!(r#"{{"resources": ["{}", "{}", "{}"]}}"#, hrefs[0], hrefs[1], hrefs[2]));
    // Each message as posted, in order; the missing ttl took the default.
    let other = c.with_client_id(OTHER_CLIENT);
    let listed = list(&other, "q1", "").await;
    assert_eq!(ids_of(&listed), ids);
    let ttls: Vec<i64> = listed["messages"].as_array().unwrap().iter().map(|m| m["ttl"].as_i64().unwrap()).collect();
    assert_eq!(ttls, [300, 300, 3600]);
    let bodies: Vec<Value> = listed["messages"].as_array().unwrap().iter().map(|m| m["body"].clone()).collect();
    assert_eq!(bodies, [json!({"event": "one"}), json!("two"), json!([3])]);
}

/// A post of one message to a shard this process has posted to before commits with its reservation and
/// then writes the message: two requests and two write units, where a batch takes three requests
/// (reserve, write, commit). Its message is listed and claimable at once, in order.
#[tokio::test]
async fn single_posts_take_two_writes() {
    let app = app().await;
    let c = Client::new(&app);
    let q = "two-writes";
    let one = |i: u32| json!({"messages": [{"body": i, "ttl": 300}]}).to_string();
    assert_eq!(c.put(&format!("/v2/queues/{q}"), None).await.status, 201);
    let mut ids = vec![];
    // The first creates the shard's head with itself in it.
    for i in 0..4 {
        let before = app.store.usage.snapshot();
        ids.extend(post(&c, q, &one(i)).await);
        let used = app.store.usage.snapshot() - before;
        // Plus the reads of the queue record when its cached copy (1 s) ran out meanwhile.
        assert_eq!(used.write_units, 2.0, "post {i}: {used:?}");
        assert!(used.requests <= 2 + 2 * u64::from(used.read_units > 0.0), "post {i}: {used:?}");
        let listed = list(&c, q, "?echo=true&limit=10").await;
        assert_eq!(ids_of(&listed), ids, "post {i}");
    }
    let before = app.store.usage.snapshot();
    ids.extend(post_n(&c, q, 2).await);
    let used = app.store.usage.snapshot() - before;
    let reads = u64::from(used.read_units > 0.0);
    assert_eq!((used.requests - reads, used.write_units), (3, 4.0), "a batch: {used:?}");
    // Another process's first post (it reads the queue first): its first attempt, made without knowing the
    // shard's next number, is refused (one unit) and returns the head; then the two writes. The three-write
    // path would take four.
    let other_app = harness::app().await;
    let other = Client::of_project(&other_app, &c.project, OTHER_CLIENT);
    let before = other_app.store.usage.snapshot();
    ids.extend(post(&other, q, &one(9)).await);
    let used = other_app.store.usage.snapshot() - before;
    assert_eq!(used.write_units, 3.0, "another process: {used:?}");
    let (_, claimed) = claim(&c, q, 10, r#"{"ttl": 60, "grace": 60}"#).await;
    assert_eq!(claimed, ids);
    let (s, stats) = sj(&c.get(&format!("/v2/queues/{q}/stats")).await);
    assert_eq!(
        (s, stats["messages"]["total"].as_u64(), stats["messages"]["claimed"].as_u64()),
        (200, Some(7), Some(7))
    );
}

/// What DynamoDB's TTL may do at any time: delete the items of a message partition whose `expires_at`
/// has passed (DynamoDB Local never does; this sweeps the partition of `id` once, at the store's clock).
async fn sweep_expired(app: &App, project: &str, queue: &str, id: &str) -> usize {
    use aws_sdk_dynamodb::types::AttributeValue;
    let (p, q) = (ProjectId::parse(project).unwrap(), QueueName::parse(queue).unwrap());
    let key = app.store.message_key_of(&p, &q, id).await.unwrap().unwrap();
    let now_s = app.store.now_ms() / 1000;
    let out = app
        .store
        .client
        .query()
        .table_name(&app.store.table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", key["pk"].clone())
        .send()
        .await
        .unwrap();
    let mut swept = 0;
    for item in out.items() {
        let expired =
            matches!(item.get("expires_at"), Some(AttributeValue::N(e)) if e.parse::<i64>().unwrap() <= now_s);
        if expired {
            let key = [("pk".to_string(), item["pk"].clone()), ("sk".to_string(), item["sk"].clone())];
            app.store.client.delete_item().table_name(&app.store.table).set_key(Some(key.into())).send().await.unwrap();
            swept += 1;
        }
    }
    swept
}

/// A message posted in two writes, deleted, and then met by a reader after its post's lease ran out, is
/// counted out once: removal keeps the item until its natural expiry, so TTL cannot make it look like a
/// post that never arrived (which a reader would tombstone and count out a second time).
#[tokio::test]
async fn a_deleted_single_post_is_counted_out_once_whatever_ttl_does() {
    let app = app().await;
    let other_app = harness::app().await;
    let c = Client::new(&app);
    let other = Client { app: &other_app, project: c.project.clone(), client_id: OTHER_CLIENT.into() };
    let q = "single-then-deleted";
    let one = |i: u32| json!({"messages": [{"body": i, "ttl": 3600}]}).to_string();
    let first = post(&c, q, &one(0)).await;
    // Two writes; this process posts nothing more here, so the pending entry stays.
    let second = post(&c, q, &one(1)).await;
    assert_eq!(c.delete(&format!("/v2/queues/{q}/messages/{}", second[0])).await.status, 204);
    let third = post(&other, q, &one(2)).await;
    app.store.clock.advance_secs(5);
    let swept = sweep_expired(&app, &c.project, q, &first[0]).await;
    let listed = list(&c, q, "?echo=true&include_claimed=true&limit=10").await;
    assert_eq!(ids_of(&listed), [first[0].clone(), third[0].clone()]);
    let (s, stats) = sj(&c.get(&format!("/v2/queues/{q}/stats")).await);
    assert_eq!((s, stats["messages"]["total"].as_u64()), (200, Some(2)), "{stats}");
    assert_eq!(swept, 0, "a removed message stays until its natural expiry");
}

/// The key of the shard head holding message `id`.
async fn head_key_of(app: &App, project: &str, queue: &str, id: &str) -> harness::RawItem {
    use aws_sdk_dynamodb::types::AttributeValue;
    let (p, q) = (ProjectId::parse(project).unwrap(), QueueName::parse(queue).unwrap());
    let key = app.store.message_key_of(&p, &q, id).await.unwrap().unwrap();
    let Some(AttributeValue::S(pk)) = key.get("pk") else { panic!("message key {key:?}") };
    [
        ("pk".to_string(), AttributeValue::S(format!("H#{}", pk.strip_prefix("M#").unwrap()))),
        ("sk".to_string(), AttributeValue::S("H".into())),
    ]
    .into()
}

/// One process posting single messages concurrently (as the local server does): every post is listed
/// once and counted, the head keeps at most 8 pending entries, and the process's next post removes the
/// entries it left.
#[tokio::test]
async fn concurrent_single_posts_from_one_process() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let app = app().await;
    let c = Client::new(&app);
    let q = "concurrent-singles";
    let one = |i: u32| json!({"messages": [{"body": i, "ttl": 300}]}).to_string();
    let first = post(&c, q, &one(0)).await;
    let posts = (1..19).map(|i| {
        let (c, body) = (&c, one(i));
        async move { post(c, q, &body).await }
    });
    let mut ids: Vec<String> = futures::future::join_all(posts).await.concat();
    ids.extend(first.clone());
    let last = post(&c, q, &one(19)).await;
    ids.extend(last.clone());
    let mut listed = ids_of(&list(&c, q, "?echo=true&limit=20").await);
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids);
    let (s, stats) = sj(&c.get(&format!("/v2/queues/{q}/stats")).await);
    assert_eq!((s, stats["messages"]["total"].as_u64()), (200, Some(20)), "{stats}");
    let head = raw_item(&app, head_key_of(&app, &c.project, q, &first[0]).await).await.unwrap();
    let Some(AttributeValue::M(pending)) = head.get("pw") else { panic!("no pending map on {head:?}") };
    let entries: Vec<&String> = pending.keys().filter(|k| k.as_str() != "_").collect();
    let (p, qn) = (ProjectId::parse(&c.project).unwrap(), QueueName::parse(q).unwrap());
    let last_key = app.store.message_key_of(&p, &qn, &last[0]).await.unwrap().unwrap();
    let Some(AttributeValue::S(sk)) = last_key.get("sk") else { panic!("{last_key:?}") };
    let last_k = sk.strip_prefix("M#").unwrap().parse::<u64>().unwrap().to_string();
    assert_eq!(entries, [&last_k], "the last post's entry alone");
}

/// A producer that posted one message in two writes and went away leaves its pending entry; once the
/// messages are gone and a reader moves the shard's live floor past them, the entry goes too, so it does
/// not hold a slot of the bounded map for good.
#[tokio::test]
async fn the_live_floor_takes_settled_pending_writes_with_it() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let producer_app = app().await;
    let consumer_app = harness::app().await;
    let producer = Client::new(&producer_app);
    let consumer = Client::of_project(&consumer_app, &producer.project, OTHER_CLIENT);
    let q = "floor-takes-pending";
    let mut ids = post_n(&producer, q, 35).await;
    ids.extend(post(&producer, q, &json!({"messages": [{"body": "last", "ttl": 300}]}).to_string()).await);
    let head_key = head_key_of(&producer_app, &producer.project, q, &ids[0]).await;
    let entries = |head: &harness::RawItem| match head.get("pw") {
        Some(AttributeValue::M(m)) => m.keys().filter(|k| k.as_str() != "_").count(),
        _ => panic!("no pending map on {head:?}"),
    };
    assert_eq!(entries(&raw_item(&producer_app, head_key.clone()).await.unwrap()), 1);
    for chunk in ids.chunks(20) {
        let r = consumer.delete(&format!("/v2/queues/{q}/messages?ids={}", chunk.join(","))).await;
        assert_eq!(r.status, 204);
    }
    assert_eq!(list(&consumer, q, "?include_claimed=true").await["messages"], json!([]));
    assert_eq!(entries(&raw_item(&producer_app, head_key).await.unwrap()), 0);
}

/// A head written before the pending-write map existed (emulated by removing the map) takes single posts
/// the three-write way until a commit adds the map; after that they take two writes.
#[tokio::test]
async fn a_head_from_before_pending_writes_gains_them() {
    let app = app().await;
    let c = Client::new(&app);
    let q = "old-head";
    let one = |i: u32| json!({"messages": [{"body": i, "ttl": 300}]}).to_string();
    let mut ids = post(&c, q, &one(0)).await;
    let head = head_key_of(&app, &c.project, q, &ids[0]).await;
    let removed = app.store.client.update_item().table_name(&app.store.table).set_key(Some(head.clone()));
    removed.update_expression("REMOVE pw").send().await.unwrap();
    let mut requests = vec![];
    for i in 1..4 {
        let before = app.store.usage.snapshot();
        ids.extend(post(&c, q, &one(i)).await);
        let used = app.store.usage.snapshot() - before;
        requests.push(used.requests - u64::from(used.read_units > 0.0));
    }
    // A refused two-write reservation, then reserve, write, commit; then two writes each.
    assert_eq!(requests, [4, 2, 2]);
    assert!(raw_item(&app, head).await.unwrap().contains_key("pw"));
    assert_eq!(ids_of(&list(&c, q, "?echo=true").await), ids);
}

/// Each producer process keeps its last single post's pending entry on the shard head until its next
/// post there, and every head write pays for the head's size: a head holds at most 8 entries. Ten
/// processes posting twice leave at most 8; the others' posts take the three-write path. Every post is
/// listed, in order per producer, and counted.
#[tokio::test]
async fn pending_writes_on_a_head_stay_bounded() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let apps = futures::future::join_all((0..10).map(|_| harness::app())).await;
    let project = project();
    let clients: Vec<Client> = apps.iter().map(|a| Client::of_project(a, &project, CLIENT)).collect();
    let q = "many-producers";
    let mut ids = vec![];
    for round in 0..2 {
        for (i, c) in clients.iter().enumerate() {
            ids.extend(post(c, q, &json!({"messages": [{"body": [round, i], "ttl": 300}]}).to_string()).await);
        }
    }
    let head = raw_item(&apps[0], head_key_of(&apps[0], &project, q, &ids[0]).await).await.expect("the shard head");
    let Some(AttributeValue::M(pending)) = head.get("pw") else { panic!("no pending map on {head:?}") };
    let entries = pending.keys().filter(|k| k.as_str() != "_").count();
    assert!((1..=8).contains(&entries), "{entries} pending entries on the head");
    let listed = list(&clients[0], q, "?echo=true&limit=20").await;
    assert_eq!(ids_of(&listed), ids);
    let (s, stats) = sj(&clients[0].get(&format!("/v2/queues/{q}/stats")).await);
    assert_eq!((s, stats["messages"]["total"].as_u64()), (200, Some(20)), "{stats}");
}

#[tokio::test]
async fn post_batches_and_size_limits() {
    let app = app().await;
    let c = Client::new(&app);
    // #45: no count limit, only size.
    assert_eq!(post_n(&c, "q1", 21).await.len(), 21);
    let many: Vec<Value> = (0..150).map(|i| json!({"body": {"n": i}, "ttl": 120})).collect();
    let ids = post(&c, "q1", &json!({ "messages": many }).to_string()).await;
    assert_eq!(ids.len(), 150);
    assert_eq!(c.get("/v2/queues/q1/stats").await.json_body()["messages"]["total"], json!(171));

    // Global limit: Content-Length > 262144 → 400 (checked before parsing), == 262144 fine.
    let sized = |total: usize| {
        let frame = r#"{"messages": [{"body": ""}]}"#.len();
        format!(r#"{{"messages": [{{"body": "{}"}}]}}"#, "x".repeat(total - frame))
    };
    let too_big = sized(262145);
    assert_eq!(too_big.len(), 262145);
    let r = c.post("/v2/queues/q1/messages", &too_big).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        text(&r),
        r#"{"title": "Invalid API request", "description": "Message collection size is too large. Max size 262144"}"#
    );
    let r = c.post("/v2/queues/q1/messages", &"{".repeat(300_000)).await;
    assert_error(&r, 400, "Invalid API request", "Message collection size is too large. Max size 262144");
    assert_eq!(post(&c, "q1", &sized(262144)).await.len(), 1);

    // Per-queue limit: min(queue, global) with its own message.
    c.put("/v2/queues/small", Some(r#"{"_max_messages_post_size": 1000}"#)).await;
    let r = c.post("/v2/queues/small/messages", &sized(1001)).await;
    assert_error(
        &r,
        400,
        "Invalid API request",
        "Message collection size is too large. The max size for current queue is 1000. It is calculated by max size = min(max_messages_post_size_config: 262144, max_messages_post_size_queue: 1000).",
    );
    assert_eq!(post(&c, "small", &sized(1000)).await.len(), 1);

    // A smaller global limit wins over a larger queue limit.
    let mut config = Config::for_tests("zaqar-tests");
    config.limits.max_messages_post_size = 500;
    let app2 = app_with(config).await;
    let c2 = Client { app: &app2, project: c.project.clone(), client_id: CLIENT.into() };
    let r = c2.post("/v2/queues/small/messages", &sized(600)).await;
    assert_error(
        &r,
        400,
        "Invalid API request",
        "Message collection size is too large. The max size for current queue is 500. It is calculated by max size = min(max_messages_post_size_config: 500, max_messages_post_size_queue: 1000).",
    );
    let r = c2.post("/v2/queues/q1/messages", &sized(600)).await;
    assert_error(&r, 400, "Invalid API request", "Message collection size is too large. Max size 500");
}

#[tokio::test]
async fn post_body_errors() {
    let app = app().await;
    let c = Client::new(&app);
    c.put("/v2/queues/q1", None).await;
    let no_messages =
        r#"{"title": "Invalid API request", "description": "No messages were found in the request body."}"#;
    // #41 and friends.
    for body in [r#"[{"ttl": 300, "body": "x"}]"#, "{}", r#"{"message": [{"body": 1}]}"#] {
        let r = c.post("/v2/queues/q1/messages", body).await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(text(&r), no_messages, "{body}");
    }
    for body in [
        r#"{"messages": {"body": 1}}"#,
        r#"{"messages": "x"}"#,
        r#"{"messages": [1]}"#,
        r#"{"messages": [{"body": 1}, [2]]}"#,
    ] {
        assert_error(
            &c.post("/v2/queues/q1/messages", body).await,
            400,
            "Invalid request body",
            "Document type not supported.",
        );
    }
    // #52
    let r = c.post("/v2/queues/q1/messages", r#"{"messages": []}"#).await;
    assert_eq!(text(&r), r#"{"title": "Invalid API request", "description": "No messages to enqueu."}"#);
    // #53
    let r = c.post("/v2/queues/q1/messages", r#"{"messages": [{"ttl": 300}]}"#).await;
    assert_eq!(text(&r), r#"{"title": "Invalid request body", "description": "Missing \"body\" field."}"#);
    // #54 and other mistyped ttls; ttl is checked before body (Zaqar's field order).
    let ttl_type =
        r#"{"title": "Invalid request body", "description": "The value of the \"ttl\" field must be a int."}"#;
    for body in [
        r#"{"messages": [{"ttl": "300", "body": "x"}]}"#,
        r#"{"messages": [{"ttl": 300.5, "body": "x"}]}"#,
        r#"{"messages": [{"ttl": null, "body": "x"}]}"#,
        r#"{"messages": [{"ttl": "300"}]}"#,
    ] {
        assert_eq!(text(&c.post("/v2/queues/q1/messages", body).await), ttl_type, "{body}");
    }
    // #42, #43 and a JSON true (Python int 1).
    let ttl_range = r#"{"title": "Invalid API request", "description": "The TTL for a message may not exceed 1209600 seconds, and must be at least 60 seconds long."}"#;
    for ttl in ["1209601", "59", "0", "-5", "true"] {
        let body = format!(r#"{{"messages": [{{"ttl": {ttl}, "body": "x"}}]}}"#);
        assert_eq!(text(&c.post("/v2/queues/q1/messages", &body).await), ttl_range, "ttl {ttl}");
    }
    // #55, #56
    let unparsable = r#"{"title": "Invalid request body", "description": "Request body could not be parsed."}"#;
    assert_eq!(text(&c.post("/v2/queues/q1/messages", r#"{"messages": ["#).await), unparsable);
    let r = c.send(c.request(Method::POST, "/v2/queues/q1/messages").header("Content-Type", "application/json")).await;
    assert_eq!(r.status, 400);
    assert_eq!(text(&r), unparsable);
    assert_eq!(text(&c.post("/v2/queues/q1/messages", "").await), unparsable);
    assert_eq!(text(&c.post("/v2/queues/q1/messages", r#""messages""#).await), unparsable);
    assert_error(
        &c.post("/v2/queues/q1/messages", r#"{"messages": [{"body": 18446744073709551616}]}"#).await,
        400,
        "Invalid request body",
        "JSON contains integer that is too large.",
    );
    // #59
    let r = c.post("/v2/queues/bad$name/messages", r#"{"messages": [{"body": "x"}]}"#).await;
    assert_eq!(
        text(&r),
        r#"{"title": "Invalid queue identification", "description": "The format of the submitted queue name or project id is not valid."}"#
    );
    // All or nothing: one bad message rejects the batch.
    let r =
        c.post("/v2/queues/q1/messages", r#"{"messages": [{"body": 1}, {"body": 2, "ttl": 30}, {"body": 3}]}"#).await;
    assert_eq!(r.status, 400);
    assert_eq!(c.get("/v2/queues/q1/stats").await.json_body()["messages"]["total"], json!(0));
    // Unknown per-message fields are dropped; a null body is a body.
    let ids = post(&c, "q1", r#"{"messages": [{"body": null, "extra": 1, "id": "mine", "href": "x"}]}"#).await;
    let (_, m) = sj(&c.get(&format!("/v2/queues/q1/messages/{}", ids[0])).await);
    assert_eq!(keys(&m), ["age", "body", "href", "id", "ttl"]);
    assert_eq!(m["body"], Value::Null);
    assert_eq!(m["id"].as_str(), Some(ids[0].as_str()));
}

#[tokio::test]
async fn post_default_ttl_from_queue_and_lazy_creation() {
    let app = app().await;
    let c = Client::new(&app);
    let other = c.with_client_id(OTHER_CLIENT);
    c.put("/v2/queues/short", Some(r#"{"_default_message_ttl": 120}"#)).await;
    post(&c, "short", r#"{"messages": [{"body": "default"}, {"body": "explicit", "ttl": 600}]}"#).await;
    let ttls: Vec<Value> =
        list(&other, "short", "").await["messages"].as_array().unwrap().iter().map(|m| m["ttl"].clone()).collect();
    assert_eq!(ttls, [json!(120), json!(600)]);
    // #58: posting to a queue that does not exist creates it (with default metadata).
    let ids = post(&c, "autoq", r#"{"messages": [{"body": "auto"}]}"#).await;
    assert_eq!(ids.len(), 1);
    let (_, queues) = sj(&c.get("/v2/queues").await);
    let names: Vec<&str> = queues["queues"].as_array().unwrap().iter().map(|q| q["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["autoq", "short"]);
    let (_, meta) = sj(&c.get("/v2/queues/autoq").await);
    assert_eq!(meta["_default_message_ttl"], json!(3600));
    let listed = list(&other, "autoq", "").await;
    assert_eq!(listed["messages"][0]["ttl"], json!(3600));
    // PUT on the auto-created queue: it exists.
    assert_eq!(c.put("/v2/queues/autoq", None).await.status, 204);
}

#[tokio::test]
async fn delay_is_ignored_on_plain_queues() {
    let app = app().await;
    let c = Client::new(&app);
    let other = c.with_client_id(OTHER_CLIENT);
    // #40, #44: accepted and dropped, even out of range or mistyped.
    post(&c, "q1", r#"{"messages": [{"ttl": 300, "delay": 60, "body": "delayed"}]}"#).await;
    post(&c, "q1", r#"{"messages": [{"ttl": 300, "delay": 901, "body": "x"}, {"delay": "soon", "body": "y"}]}"#).await;
    let listed = list(&other, "q1", "").await;
    assert_eq!(listed["messages"].as_array().unwrap().len(), 3);
    let (_, ids) = claim(&c, "q1", 10, "{}").await;
    assert_eq!(ids.len(), 3);
}

#[tokio::test]
async fn delayed_queue() {
    let app = app().await;
    let c = Client::new(&app);
    let other = c.with_client_id(OTHER_CLIENT);
    // #46
    let r = c.put("/v2/queues/dq", Some(r#"{"_default_message_delay": 30}"#)).await;
    assert_eq!(r.status, 201);
    // #48 and other delay errors.
    let delay_range = r#"{"title": "Invalid API request", "description": "The Delay TTL for a message may not exceed 900 seconds,and must be at least 0 seconds long."}"#;
    for delay in ["901", "-1"] {
        let body = format!(r#"{{"messages": [{{"ttl": 300, "delay": {delay}, "body": "x"}}]}}"#);
        assert_eq!(text(&c.post("/v2/queues/dq/messages", &body).await), delay_range, "delay {delay}");
    }
    assert_error(
        &c.post("/v2/queues/dq/messages", r#"{"messages": [{"delay": "10", "body": "x"}]}"#).await,
        400,
        "Invalid request body",
        "The value of the \"delay\" field must be a int.",
    );
    // #47
    let ids =
        post(&c, "dq", r#"{"messages": [{"ttl": 300, "delay": 10, "body": "d10"}, {"ttl": 300, "body": "ddefault"}]}"#)
            .await;
    let now_ids = post(&c, "dq", r#"{"messages": [{"delay": 0, "body": "now"}]}"#).await;
    // #49: delayed messages are hidden from listing.
    let listed = list(&other, "dq", "").await;
    assert_eq!(ids_of(&listed), now_ids);
    let listed = list(&other, "dq", "?include_delayed=true").await;
    assert_eq!(ids_of(&listed), [ids.clone(), now_ids.clone()].concat());
    // ... but visible to get-by-id and get-by-ids, and counted as free.
    assert_eq!(c.get(&format!("/v2/queues/dq/messages/{}", ids[0])).await.status, 200);
    let (s, many) = sj(&c.get(&format!("/v2/queues/dq/messages?ids={}", ids.join(","))).await);
    assert_eq!(s, 200);
    assert_eq!(many["messages"].as_array().unwrap().len(), 2);
    // #50
    let (_, stats) = sj(&c.get("/v2/queues/dq/stats").await);
    assert_eq!((stats["messages"]["total"].clone(), stats["messages"]["free"].clone()), (json!(3), json!(3)));
    // Claims skip delayed messages; #51 (only delayed messages left → 204).
    let (_, got) = claim(&c, "dq", 10, "{}").await;
    assert_eq!(got, now_ids);
    let r = c.post("/v2/queues/dq/claims", r#"{"ttl": 300, "grace": 60}"#).await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    // After 10 s the per-message delay has passed; the queue default (30 s) has not.
    app.store.clock.advance_secs(11);
    assert_eq!(ids_of(&list(&other, "dq", "").await), [ids[0].clone()]);
    let (_, got) = claim(&c, "dq", 10, "{}").await;
    assert_eq!(got, [ids[0].clone()]);
    app.store.clock.advance_secs(20);
    let (_, got) = claim(&c, "dq", 10, "{}").await;
    assert_eq!(got, [ids[1].clone()]);
    // The TTL clock starts at posting time, not when the delay ends.
    let late = post(&c, "dq", r#"{"messages": [{"ttl": 60, "delay": 30, "body": "late"}]}"#).await;
    app.store.clock.advance_secs(61);
    assert_eq!(c.get(&format!("/v2/queues/dq/messages/{}", late[0])).await.status, 404);
    assert!(!ids_of(&list(&other, "dq", "?include_delayed=true&include_claimed=true").await).contains(&late[0]));
}

#[tokio::test]
async fn pop_ignores_delay() {
    let app = app().await;
    let c = Client::new(&app);
    c.put("/v2/queues/dq", Some(r#"{"_default_message_delay": 60}"#)).await;
    let ids = post_n(&c, "dq", 2).await;
    let (s, popped) = sj(&c.delete("/v2/queues/dq/messages?pop=5").await);
    assert_eq!(s, 200);
    assert_eq!(ids_of(&popped), ids);
}

// ---------------------------------------------------------------------------------------------
// List (docs/api.md#messages-list)

#[tokio::test]
async fn list_echo_and_client_identity() {
    let app = app().await;
    let c = Client::new(&app);
    let ids = post_n(&c, "q1", 3).await;
    // #60: own messages are hidden by default.
    let r = c.get("/v2/queues/q1/messages").await;
    assert_eq!(text(&r), r#"{"messages": [], "links": []}"#);
    // The same client spelled without dashes, with braces or in upper case is still the same client.
    for spelling in [
        "3381af922b9e11e3b19171861300734c",
        "{3381af92-2b9e-11e3-b191-71861300734c}",
        "3381AF92-2B9E-11E3-B191-71861300734C",
    ] {
        let same = c.with_client_id(spelling);
        assert_eq!(list(&same, "q1", "").await["messages"], json!([]), "{spelling}");
        assert_eq!(ids_of(&list(&same, "q1", "?echo=true").await), ids, "{spelling}");
    }
    // A dashless producer is hidden from its dashed self too.
    let dashless = c.with_client_id("3381af922b9e11e3b19171861300734c");
    post_n(&dashless, "q2", 1).await;
    assert_eq!(list(&c, "q2", "").await["messages"], json!([]));
    // #61: another client sees them, oldest first, with the message representation.
    let other = c.with_client_id(OTHER_CLIENT);
    let listed = list(&other, "q1", "").await;
    assert_eq!(ids_of(&listed), ids);
    for m in listed["messages"].as_array().unwrap() {
        assert_eq!(keys(m), ["age", "body", "checksum", "href", "id", "ttl"]);
        assert_eq!(m["href"].as_str().unwrap(), format!("/v2/queues/q1/messages/{}", m["id"].as_str().unwrap()));
    }
    // echo=false explicitly, and boolean spellings.
    for q in ["?echo=false", "?echo=0", "?echo=no", "?echo="] {
        assert_eq!(list(&c, "q1", q).await["messages"], json!([]), "{q}");
    }
    for q in ["?echo=True", "?echo=1", "?echo=yes", "?echo=on"] {
        assert_eq!(ids_of(&list(&c, "q1", q).await), ids, "{q}");
    }
    let (s, title, _) = err(&c.get("/v2/queues/q1/messages?echo=maybe").await);
    assert_eq!((s, title.as_str()), (400, "Invalid parameter"));
    // A queue that does not exist lists empty.
    assert_eq!(text(&other.get("/v2/queues/nosuch/messages").await), r#"{"messages": [], "links": []}"#);
}

#[tokio::test]
async fn list_include_claimed() {
    let app = app().await;
    let c = Client::new(&app);
    let other = c.with_client_id(OTHER_CLIENT);
    let ids = post_n(&c, "q1", 4).await;
    let (cid, claimed) = claim(&c, "q1", 2, "{}").await;
    assert_eq!(claimed, ids[..2]);
    assert_eq!(ids_of(&list(&other, "q1", "").await), ids[2..]);
    let all = list(&other, "q1", "?include_claimed=true").await;
    assert_eq!(ids_of(&all), ids);
    for (i, m) in all["messages"].as_array().unwrap().iter().enumerate() {
        let plain = format!("/v2/queues/q1/messages/{}", ids[i]);
        let expected = if i < 2 { format!("{plain}?claim_id={cid}") } else { plain };
        assert_eq!(m["href"].as_str(), Some(expected.as_str()));
    }
    // The same for the producer with echo.
    assert_eq!(ids_of(&list(&c, "q1", "?echo=true&include_claimed=true").await), ids);
    assert_eq!(ids_of(&list(&c, "q1", "?echo=true").await), ids[2..]);
}

#[tokio::test]
async fn list_paging() {
    let app = app().await;
    let c = Client::new(&app);
    let ids = post_n(&c, "q1", 12).await;
    // Default page: 10.
    let first = list(&c, "q1", "?echo=true").await;
    assert_eq!(ids_of(&first), ids[..10]);
    // #62: limit=2, following next links until an empty page.
    let page = list(&c, "q1", "?echo=true&limit=2").await;
    assert_eq!(ids_of(&page), ids[..2]);
    let links = page["links"].as_array().unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0]["rel"], json!("next"));
    let next = links[0]["href"].as_str().unwrap();
    assert!(next.starts_with("/v2/queues/q1/messages?"), "{next}");
    let query: Vec<&str> = next.split_once('?').unwrap().1.split('&').collect();
    assert!(query.contains(&"limit=2") && query.contains(&"echo=true"), "{next}");
    assert!(query.iter().any(|p| p.starts_with("marker=")), "{next}");
    let mut seen = Vec::new();
    let mut href = "/v2/queues/q1/messages?echo=true&limit=5".to_string();
    let mut pages = 0;
    loop {
        let (s, body) = sj(&c.get(&href).await);
        assert_eq!(s, 200);
        let got = ids_of(&body);
        if got.is_empty() {
            assert_eq!(body["links"], json!([]));
            break;
        }
        pages += 1;
        seen.extend(got);
        href = body["links"][0]["href"].as_str().unwrap().to_string();
    }
    assert_eq!(seen, ids);
    assert_eq!(pages, 3);
    // Markers skip deleted messages and see later posts.
    let later = post_n(&c, "q1", 1).await;
    let (s, body) = sj(&c.get(&href).await);
    assert_eq!(s, 200);
    assert_eq!(ids_of(&body), later);
    // An unparsable marker lists nothing; limit errors (#63, #64).
    assert_eq!(text(&c.get("/v2/queues/q1/messages?echo=true&marker=abc").await), r#"{"messages": [], "links": []}"#);
    let limit_text = r#"{"title": "Invalid API request", "description": "Limit must be at least 1 and may not be greater than 20."}"#;
    for q in ["limit=0", "limit=21", "limit=-3"] {
        let r = c.get(&format!("/v2/queues/q1/messages?{q}")).await;
        assert_eq!(r.status, 400);
        assert_eq!(text(&r), limit_text, "{q}");
    }
    let (s, title, _) = err(&c.get("/v2/queues/q1/messages?limit=ten").await);
    assert_eq!((s, title.as_str()), (400, "Invalid parameter"));
    assert_eq!(ids_of(&list(&c, "q1", "?echo=true&limit=20").await).len(), 13);
}

// ---------------------------------------------------------------------------------------------
// Get one and several (docs/api.md#messages-get, #messages-get-many)

#[tokio::test]
async fn get_one_and_many() {
    let app = app().await;
    let c = Client::new(&app);
    let p = c.project.clone();
    let ids =
        post(&c, "q1", r#"{"messages": [{"ttl": 300, "body": {"event": "one"}}, {"ttl": 300, "body": "two"}]}"#).await;
    app.store.clock.advance_secs(42);
    // #65: own messages are returned (no echo filter), exactly these keys.
    let r = c.get(&format!("/v2/queues/q1/messages/{}", ids[0])).await;
    let (s, m) = sj(&r);
    assert_eq!(s, 200);
    assert_eq!(keys(&m), ["age", "body", "checksum", "href", "id", "ttl"]);
    assert_eq!(m["id"].as_str(), Some(ids[0].as_str()));
    assert_eq!(m["href"].as_str().unwrap(), format!("/v2/queues/q1/messages/{}", ids[0]));
    assert_eq!(
        (m["ttl"].clone(), m["age"].clone(), m["body"].clone()),
        (json!(300), json!(42), json!({"event": "one"}))
    );
    // A ?claim_id= on GET is ignored.
    assert_eq!(c.get(&format!("/v2/queues/q1/messages/{}?claim_id=abc", ids[0])).await.status, 200);
    // #67 and other misses: unknown, malformed, other queue, other project.
    for id in ["5c6939a8d3f3d1bc5a25f0a1", "abc", "0000000000000001ffffffff"] {
        let r = c.get(&format!("/v2/queues/q1/messages/{id}")).await;
        assert_eq!(r.status, 404);
        assert_eq!(
            text(&r),
            format!(
                r#"{{"title": "Not found", "description": "Message {id} does not exist in queue q1 for project {p}"}}"#
            )
        );
    }
    post_n(&c, "q2", 2).await;
    assert_error(
        &c.get(&format!("/v2/queues/q2/messages/{}", ids[0])).await,
        404,
        "Not found",
        &format!("Message {} does not exist in queue q2 for project {p}", ids[0]),
    );
    let stranger = Client::new(&app);
    assert_eq!(stranger.get(&format!("/v2/queues/q1/messages/{}", ids[0])).await.status, 404);

    // #66: get many, own messages included, unknown ids skipped.
    let (s, many) = sj(&c.get(&format!("/v2/queues/q1/messages?ids={},{}", ids[0], ids[1])).await);
    assert_eq!(s, 200);
    assert_eq!(keys(&many), ["messages"]);
    let mut got = ids_of(&many);
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want);
    let (s, many) =
        sj(&c.get(&format!("/v2/queues/q1/messages?ids=5c6939a8d3f3d1bc5a25f0a1,{},nope&echo=false", ids[1])).await);
    assert_eq!(s, 200);
    assert_eq!(ids_of(&many), [ids[1].clone()]);
    // Repeated parameter works too.
    let (_, many) = sj(&c.get(&format!("/v2/queues/q1/messages?ids={}&ids={}", ids[0], ids[1])).await);
    assert_eq!(many["messages"].as_array().unwrap().len(), 2);
    // #68
    let r = c.get("/v2/queues/q1/messages?ids=5c6939a8d3f3d1bc5a25f0a1").await;
    assert_eq!(r.status, 404);
    assert_eq!(
        text(&r),
        format!(
            r#"{{"title": "Not found", "description": "No messages with IDs: ['5c6939a8d3f3d1bc5a25f0a1'] found in the queue q1 for project {p}."}}"#
        )
    );
    assert_error(
        &c.get("/v2/queues/nosuch/messages?ids=a,b").await,
        404,
        "Not found",
        &format!("No messages with IDs: ['a', 'b'] found in the queue nosuch for project {p}."),
    );
    // More than 20 ids.
    let ids21: Vec<String> = (0..21).map(|i| format!("{i:024x}")).collect();
    assert_error(
        &c.get(&format!("/v2/queues/q1/messages?ids={}", ids21.join(","))).await,
        400,
        "Invalid API request",
        "Limit must be at least 1 and may not be greater than 20.",
    );
    // Claimed messages are returned with the claim in the href.
    let (cid, _) = claim(&c, "q1", 1, "{}").await;
    let (_, m) = sj(&c.get(&format!("/v2/queues/q1/messages/{}", ids[0])).await);
    assert_eq!(m["href"].as_str().unwrap(), format!("/v2/queues/q1/messages/{}?claim_id={cid}", ids[0]));
    let (_, many) = sj(&c.get(&format!("/v2/queues/q1/messages?ids={}", ids[0])).await);
    assert_eq!(many["messages"][0]["href"], m["href"]);
}

// ---------------------------------------------------------------------------------------------
// Delete one (docs/api.md#messages-delete)

#[tokio::test]
async fn delete_one_rules() {
    let app = app().await;
    let c = Client::new(&app);
    let ids = post_n(&c, "q1", 6).await;
    let path = |i: usize| format!("/v2/queues/q1/messages/{}", ids[i]);

    // Absent / malformed / queue absent → 204 (#89).
    for p in [
        "/v2/queues/q1/messages/5c6939a8d3f3d1bc5a25f0a1",
        "/v2/queues/q1/messages/abc",
        "/v2/queues/nosuch/messages/5c6939a8d3f3d1bc5a25f0a1",
    ] {
        let r = c.delete(p).await;
        assert_eq!(r.status, 204, "{p}");
        assert!(r.body.is_empty());
    }
    // Not claimed, no claim id → deleted.
    assert_eq!(c.delete(&path(5)).await.status, 204);
    assert_eq!(c.get(&path(5)).await.status, 404);
    // Not claimed, with a claim id → 400 not claimed.
    let r = c.delete(&format!("{}?claim_id=5c6939a8d3f3d1bc5a25f0a1", path(4))).await;
    assert_error(&r, 400, "Unable to delete", "A claim was specified, but the message is not currently claimed.");

    let (cid, claimed) = claim(&c, "q1", 2, r#"{"ttl": 100, "grace": 60}"#).await;
    assert_eq!(claimed, ids[..2]);
    // #83: claimed, no claim id → 403.
    let r = c.delete(&path(0)).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        text(&r),
        r#"{"title": "Unable to delete", "description": "This message is claimed; it cannot be deleted without a valid claim ID."}"#
    );
    // Malformed claim id → 400.
    for bad in ["5", "not-a-claim", "7f06b0ae-0991-4922-8fbe-26b9b60816d4"] {
        let r = c.delete(&format!("{}?claim_id={bad}", path(0))).await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(
            text(&r),
            r#"{"title": "Unable to delete", "description": "The specified claim does not exist or has expired."}"#
        );
    }
    // A different live claim → 403 (MongoDB).
    let (other_cid, other_ids) = claim(&c, "q1", 1, r#"{"ttl": 100, "grace": 60}"#).await;
    assert_eq!(other_ids, [ids[2].clone()]);
    let r = c.delete(&format!("{}?claim_id={other_cid}", path(0))).await;
    assert_error(
        &r,
        403,
        "Unable to delete",
        "This message is claimed; it cannot be deleted without a valid claim ID.",
    );
    // A well-formed unknown claim on a claimed message → 403 as well.
    assert_eq!(c.delete(&format!("{}?claim_id=5c6939a8d3f3d1bc5a25f0a1", path(0))).await.status, 403);
    // #85: the right claim → 204, gone.
    assert_eq!(c.delete(&format!("{}?claim_id={cid}", path(0))).await.status, 204);
    assert_eq!(c.get(&path(0)).await.status, 404);
    // Deleting again with the claim id: absent → 204.
    assert_eq!(c.delete(&format!("{}?claim_id={cid}", path(0))).await.status, 204);

    // After release: not claimed any more → 400 with that claim id, 204 without.
    assert_eq!(c.delete(&format!("/v2/queues/q1/claims/{other_cid}")).await.status, 204);
    let r = c.delete(&format!("{}?claim_id={other_cid}", path(2))).await;
    assert_error(&r, 400, "Unable to delete", "A claim was specified, but the message is not currently claimed.");

    // After the claim expired (not re-claimed): the stale claim id still deletes (MongoDB).
    app.store.clock.advance_secs(101);
    assert_eq!(c.delete(&format!("{}?claim_id={cid}", path(1))).await.status, 204);
    assert_eq!(c.get(&path(1)).await.status, 404);
    // And without a claim id an expired claim does not protect the message.
    let (cid3, got) = claim(&c, "q1", 1, r#"{"ttl": 60, "grace": 60}"#).await;
    assert_eq!(got, [ids[2].clone()]);
    app.store.clock.advance_secs(61);
    assert_eq!(c.delete(&path(2)).await.status, 204);
    // A message whose claim expired and was re-claimed by another claim: the old claim id → 403.
    let (old_cid, got) = claim(&c, "q1", 1, r#"{"ttl": 60, "grace": 60}"#).await;
    assert_eq!(got, [ids[3].clone()]);
    app.store.clock.advance_secs(61);
    let (new_cid, got) = claim(&c, "q1", 1, r#"{"ttl": 60, "grace": 60}"#).await;
    assert_eq!(got, [ids[3].clone()]);
    let _ = cid3;
    let r = c.delete(&format!("{}?claim_id={old_cid}", path(3))).await;
    assert_error(
        &r,
        403,
        "Unable to delete",
        "This message is claimed; it cannot be deleted without a valid claim ID.",
    );
    assert_eq!(c.delete(&format!("{}?claim_id={new_cid}", path(3))).await.status, 204);
}

// ---------------------------------------------------------------------------------------------
// Bulk delete and pop (docs/api.md#messages-bulk-delete-pop)

#[tokio::test]
async fn bulk_delete() {
    let app = app().await;
    let c = Client::new(&app);
    let ids = post_n(&c, "q1", 5).await;
    let (_, claimed) = claim(&c, "q1", 2, "{}").await;
    assert_eq!(claimed.len(), 2);
    // #91: by ids, claimed or not, unknown ids ignored.
    let r = c
        .delete(&format!("/v2/queues/q1/messages?ids={},{},{},5c6939a8d3f3d1bc5a25f0a1,junk", ids[0], ids[1], ids[2]))
        .await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    for id in &ids[..3] {
        assert_eq!(c.get(&format!("/v2/queues/q1/messages/{id}")).await.status, 404);
    }
    assert_eq!(c.get("/v2/queues/q1/stats").await.json_body()["messages"]["total"], json!(2));
    // Repeated ids parameter.
    assert_eq!(c.delete(&format!("/v2/queues/q1/messages?ids={}&ids={}", ids[3], ids[4])).await.status, 204);
    assert_eq!(c.get("/v2/queues/q1/stats").await.json_body()["messages"]["total"], json!(0));
    // Queue that does not exist.
    assert_eq!(c.delete("/v2/queues/nosuch/messages?ids=5c6939a8d3f3d1bc5a25f0a1").await.status, 204);
    // Errors: >20 ids, both, neither (#94, #95).
    let ids21: Vec<String> = (0..21).map(|i| format!("{i:024x}")).collect();
    assert_error(
        &c.delete(&format!("/v2/queues/q1/messages?ids={}", ids21.join(","))).await,
        400,
        "Invalid API request",
        "ids parameter should have at least 1 and not greater than 20 values.",
    );
    let both = r#"{"title": "Invalid API request", "description": "pop and id params cannot be present together in the delete request."}"#;
    assert_eq!(text(&c.delete("/v2/queues/q1/messages?ids=a&pop=1").await), both);
    let neither = r#"{"title": "Invalid API request", "description": "The request should have either \"ids\" or \"pop\" parameter in the request, to be able to delete."}"#;
    for q in ["", "?ids=", "?pop=", "?other=1"] {
        let r = c.delete(&format!("/v2/queues/q1/messages{q}")).await;
        assert_eq!(r.status, 400, "{q}");
        assert_eq!(text(&r), neither, "{q}");
    }
}

#[tokio::test]
async fn pop() {
    let app = app().await;
    let c = Client::new(&app);
    // Empty and non-existent queues.
    for q in ["nosuch", "empty"] {
        let r = c.delete(&format!("/v2/queues/{q}/messages?pop=3")).await;
        assert_eq!(r.status, 200);
        assert_eq!(text(&r), r#"{"messages": []}"#);
    }
    let ids = post(
        &c,
        "q1",
        r#"{"messages": [{"body": "a", "ttl": 600}, {"body": "b"}, {"body": "c"}, {"body": "d"}, {"body": null}]}"#,
    )
    .await;
    // Claim the first two: pop takes unclaimed ones only, oldest first, own messages included.
    let (cid, _) = claim(&c, "q1", 2, "{}").await;
    app.store.clock.advance_secs(5);
    let r = c.delete("/v2/queues/q1/messages?pop=2").await;
    let (s, body) = sj(&r);
    assert_eq!(s, 200);
    assert_eq!(keys(&body), ["messages"]);
    assert_eq!(ids_of(&body), ids[2..4]);
    let m = &body["messages"][0];
    assert_eq!(keys(m), ["age", "body", "checksum", "claim_count", "claim_id", "id", "ttl"]);
    assert_eq!(m["claim_id"], Value::Null);
    assert_eq!(m["claim_count"], json!(0));
    assert_eq!(m["age"], json!(5));
    assert_eq!(m["ttl"], json!(3600));
    assert_eq!(m["body"], json!("c"));
    assert_eq!(m["checksum"], json!(format!("MD5:{}", md5_hex("\"c\""))));
    // Popped messages are gone.
    assert_eq!(c.get(&format!("/v2/queues/q1/messages/{}", ids[2])).await.status, 404);
    // Claim count survives a release and shows in pop results.
    assert_eq!(c.delete(&format!("/v2/queues/q1/claims/{cid}")).await.status, 204);
    let (_, body) = sj(&c.delete("/v2/queues/q1/messages?pop=20").await);
    assert_eq!(ids_of(&body), [ids[0].clone(), ids[1].clone(), ids[4].clone()]);
    let counts: Vec<Value> = body["messages"].as_array().unwrap().iter().map(|m| m["claim_count"].clone()).collect();
    assert_eq!(counts, [json!(1), json!(1), json!(0)]);
    assert_eq!(body["messages"][0]["ttl"], json!(600));
    // A null body has no checksum.
    assert!(body["messages"][2].get("checksum").is_none());
    assert_eq!(body["messages"][2]["body"], Value::Null);
    assert_eq!(text(&c.delete("/v2/queues/q1/messages?pop=1").await), r#"{"messages": []}"#);
    // #93 and friends.
    let pop_text = r#"{"title": "Invalid API request", "description": "Pop value must be at least 1 and may not be greater than 20."}"#;
    for q in ["pop=21", "pop=0", "pop=-1"] {
        let r = c.delete(&format!("/v2/queues/q1/messages?{q}")).await;
        assert_eq!(r.status, 400);
        assert_eq!(text(&r), pop_text, "{q}");
    }
    let (s, title, _) = err(&c.delete("/v2/queues/q1/messages?pop=two").await);
    assert_eq!((s, title.as_str()), (400, "Invalid parameter"));
}

fn md5_hex(s: &str) -> String {
    // Computed independently of the store's checksum helper: this is the RFC 1321 reference vector
    // check below plus a tiny MD5 (the tests do not depend on the md-5 crate).
    md5::compute(s)
}

mod md5 {
    //! A small MD5 (RFC 1321), only for cross-checking checksums in tests.
    pub fn compute(input: &str) -> String {
        let s: [u32; 64] = [
            7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9,
            14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10,
            15, 21, 6, 10, 15, 21,
        ];
        let k: Vec<u32> = (0..64).map(|i| ((i as f64 + 1.0).sin().abs() * 4294967296.0) as u32).collect();
        let (mut a0, mut b0, mut c0, mut d0) = (0x67452301u32, 0xefcdab89u32, 0x98badcfeu32, 0x10325476u32);
        let mut msg = input.as_bytes().to_vec();
        let bit_len = (msg.len() as u64).wrapping_mul(8);
        msg.push(0x80);
        while msg.len() % 64 != 56 {
            msg.push(0);
        }
        msg.extend_from_slice(&bit_len.to_le_bytes());
        for chunk in msg.chunks(64) {
            let m: Vec<u32> = chunk.chunks(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect();
            let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
            for i in 0..64 {
                let (f, g) = match i / 16 {
                    0 => ((b & c) | (!b & d), i),
                    1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                    2 => (b ^ c ^ d, (3 * i + 5) % 16),
                    _ => (c ^ (b | !d), (7 * i) % 16),
                };
                let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
                a = d;
                d = c;
                c = b;
                b = b.wrapping_add(f.rotate_left(s[i]));
            }
            a0 = a0.wrapping_add(a);
            b0 = b0.wrapping_add(b);
            c0 = c0.wrapping_add(c);
            d0 = d0.wrapping_add(d);
        }
        [a0, b0, c0, d0].iter().flat_map(|v| v.to_le_bytes()).map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn reference_vectors() {
        assert_eq!(compute(""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(compute("The quick brown fox jumps over the lazy dog"), "9e107d9d372bb6826bd81d3542a419d6");
    }
}

// ---------------------------------------------------------------------------------------------
// Checksums (docs/api.md#messages-checksum)

#[tokio::test]
async fn checksums() {
    let app = app().await;
    let c = Client::new(&app);
    let cases = [
        (r#"{"b": 1, "a": "é", "z": [1, 2]}"#, Some("MD5:108e410c2642f8b1f71abc43cf9e3d71")),
        (r#""plain""#, Some("MD5:a73442f033abd3c787518065af0eb10e")),
        (r#"[1.50, {"k": null}]"#, Some("MD5:f4f151490d35d3df5519a5f8734ad83f")),
        ("42", Some("MD5:a1d0c6e83f027327d8461063f4ac58a6")),
        (r#"{"emoji": "😀"}"#, Some("MD5:bff41ce28240183c03220af3cb526baf")),
        ("null", None),
    ];
    let body = format!(
        r#"{{"messages": [{}]}}"#,
        cases.iter().map(|(b, _)| format!(r#"{{"body": {b}}}"#)).collect::<Vec<_>>().join(", ")
    );
    let ids = post(&c, "q1", &body).await;
    let expected: Vec<Option<&str>> = cases.iter().map(|(_, m)| *m).collect();
    let sums = |msgs: &Value| -> Vec<Option<String>> {
        msgs.as_array().unwrap().iter().map(|m| m.get("checksum").and_then(Value::as_str).map(str::to_string)).collect()
    };
    let want: Vec<Option<String>> = expected.iter().map(|m| m.map(str::to_string)).collect();
    // The body round-trips with key order and non-ASCII kept.
    let r = c.get(&format!("/v2/queues/q1/messages/{}", ids[0])).await;
    assert!(text(&r).contains(r#""body": {"b": 1, "a": "é", "z": [1, 2]}"#), "{}", text(&r));
    // list, get, get many, claim, claim GET, pop.
    assert_eq!(sums(&list(&c, "q1", "?echo=true").await["messages"]), want);
    for (i, id) in ids.iter().enumerate() {
        let (_, m) = sj(&c.get(&format!("/v2/queues/q1/messages/{id}")).await);
        assert_eq!(m.get("checksum").and_then(Value::as_str), expected[i]);
    }
    let (_, many) = sj(&c.get(&format!("/v2/queues/q1/messages?ids={}", ids.join(","))).await);
    let mut got: Vec<(String, Option<String>)> = many["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap().to_string(), m.get("checksum").and_then(Value::as_str).map(str::to_string)))
        .collect();
    got.sort();
    let mut exp: Vec<(String, Option<String>)> = ids.iter().cloned().zip(want.clone()).collect();
    exp.sort();
    assert_eq!(got, exp);
    let r = c.post("/v2/queues/q1/claims?limit=3", "{}").await;
    assert_eq!(sums(&r.json_body()["messages"]), want[..3]);
    let cid = r.header_value("location").unwrap().rsplit('/').next().unwrap().to_string();
    let (_, claim_doc) = sj(&c.get(&format!("/v2/queues/q1/claims/{cid}")).await);
    assert_eq!(sums(&claim_doc["messages"]), want[..3]);
    let (_, popped) = sj(&c.delete("/v2/queues/q1/messages?pop=10").await);
    assert_eq!(sums(&popped["messages"]), want[3..]);
    // Not in the stats summaries.
    post(&c, "q2", r#"{"messages": [{"body": 1}]}"#).await;
    let (_, stats) = sj(&c.get("/v2/queues/q2/stats").await);
    assert!(stats["messages"]["oldest"].get("checksum").is_none());
    assert_eq!(md5_hex(r#"{"b": 1, "a": "\u00e9", "z": [1, 2]}"#), "108e410c2642f8b1f71abc43cf9e3d71");
}

#[tokio::test]
async fn no_checksums_when_disabled() {
    let app = app_with(Config { enable_checksum: false, ..Config::for_tests("zaqar-tests") }).await;
    let c = Client::new(&app);
    let ids = post(&c, "q1", r#"{"messages": [{"body": {"a": 1}}, {"body": 2}]}"#).await;
    let (_, m) = sj(&c.get(&format!("/v2/queues/q1/messages/{}", ids[0])).await);
    assert_eq!(keys(&m), ["age", "body", "href", "id", "ttl"]);
    let listed = list(&c, "q1", "?echo=true").await;
    assert!(listed["messages"].as_array().unwrap().iter().all(|m| m.get("checksum").is_none()));
    let r = c.post("/v2/queues/q1/claims?limit=1", "{}").await;
    assert!(r.json_body()["messages"][0].get("checksum").is_none());
    let (_, popped) = sj(&c.delete("/v2/queues/q1/messages?pop=1").await);
    assert_eq!(keys(&popped["messages"][0]), ["age", "body", "claim_count", "claim_id", "id", "ttl"]);
}

// ---------------------------------------------------------------------------------------------
// Expiry (docs/api.md#messages-expiry): filtered on every read, whatever DynamoDB still holds

#[tokio::test]
async fn expired_messages_are_invisible() {
    let app = app().await;
    let c = Client::new(&app);
    let other = c.with_client_id(OTHER_CLIENT);
    let short = post(&c, "q1", r#"{"messages": [{"body": "short", "ttl": 60}]}"#).await;
    let long = post(&c, "q1", r#"{"messages": [{"body": "long", "ttl": 600}]}"#).await;
    app.store.clock.advance_secs(59);
    assert_eq!(ids_of(&list(&other, "q1", "").await), [short.clone(), long.clone()].concat());
    app.store.clock.advance_secs(2);
    // The item is still in the table (DynamoDB TTL deletion is lazy) ...
    assert!(raw_item_exists(&app, &c.project, "q1", &short[0]).await);
    // ... but no read shows it.
    assert_eq!(ids_of(&list(&other, "q1", "?include_claimed=true").await), long);
    assert_eq!(c.get(&format!("/v2/queues/q1/messages/{}", short[0])).await.status, 404);
    let (_, many) = sj(&c.get(&format!("/v2/queues/q1/messages?ids={},{}", short[0], long[0])).await);
    assert_eq!(ids_of(&many), long);
    assert_eq!(c.get(&format!("/v2/queues/q1/messages?ids={}", short[0])).await.status, 404);
    // Counts drop an expired message when its expiry bucket ends: within 60 s for TTLs up to an hour.
    app.store.clock.advance_secs(60);
    let (_, stats) = sj(&c.get("/v2/queues/q1/stats").await);
    assert_eq!(stats["messages"]["total"], json!(1));
    assert_eq!(stats["messages"]["oldest"]["href"].as_str().unwrap(), format!("/v2/queues/q1/messages/{}", long[0]));
    let (_, got) = claim(&c, "q1", 10, "{}").await;
    assert_eq!(got, long);
    // Once everything expired: claim 204, stats zeros, pop empty, list empty.
    app.store.clock.advance_secs(60 * 60);
    assert!(raw_item_exists(&app, &c.project, "q1", &long[0]).await);
    assert_eq!(c.post("/v2/queues/q1/claims", "{}").await.status, 204);
    assert_eq!(text(&c.get("/v2/queues/q1/stats").await), r#"{"messages": {"claimed": 0, "free": 0, "total": 0}}"#);
    assert_eq!(text(&c.delete("/v2/queues/q1/messages?pop=5").await), r#"{"messages": []}"#);
    assert_eq!(
        text(&other.get("/v2/queues/q1/messages?include_claimed=true").await),
        r#"{"messages": [], "links": []}"#
    );
    // Deleting an expired message is a no-op 204.
    assert_eq!(c.delete(&format!("/v2/queues/q1/messages/{}", short[0])).await.status, 204);
}

// ---------------------------------------------------------------------------------------------
// Counters written exactly once (shared/src/store/tally.rs)

/// Messages nobody has touched since they were posted are deleted on their head alone (see
/// `ranges.rs`); these were claimed and released first, so they are deleted one by one.
async fn post_touched(c: &Client<'_>, q: &str, n: usize) -> Vec<String> {
    let ids = post_n(c, q, n).await;
    let (cid, claimed) = claim(c, q, n as u32, r#"{"ttl": 60, "grace": 60}"#).await;
    assert_eq!(claimed, ids);
    assert_eq!(c.delete(&format!("/v2/queues/{q}/claims/{cid}")).await.status, 204);
    ids
}

/// A delete expires the message with its own tag instead of removing the item; deleting it again
/// changes nothing, and stats count it once.
#[tokio::test]
async fn deletes_leave_a_tagged_dead_item_and_count_once() {
    let app = app().await;
    let c = Client::new(&app);
    let ids = post_touched(&c, "q1", 3).await;
    assert_eq!(c.delete(&format!("/v2/queues/q1/messages/{}", ids[0])).await.status, 204);
    let p = ProjectId::parse(&c.project).unwrap();
    let q = QueueName::parse("q1").unwrap();
    let key = app.store.message_key_of(&p, &q, &ids[0]).await.unwrap().unwrap();
    let item = raw_item(&app, key).await.expect("the item stays until TTL takes it");
    assert_eq!(raw_i64(&item, "expires_ms"), Some(0), "expired at once");
    assert!(raw_i64(&item, "was_exp").is_some_and(|e| e > 0), "keeps the expiry it had, for a retry to count");
    assert!(matches!(item.get("removed"), Some(aws_sdk_dynamodb::types::AttributeValue::S(t)) if t.len() == 32));
    assert!(!item.contains_key("body"), "the body goes at once");
    for _ in 0..2 {
        assert_eq!(c.delete(&format!("/v2/queues/q1/messages/{}", ids[0])).await.status, 204);
        assert_eq!(c.delete(&format!("/v2/queues/q1/messages?ids={}", ids[0])).await.status, 204);
    }
    assert_eq!(c.get(&format!("/v2/queues/q1/messages/{}", ids[0])).await.status, 404);
    let stats = c.get("/v2/queues/q1/stats").await.json_body();
    assert_eq!(stats["messages"]["total"], json!(2), "{stats}");
    let listed = ids_of(&list(&c, "q1", "?echo=true").await);
    assert_eq!(listed, ids[1..].to_vec());
}

/// Each counter writer leaves its newest change number on the head (`wr{writer}`). Attributes of
/// writers gone quiet for a minute are pruned once a head carries four of them; recent ones stay.
#[tokio::test]
async fn stale_counter_writers_are_pruned_and_recent_ones_kept() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let app = app().await;
    let c = Client::new(&app);
    let ids = post_touched(&c, "q1", 4).await;
    assert_eq!(c.delete(&format!("/v2/queues/q1/messages/{}", ids[0])).await.status, 204);
    let mut head = raw_head(&app, &c.project, "q1", 0).await.expect("head");
    let ours: Vec<String> = head.keys().filter(|k| k.starts_with("wr")).cloned().collect();
    assert_eq!(ours.len(), 1, "the delete's writer: {ours:?}");
    let wall_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    for i in 0..5 {
        head.insert(format!("wrstale{i}"), AttributeValue::N((wall_ms - 120_000).to_string()));
    }
    head.insert("wrrecent".into(), AttributeValue::N((wall_ms - 5_000).to_string()));
    put_raw_item(&app, head).await;
    // The next counter write sees them on the head it gets back, and prunes.
    assert_eq!(c.delete(&format!("/v2/queues/q1/messages/{}", ids[1])).await.status, 204);
    let head = raw_head(&app, &c.project, "q1", 0).await.expect("head");
    let left: Vec<&String> = head.keys().filter(|k| k.starts_with("wr")).collect();
    assert!(left.iter().all(|k| !k.starts_with("wrstale")), "stale writers pruned: {left:?}");
    assert!(head.contains_key("wrrecent"), "a writer seen 5 s ago is kept");
    assert!(head.contains_key(&ours[0]), "our own writer is kept");
    let stats = c.get("/v2/queues/q1/stats").await.json_body();
    assert_eq!(stats["messages"]["total"], json!(2), "{stats}");
}
