//! What has not been made durable yet, kept as undo logs, and the cut that applies them.
//!
//! The model is the worst that an ordinary journaled file system may do at a power cut, as POSIX
//! allows it:
//!
//! - A file's contents and size are durable up to its last `fsync`/`fdatasync`. Every write,
//!   truncation or `fallocate` since then is undone: the bytes it overwrote are written back (in
//!   reverse order) and the size returns to what it was at the last sync.
//! - A directory entry change (create, `mkdir`, unlink, `rmdir`, rename) is durable once the
//!   directory it changed was fsynced — for a rename, the *destination* directory. Until then it is
//!   undone: a created file disappears (with its contents, even if they were fsynced), an unlinked
//!   one comes back, a renamed one goes back to its old name (and the file it replaced comes back).
//! - Nothing else is rolled back: permissions, owners and times stay as they are.
//!
//! Writes go straight through to the backing directory; each one first copies the bytes it is
//! about to overwrite into the log (only the bytes below the last synced size: everything above it
//! goes when the size is restored). Unlinked files are moved to a hidden graveyard instead of
//! being deleted, so that they can come back.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The page size at which `tear` cuts the last write.
pub const TEAR_BOUNDARY: u64 = 4096;

/// What a cut dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CutReport {
    /// Files whose contents or size were rolled back.
    pub files_rolled_back: usize,
    /// Unsynced writes, truncations and `fallocate`s undone.
    pub writes_undone: usize,
    /// Bytes written back over unsynced writes (bytes past the synced size are cut off instead).
    pub bytes_restored: u64,
    /// Directory entry changes undone (creates, unlinks, renames).
    pub entries_undone: usize,
    /// Undo steps that failed (named, with the error): the state after the cut may be partial.
    pub failures: Vec<String>,
    /// With `tear`: the file offset range of the last write that was kept, if one was torn.
    pub torn: Option<(u64, u64)>,
}

impl std::fmt::Display for CutReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} unsynced writes in {} files undone ({} bytes restored), {} directory entry \
             changes undone",
            self.writes_undone, self.files_rolled_back, self.bytes_restored, self.entries_undone
        )?;
        if let Some((from, to)) = self.torn {
            write!(f, ", last write torn: bytes {from}..{to} kept")?;
        }
        if !self.failures.is_empty() {
            write!(
                f,
                "; {} undo steps FAILED: {}",
                self.failures.len(),
                self.failures.join("; ")
            )?;
        }
        Ok(())
    }
}

/// One unsynced change to a file's bytes.
#[derive(Debug)]
struct Undo {
    /// Order among every change of the mount (the newest write is the one a tear cuts).
    seq: u64,
    offset: u64,
    /// The bytes that were there before, up to the synced size.
    old: Vec<u8>,
    /// A write of this many bytes (0 for a truncation or `fallocate`).
    written: u64,
}

/// The unsynced changes of one file since its last sync.
#[derive(Debug)]
struct FileLog {
    /// A read-write descriptor of the file, which follows it through renames and unlinks.
    file: Arc<File>,
    synced_len: u64,
    undo: Vec<Undo>,
}

/// One unsynced directory entry change.
#[derive(Debug)]
enum DirChange {
    Created {
        path: PathBuf,
    },
    Removed {
        path: PathBuf,
        grave: PathBuf,
    },
    Renamed {
        from: PathBuf,
        to: PathBuf,
        replaced: Option<PathBuf>,
    },
}

/// Every unsynced change of a mount.
#[derive(Debug)]
pub(crate) struct Forgetting {
    seq: u64,
    files: HashMap<u64, FileLog>,
    /// In order; each with the directory (inode) whose fsync makes it durable.
    dir_changes: Vec<(u64, DirChange)>,
    graveyard: PathBuf,
    graves: u64,
}

impl Forgetting {
    pub(crate) fn new(graveyard: PathBuf) -> Forgetting {
        Forgetting {
            seq: 0,
            files: HashMap::new(),
            dir_changes: Vec::new(),
            graveyard,
            graves: 0,
        }
    }

    fn log(&mut self, ino: u64, file: &Arc<File>) -> io::Result<&mut FileLog> {
        Ok(match self.files.entry(ino) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(FileLog {
                file: file.clone(),
                synced_len: file.metadata()?.len(),
                undo: Vec::new(),
            }),
        })
    }

    /// Records what `len` bytes at `offset` hold now, before they are changed.
    fn save(
        &mut self,
        ino: u64,
        file: &Arc<File>,
        offset: u64,
        len: u64,
        written: u64,
    ) -> io::Result<()> {
        self.seq += 1;
        let seq = self.seq;
        let log = self.log(ino, file)?;
        let now = log.file.metadata()?.len();
        let end = (offset + len).min(now).min(log.synced_len);
        let mut old = vec![0u8; end.saturating_sub(offset) as usize];
        log.file.read_exact_at(&mut old, offset)?;
        log.undo.push(Undo {
            seq,
            offset,
            old,
            written,
        });
        Ok(())
    }

    /// To be called (under the mount's lock) right before `file` (inode `ino`) gets `len` bytes
    /// written at `offset`.
    pub(crate) fn before_write(
        &mut self,
        ino: u64,
        file: &Arc<File>,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        self.save(ino, file, offset, len, len)
    }

    /// Right before `file` is truncated or extended to `new_len`.
    pub(crate) fn before_set_len(
        &mut self,
        ino: u64,
        file: &Arc<File>,
        new_len: u64,
    ) -> io::Result<()> {
        let now = file.metadata()?.len();
        self.save(ino, file, new_len, now.saturating_sub(new_len), 0)
    }

    /// Right before the bytes in `offset..offset+len` change other than by a write (a punched
    /// hole, a zeroed range) or the size grows (`fallocate`).
    pub(crate) fn before_range_change(
        &mut self,
        ino: u64,
        file: &Arc<File>,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        self.save(ino, file, offset, len, 0)
    }

    /// `fsync`/`fdatasync` of inode `ino`: its contents and size are durable.
    pub(crate) fn file_synced(&mut self, ino: u64) {
        self.files.remove(&ino);
    }

    /// A fresh path in the graveyard, for a file that is being unlinked or replaced.
    pub(crate) fn grave(&mut self) -> PathBuf {
        self.graves += 1;
        self.graveyard.join(self.graves.to_string())
    }

    pub(crate) fn created(&mut self, dir: u64, path: PathBuf) {
        self.dir_changes.push((dir, DirChange::Created { path }));
    }

    pub(crate) fn removed(&mut self, dir: u64, path: PathBuf, grave: PathBuf) {
        self.dir_changes
            .push((dir, DirChange::Removed { path, grave }));
    }

    pub(crate) fn renamed(
        &mut self,
        to_dir: u64,
        from: PathBuf,
        to: PathBuf,
        replaced: Option<PathBuf>,
    ) {
        self.dir_changes
            .push((to_dir, DirChange::Renamed { from, to, replaced }));
    }

    /// `fsync` of directory `dir`: its entry changes are durable. The files it removed for good
    /// leave the graveyard.
    pub(crate) fn dir_synced(&mut self, dir: u64) {
        self.dir_changes.retain(|(d, change)| {
            if *d != dir {
                return true;
            }
            match change {
                DirChange::Removed { grave, .. }
                | DirChange::Renamed {
                    replaced: Some(grave),
                    ..
                } => remove_any(grave),
                _ => {}
            }
            false
        });
    }

    /// The power cut: undoes every unsynced change, newest first, and empties the graveyard.
    /// With `tear`, the newest write of all survives up to its first 4 KiB boundary.
    pub(crate) fn cut(&mut self, tear: bool) -> CutReport {
        let mut report = CutReport::default();
        let mut failed = |what: String, e: io::Error| report_failure(&mut report.failures, what, e);

        // The torn write: its bytes up to the first page boundary inside it, read before the undo.
        let mut kept: Option<(Arc<File>, u64, Vec<u8>)> = None;
        if tear
            && let Some(log) = self
                .files
                .values()
                .max_by_key(|l| l.undo.last().map_or(0, |u| u.seq))
            && let Some(last) = log.undo.last()
            && last.written > 0
        {
            let boundary = (last.offset / TEAR_BOUNDARY + 1) * TEAR_BOUNDARY;
            if boundary < last.offset + last.written {
                let mut bytes = vec![0u8; (boundary - last.offset) as usize];
                match log.file.read_exact_at(&mut bytes, last.offset) {
                    Ok(()) => kept = Some((log.file.clone(), last.offset, bytes)),
                    Err(e) => failed(format!("read the write to tear at {}", last.offset), e),
                }
            }
        }

        for (ino, log) in self.files.drain() {
            report.files_rolled_back += 1;
            for undo in log.undo.iter().rev() {
                report.writes_undone += 1;
                report.bytes_restored += undo.old.len() as u64;
                if let Err(e) = log.file.write_all_at(&undo.old, undo.offset) {
                    failed(
                        format!(
                            "inode {ino}: write back {} bytes at {}",
                            undo.old.len(),
                            undo.offset
                        ),
                        e,
                    );
                }
            }
            if let Err(e) = log.file.set_len(log.synced_len) {
                failed(
                    format!("inode {ino}: restore the size {}", log.synced_len),
                    e,
                );
            }
        }
        if let Some((file, offset, bytes)) = kept {
            match file.write_all_at(&bytes, offset) {
                Ok(()) => report.torn = Some((offset, offset + bytes.len() as u64)),
                Err(e) => failed(format!("keep the torn write at {offset}"), e),
            }
        }

        for (_, change) in self.dir_changes.drain(..).rev() {
            report.entries_undone += 1;
            let undone = match &change {
                DirChange::Created { path } => remove_tree(path),
                DirChange::Removed { path, grave } => fs::rename(grave, path),
                DirChange::Renamed { from, to, replaced } => fs::rename(to, from).and_then(|()| {
                    replaced
                        .as_ref()
                        .map_or(Ok(()), |grave| fs::rename(grave, to))
                }),
            };
            match undone {
                // A later change that was made durable may have moved the entry on already.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => failed(format!("undo {change:?}"), e),
                Ok(()) => {}
            }
        }
        if let Err(e) = empty_dir(&self.graveyard) {
            failed(
                format!("empty the graveyard {}", self.graveyard.display()),
                e,
            );
        }
        report
    }
}

fn report_failure(failures: &mut Vec<String>, what: String, e: io::Error) {
    failures.push(format!("{what}: {e}"));
}

fn remove_any(path: &Path) {
    let _ = remove_tree(path);
}

fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    }
}

/// Removes everything inside `dir` (creating it if missing).
pub(crate) fn empty_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    for entry in fs::read_dir(dir)? {
        remove_tree(&entry?.path())?;
    }
    Ok(())
}
