//! The authorizer against a real Keystone. Needs one (`tests/keystone` starts it and runs these with
//! `--ignored`): `ZAQAR_KEYSTONE_URL`, the service user (`ZAQAR_KEYSTONE_SERVICE_USER`/`_PASSWORD`)
//! and an admin (`OS_USERNAME`/`OS_PASSWORD`/`OS_PROJECT_NAME`, Default domain).

use aws_lambda_events::apigw::ApiGatewayV2CustomAuthorizerV2Request;
use std::time::Duration;
use zaqar::keystone::{Keystone, KeystoneSettings, ServiceCredentials, Verdict};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} must be set (run tests/keystone)"))
}

fn settings(cache_seconds: u64, service: Option<ServiceCredentials>) -> KeystoneSettings {
    let mut s = KeystoneSettings::from_env().unwrap().expect("ZAQAR_KEYSTONE_URL must be set (run tests/keystone)");
    s.cache_seconds = cache_seconds;
    s.service = service;
    s.timeout = Duration::from_secs(5);
    s
}

fn service_user() -> ServiceCredentials {
    ServiceCredentials {
        username: env("ZAQAR_KEYSTONE_SERVICE_USER"),
        password: env("ZAQAR_KEYSTONE_SERVICE_PASSWORD"),
        project: "service".into(),
        domain: "Default".into(),
    }
}

/// A fresh project-scoped admin token.
async fn admin_token() -> String {
    let body = serde_json::json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": env("OS_USERNAME"), "password": env("OS_PASSWORD"), "domain": {"id": "default"}}}},
        "scope": {"project": {"name": env("OS_PROJECT_NAME"), "domain": {"id": "default"}}}}});
    let url = format!("{}/auth/tokens", settings(0, None).url);
    let resp = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    resp.headers()["x-subject-token"].to_str().unwrap().to_string()
}

async fn revoke(token: &str) {
    let url = format!("{}/auth/tokens", settings(0, None).url);
    let resp = reqwest::Client::new()
        .delete(url)
        .header("X-Auth-Token", admin_token().await)
        .header("X-Subject-Token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
}

fn request(token: &str) -> ApiGatewayV2CustomAuthorizerV2Request {
    let mut e: ApiGatewayV2CustomAuthorizerV2Request =
        serde_json::from_str(include_str!("../events/http-v2-authorizer-request.json")).unwrap();
    e.headers.insert("x-auth-token", token.parse().unwrap());
    e
}

#[tokio::test]
#[ignore = "needs a running Keystone: tests/keystone"]
async fn valid_tokens_carry_project_and_roles_both_ways() {
    let token = admin_token().await;
    for service in [Some(service_user()), None] {
        let k = Keystone::new(settings(60, service));
        let ctx = zaqar_authorizer::authorize(&k, &request(&token)).await.context;
        assert_eq!(ctx["keystone"], "valid");
        assert!(!ctx["project_id"].is_empty());
        assert!(ctx["roles"].split(',').any(|r| r == "admin"), "{ctx:?}");
    }
}

#[tokio::test]
#[ignore = "needs a running Keystone: tests/keystone"]
async fn bad_and_revoked_tokens_are_invalid() {
    let k = Keystone::new(settings(0, Some(service_user())));
    assert_eq!(k.validate("gAAAAABnot-a-token").await, Verdict::Invalid);
    let token = admin_token().await;
    assert!(matches!(k.validate(&token).await, Verdict::Valid(_)));
    revoke(&token).await;
    assert_eq!(k.validate(&token).await, Verdict::Invalid, "no cache: revocation is seen at once");
}

#[tokio::test]
#[ignore = "needs a running Keystone: tests/keystone"]
async fn refused_service_credentials_are_an_outage_not_a_bad_token() {
    let mut wrong = service_user();
    wrong.password.push('x');
    let k = Keystone::new(settings(60, Some(wrong)));
    assert_eq!(k.validate(&admin_token().await).await, Verdict::Unavailable);
}
