//! The Windows service host's protocol, kept portable so that it runs — and is tested — on every
//! platform: Service Control Manager controls become [`Shutdown::trigger`]s, and the drain's
//! progress becomes the service statuses the SCM expects.
//!
//! What the SCM asks of a service that stops (see docs/PLATFORMS.md):
//! - the control handler returns at once; the work runs elsewhere;
//! - while stopping, the service reports `SERVICE_STOP_PENDING` with a checkpoint that grows before
//!   each wait hint runs out, or the SCM takes it for hung;
//! - the service reports `SERVICE_STOPPED` itself, with its exit code — and only once its data is
//!   safe, since the process may be ended right after.
//!
//! [`ScmService`] does all three. It is the [`HostHooks`] of a [`HostKind::WindowsService`] host:
//! `START_PENDING` at start, `RUNNING` on [`Host::ready`], `STOP_PENDING` with a checkpoint that
//! grows at every progress report of the drain (every 500 ms) and a wait hint covering the current
//! phase's remaining time plus a 2 s margin, and `STOPPED` — with
//! `ServiceSpecific(report.exit_code())` when the stop was not clean, so that the service's recovery
//! actions fire — once the program has returned.
//!
//! The statuses go to a [`StatusSink`]: on Windows the service's status handle
//! (`SetServiceStatus`) and the Event Log, in tests a `winddown::testing::ScmRecorder`.

use std::fmt;
use std::io;
use std::ops::BitOr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

mod types;

pub use self::types::*;

use super::{AppError, BoxedApp, Host, HostHooks, HostKind};
use crate::progress::{Progress, Reporter};
use crate::report::{EXIT_CLEAN, EXIT_FAILED, Outcome, ShutdownReport};
use crate::{Escalation, Shutdown, StopReason};

/// Added to every wait hint while stopping: the time the SCM should allow beyond the current
/// phase's deadline before it takes the service for hung (the drain reports every 500 ms anyway).
pub(crate) const WAIT_HINT_MARGIN: Duration = Duration::from_secs(2);

/// The wait hint of `START_PENDING`: how long the program may take to call [`Host::ready`].
pub(crate) const START_WAIT_HINT: Duration = Duration::from_secs(30);

/// The wait hint reported once the drain has finished, for the program to return and the runtime
/// to shut down before `STOPPED`.
pub(crate) const FINISH_WAIT_HINT: Duration = Duration::from_secs(5);

/// The largest wait hint the SCM can be told (milliseconds in a `u32`).
const MAX_WAIT_HINT: Duration = Duration::from_millis(u32::MAX as u64);

/// Where a service's statuses and lifecycle events go: on Windows the status handle
/// (`SetServiceStatus`) and the Event Log; in tests a recorder.
///
/// Calls are made with [`ScmService`]'s lock held, in the order the statuses were decided, from the
/// control handler's thread or the runtime's; they must return quickly.
pub trait StatusSink: Send + Sync + 'static {
    /// Tells the SCM the service's status.
    fn set_status(&self, status: &ServiceStatus) -> io::Result<()>;

    /// Writes a lifecycle event (started, stop requested, the report, errors) to the service's
    /// event log.
    fn log_event(&self, _level: EventLevel, _message: &str) {}
}

/// The service side of the SCM protocol: maps controls to stop triggers and reports the service's
/// statuses. A cheaply clonable handle.
///
/// ```
/// use std::sync::Arc;
/// use winddown::Shutdown;
/// use winddown::host::scm::{ControlResponse, ScmControl, ScmService, ServiceState};
/// use winddown::testing::ScmRecorder;
///
/// let recorder = ScmRecorder::new();
/// let service = ScmService::new("depot", Shutdown::new(), Arc::new(recorder.clone()));
/// service.starting();
/// assert_eq!(service.handle(ScmControl::Stop), ControlResponse::Handled);
/// assert!(service.shutdown().is_requested());
/// assert_eq!(recorder.states(), [ServiceState::StartPending, ServiceState::StopPending]);
/// ```
#[derive(Clone)]
pub struct ScmService {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    shutdown: Shutdown,
    sink: Arc<dyn StatusSink>,
    current: Mutex<Current>,
}

struct Current {
    state: Option<ServiceState>,
    checkpoint: u32,
    last: Option<ServiceStatus>,
}

impl fmt::Debug for ScmService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScmService")
            .field("name", &self.inner.name)
            .field("state", &self.lock().state)
            .finish_non_exhaustive()
    }
}

impl ScmService {
    /// The service `name`, whose controls trigger `shutdown` and whose statuses go to `sink`.
    pub fn new(name: impl Into<String>, shutdown: Shutdown, sink: Arc<dyn StatusSink>) -> Self {
        ScmService {
            inner: Arc::new(Inner {
                name: name.into(),
                shutdown,
                sink,
                current: Mutex::new(Current {
                    state: None,
                    checkpoint: 0,
                    last: None,
                }),
            }),
        }
    }

    /// Uses the service's configured preshutdown timeout as the budget of
    /// [`StopReason::ScmPreshutdown`] — it is what the SCM really waits. `None` (it could not be
    /// read) keeps the budget as it is: 10 s by default, the timeout since Windows 10 1703.
    #[must_use]
    pub fn preshutdown_timeout(self, timeout: Option<Duration>) -> Self {
        if let Some(timeout) = timeout {
            self.inner
                .shutdown
                .set_budget(StopReason::ScmPreshutdown, timeout);
        }
        self
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The shutdown handle the controls trigger.
    pub fn shutdown(&self) -> &Shutdown {
        &self.inner.shutdown
    }

    /// A [`HostKind::WindowsService`] host that reports through this service.
    pub fn host(&self) -> Host {
        Host::new(
            HostKind::WindowsService,
            self.inner.shutdown.clone(),
            Arc::new(self.clone()),
        )
    }

    /// The last status reported, if any.
    pub fn last_status(&self) -> Option<ServiceStatus> {
        self.lock().last.clone()
    }

    /// Reports `START_PENDING` (call it first thing in `service_main`, once the control handler is
    /// registered).
    pub fn starting(&self) {
        let budget = self.inner.shutdown.budget_for(StopReason::ScmPreshutdown);
        self.event(
            EventLevel::Info,
            &format!(
                "{} is starting (preshutdown budget {:.1} s)",
                self.inner.name,
                budget.as_secs_f64()
            ),
        );
        self.report(
            ServiceState::StartPending,
            START_WAIT_HINT,
            ServiceExitCode::NO_ERROR,
        );
    }

    /// Handles a control from the SCM and returns at once: a stop control triggers the shutdown
    /// and is answered with `STOP_PENDING` (the drain then keeps the checkpoint growing);
    /// `INTERROGATE` needs nothing (the SCM keeps the last status); anything else is not handled.
    ///
    /// This is the whole body of the Windows control handler.
    pub fn handle(&self, control: ScmControl) -> ControlResponse {
        let Some(reason) = control.stop_reason() else {
            return match control {
                ScmControl::Interrogate => ControlResponse::Handled,
                _ => ControlResponse::NotImplemented,
            };
        };
        let escalation = self.inner.shutdown.trigger(reason);
        let left = self
            .inner
            .shutdown
            .state()
            .deadline
            .map_or(Duration::ZERO, |d| {
                d.saturating_duration_since(Instant::now())
            });
        let (level, drain) = match escalation {
            Escalation::Running | Escalation::Draining => (EventLevel::Info, "draining"),
            Escalation::Hurry => (EventLevel::Warning, "hurrying: in-flight work given up"),
            Escalation::Force => (EventLevel::Warning, "drain abandoned"),
        };
        self.event(
            level,
            &format!(
                "stop requested: {reason} ({}); {drain}, {:.1} s left",
                reason.as_str(),
                left.as_secs_f64()
            ),
        );
        self.report(
            ServiceState::StopPending,
            left + WAIT_HINT_MARGIN,
            ServiceExitCode::NO_ERROR,
        );
        ControlResponse::Handled
    }

    /// Runs `app` with this service's host on the current runtime, as its own task: a panic is a
    /// failed program, not a lost `STOPPED`. (Used by the Windows glue and by `testing`.)
    #[cfg_attr(not(any(windows, feature = "testing")), allow(dead_code))]
    pub(crate) async fn run_app(&self, app: BoxedApp) -> Result<ShutdownReport, AppError> {
        let host = self.host();
        match tokio::spawn(async move { app(host).await }).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => {
                let panic = e.into_panic();
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".to_owned());
                Err(format!("the program panicked: {what}").into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reports `STOPPED` with the exit code `result` calls for, and returns that code as the
    /// process exit code. Call it last: once the program has returned and the runtime is down.
    /// Nothing is reported after it.
    pub fn stopped(&self, result: &Result<ShutdownReport, AppError>) -> i32 {
        let code = Self::exit_code(result);
        match result {
            Ok(report) => {
                let level = match report.outcome {
                    Outcome::Clean => EventLevel::Info,
                    Outcome::CutOff => EventLevel::Warning,
                    Outcome::Failed | Outcome::Forced => EventLevel::Error,
                };
                self.event(level, &format!("{} stopped. {report}", self.inner.name));
            }
            Err(e) => {
                self.event(
                    EventLevel::Error,
                    &format!(
                        "{} failed: {e}; stopping with exit code {EXIT_FAILED}",
                        self.inner.name
                    ),
                );
            }
        }
        self.report(
            ServiceState::Stopped,
            Duration::ZERO,
            ServiceExitCode::from_exit_code(code),
        );
        code
    }

    /// The process exit code for what the program returned: the report's, or [`EXIT_FAILED`].
    pub fn exit_code(result: &Result<ShutdownReport, AppError>) -> i32 {
        match result {
            Ok(report) => report.exit_code(),
            Err(_) => EXIT_FAILED,
        }
    }

    /// Decides the next status and sends it, under the lock so that checkpoints reach the SCM in
    /// the order they grow. `STOPPED` is final.
    fn report(&self, state: ServiceState, wait_hint: Duration, exit_code: ServiceExitCode) {
        self.send(&mut self.lock(), state, wait_hint, exit_code);
    }

    fn send(
        &self,
        current: &mut Current,
        state: ServiceState,
        wait_hint: Duration,
        exit_code: ServiceExitCode,
    ) {
        if current.state == Some(ServiceState::Stopped) {
            return;
        }
        let checkpoint = if !state.is_pending() {
            0
        } else if current.state == Some(state) {
            current.checkpoint.saturating_add(1)
        } else {
            1
        };
        let status = ServiceStatus {
            state,
            accepts: Accepts::in_state(state),
            checkpoint,
            wait_hint: if state.is_pending() {
                wait_hint.min(MAX_WAIT_HINT)
            } else {
                Duration::ZERO
            },
            exit_code,
        };
        current.state = Some(state);
        current.checkpoint = checkpoint;
        current.last = Some(status.clone());
        tracing::debug!(
            target: "winddown::scm",
            state = %state,
            checkpoint,
            wait_hint_ms = status.wait_hint.as_millis() as u64,
            "service status"
        );
        if let Err(e) = self.inner.sink.set_status(&status) {
            let message = format!(
                "{}: cannot report {state} (checkpoint {checkpoint}) to the SCM: {e}",
                self.inner.name
            );
            tracing::error!(target: "winddown::scm", "{message}");
            self.inner.sink.log_event(EventLevel::Error, &message);
        }
    }

    /// Logs a lifecycle event to tracing and to the sink's event log.
    fn event(&self, level: EventLevel, message: &str) {
        match level {
            EventLevel::Info => tracing::info!(target: "winddown::scm", "{message}"),
            EventLevel::Warning => tracing::warn!(target: "winddown::scm", "{message}"),
            EventLevel::Error => tracing::error!(target: "winddown::scm", "{message}"),
        }
        self.inner.sink.log_event(level, message);
    }

    fn lock(&self) -> MutexGuard<'_, Current> {
        // The state is replaced whole under the lock: a panic cannot leave it half-written.
        self.inner.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Reporter for ScmService {
    /// `STOP_PENDING` with the next checkpoint, and a wait hint covering the current phase's
    /// remaining time (the whole stop's before the first phase) plus a 2 s margin.
    fn progress(&self, progress: &Progress) {
        let left = progress
            .phase
            .as_ref()
            .map_or(progress.remaining, |phase| phase.remaining);
        self.report(
            ServiceState::StopPending,
            left + WAIT_HINT_MARGIN,
            ServiceExitCode::NO_ERROR,
        );
    }

    /// One more `STOP_PENDING`, covering the program's return; `STOPPED` comes from
    /// [`ScmService::stopped`].
    fn finished(&self, _report: &ShutdownReport) {
        self.report(
            ServiceState::StopPending,
            FINISH_WAIT_HINT,
            ServiceExitCode::NO_ERROR,
        );
    }
}

impl HostHooks for ScmService {
    /// While the service is still starting, a status line is a sign of life: `START_PENDING` with
    /// the next checkpoint, so that a start that waits on something (a wrapped program's
    /// readiness) is not taken for a hung one.
    fn status(&self, _line: &str) {
        let mut current = self.lock();
        if self.inner.shutdown.is_requested() || current.state != Some(ServiceState::StartPending) {
            return;
        }
        self.send(
            &mut current,
            ServiceState::StartPending,
            START_WAIT_HINT,
            ServiceExitCode::NO_ERROR,
        );
    }

    /// `RUNNING` — unless a stop came first, in which case the service stays `STOP_PENDING`.
    fn ready(&self) {
        // Checked and sent under one lock: a stop arriving meanwhile cannot be overwritten.
        let mut current = self.lock();
        if self.inner.shutdown.is_requested() || current.state != Some(ServiceState::StartPending) {
            return;
        }
        self.event(EventLevel::Info, &format!("{} is running", self.inner.name));
        self.send(
            &mut current,
            ServiceState::Running,
            Duration::ZERO,
            ServiceExitCode::NO_ERROR,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio::time::{Instant, sleep};

    use super::*;
    use crate::testing::{ScmRecorder, ScmRun, ScmScenario};
    use crate::{
        Budgets, DrainPlan, EXIT_CUT_OFF, EXIT_FAILED, Phase, PhaseOutcome, SkipReason, Stage,
    };

    const SEC: Duration = Duration::from_secs(1);

    /// A plan with a quick first phase, an in-flight phase of `in_flight` (whose deadline is
    /// recorded), and a 1 s flush.
    fn plan(in_flight: Duration, deadline: Arc<Mutex<Option<Instant>>>) -> DrainPlan {
        DrainPlan::new()
            .phase(Stage::StopAccepting, "close intake", |_| async {
                Ok::<_, io::Error>(())
            })
            .phase(Stage::FinishInFlight, "in-flight", move |ctx| async move {
                *deadline.lock().unwrap() = Some(ctx.deadline());
                sleep(in_flight).await;
                Ok::<_, io::Error>(())
            })
            .phase(Stage::Flush, "flush", |_| async {
                sleep(SEC).await;
                Ok::<_, io::Error>(())
            })
    }

    /// A start that waits (a wrapper's readiness probe) keeps `START_PENDING` growing through
    /// status lines, and an exit code set on the report (the wrapped program's) reaches `STOPPED`.
    #[tokio::test(start_paused = true)]
    async fn a_waiting_start_grows_its_checkpoint_and_a_set_exit_code_reaches_stopped() {
        let run = ScmScenario::new()
            .control(5 * SEC, ScmControl::Stop)
            .run(|host: Host| async move {
                for _ in 0..3 {
                    host.status("starting: waiting for the port");
                    sleep(SEC).await;
                }
                host.ready();
                Ok(host.drain(DrainPlan::new()).await.with_exit_code(7))
            })
            .await;
        let starting: Vec<u32> = run
            .statuses
            .iter()
            .filter(|s| s.status.state == ServiceState::StartPending)
            .map(|s| s.status.checkpoint)
            .collect();
        assert_eq!(starting, vec![1, 2, 3, 4]);
        assert_protocol(&run);
        assert_eq!(run.last().exit_code, ServiceExitCode::ServiceSpecific(7));
        assert_eq!(run.exit_code, 7);
    }

    fn assert_protocol(run: &ScmRun) {
        let problems = run.protocol_violations();
        assert!(problems.is_empty(), "{problems:#?}\n{:#?}", run.statuses);
    }

    /// STOP_PENDING reports come at least once a second, with strictly growing checkpoints.
    fn assert_stop_pending_keeps_growing(run: &ScmRun) {
        let pending = run.stop_pending();
        for pair in pending.windows(2) {
            assert!(
                pair[1].status.checkpoint > pair[0].status.checkpoint,
                "{pair:#?}"
            );
            assert!(pair[1].at - pair[0].at <= SEC, "a gap over 1 s: {pair:#?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stop_reports_growing_checkpoints_until_stopped() {
        let deadline = Arc::new(Mutex::new(None));
        let t0 = Instant::now();
        let run = ScmScenario::new()
            .control(2 * SEC, ScmControl::Stop)
            .drain(plan(3 * SEC, deadline.clone()))
            .await;

        assert_eq!(
            run.responses,
            [(ScmControl::Stop, ControlResponse::Handled)]
        );
        assert_eq!(
            run.states(),
            [
                ServiceState::StartPending,
                ServiceState::Running,
                ServiceState::StopPending,
                ServiceState::Stopped
            ]
        );
        assert_protocol(&run);
        assert_stop_pending_keeps_growing(&run);

        let running = &run.statuses[1].status;
        assert_eq!(
            running.accepts,
            Accepts::STOP | Accepts::PRESHUTDOWN | Accepts::SHUTDOWN
        );
        assert_eq!((running.checkpoint, running.wait_hint), (0, Duration::ZERO));

        let pending = run.stop_pending();
        // The control handler itself answers with STOP_PENDING, at once, covering the 30 s budget.
        assert_eq!(pending[0].at, t0 + 2 * SEC);
        assert_eq!(pending[0].status.checkpoint, 1);
        assert!(pending[0].status.wait_hint >= 30 * SEC);
        assert!(!pending[0].status.accepts.contains(Accepts::STOP));
        // 4 s of drain, a report every 500 ms at least.
        assert!(pending.len() >= 8, "{} STOP_PENDING reports", pending.len());
        // While the in-flight phase ran, every wait hint covered its remaining time.
        let phase_deadline = deadline.lock().unwrap().expect("the in-flight phase ran");
        let in_phase = pending
            .iter()
            .filter(|s| s.at > t0 + 2 * SEC && s.at < t0 + 5 * SEC);
        for s in in_phase.clone() {
            assert!(s.at + s.status.wait_hint >= phase_deadline, "{s:#?}");
        }
        assert!(in_phase.count() >= 5);

        let stopped = run.statuses.last().unwrap();
        assert_eq!(stopped.status.exit_code, ServiceExitCode::NO_ERROR);
        assert_eq!(stopped.status.accepts, Accepts::NONE);
        assert!(stopped.at >= t0 + 6 * SEC, "STOPPED before the drain ended");
        assert_eq!(run.exit_code, EXIT_CLEAN);

        let report = run.report();
        assert_eq!(report.reason, StopReason::ScmStop);
        assert_eq!(report.budget, 30 * SEC);
        assert_eq!(report.outcome, Outcome::Clean);
        let events: Vec<_> = run.events.iter().map(|(_, m)| m.as_str()).collect();
        assert!(events[0].contains("is starting"), "{events:?}");
        assert!(
            events
                .iter()
                .any(|m| m.contains("stop requested: service stop (SCM)"))
        );
        assert!(events.last().unwrap().contains("stopped"), "{events:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn preshutdown_gets_the_configured_timeout_as_budget() {
        let deadline = Arc::new(Mutex::new(None));
        let run = ScmScenario::new()
            .preshutdown_timeout(45 * SEC)
            .control(SEC, ScmControl::Preshutdown)
            .drain(plan(3 * SEC, deadline))
            .await;
        assert_protocol(&run);
        assert_stop_pending_keeps_growing(&run);
        assert_eq!(run.report().reason, StopReason::ScmPreshutdown);
        assert_eq!(run.report().budget, 45 * SEC);
        assert!(run.stop_pending()[0].status.wait_hint >= 45 * SEC);
        assert_eq!(run.last().exit_code, ServiceExitCode::NO_ERROR);
    }

    #[tokio::test(start_paused = true)]
    async fn preshutdown_without_a_configured_timeout_gets_ten_seconds() {
        let run = ScmScenario::new()
            .control(SEC, ScmControl::Preshutdown)
            .drain(plan(SEC, Arc::default()))
            .await;
        assert_protocol(&run);
        assert_eq!(run.report().budget, 10 * SEC);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_flushes_only() {
        let t0 = Instant::now();
        let run = ScmScenario::new()
            .control(SEC, ScmControl::Shutdown)
            .drain(plan(20 * SEC, Arc::default()))
            .await;
        assert_protocol(&run);
        assert_stop_pending_keeps_growing(&run);
        let report = run.report();
        assert_eq!(report.reason, StopReason::ScmShutdown);
        assert_eq!(report.budget, 5 * SEC);
        assert_eq!(
            report.phase("in-flight").unwrap().outcome,
            PhaseOutcome::Skipped {
                why: SkipReason::Hurry
            }
        );
        assert_eq!(report.phase("flush").unwrap().outcome, PhaseOutcome::Done);
        // Skipping in-flight work is a cut-off stop: the recovery actions see it.
        assert_eq!(
            run.last().exit_code,
            ServiceExitCode::ServiceSpecific(EXIT_CUT_OFF as u32)
        );
        assert!(run.statuses.last().unwrap().at <= t0 + 6 * SEC);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_during_a_preshutdown_drain_cuts_it_to_five_seconds() {
        let deadline = Arc::new(Mutex::new(None));
        let t0 = Instant::now();
        let run = ScmScenario::new()
            .preshutdown_timeout(60 * SEC)
            .control(SEC, ScmControl::Preshutdown)
            .control(4 * SEC, ScmControl::Shutdown)
            .drain(plan(30 * SEC, deadline))
            .await;
        assert_eq!(
            run.responses,
            [
                (ScmControl::Preshutdown, ControlResponse::Handled),
                (ScmControl::Shutdown, ControlResponse::Handled)
            ]
        );
        assert_protocol(&run);
        assert_stop_pending_keeps_growing(&run);
        // One STOP_PENDING run throughout: the second control continues the checkpoints.
        assert_eq!(
            run.states(),
            [
                ServiceState::StartPending,
                ServiceState::Running,
                ServiceState::StopPending,
                ServiceState::Stopped
            ]
        );
        let at_shutdown = run
            .stop_pending()
            .into_iter()
            .find(|s| s.at == t0 + 4 * SEC && s.status.wait_hint <= 5 * SEC + WAIT_HINT_MARGIN)
            .expect("the SHUTDOWN handler reported the shorter deadline");
        assert!(at_shutdown.status.checkpoint > 1);

        let report = run.report();
        assert_eq!(report.reason, StopReason::ScmPreshutdown);
        assert_eq!(
            report.triggers,
            [StopReason::ScmPreshutdown, StopReason::ScmShutdown]
        );
        assert_eq!(report.budget, 60 * SEC);
        assert!(matches!(
            report.phase("in-flight").unwrap().outcome,
            PhaseOutcome::CutOff { .. }
        ));
        assert_eq!(report.phase("flush").unwrap().outcome, PhaseOutcome::Done);
        // Done within the SHUTDOWN's 5 s, not the preshutdown's 60 s.
        assert!(run.statuses.last().unwrap().at <= t0 + 9 * SEC);
        assert_eq!(
            run.last().exit_code,
            ServiceExitCode::ServiceSpecific(EXIT_CUT_OFF as u32)
        );
        assert!(
            run.events
                .iter()
                .any(|(level, m)| *level == EventLevel::Warning && m.contains("scm_shutdown"))
        );
    }

    /// Issue #14 item 5: a reboot during `sc stop` — STOP, then PRESHUTDOWN, then SHUTDOWN — is
    /// the SCM's own sequence, not three requests to give up: the in-flight wait is cut at the
    /// SHUTDOWN ("flush now"), and the flush and the close still run within its 5 s.
    #[tokio::test(start_paused = true)]
    async fn a_reboot_during_a_stop_still_flushes_and_closes() {
        let t0 = Instant::now();
        let closed = Arc::new(Mutex::new(false));
        let closed_by_phase = closed.clone();
        let plan = plan(20 * SEC, Arc::default()).phase(
            Stage::CloseStores,
            "close",
            move |_| async move {
                sleep(SEC / 2).await;
                *closed_by_phase.lock().unwrap() = true;
                Ok::<_, io::Error>(())
            },
        );
        let run = ScmScenario::new()
            .control(SEC, ScmControl::Stop)
            .control(2 * SEC, ScmControl::Preshutdown)
            .control(3 * SEC, ScmControl::Shutdown)
            .drain(plan)
            .await;
        assert_protocol(&run);
        assert_stop_pending_keeps_growing(&run);
        let report = run.report();
        assert_eq!(
            report.triggers,
            [
                StopReason::ScmStop,
                StopReason::ScmPreshutdown,
                StopReason::ScmShutdown
            ]
        );
        assert_eq!(report.escalation, Escalation::Hurry);
        assert_ne!(report.outcome, Outcome::Forced, "{report}");
        assert!(matches!(
            report.phase("in-flight").unwrap().outcome,
            PhaseOutcome::CutOff { .. }
        ));
        assert_eq!(report.phase("flush").unwrap().outcome, PhaseOutcome::Done);
        assert_eq!(report.phase("close").unwrap().outcome, PhaseOutcome::Done);
        assert!(*closed.lock().unwrap());
        // In-flight work was given up: cut off (3), not forced (5).
        assert_eq!(run.exit_code, EXIT_CUT_OFF);
        assert_eq!(
            run.last().exit_code,
            ServiceExitCode::ServiceSpecific(EXIT_CUT_OFF as u32)
        );
        // Within the SHUTDOWN's 5 s.
        assert!(run.statuses.last().unwrap().at <= t0 + 8 * SEC);
        assert!(
            !run.events.iter().any(|(_, m)| m.contains("abandoned")),
            "{:#?}",
            run.events
        );
    }

    #[tokio::test(start_paused = true)]
    async fn interrogate_is_answered_and_other_controls_are_not_handled() {
        let run = ScmScenario::new()
            .control(SEC, ScmControl::Interrogate)
            .control(SEC, ScmControl::Other(0x40))
            .control(2 * SEC, ScmControl::Stop)
            .drain(plan(SEC, Arc::default()))
            .await;
        assert_eq!(
            run.responses,
            [
                (ScmControl::Interrogate, ControlResponse::Handled),
                (ScmControl::Other(0x40), ControlResponse::NotImplemented),
                (ScmControl::Stop, ControlResponse::Handled)
            ]
        );
        assert_protocol(&run);
        assert_eq!(run.report().triggers, [StopReason::ScmStop]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_flush_stops_with_a_service_specific_code() {
        let plan = DrainPlan::new().with(Phase::new(Stage::Flush, "flush", |_| async {
            Err::<(), _>(io::Error::other("disk full"))
        }));
        let run = ScmScenario::new()
            .control(SEC, ScmControl::Stop)
            .drain(plan)
            .await;
        assert_protocol(&run);
        assert_eq!(
            run.last().exit_code,
            ServiceExitCode::ServiceSpecific(EXIT_FAILED as u32)
        );
        assert_eq!(run.exit_code, EXIT_FAILED);
        let (level, message) = run.events.last().unwrap();
        assert_eq!(*level, EventLevel::Error);
        assert!(message.contains("disk full"), "{message}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_or_panicking_program_still_reports_stopped() {
        let failed = ScmScenario::new()
            .run(|_host| async { Err::<ShutdownReport, AppError>("no database".into()) })
            .await;
        let panicked = ScmScenario::new()
            .run(|_host| async { panic!("bad config") })
            .await;
        for (run, what) in [(failed, "no database"), (panicked, "panicked: bad config")] {
            assert_protocol(&run);
            assert_eq!(
                run.states(),
                [ServiceState::StartPending, ServiceState::Stopped]
            );
            assert_eq!(
                run.last().exit_code,
                ServiceExitCode::ServiceSpecific(EXIT_FAILED as u32)
            );
            assert!(run.result.as_ref().unwrap_err().contains(what));
            assert!(run.events.last().unwrap().1.contains(what));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_before_ready_never_reports_running() {
        let run = ScmScenario::new()
            .control(SEC, ScmControl::Stop)
            .run(|host| async move {
                sleep(3 * SEC).await; // still starting when the stop comes
                host.ready();
                Ok(host.drain(DrainPlan::new()).await)
            })
            .await;
        assert_protocol(&run);
        assert_eq!(
            run.states(),
            [
                ServiceState::StartPending,
                ServiceState::StopPending,
                ServiceState::Stopped
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn wait_hints_fit_the_scm_field() {
        let recorder = ScmRecorder::new();
        let shutdown =
            Shutdown::with_budgets(Budgets::new().with(StopReason::ScmStop, 100 * 86_400 * SEC));
        let service = ScmService::new("big", shutdown, Arc::new(recorder.clone()));
        service.starting();
        service.handle(ScmControl::Stop);
        let hint = recorder.statuses().last().unwrap().status.wait_hint;
        assert_eq!(hint, Duration::from_millis(u64::from(u32::MAX)));
    }

    #[test]
    fn controls_and_codes_map_to_the_raw_values() {
        for control in [
            ScmControl::Stop,
            ScmControl::Preshutdown,
            ScmControl::Shutdown,
            ScmControl::Interrogate,
            ScmControl::Other(0x80),
        ] {
            assert_eq!(ScmControl::from_raw(control.to_raw()), control);
        }
        assert_eq!(ScmControl::Preshutdown.to_raw(), 0xF);
        assert_eq!(ScmControl::Interrogate.stop_reason(), None);
        assert_eq!(
            ScmControl::Shutdown
                .stop_reason()
                .map(StopReason::drain_mode),
            Some(crate::DrainMode::FlushOnly)
        );
        for raw in 1..=7 {
            assert_eq!(
                ServiceState::from_raw(raw).map(ServiceState::to_raw),
                Some(raw)
            );
        }
        assert_eq!(ServiceState::from_raw(8), None);
        assert_eq!(
            ServiceExitCode::from_exit_code(0),
            ServiceExitCode::NO_ERROR
        );
        assert_eq!(
            ServiceExitCode::from_exit_code(3),
            ServiceExitCode::ServiceSpecific(3)
        );
        assert_eq!(Accepts::in_state(ServiceState::StartPending), Accepts::NONE);
        assert_eq!(
            format!("{:?}", Accepts::in_state(ServiceState::StopPending)),
            "Accepts(SHUTDOWN|PRESHUTDOWN)"
        );
    }
}
