//! `winddown install --print`: the systemd unit for `winddown run … -- PROGRAM`, with the stop
//! settings derived from the stop timeout, and checked by `systemd-analyze verify` (systemd's own
//! parser; it also checks that ExecStart's executable exists). Without `systemd-analyze` that
//! check says so and passes.
#![cfg(target_os = "linux")]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

#[test]
fn install_print_writes_a_notify_unit_with_the_stop_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // A relative PROGRAM and log directory: the unit must hold absolute paths.
    let probe_dir = std::path::Path::new(PROBE).parent().unwrap();
    let out = Command::new(WRAPPER)
        .current_dir(probe_dir)
        .args([
            "install",
            "--print",
            "--name",
            "probe-verify",
            "--stop-timeout",
            "12",
        ])
        .args([
            "--user",
            "root",
            "--log-dir",
            "logs",
            "--env",
            "MODE=a b",
            "--ready-tcp",
            "127.0.0.1:9",
        ])
        .args(["--", "./stopprobe", "--drain-ms", "100"])
        .output()
        .unwrap();
    let unit = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exec = unit.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
    let logs = probe_dir.join("logs");
    for want in [
        format!("ExecStart={WRAPPER} run --name probe-verify --stop-timeout 12 "),
        "--ready-tcp 127.0.0.1:9".to_owned(),
        format!("--log-dir {}", logs.display()),
        "--env \"MODE=a b\"".to_owned(),
        format!("-- {}/stopprobe --drain-ms 100", probe_dir.display()),
    ] {
        assert!(exec.contains(&want), "{want:?} not in {exec}");
    }
    for want in [
        "Type=notify",
        "KillMode=mixed",
        // Budget 12 s + 2 s for the wrapper; the manager waits 5 s more.
        "Environment=WINDDOWN_STOP_BUDGET_MS=14000",
        "TimeoutStopSec=19s",
        "User=root",
    ] {
        assert!(unit.lines().any(|l| l == want), "{want:?} not in\n{unit}");
    }

    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    let Some(analyze) = analyze else {
        eprintln!("SKIPPED: systemd-analyze not found (Debian's `systemd` package)");
        return;
    };
    let path = dir.path().join("probe-verify.service");
    std::fs::write(&path, unit.as_bytes()).unwrap();
    let verified = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verified.stderr);
    let about: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("probe-verify"))
        .collect();
    assert!(
        verified.status.success() && about.is_empty(),
        "systemd-analyze verify: {said}"
    );
}

#[test]
fn install_refuses_windows_only_settings_on_linux() {
    let out = Command::new(WRAPPER)
        .args(["install", "--print", "--start", "manual", "--", PROBE])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--start applies to a Windows service"));
}
