//! `winddown upgrade --name NAME --binary PATH`: replace the binary of the PROGRAM a service
//! installed by `winddown install` wraps, through [`winddown::service::upgrade`] (version check,
//! stop with the drain, keep `PROGRAM.old`, fsynced swap, start, rollback with the reason).
//!
//! PROGRAM's path is read from the installed definition through the manager
//! ([`ServiceManager::command`]): the first word after `--` of the service's `winddown run`
//! command line. It is not recorded anywhere else, so what is replaced is what the service runs.
//! Readiness is the manager's `running`: the wrapper reports it (READY=1, SERVICE_RUNNING) only
//! once its `--ready-tcp`/`--ready-http` probe passed; the start itself waits for that.

use std::path::PathBuf;

use winddown::service::upgrade::{self as procedure, UpgradeError};
use winddown::service::{self, ServiceManager, Status};

use crate::cli::UpgradeOptions;

pub(crate) fn upgrade(options: &UpgradeOptions) -> i32 {
    match run(options) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("winddown: {e}");
            1
        }
    }
}

fn run(options: &UpgradeOptions) -> Result<(), String> {
    let manager: Box<dyn ServiceManager> = match &options.systemctl {
        Some(program) => {
            let mut systemd = service::Systemd::with_systemctl(program);
            if let Some(dir) = &options.unit_dir {
                systemd.options = systemd.options.unit_dir(dir);
            }
            Box::new(systemd)
        }
        None => service::native(),
    };
    let name = &options.name;
    let words = manager
        .command(name)
        .map_err(|e| winddown::error_chain(&e))?
        .ok_or_else(|| {
            format!(
                "{} cannot say what service {name} runs, so winddown cannot find PROGRAM; stop \
                 the service, replace PROGRAM keeping the old one, and start it",
                manager.manager()
            )
        })?;
    let (program, log) = wrapped(&words).ok_or_else(|| {
        format!(
            "service {name} does not run `winddown run … -- PROGRAM` (its command line: {}); \
             `winddown upgrade` replaces the program of a service `winddown install` installed",
            words.join(" ")
        )
    })?;
    let mut plan = procedure::Upgrade::new(name, &program, &options.binary)
        .ready_timeout(options.ready_timeout);
    if let Some(log) = log {
        plan = plan.log(log);
    }
    let mut probe = |status: &Status| status.pid.map(|pid| format!("runs (PID {pid})"));
    let mut show = |line: &str| println!("  {line}");
    match procedure::upgrade(manager.as_ref(), &plan, &mut probe, &mut show) {
        Ok(done) => {
            println!(
                "upgraded {name}: {} {}, ready {:.1} s after the start (the drain took {:.1} s); \
                 the old binary is kept as {}",
                done.new_version,
                done.ready,
                done.ready_in.as_secs_f64(),
                done.stopped_in.as_secs_f64(),
                done.old.display()
            );
            Ok(())
        }
        Err(e @ UpgradeError::RolledBack { .. }) => Err(e.to_string()),
        Err(e) => Err(winddown::error_chain(&e)),
    }
}

/// PROGRAM (the first word after `--`) of a `winddown run` command line, and PROGRAM's log file
/// (`--log-dir DIR` → `DIR/NAME.log`) if it has one.
fn wrapped(words: &[String]) -> Option<(PathBuf, Option<PathBuf>)> {
    let run = words.iter().position(|w| w == "run")?;
    let dash = run + words[run..].iter().position(|w| w == "--")?;
    let program = PathBuf::from(words.get(dash + 1)?);
    let option = |key: &str| {
        words[run..dash]
            .iter()
            .position(|w| w == key)
            .and_then(|i| words.get(run + i + 1))
    };
    let log = match (option("--log-dir"), option("--name")) {
        (Some(dir), Some(name)) => Some(PathBuf::from(dir).join(format!("{name}.log"))),
        _ => None,
    };
    Some((program, log))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_and_log_come_from_the_run_command_line() {
        let words: Vec<String> = [
            "/usr/local/bin/winddown",
            "run",
            "--name",
            "svc",
            "--log-dir",
            "/var/lib/svc",
            "--",
            "/opt/svc/bin/server",
            "--port",
            "80",
        ]
        .map(String::from)
        .to_vec();
        let (program, log) = wrapped(&words).unwrap();
        assert_eq!(program, PathBuf::from("/opt/svc/bin/server"));
        assert_eq!(log, Some(PathBuf::from("/var/lib/svc/svc.log")));
        let bare: Vec<String> = ["/usr/bin/depot", "run", "--listen", "x"]
            .map(String::from)
            .to_vec();
        assert!(wrapped(&bare).is_none());
    }
}
