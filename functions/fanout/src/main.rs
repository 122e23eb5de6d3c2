//! The fan-out Lambda: DynamoDB stream batches in, partial batch failures out.

use lambda_runtime::{run_concurrent, service_fn, Error, LambdaEvent};
use std::sync::Arc;
use zaqar::vars::{exit_on_error, Vars};

fn main() -> Result<(), Error> {
    zaqar::app::lambda_runtime()?.block_on(serve())
}

async fn serve() -> Result<(), Error> {
    zaqar::app::init_tracing();
    let settings = Arc::new(exit_on_error(zaqar_fanout::Settings::from_vars(&Vars::from_env())));
    let app = exit_on_error(zaqar::App::from_env().await);
    // The payload is parsed record by record (not as a typed event) so a malformed record is skipped
    // instead of failing the whole batch. `run_concurrent` runs one batch at a time unless
    // AWS_LAMBDA_MAX_CONCURRENCY asks for more.
    run_concurrent(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let (app, settings) = (app.clone(), settings.clone());
        async move {
            let batch = zaqar_fanout::parse_event(event.payload);
            Ok::<_, Error>(zaqar_fanout::handle_with(&app, &settings, batch).await)
        }
    }))
    .await
}
