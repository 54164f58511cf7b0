//! [`Store::open`]: lock, validate, recover, report.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use winddown::{LockError, LockFile};

use rusqlite::{Connection, OpenFlags};

use super::error::note;
use super::files::{Paths, sync_dir};
use super::readers::{Readers, StreamInfo};
use super::types::seq_u64;
use super::writer::Writer;
use super::{APPLICATION_ID, Foreign, MIGRATIONS, SCHEMA, SCHEMA_VERSION, StoreError};

/// How much [`Store::open`] checks before it trusts the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verify {
    /// The header (application id, schema version), and for every stream that its newest record
    /// exists and matches `streams.last_seq`. Reads O(streams × log records) pages: fast with
    /// millions of records.
    #[default]
    Tail,
    /// `Tail`, then `PRAGMA quick_check`, which reads the whole file: O(size of the database).
    QuickCheck,
}

/// Options for [`Store::open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// What to check at open.
    pub verify: Verify,
    /// How many idle read-only connections the pool keeps.
    pub max_idle_readers: usize,
    /// How long a connection waits for a lock held by another connection before it fails with
    /// [`StoreError::Busy`].
    pub busy_timeout: Duration,
    /// Whether a commit waits for stable storage. See [`Durability`].
    pub durability: Durability,
}

/// Whether [`Sink::commit`](winddown::commit::Sink::commit) returns only once the batch is on
/// stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: every commit fsyncs the write-ahead log before it returns. Nothing
    /// acknowledged is lost, whether the process, the OS or the power fails.
    #[default]
    Full,
    /// `synchronous=OFF`: a commit hands the WAL frames to the OS and returns without any fsync;
    /// checkpoints do not fsync either. A benchmark baseline, not a production mode.
    ///
    /// **A crash loses:** after a crash or kill of the *process*, nothing acknowledged (the
    /// frames are in the OS page cache, and SQLite recovers them from the WAL at the next open).
    /// After an OS crash or a power cut, any record acknowledged since the store was opened may
    /// be lost — its WAL frames, or the database pages a checkpoint wrote, may never have
    /// reached the disk — and the database file itself may be left corrupt (SQLite's documented
    /// risk of `synchronous=OFF`), which the next [`Store::open`] refuses. [`Writer::close`]
    /// switches back to `synchronous=FULL` for its final checkpoint, so after a clean shutdown
    /// everything is on stable storage, as in [`Durability::Full`].
    Off,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            verify: Verify::Tail,
            max_idle_readers: 4,
            busy_timeout: Duration::from_secs(5),
            durability: Durability::Full,
        }
    }
}

/// How the previous run ended, as far as the data directory tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastRun {
    /// There was no database: this open created it.
    New,
    /// The previous run closed the store with [`Writer::close`].
    Clean,
    /// The database exists but the clean-shutdown marker does not: the previous run crashed, was
    /// killed, lost power, or dropped its [`Writer`] without closing it. SQLite recovered the
    /// committed transactions from the write-ahead log.
    Unclean,
}

/// What [`Store::open`] found. `Display` gives a one-line summary for the log.
#[derive(Debug, Clone)]
pub struct OpenReport {
    /// The database file.
    pub path: PathBuf,
    /// How the previous run ended.
    pub last_run: LastRun,
    /// Size of the write-ahead log before this open: 0 after a clean shutdown; after an unclean
    /// one, the log that recovery replayed (committed frames) or discarded (a torn tail).
    pub wal_bytes_at_open: u64,
    /// Every stream, by name, with its record count.
    pub streams: Vec<StreamInfo>,
    /// Records in all streams.
    pub total_records: u64,
    /// The checks that passed.
    pub verified: Verify,
    /// How long the open took.
    pub elapsed: Duration,
}

impl fmt::Display for OpenReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "depot store {}: ", self.path.display())?;
        match self.last_run {
            LastRun::New => write!(f, "created")?,
            LastRun::Clean => write!(f, "previous run stopped cleanly")?,
            LastRun::Unclean if self.wal_bytes_at_open == 0 => write!(
                f,
                "previous run did NOT stop cleanly (it left no write-ahead log to recover)"
            )?,
            LastRun::Unclean => write!(
                f,
                "previous run did NOT stop cleanly; recovered from a {}-byte write-ahead log",
                self.wal_bytes_at_open
            )?,
        }
        let check = match self.verified {
            Verify::Tail => "tail check",
            Verify::QuickCheck => "tail check and quick_check",
        };
        write!(
            f,
            "; {} streams, {} records; {check} passed; opened in {} ms",
            self.streams.len(),
            self.total_records,
            self.elapsed.as_millis()
        )
    }
}

/// An opened store: its one writer, its reader pool, and what opening found.
///
/// ```no_run
/// # use depot::store::{Store, StoreOptions};
/// # fn main() -> Result<(), depot::store::StoreError> {
/// let Store { writer, readers, report } = Store::open("data", &StoreOptions::default())?;
/// # drop((writer, readers, report)); Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "dropping the Writer without Writer::close leaves the next open reporting an unclean shutdown"]
pub struct Store {
    /// The read-write connection; the group committer's [`Sink`](winddown::commit::Sink).
    pub writer: Writer,
    /// Read-only connections for queries.
    pub readers: Readers,
    /// What opening found.
    pub report: OpenReport,
}

impl Store {
    /// Opens (or creates) the store in `data_dir`, which must exist.
    ///
    /// In order: takes the directory's lock (`depot.lock`; [`StoreError::Locked`] if another
    /// process holds it), notes whether the clean-shutdown marker is there and how big the WAL is,
    /// opens `depot.sqlite3` and checks its header before changing anything (refusing foreign
    /// files and unknown schema versions), switches to WAL with `synchronous=FULL` (or `OFF`, see
    /// [`Durability`]), creates the schema if the file is new, fills an empty WAL with zeros so
    /// that commits overwrite it rather than grow it, runs the [`Verify`] checks, and finally
    /// removes the marker and fsyncs the directory, so that a crash from here on leaves it missing.
    ///
    /// Does not scan the tables: opening a store of a million records takes milliseconds unless
    /// [`Verify::QuickCheck`] is asked for.
    pub fn open(data_dir: impl AsRef<Path>, options: &StoreOptions) -> Result<Store, StoreError> {
        let started = Instant::now();
        let dir = data_dir.as_ref();
        let meta = fs::metadata(dir).map_err(|e| StoreError::io(dir, e))?;
        if !meta.is_dir() {
            return Err(StoreError::CannotOpen {
                path: dir.to_path_buf(),
                source: note("not a directory"),
            });
        }
        let paths = Arc::new(Paths::new(dir));
        let lock = Arc::new(take_lock(&paths.lock)?);

        let existed = file_len(&paths.db)? > 0 || file_len(&paths.wal)? > 0;
        let wal_bytes_at_open = file_len(&paths.wal)?;
        let marker = paths
            .marker
            .try_exists()
            .map_err(|e| StoreError::io(&paths.marker, e))?;
        check_not_emptied(&paths, wal_bytes_at_open, marker)?;
        let last_run = match (existed, marker) {
            (false, _) => LastRun::New,
            (true, true) => LastRun::Clean,
            (true, false) => LastRun::Unclean,
        };

        let mut conn = open_writer(&paths, options)?;
        // Empty after a clean shutdown; holding only the new schema when this open created it.
        if !existed || file_len(&paths.wal)? == 0 {
            conn = preallocate_wal(conn, &paths, options)?;
        }
        let streams = survey(&conn, &paths.db)?;
        if options.verify == Verify::QuickCheck {
            quick_check(&conn, &paths.db)?;
        }
        if marker {
            fs::remove_file(&paths.marker).map_err(|e| StoreError::io(&paths.marker, e))?;
            sync_dir(&paths.dir)?;
        }

        let readers = Readers::new(
            paths.clone(),
            Arc::downgrade(&lock),
            options.max_idle_readers,
            options.busy_timeout,
        );
        let report = OpenReport {
            path: paths.db.clone(),
            last_run,
            wal_bytes_at_open,
            total_records: streams.iter().map(|s| s.records).sum(),
            streams,
            verified: options.verify,
            elapsed: started.elapsed(),
        };
        Ok(Store {
            writer: Writer::new(conn, paths, readers.clone(), lock),
            readers,
            report,
        })
    }
}

fn take_lock(path: &Path) -> Result<LockFile, StoreError> {
    LockFile::acquire(path).map_err(|e| match e {
        LockError::Held { path, pid } => StoreError::Locked { path, pid },
        LockError::Io { path, source } => StoreError::io(&path, source),
        other => StoreError::io(path, std::io::Error::other(other.to_string())),
    })
}

/// Refuses a database file that something else deleted, emptied or cut short, where the data
/// directory shows that a store was there: the clean-shutdown marker (written only after a clean
/// close) or a non-empty write-ahead log. Opening it would start an empty store — or one that is
/// the log's last transactions without the pages they build on — and serve it as if nothing had
/// been lost.
///
/// After a clean close the write-ahead log was checkpointed into the file, so the file must hold
/// every page its header counts; after a crash it may legitimately hold fewer (a checkpoint cut
/// short), so then only a missing or empty file is refused.
fn check_not_emptied(paths: &Paths, wal_len: u64, marker: bool) -> Result<(), StoreError> {
    let evidence = if marker {
        format!("the clean-shutdown marker {}", paths.marker.display())
    } else if wal_len > 0 {
        format!("a {wal_len}-byte write-ahead log")
    } else {
        return Ok(());
    };
    let exists = paths
        .db
        .try_exists()
        .map_err(|e| StoreError::io(&paths.db, e))?;
    let db_len = file_len(&paths.db)?;
    let corrupt = |detail: String| StoreError::Corrupt {
        path: paths.db.clone(),
        detail,
        source: None,
    };
    if db_len == 0 {
        let mut remove = Vec::new();
        if marker {
            remove.push(paths.marker.display().to_string());
        }
        if wal_len > 0 {
            remove.push(paths.wal.display().to_string());
        }
        return Err(corrupt(format!(
            "the database file is {} but {evidence} shows that this directory held a depot \
             store: the file was deleted or emptied; to start an empty store here instead, \
             remove {}",
            if exists { "empty" } else { "missing" },
            remove.join(" and "),
        )));
    }
    if marker
        && let Some(expected) = header_bytes(&paths.db)?
        && db_len < expected
    {
        return Err(corrupt(format!(
            "the file is {db_len} bytes but its header counts {expected}: it was cut short \
             after depot closed it"
        )));
    }
    Ok(())
}

/// The size of the database as its SQLite header states it (page size × page count), when the
/// header is there and its page count is valid (its "version-valid-for" equals the change counter).
fn header_bytes(db: &Path) -> Result<Option<u64>, StoreError> {
    use std::io::Read;
    let mut header = [0u8; 100];
    let mut file = File::open(db).map_err(|e| StoreError::io(db, e))?;
    if file.read_exact(&mut header).is_err() || !header.starts_with(b"SQLite format 3\0") {
        return Ok(None); // too short or not SQLite: the header checks at open report it
    }
    let be32 = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        n => u64::from(n),
    };
    let (pages, changes, valid_for) = (be32(28), be32(24), be32(92));
    if pages == 0 || changes != valid_for {
        return Ok(None);
    }
    Ok(Some(u64::from(pages) * page_size))
}

fn file_len(path: &Path) -> Result<u64, StoreError> {
    match fs::metadata(path) {
        Ok(meta) => Ok(meta.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

/// Opens the read-write connection, refuses foreign files, configures durability, and creates
/// the schema in a new file.
fn open_writer(paths: &Paths, options: &StoreOptions) -> Result<Connection, StoreError> {
    let db = paths.db.as_path();
    let sqlite = |e| StoreError::sqlite(db, e);
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite)?;
    conn.busy_timeout(options.busy_timeout).map_err(sqlite)?;
    conn.set_prepared_statement_cache_capacity(32);

    // Look before touching: nothing below may modify a file that is not ours.
    let app_id: i32 = conn
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .map_err(sqlite)?;
    let version: i32 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sqlite)?;
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
        .map_err(sqlite)?;
    let mut upgrade_from = None;
    let fresh = match (app_id, version) {
        (APPLICATION_ID, SCHEMA_VERSION) => false,
        (APPLICATION_ID, found) if (1..SCHEMA_VERSION).contains(&found) => {
            upgrade_from = Some(found);
            false
        }
        (APPLICATION_ID, found) => {
            return Err(StoreError::UnsupportedSchema {
                path: db.to_path_buf(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        (0, 0) if objects == 0 => true,
        (0, _) => return Err(not_depot(db, Foreign::Unmarked)),
        (other, _) => return Err(not_depot(db, Foreign::ApplicationId(other))),
    };
    if conn.is_readonly("main").map_err(sqlite)? {
        return Err(StoreError::ReadOnly {
            path: db.to_path_buf(),
            source: Some(note("SQLite could only open the file read-only")),
        });
    }

    if fresh {
        conn.pragma_update(None, "page_size", 4096)
            .map_err(sqlite)?;
    }
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(sqlite)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unsupported {
            path: db.to_path_buf(),
            detail: format!("SQLite refused WAL journal mode (it kept {mode:?})"),
        });
    }
    let (wanted, code) = match options.durability {
        Durability::Full => ("FULL", 2),
        Durability::Off => ("OFF", 0),
    };
    conn.pragma_update(None, "synchronous", wanted)
        .map_err(sqlite)?;
    let synchronous: i64 = conn
        .pragma_query_value(None, "synchronous", |row| row.get(0))
        .map_err(sqlite)?;
    if synchronous != code {
        return Err(StoreError::Unsupported {
            path: db.to_path_buf(),
            detail: format!("SQLite refused synchronous={wanted} (it kept {synchronous})"),
        });
    }
    // Keep the WAL from staying huge after a burst once it has been checkpointed.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
        .map_err(sqlite)?;

    if fresh {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;\n{SCHEMA}\n{}\nPRAGMA application_id = {APPLICATION_ID};\n\
             PRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;",
            migrations_after(1)
        ))
        .map_err(sqlite)?;
        sync_dir(&paths.dir)?;
    } else if let Some(found) = upgrade_from {
        // One transaction: the new tables and the new version number land together or not at all.
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;\n{}\nPRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;",
            migrations_after(found)
        ))
        .map_err(sqlite)?;
        tracing::info!(path = %db.display(), from = found, to = SCHEMA_VERSION, "store schema upgraded");
    }
    Ok(conn)
}

/// The SQL that takes a database of schema version `found` to [`SCHEMA_VERSION`]: only adds.
fn migrations_after(found: i32) -> String {
    MIGRATIONS
        .iter()
        .filter(|(version, _)| *version > found)
        .map(|(_, sql)| *sql)
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the WAL starts as when it is empty at open: zeros, room for SQLite's automatic checkpoint
/// threshold (1000 frames of 4 KiB pages) plus slack for the commit that crosses it.
pub(super) const WAL_PREALLOCATED_BYTES: u64 = 32 + 1100 * (24 + 4096);

/// Fills an empty WAL with zeros (and fsyncs it and the directory), so that commits overwrite
/// blocks the file already has instead of growing it. After a checkpoint SQLite writes the WAL
/// from its start again, so once the file has reached its working size every commit is an
/// overwrite — but a WAL that starts empty grows on every commit until then, and an fdatasync
/// that must also commit the file's new size and blocks to the file system's journal costs
/// several times one that need not (see BENCHMARKS.md). It is also what keeps an acknowledged
/// commit when ext4 aborts (turns read-only after a disk error) under load: on Linux 6.18 an
/// fdatasync that grows a file can return success while the abort discards the journal
/// transaction holding the new size, so the newest commit of a growing WAL is gone after the
/// journal is replayed; an overwrite's fdatasync never was (tests/e2e/faults.rs, `ext4_abort`).
///
/// SQLite reads a WAL whose header is zeros as empty and writes a fresh header at its next
/// commit; frames after the last one it wrote never carry its salts, so the zeros are never
/// mistaken for frames.
///
/// Writing the WAL behind SQLite's back is safe only while no connection has it open: the
/// writer is closed first (closing the last connection checkpoints the WAL into the database
/// and deletes it) and reopened after.
/// Best effort: if the zeros cannot be written (a full or small disk), the partial file is
/// removed and SQLite grows the WAL as usual.
fn preallocate_wal(
    conn: Connection,
    paths: &Paths,
    options: &StoreOptions,
) -> Result<Connection, StoreError> {
    conn.close()
        .map_err(|(_, e)| StoreError::sqlite(&paths.db, e))?;
    let written = (|| -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&paths.wal)?;
        if let Ok(meta) = fs::metadata(&paths.db) {
            file.set_permissions(meta.permissions())?;
        }
        let zeros = vec![0u8; 1 << 16];
        let mut left = WAL_PREALLOCATED_BYTES;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            file.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        file.sync_all()
    })();
    match written {
        Ok(()) => sync_dir(&paths.dir)?,
        Err(e) => {
            tracing::debug!(error = %e, "could not preallocate the WAL; SQLite will grow it");
            let _ = fs::remove_file(&paths.wal);
        }
    }
    open_writer(paths, options)
}

fn not_depot(db: &Path, reason: Foreign) -> StoreError {
    StoreError::NotADepotDatabase {
        path: db.to_path_buf(),
        reason,
        source: None,
    }
}

/// Lists the streams and checks, per stream, that the newest record exists and agrees with
/// `streams.last_seq`. Touches the rightmost pages of the records table and index, which are the
/// ones a torn or truncated file loses first.
fn survey(conn: &Connection, db: &Path) -> Result<Vec<StreamInfo>, StoreError> {
    let sqlite = |e| StoreError::sqlite(db, e);
    let mut stmt = conn
        .prepare("SELECT id, name, last_seq FROM streams ORDER BY name")
        .map_err(sqlite)?;
    let rows: Vec<(i64, String, i64)> = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .and_then(Iterator::collect)
        .map_err(sqlite)?;
    let mut tail = conn
        .prepare(
            "SELECT seq, typeof(payload) FROM records WHERE stream_id = ?1 \
             ORDER BY seq DESC LIMIT 1",
        )
        .map_err(sqlite)?;
    let mut streams = Vec::with_capacity(rows.len());
    for (id, name, last_seq) in rows {
        let newest: Option<i64> = tail
            .query_map([id], |row| row.get(0))
            .and_then(|mut rows| rows.next().transpose())
            .map_err(sqlite)?;
        let consistent = match newest {
            None => last_seq == 0,
            Some(seq) => seq == last_seq,
        };
        if !consistent {
            return Err(StoreError::Corrupt {
                path: db.to_path_buf(),
                detail: format!(
                    "stream {name:?} should end at sequence {last_seq}, but its newest record is {}",
                    newest.map_or_else(|| "missing".to_owned(), |s| s.to_string())
                ),
                source: None,
            });
        }
        let last_seq = seq_u64(last_seq);
        streams.push(StreamInfo {
            name,
            records: last_seq,
            last_seq,
        });
    }
    Ok(streams)
}

fn quick_check(conn: &Connection, db: &Path) -> Result<(), StoreError> {
    let mut problems = Vec::new();
    conn.pragma_query(None, "quick_check", |row| {
        problems.push(row.get::<_, String>(0)?);
        Ok(())
    })
    .map_err(|e| StoreError::sqlite(db, e))?;
    if problems == ["ok"] {
        return Ok(());
    }
    problems.truncate(5);
    Err(StoreError::Corrupt {
        path: db.to_path_buf(),
        detail: format!("quick_check: {}", problems.join("; ")),
        source: None,
    })
}
