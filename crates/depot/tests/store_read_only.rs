//! A data directory on a read-only mount: refused at open with `ReadOnly`, nothing changed.
//! Bind-mounts (needs root; skipped otherwise).
#![cfg(target_os = "linux")]

mod common;

use std::fs;

use common::{Mount, chain, commit, open, request, run_mount, skip};
use depot::store::{LastRun, Store, StoreError, StoreOptions};

#[test]
fn a_read_only_data_directory_is_refused_at_open() {
    let base = tempfile::tempdir().unwrap();
    let (src, ro) = (base.path().join("src"), base.path().join("ro"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(&ro).unwrap();
    let empty = base.path().join("empty-src");
    fs::create_dir(&empty).unwrap();

    let mut writer = open(&src).writer;
    commit(&mut writer, &[request("s", &["1", "2"], None)]).unwrap();
    writer.close().unwrap();

    let mount = match Mount::new(
        &ro,
        &["--bind", src.to_str().unwrap(), ro.to_str().unwrap()],
    ) {
        Ok(mount) => mount,
        Err(why) => return skip("a_read_only_data_directory_is_refused_at_open", &why),
    };
    run_mount(&["-o", "remount,bind,ro", ro.to_str().unwrap()]).unwrap();

    let err = Store::open(&ro, &StoreOptions::default()).unwrap_err();
    eprintln!("{}", chain(&err));
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(ro.to_str().unwrap()) && message.contains("remount"),
        "{message}"
    );
    drop(mount);

    // Nothing was changed: the marker of the clean close is still there.
    let store = open(&src);
    assert_eq!(store.report.last_run, LastRun::Clean);
    assert_eq!(store.readers.total_records().unwrap(), 2);
    store.writer.close().unwrap();

    // An empty read-only directory: no store can be created there.
    let empty_ro = base.path().join("empty-ro");
    fs::create_dir(&empty_ro).unwrap();
    let _mount = Mount::new(
        &empty_ro,
        &[
            "--bind",
            empty.to_str().unwrap(),
            empty_ro.to_str().unwrap(),
        ],
    )
    .unwrap();
    run_mount(&["-o", "remount,bind,ro", empty_ro.to_str().unwrap()]).unwrap();
    let err = Store::open(&empty_ro, &StoreOptions::default()).unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
}

/// Linux refuses to make a mount read-only while a file on it is open for writing (EBUSY), so a
/// running writer cannot see its file system turn read-only under it this way. Should a kernel
/// allow it, the writer must fail the batch rather than acknowledge it.
#[test]
fn a_mount_cannot_turn_read_only_under_an_open_writer() {
    let base = tempfile::tempdir().unwrap();
    let (src, rw) = (base.path().join("src"), base.path().join("rw"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(&rw).unwrap();
    let _mount = match Mount::new(
        &rw,
        &["--bind", src.to_str().unwrap(), rw.to_str().unwrap()],
    ) {
        Ok(mount) => mount,
        Err(why) => return skip("a_mount_cannot_turn_read_only_under_an_open_writer", &why),
    };
    let store = open(&rw);
    let mut writer = store.writer;
    commit(&mut writer, &[request("s", &["1"], None)]).unwrap();

    match run_mount(&["-o", "remount,bind,ro", rw.to_str().unwrap()]) {
        Err(why) => {
            assert!(why.contains("busy"), "{why}");
            commit(&mut writer, &[request("s", &["2"], None)]).unwrap();
            writer.close().unwrap();
        }
        Ok(()) => {
            let err = commit(&mut writer, &[request("s", &["2"], None)]).unwrap_err();
            eprintln!("{}", chain(&err));
            assert!(
                matches!(err, StoreError::ReadOnly { .. } | StoreError::Io { .. }),
                "{err:?}"
            );
            drop(writer);
        }
    }
}
