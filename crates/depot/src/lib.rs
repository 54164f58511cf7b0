//! depot: a durable record depot over HTTP.
#![warn(missing_docs)]

pub mod store;
