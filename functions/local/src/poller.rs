//! The local stand-in for Lambda's DynamoDB stream event source: reads the table's stream on
//! DynamoDB Local and calls the fan-out handler with the event shape Lambda delivers.
//!
//! - Shards: open shards are read from LATEST at start (older records are history), shards that
//!   appear later (children of closed ones) from TRIM_HORIZON, so nothing is skipped while running.
//! - Records become the Lambda JSON (`eventID`, `eventName`, `dynamodb.{Keys,NewImage,OldImage,
//!   SequenceNumber,...}`, `eventSourceARN`) via serde_dynamo, and are parsed by the same
//!   `zaqar_fanout::parse_event` the Lambda binary uses.
//! - Filtering is the template's FilterCriteria: [`zaqar::stream::admits_json`].
//! - Batches run as tasks, so a slow subscriber does not delay the next poll; records reported as
//!   failed are retried a few times with backoff, like the event source's MaximumRetryAttempts.
//!
//! Disabled with `ZAQAR_STREAM_POLLER=false` (read by `main`). Polls every 200 ms when the stream is idle.

use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use zaqar::App;

const IDLE_POLL: Duration = Duration::from_millis(200);
const DESCRIBE_EVERY: Duration = Duration::from_secs(2);
const RETRIES: u32 = 5;

/// Starts polling in the background; fan-out runs with `settings` as the Lambda function would.
pub fn spawn(app: App, settings: zaqar_fanout::Settings) {
    tokio::spawn(async move {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let streams = aws_sdk_dynamodbstreams::Client::new(&sdk);
        // Its own table client: the stream ARN is operations' business, not the store's API.
        let tables = aws_sdk_dynamodb::Client::new(&sdk);
        let settings = Arc::new(settings);
        let slots = Arc::new(tokio::sync::Semaphore::new(8));
        loop {
            if let Err(e) = poll(&app, &tables, &streams, &settings, &slots).await {
                tracing::warn!(error = %e, "stream poller restarting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
}

async fn poll(
    app: &App,
    tables: &aws_sdk_dynamodb::Client,
    streams: &aws_sdk_dynamodbstreams::Client,
    settings: &Arc<zaqar_fanout::Settings>,
    slots: &Arc<tokio::sync::Semaphore>,
) -> Result<(), String> {
    let table = tables.describe_table().table_name(&app.config.table).send().await.map_err(|e| format!("{e:?}"))?;
    let arn = table.table().and_then(|t| t.latest_stream_arn()).ok_or("the table has no stream")?.to_string();
    tracing::info!(stream = %arn, "stream poller reading");
    let mut iterators: HashMap<String, String> = HashMap::new();
    let mut known: HashSet<String> = HashSet::new();
    let mut first = true;
    let mut described = tokio::time::Instant::now() - DESCRIBE_EVERY;
    loop {
        if described.elapsed() >= DESCRIBE_EVERY {
            for (shard, open) in shards(streams, &arn).await? {
                if !known.insert(shard.clone()) || (first && !open) {
                    continue;
                }
                let kind = if first { ShardIteratorType::Latest } else { ShardIteratorType::TrimHorizon };
                let out = streams
                    .get_shard_iterator()
                    .stream_arn(&arn)
                    .shard_id(&shard)
                    .shard_iterator_type(kind)
                    .send()
                    .await
                    .map_err(|e| format!("{e:?}"))?;
                if let Some(it) = out.shard_iterator() {
                    iterators.insert(shard, it.to_string());
                }
            }
            first = false;
            described = tokio::time::Instant::now();
        }
        let mut busy = false;
        for (shard, it) in iterators.clone() {
            let out =
                streams.get_records().shard_iterator(it).limit(1000).send().await.map_err(|e| format!("{e:?}"))?;
            match out.next_shard_iterator() {
                Some(next) => iterators.insert(shard, next.to_string()),
                None => iterators.remove(&shard), // closed; its children show up at the next describe
            };
            let records: Vec<Value> =
                out.records().iter().map(|r| lambda_json(r, &arn)).filter(zaqar::stream::admits_json).collect();
            if !out.records().is_empty() {
                busy = true;
            }
            if !records.is_empty() {
                dispatch(app.clone(), settings.clone(), slots.clone(), records);
            }
        }
        if !busy {
            tokio::time::sleep(IDLE_POLL).await;
        }
    }
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
