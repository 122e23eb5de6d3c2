//! The local stack's API server: every resource group's Lambda handler behind one port, routed the way
//! API Gateway routes them, plus the DynamoDB-stream poller that drives subscription fan-out.

use zaqar::App;
use zaqar_local::{poller, server};

/// Plain-text log lines with timestamps (the local stack writes them to a file), filtered by
/// `RUST_LOG` (default `info`: one line per request).
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(false).init();
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    init_logging();
    let app = App::from_env().await;
    app.store.ensure_table().await?;
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(8888);
    let listener = tokio::net::TcpListener::bind(std::net::SocketAddr::from(([127, 0, 0, 1], port))).await?;
    poller::spawn(app.clone());
    tracing::info!(addr = %listener.local_addr()?, table = %app.config.table, "serving the Zaqar v2 API");
    server::serve(app, listener).await
}
