//! The process-wide state a handler needs: configuration and storage.

use crate::clock::Clock;
use crate::config::Config;
use crate::store::Store;
use std::sync::Arc;

#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub store: Store,
}

impl App {
    pub fn new(config: Config, client: aws_sdk_dynamodb::Client, clock: Clock) -> Self {
        let store = Store::new(client, config.table.clone(), clock);
        App { config: Arc::new(config), store }
    }

    /// Builds the app from the environment (`ZAQAR_*`, AWS settings, `AWS_ENDPOINT_URL`).
    pub async fn from_env() -> Self {
        let mut config = Config::from_env();
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        if config.secret_key.is_none() {
            config.secret_key = signing_key_from_secrets_manager(&sdk).await;
        }
        App::new(config, aws_sdk_dynamodb::Client::new(&sdk), Clock::System)
    }

    pub fn limits(&self) -> &crate::config::Limits {
        &self.config.limits
    }
}

/// The signing key from Secrets Manager (`ZAQAR_SECRET_ARN`), read once at cold start so it never sits in
/// the function's environment. A failure disables signing (share → 400, pre-signed → 404) and is logged
/// without the secret.
async fn signing_key_from_secrets_manager(sdk: &aws_config::SdkConfig) -> Option<String> {
    let arn = std::env::var("ZAQAR_SECRET_ARN").ok().filter(|a| !a.is_empty())?;
    let client = aws_sdk_secretsmanager::Client::new(sdk);
    match client.get_secret_value().secret_id(&arn).send().await {
        Ok(out) => out.secret_string().map(str::to_string),
        Err(e) => {
            tracing::error!(secret = %arn, error = %aws_sdk_secretsmanager::error::DisplayErrorContext(&e), "cannot read the signing key");
            None
        }
    }
}

/// Sets up `tracing` for a Lambda function with the runtime's own subscriber, which follows Lambda's
/// logging controls: `AWS_LAMBDA_LOG_FORMAT=JSON` (the template's setting) writes JSON lines, and
/// `AWS_LAMBDA_LOG_LEVEL` takes precedence over `RUST_LOG`. Plain text elsewhere (`cargo lambda watch`).
pub fn init_tracing() {
    lambda_http::tracing::init_default_subscriber();
}

/// Runs an HTTP resource-group handler on Lambda: tracing, config and client once, then requests.
/// A cheap DynamoDB call at init opens the TLS connection before the first request needs it.
/// `run_concurrent` honours `AWS_LAMBDA_MAX_CONCURRENCY` (Lambda Managed Instances, and `cargo lambda
/// watch`, which sets it to 1) and runs one request at a time when it is unset.
pub async fn run_http<F, Fut>(handler: F) -> Result<(), lambda_http::Error>
where
    F: Fn(App, crate::ApiRequest) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = crate::ApiResponse> + Send + 'static,
{
    init_tracing();
    let app = App::from_env().await;
    let _ = app.store.ping().await;
    lambda_http::run_concurrent(lambda_http::service_fn(move |req: lambda_http::Request| {
        let (app, handler) = (app.clone(), handler.clone());
        async move {
            let started = std::time::Instant::now();
            let req = crate::ApiRequest::from_lambda(req);
            let (method, path) = (req.method.clone(), req.path.clone());
            let resp = handler(app, req).await;
            // One line per request, as the local server's access log (path only: see there).
            let id = resp.header_value("x-openstack-request-id").unwrap_or("-");
            let (status, latency) = (resp.status.as_u16(), started.elapsed());
            tracing::info!(%method, %path, status, ?latency, request_id = %id, "served");
            Ok::<_, std::convert::Infallible>(resp.into_lambda())
        }
    }))
    .await
}
