//! The power-cut loop: depot's data directory on a [`forgetfs`] mount, a verifying load, then at
//! a random moment the power is cut (every change not fsynced is undone) and depot is SIGKILLed
//! at the same instant; the file system is mounted again, depot started again, and every
//! acknowledged record checked — present exactly once, in order, intact.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::{Client, ForwardSummary, Ledger, LoadOptions, Postgres, Rng, Summary};

/// How to run the loop.
#[derive(Debug, Clone)]
pub struct PowercutOptions {
    /// The depot binary.
    pub depot: PathBuf,
    /// Cuts to make.
    pub rounds: u64,
    /// Fixes every choice of the run.
    pub seed: u64,
    /// Where the backing directories, mount points and depot's logs go (must not be on a
    /// forgetfs mount itself).
    pub work_dir: PathBuf,
    /// `DEPOT_DURABILITY` (`full` or `off`).
    pub durability: String,
    /// `DEPOT_FORWARD_TO`, if set: then after each restart, once forwarding has caught up,
    /// PostgreSQL's `depot_records` is checked too (a plain-TCP connection to this URL).
    pub forward_to: Option<String>,
    /// Tear the newest unsynced write at a 4 KiB boundary at each cut.
    pub tear: bool,
    /// Concurrent clients.
    pub clients: usize,
    /// Cuts per data directory before a fresh one (keeps each round's check bounded).
    pub rounds_per_dir: u64,
    /// The longest load before a cut.
    pub max_load: Duration,
}

impl PowercutOptions {
    /// Defaults for `depot` at `work_dir`: 4 clients, 25 cuts per data directory, up to 600 ms of
    /// load before each cut.
    pub fn new(depot: PathBuf, work_dir: PathBuf, rounds: u64, seed: u64) -> PowercutOptions {
        PowercutOptions {
            depot,
            rounds,
            seed,
            work_dir,
            durability: "full".into(),
            forward_to: None,
            tear: false,
            clients: 4,
            rounds_per_dir: 25,
            max_load: Duration::from_millis(600),
        }
    }
}

/// What the loop found.
#[derive(Debug, Clone, Default)]
pub struct PowercutReport {
    /// Cuts made.
    pub cuts: u64,
    /// The last check of each data directory, summed (a record is counted once).
    pub summary: Summary,
    /// Starts after a cut that failed (depot refused its data directory); each loses every
    /// record of that directory, counted in `summary.lost`.
    pub failed_starts: Vec<String>,
    /// The first problems the checks described.
    pub problems: Vec<String>,
    /// Unsynced writes undone, directory entry changes undone, over every cut.
    pub writes_undone: u64,
    /// Directory entry changes undone, over every cut.
    pub entries_undone: u64,
    /// Cuts made while depot drained after a SIGTERM (or just after it exited).
    pub during_stop: u64,
    /// Extra cuts made while depot started up after a cut.
    pub during_start: u64,
    /// With forwarding: the last check of PostgreSQL for each data directory, summed.
    pub forward: Option<ForwardSummary>,
    /// With forwarding: checks after which forwarding had not caught up in time.
    pub forward_stalls: u64,
}

impl PowercutReport {
    /// The closing line: `powercut: N cuts, A acked, L lost, D duplicated`.
    pub fn line(&self) -> String {
        format!(
            "powercut: {} cuts, {} acked, {} lost, {} duplicated",
            self.cuts, self.summary.acked, self.summary.lost, self.summary.duplicated
        )
    }

    /// The running totals after `cuts`, with `current` the latest check of the data directory in
    /// use: a run stopped early still yields its figures from the last progress line.
    fn so_far(&self, current: &Summary, current_forward: &ForwardSummary) -> String {
        let mut summary = self.summary;
        summary.add(current);
        let mut line = format!(
            "{} cuts, {} acked, {} lost, {} duplicated, {} failed starts",
            self.cuts,
            summary.acked,
            summary.lost,
            summary.duplicated,
            self.failed_starts.len()
        );
        if let Some(mut forward) = self.forward {
            forward.add(current_forward);
            line.push_str(&format!(
                "; forwarded: {} acked, {} lost, {} duplicated, {} diverged, {} stalls",
                forward.acked,
                forward.lost,
                forward.duplicated,
                forward.diverged,
                self.forward_stalls
            ));
        }
        line
    }

    /// With forwarding, the line about PostgreSQL: `powercut forwarding: A acked, L lost, D
    /// duplicated, …`.
    pub fn forward_line(&self) -> Option<String> {
        let f = self.forward?;
        Some(format!(
            "powercut forwarding: {} acked, {} lost, {} duplicated, {} diverged, {} undelivered, \
             {} rejected, {} stalls",
            f.acked,
            f.lost,
            f.duplicated,
            f.diverged,
            f.undelivered,
            f.rejected,
            self.forward_stalls
        ))
    }

    /// Nothing lost, duplicated or otherwise wrong, depot always started, and (with forwarding)
    /// PostgreSQL holds what the local store holds.
    pub fn is_clean(&self) -> bool {
        self.summary.is_clean()
            && self.failed_starts.is_empty()
            && self.forward.is_none_or(|f| f.is_clean())
            && self.forward_stalls == 0
    }
}

/// A running depot.
struct Depot {
    child: Child,
    client: Client,
}

impl Drop for Depot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_depot(options: &PowercutOptions, data: &Path, log: &Path) -> Result<Child, String> {
    let stderr = fs::File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let mut command = Command::new(&options.depot);
    command
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--log-format", "json", "run"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    for (k, _) in std::env::vars() {
        if k.starts_with("DEPOT_") || k == "NOTIFY_SOCKET" {
            command.env_remove(k);
        }
    }
    command.env("DEPOT_DURABILITY", &options.durability);
    if let Some(url) = &options.forward_to {
        command.env("DEPOT_FORWARD_TO", url);
    }
    command
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", options.depot.display()))
}

/// Starts depot on `data` and waits until it answers `/readyz`.
async fn start(options: &PowercutOptions, data: &Path, log: PathBuf) -> Result<Depot, String> {
    let mut child = spawn_depot(options, data, &log)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tail = |log: &Path| {
            let text = fs::read_to_string(log).unwrap_or_default();
            let start = text.len().saturating_sub(2000);
            text.get(start..).unwrap_or_default().to_owned()
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("depot exited at start ({status}): {}", tail(&log)));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("depot not ready within 30 s: {}", tail(&log)));
        }
        if let Some(addr) = running_addr(data, child.id()) {
            let client = Client::new(&format!("http://{addr}"), None, Duration::from_secs(20))?;
            if client.is_ready().await {
                return Ok(Depot { child, client });
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn running_addr(data: &Path, pid: u32) -> Option<String> {
    let text = fs::read(data.join("depot.running.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    if v["pid"].as_u64() != Some(u64::from(pid)) {
        return None;
    }
    Some(v["listen"].as_str()?.replace("0.0.0.0", "127.0.0.1"))
}

fn mount(backing: &Path, mnt: &Path, tear: bool) -> Result<forgetfs::Mount, String> {
    forgetfs::Mount::new(backing, mnt, &forgetfs::Options::default().tear(tear))
        .map_err(|e| error_chain(&e))
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// One check of PostgreSQL.
struct ForwardCheck {
    summary: ForwardSummary,
    /// Forwarding had not caught up in time (the rows were checked all the same).
    stalled: bool,
}

/// Waits for forwarding to catch up (up to a minute), then holds PostgreSQL's rows of this
/// depot's origin against the ledger and the local store.
async fn check_postgres(
    pg: &Postgres,
    client: &Client,
    ledger: &Ledger,
    local: &std::collections::BTreeMap<String, Vec<crate::StoredRecord>>,
    problems: &mut Vec<String>,
) -> Result<ForwardCheck, String> {
    let (origin, stalled) = match crate::wait_caught_up(client, Duration::from_secs(60)).await {
        Ok(origin) => (origin, false),
        Err(e) => {
            problems.push(e);
            let status = client.status().await?;
            let origin = status["forward"]["origin"]
                .as_str()
                .ok_or_else(|| format!("depot's status names no forwarding origin: {status}"))?
                .to_owned();
            (origin, true)
        }
    };
    let streams: Vec<String> = ledger.streams().into_iter().collect();
    let (rows, rejected) = pg.rows(&origin, &streams).await?;
    let summary = crate::check_forwarded(ledger, local, &rows, rejected, problems);
    Ok(ForwardCheck { summary, stalled })
}

/// Least free space in the work directory to begin a data directory with.
const MIN_FREE_BYTES: u64 = 512 << 20;

/// Refuses to go on when the work directory's file system is nearly full: a depot that cannot
/// start for want of space (ENOSPC) is not a power-cut loss, and must not be counted as one.
fn check_free_space(dir: &Path) -> Result<(), String> {
    let stat =
        nix::sys::statvfs::statvfs(dir).map_err(|e| format!("statvfs {}: {e}", dir.display()))?;
    let free = stat.blocks_available().saturating_mul(stat.fragment_size());
    if free < MIN_FREE_BYTES {
        return Err(format!(
            "only {} MiB free under {}; the loop needs {} MiB to go on (free some space, or pass \
             --work-dir on a roomier file system)",
            free >> 20,
            dir.display(),
            MIN_FREE_BYTES >> 20
        ));
    }
    Ok(())
}

/// Runs the loop; `progress` gets one line per cut.
pub async fn powercut(
    options: &PowercutOptions,
    mut progress: impl FnMut(&str),
) -> Result<PowercutReport, String> {
    let mut rng = Rng::new(options.seed);
    let mut report = PowercutReport::default();
    let mut dir_index = 0;
    fs::create_dir_all(&options.work_dir)
        .map_err(|e| format!("create {}: {e}", options.work_dir.display()))?;
    let postgres = match &options.forward_to {
        Some(url) => {
            report.forward = Some(ForwardSummary::default());
            Some(Postgres::connect(url).await?)
        }
        None => None,
    };
    while report.cuts < options.rounds {
        check_free_space(&options.work_dir)?;
        let backing = options.work_dir.join(format!("backing-{dir_index}"));
        let mnt = options.work_dir.join(format!("mnt-{dir_index}"));
        let logs = options.work_dir.join(format!("logs-{dir_index}"));
        dir_index += 1;
        for d in [&backing, &mnt, &logs] {
            fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))?;
        }
        let mut fs_mount = mount(&backing, &mnt, options.tear)?;
        let data = mnt.join("data");
        fs::create_dir(&data).map_err(|e| format!("create {}: {e}", data.display()))?;
        fs::File::open(&mnt)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("fsync {}: {e}", mnt.display()))?;
        let mut starts = 0u32;
        let mut log = || {
            starts += 1;
            logs.join(format!("depot-{starts}.log"))
        };
        let mut depot = start(options, &data, log()).await?;
        let mut ledger = Ledger::default();
        let mut last = Summary::default();
        let mut last_forward = ForwardSummary::default();
        let mut failed = false;
        for _ in 0..options.rounds_per_dir.min(options.rounds - report.cuts) {
            report.cuts += 1;
            let round = report.cuts;
            let stop = CancellationToken::new();
            let load = tokio::spawn({
                let (client, stop) = (depot.client.clone(), stop.clone());
                let load_options = LoadOptions {
                    clients: options.clients,
                    streams: 3,
                    stream_prefix: "cut-".into(),
                    max_batch: 16,
                    max_pad: 24,
                    duration: None,
                    seed: options.seed,
                    run: round,
                    retries: 1000,
                    retry_pause: Duration::from_millis(10),
                    ..LoadOptions::default()
                };
                async move { crate::run_load(&client, &load_options, &stop).await }
            });
            let max = options.max_load.as_millis().max(21) as u64;
            tokio::time::sleep(Duration::from_millis(rng.range(20, max))).await;
            // Now and then the power goes while depot drains after a SIGTERM (its checkpoint, the
            // clean-shutdown marker) or just after it exited cleanly.
            if rng.chance(15) {
                report.during_stop += 1;
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(depot.child.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
                tokio::time::sleep(Duration::from_millis(rng.range(0, 150))).await;
            }
            // The power goes and the process dies together: cut first (from here on every
            // request of the file system fails), then SIGKILL, so no write lands in between.
            let cut = fs_mount.cut();
            let _ = depot.child.kill();
            let _ = depot.child.wait();
            stop.cancel();
            ledger.merge(load.await.map_err(|e| format!("load task: {e}"))?);
            if !cut.failures.is_empty() {
                return Err(format!("round {round}: the cut failed: {cut}"));
            }
            report.writes_undone += cut.writes_undone as u64;
            report.entries_undone += cut.entries_undone as u64;
            fs_mount
                .unmount()
                .map_err(|e| format!("round {round}: {}", error_chain(&e)))?;
            fs_mount = mount(&backing, &mnt, options.tear)?;
            // Now and then the power goes again while depot recovers and starts up (the WAL
            // preallocation after an unclean stop, the marker's removal).
            if rng.chance(15) {
                report.during_start += 1;
                let mut child = spawn_depot(options, &data, &log())?;
                tokio::time::sleep(Duration::from_millis(rng.range(0, 120))).await;
                let cut = fs_mount.cut();
                let _ = child.kill();
                let _ = child.wait();
                if !cut.failures.is_empty() {
                    return Err(format!(
                        "round {round}: the cut during start-up failed: {cut}"
                    ));
                }
                fs_mount
                    .unmount()
                    .map_err(|e| format!("round {round}: {}", error_chain(&e)))?;
                fs_mount = mount(&backing, &mnt, options.tear)?;
            }
            depot = match start(options, &data, log()).await {
                Ok(depot) => depot,
                Err(e) => {
                    // Everything acknowledged in this directory is out of reach.
                    let acked = ledger.acked_records();
                    progress(&format!(
                        "round {round}: depot did not start after the cut: {e}"
                    ));
                    report.failed_starts.push(format!("round {round}: {e}"));
                    last = Summary {
                        acked,
                        lost: acked,
                        ..Summary::default()
                    };
                    failed = true;
                    break;
                }
            };
            crate::retry_unknown(&depot.client, &mut ledger, 60, &mut rng).await;
            let local = crate::read_streams(&depot.client, &ledger).await?;
            let mut check = crate::check(&ledger, &local);
            let mut forwarded = String::new();
            if let Some(pg) = &postgres {
                let f =
                    check_postgres(pg, &depot.client, &ledger, &local, &mut check.problems).await?;
                report.forward_stalls += u64::from(f.stalled);
                last_forward = f.summary;
                forwarded = format!("; in PostgreSQL: {}", f.summary);
            }
            progress(&format!(
                "round {round}: cut undid {cut}; after restart: {}{forwarded}; so far: {}",
                check.summary,
                report.so_far(&check.summary, &last_forward)
            ));
            for p in check.problems {
                if report.problems.len() < 20 {
                    report.problems.push(format!("round {round}: {p}"));
                }
            }
            last = check.summary;
        }
        report.summary.add(&last);
        if let Some(f) = &mut report.forward {
            f.add(&last_forward);
        }
        if !failed {
            // A clean stop, so the data directory's mount can go.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(depot.child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(depot.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        drop(depot);
        let _ = fs_mount.unmount();
        // The directory's files are no longer needed; keep the logs.
        let _ = fs::remove_dir_all(&backing);
        let _ = fs::remove_dir(&mnt);
    }
    Ok(report)
}
