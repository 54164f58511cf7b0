//! The power-cut loop (`depot-torture powercut`) in short: depot's data directory on a forgetfs
//! mount, the power cut (everything not fsynced undone) and depot SIGKILLed at random moments,
//! every acknowledged record checked after each restart. With `durability = "off"` the same loop
//! must see loss — the proof that it can. Needs root and /dev/fuse (skips otherwise).
//!
//! `POWERCUT_ROUNDS=1000` for a long run (`TORTURE_SEED` repeats one); or run
//! `depot-torture powercut --rounds 1000` against a built depot.

use std::path::Path;

use torture::{PowercutOptions, powercut};

use crate::support;

fn can_mount() -> bool {
    let ok = nix::unistd::Uid::effective().is_root() && Path::new("/dev/fuse").exists();
    if !ok {
        eprintln!("skipped: the power-cut loop needs root and /dev/fuse");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_lose_nothing_acknowledged_and_durability_off_is_seen_to_lose() {
    if !can_mount() {
        return;
    }
    let _serial = support::serial().await;
    let work = tempfile::tempdir().unwrap();
    let seed = support::seed("powercut");
    let rounds = support::env_number("POWERCUT_ROUNDS", 5);
    let mut options = PowercutOptions::new(
        support::depot_bin().into(),
        work.path().join("full"),
        rounds,
        seed,
    );
    let report = powercut(&options, |line| eprintln!("powercut: {line}"))
        .await
        .expect("the power-cut loop ran");
    eprintln!(
        "{} (seed {seed}); last checks: {}",
        report.line(),
        report.summary
    );
    assert_eq!(report.cuts, rounds);
    assert!(report.summary.acked > 0, "{}", report.line());
    assert!(
        report.is_clean(),
        "{}\n{:#?}\n{:#?}",
        report.line(),
        report.problems,
        report.failed_starts
    );

    // The control: without fsync, a power cut loses acknowledged records, and the loop says so.
    // Whether a given cut finds unsynced acknowledged records depends on where it falls (a cut
    // right after SQLite's own writes reached the backing files loses nothing), so the control
    // takes up to eight short runs and stops at the first that loses records.
    options.durability = "off".into();
    options.rounds = 2;
    let mut runs = Vec::new();
    let mut seen_loss = false;
    for attempt in 0..8 {
        options.work_dir = work.path().join(format!("off-{attempt}"));
        options.seed = seed.wrapping_add(attempt + 1);
        let off = powercut(&options, |line| {
            eprintln!("powercut (durability off): {line}")
        })
        .await
        .expect("the power-cut loop ran");
        eprintln!("durability off, run {}: {}", attempt + 1, off.line());
        runs.push(off.line());
        seen_loss = off.summary.lost > 0;
        if seen_loss {
            break;
        }
    }
    assert!(
        seen_loss,
        "durability off lost nothing in {} runs: {runs:#?}",
        runs.len()
    );
}

/// The loop with forwarding on: the outbox and its delivery cursor go through the cuts too, and
/// after each restart, once the forwarder has caught up, PostgreSQL must hold every acknowledged
/// record exactly once at its sequence number, and exactly what the local store holds. Two data
/// directories (two origins), two cuts each. Skips without PostgreSQL unless
/// `REQUIRE_POSTGRES_TESTS=1` (`bash ci/postgres.sh` installs it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_with_forwarding_leave_postgres_holding_every_acknowledged_record_once() {
    if !can_mount() {
        return;
    }
    let Some(cluster) = crate::pg::PgCluster::start("powercut with forwarding") else {
        return;
    };
    let _serial = support::serial().await;
    let work = tempfile::tempdir().unwrap();
    let seed = support::seed("powercut-forward");
    let rounds = support::env_number("POWERCUT_FORWARD_ROUNDS", 4);
    let mut options = PowercutOptions::new(
        support::depot_bin().into(),
        work.path().to_path_buf(),
        rounds,
        seed,
    );
    options.forward_to = Some(cluster.url());
    options.rounds_per_dir = 2;
    let report = powercut(&options, |line| eprintln!("powercut (forwarding): {line}"))
        .await
        .expect("the power-cut loop ran");
    let forward = report.forward.expect("the loop checked PostgreSQL");
    eprintln!(
        "{}\n{} (seed {seed}); last checks: {}; in PostgreSQL: {forward}",
        report.line(),
        report.forward_line().unwrap(),
        report.summary
    );
    assert!(
        report.is_clean(),
        "{}\n{:?}\n{:#?}\n{:#?}",
        report.line(),
        report.forward_line(),
        report.problems,
        report.failed_starts
    );
    assert!(forward.acked > 0, "{forward}");
    assert_eq!(forward.acked, report.summary.acked, "{forward}");
    assert_eq!(forward.verified, forward.acked, "{forward}");
    // One origin per data directory.
    let pg = cluster.client().await;
    let origins: i64 = pg
        .query_one("SELECT count(DISTINCT origin) FROM depot_records", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(origins as u64, rounds.div_ceil(2));
}

/// Finding of the power-cut loop: the shutdown report (`last-shutdown.json`) was written through a
/// rename that nothing made durable, so a power cut after a clean stop brought back the report of
/// the stop before — depot then served an old report as the last one, beside a clean-shutdown
/// marker that was right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_after_a_clean_stop_keeps_that_stops_report() {
    if !can_mount() {
        return;
    }
    let _serial = support::serial().await;
    let work = tempfile::tempdir().unwrap();
    let (backing, mnt) = (work.path().join("backing"), work.path().join("mnt"));
    std::fs::create_dir(&backing).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let mount = forgetfs::Mount::new(&backing, &mnt, &forgetfs::Options::default()).unwrap();
    let data = mnt.join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::File::open(&mnt).unwrap().sync_all().unwrap();
    let options = support::Options {
        log_dir: Some(work.path().to_path_buf()),
        ..support::Options::default()
    };
    // Two clean runs; the second one's report is the last.
    for _ in 0..2 {
        let depot = support::start_ok(&data, &options).await;
        depot.stop(std::time::Duration::from_secs(10)).await;
    }
    let report = std::fs::read_to_string(data.join("last-shutdown.json")).unwrap();
    let cut = mount.cut();
    mount.unmount().unwrap();
    let _mount = forgetfs::Mount::new(&backing, &mnt, &forgetfs::Options::default()).unwrap();
    let after = std::fs::read_to_string(data.join("last-shutdown.json")).unwrap_or_default();
    assert_eq!(
        after, report,
        "the cut ({cut}) brought back another shutdown report"
    );
    let depot = support::start_ok(&data, &options).await;
    let status = depot.status().await;
    assert_eq!(status["recovery"]["last_run"], "Clean", "{status}");
    depot.stop(std::time::Duration::from_secs(10)).await;
}
