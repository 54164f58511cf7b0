//! Helpers shared by the store's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Command;

use depot::store::{Ack, AppendRequest, Appended, Store, StoreOptions, UnixMillis};
use winddown::commit::Sink;

pub fn request(stream: &str, payloads: &[&str], key: Option<&str>) -> AppendRequest {
    AppendRequest {
        stream: stream.to_owned(),
        payloads: payloads.iter().map(|p| (*p).to_owned()).collect(),
        idempotency_key: key.map(str::to_owned),
        received_at: UnixMillis(1_700_000_000_000),
    }
}

pub fn open(dir: &Path) -> Store {
    Store::open(dir, &StoreOptions::default()).expect("open store")
}

/// Commits a batch through the `Sink` trait, as the group committer does.
pub fn commit<S: Sink>(sink: &mut S, batch: &[S::Item]) -> Result<Vec<S::Ack>, S::Error> {
    sink.commit(batch)
}

pub fn appended(ack: &Ack) -> Appended {
    ack.clone().expect("request accepted")
}

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
}

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

impl Drop for Mount {
    fn drop(&mut self) {
        let plain = Command::new("umount").arg(&self.path).status();
        if !matches!(plain, Ok(s) if s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Prints why a test that needs root did nothing.
pub fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why} (this test needs root to mount file systems)");
}

/// An error with its sources, as a log line would show it.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
