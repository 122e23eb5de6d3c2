//! Backlogs (issue 8): the maintained counts behind `GET .../stats` stay exact under concurrency, after
//! expiry (within one expiry bucket), across claims, renewals, releases and lifetime extension; queue
//! delete and purge are a handful of requests whatever the depth and leave nothing behind; a run of
//! expired messages at the head costs the first reader, not every reader.
//!
//! Time-dependent checks read the exact instants the store recorded (`claim_until_ms`, `expires_ms` of
//! the raw item) and compare every answer against them with the clock read before and after the call:
//! an answer is asserted exactly unless the call straddled the instant, so the tests are deterministic
//! on a loaded machine without sleeping.

mod support;

use harness::*;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use support::*;
use zaqar::keys;

// ---------------------------------------------------------------------------------------------
// Counts under concurrent producers and consumers

/// What the consumers did, as the truth the stats must match.
#[derive(Default)]
struct Ledger {
    /// Removed by delete-with-claim, bulk delete by ids, or pop (each id at most once).
    removed: Vec<String>,
    /// Messages under claims the consumers kept (neither deleted nor released).
    kept: HashSet<String>,
    claims: usize,
    released: usize,
    popped: usize,
    errors: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counts_equal_the_truth_after_concurrent_producers_and_consumers() {
    const PRODUCERS: usize = 4;
    const PER_PRODUCER: usize = 250;
    const CONSUMERS: usize = 8;
    const OPS: usize = 10;
    let started = Instant::now();
    let project = project();
    {
        let app = app().await;
        assert_eq!(client(&app, &project, CLIENT).put("/v2/queues/busy", None).await.status, 201);
    }

    let producers = (0..PRODUCERS).map(|p| {
        let project = project.clone();
        tokio::spawn(async move {
            let app = app().await;
            let c = client(&app, &project, &client_id(p));
            let mut rng = Rng(0x51f1_5eed ^ ((p as u64 + 1) << 32));
            let (mut ids, mut refused) = (Vec::with_capacity(PER_PRODUCER), 0);
            while ids.len() < PER_PRODUCER {
                let n = rng.range(20, 50).min(PER_PRODUCER - ids.len());
                // A post refused with 503 (forced out after its lease) is retried, as a client would;
                // its attempt number in the body shows that nothing of the refused attempt surfaces.
                let msgs: Vec<Value> = (0..n)
                    .map(|i| json!({"body": {"p": p, "i": ids.len() + i, "try": refused}, "ttl": 3600}))
                    .collect();
                let r = c.post("/v2/queues/busy/messages", &json!({ "messages": msgs }).to_string()).await;
                match r.status.as_u16() {
                    201 => ids.extend(ids_of_resources(&r.json_body())),
                    503 => refused += 1,
                    s => panic!("post: {s} {}", text(&r)),
                }
            }
            (ids, refused)
        })
    });
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let consumers = (0..CONSUMERS).map(|w| {
        let (project, ledger) = (project.clone(), ledger.clone());
        tokio::spawn(async move {
            let app = app().await;
            let c = client(&app, &project, &client_id(100 + w));
            let mut rng = Rng(0xc0ff_ee00 ^ ((w as u64 + 1) << 24));
            // OPS operations that found messages; empty claims (producers behind) are retried, boundedly.
            let (mut done, mut attempts) = (0, 0);
            while done < OPS && attempts < 40 * OPS {
                attempts += 1;
                if rng.range(0, 9) >= 8 {
                    let n = rng.range(1, 5);
                    let (s, body) = sj(&c.delete(&format!("/v2/queues/busy/messages?pop={n}")).await);
                    assert_eq!(s, 200, "pop: {body}");
                    let popped = msg_ids(body["messages"].as_array().unwrap());
                    done += usize::from(!popped.is_empty());
                    let mut l = ledger.lock().unwrap();
                    l.popped += popped.len();
                    l.removed.extend(popped);
                    continue;
                }
                let Some((cid, msgs)) = try_claim(&c, "busy", rng.range(5, 10), 3600, 60).await else {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                };
                done += 1;
                let ids = msg_ids(&msgs);
                ledger.lock().unwrap().claims += 1;
                match rng.range(0, 19) {
                    // Delete each message under the claim.
                    0..=9 => {
                        for id in ids {
                            let r = c.delete(&format!("/v2/queues/busy/messages/{id}?claim_id={cid}")).await;
                            let mut l = ledger.lock().unwrap();
                            if r.status == 204 {
                                l.removed.push(id);
                            } else {
                                l.errors.push(format!("delete {id}: {} {}", r.status, text(&r)));
                            }
                        }
                    }
                    // Release: the messages go back to the queue.
                    10..=12 => {
                        let r = c.delete(&format!("/v2/queues/busy/claims/{cid}")).await;
                        let mut l = ledger.lock().unwrap();
                        if r.status == 204 {
                            l.released += 1;
                        } else {
                            l.errors.push(format!("release {cid}: {} {}", r.status, text(&r)));
                        }
                    }
                    // Bulk delete by ids (claims do not matter to it).
                    13..=15 => {
                        let r = c.delete(&format!("/v2/queues/busy/messages?ids={}", ids.join(","))).await;
                        let mut l = ledger.lock().unwrap();
                        if r.status == 204 {
                            l.removed.extend(ids);
                        } else {
                            l.errors.push(format!("bulk delete: {} {}", r.status, text(&r)));
                        }
                    }
                    // Delete the first half, keep the rest claimed.
                    _ => {
                        let half = ids.len() / 2;
                        for id in &ids[..half] {
                            let r = c.delete(&format!("/v2/queues/busy/messages/{id}?claim_id={cid}")).await;
                            let mut l = ledger.lock().unwrap();
                            if r.status == 204 {
                                l.removed.push(id.clone());
                            } else {
                                l.errors.push(format!("delete {id}: {} {}", r.status, text(&r)));
                            }
                        }
                        ledger.lock().unwrap().kept.extend(ids[half..].iter().cloned());
                    }
                }
            }
        })
    });
    let producers = futures::future::join_all(producers);
    let consumers = futures::future::join_all(consumers);
    let (posted, done) = futures::join!(producers, consumers);
    done.into_iter().for_each(|r| r.unwrap());
    let posted: Vec<(Vec<String>, usize)> = posted.into_iter().map(Result::unwrap).collect();
    let refused: usize = posted.iter().map(|(_, r)| r).sum();
    let posted: Vec<String> = posted.into_iter().flat_map(|(ids, _)| ids).collect();
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    assert!(ledger.errors.is_empty(), "consumer errors: {:?}", &ledger.errors[..ledger.errors.len().min(5)]);

    // The truth: posted minus removed; claimed = what the kept claims hold.
    let removed: HashSet<&String> = ledger.removed.iter().collect();
    assert_eq!(removed.len(), ledger.removed.len(), "a message was removed twice");
    assert!(removed.iter().all(|id| posted.contains(id)), "a consumer got a message of a refused post");
    assert_eq!(posted.iter().collect::<HashSet<_>>().len(), PRODUCERS * PER_PRODUCER);
    let remaining: BTreeSet<&String> = posted.iter().filter(|id| !removed.contains(id)).collect();
    assert!(ledger.kept.iter().all(|id| remaining.contains(id)), "a kept message was removed");

    let app = app().await;
    let c = client(&app, &project, CLIENT);
    // Posts forced out after their lease (written again by the store) leave their first range as a hole.
    let holes = raw_strings(&raw_head(&app, &project, "busy", 0).await.unwrap(), "holes").len();
    let (total, claimed, free, _) = stats(&c, "busy").await;
    let (listed, pages) = list_pages(&c, "/v2/queues/busy/messages?include_claimed=true&echo=true&limit=20", 200).await;
    let listed_ids: BTreeSet<String> = msg_ids(&listed).into_iter().collect();
    let listed_claimed: HashSet<String> = listed
        .iter()
        .filter(|m| m["href"].as_str().unwrap().contains("claim_id="))
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    println!(
        "counts under concurrency: posted={} removed={} (popped {}) claims={} released={} kept={} | stats total={total} \
         claimed={claimed} free={free} | listed={} in {pages} pages | {:.1}s",
        posted.len(),
        removed.len(),
        ledger.popped,
        ledger.claims,
        ledger.released,
        ledger.kept.len(),
        listed_ids.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(listed.len(), listed_ids.len(), "the listing repeated a message");
    println!("counts under concurrency: posts refused with 503 and retried: {refused}; forced-out ranges: {holes}");
    assert_eq!(listed_ids.iter().collect::<BTreeSet<_>>(), remaining, "listing = posted - removed");
    assert_eq!(listed_claimed, ledger.kept, "claimed in the listing = held by the kept claims");
    assert_eq!(total as usize, remaining.len(), "stats total");
    assert_eq!(claimed as usize, ledger.kept.len(), "stats claimed");
    assert_eq!(free as usize, remaining.len() - ledger.kept.len(), "stats free");
    // The mix really exercised every path and left both claimed and free messages.
    assert!(ledger.released > 0 && ledger.popped > 0 && !ledger.kept.is_empty() && free > 0);
}

// ---------------------------------------------------------------------------------------------
// Counts after expiry and at claim ends

/// The exact instants one message carries: expiry and the end of its expiry bucket (ms).
#[derive(Debug, Clone, Copy)]
struct Life {
    expires_ms: i64,
    bucket_end_ms: i64,
    width_ms: i64,
}

async fn life_of(app: &zaqar::App, project: &str, q: &str, id: &str) -> Life {
    let item = raw_message(app, project, q, id).await.expect("message item");
    let expires_ms = raw_i64(&item, "expires_ms").unwrap();
    let ttl_s = raw_i64(&item, "ttl_s").unwrap();
    let width_ms = if ttl_s <= 3600 {
        60_000
    } else if ttl_s <= 86_400 {
        900_000
    } else {
        3_600_000
    };
    let bucket_end_ms = keys::expiry_bucket(expires_ms, ttl_s) * 1000;
    assert!(bucket_end_ms >= expires_ms && bucket_end_ms <= expires_ms + width_ms, "documented bound of the bucket");
    Life { expires_ms, bucket_end_ms, width_ms }
}

/// Stats `total` and the listed ids, each checked against the messages' instants with the clock read
/// before and after the calls: a message must count while alive at both reads, must not once its
/// bucket had ended at both reads (and never later than one bucket width after expiry), and may
/// either way in between. Listing shows exactly the live ones. Returns (total, undecided messages).
async fn check_expiry(c: &Client<'_>, q: &str, lives: &[(String, Life)]) -> (u64, usize) {
    let before = c.app.store.now_ms();
    let (total, _, _, _) = stats(c, q).await;
    let (listed, _) =
        list_pages(c, &format!("/v2/queues/{q}/messages?include_claimed=true&echo=true&limit=20"), 50).await;
    let after = c.app.store.now_ms();
    let listed: HashSet<String> = msg_ids(&listed).into_iter().collect();
    let (mut must, mut may) = (0u64, 0u64);
    for (id, l) in lives {
        if after < l.expires_ms {
            must += 1;
            assert!(listed.contains(id), "{id} is alive but not listed");
        } else if before >= l.expires_ms {
            assert!(!listed.contains(id), "{id} expired but still listed");
        }
        let gone = before >= l.bucket_end_ms.min(l.expires_ms + l.width_ms);
        if !gone && after >= l.expires_ms {
            may += 1;
        }
    }
    assert!(
        (must..=must + may).contains(&total),
        "total {total} outside [{must}, {}] at clock {before}..{after}",
        must + may
    );
    (total, may as usize)
}

/// Moves the manual clock forward by whole seconds until it reads at least `target_ms` (at most 1 s more).
fn advance_to(app: &zaqar::App, target_ms: i64) {
    let now = app.store.now_ms();
    if target_ms > now {
        app.store.clock.advance_secs((target_ms - now + 999) / 1000);
    }
}

#[tokio::test]
async fn expired_messages_leave_total_within_one_bucket() {
    let app = app().await;
    let c = Client::new(&app);
    // One post, so each group shares its expiry (and bucket): 60 s buckets up to an hour, 15 min up to a
    // day, an hour beyond.
    let ttls = [60, 60, 60, 600, 600, 3600, 7200, 90_000];
    let ids = post_msgs(&c, "exp", ttls.iter().enumerate().map(|(i, t)| json!({"body": i, "ttl": t})).collect()).await;
    let mut lives = Vec::new();
    for id in &ids {
        lives.push((id.clone(), life_of(&app, &c.project, "exp", id).await));
    }
    assert_eq!(check_expiry(&c, "exp", &lives).await, (8, 0));
    let mut undecided_seen = 0;
    // Walk through each expiry: just after it (the bucket may still count it), then past its bucket.
    let mut points: Vec<(i64, Option<u64>)> = vec![];
    for (i, (_, l)) in lives.iter().enumerate() {
        let alive_after = ttls.iter().filter(|t| **t > ttls[i]).count() as u64;
        points.push((l.expires_ms + 1, None));
        points.push((l.bucket_end_ms, Some(alive_after)));
        points.push((l.expires_ms + l.width_ms, Some(alive_after)));
    }
    points.sort_by_key(|(t, _)| *t);
    points.dedup_by_key(|(t, _)| *t);
    for (t, expect) in points {
        if t < app.store.now_ms() {
            continue;
        }
        advance_to(&app, t);
        let (total, undecided) = check_expiry(&c, "exp", &lives).await;
        undecided_seen += undecided;
        if let Some(e) = expect {
            assert_eq!(total, e, "past the bucket end the count is exact");
        }
    }
    println!("expiry: walked every bucket; undecided (expired, bucket not ended) checks: {undecided_seen}");
    assert_eq!(check_expiry(&c, "exp", &lives).await, (0, 0));
}

/// `claimed` at this moment, checked against claim ends: a message counts as claimed iff its claim had
/// not ended at the read after the call, and not iff it had ended before the call.
async fn check_claimed(c: &Client<'_>, q: &str, ends: &[i64]) -> (u64, bool) {
    let before = c.app.store.now_ms();
    let (_, claimed, _, _) = stats(c, q).await;
    let after = c.app.store.now_ms();
    let must = ends.iter().filter(|u| after < **u).count() as u64;
    let may = ends.iter().filter(|u| before < **u && after >= **u).count() as u64;
    assert!((must..=must + may).contains(&claimed), "claimed {claimed} outside [{must}, {}]", must + may);
    (claimed, may == 0)
}

async fn claim_until(app: &zaqar::App, project: &str, q: &str, id: &str) -> i64 {
    let item = raw_message(app, project, q, id).await.expect("message item");
    raw_i64(&item, "claim_until_ms").expect("claimed")
}

/// Steps the clock one second at a time from 2 s before `end` to 2 s after it, checking `claimed` each
/// time; returns how many checks were decided on each side of `end`.
async fn walk_past(c: &Client<'_>, q: &str, end: i64, ends: &[i64]) -> (usize, usize) {
    advance_to(c.app, end - 2000);
    let (mut before, mut after) = (0, 0);
    while c.app.store.now_ms() < end + 2000 {
        let t0 = c.app.store.now_ms();
        let (_, decided) = check_claimed(c, q, ends).await;
        if decided {
            if c.app.store.now_ms() < end {
                before += 1;
            } else if t0 >= end {
                after += 1;
            }
        }
        c.app.store.clock.advance_secs(1);
    }
    (before, after)
}

#[tokio::test]
async fn claimed_counts_follow_claim_ends_renewals_and_releases() {
    // Claims of single messages, whose claim ends are on the messages (`claim_until` reads them there);
    // range claims keep theirs on the head (tests/it/claims.rs).
    let mut app = app().await;
    app.store.range_claims = false;
    let c = Client::new(&app);
    let ids = post_batches(&c, "cl", 8, 3600, 8, "cl").await;
    let (a, a_msgs) = try_claim(&c, "cl", 2, 60, 60).await.unwrap();
    let (b, b_msgs) = try_claim(&c, "cl", 2, 120, 60).await.unwrap();
    assert_eq!(msg_ids(&a_msgs), ids[..2]);
    assert_eq!(msg_ids(&b_msgs), ids[2..4]);
    let ua = claim_until(&app, &c.project, "cl", &ids[0]).await;
    let ub = claim_until(&app, &c.project, "cl", &ids[2]).await;
    assert_eq!((ua % 1000, ub % 1000), (0, 0), "claims end on whole seconds");
    assert_eq!(claim_until(&app, &c.project, "cl", &ids[1]).await, ua);
    let mut ends = vec![ua, ua, ub, ub];
    assert_eq!(check_claimed(&c, "cl", &ends).await, (4, true));

    // Claim A ends: claimed drops by 2 exactly then.
    let (before, after) = walk_past(&c, "cl", ua, &ends).await;
    assert!(before > 0 && after > 0, "decided checks on both sides of the claim end: {before}/{after}");
    assert_eq!(stats(&c, "cl").await.1, 2);
    assert_eq!(c.get(&format!("/v2/queues/cl/claims/{a}")).await.status, 404, "claim A ended");

    // Renew B to 300 s before it ends: its count moves to the new end.
    let r = c.patch(&format!("/v2/queues/cl/claims/{b}"), "application/json", r#"{"ttl": 300, "grace": 60}"#).await;
    assert_eq!(r.status, 204, "{}", text(&r));
    let ub2 = claim_until(&app, &c.project, "cl", &ids[2]).await;
    assert!(ub2 >= ub + 100_000 && ub2 % 1000 == 0);
    ends = vec![ua, ua, ub2, ub2];
    let (before, after) = walk_past(&c, "cl", ub, &ends).await;
    assert!(before > 0 && after > 0);
    assert_eq!(stats(&c, "cl").await.1, 2, "past the old end the renewed claim still counts");
    let (before, after) = walk_past(&c, "cl", ub2, &ends).await;
    assert!(before > 0 && after > 0);
    assert_eq!(stats(&c, "cl").await.1, 0);

    // A release drops the count at once; a delete under a claim drops both counts.
    let (cc, c_msgs) = try_claim(&c, "cl", 3, 300, 60).await.unwrap();
    assert_eq!(c_msgs.len(), 3);
    assert_eq!(stats(&c, "cl").await.1, 3);
    let first = c_msgs[0]["id"].as_str().unwrap();
    assert_eq!(c.delete(&format!("/v2/queues/cl/messages/{first}?claim_id={cc}")).await.status, 204);
    let (total, claimed, free, _) = stats(&c, "cl").await;
    assert_eq!((total, claimed, free), (7, 2, 5));
    assert_eq!(c.delete(&format!("/v2/queues/cl/claims/{cc}")).await.status, 204);
    let (total, claimed, free, _) = stats(&c, "cl").await;
    assert_eq!((total, claimed, free), (7, 0, 7));
}

#[tokio::test]
async fn a_claim_near_expiry_extends_the_message_and_keeps_it_counted() {
    let app = app().await;
    let c = Client::new(&app);
    let ids =
        post_msgs(&c, "ext", vec![json!({"body": "claimed", "ttl": 60}), json!({"body": "left", "ttl": 60})]).await;
    let original = life_of(&app, &c.project, "ext", &ids[0]).await;
    app.store.clock.advance_secs(50);
    let (cid, msgs) = try_claim(&c, "ext", 1, 120, 60).await.unwrap();
    assert_eq!(msg_ids(&msgs), ids[..1]);
    let until = claim_until(&app, &c.project, "ext", &ids[0]).await;
    let extended = life_of(&app, &c.project, "ext", &ids[0]).await;
    assert_eq!(extended.expires_ms, until + 60_000, "lifetime = claim end + grace");

    // Past the original expiry and its bucket: the unclaimed one is gone, the claimed one counts.
    advance_to(&app, original.bucket_end_ms + 1000);
    let (total, claimed, free, _) = stats(&c, "ext").await;
    assert_eq!((total, claimed, free), (1, 1, 0));
    assert_eq!(c.get(&format!("/v2/queues/ext/messages/{}", ids[0])).await.status, 200);
    assert_eq!(c.get(&format!("/v2/queues/ext/messages/{}", ids[1])).await.status, 404);
    let (s, claim) = sj(&c.get(&format!("/v2/queues/ext/claims/{cid}")).await);
    assert_eq!((s, msg_ids(claim["messages"].as_array().unwrap())), (200, ids[..1].to_vec()));

    // The claim ends: free until the extended lifetime ends, then gone.
    advance_to(&app, until + 1000);
    let (total, claimed, free, _) = stats(&c, "ext").await;
    assert_eq!((total, claimed, free), (1, 0, 1));
    let (listed, _) = list_pages(&c, "/v2/queues/ext/messages?echo=true", 5).await;
    assert_eq!(msg_ids(&listed), ids[..1]);
    advance_to(&app, extended.bucket_end_ms + 1000);
    assert_eq!(stats(&c, "ext").await.0, 0);
    assert_eq!(c.get(&format!("/v2/queues/ext/messages/{}", ids[0])).await.status, 404);
}

// ---------------------------------------------------------------------------------------------
// Delete / re-create and purge

async fn subscribe(c: &Client<'_>, q: &str, port: u16) -> String {
    let body = json!({"subscriber": format!("http://127.0.0.1:{port}/hook"), "ttl": 3600});
    let r = c.post(&format!("/v2/queues/{q}/subscriptions"), &body.to_string()).await;
    assert_eq!(r.status, 201, "{}", text(&r));
    r.json_body()["subscription_id"].as_str().unwrap().to_string()
}

async fn subscription_ids(c: &Client<'_>, q: &str) -> Vec<String> {
    let (s, body) = sj(&c.get(&format!("/v2/queues/{q}/subscriptions")).await);
    assert_eq!(s, 200, "{body}");
    body["subscriptions"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

/// A queue with `n` messages, a claim on 5 of them and two subscriptions.
async fn populated(c: &Client<'_>, q: &str, n: usize) -> (Vec<String>, String, Vec<String>) {
    let ids = post_batches(c, q, n, 3600, 100, q).await;
    let (cid, _) = try_claim(c, q, 5, 300, 60).await.unwrap();
    let subs = vec![subscribe(c, q, 18_101).await, subscribe(c, q, 18_102).await];
    assert_eq!(stats(c, q).await.0, n as u64);
    (ids, cid, subs)
}

/// Everything about the old generation is unreachable: messages, claims, counts.
async fn assert_messages_gone(c: &Client<'_>, q: &str, ids: &[String], cid: &str) {
    let (listed, _) = list_pages(c, &format!("/v2/queues/{q}/messages?include_claimed=true&echo=true"), 5).await;
    assert_eq!(listed, Vec::<Value>::new());
    let (total, claimed, free, m) = stats(c, q).await;
    assert_eq!((total, claimed, free), (0, 0, 0), "{m}");
    assert!(m.get("oldest").is_none());
    assert_eq!(c.post(&format!("/v2/queues/{q}/claims"), "{}").await.status, 204);
    for id in [&ids[0], &ids[ids.len() / 2], &ids[ids.len() - 1]] {
        assert_eq!(c.get(&format!("/v2/queues/{q}/messages/{id}")).await.status, 404, "old message {id}");
    }
    assert_eq!(c.get(&format!("/v2/queues/{q}/claims/{cid}")).await.status, 404, "old claim");
    let r = c.patch(&format!("/v2/queues/{q}/claims/{cid}"), "application/json", r#"{"ttl": 100}"#).await;
    assert_eq!(r.status, 404, "renewing an old claim");
    let r = c.get(&format!("/v2/queues/{q}/messages?ids={}", ids[..3].join(","))).await;
    assert!(r.status == 404 || r.json_body()["messages"] == json!([]), "{}", text(&r));
}

#[tokio::test]
async fn a_deleted_queue_recreated_is_empty_at_once_and_keeps_subscriptions() {
    let app = app().await;
    let c = Client::new(&app);
    let (ids, cid, subs) = populated(&c, "gone", 500).await;
    let before = app.store.usage.snapshot();
    assert_eq!(c.delete("/v2/queues/gone").await.status, 204);
    let used = app.store.usage.snapshot() - before;
    // One record delete and one head tombstone, whatever the depth (plus the route's own lookups).
    assert!(used.requests <= 4, "queue delete used {} requests", used.requests);
    assert_eq!(c.get("/v2/queues/gone/stats").await.status, 200);
    // Subscriptions outlive the queue, as in Zaqar.
    assert_eq!(subscription_ids(&c, "gone").await, subs);
    assert_eq!(c.put("/v2/queues/gone", None).await.status, 201);
    assert_messages_gone(&c, "gone", &ids, &cid).await;
    assert_eq!(subscription_ids(&c, "gone").await, subs);
    // The new generation works, and old messages never come back.
    let fresh = post_batches(&c, "gone", 3, 3600, 3, "fresh").await;
    let (listed, _) = list_pages(&c, "/v2/queues/gone/messages?echo=true&include_claimed=true", 5).await;
    assert_eq!(msg_ids(&listed), fresh);
    assert_eq!(stats(&c, "gone").await.0, 3);
    let (_, got) = try_claim(&c, "gone", 10, 60, 60).await.unwrap();
    assert_eq!(msg_ids(&got), fresh);

    // Deleted and re-created implicitly by a post: the same.
    assert_eq!(c.delete("/v2/queues/gone").await.status, 204);
    let again = post_batches(&c, "gone", 2, 3600, 2, "again").await;
    let (listed, _) = list_pages(&c, "/v2/queues/gone/messages?echo=true&include_claimed=true", 5).await;
    assert_eq!(msg_ids(&listed), again);
    let (total, claimed, _, _) = stats(&c, "gone").await;
    assert_eq!((total, claimed), (2, 0));
}

#[tokio::test]
async fn purge_removes_what_it_names_and_leaves_the_rest() {
    let app = app().await;
    let c = Client::new(&app);
    let cases: [(&str, Option<&str>, bool, bool); 4] = [
        ("pm", Some(r#"{"resource_types": ["messages"]}"#), true, false),
        ("ps", Some(r#"{"resource_types": ["subscriptions"]}"#), false, true),
        ("pb", Some(r#"{"resource_types": ["messages", "subscriptions"]}"#), true, true),
        ("pn", None, true, true),
    ];
    for (q, body, messages, subscriptions) in cases {
        let (ids, cid, subs) = populated(&c, q, 200).await;
        let before = app.store.usage.snapshot();
        let path = format!("/v2/queues/{q}/purge");
        let r = match body {
            Some(b) => c.post(&path, b).await,
            None => c.send(c.request(http::Method::POST, &path)).await,
        };
        assert_eq!(r.status, 204, "{q}: {}", text(&r));
        let used = app.store.usage.snapshot() - before;
        if messages {
            assert_messages_gone(&c, q, &ids, &cid).await;
            // Posting after a purge works and only the new messages show.
            let fresh = post_batches(&c, q, 4, 3600, 4, "fresh").await;
            let (listed, _) = list_pages(&c, &format!("/v2/queues/{q}/messages?echo=true"), 5).await;
            assert_eq!(msg_ids(&listed), fresh, "{q}");
            assert_eq!(stats(&c, q).await.0, 4);
            let (_, got) = try_claim(&c, q, 10, 60, 60).await.unwrap();
            assert_eq!(msg_ids(&got), fresh);
        } else {
            let (total, claimed, free, _) = stats(&c, q).await;
            assert_eq!((total, claimed, free), (200, 5, 195), "{q}: messages intact");
            assert_eq!(c.get(&format!("/v2/queues/{q}/claims/{cid}")).await.status, 200);
            let (listed, _) = list_pages(&c, &format!("/v2/queues/{q}/messages?echo=true&limit=20"), 20).await;
            assert_eq!(msg_ids(&listed), ids[5..]);
        }
        if subscriptions {
            assert_eq!(subscription_ids(&c, q).await, Vec::<String>::new(), "{q}");
        } else {
            assert_eq!(subscription_ids(&c, q).await, subs, "{q}: subscriptions intact");
            assert!(used.requests <= 4, "{q}: a message purge used {} requests", used.requests);
        }
        // The queue itself stays.
        assert_eq!(c.get(&format!("/v2/queues/{q}")).await.status, 200);
    }
}

// ---------------------------------------------------------------------------------------------
// Expired messages at the head

const EXPIRED: usize = 5000;

/// A queue whose head is `dead` messages (ttl 60, in posts of 500) that have expired and whose bucket
/// has ended, followed by 10 live ones. Returns the live ids.
async fn expired_head(c: &Client<'_>, q: &str, dead: usize) -> Vec<String> {
    let started = Instant::now();
    post_batches(c, q, dead, 60, 500, "dead").await;
    let live = post_batches(c, q, 10, 3600, 10, "live").await;
    c.app.store.clock.advance_secs(125);
    println!("expired head of {dead} on {q}: set up in {:.1}s", started.elapsed().as_secs_f64());
    live
}

/// Read units and requests of one call.
async fn cost<T>(app: &zaqar::App, f: impl std::future::Future<Output = T>) -> (T, f64, u64) {
    let before = app.store.usage.snapshot();
    let out = f.await;
    let used = app.store.usage.snapshot() - before;
    (out, used.read_units, used.requests)
}

/// The oldest and newest ids of `GET .../stats` (empty strings when absent).
fn ends_of(m: &Value) -> (String, String) {
    let id = |k: &str| last_segment(m[k]["href"].as_str().unwrap_or_default());
    (id("oldest"), id("newest"))
}

/// Stats once the live floor is settled: at most 2 read units (head, and one short query per end). The
/// queue record read, when the per-process cache (1 s) has expired, is one more request and unit.
async fn assert_stats_cheap(c: &Client<'_>, q: &str, total: u64) {
    for _ in 0..3 {
        let ((t, _, _, _), ru, requests) = cost(c.app, stats(c, q)).await;
        assert_eq!(t, total);
        let record_read = if requests > 3 { 1.0 } else { 0.0 };
        println!("settled stats on {q}: {ru} RU in {requests} requests");
        assert!(ru - record_read <= 2.0, "stats cost {ru} RU in {requests} requests");
    }
}

/// Stats first on a short run of expired messages (more than the two pages of 10 its end queries read):
/// oldest and newest must still be shown whenever total > 0.
#[tokio::test]
async fn stats_first_over_an_expired_head_shows_oldest_and_newest() {
    let app = app().await;
    let c = Client::new(&app);
    let live = expired_head(&c, "xs", 40).await;
    let (total, claimed, _, m) = stats(&c, "xs").await;
    assert_eq!((total, claimed), (10, 0));
    assert_eq!(ends_of(&m), (live[0].clone(), live[9].clone()), "{m}");
}

/// The same after a consumer has claimed past the expired run (the claim moved the claim floor, not
/// the live floor, because it also claimed live messages).
#[tokio::test]
async fn stats_after_a_claim_past_an_expired_head_shows_oldest_and_newest() {
    let app = app().await;
    let c = Client::new(&app);
    let live = expired_head(&c, "xt", 40).await;
    let (_, got) = try_claim(&c, "xt", 5, 60, 60).await.unwrap();
    assert_eq!(msg_ids(&got), live[..5]);
    let (total, claimed, _, m) = stats(&c, "xt").await;
    assert_eq!((total, claimed), (10, 5));
    assert_eq!(ends_of(&m), (live[0].clone(), live[9].clone()), "{m}");
    assert_stats_cheap(&c, "xt", 10).await;
}

/// Listing over 5,000 expired messages: pages may come back empty at the scan bound, but their `next`
/// link leads on, the live messages are reached within a bounded number of pages, and once passed the
/// run costs nothing: a fresh listing reads a small fraction of the first page. Stats, get and the
/// other paths then work at their settled cost.
#[tokio::test]
async fn listing_over_5000_expired_messages_reaches_the_live_ones_and_settles_the_floor() {
    let app = app().await;
    let c = Client::new(&app);
    let live = expired_head(&c, "xl", EXPIRED).await;
    let first = "/v2/queues/xl/messages?echo=true&limit=10";
    let ((_, first_page), ru1, _) = cost(&app, async { sj(&c.get(first).await) }).await;
    let max_pages = EXPIRED / zaqar::store::messages::MAX_SCAN_ITEMS + 2;
    let ((listed, pages), chain_ru, _) = cost(&app, list_pages(&c, first, max_pages)).await;
    let (again, ru2, _) = cost(&app, async { sj(&c.get(first).await) }).await;
    println!(
        "list over {EXPIRED} expired: first page {ru1} RU with {} messages; chain {pages} pages {chain_ru} RU; \
         settled {ru2} RU",
        first_page["messages"].as_array().unwrap().len()
    );
    assert_eq!(msg_ids(&listed), live, "the chain of pages reaches exactly the live messages");
    assert_eq!(msg_ids(again.1["messages"].as_array().unwrap()), live);
    // The head's expiry floor starts every scan past the expired run: even the first page reads none of it.
    assert!(ru1 <= 3.0 && ru2 <= 3.0, "the expired run was read: first page {ru1} RU, settled {ru2} RU");

    let (total, claimed, _, m) = stats(&c, "xl").await;
    assert_eq!((total, claimed), (10, 0));
    assert_eq!(ends_of(&m), (live[0].clone(), live[9].clone()), "{m}");
    assert_stats_cheap(&c, "xl", 10).await;
    assert_eq!(c.get(&format!("/v2/queues/xl/messages/{}", live[3])).await.status, 200);
    let (_, ids) = try_claim(&c, "xl", 3, 60, 60).await.expect("claim after the floor settled");
    assert_eq!(msg_ids(&ids), live[..3]);
    let (s, popped) = sj(&c.delete("/v2/queues/xl/messages?pop=2").await);
    assert_eq!((s, msg_ids(popped["messages"].as_array().unwrap())), (200, live[3..5].to_vec()));
}

/// A claim over 5,000 expired messages finds the live ones behind them without reading the expired run.
#[tokio::test]
async fn claim_first_over_5000_expired_messages_finds_the_live_ones() {
    let app = app().await;
    let c = Client::new(&app);
    let live = expired_head(&c, "xc", EXPIRED).await;
    let (first, ru1, _) = cost(&app, try_claim(&c, "xc", 5, 60, 60)).await;
    let (second, ru2, _) = cost(&app, try_claim(&c, "xc", 5, 60, 60)).await;
    println!("claim over {EXPIRED} expired: first {ru1} RU, second {ru2} RU");
    assert_eq!(msg_ids(&first.expect("the first claim finds the live messages").1), live[..5]);
    assert_eq!(msg_ids(&second.expect("second claim").1), live[5..]);
    assert!(ru1 <= 4.0 && ru2 <= 4.0, "the expired run was read: {ru1} then {ru2} RU");
}

/// A pop over 5,000 expired messages takes the live ones behind them without reading the expired run.
#[tokio::test]
async fn pop_first_over_5000_expired_messages_takes_the_live_ones() {
    let app = app().await;
    let c = Client::new(&app);
    let live = expired_head(&c, "xp", EXPIRED).await;
    let (first, ru1, _) = cost(&app, async { sj(&c.delete("/v2/queues/xp/messages?pop=2").await) }).await;
    let (second, ru2, _) = cost(&app, async { sj(&c.delete("/v2/queues/xp/messages?pop=2").await) }).await;
    println!("pop over {EXPIRED} expired: first {ru1} RU, second {ru2} RU");
    assert_eq!(msg_ids(first.1["messages"].as_array().unwrap()), live[..2], "the first pop takes live messages");
    assert_eq!(msg_ids(second.1["messages"].as_array().unwrap()), live[2..4]);
    assert!(ru1 <= 4.0 && ru2 <= 4.0, "the expired run was read: {ru1} then {ru2} RU");
}

/// What claim and pop do today over 5,000 expired messages: each call passes at most the scan bound
/// of them and raises the live floor past what it passed, so the live messages are reached within
/// ceil(5000 / bound) + 1 calls and later calls are cheap.
#[tokio::test]
async fn claim_and_pop_over_5000_expired_messages_reach_the_live_ones_within_bounded_calls() {
    let app = app().await;
    let c = Client::new(&app);
    let live = expired_head(&c, "xb", EXPIRED).await;
    let max_calls = EXPIRED / zaqar::store::messages::MAX_SCAN_ITEMS + 1;
    let mut calls = 0;
    let claimed = loop {
        calls += 1;
        assert!(calls <= max_calls, "no live message claimed within {max_calls} claims");
        let (got, ru, _) = cost(&app, try_claim(&c, "xb", 5, 60, 60)).await;
        println!("claim {calls} over {EXPIRED} expired: {ru} RU, {}", if got.is_some() { "201" } else { "204" });
        if let Some((_, msgs)) = got {
            break msg_ids(&msgs);
        }
    };
    assert_eq!(claimed, live[..5]);
    let ((s, popped), ru, _) = cost(&app, async { sj(&c.delete("/v2/queues/xb/messages?pop=2").await) }).await;
    assert_eq!((s, msg_ids(popped["messages"].as_array().unwrap())), (200, live[5..7].to_vec()));
    assert!(ru < 10.0, "pop after the floor settled: {ru} RU");
    // Stats here still meets the end of the run (the claims moved the claim floor, not the live floor):
    // see `stats_after_a_claim_past_an_expired_head_shows_oldest_and_newest`.
    assert_eq!(stats(&c, "xb").await.0, 8);
}

// ---------------------------------------------------------------------------------------------
// Posts that die or are forced out

/// Waits (bounded) until a post of `n` messages has reserved its sequence numbers on shard 0.
async fn wait_reserved(app: &zaqar::App, project: &str, q: &str, n: u64) {
    let started = Instant::now();
    loop {
        if let Some(head) = raw_head(app, project, q, 0).await {
            if (raw_i64(&head, "next_k").unwrap_or(0) - raw_i64(&head, "k0").unwrap_or(0)) as u64 >= n {
                return;
            }
        }
        assert!(started.elapsed().as_secs() < 20, "the big post never reserved");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

const BIG: usize = 3000;

fn big_post() -> String {
    let msgs: Vec<Value> = (0..BIG).map(|i| json!({"body": i, "ttl": 3600})).collect();
    json!({ "messages": msgs }).to_string()
}

/// After the lost post: only `survivors` are visible, counted, claimable; the queue takes new posts.
async fn assert_only(c: &Client<'_>, q: &str, survivors: &[String]) {
    let (listed, _) = list_pages(c, &format!("/v2/queues/{q}/messages?echo=true&include_claimed=true"), 10).await;
    assert_eq!(msg_ids(&listed), survivors, "nothing of the lost post is listed");
    assert_eq!(stats(c, q).await.0, survivors.len() as u64, "nothing of the lost post is counted");
    let (_, got) = try_claim(c, q, 20, 60, 60).await.unwrap();
    assert_eq!(msg_ids(&got), survivors, "nothing of the lost post is claimed");
    let more = post_batches(c, q, 2, 3600, 2, "after").await;
    assert_eq!(more.len(), 2);
    assert_eq!(stats(c, q).await.0, survivors.len() as u64 + 2);
}

/// A producer that dies mid-post (its request dropped after some of its messages were written) leaves
/// a lease; the next producer, once that lease has run out by its clock, forces past it: its own post
/// is not stalled, and nothing of the dead post ever becomes visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_that_dies_mid_post_is_never_visible_and_does_not_stall_the_queue() {
    let app_a = app().await;
    let a = Client::new(&app_a);
    assert_eq!(a.put("/v2/queues/dies", None).await.status, 201);
    let dying = {
        let (app_a, project) = (app_a.clone(), a.project.clone());
        tokio::spawn(async move {
            let a = client(&app_a, &project, CLIENT);
            a.post("/v2/queues/dies/messages", &big_post()).await
        })
    };
    wait_reserved(&app_a, &a.project, "dies", BIG as u64).await;
    // Let some of its writes land, then kill it.
    let started = Instant::now();
    while raw_message_count(&app_a, &a.project, "dies", 0).await < 50 {
        assert!(started.elapsed().as_secs() < 20, "the big post wrote nothing");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    dying.abort();
    assert!(dying.await.is_err(), "the post was still running when killed");
    let written = raw_message_count(&app_a, &a.project, "dies", 0).await;

    // Another producer whose clock is past the dead post's lease.
    let app_b = app().await;
    app_b.store.clock.advance_secs(30);
    let b = client(&app_b, &a.project, OTHER_CLIENT);
    let t = Instant::now();
    let survivors = post_batches(&b, "dies", 3, 3600, 3, "b").await;
    let waited = t.elapsed();
    println!("dead post: {written} of {BIG} messages written before the kill; next post took {waited:?}");
    assert!(written > 0 && (written as usize) < BIG);
    assert!(waited.as_secs() < 10, "the next post was stalled for {waited:?}");
    assert_only(&b, "dies", &survivors).await;
}

/// A producer whose writes outlast its lease while another waits is forced out: the range it wrote becomes a
/// hole that nobody ever sees, and the store writes the post again under new sequence numbers, so the
/// producer's messages are acknowledged once and visible once (or, if every attempt is forced out, the
/// post fails with 503 and none is visible). The waiting producer is not held up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_forced_out_after_its_lease_is_never_half_visible_nor_duplicated() {
    let app_a = app().await;
    let a = Client::new(&app_a);
    assert_eq!(a.put("/v2/queues/slow", None).await.status, 201);
    let slow = {
        let (app_a, project) = (app_a.clone(), a.project.clone());
        tokio::spawn(async move {
            let a = client(&app_a, &project, CLIENT);
            a.post("/v2/queues/slow/messages", &big_post()).await
        })
    };
    wait_reserved(&app_a, &a.project, "slow", BIG as u64).await;
    let app_b = app().await;
    app_b.store.clock.advance_secs(30);
    let b = client(&app_b, &a.project, OTHER_CLIENT);
    let survivors = post_batches(&b, "slow", 1, 3600, 1, "b").await;
    let r = slow.await.unwrap();
    // The first attempt's range was recorded as a hole: the scenario really happened.
    let head = raw_head(&app_a, &a.project, "slow", 0).await.unwrap();
    let holes = raw_strings(&head, "holes");
    let first = raw_i64(&head, "k0").unwrap_or(0) + 1;
    let range = format!("{first}:{}", first + BIG as i64 - 1);
    assert!(holes.contains(&range), "the slow post was forced out: holes {holes:?}");
    let mut expected = survivors.clone();
    match r.status.as_u16() {
        201 => expected.extend(ids_of_resources(&r.json_body())),
        503 => assert_eq!(err(&r).2, "Message post could not be completed. Please try again in a few seconds."),
        s => panic!("slow post: {s} {}", text(&r)),
    }
    println!("forced-out post: answered {} with {} messages visible", r.status, expected.len());
    let (listed, _) = list_pages(&b, "/v2/queues/slow/messages?echo=true&include_claimed=true&limit=20", 400).await;
    assert_eq!(msg_ids(&listed), expected, "each acknowledged message once, nothing of the forced-out range");
    let bodies: HashSet<String> = listed.iter().map(|m| m["body"].to_string()).collect();
    assert_eq!(bodies.len(), listed.len(), "no body listed twice");
    assert_eq!(stats(&b, "slow").await.0, expected.len() as u64);
}

// ---------------------------------------------------------------------------------------------
// Head size

/// Claims ending on many distinct seconds (a fleet claiming every second with a long claim ttl) must not
/// make the head, which every stats, post, claim and delete reads or writes, grow with them: stats stays
/// at 2 read units and a one-message post at its usual write units.
#[tokio::test]
async fn many_live_claim_ends_do_not_grow_the_cost_of_stats_and_posts() {
    const CLAIMS: usize = 400;
    let app = app().await;
    let c = Client::new(&app);
    post_batches(&c, "ends", CLAIMS + 10, 3600, 350, "e").await;
    let post_one = || async {
        let before = app.store.usage.snapshot();
        post_batches(&c, "ends", 1, 3600, 1, "p").await;
        (app.store.usage.snapshot() - before).write_units
    };
    let base_wcu = post_one().await;
    for _ in 0..CLAIMS {
        try_claim(&c, "ends", 1, 3600, 60).await.unwrap();
        app.store.clock.advance_secs(1);
    }
    let head = raw_head(&app, &c.project, "ends", 0).await.unwrap();
    let entries = raw_map_len(&head, "cl");
    let ((total, claimed, _, _), ru, requests) = cost(&app, stats(&c, "ends")).await;
    let wcu = post_one().await;
    println!(
        "{entries} claim-end entries on the head: stats {ru} RU in {requests} requests; post {base_wcu} -> {wcu} WCU"
    );
    assert_eq!((total, claimed), (CLAIMS as u64 + 11, CLAIMS as u64));
    assert!(ru <= 2.0 || requests > 3 && ru <= 3.0, "stats cost {ru} RU");
    assert!(wcu <= base_wcu + 1.0, "a one-message post cost {wcu} WCU (was {base_wcu})");
}

/// A consumer holding a `next` link from before a purge still sees the messages posted after it: Zaqar
/// purges by popping and keeps the queue's marker counter (its MongoDB driver warns that resetting it
/// "can cause clients to miss tons of messages").
#[tokio::test]
async fn a_marker_from_before_a_purge_still_sees_new_messages() {
    let app = app().await;
    let c = Client::new(&app);
    post_batches(&c, "mp", 30, 3600, 30, "old").await;
    let (seen, _) = list_pages(&c, "/v2/queues/mp/messages?echo=true&limit=20", 5).await;
    assert_eq!(seen.len(), 30);
    let (_, last) = sj(&c.get("/v2/queues/mp/messages?echo=true&limit=20").await);
    let (_, last) = sj(&c.get(last["links"][0]["href"].as_str().unwrap()).await);
    let link = last["links"][0]["href"].as_str().unwrap().to_string();
    assert_eq!(c.post("/v2/queues/mp/purge", r#"{"resource_types": ["messages"]}"#).await.status, 204);
    let fresh = post_batches(&c, "mp", 5, 3600, 5, "new").await;
    let (s, body) = sj(&c.get(&link).await);
    assert_eq!((s, msg_ids(body["messages"].as_array().unwrap())), (200, fresh), "via {link}");
}
