//! Test harness: the real handlers over DynamoDB Local (started by `localstack/dynamodb`), a manual
//! clock so time-dependent rules run without sleeping, and a fresh project per test for isolation.
//!
//! Every helper more than one test file needs lives here, including the few that look at raw table
//! items or the store's clock and meter, so storage internals are reached from this one file.

pub mod faults;

use aws_sdk_dynamodb::types::AttributeValue;
use http::Method;
use serde_json::{json, Value};
use std::collections::HashMap;
use zaqar::clock::Clock;
use zaqar::config::Config;
use zaqar::store::UsageSnapshot;
use zaqar::{ApiRequest, ApiResponse, App};

/// A table item as the SDK holds it.
pub type RawItem = HashMap<String, AttributeValue>;

pub const CLIENT: &str = "3381af92-2b9e-11e3-b191-71861300734c";
pub const OTHER_CLIENT: &str = "e7c06f30-9c7b-4a7c-8c3e-5d5c9d5b2f11";

pub mod hook;

/// DynamoDB Local's address for the tests (`ZAQAR_TEST_ENDPOINT`, default http://127.0.0.1:8000).
pub fn endpoint() -> String {
    std::env::var("ZAQAR_TEST_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:8000".into())
}

/// SDK settings for `endpoint` with local credentials (every client the tests build starts here).
pub fn local_sdk(endpoint: &str) -> aws_config::ConfigLoader {
    zaqar::app::sdk_loader()
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("local", "local", None, None, "tests"))
}

/// A DynamoDB client for `endpoint` with local credentials; `retries: false` fails at once.
async fn dynamodb(endpoint: &str, retries: bool) -> aws_sdk_dynamodb::Client {
    let mut loader = local_sdk(endpoint);
    if !retries {
        loader = loader.retry_config(aws_config::retry::RetryConfig::disabled());
    }
    zaqar::app::dynamodb_client_with(&loader.load().await, &test_timeouts())
}

/// An app wired to DynamoDB Local (`ZAQAR_TEST_ENDPOINT`, default http://127.0.0.1:8000).
pub async fn app_with(config: Config) -> App {
    let app = App::new(config, dynamodb(&endpoint(), true).await, Clock::manual());
    app.store.ensure_table().await.expect("DynamoDB Local must be running (localstack/dynamodb start)");
    app
}

/// An app whose storage refuses connections and does not retry: every storage call fails at once.
pub async fn app_without_storage() -> App {
    App::new(Config::for_tests("zaqar-tests"), dynamodb("http://127.0.0.1:1", false).await, Clock::manual())
}

/// Storage deadlines for tests: DynamoDB Local on a shared 2-core machine can take seconds per request
/// while every test runs at once, and the production deadlines (which `tests/it/hostile` checks) would
/// turn that slowness into 503s. `ZAQAR_STORAGE_*` still override.
pub fn test_timeouts() -> zaqar::timeouts::StorageTimeouts {
    if std::env::vars().any(|(k, _)| k.starts_with("ZAQAR_STORAGE_")) {
        return zaqar::timeouts::StorageTimeouts::from_env().expect("valid ZAQAR_STORAGE_* variables");
    }
    zaqar::timeouts::StorageTimeouts {
        attempt: std::time::Duration::from_secs(10),
        operation: std::time::Duration::from_secs(30),
        ..Default::default()
    }
}

/// The default test app: table `zaqar-tests`, Zaqar's defaults, checksums and admin routes on.
pub async fn app() -> App {
    app_with(Config::for_tests("zaqar-tests")).await
}

/// A project id no other test uses.
pub fn project() -> String {
    format!("t-{}", uuid::Uuid::new_v4().simple())
}

/// Routes a request to its resource group's handler, as API Gateway (and the local server) would.
/// The handler's future is boxed: in debug builds it is large, and a test awaiting many of them in one
/// body would otherwise carry it on the test thread's stack (2 MiB) and overflow it.
pub async fn call(app: &App, req: ApiRequest) -> ApiResponse {
    Box::pin(zaqar_local::server::dispatch(app, req)).await
}

/// A request builder with the usual headers (Client-ID, project).
pub struct Client<'a> {
    pub app: &'a App,
    pub project: String,
    pub client_id: String,
}

impl<'a> Client<'a> {
    pub fn new(app: &'a App) -> Self {
        Client { app, project: project(), client_id: CLIENT.into() }
    }

    /// A client of a given project (tasks sharing one project).
    pub fn of_project(app: &'a App, project: &str, client_id: &str) -> Self {
        Client { app, project: project.into(), client_id: client_id.into() }
    }

    pub fn with_client_id(&self, id: &str) -> Self {
        Client { app: self.app, project: self.project.clone(), client_id: id.into() }
    }

    pub fn request(&self, method: Method, path: &str) -> ApiRequest {
        ApiRequest::new(method, path).header("Client-ID", &self.client_id).header("X-Project-ID", &self.project)
    }

    pub async fn send(&self, req: ApiRequest) -> ApiResponse {
        call(self.app, req).await
    }

    pub async fn get(&self, path: &str) -> ApiResponse {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> ApiResponse {
        self.send(self.request(Method::DELETE, path)).await
    }

    pub async fn put(&self, path: &str, body: Option<&str>) -> ApiResponse {
        let mut r = self.request(Method::PUT, path);
        if let Some(b) = body {
            r = r.header("Content-Type", "application/json").body(b.as_bytes().to_vec());
        }
        self.send(r).await
    }

    pub async fn post(&self, path: &str, body: &str) -> ApiResponse {
        let r =
            self.request(Method::POST, path).header("Content-Type", "application/json").body(body.as_bytes().to_vec());
        self.send(r).await
    }

    pub async fn patch(&self, path: &str, content_type: &str, body: &str) -> ApiResponse {
        let r = self.request(Method::PATCH, path).header("Content-Type", content_type).body(body.as_bytes().to_vec());
        self.send(r).await
    }

    /// A request with the usual headers plus `headers`.
    pub async fn with_headers(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> ApiResponse {
        let mut req = self.request(method, path);
        for (n, v) in headers {
            req = req.header(n, v);
        }
        self.send(req).await
    }
}

/// A request with only the given headers (no Client-ID or project unless listed).
pub async fn bare(app: &App, method: Method, path: &str, headers: &[(&str, &str)]) -> ApiResponse {
    let mut req = ApiRequest::new(method, path);
    for (n, v) in headers {
        req = req.header(n, v);
    }
    call(app, req).await
}

/// [`Client::with_headers`] as a free function.
pub async fn with_headers(c: &Client<'_>, method: Method, path: &str, headers: &[(&str, &str)]) -> ApiResponse {
    c.with_headers(method, path, headers).await
}

// ---------------------------------------------------------------------------------------------
// Messages and claims through the API

/// Posts to `q` and returns the new message ids, asserting 201.
pub async fn post(c: &Client<'_>, q: &str, body: &str) -> Vec<String> {
    let (s, v) = sj(&c.post(&format!("/v2/queues/{q}/messages"), body).await);
    assert_eq!(s, 201, "{v}");
    ids_of_resources(&v)
}

/// Posts `n` messages (`{"body": {"n": i}}` with `ttl`), in batches of 100, and returns their ids.
pub async fn post_n(c: &Client<'_>, q: &str, n: usize, ttl: i64) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let msgs: Vec<Value> = chunk.iter().map(|i| json!({"body": {"n": i}, "ttl": ttl})).collect();
        ids.extend(post(c, q, &json!({ "messages": msgs }).to_string()).await);
    }
    ids
}

/// The ids at the end of a post response's `resources` hrefs.
pub fn ids_of_resources(body: &Value) -> Vec<String> {
    let hrefs = body["resources"].as_array().expect("resources");
    hrefs.iter().map(|h| h.as_str().unwrap().rsplit('/').next().unwrap().to_string()).collect()
}

/// The `id`s of a `{"messages": [...]}` body.
pub fn ids_of(body: &Value) -> Vec<String> {
    body["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect()
}

/// A successful claim on `q` (`query` is `""` or `?limit=N`): (claim id, message ids, body).
pub async fn claim(c: &Client<'_>, q: &str, query: &str, body: &str) -> (String, Vec<String>, Value) {
    let r = c.post(&format!("/v2/queues/{q}/claims{query}"), body).await;
    assert_eq!(r.status, 201, "{}", text(&r));
    let location = r.header_value("location").unwrap().to_string();
    let cid = location.strip_prefix(&format!("/v2/queues/{q}/claims/")).expect("Location shape").to_string();
    let body = r.json_body();
    (cid, ids_of(&body), body)
}

// ---------------------------------------------------------------------------------------------
// Assertions

/// The body as text.
pub fn text(resp: &ApiResponse) -> String {
    String::from_utf8(resp.body.clone()).unwrap()
}

/// A Zaqar error: status, `title`, `description` and the JSON content type.
pub fn assert_error(resp: &ApiResponse, status: u16, title: &str, description: &str) {
    assert_eq!(err(resp), (status, title.to_string(), description.to_string()), "body: {}", text(resp));
    assert_eq!(resp.header_value("content-type"), Some("application/json"));
}

/// falcon's bare 404 for a path with no route (and a refused pre-signed request).
pub fn assert_no_route(resp: &ApiResponse) {
    assert_eq!(resp.status, 404);
    assert_eq!(text(resp), r#"{"title": "404 Not Found"}"#);
}

/// An object's keys, sorted.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

/// Status and parsed JSON body, for compact assertions.
pub fn sj(resp: &ApiResponse) -> (u16, Value) {
    (resp.status.as_u16(), resp.json_body())
}

/// The `(title, description)` of an error response.
pub fn err(resp: &ApiResponse) -> (u16, String, String) {
    let body = resp.json_body();
    (
        resp.status.as_u16(),
        body["title"].as_str().unwrap_or_default().to_string(),
        body["description"].as_str().unwrap_or_default().to_string(),
    )
}

// ---------------------------------------------------------------------------------------------
// Storage seen from outside the API: raw items, the manual clock, the request meter

/// The item at `key` (read consistently), if any. Uses its own client, not the store's.
pub async fn raw_item(app: &App, key: RawItem) -> Option<RawItem> {
    let client = dynamodb(&endpoint(), true).await;
    let out = client.get_item().table_name(&app.config.table).set_key(Some(key)).consistent_read(true).send().await;
    out.expect("GetItem on DynamoDB Local").item().cloned()
}

/// Writes an item as it is, bypassing the store.
pub async fn put_raw_item(app: &App, item: RawItem) {
    let client = dynamodb(&endpoint(), true).await;
    client.put_item().table_name(&app.config.table).set_item(Some(item)).send().await.expect("PutItem");
}

/// Moves the app's manual clock forward.
pub fn advance(app: &App, secs: i64) {
    app.store.clock.advance_secs(secs);
}

/// The app's clock, in whole seconds.
pub fn now_s(app: &App) -> i64 {
    app.store.now_ms() / 1000
}

/// DynamoDB requests and capacity units the app has used so far.
pub fn usage(app: &App) -> UsageSnapshot {
    app.store.usage.snapshot()
}

/// The raw item of message `id` in the queue's current generation (its exact `expires_ms`,
/// `claim_until_ms`, `ttl_s`), if stored.
pub async fn raw_message(app: &App, project: &str, q: &str, id: &str) -> Option<RawItem> {
    let (project, queue) =
        (zaqar::types::ProjectId::parse(project).unwrap(), zaqar::types::QueueName::parse(q).unwrap());
    let key = app.store.message_key_of(&project, &queue, id).await.expect("queue record")?;
    raw_item(app, key).await
}

/// The shard `index` of the queue's current generation.
async fn raw_shard(app: &App, project: &str, q: &str, index: u32) -> zaqar::keys::Shard {
    let (project, queue) =
        (zaqar::types::ProjectId::parse(project).unwrap(), zaqar::types::QueueName::parse(q).unwrap());
    let info = app.store.fresh_queue_info(&project, &queue).await.expect("queue record").expect("queue exists");
    zaqar::keys::Shard { project, queue, gen: info.record.gen, index }
}

/// The raw head item of shard `index` of the queue's current generation (sequence numbers, holes, counters).
pub async fn raw_head(app: &App, project: &str, q: &str, index: u32) -> Option<RawItem> {
    raw_item(app, raw_shard(app, project, q, index).await.head_key()).await
}

/// Message items stored under shard `index` of the queue's current generation, visible or not.
pub async fn raw_message_count(app: &App, project: &str, q: &str, index: u32) -> usize {
    raw_messages(app, project, q, index).await.len()
}

/// The shard count of the queue's current generation; `None` when there is no such queue.
pub async fn raw_shard_count(app: &App, project: &str, q: &str) -> Option<u32> {
    let (project, queue) =
        (zaqar::types::ProjectId::parse(project).unwrap(), zaqar::types::QueueName::parse(q).unwrap());
    let info = app.store.fresh_queue_info(&project, &queue).await.expect("queue record");
    info.map(|i| i.record.shards)
}

/// Every message item (tombstones included) stored under shard `index` of the queue's current generation,
/// with its sequence number.
pub async fn raw_messages(app: &App, project: &str, q: &str, index: u32) -> Vec<(u64, RawItem)> {
    let pk = raw_shard(app, project, q, index).await.messages_pk();
    let client = dynamodb(&endpoint(), true).await;
    let (mut items, mut start) = (vec![], None);
    loop {
        let out = client
            .query()
            .table_name(&app.config.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :m)")
            .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
            .expression_attribute_values(":m", AttributeValue::S(zaqar::keys::MESSAGE_PREFIX.into()))
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .expect("Query on DynamoDB Local");
        for item in out.items() {
            let k = match item.get(zaqar::keys::SK) {
                Some(AttributeValue::S(sk)) => zaqar::keys::message_k(sk),
                _ => None,
            };
            items.push((k.expect("a message sort key"), item.clone()));
        }
        match out.last_evaluated_key() {
            Some(k) => start = Some(k.clone()),
            None => return items,
        }
    }
}

/// A map-of-numbers attribute of a raw item, keyed by number (a head's `ex` and `cl` counters).
pub fn raw_counter_map(item: &RawItem, name: &str) -> std::collections::BTreeMap<i64, i64> {
    let Some(AttributeValue::M(m)) = item.get(name) else { return Default::default() };
    m.iter()
        .filter_map(|(k, v)| match v {
            AttributeValue::N(n) => Some((k.parse().ok()?, n.parse().ok()?)),
            _ => None,
        })
        .collect()
}

/// A number attribute of a raw item.
pub fn raw_i64(item: &RawItem, name: &str) -> Option<i64> {
    match item.get(name) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

/// A string-set attribute of a raw item (empty when absent).
pub fn raw_strings(item: &RawItem, name: &str) -> Vec<String> {
    match item.get(name) {
        Some(AttributeValue::Ss(v)) => v.clone(),
        _ => vec![],
    }
}

/// The number of entries of a map attribute of a raw item.
pub fn raw_map_len(item: &RawItem, name: &str) -> usize {
    match item.get(name) {
        Some(AttributeValue::M(m)) => m.len(),
        _ => 0,
    }
}
