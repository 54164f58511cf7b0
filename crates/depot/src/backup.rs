//! `depot backup --to PATH`: a consistent copy of the SQLite store, taken while depot runs (or
//! not), through a read-only connection.
//!
//! `VACUUM INTO` rather than SQLite's online backup API: the backup API restarts its copy whenever
//! another connection writes, so under a steady write load from the depot process it may never
//! finish; `VACUUM INTO` copies one read transaction's snapshot (every commit acknowledged before
//! it began) while depot keeps committing. SQLite does not fsync what `VACUUM INTO` writes, so the
//! copy is written beside the target, fsynced, checked, and only then linked into place — which
//! fails, rather than overwrites, if the target exists.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use crate::store::{APPLICATION_ID, DB_FILE};

/// What a backup wrote.
#[derive(Debug, Clone)]
pub struct Backup {
    /// The copy.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Records in it.
    pub records: u64,
    /// Streams in it.
    pub streams: u64,
    /// How long the copy took.
    pub elapsed: Duration,
}

impl std::fmt::Display for Backup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "backed up {} records in {} streams to {} ({} bytes, {:.3} s); to restore, put it as \
             {DB_FILE} into an empty data directory",
            self.records,
            self.streams,
            self.path.display(),
            self.bytes,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Why a backup was not made. Nothing is left at the target path in any case. The cause, if
/// any, is both in the message and in `source()`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The data directory holds no store.
    #[error(
        "no depot store at {}: is --data-dir (or data_dir in the config) the running depot's?",
        db.display()
    )]
    NoStore {
        /// The database file looked for.
        db: PathBuf,
    },
    /// The database is not depot's.
    #[error("{} is not a depot store (application_id {id:#x}); nothing was copied", db.display())]
    NotDepot {
        /// The database file.
        db: PathBuf,
        /// Its `application_id`.
        id: i32,
    },
    /// `--to` names something that exists (or appeared while the backup ran).
    #[error("{} {}: depot backup never overwrites{}", to.display(),
        if *during { "appeared while the backup ran" } else { "exists" },
        if *during { "" } else { "; choose a new path or remove it" })]
    Exists {
        /// The target.
        to: PathBuf,
        /// Whether it appeared during the copy.
        during: bool,
    },
    /// `--to` is not a usable file path.
    #[error("--to {}: {problem}", to.display())]
    BadTarget {
        /// The target.
        to: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// SQLite could not open, read or copy the store, or the copy is not sound.
    #[error("{what}: {source}")]
    Sqlite {
        /// What depot was doing, naming the file.
        what: String,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The copy failed SQLite's check.
    #[error("the copy {} failed SQLite's check: {verdict}", copy.display())]
    Check {
        /// The copy.
        copy: PathBuf,
        /// `PRAGMA quick_check`'s answer.
        verdict: String,
    },
    /// A file operation on the copy failed.
    #[error("{what}: {source}")]
    Io {
        /// What depot was doing, naming the file.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> BackupError {
    move |source| BackupError::Io { what, source }
}

/// Copies the store in `data_dir` to `to`, which must not exist; its directory must.
pub fn backup(data_dir: &Path, to: &Path) -> Result<Backup, BackupError> {
    let started = Instant::now();
    let db = data_dir.join(DB_FILE);
    if !db.is_file() {
        return Err(BackupError::NoStore { db });
    }
    if fs::symlink_metadata(to).is_ok() {
        return Err(BackupError::Exists {
            to: to.to_path_buf(),
            during: false,
        });
    }
    let bad_target = |problem: String| BackupError::BadTarget {
        to: to.to_path_buf(),
        problem,
    };
    let name = to
        .file_name()
        .ok_or_else(|| bad_target("name a file, not a directory".into()))?;
    let dir = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(bad_target(format!(
            "the directory {} does not exist; create it first",
            dir.display()
        )));
    }
    let mut partial_name = std::ffi::OsString::from(".");
    partial_name.push(name);
    partial_name.push(format!(".partial-{}", std::process::id()));
    let partial = dir.join(partial_name);
    let remove_partial = || {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = partial.clone().into_os_string();
            p.push(suffix);
            let _ = fs::remove_file(p);
        }
    };
    remove_partial();
    let result = copy(&db, &partial).and_then(|(records, streams)| {
        place(&partial, to, &dir)?;
        Ok((records, streams))
    });
    remove_partial();
    let (records, streams) = result?;
    let bytes = fs::metadata(to).map(|m| m.len()).unwrap_or(0);
    Ok(Backup {
        path: to.to_path_buf(),
        bytes,
        records,
        streams,
        elapsed: started.elapsed(),
    })
}

/// `VACUUM INTO` `partial`, fsync it, and check it; returns its record and stream counts.
fn copy(db: &Path, partial: &Path) -> Result<(u64, u64), BackupError> {
    let fail = |what: &str, source: rusqlite::Error| BackupError::Sqlite {
        what: format!("{what} {}", db.display()),
        source,
    };
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| fail("cannot open", e))?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(|e| fail("cannot set up", e))?;
    let id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(|e| fail("cannot read", e))?;
    if id != APPLICATION_ID {
        return Err(BackupError::NotDepot {
            db: db.to_path_buf(),
            id,
        });
    }
    let target = partial.to_str().ok_or_else(|| BackupError::BadTarget {
        to: partial.to_path_buf(),
        problem: "SQLite needs a path that is valid UTF-8".into(),
    })?;
    conn.execute("VACUUM INTO ?1", [target])
        .map_err(|source| BackupError::Sqlite {
            what: format!("cannot copy {} to {target}", db.display()),
            source,
        })?;
    drop(conn);
    let synced = fs::File::open(partial).and_then(|f| {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // The copy holds every record: for its owner only, as the store is.
            f.set_permissions(fs::Permissions::from_mode(0o600))?;
        }
        f.sync_all()
    });
    synced.map_err(io(format!("cannot fsync the copy {target}")))?;
    check(partial)
}

/// Opens the copy and checks it is whole; returns its record and stream counts.
fn check(copy: &Path) -> Result<(u64, u64), BackupError> {
    let fail = |source: rusqlite::Error| BackupError::Sqlite {
        what: format!("the copy {} is not sound", copy.display()),
        source,
    };
    let conn = Connection::open_with_flags(
        copy,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(fail)?;
    let verdict: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(fail)?;
    if verdict != "ok" {
        return Err(BackupError::Check {
            copy: copy.to_path_buf(),
            verdict,
        });
    }
    let count = |sql: &str| {
        conn.query_row(sql, [], |r| r.get::<_, i64>(0))
            .map_err(fail)
    };
    let records = count("SELECT count(*) FROM records")?;
    let streams = count("SELECT count(*) FROM streams")?;
    Ok((records.max(0) as u64, streams.max(0) as u64))
}

/// Links `partial` to `to` (refusing an existing `to`) and makes the new name durable.
fn place(partial: &Path, to: &Path, dir: &Path) -> Result<(), BackupError> {
    match fs::hard_link(partial, to) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(BackupError::Exists {
                to: to.to_path_buf(),
                during: true,
            });
        }
        // A file system without hard links (FAT, some network shares): a rename, after a
        // last look for the target (a narrow race a hard link does not have).
        Err(_) if fs::symlink_metadata(to).is_err() => fs::rename(partial, to)
            .map_err(io(format!("cannot move the copy to {}", to.display())))?,
        Err(e) => return Err(io(format!("cannot create {}", to.display()))(e)),
    }
    #[cfg(unix)]
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("cannot fsync the directory {}", dir.display())))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
