//! Queue metadata: reserved keys, their defaults and Zaqar's JSON-patch subset (docs/api.md:
//! `#queues-reserved-metadata`, `#queues-get`, `#queues-patch`).

use crate::config::Limits;
use crate::error::ApiError;
use serde_json::{Map, Value};

pub type Metadata = Map<String, Value>;

/// Reads a reserved integer the way Zaqar does: only truthy values are type-checked, Python bools are
/// ints, and anything present (not null) is range-checked.
fn reserved_int(meta: &Metadata, key: &str) -> Result<Option<i64>, ApiError> {
    match meta.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b as i64)),
        Some(Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64()),
        Some(_) => Err(ApiError::invalid_api(format!("{key} must be integer."))),
    }
}

/// Validates reserved keys on PUT and after PATCH.
pub fn validate(meta: &Metadata, limits: &Limits) -> Result<(), ApiError> {
    if let Some(ttl) = reserved_int(meta, "_default_message_ttl")? {
        if !(60..=limits.max_message_ttl).contains(&ttl) {
            return Err(ApiError::invalid_api(format!(
                "_default_message_ttl can not exceed {} seconds, and must be at least 60 seconds long.",
                limits.max_message_ttl
            )));
        }
    }
    if let Some(size) = reserved_int(meta, "_max_messages_post_size")? {
        if !(1..=limits.max_messages_post_size as i64).contains(&size) {
            return Err(ApiError::invalid_api(format!(
                "_max_messages_post_size can not exceed {},  and must be at least greater than 0.",
                limits.max_messages_post_size
            )));
        }
    }
    reserved_int(meta, "_max_claim_count")?;
    if let Some(shards) = reserved_int(meta, "_shards")? {
        let max = crate::keys::MAX_SHARDS;
        if !(1..=i64::from(max)).contains(&shards) {
            return Err(ApiError::invalid_api(format!(
                "_shards must be at least 1 and may not be greater than {max}."
            )));
        }
    }
    if let Some(ttl) = reserved_int(meta, "_dead_letter_queue_messages_ttl")? {
        if !(60..=limits.max_message_ttl).contains(&ttl) {
            return Err(ApiError::invalid_api(format!(
                "The TTL for a message may not exceed {} seconds, and must be at least 60 seconds long.",
                limits.max_message_ttl
            )));
        }
    }
    if let Some(delay) = reserved_int(meta, "_default_message_delay")? {
        if !(0..=limits.max_message_delay).contains(&delay) {
            return Err(ApiError::invalid_api(format!(
                "The TTL can not exceed {} seconds, and must be at least 0 seconds long.",
                limits.max_message_delay
            )));
        }
    }
    match meta.get("_enable_encrypt_messages") {
        None | Some(Value::Null) | Some(Value::Bool(_)) => {}
        Some(v) if is_falsy(v) => {}
        Some(_) => return Err(ApiError::invalid_api("_enable_encrypt_messages must be boolean.")),
    }
    validate_retry_policy(meta.get("_retry_policy"))
}

/// The largest count or delay (seconds) a retry policy may give: Zaqar's longest message lifetime, after
/// which no retry has anything left to deliver.
pub const RETRY_POLICY_MAX: i64 = 1_209_600;

/// Validates a `_retry_policy` object (docs/api.md#subscriptions-retry-policy), used by queue metadata and subscription
/// options.
pub fn validate_retry_policy(policy: Option<&Value>) -> Result<(), ApiError> {
    let policy = match policy {
        None => return Ok(()),
        Some(v) if is_falsy(v) => return Ok(()),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(ApiError::invalid_api("retry_policy must be a dict.")),
    };
    for key in
        ["retries_with_no_delay", "minimum_delay_retries", "minimum_delay", "maximum_delay", "maximum_delay_retries"]
    {
        match policy.get(key) {
            None => {}
            Some(v) if is_falsy(v) => {}
            // Zaqar has no bounds, but its notifier fails on negative delays; here no value may make the
            // fan-out's arithmetic overflow.
            Some(Value::Number(n)) if n.as_i64().is_some_and(|v| !(0..=RETRY_POLICY_MAX).contains(&v)) => {
                return Err(ApiError::invalid_api(format!(
                    "Retry policy: {key} must be between 0 and {RETRY_POLICY_MAX}."
                )));
            }
            Some(Value::Number(n)) if n.as_i64().is_some() => {}
            Some(Value::Bool(_)) => {}
            Some(_) => return Err(ApiError::invalid_api(format!("Retry policy: {key} must be a integer."))),
        }
    }
    match policy.get("retry_backoff_function") {
        None => {}
        Some(v) if is_falsy(v) => {}
        Some(Value::String(f)) if matches!(f.as_str(), "linear" | "arithmetic" | "geometric" | "exponential") => {}
        Some(Value::String(_)) => return Err(ApiError::invalid_api("invalid retry_backoff_function.")),
        Some(_) => return Err(ApiError::invalid_api("retry_backoff_function must be a string.")),
    }
    match policy.get("ignore_subscription_override") {
        None | Some(Value::Bool(_)) => {}
        Some(v) if is_falsy(v) => {}
        Some(_) => return Err(ApiError::invalid_api("ignore_subscription_override must be a boolean.")),
    }
    let min = policy.get("minimum_delay").and_then(Value::as_i64);
    let max = policy.get("maximum_delay").and_then(Value::as_i64);
    if let (Some(min), Some(max)) = (min, max) {
        if max < min || max - min < 10 {
            return Err(ApiError::invalid_api("invalid minimum_delay and maximum_delay."));
        }
    }
    Ok(())
}

/// Python truthiness of a JSON value.
pub fn is_falsy(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

const RESERVED: [&str; 7] = [
    "_max_messages_post_size",
    "_default_message_ttl",
    "_default_message_delay",
    "_dead_letter_queue",
    "_dead_letter_queue_messages_ttl",
    "_max_claim_count",
    "_enable_encrypt_messages",
];

/// The metadata clients see: reserved keys that are absent or falsy replaced by their defaults.
pub fn with_defaults(meta: &Metadata, limits: &Limits) -> Metadata {
    let mut out = meta.clone();
    let defaults = [
        Value::from(limits.max_messages_post_size as i64),
        Value::from(limits.default_message_ttl),
        Value::from(limits.default_message_delay),
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Bool(false),
    ];
    for (key, default) in RESERVED.iter().zip(defaults) {
        if out.get(*key).is_none_or(is_falsy) {
            out.insert(key.to_string(), default);
        }
    }
    out
}

/// Effective settings a queue's metadata gives its messages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueSettings {
    pub default_ttl: Option<i64>,
    pub max_post_size: Option<i64>,
    /// Non-zero only on delayed queues (docs/api.md#messages-delay).
    pub default_delay: i64,
    pub dead_letter_queue: Option<String>,
    pub dead_letter_ttl: Option<i64>,
    pub max_claim_count: Option<i64>,
}

impl QueueSettings {
    pub fn from_meta(meta: &Metadata) -> Self {
        let int = |k: &str| meta.get(k).and_then(Value::as_i64).filter(|v| *v != 0);
        QueueSettings {
            default_ttl: int("_default_message_ttl"),
            max_post_size: int("_max_messages_post_size"),
            default_delay: int("_default_message_delay").unwrap_or(0),
            dead_letter_queue: meta
                .get("_dead_letter_queue")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            dead_letter_ttl: int("_dead_letter_queue_messages_ttl"),
            max_claim_count: int("_max_claim_count"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PatchOp {
    Add(String, Value),
    Replace(String, Value),
    Remove(String),
}

/// Parses Zaqar's JSON-patch document: an array of `{op, path: "/metadata/<key>", value}`.
pub fn parse_patch(doc: &Value) -> Result<Vec<PatchOp>, ApiError> {
    let changes = doc
        .as_array()
        .ok_or_else(|| ApiError::invalid_body("Request body must be a JSON array of operation objects."))?;
    let mut ops = Vec::with_capacity(changes.len());
    for change in changes {
        let change = change.as_object().ok_or_else(|| ApiError::invalid_body("Operations must be JSON objects."))?;
        let op =
            match change.get("op") {
                None | Some(Value::Null) => return Err(ApiError::invalid_body(
                    "Unable to find `op` in JSON Schema change. It must be one of the following: add, remove, replace.",
                )),
                Some(Value::String(op)) if matches!(op.as_str(), "add" | "remove" | "replace") => op.clone(),
                Some(other) => {
                    let shown = other.as_str().map(str::to_string).unwrap_or_else(|| other.to_string());
                    return Err(ApiError::invalid_body(format!(
                        "Invalid operation: `{shown}`. It must be one of the following: add, remove, replace."
                    )));
                }
            };
        let pointer = match change.get("path") {
            Some(Value::String(p)) => p.as_str(),
            Some(_) => return Err(ApiError::invalid_body("Pointer must be a string.")),
            None => return Err(ApiError::invalid_body("Unable to find 'path' in JSON Schema change")),
        };
        let path = decode_pointer(pointer)?;
        if path.len() != 2 {
            return Err(ApiError::invalid_body(format!(
                "Invalid JSON pointer for this resource: '/{}, e.g /metadata/key'",
                path.join("/")
            )));
        }
        let key = path[1].clone();
        let value = || {
            change
                .get("value")
                .cloned()
                .ok_or_else(|| ApiError::invalid_body(format!("Operation \"{op}\" requires a member named \"value\".")))
        };
        // Zaqar's order: the missing value is reported before a wrong root.
        let op = match op.as_str() {
            "add" => PatchOp::Add(key, value()?),
            "replace" => PatchOp::Replace(key, value()?),
            _ => PatchOp::Remove(key),
        };
        if !path[0].eq_ignore_ascii_case("metadata") {
            return Err(ApiError::invalid_body("The root of path must be metadata, e.g /metadata/key."));
        }
        ops.push(op);
    }
    Ok(ops)
}

fn decode_pointer(pointer: &str) -> Result<Vec<String>, ApiError> {
    let bad = |why: &str| Err(ApiError::invalid_body(format!("Pointer `{pointer}` {why}")));
    if !pointer.starts_with('/') {
        return bad("does not start with \"/\".");
    }
    let inner = &pointer[1..];
    let bytes = inner.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'/' {
            let next = bytes[i + 1..].iter().find(|c| !c.is_ascii_whitespace());
            if next == Some(&b'/') {
                return bad("contains adjacent \"/\".");
            }
        }
    }
    if pointer.len() > 1 && pointer.ends_with('/') {
        return bad("end with \"/\".");
    }
    let chars: Vec<char> = pointer.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if *c == '~' && !matches!(chars.get(i + 1), Some('0') | Some('1')) {
            return bad("contains \"~\" not part of a recognized escape sequence.");
        }
    }
    Ok(inner.split('/').map(|t| t.replace("~1", "/").replace("~0", "~").trim().to_string()).collect())
}

/// Applies parsed operations in order (docs/api.md#queues-patch).
pub fn apply_patch(meta: &mut Metadata, ops: Vec<PatchOp>) -> Result<(), ApiError> {
    for op in ops {
        match op {
            PatchOp::Add(k, v) => {
                meta.insert(k, v);
            }
            PatchOp::Replace(k, v) => {
                if !meta.contains_key(&k) && !RESERVED.contains(&k.as_str()) {
                    return Err(ApiError::conflict(format!("Can't replace non-existent object {k}.")));
                }
                meta.insert(k, v);
            }
            PatchOp::Remove(k) => {
                if meta.shift_remove(&k).is_none() && !RESERVED.contains(&k.as_str()) {
                    return Err(ApiError::conflict(format!("Can't remove non-existent object {k}.")));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(v: Value) -> Metadata {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn reserved_validation() {
        let l = Limits::default();
        assert!(validate(&m(json!({"_default_message_ttl": 120, "x": [1]})), &l).is_ok());
        let e = validate(&m(json!({"_default_message_ttl": 99999999})), &l).unwrap_err();
        assert_eq!(
            e.description.as_deref(),
            Some("_default_message_ttl can not exceed 1209600 seconds, and must be at least 60 seconds long.")
        );
        assert!(validate(&m(json!({"_default_message_ttl": "x"})), &l).is_err());
        assert!(validate(&m(json!({"_default_message_ttl": 0})), &l).is_err());
        assert!(validate(&m(json!({"_default_message_delay": 901})), &l).is_err());
        assert!(validate(&m(json!({"_default_message_delay": 0})), &l).is_ok());
        assert!(validate(&m(json!({"_max_messages_post_size": 262145})), &l).is_err());
        assert!(validate(&m(json!({"_enable_encrypt_messages": "yes"})), &l).is_err());
        assert!(validate(&m(json!({"_retry_policy": {"retry_backoff_function": "cubic"}})), &l).is_err());
        assert!(validate(&m(json!({"_retry_policy": {"minimum_delay": 5, "maximum_delay": 10}})), &l).is_err());
        assert!(validate(&m(json!({"_retry_policy": {"minimum_delay": 5, "maximum_delay": 30}})), &l).is_ok());
    }

    #[test]
    fn retry_policy_numbers_are_bounded() {
        let l = Limits::default();
        let extreme = json!({"_retry_policy": {"minimum_delay": i64::MIN, "maximum_delay": i64::MAX}});
        let e = validate(&m(extreme), &l).unwrap_err();
        assert_eq!(e.description.as_deref(), Some("Retry policy: minimum_delay must be between 0 and 1209600."));
        for key in ["retries_with_no_delay", "minimum_delay_retries", "maximum_delay", "maximum_delay_retries"] {
            assert!(validate_retry_policy(Some(&json!({ key: -1 }))).is_err(), "{key}");
            assert!(validate_retry_policy(Some(&json!({ key: RETRY_POLICY_MAX + 1 }))).is_err(), "{key}");
        }
        let widest =
            json!({"minimum_delay": 0, "maximum_delay": RETRY_POLICY_MAX, "retries_with_no_delay": RETRY_POLICY_MAX});
        assert!(validate_retry_policy(Some(&widest)).is_ok());
    }

    #[test]
    fn defaults_fill_absent_and_falsy() {
        let out = with_defaults(&m(json!({"_default_message_ttl": 0, "description": "d"})), &Limits::default());
        assert_eq!(out["_default_message_ttl"], json!(3600));
        assert_eq!(out["_max_messages_post_size"], json!(262144));
        assert_eq!(out["_dead_letter_queue"], Value::Null);
        assert_eq!(out["_enable_encrypt_messages"], json!(false));
        assert_eq!(out["description"], json!("d"));
    }

    #[test]
    fn patch_documents() {
        let ops = parse_patch(&json!([{"op": "add", "path": "/metadata/a~1b", "value": 1}])).unwrap();
        assert_eq!(ops, vec![PatchOp::Add("a/b".into(), json!(1))]);
        assert!(parse_patch(&json!([{"op": "move", "path": "/metadata/a"}]))
            .unwrap_err()
            .description
            .unwrap()
            .starts_with("Invalid operation: `move`"));
        assert!(parse_patch(&json!([{"op": "add", "path": "/metadata/a"}])).is_err());
        assert!(parse_patch(&json!([{"op": "add", "path": "/metadata/a/b", "value": 1}])).is_err());
        assert!(parse_patch(&json!([{"op": "add", "path": "/other/a", "value": 1}])).is_err());
        assert!(parse_patch(&json!([{"op": "add", "path": "metadata/a", "value": 1}])).is_err());
        assert!(parse_patch(&json!(["x"])).is_err());
        assert!(parse_patch(&json!({"op": "add"})).is_err());
        let mut meta = m(json!({"a": 1}));
        apply_patch(
            &mut meta,
            vec![PatchOp::Replace("a".into(), json!(2)), PatchOp::Remove("_max_claim_count".into())],
        )
        .unwrap();
        assert_eq!(meta["a"], json!(2));
        assert_eq!(apply_patch(&mut meta, vec![PatchOp::Replace("zz".into(), json!(1))]).unwrap_err().status, 409);
        assert_eq!(apply_patch(&mut meta, vec![PatchOp::Remove("zz".into())]).unwrap_err().status, 409);
    }
}
