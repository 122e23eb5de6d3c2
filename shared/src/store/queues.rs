//! Queue records (`P#{project}` / `Q#{name}`) and whole-queue operations.
//!
//! The record carries the queue's generation and shard count besides its metadata (layout in
//! [`crate::keys`]). Message paths read it through a per-process cache ([`QueueCache`]) whose entries live
//! at most `QUEUE_CACHE_TTL`: a stale generation is caught by the tombstoned shard heads (reservations
//! and head reads refuse it and refresh), so staleness can only show a purged or deleted queue's messages
//! to a get-by-id for that long, never lose an acknowledged post.

use super::head::{heads_totals, Head, RETIRED};
use super::StoreError;
use super::{get_json, get_s, unavailable, Store, Updated};
use crate::keys::{self, cond, n, s, Item, Shard};
use crate::meta::Metadata;
use crate::types::{ProjectId, QueueName};
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, DeleteRequest, Put, ReturnConsumedCapacity, ReturnValue,
    ReturnValuesOnConditionCheckFailure, Select, TransactWriteItem, Update, WriteRequest,
};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a cached queue record may be used (bounded staleness across containers).
pub const QUEUE_CACHE_TTL: Duration = Duration::from_millis(1000);
/// Entries kept per process before the cache starts over (bounds memory).
const QUEUE_CACHE_MAX: usize = 10_000;

/// A queue record as stored: what the queue's own API reads, and what its updates are conditioned on.
#[derive(Debug, Clone)]
pub struct StoredQueue {
    pub metadata: Metadata,
    pub gen: String,
    pub shards: u32,
    /// The stored metadata text, as read: an update is conditioned on it (no lost updates).
    pub(crate) meta_text: Option<String>,
}

impl StoredQueue {
    pub(crate) fn shard(&self, project: &ProjectId, queue: &QueueName, index: u32) -> Shard {
        Shard { project: project.clone(), queue: queue.clone(), gen: self.gen.clone(), index }
    }

    pub(crate) fn all_shards(&self, project: &ProjectId, queue: &QueueName) -> Vec<Shard> {
        (0..self.shards).map(|i| self.shard(project, queue, i)).collect()
    }
}

/// What the message paths need of a queue: its record, and whether it has subscriptions (a second read,
/// made with the record's, that the queue's own API does without).
#[derive(Debug, Clone)]
pub struct QueueInfo {
    pub record: StoredQueue,
    /// The queue had at least one subscription when the record was read: its messages carry the
    /// attribute the stream filter selects, so queues without subscribers never invoke the fan-out.
    pub subscribed: bool,
}

/// The shard count a metadata document asks for (`_shards`, validated by `meta::validate`).
pub fn shards_of(meta: &Metadata) -> u32 {
    meta.get("_shards").and_then(serde_json::Value::as_u64).map_or(1, |v| v.clamp(1, keys::MAX_SHARDS as u64) as u32)
}

/// Per-process cache of queue records, including their absence.
#[derive(Default)]
pub(crate) struct QueueCache(Mutex<HashMap<(String, String), CachedRecord>>);

/// A queue record (or its absence) and when it was read.
type CachedRecord = (Option<QueueInfo>, Instant);

impl QueueCache {
    fn key(project: &ProjectId, queue: &QueueName) -> (String, String) {
        (project.as_str().to_string(), queue.as_str().to_string())
    }

    fn get(&self, project: &ProjectId, queue: &QueueName) -> Option<Option<QueueInfo>> {
        let map = self.0.lock().ok()?;
        let (info, at) = map.get(&Self::key(project, queue))?;
        (at.elapsed() < QUEUE_CACHE_TTL).then(|| info.clone())
    }

    pub(crate) fn put(&self, project: &ProjectId, queue: &QueueName, info: Option<QueueInfo>) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= QUEUE_CACHE_MAX {
                map.clear();
            }
            map.insert(Self::key(project, queue), (info, Instant::now()));
        }
    }

    pub(crate) fn forget(&self, project: &ProjectId, queue: &QueueName) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(&Self::key(project, queue));
        }
    }
}

/// What a change of `_shards` writes to one shard head.
enum ShardChange {
    None,
    /// A post to the shard is in flight.
    InUse,
    Write(Box<TransactWriteItem>),
}

/// Outcome of a metadata update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataUpdate {
    Updated,
    Missing,
    /// `_shards` lowered while the queue holds messages or a post is in flight: refused (messages of the
    /// dropped shards would vanish).
    ShardsInUse,
    /// The metadata changed since it was read (another update won): read it again and re-apply.
    Changed,
}

#[derive(Debug, Clone)]
pub struct QueueRecord {
    pub name: String,
    pub metadata: Metadata,
}

/// Filters for queue listing (docs/api.md, Queues: List): substring on the name, equality on metadata keys.
#[derive(Debug, Clone, Default)]
pub struct QueueFilter {
    pub name: Option<String>,
    pub metadata: Vec<(String, serde_json::Value)>,
}

impl QueueFilter {
    fn matches(&self, q: &QueueRecord) -> bool {
        if let Some(sub) = &self.name {
            if !q.name.contains(sub.as_str()) {
                return false;
            }
        }
        self.metadata.iter().all(|(k, v)| q.metadata.get(k) == Some(v))
    }
}

fn record_from(item: &Item) -> Option<QueueRecord> {
    let name = get_s(item, keys::SK)?.strip_prefix(keys::QUEUE_PREFIX)?.to_string();
    let metadata = get_json(item, "meta").and_then(|v| v.as_object().cloned()).unwrap_or_default();
    Some(QueueRecord { name, metadata })
}

fn stored_from(item: &Item) -> Option<StoredQueue> {
    let metadata = get_json(item, "meta").and_then(|v| v.as_object().cloned()).unwrap_or_default();
    // Records always carry a generation; one without (never written by this code) reads as generation "0".
    let gen = get_s(item, "gen").unwrap_or("0").to_string();
    let shards = shards_of(&metadata);
    let meta_text = get_s(item, "meta").map(str::to_string);
    Some(StoredQueue { metadata, gen, shards, meta_text })
}

/// Why a conditional metadata update was refused, from the record as it is now.
fn refused_update(stored: Option<&Item>, read: &StoredQueue) -> MetadataUpdate {
    match stored.and_then(stored_from) {
        Some(now) if now.gen == read.gen => MetadataUpdate::Changed,
        _ => MetadataUpdate::Missing,
    }
}

impl Store {
    /// Creates the queue record with a fresh generation; `false` when it already existed (its metadata is
    /// left alone, as in Zaqar).
    pub async fn create_queue(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        meta: &Metadata,
    ) -> Result<bool, StoreError> {
        let mut item = keys::queue_record(project, queue);
        item.insert("meta".into(), s(serde_json::Value::Object(meta.clone()).to_string()));
        item.insert("created_ms".into(), n(self.now_ms()));
        item.insert("gen".into(), s(keys::new_generation()));
        let r = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(cond::NOT_EXISTS)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        let created = self.conditional(r, "Queue creation")?.is_some();
        self.queues.forget(project, queue);
        Ok(created)
    }

    /// The stored metadata, or `None` for a queue that does not exist (always read fresh).
    pub async fn queue_metadata(&self, project: &ProjectId, queue: &QueueName) -> Result<Option<Metadata>, StoreError> {
        Ok(self.read_queue_record(project, queue, true).await?.map(|i| i.metadata))
    }

    /// The queue record alone, read now (strongly consistent), for the queue's own API: metadata get and
    /// update ([`Self::set_queue_metadata`]). Whether the queue has subscriptions matters only to the
    /// message paths ([`QueueInfo`]), so it is not read, and this read does not fill their cache.
    pub async fn queue_record_for_update(
        &self,
        project: &ProjectId,
        queue: &QueueName,
    ) -> Result<Option<StoredQueue>, StoreError> {
        self.read_queue_record(project, queue, true).await
    }

    /// One read of the queue record.
    async fn read_queue_record(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        consistent: bool,
    ) -> Result<Option<StoredQueue>, StoreError> {
        let item = self.get_item(keys::queue_record(project, queue), "Queue metadata lookup", consistent).await?;
        Ok(item.as_ref().and_then(stored_from))
    }

    /// The stored metadata as the message paths see it: from this container's cache when read less than
    /// [`QUEUE_CACHE_TTL`] ago (an update made in this container is seen at once; one made elsewhere
    /// within that bound), else read now. Posts and claims use it: their settings (sizes, TTLs, delay,
    /// dead letter) need no read of their own on a warm container.
    pub async fn queue_metadata_cached(
        &self,
        project: &ProjectId,
        queue: &QueueName,
    ) -> Result<Option<Metadata>, StoreError> {
        Ok(self.queue_info(project, queue).await?.map(|i| i.record.metadata))
    }

    /// The queue record, read now (and cached for the message paths).
    pub async fn fresh_queue_info(
        &self,
        project: &ProjectId,
        queue: &QueueName,
    ) -> Result<Option<QueueInfo>, StoreError> {
        self.read_queue_info(project, queue, true).await
    }

    /// The queue record from the cache, else read eventually consistent (half a unit): for readers that
    /// detect a stale generation themselves (dead heads) and then read it again with [`Self::queue_info`].
    pub(crate) async fn queue_info_eventual(
        &self,
        project: &ProjectId,
        queue: &QueueName,
    ) -> Result<Option<QueueInfo>, StoreError> {
        match self.queues.get(project, queue) {
            Some(info) => Ok(info),
            None => self.read_queue_info(project, queue, false).await,
        }
    }

    async fn read_queue_info(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        consistent: bool,
    ) -> Result<Option<QueueInfo>, StoreError> {
        // The record and whether the queue has subscriptions, read together (one round trip).
        let record = self.read_queue_record(project, queue, consistent);
        let (record, subscribed) = futures::future::try_join(record, self.has_subscriptions(project, queue)).await?;
        let info = record.map(|record| QueueInfo { record, subscribed });
        self.queues.put(project, queue, info.clone());
        Ok(info)
    }

    /// Whether any subscription item (live or expired) exists for the queue: one item read at most.
    async fn has_subscriptions(&self, project: &ProjectId, queue: &QueueName) -> Result<bool, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :s)")
            .expression_attribute_values(":pk", s(keys::queue_pk(project, queue)))
            .expression_attribute_values(":s", s(keys::SUBSCRIPTION_PREFIX))
            .projection_expression("pk")
            .limit(1)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(unavailable("Queue metadata lookup"))?;
        self.usage.read(out.consumed_capacity());
        Ok(out.count() > 0)
    }

    /// Forgets the cached record of a queue (its subscriptions changed in this process).
    pub fn forget_queue(&self, project: &ProjectId, queue: &QueueName) {
        self.queues.forget(project, queue);
    }

    /// The queue record as the message paths see it: cached for at most [`QUEUE_CACHE_TTL`].
    pub async fn queue_info(&self, project: &ProjectId, queue: &QueueName) -> Result<Option<QueueInfo>, StoreError> {
        match self.queues.get(project, queue) {
            Some(info) => Ok(info),
            None => self.fresh_queue_info(project, queue).await,
        }
    }

    /// The queue record, creating the queue (default metadata) when it is missing: posts do this.
    pub async fn queue_info_or_create(&self, project: &ProjectId, queue: &QueueName) -> Result<QueueInfo, StoreError> {
        if let Some(info) = self.queue_info(project, queue).await? {
            return Ok(info);
        }
        self.create_queue(project, queue, &Default::default()).await?;
        self.fresh_queue_info(project, queue).await?.ok_or_else(|| StoreError::exhausted("Queue creation"))
    }

    /// Replaces the metadata of an existing queue, with a change of `_shards` in the same transaction.
    ///
    /// Lowering it is refused while the queue holds messages or a post to a leaving shard is in flight
    /// (reserved, not yet committed); otherwise the leaving shards' heads are marked retired, on the
    /// condition that no reservation happened since they were read, so a producer whose cached record
    /// still names them is refused and re-reads the record instead of posting where nobody reads.
    /// Raising it revives retired heads (their sequence numbers go on from where they stopped).
    ///
    /// `current` is the record the new metadata was derived from ([`Self::queue_record_for_update`]): the write
    /// is conditioned on the stored metadata still being what it read, so two concurrent updates cannot
    /// lose one another's change ([`MetadataUpdate::Changed`]: read again and re-apply).
    pub async fn set_queue_metadata(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        current: &StoredQueue,
        meta: &Metadata,
    ) -> Result<MetadataUpdate, StoreError> {
        let wanted = shards_of(meta);
        let lowering = wanted < current.shards;
        let unchanged = match &current.meta_text {
            Some(_) => "attribute_exists(pk) AND gen = :gen AND meta = :old",
            None => "attribute_exists(pk) AND gen = :gen AND attribute_not_exists(meta)",
        };
        let mut record = Update::builder()
            .table_name(&self.table)
            .set_key(Some(keys::queue_record(project, queue)))
            .update_expression("SET meta = :m")
            .condition_expression(unchanged)
            .expression_attribute_values(":m", s(serde_json::Value::Object(meta.clone()).to_string()))
            .expression_attribute_values(":gen", s(current.gen.clone()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some(old) = &current.meta_text {
            record = record.expression_attribute_values(":old", s(old.clone()));
        }
        let record = record.build().map_err(unavailable("Queue update"))?;
        let mut actions = vec![TransactWriteItem::builder().update(record).build()];
        // Lowering reads every head once (the queue must be empty, the leaving shards idle); raising reads
        // the shards that rejoin; an unchanged count reads none.
        let read_from = if lowering { 0 } else { current.shards.min(wanted) };
        let shards: Vec<Shard> =
            (read_from..current.shards.max(wanted)).map(|i| current.shard(project, queue, i)).collect();
        let heads = if shards.is_empty() { vec![] } else { self.read_heads(&shards).await? };
        if lowering && heads_totals(&heads, self.now_ms()).0 > 0 {
            return Ok(MetadataUpdate::ShardsInUse);
        }
        let moving = shards.iter().zip(&heads).filter(|(sh, _)| sh.index >= current.shards.min(wanted));
        for (shard, head) in moving {
            let action = if lowering { self.retire(shard, head)? } else { self.revive(shard, head)? };
            match action {
                ShardChange::None => {}
                ShardChange::InUse => return Ok(MetadataUpdate::ShardsInUse),
                ShardChange::Write(a) => actions.push(*a),
            }
        }
        if actions.len() == 1 {
            // Only the record changes: a plain conditional update (half the units of a transaction).
            let Some(TransactWriteItem { update: Some(u), .. }) = actions.pop() else { unreachable!() };
            let r = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(u.key))
                .update_expression(u.update_expression)
                .set_condition_expression(u.condition_expression)
                .set_expression_attribute_values(u.expression_attribute_values)
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await;
            self.queues.forget(project, queue);
            return Ok(match self.updated(r, "Queue update")? {
                Updated::Applied(_) => MetadataUpdate::Updated,
                Updated::Refused(stored) => refused_update(stored.as_ref(), current),
            });
        }
        let r = self
            .client
            .transact_write_items()
            .set_transact_items(Some(actions))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        self.queues.forget(project, queue);
        match r {
            Ok(out) => {
                self.usage.write(out.consumed_capacity());
                Ok(MetadataUpdate::Updated)
            }
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), TransactWriteItemsError::TransactionCanceledException(_)) =>
            {
                self.usage.failed_write();
                let TransactWriteItemsError::TransactionCanceledException(t) = e.err() else { unreachable!() };
                let failed = t.cancellation_reasons().iter().position(|r| r.code() == Some("ConditionalCheckFailed"));
                match failed {
                    // The record is gone, was re-created (a new generation) or changed since it was read.
                    Some(0) => Ok(refused_update(t.cancellation_reasons()[0].item(), current)),
                    // A leaving shard took a reservation after it was read.
                    Some(_) if lowering => Ok(MetadataUpdate::ShardsInUse),
                    _ => {
                        tracing::warn!(operation = "Queue update", error = ?t, "transaction cancelled");
                        Err(StoreError::exhausted("Queue update"))
                    }
                }
            }
            Err(e) => Err(unavailable("Queue update")(e)),
        }
    }

    /// The write that retires a leaving shard: a marker item where no head exists yet (so a first post
    /// cannot create one), else the head marked retired while its reservations stand where they were read.
    fn retire(&self, shard: &Shard, head: &Head) -> Result<ShardChange, StoreError> {
        if head.dead || head.retired {
            return Ok(ShardChange::None);
        }
        if !head.exists {
            let mut item = shard.head_key();
            item.insert(RETIRED.into(), AttributeValue::Bool(true));
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression(cond::NOT_EXISTS)
                .build()
                .map_err(unavailable("Queue update"))?;
            return Ok(ShardChange::Write(Box::new(TransactWriteItem::builder().put(put).build())));
        }
        // A reservation not yet committed. (A single post not yet written is already counted by its
        // reservation, so the queue is not empty and lowering was refused before this.)
        if head.next_k != head.committed_k {
            return Ok(ShardChange::InUse);
        }
        let unchanged = if head.next_k == 0 { "attribute_not_exists(next_k)" } else { "next_k = :k" };
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(shard.head_key()))
            .update_expression("SET #r = :t")
            .condition_expression(format!("attribute_exists(pk) AND attribute_not_exists(dead) AND {unchanged}"))
            .expression_attribute_names("#r", RETIRED)
            .expression_attribute_values(":t", AttributeValue::Bool(true));
        if head.next_k != 0 {
            update = update.expression_attribute_values(":k", n(head.next_k));
        }
        let update = update.build().map_err(unavailable("Queue update"))?;
        Ok(ShardChange::Write(Box::new(TransactWriteItem::builder().update(update).build())))
    }

    /// The write that brings a retired shard back: the marker item deleted, or the mark removed from a
    /// head that has taken posts before.
    fn revive(&self, shard: &Shard, head: &Head) -> Result<ShardChange, StoreError> {
        if !head.retired {
            return Ok(ShardChange::None);
        }
        let action = if head.next_k == 0 {
            let delete = Delete::builder()
                .table_name(&self.table)
                .set_key(Some(shard.head_key()))
                .condition_expression("attribute_exists(#r) AND attribute_not_exists(next_k)")
                .expression_attribute_names("#r", RETIRED)
                .build()
                .map_err(unavailable("Queue update"))?;
            TransactWriteItem::builder().delete(delete).build()
        } else {
            let update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(shard.head_key()))
                .update_expression("REMOVE #r")
                .condition_expression("attribute_exists(#r)")
                .expression_attribute_names("#r", RETIRED)
                .build()
                .map_err(unavailable("Queue update"))?;
            TransactWriteItem::builder().update(update).build()
        };
        Ok(ShardChange::Write(Box::new(action)))
    }

    /// One page of queues after `marker`, in name order, with filters applied.
    pub async fn list_queues(
        &self,
        project: &ProjectId,
        marker: Option<&str>,
        limit: usize,
        filter: &QueueFilter,
    ) -> Result<Vec<QueueRecord>, StoreError> {
        let mut found = Vec::with_capacity(limit);
        let mut start = None;
        let lower = keys::queue_record_sk(marker.unwrap_or(""));
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
                .expression_attribute_values(":pk", s(keys::project_pk(project)))
                .expression_attribute_values(":lo", s(format!("{lower}\u{0}")))
                .expression_attribute_values(":hi", s(format!("{}\u{10FFFF}", keys::QUEUE_PREFIX)))
                .consistent_read(true)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .set_exclusive_start_key(start.take());
            // Without filters a page needs exactly `limit` items; with them, read on in larger steps.
            let unfiltered = filter.name.is_none() && filter.metadata.is_empty();
            q = q.limit(if unfiltered { (limit - found.len()) as i32 } else { 100 });
            let out = q.send().await.map_err(unavailable("Queue listing"))?;
            self.usage.read(out.consumed_capacity());
            for item in out.items() {
                if let Some(rec) = record_from(item) {
                    if filter.matches(&rec) {
                        found.push(rec);
                        if found.len() == limit {
                            return Ok(found);
                        }
                    }
                }
            }
            match out.last_evaluated_key() {
                Some(k) => start = Some(k.clone()),
                None => return Ok(found),
            }
        }
    }

    /// Number of queues in the project (for `with_count`).
    pub async fn count_queues(&self, project: &ProjectId) -> Result<u64, StoreError> {
        let mut total = 0u64;
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :q)")
                .expression_attribute_values(":pk", s(keys::project_pk(project)))
                .expression_attribute_values(":q", s(keys::QUEUE_PREFIX))
                .select(Select::Count)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable("Queue count"))?;
            self.usage.read(out.consumed_capacity());
            total += out.count() as u64;
            match out.last_evaluated_key() {
                Some(k) => start = Some(k.clone()),
                None => return Ok(total),
            }
        }
    }

    /// Deletes the queue (Zaqar: messages and claims go, subscriptions stay). One write to the record and
    /// one tombstone per shard head, whatever the depth: the generation's items are unreachable at once
    /// and expire through native TTL.
    pub async fn delete_queue(&self, project: &ProjectId, queue: &QueueName) -> Result<(), StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(keys::queue_record(project, queue)))
            .return_values(ReturnValue::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(unavailable("Queue deletion"))?;
        self.usage.write(out.consumed_capacity());
        self.queues.forget(project, queue);
        if let Some(old) = out.attributes().and_then(stored_from) {
            self.tombstone_heads(&old.all_shards(project, queue)).await?;
        }
        Ok(())
    }

    /// Purges the queue's messages and claims (docs/api.md, Queues: Purge): a new generation, the old heads tombstoned.
    pub async fn purge_messages(&self, project: &ProjectId, queue: &QueueName) -> Result<(), StoreError> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(keys::queue_record(project, queue)))
            .update_expression("SET gen = :gen")
            .condition_expression(cond::EXISTS)
            .expression_attribute_values(":gen", s(keys::new_generation()))
            .return_values(ReturnValue::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        let out = self.conditional(r, "Queue purge")?;
        self.queues.forget(project, queue);
        if let Some(old) = out.as_ref().and_then(|o| o.attributes()).and_then(stored_from) {
            self.tombstone_heads(&old.all_shards(project, queue)).await?;
        }
        Ok(())
    }

    /// Deletes every item of the queue partition whose sort key is in `[from, to)`.
    pub(crate) async fn delete_partition_range(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        from: &str,
        to: &str,
    ) -> Result<(), StoreError> {
        let pk = keys::queue_pk(project, queue);
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
                .expression_attribute_values(":pk", s(pk.clone()))
                .expression_attribute_values(":lo", s(from))
                .expression_attribute_values(":hi", s(format!("{to}\u{0}")))
                .projection_expression("pk, sk")
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable("Queue cleanup"))?;
            self.usage.read(out.consumed_capacity());
            let keys: Vec<Item> =
                out.items().iter().filter(|i| get_s(i, keys::SK).is_some_and(|sk| sk < to)).cloned().collect();
            self.batch_delete(keys).await?;
            match out.last_evaluated_key() {
                Some(k) => start = Some(k.clone()),
                None => return Ok(()),
            }
        }
    }

    /// Deletes items by key in batches of 25, retrying unprocessed ones.
    pub(crate) async fn batch_delete(&self, keys: Vec<Item>) -> Result<(), StoreError> {
        for chunk in keys.chunks(25) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|k| {
                    WriteRequest::builder()
                        .delete_request(DeleteRequest::builder().set_key(Some(k.clone())).build().expect("key is set"))
                        .build()
                })
                .collect();
            self.batch_write(&mut requests).await?;
        }
        Ok(())
    }

    /// BatchWriteItem with retries of unprocessed items (bounded, with backoff).
    pub(crate) async fn batch_write(&self, requests: &mut Vec<WriteRequest>) -> Result<(), StoreError> {
        let mut attempt = 0u32;
        while !requests.is_empty() {
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.table, std::mem::take(requests))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(unavailable("Batch write"))?;
            self.usage.write(out.consumed_capacity());
            if let Some(mut left) = out.unprocessed_items {
                if let Some(rest) = left.remove(&self.table) {
                    *requests = rest;
                }
            }
            if !requests.is_empty() {
                attempt += 1;
                if attempt > 8 {
                    return Err(StoreError::exhausted("Batch write"));
                }
                tokio::time::sleep(std::time::Duration::from_millis(10 << attempt.min(6))).await;
            }
        }
        Ok(())
    }
}

impl Store {
    /// Deletes every subscription of the queue (purge, docs/api.md, Queues: Purge).
    pub async fn purge_subscriptions(&self, project: &ProjectId, queue: &QueueName) -> Result<(), StoreError> {
        self.delete_partition_range(project, queue, keys::SUBSCRIPTION_PREFIX, keys::SUBSCRIPTIONS_END).await
    }
}
