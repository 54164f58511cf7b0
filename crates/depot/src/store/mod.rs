//! The embedded SQLite store: depot's durable record log.
//!
//! ```no_run
//! use depot::store::{AppendRequest, Store, StoreOptions, UnixMillis};
//! use winddown::commit::Sink;
//!
//! # fn main() -> Result<(), depot::store::StoreError> {
//! let Store { mut writer, readers, report } = Store::open("/var/lib/depot", &StoreOptions::default())?;
//! println!("{report}");
//! let acks = writer.commit(&[AppendRequest {
//!     stream: "orders".into(),
//!     payloads: vec![r#"{"id":1}"#.into()],
//!     idempotency_key: Some("req-1".into()),
//!     received_at: UnixMillis::now(),
//! }])?;
//! println!("{:?} {:?}", acks, readers.read("orders", 0, 100)?);
//! writer.close()?; // checkpoint, close, write the clean-shutdown marker
//! # Ok(())
//! # }
//! ```
//!
//! # Roles
//!
//! - [`Writer`] is the one read-write connection. It implements [`winddown::commit::Sink`]: the
//!   group committer owns it on one thread and hands it every [`AppendRequest`] that gathered;
//!   the whole batch is one `BEGIN IMMEDIATE … COMMIT` transaction, hence one fsync of the WAL.
//!   Each request gets its own ack, `Result<Appended, Rejected>`, so one bad request does not fail
//!   its neighbours. [`Writer::close`] is the clean shutdown.
//! - [`Readers`] is a cheap-to-clone handle on a small pool of read-only connections, for
//!   `spawn_blocking`. Reads see only committed batches.
//!
//! # Durability
//!
//! `journal_mode=WAL`, `synchronous=FULL`: `COMMIT` returns only after the write-ahead log is
//! fsynced (SQLite also fsyncs the directory the first time it creates the WAL), so an `Ok` from
//! [`Sink::commit`](winddown::commit::Sink::commit) means every request in the batch is on stable
//! storage. A failed commit acknowledges nothing; see [`StoreError::poisons`] for which failures
//! leave the writer usable. The store relies on SQLite's default power-safe-overwrite setting: no
//! WAL padding frames are written after the commit frame.
//!
//! [`Durability::Off`] (depot's `durability = "off"`) opens the writer with `synchronous=OFF`
//! instead: commits return without fsyncing, so an acknowledged record survives a crash of the
//! process but not one of the OS or the power; see [`Durability`] for exactly what can be lost.
//!
//! # Files in the data directory
//!
//! | file | what |
//! |---|---|
//! | `depot.sqlite3` | the database (SQLite format 3, page size 4096) |
//! | `depot.sqlite3-wal`, `depot.sqlite3-shm` | SQLite's write-ahead log and its index, while open. An empty WAL is filled with 4.3 MiB of zeros at open, so that commits overwrite it rather than grow it |
//! | `depot.lock` | held with an exclusive advisory lock from [`Store::open`] until the last connection of the store has closed (the [`Writer`], every read in flight, every [`Outbox`]); holds the PID |
//! | `clean-shutdown` | written (then fsynced, with its directory) by [`Writer::close`] after the final checkpoint; removed (and the directory fsynced) by [`Store::open`]. If the database exists and this file is missing, the last run did not stop cleanly. Its content is informational. |
//!
//! The database header carries `application_id` = [`APPLICATION_ID`] (`0x4450_4f54`, "DPOT") and
//! `user_version` = [`SCHEMA_VERSION`]. [`Store::open`] refuses any other application id (or an
//! SQLite file with tables and no id) as [`StoreError::NotADepotDatabase`] and any other schema
//! version as [`StoreError::UnsupportedSchema`], before it changes anything in the file.
//!
//! # Schema (version 2)
//!
//! Sequence numbers are per stream, start at 1 and are contiguous: a stream's `last_seq` is also
//! its record count, which keeps [`Readers::streams`] and the open report free of table scans.
//! An idempotency key names one request: `idempotency_keys` maps `(stream, key)` to the records
//! that request appended. A retry is a replay when its payloads equal those records byte for byte,
//! otherwise a [`Rejected::IdempotencyConflict`]; the stored records themselves are the
//! fingerprint, so there is no hash to version.
//!
//! ```sql
#![doc = include_str!("schema.sql")]
//! ```
//!
//! Version 2 adds the forwarding outbox ([`Outbox`]): which records have been delivered to
//! PostgreSQL, and this database's origin id. [`Store::open`] upgrades a version-1 database in
//! one transaction (only `CREATE TABLE`s and one `INSERT`; no existing row changes); a new
//! database runs version 1's schema, then the same migration.
//!
//! ```sql
#![doc = include_str!("schema_v2.sql")]
//! ```

mod error;
mod files;
mod open;
mod outbox;
mod readers;
mod types;
mod writer;

pub use error::{Cause, Foreign, StoreError};
pub use open::{Durability, LastRun, OpenReport, Store, StoreOptions, Verify};
pub use outbox::{Backlog, Outbox, OutboxRecord, PRUNE_CHUNK, Prune};
pub use readers::{Readers, Record, StreamInfo};
pub use types::UnixMillis;
pub use writer::{Ack, AppendKind, AppendRequest, Appended, Rejected, Writer};

/// The `application_id` in the header of every depot database: "DPOT".
pub const APPLICATION_ID: i32 = 0x4450_4f54;

/// The schema version this build reads and writes, kept in the header's `user_version`.
pub const SCHEMA_VERSION: i32 = 2;

/// The schema of version 1, run once when a database is created (then [`MIGRATIONS`]).
const SCHEMA: &str = include_str!("schema.sql");

/// What takes a database from the version before to this one, in order. Only ever appended to.
const MIGRATIONS: &[(i32, &str)] = &[(2, include_str!("schema_v2.sql"))];

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "depot.sqlite3";

/// The clean-shutdown marker's name inside the data directory.
pub const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "depot.lock";
