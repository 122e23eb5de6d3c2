//! Keystone mode on AWS: HTTP API events carrying the Lambda authorizer's verdict
//! (`requestContext.authorizer.lambda`) through the real handlers against DynamoDB Local. The project and
//! roles come from the verdict only; a missing or refused verdict is keystonemiddleware's 401, an
//! unreachable Keystone a 503. (Against a real Keystone: `tests/keystone`.)

use harness::*;
use http::{HeaderValue, StatusCode};
use serde_json::{json, Value};
use zaqar::config::{AuthMode, Config};
use zaqar::keystone::KeystoneSettings;
use zaqar::{ApiRequest, ApiResponse, App};

const FIXTURE: &str = include_str!("../fixtures/apigw/http-v2-keystone-put-queue.json");

async fn keystone_app() -> App {
    let mut config = Config::for_tests("zaqar-tests");
    config.auth_mode = AuthMode::Keystone;
    // Nothing listens there: every verdict below must come from the event, never from a Keystone call,
    // except where a test says otherwise.
    config.keystone = Some(KeystoneSettings {
        url: "http://127.0.0.1:9/v3".into(),
        service: None,
        cache_seconds: 60,
        timeout: std::time::Duration::from_millis(300),
    });
    app_with(config).await
}

/// The fixture with its authorizer context replaced (`None`: no authorizer ran) and a path.
fn event(context: Option<Value>, method: &str, path: &str) -> ApiRequest {
    let mut ev: Value = serde_json::from_str(FIXTURE).unwrap();
    match context {
        Some(c) => ev["requestContext"]["authorizer"]["lambda"] = c,
        None => {
            ev["requestContext"].as_object_mut().unwrap().remove("authorizer");
        }
    }
    ev["rawPath"] = json!(path);
    ev["requestContext"]["http"]["path"] = json!(path);
    ev["requestContext"]["http"]["method"] = json!(method);
    let req = lambda_http::request::from_str(&ev.to_string()).unwrap();
    ApiRequest::from_lambda(req)
}

fn valid(project: &str, roles: &str) -> Value {
    json!({"keystone": "valid", "user_id": "u1", "project_id": project, "roles": roles, "expires_at": "4102444800"})
}

async fn send(app: &App, req: ApiRequest) -> ApiResponse {
    call(app, req).await
}

#[tokio::test]
async fn the_verdict_decides_the_project() {
    let app = keystone_app().await;
    let (a, b) = (project(), project());
    let put = send(&app, event(Some(valid(&a, "member")), "PUT", "/v2/queues/ksq")).await;
    assert_eq!(put.status, StatusCode::CREATED, "{:?}", put.json_body());
    let names = |resp: ApiResponse| -> Vec<String> {
        resp.json_body()["queues"].as_array().map_or(vec![], |qs| qs.iter().map(|q| q["name"].to_string()).collect())
    };
    assert_eq!(names(send(&app, event(Some(valid(&a, "member")), "GET", "/v2/queues")).await), ["\"ksq\""]);
    assert!(names(send(&app, event(Some(valid(&b, "member")), "GET", "/v2/queues")).await).is_empty());
    // A header naming another project is refused, not obeyed.
    let mut other = event(Some(valid(&b, "member")), "GET", "/v2/queues");
    other.headers.insert("x-project-id", HeaderValue::from_str(&a).unwrap());
    let resp = send(&app, other).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN);
    assert_eq!(resp.json_body()["title"], "Not authorized");
}

#[tokio::test]
async fn admin_api_follows_the_tokens_roles() {
    let app = keystone_app().await;
    let p = project();
    let mut member = event(Some(valid(&p, "member,reader")), "GET", "/v2/pools");
    member.headers.insert("x-roles", HeaderValue::from_static("admin"));
    assert_eq!(send(&app, member).await.status, StatusCode::FORBIDDEN);
    assert_eq!(send(&app, event(Some(valid(&p, "member,admin")), "GET", "/v2/pools")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn refusals_are_keystonemiddlewares() {
    let app = keystone_app().await;
    for (context, status) in [
        (Some(json!({"keystone": "invalid"})), StatusCode::UNAUTHORIZED),
        (Some(json!({"keystone": "unavailable"})), StatusCode::SERVICE_UNAVAILABLE),
        // No authorizer ran: the function asks Keystone itself, which is unreachable here.
        (None, StatusCode::SERVICE_UNAVAILABLE),
    ] {
        let resp = send(&app, event(context.clone(), "GET", "/v2/queues")).await;
        assert_eq!(resp.status, status, "{context:?}");
    }
    let mut no_token = event(None, "GET", "/v2/queues");
    no_token.headers.remove("x-auth-token");
    let resp = send(&app, no_token).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(resp.header_value("www-authenticate"), Some("Keystone uri=\"http://127.0.0.1:9/v3\""));
    assert_eq!(resp.json_body()["error"]["code"], 401);
    // Version discovery needs no token.
    assert_eq!(send(&app, event(None, "GET", "/")).await.status, StatusCode::MULTIPLE_CHOICES);
}
