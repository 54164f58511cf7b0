//! Progress of a running drain, for the host to report (SCM checkpoints and wait hints, systemd
//! `EXTEND_TIMEOUT_USEC` and `STATUS=`, a console spinner).

use std::time::Duration;

use crate::plan::Stage;
use crate::reason::StopReason;
use crate::report::{PhaseOutcome, ShutdownReport};

/// What just happened in the drain.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case", tag = "event"))]
pub enum ProgressEvent {
    /// The drain started.
    Started,
    /// A phase started.
    PhaseStarted,
    /// A phase is still running (at least once per tick interval).
    Tick,
    /// A phase ended.
    PhaseEnded {
        /// How it ended.
        outcome: PhaseOutcome,
    },
}

/// The phase a progress report is about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PhaseProgress {
    /// Position in the plan, from 0.
    pub index: usize,
    /// Number of phases in the plan.
    pub count: usize,
    /// The phase's name.
    pub name: String,
    /// The phase's stage.
    pub stage: Stage,
    /// Time before the phase is cut off.
    #[cfg_attr(feature = "serde", serde(with = "crate::report::millis"))]
    pub remaining: Duration,
    /// The phase's own progress line, if it set one.
    pub message: Option<String>,
}

/// One progress report.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Progress {
    /// What happened.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub event: ProgressEvent,
    /// Grows by one at every report: the SCM's `dwCheckPoint`.
    pub checkpoint: u32,
    /// Why the program is stopping.
    pub reason: StopReason,
    /// The phase concerned (none for [`ProgressEvent::Started`]).
    pub phase: Option<PhaseProgress>,
    /// Time since the drain started.
    #[cfg_attr(feature = "serde", serde(with = "crate::report::millis"))]
    pub elapsed: Duration,
    /// Time before the stop's deadline (when the platform will end the process).
    #[cfg_attr(feature = "serde", serde(with = "crate::report::millis"))]
    pub remaining: Duration,
}

impl Progress {
    /// A line a person can read: `phase 2/5 "flush group commit": 1.2 s left`.
    pub fn status_line(&self) -> String {
        match &self.phase {
            None => format!("stopping ({})", self.reason),
            Some(p) => {
                let mut line = format!(
                    "stopping ({}): phase {}/{} {} \"{}\"",
                    self.reason,
                    p.index + 1,
                    p.count,
                    p.stage,
                    p.name
                );
                if let Some(m) = &p.message {
                    line.push_str(": ");
                    line.push_str(m);
                }
                line
            }
        }
    }
}

/// Receives progress while the drain runs. Calls are made from the drain's task, in order, and
/// must return quickly (a status call to the SCM, a datagram to systemd).
pub trait Reporter: Send + Sync {
    /// A progress report (at least one per tick interval while a phase runs).
    fn progress(&self, progress: &Progress);

    /// The drain finished; `report` is what it did.
    fn finished(&self, _report: &ShutdownReport) {}
}

impl<F: Fn(&Progress) + Send + Sync> Reporter for F {
    fn progress(&self, progress: &Progress) {
        self(progress)
    }
}

/// A reporter that reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Reporter for NoProgress {
    fn progress(&self, _: &Progress) {}
}

/// Sends every report to several reporters in turn.
impl<const N: usize> Reporter for [&dyn Reporter; N] {
    fn progress(&self, progress: &Progress) {
        for r in self {
            r.progress(progress);
        }
    }

    fn finished(&self, report: &ShutdownReport) {
        for r in self {
            r.finished(report);
        }
    }
}
