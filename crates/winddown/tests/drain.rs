//! The drain runner on a paused clock, driven through the public test helpers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{Instant, sleep};
use winddown::testing::{self, Recorder};
use winddown::{
    Budgets, CutOffBy, DrainPlan, EXIT_CUT_OFF, Escalation, Outcome, Phase, PhaseOutcome,
    ProgressEvent, Shutdown, SkipReason, Stage, StopReason,
};

type Log = Arc<Mutex<Vec<&'static str>>>;

/// A phase that logs its name and then takes `d`.
fn step(log: &Log, stage: Stage, name: &'static str, d: Duration) -> Phase {
    let log = log.clone();
    Phase::new(stage, name, move |_| async move {
        log.lock().unwrap().push(name);
        sleep(d).await;
        Ok::<_, std::io::Error>(())
    })
}

fn standard(log: &Log, in_flight: Duration) -> DrainPlan {
    let ms = Duration::from_millis;
    // Added out of order on purpose: the plan runs them in stage order.
    DrainPlan::new()
        .with(step(log, Stage::Release, "release", ms(10)))
        .with(step(log, Stage::Flush, "flush", ms(200)))
        .with(step(log, Stage::StopAccepting, "stop accepting", ms(10)))
        .with(step(log, Stage::CloseStores, "close", ms(100)))
        .with(step(log, Stage::FinishInFlight, "in-flight", in_flight))
}

#[tokio::test(start_paused = true)]
async fn phases_run_in_stage_order_and_a_clean_stop_exits_zero() {
    let log = Log::default();
    let start = Instant::now();
    let run = testing::simulate(StopReason::SigTerm, standard(&log, Duration::from_secs(2))).await;
    assert_eq!(
        *log.lock().unwrap(),
        ["stop accepting", "in-flight", "flush", "close", "release"]
    );
    assert_eq!(run.report.outcome, Outcome::Clean);
    assert_eq!(run.report.exit_code(), 0);
    assert_eq!(run.report.reason, StopReason::SigTerm);
    assert_eq!(run.report.budget, Duration::from_secs(20));
    assert_eq!(start.elapsed(), Duration::from_millis(2320));
    let names: Vec<_> = run.report.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["stop accepting", "in-flight", "flush", "close", "release"]
    );
}

fn phase<'a>(report: &'a winddown::ShutdownReport, name: &str) -> &'a winddown::PhaseReport {
    report.phases.iter().find(|p| p.name == name).unwrap()
}

/// A phase that wants more than its weight's share (an unready delay) gets it when the budget
/// allows, and at most half of the time left when it does not.
#[tokio::test(start_paused = true)]
async fn a_phase_gets_what_it_wants_within_half_the_time_left() {
    let plan = |log: &Log| {
        standard(log, Duration::from_millis(100)).with(
            step(log, Stage::StopAccepting, "notice", Duration::from_secs(5))
                .wants(Duration::from_secs(6)),
        )
    };
    let log = Log::default();
    let run = testing::simulate(StopReason::ScmStop, plan(&log)).await;
    let notice = phase(&run.report, "notice");
    assert_eq!(notice.outcome, PhaseOutcome::Done, "{notice:?}");
    assert!(notice.budget >= Duration::from_secs(6), "{notice:?}");
    assert_eq!(run.report.outcome, Outcome::Clean);

    // A 5 s SIGTERM budget: at most half of it, and the flush and close still run.
    let log = Log::default();
    let shutdown =
        Shutdown::with_budgets(Budgets::new().with(StopReason::SigTerm, Duration::from_secs(5)));
    let run = testing::simulate_on(&shutdown, StopReason::SigTerm, plan(&log)).await;
    let notice = phase(&run.report, "notice");
    assert!(notice.budget <= Duration::from_millis(2500), "{notice:?}");
    assert!(
        matches!(notice.outcome, PhaseOutcome::CutOff { .. }),
        "{notice:?}"
    );
    assert!(
        log.lock()
            .unwrap()
            .ends_with(&["flush", "close", "release"])
    );
}

#[tokio::test(start_paused = true)]
async fn a_hanging_phase_is_cut_at_its_share_and_durability_phases_still_run() {
    let log = Log::default();
    let plan = standard(&log, Duration::from_secs(3600));
    let shutdown =
        Shutdown::with_budgets(Budgets::new().with(StopReason::SigTerm, Duration::from_secs(5)));
    let start = Instant::now();
    let run = testing::simulate_on(&shutdown, StopReason::SigTerm, plan).await;
    // Budget 5 s, margin 0.5 s; weights 1/8/4/2/1.
    let in_flight = run.report.phase("in-flight").unwrap();
    assert_eq!(
        in_flight.outcome,
        PhaseOutcome::CutOff {
            by: CutOffBy::Deadline
        }
    );
    assert!(
        in_flight.budget > Duration::from_secs(2),
        "{:?}",
        in_flight.budget
    );
    for name in ["flush", "close", "release"] {
        assert_eq!(
            run.report.phase(name).unwrap().outcome,
            PhaseOutcome::Done,
            "{name}"
        );
    }
    assert_eq!(run.report.outcome, Outcome::CutOff);
    assert_eq!(run.report.exit_code(), EXIT_CUT_OFF);
    assert!(
        start.elapsed() <= Duration::from_millis(4500),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn required_phases_run_even_when_the_budget_is_spent() {
    let log = Log::default();
    let shutdown = Shutdown::with_budgets(Budgets::new().with(StopReason::SigTerm, Duration::ZERO));
    let run = testing::simulate_on(
        &shutdown,
        StopReason::SigTerm,
        standard(&log, Duration::from_secs(1)),
    )
    .await;
    assert_eq!(
        run.report.phase("flush").unwrap().outcome,
        PhaseOutcome::CutOff {
            by: CutOffBy::Deadline
        }
    );
    assert!(log.lock().unwrap().contains(&"close"));
    assert!(log.lock().unwrap().contains(&"release"));
}

#[tokio::test(start_paused = true)]
async fn progress_ticks_at_least_once_a_second_with_growing_checkpoints() {
    let log = Log::default();
    let run = testing::simulate(StopReason::ScmStop, standard(&log, Duration::from_secs(5))).await;
    let ticks: Vec<_> = run
        .progress
        .iter()
        .filter(|p| p.event == ProgressEvent::Tick)
        .collect();
    assert!(
        ticks.len() >= 9,
        "5 s phase with 500 ms ticks: {}",
        ticks.len()
    );
    for pair in run.progress.windows(2) {
        assert!(pair[1].checkpoint > pair[0].checkpoint);
        assert!(pair[1].elapsed - pair[0].elapsed <= Duration::from_secs(1));
    }
    let tick = ticks[0].phase.as_ref().unwrap();
    assert_eq!(tick.name, "in-flight");
    assert!(tick.remaining > Duration::ZERO);
    assert_eq!(run.progress[0].event, ProgressEvent::Started);
}

#[tokio::test(start_paused = true)]
async fn a_second_trigger_cuts_in_flight_work_but_flushes_and_a_third_forces() {
    let log = Log::default();
    let shutdown = Shutdown::new();
    let s2 = shutdown.clone();
    tokio::spawn(async move {
        sleep(Duration::from_secs(1)).await;
        assert_eq!(s2.trigger(StopReason::SigInt), Escalation::Hurry);
    });
    let recorder = Recorder::new();
    shutdown.trigger(StopReason::SigInt);
    let start = Instant::now();
    let report = winddown::drain(
        standard(&log, Duration::from_secs(20)),
        &shutdown,
        &recorder,
    )
    .await;
    assert_eq!(
        report.phase("in-flight").unwrap().outcome,
        PhaseOutcome::CutOff {
            by: CutOffBy::Escalation
        }
    );
    assert_eq!(report.phase("flush").unwrap().outcome, PhaseOutcome::Done);
    assert_eq!(report.escalation, Escalation::Hurry);
    // Cut at 1 s, then flush 200 ms + close 100 ms + release 10 ms.
    assert_eq!(start.elapsed(), Duration::from_millis(1310));
    assert_eq!(recorder.report(), Some(report));

    // The third trigger abandons the drain where it is.
    let log = Log::default();
    let shutdown = Shutdown::new();
    shutdown.trigger(StopReason::SigInt);
    shutdown.trigger(StopReason::SigInt);
    shutdown.trigger(StopReason::SigInt);
    let report = winddown::drain(
        standard(&log, Duration::from_secs(20)),
        &shutdown,
        &Recorder::new(),
    )
    .await;
    assert_eq!(report.outcome, Outcome::Forced);
    assert!(report.phases.iter().all(|p| p.outcome
        == PhaseOutcome::Skipped {
            why: SkipReason::Force
        }));
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn stragglers_are_named_in_the_report() {
    let shutdown = Shutdown::new();
    shutdown.tasks().spawn(
        "polite worker",
        |stop| async move { stop.cancelled().await },
    );
    shutdown
        .tasks()
        .spawn("stuck uploader", |_| std::future::pending::<()>());
    let plan = DrainPlan::new()
        .wait_for_tasks()
        .phase(Stage::Flush, "flush", |_| async {
            Ok::<_, std::io::Error>(())
        });
    let run = testing::simulate_on(&shutdown, StopReason::CtrlC, plan).await;
    assert_eq!(run.report.stragglers, ["stuck uploader"]);
    assert_eq!(
        run.report.phase("flush").unwrap().outcome,
        PhaseOutcome::Done
    );
    assert_eq!(run.report.outcome, Outcome::CutOff);
}

#[tokio::test(start_paused = true)]
async fn a_failing_or_panicking_phase_fails_the_stop_but_later_phases_run() {
    let plan = DrainPlan::new()
        .phase(Stage::Flush, "flush", |_| async {
            Err(std::io::Error::other("disk full"))
        })
        .phase(Stage::CloseStores, "close", |_| async {
            if true {
                panic!("close blew up");
            }
            Ok::<_, std::io::Error>(())
        })
        .phase(Stage::Release, "release", |ctx| async move {
            ctx.set_detail("lock released");
            Ok::<_, std::io::Error>(())
        });
    let run = testing::simulate(StopReason::SigTerm, plan).await;
    assert_eq!(run.report.outcome, Outcome::Failed);
    assert_eq!(run.report.exit_code(), winddown::EXIT_FAILED);
    assert!(
        matches!(&run.report.phase("flush").unwrap().outcome, PhaseOutcome::Failed { error } if error == "disk full")
    );
    assert!(
        matches!(&run.report.phase("close").unwrap().outcome, PhaseOutcome::Failed { error } if error.contains("close blew up"))
    );
    let release = run.report.phase("release").unwrap();
    assert_eq!(release.outcome, PhaseOutcome::Done);
    assert_eq!(release.detail.as_deref(), Some("lock released"));
    let json: serde_json::Value = serde_json::from_str(&run.report.to_json()).unwrap();
    assert_eq!(json["reason"], "sig_term");
    assert_eq!(json["phases"][0]["outcome"], "failed");
}

/// Every Windows stop source, through the same `trigger` the Windows hosts call, gets the budget
/// docs/PLATFORMS.md gives it and the drain mode that goes with it.
#[tokio::test(start_paused = true)]
async fn windows_stop_sources_get_their_platform_budgets() {
    let cases = [
        (StopReason::CtrlC, 30, true),
        (StopReason::CtrlBreak, 30, true),
        (StopReason::ConsoleClose, 5, true),
        (StopReason::Logoff, 5, true),
        (StopReason::SystemShutdown, 5, true),
        (StopReason::ScmStop, 30, true),
        (StopReason::ScmPreshutdown, 10, true),
        (StopReason::ScmShutdown, 5, false),
    ];
    for (reason, secs, in_flight_runs) in cases {
        let log = Log::default();
        let run = testing::simulate(reason, standard(&log, Duration::from_millis(300))).await;
        assert_eq!(run.report.reason, reason);
        assert_eq!(run.report.budget, Duration::from_secs(secs), "{reason}");
        let in_flight = &run.report.phase("in-flight").unwrap().outcome;
        if in_flight_runs {
            assert_eq!(*in_flight, PhaseOutcome::Done, "{reason}");
        } else {
            // SHUTDOWN is "flush now": in-flight waiting is skipped, flush and close run.
            assert_eq!(
                *in_flight,
                PhaseOutcome::Skipped {
                    why: SkipReason::Hurry
                },
                "{reason}"
            );
            assert_eq!(
                run.report.phase("flush").unwrap().outcome,
                PhaseOutcome::Done
            );
        }
        assert!(run.report.duration < Duration::from_secs(secs));
    }
}

/// A value one phase hands to a later one, by its type: taken once, absent when the phase that
/// should have put it was cut off first, and dropped with the drain when nobody takes it.
#[tokio::test(start_paused = true)]
async fn phases_hand_values_on_by_type() {
    struct Connections(u32);
    struct Store(&'static str);
    struct Leftover(Arc<Mutex<bool>>);
    impl Drop for Leftover {
        fn drop(&mut self) {
            *self.0.lock().unwrap() = true;
        }
    }
    let dropped = Arc::new(Mutex::new(false));
    let leftover = Leftover(dropped.clone());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (seen_in_flight, seen_close) = (seen.clone(), seen.clone());
    let plan = DrainPlan::new()
        .phase(Stage::StopAccepting, "listener", move |ctx| async move {
            ctx.put(Connections(7));
            ctx.put(leftover);
            Ok::<_, std::io::Error>(())
        })
        .phase(Stage::FinishInFlight, "in-flight", move |ctx| async move {
            let open = ctx.take::<Connections>().map(|c| c.0);
            let again = ctx.take::<Connections>().map(|c| c.0);
            seen_in_flight
                .lock()
                .unwrap()
                .push(format!("{open:?} then {again:?}"));
            Ok::<_, std::io::Error>(())
        })
        // Cut off before it hands the store on: the close phase must see nothing, and say so.
        .with(
            Phase::new(Stage::Flush, "flush", |ctx| async move {
                sleep(Duration::from_secs(60)).await;
                ctx.put(Store("writer"));
                Ok::<_, std::io::Error>(())
            })
            .weight(1),
        )
        .phase(Stage::CloseStores, "close", move |ctx| async move {
            let store = ctx.take::<Store>().map(|s| s.0);
            seen_close.lock().unwrap().push(format!("{store:?}"));
            match store {
                Some(_) => Ok(()),
                None => Err::<(), winddown::PhaseError>("no store was handed over".into()),
            }
        });
    let run = testing::simulate(StopReason::SigTerm, plan).await;
    assert_eq!(*seen.lock().unwrap(), ["Some(7) then None", "None"]);
    assert!(matches!(
        run.report.phase("flush").unwrap().outcome,
        PhaseOutcome::CutOff {
            by: CutOffBy::Deadline
        }
    ));
    assert!(matches!(
        &run.report.phase("close").unwrap().outcome,
        PhaseOutcome::Failed { error } if error == "no store was handed over"
    ));
    assert!(
        *dropped.lock().unwrap(),
        "a value nobody took is dropped with the drain"
    );
}
