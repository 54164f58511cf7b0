//! Real signals to real processes: the test binary re-runs itself as a child (selected by
//! `WINDDOWN_CHILD`) that runs under the console host, and the parent signals it and reads its
//! exit code and report.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use winddown::{Budgets, DrainPlan, ForceAction, HostOptions, LockFile, Stage, StopReason};

const CHILD_ENV: &str = "WINDDOWN_CHILD";

/// The child's side: selected by `WINDDOWN_CHILD`, never run on its own.
#[test]
#[ignore = "child process of the signal tests"]
fn child_process() {
    let scenario = std::env::var(CHILD_ENV).expect("run by the signal tests");
    let budgets = Budgets::new()
        .with(StopReason::SigTerm, Duration::from_secs(5))
        .with(StopReason::SigInt, Duration::from_secs(5));
    // "…-report": the program, not the library, decides what a forced stop does.
    let on_force = if scenario.ends_with("-report") {
        ForceAction::Report
    } else {
        ForceAction::Exit
    };
    let code = winddown::run(
        HostOptions::new("signals-test")
            .budgets(budgets)
            .on_force(on_force),
        move |host| async move {
            let _lock = match std::env::var("WINDDOWN_LOCK") {
                Ok(path) => {
                    Some(LockFile::acquire(path).inspect_err(|e| println!("START ERROR {e}"))?)
                }
                Err(_) => None,
            };
            let slow_flush = scenario.starts_with("slow-flush");
            let blocking_flush = scenario == "blocking-flush";
            let in_flight = match scenario.as_str() {
                "slow" => Duration::from_secs(2),
                "blocking-flush" => Duration::ZERO,
                _ => Duration::from_secs(3600),
            };
            host.shutdown()
                .tasks()
                .spawn("stuck request", move |stop| async move {
                    stop.cancelled().await;
                    tokio::time::sleep(in_flight).await;
                });
            let plan = DrainPlan::new()
                .phase(Stage::StopAccepting, "close listener", |_| async {
                    Ok::<_, std::io::Error>(())
                })
                .wait_for_tasks()
                .phase(Stage::Flush, "flush", move |ctx| async move {
                    if slow_flush {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    if blocking_flush {
                        // Synchronous work that never yields, far past the budget.
                        std::thread::sleep(Duration::from_secs(30));
                    }
                    ctx.set_detail("flushed 7 records");
                    Ok::<_, std::io::Error>(())
                })
                .phase(Stage::Release, "release lock", |_| async {
                    Ok::<_, std::io::Error>(())
                });
            host.ready();
            let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
            println!("READY on {cpus} CPU(s)");
            let report = host.drain(plan).await;
            println!("REPORT {}", report.to_json());
            if on_force == ForceAction::Report {
                // What only a program that was left alive can do: act after a forced drain.
                tokio::time::sleep(Duration::from_millis(300)).await;
                println!("AFTER THE DRAIN");
            }
            Ok(report)
        },
    );
    std::process::exit(code);
}

/// Kills the child if a test fails before it exits, so no child outlives the test run.
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

fn spawn(scenario: &str, lock: Option<&std::path::Path>) -> Running {
    spawn_with(
        Command::new(std::env::current_exe().unwrap()),
        scenario,
        lock,
    )
}

/// The child restricted to one CPU (`taskset -c 0`), as in a container limited to one.
fn spawn_on_one_cpu(scenario: &str) -> Running {
    let mut taskset = Command::new("taskset");
    taskset
        .args(["-c", "0"])
        .arg(std::env::current_exe().unwrap());
    spawn_with(taskset, scenario, None)
}

fn spawn_with(mut cmd: Command, scenario: &str, lock: Option<&std::path::Path>) -> Running {
    cmd.args([
        "--exact",
        "child_process",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, scenario)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(lock) = lock {
        cmd.env("WINDDOWN_LOCK", lock);
    }
    let mut child = cmd.spawn().unwrap();
    let (tx, lines) = mpsc::channel();
    for out in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    Running { child, lines }
}

impl Running {
    fn wait_for(&self, prefix: &str, within: Duration) -> String {
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                // The harness prints "test child_process ... " before the child's first line.
                Ok(line) => {
                    if let Some(at) = line.find(prefix) {
                        return line[at..].to_owned();
                    }
                }
                Err(_) => panic!("no {prefix:?} line within {within:?}"),
            }
        }
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Waits for the exit; returns the exit code and the time since `from`.
    fn exit(&mut self, from: Instant, within: Duration) -> (i32, Duration) {
        let end = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code().expect("exited, not killed"), from.elapsed());
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!("child still running after {within:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn report(&self) -> serde_json::Value {
        let line = self.wait_for("REPORT ", Duration::from_secs(1));
        serde_json::from_str(&line["REPORT ".len()..]).unwrap()
    }
}

fn phase<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no phase {name} in {report}"))
}

#[test]
fn sigterm_with_a_two_second_phase_exits_zero_after_it() {
    let mut child = spawn("slow", None);
    child.wait_for("READY", Duration::from_secs(10));
    let sent = Instant::now();
    child.signal(Signal::SIGTERM);
    let (code, took) = child.exit(sent, Duration::from_secs(10));
    assert_eq!(code, 0);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_millis(3000),
        "{took:?}"
    );
    let report = child.report();
    assert_eq!(report["reason"], "sig_term");
    assert_eq!(report["outcome"], "clean");
    let names: Vec<_> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["close listener", "tracked tasks", "flush", "release lock"]
    );
}

#[test]
fn a_hanging_task_is_cut_at_the_budget_with_a_distinct_code_and_flush_still_runs() {
    let mut child = spawn("hang", None);
    child.wait_for("READY", Duration::from_secs(10));
    let sent = Instant::now();
    child.signal(Signal::SIGTERM);
    let (code, took) = child.exit(sent, Duration::from_secs(10));
    assert_eq!(code, winddown::EXIT_CUT_OFF);
    // 5 s budget less the 0.5 s margin.
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let report = child.report();
    assert_eq!(report["outcome"], "cut_off");
    assert_eq!(phase(&report, "tracked tasks")["outcome"], "cut_off");
    assert_eq!(phase(&report, "tracked tasks")["by"], "deadline");
    assert_eq!(report["stragglers"][0], "stuck request");
    assert_eq!(phase(&report, "flush")["outcome"], "done");
    assert_eq!(phase(&report, "flush")["detail"], "flushed 7 records");
}

#[test]
fn a_second_sigint_cuts_the_wait_short_but_still_flushes() {
    let mut child = spawn("hang", None);
    child.wait_for("READY", Duration::from_secs(10));
    let sent = Instant::now();
    child.signal(Signal::SIGINT);
    std::thread::sleep(Duration::from_millis(500));
    child.signal(Signal::SIGINT);
    let (code, took) = child.exit(sent, Duration::from_secs(10));
    assert_eq!(code, winddown::EXIT_CUT_OFF);
    assert!(took < Duration::from_millis(1500), "{took:?}");
    let report = child.report();
    assert_eq!(report["escalation"], "hurry");
    assert_eq!(phase(&report, "tracked tasks")["by"], "escalation");
    assert_eq!(phase(&report, "flush")["outcome"], "done");
}

/// Starts `scenario`, presses Ctrl+C three times during its hour-long flush, and waits for the
/// exit: the child, its exit code, and the time from the first SIGINT.
fn three_sigints(scenario: &str) -> (Running, i32, Duration) {
    let mut child = spawn(scenario, None);
    child.wait_for("READY", Duration::from_secs(10));
    let sent = Instant::now();
    for _ in 0..3 {
        child.signal(Signal::SIGINT);
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, took) = child.exit(sent, Duration::from_secs(10));
    (child, code, took)
}

#[test]
fn a_third_sigint_exits_at_once_even_during_a_long_flush() {
    let (_child, code, took) = three_sigints("slow-flush");
    assert_eq!(code, winddown::EXIT_FORCED);
    assert!(took < Duration::from_millis(1000), "{took:?}");
}

/// With `ForceAction::Report` the third SIGINT does not end the process inside the library: the
/// drain returns a forced report at once and the program gets to act on it (here: print it).
#[test]
fn with_force_action_report_a_third_sigint_returns_a_forced_report_to_the_program() {
    let (child, code, took) = three_sigints("slow-flush-report");
    assert_eq!(code, winddown::EXIT_FORCED);
    assert!(took < Duration::from_millis(2000), "{took:?}");
    let report = child.report();
    child.wait_for("AFTER THE DRAIN", Duration::from_secs(1));
    assert_eq!(report["outcome"], "forced");
    assert_eq!(report["triggers"].as_array().unwrap().len(), 3);
    assert_eq!(phase(&report, "flush")["by"], "force");
}

/// Issue #14 item 5: SIGTERM is a manager's stop (systemd, Kubernetes, launchd), and a manager may
/// send it again — a container runtime that repeats it, a restarted kubelet. However often it
/// comes, the drain runs in full: the in-flight task's 2 s are waited for and the flush runs.
#[test]
fn sigterm_three_times_still_drains_in_full() {
    let mut child = spawn("slow", None);
    child.wait_for("READY", Duration::from_secs(10));
    let sent = Instant::now();
    for _ in 0..3 {
        child.signal(Signal::SIGTERM);
        std::thread::sleep(Duration::from_millis(300));
    }
    let (code, took) = child.exit(sent, Duration::from_secs(10));
    let report = child.report();
    assert_eq!(code, 0, "{report}");
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert_eq!(report["outcome"], "clean");
    assert_eq!(report["escalation"], "draining");
    // Signals that arrive before the listener runs again count once (they coalesce); on a
    // loaded machine two of the three may.
    let triggers = report["triggers"].as_array().unwrap();
    assert!(triggers.len() >= 2, "{report}");
    assert!(triggers.iter().all(|t| t == "sig_term"), "{report}");
    assert_eq!(phase(&report, "flush")["outcome"], "done");
}

/// A flush that blocks its thread for 30 s, in a process that may use one CPU: the drain still cuts
/// it off at its budget, runs the phases after it, and the process exits without waiting for the
/// blocked thread — the runtime has a second worker, and its leftovers get one second.
#[test]
fn a_flush_blocking_its_thread_on_one_cpu_is_cut_off_and_the_process_exits() {
    let mut child = spawn_on_one_cpu("blocking-flush");
    let ready = child.wait_for("READY", Duration::from_secs(10));
    assert_eq!(ready, "READY on 1 CPU(s)");
    let sent = Instant::now();
    child.signal(Signal::SIGTERM);
    let (code, took) = child.exit(sent, Duration::from_secs(10));
    assert_eq!(code, winddown::EXIT_CUT_OFF);
    // Within the 5 s budget, plus at most the runtime's one second for its leftovers.
    assert!(took < Duration::from_millis(6500), "{took:?}");
    let report = child.report();
    assert_eq!(phase(&report, "flush")["outcome"], "cut_off");
    assert_eq!(phase(&report, "flush")["by"], "deadline");
    assert_eq!(phase(&report, "release lock")["outcome"], "done");
}

#[test]
fn a_second_instance_fails_fast_naming_the_lock_and_a_killed_holder_frees_it() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("app.lock");
    let mut first = spawn("slow", Some(&lock));
    first.wait_for("READY", Duration::from_secs(10));

    let mut second = spawn("slow", Some(&lock));
    let start = Instant::now();
    let error = second.wait_for("START ERROR", Duration::from_secs(1));
    let (code, took) = second.exit(start, Duration::from_secs(1));
    assert_eq!(code, winddown::EXIT_FAILED);
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(error.contains(&lock.display().to_string()), "{error}");
    assert!(
        error.contains(&format!("PID {}", first.child.id())),
        "{error}"
    );

    first.signal(Signal::SIGKILL);
    let _ = first.child.wait();
    let third = spawn("slow", Some(&lock));
    third.wait_for("READY", Duration::from_secs(10));
    third.signal(Signal::SIGTERM);
}
