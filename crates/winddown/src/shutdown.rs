//! The shutdown handle: trigger a stop from any source, await it, escalate it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::reason::{Budgets, StopReason, StopSender};
use crate::tasks::Tasks;

/// How far a stop has escalated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Escalation {
    /// No stop yet.
    Running,
    /// The first trigger: run the whole drain plan.
    Draining,
    /// A person's second stop, or a "flush now" source: stop waiting for in-flight work, but
    /// still flush and close.
    Hurry,
    /// A person's third stop: exit at once. Never reached by a service manager's stops.
    Force,
}

/// What the drain needs to know about the stop, as one value watched by the drain runner.
#[derive(Debug, Clone)]
pub struct StopState {
    /// How far the stop has escalated.
    pub escalation: Escalation,
    /// The first reason (what the report names), if any.
    pub reason: Option<StopReason>,
    /// Every trigger so far, in order.
    pub triggers: Vec<StopReason>,
    /// When the process will be ended: each trigger can only bring this closer.
    pub deadline: Option<Instant>,
}

/// A cheaply clonable handle to trigger a stop and to wait for one.
///
/// Every stop source — a signal, a console event, the Service Control Manager, the program itself
/// — calls [`Shutdown::trigger`] with its [`StopReason`]. The first trigger starts the drain with
/// that source's budget, and every later one can only bring the deadline closer. A person's
/// second stop (Ctrl+C, `SIGINT`, …) hurries it (in-flight work is no longer waited for, but data
/// is still flushed and stores closed), and their third means "exit now". A service manager's
/// repeated stops never escalate: only `SERVICE_CONTROL_SHUTDOWN` ("flush now") hurries the drain
/// (see [`StopSender`]).
#[derive(Debug, Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    budgets: Mutex<Budgets>,
    state: watch::Sender<StopState>,
    requested: CancellationToken,
    hurry: CancellationToken,
    tasks: Tasks,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A handle with the platform's default budgets.
    pub fn new() -> Self {
        Self::with_budgets(Budgets::default())
    }

    /// A handle with the given budgets.
    pub fn with_budgets(budgets: Budgets) -> Self {
        let requested = CancellationToken::new();
        let (state, _) = watch::channel(StopState {
            escalation: Escalation::Running,
            reason: None,
            triggers: Vec::new(),
            deadline: None,
        });
        Shutdown {
            inner: Arc::new(Inner {
                budgets: Mutex::new(budgets),
                state,
                hurry: CancellationToken::new(),
                tasks: Tasks::new(requested.clone()),
                requested,
            }),
        }
    }

    /// The budget `reason` would get.
    pub fn budget_for(&self, reason: StopReason) -> Duration {
        lock(&self.inner.budgets).get(reason)
    }

    /// Overrides one source's budget (for example once the host has read the service's configured
    /// preshutdown timeout).
    pub fn set_budget(&self, reason: StopReason, budget: Duration) {
        lock(&self.inner.budgets).set(reason, budget);
    }

    /// Records a stop from `reason` and returns how far the stop has now escalated.
    ///
    /// Safe to call from any thread, including an OS callback that is not inside the runtime.
    /// Each trigger can only bring the deadline closer: a `SERVICE_CONTROL_SHUTDOWN` arriving
    /// during a preshutdown drain cuts the remaining time to the shutdown's 5 s.
    pub fn trigger(&self, reason: StopReason) -> Escalation {
        let budget = self.budget_for(reason);
        let mut escalation = Escalation::Running;
        self.inner.state.send_modify(|state| {
            let now = Instant::now();
            let deadline = now + budget;
            state.deadline = Some(state.deadline.map_or(deadline, |d| d.min(deadline)));
            state.reason.get_or_insert(reason);
            state.triggers.push(reason);
            state.escalation = state.escalation.max(escalation_of(&state.triggers));
            escalation = state.escalation;
        });
        tracing::info!(
            reason = reason.as_str(),
            ?escalation,
            budget_ms = budget.as_millis() as u64,
            "stop requested: {reason}"
        );
        if escalation >= Escalation::Hurry {
            self.inner.hurry.cancel();
        }
        self.inner.requested.cancel();
        escalation
    }

    /// Asks the program to stop, as the program itself ([`StopReason::Requested`]).
    pub fn request(&self) -> Escalation {
        self.trigger(StopReason::Requested)
    }

    /// Whether a stop has been triggered.
    pub fn is_requested(&self) -> bool {
        self.inner.requested.is_cancelled()
    }

    /// Completes when the first stop is triggered.
    ///
    /// # Cancellation safety
    /// Cancel-safe: dropping it loses nothing, and a new call completes at once once requested.
    pub fn requested(&self) -> WaitForCancellationFutureOwned {
        self.inner.requested.clone().cancelled_owned()
    }

    /// Completes when the stop is hurried (a second trigger, or a "flush now" source).
    ///
    /// # Cancellation safety
    /// Cancel-safe, like [`Shutdown::requested`].
    pub fn hurried(&self) -> WaitForCancellationFutureOwned {
        self.inner.hurry.clone().cancelled_owned()
    }

    /// A token cancelled when the stop is requested, for code that already speaks
    /// `tokio_util`'s `CancellationToken` (axum's graceful shutdown, `select!` loops).
    pub fn token(&self) -> CancellationToken {
        self.inner.requested.child_token()
    }

    /// The current stop state (reason, escalation, deadline).
    pub fn state(&self) -> StopState {
        self.inner.state.borrow().clone()
    }

    /// A receiver that sees every change of the stop state.
    pub fn watch(&self) -> watch::Receiver<StopState> {
        self.inner.state.subscribe()
    }

    /// The tracked tasks of this program.
    pub fn tasks(&self) -> &Tasks {
        &self.inner.tasks
    }
}

/// How far `triggers` take a stop: the first one starts the drain; a person's second stop hurries
/// it and their third forces an exit; a "flush now" source hurries it at once, whatever came
/// before. A manager's stops, however many, never escalate beyond that: STOP → PRESHUTDOWN →
/// SHUTDOWN is the SCM's normal sequence when a reboot interrupts `sc stop`, not three requests
/// to give up (see [`StopSender`]).
fn escalation_of(triggers: &[StopReason]) -> Escalation {
    if triggers.is_empty() {
        return Escalation::Running;
    }
    let by_person = triggers
        .iter()
        .filter(|r| r.sender() == StopSender::Person)
        .count();
    let mut escalation = match by_person {
        0 | 1 => Escalation::Draining,
        2 => Escalation::Hurry,
        _ => Escalation::Force,
    };
    if triggers
        .iter()
        .any(|r| r.drain_mode() == crate::DrainMode::FlushOnly)
    {
        escalation = escalation.max(Escalation::Hurry);
    }
    escalation
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the data half-written (plain inserts), so a
    // poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn triggers_escalate_and_only_bring_the_deadline_closer() {
        let s = Shutdown::new();
        assert!(!s.is_requested());
        let t0 = Instant::now();
        assert_eq!(s.trigger(StopReason::ScmPreshutdown), Escalation::Draining);
        assert_eq!(s.state().deadline, Some(t0 + Duration::from_secs(10)));
        s.requested().await;
        // SHUTDOWN during a preshutdown drain: hurry, and the 5 s budget wins.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(s.trigger(StopReason::ScmShutdown), Escalation::Hurry);
        assert_eq!(s.state().deadline, Some(t0 + Duration::from_secs(6)));
        s.hurried().await;
        // A longer budget never extends the deadline.
        assert_eq!(s.trigger(StopReason::SigInt), Escalation::Hurry);
        assert_eq!(s.state().deadline, Some(t0 + Duration::from_secs(6)));
        assert_eq!(s.state().reason, Some(StopReason::ScmPreshutdown));
        assert_eq!(s.state().triggers.len(), 3);
    }

    /// Issue #14 item 5: a reboot during `sc stop` sends STOP, PRESHUTDOWN, SHUTDOWN — the
    /// manager's own sequence, which hurries (SHUTDOWN is "flush now") but never forces. Nor does
    /// a SIGTERM sent again (a container runtime, a restarted kubelet), nor the console's close,
    /// logoff and shutdown events, nor the program asking again.
    #[test]
    fn a_managers_stops_never_force() {
        let s = Shutdown::new();
        assert_eq!(s.trigger(StopReason::ScmStop), Escalation::Draining);
        assert_eq!(s.trigger(StopReason::ScmPreshutdown), Escalation::Draining);
        assert_eq!(s.trigger(StopReason::ScmShutdown), Escalation::Hurry);
        assert_eq!(s.trigger(StopReason::ScmShutdown), Escalation::Hurry);

        for repeated in [
            StopReason::SigTerm,
            StopReason::SigHup,
            StopReason::Requested,
            StopReason::ConsoleClose,
        ] {
            let s = Shutdown::new();
            for _ in 0..5 {
                assert_eq!(s.trigger(repeated), Escalation::Draining, "{repeated}");
            }
        }
        let s = Shutdown::new();
        for reason in [
            StopReason::ConsoleClose,
            StopReason::Logoff,
            StopReason::SystemShutdown,
            StopReason::SigTerm,
        ] {
            assert_eq!(s.trigger(reason), Escalation::Draining, "{reason}");
        }
    }

    /// A person's second stop hurries and the third forces, whatever the manager sent before, and
    /// whichever keys they press (Ctrl+C, Ctrl+Break, SIGINT, SIGQUIT count alike).
    #[test]
    fn a_persons_third_stop_forces() {
        let s = Shutdown::new();
        assert_eq!(s.trigger(StopReason::CtrlC), Escalation::Draining);
        assert_eq!(s.trigger(StopReason::CtrlC), Escalation::Hurry);
        assert_eq!(s.trigger(StopReason::CtrlC), Escalation::Force);

        let s = Shutdown::new();
        assert_eq!(s.trigger(StopReason::SigTerm), Escalation::Draining);
        assert_eq!(s.trigger(StopReason::SigTerm), Escalation::Draining);
        assert_eq!(s.trigger(StopReason::SigInt), Escalation::Draining);
        assert_eq!(s.trigger(StopReason::SigQuit), Escalation::Hurry);
        assert_eq!(s.trigger(StopReason::SigTerm), Escalation::Hurry);
        assert_eq!(s.trigger(StopReason::SigInt), Escalation::Force);

        let s = Shutdown::new();
        assert_eq!(s.trigger(StopReason::CtrlBreak), Escalation::Draining);
        assert_eq!(s.trigger(StopReason::ConsoleClose), Escalation::Draining);
        assert_eq!(s.trigger(StopReason::CtrlC), Escalation::Hurry);
        assert_eq!(s.trigger(StopReason::CtrlBreak), Escalation::Force);
        // Escalation never goes back.
        assert_eq!(s.trigger(StopReason::SigTerm), Escalation::Force);
    }

    #[test]
    fn every_reason_has_a_sender() {
        let people: Vec<_> = StopReason::all()
            .filter(|r| r.sender() == StopSender::Person)
            .collect();
        assert_eq!(
            people,
            [
                StopReason::CtrlC,
                StopReason::CtrlBreak,
                StopReason::SigInt,
                StopReason::SigQuit
            ]
        );
    }

    #[test]
    fn trigger_works_outside_a_runtime() {
        let s = Shutdown::new();
        assert_eq!(s.trigger(StopReason::CtrlC), Escalation::Draining);
        assert!(s.is_requested());
    }
}
