//! Delivery of one document to one subscriber, with Zaqar's retry policy inside a time budget.
//!
//! Webhooks: one shared HTTP client whose DNS resolver refuses a name if ANY of its addresses is
//! internal and hands the connector exactly the checked addresses (resolve once, connect to what was
//! checked: no DNS rebinding window). IP-literal hosts never reach a resolver, so they are checked
//! before sending and on every redirect hop. Redirects are followed (up to 3, as Zaqar's `requests`
//! does) only because each hop passes the same checks. No proxy: a proxy would connect for us.

use crate::mail;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use serde_json::Value;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::time::Instant;
use zaqar::webhook::{self, AllowList, Subscriber};
use zaqar::App;

/// How one delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Not retryable (a 4xx, a refused address, an unusable subscriber): dropped, like Zaqar does.
    Rejected(String),
    /// The retry policy ran out: dropped, like Zaqar does.
    GaveUp(String),
    /// The time budget ran out before the policy did: the stream should retry the record.
    Deferred(String),
}

/// One attempt's result.
enum Attempt {
    Ok,
    Retry(String),
    Permanent(String),
}

/// A refusal by the address guard (found again in reqwest's error chain).
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

struct GuardedResolver {
    allow: Arc<AllowList>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ips: Vec<IpAddr> = addrs.iter().map(|a| a.ip()).collect();
            webhook::check_resolved(&host, &ips, &allow)
                .map_err(|m| Box::new(Refused(m)) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

fn build_client(allow: Arc<AllowList>, timeout: Duration) -> Option<reqwest::Client> {
    let hop_allow = allow.clone();
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 3 {
            return attempt.error(Refused("too many redirects".into()));
        }
        let literal = match attempt.url().host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        match literal.map(|ip| webhook::check_ip(ip, &hop_allow)) {
            Some(Err(why)) => attempt.error(Refused(why)),
            _ => attempt.follow(),
        }
    });
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver { allow }))
        .redirect(redirects)
        .no_proxy()
        .connect_timeout(timeout.min(Duration::from_secs(2)))
        .timeout(timeout)
        .user_agent(concat!("zaqar-fanout/", env!("CARGO_PKG_VERSION")))
        .build()
        .ok() // never fall back to an unguarded client
}

/// A built client and the allow list and timeout it was built for.
type CachedClient = (Vec<String>, Duration, reqwest::Client);

/// The webhook client for this allow list, built once per process (and again only if the list changes).
fn client(allow_entries: &[String], timeout: Duration) -> Option<reqwest::Client> {
    static CLIENT: OnceLock<Mutex<Option<CachedClient>>> = OnceLock::new();
    let cell = CLIENT.get_or_init(|| Mutex::new(None));
    let mut guard = cell.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((entries, t, c)) = guard.as_ref() {
        if entries == allow_entries && *t == timeout {
            return Some(c.clone());
        }
    }
    let c = build_client(Arc::new(AllowList::parse(allow_entries)), timeout)?;
    *guard = Some((allow_entries.to_vec(), timeout, c.clone()));
    Some(c)
}

/// Everything one delivery needs.
pub struct Delivery<'a> {
    pub app: &'a App,
    pub subscriber: &'a str,
    pub options: &'a Value,
    pub doc: &'a Value,
    /// Mail subject/text builder input: the confirmation e-mail differs from the notification one.
    pub mail: mail::MailKind,
    pub schedule: Vec<Duration>,
    pub deadline: Instant,
    pub attempt_timeout: Duration,
}

impl Delivery<'_> {
    /// First attempt, then the retry schedule, each started only while the deadline allows (an attempt
    /// in flight at the deadline runs to its own timeout, so the invocation needs budget + attempt
    /// timeout).
    pub async fn run(&self) -> Outcome {
        let target = match webhook::parse_subscriber(self.subscriber) {
            Ok(t) => t,
            Err(why) => return Outcome::Rejected(why),
        };
        // Deliveries wait for a concurrency slot: one that gets it after the deadline is left to the
        // stream's retry instead of stretching the invocation past its timeout.
        if Instant::now() >= self.deadline {
            return Outcome::Deferred("the time budget ran out before the first attempt".into());
        }
        let mut last = match self.attempt(&target).await {
            Attempt::Ok => return Outcome::Delivered,
            Attempt::Permanent(why) => return Outcome::Rejected(why),
            Attempt::Retry(why) => why,
        };
        for delay in &self.schedule {
            // checked: a stored policy may ask for delays no Instant can hold.
            if Instant::now().checked_add(*delay).is_none_or(|at| at >= self.deadline) {
                return Outcome::Deferred(last);
            }
            tokio::time::sleep(*delay).await;
            last = match self.attempt(&target).await {
                Attempt::Ok => return Outcome::Delivered,
                Attempt::Permanent(why) => return Outcome::Rejected(why),
                Attempt::Retry(why) => why,
            };
        }
        Outcome::GaveUp(last)
    }

    async fn attempt(&self, target: &Subscriber) -> Attempt {
        match target {
            Subscriber::Webhook { url, .. } => self.post(url).await,
            Subscriber::Mailto { to, subject } => {
                match mail::send(
                    self.app,
                    to,
                    subject.as_deref(),
                    self.options,
                    self.doc,
                    self.mail,
                    self.attempt_timeout,
                )
                .await
                {
                    Ok(()) => Attempt::Ok,
                    Err(mail::MailError::Permanent(why)) => Attempt::Permanent(why),
                    Err(mail::MailError::Transient(why)) => Attempt::Retry(why),
                }
            }
        }
    }

    async fn post(&self, url: &url::Url) -> Attempt {
        let allow = AllowList::parse(&self.app.config.webhook_allow);
        // Checked again here: the allow list may have changed since the subscription was created.
        if let Err(why) = webhook::check_url_literal(url, &allow) {
            return Attempt::Permanent(why);
        }
        let body = crate::notify::webhook_body(self.doc, self.options);
        let Some(client) = client(&self.app.config.webhook_allow, self.attempt_timeout) else {
            return Attempt::Retry("the HTTP client could not be built".into());
        };
        let result = client.post(url.clone()).headers(headers(self.options)).body(body).send().await;
        match result {
            Ok(resp) if resp.status().as_u16() < 400 => Attempt::Ok,
            // A subscriber that refuses the request will refuse it again.
            Ok(resp) if resp.status().is_client_error() && resp.status().as_u16() != 429 => {
                Attempt::Permanent(format!("HTTP {}", resp.status().as_u16()))
            }
            Ok(resp) => Attempt::Retry(format!("HTTP {}", resp.status().as_u16())),
            Err(e) => match refusal(&e) {
                Some(why) => Attempt::Permanent(why),
                None => Attempt::Retry(describe(&e)),
            },
        }
    }
}

/// `Content-Type: application/json` plus `options.post_headers` (values never logged).
fn headers(options: &Value) -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(extra) = options.get("post_headers").and_then(Value::as_object) {
        for (name, value) in extra {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match (HeaderName::try_from(name.as_str()), HeaderValue::try_from(text)) {
                (Ok(n), Ok(v)) => {
                    map.insert(n, v);
                }
                _ => tracing::warn!(header = %name, "skipping an invalid post_headers entry"),
            }
        }
    }
    map
}

fn refusal(e: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(r) = err.downcast_ref::<Refused>() {
            return Some(r.0.clone());
        }
        source = err.source();
    }
    None
}

/// A short cause for logs: the URL is left out (it may carry credentials or tokens).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        let cause = std::error::Error::source(e).map(|s| s.to_string()).unwrap_or_else(|| "request failed".into());
        cause.chars().take(200).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn post_headers_merge_over_content_type() {
        let h = headers(
            &json!({"post_headers": {"X-Token": "abc", "Content-Type": "text/plain", "bad name": "x", "n": 5}}),
        );
        assert_eq!(h["x-token"], "abc");
        assert_eq!(h["content-type"], "text/plain");
        assert_eq!(h["n"], "5");
        assert_eq!(h.len(), 3);
    }
}
