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
    eprintln!("{} (seed {seed}); last checks: {}", report.line(), report.summary);
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
    options.work_dir = work.path().join("off");
    options.durability = "off".into();
    options.rounds = 2;
    let off = powercut(&options, |line| eprintln!("powercut (durability off): {line}"))
        .await
        .expect("the power-cut loop ran");
    eprintln!("durability off: {}", off.line());
    assert!(off.summary.lost > 0, "durability off lost nothing: {}", off.line());
}
