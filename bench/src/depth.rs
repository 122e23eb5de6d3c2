//! `bench/depth`: latency and DynamoDB cost of every message operation as the queue gets deep.
//!
//! For each depth a queue is filled through the store (posts of 500, unmeasured), then every operation is
//! called `samples` times through the real handlers and timed in process (handler + SDK + DynamoDB Local,
//! no HTTP server). Requests and units per call come from the store's own meter (`Usage` deltas around the
//! call). Operations that change the depth are undone outside the measured window (posted messages are
//! deleted, claimed or popped ones re-posted at the tail), so every sample sees the same depth.
//!
//! Purge and queue delete empty the queue, so each of their samples needs a queue of its own at that depth:
//! their sample count is limited by a fill budget (at least one; the main queue is the last delete sample).
//! After each purge and delete the bench checks the queue reads as empty (stats, list, claim) and, after a
//! delete, that the re-created queue is empty too.
//!
//! The expired case puts 5,000 messages with a ttl of 60 s at the head of a queue, then `200` live ones,
//! and moves the app's manual clock 3 minutes on: DynamoDB Local never deletes expired items, like native
//! TTL on a bad day.

use crate::report::{machine, percentile_ms, record_section, thousands, today};
use crate::setup::{self, hrefs, id_of, post_doc, Caller};
use http::Method;
use rand::seq::SliceRandom;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use zaqar::store::messages::NewMessage;
use zaqar::store::UsageSnapshot;
use zaqar::types::{ClientId, ProjectId, QueueName};
use zaqar::App;

pub struct Options {
    pub depths: Vec<u64>,
    pub samples: usize,
    /// Messages filled per destructive operation (purge, delete) and depth, beyond the main queue.
    pub fill_budget: u64,
    pub shards: u32,
    pub expired: bool,
    pub record: Option<String>,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options {
            depths: vec![0, 200, 10_000, 20_000, 100_000],
            samples: 50,
            fill_budget: 20_000,
            shards: 1,
            expired: true,
            record: None,
        };
        let mut quick = false;
        let mut depths_given = false;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
            match a.as_str() {
                "--depths" => {
                    o.depths = val()?
                        .split(',')
                        .map(|d| d.trim().replace('_', "").parse().map_err(|_| format!("bad depth {d}")))
                        .collect::<Result<_, _>>()?;
                    depths_given = true;
                }
                "--samples" => o.samples = val()?.parse().map_err(|_| "bad --samples")?,
                "--fill-budget" => o.fill_budget = val()?.parse().map_err(|_| "bad --fill-budget")?,
                "--shards" => o.shards = val()?.parse().map_err(|_| "bad --shards")?,
                "--no-expired" => o.expired = false,
                "--quick" => quick = true,
                "--record" => o.record = Some(val()?),
                other => return Err(format!("unknown option {other}")),
            }
        }
        if quick {
            if !depths_given {
                o.depths = vec![0, 200, 2_000];
            }
            o.samples = o.samples.min(10);
            o.fill_budget = o.fill_budget.min(2_000);
        }
        if o.samples == 0 || o.shards == 0 || o.shards > zaqar::keys::MAX_SHARDS {
            return Err("--samples must be positive and --shards within 1..=64".into());
        }
        Ok(o)
    }
}

/// What one operation did over its samples at one depth.
#[derive(Default, Clone)]
struct OpResult {
    times: Vec<Duration>,
    usage: Vec<UsageSnapshot>,
}

impl OpResult {
    fn add(&mut self, t: Duration, u: UsageSnapshot) {
        self.times.push(t);
        self.usage.push(u);
    }

    fn p(&self, p: f64) -> f64 {
        percentile_ms(&self.times, p)
    }

    fn mean(&self, f: impl Fn(&UsageSnapshot) -> f64) -> f64 {
        self.usage.iter().map(f).sum::<f64>() / self.usage.len().max(1) as f64
    }

    fn max(&self, f: impl Fn(&UsageSnapshot) -> f64) -> f64 {
        self.usage.iter().map(f).fold(0.0, f64::max)
    }
}

const OPS: [&str; 11] = [
    "stats",
    "list 10",
    "get 1",
    "get 10 by ids",
    "post 1",
    "post 10",
    "claim 10",
    "claim 10 + delete each",
    "pop 10",
    "purge",
    "queue delete",
];

/// The operations issue 8's done-when compares between depths 200 and 20,000.
const COMPARED: [&str; 7] = ["stats", "list 10", "get 1", "post 1", "post 10", "claim 10 + delete each", "purge"];

/// Live messages live a day (longer than any run); expired ones are posted with the minimum ttl.
const LIVE_TTL: i64 = 86_400;
const EXPIRED_TTL: i64 = 60;
const FILL_BATCH: usize = 500;

struct Case {
    label: String,
    depth: u64,
    results: BTreeMap<&'static str, OpResult>,
    /// Every purge and delete left the queue reading as empty, and every re-created queue was empty.
    empty_after: bool,
    /// Stats answers whose total was not the depth, or that lacked oldest/newest on a non-empty queue.
    stats_incomplete: usize,
}

fn producer(i: usize) -> ClientId {
    ClientId::parse(&format!("00000000-0000-4000-8000-{i:012x}")).expect("valid client id")
}

/// Posts `n` messages through the store in batches (not measured), spread over 16 producers so a
/// sharded queue fills every shard. Returns the ids.
async fn fill(app: &App, project: &ProjectId, queue: &QueueName, n: u64, ttl: i64) -> Vec<String> {
    let mut ids = Vec::with_capacity(n as usize);
    let mut left = n as usize;
    let mut batch_no = 0;
    // At least 16 posts (one per producer) whenever the depth allows, so every shard gets its share.
    let batch = FILL_BATCH.min((n as usize / 16).max(10));
    while left > 0 {
        let size = left.min(batch);
        let msgs: Vec<NewMessage> =
            (0..size).map(|i| NewMessage { body: setup::body(i), ttl_s: ttl, delay_s: None }).collect();
        let client = producer(batch_no % 16);
        let posted = app.store.post_messages(project, queue, Some(&client), &msgs, false).await.expect("fill post");
        ids.extend(posted);
        left -= size;
        batch_no += 1;
    }
    ids
}

/// A queue at depth `depth` (optionally with `expired` short-lived messages first), created with the shards.
async fn prepare(caller: &Caller, name: &str, depth: u64, expired: u64, shards: u32) -> Vec<String> {
    let meta = json!({ "_shards": shards });
    caller.expect(Method::PUT, &format!("/v2/queues/{name}"), Some(&meta), &[201, 204]).await;
    let project = ProjectId::parse(&caller.project).expect("project");
    let queue = QueueName::parse(name).expect("queue name");
    if expired > 0 {
        fill(&caller.app, &project, &queue, expired, EXPIRED_TTL).await;
    }
    fill(&caller.app, &project, &queue, depth, LIVE_TTL).await
}

async fn measured(
    caller: &Caller,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
    ok: &[u16],
) -> (http::StatusCode, serde_json::Value, Duration, UsageSnapshot) {
    let before = caller.app.store.usage.snapshot();
    let (resp, t) = caller.timed(method, path, body, ok).await;
    let used = caller.app.store.usage.snapshot() - before;
    let body = if resp.body.is_empty() { serde_json::Value::Null } else { resp.json_body() };
    (resp.status, body, t, used)
}

/// Whether the queue reads as empty: stats total 0, no messages listed, nothing to claim.
async fn reads_empty(caller: &Caller, name: &str) -> bool {
    let stats = caller.expect(Method::GET, &format!("/v2/queues/{name}/stats"), None, &[200]).await.json_body();
    let list = caller
        .expect(Method::GET, &format!("/v2/queues/{name}/messages?echo=true&include_claimed=true"), None, &[200])
        .await
        .json_body();
    let claim = caller
        .send(Method::POST, &format!("/v2/queues/{name}/claims?limit=10"), Some(&json!({"ttl": 300, "grace": 60})))
        .await;
    stats["messages"]["total"] == 0 && list["messages"].as_array().is_none_or(Vec::is_empty) && claim.status == 204
}

/// Runs every operation on a queue prepared at `depth`; `extra` queues for purge and delete.
async fn run_case(caller: &Caller, label: String, depth: u64, expired: u64, o: &Options) -> Case {
    let app = &caller.app;
    let tag = label.replace([' ', ','], "").replace('+', "-");
    let main = format!("depth-{tag}");
    let budget_samples = (o.fill_budget / (depth + expired).max(1)).clamp(1, o.samples as u64) as usize;
    let t0 = Instant::now();
    let mut ids = prepare(caller, &main, depth, expired, o.shards).await;
    let purge_queues: Vec<String> = (0..budget_samples).map(|i| format!("purge-{tag}-{i}")).collect();
    let delete_queues: Vec<String> = (1..budget_samples).map(|i| format!("del-{tag}-{i}")).collect();
    for q in purge_queues.iter().chain(&delete_queues) {
        prepare(caller, q, depth, expired, o.shards).await;
    }
    let filled = (depth + expired) * (1 + purge_queues.len() + delete_queues.len()) as u64;
    eprintln!("depth: {label}: filled {} messages in {:.1} s", thousands(filled), t0.elapsed().as_secs_f64());
    if expired > 0 {
        app.store.clock.advance_secs(3 * 60);
    }
    let project = ProjectId::parse(&caller.project).expect("project");
    let queue = QueueName::parse(&main).expect("queue");
    let base = format!("/v2/queues/{main}");
    let mut results: BTreeMap<&'static str, OpResult> = BTreeMap::new();
    let mut rng = rand::thread_rng();
    let n = o.samples;
    let t1 = Instant::now();
    // At depth 0 there is nothing to get: ask for a well-formed id that does not exist (one lookup).
    let missing = "00ffffffffffff0000000000".to_string();
    let pick = |rng: &mut rand::rngs::ThreadRng, ids: &Vec<String>| ids.choose(rng).cloned().unwrap_or(missing.clone());

    let mut stats_incomplete = 0;
    for _ in 0..n {
        let (_, body, t, u) = measured(caller, Method::GET, &format!("{base}/stats"), None, &[200]).await;
        results.entry("stats").or_default().add(t, u);
        // Zaqar gives oldest and newest whenever the queue holds messages.
        let m = &body["messages"];
        if m["total"].as_u64() != Some(depth) || m["oldest"].is_null() != (depth == 0) {
            if stats_incomplete == 0 {
                eprintln!("depth: {label}: unexpected stats answer: {body}");
            }
            stats_incomplete += 1;
        }
    }
    for _ in 0..n {
        let (_, _, t, u) =
            measured(caller, Method::GET, &format!("{base}/messages?limit=10&echo=true"), None, &[200]).await;
        results.entry("list 10").or_default().add(t, u);
    }
    for _ in 0..n {
        let id = pick(&mut rng, &ids);
        let (_, _, t, u) = measured(caller, Method::GET, &format!("{base}/messages/{id}"), None, &[200, 404]).await;
        results.entry("get 1").or_default().add(t, u);
    }
    for _ in 0..n {
        let some: Vec<String> = (0..10).map(|_| pick(&mut rng, &ids)).collect();
        let path = format!("{base}/messages?ids={}", some.join(","));
        let (_, _, t, u) = measured(caller, Method::GET, &path, None, &[200, 204, 404]).await;
        results.entry("get 10 by ids").or_default().add(t, u);
    }
    for (name, count) in [("post 1", 1usize), ("post 10", 10)] {
        for _ in 0..n {
            let doc = post_doc(count, LIVE_TTL);
            let before = app.store.usage.snapshot();
            let (resp, t) = caller.timed(Method::POST, &format!("{base}/messages"), Some(&doc), &[201]).await;
            results.entry(name).or_default().add(t, app.store.usage.snapshot() - before);
            let posted: Vec<String> = hrefs(&resp).iter().map(|h| id_of(h)).collect();
            app.store.delete_messages(&project, &queue, &posted).await.expect("undo post");
        }
    }
    let claim_body = json!({"ttl": 300, "grace": 60});
    for _ in 0..n {
        let before = app.store.usage.snapshot();
        let (resp, t_claim) =
            caller.timed(Method::POST, &format!("{base}/claims?limit=10"), Some(&claim_body), &[201, 204]).await;
        let claimed = app.store.usage.snapshot() - before;
        let mut total = t_claim;
        let got = hrefs(&resp);
        for h in &got {
            let (_, t) = caller.timed(Method::DELETE, h, None, &[204]).await;
            total += t;
        }
        results.entry("claim 10").or_default().add(t_claim, claimed);
        results.entry("claim 10 + delete each").or_default().add(total, app.store.usage.snapshot() - before);
        refill(app, &project, &queue, got.len(), &mut ids, &got).await;
    }
    for _ in 0..n {
        let (_, body, t, u) = measured(caller, Method::DELETE, &format!("{base}/messages?pop=10"), None, &[200]).await;
        results.entry("pop 10").or_default().add(t, u);
        let popped: Vec<String> = body["messages"]
            .as_array()
            .map(|m| m.iter().filter_map(|x| x["id"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        refill(app, &project, &queue, popped.len(), &mut ids, &popped).await;
    }
    let mut empty_after = true;
    let purge_doc = json!({"resource_types": ["messages", "subscriptions"]});
    for q in &purge_queues {
        let (_, _, t, u) =
            measured(caller, Method::POST, &format!("/v2/queues/{q}/purge"), Some(&purge_doc), &[204]).await;
        results.entry("purge").or_default().add(t, u);
        empty_after &= reads_empty(caller, q).await;
    }
    for q in delete_queues.iter().chain(std::iter::once(&main)) {
        let (_, _, t, u) = measured(caller, Method::DELETE, &format!("/v2/queues/{q}"), None, &[204]).await;
        results.entry("queue delete").or_default().add(t, u);
        caller.expect(Method::PUT, &format!("/v2/queues/{q}"), None, &[201]).await;
        empty_after &= reads_empty(caller, q).await;
    }
    eprintln!("depth: {label}: measured in {:.1} s", t1.elapsed().as_secs_f64());
    Case { label, depth, results, empty_after, stats_incomplete }
}

/// Re-posts `count` messages at the tail (outside the measured window) so the depth stays the same.
async fn refill(
    app: &App,
    project: &ProjectId,
    queue: &QueueName,
    count: usize,
    ids: &mut Vec<String>,
    gone: &[String],
) {
    if count == 0 {
        return;
    }
    let gone: std::collections::HashSet<String> = gone.iter().map(|h| id_of(h)).collect();
    ids.retain(|id| !gone.contains(id));
    let msgs: Vec<NewMessage> =
        (0..count).map(|i| NewMessage { body: setup::body(i), ttl_s: LIVE_TTL, delay_s: None }).collect();
    let posted = app.store.post_messages(project, queue, Some(&producer(0)), &msgs, false).await.expect("refill");
    ids.extend(posted);
}

fn fmt_ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

fn markdown(cases: &[Case], o: &Options, minutes: f64) -> String {
    let mut s = String::new();
    let w = |s: &mut String, line: String| {
        s.push_str(&line);
        s.push('\n');
    };
    w(&mut s, format!("Measured {} on {}.", today(), machine()));
    w(&mut s, format!("Command: `{}` ({:.1} min in all, fills included).", crate::report::command(), minutes));
    w(&mut s, String::new());
    w(
        &mut s,
        format!(
            "Release build; handlers called in process (`zaqar_local::server::dispatch`) against DynamoDB Local \
             on 127.0.0.1, one client, sequential; {} samples per operation and depth ({} shard{}). Units are \
             what DynamoDB Local reports with ReturnConsumedCapacity, per call (mean); failed conditional \
             writes count 1 WCU.",
            o.samples,
            o.shards,
            if o.shards == 1 { "" } else { "s" }
        ),
    );
    w(&mut s, String::new());
    w(&mut s, "### p50 / p99 latency (ms)".into());
    w(&mut s, String::new());
    let head: Vec<String> = cases.iter().map(|c| c.label.clone()).collect();
    w(&mut s, format!("| operation | {} |", head.join(" | ")));
    w(&mut s, format!("|---|{}", "---|".repeat(cases.len())));
    for op in OPS {
        let cells: Vec<String> = cases
            .iter()
            .map(|c| c.results.get(op).map_or("-".into(), |r| format!("{} / {}", fmt_ms(r.p(50.0)), fmt_ms(r.p(99.0)))))
            .collect();
        w(&mut s, format!("| {op} | {} |", cells.join(" | ")));
    }
    w(&mut s, String::new());
    w(&mut s, "### DynamoDB requests / read units / write units per call".into());
    w(&mut s, String::new());
    w(&mut s, format!("| operation | {} |", head.join(" | ")));
    w(&mut s, format!("|---|{}", "---|".repeat(cases.len())));
    for op in OPS {
        let cells: Vec<String> = cases
            .iter()
            .map(|c| {
                c.results.get(op).map_or("-".into(), |r| {
                    format!(
                        "{:.1} / {:.1} / {:.1}",
                        r.mean(|u| u.requests as f64),
                        r.mean(|u| u.read_units),
                        r.mean(|u| u.write_units)
                    )
                })
            })
            .collect();
        w(&mut s, format!("| {op} | {} |", cells.join(" | ")));
    }
    let samples: Vec<String> =
        cases.iter().map(|c| format!("{}: {}", c.label, c.results.get("purge").map_or(0, |r| r.times.len()))).collect();
    w(&mut s, String::new());
    w(&mut s, format!("Purge and queue delete samples per depth (one filled queue each): {}.", samples.join(", ")));
    w(&mut s, String::new());
    w(&mut s, checks(cases));
    s
}

/// Issue 8's done-when, as far as this run covers it.
fn checks(cases: &[Case]) -> String {
    let mut lines = vec!["### Done-when checks (issue 8)".to_string(), String::new()];
    let find = |pred: &dyn Fn(&Case) -> bool| cases.iter().find(|c| pred(c));
    let base = find(&|c| c.depth == 200 && !c.label.contains("expired"));
    let targets: Vec<&Case> = cases
        .iter()
        .filter(|c| (c.depth == 20_000 && !c.label.contains("expired")) || c.label.contains("expired"))
        .collect();
    if let Some(base) = base {
        for t in &targets {
            lines.push(format!("p50 at {} <= 2 x p50 at 200 + 2 ms:", t.label));
            lines.push(String::new());
            lines.push("| operation | p50 at 200 | bound | p50 here | |".into());
            lines.push("|---|---|---|---|---|".into());
            for op in COMPARED {
                if let (Some(b), Some(x)) = (base.results.get(op), t.results.get(op)) {
                    let bound = 2.0 * b.p(50.0) + 2.0;
                    let ok = x.p(50.0) <= bound;
                    lines.push(format!(
                        "| {op} | {} | {} | {} | {} |",
                        fmt_ms(b.p(50.0)),
                        fmt_ms(bound),
                        fmt_ms(x.p(50.0)),
                        if ok { "pass" } else { "FAIL" }
                    ));
                }
            }
            lines.push(String::new());
        }
    } else {
        lines.push("(depth 200 not in this run: no latency comparison)".into());
        lines.push(String::new());
    }
    let worst_stats = cases
        .iter()
        .filter_map(|c| c.results.get("stats").map(|r| (c.label.clone(), r.max(|u| u.read_units))))
        .fold((String::new(), 0.0f64), |a, b| if b.1 > a.1 { b } else { a });
    lines.push(format!(
        "- stats read units per call, worst at any depth: {:.1} ({}) — {}",
        worst_stats.1,
        worst_stats.0,
        if worst_stats.1 <= 2.0 { "pass (<= 2)" } else { "FAIL (> 2)" }
    ));
    for c in cases.iter().filter(|c| c.depth >= 20_000 && !c.label.contains("expired")) {
        if let Some(r) = c.results.get("queue delete") {
            let worst = r.times.iter().max().copied().unwrap_or_default();
            lines.push(format!(
                "- DELETE of a queue holding {} messages: slowest of {} answered in {:.1} ms — {}",
                thousands(c.depth),
                r.times.len(),
                worst.as_secs_f64() * 1000.0,
                if worst <= Duration::from_secs(1) { "pass (<= 1 s)" } else { "FAIL (> 1 s)" }
            ));
        }
    }
    for c in cases.iter().filter(|c| c.stats_incomplete > 0) {
        lines.push(format!(
            "- stats at {}: {} of {} answers had a total other than the depth or lacked oldest/newest — FAIL",
            c.label,
            c.stats_incomplete,
            c.results.get("stats").map_or(0, |r| r.times.len())
        ));
    }
    let all_empty = cases.iter().all(|c| c.empty_after);
    lines.push(format!(
        "- after every purge and delete the queue read as empty (stats 0, list empty, claim 204), and every \
         re-created queue was empty — {}",
        if all_empty { "pass" } else { "FAIL" }
    ));
    lines.join("\n") + "\n"
}

pub async fn run(o: Options) {
    let started = Instant::now();
    let app = setup::app(setup::client(None).await).await;
    let project = format!("depth-{:08x}", rand::random::<u32>());
    let caller = Caller::new(&app, &project, &producer(0).to_string());
    let mut cases = Vec::new();
    for &d in &o.depths {
        cases.push(run_case(&caller, thousands(d), d, 0, &o).await);
    }
    if o.expired {
        // Its own app: its own manual clock, moved on without disturbing the other cases.
        let app2 = setup::app(app.store.client.clone()).await;
        let caller2 = Caller::new(&app2, &project, &producer(0).to_string());
        cases.push(run_case(&caller2, "200 + 5,000 expired".into(), 200, 5_000, &o).await);
    }
    let md = markdown(&cases, &o, started.elapsed().as_secs_f64() / 60.0);
    println!("{md}");
    if let Some(path) = &o.record {
        let title = "# Queue depth: latency and cost per operation\n\nWritten by `bench/depth` (see README.md).";
        record_section(path, title, &format!("depth shards={}", o.shards), &md).expect("write the record");
        eprintln!("depth: recorded in {path}");
    }
}
