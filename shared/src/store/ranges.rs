//! Range claims: a claim of the next run of a shard's messages in one head write, and deletes under it
//! in one head write each, with the messages themselves left untouched.
//!
//! **Why.** A per-message claim writes every message it takes, and a delete writes the message and then
//! the head's counters: about 4.5 write units per message over post, claim and delete. A claim of a run
//! of messages nobody has touched needs no per-message state if the head, which every reader reads
//! anyway, says who holds them; and a delete under such a claim can set its bit and move the counters
//! in that same head write, exactly once (a retry finds its bit set). The messages are left to expire by
//! TTL, as removed messages always are (see `keys`).
//!
//! **The fresh region.** `rc_k` on the head: no message at or above it was ever claimed, popped or
//! removed one by one. Only a range claim takes fresh messages without more ado: one conditional write
//! that moves `rc_k` past its run and records the claim as `rg{claim id}` (see [`RangeClaim`]). Anyone
//! else about to write a fresh message first moves `rc_k` past it ([`Store::prepare_per_message`]),
//! so the head arbitrates every fresh message, as the message item arbitrates every other one. Heads
//! without `rc_k` (written before range claims) get one at their next claim ([`Store::init_fresh`]).
//!
//! **Reading.** A message in a live range claim's run and not deleted there reads as claimed by it
//! ([`Head::overlay`]); one deleted there, or in a `gone` range, reads as removed ([`Head::masked`]).
//! Scans, gets and claim lookups read the head, so they see both.
//!
//! **Ending.** A release, or the last delete of a run, removes the entry and records the deleted
//! messages as `gone` ranges (the live floor forgets them once it passes them). A claim that ran out
//! stays on the head until a writer that wants its messages hands it back ([`Store::prepare_per_message`]
//! and the next range claim): linearised on the head, so a delete with a lagging clock cannot land on a
//! message already handed to someone else. A renewal turns the range into a per-message claim first
//! ([`Store::convert_range`]), so renewals keep their life-extension rules.
//!
//! **Bounds.** New range claims only while a head has fewer than [`MAX_LIVE_RANGES`] live ones and
//! [`MAX_GONE`] gone ranges, runs of at most [`MAX_SPAN`] sequence numbers: each entry adds about 120
//! bytes and each gone range about 35 to every head write, which DynamoDB charges per KB. (The last
//! delete of each live range may add a gone range past the bound; the live floor drops those it passes.)
//! Past those bounds, and for queues with a dead-letter queue (whose claim counts live on the messages),
//! claims take messages one by one as before.

use super::expr::Expr;
use super::head::{raise_live_floor_into, Counts, Head};
use super::messages::Message;
use super::StoreError;
use crate::keys::{n, s, Shard};
use aws_sdk_dynamodb::types::AttributeValue;

/// Prefix of the head attributes `rg{claim id}` holding live range claims.
pub(crate) const RANGE_PREFIX: &str = "rg";
/// Head attribute: the first fresh sequence number.
pub(crate) const FRESH_K: &str = "rc_k";
/// Head attribute (string set of `lo:hi`): messages removed by range deletes.
pub(crate) const GONE: &str = "gone";
/// A range claim covers at most this many sequence numbers (its masks are 64-bit).
pub(crate) const MAX_SPAN: u64 = 64;
/// A new range claim is made only while fewer live ones are on the head.
pub(crate) const MAX_LIVE_RANGES: usize = 4;
/// A new range claim is made only while the head records fewer gone ranges.
pub(crate) const MAX_GONE: usize = 8;

/// A range claim as recorded on its shard's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RangeClaim {
    /// First and last sequence numbers of the run (every number between is a member or was dead).
    pub lo: u64,
    pub hi: u64,
    /// Bit `k - lo`: the message at `k` is held by the claim.
    pub members: u64,
    /// Bit `k - lo`: the member was deleted under the claim.
    pub deleted: u64,
    pub until_ms: i64,
    /// The expiry bucket every member is counted in.
    pub bucket: i64,
    pub ttl_s: i64,
    pub grace_s: i64,
    pub updated_ms: i64,
    /// As stored: the condition of every write that changes it.
    pub raw: String,
}

impl RangeClaim {
    pub fn encode(&self) -> String {
        format!(
            "{},{},{:x},{:x},{},{},{},{},{}",
            self.lo,
            self.hi,
            self.members,
            self.deleted,
            self.until_ms,
            self.bucket,
            self.ttl_s,
            self.grace_s,
            self.updated_ms
        )
    }

    pub fn parse(raw: &str) -> Option<RangeClaim> {
        let f: Vec<&str> = raw.split(',').collect();
        if f.len() != 9 {
            return None;
        }
        let r = RangeClaim {
            lo: f[0].parse().ok()?,
            hi: f[1].parse().ok()?,
            members: u64::from_str_radix(f[2], 16).ok()?,
            deleted: u64::from_str_radix(f[3], 16).ok()?,
            until_ms: f[4].parse().ok()?,
            bucket: f[5].parse().ok()?,
            ttl_s: f[6].parse().ok()?,
            grace_s: f[7].parse().ok()?,
            updated_ms: f[8].parse().ok()?,
            raw: raw.to_string(),
        };
        (r.hi >= r.lo && r.hi - r.lo < MAX_SPAN).then_some(r)
    }

    fn bit(&self, k: u64) -> u64 {
        if k < self.lo || k > self.hi {
            0
        } else {
            1 << (k - self.lo)
        }
    }

    pub fn is_member(&self, k: u64) -> bool {
        self.members & self.bit(k) != 0
    }

    pub fn is_deleted(&self, k: u64) -> bool {
        self.is_member(k) && self.deleted & self.bit(k) != 0
    }

    pub fn live(&self, now_ms: i64) -> bool {
        self.until_ms > now_ms
    }

    /// Members not deleted.
    pub fn held(&self) -> impl Iterator<Item = u64> + '_ {
        (self.lo..=self.hi).filter(|k| self.is_member(*k) && !self.is_deleted(*k))
    }

    pub fn held_count(&self) -> i64 {
        i64::from((self.members & !self.deleted).count_ones())
    }

    /// The runs to record as gone when the entry leaves the head: each maximal run of numbers that are
    /// not held (deleted members, and the dead numbers between) containing a deleted member.
    pub fn gone_runs(&self) -> Vec<(u64, u64)> {
        let mut runs = Vec::new();
        let mut run: Option<(u64, u64, bool)> = None;
        for k in self.lo..=self.hi {
            let held = self.is_member(k) && !self.is_deleted(k);
            if held {
                if let Some((a, b, true)) = run.take() {
                    runs.push((a, b));
                }
                run = None;
            } else {
                let d = self.is_deleted(k);
                run = Some(match run {
                    Some((a, _, any)) => (a, k, any || d),
                    None => (k, k, d),
                });
            }
        }
        if let Some((a, b, true)) = run {
            runs.push((a, b));
        }
        runs
    }
}

/// `runs` added to `gone`, merged where they touch or overlap, sorted.
pub(crate) fn merge_ranges(gone: &[(u64, u64)], runs: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut all: Vec<(u64, u64)> = gone.iter().chain(runs).copied().collect();
    all.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(all.len());
    for (a, b) in all {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

pub(crate) fn range_text(r: &(u64, u64)) -> String {
    format!("{}:{}", r.0, r.1)
}

pub(crate) fn parse_range(t: &str) -> Option<(u64, u64)> {
    let (a, b) = t.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

pub(crate) fn range_attr(cid: &str) -> String {
    format!("{RANGE_PREFIX}{cid}")
}

/// Claim ids of claims that may hold a range: the third hex digit is 8-f (others: 0-7). Deletes and
/// lookups of other claims never read the head for them.
pub(crate) fn may_hold_range(cid: &str) -> bool {
    cid.as_bytes().get(2).is_some_and(|c| matches!(c, b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F'))
}

impl Head {
    /// The range claim whose run holds `k` as a member (deleted or not).
    pub fn range_of(&self, k: u64) -> Option<(&str, &RangeClaim)> {
        self.ranges.iter().find(|(_, r)| r.is_member(k)).map(|(c, r)| (c.as_str(), r))
    }

    pub fn in_gone(&self, k: u64) -> bool {
        self.gone.iter().any(|&(lo, hi)| lo <= k && k <= hi)
    }

    /// Invisible whatever its item says: a hole of a failed post, or removed by a range delete.
    pub fn masked(&self, k: u64) -> bool {
        self.in_hole(k) || self.in_gone(k) || self.range_of(k).is_some_and(|(_, r)| r.is_deleted(k))
    }

    /// Removed as far as this head says, whatever the message's item says: its generation is gone, a
    /// hole or a range delete masks it, or it lies below the live floor, where nothing lives (the floor
    /// drops the gone ranges it passes).
    pub fn removed(&self, k: u64) -> bool {
        self.dead || self.masked(k) || (self.exists && k < self.live_k)
    }

    /// The claim state a range claim gives `m`: its id and end, while it holds `m`.
    pub fn overlay(&self, m: &mut Message) {
        if let Some((cid, r)) = self.range_of(m.k) {
            if !r.is_deleted(m.k) {
                m.claim_id = Some(cid.to_string());
                m.claim_until_ms = Some(r.until_ms);
            }
        }
    }

    /// Live range claims.
    pub fn live_ranges(&self, now_ms: i64) -> usize {
        self.ranges.values().filter(|r| r.live(now_ms)).count()
    }
}

/// Builds a head write that leaves `gone` as `new`, on condition that it is still as `head` read it. Also
/// when `new` is what was read: a write that takes or hands over fresh messages must not miss one a
/// concurrent delete has just recorded there (`Store::delete_fresh`).
pub(crate) fn set_gone(e: &mut Expr, head: &Head, new: &[(u64, u64)]) {
    let g = e.name(GONE);
    if head.gone.is_empty() {
        e.condition(format!("attribute_not_exists({g})"));
    } else {
        let old = e.value(AttributeValue::Ss(head.gone.iter().map(range_text).collect()));
        e.condition(format!("{g} = {old}"));
    }
    if new == head.gone.as_slice() {
        return;
    }
    if new.is_empty() {
        e.remove(g);
    } else {
        let v = e.value(AttributeValue::Ss(new.iter().map(range_text).collect()));
        e.set(format!("{g} = {v}"));
    }
}

/// Adds to `e` the removal of the range claims `cids` (each on condition it is as read), their deleted
/// members becoming gone ranges merged into `gone` (returned; the caller writes it with [`set_gone`]).
fn drop_ranges(e: &mut Expr, head: &Head, cids: &[&str], gone: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut runs = Vec::new();
    for cid in cids {
        let Some(r) = head.ranges.get(*cid) else { continue };
        let (a, v) = (e.name(&range_attr(cid)), e.value(s(r.raw.clone())));
        e.condition(format!("{a} = {v}"));
        e.remove(a);
        runs.extend(r.gone_runs());
    }
    merge_ranges(gone, &runs)
}

/// What a range claim took.
pub(crate) struct RangeTaken {
    pub messages: Vec<Message>,
    /// The run stopped at a live message it could not take (delayed, or a claim would extend its life,
    /// or another expiry bucket): later messages are left to the per-message path.
    pub stopped_at: Option<u64>,
    /// The write also raised the live floor (as asked by `live_to`).
    pub raised_floor: bool,
}

/// Where a delete of `k` stands against the range claims of its head.
pub(crate) enum RangeDelete {
    /// `k` is in no range claim: the per-message path decides.
    NotMember,
    Done(super::messages::DeleteOutcome),
}

/// Who may delete (see `messages::Rule`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Deleter<'a> {
    Any,
    Unclaimed,
    HeldBy(&'a str),
}

impl super::Store {
    /// Gives a head written before range claims its fresh region: everything from the next number to be
    /// reserved. Conditioned on that number, so no message posted meanwhile is counted fresh after a
    /// per-message writer saw it. The head as it now is.
    pub(crate) async fn init_fresh(&self, shard: &Shard, head: &Head) -> Result<Head, StoreError> {
        let mut e = Expr::default();
        let (a, next) = (e.name(FRESH_K), e.value(n(head.next_k)));
        let start = e.value(n(head.next_k + 1));
        e.set(format!("{a} = {start}"));
        e.condition(format!("attribute_not_exists({a}) AND next_k = {next} AND attribute_not_exists(dead)"));
        match self.update_head_if(shard, e, "Claim").await? {
            Ok(()) => Ok(Head { rc_k: Some(head.next_k + 1), ..head.clone() }),
            Err(now) => Ok(now),
        }
    }

    /// Before per-message writes on the messages `ks` of a shard: moves the fresh region past them and
    /// hands back the range claims that hold any of them and have run out, in one conditional head
    /// write (none when nothing needs it). The head as this leaves it: the caller skips messages that a
    /// live range claim holds there.
    pub(crate) async fn prepare_per_message(&self, shard: &Shard, head: &Head, ks: &[u64]) -> Result<Head, StoreError> {
        let mut head = head.clone();
        for _ in 0..6 {
            let now = self.now_ms();
            let Some(rc) = head.rc_k else { return Ok(head) };
            let top = ks.iter().copied().max().unwrap_or(0);
            let advance = ks.iter().any(|k| *k >= rc);
            let ended: Vec<&str> = head
                .ranges
                .iter()
                .filter(|(_, r)| !r.live(now) && ks.iter().any(|k| r.is_member(*k) && !r.is_deleted(*k)))
                .map(|(c, _)| c.as_str())
                .collect();
            if !advance && ended.is_empty() {
                return Ok(head);
            }
            let mut e = Expr::default();
            let a = e.name(FRESH_K);
            let old = e.value(n(rc));
            e.condition(format!("{a} = {old} AND attribute_not_exists(dead)"));
            let new_rc = if advance { top + 1 } else { rc };
            if advance {
                let v = e.value(n(new_rc));
                e.set(format!("{a} = {v}"));
            }
            // Also when unchanged: a message handed over may have been deleted meanwhile.
            let gone = drop_ranges(&mut e, &head, &ended, &head.gone);
            set_gone(&mut e, &head, &gone);
            let ended: Vec<(String, Vec<u64>)> =
                ended.iter().map(|c| (c.to_string(), head.ranges[*c].held().collect())).collect();
            match self.update_head_if(shard, e, "Message write").await? {
                Ok(()) => {
                    head.rc_k = Some(new_rc);
                    for (c, _) in &ended {
                        head.ranges.remove(c);
                    }
                    head.gone = gone;
                    self.count_range_claims(shard, &ended).await;
                    return Ok(head);
                }
                Err(now) => head = now,
            }
        }
        Err(StoreError::exhausted("Message write"))
    }

    /// Claims the run of fresh messages at `rc_k` (at most `need`) for `cid` until `until`: one head
    /// write, which also hands back range claims that ran out and, when `live_to` says the scan below
    /// the fresh region found only removed messages up to there, raises the live floor.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn claim_range(
        &self,
        shard: &Shard,
        head: &Head,
        cid: &str,
        until: i64,
        params: super::claims::ClaimParams,
        need: usize,
        live_to: Option<u64>,
    ) -> Result<RangeTaken, StoreError> {
        let mut head = head.clone();
        let mut live_to = live_to;
        for attempt in 0..8u32 {
            if attempt > 1 {
                super::contention_pause(attempt).await;
            }
            let now = self.now_ms();
            let Some(rc) = head.rc_k else { break };
            if head.dead || rc > head.committed_k {
                break;
            }
            // The run: members in order, stopping at the first live message it cannot take.
            // The run: members in order, stopping at the first live message it cannot take. Removed
            // and expired messages before the first member are passed (the fresh region moves past them).
            let mut members: Vec<Message> = Vec::new();
            let mut passed = None;
            let mut bucket = None;
            let mut stopped_at = None;
            let page = (need as i32 + 10).min(100);
            // From the expiry floor when it is above: everything below it has expired.
            let from = rc.max(super::head::scan_start(&head, None, now));
            self.scan_shard(shard, &head, from, page, 4 * MAX_SPAN as usize, |m| {
                if members.first().is_some_and(|first| m.k >= first.k + MAX_SPAN) {
                    return false;
                }
                if !head.visible(m.k) || !m.alive(now) {
                    passed = Some(m.k);
                    return true;
                }
                let b = crate::keys::expiry_bucket(m.expires_ms, m.ttl_s);
                let takes = !m.claimed(now)
                    && !m.delayed(now)
                    && m.expires_ms >= until + params.grace_s * 1000
                    && bucket.is_none_or(|x| x == b);
                if !takes {
                    stopped_at = Some(m.k);
                    return false;
                }
                bucket = Some(b);
                passed = Some(m.k);
                members.push(m);
                members.len() < need
            })
            .await?;
            let (Some(first), Some(bucket)) = (members.first().map(|m| m.k), bucket) else {
                // Nothing to take; a run of removed messages is passed for good, so that claims do not
                // read it again (and are not held up behind more of them than one scan reads).
                if let Some(last) = passed.or((from > rc).then(|| from - 1)) {
                    let mut e = Expr::default();
                    let (a, old, new) = (e.name(FRESH_K), e.value(n(rc)), e.value(n(last + 1)));
                    e.set(format!("{a} = {new}"));
                    e.condition(format!("{a} = {old} AND attribute_not_exists(dead)"));
                    head = match self.update_head_if(shard, e, "Claim").await? {
                        Ok(()) => Head { rc_k: Some(last + 1), ..head },
                        Err(now_head) => now_head,
                    };
                    if stopped_at.is_none() {
                        continue;
                    }
                }
                return Ok(RangeTaken { messages: vec![], stopped_at, raised_floor: false });
            };
            let hi = members.last().map_or(first, |m| m.k);
            let mask = members.iter().fold(0u64, |acc, m| acc | 1 << (m.k - first));
            let entry = RangeClaim {
                lo: first,
                hi,
                members: mask,
                deleted: 0,
                until_ms: until,
                bucket,
                ttl_s: params.ttl_s,
                grace_s: params.grace_s,
                updated_ms: now,
                raw: String::new(),
            };
            let mut e = Expr::default();
            let (a, old, new) = (e.name(FRESH_K), e.value(n(rc)), e.value(n(hi + 1)));
            e.set(format!("{a} = {new}"));
            e.condition(format!("{a} = {old} AND attribute_not_exists(dead)"));
            let (ra, rv) = (e.name(&range_attr(cid)), e.value(s(entry.encode())));
            e.set(format!("{ra} = {rv}"));
            let mut counts = Counts::default();
            counts.claim(until, members.len() as i64);
            counts.write_into(&mut e, Some(&head), now);
            let ended: Vec<&str> = head.ranges.iter().filter(|(_, r)| !r.live(now)).map(|(c, _)| c.as_str()).collect();
            let handed: Vec<(String, Vec<u64>)> =
                ended.iter().map(|c| (c.to_string(), head.ranges[*c].held().collect())).collect();
            let mut gone = drop_ranges(&mut e, &head, &ended, &head.gone);
            if let Some(to) = live_to.filter(|to| *to > head.live_k) {
                raise_live_floor_into(&mut e, &head, to, now);
                gone.retain(|(_, h)| *h >= to);
            }
            // Also when unchanged: a message of the run deleted meanwhile is recorded there.
            set_gone(&mut e, &head, &gone);
            let (ours, raised_floor) = (members, live_to.is_some_and(|to| to > head.live_k));
            let taken = |ours| RangeTaken { messages: held_by(ours, cid, until), stopped_at, raised_floor };
            match self.update_head_if(shard, e, "Claim").await {
                Ok(Ok(())) => {
                    self.count_range_claims(shard, &handed).await;
                    return Ok(taken(ours));
                }
                Ok(Err(now_head)) => {
                    // Our own write, applied by an attempt whose answer was lost.
                    if now_head.ranges.contains_key(cid) {
                        self.count_range_claims(shard, &handed).await;
                        return Ok(taken(ours));
                    }
                    head = now_head;
                    live_to = None;
                }
                Err(err) => {
                    // Unknown outcome: if it was applied, nobody knows this claim; release it later.
                    let (shard, cid) = (shard.clone(), cid.to_string());
                    self.settle_later("Claim", move |store| {
                        let (shard, cid) = (shard.clone(), cid.clone());
                        async move { store.release_range(&shard, &cid).await.map(drop) }
                    });
                    return Err(err);
                }
            }
        }
        // Other claims kept moving the fresh region first: what is left is taken one by one from where
        // it now starts (the caller hands it over first), rather than not at all.
        let stopped_at = head.rc_k.filter(|rc| !head.dead && *rc <= head.committed_k);
        Ok(RangeTaken { messages: vec![], stopped_at, raised_floor: false })
    }

    /// Deletes `k` if a range claim holds it (`who` says which claims may): one head write that marks it
    /// deleted there and counts it out; the last delete of a run also removes the claim.
    pub(crate) async fn delete_in_range(
        &self,
        shard: &Shard,
        head: &Head,
        k: u64,
        who: Deleter<'_>,
    ) -> Result<RangeDelete, StoreError> {
        use super::messages::DeleteOutcome;
        let mut head = head.clone();
        for _ in 0..10 {
            let now = self.now_ms();
            let Some((rcid, r)) = head.range_of(k) else {
                // Removed by a range delete whose claim has left the head since (this one, when its answer
                // was lost and it was the claim's last delete, or another), or not a range's at all.
                return Ok(if head.masked(k) {
                    RangeDelete::Done(DeleteOutcome::Absent)
                } else {
                    RangeDelete::NotMember
                });
            };
            if r.is_deleted(k) {
                return Ok(RangeDelete::Done(DeleteOutcome::Absent));
            }
            // A claim that ran out protects nothing, but its own id still deletes what it held (as a
            // claim of single messages does while nobody has claimed the message since).
            let live = r.live(now);
            match who {
                Deleter::HeldBy(cid) if cid != rcid => {
                    let outcome = if live { DeleteOutcome::Claimed } else { DeleteOutcome::NotClaimed };
                    return Ok(RangeDelete::Done(outcome));
                }
                Deleter::Unclaimed if live => return Ok(RangeDelete::Done(DeleteOutcome::Claimed)),
                _ => {}
            }
            let (rcid, r) = (rcid.to_string(), r.clone());
            let mut after = r.clone();
            after.deleted |= 1 << (k - r.lo);
            let mut e = Expr::default();
            let (a, old) = (e.name(&range_attr(&rcid)), e.value(s(r.raw.clone())));
            e.condition(format!("{a} = {old} AND attribute_not_exists(dead)"));
            let mut counts = Counts::default();
            counts.bucket(r.bucket, -1);
            if live {
                counts.claim(r.until_ms, -1);
            }
            counts.write_into(&mut e, Some(&head), now);
            if after.held_count() == 0 {
                e.remove(a);
                let gone = merge_ranges(&head.gone, &after.gone_runs());
                set_gone(&mut e, &head, &gone);
            } else {
                let v = e.value(s(after.encode()));
                e.set(format!("{a} = {v}"));
            }
            match self.update_head_if(shard, e, "Message deletion").await? {
                Ok(()) => return Ok(RangeDelete::Done(DeleteOutcome::Deleted)),
                // Changed meanwhile (another delete of the run, or this one applied with its answer lost,
                // which the next round finds deleted): decide again on the head as it is.
                Err(now_head) => head = now_head,
            }
        }
        Err(StoreError::exhausted("Message deletion"))
    }

    /// After range claims left their head with messages they still held (`handed`: claim id and those
    /// messages): each message counts the claim, as a claim of single messages would have counted it
    /// (dead-letter queues and pop results show it). Tagged with the claim id, so a retry does not count
    /// twice; a failure only leaves a count one short, so it is logged, not reported.
    pub(crate) async fn count_range_claims(&self, shard: &Shard, handed: &[(String, Vec<u64>)]) {
        let bumps = handed.iter().flat_map(|(cid, ks)| ks.iter().map(move |k| (cid, *k))).map(|(cid, k)| async move {
            let req = self
                .update_message(shard, k)
                .update_expression("SET rb = :cid ADD claim_count :one")
                .condition_expression("attribute_exists(pk) AND (attribute_not_exists(rb) OR rb <> :cid)")
                .expression_attribute_values(":cid", s(cid.as_str()))
                .expression_attribute_values(":one", n(1));
            if let Err(e) = self.conditional(req.send().await, "Claim release") {
                tracing::warn!(error = %e, "a claim count of a message a range claim held was not written");
            }
        });
        futures::future::join_all(bumps).await;
    }

    /// Deletes fresh messages (`messages` as read: alive and visible, at or above `rc_k`) without
    /// writing them: one head write records them as gone and counts them out, on condition that none
    /// has left the fresh region meanwhile (nobody else has written them, then). `Ok(true)` when done, or
    /// found done (an attempt whose answer was lost, or another delete); `Ok(false)` when the caller must
    /// take the per-message way (no longer fresh, or the head would record too many gone ranges).
    pub(crate) async fn delete_fresh(
        &self,
        shard: &Shard,
        head: &Head,
        messages: &[Message],
    ) -> Result<bool, StoreError> {
        let mut head = head.clone();
        for attempt in 0..6u32 {
            if attempt > 1 {
                super::contention_pause(attempt).await;
            }
            let now = self.now_ms();
            // Those already removed were counted out by whoever removed them (this delete, if an
            // attempt of it was applied unanswered: its messages are all removed then).
            let left: Vec<&Message> = messages.iter().filter(|m| !head.masked(m.k)).collect();
            let Some(low) = left.iter().map(|m| m.k).min() else { return Ok(true) };
            if head.dead || head.rc_k.is_none_or(|rc| low < rc) {
                return Ok(false);
            }
            let runs: Vec<(u64, u64)> = left.iter().map(|m| (m.k, m.k)).collect();
            let gone = merge_ranges(&head.gone, &runs);
            if gone.len() > MAX_GONE {
                return Ok(false);
            }
            let mut e = Expr::default();
            let (a, v) = (e.name(FRESH_K), e.value(n(low)));
            e.condition(format!("{a} <= {v} AND attribute_not_exists(dead)"));
            set_gone(&mut e, &head, &gone);
            let mut counts = Counts::default();
            for m in &left {
                counts.message(m.expires_ms, m.ttl_s, -1);
            }
            counts.write_into(&mut e, Some(&head), now);
            match self.update_head_if(shard, e, "Message deletion").await? {
                Ok(()) => return Ok(true),
                Err(now_head) => head = now_head,
            }
        }
        Err(StoreError::exhausted("Message deletion"))
    }

    /// Removes range claim `cid` from its head: what it holds becomes claimable at once, what was deleted
    /// under it stays gone, and the claim floor is reset (the run may lie below it). The entry removed,
    /// with what it held then: those are counted out of the claim here.
    pub(crate) async fn release_range(&self, shard: &Shard, cid: &str) -> Result<Option<RangeClaim>, StoreError> {
        let mut head = self.read_head(shard).await?;
        for _ in 0..6 {
            let now = self.now_ms();
            let Some(r) = head.ranges.get(cid).cloned() else { return Ok(None) };
            let mut e = Expr::default();
            e.condition("attribute_not_exists(dead)".into());
            let gone = drop_ranges(&mut e, &head, &[cid], &head.gone);
            if gone != head.gone {
                set_gone(&mut e, &head, &gone);
            }
            if r.live(now) {
                let mut counts = Counts::default();
                counts.claim(r.until_ms, -r.held_count());
                counts.write_into(&mut e, Some(&head), now);
            }
            let (z, one) = (e.value(n(0)), e.value(n(1)));
            e.set(format!("floor_k = {z}, floor_until_ms = {z}"));
            e.add(format!("floor_ver {one}"));
            match self.update_head_if(shard, e, "Claim release").await? {
                Ok(()) => {
                    self.count_range_claims(shard, &[(cid.to_string(), r.held().collect())]).await;
                    return Ok(Some(r));
                }
                Err(now_head) => head = now_head,
            }
        }
        Err(StoreError::exhausted("Claim release"))
    }

    /// Turns range claim `cid` into a per-message claim before a renewal: its record lists the messages it
    /// holds, each of them gets the claim's id and end (as a claim write would), then the entry leaves
    /// the head. Until then the range says the same as the messages, so a failure midway leaves a claim
    /// that reads the same either way, and the renewal can be tried again. `false` when the head holds no
    /// live range claim `cid`.
    pub(crate) async fn convert_range(&self, home: &Shard, cid: &str) -> Result<bool, StoreError> {
        let head = self.read_head(home).await?;
        let now = self.now_ms();
        let Some(r) = head.ranges.get(cid).cloned().filter(|r| r.live(now)) else { return Ok(false) };
        let held: Vec<u64> = r.held().collect();
        self.record_range_members(home, cid, &r, &held).await?;
        let marks = held.iter().map(|k| async move {
            let req = self
                .update_message(home, *k)
                .update_expression("SET claim_id = :cid, claim_until_ms = :until ADD claim_count :one")
                .condition_expression("attribute_exists(pk) AND attribute_not_exists(claim_id)")
                .expression_attribute_values(":cid", s(cid))
                .expression_attribute_values(":until", n(r.until_ms))
                .expression_attribute_values(":one", n(1));
            // Refused: marked by an earlier attempt of this conversion (members are never claimed otherwise).
            self.conditional(req.send().await, "Claim renewal").map(drop)
        });
        futures::future::try_join_all(marks).await?;
        let mut head = head;
        for _ in 0..6 {
            if !head.ranges.contains_key(cid) {
                return Ok(true);
            }
            let mut e = Expr::default();
            e.condition("attribute_not_exists(dead)".into());
            let gone = drop_ranges(&mut e, &head, &[cid], &head.gone);
            if gone != head.gone {
                set_gone(&mut e, &head, &gone);
            }
            match self.update_head_if(home, e, "Claim renewal").await? {
                Ok(()) => return Ok(true),
                Err(now_head) => head = now_head,
            }
        }
        Err(StoreError::exhausted("Claim renewal"))
    }
}

/// The messages of a range claim as they now read.
fn held_by(messages: Vec<Message>, cid: &str, until: i64) -> Vec<Message> {
    messages
        .into_iter()
        .map(|m| Message { claim_id: Some(cid.to_string()), claim_until_ms: Some(until), ..m })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(lo: u64, hi: u64, members: u64, deleted: u64) -> RangeClaim {
        let mut r = RangeClaim {
            lo,
            hi,
            members,
            deleted,
            until_ms: 5_000,
            bucket: 60,
            ttl_s: 30,
            grace_s: 10,
            updated_ms: 1_000,
            raw: String::new(),
        };
        r.raw = r.encode();
        r
    }

    #[test]
    fn entries_round_trip() {
        let r = entry(100, 109, 0b11_1111_1011, 0b10);
        assert_eq!(RangeClaim::parse(&r.raw), Some(r.clone()));
        assert!(r.is_member(100) && !r.is_member(102) && r.is_member(109) && !r.is_member(110));
        assert!(r.is_deleted(101) && !r.is_deleted(100));
        assert_eq!(r.held().collect::<Vec<_>>(), vec![100, 103, 104, 105, 106, 107, 108, 109]);
        assert_eq!(r.held_count(), 8);
        assert_eq!(RangeClaim::parse("1,2,3"), None);
        assert_eq!(RangeClaim::parse("100,300,1,0,1,1,1,1,1"), None, "spans past 64 are refused");
    }

    #[test]
    fn gone_runs_cover_deleted_members_and_the_dead_between() {
        // Members 100, 101, 103; 102 dead; 100 and 101 and 103 deleted: one run.
        assert_eq!(entry(100, 103, 0b1011, 0b1011).gone_runs(), vec![(100, 103)]);
        // 101 still held: two runs, each with a deleted member.
        assert_eq!(entry(100, 103, 0b1011, 0b1001).gone_runs(), vec![(100, 100), (102, 103)]);
        // Nothing deleted: nothing gone.
        assert_eq!(entry(100, 103, 0b1011, 0).gone_runs(), Vec::<(u64, u64)>::new());
    }

    #[test]
    fn gone_ranges_merge_where_they_touch() {
        assert_eq!(merge_ranges(&[(1, 5), (20, 30)], &[(6, 9), (12, 12)]), vec![(1, 9), (12, 12), (20, 30)]);
        assert_eq!(merge_ranges(&[], &[(3, 4), (1, 2)]), vec![(1, 4)]);
    }

    #[test]
    fn range_capable_claim_ids_are_told_by_their_third_digit() {
        assert!(may_hold_range("0a8fffffffffffffffffffff"));
        assert!(may_hold_range("00f0000000000000000000000"));
        assert!(!may_hold_range("0070000000000000000000000"));
        assert!(!may_hold_range("00"));
    }
}
