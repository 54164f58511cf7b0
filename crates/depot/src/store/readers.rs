//! [`Readers`]: a small pool of read-only connections.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use winddown::LockFile;

use super::StoreError;
use super::files::Paths;
use super::types::{UnixMillis, seq_u64};

/// One stream's summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// The stream's name.
    pub name: String,
    /// How many records it holds (equal to `last_seq`: sequences start at 1 and have no gaps).
    pub records: u64,
    /// The sequence number of its newest record, 0 if it has none.
    pub last_seq: u64,
}

/// One stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its sequence number in its stream.
    pub seq: u64,
    /// The JSON value as posted.
    pub payload: String,
    /// When depot received the request that carried it.
    pub received_at: UnixMillis,
}

/// A connection and the lock it keeps held. Fields drop in order: the connection closes first.
struct Held {
    conn: Connection,
    _lock: Arc<LockFile>,
}

/// A cheap-to-clone handle on a pool of read-only connections. Every method blocks on SQLite:
/// call it from `tokio::task::spawn_blocking` (or another thread), not from an async task.
///
/// Connections are opened on demand and up to `max_idle_readers` are kept for reuse; each keeps
/// its prepared statements. A read sees the batches committed before it started.
#[derive(Clone)]
pub struct Readers {
    inner: Arc<Pool>,
}

struct Pool {
    paths: Arc<Paths>,
    /// The data directory's lock, held by the [`Writer`](super::Writer). Every open connection
    /// holds a strong reference beside it, so that the lock is released only once the last
    /// connection to the store has closed; once the writer has closed (and no connection is open)
    /// it is gone, and no new connection opens.
    lock: Weak<LockFile>,
    idle: Mutex<Vec<Held>>,
    closed: AtomicBool,
    max_idle: usize,
    busy_timeout: Duration,
}

impl fmt::Debug for Readers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Readers")
            .field("path", &self.inner.paths.db)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Readers {
    pub(super) fn new(
        paths: Arc<Paths>,
        lock: Weak<LockFile>,
        max_idle: usize,
        busy_timeout: Duration,
    ) -> Readers {
        Readers {
            inner: Arc::new(Pool {
                paths,
                lock,
                idle: Mutex::new(Vec::new()),
                closed: AtomicBool::new(false),
                max_idle,
                busy_timeout,
            }),
        }
    }

    /// Every stream with its record count and last sequence number, by name.
    pub fn streams(&self) -> Result<Vec<StreamInfo>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT name, last_seq FROM streams ORDER BY name")?;
            let rows = stmt.query_map([], |row| {
                let last_seq = seq_u64(row.get(1)?);
                Ok(StreamInfo {
                    name: row.get(0)?,
                    records: last_seq,
                    last_seq,
                })
            })?;
            rows.collect()
        })
    }

    /// Up to `limit` records of `stream` with a sequence number above `after_seq`, in order, with
    /// no byte budget: the page holds up to `limit` whole records in memory. An unknown stream has
    /// no records. See [`Readers::read_page`].
    pub fn read(
        &self,
        stream: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        self.read_page(stream, after_seq, limit, usize::MAX)
    }

    /// Up to `limit` records of `stream` with a sequence number above `after_seq`, in order, whose
    /// payloads add up to at most `max_bytes` — except that the first record is always returned,
    /// however large, so that a reader paging with the last `seq` always gets on. An unknown
    /// stream has no records.
    ///
    /// Rows are read only as far as the budget reaches: the sizes are read first (from the row
    /// headers, `octet_length`), then only the payloads that fit, in the same read transaction.
    pub fn read_page(
        &self,
        stream: &str,
        after_seq: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, StoreError> {
        self.with_conn(|conn| {
            let tx = conn.unchecked_transaction()?;
            let id: Option<i64> = tx
                .prepare_cached("SELECT id FROM streams WHERE name = ?1")?
                .query_row([stream], |row| row.get(0))
                .optional()?;
            let records = match id {
                Some(id) => records_after(&tx, id, after_seq, limit, max_bytes, true)?.0,
                None => Vec::new(),
            };
            tx.commit()?;
            Ok(records)
        })
    }

    /// The number of records in all streams.
    pub fn total_records(&self) -> Result<u64, StoreError> {
        self.with_conn(|conn| {
            conn.prepare_cached("SELECT COALESCE(SUM(last_seq), 0) FROM streams")?
                .query_row([], |row| row.get(0).map(seq_u64))
        })
    }

    /// The data directory's paths (for [`Outbox::open`](super::Outbox::open)).
    pub(super) fn paths(&self) -> &Arc<Paths> {
        &self.inner.paths
    }

    /// A share of the data directory's lock for a new connection (the outbox's), or
    /// [`StoreError::Closed`] once the writer has released it.
    pub(super) fn lock(&self) -> Result<Arc<LockFile>, StoreError> {
        match self.inner.lock.upgrade() {
            Some(lock) if !self.inner.closed.load(Ordering::SeqCst) => Ok(lock),
            _ => Err(StoreError::Closed {
                path: self.inner.paths.db.clone(),
            }),
        }
    }

    /// How long a connection waits for another's lock.
    pub(super) fn busy_timeout(&self) -> Duration {
        self.inner.busy_timeout
    }

    /// Refuses further reads and closes the idle connections. Reads in flight finish; their
    /// connections are closed when they return.
    pub(super) fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let idle = std::mem::take(&mut *self.lock_idle());
        drop(idle);
    }

    /// A test seam: runs `f` on one of the pool's connections, as every read does.
    #[doc(hidden)]
    pub fn debug_with_conn<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        self.with_conn(f)
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Held>> {
        // A panic while holding the lock cannot leave the Vec half-updated.
        self.inner
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn with_conn<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let pool = &self.inner;
        let db = &pool.paths.db;
        if pool.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed { path: db.clone() });
        }
        let reused = self.lock_idle().pop();
        let held = match reused {
            Some(held) => held,
            None => self.open_one()?,
        };
        // On error the connection is dropped rather than returned: it may be mid-statement.
        let value = f(&held.conn).map_err(|e| StoreError::sqlite(db, e))?;
        if !pool.closed.load(Ordering::SeqCst) {
            let mut idle = self.lock_idle();
            if idle.len() < pool.max_idle {
                idle.push(held);
            }
        }
        Ok(value)
    }

    fn open_one(&self) -> Result<Held, StoreError> {
        let db = &self.inner.paths.db;
        let lock = self.lock()?;
        let conn = Connection::open_with_flags(
            db,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::sqlite(db, e))?;
        conn.busy_timeout(self.inner.busy_timeout)
            .map_err(|e| StoreError::sqlite(db, e))?;
        Ok(Held { conn, _lock: lock })
    }
}

/// Up to `limit` records of the stream with id `stream_id` past `after_seq`, in order, whose
/// payloads add up to at most `max_bytes`; if `first_always`, the first record comes even when it
/// alone is larger. Returns the records and their payload bytes.
///
/// Reads the sizes first (`octet_length` reads a row's header, not its payload), then only the
/// rows that fit: a budget reached is a query stopped, not rows loaded and thrown away. Call it
/// inside a transaction so that both statements see the same rows.
pub(super) fn records_after(
    conn: &Connection,
    stream_id: i64,
    after_seq: u64,
    limit: usize,
    max_bytes: usize,
    first_always: bool,
) -> rusqlite::Result<(Vec<Record>, usize)> {
    let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let (mut count, mut bytes) = (0i64, 0usize);
    {
        let mut sizes = conn.prepare_cached(
            "SELECT octet_length(payload) FROM records \
             WHERE stream_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let mut rows = sizes.query(params![stream_id, after, limit])?;
        while let Some(row) = rows.next()? {
            let size = usize::try_from(row.get::<_, i64>(0)?).unwrap_or(usize::MAX);
            let fits = bytes.saturating_add(size) <= max_bytes;
            let alone = first_always && count == 0;
            if !(fits || alone) {
                break;
            }
            bytes = bytes.saturating_add(size);
            count += 1;
        }
    }
    if count == 0 {
        return Ok((Vec::new(), 0));
    }
    let mut read = conn.prepare_cached(
        "SELECT seq, payload, received_at_ms FROM records \
         WHERE stream_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )?;
    let records = read
        .query_map(params![stream_id, after, count], |row| {
            Ok(Record {
                seq: seq_u64(row.get(0)?),
                payload: row.get(1)?,
                received_at: UnixMillis(row.get(2)?),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((records, bytes))
}
