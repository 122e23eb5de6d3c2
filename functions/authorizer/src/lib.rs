//! API Gateway HTTP API authorizer (REQUEST type, payload 2.0, simple responses) for keystone mode.
//!
//! It validates `X-Auth-Token` with the shared Keystone client (cache included: one warm authorizer
//! serves every route, so its cache sees every request) and puts the verdict into the response
//! `context`, which API Gateway hands to the functions as `requestContext.authorizer.lambda`.
//!
//! It lets every request through (`isAuthorized: true`) and leaves the refusal to the functions, on
//! purpose: API Gateway would answer a refused request with `403 {"message":"Forbidden"}`, while Zaqar
//! clients expect keystonemiddleware's 401 (keystoneauth signs in again on a 401, not on a 403). The
//! functions' transport answers that 401 for any request whose verdict is not valid, and validates the
//! token itself when a request arrives without a verdict, so nothing passes unchecked.
//!
//! Requests for `/` and pre-signed requests get no verdict: Zaqar lets them in without a token (the
//! functions check the signature).

use aws_lambda_events::apigw::ApiGatewayV2CustomAuthorizerV2Request;
use serde::Serialize;
use std::collections::HashMap;
use zaqar::keystone::{needs_token, Keystone, KeystoneSettings, Verdict};

/// The simple response of payload format 2.0.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub is_authorized: bool,
    pub context: HashMap<String, String>,
}

pub async fn authorize(keystone: &Keystone, event: &ApiGatewayV2CustomAuthorizerV2Request) -> Response {
    let path = event.raw_path.as_deref().unwrap_or("/");
    if !needs_token(path, &event.headers) {
        return Response { is_authorized: true, context: HashMap::new() };
    }
    let verdict = match event.headers.get("x-auth-token").and_then(|v| v.to_str().ok()) {
        Some(token) => keystone.validate(token).await,
        None => Verdict::Invalid,
    };
    Response { is_authorized: true, context: verdict.to_context() }
}

/// The Keystone client from `ZAQAR_KEYSTONE_*`, the service user's password from Secrets Manager
/// (`ZAQAR_KEYSTONE_SERVICE_PASSWORD_ARN`). A missing URL or an unreadable secret stops the cold start.
pub async fn keystone_from_env() -> Keystone {
    use zaqar::app::refuse_to_start;
    let settings = KeystoneSettings::from_env()
        .unwrap_or_else(|e| refuse_to_start(&e.to_string()))
        .unwrap_or_else(|| refuse_to_start("ZAQAR_KEYSTONE_URL is not set"));
    let sdk = zaqar::app::sdk_config().unwrap_or_else(|e| refuse_to_start(&e.to_string()));
    let settings = settings.with_secret(&sdk).await.unwrap_or_else(|e| refuse_to_start(&e));
    if settings.service.is_none() {
        tracing::warn!("no service credentials: tokens validate themselves");
    }
    Keystone::new(settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const EVENT: &str = include_str!("../events/http-v2-authorizer-request.json");

    fn event(path: &str, headers: &[(&str, &str)]) -> ApiGatewayV2CustomAuthorizerV2Request {
        let mut e: ApiGatewayV2CustomAuthorizerV2Request = serde_json::from_str(EVENT).unwrap();
        e.raw_path = Some(path.into());
        e.headers.clear();
        for (k, v) in headers {
            e.headers.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        e
    }

    fn unreachable_keystone() -> Keystone {
        Keystone::new(KeystoneSettings {
            url: "http://127.0.0.1:9/v3".into(),
            service: None,
            cache_seconds: 60,
            timeout: Duration::from_millis(300),
        })
    }

    #[test]
    fn the_sample_event_is_what_api_gateway_sends() {
        let e: ApiGatewayV2CustomAuthorizerV2Request = serde_json::from_str(EVENT).unwrap();
        assert_eq!(e.raw_path.as_deref(), Some("/v2/queues/demo/messages"));
        assert!(e.headers.contains_key("x-auth-token"));
    }

    #[tokio::test]
    async fn verdicts_for_what_the_functions_must_refuse() {
        let k = unreachable_keystone();
        let no_token = authorize(&k, &event("/v2/queues", &[])).await;
        assert_eq!(no_token.context.get("keystone").map(String::as_str), Some("invalid"));
        let down = authorize(&k, &event("/v2/queues", &[("x-auth-token", "t")])).await;
        assert_eq!(down.context.get("keystone").map(String::as_str), Some("unavailable"));
        assert!(no_token.is_authorized && down.is_authorized, "the functions answer 401/503 themselves");
    }

    #[tokio::test]
    async fn root_and_signed_requests_get_no_verdict() {
        let k = unreachable_keystone();
        assert!(authorize(&k, &event("/", &[])).await.context.is_empty());
        let signed = event("/v2/queues/q/messages", &[("url-signature", "abc")]);
        assert!(authorize(&k, &signed).await.context.is_empty());
    }

    #[test]
    fn response_is_the_simple_format() {
        let r = Response { is_authorized: true, context: [("keystone".to_string(), "invalid".to_string())].into() };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"isAuthorized": true, "context": {"keystone": "invalid"}})
        );
    }
}
