//! `depot stop` and `depot status` for a depot running in a console or under a plain process
//! manager. (A Windows service is stopped through the Service Control Manager instead.)

use std::io::{IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use winddown::LockFile;

use crate::app::files;

/// Asks the depot using `data_dir` to stop, shows the drain's progress until it is gone, and
/// prints its shutdown report. Returns the process exit code for `depot stop`.
pub fn stop(data_dir: &Path, timeout: Duration) -> Result<i32, String> {
    let lock = data_dir.join(files::LOCK);
    let Some(pid) = LockFile::holder(&lock) else {
        println!("depot is not running (nobody holds {})", lock.display());
        print_last_shutdown(data_dir);
        return Ok(0);
    };
    send_stop(pid)?;
    println!("asked depot (PID {pid}) to stop; draining…");
    let progress_path = data_dir.join(files::PROGRESS);
    let terminal = std::io::stdout().is_terminal();
    let spinner = ['|', '/', '-', '\\'];
    let start = Instant::now();
    let mut shown = 0;
    let mut last_phase = String::new();
    loop {
        let text = std::fs::read_to_string(&progress_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut finished = false;
        for line in lines.iter().skip(shown) {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if v.get("finished").is_some() {
                finished = true;
                continue;
            }
            let status = progress_line(&v);
            if terminal {
                print!("\r\x1b[2K{} {status}", spinner[shown % spinner.len()]);
                let _ = std::io::stdout().flush();
            } else if status != last_phase {
                println!("  {status}");
            }
            last_phase = status;
        }
        shown = lines.len();
        if finished || (LockFile::holder(&lock).is_none() && !process_alive(pid)) {
            break;
        }
        if start.elapsed() > timeout {
            if terminal {
                println!();
            }
            return Err(format!(
                "depot (PID {pid}) is still stopping after {timeout:?}; its last progress: {last_phase}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The report is written right after the drain; give the process a moment to exit.
    let gone_by = Instant::now() + Duration::from_secs(5);
    while process_alive(pid) && Instant::now() < gone_by {
        std::thread::sleep(Duration::from_millis(20));
    }
    if terminal {
        println!();
    }
    let report = print_last_shutdown(data_dir);
    Ok(report
        .and_then(|r| {
            r["outcome"]
                .as_str()
                .map(|o| if o == "clean" { 0 } else { 1 })
        })
        .unwrap_or(0))
}

/// Prints whether depot runs, where, since when, how many records, and its last shutdown.
pub fn status(data_dir: &Path) -> Result<i32, String> {
    let lock = data_dir.join(files::LOCK);
    match LockFile::holder(&lock) {
        Some(pid) => {
            let running: Value = std::fs::read(data_dir.join(files::RUNNING))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null);
            let listen = running["listen"].as_str().unwrap_or("unknown");
            println!(
                "depot is running: PID {pid}, listening on http://{listen}, data in {}",
                data_dir.display()
            );
            match listen
                .parse()
                .ok()
                .and_then(|addr| get_json(addr, "/v1/status"))
            {
                Some(s) => {
                    println!(
                        "  state {}, up {} s, {} records, version {}",
                        s["state"].as_str().unwrap_or("?"),
                        s["uptime_secs"],
                        s["records"],
                        s["version"].as_str().unwrap_or("?")
                    );
                    let f = &s["forward"];
                    if f["enabled"] == true {
                        println!(
                            "  forwarding to {}: {}, {} records not yet delivered{}",
                            f["target"].as_str().unwrap_or("?"),
                            f["state"].as_str().unwrap_or("?"),
                            f["backlog_records"],
                            f["last_error"]["message"]
                                .as_str()
                                .map(|e| format!("; last error: {e}"))
                                .unwrap_or_default()
                        );
                    }
                }
                None => println!("  (its status endpoint did not answer)"),
            }
            print_last_shutdown(data_dir);
            Ok(0)
        }
        None => {
            println!("depot is not running (data in {})", data_dir.display());
            print_last_shutdown(data_dir);
            Ok(3) // the LSB "not running" status code
        }
    }
}

fn progress_line(v: &Value) -> String {
    let phase = &v["phase"];
    if phase.is_null() {
        return format!("stopping ({})", v["reason"].as_str().unwrap_or("?"));
    }
    if v["event"] == "phase_ended" {
        return format!(
            "phase {}/{} {}: {}",
            phase["index"].as_u64().unwrap_or(0) + 1,
            phase["count"],
            phase["name"].as_str().unwrap_or("?"),
            v["outcome"].as_str().unwrap_or("?")
        );
    }
    let mut line = format!(
        "phase {}/{} {} — {:.1} s left",
        phase["index"].as_u64().unwrap_or(0) + 1,
        phase["count"],
        phase["name"].as_str().unwrap_or("?"),
        phase["remaining"].as_u64().unwrap_or(0) as f64 / 1000.0
    );
    if let Some(m) = phase["message"].as_str() {
        line.push_str(": ");
        line.push_str(m);
    }
    line
}

fn print_last_shutdown(data_dir: &Path) -> Option<Value> {
    let report: Value = std::fs::read(data_dir.join(files::LAST_SHUTDOWN))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())?;
    println!(
        "last shutdown: {} after {}, {} in {:.3} s",
        report["outcome"].as_str().unwrap_or("?"),
        report["reason"].as_str().unwrap_or("?"),
        if report["outcome"] == "clean" {
            "every phase done"
        } else {
            "not every phase done"
        },
        report["duration_ms"].as_u64().unwrap_or(0) as f64 / 1000.0
    );
    for p in report["phases"].as_array().into_iter().flatten() {
        let mut line = format!(
            "  {:<32} {:>8.3} s  {}",
            p["name"].as_str().unwrap_or("?"),
            p["duration_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
            p["outcome"].as_str().unwrap_or("?")
        );
        if let Some(d) = p["detail"].as_str() {
            line.push_str(" — ");
            line.push_str(d);
        }
        println!("{line}");
    }
    Some(report)
}

/// One GET to the local depot. A raw HTTP/1.0 request: one local call does not justify an HTTP
/// client dependency.
fn get_json(addr: SocketAddr, path: &str) -> Option<Value> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let at = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    serde_json::from_slice(&response[at + 4..]).ok()
}

#[cfg(unix)]
fn send_stop(pid: u32) -> Result<(), String> {
    use nix::sys::signal::{Signal, kill};
    kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM)
        .map_err(|e| format!("cannot signal depot (PID {pid}): {e}"))
}

#[cfg(unix)]
fn process_alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

#[cfg(not(unix))]
fn send_stop(pid: u32) -> Result<(), String> {
    Err(format!(
        "depot (PID {pid}) runs in a console: stop it with Ctrl+C in its window, or install it as \
         a service (`depot install`) and stop it with `depot stop` through the Service Control Manager"
    ))
}

#[cfg(not(unix))]
fn process_alive(_pid: u32) -> bool {
    false
}
