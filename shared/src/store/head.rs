//! Shard heads: sequence reservation, the visibility watermark, post leases and holes, the floors that
//! keep scans short, and the counters that make stats cost one read.
//!
//! **Posting, all or nothing.** A post reserves `n` sequence numbers with a compare-and-set on `next_k`
//! that also records a lease (`pend.{lo}` = deadline), writes its messages, then commits: it moves the
//! watermark `committed_k` from `lo - 1` to `hi`, adds its messages to the counters and drops its lease,
//! in one conditional write. Readers never look above the watermark, so a batch appears whole.
//! A producer whose writes fail aborts: it moves the watermark past its range and records the range as a
//! hole (`holes`), which readers skip, so nothing of a failed post is ever visible and nobody waits for it.
//! A producer that dies leaves a lease; once every lease below a waiting producer has expired, that
//! producer forces the watermark past them, recording them as holes. A slow producer that finds the
//! watermark already past its range was forced out: its post fails (503) and its messages stay in the hole.
//! A post of one message made while no other post is in flight skips the commit: its reservation moves
//! the watermark too, and readers wait for its message by a pending-write entry instead (`pending.rs`).
//! Leases last 1 s plus 1 ms per message (at most 10 s), so an abandoned post stalls its shard at most that.
//! A head starts counting at its generation's first number (`k0`, [`keys::generation_first_k`]), so the
//! numbers of a purged queue's new generation are above the old ones and old listing markers stay valid.
//!
//! **Counters.** `ex` maps an expiry bucket ([`keys::expiry_bucket`]) to the number of messages in it and
//! `cl` maps a claim end second to the number of messages claimed until then. `total` is the sum of the
//! buckets that have not ended, `claimed` the sum of the claim seconds still ahead: expiry and claim ends
//! need no writes. A post adjusts them in its commit; every claim, renewal, release, delete, pop and
//! dead-letter move in one more write, made exactly once (see `tally.rs`). Ended entries are dropped by
//! later writes.
//!
//! **Expiry floor.** A reservation also records, for each expiry bucket its messages fall in, the first
//! sequence number ever reserved for that bucket (`xk{bucket}`, set only if absent; reservations are
//! serialised by the compare-and-set, so the first to name a bucket holds its lowest `k`). Every message
//! below the smallest such number among the buckets that have not ended lies in an ended bucket, so it
//! has expired: stats start their search for the oldest message there, and a run of expired messages at
//! the head of a queue costs them nothing. A bucket whose messages carry no `xk` entry means no floor.
//!
//! **Floors.** `live_k`: every message below it is gone or expired for good (expiry never reverses), so
//! scans start there. `floor_k` / `floor_until_ms`: every message below `floor_k` is dead or claimed until
//! at least `floor_until_ms` (claims start there while that holds; see `claims.rs`).
//!
//! **Undone pops.** A pop whose answers were lost is undone: the message comes back (`messages.rs`). Until
//! then it looks removed, and a scan may raise `live_k` past it. So an undo first holds the floor
//! (`undo_until`: no raise while it is ahead) and, when the floor has passed the message, lowers it to
//! the message and masks everything between as a hole: below the floor lie only removed messages and
//! items of failed posts whose holes were forgotten, and the mask keeps the latter invisible.

use super::expr::Expr;
use super::pending::{pending_of, remove_pending_below, PendingWrite, PENDING_MAP};
use super::ranges::{parse_range, range_text, RangeClaim, FRESH_K, GONE, RANGE_PREFIX};
use super::StoreError;
use super::{get_i64, get_s, unavailable, Store};
use crate::keys::{self, n, Item, Shard};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity, ReturnValuesOnConditionCheckFailure};
use std::collections::BTreeMap;
use std::time::Duration;

/// The key every head map keeps so that no map is ever empty (see `reserve`).
pub(crate) const MAP_SENTINEL: &str = "_";

/// Marks a shard head above the queue's shard count (see [`Head::retired`]).
pub(crate) const RETIRED: &str = "retired";

/// While this head attribute (ms) is ahead, the live floor does not rise: an undone pop is putting a
/// message back below where it could otherwise go (see "Undone pops" above).
const UNDO_HOLD: &str = "undo_until";

/// How long an undo holds the live floor: its fence, this hold and its restore are made in a row, and a
/// retried undo holds again.
pub(crate) const UNDO_HOLD_MS: i64 = 30_000;

/// Prefix of the top-level head attributes `xk{bucket}` (see "Expiry floor" above). Top-level rather than a
/// map, so that setting one never depends on a map existing.
const EXPIRY_K_PREFIX: &str = "xk";

pub(crate) fn expiry_k_attr(bucket: i64) -> String {
    format!("{EXPIRY_K_PREFIX}{bucket}")
}

/// A head as read.
#[derive(Debug, Clone, Default)]
pub(crate) struct Head {
    pub exists: bool,
    /// The generation was deleted or purged.
    pub dead: bool,
    /// The shard is above the queue's shard count since it was lowered: it takes no reservations (see
    /// `Store::set_queue_metadata`).
    pub retired: bool,
    pub next_k: u64,
    pub committed_k: u64,
    pub pend: BTreeMap<u64, i64>,
    pub holes: Vec<(u64, u64)>,
    pub live_k: u64,
    pub floor_k: u64,
    pub floor_until_ms: i64,
    pub floor_ver: i64,
    pub ex: BTreeMap<i64, i64>,
    pub cl: BTreeMap<i64, i64>,
    /// Expiry bucket -> first sequence number reserved for it.
    pub exk: BTreeMap<i64, u64>,
    /// Committed single posts whose message may not be written yet (see `pending.rs`).
    pub(crate) pending: BTreeMap<u64, PendingWrite>,
    /// The head has the map of pending writes (heads created before it lack it until a commit adds it).
    pub(crate) has_pending_map: bool,
    /// The first fresh sequence number (see `ranges.rs`); `None` on heads that have not had one yet.
    pub rc_k: Option<u64>,
    /// Range claims on this head, by claim id (see `ranges.rs`).
    pub(crate) ranges: BTreeMap<String, RangeClaim>,
    /// Runs of messages removed by range deletes.
    pub gone: Vec<(u64, u64)>,
}

fn num_map(item: &Item, name: &str) -> BTreeMap<String, i64> {
    match item.get(name) {
        Some(AttributeValue::M(m)) => m
            .iter()
            .filter_map(|(k, v)| match v {
                AttributeValue::N(x) => x.parse().ok().map(|x| (k.clone(), x)),
                _ => None,
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn parse_hole(h: &str) -> Option<(u64, u64)> {
    let (a, b) = h.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn hole(lo: u64, hi: u64) -> String {
    format!("{lo}:{hi}")
}

impl Head {
    pub fn from_item(item: Option<&Item>) -> Head {
        let Some(item) = item else { return Head { live_k: 1, ..Head::default() } };
        let u = |name| get_i64(item, name).unwrap_or(0).max(0) as u64;
        let keyed = |name| num_map(item, name).into_iter().filter_map(|(k, v)| Some((k.parse().ok()?, v))).collect();
        Head {
            exists: true,
            dead: item.contains_key("dead"),
            retired: item.contains_key(RETIRED),
            next_k: u("next_k"),
            committed_k: u("committed_k"),
            pend: num_map(item, "pend").into_iter().filter_map(|(k, v)| Some((k.parse().ok()?, v))).collect(),
            holes: match item.get("holes") {
                Some(AttributeValue::Ss(hs)) => hs.iter().filter_map(|h| parse_hole(h)).collect(),
                _ => vec![],
            },
            live_k: u("live_k").max(1),
            floor_k: u("floor_k"),
            floor_until_ms: get_i64(item, "floor_until_ms").unwrap_or(0),
            floor_ver: get_i64(item, "floor_ver").unwrap_or(0),
            ex: keyed("ex"),
            cl: keyed("cl"),
            exk: item
                .iter()
                .filter_map(|(name, v)| {
                    let bucket = name.strip_prefix(EXPIRY_K_PREFIX)?.parse().ok()?;
                    match v {
                        AttributeValue::N(k) => Some((bucket, k.parse().ok()?)),
                        _ => None,
                    }
                })
                .collect(),
            pending: pending_of(item),
            has_pending_map: item.contains_key(PENDING_MAP),
            rc_k: get_i64(item, FRESH_K).map(|v| v.max(0) as u64),
            ranges: item
                .iter()
                .filter_map(|(name, v)| {
                    let cid = name.strip_prefix(RANGE_PREFIX)?;
                    match v {
                        AttributeValue::S(raw) => Some((cid.to_string(), RangeClaim::parse(raw)?)),
                        _ => None,
                    }
                })
                .collect(),
            gone: match item.get(GONE) {
                Some(AttributeValue::Ss(rs)) => {
                    let mut g: Vec<(u64, u64)> = rs.iter().filter_map(|r| parse_range(r)).collect();
                    g.sort_unstable();
                    g
                }
                _ => vec![],
            },
        }
    }

    /// Whether message `k` belongs to a committed post.
    pub fn visible(&self, k: u64) -> bool {
        k <= self.committed_k && !self.masked(k)
    }

    pub fn in_hole(&self, k: u64) -> bool {
        self.holes.iter().any(|&(lo, hi)| lo <= k && k <= hi)
    }

    /// The lowest sequence number that may hold a message that has not expired (see "Expiry floor");
    /// `None` when a bucket that has not ended lacks its entry.
    pub fn expiry_floor(&self, now_ms: i64) -> Option<u64> {
        let now_s = now_ms.div_euclid(1000);
        if self.ex.iter().any(|(b, c)| *b > now_s && *c > 0 && !self.exk.contains_key(b)) {
            return None;
        }
        // Every open bucket's entry, also those whose count is not (yet) positive: a post being committed.
        let open = self.exk.iter().filter(|(b, _)| **b > now_s).map(|(_, k)| *k);
        Some(open.fold(self.committed_k.saturating_add(1), u64::min))
    }

    /// Live messages (buckets not yet ended) and messages under live claims.
    pub fn counts(&self, now_ms: i64) -> (u64, u64) {
        let now_s = now_ms.div_euclid(1000);
        let total: i64 = self.ex.iter().filter(|(b, _)| **b > now_s).map(|(_, c)| *c).sum();
        let claimed: i64 = self.cl.iter().filter(|(e, _)| **e * 1000 > now_ms).map(|(_, c)| *c).sum();
        (total.max(0) as u64, claimed.clamp(0, total.max(0)) as u64)
    }
}

/// Whether an item read alongside others (a BatchGetItem) is a shard head.
pub(crate) fn is_head_item(item: &Item) -> bool {
    get_s(item, keys::SK) == Some(keys::HEAD_SK)
}

/// The head among the items of a BatchGetItem (a default one, with nothing recorded, when absent).
pub(crate) fn head_among(items: &[Item]) -> Head {
    Head::from_item(items.iter().find(|i| is_head_item(i)))
}

/// Live and claimed messages over `heads` (tombstoned ones count nothing).
pub(crate) fn heads_totals(heads: &[Head], now_ms: i64) -> (u64, u64) {
    heads.iter().filter(|h| !h.dead).map(|h| h.counts(now_ms)).fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1))
}

/// Changes to a head's counters, gathered by an operation and written once.
#[derive(Debug, Default, Clone)]
pub(crate) struct Counts {
    ex: BTreeMap<i64, i64>,
    cl: BTreeMap<i64, i64>,
}

impl Counts {
    /// A message with this expiry now exists (+1) or no longer does (-1).
    pub fn message(&mut self, expires_ms: i64, ttl_s: i64, delta: i64) {
        *self.ex.entry(keys::expiry_bucket(expires_ms, ttl_s)).or_default() += delta;
    }

    /// [`Counts::message`] for a message known only by its expiry bucket.
    pub fn bucket(&mut self, bucket: i64, delta: i64) {
        *self.ex.entry(bucket).or_default() += delta;
    }

    /// A message is now claimed until `until_ms` (+1) or no longer (-1). `until_ms` is a whole second
    /// ([`keys::claim_end_ms`]).
    pub fn claim(&mut self, until_ms: i64, delta: i64) {
        *self.cl.entry(until_ms.div_euclid(1000)).or_default() += delta;
    }

    /// The expiry buckets messages are added to.
    pub fn buckets(&self) -> Vec<i64> {
        self.ex.iter().filter(|(_, d)| **d > 0).map(|(b, _)| *b).collect()
    }

    /// Adds another set of changes to these.
    pub fn merge(&mut self, other: &Counts) {
        for (b, d) in &other.ex {
            *self.ex.entry(*b).or_default() += d;
        }
        for (c, d) in &other.cl {
            *self.cl.entry(*c).or_default() += d;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ex.values().all(|v| *v == 0) && self.cl.values().all(|v| *v == 0)
    }

    /// The `ex` and `cl` maps of a head created with these counts (each with its sentinel entry).
    pub fn initial_maps(&self) -> (AttributeValue, AttributeValue) {
        let map = |m: &BTreeMap<i64, i64>| {
            let entries = m.iter().filter(|(_, d)| **d != 0).map(|(key, d)| (key.to_string(), n(*d)));
            AttributeValue::M(entries.chain([(MAP_SENTINEL.to_string(), n(0))]).collect())
        };
        (map(&self.ex), map(&self.cl))
    }

    /// Adds the counter updates to `e`, and drops up to 16 entries of `head` that have ended.
    pub fn write_into(&self, e: &mut Expr, head: Option<&Head>, now_ms: i64) {
        for (b, d) in self.ex.iter().filter(|(_, d)| **d != 0) {
            e.add_to_map("ex", &b.to_string(), *d);
        }
        for (c, d) in self.cl.iter().filter(|(_, d)| **d != 0) {
            e.add_to_map("cl", &c.to_string(), *d);
        }
        let Some(head) = head else { return };
        let now_s = now_ms.div_euclid(1000);
        // Keep ended entries a minute, so a late decrement lands on its own key, not a re-created one.
        let ended_ex = head.ex.keys().filter(|b| **b < now_s - 60 && !self.ex.contains_key(b));
        for b in ended_ex.take(8) {
            let (m, k) = (e.name("ex"), e.name(&b.to_string()));
            e.remove(format!("{m}.{k}"));
        }
        let ended_cl = head.cl.keys().filter(|c| **c < now_s - 60 && !self.cl.contains_key(c));
        for c in ended_cl.take(8) {
            let (m, k) = (e.name("cl"), e.name(&c.to_string()));
            e.remove(format!("{m}.{k}"));
        }
        for b in head.exk.keys().filter(|b| **b < now_s - 60 && !self.ex.contains_key(b)).take(8) {
            let a = e.name(&expiry_k_attr(*b));
            e.remove(a);
        }
    }
}

/// Where a shard's posts stand, for readers outside the request path (the fan-out).
#[derive(Debug, Clone)]
pub struct PostedUpTo(Head);

/// Whether the post holding a message has committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostState {
    Committed,
    /// Still being written (or its producer died and the lease has not run out).
    Pending,
    /// Aborted or forced out, or the generation is gone: never visible.
    Failed,
}

impl PostedUpTo {
    pub fn state(&self, k: u64) -> PostState {
        if self.0.dead || self.0.in_hole(k) {
            PostState::Failed
        } else if k <= self.0.committed_k {
            PostState::Committed
        } else {
            PostState::Pending
        }
    }
}

/// How a post's reservation ended.
#[derive(Debug)]
pub(crate) enum PostEnd {
    Committed,
    /// The generation was deleted or purged after the reservation: the post happened before the delete.
    QueueGone,
    /// Forced out by a successor after the lease ran out: the range is a hole, the post failed.
    ForcedOut,
}

/// Lease for a post of `count` messages.
pub(crate) fn lease_ms(count: usize) -> i64 {
    (1000 + count as i64).min(10_000)
}

/// Longest a producer waits for earlier posts (real time), whatever the store clock says.
const COMMIT_WAIT: Duration = Duration::from_secs(12);

/// The last `next_k` this process reserved or saw per shard (bounded; a wrong hint costs one retry).
#[derive(Default)]
pub(crate) struct NextHints(std::sync::Mutex<std::collections::HashMap<String, u64>>);

impl NextHints {
    fn key(shard: &Shard) -> String {
        shard.messages_pk()
    }

    pub(crate) fn get(&self, shard: &Shard) -> Option<u64> {
        self.0.lock().ok()?.get(&Self::key(shard)).copied()
    }

    pub(crate) fn put(&self, shard: &Shard, next_k: u64) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() >= 10_000 {
                m.clear();
            }
            m.insert(Self::key(shard), next_k);
        }
    }
}

/// A reservation was refused because the generation is dead: refresh the queue record and retry.
#[derive(Debug)]
pub(crate) struct StaleGeneration;

impl Store {
    /// The commit state of a shard's posts (one consistent read).
    pub async fn posted_up_to(&self, shard: &Shard) -> Result<PostedUpTo, StoreError> {
        Ok(PostedUpTo(self.read_head(shard).await?))
    }

    pub(crate) async fn read_head(&self, shard: &Shard) -> Result<Head, StoreError> {
        let item = self.get_consistent(shard.head_key(), "Queue head lookup").await?;
        Ok(Head::from_item(item.as_ref()))
    }

    /// The heads of several shards in one BatchGetItem (at most [`keys::MAX_SHARDS`]), in shard order.
    pub(crate) async fn read_heads(&self, shards: &[Shard]) -> Result<Vec<Head>, StoreError> {
        self.read_heads_with(shards, true).await
    }

    /// [`Store::read_heads`], strongly or eventually consistent.
    pub(crate) async fn read_heads_with(&self, shards: &[Shard], consistent: bool) -> Result<Vec<Head>, StoreError> {
        if shards.len() == 1 {
            let item = self.get_item(shards[0].head_key(), "Queue head lookup", consistent).await?;
            return Ok(vec![Head::from_item(item.as_ref())]);
        }
        let mut found: std::collections::HashMap<String, Item> = std::collections::HashMap::new();
        let keys: Vec<Item> = shards.iter().map(Shard::head_key).collect();
        for item in self.batch_get_with(keys, "Queue head lookup", consistent).await? {
            if let Some(pk) = get_s(&item, keys::PK) {
                found.insert(pk.to_string(), item);
            }
        }
        Ok(shards
            .iter()
            .map(|sh| {
                let pk = get_s(&sh.head_key(), keys::PK).unwrap_or_default().to_string();
                Head::from_item(found.get(&pk))
            })
            .collect())
    }

    /// Reserves `count` sequence numbers and a lease, and records `lo` as the first number of each of
    /// `buckets` (the expiry buckets of the post's messages) that has none yet: returns `(lo, hi)`.
    pub(crate) async fn reserve(
        &self,
        shard: &Shard,
        count: u64,
        buckets: &[i64],
    ) -> Result<Result<(u64, u64), StaleGeneration>, StoreError> {
        // The last sequence number this process saw on the shard: usually right, saving a round trip.
        let mut known: Option<u64> = self.hints.get(shard);
        for attempt in 0..64u32 {
            let now = self.now_ms();
            let deadline = now + lease_ms(count as usize);
            // A shard's first post starts after its generation's first number (see `keys`).
            let cur = known.unwrap_or_else(|| keys::generation_first_k(&shard.gen));
            let (lo, hi) = (cur + 1, cur + count);
            if hi > keys::MAX_K {
                return Err(StoreError::exhausted("Message post"));
            }
            let mut e = Expr::default();
            let next = e.value(n(hi));
            e.set(format!("next_k = {next}"));
            let first = e.value(n(lo));
            for b in buckets {
                let a = e.name(&expiry_k_attr(*b));
                e.set(format!("{a} = if_not_exists({a}, {first})"));
            }
            if known.is_some() {
                let (p, l, d) = (e.name("pend"), e.name(&lo.to_string()), e.value(n(deadline)));
                e.set(format!("{p}.{l} = {d}"));
                let c = e.value(n(cur));
                e.condition(format!("next_k = {c} AND attribute_not_exists(dead) AND attribute_not_exists({RETIRED})"));
            } else {
                // First post of this shard: create the head with its maps. Each holds a sentinel entry
                // (`_`, never a number, so never read as one) and is never empty: DynamoDB Local's stream
                // serialises an emptied map in a shape the Streams SDK cannot parse, which would stall
                // the local poller.
                let pend = AttributeValue::M(
                    [(lo.to_string(), n(deadline)), (MAP_SENTINEL.to_string(), n(0))].into_iter().collect(),
                );
                let (p, pv) = (e.name("pend"), e.value(pend));
                let empty = e.value(AttributeValue::M([(MAP_SENTINEL.to_string(), n(0))].into_iter().collect()));
                let (first, live) = (e.value(n(cur)), e.value(n(cur + 1)));
                // Everything of a new head is fresh (see `ranges.rs`).
                let fresh = e.name(FRESH_K);
                e.set(format!(
                    "{p} = {pv}, committed_k = {first}, live_k = {live}, {fresh} = {live}, k0 = {first}, ex = {empty}, \
                     cl = {empty}, {PENDING_MAP} = {empty}"
                ));
                e.condition("attribute_not_exists(pk)".to_string());
            }
            match self.update_head_if(shard, e, "Message post").await? {
                Ok(()) => {
                    self.hints.put(shard, hi);
                    return Ok(Ok((lo, hi)));
                }
                Err(head) => {
                    // A retired shard: the cached shard count is out of date, as after a purge.
                    if head.dead || head.retired {
                        return Ok(Err(StaleGeneration));
                    }
                    known = head.exists.then_some(head.next_k);
                    if attempt > 4 {
                        super::contention_pause(attempt).await;
                    }
                }
            }
        }
        Err(StoreError::exhausted("Message post"))
    }

    /// Ends a reservation: commits it with `counts` (`abort == false`) or records it as a hole. Waits for
    /// earlier reservations, forcing past those whose lease ran out.
    pub(crate) async fn end_reservation(
        &self,
        shard: &Shard,
        lo: u64,
        hi: u64,
        counts: &Counts,
        abort: bool,
    ) -> Result<PostEnd, StoreError> {
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(2);
        // The watermark we expect below us, and the expired leases we may force past.
        let mut observed = lo - 1;
        let mut forced: Vec<u64> = vec![];
        let mut last_head: Option<Head> = None;
        loop {
            let now = self.now_ms();
            let mut e = Expr::default();
            let hi_v = e.value(n(hi));
            e.set(format!("committed_k = {hi_v}"));
            // Heads from before the pending-write map gain it here (see `pending.rs`).
            let (pw, empty) =
                (e.name(PENDING_MAP), e.value(AttributeValue::M([(MAP_SENTINEL.to_string(), n(0))].into())));
            e.set(format!("{pw} = if_not_exists({pw}, {empty})"));
            let (p, l) = (e.name("pend"), e.name(&lo.to_string()));
            e.remove(format!("{p}.{l}"));
            let mut holes = vec![];
            if abort {
                holes.push(hole(lo, hi));
            } else {
                counts.write_into(&mut e, last_head.as_ref(), now);
            }
            if observed < lo - 1 {
                holes.push(hole(observed + 1, lo - 1));
                for f in &forced {
                    let (p, l) = (e.name("pend"), e.name(&f.to_string()));
                    e.remove(format!("{p}.{l}"));
                }
            }
            if !holes.is_empty() {
                let hv = e.value(AttributeValue::Ss(holes));
                e.add(format!("holes {hv}"));
            }
            let ov = e.value(n(observed));
            e.condition(format!("committed_k = {ov} AND attribute_not_exists(dead)"));
            match self.update_head_if(shard, e, "Message post").await? {
                Ok(()) => {
                    if observed < lo - 1 {
                        tracing::warn!(queue = %shard.queue, shard = shard.index, from = observed + 1, to = lo - 1,
                            "forced the watermark past expired post leases");
                    }
                    return Ok(PostEnd::Committed);
                }
                Err(head) => {
                    if head.dead || !head.exists {
                        return Ok(PostEnd::QueueGone);
                    }
                    if head.committed_k >= hi {
                        // Past our range: either a producer forced the watermark past our expired lease
                        // (our range is then a hole), or our own write was applied by an attempt whose
                        // answer was lost and the SDK's retry found its condition gone. Only a range that
                        // is no hole and still above the live floor is surely ours; otherwise the post is
                        // written again (a duplicate at worst, never a loss).
                        if !abort && !head.in_hole(lo) && head.live_k <= lo {
                            return Ok(PostEnd::Committed);
                        }
                        return Ok(PostEnd::ForcedOut);
                    }
                    if head.committed_k + 1 == lo {
                        observed = lo - 1;
                        forced.clear();
                    } else {
                        // Earlier posts are pending: force past them once all their leases have run out.
                        let earlier: Vec<(&u64, &i64)> = head.pend.range(head.committed_k + 1..lo).collect();
                        if earlier.iter().all(|(_, deadline)| **deadline < now) {
                            observed = head.committed_k;
                            forced = earlier.iter().map(|(k, _)| **k).collect();
                        } else {
                            observed = lo - 1;
                            forced.clear();
                            if started.elapsed() > COMMIT_WAIT {
                                return Err(StoreError::exhausted("Message post"));
                            }
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_millis(50));
                        }
                    }
                    last_head = Some(head);
                }
            }
        }
    }

    /// A conditional update of a shard's head: `Ok(())` when applied, `Err(head)` with the head as it is
    /// when the condition failed; anything else is 503 for `what`.
    pub(crate) async fn update_head_if(
        &self,
        shard: &Shard,
        e: Expr,
        what: &'static str,
    ) -> Result<Result<(), Head>, StoreError> {
        let req = self
            .client
            .update_item()
            .table_name(&self.table)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        match e.apply(req, shard.head_key()).send().await {
            Ok(out) => {
                self.usage.write(out.consumed_capacity());
                Ok(Ok(()))
            }
            Err(err) => match self.failed_condition_item(&err) {
                Some(old) => Ok(Err(Head::from_item(old.as_ref()))),
                None => Err(unavailable(what)(err)),
            },
        }
    }

    /// Tombstones the heads of a deleted or purged generation (one write each, concurrently): new
    /// reservations are refused and readers holding the old generation refresh.
    pub(crate) async fn tombstone_heads(&self, shards: &[Shard]) -> Result<(), StoreError> {
        let expires = self.now_ms() + 15 * 24 * 3600 * 1000;
        let puts = shards.iter().map(|sh| async move {
            let mut item = sh.head_key();
            item.insert("dead".into(), AttributeValue::Bool(true));
            item.insert(keys::TTL_ATTR.into(), super::ttl_epoch(expires));
            self.put(item, "Queue deletion").await
        });
        futures::future::try_join_all(puts).await.map(drop)
    }

    /// Moves the live floor up to `k` (monotonic while no undo holds it) and forgets the holes and gone
    /// ranges below it.
    pub(crate) async fn raise_live_floor(&self, shard: &Shard, head: &Head, k: u64) -> Result<(), StoreError> {
        let mut e = Expr::default();
        raise_live_floor_into(&mut e, head, k, self.now_ms());
        e.condition("attribute_not_exists(dead)".into());
        let gone_below: Vec<String> = head.gone.iter().filter(|(_, hi)| *hi < k).map(range_text).collect();
        if !gone_below.is_empty() {
            let (g, gv) = (e.name(GONE), e.value(AttributeValue::Ss(gone_below)));
            e.delete(format!("{g} {gv}"));
        }
        let req =
            self.client.update_item().table_name(&self.table).return_consumed_capacity(ReturnConsumedCapacity::Total);
        let r = e.apply(req, shard.head_key()).send().await;
        self.conditional(r, "Queue floor").map(drop)
    }

    /// For a failed conditional UpdateItem: `Some(old item)` (as returned with ALL_OLD), `None` for other errors.
    pub(crate) fn failed_condition_item<R>(
        &self,
        err: &aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError, R>,
    ) -> Option<Option<Item>> {
        use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
        match err.as_service_error() {
            Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                self.usage.failed_write();
                Some(c.item().cloned())
            }
            _ => None,
        }
    }
}

impl Store {
    /// Before messages from `k` up are given a longer life, in expiry bucket `bucket` (a claim or renewal
    /// extends them): makes sure the expiry floor of that bucket is at most `k`. Otherwise a bucket
    /// opened by a later post would start scans past them once their old bucket ended, and they would go
    /// unseen while alive. Nothing is written when `known_first`, the bucket's floor as the caller knows
    /// it (from a head it read, or an earlier cover), is low enough already: the floor only falls.
    pub(crate) async fn cover_extended_lives(
        &self,
        shard: &Shard,
        bucket: i64,
        known_first: Option<u64>,
        k: u64,
    ) -> Result<(), StoreError> {
        if known_first.is_some_and(|first| first <= k) {
            return Ok(());
        }
        let mut e = Expr::default();
        let (a, kv) = (e.name(&expiry_k_attr(bucket)), e.value(n(k)));
        e.set(format!("{a} = {kv}"));
        e.condition(format!("attribute_not_exists(dead) AND (attribute_not_exists({a}) OR {a} > {kv})"));
        let req =
            self.client.update_item().table_name(&self.table).return_consumed_capacity(ReturnConsumedCapacity::Total);
        let r = e.apply(req, shard.head_key()).send().await;
        // Refused: the floor is low enough already, or the queue is gone.
        self.conditional(r, "Claim").map(drop)
    }
}

impl Store {
    /// Makes room below the live floor for a message about to be put back by the undo of a pop (see
    /// "Undone pops" above): holds the floor where it is for [`UNDO_HOLD_MS`], and when it has already
    /// passed `k`, lowers it to `k` with everything between masked as a hole. When `k` lies in such a
    /// mask (another undo lowered the floor past it), the mask is split around it. A few compare-and-set
    /// attempts; an error means storage did not answer, and the undo is tried again.
    pub(crate) async fn hold_live_floor(&self, shard: &Shard, k: u64) -> Result<(), StoreError> {
        let mut head = self.read_head(shard).await?;
        for _ in 0..5 {
            if head.dead || !head.exists {
                return Ok(());
            }
            let mut e = Expr::default();
            let (hold, until) = (e.name(UNDO_HOLD), e.value(n(self.now_ms() + UNDO_HOLD_MS)));
            e.set(format!("{hold} = {until}"));
            let holes = holes_making_room(&head.holes, head.live_k, k);
            let lowered = head.live_k > k;
            if lowered {
                let kv = e.value(n(k));
                e.set(format!("live_k = {kv}"));
            }
            let live = e.value(n(head.live_k));
            e.condition(format!("live_k = {live} AND attribute_not_exists(dead)"));
            let old: Vec<String> = head.holes.iter().map(|&(lo, hi)| hole(lo, hi)).collect();
            let new: Vec<String> = holes.iter().map(|&(lo, hi)| hole(lo, hi)).collect();
            if old.is_empty() {
                e.condition("attribute_not_exists(holes)".into());
            } else {
                let ov = e.value(AttributeValue::Ss(old.clone()));
                e.condition(format!("holes = {ov}"));
            }
            if new != old {
                if new.is_empty() {
                    e.remove("holes".into());
                } else {
                    let nv = e.value(AttributeValue::Ss(new));
                    e.set(format!("holes = {nv}"));
                }
            }
            match self.update_head_if(shard, e, "Message pop").await? {
                Ok(()) => {
                    if lowered {
                        tracing::warn!(queue = %shard.queue, shard = shard.index, k, "lowered the live floor to put back an undone pop");
                    }
                    return Ok(());
                }
                Err(now) => head = now,
            }
        }
        Err(StoreError::exhausted("Message pop"))
    }
}

/// Adds to `e` the raise of the live floor to `k`: monotonic, refused while an undo holds the floor (see
/// "Undone pops"), and forgetting the holes below it and the pending writes below it (a scan never
/// passes one it has not settled, so those are settled; removed here, a producer that went away does not
/// hold a slot of the map for good). The gone ranges below are the caller's: its write may set them.
pub(crate) fn raise_live_floor_into(e: &mut Expr, head: &Head, k: u64, now_ms: i64) {
    let (kv, now) = (e.value(n(k)), e.value(n(now_ms)));
    let hold = e.name(UNDO_HOLD);
    e.set(format!("live_k = {kv}"));
    e.condition(format!(
        "(attribute_not_exists(live_k) OR live_k < {kv}) AND (attribute_not_exists({hold}) OR {hold} < {now})"
    ));
    let below: Vec<String> = head.holes.iter().filter(|(_, hi)| *hi < k).map(|(lo, hi)| hole(*lo, *hi)).collect();
    if !below.is_empty() {
        let hv = e.value(AttributeValue::Ss(below));
        e.delete(format!("holes {hv}"));
    }
    remove_pending_below(e, head, k);
}

/// The holes of a head once room is made for message `k` below a live floor at `live_k` (see
/// [`Store::hold_live_floor`]): a hole holding `k` (a mask another undo made) is split around it, and
/// when the floor is above `k`, what lies between them is masked. Below the floor lie only removed
/// messages and the items of failed posts whose holes were forgotten: masked, they stay invisible.
fn holes_making_room(holes: &[(u64, u64)], live_k: u64, k: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = holes.to_vec();
    if let Some(i) = out.iter().position(|&(lo, hi)| lo <= k && k <= hi) {
        let (lo, hi) = out.remove(i);
        if lo < k {
            out.push((lo, k - 1));
        }
        if k < hi {
            out.push((k + 1, hi));
        }
    }
    if k + 1 < live_k {
        out.push((k + 1, live_k - 1));
    }
    out
}

/// Where a scan of a shard starts: after `after`, and past the live floor and the expiry floor, below
/// which every message has expired.
pub(crate) fn scan_start(head: &Head, after: Option<u64>, now_ms: i64) -> u64 {
    let floor = head.live_k.max(head.expiry_floor(now_ms).unwrap_or(0));
    after.map_or(1, |m| m.saturating_add(1)).max(floor)
}

#[cfg(test)]
mod tests {
    use super::holes_making_room;

    #[test]
    fn room_below_a_floor_already_low_enough_changes_no_hole() {
        assert_eq!(holes_making_room(&[(20, 25)], 10, 10), vec![(20, 25)]);
        assert_eq!(holes_making_room(&[], 10, 15), vec![]);
    }

    #[test]
    fn a_floor_lowered_to_a_message_masks_what_lies_between() {
        // Floor at 40, message 10: 11..=39 masked, other holes kept.
        assert_eq!(holes_making_room(&[(50, 52)], 40, 10), vec![(50, 52), (11, 39)]);
        // The floor just above the message: nothing between to mask.
        assert_eq!(holes_making_room(&[], 11, 10), vec![]);
    }

    #[test]
    fn a_message_inside_a_mask_splits_it() {
        // Another undo lowered the floor to 10 and masked 11..=39; message 15 comes back too.
        assert_eq!(holes_making_room(&[(11, 39)], 10, 15), vec![(11, 14), (16, 39)]);
        // At either end of the mask.
        assert_eq!(holes_making_room(&[(11, 39)], 10, 11), vec![(12, 39)]);
        assert_eq!(holes_making_room(&[(11, 39)], 10, 39), vec![(11, 38)]);
        assert_eq!(holes_making_room(&[(11, 11)], 10, 11), vec![]);
        // Split and lowered at once: a mask 21..=39 below a floor at 40 that has since risen to 45.
        assert_eq!(holes_making_room(&[(21, 39)], 45, 30), vec![(21, 29), (31, 39), (31, 44)]);
    }
}
