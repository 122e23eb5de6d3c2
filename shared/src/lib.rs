//! Zaqar v2 semantics over DynamoDB, shared by every Lambda function of the service.
//!
//! - [`types`], [`query`], [`json`], [`meta`]: parse, don't validate — requests become typed values once.
//! - [`error`]: the one mapping from failures to Zaqar's `{"title", "description"}` responses.
//! - [`route`] and [`transport`]: routing on method + raw path and the request hooks in Zaqar's order.
//! - [`keys`]: the DynamoDB key layout and condition expressions (the table design is documented there).
//! - [`store`]: queues, messages, claims, subscriptions, pools and flavors as items.
//! - [`app`]: configuration + store, built once per process; [`timeouts`]: deadlines on every storage call.
//! - [`webhook`]: subscriber URIs and the webhook address guard (SSRF).
//! - [`keystone`]: Keystone token validation and its cache (`ZAQAR_AUTH_MODE=keystone`).

pub mod app;
pub mod clock;
pub mod config;
mod container_credentials;
pub mod error;
pub mod http;
pub mod https;
pub mod json;
pub mod keys;
pub mod keystone;
pub mod meta;
pub mod query;
pub mod route;
pub mod sdk_env;
pub mod signing;
pub mod store;
pub mod stream;
pub mod timeouts;
pub mod transport;
pub mod types;
pub mod vars;
pub mod webhook;

pub use app::App;
pub use error::ApiError;
pub use http::{ApiRequest, ApiResponse};
