//! Phases that block their thread (synchronous I/O, a blocking close, `std::thread::sleep`), on a
//! real multi-thread runtime and real time: the drain keeps reporting progress and keeps its
//! deadlines, because each phase runs as its own task.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use winddown::testing::Recorder;
use winddown::{
    Budgets, CutOffBy, DrainPlan, Outcome, Phase, PhaseOutcome, Progress, ProgressEvent, Reporter,
    Shutdown, ShutdownReport, Stage, StopReason,
};

const MS: Duration = Duration::from_millis(1);

/// A [`Recorder`] that also notes when each report arrived.
#[derive(Debug, Default)]
struct Timed {
    at: Mutex<Vec<(Instant, Progress)>>,
    recorder: Recorder,
}

impl Timed {
    /// The ticks about phase `name` that arrived before `before`.
    fn ticks_before(&self, name: &str, before: Instant) -> Vec<Progress> {
        self.at
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, p)| {
                *at < before
                    && p.event == ProgressEvent::Tick
                    && p.phase.as_ref().is_some_and(|ph| ph.name == name)
            })
            .map(|(_, p)| p.clone())
            .collect()
    }
}

impl Reporter for Timed {
    fn progress(&self, progress: &Progress) {
        self.at
            .lock()
            .unwrap()
            .push((Instant::now(), progress.clone()));
        Reporter::progress(&self.recorder, progress);
    }

    fn finished(&self, report: &ShutdownReport) {
        self.recorder.finished(report);
    }
}

fn sigterm_within(budget: Duration) -> Shutdown {
    let shutdown = Shutdown::with_budgets(Budgets::new().with(StopReason::SigTerm, budget));
    shutdown.trigger(StopReason::SigTerm);
    shutdown
}

/// A phase that blocks its worker for 1.6 s still gets its 500 ms ticks, with its progress line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_phase_still_gets_its_ticks() {
    let unblocked: Arc<Mutex<Option<Instant>>> = Arc::default();
    let at = unblocked.clone();
    let plan = DrainPlan::new().tick(500 * MS).phase(
        Stage::CloseStores,
        "blocking close",
        move |ctx| async move {
            ctx.set_progress("closing the database");
            std::thread::sleep(1600 * MS);
            *at.lock().unwrap() = Some(Instant::now());
            Ok::<_, std::io::Error>(())
        },
    );
    let shutdown = sigterm_within(Duration::from_secs(20));
    let reporter = Timed::default();
    let report = winddown::drain(plan, &shutdown, &reporter).await;

    assert_eq!(report.outcome, Outcome::Clean, "{report:?}");
    let unblocked = unblocked.lock().unwrap().expect("the phase ran to its end");
    let ticks = reporter.ticks_before("blocking close", unblocked);
    assert!(
        ticks.len() >= 2,
        "ticks while the phase blocked for 1.6 s: {ticks:?}"
    );
    for tick in &ticks {
        let phase = tick.phase.as_ref().unwrap();
        assert_eq!(phase.message.as_deref(), Some("closing the database"));
        assert!(phase.remaining > Duration::ZERO);
    }
    assert_eq!(reporter.recorder.report(), Some(report));
}

/// A phase that blocks for 3 s with a 1 s budget is cut off by its deadline at about 1 s; the
/// required phase after it starts while it still blocks, and the drain ends well before it would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_phase_is_cut_off_at_its_deadline() {
    let sleep = Duration::from_secs(3);
    let slept = Arc::new(AtomicBool::new(false));
    let release_started: Arc<Mutex<Option<(Instant, bool)>>> = Arc::default();
    let (done, seen, started) = (slept.clone(), slept.clone(), release_started.clone());
    // Budget 2 s, no margin, equal weights: the blocking phase gets 1 s.
    let plan = DrainPlan::new()
        .margin(Duration::ZERO)
        .with(
            Phase::new(Stage::Flush, "stuck flush", move |_| async move {
                std::thread::sleep(sleep);
                done.store(true, Ordering::SeqCst);
                Ok::<_, std::io::Error>(())
            })
            .weight(1),
        )
        .with(
            Phase::new(Stage::Release, "release", move |_| async move {
                *started.lock().unwrap() = Some((Instant::now(), seen.load(Ordering::SeqCst)));
                Ok::<_, std::io::Error>(())
            })
            .weight(1),
        );
    let shutdown = sigterm_within(Duration::from_secs(2));
    let start = Instant::now();
    let report = winddown::drain(plan, &shutdown, &Recorder::new()).await;
    let took = start.elapsed();

    let stuck = report.phase("stuck flush").unwrap();
    assert_eq!(
        stuck.outcome,
        PhaseOutcome::CutOff {
            by: CutOffBy::Deadline
        },
        "{stuck:?}"
    );
    assert!(
        stuck.budget > 900 * MS && stuck.budget <= 1000 * MS,
        "{stuck:?}"
    );
    // At its deadline, give or take a busy machine; not at the end of its sleep.
    assert!(
        stuck.duration >= stuck.budget && stuck.duration < stuck.budget + 500 * MS,
        "{stuck:?}"
    );
    let (release_at, sleep_was_over) = release_started
        .lock()
        .unwrap()
        .expect("the release phase ran");
    assert!(
        !sleep_was_over,
        "release started only after the blocking phase returned"
    );
    assert!(
        release_at.duration_since(start) < sleep,
        "release started {:?} into the drain",
        release_at.duration_since(start)
    );
    assert_eq!(report.phase("release").unwrap().outcome, PhaseOutcome::Done);
    assert_eq!(report.outcome, Outcome::CutOff);
    assert!(took < 2 * sleep / 3, "the drain took {took:?}");
    assert!(report.duration < 2 * sleep / 3, "{report:?}");
}

/// A panic in a phase (a `String` payload here) on a multi-thread runtime is a failed phase with
/// the panic's message, and the phases after it still run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_phase_on_its_own_task_fails_and_later_phases_run() {
    let plan = DrainPlan::new()
        .phase(Stage::CloseStores, "close", |_| async {
            if true {
                panic!("close blew up after {} records", 3);
            }
            Ok::<_, std::io::Error>(())
        })
        .phase(Stage::Release, "release", |ctx| async move {
            ctx.set_detail("lock released");
            Ok::<_, std::io::Error>(())
        });
    let shutdown = sigterm_within(Duration::from_secs(5));
    let report = winddown::drain(plan, &shutdown, &Recorder::new()).await;
    assert_eq!(
        report.phase("close").unwrap().outcome,
        PhaseOutcome::Failed {
            error: "panicked: close blew up after 3 records".to_owned()
        }
    );
    let release = report.phase("release").unwrap();
    assert_eq!(release.outcome, PhaseOutcome::Done);
    assert_eq!(release.detail.as_deref(), Some("lock released"));
    assert_eq!(report.outcome, Outcome::Failed);
}

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A waiting phase that is cut off is aborted: its future is dropped (what cancel-safe phases
/// rely on to stop their work), and dropping the drain itself aborts the phase it is running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_phase_and_an_abandoned_drain_drop_the_phase_future() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let plan = DrainPlan::new().margin(Duration::ZERO).phase(
        Stage::FinishInFlight,
        "waits for ever",
        move |_| async move {
            let _flag = DropFlag(flag);
            std::future::pending::<()>().await;
            Ok::<_, std::io::Error>(())
        },
    );
    let shutdown = sigterm_within(300 * MS);
    let report = winddown::drain(plan, &shutdown, &Recorder::new()).await;
    assert_eq!(
        report.phase("waits for ever").unwrap().outcome,
        PhaseOutcome::CutOff {
            by: CutOffBy::Deadline
        }
    );
    wait_for(&dropped).await;

    let dropped = Arc::new(AtomicBool::new(false));
    let (flag, running) = (dropped.clone(), Arc::new(AtomicBool::new(false)));
    let started = running.clone();
    let plan = DrainPlan::new().phase(Stage::Flush, "long flush", move |_| async move {
        let _flag = DropFlag(flag);
        started.store(true, Ordering::SeqCst);
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(())
    });
    let shutdown = sigterm_within(Duration::from_secs(20));
    let abandoned =
        tokio::time::timeout(300 * MS, winddown::drain(plan, &shutdown, &Recorder::new())).await;
    assert!(abandoned.is_err(), "the drain cannot finish in 300 ms");
    assert!(running.load(Ordering::SeqCst), "the phase never started");
    wait_for(&dropped).await;
}

/// Waits up to 2 s for `flag` to be set.
async fn wait_for(flag: &AtomicBool) {
    let start = Instant::now();
    while !flag.load(Ordering::SeqCst) {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the phase's future was never dropped"
        );
        tokio::time::sleep(10 * MS).await;
    }
}
