//! Queue endpoints against DynamoDB Local (docs/api.md#transport, #queues; recorded Zaqar 23 answers).

use harness::*;
use http::Method;
use serde_json::{json, Value};
use zaqar::config::Config;
use zaqar::signing::{self, SignedScope};
use zaqar::{ApiRequest, ApiResponse, App};

const PATCH_CT: &str = "application/openstack-messaging-v2.0-json-patch";

/// The reserved metadata a never-configured queue reports (docs/api.md#queues-get), in Zaqar's key order.
const DEFAULTS_TEXT: &str = r#"{"_max_messages_post_size": 262144, "_default_message_ttl": 3600, "_default_message_delay": 0, "_dead_letter_queue": null, "_dead_letter_queue_messages_ttl": null, "_max_claim_count": null, "_enable_encrypt_messages": false}"#;

fn defaults() -> Value {
    serde_json::from_str(DEFAULTS_TEXT).unwrap()
}

fn text(resp: &ApiResponse) -> String {
    String::from_utf8(resp.body.clone()).unwrap()
}

/// A request with only the given headers (no Client-ID or project unless listed).
async fn bare(app: &App, method: Method, path: &str, headers: &[(&str, &str)]) -> ApiResponse {
    let mut req = ApiRequest::new(method, path);
    for (n, v) in headers {
        req = req.header(n, v);
    }
    call(app, req).await
}

async fn with_headers(c: &Client<'_>, method: Method, path: &str, headers: &[(&str, &str)]) -> ApiResponse {
    let mut req = c.request(method, path);
    for (n, v) in headers {
        req = req.header(n, v);
    }
    c.send(req).await
}

fn assert_error(resp: &ApiResponse, status: u16, title: &str, description: &str) {
    assert_eq!(err(resp), (status, title.to_string(), description.to_string()), "body: {}", text(resp));
    assert_eq!(resp.header_value("content-type"), Some("application/json"));
}

fn assert_no_route(resp: &ApiResponse) {
    assert_eq!(resp.status, 404);
    assert_eq!(text(resp), r#"{"title": "404 Not Found"}"#);
}

#[tokio::test]
async fn create_get_list_delete() {
    let app = app().await;
    let c = Client::new(&app);
    let r = c.put("/v2/queues/q1", None).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header_value("location"), Some("/v2/queues/q1"));
    assert_eq!(c.put("/v2/queues/q1", None).await.status, 204);
    let (s, body) = sj(&c.get("/v2/queues/q1").await);
    assert_eq!(s, 200);
    assert_eq!(body["_default_message_ttl"], json!(3600));
    let (s, body) = sj(&c.get("/v2/queues").await);
    assert_eq!(s, 200);
    assert_eq!(body["queues"], json!([{"name": "q1", "href": "/v2/queues/q1"}]));
    assert_eq!(body["links"][0]["href"], json!("/v2/queues?marker=q1"));
    assert_eq!(c.delete("/v2/queues/q1").await.status, 204);
    let (_, body) = sj(&c.get("/v2/queues").await);
    assert_eq!(body, json!({"queues": [], "links": []}));
}

// ---------------------------------------------------------------------------------------------
// Versions, home document, ping, health (docs/api.md#versions, #home, #health)

#[tokio::test]
async fn versions_document_needs_no_headers() {
    let app = app().await;
    let expected = r#"{"versions": [{"id": "2", "status": "CURRENT", "updated": "2014-9-24T04:06:47Z", "media-types": [{"base": "application/json", "type": "application/vnd.openstack.messaging-v2+json"}], "links": [{"href": "/v2/", "rel": "self"}]}]}"#;
    for path in ["/", "/?foo=bar"] {
        let r = bare(&app, Method::GET, path, &[]).await;
        assert_eq!(r.status, 300, "{path}");
        assert_eq!(text(&r), expected);
        assert_eq!(r.header_value("content-type"), Some("application/json"));
        assert!(r.header_value("x-openstack-request-id").unwrap().starts_with("req-"));
    }
    // Accept still applies to `/`.
    let r = bare(&app, Method::GET, "/", &[("Accept", "text/html")]).await;
    assert_eq!(r.status, 406);
}

#[tokio::test]
async fn home_document() {
    let app = app().await;
    let c = Client::new(&app);
    let r = c.get("/v2/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header_value("content-type"), Some("application/json-home"));
    assert_eq!(r.header_value("cache-control"), Some("max-age=86400"));
    let body = r.json_body();
    let resources = body["resources"].as_object().unwrap();
    for rel in [
        "queues",
        "queue",
        "queue_stats",
        "queue_share",
        "queue_purge",
        "messages",
        "post_messages",
        "messages_delete",
        "message_delete",
        "message_get",
        "claim",
        "post_claim",
        "patch_claim",
        "delete_claim",
        "subscriptions_get",
        "subscriptions_post",
        "subscription",
        "subscription_patch",
        "ping",
    ] {
        assert!(resources.contains_key(&format!("rel/{rel}")), "missing rel/{rel}");
    }
    assert_eq!(resources["rel/queues"]["href-template"], json!("/v2/queues{?marker,limit,detailed}"));
    assert_eq!(resources["rel/queue"]["hints"]["allow"], json!(["GET", "PUT", "DELETE", "PATCH"]));
    assert_eq!(resources["rel/post_claim"]["href-template"], json!("/v2/queues/{queue_name}/claims{?limit}"));
    // Admin mode is on in the test config.
    assert_eq!(resources["rel/health"]["href"], json!("/v2/health"));

    // `/v2` without the trailing slash is no route (#2).
    assert_no_route(&c.get("/v2").await);
    // The home document needs Client-ID (#4).
    let r = bare(&app, Method::GET, "/v2/", &[("X-Project-ID", "p1")]).await;
    assert_error(&r, 400, "Missing header value", "The \"Client-Id\" header is required.");
    // application/json-home alone is not acceptable, even here (docs/api.md#transport-hooks).
    let r = with_headers(&c, Method::GET, "/v2/", &[("Accept", "application/json-home")]).await;
    assert_eq!(r.status, 406);
}

#[tokio::test]
async fn ping_get_and_head() {
    let app = app().await;
    let c = Client::new(&app);
    let r = c.get("/v2/ping").await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    let r = c.send(c.request(Method::HEAD, "/v2/ping")).await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    // Ping needs Client-ID and project (docs/api.md#health-ping).
    let r = bare(&app, Method::GET, "/v2/ping", &[("X-Project-ID", "p1")]).await;
    assert_error(&r, 400, "Missing header value", "The \"Client-Id\" header is required.");
    let r = bare(&app, Method::GET, "/v2/ping", &[("Client-ID", CLIENT)]).await;
    assert_error(&r, 400, "Project-Id Missing", "The header X-PROJECT-ID was missing");
    // Other methods: 405 with Allow.
    let r = c.delete("/v2/ping").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header_value("allow"), Some("GET, HEAD, OPTIONS"));
}

#[tokio::test]
async fn health_requires_admin_role() {
    let app = app().await;
    let c = Client::new(&app);
    // #7
    let r = c.get("/v2/health").await;
    assert_error(&r, 403, "Not authorized", "You are not authorized to complete this action.");
    assert_eq!(
        text(&r),
        r#"{"title": "Not authorized", "description": "You are not authorized to complete this action."}"#
    );
    let r = with_headers(&c, Method::GET, "/v2/health", &[("X-Roles", "member")]).await;
    assert_eq!(r.status, 403);
    // #8
    let r = c.send(c.request(Method::HEAD, "/v2/health")).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header_value("allow"), Some("GET, OPTIONS"));
    // #9
    let r = with_headers(&c, Method::GET, "/v2/health", &[("X-Roles", "reader, admin")]).await;
    let (s, body) = sj(&r);
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["storage_reachable"], json!(true));
    let ops = body["operation_status"].as_object().unwrap();
    let mut names: Vec<&str> = ops.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "bulk_delete_messages",
            "claim_messages",
            "create_queue",
            "delete_claim",
            "delete_messages",
            "delete_queue",
            "list_messages",
            "post_messages"
        ]
    );
    for (name, op) in ops {
        let keys: Vec<&str> = op.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["succeeded", "seconds", "ref"], "{name}");
        assert_eq!(op["succeeded"], json!(true), "{name}: {op}");
        assert!(op["seconds"].is_number());
        assert_eq!(op["ref"], Value::Null);
    }
    // The throw-away queue is gone again.
    let (_, list) = sj(&c.get("/v2/queues").await);
    assert_eq!(list, json!({"queues": [], "links": []}));
}

#[tokio::test]
async fn health_is_not_mounted_without_admin_mode() {
    let app = app_with(Config { admin_mode: false, ..Config::for_tests("zaqar-tests") }).await;
    let c = Client::new(&app);
    assert_no_route(&with_headers(&c, Method::GET, "/v2/health", &[("X-Roles", "admin")]).await);
    let (_, home) = sj(&c.get("/v2/").await);
    assert!(home["resources"].get("rel/health").is_none());
}

// ---------------------------------------------------------------------------------------------
// Header rules and the order of the hooks (docs/api.md#transport-hooks, #transport-headers)

#[tokio::test]
async fn client_id_rules() {
    let app = app().await;
    let p = project();
    // #11: missing
    let r = bare(&app, Method::GET, "/v2/queues", &[("X-Project-ID", &p)]).await;
    assert_eq!(
        text(&r),
        r#"{"title": "Missing header value", "description": "The \"Client-Id\" header is required."}"#
    );
    assert_eq!(r.status, 400);
    // #12: not a UUID
    let r = bare(&app, Method::GET, "/v2/queues", &[("Client-ID", "not-a-uuid"), ("X-Project-ID", &p)]).await;
    assert_eq!(r.status, 400);
    assert_eq!(text(&r), r#"{"title": "Wrong UUID value", "description": "Malformed hexadecimal UUID."}"#);
    for bad in [
        "",
        "3381af92-2b9e-11e3-b191-71861300734",
        "3381af92-2b9e-11e3-b191-71861300734cz",
        "g381af922b9e11e3b19171861300734c",
    ] {
        let r = bare(&app, Method::GET, "/v2/queues", &[("Client-ID", bad), ("X-Project-ID", &p)]).await;
        assert_error(&r, 400, "Wrong UUID value", "Malformed hexadecimal UUID.");
    }
    // What python's uuid.UUID() accepts: dashless (python-zaqarclient), braces, urn, upper case.
    for good in [
        "3381af922b9e11e3b19171861300734c",
        "{3381af92-2b9e-11e3-b191-71861300734c}",
        "urn:uuid:3381af92-2b9e-11e3-b191-71861300734c",
        "3381AF92-2B9E-11E3-B191-71861300734C",
    ] {
        let r = bare(&app, Method::GET, "/v2/queues", &[("Client-ID", good), ("X-Project-ID", &p)]).await;
        assert_eq!(r.status, 200, "{good}: {}", text(&r));
    }
    // The header name is case-insensitive.
    let r = bare(&app, Method::GET, "/v2/queues", &[("client-id", CLIENT), ("x-project-id", &p)]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn project_rules_and_aliases() {
    let app = app().await;
    // #13
    let r = bare(&app, Method::GET, "/v2/queues", &[("Client-ID", CLIENT)]).await;
    assert_eq!(r.status, 400);
    assert_eq!(text(&r), r#"{"title": "Project-Id Missing", "description": "The header X-PROJECT-ID was missing"}"#);
    let r = bare(&app, Method::GET, "/v2/queues", &[("Client-ID", CLIENT), ("X-Project-ID", "")]).await;
    let (s, title, _) = err(&r);
    assert_eq!((s, title.as_str()), (400, "Empty project header not allowed"));

    // X-Tenant-ID and X-Tenant name the same partition as X-Project-ID.
    let p = project();
    let c = Client { app: &app, project: p.clone(), client_id: CLIENT.into() };
    assert_eq!(c.put("/v2/queues/aliased", None).await.status, 201);
    for alias in ["X-Tenant-ID", "X-Tenant"] {
        let r = bare(&app, Method::GET, "/v2/queues", &[("Client-ID", CLIENT), (alias, &p)]).await;
        let (s, body) = sj(&r);
        assert_eq!(s, 200, "{alias}");
        assert_eq!(body["queues"], json!([{"name": "aliased", "href": "/v2/queues/aliased"}]), "{alias}");
        let r = bare(&app, Method::PUT, "/v2/queues/aliased", &[("Client-ID", CLIENT), (alias, &p)]).await;
        assert_eq!(r.status, 204, "{alias}");
    }

    // #10: a 257-char project works on /v2/queues but not on a route with a queue name.
    let long = "p".repeat(257);
    let r = bare(&app, Method::GET, "/v2/queues", &[("Client-ID", CLIENT), ("X-Project-ID", &long)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(text(&r), r#"{"queues": [], "links": []}"#);
    for (method, path) in
        [(Method::GET, "/v2/queues/q"), (Method::PUT, "/v2/queues/q"), (Method::GET, "/v2/queues/q/messages")]
    {
        let r = bare(&app, method, path, &[("Client-ID", CLIENT), ("X-Project-ID", &long)]).await;
        assert_error(
            &r,
            400,
            "Invalid queue identification",
            "The format of the submitted queue name or project id is not valid.",
        );
    }
    let max = format!("m{}", uuid::Uuid::new_v4().simple()) + &"m".repeat(256 - 33);
    assert_eq!(max.len(), 256);
    let r = bare(&app, Method::PUT, "/v2/queues/q", &[("Client-ID", CLIENT), ("X-Project-ID", &max)]).await;
    assert_eq!(r.status, 201);
}

#[tokio::test]
async fn hooks_run_in_zaqar_order() {
    let app = app().await;
    let p = project();
    // No route wins over everything (GET /v2/foo without Client-ID → 404).
    assert_no_route(&bare(&app, Method::GET, "/v2/foo", &[]).await);
    // A bad pre-signed header wins over missing Client-ID.
    assert_no_route(&bare(&app, Method::GET, "/v2/queues/q/messages", &[("URL-Signature", "abc")]).await);
    // Form-encoding refusal comes before Accept and before Client-ID.
    let mut req = ApiRequest::new(Method::PUT, "/v2/queues/q3")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Accept", "text/html");
    req = req.body(b"a=b".to_vec());
    let r = call(&app, req).await;
    assert_eq!(err(&r).1, "Invalid Content-Type");
    // Accept comes before Client-ID.
    let r = bare(&app, Method::GET, "/v2/queues", &[("Accept", "text/html")]).await;
    assert_eq!(r.status, 406);
    // Client-ID before project: missing both → Client-ID; bad Client-ID and no project → UUID error.
    let r = bare(&app, Method::GET, "/v2/queues", &[]).await;
    assert_eq!(err(&r).1, "Missing header value");
    let r = bare(&app, Method::GET, "/v2/queues", &[("Client-ID", "nope")]).await;
    assert_eq!(err(&r).1, "Wrong UUID value");
    // Client-ID before the 405 (POST /v2/queues/q1 without Client-ID → 400).
    let r = bare(&app, Method::POST, "/v2/queues/q1", &[("X-Project-ID", &p)]).await;
    assert_eq!(err(&r).1, "Missing header value");
    // Queue-name validation before the 405.
    let r = bare(&app, Method::POST, "/v2/queues/bad$name", &[("Client-ID", CLIENT), ("X-Project-ID", &p)]).await;
    assert_eq!(err(&r).1, "Invalid queue identification");
    // Project before queue-name validation.
    let r = bare(&app, Method::PUT, "/v2/queues/bad$name", &[("Client-ID", CLIENT)]).await;
    assert_eq!(err(&r).1, "Project-Id Missing");
}

#[tokio::test]
async fn accept_header() {
    let app = app().await;
    let c = Client::new(&app);
    // #14: 406 with an empty body.
    let r = with_headers(&c, Method::GET, "/v2/queues", &[("Accept", "text/html")]).await;
    assert_eq!(r.status, 406);
    assert!(r.body.is_empty());
    for ok in ["*/*", "application/json", "application/json; charset=utf-8", "text/html, application/*;q=0.5", ""] {
        let r = with_headers(&c, Method::GET, "/v2/queues", &[("Accept", ok)]).await;
        assert_eq!(r.status, 200, "Accept: {ok}");
    }
    for bad in ["application/xml", "application/json-home", "application/json;q=0"] {
        let r = with_headers(&c, Method::GET, "/v2/queues", &[("Accept", bad)]).await;
        assert_eq!(r.status, 406, "Accept: {bad}");
        assert!(r.body.is_empty());
    }
}

#[tokio::test]
async fn form_urlencoded_is_refused() {
    let app = app().await;
    let c = Client::new(&app);
    let expected = r#"{"title": "Invalid Content-Type", "description": "Endpoint does not accept `application/x-www-form-urlencoded` content; currently supported media type is `application/json`; specify proper client-side media type with the \"Content-Type\" header."}"#;
    // #25
    let r = c
        .send(
            c.request(Method::PUT, "/v2/queues/q3")
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(b"a=b".to_vec()),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(text(&r), expected);
    // A bodiless PUT still carries Content-Length: 0 over the wire → refused too.
    let r = c
        .send(
            c.request(Method::PUT, "/v2/queues/q3")
                .header("Content-Type", "Application/X-WWW-Form-Urlencoded")
                .body(Vec::new()),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(text(&r), expected);
    // On other endpoints too (POST messages).
    let r = c
        .send(
            c.request(Method::POST, "/v2/queues/q3/messages")
                .header("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
                .body(b"x".to_vec()),
        )
        .await;
    assert_eq!(text(&r), expected);
    // Without any Content-Length the header alone does not matter.
    let r =
        c.send(c.request(Method::GET, "/v2/queues").header("Content-Type", "application/x-www-form-urlencoded")).await;
    assert_eq!(r.status, 200);
    // Nothing was created.
    let (_, list) = sj(&c.get("/v2/queues").await);
    assert_eq!(list["queues"], json!([]));
}

#[tokio::test]
async fn unknown_paths_methods_and_options() {
    let app = app().await;
    let c = Client::new(&app);
    // #15
    for path in
        ["/v2/nope", "/v2/queues/", "/v2/queues/q/unknown", "/v2/queues/q/messages/m/x", "/v3/queues", "/v2/topics"]
    {
        let r = c.get(path).await;
        assert_no_route(&r);
        assert_eq!(r.header_value("content-type"), Some("application/json"), "{path}");
    }
    // #26
    let r = c.post("/v2/queues/q1", "{}").await;
    assert_eq!(r.status, 405);
    assert_eq!(text(&r), r#"{"title": "405 Method Not Allowed"}"#);
    assert_eq!(r.header_value("allow"), Some("DELETE, GET, PATCH, PUT, OPTIONS"));
    // HEAD is not implemented for queues.
    let r = c.send(c.request(Method::HEAD, "/v2/queues/q1")).await;
    assert_eq!(r.status, 405);
    for (method, path, allow) in [
        (Method::DELETE, "/v2/queues", "GET, OPTIONS"),
        (Method::PUT, "/v2/queues/q/stats", "GET, OPTIONS"),
        (Method::GET, "/v2/queues/q/purge", "POST, OPTIONS"),
        (Method::GET, "/v2/queues/q/share", "POST, OPTIONS"),
        (Method::PUT, "/v2/queues/q/messages", "DELETE, GET, POST, OPTIONS"),
        (Method::POST, "/v2/queues/q/messages/m", "DELETE, GET, OPTIONS"),
        (Method::GET, "/v2/queues/q/claims", "POST, OPTIONS"),
        (Method::POST, "/v2/queues/q/claims/c", "DELETE, GET, PATCH, OPTIONS"),
    ] {
        let r = c.send(c.request(method.clone(), path)).await;
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.header_value("allow"), Some(allow), "{method} {path}");
        // OPTIONS on a known path: 200 + Allow.
        let r = c.send(c.request(Method::OPTIONS, path)).await;
        assert_eq!(r.status, 200, "OPTIONS {path}");
        assert_eq!(r.header_value("allow"), Some(allow), "OPTIONS {path}");
    }
    let r = c.send(c.request(Method::OPTIONS, "/v2/queues/q1")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header_value("allow"), Some("DELETE, GET, PATCH, PUT, OPTIONS"));
    // Double slashes are tolerated.
    assert_eq!(c.get("//v2/queues").await.status, 200);
}

// ---------------------------------------------------------------------------------------------
// Create (docs/api.md#queues-create)

#[tokio::test]
async fn queue_names() {
    let app = app().await;
    let c = Client::new(&app);
    let invalid = r#"{"title": "Invalid queue identification", "description": "The format of the submitted queue name or project id is not valid."}"#;
    // #20 / #21
    let b64 = "b".repeat(64);
    let r = c.put(&format!("/v2/queues/{b64}"), None).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header_value("location"), Some(format!("/v2/queues/{b64}").as_str()));
    let r = c.put(&format!("/v2/queues/{}", "a".repeat(65)), None).await;
    assert_eq!(r.status, 400);
    assert_eq!(text(&r), invalid);
    // #19 and other bad characters (raw and percent-encoded).
    for bad in ["bad$name", "bad%20name", "bad%24name", "%C3%A9t%C3%A9", "a+b", "a*b", "a%23b"] {
        let r = c.put(&format!("/v2/queues/{bad}"), None).await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(text(&r), invalid, "{bad}");
    }
    // Dots, dashes and underscores are allowed.
    for good in ["a.b", "A-Z_09", "..."] {
        let r = c.put(&format!("/v2/queues/{good}"), None).await;
        assert_eq!(r.status, 201, "{good}: {}", text(&r));
    }
    // Percent-encoding of valid characters is decoded (falcon decodes the path).
    let r = c.put("/v2/queues/q%2D1", None).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header_value("location"), Some("/v2/queues/q-1"));
    assert_eq!(c.put("/v2/queues/q-1", None).await.status, 204);
    let (_, list) = sj(&c.get("/v2/queues?limit=20").await);
    let names: Vec<&str> = list["queues"].as_array().unwrap().iter().map(|q| q["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["...", "A-Z_09", "a.b", b64.as_str(), "q-1"]);
}

#[tokio::test]
async fn put_creates_once_and_keeps_metadata() {
    let app = app().await;
    let c = Client::new(&app);
    // #18
    let r = c
        .put(
            "/v2/queues/q2",
            Some(r#"{"description": "second queue", "_default_message_ttl": 1800, "_max_messages_post_size": 262144}"#),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header_value("location"), Some("/v2/queues/q2"));
    assert!(r.body.is_empty());
    // #33: stored keys first, then the reserved defaults, in Zaqar's order.
    let r = c.get("/v2/queues/q2").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        text(&r),
        r#"{"description": "second queue", "_default_message_ttl": 1800, "_max_messages_post_size": 262144, "_default_message_delay": 0, "_dead_letter_queue": null, "_dead_letter_queue_messages_ttl": null, "_max_claim_count": null, "_enable_encrypt_messages": false}"#
    );
    // #17: PUT on an existing queue is 204 with Location and does not change the metadata.
    let r = c.put("/v2/queues/q2", Some(r#"{"description": "changed", "_default_message_ttl": 120}"#)).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header_value("location"), Some("/v2/queues/q2"));
    let (_, meta) = sj(&c.get("/v2/queues/q2").await);
    assert_eq!(meta["description"], json!("second queue"));
    assert_eq!(meta["_default_message_ttl"], json!(1800));
    // Validation still runs on an existing queue.
    let r = c.put("/v2/queues/q2", Some(r#"{"_default_message_ttl": 1}"#)).await;
    assert_eq!(r.status, 400);
    // Free-form metadata of any JSON type is kept as given.
    let r = c.put("/v2/queues/free", Some(r#"{"nested": {"a": [1, 2.5, null, true]}, "s": "é"}"#)).await;
    assert_eq!(r.status, 201);
    let (_, meta) = sj(&c.get("/v2/queues/free").await);
    assert_eq!(meta["nested"], json!({"a": [1, 2.5, null, true]}));
    assert_eq!(meta["s"], json!("é"));
    // An empty object and no body both create.
    assert_eq!(c.put("/v2/queues/empty-obj", Some("{}")).await.status, 201);
    assert_eq!(c.put("/v2/queues/no-body", None).await.status, 201);
}

#[tokio::test]
async fn put_body_errors() {
    let app = app().await;
    let c = Client::new(&app);
    let unparsable = r#"{"title": "Invalid request body", "description": "Request body could not be parsed."}"#;
    // #22
    let r = c.put("/v2/queues/q3", Some(r#"{"a": "#)).await;
    assert_eq!(r.status, 400);
    assert_eq!(text(&r), unparsable);
    for body in [r#""fail""#, "123", "nul", "{'a': 1}"] {
        assert_eq!(text(&c.put("/v2/queues/q3", Some(body)).await), unparsable, "{body}");
    }
    let r = c.send(c.request(Method::PUT, "/v2/queues/q3").body(vec![b'{', 0xff, 0xfe, b'}'])).await;
    assert_eq!(text(&r), unparsable);
    // #23
    let r = c.put("/v2/queues/q3", Some("[1,2]")).await;
    assert_eq!(text(&r), r#"{"title": "Invalid request body", "description": "Document type not supported."}"#);
    // Integers beyond signed 64-bit, anywhere in the document.
    for body in [r#"{"a": 9223372036854775808}"#, r#"{"a": {"b": [-9223372036854775809]}}"#] {
        assert_error(
            &c.put("/v2/queues/q3", Some(body)).await,
            400,
            "Invalid request body",
            "JSON contains integer that is too large.",
        );
    }
    assert_eq!(
        c.put("/v2/queues/q3", Some(r#"{"a": 9223372036854775807, "b": -9223372036854775808}"#)).await.status,
        201
    );
    // Oversized metadata: Content-Length > 65536 → exact message; exactly 65536 is fine.
    let pad = |total: usize| {
        let frame = r#"{"x": ""}"#.len();
        format!(r#"{{"x": "{}"}}"#, "y".repeat(total - frame))
    };
    let big = pad(65537);
    assert_eq!(big.len(), 65537);
    let r = c.put("/v2/queues/big", Some(&big)).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        text(&r),
        r#"{"title": "Invalid API request", "description": "Queue metadata is too large. Max size: 65536"}"#
    );
    // The size check comes before parsing.
    let r = c.put("/v2/queues/big", Some(&format!("{{{}", "z".repeat(70000)))).await;
    assert_eq!(err(&r).2, "Queue metadata is too large. Max size: 65536");
    let fits = pad(65536);
    assert_eq!(c.put("/v2/queues/big", Some(&fits)).await.status, 201);
    let (_, list) = sj(&c.get("/v2/queues").await);
    assert_eq!(
        list["queues"],
        json!([{"name": "big", "href": "/v2/queues/big"}, {"name": "q3", "href": "/v2/queues/q3"}])
    );
}

#[tokio::test]
async fn reserved_metadata_validation() {
    let app = app().await;
    let c = Client::new(&app);
    let ttl_range = "_default_message_ttl can not exceed 1209600 seconds, and must be at least 60 seconds long.";
    let size_range = "_max_messages_post_size can not exceed 262144,  and must be at least greater than 0.";
    let dlq_ttl_range = "The TTL for a message may not exceed 1209600 seconds, and must be at least 60 seconds long.";
    let delay_range = "The TTL can not exceed 900 seconds, and must be at least 0 seconds long.";
    let cases: Vec<(Value, &str)> = vec![
        // #24
        (json!({"_default_message_ttl": 99999999}), ttl_range),
        (json!({"_default_message_ttl": 59}), ttl_range),
        (json!({"_default_message_ttl": 0}), ttl_range),
        (json!({"_default_message_ttl": false}), ttl_range),
        (json!({"_default_message_ttl": "x"}), "_default_message_ttl must be integer."),
        (json!({"_default_message_ttl": 120.5}), "_default_message_ttl must be integer."),
        (json!({"_max_messages_post_size": 262145}), size_range),
        (json!({"_max_messages_post_size": 0}), size_range),
        (json!({"_max_messages_post_size": "1k"}), "_max_messages_post_size must be integer."),
        (json!({"_max_claim_count": "2"}), "_max_claim_count must be integer."),
        (json!({"_dead_letter_queue_messages_ttl": 59}), dlq_ttl_range),
        (json!({"_dead_letter_queue_messages_ttl": 1209601}), dlq_ttl_range),
        (json!({"_dead_letter_queue_messages_ttl": [1]}), "_dead_letter_queue_messages_ttl must be integer."),
        (json!({"_default_message_delay": 901}), delay_range),
        (json!({"_default_message_delay": -1}), delay_range),
        (json!({"_default_message_delay": "5"}), "_default_message_delay must be integer."),
        (json!({"_enable_encrypt_messages": "yes"}), "_enable_encrypt_messages must be boolean."),
        (json!({"_enable_encrypt_messages": 1}), "_enable_encrypt_messages must be boolean."),
    ];
    for (meta, description) in cases {
        let r = c.put("/v2/queues/rq", Some(&meta.to_string())).await;
        assert_error(&r, 400, "Invalid API request", description);
    }
    // Nothing was created by the failures.
    let (_, list) = sj(&c.get("/v2/queues").await);
    assert_eq!(list["queues"], json!([]));
    // Valid edge values.
    let ok = json!({
        "_default_message_ttl": 60, "_max_messages_post_size": 1, "_default_message_delay": 900,
        "_dead_letter_queue": "dlq", "_dead_letter_queue_messages_ttl": 1209600, "_max_claim_count": -5,
        "_enable_encrypt_messages": true, "_flavor": "", "_retry_policy": {}
    });
    assert_eq!(c.put("/v2/queues/rq", Some(&ok.to_string())).await.status, 201);
    let ok = json!({"_default_message_ttl": null, "_default_message_delay": 0, "_max_claim_count": 0, "_enable_encrypt_messages": false});
    assert_eq!(c.put("/v2/queues/rq2", Some(&ok.to_string())).await.status, 201);
}

// ---------------------------------------------------------------------------------------------
// Metadata (docs/api.md#queues-get)

#[tokio::test]
async fn get_metadata_defaults() {
    let app = app().await;
    let c = Client::new(&app);
    // #34: a queue that does not exist reports the defaults (and is not created).
    let r = c.get("/v2/queues/nosuchq").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header_value("content-type"), Some("application/json"));
    assert_eq!(text(&r), DEFAULTS_TEXT);
    let (_, list) = sj(&c.get("/v2/queues").await);
    assert_eq!(list["queues"], json!([]));
    // Falsy reserved values are replaced by their defaults; other keys are kept.
    let stored = json!({
        "_default_message_ttl": null, "_default_message_delay": 0, "_dead_letter_queue": "",
        "_dead_letter_queue_messages_ttl": null, "_max_claim_count": 0, "_enable_encrypt_messages": false,
        "_flavor": "", "other": 0
    });
    assert_eq!(c.put("/v2/queues/falsy", Some(&stored.to_string())).await.status, 201);
    let (_, meta) = sj(&c.get("/v2/queues/falsy").await);
    let mut expected = defaults();
    expected["_flavor"] = json!("");
    expected["other"] = json!(0);
    assert_eq!(meta, expected);
    // Truthy values are reported as stored.
    let stored = json!({"_default_message_ttl": 120, "_max_messages_post_size": 1000, "_default_message_delay": 5,
        "_dead_letter_queue": "dlq", "_dead_letter_queue_messages_ttl": 300, "_max_claim_count": 3, "_enable_encrypt_messages": true});
    assert_eq!(c.put("/v2/queues/truthy", Some(&stored.to_string())).await.status, 201);
    let (_, meta) = sj(&c.get("/v2/queues/truthy").await);
    assert_eq!(meta, stored);
}

// ---------------------------------------------------------------------------------------------
// List (docs/api.md#queues-list)

async fn names(c: &Client<'_>, query: &str) -> (Vec<String>, Value) {
    let (s, body) = sj(&c.get(&format!("/v2/queues{query}")).await);
    assert_eq!(s, 200, "{query}: {body}");
    let names = body["queues"].as_array().unwrap().iter().map(|q| q["name"].as_str().unwrap().to_string()).collect();
    (names, body)
}

#[tokio::test]
async fn list_paging_and_links() {
    let app = app().await;
    let c = Client::new(&app);
    let b64 = "b".repeat(64);
    for q in ["q2", "q1", b64.as_str(), "B-upper"] {
        assert_eq!(c.put(&format!("/v2/queues/{q}"), None).await.status, 201);
    }
    // #27: byte order, a next link even on the last page.
    let (all, body) = names(&c, "").await;
    assert_eq!(all, ["B-upper", b64.as_str(), "q1", "q2"]);
    assert_eq!(body["links"], json!([{"rel": "next", "href": "/v2/queues?marker=q2"}]));
    // #29, #30: paging with limit=1.
    let r = c.get("/v2/queues?limit=1").await;
    assert_eq!(
        text(&r),
        r#"{"queues": [{"name": "B-upper", "href": "/v2/queues/B-upper"}], "links": [{"rel": "next", "href": "/v2/queues?limit=1&marker=B-upper"}]}"#
    );
    let mut seen = Vec::new();
    let mut href = "/v2/queues?limit=1".to_string();
    loop {
        let (s, body) = sj(&c.get(&href).await);
        assert_eq!(s, 200);
        let page = body["queues"].as_array().unwrap();
        if page.is_empty() {
            assert_eq!(body["links"], json!([]));
            break;
        }
        assert_eq!(page.len(), 1);
        seen.push(page[0]["name"].as_str().unwrap().to_string());
        href = body["links"][0]["href"].as_str().unwrap().to_string();
        assert!(href.contains("limit=1"));
    }
    assert_eq!(seen, all);
    // Marker: names strictly greater.
    let (after, _) = names(&c, "?marker=q1").await;
    assert_eq!(after, ["q2"]);
    let (after, _) = names(&c, "?marker=a").await;
    assert_eq!(after, [b64.as_str(), "q1", "q2"]);
    let (after, body) = names(&c, "?marker=zzz").await;
    assert!(after.is_empty());
    assert_eq!(body, json!({"queues": [], "links": []}));
    // #28: detailed, limit=1.
    let r = c.get("/v2/queues?detailed=true&limit=1").await;
    assert_eq!(
        text(&r),
        format!(
            r#"{{"queues": [{{"name": "B-upper", "metadata": {DEFAULTS_TEXT}, "href": "/v2/queues/B-upper"}}], "links": [{{"rel": "next", "href": "/v2/queues?limit=1&detailed=true&marker=B-upper"}}]}}"#
        )
    );
    // Default page size is 10.
    for i in 0..9 {
        c.put(&format!("/v2/queues/z{i}"), None).await;
    }
    let (page, _) = names(&c, "").await;
    assert_eq!(page.len(), 10);
    let (page, _) = names(&c, "?limit=20").await;
    assert_eq!(page.len(), 13);
}

#[tokio::test]
async fn list_limit_errors() {
    let app = app().await;
    let c = Client::new(&app);
    let expected =
        r#"{"title": "Invalid API request", "description": "Limit must be at least 1 and no greater than 20."}"#;
    // #31, #32
    for q in ["?limit=0", "?limit=21", "?limit=1000", "?limit=-1"] {
        let r = c.get(&format!("/v2/queues{q}")).await;
        assert_eq!(r.status, 400, "{q}");
        assert_eq!(text(&r), expected, "{q}");
    }
    for q in ["?limit=abc", "?limit=1.5", "?detailed=maybe", "?with_count=2"] {
        let (s, title, _) = err(&c.get(&format!("/v2/queues{q}")).await);
        assert_eq!((s, title.as_str()), (400, "Invalid parameter"), "{q}");
    }
    // Blank values are ignored.
    assert_eq!(c.get("/v2/queues?limit=&detailed=").await.status, 200);
    assert_eq!(c.get("/v2/queues?limit=20").await.status, 200);
}

#[tokio::test]
async fn list_detailed_count_and_filters() {
    let app = app().await;
    let c = Client::new(&app);
    // with_count on an empty project: no count key.
    let (_, body) = names(&c, "?with_count=true").await;
    assert_eq!(body, json!({"queues": [], "links": []}));
    let queues = [
        ("alpha", json!({"node": 31, "color": "blue"})),
        ("alphabet", json!({"node": "31", "color": "red"})),
        ("beta", json!({"node": 32, "color": "blue", "_default_message_ttl": 120})),
        ("gamma-lph", json!({"node": 31})),
    ];
    for (name, meta) in &queues {
        assert_eq!(c.put(&format!("/v2/queues/{name}"), Some(&meta.to_string())).await.status, 201);
    }
    let (page, body) = names(&c, "?with_count=true&limit=1").await;
    assert_eq!(page, ["alpha"]);
    assert_eq!(body["count"], json!(4));
    // Detailed: metadata with defaults filled in.
    let (_, body) = names(&c, "?detailed=true").await;
    let beta = &body["queues"][2];
    assert_eq!(beta["name"], json!("beta"));
    let mut expected = defaults();
    expected["node"] = json!(32);
    expected["color"] = json!("blue");
    expected["_default_message_ttl"] = json!(120);
    assert_eq!(beta["metadata"], expected);
    assert_eq!(beta["href"], json!("/v2/queues/beta"));
    // Not detailed: no metadata key.
    let (_, body) = names(&c, "").await;
    assert!(body["queues"][0].get("metadata").is_none());
    // Name substring.
    assert_eq!(names(&c, "?name=lph").await.0, ["alpha", "alphabet", "gamma-lph"]);
    assert_eq!(names(&c, "?name=zzz").await.0, Vec::<String>::new());
    // Metadata equality filters; integers compared as integers.
    assert_eq!(names(&c, "?node=31").await.0, ["alpha", "gamma-lph"]);
    assert_eq!(names(&c, "?color=blue").await.0, ["alpha", "beta"]);
    assert_eq!(names(&c, "?color=blue&node=32").await.0, ["beta"]);
    assert_eq!(names(&c, "?name=alpha&node=31").await.0, ["alpha"]);
    assert_eq!(names(&c, "?_default_message_ttl=120").await.0, ["beta"]);
    assert_eq!(names(&c, "?color=green").await.0, Vec::<String>::new());
    // Filters keep working across pages (following the next link).
    let (page, body) = names(&c, "?node=31&limit=1").await;
    assert_eq!(page, ["alpha"]);
    let next = body["links"][0]["href"].as_str().unwrap().to_string();
    let (s, body) = sj(&c.get(&next).await);
    assert_eq!(s, 200);
    assert_eq!(body["queues"], json!([{"name": "gamma-lph", "href": "/v2/queues/gamma-lph"}]), "{next}");
}

#[tokio::test]
async fn projects_are_isolated() {
    let app = app().await;
    let c1 = Client::new(&app);
    let c2 = Client::new(&app);
    assert_eq!(c1.put("/v2/queues/q1", Some(r#"{"a": 1}"#)).await.status, 201);
    c1.post("/v2/queues/q1/messages", r#"{"messages": [{"body": 1}]}"#).await;
    // #114
    let r = c2.get("/v2/queues").await;
    assert_eq!(text(&r), r#"{"queues": [], "links": []}"#);
    // Same queue name in another project is another queue.
    assert_eq!(c2.put("/v2/queues/q1", None).await.status, 201);
    let (_, meta) = sj(&c2.get("/v2/queues/q1").await);
    assert!(meta.get("a").is_none());
    let (_, stats) = sj(&c2.get("/v2/queues/q1/stats").await);
    assert_eq!(stats["messages"]["total"], json!(0));
    assert_eq!(c2.delete("/v2/queues/q1").await.status, 204);
    let (_, stats) = sj(&c1.get("/v2/queues/q1/stats").await);
    assert_eq!(stats["messages"]["total"], json!(1));
}

// ---------------------------------------------------------------------------------------------
// PATCH (docs/api.md#queues-patch)

async fn patch(c: &Client<'_>, q: &str, body: &str) -> ApiResponse {
    c.patch(&format!("/v2/queues/{q}"), PATCH_CT, body).await
}

#[tokio::test]
async fn patch_content_type_and_body() {
    let app = app().await;
    let c = Client::new(&app);
    c.put("/v2/queues/q2", Some(r#"{"description": "second queue"}"#)).await;
    let expected_415 = r#"{"title": "415 Unsupported Media Type", "description": "Accepted media type for PATCH: {'Accept-Patch': 'application/openstack-messaging-v2.0-json-patch'}."}"#;
    let ops = r#"[{"op": "replace", "path": "/metadata/description", "value": "x"}]"#;
    // #36 and the charset variant.
    for ct in ["application/json", "application/openstack-messaging-v2.0-json-patch; charset=utf-8", "text/plain"] {
        let r = c.patch("/v2/queues/q2", ct, ops).await;
        assert_eq!(r.status, 415, "{ct}");
        assert_eq!(text(&r), expected_415, "{ct}");
    }
    let r = c.send(c.request(Method::PATCH, "/v2/queues/q2").body(ops.as_bytes().to_vec())).await;
    assert_eq!(text(&r), expected_415);
    // The size check comes before the content-type check.
    let big = format!(r#"[{{"op": "add", "path": "/metadata/x", "value": "{}"}}]"#, "y".repeat(65536));
    let r = c.patch("/v2/queues/q2", "application/json", &big).await;
    assert_error(&r, 400, "Invalid request body", "Queue metadata is too large. Max size: 65536");
    // Empty body.
    let r = c.patch("/v2/queues/q2", PATCH_CT, "").await;
    assert_error(&r, 400, "Invalid request body", "PATCH body could not be empty for update.");
    let r = c.send(c.request(Method::PATCH, "/v2/queues/q2").header("Content-Type", PATCH_CT)).await;
    assert_error(&r, 400, "Invalid request body", "PATCH body could not be empty for update.");
    // Unparsable / oversized integers.
    assert_error(&patch(&c, "q2", "[{").await, 400, "Invalid request body", "Request body could not be parsed.");
    assert_error(
        &patch(&c, "q2", r#"[{"op": "add", "path": "/metadata/n", "value": 99999999999999999999}]"#).await,
        400,
        "Invalid request body",
        "JSON contains integer that is too large.",
    );
    // A JSON object is not a patch document: 400 (not upstream's 503).
    let r = patch(&c, "q2", r#"{"op": "add", "path": "/metadata/a", "value": 1}"#).await;
    assert_eq!(r.status, 400);
    assert_eq!(err(&r).1, "Invalid request body");
    // Nothing changed.
    let (_, meta) = sj(&c.get("/v2/queues/q2").await);
    assert_eq!(meta["description"], json!("second queue"));
}

#[tokio::test]
async fn patch_operation_errors() {
    let app = app().await;
    let c = Client::new(&app);
    c.put("/v2/queues/q2", None).await;
    let cases = [
        // #37
        (
            r#"[{"op": "move", "path": "/metadata/description", "value": "x"}]"#,
            "Invalid operation: `move`. It must be one of the following: add, remove, replace.",
        ),
        (
            r#"[{"path": "/metadata/a", "value": 1}]"#,
            "Unable to find `op` in JSON Schema change. It must be one of the following: add, remove, replace.",
        ),
        (r#"[{"op": "add", "value": 1}]"#, "Unable to find 'path' in JSON Schema change"),
        (
            r#"[{"op": "add", "path": "/metadata", "value": 1}]"#,
            "Invalid JSON pointer for this resource: '/metadata, e.g /metadata/key'",
        ),
        (
            r#"[{"op": "add", "path": "/metadata/a/b", "value": 1}]"#,
            "Invalid JSON pointer for this resource: '/metadata/a/b, e.g /metadata/key'",
        ),
        (
            r#"[{"op": "replace", "path": "/other/a", "value": 1}]"#,
            "The root of path must be metadata, e.g /metadata/key.",
        ),
        (r#"[{"op": "add", "path": "metadata/a", "value": 1}]"#, "Pointer `metadata/a` does not start with \"/\"."),
        (r#"[{"op": "add", "path": "/metadata//a", "value": 1}]"#, "Pointer `/metadata//a` contains adjacent \"/\"."),
        (r#"[{"op": "add", "path": "/metadata/a/", "value": 1}]"#, "Pointer `/metadata/a/` end with \"/\"."),
        (
            r#"[{"op": "add", "path": "/metadata/a~2", "value": 1}]"#,
            "Pointer `/metadata/a~2` contains \"~\" not part of a recognized escape sequence.",
        ),
        (r#"[{"op": "add", "path": "/metadata/a"}]"#, "Operation \"add\" requires a member named \"value\"."),
        (r#"[{"op": "replace", "path": "/metadata/a"}]"#, "Operation \"replace\" requires a member named \"value\"."),
        // A missing value is reported before a wrong root (Zaqar's order).
        (r#"[{"op": "add", "path": "/other/a"}]"#, "Operation \"add\" requires a member named \"value\"."),
        (r#"[{"op": "remove", "path": "/other/a"}]"#, "The root of path must be metadata, e.g /metadata/key."),
        (r#"["add"]"#, "Operations must be JSON objects."),
        (r#"[{"op": "add", "path": "/metadata/a", "value": 1}, 5]"#, "Operations must be JSON objects."),
    ];
    for (body, description) in cases {
        let r = patch(&c, "q2", body).await;
        assert_error(&r, 400, "Invalid request body", description);
    }
    // Operation errors are found before the queue lookup (a missing queue still gets the 400).
    let r = patch(&c, "nosuch", r#"[{"op": "move", "path": "/metadata/a"}]"#).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn patch_semantics() {
    let app = app().await;
    let c = Client::new(&app);
    c.put(
        "/v2/queues/q2",
        Some(r#"{"description": "second queue", "_default_message_ttl": 1800, "_max_messages_post_size": 262144}"#),
    )
    .await;
    // #35
    let r = patch(&c, "q2", r#"[{"op": "replace", "path": "/metadata/description", "value": "patched"}, {"op": "add", "path": "/metadata/extra", "value": 42}]"#).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        text(&r),
        r#"{"description": "patched", "_default_message_ttl": 1800, "_max_messages_post_size": 262144, "extra": 42, "_default_message_delay": 0, "_dead_letter_queue": null, "_dead_letter_queue_messages_ttl": null, "_max_claim_count": null, "_enable_encrypt_messages": false}"#
    );
    // Stored: a GET shows the same thing.
    assert_eq!(c.get("/v2/queues/q2").await.json_body(), r.json_body());

    // replace of a missing non-reserved key → 409; of a missing reserved key → allowed.
    let r = patch(&c, "q2", r#"[{"op": "replace", "path": "/metadata/nothere", "value": 1}]"#).await;
    assert_error(&r, 409, "Resource conflict", "Can't replace non-existent object nothere.");
    let r = patch(&c, "q2", r#"[{"op": "replace", "path": "/metadata/_max_claim_count", "value": 3}]"#).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json_body()["_max_claim_count"], json!(3));
    // remove of a missing non-reserved key → 409; of a missing reserved key → no-op.
    let r = patch(&c, "q2", r#"[{"op": "remove", "path": "/metadata/nothere"}]"#).await;
    assert_error(&r, 409, "Resource conflict", "Can't remove non-existent object nothere.");
    let r = patch(&c, "q2", r#"[{"op": "remove", "path": "/metadata/_dead_letter_queue"}]"#).await;
    assert_eq!(r.status, 200);
    // remove of an existing key; add overwrites; ops apply in order; path is case-insensitive; escapes decoded.
    let r = patch(
        &c,
        "q2",
        r#"[{"op": "remove", "path": "/metadata/extra"}, {"op": "add", "path": "/metadata/description", "value": {"x": [1]}},
            {"op": "add", "path": "/METADATA/a~1b~0c", "value": null}, {"op": "add", "path": "/metadata/tmp", "value": 1},
            {"op": "remove", "path": "/Metadata/tmp"}, {"op": "remove", "path": "/metadata/_default_message_ttl"}]"#,
    )
    .await;
    let (s, meta) = sj(&r);
    assert_eq!(s, 200, "{meta}");
    assert!(meta.get("extra").is_none());
    assert!(meta.get("tmp").is_none());
    assert_eq!(meta["description"], json!({"x": [1]}));
    assert_eq!(meta["a/b~c"], Value::Null);
    assert!(meta.as_object().unwrap().contains_key("a/b~c"));
    assert_eq!(meta["_default_message_ttl"], json!(3600), "removed reserved key reported with its default");
    assert_eq!(meta["_max_claim_count"], json!(3));
    // A conflict in a later operation applies nothing.
    let r = patch(
        &c,
        "q2",
        r#"[{"op": "add", "path": "/metadata/new", "value": 1}, {"op": "remove", "path": "/metadata/ghost"}]"#,
    )
    .await;
    assert_eq!(r.status, 409);
    assert!(c.get("/v2/queues/q2").await.json_body().get("new").is_none());
    // An empty list of operations is fine and returns the metadata.
    let r = patch(&c, "q2", "[]").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json_body()["description"], json!({"x": [1]}));
}

#[tokio::test]
async fn patch_validates_result_and_needs_queue() {
    let app = app().await;
    let c = Client::new(&app);
    // PATCH does not create queues.
    let r = patch(&c, "nosuch", r#"[{"op": "add", "path": "/metadata/a", "value": 1}]"#).await;
    assert_error(&r, 404, "Not found", &format!("Queue nosuch does not exist for project {}", c.project));
    let (_, list) = sj(&c.get("/v2/queues").await);
    assert_eq!(list["queues"], json!([]));
    // The patched metadata is validated like PUT, with the body title.
    c.put("/v2/queues/q", Some(r#"{"_default_message_ttl": 120}"#)).await;
    let r = patch(&c, "q", r#"[{"op": "replace", "path": "/metadata/_default_message_ttl", "value": 10}]"#).await;
    assert_error(
        &r,
        400,
        "Invalid request body",
        "_default_message_ttl can not exceed 1209600 seconds, and must be at least 60 seconds long.",
    );
    let r = patch(&c, "q", r#"[{"op": "add", "path": "/metadata/_enable_encrypt_messages", "value": "on"}]"#).await;
    assert_error(&r, 400, "Invalid request body", "_enable_encrypt_messages must be boolean.");
    let r = patch(&c, "q", r#"[{"op": "add", "path": "/metadata/_default_message_delay", "value": 901}]"#).await;
    assert_error(
        &r,
        400,
        "Invalid request body",
        "The TTL can not exceed 900 seconds, and must be at least 0 seconds long.",
    );
    // Unchanged after the failures.
    let (_, meta) = sj(&c.get("/v2/queues/q").await);
    assert_eq!(meta["_default_message_ttl"], json!(120));
    assert_eq!(meta["_default_message_delay"], json!(0));
    // After a queue is deleted PATCH is 404 again.
    assert_eq!(c.delete("/v2/queues/q").await.status, 204);
    assert_eq!(patch(&c, "q", "[]").await.status, 404);
}

// ---------------------------------------------------------------------------------------------
// Delete, stats, purge (docs/api.md#queues-delete, #queues-stats, #queues-purge)

#[tokio::test]
async fn delete_is_idempotent_and_removes_messages() {
    let app = app().await;
    let c = Client::new(&app);
    c.put("/v2/queues/q1", Some(r#"{"a": 1}"#)).await;
    c.post("/v2/queues/q1/messages", r#"{"messages": [{"body": 1}, {"body": 2}]}"#).await;
    let claim = c.post("/v2/queues/q1/claims?limit=1", "{}").await;
    let claim_href = claim.header_value("location").unwrap().to_string();
    // #115, #116
    for _ in 0..2 {
        let r = c.delete("/v2/queues/q1").await;
        assert_eq!(r.status, 204);
        assert!(r.body.is_empty());
    }
    assert_eq!(c.delete("/v2/queues/never-existed").await.status, 204);
    // Gone: not listed, defaults, no messages; a re-created queue starts empty.
    let (_, list) = sj(&c.get("/v2/queues").await);
    assert_eq!(list, json!({"queues": [], "links": []}));
    assert_eq!(c.get("/v2/queues/q1").await.json_body(), defaults());
    assert_eq!(c.put("/v2/queues/q1", None).await.status, 201);
    let (_, stats) = sj(&c.get("/v2/queues/q1/stats").await);
    assert_eq!(stats, json!({"messages": {"claimed": 0, "free": 0, "total": 0}}));
    let other = c.with_client_id(OTHER_CLIENT);
    let (_, msgs) = sj(&other.get("/v2/queues/q1/messages?echo=true").await);
    assert_eq!(msgs, json!({"messages": [], "links": []}));
    assert_eq!(c.post("/v2/queues/q1/claims", "{}").await.status, 204);
    // Claims went with the queue.
    assert_eq!(c.get(&claim_href).await.status, 404);
}

fn is_iso_z(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

#[tokio::test]
async fn stats() {
    let app = app().await;
    let c = Client::new(&app);
    // #38 and a queue that does not exist.
    c.put("/v2/queues/q1", None).await;
    for q in ["q1", "nosuch"] {
        let r = c.get(&format!("/v2/queues/{q}/stats")).await;
        assert_eq!(r.status, 200);
        assert_eq!(text(&r), r#"{"messages": {"claimed": 0, "free": 0, "total": 0}}"#);
    }
    // The manual clock runs on from the system clock: ages grow by the real time the requests take too
    // (whole seconds of it: under load a debug build can take over a second between post and stats).
    let started = std::time::Instant::now();
    let (_, posted) =
        sj(&c.post("/v2/queues/q1/messages", r#"{"messages": [{"body": 1}, {"body": 2}, {"body": 3}]}"#).await);
    app.store.clock.advance_secs(30);
    let (_, later) = sj(&c.post("/v2/queues/q1/messages", r#"{"messages": [{"body": 4}]}"#).await);
    let first = posted["resources"][0].as_str().unwrap().to_string();
    let last = later["resources"][0].as_str().unwrap().to_string();
    let (s, stats) = sj(&c.get("/v2/queues/q1/stats").await);
    let real_secs = started.elapsed().as_secs() as i64;
    assert_eq!(s, 200);
    let m = &stats["messages"];
    assert_eq!((m["total"].clone(), m["claimed"].clone(), m["free"].clone()), (json!(4), json!(0), json!(4)));
    for (which, href, age) in [("oldest", &first, 30), ("newest", &last, 0)] {
        let o = m[which].as_object().unwrap_or_else(|| panic!("{which} missing: {stats}"));
        let keys: Vec<&str> = o.keys().map(String::as_str).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(sorted, ["age", "created", "href"], "{which}: exactly href/age/created");
        assert_eq!(o["href"].as_str(), Some(href.as_str()));
        let got = o["age"].as_i64().unwrap_or_else(|| panic!("{which}: age {}", o["age"]));
        assert!((age..=age + real_secs).contains(&got), "{which}: age {got}, expected {age} (+{real_secs} s real)");
        assert!(is_iso_z(o["created"].as_str().unwrap()), "{}", o["created"]);
    }
    // Claimed vs free.
    let r = c.post("/v2/queues/q1/claims?limit=3", r#"{"ttl": 100, "grace": 60}"#).await;
    assert_eq!(r.status, 201);
    let (_, stats) = sj(&c.get("/v2/queues/q1/stats").await);
    let m = &stats["messages"];
    assert_eq!((m["total"].clone(), m["claimed"].clone(), m["free"].clone()), (json!(4), json!(3), json!(1)));
    // Claim expiry frees them without any write.
    app.store.clock.advance_secs(101);
    let (_, stats) = sj(&c.get("/v2/queues/q1/stats").await);
    assert_eq!(stats["messages"]["claimed"], json!(0));
    assert_eq!(stats["messages"]["free"], json!(4));
    // Deleted messages leave the stats; the oldest moves on.
    let id = first.rsplit('/').next().unwrap();
    assert_eq!(c.delete(&format!("/v2/queues/q1/messages/{id}")).await.status, 204);
    let (_, stats) = sj(&c.get("/v2/queues/q1/stats").await);
    assert_eq!(stats["messages"]["total"], json!(3));
    assert_ne!(stats["messages"]["oldest"]["href"].as_str(), Some(first.as_str()));
}

async fn put_subscription_item(app: &App, project: &str, queue: &str, sid: &str) {
    use zaqar::types::{ProjectId, QueueName};
    let p = ProjectId::parse(project).unwrap();
    let q = QueueName::parse(queue).unwrap();
    let mut item = zaqar::keys::subscription(&p, &q, sid);
    item.insert("subscriber".into(), zaqar::keys::s("http://127.0.0.1:1/hook"));
    app.store.client.put_item().table_name(&app.store.table).set_item(Some(item)).send().await.unwrap();
}

async fn subscription_item_exists(app: &App, project: &str, queue: &str, sid: &str) -> bool {
    use zaqar::types::{ProjectId, QueueName};
    let p = ProjectId::parse(project).unwrap();
    let q = QueueName::parse(queue).unwrap();
    let out = app
        .store
        .client
        .get_item()
        .table_name(&app.store.table)
        .set_key(Some(zaqar::keys::subscription(&p, &q, sid)))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    out.item().is_some()
}

async fn total(c: &Client<'_>, q: &str) -> Value {
    c.get(&format!("/v2/queues/{q}/stats")).await.json_body()["messages"]["total"].clone()
}

#[tokio::test]
async fn purge() {
    let app = app().await;
    let c = Client::new(&app);
    let p = c.project.clone();
    let post = || c.post("/v2/queues/q1/messages", r#"{"messages": [{"body": 1}, {"body": 2}]}"#);
    post().await;
    put_subscription_item(&app, &p, "q1", "sub1").await;

    // #108: messages only; subscriptions stay; the queue and its metadata stay.
    let r = c.post("/v2/queues/q1/purge", r#"{"resource_types": ["messages"]}"#).await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    // #110
    assert_eq!(text(&c.get("/v2/queues/q1/stats").await), r#"{"messages": {"claimed": 0, "free": 0, "total": 0}}"#);
    assert!(subscription_item_exists(&app, &p, "q1", "sub1").await);
    assert_eq!(names(&c, "").await.0, ["q1"]);

    // Subscriptions only; messages stay.
    post().await;
    let r = c.post("/v2/queues/q1/purge", r#"{"resource_types": ["subscriptions"]}"#).await;
    assert_eq!(r.status, 204);
    assert!(!subscription_item_exists(&app, &p, "q1", "sub1").await);
    assert_eq!(total(&c, "q1").await, json!(2));

    // Both, by default (no body) and explicitly; claimed messages go too.
    put_subscription_item(&app, &p, "q1", "sub2").await;
    assert_eq!(c.post("/v2/queues/q1/claims?limit=1", "{}").await.status, 201);
    let r = c.send(c.request(Method::POST, "/v2/queues/q1/purge")).await;
    assert_eq!(r.status, 204);
    assert_eq!(total(&c, "q1").await, json!(0));
    assert!(!subscription_item_exists(&app, &p, "q1", "sub2").await);
    post().await;
    put_subscription_item(&app, &p, "q1", "sub3").await;
    let r = c.post("/v2/queues/q1/purge", r#"{"resource_types": ["messages", "subscriptions"]}"#).await;
    assert_eq!(r.status, 204);
    assert_eq!(total(&c, "q1").await, json!(0));
    assert!(!subscription_item_exists(&app, &p, "q1", "sub3").await);
    // The queue still exists and accepts messages again.
    assert_eq!(c.put("/v2/queues/q1", None).await.status, 204);
    post().await;
    assert_eq!(total(&c, "q1").await, json!(2));

    // A queue that does not exist: 204.
    assert_eq!(c.post("/v2/queues/nosuch/purge", r#"{"resource_types": ["messages"]}"#).await.status, 204);

    // #109 and other errors.
    let subset = "Resource types must be a sub set of {'messages', 'subscriptions'}.";
    for body in [
        r#"{"resource_types": ["bogus"]}"#,
        r#"{"resource_types": ["messages", "claims"]}"#,
        r#"{"resource_types": "messages"}"#,
    ] {
        assert_error(&c.post("/v2/queues/q1/purge", body).await, 400, "Invalid API request", subset);
    }
    for body in ["{}", r#"{"types": ["messages"]}"#] {
        assert_error(
            &c.post("/v2/queues/q1/purge", body).await,
            400,
            "Invalid API request",
            "Post body must contain key \"resource_types\".",
        );
    }
    assert_error(
        &c.post("/v2/queues/q1/purge", "{").await,
        400,
        "Invalid request body",
        "Request body could not be parsed.",
    );
    // Nothing was purged by the failures.
    assert_eq!(total(&c, "q1").await, json!(2));
}

// ---------------------------------------------------------------------------------------------
// Share and pre-signed requests (docs/api.md#presigned)

fn now_s(app: &App) -> i64 {
    app.store.now_ms() / 1000
}

#[tokio::test]
async fn share_shape() {
    let app = app().await;
    let c = Client::new(&app);
    // #107 (the queue need not exist).
    let r = c.post("/v2/queues/q1/share", r#"{"methods": ["POST", "GET"], "paths": ["messages"]}"#).await;
    let (s, body) = sj(&r);
    assert_eq!(s, 200, "{body}");
    assert_eq!(r.header_value("content-type"), Some("application/json"));
    let keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["paths", "methods", "project", "expires", "signature"]);
    assert_eq!(body["paths"], json!(["/v2/queues/q1/messages"]));
    assert_eq!(body["methods"], json!(["GET", "POST"]));
    assert_eq!(body["project"], json!(c.project));
    // Default expiry: one day, UTC, second precision, no zone suffix.
    let expires = body["expires"].as_str().unwrap();
    assert_eq!(expires, signing::format_expires(now_s(&app) + 86400).as_str());
    assert!(!expires.ends_with('Z'));
    let signature = body["signature"].as_str().unwrap();
    assert_eq!(signature.len(), 64);
    let scope = SignedScope {
        paths: vec!["/v2/queues/q1/messages".into()],
        methods: vec!["GET".into(), "POST".into()],
        project: c.project.clone(),
        expires: expires.into(),
    };
    assert_eq!(signature, scope.sign("test"));

    // Sorted paths and methods; defaults (`{}`: messages + GET).
    let (_, body) = sj(&c
        .post(
            "/v2/queues/q1/share",
            r#"{"paths": ["subscriptions", "messages", "claims"], "methods": ["PATCH", "DELETE", "GET"]}"#,
        )
        .await);
    assert_eq!(body["paths"], json!(["/v2/queues/q1/claims", "/v2/queues/q1/messages", "/v2/queues/q1/subscriptions"]));
    assert_eq!(body["methods"], json!(["DELETE", "GET", "PATCH"]));
    let (s, body) = sj(&c.post("/v2/queues/q1/share", "{}").await);
    assert_eq!(s, 200);
    assert_eq!(body["paths"], json!(["/v2/queues/q1/messages"]));
    assert_eq!(body["methods"], json!(["GET"]));
    // `"expires": null` is the default expiry.
    let (s, body) = sj(&c.post("/v2/queues/q1/share", r#"{"expires": null}"#).await);
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["expires"].as_str(), Some(signing::format_expires(now_s(&app) + 86400).as_str()));
    // Empty lists mean the defaults too (`paths or default`, `methods or ['GET']`).
    let (s, body) = sj(&c.post("/v2/queues/q1/share", r#"{"paths": [], "methods": []}"#).await);
    assert_eq!(s, 200);
    assert_eq!(body["paths"], json!(["/v2/queues/q1/messages"]));
    assert_eq!(body["methods"], json!(["GET"]));
}

#[tokio::test]
async fn share_expires_formats_and_errors() {
    let app = app().await;
    let c = Client::new(&app);
    let at = now_s(&app) + 3600;
    let plain = signing::format_expires(at);
    // Accepted spellings, all normalised to UTC without a zone.
    for spelling in [
        plain.clone(),
        format!("{plain}Z"),
        format!("{}+02:00", signing::format_expires(at + 7200)),
        format!("{}-01:30", signing::format_expires(at - 5400)),
    ] {
        let body = json!({"expires": spelling}).to_string();
        let (s, out) = sj(&c.post("/v2/queues/q1/share", &body).await);
        assert_eq!(s, 200, "{spelling}: {out}");
        assert_eq!(out["expires"], json!(plain), "{spelling}");
    }
    let past = signing::format_expires(now_s(&app) - 10);
    let cases: Vec<(String, &str)> = vec![
        (json!({"expires": past}).to_string(), "`expires` is lower than the current time"),
        (
            json!({"expires": "1700000000"}).to_string(),
            "`expires` should be date format, for example 2016-01-01T00:00:00, not integer value: 1700000000",
        ),
        (json!({"methods": "GET"}).to_string(), "`methods` should be a list"),
        (json!({"paths": ["messages", "bogus"]}).to_string(), "Invalid paths: {'bogus'}"),
        (json!({"foo": 1}).to_string(), "Unknown keys: {'foo'}"),
    ];
    for (body, description) in cases {
        assert_error(&c.post("/v2/queues/q1/share", &body).await, 400, "Invalid API request", description);
    }
    for body in [json!({"expires": "not a date"}), json!({"expires": 12}), json!({"paths": "messages"})] {
        let (s, title, _) = err(&c.post("/v2/queues/q1/share", &body.to_string()).await);
        assert_eq!((s, title.as_str()), (400, "Invalid API request"), "{body}");
    }
    // Bounded expiry (our addition): beyond max_signed_url_seconds → 400; at the bound → 200.
    let too_far = signing::format_expires(now_s(&app) + 7 * 24 * 3600 + 120);
    let (s, title, description) = err(&c.post("/v2/queues/q1/share", &json!({"expires": too_far}).to_string()).await);
    assert_eq!((s, title.as_str()), (400, "Invalid API request"));
    assert!(description.contains("604800"), "{description}");
    let near = signing::format_expires(now_s(&app) + 7 * 24 * 3600 - 120);
    assert_eq!(c.post("/v2/queues/q1/share", &json!({"expires": near}).to_string()).await.status, 200);
    // Body errors.
    let r = c.send(c.request(Method::POST, "/v2/queues/q1/share")).await;
    assert_error(&r, 400, "Invalid request body", "Request body could not be parsed.");
    assert_error(
        &c.post("/v2/queues/q1/share", "[]").await,
        400,
        "Invalid request body",
        "Document type not supported.",
    );
}

#[tokio::test]
async fn share_without_key() {
    let app = app_with(Config { secret_key: None, ..Config::for_tests("zaqar-tests") }).await;
    let c = Client::new(&app);
    let r = c.post("/v2/queues/q1/share", "{}").await;
    assert_error(&r, 400, "Invalid API request", "The `key` can't be None");
    // Key problems are reported after the document's own errors, as upstream does.
    let r = c.post("/v2/queues/q1/share", r#"{"foo": 1}"#).await;
    assert_eq!(err(&r).2, "Unknown keys: {'foo'}");
    // Every pre-signed request is refused.
    let scope = SignedScope {
        paths: vec!["/v2/queues/q1/messages".into()],
        methods: vec!["GET".into()],
        project: c.project.clone(),
        expires: signing::format_expires(now_s(&app) + 600),
    };
    let r = signed(&c, Method::GET, "/v2/queues/q1/messages", &scope, &scope.sign("test")).await;
    assert_no_route(&r);
}

async fn signed(c: &Client<'_>, method: Method, path: &str, scope: &SignedScope, signature: &str) -> ApiResponse {
    let is_post = method == Method::POST;
    let req = ApiRequest::new(method, path)
        .header("Client-ID", OTHER_CLIENT)
        .header("X-Project-ID", &scope.project)
        .header("URL-Signature", signature)
        .header("URL-Expires", &scope.expires)
        .header("URL-Methods", &scope.methods.join(","))
        .header("URL-Paths", &scope.paths.join(","))
        .header("Content-Type", "application/json");
    let req = if is_post { req.body(br#"{"messages": [{"body": "signed"}]}"#.to_vec()) } else { req };
    call(c.app, req).await
}

#[tokio::test]
async fn presigned_requests() {
    let app = app().await;
    let c = Client::new(&app);
    c.post("/v2/queues/q1/messages", r#"{"messages": [{"body": "hello"}]}"#).await;
    let (_, share) = sj(&c.post("/v2/queues/q1/share", r#"{"methods": ["GET", "POST"], "paths": ["messages"]}"#).await);
    let scope = SignedScope {
        paths: share["paths"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect(),
        methods: share["methods"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect(),
        project: share["project"].as_str().unwrap().to_string(),
        expires: share["expires"].as_str().unwrap().to_string(),
    };
    let sig = share["signature"].as_str().unwrap().to_string();

    // Valid: GET and POST work, sub-resources of a signed path are covered.
    let r = signed(&c, Method::GET, "/v2/queues/q1/messages", &scope, &sig).await;
    let (s, body) = sj(&r);
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["messages"][0]["body"], json!("hello"));
    let r = signed(&c, Method::POST, "/v2/queues/q1/messages", &scope, &sig).await;
    assert_eq!(r.status, 201);
    let id = body["messages"][0]["id"].as_str().unwrap();
    assert_eq!(signed(&c, Method::GET, &format!("/v2/queues/q1/messages/{id}"), &scope, &sig).await.status, 200);
    // Methods and paths given in another order still verify (they are sorted).
    let mut reordered = scope.clone();
    reordered.methods.reverse();
    assert_eq!(signed(&c, Method::GET, "/v2/queues/q1/messages", &reordered, &sig).await.status, 200);

    // Wrong method, path, project; tampered; empty → bare 404.
    assert_no_route(&signed(&c, Method::DELETE, &format!("/v2/queues/q1/messages/{id}"), &scope, &sig).await);
    assert_no_route(&signed(&c, Method::GET, "/v2/queues/q2/messages", &scope, &sig).await);
    assert_no_route(&signed(&c, Method::GET, "/v2/queues/q1/stats", &scope, &sig).await);
    let mut other_project = scope.clone();
    other_project.project = project();
    assert_no_route(&signed(&c, Method::GET, "/v2/queues/q1/messages", &other_project, &sig).await);
    let mut more_methods = scope.clone();
    more_methods.methods.push("DELETE".into());
    assert_no_route(&signed(&c, Method::DELETE, &format!("/v2/queues/q1/messages/{id}"), &more_methods, &sig).await);
    let mut later = scope.clone();
    later.expires = signing::format_expires(now_s(&app) + 5000);
    assert_no_route(&signed(&c, Method::GET, "/v2/queues/q1/messages", &later, &sig).await);
    let mut tampered = sig.clone();
    tampered.replace_range(0..1, if sig.starts_with('0') { "1" } else { "0" });
    assert_no_route(&signed(&c, Method::GET, "/v2/queues/q1/messages", &scope, &tampered).await);
    assert_no_route(&signed(&c, Method::GET, "/v2/queues/q1/messages", &scope, &sig.to_uppercase()).await);
    assert_no_route(&signed(&c, Method::GET, "/v2/queues/q1/messages", &scope, "").await);
    // Signed with another key.
    assert_no_route(&signed(&c, Method::GET, "/v2/queues/q1/messages", &scope, &scope.sign("other")).await);
    // A correctly signed URL whose expiry is beyond our bound is refused too.
    let mut far = scope.clone();
    far.expires = signing::format_expires(now_s(&app) + 30 * 24 * 3600);
    assert_no_route(&signed(&c, Method::GET, "/v2/queues/q1/messages", &far, &far.sign("test")).await);
    // Still needs Client-ID.
    let req = ApiRequest::new(Method::GET, "/v2/queues/q1/messages")
        .header("X-Project-ID", &scope.project)
        .header("URL-Signature", &sig)
        .header("URL-Expires", &scope.expires)
        .header("URL-Methods", &scope.methods.join(","))
        .header("URL-Paths", &scope.paths.join(","));
    assert_eq!(err(&call(&app, req).await).1, "Missing header value");
    // Expired: move the clock past `expires`.
    app.store.clock.advance_secs(86400 + 5);
    assert_no_route(&signed(&c, Method::GET, "/v2/queues/q1/messages", &scope, &sig).await);
}

// ---------------------------------------------------------------------------------------------
// Ping and storage failures (docs/api.md#health-ping, #errors): 503 with Zaqar's description, never a hang or a 500

#[tokio::test]
async fn storage_failures_are_503() {
    let sdk = zaqar::app::sdk_loader()
        .endpoint_url("http://127.0.0.1:1")
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("local", "local", None, None, "tests"))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .load()
        .await;
    let app =
        App::new(Config::for_tests("zaqar-tests"), aws_sdk_dynamodb::Client::new(&sdk), zaqar::clock::Clock::manual());
    let c = Client::new(&app);
    // GET ping reports the storage; HEAD ping does not touch it.
    let r = c.get("/v2/ping").await;
    assert_eq!(r.status, 503);
    assert_eq!(c.send(c.request(Method::HEAD, "/v2/ping")).await.status, 204);
    for (method, path, body) in [
        (Method::GET, "/v2/queues", None),
        (Method::PUT, "/v2/queues/q1", None),
        (Method::GET, "/v2/queues/q1/stats", None),
        (Method::POST, "/v2/queues/q1/messages", Some(r#"{"messages": [{"body": 1}]}"#)),
        (Method::POST, "/v2/queues/q1/claims", Some("{}")),
    ] {
        let mut req = c.request(method.clone(), path);
        if let Some(b) = body {
            req = req.body(b.as_bytes().to_vec());
        }
        let r = c.send(req).await;
        let (s, title, description) = err(&r);
        assert_eq!((s, title.as_str()), (503, "Service temporarily unavailable"), "{method} {path}");
        assert!(description.ends_with(" Please try again in a few seconds."), "{description}");
    }
    // Validation still answers without storage.
    assert_eq!(c.get("/v2/queues?limit=0").await.status, 400);
}

/// A metadata update is conditioned on the metadata it was derived from: an update that read before
/// another one landed is refused (`Changed`) instead of silently undoing it, and concurrent PATCHes
/// each keep their change.
#[tokio::test]
async fn concurrent_metadata_updates_lose_nothing() {
    let app = app().await;
    let c = Client::new(&app);
    assert_eq!(c.put("/v2/queues/cm", Some(r#"{"a": 0}"#)).await.status, 201);
    let (project, queue) =
        (zaqar::types::ProjectId::parse(&c.project).unwrap(), zaqar::types::QueueName::parse("cm").unwrap());
    let stale = app.store.queue_record_for_update(&project, &queue).await.unwrap().unwrap();
    let patch = r#"[{"op": "add", "path": "/metadata/b", "value": 1}]"#;
    assert_eq!(c.patch("/v2/queues/cm", "application/openstack-messaging-v2.0-json-patch", patch).await.status, 200);
    let mut from_stale = stale.metadata.clone();
    from_stale.insert("c".into(), json!(2));
    let outcome = app.store.set_queue_metadata(&project, &queue, &stale, &from_stale).await.unwrap();
    assert_eq!(outcome, zaqar::store::queues::MetadataUpdate::Changed);

    // Twenty PATCHes at once, each adding its own key: every key is there afterwards.
    let patches = (0..20).map(|i| {
        let c = &c;
        async move {
            let body = format!(r#"[{{"op": "add", "path": "/metadata/k{i}", "value": {i}}}]"#);
            c.patch("/v2/queues/cm", "application/openstack-messaging-v2.0-json-patch", &body).await.status
        }
    });
    let statuses = futures::future::join_all(patches).await;
    let (_, doc) = sj(&c.get("/v2/queues/cm").await);
    let kept = (0..20).filter(|i| doc[format!("k{i}")] == json!(i)).count();
    let ok = statuses.iter().filter(|s| s.as_u16() == 200).count();
    println!("{ok} of 20 concurrent PATCHes answered 200");
    assert_eq!(kept, ok, "every PATCH answered 200 kept its key: {statuses:?} {doc}");
    assert!(statuses.iter().all(|s| matches!(s.as_u16(), 200 | 503)), "{statuses:?}");
    assert_eq!((doc["a"].clone(), doc["b"].clone()), (json!(0), json!(1)));
}
