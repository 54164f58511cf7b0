//! depot as a user runs it: the real binary, real HTTP, real signals, a real SQLite file.
#![cfg(unix)]

mod running;

use running::{Depot, client, read_all};

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// Acknowledged records: (client, i) → (seq, payload).
type Acked = Arc<Mutex<BTreeMap<(u64, u64), u64>>>;

/// 32 clients posting single records (and some arrays) until depot stops taking them.
fn load(base: &str, acked: &Acked) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..32u64)
        .map(|c| {
            let base = base.to_owned();
            let acked = acked.clone();
            tokio::spawn(async move {
                let http = client();
                let mut refused = 0;
                for i in 0.. {
                    let body = json!({ "client": c, "i": i, "pad": "x".repeat(64) });
                    let response = http
                        .post(format!("{base}/v1/streams/load/records"))
                        .header("Idempotency-Key", format!("{c}-{i}"))
                        .json(&body)
                        .send()
                        .await;
                    match response {
                        Ok(r) if r.status() == 201 => {
                            let v: Value = r.json().await.unwrap();
                            acked
                                .lock()
                                .unwrap()
                                .insert((c, i), v["first_seq"].as_u64().unwrap());
                        }
                        Ok(r) => {
                            assert_eq!(r.status(), 503, "unexpected {}", r.status());
                            let v: Value = r.json().await.unwrap();
                            assert_eq!(v["error"]["code"], "draining");
                            return i;
                        }
                        // The listener closed, or the process is gone.
                        Err(_) => {
                            refused += 1;
                            if refused > 2 {
                                return i;
                            }
                        }
                    }
                }
                unreachable!()
            })
        })
        .collect()
}

async fn check_all_acked_present(base: &str, acked: &Acked) -> usize {
    let records = read_all(base, "load").await;
    let mut seen = BTreeMap::new();
    for (seq, payload) in &records {
        let key = (
            payload["client"].as_u64().unwrap(),
            payload["i"].as_u64().unwrap(),
        );
        assert!(
            seen.insert(key, *seq).is_none(),
            "record {key:?} stored twice"
        );
        assert_eq!(
            payload["pad"].as_str().unwrap().len(),
            64,
            "payload corrupt at {seq}"
        );
    }
    let seqs: Vec<u64> = records.iter().map(|(s, _)| *s).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "sequence gap or disorder"
    );
    let acked = acked.lock().unwrap();
    for (key, seq) in acked.iter() {
        assert_eq!(
            seen.get(key),
            Some(seq),
            "acknowledged record {key:?} (seq {seq}) missing"
        );
    }
    acked.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_nothing_acknowledged_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut depot = Depot::start(dir.path(), &[("DEPOT_UNREADY_DELAY_MS", "300")]);
    let base = depot.base.clone();
    let acked = Acked::default();
    let clients = load(&base, &acked);

    // Watch readiness: it must turn 503 before the listener refuses connections.
    let readiness = {
        let base = base.clone();
        tokio::spawn(async move {
            let http = client();
            let mut saw_503 = None;
            loop {
                match http.get(format!("{base}/readyz")).send().await {
                    Ok(r) if r.status() == 503 => {
                        saw_503.get_or_insert(Instant::now());
                    }
                    Ok(_) => {}
                    Err(_) => return (saw_503, Instant::now()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = acked.lock().unwrap().len();
    assert!(
        before > 100,
        "only {before} records acknowledged before the stop"
    );
    let sent = Instant::now();
    depot.signal(Signal::SIGTERM);
    let code = tokio::task::block_in_place(|| depot.wait_exit(Duration::from_secs(20)));
    let took = sent.elapsed();
    assert_eq!(code, Some(0), "{}", depot.log_text());
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    for c in clients {
        c.await.unwrap();
    }
    let (saw_503, refused_at) = readiness.await.unwrap();
    let saw_503 = saw_503.expect("/readyz never answered 503 during the drain");
    assert!(saw_503 < refused_at);

    let log = depot.log_text();
    assert!(log.contains("shutdown finished"), "no report in the log");
    assert!(log.contains(r#"\"reason\":\"sig_term\""#) || log.contains("sig_term"));

    // Restart: every acknowledged record is there, exactly once, in order.
    let depot = Depot::start(dir.path(), &[]);
    let checked = check_all_acked_present(&depot.base, &acked).await;
    assert!(checked >= before);
    let status = depot.status().await;
    assert_eq!(status["last_shutdown"]["reason"], "sig_term");
    assert_eq!(status["last_shutdown"]["outcome"], "clean");
    assert_eq!(status["recovery"]["last_run"], "Clean");
    eprintln!("SIGTERM under load: {checked} acknowledged records verified, stop took {took:?}");
}

/// SIGTERM, then how long `/readyz` answered 503 before connections were refused, and how long
/// the process took to exit (with its exit code).
async fn unready_window(env: &[(&str, &str)]) -> (Duration, Duration, Option<i32>) {
    let dir = tempfile::tempdir().unwrap();
    let mut depot = Depot::start(dir.path(), env);
    let (base, http) = (depot.base.clone(), client());
    let sent = Instant::now();
    depot.signal(Signal::SIGTERM);
    let mut first_503 = None;
    let refused = loop {
        match http.get(format!("{base}/readyz")).send().await {
            Ok(r) if r.status() == 503 => {
                first_503.get_or_insert(Instant::now());
            }
            Ok(_) => {}
            Err(_) => break Instant::now(),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let first_503 = first_503.expect("/readyz never answered 503");
    let code = tokio::task::block_in_place(|| depot.wait_exit(Duration::from_secs(30)));
    (refused - first_503, sent.elapsed(), code)
}

/// `unready_delay_ms` (the time a load balancer needs to notice `/readyz`) is honoured in full
/// when the stop's budget allows, and cut to half of it when it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unready_delay_is_kept_within_the_stop_budget() {
    let (window, took, code) = unready_window(&[("DEPOT_UNREADY_DELAY_MS", "3000")]).await;
    assert_eq!(code, Some(0));
    assert!(
        window >= Duration::from_millis(2900) && took < Duration::from_secs(6),
        "503 for {window:?}, exit after {took:?}"
    );

    let (window, took, code) = unready_window(&[
        ("DEPOT_UNREADY_DELAY_MS", "10000"),
        ("DEPOT_SIGTERM_BUDGET_MS", "2000"),
    ])
    .await;
    assert_eq!(code, Some(0));
    assert!(
        window <= Duration::from_millis(1200) && took < Duration::from_millis(2500),
        "503 for {window:?}, exit after {took:?} with a 2 s budget"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut depot = Depot::start(dir.path(), &[]);
    let acked = Acked::default();
    let clients = load(&depot.base, &acked);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    depot.signal(Signal::SIGKILL);
    let code = tokio::task::block_in_place(|| depot.wait_exit(Duration::from_secs(5)));
    assert_eq!(code, None, "killed by a signal");
    for c in clients {
        c.await.unwrap();
    }
    let depot = Depot::start(dir.path(), &[]);
    let checked = check_all_acked_present(&depot.base, &acked).await;
    assert!(checked > 100, "only {checked} acknowledged");
    let status = depot.status().await;
    assert_eq!(status["recovery"]["last_run"], "Unclean");
    eprintln!("SIGKILL under load: {checked} acknowledged records verified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_documented_status_and_code() {
    let dir = tempfile::tempdir().unwrap();
    let depot = Depot::start(
        dir.path(),
        &[
            ("DEPOT_MAX_BODY_BYTES", "4096"),
            ("DEPOT_MAX_RECORDS_PER_REQUEST", "10"),
        ],
    );
    let http = client();
    let url = |path: &str| format!("{}{path}", depot.base);
    async fn parts(r: reqwest::Response) -> (u16, Value) {
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
    let ok = "/v1/streams/s/records";
    let long = format!("/v1/streams/{}/records", "x".repeat(200));
    let cases = [
        (
            400,
            "malformed_json",
            http.post(url(ok)).body(&b"{\"a\":"[..]),
        ),
        (
            400,
            "malformed_json",
            http.post(url(ok)).body(&b"\"\xff\xfe\""[..]),
        ),
        (
            400,
            "too_deep",
            http.post(url(ok)).body("[".repeat(100) + &"]".repeat(100)),
        ),
        (
            400,
            "invalid_stream_name",
            http.post(url("/v1/streams/a%20b/records")).body("1"),
        ),
        (400, "invalid_stream_name", http.post(url(&long)).body("1")),
        (
            413,
            "body_too_large",
            http.post(url(ok)).body(vec![b' '; 5000]),
        ),
        (
            400,
            "too_many_records",
            http.post(url(ok)).body("[1,2,3,4,5,6,7,8,9,10,11]"),
        ),
        (400, "empty_request", http.post(url(ok)).body("[]")),
        (404, "not_found", http.get(url("/v2/nothing"))),
        (
            400,
            "bad_query",
            http.get(url("/v1/streams/s/records?after=x")),
        ),
        (
            400,
            "bad_query",
            http.get(url("/v1/streams/s/records?limit=0")),
        ),
        (
            400,
            "invalid_idempotency_key",
            http.post(url(ok)).header("Idempotency-Key", "").body("1"),
        ),
    ];
    for (status, code, request) in cases {
        let (got, body) = parts(request.send().await.unwrap()).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{body:?}"
        );
        assert!(
            body["error"]["message"].as_str().unwrap().len() > 10,
            "{body:?}"
        );
    }

    // Idempotency: the same key and body replays; the same key with another body conflicts.
    let keyed = |body: &'static str| {
        http.post(url(ok))
            .header("Idempotency-Key", "k")
            .body(body)
            .send()
    };
    let first = parts(keyed("[1,2]").await.unwrap()).await;
    assert_eq!(first.0, 201);
    let again = parts(keyed("[1,2]").await.unwrap()).await;
    assert_eq!(again.0, 201);
    assert_eq!(again.1["first_seq"], first.1["first_seq"]);
    assert_eq!(again.1["replayed"], true);
    let (status, conflict) = parts(keyed("[3]").await.unwrap()).await;
    assert_eq!(
        (status, conflict["error"]["code"].as_str()),
        (409, Some("idempotency_conflict")),
        "{conflict:?}"
    );

    // None of that hurt it.
    assert_eq!(
        http.get(url("/healthz")).send().await.unwrap().status(),
        200
    );
    assert_eq!(read_all(&depot.base, "s").await.len(), 2);
    assert!(!depot.log_text().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text() {
    let dir = tempfile::tempdir().unwrap();
    let depot = Depot::start(dir.path(), &[]);
    let http = client();
    for i in 0..5 {
        let r = http
            .post(format!("{}/v1/streams/m/records", depot.base))
            .body(format!("{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let r = http
        .get(format!("{}/metrics", depot.base))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let names: std::collections::BTreeSet<&str> =
        scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for wanted in [
        "depot_http_requests_total",
        "depot_records_stored_total",
        "depot_http_request_duration_seconds_count",
        "winddown_commit_batch_items_count",
        "winddown_commit_latency_seconds_count",
        "depot_commit_queue_depth",
    ] {
        assert!(names.contains(wanted), "{wanted} missing from {names:?}");
    }
    let stored = scrape
        .samples
        .iter()
        .find(|s| s.metric == "depot_records_stored_total")
        .unwrap();
    assert!(
        matches!(stored.value, prometheus_parse::Value::Counter(v) if v == 5.0),
        "{:?}",
        stored.value
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_status_commands_work_on_a_running_depot() {
    let dir = tempfile::tempdir().unwrap();
    let mut depot = Depot::start(dir.path(), &[]);
    let bin = env!("CARGO_BIN_EXE_depot");
    let status = depot_command(dir.path(), "status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success());
    assert!(
        text.contains(&format!("PID {}", depot.child.id())),
        "{text}"
    );
    assert!(text.contains("0 records"), "{text}");
    assert!(text.contains("listening on http://127.0.0.1:"), "{text}");

    let stop = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || depot_command(&dir, "stop")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&stop.stdout);
    assert!(stop.status.success(), "{text}");
    // What a person sees: the signal, each phase's real outcome as it ends, then the report.
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("asked depot (PID {}) to stop; draining…", depot.child.id()),
        "{text}"
    );
    let ended: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("  phase ") && !l.contains(" s left"))
        .collect();
    assert_eq!(
        ended,
        [
            "  phase 1/5 readiness off, listener closed: done",
            "  phase 2/5 in-flight requests: done",
            "  phase 3/5 group commit: done",
            "  phase 4/5 sqlite checkpoint and close: done",
            "  phase 5/5 temp area: done",
        ],
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("last shutdown: clean after sig_term, every phase done in ")),
        "{text}"
    );
    assert!(
        lines.iter().any(
            |l| l.starts_with("  group commit ") && l.contains(" s  done — 0 requests flushed")
        ),
        "{text}"
    );
    assert_eq!(
        tokio::task::block_in_place(|| depot.wait_exit(Duration::from_secs(5))),
        Some(0)
    );

    let status = depot_command(dir.path(), "status");
    assert_eq!(status.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&status.stdout).contains("not running"));

    // A second instance on the same data directory fails at once, naming the lock and the PID.
    let first = Depot::start(dir.path(), &[]);
    let second = Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(
        err.contains("depot.lock") && err.contains(&format!("PID {}", first.child.id())),
        "{err}"
    );
}

#[test]
fn install_print_writes_a_unit_that_systemd_accepts() {
    let out = Command::new(env!("CARGO_BIN_EXE_depot"))
        .args(["install", "--print"])
        .env("DEPOT_SIGTERM_BUDGET_MS", "40000")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit = String::from_utf8(out.stdout).unwrap();
    for line in [
        "Type=notify",
        "KillMode=mixed",
        "TimeoutStopSec=45s",
        "Environment=WINDDOWN_STOP_BUDGET_MS=40000",
        "StateDirectory=depot",
        "Restart=on-failure",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "{line} missing from\n{unit}"
        );
    }
    assert!(unit.contains(&format!("ExecStart={} run", env!("CARGO_BIN_EXE_depot"))));
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED systemd-analyze verify: install Debian's `systemd` package to run it");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("depot.service");
    std::fs::write(&path, &unit).unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// `--start` and `--update` are the SCM's; under systemd they are refused with what to do instead,
/// before anything is written.
#[test]
fn install_refuses_windows_only_options_on_linux() {
    for flag in [&["--start", "manual"][..], &["--update"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_depot"))
            .arg("install")
            .args(flag)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flag:?}: {stderr}");
        assert!(
            stderr.contains("applies to a Windows service") && stderr.contains("systemctl disable"),
            "{flag:?}: {stderr}"
        );
    }
}

/// Runs `depot --data-dir <dir> <command>` to its end.
/// `depot stop` on a lock file that names a PID no instance can have — above `i32::MAX` (which an
/// `as i32` cast turns into -1: "every process"), 0 (our process group) or 1 (init) — refuses it
/// and signals nothing. Run inside a new PID namespace (`unshare --pid --fork`) with a bystander
/// process, so that a `kill(-1)` or `kill(0)` — what the code did before — can only reach the
/// bystander, never this test run, and the test sees it.
#[test]
fn stop_refuses_a_lock_file_pid_that_would_signal_other_processes() {
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .output();
    if !matches!(&probe, Ok(o) if o.status.success()) {
        eprintln!("skipping: cannot make a PID namespace (not root?): {probe:?}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lock_path = dir.path().join("depot.lock");
    // Held, as by a running depot; then the PID in it replaced.
    let _lock = winddown::LockFile::acquire(&lock_path).unwrap();
    for pid in [u64::from(u32::MAX), 2_147_483_648, 0, 1] {
        std::fs::write(&lock_path, format!("{pid}\n")).unwrap();
        let script = r#"sleep 30 & bystander=$!
"$DEPOT" --data-dir "$DATA" stop --timeout 2; echo "exit=$?"
if kill -0 "$bystander" 2>/dev/null; then echo bystander=alive; else echo bystander=signalled; fi
kill "$bystander" 2>/dev/null"#;
        let out = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "sh", "-c", script])
            .env("DEPOT", env!("CARGO_BIN_EXE_depot"))
            .env("DATA", dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stdout.contains("bystander=alive"),
            "PID {pid}: a bystander was signalled\n{stdout}{stderr}"
        );
        assert!(stdout.contains("exit=1"), "PID {pid}: {stdout}{stderr}");
        assert!(
            !stdout.contains("asked depot"),
            "PID {pid}: it claims to have signalled\n{stdout}"
        );
        assert!(
            stderr.contains(&format!(
                "names PID {pid}, which cannot be a running instance's"
            )) && stderr.contains("depot.lock"),
            "PID {pid}: {stderr}"
        );
    }
}

fn depot_command(dir: &std::path::Path, command: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_depot"))
        .arg("--data-dir")
        .arg(dir)
        .arg(command)
        .output()
        .unwrap()
}

/// Runs `cmd` with its stderr kept; kills it if it has not exited `within` (an old depot that
/// took a bad setting would serve for ever). Returns the exit code and stderr.
fn exit_within(cmd: &mut Command, within: Duration) -> (Option<i32>, String) {
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + within;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (code, stderr)
}

/// What Kubernetes puts in a pod next to a Service named `depot` (service links). The variables
/// are only set: nothing is sent to the address.
const SERVICE_LINKS: &[(&str, &str)] = &[
    ("DEPOT_SERVICE_HOST", "10.0.0.1"),
    ("DEPOT_SERVICE_PORT", "8080"),
    ("DEPOT_SERVICE_PORT_HTTP", "8080"),
    ("DEPOT_PORT", "tcp://10.0.0.1:8080"),
    ("DEPOT_PORT_8080_TCP", "tcp://10.0.0.1:8080"),
    ("DEPOT_PORT_8080_TCP_PROTO", "tcp"),
    ("DEPOT_PORT_8080_TCP_PORT", "8080"),
    ("DEPOT_PORT_8080_TCP_ADDR", "10.0.0.1"),
];

/// Issue #14 item 1: with service links in its environment depot starts, serves, stops and
/// reports its status; an unknown variable of another shape is a warning naming it, not an exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_service_links_do_not_stop_depot_and_unknown_variables_only_warn() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = SERVICE_LINKS.to_vec();
    env.push(("DEPOT_MAX_BODDY", "1"));
    let mut depot = Depot::start(dir.path(), &env);
    let http = client();
    let r = http
        .post(format!("{}/v1/streams/k8s/records", depot.base))
        .json(&json!({ "hello": "pod" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(read_all(&depot.base, "k8s").await.len(), 1);
    let log = depot.log_text();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("is not a depot setting"))
        .collect();
    assert!(
        warnings.len() == 1 && warnings[0].contains("DEPOT_MAX_BODDY"),
        "{log}"
    );
    assert!(warnings[0].contains("max_body_bytes"), "{log}");

    for command in ["status", "stop"] {
        let out = Command::new(env!("CARGO_BIN_EXE_depot"))
            .arg("--data-dir")
            .arg(dir.path())
            .arg(command)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{command}: {stderr}");
        assert!(
            stderr.contains("warning: environment variable DEPOT_MAX_BODDY")
                && !stderr.contains("DEPOT_SERVICE")
                && !stderr.contains("DEPOT_PORT"),
            "{command}: {stderr}"
        );
    }
    assert_eq!(
        tokio::task::block_in_place(|| depot.wait_exit(Duration::from_secs(10))),
        Some(0)
    );
}

/// Issue #14 item 8: a `DEPOT_*` variable that is not UTF-8 stops depot with a message naming it
/// (exit 2, no panic); one outside `DEPOT_*` is ignored and depot serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_utf8_variable_is_named_if_it_is_depots_and_ignored_otherwise() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let latin1 = OsStr::from_bytes(b"/etc/caf\xe9-token");
    let (code, stderr) = exit_within(
        Command::new(env!("CARGO_BIN_EXE_depot"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env("DEPOT_AUTH_TOKEN_FILE", latin1),
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("DEPOT_AUTH_TOKEN_FILE")
            && stderr.contains("not valid UTF-8")
            && !stderr.contains("panicked"),
        "{stderr}"
    );

    let depot = Depot::start_with(dir.path(), &[], |cmd| {
        cmd.env("LEGACY_LATIN1_NAME", latin1);
    });
    let r = client()
        .post(format!("{}/v1/streams/bytes/records", depot.base))
        .json(&json!({ "ok": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", depot.log_text());
}

/// Issue #14 items 7 and 9 through the real binary: settings out of range, or `durability = off`
/// with forwarding, stop depot at start with exit 2 and a message naming them (the old depot
/// panicked on the first, and started on the second).
#[test]
fn settings_out_of_range_or_in_conflict_stop_depot_at_start() {
    let dir = tempfile::tempdir().unwrap();
    // (variables, what the message must say)
    type Case = (
        &'static [(&'static str, &'static str)],
        &'static [&'static str],
    );
    let cases: &[Case] = &[
        (
            &[("DEPOT_COMMIT_QUEUE", "4294967296")],
            &["`commit_queue`", "1..=1048576"],
        ),
        (
            &[("DEPOT_FORWARD_STATEMENT_TIMEOUT_MS", "1073741824")],
            &[
                "`forward_statement_timeout_ms`",
                "1..=3600000",
                "2147483647",
            ],
        ),
        (
            &[
                ("DEPOT_DURABILITY", "off"),
                // Port 1 on loopback: nothing listens, nothing leaves the machine.
                (
                    "DEPOT_FORWARD_TO",
                    "postgres://depot@127.0.0.1:1/depot?sslmode=disable",
                ),
            ],
            &["durability", "forward_to", "cannot be used together"],
        ),
    ];
    for (env, expect) in cases {
        let (code, stderr) = exit_within(
            Command::new(env!("CARGO_BIN_EXE_depot"))
                .args(["--listen", "127.0.0.1:0", "--data-dir"])
                .arg(dir.path())
                .envs(env.iter().copied()),
            Duration::from_secs(20),
        );
        assert_eq!(code, Some(2), "{env:?}: {stderr}");
        for e in *expect {
            assert!(stderr.contains(e), "{env:?}: {e} missing from {stderr}");
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// `depot install --print` with `env` and `args`, in `dir`.
fn install_print(env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_depot"))
        .args(args)
        .args(["install", "--print"])
        .env_remove("DEPOT_CONFIG")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue #14 item 2: every setting `install` is given outside the config file reaches the unit
/// (the config file itself by its absolute path), and the unit still passes
/// `systemd-analyze verify`.
#[test]
fn install_carries_every_setting_from_the_environment_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("depot.toml");
    std::fs::write(
        &file,
        "forward_batch = 10\nforward_to = \"postgres://depot:pw@db/depot?sslmode=verify-full\"\n\
         max_read_limit = 5\n",
    )
    .unwrap();
    let (code, unit, stderr) = install_print(
        &[
            ("DEPOT_AUTH_TOKEN_FILE", "/etc/depot/token"),
            ("DEPOT_MAX_BODY_BYTES", "2097152"),
            ("DEPOT_MAX_READ_LIMIT", "50"),
            ("DEPOT_COMMIT_QUEUE", "100"),
            ("DEPOT_RETAIN_DELIVERED", "7d"),
            ("DEPOT_SIGTERM_BUDGET_MS", "40000"),
            ("DEPOT_LOG", "depot=debug,info"),
        ],
        &[
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "0.0.0.0:8080",
            "--data-dir",
            "/var/lib/depot-test",
            "--log-format",
            "json",
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    for line in [
        "Environment=DEPOT_AUTH_TOKEN_FILE=/etc/depot/token",
        "Environment=DEPOT_MAX_BODY_BYTES=2097152",
        "Environment=DEPOT_MAX_READ_LIMIT=50",
        "Environment=DEPOT_COMMIT_QUEUE=100",
        // The same duration, as depot writes it.
        "Environment=DEPOT_RETAIN_DELIVERED=1w",
        "Environment=DEPOT_SIGTERM_BUDGET_MS=40000",
        "Environment=DEPOT_LOG_FORMAT=json",
        "Environment=DEPOT_LOG=depot=debug,info",
        "Environment=WINDDOWN_STOP_BUDGET_MS=40000",
        "StateDirectory=depot-test",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "{line} missing from\n{unit}"
        );
    }
    let exec = unit.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
    for part in [
        "--listen 0.0.0.0:8080",
        &format!("--config {}", file.display()),
        "--data-dir /var/lib/depot-test",
    ] {
        assert!(exec.contains(part), "{part} missing from {exec}");
    }
    // What the file says stays in the file (the password included).
    assert!(
        !unit.contains("FORWARD") && !unit.contains("pw@"),
        "the file's settings leaked into the unit:\n{unit}"
    );
    assert!(
        stderr.contains("DEPOT_AUTH_TOKEN_FILE=/etc/depot/token"),
        "{stderr}"
    );
    verify_unit(&unit);
}

/// Issue #14 item 2: what cannot be carried makes `install` refuse, naming each setting and what
/// to do, and print (install) nothing; never the password.
#[test]
fn install_refuses_settings_it_cannot_carry_and_names_them() {
    let url = "postgres://depot:s3cret@db/depot?sslmode=verify-full";
    let (code, out, stderr) =
        install_print(&[("DEPOT_FORWARD_TO", url)], &["--data-dir", "/srv/depot"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(out.is_empty(), "{out}");
    for part in [
        "forward_to (from DEPOT_FORWARD_TO)",
        "--config FILE",
        "data_dir = /srv/depot (from --data-dir)",
        "/var/lib",
        "installed nothing",
    ] {
        assert!(stderr.contains(part), "{part} missing from {stderr}");
    }
    assert!(!stderr.contains("s3cret"), "{stderr}");

    let (code, _, stderr) = install_print(&[], &["--forward-to", url]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("forward_to (from --forward-to)") && !stderr.contains("s3cret"),
        "{stderr}"
    );

    // From the file, both are fine: the file goes with the service.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("depot.toml");
    std::fs::write(
        &file,
        format!("forward_to = \"{url}\"\ndata_dir = \"/var/lib/depot-file\"\n"),
    )
    .unwrap();
    let (code, unit, stderr) = install_print(&[], &["--config", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        unit.contains("StateDirectory=depot-file") && !unit.contains("s3cret"),
        "{unit}"
    );
}

/// `systemd-analyze verify` on `unit`, when systemd's tools are here.
fn verify_unit(unit: &str) {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED systemd-analyze verify: install Debian's `systemd` package to run it");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("depot.service");
    std::fs::write(&path, unit).unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}\n{unit}",
        String::from_utf8_lossy(&verify.stderr)
    );
}
