//! End-to-end tests against the real `depot` binary, over HTTP: the kill, stop and power-cut loops, faults
//! (full disk, read-only file system, damaged database, stale lock), hostile input and abusive
//! clients, and authentication. One test binary, run one test at a time ([`support::serial`]).
#![cfg(unix)]

mod backup;
mod faults;
#[path = "../harness/mod.rs"]
mod harness;
mod hostile;
mod loops;
mod memory;
mod observability;
#[cfg(target_os = "linux")]
#[path = "../pg/mod.rs"]
mod pg;
#[cfg(target_os = "linux")]
mod powercut;
mod security;
mod support;
mod upgrade;
