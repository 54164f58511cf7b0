//! Memory and overload: a read of large records is held to the page byte budget (peak RSS read
//! from `/proc/<pid>/status`), and a full commit queue answers `503 overloaded` with
//! `Retry-After` at once instead of holding the request until it times out.

use std::time::{Duration, Instant};

use hyper::Method;
use torture::Client;

use crate::support::{self, Options};

/// A process's peak resident set (`VmHWM`) in bytes.
pub(crate) fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kib * 1024
}

const MIB: u64 = 1 << 20;

/// Reads every record of `stream` page by page (`limit=1000`, then `after = next_after` until a
/// page comes back empty); returns (seq, payload length) and the number of pages.
async fn read_all(client: &Client, stream: &str) -> (Vec<(u64, usize)>, usize) {
    let mut out = Vec::new();
    let mut after = 0;
    let mut pages = 0;
    loop {
        let path = format!("/v1/streams/{stream}/records?after={after}&limit=1000");
        // A kept-alive connection that the server closed while this client was busy parsing
        // the last page fails at once: try again on a new one.
        let mut tries = 0;
        let reply = loop {
            match client.send(Method::GET, &path, &[], "").await {
                Ok(reply) => break reply,
                Err(e) if tries < 3 => {
                    tries += 1;
                    eprintln!("{path}: {e}; trying again");
                }
                Err(e) => panic!("{path}: {e}"),
            }
        };
        assert_eq!(reply.status, 200, "{path}: {:?}", reply.body);
        let page = reply.json();
        let records = page["records"].as_array().expect("records");
        if records.is_empty() {
            return (out, pages);
        }
        pages += 1;
        for r in records {
            out.push((
                r["seq"].as_u64().unwrap(),
                r["payload"].as_str().map_or(0, str::len),
            ));
        }
        after = page["next_after"].as_u64().unwrap();
    }
}

/// Issue #14 item 3: 200 records of ~1 MB in a stream, four clients reading it at once with
/// `limit=1000`. Without a byte budget each page held the whole stream (~200 MB, plus its JSON),
/// and the four together took depot to a peak RSS of ~1.8 GiB. With `max_page_bytes` (4 MiB by
/// default) each page ends early, `next_after` says where to go on, and the peak stays far below
/// 256 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_readers_of_large_records_stay_within_the_page_budget() {
    let _serial = support::serial().await;
    let dir = tempfile::tempdir().unwrap();
    // Generous timeouts: without a page budget a debug build takes long over 200 MB pages, and
    // what this test measures is the memory, not the time.
    let options = Options::default().set("DEPOT_REQUEST_TIMEOUT_MS", 300_000);
    let depot = support::start_ok(&dir.path().join("data"), &options).await;
    let pid = depot.child.id();
    let client = Client::new(
        &format!("http://{}", depot.addr),
        None,
        Duration::from_secs(300),
    )
    .expect("client");
    const RECORDS: usize = 200;
    const SIZE: usize = 1_000_000;
    for i in 0..RECORDS {
        let body = format!("\"{i:07}{}\"", "x".repeat(SIZE - 7));
        let reply = depot
            .client
            .send(Method::POST, "/v1/streams/big/records", &[], body)
            .await
            .expect("post");
        assert_eq!(reply.status, 201, "{:?}", reply.body);
    }
    let after_writes = peak_rss(pid);

    let started = Instant::now();
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { read_all(&client, "big").await })
        })
        .collect();
    let mut pages = 0;
    for reader in readers {
        let (records, n) = reader.await.unwrap();
        pages = n;
        assert_eq!(records.len(), RECORDS, "a reader missed records");
        for (i, (seq, len)) in records.iter().enumerate() {
            assert_eq!((*seq, *len), (i as u64 + 1, SIZE), "record {i}");
        }
    }
    let took = started.elapsed();
    let peak = peak_rss(pid);
    eprintln!(
        "4 readers × {RECORDS} records of {SIZE} bytes: {pages} pages each in {took:?}; \
         peak RSS {} MiB after the writes, {} MiB after the reads",
        after_writes / MIB,
        peak / MIB
    );
    assert!(
        pages > 1,
        "one page held all {RECORDS} records (~{} MB)",
        RECORDS * SIZE / 1_000_000
    );
    assert!(
        peak < 256 * MIB,
        "peak RSS {} MiB while four clients read large records",
        peak / MIB
    );
    depot.stop(Duration::from_secs(20)).await;
}

/// Issue #14 item 12: API.md documents `503 overloaded` (+ `Retry-After`) for a full commit
/// queue, but a full queue used to hold the request until the disk freed up or the request timed
/// out (`408`). The committer is stalled here by another SQLite connection holding the database's
/// write lock: once `commit_queue` requests wait, the next ones are answered `503 overloaded` at
/// once, and nothing of them is stored; the waiting ones are stored when the lock goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_commit_queue_answers_503_overloaded_at_once() {
    let _serial = support::serial().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let options = Options::default()
        .set("DEPOT_COMMIT_QUEUE", 2)
        .set("DEPOT_REQUEST_TIMEOUT_MS", 20_000);
    let depot = support::start_ok(&data, &options).await;
    let reply = depot
        .client
        .send(Method::POST, "/v1/streams/q/records", &[], "0")
        .await
        .unwrap();
    assert_eq!(reply.status, 201);

    // Another connection takes the write lock: the committer's next BEGIN IMMEDIATE waits (up
    // to the store's 5 s busy timeout).
    let blocker = rusqlite::Connection::open(data.join("depot.sqlite3")).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();

    const CLIENTS: usize = 12;
    let started = Instant::now();
    let requests: Vec<_> = (1..=CLIENTS)
        .map(|i| {
            let client = depot.client.clone();
            tokio::spawn(async move {
                let sent = Instant::now();
                let reply = client
                    .send(Method::POST, "/v1/streams/q/records", &[], i.to_string())
                    .await
                    .expect("an answer");
                (reply, sent.elapsed())
            })
        })
        .collect();
    // Hold the lock for a second: the requests that got in wait, the others must not.
    tokio::time::sleep(Duration::from_secs(1)).await;
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);

    let (mut stored, mut overloaded) = (Vec::new(), Vec::new());
    for request in requests {
        let (reply, took) = request.await.unwrap();
        match (reply.status.as_u16(), reply.error_code().as_str()) {
            (201, _) => stored.push(took),
            (503, "overloaded") => {
                let retry_after = reply
                    .headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                assert!(
                    retry_after.is_some_and(|s| s >= 1),
                    "503 overloaded without a Retry-After: {:?}",
                    reply.headers
                );
                overloaded.push(took);
            }
            (status, code) => panic!(
                "unexpected {status} {code} after {took:?}: {:?}",
                reply.body
            ),
        }
    }
    let all = started.elapsed();
    let slowest_503 = overloaded.iter().max().copied().unwrap_or_default();
    let fastest_503 = overloaded.iter().min().copied().unwrap_or_default();
    eprintln!(
        "{CLIENTS} appends against a stalled committer, commit_queue = 2: {} stored, {} answered \
         503 overloaded in {fastest_503:?}..{slowest_503:?} (the lock was held 1 s; all answered \
         in {all:?})",
        stored.len(),
        overloaded.len()
    );
    assert!(
        !overloaded.is_empty(),
        "no 503 overloaded: every request waited for the stalled committer"
    );
    assert!(
        slowest_503 < Duration::from_millis(500),
        "a 503 overloaded took {slowest_503:?}: it waited for the committer"
    );
    assert!(
        stored.len() <= 1 + 2 + 2,
        "{} stored: more than one batch and the queue",
        stored.len()
    );
    // Exactly the acknowledged requests are stored, none of the refused ones.
    let page = depot
        .client
        .send(Method::GET, "/v1/streams/q/records?limit=100", &[], "")
        .await
        .unwrap()
        .json();
    let count = page["records"].as_array().unwrap().len();
    assert_eq!(count, 1 + stored.len(), "{page}");
    depot.stop(Duration::from_secs(20)).await;
}
