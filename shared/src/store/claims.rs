//! Claims (§8, §15.2, §15.5): exclusive by conditional writes, flat in cost thanks to a claim floor.
//!
//! A claim marks each message with `claim_id` and `claim_until_ms` in one conditional UpdateItem
//! ([`cond::CLAIMABLE`]); a lost race fails the condition and the message is skipped. The writes of
//! one claim (and of a renewal or release) run concurrently: one round trip, not one per message,
//! which is what Lambda bills by.
//!
//! The claim floor keeps claim cost flat however many messages are already claimed: the head records
//! `floor_k`, below which every message is dead or claimed until at least `floor_until_ms`. While that
//! instant is in the future a claim starts scanning at the floor. Release and renew may end claims
//! early, so they reset the floor; `floor_ver` makes floor updates compare-and-set.

use super::messages::{Head, Message};
use super::{get_i64, is_condition_failed, ttl_epoch, unavailable, Store};
use crate::error::ApiError;
use crate::keys::{self, cond, n, s};
use crate::types::{ProjectId, QueueName};
use aws_sdk_dynamodb::types::{
    AttributeValue, ReturnConsumedCapacity, ReturnValue, ReturnValuesOnConditionCheckFailure,
};

#[derive(Debug, Clone, Copy)]
pub struct ClaimParams {
    pub ttl_s: i64,
    pub grace_s: i64,
}

/// Dead-letter settings of the claimed queue (§15.5).
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
    pub ks: Vec<u64>,
}

/// Move the floor only when a scan skipped at least this many claimed messages (amortises the write).
const FLOOR_STEP: u64 = 10;

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
    ) -> Result<Option<(String, Vec<Message>)>, ApiError> {
        let head = self.read_head(project, queue).await?;
        let now = self.now_ms();
        let cid = keys::new_claim_id();
        let until = now + params.ttl_s * 1000;
        let use_floor = head.floor_k > 1 && now < head.floor_until_ms;
        let start = if use_floor { head.floor_k } else { 1 };

        let mut claimed: Vec<Message> = Vec::with_capacity(limit);
        // Floor bookkeeping: the first k not known to be dead or claimed, and the earliest claim end below it.
        let mut floor = start;
        let mut floor_blocked = false;
        let mut floor_until = if use_floor { head.floor_until_ms } else { i64::MAX };
        let mut skipped_claimed = 0u64;
        let mut from = start;
        let page = (limit as i32 + 10).min(100);

        'scan: while claimed.len() < limit && from <= head.committed_k {
            let mut batch = Vec::new();
            self.scan_messages(project, queue, from, head.committed_k, page, |m| {
                batch.push(m);
                batch.len() < page as usize
            })
            .await?;
            let Some(last) = batch.last().map(|m| m.k) else { break };
            let eligible = |m: &Message| m.alive(now) && !m.claimed(now) && !m.delayed(now);
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
                let attempts = round
                    .iter()
                    .filter(|m| eligible(m))
                    .map(|m| self.claim_one(project, queue, m, &cid, until, params, now));
                let mut outcomes = futures::future::join_all(attempts).await.into_iter();
                for m in round {
                    let passable_until = if !m.alive(now) {
                        Some(i64::MAX)
                    } else if m.claimed(now) {
                        skipped_claimed += 1;
                        m.claim_until_ms
                    } else if m.delayed(now) {
                        None
                    } else {
                        let Some(outcome) = outcomes.next() else { continue };
                        match outcome? {
                            Ok(mine) => {
                                let moved = match dead_letter {
                                    Some(dl) if m.claim_count >= dl.max_claim_count => {
                                        self.move_to_dead_letter(project, queue, &mine, dl).await?;
                                        true
                                    }
                                    _ => false,
                                };
                                if !moved {
                                    claimed.push(mine);
                                }
                                Some(until)
                            }
                            // Lost the race: another claimer holds it until `u`, or it is gone.
                            Err(current) => match current {
                                Some(c) if c.claimed(now) => c.claim_until_ms,
                                Some(c) if c.alive(now) => None,
                                _ => Some(i64::MAX),
                            },
                        }
                    };
                    if !floor_blocked {
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
            }
            if claimed.len() == limit {
                break 'scan;
            }
            from = last + 1;
        }

        if floor > start && skipped_claimed >= FLOOR_STEP && floor_until > now {
            self.move_floor(project, queue, &head, floor, floor_until).await?;
        }
        if claimed.is_empty() {
            return Ok(None);
        }
        let claim = Claim {
            id: cid.clone(),
            ttl_s: params.ttl_s,
            grace_s: params.grace_s,
            updated_ms: now,
            until_ms: until,
            ks: claimed.iter().map(|m| m.k).collect(),
        };
        self.put_claim(project, queue, &claim).await?;
        Ok(Some((cid, claimed)))
    }

    /// One conditional claim write. `Ok(message)` when ours; `Err(current)` when the condition failed.
    #[allow(clippy::too_many_arguments)]
    async fn claim_one(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        m: &Message,
        cid: &str,
        until: i64,
        params: ClaimParams,
        now: i64,
    ) -> Result<Result<Message, Option<Message>>, ApiError> {
        let mut update = String::from("SET claim_id = :cid, claim_until_ms = :until ADD claim_count :one");
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(keys::message(project, queue, m.k)))
            .condition_expression(format!("id = :id AND {}", cond::CLAIMABLE))
            .expression_attribute_values(":id", s(m.id.clone()))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":cid", s(cid))
            .expression_attribute_values(":until", n(until))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        // Lifetime extension (§15.2): a message that would die before the claim ends lives until
        // claim end + grace. Checked against the expiry we read; `:exp` guards that it is unchanged.
        if m.expires_ms < until {
            let new_exp = until + params.grace_s * 1000;
            update = "SET claim_id = :cid, claim_until_ms = :until, expires_ms = :newexp, ttl_s = :newttl, #ttl = :epoch ADD claim_count :one".into();
            req = req
                .condition_expression(format!("id = :id AND expires_ms = :exp AND {}", cond::CLAIMABLE))
                .expression_attribute_values(":exp", n(m.expires_ms))
                .expression_attribute_values(":newexp", n(new_exp))
                .expression_attribute_values(":newttl", n(params.ttl_s + params.grace_s))
                .expression_attribute_values(":epoch", ttl_epoch(new_exp))
                .expression_attribute_names("#ttl", keys::TTL_ATTR);
        }
        match req.update_expression(update).send().await {
            Ok(out) => {
                self.usage.write(out.consumed_capacity());
                Ok(Ok(out.attributes().and_then(Message::from_item).unwrap_or_else(|| m.clone())))
            }
            Err(e) if is_condition_failed(&e) => {
                self.usage.failed_write();
                let current = e.as_service_error().and_then(|se| match se {
                    aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => {
                        c.item().and_then(Message::from_item)
                    }
                    _ => None,
                });
                Ok(Err(current))
            }
            Err(e) => Err(unavailable("Claim")(e)),
        }
    }

    /// Moves a just-claimed message to the dead-letter queue (§15.5): it keeps its claim there.
    async fn move_to_dead_letter(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        m: &Message,
        dl: &DeadLetter,
    ) -> Result<(), ApiError> {
        self.post_moved(project, &dl.queue, m, dl.ttl_s.unwrap_or(m.ttl_s)).await?;
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(keys::message(project, queue, m.k)))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(unavailable("Dead-letter move"))?;
        self.usage.write(out.consumed_capacity());
        Ok(())
    }

    async fn move_floor(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        head: &Head,
        floor: u64,
        until: i64,
    ) -> Result<(), ApiError> {
        let condition = if head.floor_ver == 0 {
            "attribute_not_exists(floor_ver) OR floor_ver = :ver"
        } else {
            "floor_ver = :ver"
        };
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(keys::head(project, queue)))
            .update_expression("SET floor_k = :k, floor_until_ms = :u, floor_ver = :next")
            .condition_expression(condition)
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

    /// Forgets the floor after claims ended early (release, renew to a shorter ttl).
    async fn reset_floor(&self, project: &ProjectId, queue: &QueueName) -> Result<(), ApiError> {
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(keys::head(project, queue)))
            .update_expression("SET floor_k = :zero, floor_until_ms = :zero ADD floor_ver :one")
            .condition_expression(cond::EXISTS)
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        self.conditional(r, "Claim").map(drop)
    }

    async fn put_claim(&self, project: &ProjectId, queue: &QueueName, claim: &Claim) -> Result<(), ApiError> {
        let mut item = keys::claim(project, queue, &claim.id);
        item.insert("ttl_s".into(), n(claim.ttl_s));
        item.insert("grace_s".into(), n(claim.grace_s));
        item.insert("updated_ms".into(), n(claim.updated_ms));
        item.insert("until_ms".into(), n(claim.until_ms));
        item.insert("ks".into(), AttributeValue::Ns(claim.ks.iter().map(|k| k.to_string()).collect()));
        item.insert(keys::TTL_ATTR.into(), ttl_epoch(claim.until_ms));
        self.put(item, "Claim").await
    }

    /// A live claim and the messages it still holds; `None` if unknown, released, expired or empty (§8.2).
    pub async fn get_claim(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        cid: &str,
    ) -> Result<Option<(Claim, Vec<Message>)>, ApiError> {
        if !keys::is_claim_id(cid) {
            return Ok(None);
        }
        let item = self.get_consistent(keys::claim(project, queue, cid), "Claim lookup").await?;
        let now = self.now_ms();
        let Some(item) = item.as_ref() else { return Ok(None) };
        let claim = Claim {
            id: cid.to_string(),
            ttl_s: get_i64(item, "ttl_s").unwrap_or(0),
            grace_s: get_i64(item, "grace_s").unwrap_or(0),
            updated_ms: get_i64(item, "updated_ms").unwrap_or(0),
            until_ms: get_i64(item, "until_ms").unwrap_or(0),
            ks: match item.get("ks") {
                Some(AttributeValue::Ns(ns)) => ns.iter().filter_map(|k| k.parse().ok()).collect(),
                _ => vec![],
            },
        };
        if claim.until_ms <= now {
            return Ok(None);
        }
        let mut ks = claim.ks.clone();
        ks.sort_unstable();
        let messages: Vec<Message> = self
            .batch_get_messages(project, queue, &ks)
            .await?
            .into_iter()
            .filter(|m| m.alive(now) && m.claim_id.as_deref() == Some(cid) && m.claimed(now))
            .collect();
        if messages.is_empty() {
            return Ok(None);
        }
        Ok(Some((claim, messages)))
    }

    /// Renews a claim (§8.3): new expiry now + ttl, lifetimes extended again. `false` if not found.
    pub async fn renew_claim(
        &self,
        project: &ProjectId,
        queue: &QueueName,
        cid: &str,
        params: ClaimParams,
    ) -> Result<bool, ApiError> {
        let Some((claim, messages)) = self.get_claim(project, queue, cid).await? else { return Ok(false) };
        let now = self.now_ms();
        let until = now + params.ttl_s * 1000;
        let renewals = messages.iter().map(|m| {
            let mut update = String::from("SET claim_until_ms = :until");
            let mut req = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(keys::message(project, queue, m.k)))
                .condition_expression(cond::HELD_BY)
                .expression_attribute_values(":cid", s(cid))
                .expression_attribute_values(":until", n(until))
                .return_consumed_capacity(ReturnConsumedCapacity::Total);
            if m.expires_ms < until {
                let new_exp = until + params.grace_s * 1000;
                update.push_str(", expires_ms = :newexp, ttl_s = :newttl, #ttl = :epoch");
                req = req
                    .expression_attribute_values(":newexp", n(new_exp))
                    .expression_attribute_values(":newttl", n(params.ttl_s + params.grace_s))
                    .expression_attribute_values(":epoch", ttl_epoch(new_exp))
                    .expression_attribute_names("#ttl", keys::TTL_ATTR);
            }
            async move { self.conditional(req.update_expression(update).send().await, "Claim renewal").map(drop) }
        });
        futures::future::try_join_all(renewals).await?;
        let previous_until = claim.until_ms;
        let renewed = Claim { ttl_s: params.ttl_s, grace_s: params.grace_s, updated_ms: now, until_ms: until, ..claim };
        self.put_claim(project, queue, &renewed).await?;
        // A shorter renewal can end claims before the floor's recorded minimum.
        if until < previous_until {
            self.reset_floor_if_later(project, queue, until).await?;
        }
        Ok(true)
    }

    async fn reset_floor_if_later(&self, project: &ProjectId, queue: &QueueName, until: i64) -> Result<(), ApiError> {
        let head = self.read_head(project, queue).await?;
        if head.floor_until_ms > until {
            self.reset_floor(project, queue).await?;
        }
        Ok(())
    }

    /// Releases a claim (§8.4): its messages become claimable at once. Unknown claims are fine.
    pub async fn release_claim(&self, project: &ProjectId, queue: &QueueName, cid: &str) -> Result<(), ApiError> {
        if !keys::is_claim_id(cid) {
            return Ok(());
        }
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(keys::claim(project, queue, cid)))
            .return_values(ReturnValue::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(unavailable("Claim release"))?;
        self.usage.write(out.consumed_capacity());
        let ks: Vec<u64> = match out.attributes().and_then(|a| a.get("ks")) {
            Some(AttributeValue::Ns(ns)) => ns.iter().filter_map(|k| k.parse().ok()).collect(),
            _ => return Ok(()),
        };
        let releases = ks.into_iter().map(|k| async move {
            let r = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(keys::message(project, queue, k)))
                .update_expression("REMOVE claim_id, claim_until_ms")
                .condition_expression(cond::HELD_BY)
                .expression_attribute_values(":cid", s(cid))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await;
            self.conditional(r, "Claim release").map(drop)
        });
        futures::future::try_join_all(releases).await?;
        // Released messages sit below the floor: forget it (after the message writes, see module doc).
        self.reset_floor(project, queue).await
    }
}
