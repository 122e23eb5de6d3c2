//! Messages: posting with per-queue sequence numbers, listing, lookup, deletion and pop.
//!
//! Ordering (§15.1): a post reserves `n` consecutive sequence numbers on the queue head
//! (`ADD next_k :n`), writes the messages, then advances the head's `committed_k` watermark past them,
//! in reservation order. Readers never look above `committed_k`, so a batch becomes visible as a
//! whole and an observer paging by sequence number never skips a message, with no wall clock involved.
//! Cost: 2 head writes per batch + 1 write per message.

use super::{get_i64, get_s, is_condition_failed, ttl_epoch, unavailable, Store};
use crate::error::ApiError;
use crate::keys::{self, cond, n, s, Item};
use crate::types::{ClientId, ProjectId, QueueName};
use aws_sdk_dynamodb::types::{
    KeysAndAttributes, PutRequest, ReturnConsumedCapacity, ReturnValue, ReturnValuesOnConditionCheckFailure,
    WriteRequest,
};
use serde_json::{json, Value};
use std::time::Duration;

/// A message as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub k: u64,
    pub id: String,
    /// JSON text of the body.
    pub body: String,
    pub ttl_s: i64,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub client: Option<String>,
    pub delay_until_ms: Option<i64>,
    pub delay_s: Option<i64>,
    pub claim_id: Option<String>,
    pub claim_until_ms: Option<i64>,
    pub claim_count: i64,
    pub checksum: Option<String>,
}

/// What a producer sends for one message, already validated.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub body: Value,
    pub ttl_s: i64,
    /// Only set on delayed queues (§15.4).
    pub delay_s: Option<i64>,
}

impl Message {
    pub fn from_item(item: &Item) -> Option<Message> {
        Some(Message {
            k: keys::message_k(get_s(item, keys::SK)?)?,
            id: get_s(item, "id")?.to_string(),
            body: get_s(item, "body").unwrap_or("null").to_string(),
            ttl_s: get_i64(item, "ttl_s")?,
            created_ms: get_i64(item, "created_ms")?,
            expires_ms: get_i64(item, "expires_ms")?,
            client: get_s(item, "client").map(str::to_string),
            delay_until_ms: get_i64(item, "delay_until_ms"),
            delay_s: get_i64(item, "delay_s"),
            claim_id: get_s(item, "claim_id").map(str::to_string),
            claim_until_ms: get_i64(item, "claim_until_ms"),
            claim_count: get_i64(item, "claim_count").unwrap_or(0),
            checksum: get_s(item, "checksum").map(str::to_string),
        })
    }

    pub fn alive(&self, now: i64) -> bool {
        self.expires_ms > now
    }

    pub fn claimed(&self, now: i64) -> bool {
        self.claim_until_ms.is_some_and(|u| u > now)
    }

    pub fn delayed(&self, now: i64) -> bool {
        self.delay_until_ms.is_some_and(|d| d > now)
    }

    pub fn body_value(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    pub fn age_s(&self, now: i64) -> i64 {
        ((now - self.created_ms) / 1000).max(0)
    }

    /// The API representation (§7): `id, href, ttl, age, body` and `checksum` when stored.
    /// `href` carries `?claim_id=` while the message carries a claim id (stale after expiry, as in Zaqar).
    pub fn to_json(&self, queue: &QueueName, now: i64) -> Value {
        let mut href = format!("/v2/queues/{}/messages/{}", queue.as_str(), self.id);
        if let Some(cid) = &self.claim_id {
            href.push_str("?claim_id=");
            href.push_str(cid);
        }
        let mut v =
            json!({"id": self.id, "href": href, "ttl": self.ttl_s, "age": self.age_s(now), "body": self.body_value()});
        if let Some(c) = &self.checksum {
            v["checksum"] = Value::String(c.clone());
        }
        v
    }
}

/// The queue head: sequence reservation, visibility watermark, claim floor.
#[derive(Debug, Clone, Default)]
pub(crate) struct Head {
    pub committed_k: u64,
    pub floor_k: u64,
    pub floor_until_ms: i64,
    pub floor_ver: i64,
}

impl Head {
    fn from_item(item: Option<&Item>) -> Head {
        let Some(item) = item else { return Head::default() };
        let u = |name| get_i64(item, name).unwrap_or(0).max(0) as u64;
        Head {
            committed_k: u("committed_k"),
            floor_k: u("floor_k"),
            floor_until_ms: get_i64(item, "floor_until_ms").unwrap_or(0),
            floor_ver: get_i64(item, "floor_ver").unwrap_or(0),
        }
    }
}

/// Which messages a listing shows (§7.2).
#[derive(Debug, Clone)]
pub struct ListOptions {
    pub marker: Option<u64>,
    pub limit: usize,
    pub echo: bool,
    pub include_claimed: bool,
    pub include_delayed: bool,
    pub client: ClientId,
}

/// Outcome of deleting one message (§7.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    Absent,
    /// Claimed by a live claim and no (or another live) claim id was given: 403.
    Claimed,
    /// A claim id was given but the message is not claimed: 400.
    NotClaimed,
}

/// How long a producer waits for earlier batches to commit before moving the watermark past them.
const COMMIT_PATIENCE: Duration = Duration::from_secs(5);

impl Store {
    pub(crate) async fn read_head(&self, project: &ProjectId, queue: &QueueName) -> Result<Head, ApiError> {
        let item = self.get_consistent(keys::head(project, queue), "Queue head lookup").await?;
        Ok(Head::from_item(item.as_ref()))
    }

    /// Posts a batch (§7.1) and returns the new ids in order. The queue record must exist already.
    pub async fn post_messages(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        client: Option<&ClientId>,
        messages: &[NewMessage],
        checksums: bool,
    ) -> Result<Vec<String>, ApiError> {
        let count = messages.len() as u64;
        let (lo, hi) = self.reserve(project, queue, count).await?;
        let now = self.now_ms();
        let mut ids = Vec::with_capacity(messages.len());
        let mut requests = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let k = lo + i as u64;
            let id = keys::new_message_id(k);
            let mut item = keys::message(project, queue, k);
            let expires_ms = now + m.ttl_s * 1000;
            item.insert("id".into(), s(id.clone()));
            item.insert("ttl_s".into(), n(m.ttl_s));
            item.insert("created_ms".into(), n(now));
            item.insert("expires_ms".into(), n(expires_ms));
            item.insert(keys::TTL_ATTR.into(), ttl_epoch(expires_ms));
            if let Some(c) = client {
                item.insert("client".into(), s(c.to_string()));
            }
            if let Some(d) = m.delay_s {
                item.insert("delay_s".into(), n(d));
                if d > 0 {
                    item.insert("delay_until_ms".into(), n(now + d * 1000));
                }
            }
            if checksums && !m.body.is_null() {
                item.insert("checksum".into(), s(checksum(&m.body)));
            }
            item.insert("body".into(), s(m.body.to_string()));
            ids.push(id);
            requests.push(put(item));
        }
        for chunk in requests.chunks(25) {
            self.batch_write(&mut chunk.to_vec()).await?;
        }
        self.commit(project, queue, lo, hi).await?;
        Ok(ids)
    }

    /// Re-posts a claimed message into a dead-letter queue, keeping body, claim and expiry (§15.5).
    pub(crate) async fn post_moved(
        &self,
        project: &ProjectId,
        dlq: &QueueName,
        m: &Message,
        ttl_s: i64,
    ) -> Result<(), ApiError> {
        self.create_queue(project, dlq, &Default::default()).await?;
        let (k, _) = self.reserve(project, dlq, 1).await?;
        let mut item = keys::message(project, dlq, k);
        item.insert("id".into(), s(keys::new_message_id(k)));
        item.insert("ttl_s".into(), n(ttl_s));
        item.insert("created_ms".into(), n(m.created_ms));
        item.insert("expires_ms".into(), n(m.expires_ms));
        item.insert(keys::TTL_ATTR.into(), ttl_epoch(m.expires_ms));
        item.insert("body".into(), s(m.body.clone()));
        item.insert("claim_count".into(), n(m.claim_count));
        if let (Some(cid), Some(until)) = (&m.claim_id, m.claim_until_ms) {
            item.insert("claim_id".into(), s(cid.clone()));
            item.insert("claim_until_ms".into(), n(until));
        }
        if let Some(c) = &m.client {
            item.insert("client".into(), s(c.clone()));
        }
        if let Some(c) = &m.checksum {
            item.insert("checksum".into(), s(c.clone()));
        }
        self.batch_write(&mut vec![put(item)]).await?;
        self.commit(project, dlq, k, k).await
    }

    /// Reserves `count` consecutive sequence numbers on the queue head: returns `(lo, hi)`.
    async fn reserve(&self, project: &ProjectId, queue: &QueueName, count: u64) -> Result<(u64, u64), ApiError> {
        let reserved = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(keys::head(project, queue)))
            .update_expression("ADD next_k :n")
            .expression_attribute_values(":n", n(count))
            .return_values(ReturnValue::UpdatedNew)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(unavailable("Message post"))?;
        self.usage.write(reserved.consumed_capacity());
        let hi = reserved.attributes().and_then(|a| get_i64(a, "next_k")).unwrap_or(count as i64) as u64;
        Ok((hi + 1 - count, hi))
    }

    /// Moves the visibility watermark from `lo - 1` to `hi`, waiting for earlier batches first.
    async fn commit(&self, project: &ProjectId, queue: &QueueName, lo: u64, hi: u64) -> Result<(), ApiError> {
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            let forced = started.elapsed() > COMMIT_PATIENCE;
            // Normally the previous batch must be committed; a producer that died mid-post must not
            // stall the queue forever, so after COMMIT_PATIENCE we move past its range.
            let condition = if forced {
                "committed_k < :lo OR attribute_not_exists(committed_k)"
            } else if lo == 1 {
                "attribute_not_exists(committed_k) OR committed_k = :prev"
            } else {
                "committed_k = :prev"
            };
            let mut req = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(keys::head(project, queue)))
                .update_expression("SET committed_k = :hi")
                .condition_expression(condition)
                .expression_attribute_values(":hi", n(hi))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .return_consumed_capacity(ReturnConsumedCapacity::Total);
            req = if forced {
                req.expression_attribute_values(":lo", n(lo))
            } else {
                req.expression_attribute_values(":prev", n(lo - 1))
            };
            match req.send().await {
                Ok(out) => {
                    self.usage.write(out.consumed_capacity());
                    if forced {
                        tracing::warn!(queue = %queue, lo, hi, "moved the commit watermark past a stalled batch");
                    }
                    return Ok(());
                }
                Err(e) if is_condition_failed(&e) => {
                    self.usage.failed_write();
                    let committed = e
                        .as_service_error()
                        .and_then(|se| match se {
                            aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => c.item(),
                            _ => None,
                        })
                        .and_then(|item| get_i64(item, "committed_k"))
                        .unwrap_or(0) as u64;
                    if committed >= hi {
                        return Ok(()); // a later producer already moved past us
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(unavailable("Message post")(e)),
            }
        }
    }

    /// Reads committed messages with `k` in `[from, to]`, a page at a time, calling `visit` until it
    /// returns false. Returns whether the range was exhausted.
    pub(crate) async fn scan_messages(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        from: u64,
        to: u64,
        page: i32,
        mut visit: impl FnMut(Message) -> bool,
    ) -> Result<(), ApiError> {
        if from > to {
            return Ok(());
        }
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
                .expression_attribute_values(":pk", s(keys::queue_pk(project, queue)))
                .expression_attribute_values(":lo", s(keys::message_sk(from)))
                .expression_attribute_values(":hi", s(keys::message_sk(to)))
                .consistent_read(true)
                .limit(page)
                .set_exclusive_start_key(start.take())
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(unavailable("Message listing"))?;
            self.usage.read(out.consumed_capacity());
            for item in out.items() {
                if let Some(m) = Message::from_item(item) {
                    if !visit(m) {
                        return Ok(());
                    }
                }
            }
            match out.last_evaluated_key() {
                Some(k) => start = Some(k.clone()),
                None => return Ok(()),
            }
        }
    }

    /// Lists messages after the marker (§7.2).
    pub async fn list_messages(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        opts: &ListOptions,
    ) -> Result<Vec<Message>, ApiError> {
        let head = self.read_head(project, queue).await?;
        let now = self.now_ms();
        let me = opts.client.to_string();
        let mut found = Vec::with_capacity(opts.limit);
        let from = opts.marker.map(|m| m.saturating_add(1)).unwrap_or(1);
        let page = (opts.limit as i32 + 5).min(100);
        self.scan_messages(project, queue, from, head.committed_k, page, |m| {
            let visible = m.alive(now)
                && (opts.echo || m.client.as_deref() != Some(me.as_str()))
                && (opts.include_claimed || !m.claimed(now))
                && (opts.include_delayed || !m.delayed(now));
            if visible {
                found.push(m);
            }
            found.len() < opts.limit
        })
        .await?;
        Ok(found)
    }

    /// One message by id, if it exists and is alive (§7.4).
    pub async fn get_message(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        id: &str,
    ) -> Result<Option<Message>, ApiError> {
        let Some(k) = keys::message_id_k(id) else { return Ok(None) };
        let item = self.get_consistent(keys::message(project, queue, k), "Message lookup").await?;
        let now = self.now_ms();
        Ok(item.as_ref().and_then(Message::from_item).filter(|m| m.id == id && m.alive(now)))
    }

    /// Messages by id, skipping unknown, malformed and expired ones (§7.3).
    pub async fn get_messages(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        ids: &[String],
    ) -> Result<Vec<Message>, ApiError> {
        let mut ks: Vec<u64> = ids.iter().filter_map(|id| keys::message_id_k(id)).collect();
        ks.sort_unstable();
        ks.dedup();
        let found = self.batch_get_messages(project, queue, &ks).await?;
        let now = self.now_ms();
        Ok(found.into_iter().filter(|m| ids.contains(&m.id) && m.alive(now)).collect())
    }

    /// BatchGetItem over sequence numbers (≤ 100 per request), consistent reads, in `k` order.
    pub(crate) async fn batch_get_messages(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        ks: &[u64],
    ) -> Result<Vec<Message>, ApiError> {
        let mut found = Vec::with_capacity(ks.len());
        for chunk in ks.chunks(100) {
            let mut pending: Vec<Item> = chunk.iter().map(|k| keys::message(project, queue, *k)).collect();
            let mut attempt = 0;
            while !pending.is_empty() {
                let ka = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut pending)))
                    .consistent_read(true)
                    .build()
                    .expect("keys set");
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, ka)
                    .return_consumed_capacity(ReturnConsumedCapacity::Total)
                    .send()
                    .await
                    .map_err(unavailable("Message lookup"))?;
                self.usage.read(out.consumed_capacity());
                if let Some(items) = out.responses().and_then(|r| r.get(&self.table)) {
                    found.extend(items.iter().filter_map(Message::from_item));
                }
                if let Some(left) = out.unprocessed_keys().and_then(|u| u.get(&self.table)) {
                    pending = left.keys().to_vec();
                    attempt += 1;
                    if attempt > 8 {
                        return Err(ApiError::unavailable("Message lookup could not be completed."));
                    }
                    tokio::time::sleep(Duration::from_millis(10 << attempt.min(6))).await;
                }
            }
        }
        found.sort_by_key(|m| m.k);
        Ok(found)
    }

    /// Deletes one message under Zaqar's claim rules (§7.5), in one conditional request.
    pub async fn delete_message(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        id: &str,
        claim_id: Option<&str>,
    ) -> Result<DeleteOutcome, ApiError> {
        let Some(k) = keys::message_id_k(id) else { return Ok(DeleteOutcome::Absent) };
        let now = self.now_ms();
        let mut req = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(keys::message(project, queue, k)))
            .expression_attribute_values(":id", s(id))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        req = match claim_id {
            None => req
                .condition_expression(format!("id = :id AND ({})", cond::UNCLAIMED))
                .expression_attribute_values(":now", n(now)),
            Some(cid) => req
                .condition_expression(format!("id = :id AND {}", cond::HELD_BY))
                .expression_attribute_values(":cid", s(cid)),
        };
        match req.send().await {
            Ok(out) => {
                self.usage.write(out.consumed_capacity());
                Ok(DeleteOutcome::Deleted)
            }
            Err(e) if is_condition_failed(&e) => {
                self.usage.failed_write();
                let current = e.as_service_error().and_then(|se| match se {
                    aws_sdk_dynamodb::operation::delete_item::DeleteItemError::ConditionalCheckFailedException(c) => {
                        c.item().and_then(Message::from_item)
                    }
                    _ => None,
                });
                let Some(m) = current.filter(|m| m.id == id && m.alive(now)) else {
                    return Ok(DeleteOutcome::Absent);
                };
                Ok(match claim_id {
                    None => DeleteOutcome::Claimed,
                    Some(_) if m.claimed(now) => DeleteOutcome::Claimed,
                    Some(_) => DeleteOutcome::NotClaimed,
                })
            }
            Err(e) => Err(unavailable("Message deletion")(e)),
        }
    }

    /// Deletes messages by id regardless of claims (§7.6); unknown ids are ignored.
    pub async fn delete_messages(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        ids: &[String],
    ) -> Result<(), ApiError> {
        let deletes = ids.iter().filter_map(|id| keys::message_id_k(id).map(|k| (id, k))).map(|(id, k)| async move {
            let r = self
                .client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(keys::message(project, queue, k)))
                .condition_expression("id = :id")
                .expression_attribute_values(":id", s(id))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await;
            self.conditional(r, "Message deletion").map(drop)
        });
        for r in futures::future::join_all(deletes).await {
            r?;
        }
        Ok(())
    }

    /// Removes up to `count` unclaimed messages, oldest first, each atomically (§7.6). Delay is ignored.
    pub async fn pop_messages(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        count: usize,
    ) -> Result<Vec<Message>, ApiError> {
        let head = self.read_head(project, queue).await?;
        let now = self.now_ms();
        let from = if now < head.floor_until_ms { head.floor_k.max(1) } else { 1 };
        let mut popped = Vec::with_capacity(count);
        let mut from_k = from;
        while popped.len() < count && from_k <= head.committed_k {
            let mut candidates = Vec::new();
            let want = count - popped.len();
            let mut last = from_k;
            self.scan_messages(project, queue, from_k, head.committed_k, (want as i32 + 5).min(100), |m| {
                last = m.k;
                if m.alive(now) && !m.claimed(now) {
                    candidates.push(m);
                }
                candidates.len() < want
            })
            .await?;
            if candidates.is_empty() {
                break;
            }
            // Concurrent conditional deletes, results kept in queue order.
            let deletes = candidates.iter().map(|m| async move {
                let r = self
                    .client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(keys::message(project, queue, m.k)))
                    .condition_expression(format!("id = :id AND {}", cond::POPPABLE))
                    .expression_attribute_values(":id", s(m.id.clone()))
                    .expression_attribute_values(":now", n(now))
                    .return_values(ReturnValue::AllOld)
                    .return_consumed_capacity(ReturnConsumedCapacity::Total)
                    .send()
                    .await;
                Ok(self.conditional(r, "Message pop")?.and_then(|out| out.attributes().and_then(Message::from_item)))
            });
            let mut failure = None;
            for result in futures::future::join_all(deletes).await {
                match result {
                    Ok(Some(old)) => popped.push(old),
                    Ok(None) => {}
                    Err(e) => failure = Some(e),
                }
            }
            // Messages already removed must reach the caller: an error only wins when nothing was popped.
            if let Some(e) = failure {
                return if popped.is_empty() { Err(e) } else { Ok(popped) };
            }
            from_k = last + 1;
        }
        Ok(popped)
    }

    /// Counts for `GET .../stats` (§5.6): (total, claimed, oldest, newest) over live messages.
    pub async fn message_stats(
        &self,
        project: &ProjectId,
        queue: &QueueName,
    ) -> Result<(u64, u64, Option<Message>, Option<Message>), ApiError> {
        let head = self.read_head(project, queue).await?;
        let now = self.now_ms();
        let (mut total, mut claimed) = (0u64, 0u64);
        let (mut oldest, mut newest): (Option<Message>, Option<Message>) = (None, None);
        self.scan_messages(project, queue, 1, head.committed_k, 1000, |m| {
            if m.alive(now) {
                total += 1;
                if m.claimed(now) {
                    claimed += 1;
                }
                if oldest.is_none() {
                    oldest = Some(m.clone());
                }
                newest = Some(m);
            }
            true
        })
        .await?;
        Ok((total, claimed, oldest, newest))
    }

    /// Deletes every message and claim of the queue (purge, §5.7); claimed messages go too.
    pub async fn purge_messages(&self, project: &ProjectId, queue: &QueueName) -> Result<(), ApiError> {
        self.delete_partition_range(project, queue, keys::CLAIM_PREFIX, "N").await
    }
}

fn put(item: Item) -> WriteRequest {
    WriteRequest::builder()
        .put_request(PutRequest::builder().set_item(Some(item)).build().expect("item is set"))
        .build()
}

/// `MD5:` + md5 of Python's `json.dumps(body)` (§15.7).
pub fn checksum(body: &Value) -> String {
    use md5::{Digest, Md5};
    let digest = Md5::digest(crate::json::python_dumps(body).as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("MD5:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_python_zaqar() {
        let body: Value = serde_json::from_str(r#"{"b": 1, "a": "é", "z": [1, 2]}"#).unwrap();
        assert_eq!(checksum(&body), "MD5:108e410c2642f8b1f71abc43cf9e3d71");
    }
}
