//! `winddown run -- stopprobe` end to end on Linux: real processes, real signals, a real
//! `NOTIFY_SOCKET` peer. Each test prints the figures it measures (never asserted beyond the
//! behaviour's own tolerance).
#![cfg(target_os = "linux")]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

/// SIGTERM → TERM to PROGRAM at once; it drains, writes its marker, exits 0; the grandchild it
/// left in a session of its own (out of reach of the group signal) is killed with the tree.
#[test]
fn graceful_stop_passes_the_signal_waits_and_ends_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (marker, gc, started) = (
        dir.path().join("marker"),
        dir.path().join("gc"),
        dir.path().join("started"),
    );
    let logs = dir.path().join("logs");
    let mut wrapper = wrapped(
        &[
            "--name",
            "probe",
            "--stop-timeout",
            "5",
            "--log-dir",
            path_str(&logs),
        ],
        &[
            "--marker",
            path_str(&marker),
            "--drain-ms",
            "400",
            "--grandchild",
            path_str(&gc),
            "--started",
            path_str(&started),
            "--lines-on-stop",
            "20",
        ],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_for_file(&started, Duration::from_secs(10));
    let grandchild: u32 = wait_for_file(&gc, Duration::from_secs(5))
        .trim()
        .parse()
        .unwrap();
    assert!(alive(grandchild));

    let sent_at = now_unix_ns();
    let t0 = Instant::now();
    signal(wrapper.id(), Signal::SIGTERM);
    let status = wait_exit(&mut wrapper, Duration::from_secs(10));
    let gone_at = now_unix_ns();
    let took = t0.elapsed();

    assert_eq!(status.code(), Some(0), "PROGRAM's exit code, passed on");
    let marker = std::fs::read_to_string(&marker).expect("PROGRAM wrote its marker");
    assert_eq!(marker_field(&marker, "signal"), "TERM");
    let received: u128 = marker_field(&marker, "received_unix_ns").parse().unwrap();
    let latency_ms = (received.saturating_sub(sent_at)) as f64 / 1e6;
    assert!(!alive(grandchild), "the grandchild outlived the stop");
    // Everything PROGRAM wrote while it drained is in the log.
    let log = std::fs::read_to_string(logs.join("probe.log")).unwrap();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("stderr draining "))
            .count(),
        20
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(logs.join("probe.last-stop.json")).unwrap())
            .unwrap();
    assert_eq!(report["signals"][0]["signal"], "TERM");
    assert_eq!(report["exit_code"], 0);
    assert_eq!(report["program_killed"], false);
    assert_eq!(
        report["tree_killed"], true,
        "the grandchild had to be killed"
    );
    assert_eq!(report["drain"]["reason"], "sig_term");
    let drained = report["drained_in_ms"].as_u64().unwrap();
    assert!((400..2000).contains(&drained), "drained_in_ms {drained}");
    let exited: u128 = marker_field(&marker, "written_unix_ns").parse().unwrap();
    println!(
        "figures: SIGTERM to PROGRAM's handler {latency_ms:.2} ms; PROGRAM drained {drained} ms; \
         wrapper gone {:.1} ms after PROGRAM's last write (stop took {:.0} ms)",
        gone_at.saturating_sub(exited) as f64 / 1e6,
        took.as_secs_f64() * 1000.0
    );
}

/// A PROGRAM that ignores its stop signals is killed, with its grandchild, at the stop timeout.
#[test]
fn stubborn_program_and_its_tree_are_killed_at_the_stop_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (gc, started) = (dir.path().join("gc"), dir.path().join("started"));
    let mut wrapper = wrapped(
        &[
            "--stop-timeout",
            "2",
            "--stop-signal",
            "TERM,INT",
            "--log-dir",
            path_str(dir.path()),
        ],
        &[
            "--ignore",
            "--grandchild",
            path_str(&gc),
            "--started",
            path_str(&started),
        ],
    )
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let program: u32 = wait_for_file(&started, Duration::from_secs(10))
        .trim()
        .parse()
        .unwrap();
    let grandchild: u32 = wait_for_file(&gc, Duration::from_secs(5))
        .trim()
        .parse()
        .unwrap();
    let t0 = Instant::now();
    signal(wrapper.id(), Signal::SIGTERM);
    let status = wait_exit(&mut wrapper, Duration::from_secs(10));
    let took = t0.elapsed().as_secs_f64();
    assert_eq!(status.code(), Some(128 + 9), "killed by SIGKILL: 128+9");
    assert!(
        (1.5..=2.5).contains(&took),
        "stopped after {took:.3} s, not 2 ± 0.5 s"
    );
    assert!(!alive(program) && !alive(grandchild));
    let log = std::fs::read_to_string(dir.path().join("stopprobe.log")).unwrap();
    assert!(
        log.contains("ignoring TERM") && log.contains("ignoring INT"),
        "both signals of the list were sent:\n{log}"
    );
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("stopprobe.last-stop.json")).unwrap(),
    )
    .unwrap();
    let second = report["signals"][1]["after_stop_ms"].as_u64().unwrap();
    assert!(
        (900..1300).contains(&second),
        "INT sent at {second} ms, not half the timeout"
    );
    assert_eq!(report["program_killed"], true);
    println!("figures: stubborn PROGRAM gone {took:.3} s after SIGTERM (stop timeout 2 s)");
}

/// PROGRAM crashing with a code ends the wrapper with that code, and what it left is ended.
#[test]
fn a_crash_code_is_passed_through_and_leftovers_are_ended() {
    let dir = tempfile::tempdir().unwrap();
    let gc = dir.path().join("gc");
    let t0 = Instant::now();
    let mut wrapper = wrapped(
        &[],
        &[
            "--crash",
            "7",
            "--crash-after-ms",
            "300",
            "--grandchild",
            path_str(&gc),
        ],
    )
    .stderr(Stdio::null())
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    let grandchild: u32 = wait_for_file(&gc, Duration::from_secs(10))
        .trim()
        .parse()
        .unwrap();
    let status = wait_exit(&mut wrapper, Duration::from_secs(10));
    assert_eq!(status.code(), Some(7));
    assert!(
        !alive(grandchild),
        "the grandchild outlived PROGRAM's crash"
    );
    println!(
        "figures: crash to wrapper gone: {:.0} ms after start (crash at 300 ms)",
        t0.elapsed().as_secs_f64() * 1000.0
    );
}

/// `READY=1` reaches systemd only once PROGRAM's port answers; the stop then reports progress.
#[test]
fn ready_only_once_the_port_answers() {
    let dir = tempfile::tempdir().unwrap();
    let peer = NotifyPeer::bind(dir.path());
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let marker = dir.path().join("marker");
    let t0 = Instant::now();
    let mut wrapper = wrapped(
        &["--ready-tcp", &address, "--stop-timeout", "5"],
        &[
            "--listen",
            &port.to_string(),
            "--listen-after-ms",
            "1500",
            "--marker",
            path_str(&marker),
            "--drain-ms",
            "1500",
        ],
    )
    .env("NOTIFY_SOCKET", &peer.path)
    .stderr(Stdio::null())
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    let ready = peer.wait_for("READY=1", Duration::from_secs(10));
    assert!(
        ready.duration_since(t0) >= Duration::from_millis(1400),
        "READY=1 after {:?}, before the port opened",
        ready.duration_since(t0)
    );
    std::net::TcpStream::connect(&address).expect("the port answers once READY=1 came");
    let before: Vec<_> = peer
        .messages()
        .into_iter()
        .filter(|(at, _)| *at < ready)
        .collect();
    assert!(
        before
            .iter()
            .any(|(_, m)| m.contains("STATUS=starting: waiting")),
        "{before:?}"
    );
    signal(wrapper.id(), Signal::SIGTERM);
    let status = wait_exit(&mut wrapper, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    peer.wait_for("STOPPING=1", Duration::from_secs(1));
    let extends = peer
        .messages()
        .iter()
        .filter(|(_, m)| m.contains("EXTEND_TIMEOUT_USEC="))
        .count();
    assert!(
        extends >= 3,
        "progress kept reaching systemd while PROGRAM drained 1.5 s: {extends}"
    );
    assert!(
        peer.messages()
            .iter()
            .any(|(_, m)| m.contains("waiting for PROGRAM"))
    );
    println!(
        "figures: READY=1 {:.0} ms after start (port opened at 1500 ms)",
        ready.duration_since(t0).as_secs_f64() * 1000.0
    );
}

/// Bad input: a missing PROGRAM and an unwritable log directory are clear errors, and nothing
/// reports ready.
#[test]
fn bad_input_is_named_before_anything_reports_ready() {
    let dir = tempfile::tempdir().unwrap();
    let peer = NotifyPeer::bind(dir.path());
    let out = Command::new(WRAPPER)
        .args(["run", "--", "/nonexistent/prog", "x"])
        .env("NOTIFY_SOCKET", &peer.path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(127), "{stderr}");
    assert!(
        stderr.contains("cannot start `/nonexistent/prog`: no such program (no file at that path)"),
        "{stderr}"
    );
    // A bare name is looked up on PATH, and the error says which.
    let out = Command::new(WRAPPER)
        .args(["run", "--", "winddown-no-such-program"])
        .env("NOTIFY_SOCKET", &peer.path)
        .env("PATH", "/nonexistent-bin")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(127), "{stderr}");
    assert!(
        stderr.contains("no such program (give a path, or put it on PATH: /nonexistent-bin)"),
        "{stderr}"
    );

    let text = dir.path().join("notexec");
    std::fs::write(&text, "just text").unwrap();
    let out = Command::new(WRAPPER)
        .args(["run", "--"])
        .arg(&text)
        .env("NOTIFY_SOCKET", &peer.path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(126), "{stderr}");
    assert!(stderr.contains("permission denied"), "{stderr}");

    let started = dir.path().join("started");
    let out = wrapped(
        &["--log-dir", "/proc/version/logs"],
        &["--started", path_str(&started)],
    )
    .env("NOTIFY_SOCKET", &peer.path)
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("/proc/version/logs (--log-dir) cannot be written"),
        "{stderr}"
    );
    assert!(
        !started.exists(),
        "PROGRAM was started despite the unwritable log directory"
    );

    let out = Command::new(WRAPPER)
        .args(["run", "--bogus", "--", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bogus"));

    std::thread::sleep(Duration::from_millis(100));
    assert!(peer.first("READY=1").is_none(), "{:?}", peer.messages());
}

/// A PROGRAM writing as fast as it can: every line is in the rotated files, each file within
/// its size, and the lines it writes while stopping too.
#[test]
fn log_rotation_under_a_fast_writer_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let started = dir.path().join("started");
    const LINES: u64 = 200_000;
    let t0 = Instant::now();
    let mut wrapper = wrapped(
        &[
            "--name",
            "fast",
            "--log-dir",
            path_str(&logs),
            "--log-max-bytes",
            "1000000",
            "--log-keep",
            "50",
        ],
        &[
            "--spew",
            &LINES.to_string(),
            "--started",
            path_str(&started),
            "--lines-on-stop",
            "100",
            "--drain-ms",
            "200",
        ],
    )
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    wait_for_file(&started, Duration::from_secs(10));
    // The spew is done once its last line is in the log.
    let until = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(logs.join("fast.log"))
        .unwrap_or_default()
        .contains("started")
    {
        assert!(Instant::now() < until, "the spew never reached the log");
        std::thread::sleep(Duration::from_millis(20));
    }
    let spewed = t0.elapsed();
    signal(wrapper.id(), Signal::SIGTERM);
    assert_eq!(
        wait_exit(&mut wrapper, Duration::from_secs(10)).code(),
        Some(0)
    );
    let mut spew = Vec::new();
    let mut draining = 0;
    let mut files = 0;
    let mut bytes = 0;
    for n in (1..=50)
        .rev()
        .map(|n| format!("fast.log.{n}"))
        .chain(["fast.log".to_owned()])
    {
        let Ok(body) = std::fs::read_to_string(logs.join(&n)) else {
            continue;
        };
        files += 1;
        bytes += body.len();
        assert!(body.len() <= 1_000_000, "{n} is {} bytes", body.len());
        for line in body.lines() {
            if let Some(rest) = line.split_once(" stdout spew ") {
                spew.push(rest.1[..8].parse::<u64>().unwrap());
            } else if line.contains(" stderr draining ") {
                draining += 1;
            }
        }
    }
    assert_eq!(
        spew.len() as u64,
        LINES,
        "lines lost or doubled across {files} files"
    );
    assert!(
        spew.windows(2).all(|w| w[1] == w[0] + 1),
        "lines out of order"
    );
    assert_eq!(draining, 100, "lines written while stopping");
    assert!(files >= 10, "rotated into {files} files only");
    println!(
        "figures: {LINES} lines ({:.1} MB with timestamps) logged in {:.2} s, {files} files",
        bytes as f64 / 1e6,
        spewed.as_secs_f64()
    );
}

/// As PID 1 of a PID namespace, the wrapper reaps orphans that exit (no zombies pile up) and
/// still stops PROGRAM on SIGTERM.
#[test]
fn as_pid_1_it_reaps_orphans_and_stops_on_sigterm() {
    if std::fs::metadata("/proc/self/ns/pid").is_err()
        || Command::new("unshare").arg("--version").output().is_err()
    {
        eprintln!("skipped: needs unshare(1) and PID namespaces");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spawned = dir.path().join("spawned");
    // 20 orphans: each `sleep` is re-parented to PID 1 (the wrapper) when its subshell exits,
    // and exits 0.2 s later.
    let script = format!(
        "for i in $(seq 20); do (sleep 0.2 &); done; echo $$ > {}; exec sleep 100",
        path_str(&spawned)
    );
    let mut unshare = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            WRAPPER,
            "run",
            "--stop-timeout",
            "3",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&spawned, Duration::from_secs(10));
    // The wrapper: the child of unshare (seen from this namespace).
    let wrapper: u32 = std::fs::read_to_string(format!(
        "/proc/{}/task/{}/children",
        unshare.id(),
        unshare.id()
    ))
    .unwrap()
    .split_whitespace()
    .next()
    .expect("unshare's child")
    .parse()
    .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let zombies: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                let rest: Vec<&str> = s[s.rfind(')').unwrap() + 2..].split(' ').collect();
                rest[0] == "Z" && rest[1] == wrapper.to_string()
            })
        })
        .collect();
    assert!(zombies.is_empty(), "unreaped orphans of PID 1: {zombies:?}");
    signal(wrapper, Signal::SIGTERM);
    let status = wait_exit(&mut unshare, Duration::from_secs(10));
    assert_eq!(
        status.code(),
        Some(128 + 15),
        "sleep killed by the TERM passed on"
    );
}

/// A second Ctrl+C (SIGINT) hurries the stop as the library does: the wait for PROGRAM is cut
/// short and its tree is killed at once, long before the stop timeout.
#[test]
fn a_second_interrupt_kills_the_tree_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wrapper, program) = wrap_stubborn(dir.path(), "20");
    signal(wrapper.id(), Signal::SIGINT);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        alive(program),
        "the first interrupt only asks PROGRAM to stop"
    );
    let t0 = Instant::now();
    signal(wrapper.id(), Signal::SIGINT);
    let status = wait_exit(&mut wrapper, Duration::from_secs(10));
    let took = t0.elapsed();
    assert_eq!(status.code(), Some(128 + 9));
    assert!(!alive(program));
    assert!(
        took < Duration::from_secs(3),
        "second interrupt to exit: {took:?}"
    );
    println!(
        "figures: second interrupt to wrapper gone: {:.0} ms",
        took.as_secs_f64() * 1000.0
    );
}

/// The wrapper SIGKILLed, so that no drain can run: PROGRAM dies with it (`PR_SET_PDEATHSIG`),
/// instead of running on as an orphan nobody will stop.
#[test]
fn program_dies_with_a_sigkilled_wrapper() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wrapper, program) = wrap_stubborn(dir.path(), "5");
    // Long enough for the runtime's threads to have come and gone around the start.
    std::thread::sleep(Duration::from_millis(500));
    assert!(alive(program), "PROGRAM died before the wrapper did");

    let t0 = Instant::now();
    signal(wrapper.id(), Signal::SIGKILL);
    wrapper.wait().unwrap();
    while alive(program) && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let survived = alive(program);
    if survived {
        signal(program, Signal::SIGKILL);
    }
    assert!(
        !survived,
        "PROGRAM (pid {program}) outlived the SIGKILLed wrapper by 3 s"
    );
    println!(
        "figures: PROGRAM gone {:.1} ms after SIGKILL to the wrapper",
        t0.elapsed().as_secs_f64() * 1000.0
    );
}

/// The wrapper around a stopprobe that ignores stop signals, once that has started; returns the
/// wrapper and PROGRAM's pid.
fn wrap_stubborn(dir: &std::path::Path, stop_timeout: &str) -> (std::process::Child, u32) {
    let started = dir.join("started");
    let wrapper = wrapped(
        &["--stop-timeout", stop_timeout],
        &["--ignore", "--started", path_str(&started)],
    )
    .stderr(Stdio::null())
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    let program = wait_for_file(&started, Duration::from_secs(10))
        .trim()
        .parse()
        .unwrap();
    (wrapper, program)
}
