//! Per-request DynamoDB metering: an SDK interceptor that records, for every request the handlers send,
//! its operation, when it started and ended, the partition keys it touched and the capacity it consumed.
//!
//! The store's own [`zaqar::store::Usage`] adds up requests and units per process; the heat and cost
//! benchmarks need more: which partition key paid (DynamoDB caps each key at 1,000 WCU/s and 3,000 RCU/s)
//! and how many round trips were sequential. The interceptor reads the request's JSON body (the `pk` of
//! `Key`/`Item`, Query's `:pk` value, every item of a batch) and the response's `ConsumedCapacity`, so it
//! sees exactly what the wire carries, whatever code path sent it.
//!
//! Attribution rules: a single-item request or a Query charges its one key. A batch reports one total per
//! table, which is split over its items: BatchGetItem equally per key asked (every item is rounded up to
//! 4 KB on its own, and ours are small), BatchWriteItem by each item's size in 1 KB units (what a write is
//! charged by). A failed conditional write carries no `ConsumedCapacity`; DynamoDB still charges it, at
//! least one write unit, so one is counted.

use aws_sdk_dynamodb::config::interceptors::{BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

tokio::task_local! {
    /// What the caller was doing (`post`, `claim`, ...), so a call can be traced back to its API operation.
    /// The store sends its requests from the calling task, so the tag reaches the interceptor.
    pub static TAG: &'static str;
}

/// One DynamoDB request as it went over the wire.
#[derive(Debug, Clone)]
pub struct Call {
    /// `GetItem`, `Query`, `BatchWriteItem`, ...
    pub op: String,
    /// The caller's [`TAG`] when the request was sent.
    pub tag: Option<&'static str>,
    pub started: Instant,
    pub ended: Instant,
    /// Partition keys touched, with the share of the request's units each one pays.
    pub keys: Vec<(String, f64)>,
    pub read_units: f64,
    pub write_units: f64,
    /// A conditional write whose condition failed (counted as one write unit).
    pub failed_condition: bool,
    /// Any other error response (no units counted).
    pub error: bool,
}

/// The calls recorded so far; cheap to clone (shared with the interceptor).
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    calls: Arc<Mutex<Vec<Call>>>,
    paused: Arc<AtomicBool>,
    /// CPU time spent inside the interceptor (ns), so CPU per operation can leave the metering out.
    own_cpu_ns: Arc<AtomicU64>,
}

/// CPU time of this process (all threads) or of the calling thread, in nanoseconds.
pub fn cpu_ns(thread: bool) -> u64 {
    let clock = if thread { libc::CLOCK_THREAD_CPUTIME_ID } else { libc::CLOCK_PROCESS_CPUTIME_ID };
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into memory we own; both clocks exist on Linux.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Recorder {
    /// Stops recording (fills and setup), or starts again.
    pub fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    /// Forgets everything recorded so far.
    pub fn clear(&self) {
        self.calls.lock().expect("recorder lock").clear();
    }

    /// Takes everything recorded so far.
    pub fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().expect("recorder lock"))
    }

    /// CPU (ns) the interceptor itself has used so far.
    pub fn own_cpu_ns(&self) -> u64 {
        self.own_cpu_ns.load(Ordering::Relaxed)
    }

    fn charge(&self, since: u64) {
        self.own_cpu_ns.fetch_add(cpu_ns(true).saturating_sub(since), Ordering::Relaxed);
    }

    fn push(&self, call: Call) {
        if std::env::var_os("BENCH_TRACE").is_some() {
            eprintln!(
                "trace: {:?} {} {:?} r={} w={} failed={} {:.2} ms",
                call.tag,
                call.op,
                call.keys,
                call.read_units,
                call.write_units,
                call.failed_condition,
                (call.ended - call.started).as_secs_f64() * 1000.0
            );
        }
        if !self.paused.load(Ordering::SeqCst) {
            self.calls.lock().expect("recorder lock").push(call);
        }
    }
}

/// The interceptor attached to the bench's DynamoDB client.
#[derive(Debug, Clone)]
pub struct Meter(pub Recorder);

/// What the request said, kept in the config bag until its attempt ends.
#[derive(Debug, Clone)]
struct Pending {
    op: String,
    tag: Option<&'static str>,
    started: Instant,
    keys: Vec<(String, f64)>,
}

impl Storable for Pending {
    type Storer = StoreReplace<Self>;
}

impl Intercept for Meter {
    fn name(&self) -> &'static str {
        "BenchMeter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let cpu = cpu_ns(true);
        let req = context.request();
        let op = req.headers().get("x-amz-target").and_then(|t| t.rsplit('.').next()).unwrap_or("?").to_string();
        let body: Value = req.body().bytes().and_then(|b| serde_json::from_slice(b).ok()).unwrap_or(Value::Null);
        let keys = request_keys(&op, &body);
        let tag = TAG.try_with(|t| *t).ok();
        cfg.interceptor_state().store_put(Pending { op, tag, started: Instant::now(), keys });
        self.0.charge(cpu);
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let ended = Instant::now();
        let cpu = cpu_ns(true);
        let Some(pending) = cfg.load::<Pending>().cloned() else { return Ok(()) };
        let (status, body) = match context.response() {
            Some(r) => (
                r.status().as_u16(),
                r.body().bytes().and_then(|b| serde_json::from_slice::<Value>(b).ok()).unwrap_or(Value::Null),
            ),
            None => (0, Value::Null),
        };
        let mut call = Call {
            op: pending.op,
            tag: pending.tag,
            started: pending.started,
            ended,
            keys: pending.keys,
            read_units: 0.0,
            write_units: 0.0,
            failed_condition: false,
            error: false,
        };
        if status == 200 {
            let (r, w) = consumed(&call.op, &body);
            call.read_units = r;
            call.write_units = w;
        } else {
            let kind = body.get("__type").and_then(Value::as_str).unwrap_or("");
            if kind.ends_with("ConditionalCheckFailedException") {
                call.failed_condition = true;
                call.write_units = 1.0;
            } else {
                call.error = true;
            }
        }
        self.0.push(call);
        self.0.charge(cpu);
        Ok(())
    }
}

fn is_write(op: &str) -> bool {
    matches!(op, "PutItem" | "UpdateItem" | "DeleteItem" | "BatchWriteItem" | "TransactWriteItems")
}

/// Read and write units from a response's `ConsumedCapacity` (an object, or a list for batches).
fn consumed(op: &str, body: &Value) -> (f64, f64) {
    let entries: Vec<&Value> = match body.get("ConsumedCapacity") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(v @ Value::Object(_)) => vec![v],
        _ => vec![],
    };
    let (mut r, mut w) = (0.0, 0.0);
    for c in entries {
        let f = |name: &str| c.get(name).and_then(Value::as_f64);
        match (f("ReadCapacityUnits"), f("WriteCapacityUnits")) {
            (None, None) => {
                // DynamoDB Local reports only the total: it is the kind of the operation.
                let total = f("CapacityUnits").unwrap_or(0.0);
                if is_write(op) {
                    w += total
                } else {
                    r += total
                }
            }
            (rr, ww) => {
                r += rr.unwrap_or(0.0);
                w += ww.unwrap_or(0.0);
            }
        }
    }
    (r, w)
}

fn pk_of(item: &Value) -> Option<String> {
    item.get("pk")?.get("S")?.as_str().map(str::to_string)
}

/// Approximate DynamoDB item size (attribute names + values) in bytes, from its JSON form.
fn item_size(item: &Value) -> usize {
    fn value_size(v: &Value) -> usize {
        match v {
            Value::Object(typed) => typed
                .iter()
                .map(|(t, inner)| match (t.as_str(), inner) {
                    ("S" | "N" | "B", Value::String(s)) => s.len(),
                    ("BOOL" | "NULL", _) => 1,
                    ("M", Value::Object(m)) => 3 + m.iter().map(|(k, x)| k.len() + value_size(x) + 1).sum::<usize>(),
                    ("L" | "SS" | "NS" | "BS", Value::Array(a)) => {
                        3 + a.iter().map(|x| 1 + x.as_str().map_or_else(|| value_size(x), str::len)).sum::<usize>()
                    }
                    _ => 1,
                })
                .sum(),
            _ => 1,
        }
    }
    item.as_object().map_or(0, |m| m.iter().map(|(k, v)| k.len() + value_size(v)).sum())
}

/// The partition keys a request touches, each with its weight in the request's units.
fn request_keys(op: &str, body: &Value) -> Vec<(String, f64)> {
    let one = |pk: Option<String>| vec![(pk.unwrap_or_else(|| "?".into()), 1.0)];
    match op {
        "GetItem" | "UpdateItem" | "DeleteItem" => one(body.get("Key").and_then(pk_of)),
        "PutItem" => one(body.get("Item").and_then(pk_of)),
        "Query" => one(body.pointer("/ExpressionAttributeValues/:pk/S").and_then(Value::as_str).map(str::to_string)),
        "BatchGetItem" => {
            let tables = body.get("RequestItems").and_then(Value::as_object);
            let keys = tables
                .into_iter()
                .flat_map(|t| t.values())
                .flat_map(|ka| ka.get("Keys").and_then(Value::as_array).cloned().unwrap_or_default().into_iter());
            keys.map(|k| (pk_of(&k).unwrap_or_else(|| "?".into()), 1.0)).collect()
        }
        "BatchWriteItem" => {
            let tables = body.get("RequestItems").and_then(Value::as_object);
            let requests = tables
                .into_iter()
                .flat_map(|t| t.values())
                .flat_map(|reqs| reqs.as_array().cloned().unwrap_or_default().into_iter());
            requests
                .map(|r| {
                    if let Some(item) = r.pointer("/PutRequest/Item") {
                        (pk_of(item).unwrap_or_else(|| "?".into()), item_size(item).div_ceil(1024).max(1) as f64)
                    } else {
                        (r.pointer("/DeleteRequest/Key").and_then(pk_of).unwrap_or_else(|| "?".into()), 1.0)
                    }
                })
                .collect()
        }
        "TransactWriteItems" | "TransactGetItems" => {
            let items = body.get("TransactItems").and_then(Value::as_array).cloned().unwrap_or_default();
            items
                .iter()
                .filter_map(|t| t.as_object().and_then(|o| o.values().next()))
                .map(|a| (a.get("Key").or_else(|| a.get("Item")).and_then(pk_of).unwrap_or_else(|| "?".into()), 1.0))
                .collect()
        }
        _ => vec![("(table)".into(), 1.0)],
    }
}

impl Call {
    /// This call's units per partition key: (key, read units, write units).
    pub fn per_key(&self) -> impl Iterator<Item = (&str, f64, f64)> + '_ {
        let total: f64 = self.keys.iter().map(|(_, w)| w).sum::<f64>().max(f64::MIN_POSITIVE);
        self.keys.iter().map(move |(k, w)| (k.as_str(), self.read_units * w / total, self.write_units * w / total))
    }
}

/// The longest chain of calls each starting after the previous one ended: the round trips a caller
/// waits for one after another (calls sent together overlap and count once).
pub fn sequential_round_trips(calls: &[Call]) -> usize {
    let mut sorted: Vec<&Call> = calls.iter().collect();
    sorted.sort_by_key(|c| c.started);
    let mut depth = vec![0usize; sorted.len()];
    for i in 0..sorted.len() {
        let before = (0..i).filter(|&j| sorted[j].ended <= sorted[i].started).map(|j| depth[j]).max().unwrap_or(0);
        depth[i] = before + 1;
    }
    depth.into_iter().max().unwrap_or(0)
}

/// The kind of item a partition key holds, for tables (`M#` messages, `H#` shard head, `P#` queue records).
pub fn key_kind(pk: &str) -> &'static str {
    match pk.split('#').next() {
        Some("M") => "messages + claims",
        Some("H") => "shard head",
        Some("P") => "queue records (project)",
        Some("Q") => "subscriptions",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn keys_come_from_every_request_shape() {
        let get = json!({"Key": {"pk": {"S": "H#q#g#0#p"}, "sk": {"S": "H"}}});
        assert_eq!(request_keys("GetItem", &get), vec![("H#q#g#0#p".to_string(), 1.0)]);
        let query = json!({"ExpressionAttributeValues": {":pk": {"S": "M#q#g#0#p"}, ":lo": {"S": "M#1"}}});
        assert_eq!(request_keys("Query", &query)[0].0, "M#q#g#0#p");
        let big = "x".repeat(1500);
        let batch = json!({"RequestItems": {"t": [
            {"PutRequest": {"Item": {"pk": {"S": "M#a"}, "body": {"S": big}}}},
            {"DeleteRequest": {"Key": {"pk": {"S": "M#b"}, "sk": {"S": "M#1"}}}}
        ]}});
        assert_eq!(request_keys("BatchWriteItem", &batch), vec![("M#a".into(), 2.0), ("M#b".into(), 1.0)]);
        let bget = json!({"RequestItems": {"t": {"Keys": [{"pk": {"S": "H#1"}}, {"pk": {"S": "H#2"}}]}}});
        assert_eq!(request_keys("BatchGetItem", &bget).len(), 2);
    }

    #[test]
    fn units_split_by_share_and_round_trips_follow_overlap() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let call = |s, e| Call {
            op: "BatchWriteItem".into(),
            tag: None,
            started: at(s),
            ended: at(e),
            keys: vec![("a".into(), 3.0), ("b".into(), 1.0)],
            read_units: 0.0,
            write_units: 4.0,
            failed_condition: false,
            error: false,
        };
        let c = call(0, 5);
        let split: Vec<_> = c.per_key().collect();
        assert_eq!(split, vec![("a", 0.0, 3.0), ("b", 0.0, 1.0)]);
        // Two concurrent calls, then one after both: two sequential round trips.
        assert_eq!(sequential_round_trips(&[call(0, 5), call(1, 6), call(7, 9)]), 2);
        assert_eq!(sequential_round_trips(&[]), 0);
        assert_eq!(consumed("PutItem", &json!({"ConsumedCapacity": {"CapacityUnits": 2.0}})), (0.0, 2.0));
        assert_eq!(consumed("Query", &json!({"ConsumedCapacity": {"CapacityUnits": 0.5}})), (0.5, 0.0));
    }
}
