//! `stopprobe`: the program the wrapper's tests wrap (Linux, and Windows under Wine).
//!
//! On its first stop signal (SIGTERM, SIGINT, SIGHUP, SIGQUIT; Windows: Ctrl+C, Ctrl+Break,
//! console close) it drains for `--drain-ms`, writing `--lines-on-stop` lines meanwhile, then
//! writes and fsyncs `--marker` naming the signal and when it arrived, and exits with
//! `--exit-code`. Options make it stubborn, crash, start a grandchild, open a port late, or write
//! fast. Arguments are `--key value` pairs, parsed by hand: a test program with no dependencies
//! beyond the ones the wrapper already has.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Default)]
struct Options {
    /// Where to write the marker after the drain.
    marker: Option<String>,
    /// How long to drain after the stop signal.
    drain_ms: u64,
    /// Exit code after a drain.
    exit_code: i32,
    /// Ignore stop signals entirely (only a kill ends it).
    ignore: bool,
    /// Exit with this code after `crash_after_ms`, without a signal.
    crash: Option<i32>,
    crash_after_ms: u64,
    /// Start a grandchild that records its pid here, leaves the process group, ignores stop
    /// signals and sleeps for ever.
    grandchild: Option<String>,
    /// Run as that grandchild.
    as_grandchild: Option<String>,
    /// Open this TCP port (answering HTTP 200) after `listen_after_ms`.
    listen: Option<u16>,
    listen_after_ms: u64,
    /// Write this many numbered lines to stdout at start, as fast as possible.
    spew: u64,
    /// Write this many numbered lines to stderr while draining.
    lines_on_stop: u64,
    /// Write a file when started (its pid), for tests that wait for the start.
    started: Option<String>,
}

fn parse() -> Options {
    let mut o = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(key) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| die(&format!("{key} needs a value")))
        };
        match key.as_str() {
            "--marker" => o.marker = Some(value()),
            "--drain-ms" => o.drain_ms = num(&value()),
            "--exit-code" => o.exit_code = num(&value()),
            "--ignore" => o.ignore = true,
            "--crash" => o.crash = Some(num(&value())),
            "--crash-after-ms" => o.crash_after_ms = num(&value()),
            "--grandchild" => o.grandchild = Some(value()),
            "--as-grandchild" => o.as_grandchild = Some(value()),
            "--listen" => o.listen = Some(num(&value())),
            "--listen-after-ms" => o.listen_after_ms = num(&value()),
            "--spew" => o.spew = num(&value()),
            "--lines-on-stop" => o.lines_on_stop = num(&value()),
            "--started" => o.started = Some(value()),
            other => die(&format!("unknown option {other}")),
        }
    }
    o
}

fn num<T: std::str::FromStr>(raw: &str) -> T {
    raw.parse()
        .unwrap_or_else(|_| die(&format!("`{raw}` is not a number")))
}

fn die(message: &str) -> ! {
    eprintln!("stopprobe: {message}");
    std::process::exit(64);
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// Writes `text` to `path` and fsyncs it (a marker that a crash right after cannot lose).
fn write_synced(path: &str, text: &str) {
    let mut file = std::fs::File::create(path).unwrap_or_else(|e| die(&format!("{path}: {e}")));
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .unwrap_or_else(|e| die(&format!("{path}: {e}")));
}

fn main() {
    let o = parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| die(&e.to_string()));
    let code = runtime.block_on(run(o));
    std::process::exit(code);
}

async fn run(o: Options) -> i32 {
    let mut stops = sys::stop_signals();
    if let Some(pidfile) = &o.as_grandchild {
        sys::leave_group();
        write_synced(pidfile, &std::process::id().to_string());
        loop {
            // Stop signals are received and ignored; only a kill ends the grandchild.
            let _ = stops.next().await;
        }
    }
    if let Some(path) = &o.started {
        write_synced(path, &std::process::id().to_string());
    }
    if let Some(pidfile) = &o.grandchild {
        let exe = std::env::current_exe().unwrap_or_else(|e| die(&e.to_string()));
        // Never waited for on purpose: the grandchild must outlive this process unless the
        // wrapper's tree kill ends it.
        #[allow(clippy::zombie_processes)]
        let _grandchild = std::process::Command::new(exe)
            .args(["--as-grandchild", pidfile])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| die(&format!("grandchild: {e}")));
        // Wait until it has recorded its pid, so that the test can look for it.
        for _ in 0..200 {
            if std::fs::metadata(pidfile).is_ok_and(|m| m.len() > 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    if o.spew > 0 {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        for i in 0..o.spew {
            let _ = writeln!(
                out,
                "spew {i:08} the quick brown fox jumps over the lazy dog"
            );
        }
        let _ = out.flush();
    }
    println!("stopprobe {} started", std::process::id());
    if let Some(port) = o.listen {
        let after = Duration::from_millis(o.listen_after_ms);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap_or_else(|e| die(&format!("listen on {port}: {e}")));
            loop {
                if let Ok((mut s, _)) = listener.accept().await {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .await;
                }
            }
        });
    }
    let crash = async {
        match o.crash {
            Some(code) => {
                tokio::time::sleep(Duration::from_millis(o.crash_after_ms)).await;
                code
            }
            None => std::future::pending().await,
        }
    };
    let signal = tokio::select! {
        code = crash => {
            eprintln!("stopprobe: crashing with code {code}");
            return code;
        }
        signal = async {
            loop {
                let signal = stops.next().await;
                if !o.ignore {
                    break signal;
                }
                eprintln!("stopprobe: ignoring {signal}");
            }
        } => signal,
    };
    let received = now_ns();
    eprintln!("stopprobe: got {signal}; draining {} ms", o.drain_ms);
    let started = std::time::Instant::now();
    let drain = Duration::from_millis(o.drain_ms);
    for i in 0..o.lines_on_stop {
        eprintln!("draining {i:08}");
        if o.lines_on_stop > 0 {
            let at = drain.mul_f64((i + 1) as f64 / o.lines_on_stop as f64);
            tokio::time::sleep(at.saturating_sub(started.elapsed())).await;
        }
    }
    tokio::time::sleep(drain.saturating_sub(started.elapsed())).await;
    if let Some(marker) = &o.marker {
        write_synced(
            marker,
            &format!(
                "signal={signal}\nreceived_unix_ns={received}\npid={}\ndrained_ms={}\nwritten_unix_ns={}\n",
                std::process::id(),
                started.elapsed().as_millis(),
                now_ns()
            ),
        );
    }
    eprintln!("stopprobe: drained; exiting with {}", o.exit_code);
    o.exit_code
}

#[cfg(unix)]
mod sys {
    use tokio::signal::unix::{Signal, SignalKind, signal};

    pub(super) struct Stops(Vec<(Signal, &'static str)>);

    pub(super) fn stop_signals() -> Stops {
        let mut v = Vec::new();
        for (kind, name) in [
            (SignalKind::terminate(), "TERM"),
            (SignalKind::interrupt(), "INT"),
            (SignalKind::hangup(), "HUP"),
            (SignalKind::quit(), "QUIT"),
        ] {
            v.push((signal(kind).expect("signal handler"), name));
        }
        Stops(v)
    }

    impl Stops {
        pub(super) async fn next(&mut self) -> &'static str {
            std::future::poll_fn(|cx| {
                for (s, name) in &mut self.0 {
                    if s.poll_recv(cx).is_ready() {
                        return std::task::Poll::Ready(*name);
                    }
                }
                std::task::Poll::Pending
            })
            .await
        }
    }

    /// A grandchild in a session of its own: the stop signal to PROGRAM's process group misses
    /// it, so only the wrapper's tree kill (child subreaper) can end it.
    pub(super) fn leave_group() {
        let _ = nix::unistd::setsid();
    }
}

#[cfg(windows)]
mod sys {
    use tokio::signal::windows::{CtrlBreak, CtrlC, CtrlClose, ctrl_break, ctrl_c, ctrl_close};

    pub(super) struct Stops {
        c: CtrlC,
        brk: CtrlBreak,
        close: CtrlClose,
    }

    pub(super) fn stop_signals() -> Stops {
        Stops {
            c: ctrl_c().expect("console handler"),
            brk: ctrl_break().expect("console handler"),
            close: ctrl_close().expect("console handler"),
        }
    }

    impl Stops {
        pub(super) async fn next(&mut self) -> &'static str {
            tokio::select! {
                _ = self.c.recv() => "ctrl-c",
                _ = self.brk.recv() => "ctrl-break",
                _ = self.close.recv() => "close",
            }
        }
    }

    /// The job object holds the grandchild whatever it does.
    pub(super) fn leave_group() {}
}
