//! The table definition, for the local stack and tests (AWS deployments create it from `infra/`).

use super::StoreError;
use super::{unavailable, Store};
use crate::keys;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, StreamSpecification,
    StreamViewType, TimeToLiveSpecification, TimeToLiveStatus,
};

impl Store {
    /// Creates the table (keys, on-demand, stream with both images, native TTL) if it is missing.
    pub async fn ensure_table(&self) -> Result<(), StoreError> {
        if self.client.describe_table().table_name(&self.table).send().await.is_ok() {
            return Ok(());
        }
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("complete")
        };
        let key = |name: &str, kind| {
            KeySchemaElement::builder().attribute_name(name).key_type(kind).build().expect("complete")
        };
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(attr(keys::PK))
            .attribute_definitions(attr(keys::SK))
            .key_schema(key(keys::PK, KeyType::Hash))
            .key_schema(key(keys::SK, KeyType::Range))
            .billing_mode(BillingMode::PayPerRequest)
            .stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewAndOldImages)
                    .build()
                    .expect("complete"),
            )
            .send()
            .await;
        if let Err(e) = created {
            // Another process may have created it in the meantime.
            if self.client.describe_table().table_name(&self.table).send().await.is_err() {
                return Err(unavailable("Table creation")(e));
            }
        }
        let ttl = self
            .client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(keys::TTL_ATTR)
                    .build()
                    .expect("complete"),
            )
            .send()
            .await;
        if let Err(e) = ttl {
            // Two processes that raced to create the table both get here; the loser's request fails with
            // "already enabled", which is the state it wanted.
            let status = self.client.describe_time_to_live().table_name(&self.table).send().await;
            let enabled = status.ok().and_then(|s| s.time_to_live_description).is_some_and(|d| {
                d.attribute_name() == Some(keys::TTL_ATTR)
                    && matches!(d.time_to_live_status(), Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling))
            });
            if !enabled {
                return Err(unavailable("TTL setup")(e));
            }
        }
        Ok(())
    }
}
