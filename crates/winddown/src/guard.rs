//! Guards that a crash must not leave behind: the single-instance lock and the temp area.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Why a [`LockFile`] could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "another instance is running: {path} is locked{}; stop that instance first, or give this \
         one a different data directory",
        pid.map(|p| format!(" by PID {p}")).unwrap_or_default()
    )]
    Held {
        /// The lock file.
        path: PathBuf,
        /// The holder's process id, as it wrote it (absent if it could not be read).
        pid: Option<u32>,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot use the lock file {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// A single-instance lock: an OS advisory lock on a file, so that a crashed holder frees it
/// without anyone cleaning up. The holder's PID is written into the file for the message a second
/// instance prints, and for [`LockFile::holder`].
///
/// On Unix the lock is `flock` on the whole file. On Windows it is `LockFileEx` on one byte far
/// past the PID (byte 2⁶²): Windows locks are mandatory for the bytes they cover, so
/// a lock over the whole file (what `File::try_lock` takes) would stop every other handle from
/// reading the PID, and `holder` would find a running instance but not its PID. A lock over the
/// whole file taken by an older version still excludes this one, and the other way round.
///
/// The file is never deleted: deleting a lock file lets a waiter lock a file that is no longer
/// the one at that path.
#[derive(Debug)]
pub struct LockFile {
    file: File,
    path: PathBuf,
}

impl LockFile {
    /// Takes the lock at `path` at once, or fails naming the PID that holds it.
    pub fn acquire(path: impl Into<PathBuf>) -> Result<Self, LockError> {
        let path = path.into();
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path).map_err(io)?;
        if !try_lock(&file).map_err(io)? {
            return Err(LockError::Held {
                pid: read_pid(&path),
                path,
            });
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(LockFile { file, path })
    }

    /// The PID written in the lock file at `path`, if a process holds it now.
    pub fn holder(path: impl AsRef<Path>) -> Option<u32> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path.as_ref())
            .ok()?;
        match try_lock(&file) {
            Ok(true) => {
                unlock(&file); // nobody holds it: release the probe
                None
            }
            Ok(false) => read_pid(path.as_ref()),
            Err(_) => None,
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Releases the lock (what dropping it does, spelled out for a drain phase).
    pub fn release(self) {
        drop(self)
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        unlock(&self.file);
    }
}

/// The byte of the lock file that the Windows lock covers: far past the PID, so that the PID can
/// be read while the lock is held (below `i64::MAX`, as `NtLockFile`'s signed offset wants).
#[cfg(windows)]
const WINDOWS_LOCK_OFFSET: u64 = 1 << 62;

/// Takes the lock at once: `Ok(false)` if another handle holds it.
fn try_lock(file: &File) -> std::io::Result<bool> {
    #[cfg(windows)]
    {
        crate::sys::windows::try_lock_byte(file, WINDOWS_LOCK_OFFSET)
    }
    #[cfg(not(windows))]
    {
        match file.try_lock() {
            Ok(()) => Ok(true),
            Err(fs::TryLockError::WouldBlock) => Ok(false),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// Releases what [`try_lock`] took (closing the handle would too, but later on Windows).
fn unlock(file: &File) {
    #[cfg(windows)]
    let _ = crate::sys::windows::unlock_byte(file, WINDOWS_LOCK_OFFSET);
    #[cfg(not(windows))]
    let _ = file.unlock();
}

fn read_pid(path: &Path) -> Option<u32> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// A directory for temporary files that a crash may leave behind: swept when it is opened (what
/// the last run left) and removed on release.
///
/// It only ever sweeps a directory that it created itself (marked with a `.winddown-temp` file),
/// so a mistyped path cannot empty someone's home directory.
#[derive(Debug)]
pub struct TempArea {
    path: PathBuf,
    swept: usize,
    released: bool,
}

const TEMP_MARKER: &str = ".winddown-temp";

impl TempArea {
    /// Opens the temp area at `path`, removing whatever a previous run left in it.
    pub fn open(path: impl Into<PathBuf>) -> std::io::Result<Self> {
        let path = path.into();
        let mut swept = 0;
        if path.exists() {
            if !path.join(TEMP_MARKER).exists() && fs::read_dir(&path)?.next().is_some() {
                return Err(std::io::Error::other(format!(
                    "{} is not empty and was not created as a temp area (no {TEMP_MARKER} file); \
                     refusing to sweep it — choose an empty or new directory",
                    path.display()
                )));
            }
            for entry in fs::read_dir(&path)? {
                let entry = entry?;
                if entry.file_name() == TEMP_MARKER {
                    continue;
                }
                if entry.file_type()?.is_dir() {
                    fs::remove_dir_all(entry.path())?;
                } else {
                    fs::remove_file(entry.path())?;
                }
                swept += 1;
            }
        }
        fs::create_dir_all(&path)?;
        File::create(path.join(TEMP_MARKER))?;
        if swept > 0 {
            tracing::info!(path = %path.display(), swept, "temp area: removed what the last run left");
        }
        Ok(TempArea {
            path,
            swept,
            released: false,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many entries the last run left (swept at open).
    pub fn swept(&self) -> usize {
        self.swept
    }

    /// Removes the directory and everything in it.
    pub fn release(mut self) -> std::io::Result<()> {
        self.released = true;
        remove_dir_if_present(&self.path)
    }
}

impl Drop for TempArea {
    fn drop(&mut self) {
        if !self.released {
            let _ = remove_dir_if_present(&self.path);
        }
    }
}

fn remove_dir_if_present(path: &Path) -> std::io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_naming_the_holder_and_frees_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.lock");
        let first = LockFile::acquire(&path).unwrap();
        assert_eq!(LockFile::holder(&path), Some(std::process::id()));
        match LockFile::acquire(&path) {
            Err(e @ LockError::Held { pid: Some(pid), .. }) => {
                assert_eq!(pid, std::process::id());
                assert!(e.to_string().contains(&path.display().to_string()), "{e}");
            }
            other => panic!("expected Held, got {other:?}"),
        }
        first.release();
        assert_eq!(LockFile::holder(&path), None);
        LockFile::acquire(&path).unwrap();
    }

    #[test]
    fn temp_area_sweeps_leftovers_and_refuses_foreign_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        let area = TempArea::open(&tmp).unwrap();
        fs::write(area.path().join("half-written"), b"x").unwrap();
        fs::create_dir(area.path().join("upload-1")).unwrap();
        std::mem::forget(area); // a crash: nothing cleans up
        let area = TempArea::open(&tmp).unwrap();
        assert_eq!(area.swept(), 2);
        area.release().unwrap();
        assert!(!tmp.exists());

        let foreign = dir.path().join("home");
        fs::create_dir(&foreign).unwrap();
        fs::write(foreign.join("precious"), b"x").unwrap();
        assert!(TempArea::open(&foreign).is_err());
        assert!(foreign.join("precious").exists());
    }
}
