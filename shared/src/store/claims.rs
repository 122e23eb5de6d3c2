//! Claims: exclusive by conditional writes, flat in cost thanks to a claim floor, never half-done.
//!
//! Most claims take a run of messages nobody has touched yet in one write on the shard's head, and
//! leave the messages as they are (`ranges.rs`). What follows describes the claims of single messages,
//! which take the rest: messages handed back by claims that ended, delayed ones, those whose life a
//! claim extends, those of queues with a dead-letter queue.
//!
//! A claim marks each message with `claim_id` and `claim_until_ms` in one conditional UpdateItem
//! ([`cond::CLAIMABLE`]); a lost race fails the condition and the message is skipped. The writes of one
//! round run concurrently: one round trip, not one per message, which is what Lambda bills by.
//!
//! The claim record is written *before* its messages are marked, listing the candidates of the round
//! (`ks`), so a message never carries the id of a claim that does not exist: if the process dies or
//! storage fails midway, the record still names every message that may carry its id, and get, renew
//! and release work on it. A failure after some messages were claimed returns those messages (a claim
//! may always hold fewer than asked); a failure before any were claimed removes the record and is a 503.
//!
//! Claims end on whole seconds, or coarser steps on a crowded head ([`keys::claim_end_ms`]), so the
//! shard heads' claim counters are exact and their number bounded.
//! A claim starts on a random shard and moves on to the next ones until it has enough messages: fair
//! over many claims, and one shard per claim while the backlog is spread evenly.
//!
//! The claim floor keeps claim cost flat however many messages are already claimed: the head records
//! `floor_k`, below which every message is dead or claimed until at least `floor_until_ms`. While that
//! instant is in the future a claim starts scanning at the floor. Release and renew may end claims
//! early, so they reset the floor; `floor_ver` makes floor updates compare-and-set.

use super::head::{head_among, is_head_item, scan_start, Counts, Head};
use super::messages::{Message, MAX_SCAN_ITEMS};
use super::queues::QueueInfo;
use super::ranges;
use super::StoreError;
use super::{get_i64, get_s, ttl_epoch, unavailable, Store, Updated};
use crate::keys::{self, cond, n, s, Item, Shard};
use crate::types::{ProjectId, QueueName};
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeValue, ReturnConsumedCapacity, ReturnValue, ReturnValuesOnConditionCheckFailure,
};

#[derive(Debug, Clone, Copy)]
pub struct ClaimParams {
    pub ttl_s: i64,
    pub grace_s: i64,
}

/// `m` as a claim write leaves it (see `claim_one`).
fn claimed_version(m: &Message, cid: &str, until: i64, params: ClaimParams) -> Message {
    let mut c = Message {
        claim_id: Some(cid.to_string()),
        claim_until_ms: Some(until),
        claim_count: m.claim_count + 1,
        ..m.clone()
    };
    if let Some(life) = Life::extended(m, until, params) {
        (c.expires_ms, c.ttl_s) = (life.expires_ms, life.ttl_s);
    }
    c
}

/// The message as it was before the renewal whose tag is `renewed{slot}`, from what that renewal kept
/// (`rn_until{slot}` and the rest); `m` as read where it kept nothing (an item renewed before it did).
fn before_renewal(item: &Item, m: &Message, slot: &str) -> Message {
    let kept = |name: &str| get_i64(item, &format!("{name}{slot}")).filter(|v| *v > 0);
    match (kept("rn_until"), kept("rn_exp"), kept("rn_ttl")) {
        (Some(until), Some(expires_ms), Some(ttl_s)) => {
            Message { claim_until_ms: Some(until), expires_ms, ttl_s, ..m.clone() }
        }
        _ => m.clone(),
    }
}

/// Lifetime extension: a message that would die before its claim ends lives until the claim end + grace,
/// with the claim TTL + grace as its TTL (claims and renewals alike).
#[derive(Debug, Clone, Copy)]
struct Life {
    expires_ms: i64,
    ttl_s: i64,
}

impl Life {
    fn extended(m: &Message, until: i64, params: ClaimParams) -> Option<Life> {
        (m.expires_ms < until).then(|| Life::for_claim(until, params))
    }

    /// The life of a message a claim until `until` extends.
    fn for_claim(until: i64, params: ClaimParams) -> Life {
        Life { expires_ms: until + params.grace_s * 1000, ttl_s: params.ttl_s + params.grace_s }
    }

    /// The expiry bucket a message with this life is counted in.
    fn bucket(self) -> i64 {
        keys::expiry_bucket(self.expires_ms, self.ttl_s)
    }

    /// The update clause setting it, and the request with its values (`:newexp`, `:newttl`, `:epoch`).
    fn apply(self, req: UpdateItemFluentBuilder) -> (&'static str, UpdateItemFluentBuilder) {
        let req = req
            .expression_attribute_values(":newexp", n(self.expires_ms))
            .expression_attribute_values(":newttl", n(self.ttl_s))
            .expression_attribute_values(":epoch", ttl_epoch(self.expires_ms))
            .expression_attribute_names("#ttl", keys::TTL_ATTR);
        ("expires_ms = :newexp, ttl_s = :newttl, #ttl = :epoch", req)
    }
}

/// A claim write's condition that the claim id was not fenced (see `Store::unclaim_later`).
const NOT_FENCED: &str = "(attribute_not_exists(fenced) OR fenced <> :cid)";

/// Dead-letter settings of the claimed queue.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub queue: QueueName,
    pub max_claim_count: i64,
    pub ttl_s: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Claim {
    pub id: String,
    pub ttl_s: i64,
    pub grace_s: i64,
    pub updated_ms: i64,
    pub until_ms: i64,
    /// (shard, sequence number) of every message that may carry this claim's id.
    pub ks: Vec<(u32, u64)>,
}

/// Move the floor only when a scan skipped at least this many claimed messages (amortises the write).
const FLOOR_STEP: u64 = 10;

/// Claim ids name the shard holding the claim record: 2 hex digits of shard, 22 random; the first random
/// digit says whether the claim may hold a range (8-f) or not (0-7, see [`ranges::may_hold_range`]).
fn new_claim_id(shard: u32, may_range: bool) -> String {
    let digit = (rand::random::<u8>() & 7) | if may_range { 8 } else { 0 };
    format!("{:02x}{digit:x}{:021x}", shard & 0xff, rand::random::<u128>() >> 44)
}

fn claim_shard(cid: &str) -> Option<u32> {
    u32::from_str_radix(cid.get(..2)?, 16).ok()
}

fn encode_k(shard: u32, k: u64) -> String {
    ((u64::from(shard) << 56) | (k & keys::MAX_K)).to_string()
}

fn decode_k(v: &str) -> Option<(u32, u64)> {
    let x: u64 = v.parse().ok()?;
    Some(((x >> 56) as u32, x & keys::MAX_K))
}

/// The claim record as it is being written: created with the first round's candidates.
struct Record<'a> {
    shard: Shard,
    cid: &'a str,
    params: ClaimParams,
    now: i64,
    until: i64,
    written: bool,
}

impl Store {
    /// Claims up to `limit` messages in posting order; returns the claim id and its messages
    /// (`None` when nothing was claimable).
    pub async fn create_claim(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        limit: usize,
        params: ClaimParams,
        dead_letter: Option<&DeadLetter>,
    ) -> Result<Option<(String, Vec<Message>)>, StoreError> {
        let (store, project, queue, dead_letter) = (self.clone(), project.clone(), queue.clone(), dead_letter.cloned());
        super::detached("Claim", async move {
            store.create_claim_inner(&project, &queue, limit, params, dead_letter.as_ref()).await
        })
        .await
    }

    async fn create_claim_inner(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        limit: usize,
        params: ClaimParams,
        dead_letter: Option<&DeadLetter>,
    ) -> Result<Option<(String, Vec<Message>)>, StoreError> {
        let Some(info) = self.queue_info(project, queue).await? else { return Ok(None) };
        let now = self.now_ms();
        let first = rand::random::<u32>() % info.record.shards;
        let cid = new_claim_id(first, self.range_claims && dead_letter.is_none());
        let mut record = Record {
            shard: info.record.shard(project, queue, first),
            cid: &cid,
            params,
            now,
            // Set from the first shard head read (how crowded its claim ends are), before the record is written.
            until: keys::claim_end_ms(now, params.ttl_s, false),
            written: false,
        };
        let mut claimed: Vec<Message> = Vec::with_capacity(limit);
        let mut failure = None;
        for i in 0..info.record.shards {
            if claimed.len() >= limit {
                break;
            }
            let shard = info.record.shard(project, queue, (first + i) % info.record.shards);
            match self.claim_from_shard(&shard, limit - claimed.len(), &mut record, dead_letter).await {
                Ok((mut got, err)) => {
                    claimed.append(&mut got);
                    if let Some(e) = err {
                        failure = Some(e);
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if claimed.is_empty() {
            // An empty record holds nothing and expires with the claim anyway; it is deleted only when no
            // claim write failed, since a failed one may have been applied (its answer lost), leaving a
            // message that only this record explains.
            if record.written && failure.is_none() {
                let _ = self.delete_claim_record(&record.shard, &cid).await;
            }
            return match failure {
                Some(e) => Err(e),
                None => Ok(None),
            };
        }
        if let Some(e) = failure {
            tracing::warn!(error = %e, claimed = claimed.len(), "claim stopped early; returning what it holds");
        }
        Ok(Some((cid, claimed)))
    }

    /// Claims from one shard. Returns what was claimed, and the error that stopped it early, if any.
    ///
    /// On the claim's home shard of a queue without a dead-letter queue, messages below the fresh region
    /// are claimed one by one first (oldest first), then the fresh run in one head write
    /// ([`Store::claim_range`]); what that run could not take (a delayed message, one whose life the
    /// claim would extend) is claimed one by one after it.
    async fn claim_from_shard(
        &self,
        shard: &Shard,
        limit: usize,
        record: &mut Record<'_>,
        dead_letter: Option<&DeadLetter>,
    ) -> Result<(Vec<Message>, Option<StoreError>), StoreError> {
        let mut head = self.read_head(shard).await?;
        if head.dead || !head.exists {
            return Ok((vec![], None));
        }
        let now = record.now;
        let range_ok =
            self.range_claims && dead_letter.is_none() && ranges::may_hold_range(record.cid) && *shard == record.shard;
        if range_ok && head.rc_k.is_none() {
            head = self.init_fresh(shard, &head).await?;
        }
        let range_here = range_ok
            && head.rc_k.is_some()
            && head.live_ranges(now) < ranges::MAX_LIVE_RANGES
            && head.gone.len() < ranges::MAX_GONE;
        let head = head;
        if !record.written {
            record.until = keys::claim_end_ms(now, record.params.ttl_s, head.cl.len() >= keys::CROWDED_CLAIM_ENDS);
        }
        let until = record.until;
        // Where messages whose life this claim extends go, and the first number the expiry floor is known
        // to cover there (lowered by `Store::cover_extended_lives` as rounds extend earlier messages).
        let extended_bucket = Life::for_claim(until, record.params).bucket();
        let mut covered_from = head.exk.get(&extended_bucket).copied();
        let use_floor = head.floor_k > 1 && now < head.floor_until_ms;
        let base = scan_start(&head, None, now);
        let start = if use_floor { head.floor_k.max(base) } else { base };

        let mut claimed: Vec<Message> = Vec::with_capacity(limit);
        let mut counts = Counts::default();
        let mut failure = None;
        // Floor bookkeeping: the first k not known to be dead or claimed, and the earliest claim end below it.
        let mut floor = start;
        let mut floor_blocked = false;
        let mut floor_until = if use_floor { head.floor_until_ms } else { i64::MAX };
        let mut skipped = 0u64;
        let mut read = 0usize;
        let page = (limit as i32 + 10).min(100);
        // The head as the last hand-over left it (see `Store::prepare_per_message`).
        let mut handed = head.clone();
        let mut folded = false;
        // Pass 0 stops below the fresh region when a range claim follows it; pass 1 takes, one by one, what
        // the range claim stopped at and what follows.
        let mut from = start;
        for pass in 0..2 {
            let scan_to = match (pass, head.rc_k) {
                (0, Some(rc)) if range_here => rc - 1,
                (0, _) => head.committed_k,
                _ => head.committed_k,
            };
            'scan: while claimed.len() < limit && from <= scan_to && read < MAX_SCAN_ITEMS && failure.is_none() {
                let mut batch = Vec::new();
                let scanned = self
                    .scan_shard(shard, &head, from, page, page as usize, |m| {
                        if m.k > scan_to {
                            return false;
                        }
                        batch.push(m);
                        true
                    })
                    .await;
                // A failed page ends the claim; what earlier pages claimed is still counted below.
                let (last, _) = match scanned {
                    Ok(found) => found,
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                };
                let Some(last) = last else { break };
                read += batch.len();
                let eligible = |m: &Message| head.visible(m.k) && m.alive(now) && !m.claimed(now) && !m.delayed(now);
                let mut idx = 0;
                while idx < batch.len() && claimed.len() < limit {
                    // One round: the messages up to the one that makes `need` eligible ones; those are
                    // claimed concurrently (one round trip instead of `need`), the round then read in order.
                    let need = limit - claimed.len();
                    let mut end = idx;
                    let mut found = 0;
                    while end < batch.len() && found < need {
                        found += eligible(&batch[end]) as usize;
                        end += 1;
                    }
                    let round = &batch[idx..end];
                    // Fresh messages, and those of range claims that ran out, are handed over by the head
                    // first; a range claim may have taken some meanwhile, and deleted some under it
                    // (`taken`: until when they are claimed; removed ones for good).
                    let ks: Vec<u64> = round.iter().filter(|m| eligible(m)).map(|m| m.k).collect();
                    let mut taken: std::collections::HashMap<u64, i64> = Default::default();
                    if !ks.is_empty() {
                        match self.prepare_per_message(shard, &handed, &ks).await {
                            Ok(h) => {
                                for k in &ks {
                                    if h.masked(*k) {
                                        taken.insert(*k, i64::MAX);
                                    } else if let Some((_, r)) = h.range_of(*k) {
                                        taken.insert(*k, r.until_ms);
                                    }
                                }
                                handed = h;
                            }
                            Err(e) => {
                                failure = Some(e);
                                break 'scan;
                            }
                        }
                    }
                    let candidates: Vec<&Message> =
                        round.iter().filter(|m| eligible(m) && !taken.contains_key(&m.k)).collect();
                    if !candidates.is_empty() {
                        // Messages whose life the claim extends are covered by the expiry floor of their new
                        // bucket before they move there (`Store::cover_extended_lives`).
                        let params = record.params;
                        let extended_from =
                            candidates.iter().filter(|m| Life::extended(m, until, params).is_some()).map(|m| m.k).min();
                        let cover = async {
                            match extended_from {
                                Some(k) => self.cover_extended_lives(shard, extended_bucket, covered_from, k).await,
                                None => Ok(()),
                            }
                        };
                        let (recorded, covered) = futures::join!(self.record_candidates(record, &candidates), cover);
                        if let Err(e) = recorded.and(covered) {
                            failure = Some(e);
                            break 'scan;
                        }
                        if let Some(k) = extended_from {
                            covered_from = Some(covered_from.map_or(k, |c| c.min(k)));
                        }
                    }
                    let attempts =
                        candidates.iter().map(|m| self.claim_one(shard, m, record.cid, until, record.params, now));
                    let mut outcomes = futures::future::join_all(attempts).await.into_iter();
                    for m in round {
                        let passable_until = if !m.alive(now) || !head.visible(m.k) {
                            skipped += 1;
                            Some(i64::MAX)
                        } else if m.claimed(now) {
                            skipped += 1;
                            m.claim_until_ms
                        } else if m.delayed(now) {
                            None
                        } else if let Some(u) = taken.get(&m.k) {
                            skipped += 1;
                            Some(*u)
                        } else {
                            let Some(outcome) = outcomes.next() else { continue };
                            match outcome {
                                Err(e) => {
                                    failure.get_or_insert(e);
                                    self.unclaim_later(shard, m, record.cid, until, record.params, now);
                                    None
                                }
                                Ok(Ok(mine)) => {
                                    m.count_into(&mut counts, now, -1);
                                    let moved = match dead_letter {
                                        // Claimed `max_claim_count` times before this claim (counted by the write itself, not as read).
                                        Some(dl) if mine.claim_count > dl.max_claim_count => {
                                            match self.move_to_dead_letter(shard, &mine, dl, now).await {
                                                Ok(moved) => moved,
                                                Err(e) => {
                                                    failure.get_or_insert(e);
                                                    false
                                                }
                                            }
                                        }
                                        _ => false,
                                    };
                                    if !moved {
                                        mine.count_into(&mut counts, now, 1);
                                        claimed.push(mine);
                                    }
                                    Some(until)
                                }
                                // Lost the race: another claimer holds it until `u`, or it is gone.
                                Ok(Err(current)) => match current {
                                    Some(c) if c.claimed(now) => c.claim_until_ms,
                                    Some(c) if c.alive(now) => None,
                                    _ => Some(i64::MAX),
                                },
                            }
                        };
                        if !floor_blocked && pass == 0 {
                            match passable_until {
                                Some(u) => {
                                    floor = m.k + 1;
                                    floor_until = floor_until.min(u);
                                }
                                None => floor_blocked = true,
                            }
                        }
                    }
                    idx = end;
                    if failure.is_some() {
                        break 'scan;
                    }
                }
                from = last + 1;
            }
            if pass == 1 || !range_here || claimed.len() >= limit || failure.is_some() {
                break;
            }
            // The fresh run, in one head write. When everything below it was found removed (the scan
            // started at the live floor and passed only dead messages up to it), that write also raises
            // the live floor there.
            let live_to =
                (!use_floor && !floor_blocked && floor_until == i64::MAX && floor > head.live_k).then_some(floor);
            match self
                .claim_range(shard, &handed, record.cid, until, record.params, limit - claimed.len(), live_to)
                .await
            {
                Ok(got) => {
                    folded = got.raised_floor;
                    claimed.extend(got.messages);
                    match got.stopped_at {
                        Some(k) => from = k,
                        None => break,
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
            floor_blocked = true;
        }

        // The messages are claimed whatever happens next: their counts follow (owed if storage fails). The
        // floors only save later scans, so failing to move them must not lose what was claimed. All three are
        // writes on the head with conditions of their own (the writer's sequence number, the live floor, the
        // floor version): none waits for another. The live floor moves only past a run that was all dead
        // (`floor_until` unbounded); the claim floor is right either way.
        let move_floors = !folded && failure.is_none() && floor > start && skipped >= FLOOR_STEP && floor_until > now;
        let live_floor = async {
            if move_floors && floor_until == i64::MAX {
                self.raise_live_floor(shard, &head, floor).await
            } else {
                Ok(())
            }
        };
        let claim_floor = async {
            if move_floors {
                self.move_floor(shard, &head, floor, floor_until).await
            } else {
                Ok(())
            }
        };
        let ((), live, claim) = futures::join!(self.write_counts(shard, &counts, Some(&head)), live_floor, claim_floor);
        if let Err(e) = live.and(claim) {
            tracing::warn!(error = %e, "claim could not move the shard's floors");
        }
        Ok((claimed, failure))
    }

    /// Writes (or extends) the claim record with this round's candidates, before any is marked.
    async fn record_candidates(&self, record: &mut Record<'_>, candidates: &[&Message]) -> Result<(), StoreError> {
        let ks: Vec<String> = candidates.iter().map(|m| encode_k(m.shard, m.k)).collect();
        if !record.written {
            let mut item = record.shard.claim_key(record.cid);
            item.insert("ttl_s".into(), n(record.params.ttl_s));
            item.insert("grace_s".into(), n(record.params.grace_s));
            item.insert("updated_ms".into(), n(record.now));
            item.insert("until_ms".into(), n(record.until));
            item.insert("ks".into(), AttributeValue::Ns(ks));
            item.insert(keys::TTL_ATTR.into(), ttl_epoch(record.until));
            self.put(item, "Claim").await?;
            record.written = true;
            return Ok(());
        }
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(record.shard.claim_key(record.cid)))
            .update_expression("ADD ks :ks")
            .expression_attribute_values(":ks", AttributeValue::Ns(ks))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(unavailable("Claim"))?;
        self.usage.write(out.consumed_capacity());
        Ok(())
    }

    async fn delete_claim_record(&self, shard: &Shard, cid: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(shard.claim_key(cid)))
            .return_values(ReturnValue::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(unavailable("Claim release"))?;
        self.usage.write(out.consumed_capacity());
        Ok(out.attributes)
    }

    /// Adds the messages `ks` held by range claim `r` to the record of claim `cid` (created with the range
    /// claim's settings when it has none), before they carry its id (see `Store::convert_range`).
    pub(crate) async fn record_range_members(
        &self,
        home: &Shard,
        cid: &str,
        r: &ranges::RangeClaim,
        ks: &[u64],
    ) -> Result<(), StoreError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(home.claim_key(cid)))
            .update_expression(
                "SET ttl_s = if_not_exists(ttl_s, :ttl), grace_s = if_not_exists(grace_s, :grace), \
                 updated_ms = if_not_exists(updated_ms, :updated), until_ms = if_not_exists(until_ms, :until), \
                 #ttl = if_not_exists(#ttl, :epoch)",
            )
            .expression_attribute_names("#ttl", keys::TTL_ATTR)
            .expression_attribute_values(":ttl", n(r.ttl_s))
            .expression_attribute_values(":grace", n(r.grace_s))
            .expression_attribute_values(":updated", n(r.updated_ms))
            .expression_attribute_values(":until", n(r.until_ms))
            .expression_attribute_values(":epoch", ttl_epoch(r.until_ms))
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        if !ks.is_empty() {
            let encoded: Vec<String> = ks.iter().map(|k| encode_k(home.index, *k)).collect();
            req = req
                .update_expression(
                    "SET ttl_s = if_not_exists(ttl_s, :ttl), grace_s = if_not_exists(grace_s, :grace), \
                     updated_ms = if_not_exists(updated_ms, :updated), until_ms = if_not_exists(until_ms, :until), \
                     #ttl = if_not_exists(#ttl, :epoch) ADD ks :ks",
                )
                .expression_attribute_values(":ks", AttributeValue::Ns(encoded));
        }
        let out = req.send().await.map_err(unavailable("Claim renewal"))?;
        self.usage.write(out.consumed_capacity());
        Ok(())
    }

    /// One conditional claim write. `Ok(message)` when ours; `Err(current)` when the condition failed.
    async fn claim_one(
        &self,
        shard: &Shard,
        m: &Message,
        cid: &str,
        until: i64,
        params: ClaimParams,
        now: i64,
    ) -> Result<Result<Message, Option<Message>>, StoreError> {
        let mut update = String::from("SET claim_id = :cid, claim_until_ms = :until ADD claim_count :one");
        // On the expiry we read: the counts move the message from the bucket we read (another claim may
        // have extended its life, and been released, since).
        let mut req = self
            .update_message(shard, m.k)
            .condition_expression(format!("id = :id AND expires_ms = :exp AND {} AND {NOT_FENCED}", cond::CLAIMABLE))
            .expression_attribute_values(":exp", n(m.expires_ms))
            .expression_attribute_values(":id", s(m.id.clone()))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":cid", s(cid))
            .expression_attribute_values(":until", n(until))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        // Lifetime extension, from the expiry we read (`:exp` guards that it is unchanged).
        if let Some(life) = Life::extended(m, until, params) {
            let (clause, with) = life.apply(req);
            update = format!("SET claim_id = :cid, claim_until_ms = :until, {clause} ADD claim_count :one");
            req = with;
        }
        Ok(match self.updated(req.update_expression(update).send().await, "Claim")? {
            Updated::Applied(new) => Ok(new.as_ref().and_then(Message::from_item).unwrap_or_else(|| m.clone())),
            Updated::Refused(current) => match current.as_ref().and_then(Message::from_item) {
                // Our own write, applied by an attempt whose answer was lost (the SDK retried it).
                Some(c) if c.claim_id.as_deref() == Some(cid) => Ok(c),
                other => Err(other),
            },
        })
    }

    /// Moves a just-claimed message to the dead-letter queue: it keeps its claim there. Written there
    /// first, then removed here, so a failure in between leaves a copy rather than losing the message.
    /// Removed as every message is: expired in place, the item left to TTL at its natural expiry (see
    /// `keys`). `Ok(false)`: the message was removed here by someone else meanwhile (a delete by id), so
    /// it stays counted as this claim's and the copy is delivered again from the dead-letter queue.
    ///
    /// When storage does not answer the removal, the caller counts the message as claimed here; the
    /// removal is then re-driven in the background, and counts the message out once it (or an attempt
    /// whose answer was lost) is found applied.
    async fn move_to_dead_letter(
        &self,
        shard: &Shard,
        m: &Message,
        dl: &DeadLetter,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.post_moved(&shard.project, &dl.queue, m, dl.ttl_s.unwrap_or(m.ttl_s)).await?;
        let tag = uuid::Uuid::new_v4().simple().to_string();
        match self.remove_moved(shard, m, &tag).await {
            Ok(moved) => Ok(moved),
            Err(e) => {
                let (shard, m) = (shard.clone(), m.clone());
                self.settle_later("Dead-letter move", move |store| {
                    let (shard, m, tag) = (shard.clone(), m.clone(), tag.clone());
                    async move {
                        if store.remove_moved(&shard, &m, &tag).await? {
                            store.count_out(&shard, &m, now).await;
                        }
                        Ok(())
                    }
                });
                Err(e)
            }
        }
    }

    /// The removal of a message moved to the dead-letter queue, on condition that it is alive and still
    /// held by the claim that moved it; tagged, so that a retry recognises its own work. Whether it is
    /// (now) applied.
    async fn remove_moved(&self, shard: &Shard, m: &Message, tag: &str) -> Result<bool, StoreError> {
        let req = self
            .update_message(shard, m.k)
            .update_expression("SET expires_ms = :gone, moved = :tag REMOVE body, checksum")
            .condition_expression(format!("expires_ms > :now AND {}", cond::HELD_BY))
            .expression_attribute_values(":gone", n(0))
            .expression_attribute_values(":tag", s(tag))
            .expression_attribute_values(":now", n(self.now_ms()))
            .expression_attribute_values(":cid", s(m.claim_id.clone().unwrap_or_default()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        Ok(match self.updated(req.send().await, "Dead-letter move")? {
            Updated::Applied(_) => true,
            Updated::Refused(Some(item)) => get_s(&item, "moved") == Some(tag),
            Updated::Refused(None) => false,
        })
    }

    async fn move_floor(&self, shard: &Shard, head: &Head, floor: u64, until: i64) -> Result<(), StoreError> {
        let condition = if head.floor_ver == 0 {
            "attribute_not_exists(floor_ver) OR floor_ver = :ver"
        } else {
            "floor_ver = :ver"
        };
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(shard.head_key()))
            .update_expression("SET floor_k = :k, floor_until_ms = :u, floor_ver = :next")
            .condition_expression(format!("({condition}) AND attribute_not_exists(dead)"))
            .expression_attribute_values(":k", n(floor))
            .expression_attribute_values(":u", n(until))
            .expression_attribute_values(":ver", n(head.floor_ver))
            .expression_attribute_values(":next", n(head.floor_ver + 1))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        // A failed condition means someone else moved or reset the floor: fine.
        self.conditional(r, "Claim").map(drop)
    }

    /// [`Store::reset_floor`] in the background, until storage answers (a message released or restored
    /// below the floor would otherwise stay invisible to claims until the floor's time runs out).
    pub(crate) fn reset_floor_later(&self, shard: &Shard) {
        let shard = shard.clone();
        self.settle_later("Claim", move |store| {
            let shard = shard.clone();
            async move { store.write_floor_reset(&shard).await }
        });
    }

    /// Forgets the floor after claims ended early (release, renew to a shorter ttl): now, or, when storage
    /// does not answer, in the background until it does.
    pub(crate) async fn reset_floor(&self, shard: &Shard) {
        if self.write_floor_reset(shard).await.is_err() {
            self.reset_floor_later(shard);
        }
    }

    async fn write_floor_reset(&self, shard: &Shard) -> Result<(), StoreError> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(shard.head_key()))
            .update_expression("SET floor_k = :zero, floor_until_ms = :zero ADD floor_ver :one")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(dead)")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        self.conditional(r, "Claim").map(drop)
    }

    /// The shard of a claim's record, with the queue's current generation.
    async fn claim_home(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        cid: &str,
    ) -> Result<Option<(QueueInfo, Shard)>, StoreError> {
        if !keys::is_claim_id(cid) {
            return Ok(None);
        }
        let Some(info) = self.queue_info(project, queue).await? else { return Ok(None) };
        let Some(index) = claim_shard(cid).filter(|i| *i < info.record.shards) else { return Ok(None) };
        let shard = info.record.shard(project, queue, index);
        Ok(Some((info, shard)))
    }

    /// A live claim and the messages it still holds; `None` if unknown, released, expired or empty.
    pub async fn get_claim(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        cid: &str,
    ) -> Result<Option<(Claim, Vec<Message>)>, StoreError> {
        let Some((info, home)) = self.claim_home(project, queue, cid).await? else { return Ok(None) };
        // A claim that may hold a range: its home head alongside the record (see `ranges.rs`).
        let (item, head) = if ranges::may_hold_range(cid) {
            let items = self.batch_get(vec![home.claim_key(cid), home.head_key()], "Claim lookup").await?;
            (items.iter().find(|i| !is_head_item(i)).cloned(), Some(head_among(&items)))
        } else {
            (self.get_consistent(home.claim_key(cid), "Claim lookup").await?, None)
        };
        let now = self.now_ms();
        let range = head.as_ref().and_then(|h| h.ranges.get(cid)).filter(|r| r.live(now)).cloned();
        let claim = match (item.as_ref(), &range) {
            (Some(item), _) => Claim {
                id: cid.to_string(),
                ttl_s: get_i64(item, "ttl_s").unwrap_or(0),
                grace_s: get_i64(item, "grace_s").unwrap_or(0),
                updated_ms: get_i64(item, "updated_ms").unwrap_or(0),
                until_ms: get_i64(item, "until_ms").unwrap_or(0),
                ks: match item.get("ks") {
                    Some(AttributeValue::Ns(ns)) => ns.iter().filter_map(|k| decode_k(k)).collect(),
                    _ => vec![],
                },
            },
            (None, Some(r)) => Claim {
                id: cid.to_string(),
                ttl_s: r.ttl_s,
                grace_s: r.grace_s,
                updated_ms: r.updated_ms,
                until_ms: r.until_ms,
                ks: vec![],
            },
            (None, None) => return Ok(None),
        };
        if claim.until_ms <= now {
            return Ok(None);
        }
        let held = range.iter().flat_map(|r| r.held().map(|k| (home.index, k)).collect::<Vec<_>>());
        let keys: Vec<Item> = claim
            .ks
            .iter()
            .copied()
            .chain(held)
            .filter(|(sh, _)| *sh < info.record.shards)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|(sh, k)| info.record.shard(project, queue, sh).message_key(k))
            .collect();
        let mut messages: Vec<Message> = self
            .batch_get(keys, "Claim lookup")
            .await?
            .iter()
            .filter_map(Message::from_item)
            .filter_map(|mut m| match &head {
                // Removed by a range delete, or held by the range: as the home head says.
                Some(h) if m.shard == home.index => {
                    if h.masked(m.k) {
                        return None;
                    }
                    h.overlay(&mut m);
                    Some(m)
                }
                _ => Some(m),
            })
            .filter(|m| m.alive(now) && m.claim_id.as_deref() == Some(cid) && m.claimed(now))
            .collect();
        if messages.is_empty() {
            return Ok(None);
        }
        messages.sort_by_key(|m| (m.created_ms, m.shard, m.k));
        Ok(Some((claim, messages)))
    }

    /// Renews a claim: new expiry now + ttl, lifetimes extended again. `false` if not found.
    pub async fn renew_claim(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        cid: &str,
        params: ClaimParams,
    ) -> Result<bool, StoreError> {
        let (store, project, queue, cid) = (self.clone(), project.clone(), queue.clone(), cid.to_string());
        super::detached("Claim renewal", async move { store.renew_claim_inner(&project, &queue, &cid, params).await })
            .await
    }

    async fn renew_claim_inner(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        cid: &str,
        params: ClaimParams,
    ) -> Result<bool, StoreError> {
        let Some((info, home)) = self.claim_home(project, queue, cid).await? else { return Ok(false) };
        // A range part becomes a per-message claim first, so the renewal below extends lives as it does
        // for any claim (`Store::convert_range`).
        if ranges::may_hold_range(cid) {
            self.convert_range(&home, cid).await?;
        }
        // How crowded the home head's claim ends are, read alongside the claim (no extra round trip).
        let heads = self.read_heads_with(std::slice::from_ref(&home), false);
        let (found, heads) = futures::future::try_join(self.get_claim(project, queue, cid), heads).await?;
        let Some((claim, messages)) = found else { return Ok(false) };
        let crowded = heads.first().is_some_and(|h| h.cl.len() >= keys::CROWDED_CLAIM_ENDS);
        let now = self.now_ms();
        let until = keys::claim_end_ms(now, params.ttl_s, crowded);
        // The record first: it must outlive the messages' new claim ends.
        let renewed =
            Claim { ttl_s: params.ttl_s, grace_s: params.grace_s, updated_ms: now, until_ms: until, ..claim.clone() };
        // Messages whose life the renewal extends are covered by the expiry floor of their new bucket
        // first, per shard (`Store::cover_extended_lives`), alongside the record.
        let mut extended_from: std::collections::BTreeMap<u32, u64> = Default::default();
        for m in messages.iter().filter(|m| Life::extended(m, until, params).is_some()) {
            let k = extended_from.entry(m.shard).or_insert(m.k);
            *k = (*k).min(m.k);
        }
        let bucket = Life::for_claim(until, params).bucket();
        let covers = extended_from.iter().map(|(sh, k)| {
            let shard = info.record.shard(project, queue, *sh);
            let known = heads.first().filter(|_| shard == home).and_then(|h| h.exk.get(&bucket).copied());
            async move { self.cover_extended_lives(&shard, bucket, known, *k).await }
        });
        futures::future::try_join(self.put_claim(&home, &renewed), futures::future::try_join_all(covers)).await?;
        let op = uuid::Uuid::new_v4().simple().to_string();
        let renewals = messages.iter().map(|m| {
            let shard = info.record.shard(project, queue, m.shard);
            let op = op.as_str();
            async move {
                let r = self.renew_one(&shard, m, cid, op, until, params).await;
                if r.is_err() {
                    // Unknown outcome: renewing is repeatable, so it is completed in the background and counted.
                    self.renew_later(&shard, m, cid, op, until, params, now);
                }
                r
            }
        });
        let results = futures::future::join_all(renewals).await;
        let mut per_shard: std::collections::BTreeMap<u32, Counts> = Default::default();
        for (old, new) in results.iter().filter_map(|r| r.as_ref().ok().cloned().flatten()) {
            let c = per_shard.entry(old.shard).or_default();
            old.count_into(c, now, -1);
            new.count_into(c, now, 1);
        }
        let shorter = until < claim.until_ms;
        let writes = per_shard.iter().map(|(sh, c)| {
            let shard = info.record.shard(project, queue, *sh);
            async move {
                // A shorter renewal can end claims before the floor's recorded minimum. The floor and the
                // counts are separate conditional writes on the head, so they go in one round trip.
                let floor = async {
                    if shorter {
                        self.reset_floor(&shard).await;
                    }
                };
                futures::join!(self.write_counts(&shard, c, None), floor);
            }
        });
        futures::future::join_all(writes).await;
        results.into_iter().find_map(Result::err).map_or(Ok(true), Err)
    }

    /// [`Store::renew_one`] in the background (same tag), then counts the renewal it finds applied.
    #[allow(clippy::too_many_arguments)]
    fn renew_later(&self, shard: &Shard, m: &Message, cid: &str, op: &str, until: i64, params: ClaimParams, now: i64) {
        let (shard, m, cid, op) = (shard.clone(), m.clone(), cid.to_string(), op.to_string());
        self.settle_later("Claim renewal", move |store| {
            let (shard, m, cid, op) = (shard.clone(), m.clone(), cid.clone(), op.clone());
            async move {
                if let Some((before, after)) = store.renew_one(&shard, &m, &cid, &op, until, params).await? {
                    let mut counts = Counts::default();
                    before.count_into(&mut counts, now, -1);
                    after.count_into(&mut counts, now, 1);
                    store.write_counts(&shard, &counts, None).await;
                }
                Ok(())
            }
        });
    }

    /// Renews one message held by `cid` (`m` as read before): `Some((before, after))`, the message as this
    /// renewal found and left it, or `None` when `cid` no longer holds it. Counted from what DynamoDB
    /// returns (`ALL_OLD`), not from `m`: another renewal of the same claim (a client retrying, or a
    /// renewal settling in the background) may have moved the message's claim end since `m` was read.
    ///
    /// Tagged with `op`; the message keeps its last two renewal tags. A retry whose first attempt was
    /// applied finds its tag and does not apply again: applied again after a later renewal, it would move
    /// the claim end back and count that move a second time. Found, it answers `m` and the renewal made
    /// from it: the state this renewal was computed from.
    async fn renew_one(
        &self,
        shard: &Shard,
        m: &Message,
        cid: &str,
        op: &str,
        until: i64,
        params: ClaimParams,
    ) -> Result<Option<(Message, Message)>, StoreError> {
        // Each tag keeps the claim end and life the message had before it (`rn_*`), so that a retry
        // recognising its own work counts the move from there, even when another renewal came between
        // this one's read and its first application.
        let mut update = String::from(
            "SET renewed2 = if_not_exists(renewed, :none), renewed = :op, \
             rn_until2 = if_not_exists(rn_until, :zero), rn_exp2 = if_not_exists(rn_exp, :zero), \
             rn_ttl2 = if_not_exists(rn_ttl, :zero), rn_until = claim_until_ms, rn_exp = expires_ms, \
             rn_ttl = ttl_s, claim_until_ms = :until",
        );
        let life = Life::extended(m, until, params);
        let mut req = self
            .update_message(shard, m.k)
            // Alive: a removed or expired message keeps its claim id, and must not be brought back. Not
            // renewed by this operation already (see above).
            .condition_expression(format!(
                "{} AND expires_ms > :now AND (attribute_not_exists(renewed) OR renewed <> :op) \
                 AND (attribute_not_exists(renewed2) OR renewed2 <> :op)",
                cond::HELD_BY
            ))
            .expression_attribute_values(":cid", s(cid))
            .expression_attribute_values(":op", s(op))
            .expression_attribute_values(":none", s(""))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":now", n(self.now_ms()))
            .expression_attribute_values(":until", n(until))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some(life) = life {
            let (clause, with) = life.apply(req);
            update = format!("{update}, {clause}");
            req = with;
        }
        let renewed = |before: &Message| {
            let mut after = Message { claim_until_ms: Some(until), ..before.clone() };
            if let Some(life) = life {
                (after.expires_ms, after.ttl_s) = (life.expires_ms, life.ttl_s);
            }
            after
        };
        Ok(match self.updated(req.update_expression(update).send().await, "Claim renewal")? {
            Updated::Applied(old) => {
                let before = old.as_ref().and_then(Message::from_item).unwrap_or_else(|| m.clone());
                let after = renewed(&before);
                Some((before, after))
            }
            Updated::Refused(Some(item)) if get_s(&item, "renewed") == Some(op) => {
                let before = before_renewal(&item, m, "");
                Some((before.clone(), renewed(&before)))
            }
            Updated::Refused(Some(item)) if get_s(&item, "renewed2") == Some(op) => {
                let before = before_renewal(&item, m, "2");
                Some((before.clone(), renewed(&before)))
            }
            Updated::Refused(_) => None,
        })
    }

    /// Releases one live message held by `cid`: `Some(message as it was)` when this release (tagged `op`) did it.
    /// The message was alive when released (the condition says so), so its claim is counted out whatever
    /// has happened to it since: a retry may find it popped or deleted after the release.
    /// The tag lets a retried attempt whose first answer was lost recognise its own work: the claim id is
    /// gone either way, and without the tag its count would be lost. The message keeps its last two
    /// releases (tag, claim id, claim end), so a retry still recognises its own after another consumer
    /// claimed and released the message in between.
    async fn release_one(&self, shard: &Shard, k: u64, cid: &str, op: &str) -> Result<Option<Message>, StoreError> {
        let r = self
            .update_message(shard, k)
            .update_expression(
                "SET released2 = if_not_exists(released, :none), was_until2 = if_not_exists(was_until, :zero), \
                 was_cid2 = if_not_exists(was_cid, :none), \
                 released = :op, was_until = claim_until_ms, was_cid = claim_id REMOVE claim_id, claim_until_ms",
            )
            // Alive: a removed message keeps the claim it was removed under, which is what a removal
            // settled later reads to count it out of that claim (see `remove_tagged`).
            .condition_expression(format!("{} AND expires_ms > :now", cond::HELD_BY))
            .expression_attribute_values(":cid", s(cid))
            .expression_attribute_values(":op", s(op))
            .expression_attribute_values(":now", n(self.now_ms()))
            .expression_attribute_values(":none", s(""))
            .expression_attribute_values(":zero", n(0))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match self.updated(r, "Claim release")? {
            Updated::Applied(old) => Ok(old.as_ref().and_then(Message::from_item)),
            Updated::Refused(Some(item)) => {
                let until = if get_s(&item, "released") == Some(op) {
                    get_i64(&item, "was_until")
                } else if get_s(&item, "released2") == Some(op) {
                    get_i64(&item, "was_until2")
                } else {
                    return Ok(None);
                };
                Ok(Message::from_item(&item).map(|m| Message {
                    claim_id: Some(cid.to_string()),
                    claim_until_ms: until,
                    ..m
                }))
            }
            Updated::Refused(None) => Ok(None),
        }
    }

    /// Settles, in the background, a claim write whose outcome is unknown (`before`: the message as the
    /// claim read it). First the claim id is fenced on the message, so an attempt held up in the network
    /// cannot land later. The fence's answer shows whether the claim was applied: the message carries the
    /// claim id, or one of its last two releases left it in `was_cid`/`was_cid2`. If so, its counts are
    /// written as the claim would have (whatever happened to the message since was counted from the
    /// claimed state). Then, if the claim
    /// still holds the message, it is released, so that it is not hidden by a claim its client may never
    /// have heard of.
    fn unclaim_later(&self, shard: &Shard, before: &Message, cid: &str, until: i64, params: ClaimParams, now: i64) {
        let (shard, before, cid) = (shard.clone(), before.clone(), cid.to_string());
        self.settle_later("Claim", move |store| {
            let (shard, before, cid) = (shard.clone(), before.clone(), cid.clone());
            async move {
                let fence = store
                    .update_message(&shard, before.k)
                    .update_expression("SET fenced = :cid")
                    .condition_expression("attribute_exists(pk)")
                    .expression_attribute_values(":cid", s(&cid))
                    .return_values(ReturnValue::AllNew)
                    .send()
                    .await;
                let Some(item) = store.conditional(fence, "Claim")?.and_then(|o| o.attributes().cloned()) else {
                    return Ok(());
                };
                let held = get_s(&item, "claim_id") == Some(&cid);
                if !held && get_s(&item, "was_cid") != Some(&cid) && get_s(&item, "was_cid2") != Some(&cid) {
                    return Ok(());
                }
                let claimed = claimed_version(&before, &cid, until, params);
                let mut counts = Counts::default();
                before.count_into(&mut counts, now, -1);
                claimed.count_into(&mut counts, now, 1);
                store.write_counts(&shard, &counts, None).await;
                if held {
                    let op = uuid::Uuid::new_v4().simple().to_string();
                    store.release_later(&shard, before.k, &cid, &op, store.now_ms());
                }
                Ok(())
            }
        });
    }

    /// Releases one message held by `cid` in the background (tagged `op`: a release whose earlier attempt
    /// had the same tag recognises it), counts it and resets the floor.
    fn release_later(&self, shard: &Shard, k: u64, cid: &str, op: &str, now: i64) {
        let (shard, cid, op) = (shard.clone(), cid.to_string(), op.to_string());
        self.settle_later("Claim release", move |store| {
            let (shard, cid, op) = (shard.clone(), cid.clone(), op.clone());
            async move {
                if let Some(old) = store.release_one(&shard, k, &cid, &op).await? {
                    let mut counts = Counts::default();
                    if let Some(until) = old.claim_until_ms.filter(|u| *u > now) {
                        counts.claim(until, -1);
                    }
                    store.write_counts(&shard, &counts, None).await;
                    store.reset_floor_later(&shard);
                }
                Ok(())
            }
        });
    }

    async fn put_claim(&self, shard: &Shard, claim: &Claim) -> Result<(), StoreError> {
        let mut item = shard.claim_key(&claim.id);
        item.insert("ttl_s".into(), n(claim.ttl_s));
        item.insert("grace_s".into(), n(claim.grace_s));
        item.insert("updated_ms".into(), n(claim.updated_ms));
        item.insert("until_ms".into(), n(claim.until_ms));
        item.insert("ks".into(), AttributeValue::Ns(claim.ks.iter().map(|(sh, k)| encode_k(*sh, *k)).collect()));
        item.insert(keys::TTL_ATTR.into(), ttl_epoch(claim.until_ms));
        self.put(item, "Claim").await
    }

    /// Releases a claim: its messages become claimable at once. Unknown claims are fine.
    pub async fn release_claim(&self, project: &ProjectId, queue: &QueueName, cid: &str) -> Result<(), StoreError> {
        let (store, project, queue, cid) = (self.clone(), project.clone(), queue.clone(), cid.to_string());
        super::detached("Claim release", async move { store.release_claim_inner(&project, &queue, &cid).await }).await
    }

    async fn release_claim_inner(&self, project: &ProjectId, queue: &QueueName, cid: &str) -> Result<(), StoreError> {
        let Some((info, home)) = self.claim_home(project, queue, cid).await? else { return Ok(()) };
        // A range part leaves its head first; messages a range delete removed are not released below (a
        // renewal may have turned the range into a per-message claim that still names them), and those
        // the range held are released there without being counted again (a renewal that failed midway
        // may have marked them with the claim's id already).
        let (masked, ranged) = if ranges::may_hold_range(cid) {
            let released = self.release_range(&home, cid).await?;
            let ranged: std::collections::BTreeSet<u64> =
                released.iter().flat_map(|r| r.held().collect::<Vec<_>>()).collect();
            (Some(self.read_head(&home).await?), ranged)
        } else {
            (None, Default::default())
        };
        // The record goes last: while any message may still carry this claim id, the claim exists.
        let Some(record) = self.get_consistent(home.claim_key(cid), "Claim release").await? else { return Ok(()) };
        let now = self.now_ms();
        let ks: Vec<(u32, u64)> = match record.get("ks") {
            Some(AttributeValue::Ns(ns)) => ns
                .iter()
                .filter_map(|k| decode_k(k))
                .filter(|(sh, _)| *sh < info.record.shards)
                .filter(|(sh, k)| !masked.as_ref().is_some_and(|h| *sh == home.index && h.masked(*k)))
                .collect(),
            _ => return self.delete_claim_record(&home, cid).await.map(drop),
        };
        // Each release is tagged with this operation (see `release_one`).
        let op = uuid::Uuid::new_v4().simple().to_string();
        let releases = ks.iter().map(|(sh, k)| {
            let shard = info.record.shard(project, queue, *sh);
            let (op, ranged) = (op.as_str(), &ranged);
            async move {
                let r = self.release_one(&shard, *k, cid, op).await;
                if r.is_err() {
                    // Unknown outcome: the release is completed in the background, then counted (not the
                    // range's messages: counted out with the range; no claim end is after `i64::MAX`).
                    let counted_from = if *sh == home.index && ranged.contains(k) { i64::MAX } else { now };
                    self.release_later(&shard, *k, cid, op, counted_from);
                }
                r
            }
        });
        let results = futures::future::join_all(releases).await;
        let mut per_shard: std::collections::BTreeMap<u32, Counts> = Default::default();
        for old in results
            .iter()
            .filter_map(|r: &Result<Option<Message>, StoreError>| r.as_ref().ok().cloned().flatten())
            .filter(|m| !(m.shard == home.index && ranged.contains(&m.k)))
        {
            if let Some(until) = old.claim_until_ms.filter(|u| *u > now) {
                per_shard.entry(old.shard).or_default().claim(until, -1);
            }
        }
        let touched: std::collections::BTreeSet<u32> = ks.iter().map(|(sh, _)| *sh).collect();
        let writes = touched.into_iter().map(|sh| {
            let shard = info.record.shard(project, queue, sh);
            let counts = per_shard.remove(&sh).unwrap_or_default();
            async move {
                // Released messages sit below the floor: forget it (after the message writes), or they would
                // stay hidden from claims until the floor's time. The counts are a write of their own on the
                // head, so both go in one round trip.
                futures::join!(self.write_counts(&shard, &counts, None), self.reset_floor(&shard));
            }
        });
        let failure = results.into_iter().find_map(Result::err);
        // With every release answered, no message carries this claim id any more, so the record can go in
        // the same round trip as the head writes; otherwise it stays and explains what may still be held.
        let record_gone = async {
            match failure {
                Some(e) => Err(e),
                None => self.delete_claim_record(&home, cid).await.map(drop),
            }
        };
        let (_, gone) = futures::join!(futures::future::join_all(writes), record_gone);
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_ids_name_their_shard_and_ks_round_trip() {
        for may_range in [false, true] {
            let cid = new_claim_id(9, may_range);
            assert!(keys::is_claim_id(&cid));
            assert_eq!(claim_shard(&cid), Some(9));
            assert_eq!(ranges::may_hold_range(&cid), may_range);
        }
        assert_eq!(decode_k(&encode_k(63, 12345)), Some((63, 12345)));
        assert_eq!(decode_k(&encode_k(0, 1)), Some((0, 1)));
    }
}
