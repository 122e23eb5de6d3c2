//! The local stack's API server: every resource group's Lambda handler behind one port, routed the way
//! API Gateway routes them, plus the DynamoDB-stream poller that drives subscription fan-out.

use zaqar::App;
use zaqar_local::{poller, server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    zaqar::app::init_tracing();
    let app = App::from_env().await;
    app.store.ensure_table().await?;
    let port: u16 = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(8888);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    poller::spawn(app.clone());
    tracing::info!(%addr, table = %app.config.table, "serving the Zaqar v2 API");
    server::serve(app, addr).await
}
