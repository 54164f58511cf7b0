//! The in-process baselines: a rusqlite insert loop, and raw fsync/fdatasync rates of the disk.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::load::new_histogram;

/// What the rusqlite loop measured.
#[derive(Debug)]
pub struct SqliteOutcome {
    pub rows: u64,
    pub window: Duration,
    /// Per-transaction latency, microseconds.
    pub latency: Histogram<u64>,
}

/// depot's tables (the part an append touches), created in a fresh database: WAL,
/// `synchronous=FULL`, 4 KiB pages — as depot's store opens it.
const SCHEMA: &str = "
CREATE TABLE streams (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
    last_seq INTEGER NOT NULL CHECK (last_seq >= 0)) STRICT;
CREATE TABLE records (
    id INTEGER PRIMARY KEY, stream_id INTEGER NOT NULL,
    seq INTEGER NOT NULL CHECK (seq >= 1), received_at_ms INTEGER NOT NULL,
    payload TEXT NOT NULL, UNIQUE (stream_id, seq)) STRICT;
";

/// Inserts `rows_per_tx`-row transactions (`BEGIN IMMEDIATE`, the inserts, the stream's
/// `last_seq` update, `COMMIT` = one WAL fsync) one after the other on one connection for
/// `warmup + measure`; counts the rows committed inside the measurement window.
pub fn sqlite_loop(
    dir: &Path,
    rows_per_tx: usize,
    payload: &str,
    warmup: Duration,
    measure: Duration,
) -> rusqlite::Result<SqliteOutcome> {
    std::fs::create_dir_all(dir).expect("create the sqlite baseline dir");
    let conn = rusqlite::Connection::open(dir.join("baseline.sqlite3"))?;
    conn.pragma_update(None, "page_size", 4096)?;
    let _: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(SCHEMA)?;
    conn.execute("INSERT INTO streams (name, last_seq) VALUES ('b', 0)", [])?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let started = Instant::now();
    let (window_start, window_end) = (started + warmup, started + warmup + measure);
    let mut out = SqliteOutcome {
        rows: 0,
        window: measure,
        latency: new_histogram(),
    };
    let mut seq: i64 = 0;
    loop {
        let t0 = Instant::now();
        if t0 >= window_end {
            break;
        }
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        {
            let mut insert = conn.prepare_cached(
                "INSERT INTO records (stream_id, seq, received_at_ms, payload) \
                 VALUES (1, ?1, ?2, ?3)",
            )?;
            for _ in 0..rows_per_tx {
                seq += 1;
                insert.execute(rusqlite::params![seq, now_ms, payload])?;
            }
        }
        conn.prepare_cached("UPDATE streams SET last_seq = ?1 WHERE id = 1")?
            .execute([seq])?;
        conn.prepare_cached("COMMIT")?.execute([])?;
        let t1 = Instant::now();
        if t0 >= window_start && t1 <= window_end {
            out.rows += rows_per_tx as u64;
            out.latency
                .saturating_record((t1 - t0).as_micros().max(1) as u64);
        }
    }
    Ok(out)
}

/// Sync rates of the disk under `dir`, each measured for `each`.
#[derive(Debug, Clone, Copy)]
pub struct SyncRates {
    /// 4 KiB written over the same block, then `fdatasync`: what a WAL that is reused costs.
    pub overwrite_fdatasync: Rate,
    /// The same with `fsync` (what a SQLite built without `HAVE_FDATASYNC` calls).
    pub overwrite_fsync: Rate,
    /// 4 KiB appended (the file grows), then `fdatasync`: what a growing WAL costs.
    pub append_fdatasync: Rate,
}

#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub per_sec: f64,
    pub p50: Duration,
}

pub fn sync_rates(dir: &Path, each: Duration) -> std::io::Result<SyncRates> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("sync-probe");
    let block = [0x5au8; 4096];
    let measure = |file: &mut File, grow: bool, data_only: bool| -> std::io::Result<Rate> {
        let mut hist = new_histogram();
        let started = Instant::now();
        let mut n = 0u64;
        while started.elapsed() < each {
            if !grow {
                file.seek(SeekFrom::Start(0))?;
            }
            file.write_all(&block)?;
            let t0 = Instant::now();
            if data_only {
                file.sync_data()?;
            } else {
                file.sync_all()?;
            }
            hist.saturating_record(t0.elapsed().as_micros().max(1) as u64);
            n += 1;
        }
        Ok(Rate {
            per_sec: n as f64 / started.elapsed().as_secs_f64(),
            p50: Duration::from_micros(hist.value_at_quantile(0.5)),
        })
    };
    let open = || {
        OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
    };
    let mut file = open()?;
    file.write_all(&block)?;
    file.sync_all()?;
    let overwrite_fdatasync = measure(&mut file, false, true)?;
    let overwrite_fsync = measure(&mut file, false, false)?;
    let mut file = open()?;
    file.sync_all()?;
    let append_fdatasync = measure(&mut file, true, true)?;
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(SyncRates {
        overwrite_fdatasync,
        overwrite_fsync,
        append_fdatasync,
    })
}
