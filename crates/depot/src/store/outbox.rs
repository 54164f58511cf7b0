//! [`Outbox`]: the store seen as a durable outbox, for the PostgreSQL forwarder.
//!
//! Every record in the store is to be delivered once; `forward_cursor` says, per stream, how far
//! delivery got (records `1..=delivered_seq` are in PostgreSQL). The forwarder reads what lies
//! beyond the cursor, delivers it, and only then advances the cursor, so a crash in between
//! re-sends a batch that PostgreSQL already holds, which its primary key turns into a no-op.
//!
//! # Its own connection
//!
//! The outbox has its own read-write connection rather than going through the group committer,
//! whose [`Sink`](winddown::commit::Sink) takes only append requests. SQLite allows one writer at
//! a time: a cursor update or a retention delete waits (up to the busy timeout) for an append
//! batch to commit, and an append batch waits for them. Both kinds of transaction are short
//! (one `INSERT … ON CONFLICT` per stream of a batch; deletes go in chunks of
//! [`PRUNE_CHUNK`] rows), and this connection uses `synchronous=NORMAL`: it never fsyncs while
//! holding the write lock. Losing its last transactions in a power cut is harmless: a cursor that
//! went back re-sends records PostgreSQL already has, and the next append's fsync (or the next
//! checkpoint) makes the WAL frames durable anyway.

use std::fmt;
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::StoreError;
use super::files::Paths;
use super::readers::{Readers, records_after};
use super::types::{UnixMillis, seq_u64};

/// Most rows one retention transaction deletes, so that appends never wait long for the lock.
pub const PRUNE_CHUNK: usize = 1000;

/// One record to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    /// Its stream.
    pub stream: String,
    /// Its sequence number in the stream.
    pub seq: u64,
    /// The JSON text as posted.
    pub payload: String,
    /// When depot received it.
    pub received_at: UnixMillis,
}

/// What is not yet delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// Records beyond the cursors, in all streams.
    pub records: u64,
    /// Streams with at least one such record.
    pub streams: usize,
    /// When the oldest of them was received (the smallest `received_at` among each stream's
    /// first undelivered record); `None` when there is no backlog.
    pub oldest: Option<UnixMillis>,
}

/// Which delivered records [`Outbox::prune`] deletes. Undelivered records are never deleted,
/// nor is a stream's newest record (the store checks each stream's newest record at open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prune {
    /// Keep the newest `n` delivered records of each stream; delete the delivered ones before.
    KeepNewest(u64),
    /// Delete delivered records received before this time (each stream's oldest first, stopping
    /// at the first one that is younger).
    ReceivedBefore(UnixMillis),
}

/// The forwarder's read-write connection to the store. Every method blocks on SQLite: call it
/// from `spawn_blocking`.
pub struct Outbox {
    conn: Connection,
    paths: Arc<Paths>,
    /// A share of the data directory's lock: it stays held until this connection has closed
    /// (fields drop in order), even if the writer closed first.
    _lock: Arc<winddown::LockFile>,
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("path", &self.paths.db)
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// Opens the outbox's own connection to the store that `readers` read (which must be open:
    /// [`StoreError::Closed`] otherwise). The data directory's lock stays held until this
    /// connection is closed (dropped), even if the writer closes first.
    pub fn open(readers: &Readers) -> Result<Outbox, StoreError> {
        let lock = readers.lock()?;
        let paths = readers.paths().clone();
        let db = paths.db.as_path();
        let sqlite = |e| StoreError::sqlite(db, e);
        let conn = Connection::open_with_flags(
            db,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite)?;
        conn.busy_timeout(readers.busy_timeout()).map_err(sqlite)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sqlite)?;
        conn.set_prepared_statement_cache_capacity(16);
        Ok(Outbox {
            conn,
            paths,
            _lock: lock,
        })
    }

    fn sqlite(&self, e: rusqlite::Error) -> StoreError {
        StoreError::sqlite(&self.paths.db, e)
    }

    /// This database's origin id: 32 hex digits, generated when the schema was created or
    /// upgraded, never changed.
    pub fn origin_id(&self) -> Result<String, StoreError> {
        self.meta("origin_id")?.ok_or_else(|| StoreError::Corrupt {
            path: self.paths.db.clone(),
            detail: "the meta table has no origin_id".into(),
            source: None,
        })
    }

    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")
            .and_then(|mut s| s.query_row([key], |row| row.get(0)).optional())
            .map_err(|e| self.sqlite(e))
    }

    /// Ties the cursors to the PostgreSQL database whose `depot_schema.target_id` is
    /// `target_id`. If they were tied to another one, they are reset (everything still stored
    /// will be delivered to the new one) and this returns `true`.
    pub fn bind_target(&mut self, target_id: &str) -> Result<bool, StoreError> {
        self.rebind("forward_target_id", target_id, |tx, _| {
            let had_cursors: i64 =
                tx.query_row("SELECT count(*) FROM forward_cursor", [], |row| row.get(0))?;
            tx.execute("DELETE FROM forward_cursor", [])?;
            // The tables of the new target are adopted by the next `bind_tables`.
            tx.execute("DELETE FROM meta WHERE key = 'forward_target_tables'", [])?;
            Ok(had_cursors > 0)
        })
    }

    /// Ties the cursors to the target's tables themselves (`tables` names them: PostgreSQL's
    /// oids of `depot_records` and `depot_rejected`), so that a table dropped and created again
    /// under the same `target_id` is not taken for the one the cursors refer to. The first call
    /// for a target records `tables`; a later call with other `tables` resets the cursors
    /// (everything still stored will be delivered again, the primary key making what is already
    /// there a no-op) and returns `true`.
    pub fn bind_tables(&mut self, tables: &str) -> Result<bool, StoreError> {
        self.rebind("forward_target_tables", tables, |tx, bound| {
            let reset = bound.is_some();
            if reset {
                tx.execute("DELETE FROM forward_cursor", [])?;
            }
            Ok(reset)
        })
    }

    /// In one immediate transaction: if the `meta` value under `key` is not `value` already,
    /// runs `on_change` (given the value bound before, if any), stores `value` and commits,
    /// returning what `on_change` said; otherwise changes nothing and returns `false`.
    fn rebind(
        &mut self,
        key: &str,
        value: &str,
        on_change: impl FnOnce(&rusqlite::Transaction<'_>, Option<&str>) -> rusqlite::Result<bool>,
    ) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| StoreError::sqlite(&self.paths.db, e))?;
        let result = (|| {
            let bound: Option<String> = tx
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                    row.get(0)
                })
                .optional()?;
            if bound.as_deref() == Some(value) {
                return Ok(false);
            }
            let changed = on_change(&tx, bound.as_deref())?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )?;
            tx.commit()?;
            Ok(changed)
        })();
        result.map_err(|e| StoreError::sqlite(&self.paths.db, e))
    }

    /// How many records of all streams are no longer in the local store (deleted by retention
    /// after their delivery): what a target that lost its records cannot get again from here.
    pub fn pruned_records(&self) -> Result<u64, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT COALESCE(SUM((SELECT COALESCE(MIN(r.seq), s.last_seq + 1) - 1 \
                 FROM records r WHERE r.stream_id = s.id)), 0) FROM streams s",
            )
            .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
            .map(seq_u64)
            .map_err(|e| self.sqlite(e))
    }

    /// Up to `max` undelivered records, in sequence order within each stream, with no byte
    /// budget. See [`Outbox::next_batch_within`].
    pub fn next_batch(&self, max: usize, turn: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        self.next_batch_within(max, usize::MAX, turn)
    }

    /// Up to `max` undelivered records whose payloads add up to at most `max_bytes` (the first
    /// record comes even if it alone is larger, so that a large record is never stuck), in
    /// sequence order within each stream. Streams take turns: the first one read is the
    /// `turn`-th (modulo the number of streams with a backlog), so that one busy stream cannot
    /// starve the others. Rows are read only as far as the budget reaches.
    pub fn next_batch_within(
        &self,
        max: usize,
        max_bytes: usize,
        turn: usize,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| self.sqlite(e))?;
        let pending = pending(&tx).map_err(|e| self.sqlite(e))?;
        if pending.is_empty() || max == 0 {
            return Ok(Vec::new());
        }
        let first = turn % pending.len();
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        for p in pending[first..].iter().chain(&pending[..first]) {
            let room = max - batch.len();
            let budget = max_bytes.saturating_sub(bytes);
            if room == 0 || (budget == 0 && !batch.is_empty()) {
                break;
            }
            let (records, read) = records_after(
                &tx,
                p.stream_id,
                seq_u64(p.delivered),
                room,
                budget,
                batch.is_empty(),
            )
            .map_err(|e| self.sqlite(e))?;
            if records.is_empty() {
                // The next stream's first record is larger than what is left of the budget.
                break;
            }
            bytes = bytes.saturating_add(read);
            batch.extend(records.into_iter().map(|r| OutboxRecord {
                stream: p.name.clone(),
                seq: r.seq,
                payload: r.payload,
                received_at: r.received_at,
            }));
        }
        tx.commit().map_err(|e| self.sqlite(e))?;
        Ok(batch)
    }

    /// What is not yet delivered. Reads O(streams) rows.
    pub fn backlog(&self) -> Result<Backlog, StoreError> {
        backlog(&self.conn).map_err(|e| self.sqlite(e))
    }

    /// Records that `batch` is in PostgreSQL: each stream's cursor moves to its highest sequence
    /// number in the batch (never backwards). One transaction.
    pub fn advance(&mut self, batch: &[OutboxRecord]) -> Result<(), StoreError> {
        let mut highest: Vec<(&str, u64)> = Vec::new();
        for record in batch {
            match highest.iter_mut().find(|(s, _)| *s == record.stream) {
                Some((_, seq)) => *seq = (*seq).max(record.seq),
                None => highest.push((&record.stream, record.seq)),
            }
        }
        if highest.is_empty() {
            return Ok(());
        }
        let db = self.paths.db.clone();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| StoreError::sqlite(&db, e))?;
        {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO forward_cursor (stream, delivered_seq) VALUES (?1, ?2) \
                     ON CONFLICT (stream) DO UPDATE \
                     SET delivered_seq = max(delivered_seq, excluded.delivered_seq)",
                )
                .map_err(|e| StoreError::sqlite(&db, e))?;
            for (stream, seq) in &highest {
                upsert
                    .execute(params![stream, i64::try_from(*seq).unwrap_or(i64::MAX)])
                    .map_err(|e| StoreError::sqlite(&db, e))?;
            }
        }
        tx.commit().map_err(|e| StoreError::sqlite(&db, e))
    }

    /// Deletes up to `max_rows` delivered records that `rule` lets go, in transactions of at
    /// most [`PRUNE_CHUNK`] rows; returns how many it deleted. Each transaction reads the cursor
    /// it deletes under, so a record beyond a cursor (not yet delivered) is never deleted, and
    /// neither is any stream's newest record.
    pub fn prune(&mut self, rule: Prune, max_rows: usize) -> Result<u64, StoreError> {
        let db = self.paths.db.clone();
        let sqlite = |e| StoreError::sqlite(&db, e);
        let streams: Vec<i64> = self
            .conn
            .prepare_cached(
                "SELECT s.id FROM streams s JOIN forward_cursor c ON c.stream = s.name \
                 WHERE c.delivered_seq > 0 ORDER BY s.id",
            )
            .and_then(|mut s| s.query_map([], |row| row.get(0))?.collect())
            .map_err(sqlite)?;
        let mut deleted = 0u64;
        for stream_id in streams {
            loop {
                let room = max_rows.saturating_sub(deleted as usize).min(PRUNE_CHUNK);
                if room == 0 {
                    return Ok(deleted);
                }
                let n = self.prune_chunk(stream_id, rule, room).map_err(sqlite)?;
                deleted += n as u64;
                if n < room {
                    break;
                }
            }
        }
        Ok(deleted)
    }

    /// One transaction: deletes up to `limit` of the stream's oldest records that `rule` lets go.
    fn prune_chunk(
        &mut self,
        stream_id: i64,
        rule: Prune,
        limit: usize,
    ) -> rusqlite::Result<usize> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let bounds: Option<(i64, i64)> = tx
            .query_row(
                "SELECT s.last_seq, c.delivered_seq FROM streams s \
                 JOIN forward_cursor c ON c.stream = s.name WHERE s.id = ?1",
                [stream_id],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let Some((last_seq, delivered)) = bounds else {
            return Ok(0);
        };
        // Delivered, and not the newest.
        let mut bound = delivered.min(last_seq - 1);
        match rule {
            Prune::KeepNewest(n) => {
                bound = bound.min(delivered.saturating_sub(i64::try_from(n).unwrap_or(i64::MAX)));
            }
            Prune::ReceivedBefore(cutoff) => {
                let young: Option<i64> = tx
                    .prepare_cached(
                        "SELECT seq FROM records WHERE stream_id = ?1 AND seq <= ?2 \
                         AND received_at_ms >= ?3 ORDER BY seq LIMIT 1",
                    )?
                    .query_row(params![stream_id, bound, cutoff.0], |row| row.get(0))
                    .optional()?;
                if let Some(young) = young {
                    bound = bound.min(young - 1);
                }
            }
        }
        if bound < 1 {
            return Ok(0);
        }
        let n = tx
            .prepare_cached(
                "DELETE FROM records WHERE stream_id = ?1 AND seq IN \
                 (SELECT seq FROM records WHERE stream_id = ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3)",
            )?
            .execute(params![
                stream_id,
                bound,
                i64::try_from(limit).unwrap_or(i64::MAX)
            ])?;
        tx.commit()?;
        Ok(n)
    }
}

/// Streams with records beyond their cursor, by internal id.
fn pending(conn: &Connection) -> rusqlite::Result<Vec<Pending>> {
    let mut stmt = conn.prepare_cached(
        "SELECT s.id, s.name, s.last_seq, COALESCE(c.delivered_seq, 0) \
         FROM streams s LEFT JOIN forward_cursor c ON c.stream = s.name \
         WHERE s.last_seq > COALESCE(c.delivered_seq, 0) ORDER BY s.id",
    )?;
    stmt.query_map([], |row| {
        Ok(Pending {
            stream_id: row.get(0)?,
            name: row.get(1)?,
            last_seq: row.get(2)?,
            delivered: row.get(3)?,
        })
    })?
    .collect()
}

/// What is not yet delivered, as `conn` sees it now (the forwarder's connection, or a reader's
/// for `/v1/status`). Reads O(streams) rows.
pub(super) fn backlog(conn: &Connection) -> rusqlite::Result<Backlog> {
    let pending = pending(conn)?;
    let mut first = conn
        .prepare_cached("SELECT received_at_ms FROM records WHERE stream_id = ?1 AND seq = ?2")?;
    let mut backlog = Backlog {
        streams: pending.len(),
        ..Backlog::default()
    };
    for p in &pending {
        backlog.records += seq_u64(p.last_seq - p.delivered);
        let received: Option<i64> = first
            .query_row(params![p.stream_id, p.delivered + 1], |row| row.get(0))
            .optional()?;
        if let Some(ms) = received {
            let oldest = backlog.oldest.get_or_insert(UnixMillis(ms));
            oldest.0 = oldest.0.min(ms);
        }
    }
    Ok(backlog)
}

struct Pending {
    stream_id: i64,
    name: String,
    last_seq: i64,
    delivered: i64,
}

// Here rather than in readers.rs, so that the outbox depends on the readers and not both ways.
impl Readers {
    /// What the forwarder has not yet delivered, as of now (the forwarder's own figure is
    /// refreshed between its batches, so it can lag behind new records).
    pub fn forward_backlog(&self) -> Result<Backlog, StoreError> {
        self.with_conn(backlog)
    }
}
