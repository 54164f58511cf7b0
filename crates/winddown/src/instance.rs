//! Instance control: what a running program leaves in its directory, so that its own command line
//! can find it, stop it while showing the drain, and say how it last stopped.
//!
//! One directory holds one instance (the single-instance [`LockFile`] makes sure of it):
//!
//! | file | written by | what |
//! |---|---|---|
//! | `{name}.lock` | the program ([`LockFile::acquire`]) | held while it runs; holds its PID |
//! | `{name}.running.json` | [`Instance::announce`] | [`RunInfo`]: PID, where it listens, version, start time |
//! | `shutdown.progress.jsonl` | [`Instance::progress_file`] | one [`Progress`] per line while it drains, then the report |
//! | `last-shutdown.json` | [`Instance::record`] | the last [`ShutdownReport`] |
//!
//! The program's side:
//!
//! ```no_run
//! # async fn app(host: winddown::Host, plan: winddown::DrainPlan) -> Result<(), Box<dyn std::error::Error>> {
//! use winddown::{LockFile, instance::Instance};
//!
//! let instance = Instance::new("/var/lib/myservice", "myservice");
//! let _lock = LockFile::acquire(instance.lock_path())?;
//! instance.announce(Some("127.0.0.1:8080".into()), Some(env!("CARGO_PKG_VERSION").into()))?;
//! host.ready();
//! let report = host.drain_with(plan, &instance.progress_file()).await;
//! instance.record(&report)?;
//! # Ok(()) }
//! ```
//!
//! The command line's side: [`Instance::stop`] (signal it, follow the drain, return the report;
//! [`ProgressPrinter`] prints it as it goes) and [`Instance::status`].

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::guard::LockFile;
use crate::progress::{Progress, ProgressEvent, Reporter};
use crate::report::ShutdownReport;

/// The progress file's name.
pub(crate) const PROGRESS_FILE: &str = "shutdown.progress.jsonl";
/// The last shutdown report's name.
pub(crate) const LAST_SHUTDOWN_FILE: &str = "last-shutdown.json";

/// What a running instance says about itself (`{name}.running.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Its process id.
    pub pid: u32,
    /// Where it listens (an address, a URL, a socket path), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Its version, if it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// When it announced itself (wall clock; milliseconds since the Unix epoch in JSON).
    #[serde(
        rename = "started_at_ms",
        default = "epoch",
        with = "crate::report::unix_millis"
    )]
    pub started_at: SystemTime,
}

fn epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH
}

/// Why an instance could not be stopped or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstanceError {
    /// The lock file names a process id that cannot be a running instance's (0, 1, or beyond
    /// what a PID can be): signalling it would reach a process group, `init`, or every process.
    #[error(
        "{path} names PID {pid}, which cannot be a running instance's; nothing was signalled \
         (is another program writing that file?)"
    )]
    InvalidPid {
        /// The lock file.
        path: PathBuf,
        /// What it holds.
        pid: u32,
    },
    /// The stop signal could not be sent.
    #[error("cannot signal PID {pid}: {source}")]
    Signal {
        /// The instance's process id.
        pid: u32,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The instance is still draining when the caller's time ran out.
    #[error("PID {pid} is still stopping after {waited:?}; its last progress: {last}")]
    StillStopping {
        /// The instance's process id.
        pid: u32,
        /// How long the caller waited.
        waited: Duration,
        /// Its last progress line.
        last: String,
    },
    /// This platform cannot ask a console program to stop from outside.
    #[error(
        "PID {pid} runs in a console: stop it with Ctrl+C in its window, or run it as a service \
         and stop it through the Service Control Manager"
    )]
    Unsupported {
        /// The instance's process id.
        pid: u32,
    },
    /// A file of the instance could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

/// The instance of the program `name` whose files are in `dir`.
#[derive(Debug, Clone)]
pub struct Instance {
    dir: PathBuf,
    name: String,
}

/// What [`Instance::status`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The PID holding the lock, if the instance runs.
    pub pid: Option<u32>,
    /// What it announced (absent while it starts, or when it runs an older version).
    pub run: Option<RunInfo>,
    /// How it last stopped (`None` also when the report cannot be read:
    /// [`Instance::last_shutdown`] says why).
    pub last_shutdown: Option<ShutdownReport>,
}

/// What [`Instance::stop`] tells its caller as the stop goes.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum StopEvent<'a> {
    /// The stop signal went to this process.
    Signalled {
        /// Its process id.
        pid: u32,
    },
    /// A progress report of its drain.
    Progress(&'a Progress),
}

/// What [`Instance::stop`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    /// The process it stopped.
    pub pid: u32,
    /// Its report (absent if it ended without writing one: killed, crashed).
    pub report: Option<ShutdownReport>,
}

impl Instance {
    /// The instance of `name` (which names its lock and run files) in `dir`.
    pub fn new(dir: impl Into<PathBuf>, name: impl Into<String>) -> Self {
        Instance {
            dir: dir.into(),
            name: name.into(),
        }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The single-instance lock: `{name}.lock`.
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join(format!("{}.lock", self.name))
    }

    /// The run file: `{name}.running.json`.
    pub fn run_path(&self) -> PathBuf {
        self.dir.join(format!("{}.running.json", self.name))
    }

    /// The progress file: `shutdown.progress.jsonl`.
    pub fn progress_path(&self) -> PathBuf {
        self.dir.join(PROGRESS_FILE)
    }

    /// The last report: `last-shutdown.json`.
    pub fn last_shutdown_path(&self) -> PathBuf {
        self.dir.join(LAST_SHUTDOWN_FILE)
    }

    /// Says that this process runs, where it listens and which version it is (the run file,
    /// written atomically), and removes the previous run's progress file.
    pub fn announce(
        &self,
        listen: Option<String>,
        version: Option<String>,
    ) -> Result<RunInfo, InstanceError> {
        let info = RunInfo {
            pid: std::process::id(),
            listen,
            version,
            started_at: SystemTime::now(),
        };
        let json = serde_json::to_vec(&info).map_err(|e| self.io(self.run_path(), e.into()))?;
        write_atomically(&self.run_path(), &json).map_err(|e| self.io(self.run_path(), e))?;
        let _ = fs::remove_file(self.progress_path());
        Ok(info)
    }

    /// A [`Reporter`] that writes each progress report to the progress file, for
    /// [`Instance::stop`] to follow. Creating it empties the file. If the file cannot be created,
    /// the reporter writes nothing (a stop still works; only its display is lost) and logs why.
    pub fn progress_file(&self) -> ProgressFile {
        let path = self.progress_path();
        let file = fs::File::create(&path)
            .inspect_err(|e| {
                tracing::warn!(path = %path.display(), error = %e, "cannot create the progress file");
            })
            .ok();
        ProgressFile(Mutex::new(file))
    }

    /// Keeps `report` as the last shutdown's (atomically) and removes the run file.
    pub fn record(&self, report: &ShutdownReport) -> Result<(), InstanceError> {
        let path = self.last_shutdown_path();
        write_atomically(&path, report.to_json().as_bytes()).map_err(|e| self.io(path, e))?;
        self.withdraw();
        Ok(())
    }

    /// Removes the run file: the instance no longer serves (a drain phase may call it early).
    pub fn withdraw(&self) {
        let _ = fs::remove_file(self.run_path());
    }

    /// What the run file says, if it is there and readable.
    pub fn run_info(&self) -> Option<RunInfo> {
        serde_json::from_slice(&fs::read(self.run_path()).ok()?).ok()
    }

    /// The last shutdown's report, if there is one. A file that is not a report is an error
    /// naming it.
    pub fn last_shutdown(&self) -> Result<Option<ShutdownReport>, InstanceError> {
        let path = self.last_shutdown_path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(path, e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| self.io(path, io::Error::new(io::ErrorKind::InvalidData, e)))
    }

    /// Whether the instance runs (the PID holding its lock), what it announced, how it last stopped.
    pub fn status(&self) -> Status {
        let pid = LockFile::holder(self.lock_path());
        Status {
            pid,
            run: pid.and(self.run_info()).filter(|r| Some(r.pid) == pid),
            last_shutdown: self.last_shutdown().ok().flatten(),
        }
    }

    /// Asks the running instance to stop (`SIGTERM`), tells `on_event` when the signal went out
    /// and each progress report of its drain as it happens, and returns its report once it is
    /// gone. `Ok(None)` when it does not run. Gives up after `timeout`
    /// ([`InstanceError::StillStopping`]).
    ///
    /// The PID comes from the lock file, which only a process holding the lock can write; still, a
    /// PID that cannot be an instance's (0, 1, or beyond `i32::MAX`, which `kill` would read as
    /// "every process") is refused without signalling anything.
    pub fn stop(
        &self,
        timeout: Duration,
        mut on_event: impl FnMut(StopEvent<'_>),
    ) -> Result<Option<Stopped>, InstanceError> {
        let lock = self.lock_path();
        let Some(pid) = LockFile::holder(&lock) else {
            return Ok(None);
        };
        let target = sys::Target::new(pid).ok_or_else(|| InstanceError::InvalidPid {
            path: lock.clone(),
            pid,
        })?;
        let signalled_at = SystemTime::now();
        target.terminate()?;
        on_event(StopEvent::Signalled { pid });
        let start = Instant::now();
        let mut follow = Follow::default();
        let mut last = String::from("(none yet)");
        let finished = loop {
            let finished = follow.read(&self.progress_path(), |p| {
                last = progress_line(p);
                on_event(StopEvent::Progress(p));
            });
            if finished.is_some() {
                break finished;
            }
            if LockFile::holder(&lock).is_none() && !target.alive() {
                break None;
            }
            if start.elapsed() > timeout {
                return Err(InstanceError::StillStopping {
                    pid,
                    waited: timeout,
                    last,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        // The report is written right after the drain; give the process a moment to exit.
        let gone_by = Instant::now() + Duration::from_secs(5);
        while target.alive() && Instant::now() < gone_by {
            std::thread::sleep(Duration::from_millis(20));
        }
        // The drain's own report; else the last report, if it is this stop's (not an older one
        // left by a run that was killed).
        let report = match finished {
            Some(report) => Some(*report),
            None => self
                .last_shutdown()?
                .filter(|r| r.started_at + Duration::from_secs(1) >= signalled_at),
        };
        Ok(Some(Stopped { pid, report }))
    }

    fn io(&self, path: PathBuf, source: io::Error) -> InstanceError {
        InstanceError::Io { path, source }
    }
}

/// Reads the complete lines the progress file gained since the last call.
#[derive(Debug, Default)]
struct Follow {
    /// Bytes of complete lines already handled.
    done: usize,
}

/// A progress file line: a report, or the drain's report at its end.
#[derive(Deserialize)]
#[serde(untagged)]
enum Line {
    Finished { finished: Box<ShutdownReport> },
    Progress(Box<Progress>),
}

impl Follow {
    /// Calls `each` with every new progress report; the drain's report once its end is in the file.
    fn read(
        &mut self,
        path: &Path,
        mut each: impl FnMut(&Progress),
    ) -> Option<Box<ShutdownReport>> {
        let Ok(bytes) = fs::read(path) else {
            return None;
        };
        if bytes.len() < self.done {
            self.done = 0; // a new drain's file
        }
        // Only complete lines: the writer may be in the middle of one.
        let end = bytes.iter().rposition(|&b| b == b'\n')?;
        let mut finished = None;
        if end + 1 > self.done {
            for line in bytes[self.done..=end].split(|&b| b == b'\n') {
                match serde_json::from_slice::<Line>(line) {
                    Ok(Line::Progress(p)) => each(&p),
                    Ok(Line::Finished { finished: report }) => finished = Some(report),
                    Err(_) => {} // an empty line, or a line of a newer format
                }
            }
            self.done = end + 1;
        }
        finished
    }
}

/// Writes each progress report as one JSON line, and the report at the end as
/// `{"finished": report}` ([`Instance::progress_file`]).
#[derive(Debug)]
pub struct ProgressFile(Mutex<Option<fs::File>>);

impl ProgressFile {
    fn write_line(&self, mut line: String) {
        line.push('\n');
        // One write per line, so that a reader sees whole lines or none of one.
        if let Some(file) = self.0.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            let _ = file.write_all(line.as_bytes());
        }
    }
}

impl Reporter for ProgressFile {
    fn progress(&self, progress: &Progress) {
        if let Ok(line) = serde_json::to_string(progress) {
            self.write_line(line);
        }
    }

    fn finished(&self, report: &ShutdownReport) {
        self.write_line(format!("{{\"finished\":{}}}", report.to_json()));
    }
}

/// One progress report as a line for a person: `phase 2/5 flush — 1.2 s left: 300 of 1000`, or,
/// when a phase ended, `phase 2/5 flush: done`.
pub(crate) fn progress_line(p: &Progress) -> String {
    let Some(phase) = &p.phase else {
        return format!("stopping ({})", p.reason.as_str());
    };
    let at = format!("phase {}/{} {}", phase.index + 1, phase.count, phase.name);
    if let ProgressEvent::PhaseEnded { outcome } = &p.event {
        return format!("{at}: {outcome}");
    }
    let mut line = format!("{at} — {:.1} s left", phase.remaining.as_secs_f64());
    if let Some(m) = &phase.message {
        line.push_str(": ");
        line.push_str(m);
    }
    line
}

/// A report as the lines `stop` and `status` print:
///
/// ```text
/// last shutdown: clean after sig_term, every phase done in 0.027 s
///   readiness off, listener closed      0.000 s  done
///   group commit                        0.000 s  done — 0 requests flushed
/// ```
pub fn report_lines(report: &ShutdownReport) -> String {
    let mut text = format!(
        "last shutdown: {} after {}, {} in {:.3} s\n",
        report.outcome.as_str(),
        report.reason.as_str(),
        if report.outcome == crate::Outcome::Clean {
            "every phase done"
        } else {
            "not every phase done"
        },
        report.duration.as_secs_f64()
    );
    for p in &report.phases {
        text.push_str(&format!(
            "  {:<32} {:>8.3} s  {}",
            p.name,
            p.duration.as_secs_f64(),
            p.outcome
        ));
        if let Some(d) = &p.detail {
            text.push_str(" — ");
            text.push_str(d);
        }
        text.push('\n');
    }
    text
}

/// Prints progress for a person: on a terminal one line redrawn in place (with a spinner), else a
/// line each time the status changes. Call [`ProgressPrinter::print`] with each
/// [`StopEvent::Progress`] of [`Instance::stop`].
#[derive(Debug)]
pub struct ProgressPrinter<W: Write> {
    out: W,
    terminal: bool,
    last: String,
    shown: usize,
}

impl<W: Write> ProgressPrinter<W> {
    /// A printer to `out`; `terminal` redraws one line in place.
    pub fn new(out: W, terminal: bool) -> Self {
        ProgressPrinter {
            out,
            terminal,
            last: String::new(),
            shown: 0,
        }
    }

    /// Prints one report (write errors are ignored: the display must not fail the stop).
    pub fn print(&mut self, progress: &Progress) {
        const SPINNER: [char; 4] = ['|', '/', '-', '\\'];
        let line = progress_line(progress);
        if self.terminal {
            let _ = write!(
                self.out,
                "\r\x1b[2K{} {line}",
                SPINNER[self.shown % SPINNER.len()]
            );
            let _ = self.out.flush();
        } else if line != self.last {
            let _ = writeln!(self.out, "  {line}");
        }
        self.shown += 1;
        self.last = line;
    }

    /// Ends the redrawn line, on a terminal.
    pub fn finish(&mut self) {
        if self.terminal && self.shown > 0 {
            let _ = writeln!(self.out);
        }
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers never see half.
///
/// Durably, too: the file is fsynced before the rename and its directory after it, so that a power
/// cut can neither leave an empty file nor bring the previous one back (the power-cut loop found
/// a clean stop's report read back empty).
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    // Windows cannot open a directory as a file; NTFS journals directory entries itself.
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(unix)]
mod sys {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    use super::InstanceError;

    /// A process that may be signalled: never 0 (our process group), 1 (`init`) or a value that
    /// `kill` reads as a group or as "every process".
    pub(super) struct Target(Pid);

    impl Target {
        pub(super) fn new(pid: u32) -> Option<Self> {
            match i32::try_from(pid) {
                Ok(raw) if raw > 1 => Some(Target(Pid::from_raw(raw))),
                _ => None,
            }
        }

        pub(super) fn terminate(&self) -> Result<(), InstanceError> {
            kill(self.0, Signal::SIGTERM).map_err(|e| InstanceError::Signal {
                pid: self.0.as_raw().unsigned_abs(),
                source: e.into(),
            })
        }

        pub(super) fn alive(&self) -> bool {
            kill(self.0, None).is_ok()
        }
    }
}

#[cfg(not(unix))]
mod sys {
    use super::InstanceError;

    pub(super) struct Target(u32);

    impl Target {
        pub(super) fn new(pid: u32) -> Option<Self> {
            (pid > 1).then_some(Target(pid))
        }

        /// A console program on Windows can only be asked to stop from its own console.
        pub(super) fn terminate(&self) -> Result<(), InstanceError> {
            Err(InstanceError::Unsupported { pid: self.0 })
        }

        pub(super) fn alive(&self) -> bool {
            false
        }
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use crate::testing::simulate;
    use crate::{DrainPlan, Stage, StopReason};

    fn plan() -> DrainPlan {
        DrainPlan::new()
            .phase(Stage::StopAccepting, "close listener", |_| async {
                Ok::<_, std::io::Error>(())
            })
            .phase(Stage::Flush, "flush", |ctx| async move {
                ctx.set_progress("300 of 1000");
                tokio::time::sleep(Duration::from_secs(1)).await;
                ctx.set_detail("1000 records flushed");
                Ok::<_, std::io::Error>(())
            })
    }

    #[tokio::test(start_paused = true)]
    async fn the_progress_file_reads_back_typed_with_each_phase_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let instance = Instance::new(dir.path(), "svc");
        let run = simulate(StopReason::SigTerm, plan()).await;
        let file = instance.progress_file();
        for p in &run.progress {
            file.progress(p);
        }
        file.finished(&run.report);
        let mut seen = Vec::new();
        let finished = Follow::default().read(&instance.progress_path(), |p| seen.push(p.clone()));
        assert_eq!(finished.unwrap().outcome, run.report.outcome);
        // Every report reads back (durations to the millisecond).
        assert_eq!(seen.len(), run.progress.len());
        for (read, written) in seen.iter().zip(&run.progress) {
            assert_eq!(read.event, written.event);
            assert_eq!(read.checkpoint, written.checkpoint);
            assert_eq!(read.reason, written.reason);
            assert_eq!(
                read.phase.as_ref().map(|p| &p.name),
                written.phase.as_ref().map(|p| &p.name)
            );
            assert_eq!(read.elapsed.as_millis(), written.elapsed.as_millis());
        }
        let ended: Vec<String> = seen
            .iter()
            .filter(|p| matches!(p.event, ProgressEvent::PhaseEnded { .. }))
            .map(progress_line)
            .collect();
        assert_eq!(
            ended,
            ["phase 1/2 close listener: done", "phase 2/2 flush: done"]
        );
        assert!(
            seen.iter()
                .map(progress_line)
                .any(|l| l.starts_with("phase 2/2 flush — ") && l.ends_with(": 300 of 1000")),
            "{seen:?}"
        );
    }

    #[test]
    fn a_half_written_line_waits_for_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PROGRESS_FILE);
        let line = r#"{"event":"started","checkpoint":1,"reason":"sig_term","phase":null,"elapsed":0,"remaining":20000}"#;
        fs::write(&path, &line[..40]).unwrap();
        let mut follow = Follow::default();
        let mut n = 0;
        assert!(follow.read(&path, |_| n += 1).is_none());
        assert_eq!(n, 0);
        fs::write(&path, format!("{line}\n")).unwrap();
        assert!(follow.read(&path, |_| n += 1).is_none());
        assert_eq!(n, 1, "the line is read once it is whole");
        assert!(follow.read(&path, |_| n += 1).is_none());
        assert_eq!(n, 1, "and only once");
    }

    #[tokio::test(start_paused = true)]
    async fn run_file_and_last_report_round_trip_and_status_needs_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let instance = Instance::new(dir.path(), "svc");
        assert_eq!(instance.status().pid, None);
        let lock = LockFile::acquire(instance.lock_path()).unwrap();
        let info = instance
            .announce(Some("127.0.0.1:9".into()), Some("1.2.3".into()))
            .unwrap();
        let status = instance.status();
        assert_eq!(status.pid, Some(std::process::id()));
        assert_eq!(status.run.as_ref().map(|r| &r.listen), Some(&info.listen));
        assert_eq!(status.run.unwrap().version.as_deref(), Some("1.2.3"));

        let report = simulate(StopReason::SigTerm, plan()).await.report;
        instance.record(&report).unwrap();
        drop(lock);
        let status = instance.status();
        assert_eq!(status.pid, None);
        assert_eq!(status.run, None, "the run file is gone");
        let last = status.last_shutdown.unwrap();
        // Durations and times are whole milliseconds in JSON.
        assert_eq!(last.phases.len(), 2);
        assert_eq!(last.reason, StopReason::SigTerm);
        assert_eq!(last.outcome, report.outcome);
        assert_eq!(
            last.phases[1].detail.as_deref(),
            Some("1000 records flushed")
        );
        let lines = report_lines(&last);
        assert!(
            lines.starts_with("last shutdown: clean after sig_term, every phase done in "),
            "{lines}"
        );
        assert!(lines.contains("flush") && lines.contains("done — 1000 records flushed"));

        fs::write(instance.last_shutdown_path(), "not json").unwrap();
        let error = instance.last_shutdown().unwrap_err().to_string();
        assert!(error.contains(LAST_SHUTDOWN_FILE), "{error}");
    }

    #[test]
    fn pids_that_would_signal_a_group_init_or_everyone_are_refused() {
        for pid in [0, 1] {
            assert!(sys::Target::new(pid).is_none(), "{pid}");
        }
        // `kill` takes an i32: beyond it a PID would wrap to a group, or to -1 (every process).
        #[cfg(unix)]
        for pid in [u32::MAX, i32::MAX as u32 + 1] {
            assert!(sys::Target::new(pid).is_none(), "{pid}");
        }
        assert!(sys::Target::new(std::process::id()).is_some());
    }
}
