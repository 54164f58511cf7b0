//! `depot upgrade --binary PATH`: replace the installed depot service's binary, rolling back if
//! the new one does not come up.
//!
//! 1. The new binary must run (`--version`) before anything is touched.
//! 2. The service stops through its manager, which means a full drain: everything acknowledged is
//!    on disk before the old process exits.
//! 3. The old binary is kept beside the new one as `depot.old`; the new one is copied in (through
//!    a temporary file, fsynced, then renamed).
//! 4. The service starts; the upgrade waits for the new process's `/readyz` within the timeout.
//! 5. If the start fails, the process exits, or it is not ready in time, the old binary goes back
//!    and starts again, and the upgrade says why it rolled back, with what the service manager
//!    says (the exit status, the last lines of the log).
//!
//! systemd (Linux) only so far: `systemctl` is run directly rather than through
//! `winddown::service::systemd`'s helpers so that a test can stand a script in for it
//! (`--systemctl`, hidden), where systemd itself does not run.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use winddown::service::systemd::UnitStatus;

/// What to upgrade, and how.
#[derive(Debug, Clone)]
pub struct Upgrade {
    /// The new binary.
    pub binary: PathBuf,
    /// The installed binary the service runs (replaced; the old one is kept as `<it>.old`).
    pub installed: PathBuf,
    /// The service's data directory (where it says where it listens).
    pub data_dir: PathBuf,
    /// How long the new process may take to become ready.
    pub ready_timeout: Duration,
    /// The `systemctl` to use; `None`: `systemctl` on `PATH`, and only where systemd runs.
    pub systemctl: Option<PathBuf>,
}

const UNIT: &str = "depot.service";

/// Runs the upgrade; `Ok(0)` once the new binary serves, `Err` (with the reason) if nothing was
/// changed or it rolled back.
pub fn upgrade(u: &Upgrade) -> Result<i32, String> {
    if !cfg!(target_os = "linux") && u.systemctl.is_none() {
        return Err(
            "depot upgrade drives systemd (Linux) so far; elsewhere stop the service (it drains), \
             replace the binary keeping the old one, and start it (README: Running it in production)"
                .into(),
        );
    }
    let new_version = version(&u.binary).map_err(|e| {
        format!(
            "the new binary {} {e}; nothing was changed",
            u.binary.display()
        )
    })?;
    let same = std::fs::canonicalize(&u.binary).ok() == std::fs::canonicalize(&u.installed).ok();
    if same {
        return Err(format!(
            "{} is the installed binary itself; name the new one",
            u.binary.display()
        ));
    }
    // The service's data directory: systemd's StateDirectory= unless one was named.
    let data_dir = if u.systemctl.is_none() && u.data_dir == crate::config::default_data_dir() {
        PathBuf::from("/var/lib/depot")
    } else {
        u.data_dir.clone()
    };
    let u = &Upgrade {
        data_dir,
        ..u.clone()
    };
    let old_version = version(&u.installed).unwrap_or_else(|e| format!("unknown ({e})"));
    let manager = Systemctl::new(u.systemctl.clone())?;
    let status = manager.status()?;
    if !status.is_installed() {
        return Err(format!(
            "{UNIT} is not installed (`depot install` installs it); nothing was changed"
        ));
    }
    println!(
        "upgrading {} ({old_version}) to {} ({new_version})",
        u.installed.display(),
        u.binary.display()
    );

    println!("stopping {UNIT}: it drains first, so everything acknowledged is on disk…");
    let stop_started = Instant::now();
    manager.run(&["stop", UNIT])?;
    println!(
        "  stopped in {:.1} s; {}",
        stop_started.elapsed().as_secs_f64(),
        last_shutdown(&u.data_dir)
    );

    let old = with_suffix(&u.installed, ".old");
    swap_in(&u.binary, &u.installed, &old)?;
    println!(
        "  {} is in place; the old one is kept as {}",
        new_version,
        old.display()
    );

    let started = Instant::now();
    let outcome = manager
        .run(&["start", UNIT])
        .map_err(|e| format!("did not start: {e}"))
        .and_then(|_| wait_ready(&manager, &u.data_dir, u.ready_timeout));
    match outcome {
        Ok(addr) => {
            println!(
                "upgraded: {new_version} serves on http://{addr}, ready {:.1} s after the start",
                started.elapsed().as_secs_f64()
            );
            Ok(0)
        }
        Err(why) => Err(roll_back(u, &manager, &old, &why)),
    }
}

/// Puts the old binary back and starts it; returns the message explaining the rollback.
fn roll_back(u: &Upgrade, manager: &Systemctl, old: &Path, why: &str) -> String {
    let exit = manager
        .status()
        .ok()
        .and_then(|s| s.last_exit)
        .map(|e| format!(" (its process {e})"))
        .unwrap_or_default();
    let why = format!("{why}{exit}");
    println!("the new binary {why}; rolling back");
    // What the manager says, with the log's last lines (systemctl status exits 3 for a stopped
    // unit: its text is wanted all the same).
    let said = manager.output(&["status", UNIT, "--no-pager", "--lines", "20"]);
    let _ = manager.run(&["stop", UNIT]);
    let restored = std::fs::rename(old, &u.installed)
        .map_err(|e| {
            format!(
                "cannot put {} back as {}: {e}; do it by hand, then `depot start`",
                old.display(),
                u.installed.display()
            )
        })
        .and_then(|()| manager.run(&["start", UNIT]).map(drop))
        .and_then(|()| wait_ready(manager, &u.data_dir, u.ready_timeout));
    let after = match restored {
        Ok(addr) => format!("the old binary is back in place and serves on http://{addr}"),
        Err(e) => format!("the old binary is back in place but did not come up either: {e}"),
    };
    format!(
        "upgrade rolled back: the new binary {why}; {after}.\nthe service manager said:\n{}",
        said.trim_end()
    )
}

/// `<binary> --version`'s answer (`depot 0.1.0`), within 10 s.
fn version(binary: &Path) -> Result<String, String> {
    let mut child = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot be run: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("did not answer --version within 10 s".into());
            }
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("cannot be run: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() {
        return Err(format!(
            "failed --version ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if !text.starts_with("depot ") {
        return Err(format!("is not depot: --version says {text:?}"));
    }
    Ok(text)
}

/// `<path><suffix>`.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Copies `new` beside `installed` (fsynced, executable), moves `installed` to `old` and the copy
/// to `installed`, and fsyncs the directory.
fn swap_in(new: &Path, installed: &Path, old: &Path) -> Result<(), String> {
    let temp = with_suffix(installed, ".new");
    let copy = || -> std::io::Result<()> {
        std::fs::copy(new, &temp)?;
        let file = std::fs::File::open(&temp)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o755))?;
        }
        file.sync_all()
    };
    copy().map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        format!(
            "cannot copy {} to {}: {e}; the old binary is unchanged, start it with `depot start`",
            new.display(),
            temp.display()
        )
    })?;
    std::fs::rename(installed, old).map_err(|e| {
        format!(
            "cannot keep the old binary as {}: {e}; start it with `depot start`",
            old.display()
        )
    })?;
    if let Err(e) = std::fs::rename(&temp, installed) {
        let _ = std::fs::rename(old, installed);
        return Err(format!(
            "cannot move the new binary into place: {e}; the old one is back, start it with \
             `depot start`"
        ));
    }
    #[cfg(unix)]
    if let Some(dir) = installed.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Waits until the service's main process is the depot that wrote `depot.running.json` and its
/// `/readyz` answers 200; fails at once if the service is no longer running.
fn wait_ready(manager: &Systemctl, data_dir: &Path, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let status = manager.status()?;
        if matches!(status.active_state.as_str(), "failed" | "inactive") {
            return Err(match status.last_exit {
                Some(exit) => format!("exited ({exit})"),
                None => format!("stopped ({}, {})", status.active_state, status.result),
            });
        }
        if let (Some(pid), Some((running_pid, addr))) = (status.main_pid, running(data_dir))
            && pid == running_pid
            && readyz(&addr) == Some(200)
        {
            return Ok(addr);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "was not ready within {:.0} s",
                timeout.as_secs_f64()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The PID and address the running depot announced in its run file.
fn running(data_dir: &Path) -> Option<(u32, String)> {
    let run = crate::app::instance(data_dir).run_info()?;
    let mut addr: std::net::SocketAddr = run.listen?.parse().ok()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Some((run.pid, addr.to_string()))
}

/// `GET /readyz`'s status code. A bare HTTP/1.0 request by hand: one status line from depot's own
/// server does not warrant an HTTP client in the binary.
fn readyz(addr: &str) -> Option<u16> {
    let addr: std::net::SocketAddr = addr.parse().ok()?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /readyz HTTP/1.0\r\nHost: depot\r\n\r\n")
        .ok()?;
    let mut head = [0u8; 32];
    let n = stream.read(&mut head).ok()?;
    let line = std::str::from_utf8(&head[..n]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The last shutdown, in a few words, from its report.
fn last_shutdown(data_dir: &Path) -> String {
    match crate::app::instance(data_dir).last_shutdown() {
        Ok(Some(r)) => format!(
            "its drain: {} in {:.3} s",
            r.outcome.as_str(),
            r.duration.as_secs_f64()
        ),
        Ok(None) => "no shutdown report in the data directory".into(),
        Err(e) => format!("its shutdown report cannot be read: {e}"),
    }
}

/// `systemctl`, run directly.
struct Systemctl {
    program: PathBuf,
}

impl Systemctl {
    fn new(custom: Option<PathBuf>) -> Result<Self, String> {
        // The library's test of "systemd runs here" (`sd_booted(3)`), skipped for a stand-in.
        if custom.is_none() && !winddown::service::systemd::SystemdOptions::new().systemd_runs() {
            return Err(
                "systemd does not run here (/run/systemd/system is missing); depot upgrade \
                 upgrades the depot service systemd runs"
                    .into(),
            );
        }
        Ok(Systemctl {
            program: custom.unwrap_or_else(|| PathBuf::from("systemctl")),
        })
    }

    /// Runs `systemctl args…`; its stdout, or an error with its stderr.
    fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "`systemctl {}` failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                stdout.trim()
            ))
        }
    }

    /// Runs `systemctl args…`; what it printed, whatever its exit status.
    fn output(&self, args: &[&str]) -> String {
        match Command::new(&self.program)
            .args(args)
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("cannot run {}: {e}", self.program.display()),
        }
    }

    fn status(&self) -> Result<UnitStatus, String> {
        let text = self.run(&[
            "show",
            UNIT,
            "--property",
            "LoadState,ActiveState,SubState,MainPID,StateChangeTimestamp,ExecMainExitTimestamp,\
             ExecMainCode,ExecMainStatus,Result",
        ])?;
        Ok(UnitStatus::parse(UNIT, &text))
    }
}
