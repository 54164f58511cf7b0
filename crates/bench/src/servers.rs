//! Starting, watching and stopping the servers under test: depot (the release binary) and a
//! private Redis.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::load;

/// How a depot is configured for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepotConfig {
    /// `durability = "full"` (true) or `"off"`.
    pub durable: bool,
    /// `commit_max_batch`.
    pub max_batch: usize,
}

impl DepotConfig {
    pub const DURABLE: DepotConfig = DepotConfig {
        durable: true,
        max_batch: 1024,
    };
    pub const OFF: DepotConfig = DepotConfig {
        durable: false,
        max_batch: 1024,
    };
    pub const ONE_PER_COMMIT: DepotConfig = DepotConfig {
        durable: true,
        max_batch: 1,
    };
}

/// A running server process.
#[derive(Debug)]
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set size so far (VmHWM), bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        proc_status_kib(self.pid(), "VmHWM:").map(|k| k * 1024)
    }

    /// SIGTERM, then wait up to `budget` (SIGKILL after). Returns how long the exit took.
    pub fn terminate(mut self, budget: Duration) -> Duration {
        let started = Instant::now();
        signal(self.pid(), Sig::Term);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return started.elapsed();
            }
            if started.elapsed() > budget {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// SIGKILL and reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Never leave a server running: a panic in the bench kills what it started.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Sig {
    Term,
}

#[cfg(unix)]
pub fn signal(pid: u32, sig: Sig) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let sig = match sig {
        Sig::Term => Signal::SIGTERM,
    };
    let _ = kill(Pid::from_raw(pid as i32), sig);
}

#[cfg(not(unix))]
pub fn signal(_pid: u32, _sig: Sig) {
    panic!("depot-bench runs on Linux");
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Starts `depot run` on `dir` (created fresh unless it exists) listening on `port` (0: any), and
/// waits until `/readyz` answers 200.
pub fn start_depot(bin: &Path, dir: &Path, config: DepotConfig, port: u16) -> Server {
    std::fs::create_dir_all(dir).expect("create the depot data dir");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.with_extension("log"))
        .expect("open the depot log");
    let mut cmd = Command::new(bin);
    for (key, _) in std::env::vars() {
        if key.starts_with("DEPOT_") {
            cmd.env_remove(key);
        }
    }
    let running = dir.join("depot.running.json");
    let _ = std::fs::remove_file(&running);
    let child = cmd
        .arg("run")
        .arg("--data-dir")
        .arg(dir)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--log-format")
        .arg("json")
        .env(
            "DEPOT_DURABILITY",
            if config.durable { "full" } else { "off" },
        )
        .env("DEPOT_COMMIT_MAX_BATCH", config.max_batch.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let mut server = Server {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!(
                "depot exited at start ({status}); see {}",
                dir.with_extension("log").display()
            );
        }
        if server.addr.port() == 0
            && let Some(addr) = std::fs::read(&running)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["listen"].as_str().and_then(|s| s.parse().ok()))
        {
            server.addr = addr;
        }
        if server.addr.port() != 0
            && matches!(
                load::get(server.addr, "/readyz", Duration::from_secs(1)),
                Ok((200, _))
            )
        {
            return server;
        }
        assert!(
            Instant::now() < deadline,
            "depot did not become ready in 30 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Starts the HTTP floor (see `floor.rs`): this executable again, with `--serve-http-floor`.
pub fn start_http_floor(hand_off: bool) -> Result<Server, String> {
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let child = Command::new(exe)
        .arg("--serve-http-floor")
        .arg(addr.to_string())
        .args(hand_off.then_some("--hand-off"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the HTTP floor: {e}"))?;
    answering(Server { child, addr }, "the HTTP floor", |addr| {
        matches!(load::get(addr, "/", Duration::from_secs(1)), Ok((201, _)))
    })
}

/// Starts a private `redis-server` with `appendonly yes`, `appendfsync always`, no RDB snapshots,
/// its files in `dir`, on a free loopback port; waits for `PING`.
pub fn start_redis(dir: &Path) -> Result<Server, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .arg("--dir")
        .arg(dir)
        .args(["--save", ""])
        .args(["--daemonize", "no", "--protected-mode", "yes"])
        .args(["--logfile", ""])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start redis-server ({e}); apt-get install redis-server"))?;
    let server = Server {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    answering(server, "redis-server", redis_ping)
}

/// `server` once `answers(addr)` holds; an error if it exits first or 10 s pass.
fn answering(
    mut server: Server,
    what: &str,
    answers: impl Fn(SocketAddr) -> bool,
) -> Result<Server, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!("{what} exited at start ({status})"));
        }
        if answers(server.addr) {
            return Ok(server);
        }
        if Instant::now() > deadline {
            return Err(format!("{what} did not answer in 10 s"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn redis_ping(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
    else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let mut reply = [0u8; 7];
    conn.write_all(b"PING\r\n").is_ok()
        && conn.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// A field of `/proc/<pid>/status` in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Samples a process's VmRSS every `every` until stopped; returns (seconds since start, bytes).
#[derive(Debug)]
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<(f64, u64)>>,
}

impl RssSampler {
    pub fn start(pid: u32, every: Duration) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let mut samples = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                if let Some(kib) = proc_status_kib(pid, "VmRSS:") {
                    samples.push((started.elapsed().as_secs_f64(), kib * 1024));
                }
                std::thread::sleep(every);
            }
            samples
        });
        RssSampler { stop, handle }
    }

    pub fn finish(self) -> Vec<(f64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}
