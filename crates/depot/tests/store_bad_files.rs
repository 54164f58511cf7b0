//! Files that are not (or no longer) a healthy depot database: refused with a clear error, never
//! modified, never a panic.

mod common;

use std::fs;
use std::path::Path;

use common::{chain, commit, open, request};
use depot::store::{
    APPLICATION_ID, Foreign, LastRun, SCHEMA_VERSION, Store, StoreError, StoreOptions, Verify,
};
use rusqlite::Connection;

fn try_open(dir: &Path) -> Result<Store, StoreError> {
    Store::open(dir, &StoreOptions::default())
}

fn db(dir: &Path) -> std::path::PathBuf {
    dir.join("depot.sqlite3")
}

#[test]
fn garbage_named_depot_sqlite3_is_not_a_depot_database_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let garbage: Vec<u8> = (0..10_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(db(dir.path()), &garbage).unwrap();

    let err = try_open(dir.path()).unwrap_err();
    eprintln!("{}", chain(&err));
    assert!(
        matches!(
            err,
            StoreError::NotADepotDatabase {
                reason: Foreign::NotSqlite,
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("depot.sqlite3") && message.contains("not a depot database"),
        "{message}"
    );
    assert_eq!(
        fs::read(db(dir.path())).unwrap(),
        garbage,
        "the file was modified"
    );
    assert!(!dir.path().join("depot.sqlite3-wal").exists());
}

#[test]
fn an_sqlite_database_of_another_application_is_refused_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    {
        let other = Connection::open(db(dir.path())).unwrap();
        other
            .execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('mine');")
            .unwrap();
    }
    let before = fs::read(db(dir.path())).unwrap();
    let err = try_open(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NotADepotDatabase {
                reason: Foreign::Unmarked,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        fs::read(db(dir.path())).unwrap(),
        before,
        "the file was modified"
    );
    let mode: String = Connection::open(db(dir.path()))
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        mode, "delete",
        "open switched someone else's database to WAL"
    );

    // Stamped with its own application id.
    fs::remove_file(db(dir.path())).unwrap();
    {
        let other = Connection::open(db(dir.path())).unwrap();
        other
            .execute_batch("PRAGMA application_id = 0x12345678; CREATE TABLE t (x);")
            .unwrap();
    }
    let err = try_open(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NotADepotDatabase {
                reason: Foreign::ApplicationId(0x1234_5678),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("0x12345678"), "{err}");
}

#[test]
fn a_newer_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path()).writer.close().unwrap();
    {
        let conn = Connection::open(db(dir.path())).unwrap();
        let app: i32 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .unwrap();
        assert_eq!(app, APPLICATION_ID);
        conn.execute_batch("PRAGMA user_version = 99").unwrap();
    }
    let err = try_open(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::UnsupportedSchema {
                found: 99,
                supported: SCHEMA_VERSION,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn an_empty_file_is_a_new_store() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(db(dir.path()), b"").unwrap();
    let store = open(dir.path());
    assert_eq!(store.report.last_run, LastRun::New);
    let mut writer = store.writer;
    commit(&mut writer, &[request("s", &["1"], None)]).unwrap();
    writer.close().unwrap();
}

/// A depot database of a few hundred pages, closed cleanly (so all of it is in the main file).
fn filled_store(dir: &Path) -> u64 {
    let store = open(dir);
    let mut writer = store.writer;
    let pad = "x".repeat(300);
    for batch in 0..20 {
        let requests: Vec<_> = (0..10)
            .map(|i| {
                let payloads: Vec<String> = (0..10)
                    .map(|j| format!("{{\"b\":{batch},\"i\":{i},\"j\":{j},\"pad\":\"{pad}\"}}"))
                    .collect();
                let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
                request(&format!("s{}", i % 3), &refs, None)
            })
            .collect();
        commit(&mut writer, &requests).unwrap();
    }
    writer.close().unwrap();
    fs::metadata(db(dir)).unwrap().len()
}

#[test]
fn a_truncated_database_is_reported_corrupt() {
    for keep in [0.5, 0.9, 0.1] {
        let dir = tempfile::tempdir().unwrap();
        let len = filled_store(dir.path());
        let file = fs::OpenOptions::new()
            .write(true)
            .open(db(dir.path()))
            .unwrap();
        file.set_len((len as f64 * keep) as u64 / 4096 * 4096 + 100)
            .unwrap();
        drop(file);

        let err = try_open(dir.path()).unwrap_err();
        eprintln!("kept {keep}: {}", chain(&err));
        assert!(
            matches!(err, StoreError::Corrupt { .. }),
            "kept {keep}: {err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains("depot.sqlite3") && message.contains("backup"),
            "{message}"
        );
    }
}

#[test]
fn a_database_cut_inside_its_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    filled_store(dir.path());
    let file = fs::OpenOptions::new()
        .write(true)
        .open(db(dir.path()))
        .unwrap();
    file.set_len(50).unwrap();
    drop(file);
    let err = try_open(dir.path()).unwrap_err();
    eprintln!("{}", chain(&err));
    assert!(
        matches!(
            err,
            StoreError::NotADepotDatabase { .. } | StoreError::Corrupt { .. }
        ),
        "{err:?}"
    );
}

#[test]
fn damage_inside_the_file_is_found_by_quick_check_and_by_reads() {
    let dir = tempfile::tempdir().unwrap();
    let len = filled_store(dir.path());
    // Overwrite a page in the middle with garbage: the tail check cannot see this one.
    let mut bytes = fs::read(db(dir.path())).unwrap();
    let page = (len / 4096 / 2) as usize * 4096;
    for (i, b) in bytes[page..page + 4096].iter_mut().enumerate() {
        *b = (i * 7 + 13) as u8;
    }
    fs::write(db(dir.path()), &bytes).unwrap();

    let options = StoreOptions {
        verify: Verify::QuickCheck,
        ..StoreOptions::default()
    };
    let err = Store::open(dir.path(), &options).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");

    // The default open does not read the whole file; reading the damaged part fails cleanly.
    let store = open(dir.path());
    let mut failures = 0;
    for stream in ["s0", "s1", "s2"] {
        match store.readers.read(stream, 0, 100_000) {
            Ok(_) => {}
            Err(StoreError::Corrupt { .. }) => failures += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!(failures > 0, "the damaged page was not noticed");
    drop(store);
}
