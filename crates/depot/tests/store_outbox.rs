//! The store as the forwarder's outbox: the schema upgrade from version 1, delivery cursors,
//! the backlog, and retention that never deletes what is not delivered.

mod common;

use common::{commit, open, request};
use depot::store::{
    APPLICATION_ID, AppendRequest, Outbox, OutboxRecord, Prune, Rejected, SCHEMA_VERSION, Store,
    UnixMillis,
};
use rusqlite::Connection;

fn at(stream: &str, payloads: &[&str], ms: i64) -> AppendRequest {
    AppendRequest {
        received_at: UnixMillis(ms),
        ..request(stream, payloads, None)
    }
}

fn seqs(batch: &[OutboxRecord]) -> Vec<(String, u64)> {
    batch.iter().map(|r| (r.stream.clone(), r.seq)).collect()
}

fn stored(store: &Store, stream: &str) -> Vec<u64> {
    store
        .readers
        .read(stream, 0, 1000)
        .unwrap()
        .into_iter()
        .map(|r| r.seq)
        .collect()
}

#[test]
fn a_version_1_database_is_upgraded_in_place_and_keeps_its_records() {
    let dir = tempfile::tempdir().unwrap();
    {
        // A database as depot 0.1 (schema version 1) left it.
        let conn = Connection::open(dir.path().join("depot.sqlite3")).unwrap();
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; BEGIN; {} \
             INSERT INTO streams (name, last_seq) VALUES ('old', 2); \
             INSERT INTO records (stream_id, seq, received_at_ms, payload) VALUES (1, 1, 5, '1'), (1, 2, 6, '2'); \
             PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = 1; COMMIT;",
            include_str!("../src/store/schema.sql")
        ))
        .unwrap();
    }
    let store = open(dir.path());
    assert_eq!(stored(&store, "old"), [1, 2]);
    let outbox = Outbox::open(&store.readers).unwrap();
    let origin = outbox.origin_id().unwrap();
    assert_eq!(origin.len(), 32);
    assert!(origin.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        outbox.backlog().unwrap().records,
        2,
        "old records are to be delivered"
    );
    drop(outbox);
    store.writer.close().unwrap();

    let conn = Connection::open(dir.path().join("depot.sqlite3")).unwrap();
    let version: i32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    drop(conn);
    // The origin id is made once.
    let store = open(dir.path());
    assert_eq!(
        Outbox::open(&store.readers).unwrap().origin_id().unwrap(),
        origin
    );
    store.writer.close().unwrap();
    // Another database gets another one.
    let other = tempfile::tempdir().unwrap();
    let store = open(other.path());
    assert_ne!(
        Outbox::open(&store.readers).unwrap().origin_id().unwrap(),
        origin
    );
    store.writer.close().unwrap();
}

#[test]
fn batches_follow_the_cursors_and_streams_take_turns() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    commit(
        &mut store.writer,
        &[
            at("a", &["1", "2", "3", "4"], 1000),
            at("b", &["1", "2"], 2000),
        ],
    )
    .unwrap();
    let mut outbox = Outbox::open(&store.readers).unwrap();
    let backlog = outbox.backlog().unwrap();
    assert_eq!((backlog.records, backlog.streams), (6, 2));
    assert_eq!(backlog.oldest, Some(UnixMillis(1000)));

    let first = outbox.next_batch(3, 0).unwrap();
    assert_eq!(
        seqs(&first),
        [("a".into(), 1), ("a".into(), 2), ("a".into(), 3)]
    );
    // The other stream goes first on the next turn.
    let second = outbox.next_batch(3, 1).unwrap();
    assert_eq!(
        seqs(&second),
        [("b".into(), 1), ("b".into(), 2), ("a".into(), 1)]
    );

    outbox.advance(&first).unwrap();
    let backlog = outbox.backlog().unwrap();
    assert_eq!((backlog.records, backlog.streams), (3, 2));
    assert_eq!(seqs(&outbox.next_batch(10, 0).unwrap())[0], ("a".into(), 4));
    // A cursor never goes back (a stale batch delivered twice).
    outbox.advance(&first[..1]).unwrap();
    assert_eq!(outbox.backlog().unwrap().records, 3);
    outbox.advance(&outbox.next_batch(10, 0).unwrap()).unwrap();
    assert_eq!(outbox.backlog().unwrap(), Default::default());
    assert!(outbox.next_batch(10, 0).unwrap().is_empty());

    // New appends are new backlog.
    commit(&mut store.writer, &[at("b", &["3"], 3000)]).unwrap();
    assert_eq!(seqs(&outbox.next_batch(10, 7).unwrap()), [("b".into(), 3)]);
    drop(outbox);
    store.writer.close().unwrap();
}

#[test]
fn retention_deletes_only_delivered_records_and_never_a_streams_newest() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let payloads: Vec<String> = (1..=10).map(|i| i.to_string()).collect();
    let payloads: Vec<&str> = payloads.iter().map(String::as_str).collect();
    // Records 1..=5 received at t=1000, 6..=10 at t=5000.
    commit(
        &mut store.writer,
        &[at("a", &payloads[..5], 1000), at("a", &payloads[5..], 5000)],
    )
    .unwrap();
    commit(&mut store.writer, &[at("u", &["1", "2"], 1000)]).unwrap();
    let mut outbox = Outbox::open(&store.readers).unwrap();

    // Nothing delivered: nothing goes, whatever the rule.
    for rule in [
        Prune::KeepNewest(0),
        Prune::ReceivedBefore(UnixMillis(i64::MAX)),
    ] {
        assert_eq!(outbox.prune(rule, 1000).unwrap(), 0);
    }
    // Deliver a up to 7 (u stays undelivered).
    let batch = outbox.next_batch(7, 0).unwrap();
    assert!(batch.iter().all(|r| r.stream == "a"));
    outbox.advance(&batch).unwrap();

    // By age: only the old delivered ones, at most `max_rows` a pass.
    let old = Prune::ReceivedBefore(UnixMillis(2000));
    assert_eq!(outbox.prune(old, 2).unwrap(), 2);
    assert_eq!(stored(&store, "a"), [3, 4, 5, 6, 7, 8, 9, 10]);
    assert_eq!(outbox.prune(old, 1000).unwrap(), 3);
    assert_eq!(stored(&store, "a"), [6, 7, 8, 9, 10]);
    // By count: keep the newest 1 delivered (7); 8..=10 are not delivered.
    assert_eq!(outbox.prune(Prune::KeepNewest(1), 1000).unwrap(), 1);
    assert_eq!(stored(&store, "a"), [7, 8, 9, 10]);
    // Everything delivered, keep none: the newest record stays (the store checks it at open).
    outbox.advance(&outbox.next_batch(100, 0).unwrap()).unwrap();
    assert_eq!(outbox.prune(Prune::KeepNewest(0), 1000).unwrap(), 3 + 1);
    assert_eq!(stored(&store, "a"), [10]);
    assert_eq!(stored(&store, "u"), [2]);
    drop(outbox);
    store.writer.close().unwrap();
    let store = open(dir.path());
    assert_eq!(
        store.report.total_records, 12,
        "counts stay: sequence numbers are not reused"
    );
    store.writer.close().unwrap();
}

#[test]
fn a_pruned_requests_retry_is_a_conflict_not_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    commit(&mut store.writer, &[request("s", &["1", "2"], Some("k"))]).unwrap();
    commit(&mut store.writer, &[request("s", &["3"], None)]).unwrap();
    let mut outbox = Outbox::open(&store.readers).unwrap();
    outbox.advance(&outbox.next_batch(10, 0).unwrap()).unwrap();
    assert_eq!(outbox.prune(Prune::KeepNewest(0), 100).unwrap(), 2);
    let acks = commit(&mut store.writer, &[request("s", &["1", "2"], Some("k"))]).unwrap();
    assert_eq!(
        acks[0],
        Err(Rejected::IdempotencyConflict { first: 1, last: 2 })
    );
    assert_eq!(stored(&store, "s"), [3]);
    drop(outbox);
    store.writer.close().unwrap();
}

#[test]
fn another_target_database_starts_the_cursors_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    commit(&mut store.writer, &[request("s", &["1", "2"], None)]).unwrap();
    let mut outbox = Outbox::open(&store.readers).unwrap();
    assert!(
        !outbox.bind_target("db-1").unwrap(),
        "no cursors to reset yet"
    );
    outbox.advance(&outbox.next_batch(10, 0).unwrap()).unwrap();
    assert_eq!(outbox.backlog().unwrap().records, 0);
    assert!(!outbox.bind_target("db-1").unwrap());
    assert_eq!(outbox.backlog().unwrap().records, 0);
    assert!(outbox.bind_target("db-2").unwrap());
    assert_eq!(outbox.backlog().unwrap().records, 2);
    drop(outbox);
    store.writer.close().unwrap();
}

/// Issue #14 item 4: a batch is bounded by bytes as well as by count; a record larger than the
/// budget goes alone, and streams still take turns.
#[test]
fn a_batch_ends_at_its_byte_budget_and_a_larger_record_goes_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let big = format!("\"{}\"", "x".repeat(98)); // 100 bytes
    commit(
        &mut store.writer,
        &[
            at("a", &["10", "11", big.as_str(), "13"], 1000),
            at("b", &["20", "21"], 1000),
        ],
    )
    .unwrap();
    let mut outbox = Outbox::open(&store.readers).unwrap();
    let batch =
        |o: &Outbox, max, bytes, turn| seqs(&o.next_batch_within(max, bytes, turn).unwrap());
    let a = |n: u64| ("a".to_owned(), n);
    let b = |n: u64| ("b".to_owned(), n);
    assert_eq!(batch(&outbox, 100, 4, 0), [a(1), a(2)], "2 + 2 bytes");
    assert_eq!(batch(&outbox, 100, 5, 0), [a(1), a(2)]);
    assert_eq!(batch(&outbox, 1, 100, 0), [a(1)], "the count still holds");
    // The budget spans streams: b's records follow a's while there is room.
    assert_eq!(batch(&outbox, 100, 4, 1), [b(1), b(2)]);
    assert_eq!(batch(&outbox, 100, 6, 1), [b(1), b(2), a(1)]);
    outbox
        .advance(&outbox.next_batch_within(2, 1000, 0).unwrap())
        .unwrap();
    // a's next record (100 bytes) is over the budget: it goes alone.
    assert_eq!(batch(&outbox, 100, 10, 0), [a(3)]);
    outbox
        .advance(&outbox.next_batch_within(100, 10, 0).unwrap())
        .unwrap();
    assert_eq!(batch(&outbox, 100, 10, 0), [a(4), b(1), b(2)]);
    drop(outbox);
    store.writer.close().unwrap();
}

/// Issue #14 item 6: new tables under the same target (a `depot_records` dropped and created
/// again) start the cursors over too; the tables of a new target are adopted; what retention
/// deleted is counted, since it cannot be sent again.
#[test]
fn new_tables_under_the_same_target_start_the_cursors_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    commit(&mut store.writer, &[request("s", &["1", "2", "3"], None)]).unwrap();
    let mut outbox = Outbox::open(&store.readers).unwrap();
    assert!(!outbox.bind_target("db-1").unwrap());
    assert!(
        !outbox.bind_tables("100/101").unwrap(),
        "the first tables are adopted"
    );
    outbox.advance(&outbox.next_batch(10, 0).unwrap()).unwrap();
    assert!(!outbox.bind_tables("100/101").unwrap());
    assert_eq!(outbox.backlog().unwrap().records, 0);
    assert!(
        outbox.bind_tables("200/101").unwrap(),
        "depot_records was replaced"
    );
    assert_eq!(outbox.backlog().unwrap().records, 3);
    outbox.advance(&outbox.next_batch(10, 0).unwrap()).unwrap();
    // Another database: its tables are adopted, not taken for a replacement.
    assert!(outbox.bind_target("db-2").unwrap());
    assert!(!outbox.bind_tables("300/301").unwrap());
    assert_eq!(outbox.backlog().unwrap().records, 3);
    outbox.advance(&outbox.next_batch(10, 0).unwrap()).unwrap();
    assert_eq!(outbox.pruned_records().unwrap(), 0);
    assert_eq!(outbox.prune(Prune::KeepNewest(1), 100).unwrap(), 2);
    assert_eq!(outbox.pruned_records().unwrap(), 2);
    drop(outbox);
    store.writer.close().unwrap();
}
