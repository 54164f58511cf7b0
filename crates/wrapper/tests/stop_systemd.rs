//! `ServiceManager::stop` under systemd, end to end with real processes: the real `winddown`
//! binary hosting the real `stopprobe`, started with a real `NOTIFY_SOCKET` peer owned by the
//! test. systemd does not run here, so a stand-in `systemctl` stands between them as systemd
//! would: `stop --no-block` sends `SIGTERM` to the main PID, and `show` reports the last
//! `STATUS=` the peer received and `ActiveState` from whether that PID still lives.
#![cfg(target_os = "linux")]

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{path_str, wait_exit, wrapped};
use winddown::service::{ServiceManager, State, Systemd};

/// The stand-in: what systemd would do and say for the unit whose main PID is in `$D/pid`.
fn systemctl(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("systemctl");
    std::fs::write(
        &path,
        format!(
            r#"#!/bin/sh
D='{dir}'
printf '%s\n' "$*" >> "$D/argv"
pid=$(cat "$D/pid")
# Alive: /proc/PID/stat exists and its state is not Z (zombie) or X (dead).
state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -c1)
case "$1" in
  stop)
    [ "$2" = --no-block ] || {{ echo "expected stop --no-block, got: $*" >&2; exit 2; }}
    touch "$D/stopping"
    kill -TERM "$pid" ;;
  show)
    text=$(cat "$D/status" 2>/dev/null)
    if [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]; then
      if [ -e "$D/stopping" ]; then active=deactivating; sub=stop-sigterm; else active=active; sub=running; fi
      main=$pid
    else
      active=inactive; sub=dead; main=0
    fi
    printf 'LoadState=loaded\nActiveState=%s\nSubState=%s\nMainPID=%s\nStatusText=%s\nResult=success\n' \
      "$active" "$sub" "$main" "$text" ;;
  *) echo "unexpected: $*" >&2; exit 2 ;;
esac
"#,
            dir = dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The test's `NOTIFY_SOCKET` peer, in systemd's place: every datagram's lines, in order, and
/// the last `STATUS=` written to `$D/status` as it arrives (systemd's `StatusText`), before the
/// next datagram is read.
struct Peer {
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Peer {
    fn bind(dir: &Path) -> (Peer, PathBuf) {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (lines, stop, dir) = (lines.clone(), stop.clone(), dir.to_owned());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(n) = socket.recv(&mut buf) else {
                        continue;
                    };
                    for line in String::from_utf8_lossy(&buf[..n]).lines() {
                        if let Some(text) = line.strip_prefix("STATUS=") {
                            std::fs::write(dir.join("status.new"), text).unwrap();
                            std::fs::rename(dir.join("status.new"), dir.join("status")).unwrap();
                        }
                        lines.lock().unwrap().push(line.to_owned());
                    }
                }
            })
        };
        let peer = Peer {
            lines,
            stop,
            reader: Some(reader),
        };
        (peer, path)
    }

    fn statuses(&self) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter_map(|l| l.strip_prefix("STATUS="))
            .map(str::to_owned)
            .collect()
    }

    fn wait_for(&self, line: &str, limit: Duration) {
        let until = Instant::now() + limit;
        while !self.lines.lock().unwrap().iter().any(|l| l == line) {
            assert!(Instant::now() < until, "no {line:?} within {limit:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

#[test]
fn a_systemd_stop_prints_the_drain_phases_in_order_and_the_end_state() {
    let dir = tempfile::tempdir().unwrap();
    let (peer, socket) = Peer::bind(dir.path());
    let marker = dir.path().join("marker");
    // The probe drains for 2 s after SIGTERM: several ticks of the "wait for PROGRAM" phase.
    let mut wrapper = wrapped(
        &["--stop-timeout", "20"],
        &["--marker", path_str(&marker), "--drain-ms", "2000"],
    )
    .env("NOTIFY_SOCKET", &socket)
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    std::fs::write(dir.path().join("pid"), wrapper.id().to_string()).unwrap();
    peer.wait_for("READY=1", Duration::from_secs(10));

    let manager = Systemd::with_systemctl(systemctl(dir.path()));
    let mut lines = Vec::new();
    let status = manager
        .stop("probe", Duration::from_secs(30), &mut |l| {
            lines.push(l.to_owned())
        })
        .unwrap();
    let exit = wait_exit(&mut wrapper, Duration::from_secs(10));
    println!("printed:\n  {}", lines.join("\n  "));

    assert_eq!(exit.code(), Some(0), "{lines:?}");
    assert_eq!(status.state, State::Stopped, "{status}");
    let argv = std::fs::read_to_string(dir.path().join("argv")).unwrap();
    assert_eq!(argv.lines().next(), Some("stop --no-block probe.service"));

    // Every status line printed is one the program sent, in the order it sent them.
    let sent = peer.statuses();
    let printed: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("probe.service: "))
        .collect();
    let mut rest = sent.iter();
    for line in &printed {
        assert!(
            rest.any(|s| s == line),
            "{line:?} printed out of order or never sent; sent {sent:?}"
        );
    }
    // The drain's phases as they went, phase numbers never going back, the long phase followed
    // tick by tick, and the end state last.
    let phases: Vec<u32> = printed
        .iter()
        .filter_map(|l| l.split_once("): phase ")?.1.split('/').next()?.parse().ok())
        .collect();
    assert!(phases.windows(2).all(|w| w[0] <= w[1]), "{printed:?}");
    let waiting = printed
        .iter()
        .filter(|l| l.contains("\"wait for PROGRAM to exit\""))
        .count();
    assert!(waiting >= 2, "the 2 s phase was followed: {printed:?}");
    let last = printed.last().unwrap();
    assert!(
        last.starts_with("stopped: clean") && last.contains("exit code 0"),
        "{printed:?}"
    );
}
