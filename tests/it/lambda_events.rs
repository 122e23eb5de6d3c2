//! API Gateway events (REST v1 and HTTP API v2, named stages and `$default`) through
//! `lambda_http::request::from_str` → `ApiRequest::from_lambda` → the function handlers → `into_lambda`.
//!
//! The fixtures live in `tests/fixtures/apigw/` (linked from `functions/<group>/events/`) and are
//! complete API Gateway events, usable with `cargo lambda invoke --data-file <file>`.

use harness::*;
use http::HeaderValue;
use serde_json::{json, Value};
use zaqar::{ApiRequest, ApiResponse};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/apigw");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Parses an event the way the Lambda runtime does and converts it; the project is replaced by a
/// fresh one so runs do not see each other's data.
fn request(name: &str, project: &str) -> ApiRequest {
    let req = lambda_http::request::from_str(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut api = ApiRequest::from_lambda(req);
    if api.headers.contains_key("x-project-id") {
        api.headers.insert("x-project-id", HeaderValue::from_str(project).unwrap());
    }
    api
}

/// The Lambda response as API Gateway receives it: (status, headers, body text).
fn lambda_parts(resp: ApiResponse) -> (u16, http::HeaderMap, String) {
    let out = resp.into_lambda();
    let status = out.status().as_u16();
    let headers = out.headers().clone();
    let body = match out.into_body() {
        lambda_http::Body::Empty => String::new(),
        lambda_http::Body::Text(t) => t,
        lambda_http::Body::Binary(b) => String::from_utf8(b).unwrap(),
        _ => String::new(),
    };
    (status, headers, body)
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

const ALL: [(&str, &str, &str, &str); 15] = [
    // (file, kind, method, path the handlers must see)
    ("rest-v1-put-queue.json", "v1", "PUT", "/v2/queues/q1"),
    ("rest-v1-stage-v2-get-queue.json", "v1", "GET", "/v2/queues/q1"),
    ("rest-v1-post-messages.json", "v1", "POST", "/v2/queues/q1/messages"),
    ("rest-v1-get-root.json", "v1", "GET", "/"),
    ("http-v2-stage-post-messages.json", "v2", "POST", "/v2/queues/q1/messages"),
    ("http-v2-stage-delete-messages.json", "v2", "DELETE", "/v2/queues/q1/messages"),
    ("http-v2-default-list-messages.json", "v2", "GET", "/v2/queues/q1/messages"),
    ("http-v2-default-claim.json", "v2", "POST", "/v2/queues/q1/claims"),
    ("http-v2-default-patch-queue.json", "v2", "PATCH", "/v2/queues/q1"),
    ("http-v2-default-ping.json", "v2", "GET", "/v2/ping"),
    ("http-v2-default-health.json", "v2", "GET", "/v2/health"),
    ("http-v2-default-post-subscription.json", "v2", "POST", "/v2/queues/q1/subscriptions"),
    ("rest-v1-list-subscriptions.json", "v1", "GET", "/v2/queues/q1/subscriptions"),
    ("http-v2-default-put-pool.json", "v2", "PUT", "/v2/pools/fixture-pool"),
    ("rest-v1-list-pools.json", "v1", "GET", "/v2/pools"),
];

/// Every function has fixtures in its `events/` folder (README), each a file of this directory or
/// a stream event (fan-out).
#[test]
fn every_function_has_event_fixtures() {
    let functions = concat!(env!("CARGO_MANIFEST_DIR"), "/../functions");
    for group in ["health", "queues", "messages", "claims", "subscriptions", "admin", "fanout"] {
        let dir = format!("{functions}/{group}/events");
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.is_empty(), "{dir} has no fixtures");
        for name in names {
            let text = std::fs::read_to_string(format!("{dir}/{name}")).unwrap_or_else(|e| panic!("{dir}/{name}: {e}"));
            serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{dir}/{name}: {e}"));
            if group != "fanout" {
                assert!(ALL.iter().any(|(file, ..)| *file == name), "{dir}/{name} is not checked by this test");
            }
        }
    }
}

#[test]
fn fixtures_are_complete_api_gateway_events() {
    use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayV2httpRequest};
    use lambda_http::request::RequestContext;
    use lambda_http::RequestExt;
    for (name, kind, method, path) in ALL {
        let text = fixture(name);
        // Strictly the event types the runtime deserialises.
        match kind {
            "v1" => {
                let ev: ApiGatewayProxyRequest = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(ev.http_method.as_str(), method, "{name}");
                assert!(ev.request_context.stage.is_some(), "{name}: REST events carry a stage");
            }
            _ => {
                let ev: ApiGatewayV2httpRequest = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(ev.request_context.http.method.as_str(), method, "{name}");
                assert_eq!(ev.version.as_deref(), Some("2.0"), "{name}");
            }
        }
        let req = lambda_http::request::from_str(&text).unwrap();
        match (kind, req.request_context_ref()) {
            ("v1", Some(RequestContext::ApiGatewayV1(_))) | ("v2", Some(RequestContext::ApiGatewayV2(_))) => {}
            (k, other) => panic!("{name}: expected {k}, lambda_http saw {other:?}"),
        }
        let api = ApiRequest::from_lambda(req);
        assert_eq!(api.method.as_str(), method, "{name}");
        assert_eq!(api.path, path, "{name}: stage prefix must be removed");
    }
}

#[tokio::test]
async fn events_through_the_handlers() {
    let app = app().await;
    let p = project();
    let c = Client { app: &app, project: p.clone(), client_id: CLIENT.into() };

    // REST, stage "prod": create the queue with metadata.
    let req = request("rest-v1-put-queue.json", &p);
    assert!(req.has_content_length);
    let (status, headers, body) = lambda_parts(call(&app, req).await);
    assert_eq!(status, 201, "{body}");
    assert_eq!(headers.get("location").unwrap(), "/v2/queues/q1");
    assert!(headers.get("x-openstack-request-id").is_some());
    assert!(body.is_empty());

    // REST, a stage named like the API version ("v2").
    let (status, headers, body) = lambda_parts(call(&app, request("rest-v1-stage-v2-get-queue.json", &p)).await);
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers.get("content-type").unwrap(), "application/json");
    let meta = json_of(&body);
    assert_eq!(meta["description"], json!("from API Gateway"));
    assert_eq!(meta["_default_message_ttl"], json!(120));

    // HTTP API, $default: JSON-patch with its media type.
    let (status, _, body) = lambda_parts(call(&app, request("http-v2-default-patch-queue.json", &p)).await);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["color"], json!("blue"));

    // Posting through REST (path carrying the stage) and through a named HTTP API stage: hrefs have no stage.
    let (status, headers, body) = lambda_parts(call(&app, request("rest-v1-post-messages.json", &p)).await);
    assert_eq!(status, 201, "{body}");
    let rest_ids: Vec<String> = json_of(&body)["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().strip_prefix("/v2/queues/q1/messages/").expect("href without stage").to_string())
        .collect();
    assert_eq!(
        headers.get("location").unwrap().to_str().unwrap(),
        format!("/v2/queues/q1/messages?ids={}", rest_ids.join(","))
    );
    let (status, _, body) = lambda_parts(call(&app, request("http-v2-stage-post-messages.json", &p)).await);
    assert_eq!(status, 201, "{body}");
    let http_ids: Vec<String> = json_of(&body)["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().rsplit('/').next().unwrap().to_string())
        .collect();

    // HTTP API, $default, with a query string (echo=true&limit=5).
    let (status, _, body) = lambda_parts(call(&app, request("http-v2-default-list-messages.json", &p)).await);
    assert_eq!(status, 200, "{body}");
    let listed = json_of(&body);
    let ids: Vec<String> =
        listed["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, [rest_ids.clone(), http_ids.clone()].concat());
    assert_eq!(listed["messages"][0]["body"], json!({"event": "rest"}));
    assert_eq!(listed["messages"][0]["ttl"], json!(300));
    assert_eq!(listed["messages"][1]["ttl"], json!(120), "queue default from the PUT event");
    assert_eq!(listed["messages"][2]["ttl"], json!(600));
    let next = listed["links"][0]["href"].as_str().unwrap();
    assert!(
        next.starts_with("/v2/queues/q1/messages?") && next.contains("limit=5") && next.contains("echo=true"),
        "{next}"
    );

    // HTTP API, $default, base64-encoded body: claim 2 with ttl 120.
    let (status, headers, body) = lambda_parts(call(&app, request("http-v2-default-claim.json", &p)).await);
    assert_eq!(status, 201, "{body}");
    let location = headers.get("location").unwrap().to_str().unwrap().to_string();
    assert!(location.starts_with("/v2/queues/q1/claims/"), "{location}");
    let claimed = json_of(&body);
    assert_eq!(claimed["messages"].as_array().unwrap().len(), 2);
    let (_, claim_doc) = sj(&c.get(&location).await);
    assert_eq!(claim_doc["ttl"], json!(120));

    // HTTP API, named stage, DELETE ?pop=20: pops the two unclaimed messages.
    let (status, _, body) = lambda_parts(call(&app, request("http-v2-stage-delete-messages.json", &p)).await);
    assert_eq!(status, 200, "{body}");
    let popped: Vec<String> =
        json_of(&body)["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(popped, http_ids);

    // Health function: ping ($default) and the versions document at the REST stage root.
    let (status, _, body) = lambda_parts(call(&app, request("http-v2-default-ping.json", &p)).await);
    assert_eq!((status, body.as_str()), (204, ""));
    let (status, headers, body) = lambda_parts(call(&app, request("rest-v1-get-root.json", &p)).await);
    assert_eq!(status, 300, "{body}");
    assert_eq!(headers.get("content-type").unwrap(), "application/json");
    assert_eq!(json_of(&body)["versions"][0]["links"][0]["href"], json!("/v2/"));
}

#[tokio::test]
async fn subscription_admin_and_health_events_through_the_handlers() {
    let app = app().await;
    let p = project();
    let (status, _, body) = lambda_parts(call(&app, request("rest-v1-put-queue.json", &p)).await);
    assert_eq!(status, 201, "{body}");

    // Subscriptions: create (HTTP API), then list (REST, stage "prod").
    let (status, _, body) = lambda_parts(call(&app, request("http-v2-default-post-subscription.json", &p)).await);
    assert_eq!(status, 201, "{body}");
    let id = json_of(&body)["subscription_id"].as_str().expect("subscription_id").to_string();
    let (status, _, body) = lambda_parts(call(&app, request("rest-v1-list-subscriptions.json", &p)).await);
    assert_eq!(status, 200, "{body}");
    let listed = json_of(&body);
    assert_eq!(listed["subscriptions"][0]["id"], json!(id), "{body}");
    assert_eq!(listed["subscriptions"][0]["subscriber"], json!("mailto:ops@example.com"));
    assert_eq!(listed["subscriptions"][0]["source"], json!("q1"));

    // Pools are global: start from no fixture pool (a persistent table may have one), end with none.
    let mut delete = request("http-v2-default-put-pool.json", &p);
    (delete.method, delete.body, delete.has_content_length) = (http::Method::DELETE, vec![], false);
    assert_eq!(call(&app, delete.clone()).await.status, 204);
    let (status, _, body) = lambda_parts(call(&app, request("http-v2-default-put-pool.json", &p)).await);
    assert_eq!(status, 201, "{body}");
    let (status, _, body) = lambda_parts(call(&app, request("rest-v1-list-pools.json", &p)).await);
    assert_eq!(status, 200, "{body}");
    let pools = json_of(&body);
    let pool = pools["pools"].as_array().unwrap().iter().find(|p| p["name"] == json!("fixture-pool"));
    assert_eq!(pool.map(|p| p["weight"].clone()), Some(json!(10)), "{body}");
    assert_eq!(call(&app, delete).await.status, 204);

    // Health (admin mode): the storage self-test.
    let (status, _, body) = lambda_parts(call(&app, request("http-v2-default-health.json", &p)).await);
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn lambda_responses_keep_errors_and_empty_bodies() {
    let app = app().await;
    let p = project();
    // A 405 keeps its Allow header through into_lambda; a 406 has no body.
    let mut req = request("http-v2-default-ping.json", &p);
    req.method = http::Method::POST;
    let (status, headers, body) = lambda_parts(call(&app, req).await);
    assert_eq!(status, 405);
    assert_eq!(headers.get("allow").unwrap(), "GET, HEAD, OPTIONS");
    assert_eq!(body, r#"{"title": "405 Method Not Allowed"}"#);
    let mut req = request("http-v2-default-list-messages.json", &p);
    req.headers.insert("accept", HeaderValue::from_static("text/html"));
    let (status, _, body) = lambda_parts(call(&app, req).await);
    assert_eq!((status, body.as_str()), (406, ""));
    // The queue of these fixtures does not exist in this project: lazy semantics hold.
    let (status, _, body) = lambda_parts(call(&app, request("http-v2-default-patch-queue.json", &p)).await);
    assert_eq!(status, 404, "{body}");
}

/// The functions hand lambda_http a response in its final form (`zaqar::http::LambdaReply`) instead of
/// going through its re-decoding of text bodies. What API Gateway receives must be what that conversion
/// made of the same responses, for both event versions.
#[tokio::test]
async fn lambda_output_is_what_lambda_http_would_have_made() {
    use lambda_http::request::LambdaRequest;
    use lambda_http::{service_fn, Adapter, Context, LambdaEvent, Service};
    use std::convert::Infallible;

    async fn through_adapter<R: lambda_http::IntoResponse + Send + 'static>(fixture_name: &str, reply: R) -> Value {
        let payload: LambdaRequest = serde_json::from_str(&fixture(fixture_name)).unwrap();
        let slot = std::sync::Mutex::new(Some(reply));
        let mut adapter = Adapter::from(service_fn(|_req: lambda_http::Request| {
            let reply = slot.lock().unwrap().take().expect("one call");
            async move { Ok::<_, Infallible>(reply) }
        }));
        let out = adapter.call(LambdaEvent::new(payload, Context::default())).await.unwrap();
        serde_json::to_value(out).unwrap()
    }

    let mut created = ApiResponse::empty(http::StatusCode::CREATED);
    created.headers.push(("location".into(), "/v2/queues/q1".into()));
    let mut not_allowed = ApiResponse::from_error(&zaqar::ApiError::method_not_allowed("GET, HEAD"));
    not_allowed.headers.push(("x-extra".into(), "1".into()));
    let responses = [
        ApiResponse::json(http::StatusCode::OK, &json!({"messages": [{"body": "é ☃ \u{1F600}", "ttl": 60}]})),
        created,
        ApiResponse::empty(http::StatusCode::NO_CONTENT),
        ApiResponse::from_error(&zaqar::ApiError::not_acceptable()),
        not_allowed,
    ];
    for fixture_name in ["rest-v1-get-root.json", "http-v2-default-ping.json"] {
        for resp in &responses {
            let ours = through_adapter(fixture_name, zaqar::http::LambdaReply(resp.clone().into_lambda())).await;
            let theirs = through_adapter(fixture_name, resp.clone().into_lambda()).await;
            assert_eq!(ours, theirs, "{fixture_name}: status {}", resp.status);
            assert_eq!(ours["isBase64Encoded"], json!(false), "{ours}");
            assert!(ours["body"].is_string(), "{ours}");
        }
    }
}
