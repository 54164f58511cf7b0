//! Replacing an installed service's binary, with a rollback: the procedure projects otherwise
//! hand-roll as "rename to .old" scripts, through any [`ServiceManager`].
//!
//! 1. The new binary must run (`--version`, within 10 s) before anything is touched.
//! 2. The service stops through its manager: a full drain, so everything acknowledged is on disk
//!    before the old process exits (the manager's progress goes to the caller).
//! 3. The old binary is kept beside it as `<installed>.old` (`depot.old`, `depot.exe.old`); the
//!    new one is copied in through a temporary file that is fsynced and renamed into place, and
//!    the directory is fsynced.
//! 4. The service starts; the caller's probe says when the new process is ready (depot's
//!    `/readyz`, or only the manager's `running` for a program that reports readiness itself),
//!    within a timeout.
//! 5. If the start fails, the process exits, or it is not ready in time, the old binary goes back
//!    and starts again, and [`UpgradeError::RolledBack`] says why: the manager's account of the
//!    service (its exit code), its recent log, and the last lines of a log file the caller names.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Progress, ServiceError, ServiceManager, State, Status};

/// How long the new binary may take to answer `--version`.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);
/// How often readiness is asked.
const POLL: Duration = Duration::from_millis(100);
/// How many lines of a log go into a rollback's reason.
const LOG_LINES: usize = 20;

/// What to upgrade.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Upgrade {
    /// The service's name under its manager.
    pub name: String,
    /// The binary the service runs (replaced; the old one is kept as `<it>.old`).
    pub installed: PathBuf,
    /// The new binary.
    pub binary: PathBuf,
    /// What the new binary's `--version` must start with (`"depot "`); `None`: any answer.
    pub version_prefix: Option<String>,
    /// How long the stop may follow the drain where the manager lets the caller wait.
    pub stop_timeout: Duration,
    /// How long the new process may take to become ready.
    pub ready_timeout: Duration,
    /// A log file whose last lines explain a rollback (the SCM keeps no log of a service's own).
    pub log: Option<PathBuf>,
}

impl Upgrade {
    /// Upgrade service `name`, which runs `installed`, to `binary`: a 5-minute stop, 60 s to be
    /// ready, no version prefix, no log file.
    pub fn new(
        name: impl Into<String>,
        installed: impl Into<PathBuf>,
        binary: impl Into<PathBuf>,
    ) -> Self {
        Upgrade {
            name: name.into(),
            installed: installed.into(),
            binary: binary.into(),
            version_prefix: None,
            stop_timeout: Duration::from_secs(300),
            ready_timeout: Duration::from_secs(60),
            log: None,
        }
    }

    /// Sets what `--version` must start with.
    #[must_use]
    pub fn version_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.version_prefix = Some(prefix.into());
        self
    }

    /// Sets the stop timeout.
    #[must_use]
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Sets the readiness timeout.
    #[must_use]
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Names the log file quoted in a rollback's reason.
    #[must_use]
    pub fn log(mut self, log: impl Into<PathBuf>) -> Self {
        self.log = Some(log.into());
        self
    }

    /// Where the old binary is kept: `<installed>.old`.
    pub fn old(&self) -> PathBuf {
        with_suffix(&self.installed, ".old")
    }
}

/// The readiness probe: given the service's status while the manager says it runs, `Some(what)`
/// once the new process serves (`what` for a person: "serves on http://…"), `None` to ask again.
pub type Probe<'a> = &'a mut dyn FnMut(&Status) -> Option<String>;

/// What a successful upgrade did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Upgraded {
    /// The old binary's `--version` (or why it is unknown).
    pub old_version: String,
    /// The new binary's `--version`.
    pub new_version: String,
    /// Where the old binary is kept.
    pub old: PathBuf,
    /// How long the stop (the drain) took.
    pub stopped_in: Duration,
    /// How long the new process took from its start to ready.
    pub ready_in: Duration,
    /// What the probe said.
    pub ready: String,
}

/// Why an upgrade did not happen, or was undone.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradeError {
    /// The new binary does not run, or is not the expected program; nothing was changed.
    #[error("the new binary {} {reason}; nothing was changed", binary.display())]
    NewBinary {
        /// The new binary.
        binary: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The new binary is the installed one.
    #[error("{} is the installed binary itself; name the new one", binary.display())]
    SameBinary {
        /// The binary named.
        binary: PathBuf,
    },
    /// The service is not installed under this manager; nothing was changed.
    #[error("service {name} is not installed under {manager}; nothing was changed")]
    NotInstalled {
        /// The service's name.
        name: String,
        /// The manager.
        manager: &'static str,
    },
    /// The manager failed before anything was swapped (the old binary is untouched).
    #[error("cannot {action} service {name}; the old binary is unchanged")]
    Manager {
        /// The service's name.
        name: String,
        /// What was asked.
        action: &'static str,
        /// The manager's error.
        #[source]
        source: Box<ServiceError>,
    },
    /// The stop returned with the service still running; nothing was swapped.
    #[error("service {name} is still {state} after the stop; nothing was swapped: {detail}")]
    StillRunning {
        /// The service's name.
        name: String,
        /// Where it is.
        state: State,
        /// The manager's account of it.
        detail: String,
    },
    /// The binaries could not be swapped; `restored` says where the old one is.
    #[error("cannot {action} {}: {restored}; start the service again", path.display())]
    Swap {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Where that left the old binary.
        restored: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The new binary did not come up: the old one was put back and started again.
    #[error(
        "upgrade rolled back: the new binary {reason}; {after}.\nthe service manager said: {said}{}",
        if log.is_empty() { String::new() } else { format!("\nthe log's last lines:\n{log}") }
    )]
    RolledBack {
        /// Why: did not start, exited, was not ready in time.
        reason: String,
        /// What the manager said about the failed run (its exit code), and its recent log.
        said: String,
        /// The last lines of the log file the caller named.
        log: String,
        /// Whether the old binary serves again.
        after: String,
        /// Whether the old binary came back up.
        restored: bool,
        /// The manager's error, when the start itself failed.
        #[source]
        source: Option<Box<ServiceError>>,
    },
}

/// Runs the upgrade of `plan` through `manager`; `probe` says when a started process is ready,
/// `progress` receives the steps and the manager's progress lines.
///
/// # Errors
/// [`UpgradeError`]: nothing was changed, or the upgrade was rolled back (see its variants).
pub fn upgrade(
    manager: &dyn ServiceManager,
    plan: &Upgrade,
    probe: Probe<'_>,
    progress: Progress<'_>,
) -> Result<Upgraded, UpgradeError> {
    let new_version = version(&plan.binary, plan.version_prefix.as_deref()).map_err(|reason| {
        UpgradeError::NewBinary {
            binary: plan.binary.clone(),
            reason,
        }
    })?;
    if std::fs::canonicalize(&plan.binary).ok() == std::fs::canonicalize(&plan.installed).ok() {
        return Err(UpgradeError::SameBinary {
            binary: plan.binary.clone(),
        });
    }
    let name = &plan.name;
    let manager_error = |action, source| UpgradeError::Manager {
        name: name.clone(),
        action,
        source: Box::new(source),
    };
    let status = manager.status(name).map_err(|e| manager_error("read", e))?;
    if status.state == State::NotInstalled {
        return Err(UpgradeError::NotInstalled {
            name: name.clone(),
            manager: manager.manager(),
        });
    }
    let old_version = version(&plan.installed, None).unwrap_or_else(|e| format!("unknown ({e})"));
    progress(&format!(
        "upgrading {} ({old_version}) to {} ({new_version})",
        plan.installed.display(),
        plan.binary.display()
    ));

    progress(&format!(
        "stopping {name}: it drains first, so everything acknowledged is on disk"
    ));
    let stop_started = Instant::now();
    let stopped = manager
        .stop(name, plan.stop_timeout, progress)
        .map_err(|e| manager_error("stop", e))?;
    let stopped_in = stop_started.elapsed();
    if matches!(
        stopped.state,
        State::Running | State::Stopping | State::Starting
    ) {
        return Err(UpgradeError::StillRunning {
            name: name.clone(),
            state: stopped.state.clone(),
            detail: stopped.to_string(),
        });
    }
    progress(&format!("stopped in {:.1} s", stopped_in.as_secs_f64()));

    let old = plan.old();
    swap_in(&plan.binary, &plan.installed, &old)?;
    progress(&format!(
        "{new_version} is in place; the old binary is kept as {}",
        old.display()
    ));

    let started = Instant::now();
    match start_and_wait(manager, plan, probe, progress) {
        Ok(ready) => Ok(Upgraded {
            old_version,
            new_version,
            old,
            stopped_in,
            ready_in: started.elapsed(),
            ready,
        }),
        Err((reason, source)) => Err(roll_back(manager, plan, probe, progress, reason, source)),
    }
}

/// Starts the service and waits for the probe; the reason and the manager's error on failure.
fn start_and_wait(
    manager: &dyn ServiceManager,
    plan: &Upgrade,
    probe: Probe<'_>,
    progress: Progress<'_>,
) -> Result<String, (String, Option<Box<ServiceError>>)> {
    manager.start(&plan.name, progress).map_err(|e| {
        (
            format!("did not start: {}", crate::error_chain(&e)),
            Some(Box::new(e)),
        )
    })?;
    wait_ready(manager, &plan.name, plan.ready_timeout, probe).map_err(|why| (why, None))
}

/// Polls the status until the probe says ready; fails at once once the service is no longer
/// running, and at the timeout.
fn wait_ready(
    manager: &dyn ServiceManager,
    name: &str,
    timeout: Duration,
    probe: Probe<'_>,
) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let status = manager
            .status(name)
            .map_err(|e| format!("cannot be read: {}", crate::error_chain(&e)))?;
        match status.state {
            State::Running => {
                if let Some(ready) = probe(&status) {
                    return Ok(ready);
                }
            }
            State::Starting => {}
            _ => return Err(format!("exited ({status})")),
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "was not ready within {:.0} s",
                timeout.as_secs_f64()
            ));
        }
        std::thread::sleep(POLL);
    }
}

/// Puts the old binary back and starts it; the error that says why.
fn roll_back(
    manager: &dyn ServiceManager,
    plan: &Upgrade,
    probe: Probe<'_>,
    progress: Progress<'_>,
    reason: String,
    source: Option<Box<ServiceError>>,
) -> UpgradeError {
    let name = &plan.name;
    progress(&format!("the new binary {reason}; rolling back"));
    // What the manager says about the failed run, before the stop below changes it.
    let mut said = match manager.status(name) {
        Ok(status) => status.to_string(),
        Err(e) => format!("(its status cannot be read: {})", crate::error_chain(&e)),
    };
    if let Some(recent) = manager.recent_log(name, LOG_LINES) {
        said = format!("{said}\n{}", recent.trim_end());
    }
    let log = plan
        .log
        .as_deref()
        .map(|p| last_lines(p, LOG_LINES))
        .unwrap_or_default();
    if let Err(e) = manager.stop(name, plan.stop_timeout, progress) {
        progress(&format!(
            "stopping the new binary failed ({}); putting the old one back anyway",
            crate::error_chain(&e)
        ));
    }
    let old = plan.old();
    let restored = std::fs::rename(&old, &plan.installed)
        .map_err(|e| {
            format!(
                "cannot put {} back as {}: {e}; do it by hand, then start the service",
                old.display(),
                plan.installed.display()
            )
        })
        .and_then(|()| {
            sync_dir(&plan.installed);
            start_and_wait(manager, plan, probe, progress).map_err(|(why, _)| why)
        });
    let (after, restored) = match restored {
        Ok(ready) => (format!("the old binary is back in place and {ready}"), true),
        Err(e) => (
            format!("the old binary is back in place but did not come up either: {e}"),
            false,
        ),
    };
    UpgradeError::RolledBack {
        reason,
        said,
        log,
        after,
        restored,
        source,
    }
}

/// `<binary> --version`'s answer, within 10 seconds; it must start with `prefix`.
pub fn version(binary: &Path, prefix: Option<&str>) -> Result<String, String> {
    let mut child = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot be run: {e}"))?;
    let deadline = Instant::now() + VERSION_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "did not answer --version within {} s",
                    VERSION_TIMEOUT.as_secs()
                ));
            }
        }
    };
    let read = |pipe: Option<&mut dyn std::io::Read>| {
        let mut text = String::new();
        if let Some(pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text.trim().to_owned()
    };
    let stdout = read(child.stdout.as_mut().map(|p| p as &mut dyn std::io::Read));
    let stderr = read(child.stderr.as_mut().map(|p| p as &mut dyn std::io::Read));
    if !status.success() {
        return Err(format!("failed --version ({status}): {stderr}"));
    }
    if let Some(prefix) = prefix
        && !stdout.starts_with(prefix)
    {
        return Err(format!(
            "is not {}: --version says {stdout:?}",
            prefix.trim()
        ));
    }
    Ok(stdout)
}

/// `<path><suffix>`.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Copies `new` beside `installed` (fsynced, executable), moves `installed` to `old` and the copy
/// to `installed`, and fsyncs the directory.
fn swap_in(new: &Path, installed: &Path, old: &Path) -> Result<(), UpgradeError> {
    let temp = with_suffix(installed, ".new");
    let copy = || -> std::io::Result<()> {
        std::fs::copy(new, &temp)?;
        let file = std::fs::OpenOptions::new().write(true).open(&temp)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o755))?;
        }
        file.sync_all()
    };
    copy().map_err(|source| {
        let _ = std::fs::remove_file(&temp);
        UpgradeError::Swap {
            action: "copy the new binary to",
            path: temp.clone(),
            restored: "the old binary is unchanged",
            source,
        }
    })?;
    std::fs::rename(installed, old).map_err(|source| {
        let _ = std::fs::remove_file(&temp);
        UpgradeError::Swap {
            action: "keep the old binary as",
            path: old.to_owned(),
            restored: "the old binary is unchanged",
            source,
        }
    })?;
    if let Err(source) = std::fs::rename(&temp, installed) {
        let back = std::fs::rename(old, installed).is_ok();
        return Err(UpgradeError::Swap {
            action: "move the new binary to",
            path: installed.to_owned(),
            restored: if back {
                "the old binary is back in place"
            } else {
                "the old binary is still kept as <installed>.old: move it back by hand"
            },
            source,
        });
    }
    sync_dir(installed);
    Ok(())
}

/// fsyncs the directory holding `path`, so the renames survive a power cut (Unix; NTFS journals
/// its metadata).
fn sync_dir(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// The last `n` lines of a text file (at most its last 64 KiB are read), or why it cannot be read.
fn last_lines(path: &Path, n: usize) -> String {
    use std::io::{Seek, SeekFrom};
    let read = || -> std::io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("({} cannot be read: {e})", path.display()),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn executable(path: &Path, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn the_version_check_names_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        executable(&good, "#!/bin/sh\necho 'depot 1.2.3'\n");
        assert_eq!(version(&good, Some("depot ")).unwrap(), "depot 1.2.3");
        assert!(
            version(&good, Some("other "))
                .unwrap_err()
                .contains("is not other: --version says \"depot 1.2.3\"")
        );
        let failing = dir.path().join("failing");
        executable(&failing, "#!/bin/sh\necho nope >&2\nexit 2\n");
        let err = version(&failing, None).unwrap_err();
        assert!(
            err.contains("failed --version") && err.contains("nope"),
            "{err}"
        );
        let err = version(&dir.path().join("missing"), None).unwrap_err();
        assert!(err.starts_with("cannot be run"), "{err}");
    }

    #[test]
    fn the_swap_keeps_the_old_binary_and_a_log_tail_is_its_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (new, installed) = (dir.path().join("new"), dir.path().join("svc"));
        std::fs::write(&new, "new").unwrap();
        std::fs::write(&installed, "old").unwrap();
        let old = with_suffix(&installed, ".old");
        swap_in(&new, &installed, &old).unwrap();
        assert_eq!(std::fs::read_to_string(&installed).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(&old).unwrap(), "old");
        assert!(!with_suffix(&installed, ".new").exists());
        // A new binary that cannot be read leaves everything as it was.
        let err = swap_in(&dir.path().join("missing"), &installed, &old).unwrap_err();
        assert!(
            err.to_string().contains("the old binary is unchanged"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&installed).unwrap(), "new");

        let log = dir.path().join("log");
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        let tail = last_lines(&log, 3);
        assert_eq!(tail, "line 28\nline 29\nline 30");
        assert!(last_lines(&dir.path().join("none"), 3).contains("cannot be read"));
    }
}
