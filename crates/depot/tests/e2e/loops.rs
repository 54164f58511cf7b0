//! The kill loop and the stop loop: load the real depot with the torture client, SIGKILL it (or
//! SIGTERM / SIGINT it) at a random moment, start it again on the same data directory, and check
//! every acknowledged record — all of them, from every round so far.
//!
//! `cargo test` runs 20 rounds of each. For a long run:
//! `TORTURE_ITERATIONS=500 cargo test -p depot --test e2e -- loops --nocapture`
//! (`TORTURE_SEED` repeats a run). Each data directory serves 25 rounds, then a new one starts, so
//! a round's check stays bounded however long the run.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio_util::sync::CancellationToken;
use torture::{Ledger, LoadOptions, Rng, Summary};

use crate::support::{self, Options};

const ROUNDS_PER_DATA_DIR: u64 = 25;

/// What a loop did, summed over its rounds.
#[derive(Debug, Default)]
struct Totals {
    rounds: u64,
    /// Records acknowledged (each counted once).
    acked: u64,
    /// Record checks after restarts (a record is checked again in every later round).
    verified: u64,
    /// Requests sent again with the same key after a restart, and how many of those had been
    /// stored before the stop (`201 replayed`).
    retried: u64,
    replayed: u64,
    /// The last round's check of each data directory, summed.
    last: Summary,
    /// Every round's check, summed (lost, duplicated, corrupt add up here).
    all: Summary,
    /// The slowest drain (stop loop).
    slowest_exit: Duration,
    /// Kills during start-up (kill loop).
    startup_kills: u64,
    /// Every answer the clients got, tallied.
    answers: std::collections::BTreeMap<String, u64>,
}

fn load_options(seed: u64, run: u64) -> LoadOptions {
    LoadOptions {
        clients: 4,
        streams: 3,
        stream_prefix: "loop-".into(),
        max_batch: 16,
        array_percent: 50,
        max_pad: 24,
        duration: None,
        records: None,
        seed,
        run,
        retries: 1000,
        retry_pause: Duration::from_millis(10),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Kill,
    Graceful,
}

async fn run_loop(name: &str, how: Stop, rounds: u64) -> Totals {
    let seed = support::seed(name);
    let mut rng = Rng::new(seed);
    let base = tempfile::tempdir().unwrap();
    let mut totals = Totals::default();
    let started = Instant::now();
    let options = Options::default().set("DEPOT_SIGTERM_BUDGET_MS", 5000);
    let mut round = 0;
    while round < rounds {
        let dir = base.path().join(format!("data-{round}"));
        std::fs::create_dir(&dir).unwrap();
        let mut ledger = Ledger::default();
        let mut depot = support::start_ok(&dir, &options).await;
        let mut last = Summary::default();
        for _ in 0..ROUNDS_PER_DATA_DIR.min(rounds - round) {
            round += 1;
            // Load, and stop at a random moment.
            let stop = CancellationToken::new();
            let load = tokio::spawn({
                let (client, stop) = (depot.client.clone(), stop.clone());
                let options = load_options(seed, round);
                async move { torture::run_load(&client, &options, &stop).await }
            });
            tokio::time::sleep(Duration::from_millis(rng.range(20, 500))).await;
            let log = match how {
                Stop::Kill => {
                    let log = depot.kill();
                    stop.cancel();
                    log
                }
                Stop::Graceful => {
                    let signal = if rng.chance(50) {
                        Signal::SIGTERM
                    } else {
                        Signal::SIGINT
                    };
                    let t = Instant::now();
                    depot.signal(signal);
                    // SIGTERM's budget is set to 5 s, SIGINT's is winddown's 30 s.
                    let budget = if signal == Signal::SIGTERM { 5 } else { 30 };
                    let status = depot.wait_exit(Duration::from_secs(budget + 2)).await;
                    let took = t.elapsed();
                    stop.cancel();
                    let log = depot.log_text();
                    assert!(
                        matches!(status, Some(s) if s.success()),
                        "round {round}: depot did not exit 0 within its {budget} s budget after \
                         {signal}: {status:?}\n{log}"
                    );
                    totals.slowest_exit = totals.slowest_exit.max(took);
                    log
                }
            };
            support::assert_no_panic(&log);
            let part = load.await.expect("load task");
            ledger.merge(part);

            // Now and then, crash it again while it starts up (recovery must survive that too).
            if how == Stop::Kill && rng.chance(15) {
                let (mut child, _) = support::spawn(&dir, &options);
                tokio::time::sleep(Duration::from_millis(rng.range(0, 60))).await;
                let _ = child.kill();
                let _ = child.wait();
                totals.startup_kills += 1;
            }

            // Restart on the same data directory; it must know how the last run ended.
            depot = support::start_ok(&dir, &options).await;
            let status = depot.status().await;
            let last_run = status["recovery"]["last_run"].as_str().unwrap_or_default();
            match how {
                Stop::Kill => assert_eq!(last_run, "Unclean", "round {round}: {status}"),
                Stop::Graceful => {
                    assert_eq!(last_run, "Clean", "round {round}: {status}");
                    assert_eq!(status["last_shutdown"]["outcome"], "clean", "{status}");
                }
            }

            // A client retries some requests it never heard back about: same key, one copy.
            let before = ledger
                .answers
                .get("retry: 201 replayed")
                .copied()
                .unwrap_or(0);
            totals.retried +=
                torture::retry_unknown(&depot.client, &mut ledger, 60, &mut rng).await as u64;
            totals.replayed += ledger
                .answers
                .get("retry: 201 replayed")
                .copied()
                .unwrap_or(0)
                - before;
            // And acknowledged ones: answered from the original, never stored twice.
            let problems = torture::replay_acked(&depot.client, &ledger, 3, &mut rng).await;
            assert!(problems.is_empty(), "round {round}: {problems:#?}");

            let report = torture::verify(&depot.client, &ledger)
                .await
                .expect("read the streams back");
            assert!(
                report.summary.is_clean(),
                "round {round} (seed {seed}): {}\n{:#?}\nanswers: {:?}",
                report.summary,
                report.problems,
                ledger.answers
            );
            totals.all.add(&report.summary);
            totals.verified += report.summary.verified;
            totals.rounds += 1;
            last = report.summary;
        }
        totals.acked += last.acked;
        totals.last.add(&last);
        for (answer, n) in &ledger.answers {
            *totals.answers.entry(answer.clone()).or_default() += n;
        }
        depot.stop(Duration::from_secs(10)).await;
    }
    eprintln!(
        "{name}: {} rounds in {:.1} s (seed {seed}); {} records acknowledged, {} record checks \
         after restarts; {} unknown requests retried, {} of them had been stored (replayed); \
         {} start-up kills; slowest exit {} ms\n{name}: last checks summed: {}\n{name}: every \
         round summed: lost={} duplicated={} corrupt={} refused-present={} out-of-order={}\n\
         {name}: answers: {:?}",
        totals.rounds,
        started.elapsed().as_secs_f64(),
        totals.acked,
        totals.verified,
        totals.retried,
        totals.replayed,
        totals.startup_kills,
        totals.slowest_exit.as_millis(),
        totals.last,
        totals.all.lost,
        totals.all.duplicated,
        totals.all.corrupt,
        totals.all.refused_present,
        totals.all.out_of_order,
        totals.answers,
    );
    totals
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_loop_sigkill_at_random_moments_loses_nothing_acknowledged() {
    let _serial = support::serial().await;
    let rounds = support::env_number("TORTURE_ITERATIONS", 20);
    let totals = run_loop("kill_loop", Stop::Kill, rounds).await;
    assert_eq!(totals.rounds, rounds);
    assert!(totals.acked > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_loop_sigterm_and_sigint_drain_within_budget_and_lose_nothing() {
    let _serial = support::serial().await;
    let rounds = support::env_number("TORTURE_ITERATIONS", 20);
    let totals = run_loop("stop_loop", Stop::Graceful, rounds).await;
    assert_eq!(totals.rounds, rounds);
    assert!(totals.acked > 0);
}
