//! The generated unit, checked by systemd itself: `systemd-analyze verify` parses it as systemd
//! would (quoting, specifiers, every setting) and checks that `ExecStart`'s executable exists, and
//! `systemd-analyze security --offline` rates its hardening. Neither needs systemd to be running.
//!
//! Without `systemd-analyze` (Debian's `systemd` package) the tests say so and pass.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use winddown::service::ServiceSpec;
use winddown::service::systemd::{
    ServiceUser, SystemdOptions, quote_exec_arg, quote_exec_path, unit_file,
};

fn systemd_analyze() -> Option<PathBuf> {
    let found = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!(
            "SKIPPED: systemd-analyze not found; install Debian's `systemd` package to check the \
             generated unit with systemd's own parser"
        );
    }
    found
}

/// A real executable at a path with a space, `%` and `$` in it.
fn awkward_executable(dir: &Path) -> PathBuf {
    let bin = dir.join("my tools/50% $HOME");
    std::fs::create_dir_all(&bin).unwrap();
    let exe = bin.join("depot");
    std::fs::write(&exe, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    exe
}

fn spec(executable: &Path) -> ServiceSpec {
    ServiceSpec::new("depot-verify", executable)
        .display_name("depot record store (100% durable)")
        .description("verified by systemd-analyze")
        .arguments([
            "serve",
            "--data",
            "/var/lib/depot-verify",
            "--motd=it's \"50%\" of $HOME; \\o/",
            ";",
            "",
        ])
        .data_dir("/var/lib/depot-verify")
        .stop_budget(Duration::from_secs(30))
        .env("RUST_LOG", "info,depot=debug")
        .env("GREETING", "hello world, 100% \"quoted\" $NOT_EXPANDED")
}

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .unwrap()
}

/// `systemd-analyze verify` on `text` written as `depot-verify.service`: returns its exit status
/// and the lines it printed about this unit.
fn verify(analyze: &Path, dir: &Path, text: &str) -> (bool, Vec<String>) {
    let path = dir.join("depot-verify.service");
    std::fs::write(&path, text).unwrap();
    let out = run(analyze, &["verify", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let about_us = stderr
        .lines()
        .chain(String::from_utf8_lossy(&out.stdout).lines())
        .filter(|l| l.contains("depot-verify"))
        .map(str::to_owned)
        .collect();
    (out.status.success(), about_us)
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let exe = awkward_executable(dir.path());
    let text = unit_file(&spec(&exe), &SystemdOptions::new()).unwrap();
    let (ok, complaints) = verify(&analyze, dir.path(), &text);
    assert!(ok && complaints.is_empty(), "{complaints:#?}\n{text}");

    // A named user and a data directory outside /var/lib.
    let named = SystemdOptions::new().user(ServiceUser::Named {
        user: "root".into(),
        group: None,
    });
    let text = unit_file(&spec(&exe).data_dir("/srv/depot data"), &named).unwrap();
    let (ok, complaints) = verify(&analyze, dir.path(), &text);
    assert!(ok && complaints.is_empty(), "{complaints:#?}\n{text}");
}

/// The check above can fail: the same unit with the executable quoted like an argument (`$`
/// doubled, which systemd does not undo in the executable's path) names a file that does not
/// exist, and systemd says so.
#[test]
fn systemd_analyze_verify_catches_a_misquoted_executable() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let exe = awkward_executable(dir.path());
    let text = unit_file(&spec(&exe), &SystemdOptions::new()).unwrap();
    let exe = exe.to_str().unwrap();
    let right = format!("ExecStart={} ", quote_exec_path(exe));
    assert!(text.contains(&right), "{text}");
    let wrong = text.replace(&right, &format!("ExecStart={} ", quote_exec_arg(exe)));
    let (ok, complaints) = verify(&analyze, dir.path(), &wrong);
    assert!(
        !ok,
        "systemd-analyze accepted a missing executable: {complaints:#?}"
    );
    assert!(
        complaints.iter().any(|l| l.contains("is not executable")),
        "{complaints:#?}"
    );
}

/// `systemd-analyze security --offline` rates the hardening: at most 2.5 ("OK") on its 0–10
/// exposure scale. Dropping the sandboxing settings pushes it above.
#[test]
fn systemd_analyze_security_rates_the_unit_ok() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let exe = awkward_executable(dir.path());
    let text = unit_file(&spec(&exe), &SystemdOptions::new()).unwrap();
    let path = dir.path().join("depot-verify.service");
    std::fs::write(&path, &text).unwrap();
    let args = [
        "security",
        "--offline=true",
        "--threshold=25",
        "--no-pager",
        path.to_str().unwrap(),
    ];
    let out = run(&analyze, &args);
    let report = String::from_utf8_lossy(&out.stdout);
    let overall = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("(none)");
    assert!(
        out.status.success(),
        "{overall}\n{}\n{report}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Sensitivity: the unit without its hardening block is rated above the threshold.
    let bare: String = text
        .lines()
        .filter(|l| {
            !l.starts_with("Protect")
                && !l.starts_with("Private")
                && !l.starts_with("Restrict")
                && !l.starts_with("SystemCall")
                && !l.starts_with("CapabilityBoundingSet")
                && !l.starts_with("NoNewPrivileges")
                && !l.starts_with("DynamicUser")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, bare).unwrap();
    let out = run(&analyze, &args);
    assert!(
        !out.status.success(),
        "an unhardened unit passed the threshold"
    );
}
