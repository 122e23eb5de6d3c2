//! The local stand-in for Lambda's DynamoDB stream event source: reads the table's stream on
//! DynamoDB Local and calls the fan-out handler with the event shape Lambda delivers.
//!
//! - Shards: open shards are read from LATEST when the process starts (older records are history),
//!   shards that appear later (children of closed ones) from TRIM_HORIZON, so nothing is skipped while
//!   running.
//! - Errors (storage unreachable, an expired iterator): the position in each shard outlives them.
//!   (A page the SDK cannot parse, as DynamoDB Local writes empty maps, is read from its JSON body.) A
//!   shard resumes AFTER_SEQUENCE_NUMBER of the last record read; one without a record read yet starts
//!   again where it started (TRIM_HORIZON; a shard first read from LATEST skips records older than the
//!   process). Records written during an outage are delivered after it, as Lambda's event source does.
//! - Records become the Lambda JSON (`eventID`, `eventName`, `dynamodb.{Keys,NewImage,OldImage,
//!   SequenceNumber,...}`, `eventSourceARN`) via serde_dynamo, and are parsed by the same
//!   `zaqar_fanout::parse_event` the Lambda binary uses.
//! - Filtering is the template's FilterCriteria: [`zaqar::stream::admits_json`].
//! - Batches run as tasks, so a slow subscriber does not delay the next poll; records reported as
//!   failed are retried a few times with backoff, like the event source's MaximumRetryAttempts.
//!
//! Disabled with `ZAQAR_STREAM_POLLER=false` (read by `main`). Polls every 200 ms when the stream is idle.

use aws_sdk_dynamodbstreams::config::http::HttpResponse;
use aws_sdk_dynamodbstreams::error::SdkError;
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use zaqar::App;

const IDLE_POLL: Duration = Duration::from_millis(200);

/// Fan-out invocations made by this process (each batch handed to the handler, retries included): the
/// number Lambda's event source would bill, so tests can see that filtered records cost none.
static INVOCATIONS: AtomicU64 = AtomicU64::new(0);

/// How many times this process has invoked the fan-out handler.
pub fn invocations() -> u64 {
    INVOCATIONS.load(Ordering::Relaxed)
}
const DESCRIBE_EVERY: Duration = Duration::from_secs(2);
const RETRIES: u32 = 5;

/// Starts polling in the background; fan-out runs with `settings` as the Lambda function would.
pub fn spawn(app: App, settings: zaqar_fanout::Settings) {
    tokio::spawn(async move {
        let sdk = zaqar::app::sdk_config().unwrap_or_else(|e| panic!("invalid configuration: {e}"));
        let timeouts =
            zaqar::timeouts::StorageTimeouts::from_env().unwrap_or_else(|e| panic!("invalid configuration: {e}"));
        let sdk = timeouts.apply(&sdk);
        let streams = aws_sdk_dynamodbstreams::Client::new(&sdk);
        // Its own table client: the stream ARN is operations' business, not the store's API.
        let tables = aws_sdk_dynamodb::Client::new(&sdk);
        run(app, tables, streams, settings).await
    });
}

/// Polls the stream of `app`'s table for ever, resuming where it was after every error.
pub async fn run(
    app: App,
    tables: aws_sdk_dynamodb::Client,
    streams: aws_sdk_dynamodbstreams::Client,
    settings: zaqar_fanout::Settings,
) {
    let settings = Arc::new(settings);
    let slots = Arc::new(tokio::sync::Semaphore::new(8));
    let mut position = Position::new();
    loop {
        if let Err(e) = poll(&app, &tables, &streams, &settings, &slots, &mut position).await {
            tracing::warn!(error = %e, "stream poller pausing after an error; it resumes where it was");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// How a shard was first positioned: where to start again when no record was read from it yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Open when the process started: new records only (those created before `started_s` are history).
    Latest,
    /// Appeared later: all of it.
    TrimHorizon,
}

#[derive(Debug, Clone)]
struct Shard {
    origin: Origin,
    /// Sequence number of the last record read.
    last: Option<String>,
    /// The next GetRecords iterator; `None` before the first read and after an error.
    iterator: Option<String>,
    /// Whether an iterator was ever built (LATEST is only right the first time).
    positioned: bool,
    /// Records created before this instant (epoch s) are history: set when a LATEST shard is re-read
    /// from its start.
    skip_before: Option<i64>,
}

impl Shard {
    fn new(origin: Origin) -> Self {
        Shard { origin, last: None, iterator: None, positioned: false, skip_before: None }
    }
}

/// Where reading stands in each shard of one stream, kept across errors.
struct Position {
    stream: Option<String>,
    shards: HashMap<String, Shard>,
    /// Whether the open shards were positioned (LATEST is used once, at the process start).
    started: bool,
    started_s: i64,
}

impl Position {
    fn new() -> Self {
        let started_s =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        Position { stream: None, shards: HashMap::new(), started: false, started_s }
    }
}

async fn poll(
    app: &App,
    tables: &aws_sdk_dynamodb::Client,
    streams: &aws_sdk_dynamodbstreams::Client,
    settings: &Arc<zaqar_fanout::Settings>,
    slots: &Arc<tokio::sync::Semaphore>,
    pos: &mut Position,
) -> Result<(), String> {
    let table = tables.describe_table().table_name(&app.config.table).send().await.map_err(|e| format!("{e:?}"))?;
    let arn = table.table().and_then(|t| t.latest_stream_arn()).ok_or("the table has no stream")?.to_string();
    if pos.stream.as_deref() != Some(arn.as_str()) {
        // A new stream (the table was re-created while running): everything in it is new.
        if pos.stream.is_some() {
            pos.shards.clear();
        }
        pos.stream = Some(arn.clone());
        tracing::info!(stream = %arn, "stream poller reading");
    }
    let mut described = tokio::time::Instant::now() - DESCRIBE_EVERY;
    loop {
        if described.elapsed() >= DESCRIBE_EVERY {
            for (id, open) in shards(streams, &arn).await? {
                if pos.shards.contains_key(&id) || (!pos.started && !open) {
                    continue;
                }
                pos.shards.insert(id, Shard::new(if pos.started { Origin::TrimHorizon } else { Origin::Latest }));
            }
            pos.started = true;
            described = tokio::time::Instant::now();
        }
        let mut busy = false;
        let ids: Vec<String> = pos.shards.keys().cloned().collect();
        for id in ids {
            let started_s = pos.started_s;
            let Some(shard) = pos.shards.get_mut(&id) else { continue };
            let iterator = match shard.iterator.take() {
                Some(it) => it,
                None => match position_shard(streams, &arn, &id, shard, started_s).await? {
                    Some(it) => it,
                    None => {
                        pos.shards.remove(&id); // nothing left to read in it
                        continue;
                    }
                },
            };
            // On an error the iterator stays taken: the next round rebuilds it from the last record.
            let page = read_page(streams, &iterator, &arn).await?;
            let skip_before = shard.skip_before;
            if let Some(seq) = page.records.last().and_then(|r| r["dynamodb"]["SequenceNumber"].as_str()) {
                shard.last = Some(seq.to_string());
            }
            match page.next {
                Some(next) => shard.iterator = Some(next),
                None => {
                    pos.shards.remove(&id); // closed; its children show up at the next describe
                }
            }
            if !page.records.is_empty() {
                busy = true;
            }
            let records: Vec<Value> = page
                .records
                .into_iter()
                .filter(|r| {
                    let created = r["dynamodb"]["ApproximateCreationDateTime"].as_f64();
                    skip_before.is_none_or(|limit| created.is_none_or(|c| c >= limit as f64))
                })
                .filter(zaqar::stream::admits_json)
                .collect();
            if !records.is_empty() {
                dispatch(app.clone(), settings.clone(), slots.clone(), records);
            }
        }
        if !busy {
            tokio::time::sleep(IDLE_POLL).await;
        }
    }
}

/// One GetRecords page: the records in the shape Lambda delivers, and the next iterator.
struct Page {
    records: Vec<Value>,
    next: Option<String>,
}

async fn read_page(streams: &aws_sdk_dynamodbstreams::Client, iterator: &str, arn: &str) -> Result<Page, String> {
    match streams.get_records().shard_iterator(iterator).limit(1000).send().await {
        Ok(out) => Ok(Page {
            records: out.records().iter().map(|r| lambda_json(r, arn)).collect(),
            next: out.next_shard_iterator().map(str::to_string),
        }),
        Err(e) => raw_page(&e, arn).ok_or_else(|| format!("{e:?}")),
    }
}

/// DynamoDB Local writes an empty map attribute as `{}` in stream records, which the SDK refuses for
/// the whole response ("Union did not contain a valid variant"), so a resumed poller would stop at it
/// for ever. Such a page is read from its JSON body instead: it is already the shape Lambda delivers.
fn raw_page<E>(e: &SdkError<E, HttpResponse>, arn: &str) -> Option<Page> {
    let SdkError::ServiceError(failure) = e else { return None };
    if failure.raw().status().as_u16() != 200 {
        return None;
    }
    let body: Value = serde_json::from_slice(failure.raw().body().bytes()?).ok()?;
    let records = body.get("Records")?.as_array()?;
    let records = records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r["eventSourceARN"] = json!(arn);
            r
        })
        .collect();
    Some(Page { records, next: body.get("NextShardIterator").and_then(Value::as_str).map(str::to_string) })
}

/// A GetRecords iterator for a shard that has none: after its last record read; else from its origin
/// (LATEST only the first time: later, from its start, skipping what predates the process).
async fn position_shard(
    streams: &aws_sdk_dynamodbstreams::Client,
    arn: &str,
    id: &str,
    shard: &mut Shard,
    started_s: i64,
) -> Result<Option<String>, String> {
    let req = streams.get_shard_iterator().stream_arn(arn).shard_id(id);
    let req = match (&shard.last, shard.origin, shard.positioned) {
        (Some(seq), _, _) => req.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).sequence_number(seq),
        (None, Origin::Latest, false) => req.shard_iterator_type(ShardIteratorType::Latest),
        (None, Origin::Latest, true) => {
            // ApproximateCreationDateTime is rounded down to the minute, so only records of the minutes
            // before the start are history; those of the start's own minute are delivered (at least once,
            // as Lambda's event source delivers).
            shard.skip_before = Some(started_s - started_s.rem_euclid(60));
            req.shard_iterator_type(ShardIteratorType::TrimHorizon)
        }
        (None, Origin::TrimHorizon, _) => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
    };
    let out = req.send().await.map_err(|e| format!("{e:?}"))?;
    shard.positioned = true;
    Ok(out.shard_iterator().map(str::to_string))
}

/// Every shard of the stream with whether it is still open.
async fn shards(streams: &aws_sdk_dynamodbstreams::Client, arn: &str) -> Result<Vec<(String, bool)>, String> {
    let mut found = Vec::new();
    let mut start: Option<String> = None;
    loop {
        let out = streams
            .describe_stream()
            .stream_arn(arn)
            .set_exclusive_start_shard_id(start.take())
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        let Some(desc) = out.stream_description() else { return Ok(found) };
        for shard in desc.shards() {
            if let Some(id) = shard.shard_id() {
                let open = shard.sequence_number_range().is_none_or(|r| r.ending_sequence_number().is_none());
                found.push((id.to_string(), open));
            }
        }
        match desc.last_evaluated_shard_id() {
            Some(last) => start = Some(last.to_string()),
            None => return Ok(found),
        }
    }
}

/// Runs one batch in the background, retrying the records the handler reports as failed.
fn dispatch(
    app: App,
    settings: Arc<zaqar_fanout::Settings>,
    slots: Arc<tokio::sync::Semaphore>,
    mut records: Vec<Value>,
) {
    tokio::spawn(async move {
        for attempt in 0..=RETRIES {
            let response = {
                let Ok(_slot) = slots.acquire().await else { return };
                let event = zaqar_fanout::parse_event(json!({ "Records": records }));
                INVOCATIONS.fetch_add(1, Ordering::Relaxed);
                zaqar_fanout::handle_with(&app, &settings, event).await
            };
            let failed: HashSet<String> =
                response.batch_item_failures.into_iter().filter_map(|f| f.item_identifier).collect();
            if failed.is_empty() {
                return;
            }
            records.retain(|r| r["dynamodb"]["SequenceNumber"].as_str().is_some_and(|s| failed.contains(s)));
            if attempt < RETRIES {
                tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
            }
        }
        tracing::warn!(records = records.len(), "fan-out gave up on records after retries");
    });
}

fn image(m: Option<&HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>>) -> Option<Value> {
    let item: serde_dynamo::Item = m?.clone().into();
    serde_json::to_value(item).ok()
}

/// A stream record in the JSON shape Lambda passes to a DynamoDB-stream function.
fn lambda_json(r: &Record, arn: &str) -> Value {
    let mut change = Map::new();
    if let Some(d) = r.dynamodb() {
        if let Some(t) = d.approximate_creation_date_time() {
            change.insert("ApproximateCreationDateTime".into(), json!(t.secs()));
        }
        for (name, img) in [("Keys", d.keys()), ("NewImage", d.new_image()), ("OldImage", d.old_image())] {
            if let Some(v) = image(img) {
                change.insert(name.into(), v);
            }
        }
        change.insert("SequenceNumber".into(), json!(d.sequence_number()));
        change.insert("SizeBytes".into(), json!(d.size_bytes().unwrap_or(0)));
        change.insert("StreamViewType".into(), json!(d.stream_view_type().map(|v| v.as_str())));
    }
    let mut rec = json!({
        "eventID": r.event_id(),
        "eventName": r.event_name().map(|n| n.as_str()),
        "eventVersion": r.event_version(),
        "eventSource": "aws:dynamodb",
        "awsRegion": r.aws_region().unwrap_or("ddblocal"),
        "dynamodb": Value::Object(change),
        "eventSourceARN": arn,
    });
    if let Some(id) = r.user_identity() {
        rec["userIdentity"] = json!({"type": id.r#type(), "principalId": id.principal_id()});
    }
    rec
}
