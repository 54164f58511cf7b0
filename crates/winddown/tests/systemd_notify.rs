//! The systemd notify protocol end to end, with a real peer: each test binds a unix datagram
//! socket of its own and runs a child process with `NOTIFY_SOCKET` (and `WATCHDOG_USEC`) pointing
//! at it, as systemd would, then signals the child and reads every datagram it sent.
//!
//! The child is this test binary run again (selected by `WINDDOWN_NOTIFY_CHILD`), as in
//! `signals.rs`: `CARGO_BIN_EXE_*` exists only for `[[bin]]` targets, not examples, and a bin target
//! in a library crate would be built (and `cargo install`ed) with it; building the example from the
//! test would be slow and race other builds. The main scenario runs the code of
//! `examples/notify_service.rs`, included below, so the example is what is tested. Each child gets
//! its own environment, so the process-wide variables never leak between tests.
#![cfg(unix)]

#[path = "../examples/notify_service.rs"]
#[allow(dead_code)] // its `main`
mod notify_service;

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use winddown::{DrainPlan, HostOptions, Stage};

const CHILD_ENV: &str = "WINDDOWN_NOTIFY_CHILD";

/// The child's side: selected by `WINDDOWN_NOTIFY_CHILD`, never run on its own.
#[test]
#[ignore = "child process of the notify tests"]
fn notify_child() {
    let scenario = std::env::var(CHILD_ENV).expect("run by the notify tests");
    let code = match scenario.as_str() {
        "service" => notify_service::run(),
        "wedge" => wedge(),
        "stale" => stale(),
        "quick" => quick(),
        other => panic!("unknown scenario {other}"),
    };
    std::process::exit(code);
}

/// Ready, then after 1 s blocks every worker of the runtime with a synchronous sleep.
fn wedge() -> i32 {
    winddown::run(HostOptions::new("wedge"), |host| async move {
        host.ready();
        tokio::time::sleep(Duration::from_secs(1)).await;
        host.status("wedging");
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        for _ in 0..workers {
            tokio::spawn(async { std::thread::sleep(Duration::from_secs(60)) });
        }
        Ok(host.drain(DrainPlan::new()).await)
    })
}

/// A heartbeat beaten for 1 s after ready, then never again (its loop "hangs"); an 800 ms drain.
fn stale() -> i32 {
    winddown::run(HostOptions::new("stale"), |host| async move {
        let heartbeat = host.heartbeat("worker", Duration::from_millis(300));
        host.shutdown()
            .tasks()
            .spawn("worker", move |stop| async move {
                let until = tokio::time::Instant::now() + Duration::from_secs(1);
                while tokio::time::Instant::now() < until {
                    heartbeat.beat();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                stop.cancelled().await; // hung, as far as the heartbeat can tell
            });
        let plan = DrainPlan::new()
            .wait_for_tasks()
            .phase(Stage::Flush, "flush", |_| async {
                tokio::time::sleep(Duration::from_millis(800)).await;
                Ok::<_, std::io::Error>(())
            });
        host.ready();
        Ok(host.drain(plan).await)
    })
}

/// Ready, and an empty drain.
fn quick() -> i32 {
    winddown::run(HostOptions::new("quick"), |host| async move {
        host.ready();
        Ok(host.drain(DrainPlan::new()).await)
    })
}

/// One datagram and when it arrived.
#[derive(Debug, Clone)]
struct Datagram {
    at: Instant,
    text: String,
}

impl Datagram {
    fn is_ping(&self) -> bool {
        self.text == "WATCHDOG=1\n"
    }

    fn value(&self, key: &str) -> Option<&str> {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    }

    fn extend_usec(&self) -> Option<u64> {
        self.value("EXTEND_TIMEOUT_USEC")
            .map(|v| v.parse().unwrap())
    }
}

/// The service manager's side: a bound notify socket, read by a thread, and the child.
struct Manager {
    _dir: tempfile::TempDir,
    received: Arc<Mutex<Vec<Datagram>>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    child: Child,
    stderr: Option<JoinHandle<String>>,
}

impl Manager {
    fn start(scenario: &str, env: &[(&str, String)]) -> Manager {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let received = received.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = socket.recv(&mut buf) {
                        let text = String::from_utf8(buf[..n].to_vec()).unwrap();
                        received.lock().unwrap().push(Datagram {
                            at: Instant::now(),
                            text,
                        });
                    }
                }
            })
        };
        let mut child = spawn_child(scenario, &path, env);
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        Manager {
            _dir: dir,
            received,
            stop,
            reader: Some(reader),
            child,
            stderr: Some(stderr),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn all(&self) -> Vec<Datagram> {
        self.received.lock().unwrap().clone()
    }

    /// Waits for the first datagram that `matches`.
    fn wait_for(
        &mut self,
        what: &str,
        within: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Datagram {
        let end = Instant::now() + within;
        loop {
            if let Some(d) = self.all().into_iter().find(|d| matches(&d.text)) {
                return d;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!(
                    "no {what} within {within:?}; received {:#?}\nchild stderr:\n{}",
                    self.all(),
                    self.stderr.take().unwrap().join().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `signal`; returns the instant just before it was sent (the child may answer before
    /// `kill` returns here).
    fn signal(&self, signal: Signal) -> Instant {
        let at = Instant::now();
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
        at
    }

    /// Waits for the exit; returns the exit code and when it was seen, then stops reading once
    /// the last datagrams are in.
    fn exit(&mut self, within: Duration) -> (i32, Instant) {
        let end = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let at = Instant::now();
                std::thread::sleep(Duration::from_millis(150));
                let stderr = self.stderr.take().unwrap().join().unwrap();
                let code = status
                    .code()
                    .unwrap_or_else(|| panic!("killed: {status}\nchild stderr:\n{stderr}"));
                return (code, at);
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!(
                    "child still running after {within:?}; received {:#?}",
                    self.all()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Kills the child if a test fails before it exits, and stops the reader.
impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

fn spawn_child(scenario: &str, socket: &Path, env: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "notify_child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, scenario)
    .env("NOTIFY_SOCKET", socket)
    .env_remove("WATCHDOG_USEC")
    .env_remove("WATCHDOG_PID")
    .env_remove("WINDDOWN_STOP_BUDGET_MS")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.spawn().unwrap()
}

fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

/// The main scenario: `examples/notify_service.rs` under a watchdog of 1 s and a stop budget of
/// 8 s, stopped with `SIGTERM` after 2 s of serving.
#[test]
fn ready_status_stopping_extend_and_watchdog_in_order() {
    let mut m = Manager::start(
        "service",
        &[
            ("WATCHDOG_USEC", "1000000".into()),
            ("WINDDOWN_STOP_BUDGET_MS", "8000".into()),
        ],
    );
    let ready = m.wait_for("READY=1", Duration::from_secs(20), |t| {
        t.starts_with("READY=1\n")
    });
    std::thread::sleep(Duration::from_secs(2));
    let term = m.signal(Signal::SIGTERM);
    let (code, exited) = m.exit(Duration::from_secs(20));
    assert_eq!(code, 0, "{:#?}", m.all());
    let all = m.all();

    // The sequence, without the pings.
    let seq: Vec<&Datagram> = all.iter().filter(|d| !d.is_ping()).collect();
    let texts: Vec<&str> = seq.iter().map(|d| d.text.as_str()).collect();
    assert_eq!(texts[0], "STATUS=warming up\n", "{texts:#?}");
    assert_eq!(
        texts[1],
        format!("READY=1\nMAINPID={}\nSTATUS=serving\n", m.pid()),
        "{texts:#?}"
    );
    assert_eq!(seq.iter().filter(|d| d.text.contains("READY=1")).count(), 1);
    assert!(ready.at < term);

    // STOPPING=1 when the drain starts, with the budget from WINDDOWN_STOP_BUDGET_MS (8 s) plus
    // the 5 s margin; nothing about stopping before the signal.
    let stopping = seq[2];
    assert!(stopping.at >= term, "STOPPING before SIGTERM: {texts:#?}");
    assert!(
        stopping
            .text
            .starts_with("STOPPING=1\nSTATUS=stopping (SIGTERM): 8.0 s budget\n"),
        "{texts:#?}"
    );
    let first_extend = stopping.extend_usec().unwrap();
    assert!(
        (12_500_000..=13_000_000).contains(&first_extend),
        "{first_extend}"
    );
    assert_eq!(
        seq.iter().filter(|d| d.text.contains("STOPPING=1")).count(),
        1
    );

    // The drain: every datagram re-arms the extension; the status names the phases in order.
    let last = *seq.last().unwrap();
    let drain = &seq[2..];
    assert!(
        last.text.starts_with("STATUS=stopped: clean in ")
            && last.text.contains("(SIGTERM, exit code 0)\n"),
        "{texts:#?}"
    );
    let mut phase_seen = 0;
    for d in drain {
        assert!(d.extend_usec().is_some(), "no extension in {:?}", d.text);
        if let Some(status) = d.value("STATUS")
            && let Some(rest) = status.strip_prefix("stopping (SIGTERM): phase ")
        {
            let n: usize = rest[..1].parse().unwrap();
            assert!(n >= phase_seen, "phases out of order: {texts:#?}");
            phase_seen = n;
            assert_eq!(&rest[1..3], "/3", "{status}");
        }
    }
    assert_eq!(phase_seen, 3, "{texts:#?}");

    // The long phase: a report at its start and at each tick (500 ms) over its 2.5 s, each
    // asking for exactly what is left of the phase plus the 5 s margin.
    let flush: Vec<&&Datagram> = drain
        .iter()
        .filter(|d| d.text.contains("phase 3/3 flush \"flush journal\""))
        .collect();
    assert!(flush.len() >= 4, "{texts:#?}");
    assert!(
        flush
            .iter()
            .filter(|d| d.text.contains("% flushed"))
            .count()
            >= 3,
        "{texts:#?}"
    );
    let mut previous = u64::MAX;
    for d in &flush {
        let status = d.value("STATUS").unwrap();
        let left: f64 = status
            .rsplit(", ")
            .next()
            .and_then(|s| s.strip_suffix(" s left"))
            .unwrap()
            .parse()
            .unwrap();
        let extend = d.extend_usec().unwrap();
        let expected = (left + 5.0) * 1e6;
        assert!(
            (extend as f64 - expected).abs() <= 60_000.0,
            "{extend} for {left} s left"
        );
        assert!(
            extend < previous,
            "the extension must shrink with the phase"
        );
        previous = extend;
    }

    // Re-sent within each interval: every datagram of the drain arrives before the previous one's
    // extension ran out, and the process exits before the last one's does.
    for pair in drain.windows(2) {
        let allowed = Duration::from_micros(pair[0].extend_usec().unwrap());
        assert!(pair[1].at - pair[0].at < allowed, "{pair:#?}");
    }
    assert!(exited - last.at < Duration::from_micros(last.extend_usec().unwrap()));

    // Watchdog: pings at half of WATCHDOG_USEC (500 ms) from start to exit, drain included.
    let pings: Vec<Instant> = all.iter().filter(|d| d.is_ping()).map(|d| d.at).collect();
    let serving = pings
        .iter()
        .filter(|&&t| t >= ready.at && t <= term)
        .count();
    assert!(
        (3..=6).contains(&serving),
        "{serving} pings in 2 s of serving"
    );
    let gaps = gaps(&pings);
    let max = gaps.iter().max().unwrap();
    let min = gaps.iter().min().unwrap();
    assert!(
        *max < Duration::from_secs(1),
        "a ping gap of {max:?}: {gaps:?}"
    );
    assert!(
        *min > Duration::from_millis(250),
        "a ping gap of {min:?}: {gaps:?}"
    );
    assert!(
        pings.iter().any(|&t| t > term + Duration::from_secs(1)),
        "no pings while draining: {gaps:?}"
    );
}

/// Pings come from a task on the runtime: when every worker is blocked they stop.
#[test]
fn a_wedged_runtime_stops_the_watchdog_pings() {
    let mut m = Manager::start("wedge", &[("WATCHDOG_USEC", "400000".into())]);
    let ready = m.wait_for("READY=1", Duration::from_secs(20), |t| {
        t.starts_with("READY=1\n")
    });
    let wedged = m.wait_for("STATUS=wedging", Duration::from_secs(5), |t| {
        t == "STATUS=wedging\n"
    });
    std::thread::sleep(Duration::from_millis(1500));
    let pings: Vec<Instant> = m
        .all()
        .iter()
        .filter(|d| d.is_ping())
        .map(|d| d.at)
        .collect();
    let before = pings
        .iter()
        .filter(|&&t| t >= ready.at && t <= wedged.at)
        .count();
    assert!(before >= 3, "{before} pings in the second before the wedge");
    let after: Vec<_> = pings
        .iter()
        .filter(|&&t| t > wedged.at + Duration::from_millis(300))
        .collect();
    assert!(
        after.is_empty(),
        "{} pings from a wedged runtime",
        after.len()
    );
}

/// A stale heartbeat withholds the pings and says why in STATUS=; once the stop is requested the
/// heartbeats no longer count and the pings resume while the drain runs.
#[test]
fn a_stale_heartbeat_withholds_the_pings_until_the_stop() {
    let mut m = Manager::start("stale", &[("WATCHDOG_USEC", "400000".into())]);
    let ready = m.wait_for("READY=1", Duration::from_secs(20), |t| {
        t.starts_with("READY=1\n")
    });
    let unresponsive = m.wait_for("STATUS=unresponsive", Duration::from_secs(5), |t| {
        t.starts_with("STATUS=unresponsive: heartbeat \"worker\" silent for ")
            && t.ends_with("; watchdog pings withheld\n")
    });
    // Beaten for 1 s, stale 300 ms later, noticed at the next 200 ms tick.
    let noticed = unresponsive.at - ready.at;
    assert!(
        noticed >= Duration::from_millis(1200) && noticed < Duration::from_millis(2500),
        "{noticed:?}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let term = m.signal(Signal::SIGTERM);
    let (code, _) = m.exit(Duration::from_secs(10));
    assert_eq!(code, 0);
    let all = m.all();
    let pings: Vec<Instant> = all.iter().filter(|d| d.is_ping()).map(|d| d.at).collect();
    assert!(
        pings
            .iter()
            .filter(|&&t| t > ready.at && t < unresponsive.at)
            .count()
            >= 3,
        "{all:#?}"
    );
    let withheld = pings
        .iter()
        .filter(|&&t| t > unresponsive.at + Duration::from_millis(50) && t < term)
        .count();
    assert_eq!(withheld, 0, "pings while a heartbeat was stale: {all:#?}");
    let draining = pings.iter().filter(|&&t| t > term).count();
    assert!(draining >= 2, "{draining} pings while draining: {all:#?}");
    assert_eq!(
        all.iter()
            .filter(|d| d.text.starts_with("STATUS=unresponsive"))
            .count(),
        1,
        "said once per episode"
    );
}

/// `WATCHDOG_PID` naming another process means the watchdog is not this one's to ping.
#[test]
fn a_watchdog_for_another_pid_is_not_pinged() {
    let mut m = Manager::start(
        "quick",
        &[
            ("WATCHDOG_USEC", "200000".into()),
            ("WATCHDOG_PID", std::process::id().to_string()),
        ],
    );
    m.wait_for("READY=1", Duration::from_secs(20), |t| {
        t.starts_with("READY=1\n")
    });
    std::thread::sleep(Duration::from_millis(800));
    m.signal(Signal::SIGTERM);
    let (code, _) = m.exit(Duration::from_secs(10));
    assert_eq!(code, 0);
    let all = m.all();
    assert!(!all.iter().any(Datagram::is_ping), "{all:#?}");
    assert!(
        all.iter()
            .any(|d| d.text.starts_with("STATUS=stopped: clean")),
        "{all:#?}"
    );
}
