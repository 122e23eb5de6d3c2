//! Faults against the real handlers: DynamoDB Local behind the fault injector (`harness::faults`).
//!
//! - `workload_under_faults`: 4 producers and 12 consumers (claim + delete, some releases, renewals
//!   and pops) on two queues while a few percent of DynamoDB calls fail in every way the injector
//!   knows; some client requests are abandoned mid-flight (the future dropped, as when a client hangs
//!   up; the store finishes what it started). Then faults stop and the invariants are checked from a
//!   clean client once the service has settled.
//! - `failure_at_every_step`: a post, a post of one message (two writes), a claim, a release, a renewal, a delete under a claim, a bulk
//!   delete and a pop each fail at their 1st, 2nd, 3rd … DynamoDB call (before or after DynamoDB
//!   applied it) and every state they can leave is checked.
//!
//! Invariants (each has a name the report and [`KNOWN_FAILING`] use):
//! - `lost`: every acknowledged (201) message is deleted by its consumer, popped, or still listable; a
//!   delete that answered 204 removed its messages.
//! - `partial-post`: a failed or abandoned post shows all of its messages or none.
//! - `duplicate`: no message of a post stored twice.
//! - `exclusive`: no message held by two live claims at once, no pop of a message a live claim holds,
//!   no delivery after an acknowledged delete.
//! - `orphan-claim`: no message hidden by a claim that does not exist or does not list it.
//! - `stall`: after quiescence a post waits at most 2 s beyond its DynamoDB calls and its message is
//!   claimable at once.
//! - `counts`: `GET .../stats` equals what listing with `include_claimed` shows.
//! - `retry-after`: every 503 carries `Retry-After`.
//! - `pop-report`: a pop removes exactly the messages it returns (and none when it fails).
//! - `unexpected`: no 5xx but 503, no 4xx that contradicts what the client holds.
//!
//! Seed: `ZAQAR_FAULT_SEED` (default [`faults::DEFAULT_SEED`]); printed with every report.
//! Proxy port: `ZAQAR_FAULT_PROXY_PORT` (default: any free port).
//! `ZAQAR_WORKLOAD_DUMP=1` prints every queue's heads (with their size) and live messages at the end.

use harness::faults::proxy;
use harness::faults::{self, FaultKind, FaultPlan, Faults, Injector, Mode, Rng};
use harness::*;
use http::Method;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zaqar::config::Config;
use zaqar::{ApiRequest, ApiResponse, App};

/// Invariants that still fail under faults; they are reported, not asserted. None at present.
///
/// Fixed, now asserted: `duplicate` (a commit applied but answered as failed was taken for a forced-out
/// post and written again), the sweep's `orphan-claim` (a claim whose write was applied but answered
/// as failed deleted its record), `pop-report` and `lost` (a pop's delete whose answer was lost could
/// not be told from someone else's: a pop now expires the message with its own tag, recognises the tag
/// on a retry, and puts the message back when the outcome stays unknown), and `counts` (counter writes
/// are sequenced per writer and apply exactly once, owed when storage fails; deletes, releases and
/// renewals are tagged like pops; a write whose outcome stays unknown is settled in the background; the
/// operations run detached, so an abandoned request still counts what it did). Counts are checked once
/// the service has settled ([`SETTLE`]).
const KNOWN_FAILING: &[&str] = &[];

const QUEUES: [&str; 2] = ["fw-a", "fw-b"];
const PRODUCERS: usize = 4;
const CONSUMERS: usize = 12;
const POSTS_PER_PRODUCER: usize = 30;
/// Requests a consumer makes at most (bounds the run whatever the faults do).
const CONSUMER_BUDGET: usize = 150;
/// Share of DynamoDB calls faulted.
const FAULT_RATE: f64 = 0.02;
/// Share of client requests abandoned mid-flight (percent); pops are never abandoned (see `pop`).
const ABANDON_PERCENT: u32 = 2;
/// Claims outlive the test, so nothing expires while the invariants are checked.
const CLAIM_TTL: i64 = 300;
/// The TTL of one post in four: shorter than a claim and its grace (CLAIM_TTL + 60 s), so claims and
/// renewals extend these messages' life into later expiry buckets. Long enough to outlive the run; if
/// a run does take longer, their posts are left out of `lost` and `partial-post` (they may have expired).
const SHORT_TTL: i64 = 240;
/// How long the proxy holds a stalled request (longer than the SDK's attempt timeout).
const STALL: Duration = Duration::from_millis(faults::ATTEMPT_TIMEOUT.as_millis() as u64 + 1000);

fn endpoint() -> String {
    std::env::var("ZAQAR_TEST_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:8000".into())
}

/// Creates the table once per process, without faults. (Two `ensure_table` at once on a fresh
/// DynamoDB Local fail: the second TTL setup answers "TimeToLive is already enabled".)
async fn create_table() {
    static CREATED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    CREATED
        .get_or_init(|| async {
            app().await;
        })
        .await;
}

/// The URL of the process's fault proxy (both tests share it: one port).
fn proxy_url() -> String {
    let port = std::env::var("ZAQAR_FAULT_PROXY_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(0);
    proxy::shared(port, &endpoint(), STALL).expect("the fault proxy must start")
}

/// `ZAQAR_FAULT_RATE` (a share of DynamoDB calls, for diagnosis) or [`FAULT_RATE`].
fn fault_rate() -> f64 {
    std::env::var("ZAQAR_FAULT_RATE").ok().and_then(|r| r.parse().ok()).unwrap_or(FAULT_RATE)
}

fn config() -> Config {
    Config::for_tests("zaqar-tests")
}

/// Milliseconds since the test started (monotonic).
#[derive(Clone, Copy)]
struct Epoch(Instant);

impl Epoch {
    fn ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

/// What the test knows about one message it saw: which post (token) and which position.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Tag {
    token: String,
    i: u64,
}

fn tag_of(body: &Value) -> Option<Tag> {
    Some(Tag { token: body.get("t")?.as_str()?.to_string(), i: body.get("i")?.as_u64()? })
}

/// `(id, tag)` of every message in a claim or pop response.
fn delivered(v: &Value) -> Vec<(String, Option<Tag>)> {
    v["messages"]
        .as_array()
        .map(|ms| ms.iter().filter_map(|m| Some((m["id"].as_str()?.to_string(), tag_of(&m["body"])))).collect())
        .unwrap_or_default()
}

enum Outcome {
    Answered(ApiResponse),
    /// The client gave up mid-request: the handler's future was dropped.
    Abandoned,
}

#[derive(Debug)]
enum PostOutcome {
    Acked(Vec<String>),
    Failed(u16),
    Abandoned,
}

#[derive(Debug)]
struct PostRec {
    queue: &'static str,
    token: String,
    n: u64,
    ttl: i64,
    outcome: PostOutcome,
}

#[derive(Debug)]
struct ClaimRec {
    queue: &'static str,
    start: u64,
    resp: u64,
    messages: Vec<(String, Option<Tag>)>,
    release_start: Option<u64>,
}

#[derive(Debug)]
struct PopRec {
    start: u64,
    resp: u64,
    messages: Vec<(String, Option<Tag>)>,
}

#[derive(Default)]
struct Ledger {
    /// "op status" → count ("claim 201", "post abandoned").
    ops: BTreeMap<String, u64>,
    posts: Vec<PostRec>,
    claims: HashMap<String, ClaimRec>,
    pops: Vec<PopRec>,
    /// message id → when the 204 of its delete arrived.
    deleted: HashMap<String, u64>,
    /// (claim id, message id) → when the first delete attempt started.
    delete_started: HashMap<(String, String), u64>,
    /// Messages whose delete failed or was abandoned (and never got a 204): may or may not be gone.
    maybe_deleted: HashSet<String>,
    /// (queue, "op status") of failed pops: they must not have removed anything.
    failed_pops: u64,
    responses_503: u64,
    missing_retry_after: Vec<String>,
    unexpected: Vec<String>,
}

impl Ledger {
    fn op(&mut self, op: &str, outcome: &Outcome) {
        let status = match outcome {
            Outcome::Answered(r) => r.status.as_u16().to_string(),
            Outcome::Abandoned => "abandoned".into(),
        };
        *self.ops.entry(format!("{op} {status}")).or_default() += 1;
        if let Outcome::Answered(r) = outcome {
            if r.status == 503 {
                self.responses_503 += 1;
                if r.header_value("retry-after").is_none() && self.missing_retry_after.len() < 1000 {
                    self.missing_retry_after.push(op.to_string());
                }
            } else if r.status.is_server_error() {
                self.unexpected.push(format!("{op}: {} {}", r.status, String::from_utf8_lossy(&r.body)));
            }
        }
    }

    fn total_ops(&self) -> u64 {
        self.ops.values().sum()
    }
}

/// One simulated client process: its own app (own DynamoDB client and injector) and generator.
struct Worker {
    app: App,
    project: String,
    rng: Rng,
    epoch: Epoch,
    ledger: Arc<Mutex<Ledger>>,
}

impl Worker {
    fn client(&self) -> Client<'_> {
        Client { app: &self.app, project: self.project.clone(), client_id: CLIENT.into() }
    }

    fn request(&self, method: Method, path: &str, body: Option<String>) -> ApiRequest {
        let mut r = self.client().request(method, path);
        if let Some(b) = body {
            r = r.header("Content-Type", "application/json").body(b.into_bytes());
        }
        r
    }

    /// Sends a request; sometimes gives up after a few milliseconds, dropping the handler mid-way.
    async fn send(&mut self, req: ApiRequest, abandonable: bool) -> Outcome {
        if abandonable && self.rng.percent(ABANDON_PERCENT) {
            let cut = Duration::from_millis(self.rng.range(1, 40));
            match tokio::time::timeout(cut, call(&self.app, req)).await {
                Ok(r) => Outcome::Answered(r),
                Err(_) => Outcome::Abandoned,
            }
        } else {
            Outcome::Answered(call(&self.app, req).await)
        }
    }

    async fn produce(&mut self, p: usize) {
        for j in 0..POSTS_PER_PRODUCER {
            let queue = QUEUES[self.rng.range(0, 1) as usize];
            // Mostly small posts; one in ten spans more than one 25-item DynamoDB batch.
            let n = if self.rng.percent(10) { self.rng.range(26, 40) } else { self.rng.range(1, 8) };
            let token = format!("p{p}-{j}");
            let ttl = if self.rng.percent(25) { SHORT_TTL } else { 3600 };
            let messages: Vec<Value> =
                (0..n).map(|i| json!({"body": {"t": token, "i": i, "pad": "x".repeat(40)}, "ttl": ttl})).collect();
            let req = self.request(
                Method::POST,
                &format!("/v2/queues/{queue}/messages"),
                Some(json!({ "messages": messages }).to_string()),
            );
            let out = self.send(req, true).await;
            let mut l = self.ledger.lock().unwrap();
            l.op("post", &out);
            let outcome = match &out {
                Outcome::Answered(r) if r.status == 201 => PostOutcome::Acked(
                    r.json_body()["resources"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|h| Some(h.as_str()?.rsplit('/').next()?.to_string())).collect())
                        .unwrap_or_default(),
                ),
                Outcome::Answered(r) => PostOutcome::Failed(r.status.as_u16()),
                Outcome::Abandoned => PostOutcome::Abandoned,
            };
            l.posts.push(PostRec { queue, token, n, ttl, outcome });
        }
    }

    async fn consume(&mut self, producers_done: &AtomicBool) {
        let mut empty_streak = 0;
        let mut requests = 0;
        while requests < CONSUMER_BUDGET {
            let queue = QUEUES[self.rng.range(0, 1) as usize];
            if self.rng.percent(15) {
                requests += self.pop(queue).await;
                continue;
            }
            let limit = self.rng.range(1, 10);
            let body = json!({"ttl": CLAIM_TTL, "grace": 60}).to_string();
            let req = self.request(Method::POST, &format!("/v2/queues/{queue}/claims?limit={limit}"), Some(body));
            let start = self.epoch.ms();
            let out = self.send(req, true).await;
            let resp_at = self.epoch.ms();
            requests += 1;
            self.ledger.lock().unwrap().op("claim", &out);
            let Outcome::Answered(r) = out else { continue };
            match r.status.as_u16() {
                201 => empty_streak = 0,
                204 => {
                    empty_streak += 1;
                    if producers_done.load(Ordering::SeqCst) && empty_streak >= 6 {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(40)).await;
                    continue;
                }
                503 => continue,
                s => {
                    let body = String::from_utf8_lossy(&r.body).to_string();
                    self.ledger.lock().unwrap().unexpected.push(format!("claim: {s} {body}"));
                    continue;
                }
            }
            let Some(cid) = r.header_value("location").and_then(|l| l.rsplit('/').next()).map(str::to_string) else {
                self.ledger.lock().unwrap().unexpected.push("claim 201 without a location".into());
                continue;
            };
            let messages = delivered(&r.json_body());
            self.ledger.lock().unwrap().claims.insert(
                cid.clone(),
                ClaimRec { queue, start, resp: resp_at, messages: messages.clone(), release_start: None },
            );
            if self.rng.percent(10) {
                let body = json!({"ttl": CLAIM_TTL, "grace": 60}).to_string();
                let req = self.request(Method::PATCH, &format!("/v2/queues/{queue}/claims/{cid}"), Some(body));
                let out = self.send(req, true).await;
                requests += 1;
                let mut l = self.ledger.lock().unwrap();
                l.op("renew", &out);
                if let Outcome::Answered(r) = &out {
                    if !matches!(r.status.as_u16(), 204 | 503) {
                        l.unexpected.push(format!(
                            "renew of a live claim: {} {}",
                            r.status,
                            String::from_utf8_lossy(&r.body)
                        ));
                    }
                }
            }
            let mut kept = 0;
            for (id, _) in &messages {
                // Some messages are left claimed, as by a consumer that crashed.
                if self.rng.percent(12) {
                    kept += 1;
                    continue;
                }
                requests += self.delete(queue, &cid, id).await;
            }
            if kept > 0 && self.rng.percent(50) {
                let req = self.request(Method::DELETE, &format!("/v2/queues/{queue}/claims/{cid}"), None);
                let start = self.epoch.ms();
                if let Some(c) = self.ledger.lock().unwrap().claims.get_mut(&cid) {
                    c.release_start = Some(start);
                }
                let out = self.send(req, true).await;
                requests += 1;
                let mut l = self.ledger.lock().unwrap();
                l.op("release", &out);
                if let Outcome::Answered(r) = &out {
                    if !matches!(r.status.as_u16(), 204 | 503) {
                        l.unexpected.push(format!("release: {} {}", r.status, String::from_utf8_lossy(&r.body)));
                    }
                }
            }
        }
    }

    /// Deletes a claimed message, retrying failures as a client would (a delete of a gone message is 204).
    async fn delete(&mut self, queue: &str, cid: &str, id: &str) -> usize {
        let path = format!("/v2/queues/{queue}/messages/{id}?claim_id={cid}");
        let first = self.epoch.ms();
        self.ledger.lock().unwrap().delete_started.insert((cid.to_string(), id.to_string()), first);
        for attempt in 1..=3 {
            let req = self.request(Method::DELETE, &path, None);
            let out = self.send(req, true).await;
            let at = self.epoch.ms();
            let mut l = self.ledger.lock().unwrap();
            l.op("delete", &out);
            match &out {
                Outcome::Answered(r) if r.status == 204 => {
                    l.deleted.insert(id.to_string(), at);
                    l.maybe_deleted.remove(id);
                    return attempt;
                }
                Outcome::Answered(r) if r.status != 503 => {
                    l.unexpected.push(format!(
                        "delete of {id} under our live claim {cid}: {} {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    ));
                    return attempt;
                }
                _ => {
                    l.maybe_deleted.insert(id.to_string());
                }
            }
        }
        3
    }

    /// Pops are never abandoned: a pop that removed messages and never answered loses them by design
    /// (at-most-once), which is not what this test looks for.
    async fn pop(&mut self, queue: &str) -> usize {
        let n = self.rng.range(1, 5);
        let req = self.request(Method::DELETE, &format!("/v2/queues/{queue}/messages?pop={n}"), None);
        let start = self.epoch.ms();
        let out = self.send(req, false).await;
        let resp = self.epoch.ms();
        let mut l = self.ledger.lock().unwrap();
        l.op("pop", &out);
        if let Outcome::Answered(r) = &out {
            match r.status.as_u16() {
                200 => {
                    let messages = delivered(&r.json_body());
                    for (id, _) in &messages {
                        l.deleted.insert(id.clone(), resp);
                    }
                    l.pops.push(PopRec { start, resp, messages });
                }
                503 => l.failed_pops += 1,
                s => l.unexpected.push(format!("pop: {s} {}", String::from_utf8_lossy(&r.body))),
            }
        }
        1
    }
}

/// Violations by invariant, with up to a few examples each.
#[derive(Default)]
struct Violations(BTreeMap<&'static str, (u64, Vec<String>)>);

impl Violations {
    fn add(&mut self, invariant: &'static str, example: String) {
        let entry = self.0.entry(invariant).or_default();
        entry.0 += 1;
        if entry.1.len() < 5 {
            entry.1.push(example);
        }
    }

    fn merge(&mut self, other: Violations) {
        for (name, (count, examples)) in other.0 {
            let entry = self.0.entry(name).or_default();
            entry.0 += count;
            entry.1.extend(examples.into_iter().take(5 - entry.1.len().min(5)));
        }
    }

    /// Prints them; panics if an invariant not known to fail was violated.
    fn finish(&self, what: &str, seed: u64) {
        let known_held: Vec<&&str> = KNOWN_FAILING.iter().filter(|k| !self.0.contains_key(**k)).collect();
        if self.0.is_empty() {
            eprintln!("[{what}] no invariant violated (seed {seed:#x})");
        }
        for (name, (count, examples)) in &self.0 {
            let known = if KNOWN_FAILING.contains(name) { " (known, issue 10)" } else { "" };
            eprintln!("[{what}] VIOLATED {name}{known}: {count} case(s), seed {seed:#x}");
            for e in examples {
                eprintln!("    {e}");
            }
        }
        if !known_held.is_empty() {
            eprintln!("[{what}] held this run although listed in KNOWN_FAILING: {known_held:?}");
        }
        let new: Vec<&str> = self.0.keys().copied().filter(|k| !KNOWN_FAILING.contains(k)).collect();
        assert!(new.is_empty(), "[{what}] invariants violated: {new:?} (seed {seed:#x}, ZAQAR_FAULT_SEED to replay)");
    }
}

/// Every message of a queue, `include_claimed` or not: id → (tag, claim id from the href).
async fn list_all(
    c: &Client<'_>,
    queue: &str,
    include_claimed: bool,
) -> Result<BTreeMap<String, (Option<Tag>, Option<String>)>, String> {
    let mut out = BTreeMap::new();
    let mut path = format!("/v2/queues/{queue}/messages?limit=20&echo=true&include_claimed={include_claimed}");
    for _ in 0..10_000 {
        let r = c.get(&path).await;
        let (s, v) = sj(&r);
        if s != 200 {
            return Err(format!("listing {queue}: {s} {v}"));
        }
        let messages = v["messages"].as_array().cloned().unwrap_or_default();
        if messages.is_empty() {
            return Ok(out);
        }
        for m in messages {
            let id = m["id"].as_str().unwrap_or_default().to_string();
            let claim = m["href"].as_str().and_then(|h| h.split_once("claim_id=")).map(|(_, c)| c.to_string());
            out.insert(id, (tag_of(&m["body"]), claim));
        }
        match v["links"][0]["href"].as_str() {
            Some(next) => path = next.to_string(),
            None => return Ok(out),
        }
    }
    Err(format!("listing {queue} did not end"))
}

/// What the queue holds at quiescence.
struct Snapshot {
    /// id → (tag, claim id in its href)
    all: BTreeMap<String, (Option<Tag>, Option<String>)>,
    unclaimed: HashSet<String>,
}

async fn snapshot(c: &Client<'_>, queue: &str) -> Snapshot {
    let all = list_all(c, queue, true).await.expect("listing at quiescence");
    let unclaimed = list_all(c, queue, false).await.expect("listing at quiescence").into_keys().collect();
    Snapshot { all, unclaimed }
}

/// How long the service may take to settle once faults stop: a write storage never answered is
/// re-driven in the background, and a counter change it did not take is written by a background flush,
/// both retrying after 100 ms, 200 ms, ... (at most 2 s apart).
const SETTLE: Duration = Duration::from_secs(3);

/// Checks `counts` and `orphan-claim` on a queue's snapshot, taken again (for up to [`SETTLE`]) while
/// they fail.
async fn check_counts_and_orphans(c: &Client<'_>, queue: &str, snap: &Snapshot, v: &mut Violations) {
    check_settled(c, queue, snap, v, true).await
}

/// As [`check_counts_and_orphans`], without `orphan-claim` when `orphans` is false (a dead-letter
/// queue, whose moved messages keep the claim that moved them, which lives in their old queue).
async fn check_settled(c: &Client<'_>, queue: &str, snap: &Snapshot, v: &mut Violations, orphans: bool) {
    let started = Instant::now();
    let checked = |found: Vec<(&'static str, String)>| -> Vec<(&'static str, String)> {
        found.into_iter().filter(|(name, _)| orphans || *name != "orphan-claim").collect()
    };
    let mut found = checked(counts_and_orphans(c, queue, snap).await);
    while !found.is_empty() && started.elapsed() < SETTLE {
        tokio::time::sleep(Duration::from_millis(200)).await;
        found = checked(counts_and_orphans(c, queue, &snapshot(c, queue).await).await);
    }
    for (name, what) in found {
        v.add(name, what);
    }
}

async fn counts_and_orphans(c: &Client<'_>, queue: &str, snap: &Snapshot) -> Vec<(&'static str, String)> {
    let mut found = vec![];
    let truth_total = snap.all.len() as u64;
    let truth_free = snap.all.keys().filter(|id| snap.unclaimed.contains(*id)).count() as u64;
    let truth = (Some(truth_total), Some(truth_total - truth_free), Some(truth_free));
    let (s, stats) = sj(&c.get(&format!("/v2/queues/{queue}/stats")).await);
    let m = &stats["messages"];
    let got = (m["total"].as_u64(), m["claimed"].as_u64(), m["free"].as_u64());
    if s != 200 || got != truth {
        found.push((
            "counts",
            format!(
                "{queue}: stats {s} total/claimed/free {:?}/{:?}/{:?}, listing shows {:?}/{:?}/{:?}",
                got.0, got.1, got.2, truth.0, truth.1, truth.2
            ),
        ));
    }
    if let Some(what) = counts_by_end(c, queue).await {
        found.push(("counts-by-end", what));
    }
    let mut claims: HashMap<String, Option<HashSet<String>>> = HashMap::new();
    for (id, (_, cid)) in &snap.all {
        if snap.unclaimed.contains(id) {
            continue;
        }
        let Some(cid) = cid else {
            found.push(("orphan-claim", format!("{queue}: {id} is hidden from listings but carries no claim id")));
            continue;
        };
        if !claims.contains_key(cid) {
            let r = c.get(&format!("/v2/queues/{queue}/claims/{cid}")).await;
            let held = (r.status == 200).then(|| delivered(&r.json_body()).into_iter().map(|(id, _)| id).collect());
            claims.insert(cid.clone(), held);
        }
        match &claims[cid] {
            None => {
                found.push(("orphan-claim", format!("{queue}: {id} is hidden by claim {cid}, which does not exist")))
            }
            Some(held) if !held.contains(id) => {
                found.push(("orphan-claim", format!("{queue}: {id} is hidden by claim {cid}, which does not list it")))
            }
            Some(_) => {}
        }
    }
    found
}

/// How far from now an expiry bucket or claim end must be for `counts-by-end` to compare it (ms): the
/// check reads the items and the heads one after the other, and something may end in between.
const END_MARGIN_MS: i64 = 5_000;

/// `counts-by-end`: the heads' counters, entry by entry, against the stored messages. Stats only show
/// sums (and clamp the claimed count to the total), so a claim end counted too high while another is
/// counted too low would pass `counts` and still make stats wrong once one of them ends. For every
/// expiry bucket and claim end not about to end: the messages the heads count there are the visible,
/// live messages stored there.
async fn counts_by_end(c: &Client<'_>, queue: &str) -> Option<String> {
    let app = c.app;
    let now_ms = app.store.now_ms();
    let far = |end_ms: i64| end_ms > now_ms + END_MARGIN_MS;
    let (mut counted_ex, mut counted_cl) = (BTreeMap::<i64, i64>::new(), BTreeMap::<i64, i64>::new());
    let (mut stored_ex, mut stored_cl) = (BTreeMap::<i64, i64>::new(), BTreeMap::<i64, i64>::new());
    let Some(shards) = raw_shard_count(app, &c.project, queue).await else {
        return Some(format!("{queue}: no such queue"));
    };
    for index in 0..shards {
        let messages = raw_messages(app, &c.project, queue, index).await;
        let Some(head) = raw_head(app, &c.project, queue, index).await else {
            if !messages.is_empty() {
                return Some(format!("{queue}: shard {index} has {} message items and no head", messages.len()));
            }
            continue;
        };
        let committed = raw_i64(&head, "committed_k").unwrap_or(0).max(0) as u64;
        // Below `live_k` there is nothing to count: the holes of failed posts there have been dropped.
        let live = raw_i64(&head, "live_k").unwrap_or(0).max(0) as u64;
        let holes: Vec<(u64, u64)> = raw_strings(&head, "holes")
            .iter()
            .filter_map(|h| h.split_once(':').and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?))))
            .collect();
        for (bucket, n) in raw_counter_map(&head, "ex") {
            if far(bucket * 1000) {
                *counted_ex.entry(bucket).or_default() += n;
            }
        }
        for (end, n) in raw_counter_map(&head, "cl") {
            if far(end * 1000) {
                *counted_cl.entry(end).or_default() += n;
            }
        }
        // Range claims (`rg{claim id}`: lo, hi, member and deleted masks in hex, claim end, ...) and the
        // runs range deletes removed (`gone`), read here without the service's own parser.
        let ranges: Vec<(u64, u64, u64, u64, i64)> = head
            .iter()
            .filter(|(name, _)| name.starts_with("rg"))
            .filter_map(|(_, v)| match v {
                aws_sdk_dynamodb::types::AttributeValue::S(raw) => {
                    let f: Vec<&str> = raw.split(',').collect();
                    Some((
                        f.first()?.parse().ok()?,
                        f.get(1)?.parse().ok()?,
                        u64::from_str_radix(f.get(2)?, 16).ok()?,
                        u64::from_str_radix(f.get(3)?, 16).ok()?,
                        f.get(4)?.parse().ok()?,
                    ))
                }
                _ => None,
            })
            .collect();
        let gone: Vec<(u64, u64)> = raw_strings(&head, "gone")
            .iter()
            .filter_map(|h| h.split_once(':').and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?))))
            .collect();
        for (k, m) in messages {
            let bit = |lo: u64, hi: u64, mask: u64| lo <= k && k <= hi && mask & (1 << (k - lo)) != 0;
            let range = ranges.iter().find(|(lo, hi, members, _, _)| bit(*lo, *hi, *members));
            let deleted_in_range = range.is_some_and(|(lo, hi, _, deleted, _)| bit(*lo, *hi, *deleted));
            let visible = live <= k
                && k <= committed
                && !holes.iter().any(|&(lo, hi)| lo <= k && k <= hi)
                && !gone.iter().any(|&(lo, hi)| lo <= k && k <= hi)
                && !deleted_in_range;
            let expires_ms = raw_i64(&m, "expires_ms").unwrap_or(0);
            if !visible || expires_ms <= now_ms {
                continue;
            }
            let bucket = zaqar::keys::expiry_bucket(expires_ms, raw_i64(&m, "ttl_s").unwrap_or(0));
            if far(bucket * 1000) {
                *stored_ex.entry(bucket).or_default() += 1;
            }
            let claim_until_ms = match range {
                Some((_, _, _, _, until)) => *until,
                None => raw_i64(&m, "claim_until_ms").unwrap_or(0),
            };
            if std::env::var("ZAQAR_WORKLOAD_DUMP").is_ok() {
                let skip = ["pk", "body", "client", "checksum", "sk", "id"];
                let attrs: Vec<String> =
                    m.iter().filter(|(a, _)| !skip.contains(&a.as_str())).map(|(a, v)| format!("{a}={v:?}")).collect();
                eprintln!("dump {queue} k={k} range={range:?} {}", attrs.join(" "));
            }
            if claim_until_ms > now_ms && far(claim_until_ms) {
                *stored_cl.entry(claim_until_ms.div_euclid(1000)).or_default() += 1;
            }
        }
    }
    if std::env::var("ZAQAR_WORKLOAD_DUMP").is_ok() {
        for index in 0..shards {
            if let Some(head) = raw_head(app, &c.project, queue, index).await {
                eprintln!("dump {queue} head {index}: about {} bytes: {head:?}", raw_size(&head));
            }
        }
    }
    counted_ex.retain(|_, n| *n != 0);
    counted_cl.retain(|_, n| *n != 0);
    (counted_ex != stored_ex || counted_cl != stored_cl).then(|| {
        format!(
            "{queue}: heads count by expiry bucket {counted_ex:?} and by claim end {counted_cl:?}; \
             the stored messages are {stored_ex:?} and {stored_cl:?}"
        )
    })
}

/// An item's size as DynamoDB counts it, near enough: names plus values (numbers as text).
fn raw_size(item: &harness::RawItem) -> usize {
    use aws_sdk_dynamodb::types::AttributeValue as V;
    fn value(v: &V) -> usize {
        match v {
            V::S(s) | V::N(s) => s.len(),
            V::Ss(ss) | V::Ns(ss) => ss.iter().map(String::len).sum(),
            V::M(m) => 3 + m.iter().map(|(k, v)| k.len() + value(v) + 1).sum::<usize>(),
            V::L(l) => 3 + l.iter().map(|v| value(v) + 1).sum::<usize>(),
            _ => 1,
        }
    }
    item.iter().map(|(k, v)| k.len() + value(v)).sum()
}

/// `stall`: after a failure, a post must not wait (beyond its DynamoDB calls) for more than 2 s, and its
/// message must be claimable without 30 consecutive empty claims (3 s of 100 ms pauses) first. Time in
/// DynamoDB calls is measured ([`faults::Meter`]) and left out, so a slow DynamoDB Local on a loaded
/// machine is not mistaken for a stalled queue. Claims what it meets.
async fn check_not_stalled(c: &Client<'_>, meter: &faults::Meter, queue: &str, v: &mut Violations) {
    let (started, busy_before) = (Instant::now(), meter.busy());
    let body = json!({"messages": [{"body": {"t": format!("probe-{queue}"), "i": 0}, "ttl": 3600}]}).to_string();
    let r = c.post(&format!("/v2/queues/{queue}/messages"), &body).await;
    let wall = started.elapsed();
    let waited = wall.saturating_sub(meter.busy() - busy_before);
    let (s, resp) = sj(&r);
    if s != 201 {
        v.add("stall", format!("{queue}: probe post answered {s} {resp}"));
        return;
    }
    if waited > Duration::from_secs(2) {
        v.add("stall", format!("{queue}: probe post took {wall:?}, {waited:?} of it not in DynamoDB calls"));
    }
    let probe = resp["resources"][0].as_str().and_then(|h| h.rsplit('/').next()).unwrap_or_default().to_string();
    let mut empty = 0;
    for _ in 0..200 {
        let r = c.post(&format!("/v2/queues/{queue}/claims?limit=20"), r#"{"ttl": 300, "grace": 60}"#).await;
        match r.status.as_u16() {
            201 if delivered(&r.json_body()).iter().any(|(id, _)| *id == probe) => return,
            201 => empty = 0,
            _ => {
                empty += 1;
                if empty >= 30 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    v.add("stall", format!("{queue}: the probe message was not claimable after its post answered (30 empty claims)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workload_under_faults() {
    create_table().await;
    let (base, meter) = faults::metered_app(config(), &endpoint()).await;
    let proxy = proxy_url();
    let plan = FaultPlan::mixed(fault_rate());
    let seed = plan.seed;
    let faults = Faults::new(plan);
    let project = project();
    let epoch = Epoch(Instant::now());
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let producers_done = Arc::new(AtomicBool::new(false));
    eprintln!("fault workload: seed {seed:#x}, fault rate {}, proxy {proxy}, project {project}", fault_rate());

    let checker = Client { app: &base, project: project.clone(), client_id: OTHER_CLIENT.into() };
    for q in QUEUES {
        assert_eq!(checker.put(&format!("/v2/queues/{q}"), None).await.status, 201);
    }

    let mut workers = Vec::new();
    for w in 0..PRODUCERS + CONSUMERS {
        let label = if w < PRODUCERS { format!("producer-{w}") } else { format!("consumer-{}", w - PRODUCERS) };
        let injector = Injector::new(faults.clone(), &label, Mode::Random);
        let app = faults::faulty_app(config(), &proxy, injector).await;
        workers.push(Worker {
            app,
            project: project.clone(),
            rng: Rng::for_label(seed, &format!("client-{label}")),
            epoch,
            ledger: ledger.clone(),
        });
    }
    let mut handles = Vec::new();
    let mut producers = Vec::new();
    for (w, mut worker) in workers.into_iter().enumerate() {
        if w < PRODUCERS {
            producers.push(tokio::spawn(async move { worker.produce(w).await }));
        } else {
            let done = producers_done.clone();
            handles.push(tokio::spawn(async move { worker.consume(&done).await }));
        }
    }
    for p in producers {
        p.await.expect("producer panicked");
    }
    producers_done.store(true, Ordering::SeqCst);
    for h in handles {
        h.await.expect("consumer panicked");
    }
    let workload_time = epoch.ms();

    // Quiescence: no more faults, nobody working, and no request still held by the proxy (a stalled
    // attempt is forwarded after STALL, when its client may long have moved on).
    faults.set_enabled(false);
    tokio::time::sleep(STALL + Duration::from_millis(500)).await;
    let report = faults.report();
    let l = std::mem::take(&mut *ledger.lock().unwrap()); // every worker has finished
    let mut v = Violations::default();
    let mut snaps = HashMap::new();
    for q in QUEUES {
        snaps.insert(q, snapshot(&checker, q).await);
    }
    let present: HashMap<&String, &(Option<Tag>, Option<String>)> = snaps.values().flat_map(|s| s.all.iter()).collect();

    // Short-lived posts are checked only while none of them can have expired (see SHORT_TTL).
    let may_have_expired = |p: &PostRec| p.ttl < 3600 && epoch.ms() > (SHORT_TTL as u64 - 30) * 1000;

    // lost: acknowledged messages are deleted, popped or still there.
    let mut ambiguous = 0;
    for p in l.posts.iter().filter(|p| !may_have_expired(p)) {
        if let PostOutcome::Acked(ids) = &p.outcome {
            for id in ids {
                if present.contains_key(id) || l.deleted.contains_key(id) {
                    continue;
                }
                if l.maybe_deleted.contains(id) {
                    ambiguous += 1;
                    continue;
                }
                let delivered_by: Vec<&String> =
                    l.claims.iter().filter(|(_, c)| c.messages.iter().any(|(m, _)| m == id)).map(|(c, _)| c).collect();
                let stored = raw_message(checker.app, &checker.project, p.queue, id).await;
                v.add(
                    "lost",
                    format!(
                        "{}: message {id} of acknowledged post {} is gone, never deleted or popped (delivered by claims {delivered_by:?}); stored: {stored:?}",
                        p.queue, p.token
                    ),
                );
            }
        }
    }

    // partial-post and duplicate: what each post shows, from deliveries and the final listing.
    let mut seen: HashMap<&str, HashMap<u64, HashSet<&String>>> = HashMap::new();
    let mut observed: Vec<(&String, &Option<Tag>)> = Vec::new();
    observed.extend(l.claims.values().flat_map(|c| c.messages.iter()).map(|(id, tag)| (id, tag)));
    observed.extend(l.pops.iter().flat_map(|p| p.messages.iter()).map(|(id, tag)| (id, tag)));
    observed.extend(present.iter().map(|(id, (tag, _))| (*id, tag)));
    for (id, tag) in observed {
        if let Some(t) = tag {
            seen.entry(t.token.as_str()).or_default().entry(t.i).or_default().insert(id);
        }
    }
    let (mut failed_posts, mut abandoned_posts, mut failed_visible) = (0, 0, 0);
    for p in &l.posts {
        let shown = seen.get(p.token.as_str());
        let positions = shown.map(|s| s.len() as u64).unwrap_or(0);
        if let Some(dups) = shown.and_then(|s| s.iter().find(|(_, ids)| ids.len() > 1)) {
            v.add("duplicate", format!("{}: post {} position {} stored as {:?}", p.queue, p.token, dups.0, dups.1));
        }
        match p.outcome {
            PostOutcome::Acked(_) => continue,
            PostOutcome::Failed(status) => {
                failed_posts += 1;
                if status != 503 {
                    v.add("unexpected", format!("{}: post {} answered {status}", p.queue, p.token));
                }
            }
            PostOutcome::Abandoned => abandoned_posts += 1,
        }
        if positions == p.n {
            failed_visible += 1;
        } else if positions > 0 && !may_have_expired(p) {
            v.add(
                "partial-post",
                format!("{}: post {} ({:?}) shows {positions} of its {} messages", p.queue, p.token, p.outcome, p.n),
            );
        }
    }

    // exclusive: certainly-live intervals of claims per message must not overlap.
    let end_of = |cid: &String, c: &ClaimRec, id: &String| -> u64 {
        let mut end = c.start + CLAIM_TTL as u64 * 1000;
        if let Some(r) = c.release_start {
            end = end.min(r);
        }
        if let Some(d) = l.delete_started.get(&(cid.clone(), id.clone())) {
            end = end.min(*d);
        }
        end
    };
    let mut holders: HashMap<&String, Vec<(u64, u64, String)>> = HashMap::new();
    for (cid, c) in &l.claims {
        for (id, _) in &c.messages {
            holders.entry(id).or_default().push((c.resp, end_of(cid, c, id), format!("claim {cid} on {}", c.queue)));
        }
    }
    for (id, spans) in &holders {
        for (a, sa) in spans.iter().enumerate() {
            for sb in &spans[a + 1..] {
                if sa.0.max(sb.0) < sa.1.min(sb.1) {
                    v.add(
                        "exclusive",
                        format!("{id} held by {} ({}..{} ms) and {} ({}..{} ms)", sa.2, sa.0, sa.1, sb.2, sb.0, sb.1),
                    );
                }
            }
        }
        if let Some(at) = l.deleted.get(*id) {
            for s in spans.iter().filter(|s| s.0 > *at + 1) {
                v.add("exclusive", format!("{id} delivered by {} at {} ms after its delete at {at} ms", s.2, s.0));
            }
        }
    }
    let mut popped: HashMap<&String, u32> = HashMap::new();
    for p in &l.pops {
        for (id, _) in &p.messages {
            *popped.entry(id).or_default() += 1;
            for s in holders.get(id).into_iter().flatten() {
                if s.0 <= p.start && p.resp <= s.1 {
                    v.add("exclusive", format!("{id} popped ({}..{} ms) while {} held it", p.start, p.resp, s.2));
                }
            }
        }
    }
    for (id, n) in popped.iter().filter(|(_, n)| **n > 1) {
        v.add("exclusive", format!("{id} popped {n} times"));
    }

    // counts and orphan-claim per queue; then retry-after and unexpected; stall last (it claims).
    for q in QUEUES {
        check_counts_and_orphans(&checker, q, &snaps[q], &mut v).await;
    }
    if !l.missing_retry_after.is_empty() {
        let mut by_op: BTreeMap<&str, u64> = BTreeMap::new();
        for op in &l.missing_retry_after {
            *by_op.entry(op.as_str()).or_default() += 1;
        }
        v.add(
            "retry-after",
            format!("{} of {} 503 responses lack Retry-After: {by_op:?}", l.missing_retry_after.len(), l.responses_503),
        );
    }
    for u in &l.unexpected {
        v.add("unexpected", u.clone());
    }
    for q in QUEUES {
        check_not_stalled(&checker, &meter, q, &mut v).await;
    }

    let acked: u64 = l
        .posts
        .iter()
        .filter_map(|p| match &p.outcome {
            PostOutcome::Acked(ids) => Some(ids.len() as u64),
            _ => None,
        })
        .sum();
    eprintln!(
        "fault workload: {} requests in {:.1} s (seed {seed:#x}); {acked} messages acknowledged, {} deleted or popped, {} left; \
         {failed_posts} failed and {abandoned_posts} abandoned posts ({failed_visible} of them fully visible); \
         {} claims, {} pops ({} failed); {ambiguous} messages whose delete never answered",
        l.total_ops(),
        workload_time as f64 / 1000.0,
        l.deleted.len(),
        present.len(),
        l.claims.len(),
        l.pops.len(),
        l.failed_pops,
    );
    let ops: Vec<String> = l.ops.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    eprintln!("requests by outcome: {}", ops.join(", "));
    eprintln!("{report}");
    assert!(report.injected_total() > 0 || fault_rate() == 0.0, "no fault was injected: the harness is not wired");
    v.finish("workload", seed);
}

/// One step of the sweep: what failed where.
fn step_name(what: &str, kind: FaultKind, from: u64) -> String {
    format!("{what} failing from DynamoDB call {} ({})", from + 1, kind.name())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_at_every_step() {
    create_table().await;
    let proxy = proxy_url();
    let faults = Faults::new(FaultPlan::mixed(0.0));
    let seed = faults.plan.seed;
    let project = project();
    // The three kinds run side by side, each with its own clients (and meter), on their own queues.
    let kinds = [FaultKind::ServerErrorBefore, FaultKind::ServerErrorAfter, FaultKind::ResetAfter];
    let results = futures::future::join_all(kinds.map(|kind| sweep_kind(kind, &proxy, faults.clone(), &project))).await;
    let mut v = Violations::default();
    let mut steps = 0;
    for (kind_violations, kind_steps) in results {
        v.merge(kind_violations);
        steps += kind_steps;
    }
    eprintln!("failure sweep: {steps} failing requests checked (seed {seed:#x}); {}", faults.report());
    v.finish("sweep", seed);
}

/// Every post, claim, release and pop failing from its 1st, 2nd, 3rd … DynamoDB call on with `kind`.
async fn sweep_kind(kind: FaultKind, proxy: &str, faults: Arc<Faults>, project: &str) -> (Violations, u32) {
    const POST_SIZE: u64 = 30; // more than one 25-item batch
    const MAX_STEPS: u64 = 40;
    let (base, meter) = faults::metered_app(config(), &endpoint()).await;
    let injector = Injector::new(faults, &format!("sweep-{}", kind.name()), Mode::Off);
    let faulty = faults::faulty_app(config(), proxy, injector.clone()).await;
    let c = Client { app: &faulty, project: project.to_string(), client_id: CLIENT.into() };
    let checker = Client { app: &base, project: project.to_string(), client_id: OTHER_CLIENT.into() };
    let mut v = Violations::default();
    let mut steps = 0;
    // Posts: a fresh queue per step, so a stall the failure leaves behind shows on the probe. A post of
    // one message commits with its reservation and then writes the message (two writes) once the client
    // knows the shard's next number: it posts once without faults first.
    for (what, size) in [("post", POST_SIZE), ("post-1", 1)] {
        for from in 0..MAX_STEPS {
            let queue = format!("sw-{what}-{}-{from}", kind.name());
            if size == 1 {
                let warm = json!({"messages": [{"body": {"t": "warm", "i": 0}, "ttl": 3600}]}).to_string();
                assert_eq!(c.post(&format!("/v2/queues/{queue}/messages"), &warm).await.status, 201);
            } else {
                assert_eq!(checker.put(&format!("/v2/queues/{queue}"), None).await.status, 201);
            }
            let token = format!("sweep-{what}-{}-{from}", kind.name());
            let messages: Vec<Value> = (0..size).map(|i| json!({"body": {"t": token, "i": i}, "ttl": 3600})).collect();
            injector.set_mode(Mode::FailFrom { from, kind });
            let r = c.post(&format!("/v2/queues/{queue}/messages"), &json!({ "messages": messages }).to_string()).await;
            let reached = injector.executions();
            injector.set_mode(Mode::Off);
            steps += 1;
            let name = step_name(what, kind, from);
            if r.status == 503 && r.header_value("retry-after").is_none() {
                v.add("retry-after", format!("{name}: 503 without Retry-After"));
            }
            if !matches!(r.status.as_u16(), 201 | 503) {
                v.add("unexpected", format!("{name}: {} {}", r.status, String::from_utf8_lossy(&r.body)));
            }
            check_not_stalled(&checker, &meter, &queue, &mut v).await;
            let snap = snapshot(&checker, &queue).await;
            let shown = snap.all.values().filter(|(t, _)| t.as_ref().is_some_and(|t| t.token == token)).count() as u64;
            if r.status == 201 && shown != size {
                v.add("lost", format!("{name}: answered 201 but shows {shown} of {size}"));
            } else if r.status != 201 && shown != 0 && shown != size {
                v.add("partial-post", format!("{name}: answered {} and shows {shown} of {size}", r.status));
            }
            check_counts_and_orphans(&checker, &queue, &snapshot(&checker, &queue).await, &mut v).await;
            if reached <= from {
                break; // the post finished before the failing call: later steps change nothing
            }
        }
    }

    // Claims, releases and pops on a queue of 8 messages. `claim-extend`: a claim that outlives the
    // messages, so it extends their life. `dead-letter`: a claim that moves them to their dead-letter
    // queue (each was claimed and released once before, with a limit of one claim).
    for what in ["claim", "claim-extend", "dead-letter", "release", "renew", "delete", "bulk-delete", "pop"] {
        for from in 0..MAX_STEPS {
            let queue = format!("sw-{what}-{}-{from}", kind.name());
            let dead = format!("{queue}-dead");
            let ttl = if what == "claim-extend" { 120 } else { 3600 };
            if what == "dead-letter" {
                let meta = json!({"_max_claim_count": 1, "_dead_letter_queue": dead}).to_string();
                assert_eq!(checker.put(&format!("/v2/queues/{queue}"), Some(&meta)).await.status, 201);
            }
            let messages: Vec<Value> = (0..8).map(|i| json!({"body": {"t": "c", "i": i}, "ttl": ttl})).collect();
            let posted = checker
                .post(&format!("/v2/queues/{queue}/messages"), &json!({ "messages": messages }).to_string())
                .await;
            assert_eq!(posted.status, 201);
            if what == "dead-letter" {
                let r = checker.post(&format!("/v2/queues/{queue}/claims?limit=10"), r#"{"ttl": 60}"#).await;
                assert_eq!(r.status, 201);
                let once = r.header_value("location").and_then(|l| l.rsplit('/').next()).unwrap().to_string();
                assert_eq!(checker.delete(&format!("/v2/queues/{queue}/claims/{once}")).await.status, 204);
            }
            let (mut cid, mut held) = (None, vec![]);
            if matches!(what, "release" | "renew" | "delete") {
                let r =
                    checker.post(&format!("/v2/queues/{queue}/claims?limit=5"), r#"{"ttl": 300, "grace": 60}"#).await;
                assert_eq!(r.status, 201);
                cid = r.header_value("location").and_then(|l| l.rsplit('/').next()).map(str::to_string);
                held = delivered(&r.json_body()).into_iter().map(|(id, _)| id).collect();
            }
            let cid = cid.unwrap_or_default();
            let before = snapshot(&checker, &queue).await;
            // What a delete targets: a message its claim holds, or three free ones by id.
            let targets: Vec<String> = match what {
                "delete" => held.iter().take(1).cloned().collect(),
                "bulk-delete" => before.unclaimed.iter().take(3).cloned().collect(),
                _ => vec![],
            };
            injector.set_mode(Mode::FailFrom { from, kind });
            let r = match what {
                "claim" | "claim-extend" => {
                    c.post(&format!("/v2/queues/{queue}/claims?limit=5"), r#"{"ttl": 300, "grace": 60}"#).await
                }
                // Two moves (each a post to the other queue and a removal) make 20-odd steps already.
                "dead-letter" => {
                    c.post(&format!("/v2/queues/{queue}/claims?limit=2"), r#"{"ttl": 300, "grace": 60}"#).await
                }
                "release" => c.delete(&format!("/v2/queues/{queue}/claims/{cid}")).await,
                "renew" => {
                    c.patch(
                        &format!("/v2/queues/{queue}/claims/{cid}"),
                        "application/json",
                        r#"{"ttl": 600, "grace": 60}"#,
                    )
                    .await
                }
                "delete" => c.delete(&format!("/v2/queues/{queue}/messages/{}?claim_id={cid}", targets[0])).await,
                "bulk-delete" => c.delete(&format!("/v2/queues/{queue}/messages?ids={}", targets.join(","))).await,
                _ => c.delete(&format!("/v2/queues/{queue}/messages?pop=5")).await,
            };
            let reached = injector.executions();
            injector.set_mode(Mode::Off);
            steps += 1;
            let name = step_name(what, kind, from);
            if r.status == 503 && r.header_value("retry-after").is_none() {
                v.add("retry-after", format!("{name}: 503 without Retry-After"));
            }
            if !matches!(r.status.as_u16(), 200 | 201 | 204 | 503) {
                v.add("unexpected", format!("{name}: {} {}", r.status, String::from_utf8_lossy(&r.body)));
            }
            let after = snapshot(&checker, &queue).await;
            check_counts_and_orphans(&checker, &queue, &after, &mut v).await;
            if what == "dead-letter" {
                // Moved messages keep the claim that moved them, which lives in their old queue: only
                // the dead-letter queue's counts are checked. Nothing is lost between the two queues.
                let dead_snap = snapshot(&checker, &dead).await;
                // The dead-letter queue is made by the first move.
                if raw_shard_count(&base, project, &dead).await.is_some() {
                    check_settled(&checker, &dead, &dead_snap, &mut v, false).await;
                }
                let bodies = |s: &Snapshot| -> HashSet<u64> {
                    s.all.values().filter_map(|(t, _)| t.as_ref().map(|t| t.i)).collect()
                };
                let (here, there) = (bodies(&after), bodies(&dead_snap));
                let missing: Vec<u64> = (0..8).filter(|i| !here.contains(i) && !there.contains(i)).collect();
                if !missing.is_empty() {
                    v.add("lost", format!("{name}: messages {missing:?} are in neither queue"));
                }
            }
            if what == "pop" {
                let returned: HashSet<String> = if r.status == 200 {
                    delivered(&r.json_body()).into_iter().map(|(id, _)| id).collect()
                } else {
                    HashSet::new()
                };
                let removed: HashSet<String> =
                    before.all.keys().filter(|id| !after.all.contains_key(*id)).cloned().collect();
                if removed != returned {
                    v.add(
                        "pop-report",
                        format!(
                            "{name}: answered {} returning {} messages, removed {}",
                            r.status,
                            returned.len(),
                            removed.len()
                        ),
                    );
                }
            }
            if matches!(what, "delete" | "bulk-delete") && r.status == 204 {
                let left = targets.iter().filter(|id| after.all.contains_key(*id)).count();
                if left > 0 {
                    v.add("lost", format!("{name}: answered 204 but {left} of its messages are still there"));
                }
            }
            if matches!(what, "claim" | "claim-extend") && r.status == 201 {
                let ids: Vec<String> = delivered(&r.json_body()).into_iter().map(|(id, _)| id).collect();
                let hidden = ids.iter().filter(|id| after.unclaimed.contains(*id)).count();
                if hidden > 0 {
                    v.add("exclusive", format!("{name}: {hidden} claimed messages are still listed as free"));
                }
            }
            if reached <= from {
                break;
            }
        }
    }
    (v, steps)
}

/// A process whose DynamoDB calls go through a fault injector (off to begin with), a clean one, and a
/// fresh project for both.
async fn faulty_and_clean(label: &str) -> (App, App, Arc<Injector>, String) {
    create_table().await;
    let injector = Injector::new(Faults::new(FaultPlan::mixed(0.0)), label, Mode::Off);
    let faulty = faults::faulty_app(config(), &proxy_url(), injector.clone()).await;
    (app().await, faulty, injector, project())
}

/// The `t` of each message's body in a listing or claim.
fn tokens(v: &Value) -> Vec<String> {
    v["messages"].as_array().unwrap().iter().map(|m| m["body"]["t"].as_str().unwrap().to_string()).collect()
}

/// A post of one message whose process loses DynamoDB after the reservation committed its number (every
/// PutItem fails: the message and the post's own tombstone). Readers stop before that number while its
/// lease runs, so nothing posted after it is seen first; then a reader tombstones it and reads on. The
/// failed post never shows, the ones around it do, and stats count exactly those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_post_lost_after_its_reservation() {
    let (base, faulty, injector, project) = faulty_and_clean("single-post").await;
    let c = Client { app: &faulty, project: project.clone(), client_id: CLIENT.into() };
    let checker = Client { app: &base, project, client_id: OTHER_CLIENT.into() };
    let queue = "single-post-lost";
    let path = format!("/v2/queues/{queue}/messages");
    let one = |t: &str| json!({"messages": [{"body": {"t": t, "i": 0}, "ttl": 3600}]}).to_string();
    // Zaqar's shortest TTL: the lost post is still taken for one that never arrived (and counted out).
    let shortest = json!({"messages": [{"body": {"t": "lost", "i": 0}, "ttl": 60}]}).to_string();
    // The first post learns the shard's next number; the second takes the two-write path.
    for t in ["first", "second"] {
        assert_eq!(c.post(&path, &one(t)).await.status, 201);
    }
    injector.set_mode(Mode::FailOp { op: "PutItem", kind: FaultKind::ServerErrorBefore });
    let failed_at = Instant::now();
    let r = c.post(&path, &shortest).await;
    injector.set_mode(Mode::Off);
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.header_value("retry-after").is_some());
    // Another producer posts after the failure.
    assert_eq!(checker.post(&path, &one("after")).await.status, 201);
    let listed = tokens(&checker.get(&format!("{path}?echo=true&limit=10")).await.json_body());
    // While the lease (1 s) runs, listing stops before the lost post's number. Checked only when the
    // listing surely ran inside the lease, so a slow machine cannot make this fail.
    if failed_at.elapsed() < Duration::from_millis(700) {
        assert_eq!(listed, ["first", "second"], "a listing passed a number whose post may still be written");
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let listed = tokens(&checker.get(&format!("{path}?echo=true&limit=10")).await.json_body());
    assert_eq!(listed, ["first", "second", "after"]);
    let (s, stats) = sj(&checker.get(&format!("/v2/queues/{queue}/stats")).await);
    assert_eq!(s, 200);
    assert_eq!(stats["messages"]["total"], 3, "{stats}");
    // The faulty process posts again: its post and the others are all there, the lost one never.
    assert_eq!(c.post(&path, &one("later")).await.status, 201);
    let listed = tokens(&checker.get(&format!("{path}?echo=true&limit=10")).await.json_body());
    assert_eq!(listed, ["first", "second", "after", "later"]);
    let r = checker.post(&format!("/v2/queues/{queue}/claims?limit=10"), r#"{"ttl": 60, "grace": 60}"#).await;
    assert_eq!(tokens(&r.json_body()), ["first", "second", "after", "later"]);
}

/// As above, but found only after the lost message would have expired: its number is passed without a
/// tombstone (an absent item may then be a message that was written, removed and swept by TTL, whose
/// counts must not be taken twice), and the messages after it are read on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_post_lost_and_found_after_its_expiry() {
    let (base, faulty, injector, project) = faulty_and_clean("single-post-expired").await;
    let c = Client { app: &faulty, project: project.clone(), client_id: CLIENT.into() };
    let checker = Client { app: &base, project, client_id: OTHER_CLIENT.into() };
    let queue = "single-post-expired";
    let path = format!("/v2/queues/{queue}/messages");
    let one = |t: &str, ttl: u32| json!({"messages": [{"body": {"t": t, "i": 0}, "ttl": ttl}]}).to_string();
    for t in ["first", "second"] {
        assert_eq!(c.post(&path, &one(t, 3600)).await.status, 201);
    }
    injector.set_mode(Mode::FailOp { op: "PutItem", kind: FaultKind::ServerErrorBefore });
    assert_eq!(c.post(&path, &one("lost", 60)).await.status, 503);
    injector.set_mode(Mode::Off);
    assert_eq!(checker.post(&path, &one("after", 3600)).await.status, 201);
    base.store.clock.advance_secs(120);
    let listed = tokens(&checker.get(&format!("{path}?echo=true&limit=10")).await.json_body());
    assert_eq!(listed, ["first", "second", "after"]);
    let (s, stats) = sj(&checker.get(&format!("/v2/queues/{queue}/stats")).await);
    assert_eq!((s, stats["messages"]["total"].as_u64()), (200, Some(3)), "{stats}");
    let r = checker.post(&format!("/v2/queues/{queue}/claims?limit=10"), r#"{"ttl": 60, "grace": 60}"#).await;
    assert_eq!(tokens(&r.json_body()), ["first", "second", "after"]);
}

/// A lost single post found by a reader whose tombstone is applied by DynamoDB but whose answers are lost:
/// the reader fails, and other readers find a tombstone that is not theirs, so they count nothing. The
/// first reader re-drives its put in the background, finds its own tombstone and counts
/// the post out: stats must not keep counting a message that can never be written. (Found by the fault
/// workload at 20 %, seed 42: a queue counted one message more than it held, for good.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_whose_answers_were_lost_still_counts_its_post_out() {
    let (base, faulty, injector, project) = faulty_and_clean("tombstone-lost").await;
    let c = Client { app: &faulty, project: project.clone(), client_id: CLIENT.into() };
    let checker = Client { app: &base, project, client_id: OTHER_CLIENT.into() };
    let queue = "tombstone-answer-lost";
    let path = format!("/v2/queues/{queue}/messages");
    let one = |t: &str| json!({"messages": [{"body": {"t": t, "i": 0}, "ttl": 3600}]}).to_string();
    // The first post learns the shard's next number; the second takes the two-write path.
    for t in ["first", "second"] {
        assert_eq!(c.post(&path, &one(t)).await.status, 201);
    }
    // The post's message and its own tombstone (put when the message's put fails) never arrive.
    injector.set_mode(Mode::FailOp { op: "PutItem", kind: FaultKind::ServerErrorBefore });
    assert_eq!(c.post(&path, &one("lost")).await.status, 503);
    tokio::time::sleep(Duration::from_millis(1100)).await; // the lease (1 s) runs out
    injector.set_mode(Mode::FailOp { op: "PutItem", kind: FaultKind::ServerErrorAfter });
    // The listing's tombstone put is applied and never answered (or the post's own tombstone, re-driven
    // in the background, lands first: then that one is applied and never answered). Either way no reader
    // that finds it counts it out but the one that put it.
    let _ = c.get(&format!("{path}?echo=true&limit=10")).await;
    injector.set_mode(Mode::Off);
    let listed = tokens(&checker.get(&format!("{path}?echo=true&limit=10")).await.json_body());
    assert_eq!(listed, ["first", "second"]);
    let (total, _, _) = settled_stats(&checker, queue, (2, 0, 2)).await;
    assert_eq!(total, 2, "a post that can never be written is still counted");
}

/// A claim that moves messages to their dead-letter queue, whose removals from their own queue are
/// applied by DynamoDB but never answered: the claim counts them as its own, as if they had stayed, and
/// the removals, re-driven in the background, find themselves applied and count them out. Stats must
/// not keep counting messages that are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_moves_whose_answers_were_lost_count_their_messages_out() {
    let (base, faulty, injector, project) = faulty_and_clean("dead-letter-lost").await;
    let c = Client { app: &faulty, project: project.clone(), client_id: CLIENT.into() };
    let checker = Client { app: &base, project, client_id: OTHER_CLIENT.into() };
    let (queue, dead) = ("dead-letter-source", "dead-letter-target");
    let meta = json!({"_max_claim_count": 1, "_dead_letter_queue": dead}).to_string();
    assert_eq!(checker.put(&format!("/v2/queues/{queue}"), Some(&meta)).await.status, 201);
    let (cid, ids) = post_and_claim(&checker, queue, 2).await;
    assert_eq!(checker.delete(&format!("/v2/queues/{queue}/claims/{cid}")).await.status, 204);
    // Claimed once already: the next claim moves both. Their removals here are applied, never answered.
    injector.set_mode(Mode::FailWhere(&[("moved", FaultKind::ServerErrorAfter)]));
    let r = c.post(&format!("/v2/queues/{queue}/claims?limit=10"), r#"{"ttl": 60}"#).await;
    injector.set_mode(Mode::Off);
    assert_ne!(r.status, 500, "{}", String::from_utf8_lossy(&r.body));
    let listed = list_all(&checker, queue, true).await.expect("listing the source");
    assert!(listed.is_empty(), "moved messages are gone from their queue: {listed:?}");
    let moved = list_all(&checker, dead, true).await.expect("listing the dead-letter queue");
    assert_eq!(moved.keys().count(), ids.len(), "the dead-letter queue holds both");
    let (total, _, _) = settled_stats(&checker, queue, (0, 0, 0)).await;
    assert_eq!(total, 0, "messages moved away are still counted in their old queue");
}

/// The last delete under a range claim also takes the claim off its head (`ranges.rs`). Applied with its
/// answer lost, the SDK's retry is refused, and the head it gets back holds no such claim: the delete
/// must still answer 204 (it did delete), not 400 as if the message were not claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_delete_under_a_range_claim_whose_answer_was_lost_still_answers_204() {
    let (base, faulty, injector, project) = faulty_and_clean("range-last-delete").await;
    let c = Client { app: &faulty, project: project.clone(), client_id: CLIENT.into() };
    let checker = Client { app: &base, project, client_id: OTHER_CLIENT.into() };
    let queue = "range-last-delete";
    let (cid, ids) = post_and_claim(&checker, queue, 2).await;
    let path = |id: &str| format!("/v2/queues/{queue}/messages/{id}?claim_id={cid}");
    assert_eq!(checker.delete(&path(&ids[0])).await.status, 204);
    // Only the last delete of a run writes `gone`: its first attempt is applied, its answer lost.
    injector.set_mode(Mode::FailFirstWhere(&[("\"gone\"", FaultKind::ServerErrorAfter)]));
    let r = c.delete(&path(&ids[1])).await;
    injector.set_mode(Mode::Off);
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(checker.get(&format!("/v2/queues/{queue}/messages/{}", ids[1])).await.status, 404);
    assert_eq!(settled_stats(&checker, queue, (0, 0, 0)).await, (0, 0, 0));
}

/// A range claim held up before its head write while a delete without a claim removes a message of its
/// run on the head alone (`Store::delete_fresh`, which leaves the fresh region where it is): the claim's
/// write must fail on the changed `gone` ranges and take the run again without the deleted message.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_range_claim_held_up_while_a_message_of_its_run_is_deleted_does_not_take_it() {
    let (base, faulty, injector, project) = faulty_and_clean("range-held-up").await;
    let c = Client { app: &faulty, project: project.clone(), client_id: CLIENT.into() };
    let checker = Client { app: &base, project, client_id: OTHER_CLIENT.into() };
    let queue = "range-held-up";
    let ids = post_three(&checker, queue).await;
    // The faulty process's claim stalls at its head write (the only request naming `rc_k`).
    injector.set_mode(Mode::FailWhere(&[("rc_k", FaultKind::StallBefore)]));
    let claims = format!("/v2/queues/{queue}/claims?limit=3");
    let held_up = c.post(&claims, r#"{"ttl": 60, "grace": 60}"#);
    let meanwhile = delete_meanwhile(&checker, &injector, queue, &ids[0]);
    let (r, ()) = tokio::join!(held_up, meanwhile);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let got: Vec<String> = delivered(&r.json_body()).into_iter().map(|(id, _)| id).collect();
    assert_eq!(got, ids[1..].to_vec(), "the claim holds what was not deleted, and only that");
    assert_eq!(checker.get(&format!("/v2/queues/{queue}/messages/{}", ids[0])).await.status, 404);
    assert_eq!(settled_stats(&checker, queue, (2, 2, 0)).await, (2, 2, 0));
}

/// The same for a pop, whose hand-over of fresh messages (`Store::prepare_per_message`) is held up while
/// one of them is deleted on the head alone: the pop must not take (and count out again) the deleted one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pop_held_up_while_a_fresh_message_is_deleted_does_not_take_it() {
    let (base, faulty, injector, project) = faulty_and_clean("pop-held-up").await;
    let c = Client { app: &faulty, project: project.clone(), client_id: CLIENT.into() };
    let checker = Client { app: &base, project, client_id: OTHER_CLIENT.into() };
    let queue = "pop-held-up";
    let ids = post_three(&checker, queue).await;
    injector.set_mode(Mode::FailWhere(&[("rc_k", FaultKind::StallBefore)]));
    let pops = format!("/v2/queues/{queue}/messages?pop=3");
    let held_up = c.delete(&pops);
    let meanwhile = delete_meanwhile(&checker, &injector, queue, &ids[0]);
    let (r, ()) = tokio::join!(held_up, meanwhile);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let got: Vec<String> =
        r.json_body()["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(got, ids[1..].to_vec(), "the pop takes what was not deleted, and only that");
    assert_eq!(settled_stats(&checker, queue, (0, 0, 0)).await, (0, 0, 0));
}

/// Posts three messages of an hour (one post); their ids.
async fn post_three(checker: &Client<'_>, queue: &str) -> Vec<String> {
    let messages: Vec<Value> = (0..3).map(|i| json!({"body": {"t": queue, "i": i}, "ttl": 3600})).collect();
    let posted =
        checker.post(&format!("/v2/queues/{queue}/messages"), &json!({ "messages": messages }).to_string()).await;
    assert_eq!(posted.status, 201);
    ids_of_resources(&posted.json_body())
}

/// 300 ms on, deletes message `id` without a claim (on its head alone: it is fresh), then lets requests
/// held up by `injector` through.
async fn delete_meanwhile(checker: &Client<'_>, injector: &Injector, queue: &str, id: &str) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(checker.delete(&format!("/v2/queues/{queue}/messages/{id}")).await.status, 204);
    injector.set_mode(Mode::Off);
}

/// A pop applied by DynamoDB whose answers are lost is undone (the pop reported failure, so the message
/// must stay), in the background when storage does not answer the undo either. Meanwhile the popped
/// message looks removed, and a listing that passes a long run of removed messages would raise the
/// shard's live floor past it: the undo holds the floor first. The message is listed, counted and
/// claimed first once it is put back. (A failed post after it leaves a hole on the head meanwhile.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pop_undone_late_holds_the_live_floor_below_it() {
    pop_undone_late("pop-undone-held", false, true, 1).await;
}

/// As above, but the undo's hold does not reach storage either, so the listing raises the live floor
/// past the popped message; the undo, settled later, lowers the floor back to it and masks the removed
/// messages in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pop_undone_after_the_live_floor_passed_it_lowers_the_floor() {
    pop_undone_late("pop-undone-passed", true, false, 1).await;
}

/// As above, with a failed post between the popped message and the others: its messages were written,
/// its commit never was, so its range is a hole, which the listing forgets as it raises the floor past
/// it. Lowered again, the floor must not bring that post's messages to light.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_floor_lowered_for_an_undone_pop_keeps_a_failed_post_invisible() {
    pop_undone_late("pop-undone-over-hole", true, true, 1).await;
}

/// As above, with two messages popped in doubt, whose undos settle side by side in either order: both
/// come back. (When the earlier message's undo settles first, the later one's splits the mask around
/// itself; which order happens cannot be steered from here, so the split is unit-tested in `head.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pops_undone_after_the_live_floor_passed_them_both_come_back() {
    pop_undone_late("pops-undone-passed", true, false, 2).await;
}

async fn pop_undone_late(queue: &str, hold_lost: bool, failed_post_after_m0: bool, pops: usize) {
    let (base, faulty, injector, project) = faulty_and_clean(queue).await;
    let c = Client { app: &faulty, project: project.clone(), client_id: CLIENT.into() };
    let checker = Client { app: &base, project, client_id: OTHER_CLIENT.into() };
    let path = format!("/v2/queues/{queue}/messages");
    let batch = |from: usize, to: usize, prefix: &str| {
        let messages: Vec<Value> =
            (from..to).map(|i| json!({"body": {"t": format!("{prefix}{i}"), "i": i}, "ttl": 3600})).collect();
        json!({ "messages": messages }).to_string()
    };
    let mut ids = vec![];
    if failed_post_after_m0 {
        ids.extend(ids_of_resources(&checker.post(&path, &batch(0, 1, "m")).await.json_body()));
        // Its messages are written; its commit (the only head write that counts messages) never is.
        injector.set_mode(Mode::FailWhere(&[("\"ex\"", FaultKind::ServerErrorBefore)]));
        let r = c.post(&path, &batch(0, 3, "failed")).await;
        injector.set_mode(Mode::Off);
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
        ids.extend(ids_of_resources(&checker.post(&path, &batch(1, 40, "m")).await.json_body()));
    } else {
        ids.extend(ids_of_resources(&checker.post(&path, &batch(0, 40, "m")).await.json_body()));
    }
    assert_eq!(ids.len(), 40);
    let k_of_m0 = zaqar::keys::message_id_k(&ids[0]).expect("a message id").1;
    // The pop of m0 is applied, never answered; its undo (fence, restore, and the hold of the live floor
    // when `hold_lost`) does not reach storage. (The pop's condition names `unpopped` too: its own
    // marker comes first.)
    const UNDO_AND_HOLD_LOST: &[(&str, FaultKind)] = &[
        ("was_exp = expires_ms", FaultKind::ServerErrorAfter),
        ("SET unpopped", FaultKind::ServerErrorBefore),
        ("= was_exp,", FaultKind::ServerErrorBefore),
        ("undo_until", FaultKind::ServerErrorBefore),
    ];
    injector.set_mode(Mode::FailWhere(if hold_lost { UNDO_AND_HOLD_LOST } else { &UNDO_AND_HOLD_LOST[..3] }));
    let r = c.delete(&format!("{path}?pop={pops}")).await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    // Then 34 more removed after it: a run long enough for a listing to raise the floor.
    for chunk in ids[pops..35].chunks(20) {
        assert_eq!(checker.delete(&format!("{path}?ids={}", chunk.join(","))).await.status, 204);
    }
    let listed = tokens(&checker.get(&format!("{path}?echo=true&limit=10")).await.json_body());
    assert_eq!(listed, ["m35", "m36", "m37", "m38", "m39"], "m0 looks popped while its undo is pending");
    let head = harness::raw_head(&base, &checker.project, queue, 0).await.expect("the shard's head");
    let live_k = raw_i64(&head, "live_k").unwrap_or(0) as u64;
    if failed_post_after_m0 {
        // Held, the floor keeps the hole (and the hold was conditioned on the holes as they were).
        let holes = raw_strings(&head, "holes");
        assert_eq!(holes.is_empty(), hold_lost, "the listing forgets the failed post's hole if it raises the floor");
    }
    if hold_lost {
        assert!(live_k > k_of_m0, "the listing raised the live floor past m0 ({live_k} <= {k_of_m0})");
    } else {
        assert!(live_k <= k_of_m0, "the undo's hold kept the live floor below m0 ({live_k} > {k_of_m0})");
    }
    injector.set_mode(Mode::Off);
    // The undo settles in the background (retried after 100 ms, 200 ms, ...).
    let started = Instant::now();
    let mut listed = vec![];
    while started.elapsed() < SETTLE {
        listed = tokens(&checker.get(&format!("{path}?echo=true&limit=10")).await.json_body());
        if listed.len() == 5 + pops {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let expected: Vec<String> = (0..pops).chain(35..40).map(|i| format!("m{i}")).collect();
    assert_eq!(listed, expected, "a pop that failed must leave its messages listed");
    let n = 5 + pops as u64;
    assert_eq!(settled_stats(&checker, queue, (n, 0, n)).await, (n, 0, n));
    let r = checker.post(&format!("/v2/queues/{queue}/claims?limit=2"), r#"{"ttl": 60, "grace": 60}"#).await;
    assert_eq!(tokens(&r.json_body()), expected[..2]);
}

/// A delete with its claim id applied by DynamoDB whose answer is lost (settled in the background), and
/// the claim released before that settles: the release must leave the removed message alone, or the
/// settled delete, which reads the message to learn what it removed, no longer sees the claim it held and
/// leaves the message counted as claimed until the claim's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_settled_after_its_claim_was_released_counts_it_out_of_the_claim() {
    let (base, faulty, injector, project) = faulty_and_clean("delete-then-release").await;
    let c = Client { app: &faulty, project: project.clone(), client_id: CLIENT.into() };
    let checker = Client { app: &base, project, client_id: OTHER_CLIENT.into() };
    let queue = "delete-then-release";
    let (cid, held) = post_and_claim(&checker, queue, 3).await;

    // Every UpdateItem of the faulty process is applied and its answer lost: the delete is a 503 and
    // keeps settling in the background.
    injector.set_mode(Mode::FailOp { op: "UpdateItem", kind: FaultKind::ServerErrorAfter });
    let r = c.delete(&format!("/v2/queues/{queue}/messages/{}?claim_id={cid}", held[0])).await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    // Another consumer process releases the claim before the delete has settled.
    assert_eq!(checker.delete(&format!("/v2/queues/{queue}/claims/{cid}")).await.status, 204);
    injector.set_mode(Mode::Off);

    assert_eq!(
        settled_stats(&checker, queue, (2, 0, 2)).await,
        (2, 0, 2),
        "total/claimed/free after the delete settled"
    );
    let snap = snapshot(&checker, queue).await;
    assert!(!snap.all.contains_key(&held[0]), "the deleted message is listed");
    assert_eq!(snap.unclaimed.len(), 2);
}

/// A renewal whose answer is lost settles in the background while the client renews the claim again:
/// every move of a message's claim end is counted once, from the end it really had. The claimed count is
/// kept per claim end, so a move counted from the wrong end shows in the head's entries (one too many
/// at one end, one too few at another) even while their sum, what stats show, happens to be right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_settled_late_count_each_move_of_a_claim_end_once() {
    let (base, faulty, injector, project) = faulty_and_clean("renew-twice").await;
    let c = Client { app: &faulty, project: project.clone(), client_id: CLIENT.into() };
    let checker = Client { app: &base, project: project.clone(), client_id: OTHER_CLIENT.into() };
    let queue = "renew-twice";
    let (cid, held) = post_and_claim(&checker, queue, 2).await;
    let claim_path = format!("/v2/queues/{queue}/claims/{cid}");

    // The faulty process's renewal is applied but its answer lost: a 503, settling in the background.
    injector.set_mode(Mode::FailOp { op: "UpdateItem", kind: FaultKind::ServerErrorAfter });
    let r = c.patch(&claim_path, "application/json", r#"{"ttl": 400, "grace": 60}"#).await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    // The client renews again through another process before that settles.
    assert_eq!(checker.patch(&claim_path, "application/json", r#"{"ttl": 500, "grace": 60}"#).await.status, 204);
    injector.set_mode(Mode::Off);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for id in &held {
        assert_eq!(checker.delete(&format!("/v2/queues/{queue}/messages/{id}?claim_id={cid}")).await.status, 204);
    }

    let live_claim_ends = || async {
        let head = harness::raw_head(&base, &project, queue, 0).await.expect("the shard's head");
        let now_s = harness::now_s(&base);
        let Some(aws_sdk_dynamodb::types::AttributeValue::M(cl)) = head.get("cl") else {
            panic!("no cl map: {head:?}")
        };
        let mut ends: Vec<(i64, i64)> = cl
            .iter()
            .filter_map(|(end, v)| Some((end.parse::<i64>().ok()?, v.as_n().ok()?.parse::<i64>().ok()?)))
            .filter(|(end, count)| *end > now_s && *count != 0)
            .collect();
        ends.sort_unstable();
        ends
    };
    let started = Instant::now();
    let mut ends = live_claim_ends().await;
    while !ends.is_empty() && started.elapsed() < SETTLE {
        tokio::time::sleep(Duration::from_millis(200)).await;
        ends = live_claim_ends().await;
    }
    assert_eq!(ends, vec![], "claimed counts left at live claim ends (end, count) with every message deleted");
    let (s, stats) = sj(&checker.get(&format!("/v2/queues/{queue}/stats")).await);
    assert_eq!(s, 200);
    assert_eq!((stats["messages"]["total"].as_u64(), stats["messages"]["claimed"].as_u64()), (Some(0), Some(0)));
}

/// A renewal that storage does not take settles in the background; before it is first applied another
/// renewal of the claim lands, and the first application's answer is lost too. The settled renewal then
/// finds its own tag and must count the move from the end the other renewal set, not from the end it
/// read before either: with every message deleted, no live claim end may keep a count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_applied_after_another_counts_from_the_end_that_one_set() {
    let (base, faulty, injector, project) = faulty_and_clean("renew-overtaken").await;
    let c = Client { app: &faulty, project: project.clone(), client_id: CLIENT.into() };
    let checker = Client { app: &base, project: project.clone(), client_id: OTHER_CLIENT.into() };
    let queue = "renew-overtaken";
    let (cid, held) = post_and_claim(&checker, queue, 2).await;
    let claim_path = format!("/v2/queues/{queue}/claims/{cid}");
    // The faulty process reads the claim's messages, then its renewal writes do not reach storage.
    injector.set_mode(Mode::FailWhere(&[("renewed = :op", FaultKind::ServerErrorBefore)]));
    let r = c.patch(&claim_path, "application/json", r#"{"ttl": 400, "grace": 60}"#).await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    // Another renewal lands first.
    assert_eq!(checker.patch(&claim_path, "application/json", r#"{"ttl": 500, "grace": 60}"#).await.status, 204);
    // Then the background retries of the first are applied, and their answers lost, until storage is back.
    injector.set_mode(Mode::FailWhere(&[("renewed = :op", FaultKind::ServerErrorAfter)]));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    injector.set_mode(Mode::Off);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for id in &held {
        assert_eq!(checker.delete(&format!("/v2/queues/{queue}/messages/{id}?claim_id={cid}")).await.status, 204);
    }
    let started = Instant::now();
    let mut ends = live_claim_ends(&base, &project, queue).await;
    while !ends.is_empty() && started.elapsed() < SETTLE {
        tokio::time::sleep(Duration::from_millis(200)).await;
        ends = live_claim_ends(&base, &project, queue).await;
    }
    assert_eq!(ends, vec![], "claimed counts left at live claim ends (end, count) with every message deleted");
}

/// A claim whose write is held up in the network after it read the message; meanwhile another claim
/// takes the message, extends its life (and so moves it to a later expiry bucket), and releases it. The
/// held-up write must not apply on the expiry it did not read, or its counts move the message out of a
/// bucket it has already left: the heads must count it in its bucket once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_held_up_while_another_extended_the_message_counts_it_once() {
    let (mut base, mut faulty, injector, project) = faulty_and_clean("claim-held-up").await;
    // Claims of single messages: the held-up write is a message's claim write.
    (base.store.range_claims, faulty.store.range_claims) = (false, false);
    let c = Client { app: &faulty, project: project.clone(), client_id: CLIENT.into() };
    let checker = Client { app: &base, project: project.clone(), client_id: OTHER_CLIENT.into() };
    let queue = "claim-held-up";
    let path = format!("/v2/queues/{queue}/messages");
    let posted =
        checker.post(&path, &json!({"messages": [{"body": {"t": "m", "i": 0}, "ttl": 300}]}).to_string()).await;
    assert_eq!(posted.status, 201);
    // The faulty process's claim (60 s: no extension) stalls at its message write.
    injector.set_mode(Mode::FailWhere(&[("claim_id = :cid", FaultKind::StallBefore)]));
    let claims_path = format!("/v2/queues/{queue}/claims?limit=1");
    let held_up = c.post(&claims_path, r#"{"ttl": 60, "grace": 60}"#);
    let meanwhile = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        // 400 s + 60 s of grace outlives the message: its life is extended, then the claim released.
        let r = checker.post(&format!("/v2/queues/{queue}/claims?limit=1"), r#"{"ttl": 400, "grace": 60}"#).await;
        assert_eq!(r.status, 201);
        let cid = r.header_value("location").and_then(|l| l.rsplit('/').next()).unwrap().to_string();
        assert_eq!(checker.delete(&format!("/v2/queues/{queue}/claims/{cid}")).await.status, 204);
        injector.set_mode(Mode::Off);
    };
    let (r, ()) = tokio::join!(held_up, meanwhile);
    assert!(matches!(r.status.as_u16(), 201 | 204 | 503), "{} {}", r.status, String::from_utf8_lossy(&r.body));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let head = harness::raw_head(&base, &project, queue, 0).await.expect("the shard's head");
    let now_s = harness::now_s(&base);
    let counted: Vec<(i64, i64)> =
        raw_counter_map(&head, "ex").into_iter().filter(|(b, n)| *b > now_s && *n != 0).collect();
    let item = raw_messages(&base, &project, queue, 0).await.into_iter().next().expect("the message").1;
    let bucket = zaqar::keys::expiry_bucket(raw_i64(&item, "expires_ms").unwrap(), raw_i64(&item, "ttl_s").unwrap());
    assert_eq!(counted, vec![(bucket, 1)], "the message counted once, in the bucket it lives in");
}

/// The shard's live claim ends with a count other than zero, as (end second, count).
async fn live_claim_ends(base: &App, project: &str, queue: &str) -> Vec<(i64, i64)> {
    let head = harness::raw_head(base, project, queue, 0).await.expect("the shard's head");
    let now_s = harness::now_s(base);
    let mut ends: Vec<(i64, i64)> =
        raw_counter_map(&head, "cl").into_iter().filter(|(end, count)| *end > now_s && *count != 0).collect();
    ends.sort_unstable();
    ends
}

/// Posts `n` messages to a new queue and claims them all (300 s): the claim id and the messages' ids.
async fn post_and_claim(checker: &Client<'_>, queue: &str, n: usize) -> (String, Vec<String>) {
    let messages: Vec<Value> = (0..n).map(|i| json!({"body": {"t": queue, "i": i}, "ttl": 3600})).collect();
    let posted =
        checker.post(&format!("/v2/queues/{queue}/messages"), &json!({ "messages": messages }).to_string()).await;
    assert_eq!(posted.status, 201);
    let r = checker.post(&format!("/v2/queues/{queue}/claims?limit={n}"), r#"{"ttl": 300, "grace": 60}"#).await;
    assert_eq!(r.status, 201);
    let cid = r.header_value("location").and_then(|l| l.rsplit('/').next()).unwrap().to_string();
    let held: Vec<String> = delivered(&r.json_body()).into_iter().map(|(id, _)| id).collect();
    assert_eq!(held.len(), n);
    (cid, held)
}

/// The queue's stats (total, claimed, free) once they show `expected`, or as they are after [`SETTLE`].
async fn settled_stats(checker: &Client<'_>, queue: &str, expected: (u64, u64, u64)) -> (u64, u64, u64) {
    let started = Instant::now();
    loop {
        let (s, stats) = sj(&checker.get(&format!("/v2/queues/{queue}/stats")).await);
        assert_eq!(s, 200);
        let m = &stats["messages"];
        let got = (m["total"].as_u64().unwrap(), m["claimed"].as_u64().unwrap(), m["free"].as_u64().unwrap());
        if got == expected || started.elapsed() > SETTLE {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A release applied by DynamoDB whose answer is lost (settled in the background), and the released
/// message popped by another consumer before that settles: the settled release finds its own tag on a
/// message that is gone by now, and must still count it out of the claim it was released from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_settled_after_its_message_was_popped_counts_it_out_of_the_claim() {
    let (base, faulty, injector, project) = faulty_and_clean("release-then-pop").await;
    let c = Client { app: &faulty, project: project.clone(), client_id: CLIENT.into() };
    let checker = Client { app: &base, project, client_id: OTHER_CLIENT.into() };
    let queue = "release-then-pop";
    let (cid, held) = post_and_claim(&checker, queue, 1).await;
    // A second message, left free: stats clamp `claimed` to `total`, so an empty queue would hide the error.
    let other = json!({"messages": [{"body": {"t": queue, "i": 1}, "ttl": 3600}]}).to_string();
    assert_eq!(checker.post(&format!("/v2/queues/{queue}/messages"), &other).await.status, 201);

    injector.set_mode(Mode::FailOp { op: "UpdateItem", kind: FaultKind::ServerErrorAfter });
    let r = c.delete(&format!("/v2/queues/{queue}/claims/{cid}")).await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    // Released (its answer lost), so another consumer may pop it before the release settles.
    let popped = checker.delete(&format!("/v2/queues/{queue}/messages?pop=1")).await;
    assert_eq!(popped.status, 200, "{}", String::from_utf8_lossy(&popped.body));
    assert_eq!(delivered(&popped.json_body()).into_iter().map(|(id, _)| id).collect::<Vec<_>>(), held);
    injector.set_mode(Mode::Off);

    assert_eq!(
        settled_stats(&checker, queue, (1, 0, 1)).await,
        (1, 0, 1),
        "total/claimed/free after the release settled"
    );
}
