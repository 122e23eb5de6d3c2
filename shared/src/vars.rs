//! Environment variables, parsed strictly.
//!
//! A deployment typo must not silently change behaviour (an unknown auth mode falling back to noauth,
//! `ZAQAR_DEFAULT_CLAIM_TTL=abc` becoming the default): every value either parses or start-up stops
//! with a [`ConfigError`] that names the variable and what it accepts. Values are looked up in a
//! [`Vars`] snapshot rather than the process environment, so tests parse injected maps without
//! racing on `std::env`.

use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;

/// A variable whose value cannot be used; start-up stops with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {name}={value:?}: expected {expected}")]
pub struct ConfigError {
    pub name: String,
    pub value: String,
    pub expected: String,
}

impl ConfigError {
    pub fn new(name: &str, value: &str, expected: impl Into<String>) -> Self {
        ConfigError { name: name.to_string(), value: value.to_string(), expected: expected.into() }
    }
}

/// A snapshot of the variables a process was started with.
#[derive(Debug, Clone, Default)]
pub struct Vars(HashMap<String, String>);

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Vars {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        Vars(pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

impl Vars {
    /// The process environment (variables that are not valid UTF-8 are left out).
    pub fn from_env() -> Self {
        std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
    }

    /// The trimmed value; empty counts as unset (CloudFormation passes `""` for parameters left empty).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// Every variable, unordered.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn string(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or(default).to_string()
    }

    pub fn optional(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_string)
    }

    /// A comma-separated list; blank entries are dropped.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// One of a fixed set of names, compared without regard to case.
    pub fn choice<T: Copy>(&self, name: &str, default: T, choices: &[(&str, T)]) -> Result<T, ConfigError> {
        let Some(value) = self.get(name) else { return Ok(default) };
        choices.iter().find(|(n, _)| n.eq_ignore_ascii_case(value)).map(|(_, v)| *v).ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
            ConfigError::new(name, value, format!("one of {}", names.join(", ")))
        })
    }

    pub fn flag(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        const FLAGS: [(&str, bool); 8] = [
            ("true", true),
            ("false", false),
            ("1", true),
            ("0", false),
            ("yes", true),
            ("no", false),
            ("on", true),
            ("off", false),
        ];
        self.choice(name, default, &FLAGS)
    }

    /// An integer within `min..=max`.
    pub fn number<T>(&self, name: &str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Display + Copy,
    {
        let Some(value) = self.get(name) else { return Ok(default) };
        match value.parse::<T>() {
            Ok(n) if n >= min && n <= max => Ok(n),
            _ => Err(ConfigError::new(name, value, format!("an integer from {min} to {max}"))),
        }
    }

    /// An absolute URL with one of `schemes` and a host.
    pub fn url(&self, name: &str, schemes: &[&str]) -> Result<Option<String>, ConfigError> {
        let Some(value) = self.get(name) else { return Ok(None) };
        match url::Url::parse(value) {
            Ok(u) if schemes.contains(&u.scheme()) && u.host_str().is_some_and(|h| !h.is_empty()) => {
                Ok(Some(value.to_string()))
            }
            _ => Err(ConfigError::new(name, value, format!("a {} URL with a host", schemes.join(" or ")))),
        }
    }
}

/// Prints a configuration error and ends the process: a misconfigured function must not serve.
/// Lambda reports the failed init (and the message is in the function's log).
pub fn exit_on_error<T>(result: Result<T, ConfigError>) -> T {
    result.unwrap_or_else(|e| {
        eprintln!("zaqar: configuration error: {e}");
        std::process::exit(2)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs.iter().copied().collect()
    }

    #[test]
    fn empty_is_unset_and_values_are_trimmed() {
        let v = vars(&[("A", "  "), ("B", " x ")]);
        assert_eq!((v.get("A"), v.get("B"), v.get("C")), (None, Some("x"), None));
        assert_eq!(vars(&[("L", " a, ,b ,")]).list("L"), ["a", "b"]);
    }

    #[test]
    fn flags_take_the_usual_spellings_and_nothing_else() {
        for (text, want) in [("TRUE", true), ("on", true), ("1", true), ("No", false), ("off", false)] {
            assert_eq!(vars(&[("F", text)]).flag("F", !want), Ok(want), "{text}");
        }
        let e = vars(&[("F", "maybe")]).flag("F", true).unwrap_err();
        assert_eq!(e.to_string(), r#"invalid F="maybe": expected one of true, false, 1, 0, yes, no, on, off"#);
    }

    #[test]
    fn numbers_must_parse_and_fit() {
        assert_eq!(vars(&[]).number("N", 5, 1, 10), Ok(5));
        assert_eq!(vars(&[("N", "7")]).number("N", 5, 1, 10), Ok(7));
        for bad in ["abc", "0", "11", "7.5", "-1"] {
            let e = vars(&[("N", bad)]).number("N", 5i64, 1, 10).unwrap_err();
            assert_eq!(e.expected, "an integer from 1 to 10", "{bad}");
        }
    }

    #[test]
    fn urls_need_a_listed_scheme_and_a_host() {
        assert_eq!(
            vars(&[("U", "https://q.example")]).url("U", &["http", "https"]),
            Ok(Some("https://q.example".into()))
        );
        assert!(vars(&[("U", "q.example")]).url("U", &["http", "https"]).is_err());
        assert!(vars(&[("U", "ftp://q.example")]).url("U", &["http", "https"]).is_err());
    }
}
