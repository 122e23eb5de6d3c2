//! JSON the way Zaqar reads and writes it.
//!
//! Reading: the top level must be an object or array, integers must fit in i64 (docs/api.md#transport-json), and numbers must
//! be finite as doubles: `1e400` would be served back as Python's `Infinity`, which strict JSON parsers
//! refuse, so one producer could break every consumer's listing. (Python clients cannot send a
//! non-finite number at all: `json.dumps` writes `Infinity`, which is unparsable here.)
//! Writing: Python's `json.dumps` layout (`", "` and `": "` separators, keys in insertion order, floats
//! as Python's `repr`), so bodies and `MD5:` checksums match what Python Zaqar produces.

use crate::error::ApiError;
use serde::Serialize;
use serde_json::Value;
use std::io;

/// Parses a request body under Zaqar's rules. `None` means "no body at all".
pub fn parse_body(body: &[u8]) -> Result<Option<Value>, ApiError> {
    if body.is_empty() {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(body).map_err(|_| ApiError::unparsable_body())?;
    if !(value.is_object() || value.is_array()) {
        return Err(ApiError::unparsable_body());
    }
    check_numbers(&value)?;
    Ok(Some(value))
}

/// Integers must fit in i64 (Zaqar's message), other numbers must be finite doubles.
fn check_numbers(v: &Value) -> Result<(), ApiError> {
    match v {
        Value::Number(n) => {
            let text = n.to_string();
            if !text.contains(['.', 'e', 'E']) {
                if n.as_i64().is_none() {
                    return Err(ApiError::invalid_body("JSON contains integer that is too large."));
                }
            } else if !text.parse::<f64>().is_ok_and(f64::is_finite) {
                return Err(ApiError::invalid_body("JSON contains a number that is too large."));
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(check_numbers),
        Value::Object(map) => map.values().try_for_each(check_numbers),
        _ => Ok(()),
    }
}

/// Reads an optional integer field the way Zaqar's typed fields work: JSON `true`/`false` count as 1/0
/// (Python's bool is an int), floats and strings are a type error.
pub fn int_field(obj: &serde_json::Map<String, Value>, name: &str) -> Result<Option<i64>, ApiError> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b as i64)),
        Some(Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64()),
        Some(_) => Err(ApiError::invalid_body(format!("The value of the \"{name}\" field must be a int."))),
    }
}

/// Serialises like Python's `json.dumps(value)` (ensure_ascii on, as for checksums).
pub fn python_dumps<T: Serialize + ?Sized>(value: &T) -> String {
    dumps_with(value, true)
}

/// Serialises for response bodies: Python layout, UTF-8 kept as is.
pub fn to_body<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    dumps_with(value, false).into_bytes()
}

fn dumps_with<T: Serialize + ?Sized>(value: &T, ensure_ascii: bool) -> String {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter { ensure_ascii });
    // Serialising a serde_json::Value or a plain struct into memory cannot fail.
    value.serialize(&mut ser).expect("in-memory JSON serialisation");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

struct PythonFormatter {
    ensure_ascii: bool,
}

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
    // Never `Infinity`/`NaN` (invalid JSON): a non-finite double is `null` as serde_json writes it, and
    // a stored number text that overflows a double (accepted before it was refused) is written verbatim.
    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        if value.is_finite() {
            w.write_all(python_float(value).as_bytes())
        } else {
            w.write_all(b"null")
        }
    }
    fn write_number_str<W: ?Sized + io::Write>(&mut self, w: &mut W, value: &str) -> io::Result<()> {
        if value.contains(['.', 'e', 'E']) {
            match value.parse::<f64>() {
                Ok(f) if f.is_finite() => w.write_all(python_float(f).as_bytes()),
                _ => w.write_all(value.as_bytes()),
            }
        } else {
            w.write_all(value.as_bytes())
        }
    }
    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, w: &mut W, fragment: &str) -> io::Result<()> {
        if !self.ensure_ascii || fragment.is_ascii() {
            return w.write_all(fragment.as_bytes());
        }
        let mut buf = [0u16; 2];
        for c in fragment.chars() {
            if c.is_ascii() {
                w.write_all(&[c as u8])?;
            } else {
                for unit in c.encode_utf16(&mut buf) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

/// Python's `repr(float)`: shortest round-trip digits, exponent form outside 1e-4 <= |x| < 1e16.
pub fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    let sci = format!("{f:e}"); // e.g. "1.5e-5", "1e16"
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    if (-4..16).contains(&exp) {
        let plain = format!("{f}");
        if plain.contains('.') {
            plain
        } else {
            format!("{plain}.0")
        }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dumps_matches_python_layout_and_escapes() {
        let v: Value = serde_json::from_str(r#"{"b": 1, "a": "é", "z": [1, 2]}"#).unwrap();
        assert_eq!(python_dumps(&v), r#"{"b": 1, "a": "\u00e9", "z": [1, 2]}"#);
        assert_eq!(python_dumps(&json!("plain")), r#""plain""#);
        assert_eq!(python_dumps(&json!("😀\n")), r#""\ud83d\ude00\n""#);
    }

    #[test]
    fn floats_follow_python_repr() {
        assert_eq!(python_float(1.5), "1.5");
        assert_eq!(python_float(100000.0), "100000.0");
        assert_eq!(python_float(1e16), "1e+16");
        assert_eq!(python_float(0.00001), "1e-05");
        assert_eq!(python_float(0.0001), "0.0001");
        let v: Value = serde_json::from_str("[1.50, 1E5, -2.5e-7]").unwrap();
        assert_eq!(python_dumps(&v), "[1.5, 100000.0, -2.5e-07]");
    }

    #[test]
    fn body_rules() {
        assert_eq!(parse_body(b"").unwrap(), None);
        assert_eq!(parse_body(b"\"fail\"").unwrap_err(), ApiError::unparsable_body());
        assert_eq!(parse_body(b"123").unwrap_err(), ApiError::unparsable_body());
        assert_eq!(parse_body(b"{\"a\": ").unwrap_err(), ApiError::unparsable_body());
        assert_eq!(parse_body(&[0xff, 0xfe]).unwrap_err(), ApiError::unparsable_body());
        let big = parse_body(b"{\"a\": [9223372036854775808]}").unwrap_err();
        assert_eq!(big.description.as_deref(), Some("JSON contains integer that is too large."));
        assert!(parse_body(b"{\"a\": -9223372036854775808}").is_ok());
        for text in [&b"{\"body\": 1e400}"[..], b"[{\"x\": [-1.5e309]}]", b"{\"a\": {\"b\": 1.0e999}}"] {
            let e = parse_body(text).unwrap_err();
            assert_eq!(e.description.as_deref(), Some("JSON contains a number that is too large."));
        }
        assert!(parse_body(b"{\"tiny\": 1e-400, \"big\": 1.7e308}").is_ok());
    }

    #[test]
    fn output_is_never_infinity() {
        // Stored before non-finite numbers were refused: written verbatim, which strict parsers accept.
        let v: Value = serde_json::from_str(r#"{"a": 1e400, "b": -1E999}"#).unwrap();
        // serde_json (arbitrary_precision) may normalise the exponent's spelling when it parses; either
        // way the text is written as stored, never as Infinity.
        let stored = v.to_string().replace(',', ", ").replace(':', ": ");
        assert!(!stored.contains("inf") && !stored.contains("Inf"), "{stored}");
        assert_eq!(python_dumps(&v), stored);
        assert_eq!(to_body(&v), stored.into_bytes());
        assert_eq!(python_dumps(&[f64::NAN, f64::INFINITY, 2.5]), "[null, null, 2.5]");
    }

    #[test]
    fn int_fields_accept_bools_reject_floats() {
        let o = json!({"a": true, "b": 2, "c": 2.0, "d": "3"});
        let o = o.as_object().unwrap();
        assert_eq!(int_field(o, "a").unwrap(), Some(1));
        assert_eq!(int_field(o, "b").unwrap(), Some(2));
        assert_eq!(int_field(o, "x").unwrap(), None);
        assert!(int_field(o, "c").is_err());
        assert_eq!(
            int_field(o, "d").unwrap_err().description.as_deref(),
            Some("The value of the \"d\" field must be a int.")
        );
    }
}
