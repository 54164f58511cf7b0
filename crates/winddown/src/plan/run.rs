//! The drain runner: runs a plan's phases in order within the stop's budget, reporting progress.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use super::{Criticality, DrainPlan, Handoff, Phase, PhaseContext, PhaseNotes, Stage};
use crate::progress::{PhaseProgress, Progress, ProgressEvent, Reporter};
use crate::reason::StopReason;
use crate::report::{
    CutOffBy, Outcome, PhaseOutcome, PhaseReport, ShutdownReport, SkipReason, error_chain,
};
use crate::shutdown::{Escalation, Shutdown, StopState};

/// Waits for `shutdown` to be requested, then runs `plan` within the stop's budget, reporting
/// progress to `reporter`, and returns what it did. The report is also logged as one structured
/// event (target `winddown::report`).
///
/// A hurry during the drain (a person's second stop, or a "flush now" source) skips what is left
/// of the best-effort phases (waiting for in-flight work) but still runs the required ones (flush,
/// close, release); a person's third stop abandons the drain and returns a [`Outcome::Forced`]
/// report at once (the console host then exits the process).
///
/// Each phase runs as its own task ([`tokio::spawn`]), so that a phase that blocks its thread
/// (synchronous I/O, a blocking close) does not stop the progress reports the host needs to keep
/// the service manager waiting, nor its own cut-off: on a multi-thread runtime (what the hosts
/// build) the drain goes on on another worker. A phase that is cut off is aborted and the drain
/// moves on at once; its future is dropped at its next await point (see [`Phase::new`]). On a
/// current-thread runtime a blocking phase still stalls everything until it yields.
///
/// # Cancellation safety
/// Not cancel-safe: dropping the future abandons the drain in the middle of a phase (the running
/// phase's task is aborted).
pub async fn drain(
    plan: DrainPlan,
    shutdown: &Shutdown,
    reporter: &dyn Reporter,
) -> ShutdownReport {
    shutdown.requested().await;
    let mut runner = Runner::new(shutdown, reporter, plan.tick);
    let budget = runner.deadline().saturating_duration_since(runner.started);
    let margin = plan
        .margin
        .unwrap_or_else(|| (budget / 10).min(Duration::from_secs(1)));
    let mut phases = plan.phases;
    phases.sort_by_key(|p| p.stage); // stable: phases of one stage keep the order they were added in
    let count = phases.len();
    runner.emit(ProgressEvent::Started, None);

    let mut reports = Vec::with_capacity(count);
    let mut stragglers = None;
    let mut pending: Vec<Phase> = phases.into_iter().rev().collect();
    let mut index = 0;
    while let Some(phase) = pending.pop() {
        let state = runner.state();
        let skip = if state.escalation == Escalation::Force {
            Some(SkipReason::Force)
        } else if state.escalation >= Escalation::Hurry
            && phase.criticality == Criticality::BestEffort
        {
            Some(SkipReason::Hurry)
        } else {
            None
        };
        let report = match skip {
            Some(why) => PhaseReport {
                name: phase.name,
                stage: phase.stage,
                criticality: phase.criticality,
                budget: Duration::ZERO,
                duration: Duration::ZERO,
                outcome: PhaseOutcome::Skipped { why },
                detail: None,
            },
            None => {
                // This phase's weight's share of what is left, among the phases that will still run.
                let hurried = state.escalation >= Escalation::Hurry;
                let weights: u32 = phase.weight
                    + pending
                        .iter()
                        .filter(|p| !(hurried && p.criticality == Criticality::BestEffort))
                        .map(|p| p.weight)
                        .sum::<u32>();
                let left = state
                    .deadline
                    .unwrap_or(runner.started)
                    .saturating_duration_since(Instant::now())
                    .saturating_sub(margin);
                let share = left.mul_f64(f64::from(phase.weight) / f64::from(weights));
                let budget = share.max(phase.wants.min(left / 2)).max(phase.at_least);
                runner.run_phase(phase, index, count, budget).await
            }
        };
        if report.stage == Stage::FinishInFlight && !matches!(report.outcome, PhaseOutcome::Done) {
            stragglers.get_or_insert_with(|| shutdown.tasks().running());
        }
        runner.emit(
            ProgressEvent::PhaseEnded {
                outcome: report.outcome.clone(),
            },
            Some((
                index,
                count,
                &report.name,
                report.stage,
                Duration::ZERO,
                None,
            )),
        );
        reports.push(report);
        index += 1;
    }

    let state = runner.state();
    let outcome = if state.escalation == Escalation::Force {
        Outcome::Forced
    } else if reports
        .iter()
        .any(|r| matches!(r.outcome, PhaseOutcome::Failed { .. }))
    {
        Outcome::Failed
    } else if reports.iter().all(|r| r.outcome == PhaseOutcome::Done) {
        Outcome::Clean
    } else {
        Outcome::CutOff
    };
    let report = ShutdownReport {
        reason: state.reason.unwrap_or(StopReason::Requested),
        triggers: state.triggers,
        escalation: state.escalation,
        budget,
        started_at: runner.wall_start,
        duration: runner.started.elapsed(),
        phases: reports,
        stragglers: stragglers.unwrap_or_default(),
        outcome,
        exit_code_override: None,
    };
    tracing::info!(
        target: "winddown::report",
        reason = report.reason.as_str(),
        outcome = ?report.outcome,
        exit_code = report.exit_code(),
        duration_ms = report.duration.as_millis() as u64,
        report = %report.log_form(),
        "shutdown finished: {:?} in {:.3} s",
        report.outcome,
        report.duration.as_secs_f64()
    );
    reporter.finished(&report);
    report
}

/// Which phase a progress report is about: index, count, name, stage, time left, message.
type PhaseAt<'n> = (usize, usize, &'n str, Stage, Duration, Option<String>);

struct Runner<'a> {
    shutdown: &'a Shutdown,
    reporter: &'a dyn Reporter,
    watch: tokio::sync::watch::Receiver<StopState>,
    started: Instant,
    wall_start: SystemTime,
    checkpoint: u32,
    tick: Duration,
    handoff: Handoff,
}

impl<'a> Runner<'a> {
    fn new(shutdown: &'a Shutdown, reporter: &'a dyn Reporter, tick: Duration) -> Self {
        Runner {
            shutdown,
            reporter,
            watch: shutdown.watch(),
            started: Instant::now(),
            wall_start: SystemTime::now(),
            checkpoint: 0,
            tick,
            handoff: Handoff::default(),
        }
    }

    fn state(&mut self) -> StopState {
        self.watch.borrow_and_update().clone()
    }

    fn deadline(&self) -> Instant {
        self.watch.borrow().deadline.unwrap_or(self.started)
    }

    fn emit(&mut self, event: ProgressEvent, phase: Option<PhaseAt<'_>>) {
        self.checkpoint += 1;
        let state = self.watch.borrow();
        let progress = Progress {
            event,
            checkpoint: self.checkpoint,
            reason: state.reason.unwrap_or(StopReason::Requested),
            phase: phase.map(
                |(index, count, name, stage, remaining, message)| PhaseProgress {
                    index,
                    count,
                    name: name.to_owned(),
                    stage,
                    remaining,
                    message,
                },
            ),
            elapsed: self.started.elapsed(),
            remaining: state
                .deadline
                .unwrap_or(self.started)
                .saturating_duration_since(Instant::now()),
        };
        drop(state);
        self.reporter.progress(&progress);
    }

    /// Runs one phase until it ends, its budget runs out, or an escalation cuts it.
    async fn run_phase(
        &mut self,
        phase: Phase,
        index: usize,
        count: usize,
        budget: Duration,
    ) -> PhaseReport {
        let start = Instant::now();
        let deadline = start + budget;
        let notes = Arc::new(Mutex::new(PhaseNotes::default()));
        let ctx = PhaseContext {
            deadline,
            shutdown: self.shutdown.clone(),
            notes: notes.clone(),
            handoff: self.handoff.clone(),
        };
        let Phase {
            name,
            stage,
            criticality,
            action,
            ..
        } = phase;
        self.emit(
            ProgressEvent::PhaseStarted,
            Some((index, count, &name, stage, budget, None)),
        );
        tracing::info!(phase = %name, %stage, budget_ms = budget.as_millis() as u64, "drain phase started");

        // The phase runs as its own task, so that one blocking its thread (synchronous I/O, a
        // blocking close) stops neither the ticks nor the cut-offs below: on a multi-thread runtime
        // this loop goes on on another thread. Dropping the handle (a cut-off, or the drain's own
        // future dropped) aborts the task.
        let mut work = AbortOnDropHandle::new(tokio::spawn(
            action(ctx).instrument(tracing::Span::current()),
        ));
        let mut ticks = tokio::time::interval_at(start + self.tick, self.tick);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let outcome = loop {
            tokio::select! {
                biased;
                result = &mut work => break match result {
                    Ok(Ok(())) => PhaseOutcome::Done,
                    Ok(Err(e)) => PhaseOutcome::Failed { error: error_chain(&*e) },
                    // A panic in a phase is a failed phase, not a crashed drain: flush and close still run.
                    Err(e) if e.is_panic() => PhaseOutcome::Failed { error: panic_message(&e.into_panic()) },
                    // Cancelled: only by the runtime shutting down under the drain.
                    Err(e) => PhaseOutcome::Failed { error: e.to_string() },
                },
                _ = tokio::time::sleep_until(deadline) => break PhaseOutcome::CutOff { by: CutOffBy::Deadline },
                changed = self.watch.changed() => {
                    if changed.is_err() {
                        continue;
                    }
                    let escalation = self.watch.borrow_and_update().escalation;
                    if escalation == Escalation::Force {
                        break PhaseOutcome::CutOff { by: CutOffBy::Force };
                    }
                    if escalation >= Escalation::Hurry && criticality == Criticality::BestEffort {
                        break PhaseOutcome::CutOff { by: CutOffBy::Escalation };
                    }
                }
                _ = ticks.tick() => {
                    let message = notes.lock().unwrap_or_else(|e| e.into_inner()).progress.clone();
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    self.emit(ProgressEvent::Tick, Some((index, count, &name, stage, remaining, message)));
                }
            }
        };
        // Cut off: dropping the handle aborts the task, without waiting. The future is dropped at
        // its next await point, at once if it is waiting; one blocking its thread goes on until it
        // yields or returns, alongside the phases after it: waiting for it here would stall the
        // drain it was cut off to save. (A no-op when the phase ended.)
        drop(work);
        let duration = start.elapsed();
        let detail = notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .detail
            .take();
        match &outcome {
            PhaseOutcome::Done => {
                tracing::info!(phase = %name, duration_ms = duration.as_millis() as u64, "drain phase done")
            }
            other => {
                tracing::warn!(phase = %name, duration_ms = duration.as_millis() as u64, outcome = %other, "drain phase did not finish")
            }
        }
        PhaseReport {
            name,
            stage,
            criticality,
            budget,
            duration,
            outcome,
            detail,
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    format!("panicked: {what}")
}
