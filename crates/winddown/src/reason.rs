//! Why the program is stopping, and how long each stop source really allows.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// What asked the program to stop.
///
/// Every stop source on every platform maps to one of these, so the drain plan, the report and the
/// tests speak one language whether the stop came from the Service Control Manager, a console or a
/// signal. What each platform's source sends and how long it allows, with the sources of those
/// facts: [docs/PLATFORMS.md](https://example.invalid/winddown/blob/main/docs/PLATFORMS.md) in the
/// repository. A program's own stop source (an admin endpoint, a Kubernetes `preStop` hook, a
/// message from a supervisor) is a [`StopReason::Custom`] with its own name and budget.
///
/// In JSON (feature `serde`) a reason is its [`as_str`](StopReason::as_str) name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// A stop source of the program's own, with its name and budget (see [`CustomStop`]).
    Custom(CustomStop),
}

/// A stop source the library does not know: an admin endpoint, a Kubernetes `preStop` hook, a
/// message from a supervisor. It has a name of its own (for the log and the report) and the time it
/// allows; it drains fully, like [`StopReason::Requested`].
///
/// ```
/// use std::time::Duration;
/// use winddown::{CustomStop, Shutdown, StopReason};
///
/// const ADMIN: StopReason = StopReason::Custom(CustomStop::new("admin_stop", Duration::from_secs(15)));
/// let shutdown = Shutdown::new();
/// shutdown.trigger(ADMIN);
/// assert_eq!(shutdown.state().reason.unwrap().as_str(), "admin_stop");
/// assert_eq!(shutdown.budget_for(ADMIN), Duration::from_secs(15));
/// ```
///
/// Two custom stops are the same source when they have the same name. The name is `&'static str`
/// so that a reason stays `Copy` and triggering allocates nothing (triggers run in OS callbacks).
#[derive(Debug, Clone, Copy)]
pub struct CustomStop {
    name: &'static str,
    budget: Duration,
}

impl CustomStop {
    /// A stop source named `name` (in `snake_case`, like the built-in names) that allows `budget`.
    ///
    /// # Panics
    /// When `name` is empty or is one of the built-in names (`sig_term`, `scm_stop`, …), which
    /// would make the report ambiguous. In a `const` this is a compile error.
    pub const fn new(name: &'static str, budget: Duration) -> Self {
        assert!(!name.is_empty(), "a custom stop source needs a name");
        let mut i = 0;
        while i < BUILT_IN.len() {
            assert!(
                !const_eq(BUILT_IN[i].as_str(), name),
                "a custom stop source cannot take a built-in StopReason name"
            );
            i += 1;
        }
        CustomStop { name, budget }
    }

    /// Its name.
    pub const fn name(self) -> &'static str {
        self.name
    }

    /// The time it allows. A custom reason read back from JSON (a report, a progress line) has its
    /// name only; its budget reads as zero (the report's own `budget_ms` says what it allowed).
    pub const fn budget(self) -> Duration {
        self.budget
    }
}

impl PartialEq for CustomStop {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for CustomStop {}

impl std::hash::Hash for CustomStop {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

const fn const_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The reasons the library knows, in the order of [`StopReason::all`].
const BUILT_IN: [StopReason; 13] = [
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

/// How much of the drain plan a stop leaves time for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum StopSender {
    /// A person at the keyboard: Ctrl+C, Ctrl+Break, `SIGINT`, `SIGQUIT`. The second such stop
    /// hurries the drain, the third exits at once.
    Person,
    /// A service manager, the operating system or the program itself: the SCM's controls,
    /// `SIGTERM` (systemd, launchd, Kubernetes, `kill`), `SIGHUP`, the console's close, logoff
    /// and shutdown events, [`StopReason::Requested`] and every [`StopReason::Custom`] source (an
    /// admin endpoint, a `preStop` hook). Never escalates by repeating.
    Manager,
}

impl StopReason {
    /// Every reason the library knows (not the [`Custom`](StopReason::Custom) ones), for tables
    /// and tests. An iterator, so that a new source is not a breaking change.
    pub fn all() -> impl Iterator<Item = StopReason> {
        BUILT_IN.into_iter()
    }

    /// The time this source allows before the process is ended, on the safe reading of the
    /// platform's documentation (docs/PLATFORMS.md in the repository gives the sources; summarised
    /// here):
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
    /// | custom | its own | what the program gave [`CustomStop::new`] |
    pub const fn default_budget(self) -> Duration {
        let secs = match self {
            StopReason::CtrlC | StopReason::CtrlBreak | StopReason::SigInt => 30,
            StopReason::Requested | StopReason::ScmStop => 30,
            StopReason::ConsoleClose | StopReason::Logoff | StopReason::SystemShutdown => 5,
            StopReason::SigTerm => 20,
            StopReason::SigHup | StopReason::SigQuit => 5,
            StopReason::ScmPreshutdown => 10,
            StopReason::ScmShutdown => 5,
            StopReason::Custom(custom) => return custom.budget,
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
    /// Kubernetes send it, and container runtimes have been seen to send it twice for one stop. A
    /// person who wants out now presses Ctrl+C three times (or sends `SIGINT` three times, or
    /// `SIGKILL`). A custom source is a program's own machinery, so a manager's too.
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
            | StopReason::Requested
            | StopReason::Custom(_) => StopSender::Manager,
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
            StopReason::Custom(custom) => custom.name,
        }
    }

    /// The reason named `name` ([`as_str`](StopReason::as_str)): a built-in one, or else a
    /// [`Custom`](StopReason::Custom) one with that name and no budget (see [`CustomStop::budget`]).
    pub fn from_name(name: &str) -> StopReason {
        StopReason::all()
            .find(|r| r.as_str() == name)
            .unwrap_or_else(|| {
                StopReason::Custom(CustomStop {
                    name: intern(name),
                    budget: Duration::ZERO,
                })
            })
    }
}

/// A `&'static str` for a custom reason's name read back from text (a report a client reads):
/// each distinct name is leaked once, which keeps [`StopReason`] `Copy`. Hand-written: a dozen
/// lines do not justify an interning crate.
fn intern(name: &str) -> &'static str {
    static NAMES: std::sync::Mutex<std::collections::BTreeSet<&'static str>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

#[cfg(feature = "serde")]
impl serde::Serialize for StopReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for StopReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(StopReason::from_name(&name))
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
            StopReason::Custom(custom) => custom.name,
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
        let mut names: Vec<_> = StopReason::all().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), StopReason::all().count());
        for r in StopReason::all() {
            assert_eq!(StopReason::from_name(r.as_str()), r);
        }
    }

    #[test]
    fn a_custom_reason_has_its_own_name_and_budget_and_drains_fully() {
        const PRE_STOP: StopReason =
            StopReason::Custom(CustomStop::new("pre_stop_hook", Duration::from_secs(25)));
        assert_eq!(PRE_STOP.as_str(), "pre_stop_hook");
        assert_eq!(PRE_STOP.to_string(), "pre_stop_hook");
        assert_eq!(PRE_STOP.default_budget(), Duration::from_secs(25));
        assert_eq!(PRE_STOP.drain_mode(), DrainMode::Full);
        assert!(!PRE_STOP.ends_when_handler_returns());
        // Overridable like any other source, and read back from its name.
        let b = Budgets::new().with(PRE_STOP, Duration::from_secs(3));
        assert_eq!(b.get(PRE_STOP), Duration::from_secs(3));
        assert_eq!(StopReason::from_name("pre_stop_hook"), PRE_STOP);
        assert!(StopReason::all().all(|r| r != PRE_STOP));
    }

    #[test]
    #[should_panic(expected = "built-in StopReason name")]
    fn a_custom_reason_cannot_pose_as_a_built_in_one() {
        let _ = CustomStop::new("sig_term", Duration::from_secs(1));
    }

    #[cfg(feature = "serde")]
    #[test]
    fn reasons_are_their_names_in_json() {
        let custom = StopReason::Custom(CustomStop::new("admin_stop", Duration::from_secs(9)));
        for r in StopReason::all().chain([custom]) {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
            assert_eq!(serde_json::from_str::<StopReason>(&json).unwrap(), r);
        }
    }
}
