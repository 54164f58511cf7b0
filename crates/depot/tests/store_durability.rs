//! `Durability::Off`: commits do not sync, a clean close does.

mod common;

use common::{commit, request};
use depot::store::{Durability, LastRun, Store, StoreOptions};

fn options(durability: Durability) -> StoreOptions {
    StoreOptions {
        durability,
        ..StoreOptions::default()
    }
}

#[test]
fn durability_off_commits_and_closes_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &options(Durability::Off)).unwrap();
    let mut writer = store.writer;
    let acks = commit(&mut writer, &[request("a", &["1", "2"], None)]).unwrap();
    assert_eq!(acks.len(), 1);
    writer.close().unwrap();

    // Reopened fully durable: the records are there and the last run was clean.
    let store = Store::open(dir.path(), &options(Durability::Full)).unwrap();
    assert_eq!(store.report.last_run, LastRun::Clean);
    assert_eq!(store.report.total_records, 2);
    assert_eq!(store.readers.read("a", 0, 10).unwrap().len(), 2);
    store.writer.close().unwrap();
}

#[test]
fn durability_off_keeps_acknowledged_records_when_the_writer_is_dropped() {
    // Dropping the writer without close is what a crash of the process looks like to the files:
    // the WAL frames were handed to the OS, so the next open recovers them.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &options(Durability::Off)).unwrap();
    let mut writer = store.writer;
    commit(&mut writer, &[request("a", &["1"], None)]).unwrap();
    drop(writer);
    drop(store.readers);

    let store = Store::open(dir.path(), &options(Durability::Full)).unwrap();
    assert_eq!(store.report.last_run, LastRun::Unclean);
    assert_eq!(store.report.total_records, 1);
    store.writer.close().unwrap();
}
