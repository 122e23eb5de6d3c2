fn main() -> Result<(), lambda_http::Error> {
    zaqar::app::run_http_without_secrets(|app, req| async move { zaqar_admin::handle(&app, req).await })
}
