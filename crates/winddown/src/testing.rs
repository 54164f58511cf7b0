//! Helpers for testing a program's shutdown in its own unit tests: simulate any stop source, on a
//! paused tokio clock, and assert the report and the progress the host would have shown.
//!
//! ```
//! use std::time::Duration;
//! use winddown::{DrainPlan, Outcome, Stage, StopReason, testing};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! // Use `#[tokio::test(start_paused = true)]` in a test: time only moves when the drain waits.
//! let plan = DrainPlan::new().phase(Stage::Flush, "flush", |_| async {
//!     tokio::time::sleep(Duration::from_secs(2)).await;
//!     Ok::<_, std::io::Error>(())
//! });
//! let run = testing::simulate(StopReason::ScmPreshutdown, plan).await;
//! assert_eq!(run.report.reason, StopReason::ScmPreshutdown);
//! assert_eq!(run.report.outcome, Outcome::Clean);
//! assert!(run.progress.len() >= 4); // started, phase started, ticks, phase ended
//! # }
//! ```

use std::sync::{Arc, Mutex};

use crate::{DrainPlan, Progress, Reporter, Shutdown, ShutdownReport, StopReason, drain};

mod scm;
/// Simulating the Windows Service Control Manager (on any platform): [`ScmScenario`].
pub use scm::{ScmRecorder, ScmRun, ScmScenario, TimedStatus};

/// A [`Reporter`] that keeps everything it is told, for assertions.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    inner: Arc<Mutex<Recorded>>,
}

#[derive(Debug, Default)]
struct Recorded {
    progress: Vec<Progress>,
    report: Option<ShutdownReport>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every progress report so far.
    pub fn progress(&self) -> Vec<Progress> {
        self.lock().progress.clone()
    }

    /// The final report, once the drain finished.
    pub fn report(&self) -> Option<ShutdownReport> {
        self.lock().report.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Reporter for Recorder {
    fn progress(&self, progress: &Progress) {
        self.lock().progress.push(progress.clone());
    }

    fn finished(&self, report: &ShutdownReport) {
        self.lock().report = Some(report.clone());
    }
}

/// What a simulated stop produced.
#[derive(Debug, Clone)]
pub struct Simulated {
    /// The drain's report.
    pub report: ShutdownReport,
    /// Every progress report, in order.
    pub progress: Vec<Progress>,
}

/// Triggers `reason` on a fresh [`Shutdown`] with the default budgets and drains `plan`,
/// recording progress.
pub async fn simulate(reason: StopReason, plan: DrainPlan) -> Simulated {
    simulate_on(&Shutdown::new(), reason, plan).await
}

/// Like [`simulate`], on a handle the test prepared (custom budgets, tracked tasks).
pub async fn simulate_on(shutdown: &Shutdown, reason: StopReason, plan: DrainPlan) -> Simulated {
    let recorder = Recorder::new();
    shutdown.trigger(reason);
    let report = drain(plan, shutdown, &recorder).await;
    Simulated {
        report,
        progress: recorder.progress(),
    }
}
