//! Concurrency against DynamoDB Local: many claimers draining one queue (exclusive delivery, nothing
//! lost) and concurrent producers watched by a marker-paging observer (docs/api.md#messages-ordering).
//!
//! Every task has its own `App` (its own DynamoDB client and clock), as separate Lambda instances would.

use harness::*;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use zaqar::App;

/// A small deterministic PRNG (xorshift) so batch sizes vary without extra dependencies.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

fn client<'a>(app: &'a App, project: &str, client_id: &str) -> Client<'a> {
    Client { app, project: project.to_string(), client_id: client_id.to_string() }
}

async fn post_batch(c: &Client<'_>, q: &str, bodies: Vec<Value>) -> Vec<String> {
    let msgs: Vec<Value> = bodies.into_iter().map(|b| json!({"body": b, "ttl": 3600})).collect();
    let r = c.post(&format!("/v2/queues/{q}/messages"), &json!({ "messages": msgs }).to_string()).await;
    let (s, v) = sj(&r);
    assert_eq!(s, 201, "post failed: {v}");
    v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().rsplit('/').next().unwrap().to_string())
        .collect()
}

#[derive(Default)]
struct Ledger {
    /// message id → every claim id it was delivered under.
    deliveries: HashMap<String, Vec<String>>,
    /// message id → successful deletes (204 while we held its claim).
    deletes: HashMap<String, u32>,
    claims: u64,
    empty_claims: u64,
    errors: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_drain_exactly_once() {
    const MESSAGES: usize = 2000;
    const CLAIMERS: usize = 16;
    const PRODUCERS: usize = 4;
    let project = project();
    let started = Instant::now();

    // Producers post everything in batches of 10-20 (each with its own App).
    let per_producer = MESSAGES / PRODUCERS;
    let producers = (0..PRODUCERS).map(|p| {
        let project = project.clone();
        tokio::spawn(async move {
            let app = app().await;
            let c = client(&app, &project, CLIENT);
            let mut rng = Rng(0x9e3779b97f4a7c15 ^ (p as u64 + 1));
            let mut ids = Vec::with_capacity(per_producer);
            while ids.len() < per_producer {
                let n = rng.range(10, 20).min(per_producer - ids.len());
                let bodies = (0..n).map(|i| json!({"p": p, "i": ids.len() + i})).collect();
                ids.extend(post_batch(&c, "drain", bodies).await);
            }
            ids
        })
    });
    let mut posted = Vec::with_capacity(MESSAGES);
    for p in futures::future::join_all(producers).await {
        posted.extend(p.unwrap());
    }
    assert_eq!(posted.len(), MESSAGES);
    assert_eq!(posted.iter().collect::<HashSet<_>>().len(), MESSAGES, "message ids are unique");
    let posted_at = started.elapsed();

    // Claimers: claim(limit 10, long ttl) + delete-with-claim until nothing is claimable.
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let claimers = (0..CLAIMERS).map(|w| {
        let project = project.clone();
        let ledger = ledger.clone();
        tokio::spawn(async move {
            let app = app().await;
            let c = client(&app, &project, OTHER_CLIENT);
            let mut idle = 0;
            loop {
                let r = c.post("/v2/queues/drain/claims?limit=10", r#"{"ttl": 3600, "grace": 60}"#).await;
                match r.status.as_u16() {
                    204 => {
                        ledger.lock().unwrap().empty_claims += 1;
                        // Another worker may still be between claim and delete; a couple of retries
                        // make sure nothing claimable is left behind.
                        idle += 1;
                        if idle >= 3 {
                            return;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        continue;
                    }
                    201 => idle = 0,
                    s => {
                        ledger
                            .lock()
                            .unwrap()
                            .errors
                            .push(format!("worker {w}: claim {s}: {}", String::from_utf8_lossy(&r.body)));
                        continue;
                    }
                }
                let cid = r.header_value("location").unwrap().rsplit('/').next().unwrap().to_string();
                let body = r.json_body();
                let ids: Vec<String> = body["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["id"].as_str().unwrap().to_string())
                    .collect();
                {
                    let mut l = ledger.lock().unwrap();
                    l.claims += 1;
                    for id in &ids {
                        l.deliveries.entry(id.clone()).or_default().push(cid.clone());
                    }
                }
                for id in ids {
                    let r = c.delete(&format!("/v2/queues/drain/messages/{id}?claim_id={cid}")).await;
                    let mut l = ledger.lock().unwrap();
                    if r.status == 204 {
                        *l.deletes.entry(id).or_default() += 1;
                    } else {
                        l.errors.push(format!(
                            "worker {w}: delete {id}: {} {}",
                            r.status,
                            String::from_utf8_lossy(&r.body)
                        ));
                    }
                }
            }
        })
    });
    for h in futures::future::join_all(claimers).await {
        h.unwrap();
    }
    let elapsed = started.elapsed();

    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    let delivered: usize = ledger.deliveries.values().map(Vec::len).sum();
    let duplicates: Vec<(&String, &Vec<String>)> =
        ledger.deliveries.iter().filter(|(_, cids)| cids.len() > 1).collect();
    let deleted: usize = ledger.deletes.values().map(|n| *n as usize).sum();
    let lost: Vec<&String> = posted.iter().filter(|id| !ledger.deletes.contains_key(*id)).collect();
    let unknown = ledger.deliveries.keys().filter(|id| !posted.contains(id)).count();
    println!(
        "concurrency: posted={} claimed={} deleted={} duplicates={} lost={} claims={} empty_claims={} errors={} \
         claimers={CLAIMERS} post_elapsed={:.1}s elapsed={:.1}s",
        posted.len(),
        delivered,
        deleted,
        duplicates.len(),
        lost.len(),
        ledger.claims,
        ledger.empty_claims,
        ledger.errors.len(),
        posted_at.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    assert!(ledger.errors.is_empty(), "errors: {:?}", &ledger.errors[..ledger.errors.len().min(5)]);
    assert!(
        duplicates.is_empty(),
        "messages delivered to two live claims: {:?}",
        &duplicates[..duplicates.len().min(5)]
    );
    assert_eq!(unknown, 0);
    assert!(lost.is_empty(), "{} messages never deleted, e.g. {:?}", lost.len(), &lost[..lost.len().min(5)]);
    assert_eq!(delivered, MESSAGES);
    assert_eq!(deleted, MESSAGES, "every message deleted exactly once");
    assert!(ledger.deletes.values().all(|n| *n == 1));

    // The queue is empty afterwards.
    let app = app().await;
    let c = client(&app, &project, CLIENT);
    let (_, stats) = sj(&c.get("/v2/queues/drain/stats").await);
    assert_eq!(stats["messages"], json!({"claimed": 0, "free": 0, "total": 0}));
    assert_eq!(c.post("/v2/queues/drain/claims", "{}").await.status, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_producers_fifo_observer() {
    const PRODUCERS: usize = 4;
    const BATCHES: usize = 25;
    let project = project();
    let started = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));

    // Make the queue exist before the observer starts.
    {
        let app = app().await;
        client(&app, &project, CLIENT).put("/v2/queues/fifo", None).await;
    }

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let project = project.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let app = app().await;
                let c = client(&app, &project, CLIENT);
                let mut rng = Rng(0xdeadbeefcafef00d ^ ((p as u64 + 1) << 20));
                let mut batches = Vec::with_capacity(BATCHES);
                for b in 0..BATCHES {
                    let n = rng.range(1, 20);
                    let bodies = (0..n).map(|i| json!({"p": p, "b": b, "i": i, "n": n})).collect();
                    let ids = post_batch(&c, "fifo", bodies).await;
                    batches.push(ids);
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                batches
            })
        })
        .collect();

    // The observer pages with markers (another client, default echo) while the producers run.
    let observer = {
        let project = project.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let app = app().await;
            let c = client(&app, &project, OTHER_CLIENT);
            let mut seen: Vec<(String, Value)> = Vec::new();
            let mut href = "/v2/queues/fifo/messages?limit=20".to_string();
            let mut empty_after_done = 0;
            let mut pages = 0u64;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst) == PRODUCERS;
                let (s, body) = sj(&c.get(&href).await);
                assert_eq!(s, 200, "{body}");
                pages += 1;
                let msgs = body["messages"].as_array().unwrap();
                if msgs.is_empty() {
                    assert_eq!(body["links"], json!([]));
                    if finished {
                        empty_after_done += 1;
                        if empty_after_done >= 2 {
                            return (seen, pages);
                        }
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    continue;
                }
                for m in msgs {
                    seen.push((m["id"].as_str().unwrap().to_string(), m["body"].clone()));
                }
                href = body["links"][0]["href"].as_str().unwrap().to_string();
            }
        })
    };

    let mut batches: Vec<Vec<String>> = Vec::new();
    let mut batch_of: HashMap<String, (usize, usize)> = HashMap::new();
    for (p, h) in futures::future::join_all(producers).await.into_iter().enumerate() {
        for (b, ids) in h.unwrap().into_iter().enumerate() {
            for id in &ids {
                batch_of.insert(id.clone(), (p, b));
            }
            batches.push(ids);
        }
    }
    let (seen, pages) = observer.await.unwrap();
    let total: usize = batches.iter().map(Vec::len).sum();

    // Every message exactly once.
    let ids: Vec<&String> = seen.iter().map(|(id, _)| id).collect();
    let unique: HashSet<&String> = ids.iter().copied().collect();
    println!(
        "fifo observer: producers={PRODUCERS} batches={} messages={total} observed={} unique={} pages={pages} elapsed={:.1}s",
        batches.len(),
        seen.len(),
        unique.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(unique.len(), seen.len(), "a message was observed twice");
    assert_eq!(seen.len(), total, "observer missed messages");
    // Each batch contiguous, whole and in order; each producer's batches in posting order.
    let mut pos = 0;
    let mut last_batch: HashMap<usize, usize> = HashMap::new();
    while pos < seen.len() {
        let (p, b) = batch_of[&seen[pos].0];
        let body = &seen[pos].1;
        let n = body["n"].as_u64().unwrap() as usize;
        assert_eq!((body["p"].as_u64(), body["b"].as_u64()), (Some(p as u64), Some(b as u64)));
        for i in 0..n {
            let (id, body) = &seen[pos + i];
            assert_eq!(batch_of[id], (p, b), "batch ({p},{b}) interleaved with another at position {}", pos + i);
            assert_eq!(body["i"].as_u64(), Some(i as u64), "batch ({p},{b}) out of order");
        }
        if let Some(prev) = last_batch.insert(p, b) {
            assert!(b > prev, "producer {p}: batch {b} observed after batch {prev}");
        }
        pos += n;
    }
}
