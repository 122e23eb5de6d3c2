//! Subscriptions (docs/api.md, Subscriptions): items `Q#{queue}#{project}` / `S#{sid}` in the queue's partition.
//!
//! Attributes: `sid`, `source` (queue name), `subscriber`, `options` (JSON text), `ttl_s`, `created_ms`,
//! `expires_ms` (+ native TTL `expires_at`), `confirmed`. Ids sort by creation time, so a Query on the
//! partition lists them in Zaqar's order. Expired items linger until DynamoDB's TTL reaper runs, so
//! every read filters on `expires_ms`.
//!
//! Confirmation notifications are requested through the table's stream, not sent from the HTTP
//! handler: a write that wants one sets `notify` (the message type), `notify_expires_s` (the signed
//! URL's expiry, fixed at request time as Zaqar does) and bumps `notify_seq`; the fan-out function sends
//! the notification when it sees a new `notify_seq`. The API call stays one DynamoDB write, and a slow
//! or failing subscriber is retried by the stream instead of holding the request.
//!
//! Uniqueness by (project, queue, subscriber), which Zaqar's MongoDB gets from a unique index, comes
//! from a marker item per subscriber (`U#{sha256}` holding the subscription id), taken with a
//! conditional write before the subscription is written: of two concurrent creates one gets the
//! marker, the other answers with the winner's id. A create writes the marker and the subscription in
//! one transaction, so a marker whose subscription is missing is stale (expired or deleted) and is
//! taken over (compare-and-set on the id it holds): expiry needs no clean-up.

use super::StoreError;
use super::{get_bool, get_i64, get_s, is_condition_failed, ttl_epoch, unavailable, Store};
use crate::keys::{self, n, s, Item};
use crate::types::{ProjectId, QueueName};
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnConsumedCapacity, TransactWriteItem};
use serde_json::{json, Value};

/// Confirmation message types (docs/api.md, Subscriptions: What subscribers receive).
pub const SUBSCRIBE: &str = "SubscriptionConfirmation";
pub const UNSUBSCRIBE: &str = "UnsubscribeConfirmation";

#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub id: String,
    pub source: String,
    pub subscriber: String,
    pub ttl_s: i64,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub options: Value,
    pub confirmed: bool,
    /// The last confirmation notification requested (message type), its sequence and URL expiry.
    pub notify: Option<String>,
    pub notify_seq: i64,
    pub notify_expires_s: Option<i64>,
}

impl Subscription {
    pub fn from_item(item: &Item) -> Option<Subscription> {
        let sk = get_s(item, keys::SK)?;
        let id = sk.strip_prefix(keys::SUBSCRIPTION_PREFIX)?.to_string();
        Some(Subscription {
            id,
            source: get_s(item, "source").unwrap_or_default().to_string(),
            subscriber: get_s(item, "subscriber")?.to_string(),
            ttl_s: get_i64(item, "ttl_s")?,
            created_ms: get_i64(item, "created_ms")?,
            expires_ms: get_i64(item, "expires_ms")?,
            options: get_s(item, "options").and_then(|t| serde_json::from_str(t).ok()).unwrap_or_else(|| json!({})),
            confirmed: get_bool(item, "confirmed").unwrap_or(false),
            notify: get_s(item, "notify").map(str::to_string),
            notify_seq: get_i64(item, "notify_seq").unwrap_or(0),
            notify_expires_s: get_i64(item, "notify_expires_s"),
        })
    }

    pub fn alive(&self, now_ms: i64) -> bool {
        self.expires_ms > now_ms
    }

    /// The API representation (docs/api.md, Subscriptions, MongoDB field order); `confirmed` is always present.
    pub fn to_json(&self, now_ms: i64) -> Value {
        json!({
            "id": self.id,
            "source": self.source,
            "subscriber": self.subscriber,
            "ttl": self.ttl_s,
            "age": ((now_ms - self.created_ms) / 1000).max(0),
            "options": self.options,
            "confirmed": self.confirmed,
        })
    }
}

/// A confirmation notification to request through the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notice {
    pub kind: &'static str,
    /// Epoch seconds the pre-signed confirm URL stays valid until.
    pub expires_s: i64,
}

/// Result of a create (docs/api.md, Subscriptions: Create).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    New(String),
    /// The subscriber was already subscribed to the queue.
    Existing {
        id: String,
        confirmed: bool,
    },
}

/// The fields a PATCH changes (already validated).
#[derive(Debug, Clone, Default)]
pub struct SubscriptionPatch {
    pub subscriber: Option<String>,
    pub ttl_s: Option<i64>,
    pub options: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Updated {
    Done,
    NotFound,
    /// Another subscription of the queue has the new subscriber.
    Conflict,
}

fn expires_ms(now_ms: i64, ttl_s: i64) -> i64 {
    now_ms.saturating_add(ttl_s.saturating_mul(1000))
}

impl Store {
    /// Creates a subscription, or reports the live one that already has this subscriber. When
    /// `notice` is set, a new subscription (or an existing unconfirmed one) gets it requested.
    pub async fn create_subscription(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        subscriber: &str,
        ttl_s: i64,
        options: &Value,
        notice: Option<Notice>,
    ) -> Result<Created, StoreError> {
        // The subscriber's marker names the subscription that holds the URI, if any (two point reads), so
        // finding a duplicate does not read the queue's other subscriptions.
        let now = self.now_ms();
        let id = keys::new_subscription_id(now);
        let expires = expires_ms(now, ttl_s);
        let mut item = keys::subscription(project, queue, &id);
        item.insert("sid".into(), s(id.clone()));
        item.insert("source".into(), s(queue.as_str()));
        item.insert("subscriber".into(), s(subscriber));
        item.insert("options".into(), s(options.to_string()));
        item.insert("ttl_s".into(), n(ttl_s));
        item.insert("created_ms".into(), n(now));
        item.insert("expires_ms".into(), n(expires));
        item.insert(keys::TTL_ATTR.into(), ttl_epoch(expires));
        item.insert("confirmed".into(), AttributeValue::Bool(false));
        if let Some(notice) = notice {
            item.insert("notify".into(), s(notice.kind));
            item.insert("notify_seq".into(), n(1));
            item.insert("notify_expires_s".into(), n(notice.expires_s));
        }
        let marker = keys::subscriber_marker(project, queue, subscriber);
        for _ in 0..4 {
            let holder = self
                .get_consistent(marker.clone(), "Subscription creation")
                .await?
                .and_then(|i| get_s(&i, "sid").map(str::to_string));
            if let Some(holder) = &holder {
                if let Some(existing) = self.get_subscription(project, queue, holder).await? {
                    return self.existing(project, queue, existing, notice).await;
                }
            }
            // Marker and subscription in one transaction: a marker is never seen before its subscription
            // exists, so a holder without a live subscription is stale (expired or deleted) and may be
            // taken over, by exactly one of any racing creates (compare-and-set on the holder).
            let mut taken = marker.clone();
            taken.insert("sid".into(), s(id.clone()));
            let marker_put = match &holder {
                None => Put::builder().condition_expression("attribute_not_exists(pk)"),
                Some(stale) => Put::builder()
                    .condition_expression("sid = :old")
                    .expression_attribute_values(":old", s(stale.clone())),
            };
            let marker_put = marker_put
                .table_name(&self.table)
                .set_item(Some(taken))
                .build()
                .map_err(unavailable("Subscription creation"))?;
            let subscription_put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item.clone()))
                .condition_expression(keys::cond::NOT_EXISTS)
                .build()
                .map_err(unavailable("Subscription creation"))?;
            let r = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(marker_put).build())
                .transact_items(TransactWriteItem::builder().put(subscription_put).build())
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await;
            match r {
                Ok(out) => {
                    self.usage.write(out.consumed_capacity());
                    return Ok(Created::New(id));
                }
                // Another create (or a takeover) changed the marker since it was read: look again.
                Err(e) if is_condition_failed(&e) => self.usage.failed_write(),
                Err(e) => return Err(unavailable("Subscription creation")(e)),
            }
        }
        Err(StoreError::exhausted("Subscription creation"))
    }

    /// A create of an already-subscribed URI: unconfirmed ones get their confirmation again (docs/api.md, Subscriptions: Create).
    async fn existing(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        existing: Subscription,
        notice: Option<Notice>,
    ) -> Result<Created, StoreError> {
        if !existing.confirmed {
            if let Some(notice) = notice {
                self.update_subscription_raw(project, queue, &existing.id, Vec::new(), Some(notice)).await?;
            }
        }
        Ok(Created::Existing { id: existing.id, confirmed: existing.confirmed })
    }

    /// Takes the subscriber's marker for `sid`. `Some(holder)` when a live subscription holds it.
    async fn claim_subscriber(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        subscriber: &str,
        sid: &str,
    ) -> Result<Option<String>, StoreError> {
        let key = keys::subscriber_marker(project, queue, subscriber);
        let mut expected: Option<String> = None;
        for _ in 0..4 {
            let mut item = key.clone();
            item.insert("sid".into(), s(sid));
            let req = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .return_consumed_capacity(ReturnConsumedCapacity::Total);
            let req = match &expected {
                // Take over a marker whose subscription is gone, unless someone else did first.
                Some(stale) => {
                    req.condition_expression("sid = :old").expression_attribute_values(":old", s(stale.clone()))
                }
                None => req
                    .condition_expression("attribute_not_exists(pk) OR sid = :sid")
                    .expression_attribute_values(":sid", s(sid)),
            };
            if self.conditional(req.send().await, "Subscription creation")?.is_some() {
                return Ok(None);
            }
            let holder = self.get_consistent(key.clone(), "Subscription creation").await?;
            let Some(holder) = holder.as_ref().and_then(|i| get_s(i, "sid")).map(str::to_string) else {
                expected = None;
                continue;
            };
            if self.get_subscription(project, queue, &holder).await?.is_some() {
                return Ok(Some(holder));
            }
            expected = Some(holder);
        }
        Err(StoreError::exhausted("Subscription creation"))
    }

    /// Gives up the subscriber's marker if `sid` still holds it.
    async fn release_subscriber(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        subscriber: &str,
        sid: &str,
    ) -> Result<(), StoreError> {
        let r = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(keys::subscriber_marker(project, queue, subscriber)))
            .condition_expression("sid = :sid")
            .expression_attribute_values(":sid", s(sid))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        self.conditional(r, "Subscription update").map(drop)
    }

    /// One page of live subscriptions after `marker` (a subscription id), in creation order.
    pub async fn list_subscriptions(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Subscription>, StoreError> {
        self.scan_subscriptions(project, queue, marker, limit).await
    }

    /// Every live subscription of the queue (fan-out).
    pub async fn queue_subscriptions(
        &self,
        project: &ProjectId,
        queue: &QueueName,
    ) -> Result<Vec<Subscription>, StoreError> {
        self.scan_subscriptions(project, queue, None, usize::MAX).await
    }

    /// Reads live subscriptions in id order after `marker`, up to `limit`.
    async fn scan_subscriptions(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Subscription>, StoreError> {
        let now = self.now_ms();
        let lower = match marker {
            Some(m) => format!("{}\u{0}", keys::subscription_sk(m)),
            None => keys::SUBSCRIPTION_PREFIX.to_string(),
        };
        let upper = format!("{}\u{10FFFF}", keys::SUBSCRIPTION_PREFIX);
        let mut found = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
                .expression_attribute_values(":pk", s(keys::queue_pk(project, queue)))
                .expression_attribute_values(":lo", s(lower.clone()))
                .expression_attribute_values(":hi", s(upper.clone()))
                .expression_attribute_values(":now", n(now))
                .filter_expression("expires_ms > :now")
                .consistent_read(true)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .set_exclusive_start_key(start.take());
            if limit != usize::MAX {
                q = q.limit(((limit - found.len()) as i32).max(1));
            }
            let out = q.send().await.map_err(unavailable("Subscription listing"))?;
            self.usage.read(out.consumed_capacity());
            for sub in out.items().iter().filter_map(Subscription::from_item) {
                if sub.alive(now) {
                    found.push(sub);
                    if found.len() >= limit {
                        return Ok(found);
                    }
                }
            }
            match out.last_evaluated_key() {
                Some(k) => start = Some(k.clone()),
                None => return Ok(found),
            }
        }
    }

    /// A live subscription by id.
    pub async fn get_subscription(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        sid: &str,
    ) -> Result<Option<Subscription>, StoreError> {
        let item = self.get_consistent(keys::subscription(project, queue, sid), "Subscription lookup").await?;
        let now = self.now_ms();
        Ok(item.as_ref().and_then(Subscription::from_item).filter(|sub| sub.alive(now)))
    }

    /// PATCH (docs/api.md, Subscriptions: Get, update, delete): a new `ttl` restarts the expiry clock from now.
    pub async fn update_subscription(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        sid: &str,
        patch: &SubscriptionPatch,
    ) -> Result<Updated, StoreError> {
        let mut previous = None;
        if let Some(new) = &patch.subscriber {
            let Some(current) = self.get_subscription(project, queue, sid).await? else { return Ok(Updated::NotFound) };
            if current.subscriber != *new {
                if let Some(other) = self.claim_subscriber(project, queue, new, sid).await? {
                    if other != sid {
                        return Ok(Updated::Conflict);
                    }
                }
                previous = Some(current.subscriber);
            }
        }
        let mut sets: Vec<(&str, AttributeValue)> = Vec::new();
        if let Some(sub) = &patch.subscriber {
            sets.push(("subscriber", s(sub.clone())));
        }
        if let Some(options) = &patch.options {
            sets.push(("options", s(options.to_string())));
        }
        if let Some(ttl) = patch.ttl_s {
            let expires = expires_ms(self.now_ms(), ttl);
            sets.push(("ttl_s", n(ttl)));
            sets.push(("expires_ms", n(expires)));
            sets.push((keys::TTL_ATTR, ttl_epoch(expires)));
        }
        let found = self.update_subscription_raw(project, queue, sid, sets, None).await?;
        if let Some(old) = previous {
            let (release, keep) = if found { (old, sid) } else { (patch.subscriber.clone().unwrap_or_default(), sid) };
            self.release_subscriber(project, queue, &release, keep).await?;
        }
        Ok(if found { Updated::Done } else { Updated::NotFound })
    }

    /// PUT confirm (docs/api.md, Subscriptions: Confirm); `false` when the subscription does not exist.
    pub async fn confirm_subscription(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        sid: &str,
        confirmed: bool,
        notice: Option<Notice>,
    ) -> Result<bool, StoreError> {
        self.update_subscription_raw(project, queue, sid, vec![("confirmed", AttributeValue::Bool(confirmed))], notice)
            .await
    }

    /// Sets attributes on a live subscription and optionally requests a notification.
    async fn update_subscription_raw(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        sid: &str,
        sets: Vec<(&str, AttributeValue)>,
        notice: Option<Notice>,
    ) -> Result<bool, StoreError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(keys::subscription(project, queue, sid)))
            .condition_expression("attribute_exists(pk) AND expires_ms > :now")
            .expression_attribute_values(":now", n(self.now_ms()))
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        let mut clauses = Vec::new();
        for (i, (name, value)) in sets.into_iter().enumerate() {
            clauses.push(format!("#a{i} = :v{i}"));
            req = req
                .expression_attribute_names(format!("#a{i}"), name)
                .expression_attribute_values(format!(":v{i}"), value);
        }
        let mut expr = String::new();
        if let Some(notice) = notice {
            clauses.push("notify = :nk".into());
            clauses.push("notify_expires_s = :ne".into());
            req = req
                .expression_attribute_values(":nk", s(notice.kind))
                .expression_attribute_values(":ne", n(notice.expires_s))
                .expression_attribute_values(":one", n(1));
            expr = " ADD notify_seq :one".into();
        }
        if clauses.is_empty() && expr.is_empty() {
            return Ok(self.get_subscription(project, queue, sid).await?.is_some());
        }
        let set = if clauses.is_empty() { String::new() } else { format!("SET {}", clauses.join(", ")) };
        let r = req.update_expression(format!("{set}{expr}").trim().to_string()).send().await;
        Ok(self.conditional(r, "Subscription update")?.is_some())
    }

    /// DELETE (docs/api.md, Subscriptions: Get, update, delete): idempotent; frees the subscriber URI for a new subscription.
    pub async fn delete_subscription(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        sid: &str,
    ) -> Result<(), StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(keys::subscription(project, queue, sid)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(unavailable("Subscription deletion"))?;
        self.usage.write(out.consumed_capacity());
        if let Some(subscriber) = out.attributes().and_then(|a| get_s(a, "subscriber")) {
            self.release_subscriber(project, queue, subscriber, sid).await?;
        }
        Ok(())
    }
}
