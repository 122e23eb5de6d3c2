//! `zaqar-table`: creates the service's DynamoDB table if it is missing (keys, on-demand billing,
//! stream with both images, TTL on `expires_at`), from the one definition the server and the tests
//! use (`Store::ensure_table`). `localstack/dynamodb start` runs it, so every local path (the local
//! server, `cargo lambda watch`, the tests) finds the table; on AWS, infra/template.yaml creates it.
//! Reads the usual environment (`ZAQAR_TABLE`, `AWS_ENDPOINT_URL`, ...; see the README).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    zaqar::app::init_tracing();
    let app = zaqar::vars::exit_on_error(zaqar::App::from_env().await);
    let table = app.config.table.clone();
    match app.store.ensure_table().await {
        Ok(()) => {
            println!("table: {table} ready (stream NEW_AND_OLD_IMAGES, TTL on expires_at)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("table: cannot create {table}: {e}");
            ExitCode::FAILURE
        }
    }
}
