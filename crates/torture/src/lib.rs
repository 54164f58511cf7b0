//! depot-torture: a verifying load client for depot.
//!
//! [`run_load`] has concurrent clients post records of known content ([`make_payload`]), each
//! request with its own Idempotency-Key, and keeps a [`Ledger`] of what became of each one.
//! [`verify`] reads every stream back and [`check`]s it against the ledger: every acknowledged
//! record present at its sequence number, byte for byte, exactly once, in order; records whose
//! fate was unknown present at most once and intact; records refused as "not stored" absent.
//!
//! The binary (`depot-torture`) runs one load and its check against a running depot; depot's
//! end-to-end tests use the library in-process between SIGKILLs and restarts.
#![warn(missing_docs)]

mod client;
#[cfg(target_os = "linux")]
mod forwarded;
mod ledger;
mod load;
#[cfg(target_os = "linux")]
mod powercut;
mod record;
mod rng;
mod verify;

pub use client::{Client, PostOutcome, Reply, SendError, StoredRecord};
#[cfg(target_os = "linux")]
pub use forwarded::{ForwardSummary, Postgres, check_forwarded, wait_caught_up};
pub use ledger::{Ledger, Outcome, SentRequest};
pub use load::{LoadOptions, replay_acked, retry_unknown, run_load};
#[cfg(target_os = "linux")]
pub use powercut::{PowercutOptions, PowercutReport, powercut};
pub use record::{Parsed, RecordId, fnv1a64, make_payload, parse_payload};
pub use rng::{Rng, seed_from_clock};
pub use verify::{Report, Summary, check, read_streams, verify};
