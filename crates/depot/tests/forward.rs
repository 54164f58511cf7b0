//! depot forwarding to a real PostgreSQL: the real binary, real HTTP, real signals, and a private
//! PostgreSQL cluster on loopback started from the system's server binaries.
//!
//! Without PostgreSQL's server binaries (`initdb`, `pg_ctl`) these tests print SKIPPED and pass;
//! with `REQUIRE_POSTGRES_TESTS=1` (CI) they fail instead. Debian/Ubuntu: `apt-get install
//! postgresql` (or run `ci/postgres.sh`).
#![cfg(unix)]

mod pg;
mod running;

use pg::PgCluster;
use running::{Depot, client, read_all};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// A running depot.

impl Depot {
    async fn forward_status(&self) -> Value {
        self.status().await["forward"].clone()
    }

    /// Waits until `check` holds for the `forward` status; panics after `within`.
    async fn wait_forward(
        &self,
        within: Duration,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let end = Instant::now() + within;
        loop {
            let f = self.forward_status().await;
            if check(&f) {
                return f;
            }
            assert!(
                Instant::now() < end,
                "{what}: not after {within:?}; forward status {f:#}\nlog:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn post(&self, stream: &str, body: &Value) -> Value {
        let r = client()
            .post(format!("{}/v1/streams/{stream}/records", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        r.json().await.unwrap()
    }
}

fn forwarding(
    cluster: &PgCluster,
    extra: &[(&'static str, &'static str)],
) -> Vec<(&'static str, String)> {
    let mut env = vec![("DEPOT_FORWARD_TO", cluster.url())];
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    env
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Every record of `stream` in the local store, by sequence number.
async fn read_local(base: &str, stream: &str) -> BTreeMap<i64, Value> {
    read_all(base, stream)
        .await
        .into_iter()
        .map(|(seq, payload)| (seq as i64, payload))
        .collect()
}

/// Every record PostgreSQL holds from `origin`: (stream, seq) → payload.
async fn read_pg(pg: &tokio_postgres::Client, origin: &str) -> BTreeMap<(String, i64), Value> {
    pg.query(
        "SELECT stream, seq, payload::text FROM depot_records WHERE origin = $1",
        &[&origin],
    )
    .await
    .unwrap()
    .iter()
    .map(|row| {
        let payload: String = row.get(2);
        (
            (row.get(0), row.get(1)),
            serde_json::from_str(&payload).unwrap(),
        )
    })
    .collect()
}

async fn pg_count(pg: &tokio_postgres::Client) -> i64 {
    pg.query_one("SELECT count(*) FROM depot_records", &[])
        .await
        .unwrap()
        .get(0)
}

/// The check of the issue: no session of anyone but us is idle in a transaction or running a
/// statement.
const OPEN_TRANSACTIONS: &str = "SELECT count(*) FROM pg_stat_activity \
    WHERE state LIKE 'idle in transaction%' \
    OR (backend_type = 'client backend' AND query NOT ILIKE '%pg_stat_activity%' AND state = 'active')";

// ---------------------------------------------------------------------------------------------
// Load: clients that remember what got 201.

/// Acknowledged records: (depot, stream, seq) → payload.
type Acked = Arc<Mutex<BTreeMap<(usize, String, i64), Value>>>;

/// `clients` clients posting 1 to 5 records at a time to three streams of the depot whose base
/// URL is in `base` (it changes when that depot restarts), until `stop`. Failures (PostgreSQL
/// being away must cause none; a killed depot causes some) are retried with new records.
fn load(
    depot: usize,
    base: Arc<Mutex<String>>,
    clients: usize,
    acked: &Acked,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(u64, u64)>> {
    (0..clients)
        .map(|c| {
            let (base, acked, stop) = (base.clone(), acked.clone(), stop.clone());
            tokio::spawn(async move {
                let http = client();
                let (mut ok, mut failed) = (0u64, 0u64);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let stream = format!("s{}", i % 3);
                    let n = 1 + (i % 5);
                    let records: Vec<Value> = (0..n)
                        .map(|k| json!({ "depot": depot, "client": c, "i": i, "k": k, "pad": "x".repeat(40) }))
                        .collect();
                    i += 1;
                    let url = format!("{}/v1/streams/{stream}/records", base.lock().unwrap());
                    match http.post(url).json(&records).send().await {
                        Ok(r) if r.status() == 201 => {
                            let v: Value = r.json().await.unwrap();
                            let first = v["first_seq"].as_i64().unwrap();
                            let mut acked = acked.lock().unwrap();
                            for (k, record) in records.into_iter().enumerate() {
                                acked.insert((depot, stream.clone(), first + k as i64), record);
                            }
                            ok += 1;
                        }
                        Ok(r) => panic!("unexpected {}: {:?}", r.status(), r.text().await),
                        Err(_) => {
                            failed += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                (ok, failed)
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_depots_deliver_exactly_once_through_a_postgres_restart_and_a_sigkill() {
    let test = "two_depots_deliver_exactly_once_through_a_postgres_restart_and_a_sigkill";
    let Some(cluster) = PgCluster::start(test) else {
        return;
    };
    let env = forwarding(&cluster, &[("DEPOT_FORWARD_BATCH", "200")]);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut depots = [
        Depot::start(dirs[0].path(), &env_refs(&env)),
        Depot::start(dirs[1].path(), &env_refs(&env)),
    ];
    let bases = [
        Arc::new(Mutex::new(depots[0].base.clone())),
        Arc::new(Mutex::new(depots[1].base.clone())),
    ];
    let acked = Acked::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = load(0, bases[0].clone(), 3, &acked, &stop);
    clients.extend(load(1, bases[1].clone(), 3, &acked, &stop));

    // Both deliver.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for d in &depots {
        d.wait_forward(Duration::from_secs(10), "first delivery", |f| {
            f["delivered_records"].as_u64() > Some(0)
        })
        .await;
    }
    let origins: Vec<String> = {
        let mut o = Vec::new();
        for d in &depots {
            o.push(
                d.forward_status().await["origin"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        o
    };
    assert_ne!(origins[0], origins[1]);

    // PostgreSQL goes away in the middle of the load: depots keep acknowledging, the backlog grows
    // and is visible, errors are counted.
    cluster.stop_fast();
    let acked_at_outage = acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = depots[0]
        .wait_forward(Duration::from_secs(5), "backlog during the outage", |f| {
            f["backlog_records"].as_u64() > Some(0)
                && matches!(f["state"].as_str(), Some("backing_off" | "connecting"))
        })
        .await;
    assert!(during["errors"].as_u64() > Some(0), "{during:#}");
    assert!(
        during["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("PostgreSQL"),
        "{during:#}"
    );
    let acked_during = acked.lock().unwrap().len() - acked_at_outage;
    assert!(
        acked_during > 10,
        "only {acked_during} records acknowledged while PostgreSQL was down"
    );
    cluster.start_server();

    // One depot is killed mid-load (mid-batch, most likely) and comes back on the same data.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    depots[1].signal(Signal::SIGKILL);
    tokio::task::block_in_place(|| depots[1].wait_exit(Duration::from_secs(5)));
    depots[1] = Depot::start(dirs[1].path(), &env_refs(&env));
    *bases[1].lock().unwrap() = depots[1].base.clone();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    stop.store(true, Ordering::Relaxed);
    let mut requests = 0;
    for c in clients {
        requests += c.await.unwrap().0;
    }
    assert_eq!(
        depots[1].forward_status().await["origin"],
        origins[1].as_str(),
        "the origin id changed across a restart"
    );

    // Everything is delivered...
    for d in &depots {
        d.wait_forward(Duration::from_secs(20), "backlog drained", |f| {
            f["backlog_records"] == 0 && f["state"] == "caught_up"
        })
        .await;
    }
    // ... exactly once: PostgreSQL holds exactly what each local store holds, and every
    // acknowledged record.
    let pg = cluster.client().await;
    let mut total = 0;
    for (d, depot) in depots.iter().enumerate() {
        let in_pg = read_pg(&pg, &origins[d]).await;
        let mut local = BTreeMap::new();
        for stream in ["s0", "s1", "s2"] {
            for (seq, payload) in read_local(&depot.base, stream).await {
                local.insert((stream.to_owned(), seq), payload);
            }
        }
        assert_eq!(
            in_pg.len(),
            local.len(),
            "depot {d}: PostgreSQL and the local store differ in size"
        );
        for (key, payload) in &local {
            assert_eq!(in_pg.get(key), Some(payload), "depot {d}: record {key:?}");
        }
        for ((depot_no, stream, seq), payload) in acked.lock().unwrap().iter() {
            if *depot_no == d {
                assert_eq!(
                    in_pg.get(&(stream.clone(), *seq)),
                    Some(payload),
                    "acknowledged record {d}/{stream}#{seq} not in PostgreSQL"
                );
            }
        }
        total += in_pg.len() as i64;
    }
    assert_eq!(pg_count(&pg).await, total, "rows from no known origin");
    let distinct: i64 = pg
        .query_one(
            "SELECT count(DISTINCT (payload->>'depot', payload->>'client', payload->>'i', payload->>'k')) FROM depot_records",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(distinct, total, "a record is in PostgreSQL twice");
    let acked = acked.lock().unwrap().len();
    assert!(acked > 500, "only {acked} acknowledged");
    eprintln!(
        "two depots: {acked} acknowledged records ({requests} requests, {acked_during} while \
         PostgreSQL was down), {total} rows in PostgreSQL, each once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_open_transaction_leaves_nothing_open_and_loses_nothing() {
    let test = "sigterm_during_an_open_transaction_leaves_nothing_open_and_loses_nothing";
    let Some(cluster) = PgCluster::start(test) else {
        return;
    };
    let env = forwarding(&cluster, &[("DEPOT_SIGTERM_BUDGET_MS", "3000")]);
    let dir = tempfile::tempdir().unwrap();
    let mut depot = Depot::start(dir.path(), &env_refs(&env));
    for i in 0..10 {
        depot.post("t", &json!({ "i": i })).await;
    }
    depot
        .wait_forward(Duration::from_secs(10), "first ten delivered", |f| {
            f["backlog_records"] == 0 && f["delivered_records"] == 10
        })
        .await;

    // Every insert now sleeps in PostgreSQL, inside depot's transaction.
    let pg = cluster.client().await;
    pg.batch_execute(
        "CREATE FUNCTION depot_slow() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(60); RETURN NULL; END $$; \
         CREATE TRIGGER slow BEFORE INSERT ON depot_records \
         FOR EACH STATEMENT EXECUTE FUNCTION depot_slow();",
    )
    .await
    .unwrap();
    depot.post("t", &json!((10..60).collect::<Vec<_>>())).await;
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let open: i64 = pg
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'depot' \
                 AND state = 'active' AND query ILIKE 'INSERT INTO depot_records%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if open == 1 {
            break;
        }
        assert!(Instant::now() < end, "depot's insert never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let sent = Instant::now();
    depot.signal(Signal::SIGTERM);
    let code = tokio::task::block_in_place(|| depot.wait_exit(Duration::from_secs(10)));
    let took = sent.elapsed();
    assert_eq!(code, Some(0), "{}", depot.log_text());
    assert!(took < Duration::from_secs(4), "the stop took {took:?}");
    let open: i64 = pg.query_one(OPEN_TRANSACTIONS, &[]).await.unwrap().get(0);
    assert_eq!(open, 0, "a transaction was left open on the server");
    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("last-shutdown.json")).unwrap())
            .unwrap();
    let phase = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "forward to PostgreSQL")
        .unwrap_or_else(|| panic!("no forwarding phase in {report:#}"));
    assert!(
        phase["detail"]
            .as_str()
            .unwrap()
            .contains("50 left in the local store"),
        "{phase:#}"
    );
    assert_eq!(pg_count(&pg).await, 10, "the cancelled batch was committed");

    // Without the slow trigger, the restarted depot delivers the rest, once.
    pg.batch_execute("DROP TRIGGER slow ON depot_records")
        .await
        .unwrap();
    let depot = Depot::start(dir.path(), &env_refs(&env));
    let f = depot
        .wait_forward(Duration::from_secs(10), "the rest delivered", |f| {
            f["backlog_records"] == 0 && f["state"] == "caught_up"
        })
        .await;
    let in_pg = read_pg(&pg, f["origin"].as_str().unwrap()).await;
    let seqs: Vec<i64> = in_pg.keys().map(|(_, seq)| *seq).collect();
    assert_eq!(seqs, (1..=60).collect::<Vec<_>>());
    for ((_, seq), payload) in &in_pg {
        let expected = if *seq <= 10 {
            json!({ "i": seq - 1 })
        } else {
            json!(seq - 1)
        };
        assert_eq!(payload, &expected);
    }
    eprintln!("SIGTERM with an open transaction: stopped in {took:?}, nothing left open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_shows_while_postgres_is_down_and_retention_spares_undelivered_records() {
    let test = "backlog_shows_while_postgres_is_down_and_retention_spares_undelivered_records";
    let Some(cluster) = PgCluster::start(test) else {
        return;
    };
    cluster.stop_fast();
    let env = forwarding(
        &cluster,
        &[
            ("DEPOT_RETAIN_DELIVERED", "3"),
            ("DEPOT_FORWARD_BATCH", "10"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let depot = Depot::start(dir.path(), &env_refs(&env));
    depot.post("a", &json!((1..=25).collect::<Vec<_>>())).await;
    depot.post("b", &json!((1..=5).collect::<Vec<_>>())).await;
    // Valid JSON that PostgreSQL's jsonb refuses: it must not hold up the rest.
    let bad = r#"[1, {"bad": "\u0000"}, 3]"#;
    let r = client()
        .post(format!("{}/v1/streams/c/records", depot.base))
        .body(bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let f = depot
        .wait_forward(Duration::from_secs(5), "backlog while down", |f| {
            f["backlog_records"] == 33 && f["state"] == "backing_off"
        })
        .await;
    assert_eq!(f["backlog_streams"], 3);
    assert!(
        f["oldest_undelivered_age_seconds"].as_f64().unwrap() >= 0.0,
        "{f:#}"
    );
    let error = f["last_error"]["message"].as_str().unwrap();
    assert!(
        error.contains("cannot reach PostgreSQL at postgres://postgres@127.0.0.1:"),
        "{error}"
    );
    assert!(
        f["target"].as_str().unwrap().ends_with("sslmode=disable"),
        "{f:#}"
    );
    let metrics = depot.metrics_text().await;
    let scrape =
        prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let value = |name: &str| {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Counter(v) => v,
                _ => f64::NAN,
            })
            .sum::<f64>()
    };
    assert_eq!(value("depot_forward_backlog_records"), 33.0, "{metrics}");
    assert!(value("depot_forward_errors_total") >= 1.0, "{metrics}");
    assert!(value("depot_forward_oldest_age_seconds") >= 0.0);
    // Retention is on, but nothing is delivered: nothing is deleted.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(read_local(&depot.base, "a").await.len(), 25);
    assert_eq!(read_local(&depot.base, "b").await.len(), 5);

    // PostgreSQL is back: everything is delivered, then all but the newest 3 per stream pruned.
    cluster.start_server();
    depot
        .wait_forward(Duration::from_secs(40), "delivered after the outage", |f| {
            f["backlog_records"] == 0 && f["pruned_records"] == 24
        })
        .await;
    let a: Vec<i64> = read_local(&depot.base, "a").await.into_keys().collect();
    let b: Vec<i64> = read_local(&depot.base, "b").await.into_keys().collect();
    assert_eq!((a, b), (vec![23, 24, 25], vec![3, 4, 5]));
    let pg = cluster.client().await;
    assert_eq!(pg_count(&pg).await, 32);
    let rejected = pg
        .query(
            "SELECT stream, seq, payload_text, error FROM depot_rejected",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rejected.len(), 1);
    let (stream, seq, text, error): (String, i64, String, String) = (
        rejected[0].get(0),
        rejected[0].get(1),
        rejected[0].get(2),
        rejected[0].get(3),
    );
    assert_eq!((stream.as_str(), seq), ("c", 2));
    assert_eq!(text, r#"{"bad": "\u0000"}"#, "not the text depot stored");
    assert!(error.contains("22P05"), "{error}");
    let f = depot.forward_status().await;
    assert_eq!(f["rejected_records"], 1, "{f:#}");
    let status = depot.status().await;
    assert_eq!(
        status["records"], 33,
        "the record count still counts pruned records"
    );
    let delivered = depot.metrics_text().await;
    assert!(
        delivered.contains("depot_forward_delivered_total 33"),
        "{delivered}"
    );
    assert!(
        delivered.contains("depot_forward_rejected_total 1"),
        "{delivered}"
    );
}

/// A process's peak resident set (`VmHWM`) in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kib * 1024
}

/// Issue #14 item 4: batches were capped by count only, so a backlog of large records went as
/// one huge transaction (1000 records of up to `max_body_bytes`: ~1 GB, over PostgreSQL's 1 GiB
/// message limit). With `forward_batch_bytes` (16 MiB) they go in bounded batches, and the
/// forwarder's memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_records_forward_in_batches_bounded_by_bytes() {
    let test = "large_records_forward_in_batches_bounded_by_bytes";
    let Some(cluster) = PgCluster::start(test) else {
        return;
    };
    // PostgreSQL away while the backlog builds up: when it is back, everything is waiting.
    cluster.stop_fast();
    let env = forwarding(&cluster, &[]);
    let dir = tempfile::tempdir().unwrap();
    let depot = Depot::start(dir.path(), &env_refs(&env));
    const RECORDS: usize = 120;
    const SIZE: usize = 1_000_000;
    let http = client();
    for i in 0..RECORDS {
        let body = format!("\"{i:07}{}\"", "x".repeat(SIZE - 7));
        let r = http
            .post(format!("{}/v1/streams/big/records", depot.base))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let pid = depot.child.id();
    let after_writes = peak_rss(pid);
    let started = Instant::now();
    cluster.start_server();
    let f = depot
        .wait_forward(Duration::from_secs(120), "large records delivered", |f| {
            f["backlog_records"] == 0 && f["delivered_records"] == RECORDS
        })
        .await;
    let took = started.elapsed();
    let peak = peak_rss(pid);
    let pg = cluster.client().await;
    let row = pg
        .query_one(
            "SELECT count(*), min(length(payload #>> '{}')), max(length(payload #>> '{}')) \
             FROM depot_records WHERE origin = $1",
            &[&f["origin"].as_str().unwrap()],
        )
        .await
        .unwrap();
    let (count, min, max): (i64, i32, i32) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (count, min, max),
        (RECORDS as i64, SIZE as i32, SIZE as i32)
    );
    let batches = f["batches"].as_u64().unwrap();
    eprintln!(
        "{RECORDS} records of {SIZE} bytes forwarded in {batches} batches in {took:?}; peak RSS \
         {} MiB after the writes, {} MiB after forwarding",
        after_writes >> 20,
        peak >> 20
    );
    assert!(
        batches >= (RECORDS * SIZE / (16 << 20)) as u64,
        "{batches} batches: not bounded by 16 MiB"
    );
    assert!(
        peak < 192 << 20,
        "peak RSS {} MiB while forwarding large records",
        peak >> 20
    );
}

/// Issue #14 item 4: a batch that PostgreSQL times out on was retried unchanged, for ever. Now it
/// is halved after each timeout (down to one record) and grows back after successes: the
/// records arrive, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_timeout_shrinks_the_batch_until_the_records_arrive() {
    let test = "a_statement_timeout_shrinks_the_batch_until_the_records_arrive";
    let Some(cluster) = PgCluster::start(test) else {
        return;
    };
    let env = forwarding(&cluster, &[("DEPOT_FORWARD_STATEMENT_TIMEOUT_MS", "1000")]);
    let dir = tempfile::tempdir().unwrap();
    let depot = Depot::start(dir.path(), &env_refs(&env));
    depot.post("t", &json!({ "i": 0 })).await;
    depot
        .wait_forward(Duration::from_secs(10), "the first record delivered", |f| {
            f["delivered_records"] == 1
        })
        .await;
    // Each row now takes 150 ms: 40 rows (6 s) in one statement exceed the 1 s timeout, 5 do not.
    let pg = cluster.client().await;
    pg.batch_execute(
        "CREATE FUNCTION depot_slow_row() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(0.15); RETURN NEW; END $$; \
         CREATE TRIGGER slow_row BEFORE INSERT ON depot_records \
         FOR EACH ROW EXECUTE FUNCTION depot_slow_row();",
    )
    .await
    .unwrap();
    depot.post("t", &json!((1..=40).collect::<Vec<_>>())).await;
    let started = Instant::now();
    let f = depot
        .wait_forward(Duration::from_secs(60), "the slow records delivered", |f| {
            f["backlog_records"] == 0 && f["delivered_records"] == 41
        })
        .await;
    let took = started.elapsed();
    let in_pg = read_pg(&pg, f["origin"].as_str().unwrap()).await;
    let seqs: Vec<i64> = in_pg.keys().map(|(_, seq)| *seq).collect();
    assert_eq!(seqs, (1..=41).collect::<Vec<_>>());
    let log = depot.log_text();
    for limit in [20, 10, 5] {
        assert!(
            log.contains(&format!("\"next_limit\":{limit}")),
            "no batch shrunk to {limit} records:\n{log}"
        );
    }
    eprintln!(
        "40 records behind a 150 ms/row trigger and a 1 s statement_timeout: delivered in \
         {took:?}, {} errors, batch limit now {}",
        f["errors"], f["batch_limit"]
    );
}

/// Issue #14 item 6: `depot_records` dropped (and recreated, by hand or by depot) under the same
/// `depot_schema.target_id` left the cursors where they were: records 1..cursor never came back
/// while the status said `caught_up`. The cursors are tied to the table itself (its oid), so a
/// new table gets everything the local store still holds, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_records_table_gets_every_record_again() {
    let test = "a_dropped_records_table_gets_every_record_again";
    let Some(cluster) = PgCluster::start(test) else {
        return;
    };
    let env = forwarding(&cluster, &[]);
    let dir = tempfile::tempdir().unwrap();
    let mut depot = Depot::start(dir.path(), &env_refs(&env));
    depot.post("d", &json!((1..=10).collect::<Vec<_>>())).await;
    let f = depot
        .wait_forward(Duration::from_secs(10), "first ten delivered", |f| {
            f["backlog_records"] == 0 && f["delivered_records"] == 10
        })
        .await;
    let origin = f["origin"].as_str().unwrap().to_owned();
    let pg = cluster.client().await;
    let seqs = |m: BTreeMap<(String, i64), Value>| m.keys().map(|(_, s)| *s).collect::<Vec<_>>();

    // Dropped and recreated by hand while depot is connected, then new records come.
    pg.batch_execute(
        "BEGIN; DROP TABLE depot_records; \
         CREATE TABLE depot_records (origin text NOT NULL, stream text NOT NULL, \
           seq bigint NOT NULL, payload jsonb NOT NULL, received_at timestamptz NOT NULL, \
           delivered_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (origin, stream, seq)); \
         COMMIT;",
    )
    .await
    .unwrap();
    depot.post("d", &json!((11..=15).collect::<Vec<_>>())).await;
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let f = depot.forward_status().await;
        let have = seqs(read_pg(&pg, &origin).await);
        if have == (1..=15).collect::<Vec<_>>() {
            break;
        }
        assert!(
            Instant::now() < end,
            "PostgreSQL holds {have:?} of 1..=15 after the table was recreated; forward status \
             {f:#}\nlog:\n{}",
            depot.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Dropped while depot is stopped: the restarted depot creates it and fills it again.
    pg.batch_execute("DROP TABLE depot_records").await.unwrap();
    depot.signal(Signal::SIGTERM);
    tokio::task::block_in_place(|| depot.wait_exit(Duration::from_secs(10)));
    let depot = Depot::start(dir.path(), &env_refs(&env));
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let f = depot.forward_status().await;
        let have = match pg.query("SELECT 1 FROM depot_records LIMIT 0", &[]).await {
            Err(_) => Vec::new(),
            Ok(_) => seqs(read_pg(&pg, &origin).await),
        };
        if have == (1..=15).collect::<Vec<_>>() && f["state"] == "caught_up" {
            break;
        }
        assert!(
            Instant::now() < end,
            "PostgreSQL holds {have:?} of 1..=15 after the table was dropped; forward status \
             {f:#}\nlog:\n{}",
            depot.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        depot
            .log_text()
            .contains("every record still in the local store"),
        "no warning that everything is sent again:\n{}",
        depot.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_schema_version_is_refused_with_a_clear_message() {
    let test = "an_unknown_schema_version_is_refused_with_a_clear_message";
    let Some(cluster) = PgCluster::start(test) else {
        return;
    };
    let pg = cluster.client().await;
    pg.batch_execute(
        "CREATE TABLE depot_schema (version integer NOT NULL, target_id text NOT NULL); \
         INSERT INTO depot_schema VALUES (99, 'from-the-future'); \
         CREATE TABLE depot_records (origin text, stream text, seq bigint, payload jsonb, \
         received_at timestamptz, delivered_at timestamptz, PRIMARY KEY (origin, stream, seq))",
    )
    .await
    .unwrap();
    let env = forwarding(&cluster, &[]);
    let dir = tempfile::tempdir().unwrap();
    let depot = Depot::start(dir.path(), &env_refs(&env));
    depot.post("s", &json!({ "kept": "locally" })).await;
    let f = depot
        .wait_forward(Duration::from_secs(10), "refusal", |f| {
            f["state"] == "needs_attention" && f["backlog_records"] == 1
        })
        .await;
    let error = f["last_error"]["message"].as_str().unwrap();
    assert!(
        error.contains("depot_schema")
            && error.contains("version 99")
            && error.contains("version 1"),
        "{error}"
    );
    assert!(f["retry_in_ms"].as_u64().unwrap() > 10_000, "{f:#}");
    assert!(
        depot.log_text().contains("depot_schema says"),
        "the log does not say why"
    );
    assert_eq!(pg_count(&pg).await, 0);
    // The local write was not affected.
    assert_eq!(read_local(&depot.base, "s").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verify_full_trusts_sslrootcert_and_refuses_an_unknown_certificate() {
    let test = "tls_verify_full_trusts_sslrootcert_and_refuses_an_unknown_certificate";
    let Some(cluster) = PgCluster::start_with(test, false, true) else {
        return;
    };
    let url = |query: &str| {
        format!(
            "postgres://postgres@localhost:{}/postgres?{query}",
            cluster.port
        )
    };
    let cert = cluster.dir.path().join("server.crt");
    let trusted = url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        cert.display()
    ));
    let started = Instant::now();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Depot::start(dir_a.path(), &[("DEPOT_FORWARD_TO", &trusted)]);
    let b = Depot::start(
        dir_b.path(),
        &[("DEPOT_FORWARD_TO", &url("sslmode=verify-full"))],
    );
    a.post("s", &json!(1)).await;
    b.post("s", &json!(2)).await;
    let f = a
        .wait_forward(Duration::from_secs(10), "delivered over TLS", |f| {
            f["delivered_records"] == 1
        })
        .await;
    assert!(
        f["target"]
            .as_str()
            .unwrap()
            .ends_with("sslmode=verify-full"),
        "{f:#}"
    );
    let pg = cluster.client().await;
    let encrypted: bool = pg
        .query_one(
            "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'depot'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted, "depot's session is not encrypted");
    // The self-signed certificate is not among the system's roots.
    let f = b
        .wait_forward(Duration::from_secs(10), "refused certificate", |f| {
            f["state"] == "backing_off" && f["errors"].as_u64() > Some(0)
        })
        .await;
    let error = f["last_error"]["message"].as_str().unwrap();
    assert!(error.contains("certificate"), "{error}");
    assert_eq!(pg_count(&pg).await, 1);
    eprintln!(
        "TLS: verify-full with sslrootcert delivered, an unknown certificate refused, {:?} after the cluster started",
        started.elapsed()
    );
}

/// Forwarding throughput into a local PostgreSQL (fsync on), at 100- and 1000-record batches.
/// `cargo test -p depot --release --test forward -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by hand"]
async fn forwarding_throughput() {
    let test = "forwarding_throughput";
    let Some(cluster) = PgCluster::start_with(test, true, false) else {
        return;
    };
    const RECORDS: usize = 100_000;
    for batch in ["100", "1000"] {
        // Fill a store with forwarding off, then time a depot that forwards all of it.
        let dir = tempfile::tempdir().unwrap();
        {
            let mut depot = Depot::start(dir.path(), &[]);
            let body = json!((0..1000)
                .map(|i| json!({ "i": i, "sensor": "kitchen", "value": 21.5, "pad": "x".repeat(64) }))
                .collect::<Vec<_>>());
            for r in 0..RECORDS / 1000 {
                depot.post(&format!("s{}", r % 4), &body).await;
            }
            depot.signal(Signal::SIGTERM);
            tokio::task::block_in_place(|| depot.wait_exit(Duration::from_secs(20)));
        }
        let env = forwarding(&cluster, &[]);
        let mut env = env_refs(&env);
        env.push(("DEPOT_FORWARD_BATCH", batch));
        let started = Instant::now();
        let depot = Depot::start(dir.path(), &env);
        depot
            .wait_forward(Duration::from_secs(300), "all delivered", |f| {
                f["backlog_records"] == 0 && f["delivered_records"] == RECORDS as u64
            })
            .await;
        let took = started.elapsed();
        eprintln!(
            "forwarding throughput, {batch}-record batches: {RECORDS} records in {:.2} s = {:.0} records/s",
            took.as_secs_f64(),
            RECORDS as f64 / took.as_secs_f64()
        );
    }
    let pg = cluster.client().await;
    assert_eq!(pg_count(&pg).await, 2 * RECORDS as i64);
}
