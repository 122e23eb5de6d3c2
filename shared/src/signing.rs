//! Pre-signed URLs (docs/api.md#presigned): Zaqar's HMAC-SHA256 signature, checked in constant time, with bounded
//! expiry.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Expiry format of signed data: UTC, second precision, no zone suffix.
pub const EXPIRES_FORMAT: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");

/// What a signature covers. `paths` and `methods` are sorted before signing, as Zaqar does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedScope {
    pub paths: Vec<String>,
    pub methods: Vec<String>,
    pub project: String,
    /// `%Y-%m-%dT%H:%M:%S` in UTC.
    pub expires: String,
}

impl SignedScope {
    pub fn normalised(mut self) -> Self {
        self.paths.sort();
        self.methods.sort();
        self
    }

    /// The signed message. The separator is a literal backslash + `n`, exactly as upstream builds it.
    fn message(&self) -> String {
        format!("{}\\n{}\\n{}\\n{}", self.paths.join(","), self.methods.join(","), self.project, self.expires)
    }

    /// Lowercase hex HMAC-SHA256 under `key`.
    pub fn sign(&self, key: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
        mac.update(self.message().as_bytes());
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Constant-time comparison of a presented signature with ours.
    pub fn verify(&self, key: &str, presented: &str) -> bool {
        let expected = self.sign(key);
        expected.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

/// Parses an ISO-8601 instant (offset optional, treated as UTC when absent) into epoch seconds.
pub fn parse_instant(text: &str) -> Option<i64> {
    use time::format_description::well_known::Iso8601;
    if let Ok(t) = time::OffsetDateTime::parse(text, &Iso8601::DEFAULT) {
        return Some(t.unix_timestamp());
    }
    if let Ok(t) = time::PrimitiveDateTime::parse(text, &Iso8601::DEFAULT) {
        return Some(t.assume_utc().unix_timestamp());
    }
    for fmt in [
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]"),
    ] {
        if let Ok(t) = time::PrimitiveDateTime::parse(text, fmt) {
            return Some(t.assume_utc().unix_timestamp());
        }
    }
    time::Date::parse(text, time::macros::format_description!("[year]-[month]-[day]"))
        .ok()
        .map(|d| d.midnight().assume_utc().unix_timestamp())
}

pub fn format_expires(epoch_s: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(epoch_s)
        .ok()
        .and_then(|t| t.format(EXPIRES_FORMAT).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_zaqar_recording() {
        // From the spec's verified share response (secret_key = test).
        let scope = SignedScope {
            paths: vec!["/v2/queues/shq/messages".into(), "/v2/queues/shq/claims".into()],
            methods: vec!["POST".into(), "GET".into()],
            project: "proj-probe".into(),
            expires: "2099-01-01T00:00:00".into(),
        }
        .normalised();
        assert_eq!(scope.sign("test"), "0de653d2774fa00f9a306722d7aa05c4eb0930fae884c04f8d21aad080698cd0");
        assert!(scope.verify("test", "0de653d2774fa00f9a306722d7aa05c4eb0930fae884c04f8d21aad080698cd0"));
        assert!(!scope.verify("test", "0de653d2774fa00f9a306722d7aa05c4eb0930fae884c04f8d21aad080698cd1"));
        assert!(!scope.verify("other", &scope.sign("test")));
    }

    #[test]
    fn instants() {
        assert_eq!(parse_instant("1970-01-01T00:01:00"), Some(60));
        assert_eq!(parse_instant("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_instant("1970-01-01T00:00:10Z"), Some(10));
        assert_eq!(parse_instant("nonsense"), None);
        assert_eq!(format_expires(60), "1970-01-01T00:01:00");
    }
}
