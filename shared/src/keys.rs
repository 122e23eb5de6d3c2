//! The DynamoDB key layout. This module alone builds keys and names; everything else asks it.
//!
//! One table, string keys `pk` (partition) and `sk` (sort), native TTL on `expires_at` (epoch seconds),
//! stream with new and old images.
//!
//! | item | pk | sk | notes |
//! |---|---|---|---|
//! | queue record | `P#{project}` | `Q#{queue}` | `meta` (JSON text), `created_ms`, `gen`, `shards` |
//! | shard head | `H#{queue}#{gen}#{shard}#{project}` | `H` | sequence, watermark, leases, holes, floors, counters, range claims (`rc_k`, `rg{claim id}`, `gone`) |
//! | message | `M#{queue}#{gen}#{shard}#{project}` | `M#{k:020}` | `id`, `body`, `ttl_s`, `created_ms`, `expires_ms`, claim fields |
//! | claim | `M#{queue}#{gen}#{shard}#{project}` | `L#{claim id}` | `ttl_s`, `grace_s`, `updated_ms`, `until_ms`, `ks` |
//! | subscription | `Q#{queue}#{project}` | `S#{subscription id}` | `subscriber`, `options`, `confirmed`, `expires_ms` |
//! | subscriber marker | `Q#{queue}#{project}` | `U#{sha256(subscriber)}` | `sid`: makes (queue, subscriber) unique |
//! | pool | `POOLS` | `{pool}` | admin |
//! | flavor | `F#{project}` | `{flavor}` | admin |
//!
//! Why this shape:
//! - **Generations.** A queue's messages, claims and heads live under partition keys that carry the queue's
//!   generation `gen` (its creation time in microseconds and a random tail, set when the queue record is
//!   created and replaced by a purge). Deleting or
//!   purging a queue is one write to the queue record plus one tombstone per shard head, whatever the depth:
//!   the old partitions become unreachable at once and native TTL (free) removes their items later. A queue
//!   re-created under the same name gets a new generation and is empty at once. Tombstoned heads (`dead`)
//!   refuse new reservations, so a producer holding a stale generation learns it before anything is
//!   acknowledged. A generation's sequence numbers start at its creation microsecond
//!   ([`generation_first_k`]), above every number of the generations before it (a shard takes far fewer
//!   than a million posts a second), so a listing marker from before a purge still sees what follows it, as
//!   Zaqar's marker counter, which a purge keeps, does.
//! - **Shards.** A queue is spread over `shards` partition keys (1 by default, `_shards` metadata to raise it),
//!   each with its own head, because DynamoDB caps one partition key at 1,000 WCU/s and 3,000 RCU/s. The head
//!   lives under its own partition key (`H#…`) so head writes and message writes do not share one key's budget.
//!   FIFO holds within a shard; a producer's messages go to the shard chosen by its Client-ID.
//! - **Subscriptions** are keyed by queue name without a generation: they outlive a queue's deletion, as in
//!   Zaqar, and are removed only by a purge that names them.
//! - **Range claims live on the head.** A claim of a run of messages nobody has touched yet is recorded on
//!   the shard head, not on the messages, and so are deletes under it (`store/ranges.rs`): one write per
//!   claim and one per delete, and readers learn both from the head they read anyway.
//! - **Message items stay until their natural expiry.** A delete, a pop or a dead-letter move expires a
//!   message in place (`expires_ms` 0, body removed) and keeps its TTL attribute; claims only lengthen
//!   it. So a committed sequence number with no item is one whose message never arrived, or one past
//!   its expiry: what a single post's pending write relies on (`store/pending.rs`).
//!
//! Queue names cannot contain `#` and generations and shard numbers are hex/decimal, so every partition key
//! parses back unambiguously for any project id. Message ids embed the shard and sequence number
//! (`{shard:02x}{k:014x}` + 8 random hex digits), so a message is one GetItem away without an index; the
//! random tail stops a guessed id from naming another generation's message. The stream's fan-out filter is
//! "INSERT, sk begins with `M#` and `fo` is true" (see [`FANOUT_ATTR`]).

use crate::types::{ProjectId, QueueName};
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

pub const PK: &str = "pk";
pub const SK: &str = "sk";
pub const TTL_ATTR: &str = "expires_at";
/// Set (true) on messages of queues that have subscriptions: the stream filter passes only these to the
/// fan-out, so posting to a queue nobody subscribed to invokes nothing.
pub const FANOUT_ATTR: &str = "fo";
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

/// The subscriptions' partition (no generation: subscriptions outlive the queue).
pub fn queue_pk(project: &ProjectId, queue: &QueueName) -> String {
    format!("Q#{}#{}", queue.as_str(), project.as_str())
}

/// Splits a subscriptions partition key back into (queue, project), for stream records.
pub fn parse_queue_pk(pk: &str) -> Option<(QueueName, ProjectId)> {
    let rest = pk.strip_prefix("Q#")?;
    let (queue, project) = rest.split_once('#')?;
    Some((QueueName::parse(queue).ok()?, ProjectId::parse(project).ok()?))
}

/// The end (epoch seconds) of the expiry bucket counting a message in its shard head's `ex` map.
/// Buckets widen with the TTL so a head holds a bounded number of them (at most 60 one-minute buckets
/// for TTLs up to an hour, 96 quarter-hours up to a day, 336 hours up to Zaqar's 14-day maximum); a
/// message leaves `total` at most one bucket width after it expires (60 s, 15 min or 1 h).
pub fn expiry_bucket(expires_ms: i64, ttl_s: i64) -> i64 {
    let width = if ttl_s <= 3600 {
        60
    } else if ttl_s <= 86_400 {
        900
    } else {
        3600
    };
    let secs = expires_ms.div_euclid(1000) + i64::from(expires_ms.rem_euclid(1000) != 0);
    secs.div_euclid(width) * width + if secs.rem_euclid(width) == 0 { 0 } else { width }
}

/// Live claim ends a shard head counts before new claims on it end on coarser steps.
pub const CROWDED_CLAIM_ENDS: usize = 16;

/// When a claim of `ttl_s` seconds made at `now_ms` ends: on a whole second; or, when the shard head
/// already counts [`CROWDED_CLAIM_ENDS`] distinct claim ends (`crowded`), rounded *up* to a step of at
/// most 5 % of the TTL (whole seconds below a 40 s TTL; then 2 s, 5 s, 10 s, 15 s, 30 s, 1 min, 2 min,
/// 5 min, 10 min, 30 min as the TTL grows). The head's `cl` map has one entry per distinct claim end and every
/// head write pays for the map's size: whole seconds alone would let a fleet claiming every second with
/// a 12-hour TTL grow it to 43,200 entries (past DynamoDB's 400 KB item limit). Crowded, one TTL adds
/// at most about 40 live entries. `claimed` stays exact either way (messages carry the end counted);
/// a claim never ends before its TTL, and on a crowded queue at most 5 % after it.
pub fn claim_end_ms(now_ms: i64, ttl_s: i64, crowded: bool) -> i64 {
    const STEPS_S: [i64; 11] = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800];
    let step_s = if crowded { STEPS_S.iter().rev().copied().find(|step| step * 20 <= ttl_s).unwrap_or(1) } else { 1 };
    let step_ms = step_s * 1000;
    let end = now_ms.saturating_add(ttl_s.saturating_mul(1000));
    end.div_euclid(step_ms) * step_ms + if end.rem_euclid(step_ms) == 0 { 0 } else { step_ms }
}

/// One shard of one generation of a queue: where its messages, claims and head live.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shard {
    pub project: ProjectId,
    pub queue: QueueName,
    pub gen: String,
    pub index: u32,
}

/// The most shards a queue may have (`_shards`): bounds every per-queue fan-out over shards.
pub const MAX_SHARDS: u32 = 64;

impl Shard {
    fn suffix(&self) -> String {
        format!("{}#{}#{}#{}", self.queue.as_str(), self.gen, self.index, self.project.as_str())
    }

    /// The partition of this shard's messages and claims.
    pub fn messages_pk(&self) -> String {
        format!("M#{}", self.suffix())
    }

    /// The head item's key (its own partition key: head writes do not spend the messages' budget).
    pub fn head_key(&self) -> Item {
        key(format!("H#{}", self.suffix()), HEAD_SK.to_string())
    }

    pub fn message_key(&self, k: u64) -> Item {
        key(self.messages_pk(), message_sk(k))
    }

    pub fn claim_key(&self, claim_id: &str) -> Item {
        key(self.messages_pk(), format!("{CLAIM_PREFIX}{claim_id}"))
    }
}

/// Splits a message partition key back into its shard, for stream records.
pub fn parse_messages_pk(pk: &str) -> Option<Shard> {
    let rest = pk.strip_prefix("M#")?;
    let mut parts = rest.splitn(4, '#');
    let queue = QueueName::parse(parts.next()?).ok()?;
    let gen = parts.next()?.to_string();
    let index = parts.next()?.parse().ok()?;
    let project = ProjectId::parse(parts.next()?).ok()?;
    Some(Shard { project, queue, gen, index })
}

/// A fresh generation: the current Unix time in microseconds (13 hex digits) and 3 random ones.
pub fn new_generation() -> String {
    let micros = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
    format!("{:013x}{:03x}", (micros as u64) & 0x1f_ffff_ffff_ffff, rand::random::<u16>() & 0xfff)
}

/// The sequence number a generation's shards count from (their first message is this plus one): its
/// creation microsecond, or 0 for a generation of another shape.
pub fn generation_first_k(gen: &str) -> u64 {
    match gen.get(..13) {
        Some(micros) if gen.len() == 16 => u64::from_str_radix(micros, 16).unwrap_or(0).min(MAX_K / 2),
        _ => 0,
    }
}

pub fn message_sk(k: u64) -> String {
    format!("{MESSAGE_PREFIX}{k:020}")
}

pub fn message_k(sk: &str) -> Option<u64> {
    sk.strip_prefix(MESSAGE_PREFIX)?.parse().ok()
}

pub fn subscription_sk(sid: &str) -> String {
    format!("{SUBSCRIPTION_PREFIX}{sid}")
}

pub fn subscription(project: &ProjectId, queue: &QueueName, sid: &str) -> Item {
    key(queue_pk(project, queue), subscription_sk(sid))
}

/// The marker that holds a subscriber URI for one subscription of the queue (uniqueness, docs/api.md, Subscriptions: Create).
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

/// Sequence numbers stay below 2^56, so a message id holds the shard and `k` in 16 hex digits.
pub const MAX_K: u64 = (1 << 56) - 1;

/// A message id for sequence number `k` of a shard: 24 lowercase hex digits, like a MongoDB ObjectId.
pub fn new_message_id(shard: u32, k: u64) -> String {
    message_id_with_tail(shard, k, rand::random::<u32>())
}

pub fn message_id_with_tail(shard: u32, k: u64, tail: u32) -> String {
    format!("{:02x}{:014x}{tail:08x}", shard & 0xff, k & MAX_K)
}

/// The (shard, sequence number) inside a message id, if the id has our shape.
pub fn message_id_k(id: &str) -> Option<(u32, u64)> {
    if id.len() != 24 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((u32::from_str_radix(&id[..2], 16).ok()?, u64::from_str_radix(&id[2..16], 16).ok()?))
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
        let id = new_message_id(3, 12345);
        assert_eq!(id.len(), 24);
        assert_eq!(message_id_k(&id), Some((3, 12345)));
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
    fn buckets_round_up_and_widen_with_ttl() {
        assert_eq!(expiry_bucket(60_000, 60), 60);
        assert_eq!(expiry_bucket(60_001, 60), 120);
        assert_eq!(expiry_bucket(7_200_000, 7200), 7200);
        assert_eq!(expiry_bucket(7_200_001, 7200), 8100);
        assert_eq!(expiry_bucket(1, 1_209_600), 3600);
        assert_eq!(claim_end_ms(1_500, 60, false), 62_000);
        assert_eq!(claim_end_ms(2_000, 60, false), 62_000);
        assert_eq!(claim_end_ms(1_000, 3600, false), 3_601_000);
        // On a crowded head, longer claims end on coarser steps, never before now + ttl, at most 5 % after.
        assert_eq!(claim_end_ms(1_000, 39, true), 40_000);
        assert_eq!(claim_end_ms(1_000, 60, true), 62_000);
        assert_eq!(claim_end_ms(1_000, 3600, true), 3_720_000);
        assert_eq!(claim_end_ms(0, 43_200, true), 43_200_000);
        for ttl in [60, 61, 99, 100, 250, 300, 1000, 3599, 3600, 7200, 43_200] {
            for now in [0, 1, 999, 1_000, 123_456_789, 1_767_225_600_123] {
                let end = claim_end_ms(now, ttl, true);
                assert!(end >= now + ttl * 1000 && end <= now + ttl * 1000 + ttl * 50, "ttl {ttl} now {now}: {end}");
                assert_eq!(end % 1000, 0);
            }
        }
    }

    #[test]
    fn messages_pk_round_trips_with_hash_in_project() {
        let shard = Shard {
            project: ProjectId::parse("a#b").unwrap(),
            queue: QueueName::parse("q.1").unwrap(),
            gen: new_generation(),
            index: 7,
        };
        assert_eq!(parse_messages_pk(&shard.messages_pk()), Some(shard.clone()));
        assert_eq!(parse_messages_pk(&queue_pk(&shard.project, &shard.queue)), None);
    }
}
