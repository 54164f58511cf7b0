//! Group commit: acknowledge an item only once the batch holding it is durable.
//!
//! Many tasks [`submit`](GroupCommit::submit) items; one dedicated OS thread owns the (blocking)
//! [`Sink`], takes everything that is waiting — up to the batch bounds of [`CommitConfig`] — and
//! makes it durable with one [`Sink::commit`] call (one transaction, one fsync). While that call
//! runs, the next batch gathers in the queue by itself: there is no timer and no sleep on the path,
//! so a lone item is committed at once and a crowd shares the fsyncs.
//!
//! ```text
//!  submit ─┐                       ┌──────── committer thread ────────┐
//!  submit ─┼─► bounded queue ──────► take all waiting (≤ batch bounds) │
//!  submit ─┘   (WhenFull policy)   │ sink.commit(&batch)  — one fsync │
//!     ▲                            │ answer every submitter           │
//!     └──────── ack or error ──────┴──────────────────────────────────┘
//! ```
//!
//! # Guarantees
//!
//! - An item is acknowledged only after the sink call that wrote it returned `Ok`: after
//!   [`Sink::commit`]'s promise, it is on stable storage. (A store may choose to promise less — depot's
//!   `durability = "off"` is SQLite's `synchronous=OFF` — but that is the store's setting, not the
//!   committer's.)
//! - Every submit future resolves: with the ack, with the error of its batch, or with a refusal.
//!   A failed commit fails exactly the items of its batch. If the sink says the failure
//!   [poisons](Sink::poisons) it, if it panics, or if it returns the wrong number of acks, the
//!   committer is poisoned: the items still queued and every later submit get
//!   [`CommitError::Poisoned`], and the sink is never called again.
//! - [`GroupCommit::drain`] closes intake, commits everything accepted before, and hands the sink
//!   back so the caller can close the store.
//!
//! # Metrics
//!
//! With the `metrics` feature (on by default), through the `metrics` facade, labelled `committer="{name}"`:
//! `winddown_commit_batch_items` (histogram), `winddown_commit_latency_seconds` (histogram, one
//! sink call), `winddown_commit_queue_depth` (gauge), `winddown_commit_items_total` and
//! `winddown_commit_failed_commits_total` (counters). [`GroupCommit::stats`] gives the same numbers
//! without a recorder.

mod committer;
mod config;
mod error;
mod future;
mod handle;
mod shared;

pub use config::{CommitConfig, WhenFull};
pub use error::CommitError;
pub use future::{Submit, SubmitMany};
pub use handle::{CommitStats, DrainReport, GroupCommit};

/// A store that makes a batch of items durable. The committer owns it on one thread and calls
/// [`Sink::commit`] with every item that gathered while the previous commit ran.
pub trait Sink: Send + 'static {
    /// What a submitter hands in.
    type Item: Send + 'static;
    /// What a submitter gets back once its item is durable (for depot: the assigned sequence numbers).
    type Ack: Send + 'static;
    /// Why a commit failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Makes the whole batch durable (one transaction, one fsync) and returns one ack per item, in
    /// order. Returning `Ok` is a promise that every item is on stable storage.
    fn commit(&mut self, batch: &[Self::Item]) -> Result<Vec<Self::Ack>, Self::Error>;

    /// How many bytes an item counts for in the batch and queue bounds.
    fn item_bytes(_item: &Self::Item) -> usize {
        0
    }

    /// Whether a failed commit leaves the store in a state it can no longer vouch for (for example a
    /// failed fsync): then the committer is poisoned and refuses all later work. Errors that left the
    /// store unchanged (a rolled-back transaction on a full disk) may return `false`.
    fn poisons(_error: &Self::Error) -> bool {
        true
    }
}
