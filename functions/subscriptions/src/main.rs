fn main() -> Result<(), lambda_http::Error> {
    zaqar::app::lambda_runtime()?.block_on(serve())
}

async fn serve() -> Result<(), lambda_http::Error> {
    zaqar::app::run_http(|app, req| async move { zaqar_subscriptions::handle(&app, req).await }).await
}
