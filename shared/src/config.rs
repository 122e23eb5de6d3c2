//! Configuration from the environment, read and validated once at cold start: a value that does not
//! parse stops start-up (see [`crate::vars`]) instead of silently becoming a default.
//! Emulators are reached through `AWS_ENDPOINT_URL` (read by `crate::sdk_env`), never through code branches.

pub use crate::vars::ConfigError;
use crate::vars::Vars;

/// Zaqar's `[transport]` limits and the options that change API behaviour (docs/api.md#limits).
#[derive(Debug, Clone, PartialEq)]
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
    /// Keystone tokens (`X-Auth-Token`), as Zaqar behind keystonemiddleware: project and roles come from
    /// the validated token (see `keystone`).
    Keystone,
}

impl AuthMode {
    /// The names `ZAQAR_AUTH_MODE` accepts (any case; unset or empty is `none`). A new mode is one row.
    pub const CHOICES: &[(&str, AuthMode)] =
        &[("none", AuthMode::None), ("jwt", AuthMode::Jwt), ("iam", AuthMode::Iam), ("keystone", AuthMode::Keystone)];
}

#[derive(Clone, PartialEq)]
pub struct Config {
    pub auth_mode: AuthMode,
    /// JWT claim holding the project id (`ZAQAR_PROJECT_CLAIM`, default `project_id`).
    pub project_claim: String,
    /// JWT claim holding roles, comma- or space-separated (`ZAQAR_ROLES_CLAIM`, default `roles`).
    pub roles_claim: String,
    /// IAM principal ARNs that have the admin role (`ZAQAR_ADMIN_PRINCIPALS`).
    pub admin_principals: Vec<String>,
    /// Where and how tokens are validated (`ZAQAR_KEYSTONE_*`); required in keystone mode.
    pub keystone: Option<crate::keystone::KeystoneSettings>,
    pub table: String,
    pub limits: Limits,
    /// `[DEFAULT] admin_mode`: mounts `/v2/health` (and, with pooling, pools and flavors).
    pub admin_mode: bool,
    pub pooling: bool,
    pub enable_checksum: bool,
    /// `[signed_url] secret_key`; `None` disables sharing and pre-signed requests.
    pub secret_key: Option<String>,
    /// Secrets Manager secret holding the signing key, read at cold start when `secret_key` is unset.
    pub secret_arn: Option<String>,
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
            .field("keystone", &self.keystone)
            .field("admin_mode", &self.admin_mode)
            .field("pooling", &self.pooling)
            .field("enable_checksum", &self.enable_checksum)
            .field("secret_key", &self.secret_key.as_ref().map(|_| "<redacted>"))
            .field("require_confirmation", &self.require_confirmation)
            .field("webhook_allow", &self.webhook_allow)
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    /// The configuration of an empty environment: Zaqar's defaults, noauth, optional features off.
    fn default() -> Self {
        Config {
            auth_mode: AuthMode::None,
            project_claim: "project_id".into(),
            roles_claim: "roles".into(),
            admin_principals: vec![],
            keystone: None,
            table: "zaqar".into(),
            limits: Limits::default(),
            admin_mode: false,
            pooling: false,
            enable_checksum: false,
            secret_key: None,
            secret_arn: None,
            max_signed_url_seconds: 7 * 24 * 3600,
            require_confirmation: true,
            webhook_allow: vec![],
            public_url: None,
            mail_from: "zaqar@localhost".into(),
            smtp_url: None,
        }
    }
}

impl Config {
    /// Reads and validates the process environment once, at start-up.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&Vars::from_env())
    }

    /// Builds the configuration from `ZAQAR_*` variables; unset ones keep [`Config::default`].
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let d = Config::default();
        let l = &d.limits;
        let limits = Limits {
            default_message_ttl: vars.number(
                "ZAQAR_DEFAULT_MESSAGE_TTL",
                l.default_message_ttl,
                60,
                l.max_message_ttl,
            )?,
            default_claim_ttl: vars.number("ZAQAR_DEFAULT_CLAIM_TTL", l.default_claim_ttl, 60, l.max_claim_ttl)?,
            default_claim_grace: vars.number(
                "ZAQAR_DEFAULT_CLAIM_GRACE",
                l.default_claim_grace,
                60,
                l.max_claim_grace,
            )?,
            max_messages_post_size: vars.number(
                "ZAQAR_MAX_MESSAGES_POST_SIZE",
                l.max_messages_post_size,
                1,
                MAX_LAMBDA_PAYLOAD,
            )?,
            ..d.limits.clone()
        };
        let auth_mode = vars.choice("ZAQAR_AUTH_MODE", d.auth_mode, AuthMode::CHOICES)?;
        let keystone = crate::keystone::KeystoneSettings::from_vars(vars)?;
        if auth_mode == AuthMode::Keystone && keystone.is_none() {
            return Err(ConfigError::new("ZAQAR_KEYSTONE_URL", "", "Keystone's URL when ZAQAR_AUTH_MODE=keystone"));
        }
        Ok(Config {
            auth_mode,
            keystone,
            project_claim: vars.string("ZAQAR_PROJECT_CLAIM", &d.project_claim),
            roles_claim: vars.string("ZAQAR_ROLES_CLAIM", &d.roles_claim),
            admin_principals: vars.list("ZAQAR_ADMIN_PRINCIPALS"),
            table: vars.string("ZAQAR_TABLE", &d.table),
            limits,
            admin_mode: vars.flag("ZAQAR_ADMIN_MODE", d.admin_mode)?,
            pooling: vars.flag("ZAQAR_POOLING", d.pooling)?,
            enable_checksum: vars.flag("ZAQAR_ENABLE_CHECKSUM", d.enable_checksum)?,
            secret_key: vars.optional("ZAQAR_SECRET_KEY"),
            secret_arn: vars.optional("ZAQAR_SECRET_ARN"),
            max_signed_url_seconds: vars.number(
                "ZAQAR_MAX_SIGNED_URL_SECONDS",
                d.max_signed_url_seconds,
                1,
                10 * 365 * 24 * 3600,
            )?,
            require_confirmation: vars.flag("ZAQAR_REQUIRE_CONFIRMATION", d.require_confirmation)?,
            webhook_allow: vars.list("ZAQAR_WEBHOOK_ALLOW"),
            public_url: vars.url("ZAQAR_PUBLIC_URL", &["http", "https"])?,
            mail_from: vars.string("ZAQAR_MAIL_FROM", &d.mail_from),
            smtp_url: vars.url("ZAQAR_SMTP_URL", &["smtp"])?,
        })
    }

    /// A configuration for tests: the defaults with the given table and every optional feature on.
    pub fn for_tests(table: &str) -> Self {
        Config {
            table: table.to_string(),
            admin_mode: true,
            pooling: true,
            enable_checksum: true,
            secret_key: Some("test".into()),
            require_confirmation: false,
            webhook_allow: vec!["127.0.0.1".into()],
            ..Config::default()
        }
    }
}

/// Lambda's request payload limit (6 MB): a larger post could never arrive.
const MAX_LAMBDA_PAYLOAD: usize = 6 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(&pairs.iter().copied().collect())
    }

    #[test]
    fn an_empty_environment_gives_the_defaults() {
        assert_eq!(parse(&[]).unwrap(), Config::default());
    }

    #[test]
    fn values_are_read() {
        let c = parse(&[
            ("ZAQAR_AUTH_MODE", "JWT"),
            ("ZAQAR_ADMIN_MODE", "true"),
            ("ZAQAR_DEFAULT_CLAIM_TTL", "120"),
            ("ZAQAR_ADMIN_PRINCIPALS", "arn:a, arn:b"),
            ("ZAQAR_PUBLIC_URL", "https://zaqar.example"),
            ("ZAQAR_SMTP_URL", "smtp://127.0.0.1:2525"),
        ])
        .unwrap();
        assert_eq!((c.auth_mode, c.admin_mode, c.limits.default_claim_ttl), (AuthMode::Jwt, true, 120));
        assert_eq!(c.admin_principals, ["arn:a", "arn:b"]);
        assert_eq!(c.public_url.as_deref(), Some("https://zaqar.example"));
    }

    #[test]
    fn bad_values_name_the_variable_and_what_it_accepts() {
        let cases = [
            ("ZAQAR_AUTH_MODE", "bogus", "one of none, jwt, iam, keystone"),
            ("ZAQAR_DEFAULT_CLAIM_TTL", "abc", "an integer from 60 to 43200"),
            ("ZAQAR_DEFAULT_MESSAGE_TTL", "30", "an integer from 60 to 1209600"),
            ("ZAQAR_ADMIN_MODE", "yes please", "one of true, false, 1, 0, yes, no, on, off"),
            ("ZAQAR_PUBLIC_URL", "zaqar.example", "a http or https URL with a host"),
            ("ZAQAR_SMTP_URL", "127.0.0.1:25", "a smtp URL with a host"),
        ];
        for (name, value, expected) in cases {
            let e = parse(&[(name, value)]).unwrap_err();
            assert_eq!(e, ConfigError::new(name, value, expected));
        }
        assert_eq!(
            parse(&[("ZAQAR_AUTH_MODE", "bogus")]).unwrap_err().to_string(),
            r#"invalid ZAQAR_AUTH_MODE="bogus": expected one of none, jwt, iam, keystone"#
        );
    }
}
