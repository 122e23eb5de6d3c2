//! The DynamoDB key layout. This module alone builds keys and names; everything else asks it.
//!
//! One table, string keys `pk` (partition) and `sk` (sort), native TTL on `expires_at` (epoch seconds),
//! stream with new and old images.
//!
//! | item | pk | sk | notes |
//! |---|---|---|---|
//! | queue record | `P#{project}` | `Q#{queue}` | `meta` (JSON text), `created_ms`; listing = Query on pk |
//! | queue head | `Q#{queue}#{project}` | `H` | `next_k` (last reserved sequence), `committed_k` (visible watermark), claim floor |
//! | message | `Q#{queue}#{project}` | `M#{k:020}` | `id`, `body`, `ttl_s`, `created_ms`, `expires_ms`, claim fields |
//! | claim | `Q#{queue}#{project}` | `L#{claim id}` | `ttl_s`, `grace_s`, `updated_ms`, `until_ms`, `ks` (sequence numbers) |
//! | subscription | `Q#{queue}#{project}` | `S#{subscription id}` | `subscriber`, `options`, `confirmed`, `expires_ms` |
//! | subscriber marker | `Q#{queue}#{project}` | `U#{sha256(subscriber)}` | `sid`: makes (queue, subscriber) unique |
//! | pool | `POOLS` | `{pool}` | admin |
//! | flavor | `F#{project}` | `{flavor}` | admin |
//!
//! Queue names cannot contain `#`, so `Q#{queue}#{project}` is unambiguous for any project id.
//! Message ids embed the sequence number (`{k:016x}` + 8 random hex digits), so a message is one
//! GetItem away without an index; the random tail stops a guessed id from naming a re-created queue's
//! message. The stream's fan-out filter is "INSERT and sk begins with `M#`".

use crate::types::{ProjectId, QueueName};
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

pub const PK: &str = "pk";
pub const SK: &str = "sk";
pub const TTL_ATTR: &str = "expires_at";
pub const HEAD_SK: &str = "H";
pub const MESSAGE_PREFIX: &str = "M#";
pub const CLAIM_PREFIX: &str = "L#";
pub const SUBSCRIPTION_PREFIX: &str = "S#";
pub const QUEUE_PREFIX: &str = "Q#";
pub const SUBSCRIBER_PREFIX: &str = "U#";
/// Sorts after every subscription-related sort key (`S#`, `U#`): the end of a purge's range.
pub const SUBSCRIPTIONS_END: &str = "V";
pub const POOLS_PK: &str = "POOLS";

pub type Item = HashMap<String, AttributeValue>;

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub fn key(pk: String, sk: String) -> Item {
    HashMap::from([(PK.to_string(), s(pk)), (SK.to_string(), s(sk))])
}

pub fn project_pk(project: &ProjectId) -> String {
    format!("P#{}", project.as_str())
}

pub fn queue_record_sk(queue: &str) -> String {
    format!("{QUEUE_PREFIX}{queue}")
}

pub fn queue_record(project: &ProjectId, queue: &QueueName) -> Item {
    key(project_pk(project), queue_record_sk(queue.as_str()))
}

pub fn queue_pk(project: &ProjectId, queue: &QueueName) -> String {
    format!("Q#{}#{}", queue.as_str(), project.as_str())
}

/// Splits a queue partition key back into (queue, project), for stream records.
pub fn parse_queue_pk(pk: &str) -> Option<(QueueName, ProjectId)> {
    let rest = pk.strip_prefix("Q#")?;
    let (queue, project) = rest.split_once('#')?;
    Some((QueueName::parse(queue).ok()?, ProjectId::parse(project).ok()?))
}

pub fn head(project: &ProjectId, queue: &QueueName) -> Item {
    key(queue_pk(project, queue), HEAD_SK.to_string())
}

pub fn message_sk(k: u64) -> String {
    format!("{MESSAGE_PREFIX}{k:020}")
}

pub fn message_k(sk: &str) -> Option<u64> {
    sk.strip_prefix(MESSAGE_PREFIX)?.parse().ok()
}

pub fn message(project: &ProjectId, queue: &QueueName, k: u64) -> Item {
    key(queue_pk(project, queue), message_sk(k))
}

pub fn claim(project: &ProjectId, queue: &QueueName, claim_id: &str) -> Item {
    key(queue_pk(project, queue), format!("{CLAIM_PREFIX}{claim_id}"))
}

pub fn subscription_sk(sid: &str) -> String {
    format!("{SUBSCRIPTION_PREFIX}{sid}")
}

pub fn subscription(project: &ProjectId, queue: &QueueName, sid: &str) -> Item {
    key(queue_pk(project, queue), subscription_sk(sid))
}

/// The marker that holds a subscriber URI for one subscription of the queue (uniqueness, §9.1).
pub fn subscriber_marker(project: &ProjectId, queue: &QueueName, subscriber: &str) -> Item {
    use sha2::{Digest, Sha256};
    let digest: String = Sha256::digest(subscriber.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    key(queue_pk(project, queue), format!("{SUBSCRIBER_PREFIX}{digest}"))
}

pub fn pool(name: &str) -> Item {
    key(POOLS_PK.to_string(), name.to_string())
}

pub fn flavor_pk(project: &ProjectId) -> String {
    format!("F#{}", project.as_str())
}

pub fn flavor(project: &ProjectId, name: &str) -> Item {
    key(flavor_pk(project), name.to_string())
}

/// A message id for sequence number `k`: 24 lowercase hex digits, like a MongoDB ObjectId.
pub fn new_message_id(k: u64) -> String {
    format!("{k:016x}{:08x}", rand::random::<u32>())
}

/// The sequence number inside a message id, if the id has our shape.
pub fn message_id_k(id: &str) -> Option<u64> {
    if id.len() != 24 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(&id[..16], 16).ok()
}

/// A fresh claim id: 24 random hex digits.
pub fn new_claim_id() -> String {
    format!("{:024x}", rand::random::<u128>() >> 32)
}

/// Whether a claim id has the shape we issue (anything else is "malformed" to Zaqar).
pub fn is_claim_id(id: &str) -> bool {
    id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Subscription ids sort by creation time (Zaqar lists subscriptions in creation order).
pub fn new_subscription_id(now_ms: i64) -> String {
    format!("{:012x}{:012x}", now_ms.max(0) as u64 & 0xffff_ffff_ffff, rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// Condition expressions, named once so the exclusivity rules are written in one place.
pub mod cond {
    /// The item exists.
    pub const EXISTS: &str = "attribute_exists(pk)";
    /// Create only.
    pub const NOT_EXISTS: &str = "attribute_not_exists(pk)";
    /// A message may be claimed: alive, not delayed, not under a live claim (`:now` in ms).
    pub const CLAIMABLE: &str = "attribute_exists(pk) AND expires_ms > :now \
        AND (attribute_not_exists(claim_until_ms) OR claim_until_ms <= :now) \
        AND (attribute_not_exists(delay_until_ms) OR delay_until_ms <= :now)";
    /// A message may be popped: alive and not under a live claim (delay ignored, as in Zaqar).
    pub const POPPABLE: &str = "attribute_exists(pk) AND expires_ms > :now \
        AND (attribute_not_exists(claim_until_ms) OR claim_until_ms <= :now)";
    /// The message carries this claim id (`:cid`).
    pub const HELD_BY: &str = "claim_id = :cid";
    /// The message is not under a live claim.
    pub const UNCLAIMED: &str = "attribute_not_exists(claim_until_ms) OR claim_until_ms <= :now";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        let id = new_message_id(12345);
        assert_eq!(id.len(), 24);
        assert_eq!(message_id_k(&id), Some(12345));
        assert_eq!(message_id_k("zz"), None);
        assert_eq!(message_k(&message_sk(77)), Some(77));
        assert!(message_sk(9) < message_sk(10));
        assert!(is_claim_id(&new_claim_id()));
        assert!(!is_claim_id("abc"));
        let a = new_subscription_id(1000);
        let b = new_subscription_id(2000);
        assert!(a < b && a.len() == 24);
    }

    #[test]
    fn queue_pk_round_trips_with_hash_in_project() {
        let p = ProjectId::parse("a#b").unwrap();
        let q = QueueName::parse("q.1").unwrap();
        let (q2, p2) = parse_queue_pk(&queue_pk(&p, &q)).unwrap();
        assert_eq!((q2, p2), (q, p));
    }
}
