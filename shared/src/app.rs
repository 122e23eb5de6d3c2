//! The process-wide state a handler needs: configuration, storage and (keystone mode) the token validator.

use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::store::Store;
use crate::timeouts::StorageTimeouts;
use std::sync::Arc;

#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub store: Store,
    /// Keystone mode: validates tokens and remembers the answers for every request of this process.
    pub keystone: Option<Arc<crate::keystone::Keystone>>,
}

impl App {
    pub fn new(config: Config, client: aws_sdk_dynamodb::Client, clock: Clock) -> Self {
        let store = Store::new(client, config.table.clone(), clock);
        let keystone = match (&config.auth_mode, &config.keystone) {
            (crate::config::AuthMode::Keystone, Some(settings)) => {
                Some(Arc::new(crate::keystone::Keystone::new(settings.clone())))
            }
            _ => None,
        };
        App { config: Arc::new(config), store, keystone }
    }

    /// Builds the app from the environment (`ZAQAR_*`, AWS settings, `AWS_ENDPOINT_URL`); an invalid
    /// `ZAQAR_*` value is an error, which the binaries print before exiting.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let (mut config, sdk) = config_from_env()?;
        let client = dynamodb_client(&sdk);
        if config.secret_key.is_none() {
            if let Some(arn) = &config.secret_arn {
                config.secret_key = signing_key_from_secrets_manager(&sdk, arn).await;
            }
        }
        if let Some(settings) = config.keystone.take() {
            config.keystone = Some(settings.with_secret(&sdk).await.unwrap_or_else(|e| refuse_to_start(&e)));
        }
        Ok(App::new(config, client, Clock::System))
    }

    /// [`App::from_env`] without reading secrets, for the functions that neither sign nor verify
    /// (health, admin: no signable path is theirs) and leave Keystone to the authorizer: they do not
    /// link the Secrets Manager client. A secret's ARN in their environment is left unread, and said so.
    pub async fn from_env_without_secrets() -> Result<Self, ConfigError> {
        let (mut config, sdk) = config_from_env()?;
        if config.secret_arn.take().is_some() {
            tracing::info!("ZAQAR_SECRET_ARN not read: this function signs and verifies nothing");
        }
        Ok(App::new(config, dynamodb_client(&sdk), Clock::System))
    }

    pub fn limits(&self) -> &crate::config::Limits {
        &self.config.limits
    }
}

/// The service's settings and the SDK's, from one snapshot of the environment.
fn config_from_env() -> Result<(Config, aws_config::SdkConfig), ConfigError> {
    let vars = crate::vars::Vars::from_env();
    Ok((Config::from_vars(&vars)?, crate::sdk_env::sdk_config(&vars)?))
}

/// The AWS SDK configuration of the service's processes, from their environment alone
/// ([`crate::sdk_env`]: no profile files, SSO, STS or IMDS); a missing region or credential is an error.
pub fn sdk_config() -> Result<aws_config::SdkConfig, ConfigError> {
    crate::sdk_env::sdk_config(&crate::vars::Vars::from_env())
}

/// aws-config's whole default chain (`aws_config::defaults` at the latest behaviour version with
/// [`https_client`]), for tests and benches, which override settings (endpoint, credentials). The
/// service's own processes use [`sdk_config`]; both use [`https_client`], as the SDK's own default
/// client is compiled out.
pub fn sdk_loader() -> aws_config::ConfigLoader {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(https_client())
}

/// The HTTP client every SDK client of the workspace uses ([`crate::https`]).
pub fn https_client() -> aws_sdk_dynamodb::config::SharedHttpClient {
    crate::https::sdk_http_client()
}

/// The DynamoDB client every process uses: `sdk` plus the storage deadlines and retries of
/// [`StorageTimeouts`] (from `ZAQAR_STORAGE_*`).
///
/// # Panics
/// At start-up, when a `ZAQAR_STORAGE_*` variable is invalid: the function must not serve requests
/// with deadlines nobody chose.
pub fn dynamodb_client(sdk: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    let timeouts = StorageTimeouts::from_env().unwrap_or_else(|e| panic!("invalid configuration: {e}"));
    dynamodb_client_with(sdk, &timeouts)
}

/// [`dynamodb_client`] with explicit deadlines.
pub fn dynamodb_client_with(sdk: &aws_config::SdkConfig, timeouts: &StorageTimeouts) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&timeouts.apply(sdk))
}

/// The signing key from Secrets Manager (`ZAQAR_SECRET_ARN`), read once at cold start so it never sits in
/// the function's environment. A failure disables signing (share → 400, pre-signed → 404) and is logged
/// without the secret.
async fn signing_key_from_secrets_manager(sdk: &aws_config::SdkConfig, arn: &str) -> Option<String> {
    let client = aws_sdk_secretsmanager::Client::new(sdk);
    match client.get_secret_value().secret_id(arn).send().await {
        Ok(out) => out.secret_string().map(str::to_string),
        Err(e) => {
            tracing::error!(secret = %arn, error = %aws_sdk_secretsmanager::error::DisplayErrorContext(&e), "cannot read the signing key");
            None
        }
    }
}

/// Stops the process at start-up over a configuration that cannot work (on Lambda: an init error).
pub fn refuse_to_start(reason: &str) -> ! {
    tracing::error!(reason, "configuration error");
    eprintln!("configuration error: {reason}");
    std::process::exit(2)
}

/// Sets up `tracing` once per process: JSON lines on Lambda, plain text (no colour codes, for log
/// files) elsewhere; `AWS_LAMBDA_LOG_LEVEL` (Lambda's logging control) or `RUST_LOG` filters.
pub fn init_tracing() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().map(|l| l.to_lowercase());
    let filter = match level.as_deref().and_then(log_filter) {
        Some(filter) => filter,
        None => std::env::var("RUST_LOG")
            .ok()
            .as_deref()
            .and_then(log_filter)
            .unwrap_or_else(|| tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)),
    };
    // Lambda's log controls: AWS_LAMBDA_LOG_FORMAT (the template sets JSON) and AWS_LAMBDA_LOG_LEVEL.
    // Our own subscriber rather than lambda_runtime's default one, so tests can capture the exact format.
    let json = match std::env::var("AWS_LAMBDA_LOG_FORMAT") {
        Ok(format) => format.eq_ignore_ascii_case("json"),
        Err(_) => std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some(),
    };
    let _ = tracing::subscriber::set_global_default(log_subscriber(json, filter, std::io::stdout));
}

/// A log filter from `RUST_LOG`-style directives: comma-separated `level`, `target` or `target=level`
/// (`info`, `zaqar=debug,warn`); `None` when one is invalid. Empty pieces are skipped and an empty text
/// logs nothing, as `EnvFilter` does. This is tracing-subscriber's `Targets` rather than its `EnvFilter`,
/// which links a regex engine for span and field filters (`target[span{field=value}]=level`) the service
/// has no use for; such a directive is invalid here (the caller falls back to `info`).
pub fn log_filter(directives: &str) -> Option<tracing_subscriber::filter::Targets> {
    let pieces: Vec<&str> = directives.split(',').filter(|d| !d.is_empty()).collect();
    if pieces.is_empty() {
        return Some(tracing_subscriber::filter::Targets::new());
    }
    pieces.join(",").parse().ok()
}

/// The service's log format, writing to `writer` (tests capture it). Events carry the fields of their
/// spans, so each line of a request names its `request_id`; JSON puts them under `span`/`spans`.
pub fn log_subscriber<W>(
    json: bool,
    filter: tracing_subscriber::filter::Targets,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt;
    // The layers `tracing_subscriber::fmt().with_env_filter(..).finish()` stacks, with `Targets` as the filter.
    let layer = tracing_subscriber::fmt::layer().with_target(false).with_ansi(false).with_writer(writer);
    let registry = tracing_subscriber::registry();
    if json {
        Box::new(registry.with(layer.json().without_time()).with(filter))
    } else {
        Box::new(registry.with(layer).with(filter))
    }
}

/// The tokio runtime every Lambda function runs on. Lambda hands a container one request at a time
/// (unless `AWS_LAMBDA_MAX_CONCURRENCY` asks for more, as on Lambda Managed Instances), so one thread
/// serves it: a current-thread runtime. A worker pool would move each request's tasks between threads
/// (the HTTP connection's task, [`crate::store`]'s detached operations), and the wake-ups between them
/// cost about 40 % of a DynamoDB call's CPU (`bench/cost` in alternating pairs, bench/RESULTS.md). With
/// concurrency above 1, a worker thread per core, so concurrent requests can use the cores they are given.
pub fn lambda_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    lambda_runtime_for(std::env::var("AWS_LAMBDA_MAX_CONCURRENCY").ok().as_deref())
}

fn lambda_runtime_for(max_concurrency: Option<&str>) -> std::io::Result<tokio::runtime::Runtime> {
    // Parsed as lambda_runtime parses it: anything but a number above 1 means one request at a time.
    let concurrent = max_concurrency.and_then(|v| v.parse::<u32>().ok()).is_some_and(|c| c > 1);
    runtime(!concurrent)
}

/// A tokio runtime with IO and timers: on one thread (`one_thread`), or a worker thread per core.
pub fn runtime(one_thread: bool) -> std::io::Result<tokio::runtime::Runtime> {
    if one_thread {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()
    }
}

/// Runs an HTTP resource-group handler on Lambda: tracing, config and client once, then requests.
/// A cheap DynamoDB call at init opens the TLS connection before the first request needs it.
/// `run_concurrent` honours `AWS_LAMBDA_MAX_CONCURRENCY` (Lambda Managed Instances, and `cargo lambda
/// watch`, which sets it to 1) and runs one request at a time when it is unset.
///
/// A function's `main` blocks on it from an `async fn` of its own on [`lambda_runtime`]: blocking on it
/// straight from `main` (or from a synchronous wrapper here) makes release builds overflow rustc's query
/// depth while laying out the handler's future.
pub async fn run_http<F, Fut>(handler: F) -> Result<(), lambda_http::Error>
where
    F: Fn(App, crate::ApiRequest) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = crate::ApiResponse> + Send + 'static,
{
    run_http_with(App::from_env(), handler).await
}

/// [`run_http`] for the functions that read no secrets ([`App::from_env_without_secrets`]).
pub async fn run_http_without_secrets<F, Fut>(handler: F) -> Result<(), lambda_http::Error>
where
    F: Fn(App, crate::ApiRequest) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = crate::ApiResponse> + Send + 'static,
{
    run_http_with(App::from_env_without_secrets(), handler).await
}

async fn run_http_with<F, Fut>(
    app: impl std::future::Future<Output = Result<App, ConfigError>>,
    handler: F,
) -> Result<(), lambda_http::Error>
where
    F: Fn(App, crate::ApiRequest) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = crate::ApiResponse> + Send + 'static,
{
    init_tracing();
    let app = crate::vars::exit_on_error(app.await);
    let _ = app.store.ping().await;
    lambda_http::run_concurrent(lambda_http::service_fn(move |req: lambda_http::Request| {
        let (app, handler) = (app.clone(), handler.clone());
        async move {
            // The transport logs the request (one line, in a span with its request id).
            let resp = handler(app, crate::ApiRequest::from_lambda(req)).await;
            Ok::<_, std::convert::Infallible>(crate::http::LambdaReply(resp.into_lambda()))
        }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::{lambda_runtime_for, log_filter};
    use tokio::runtime::RuntimeFlavor;
    use tracing::Level;

    #[test]
    fn functions_run_on_one_thread_unless_lambda_sends_requests_concurrently() {
        let flavor = |v: Option<&str>| lambda_runtime_for(v).unwrap().handle().runtime_flavor();
        for one_at_a_time in [None, Some("1"), Some("0"), Some(""), Some("many"), Some("-4"), Some(" 4")] {
            assert_eq!(flavor(one_at_a_time), RuntimeFlavor::CurrentThread, "{one_at_a_time:?}");
        }
        assert_eq!(flavor(Some("8")), RuntimeFlavor::MultiThread);
    }

    #[test]
    fn log_filters_read_rust_log_directives() {
        let info = log_filter("info").unwrap();
        assert!(info.would_enable("zaqar::transport", &Level::INFO));
        assert!(!info.would_enable("zaqar::transport", &Level::DEBUG));
        // Lambda's AWS_LAMBDA_LOG_LEVEL, lower-cased by init_tracing.
        assert!(log_filter("debug").unwrap().would_enable("aws_smithy_runtime", &Level::DEBUG));
        let mixed = log_filter("warn,zaqar=debug,,").unwrap();
        assert!(mixed.would_enable("zaqar::store", &Level::DEBUG));
        assert!(!mixed.would_enable("hyper", &Level::INFO));
        assert!(mixed.would_enable("hyper", &Level::WARN));
        // Empty: nothing (as EnvFilter); invalid or span/field filters: None (the caller uses `info`).
        assert!(!log_filter("").unwrap().would_enable("zaqar", &Level::ERROR));
        assert!(log_filter("zaqar=loud").is_none());
        assert!(log_filter("zaqar[request{id=1}]=debug").is_none());
    }
}
