fn main() -> Result<(), lambda_http::Error> {
    zaqar::app::lambda_runtime()?.block_on(serve())
}

async fn serve() -> Result<(), lambda_http::Error> {
    zaqar::app::run_http_without_secrets(|app, req| async move { zaqar_health::handle(&app, req).await }).await
}
