//! Posts of one message in two writes: a reservation that also commits, then the message.
//!
//! The three-write post of `head.rs` (reserve, write, commit) exists so that a batch appears whole. A
//! single message is whole by itself, so when no other post is in flight on the shard, a post of one
//! message reserves its sequence number and commits it in one compare-and-set on the head: `next_k` and
//! the watermark `committed_k` move together and the message is counted. The same write records a
//! *pending write*, entry `k` of the head's `pw` map: the lease deadline, the message's expiry (to take
//! it out of the counters again) and the post's tag. Then the message is written, on condition that
//! nothing is at its key. Two writes and two round trips instead of three, and one head write per post
//! instead of two. The map holds at most [`MAX_PENDING`] entries (the reservation's condition checks its
//! size): every head write pays for the head's size, so when it is full a single post takes the
//! three-write path instead.
//!
//! Readers then meet a committed sequence number that may have no item yet:
//! - **Lease running, no item:** a scan stops there, as it stops at the watermark. Nothing past it is
//!   listed, claimed or popped and no floor moves past it, so a listing marker never passes a message
//!   that appears later.
//! - **Lease run out, no item:** the first reader puts a tombstone at that key (same condition) and
//!   takes the message out of the counters. The late write, if any, then fails and its post reports
//!   failure: nothing acknowledged is lost and nothing unacknowledged appears later.
//! - **Item there:** the entry has done its work. The producer removes it with its next reservation on
//!   the shard; a reader removes one left over for [`LEFTOVER_AFTER_MS`] (a producer that stopped posting).
//!
//! A post of several messages, one made while another post is in flight (`next_k > committed_k`) and a
//! dead-letter move (its message keeps a claim, which an entry could not take out of the counters) take
//! the three-write path. A shard's first post creates its head with the post in it; a process's
//! first post to a shard that has a head learns `next_k` from its refused first attempt, as the
//! three-write path does.

use super::expr::Expr;
use super::head::{expiry_k_attr, lease_ms, Counts, Head, MAP_SENTINEL, RETIRED};
use super::{get_s, ttl_epoch, Store, StoreError};
use crate::keys::{self, n, s, Item, Shard};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// The head's map of pending writes (sequence number -> entry); like the head's other maps it keeps the
/// sentinel entry `_` so that it is never empty.
pub(crate) const PENDING_MAP: &str = "pw";

/// Pending writes a head holds at most, besides the sentinel: about 50 bytes each.
const MAX_PENDING: usize = 8;

/// A reader removes the entry of a written message this long after its lease ran out (ms): long enough
/// that a producer posting again soon removes its own entry with its reservation, at no extra write.
pub(crate) const LEFTOVER_AFTER_MS: i64 = 10_000;

/// A pending write is taken for one that never arrived only while its message would still be alive by
/// at least this much (ms), or a quarter of its TTL if less, against clocks that disagree (see
/// [`Store::resolve_pending`]). Zaqar's shortest TTL, 60 s, leaves 45 s after the post.
const ALIVE_MARGIN_MS: i64 = 60_000;

/// How long a tombstone outlives the message it stands for (ms).
const TOMBSTONE_AFTER_EXPIRY_MS: i64 = 3600 * 1000;

/// The update-expression path of entry `k` of the pending map (names registered in `e`).
fn pending_path(e: &mut Expr, k: u64) -> String {
    let (m, key) = (e.name(PENDING_MAP), e.name(&k.to_string()));
    format!("{m}.{key}")
}

/// A committed sequence number whose message may not be written yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingWrite {
    pub deadline_ms: i64,
    pub expires_ms: i64,
    pub ttl_s: i64,
    /// The post's tag: a reservation retried after its answer was lost recognises its own entry.
    pub tag: String,
}

impl PendingWrite {
    /// Whether an absent item at its number still proves, at `now_ms`, that its message was never
    /// written (see [`Store::resolve_pending`]): not once its expiry is near.
    fn absence_proves_unwritten(&self, now_ms: i64) -> bool {
        let margin = ALIVE_MARGIN_MS.min(self.ttl_s.saturating_mul(1000) / 4);
        now_ms.saturating_add(margin) < self.expires_ms
    }

    fn encode(&self) -> String {
        format!("{}:{}:{}:{}", self.deadline_ms, self.expires_ms, self.ttl_s, self.tag)
    }

    fn decode(v: &str) -> Option<PendingWrite> {
        let mut parts = v.splitn(4, ':');
        Some(PendingWrite {
            deadline_ms: parts.next()?.parse().ok()?,
            expires_ms: parts.next()?.parse().ok()?,
            ttl_s: parts.next()?.parse().ok()?,
            tag: parts.next()?.to_string(),
        })
    }
}

/// Adds to `e` the removal of `head`'s pending writes below `k`.
pub(crate) fn remove_pending_below(e: &mut Expr, head: &Head, k: u64) {
    for p in head.pending.range(..k).map(|(p, _)| *p) {
        let path = pending_path(e, p);
        e.remove(path);
    }
}

/// The pending writes recorded on a head item.
pub(crate) fn pending_of(item: &Item) -> BTreeMap<u64, PendingWrite> {
    let Some(AttributeValue::M(map)) = item.get(PENDING_MAP) else { return BTreeMap::new() };
    map.iter()
        .filter_map(|(k, v)| match v {
            AttributeValue::S(text) => Some((k.parse().ok()?, PendingWrite::decode(text)?)),
            _ => None,
        })
        .collect()
}

/// How a scan goes on after the pending writes with no item in a gap between the items it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gap {
    /// One's lease runs: stop before it.
    Stop,
    /// One was resolved (tombstoned, or its message arrived meanwhile): an item is there now, so read
    /// again from its number.
    ReadFrom(u64),
}

/// How a two-write reservation went.
pub(crate) enum SingleReservation {
    Reserved(u64),
    /// Take the three-write path: no hint yet, no head yet, or another post is in flight.
    Fallback,
    /// The generation is dead or the shard retired: refresh the queue record.
    Stale,
}

/// How a pending write was settled by [`Store::resolve_pending`].
pub(crate) enum Resolution {
    /// Nothing had arrived: a tombstone holds the key and the message is no longer counted.
    Tombstoned,
    /// An item is at the key (the message, or another reader's tombstone).
    Present(Item),
    /// The message would have expired by now: the entry is dropped, the counters left as they are.
    Expired,
}

/// Per shard, the sequence numbers of this process's two-write posts whose messages were written (more
/// than one when it posts concurrently, as the local server does): their entries are removed by the
/// process's next reservation on the shard (bounded like `NextHints`).
#[derive(Default)]
pub(crate) struct OwnPending(Mutex<HashMap<String, Vec<u64>>>);

impl OwnPending {
    fn take(&self, shard: &Shard) -> Vec<u64> {
        self.0.lock().ok().and_then(|mut m| m.remove(&shard.messages_pk())).unwrap_or_default()
    }

    fn put(&self, shard: &Shard, ks: &[u64]) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() >= 10_000 {
                m.clear();
            }
            let mine = m.entry(shard.messages_pk()).or_default();
            mine.extend_from_slice(ks);
            // The head holds no more than that; any older ones are for readers to clear.
            let excess = mine.len().saturating_sub(MAX_PENDING);
            mine.drain(..excess);
        }
    }
}

impl Store {
    /// Reserves and commits one sequence number for a message counted in `counts`, recording `pending`.
    pub(crate) async fn reserve_single(
        &self,
        shard: &Shard,
        counts: &Counts,
        pending: &mut PendingWrite,
    ) -> Result<SingleReservation, StoreError> {
        // Without a hint (the process's first post to the shard) the first attempt creates the head with
        // this post in it; when the head exists, the refusal returns it, and the next attempt has the
        // right number, as on the three-write path.
        let mut known = self.hints.get(shard);
        let own = self.own_pending.take(shard);
        for attempt in 0..16u32 {
            let cur = known.unwrap_or_else(|| keys::generation_first_k(&shard.gen));
            let k = cur + 1;
            // The lease runs from this attempt, not from the first: refused attempts and pauses spend none.
            pending.deadline_ms = self.now_ms() + lease_ms(1);
            if k > keys::MAX_K {
                return Err(StoreError::exhausted("Message post"));
            }
            let mut e = Expr::default();
            let kv = e.value(n(k));
            e.set(format!("next_k = {kv}, committed_k = {kv}"));
            for b in counts.buckets() {
                let a = e.name(&expiry_k_attr(b));
                e.set(format!("{a} = if_not_exists({a}, {kv})"));
            }
            if known.is_some() {
                let (a, v) = (pending_path(&mut e, k), e.value(keys::s(pending.encode())));
                e.set(format!("{a} = {v}"));
                counts.write_into(&mut e, None, self.now_ms());
                for old in own.iter().filter(|old| **old < k) {
                    let a = pending_path(&mut e, *old);
                    e.remove(a);
                }
                let (c, m) = (e.value(n(cur)), e.name(PENDING_MAP));
                // Room for one more entry: the map holds the sentinel, at most MAX_PENDING entries, and
                // maybe this process's earlier ones, which this write removes.
                let room = e.value(n(MAX_PENDING + own.len()));
                e.condition(format!(
                    "next_k = {c} AND committed_k = {c} AND attribute_not_exists(dead) \
                     AND attribute_not_exists({RETIRED}) AND size({m}) <= {room}"
                ));
            } else {
                // The head's maps as `reserve` creates them (see there), with this post in them.
                let sentinel = (MAP_SENTINEL.to_string(), n(0));
                let pw = AttributeValue::M([sentinel.clone(), (k.to_string(), keys::s(pending.encode()))].into());
                let (ex, cl) = counts.initial_maps();
                let (pend, pw, ex, cl) =
                    (e.value(AttributeValue::M([sentinel].into())), e.value(pw), e.value(ex), e.value(cl));
                let (first, live, m) = (e.value(n(cur)), e.value(n(k)), e.name(PENDING_MAP));
                // Everything of a new head is fresh (see `ranges.rs`).
                let fresh = e.name(super::ranges::FRESH_K);
                e.set(format!(
                    "pend = {pend}, live_k = {live}, {fresh} = {live}, k0 = {first}, ex = {ex}, cl = {cl}, {m} = {pw}"
                ));
                e.condition("attribute_not_exists(pk)".to_string());
            }
            let updated = self.update_head_if(shard, e, "Message post").await;
            match updated {
                Ok(Ok(())) => {
                    self.hints.put(shard, k);
                    return Ok(SingleReservation::Reserved(k));
                }
                Err(err) => {
                    self.own_pending.put(shard, &own);
                    return Err(err);
                }
                Ok(Err(head)) => {
                    // Our own write, applied by an attempt whose answer was lost.
                    if head.pending.get(&k).is_some_and(|p| p.tag == pending.tag) {
                        self.hints.put(shard, k);
                        return Ok(SingleReservation::Reserved(k));
                    }
                    if head.dead || head.retired {
                        self.own_pending.put(shard, &own);
                        return Ok(SingleReservation::Stale);
                    }
                    if !head.exists {
                        known = None;
                        continue;
                    }
                    self.hints.put(shard, head.next_k);
                    // Another post in flight, or the pending map full (or missing, on a head from before it).
                    let own_entries = own.iter().filter(|o| head.pending.contains_key(o)).count();
                    let full = head.pending.len() - own_entries >= MAX_PENDING || !head.has_pending_map;
                    if head.next_k != head.committed_k || full {
                        self.own_pending.put(shard, &own);
                        return Ok(SingleReservation::Fallback);
                    }
                    known = Some(head.next_k);
                    if attempt > 4 {
                        super::contention_pause(attempt).await;
                    }
                }
            }
        }
        self.own_pending.put(shard, &own);
        Ok(SingleReservation::Fallback)
    }

    /// Posts `item` (a message without key and id) counted in `counts`, in two writes. `None`: take
    /// the three-write path. `Some(Err(()))`: try again (stale generation, or a reader tombstoned the
    /// number after the lease ran out, so nothing of this attempt shows).
    pub(crate) async fn write_single_post(
        &self,
        shard: &Shard,
        item: &Item,
        counts: &Counts,
    ) -> Result<Option<Result<Vec<String>, ()>>, StoreError> {
        let (Some(expires_ms), Some(ttl_s)) = (super::get_i64(item, "expires_ms"), super::get_i64(item, "ttl_s"))
        else {
            return Ok(None);
        };
        let mut pending = PendingWrite {
            deadline_ms: self.now_ms() + lease_ms(1),
            expires_ms,
            ttl_s,
            tag: format!("{:08x}", rand::random::<u32>()),
        };
        let k = match self.reserve_single(shard, counts, &mut pending).await? {
            SingleReservation::Reserved(k) => k,
            SingleReservation::Fallback => return Ok(None),
            SingleReservation::Stale => return Ok(Some(Err(()))),
        };
        let id = keys::new_message_id(shard.index, k);
        let mut message = item.clone();
        message.extend(shard.message_key(k));
        message.insert("id".into(), s(id.clone()));
        let ours = |found: &Item| get_s(found, "id") == Some(id.as_str());
        let written = match self.put_if_absent(message, "Message post").await {
            Ok(Ok(())) => true,
            // Our own put, applied by an attempt whose answer was lost.
            Ok(Err(Some(found))) if ours(&found) => true,
            // A reader found the lease run out and tombstoned the number: this attempt never shows.
            Ok(Err(_)) => false,
            // Unknown outcome: settle it now, so that the answer is the truth.
            Err(e) => match self.resolve_pending(shard, k, &pending).await {
                Ok(Resolution::Present(found)) if ours(&found) => true,
                Ok(Resolution::Present(_)) => false,
                Ok(Resolution::Tombstoned | Resolution::Expired) | Err(_) => return Err(e),
            },
        };
        if !written {
            tracing::warn!(queue = %shard.queue, k, "single post outlived its lease; writing it again");
            return Ok(Some(Err(())));
        }
        self.own_pending.put(shard, &[k]);
        Ok(Some(Ok(vec![id])))
    }

    /// Settles a pending write that has no item: puts a tombstone at its key unless something is there,
    /// and when the tombstone is ours, takes the message out of the counters. Either way the entry goes.
    ///
    /// An absent item means "never written" only because no message item leaves the table before its
    /// natural expiry (removals expire it in place and keep its TTL; see `keys`). So once that expiry is
    /// near, an absent item may be a message that was written, removed and swept by TTL: the entry is
    /// only dropped. Never written, its count then ends with its expiry bucket, as an expired message's.
    pub(crate) async fn resolve_pending(
        &self,
        shard: &Shard,
        k: u64,
        pending: &PendingWrite,
    ) -> Result<Resolution, StoreError> {
        let now = self.now_ms();
        let resolution = if !pending.absence_proves_unwritten(now) {
            Resolution::Expired
        } else {
            let tag = uuid::Uuid::new_v4().simple().to_string();
            let mut tombstone = shard.message_key(k);
            tombstone.insert("tombstone".into(), s(tag.clone()));
            tombstone.insert("expires_ms".into(), n(0));
            tombstone.insert(keys::TTL_ATTR.into(), ttl_epoch(pending.expires_ms + TOMBSTONE_AFTER_EXPIRY_MS));
            match self.put_tombstone(tombstone.clone(), &tag).await {
                Ok(resolution) => resolution,
                Err(e) => {
                    // Our tombstone may be there, and then only we can count the message out: a reader
                    // that finds it takes it for someone else's and drops the entry without counting.
                    // So the put is re-driven until it answers, and counts out if the tombstone is ours.
                    let (shard, pending) = (shard.clone(), pending.clone());
                    self.settle_later("Message post", move |store| {
                        let (shard, pending, tombstone, tag) =
                            (shard.clone(), pending.clone(), tombstone.clone(), tag.clone());
                        async move {
                            // Near its expiry an absent item proves nothing (see above): its count
                            // then ends with its bucket.
                            if !pending.absence_proves_unwritten(store.now_ms()) {
                                return Ok(());
                            }
                            if let Resolution::Tombstoned = store.put_tombstone(tombstone, &tag).await? {
                                store.count_out_tombstoned(&shard, k, &pending).await;
                            }
                            Ok(())
                        }
                    });
                    return Err(e);
                }
            }
        };
        if let Resolution::Tombstoned = resolution {
            self.count_out_tombstoned(shard, k, pending).await;
        }
        if let Err(e) = self.clear_pending(shard, &[k]).await {
            tracing::warn!(error = %e, "could not remove a settled pending write; a later reader will");
        }
        Ok(resolution)
    }

    /// Puts a reader's tombstone (tagged `tag`) where a pending write has no item: `Tombstoned` when the
    /// tombstone there is ours (also when an attempt whose answer was lost put it), else what is there.
    async fn put_tombstone(&self, tombstone: Item, tag: &str) -> Result<Resolution, StoreError> {
        Ok(match self.put_if_absent(tombstone, "Message post").await? {
            Ok(()) => Resolution::Tombstoned,
            Err(Some(found)) if get_s(&found, "tombstone") == Some(tag) => Resolution::Tombstoned,
            Err(found) => Resolution::Present(found.unwrap_or_default()),
        })
    }

    /// Takes a message that will never be written out of the counters: once, by the reader whose
    /// tombstone holds its number.
    async fn count_out_tombstoned(&self, shard: &Shard, k: u64, pending: &PendingWrite) {
        tracing::warn!(queue = %shard.queue, shard = shard.index, k, "tombstoned a single post whose lease ran out");
        let mut counts = Counts::default();
        counts.message(pending.expires_ms, pending.ttl_s, -1);
        self.write_counts(shard, &counts, None).await;
    }

    /// Removes settled pending-write entries from a head (one write).
    pub(crate) async fn clear_pending(&self, shard: &Shard, ks: &[u64]) -> Result<(), StoreError> {
        if ks.is_empty() {
            return Ok(());
        }
        let mut e = Expr::default();
        for k in ks {
            let a = pending_path(&mut e, *k);
            e.remove(a);
        }
        let m = e.name(PENDING_MAP);
        e.condition(format!("attribute_exists({m})"));
        let req =
            self.client.update_item().table_name(&self.table).return_consumed_capacity(ReturnConsumedCapacity::Total);
        let r = e.apply(req, shard.head_key()).send().await;
        self.conditional(r, "Queue head update").map(drop)
    }

    /// Settles the pending writes in `[*expect, until)` of a scan that has read every item below `until`
    /// and found none there: `None` to read on (with `*expect` past them), else how the scan goes on.
    /// Past its lease a pending write is resolved; one whose message would have expired is passed.
    pub(crate) async fn settle_gap(
        &self,
        shard: &Shard,
        head: &Head,
        expect: &mut u64,
        until: u64,
        now_ms: i64,
    ) -> Result<Option<Gap>, StoreError> {
        while let Some((&k, pending)) = head.pending.range(*expect..until.max(*expect)).next() {
            if pending.deadline_ms > now_ms {
                return Ok(Some(Gap::Stop));
            }
            match self.resolve_pending(shard, k, pending).await? {
                Resolution::Tombstoned | Resolution::Present(_) => return Ok(Some(Gap::ReadFrom(k))),
                Resolution::Expired => *expect = k + 1,
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_writes_round_trip_through_the_head_item() {
        let p = PendingWrite {
            deadline_ms: 1_700_000_001_000,
            expires_ms: 1_700_003_600_000,
            ttl_s: 3600,
            tag: "ab12".into(),
        };
        let map = HashMap::from([
            ("42".to_string(), keys::s(p.encode())),
            ("_".to_string(), n(0)),
            ("43".to_string(), keys::s("not a pending write")),
        ]);
        let item = Item::from([(PENDING_MAP.to_string(), AttributeValue::M(map))]);
        let found = pending_of(&item);
        assert_eq!(found.len(), 1);
        assert_eq!(found.get(&42), Some(&p));
        assert_eq!(PendingWrite::decode("1:2"), None);
    }
}
