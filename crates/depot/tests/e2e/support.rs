//! Running the real `depot` binary: start it on a free port and a data directory, wait until it
//! is ready, signal it, wait for its exit, read its log.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use torture::Client;

/// The binary under test, built by cargo for this test target.
pub(crate) const DEPOT: &str = env!("CARGO_BIN_EXE_depot");

/// The binary to run: `TORTURE_DEPOT_BIN` (a release build, or a copy kept apart while a long
/// loop runs), else [`DEPOT`].
pub(crate) fn depot_bin() -> String {
    std::env::var("TORTURE_DEPOT_BIN").unwrap_or_else(|_| DEPOT.to_owned())
}

/// The end-to-end tests run one at a time: the loops and the latency measurements would disturb
/// each other on a small machine.
pub(crate) async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// How a test starts depot.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// `DEPOT_*` settings (and others), as environment variables.
    pub(crate) env: Vec<(String, String)>,
    /// Extra command-line arguments.
    pub(crate) args: Vec<String>,
    /// How long start-up may take.
    pub(crate) ready_within: Duration,
    /// `--listen`.
    pub(crate) listen: String,
    /// Where the log goes [default: beside the data directory].
    pub(crate) log_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            env: Vec::new(),
            args: Vec::new(),
            ready_within: Duration::from_secs(30),
            listen: "127.0.0.1:0".into(),
            log_dir: None,
        }
    }
}

impl Options {
    /// Adds a setting.
    pub(crate) fn set(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.to_owned(), value.to_string()));
        self
    }
}

/// A depot process.
pub(crate) struct Depot {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) log: PathBuf,
    pub(crate) client: Client,
}

/// A start that did not come up: its exit status and its log.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) status: Option<ExitStatus>,
    pub(crate) log: String,
}

static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Starts `depot run` on `127.0.0.1:0` with `data_dir`; its stderr goes to a log file beside the
/// data directory.
pub(crate) fn spawn(data_dir: &Path, options: &Options) -> (Child, PathBuf) {
    let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let parent = options
        .log_dir
        .as_deref()
        .unwrap_or(data_dir.parent().unwrap_or(Path::new("/tmp")));
    let log = parent.join(format!("depot-{}-{n}.log", std::process::id()));
    let stderr = fs::File::create(&log).expect("create the log file");
    let mut command = crate::harness::depot_command(depot_bin());
    command
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", &options.listen, "--log-format", "json"])
        .args(&options.args)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    command.envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let child = command.spawn().expect("spawn depot");
    (child, log)
}

/// Starts depot and waits until `/readyz` answers `200`.
pub(crate) async fn start(data_dir: &Path, options: &Options) -> Result<Depot, Failed> {
    let (mut child, log) = spawn(data_dir, options);
    let deadline = Instant::now() + options.ready_within;
    let pid = child.id();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Failed {
                status: Some(status),
                log: fs::read_to_string(&log).unwrap_or_default(),
            });
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let status = child.wait().ok();
            return Err(Failed {
                status,
                log: fs::read_to_string(&log).unwrap_or_default(),
            });
        }
        if let Some(addr) = crate::harness::running_addr(data_dir, pid) {
            let client = Client::new(&format!("http://{addr}"), None, Duration::from_secs(20))
                .expect("client");
            if client.is_ready().await {
                return Ok(Depot {
                    child,
                    addr,
                    log,
                    client,
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts depot, panicking with its log if it does not come up.
pub(crate) async fn start_ok(data_dir: &Path, options: &Options) -> Depot {
    match start(data_dir, options).await {
        Ok(depot) => depot,
        Err(f) => panic!("depot did not start ({:?}):\n{}", f.status, f.log),
    }
}

impl Depot {
    pub(crate) fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub(crate) fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("signal depot");
    }

    /// SIGKILL, and reap.
    pub(crate) fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log_text()
    }

    /// Waits up to `timeout` for the process to exit.
    pub(crate) async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_exit(&mut self.child, timeout).await
    }

    pub(crate) fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A client for this depot with a bearer token.
    pub(crate) fn client_with_token(&self, token: Option<&str>) -> Client {
        Client::new(
            &format!("http://{}", self.addr),
            token,
            Duration::from_secs(20),
        )
        .unwrap()
    }

    /// `GET /v1/status` as JSON.
    pub(crate) async fn status(&self) -> serde_json::Value {
        let reply = self
            .client
            .send(hyper::Method::GET, "/v1/status", &[], "")
            .await
            .expect("GET /v1/status");
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply.json()
    }

    /// SIGTERM, then waits for a clean exit (code 0) within `timeout`; returns how long it took.
    pub(crate) async fn stop(mut self, timeout: Duration) -> Duration {
        let started = Instant::now();
        self.signal(Signal::SIGTERM);
        let status = self.wait_exit(timeout).await;
        let log = self.log_text();
        assert_no_panic(&log);
        match status {
            Some(s) if s.success() => started.elapsed(),
            other => {
                let _ = self.child.kill();
                panic!("depot did not stop cleanly within {timeout:?} ({other:?}):\n{log}")
            }
        }
    }
}

impl Drop for Depot {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(crate) async fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Fails the test if the log shows a panic.
pub(crate) fn assert_no_panic(log: &str) {
    assert!(
        !log.contains("panicked"),
        "depot panicked:\n{}",
        log.lines()
            .filter(|l| l.contains("panicked") || l.contains("ERROR"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The seed of a randomized test: `TORTURE_SEED`, else from the clock. Printed, to repeat a run.
pub(crate) fn seed(test: &str) -> u64 {
    let seed = std::env::var("TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(torture::seed_from_clock);
    eprintln!("{test}: seed {seed} (TORTURE_SEED={seed} repeats this run)");
    seed
}

/// An environment variable as a number, or `default`.
pub(crate) fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[path = "../mounts/mod.rs"]
mod mounts;
pub(crate) use mounts::{Mount, run_mount, skip};

/// Runs `depot <args…>` (stop, status) on `data_dir` and returns its exit code and output.
pub(crate) fn depot_command(data_dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(depot_bin())
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .expect("run depot");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Loads depot until `enough` says so (checked every few hundred records) or `limit` passes;
/// returns the ledger. Requests are not retried: each answer is recorded as it came.
pub(crate) async fn load_until(
    client: &Client,
    run: &mut u64,
    limit: Duration,
    enough: impl Fn(&torture::Ledger) -> bool,
) -> torture::Ledger {
    let mut ledger = torture::Ledger::default();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && !enough(&ledger) {
        *run += 1;
        let options = torture::LoadOptions {
            clients: 2,
            streams: 2,
            stream_prefix: "f-".into(),
            records: Some(300),
            duration: Some(Duration::from_secs(5)),
            run: *run,
            seed: *run,
            retries: 0,
            ..torture::LoadOptions::default()
        };
        let part = torture::run_load(
            client,
            &options,
            &tokio_util::sync::CancellationToken::new(),
        )
        .await;
        ledger.merge(part);
    }
    ledger
}

/// Checks every stream of `ledger` against depot; panics with the problems unless clean.
pub(crate) async fn verify_clean(
    client: &Client,
    ledger: &torture::Ledger,
    when: &str,
) -> torture::Summary {
    let report = torture::verify(client, ledger)
        .await
        .unwrap_or_else(|e| panic!("{when}: cannot read the streams back: {e}"));
    eprintln!("{when}: {}", report.summary);
    assert!(
        report.summary.is_clean(),
        "{when}: {}\n{:#?}\nanswers: {:?}",
        report.summary,
        report.problems,
        ledger.answers
    );
    report.summary
}
