//! Configuration from the environment, read once at cold start.
//! Emulators are reached through `AWS_ENDPOINT_URL` (read by aws-config), never through code branches.

use std::env;

/// Zaqar's `[transport]` limits and the options that change API behaviour (spec §2).
#[derive(Debug, Clone)]
pub struct Limits {
    pub default_message_ttl: i64,
    pub default_message_delay: i64,
    pub default_claim_ttl: i64,
    pub default_claim_grace: i64,
    pub default_subscription_ttl: i64,
    pub max_queues_per_page: u32,
    pub max_messages_per_page: u32,
    pub max_subscriptions_per_page: u32,
    pub max_messages_per_claim_or_pop: u32,
    pub max_queue_metadata: usize,
    pub max_messages_post_size: usize,
    pub max_message_ttl: i64,
    pub max_message_delay: i64,
    pub max_claim_ttl: i64,
    pub max_claim_grace: i64,
    pub max_pools_per_page: u32,
    pub max_flavors_per_page: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            default_message_ttl: 3600,
            default_message_delay: 0,
            default_claim_ttl: 300,
            default_claim_grace: 60,
            default_subscription_ttl: 3600,
            max_queues_per_page: 20,
            max_messages_per_page: 20,
            max_subscriptions_per_page: 20,
            max_messages_per_claim_or_pop: 20,
            max_queue_metadata: 65536,
            max_messages_post_size: 262144,
            max_message_ttl: 1_209_600,
            max_message_delay: 900,
            max_claim_ttl: 43200,
            max_claim_grace: 43200,
            max_pools_per_page: 20,
            max_flavors_per_page: 20,
        }
    }
}

/// Who vouches for the caller's project (`ZAQAR_AUTH_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Zaqar's noauth: project and roles come from the request headers. For tests and private networks.
    None,
    /// API Gateway JWT authorizer: project and roles come from the token's claims; headers cannot
    /// override them (as Keystone's middleware overwrites X-Project-Id).
    Jwt,
    /// API Gateway IAM (SigV4): the project is the caller's AWS account; admins are listed principals.
    Iam,
}

#[derive(Clone)]
pub struct Config {
    pub auth_mode: AuthMode,
    /// JWT claim holding the project id (`ZAQAR_PROJECT_CLAIM`, default `project_id`).
    pub project_claim: String,
    /// JWT claim holding roles, comma- or space-separated (`ZAQAR_ROLES_CLAIM`, default `roles`).
    pub roles_claim: String,
    /// IAM principal ARNs that have the admin role (`ZAQAR_ADMIN_PRINCIPALS`).
    pub admin_principals: Vec<String>,
    pub table: String,
    pub limits: Limits,
    /// `[DEFAULT] admin_mode`: mounts `/v2/health` (and, with pooling, pools and flavors).
    pub admin_mode: bool,
    pub pooling: bool,
    pub enable_checksum: bool,
    /// `[signed_url] secret_key`; `None` disables sharing and pre-signed requests.
    pub secret_key: Option<String>,
    /// Longest lifetime a pre-signed URL may ask for (Zaqar has none; we bound it).
    pub max_signed_url_seconds: i64,
    /// New webhook subscriptions must be confirmed before they receive messages.
    pub require_confirmation: bool,
    /// Hosts or CIDR ranges that webhooks may reach although they are internal addresses.
    pub webhook_allow: Vec<String>,
    /// Where confirmation notifications tell subscribers to confirm (`None`: relative paths only).
    pub public_url: Option<String>,
    pub mail_from: String,
    /// `smtp://host:port` for mailto delivery outside AWS; `None` uses Amazon SES.
    pub smtp_url: Option<String>,
}

impl std::fmt::Debug for Config {
    // Written by hand so the signing key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("table", &self.table)
            .field("auth_mode", &self.auth_mode)
            .field("admin_mode", &self.admin_mode)
            .field("pooling", &self.pooling)
            .field("enable_checksum", &self.enable_checksum)
            .field("secret_key", &self.secret_key.as_ref().map(|_| "<redacted>"))
            .field("require_confirmation", &self.require_confirmation)
            .field("webhook_allow", &self.webhook_allow)
            .finish_non_exhaustive()
    }
}

fn flag(name: &str, default: bool) -> bool {
    match env::var(name) {
        Ok(v) => matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"),
        Err(_) => default,
    }
}

fn list(name: &str) -> Vec<String> {
    env::var(name).unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

fn number<T: std::str::FromStr>(name: &str, default: T) -> T {
    env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

impl Config {
    pub fn from_env() -> Self {
        let defaults = Limits::default();
        let limits = Limits {
            default_message_ttl: number("ZAQAR_DEFAULT_MESSAGE_TTL", defaults.default_message_ttl),
            default_claim_ttl: number("ZAQAR_DEFAULT_CLAIM_TTL", defaults.default_claim_ttl),
            default_claim_grace: number("ZAQAR_DEFAULT_CLAIM_GRACE", defaults.default_claim_grace),
            max_messages_post_size: number("ZAQAR_MAX_MESSAGES_POST_SIZE", defaults.max_messages_post_size),
            ..defaults
        };
        let auth_mode = match env::var("ZAQAR_AUTH_MODE").unwrap_or_default().to_ascii_lowercase().as_str() {
            "jwt" => AuthMode::Jwt,
            "iam" => AuthMode::Iam,
            _ => AuthMode::None,
        };
        Config {
            auth_mode,
            project_claim: env::var("ZAQAR_PROJECT_CLAIM").unwrap_or_else(|_| "project_id".into()),
            roles_claim: env::var("ZAQAR_ROLES_CLAIM").unwrap_or_else(|_| "roles".into()),
            admin_principals: list("ZAQAR_ADMIN_PRINCIPALS"),
            table: env::var("ZAQAR_TABLE").unwrap_or_else(|_| "zaqar".into()),
            limits,
            admin_mode: flag("ZAQAR_ADMIN_MODE", false),
            pooling: flag("ZAQAR_POOLING", false),
            enable_checksum: flag("ZAQAR_ENABLE_CHECKSUM", false),
            secret_key: env::var("ZAQAR_SECRET_KEY").ok().filter(|s| !s.is_empty()),
            max_signed_url_seconds: number("ZAQAR_MAX_SIGNED_URL_SECONDS", 7 * 24 * 3600),
            require_confirmation: flag("ZAQAR_REQUIRE_CONFIRMATION", true),
            webhook_allow: list("ZAQAR_WEBHOOK_ALLOW"),
            public_url: env::var("ZAQAR_PUBLIC_URL").ok().filter(|s| !s.is_empty()),
            mail_from: env::var("ZAQAR_MAIL_FROM").unwrap_or_else(|_| "zaqar@localhost".into()),
            smtp_url: env::var("ZAQAR_SMTP_URL").ok().filter(|s| !s.is_empty()),
        }
    }

    /// A configuration for tests: Zaqar's defaults, the given table, everything optional on.
    pub fn for_tests(table: &str) -> Self {
        Config {
            auth_mode: AuthMode::None,
            project_claim: "project_id".into(),
            roles_claim: "roles".into(),
            admin_principals: vec![],
            table: table.to_string(),
            limits: Limits::default(),
            admin_mode: true,
            pooling: true,
            enable_checksum: true,
            secret_key: Some("test".into()),
            max_signed_url_seconds: 7 * 24 * 3600,
            require_confirmation: false,
            webhook_allow: vec!["127.0.0.1".into()],
            public_url: None,
            mail_from: "zaqar@localhost".into(),
            smtp_url: None,
        }
    }
}
