//! [`Writer`]: the one read-write connection, the depot's [`Sink`].

use std::fmt;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};
use winddown::commit::Sink;

use super::StoreError;
use super::error::note;
use super::files::{Paths, write_clean_marker};
use super::readers::Readers;
use super::types::{UnixMillis, seq_u64};

/// One append request: the unit the group committer batches and acknowledges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendRequest {
    /// The stream to append to; created by its first append.
    pub stream: String,
    /// The records, each the text of one JSON value exactly as posted. Stored and compared byte
    /// for byte.
    pub payloads: Vec<String>,
    /// Names this request: a retry with the same `(stream, key)` gets the original sequence
    /// numbers back and writes nothing.
    pub idempotency_key: Option<String>,
    /// When depot received the request.
    pub received_at: UnixMillis,
}

/// How a request came to hold its sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendKind {
    /// This commit wrote the records.
    Written,
    /// A retry of an earlier request with the same idempotency key and the same payloads: nothing
    /// was written, the sequence numbers are the original ones.
    Replayed,
}

/// The sequence numbers of a durable request: `first..=last` in its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The sequence number of the request's first record.
    pub first: u64,
    /// The sequence number of its last record.
    pub last: u64,
    /// Whether this commit wrote them or replayed an earlier request.
    pub kind: AppendKind,
}

/// Why one request of a batch was refused. Its neighbours in the batch are unaffected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejected {
    /// The idempotency key was used on this stream by a request with different payloads.
    #[error(
        "idempotency key already used on this stream by a different request \
         (records {first}..={last}); send a new request with a new key"
    )]
    IdempotencyConflict {
        /// The first sequence number of the original request.
        first: u64,
        /// Its last sequence number.
        last: u64,
    },
    /// The request held no records.
    #[error("the request holds no records; send at least one")]
    Empty,
}

/// The ack of one request: its sequence numbers, or why it was refused.
pub type Ack = Result<Appended, Rejected>;

/// The single read-write connection. Owned by the group committer's thread, which calls
/// [`Sink::commit`]; finish with [`Writer::close`] for a clean shutdown (dropping it instead
/// closes the connection but leaves the next open reporting [`LastRun::Unclean`]).
///
/// [`LastRun::Unclean`]: super::LastRun::Unclean
pub struct Writer {
    conn: Connection,
    paths: Arc<Paths>,
    readers: Readers,
    poisoned: Option<Arc<StoreError>>,
    /// The data directory's advisory lock. Every other connection (readers, the outbox) holds a
    /// share of it, so that it is released only when the last connection has closed.
    lock: Arc<winddown::LockFile>,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("path", &self.paths.db)
            .field("poisoned", &self.poisoned.is_some())
            .finish_non_exhaustive()
    }
}

impl Writer {
    pub(super) fn new(
        conn: Connection,
        paths: Arc<Paths>,
        readers: Readers,
        lock: Arc<winddown::LockFile>,
    ) -> Self {
        Writer {
            conn,
            paths,
            readers,
            poisoned: None,
            lock,
        }
    }

    /// Whether an earlier failure poisoned this writer; it then refuses every batch.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    /// Shuts the store down cleanly: closes the reader pool (later reads return
    /// [`StoreError::Closed`]), checkpoints the WAL into the database and truncates it
    /// (`PRAGMA wal_checkpoint(TRUNCATE)`, waiting up to the busy timeout for reads in flight),
    /// closes the connection, then creates and fsyncs the `clean-shutdown` marker and fsyncs the
    /// directory.
    ///
    /// The data directory's lock is released only once every connection of the store has closed:
    /// here if none is left, otherwise when the last read in flight returns or the last
    /// [`Outbox`](super::Outbox) is dropped. Until then no other depot can open the store (and,
    /// say, preallocate a WAL that a connection of this one could still write to).
    ///
    /// On error no marker is written, so the next open reports an unclean shutdown; everything
    /// acknowledged is still in the database or its WAL. A poisoned writer returns
    /// [`StoreError::Poisoned`] and writes no marker.
    pub fn close(self) -> Result<(), StoreError> {
        let Writer {
            conn,
            paths,
            readers,
            poisoned,
            lock,
        } = self;
        readers.close();
        if let Some(cause) = poisoned {
            return Err(StoreError::Poisoned {
                path: paths.db.clone(),
                source: cause,
            });
        }
        // With durability off, commits were not synced: the final checkpoint must be, so that a
        // clean shutdown leaves everything on stable storage in either mode.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| StoreError::sqlite(&paths.db, e))?;
        let busy: i64 = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
            .map_err(|e| StoreError::sqlite(&paths.db, e))?;
        if busy != 0 {
            return Err(StoreError::Busy {
                path: paths.db.clone(),
                source: Some(note(
                    "the final checkpoint could not finish: reads were still running",
                )),
            });
        }
        conn.close()
            .map_err(|(_, e)| StoreError::sqlite(&paths.db, e))?;
        write_clean_marker(&paths)?;
        drop(lock);
        Ok(())
    }

    /// Commits `batch` as one transaction. `Err` means nothing in the batch is stored.
    fn commit_batch(&mut self, batch: &[AppendRequest]) -> Result<Vec<Ack>, StoreError> {
        if let Some(cause) = &self.poisoned {
            return Err(StoreError::Poisoned {
                path: self.paths.db.clone(),
                source: cause.clone(),
            });
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let result = run_transaction(&self.conn, batch);
        let err = match result {
            Ok(acks) => return Ok(acks),
            Err(e) => StoreError::sqlite(&self.paths.db, e),
        };
        // A write refused by a file system gone read-only: named as such, and poisoning (see
        // `on_read_only_fs`).
        let (err, refused_by_fs) = err.on_read_only_fs(&self.paths.dir);
        // SQLite may already have rolled back (it does for some SQLITE_FULL and SQLITE_IOERR);
        // otherwise roll back now. Only a confirmed rollback lets the error count as "store
        // unchanged".
        if !self.conn.is_autocommit()
            && let Err(rollback) = self.conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %err, "batch failed and could not be rolled back");
            let cause = Arc::new(StoreError::sqlite(&self.paths.db, rollback));
            self.poisoned = Some(cause.clone());
            return Err(StoreError::Poisoned {
                path: self.paths.db.clone(),
                source: cause,
            });
        }
        if err.poisons() || refused_by_fs {
            self.poisoned = Some(Arc::new(err.clone()));
        }
        Err(err)
    }

    /// A test seam: runs `sql` on the writer's connection (e.g. `PRAGMA query_only=1` to make
    /// commits fail with SQLITE_READONLY).
    #[doc(hidden)]
    pub fn debug_execute(&self, sql: &str) -> Result<(), StoreError> {
        self.conn
            .execute_batch(sql)
            .map_err(|e| StoreError::sqlite(&self.paths.db, e))
    }
}

impl Sink for Writer {
    type Item = AppendRequest;
    type Ack = Ack;
    type Error = StoreError;

    /// Appends every request of `batch` in one transaction (one fsync) and returns one ack per
    /// request, in order. A request may be [`Rejected`] without affecting the others; an `Err`
    /// stores nothing.
    fn commit(&mut self, batch: &[AppendRequest]) -> Result<Vec<Ack>, StoreError> {
        self.commit_batch(batch)
    }

    fn item_bytes(item: &AppendRequest) -> usize {
        item.stream.len()
            + item.idempotency_key.as_ref().map_or(0, String::len)
            + item.payloads.iter().map(String::len).sum::<usize>()
    }

    /// See [`StoreError::poisons`].
    fn poisons(error: &StoreError) -> bool {
        error.poisons()
    }
}

fn run_transaction(conn: &Connection, batch: &[AppendRequest]) -> rusqlite::Result<Vec<Ack>> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let mut acks = Vec::with_capacity(batch.len());
    let mut streams = BatchStreams::default();
    let mut insert = conn.prepare_cached(
        "INSERT INTO records (stream_id, seq, received_at_ms, payload) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for request in batch {
        acks.push(append(conn, &mut insert, &mut streams, request)?);
    }
    drop(insert);
    // Each stream's `last_seq` once per batch, not once per request.
    if !streams.0.is_empty() {
        let mut update = conn.prepare_cached("UPDATE streams SET last_seq = ?2 WHERE id = ?1")?;
        for stream in streams.0.iter().filter(|s| s.last_seq != s.stored_seq) {
            update.execute(params![stream.id, stream.last_seq])?;
        }
    }
    conn.prepare_cached("COMMIT")?.execute([])?;
    Ok(acks)
}

/// The streams a batch touched, looked up once per batch: their id, their `last_seq` in the
/// database (`stored_seq`) and as this batch's requests advanced it (`last_seq`). A batch
/// usually touches one stream or a few, so a list beats a map.
#[derive(Default)]
struct BatchStreams<'a>(Vec<BatchStream<'a>>);

struct BatchStream<'a> {
    name: &'a str,
    id: i64,
    stored_seq: i64,
    last_seq: i64,
}

impl<'a> BatchStreams<'a> {
    /// The stream's index in the list, after looking it up in the database the first time;
    /// `None` if it does not exist yet.
    fn find(&mut self, conn: &Connection, name: &'a str) -> rusqlite::Result<Option<usize>> {
        if let Some(at) = self.0.iter().position(|s| s.name == name) {
            return Ok(Some(at));
        }
        let found: Option<(i64, i64)> = conn
            .prepare_cached("SELECT id, last_seq FROM streams WHERE name = ?1")?
            .query_row([name], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        Ok(found.map(|(id, last_seq)| self.push(name, id, last_seq)))
    }

    fn push(&mut self, name: &'a str, id: i64, last_seq: i64) -> usize {
        self.0.push(BatchStream {
            name,
            id,
            stored_seq: last_seq,
            last_seq,
        });
        self.0.len() - 1
    }
}

/// Applies one request inside the open transaction. The stream's new `last_seq` is kept in
/// `streams` and written by [`run_transaction`] before the commit.
fn append<'a>(
    conn: &Connection,
    insert: &mut rusqlite::CachedStatement<'_>,
    streams: &mut BatchStreams<'a>,
    request: &'a AppendRequest,
) -> rusqlite::Result<Ack> {
    if request.payloads.is_empty() {
        return Ok(Err(Rejected::Empty));
    }
    let stream = streams.find(conn, &request.stream)?;

    if let (Some(at), Some(key)) = (stream, &request.idempotency_key) {
        let stream_id = streams.0[at].id;
        let original: Option<(i64, i64)> = conn
            .prepare_cached(
                "SELECT first_seq, last_seq FROM idempotency_keys \
                 WHERE stream_id = ?1 AND key = ?2",
            )?
            .query_row(params![stream_id, key], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()?;
        if let Some((first, last)) = original {
            let (first, last) = (seq_u64(first), seq_u64(last));
            return Ok(
                if same_payloads(conn, stream_id, first, last, &request.payloads)? {
                    Ok(Appended {
                        first,
                        last,
                        kind: AppendKind::Replayed,
                    })
                } else {
                    Err(Rejected::IdempotencyConflict { first, last })
                },
            );
        }
    }

    let at = match stream {
        Some(at) => at,
        None => {
            conn.prepare_cached("INSERT INTO streams (name, last_seq) VALUES (?1, 0)")?
                .execute([&request.stream])?;
            streams.push(&request.stream, conn.last_insert_rowid(), 0)
        }
    };
    let stream = &mut streams.0[at];
    let stream_id = stream.id;
    let first = stream.last_seq + 1;
    let mut seq = stream.last_seq;
    for payload in &request.payloads {
        seq += 1;
        insert.execute(params![stream_id, seq, request.received_at.0, payload])?;
    }
    stream.last_seq = seq;
    if let Some(key) = &request.idempotency_key {
        conn.prepare_cached(
            "INSERT INTO idempotency_keys (stream_id, key, first_seq, last_seq) \
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![stream_id, key, first, seq])?;
    }
    Ok(Ok(Appended {
        first: seq_u64(first),
        last: seq_u64(seq),
        kind: AppendKind::Written,
    }))
}

/// Whether records `first..=last` of the stream are exactly `payloads`.
fn same_payloads(
    conn: &Connection,
    stream_id: i64,
    first: u64,
    last: u64,
    payloads: &[String],
) -> rusqlite::Result<bool> {
    if last.checked_sub(first).and_then(|n| n.checked_add(1)) != Some(payloads.len() as u64) {
        return Ok(false);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT payload FROM records WHERE stream_id = ?1 AND seq BETWEEN ?2 AND ?3 ORDER BY seq",
    )?;
    let mut rows = stmt.query(params![stream_id, first as i64, last as i64])?;
    let mut expected = payloads.iter();
    while let Some(row) = rows.next()? {
        let stored = row.get_ref(0)?.as_str()?;
        if expected.next().map(String::as_str) != Some(stored) {
            return Ok(false);
        }
    }
    Ok(expected.next().is_none())
}
