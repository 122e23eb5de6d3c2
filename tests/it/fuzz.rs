//! Property-based fuzzing (proptest) of what hostile clients control: request routing, headers, query
//! strings, JSON bodies, queue metadata, JSON-patch documents, subscriber URIs, retry policies and
//! pre-signed URL data.
//!
//! Properties: nothing panics; every response to client input is 2xx/3xx/4xx with an empty or strictly
//! valid JSON body (5xx only when the request reached storage, which is absent here); routing is total
//! and agrees with a model of Zaqar's paths; the pure parsers keep their contracts.
//!
//! `dispatch` runs the real handlers with a DynamoDB client whose HTTP layer refuses every call
//! ([`NoStorage`]), so a request that reaches storage is seen (and answers 503) without any network.
//!
//! Each target runs [`DEFAULT_CASES`] cases in the test command; `PROPTEST_CASES=1000000 cargo test -p
//! zaqar-integration-tests --test fuzz` runs more. A failure prints the minimal input it shrank to.

use aws_sdk_dynamodb::config::{Credentials, Region, RuntimeComponents};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use http::Method;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use zaqar::clock::Clock;
use zaqar::config::{Config, Limits};
use zaqar::{meta, query, route, signing, webhook, ApiRequest, ApiResponse, App};

/// Cases per target in the test command (a few seconds each in a debug build).
const DEFAULT_CASES: u32 = 2000;

fn runner(cases: u32) -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    TestRunner::new(RunnerConfig { cases, failure_persistence: None, ..RunnerConfig::default() })
}

/// Runs `test` over `strategy` and reports how many inputs were tried.
fn fuzz<S: Strategy>(name: &str, cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let mut runner = runner(cases);
    let started = std::time::Instant::now();
    if let Err(e) = runner.run(&strategy, test) {
        panic!("fuzz target {name} failed: {e}");
    }
    eprintln!("fuzz {name}: {} inputs in {:.1} s", runner.config().cases, started.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------------------------------
// Inputs

/// Numbers as JSON text, with the edges that break code: i64 limits, beyond them, exponents.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![i64::MIN, i64::MAX, i64::MIN + 1, i64::MAX - 1]).prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        (-100i64..100_000).prop_map(|n| n.to_string()),
        prop::sample::select(vec![
            "0",
            "-0",
            "1",
            "-1",
            "59",
            "60",
            "61",
            "900",
            "901",
            "3600",
            "43200",
            "43201",
            "1209600",
            "1209601",
            "262144",
            "262145",
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854775808",
            "-9223372036854775809",
            "18446744073709551616",
            "1.5",
            "0.0",
            "-0.0",
            "1E5",
            "1e-7",
            "2.5e+3",
            "123456789012345678901234567890",
        ])
        .prop_map(str::to_string),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:e}")),
    ]
}

/// Exponents whose value is not a finite f64 (`1e400`): once served as `Infinity`, which is not JSON
/// (issue 10, "Invalid JSON out").
fn huge_number_text() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["1e400", "-1e400", "1E999", "2e308"]).prop_map(str::to_string)
}

fn string_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,12}",
        "[a-z_]{0,12}",
        prop::sample::select(vec![
            "",
            "linear",
            "geometric",
            "exponential",
            "arithmetic",
            "cubic",
            "add",
            "remove",
            "replace",
            "move",
            "/metadata/a",
            "/metadata/~1x",
            "/metadata/",
            "//",
            "/metadata/a/b",
            "metadata/a",
            "/other/a",
            "~2",
            "/metadata/~",
            "http://127.0.0.1:1/x",
            "https://example.com/hook",
            "mailto:a@b.c?subject=x",
            "trust+http://[::1]/",
            "messages",
            "subscriptions",
            "claims",
            "GET",
            "POST",
            "2099-01-01T00:00:00",
            "1999-01-01",
            "9999-12-31T23:59:59",
            "nonsense",
        ])
        .prop_map(str::to_string),
    ]
    .prop_map(|s| serde_json::to_string(&s).expect("strings serialise"))
}

const KEYS: &[&str] = &[
    "body",
    "ttl",
    "grace",
    "delay",
    "messages",
    "op",
    "path",
    "value",
    "subscriber",
    "options",
    "confirmed",
    "resource_types",
    "paths",
    "methods",
    "expires",
    "_retry_policy",
    "retries_with_no_delay",
    "minimum_delay_retries",
    "minimum_delay",
    "maximum_delay",
    "maximum_delay_retries",
    "retry_backoff_function",
    "ignore_subscription_override",
    "_default_message_ttl",
    "_default_message_delay",
    "_max_messages_post_size",
    "_dead_letter_queue",
    "_dead_letter_queue_messages_ttl",
    "_max_claim_count",
    "_enable_encrypt_messages",
    "uri",
    "weight",
    "flavor",
    "pool_list",
    "capabilities",
    "group",
    "x",
];

/// JSON documents as text, shaped like Zaqar bodies (known keys, edge numbers, nesting).
fn json_text_with(numbers: BoxedStrategy<String>) -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        3 => numbers,
        2 => string_text(),
        1 => prop::sample::select(vec!["null", "true", "false", "{}", "[]"]).prop_map(str::to_string),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|items| format!("[{}]", items.join(", "))),
            prop::collection::vec(
                (
                    prop_oneof![
                        4 => prop::sample::select(KEYS.to_vec()).prop_map(str::to_string),
                        1 => "\\PC{0,6}"
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|fields| {
                let fields: Vec<String> = fields
                    .into_iter()
                    .map(|(k, v)| format!("{}: {v}", serde_json::to_string(&k).expect("strings serialise")))
                    .collect();
                format!("{{{}}}", fields.join(", "))
            }),
        ]
    })
}

fn json_text() -> impl Strategy<Value = String> {
    json_text_with(number_text().boxed())
}

/// JSON text including non-finite exponents (for the targets that must survive them).
fn json_text_any_numbers() -> impl Strategy<Value = String> {
    json_text_with(prop_oneof![9 => number_text(), 1 => huge_number_text()].boxed())
}

/// Request bodies: Zaqar-shaped JSON, plain JSON, broken JSON and arbitrary bytes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => Just(Vec::new()),
        6 => json_text_any_numbers().prop_map(String::into_bytes),
        3 => json_text().prop_map(|j| format!("{{\"messages\": [{{\"body\": {j}, \"ttl\": 60}}]}}").into_bytes()),
        2 => json_text().prop_map(|j| format!("[{{\"op\": \"add\", \"path\": \"/metadata/k\", \"value\": {j}}}]").into_bytes()),
        2 => json_text().prop_map(|j| {
            let mut s = j.into_bytes();
            let cut = s.len() / 2;
            s.truncate(cut);
            s
        }),
        2 => (number_text(), number_text()).prop_map(|(a, b)| format!("{{\"ttl\": {a}, \"grace\": {b}}}").into_bytes()),
        // Retry policies with edge delays: `maximum_delay - minimum_delay` once overflowed (issue 10, "Panics").
        2 => (number_text(), number_text()).prop_map(|(a, b)| {
            let policy = format!("{{\"_retry_policy\": {{\"minimum_delay\": {a}, \"maximum_delay\": {b}}}}}");
            // Shaped for queue metadata (PUT queue) and for subscription options (POST, PATCH).
            let policy = &policy[1..policy.len() - 1];
            format!("{{\"subscriber\": \"http://127.0.0.1:9/\", \"options\": {{{policy}}}, {policy}}}").into_bytes()
        }),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

/// Over-long values (ids, markers, names), cheap to generate: a short pattern repeated.
fn long_text(min: usize, max: usize) -> impl Strategy<Value = String> {
    ("[a-z0-9]{1,4}", min..=max).prop_map(|(unit, len)| unit.repeat(len / unit.len() + 1)[..len].to_string())
}

/// One path segment: names, ids, percent-escapes, Unicode, over-long values.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => "[a-zA-Z0-9_.-]{1,12}",
        2 => "(%[0-9A-Fa-f]{2}|%|[a-z#?~ ]){1,10}",
        1 => "\\PC{0,16}",
        1 => "[a-f0-9]{24}",
        1 => long_text(60, 300),
        1 => Just(String::new()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    let tail = prop::sample::select(vec![
        "",
        "/stats",
        "/purge",
        "/share",
        "/messages",
        "/claims",
        "/subscriptions",
        "/messages/{id}",
        "/claims/{id}",
        "/subscriptions/{id}",
        "/subscriptions/{id}/confirm",
        "/messages/{id}/x",
        "/",
    ]);
    prop_oneof![
        6 => (segment(), tail, segment())
            .prop_map(|(q, tail, id)| format!("/v2/queues/{q}{}", tail.replace("{id}", &id))),
        2 => (prop::sample::select(vec!["/v2/pools/", "/v2/flavors/", "/v2/queues/", "/v2/"]), segment())
            .prop_map(|(p, s)| format!("{p}{s}")),
        2 => prop::sample::select(vec![
            "/", "", "/v2", "/v2/", "/v2/ping", "/v2/health", "/v2/queues", "/v2/pools", "/v2/flavors", "//v2//queues",
            "/v1/queues", "/v2/queues/", "/v2/queues//messages",
        ])
        .prop_map(str::to_string),
        1 => "\\PC{0,40}",
        1 => "/[ -~]{0,40}",
    ]
}

fn query_string() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        5 => prop::sample::select(vec![
            "limit", "marker", "echo", "include_claimed", "include_delayed", "ids", "pop", "claim_id", "detailed",
            "with_count", "name", "x",
        ])
        .prop_map(str::to_string),
        1 => "[a-z%=&]{0,6}",
    ];
    let value = prop_oneof![
        3 => number_text(),
        2 => prop::sample::select(vec!["true", "false", "yes", "maybe", "", "a,b,,c", "%zz", "%41"]).prop_map(str::to_string),
        1 => "[a-f0-9]{24}",
        1 => long_text(500, 3000),
        1 => "[ -~]{0,12}",
    ];
    prop::collection::vec((key, value), 0..4)
        .prop_map(|pairs| pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&"))
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        8 => prop::sample::select(vec![
            Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::HEAD, Method::OPTIONS,
        ]),
        1 => "[A-Z]{1,8}".prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap_or(Method::TRACE)),
    ]
}

/// A path and a method, mostly one the path's resource implements (so handlers run, not just 405s).
fn path_and_method() -> impl Strategy<Value = (String, Method)> {
    path().prop_flat_map(|path| {
        let allowed: Vec<Method> = route::route(&path)
            .map(|r| r.resource.allowed().iter().filter_map(|m| Method::from_bytes(m.as_bytes()).ok()).collect())
            .unwrap_or_default();
        let method = if allowed.is_empty() {
            method().boxed()
        } else {
            prop_oneof![4 => prop::sample::select(allowed), 1 => method()].boxed()
        };
        (Just(path), method)
    })
}

fn maybe(s: impl Strategy<Value = String>) -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(0.95, s)
}

#[derive(Debug, Clone)]
struct Headers {
    client_id: Option<String>,
    project: Option<String>,
    accept: Option<String>,
    content_type: Option<String>,
    roles: Option<String>,
    signature: Option<(String, String, String, String)>,
}

fn headers() -> impl Strategy<Value = Headers> {
    let client_id = maybe(prop_oneof![
        12 => Just(harness::CLIENT.to_string()),
        1 => "[0-9a-f-]{0,40}",
        1 => Just("{urn:uuid:3381af92-2b9e-11e3-b191-71861300734c}".to_string()),
    ]);
    let project =
        maybe(prop_oneof![12 => Just("fuzz-project".to_string()), 1 => "[ -~]{0,10}", 1 => long_text(250, 300)]);
    let accept = prop::option::weighted(
        0.4,
        prop::sample::select(vec![
            "application/json",
            "*/*",
            "text/html",
            "application/*;q=0",
            "application/json;q=abc",
            "",
            ",,;",
        ])
        .prop_map(str::to_string),
    );
    let content_type = prop::option::weighted(
        0.8,
        prop::sample::select(vec![
            "application/json",
            "application/openstack-messaging-v2.0-json-patch",
            "application/x-www-form-urlencoded",
            "text/plain",
            "application/json; charset=utf-8",
        ])
        .prop_map(str::to_string),
    );
    let roles = prop::option::weighted(0.2, Just("admin".to_string()));
    let signature =
        prop::option::weighted(0.1, ("[a-f0-9]{0,64}", "[ -~]{0,20}", "(GET|POST|PUT|x|,){0,4}", "[ -~]{0,30}"));
    (client_id, project, accept, content_type, roles, signature).prop_map(
        |(client_id, project, accept, content_type, roles, signature)| Headers {
            client_id,
            project,
            accept,
            content_type,
            roles,
            signature,
        },
    )
}

// ---------------------------------------------------------------------------------------------------
// Dispatch without storage

/// The HTTP layer of a DynamoDB client that refuses every call and counts them.
#[derive(Debug, Clone, Default)]
struct NoStorage {
    calls: Arc<AtomicU64>,
}

impl HttpConnector for NoStorage {
    fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
        self.calls.fetch_add(1, Ordering::SeqCst);
        HttpConnectorFuture::ready(Err(ConnectorError::other("storage is not part of the fuzz tests".into(), None)))
    }
}

impl HttpClient for NoStorage {
    fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

fn app_without_storage(storage: &NoStorage) -> App {
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url("http://127.0.0.1:9")
        .credentials_provider(Credentials::new("fuzz", "fuzz", None, None, "fuzz"))
        .http_client(storage.clone())
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        .build();
    App::new(Config::for_tests("zaqar-fuzz"), aws_sdk_dynamodb::Client::from_conf(conf), Clock::manual())
}

/// A response a client may get: 2xx/3xx/4xx (503 only if storage was reached), an empty or strict JSON
/// body served as `application/json`, and errors with a `title`.
fn check_response(resp: &ApiResponse, reached_storage: bool) -> Result<(), TestCaseError> {
    let status = resp.status.as_u16();
    prop_assert!(
        status < 500 || (reached_storage && status == 503),
        "status {status} (storage reached: {reached_storage}), body {}",
        String::from_utf8_lossy(&resp.body)
    );
    if resp.body.is_empty() {
        return Ok(());
    }
    let parsed = serde_json::from_slice::<Value>(&resp.body);
    prop_assert!(parsed.is_ok(), "invalid JSON body: {}", String::from_utf8_lossy(&resp.body));
    // `application/json`, or `application/json-home` for the home document.
    let content_type = resp.header_value("content-type").unwrap_or_default();
    prop_assert!(content_type.starts_with("application/json"), "content-type {content_type}");
    if status >= 400 {
        let v = parsed.expect("checked");
        prop_assert!(v["title"].is_string(), "error without a title: {v}");
    }
    Ok(())
}

#[test]
fn dispatch_answers_every_request() {
    let storage = NoStorage::default();
    let app = app_without_storage(&storage);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let strategy = (path_and_method(), query_string(), headers(), body());
    fuzz("dispatch", DEFAULT_CASES, strategy, |((path, method), query, h, body)| {
        let target = if query.is_empty() { path.clone() } else { format!("{path}?{query}") };
        let mut req = ApiRequest::new(method, &target);
        let optional = [
            ("Client-ID", &h.client_id),
            ("X-Project-ID", &h.project),
            ("Accept", &h.accept),
            ("Content-Type", &h.content_type),
            ("X-Roles", &h.roles),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                req = req.header(name, v);
            }
        }
        if let Some((sig, expires, methods, paths)) = &h.signature {
            req = req
                .header("URL-Signature", sig)
                .header("URL-Expires", expires)
                .header("URL-Methods", methods)
                .header("URL-Paths", paths);
        }
        if !body.is_empty() {
            req = req.body(body);
        }
        let before = storage.calls.load(Ordering::SeqCst);
        let resp = rt.block_on(zaqar_local::server::dispatch(&app, req));
        check_response(&resp, storage.calls.load(Ordering::SeqCst) > before)
    });
}

// ---------------------------------------------------------------------------------------------------
// Routing

/// Zaqar's v2 routes as a model: what `route` must answer for a path built from segments.
#[test]
fn routing_is_total_and_matches_the_model() {
    use route::Resource::*;
    let tails = prop::sample::select(vec![
        ("", Some(Queue), false),
        ("/stats", Some(QueueStats), false),
        ("/purge", Some(QueuePurge), false),
        ("/share", Some(QueueShare), false),
        ("/messages", Some(Messages), false),
        ("/claims", Some(Claims), false),
        ("/subscriptions", Some(Subscriptions), false),
        ("/messages/{id}", Some(Message), true),
        ("/claims/{id}", Some(Claim), true),
        ("/subscriptions/{id}", Some(Subscription), true),
        ("/subscriptions/{id}/confirm", Some(SubscriptionConfirm), true),
        ("/messages/{id}/more", None, true),
        ("/nope", None, false),
    ]);
    let plain = "[a-zA-Z0-9_.~-]{1,20}";
    fuzz(
        "route model",
        DEFAULT_CASES,
        (plain, tails, plain, "\\PC{0,60}"),
        |(q, (tail, expected, has_id), id, noise)| {
            // Any text routes without panicking (None is Zaqar's 404).
            let _ = route::route(&noise);
            let path = format!("/v2/queues/{q}{}", tail.replace("{id}", &id));
            let got = route::route(&path);
            prop_assert_eq!(got.as_ref().map(|r| r.resource), expected, "{}", path);
            if let Some(r) = got {
                prop_assert_eq!(r.queue.as_deref(), Some(q.as_str()));
                prop_assert_eq!(r.id.as_deref(), has_id.then_some(id.as_str()));
                // Runs of slashes are tolerated.
                prop_assert_eq!(route::route(&path.replace('/', "//")).map(|r| r.resource), Some(r.resource));
            }
            Ok(())
        },
    );
}

#[test]
fn percent_decoding_of_route_segments_never_fails() {
    fuzz(
        "route decoding",
        DEFAULT_CASES,
        ("(%[0-9A-Fa-f]{2}|%[^/]?|[^/])*", "(%[0-9A-Fa-f]{2}|%|[a-z])*"),
        |(q, id)| {
            let r = route::route(&format!("/v2/queues/{q}/messages/{id}"));
            if !q.is_empty() && !id.is_empty() {
                let r = r.expect("a message path routes");
                prop_assert_eq!(r.resource, route::Resource::Message);
                prop_assert!(r.id.is_some() && r.queue.is_some());
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------------
// JSON

#[test]
fn body_parsing_never_panics_and_keeps_its_contract() {
    let input = prop_oneof![
        json_text_any_numbers().prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..80),
        "\\PC{0,40}".prop_map(String::into_bytes),
    ];
    fuzz("json::parse_body", DEFAULT_CASES, input, |bytes| {
        match zaqar::json::parse_body(&bytes) {
            Ok(None) => prop_assert!(bytes.is_empty()),
            Ok(Some(v)) => prop_assert!(v.is_object() || v.is_array()),
            Err(e) => prop_assert_eq!(e.status.as_u16(), 400),
        }
        Ok(())
    });
}

#[test]
fn accepted_json_is_served_as_strict_json() {
    fuzz("json::to_body", DEFAULT_CASES, json_text_any_numbers(), |text| {
        let Ok(Some(v)) = zaqar::json::parse_body(text.as_bytes()) else { return Ok(()) };
        for out in [zaqar::json::to_body(&v), zaqar::json::python_dumps(&v).into_bytes()] {
            let back = serde_json::from_slice::<Value>(&out);
            prop_assert!(back.is_ok(), "not JSON: {}", String::from_utf8_lossy(&out));
        }
        Ok(())
    });
}

#[test]
fn python_floats_round_trip() {
    let floats = prop_oneof![any::<f64>().prop_filter("finite", |f| f.is_finite()), -1e20f64..1e20];
    fuzz("json::python_float", DEFAULT_CASES, floats, |f| {
        let text = zaqar::json::python_float(f);
        prop_assert_eq!(text.parse::<f64>().ok(), Some(f), "{}", text);
        prop_assert!(serde_json::from_str::<Value>(&text).is_ok(), "{}", text);
        Ok(())
    });
}

#[test]
fn int_fields_never_panic() {
    fuzz("json::int_field", DEFAULT_CASES, json_text_any_numbers(), |text| {
        if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&text) {
            for k in ["ttl", "grace", "delay", "x"] {
                if let Err(e) = zaqar::json::int_field(&m, k) {
                    prop_assert_eq!(e.status.as_u16(), 400);
                }
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------------
// Metadata, JSON-patch, retry policies

fn object_of(text: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

#[test]
fn metadata_validation_never_panics() {
    let meta_text = prop_oneof![
        json_text_any_numbers(),
        (number_text(), number_text())
            .prop_map(|(a, b)| format!("{{\"_retry_policy\": {{\"minimum_delay\": {a}, \"maximum_delay\": {b}}}}}")),
    ];
    fuzz("meta::validate", DEFAULT_CASES, meta_text, |text| {
        let Some(m) = object_of(&text) else { return Ok(()) };
        let limits = Limits::default();
        if let Err(e) = meta::validate(&m, &limits) {
            prop_assert_eq!(e.status.as_u16(), 400);
        }
        let shown = meta::with_defaults(&m, &limits);
        prop_assert!(shown.len() >= m.len());
        let _ = meta::QueueSettings::from_meta(&m);
        Ok(())
    });
}

#[test]
fn json_patch_never_panics_and_fails_as_a_client_error() {
    let op = prop_oneof![
        prop::sample::select(vec!["add", "remove", "replace"]).prop_map(|s| format!("\"{s}\"")),
        json_text(),
    ];
    let pointer = prop_oneof![
        "/metadata/[a-z~01/ ]{0,8}".prop_map(|p| serde_json::to_string(&p).expect("string")),
        "[/~a-z0-9 ]{0,12}".prop_map(|p| serde_json::to_string(&p).expect("string")),
        "\\PC{0,10}".prop_map(|p| serde_json::to_string(&p).expect("string")),
        json_text(),
    ];
    let change = (op, pointer, prop::option::of(json_text())).prop_map(|(op, path, value)| match value {
        Some(v) => format!("{{\"op\": {op}, \"path\": {path}, \"value\": {v}}}"),
        None => format!("{{\"op\": {op}, \"path\": {path}}}"),
    });
    let doc = prop_oneof![
        4 => prop::collection::vec(change, 0..5).prop_map(|c| format!("[{}]", c.join(", "))),
        1 => json_text(),
    ];
    fuzz("meta::parse_patch + apply_patch", DEFAULT_CASES, (doc, json_text()), |(doc, meta_text)| {
        let Ok(doc) = serde_json::from_str::<Value>(&doc) else { return Ok(()) };
        match meta::parse_patch(&doc) {
            Err(e) => prop_assert_eq!(e.status.as_u16(), 400),
            Ok(ops) => {
                let mut m = object_of(&meta_text).unwrap_or_default();
                if let Err(e) = meta::apply_patch(&mut m, ops) {
                    prop_assert_eq!(e.status.as_u16(), 409);
                }
            }
        }
        Ok(())
    });
}

#[test]
fn fanout_retry_schedules_are_bounded() {
    fuzz("fanout retry::schedule", DEFAULT_CASES, (json_text(), json_text()), |(sub, queue)| {
        let sub: Value = serde_json::from_str(&sub).unwrap_or(Value::Null);
        let queue = object_of(&queue);
        let policy = zaqar_fanout::retry::effective(&sub, queue.as_ref());
        let delays = zaqar_fanout::retry::schedule(&policy);
        prop_assert!(delays.len() <= 200);
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------------
// Query strings, subscribers, signing

#[test]
fn query_strings_parse_like_falcon() {
    fuzz("query::Query", DEFAULT_CASES, prop_oneof![query_string(), "\\PC{0,60}"], |raw| {
        let q = query::Query::parse(&raw);
        for name in ["limit", "marker", "echo", "ids", "pop", "x"] {
            match q.int(name) {
                Ok(Some(n)) => prop_assert_eq!(q.get(name).map(|v| v.trim().parse::<i64>().ok()), Some(Some(n))),
                Ok(None) => prop_assert!(q.get(name).is_none()),
                Err(e) => prop_assert_eq!(e.status.as_u16(), 400),
            }
            if let Err(e) = q.bool(name) {
                prop_assert_eq!(e.status.as_u16(), 400);
            }
            if let Some(items) = q.list(name) {
                prop_assert!(items.iter().all(|i| !i.is_empty() && !i.contains(',')));
            }
        }
        let links = query::page_links("/v2/queues", &q, &["limit", "x"], &[], Some(raw.clone()));
        prop_assert!(links[0]["href"].as_str().is_some_and(|h| h.starts_with("/v2/queues?")));
        Ok(())
    });
}

#[test]
fn subscriber_uris_never_panic() {
    let uri = prop_oneof![
        "\\PC{0,40}",
        ("(http|https|trust\\+http|TRUST\\+HTTPS|mailto|ftp|HtTp)", "[ -~]{0,30}")
            .prop_map(|(s, r)| format!("{s}:{r}")),
        ("(http|https)://", "[0-9a-fx.:\\[\\]%]{0,24}", "(/[ -~]{0,10})?").prop_map(|(s, h, p)| format!("{s}{h}{p}")),
    ];
    let allow = webhook::AllowList::parse(&["127.0.0.1".into(), "10.0.0.0/8".into(), "example.com".into()]);
    fuzz("webhook::parse_subscriber", DEFAULT_CASES, uri, |uri| {
        let _ = webhook::scheme(&uri);
        if let Ok(webhook::Subscriber::Webhook { url, .. }) = webhook::parse_subscriber(&uri) {
            let _ = webhook::check_url_literal(&url, &allow);
        }
        Ok(())
    });
    fuzz("webhook::refused_ip", DEFAULT_CASES, (any::<u32>(), any::<u128>()), |(v4, v6)| {
        let _ = webhook::refused_ip(std::net::IpAddr::from(v4.to_be_bytes()));
        let _ = webhook::refused_ip(std::net::IpAddr::from(v6.to_be_bytes()));
        Ok(())
    });
}

#[test]
fn signing_round_trips_and_rejects_tampering() {
    let scope = (
        prop::collection::vec("[ -~]{0,20}", 0..4),
        prop::collection::vec("[A-Z]{0,7}", 0..4),
        "\\PC{0,20}",
        0i64..253_402_300_799,
        "\\PC{0,16}",
        "\\PC{0,70}",
    );
    fuzz("signing", DEFAULT_CASES, scope, |(paths, methods, project, at, key, presented)| {
        let expires = signing::format_expires(at);
        prop_assert_eq!(signing::parse_instant(&expires), Some(at));
        let _ = signing::parse_instant(&presented);
        let scope = signing::SignedScope { paths, methods, project, expires }.normalised();
        let sig = scope.sign(&key);
        prop_assert!(scope.verify(&key, &sig));
        prop_assert_eq!(scope.verify(&key, &presented), presented == sig);
        let flipped: String = sig
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i == at as usize % 64 {
                    if c == '0' {
                        '1'
                    } else {
                        '0'
                    }
                } else {
                    c
                }
            })
            .collect();
        prop_assert!(!scope.verify(&key, &flipped));
        Ok(())
    });
}
