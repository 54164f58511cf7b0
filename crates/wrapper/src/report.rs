//! What the wrapper adds to the library's shutdown report: which stop signals went to PROGRAM and
//! when, how long PROGRAM took, whether its tree had to be killed, its exit code. Logged as one
//! event and written as `NAME.last-stop.json` beside the logs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use winddown::ShutdownReport;

use crate::cli::StopSignal;

/// One stop signal sent (or tried).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SignalSent {
    pub(crate) signal: StopSignal,
    /// Wall clock, milliseconds since the Unix epoch.
    pub(crate) at_unix_ms: u64,
    /// Since the drain started.
    pub(crate) after_stop_ms: u64,
    /// Why it could not be sent, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// What happened to PROGRAM during the stop; filled in by the drain's phases.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct StopRecord {
    /// PROGRAM exited before any stop was asked of it (the service ends with it).
    pub(crate) exited_by_itself: bool,
    pub(crate) signals: Vec<SignalSent>,
    /// From the first stop signal to PROGRAM's exit, when it exited by itself after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) drained_in_ms: Option<u64>,
    /// The stop timeout in force for this stop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stop_timeout_ms: Option<u64>,
    /// Whether anything of PROGRAM's tree was still alive to be killed.
    pub(crate) tree_killed: bool,
    /// Whether PROGRAM itself was among them (it did not exit within the stop timeout).
    pub(crate) program_killed: bool,
    /// How many processes were killed.
    pub(crate) killed_processes: usize,
    /// PROGRAM's exit code (Unix: 128+N when killed by signal N).
    pub(crate) exit_code: Option<i32>,
    /// Lines captured from PROGRAM's stdout and stderr, when logging to files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) log_lines: Option<(u64, u64)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) log_error: Option<String>,
}

/// Shared between the phases. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Record(Arc<Mutex<StopRecord>>);

impl Record {
    pub(crate) fn update<T>(&self, f: impl FnOnce(&mut StopRecord) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn snapshot(&self) -> StopRecord {
        self.update(|r| r.clone())
    }
}

/// The whole report of one run of PROGRAM.
#[derive(Debug, Serialize)]
pub(crate) struct WrapperReport<'a> {
    pub(crate) name: &'a str,
    pub(crate) program: String,
    pub(crate) pid: u32,
    #[serde(flatten)]
    pub(crate) stop: StopRecord,
    /// The library's report of the drain (phases, budget, reason).
    pub(crate) drain: &'a ShutdownReport,
}

impl WrapperReport<'_> {
    /// Logs it as one event and, when there is a log directory, writes it beside the logs.
    pub(crate) fn publish(&self, log_dir: Option<&Path>) -> Option<PathBuf> {
        let json = serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        let signals: Vec<String> = self
            .stop
            .signals
            .iter()
            .map(|s| s.signal.to_string())
            .collect();
        tracing::info!(
            target: "winddown::wrapper",
            reason = self.drain.reason.as_str(),
            signals = %signals.join(","),
            drained_in_ms = self.stop.drained_in_ms,
            tree_killed = self.stop.tree_killed,
            exit_code = self.stop.exit_code,
            report = %json,
            "PROGRAM stopped: {}",
            self.summary()
        );
        let dir = log_dir?;
        let path = dir.join(format!("{}.last-stop.json", self.name));
        let written = (|| -> std::io::Result<()> {
            let tmp = dir.join(format!(".{}.last-stop.json.tmp", self.name));
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(json.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            sync_dir(dir)
        })();
        match written {
            Ok(()) => Some(path),
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "cannot write the stop report");
                None
            }
        }
    }

    /// One line for people.
    pub(crate) fn summary(&self) -> String {
        let code = self
            .stop
            .exit_code
            .map_or("unknown".to_owned(), |c| c.to_string());
        if self.stop.exited_by_itself {
            let left = if self.stop.tree_killed {
                format!(
                    "; {} process(es) it left were killed",
                    self.stop.killed_processes
                )
            } else {
                String::new()
            };
            return format!("it exited by itself with code {code}{left}");
        }
        let signals: Vec<String> = self
            .stop
            .signals
            .iter()
            .map(|s| s.signal.to_string())
            .collect();
        let mut how = match (self.stop.drained_in_ms, self.stop.program_killed) {
            (_, true) => format!(
                "it did not exit: its tree ({} processes) was killed at the deadline",
                self.stop.killed_processes
            ),
            (Some(ms), false) => format!(
                "it exited {:.3} s after {}",
                ms as f64 / 1000.0,
                signals.first().map_or("it", String::as_str)
            ),
            (None, false) => "it was gone".to_owned(),
        };
        if self.stop.tree_killed && !self.stop.program_killed {
            how.push_str(&format!(
                ", and {} process(es) it left were killed",
                self.stop.killed_processes
            ));
        }
        format!(
            "{} ({}): sent {}; {how}; exit code {code}",
            self.drain.reason,
            self.drain.reason.as_str(),
            if signals.is_empty() {
                "nothing".to_owned()
            } else {
                signals.join(", then ")
            },
        )
    }
}

/// Makes the rename durable: the directory's entry is fsynced on Unix. Windows cannot open a
/// directory as a file (access denied) and NTFS journals the rename itself.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    return std::fs::File::open(dir)?.sync_all();
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

pub(crate) fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}
