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

/// Copies the store in `data_dir` to `to`, which must not exist; its directory must.
pub fn backup(data_dir: &Path, to: &Path) -> Result<Backup, String> {
    let started = Instant::now();
    let db = data_dir.join(DB_FILE);
    if !db.is_file() {
        return Err(format!(
            "no depot store at {}: is --data-dir (or data_dir in the config) the running depot's?",
            db.display()
        ));
    }
    if fs::symlink_metadata(to).is_ok() {
        return Err(format!(
            "{} exists: depot backup never overwrites; choose a new path or remove it",
            to.display()
        ));
    }
    let name = to
        .file_name()
        .ok_or_else(|| format!("--to {}: name a file, not a directory", to.display()))?;
    let dir = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "--to {}: the directory {} does not exist; create it first",
            to.display(),
            dir.display()
        ));
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
fn copy(db: &Path, partial: &Path) -> Result<(u64, u64), String> {
    let fail = |what: &str, e: rusqlite::Error| format!("{what} {}: {e}", db.display());
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
        return Err(format!(
            "{} is not a depot store (application_id {id:#x}); nothing was copied",
            db.display()
        ));
    }
    let target = partial.to_str().ok_or_else(|| {
        format!(
            "--to {}: SQLite needs a path that is valid UTF-8",
            partial.display()
        )
    })?;
    conn.execute("VACUUM INTO ?1", [target])
        .map_err(|e| format!("cannot copy {} to {target}: {e}", db.display()))?;
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
    synced.map_err(|e| format!("cannot fsync the copy {target}: {e}"))?;
    check(partial)
}

/// Opens the copy and checks it is whole; returns its record and stream counts.
fn check(copy: &Path) -> Result<(u64, u64), String> {
    let fail = |e: rusqlite::Error| format!("the copy {} is not sound: {e}", copy.display());
    let conn = Connection::open_with_flags(
        copy,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(fail)?;
    let verdict: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(fail)?;
    if verdict != "ok" {
        return Err(format!(
            "the copy {} failed SQLite's check: {verdict}",
            copy.display()
        ));
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
fn place(partial: &Path, to: &Path, dir: &Path) -> Result<(), String> {
    match fs::hard_link(partial, to) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(format!(
                "{} appeared while the backup ran: depot backup never overwrites",
                to.display()
            ));
        }
        // A file system without hard links (FAT, some network shares): a rename, after a
        // last look for the target (a narrow race a hard link does not have).
        Err(_) if fs::symlink_metadata(to).is_err() => fs::rename(partial, to)
            .map_err(|e| format!("cannot move the copy to {}: {e}", to.display()))?,
        Err(e) => return Err(format!("cannot create {}: {e}", to.display())),
    }
    #[cfg(unix)]
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot fsync the directory {}: {e}", dir.display()))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
