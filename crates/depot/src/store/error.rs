//! [`StoreError`]: why the store could not open, read or make a batch durable.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::ffi::ErrorCode;

/// The underlying cause of a [`StoreError`] (an SQLite or OS error), kept for
/// [`std::error::Error::source`]. Shared so that [`StoreError`] is `Clone`.
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

fn cause(err: impl std::error::Error + Send + Sync + 'static) -> Cause {
    Arc::new(err)
}

/// A cause that is only a description.
pub(crate) fn note(text: &str) -> Cause {
    Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(text))
}

/// Why the store failed. None of these acknowledges anything: a batch whose commit returned an
/// error is not on disk as far as any submitter may assume.
///
/// Every message names the file and what to do about it; the cause is in [`source()`] and not
/// repeated in the message.
///
/// [`source()`]: std::error::Error::source
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file system is full (SQLITE_FULL, ENOSPC, EDQUOT). The transaction was rolled back and
    /// the store is unchanged; writes succeed again once space is freed.
    #[error(
        "the disk holding {path} is full: nothing in this batch was stored; \
         free space on that file system and retry"
    )]
    DiskFull {
        /// The file being written.
        path: PathBuf,
        /// The SQLite or OS error.
        #[source]
        source: Option<Cause>,
    },

    /// The file or its file system is read-only (SQLITE_READONLY*, EROFS).
    #[error(
        "{path} is read-only: depot needs to write its data directory; \
         remount the file system read-write or fix the file's permissions"
    )]
    ReadOnly {
        /// The read-only file or directory.
        path: PathBuf,
        /// The SQLite or OS error, if there was one.
        #[source]
        source: Option<Cause>,
    },

    /// The file is not a depot database: not SQLite at all (SQLITE_NOTADB), or SQLite written by
    /// another application. The file was not modified.
    #[error(
        "{path} is not a depot database ({reason}); point depot at its own data directory, \
         or move this file away to start an empty depot there"
    )]
    NotADepotDatabase {
        /// The foreign file.
        path: PathBuf,
        /// What gave it away.
        reason: Foreign,
        /// The SQLite error, if there was one.
        #[source]
        source: Option<Cause>,
    },

    /// A depot database written with a schema version this build does not understand.
    #[error(
        "{path} has depot schema version {found}, this build understands version {supported}; \
         run a depot release that matches the data"
    )]
    UnsupportedSchema {
        /// The database file.
        path: PathBuf,
        /// The `user_version` found in the file.
        found: i32,
        /// The version this build writes.
        supported: i32,
    },

    /// The database is damaged (SQLITE_CORRUPT, or a consistency check failed).
    #[error(
        "{path} is corrupt ({detail}); stop depot, keep a copy of the data directory, \
         and restore from a backup (or salvage with `sqlite3 {path} .recover`)"
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What was found to be wrong.
        detail: String,
        /// The SQLite error, if there was one.
        #[source]
        source: Option<Cause>,
    },

    /// An I/O error (SQLITE_IOERR*, a failed fsync). A failure while committing leaves the store in
    /// a state it cannot vouch for: the writer is poisoned.
    #[error(
        "I/O error on {path}: the store stopped accepting writes; check the disk \
         (kernel log, SMART), then restart depot, which recovers from its write-ahead log"
    )]
    Io {
        /// The file being accessed.
        path: PathBuf,
        /// The SQLite or OS error.
        #[source]
        source: Cause,
    },

    /// The data directory or database could not be opened (missing, not a directory, no
    /// permission).
    #[error(
        "cannot open {path}: make sure the data directory exists and is readable and writable \
         by the user depot runs as"
    )]
    CannotOpen {
        /// What could not be opened.
        path: PathBuf,
        /// The SQLite or OS error.
        #[source]
        source: Cause,
    },

    /// Another process holds the data directory's lock.
    #[error(
        "another depot is running on this data directory: {path} is locked{}; stop it \
         (`depot stop`) or choose another data directory",
        pid.map(|p| format!(" by PID {p}")).unwrap_or_default()
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The holder's PID, as it wrote it in the lock file.
        pid: Option<u32>,
    },

    /// SQLite could not get a lock within the busy timeout (SQLITE_BUSY / SQLITE_LOCKED). Nothing
    /// was written.
    #[error(
        "{path} stayed busy past the timeout: another connection holds a lock on it; \
         retry, and look for other processes using the file"
    )]
    Busy {
        /// The database file.
        path: PathBuf,
        /// The SQLite error, if there was one.
        #[source]
        source: Option<Cause>,
    },

    /// The file system cannot host the store as configured (for example WAL mode refused).
    #[error(
        "{path}: {detail}; put the data directory on a local file system that supports \
         SQLite's WAL mode (shared memory and POSIX locks)"
    )]
    Unsupported {
        /// The database file.
        path: PathBuf,
        /// What was refused.
        detail: String,
    },

    /// An earlier failure left the store in a state it cannot vouch for; it refuses writes.
    #[error(
        "the store at {path} refuses writes after an earlier failure; restart depot, \
         which recovers from the write-ahead log"
    )]
    Poisoned {
        /// The database file.
        path: PathBuf,
        /// The failure that poisoned the writer.
        #[source]
        source: Arc<StoreError>,
    },

    /// The store was closed.
    #[error("the store at {path} is closed: no reads or writes are possible any more")]
    Closed {
        /// The database file.
        path: PathBuf,
    },

    /// Any other SQLite failure (a bug, or a limit such as SQLITE_TOOBIG). During a commit, the
    /// writer confirmed the transaction was rolled back before returning this.
    #[error(
        "unexpected SQLite failure on {path}: nothing in this batch was stored; \
         please report this with the cause below"
    )]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        #[source]
        source: Cause,
    },
}

/// What showed that a file is not a depot database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Foreign {
    /// SQLite does not recognise the file (SQLITE_NOTADB).
    #[error("not an SQLite database")]
    NotSqlite,
    /// An SQLite database stamped with another application id.
    #[error("SQLite database with application_id {0:#010x}, depot's is {app:#010x}", app = super::APPLICATION_ID)]
    ApplicationId(i32),
    /// An SQLite database with tables but no application id: some other program's data.
    #[error("SQLite database of another application: it has tables but no application_id")]
    Unmarked,
}

impl StoreError {
    /// Whether this failure leaves the store in a state it can no longer vouch for. This is what
    /// the depot writer's [`Sink::poisons`](winddown::commit::Sink::poisons) answers.
    ///
    /// - `DiskFull`, `ReadOnly`, `Busy`, `Sqlite`: **no**. The batch's transaction was rolled back
    ///   (the writer checks this; a failed rollback is reported as `Poisoned` instead), so the
    ///   store holds exactly what it held before, and a later batch may succeed. Verified on a
    ///   full tmpfs in `tests/store_disk_full.rs` (the same writer commits again once space is
    ///   freed, nothing of the failed batch is visible, sequences stay contiguous) and for
    ///   SQLITE_READONLY in `tests/store_basic.rs`.
    /// - `Io`, `Corrupt`, `Poisoned`, `Closed`, and anything else: **yes**. An I/O error while
    ///   committing (a failed fsync in particular) leaves unknown what reached the disk: the WAL
    ///   may hold the batch's frames, and the next open may or may not recover them. The writer
    ///   refuses all later batches (`tests/store_fsync_failure.rs`, a real failed fsync).
    pub fn poisons(&self) -> bool {
        !matches!(
            self,
            StoreError::DiskFull { .. }
                | StoreError::ReadOnly { .. }
                | StoreError::Busy { .. }
                | StoreError::Sqlite { .. }
        )
    }

    /// Classifies an SQLite error on `path`.
    pub(crate) fn sqlite(path: &Path, err: rusqlite::Error) -> StoreError {
        let path = path.to_path_buf();
        let Some(code) = err.sqlite_error_code() else {
            return StoreError::Sqlite {
                path,
                source: cause(err),
            };
        };
        match code {
            ErrorCode::DiskFull => StoreError::DiskFull {
                path,
                source: Some(cause(err)),
            },
            ErrorCode::ReadOnly => StoreError::ReadOnly {
                path,
                source: Some(cause(err)),
            },
            ErrorCode::NotADatabase => StoreError::NotADepotDatabase {
                path,
                reason: Foreign::NotSqlite,
                source: Some(cause(err)),
            },
            ErrorCode::DatabaseCorrupt => StoreError::Corrupt {
                path,
                detail: "SQLite reports a malformed database image".into(),
                source: Some(cause(err)),
            },
            ErrorCode::SystemIoFailure => StoreError::Io {
                path,
                source: cause(err),
            },
            ErrorCode::CannotOpen | ErrorCode::PermissionDenied => StoreError::CannotOpen {
                path,
                source: cause(err),
            },
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreError::Busy {
                path,
                source: Some(cause(err)),
            },
            _ => StoreError::Sqlite {
                path,
                source: cause(err),
            },
        }
    }

    /// SQLite reports a write the OS refused with `EROFS` as a plain I/O error: when a commit's
    /// write to the write-ahead log failed (`SQLITE_IOERR_WRITE`) and the file system holding
    /// `dir` refuses writes now (a mount made read-only, ext4 turning read-only after a disk
    /// error), this turns the [`Io`](StoreError::Io) into [`ReadOnly`](StoreError::ReadOnly)
    /// naming `dir`, keeping the I/O error as its source, and returns `true`: nothing of the batch
    /// is stored (a failed write means its commit frame never reached the log, so recovery
    /// ignores the frames before it), but the caller must still poison the writer. A file system
    /// that refuses some writes may take others — an aborted ext4 refuses appends yet takes
    /// overwrites into its page cache — and a writer that goes on (retrying commits, running
    /// checkpoints, restarting the log) can leave acknowledged records only in pages that never
    /// reach the disk: depot's tests lost acknowledged records that way before the writer was
    /// poisoned here.
    ///
    /// A failed **fsync** stays [`Io`](StoreError::Io) even on a read-only file system: the
    /// commit frame was written before the sync failed, so it may be on disk and the batch may
    /// reappear at the next start (seen with `mount -o remount,abort` in depot's tests).
    pub(crate) fn on_read_only_fs(self, dir: &Path) -> (StoreError, bool) {
        let failed_write = match &self {
            StoreError::Io { source, .. } => source
                .downcast_ref::<rusqlite::Error>()
                .and_then(rusqlite::Error::sqlite_error)
                .is_some_and(|e| e.extended_code == rusqlite::ffi::SQLITE_IOERR_WRITE),
            _ => false,
        };
        if failed_write && fs_is_read_only(dir) {
            let read_only = StoreError::ReadOnly {
                path: dir.to_path_buf(),
                source: Some(Arc::new(self)),
            };
            (read_only, true)
        } else {
            (self, false)
        }
    }

    /// Classifies an OS error on `path` (the lock file, the marker, a directory fsync).
    pub(crate) fn io(path: &Path, err: io::Error) -> StoreError {
        let path = path.to_path_buf();
        match err.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => StoreError::DiskFull {
                path,
                source: Some(cause(err)),
            },
            io::ErrorKind::ReadOnlyFilesystem => StoreError::ReadOnly {
                path,
                source: Some(cause(err)),
            },
            io::ErrorKind::NotFound
            | io::ErrorKind::PermissionDenied
            | io::ErrorKind::NotADirectory => StoreError::CannotOpen {
                path,
                source: cause(err),
            },
            _ => StoreError::Io {
                path,
                source: cause(err),
            },
        }
    }
}

/// Whether the file system holding `dir` refuses writes now: mounted read-only (`statvfs`), or
/// refusing to create a file with `EROFS` — ext4's emergency read-only state (`errors=remount-ro`,
/// `mount -o remount,abort`) does not show in the mount flags.
fn fs_is_read_only(dir: &Path) -> bool {
    #[cfg(unix)]
    {
        use nix::sys::statvfs::{FsFlags, statvfs};
        if statvfs(dir).is_ok_and(|s| s.flags().contains(FsFlags::ST_RDONLY)) {
            return true;
        }
    }
    let probe = dir.join(".depot-write-probe");
    match std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)
    {
        Ok(file) => {
            drop(file);
            let _ = std::fs::remove_file(&probe);
            false
        }
        Err(e) => e.kind() == io::ErrorKind::ReadOnlyFilesystem,
    }
}
