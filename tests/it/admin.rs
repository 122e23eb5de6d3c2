//! Pools and flavors (docs/api.md#pools, policy in #transport-auth) against DynamoDB Local.
//!
//! Pools are global, so every test names its pools (and URIs) with a fresh prefix; flavors are per
//! project and every `Client` has its own project.

use harness::*;
use http::Method;
use serde_json::{json, Value};
use zaqar::config::Config;
use zaqar::{ApiRequest, ApiResponse};

const NOT_AUTHORIZED: (&str, &str) = ("Not authorized", "You are not authorized to complete this action.");
const BAD_BODY: &str = "Invalid request body";
const ALL_CAPS: [&str; 5] = ["FIFO", "CLAIMS", "DURABILITY", "AOD", "HIGH_THROUGHPUT"];

fn prefix() -> String {
    format!("p-{}", uuid::Uuid::new_v4().simple())
}

fn admin_req(c: &Client<'_>, method: Method, path: &str, body: Option<&str>) -> ApiRequest {
    let mut r = c.request(method, path).header("X-Roles", "admin");
    if let Some(b) = body {
        r = r.header("Content-Type", "application/json").body(b.as_bytes().to_vec());
    }
    r
}

async fn admin(c: &Client<'_>, method: Method, path: &str, body: Option<&str>) -> ApiResponse {
    c.send(admin_req(c, method, path, body)).await
}

/// Registers a pool with a unique URI and returns its name.
async fn make_pool(c: &Client<'_>, name: &str) -> String {
    let body = json!({"uri": format!("dynamodb://{name}"), "weight": 10}).to_string();
    let r = admin(c, Method::PUT, &format!("/v2/pools/{name}"), Some(&body)).await;
    assert_eq!(r.status, 201, "{:?}", r.json_body());
    name.to_string()
}

async fn pool_flavor(c: &Client<'_>, name: &str) -> Value {
    let (s, body) = sj(&admin(c, Method::GET, &format!("/v2/pools/{name}"), None).await);
    assert_eq!(s, 200);
    body["flavor"].clone()
}

fn e(status: u16, title: &str, description: &str) -> (u16, String, String) {
    (status, title.to_string(), description.to_string())
}

#[tokio::test]
async fn routes_are_absent_without_pooling_or_admin_mode() {
    let mut no_pooling = Config::for_tests("zaqar-tests");
    no_pooling.pooling = false;
    let mut no_admin = Config::for_tests("zaqar-tests");
    no_admin.admin_mode = false;
    for config in [no_pooling, no_admin] {
        let app = app_with(config).await;
        let c = Client::new(&app);
        for path in ["/v2/pools", "/v2/pools/p1", "/v2/flavors", "/v2/flavors/f1"] {
            let (s, body) = sj(&admin(&c, Method::GET, path, None).await);
            assert_eq!((s, body), (404, json!({"title": "404 Not Found"})), "{path}");
        }
        let r = admin(&c, Method::PUT, "/v2/pools/p1", Some(r#"{"uri": "dynamodb://x", "weight": 1}"#)).await;
        assert_eq!(r.status, 404);
    }
}

#[tokio::test]
async fn pool_operations_and_flavor_writes_need_admin() {
    let app = app().await;
    let c = Client::new(&app);
    let p = make_pool(&c, &prefix()).await;
    let forbidden = |r: &ApiResponse| assert_eq!(err(r), e(403, NOT_AUTHORIZED.0, NOT_AUTHORIZED.1));
    let pool_body = r#"{"uri": "dynamodb://x", "weight": 1}"#;
    forbidden(&c.get("/v2/pools").await);
    forbidden(&c.get(&format!("/v2/pools/{p}")).await);
    forbidden(&c.put(&format!("/v2/pools/{p}"), Some(pool_body)).await);
    forbidden(&c.patch(&format!("/v2/pools/{p}"), "application/json", r#"{"weight": 2}"#).await);
    forbidden(&c.delete(&format!("/v2/pools/{p}")).await);
    // Policy runs before the body is read.
    forbidden(&c.put(&format!("/v2/pools/{p}"), Some("not json")).await);
    let member = c.request(Method::GET, "/v2/pools").header("X-Roles", "member, reader");
    forbidden(&c.send(member).await);
    let listed = c.request(Method::GET, "/v2/pools?limit=1").header("X-Roles", "member,admin");
    assert_eq!(c.send(listed).await.status, 200);

    let flavor_body = format!(r#"{{"pool_list": ["{p}"]}}"#);
    forbidden(&c.put("/v2/flavors/f1", Some(&flavor_body)).await);
    forbidden(&c.patch("/v2/flavors/f1", "application/json", &flavor_body).await);
    forbidden(&c.delete("/v2/flavors/f1").await);
    // Flavor reads are open.
    assert_eq!(err(&c.get("/v2/flavors/f1").await), e(404, "Not found", "Flavor f1 does not exist"));
    assert_eq!(sj(&c.get("/v2/flavors").await), (200, json!({"links": [], "flavors": []})));
    assert_eq!(admin(&c, Method::PUT, "/v2/flavors/f1", Some(&flavor_body)).await.status, 201);
    let (s, body) = sj(&c.get("/v2/flavors/f1").await);
    assert_eq!((s, body["pool_list"].clone()), (200, json!([p])));
    assert_eq!(admin(&c, Method::DELETE, "/v2/flavors/f1", None).await.status, 204);
    assert_eq!(admin(&c, Method::DELETE, &format!("/v2/pools/{p}"), None).await.status, 204);
}

#[tokio::test]
async fn pool_create_get_overwrite_delete() {
    let app = app().await;
    let c = Client::new(&app);
    let p = prefix();
    let path = format!("/v2/pools/{p}");
    let body = json!({"uri": format!("dynamodb://{p}"), "weight": 100, "options": {"max_retry_sleep": 1}}).to_string();
    let r = admin(&c, Method::PUT, &path, Some(&body)).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header_value("location"), Some(path.as_str()));
    assert!(r.body.is_empty());

    let (s, got) = sj(&admin(&c, Method::GET, &path, None).await);
    assert_eq!(s, 200);
    assert_eq!(got, json!({"name": p, "flavor": null, "uri": format!("dynamodb://{p}"), "weight": 100, "href": path}));
    let (_, got) = sj(&admin(&c, Method::GET, &format!("{path}?detailed=true"), None).await);
    assert_eq!(got["options"], json!({"max_retry_sleep": 1}));
    let r = admin(&c, Method::GET, &format!("{path}?detailed=maybe"), None).await;
    assert_eq!(
        err(&r),
        e(400, "Invalid parameter", "The \"detailed\" parameter is invalid. The value must be a boolean.")
    );

    // PUT on an existing name overwrites every field (same URI is not a conflict with itself).
    let body = json!({"uri": format!("mongodb://{p}:27017"), "weight": 0, "flavor": "gold"}).to_string();
    assert_eq!(admin(&c, Method::PUT, &path, Some(&body)).await.status, 201);
    let (_, got) = sj(&admin(&c, Method::GET, &format!("{path}?detailed=true"), None).await);
    assert_eq!(got["weight"], json!(0));
    assert_eq!(got["uri"], json!(format!("mongodb://{p}:27017")));
    assert_eq!(got["flavor"], json!("gold"));
    assert_eq!(got["options"], json!({}));
    let body = json!({"uri": format!("redis://{p}:6379"), "weight": 4294967295u64, "flavor": ""}).to_string();
    assert_eq!(admin(&c, Method::PUT, &path, Some(&body)).await.status, 201);
    assert_eq!(pool_flavor(&c, &p).await, Value::Null);

    assert_eq!(admin(&c, Method::DELETE, &path, None).await.status, 204);
    assert_eq!(
        err(&admin(&c, Method::GET, &path, None).await),
        e(404, "Not found", &format!("Pool {p} does not exist"))
    );
    assert_eq!(admin(&c, Method::DELETE, &path, None).await.status, 204);
    assert_eq!(admin(&c, Method::DELETE, "/v2/pools/never-existed", None).await.status, 204);
    let long = "x".repeat(300);
    assert_eq!(err(&admin(&c, Method::GET, &format!("/v2/pools/{long}"), None).await).0, 404);
    assert_eq!(admin(&c, Method::DELETE, &format!("/v2/pools/{long}"), None).await.status, 204);

    // Odd names work and their Location is URI-encoded.
    let odd = format!("{p} é");
    let body = json!({"uri": format!("dynamodb://{p}-odd"), "weight": 1}).to_string();
    let r = admin(&c, Method::PUT, &format!("/v2/pools/{p}%20%C3%A9"), Some(&body)).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header_value("location"), Some(format!("/v2/pools/{p}%20%C3%A9").as_str()));
    let (_, got) = sj(&admin(&c, Method::GET, &format!("/v2/pools/{p}%20%C3%A9"), None).await);
    assert_eq!(got["name"], json!(odd));
    assert_eq!(admin(&c, Method::DELETE, &format!("/v2/pools/{p}%20%C3%A9"), None).await.status, 204);
}

#[tokio::test]
async fn pool_put_validation() {
    let app = app().await;
    let c = Client::new(&app);
    let p = prefix();
    let path = format!("/v2/pools/{p}");
    let long = "a".repeat(256);
    let cases: Vec<(Option<String>, String)> = vec![
        (None, "JSON could not be parsed.".into()),
        (Some("{".into()), "JSON could not be parsed.".into()),
        (Some("\"text\"".into()), "JSON could not be parsed.".into()),
        (Some(r#"{"uri": "dynamodb://x", "weight": 99999999999999999999}"#.into()), "JSON could not be parsed.".into()),
        (Some("[1]".into()), "[1] is not of type 'object'".into()),
        (Some("{}".into()), "'uri' is a required property".into()),
        (Some(r#"{"uri": "dynamodb://x"}"#.into()), "'weight' is a required property".into()),
        (Some(r#"{"weight": 1}"#.into()), "'uri' is a required property".into()),
        (Some(r#"{"uri": "dynamodb://x", "weight": -1}"#.into()), "-1 is less than the minimum of 0".into()),
        (
            Some(r#"{"uri": "dynamodb://x", "weight": 4294967296}"#.into()),
            "4294967296 is greater than the maximum of 4294967295".into(),
        ),
        (Some(r#"{"uri": "dynamodb://x", "weight": 1.5}"#.into()), "1.5 is not of type 'integer'".into()),
        (Some(r#"{"uri": "dynamodb://x", "weight": 1.0}"#.into()), "1.0 is not of type 'integer'".into()),
        (Some(r#"{"uri": "dynamodb://x", "weight": true}"#.into()), "True is not of type 'integer'".into()),
        (Some(r#"{"uri": "dynamodb://x", "weight": "1"}"#.into()), "'1' is not of type 'integer'".into()),
        (Some(r#"{"uri": 1, "weight": 1}"#.into()), "1 is not of type 'string'".into()),
        (Some(r#"{"uri": null, "weight": 1}"#.into()), "None is not of type 'string'".into()),
        // Property errors win over missing properties, the weight rule comes first.
        (Some(r#"{"uri": 1}"#.into()), "1 is not of type 'string'".into()),
        (Some(r#"{"uri": 1, "weight": "a"}"#.into()), "'a' is not of type 'integer'".into()),
        (Some(format!(r#"{{"uri": "{long}", "weight": 1}}"#)), format!("'{long}' is too long")),
        (
            Some(format!(r#"{{"uri": "dynamodb://x", "weight": 1, "flavor": "{long}"}}"#)),
            format!("'{long}' is too long"),
        ),
        (Some(r#"{"uri": "dynamodb://x", "weight": 1, "flavor": 5}"#.into()), "5 is not of type 'string'".into()),
        (Some(r#"{"uri": "dynamodb://x", "weight": 1, "options": []}"#.into()), "[] is not of type 'object'".into()),
        (
            Some(r#"{"uri": "dynamodb://x", "weight": 1, "x": 1}"#.into()),
            "Additional properties are not allowed ('x' was unexpected)".into(),
        ),
        (
            Some(r#"{"y": 2, "uri": "dynamodb://x", "weight": 1, "x": 1}"#.into()),
            "Additional properties are not allowed ('x', 'y' were unexpected)".into(),
        ),
        (Some(r#"{"uri": "http://example.com", "weight": 1}"#.into()), "cannot connect to http://example.com".into()),
        (Some(r#"{"uri": "dynamodb://", "weight": 1}"#.into()), "cannot connect to dynamodb://".into()),
        (Some(r#"{"uri": "not a uri", "weight": 1}"#.into()), "cannot connect to not a uri".into()),
        (Some(r#"{"uri": "", "weight": 1}"#.into()), "cannot connect to ".into()),
    ];
    for (body, description) in cases {
        let r = admin(&c, Method::PUT, &path, body.as_deref()).await;
        assert_eq!(err(&r), e(400, BAD_BODY, &description), "body {body:?}");
    }
    let big = json!({"uri": format!("dynamodb://{p}"), "weight": 1, "options": {"k": "v".repeat(70_000)}}).to_string();
    let r = admin(&c, Method::PUT, &path, Some(&big)).await;
    assert_eq!(err(&r), e(400, BAD_BODY, "Pool options are too large. Max size: 65536"));
    let r = admin(
        &c,
        Method::PUT,
        &format!("/v2/pools/{}", "n".repeat(256)),
        Some(r#"{"uri": "dynamodb://x", "weight": 1}"#),
    )
    .await;
    assert_eq!(err(&r), e(400, "Invalid API request", "Pool names may be at most 255 characters long."));
    // Nothing was stored along the way.
    assert_eq!(admin(&c, Method::GET, &path, None).await.status, 404);
}

#[tokio::test]
async fn pool_uri_must_be_unique() {
    let app = app().await;
    let c = Client::new(&app);
    let p = prefix();
    let (a, b) = (format!("{p}-a"), format!("{p}-b"));
    let uri = format!("dynamodb://{p}");
    let body = json!({"uri": uri, "weight": 1}).to_string();
    assert_eq!(admin(&c, Method::PUT, &format!("/v2/pools/{a}"), Some(&body)).await.status, 201);
    let conflict = e(409, "Resource conflict", "The database URI is in use by another pool.");
    assert_eq!(err(&admin(&c, Method::PUT, &format!("/v2/pools/{b}"), Some(&body)).await), conflict);
    assert_eq!(admin(&c, Method::PUT, &format!("/v2/pools/{a}"), Some(&body)).await.status, 201);
    make_pool(&c, &b).await;
    let patch = json!({"uri": uri}).to_string();
    assert_eq!(err(&admin(&c, Method::PATCH, &format!("/v2/pools/{b}"), Some(&patch)).await), conflict);
    let r = admin(&c, Method::PATCH, &format!("/v2/pools/{p}-none"), Some(&patch)).await;
    assert_eq!(err(&r), e(404, "Not found", &format!("Pool {p}-none does not exist")));
    // Once freed, the URI can be reused.
    assert_eq!(admin(&c, Method::DELETE, &format!("/v2/pools/{a}"), None).await.status, 204);
    assert_eq!(admin(&c, Method::PATCH, &format!("/v2/pools/{b}"), Some(&patch)).await.status, 200);
    assert_eq!(admin(&c, Method::DELETE, &format!("/v2/pools/{b}"), None).await.status, 204);
}

#[tokio::test]
async fn pool_patch() {
    let app = app().await;
    let c = Client::new(&app);
    let p = make_pool(&c, &prefix()).await;
    let path = format!("/v2/pools/{p}");
    let one_of = "One of `uri`, `weight`, `flavor`, or `options` needs to be specified";
    let cases: Vec<(Option<&str>, &str)> = vec![
        (None, "JSON could not be parsed."),
        (Some("{}"), one_of),
        (Some(r#"{"name": "x"}"#), one_of),
        (Some("[]"), one_of),
        (Some(r#"["uri"]"#), "['uri'] is not of type 'object'"),
        (Some(r#"{"weight": -1}"#), "-1 is less than the minimum of 0"),
        (Some(r#"{"weight": "1", "uri": 2}"#), "'1' is not of type 'integer'"),
        (Some(r#"{"uri": 2}"#), "2 is not of type 'string'"),
        (Some(r#"{"flavor": null}"#), "None is not of type 'string'"),
        (Some(r#"{"options": "x"}"#), "'x' is not of type 'object'"),
        (Some(r#"{"uri": "ftp://host"}"#), "cannot connect to ftp://host"),
    ];
    for (body, description) in cases {
        let r = admin(&c, Method::PATCH, &path, body).await;
        assert_eq!(err(&r), e(400, BAD_BODY, description), "body {body:?}");
    }
    let (s, got) = sj(&admin(&c, Method::PATCH, &path, Some(r#"{"weight": 7, "extra": true}"#)).await);
    assert_eq!(s, 200);
    assert_eq!(got, json!({"name": p, "flavor": null, "uri": format!("dynamodb://{p}"), "weight": 7, "href": path}));
    let (_, got) = sj(&admin(&c, Method::PATCH, &path, Some(r#"{"flavor": "gold", "options": {"a": 1}}"#)).await);
    assert_eq!(
        (got["flavor"].clone(), got["weight"].clone(), got.get("options").is_none()),
        (json!("gold"), json!(7), true)
    );
    let (_, got) = sj(&admin(&c, Method::GET, &format!("{path}?detailed=true"), None).await);
    assert_eq!(got["options"], json!({"a": 1}));
    let uri = format!("redis://{p}");
    let (_, got) = sj(&admin(&c, Method::PATCH, &path, Some(&json!({"uri": uri, "flavor": ""}).to_string())).await);
    assert_eq!((got["flavor"].clone(), got["uri"].clone()), (Value::Null, json!(uri)));
    let r = admin(&c, Method::PATCH, &format!("{path}-missing"), Some(r#"{"weight": 1}"#)).await;
    assert_eq!(err(&r), e(404, "Not found", &format!("Pool {p}-missing does not exist")));
    assert_eq!(admin(&c, Method::DELETE, &path, None).await.status, 204);
}

#[tokio::test]
async fn pool_list_paging() {
    let app = app().await;
    let c = Client::new(&app);
    let p = prefix();
    for s in ["a", "b", "c"] {
        make_pool(&c, &format!("{p}-{s}")).await;
    }
    let uri = format!("/v2/pools?marker={p}&limit=2");
    let r = admin(&c, Method::GET, &uri, None).await;
    assert_eq!(r.header_value("content-location"), Some(uri.as_str()));
    let (s, body) = sj(&r);
    assert_eq!(s, 200);
    assert_eq!(
        body["pools"],
        json!([
            {"name": format!("{p}-a"), "flavor": null, "uri": format!("dynamodb://{p}-a"), "weight": 10, "href": format!("/v2/pools/{p}-a")},
            {"name": format!("{p}-b"), "flavor": null, "uri": format!("dynamodb://{p}-b"), "weight": 10, "href": format!("/v2/pools/{p}-b")},
        ])
    );
    let next = body["links"][0]["href"].as_str().unwrap().to_string();
    assert_eq!(body["links"][0]["rel"], json!("next"));
    assert_eq!(next, format!("/v2/pools?limit=2&marker={p}-b"));
    let (_, body) = sj(&admin(&c, Method::GET, &next, None).await);
    assert_eq!(body["pools"][0]["name"], json!(format!("{p}-c")));

    let (_, body) = sj(&admin(&c, Method::GET, &format!("/v2/pools?marker={p}-a&limit=1&detailed=true"), None).await);
    assert_eq!(body["pools"][0]["options"], json!({}));
    assert_eq!(body["links"][0]["href"], json!(format!("/v2/pools?limit=1&detailed=true&marker={p}-b")));
    // Default page size is 10.
    let (_, body) = sj(&admin(&c, Method::GET, "/v2/pools", None).await);
    assert!(body["pools"].as_array().unwrap().len() <= 10);
    // Past the end: an empty page without links.
    let (s, body) = sj(&admin(&c, Method::GET, "/v2/pools?marker=%F4%8F%BF%BF", None).await);
    assert_eq!((s, body), (200, json!({"links": [], "pools": []})));
    let long_marker = format!("/v2/pools?marker={}", "%F4%8F%BF%BF".repeat(400));
    assert_eq!(sj(&admin(&c, Method::GET, &long_marker, None).await).1["pools"], json!([]));

    for bad in ["0", "21", "-1"] {
        let r = admin(&c, Method::GET, &format!("/v2/pools?limit={bad}"), None).await;
        assert_eq!(err(&r), e(400, "Invalid API request", "Limit must be at least 1 and no greater than 20."));
    }
    let r = admin(&c, Method::GET, "/v2/pools?limit=x", None).await;
    assert_eq!(err(&r).1, "Invalid parameter");
    let r = admin(&c, Method::GET, "/v2/pools?detailed=x", None).await;
    assert_eq!(err(&r).1, "Invalid parameter");
    for s in ["a", "b", "c"] {
        admin(&c, Method::DELETE, &format!("/v2/pools/{p}-{s}"), None).await;
    }
}

#[tokio::test]
async fn flavor_lifecycle() {
    let app = app().await;
    let c = Client::new(&app);
    let p = prefix();
    let (p1, p2) = (make_pool(&c, &format!("{p}-1")).await, make_pool(&c, &format!("{p}-2")).await);
    let body = json!({"pool_list": [p1, p2], "capabilities": {"fifo": true}}).to_string();
    let r = admin(&c, Method::PUT, "/v2/flavors/gold", Some(&body)).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header_value("location"), Some("/v2/flavors/gold"));
    assert_eq!(pool_flavor(&c, &p1).await, json!("gold"));
    assert_eq!(pool_flavor(&c, &p2).await, json!("gold"));

    let (s, got) = sj(&c.get("/v2/flavors/gold").await);
    assert_eq!(s, 200);
    assert_eq!(
        got,
        json!({"name": "gold", "capabilities": ALL_CAPS, "pool_list": [p1, p2], "href": "/v2/flavors/gold"})
    );
    // Re-PUT is fine (no conflict).
    assert_eq!(admin(&c, Method::PUT, "/v2/flavors/gold", Some(&body)).await.status, 201);

    let (s, got) = sj(&c.get("/v2/flavors").await);
    assert_eq!(s, 200);
    assert_eq!(got["flavors"], json!([{"name": "gold", "href": "/v2/flavors/gold", "pool_list": [p1, p2]}]));
    assert_eq!(got["links"], json!([{"rel": "next", "href": "/v2/flavors?marker=gold"}]));
    let (_, got) = sj(&c.get("/v2/flavors?detailed=true").await);
    assert_eq!(got["flavors"][0]["capabilities"], json!(ALL_CAPS));
    assert_eq!(got["links"][0]["href"], json!("/v2/flavors?detailed=true&marker=gold"));

    // PATCH re-assigns: p1 leaves, p2 stays.
    let r = admin(&c, Method::PATCH, "/v2/flavors/gold", Some(&json!({"pool_list": [p2]}).to_string())).await;
    let (s, got) = sj(&r);
    assert_eq!(s, 200);
    assert_eq!(got, json!({"name": "gold", "capabilities": ALL_CAPS, "pool_list": [p2], "href": "/v2/flavors/gold"}));
    assert_eq!(pool_flavor(&c, &p1).await, Value::Null);
    assert_eq!(pool_flavor(&c, &p2).await, json!("gold"));

    // Another project sees none of it.
    let other = Client::new(&app);
    assert_eq!(err(&other.get("/v2/flavors/gold").await), e(404, "Not found", "Flavor gold does not exist"));
    assert_eq!(sj(&other.get("/v2/flavors").await).1, json!({"links": [], "flavors": []}));

    // DELETE detaches the pools.
    assert_eq!(admin(&c, Method::DELETE, "/v2/flavors/gold", None).await.status, 204);
    assert_eq!(pool_flavor(&c, &p2).await, Value::Null);
    assert_eq!(err(&c.get("/v2/flavors/gold").await), e(404, "Not found", "Flavor gold does not exist"));
    assert_eq!(admin(&c, Method::DELETE, "/v2/flavors/gold", None).await.status, 204);

    // A flavor whose pools all left (detached from the pool side) lists without pool_list.
    let body = json!({"pool_list": [p1]}).to_string();
    assert_eq!(admin(&c, Method::PUT, "/v2/flavors/silver", Some(&body)).await.status, 201);
    let (_, got) = sj(&admin(&c, Method::PATCH, &format!("/v2/pools/{p1}"), Some(r#"{"flavor": ""}"#)).await);
    assert_eq!(got["flavor"], Value::Null);
    let (_, got) = sj(&c.get("/v2/flavors?detailed=true").await);
    assert_eq!(got["flavors"], json!([{"name": "silver", "href": "/v2/flavors/silver", "capabilities": []}]));
    let (_, got) = sj(&c.get("/v2/flavors/silver").await);
    assert_eq!((got["capabilities"].clone(), got["pool_list"].clone()), (json!([]), json!([])));
    assert_eq!(admin(&c, Method::DELETE, "/v2/flavors/silver", None).await.status, 204);
    for pool in [p1, p2] {
        assert_eq!(admin(&c, Method::DELETE, &format!("/v2/pools/{pool}"), None).await.status, 204);
    }
}

#[tokio::test]
async fn flavor_validation() {
    let app = app().await;
    let c = Client::new(&app);
    let p = make_pool(&c, &prefix()).await;
    let create = |d: &str| e(400, "Unable to create", d);
    let cases: Vec<(Option<String>, (u16, String, String))> = vec![
        (None, e(400, BAD_BODY, "JSON could not be parsed.")),
        (Some("nope".into()), e(400, BAD_BODY, "JSON could not be parsed.")),
        (Some("[]".into()), e(400, BAD_BODY, "[] is not of type 'object'")),
        (Some("{}".into()), e(400, BAD_BODY, "{} is not valid under any of the given schemas")),
        (
            Some(r#"{"capabilities": {}}"#.into()),
            e(400, BAD_BODY, "{'capabilities': {}} is not valid under any of the given schemas"),
        ),
        (Some(r#"{"pool_list": "a"}"#.into()), e(400, BAD_BODY, "'a' is not of type 'array'")),
        (
            Some(format!(r#"{{"pool_list": ["{p}"], "capabilities": []}}"#)),
            e(400, BAD_BODY, "[] is not of type 'object'"),
        ),
        (
            Some(format!(r#"{{"pool_list": ["{p}"], "pool": "x"}}"#)),
            e(400, BAD_BODY, "Additional properties are not allowed ('pool' was unexpected)"),
        ),
        (Some(r#"{"pool_list": []}"#.into()), create("Bad Request")),
        (
            Some(r#"{"pool_list": ["nope"]}"#.into()),
            create("Flavor f1 could not be created, error:Pool nope does not exist"),
        ),
        (
            Some(format!(r#"{{"pool_list": ["{p}", "nope2"]}}"#)),
            create("Flavor f1 could not be created, error:Pool nope2 does not exist"),
        ),
        (Some(r#"{"pool_list": [1]}"#.into()), create("Flavor f1 could not be created, error:Pool 1 does not exist")),
        (
            Some(r#"{"pool_list": [null]}"#.into()),
            create("Flavor f1 could not be created, error:Pool None does not exist"),
        ),
    ];
    for (body, want) in cases {
        let r = admin(&c, Method::PUT, "/v2/flavors/f1", body.as_deref()).await;
        assert_eq!(err(&r), want, "body {body:?}");
    }
    assert_eq!(err(&c.get("/v2/flavors/f1").await).0, 404);
    assert_eq!(pool_flavor(&c, &p).await, Value::Null);
    let r = admin(
        &c,
        Method::PUT,
        &format!("/v2/flavors/{}", "f".repeat(256)),
        Some(&json!({"pool_list": [p]}).to_string()),
    )
    .await;
    assert_eq!(err(&r), e(400, "Invalid API request", "Flavor names may be at most 255 characters long."));

    // PATCH
    let needs = e(400, BAD_BODY, "`pool_list` needs to be specified");
    let cases: Vec<(Option<String>, (u16, String, String))> = vec![
        (None, e(400, BAD_BODY, "JSON could not be parsed.")),
        (Some("{}".into()), needs.clone()),
        (Some(r#"{"capabilities": {}}"#.into()), needs.clone()),
        (Some("[]".into()), needs.clone()),
        (Some(r#"["pool_list"]"#.into()), e(400, BAD_BODY, "['pool_list'] is not of type 'object'")),
        (Some(r#"{"pool_list": {}}"#.into()), e(400, BAD_BODY, "{} is not of type 'array'")),
        (Some(r#"{"pool_list": []}"#.into()), create("Bad Request")),
        (Some(format!(r#"{{"pool_list": ["{p}"]}}"#)), e(404, "Not found", "Flavor f1 does not exist")),
    ];
    for (body, want) in cases {
        let r = admin(&c, Method::PATCH, "/v2/flavors/f1", body.as_deref()).await;
        assert_eq!(err(&r), want, "body {body:?}");
    }
    assert_eq!(
        admin(&c, Method::PUT, "/v2/flavors/f1", Some(&json!({"pool_list": [p]}).to_string())).await.status,
        201
    );
    let r = admin(&c, Method::PATCH, "/v2/flavors/f1", Some(&json!({"pool_list": [p, "nope"]}).to_string())).await;
    assert_eq!(err(&r), e(400, "updatefail", "Flavor f1 cant be updated, error:Pool nope does not exist"));
    // Extra keys are tolerated on PATCH (upstream's patch schema does not forbid them).
    let r = admin(&c, Method::PATCH, "/v2/flavors/f1", Some(&json!({"pool_list": [p, p], "x": 1}).to_string())).await;
    assert_eq!(r.status, 200);
    assert_eq!(pool_flavor(&c, &p).await, json!("f1"));
    assert_eq!(admin(&c, Method::DELETE, "/v2/flavors/f1", None).await.status, 204);
    assert_eq!(admin(&c, Method::DELETE, "/v2/flavors/never", None).await.status, 204);
    assert_eq!(admin(&c, Method::DELETE, &format!("/v2/pools/{p}"), None).await.status, 204);
}

#[tokio::test]
async fn last_pool_of_an_existing_flavor_cannot_be_deleted() {
    let app = app().await;
    let c = Client::new(&app);
    let p = prefix();
    let (p1, p2) = (make_pool(&c, &format!("{p}-1")).await, make_pool(&c, &format!("{p}-2")).await);
    let body = json!({"pool_list": [p1, p2]}).to_string();
    assert_eq!(admin(&c, Method::PUT, "/v2/flavors/gold", Some(&body)).await.status, 201);
    assert_eq!(admin(&c, Method::DELETE, &format!("/v2/pools/{p1}"), None).await.status, 204);
    let r = admin(&c, Method::DELETE, &format!("/v2/pools/{p2}"), None).await;
    assert_eq!(err(&r), e(403, "Unable to delete", "This pool is used by flavors gold; It cannot be deleted."));
    assert_eq!(pool_flavor(&c, &p2).await, json!("gold"));
    // Once the flavor is gone the pool may go.
    assert_eq!(admin(&c, Method::DELETE, "/v2/flavors/gold", None).await.status, 204);
    assert_eq!(admin(&c, Method::DELETE, &format!("/v2/pools/{p2}"), None).await.status, 204);

    // A pool naming a flavor that does not exist is deletable.
    let p3 = format!("{p}-3");
    let body = json!({"uri": format!("dynamodb://{p3}"), "weight": 1, "flavor": "ghost"}).to_string();
    assert_eq!(admin(&c, Method::PUT, &format!("/v2/pools/{p3}"), Some(&body)).await.status, 201);
    assert_eq!(admin(&c, Method::DELETE, &format!("/v2/pools/{p3}"), None).await.status, 204);

    // A flavor created from the pool side (pool PUT with `flavor`) counts too.
    let p4 = format!("{p}-4");
    let body = json!({"uri": format!("dynamodb://{p4}"), "weight": 1, "flavor": "bronze"}).to_string();
    assert_eq!(admin(&c, Method::PUT, &format!("/v2/pools/{p4}"), Some(&body)).await.status, 201);
    assert_eq!(
        admin(&c, Method::PUT, "/v2/flavors/bronze", Some(&json!({"pool_list": [p4]}).to_string())).await.status,
        201
    );
    let (_, got) = sj(&c.get("/v2/flavors/bronze").await);
    assert_eq!(got["pool_list"], json!([p4]));
    assert_eq!(admin(&c, Method::DELETE, &format!("/v2/pools/{p4}"), None).await.status, 403);
    assert_eq!(admin(&c, Method::DELETE, "/v2/flavors/bronze", None).await.status, 204);
    assert_eq!(admin(&c, Method::DELETE, &format!("/v2/pools/{p4}"), None).await.status, 204);
}

#[tokio::test]
async fn flavor_list_paging() {
    let app = app().await;
    let c = Client::new(&app);
    let p = make_pool(&c, &prefix()).await;
    let body = json!({"pool_list": [p]}).to_string();
    for f in ["f1", "f2", "f3"] {
        assert_eq!(admin(&c, Method::PUT, &format!("/v2/flavors/{f}"), Some(&body)).await.status, 201);
    }
    // The pool moved to f3 with the last PUT (a pool belongs to one flavor).
    let (_, got) = sj(&c.get("/v2/flavors?limit=2").await);
    assert_eq!(
        got["flavors"],
        json!([{"name": "f1", "href": "/v2/flavors/f1"}, {"name": "f2", "href": "/v2/flavors/f2"}])
    );
    assert_eq!(got["links"][0]["href"], json!("/v2/flavors?limit=2&marker=f2"));
    let (_, got) = sj(&c.get("/v2/flavors?limit=2&marker=f2").await);
    assert_eq!(got["flavors"], json!([{"name": "f3", "href": "/v2/flavors/f3", "pool_list": [p]}]));
    let (_, got) = sj(&c.get("/v2/flavors?limit=2&marker=f3").await);
    assert_eq!(got, json!({"links": [], "flavors": []}));
    for bad in ["0", "21"] {
        let r = c.get(&format!("/v2/flavors?limit={bad}")).await;
        assert_eq!(err(&r), e(400, "Invalid API request", "Limit must be at least 1 and no greater than 20."));
    }
    assert_eq!(err(&c.get("/v2/flavors?detailed=sure").await).1, "Invalid parameter");
    for f in ["f1", "f2", "f3"] {
        admin(&c, Method::DELETE, &format!("/v2/flavors/{f}"), None).await;
    }
    admin(&c, Method::DELETE, &format!("/v2/pools/{p}"), None).await;
}

#[tokio::test]
async fn methods_and_transport_rules_apply() {
    let app = app().await;
    let c = Client::new(&app);
    let r = admin(&c, Method::POST, "/v2/pools/x", Some("{}")).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header_value("allow"), Some("DELETE, GET, PATCH, PUT, OPTIONS"));
    let r = admin(&c, Method::PUT, "/v2/flavors", Some("{}")).await;
    assert_eq!((r.status.as_u16(), r.header_value("allow")), (405, Some("GET, OPTIONS")));
    let r =
        c.send(ApiRequest::new(Method::GET, "/v2/pools").header("X-Roles", "admin").header("X-Project-ID", "p")).await;
    assert_eq!(err(&r).1, "Missing header value");
}
