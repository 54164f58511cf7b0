//! The data directory's files: their paths, the clean-shutdown marker, and making a change to
//! the directory durable. A leaf: every other store module may use it, it uses none of them.

#[cfg(unix)]
use std::fs::File;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{CLEAN_SHUTDOWN_FILE, DB_FILE, LOCK_FILE, StoreError};

/// The paths of one data directory.
#[derive(Debug)]
pub(super) struct Paths {
    pub(super) dir: PathBuf,
    pub(super) db: PathBuf,
    pub(super) wal: PathBuf,
    pub(super) marker: PathBuf,
    pub(super) lock: PathBuf,
}

impl Paths {
    pub(super) fn new(dir: &Path) -> Paths {
        Paths {
            dir: dir.to_path_buf(),
            db: dir.join(DB_FILE),
            wal: dir.join(format!("{DB_FILE}-wal")),
            marker: dir.join(CLEAN_SHUTDOWN_FILE),
            lock: dir.join(LOCK_FILE),
        }
    }
}

/// Creates and fsyncs the clean-shutdown marker, then fsyncs the directory.
pub(super) fn write_clean_marker(paths: &Paths) -> Result<(), StoreError> {
    let marker = &paths.marker;
    let io = |e| StoreError::io(marker, e);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(marker)
        .map_err(io)?;
    file.write_all(b"depot closed this store cleanly\n")
        .map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    sync_dir(&paths.dir)
}

/// Makes a create, rename or unlink in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io(dir, e))
    }
    // Windows cannot open a directory as a file without FILE_FLAG_BACKUP_SEMANTICS; NTFS
    // journals directory entries itself.
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}
