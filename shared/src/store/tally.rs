//! Counter writes that apply exactly once.
//!
//! An operation changes messages first and the head counters after, in a second write (see `head.rs`).
//! A plain `ADD` there is not safe to retry: when DynamoDB applies it and the answer is lost (a 5xx, a
//! reset or a timeout after the request arrived), the SDK's retry applies it again; when every attempt
//! fails, the change is lost. Either way `GET .../stats` drifts for good.
//!
//! So every counter change is owed by a *writer* until DynamoDB confirms it. A writer is one of this
//! process's slots (one per concurrent counter write; a Lambda container uses one). Each change gets a
//! sequence number from its writer, increasing and close to the wall clock in ms. A write carries the sum
//! of everything its writer owes that head, sets the head attribute `wr{writer}` to the newest number
//! and is conditioned on that attribute being below the oldest. So a retry of a write that was applied
//! fails its condition, and the attribute it returns says which changes are in: those are dropped, the
//! rest are sent again. An attempt held up in the network that lands after a later write is refused the
//! same way. What cannot be written now stays owed. It goes with the writer's next write to that head,
//! or with a background flush that retries with backoff.
//!
//! Bounds: a writer owes at most [`MAX_OWED`] changes. A change is given up (and logged) after
//! [`OWED_FOR_MS`], well before anyone may prune its writer's attribute ([`STALE_AFTER_MS`]), so no
//! change can be applied twice because of pruning. Pruning removes stale writer attributes with a
//! condition of their own, in a separate write made only when a head, as a counter write returns it,
//! carries [`PRUNE_AT`] of them.
//!
//! What this cannot cover: a process that dies while it owes changes (a killed Lambda container, or one
//! never invoked again before it is reclaimed) loses them.

use super::expr::Expr;
use super::head::{Counts, Head};
use super::Store;
use crate::keys::{n, Item, Shard};
use aws_sdk_dynamodb::types::{ReturnConsumedCapacity, ReturnValue, ReturnValuesOnConditionCheckFailure};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Prefix of the head attributes `wr{writer}`: the newest change of that writer applied to the head.
pub(crate) const WRITER_PREFIX: &str = "wr";

/// How long a change may stay owed before it is given up (ms).
const OWED_FOR_MS: i64 = 30_000;
/// Writer attributes not written for this long may be pruned (ms): twice [`OWED_FOR_MS`].
const STALE_AFTER_MS: i64 = 2 * OWED_FOR_MS;
/// A head gets a pruning write once it carries this many stale writer attributes.
const PRUNE_AT: usize = 4;
/// Changes one writer may owe (over all heads); beyond this the oldest are given up.
const MAX_OWED: usize = 256;
/// Requests one flush of a head makes at most: a failed condition that shows part of the changes applied
/// sends the rest again; a request storage does not answer ends the flush.
const ATTEMPTS: usize = 3;

fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn writer_attr(writer: &str) -> String {
    format!("{WRITER_PREFIX}{writer}")
}

/// One change a writer owes a head.
#[derive(Debug, Clone)]
struct Change {
    seq: i64,
    counts: Counts,
}

#[derive(Debug)]
struct Owed {
    shard: Shard,
    changes: Vec<Change>,
}

/// A writer: its id, its last sequence number and what it owes, per head.
#[derive(Debug)]
struct Writer {
    id: String,
    last_seq: i64,
    owed: BTreeMap<String, Owed>,
}

impl Writer {
    fn next_seq(&mut self) -> i64 {
        self.last_seq = (self.last_seq + 1).max(wall_ms());
        self.last_seq
    }

    fn owed_len(&self) -> usize {
        self.owed.values().map(|o| o.changes.len()).sum()
    }

    /// Gives up changes owed too long, and the oldest beyond [`MAX_OWED`].
    fn expire(&mut self) {
        let cutoff = wall_ms() - OWED_FOR_MS;
        for o in self.owed.values_mut() {
            let before = o.changes.len();
            o.changes.retain(|c| c.seq > cutoff);
            if o.changes.len() < before {
                tracing::warn!(
                    head = %o.shard.messages_pk(),
                    given_up = before - o.changes.len(),
                    "queue counter changes owed too long were given up; stats may be off"
                );
            }
        }
        while self.owed_len() > MAX_OWED {
            let Some(oldest) = self
                .owed
                .iter()
                .filter_map(|(pk, o)| o.changes.first().map(|c| (c.seq, pk.clone())))
                .min()
                .map(|(_, pk)| pk)
            else {
                break;
            };
            if let Some(o) = self.owed.get_mut(&oldest) {
                o.changes.remove(0);
                tracing::warn!(head = %oldest, "too many queue counter changes owed; the oldest was given up");
            }
        }
        self.owed.retain(|_, o| !o.changes.is_empty());
    }
}

/// This process's writers.
pub(crate) struct Tallies {
    process: String,
    slots: AtomicU32,
    free: Mutex<Vec<Writer>>,
    flushing: AtomicBool,
}

impl Default for Tallies {
    fn default() -> Self {
        Tallies {
            process: format!("{:08x}", rand::random::<u32>()),
            slots: AtomicU32::new(0),
            free: Mutex::new(Vec::new()),
            flushing: AtomicBool::new(false),
        }
    }
}

/// A writer taken from the pool; it goes back when dropped, also when the request is abandoned midway
/// (its changes stay owed, outcome unknown, which the protocol resolves).
struct Lease<'a> {
    tallies: &'a Tallies,
    writer: Option<Writer>,
}

impl Lease<'_> {
    fn writer(&mut self) -> &mut Writer {
        self.writer.as_mut().expect("a lease holds its writer until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            if let Ok(mut free) = self.tallies.free.lock() {
                free.push(w);
            }
        }
    }
}

impl Tallies {
    /// A free writer, preferring one that owes `pk` something (so its debt travels with this write).
    fn lease(&self, pk: Option<&str>) -> Lease<'_> {
        let taken = self.free.lock().ok().and_then(|mut free| {
            let at = pk.and_then(|pk| free.iter().position(|w| w.owed.contains_key(pk)));
            match at {
                Some(i) => Some(free.swap_remove(i)),
                None => free.pop(),
            }
        });
        let writer = taken.unwrap_or_else(|| {
            let slot = self.slots.fetch_add(1, Ordering::Relaxed);
            Writer { id: format!("{}{slot:x}", self.process), last_seq: 0, owed: BTreeMap::new() }
        });
        Lease { tallies: self, writer: Some(writer) }
    }

    /// Writers that owe something, taken from the pool.
    fn lease_indebted(&self) -> Vec<Lease<'_>> {
        let Ok(mut free) = self.free.lock() else { return vec![] };
        let (indebted, rest): (Vec<Writer>, Vec<Writer>) = free.drain(..).partition(|w| !w.owed.is_empty());
        *free = rest;
        indebted.into_iter().map(|w| Lease { tallies: self, writer: Some(w) }).collect()
    }

    fn anything_owed(&self) -> bool {
        self.free.lock().is_ok_and(|free| free.iter().any(|w| !w.owed.is_empty()))
    }
}

/// How a flush of one head ended.
enum Flushed {
    /// Nothing is owed to the head any more.
    Done,
    /// Still owed: storage did not answer, or gave an answer that settles nothing.
    Owed(super::StoreError),
}

impl Store {
    /// Takes message `m` (as it was when removed) out of its shard's counters ([`Store::write_counts`]).
    pub(crate) async fn count_out(&self, shard: &Shard, m: &super::messages::Message, now: i64) {
        let mut counts = Counts::default();
        m.count_into(&mut counts, now, -1);
        self.write_counts(shard, &counts, None).await;
    }

    /// Applies `counts` to a shard's head exactly once: now if storage answers, later otherwise (see the
    /// module docs). `head`, when the caller read it, lets the write drop ended counter entries. Never
    /// fails: the operation being counted has happened, and its counts are owed until written.
    pub(crate) async fn write_counts(&self, shard: &Shard, counts: &Counts, head: Option<&Head>) {
        if counts.is_empty() {
            return;
        }
        let pk = shard.messages_pk();
        let mut lease = self.tallies.lease(Some(&pk));
        let w = lease.writer();
        let seq = w.next_seq();
        w.owed
            .entry(pk.clone())
            .or_insert_with(|| Owed { shard: shard.clone(), changes: vec![] })
            .changes
            .push(Change { seq, counts: counts.clone() });
        w.expire();
        let mut written = None;
        if let Flushed::Owed(e) = self.flush_head(w, &pk, head, &mut written).await {
            tracing::warn!(error = %e, head = %pk, "queue counters not written yet; the change stays owed");
        }
        let indebted = !w.owed.is_empty();
        drop(lease);
        if indebted {
            self.spawn_flusher();
        }
        if let Some(writers) = written {
            self.prune_writers(shard, &writers).await;
        }
    }

    /// Writes what `w` owes the head `pk`, in up to [`ATTEMPTS`] requests (one that storage does not answer
    /// ends it); `written` gets the writer attributes of the head as the write left it (returned with the
    /// write, no extra cost).
    async fn flush_head(
        &self,
        w: &mut Writer,
        pk: &str,
        head: Option<&Head>,
        written: &mut Option<BTreeMap<String, i64>>,
    ) -> Flushed {
        let attr = writer_attr(&w.id);
        for _ in 0..ATTEMPTS {
            let Some(owed) = w.owed.get(pk) else { return Flushed::Done };
            let (Some(first), Some(last)) = (owed.changes.first(), owed.changes.last()) else {
                w.owed.remove(pk);
                return Flushed::Done;
            };
            let (base, top) = (first.seq, last.seq);
            let mut total = Counts::default();
            for c in &owed.changes {
                total.merge(&c.counts);
            }
            let mut e = Expr::default();
            total.write_into(&mut e, head, self.now_ms());
            let (a, b, t) = (e.name(&attr), e.value(n(base)), e.value(n(top)));
            e.set(format!("{a} = {t}"));
            // A missing or tombstoned head has no counters left to keep.
            e.condition(format!(
                "attribute_exists(ex) AND attribute_exists(cl) AND (attribute_not_exists({a}) OR {a} < {b})"
            ));
            let req = self
                .client
                .update_item()
                .table_name(&self.table)
                .return_values(ReturnValue::AllNew)
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .return_consumed_capacity(ReturnConsumedCapacity::Total);
            let shard_key = owed.shard.head_key();
            match e.apply(req, shard_key).send().await {
                Ok(out) => {
                    self.usage.write(out.consumed_capacity());
                    *written = out.attributes.as_ref().map(writers_of);
                    w.owed.remove(pk);
                    return Flushed::Done;
                }
                Err(err) => match self.failed_condition_item(&err) {
                    Some(current) => {
                        let Some(item) = current.filter(|i| i.contains_key("ex") && i.contains_key("cl")) else {
                            w.owed.remove(pk);
                            return Flushed::Done;
                        };
                        // Our writer's newest change the head holds: everything up to it is in.
                        let applied = super::get_i64(&item, &attr).unwrap_or(i64::MIN);
                        if let Some(o) = w.owed.get_mut(pk) {
                            o.changes.retain(|c| c.seq > applied);
                            if o.changes.is_empty() {
                                w.owed.remove(pk);
                            }
                        }
                    }
                    // Storage did not answer (the SDK has retried already): no second try inside a request,
                    // whose answer must not wait for it; the change stays owed.
                    None => return Flushed::Owed(super::unavailable("Queue counters")(err)),
                },
            }
        }
        if w.owed.contains_key(pk) {
            Flushed::Owed(super::StoreError::exhausted("Queue counters"))
        } else {
            Flushed::Done
        }
    }

    /// Writes everything this process owes, once per indebted writer and head; true when nothing is
    /// owed any more.
    pub(crate) async fn flush_owed(&self) -> bool {
        for mut lease in self.tallies.lease_indebted() {
            let w = lease.writer();
            w.expire();
            let heads: Vec<String> = w.owed.keys().cloned().collect();
            for pk in heads {
                if let Flushed::Owed(e) = self.flush_head(w, &pk, None, &mut None).await {
                    tracing::debug!(error = %e, head = %pk, "queue counters still owed");
                }
            }
        }
        !self.tallies.anything_owed()
    }

    /// Starts the background flush unless one runs: it retries with backoff (100 ms doubling to 2 s)
    /// until nothing is owed. Owed changes expire after [`OWED_FOR_MS`], so it ends within about that.
    fn spawn_flusher(&self) {
        if self.tallies.flushing.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(100);
            loop {
                tokio::time::sleep(pause).await;
                if store.flush_owed().await {
                    store.tallies.flushing.store(false, Ordering::Release);
                    // A change owed after the last check and before the flag dropped: go round again.
                    if !store.tallies.anything_owed() || store.tallies.flushing.swap(true, Ordering::AcqRel) {
                        return;
                    }
                }
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        });
    }

    /// Removes writer attributes not written for [`STALE_AFTER_MS`], once a head carries [`PRUNE_AT`] of
    /// them: one conditional write, so an attribute written meanwhile is kept. Best effort.
    async fn prune_writers(&self, shard: &Shard, writers: &BTreeMap<String, i64>) {
        let cutoff = wall_ms() - STALE_AFTER_MS;
        let stale: Vec<&String> = writers.iter().filter(|(_, seq)| **seq < cutoff).map(|(w, _)| w).take(16).collect();
        if stale.len() < PRUNE_AT {
            return;
        }
        let mut e = Expr::default();
        let c = e.value(n(cutoff));
        for w in stale {
            let a = e.name(&writer_attr(w));
            e.remove(a.clone());
            e.condition(format!("(attribute_not_exists({a}) OR {a} < {c})"));
        }
        let req =
            self.client.update_item().table_name(&self.table).return_consumed_capacity(ReturnConsumedCapacity::Total);
        if let Err(e) = self.conditional(e.apply(req, shard.head_key()).send().await, "Queue counters") {
            tracing::debug!(error = %e, "stale counter writers not pruned");
        }
    }
}

/// The writer attributes of a head item: writer id -> newest sequence number applied.
fn writers_of(item: &Item) -> BTreeMap<String, i64> {
    item.iter()
        .filter_map(|(name, v)| {
            let id = name.strip_prefix(WRITER_PREFIX)?;
            match v {
                aws_sdk_dynamodb::types::AttributeValue::N(x) => Some((id.to_string(), x.parse().ok()?)),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ProjectId, QueueName};

    fn shard() -> Shard {
        Shard {
            project: ProjectId::parse("p").unwrap(),
            queue: QueueName::parse("q").unwrap(),
            gen: "g".into(),
            index: 0,
        }
    }

    fn change(seq: i64) -> Change {
        let mut counts = Counts::default();
        counts.claim(1_000_000, 1);
        Change { seq, counts }
    }

    #[test]
    fn sequence_numbers_increase_and_follow_the_clock() {
        let mut w = Writer { id: "w".into(), last_seq: 0, owed: BTreeMap::new() };
        let a = w.next_seq();
        let b = w.next_seq();
        assert!(b > a);
        assert!(a >= wall_ms() - 1000, "close to the wall clock, so attributes can be aged");
        // A clock that went back does not take the numbers back.
        let ahead = wall_ms() + 60_000;
        w.last_seq = ahead;
        assert_eq!(w.next_seq(), ahead + 1);
    }

    #[test]
    fn changes_owed_too_long_or_too_many_are_given_up() {
        let mut w = Writer { id: "w".into(), last_seq: 0, owed: BTreeMap::new() };
        let now = wall_ms();
        let old = vec![change(now - OWED_FOR_MS - 1), change(now - 1)];
        w.owed.insert("a".into(), Owed { shard: shard(), changes: old });
        w.expire();
        assert_eq!(w.owed["a"].changes.len(), 1, "only the change older than the limit goes");
        let many: Vec<Change> = (0..MAX_OWED as i64 + 10).map(|i| change(now + i)).collect();
        w.owed.insert("b".into(), Owed { shard: shard(), changes: many });
        w.expire();
        assert_eq!(w.owed_len(), MAX_OWED);
        assert_eq!(w.owed["b"].changes.last().map(|c| c.seq), Some(now + MAX_OWED as i64 + 9), "the newest stay");
        assert!(!w.owed.contains_key("a"), "the oldest went first, and a head owed nothing is forgotten");
    }

    #[test]
    fn writers_are_reused_and_prefer_the_one_owing_the_head() {
        let t = Tallies::default();
        let first_id = {
            let mut l = t.lease(None);
            let w = l.writer();
            w.owed.insert("h".into(), Owed { shard: shard(), changes: vec![change(1)] });
            w.id.clone()
        };
        // Another lease while the first is back in the pool, then the preferred one.
        let mut other = t.lease(Some("elsewhere"));
        assert_eq!(other.writer().id, first_id, "one free writer: it is reused");
        drop(other);
        {
            let _busy = t.lease(Some("h"));
            let mut fresh = t.lease(Some("h"));
            assert_ne!(fresh.writer().id, first_id, "a leased writer is never shared");
        }
        assert!(t.anything_owed());
        let indebted = t.lease_indebted();
        assert_eq!(indebted.len(), 1);
    }
}
