//! Numbers, not checks of behaviour: run with
//! `cargo test --release -p depot --test store_bench -- --ignored --nocapture`.

mod common;

use std::time::{Duration, Instant};

use common::{commit, open};
use depot::store::{AppendRequest, LastRun, Store, StoreOptions, UnixMillis, Verify};

fn requests(count: usize, payloads_each: usize, tag: usize) -> Vec<AppendRequest> {
    (0..count)
        .map(|i| AppendRequest {
            stream: format!("s{}", i % 10),
            payloads: (0..payloads_each)
                .map(|j| format!(r#"{{"tag":{tag},"i":{i},"j":{j},"body":"some eighty bytes of json payload text"}}"#))
                .collect(),
            idempotency_key: Some(format!("{tag}-{i}")),
            received_at: UnixMillis::now(),
        })
        .collect()
}

#[test]
#[ignore = "benchmark"]
fn commit_throughput_single_request_vs_64_request_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = open(dir.path()).writer;
    for (batch_size, commits) in [(1, 1000), (64, 300)] {
        let started = Instant::now();
        for c in 0..commits {
            commit(&mut writer, &requests(batch_size, 1, c * 1000 + batch_size)).unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "batches of {batch_size:>2} request(s): {:>6.0} commits/s, {:>7.0} requests/s ({commits} commits in {secs:.2} s)",
            commits as f64 / secs,
            (commits * batch_size) as f64 / secs
        );
    }
    writer.close().unwrap();
}

#[test]
#[ignore = "benchmark; builds a million records"]
fn open_with_a_million_records_stays_under_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = open(dir.path()).writer;
    let started = Instant::now();
    for round in 0..100 {
        commit(&mut writer, &requests(100, 100, round)).unwrap(); // 10k records per commit
    }
    println!(
        "wrote 1,000,000 records in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    writer.close().unwrap();
    let size = std::fs::metadata(dir.path().join("depot.sqlite3"))
        .unwrap()
        .len();
    println!("database file: {} MiB", size >> 20);

    let store = open(dir.path());
    println!("{}", store.report);
    assert_eq!(store.report.last_run, LastRun::Clean);
    assert_eq!(store.report.total_records, 1_000_000);
    assert!(store.report.elapsed < Duration::from_secs(1));
    drop(store); // unclean

    let store = open(dir.path());
    println!("{}", store.report);
    assert!(store.report.elapsed < Duration::from_secs(1));
    store.writer.close().unwrap();

    let options = StoreOptions {
        verify: Verify::QuickCheck,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), &options).unwrap();
    println!("{}", store.report);
    store.writer.close().unwrap();
}
