//! A full disk fails the batch, acknowledges nothing, loses nothing, and does not poison the
//! writer: once space is freed the same writer commits again. Runs on a 3 MiB tmpfs (needs root;
//! skipped otherwise).
#![cfg(target_os = "linux")]

mod common;

use std::fs;

use common::{Mount, appended, chain, commit, open, skip};
use depot::store::{AppendRequest, Appended, LastRun, StoreError, Writer};
use winddown::commit::Sink;

fn batch(n: &mut u64) -> Vec<AppendRequest> {
    common::padded_batch(n, &"f".repeat(1000), true)
}

#[test]
fn a_full_disk_fails_the_batch_loses_nothing_and_writes_resume_once_space_is_freed() {
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("tmpfs");
    fs::create_dir(&mnt).unwrap();
    let mount = match Mount::tmpfs(&mnt, "3m") {
        Ok(mount) => mount,
        Err(why) => return skip("a_full_disk_fails_the_batch…", &why),
    };
    let data = mnt.join("data");
    fs::create_dir(&data).unwrap();
    let filler = mnt.join("filler");
    // Half the file system: freeing it later leaves room for the final checkpoint, which copies
    // the WAL into the database file.
    fs::write(&filler, vec![0u8; 3 << 19]).unwrap();

    let store = open(&data);
    let (mut writer, readers) = (store.writer, store.readers);
    let mut n = 0;
    let mut acked: Vec<(AppendRequest, Appended)> = Vec::new();
    let err = loop {
        let requests = batch(&mut n);
        match commit(&mut writer, &requests) {
            Ok(acks) => acked.extend(requests.into_iter().zip(acks.iter().map(appended))),
            Err(err) => break err,
        }
        assert!(n < 100_000, "the 3 MiB file system never filled up");
    };
    eprintln!(
        "after {} acknowledged requests: {}",
        acked.len(),
        chain(&err)
    );
    assert!(matches!(err, StoreError::DiskFull { .. }), "{err:?}");
    assert!(err.to_string().contains("free space"), "{err}");
    assert!(
        !<Writer as Sink>::poisons(&err),
        "a rolled-back batch on a full disk must not poison"
    );
    assert!(!writer.is_poisoned());
    assert!(!acked.is_empty());

    // Nothing of the failed batch is visible, and everything acknowledged is.
    let acked_records: u64 = acked.iter().map(|(_, a)| a.last - a.first + 1).sum();
    assert_eq!(readers.total_records().unwrap(), acked_records);

    // Still full: still DiskFull, not poisoned.
    let err = commit(&mut writer, &batch(&mut n)).unwrap_err();
    assert!(matches!(err, StoreError::DiskFull { .. }), "{err:?}");

    // Free space; the same writer goes on where it left off.
    fs::remove_file(&filler).unwrap();
    let requests = batch(&mut n);
    let acks = commit(&mut writer, &requests).expect("writes succeed again once space is freed");
    for (request, ack) in requests.into_iter().zip(acks.iter().map(appended)) {
        let before = acked
            .iter()
            .rev()
            .find(|(r, _)| r.stream == request.stream)
            .map_or(0, |(_, a)| a.last);
        assert_eq!(
            ack.first,
            before + 1,
            "sequence numbers of {} skipped or repeated",
            request.stream
        );
        acked.push((request, ack));
    }
    writer.close().expect("a clean close once space is freed");

    // Reopen and read everything back.
    let store = open(&data);
    eprintln!("{}", store.report);
    assert_eq!(store.report.last_run, LastRun::Clean);
    for (request, ack) in &acked {
        let records = store
            .readers
            .read(&request.stream, ack.first - 1, request.payloads.len())
            .unwrap();
        let payloads: Vec<&str> = records.iter().map(|r| r.payload.as_str()).collect();
        assert_eq!(
            payloads, request.payloads,
            "acknowledged records of {request:?} lost"
        );
    }
    let total: u64 = acked.iter().map(|(_, a)| a.last - a.first + 1).sum();
    assert_eq!(store.readers.total_records().unwrap(), total);
    drop(store);
    drop(mount);
}
