//! Simulating the Windows Service Control Manager, on any platform: the same [`ScmService`] the
//! Windows host runs, driven by scripted controls on the tokio clock, with a recorder in place of
//! `SetServiceStatus` and the Event Log.

use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::host::scm::{
    ControlResponse, EventLevel, ScmControl, ScmService, ServiceExitCode, ServiceState,
    ServiceStatus, StatusSink,
};
use crate::host::{AppError, Host, boxed_app};
use crate::{Budgets, DrainPlan, Shutdown, ShutdownReport};

/// A status the SCM was told, and when (on the tokio clock, paused or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedStatus {
    /// When it was reported.
    pub at: Instant,
    /// What was reported.
    pub status: ServiceStatus,
}

/// A [`StatusSink`] that keeps every status and event, for assertions.
#[derive(Debug, Clone, Default)]
pub struct ScmRecorder {
    inner: Arc<Mutex<ScmRecorded>>,
}

#[derive(Debug, Default)]
struct ScmRecorded {
    statuses: Vec<TimedStatus>,
    events: Vec<(EventLevel, String)>,
}

impl ScmRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every status so far, in order.
    pub fn statuses(&self) -> Vec<TimedStatus> {
        self.lock().statuses.clone()
    }

    /// The sequence of states, each run of one state counted once.
    pub fn states(&self) -> Vec<ServiceState> {
        states_of(&self.lock().statuses)
    }

    /// Every Event Log entry so far.
    pub fn events(&self) -> Vec<(EventLevel, String)> {
        self.lock().events.clone()
    }

    fn lock(&self) -> MutexGuard<'_, ScmRecorded> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StatusSink for ScmRecorder {
    fn set_status(&self, status: &ServiceStatus) -> io::Result<()> {
        self.lock().statuses.push(TimedStatus {
            at: Instant::now(),
            status: status.clone(),
        });
        Ok(())
    }

    fn log_event(&self, level: EventLevel, message: &str) {
        self.lock().events.push((level, message.to_owned()));
    }
}

fn states_of(statuses: &[TimedStatus]) -> Vec<ServiceState> {
    let mut states: Vec<ServiceState> = statuses.iter().map(|s| s.status.state).collect();
    states.dedup();
    states
}

/// A scripted run of a service under a simulated SCM: the service starts (`START_PENDING`), the
/// program runs, and the controls arrive at their times, measured from the start. Use it on a
/// paused clock (`#[tokio::test(start_paused = true)]`): a 30 s drain then takes no time.
///
/// ```
/// use std::time::Duration;
/// use winddown::host::scm::{ScmControl, ServiceExitCode, ServiceState};
/// use winddown::testing::ScmScenario;
/// use winddown::{DrainPlan, Stage, StopReason};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let plan = DrainPlan::new().phase(Stage::Flush, "flush", |_| async {
///     tokio::time::sleep(Duration::from_secs(3)).await;
///     Ok::<_, std::io::Error>(())
/// });
/// let run = ScmScenario::new()
///     .control(Duration::from_secs(1), ScmControl::Stop)
///     .drain(plan)
///     .await;
/// assert_eq!(run.report().reason, StopReason::ScmStop);
/// assert_eq!(
///     run.states(),
///     [ServiceState::StartPending, ServiceState::Running, ServiceState::StopPending, ServiceState::Stopped]
/// );
/// assert_eq!(run.last().exit_code, ServiceExitCode::NO_ERROR);
/// assert!(run.protocol_violations().is_empty(), "{:?}", run.protocol_violations());
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a scenario does nothing until it is run"]
pub struct ScmScenario {
    name: String,
    budgets: Budgets,
    preshutdown_timeout: Option<Duration>,
    controls: Vec<(Duration, ScmControl)>,
}

impl Default for ScmScenario {
    fn default() -> Self {
        Self::new()
    }
}

impl ScmScenario {
    /// A service named `winddown-test` with the default budgets and no control.
    pub fn new() -> Self {
        ScmScenario {
            name: "winddown-test".to_owned(),
            budgets: Budgets::default(),
            preshutdown_timeout: None,
            controls: Vec::new(),
        }
    }

    /// The service's budgets (as [`crate::HostOptions::budgets`]).
    pub fn budgets(mut self, budgets: Budgets) -> Self {
        self.budgets = budgets;
        self
    }

    /// The preshutdown timeout the host read from the service's configuration (unset: it could
    /// not be read, and the budget stays 10 s).
    pub fn preshutdown_timeout(mut self, timeout: Duration) -> Self {
        self.preshutdown_timeout = Some(timeout);
        self
    }

    /// The SCM sends `control` at `at` after the start.
    pub fn control(mut self, at: Duration, control: ScmControl) -> Self {
        self.controls.push((at, control));
        self
    }

    /// Runs a program that is ready at once and then drains `plan`.
    pub async fn drain(self, plan: DrainPlan) -> ScmRun {
        self.run(|host: Host| async move {
            host.ready();
            Ok(host.drain(plan).await)
        })
        .await
    }

    /// Runs `app` as the Windows host would, from `START_PENDING` to `STOPPED`.
    pub async fn run<F, Fut>(self, app: F) -> ScmRun
    where
        F: FnOnce(Host) -> Fut + Send + 'static,
        Fut: Future<Output = Result<ShutdownReport, AppError>> + Send + 'static,
    {
        let recorder = ScmRecorder::new();
        let service = ScmService::new(
            self.name,
            Shutdown::with_budgets(self.budgets),
            Arc::new(recorder.clone()),
        )
        .preshutdown_timeout(self.preshutdown_timeout);
        service.starting();
        let start = Instant::now();
        let responses = Arc::new(Mutex::new(Vec::new()));
        let mut controls = self.controls;
        controls.sort_by_key(|(at, _)| *at);
        let scm = {
            let service = service.clone();
            let responses = responses.clone();
            tokio::spawn(async move {
                for (at, control) in controls {
                    tokio::time::sleep_until(start + at).await;
                    let response = service.handle(control);
                    responses
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((control, response));
                }
            })
        };
        let result = service.run_app(boxed_app(app)).await;
        // A real SCM sends nothing to a stopped service: controls still to come are dropped.
        scm.abort();
        let exit_code = service.stopped(&result);
        let responses = responses.lock().unwrap_or_else(|e| e.into_inner()).clone();
        ScmRun {
            statuses: recorder.statuses(),
            events: recorder.events(),
            responses,
            result: result.map_err(|e| e.to_string()),
            exit_code,
        }
    }
}

/// What a simulated service run produced.
#[derive(Debug, Clone)]
pub struct ScmRun {
    /// Every status the SCM was told, in order.
    pub statuses: Vec<TimedStatus>,
    /// Every Event Log entry, in order.
    pub events: Vec<(EventLevel, String)>,
    /// What the control handler answered each control that arrived before the service stopped.
    pub responses: Vec<(ScmControl, ControlResponse)>,
    /// What the program returned (its error as text).
    pub result: Result<ShutdownReport, String>,
    /// The process exit code.
    pub exit_code: i32,
}

impl ScmRun {
    /// The drain's report.
    ///
    /// # Panics
    /// If the program failed instead of returning one.
    pub fn report(&self) -> &ShutdownReport {
        match &self.result {
            Ok(report) => report,
            Err(e) => panic!("the program failed instead of draining: {e}"),
        }
    }

    /// The sequence of states, each run of one state counted once.
    pub fn states(&self) -> Vec<ServiceState> {
        states_of(&self.statuses)
    }

    /// The last status (`STOPPED`, if the host kept the protocol).
    ///
    /// # Panics
    /// If nothing was reported.
    pub fn last(&self) -> &ServiceStatus {
        &self.statuses.last().expect("no status was reported").status
    }

    /// The `STOP_PENDING` statuses, in order.
    pub fn stop_pending(&self) -> Vec<TimedStatus> {
        self.statuses
            .iter()
            .filter(|s| s.status.state == ServiceState::StopPending)
            .cloned()
            .collect()
    }

    /// Everything a real SCM would hold against this run, in words (empty: none):
    /// `START_PENDING` first; `STOPPED` last and only once, with an error code exactly when the
    /// program did not stop cleanly; checkpoints that start at 1 and grow by one at every report
    /// of a pending state (0 elsewhere); and each pending report followed by the next one before
    /// its wait hint ran out.
    pub fn protocol_violations(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let Some(first) = self.statuses.first() else {
            return vec!["no status was reported".to_owned()];
        };
        if first.status.state != ServiceState::StartPending {
            problems.push(format!(
                "first status is {}, not START_PENDING",
                first.status.state
            ));
        }
        let stopped: Vec<_> = (self.statuses.iter().enumerate())
            .filter(|(_, s)| s.status.state == ServiceState::Stopped)
            .map(|(i, _)| i)
            .collect();
        if stopped != [self.statuses.len() - 1] {
            problems.push(format!(
                "STOPPED must be reported once, last; it was at {stopped:?} of {}",
                self.statuses.len()
            ));
        }
        let want = ServiceExitCode::from_exit_code(self.exit_code);
        if self.last().exit_code != want {
            problems.push(format!(
                "STOPPED with exit code {}, but the program's exit code {} calls for {want}",
                self.last().exit_code,
                self.exit_code
            ));
        }
        for (i, s) in self.statuses.iter().enumerate() {
            let previous = i.checked_sub(1).map(|p| &self.statuses[p]);
            let expected = match previous {
                _ if !s.status.state.is_pending() => 0,
                Some(p) if p.status.state == s.status.state => p.status.checkpoint + 1,
                _ => 1,
            };
            if s.status.checkpoint != expected {
                problems.push(format!(
                    "status {i} ({}) has checkpoint {}, expected {expected}",
                    s.status.state, s.status.checkpoint
                ));
            }
            if let Some(next) = self.statuses.get(i + 1)
                && s.status.state.is_pending()
                && next.at > s.at + s.status.wait_hint
            {
                problems.push(format!(
                    "status {i} ({} checkpoint {}) promised news within {:?}, the next came after {:?}",
                    s.status.state,
                    s.status.checkpoint,
                    s.status.wait_hint,
                    next.at - s.at
                ));
            }
        }
        problems
    }
}
