//! The issue's own shape, for real: a Go HTTP service (tests/goservice/main.go) wrapped by
//! `winddown run`, under load, stopped with SIGTERM through the wrapper: every request that got an
//! answer is in the file the service fsyncs after `http.Server.Shutdown`.
//!
//! Needs `go` (Debian's golang-go); skips with a message without it, unless `REQUIRE_GO_TESTS=1`
//! (set by CI), which makes a missing `go` a failure.
#![cfg(target_os = "linux")]

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

fn build_go(out: &Path) -> bool {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/goservice/main.go");
    let built = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(out)
        .arg(&source)
        // Offline and with this machine's toolchain: no module downloads, no toolchain switch.
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GO111MODULE", "off")
        .env(
            "GOCACHE",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("gocache"),
        )
        .status();
    match built {
        Ok(status) if status.success() => true,
        Ok(status) => panic!("go build of {} failed: {status}", source.display()),
        Err(e) => {
            assert!(
                std::env::var_os("REQUIRE_GO_TESTS").is_none(),
                "go is missing ({e}) and REQUIRE_GO_TESTS is set: apt-get install golang-go"
            );
            eprintln!("skipped: no go toolchain ({e}); apt-get install golang-go to run it");
            false
        }
    }
}

/// One GET; the id counts as answered only when the whole answer came back.
fn get(address: &str, id: u64) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(address) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(15)));
    let request = format!("GET /req?id={id} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.starts_with("HTTP/1.1 200") && body.ends_with(&format!("ok {id}\n"))
}

#[test]
fn a_wrapped_go_service_keeps_every_answered_request() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("goservice");
    if !build_go(&exe) {
        return;
    }
    let peer = NotifyPeer::bind(dir.path());
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let out = dir.path().join("answered.txt");
    let mut wrapper = Command::new(WRAPPER)
        .args(["run", "--name", "goservice", "--stop-timeout", "10"])
        .args(["--ready-http", &format!("http://{address}/healthz")])
        .args(["--log-dir", path_str(dir.path())])
        .arg("--")
        .arg(&exe)
        .args(["-addr", &address, "-out", path_str(&out), "-delay", "20ms"])
        .env("NOTIFY_SOCKET", &peer.path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    peer.wait_for("READY=1", Duration::from_secs(20));

    let answered = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(AtomicU64::new(0));
    let stopped = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (answered, next, stopped, address) = (
                answered.clone(),
                next.clone(),
                stopped.clone(),
                address.clone(),
            );
            std::thread::spawn(move || {
                let mut refused_after_stop = 0;
                while refused_after_stop < 20 {
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    if get(&address, id) {
                        answered.lock().unwrap().push(id);
                    } else if stopped.load(Ordering::Relaxed) {
                        refused_after_stop += 1;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    let before_stop = answered.lock().unwrap().len();
    let t0 = Instant::now();
    signal(wrapper.id(), Signal::SIGTERM);
    stopped.store(true, Ordering::Relaxed);
    let status = wait_exit(&mut wrapper, Duration::from_secs(20));
    let took = t0.elapsed();
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(status.code(), Some(0), "the Go service's own exit code");
    let written: HashSet<u64> = std::fs::read_to_string(&out)
        .expect("the service wrote its file")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let answered = answered.lock().unwrap();
    assert!(
        before_stop > 20,
        "the load ran: {before_stop} answers before the stop"
    );
    let missing: Vec<_> = answered.iter().filter(|id| !written.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "answered but not in the file: {missing:?}"
    );
    let log = std::fs::read_to_string(dir.path().join("goservice.log")).unwrap();
    assert!(
        log.contains("goservice got terminated: shutting down"),
        "{log}"
    );
    println!(
        "figures: {} requests answered ({} after SIGTERM), all in the file; stop took {:.0} ms",
        answered.len(),
        answered.len() - before_stop,
        took.as_secs_f64() * 1000.0
    );
}
