//! `depot stop` and `depot status` for a depot running in a console or under a plain process
//! manager. (A Windows service is stopped through the Service Control Manager instead.)

use std::io::{IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use winddown::instance::{self, InstanceError, ProgressPrinter, StopEvent};

/// Why `depot stop` could not ask depot to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// depot runs in a console, where nothing but Ctrl+C reaches it.
    #[error(
        "depot (PID {pid}) runs in a console: stop it with Ctrl+C in its window, or install it \
         as a service (`depot install`) and stop it with `depot stop` through the Service \
         Control Manager"
    )]
    Console {
        /// Its process id.
        pid: u32,
    },
    /// Its instance files could not be read, or the signal not sent.
    #[error(transparent)]
    Instance(#[from] InstanceError),
}

/// Asks the depot using `data_dir` to stop, shows the drain's progress until it is gone, and
/// prints its shutdown report. Returns the process exit code for `depot stop`: 0 after a clean
/// stop (or when it was not running), 1 otherwise.
pub fn stop(data_dir: &Path, timeout: Duration) -> Result<i32, ControlError> {
    let instance = crate::app::instance(data_dir);
    let mut printer = ProgressPrinter::new(std::io::stdout(), std::io::stdout().is_terminal());
    let mut drained = false;
    let stopped = instance.stop(timeout, |event| match event {
        StopEvent::Signalled { pid } => println!("asked depot (PID {pid}) to stop; draining…"),
        StopEvent::Progress(progress) => {
            drained = true;
            printer.print(progress);
        }
        _ => {}
    });
    printer.finish();
    let stopped = match stopped {
        Ok(Some(stopped)) => stopped,
        Ok(None) => {
            println!(
                "depot is not running (nobody holds {})",
                instance.lock_path().display()
            );
            print_last_shutdown(&instance);
            return Ok(0);
        }
        Err(InstanceError::Unsupported { pid }) => {
            return Err(ControlError::Console { pid });
        }
        Err(e) => return Err(e.into()),
    };
    if !drained {
        println!("  (it ended without showing its drain)");
    }
    match stopped.report {
        Some(report) => {
            print!("{}", instance::report_lines(&report));
            Ok(if report.outcome == winddown::Outcome::Clean {
                0
            } else {
                1
            })
        }
        None => {
            println!("depot stopped without a shutdown report (killed, or it crashed)");
            Ok(1)
        }
    }
}

/// Prints whether depot runs, where, since when, how many records, and its last shutdown.
pub fn status(data_dir: &Path) -> Result<i32, ControlError> {
    let instance = crate::app::instance(data_dir);
    let status = instance.status();
    let Some(pid) = status.pid else {
        println!("depot is not running (data in {})", data_dir.display());
        print_last_shutdown(&instance);
        return Ok(3); // the LSB "not running" status code
    };
    let listen = status
        .run
        .as_ref()
        .and_then(|r| r.listen.clone())
        .unwrap_or_else(|| "unknown".to_owned());
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
    print_last_shutdown(&instance);
    Ok(0)
}

fn print_last_shutdown(instance: &winddown::instance::Instance) {
    match instance.last_shutdown() {
        Ok(Some(report)) => print!("{}", instance::report_lines(&report)),
        Ok(None) => {}
        Err(e) => println!("last shutdown: unreadable ({e})"),
    }
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
