//! Validated identifiers and limits: parsed once at the edge, trusted everywhere after.

use crate::error::ApiError;
use std::fmt;

/// A queue (or topic) name: `^[a-zA-Z0-9_.-]{1,64}$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueName(String);

impl QueueName {
    pub const MAX_BYTES: usize = 64;

    pub fn parse(name: &str) -> Result<Self, ApiError> {
        let ok = !name.is_empty()
            && name.len() <= Self::MAX_BYTES
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if ok {
            Ok(QueueName(name.to_string()))
        } else {
            Err(ApiError::invalid_queue())
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The tenant: every item is partitioned by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProjectId(String);

impl ProjectId {
    pub const MAX_LEN: usize = 256;

    /// From the `X-Project-ID` header (or its aliases). Empty values are refused here; the length limit
    /// is only checked on routes carrying a queue name (Zaqar quirk), see [`ProjectId::check_length`].
    pub fn parse(value: &str) -> Result<Self, ApiError> {
        if value.is_empty() {
            return Err(ApiError::new(
                http::StatusCode::BAD_REQUEST,
                "Empty project header not allowed",
                "X-PROJECT-ID cannot be an empty string. Specify the right header X-PROJECT-ID and retry.",
            ));
        }
        Ok(ProjectId(value.to_string()))
    }

    pub fn check_length(&self) -> Result<(), ApiError> {
        if self.0.len() > Self::MAX_LEN {
            Err(ApiError::invalid_queue())
        } else {
            Ok(())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Client-ID, compared as a UUID value (dashed and dashless spellings are one client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId(uuid::Uuid);

impl ClientId {
    /// Accepts what Python's `uuid.UUID()` accepts: dashed, 32 hex digits, braces, `urn:uuid:`.
    pub fn parse(value: &str) -> Result<Self, ApiError> {
        let hex: String = value.replace("urn:", "").replace("uuid:", "");
        let hex = hex.trim_matches(|c| c == '{' || c == '}').replace('-', "");
        if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            if let Ok(u) = uuid::Uuid::parse_str(&hex) {
                return Ok(ClientId(u));
            }
        }
        Err(ApiError::new(http::StatusCode::BAD_REQUEST, "Wrong UUID value", "Malformed hexadecimal UUID."))
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

/// The longest server-generated id (subscription, claim) this service accepts in a path: ours are 24
/// characters; anything beyond the bound names nothing and would not fit in a DynamoDB key.
pub const MAX_ID_BYTES: usize = 64;

/// Whether `id` could be an id this service issued (length only; the store decides whether it exists).
pub fn plausible_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_BYTES
}

/// A paging marker short enough for a key condition that orders every name of at most `longest` bytes
/// exactly as the whole marker does: such a name differs from the marker within its first `longest + 1`
/// bytes or is a prefix of it, so cutting a longer marker at the first character boundary after that
/// many bytes changes no comparison. Zaqar compares whole markers; clients see the same pages.
pub fn key_marker(marker: &str, longest: usize) -> &str {
    if marker.len() <= longest + 1 {
        return marker;
    }
    let mut end = longest + 1;
    while !marker.is_char_boundary(end) {
        end += 1;
    }
    &marker[..end]
}

/// A page size or claim/pop count, `1..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(u32);

impl Limit {
    pub fn new(value: i64, max: u32, message: impl FnOnce(u32) -> String) -> Result<Self, ApiError> {
        if value < 1 || value > max as i64 {
            return Err(ApiError::invalid_api(message(max)));
        }
        Ok(Limit(value as u32))
    }
    pub fn get(self) -> u32 {
        self.0
    }
    pub fn usize(self) -> usize {
        self.0 as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names() {
        assert!(QueueName::parse("a.b-c_D9").is_ok());
        assert!(QueueName::parse(&"b".repeat(64)).is_ok());
        assert!(QueueName::parse(&"b".repeat(65)).is_err());
        assert!(QueueName::parse("").is_err());
        assert!(QueueName::parse("bad$name").is_err());
        assert!(QueueName::parse("bad name").is_err());
        assert!(QueueName::parse("é").is_err());
    }

    #[test]
    fn client_ids_parse_like_python_uuid() {
        let dashed = ClientId::parse("3381af92-2b9e-11e3-b191-71861300734c").unwrap();
        assert_eq!(ClientId::parse("3381af922b9e11e3b19171861300734c").unwrap(), dashed);
        assert_eq!(ClientId::parse("{3381af92-2b9e-11e3-b191-71861300734c}").unwrap(), dashed);
        assert_eq!(ClientId::parse("urn:uuid:3381af92-2b9e-11e3-b191-71861300734c").unwrap(), dashed);
        assert_eq!(ClientId::parse("3381AF92-2B9E-11E3-B191-71861300734C").unwrap(), dashed);
        let err = ClientId::parse("not-a-uuid").unwrap_err();
        assert_eq!(
            (err.title.as_str(), err.description.as_deref()),
            ("Wrong UUID value", Some("Malformed hexadecimal UUID."))
        );
        assert!(ClientId::parse("3381af92-2b9e-11e3-b191-71861300734").is_err());
    }

    #[test]
    fn long_markers_order_names_like_the_whole_marker() {
        assert_eq!(key_marker("abc", 64), "abc");
        let long = format!("{}{}", "m".repeat(64), "z".repeat(5000));
        assert_eq!(key_marker(&long, 64).len(), 65);
        let wide = "é".repeat(3000); // 2 bytes each: cut after 66 bytes, on a boundary
        assert_eq!(key_marker(&wide, 64), "é".repeat(33));
        let names = ["m".repeat(64), "m".repeat(63), format!("{}n", "m".repeat(63)), "n".into(), "a".into()];
        for marker in [&long, &wide, &"m".repeat(65)] {
            let cut = key_marker(marker, 64);
            for name in &names {
                assert_eq!(name.as_str() > marker.as_str(), name.as_str() > cut, "{name} vs {} bytes", marker.len());
            }
        }
    }

    #[test]
    fn limits() {
        let msg = |m| format!("Limit must be at least 1 and may not be greater than {m}.");
        assert!(Limit::new(0, 20, msg).is_err());
        assert!(Limit::new(21, 20, msg).is_err());
        assert_eq!(Limit::new(20, 20, msg).unwrap().get(), 20);
    }
}
