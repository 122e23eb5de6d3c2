//! Messages: posting, listing, lookup, deletion, pop and stats, over the shards of a queue.
//!
//! Ordering and atomicity of posts are the head's business (see `head.rs`): a post reserves sequence numbers
//! on one shard, writes its messages, then commits; readers see only committed, non-hole messages.
//! A producer's messages all go to the shard its Client-ID hashes to, so they stay in order.
//!
//! Every scan is bounded: it starts at the shard's live floor (or the claim floor, where claimed
//! messages are invisible anyway) and reads at most [`MAX_SCAN_ITEMS`] items per shard per request; a
//! listing that stops there returns a marker past what it read, so the next page continues.

use super::head::{head_among, heads_totals, is_head_item, scan_start, Counts, Head, PostEnd};
use super::pending::{Gap, LEFTOVER_AFTER_MS};
use super::queues::QueueInfo;
use super::ranges::{self, Deleter, RangeDelete};
use super::StoreError;
use super::{get_i64, get_s, ttl_epoch, unavailable, Store, Updated};
use crate::keys::{self, cond, n, s, Item, Shard};
use crate::types::{ClientId, ProjectId, QueueName};
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, PutRequest, ReturnConsumedCapacity, ReturnValue,
    ReturnValuesOnConditionCheckFailure, WriteRequest,
};
use futures::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;

/// Most items one request reads from one shard while looking for visible messages.
pub const MAX_SCAN_ITEMS: usize = 1000;
/// Concurrent BatchWriteItem requests of one post.
const POST_WRITE_CONCURRENCY: usize = 8;

/// A message as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub shard: u32,
    pub k: u64,
    pub id: String,
    /// JSON text of the body.
    pub body: String,
    pub ttl_s: i64,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub client: Option<String>,
    pub delay_until_ms: Option<i64>,
    pub delay_s: Option<i64>,
    pub claim_id: Option<String>,
    pub claim_until_ms: Option<i64>,
    pub claim_count: i64,
    pub checksum: Option<String>,
}

/// What a producer sends for one message, already validated.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub body: Value,
    pub ttl_s: i64,
    /// Only set on delayed queues.
    pub delay_s: Option<i64>,
}

impl Message {
    pub fn from_item(item: &Item) -> Option<Message> {
        let id = get_s(item, "id")?.to_string();
        let (shard, _) = keys::message_id_k(&id)?;
        Some(Message {
            shard,
            k: keys::message_k(get_s(item, keys::SK)?)?,
            id,
            body: get_s(item, "body").unwrap_or("null").to_string(),
            ttl_s: get_i64(item, "ttl_s")?,
            created_ms: get_i64(item, "created_ms")?,
            expires_ms: get_i64(item, "expires_ms")?,
            client: get_s(item, "client").map(str::to_string),
            delay_until_ms: get_i64(item, "delay_until_ms"),
            delay_s: get_i64(item, "delay_s"),
            claim_id: get_s(item, "claim_id").map(str::to_string),
            claim_until_ms: get_i64(item, "claim_until_ms"),
            claim_count: get_i64(item, "claim_count").unwrap_or(0),
            checksum: get_s(item, "checksum").map(str::to_string),
        })
    }

    pub fn alive(&self, now: i64) -> bool {
        self.expires_ms > now
    }

    pub fn claimed(&self, now: i64) -> bool {
        self.claim_until_ms.is_some_and(|u| u > now)
    }

    pub fn delayed(&self, now: i64) -> bool {
        self.delay_until_ms.is_some_and(|d| d > now)
    }

    pub fn body_value(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    pub fn age_s(&self, now: i64) -> i64 {
        ((now - self.created_ms) / 1000).max(0)
    }

    /// What this message adds to its head's counters while it exists (`sign` +1 or -1).
    pub(crate) fn count_into(&self, counts: &mut Counts, now: i64, sign: i64) {
        counts.message(self.expires_ms, self.ttl_s, sign);
        if let Some(until) = self.claim_until_ms.filter(|u| *u > now) {
            counts.claim(until, sign);
        }
    }

    /// The API representation: `id, href, ttl, age, body` and `checksum` when stored.
    /// `href` carries `?claim_id=` while the message carries a claim id (stale after expiry, as in Zaqar).
    pub fn to_json(&self, queue: &QueueName, now: i64) -> Value {
        let mut href = format!("/v2/queues/{}/messages/{}", queue.as_str(), self.id);
        if let Some(cid) = &self.claim_id {
            href.push_str("?claim_id=");
            href.push_str(cid);
        }
        let mut v =
            json!({"id": self.id, "href": href, "ttl": self.ttl_s, "age": self.age_s(now), "body": self.body_value()});
        if let Some(c) = &self.checksum {
            v["checksum"] = Value::String(c.clone());
        }
        v
    }
}

/// Which messages a listing shows.
#[derive(Debug, Clone)]
pub struct ListOptions {
    /// The `marker` query parameter as sent (per-shard positions; see [`Positions`]).
    pub marker: Option<String>,
    pub limit: usize,
    pub echo: bool,
    pub include_claimed: bool,
    pub include_delayed: bool,
    pub client: ClientId,
}

/// A page of messages and the marker of the next page.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub messages: Vec<Message>,
    pub marker: Option<String>,
}

/// Outcome of deleting one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    Absent,
    /// Claimed by a live claim and no (or another live) claim id was given: 403.
    Claimed,
    /// A claim id was given but the message is not claimed: 400.
    NotClaimed,
}

/// Who may remove a message (see `Store::remove_tagged`).
#[derive(Debug, Clone)]
enum Rule {
    /// Anyone (bulk delete by id ignores claims, as in Zaqar).
    Any,
    /// Nobody while a live claim holds it.
    Unclaimed,
    /// The holder of this claim id.
    HeldBy(String),
}

/// What a tagged removal did.
#[derive(Debug)]
enum Removal {
    /// Removed by this operation: the message as it was.
    Removed(Message),
    /// The rule refused it, or it is gone: the message as it is, if stored.
    Refused(Option<Message>),
}

/// A listing marker: the last sequence number shown per shard. One shard: the number itself (`"42"`);
/// several: the numbers joined by `-` (`"42-0-17"`). A queue whose shards were raised pads with zeros.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Positions(pub Vec<u64>);

impl Positions {
    /// `None` for a marker that is not ours (lists nothing, as Zaqar's MongoDB driver does).
    pub fn parse(marker: &str, shards: u32) -> Option<Positions> {
        let mut ks = Vec::new();
        for part in marker.split('-') {
            ks.push(part.parse::<u64>().ok()?);
        }
        if ks.len() > shards as usize {
            return None;
        }
        ks.resize(shards as usize, 0);
        Some(Positions(ks))
    }

    pub fn render(&self) -> String {
        self.0.iter().map(u64::to_string).collect::<Vec<_>>().join("-")
    }
}

/// Tracks the run of dead messages a scan passes from the live floor, to raise the floor after it.
struct DeadRun {
    from: u64,
    until: u64,
    open: bool,
}

impl DeadRun {
    /// A scan from `start`, which is open (contiguous from the floors) when it starts at `scan_start`'s
    /// base; everything below that base is dead, so a run may begin there.
    fn new(head: &Head, start: u64, now_ms: i64) -> Self {
        let base = scan_start(head, None, now_ms);
        DeadRun { from: head.live_k, until: base, open: start == base }
    }

    fn see(&mut self, m: &Message, head: &Head, now: i64) {
        self.see_k(m.k, m.alive(now), head);
    }

    /// [`Self::see`] of the message at `k`, alive or not.
    fn see_k(&mut self, k: u64, alive: bool, head: &Head) {
        if self.open {
            // A pending single post in the gap may still be written: the run ends before it.
            if let Some(&p) = head.pending.range(self.until..k.max(self.until)).next().map(|(p, _)| p) {
                self.until = self.until.max(p);
                self.open = false;
                return;
            }
            // The scan is contiguous from the floor: the gap before `k` holds deleted messages.
            self.until = self.until.max(k);
            if !alive || head.masked(k) {
                self.until = k + 1;
            } else {
                self.open = false;
            }
        }
    }

    /// The scan reached the watermark: everything it passed was dead.
    fn exhausted(&mut self, head: &Head) {
        if self.open {
            let pending = head.pending.range(self.until..).next().map(|(p, _)| *p);
            self.until = pending.unwrap_or(head.committed_k + 1).max(self.until);
        }
    }

    /// Raises the live floor when the run is long enough to be worth a write.
    async fn settle(self, store: &Store, shard: &Shard, head: &Head) -> Result<(), StoreError> {
        if self.until >= self.from + 32 {
            store.raise_live_floor(shard, head, self.until).await?;
        }
        Ok(())
    }
}

/// The shard a producer's messages go to: a stable hash of its Client-ID.
pub fn shard_for_client(client: Option<&str>, shards: u32) -> u32 {
    if shards <= 1 {
        return 0;
    }
    let Some(c) = client else { return rand::random::<u32>() % shards };
    // FNV-1a: stable across processes and releases (unlike std's hasher).
    let h = c.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    (h % u64::from(shards)) as u32
}

impl Store {
    /// The queue record for a message path; when a head reports the generation dead, the caller refreshes.
    async fn info(&self, project: &ProjectId, queue: &QueueName) -> Result<Option<QueueInfo>, StoreError> {
        self.queue_info(project, queue).await
    }

    /// Posts a batch and returns the new ids in order: all of them become visible together, or none.
    /// The queue is created when missing.
    pub async fn post_messages(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        client: Option<&ClientId>,
        messages: &[NewMessage],
        checksums: bool,
    ) -> Result<Vec<String>, StoreError> {
        let client = client.map(ClientId::to_string);
        for attempt in 0..3 {
            let info = self.queue_info_or_create(project, queue).await?;
            let shard = info.record.shard(project, queue, shard_for_client(client.as_deref(), info.record.shards));
            let now = self.now_ms();
            let items: Vec<(String, Item)> = messages
                .iter()
                .map(|m| {
                    let mut item = Item::new();
                    let expires_ms = now + m.ttl_s * 1000;
                    item.insert("ttl_s".into(), n(m.ttl_s));
                    item.insert("created_ms".into(), n(now));
                    item.insert("expires_ms".into(), n(expires_ms));
                    item.insert(keys::TTL_ATTR.into(), ttl_epoch(expires_ms));
                    if let Some(c) = &client {
                        item.insert("client".into(), s(c.clone()));
                    }
                    if let Some(d) = m.delay_s {
                        item.insert("delay_s".into(), n(d));
                        if d > 0 {
                            item.insert("delay_until_ms".into(), n(now + d * 1000));
                        }
                    }
                    if checksums && !m.body.is_null() {
                        item.insert("checksum".into(), s(checksum(&m.body)));
                    }
                    item.insert("body".into(), s(m.body.to_string()));
                    if info.subscribed {
                        item.insert(keys::FANOUT_ATTR.into(), AttributeValue::Bool(true));
                    }
                    (String::new(), item)
                })
                .collect();
            let mut counts = Counts::default();
            for m in messages {
                counts.message(now + m.ttl_s * 1000, m.ttl_s, 1);
            }
            match self.write_batch_post(&shard, items, &counts).await? {
                Ok(ids) => return Ok(ids),
                Err(_) if attempt < 2 => self.queues.forget(project, queue),
                Err(_) => break,
            }
        }
        Err(StoreError::exhausted("Message post"))
    }

    /// Posts on `shard`: one message in two writes where it can (`pending.rs`), else [`Self::write_reserved`].
    async fn write_batch_post(
        &self,
        shard: &Shard,
        items: Vec<(String, Item)>,
        counts: &Counts,
    ) -> Result<Result<Vec<String>, ()>, StoreError> {
        if let [(_, item)] = items.as_slice() {
            if let Some(done) = self.write_single_post(shard, item, counts).await? {
                return Ok(done);
            }
        }
        self.write_reserved(shard, items, counts).await
    }

    /// Reserves, writes and commits one post on `shard`. `Ok(Err(()))`: try again — the generation is dead
    /// (refresh the record) or the post was forced out after its lease ran out (its range is a hole, so
    /// writing it again elsewhere duplicates nothing).
    async fn write_reserved(
        &self,
        shard: &Shard,
        mut items: Vec<(String, Item)>,
        counts: &Counts,
    ) -> Result<Result<Vec<String>, ()>, StoreError> {
        let count = items.len() as u64;
        let buckets = counts.buckets();
        let (lo, hi) = match self.reserve(shard, count, &buckets).await? {
            Ok(range) => range,
            Err(_) => return Ok(Err(())),
        };
        let tail = rand::random::<u32>();
        let mut requests = Vec::with_capacity(items.len());
        for (i, (id, item)) in items.iter_mut().enumerate() {
            let k = lo + i as u64;
            *id = keys::message_id_with_tail(shard.index, k, tail.wrapping_add(i as u32));
            item.extend(shard.message_key(k));
            item.insert("id".into(), s(id.clone()));
            requests.push(put(std::mem::take(item)));
        }
        let chunks: Vec<Vec<WriteRequest>> = requests.chunks(25).map(<[WriteRequest]>::to_vec).collect();
        let written = futures::stream::iter(
            chunks.into_iter().map(|mut chunk| async move { self.batch_write(&mut chunk).await }),
        )
        .buffer_unordered(POST_WRITE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
        if let Some(e) = written.into_iter().find_map(Result::err) {
            // Nothing of this post may show: record the range as a hole (best effort; if this fails too,
            // the lease runs out and the next producer records it).
            if let Err(abort) = self.end_reservation(shard, lo, hi, &Counts::default(), true).await {
                tracing::warn!(error = %abort, "could not record an aborted post; its lease will expire");
            }
            return Err(e);
        }
        match self.end_reservation(shard, lo, hi, counts, false).await? {
            PostEnd::Committed | PostEnd::QueueGone => Ok(Ok(items.into_iter().map(|(id, _)| id).collect())),
            PostEnd::ForcedOut => {
                tracing::warn!(queue = %shard.queue, lo, hi, "post outlived its lease; writing it again");
                Ok(Err(()))
            }
        }
    }

    /// Re-posts a claimed message into a dead-letter queue, keeping body, claim and expiry.
    pub(crate) async fn post_moved(
        &self,
        project: &ProjectId,
        dlq: &QueueName,
        m: &Message,
        ttl_s: i64,
    ) -> Result<(), StoreError> {
        let now = self.now_ms();
        for attempt in 0..3 {
            let info = self.queue_info_or_create(project, dlq).await?;
            let shard = info.record.shard(project, dlq, shard_for_client(m.client.as_deref(), info.record.shards));
            let mut item = Item::new();
            item.insert("ttl_s".into(), n(ttl_s));
            item.insert("created_ms".into(), n(m.created_ms));
            item.insert("expires_ms".into(), n(m.expires_ms));
            item.insert(keys::TTL_ATTR.into(), ttl_epoch(m.expires_ms));
            item.insert("body".into(), s(m.body.clone()));
            item.insert("claim_count".into(), n(m.claim_count));
            if let (Some(cid), Some(until)) = (&m.claim_id, m.claim_until_ms) {
                item.insert("claim_id".into(), s(cid.clone()));
                item.insert("claim_until_ms".into(), n(until));
            }
            if let Some(c) = &m.client {
                item.insert("client".into(), s(c.clone()));
            }
            if let Some(c) = &m.checksum {
                item.insert("checksum".into(), s(c.clone()));
            }
            if info.subscribed {
                item.insert(keys::FANOUT_ATTR.into(), AttributeValue::Bool(true));
            }
            let mut counts = Counts::default();
            Message { ttl_s, ..m.clone() }.count_into(&mut counts, now, 1);
            // Three writes, not two: the message keeps its claim, which the counters hold too, and a
            // pending entry records only the expiry a tombstone would take out again (`pending.rs`).
            match self.write_reserved(&shard, vec![(String::new(), item)], &counts).await? {
                Ok(_) => return Ok(()),
                Err(_) if attempt < 2 => self.queues.forget(project, dlq),
                Err(_) => break,
            }
        }
        Err(StoreError::exhausted("Dead-letter move"))
    }

    /// Reads the items of `[from, head.committed_k]` of a shard in order, a page at a time, at most
    /// `max_items`, calling `visit` until it returns false. Returns the last sequence number read and
    /// whether the range ran out.
    ///
    /// A committed single post whose message is not there yet (`head.pending`, see `pending.rs`) ends the
    /// scan before it while its lease runs, as the watermark would; after the lease it is resolved and
    /// the scan reads on. Entries of messages written long ago are removed on the way.
    pub(crate) async fn scan_shard(
        &self,
        shard: &Shard,
        head: &Head,
        from: u64,
        page: i32,
        max_items: usize,
        mut visit: impl FnMut(Message) -> bool,
    ) -> Result<(Option<u64>, bool), StoreError> {
        let mut leftovers = vec![];
        let r = self.scan_shard_inner(shard, head, from, page, max_items, &mut visit, &mut leftovers).await;
        if let Err(e) = self.clear_pending(shard, &leftovers).await {
            tracing::warn!(error = %e, "could not remove settled pending writes");
        }
        r
    }

    #[allow(clippy::too_many_arguments)]
    async fn scan_shard_inner(
        &self,
        shard: &Shard,
        head: &Head,
        mut from: u64,
        page: i32,
        max_items: usize,
        visit: &mut impl FnMut(Message) -> bool,
        leftovers: &mut Vec<u64>,
    ) -> Result<(Option<u64>, bool), StoreError> {
        let to = head.committed_k;
        if from > to {
            return Ok((None, true));
        }
        let mut start: Option<Item> = None;
        let mut read = 0usize;
        let mut last = None;
        // Removed messages stay until TTL takes them: after a page of nothing but dead items the next page is
        // twice as long (up to 100), so a run of them costs few round trips, while live items are never
        // read further ahead than the caller asked.
        let mut page = page;
        let now = self.now_ms();
        // The lowest sequence number whose item this scan has not passed yet.
        let mut expect = from;
        'query: loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
                .expression_attribute_values(":pk", s(shard.messages_pk()))
                .expression_attribute_values(":lo", s(keys::message_sk(from)))
                .expression_attribute_values(":hi", s(keys::message_sk(to)))
                .consistent_read(true)
                .limit(page.min((max_items - read).max(1) as i32))
                .set_exclusive_start_key(start.take())
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(unavailable("Message listing"))?;
            self.usage.read(out.consumed_capacity());
            let mut all_dead = true;
            // The items, then the end of the range when this page reached it: pending writes with no
            // item are settled before the next item, or before the end.
            let at_end = out.last_evaluated_key().is_none();
            for item in out.items().iter().map(Some).chain(at_end.then_some(None)) {
                let k = match item {
                    Some(item) => match get_s(item, keys::SK).and_then(keys::message_k) {
                        Some(k) => k,
                        None => continue,
                    },
                    None => to.saturating_add(1),
                };
                match self.settle_gap(shard, head, &mut expect, k, now).await? {
                    Some(Gap::Stop) => return Ok((last, false)),
                    Some(Gap::ReadFrom(p)) => {
                        (from, expect) = (p, p);
                        continue 'query;
                    }
                    None => {}
                }
                let Some(item) = item else { break };
                if head.pending.get(&k).is_some_and(|p| p.deadline_ms + LEFTOVER_AFTER_MS < now) {
                    leftovers.push(k);
                }
                expect = k + 1;
                read += 1;
                if let Some(mut m) = Message::from_item(item) {
                    head.overlay(&mut m);
                    last = Some(m.k);
                    all_dead &= !m.alive(now);
                    if !visit(m) {
                        return Ok((last, false));
                    }
                }
            }
            match out.last_evaluated_key() {
                Some(k) if read < max_items => {
                    start = Some(k.clone());
                    if all_dead {
                        page = page.saturating_mul(2).min(page.max(100));
                    }
                }
                Some(_) => return Ok((last, false)),
                None => return Ok((last, true)),
            }
        }
    }

    /// Lists messages after the marker: per shard, the next visible messages; merged by age.
    pub async fn list_messages(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        opts: &ListOptions,
    ) -> Result<Page, StoreError> {
        for attempt in 0..2 {
            let Some(info) = self.info(project, queue).await? else { return Ok(Page::default()) };
            let positions = match &opts.marker {
                None => Positions(vec![0; info.record.shards as usize]),
                Some(m) => match Positions::parse(m, info.record.shards) {
                    Some(p) => p,
                    None => return Ok(Page::default()),
                },
            };
            let shards = info.record.all_shards(project, queue);
            let heads = self.read_heads(&shards).await?;
            if heads.iter().any(|h| h.dead) && attempt == 0 {
                self.queues.forget(project, queue);
                continue;
            }
            let scans = shards
                .iter()
                .zip(&heads)
                .zip(&positions.0)
                .map(|((sh, head), pos)| self.list_shard(sh, head, (*pos > 0).then_some(*pos), opts));
            let results = futures::future::try_join_all(scans).await?;
            // A k-way merge by age that takes each shard's messages in its own order (clocks of
            // different producers may disagree; a shard's sequence never does), so the next marker is a
            // prefix of every shard.
            let mut cursor = vec![0usize; results.len()];
            let mut merged: Vec<&Message> = Vec::with_capacity(opts.limit);
            while merged.len() < opts.limit {
                let next = (0..results.len())
                    .filter_map(|i| results[i].0.get(cursor[i]).map(|m| (i, m)))
                    .min_by_key(|(i, m)| (m.created_ms, *i));
                let Some((i, m)) = next else { break };
                cursor[i] += 1;
                merged.push(m);
            }
            let mut next = positions.0.clone();
            for (i, (found, scanned_to, _)) in results.iter().enumerate() {
                let taken: Vec<&&Message> = merged.iter().filter(|m| m.shard as usize == i).collect();
                if let Some(last) = taken.last() {
                    next[i] = last.k;
                } else if found.is_empty() {
                    if let Some(k) = scanned_to {
                        next[i] = next[i].max(*k);
                    }
                }
            }
            let messages: Vec<Message> = merged.into_iter().cloned().collect();
            // An empty page carries a marker only when a scan stopped at its bound (more may follow).
            let capped = results.iter().any(|(_, _, capped)| *capped) && next != positions.0;
            let marker = (!messages.is_empty() || capped).then(|| Positions(next).render());
            return Ok(Page { messages, marker });
        }
        Ok(Page::default())
    }

    /// Up to `limit` visible messages of one shard after `after`, the last sequence number read, and
    /// whether the scan stopped at its bound before finding them.
    async fn list_shard(
        &self,
        shard: &Shard,
        head: &Head,
        after: Option<u64>,
        opts: &ListOptions,
    ) -> Result<(Vec<Message>, Option<u64>, bool), StoreError> {
        let now = self.now_ms();
        let me = opts.client.to_string();
        let mut start = scan_start(head, after, now);
        // Below the claim floor everything is dead or claimed: a listing that hides claimed ones skips it.
        if !opts.include_claimed && now < head.floor_until_ms {
            start = start.max(head.floor_k);
        }
        let mut dead = DeadRun::new(head, start, now);
        let mut found = Vec::with_capacity(opts.limit);
        let page = (opts.limit as i32 + 5).min(100);
        let (last, exhausted) = self
            .scan_shard(shard, head, start, page, MAX_SCAN_ITEMS, |m| {
                dead.see(&m, head, now);
                let visible = head.visible(m.k)
                    && m.alive(now)
                    && (opts.echo || m.client.as_deref() != Some(me.as_str()))
                    && (opts.include_claimed || !m.claimed(now))
                    && (opts.include_delayed || !m.delayed(now));
                if visible {
                    found.push(m);
                }
                found.len() < opts.limit
            })
            .await?;
        if exhausted {
            dead.exhausted(head);
        }
        dead.settle(self, shard, head).await?;
        let capped = !exhausted && found.len() < opts.limit;
        Ok((found, last, capped))
    }

    /// The shard of a message id, with the queue's current generation.
    async fn shard_of(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        id: &str,
    ) -> Result<Option<(Shard, u64)>, StoreError> {
        let Some((index, k)) = keys::message_id_k(id) else { return Ok(None) };
        let Some(info) = self.info(project, queue).await? else { return Ok(None) };
        if index >= info.record.shards {
            return Ok(None);
        }
        Ok(Some((info.record.shard(project, queue, index), k)))
    }

    /// The storage key of a message id in the queue's current generation (for tests and tools that look
    /// at raw items).
    pub async fn message_key_of(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        id: &str,
    ) -> Result<Option<Item>, StoreError> {
        Ok(self.shard_of(project, queue, id).await?.map(|(shard, k)| shard.message_key(k)))
    }

    /// One message by id, if it exists and is alive.
    pub async fn get_message(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        id: &str,
    ) -> Result<Option<Message>, StoreError> {
        let Some((shard, k)) = self.shard_of(project, queue, id).await? else { return Ok(None) };
        // The head alongside (one request): range claims and range deletes are recorded there.
        let items = self.batch_get(vec![shard.message_key(k), shard.head_key()], "Message lookup").await?;
        let head = head_among(&items);
        let now = self.now_ms();
        let found = items.iter().filter(|i| !is_head_item(i)).find_map(Message::from_item);
        Ok(found.filter(|m| m.id == id && m.alive(now)).and_then(|m| head.shown(m)))
    }

    /// Messages by id, skipping unknown, malformed and expired ones.
    pub async fn get_messages(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        ids: &[String],
    ) -> Result<Vec<Message>, StoreError> {
        let Some(info) = self.info(project, queue).await? else { return Ok(vec![]) };
        let mut keys: Vec<(u32, u64)> =
            ids.iter().filter_map(|id| keys::message_id_k(id)).filter(|(sh, _)| *sh < info.record.shards).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut wanted: Vec<Item> =
            keys.iter().map(|(sh, k)| info.record.shard(project, queue, *sh).message_key(*k)).collect();
        // The heads of the shards involved, in the same requests (range claims and deletes are there).
        let shards: std::collections::BTreeSet<u32> = keys.iter().map(|(sh, _)| *sh).collect();
        wanted.extend(shards.iter().map(|sh| info.record.shard(project, queue, *sh).head_key()));
        let items = self.batch_get(wanted, "Message lookup").await?;
        let heads: std::collections::BTreeMap<u32, Head> = shards
            .iter()
            .map(|sh| {
                let pk = info.record.shard(project, queue, *sh).head_key();
                let item = items.iter().find(|i| i.get(keys::PK) == pk.get(keys::PK) && is_head_item(i));
                (*sh, Head::from_item(item))
            })
            .collect();
        let now = self.now_ms();
        let mut found: Vec<Message> = items
            .iter()
            .filter(|i| !is_head_item(i))
            .filter_map(Message::from_item)
            .filter(|m| ids.contains(&m.id) && m.alive(now))
            .filter_map(|m| heads.get(&m.shard).and_then(|h| h.shown(m)))
            .collect();
        found.sort_by_key(|m| (m.shard, m.k));
        Ok(found)
    }

    /// BatchGetItem (≤ 100 keys per request, unprocessed keys retried with backoff), consistent reads.
    pub(crate) async fn batch_get(&self, keys: Vec<Item>, what: &'static str) -> Result<Vec<Item>, StoreError> {
        self.batch_get_with(keys, what, true).await
    }

    /// BatchGetItem in chunks of 100, retrying unprocessed keys; `consistent` as in [`Store::get_item`].
    pub(crate) async fn batch_get_with(
        &self,
        keys: Vec<Item>,
        what: &'static str,
        consistent: bool,
    ) -> Result<Vec<Item>, StoreError> {
        let mut found = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(100) {
            let mut pending: Vec<Item> = chunk.to_vec();
            let mut attempt = 0;
            while !pending.is_empty() {
                let ka = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut pending)))
                    .consistent_read(consistent)
                    .build()
                    .expect("keys set");
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, ka)
                    .return_consumed_capacity(ReturnConsumedCapacity::Total)
                    .send()
                    .await
                    .map_err(unavailable(what))?;
                self.usage.read(out.consumed_capacity());
                if let Some(items) = out.responses().and_then(|r| r.get(&self.table)) {
                    found.extend(items.iter().cloned());
                }
                if let Some(left) = out.unprocessed_keys().and_then(|u| u.get(&self.table)) {
                    pending = left.keys().to_vec();
                    attempt += 1;
                    if attempt > 8 {
                        return Err(StoreError::exhausted(what));
                    }
                    tokio::time::sleep(Duration::from_millis(10 << attempt.min(6))).await;
                }
            }
        }
        Ok(found)
    }

    /// Deletes one message under Zaqar's claim rules, in one conditional request, then its counts.
    pub async fn delete_message(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        id: &str,
        claim_id: Option<&str>,
    ) -> Result<DeleteOutcome, StoreError> {
        let (store, project, queue) = (self.clone(), project.clone(), queue.clone());
        let (id, claim_id) = (id.to_string(), claim_id.map(str::to_string));
        super::detached("Message deletion", async move {
            store.delete_message_inner(&project, &queue, &id, claim_id.as_deref()).await
        })
        .await
    }

    async fn delete_message_inner(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        id: &str,
        claim_id: Option<&str>,
    ) -> Result<DeleteOutcome, StoreError> {
        let Some((shard, k)) = self.shard_of(project, queue, id).await? else { return Ok(DeleteOutcome::Absent) };
        // A claim that never held a range leaves the head out of it (see `ranges.rs`); otherwise the head
        // says whether a range claim holds the message, or a range delete removed it.
        if claim_id.is_none_or(ranges::may_hold_range) {
            let mut head = if claim_id.is_some() {
                self.read_head(&shard).await?
            } else {
                // Without a claim: the message alongside (one request). A fresh one is deleted on the
                // head alone (`Store::delete_fresh`): one write, the message left to TTL.
                let items = self.batch_get(vec![shard.message_key(k), shard.head_key()], "Message deletion").await?;
                let head = head_among(&items);
                let now = self.now_ms();
                let found = items.iter().filter(|i| !is_head_item(i)).find_map(Message::from_item);
                match found.filter(|m| m.id == id && m.alive(now) && !head.removed(m.k)) {
                    None => return Ok(DeleteOutcome::Absent),
                    Some(m) if head.rc_k.is_some_and(|rc| k >= rc) => {
                        if self.delete_fresh(&shard, &head, std::slice::from_ref(&m)).await? {
                            return Ok(DeleteOutcome::Deleted);
                        }
                        self.read_head(&shard).await?
                    }
                    Some(_) => head,
                }
            };
            let who = claim_id.map_or(Deleter::Unclaimed, Deleter::HeldBy);
            if claim_id.is_none() {
                // Unclaimed: a fresh message, or one a range claim that ran out still holds, is written
                // only after the head hands it over; the head it leaves says whether a range claim took
                // it meanwhile.
                head = self.prepare_per_message(&shard, &head, &[k]).await?;
            }
            if let RangeDelete::Done(outcome) = self.delete_in_range(&shard, &head, k, who).await? {
                return Ok(outcome);
            }
            if head.removed(k) {
                return Ok(DeleteOutcome::Absent);
            }
        }
        let now = self.now_ms();
        let op = uuid::Uuid::new_v4().simple().to_string();
        let rule = match claim_id {
            None => Rule::Unclaimed,
            Some(cid) => Rule::HeldBy(cid.to_string()),
        };
        match self.remove_or_settle(&shard, k, id, &op, rule, now).await? {
            Removal::Removed(old) => {
                self.count_out(&shard, &old, now).await;
                Ok(DeleteOutcome::Deleted)
            }
            Removal::Refused(current) => {
                let Some(m) = current.filter(|m| m.id == id && m.alive(now)) else {
                    return Ok(DeleteOutcome::Absent);
                };
                Ok(match claim_id {
                    None => DeleteOutcome::Claimed,
                    Some(_) if m.claimed(now) => DeleteOutcome::Claimed,
                    // Not claimed as its item says; a range claim may hold it (its head says so).
                    Some(_) => {
                        let head = self.read_head(&shard).await?;
                        let mut m = m;
                        head.overlay(&mut m);
                        if m.claimed(now) {
                            DeleteOutcome::Claimed
                        } else {
                            DeleteOutcome::NotClaimed
                        }
                    }
                })
            }
        }
    }

    /// [`Store::remove_tagged`]; when storage does not answer, the removal is completed (or found
    /// refused) in the background and its counts written then: the client was told 503 and may retry,
    /// which a completed removal answers as a delete of an absent message does.
    async fn remove_or_settle(
        &self,
        shard: &Shard,
        k: u64,
        id: &str,
        op: &str,
        rule: Rule,
        now: i64,
    ) -> Result<Removal, StoreError> {
        let r = self.remove_tagged(shard, k, id, op, &rule, now).await;
        if r.is_err() {
            let (shard, id, op) = (shard.clone(), id.to_string(), op.to_string());
            self.settle_later("Message deletion", move |store| {
                let (shard, id, op, rule) = (shard.clone(), id.clone(), op.clone(), rule.clone());
                async move {
                    if let Removal::Removed(old) = store.remove_tagged(&shard, k, &id, &op, &rule, now).await? {
                        store.count_out(&shard, &old, now).await;
                    }
                    Ok(())
                }
            });
        }
        r
    }

    /// Removes a live message if `rule` allows, in one conditional update: it expires at once, loses its
    /// body and carries `op`; TTL removes the item at its natural expiry, for free (not sooner: see
    /// `keys`). The tag is what makes the
    /// removal safe to retry: a retried attempt whose first answer was lost finds its own tag and knows
    /// the message was removed by this operation, as it was (a delete would find nothing, and could not
    /// tell "we removed it" from "someone else did", so its counts would be lost).
    async fn remove_tagged(
        &self,
        shard: &Shard,
        k: u64,
        id: &str,
        op: &str,
        rule: &Rule,
        now: i64,
    ) -> Result<Removal, StoreError> {
        let mut req = self
            .update_message(shard, k)
            .update_expression("SET removed = :op, was_exp = expires_ms, expires_ms = :gone REMOVE body, checksum")
            .expression_attribute_values(":id", s(id))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":op", s(op))
            .expression_attribute_values(":gone", n(0))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        req = match rule {
            Rule::Any => req.condition_expression("id = :id AND expires_ms > :now"),
            Rule::Unclaimed => {
                req.condition_expression(format!("id = :id AND expires_ms > :now AND ({})", cond::UNCLAIMED))
            }
            Rule::HeldBy(cid) => req
                .condition_expression(format!("id = :id AND expires_ms > :now AND {}", cond::HELD_BY))
                .expression_attribute_values(":cid", s(cid)),
        };
        Ok(match self.updated(req.send().await, "Message deletion")? {
            Updated::Applied(old) => match old.as_ref().and_then(Message::from_item) {
                Some(old) => Removal::Removed(old),
                None => Removal::Refused(None),
            },
            // Our own removal, applied by an attempt whose answer was lost: the message as it was.
            Updated::Refused(Some(item)) if get_s(&item, "removed") == Some(op) => {
                let was = get_i64(&item, "was_exp");
                match Message::from_item(&item) {
                    Some(m) => Removal::Removed(Message { expires_ms: was.unwrap_or(m.expires_ms), ..m }),
                    None => Removal::Refused(None),
                }
            }
            Updated::Refused(other) => Removal::Refused(other.as_ref().and_then(Message::from_item)),
        })
    }

    /// Deletes messages by id regardless of claims; unknown ids are ignored. One head write per shard.
    pub async fn delete_messages(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        ids: &[String],
    ) -> Result<(), StoreError> {
        let (store, project, queue, ids) = (self.clone(), project.clone(), queue.clone(), ids.to_vec());
        super::detached("Message deletion", async move { store.delete_messages_inner(&project, &queue, &ids).await })
            .await
    }

    async fn delete_messages_inner(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        ids: &[String],
    ) -> Result<(), StoreError> {
        let Some(info) = self.info(project, queue).await? else { return Ok(()) };
        let targets: Vec<(&String, (u32, u64))> = ids
            .iter()
            .filter_map(|id| keys::message_id_k(id).map(|k| (id, k)))
            .filter(|(_, (sh, _))| *sh < info.record.shards)
            .collect();
        // Per shard, what the head settles: messages range claims hold are deleted there, one head write
        // each; removed ones are skipped; fresh ones and those of range claims that ran out are handed
        // over to the per-message writes below.
        let shards: std::collections::BTreeSet<u32> = targets.iter().map(|(_, (sh, _))| *sh).collect();
        let mut settled: std::collections::BTreeSet<(u32, u64)> = Default::default();
        for sh in shards {
            let shard = info.record.shard(project, queue, sh);
            let mut ks: Vec<u64> = targets.iter().filter(|(_, (s, _))| *s == sh).map(|(_, (_, k))| *k).collect();
            // The messages alongside their head (one request): fresh ones go in one head write
            // (`Store::delete_fresh`), left to TTL.
            let mut wanted: Vec<Item> = ks.iter().map(|k| shard.message_key(*k)).collect();
            wanted.push(shard.head_key());
            let items = self.batch_get(wanted, "Message deletion").await?;
            let mut head = head_among(&items);
            let now = self.now_ms();
            let fresh: Vec<Message> = items
                .iter()
                .filter(|i| !is_head_item(i))
                .filter_map(Message::from_item)
                .filter(|m| ids.contains(&m.id) && m.alive(now) && head.visible(m.k) && !head.removed(m.k))
                .filter(|m| head.rc_k.is_some_and(|rc| m.k >= rc))
                .collect();
            if !fresh.is_empty() && self.delete_fresh(&shard, &head, &fresh).await? {
                settled.extend(fresh.iter().map(|m| (sh, m.k)));
                ks.retain(|k| !fresh.iter().any(|m| m.k == *k));
                if ks.is_empty() {
                    continue;
                }
                head = self.read_head(&shard).await?;
            }
            head = self.prepare_per_message(&shard, &head, &ks).await?;
            for k in ks {
                match self.delete_in_range(&shard, &head, k, Deleter::Any).await? {
                    RangeDelete::Done(_) => {
                        settled.insert((sh, k));
                        head = self.read_head(&shard).await?;
                    }
                    RangeDelete::NotMember => {
                        if head.removed(k) {
                            settled.insert((sh, k));
                        }
                    }
                }
            }
        }
        let now = self.now_ms();
        let op = uuid::Uuid::new_v4().simple().to_string();
        let deletes = targets.into_iter().filter(|(_, key)| !settled.contains(key)).map(|(id, (sh, k))| {
            let shard = info.record.shard(project, queue, sh);
            let op = op.as_str();
            async move {
                Ok::<_, StoreError>(match self.remove_or_settle(&shard, k, id, op, Rule::Any, now).await? {
                    Removal::Removed(old) => Some(old),
                    Removal::Refused(_) => None,
                })
            }
        });
        let results = futures::future::join_all(deletes).await;
        let removed: Vec<Message> = results.iter().filter_map(|r| r.as_ref().ok().cloned().flatten()).collect();
        self.uncount(project, queue, &info, &removed, now).await?;
        results.into_iter().find_map(Result::err).map_or(Ok(()), Err)
    }

    /// Takes removed messages out of their shards' counters (one write per shard touched).
    pub(crate) async fn uncount(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        info: &QueueInfo,
        removed: &[Message],
        now: i64,
    ) -> Result<(), StoreError> {
        let mut per_shard: std::collections::BTreeMap<u32, Counts> = Default::default();
        for m in removed.iter().filter(|m| m.alive(now)) {
            m.count_into(per_shard.entry(m.shard).or_default(), now, -1);
        }
        let writes = per_shard.iter().map(|(sh, c)| {
            let shard = info.record.shard(project, queue, *sh);
            async move { self.write_counts(&shard, c, None).await }
        });
        futures::future::join_all(writes).await;
        Ok(())
    }

    /// Removes up to `count` unclaimed messages, oldest first per shard, each atomically. Delay is ignored.
    pub async fn pop_messages(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        count: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let (store, project, queue) = (self.clone(), project.clone(), queue.clone());
        super::detached("Message pop", async move { store.pop_messages_inner(&project, &queue, count).await }).await
    }

    async fn pop_messages_inner(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        count: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let Some(info) = self.info(project, queue).await? else { return Ok(vec![]) };
        let first = rand::random::<u32>() % info.record.shards;
        let mut popped = Vec::with_capacity(count);
        for i in 0..info.record.shards {
            if popped.len() >= count {
                break;
            }
            let shard = info.record.shard(project, queue, (first + i) % info.record.shards);
            let want = count - popped.len();
            match self.pop_shard(&shard, want).await {
                Ok(mut got) => popped.append(&mut got),
                // Messages already removed must reach the caller: an error only wins when nothing was popped.
                Err(e) if popped.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        Ok(popped)
    }

    async fn pop_shard(&self, shard: &Shard, count: usize) -> Result<Vec<Message>, StoreError> {
        let head = self.read_head(shard).await?;
        let now = self.now_ms();
        let mut from = scan_start(&head, None, now);
        if now < head.floor_until_ms {
            from = from.max(head.floor_k);
        }
        let mut candidates = Vec::new();
        let mut visited = Vec::new();
        let (_, exhausted) = self
            .scan_shard(shard, &head, from, (count as i32 + 5).min(100), MAX_SCAN_ITEMS, |m| {
                visited.push((m.k, m.alive(now)));
                if head.visible(m.k) && m.alive(now) && !m.claimed(now) {
                    candidates.push(m);
                }
                candidates.len() < count
            })
            .await?;
        // Fresh messages, and those of range claims that ran out, are handed over by the head first; a
        // range claim may have taken some meanwhile, or a delete removed them.
        let ks: Vec<u64> = candidates.iter().map(|m| m.k).collect();
        let handed = self.prepare_per_message(shard, &head, &ks).await?;
        candidates.retain(|m| !handed.masked(m.k) && !handed.range_of(m.k).is_some_and(|(_, r)| r.live(now)));
        // A pop is one conditional update per message that expires it at once (TTL removes the item at
        // its natural expiry, for free) and tags it with this pop: a retried attempt whose first answer was lost
        // finds its own tag and knows the message is ours, where a delete would find nothing and could
        // not tell "we took it" from "someone else did".
        let op = uuid::Uuid::new_v4().simple().to_string();
        let pops = candidates.iter().map(|m| self.pop_one(shard, m, &op, now));
        let results = futures::future::join_all(pops).await;
        let popped: Vec<Message> = results.iter().filter_map(|r| r.as_ref().ok().cloned().flatten()).collect();
        let mut counts = Counts::default();
        for m in &popped {
            m.count_into(&mut counts, now, -1);
        }
        // The messages just popped are dead now: with the dead ones before them they may make a run long
        // enough to raise the live floor, so the next pop does not read them again.
        let taken: std::collections::HashSet<u64> = popped.iter().map(|m| m.k).collect();
        let mut dead = DeadRun::new(&head, from, now);
        for (k, alive) in visited {
            dead.see_k(k, alive && !taken.contains(&k), &head);
        }
        if exhausted {
            dead.exhausted(&head);
        }
        let ((), settled) =
            futures::future::join(self.write_counts(shard, &counts, Some(&head)), dead.settle(self, shard, &head))
                .await;
        if let Err(e) = settled {
            tracing::warn!(error = %e, "pop could not raise the live floor");
        }
        if popped.is_empty() {
            if let Some(e) = results.into_iter().find_map(Result::err) {
                return Err(e);
            }
        }
        Ok(popped)
    }

    /// Pops one message: `Some` (as it was before the pop) when this pop took it.
    async fn pop_one(&self, shard: &Shard, m: &Message, op: &str, now: i64) -> Result<Option<Message>, StoreError> {
        let r = self
            .update_message(shard, m.k)
            .update_expression(
                "SET popped = :op, was_exp = expires_ms, was_ttl = #ttl, expires_ms = :gone REMOVE body, checksum",
            )
            // Not after this pop was undone: an attempt held up in the network may land after the un-pop.
            .condition_expression(format!(
                "id = :id AND {} AND (attribute_not_exists(unpopped) OR unpopped <> :op)",
                cond::POPPABLE
            ))
            .expression_attribute_names("#ttl", keys::TTL_ATTR)
            .expression_attribute_values(":id", s(m.id.clone()))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":op", s(op))
            .expression_attribute_values(":gone", n(0))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match self.updated(r, "Message pop") {
            Ok(Updated::Applied(old)) => Ok(old.as_ref().and_then(Message::from_item)),
            Ok(Updated::Refused(current)) => {
                // Our own pop, applied by an attempt whose answer was lost: the message as we read it (body
                // and id never change; the pop removed the stored body), with the expiry it had when taken.
                Ok(current.filter(|item| get_s(item, "popped") == Some(op)).map(|item| Message {
                    expires_ms: get_i64(&item, "was_exp").unwrap_or(m.expires_ms),
                    ttl_s: get_i64(&item, "ttl_s").unwrap_or(m.ttl_s),
                    claim_id: get_s(&item, "claim_id").map(str::to_string),
                    claim_until_ms: get_i64(&item, "claim_until_ms"),
                    claim_count: get_i64(&item, "claim_count").unwrap_or(m.claim_count),
                    ..m.clone()
                }))
            }
            Err(e) => {
                // Unknown outcome: the pop may have been applied with its answer lost. Put the message back
                // if so, so that a pop that reports failure removed nothing (the un-pop only matches our tag);
                // when storage does not answer that either, it is done in the background.
                if self.unpop(shard, m, op).await.is_err() {
                    let (shard, m, op) = (shard.clone(), m.clone(), op.to_string());
                    self.settle_later("Message pop", move |store| {
                        let (shard, m, op) = (shard.clone(), m.clone(), op.clone());
                        async move { store.unpop(&shard, &m, &op).await }
                    });
                }
                Err(e)
            }
        }
    }

    /// Undoes a pop whose outcome is unknown: first fences it (`unpopped`, so that an attempt of it held
    /// up in the network cannot land later and take the message), then, if it had been applied, holds
    /// the shard's live floor below the message (`head.rs`, "Undone pops") and restores the message with
    /// the body the pop removed (bodies never change, so the one read before the pop is the one).
    /// Repeatable: an error means storage did not answer, and it is tried again.
    async fn unpop(&self, shard: &Shard, m: &Message, op: &str) -> Result<(), StoreError> {
        let fence = self
            .update_message(shard, m.k)
            .update_expression("SET unpopped = :op")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":op", s(op))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        // Restore when the fence saw the pop applied, or could not tell (the restore is conditional).
        let fenced = self.conditional(fence, "Message pop");
        let fence_error = match fenced {
            Ok(out) => {
                let item = out.and_then(|o| o.attributes().cloned());
                let tagged = |name| item.as_ref().is_some_and(|i| get_s(i, name) == Some(op));
                if tagged("restored") {
                    // Restored by an earlier attempt of this undo, which could not make sure of the floor.
                    return self.hold_live_floor(shard, m.k).await;
                }
                if !tagged("popped") {
                    return Ok(());
                }
                None
            }
            Err(e) => Some(e),
        };
        // The floor may have passed the message while it looked removed: make room for it first. When
        // storage does not answer that, the message is restored all the same (a floor raise can only pass
        // it before), and the undo is tried again, which finds it restored and makes sure of the floor.
        let held = self.hold_live_floor(shard, m.k).await;
        let mut restore = String::from("SET expires_ms = was_exp, #ttl = was_ttl, body = :body, restored = :op");
        let mut req = self
            .update_message(shard, m.k)
            .condition_expression("popped = :op")
            .expression_attribute_names("#ttl", keys::TTL_ATTR)
            .expression_attribute_values(":op", s(op))
            .expression_attribute_values(":body", s(m.body.clone()));
        if let Some(sum) = &m.checksum {
            restore.push_str(", checksum = :sum");
            req = req.expression_attribute_values(":sum", s(sum.clone()));
        }
        restore.push_str(" REMOVE popped, was_exp, was_ttl");
        let r = req.update_expression(restore).send().await;
        if self.conditional(r, "Message pop")?.is_some() {
            // Claims may have moved the floor past the message while it was popped.
            self.reset_floor_later(shard);
        }
        // Restored, or not popped: settled only once the fence and the hold are known to be in place.
        held?;
        fence_error.map_or(Ok(()), Err)
    }

    /// Counts for `GET .../stats`: (total, claimed, oldest, newest). Counts come from the heads (one read
    /// for an unsharded queue); oldest and newest from one short, eventually consistent query per shard end.
    pub async fn message_stats(
        &self,
        project: &ProjectId,
        queue: &QueueName,
    ) -> Result<(u64, u64, Option<Message>, Option<Message>), StoreError> {
        for attempt in 0..2 {
            // Eventually consistent first; a generation found dead is read again consistently.
            let info = if attempt == 0 {
                self.queue_info_eventual(project, queue).await?
            } else {
                self.info(project, queue).await?
            };
            let Some(info) = info else { break };
            let shards = info.record.all_shards(project, queue);
            // Eventually consistent (half the units): stats describe a moment, not a transaction.
            let heads = self.read_heads_with(&shards, false).await?;
            if heads.iter().any(|h| h.dead) && attempt == 0 {
                self.queues.forget(project, queue);
                continue;
            }
            let now = self.now_ms();
            let (total, claimed) = heads_totals(&heads, now);
            if total == 0 {
                break;
            }
            let live = shards.iter().zip(&heads).filter(|(_, h)| h.exists && !h.dead && h.committed_k > 0);
            // Both ends of every shard at once: one round trip after the heads, however many shards.
            let ends = live.map(|(sh, h)| async move {
                futures::try_join!(self.first_alive(sh, h, true), self.first_alive(sh, h, false))
            });
            let ends = futures::future::try_join_all(ends).await?;
            let oldest = ends.iter().filter_map(|(o, _)| o.clone()).min_by_key(|m| (m.created_ms, m.shard, m.k));
            let newest = ends.iter().filter_map(|(_, n)| n.clone()).max_by_key(|m| (m.created_ms, m.shard, m.k));
            return Ok((total, claimed, oldest, newest));
        }
        Ok((0, 0, None, None))
    }

    /// The first live, visible message of a shard from its floors (`forward`) or from its watermark down.
    /// Reads a page of 2, then one of 10 (eventually consistent): past the floors the first message is
    /// nearly always the one, and a page of 2 stays under 4 KB (half a unit). The forward scan raises the
    /// live floor past the dead messages it met, so later calls start after them.
    async fn first_alive(&self, shard: &Shard, head: &Head, forward: bool) -> Result<Option<Message>, StoreError> {
        let now = self.now_ms();
        let mut start: Option<Item> = None;
        // Past the messages known to have expired (the expiry floor), without reading them.
        let lo = scan_start(head, None, now);
        if lo > head.committed_k {
            return Ok(None);
        }
        let mut dead = DeadRun::new(head, lo, now);
        for page in [2, 10] {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
                .expression_attribute_values(":pk", s(shard.messages_pk()))
                .expression_attribute_values(":lo", s(keys::message_sk(lo)))
                .expression_attribute_values(":hi", s(keys::message_sk(head.committed_k)))
                .scan_index_forward(forward)
                .limit(page)
                .set_exclusive_start_key(start.take())
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(unavailable("Queue stats"))?;
            self.usage.read(out.consumed_capacity());
            for m in out.items().iter().filter_map(Message::from_item) {
                if forward {
                    dead.see(&m, head, now);
                }
                if head.visible(m.k) && m.alive(now) {
                    if forward {
                        dead.settle(self, shard, head).await?;
                    }
                    return Ok(Some(m));
                }
            }
            match out.last_evaluated_key() {
                Some(k) => start = Some(k.clone()),
                None => break,
            }
        }
        if forward {
            dead.settle(self, shard, head).await?;
        }
        Ok(None)
    }
}

impl Head {
    /// A message read by id as its head says it reads: `None` when removed (a range delete, or below the
    /// live floor, where nothing lives) or its queue generation is gone; claimed by a range claim that
    /// holds it.
    fn shown(&self, mut m: Message) -> Option<Message> {
        if self.removed(m.k) {
            return None;
        }
        self.overlay(&mut m);
        Some(m)
    }
}

fn put(item: Item) -> WriteRequest {
    WriteRequest::builder()
        .put_request(PutRequest::builder().set_item(Some(item)).build().expect("item is set"))
        .build()
}

/// `MD5:` + md5 of Python's `json.dumps(body)` (Zaqar's message checksums).
pub fn checksum(body: &Value) -> String {
    use md5::{Digest, Md5};
    let digest = Md5::digest(crate::json::python_dumps(body).as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("MD5:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_python_zaqar() {
        let body: Value = serde_json::from_str(r#"{"b": 1, "a": "é", "z": [1, 2]}"#).unwrap();
        assert_eq!(checksum(&body), "MD5:108e410c2642f8b1f71abc43cf9e3d71");
    }

    #[test]
    fn markers_round_trip_and_pad() {
        assert_eq!(Positions::parse("42", 1), Some(Positions(vec![42])));
        assert_eq!(Positions::parse("42-0-17", 3).unwrap().render(), "42-0-17");
        assert_eq!(Positions::parse("5", 3), Some(Positions(vec![5, 0, 0])));
        assert_eq!(Positions::parse("1-2", 1), None);
        assert_eq!(Positions::parse("abc", 1), None);
        assert_eq!(Positions::parse(&"9".repeat(4000), 1), None);
    }

    #[test]
    fn a_client_always_lands_on_the_same_shard() {
        let a = shard_for_client(Some("3381af92-2b9e-11e3-b191-71861300734c"), 16);
        assert_eq!(a, shard_for_client(Some("3381af92-2b9e-11e3-b191-71861300734c"), 16));
        assert!(a < 16);
        assert_eq!(shard_for_client(Some("x"), 1), 0);
    }
}
