//! Appends and reads through the `Sink` trait on a real database file.

mod common;

use std::fs;
use std::path::Path;

use common::{appended, commit, open, payloads, replayed, request, written};
use depot::store::{LastRun, Record, Rejected, StoreError, UnixMillis};
use winddown::commit::Sink;

#[test]
fn append_then_read_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.report.last_run, LastRun::New);
    let (mut writer, readers) = (store.writer, store.readers);

    let mut req = request(
        "orders",
        &[r#"{"id":1}"#, r#"{"id":2, "note":"ünïcode"}"#],
        None,
    );
    req.received_at = UnixMillis(1_234_567);
    let acks = commit(&mut writer, &[req]).unwrap();
    assert_eq!(acks, vec![written(1, 2)]);

    let records = readers.read("orders", 0, 100).unwrap();
    assert_eq!(
        records,
        vec![
            Record {
                seq: 1,
                payload: r#"{"id":1}"#.into(),
                received_at: UnixMillis(1_234_567)
            },
            Record {
                seq: 2,
                payload: r#"{"id":2, "note":"ünïcode"}"#.into(),
                received_at: UnixMillis(1_234_567)
            },
        ]
    );
    assert_eq!(readers.read("orders", 1, 100).unwrap()[0].seq, 2);
    assert_eq!(readers.read("orders", 0, 1).unwrap().len(), 1);
    assert!(readers.read("orders", 2, 100).unwrap().is_empty());
    assert!(readers.read("nope", 0, 100).unwrap().is_empty());
    assert_eq!(readers.total_records().unwrap(), 2);
    writer.close().unwrap();
    assert!(matches!(readers.streams(), Err(StoreError::Closed { .. })));

    // And it is all there after reopening.
    let store = open(dir.path());
    assert_eq!(store.report.last_run, LastRun::Clean);
    assert_eq!(store.report.total_records, 2);
    assert_eq!(store.readers.read("orders", 0, 100).unwrap(), records);
    store.writer.close().unwrap();
}

#[test]
fn sequences_are_per_stream_contiguous_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut writer = store.writer;
    let acks = commit(
        &mut writer,
        &[
            request("a", &["1", "2"], None),
            request("b", &["10"], None),
            request("a", &["3"], None),
            request("b", &["11", "12", "13"], None),
        ],
    )
    .unwrap();
    let ranges: Vec<_> = acks
        .iter()
        .map(appended)
        .map(|a| (a.first, a.last))
        .collect();
    assert_eq!(ranges, vec![(1, 2), (1, 1), (3, 3), (2, 4)]);

    let streams = store.readers.streams().unwrap();
    let summary: Vec<_> = streams
        .iter()
        .map(|s| (s.name.as_str(), s.records, s.last_seq))
        .collect();
    assert_eq!(summary, vec![("a", 3, 3), ("b", 4, 4)]);
    let a: Vec<_> = store
        .readers
        .read("a", 0, 10)
        .unwrap()
        .into_iter()
        .map(|r| (r.seq, r.payload))
        .collect();
    assert_eq!(a, vec![(1, "1".into()), (2, "2".into()), (3, "3".into())]);
    // Not closed, as in a crash: the next open must still find everything. (The readers go too:
    // while any connection of the store is open, its lock stays held.)
    drop((writer, store.readers));

    let store = open(dir.path());
    assert_eq!(store.report.last_run, LastRun::Unclean);
    assert_eq!(store.report.total_records, 7);
    let mut writer = store.writer;
    let acks = commit(
        &mut writer,
        &[request("a", &["4"], None), request("c", &["x"], None)],
    )
    .unwrap();
    assert_eq!(appended(&acks[0]).first, 4);
    assert_eq!(appended(&acks[1]).first, 1);
    writer.close().unwrap();
}

#[test]
fn idempotent_retry_returns_original_sequence_numbers_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (mut writer, readers) = (store.writer, store.readers);
    commit(&mut writer, &[request("s", &["0"], None)]).unwrap();

    let original = request("s", &["a", "b"], Some("req-1"));
    let first = commit(&mut writer, std::slice::from_ref(&original)).unwrap();
    assert_eq!(first, vec![written(2, 3)]);

    // A retry in a later batch, and twice within one batch (the second sees the first).
    let again = commit(
        &mut writer,
        &[
            request("s", &["c"], None),
            original.clone(),
            original.clone(),
        ],
    )
    .unwrap();
    let replay = replayed(2, 3);
    assert_eq!(again[1], replay);
    assert_eq!(again[2], replay);
    assert_eq!(appended(&again[0]).first, 4);

    let both_new = commit(
        &mut writer,
        &[
            request("s", &["d"], Some("req-2")),
            request("s", &["d"], Some("req-2")),
        ],
    )
    .unwrap();
    assert_eq!(both_new[0], written(5, 5));
    assert_eq!(both_new[1], replayed(5, 5));

    // Keys are per stream: the same key on another stream is another request.
    let other = commit(&mut writer, &[request("t", &["a", "b"], Some("req-1"))]).unwrap();
    assert_eq!(other[0], written(1, 2));

    assert_eq!(payloads(&readers, "s"), ["0", "a", "b", "c", "d"]);
    writer.close().unwrap();

    // The key outlives the process.
    let store = open(dir.path());
    let mut writer = store.writer;
    assert_eq!(commit(&mut writer, &[original]).unwrap(), vec![replay]);
    assert_eq!(store.readers.total_records().unwrap(), 7);
    writer.close().unwrap();
}

#[test]
fn conflicting_retry_is_rejected_without_failing_its_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (mut writer, readers) = (store.writer, store.readers);
    commit(&mut writer, &[request("s", &["a", "b"], Some("k"))]).unwrap();

    let acks = commit(
        &mut writer,
        &[
            request("s", &["before"], None),
            request("s", &["a", "B"], Some("k")), // same key, other body
            request("s", &["a"], Some("k")),      // same key, fewer records
            request("s", &["a", "b", "c"], Some("k")), // same key, more records
            request("s", &[], None),
            request("s", &["after"], Some("k2")),
        ],
    )
    .unwrap();
    let conflict = Err(Rejected::IdempotencyConflict { first: 1, last: 2 });
    assert_eq!(acks[0], written(3, 3));
    assert_eq!(acks[1], conflict);
    assert_eq!(acks[2], conflict);
    assert_eq!(acks[3], conflict);
    assert_eq!(acks[4], Err(Rejected::Empty));
    assert_eq!(acks[5], written(4, 4));

    assert_eq!(payloads(&readers, "s"), ["a", "b", "before", "after"]);
    writer.close().unwrap();
}

/// Counts the commit frames in a WAL file: one per committed transaction since the WAL was last
/// reset. See <https://sqlite.org/fileformat.html#the_write_ahead_log>.
fn wal_commits(wal: &Path) -> usize {
    let bytes = fs::read(wal).unwrap();
    assert!(bytes.len() >= 32, "WAL header missing");
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    let page_size = be(8) as usize;
    let (salt1, salt2) = (be(16), be(20));
    let mut commits = 0;
    let mut at = 32;
    while at + 24 + page_size <= bytes.len() {
        if be(at + 8) != salt1 || be(at + 12) != salt2 {
            break; // a frame left over from before the last reset
        }
        if be(at + 4) != 0 {
            commits += 1;
        }
        at += 24 + page_size;
    }
    commits
}

#[test]
fn a_batch_of_many_requests_is_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let wal = dir.path().join("depot.sqlite3-wal");
    let mut writer = store.writer;
    commit(&mut writer, &[request("warm-up", &["0"], None)]).unwrap();

    let before = wal_commits(&wal);
    let batch: Vec<_> = (0..64)
        .map(|i| {
            request(
                &format!("s{}", i % 5),
                &[&format!("{{\"i\":{i}}}"), "2"],
                Some(&format!("k{i}")),
            )
        })
        .collect();
    let acks = commit(&mut writer, &batch).unwrap();
    assert!(acks.iter().all(Result::is_ok));
    assert_eq!(wal_commits(&wal), before + 1, "64 requests, one commit");

    // The counter does see separate transactions.
    for i in 0..3 {
        commit(&mut writer, &[request("s0", &[&i.to_string()], None)]).unwrap();
    }
    assert_eq!(wal_commits(&wal), before + 4);
    assert_eq!(store.readers.total_records().unwrap(), 1 + 128 + 3);
    writer.close().unwrap();
}

#[test]
fn a_failing_request_rolls_back_the_whole_batch_and_the_writer_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (mut writer, readers) = (store.writer, store.readers);
    commit(&mut writer, &[request("s", &["1"], None)]).unwrap();

    // A temporary trigger (on this connection only) makes one insert fail mid-batch.
    writer
        .debug_execute(
            "CREATE TEMP TRIGGER boom BEFORE INSERT ON main.records \
             WHEN NEW.payload = 'boom' BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
        )
        .unwrap();
    let err = commit(
        &mut writer,
        &[
            request("s", &["2"], Some("k")),
            request("t", &["x"], None),
            request("s", &["boom"], None),
        ],
    )
    .unwrap_err();
    assert!(matches!(err, StoreError::Sqlite { .. }), "{err:?}");
    assert!(!<depot::store::Writer as Sink>::poisons(&err));
    assert!(
        readers.read("t", 0, 10).unwrap().is_empty(),
        "earlier requests of the batch were rolled back"
    );
    assert_eq!(readers.total_records().unwrap(), 1);

    // Nothing of the failed batch is remembered: not its sequence numbers, not its key.
    writer.debug_execute("DROP TRIGGER temp.boom").unwrap();
    let acks = commit(&mut writer, &[request("s", &["2-again"], Some("k"))]).unwrap();
    assert_eq!(acks[0], written(2, 2));
    writer.close().unwrap();
}

#[test]
fn a_read_only_refusal_at_commit_rolls_back_and_does_not_poison() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (mut writer, readers) = (store.writer, store.readers);
    commit(&mut writer, &[request("s", &["1"], None)]).unwrap();

    // SQLite answers SQLITE_READONLY, as it does for a file it could only open read-only.
    writer.debug_execute("PRAGMA query_only = 1").unwrap();
    let err = commit(&mut writer, &[request("s", &["2"], None)]).unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
    assert!(!<depot::store::Writer as Sink>::poisons(&err));
    assert!(!writer.is_poisoned());
    assert!(err.to_string().contains("depot.sqlite3"), "{err}");

    writer.debug_execute("PRAGMA query_only = 0").unwrap();
    let acks = commit(&mut writer, &[request("s", &["2"], None)]).unwrap();
    assert_eq!(appended(&acks[0]).first, 2);
    assert_eq!(readers.total_records().unwrap(), 2);
    writer.close().unwrap();
}

#[test]
fn item_bytes_counts_payloads_stream_and_key() {
    let req = request("abc", &["12345", "67"], Some("key"));
    assert_eq!(<depot::store::Writer as Sink>::item_bytes(&req), 3 + 7 + 3);
}

/// Issue #14 item 3: a page ends at its byte budget; a record larger than the budget still comes,
/// alone; paging with the last `seq` reads everything once.
#[test]
fn a_page_ends_at_its_byte_budget_and_a_larger_record_comes_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut writer = store.writer;
    // Payload sizes 10, 10, 10, 50, 10 (JSON strings of that many bytes).
    let sizes = [10usize, 10, 10, 50, 10];
    let payloads: Vec<String> = sizes
        .iter()
        .map(|n| format!("\"{}\"", "x".repeat(n - 2)))
        .collect();
    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
    commit(&mut writer, &[request("s", &refs, None)]).unwrap();
    let readers = store.readers;
    let page = |after, limit, budget| -> Vec<u64> {
        readers
            .read_page("s", after, limit, budget)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect()
    };
    assert_eq!(page(0, 100, 30), [1, 2, 3], "exactly the budget");
    assert_eq!(page(0, 100, 29), [1, 2]);
    assert_eq!(page(0, 2, 1000), [1, 2], "the limit still holds");
    assert_eq!(page(3, 100, 30), [4], "a larger record comes alone");
    assert_eq!(page(3, 100, 60), [4, 5]);
    assert_eq!(page(0, 100, 1), [1]);
    assert!(page(5, 100, 30).is_empty());
    assert!(readers.read_page("nope", 0, 10, 30).unwrap().is_empty());
    // Paging with budget 25 reads every record once, in order.
    let (mut after, mut all, mut pages) = (0, Vec::new(), 0);
    loop {
        let records = readers.read_page("s", after, 1000, 25).unwrap();
        let Some(last) = records.last() else { break };
        after = last.seq;
        pages += 1;
        all.extend(records.into_iter().map(|r| r.payload));
    }
    assert_eq!(all, payloads);
    assert_eq!(pages, 4, "pages [1,2] [3] [4] [5]");
    writer.close().unwrap();
}
