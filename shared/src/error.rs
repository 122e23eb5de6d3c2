//! The one place that turns failures into Zaqar's HTTP error responses.
//!
//! Every handler returns `Result<ApiResponse, ApiError>`; `ApiError` carries the status, the `title`
//! and the optional `description` exactly as Zaqar (falcon) sends them.

use http::StatusCode;

/// Seconds a client should wait after a 503: storage faults and throttling usually pass within that.
pub const RETRY_AFTER_SECONDS: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub title: String,
    pub description: Option<String>,
    /// Extra response headers (e.g. `Allow` on 405).
    pub headers: Vec<(String, String)>,
    /// Whose body shape the error takes: falcon's for everything Zaqar itself answers.
    pub shape: Shape,
}

/// The JSON shape of an error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    /// falcon's `{"title", "description"}`.
    #[default]
    Falcon,
    /// keystonemiddleware's `{"error": {"code", "title", "message"}}`: in Zaqar a missing or rejected token is
    /// answered by the middleware before Zaqar runs, so clients see this shape for those 401s.
    Keystone,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.title)?;
        if let Some(d) = &self.description {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    pub fn new(status: StatusCode, title: &str, description: impl Into<String>) -> Self {
        ApiError {
            status,
            title: title.to_string(),
            description: Some(description.into()),
            headers: vec![],
            shape: Shape::Falcon,
        }
    }

    fn bare(status: StatusCode, title: &str) -> Self {
        ApiError { status, title: title.to_string(), description: None, headers: vec![], shape: Shape::Falcon }
    }

    /// 400 "Invalid API request": a value outside Zaqar's limits.
    pub fn invalid_api(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Invalid API request", description)
    }

    /// 400 "Invalid request body": unparsable or mistyped documents.
    pub fn invalid_body(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Invalid request body", description)
    }

    pub fn unparsable_body() -> Self {
        Self::invalid_body("Request body could not be parsed.")
    }

    pub fn document_type() -> Self {
        Self::invalid_body("Document type not supported.")
    }

    /// 400 "Invalid parameter" for query strings falcon cannot convert.
    pub fn invalid_param(name: &str, expected: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "Invalid parameter",
            format!("The \"{name}\" parameter is invalid. The value must be {expected}."),
        )
    }

    pub fn invalid_queue() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "Invalid queue identification",
            "The format of the submitted queue name or project id is not valid.",
        )
    }

    pub fn not_found(description: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not found", description)
    }

    /// falcon's bare 404 for unknown routes and rejected pre-signed URLs.
    pub fn no_route() -> Self {
        Self::bare(StatusCode::NOT_FOUND, "404 Not Found")
    }

    pub fn method_not_allowed(allow: &str) -> Self {
        let mut e = Self::bare(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed");
        e.headers.push(("allow".into(), allow.into()));
        e
    }

    pub fn not_acceptable() -> Self {
        Self::new(
            StatusCode::NOT_ACCEPTABLE,
            "406 Not Acceptable",
            "Media type not acceptable. Please use application/json.",
        )
    }

    pub fn unsupported_media_type(accepted: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "415 Unsupported Media Type",
            format!("Accepted media type for PATCH: {{'Accept-Patch': '{accepted}'}}."),
        )
    }

    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "Not authorized", "You are not authorized to complete this action.")
    }

    /// keystonemiddleware's 401 for a missing, invalid, expired or revoked token, with where to get one
    /// (`WWW-Authenticate: Keystone uri="..."`).
    pub fn unauthenticated(keystone_uri: &str) -> Self {
        let mut e =
            Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", "The request you have made requires authentication.");
        e.shape = Shape::Keystone;
        e.with_header("www-authenticate", format!("Keystone uri=\"{keystone_uri}\""))
    }

    pub fn conflict(description: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "Resource conflict", description)
    }

    /// 503 for storage failures (faults, throttling, timeouts); the cause is logged, never sent.
    /// `Retry-After` tells clients and proxies when trying again makes sense.
    pub fn unavailable(description: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service temporarily unavailable",
            format!("{description} Please try again in a few seconds."),
        )
        .with_header("retry-after", RETRY_AFTER_SECONDS.to_string())
    }

    /// A request the HTTP layer refused before any handler ran (unreadable framing, oversized URI or
    /// header fields, oversized body), titled the way falcon titles its HTTP errors ("431 Request
    /// Header Fields Too Large").
    pub fn http(status: StatusCode, description: impl Into<String>) -> Self {
        let title = format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or("Error"));
        Self::new(status, &title, description)
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// The JSON error body (`{"title", "description"}`, or keystonemiddleware's shape).
    pub fn body(&self) -> serde_json::Value {
        if self.shape == Shape::Keystone {
            return serde_json::json!({"error": {
                "code": self.status.as_u16(),
                "title": self.title,
                "message": self.description.clone().unwrap_or_default(),
            }});
        }
        let mut m = serde_json::Map::new();
        m.insert("title".into(), self.title.clone().into());
        if let Some(d) = &self.description {
            m.insert("description".into(), d.clone().into());
        }
        serde_json::Value::Object(m)
    }
}

/// Storage failures become Zaqar's 503 here and nowhere else; the cause (with its source chain) goes to the
/// log of the request's span, never to the client.
impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        let mut chain = String::new();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        tracing::error!(operation = e.operation(), error = %e, cause = %chain, "storage failure");
        ApiError::unavailable(&format!("{} could not be completed.", e.operation()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_says_when_to_retry() {
        let e = ApiError::unavailable("Queue listing could not be completed.");
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.headers, vec![("retry-after".to_string(), "1".to_string())]);
        assert_eq!(e.body()["title"], "Service temporarily unavailable");
    }
}
