//! Zaqar's request hooks (§1.2), in its order, and the final touches on every response.
//!
//! Order matters for which error wins: route (404) → pre-signed URL check → form-encoding refusal →
//! Accept → Client-ID → project → queue name and project length → method (405/OPTIONS) → handler.

use crate::app::App;
use crate::error::ApiError;
use crate::http::{ApiRequest, ApiResponse};
use crate::query::Query;
use crate::route::{route, Group, Resource, Route};
use crate::signing::{self, SignedScope};
use crate::types::{ClientId, ProjectId, QueueName};
use http::{Method, StatusCode};

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

    /// Policy check for admin-only operations (§1.4).
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() { Ok(()) } else { Err(ApiError::forbidden()) }
    }
}

/// What the hooks decided: run the handler, or answer right away.
pub enum Prepared {
    Handle(Context),
    /// `GET /` needs no Client-ID or project.
    Versions,
    Respond(ApiResponse),
}

/// Runs the hooks for a request meant for `group`'s function.
pub fn prepare(app: &App, req: &ApiRequest, group: Group) -> Result<Prepared, ApiError> {
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
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "Missing header value", "The \"Client-Id\" header is required."))
        }
    };
    let project = ["x-project-id", "x-tenant-id", "x-tenant"].iter().find_map(|h| req.header_str(h));
    let project = match project {
        Some(p) => ProjectId::parse(p)?,
        None => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "Project-Id Missing", "The header X-PROJECT-ID was missing"))
        }
    };
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
    let roles = req
        .header_str("x-roles")
        .map(|r| r.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
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

/// Private routes exist only when the operator mounts them (§1.1).
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

/// Pre-signed request check (§10.3): method, path, signature, expiry. Any failure is a bare 404.
fn check_signature(app: &App, req: &ApiRequest, signature: &str) -> Result<(), ApiError> {
    let key = app.config.secret_key.as_deref().ok_or_else(ApiError::no_route)?;
    let list = |name: &str| -> Vec<String> {
        req.header_str(name)
            .unwrap_or("")
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
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
        && expires_at <= now_s + app.config.max_signed_url_seconds
        && SignedScope { paths, methods, project, expires: signing::format_expires(expires_at) }
            .normalised()
            .verify(key, signature);
    if ok { Ok(()) } else { Err(ApiError::no_route()) }
}

/// The response for a handler's result, with the headers every Zaqar response carries.
pub fn respond(result: Result<ApiResponse, ApiError>) -> ApiResponse {
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            if e.status.is_server_error() {
                tracing::warn!(status = e.status.as_u16(), title = %e.title, "request failed");
            }
            ApiResponse::from_error(&e)
        }
    };
    resp.headers.push(("x-openstack-request-id".into(), format!("req-{}", uuid::Uuid::new_v4())));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

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
