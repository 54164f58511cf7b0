//! The drain plan: ordered, named phases, each with a budget carved out of the stop's budget.
//!
//! Phases run in [`Stage`] order (stop accepting → finish in-flight → flush → close stores →
//! release). When a phase starts it gets its weight's share of the time that is left, after the
//! safety margin, among the phases still to run: time saved early flows to later phases, and a
//! phase that hangs is cut off at its share so that the phases after it — flush and close, which
//! make data durable — always get theirs.

mod run;

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::reason::StopReason;
use crate::shutdown::Shutdown;

/// Why a phase failed; any error type converts into it.
pub type PhaseError = Box<dyn std::error::Error + Send + Sync + 'static>;

type PhaseFuture = Pin<Box<dyn Future<Output = Result<(), PhaseError>> + Send + 'static>>;
type PhaseAction = Box<dyn FnOnce(PhaseContext) -> PhaseFuture + Send + 'static>;

/// Where a phase stands in the drain. Phases run in this order, whatever order they were added in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Stage {
    /// Stop taking new work: readiness off, listeners closed, intake refused.
    StopAccepting,
    /// Let accepted work finish: in-flight requests, tracked tasks.
    FinishInFlight,
    /// Make buffered data durable (group commit drained).
    Flush,
    /// Close stores cleanly (checkpoint, close files and connections).
    CloseStores,
    /// Release locks and remove temporary files.
    Release,
}

impl Stage {
    /// The default weight of a phase of this stage: its share of the time left.
    pub const fn default_weight(self) -> u32 {
        match self {
            Stage::StopAccepting => 1,
            Stage::FinishInFlight => 8,
            Stage::Flush => 4,
            Stage::CloseStores => 2,
            Stage::Release => 1,
        }
    }

    /// The default criticality: only finishing in-flight work can be given up on a hurry.
    pub const fn default_criticality(self) -> Criticality {
        match self {
            Stage::FinishInFlight => Criticality::BestEffort,
            _ => Criticality::Required,
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::StopAccepting => "stop accepting",
            Stage::FinishInFlight => "finish in-flight",
            Stage::Flush => "flush",
            Stage::CloseStores => "close stores",
            Stage::Release => "release",
        })
    }
}

/// Whether a phase may be skipped when the stop is hurried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Criticality {
    /// Always runs, even after earlier phases overran or a second interrupt: durability depends on it.
    Required,
    /// Cut short by a second interrupt, skipped by a "flush now" stop (SCM SHUTDOWN).
    BestEffort,
}

/// One named step of the drain.
#[must_use = "a phase does nothing until it is added to a DrainPlan"]
pub struct Phase {
    pub(crate) name: String,
    pub(crate) stage: Stage,
    pub(crate) weight: u32,
    pub(crate) at_least: Duration,
    pub(crate) wants: Duration,
    pub(crate) criticality: Criticality,
    pub(crate) action: PhaseAction,
}

impl fmt::Debug for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Phase")
            .field("name", &self.name)
            .field("stage", &self.stage)
            .field("weight", &self.weight)
            .field("at_least", &self.at_least)
            .field("wants", &self.wants)
            .field("criticality", &self.criticality)
            .finish_non_exhaustive()
    }
}

impl Phase {
    /// A phase of `stage` named `name` that runs `action`. The action's future runs as its own
    /// tokio task, so that blocking its thread does not stop the drain's progress reports or
    /// deadlines (on a multi-thread runtime; see [`drain`]). When the phase is cut off (its budget
    /// runs out, a second stop hurries a best-effort phase) the task is aborted: the future is
    /// dropped at its next await point, so it must be cancel-safe (or hand its work to a thread
    /// that finishes it regardless). The drain does not wait for that: a future that is blocking
    /// its thread at the cut-off runs on until it yields, while the next phases already run.
    pub fn new<F, Fut, E>(stage: Stage, name: impl Into<String>, action: F) -> Self
    where
        F: FnOnce(PhaseContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<PhaseError>,
    {
        Phase {
            name: name.into(),
            stage,
            weight: stage.default_weight(),
            at_least: match stage.default_criticality() {
                Criticality::Required => Duration::from_millis(100),
                Criticality::BestEffort => Duration::ZERO,
            },
            wants: Duration::ZERO,
            criticality: stage.default_criticality(),
            action: Box::new(move |ctx| {
                let fut = action(ctx);
                Box::pin(async move { fut.await.map_err(Into::into) })
            }),
        }
    }

    /// This phase's share of the remaining time, relative to the other phases' weights.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight.max(1);
        self
    }

    /// The time this phase is known to need (a load balancer's notice period, say), which its
    /// weight's share might not cover: its budget is at least this much as long as that is no
    /// more than half of the time left, so that a short stop still leaves the later phases theirs.
    pub fn wants(mut self, wants: Duration) -> Self {
        self.wants = wants;
        self
    }

    /// The least time this phase gets, even when the stop's budget is already spent.
    pub fn at_least(mut self, at_least: Duration) -> Self {
        self.at_least = at_least;
        self
    }

    /// Makes the phase optional: cut first when time is short (a second interrupt, a
    /// "flush now" stop).
    pub fn best_effort(mut self) -> Self {
        self.criticality = Criticality::BestEffort;
        self
    }

    /// Makes the phase required: it runs even after a second interrupt.
    pub fn required(mut self) -> Self {
        self.criticality = Criticality::Required;
        self
    }
}

/// What a running phase can see and say.
#[derive(Debug, Clone)]
pub struct PhaseContext {
    pub(crate) deadline: Instant,
    pub(crate) shutdown: Shutdown,
    pub(crate) notes: Arc<Mutex<PhaseNotes>>,
    pub(crate) handoff: Handoff,
}

/// Values a phase hands to a later phase of the same drain, one per type.
#[derive(Clone, Default)]
pub(crate) struct Handoff(Arc<Mutex<HashMap<TypeId, Box<dyn Any + Send>>>>);

impl fmt::Debug for Handoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held = self.0.lock().unwrap_or_else(|e| e.into_inner()).len();
        f.debug_struct("Handoff").field("held", &held).finish()
    }
}

#[derive(Debug, Default)]
pub(crate) struct PhaseNotes {
    pub(crate) progress: Option<String>,
    pub(crate) detail: Option<String>,
}

impl PhaseContext {
    /// When this phase will be cut off.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Time left before this phase is cut off.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Why the program is stopping.
    pub fn reason(&self) -> StopReason {
        self.shutdown
            .state()
            .reason
            .unwrap_or(StopReason::Requested)
    }

    /// The shutdown handle (for its tracked tasks, or to see a hurry).
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// A line for the host's progress display ("flushed 300 of 1000").
    pub fn set_progress(&self, message: impl Into<String>) {
        self.notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .progress = Some(message.into());
    }

    /// A line for the shutdown report ("flushed 1000 records in 3 batches").
    pub fn set_detail(&self, detail: impl Into<String>) {
        self.notes.lock().unwrap_or_else(|e| e.into_inner()).detail = Some(detail.into());
    }

    /// Hands `value` to a later phase of this drain, which [`take`](PhaseContext::take)s it by
    /// its type: the listener phase hands over the open connections, the flush phase the store it
    /// got back. One value per type (a second `put` replaces the first); wrap plain types in a
    /// type of your own. What no phase takes is dropped when the drain ends.
    ///
    /// ```
    /// # use winddown::{DrainPlan, Stage};
    /// struct Connections(Vec<u32>);
    /// let plan = DrainPlan::new()
    ///     .phase(Stage::StopAccepting, "close listener", |ctx| async move {
    ///         ctx.put(Connections(vec![1, 2]));
    ///         Ok::<_, std::io::Error>(())
    ///     })
    ///     .phase(Stage::FinishInFlight, "in-flight", |ctx| async move {
    ///         let Some(Connections(open)) = ctx.take::<Connections>() else {
    ///             return Err("the listener phase handed over no connections".into());
    ///         };
    ///         // … wait for `open` to finish …
    ///         # let _ = open;
    ///         Ok::<_, winddown::PhaseError>(())
    ///     });
    /// ```
    pub fn put<T: Send + 'static>(&self, value: T) {
        self.handoff
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(TypeId::of::<T>(), Box::new(value));
    }

    /// Takes the value of type `T` an earlier phase [`put`](PhaseContext::put), if there is one
    /// (none if that phase failed or was cut off before it put it).
    pub fn take<T: Send + 'static>(&self) -> Option<T> {
        let value = self
            .handoff
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&TypeId::of::<T>())?;
        // Keyed by `TypeId::of::<T>()`: the downcast cannot fail.
        value.downcast::<T>().ok().map(|b| *b)
    }
}

/// An ordered set of phases to run when the program is told to stop.
///
/// ```
/// use winddown::{DrainPlan, Stage};
/// let plan = DrainPlan::new()
///     .phase(Stage::StopAccepting, "close listener", |_| async { Ok::<_, std::io::Error>(()) })
///     .wait_for_tasks()
///     .phase(Stage::Flush, "flush log", |ctx| async move {
///         ctx.set_detail("42 records flushed");
///         Ok::<_, std::io::Error>(())
///     });
/// assert_eq!(plan.len(), 3);
/// ```
#[must_use = "a drain plan does nothing until it is run"]
#[derive(Debug)]
pub struct DrainPlan {
    pub(crate) phases: Vec<Phase>,
    pub(crate) margin: Option<Duration>,
    pub(crate) tick: Duration,
}

impl Default for DrainPlan {
    fn default() -> Self {
        Self::new()
    }
}

impl DrainPlan {
    /// An empty plan.
    pub fn new() -> Self {
        DrainPlan {
            phases: Vec::new(),
            margin: None,
            tick: Duration::from_millis(500),
        }
    }

    /// Adds a phase built with [`Phase::new`] (to set its weight or criticality).
    pub fn with(mut self, phase: Phase) -> Self {
        self.phases.push(phase);
        self
    }

    /// Adds a phase with the stage's default weight and criticality.
    pub fn phase<F, Fut, E>(self, stage: Stage, name: impl Into<String>, action: F) -> Self
    where
        F: FnOnce(PhaseContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<PhaseError>,
    {
        self.with(Phase::new(stage, name, action))
    }

    /// Adds a [`Stage::FinishInFlight`] phase that waits for the tracked tasks
    /// ([`Shutdown::tasks`]); the names of those still running at its deadline go into the report.
    pub fn wait_for_tasks(self) -> Self {
        // The runner cuts the wait at the phase's deadline and records the stragglers' names.
        self.phase(Stage::FinishInFlight, "tracked tasks", |ctx| async move {
            ctx.shutdown().tasks().wait_all().await;
            Ok::<_, PhaseError>(())
        })
    }

    /// Time kept free at the end of the budget, so the process exits before the platform ends it.
    /// Default: a tenth of the budget, at most one second.
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = Some(margin);
        self
    }

    /// How often progress is reported while a phase runs. Default 500 ms (hosts need at least one
    /// report a second).
    pub fn tick(mut self, tick: Duration) -> Self {
        self.tick = tick.max(Duration::from_millis(10));
        self
    }

    /// The number of phases.
    pub fn len(&self) -> usize {
        self.phases.len()
    }

    /// Whether the plan has no phases.
    pub fn is_empty(&self) -> bool {
        self.phases.is_empty()
    }

    /// The phases' names and stages, in the order they will run.
    pub fn outline(&self) -> Vec<(Stage, String)> {
        let mut outline: Vec<_> = self
            .phases
            .iter()
            .map(|p| (p.stage, p.name.clone()))
            .collect();
        outline.sort_by_key(|(stage, _)| *stage);
        outline
    }
}

pub use run::drain;
