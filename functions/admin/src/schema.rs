//! The JSON-schema checks of Zaqar's pool and flavor bodies, with jsonschema's (Draft 4) messages.
//!
//! Zaqar reports a schema failure as 400 "Invalid request body" whose description embeds jsonschema's
//! message (upstream also prefixes the raw exception arguments; we send the message alone). When several
//! rules fail, jsonschema reports the first by schema keyword order: `type`, then `properties` (in schema
//! order), then `required`/`oneOf`, then `additionalProperties` — so do we. Instances are shown the way
//! Python's `repr` shows them (`'abc'`, `True`, `None`, `1.0`, `{'a': 1}`).

use serde_json::{Map, Value};
use zaqar::json::python_float;
use zaqar::ApiError;

/// One property rule of a schema.
#[derive(Clone, Copy)]
pub enum Rule {
    /// `{"type": "integer", "minimum": .., "maximum": ..}`
    Integer { min: i64, max: i64 },
    /// `{"type": "string", "maxLength": ..}`
    String { max_len: usize },
    /// `{"type": "object"}`
    Object,
    /// `{"type": "array"}`
    Array,
}

fn fail(message: String) -> ApiError {
    ApiError::invalid_body(message)
}

/// The top-level `"type": "object"` check.
pub fn object(doc: &Value) -> Result<&Map<String, Value>, ApiError> {
    doc.as_object().ok_or_else(|| fail(format!("{} is not of type 'object'", repr(doc))))
}

/// Checks one property if it is present.
pub fn property(doc: &Map<String, Value>, name: &str, rule: Rule) -> Result<(), ApiError> {
    let Some(v) = doc.get(name) else { return Ok(()) };
    let type_error = |t: &str| fail(format!("{} is not of type '{t}'", repr(v)));
    match rule {
        Rule::Integer { min, max } => {
            // Draft 4: floats (even 1.0) and booleans are not integers.
            let i = match v {
                Value::Number(n) => n.as_i64().ok_or_else(|| type_error("integer"))?,
                _ => return Err(type_error("integer")),
            };
            if i < min {
                return Err(fail(format!("{i} is less than the minimum of {min}")));
            }
            if i > max {
                return Err(fail(format!("{i} is greater than the maximum of {max}")));
            }
        }
        Rule::String { max_len } => {
            let s = v.as_str().ok_or_else(|| type_error("string"))?;
            if s.chars().count() > max_len {
                return Err(fail(format!("{} is too long", repr(v))));
            }
        }
        Rule::Object => {
            if !v.is_object() {
                return Err(type_error("object"));
            }
        }
        Rule::Array => {
            if !v.is_array() {
                return Err(type_error("array"));
            }
        }
    }
    Ok(())
}

/// `"required": [...]`
pub fn required(doc: &Map<String, Value>, names: &[&str]) -> Result<(), ApiError> {
    match names.iter().find(|n| !doc.contains_key(**n)) {
        Some(n) => Err(fail(format!("{} is a required property", repr_str(n)))),
        None => Ok(()),
    }
}

/// `"oneOf": [{"required": [name]}]`
pub fn one_of_required(doc: &Map<String, Value>, name: &str) -> Result<(), ApiError> {
    if doc.contains_key(name) {
        Ok(())
    } else {
        Err(fail(format!("{} is not valid under any of the given schemas", repr(&Value::Object(doc.clone())))))
    }
}

/// `"additionalProperties": false`
pub fn no_other_keys(doc: &Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    let mut extras: Vec<&String> = doc.keys().filter(|k| !allowed.contains(&k.as_str())).collect();
    if extras.is_empty() {
        return Ok(());
    }
    extras.sort();
    let verb = if extras.len() == 1 { "was" } else { "were" };
    let shown: Vec<String> = extras.iter().map(|k| repr_str(k)).collect();
    Err(fail(format!("Additional properties are not allowed ({} {verb} unexpected)", shown.join(", "))))
}

/// Python's `str()` of a decoded JSON value (strings as they are, everything else as `repr`).
pub fn python_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => repr(other),
    }
}

/// Python's `repr()` of a decoded JSON value.
pub fn repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => n.as_f64().map(python_float).unwrap_or_else(|| n.to_string()),
        },
        Value::String(s) => repr_str(s),
        Value::Array(items) => format!("[{}]", items.iter().map(repr).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => {
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{}: {}", repr_str(k), repr(v))).collect();
            format!("{{{}}}", parts.join(", "))
        }
    }
}

/// Python's `repr()` of a string: single quotes unless the text has `'` and no `"`.
pub fn repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || (0x7f..0xa0).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn repr_matches_python() {
        assert_eq!(repr(&json!("a'b")), "\"a'b\"");
        assert_eq!(repr(&json!("a'b\"")), "'a\\'b\"'");
        assert_eq!(repr(&json!({"a": [1, true, null, "x"]})), "{'a': [1, True, None, 'x']}");
        let v: Value = serde_json::from_str("[1.0, 1e2]").unwrap();
        assert_eq!(repr(&v), "[1.0, 100.0]");
        assert_eq!(python_str(&json!("p1")), "p1");
    }

    #[test]
    fn messages_follow_jsonschema() {
        let doc = json!({"weight": 1.5, "x": 1, "b": 2});
        let m = doc.as_object().unwrap();
        let e = property(m, "weight", Rule::Integer { min: 0, max: 10 }).unwrap_err();
        assert_eq!(e.description.as_deref(), Some("1.5 is not of type 'integer'"));
        let e = no_other_keys(m, &["weight"]).unwrap_err();
        assert_eq!(e.description.as_deref(), Some("Additional properties are not allowed ('b', 'x' were unexpected)"));
        let e = required(m, &["uri"]).unwrap_err();
        assert_eq!(e.description.as_deref(), Some("'uri' is a required property"));
        let e = one_of_required(&Map::new(), "pool_list").unwrap_err();
        assert_eq!(e.description.as_deref(), Some("{} is not valid under any of the given schemas"));
    }
}
