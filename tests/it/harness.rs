//! Test harness: the real handlers over DynamoDB Local (started by `localstack/dynamodb`), a manual
//! clock so time-dependent rules run without sleeping, and a fresh project per test for isolation.

use http::Method;
use serde_json::Value;
use zaqar::clock::Clock;
use zaqar::config::Config;
use zaqar::{ApiRequest, ApiResponse, App};

pub const CLIENT: &str = "3381af92-2b9e-11e3-b191-71861300734c";
pub const OTHER_CLIENT: &str = "e7c06f30-9c7b-4a7c-8c3e-5d5c9d5b2f11";

/// An app wired to DynamoDB Local (`ZAQAR_TEST_ENDPOINT`, default http://127.0.0.1:8000).
pub async fn app_with(config: Config) -> App {
    let endpoint = std::env::var("ZAQAR_TEST_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:8000".into());
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("local", "local", None, None, "tests"))
        .load()
        .await;
    let app = App::new(config, zaqar::app::dynamodb_client(&sdk), Clock::manual());
    app.store.ensure_table().await.expect("DynamoDB Local must be running (localstack/dynamodb start)");
    app
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
pub async fn call(app: &App, req: ApiRequest) -> ApiResponse {
    zaqar_local::server::dispatch(app, req).await
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
