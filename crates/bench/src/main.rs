//! `depot-bench`: depot's durable write path measured against its own non-durable mode, one commit
//! per record, Redis with `appendfsync always`, and an in-process SQLite loop — in one run, on
//! loopback, on the real disk. Prints one table and the goal ratios, writes an SVG chart.
//!
//! ```text
//! cargo run --release -p depot-bench -- --quick      # about a minute
//! cargo run --release -p depot-bench                 # full: about 8 minutes, 3 repeats
//! ```

// A binary: `pub` only says "used by another module here".
#![allow(unreachable_pub)]

mod baselines;
mod floor;
mod load;
mod report;
mod servers;
mod svg;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::load::{Outcome, Shape, Spec};
use crate::report::{Row, Sample};
use crate::servers::{DepotConfig, RssSampler, Server};

/// Benchmarks depot's durable writes (see BENCHMARKS.md).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// About one minute: fewer concurrency points, shorter points, one repeat, a 10 s RSS run.
    #[arg(long)]
    quick: bool,
    /// How many times to measure each point (the table shows the median and the spread).
    #[arg(long)]
    repeat: Option<usize>,
    /// Seconds measured per point (after a warm-up).
    #[arg(long)]
    seconds: Option<f64>,
    /// Where the servers keep their data; must be on a real disk, not tmpfs.
    /// Default: `<target dir>/bench-data`.
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// The depot binary [default: build it with cargo and use target/release/depot].
    #[arg(long)]
    depot_bin: Option<PathBuf>,
    /// Where to write the SVG chart.
    #[arg(long, default_value = "docs/bench.svg")]
    svg: PathBuf,
    /// Size of one record's JSON (and of Redis' value), bytes.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Records stored before the restart-after-SIGKILL test.
    #[arg(long, default_value_t = 1_000_000)]
    restart_records: u64,
    /// How many streams the single-record clients append to (client i uses stream i mod N). One
    /// stream is the common shape (many producers, one log); the table also has one row with a
    /// stream per client, where every commit touches a different index page per client.
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Skip Redis (its rows and ratios are left out).
    #[arg(long)]
    no_redis: bool,
    /// Only the throughput table (no RSS soak, stop or restart tests).
    #[arg(long)]
    table_only: bool,
    /// Profiling aid: only drive the depot already listening at this address with single-record
    /// POSTs from `--clients` connections for `--seconds`, print the result, and exit.
    #[arg(long)]
    drive: Option<std::net::SocketAddr>,
    /// Connections for `--drive`.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// With `--drive`: send this many requests in all (spread over the connections) instead of
    /// running for `--seconds` — for instruction counts under callgrind.
    #[arg(long)]
    requests: Option<u64>,
    /// With `--drive`: the server's pid, to print its CPU time per request too.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Internal: serve the HTTP floor (hyper answering a fixed 201) on this address; the
    /// benchmark starts itself this way for the floor's rows.
    #[arg(long, hide = true)]
    serve_http_floor: Option<std::net::SocketAddr>,
    /// Internal: with `--serve-http-floor`, hand each request to a thread and back.
    #[arg(long, hide = true)]
    hand_off: bool,
}

/// What a row measures.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Depot(DepotConfig),
    Redis,
    /// The HTTP floor (`floor.rs`); `true`: with the hand-off to a thread and back.
    HttpFloor(bool),
    SqliteLoop,
}

#[derive(Debug, Clone, Copy)]
struct Point {
    target: Target,
    clients: usize,
    records_per_request: usize,
    /// Streams the clients spread over.
    streams: usize,
}

fn main() {
    let args = Args::parse();
    if let Some(addr) = args.serve_http_floor {
        floor::serve(addr, args.hand_off);
    }
    let quick = args.quick;
    let repeat = args.repeat.unwrap_or(if quick { 1 } else { 3 }).max(1);
    let measure = Duration::from_secs_f64(args.seconds.unwrap_or(if quick { 1.5 } else { 4.0 }));
    let warmup = if quick {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(1)
    };
    let sweep: &[usize] = if quick {
        &[1, 16, 64]
    } else {
        &[1, 4, 16, 64, 256]
    };
    let rss_secs = if quick { 10 } else { 60 };
    if let Some(addr) = args.drive {
        let out = load::run(Spec {
            addr,
            clients: args.clients,
            warmup: if args.requests.is_some() {
                Duration::ZERO
            } else {
                Duration::from_millis(500)
            },
            measure: if args.requests.is_some() {
                Duration::from_secs(600)
            } else {
                measure
            },
            shape: depot_shape(&record_payload(args.value_bytes), 1, args.streams),
            tolerate_errors: false,
            max_requests: args
                .requests
                .map(|n| n.div_ceil(args.clients.max(1) as u64)),
            server_pid: args.server_pid,
        });
        let cpu = |v: Option<f64>| v.map_or("—".to_owned(), |us| format!("{us:.1} µs"));
        println!(
            "{} clients: {:.0} records/s, p50 {} µs, p99 {} µs, CPU/request server {} client {}, {} errors {:?}",
            args.clients,
            out.records_per_sec(),
            out.latency.value_at_quantile(0.5),
            out.latency.value_at_quantile(0.99),
            cpu(out.server_us_per_request()),
            cpu(out.client_us_per_request()),
            out.errors,
            out.first_error
        );
        return;
    }

    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let depot_bin = args
        .depot_bin
        .clone()
        .unwrap_or_else(|| locate_depot(&workspace));
    let root = args.data_root.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent()?.parent().map(|t| t.join("bench-data")))
            .unwrap_or_else(|| PathBuf::from("target/bench-data"))
    });
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("create the data root");
    let fs = check_real_disk(&root);
    let started = Instant::now();
    let machine = report::Machine::probe(&root, &fs);
    eprintln!("depot-bench: {machine}");
    eprintln!(
        "depot-bench: {} mode, {repeat} repeat(s), {:.1} s per point after {:.1} s warm-up, data in {}",
        if quick { "quick" } else { "full" },
        measure.as_secs_f64(),
        warmup.as_secs_f64(),
        root.display()
    );

    let payload = record_payload(args.value_bytes);
    let sync = baselines::sync_rates(&root.join("sync"), Duration::from_millis(700))
        .expect("measure fsync rates");
    eprintln!(
        "depot-bench: disk: fdatasync (overwrite) {:.0}/s p50 {} µs; fsync (overwrite) {:.0}/s; fdatasync (append, growing) {:.0}/s",
        sync.overwrite_fdatasync.per_sec,
        sync.overwrite_fdatasync.p50.as_micros(),
        sync.overwrite_fsync.per_sec,
        sync.append_fdatasync.per_sec
    );

    let mut points = Vec::new();
    for config in [DepotConfig::DURABLE, DepotConfig::OFF] {
        for &clients in sweep {
            points.push(Point {
                target: Target::Depot(config),
                clients,
                records_per_request: 1,
                streams: args.streams,
            });
        }
    }
    for hand_off in [false, true] {
        for clients in [1, 64] {
            points.push(Point {
                target: Target::HttpFloor(hand_off),
                clients,
                records_per_request: 1,
                streams: 1,
            });
        }
    }
    if !args.no_redis {
        for &clients in sweep {
            points.push(Point {
                target: Target::Redis,
                clients,
                records_per_request: 1,
                streams: args.streams,
            });
        }
    }
    points.push(Point {
        target: Target::Depot(DepotConfig::ONE_PER_COMMIT),
        clients: 64,
        records_per_request: 1,
        streams: args.streams,
    });
    points.push(Point {
        target: Target::Depot(DepotConfig::DURABLE),
        clients: 64,
        records_per_request: 1,
        streams: 64,
    });
    for config in [DepotConfig::DURABLE, DepotConfig::OFF] {
        points.push(Point {
            target: Target::Depot(config),
            clients: 16,
            records_per_request: 100,
            streams: 16,
        });
    }
    points.push(Point {
        target: Target::SqliteLoop,
        clients: 1,
        records_per_request: 100,
        streams: 1,
    });

    let mut rows: Vec<Row> = points
        .iter()
        .map(|p| Row {
            label: label(p),
            clients: p.clients,
            records_per_request: p.records_per_request,
            streams: p.streams,
            samples: Vec::new(),
        })
        .collect();
    let mut run = 0usize;
    // Repeats go round all points, so a burst of noise from a neighbour hits one repeat of many
    // points rather than every repeat of one.
    for r in 0..repeat {
        for (i, point) in points.iter().enumerate() {
            run += 1;
            let dir = root.join(format!("run-{run}"));
            let sample = measure_point(point, &dir, &depot_bin, &payload, warmup, measure);
            eprintln!(
                "depot-bench: [{}/{}] {} × {} clients: {:.0} records/s, p50 {} µs, p99 {} µs{}",
                r + 1,
                repeat,
                rows[i].label,
                point.clients,
                sample.records_per_sec,
                sample.p50.as_micros(),
                sample.p99.as_micros(),
                if sample.errors > 0 {
                    format!(" ({} errors)", sample.errors)
                } else {
                    String::new()
                }
            );
            rows[i].samples.push(sample);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    let extras = if args.table_only {
        None
    } else {
        Some(Extras {
            soak: soak(&depot_bin, &root.join("soak"), &payload, rss_secs),
            stops: (0..if quick { 1 } else { 3 })
                .map(|i| stop_time(&depot_bin, &root.join(format!("stop-{i}")), &payload))
                .collect(),
            restart: restart_after_kill(
                &depot_bin,
                &root.join("restart"),
                &payload,
                args.restart_records,
            ),
        })
    };
    let _ = std::fs::remove_dir_all(&root);

    let summary = report::Summary {
        machine,
        sync,
        rows,
        extras,
        mode: if quick { "quick" } else { "full" },
        repeat,
        measure,
        elapsed: started.elapsed(),
        sweep: sweep.to_vec(),
        value_bytes: args.value_bytes,
        streams: args.streams,
    };
    println!("{}", summary.render());
    if let Some(parent) = args.svg.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    match std::fs::write(&args.svg, svg::chart(&summary)) {
        Ok(()) => eprintln!("depot-bench: chart written to {}", args.svg.display()),
        Err(e) => eprintln!("depot-bench: cannot write {}: {e}", args.svg.display()),
    }
}

/// The extra measurements beyond the table.
#[derive(Debug)]
pub struct Extras {
    pub soak: Soak,
    pub stops: Vec<StopTime>,
    pub restart: Restart,
}

fn label(p: &Point) -> String {
    let base = match p.target {
        Target::Depot(DepotConfig::DURABLE) => "depot durable".to_owned(),
        Target::Depot(DepotConfig::OFF) => "depot durability=off".to_owned(),
        Target::Depot(DepotConfig::ONE_PER_COMMIT) => "depot commit_max_batch=1".to_owned(),
        Target::Depot(c) => format!("depot {c:?}"),
        Target::Redis => "redis appendfsync=always".to_owned(),
        Target::HttpFloor(false) => "HTTP floor: hyper, fixed 201, nothing stored".to_owned(),
        Target::HttpFloor(true) => "HTTP floor + hand-off to a thread and back".to_owned(),
        Target::SqliteLoop => "rusqlite loop, sync=FULL".to_owned(),
    };
    let base = if p.records_per_request > 1 {
        format!("{base}, {}-rec batches", p.records_per_request)
    } else {
        base
    };
    match p.target {
        Target::Depot(_) if p.streams == 1 => format!("{base}, 1 stream"),
        Target::Depot(_) => format!("{base}, {} streams", p.streams),
        _ => base,
    }
}

fn measure_point(
    point: &Point,
    dir: &Path,
    depot_bin: &Path,
    payload: &str,
    warmup: Duration,
    measure: Duration,
) -> Sample {
    let (server, shape) = match point.target {
        Target::SqliteLoop => {
            let out =
                baselines::sqlite_loop(dir, point.records_per_request, payload, warmup, measure)
                    .expect("the rusqlite baseline");
            return Sample::from_latency(
                out.rows as f64 / out.window.as_secs_f64(),
                &out.latency,
                0,
                None,
                0,
            );
        }
        Target::Redis => (
            servers::start_redis(dir).unwrap_or_else(|e| panic!("{e}")),
            Shape::RedisSet {
                value: payload.as_bytes().to_vec(),
            },
        ),
        Target::HttpFloor(hand_off) => (
            servers::start_http_floor(hand_off).unwrap_or_else(|e| panic!("{e}")),
            depot_shape(payload, 1, 1),
        ),
        Target::Depot(config) => (
            servers::start_depot(depot_bin, dir, config, 0),
            depot_shape(payload, point.records_per_request, point.streams),
        ),
    };
    let out = load::run(Spec {
        addr: server.addr,
        clients: point.clients,
        warmup,
        measure,
        shape,
        tolerate_errors: false,
        max_requests: None,
        server_pid: Some(server.pid()),
    });
    finish(server, out)
}

fn finish(server: Server, out: Outcome) -> Sample {
    let rss = server.peak_rss().unwrap_or(0);
    let _ = server.terminate(Duration::from_secs(30));
    Sample::from_latency(
        out.records_per_sec(),
        &out.latency,
        out.errors,
        out.first_error.clone(),
        rss,
    )
    .with_cpu(&out)
}

fn depot_shape(payload: &str, records: usize, streams: usize) -> Shape {
    let body = if records == 1 {
        payload.to_owned()
    } else {
        format!("[{}]", vec![payload; records].join(","))
    };
    Shape::DepotPost {
        stream_prefix: "bench-".into(),
        body: body.into_bytes(),
        records: records as u64,
        streams: streams.max(1),
    }
}

/// A JSON object of exactly `bytes` bytes (at least 32).
fn record_payload(bytes: usize) -> String {
    let head = r#"{"sensor":"kitchen-1","temp_c":21.5,"pad":""#;
    let tail = r#""}"#;
    let pad = bytes.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(pad))
}

/// Builds the release depot with the cargo that runs us (a no-op when it is up to date) and
/// returns its path next to our own binary.
fn locate_depot(workspace: &Path) -> PathBuf {
    let exe = std::env::current_exe().expect("our own path");
    let bin = exe
        .parent()
        .expect("a directory")
        .join(format!("depot{}", std::env::consts::EXE_SUFFIX));
    if let Some(cargo) = std::env::var_os("CARGO") {
        eprintln!("depot-bench: cargo build --release -p depot");
        let status = Command::new(cargo)
            .args(["build", "--release", "-p", "depot"])
            .current_dir(workspace)
            .status()
            .expect("run cargo");
        assert!(status.success(), "building depot failed");
    }
    assert!(
        bin.exists(),
        "no depot binary at {}; run through `cargo run --release -p depot-bench` or pass --depot-bin",
        bin.display()
    );
    bin
}

/// Refuses tmpfs and ramfs: the point is what the disk costs. Returns the file system's name.
fn check_real_disk(dir: &Path) -> String {
    #[cfg(target_os = "linux")]
    {
        let st = nix::sys::statfs::statfs(dir).expect("statfs the data root");
        let magic = st.filesystem_type().0 as u64;
        let name = match magic {
            0xEF53 => "ext4",
            0x5846_5342 => "xfs",
            0x9123_683E => "btrfs",
            0x0102_1994 => "tmpfs",
            0x8584_58f6 => "ramfs",
            0x794c_7630 => "overlayfs",
            _ => "other",
        };
        assert!(
            !matches!(name, "tmpfs" | "ramfs"),
            "{} is on {name}: fsync costs nothing there; pass --data-root on a real disk",
            dir.display()
        );
        format!("{name} (statfs magic {magic:#x})")
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        "unknown".into()
    }
}

/// RSS over a long 64-client durable run.
#[derive(Debug)]
pub struct Soak {
    pub seconds: u64,
    pub records_per_sec: f64,
    pub peak_rss: u64,
    /// Highest VmRSS in the first and in the second half of the run.
    pub first_half_max: u64,
    pub second_half_max: u64,
    pub errors: u64,
}

impl Soak {
    /// Bounded: the second half never went more than 4 MiB above the first half's peak.
    pub fn bounded(&self) -> bool {
        self.second_half_max <= self.first_half_max + (4 << 20)
    }
}

fn soak(bin: &Path, dir: &Path, payload: &str, seconds: u64) -> Soak {
    eprintln!("depot-bench: RSS soak, 64 clients, {seconds} s");
    let server = servers::start_depot(bin, dir, DepotConfig::DURABLE, 0);
    let sampler = RssSampler::start(server.pid(), Duration::from_millis(250));
    let out = load::run(Spec {
        addr: server.addr,
        clients: 64,
        warmup: Duration::ZERO,
        measure: Duration::from_secs(seconds),
        shape: depot_shape(payload, 1, 1),
        tolerate_errors: false,
        max_requests: None,
        server_pid: None,
    });
    let samples = sampler.finish();
    let peak_rss = server.peak_rss().unwrap_or(0);
    let _ = server.terminate(Duration::from_secs(30));
    let half = seconds as f64 / 2.0;
    let max_in = |f: &dyn Fn(f64) -> bool| {
        samples
            .iter()
            .filter(|(t, _)| f(*t))
            .map(|(_, b)| *b)
            .max()
            .unwrap_or(0)
    };
    Soak {
        seconds,
        records_per_sec: out.records_per_sec(),
        peak_rss,
        first_half_max: max_in(&|t| t < half),
        second_half_max: max_in(&|t| t >= half),
        errors: out.errors,
    }
}

/// SIGTERM while 64 clients are in flight.
#[derive(Debug)]
pub struct StopTime {
    pub exit_after: Duration,
    /// Requests acknowledged 201 before the stop.
    pub acknowledged: u64,
}

fn stop_time(bin: &Path, dir: &Path, payload: &str) -> StopTime {
    let server = servers::start_depot(bin, dir, DepotConfig::DURABLE, 0);
    let load = load::spawn(Spec {
        addr: server.addr,
        clients: 64,
        warmup: Duration::ZERO,
        measure: Duration::from_secs(30),
        shape: depot_shape(payload, 1, 1),
        tolerate_errors: true,
        max_requests: None,
        server_pid: None,
    });
    std::thread::sleep(Duration::from_secs(1));
    let exit_after = server.terminate(Duration::from_secs(30));
    let out = load.join().expect("the load thread");
    let _ = std::fs::remove_dir_all(dir);
    eprintln!(
        "depot-bench: SIGTERM with 64 clients in flight: exited after {:.1} ms",
        exit_after.as_secs_f64() * 1e3
    );
    StopTime {
        exit_after,
        acknowledged: out.requests,
    }
}

/// Restart after SIGKILL with many records stored.
#[derive(Debug)]
pub struct Restart {
    pub records: u64,
    pub fill: Duration,
    pub db_bytes: u64,
    pub wal_bytes: u64,
    pub ready_after: Duration,
    /// The store's own open time, from its log line.
    pub open_ms: Option<u64>,
}

fn restart_after_kill(bin: &Path, dir: &Path, payload: &str, records: u64) -> Restart {
    eprintln!("depot-bench: storing {records} records, then SIGKILL under load and restart");
    let port = servers::free_port();
    let server = servers::start_depot(bin, dir, DepotConfig::DURABLE, port);
    let (clients, per_request) = (16u64, 1000u64);
    let fill_started = Instant::now();
    let out = load::run(Spec {
        addr: server.addr,
        clients: clients as usize,
        warmup: Duration::ZERO,
        measure: Duration::from_secs(600),
        shape: depot_shape(payload, per_request as usize, clients as usize),
        tolerate_errors: false,
        max_requests: Some(records.div_ceil(clients * per_request)),
        server_pid: None,
    });
    let fill = fill_started.elapsed();
    assert_eq!(out.errors, 0, "filling failed: {:?}", out.first_error);
    // Kill it while 64 clients are writing, so the WAL holds committed frames to recover.
    let load = load::spawn(Spec {
        addr: server.addr,
        clients: 64,
        warmup: Duration::ZERO,
        measure: Duration::from_secs(5),
        shape: depot_shape(payload, 1, 1),
        tolerate_errors: true,
        max_requests: None,
        server_pid: None,
    });
    std::thread::sleep(Duration::from_millis(500));
    server.kill();
    let _ = load.join();
    let len = |name: &str| {
        std::fs::metadata(dir.join(name))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let (db_bytes, wal_bytes) = (len("depot.sqlite3"), len("depot.sqlite3-wal"));
    let log_len = std::fs::metadata(dir.with_extension("log"))
        .map(|m| m.len())
        .unwrap_or(0);
    let started = Instant::now();
    let server = servers::start_depot(bin, dir, DepotConfig::DURABLE, port);
    let ready_after = started.elapsed();
    let stored = load::get(server.addr, "/v1/status", Duration::from_secs(5))
        .ok()
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
        .and_then(|v| v["records"].as_u64())
        .unwrap_or(0);
    let _ = server.terminate(Duration::from_secs(30));
    let open_ms = std::fs::read_to_string(dir.with_extension("log"))
        .ok()
        .and_then(|log| {
            log.get(log_len as usize..).and_then(|tail| {
                tail.lines()
                    .filter_map(|l| l.split("opened in ").nth(1))
                    .filter_map(|rest| rest.split(" ms").next()?.parse().ok())
                    .next_back()
            })
        });
    eprintln!(
        "depot-bench: restart after SIGKILL with {stored} records: serving after {:.0} ms",
        ready_after.as_secs_f64() * 1e3
    );
    Restart {
        records: stored,
        fill,
        db_bytes,
        wal_bytes,
        ready_after,
        open_ms,
    }
}
