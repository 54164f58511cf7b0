//! The systemd host: the `Type=notify` protocol over `$NOTIFY_SOCKET`.
//!
//! [`run`](super::run) uses it when `$NOTIFY_SOCKET` is set. The console's stop sources still
//! apply — systemd stops a service with `SIGTERM` — and this host tells systemd what is going on:
//!
//! | when | datagram |
//! |---|---|
//! | [`Host::status`] | `STATUS=<line>` |
//! | [`Host::ready`] | `READY=1`, `MAINPID=<pid>`, `STATUS=serving` |
//! | the drain starts | `STOPPING=1`, `STATUS=stopping (SIGTERM): 30.0 s budget`, `EXTEND_TIMEOUT_USEC=<budget + margin>` |
//! | a phase starts, and every tick (500 ms) while it runs | `STATUS=stopping (SIGTERM): phase 3/4 flush "flush journal": 40% flushed, 2.1 s left`, `EXTEND_TIMEOUT_USEC=<phase's time left + margin>` |
//! | a phase ends | `EXTEND_TIMEOUT_USEC=<margin>` |
//! | the drain ends | `STATUS=stopped: clean in 3.42 s (SIGTERM, exit code 0)`, `EXTEND_TIMEOUT_USEC=<margin>` |
//! | every half of `$WATCHDOG_USEC` | `WATCHDOG=1` (see [`SystemdHooks::start_watchdog`]) |
//!
//! # Extending the stop timeout
//! systemd sends `SIGKILL` `TimeoutStopSec` after `SIGTERM`. On `EXTEND_TIMEOUT_USEC=<n>` it moves
//! that deadline to *now + n* if that is later — never earlier — so the message only counts once
//! the original timeout would have passed, and must be re-sent within each `n`. The process cannot
//! see `TimeoutStopSec`, so this host sends the extension on every progress report of the drain,
//! with `n` = the running phase's time left (its cut-off) plus a 5 s margin. Reports come at
//! least every tick (500 ms) while a phase runs, far inside `n`. The effect:
//!
//! - a unit whose `TimeoutStopSec` covers the drain (what `winddown::service::systemd` installs)
//!   never needs the extension, and it changes nothing;
//! - a unit whose timeout is too short for the budget the program was given keeps the program
//!   alive for as long as the drain still plans to run, and no longer: if the drain wedges, the
//!   reports stop and systemd kills it `EXTEND_MARGIN` after the last one.
//!
//! # The `SIGTERM` budget
//! `TimeoutStopSec` is not visible to the process: the installer writes the budget beside it as
//! [`STOP_BUDGET_ENV`](super::STOP_BUDGET_ENV) (`Environment=WINDDOWN_STOP_BUDGET_MS=30000`,
//! `TimeoutStopSec=35s`), and [`run`](super::run) sets the `SIGTERM` budget from it. Without it the
//! budget is the platform default (20 s, launchd's; systemd's default `TimeoutStopSec` is 90 s).
//!
//! # The environment
//! systemd passes `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`; they are read once, when the
//! host starts, and the socket is kept. They are **not** removed from the process environment
//! (sd-notify's `*_and_unset_env`): removing a variable is only sound before any other thread
//! exists, which [`run`](super::run) cannot promise (a logger may have started one), and this crate
//! forbids `unsafe`. Children are harmless anyway under the unit the installer writes —
//! `NotifyAccess=main` makes systemd ignore their messages, and `WATCHDOG_PID` names the main
//! process, so a well-behaved child does not ping — and [`remove_manager_env`] strips the variables
//! from a child's command where it matters (a child that is itself a winddown program, for one).
//!
//! # Why the datagrams are sent by hand
//! The `sd-notify` crate supplies the protocol's vocabulary ([`sd_notify::NotifyState`]) and the
//! watchdog variables' parsing ([`sd_notify::watchdog_enabled`], which honours `WATCHDOG_PID`).
//! Its `notify` reads `$NOTIFY_SOCKET` and opens a socket on every call; this host holds one
//! non-blocking socket from start-up instead, because: the address is read once (later changes to
//! the environment cannot silently turn notifications off); Linux abstract addresses (`@name`)
//! work, which `sd-notify` 0.5 takes for a file path; a full socket buffer drops a status line
//! instead of blocking the drain; and a host built from an explicit address is testable without
//! touching the process environment.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::liveness::Liveness;
use super::{AppError, Host, HostHooks, HostKind};
use crate::progress::{Progress, ProgressEvent, Reporter};
use crate::report::{Outcome, ShutdownReport};
use crate::shutdown::Shutdown;

/// What each `EXTEND_TIMEOUT_USEC` adds beyond the running phase's time left: room for the next
/// report (≤ one tick), the step to the next phase, and the exit after the last one.
pub(crate) const EXTEND_MARGIN: Duration = Duration::from_secs(5);

/// The variables systemd passes to a notify service (see [`remove_manager_env`]).
pub(crate) const MANAGER_ENV: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// Removes `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from a child's environment, so
/// that the child does not talk to this service's manager as if it were the service. For a `tokio::process::Command`, pass
/// `command.as_std_mut()`.
pub fn remove_manager_env(command: &mut std::process::Command) -> &mut std::process::Command {
    for var in MANAGER_ENV {
        command.env_remove(var);
    }
    command
}

/// The systemd host's [`HostHooks`]: readiness, status, stop progress and watchdog pings as
/// notify datagrams. Cheap to clone; clones share the socket.
#[derive(Clone)]
pub struct SystemdHooks {
    inner: Arc<Inner>,
}

struct Inner {
    socket: UnixDatagram,
    address: SocketAddr,
    shown: String,
    watchdog: Option<Duration>,
    failing: AtomicBool,
    /// The last status line sent, restored after the watchdog's "unresponsive" line.
    status: Mutex<String>,
}

impl std::fmt::Debug for SystemdHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemdHooks")
            .field("notify_socket", &self.inner.shown)
            .field("watchdog", &self.inner.watchdog)
            .finish_non_exhaustive()
    }
}

impl SystemdHooks {
    /// The hooks for the manager named by `$NOTIFY_SOCKET`, with the watchdog of `$WATCHDOG_USEC`
    /// (unless `$WATCHDOG_PID` names another process). `None` when `$NOTIFY_SOCKET` is not set;
    /// an error when it is set but unusable.
    pub fn from_env() -> Option<io::Result<Self>> {
        let address = std::env::var_os("NOTIFY_SOCKET")?;
        let watchdog = sd_notify::watchdog_enabled().filter(|t| !t.is_zero());
        Some(Self::connect(&address, watchdog))
    }

    /// [`SystemdHooks::from_env`], logging an unusable `$NOTIFY_SOCKET`.
    pub(crate) fn from_env_logged() -> Option<Self> {
        match Self::from_env()? {
            Ok(hooks) => {
                tracing::info!(
                    notify_socket = %hooks.inner.shown,
                    watchdog_ms = hooks.inner.watchdog.map(|w| w.as_millis() as u64),
                    "running under systemd (Type=notify)"
                );
                Some(hooks)
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    notify_socket = %std::env::var_os("NOTIFY_SOCKET").unwrap_or_default().to_string_lossy(),
                    "NOTIFY_SOCKET is set but unusable: running as a console program; \
                     systemd will not see READY=1 and will time the start-up out"
                );
                None
            }
        }
    }

    /// Hooks that send to the notify socket at `address` (an absolute path, or `@name` for a
    /// Linux abstract socket), with a watchdog of `watchdog_timeout` (`WATCHDOG_USEC`) if any.
    /// This is what [`SystemdHooks::from_env`] does with the variables systemd passes; use it
    /// directly in tests, or for a manager that passes the address some other way.
    pub fn connect(
        address: impl AsRef<OsStr>,
        watchdog_timeout: Option<Duration>,
    ) -> io::Result<Self> {
        let raw = address.as_ref();
        let parsed = parse_address(raw)?;
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(SystemdHooks {
            inner: Arc::new(Inner {
                socket,
                address: parsed,
                shown: raw.to_string_lossy().into_owned(),
                watchdog: watchdog_timeout.filter(|t| !t.is_zero()),
                failing: AtomicBool::new(false),
                status: Mutex::new(String::new()),
            }),
        })
    }

    /// The watchdog timeout systemd expects pings within (`WatchdogSec=`), if it set one.
    pub fn watchdog_timeout(&self) -> Option<Duration> {
        self.inner.watchdog
    }

    /// Sends one raw notify datagram: newline-separated `KEY=value` assignments (`RELOADING=1`,
    /// `MONOTONIC_USEC=…`, `ERRNO=…`).
    ///
    /// # Errors
    /// The socket's: the manager is gone (`ECONNREFUSED`, `ENOENT`), or not reading and its buffer
    /// is full (`EWOULDBLOCK`: the socket never blocks).
    pub fn notify(&self, message: &str) -> io::Result<()> {
        let sent = self
            .inner
            .socket
            .send_to_addr(message.as_bytes(), &self.inner.address)?;
        if sent != message.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "notify datagram truncated",
            ));
        }
        Ok(())
    }

    /// Starts pinging the watchdog (`WATCHDOG=1`) at half its timeout, from a task on the current
    /// tokio runtime. `None` when systemd set no watchdog.
    ///
    /// The pings prove the program is alive, so they come from where it lives:
    /// - a task on the runtime, not a thread: when the runtime is wedged (every worker blocked), the
    ///   pings stop, and systemd restarts the program after `WatchdogSec`;
    /// - only while every heartbeat of `liveness` is fresh ([`Host::heartbeat`]): a stale one
    ///   withholds the pings, logs why, and says so in `STATUS=`; pings resume when it beats again.
    ///
    /// Once a stop is requested the heartbeats are no longer judged (the program's loops stop on
    /// purpose) and the pings go on while the drain runs.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start_watchdog(&self, liveness: Liveness, shutdown: Shutdown) -> Option<JoinHandle<()>> {
        let period = self.inner.watchdog? / 2;
        let hooks = self.clone();
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut withheld = false;
            loop {
                ticks.tick().await;
                let stale = if shutdown.is_requested() {
                    Vec::new()
                } else {
                    liveness.stale()
                };
                if stale.is_empty() {
                    if withheld {
                        withheld = false;
                        tracing::warn!("heartbeats fresh again: systemd watchdog pings resumed");
                        let last = hooks.last_status();
                        hooks.send(&[NotifyState::Status(&last)]);
                    }
                    hooks.send(&[NotifyState::Watchdog]);
                } else if !withheld {
                    withheld = true;
                    let what = stale
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ");
                    tracing::error!(
                        "withholding systemd watchdog pings: {what}; systemd restarts the service \
                         if this lasts longer than WatchdogSec"
                    );
                    let line = format!("unresponsive: {what}; watchdog pings withheld");
                    // Not recorded: the line to restore is the one before it.
                    hooks.send_with(&[NotifyState::Status(&one_line(&line))], false);
                }
            }
        }))
    }

    fn last_status(&self) -> String {
        self.inner
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sends `states` as one datagram. A failure is logged, at `warn` the first time in a row and
    /// at `debug` after that (a tick sends every 500 ms), and otherwise ignored: the drain goes on
    /// whether or not its manager listens.
    fn send(&self, states: &[NotifyState<'_>]) {
        self.send_with(states, true);
    }

    fn send_with(&self, states: &[NotifyState<'_>], record_status: bool) {
        let mut message = String::new();
        for state in states {
            let _ = writeln!(message, "{state}");
            if let (NotifyState::Status(line), true) = (state, record_status) {
                *self.inner.status.lock().unwrap_or_else(|e| e.into_inner()) = (*line).to_owned();
            }
        }
        match self.notify(&message) {
            Ok(()) => self.inner.failing.store(false, Ordering::Relaxed),
            Err(e) => {
                if self.inner.failing.swap(true, Ordering::Relaxed) {
                    tracing::debug!(error = %e, notify_socket = %self.inner.shown, "systemd notification failed");
                } else {
                    tracing::warn!(error = %e, notify_socket = %self.inner.shown, "systemd notification failed");
                }
            }
        }
    }
}

/// `EXTEND_TIMEOUT_USEC` for `time`, clamped to what `sd-notify`'s `u32` holds (71 min): the
/// value is re-sent every tick, so the clamp never shortens a drain.
fn extend(time: Duration) -> NotifyState<'static> {
    let usec = (time + EXTEND_MARGIN).as_micros();
    NotifyState::ExtendTimeoutUsec(u32::try_from(usec).unwrap_or(u32::MAX))
}

/// A status line is one assignment: newlines would start new ones.
fn one_line(line: &str) -> String {
    line.replace(['\n', '\r'], " ")
}

fn parse_address(raw: &OsStr) -> io::Result<SocketAddr> {
    let bytes = raw.as_bytes();
    match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(Path::new(raw)),
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Some(b'@') => {
            #[cfg(target_os = "android")]
            use std::os::android::net::SocketAddrExt;
            #[cfg(target_os = "linux")]
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..])
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "NOTIFY_SOCKET={:?} is neither an absolute path nor (on Linux) an @abstract name",
                raw
            ),
        )),
    }
}

impl HostHooks for SystemdHooks {
    fn ready(&self) {
        self.send(&[
            NotifyState::Ready,
            NotifyState::MainPid(std::process::id()),
            NotifyState::Status("serving"),
        ]);
    }

    fn status(&self, line: &str) {
        self.send(&[NotifyState::Status(&one_line(line))]);
    }
}

impl Reporter for SystemdHooks {
    fn progress(&self, progress: &Progress) {
        match (&progress.event, &progress.phase) {
            (ProgressEvent::Started, _) => {
                let line = format!(
                    "stopping ({}): {:.1} s budget",
                    progress.reason,
                    progress.remaining.as_secs_f64()
                );
                self.send(&[
                    NotifyState::Stopping,
                    NotifyState::Status(&one_line(&line)),
                    extend(progress.remaining),
                ]);
            }
            (ProgressEvent::PhaseStarted | ProgressEvent::Tick, Some(phase)) => {
                let line = format!(
                    "{}, {:.1} s left",
                    progress.status_line(),
                    phase.remaining.as_secs_f64()
                );
                self.send(&[
                    NotifyState::Status(&one_line(&line)),
                    extend(phase.remaining),
                ]);
            }
            _ => self.send(&[extend(Duration::ZERO)]),
        }
    }

    fn finished(&self, report: &ShutdownReport) {
        let outcome = match report.outcome {
            Outcome::Clean => "clean",
            Outcome::CutOff => "cut off",
            Outcome::Failed => "failed",
            Outcome::Forced => "forced",
        };
        let line = format!(
            "stopped: {outcome} in {:.2} s ({}, exit code {})",
            report.duration.as_secs_f64(),
            report.reason,
            report.exit_code()
        );
        self.send(&[NotifyState::Status(&line), extend(Duration::ZERO)]);
    }
}

/// Runs `app` under the systemd host: the watchdog pings from the start, a failed start-up says
/// so in `STATUS=`.
pub(crate) async fn run_app<F, Fut>(
    hooks: SystemdHooks,
    shutdown: Shutdown,
    app: F,
) -> Result<ShutdownReport, AppError>
where
    F: FnOnce(Host) -> Fut,
    Fut: Future<Output = Result<ShutdownReport, AppError>>,
{
    let host = Host::new(HostKind::Systemd, shutdown, Arc::new(hooks.clone()));
    let watchdog = hooks.start_watchdog(host.liveness().clone(), host.shutdown().clone());
    let result = app(host).await;
    if let Err(e) = &result {
        hooks.status(&format!("start-up failed: {e}"));
    }
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DrainPlan, Stage, StopReason, drain};

    fn peer() -> (tempfile::TempDir, UnixDatagram, SystemdHooks) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let peer = UnixDatagram::bind(&path).unwrap();
        peer.set_nonblocking(true).unwrap();
        let hooks = SystemdHooks::connect(&path, None).unwrap();
        (dir, peer, hooks)
    }

    fn received(peer: &UnixDatagram) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = peer.recv(&mut buf) {
            out.push(String::from_utf8(buf[..n].to_vec()).unwrap());
        }
        out
    }

    #[test]
    fn addresses_are_absolute_paths_or_abstract_names() {
        assert!(parse_address(OsStr::new("/run/systemd/notify")).is_ok());
        assert!(parse_address(OsStr::new("run/systemd/notify")).is_err());
        assert!(parse_address(OsStr::new("")).is_err());
        assert!(parse_address(OsStr::new("vsock:2:1234")).is_err());
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let abs = parse_address(OsStr::new("@winddown/test")).unwrap();
            assert_eq!(abs.as_abstract_name(), Some(&b"winddown/test"[..]));
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_abstract_socket_receives() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("winddown-test-{}", std::process::id());
        let peer =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let hooks = SystemdHooks::connect(format!("@{name}"), None).unwrap();
        hooks.status("hello\nworld");
        let mut buf = [0u8; 64];
        let n = peer.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STATUS=hello world\n");
    }

    #[test]
    fn ready_and_status_lines() {
        let (_dir, peer, hooks) = peer();
        hooks.status("loading index");
        hooks.ready();
        assert_eq!(
            received(&peer),
            [
                "STATUS=loading index\n".to_owned(),
                format!("READY=1\nMAINPID={}\nSTATUS=serving\n", std::process::id()),
            ]
        );
    }

    #[test]
    fn a_missing_manager_does_not_stop_the_program() {
        let dir = tempfile::tempdir().unwrap();
        let hooks = SystemdHooks::connect(dir.path().join("nobody"), None).unwrap();
        hooks.ready();
        assert!(hooks.notify("STATUS=x\n").is_err());
    }

    /// The whole drain on a paused clock: every report re-arms the extension with the running
    /// phase's time left plus the margin, so the values are exact.
    #[tokio::test(start_paused = true)]
    async fn the_drain_extends_the_stop_timeout_on_every_report() {
        let (_dir, peer, hooks) = peer();
        let shutdown = Shutdown::new();
        shutdown.set_budget(StopReason::SigTerm, Duration::from_secs(10));
        let plan = DrainPlan::new().phase(Stage::Flush, "flush journal", |ctx| async move {
            ctx.set_progress("half");
            tokio::time::sleep(Duration::from_millis(1200)).await;
            Ok::<_, std::io::Error>(())
        });
        shutdown.trigger(StopReason::SigTerm);
        let report = drain(plan, &shutdown, &hooks).await;
        assert_eq!(report.outcome, Outcome::Clean);
        let got = received(&peer);
        // Budget 10 s, margin 1 s: the only phase gets 9 s.
        let expected = [
            "STOPPING=1\nSTATUS=stopping (SIGTERM): 10.0 s budget\nEXTEND_TIMEOUT_USEC=15000000\n",
            "STATUS=stopping (SIGTERM): phase 1/1 flush \"flush journal\", 9.0 s left\nEXTEND_TIMEOUT_USEC=14000000\n",
            "STATUS=stopping (SIGTERM): phase 1/1 flush \"flush journal\": half, 8.5 s left\nEXTEND_TIMEOUT_USEC=13500000\n",
            "STATUS=stopping (SIGTERM): phase 1/1 flush \"flush journal\": half, 8.0 s left\nEXTEND_TIMEOUT_USEC=13000000\n",
            "EXTEND_TIMEOUT_USEC=5000000\n",
            "STATUS=stopped: clean in 1.20 s (SIGTERM, exit code 0)\nEXTEND_TIMEOUT_USEC=5000000\n",
        ];
        assert_eq!(got, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn watchdog_pings_at_half_the_timeout_and_a_stale_heartbeat_withholds_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let peer = UnixDatagram::bind(&path).unwrap();
        peer.set_nonblocking(true).unwrap();
        let hooks = SystemdHooks::connect(&path, Some(Duration::from_secs(2))).unwrap();
        hooks.status("serving");
        let liveness = Liveness::new();
        let shutdown = Shutdown::new();
        let task = hooks
            .start_watchdog(liveness.clone(), shutdown.clone())
            .unwrap();
        // Pings at 0, 1, 2 s.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let got = received(&peer);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got[1..].iter().all(|m| m == "WATCHDOG=1\n"), "{got:?}");

        // A heartbeat on the real clock, stale at once: the pings stop and STATUS says why.
        let heartbeat = liveness.heartbeat("worker", Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        tokio::time::sleep(Duration::from_secs(3)).await;
        let got = received(&peer);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("STATUS=unresponsive: heartbeat \"worker\" silent for"),
            "{got:?}"
        );

        // Once a stop is requested, heartbeats no longer count: the status comes back, pings resume.
        shutdown.trigger(StopReason::SigTerm);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let got = received(&peer);
        assert_eq!(got.first().map(String::as_str), Some("STATUS=serving\n"));
        assert!(got[1..].contains(&"WATCHDOG=1\n".to_owned()), "{got:?}");
        drop(heartbeat);
        task.abort();
    }
}
