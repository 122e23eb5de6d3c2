//! Claim endpoints against DynamoDB Local (docs/api.md#claims; recorded Zaqar 23 answers).

use harness::*;
use http::Method;
use serde_json::{json, Value};
use std::collections::HashSet;
use zaqar::{ApiResponse, App};

fn text(resp: &ApiResponse) -> String {
    String::from_utf8(resp.body.clone()).unwrap()
}

fn assert_error(resp: &ApiResponse, status: u16, title: &str, description: &str) {
    assert_eq!(err(resp), (status, title.to_string(), description.to_string()), "body: {}", text(resp));
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

fn ids_of(body: &Value) -> Vec<String> {
    body["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect()
}

async fn post(c: &Client<'_>, q: &str, body: &str) -> Vec<String> {
    let r = c.post(&format!("/v2/queues/{q}/messages"), body).await;
    let (s, v) = sj(&r);
    assert_eq!(s, 201, "{v}");
    v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().rsplit('/').next().unwrap().to_string())
        .collect()
}

async fn post_n(c: &Client<'_>, q: &str, n: usize, ttl: i64) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let msgs: Vec<Value> = chunk.iter().map(|i| json!({"body": {"n": i}, "ttl": ttl})).collect();
        ids.extend(post(c, q, &json!({ "messages": msgs }).to_string()).await);
    }
    ids
}

/// A successful claim: (claim id, message ids, response body).
async fn claim(c: &Client<'_>, q: &str, query: &str, body: &str) -> (String, Vec<String>, Value) {
    let r = c.post(&format!("/v2/queues/{q}/claims{query}"), body).await;
    assert_eq!(r.status, 201, "{}", text(&r));
    let location = r.header_value("location").unwrap().to_string();
    let cid = location.strip_prefix(&format!("/v2/queues/{q}/claims/")).expect("Location shape").to_string();
    let body = r.json_body();
    (cid, ids_of(&body), body)
}

async fn claim_status(c: &Client<'_>, q: &str, body: &str) -> u16 {
    c.post(&format!("/v2/queues/{q}/claims"), body).await.status.as_u16()
}

async fn get_message(c: &Client<'_>, q: &str, id: &str) -> (u16, Value) {
    sj(&c.get(&format!("/v2/queues/{q}/messages/{id}")).await)
}

// ---------------------------------------------------------------------------------------------
// Create (docs/api.md#claims-create)

#[tokio::test]
async fn create_shape() {
    let app = app().await;
    let c = Client::new(&app);
    let ids = post(
        &c,
        "q1",
        r#"{"messages": [{"ttl": 300, "body": {"event": "one"}}, {"ttl": 300, "body": "two"}, {"body": [3]}]}"#,
    )
    .await;
    app.store.clock.advance_secs(1);
    // #70
    let r = c.post("/v2/queues/q1/claims?limit=2", r#"{"ttl": 300, "grace": 60}"#).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header_value("content-type"), Some("application/json"));
    let location = r.header_value("location").unwrap();
    let cid = location.strip_prefix("/v2/queues/q1/claims/").unwrap();
    assert!(!cid.is_empty() && !cid.contains(['/', '?', '=']));
    let body = r.json_body();
    assert_eq!(keys(&body), ["messages"]);
    let msgs = body["messages"].as_array().unwrap();
    assert_eq!(ids_of(&body), ids[..2]);
    for m in msgs {
        assert_eq!(keys(m), ["age", "body", "checksum", "href", "id", "ttl"]);
        let href = m["href"].as_str().unwrap();
        assert_eq!(href, format!("/v2/queues/q1/messages/{}?claim_id={cid}", m["id"].as_str().unwrap()));
        // python-zaqarclient: claim id = text after the last '=', message id = last segment without '?…'.
        assert_eq!(href.rsplit('=').next().unwrap(), cid);
        assert_eq!(href.rsplit('/').next().unwrap().split('?').next().unwrap(), m["id"].as_str().unwrap());
        // The message would have died 1 s before the claim: ttl becomes claim ttl + grace.
        assert_eq!(m["ttl"], json!(360));
        assert_eq!(m["age"], json!(1));
    }
    assert_eq!(msgs[0]["body"], json!({"event": "one"}));
    assert_eq!(msgs[1]["body"], json!("two"));
}

#[tokio::test]
async fn nothing_to_claim_is_204() {
    let app = app().await;
    let c = Client::new(&app);
    // #76, #78: no body / a body on a queue that does not exist.
    let r =
        c.send(c.request(Method::POST, "/v2/queues/emptyq/claims").header("Content-Type", "application/json")).await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert!(r.header_value("location").is_none());
    let r = c.post("/v2/queues/emptyq/claims", r#"{"ttl": 300, "grace": 60}"#).await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    // #71: an existing empty queue with `{}`.
    c.put("/v2/queues/q2", None).await;
    let r = c.post("/v2/queues/q2/claims", "{}").await;
    assert_eq!(r.status, 204);
    assert!(r.header_value("location").is_none());
    // All messages claimed already.
    post_n(&c, "q2", 2, 3600).await;
    claim(&c, "q2", "", "{}").await;
    assert_eq!(claim_status(&c, "q2", "{}").await, 204);
    // Claiming does not create the queue.
    let (_, list) = sj(&c.get("/v2/queues").await);
    assert_eq!(list["queues"], json!([{"name": "q2", "href": "/v2/queues/q2"}]));
}

#[tokio::test]
async fn limit_and_defaults() {
    let app = app().await;
    let c = Client::new(&app);
    let ids = post_n(&c, "q1", 25, 3600).await;
    // Default limit 10, default ttl 300 (seen via GET claim), own messages are claimable.
    let (cid, got, _) = claim(&c, "q1", "", "").await;
    assert_eq!(got, ids[..10]);
    let (_, doc) = sj(&c.get(&format!("/v2/queues/q1/claims/{cid}")).await);
    assert_eq!(doc["ttl"], json!(300));
    // A body of `{}` and unknown keys.
    let (cid, got, _) = claim(&c, "q1", "?limit=3", r#"{"foo": "bar"}"#).await;
    assert_eq!(got, ids[10..13]);
    let (_, doc) = sj(&c.get(&format!("/v2/queues/q1/claims/{cid}")).await);
    assert_eq!(doc["ttl"], json!(300));
    // limit=20 is the maximum; fewer available is fine.
    let (_, got, _) = claim(&c, "q1", "?limit=20", r#"{"ttl": 60}"#).await;
    assert_eq!(got, ids[13..]);
    // #77 and friends.
    let limit_text = r#"{"title": "Invalid API request", "description": "Limit must be at least 1 and may not be greater than 20."}"#;
    for q in ["?limit=21", "?limit=0", "?limit=-1"] {
        let r = c.post(&format!("/v2/queues/q1/claims{q}"), r#"{"ttl": 300, "grace": 60}"#).await;
        assert_eq!(r.status, 400, "{q}");
        assert_eq!(text(&r), limit_text, "{q}");
    }
    let (s, title, _) = err(&c.post("/v2/queues/q1/claims?limit=many", "{}").await);
    assert_eq!((s, title.as_str()), (400, "Invalid parameter"));
    // A bad limit is reported even when the body is bad too (query parsed first, as falcon does).
    let (s, title, _) = err(&c.post("/v2/queues/q1/claims?limit=many", "[").await);
    assert_eq!((s, title.as_str()), (400, "Invalid parameter"));
}

#[tokio::test]
async fn ttl_grace_and_body_errors() {
    let app = app().await;
    let c = Client::new(&app);
    post_n(&c, "q1", 2, 3600).await;
    let ttl_text = r#"{"title": "Invalid API request", "description": "The TTL for a claim may not exceed 43200 seconds, and must be at least 60 seconds long."}"#;
    let grace_text = r#"{"title": "Invalid API request", "description": "The grace for a claim may not exceed 43200 seconds, and must be at least 60 seconds long."}"#;
    // #72, #73, #74
    for (body, expected) in [
        (r#"{"ttl": 43201, "grace": 60}"#, ttl_text),
        (r#"{"ttl": 59, "grace": 60}"#, ttl_text),
        (r#"{"ttl": true}"#, ttl_text),
        (r#"{"ttl": 300, "grace": 43201}"#, grace_text),
        (r#"{"ttl": 300, "grace": 59}"#, grace_text),
        (r#"{"grace": 0}"#, grace_text),
        // ttl is checked before grace.
        (r#"{"ttl": 10, "grace": 10}"#, ttl_text),
    ] {
        let r = c.post("/v2/queues/q1/claims", body).await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(text(&r), expected, "{body}");
    }
    // Limit is checked between ttl and grace (Zaqar's claim_creation).
    assert_error(
        &c.post("/v2/queues/q1/claims?limit=50", r#"{"ttl": 60, "grace": 10}"#).await,
        400,
        "Invalid API request",
        "Limit must be at least 1 and may not be greater than 20.",
    );
    // #75 and other type errors.
    let r = c.post("/v2/queues/q1/claims", r#"{"ttl": "abc", "grace": 60}"#).await;
    assert_eq!(
        text(&r),
        r#"{"title": "Invalid request body", "description": "The value of the \"ttl\" field must be a int."}"#
    );
    assert_error(
        &c.post("/v2/queues/q1/claims", r#"{"ttl": 300.0}"#).await,
        400,
        "Invalid request body",
        "The value of the \"ttl\" field must be a int.",
    );
    assert_error(
        &c.post("/v2/queues/q1/claims", r#"{"ttl": 300, "grace": "60"}"#).await,
        400,
        "Invalid request body",
        "The value of the \"grace\" field must be a int.",
    );
    assert_error(
        &c.post("/v2/queues/q1/claims", "[]").await,
        400,
        "Invalid request body",
        "Document type not supported.",
    );
    assert_error(
        &c.post("/v2/queues/q1/claims", r#""ttl""#).await,
        400,
        "Invalid request body",
        "Request body could not be parsed.",
    );
    assert_error(
        &c.post("/v2/queues/q1/claims", r#"{"ttl": "#).await,
        400,
        "Invalid request body",
        "Request body could not be parsed.",
    );
    // Nothing was claimed by the failures; the edges are accepted.
    let (cid, got, _) = claim(&c, "q1", "?limit=1", r#"{"ttl": 43200, "grace": 43200}"#).await;
    assert_eq!(got.len(), 1);
    let (_, doc) = sj(&c.get(&format!("/v2/queues/q1/claims/{cid}")).await);
    assert_eq!(doc["ttl"], json!(43200));
    let (_, got, _) = claim(&c, "q1", "", r#"{"ttl": 60, "grace": 60}"#).await;
    assert_eq!(got.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Lifetime extension (docs/api.md#claims-lifetime)

#[tokio::test]
async fn lifetime_extension() {
    let app = app().await;
    let c = Client::new(&app);
    let short = post(&c, "q1", r#"{"messages": [{"body": "short", "ttl": 60}]}"#).await;
    let long = post(&c, "q1", r#"{"messages": [{"body": "long", "ttl": 3600}]}"#).await;
    // Spec example: a 60-s message under a 100/100 claim reports ttl 200.
    let (cid, got, body) = claim(&c, "q1", "", r#"{"ttl": 100, "grace": 100}"#).await;
    assert_eq!(got, [short[0].clone(), long[0].clone()]);
    assert_eq!(body["messages"][0]["ttl"], json!(200));
    // A message that outlives the claim is untouched.
    assert_eq!(body["messages"][1]["ttl"], json!(3600));
    // The extension is stored: the message outlives its own ttl and the claim, until claim end + grace.
    app.store.clock.advance_secs(150);
    let (s, m) = get_message(&c, "q1", &short[0]).await;
    assert_eq!(s, 200);
    assert_eq!(m["ttl"], json!(200));
    // The claim has expired, the stale claim id still shows in the href (MongoDB quirk) and still deletes.
    assert_eq!(m["href"].as_str().unwrap(), format!("/v2/queues/q1/messages/{}?claim_id={cid}", short[0]));
    assert_eq!(c.get(&format!("/v2/queues/q1/claims/{cid}")).await.status, 404);
    app.store.clock.advance_secs(49);
    assert_eq!(get_message(&c, "q1", &short[0]).await.0, 200);
    app.store.clock.advance_secs(2);
    assert_eq!(get_message(&c, "q1", &short[0]).await.0, 404);
    assert_eq!(get_message(&c, "q1", &long[0]).await.0, 200);
}

#[tokio::test]
async fn renewal_extends_lifetimes_again() {
    let app = app().await;
    let c = Client::new(&app);
    let ids = post(&c, "q1", r#"{"messages": [{"body": "m", "ttl": 60}]}"#).await;
    let (cid, _, body) = claim(&c, "q1", "", r#"{"ttl": 60, "grace": 60}"#).await;
    assert_eq!(body["messages"][0]["ttl"], json!(120));
    app.store.clock.advance_secs(50);
    // Renew: claim now ends at 150 > message expiry 120 → message ttl = 100 + 60.
    let r = c.patch(&format!("/v2/queues/q1/claims/{cid}"), "application/json", r#"{"ttl": 100, "grace": 60}"#).await;
    assert_eq!(r.status, 204);
    let (_, m) = get_message(&c, "q1", &ids[0]).await;
    assert_eq!(m["ttl"], json!(160));
    app.store.clock.advance_secs(200 - 50 + 9); // t = 209 < 50 + 100 + 60
    assert_eq!(get_message(&c, "q1", &ids[0]).await.0, 200);
    app.store.clock.advance_secs(2); // t = 211
    assert_eq!(get_message(&c, "q1", &ids[0]).await.0, 404);
}

// ---------------------------------------------------------------------------------------------
// Get, renew, release (docs/api.md#claims-get, #claims-renew, #claims-release)

#[tokio::test]
async fn get_claim() {
    let app = app().await;
    let c = Client::new(&app);
    let p = c.project.clone();
    let ids = post_n(&c, "q1", 3, 3600).await;
    let (cid, _, _) = claim(&c, "q1", "?limit=2", r#"{"ttl": 300, "grace": 60}"#).await;
    app.store.clock.advance_secs(7);
    // #79
    let r = c.get(&format!("/v2/queues/q1/claims/{cid}")).await;
    let (s, doc) = sj(&r);
    assert_eq!(s, 200);
    assert_eq!(keys(&doc), ["age", "href", "messages", "ttl"]);
    assert_eq!(doc["age"], json!(7));
    assert_eq!(doc["ttl"], json!(300));
    assert_eq!(doc["href"].as_str().unwrap(), format!("/v2/queues/q1/claims/{cid}"));
    assert_eq!(ids_of(&doc), ids[..2]);
    for m in doc["messages"].as_array().unwrap() {
        assert_eq!(keys(m), ["age", "body", "checksum", "href", "id", "ttl"]);
        assert_eq!(
            m["href"].as_str().unwrap(),
            format!("/v2/queues/q1/messages/{}?claim_id={cid}", m["id"].as_str().unwrap())
        );
        assert_eq!(m["age"], json!(7));
    }
    // Deleted messages leave the claim; once none remain it is gone.
    assert_eq!(c.delete(&format!("/v2/queues/q1/messages/{}?claim_id={cid}", ids[0])).await.status, 204);
    let (_, doc) = sj(&c.get(&format!("/v2/queues/q1/claims/{cid}")).await);
    assert_eq!(ids_of(&doc), ids[1..2]);
    assert_eq!(c.delete(&format!("/v2/queues/q1/messages/{}?claim_id={cid}", ids[1])).await.status, 204);
    assert_error(
        &c.get(&format!("/v2/queues/q1/claims/{cid}")).await,
        404,
        "Not found",
        &format!("Claim {cid} does not exist in queue q1 for project {p}"),
    );
    // Unknown, malformed, other queue, other project.
    for id in ["5c6939a8d3f3d1bc5a25f0a1", "7f06b0ae-0991-4922-8fbe-26b9b60816d4", "x"] {
        let r = c.get(&format!("/v2/queues/q1/claims/{id}")).await;
        assert_eq!(r.status, 404);
        assert_eq!(
            text(&r),
            format!(
                r#"{{"title": "Not found", "description": "Claim {id} does not exist in queue q1 for project {p}"}}"#
            )
        );
    }
    let (cid2, _, _) = claim(&c, "q1", "", "{}").await;
    assert_eq!(c.get(&format!("/v2/queues/q2/claims/{cid2}")).await.status, 404);
    assert_eq!(Client::new(&app).get(&format!("/v2/queues/q1/claims/{cid2}")).await.status, 404);
    // #87: released → 404. Expired → 404.
    assert_eq!(c.delete(&format!("/v2/queues/q1/claims/{cid2}")).await.status, 204);
    assert_eq!(c.get(&format!("/v2/queues/q1/claims/{cid2}")).await.status, 404);
    let (cid3, _, _) = claim(&c, "q1", "", r#"{"ttl": 60}"#).await;
    app.store.clock.advance_secs(59);
    assert_eq!(c.get(&format!("/v2/queues/q1/claims/{cid3}")).await.status, 200);
    app.store.clock.advance_secs(2);
    assert_error(
        &c.get(&format!("/v2/queues/q1/claims/{cid3}")).await,
        404,
        "Not found",
        &format!("Claim {cid3} does not exist in queue q1 for project {p}"),
    );
}

#[tokio::test]
async fn renew_claim() {
    let app = app().await;
    let c = Client::new(&app);
    let p = c.project.clone();
    post_n(&c, "q1", 2, 3600).await;
    let (cid, _, _) = claim(&c, "q1", "", r#"{"ttl": 100, "grace": 60}"#).await;
    let path = format!("/v2/queues/q1/claims/{cid}");
    app.store.clock.advance_secs(90);
    // #80: 204, restarts age, new ttl, extends past the original end.
    let r = c.patch(&path, "application/json", r#"{"ttl": 600, "grace": 30}"#).await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    let (_, doc) = sj(&c.get(&path).await);
    assert_eq!((doc["age"].clone(), doc["ttl"].clone()), (json!(0), json!(600)));
    app.store.clock.advance_secs(20); // past the original 100 s
    let (s, doc) = sj(&c.get(&path).await);
    assert_eq!(s, 200);
    assert_eq!(doc["age"], json!(20));
    assert_eq!(claim_status(&c, "q1", "{}").await, 204, "messages stay claimed");
    // #81
    let r = c.patch(&path, "application/json", r#"{"ttl": 99999, "grace": 30}"#).await;
    assert_eq!(
        text(&r),
        r#"{"title": "Invalid API request", "description": "The TTL for a claim may not exceed 43200 seconds, and must be at least 60 seconds long."}"#
    );
    // Grace is not range-checked on renewal.
    assert_eq!(c.patch(&path, "application/json", r#"{"ttl": 120, "grace": 10}"#).await.status, 204);
    // Body: empty → 400; `{}` → defaults (ttl 300); types checked.
    assert_error(
        &c.patch(&path, "application/json", "").await,
        400,
        "Invalid request body",
        "Request body could not be parsed.",
    );
    let r = c.send(c.request(Method::PATCH, &path)).await;
    assert_error(&r, 400, "Invalid request body", "Request body could not be parsed.");
    assert_error(
        &c.patch(&path, "application/json", r#"{"ttl": "1"}"#).await,
        400,
        "Invalid request body",
        "The value of the \"ttl\" field must be a int.",
    );
    assert_error(
        &c.patch(&path, "application/json", "[]").await,
        400,
        "Invalid request body",
        "Document type not supported.",
    );
    assert_eq!(c.patch(&path, "application/json", "{}").await.status, 204);
    let (_, doc) = sj(&c.get(&path).await);
    assert_eq!(doc["ttl"], json!(300));
    // #88: unknown claim → 404; malformed → 404.
    let r = c.patch("/v2/queues/q1/claims/5c6939a8d3f3d1bc5a25f0a1", "application/json", r#"{"ttl": 300}"#).await;
    assert_eq!(
        text(&r),
        format!(
            r#"{{"title": "Not found", "description": "Claim 5c6939a8d3f3d1bc5a25f0a1 does not exist in queue q1 for project {p}"}}"#
        )
    );
    assert_eq!(r.status, 404);
    assert_eq!(c.patch("/v2/queues/q1/claims/nope", "application/json", "{}").await.status, 404);
    // An expired claim cannot be renewed.
    app.store.clock.advance_secs(301);
    assert_eq!(c.patch(&path, "application/json", "{}").await.status, 404);
    // A shorter renewal ends the claim earlier.
    let (cid, ids, _) = claim(&c, "q1", "", r#"{"ttl": 1000}"#).await;
    assert_eq!(ids.len(), 2);
    assert_eq!(c.patch(&format!("/v2/queues/q1/claims/{cid}"), "application/json", r#"{"ttl": 60}"#).await.status, 204);
    app.store.clock.advance_secs(61);
    let (_, again, _) = claim(&c, "q1", "", "{}").await;
    assert_eq!(again, ids);
}

#[tokio::test]
async fn release_claim() {
    let app = app().await;
    let c = Client::new(&app);
    let other = c.with_client_id(OTHER_CLIENT);
    let ids = post_n(&c, "q1", 3, 3600).await;
    let (cid, got, _) = claim(&c, "q1", "?limit=2", "{}").await;
    assert_eq!(got, ids[..2]);
    // #86: 204, and again, and for unknown/malformed ids and queues.
    for path in [
        format!("/v2/queues/q1/claims/{cid}"),
        format!("/v2/queues/q1/claims/{cid}"),
        "/v2/queues/q1/claims/5c6939a8d3f3d1bc5a25f0a1".to_string(),
        "/v2/queues/q1/claims/garbage".to_string(),
        "/v2/queues/nosuch/claims/5c6939a8d3f3d1bc5a25f0a1".to_string(),
    ] {
        let r = c.delete(&path).await;
        assert_eq!(r.status, 204, "{path}");
        assert!(r.body.is_empty());
    }
    // Released messages are claimable again at once, listed unclaimed, and the old claim id no longer deletes.
    let listed = sj(&other.get("/v2/queues/q1/messages").await).1;
    assert_eq!(ids_of(&listed), ids);
    assert!(listed["messages"].as_array().unwrap().iter().all(|m| !m["href"].as_str().unwrap().contains("claim_id")));
    let r = c.delete(&format!("/v2/queues/q1/messages/{}?claim_id={cid}", ids[0])).await;
    assert_error(&r, 400, "Unable to delete", "A claim was specified, but the message is not currently claimed.");
    let (cid2, again, _) = claim(&c, "q1", "?limit=5", "{}").await;
    assert_eq!(again, ids);
    assert_ne!(cid2, cid);
    // Releasing an old claim does not free messages held by a newer claim.
    assert_eq!(c.delete(&format!("/v2/queues/q1/claims/{cid}")).await.status, 204);
    assert_eq!(claim_status(&c, "q1", "{}").await, 204);
}

// ---------------------------------------------------------------------------------------------
// Exclusivity, expiry, ordering

#[tokio::test]
async fn claims_are_exclusive_and_fifo() {
    let app = app().await;
    let c = Client::new(&app);
    let a = post_n(&c, "q1", 4, 3600).await;
    let b = post_n(&c, "q1", 4, 3600).await;
    let all: Vec<String> = [a, b].concat();
    // Sequential claims: disjoint, in posting order across batches.
    let (_, first, _) = claim(&c, "q1", "?limit=5", "{}").await;
    let (_, second, _) = claim(&c, "q1", "?limit=5", "{}").await;
    assert_eq!(first, all[..5]);
    assert_eq!(second, all[5..]);
    assert_eq!(claim_status(&c, "q1", "{}").await, 204);
    // Deleting from the middle keeps order for the rest.
    let fresh = post_n(&c, "q2", 6, 3600).await;
    c.delete(&format!("/v2/queues/q2/messages?ids={},{}", fresh[1], fresh[3])).await;
    let (_, got, _) = claim(&c, "q2", "?limit=20", "{}").await;
    assert_eq!(got, [fresh[0].clone(), fresh[2].clone(), fresh[4].clone(), fresh[5].clone()]);

    // Concurrent claims on one queue never share a message.
    let ids = post_n(&c, "q3", 60, 3600).await;
    let claims = futures::future::join_all((0..10).map(|_| async {
        let r = c.post("/v2/queues/q3/claims?limit=8", "{}").await;
        if r.status == 201 {
            ids_of(&r.json_body())
        } else {
            Vec::new()
        }
    }))
    .await;
    let mut seen = HashSet::new();
    for got in &claims {
        for id in got {
            assert!(seen.insert(id.clone()), "message {id} delivered to two live claims");
        }
    }
    // Best effort: everything claimable gets claimed eventually.
    loop {
        let r = c.post("/v2/queues/q3/claims?limit=20", "{}").await;
        if r.status == 204 {
            break;
        }
        for id in ids_of(&r.json_body()) {
            assert!(seen.insert(id.clone()), "message {id} delivered twice");
        }
    }
    assert_eq!(seen.len(), ids.len());
}

#[tokio::test]
async fn expired_claims_redeliver() {
    let app = app().await;
    let c = Client::new(&app);
    let ids = post_n(&c, "q1", 3, 3600).await;
    let (cid1, got, _) = claim(&c, "q1", "?limit=2", r#"{"ttl": 60}"#).await;
    assert_eq!(got, ids[..2]);
    app.store.clock.advance_secs(59);
    let (_, got, _) = claim(&c, "q1", "", r#"{"ttl": 60}"#).await;
    assert_eq!(got, ids[2..]);
    assert_eq!(claim_status(&c, "q1", "{}").await, 204);
    app.store.clock.advance_secs(2);
    // The first claim expired: its messages come back, in order, under a new claim.
    let (cid2, got, body) = claim(&c, "q1", "", "{}").await;
    assert_eq!(got, ids[..2]);
    assert_ne!(cid1, cid2);
    assert!(body["messages"][0]["href"].as_str().unwrap().ends_with(&format!("?claim_id={cid2}")));
    assert_eq!(c.get(&format!("/v2/queues/q1/claims/{cid1}")).await.status, 404);
    // The old claim id cannot delete them now (they are under another live claim).
    assert_eq!(c.delete(&format!("/v2/queues/q1/messages/{}?claim_id={cid1}", ids[0])).await.status, 403);
    // Claims are not affected by echo: the producer claimed its own messages throughout.
}

#[tokio::test]
async fn delayed_messages_are_not_claimable_until_due() {
    let app = app().await;
    let c = Client::new(&app);
    c.put("/v2/queues/dq", Some(r#"{"_default_message_delay": 20}"#)).await;
    let ids = post(&c, "dq", r#"{"messages": [{"body": 1}, {"body": 2, "delay": 5}, {"body": 3, "delay": 0}]}"#).await;
    let (_, got, _) = claim(&c, "dq", "", "{}").await;
    assert_eq!(got, [ids[2].clone()]);
    assert_eq!(claim_status(&c, "dq", "{}").await, 204);
    app.store.clock.advance_secs(5);
    let (_, got, _) = claim(&c, "dq", "", "{}").await;
    assert_eq!(got, [ids[1].clone()]);
    app.store.clock.advance_secs(15);
    let (_, got, _) = claim(&c, "dq", "", "{}").await;
    assert_eq!(got, [ids[0].clone()]);
}

// ---------------------------------------------------------------------------------------------
// Dead-letter queues (docs/api.md#claims-dead-letter)

#[tokio::test]
async fn dead_letter_queue() {
    let app = app().await;
    let c = Client::new(&app);
    let other = c.with_client_id(OTHER_CLIENT);
    let meta = r#"{"_max_claim_count": 2, "_dead_letter_queue": "dlq", "_dead_letter_queue_messages_ttl": 120}"#;
    assert_eq!(c.put("/v2/queues/q1", Some(meta)).await.status, 201);
    let ids = post(&c, "q1", r#"{"messages": [{"body": "poison", "ttl": 3600}]}"#).await;
    // Claim #1, released: the count is kept across the release.
    let (cid1, got, _) = claim(&c, "q1", "", r#"{"ttl": 60}"#).await;
    assert_eq!(got, ids);
    assert_eq!(c.delete(&format!("/v2/queues/q1/claims/{cid1}")).await.status, 204);
    // Claim #2, left to expire.
    let (_, got, _) = claim(&c, "q1", "", r#"{"ttl": 60}"#).await;
    assert_eq!(got, ids);
    app.store.clock.advance_secs(61);
    // Claim #3: the message is dead-lettered instead → 204.
    let r = c.post("/v2/queues/q1/claims", r#"{"ttl": 60}"#).await;
    assert_eq!(r.status, 204, "{}", text(&r));
    assert_eq!(get_message(&c, "q1", &ids[0]).await.0, 404);
    assert_eq!(c.get("/v2/queues/q1/stats").await.json_body()["messages"]["total"], json!(0));
    // The DLQ holds it (the DLQ queue record exists), under the claim it was just given: hidden from
    // plain listing until that claim expires.
    assert_eq!(sj(&other.get("/v2/queues/dlq/messages").await).1["messages"], json!([]));
    let (_, queues) = sj(&c.get("/v2/queues").await);
    let names: Vec<&str> = queues["queues"].as_array().unwrap().iter().map(|q| q["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["dlq", "q1"]);
    let (_, dlq) = sj(&other.get("/v2/queues/dlq/messages?include_claimed=true").await);
    let msgs = dlq["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["body"], json!("poison"));
    assert_eq!(msgs[0]["ttl"], json!(120), "_dead_letter_queue_messages_ttl applies");
    assert_eq!(msgs[0]["checksum"], json!(zaqar::store::messages::checksum(&json!("poison"))));
    // Once that claim expires it is listed normally (spec example: DLQ listing → 200 with it).
    app.store.clock.advance_secs(61);
    let (s, dlq) = sj(&other.get("/v2/queues/dlq/messages").await);
    assert_eq!(s, 200);
    assert_eq!(dlq["messages"][0]["body"], json!("poison"));
    // Without both settings there is no dead-lettering.
    c.put("/v2/queues/q2", Some(r#"{"_max_claim_count": 1}"#)).await;
    let ids = post(&c, "q2", r#"{"messages": [{"body": "x"}]}"#).await;
    for _ in 0..3 {
        let (cid, got, _) = claim(&c, "q2", "", "{}").await;
        assert_eq!(got, ids);
        c.delete(&format!("/v2/queues/q2/claims/{cid}")).await;
    }
}

#[tokio::test]
async fn dead_letter_keeps_other_messages_flowing() {
    let app = app().await;
    let c = Client::new(&app);
    c.put("/v2/queues/q1", Some(r#"{"_max_claim_count": 1, "_dead_letter_queue": "dead"}"#)).await;
    let first = post(&c, "q1", r#"{"messages": [{"body": "a"}, {"body": "b"}]}"#).await;
    let (cid, got, _) = claim(&c, "q1", "", "{}").await;
    assert_eq!(got, first);
    c.delete(&format!("/v2/queues/q1/claims/{cid}")).await;
    let fresh = post(&c, "q1", r#"{"messages": [{"body": "c"}]}"#).await;
    // a and b reached their limit and move; c is delivered.
    let (_, got, _) = claim(&c, "q1", "", "{}").await;
    assert_eq!(got, fresh);
    let (_, dead) = sj(&c.get("/v2/queues/dead/messages?echo=true&include_claimed=true").await);
    let bodies: Vec<Value> = dead["messages"].as_array().unwrap().iter().map(|m| m["body"].clone()).collect();
    assert_eq!(bodies, [json!("a"), json!("b")]);
    // Without a DLQ ttl the message keeps its ttl.
    assert_eq!(dead["messages"][0]["ttl"], json!(3600));
}

// ---------------------------------------------------------------------------------------------
// The claim floor: cost does not grow with the number of claimed messages at the head

async fn claim_cost_with_claimed_head(app: &App, n: usize) -> (f64, u64) {
    let c = Client::new(app);
    post_n(&c, "floor", n + 5, 3600).await;
    let mut claimed = 0;
    while claimed < n {
        let limit = (n - claimed).min(20);
        let (_, got, _) = claim(&c, "floor", &format!("?limit={limit}"), r#"{"ttl": 3600}"#).await;
        assert_eq!(got.len(), limit);
        claimed += limit;
    }
    let before = app.store.usage.snapshot();
    let (_, got, _) = claim(&c, "floor", "?limit=5", r#"{"ttl": 3600}"#).await;
    let used = app.store.usage.snapshot() - before;
    assert_eq!(got.len(), 5);
    (used.read_units, used.requests)
}

#[tokio::test]
async fn claim_floor_keeps_cost_flat() {
    let app = app().await;
    let (small_reads, small_requests) = claim_cost_with_claimed_head(&app, 20).await;
    let (big_reads, big_requests) = claim_cost_with_claimed_head(&app, 200).await;
    println!("claim of 5 behind 20 claimed: {small_reads} read units, {small_requests} requests");
    println!("claim of 5 behind 200 claimed: {big_reads} read units, {big_requests} requests");
    assert!(small_reads > 0.0, "consumed capacity must be reported");
    assert!(big_reads <= small_reads + 2.0, "read units grew with the claimed head: {small_reads} → {big_reads}");
    assert!(
        big_requests <= small_requests + 2,
        "requests grew with the claimed head: {small_requests} → {big_requests}"
    );
}

#[tokio::test]
async fn floor_does_not_hide_released_or_expired_messages() {
    let app = app().await;
    let c = Client::new(&app);
    let ids = post_n(&c, "q1", 60, 3600).await;
    let mut cids = Vec::new();
    for _ in 0..3 {
        let (cid, got, _) = claim(&c, "q1", "?limit=20", r#"{"ttl": 600}"#).await;
        assert_eq!(got.len(), 20);
        cids.push(cid);
    }
    // Release the middle claim: its messages are below the floor and must be claimable again.
    c.delete(&format!("/v2/queues/q1/claims/{}", cids[1])).await;
    let (_, got, _) = claim(&c, "q1", "?limit=20", r#"{"ttl": 60}"#).await;
    assert_eq!(got, ids[20..40]);
    // Renewing the first claim shorter ends it earlier than the floor assumed.
    assert_eq!(
        c.patch(&format!("/v2/queues/q1/claims/{}", cids[0]), "application/json", r#"{"ttl": 60}"#).await.status,
        204
    );
    app.store.clock.advance_secs(61);
    let (_, got, _) = claim(&c, "q1", "?limit=20", r#"{"ttl": 3600}"#).await;
    assert_eq!(got, ids[..20], "FIFO order");
    // ids[20..40] (ttl 60 claim) expired as well.
    let (_, got, _) = claim(&c, "q1", "?limit=20", r#"{"ttl": 3600}"#).await;
    assert_eq!(got, ids[20..40]);
    // The rest remain claimed until their 600 s.
    assert_eq!(claim_status(&c, "q1", "{}").await, 204);
    app.store.clock.advance_secs(600);
    let (_, got, _) = claim(&c, "q1", "?limit=20", "{}").await;
    assert_eq!(got, ids[40..]);
}

/// A claim that extends a message's life (claim ttl + grace beyond its expiry, as Zaqar does) moves it
/// into a later expiry bucket, which a later post may have opened: once the message's first bucket has
/// ended, the message must still be listed and claimable, not skipped by the expiry floor.
#[tokio::test]
async fn a_message_whose_life_a_claim_extended_outlives_its_first_expiry_bucket() {
    let app = app().await;
    let c = Client::new(&app);
    let (short, long) = post_short_then_long(&c, "extended", 60, 300).await;
    // Claimed for 240 s with 60 s of grace: "short" now lives until the same time as "long".
    let (_, got, _) = claim(&c, "extended", "", r#"{"ttl": 240, "grace": 60}"#).await;
    assert_eq!(got, [short.clone(), long.clone()].concat());
    app.store.clock.advance_secs(241);
    both_back(&c, "extended", short, long).await;
}

/// As above, with the life extended by a renewal rather than by the claim.
#[tokio::test]
async fn a_message_whose_life_a_renewal_extended_outlives_its_first_expiry_bucket() {
    let app = app().await;
    let c = Client::new(&app);
    let (short, long) = post_short_then_long(&c, "renewed", 180, 360).await;
    let (cid, got, _) = claim(&c, "renewed", "", r#"{"ttl": 60, "grace": 60}"#).await;
    assert_eq!(got, [short.clone(), long.clone()].concat());
    let r =
        c.patch(&format!("/v2/queues/renewed/claims/{cid}"), "application/json", r#"{"ttl": 300, "grace": 60}"#).await;
    assert_eq!(r.status, 204, "{}", text(&r));
    app.store.clock.advance_secs(301);
    both_back(&c, "renewed", short, long).await;
}

/// A new queue with a message "short" (TTL `short_ttl`) and then "long" (`long_ttl`): their ids.
async fn post_short_then_long(c: &Client<'_>, q: &str, short_ttl: u32, long_ttl: u32) -> (Vec<String>, Vec<String>) {
    assert_eq!(c.put(&format!("/v2/queues/{q}"), None).await.status, 201);
    let short = post(c, q, &json!({"messages": [{"body": "short", "ttl": short_ttl}]}).to_string()).await;
    let long = post(c, q, &json!({"messages": [{"body": "long", "ttl": long_ttl}]}).to_string()).await;
    (short, long)
}

/// Once the claim has ended, both messages are alive: listed, claimed in order, and counted.
async fn both_back(c: &Client<'_>, q: &str, short: Vec<String>, long: Vec<String>) {
    let (s, listed) = sj(&c.get(&format!("/v2/queues/{q}/messages?echo=true")).await);
    assert_eq!(s, 200);
    let bodies: Vec<&str> =
        listed["messages"].as_array().unwrap().iter().map(|m| m["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["short", "long"], "the claim ended; both messages are alive");
    let (_, got, _) = claim(c, q, "", r#"{"ttl": 60}"#).await;
    assert_eq!(got, [short, long].concat());
    let (_, stats) = sj(&c.get(&format!("/v2/queues/{q}/stats")).await);
    assert_eq!(stats["messages"]["total"], json!(2));
}

// Range claims (`shared/src/store/ranges.rs`): a claim of messages nobody has touched yet is one write on
// the shard's head, and each delete under it one more; what the claim holds reads as claimed everywhere.

async fn stats_of(c: &Client<'_>, q: &str) -> (u64, u64) {
    let (s, v) = sj(&c.get(&format!("/v2/queues/{q}/stats")).await);
    assert_eq!(s, 200, "{v}");
    (v["messages"]["total"].as_u64().unwrap(), v["messages"]["claimed"].as_u64().unwrap())
}

async fn listed(c: &Client<'_>, q: &str, include_claimed: bool) -> Vec<String> {
    let r = c.get(&format!("/v2/queues/{q}/messages?echo=true&limit=20&include_claimed={include_claimed}")).await;
    if r.status == 204 {
        return vec![];
    }
    ids_of(&r.json_body())
}

#[tokio::test]
async fn a_claim_of_fresh_messages_is_one_write_and_each_delete_under_it_one_more() {
    let app = app().await;
    let c = Client::new(&app);
    let q = "range-writes";
    let ids = post_n(&c, q, 10, 3600).await;
    let before = usage(&app);
    let (cid, claimed, _) = claim(&c, q, "?limit=10", r#"{"ttl": 60, "grace": 60}"#).await;
    let used = usage(&app) - before;
    assert_eq!(claimed, ids);
    assert_eq!(used.write_units, 1.0, "the claim: {used:?}");
    // Held wherever it is read: listings, get, stats, another claim, a delete without the claim id.
    assert_eq!(listed(&c, q, false).await, Vec::<String>::new());
    assert_eq!(listed(&c, q, true).await, ids);
    let (s, one) = sj(&c.get(&format!("/v2/queues/{q}/messages/{}", ids[0])).await);
    assert_eq!(s, 200);
    assert!(one["href"].as_str().unwrap().ends_with(&format!("?claim_id={cid}")), "{one}");
    assert_eq!(stats_of(&c, q).await, (10, 10));
    assert_eq!(claim_status(&c, q, r#"{"ttl": 60}"#).await, 204);
    assert_eq!(c.delete(&format!("/v2/queues/{q}/messages/{}", ids[0])).await.status, 403);
    for (i, id) in ids.iter().enumerate() {
        let before = usage(&app);
        assert_eq!(c.delete(&format!("/v2/queues/{q}/messages/{id}?claim_id={cid}")).await.status, 204);
        let used = usage(&app) - before;
        assert_eq!(used.write_units, 1.0, "delete {i}: {used:?}");
        let left = 9 - i as u64;
        assert_eq!(stats_of(&c, q).await, (left, left), "after delete {i}");
        assert_eq!(c.get(&format!("/v2/queues/{q}/messages/{id}")).await.status, 404);
        // Again: already deleted, nothing written.
        let before = usage(&app);
        assert_eq!(c.delete(&format!("/v2/queues/{q}/messages/{id}?claim_id={cid}")).await.status, 204);
        assert_eq!((usage(&app) - before).write_units, 0.0);
    }
    assert_eq!(listed(&c, q, true).await, Vec::<String>::new());
    assert_eq!(c.get(&format!("/v2/queues/{q}/claims/{cid}")).await.status, 404);
    // The last delete took the claim off the head; the deleted messages stay removed there.
    let head = raw_head(&app, &c.project, q, 0).await.unwrap();
    assert!(!head.keys().any(|a| a.starts_with("rg")), "{head:?}");
    assert_eq!(raw_strings(&head, "gone").len(), 1, "{head:?}");
}

#[tokio::test]
async fn releasing_a_range_claim_frees_what_it_held_and_keeps_what_was_deleted_removed() {
    let app = app().await;
    let c = Client::new(&app);
    let q = "range-release";
    let ids = post_n(&c, q, 5, 3600).await;
    let (cid, claimed, _) = claim(&c, q, "?limit=5", r#"{"ttl": 60, "grace": 60}"#).await;
    assert_eq!(claimed, ids);
    for id in [&ids[1], &ids[3]] {
        assert_eq!(c.delete(&format!("/v2/queues/{q}/messages/{id}?claim_id={cid}")).await.status, 204);
    }
    assert_eq!(c.delete(&format!("/v2/queues/{q}/claims/{cid}")).await.status, 204);
    let rest = vec![ids[0].clone(), ids[2].clone(), ids[4].clone()];
    assert_eq!(stats_of(&c, q).await, (3, 0));
    assert_eq!(listed(&c, q, false).await, rest);
    assert_eq!(c.get(&format!("/v2/queues/{q}/messages/{}", ids[1])).await.status, 404);
    assert_eq!(c.get(&format!("/v2/queues/{q}/claims/{cid}")).await.status, 404);
    let (_, again, _) = claim(&c, q, "?limit=5", r#"{"ttl": 60}"#).await;
    assert_eq!(again, rest);
    assert_eq!(stats_of(&c, q).await, (3, 3));
}

#[tokio::test]
async fn a_range_claim_that_ran_out_hands_its_messages_to_the_next_claim() {
    let app = app().await;
    let c = Client::new(&app);
    let q = "range-expiry";
    let ids = post_n(&c, q, 4, 3600).await;
    let (cid, _, _) = claim(&c, q, "?limit=4", r#"{"ttl": 60, "grace": 60}"#).await;
    assert_eq!(c.delete(&format!("/v2/queues/{q}/messages/{}?claim_id={cid}", ids[0])).await.status, 204);
    advance(&app, 61);
    // Ran out: it holds nothing, but its id still deletes what it held while nobody claimed it since
    // (as Zaqar's MongoDB driver does).
    assert_eq!(stats_of(&c, q).await, (3, 0));
    assert_eq!(c.get(&format!("/v2/queues/{q}/claims/{cid}")).await.status, 404);
    assert_eq!(c.delete(&format!("/v2/queues/{q}/messages/{}?claim_id={cid}", ids[3])).await.status, 204);
    assert_eq!(stats_of(&c, q).await, (2, 0));
    let (next, again, _) = claim(&c, q, "?limit=4", r#"{"ttl": 60}"#).await;
    assert_eq!(again, ids[1..3].to_vec());
    assert_eq!(stats_of(&c, q).await, (2, 2));
    // Handed to the next claim: the old id no longer deletes them.
    let r = c.delete(&format!("/v2/queues/{q}/messages/{}?claim_id={cid}", ids[2])).await;
    assert_eq!(r.status, 403, "{}", text(&r));
    // And they count that claim: a pop after a release shows it.
    let item = raw_message(&app, &c.project, q, &ids[2]).await.unwrap();
    assert_eq!(raw_i64(&item, "claim_count"), Some(2), "{item:?}");
    // Handed back: the old entry is off the head, the deleted message stays removed.
    let head = raw_head(&app, &c.project, q, 0).await.unwrap();
    assert!(!head.contains_key(&format!("rg{cid}")), "{head:?}");
    assert_eq!(c.get(&format!("/v2/queues/{q}/messages/{}", ids[0])).await.status, 404);
    assert_eq!(c.delete(&format!("/v2/queues/{q}/messages/{}?claim_id={next}", ids[1])).await.status, 204);
    assert_eq!(stats_of(&c, q).await, (1, 1));
}

#[tokio::test]
async fn renewing_a_range_claim_makes_it_a_claim_of_its_messages() {
    let app = app().await;
    let c = Client::new(&app);
    let q = "range-renewal";
    let ids = post_n(&c, q, 3, 180).await;
    let (cid, _, _) = claim(&c, q, "?limit=3", r#"{"ttl": 60, "grace": 60}"#).await;
    assert!(raw_head(&app, &c.project, q, 0).await.unwrap().contains_key(&format!("rg{cid}")));
    assert_eq!(c.delete(&format!("/v2/queues/{q}/messages/{}?claim_id={cid}", ids[0])).await.status, 204);
    // A renewal past the messages' lives: it extends them, as for any claim.
    let r = c.patch(&format!("/v2/queues/{q}/claims/{cid}"), "application/json", r#"{"ttl": 300, "grace": 60}"#).await;
    assert_eq!(r.status, 204, "{}", text(&r));
    assert!(!raw_head(&app, &c.project, q, 0).await.unwrap().contains_key(&format!("rg{cid}")));
    let item = raw_message(&app, &c.project, q, &ids[1]).await.unwrap();
    assert_eq!(item.get("claim_id"), Some(&aws_sdk_dynamodb::types::AttributeValue::S(cid.clone())));
    advance(&app, 200);
    let (s, got) = sj(&c.get(&format!("/v2/queues/{q}/claims/{cid}")).await);
    assert_eq!(s, 200, "{got}");
    assert_eq!(ids_of(&got), ids[1..].to_vec());
    assert_eq!(stats_of(&c, q).await, (2, 2));
    assert_eq!(c.get(&format!("/v2/queues/{q}/messages/{}", ids[0])).await.status, 404);
    assert_eq!(c.delete(&format!("/v2/queues/{q}/messages/{}?claim_id={cid}", ids[2])).await.status, 204);
    assert_eq!(stats_of(&c, q).await, (1, 1));
}

#[tokio::test]
async fn pops_and_deletes_without_a_claim_leave_what_a_range_claim_holds() {
    let app = app().await;
    let c = Client::new(&app);
    let q = "range-pop";
    let ids = post_n(&c, q, 6, 3600).await;
    let (cid, held, _) = claim(&c, q, "?limit=3", r#"{"ttl": 60, "grace": 60}"#).await;
    assert_eq!(held, ids[..3].to_vec());
    // A pop takes the fresh ones only, after moving the fresh region past them.
    let (s, popped) = sj(&c.delete(&format!("/v2/queues/{q}/messages?pop=10")).await);
    assert_eq!(s, 200, "{popped}");
    assert_eq!(ids_of(&popped), ids[3..].to_vec());
    assert_eq!(c.delete(&format!("/v2/queues/{q}/messages/{}", ids[1])).await.status, 403);
    let more = post_n(&c, q, 2, 3600).await;
    // A delete without a claim of a fresh message, then a claim: it gets the other one, in its range.
    assert_eq!(c.delete(&format!("/v2/queues/{q}/messages/{}", more[0])).await.status, 204);
    let (next, got, _) = claim(&c, q, "?limit=10", r#"{"ttl": 60}"#).await;
    assert_eq!(got, vec![more[1].clone()]);
    assert!(raw_head(&app, &c.project, q, 0).await.unwrap().contains_key(&format!("rg{next}")));
    assert_eq!(stats_of(&c, q).await, (4, 4));
    assert_eq!(c.delete(&format!("/v2/queues/{q}/claims/{cid}")).await.status, 204);
    assert_eq!(stats_of(&c, q).await, (4, 1));
}

#[tokio::test]
async fn a_claim_passes_a_long_run_of_expired_messages_in_the_fresh_region() {
    let app = app().await;
    let c = Client::new(&app);
    let q = "range-expired-run";
    // A long-lived first message keeps the expiry floor below the short-lived ones, so claims read them.
    let first = post_n(&c, q, 1, 3600).await;
    post_n(&c, q, 300, 60).await;
    let last = post_n(&c, q, 1, 3600).await;
    let (_, got, _) = claim(&c, q, "?limit=1", r#"{"ttl": 60}"#).await;
    assert_eq!(got, first);
    advance(&app, 61);
    // The first one's claim ran out: it comes back, then the last one, past the 300 expired ones.
    let (_, got, _) = claim(&c, q, "?limit=5", r#"{"ttl": 60}"#).await;
    assert_eq!(got, [first, last].concat());
}

#[tokio::test]
async fn deleting_a_fresh_message_again_after_the_live_floor_passed_it_counts_it_once() {
    let app = app().await;
    let c = Client::new(&app);
    let q = "fresh-again";
    let ids = post_n(&c, q, 40, 3600).await;
    // Deleted without a claim, nobody having touched them: on the head alone, one write each.
    for id in &ids[..35] {
        let before = usage(&app);
        assert_eq!(c.delete(&format!("/v2/queues/{q}/messages/{id}")).await.status, 204);
        assert_eq!((usage(&app) - before).write_units, 1.0);
    }
    assert_eq!(stats_of(&c, q).await, (5, 0));
    // A listing passes the removed run and raises the live floor past it, which drops its gone range.
    assert_eq!(listed(&c, q, false).await, ids[35..].to_vec());
    let head = raw_head(&app, &c.project, q, 0).await.unwrap();
    assert!(raw_strings(&head, "gone").is_empty(), "{head:?}");
    // Deleted again (a client retrying late): absent, not counted out a second time.
    assert_eq!(c.delete(&format!("/v2/queues/{q}/messages/{}", ids[0])).await.status, 204);
    assert_eq!(c.delete(&format!("/v2/queues/{q}/messages?ids={},{}", ids[1], ids[2])).await.status, 204);
    assert_eq!(c.get(&format!("/v2/queues/{q}/messages/{}", ids[0])).await.status, 404);
    assert_eq!(stats_of(&c, q).await, (5, 0));
}
