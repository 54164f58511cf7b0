//! `depot-torture`: load a running depot with records of known content, then read every stream
//! back and check that nothing acknowledged was lost, duplicated or changed.
//!
//! ```text
//! depot-torture --target http://127.0.0.1:8080 --clients 8 --duration 30s --seed 7
//! depot-torture --target http://127.0.0.1:8080 --records 100000 --ledger run.json
//! # … kill -9 depot, start it again …
//! depot-torture verify --target http://127.0.0.1:8080 --ledger run.json
//! ```
//!
//! Prints one summary line; exits 0 when the check is clean, 1 when it is not, 2 when it could not
//! run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use torture::{Client, Ledger, LoadOptions, Report};

/// Load a depot with verifiable records and check every acknowledged one survived.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// The depot to load.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    target: String,
    /// A file holding the bearer token, if depot requires one (`auth_token_file`).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// Write the ledger (every request and its fate) to this file, or read it (`verify`).
    #[arg(long, global = true)]
    ledger: Option<PathBuf>,
    /// Concurrent clients.
    #[arg(long, global = true, default_value_t = 4)]
    clients: usize,
    /// How long to load (`500ms`, `30s`, `5m`). Without it and without --records: 10s.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Stop once this many records are acknowledged.
    #[arg(long)]
    records: Option<u64>,
    /// Fixes every choice of the run (default: from the clock; printed).
    #[arg(long, global = true)]
    seed: Option<u64>,
    /// Streams to spread the records over.
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// Most records per array request.
    #[arg(long, default_value_t = 20)]
    max_batch: usize,
    /// Prefix of the stream names (default: `torture-<seed>-`).
    #[arg(long)]
    stream_prefix: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Only check: read the streams of a saved ledger back (after a crash and restart, say).
    Verify,
    /// Power-cut loop: run depot on a forgetfs mount under load, cut the power and SIGKILL it at
    /// random moments, restart it and check every acknowledged record. Needs root and /dev/fuse.
    Powercut {
        /// Cuts to make.
        #[arg(long, default_value_t = 10)]
        rounds: u64,
        /// The depot binary [default: `depot` beside this program].
        #[arg(long)]
        depot: Option<PathBuf>,
        /// depot's `durability`: `full`, or `off` (which must show loss).
        #[arg(long, default_value = "full")]
        durability: String,
        /// Forward to this PostgreSQL (depot's `forward_to`), so the outbox goes through the cuts.
        #[arg(long)]
        forward_to: Option<String>,
        /// Tear the newest unsynced write at a 4 KiB boundary at each cut.
        #[arg(long)]
        tear: bool,
        /// Where the backing directories, mounts and depot logs go [default: a new temp dir].
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("depot-torture: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("depot-torture: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> Result<bool, String> {
    let token = match &cli.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    if let Some(Command::Powercut {
        rounds,
        depot,
        durability,
        forward_to,
        tear,
        work_dir,
    }) = cli.command
    {
        return run_powercut(
            cli.seed,
            cli.clients,
            rounds,
            depot,
            durability,
            forward_to,
            tear,
            work_dir,
        )
        .await;
    }
    let client = Client::new(&cli.target, token.as_deref(), Duration::from_secs(30))?;
    let ledger = match cli.command {
        Some(Command::Powercut { .. }) => unreachable!("handled above"),
        Some(Command::Verify) => {
            let path = cli
                .ledger
                .as_ref()
                .ok_or("verify needs --ledger FILE (written by an earlier load)")?;
            let text = std::fs::read(path)
                .map_err(|e| format!("cannot read the ledger {}: {e}", path.display()))?;
            serde_json::from_slice::<Ledger>(&text)
                .map_err(|e| format!("{} is not a torture ledger: {e}", path.display()))?
        }
        None => {
            let seed = cli.seed.unwrap_or_else(torture::seed_from_clock);
            eprintln!("depot-torture: seed {seed} (pass --seed {seed} to repeat this run)");
            let options = LoadOptions {
                clients: cli.clients.max(1),
                streams: cli.streams.max(1),
                stream_prefix: cli
                    .stream_prefix
                    .clone()
                    .unwrap_or_else(|| format!("torture-{seed}-")),
                max_batch: cli.max_batch.max(1),
                duration: match (cli.duration, cli.records) {
                    (None, None) => Some(Duration::from_secs(10)),
                    (d, _) => d,
                },
                records: cli.records,
                seed,
                ..LoadOptions::default()
            };
            let stop = CancellationToken::new();
            let ctrl_c = stop.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("depot-torture: stopping the load; checking what was written");
                    ctrl_c.cancel();
                }
            });
            let started = std::time::Instant::now();
            let ledger = torture::run_load(&client, &options, &stop).await;
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "depot-torture: {} requests, {} records acknowledged in {secs:.1} s ({:.0}/s); answers: {:?}",
                ledger.requests.len(),
                ledger.acked_records(),
                ledger.acked_records() as f64 / secs.max(0.001),
                ledger.answers
            );
            if let Some(path) = &cli.ledger {
                let text = serde_json::to_vec(&ledger).map_err(|e| e.to_string())?;
                std::fs::write(path, text)
                    .map_err(|e| format!("cannot write the ledger {}: {e}", path.display()))?;
            }
            ledger
        }
    };
    let Report { summary, problems } = torture::verify(&client, &ledger).await?;
    for p in &problems {
        eprintln!("depot-torture: PROBLEM {p}");
    }
    println!(
        "{} {summary}",
        if summary.is_clean() { "OK" } else { "FAILED" }
    );
    Ok(summary.is_clean())
}

/// `250ms`, `30s`, `5m`, `1h`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |at| text.split_at(at));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 30s, 5m"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}; use ms, s, m or h"
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{text:?}: {e}"))
}

/// `depot-torture powercut`: see [`torture::powercut`].
#[cfg(target_os = "linux")]
#[allow(clippy::too_many_arguments)]
async fn run_powercut(
    seed: Option<u64>,
    clients: usize,
    rounds: u64,
    depot: Option<PathBuf>,
    durability: String,
    forward_to: Option<String>,
    tear: bool,
    work_dir: Option<PathBuf>,
) -> Result<bool, String> {
    let depot = match depot {
        Some(path) => path,
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("depot"),
    };
    if !depot.exists() {
        return Err(format!(
            "no depot binary at {}; build it (cargo build -p depot) or pass --depot PATH",
            depot.display()
        ));
    }
    if durability != "full" && durability != "off" {
        return Err(format!(
            "--durability must be full or off, not {durability:?}"
        ));
    }
    let seed = seed.unwrap_or_else(torture::seed_from_clock);
    eprintln!("depot-torture powercut: seed {seed} (pass --seed {seed} to repeat this run)");
    let work = match work_dir {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("powercut-{}", std::process::id())),
    };
    let mut options = torture::PowercutOptions::new(depot, work.clone(), rounds, seed);
    options.durability = durability;
    options.forward_to = forward_to;
    options.tear = tear;
    options.clients = clients.max(1);
    let started = std::time::Instant::now();
    let report = torture::powercut(&options, |line| eprintln!("depot-torture: {line}")).await?;
    for p in report.problems.iter().chain(&report.failed_starts) {
        eprintln!("depot-torture: PROBLEM {p}");
    }
    eprintln!(
        "depot-torture: {} in {:.0} s ({} during a drain, plus {} during start-up); {} unsynced \
             writes and {} directory entry changes undone; last checks: {}; depot logs in {}",
        report.line(),
        started.elapsed().as_secs_f64(),
        report.during_stop,
        report.during_start,
        report.writes_undone,
        report.entries_undone,
        report.summary,
        work.display()
    );
    println!("{}", report.line());
    if let Some(line) = report.forward_line() {
        println!("{line}");
    }
    Ok(report.is_clean())
}

#[cfg(not(target_os = "linux"))]
#[allow(clippy::too_many_arguments)]
async fn run_powercut(
    _seed: Option<u64>,
    _clients: usize,
    _rounds: u64,
    _depot: Option<PathBuf>,
    _durability: String,
    _forward_to: Option<String>,
    _tear: bool,
    _work_dir: Option<PathBuf>,
) -> Result<bool, String> {
    Err("powercut runs on Linux only (it mounts a FUSE file system)".into())
}
