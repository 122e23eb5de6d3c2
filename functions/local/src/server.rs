//! The local HTTP/1.1 server: each request's body read whole, then handed unchanged to the function
//! API Gateway would route it to. The transport logs one line per request:
//!
//! `INFO request{request_id=req-… method=PUT route=/v2/queues/{queue_name} project=demo status=201}: served latency=3.1ms`
//!
//! Requests refused before routing (unparsable heads, unreadable or oversized bodies) get Zaqar-style
//! JSON errors too (see [`crate::http_errors`]).

use crate::http_errors::JsonHttpErrors;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use tokio::net::TcpListener;
use zaqar::route::{route, Group};
use zaqar::{ApiError, ApiRequest, ApiResponse, App};

/// The largest request body read, as API Gateway's 10 MB payload limit.
const MAX_BODY: usize = 10 * 1024 * 1024;

/// Sends a request to the function API Gateway would route it to (unknown paths: the health
/// function's catch-all, which answers Zaqar's 404).
pub async fn dispatch(app: &App, req: ApiRequest) -> ApiResponse {
    match route(&req.path).map(|r| r.resource.group()) {
        Some(Group::Queues) => zaqar_queues::handle(app, req).await,
        Some(Group::Messages) => zaqar_messages::handle(app, req).await,
        Some(Group::Claims) => zaqar_claims::handle(app, req).await,
        Some(Group::Subscriptions) => zaqar_subscriptions::handle(app, req).await,
        Some(Group::Admin) => zaqar_admin::handle(app, req).await,
        Some(Group::Health) | None => zaqar_health::handle(app, req).await,
    }
}

async fn to_api_request(req: hyper::Request<Incoming>) -> Result<ApiRequest, ApiError> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(e) if e.is::<LengthLimitError>() => {
            let description = "The request body is larger than this server accepts (10 MiB).";
            return Err(ApiError::http(StatusCode::PAYLOAD_TOO_LARGE, description));
        }
        Err(e) => {
            let description = format!("The request body could not be read ({e}): check its framing.");
            return Err(ApiError::http(StatusCode::BAD_REQUEST, description));
        }
    };
    let has_content_length = parts.headers.contains_key(http::header::CONTENT_LENGTH) || !body.is_empty();
    Ok(ApiRequest {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers: parts.headers,
        body,
        has_content_length,
        caller: Default::default(),
    })
}

fn to_hyper(resp: ApiResponse) -> hyper::Response<Full<Bytes>> {
    let mut builder = hyper::Response::builder().status(resp.status);
    for (n, v) in &resp.headers {
        builder = builder.header(n.as_str(), v.as_str());
    }
    builder.body(Full::new(Bytes::from(resp.body))).unwrap_or_else(|_| {
        let mut r = hyper::Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

async fn handle(app: App, req: hyper::Request<Incoming>) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let resp = match to_api_request(req).await {
        Ok(api_req) => dispatch(&app, api_req).await,
        Err(e) => zaqar::transport::refused(e),
    };
    Ok(to_hyper(resp))
}

/// Serves the API on `listener` until the process ends. Each request is logged once, by the transport,
/// in a span that carries its request id.
pub async fn serve(app: App, listener: TcpListener) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    loop {
        let (stream, _) = listener.accept().await?;
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(app.clone(), req));
            let io = TokioIo::new(JsonHttpErrors::new(stream));
            // writev(false): each response reaches the socket as one buffer (see http_errors).
            if let Err(e) = http1::Builder::new().writev(false).serve_connection(io, service).await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
        });
    }
}
