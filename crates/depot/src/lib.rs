//! depot: a durable record depot over HTTP. A record is acknowledged (`201`) only once it is on
//! disk, so no stop — graceful, a crash, or a Windows shutdown that never announces itself — loses
//! an acknowledged record.
//!
//! The binary is `src/main.rs`; this library holds its parts so integration tests can reach them.
#![warn(missing_docs)]

pub mod app;
pub mod backup;
pub mod config;
pub mod control;
pub mod forward;
pub mod http;
pub mod manage;
pub mod metrics;
pub mod store;
pub mod upgrade;
