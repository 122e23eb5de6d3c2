//! An HTTP/1.1 proxy in front of DynamoDB Local that carries out the faults the interceptor tags
//! (`x-zaqar-fault`): throttling and 500s without forwarding, connection resets before or after
//! DynamoDB applied the request, and stalls past the client's attempt timeout.
//!
//! Accepted sockets get `SO_LINGER 0`, so closing one sends a TCP reset, not an orderly FIN: the
//! client sees "connection reset" as it would when a load balancer or the network drops it.

use super::{error_body, FaultKind, FAULT_HEADER};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

type Upstream = Client<HttpConnector, Full<Bytes>>;

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    forwarded: Arc<AtomicU64>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An injected failure (or an upstream one): the connection is reset instead of answered.
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injected connection reset")
    }
}

impl std::error::Error for Reset {}

/// The process-wide proxy: the first call starts it on a thread of its own (each `#[tokio::test]` has a
/// runtime that ends with the test), later calls get the same URL. `port` 0 picks a free port.
pub fn shared(port: u16, upstream: &str, stall: Duration) -> Result<String, String> {
    static PROXY: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    PROXY
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            let upstream = upstream.to_string();
            std::thread::Builder::new()
                .name("fault-proxy".into())
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
                        Ok(rt) => rt,
                        Err(e) => return drop(tx.send(Err(e.to_string()))),
                    };
                    rt.block_on(async move {
                        match FaultProxy::start(port, &upstream, stall).await {
                            Ok(proxy) => {
                                let _ = tx.send(Ok(proxy.url()));
                                std::future::pending::<()>().await; // serve until the process ends
                            }
                            Err(e) => drop(tx.send(Err(format!("fault proxy cannot bind 127.0.0.1:{port}: {e}")))),
                        }
                    })
                })
                .map_err(|e| e.to_string())?;
            rx.recv().map_err(|e| e.to_string())?
        })
        .clone()
}

impl FaultProxy {
    /// Listens on `127.0.0.1:port` (0: any free port) and forwards to `upstream`
    /// (`http://127.0.0.1:8000`). A stall holds the request for `stall`, then resets.
    pub async fn start(port: u16, upstream: &str, stall: Duration) -> std::io::Result<FaultProxy> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let client: Upstream = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(10))
            .build(HttpConnector::new());
        let upstream: Arc<str> = upstream.trim_end_matches('/').into();
        let forwarded = Arc::new(AtomicU64::new(0));
        let counter = forwarded.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                // Zero linger: dropping the socket resets it (and never blocks).
                #[allow(deprecated)]
                let _ = stream.set_linger(Some(Duration::ZERO));
                let (client, upstream, counter) = (client.clone(), upstream.clone(), counter.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let (client, upstream, counter) = (client.clone(), upstream.clone(), counter.clone());
                        async move { handle(req, &client, &upstream, &counter, stall).await }
                    });
                    // An error here is an injected reset (or the client went away): drop the socket.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(FaultProxy { addr, task, forwarded })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests forwarded to DynamoDB so far.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }
}

fn synthetic(status: u16, code: &str, message: &str) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amzn-requestid", "injected-fault")
        .body(Full::new(Bytes::from(error_body(code, message))))
        .expect("valid response")
}

async fn handle(
    req: hyper::Request<Incoming>,
    client: &Upstream,
    upstream: &str,
    forwarded: &AtomicU64,
    stall: Duration,
) -> Result<hyper::Response<Full<Bytes>>, Reset> {
    let fault = req.headers().get(FAULT_HEADER).and_then(|v| v.to_str().ok()).and_then(FaultKind::parse);
    let (mut parts, body) = req.into_parts();
    let body = body.collect().await.map_err(|_| Reset)?.to_bytes();
    match fault {
        Some(FaultKind::Throttle) => {
            // Both codes DynamoDB uses for throttling; the SDK retries either with backoff.
            let code =
                if body.len() % 2 == 0 { "ProvisionedThroughputExceededException" } else { "ThrottlingException" };
            return Ok(synthetic(400, code, "Rate of requests exceeds the allowed throughput (injected)."));
        }
        Some(FaultKind::ServerErrorBefore) => {
            return Ok(synthetic(500, "InternalServerError", "Internal server error (injected)"));
        }
        Some(FaultKind::ResetBefore) => return Err(Reset),
        Some(FaultKind::StallBefore) => {
            tokio::time::sleep(stall).await;
            return Err(Reset);
        }
        _ => {}
    }
    parts.headers.remove(FAULT_HEADER);
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    parts.uri = format!("{upstream}{path}").parse().map_err(|_| Reset)?;
    // An upstream failure reaches the client as a reset too.
    let resp = client.request(hyper::Request::from_parts(parts, Full::new(body))).await.map_err(|_| Reset)?;
    forwarded.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|_| Reset)?.to_bytes();
    match fault {
        Some(FaultKind::ResetAfter) => Err(Reset),
        Some(FaultKind::StallAfter) => {
            tokio::time::sleep(stall).await;
            Err(Reset)
        }
        _ => Ok(hyper::Response::from_parts(parts, Full::new(body))),
    }
}
