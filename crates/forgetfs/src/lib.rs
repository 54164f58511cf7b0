//! forgetfs: a FUSE file system that forgets what was not fsynced, as a power cut does.
//!
//! ```no_run
//! # #[cfg(not(target_os = "linux"))] fn main() {}
//! # #[cfg(target_os = "linux")]
//! # fn main() -> Result<(), forgetfs::Error> {
//! use forgetfs::{Mount, Options};
//! let mount = Mount::new("backing".as_ref(), "mnt".as_ref(), &Options::default())?;
//! // … run the program under test on mnt/ …
//! let report = mount.cut(); // the power goes: unsynced writes, creates, renames are undone
//! println!("{report}");
//! mount.unmount()?; // then mount again to "boot"
//! # Ok(()) }
//! ```
//!
//! It passes every request through to a backing directory, but first keeps, for each file, the
//! bytes each write overwrites since the file's last `fsync`/`fdatasync` (and its size then),
//! and for each directory the entry changes since the directory's last `fsync`. A cut applies
//! those undo logs in reverse: see the `forget` module for exactly what is kept and what is
//! dropped. The research tool for this is LazyFS; this is the part of it that depot's tests need.
//!
//! What the kernel does itself, and this file system therefore carries without doing anything:
//! POSIX (`fcntl`) and `flock` locks (the mount does not ask for them, so the kernel keeps them
//! locally, across processes) and shared writable mappings (the page cache is used, not direct
//! I/O, and is kept across opens). `fallocate` is passed through and undone like a write.
//!
//! Linux only; mounting needs `/dev/fuse` and root (or `fusermount3` for other users).
#![warn(missing_docs)]
#![cfg(target_os = "linux")]

mod forget;
mod fs;
mod mount;

pub use forget::{CutReport, TEAR_BOUNDARY};
pub use mount::{Error, Mount, Options};
