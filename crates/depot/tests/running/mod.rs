//! A depot binary running as a child process, for the end-to-end tests (`service.rs`,
//! `forward.rs`): started on a free port, its stderr kept, killed when dropped.
#![allow(dead_code)] // each test file uses its own part

#[path = "../harness/mod.rs"]
mod harness;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// A running depot.
pub(crate) struct Depot {
    pub(crate) child: Child,
    pub(crate) base: String,
    pub(crate) log: Arc<Mutex<Vec<String>>>,
}

impl Depot {
    pub(crate) fn start(dir: &Path, env: &[(&str, &str)]) -> Depot {
        Depot::start_with(dir, env, |_| {})
    }

    /// [`Depot::start`], with `more` adding to the command (variables that are not text…).
    pub(crate) fn start_with(
        dir: &Path,
        env: &[(&str, &str)],
        more: impl FnOnce(&mut Command),
    ) -> Depot {
        let mut cmd = harness::depot_command(env!("CARGO_BIN_EXE_depot"));
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        more(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = loop {
            if let Some(addr) = harness::running_addr(dir, child.id()) {
                break addr;
            }
            let exited = child.try_wait().unwrap().is_some();
            if exited || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                // The log thread ends with the process; let it take the last lines.
                std::thread::sleep(Duration::from_millis(50));
                panic!("depot did not start: {:?}", log.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // The run file is written just before depot says it serves: wait for that line too, so
        // that what it logged while starting is in `log` when a test looks.
        while Instant::now() < deadline
            && !log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.starts_with("depot serving on http://"))
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        Depot {
            child,
            base: format!("http://{addr}"),
            log,
        }
    }

    pub(crate) fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    pub(crate) fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let end = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < end, "depot still running after {within:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `GET /v1/status`.
    pub(crate) async fn status(&self) -> Value {
        get_json(&client(), &format!("{}/v1/status", self.base)).await
    }

    /// The `/metrics` text.
    pub(crate) async fn metrics_text(&self) -> String {
        client()
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub(crate) fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Depot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Every record of `stream` (seq, payload), in order, read page by page through the API.
pub(crate) async fn read_all(base: &str, stream: &str) -> Vec<(u64, Value)> {
    let http = client();
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = get_json(
            &http,
            &format!("{base}/v1/streams/{stream}/records?after={after}&limit=1000"),
        )
        .await;
        let records = page["records"].as_array().unwrap();
        if records.is_empty() {
            return out;
        }
        for r in records {
            out.push((r["seq"].as_u64().unwrap(), r["payload"].clone()));
        }
        after = page["next_after"].as_u64().unwrap();
    }
}

/// `GET url`, whose answer must be JSON.
pub(crate) async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}
