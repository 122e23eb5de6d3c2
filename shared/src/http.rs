//! Transport-neutral request and response types.
//!
//! Lambda (API Gateway REST/HTTP API, Function URLs, `cargo lambda watch`) and the local server both
//! convert into `ApiRequest`, so every handler is one plain async function over these types.

use crate::error::ApiError;
use crate::json;
use http::{HeaderMap, Method, StatusCode};
use serde::Serialize;

/// The identity API Gateway's authorizer established, if any.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Caller {
    #[default]
    Anonymous,
    Jwt {
        claims: std::collections::HashMap<String, String>,
    },
    Iam {
        account_id: Option<String>,
        user_arn: Option<String>,
    },
    /// A Keystone token's verdict: from the Lambda authorizer's context on AWS, or from the transport's
    /// own validation (keystone mode).
    Keystone(crate::keystone::Verdict),
}

#[derive(Debug, Clone, Default)]
pub struct ApiRequest {
    pub method: Method,
    /// Raw path with any API Gateway stage prefix removed (still percent-encoded).
    pub path: String,
    /// Raw query string without the `?`.
    pub query: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// Whether the transport carried a Content-Length / body (falcon's form check needs it).
    pub has_content_length: bool,
    pub caller: Caller,
}

impl ApiRequest {
    pub fn new(method: Method, path_and_query: &str) -> Self {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (path_and_query.to_string(), String::new()),
        };
        ApiRequest { method, path, query, ..Default::default() }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let (Ok(n), Ok(v)) = (http::HeaderName::try_from(name), http::HeaderValue::try_from(value)) {
            self.headers.append(n, v);
        }
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self.has_content_length = true;
        self
    }

    /// A header value as text; headers that are not valid text count as absent.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Converts a lambda_http request, removing an API Gateway stage prefix from the path.
    pub fn from_lambda(req: lambda_http::Request) -> Self {
        use lambda_http::request::RequestContext;
        use lambda_http::RequestExt;
        // Start from the path as the event carries it (lambda_http's URI may have the stage added).
        // REST events give the path without the stage (`requestContext.path` has it); HTTP API events
        // on a named stage carry it in `rawPath`. Decide from the event rather than from the path
        // alone: a stage may be named like the first path segment ("v2").
        let raw = req.raw_http_path().to_string();
        let (stage, caller) = match req.request_context_ref() {
            Some(RequestContext::ApiGatewayV1(ctx)) => {
                let stage = ctx.stage.clone().filter(|s| !s.is_empty());
                let stage_outside_path =
                    stage.as_ref().is_some_and(|s| ctx.path.as_deref() == Some(format!("/{s}{raw}").as_str()));
                (if stage_outside_path { None } else { stage }, Caller::Anonymous)
            }
            Some(RequestContext::ApiGatewayV2(ctx)) => {
                let caller = match &ctx.authorizer {
                    Some(a) if a.jwt.is_some() => {
                        Caller::Jwt { claims: a.jwt.as_ref().map(|j| j.claims.clone()).unwrap_or_default() }
                    }
                    Some(a) if a.iam.is_some() => {
                        let iam = a.iam.as_ref();
                        Caller::Iam {
                            account_id: iam.and_then(|i| i.account_id.clone()),
                            user_arn: iam.and_then(|i| i.user_arn.clone()),
                        }
                    }
                    Some(a) if !a.fields.is_empty() => {
                        crate::keystone::Verdict::from_context(&a.fields).map_or(Caller::Anonymous, Caller::Keystone)
                    }
                    _ => Caller::Anonymous,
                };
                (ctx.stage.clone(), caller)
            }
            _ => (None, Caller::Anonymous),
        };
        let (parts, body) = req.into_parts();
        let mut path = if raw.starts_with('/') { raw } else { parts.uri.path().to_string() };
        if let Some(stage) = stage.filter(|s| s != "$default" && !s.is_empty()) {
            let prefix = format!("/{stage}");
            if path == prefix {
                path = "/".into();
            } else if path.starts_with(&format!("{prefix}/")) {
                path = path[prefix.len()..].to_string();
            }
        }
        let body: Vec<u8> = match body {
            lambda_http::Body::Empty => Vec::new(),
            lambda_http::Body::Text(t) => t.into_bytes(),
            lambda_http::Body::Binary(b) => b,
            _ => Vec::new(),
        };
        let has_content_length = !body.is_empty() || parts.headers.contains_key(http::header::CONTENT_LENGTH);
        ApiRequest {
            method: parts.method,
            path,
            query: parts.uri.query().unwrap_or("").to_string(),
            headers: parts.headers,
            body,
            has_content_length,
            caller,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ApiResponse {
    pub fn empty(status: StatusCode) -> Self {
        ApiResponse { status, headers: vec![], body: vec![] }
    }

    pub fn json<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Self {
        ApiResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: json::to_body(body),
        }
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn from_error(err: &ApiError) -> Self {
        let mut resp = ApiResponse::json(err.status, &err.body());
        // falcon sends 406 with an empty body: the client accepts nothing we can write.
        if err.status == StatusCode::NOT_ACCEPTABLE {
            resp.body.clear();
        }
        resp.headers.extend(err.headers.iter().cloned());
        // falcon serialises errors by the request's Accept header and says so.
        resp.headers.push(("vary".into(), "Accept".into()));
        resp
    }

    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json_body(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The response as API Gateway receives it. An empty body is sent as `""`, as lambda_http's own
    /// conversion sent it before [`LambdaReply`] took its place.
    pub fn into_lambda(self) -> lambda_http::Response<lambda_http::Body> {
        let mut builder = lambda_http::Response::builder().status(self.status);
        for (n, v) in &self.headers {
            builder = builder.header(n.as_str(), v.as_str());
        }
        let body = if self.body.is_empty() {
            lambda_http::Body::Text(String::new())
        } else {
            match String::from_utf8(self.body) {
                Ok(s) => lambda_http::Body::Text(s),
                Err(e) => lambda_http::Body::Binary(e.into_bytes()),
            }
        };
        builder.body(body).unwrap_or_else(|_| {
            let mut r = lambda_http::Response::new(lambda_http::Body::Empty);
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        })
    }
}

/// What the HTTP functions hand lambda_http: a response already in its final form.
///
/// lambda_http's own `IntoResponse` for `Response<Body>` collects every text body again and decodes it
/// by the charset of its Content-Type (a MIME parse, encoding_rs and a copy, on every request). Ours are
/// UTF-8 JSON or empty before they get there, so that work found nothing to do, and encoding_rs alone
/// was about 150 KB of each function binary.
pub struct LambdaReply(pub lambda_http::Response<lambda_http::Body>);

impl lambda_http::IntoResponse for LambdaReply {
    fn into_response(
        self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = lambda_http::Response<lambda_http::Body>> + Send>> {
        Box::pin(std::future::ready(self.0))
    }
}

impl From<ApiError> for ApiResponse {
    fn from(e: ApiError) -> Self {
        ApiResponse::from_error(&e)
    }
}
