//! The local stack's API server: every resource group's Lambda handler behind one port, routed the way
//! API Gateway routes them, plus the DynamoDB-stream poller that drives subscription fan-out.
//! Configuration is read once here; a malformed value stops start-up with a message naming it.

use zaqar::vars::{exit_on_error, ConfigError, Vars};
use zaqar::App;
use zaqar_local::{poller, server};

/// The local server's own settings, on top of the functions' `ZAQAR_*` configuration.
struct Local {
    port: u16,
    poller: bool,
    /// Serve from one thread (a current-thread runtime), as a Lambda container runs its function: what
    /// `bench/cpu-vs-zaqar` measures. Otherwise one worker thread per core, for concurrent local use.
    one_thread: bool,
    fanout: zaqar_fanout::Settings,
}

fn local_settings(vars: &Vars) -> Result<Local, ConfigError> {
    Ok(Local {
        port: vars.number("PORT", 8888, 1, u16::MAX)?,
        poller: vars.flag("ZAQAR_STREAM_POLLER", true)?,
        one_thread: vars.flag("ZAQAR_LOCAL_ONE_THREAD", false)?,
        fanout: zaqar_fanout::Settings::from_vars(vars)?,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    zaqar::app::init_tracing();
    let local = exit_on_error(local_settings(&Vars::from_env()));
    zaqar::app::runtime(local.one_thread)?.block_on(serve(local))
}

async fn serve(local: Local) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let app = exit_on_error(App::from_env().await);
    app.store.ensure_table().await?;
    let listener = tokio::net::TcpListener::bind(std::net::SocketAddr::from(([127, 0, 0, 1], local.port))).await?;
    if local.poller {
        poller::spawn(app.clone(), local.fanout);
    } else {
        tracing::info!("stream poller disabled (ZAQAR_STREAM_POLLER)");
    }
    tracing::info!(addr = %listener.local_addr()?, table = %app.config.table, "serving the Zaqar v2 API");
    server::serve(app, listener).await
}
