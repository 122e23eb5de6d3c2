//! Queue records (`P#{project}` / `Q#{name}`) and whole-queue operations.

use super::{get_json, get_s, unavailable, Store};
use crate::error::ApiError;
use crate::keys::{self, cond, n, s, Item};
use crate::meta::Metadata;
use crate::types::{ProjectId, QueueName};
use aws_sdk_dynamodb::types::{DeleteRequest, ReturnConsumedCapacity, Select, WriteRequest};

#[derive(Debug, Clone)]
pub struct QueueRecord {
    pub name: String,
    pub metadata: Metadata,
}

/// Filters for queue listing (§5.2): substring on the name, equality on metadata keys.
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

impl Store {
    /// Creates the queue record; `false` when it already existed (its metadata is left alone, as in Zaqar).
    pub async fn create_queue(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        meta: &Metadata,
    ) -> Result<bool, ApiError> {
        let mut item = keys::queue_record(project, queue);
        item.insert("meta".into(), s(serde_json::Value::Object(meta.clone()).to_string()));
        item.insert("created_ms".into(), n(self.now_ms()));
        let r = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(cond::NOT_EXISTS)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        Ok(self.conditional(r, "Queue creation")?.is_some())
    }

    /// The stored metadata, or `None` for a queue that does not exist.
    pub async fn queue_metadata(&self, project: &ProjectId, queue: &QueueName) -> Result<Option<Metadata>, ApiError> {
        let item = self.get_consistent(keys::queue_record(project, queue), "Queue metadata lookup").await?;
        Ok(item.as_ref().and_then(record_from).map(|r| r.metadata))
    }

    /// Replaces the metadata of an existing queue; `false` if the queue does not exist.
    pub async fn set_queue_metadata(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        meta: &Metadata,
    ) -> Result<bool, ApiError> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(keys::queue_record(project, queue)))
            .update_expression("SET meta = :m")
            .condition_expression(cond::EXISTS)
            .expression_attribute_values(":m", s(serde_json::Value::Object(meta.clone()).to_string()))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        Ok(self.conditional(r, "Queue update")?.is_some())
    }

    /// One page of queues after `marker`, in name order, with filters applied.
    pub async fn list_queues(
        &self,
        project: &ProjectId,
        marker: Option<&str>,
        limit: usize,
        filter: &QueueFilter,
    ) -> Result<Vec<QueueRecord>, ApiError> {
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
    pub async fn count_queues(&self, project: &ProjectId) -> Result<u64, ApiError> {
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

    /// Deletes the queue record and everything in its partition except subscriptions (§5.5).
    pub async fn delete_queue(&self, project: &ProjectId, queue: &QueueName) -> Result<(), ApiError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(keys::queue_record(project, queue)))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(unavailable("Queue deletion"))?;
        self.usage.write(out.consumed_capacity());
        // Messages, claims and the head sort below "S#"; subscriptions survive the queue.
        self.delete_partition_range(project, queue, "\u{1}", keys::SUBSCRIPTION_PREFIX).await
    }

    /// Deletes every item of the queue partition whose sort key is in `[from, to)`.
    pub(crate) async fn delete_partition_range(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        from: &str,
        to: &str,
    ) -> Result<(), ApiError> {
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
    pub(crate) async fn batch_delete(&self, keys: Vec<Item>) -> Result<(), ApiError> {
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
    pub(crate) async fn batch_write(&self, requests: &mut Vec<WriteRequest>) -> Result<(), ApiError> {
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
                    return Err(ApiError::unavailable("Batch write could not be completed."));
                }
                tokio::time::sleep(std::time::Duration::from_millis(10 << attempt.min(6))).await;
            }
        }
        Ok(())
    }
}

impl Store {
    /// Deletes every subscription of the queue (purge, §5.7).
    pub async fn purge_subscriptions(&self, project: &ProjectId, queue: &QueueName) -> Result<(), ApiError> {
        self.delete_partition_range(project, queue, keys::SUBSCRIPTION_PREFIX, keys::SUBSCRIPTIONS_END).await
    }
}
