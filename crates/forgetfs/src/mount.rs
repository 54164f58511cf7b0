//! [`Mount`]: mount a forgetting view of a backing directory, cut its power, unmount it.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use fuser::{BackgroundSession, Config, MountOption};

use crate::forget::CutReport;
use crate::fs::{ForgetFs, GRAVEYARD, Shared};

/// How to mount.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Options {
    /// At a cut, keep the newest unsynced write up to its first 4 KiB boundary instead of undoing
    /// all of it: a write torn by the power going off half-way.
    pub tear: bool,
}

impl Options {
    /// Sets [`Options::tear`].
    pub fn tear(mut self, tear: bool) -> Options {
        self.tear = tear;
        self
    }
}

/// Why a mount or an unmount failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The backing directory does not exist or is not a directory.
    Backing {
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The mount point does not exist, is not a directory, or is inside the backing directory.
    MountPoint {
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// Something is mounted there already.
    MountPointInUse {
        /// The path given.
        path: PathBuf,
    },
    /// The kernel refused the mount.
    Mount {
        /// The mount point.
        path: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },
    /// The unmount failed.
    Unmount {
        /// The mount point.
        path: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Backing { path, problem } => {
                write!(f, "backing directory {}: {problem}", path.display())
            }
            Error::MountPoint { path, problem } => {
                write!(f, "mount point {}: {problem}", path.display())
            }
            Error::MountPointInUse { path } => write!(
                f,
                "mount point {} is in use: something is mounted there already; unmount it \
                 (`fusermount3 -u {0}` or `umount {0}`) or choose another directory",
                path.display()
            ),
            Error::Mount { path, .. } => write!(
                f,
                "cannot mount a FUSE file system on {} (this needs /dev/fuse, and root or \
                 fusermount3)",
                path.display()
            ),
            Error::Unmount { path, .. } => write!(f, "cannot unmount {}", path.display()),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Mount { source, .. } | Error::Unmount { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A mounted forgetting file system. Dropping it unmounts it (lazily if it is busy).
#[derive(Debug)]
pub struct Mount {
    session: Option<BackgroundSession>,
    shared: Shared,
    mountpoint: PathBuf,
    options: Options,
}

impl Mount {
    /// Mounts a view of `backing` on `mountpoint`. Both must be existing directories, the mount
    /// point outside the backing directory and not a mount point already.
    pub fn new(backing: &Path, mountpoint: &Path, options: &Options) -> Result<Mount, Error> {
        let backing = canonical_dir(backing).map_err(|problem| Error::Backing {
            path: backing.to_path_buf(),
            problem,
        })?;
        let target = canonical_dir(mountpoint).map_err(|problem| Error::MountPoint {
            path: mountpoint.to_path_buf(),
            problem,
        })?;
        if target.starts_with(&backing) {
            return Err(Error::MountPoint {
                path: mountpoint.to_path_buf(),
                problem: format!(
                    "it is inside the backing directory {}; choose a mount point outside it",
                    backing.display()
                ),
            });
        }
        if is_mount_point(&target) {
            return Err(Error::MountPointInUse {
                path: mountpoint.to_path_buf(),
            });
        }
        let (fs, shared) = ForgetFs::new(&backing).map_err(|e| Error::Backing {
            path: backing.clone(),
            problem: format!("cannot set up {GRAVEYARD} in it: {e}"),
        })?;
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("forgetfs".into()),
            MountOption::Subtype("forgetfs".into()),
        ];
        // Every user may use it (a database server runs as its own user): fuser's own check
        // refuses other users' requests unless its ACL says so, whatever the mount options.
        config.acl = fuser::SessionACL::All;
        // Several threads: a slow request (a large write) need not hold up every reader.
        config.n_threads = Some(4);
        let session = fuser::spawn_mount(fs, &target, &config).map_err(|source| Error::Mount {
            path: target.clone(),
            source,
        })?;
        Ok(Mount {
            session: Some(session),
            shared,
            mountpoint: target,
            options: options.clone(),
        })
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Cuts the power: every change not made durable by `fsync` is undone in the backing
    /// directory, and every request from now on fails with `EIO`. Unmount and mount again to
    /// "boot".
    pub fn cut(&self) -> CutReport {
        self.shared.cut(self.options.tear)
    }

    /// Unmounts, waiting for the file system's threads — or, if a file on it is still open,
    /// detaches it (it ends when the last one is closed). Close every file this process opened
    /// on the mount first: the file system is served by this process, so a file of its own left
    /// open on a detached mount can hang the process at exit (its close waits for an answer that
    /// the process's own, already stopped, threads would have to give).
    pub fn unmount(mut self) -> Result<(), Error> {
        self.unmount_now()
    }

    fn unmount_now(&mut self) -> Result<(), Error> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        match session.umount_and_join() {
            Ok(()) => Ok(()),
            // Busy (a process still has a file open, as a killed one may for a moment): detach
            // it from the tree now; the kernel ends it once the last file is closed.
            Err(source) => {
                match nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH) {
                    Ok(()) => Ok(()),
                    Err(_) if !is_mount_point(&self.mountpoint) => Ok(()),
                    Err(_) => Err(Error::Unmount {
                        path: self.mountpoint.clone(),
                        source,
                    }),
                }
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.session.is_some() {
            // Never leave a mount behind, even when a test fails: lazily if it is busy.
            if self.unmount_now().is_err() && is_mount_point(&self.mountpoint) {
                let _ = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

fn canonical_dir(path: &Path) -> Result<PathBuf, String> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => path
            .canonicalize()
            .map_err(|e| format!("cannot resolve it: {e}")),
        Ok(_) => Err("not a directory".into()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err("does not exist; create it first".into())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Whether `path` (canonical) is a mount point, per /proc/self/mountinfo.
fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|field| Path::new(&unescape(field)) == path)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let digits: String = (0..3).filter_map(|_| chars.next()).collect();
            match u8::from_str_radix(&digits, 8) {
                Ok(b) => out.push(b as char),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&digits);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
