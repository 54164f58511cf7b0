//! `depot upgrade --binary PATH`: replace the installed depot service's binary, rolling back if
//! the new one does not come up — a caller of [`winddown::service::upgrade`], which does the
//! procedure through the service manager (systemd, the SCM, launchd): version check, stop (the
//! drain), keep `depot.old` (`depot.exe.old`), swap, start, roll back with the reason.
//!
//! What is depot's own: readiness is the new process's `/readyz`, found through the run file it
//! writes (and only once that run file is the manager's main process's); the data directory is
//! the service's (systemd's `StateDirectory=`, `%ProgramData%\depot`); the log a rollback quotes
//! is the journal under systemd, `depot.log` in the data directory under the SCM.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use winddown::service::upgrade::{self as procedure, UpgradeError};
use winddown::service::{self, ServiceManager, Status};

use crate::manage::SERVICE_NAME;

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
    /// The `systemctl` to use; `None`: the manager of this system.
    pub systemctl: Option<PathBuf>,
}

/// Runs the upgrade; `Ok(0)` once the new binary serves, `Err` (with the reason) if nothing was
/// changed or it rolled back.
pub fn upgrade(u: &Upgrade) -> Result<i32, String> {
    let defaulted = u.data_dir == crate::config::default_data_dir();
    // The service's data directory, where `depot install` put it unless one was named.
    let data_dir = match (&u.systemctl, defaulted) {
        (None, true) if cfg!(target_os = "linux") => PathBuf::from("/var/lib/depot"),
        (None, true) if cfg!(windows) => std::env::var_os("ProgramData")
            .map(|d| PathBuf::from(d).join("depot"))
            .unwrap_or_else(|| u.data_dir.clone()),
        _ => u.data_dir.clone(),
    };
    let manager: Box<dyn ServiceManager> = match &u.systemctl {
        Some(program) => Box::new(service::Systemd::with_systemctl(program)),
        None => service::native(),
    };
    let mut plan = procedure::Upgrade::new(SERVICE_NAME, &u.installed, &u.binary)
        .version_prefix("depot ")
        .ready_timeout(u.ready_timeout);
    if cfg!(windows) {
        plan = plan.log(data_dir.join(crate::app::files::SERVICE_LOG));
    }
    let mut probe = |status: &Status| {
        let (pid, addr) = running(&data_dir)?;
        (status.pid == Some(pid) && readyz(&addr) == Some(200))
            .then(|| format!("serves on http://{addr}"))
    };
    let mut show = |line: &str| println!("  {line}");
    match procedure::upgrade(manager.as_ref(), &plan, &mut probe, &mut show) {
        Ok(done) => {
            // The report is the old binary's: the new one has not stopped yet.
            println!(
                "  the old binary's last shutdown: {}",
                last_shutdown(&data_dir)
            );
            println!(
                "upgraded: {} {}, ready {:.1} s after the start (the drain took {:.1} s); the \
                 old binary is kept as {}",
                done.new_version,
                done.ready,
                done.ready_in.as_secs_f64(),
                done.stopped_in.as_secs_f64(),
                done.old.display()
            );
            Ok(0)
        }
        Err(e @ UpgradeError::RolledBack { .. }) => Err(e.to_string()),
        Err(e) => Err(winddown::error_chain(&e)),
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
