//! API-level helpers shared by the backlog and sharded-queue tests (`mod support;` in each): requests
//! that must succeed, claims that may find nothing, stats, and paging through a whole listing. Raw
//! storage views (items, heads) live in the harness with the others.
#![allow(dead_code)]

use harness::{ids_of_resources, sj, text, Client};
use serde_json::{json, Value};
use zaqar::App;

/// A small deterministic PRNG (xorshift), so operation mixes vary without extra dependencies.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

pub fn client<'a>(app: &'a App, project: &str, client_id: &str) -> Client<'a> {
    Client { app, project: project.to_string(), client_id: client_id.to_string() }
}

/// A distinct Client-ID (a UUID) per number.
pub fn client_id(n: usize) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

pub fn last_segment(href: &str) -> String {
    href.split('?').next().unwrap().rsplit('/').next().unwrap().to_string()
}

/// Posts `messages` (JSON objects with body and ttl) and returns the new ids in order.
pub async fn post_msgs(c: &Client<'_>, q: &str, messages: Vec<Value>) -> Vec<String> {
    let r = c.post(&format!("/v2/queues/{q}/messages"), &json!({ "messages": messages }).to_string()).await;
    let (s, v) = sj(&r);
    assert_eq!(s, 201, "post to {q}: {v}");
    ids_of_resources(&v)
}

/// Posts `n` messages with this ttl in batches of `batch`, bodies `{"tag": tag, "i": i}`.
pub async fn post_batches(c: &Client<'_>, q: &str, n: usize, ttl: i64, batch: usize, tag: &str) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let m = batch.min(n - ids.len());
        let msgs = (0..m).map(|j| json!({"body": {"tag": tag, "i": ids.len() + j}, "ttl": ttl})).collect();
        ids.extend(post_msgs(c, q, msgs).await);
    }
    ids
}

/// A claim: `Some((claim id, messages))` on 201, `None` on 204; anything else fails the test.
pub async fn try_claim(c: &Client<'_>, q: &str, limit: usize, ttl: i64, grace: i64) -> Option<(String, Vec<Value>)> {
    let r =
        c.post(&format!("/v2/queues/{q}/claims?limit={limit}"), &json!({"ttl": ttl, "grace": grace}).to_string()).await;
    match r.status.as_u16() {
        204 => None,
        201 => {
            let cid = last_segment(r.header_value("location").expect("claim location"));
            let msgs = r.json_body()["messages"].as_array().unwrap().clone();
            Some((cid, msgs))
        }
        s => panic!("claim on {q}: {s} {}", text(&r)),
    }
}

pub fn msg_ids(msgs: &[Value]) -> Vec<String> {
    msgs.iter().map(|m| m["id"].as_str().unwrap().to_string()).collect()
}

/// `(total, claimed, free, whole messages object)` of `GET .../stats`.
pub async fn stats(c: &Client<'_>, q: &str) -> (u64, u64, u64, Value) {
    let (s, v) = sj(&c.get(&format!("/v2/queues/{q}/stats")).await);
    assert_eq!(s, 200, "stats of {q}: {v}");
    let m = v["messages"].clone();
    let total = m["total"].as_u64().unwrap();
    let claimed = m["claimed"].as_u64().unwrap();
    let free = m["free"].as_u64().unwrap();
    assert_eq!(claimed + free, total, "claimed + free = total: {m}");
    (total, claimed, free, m)
}

/// Every page of a message listing from `first` (a path with query), following `next` links until a page
/// is empty and has none (an empty page with a link means the store stopped at its scan bound). Returns
/// the messages in listing order and the number of pages read.
pub async fn list_pages(c: &Client<'_>, first: &str, max_pages: usize) -> (Vec<Value>, usize) {
    let mut seen = Vec::new();
    let mut href = first.to_string();
    for page in 1..=max_pages {
        let (s, body) = sj(&c.get(&href).await);
        assert_eq!(s, 200, "{href}: {body}");
        seen.extend(body["messages"].as_array().unwrap().iter().cloned());
        match body["links"].as_array().unwrap().iter().find(|l| l["rel"] == "next") {
            Some(l) => href = l["href"].as_str().unwrap().to_string(),
            None => return (seen, page),
        }
    }
    panic!("listing {first} did not end within {max_pages} pages");
}
