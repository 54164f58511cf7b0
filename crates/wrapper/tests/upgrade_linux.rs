//! `winddown upgrade --name NAME --binary PATH` against a stand-in `systemctl` (systemd does not
//! run here). The unit is the one `winddown install --print` renders; the stand-in runs its
//! `ExecStart=` (the real wrapper around the real stopprobe, behind a PROGRAM script that answers
//! `--version`), and like `Type=notify` returns from `start` only once the service is ready (the
//! `--ready-tcp` port answers, which is when the wrapper would send READY=1) or fails if it exits
//! first. `winddown upgrade` reads PROGRAM's path from that unit file.
#![cfg(target_os = "linux")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const FAKE_SYSTEMCTL: &str = r#"#!/bin/bash
set -u
D="$FAKE_SYSTEMD_DIR"
pidfile="$D/pid"
alive() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
case "$1" in
  start)
    alive && exit 0
    rm -f "$D/exit"
    cmd=$(sed -n 's/^ExecStart=//p' "$FAKE_UNIT_DIR/$2")
    ( bash -c "exec $cmd" >>"$D/service.log" 2>&1 &
      echo $! >"$pidfile"; wait $!; echo $? >"$D/exit" ) </dev/null >/dev/null 2>&1 &
    for _ in $(seq 400); do
      if [ -f "$D/exit" ]; then
        echo "Job for $2 failed because the control process exited with error code." >&2
        exit 1
      fi
      (exec 3<>"/dev/tcp/127.0.0.1/$FAKE_READY_PORT") 2>/dev/null && exit 0
      sleep 0.05
    done
    echo "Job for $2 failed because a timeout was exceeded." >&2
    exit 1 ;;
  stop)
    alive || exit 0
    kill -TERM "$(cat "$pidfile")"
    for _ in $(seq 1200); do [ -f "$D/exit" ] && exit 0; sleep 0.05; done
    exit 1 ;;
  show)
    if [ -f "$FAKE_UNIT_DIR/$2" ]; then echo "LoadState=loaded"; else echo "LoadState=not-found"; fi
    if alive && [ ! -f "$D/exit" ]; then
      echo "ActiveState=active"; echo "SubState=running"; echo "MainPID=$(cat "$pidfile")"
    elif [ -f "$D/exit" ] && [ "$(cat "$D/exit")" != 0 ]; then
      echo "ActiveState=failed"; echo "SubState=failed"; echo "MainPID=0"; echo "Result=exit-code"
      echo "ExecMainExitTimestamp=now"; echo "ExecMainCode=1"; echo "ExecMainStatus=$(cat "$D/exit")"
    else
      echo "ActiveState=inactive"; echo "SubState=dead"; echo "MainPID=0"; echo "Result=success"
    fi ;;
  status)
    echo "$2 (stand-in)"
    tail -n 5 "$D/service.log" 2>/dev/null
    alive; exit $(( $? == 0 ? 0 : 3 )) ;;
  *) exit 0 ;;
esac
"#;

fn executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A PROGRAM: answers `--version` as `version`, otherwise runs `body`.
fn program(path: &Path, version: &str, body: &str) {
    executable(
        path,
        &format!(
            "#!/bin/bash\n[ \"$1\" = --version ] && {{ echo '{version}'; exit 0; }}\n{body}\n"
        ),
    );
}

struct Stage {
    _dir: tempfile::TempDir,
    root: PathBuf,
    program: PathBuf,
    port: u16,
}

impl Stage {
    fn new() -> Stage {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        for sub in ["bin", "new", "units", "systemd", "logs"] {
            std::fs::create_dir(root.join(sub)).unwrap();
        }
        let program_path = root.join("bin/server");
        program(&program_path, "server 1", &format!("exec {PROBE} \"$@\""));
        executable(&root.join("systemctl"), FAKE_SYSTEMCTL);
        let port = free_port();
        let marker = root.join("marker");
        let out = Command::new(WRAPPER)
            .args([
                "install",
                "--print",
                "--user",
                "root",
                "--name",
                "upg",
                "--stop-timeout",
                "5",
            ])
            .args(["--ready-tcp", &format!("127.0.0.1:{port}"), "--log-dir"])
            .arg(root.join("logs"))
            .arg("--")
            .arg(&program_path)
            .args(["--listen", &port.to_string(), "--listen-after-ms", "300"])
            .args(["--drain-ms", "300", "--marker", path_str(&marker)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(root.join("units/upg.service"), &out.stdout).unwrap();
        Stage {
            _dir: dir,
            program: program_path,
            root,
            port,
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "FAKE_SYSTEMD_DIR",
                path_str(&self.root.join("systemd")).to_owned(),
            ),
            (
                "FAKE_UNIT_DIR",
                path_str(&self.root.join("units")).to_owned(),
            ),
            ("FAKE_READY_PORT", self.port.to_string()),
        ]
    }

    fn systemctl(&self, args: &[&str]) -> bool {
        Command::new(self.root.join("systemctl"))
            .args(args)
            .envs(self.env())
            .status()
            .unwrap()
            .success()
    }

    /// `winddown upgrade --name upg --binary new …`: (exit code, output, wall time).
    fn upgrade(&self, new: &Path, ready_secs: &str) -> (i32, String, Duration) {
        let started = Instant::now();
        let out = Command::new(WRAPPER)
            .args([
                "upgrade",
                "--name",
                "upg",
                "--ready-timeout",
                ready_secs,
                "--binary",
            ])
            .arg(new)
            .arg("--systemctl")
            .arg(self.root.join("systemctl"))
            .arg("--unit-dir")
            .arg(self.root.join("units"))
            .envs(self.env())
            .output()
            .unwrap();
        let took = started.elapsed();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{text}(took {:.1} s)", took.as_secs_f64());
        (out.status.code().unwrap_or(-1), text, took)
    }

    fn pid(&self) -> u32 {
        std::fs::read_to_string(self.root.join("systemd/pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn serves(&self) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }
}

#[test]
fn an_upgrade_replaces_the_wrapped_program_and_a_new_one_that_exits_is_rolled_back() {
    let s = Stage::new();
    assert!(s.systemctl(&["start", "upg.service"]));
    assert!(s.serves());
    let first = s.pid();
    let original = std::fs::read(&s.program).unwrap();

    // A good new PROGRAM: the old one drains on TERM (its marker), the new one serves.
    let good = s.root.join("new/server");
    program(&good, "server 2", &format!("exec {PROBE} \"$@\""));
    let (code, out, _) = s.upgrade(&good, "20");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("upgraded upg: server 2 runs (PID"), "{out}");
    let marker = std::fs::read_to_string(s.root.join("marker")).unwrap();
    assert_eq!(
        marker_field(&marker, "signal"),
        "TERM",
        "the old PROGRAM drained: {marker}"
    );
    assert_eq!(
        std::fs::read(&s.program).unwrap(),
        std::fs::read(&good).unwrap()
    );
    assert_eq!(
        std::fs::read(s.root.join("bin/server.old")).unwrap(),
        original,
        "the old PROGRAM is kept as server.old"
    );
    let second = s.pid();
    assert_ne!(second, first);
    assert!(s.serves(), "the new PROGRAM serves");

    // A new PROGRAM that answers --version and exits at once: rolled back, the old one serves.
    let bad = s.root.join("new/broken");
    program(&bad, "server 3", "echo 'broken: cannot start' >&2\nexit 7");
    let serving = std::fs::read(&s.program).unwrap();
    let (code, out, _) = s.upgrade(&bad, "20");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("upgrade rolled back: the new binary did not start"),
        "{out}"
    );
    assert!(
        out.contains("last exit: exited with status 7"),
        "the wrapper passed 7 on: {out}"
    );
    assert!(
        out.contains("broken: cannot start"),
        "PROGRAM's log's last lines: {out}"
    );
    assert!(
        out.contains("the old binary is back in place and runs"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(&s.program).unwrap(),
        serving,
        "the old PROGRAM is back"
    );
    assert_ne!(s.pid(), second);
    assert!(s.serves(), "the old PROGRAM serves again");

    // A binary that does not answer --version changes nothing.
    let (code, out, _) = s.upgrade(&s.root.join("new/missing"), "20");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("cannot be run") && out.contains("nothing was changed"),
        "{out}"
    );
    assert!(s.systemctl(&["stop", "upg.service"]));
}

#[test]
fn a_service_that_is_not_a_wrapped_program_is_refused() {
    let s = Stage::new();
    std::fs::write(
        s.root.join("units/upg.service"),
        "[Service]\nExecStart=/usr/bin/depot run --listen 127.0.0.1:1\n",
    )
    .unwrap();
    let (code, out, _) = s.upgrade(&s.program, "5");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("does not run `winddown run … -- PROGRAM`"),
        "{out}"
    );
}
