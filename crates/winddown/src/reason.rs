//! Why the program is stopping, and how long each stop source really allows.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// What asked the program to stop.
///
/// Every stop source on every platform maps to one of these, so the drain plan, the report and the
/// tests speak one language whether the stop came from the Service Control Manager, a console or a
/// signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StopReason {
    /// Windows console `CTRL_C_EVENT` (Ctrl+C, or `GenerateConsoleCtrlEvent`).
    CtrlC,
    /// Windows console `CTRL_BREAK_EVENT`.
    CtrlBreak,
    /// Windows console `CTRL_CLOSE_EVENT`: the console window is being closed.
    ConsoleClose,
    /// Windows console `CTRL_LOGOFF_EVENT`: the user is logging off.
    Logoff,
    /// Windows console `CTRL_SHUTDOWN_EVENT`: the system is shutting down.
    SystemShutdown,
    /// Unix `SIGINT` (Ctrl+C in a terminal).
    SigInt,
    /// Unix `SIGTERM` (systemd, launchd, Kubernetes, `kill`).
    SigTerm,
    /// Unix `SIGHUP` (the terminal went away).
    SigHup,
    /// Unix `SIGQUIT` (Ctrl+\ in a terminal).
    SigQuit,
    /// `SERVICE_CONTROL_STOP` from the Service Control Manager.
    ScmStop,
    /// `SERVICE_CONTROL_PRESHUTDOWN`: system shutdown, first round.
    ScmPreshutdown,
    /// `SERVICE_CONTROL_SHUTDOWN`: system shutdown, last round.
    ScmShutdown,
    /// The program asked itself to stop (`Shutdown::request`).
    Requested,
}

/// How much of the drain plan a stop leaves time for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DrainMode {
    /// Every phase runs.
    Full,
    /// "Flush now": best-effort phases (finishing in-flight work) are skipped; only the phases
    /// that make data durable and release resources run. Used for `SERVICE_CONTROL_SHUTDOWN`,
    /// which no wait hint can extend.
    FlushOnly,
}

/// Who sends a stop: what decides whether sending it again escalates the drain.
///
/// Only a person escalates by repeating: pressing Ctrl+C again means "hurry", a third time "get
/// out now". A service manager's stops follow its own sequence — the SCM's STOP, then PRESHUTDOWN
/// and SHUTDOWN when a reboot interrupts the stop; a SIGTERM sent again by a container runtime or
/// a restarted kubelet — and none of them means "abandon the data": each only brings the deadline
/// closer (and `SERVICE_CONTROL_SHUTDOWN` hurries, see [`DrainMode::FlushOnly`]). A manager that
/// wants the process gone sooner kills it (SIGKILL, the SCM ending the process) when its own
/// timeout runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StopSender {
    /// A person at the keyboard: Ctrl+C, Ctrl+Break, `SIGINT`, `SIGQUIT`. The second such stop
    /// hurries the drain, the third exits at once.
    Person,
    /// A service manager, the operating system or the program itself: the SCM's controls,
    /// `SIGTERM` (systemd, launchd, Kubernetes, `kill`), `SIGHUP`, the console's close, logoff
    /// and shutdown events, [`StopReason::Requested`]. Never escalates by repeating.
    Manager,
}

impl StopReason {
    /// Every reason, for tables and tests.
    pub const ALL: [StopReason; 13] = [
        StopReason::CtrlC,
        StopReason::CtrlBreak,
        StopReason::ConsoleClose,
        StopReason::Logoff,
        StopReason::SystemShutdown,
        StopReason::SigInt,
        StopReason::SigTerm,
        StopReason::SigHup,
        StopReason::SigQuit,
        StopReason::ScmStop,
        StopReason::ScmPreshutdown,
        StopReason::ScmShutdown,
        StopReason::Requested,
    ];

    /// The time this source allows before the process is ended, on the safe reading of the
    /// platform's documentation (see `PLATFORMS.md`, summarised here):
    ///
    /// | reason | budget | why |
    /// |---|---|---|
    /// | Ctrl+C, Ctrl+Break, SIGINT, requested | 30 s | nobody kills us; a person is waiting, and can press again to hurry |
    /// | console close, logoff, system shutdown | 5 s | Windows ends the process 5 s after the event |
    /// | SIGTERM | 20 s | the shortest common default: launchd (20 s); Kubernetes gives 30 s, systemd 90 s |
    /// | SIGHUP, SIGQUIT | 5 s | the terminal is gone, or the user wants out now |
    /// | SCM stop | 30 s | stretchable with checkpoints, but `net stop` gives up after ~30 s |
    /// | SCM preshutdown | 10 s | the default preshutdown timeout since Windows 10 1703 (install raises it) |
    /// | SCM shutdown | 5 s | reported as 5 s on client Windows; wait hints cannot extend it |
    pub const fn default_budget(self) -> Duration {
        let secs = match self {
            StopReason::CtrlC | StopReason::CtrlBreak | StopReason::SigInt => 30,
            StopReason::Requested | StopReason::ScmStop => 30,
            StopReason::ConsoleClose | StopReason::Logoff | StopReason::SystemShutdown => 5,
            StopReason::SigTerm => 20,
            StopReason::SigHup | StopReason::SigQuit => 5,
            StopReason::ScmPreshutdown => 10,
            StopReason::ScmShutdown => 5,
        };
        Duration::from_secs(secs)
    }

    /// Which phases this stop leaves time for.
    pub const fn drain_mode(self) -> DrainMode {
        match self {
            StopReason::ScmShutdown => DrainMode::FlushOnly,
            _ => DrainMode::Full,
        }
    }

    /// Who sends this stop, which decides whether repeating it escalates (see [`StopSender`]).
    ///
    /// `SIGTERM` counts as a manager's even when a person typed `kill`: systemd, launchd and
    /// Kubernetes send it, and container runtimes have been seen to send it twice for one stop. A person who wants out now presses Ctrl+C three times (or sends
    /// `SIGINT` three times, or `SIGKILL`).
    pub const fn sender(self) -> StopSender {
        match self {
            StopReason::CtrlC
            | StopReason::CtrlBreak
            | StopReason::SigInt
            | StopReason::SigQuit => StopSender::Person,
            StopReason::ConsoleClose
            | StopReason::Logoff
            | StopReason::SystemShutdown
            | StopReason::SigTerm
            | StopReason::SigHup
            | StopReason::ScmStop
            | StopReason::ScmPreshutdown
            | StopReason::ScmShutdown
            | StopReason::Requested => StopSender::Manager,
        }
    }

    /// Whether the process is ended as soon as the OS handler returns (Windows console close,
    /// logoff and shutdown): the handler must block until the drain is done.
    pub const fn ends_when_handler_returns(self) -> bool {
        matches!(
            self,
            StopReason::ConsoleClose | StopReason::Logoff | StopReason::SystemShutdown
        )
    }

    /// A stable machine-readable name (`sigterm`, `scm_preshutdown`, …), as in the JSON report.
    pub const fn as_str(self) -> &'static str {
        match self {
            StopReason::CtrlC => "ctrl_c",
            StopReason::CtrlBreak => "ctrl_break",
            StopReason::ConsoleClose => "console_close",
            StopReason::Logoff => "logoff",
            StopReason::SystemShutdown => "system_shutdown",
            StopReason::SigInt => "sig_int",
            StopReason::SigTerm => "sig_term",
            StopReason::SigHup => "sig_hup",
            StopReason::SigQuit => "sig_quit",
            StopReason::ScmStop => "scm_stop",
            StopReason::ScmPreshutdown => "scm_preshutdown",
            StopReason::ScmShutdown => "scm_shutdown",
            StopReason::Requested => "requested",
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::CtrlC => "console Ctrl+C",
            StopReason::CtrlBreak => "console Ctrl+Break",
            StopReason::ConsoleClose => "console window closed",
            StopReason::Logoff => "user logoff",
            StopReason::SystemShutdown => "system shutdown (console event)",
            StopReason::SigInt => "SIGINT",
            StopReason::SigTerm => "SIGTERM",
            StopReason::SigHup => "SIGHUP",
            StopReason::SigQuit => "SIGQUIT",
            StopReason::ScmStop => "service stop (SCM)",
            StopReason::ScmPreshutdown => "system preshutdown (SCM)",
            StopReason::ScmShutdown => "system shutdown (SCM)",
            StopReason::Requested => "requested by the program",
        })
    }
}

/// The time budget of each stop source: the defaults of [`StopReason::default_budget`], with the
/// program's overrides.
#[derive(Debug, Clone, Default)]
pub struct Budgets {
    overrides: HashMap<StopReason, Duration>,
}

impl Budgets {
    /// The platform defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Overrides the budget of one source (for example the preshutdown timeout the service was
    /// installed with, or a systemd unit's `TimeoutStopSec`).
    #[must_use]
    pub fn with(mut self, reason: StopReason, budget: Duration) -> Self {
        self.overrides.insert(reason, budget);
        self
    }

    /// Overrides the budget of one source in place.
    pub fn set(&mut self, reason: StopReason, budget: Duration) {
        self.overrides.insert(reason, budget);
    }

    /// The budget for `reason`.
    pub fn get(&self, reason: StopReason) -> Duration {
        self.overrides
            .get(&reason)
            .copied()
            .unwrap_or_else(|| reason.default_budget())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_budgets_follow_the_platform_facts() {
        assert_eq!(
            StopReason::ScmShutdown.default_budget(),
            Duration::from_secs(5)
        );
        assert_eq!(
            StopReason::ScmPreshutdown.default_budget(),
            Duration::from_secs(10)
        );
        for r in [
            StopReason::ConsoleClose,
            StopReason::Logoff,
            StopReason::SystemShutdown,
        ] {
            assert_eq!(r.default_budget(), Duration::from_secs(5), "{r}");
            assert!(r.ends_when_handler_returns());
        }
        assert_eq!(StopReason::ScmShutdown.drain_mode(), DrainMode::FlushOnly);
        assert_eq!(StopReason::ScmPreshutdown.drain_mode(), DrainMode::Full);
    }

    #[test]
    fn overrides_win() {
        let b = Budgets::new().with(StopReason::SigTerm, Duration::from_secs(85));
        assert_eq!(b.get(StopReason::SigTerm), Duration::from_secs(85));
        assert_eq!(b.get(StopReason::SigInt), Duration::from_secs(30));
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = StopReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), StopReason::ALL.len());
    }
}
