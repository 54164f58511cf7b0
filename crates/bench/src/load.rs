//! The closed-loop load client: N keep-alive connections, each with one request in flight, for a
//! fixed time, on one thread.
//!
//! Raw tokio TCP with a minimal HTTP/1.1 writer and parser rather than a hyper client: on a
//! 2-core machine the load generator shares the CPU with the server it measures, so every
//! microsecond it spends per request is taken from the server. The request bytes are built once
//! per connection and written with one `write_all`; the response is parsed just enough (status
//! line, `Content-Length`) to find its end. The same loop speaks RESP to Redis, so both servers
//! see the same client: same connections, same value bytes, one request in flight per connection.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What each request is.
#[derive(Debug, Clone)]
pub enum Shape {
    /// `POST /v1/streams/{stream}/records` with `body`; `records` records per request.
    /// Connection `i` appends to stream `{stream_prefix}{i mod streams}`.
    DepotPost {
        stream_prefix: String,
        body: Vec<u8>,
        records: u64,
        streams: usize,
    },
    /// Redis `SET k:{client}:{n} value`: one record per request, a fresh key each time.
    RedisSet { value: Vec<u8> },
}

/// One measured load point.
#[derive(Debug, Clone)]
pub struct Spec {
    pub addr: SocketAddr,
    pub clients: usize,
    pub warmup: Duration,
    pub measure: Duration,
    pub shape: Shape,
    /// Stop (and report) after this many failed requests; in a shutdown test failures are
    /// expected and merely counted.
    pub tolerate_errors: bool,
    /// Each connection stops after this many requests (a fill rather than a timed point).
    pub max_requests: Option<u64>,
    /// The server's process, whose CPU time over the measurement window is reported
    /// ([`Outcome::cpu`]).
    pub server_pid: Option<u32>,
}

/// CPU time spent inside the measurement window: what one request costs each side.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    /// The server process, all threads (user + system), if its pid was given.
    pub server: Option<Duration>,
    /// The load client's own thread (user + system).
    pub client: Option<Duration>,
}

/// What one load point measured, counting only the requests that completed inside the
/// measurement window.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub requests: u64,
    pub records: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub window: Duration,
    /// Per-request latency, microseconds.
    pub latency: Histogram<u64>,
    /// CPU time used during the window.
    pub cpu: CpuUse,
}

impl Outcome {
    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.window.as_secs_f64()
    }

    /// Server CPU time per completed request in the window, microseconds.
    pub fn server_us_per_request(&self) -> Option<f64> {
        per_request(self.cpu.server, self.requests)
    }

    /// Load-client CPU time per completed request in the window, microseconds.
    pub fn client_us_per_request(&self) -> Option<f64> {
        per_request(self.cpu.client, self.requests)
    }
}

fn per_request(cpu: Option<Duration>, requests: u64) -> Option<f64> {
    if requests == 0 {
        return None;
    }
    Some(cpu?.as_secs_f64() * 1e6 / requests as f64)
}

/// utime + stime of `/proc/<which>/stat` (a process, or `thread-self`); `None` where there is no
/// `/proc`. The unit is `USER_HZ` ticks, 1/100 s on x86 and ARM Linux whatever the kernel's own
/// tick rate (`getconf CLK_TCK`): over a window of a second or more, a resolution of about 1 %.
fn proc_cpu(which: &str) -> Option<Duration> {
    stat_cpu(&std::fs::read_to_string(format!("/proc/{which}/stat")).ok()?)
}

/// utime + stime of one `/proc/…/stat` line.
fn stat_cpu(stat: &str) -> Option<Duration> {
    // The command name (field 2) may hold spaces and parentheses; the fields after its last
    // closing parenthesis don't.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split_ascii_whitespace();
    // Fields 14 and 15 of the whole line are the 12th and 13th after the name.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Runs the load on a new single-threaded runtime (one core at most) and returns when it is done.
pub fn run(spec: Spec) -> Outcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(run_async(spec))
}

/// Like [`run`], on a thread of its own, so the caller can act (send a signal) meanwhile.
pub fn spawn(spec: Spec) -> std::thread::JoinHandle<Outcome> {
    std::thread::Builder::new()
        .name("load".into())
        .spawn(move || run(spec))
        .expect("spawn the load thread")
}

async fn run_async(spec: Spec) -> Outcome {
    let start = Instant::now();
    let window_start = start + spec.warmup;
    let window_end = window_start + spec.measure;
    // Samples CPU time at the window's edges; on this (current-thread) runtime `thread-self` is
    // the load client's thread.
    let server = spec.server_pid.map(|pid| pid.to_string());
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(window_start.into()).await;
        let at_start = (
            server.as_deref().and_then(proc_cpu),
            proc_cpu("thread-self"),
        );
        tokio::time::sleep_until(window_end.into()).await;
        let at_end = (
            server.as_deref().and_then(proc_cpu),
            proc_cpu("thread-self"),
        );
        CpuUse {
            server: at_end.0.zip(at_start.0).map(|(b, a)| b.saturating_sub(a)),
            client: at_end.1.zip(at_start.1).map(|(b, a)| b.saturating_sub(a)),
        }
    });
    let mut tasks = Vec::with_capacity(spec.clients);
    for client in 0..spec.clients {
        let spec = spec.clone();
        tasks.push(tokio::spawn(async move {
            client_loop(&spec, client, window_start, window_end).await
        }));
    }
    let mut total = Outcome {
        requests: 0,
        records: 0,
        errors: 0,
        first_error: None,
        window: spec.measure,
        latency: new_histogram(),
        cpu: CpuUse::default(),
    };
    for task in tasks {
        let one = task.await.expect("client task");
        total.requests += one.requests;
        total.records += one.records;
        total.errors += one.errors;
        if total.first_error.is_none() {
            total.first_error = one.first_error;
        }
        total
            .latency
            .add(&one.latency)
            .expect("same histogram bounds");
    }
    // A fill (`max_requests`) may end before the window does: no CPU figures then.
    if spec.max_requests.is_none() {
        total.cpu = cpu.await.expect("cpu sampler");
    } else {
        cpu.abort();
    }
    total
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

async fn client_loop(
    spec: &Spec,
    client: usize,
    window_start: Instant,
    window_end: Instant,
) -> Outcome {
    let mut out = Outcome {
        requests: 0,
        records: 0,
        errors: 0,
        first_error: None,
        window: spec.measure,
        latency: new_histogram(),
        cpu: CpuUse::default(),
    };
    let mut conn = match connect(spec.addr).await {
        Ok(c) => c,
        Err(e) => {
            fail(&mut out, format!("connect: {e}"));
            return out;
        }
    };
    let mut request = Vec::new();
    let mut buf = Vec::with_capacity(4096);
    let records = match &spec.shape {
        Shape::DepotPost {
            stream_prefix,
            body,
            records,
            streams,
        } => {
            let stream = client % streams;
            request.extend_from_slice(
                format!(
                    "POST /v1/streams/{stream_prefix}{stream}/records HTTP/1.1\r\n\
                     Host: bench\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            request.extend_from_slice(body);
            *records
        }
        Shape::RedisSet { .. } => 1,
    };
    let mut n: u64 = 0;
    loop {
        let now = Instant::now();
        if now >= window_end || spec.max_requests.is_some_and(|max| n >= max) {
            break;
        }
        if let Shape::RedisSet { value } = &spec.shape {
            request.clear();
            let key = format!("k:{client}:{n}");
            request.extend_from_slice(
                format!(
                    "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n",
                    key.len(),
                    value.len()
                )
                .as_bytes(),
            );
            request.extend_from_slice(value);
            request.extend_from_slice(b"\r\n");
        }
        n += 1;
        let sent = Instant::now();
        let result = match &spec.shape {
            Shape::DepotPost { .. } => http_exchange(&mut conn, &request, &mut buf).await,
            Shape::RedisSet { .. } => resp_exchange(&mut conn, &request, &mut buf).await,
        };
        let done = Instant::now();
        match result {
            Ok(()) => {
                if sent >= window_start && done <= window_end {
                    out.requests += 1;
                    out.records += records;
                    let micros = (done - sent).as_micros().max(1) as u64;
                    out.latency.saturating_record(micros);
                }
            }
            Err(e) => {
                fail(&mut out, e);
                if !spec.tolerate_errors {
                    break;
                }
                // The connection may be gone (a stopping server): reconnect or give up.
                tokio::time::sleep(Duration::from_millis(1)).await;
                match connect(spec.addr).await {
                    Ok(c) => conn = c,
                    Err(_) => break,
                }
                buf.clear();
            }
        }
    }
    out
}

fn fail(out: &mut Outcome, why: String) {
    out.errors += 1;
    if out.first_error.is_none() {
        out.first_error = Some(why);
    }
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let conn = TcpStream::connect(addr).await?;
    conn.set_nodelay(true)?;
    Ok(conn)
}

/// Sends one HTTP/1.1 request and reads its response; `Err` unless the status is 2xx.
async fn http_exchange(
    conn: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(), String> {
    conn.write_all(request)
        .await
        .map_err(|e| format!("write: {e}"))?;
    buf.clear();
    let (head_len, body_len, status) = loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = &buf[..end];
            let status = parse_status(head)?;
            let len = content_length(head).ok_or("a response without Content-Length")?;
            break (end + 4, len, status);
        }
        read_more(conn, buf).await?;
    };
    while buf.len() < head_len + body_len {
        read_more(conn, buf).await?;
    }
    if buf.len() > head_len + body_len {
        return Err("more bytes than one response (pipelining is not used)".into());
    }
    if !(200..300).contains(&status) {
        let body = String::from_utf8_lossy(&buf[head_len..]);
        return Err(format!("HTTP {status}: {body}"));
    }
    Ok(())
}

/// Sends one RESP command and reads a one-line reply; `Err` unless it is `+OK`.
async fn resp_exchange(
    conn: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(), String> {
    conn.write_all(request)
        .await
        .map_err(|e| format!("write: {e}"))?;
    buf.clear();
    loop {
        if let Some(end) = find(buf, b"\r\n") {
            return if &buf[..end] == b"+OK" && buf.len() == end + 2 {
                Ok(())
            } else {
                Err(format!("redis: {}", String::from_utf8_lossy(buf)))
            };
        }
        read_more(conn, buf).await?;
    }
}

async fn read_more(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    buf.reserve(4096);
    let n = conn.read_buf(buf).await.map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Err("the server closed the connection".into());
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_status(head: &[u8]) -> Result<u16, String> {
    // "HTTP/1.1 201 Created"
    head.get(9..12)
        .and_then(|code| std::str::from_utf8(code).ok())
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line: {}", String::from_utf8_lossy(head)))
}

fn content_length(head: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(head).ok()?;
    text.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

/// A blocking `GET` on a fresh connection, for readiness polls and status; returns status and
/// body.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    let status = parse_status(text.as_bytes()).map_err(std::io::Error::other)?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads() {
        let head = b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 42";
        assert_eq!(parse_status(head).unwrap(), 201);
        assert_eq!(content_length(head), Some(42));
        assert_eq!(content_length(b"HTTP/1.1 200 OK\r\nx: y"), None);
    }

    #[test]
    fn cpu_time_is_read_from_utime_and_stime_whatever_the_command_name() {
        // A real line's shape: pid (comm) state, then fields 4..; utime=1234, stime=56.
        let line = "4242 (tokio (rt) worker) S 1 4242 4242 0 -1 4194368 2883 0 0 0 1234 56 0 0 20 0 4 0 \
                    123 1270512640 7490 18446744073709551615 1 1 0 0 0 0 0 4096 17630 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(stat_cpu(line), Some(Duration::from_millis(12_900)));
        assert_eq!(stat_cpu("4242 (x) S 1"), None);
        // This thread has run a little by now; the figure is there and plausible.
        assert!(proc_cpu("thread-self").is_some_and(|t| t < Duration::from_secs(3600)));
    }
}
