//! Which table-stream records reach the fan-out, written once.
//!
//! Three places apply this filter: the event source mapping's `FilterCriteria` in
//! `infra/template.yaml` (so filtered records are neither delivered nor billed), the local stream
//! poller (which stands in for the event source) and the fan-out itself (which skips anything else it
//! is handed). The poller and the fan-out call [`admits`]; a test holds the template's patterns to
//! [`FanoutFilter::pattern`].
//!
//! What passes: the INSERT of a message item (`sk` = `M#…`) of a queue that has subscriptions (`fo`
//! is true, see [`keys::FANOUT_ATTR`]: posting to a queue nobody subscribed to invokes nothing), and the INSERT or MODIFY of a
//! subscription item (`sk` = `S#…`) whose new image carries `notify_seq` (a confirmation was asked
//! for; the fan-out sends it only when the number grew). Queue, claim and marker writes and TTL
//! deletions do not.

use crate::keys;
use serde_json::{json, Value};

/// The subscription attribute a (un)subscribe confirmation request increments.
pub const NOTIFY_SEQ: &str = "notify_seq";

/// One filter pattern: any of `events`, a sort key starting with `sk_prefix`, and (optionally) a
/// number attribute present in the new image, or a boolean attribute true in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanoutFilter {
    pub events: &'static [&'static str],
    pub sk_prefix: &'static str,
    pub new_image_number: Option<&'static str>,
    pub new_image_true: Option<&'static str>,
}

/// The patterns, in the template's order; a record passes if any matches.
pub const FANOUT_FILTERS: [FanoutFilter; 2] = [
    FanoutFilter {
        events: &["INSERT"],
        sk_prefix: keys::MESSAGE_PREFIX,
        new_image_number: None,
        new_image_true: Some(keys::FANOUT_ATTR),
    },
    FanoutFilter {
        events: &["INSERT", "MODIFY"],
        sk_prefix: keys::SUBSCRIPTION_PREFIX,
        new_image_number: Some(NOTIFY_SEQ),
        new_image_true: None,
    },
];

impl FanoutFilter {
    /// The event-filtering pattern (Lambda's `FilterCriteria.Filters[].Pattern`).
    pub fn pattern(&self) -> Value {
        let mut dynamodb = json!({"Keys": {keys::SK: {"S": [{"prefix": self.sk_prefix}]}}});
        if let Some(attr) = self.new_image_number {
            dynamodb["NewImage"] = json!({attr: {"N": [{"exists": true}]}});
        }
        if let Some(attr) = self.new_image_true {
            dynamodb["NewImage"] = json!({attr: {"BOOL": [true]}});
        }
        json!({"eventName": self.events, "dynamodb": dynamodb})
    }

    /// Whether a record with this event name, sort key and new image matches.
    pub fn matches(&self, event: &str, sk: &str, image: &impl NewImage) -> bool {
        self.events.contains(&event)
            && sk.starts_with(self.sk_prefix)
            && self.new_image_number.is_none_or(|a| image.has_number(a))
            && self.new_image_true.is_none_or(|a| image.is_true(a))
    }
}

/// What the filters ask of a record's new image.
pub trait NewImage {
    fn has_number(&self, attr: &str) -> bool;
    fn is_true(&self, attr: &str) -> bool;
}

impl NewImage for crate::keys::Item {
    fn has_number(&self, attr: &str) -> bool {
        matches!(self.get(attr), Some(aws_sdk_dynamodb::types::AttributeValue::N(_)))
    }
    fn is_true(&self, attr: &str) -> bool {
        matches!(self.get(attr), Some(aws_sdk_dynamodb::types::AttributeValue::Bool(true)))
    }
}

/// A new image in the JSON shape Lambda delivers (DynamoDB attribute values).
struct JsonImage<'a>(&'a Value);

impl NewImage for JsonImage<'_> {
    fn has_number(&self, attr: &str) -> bool {
        self.0[attr]["N"].is_string()
    }
    fn is_true(&self, attr: &str) -> bool {
        self.0[attr]["BOOL"] == Value::Bool(true)
    }
}

/// Whether the fan-out acts on a record, given its event name, sort key and new image.
pub fn admits(event: &str, sk: &str, image: &impl NewImage) -> bool {
    FANOUT_FILTERS.iter().any(|f| f.matches(event, sk, image))
}

/// [`admits`] for a record in the JSON shape Lambda delivers (DynamoDB attribute values).
pub fn admits_json(record: &Value) -> bool {
    let change = &record["dynamodb"];
    admits(
        record["eventName"].as_str().unwrap_or_default(),
        change["Keys"][keys::SK]["S"].as_str().unwrap_or_default(),
        &JsonImage(&change["NewImage"]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(event: &str, sk: &str, new_image: Value) -> Value {
        json!({"eventName": event, "dynamodb": {"Keys": {"pk": {"S": "Q#q#p"}, "sk": {"S": sk}}, "NewImage": new_image}})
    }

    #[test]
    fn message_inserts_and_confirmation_requests_pass() {
        let subscribed = json!({"fo": {"BOOL": true}});
        assert!(admits_json(&record("INSERT", "M#00000000000000000001", subscribed)));
        // Messages of queues without subscriptions never reach the fan-out.
        assert!(!admits_json(&record("INSERT", "M#00000000000000000001", json!({}))));
        assert!(!admits_json(&record("MODIFY", "M#00000000000000000001", json!({}))));
        assert!(!admits_json(&record("REMOVE", "M#00000000000000000001", json!({}))));
        let requested = json!({"notify_seq": {"N": "1"}});
        assert!(admits_json(&record("INSERT", "S#abc", requested.clone())));
        assert!(admits_json(&record("MODIFY", "S#abc", requested.clone())));
        assert!(!admits_json(&record("MODIFY", "S#abc", json!({}))));
        assert!(!admits_json(&record("INSERT", "L#claim", requested)));
        assert!(!admits_json(&record("INSERT", "H", json!({}))));
        assert!(!admits_json(&json!({"eventName": "INSERT"})));
    }

    #[test]
    fn patterns_are_lambdas_syntax() {
        assert_eq!(
            FANOUT_FILTERS[1].pattern(),
            json!({"eventName": ["INSERT", "MODIFY"], "dynamodb": {"Keys": {"sk": {"S": [{"prefix": "S#"}]}},
                   "NewImage": {"notify_seq": {"N": [{"exists": true}]}}}})
        );
    }
}
