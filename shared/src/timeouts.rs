//! Deadlines and retries for every storage call, so a request answers within a few seconds whatever
//! DynamoDB does (frozen, unreachable, throttling).
//!
//! The SDK's defaults have no operation deadline: a frozen endpoint holds a request for as long as the
//! TCP connection lives. Here every call gets a connect timeout, a per-attempt timeout (which also
//! bounds the wait for the first response byte) and an operation timeout over all attempts; throttling
//! and transient errors are retried by the SDK's standard strategy with a short exponential backoff,
//! inside the operation timeout. With the defaults, a request whose first storage call hangs answers
//! 503 after 4 s (two 2-s attempts), under API Gateway's and Zaqar clients' patience.
//!
//! Variables (milliseconds, read once at cold start, refused at start-up when invalid):
//! `ZAQAR_STORAGE_CONNECT_TIMEOUT_MS` (1000), `ZAQAR_STORAGE_ATTEMPT_TIMEOUT_MS` (2000),
//! `ZAQAR_STORAGE_TIMEOUT_MS` (4000, the operation deadline), `ZAQAR_STORAGE_MAX_ATTEMPTS` (3).

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use std::time::Duration;

/// The longest deadline accepted: a storage call that needs more is a fault, not a slow answer.
const MAX_MS: u64 = 60_000;
const MAX_ATTEMPTS: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageTimeouts {
    pub connect: Duration,
    /// One attempt, including the wait for the first response byte.
    pub attempt: Duration,
    /// The whole call: every attempt and the backoff between them.
    pub operation: Duration,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
}

impl Default for StorageTimeouts {
    fn default() -> Self {
        StorageTimeouts {
            connect: Duration::from_millis(1000),
            attempt: Duration::from_millis(2000),
            operation: Duration::from_millis(4000),
            max_attempts: 3,
        }
    }
}

impl StorageTimeouts {
    /// From the `ZAQAR_STORAGE_*` variables; an unparsable or inconsistent value is an error.
    pub fn from_env() -> Result<Self, String> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let d = Self::default();
        let ms = |name: &str, default: Duration| -> Result<Duration, String> {
            match get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) {
                None => Ok(default),
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if (1..=MAX_MS).contains(&n) => Ok(Duration::from_millis(n)),
                    _ => Err(format!("{name} must be a number of milliseconds from 1 to {MAX_MS}, not {v:?}")),
                },
            }
        };
        let t = StorageTimeouts {
            connect: ms("ZAQAR_STORAGE_CONNECT_TIMEOUT_MS", d.connect)?,
            attempt: ms("ZAQAR_STORAGE_ATTEMPT_TIMEOUT_MS", d.attempt)?,
            operation: ms("ZAQAR_STORAGE_TIMEOUT_MS", d.operation)?,
            max_attempts: match get("ZAQAR_STORAGE_MAX_ATTEMPTS")
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
            {
                None => d.max_attempts,
                Some(v) => match v.parse::<u32>() {
                    Ok(n) if (1..=MAX_ATTEMPTS).contains(&n) => n,
                    _ => return Err(format!("ZAQAR_STORAGE_MAX_ATTEMPTS must be from 1 to {MAX_ATTEMPTS}, not {v:?}")),
                },
            },
        };
        if t.connect > t.attempt || t.attempt > t.operation {
            return Err(format!(
                "storage timeouts must satisfy connect ({:?}) <= attempt ({:?}) <= operation ({:?})",
                t.connect, t.attempt, t.operation
            ));
        }
        Ok(t)
    }

    pub fn timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect)
            .read_timeout(self.attempt)
            .operation_attempt_timeout(self.attempt)
            .operation_timeout(self.operation)
            .build()
    }

    /// The SDK's standard strategy (throttling and transient errors, with its retry quota) with a
    /// backoff short enough that every attempt fits in the operation deadline.
    pub fn retry_config(&self) -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(self.max_attempts)
            .with_initial_backoff(Duration::from_millis(100))
            .with_max_backoff(Duration::from_secs(1))
    }

    /// `sdk` with these deadlines and retries: every client built from it inherits them.
    pub fn apply(&self, sdk: &aws_config::SdkConfig) -> aws_config::SdkConfig {
        sdk.to_builder().timeout_config(self.timeout_config()).retry_config(self.retry_config()).build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<StorageTimeouts, String> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        StorageTimeouts::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_answer_within_five_seconds() {
        let t = parse(&[]).unwrap();
        assert_eq!(t, StorageTimeouts::default());
        assert!(t.operation < Duration::from_secs(5));
        let c = t.timeout_config();
        assert_eq!(c.operation_timeout(), Some(Duration::from_secs(4)));
        assert_eq!(c.operation_attempt_timeout(), Some(Duration::from_secs(2)));
        assert_eq!(c.connect_timeout(), Some(Duration::from_secs(1)));
        assert_eq!(t.retry_config().max_attempts(), 3);
    }

    #[test]
    fn values_are_validated() {
        let t = parse(&[("ZAQAR_STORAGE_TIMEOUT_MS", "9000"), ("ZAQAR_STORAGE_MAX_ATTEMPTS", " 5 ")]).unwrap();
        assert_eq!((t.operation, t.max_attempts), (Duration::from_secs(9), 5));
        for bad in [
            ("ZAQAR_STORAGE_TIMEOUT_MS", "0"),
            ("ZAQAR_STORAGE_TIMEOUT_MS", "-1"),
            ("ZAQAR_STORAGE_TIMEOUT_MS", "4s"),
            ("ZAQAR_STORAGE_TIMEOUT_MS", "60001"),
            ("ZAQAR_STORAGE_TIMEOUT_MS", "1500"), // below the attempt timeout
            ("ZAQAR_STORAGE_CONNECT_TIMEOUT_MS", "3000"), // above the attempt timeout
            ("ZAQAR_STORAGE_MAX_ATTEMPTS", "0"),
            ("ZAQAR_STORAGE_MAX_ATTEMPTS", "11"),
        ] {
            let err = parse(&[bad]).unwrap_err();
            assert!(err.contains(bad.0) || err.contains("must satisfy"), "{bad:?}: {err}");
        }
    }
}
