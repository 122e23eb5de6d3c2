fn main() -> Result<(), lambda_http::Error> {
    zaqar::app::lambda_runtime()?.block_on(serve())
}

async fn serve() -> Result<(), lambda_http::Error> {
    zaqar::app::run_http(|app, req| async move { zaqar_queues::handle(&app, req).await }).await
}
