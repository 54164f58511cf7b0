//! Group commit against one commit per item, on a real fsyncing file sink, in the same run.
//!
//! `cargo bench -p winddown --bench group_commit`. For each number of concurrent submitters, each
//! submitter loops "submit one 64-byte item, await its ack" for a fixed window; the table shows
//! durable items per second and the ack latency, with group commit (batches up to 1024 items) and
//! with batches of one item, and the throughput ratio. The log files live under `target/`, which
//! must be on a real disk (not tmpfs) for the fsyncs to mean anything.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{FileSink, disk_dir, file_system_of};
use winddown::commit::{CommitConfig, GroupCommit};

/// How long one round of one cell runs. Each cell of the table is `ROUNDS` rounds, alternating
/// with the other mode (group first, then single first, …) so that the disk's slow and fast
/// phases (it is shared) fall on both modes alike. About 25 s in all.
const WINDOW: Duration = Duration::from_millis(600);
const ROUNDS: usize = 3;
const WARM_UP: Duration = Duration::from_millis(300);
const SUBMITTERS: [usize; 4] = [1, 16, 64, 256];
const ITEM_BYTES: usize = 64;

/// What the rounds of one mode at one concurrency measured.
#[derive(Default)]
struct Cell {
    latencies: Vec<Duration>,
    elapsed: Duration,
    commits: u64,
}

impl Cell {
    fn add(&mut self, round: Cell) {
        self.latencies.extend(round.latencies);
        self.elapsed += round.elapsed;
        self.commits += round.commits;
    }

    fn items_per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn items_per_commit(&self) -> f64 {
        self.latencies.len() as f64 / self.commits as f64
    }

    /// The latency at quantile `q`, in milliseconds.
    fn ms(&mut self, q: f64) -> String {
        self.latencies.sort_unstable();
        let at = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        format!("{:.2}", self.latencies[at].as_secs_f64() * 1e3)
    }
}

async fn run_cell(
    dir: &std::path::Path,
    submitters: usize,
    max_batch_items: usize,
    window: Duration,
) -> Cell {
    let path = dir.join(format!("log-{submitters}-{max_batch_items}"));
    let config = CommitConfig::new("bench").max_batch_items(max_batch_items);
    let committer = GroupCommit::start(FileSink::create(&path).unwrap(), config).unwrap();

    let started = Instant::now();
    let deadline = started + window;
    let tasks: Vec<_> = (0..submitters)
        .map(|_| {
            let committer = committer.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let submitted = Instant::now();
                    committer
                        .submit(vec![0xAB; ITEM_BYTES])
                        .await
                        .expect("commit succeeded");
                    latencies.push(submitted.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    let report = committer.drain(Duration::from_secs(30)).await.unwrap();
    assert_eq!(report.stats.committed_items, latencies.len() as u64);
    drop(report.sink);
    std::fs::remove_file(&path).unwrap();

    Cell {
        latencies,
        elapsed,
        commits: report.stats.commits,
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = disk_dir("bench-group-commit");
    let fs_type = file_system_of(dir.path()).unwrap_or_else(|| "unknown".to_owned());
    println!(
        "group commit vs one commit per item; {ITEM_BYTES}-byte items, fdatasync per commit, \
         {ROUNDS} rounds of {} s per cell, log in {} ({fs_type})",
        WINDOW.as_secs_f64(),
        dir.path().display()
    );
    if matches!(fs_type.as_str(), "tmpfs" | "ramfs") {
        println!("WARNING: the log is in memory, so fsync is free and the numbers mean little");
    }
    // Warm up the disk path and the runtime; not reported.
    runtime.block_on(run_cell(dir.path(), 4, 1024, WARM_UP));
    println!();
    println!(
        "| submitters | group items/s | group p50 ms | group p99 ms | items/commit \
         | single items/s | single p50 ms | single p99 ms | group/single |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    runtime.block_on(async {
        for submitters in SUBMITTERS {
            let (mut group, mut single) = (Cell::default(), Cell::default());
            for round in 0..ROUNDS {
                if round % 2 == 0 {
                    group.add(run_cell(dir.path(), submitters, 1024, WINDOW).await);
                    single.add(run_cell(dir.path(), submitters, 1, WINDOW).await);
                } else {
                    single.add(run_cell(dir.path(), submitters, 1, WINDOW).await);
                    group.add(run_cell(dir.path(), submitters, 1024, WINDOW).await);
                }
            }
            println!(
                "| {submitters} | {:.0} | {} | {} | {:.1} | {:.0} | {} | {} | {:.1}x |",
                group.items_per_second(),
                group.ms(0.50),
                group.ms(0.99),
                group.items_per_commit(),
                single.items_per_second(),
                single.ms(0.50),
                single.ms(0.99),
                group.items_per_second() / single.items_per_second(),
            );
        }
    });
}
