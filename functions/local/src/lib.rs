//! The local stack: every resource group's handler behind one HTTP port ([`server`]) and the
//! DynamoDB-stream poller that drives subscription fan-out ([`poller`]). Tests route through
//! [`server::dispatch`] too, so they exercise the same routing API Gateway does.

mod http_errors;
pub mod poller;
pub mod server;
