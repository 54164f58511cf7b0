//! File systems mounted for a test (a size-limited tmpfs for a full disk, a read-only bind, an
//! ext4 image to abort): included by `common` (the store tests) and `e2e/support.rs`.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mount made for a test; unmounted (lazily if busy) when dropped.
pub struct Mount {
    pub path: PathBuf,
}

impl Mount {
    /// Runs `mount args…`; `Err` holds mount's complaint (not root, no CAP_SYS_ADMIN, …).
    pub fn new(path: &Path, args: &[&str]) -> Result<Mount, String> {
        run_mount(args)?;
        Ok(Mount {
            path: path.to_path_buf(),
        })
    }

    /// A tmpfs of `size` (`"3m"`) on the existing directory `path`: a disk that fills up.
    pub fn tmpfs(path: &Path, size: &str) -> Result<Mount, String> {
        let path_s = path.to_str().expect("a UTF-8 test path");
        let size = format!("size={size}");
        Mount::new(path, &["-t", "tmpfs", "-o", &size, "tmpfs", path_s])
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let plain = Command::new("umount").arg(&self.path).status();
        if !matches!(plain, Ok(s) if s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Runs `mount args…`; `Err` holds mount's complaint.
pub fn run_mount(args: &[&str]) -> Result<(), String> {
    let out = Command::new("mount")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mount {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Prints why a test that needs root (mounts) did nothing.
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why} (this test needs root and mount(8))");
}
