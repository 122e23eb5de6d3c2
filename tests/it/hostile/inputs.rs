//! Client mistakes and hostile documents: a 4xx with Zaqar's body, never a panic or a 5xx.

use harness::{err, Client};
use serde_json::{json, Value};
use zaqar::ApiResponse;

const JSON_PATCH: &str = "application/openstack-messaging-v2.0-json-patch";
const EXTREME_POLICY: &str = r#"{"minimum_delay": -9223372036854775808, "maximum_delay": 9223372036854775807}"#;

fn api(description: &str) -> (u16, String, String) {
    (400, "Invalid API request".into(), description.into())
}

fn body_error(description: &str) -> (u16, String, String) {
    (400, "Invalid request body".into(), description.into())
}

async fn subscribe(c: &Client<'_>, queue: &str, subscriber: &str) -> String {
    let r = c.post(&format!("/v2/queues/{queue}/subscriptions"), &json!({"subscriber": subscriber}).to_string()).await;
    assert_eq!(r.status, 201, "{:?}", r.json_body());
    r.json_body()["subscription_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn retry_policy_numbers_near_i64_limits_are_refused() {
    let app = harness::app().await;
    let c = Client::new(&app);
    let refused = api("Retry policy: minimum_delay must be between 0 and 1209600.");
    let r = c.put("/v2/queues/rq", Some(&format!(r#"{{"_retry_policy": {EXTREME_POLICY}}}"#))).await;
    assert_eq!(err(&r), refused);
    assert_eq!(c.put("/v2/queues/rq", None).await.status, 201);
    let patch = format!(r#"[{{"op": "add", "path": "/metadata/_retry_policy", "value": {EXTREME_POLICY}}}]"#);
    let r = c.patch("/v2/queues/rq", JSON_PATCH, &patch).await;
    assert_eq!(err(&r), body_error("Retry policy: minimum_delay must be between 0 and 1209600."));
    let huge_max = r#"{"_retry_policy": {"maximum_delay": 9223372036854775807, "minimum_delay": 5}}"#;
    assert_eq!(err(&c.put("/v2/queues/rq", Some(huge_max)).await).0, 400);
    let options =
        format!(r#"{{"subscriber": "http://127.0.0.1:9/r", "options": {{"_retry_policy": {EXTREME_POLICY}}}}}"#);
    assert_eq!(err(&c.post("/v2/queues/rq/subscriptions", &options).await), refused);
    let sid = subscribe(&c, "rq", "http://127.0.0.1:9/ok").await;
    let update = format!(r#"{{"options": {{"_retry_policy": {EXTREME_POLICY}}}}}"#);
    assert_eq!(
        err(&c.patch(&format!("/v2/queues/rq/subscriptions/{sid}"), "application/json", &update).await),
        refused
    );
    // The widest policy the API allows is stored and served.
    let widest =
        r#"{"_retry_policy": {"minimum_delay": 1, "maximum_delay": 1209600, "retries_with_no_delay": 1209600}}"#;
    assert_eq!(c.put("/v2/queues/rq2", Some(widest)).await.status, 201);
}

#[tokio::test]
async fn claim_grace_is_range_checked_on_create_and_renewal() {
    let app = harness::app().await;
    let c = Client::new(&app);
    assert_eq!(c.post("/v2/queues/cq/messages", r#"{"messages": [{"body": 1, "ttl": 300}]}"#).await.status, 201);
    let r = c.post("/v2/queues/cq/claims", r#"{"ttl": 60, "grace": 60}"#).await;
    assert_eq!(r.status, 201);
    let claim = r.header_value("location").unwrap().to_string();
    let on_create = api("The grace for a claim may not exceed 43200 seconds, and must be at least 60 seconds long.");
    let on_renewal = api("The grace for a claim may not exceed 43200 seconds, and must be at least 0 seconds long.");
    for grace in ["9223372036854775807", "-9223372036854775808", "-1", "43201"] {
        let r = c.patch(&claim, "application/json", &format!(r#"{{"ttl": 60, "grace": {grace}}}"#)).await;
        assert_eq!(err(&r), on_renewal, "grace {grace}");
        let r = c.post("/v2/queues/cq/claims", &format!(r#"{{"ttl": 60, "grace": {grace}}}"#)).await;
        assert_eq!(err(&r), on_create, "grace {grace} on create");
    }
    // As in Zaqar, a renewal may shorten the grace below the create minimum.
    for grace in ["0", "30", "true", "43200"] {
        let r = c.patch(&claim, "application/json", &format!(r#"{{"ttl": 100, "grace": {grace}}}"#)).await;
        assert_eq!(r.status, 204, "grace {grace}");
    }
    assert_eq!(c.get(&claim).await.json_body()["ttl"], 100);
}

#[tokio::test]
async fn over_long_ids_name_nothing() {
    let app = harness::app().await;
    let c = Client::new(&app);
    subscribe(&c, "iq", "http://127.0.0.1:9/i").await;
    let id = "a".repeat(2000);
    let sub = format!("/v2/queues/iq/subscriptions/{id}");
    let missing = (404, "Not found".to_string(), format!("Subscription {id} does not exist"));
    assert_eq!(err(&c.get(&sub).await), missing);
    assert_eq!(err(&c.patch(&sub, "application/json", r#"{"ttl": 120}"#).await), missing);
    assert_eq!(err(&c.put(&format!("{sub}/confirm"), Some(r#"{"confirmed": true}"#)).await), missing);
    assert_eq!(c.delete(&sub).await.status, 204);
    // Body errors still come first, as for any unknown id.
    assert_eq!(c.patch(&sub, "application/json", r#"{"ttl": 5}"#).await.status, 400);
    let claim = format!("/v2/queues/iq/claims/{id}");
    assert_eq!(c.get(&claim).await.status, 404);
    assert_eq!(c.patch(&claim, "application/json", r#"{"ttl": 60}"#).await.status, 404);
    assert_eq!(c.delete(&claim).await.status, 204);
    assert_eq!(c.get(&format!("/v2/queues/iq/messages/{id}")).await.status, 404);
    assert_eq!(c.delete(&format!("/v2/queues/iq/messages/{id}")).await.status, 204);
}

fn names(resp: &ApiResponse) -> Vec<String> {
    assert_eq!(resp.status, 200, "{:?}", resp.json_body());
    resp.json_body()["queues"].as_array().unwrap().iter().map(|q| q["name"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn over_long_markers_page_as_the_whole_marker_would() {
    let app = harness::app().await;
    let c = Client::new(&app);
    for q in ["a", "b", "c"] {
        assert_eq!(c.put(&format!("/v2/queues/{q}"), None).await.status, 201);
    }
    let after_a = format!("a{}", "x".repeat(2999));
    assert_eq!(names(&c.get(&format!("/v2/queues?marker={after_a}")).await), ["b", "c"]);
    assert_eq!(names(&c.get(&format!("/v2/queues?marker={}", "z".repeat(5000))).await), Vec::<String>::new());
    let wide = "%C3%A9".repeat(2500); // "é" x 2500: after every ASCII name
    assert_eq!(names(&c.get(&format!("/v2/queues?marker={wide}&detailed=true")).await), Vec::<String>::new());
    let r = c.get(&format!("/v2/queues/a/messages?echo=true&marker={}", "9".repeat(5000))).await;
    assert_eq!((r.status.as_u16(), r.json_body()["messages"].clone()), (200, json!([])));
    let mut all =
        vec![subscribe(&c, "a", "http://127.0.0.1:9/1").await, subscribe(&c, "a", "http://127.0.0.1:9/2").await];
    all.sort(); // listed in id order
    let ids = |r: ApiResponse| -> Vec<String> {
        assert_eq!(r.status, 200, "{:?}", r.json_body());
        r.json_body()["subscriptions"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().into()).collect()
    };
    let low = "0".repeat(4000);
    assert_eq!(ids(c.get(&format!("/v2/queues/a/subscriptions?marker={low}")).await), all);
    let past_first = format!("{}{}", all[0], "0".repeat(3000));
    assert_eq!(ids(c.get(&format!("/v2/queues/a/subscriptions?marker={past_first}")).await), all[1..]);
    assert!(ids(c.get(&format!("/v2/queues/a/subscriptions?marker={}", "f".repeat(5000))).await).is_empty());
}

#[tokio::test]
async fn a_project_id_too_long_for_any_queue_lists_none() {
    let app = harness::app().await;
    let c = Client { app: &app, project: "p".repeat(3000), client_id: harness::CLIENT.into() };
    let r = c.get("/v2/queues?with_count=true&detailed=true").await;
    assert_eq!((r.status.as_u16(), r.json_body()), (200, json!({"queues": [], "links": []})));
    assert_eq!(c.put("/v2/queues/q", None).await.status, 400); // Zaqar's length check on queue routes
}

#[tokio::test]
async fn oversized_subscription_documents_are_client_errors() {
    let app = harness::app().await;
    let c = Client::new(&app);
    let big = json!({"subscriber": "http://127.0.0.1:9/big", "options": {"post_data": "x".repeat(500_000)}});
    assert_eq!(
        err(&c.post("/v2/queues/oq/subscriptions", &big.to_string()).await),
        api("Subscription options are too large. Max size: 65536")
    );
    let long = json!({"subscriber": format!("http://127.0.0.1:9/{}", "a".repeat(10_000))});
    assert_eq!(
        err(&c.post("/v2/queues/oq/subscriptions", &long.to_string()).await),
        api("The subscriber URI is too long. Max size: 8192")
    );
    let sid = subscribe(&c, "oq", "http://127.0.0.1:9/ok").await;
    let update = json!({"options": {"blob": "y".repeat(70_000)}}).to_string();
    assert_eq!(err(&c.patch(&format!("/v2/queues/oq/subscriptions/{sid}"), "application/json", &update).await).0, 400);
    let fits = json!({"options": {"blob": "y".repeat(60_000)}}).to_string();
    assert_eq!(c.patch(&format!("/v2/queues/oq/subscriptions/{sid}"), "application/json", &fits).await.status, 204);
    // Queue metadata: each PATCH is bounded, and so is what they add up to.
    let add = |k: &str| format!(r#"[{{"op": "add", "path": "/metadata/{k}", "value": "{}"}}]"#, "z".repeat(40_000));
    assert_eq!(c.patch("/v2/queues/oq", JSON_PATCH, &add("a")).await.status, 200);
    let r = c.patch("/v2/queues/oq", JSON_PATCH, &add("b")).await;
    assert_eq!(err(&r), body_error("Queue metadata is too large. Max size: 65536"));
    assert_eq!(c.get("/v2/queues/oq").await.json_body()["a"].as_str().unwrap().len(), 40_000);
}

/// Strict JSON (what a browser or Go client accepts): no `Infinity`, no `NaN`.
fn strict(resp: &ApiResponse, what: &str) -> Value {
    let text = String::from_utf8(resp.body.clone()).unwrap();
    assert!(!text.contains("Infinity") && !text.contains("NaN"), "{what}: {text}");
    if text.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"))
}

#[tokio::test]
async fn non_finite_numbers_never_come_back_as_invalid_json() {
    let app = harness::app().await;
    let c = Client::new(&app);
    let too_large = body_error("JSON contains a number that is too large.");
    let sub = r#"{"subscriber": "http://127.0.0.1:9/n", "options": {"x": 1e400}}"#;
    let patch = r#"[{"op": "add", "path": "/metadata/x", "value": -1e999}]"#;
    assert_eq!(c.put("/v2/queues/nq", None).await.status, 201);
    let attempts = [
        ("post", c.post("/v2/queues/nq/messages", r#"{"messages": [{"body": 1e400, "ttl": 300}]}"#).await),
        ("post nested", c.post("/v2/queues/nq/messages", r#"{"messages": [{"body": {"a": [2.5e308]}}]}"#).await),
        ("put queue", c.put("/v2/queues/nq2", Some(r#"{"x": 1e400}"#)).await),
        ("patch queue", c.patch("/v2/queues/nq", JSON_PATCH, patch).await),
        ("subscribe", c.post("/v2/queues/nq/subscriptions", sub).await),
        ("claim", c.post("/v2/queues/nq/claims", r#"{"ttl": 1e400}"#).await),
    ];
    for (what, r) in &attempts {
        assert_eq!(err(r), too_large, "{what}");
        strict(r, what);
    }
    // Tiny numbers are finite (zero), as Python reads them.
    assert_eq!(c.post("/v2/queues/nq/messages", r#"{"messages": [{"body": 1e-400, "ttl": 300}]}"#).await.status, 201);
    for path in ["/v2/queues/nq/messages?echo=true", "/v2/queues/nq", "/v2/queues?detailed=true", "/v2/queues/nq/stats"]
    {
        let r = c.get(path).await;
        assert_eq!(r.status, 200, "{path}");
        let body = strict(&r, path);
        if path.contains("messages") {
            assert_eq!(body["messages"][0]["body"], json!(0.0));
        }
    }
}
