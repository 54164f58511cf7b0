//! `depot upgrade --binary PATH` against a stand-in `systemctl` (systemd does not run here): a
//! script that runs the installed binary as "the service" in the background, stops it with
//! SIGTERM (the drain) and waits, and answers `show`/`status` as systemctl does. The depot
//! processes, their drain, the binaries swapped on disk and `/readyz` are all real.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::support::{DEPOT, serial};

const FAKE_SYSTEMCTL: &str = r#"#!/bin/bash
# systemctl for depot.service, standing in where systemd does not run.
set -u
D="$FAKE_SYSTEMD_DIR"
pidfile="$D/pid"
alive() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
case "$1" in
  start)
    alive && exit 0
    rm -f "$D/exit"
    ( "$FAKE_EXEC" --data-dir "$FAKE_DATA" --listen 127.0.0.1:0 --log-format json run \
        >>"$D/service.log" 2>&1 &
      echo $! >"$pidfile"; wait $!; echo $? >"$D/exit" ) </dev/null >/dev/null 2>&1 &
    # Like Type=notify: return once it serves, fail if it exits first.
    for _ in $(seq 400); do
      if [ -f "$D/exit" ]; then
        echo "Job for depot.service failed because the control process exited with error code." >&2
        exit 1
      fi
      if [ -f "$pidfile" ] && grep -q "\"pid\":$(cat "$pidfile")[,}]" "$FAKE_DATA/depot.running.json" 2>/dev/null; then
        exit 0
      fi
      sleep 0.05
    done
    echo "Job for depot.service failed because a timeout was exceeded." >&2
    exit 1 ;;
  stop)
    alive || exit 0
    kill -TERM "$(cat "$pidfile")"
    for _ in $(seq 1200); do [ -f "$D/exit" ] && exit 0; sleep 0.05; done
    exit 1 ;;
  show)
    echo "LoadState=loaded"
    if alive && [ ! -f "$D/exit" ]; then
      echo "ActiveState=active"; echo "SubState=running"; echo "MainPID=$(cat "$pidfile")"
    elif [ -f "$D/exit" ] && [ "$(cat "$D/exit")" != 0 ]; then
      echo "ActiveState=failed"; echo "SubState=failed"; echo "MainPID=0"; echo "Result=exit-code"
      echo "ExecMainExitTimestamp=now"; echo "ExecMainCode=1"; echo "ExecMainStatus=$(cat "$D/exit")"
    else
      echo "ActiveState=inactive"; echo "SubState=dead"; echo "MainPID=0"; echo "Result=success"
    fi ;;
  status)
    echo "depot.service (stand-in)"
    tail -n 5 "$D/service.log" 2>/dev/null
    alive; exit $(( $? == 0 ? 0 : 3 )) ;;
  *) exit 0 ;;
esac
"#;

struct Stage {
    _dir: tempfile::TempDir,
    root: PathBuf,
    installed: PathBuf,
    data: PathBuf,
    systemctl: PathBuf,
}

fn executable(path: &Path, text: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn stage() -> Stage {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    for sub in ["bin", "new", "systemd", "data"] {
        std::fs::create_dir(root.join(sub)).unwrap();
    }
    let installed = root.join("bin/depot");
    std::fs::copy(DEPOT, &installed).unwrap();
    let systemctl = root.join("systemctl");
    executable(&systemctl, FAKE_SYSTEMCTL.as_bytes());
    Stage {
        installed,
        data: root.join("data"),
        systemctl,
        root,
        _dir: dir,
    }
}

impl Stage {
    fn env(&self) -> Vec<(&'static str, PathBuf)> {
        vec![
            ("FAKE_SYSTEMD_DIR", self.root.join("systemd")),
            ("FAKE_EXEC", self.installed.clone()),
            ("FAKE_DATA", self.data.clone()),
        ]
    }

    /// Runs `systemctl args…` (the stand-in).
    fn systemctl(&self, args: &[&str]) -> bool {
        std::process::Command::new(&self.systemctl)
            .args(args)
            .envs(self.env())
            .status()
            .unwrap()
            .success()
    }

    /// `bin/depot upgrade --binary new …`: (exit code, output).
    fn upgrade(&self, new: &Path) -> (i32, String) {
        self.upgrade_within(new, 20)
    }

    /// [`Stage::upgrade`] with a readiness timeout of `secs`.
    fn upgrade_within(&self, new: &Path, secs: u32) -> (i32, String) {
        let out = std::process::Command::new(&self.installed)
            .args(["--data-dir"])
            .arg(&self.data)
            .args(["upgrade", "--timeout", &secs.to_string(), "--binary"])
            .arg(new)
            .arg("--systemctl")
            .arg(&self.systemctl)
            .envs(self.env())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    fn client(&self) -> (u32, torture::Client) {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.data.join("depot.running.json")).unwrap())
                .unwrap();
        let client = torture::Client::new(
            &format!("http://{}", v["listen"].as_str().unwrap()),
            None,
            Duration::from_secs(10),
        )
        .unwrap();
        (v["pid"].as_u64().unwrap() as u32, client)
    }
}

async fn post(client: &torture::Client, n: usize) {
    for i in 0..n {
        let r = client
            .send(
                hyper::Method::POST,
                "/v1/streams/up/records",
                &[],
                format!("{i}"),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 201);
    }
}

async fn count(client: &torture::Client) -> usize {
    client.read_stream("up").await.unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_swaps_the_binary_and_a_new_one_that_exits_is_rolled_back() {
    let _serial = serial().await;
    let s = stage();
    assert!(s.systemctl(&["start", "depot.service"]));
    let (first_pid, client) = s.client();
    post(&client, 50).await;
    let original = std::fs::read(&s.installed).unwrap();

    // A good new binary (a copy of this build with a marker appended, so it differs on disk).
    let good = s.root.join("new/depot");
    let mut bytes = original.clone();
    bytes.extend_from_slice(b"\0depot-upgrade-test");
    executable(&good, &bytes);
    let (code, out) = s.upgrade(&good);
    eprintln!("{out}");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("upgraded:"), "{out}");
    assert!(out.contains("its drain: clean"), "{out}");
    assert_eq!(
        std::fs::read(&s.installed).unwrap(),
        bytes,
        "the new binary is in place"
    );
    assert_eq!(
        std::fs::read(s.root.join("bin/depot.old")).unwrap(),
        original,
        "the old binary is kept as depot.old"
    );
    let (second_pid, client) = s.client();
    assert_ne!(second_pid, first_pid);
    assert_eq!(
        count(&client).await,
        50,
        "records posted before the upgrade"
    );
    post(&client, 10).await;

    // A new binary that answers --version and exits at once: rolled back, the old one serves.
    let bad = s.root.join("new/broken");
    executable(
        &bad,
        b"#!/bin/sh\n[ \"$1\" = --version ] && { echo 'depot 9.9.9'; exit 0; }\necho 'broken: cannot start' >&2\nexit 7\n",
    );
    let serving = std::fs::read(&s.installed).unwrap();
    let (code, out) = s.upgrade(&bad);
    eprintln!("{out}");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("upgrade rolled back"), "{out}");
    assert!(
        out.contains("failed because the control process exited"),
        "{out}"
    );
    assert!(
        out.contains("the service manager said: depot.service: failed")
            && out.contains("last exit: exited with status 7"),
        "{out}"
    );
    assert!(
        out.contains("broken: cannot start"),
        "the log's last lines: {out}"
    );
    assert!(
        out.contains("the old binary is back in place and serves"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(&s.installed).unwrap(),
        serving,
        "the old binary is back"
    );
    let (third_pid, client) = s.client();
    assert_ne!(third_pid, second_pid);
    assert_eq!(count(&client).await, 60, "every record after the rollback");

    // A binary that is not depot, or does not run, changes nothing.
    let (code, out) = s.upgrade(Path::new("/bin/true"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("is not depot") && out.contains("nothing was changed"),
        "{out}"
    );
    let (code, out) = s.upgrade(&s.root.join("new/missing"));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("cannot be run") && out.contains("nothing was changed"),
        "{out}"
    );
    assert_eq!(s.client().0, third_pid, "still the same process");

    assert!(s.systemctl(&["stop", "depot.service"]));
}

/// A new binary that starts (the manager says it runs, its run file names it) but never becomes
/// ready — its `/readyz` answers 503 — is rolled back at the readiness timeout, and the old one
/// serves every record again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_binary_that_is_not_ready_in_time_is_rolled_back() {
    let _serial = serial().await;
    let s = stage();
    assert!(s.systemctl(&["start", "depot.service"]));
    let (first_pid, client) = s.client();
    post(&client, 40).await;

    // What the never-ready binary's run file points at: a server whose /readyz says 503.
    let unready = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = unready.local_addr().unwrap().port();
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut conn in unready.incoming().flatten() {
            let mut buf = [0u8; 512];
            let _ = conn.read(&mut buf);
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _ = conn.write_all(b"HTTP/1.0 503 Service Unavailable\r\n\r\n");
        }
    });
    let stuck = s.root.join("new/stuck");
    executable(
        &stuck,
        format!(
            "#!/bin/bash\n[ \"$1\" = --version ] && {{ echo 'depot 9.9.9'; exit 0; }}\n\
             echo 'stuck: starting, never ready' >&2\n\
             printf '{{\"pid\":%d,\"listen\":\"127.0.0.1:{port}\"}}' $$ > \"$2/depot.running.json\"\n\
             exec sleep 600\n"
        )
        .as_bytes(),
    );
    let serving = std::fs::read(&s.installed).unwrap();
    let started = std::time::Instant::now();
    let (code, out) = s.upgrade_within(&stuck, 3);
    let took = started.elapsed();
    eprintln!(
        "{out}\n(upgrade and rollback took {:.1} s)",
        took.as_secs_f64()
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("upgrade rolled back: the new binary was not ready within 3 s"),
        "{out}"
    );
    assert!(
        out.contains("stuck: starting, never ready"),
        "the log's last lines: {out}"
    );
    assert!(
        out.contains("the old binary is back in place and serves"),
        "{out}"
    );
    assert!(
        asked.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the new process's /readyz was asked"
    );
    assert!(took >= Duration::from_secs(3), "it waited out the timeout");
    assert_eq!(
        std::fs::read(&s.installed).unwrap(),
        serving,
        "the old binary is back"
    );
    let (pid, client) = s.client();
    assert_ne!(pid, first_pid);
    assert_eq!(count(&client).await, 40, "every record after the rollback");
    assert!(s.systemctl(&["stop", "depot.service"]));
}
