//! A small HTTP/1.1 server that hands each request to the resource group's handler, unchanged.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use zaqar::route::{route, Group};
use zaqar::{ApiRequest, ApiResponse, App};

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

async fn to_api_request(req: hyper::Request<Incoming>) -> Result<ApiRequest, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes().to_vec();
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
        *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

pub async fn serve(app: App, addr: SocketAddr) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let app = app.clone();
                async move {
                    // The request is logged by the transport, in its span with the request id.
                    let resp = dispatch(&app, to_api_request(req).await?).await;
                    Ok::<_, hyper::Error>(to_hyper(resp))
                }
            });
            if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
        });
    }
}
