//! Pools and flavors storage (admin, docs/api.md, Pools and flavors).
//!
//! Pools are global: one item per pool in the `POOLS` partition (sort key = pool name), holding
//! `uri`, `weight`, `options` (JSON text) and, when the pool belongs to a flavor, `flavor` plus
//! `flavor_project` (the project whose flavor claimed it). Flavors are per project: one item per flavor
//! in `F#{project}`. A flavor's pools are the pools whose (`flavor_project`, `flavor`) name it, found by
//! one Query over the `POOLS` partition — operators register a handful of pools, so the partition is small.
//!
//! Upstream pools carry only a flavor *name*; recording the project as well keeps flavors of different
//! projects with the same name apart (flavors are per project, pools are not).

use super::StoreError;
use super::{get_i64, get_json, get_s, unavailable, Store};
use crate::keys::{self, n, s, Item};
use crate::types::ProjectId;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Put, ReturnConsumedCapacity, ReturnValue, TransactWriteItem, Update,
};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Storage capabilities reported for every flavor that has pools (docs/api.md, Pools and flavors).
///
/// Every pool of this service is backed by the one DynamoDB table, so all pools share these:
/// - `FIFO`: messages of a queue get strictly increasing sequence numbers and are listed and claimed in
///   that order;
/// - `CLAIMS`: claims are first-class items with TTL and grace;
/// - `DURABILITY`: writes are acknowledged only once DynamoDB has stored them durably (replicated across
///   availability zones), nothing lives only in memory;
/// - `AOD` (at-least-once delivery): a claimed message stays in the queue until it is deleted and comes
///   back when its claim expires;
/// - `HIGH_THROUGHPUT`: on-demand tables scale partitions with the load, without a server to size.
pub const CAPABILITIES: [&str; 5] = ["FIFO", "CLAIMS", "DURABILITY", "AOD", "HIGH_THROUGHPUT"];

/// DynamoDB's limit on the size of a sort key (and of a sort-key value in a key condition).
const MAX_SORT_KEY_BYTES: usize = 1024;
/// DynamoDB's limit on the size of a partition key.
const MAX_PARTITION_KEY_BYTES: usize = 2048;
/// Most actions in one TransactWriteItems request.
const MAX_TRANSACTION_ITEMS: usize = 100;

#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub name: String,
    pub uri: String,
    pub weight: i64,
    /// Flavor name, `None` when the pool is not attached to a flavor.
    pub flavor: Option<String>,
    /// Project of the flavor (set together with `flavor`).
    pub flavor_project: Option<String>,
    pub options: Map<String, Value>,
}

/// Fields a pool PATCH changes; `flavor: Some(None)` detaches the pool.
#[derive(Debug, Clone, Default)]
pub struct PoolPatch {
    pub uri: Option<String>,
    pub weight: Option<i64>,
    pub flavor: Option<Option<(String, String)>>,
    pub options: Option<Map<String, Value>>,
}

impl PoolPatch {
    pub fn is_empty(&self) -> bool {
        self.uri.is_none() && self.weight.is_none() && self.flavor.is_none() && self.options.is_none()
    }
}

/// What a flavor write found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlavorWrite {
    Done,
    /// A pool of the list does not exist (the first one found missing).
    MissingPool(String),
    /// PATCH of a flavor that does not exist.
    MissingFlavor,
}

fn pool_from(item: &Item) -> Option<Pool> {
    let flavor = get_s(item, "flavor").filter(|f| !f.is_empty()).map(str::to_string);
    Some(Pool {
        name: get_s(item, keys::SK)?.to_string(),
        uri: get_s(item, "uri").unwrap_or_default().to_string(),
        weight: get_i64(item, "weight").unwrap_or(0),
        flavor_project: flavor.as_ref().and_then(|_| get_s(item, "flavor_project").map(str::to_string)),
        flavor,
        options: get_json(item, "options").and_then(|v| v.as_object().cloned()).unwrap_or_default(),
    })
}

/// Whether `name` can be a sort key at all (longer names cannot exist).
fn storable_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_SORT_KEY_BYTES
}

/// Whether the project's flavor partition key fits DynamoDB's limit.
pub fn storable_project(project: &ProjectId) -> bool {
    keys::flavor_pk(project).len() <= MAX_PARTITION_KEY_BYTES
}

/// A marker usable in a key condition: names never exceed 1020 bytes, so cutting a longer marker to
/// 1021..=1024 bytes (on a char boundary) orders every stored name the same way.
fn key_marker(marker: &str) -> &str {
    if marker.len() <= MAX_SORT_KEY_BYTES {
        return marker;
    }
    let mut end = MAX_SORT_KEY_BYTES;
    while !marker.is_char_boundary(end) {
        end -= 1;
    }
    &marker[..end]
}

fn names() -> HashMap<String, String> {
    HashMap::from([
        ("#u".to_string(), "uri".to_string()),
        ("#w".to_string(), "weight".to_string()),
        ("#f".to_string(), "flavor".to_string()),
        ("#fp".to_string(), "flavor_project".to_string()),
        ("#o".to_string(), "options".to_string()),
    ])
}

impl Store {
    /// One pool, or `None`.
    pub async fn get_pool(&self, name: &str) -> Result<Option<Pool>, StoreError> {
        if !storable_name(name) {
            return Ok(None);
        }
        let item = self.get_consistent(keys::pool(name), "Pool lookup").await?;
        Ok(item.as_ref().and_then(pool_from))
    }

    /// Creates or overwrites a pool (PUT semantics: every field replaced).
    pub async fn put_pool(&self, pool: &Pool) -> Result<(), StoreError> {
        let mut item = keys::pool(&pool.name);
        item.insert("uri".into(), s(&pool.uri));
        item.insert("weight".into(), n(pool.weight));
        item.insert("options".into(), s(Value::Object(pool.options.clone()).to_string()));
        if let (Some(f), Some(p)) = (&pool.flavor, &pool.flavor_project) {
            item.insert("flavor".into(), s(f));
            item.insert("flavor_project".into(), s(p));
        }
        self.put(item, "Pool creation").await
    }

    /// Applies a PATCH to an existing pool; `None` if the pool does not exist.
    pub async fn update_pool(&self, name: &str, patch: &PoolPatch) -> Result<Option<Pool>, StoreError> {
        if !storable_name(name) || patch.is_empty() {
            return self.get_pool(name).await;
        }
        let mut set = Vec::new();
        let mut remove = Vec::new();
        let mut values: HashMap<String, AttributeValue> = HashMap::new();
        let mut used = vec![];
        if let Some(uri) = &patch.uri {
            set.push("#u = :u");
            values.insert(":u".into(), s(uri));
            used.push("#u");
        }
        if let Some(w) = patch.weight {
            set.push("#w = :w");
            values.insert(":w".into(), n(w));
            used.push("#w");
        }
        if let Some(o) = &patch.options {
            set.push("#o = :o");
            values.insert(":o".into(), s(Value::Object(o.clone()).to_string()));
            used.push("#o");
        }
        match &patch.flavor {
            Some(Some((flavor, project))) => {
                set.push("#f = :f");
                set.push("#fp = :fp");
                values.insert(":f".into(), s(flavor));
                values.insert(":fp".into(), s(project));
                used.extend(["#f", "#fp"]);
            }
            Some(None) => {
                remove.extend(["#f", "#fp"]);
                used.extend(["#f", "#fp"]);
            }
            None => {}
        }
        let mut expr = String::new();
        if !set.is_empty() {
            expr.push_str("SET ");
            expr.push_str(&set.join(", "));
        }
        if !remove.is_empty() {
            expr.push_str(" REMOVE ");
            expr.push_str(&remove.join(", "));
        }
        let attr_names: HashMap<String, String> =
            names().into_iter().filter(|(k, _)| used.contains(&k.as_str())).collect();
        let r = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(keys::pool(name)))
            .update_expression(expr.trim())
            .condition_expression(keys::cond::EXISTS)
            .set_expression_attribute_names(Some(attr_names))
            .set_expression_attribute_values(if values.is_empty() { None } else { Some(values) })
            .return_values(ReturnValue::AllNew)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        Ok(self.conditional(r, "Pool update")?.and_then(|out| out.attributes().and_then(pool_from)))
    }

    /// Deletes a pool (absent pools are fine).
    pub async fn delete_pool(&self, name: &str) -> Result<(), StoreError> {
        if !storable_name(name) {
            return Ok(());
        }
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(keys::pool(name)))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(unavailable("Pool deletion"))?;
        self.usage.write(out.consumed_capacity());
        Ok(())
    }

    /// One page of pools after `marker`, in name order.
    pub async fn list_pools(&self, marker: Option<&str>, limit: usize) -> Result<Vec<Pool>, StoreError> {
        self.page(keys::POOLS_PK.to_string(), marker, limit, "Pool listing")
            .await
            .map(|items| items.iter().filter_map(pool_from).collect())
    }

    /// Pools matching a filter over the whole `POOLS` partition (`filter` uses `#u/#f/#fp` and the values).
    async fn scan_pools(
        &self,
        filter: &str,
        values: Vec<(&str, AttributeValue)>,
        what: &'static str,
    ) -> Result<Vec<Pool>, StoreError> {
        let mut found = Vec::new();
        let mut start = None;
        let used: Vec<&str> = ["#u", "#f", "#fp"].into_iter().filter(|k| filter.contains(k)).collect();
        let attr_names: HashMap<String, String> =
            names().into_iter().filter(|(k, _)| used.contains(&k.as_str())).collect();
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .filter_expression(filter)
                .set_expression_attribute_names(Some(attr_names.clone()))
                .expression_attribute_values(":pk", s(keys::POOLS_PK))
                .consistent_read(true)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .set_exclusive_start_key(start.take());
            for (k, v) in &values {
                q = q.expression_attribute_values(*k, v.clone());
            }
            let out = q.send().await.map_err(unavailable(what))?;
            self.usage.read(out.consumed_capacity());
            found.extend(out.items().iter().filter_map(pool_from));
            match out.last_evaluated_key() {
                Some(k) => start = Some(k.clone()),
                None => return Ok(found),
            }
        }
    }

    /// Whether a pool other than `except` already uses `uri`.
    pub async fn pool_uri_taken(&self, uri: &str, except: &str) -> Result<bool, StoreError> {
        let pools = self.scan_pools("#u = :u", vec![(":u", s(uri))], "Pool URI check").await?;
        Ok(pools.iter().any(|p| p.name != except))
    }

    /// The pools of one flavor, in name order.
    pub async fn pools_of_flavor(&self, project: &ProjectId, flavor: &str) -> Result<Vec<Pool>, StoreError> {
        self.scan_pools(
            "#f = :f AND #fp = :fp",
            vec![(":f", s(flavor)), (":fp", s(project.as_str()))],
            "Flavor pool lookup",
        )
        .await
    }

    /// The pools of every flavor of a project, in name order.
    pub async fn pools_of_project(&self, project: &ProjectId) -> Result<Vec<Pool>, StoreError> {
        self.scan_pools("#fp = :fp AND attribute_exists(#f)", vec![(":fp", s(project.as_str()))], "Flavor pool lookup")
            .await
    }

    pub async fn flavor_exists(&self, project: &ProjectId, name: &str) -> Result<bool, StoreError> {
        if !storable_name(name) || !storable_project(project) {
            return Ok(false);
        }
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(keys::flavor(project, name)))
            .consistent_read(true)
            .projection_expression("pk")
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(unavailable("Flavor lookup"))?;
        self.usage.read(out.consumed_capacity());
        Ok(out.item().is_some())
    }

    /// One page of flavor names after `marker`, in name order.
    pub async fn list_flavors(
        &self,
        project: &ProjectId,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        if !storable_project(project) {
            return Ok(vec![]);
        }
        let items = self.page(keys::flavor_pk(project), marker, limit, "Flavor listing").await?;
        Ok(items.iter().filter_map(|i| get_s(i, keys::SK).map(str::to_string)).collect())
    }

    /// Up to `limit` items of a partition with sort keys after `marker`.
    async fn page(
        &self,
        pk: String,
        marker: Option<&str>,
        limit: usize,
        what: &'static str,
    ) -> Result<Vec<Item>, StoreError> {
        let mut found = Vec::with_capacity(limit);
        let mut start = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .expression_attribute_values(":pk", s(pk.clone()))
                .consistent_read(true)
                .limit((limit - found.len()) as i32)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .set_exclusive_start_key(start.take());
            q = match marker {
                Some(m) => q
                    .key_condition_expression("pk = :pk AND sk > :m")
                    .expression_attribute_values(":m", s(key_marker(m))),
                None => q.key_condition_expression("pk = :pk"),
            };
            let out = q.send().await.map_err(unavailable(what))?;
            self.usage.read(out.consumed_capacity());
            found.extend(out.items().iter().cloned());
            if found.len() >= limit {
                found.truncate(limit);
                return Ok(found);
            }
            match out.last_evaluated_key() {
                Some(k) => start = Some(k.clone()),
                None => return Ok(found),
            }
        }
    }

    /// Creates (or re-creates) the flavor and attaches `pools` to it. Pools must exist: each update is
    /// conditional, so a pool deleted meanwhile is reported rather than re-created.
    pub async fn create_flavor(
        &self,
        project: &ProjectId,
        name: &str,
        pools: &[String],
    ) -> Result<FlavorWrite, StoreError> {
        let mut item = keys::flavor(project, name);
        item.insert("created_ms".into(), n(self.now_ms()));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .build()
            .map_err(unavailable("Flavor creation"))?;
        self.attach_pools(project, name, pools, TransactWriteItem::builder().put(put).build()).await
    }

    /// Re-assigns an existing flavor's pools: attaches `pools`, then detaches the flavor's other pools.
    pub async fn update_flavor(
        &self,
        project: &ProjectId,
        name: &str,
        pools: &[String],
    ) -> Result<FlavorWrite, StoreError> {
        if !storable_name(name) || !storable_project(project) {
            return Ok(FlavorWrite::MissingFlavor);
        }
        let old = self.pools_of_flavor(project, name).await?;
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .set_key(Some(keys::flavor(project, name)))
            .condition_expression(keys::cond::EXISTS)
            .build()
            .map_err(unavailable("Flavor update"))?;
        let outcome = self
            .attach_pools(project, name, pools, TransactWriteItem::builder().condition_check(check).build())
            .await?;
        if outcome == FlavorWrite::Done {
            let removed: Vec<String> = old.into_iter().map(|p| p.name).filter(|p| !pools.contains(p)).collect();
            self.detach_pools(project, name, &removed).await?;
        }
        Ok(outcome)
    }

    /// Detaches the flavor's pools and deletes the flavor (absent flavors are fine).
    pub async fn delete_flavor(&self, project: &ProjectId, name: &str) -> Result<(), StoreError> {
        if !storable_name(name) || !storable_project(project) {
            return Ok(());
        }
        let pools: Vec<String> = self.pools_of_flavor(project, name).await?.into_iter().map(|p| p.name).collect();
        self.detach_pools(project, name, &pools).await?;
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(keys::flavor(project, name)))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(unavailable("Flavor deletion"))?;
        self.usage.write(out.consumed_capacity());
        Ok(())
    }

    /// `first` (the flavor's own write) plus conditional pool updates, in transactions of up to 100 actions.
    async fn attach_pools(
        &self,
        project: &ProjectId,
        flavor: &str,
        pools: &[String],
        first: TransactWriteItem,
    ) -> Result<FlavorWrite, StoreError> {
        let mut unique: Vec<&String> = Vec::with_capacity(pools.len());
        for p in pools {
            if !storable_name(p) {
                return Ok(FlavorWrite::MissingPool(p.clone()));
            }
            if !unique.contains(&p) {
                unique.push(p);
            }
        }
        let mut first = Some(first);
        let mut rest = unique.as_slice();
        while first.is_some() || !rest.is_empty() {
            let mut actions = Vec::with_capacity(MAX_TRANSACTION_ITEMS);
            let mut names: Vec<Option<&String>> = Vec::with_capacity(MAX_TRANSACTION_ITEMS);
            if let Some(f) = first.take() {
                actions.push(f);
                names.push(None);
            }
            let take = rest.len().min(MAX_TRANSACTION_ITEMS - actions.len());
            for p in &rest[..take] {
                let update = Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(keys::pool(p)))
                    .update_expression("SET #f = :f, #fp = :fp")
                    .condition_expression(keys::cond::EXISTS)
                    .expression_attribute_names("#f", "flavor")
                    .expression_attribute_names("#fp", "flavor_project")
                    .expression_attribute_values(":f", s(flavor))
                    .expression_attribute_values(":fp", s(project.as_str()))
                    .build()
                    .map_err(unavailable("Flavor pool assignment"))?;
                actions.push(TransactWriteItem::builder().update(update).build());
                names.push(Some(*p));
            }
            rest = &rest[take..];
            let r = self
                .client
                .transact_write_items()
                .set_transact_items(Some(actions))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await;
            match r {
                Ok(out) => self.usage.write(out.consumed_capacity()),
                Err(SdkError::ServiceError(e))
                    if matches!(e.err(), TransactWriteItemsError::TransactionCanceledException(_)) =>
                {
                    self.usage.failed_write();
                    let TransactWriteItemsError::TransactionCanceledException(t) = e.err() else { unreachable!() };
                    let failed =
                        t.cancellation_reasons().iter().position(|r| r.code() == Some("ConditionalCheckFailed"));
                    match failed {
                        Some(i) => {
                            return Ok(match names.get(i).copied().flatten() {
                                Some(p) => FlavorWrite::MissingPool(p.clone()),
                                None => FlavorWrite::MissingFlavor,
                            })
                        }
                        None => {
                            tracing::error!(operation = "Flavor pool assignment", error = ?t, "transaction cancelled");
                            return Err(StoreError::exhausted("Flavor pool assignment"));
                        }
                    }
                }
                Err(e) => return Err(unavailable("Flavor pool assignment")(e)),
            }
        }
        Ok(FlavorWrite::Done)
    }

    /// Detaches pools from the flavor, leaving alone any pool that meanwhile moved to another flavor.
    async fn detach_pools(&self, project: &ProjectId, flavor: &str, pools: &[String]) -> Result<(), StoreError> {
        for p in pools {
            let r = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(keys::pool(p)))
                .update_expression("REMOVE #f, #fp")
                .condition_expression("#f = :f AND #fp = :fp")
                .expression_attribute_names("#f", "flavor")
                .expression_attribute_names("#fp", "flavor_project")
                .expression_attribute_values(":f", s(flavor))
                .expression_attribute_values(":fp", s(project.as_str()))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await;
            self.conditional(r, "Flavor pool detachment")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_markers_keep_their_order() {
        let long = "é".repeat(600);
        let cut = key_marker(&long);
        assert!(cut.len() <= MAX_SORT_KEY_BYTES && cut.len() > 1020);
        assert_eq!(key_marker("abc"), "abc");
    }
}
