//! Keystone sign-in (`ZAQAR_AUTH_MODE=keystone`): what keystonemiddleware does in front of Zaqar.
//!
//! Every request except `GET /` and pre-signed ones ([`needs_token`]) must carry an `X-Auth-Token`
//! that Keystone v3 confirms (`GET /v3/auth/tokens` with `X-Subject-Token`). The confirmation is asked
//! with a service user's token when service credentials are configured, otherwise with the token
//! itself (Keystone lets a token validate itself). The project and roles of the answer are the
//! caller's; headers cannot override them.
//!
//! Answers are remembered per token ([`cache`]) for at most the revocation bound
//! (`ZAQAR_KEYSTONE_CACHE_SECONDS`, default 60 s) and never past the token's expiry. Tokens are never
//! logged: log lines carry the first bytes of the token's SHA-256.
//!
//! Locally the transport calls [`Keystone::validate`] itself; on AWS the Lambda authorizer
//! (`functions/authorizer`) does, and hands the verdict to the functions in its context
//! ([`Verdict::to_context`]).

pub mod cache;
mod client;
pub mod token;

pub use token::{Identity, Verdict};

use crate::vars::{ConfigError, Vars};
use cache::TokenCache;
use std::env;
use std::sync::Mutex;
use std::time::Duration;

/// Longest token we send to Keystone; Fernet tokens are about 200 bytes.
const MAX_TOKEN_LEN: usize = 8192;
/// Most validations remembered at once.
const CACHE_CAPACITY: usize = 10_000;
/// A service token is renewed this long before it expires.
const SERVICE_TOKEN_MARGIN_S: i64 = 60;

/// Whether a request must carry a token: Zaqar exempts `/` (version discovery) and requests with a
/// `URL-Signature` header, whose signature the transport checks instead.
pub fn needs_token(path: &str, headers: &http::HeaderMap) -> bool {
    !(path.is_empty() || path == "/" || headers.contains_key("url-signature"))
}

/// The service user that validates tokens (Keystone's `service` or `admin` role lets it).
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceCredentials {
    pub username: String,
    pub password: String,
    pub project: String,
    /// Domain name of both the user and the project.
    pub domain: String,
}

fn default_project() -> String {
    "service".into()
}

fn default_domain() -> String {
    "Default".into()
}

impl std::fmt::Debug for ServiceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("project", &self.project)
            .field("domain", &self.domain)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeystoneSettings {
    /// Identity v3 base, without a trailing slash (`http://127.0.0.1:5000/v3`).
    pub url: String,
    pub service: Option<ServiceCredentials>,
    /// Revocation bound: how long a validation is remembered (0 = ask Keystone every time).
    pub cache_seconds: u64,
    /// Whole-request timeout of each call to Keystone.
    pub timeout: Duration,
}

impl KeystoneSettings {
    /// `ZAQAR_KEYSTONE_URL` (with or without `/v3`), `ZAQAR_KEYSTONE_SERVICE_USER` /
    /// `_PASSWORD` / `_PROJECT` / `_DOMAIN`, `ZAQAR_KEYSTONE_CACHE_SECONDS`, `ZAQAR_KEYSTONE_TIMEOUT_MS`.
    /// `None` without a URL.
    pub fn from_vars(vars: &Vars) -> Result<Option<Self>, ConfigError> {
        let Some(url) = vars.url("ZAQAR_KEYSTONE_URL", &["http", "https"])? else { return Ok(None) };
        let service =
            match (vars.optional("ZAQAR_KEYSTONE_SERVICE_USER"), vars.optional("ZAQAR_KEYSTONE_SERVICE_PASSWORD")) {
                (Some(username), Some(password)) => Some(ServiceCredentials {
                    username,
                    password,
                    project: vars.string("ZAQAR_KEYSTONE_SERVICE_PROJECT", &default_project()),
                    domain: vars.string("ZAQAR_KEYSTONE_SERVICE_DOMAIN", &default_domain()),
                }),
                _ => None,
            };
        Ok(Some(KeystoneSettings {
            url: v3_url(&url),
            service,
            cache_seconds: vars.number("ZAQAR_KEYSTONE_CACHE_SECONDS", 60, 0, 86_400)?,
            timeout: Duration::from_millis(vars.number("ZAQAR_KEYSTONE_TIMEOUT_MS", 5000, 1, 600_000)?),
        }))
    }

    /// [`Self::from_vars`] over the process environment.
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        Self::from_vars(&Vars::from_env())
    }

    /// keystonemiddleware's `WWW-Authenticate` target: where clients get a token.
    pub fn www_authenticate_uri(&self) -> &str {
        &self.url
    }

    /// Reads the service user's password from Secrets Manager (`ZAQAR_KEYSTONE_SERVICE_PASSWORD_ARN`, the
    /// secret string is the password) when the user is named but the environment holds no password. Read
    /// once at cold start so the password never sits in a function's environment.
    pub async fn with_secret(mut self, sdk: &aws_config::SdkConfig) -> Result<Self, String> {
        let var = |name: &str| env::var(name).ok().filter(|v| !v.is_empty());
        let (Some(arn), None, Some(username)) =
            (var("ZAQAR_KEYSTONE_SERVICE_PASSWORD_ARN"), self.service.as_ref(), var("ZAQAR_KEYSTONE_SERVICE_USER"))
        else {
            return Ok(self);
        };
        let client = aws_sdk_secretsmanager::Client::new(sdk);
        let out =
            client.get_secret_value().secret_id(&arn).send().await.map_err(|e| {
                format!("cannot read {arn}: {}", aws_sdk_secretsmanager::error::DisplayErrorContext(&e))
            })?;
        let password = out.secret_string().filter(|p| !p.is_empty()).ok_or_else(|| format!("{arn} is empty"))?;
        self.service = Some(ServiceCredentials {
            username,
            password: password.to_string(),
            project: var("ZAQAR_KEYSTONE_SERVICE_PROJECT").unwrap_or_else(default_project),
            domain: var("ZAQAR_KEYSTONE_SERVICE_DOMAIN").unwrap_or_else(default_domain),
        });
        Ok(self)
    }
}

/// `http://host:5000`, `http://host:5000/`, `http://host:5000/v3/` all mean `http://host:5000/v3`.
fn v3_url(url: &str) -> String {
    let base = url.trim().trim_end_matches('/');
    if base.ends_with("/v3") {
        base.to_string()
    } else {
        format!("{base}/v3")
    }
}

struct ServiceToken {
    token: String,
    /// Epoch seconds.
    expires_at: i64,
}

/// A Keystone v3 client that validates tokens, with the cache in front of it.
pub struct Keystone {
    settings: KeystoneSettings,
    http: client::KeystoneHttp,
    cache: Mutex<TokenCache>,
    service_token: tokio::sync::Mutex<Option<ServiceToken>>,
}

impl std::fmt::Debug for Keystone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keystone").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// How Keystone answered one validation.
enum Answer {
    Verdict(Verdict),
    /// The service token was refused: get a new one and ask again once.
    ServiceTokenRefused,
}

impl Keystone {
    pub fn new(settings: KeystoneSettings) -> Self {
        let http = client::KeystoneHttp::new(settings.timeout);
        let bound_ms = i64::try_from(settings.cache_seconds).unwrap_or(i64::MAX / 2_000).saturating_mul(1000);
        Keystone {
            cache: Mutex::new(TokenCache::new(bound_ms, CACHE_CAPACITY)),
            settings,
            http,
            service_token: tokio::sync::Mutex::new(None),
        }
    }

    pub fn settings(&self) -> &KeystoneSettings {
        &self.settings
    }

    /// Validates a token, from the cache when it may.
    pub async fn validate(&self, token: &str) -> Verdict {
        let token = token.trim();
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Verdict::Invalid;
        }
        let key = cache::key(token);
        if let Some(v) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key, now_ms()) {
            return v;
        }
        let mut answer = self.ask(token, false).await;
        if matches!(answer, Answer::ServiceTokenRefused) {
            answer = self.ask(token, true).await;
        }
        let verdict = match answer {
            Answer::Verdict(Verdict::Valid(id)) if id.expires_at * 1000 <= now_ms() => Verdict::Invalid,
            Answer::Verdict(v) => v,
            // Only asked without a fresh service token; the second ask answers a verdict.
            Answer::ServiceTokenRefused => Verdict::Unavailable,
        };
        tracing::debug!(token = %cache::key_hint(&key), verdict = verdict_name(&verdict), "keystone validation");
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).put(key, verdict.clone(), now_ms());
        verdict
    }

    /// One `GET /v3/auth/tokens`. `renew` forces a new service token first.
    async fn ask(&self, token: &str, renew: bool) -> Answer {
        let auth = match &self.settings.service {
            Some(creds) => match self.service_token(creds, renew).await {
                Some(t) => t,
                None => return Answer::Verdict(Verdict::Unavailable),
            },
            None => token.to_string(),
        };
        let self_validating = self.settings.service.is_none();
        let url = format!("{}/auth/tokens?nocatalog", self.settings.url);
        let headers = [("x-auth-token", auth.as_str()), ("x-subject-token", token)];
        let resp = match self.http.send(http::Method::GET, &url, &headers, None).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach Keystone");
                return Answer::Verdict(Verdict::Unavailable);
            }
        };
        let status = resp.status;
        match status {
            200 => match token::parse_validation(&resp.body) {
                Some(id) => Answer::Verdict(Verdict::Valid(id)),
                None => {
                    tracing::warn!("Keystone's token document could not be read");
                    Answer::Verdict(Verdict::Unavailable)
                }
            },
            // The subject token is unknown, expired or revoked.
            404 => Answer::Verdict(Verdict::Invalid),
            // Asked with itself: the token is not valid. Asked with the service token: that one is.
            401 | 403 if self_validating => Answer::Verdict(Verdict::Invalid),
            401 if !renew => Answer::ServiceTokenRefused,
            401 | 403 => {
                tracing::error!(status, "Keystone refuses the service user's token; check its credentials and role");
                Answer::Verdict(Verdict::Unavailable)
            }
            _ => {
                tracing::warn!(status, "Keystone could not validate a token");
                Answer::Verdict(Verdict::Unavailable)
            }
        }
    }

    /// The service user's token, fetched again when close to expiry or when `renew`.
    async fn service_token(&self, creds: &ServiceCredentials, renew: bool) -> Option<String> {
        let mut held = self.service_token.lock().await;
        if let Some(t) = held.as_ref() {
            if !renew && t.expires_at - SERVICE_TOKEN_MARGIN_S > now_ms() / 1000 {
                return Some(t.token.clone());
            }
        }
        let body = serde_json::json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": creds.username, "password": creds.password, "domain": {"name": creds.domain}}}},
            "scope": {"project": {"name": creds.project, "domain": {"name": creds.domain}}}
        }});
        let url = format!("{}/auth/tokens?nocatalog", self.settings.url);
        let resp = match self.http.send(http::Method::POST, &url, &[], Some(body.to_string().into_bytes())).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach Keystone for the service token");
                return None;
            }
        };
        let (status, identity) = (resp.status, token::parse_validation(&resp.body));
        let token = resp.headers.get("x-subject-token").map(str::to_string);
        match (status, token, identity) {
            (201, Some(token), Some(id)) => {
                *held = Some(ServiceToken { token: token.clone(), expires_at: id.expires_at });
                Some(token)
            }
            _ => {
                tracing::error!(status, user = %creds.username, "Keystone refused the service credentials");
                *held = None;
                None
            }
        }
    }
}

fn verdict_name(v: &Verdict) -> &'static str {
    match v {
        Verdict::Valid(_) => "valid",
        Verdict::Invalid => "invalid",
        Verdict::Unavailable => "unavailable",
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_urls() {
        for u in ["http://h:5000", "http://h:5000/", "http://h:5000/v3", "http://h:5000/v3/", " http://h:5000/v3 "] {
            assert_eq!(v3_url(u), "http://h:5000/v3", "{u}");
        }
        assert_eq!(v3_url("https://cloud/identity"), "https://cloud/identity/v3");
    }

    #[test]
    fn root_and_signed_requests_need_no_token() {
        let none = http::HeaderMap::new();
        assert!(!needs_token("/", &none));
        assert!(!needs_token("", &none));
        assert!(needs_token("/v2/queues", &none));
        assert!(needs_token("//", &none), "only `/` itself is exempt, as in Zaqar");
        let mut signed = http::HeaderMap::new();
        signed.insert("url-signature", http::HeaderValue::from_static(""));
        assert!(!needs_token("/v2/queues/q/messages", &signed));
    }

    #[test]
    fn credentials_never_print_the_password() {
        let c = ServiceCredentials {
            username: "zaqar".into(),
            password: "hunter2".into(),
            project: "service".into(),
            domain: "Default".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        let s = KeystoneSettings { url: "u".into(), service: Some(c), cache_seconds: 1, timeout: Duration::ZERO };
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn unreachable_keystone_is_unavailable_and_not_remembered() {
        // Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
        let k = Keystone::new(KeystoneSettings {
            url: "http://127.0.0.1:9/v3".into(),
            service: None,
            cache_seconds: 60,
            timeout: Duration::from_millis(500),
        });
        assert_eq!(k.validate("some-token").await, Verdict::Unavailable);
        assert!(k.cache.lock().unwrap().is_empty());
        assert_eq!(k.validate("").await, Verdict::Invalid);
        assert_eq!(k.validate(&"x".repeat(MAX_TOKEN_LEN + 1)).await, Verdict::Invalid);
    }
}
