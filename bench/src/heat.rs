//! `bench/heat`: where a queue's DynamoDB units land, per partition key, projected to a message rate.
//!
//! DynamoDB caps one partition key at 1,000 WCU/s and 3,000 RCU/s however large the table. The emulator
//! cannot run at thousands of lifecycles per second, and it does not have to: the bench drives message
//! lifecycles (post of 10, claim of 10, delete of each) through the real handlers at whatever speed it can,
//! records every DynamoDB request with its partition keys and consumed units ([`crate::meter`]), and
//! projects: for each key, units per lifecycle x R lifecycles per second. Wall time plays no part.
//!
//! Set-up: one queue with `_shards: N`, a backlog of messages in every shard (so claims find work where
//! they start, as they do in a busy queue), producers with distinct Client-IDs posting in turn (a producer's
//! messages go to the shard its Client-ID hashes to), and `concurrency` workers, each running
//! post -> claim -> delete-each rounds, so claims race as they do in production. A lifecycle is one message
//! posted during the measured phase.
//!
//! Queue-record reads: the handlers read the record fresh on every post and claim (counted as measured);
//! the message paths use a per-container cache (1 s), projected as `containers` reads per second on top.

use crate::meter::{key_kind, Call, Recorder, TAG};
use crate::report::{command, machine, record_section, today};
use crate::setup::{self, hrefs, id_of, Caller};
use http::Method;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;
use zaqar::types::{ProjectId, QueueName};

pub struct Options {
    pub rate: f64,
    pub shards: u32,
    pub producers: usize,
    pub rounds: usize,
    pub backlog_per_shard: usize,
    pub concurrency: usize,
    pub containers: u32,
    pub record: Option<String>,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let (mut rate, mut shards, mut producers, mut rounds) = (3000.0f64, 1u32, None, None);
        let (mut backlog, mut concurrency, mut containers, mut record) = (50, 4, 100, None);
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
            let bad = |what: &str| format!("bad value for {what}");
            match a.as_str() {
                "--rate" => rate = val()?.parse().map_err(|_| bad("--rate"))?,
                "--shards" => shards = val()?.parse().map_err(|_| bad("--shards"))?,
                "--producers" => producers = Some(val()?.parse().map_err(|_| bad("--producers"))?),
                "--rounds" => rounds = Some(val()?.parse().map_err(|_| bad("--rounds"))?),
                "--backlog" => backlog = val()?.parse().map_err(|_| bad("--backlog"))?,
                "--concurrency" => concurrency = val()?.parse().map_err(|_| bad("--concurrency"))?,
                "--containers" => containers = val()?.parse().map_err(|_| bad("--containers"))?,
                "--record" => record = Some(val()?),
                other => return Err(format!("unknown option {other}")),
            }
        }
        if rate.is_nan() || rate <= 0.0 || shards == 0 || shards > zaqar::keys::MAX_SHARDS || concurrency == 0 {
            return Err("--rate > 0, --shards within 1..=64 and --concurrency >= 1, please".into());
        }
        Ok(Options {
            rate,
            shards,
            producers: producers.unwrap_or(8 * shards as usize).max(1),
            rounds: rounds.unwrap_or((40 * shards as usize).max(200)),
            backlog_per_shard: backlog,
            concurrency,
            containers,
            record,
        })
    }
}

fn producer_id(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012x}")
}

/// Units one partition key paid over the measured phase, with where they came from.
#[derive(Default)]
struct KeyUse {
    read: f64,
    write: f64,
    requests: f64,
    /// (API operation, DynamoDB operation) -> (read, write).
    by: BTreeMap<(String, String), (f64, f64)>,
}

/// Whether a call is a queue-record cache refresh: the delete path reads the record only through the
/// per-container cache (post and claim read it fresh on every request, which also refreshes the cache).
/// Those reads follow wall time, not the message rate, so they are projected per container instead.
fn is_cache_refresh(c: &Call, record_pk: &str) -> bool {
    c.tag == Some("delete") && c.op == "GetItem" && c.keys.iter().any(|(k, _)| k == record_pk)
}

fn per_key(calls: &[Call], record_pk: &str) -> BTreeMap<String, KeyUse> {
    let mut keys: BTreeMap<String, KeyUse> = BTreeMap::new();
    for c in calls.iter().filter(|c| !is_cache_refresh(c, record_pk)) {
        let share = 1.0 / c.keys.len().max(1) as f64;
        for (k, r, w) in c.per_key() {
            let u = keys.entry(k.to_string()).or_default();
            u.read += r;
            u.write += w;
            u.requests += share;
            let by = u.by.entry((c.tag.unwrap_or("other").to_string(), c.op.clone())).or_default();
            by.0 += r;
            by.1 += w;
        }
    }
    keys
}

/// What the workers saw: counts, and every message id claimed (a second claim of one id would break
/// exclusivity; the bench reports it rather than assume it away).
#[derive(Default)]
struct Seen {
    posted: usize,
    claimed: usize,
    deleted: usize,
    empty_claims: usize,
    /// Delete answers other than 204, by status.
    delete_failures: BTreeMap<u16, usize>,
    claimed_ids: std::collections::HashSet<String>,
    claimed_twice: usize,
}

/// One worker: rounds of post 10 (the next producer's Client-ID), claim 10, delete each claimed message.
async fn worker(
    caller: &Caller,
    queue: &str,
    producers: &[String],
    next: &AtomicUsize,
    rounds: usize,
    seen: &Mutex<Seen>,
) {
    let doc = setup::post_doc(10, 3600);
    let claim = json!({"ttl": 300, "grace": 60});
    loop {
        let r = next.fetch_add(1, Ordering::SeqCst);
        if r >= rounds {
            return;
        }
        let p = caller.with_client_id(&producers[r % producers.len()]);
        let path = format!("/v2/queues/{queue}/messages");
        TAG.scope("post", p.expect(Method::POST, &path, Some(&doc), &[201])).await;
        let path = format!("/v2/queues/{queue}/claims?limit=10");
        let resp = TAG.scope("claim", caller.expect(Method::POST, &path, Some(&claim), &[201, 204])).await;
        let got = hrefs(&resp);
        {
            let mut s = seen.lock().expect("seen lock");
            s.posted += 10;
            s.claimed += got.len();
            s.empty_claims += got.is_empty() as usize;
            for h in &got {
                if !s.claimed_ids.insert(id_of(h)) {
                    s.claimed_twice += 1;
                }
            }
        }
        for h in got {
            // With a 300 s claim every delete should answer 204; anything else is counted and reported.
            let status = TAG.scope("delete", caller.send(Method::DELETE, &h, None)).await.status.as_u16();
            let mut s = seen.lock().expect("seen lock");
            if status == 204 {
                s.deleted += 1;
            } else {
                *s.delete_failures.entry(status).or_default() += 1;
            }
        }
    }
}

fn short_key(pk: &str, gen: &str, project: &str) -> String {
    pk.replace(gen, "{gen}").replace(project, "{project}")
}

pub async fn run(o: Options) {
    let recorder = Recorder::default();
    let app = setup::app(setup::client(Some(recorder.clone())).await).await;
    let project = format!("heat-{:08x}", rand::random::<u32>());
    let queue = "heat";
    let caller = Caller::new(&app, &project, &producer_id(0));
    let producers: Vec<String> = (0..o.producers).map(producer_id).collect();

    recorder.pause(true);
    caller.expect(Method::PUT, &format!("/v2/queues/{queue}"), Some(&json!({"_shards": o.shards})), &[201]).await;
    let pid = ProjectId::parse(&project).expect("project");
    let qn = QueueName::parse(queue).expect("queue");
    let info = app.store.fresh_queue_info(&pid, &qn).await.expect("queue record").expect("queue exists");
    let mut per_shard = vec![0usize; o.shards as usize];
    for p in &producers {
        per_shard[zaqar::store::messages::shard_for_client(Some(p), o.shards) as usize] += 1;
    }
    // The backlog: posts of 10 by the producers in turn, as in the measured phase.
    let backlog_posts = (o.backlog_per_shard * o.shards as usize).div_ceil(10);
    for i in 0..backlog_posts {
        let p = caller.with_client_id(&producers[i % producers.len()]);
        p.expect(Method::POST, &format!("/v2/queues/{queue}/messages"), Some(&setup::post_doc(10, 3600)), &[201]).await;
    }
    recorder.clear();
    recorder.pause(false);

    let t0 = Instant::now();
    let next = AtomicUsize::new(0);
    let seen = Mutex::new(Seen::default());
    let workers = (0..o.concurrency).map(|_| worker(&caller, queue, &producers, &next, o.rounds, &seen));
    futures::future::join_all(workers).await;
    let wall = t0.elapsed();
    recorder.pause(true);
    let calls = recorder.take();
    let seen = seen.into_inner().expect("seen lock");
    let lifecycles = seen.posted as f64;

    let record_pk = zaqar::keys::project_pk(&pid);
    let keys = per_key(&calls, &record_pk);
    let refreshes = calls.iter().filter(|c| is_cache_refresh(c, &record_pk)).count();
    let record_read = {
        let reads: Vec<&Call> =
            calls.iter().filter(|c| c.op == "GetItem" && c.keys.iter().any(|k| k.0 == record_pk)).collect();
        if reads.is_empty() {
            1.0
        } else {
            reads.iter().map(|c| c.read_units).sum::<f64>() / reads.len() as f64
        }
    };
    // Per key: (key, projected WCU/s, projected RCU/s, use).
    let mut rows: Vec<(String, f64, f64, &KeyUse)> = keys
        .iter()
        .map(|(k, u)| {
            let cache = if *k == record_pk { f64::from(o.containers) * record_read } else { 0.0 };
            (k.clone(), u.write / lifecycles * o.rate, u.read / lifecycles * o.rate + cache, u)
        })
        .collect();
    rows.sort_by(|a, b| {
        let heat = |r: &(String, f64, f64, &KeyUse)| (r.1 / 1000.0).max(r.2 / 3000.0);
        heat(b).total_cmp(&heat(a))
    });

    let total_w: f64 = calls.iter().map(|c| c.write_units).sum();
    let total_r: f64 = calls.iter().map(|c| c.read_units).sum();
    let failed = calls.iter().filter(|c| c.failed_condition).count();
    let errors = calls.iter().filter(|c| c.error).count();
    let mut md = String::new();
    let mut w = |line: String| {
        md.push_str(&line);
        md.push('\n');
    };
    w(format!("### `--rate {} --shards {}`", o.rate, o.shards));
    w(String::new());
    w(format!("Measured {} on {}.", today(), machine()));
    w(format!("Command: `{}`.", command()));
    w(String::new());
    w(format!(
        "Queue with `_shards: {}`; {} producers (Client-IDs; per shard: {:?}); backlog {} messages per shard \
         before measuring; {} concurrent workers x post 10 / claim 10 / delete each; {} rounds. Measured phase: \
         {} lifecycles (messages posted), {} claimed ({} claimed twice), {} deleted (other answers: {:?}), {} \
         empty claims, {} DynamoDB requests ({} failed conditional writes counted 1 WCU each, {} other errors), \
         {:.1} s of wall time (not used).",
        o.shards,
        o.producers,
        per_shard,
        o.backlog_per_shard,
        o.concurrency,
        o.rounds,
        seen.posted,
        seen.claimed,
        seen.claimed_twice,
        seen.deleted,
        seen.delete_failures,
        seen.empty_claims,
        calls.len(),
        failed,
        errors,
        wall.as_secs_f64()
    ));
    w(format!(
        "Per lifecycle: {:.2} WCU, {:.2} RCU, {:.2} requests (all measured calls). Queue-record reads: the \
         post and claim handlers read it fresh on every request (projected with the rate); the cached reads \
         of the delete path ({} seen, following wall time) are replaced by {} containers x 1 refresh/s x {:.1} \
         RCU on `P#{{project}}`.",
        total_w / lifecycles,
        total_r / lifecycles,
        calls.len() as f64 / lifecycles,
        refreshes,
        o.containers,
        record_read
    ));
    w(String::new());
    w(format!(
        "| partition key | holds | WCU / lifecycle | RCU / lifecycle | WCU/s at {r} | RCU/s at {r} | of key limit | \
         largest sources (API op / DynamoDB op: units per lifecycle) |",
        r = o.rate
    ));
    w("|---|---|---|---|---|---|---|---|".into());
    for (k, wps, rps, u) in rows.iter().take(12) {
        let mut src: Vec<(&(String, String), f64)> = u.by.iter().map(|(k, (r, w))| (k, r + w)).collect();
        src.sort_by(|a, b| b.1.total_cmp(&a.1));
        let src: Vec<String> = src
            .iter()
            .take(3)
            .map(|((tag, op), _)| {
                let (r, w) = u.by[&(tag.clone(), op.clone())];
                let mut s = format!("{tag} / {op}:");
                if w > 0.0 {
                    s += &format!(" {:.2} W", w / lifecycles);
                }
                if r > 0.0 {
                    s += &format!(" {:.2} R", r / lifecycles);
                }
                s
            })
            .collect();
        w(format!(
            "| `{}` | {} | {:.3} | {:.3} | {:.0} | {:.0} | {:.0} % | {} |",
            short_key(k, &info.record.gen, &project),
            key_kind(k),
            u.write / lifecycles,
            u.read / lifecycles,
            wps,
            rps,
            100.0 * (wps / 1000.0).max(rps / 3000.0),
            src.join("; ")
        ));
    }
    if rows.len() > 12 {
        w(format!("| ({} more keys) | | | | | | | |", rows.len() - 12));
    }
    let hot_w = rows.iter().max_by(|a, b| a.1.total_cmp(&b.1)).map(|r| (r.0.clone(), r.1)).unwrap_or_default();
    let hot_r = rows.iter().max_by(|a, b| a.2.total_cmp(&b.2)).map(|r| (r.0.clone(), r.2)).unwrap_or_default();
    w(String::new());
    w(format!(
        "Hottest by writes: `{}` ({:.0} WCU/s); by reads: `{}` ({:.0} RCU/s). Limits per key: 1,000 WCU/s, 3,000 RCU/s.",
        short_key(&hot_w.0, &info.record.gen, &project),
        hot_w.1,
        short_key(&hot_r.0, &info.record.gen, &project),
        hot_r.1
    ));
    // The rate at which the first key reaches a limit, with the same spread over keys.
    let ceiling = rows
        .iter()
        .map(|(k, wps, rps, _)| {
            let cache = if *k == record_pk { f64::from(o.containers) * record_read } else { 0.0 };
            let by_w = if *wps > 0.0 { 1000.0 * o.rate / wps } else { f64::INFINITY };
            let by_r = if *rps > cache { (3000.0 - cache).max(0.0) * o.rate / (rps - cache) } else { f64::INFINITY };
            (by_w.min(by_r), k.clone())
        })
        .min_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((limit, k)) = ceiling {
        w(format!(
            "With this spread the first key to reach its limit is `{}`, at about {:.0} lifecycles/s.",
            short_key(&k, &info.record.gen, &project),
            limit
        ));
    }
    w(String::new());
    w(format!("hottest partition key at {} lifecycles/s: {:.0} WCU/s, {:.0} RCU/s", o.rate, hot_w.1, hot_r.1));
    print!("{md}");
    if let Some(path) = &o.record {
        let title = "# Partition heat: units per partition key, projected to a message rate\n\n\
                     Written by `bench/heat` (see README.md). Each section is one run; its last line is the \
                     benchmark's verdict line.";
        record_section(path, title, &format!("heat rate={} shards={}", o.rate, o.shards), &md)
            .expect("write the record");
        eprintln!("heat: recorded in {path}");
    }
}
