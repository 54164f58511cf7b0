//! The table and the goal ratios.

use std::fmt::{self, Write as _};
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::Extras;
use crate::baselines::SyncRates;
use crate::servers::DepotConfig;

/// One measurement of one row.
#[derive(Debug, Clone)]
pub struct Sample {
    pub records_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Peak RSS of the server (VmHWM), bytes; 0 for in-process rows.
    pub peak_rss: u64,
    /// Server CPU time (all threads, user + system) per request in the window, µs.
    pub server_cpu_us: Option<f64>,
    /// The load client's CPU time per request, µs.
    pub client_cpu_us: Option<f64>,
}

impl Sample {
    pub fn from_latency(
        records_per_sec: f64,
        latency: &Histogram<u64>,
        errors: u64,
        first_error: Option<String>,
        peak_rss: u64,
    ) -> Sample {
        let q = |q: f64| Duration::from_micros(latency.value_at_quantile(q));
        Sample {
            records_per_sec,
            p50: q(0.5),
            p99: q(0.99),
            p999: q(0.999),
            errors,
            first_error,
            peak_rss,
            server_cpu_us: None,
            client_cpu_us: None,
        }
    }

    /// With the CPU time per request that `out` measured.
    pub fn with_cpu(mut self, out: &crate::load::Outcome) -> Sample {
        self.server_cpu_us = out.server_us_per_request();
        self.client_cpu_us = out.client_us_per_request();
        self
    }
}

/// One row of the table: a configuration at one concurrency, measured `samples.len()` times.
#[derive(Debug, Clone)]
pub struct Row {
    pub label: String,
    pub clients: usize,
    pub records_per_request: usize,
    pub streams: usize,
    pub samples: Vec<Sample>,
}

impl Row {
    fn median_by(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        self.median_of_some(|s| Some(f(s))).unwrap_or(f64::NAN)
    }
    /// The median of a figure only some samples have; `None` if none has it.
    fn median_of_some(&self, f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
        let mut v: Vec<f64> = self.samples.iter().filter_map(f).collect();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => None,
            n if n % 2 == 1 => Some(v[n / 2]),
            n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
        }
    }
    /// Server CPU per request, µs (median).
    pub fn server_cpu_us(&self) -> Option<f64> {
        self.median_of_some(|s| s.server_cpu_us)
    }
    /// Load-client CPU per request, µs (median).
    pub fn client_cpu_us(&self) -> Option<f64> {
        self.median_of_some(|s| s.client_cpu_us)
    }
    pub fn rps(&self) -> f64 {
        self.median_by(|s| s.records_per_sec)
    }
    fn spread(&self) -> (f64, f64) {
        let v = self.samples.iter().map(|s| s.records_per_sec);
        (
            v.clone().fold(f64::INFINITY, f64::min),
            v.fold(0.0, f64::max),
        )
    }
    pub fn p50(&self) -> Duration {
        Duration::from_secs_f64(self.median_by(|s| s.p50.as_secs_f64()))
    }
    pub fn p99(&self) -> Duration {
        Duration::from_secs_f64(self.median_by(|s| s.p99.as_secs_f64()))
    }
    fn p99_spread(&self) -> (Duration, Duration) {
        let v = self.samples.iter().map(|s| s.p99);
        (
            v.clone().min().unwrap_or_default(),
            v.max().unwrap_or_default(),
        )
    }
    pub fn p999(&self) -> Duration {
        Duration::from_secs_f64(self.median_by(|s| s.p999.as_secs_f64()))
    }
    pub fn peak_rss(&self) -> u64 {
        self.samples.iter().map(|s| s.peak_rss).max().unwrap_or(0)
    }
    fn errors(&self) -> u64 {
        self.samples.iter().map(|s| s.errors).sum()
    }
}

/// The machine, as far as the run can tell.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub fs: String,
    pub load_at_start: String,
    pub sqlite: String,
    pub redis: String,
}

impl Machine {
    pub fn probe(_root: &Path, fs: &str) -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: read("/proc/cpuinfo")
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
                .unwrap_or_default(),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            fs: fs.to_owned(),
            load_at_start: load_average(),
            sqlite: rusqlite::version().to_owned(),
            redis: std::process::Command::new("redis-server")
                .arg("--version")
                .output()
                .ok()
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .and_then(|s| {
                    s.split_whitespace()
                        .nth(2)
                        .map(|v| v.trim_start_matches("v=").to_owned())
                })
                .unwrap_or_else(|| "not installed".into()),
        }
    }
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} CPUs ({}), Linux {}, data on {}, SQLite {}, Redis {}, load average at start {}",
            self.cpus,
            self.cpu_model,
            self.kernel,
            self.fs,
            self.sqlite,
            self.redis,
            self.load_at_start
        )
    }
}

/// Everything one run measured.
#[derive(Debug)]
pub struct Summary {
    pub machine: Machine,
    pub sync: SyncRates,
    pub rows: Vec<Row>,
    pub extras: Option<Extras>,
    pub mode: &'static str,
    pub repeat: usize,
    pub measure: Duration,
    pub elapsed: Duration,
    pub sweep: Vec<usize>,
    pub value_bytes: usize,
    /// Streams of the single-record rows (`--streams`).
    pub streams: usize,
}

fn us(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn rate(r: f64) -> String {
    if r >= 10_000.0 {
        format!("{:.1}k", r / 1000.0)
    } else {
        format!("{r:.0}")
    }
}

fn mib(bytes: u64) -> String {
    if bytes == 0 {
        "—".into()
    } else {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    }
}

impl Summary {
    pub fn row(&self, label: &str, clients: usize, records: usize) -> Option<&Row> {
        self.rows.iter().find(|r| {
            r.label.starts_with(label) && r.clients == clients && r.records_per_request == records
        })
    }

    pub fn depot(&self, config: DepotConfig, clients: usize, records: usize) -> Option<&Row> {
        let label = match config {
            DepotConfig::DURABLE => "depot durable,",
            DepotConfig::OFF => "depot durability=off,",
            _ => "depot commit_max_batch=1,",
        };
        self.rows.iter().find(|r| {
            r.label.starts_with(label)
                && r.clients == clients
                && r.records_per_request == records
                && (r.streams == self.streams || records > 1)
        })
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(w);
        let _ = writeln!(
            w,
            "depot-bench ({} mode): {} repeat(s) of {:.1} s per point, {}-byte records, closed loop \
             (one request in flight per connection), loopback; took {:.0} s",
            self.mode,
            self.repeat,
            self.measure.as_secs_f64(),
            self.value_bytes,
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            w,
            "machine: {}; load average at end {}",
            self.machine,
            load_average()
        );
        let _ = writeln!(
            w,
            "disk: fdatasync over one block {:.0}/s (p50 {}), fsync {:.0}/s, fdatasync while appending {:.0}/s (p50 {})",
            self.sync.overwrite_fdatasync.per_sec,
            us(self.sync.overwrite_fdatasync.p50),
            self.sync.overwrite_fsync.per_sec,
            self.sync.append_fdatasync.per_sec,
            us(self.sync.append_fdatasync.p50),
        );
        let _ = writeln!(w);
        let spread_head = if self.repeat > 1 {
            "records/s median (min–max)"
        } else {
            "records/s"
        };
        let _ = writeln!(
            w,
            "| configuration | clients | {spread_head} | p50 | p99 (min–max) | p99.9 | peak RSS | CPU/request server + client |"
        );
        let _ = writeln!(w, "|---|--:|--:|--:|--:|--:|--:|--:|");
        for row in &self.rows {
            let (lo, hi) = row.spread();
            let (p99lo, p99hi) = row.p99_spread();
            let rps = if self.repeat > 1 {
                format!("{} ({}–{})", rate(row.rps()), rate(lo), rate(hi))
            } else {
                rate(row.rps())
            };
            let p99 = if self.repeat > 1 {
                format!("{} ({}–{})", us(row.p99()), us(p99lo), us(p99hi))
            } else {
                us(row.p99())
            };
            let errors = match row.errors() {
                0 => String::new(),
                n => format!(
                    " **{n} errors: {}**",
                    row.samples
                        .iter()
                        .find_map(|s| s.first_error.clone())
                        .unwrap_or_default()
                ),
            };
            let _ = writeln!(
                w,
                "| {}{errors} | {} | {rps} | {} | {p99} | {} | {} | {} |",
                row.label,
                row.clients,
                us(row.p50()),
                us(row.p999()),
                mib(row.peak_rss()),
                cpu_per_request(row.server_cpu_us(), row.client_cpu_us()),
            );
        }
        let _ = writeln!(w);
        let _ = writeln!(w, "| goal | measured | target | met |");
        let _ = writeln!(w, "|---|--:|--:|:-:|");
        for goal in self.goals() {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} |",
                goal.name,
                goal.measured,
                goal.target,
                if goal.met { "yes" } else { "**no**" }
            );
        }
        out
    }

    pub fn goals(&self) -> Vec<Goal> {
        let mut goals = Vec::new();
        let durable64 = self.depot(DepotConfig::DURABLE, 64, 1);
        let off64 = self.depot(DepotConfig::OFF, 64, 1);
        let redis64 = self.row("redis", 64, 1);
        let durable1 = self.depot(DepotConfig::DURABLE, 1, 1);
        let off1 = self.depot(DepotConfig::OFF, 1, 1);
        let redis1 = self.row("redis", 1, 1);
        let one64 = self.depot(DepotConfig::ONE_PER_COMMIT, 64, 1);
        let batch = self.depot(DepotConfig::DURABLE, 16, 100);
        let sqlite = self.row("rusqlite", 1, 100);
        let mut ratio = |name: &str, a: Option<&Row>, b: Option<&Row>, target: f64| {
            if let (Some(a), Some(b)) = (a, b) {
                let r = a.rps() / b.rps();
                goals.push(Goal {
                    name: name.to_owned(),
                    measured: format!("{r:.2}× ({} / {})", rate(a.rps()), rate(b.rps())),
                    target: format!("≥ {target}×"),
                    met: r >= target,
                });
            }
        };
        ratio(
            "64 clients: durable / durability=off",
            durable64,
            off64,
            0.65,
        );
        ratio(
            "64 clients: durable / Redis always",
            durable64,
            redis64,
            1.0,
        );
        ratio("1 client: durable / Redis always", durable1, redis1, 1.0);
        ratio(
            "16 clients × 100-record batches: depot / rusqlite loop",
            batch,
            sqlite,
            1.0,
        );
        ratio(
            "64 clients: group commit / commit_max_batch=1",
            durable64,
            one64,
            8.0,
        );
        if let Some(d) = durable64 {
            goals.push(Goal {
                name: "64 clients: durable p99".into(),
                measured: us(d.p99()),
                target: "≤ 2 ms".into(),
                met: d.p99() <= Duration::from_millis(2),
            });
        }
        if let (Some(d), Some(o)) = (durable1, off1) {
            // HTTP round trip: the same request with durability off (it includes SQLite's
            // non-synced commit, so this bound is if anything generous to depot).
            let bound = o.p50() + self.sync.overwrite_fdatasync.p50;
            goals.push(Goal {
                name: "1 client: durable p50 vs round trip (off p50) + one fdatasync (p50)".into(),
                measured: us(d.p50()),
                target: format!(
                    "≤ {} + {} = {}",
                    us(o.p50()),
                    us(self.sync.overwrite_fdatasync.p50),
                    us(bound)
                ),
                met: d.p50() <= bound,
            });
        }
        if let Some(x) = &self.extras {
            let s = &x.soak;
            goals.push(Goal {
                name: format!(
                    "peak RSS, 64 durable clients for {} s ({} records/s)",
                    s.seconds,
                    rate(s.records_per_sec)
                ),
                measured: format!(
                    "{} (max RSS first half {}, second half {})",
                    mib(s.peak_rss),
                    mib(s.first_half_max),
                    mib(s.second_half_max)
                ),
                target: "≤ 64 MiB, second half ≤ first + 4 MiB".into(),
                met: s.peak_rss <= 64 << 20 && s.bounded(),
            });
            let one_commit = durable64.map(|d| d.p50()).unwrap_or_default();
            let budget = Duration::from_millis(100) + one_commit;
            let worst = x
                .stops
                .iter()
                .map(|s| s.exit_after)
                .max()
                .unwrap_or_default();
            goals.push(Goal {
                name: format!(
                    "SIGTERM with 64 clients in flight → exited ({} runs, worst)",
                    x.stops.len()
                ),
                measured: format!(
                    "{:.1} ms (runs: {})",
                    worst.as_secs_f64() * 1e3,
                    x.stops
                        .iter()
                        .map(|s| format!("{:.1}", s.exit_after.as_secs_f64() * 1e3))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                target: format!("≤ 100 ms + one commit (64-client p50 {})", us(one_commit)),
                met: worst <= budget,
            });
            let r = &x.restart;
            goals.push(Goal {
                name: format!(
                    "restart after SIGKILL, {} records ({:.0} MiB db + {:.1} MiB WAL) → /readyz 200",
                    r.records,
                    r.db_bytes as f64 / (1 << 20) as f64,
                    r.wal_bytes as f64 / (1 << 20) as f64
                ),
                measured: format!(
                    "{:.0} ms (store open {} ms)",
                    r.ready_after.as_secs_f64() * 1e3,
                    r.open_ms.map_or("?".into(), |m| m.to_string())
                ),
                target: "≤ 1 s".into(),
                met: r.ready_after <= Duration::from_secs(1) && r.records >= 1_000_000,
            });
        }
        goals
    }
}

#[derive(Debug)]
pub struct Goal {
    pub name: String,
    pub measured: String,
    pub target: String,
    pub met: bool,
}

/// "41 + 14 µs": the server's and the load client's CPU time per request. Over a 1.5 s point the
/// clock-tick counters resolve about 1 % of a core, so the figures are good to a µs or two.
fn cpu_per_request(server: Option<f64>, client: Option<f64>) -> String {
    match (server, client) {
        (Some(s), Some(c)) => format!("{s:.0} + {c:.0} µs"),
        (None, Some(c)) => format!("— + {c:.0} µs"),
        _ => "—".to_owned(),
    }
}
