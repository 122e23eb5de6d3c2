//! Exactness against recorded Zaqar 23.0.1 answers (`tests/fixtures/zaqar23/`): the home document byte
//! for byte, the health report's shape, and the headers of bodiless and error responses.
//!
//! Headers the WSGI server adds (`Date`, `Server`, `Content-Length`) are the HTTP layer's business
//! (API Gateway, hyper), so only the application's headers are compared.

use harness::*;
use http::Method;
use serde_json::Value;
use zaqar::config::Config;
use zaqar::ApiResponse;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/zaqar23");

fn fixture(name: &str) -> String {
    let text = std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"));
    text.trim_end_matches('\n').to_string()
}

/// The response's header names, sorted, without the per-request id (checked separately).
fn header_names(r: &ApiResponse) -> Vec<String> {
    assert!(r.header_value("x-openstack-request-id").is_some_and(|id| id.starts_with("req-")));
    let mut names: Vec<String> = r.headers.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
    names.retain(|n| n != "x-openstack-request-id");
    names.sort();
    names
}

#[tokio::test]
async fn home_document_is_zaqars_byte_for_byte() {
    // Recorded with admin_mode on and pooling off: the admin relations are there all the same.
    let app = app_with(Config { pooling: false, ..Config::for_tests("zaqar-tests") }).await;
    let c = Client::new(&app);
    let r = c.get("/v2/").await;
    assert_eq!(r.status, 200);
    assert_eq!(header_names(&r), ["cache-control", "content-type"]);
    assert_eq!(r.header_value("content-type"), Some("application/json-home"));
    assert_eq!(r.header_value("cache-control"), Some("max-age=86400"));
    let expected = fixture("home-admin-mode.json");
    assert_eq!(r.body.len(), 11457);
    assert_eq!(text(&r), expected);

    // Without admin mode the public relations alone, in the same layout.
    let app = app_with(Config { admin_mode: false, ..Config::for_tests("zaqar-tests") }).await;
    let r = Client::new(&app).get("/v2/").await;
    let mut public: Value = serde_json::from_str(&expected).unwrap();
    let resources = public["resources"].as_object_mut().unwrap();
    for rel in ["rel/pools", "rel/pool", "rel/flavors", "rel/flavor", "rel/health"] {
        resources.shift_remove(rel).expect("recorded");
    }
    assert_eq!(r.json_body(), public);
    assert_eq!(text(&r).lines().nth(1), Some(r#"    "resources": {"#));
}

#[tokio::test]
async fn health_report_has_zaqars_keys_in_zaqars_order() {
    let app = app().await;
    let c = Client::new(&app);
    let r = c.with_headers(Method::GET, "/v2/health", &[("X-Roles", "admin")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(header_names(&r), ["content-type"]);
    let body = r.json_body();
    let top: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(top, ["storage_reachable", "operation_status"]);
    let ops: Vec<&str> = body["operation_status"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        ops,
        [
            "create_queue",
            "post_messages",
            "claim_messages",
            "list_messages",
            "delete_messages",
            "delete_claim",
            "bulk_delete_messages",
            "delete_queue"
        ]
    );
    for op in body["operation_status"].as_object().unwrap().values() {
        let keys: Vec<&str> = op.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["succeeded", "seconds", "ref"]);
    }
}

#[tokio::test]
async fn bodiless_responses_carry_zaqars_headers() {
    let app = app().await;
    let c = Client::new(&app);
    // PUT of a new queue: 201 with an empty body still has falcon's default content type.
    let r = c.put("/v2/queues/q1", None).await;
    assert_eq!(r.status, 201);
    assert!(r.body.is_empty());
    assert_eq!(header_names(&r), ["content-type", "location"]);
    assert_eq!(r.header_value("content-type"), Some("application/json"));
    assert_eq!(r.header_value("location"), Some("/v2/queues/q1"));
    // PUT of an existing queue: 204, and 204 has no content type.
    let r = c.put("/v2/queues/q1", None).await;
    assert_eq!(r.status, 204);
    assert_eq!(header_names(&r), ["location"]);
    // Ping, GET and HEAD.
    for method in [Method::GET, Method::HEAD] {
        let r = c.send(c.request(method, "/v2/ping")).await;
        assert_eq!((r.status.as_u16(), header_names(&r)), (204, vec![]));
    }
    // The same rule for the admin API's empty 201s.
    let name = format!("p-{}", uuid::Uuid::new_v4().simple());
    let body = format!(r#"{{"uri": "dynamodb://{name}", "weight": 1}}"#);
    let req = c
        .request(Method::PUT, &format!("/v2/pools/{name}"))
        .header("X-Roles", "admin")
        .header("Content-Type", "application/json")
        .body(body.into_bytes());
    let r = c.send(req).await;
    assert_eq!(r.status, 201);
    assert_eq!(header_names(&r), ["content-type", "location"]);
    assert_eq!(c.with_headers(Method::DELETE, &format!("/v2/pools/{name}"), &[("X-Roles", "admin")]).await.status, 204);
}

#[tokio::test]
async fn errors_carry_zaqars_headers() {
    let app = app().await;
    let c = Client::new(&app);
    // `/v2` (no trailing slash) has no route.
    let r = c.get("/v2").await;
    assert_eq!(header_names(&r), ["content-type", "vary"]);
    assert_eq!(r.header_value("vary"), Some("Accept"));
    assert_eq!(text(&r), r#"{"title": "404 Not Found"}"#);
    // POST on a queue: method not allowed.
    let r = c.post("/v2/queues/q1", "{}").await;
    assert_eq!(header_names(&r), ["allow", "content-type", "vary"]);
    assert_eq!(text(&r), r#"{"title": "405 Method Not Allowed"}"#);
    // Accept: text/html is not acceptable; the body is empty.
    let r = c.with_headers(Method::GET, "/v2/queues", &[("Accept", "text/html")]).await;
    assert_eq!(
        (r.status.as_u16(), header_names(&r), text(&r)),
        (406, vec!["content-type".into(), "vary".into()], String::new())
    );
    // A header error (no Client-ID).
    let r = bare(&app, Method::GET, "/v2/", &[("X-Project-ID", "p1")]).await;
    assert_eq!(header_names(&r), ["content-type", "vary"]);
    assert_eq!(
        text(&r),
        r#"{"title": "Missing header value", "description": "The \"Client-Id\" header is required."}"#
    );
}
