//! Helpers of the wrapper's Linux tests: the real `winddown` binary around the real `stopprobe`,
//! real signals, and a real `NOTIFY_SOCKET` peer.
#![allow(dead_code, unreachable_pub)]

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const WRAPPER: &str = env!("CARGO_BIN_EXE_winddown");
pub const PROBE: &str = env!("CARGO_BIN_EXE_stopprobe");

/// `winddown run ARGS -- stopprobe PROBE_ARGS`.
pub fn wrapped(args: &[&str], probe_args: &[&str]) -> Command {
    let mut c = Command::new(WRAPPER);
    c.arg("run")
        .args(args)
        .arg("--")
        .arg(PROBE)
        .args(probe_args);
    c.env_remove("NOTIFY_SOCKET");
    c
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Waits for `path` to hold something, at most `limit`.
pub fn wait_for_file(path: &Path, limit: Duration) -> String {
    let until = Instant::now() + limit;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.is_empty()
        {
            return text;
        }
        assert!(
            Instant::now() < until,
            "{} did not appear within {limit:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for the child to exit, at most `limit` (killing it then, and failing).
pub fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("the wrapper did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
}

/// Whether `pid` is a living (not zombie) process.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat[stat.rfind(')').unwrap() + 2..].chars().next();
            !matches!(state, Some('Z') | Some('X'))
        }
        Err(_) => false,
    }
}

/// The `key=value` lines of a stopprobe marker.
pub fn marker_field(marker: &str, key: &str) -> String {
    marker
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in marker {marker:?}"))
        .to_owned()
}

pub fn now_unix_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A `NOTIFY_SOCKET` peer: every datagram, with the moment it arrived.
pub struct NotifyPeer {
    pub path: PathBuf,
    got: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl NotifyPeer {
    pub fn bind(dir: &Path) -> NotifyPeer {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (got, stop) = (got.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = socket.recv(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        got.lock().unwrap().push((Instant::now(), text));
                    }
                }
            })
        };
        NotifyPeer {
            path,
            got,
            stop,
            reader: Some(reader),
        }
    }

    pub fn messages(&self) -> Vec<(Instant, String)> {
        self.got.lock().unwrap().clone()
    }

    /// When the first datagram holding `line` arrived.
    pub fn first(&self, line: &str) -> Option<Instant> {
        self.messages()
            .into_iter()
            .find(|(_, m)| m.lines().any(|l| l == line || l.starts_with(line)))
            .map(|(at, _)| at)
    }

    pub fn wait_for(&self, line: &str, limit: Duration) -> Instant {
        let until = Instant::now() + limit;
        loop {
            if let Some(at) = self.first(line) {
                return at;
            }
            assert!(
                Instant::now() < until,
                "no {line:?} within {limit:?}; got {:?}",
                self.messages()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for NotifyPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
