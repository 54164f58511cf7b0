//! Open and close: the clean-shutdown marker, the directory lock, the open report.

mod common;

use std::fs;

use common::{commit, open, request};
use depot::store::{LastRun, Store, StoreError, StoreOptions, Verify};

#[test]
fn clean_close_writes_the_marker_and_the_next_open_says_clean() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("clean-shutdown");

    let store = open(dir.path());
    assert_eq!(store.report.last_run, LastRun::New);
    assert!(!marker.exists());
    let mut writer = store.writer;
    commit(
        &mut writer,
        &[request("a", &["1", "2"], None), request("b", &["3"], None)],
    )
    .unwrap();
    writer.close().unwrap();
    assert!(marker.exists(), "close wrote no marker");
    assert_eq!(
        fs::metadata(dir.path().join("depot.sqlite3-wal"))
            .map(|m| m.len())
            .unwrap_or(0),
        0,
        "the WAL was not checkpointed away"
    );

    let store = open(dir.path());
    assert_eq!(store.report.last_run, LastRun::Clean);
    assert_eq!(store.report.wal_bytes_at_open, 0);
    assert!(
        !marker.exists(),
        "open must remove the marker so that a crash leaves it missing"
    );
    let summary: Vec<_> = store
        .report
        .streams
        .iter()
        .map(|s| (s.name.as_str(), s.records))
        .collect();
    assert_eq!(summary, [("a", 2), ("b", 1)]);
    assert_eq!(store.report.total_records, 3);
    let line = store.report.to_string();
    assert!(
        line.contains("stopped cleanly") && line.contains("3 records"),
        "{line}"
    );
    store.writer.close().unwrap();
}

#[test]
fn a_missing_marker_is_reported_as_an_unclean_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut writer = store.writer;
    commit(&mut writer, &[request("a", &["1"], None)]).unwrap();
    drop(writer); // no close(): as far as the data directory knows, the process died

    let store = open(dir.path());
    assert_eq!(store.report.last_run, LastRun::Unclean);
    assert_eq!(store.report.total_records, 1);
    let line = store.report.to_string();
    assert!(line.contains("did NOT stop cleanly"), "{line}");
    store.writer.close().unwrap();

    // A marker from a clean close that someone deleted by hand counts the same.
    fs::remove_file(dir.path().join("clean-shutdown")).unwrap();
    assert_eq!(open(dir.path()).report.last_run, LastRun::Unclean);
}

#[test]
fn one_writer_per_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    let err = Store::open(dir.path(), &StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains("depot.lock"), "{err}");
    first.writer.close().unwrap();
    open(dir.path()).writer.close().unwrap();
}

#[test]
fn a_missing_data_directory_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = Store::open(&missing, &StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::CannotOpen { .. }), "{err:?}");
    assert!(!missing.exists());
}

#[test]
fn quick_check_passes_on_a_healthy_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = open(dir.path()).writer;
    commit(&mut writer, &[request("a", &["1"], None)]).unwrap();
    writer.close().unwrap();
    let options = StoreOptions {
        verify: Verify::QuickCheck,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), &options).unwrap();
    assert_eq!(store.report.verified, Verify::QuickCheck);
    store.writer.close().unwrap();
}

#[test]
fn readers_work_from_many_threads_while_the_writer_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (mut writer, readers) = (store.writer, store.readers);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (readers, stop) = (readers.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut last = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let total = readers.total_records().unwrap();
                    assert!(total >= last, "a reader went back in time");
                    last = total;
                    let records = readers.read("s", 0, 1000).unwrap();
                    assert!(
                        records
                            .iter()
                            .enumerate()
                            .all(|(i, r)| r.seq == i as u64 + 1)
                    );
                }
            })
        })
        .collect();
    for i in 0..50 {
        commit(&mut writer, &[request("s", &[&i.to_string(), "x"], None)]).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(readers.total_records().unwrap(), 100);
    writer.close().unwrap();
}

/// Issue #14 D: the data directory's lock is held until the last connection to the store closes.
/// A forwarding phase that was cut off can leave the outbox's connection open after
/// `Writer::close`; a new depot that got the lock then would preallocate (truncate and zero) a
/// WAL that this connection can still write to.
#[test]
fn the_lock_is_held_until_the_outbox_connection_closes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (mut writer, readers) = (store.writer, store.readers);
    commit(&mut writer, &[request("a", &["1", "2"], None)]).unwrap();
    let mut outbox = depot::store::Outbox::open(&readers).unwrap();
    drop(readers);
    writer.close().unwrap();

    // The outbox can still write (its connection is open), so nobody else may open the store.
    let err = Store::open(dir.path(), &StoreOptions::default()).unwrap_err();
    assert!(
        matches!(err, StoreError::Locked { .. }),
        "a second store opened while the outbox's connection was open: {err:?}"
    );
    let batch = outbox.next_batch(10, 0).unwrap();
    assert_eq!(batch.len(), 2);
    outbox.advance(&batch).unwrap();

    drop(outbox);
    let store = open(dir.path());
    assert_eq!(store.report.total_records, 2);
    store.writer.close().unwrap();
}

/// The same for a read-only connection still in use by a read: the lock outlives it.
#[test]
fn the_lock_is_held_until_a_read_in_flight_returns() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (mut writer, readers) = (store.writer, store.readers);
    commit(&mut writer, &[request("a", &["1"], None)]).unwrap();
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        readers
            .debug_with_conn(|_conn| {
                entered_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                Ok(())
            })
            .unwrap();
    });
    entered_rx.recv().unwrap();
    // The read holds its connection: the final checkpoint cannot truncate the WAL under it, and
    // the lock must not be released either.
    let closed = writer.close();
    let err = Store::open(dir.path(), &StoreOptions::default()).unwrap_err();
    assert!(
        matches!(err, StoreError::Locked { .. }),
        "a second store opened while a read was in flight: {err:?} (close: {closed:?})"
    );
    release_tx.send(()).unwrap();
    reader.join().unwrap();
    let store = open(dir.path());
    assert_eq!(store.report.total_records, 1);
    store.writer.close().unwrap();
}
