//! Faults and hostile input (issue 10), through the real handlers against DynamoDB Local: storage that
//! freezes or drops connections, numbers at the edge of i64, over-long ids and markers, oversized and
//! non-finite documents, fan-out records that fail or run out of time, racing creates.

mod fanout;
mod faults;
mod inputs;
mod proxy;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{json, Value};
use std::collections::HashMap;
use zaqar::clock::Clock;
use zaqar::config::Config;
use zaqar::timeouts::StorageTimeouts;
use zaqar::App;

pub type Item = HashMap<String, AttributeValue>;

/// `host:port` of DynamoDB Local, from `ZAQAR_TEST_ENDPOINT` as the harness reads it.
pub fn upstream() -> String {
    let endpoint = std::env::var("ZAQAR_TEST_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:8000".into());
    endpoint.trim_start_matches("http://").trim_end_matches('/').to_string()
}

/// The SDK configuration the harness uses, aimed at `endpoint`.
pub async fn sdk_for(endpoint: &str) -> aws_config::SdkConfig {
    zaqar::app::sdk_loader()
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("local", "local", None, None, "tests"))
        .load()
        .await
}

/// An app whose storage calls go to `endpoint` with the production deadlines (the harness relaxes them
/// for a loaded DynamoDB Local).
pub async fn app_at(endpoint: &str, config: Config) -> App {
    let client = zaqar::app::dynamodb_client_with(&sdk_for(endpoint).await, &StorageTimeouts::default());
    App::new(config, client, Clock::manual())
}

fn dynamo_json(item: &Item) -> Value {
    serde_json::to_value(serde_dynamo::Item::from(item.clone())).unwrap()
}

static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(5_000_000);

/// An INSERT stream record for `item`, in the shape Lambda delivers.
pub fn insert_record(item: &Item) -> Value {
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let keys: Item =
        item.iter().filter(|(k, _)| *k == "pk" || *k == "sk").map(|(k, v)| (k.clone(), v.clone())).collect();
    json!({
        "eventID": format!("h{seq}"), "eventName": "INSERT", "eventVersion": "1.1", "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": 1.7e9, "Keys": dynamo_json(&keys), "NewImage": dynamo_json(item),
            "SequenceNumber": format!("{seq:021}"), "SizeBytes": 100, "StreamViewType": "NEW_AND_OLD_IMAGES"
        },
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:000000000000:table/zaqar-tests/stream/2026-01-01T00:00:00.000"
    })
}

pub fn seq_of(record: &Value) -> String {
    record["dynamodb"]["SequenceNumber"].as_str().unwrap().to_string()
}
