//! Helpers shared by the backlog and sharded-queue tests (`mod support;` in each): requests that must
//! succeed, paging through a whole listing, and a look at a message's raw item where a test needs the
//! exact instant (claim end, expiry) the store recorded.
#![allow(dead_code)]

use harness::*;
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

pub fn text(r: &zaqar::ApiResponse) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

pub fn last_segment(href: &str) -> String {
    href.split('?').next().unwrap().rsplit('/').next().unwrap().to_string()
}

/// Posts `messages` (JSON objects with body and ttl) and returns the new ids in order.
pub async fn post(c: &Client<'_>, q: &str, messages: Vec<Value>) -> Vec<String> {
    let r = c.post(&format!("/v2/queues/{q}/messages"), &json!({ "messages": messages }).to_string()).await;
    let (s, v) = sj(&r);
    assert_eq!(s, 201, "post to {q}: {v}");
    v["resources"].as_array().unwrap().iter().map(|h| last_segment(h.as_str().unwrap())).collect()
}

/// The ids in a 201 post response.
pub fn ids_of_post(body: &Value) -> Vec<String> {
    body["resources"].as_array().unwrap().iter().map(|h| last_segment(h.as_str().unwrap())).collect()
}

/// Posts `n` messages with this ttl in batches of `batch`, bodies `{"tag": tag, "i": i}`.
pub async fn post_n(c: &Client<'_>, q: &str, n: usize, ttl: i64, batch: usize, tag: &str) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let m = batch.min(n - ids.len());
        let msgs = (0..m).map(|j| json!({"body": {"tag": tag, "i": ids.len() + j}, "ttl": ttl})).collect();
        ids.extend(post(c, q, msgs).await);
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

pub fn ids_of(msgs: &[Value]) -> Vec<String> {
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

/// The raw stored item of a message in the queue's current generation (the test's window onto the
/// exact instants the store recorded: `claim_until_ms`, `expires_ms`, `ttl_s`).
pub async fn raw_message(app: &App, project: &str, q: &str, id: &str) -> Option<zaqar::keys::Item> {
    let project = zaqar::types::ProjectId::parse(project).unwrap();
    let queue = zaqar::types::QueueName::parse(q).unwrap();
    let key = app.store.message_key_of(&project, &queue, id).await.unwrap()?;
    let out =
        app.store.client.get_item().table_name(&app.store.table).set_key(Some(key)).consistent_read(true).send().await;
    out.unwrap().item
}

/// The raw head item of shard `index` of a queue's current generation.
pub async fn raw_head(app: &App, project: &str, q: &str, index: u32) -> Option<zaqar::keys::Item> {
    let (project, queue) =
        (zaqar::types::ProjectId::parse(project).unwrap(), zaqar::types::QueueName::parse(q).unwrap());
    let info = app.store.fresh_queue_info(&project, &queue).await.unwrap().unwrap();
    let shard = zaqar::keys::Shard { project, queue, gen: info.gen, index };
    let out = app.store.client.get_item().table_name(&app.store.table).set_key(Some(shard.head_key()));
    out.consistent_read(true).send().await.unwrap().item
}

/// A number attribute of a raw item.
pub fn raw_i64(item: &zaqar::keys::Item, name: &str) -> Option<i64> {
    match item.get(name) {
        Some(aws_sdk_dynamodb::types::AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}
