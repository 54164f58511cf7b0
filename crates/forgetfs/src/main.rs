//! `forgetfs BACKING MOUNTPOINT [--tear]`: mounts a view of BACKING on MOUNTPOINT that forgets
//! everything not fsynced when it gets SIGUSR1 (a power cut: the backing directory is rolled back
//! to its last synced state and every later request fails with EIO). SIGINT or SIGTERM unmounts
//! and exits. Run it again on the same BACKING to "boot".

use std::process::ExitCode;

#[cfg(not(target_os = "linux"))]
fn main() -> ExitCode {
    eprintln!("forgetfs: runs on Linux only (FUSE)");
    ExitCode::from(2)
}

#[cfg(target_os = "linux")]
use std::path::PathBuf;

#[cfg(target_os = "linux")]
use tokio::signal::unix::{SignalKind, signal};

#[cfg(target_os = "linux")]
fn usage() -> ExitCode {
    eprintln!(
        "usage: forgetfs BACKING MOUNTPOINT [--tear]\n\
         \n\
         Mounts BACKING on MOUNTPOINT. `kill -USR1` cuts the power (unsynced writes, creates,\n\
         renames and unlinks are undone; with --tear the newest write survives up to its first\n\
         4 KiB boundary); `kill -TERM` or Ctrl+C unmounts."
    );
    ExitCode::from(2)
}

#[cfg(target_os = "linux")]
fn main() -> ExitCode {
    let mut paths = Vec::new();
    let mut tear = false;
    for arg in std::env::args_os().skip(1) {
        match arg.to_str() {
            Some("--tear") => tear = true,
            Some("-h" | "--help") => return usage(),
            Some(flag) if flag.starts_with('-') => {
                eprintln!("forgetfs: unknown option {flag}");
                return usage();
            }
            _ => paths.push(PathBuf::from(arg)),
        }
    }
    let [backing, mountpoint] = paths.as_slice() else {
        return usage();
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("forgetfs: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        let (mut usr1, mut term, mut int) = match (
            signal(SignalKind::user_defined1()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(a), Ok(b), Ok(c)) => (a, b, c),
            _ => {
                eprintln!("forgetfs: cannot listen for signals");
                return ExitCode::from(2);
            }
        };
        let mount = match forgetfs::Mount::new(backing, mountpoint, &forgetfs::Options::default().tear(tear)) {
            Ok(mount) => mount,
            Err(e) => {
                eprintln!("forgetfs: {}", error_chain(&e));
                return ExitCode::from(1);
            }
        };
        eprintln!(
            "forgetfs: {} mounted on {} (pid {}); kill -USR1 to cut the power, kill -TERM to unmount",
            backing.display(),
            mount.mountpoint().display(),
            std::process::id()
        );
        loop {
            tokio::select! {
                _ = usr1.recv() => eprintln!("forgetfs: power cut: {}", mount.cut()),
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        match mount.unmount() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("forgetfs: {} (detached it instead)", error_chain(&e));
                ExitCode::from(1)
            }
        }
    })
}

/// An error and its sources on one line.
#[cfg(target_os = "linux")]
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
