//! PROGRAM as a child process: start it in a tree of its own, ask it to stop, kill the whole tree,
//! learn its exit code. The portable seam; each platform's half is in `unix.rs` / `windows.rs`.
//!
//! - Unix: PROGRAM leads a process group of its own (the terminal's Ctrl+C reaches the wrapper
//!   only, which decides); stop signals go to that group. On Linux the wrapper is a child
//!   subreaper, so what PROGRAM's children leave behind is re-parented to the wrapper and killed
//!   with the tree; every child is reaped here (also as PID 1, like tini).
//! - Windows: PROGRAM gets a console of its own (`CREATE_NEW_CONSOLE`) so that console events can
//!   be sent to it alone, and runs in a job object that kills the tree when the wrapper's handle
//!   closes — even when the wrapper crashes.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;

use tokio::sync::watch;

use crate::cli::StopSignal;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as sys;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as sys;

/// What to start.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cwd: Option<PathBuf>,
    /// Pipe stdout and stderr to the wrapper (for the log files) instead of passing them through.
    pub(crate) capture: bool,
}

/// PROGRAM's output pipes, when captured.
pub(crate) type Pipe = Box<dyn io::Read + Send>;

/// A started PROGRAM.
#[derive(Debug)]
pub(crate) struct Child {
    pid: u32,
    exit: watch::Receiver<Option<i32>>,
    tree: sys::Tree,
}

/// Why PROGRAM could not be started, in words a person can act on.
#[derive(Debug)]
pub(crate) struct SpawnError(pub(crate) String);

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpawnError {}

impl Child {
    /// Starts PROGRAM in a tree of its own. Call inside the runtime (the Unix reaper is a task).
    pub(crate) fn spawn(spec: &Spec) -> Result<(Child, Option<Pipe>, Option<Pipe>), SpawnError> {
        let (tx, rx) = watch::channel(None);
        let (pid, tree, out, err) = sys::spawn(spec, tx).map_err(|e| describe(spec, &e))?;
        Ok((
            Child {
                pid,
                exit: rx,
                tree,
            },
            out,
            err,
        ))
    }

    /// PROGRAM's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal` to PROGRAM (its process group / its console / its windows).
    pub(crate) fn signal(&self, signal: StopSignal) -> io::Result<()> {
        self.tree.signal(signal)
    }

    /// Kills every process of the tree, PROGRAM included; returns how many were alive.
    pub(crate) async fn kill_tree(&self) -> usize {
        self.tree.kill().await
    }

    /// PROGRAM's exit code, once it has exited (Unix: 128+N when signal N killed it).
    pub(crate) fn exit_code(&self) -> Option<i32> {
        *self.exit.borrow()
    }

    /// Waits for PROGRAM to exit and returns its exit code.
    ///
    /// # Cancellation safety
    /// Cancel-safe: it only watches.
    pub(crate) async fn exited(&self) -> i32 {
        let mut exit = self.exit.clone();
        match exit.wait_for(Option::is_some).await {
            Ok(code) => code.unwrap_or(-1),
            // The reaper is gone only with the runtime.
            Err(_) => self.exit_code().unwrap_or(-1),
        }
    }
}

/// A spawn error, named: PROGRAM not found, not executable, the working directory missing.
fn describe(spec: &Spec, e: &io::Error) -> SpawnError {
    let program = spec.program.to_string_lossy();
    if let Some(cwd) = &spec.cwd
        && !cwd.is_dir()
    {
        return SpawnError(format!(
            "cannot start `{program}`: the working directory {} (--cwd) does not exist or is not a directory",
            cwd.display()
        ));
    }
    // A path names one file: PATH is not searched, so it is no help to mention it.
    let is_path = std::path::Path::new(&spec.program).components().count() > 1;
    SpawnError(match e.kind() {
        io::ErrorKind::NotFound if is_path => {
            format!("cannot start `{program}`: no such program (no file at that path)")
        }
        io::ErrorKind::NotFound => format!(
            "cannot start `{program}`: no such program (give a path, or put it on PATH: {})",
            std::env::var("PATH").unwrap_or_default()
        ),
        io::ErrorKind::PermissionDenied => format!(
            "cannot start `{program}`: permission denied (is it executable? `chmod +x` it, or check the directory's permissions)"
        ),
        _ => format!("cannot start `{program}`: {e}"),
    })
}
