//! `winddown run -- PROGRAM`: PROGRAM hosted on the library's own shutdown model.
//!
//! `winddown::run` picks the host (console, systemd, SCM) and turns every stop source into one
//! `Shutdown`; the drain plan is PROGRAM's stop:
//!
//! 1. **signal PROGRAM** — the first stop signal, at once;
//! 2. **wait for PROGRAM to exit** — until the stop timeout, sending the next signals of the list
//!    at even fractions of it; the library keeps reporting progress (SCM checkpoints, systemd
//!    `EXTEND_TIMEOUT_USEC`) while it waits. Best effort: a second Ctrl+C cuts it short;
//! 3. **kill the tree** — whatever of PROGRAM's tree is still alive (required);
//! 4. **flush logs** — the output pipes read to their end, the log file fsynced (required).
//!
//! When PROGRAM exits by itself the service stops too: the same plan runs, with nothing to
//! signal, and ends what PROGRAM left running.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use winddown::AppError;
use winddown::{Budgets, DrainPlan, Host, HostOptions, Phase, ShutdownReport, Stage, StopReason};

use crate::child::{Child, SpawnError, Spec};
use crate::cli::{RunOptions, StopSignal};
use crate::logs::Logs;
use crate::ready::Probe;
use crate::report::{Record, SignalSent, WrapperReport, unix_ms};

/// What the wrapper keeps for itself out of a stop's budget when no `--stop-timeout` is given
/// (kill the tree, read the pipes to their end, write the report), and adds to an explicit one.
pub(crate) const WRAPPER_MARGIN: Duration = Duration::from_secs(2);

/// The exit code for a PROGRAM that could not be started: 127 not found, 126 not executable,
/// as shells do; 2 for other bad settings.
static START_FAILURE: OnceLock<i32> = OnceLock::new();

/// Runs PROGRAM until a stop; returns the process exit code (PROGRAM's).
pub(crate) fn run(options: RunOptions) -> i32 {
    let name = options.service_name();
    let budgets = budgets(options.stop_timeout);
    let code = winddown::run(HostOptions::new(&name).budgets(budgets), move |host| {
        serve(host, options)
    });
    START_FAILURE.get().copied().unwrap_or(code)
}

/// With `--stop-timeout T`, the stops that can wait as long as asked (Ctrl+C, SIGINT, SIGTERM,
/// SCM stop) get T plus the wrapper's margin; the others keep what their platform allows
/// (console close 5 s, SCM shutdown 5 s, the configured preshutdown timeout), and PROGRAM's wait
/// ends before that.
fn budgets(stop_timeout: Option<Duration>) -> Budgets {
    let mut budgets = Budgets::new();
    if let Some(t) = stop_timeout {
        for reason in [
            StopReason::SigInt,
            StopReason::SigTerm,
            StopReason::CtrlC,
            StopReason::CtrlBreak,
            StopReason::ScmStop,
            StopReason::Requested,
        ] {
            budgets.set(reason, t + WRAPPER_MARGIN);
        }
    }
    budgets
}

async fn serve(host: Host, options: RunOptions) -> Result<ShutdownReport, AppError> {
    let name = options.service_name();
    let fail = |code: i32, message: String| -> AppError {
        let _ = START_FAILURE.set(code);
        eprintln!("winddown: {message}");
        message.into()
    };
    let probe = Probe::from_options(options.ready_tcp.as_deref(), options.ready_http.as_deref())
        .map_err(|e| fail(2, e))?;
    let logs = match &options.log_dir {
        Some(dir) => Some(
            Logs::open(dir, &name, options.log_max_bytes, options.log_keep)
                .map_err(|e| fail(2, e))?,
        ),
        None => None,
    };
    let spec = Spec {
        program: options.command[0].clone(),
        args: options.command[1..].to_vec(),
        env: options.env.clone(),
        cwd: options.cwd.clone(),
        capture: logs.is_some(),
    };
    let program = spec.program.to_string_lossy().into_owned();
    let (child, out, err) = Child::spawn(&spec).map_err(|SpawnError(e)| {
        let code = if e.contains("permission denied") {
            126
        } else {
            127
        };
        fail(code, e)
    })?;
    let pid = child.pid();
    let readers = logs.as_ref().map(|logs| {
        (
            out.map(|p| logs.capture(p, "stdout")),
            err.map(|p| logs.capture(p, "stderr")),
        )
    });
    match &logs {
        Some(logs) => {
            tracing::info!(pid, program = %program, log = %logs.path().display(), "PROGRAM started")
        }
        None => tracing::info!(pid, program = %program, "PROGRAM started"),
    }
    let child = Arc::new(child);
    let record = Record::default();

    // PROGRAM ending by itself ends the service: the drain then ends what it left behind.
    {
        let child = child.clone();
        let shutdown = host.shutdown().clone();
        let record = record.clone();
        tokio::spawn(async move {
            let code = child.exited().await;
            if !shutdown.is_requested() {
                tracing::warn!(pid, code, "PROGRAM exited by itself; stopping");
                record.update(|r| r.exited_by_itself = true);
                shutdown.request();
            }
        });
    }

    match &probe {
        Some(probe) => wait_until_ready(&host, probe).await,
        None => host.ready(),
    }

    let signals = options.signals();
    let plan = plan(
        child.clone(),
        record.clone(),
        signals,
        options.stop_timeout,
        logs.clone(),
        readers,
    );
    let report = host.drain(plan).await;
    let mut stop = record.snapshot();
    stop.exit_code = child.exit_code();
    if let Some(logs) = &logs {
        stop.log_error = logs.error();
    }
    let wrapper = WrapperReport {
        name: &name,
        program,
        pid,
        stop,
        drain: &report,
    };
    wrapper.publish(logs.as_ref().map(Logs::dir).as_deref());
    let code = child.exit_code().unwrap_or_else(|| report.exit_code());
    Ok(report.with_exit_code(code))
}

/// Probes until PROGRAM answers, then reports ready; a stop before that ends the wait (and the
/// service is never reported ready). The status line keeps the manager informed meanwhile.
async fn wait_until_ready(host: &Host, probe: &Probe) {
    let started = Instant::now();
    loop {
        if host.shutdown().is_requested() {
            return;
        }
        let last_error = match probe.check().await {
            Ok(()) => {
                tracing::info!(
                    after_ms = started.elapsed().as_millis() as u64,
                    "PROGRAM answers: {}",
                    probe.describe()
                );
                host.ready();
                return;
            }
            Err(e) => e,
        };
        host.status(&format!(
            "starting: waiting {:.0} s for {} ({last_error})",
            started.elapsed().as_secs_f64(),
            probe.describe()
        ));
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = host.shutdown().requested() => return,
        }
    }
}

/// The threads reading PROGRAM's stdout and stderr into the log (each returns its line count).
type Readers = (
    Option<std::thread::JoinHandle<u64>>,
    Option<std::thread::JoinHandle<u64>>,
);

/// The moment the first stop signal went out, for the later signals and the wait's deadline.
type FirstSignal = Arc<OnceLock<(Instant, SystemTime)>>;

fn send(child: &Child, record: &Record, signal: StopSignal, stop_started: Instant) -> bool {
    let result = child.signal(signal);
    let error = result.as_ref().err().map(ToString::to_string);
    match &error {
        None => tracing::info!(pid = child.pid(), %signal, "stop signal sent to PROGRAM"),
        Some(e) => {
            tracing::warn!(pid = child.pid(), %signal, error = %e, "cannot send this stop signal; trying the next")
        }
    }
    record.update(|r| {
        r.signals.push(SignalSent {
            signal,
            at_unix_ms: unix_ms(SystemTime::now()),
            after_stop_ms: stop_started.elapsed().as_millis() as u64,
            error,
        })
    });
    result.is_ok()
}

fn plan(
    child: Arc<Child>,
    record: Record,
    signals: Vec<StopSignal>,
    stop_timeout: Option<Duration>,
    logs: Option<Logs>,
    readers: Option<Readers>,
) -> DrainPlan {
    let first: FirstSignal = Arc::default();
    let drain_started: Arc<OnceLock<Instant>> = Arc::default();

    let signal_phase = {
        let (child, record, signals, first, drain_started) = (
            child.clone(),
            record.clone(),
            signals.clone(),
            first.clone(),
            drain_started.clone(),
        );
        Phase::new(
            Stage::StopAccepting,
            "signal PROGRAM",
            move |ctx| async move {
                let now = Instant::now();
                let _ = drain_started.set(now);
                if let Some(code) = child.exit_code() {
                    ctx.set_detail(format!(
                        "PROGRAM had exited (code {code}): nothing to signal"
                    ));
                    return Ok::<_, std::io::Error>(());
                }
                // Try the list in order until one can be sent (Windows may refuse CTRL_BREAK).
                for &signal in &signals {
                    if send(&child, &record, signal, now) {
                        let _ = first.set((now, SystemTime::now()));
                        ctx.set_detail(format!("{signal} sent to PROGRAM (pid {})", child.pid()));
                        return Ok(());
                    }
                }
                let _ = first.set((now, SystemTime::now()));
                Err(std::io::Error::other(
                    "no stop signal could be sent; PROGRAM will be killed at the deadline",
                ))
            },
        )
        .weight(1)
    };

    let wait_phase = {
        let (child, record, signals, first) = (
            child.clone(),
            record.clone(),
            signals.clone(),
            first.clone(),
        );
        Phase::new(Stage::FinishInFlight, "wait for PROGRAM to exit", move |ctx| async move {
            let Some(&(first_at, _)) = first.get() else {
                // Nothing was signalled: PROGRAM had exited.
                return Ok::<_, String>(());
            };
            let limit = match stop_timeout {
                Some(t) => (first_at + t).min(ctx.deadline()),
                None => ctx.deadline(),
            };
            let span = limit.saturating_duration_since(first_at);
            record.update(|r| r.stop_timeout_ms = Some(span.as_millis() as u64));
            // The signal the first phase sent is the first that worked; later ones go out at
            // even fractions of the timeout.
            let sent = record.update(|r| r.signals.len());
            let mut next = sent;
            let count = signals.len();
            let mut ticks = tokio::time::interval(Duration::from_millis(250));
            loop {
                let next_at = if next < count {
                    first_at + span.mul_f64(next as f64 / count as f64)
                } else {
                    limit
                };
                tokio::select! {
                    code = child.exited() => {
                        let took = first_at.elapsed();
                        record.update(|r| r.drained_in_ms = Some(took.as_millis() as u64));
                        ctx.set_detail(format!("PROGRAM exited with code {code} after {:.3} s", took.as_secs_f64()));
                        return Ok(());
                    }
                    _ = tokio::time::sleep_until(next_at.min(limit)) => {
                        if Instant::now() >= limit {
                            return Err(format!(
                                "PROGRAM did not exit within the {:.1} s stop timeout",
                                span.as_secs_f64()
                            ));
                        }
                        let signal = signals[next];
                        next += 1;
                        send(&child, &record, signal, first_at);
                    }
                    _ = ticks.tick() => {
                        ctx.set_progress(format!(
                            "waiting for PROGRAM (pid {}) to exit: {:.1} s since {}, {:.1} s left",
                            child.pid(),
                            first_at.elapsed().as_secs_f64(),
                            signals[next.saturating_sub(1).min(count - 1)],
                            limit.saturating_duration_since(Instant::now()).as_secs_f64()
                        ));
                    }
                }
            }
        })
        .weight(1000)
        .best_effort()
    };

    let kill_phase = {
        let (child, record) = (child.clone(), record.clone());
        Phase::new(
            Stage::FinishInFlight,
            "kill the tree",
            move |ctx| async move {
                let program_alive = child.exit_code().is_none();
                let killed = child.kill_tree().await;
                let code = tokio::time::timeout(Duration::from_secs(1), child.exited())
                    .await
                    .ok();
                record.update(|r| {
                    r.tree_killed = killed > 0;
                    r.program_killed = program_alive && killed > 0;
                    r.killed_processes = killed;
                });
                ctx.set_detail(match (killed, code) {
                    (0, _) => "nothing left to kill".to_owned(),
                    (n, Some(code)) => format!("{n} processes killed; PROGRAM's exit code {code}"),
                    (n, None) => format!("{n} processes killed; PROGRAM's exit not seen"),
                });
                Ok::<_, std::io::Error>(())
            },
        )
        .required()
        .weight(1)
        .at_least(Duration::from_millis(2500))
    };

    let flush_phase = Phase::new(Stage::Flush, "flush logs", move |ctx| async move {
        let Some(logs) = logs else {
            ctx.set_detail("output passed through, not captured");
            return Ok::<_, String>(());
        };
        let (out, err) = readers.unwrap_or((None, None));
        // The pipes end once the tree is gone; each reader thread returns its line count.
        let joined = tokio::task::spawn_blocking(move || {
            (
                out.map_or(0, |h| h.join().unwrap_or(0)),
                err.map_or(0, |h| h.join().unwrap_or(0)),
            )
        })
        .await
        .map_err(|e| e.to_string())?;
        record.update(|r| r.log_lines = Some(joined));
        logs.sync()
            .map_err(|e| format!("fsync of {}: {e}", logs.path().display()))?;
        ctx.set_detail(format!(
            "{} stdout and {} stderr lines in {}",
            joined.0,
            joined.1,
            logs.path().display()
        ));
        Ok(())
    })
    .required()
    .at_least(Duration::from_secs(1));

    DrainPlan::new()
        .with(signal_phase)
        .with(wait_phase)
        .with(kill_phase)
        .with(flush_phase)
}
