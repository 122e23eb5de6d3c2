//! Zaqar's request hooks (docs/api.md#transport-hooks), in its order, and the final touches on every response.
//!
//! Order matters for which error wins: route (404) → pre-signed URL check → form-encoding refusal →
//! Accept → Client-ID → project → queue name and project length → method (405/OPTIONS) → handler.
//! In keystone mode the token is checked before all of them ([`authenticate`]), where Zaqar's
//! keystonemiddleware sits: a request without a valid token gets 401 whatever its path.

use crate::app::App;
use crate::config::AuthMode;
use crate::error::ApiError;
use crate::http::{ApiRequest, ApiResponse, Caller};
use crate::keystone::{self, Identity, Verdict};
use crate::query::Query;
use crate::route::{route, Group, Resource, Route};
use crate::signing::{self, SignedScope};
use crate::types::{ClientId, ProjectId, QueueName};
use http::{Method, StatusCode};
use tracing::Instrument;

/// A request that passed the transport hooks.
#[derive(Debug, Clone)]
pub struct Context {
    pub route: Route,
    pub method: Method,
    pub project: ProjectId,
    pub client_id: ClientId,
    pub roles: Vec<String>,
    pub queue: Option<QueueName>,
    pub query: Query,
}

impl Context {
    /// The route's queue (present on every queue-scoped resource, validated by the hooks).
    pub fn queue(&self) -> Result<&QueueName, ApiError> {
        self.queue.as_ref().ok_or_else(ApiError::no_route)
    }

    pub fn id(&self) -> &str {
        self.route.id.as_deref().unwrap_or("")
    }

    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r.eq_ignore_ascii_case("admin"))
    }

    /// Policy check for admin-only operations (docs/api.md#transport-auth).
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        }
    }
}

/// What the hooks decided: run the handler, or answer right away.
enum Prepared {
    Handle(Context),
    /// `GET /` needs no Client-ID or project.
    Versions,
    Respond(ApiResponse),
}

/// Runs the hooks for a request meant for `group`'s function.
fn prepare(app: &App, req: &ApiRequest, group: Group) -> Result<Prepared, ApiError> {
    let route = route(&req.path).filter(|r| mounted(app, r.resource)).ok_or_else(ApiError::no_route)?;
    if route.resource.group() != group {
        return Err(ApiError::no_route());
    }
    if let Some(signature) = req.header_str("url-signature") {
        check_signature(app, req, signature)?;
    } else if req.headers.contains_key("url-signature") {
        return Err(ApiError::no_route());
    }
    if req.has_content_length {
        if let Some(ct) = req.header_str("content-type") {
            let media = ct.split(';').next().unwrap_or("").trim();
            if media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "Invalid Content-Type",
                    "Endpoint does not accept `application/x-www-form-urlencoded` content; currently supported media type is `application/json`; specify proper client-side media type with the \"Content-Type\" header.",
                ));
            }
        }
    }
    if !accepts_json(req.header_str("accept")) {
        return Err(ApiError::not_acceptable());
    }
    if route.resource == Resource::Versions {
        return method_check(route.resource, &req.method).map(|r| r.map_or(Prepared::Versions, Prepared::Respond));
    }
    let client_id = match req.header_str("client-id") {
        Some(v) => ClientId::parse(v)?,
        None => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "Missing header value",
                "The \"Client-Id\" header is required.",
            ))
        }
    };
    let (project, roles) = identify(app, req)?;
    tracing::Span::current().record("project", tracing::field::display(project.as_str()));
    let queue = match &route.queue {
        Some(name) if route.resource.has_queue() => {
            project.check_length()?;
            Some(QueueName::parse(name)?)
        }
        _ => None,
    };
    if let Some(resp) = method_check(route.resource, &req.method)? {
        return Ok(Prepared::Respond(resp));
    }
    Ok(Prepared::Handle(Context {
        route,
        method: req.method.clone(),
        project,
        client_id,
        roles,
        queue,
        query: Query::parse(&req.query),
    }))
}

/// The caller's project and roles, by auth mode (docs/api.md#transport-headers, #transport-auth). A verified pre-signed
/// request is vouched for by its signature (which covers the project header), as in Zaqar.
fn identify(app: &App, req: &ApiRequest) -> Result<(ProjectId, Vec<String>), ApiError> {
    let split = |text: &str| -> Vec<String> {
        text.split([',', ' ']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
    };
    let header_project = ["x-project-id", "x-tenant-id", "x-tenant"].iter().find_map(|h| req.header_str(h));
    let signed = req.headers.contains_key("url-signature");
    if signed || app.config.auth_mode == AuthMode::None {
        let project = match header_project {
            Some(p) => ProjectId::parse(p)?,
            None => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "Project-Id Missing",
                    "The header X-PROJECT-ID was missing",
                ))
            }
        };
        // Roles from headers are trusted only without an authorizer (Zaqar's noauth).
        let roles = if app.config.auth_mode == AuthMode::None {
            req.header_str("x-roles").map(split).unwrap_or_default()
        } else {
            vec![]
        };
        return Ok((project, roles));
    }
    match (&app.config.auth_mode, &req.caller) {
        (AuthMode::Jwt, Caller::Jwt { claims }) => {
            let project = claims.get(&app.config.project_claim).ok_or_else(ApiError::forbidden)?;
            let roles =
                claims.get(&app.config.roles_claim).map(|r| split(r.trim_matches(['[', ']']))).unwrap_or_default();
            Ok((ProjectId::parse(project)?, roles))
        }
        (AuthMode::Keystone, Caller::Keystone(Verdict::Valid(identity))) => keystone_identity(identity, header_project),
        (AuthMode::Iam, Caller::Iam { account_id: Some(account), user_arn }) => {
            let admin = user_arn.as_ref().is_some_and(|arn| app.config.admin_principals.contains(arn));
            Ok((ProjectId::parse(account)?, if admin { vec!["admin".into()] } else { vec![] }))
        }
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "This server could not verify that you are authorized to access the document you requested.",
        )),
    }
}

/// The token's project and roles. keystonemiddleware overwrites `X-Project-Id` with the token's project;
/// we refuse a different one instead, so a client that means another project learns it.
fn keystone_identity(identity: &Identity, header_project: Option<&str>) -> Result<(ProjectId, Vec<String>), ApiError> {
    let Some(project) = identity.project_id.as_deref() else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Not authorized",
            "The token is not scoped to a project; ask Keystone for a project-scoped token.",
        ));
    };
    if header_project.is_some_and(|h| h != project) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Not authorized",
            "The X-Project-ID header names a project other than the token's.",
        ));
    }
    Ok((ProjectId::parse(project)?, identity.roles.clone()))
}

/// Keystone mode: the token check keystonemiddleware does in front of Zaqar. A verdict the Lambda
/// authorizer already reached (on AWS) is used as it is; otherwise the token is validated here.
/// Afterwards the request's caller holds the valid identity for [`identify`].
async fn authenticate(app: &App, req: &mut ApiRequest) -> Result<(), ApiError> {
    if app.config.auth_mode != AuthMode::Keystone || !keystone::needs_token(&req.path, &req.headers) {
        return Ok(());
    }
    let verdict = match (&req.caller, &app.keystone, req.header_str("x-auth-token")) {
        (Caller::Keystone(v), _, _) => v.clone(),
        (_, _, None) => Verdict::Invalid,
        (_, Some(k), Some(token)) => k.validate(token).await,
        (_, None, Some(_)) => Verdict::Unavailable,
    };
    match verdict {
        Verdict::Valid(_) => {
            req.caller = Caller::Keystone(verdict);
            Ok(())
        }
        Verdict::Invalid => {
            let uri = app.config.keystone.as_ref().map_or("", |k| k.www_authenticate_uri());
            Err(ApiError::unauthenticated(uri))
        }
        Verdict::Unavailable => Err(ApiError::unavailable("The Keystone service is temporarily unavailable.")),
    }
}

/// Private routes exist only when the operator mounts them (docs/api.md#transport-routes).
fn mounted(app: &App, resource: Resource) -> bool {
    match resource {
        Resource::Health => app.config.admin_mode,
        Resource::PoolList | Resource::Pool | Resource::FlavorList | Resource::Flavor => {
            app.config.admin_mode && app.config.pooling
        }
        _ => true,
    }
}

/// 405 with `Allow`, or 200 with `Allow` for OPTIONS; `None` lets the handler run.
fn method_check(resource: Resource, method: &Method) -> Result<Option<ApiResponse>, ApiError> {
    if resource.allows(method) {
        return Ok(None);
    }
    if method == Method::OPTIONS {
        return Ok(Some(ApiResponse::empty(StatusCode::OK).with_header("allow", resource.allow_header())));
    }
    Err(ApiError::method_not_allowed(&resource.allow_header()))
}

/// Whether an `Accept` header admits `application/json` (absent means anything).
fn accepts_json(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return true };
    if accept.trim().is_empty() {
        return true;
    }
    accept.split(',').any(|range| {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q_zero = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok()).is_some_and(|q| q <= 0.0)
        });
        !q_zero && matches!(media.as_str(), "*/*" | "application/*" | "application/json")
    })
}

/// Pre-signed request check (docs/api.md#presigned-use): method, path, signature, expiry. Any failure is a bare 404.
fn check_signature(app: &App, req: &ApiRequest, signature: &str) -> Result<(), ApiError> {
    let key = app.config.secret_key.as_deref().ok_or_else(ApiError::no_route)?;
    let list = |name: &str| -> Vec<String> {
        req.header_str(name).unwrap_or("").split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
    };
    let methods = list("url-methods");
    let paths = list("url-paths");
    let project = req.header_str("x-project-id").unwrap_or("").to_string();
    let expires = req.header_str("url-expires").unwrap_or("");
    let expires_at = signing::parse_instant(expires).ok_or_else(ApiError::no_route)?;
    let now_s = app.store.now_ms() / 1000;
    let ok = !signature.is_empty()
        && methods.iter().any(|m| m == req.method.as_str())
        && paths.iter().any(|p| req.path.contains(p.as_str()))
        && expires_at > now_s
        && expires_at <= now_s.saturating_add(app.config.max_signed_url_seconds)
        && SignedScope { paths, methods, project, expires: signing::format_expires(expires_at) }
            .normalised()
            .verify(key, signature);
    if ok {
        Ok(())
    } else {
        Err(ApiError::no_route())
    }
}

/// The one entry point of every resource-group function: the token check (keystone mode), the hooks for
/// `group`, then `dispatch` for requests that reach a handler, then the common response headers.
///
/// Each request runs in a `request` span carrying its `x-openstack-request-id`, method, route
/// template, project (once known) and status, so every log line of the request, including the
/// storage layer's, can be found from the id a client reports.
pub async fn serve<F, Fut>(app: &App, mut req: ApiRequest, group: Group, dispatch: F) -> ApiResponse
where
    F: FnOnce(Context, ApiRequest) -> Fut,
    Fut: std::future::Future<Output = Result<ApiResponse, ApiError>>,
{
    let request_id = format!("req-{}", uuid::Uuid::new_v4());
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method,
        path = %req.path,
        route = tracing::field::Empty,
        project = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    if let Some(r) = route(&req.path) {
        span.record("route", tracing::field::display(r.resource.template()));
    }
    let handled = async {
        authenticate(app, &mut req).await?;
        match prepare(app, &req, group) {
            Ok(Prepared::Handle(ctx)) => dispatch(ctx, req).await,
            Ok(Prepared::Versions) => Ok(versions()),
            Ok(Prepared::Respond(resp)) => Ok(resp),
            Err(e) => Err(e),
        }
    };
    let started = std::time::Instant::now();
    let result = handled.instrument(span.clone()).await;
    let _entered = span.enter();
    let resp = respond(result, request_id);
    // The access log: one line per request, inside the span (the query string stays out of it: it may
    // carry values that do not belong in logs).
    tracing::info!(status = resp.status.as_u16(), latency = ?started.elapsed(), "served");
    resp
}

/// The response for a request refused before it could be routed (an unreadable or oversized body at
/// the local server), with the same headers and log line as any other.
pub fn refused(e: ApiError) -> ApiResponse {
    let request_id = format!("req-{}", uuid::Uuid::new_v4());
    let span = tracing::info_span!("request", request_id = %request_id, status = tracing::field::Empty);
    let _entered = span.enter();
    let resp = respond(Err(e), request_id);
    tracing::info!(status = resp.status.as_u16(), "served");
    resp
}
/// Version discovery, `GET /` (docs/api.md#versions): needs no Client-ID or project.
fn versions() -> ApiResponse {
    let body = serde_json::json!({"versions": [{
        "id": "2", "status": "CURRENT", "updated": "2014-9-24T04:06:47Z",
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.messaging-v2+json"}],
        "links": [{"href": "/v2/", "rel": "self"}]
    }]});
    ApiResponse::json(StatusCode::MULTIPLE_CHOICES, &body)
}

/// The response for a handler's result, with the headers every Zaqar response carries; logs the
/// outcome (a warning for 5xx) inside the request's span.
fn respond(result: Result<ApiResponse, ApiError>, request_id: String) -> ApiResponse {
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            if e.status.is_server_error() {
                tracing::warn!(status = e.status.as_u16(), title = %e.title, "request failed");
            }
            ApiResponse::from_error(&e)
        }
    };
    // falcon gives every response that may have a body its default media type, even when the body is
    // empty (201 on create, 406, 503 on ping); only 204 and 304 go without.
    let bodiless = matches!(resp.status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    if !bodiless && resp.header_value("content-type").is_none() {
        resp.headers.push(("content-type".into(), "application/json".into()));
    }
    resp.headers.push(("x-openstack-request-id".into(), request_id));
    tracing::Span::current().record("status", resp.status.as_u16());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app_with(mode: AuthMode) -> App {
        let conf = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .build();
        let mut config = crate::config::Config::for_tests("unit");
        config.auth_mode = mode;
        config.admin_principals = vec!["arn:aws:iam::1:user/ops".into()];
        App::new(config, aws_sdk_dynamodb::Client::from_conf(conf), crate::clock::Clock::System)
    }

    fn base() -> ApiRequest {
        ApiRequest::new(Method::GET, "/v2/queues").header("X-Project-ID", "from-header").header("X-Roles", "admin")
    }

    #[test]
    fn noauth_trusts_headers() {
        let (p, roles) = identify(&app_with(AuthMode::None), &base()).unwrap();
        assert_eq!((p.as_str(), roles), ("from-header", vec!["admin".to_string()]));
        let missing = identify(&app_with(AuthMode::None), &ApiRequest::new(Method::GET, "/v2/queues")).unwrap_err();
        assert_eq!(missing.title, "Project-Id Missing");
    }

    #[test]
    fn jwt_claims_override_headers() {
        let app = app_with(AuthMode::Jwt);
        let mut req = base();
        req.caller = Caller::Jwt {
            claims: [("project_id".to_string(), "tenant-a".to_string()), ("roles".into(), "[reader admin]".into())]
                .into(),
        };
        let (p, roles) = identify(&app, &req).unwrap();
        assert_eq!((p.as_str(), roles), ("tenant-a", vec!["reader".to_string(), "admin".to_string()]));
        req.caller = Caller::Jwt { claims: Default::default() };
        assert_eq!(identify(&app, &req).unwrap_err().status, StatusCode::FORBIDDEN);
        assert_eq!(identify(&app, &base()).unwrap_err().status, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn iam_project_is_the_account_and_header_roles_are_ignored() {
        let app = app_with(AuthMode::Iam);
        let mut req = base();
        req.caller = Caller::Iam { account_id: Some("123".into()), user_arn: Some("arn:aws:iam::1:user/dev".into()) };
        let (p, roles) = identify(&app, &req).unwrap();
        assert_eq!((p.as_str(), roles.len()), ("123", 0));
        req.caller = Caller::Iam { account_id: Some("1".into()), user_arn: Some("arn:aws:iam::1:user/ops".into()) };
        assert_eq!(identify(&app, &req).unwrap().1, vec!["admin".to_string()]);
    }

    fn keystone_app() -> App {
        let mut app = app_with(AuthMode::Keystone);
        let mut config = (*app.config).clone();
        config.keystone = Some(crate::keystone::KeystoneSettings {
            url: "http://127.0.0.1:9/v3".into(),
            service: None,
            cache_seconds: 60,
            timeout: std::time::Duration::from_millis(200),
        });
        app.config = std::sync::Arc::new(config);
        app
    }

    fn token_of(project: Option<&str>, roles: &[&str]) -> Caller {
        Caller::Keystone(Verdict::Valid(Identity {
            user_id: "u".into(),
            project_id: project.map(str::to_string),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            expires_at: i64::MAX / 2000,
        }))
    }

    #[test]
    fn keystone_project_and_roles_come_from_the_token() {
        let app = keystone_app();
        let mut req = ApiRequest::new(Method::GET, "/v2/queues").header("X-Roles", "admin");
        req.caller = token_of(Some("p1"), &["member"]);
        let (p, roles) = identify(&app, &req).unwrap();
        assert_eq!((p.as_str(), roles), ("p1", vec!["member".to_string()]));
        let mut same = req.clone().header("X-Project-ID", "p1");
        same.caller = token_of(Some("p1"), &["admin"]);
        assert_eq!(identify(&app, &same).unwrap().1, vec!["admin".to_string()]);
        let mut other = req.clone().header("X-Project-ID", "p2");
        other.caller = token_of(Some("p1"), &[]);
        assert_eq!(identify(&app, &other).unwrap_err().status, StatusCode::FORBIDDEN);
        let mut unscoped = req.clone();
        unscoped.caller = token_of(None, &[]);
        assert_eq!(identify(&app, &unscoped).unwrap_err().status, StatusCode::FORBIDDEN);
        assert_eq!(identify(&app, &base()).unwrap_err().status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn keystone_rejections_look_like_keystonemiddleware() {
        let app = keystone_app();
        let resp = serve(&app, ApiRequest::new(Method::GET, "/v2/nowhere"), Group::Health, |_, _| async {
            Ok(ApiResponse::empty(StatusCode::NO_CONTENT))
        })
        .await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "the token is checked before routing");
        assert_eq!(resp.header_value("www-authenticate"), Some("Keystone uri=\"http://127.0.0.1:9/v3\""));
        assert_eq!(
            resp.json_body(),
            serde_json::json!({"error": {"code": 401, "title": "Unauthorized",
                "message": "The request you have made requires authentication."}})
        );
        // The authorizer's verdicts on AWS.
        for (verdict, status) in
            [(Verdict::Invalid, StatusCode::UNAUTHORIZED), (Verdict::Unavailable, StatusCode::SERVICE_UNAVAILABLE)]
        {
            let mut req = ApiRequest::new(Method::GET, "/v2/queues").header("X-Auth-Token", "t");
            req.caller = Caller::Keystone(verdict);
            assert_eq!(authenticate(&app, &mut req).await.unwrap_err().status, status);
        }
        // Keystone unreachable: 503, not 401 (the client's token may well be valid).
        let mut req = ApiRequest::new(Method::GET, "/v2/queues").header("X-Auth-Token", "t");
        assert_eq!(authenticate(&app, &mut req).await.unwrap_err().status, StatusCode::SERVICE_UNAVAILABLE);
        // `/` and pre-signed requests pass without a token.
        assert!(authenticate(&app, &mut ApiRequest::new(Method::GET, "/")).await.is_ok());
        let mut signed = ApiRequest::new(Method::GET, "/v2/queues/q/messages").header("URL-Signature", "x");
        assert!(authenticate(&app, &mut signed).await.is_ok());
        let mut valid = ApiRequest::new(Method::GET, "/v2/queues");
        valid.caller = token_of(Some("p"), &[]);
        assert!(authenticate(&app, &mut valid).await.is_ok());
        // Other modes never look at tokens.
        assert!(authenticate(&app_with(AuthMode::None), &mut ApiRequest::new(Method::GET, "/v2/queues")).await.is_ok());
    }

    #[test]
    fn accept_rules() {
        assert!(accepts_json(None));
        assert!(accepts_json(Some("*/*")));
        assert!(accepts_json(Some("application/json; charset=utf-8")));
        assert!(accepts_json(Some("text/html, application/*;q=0.5")));
        assert!(!accepts_json(Some("text/html")));
        assert!(!accepts_json(Some("application/json-home")));
        assert!(!accepts_json(Some("application/json;q=0")));
    }
}
