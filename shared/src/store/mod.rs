//! Storage: Zaqar's resources as DynamoDB items (layout in [`crate::keys`]).
//!
//! Every request asks for its consumed capacity, which [`Usage`] adds up: DynamoDB requests and
//! capacity units are this service's cost, and the benchmarks print them per operation.

pub mod admin;
pub mod claims;
mod expr;
pub(crate) mod head;
pub use head::{PostState, PostedUpTo};
pub mod messages;
mod pending;
pub mod queues;
pub(crate) mod ranges;
pub mod schema;
mod settle;
pub mod subscriptions;
pub(crate) use settle::detached;
mod tally;

use crate::clock::Clock;
use crate::keys::Item;
use aws_sdk_dynamodb::types::{AttributeValue, ConsumedCapacity};
use aws_sdk_dynamodb::Client;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Requests and capacity units consumed, for cost reports (units kept in thousandths).
#[derive(Debug, Default)]
pub struct Usage {
    requests: AtomicU64,
    read_milli: AtomicU64,
    write_milli: AtomicU64,
    /// When storage last answered (ms since [`process_start`], plus one; 0 = never).
    last_answer_ms: AtomicU64,
}

/// The instant this process first asked for the time: a monotonic origin for [`Usage`].
fn process_start() -> std::time::Instant {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *START.get_or_init(std::time::Instant::now)
}

fn since_start_ms() -> u64 {
    process_start().elapsed().as_millis() as u64 + 1
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UsageSnapshot {
    pub requests: u64,
    pub read_units: f64,
    pub write_units: f64,
}

impl std::ops::Sub for UsageSnapshot {
    type Output = UsageSnapshot;
    fn sub(self, o: Self) -> Self {
        UsageSnapshot {
            requests: self.requests - o.requests,
            read_units: self.read_units - o.read_units,
            write_units: self.write_units - o.write_units,
        }
    }
}

impl Usage {
    fn add<'a>(&self, consumed: impl IntoIterator<Item = &'a ConsumedCapacity>, write: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.last_answer_ms.store(since_start_ms(), Ordering::Relaxed);
        for c in consumed {
            // DynamoDB Local reports only the total; AWS splits it. Either way it is this call's kind.
            let units = c.capacity_units().unwrap_or(0.0);
            let (read, written) = match (c.read_capacity_units(), c.write_capacity_units()) {
                (None, None) if write => (0.0, units),
                (None, None) => (units, 0.0),
                (r, w) => (r.unwrap_or(0.0), w.unwrap_or(0.0)),
            };
            self.read_milli.fetch_add((read * 1000.0).round() as u64, Ordering::Relaxed);
            self.write_milli.fetch_add((written * 1000.0).round() as u64, Ordering::Relaxed);
        }
    }

    /// A read request (GetItem, Query, BatchGetItem, DescribeTable) and what it consumed.
    pub fn read<'a>(&self, consumed: impl IntoIterator<Item = &'a ConsumedCapacity>) {
        self.add(consumed, false)
    }

    /// A write request and what it consumed.
    pub fn write<'a>(&self, consumed: impl IntoIterator<Item = &'a ConsumedCapacity>) {
        self.add(consumed, true)
    }

    /// A conditional write whose condition failed: DynamoDB still charges it (at least one unit),
    /// but the SDK error carries no consumed capacity, so one unit is counted.
    pub fn failed_write(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.last_answer_ms.store(since_start_ms(), Ordering::Relaxed);
        self.write_milli.fetch_add(1000, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> UsageSnapshot {
        UsageSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            read_units: self.read_milli.load(Ordering::Relaxed) as f64 / 1000.0,
            write_units: self.write_milli.load(Ordering::Relaxed) as f64 / 1000.0,
        }
    }
}

/// How recent a storage answer must be for ping to trust it without asking.
pub const PING_FRESHNESS: std::time::Duration = std::time::Duration::from_secs(2);

/// The table, its client and the clock: cheap to clone, built once per process.
#[derive(Clone)]
pub struct Store {
    pub client: Client,
    pub table: String,
    pub clock: Clock,
    pub usage: Arc<Usage>,
    queues: Arc<queues::QueueCache>,
    hints: Arc<head::NextHints>,
    own_pending: Arc<pending::OwnPending>,
    tallies: Arc<tally::Tallies>,
    /// Claims take runs of fresh messages in one head write where they can (`ranges.rs`); off, every claim
    /// takes its messages one by one (tests of that path turn it off).
    pub range_claims: bool,
}

impl Store {
    pub fn new(client: Client, table: impl Into<String>, clock: Clock) -> Self {
        Store {
            client,
            table: table.into(),
            clock,
            usage: Arc::new(Usage::default()),
            queues: Arc::new(queues::QueueCache::default()),
            hints: Arc::new(head::NextHints::default()),
            own_pending: Arc::new(pending::OwnPending::default()),
            tallies: Arc::new(tally::Tallies::default()),
            range_claims: true,
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// A strongly consistent GetItem of one key.
    pub(crate) async fn get_consistent(&self, key: Item, what: &'static str) -> Result<Option<Item>, StoreError> {
        self.get_item(key, what, true).await
    }

    /// A GetItem, strongly consistent (a unit per 4 KB) or eventually consistent (half of that).
    pub(crate) async fn get_item(
        &self,
        key: Item,
        what: &'static str,
        consistent: bool,
    ) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(consistent)
            .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(unavailable(what))?;
        self.usage.read(out.consumed_capacity());
        Ok(out.item)
    }

    /// Liveness for `GET /v2/ping`: storage answered this process within [`PING_FRESHNESS`], or answers a
    /// GetItem of a key that never exists now (a data-plane read of half a unit, not the control plane's
    /// DescribeTable with its low rate limits). Under load ping costs nothing.
    pub async fn ping(&self) -> bool {
        let last = self.usage.last_answer_ms.load(Ordering::Relaxed);
        if last > 0 && since_start_ms().saturating_sub(last) < PING_FRESHNESS.as_millis() as u64 {
            return true;
        }
        let r = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(crate::keys::key("PING".into(), "PING".into())))
            .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
            .send()
            .await;
        match r {
            Ok(out) => {
                self.usage.read(out.consumed_capacity());
                true
            }
            Err(e) => {
                tracing::warn!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(&e), "ping: storage did not answer");
                false
            }
        }
    }
}

/// Write outputs that report the capacity they consumed.
pub(crate) trait WriteOutput {
    fn consumed(&self) -> Option<&ConsumedCapacity>;
}

macro_rules! write_output {
    ($($t:ty),*) => {$(
        impl WriteOutput for $t {
            fn consumed(&self) -> Option<&ConsumedCapacity> {
                self.consumed_capacity()
            }
        }
    )*};
}

write_output!(
    aws_sdk_dynamodb::operation::put_item::PutItemOutput,
    aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
    aws_sdk_dynamodb::operation::delete_item::DeleteItemOutput
);

impl Store {
    /// Accounts for a conditional write: `Some(output)` when written, `None` when its condition failed
    /// (a lost race or a missing item: charged one unit, as DynamoDB charges it); anything else is 503.
    pub(crate) fn conditional<O, E, R>(
        &self,
        result: Result<O, aws_sdk_dynamodb::error::SdkError<E, R>>,
        what: &'static str,
    ) -> Result<Option<O>, StoreError>
    where
        O: WriteOutput,
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        match result {
            Ok(out) => {
                self.usage.write(out.consumed());
                Ok(Some(out))
            }
            Err(e) if is_condition_failed(&e) => {
                self.usage.failed_write();
                Ok(None)
            }
            Err(e) => Err(unavailable(what)(e)),
        }
    }

    /// An UpdateItem of message `k` of `shard` (conditions, values and return values still to set).
    pub(crate) fn update_message(
        &self,
        shard: &crate::keys::Shard,
        k: u64,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(shard.message_key(k)))
            .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
    }

    /// Sorts the result of a conditional UpdateItem into [`Updated`], accounting for its capacity; anything
    /// else is 503. The items are those the request asked for (`ReturnValues`, and
    /// `ReturnValuesOnConditionCheckFailure` for the refused one).
    pub(crate) fn updated<R>(
        &self,
        result: Result<
            aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
            aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError, R>,
        >,
        what: &'static str,
    ) -> Result<Updated, StoreError>
    where
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        match result {
            Ok(out) => {
                self.usage.write(out.consumed_capacity());
                Ok(Updated::Applied(out.attributes))
            }
            Err(e) => match self.failed_condition_item(&e) {
                Some(current) => Ok(Updated::Refused(current)),
                None => Err(unavailable(what)(e)),
            },
        }
    }

    /// A PutItem on condition that nothing is at its key: `Ok(Ok(()))` when written, `Ok(Err(found))`
    /// with the item that is there when not.
    pub(crate) async fn put_if_absent(
        &self,
        item: Item,
        what: &'static str,
    ) -> Result<Result<(), Option<Item>>, StoreError> {
        use aws_sdk_dynamodb::operation::put_item::PutItemError;
        let r = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(crate::keys::cond::NOT_EXISTS)
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            )
            .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
            .send()
            .await;
        match r {
            Ok(out) => {
                self.usage.write(out.consumed_capacity());
                Ok(Ok(()))
            }
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(c)) => {
                    self.usage.failed_write();
                    Ok(Err(c.item().cloned()))
                }
                _ => Err(unavailable(what)(e)),
            },
        }
    }

    /// An unconditional PutItem.
    pub(crate) async fn put(&self, item: Item, what: &'static str) -> Result<(), StoreError> {
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(unavailable(what))?;
        self.usage.write(out.consumed_capacity());
        Ok(())
    }
}

/// What a conditional UpdateItem did (see [`Store::updated`]).
pub(crate) enum Updated {
    /// Applied: the item as the request asked it back (as it was, or as it is now).
    Applied(Option<Item>),
    /// Its condition failed: the item as it is, if stored.
    Refused(Option<Item>),
}

/// Maps any SDK failure to Zaqar's 503; the cause goes to the log, never to the client.
pub fn unavailable<E>(what: &'static str) -> impl FnOnce(E) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |e| StoreError::Request { operation: what, source: Box::new(e) }
}

/// Why storage could not do what was asked. The store returns these; `error.rs` alone turns them into
/// Zaqar's 503 (with `Retry-After`) and logs them with their source.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A DynamoDB request failed: timeout, throttling or 5xx after the SDK's retries, connection errors.
    #[error("{operation}: storage request failed")]
    Request {
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Retries inside the operation ran out (unprocessed batch items, contention, a commit wait).
    #[error("{operation}: retries exhausted")]
    Exhausted { operation: &'static str },
}

impl StoreError {
    pub fn exhausted(operation: &'static str) -> Self {
        StoreError::Exhausted { operation }
    }

    /// The operation, as it appears in the client's error description.
    pub fn operation(&self) -> &'static str {
        match self {
            StoreError::Request { operation, .. } | StoreError::Exhausted { operation } => operation,
        }
    }
}

/// A random pause before trying again after losing a race (`attempt` 1, 2, ...): up to 4, 8, ... 128 ms,
/// so contenders that collided do not collide again in step.
pub async fn contention_pause(attempt: u32) {
    let ceiling = 2u64 << attempt.clamp(1, 6);
    tokio::time::sleep(std::time::Duration::from_millis(rand::random::<u64>() % ceiling)).await;
}

/// Whether an SDK error is a failed condition (a lost race or a missing item, not a fault).
pub fn is_condition_failed<E, R>(err: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    err.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException")
        || err.as_service_error().and_then(|e| e.code()) == Some("TransactionCanceledException")
}

pub fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Some(s.as_str()),
        _ => None,
    }
}

pub fn get_i64(item: &Item, name: &str) -> Option<i64> {
    match item.get(name) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

pub fn get_bool(item: &Item, name: &str) -> Option<bool> {
    match item.get(name) {
        Some(AttributeValue::Bool(b)) => Some(*b),
        _ => None,
    }
}

/// A JSON object stored as text.
pub fn get_json(item: &Item, name: &str) -> Option<serde_json::Value> {
    get_s(item, name).and_then(|t| serde_json::from_str(t).ok())
}

/// Native TTL value (epoch seconds) for an instant in ms, rounded up so the item outlives its expiry.
pub fn ttl_epoch(ms: i64) -> AttributeValue {
    crate::keys::n((ms + 999).div_euclid(1000))
}
