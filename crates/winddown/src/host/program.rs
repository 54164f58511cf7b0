//! The host-independent part: [`run`], [`Host`] and what configures them.

use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::console;
use super::liveness::{Heartbeat, Liveness};
#[cfg(unix)]
use super::systemd;
#[cfg(windows)]
use super::windows;
use crate::progress::{Progress, Reporter};
use crate::report::{EXIT_FAILED, ShutdownReport};
use crate::{Budgets, DrainPlan, Shutdown, StopReason, drain};

/// The environment variable that tells [`run`] the `SIGTERM` budget, in milliseconds.
///
/// A service manager's stop timeout (systemd's `TimeoutStopSec`, launchd's `ExitTimeOut`,
/// Kubernetes' `terminationGracePeriodSeconds`) is not visible to the process, so the install
/// backends (`winddown::service`) write it beside the timeout: the stop timeout is the budget plus a
/// margin, and the drain plans for the budget. When it is set and valid it overrides the budget of
/// [`StopReason::SigTerm`] given in [`HostOptions`] — the deployment knows when its manager sends
/// `SIGKILL`, the program's defaults do not. An invalid value is logged and ignored.
pub const STOP_BUDGET_ENV: &str = "WINDDOWN_STOP_BUDGET_MS";

/// Which kind of host the program runs under.
///
/// [`run`] makes the first three. A program that runs under a manager of its own (a supervisor
/// speaking its own protocol, a test harness) builds its [`Host`] with [`Host::new`] and
/// [`HostKind::Custom`], and its own [`HostHooks`]; new kinds may be added, so match with a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostKind {
    /// A terminal or console window (or a plain `kill`-able process).
    Console,
    /// A systemd service with `Type=notify` (`$NOTIFY_SOCKET` is set).
    Systemd,
    /// A Windows service started by the Service Control Manager.
    WindowsService,
    /// A host the program made itself, named for the logs (`"supervisor"`, `"test"`).
    Custom(&'static str),
}

/// What a host does when a stop escalates to [`Escalation::Force`](crate::Escalation::Force) (a
/// third Ctrl+C or signal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ForceAction {
    /// Exit the process at once with [`EXIT_FORCED`](crate::EXIT_FORCED), from the signal's task:
    /// the person pressing a third time wants out, and nothing acknowledged depends on the drain.
    /// The default.
    #[default]
    Exit,
    /// Leave it to the program: the drain cuts off its running phase, skips the rest and returns
    /// an [`Outcome::Forced`](crate::Outcome::Forced) report at once, and the program decides
    /// (a last log line, its own exit). For programs that must run something after the drain
    /// whatever happens, and for tests.
    Report,
}

/// What a host does besides turning stop sources into triggers: tell its manager that the program
/// is ready, and how the drain goes.
pub trait HostHooks: Reporter {
    /// The program serves now (systemd `READY=1`, SCM `SERVICE_RUNNING`).
    fn ready(&self) {}
    /// A status line for people (systemd `STATUS=`).
    fn status(&self, _line: &str) {}
}

/// Logs progress; what the console host reports.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LogProgress;

impl Reporter for LogProgress {
    fn progress(&self, progress: &Progress) {
        tracing::debug!(target: "winddown::progress", checkpoint = progress.checkpoint, "{}", progress.status_line());
    }
}

impl HostHooks for LogProgress {}

/// The program's view of its host.
#[derive(Clone)]
pub struct Host {
    kind: HostKind,
    shutdown: Shutdown,
    hooks: Arc<dyn HostHooks>,
    liveness: Liveness,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Host {
    /// A host of `kind` whose manager is told what `hooks` tell it. Hosts made by [`run`] are
    /// already wired; this is for custom hosts and tests.
    pub fn new(kind: HostKind, shutdown: Shutdown, hooks: Arc<dyn HostHooks>) -> Self {
        Host {
            kind,
            shutdown,
            hooks,
            liveness: Liveness::new(),
        }
    }

    /// The kind of host.
    pub fn kind(&self) -> HostKind {
        self.kind
    }

    /// The shutdown handle every stop source of this host triggers.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Tells the manager the program serves now.
    pub fn ready(&self) {
        tracing::info!(host = ?self.kind, "ready");
        self.hooks.ready();
    }

    /// A status line for people.
    pub fn status(&self, line: &str) {
        self.hooks.status(line);
    }

    /// The program's heartbeats. A host with a watchdog (systemd `WatchdogSec=`) stops pinging it
    /// while any of them is stale; a `/healthz` handler can answer from the same set.
    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    /// A new heartbeat named `name` that goes stale when not beaten for `stale_after`
    /// (see [`Liveness::heartbeat`]). Heartbeats are only judged until a stop is requested: a
    /// draining program's loops stop beating on purpose.
    pub fn heartbeat(&self, name: impl Into<String>, stale_after: Duration) -> Heartbeat {
        self.liveness.heartbeat(name, stale_after)
    }

    /// Waits for a stop, then drains `plan`, reporting progress to the manager. See [`drain`].
    ///
    /// # Cancellation safety
    /// Not cancel-safe, like [`drain`].
    pub async fn drain(&self, plan: DrainPlan) -> ShutdownReport {
        self.drain_with(plan, &crate::NoProgress).await
    }

    /// Like [`Host::drain`], also reporting progress to `extra` (a progress file, a UI).
    ///
    /// # Cancellation safety
    /// Not cancel-safe, like [`drain`].
    pub async fn drain_with(&self, plan: DrainPlan, extra: &dyn Reporter) -> ShutdownReport {
        let reporters: [&dyn Reporter; 3] = [&LogProgress, &*self.hooks as &dyn Reporter, extra];
        drain(plan, &self.shutdown, &reporters).await
    }
}

/// How [`run`] sets up the host.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// The service's name (used by the Windows host for the SCM and the Event Log).
    pub service_name: String,
    /// The stop sources' budgets.
    pub budgets: Budgets,
    /// What a third stop request does (the console's and systemd's signals).
    pub on_force: ForceAction,
}

impl HostOptions {
    /// Options for a service called `service_name`, with the default budgets.
    pub fn new(service_name: impl Into<String>) -> Self {
        HostOptions {
            service_name: service_name.into(),
            budgets: Budgets::default(),
            on_force: ForceAction::default(),
        }
    }

    /// Sets the budgets.
    #[must_use]
    pub fn budgets(mut self, budgets: Budgets) -> Self {
        self.budgets = budgets;
        self
    }

    /// Sets what a third stop request does (default [`ForceAction::Exit`]).
    #[must_use]
    pub fn on_force(mut self, action: ForceAction) -> Self {
        self.on_force = action;
        self
    }
}

/// The error a program's start-up can end with.
pub type AppError = Box<dyn Error + Send + Sync + 'static>;

/// The program [`run`] runs, boxed so that a host can keep it in a static (the Windows service
/// dispatcher calls back into a plain function) and hand it back when it does not take it.
pub(crate) type BoxedApp = Box<
    dyn FnOnce(Host) -> Pin<Box<dyn Future<Output = Result<ShutdownReport, AppError>> + Send>>
        + Send,
>;

pub(crate) fn boxed_app<F, Fut>(app: F) -> BoxedApp
where
    F: FnOnce(Host) -> Fut + Send + 'static,
    Fut: Future<Output = Result<ShutdownReport, AppError>> + Send + 'static,
{
    Box::new(move |host| Box::pin(app(host)))
}

/// Whether the Windows Service Control Manager started this process (its parent is
/// `services.exe`; one look at the process list, ~3 ms), so that [`run`] will host it as a
/// service. Always `false` off Windows.
///
/// For what must be settled before [`run`]: a service has no console, so its log belongs in a file.
pub fn started_by_scm() -> bool {
    #[cfg(windows)]
    return windows::started_by_scm();
    #[cfg(not(windows))]
    false
}

/// Runs `app` under the host that started this process, on a new multi-threaded tokio runtime,
/// and returns the process exit code: the report's ([`ShutdownReport::exit_code`]), or
/// [`EXIT_FAILED`] when `app` failed to start.
///
/// `app` gets the [`Host`]; it sets up, calls [`Host::ready`], and returns what [`Host::drain`]
/// returned. The runtime is built here, not by `#[tokio::main]`, because a Windows service's main
/// thread belongs to the service dispatcher. It has at least two workers, so that a drain phase
/// blocking its thread still leaves one for the progress reports and deadlines; once `app` has
/// returned, what is left running gets one second before this returns.
///
/// When `$NOTIFY_SOCKET` is set (Unix) the host is systemd's ([`systemd`]): readiness, status,
/// stop progress and watchdog pings go to the service manager; the console's stop sources still
/// apply (systemd stops a service with `SIGTERM`). [`STOP_BUDGET_ENV`] sets the `SIGTERM` budget.
/// On Windows, a process whose parent is `services.exe` runs as the service
/// [`HostOptions::service_name`]: the dispatcher takes the main thread, `app` runs with a
/// [`HostKind::WindowsService`] host reporting to the SCM
/// ([`ScmService`](super::scm::ScmService)) and to the Event Log, and the preshutdown budget is the service's configured preshutdown timeout. Any other
/// process gets the console host.
pub fn run<F, Fut>(options: HostOptions, app: F) -> i32
where
    F: FnOnce(Host) -> Fut + Send + 'static,
    Fut: Future<Output = Result<ShutdownReport, AppError>> + Send + 'static,
{
    let app = boxed_app(app);
    // Started by the Service Control Manager: the main thread becomes the service dispatcher's.
    #[cfg(windows)]
    let (options, app) = match windows::run_if_service(options, app) {
        Ok(exit_code) => return exit_code,
        Err(not_a_service) => not_a_service,
    };
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return EXIT_FAILED;
        }
    };
    let code = runtime.block_on(async move {
        let shutdown = Shutdown::with_budgets(options.budgets);
        if let Some(budget) = stop_budget_from_env() {
            shutdown.set_budget(StopReason::SigTerm, budget);
        }
        console::listen_with(&shutdown, options.on_force);
        #[cfg(unix)]
        if let Some(hooks) = systemd::SystemdHooks::from_env_logged() {
            return finish(systemd::run_app(hooks, shutdown, app).await);
        }
        let host = Host::new(HostKind::Console, shutdown, Arc::new(LogProgress));
        finish(app(host).await)
    });
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    code
}

/// How long the runtime's leftovers get once the program has returned — a phase cut off while it
/// blocked its thread, a task that ignored the stop — before the process exits anyway: the exit,
/// like the SCM's `STOPPED`, must not wait on them for ever.
pub(crate) const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

/// The hosts' runtime: multi-thread, with at least two workers even where the process may use one
/// CPU only (a container limited to one): a drain phase that blocks its thread then still leaves a
/// worker for the progress reports and the deadlines ([`crate::drain`]). `TOKIO_WORKER_THREADS`
/// decides when it is set.
pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        builder.worker_threads(cpus.max(2));
    }
    builder.build()
}

/// The `SIGTERM` budget set by [`STOP_BUDGET_ENV`], if it is set and valid.
fn stop_budget_from_env() -> Option<Duration> {
    let raw = std::env::var_os(STOP_BUDGET_ENV)?;
    match parse_stop_budget(&raw.to_string_lossy()) {
        Some(budget) => {
            tracing::info!(
                budget_ms = budget.as_millis() as u64,
                "SIGTERM budget from {STOP_BUDGET_ENV}"
            );
            Some(budget)
        }
        None => {
            tracing::warn!(
                value = %raw.to_string_lossy(),
                "ignoring {STOP_BUDGET_ENV}: expected a whole number of milliseconds above 0"
            );
            None
        }
    }
}

fn parse_stop_budget(raw: &str) -> Option<Duration> {
    match raw.trim().parse::<u64>() {
        Ok(ms) if ms > 0 => Some(Duration::from_millis(ms)),
        _ => None,
    }
}

fn finish(result: Result<ShutdownReport, AppError>) -> i32 {
    match result {
        Ok(report) => report.exit_code(),
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            EXIT_FAILED
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CustomStop, Stage};
    use std::sync::Mutex;

    /// A supervisor of the program's own: a custom host kind, hooks that record what the drain
    /// tells the manager, and a custom stop source (the supervisor's "stop" message).
    #[derive(Default)]
    struct Supervisor(Mutex<Vec<String>>);

    impl Reporter for Supervisor {
        fn progress(&self, progress: &Progress) {
            self.0.lock().unwrap().push(progress.status_line());
        }
        fn finished(&self, report: &ShutdownReport) {
            self.0
                .lock()
                .unwrap()
                .push(format!("finished: {:?}", report.outcome));
        }
    }

    impl HostHooks for Supervisor {
        fn ready(&self) {
            self.0.lock().unwrap().push("ready".to_owned());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_custom_host_with_a_custom_stop_source_drains_and_reports_to_its_hooks() {
        const SUPERVISOR_STOP: StopReason =
            StopReason::Custom(CustomStop::new("supervisor_stop", Duration::from_secs(7)));
        let hooks = Arc::new(Supervisor::default());
        let host = Host::new(
            HostKind::Custom("supervisor"),
            Shutdown::new(),
            hooks.clone(),
        );
        assert_eq!(host.kind(), HostKind::Custom("supervisor"));
        host.ready();
        host.shutdown().trigger(SUPERVISOR_STOP);
        let plan = DrainPlan::new().phase(Stage::Flush, "flush", |_| async {
            Ok::<_, std::io::Error>(())
        });
        let report = host.drain(plan).await;
        assert_eq!(report.reason, SUPERVISOR_STOP);
        assert_eq!(report.budget, Duration::from_secs(7));
        let seen = hooks.0.lock().unwrap().clone();
        assert_eq!(seen.first().map(String::as_str), Some("ready"));
        assert!(
            seen.iter()
                .any(|l| l == "stopping (supervisor_stop): phase 1/1 flush \"flush\""),
            "{seen:?}"
        );
        assert_eq!(seen.last().map(String::as_str), Some("finished: Clean"));
    }

    #[test]
    fn stop_budget_parses_whole_milliseconds_only() {
        assert_eq!(parse_stop_budget("30000"), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_stop_budget(" 1500\n"),
            Some(Duration::from_millis(1500))
        );
        for bad in ["", "0", "-5", "1.5", "30s", "ten"] {
            assert_eq!(parse_stop_budget(bad), None, "{bad:?}");
        }
    }
}
