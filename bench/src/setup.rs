//! The app under test: the real handlers (`zaqar_local::server::dispatch`, as API Gateway routes them) over
//! the DynamoDB Local that the `bench/*` scripts start, with a manual clock so expiry needs no waiting.

use crate::meter::{Meter, Recorder};
use http::Method;
use serde_json::Value;
use std::time::{Duration, Instant};
use zaqar::clock::Clock;
use zaqar::config::Config;
use zaqar::{ApiRequest, ApiResponse, App};

/// The table every benchmark uses (the scripts start a fresh, in-memory DynamoDB Local per run).
pub const TABLE: &str = "bench";

fn endpoint() -> String {
    std::env::var("ZAQAR_BENCH_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:8000".into())
}

/// A DynamoDB client for DynamoDB Local, metered by `meter` when given.
pub async fn client(meter: Option<Recorder>) -> aws_sdk_dynamodb::Client {
    let sdk = zaqar::app::sdk_loader()
        .endpoint_url(endpoint())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("local", "local", None, None, "bench"))
        .load()
        .await;
    let mut conf = aws_sdk_dynamodb::config::Builder::from(&sdk);
    if let Some(rec) = meter {
        conf = conf.interceptor(Meter(rec));
    }
    aws_sdk_dynamodb::Client::from_conf(conf.build())
}

/// An app as deployed (checksums off, the production default) with its own manual clock.
pub async fn app(client: aws_sdk_dynamodb::Client) -> App {
    let mut config = Config::for_tests(TABLE);
    config.enable_checksum = false;
    let app = App::new(config, client, Clock::manual());
    app.store.ensure_table().await.expect("DynamoDB Local must be running (the bench/* scripts start it)");
    app
}

/// A Zaqar client of one project and Client-ID, calling the handlers in process.
#[derive(Clone)]
pub struct Caller {
    pub app: App,
    pub project: String,
    pub client_id: String,
    /// `X-Roles`, for the admin resources (pools, flavors) of an app in admin mode.
    pub roles: Option<String>,
}

impl Caller {
    pub fn new(app: &App, project: &str, client_id: &str) -> Self {
        Caller { app: app.clone(), project: project.into(), client_id: client_id.into(), roles: None }
    }

    /// The same caller with the admin role.
    pub fn as_admin(&self) -> Self {
        Caller { roles: Some("admin".into()), ..self.clone() }
    }

    pub fn with_client_id(&self, client_id: &str) -> Self {
        Caller { client_id: client_id.into(), ..self.clone() }
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> ApiResponse {
        self.send_typed(method, path, "application/json", body).await
    }

    /// Sends with a body of the given media type (JSON patch for queue metadata).
    pub async fn send_typed(&self, method: Method, path: &str, media: &str, body: Option<&Value>) -> ApiResponse {
        let mut req = ApiRequest::new(method, path)
            .header("Client-ID", &self.client_id)
            .header("X-Project-ID", &self.project)
            .header("Accept", "application/json");
        if let Some(roles) = &self.roles {
            req = req.header("X-Roles", roles);
        }
        if let Some(b) = body {
            req = req.header("Content-Type", media).body(b.to_string().into_bytes());
        }
        zaqar_local::server::dispatch(&self.app, req).await
    }

    /// Sends and checks the status; a benchmark that counts failed requests as fast ones would lie.
    pub async fn expect(&self, method: Method, path: &str, body: Option<&Value>, ok: &[u16]) -> ApiResponse {
        let resp = self.send(method.clone(), path, body).await;
        let status = resp.status.as_u16();
        assert!(ok.contains(&status), "{method} {path}: status {status}, body {}", String::from_utf8_lossy(&resp.body));
        resp
    }

    /// Sends, checks, and returns the wall time of the handler call.
    pub async fn timed(&self, method: Method, path: &str, body: Option<&Value>, ok: &[u16]) -> (ApiResponse, Duration) {
        let t = Instant::now();
        let resp = self.expect(method, path, body, ok).await;
        (resp, t.elapsed())
    }
}

/// A message body of about 250 bytes, like the cost report's.
pub fn body(i: usize) -> Value {
    serde_json::json!({"event": "bench", "i": i, "pad": "x".repeat(200)})
}

/// `{"messages": [...]}` with `n` messages of the given ttl.
pub fn post_doc(n: usize, ttl: i64) -> Value {
    let messages: Vec<Value> = (0..n).map(|i| serde_json::json!({"ttl": ttl, "body": body(i)})).collect();
    serde_json::json!({ "messages": messages })
}

/// The path and query of every href in a response's `messages` (claims, pops) or `resources` (posts).
pub fn hrefs(resp: &ApiResponse) -> Vec<String> {
    let v = resp.json_body();
    if let Some(ms) = v["messages"].as_array() {
        return ms.iter().filter_map(|m| m["href"].as_str().map(str::to_string)).collect();
    }
    v["resources"]
        .as_array()
        .map(|r| r.iter().filter_map(|h| h.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// The message id at the end of an href (`.../messages/{id}?claim_id=...`).
pub fn id_of(href: &str) -> String {
    href.split('?').next().unwrap_or(href).rsplit('/').next().unwrap_or_default().to_string()
}
