//! Query-string parsing with falcon's conversions (docs/api.md#transport-query): blank values are absent, booleans take
//! Python's spellings, lists are comma-separated or repeated.

use crate::error::ApiError;

#[derive(Debug, Clone, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: &str) -> Self {
        let pairs = form_urlencoded::parse(raw.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        Query { pairs }
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The last value given for `name` (falcon keeps the last of repeated scalars).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| ApiError::invalid_param(name, "an integer")),
        }
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some("true" | "True" | "t" | "yes" | "y" | "on" | "1") => Ok(Some(true)),
            Some("false" | "False" | "f" | "no" | "n" | "off" | "0") => Ok(Some(false)),
            Some(_) => Err(ApiError::invalid_param(name, "a boolean")),
        }
    }

    /// All values for a list parameter, comma-separated or repeated, blanks dropped.
    pub fn list(&self, name: &str) -> Option<Vec<String>> {
        let items: Vec<String> = self
            .pairs
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if items.is_empty() {
            None
        } else {
            Some(items)
        }
    }
}

/// Builds a `next` link: path plus the given parameters (values percent-encoded).
pub fn next_href(path: &str, params: &[(&str, String)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        ser.append_pair(k, v);
    }
    format!("{path}?{}", ser.finish())
}

/// A page's `links` (docs/api.md#transport-paging): one `next` link whenever the page is non-empty, `[]` otherwise. The
/// link repeats the recognised parameters the request gave (`keep`, plus `extra` ones) and ends with `marker`.
pub fn page_links(
    path: &str,
    query: &Query,
    keep: &[&str],
    extra: &[(String, String)],
    marker: Option<String>,
) -> serde_json::Value {
    let Some(marker) = marker else { return serde_json::json!([]) };
    let mut params: Vec<(&str, String)> =
        keep.iter().filter_map(|k| query.get(k).map(|v| (*k, v.to_string()))).collect();
    params.extend(extra.iter().map(|(k, v)| (k.as_str(), v.clone())));
    params.push(("marker", marker));
    serde_json::json!([{"rel": "next", "href": next_href(path, &params)}])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_falcon() {
        let q = Query::parse("limit=5&echo=&detailed=yes&ids=a,b&ids=c&bad=maybe");
        assert_eq!(q.int("limit").unwrap(), Some(5));
        assert_eq!(q.bool("echo").unwrap(), None);
        assert_eq!(q.bool("detailed").unwrap(), Some(true));
        assert_eq!(q.list("ids").unwrap(), vec!["a", "b", "c"]);
        assert_eq!(q.bool("bad").unwrap_err().title, "Invalid parameter");
        assert_eq!(Query::parse("limit=x").int("limit").unwrap_err().title, "Invalid parameter");
    }

    #[test]
    fn page_links_only_for_non_empty_pages() {
        let q = Query::parse("limit=2&echo=true&other=x");
        assert_eq!(page_links("/p", &q, &["limit", "echo"], &[], None), serde_json::json!([]));
        let links = page_links("/p", &q, &["limit", "echo", "detailed"], &[], Some("9".into()));
        assert_eq!(links, serde_json::json!([{"rel": "next", "href": "/p?limit=2&echo=true&marker=9"}]));
    }

    #[test]
    fn next_links_encode_values() {
        assert_eq!(
            next_href("/v2/queues", &[("limit", "2".into()), ("marker", "q 1".into())]),
            "/v2/queues?limit=2&marker=q+1"
        );
    }
}
