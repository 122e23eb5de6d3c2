//! What subscribers receive (docs/api.md#subscriptions-delivery): notification and confirmation documents, `post_data`
//! templating.

use serde_json::{Map, Value};
use zaqar::json::python_dumps;
use zaqar::signing::{self, SignedScope};
use zaqar::store::messages::Message;
use zaqar::store::subscriptions::{Subscription, UNSUBSCRIBE};

/// The notification for one message, keys in the order Zaqar's webhook sends them (recorded delivery:
/// `{"ttl", "body", "Message_Type", "queue_name"}`), `delay` only for messages of delayed queues.
pub fn message_notification(message: &Message, queue: &str) -> Value {
    let mut doc = Map::new();
    doc.insert("ttl".into(), Value::from(message.ttl_s));
    doc.insert("body".into(), message.body_value());
    if let Some(delay) = message.delay_s {
        doc.insert("delay".into(), Value::from(delay));
    }
    doc.insert("Message_Type".into(), Value::from("Notification"));
    doc.insert("queue_name".into(), Value::from(queue));
    Value::Object(doc)
}

/// The path a subscriber confirms (or unconfirms) with.
pub fn confirm_path(queue: &str, sid: &str) -> String {
    format!("/v2/queues/{queue}/subscriptions/{sid}/confirm")
}

/// The (un)subscribe confirmation document with a pre-signed `PUT` on the confirm path
/// (docs/api.md#subscriptions-delivery, #presigned-signature).
pub fn confirmation(sub: &Subscription, project: &str, key: &str, public_url: Option<&str>, expires_s: i64) -> Value {
    let path = confirm_path(&sub.source, &sub.id);
    let expires = signing::format_expires(expires_s);
    let scope =
        SignedScope { paths: vec![path.clone()], methods: vec!["PUT".into()], project: project.into(), expires };
    let signature = scope.sign(key);
    let unsubscribe = sub.notify.as_deref() == Some(UNSUBSCRIBE);
    let (kind, text) = if unsubscribe {
        (
            UNSUBSCRIBE,
            format!(
                "You have unsubscribed successfully to the queue: {}, you can resubscribe it by using confirmed=True.",
                sub.source
            ),
        )
    } else {
        ("SubscriptionConfirmation", format!("You have chosen to subscribe to the queue: {}", sub.source))
    };
    let mut doc = Map::new();
    if let Some(base) = public_url {
        doc.insert("WSGISubscribeURL".into(), Value::from(format!("{}{path}", base.trim_end_matches('/'))));
    }
    doc.insert("Message_Type".into(), Value::from(kind));
    doc.insert("Message".into(), Value::from(text));
    doc.insert("URL-Signature".into(), Value::from(signature));
    doc.insert("URL-Methods".into(), Value::from("PUT"));
    doc.insert("URL-Paths".into(), Value::from(path));
    doc.insert("X-Project-ID".into(), Value::from(project));
    doc.insert("URL-Expires".into(), Value::from(scope.expires));
    doc.insert("SubscribeBody".into(), serde_json::json!({"confirmed": true}));
    doc.insert("UnsubscribeBody".into(), serde_json::json!({"confirmed": false}));
    doc.insert("queue_name".into(), Value::from(sub.source.clone()));
    Value::Object(doc)
}

/// The request body: the document as Python's `json.dumps` writes it, or `options.post_data` with the
/// literal `"$zaqar_message$"` (quotes included) replaced by it. A non-string template (clients often
/// send an object) is serialised first; Zaqar would fail on it.
pub fn webhook_body(doc: &Value, options: &Value) -> String {
    let json = python_dumps(doc);
    match options.get("post_data") {
        None | Some(Value::Null) => json,
        Some(Value::String(template)) => template.replace("\"$zaqar_message$\"", &json),
        Some(other) => python_dumps(other).replace("\"$zaqar_message$\"", &json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(delay: Option<i64>) -> Message {
        Message {
            shard: 0,
            k: 1,
            id: "x".into(),
            body: r#"{"event": "BackupStarted", "é": 1}"#.into(),
            ttl_s: 300,
            created_ms: 0,
            expires_ms: 300_000,
            client: None,
            delay_until_ms: None,
            delay_s: delay,
            claim_id: None,
            claim_until_ms: None,
            claim_count: 0,
            checksum: None,
        }
    }

    #[test]
    fn notification_matches_recorded_delivery() {
        let doc = message_notification(&message(None), "q1");
        assert_eq!(
            webhook_body(&doc, &json!({})),
            r#"{"ttl": 300, "body": {"event": "BackupStarted", "\u00e9": 1}, "Message_Type": "Notification", "queue_name": "q1"}"#
        );
        let delayed = message_notification(&message(Some(30)), "q1");
        assert_eq!(delayed["delay"], json!(30));
    }

    #[test]
    fn post_data_templates() {
        let doc = json!({"a": 1});
        let opts = json!({"post_data": "{\"messages\": [{\"body\": \"$zaqar_message$\", \"ttl\": 60}]}"});
        assert_eq!(webhook_body(&doc, &opts), r#"{"messages": [{"body": {"a": 1}, "ttl": 60}]}"#);
        let opts = json!({"post_data": {"messages": [{"body": "$zaqar_message$", "ttl": 60}]}});
        assert_eq!(webhook_body(&doc, &opts), r#"{"messages": [{"body": {"a": 1}, "ttl": 60}]}"#);
    }
}
