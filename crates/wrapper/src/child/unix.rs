//! Unix: a process group per PROGRAM, signals to the group, a reaper for every child (PROGRAM,
//! and on Linux everything re-parented to the wrapper as child subreaper or PID 1). On Linux
//! PROGRAM also dies with the wrapper (`PR_SET_PDEATHSIG`), should the wrapper be SIGKILLed.
//!
//! The module's one `unsafe` is `Command::pre_exec`, for that `prctl`.

#![allow(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use super::{Pipe, Spec};
use crate::cli::StopSignal;

/// PROGRAM's process group (its pid: it leads the group).
#[derive(Debug)]
pub(super) struct Tree {
    pgid: Pid,
}

pub(super) fn spawn(
    spec: &Spec,
    exit: watch::Sender<Option<i32>>,
) -> io::Result<(u32, Tree, Option<Pipe>, Option<Pipe>)> {
    // The reaper's SIGCHLD stream exists before the child does: a child that exits at once is
    // still reaped and its code seen.
    let sigchld = signal(SignalKind::child())?;
    become_subreaper();
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        // A group of its own: the terminal's Ctrl+C reaches the wrapper, which decides, and the
        // stop signal reaches PROGRAM's whole group.
        .process_group(0);
    // PROGRAM is not the service: systemd's notify socket is the wrapper's to speak on.
    winddown::host::systemd::remove_manager_env(&mut command);
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    if spec.capture {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    die_with_wrapper(&mut command);
    let mut child = spawn_from_lasting_thread(command)?;
    let pid = child.id();
    let out = child.stdout.take().map(|p| Box::new(p) as Pipe);
    let err = child.stderr.take().map(|p| Box::new(p) as Pipe);
    // `child` is dropped without a wait: the reaper below collects it (std's `Child` would race it).
    drop(child);
    tokio::spawn(reap(sigchld, Pid::from_raw(pid as i32), exit));
    forward_other_signals(Pid::from_raw(pid as i32));
    Ok((
        pid,
        Tree {
            pgid: Pid::from_raw(pid as i32),
        },
        out,
        err,
    ))
}

/// On Linux, PROGRAM gets SIGKILL when the wrapper dies without its drain (SIGKILL, OOM kill):
/// otherwise it would run on with nobody to stop it. Only PROGRAM: what it started lives on
/// (under systemd, `KillMode=mixed` ends the rest of the cgroup). The kernel clears the setting
/// when PROGRAM execs a set-user-ID program.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn die_with_wrapper(command: &mut Command) {
    let wrapper = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed: it makes two system calls (prctl, getppid) and builds its error from an
    // errno, without allocating or taking a lock.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The wrapper died between the fork and the prctl: no signal will come for it.
            if nix::unistd::getppid() != wrapper {
                return Err(Errno::ESRCH.into());
            }
            Ok(())
        });
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn die_with_wrapper(_command: &mut Command) {}

/// Forks PROGRAM from a thread that lives as long as the wrapper. `PR_SET_PDEATHSIG` fires when
/// the *thread* that forked the child ends, not the process: a runtime thread (a blocking-pool
/// thread idles out after 10 s) would take PROGRAM with it. This one is parked, never ended.
fn spawn_from_lasting_thread(mut command: Command) -> io::Result<std::process::Child> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("program-parent".into())
        .spawn(move || {
            let _ = tx.send(command.spawn());
            loop {
                std::thread::park();
            }
        })?;
    rx.recv()
        .map_err(|_| io::Error::other("the thread that starts PROGRAM ended before it did"))?
}

/// On Linux, orphans of PROGRAM's tree are re-parented to the wrapper instead of init, so that
/// the tree kill finds them and they are reaped here.
fn become_subreaper() {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(error = %e, "cannot become a child subreaper: orphaned grandchildren escape the tree kill");
    }
}

/// Reaps every child that exits — PROGRAM, and (subreaper, PID 1) adopted orphans — and publishes
/// PROGRAM's exit code. Runs for the life of the runtime.
async fn reap(
    mut sigchld: tokio::signal::unix::Signal,
    program: Pid,
    exit: watch::Sender<Option<i32>>,
) {
    loop {
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    if pid == program {
                        exit.send_replace(Some(code));
                    } else {
                        tracing::debug!(pid = pid.as_raw(), code, "reaped an orphan");
                    }
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    if pid == program {
                        exit.send_replace(Some(128 + sig as i32));
                    } else {
                        tracing::debug!(pid = pid.as_raw(), signal = %sig, "reaped an orphan");
                    }
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) => {}
                Err(Errno::EINTR) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "waitpid failed");
                    break;
                }
            }
        }
        if sigchld.recv().await.is_none() {
            return;
        }
    }
}

/// Signals the wrapper does not act on itself are passed on to PROGRAM's group, as tini does:
/// `SIGUSR1`, `SIGUSR2` (log reopen, dumps), `SIGWINCH`.
fn forward_other_signals(group: Pid) {
    for (kind, sig) in [
        (SignalKind::user_defined1(), Signal::SIGUSR1),
        (SignalKind::user_defined2(), Signal::SIGUSR2),
        (SignalKind::window_change(), Signal::SIGWINCH),
    ] {
        match signal(kind) {
            Ok(mut stream) => {
                tokio::spawn(async move {
                    while stream.recv().await.is_some() {
                        let _ = killpg(group, sig);
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, signal = %sig, "cannot forward this signal"),
        }
    }
}

impl Tree {
    pub(super) fn signal(&self, signal: StopSignal) -> io::Result<()> {
        let sig = match signal {
            StopSignal::Term => Signal::SIGTERM,
            StopSignal::Int => Signal::SIGINT,
            StopSignal::Hup => Signal::SIGHUP,
            StopSignal::Quit => Signal::SIGQUIT,
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("{other} is a Windows stop signal"),
                ));
            }
        };
        match killpg(self.pgid, sig) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// `SIGKILL` to the group and (Linux) to every living descendant of the wrapper, until none
    /// is left (at most 2 s: a process stuck in the kernel cannot be hurried).
    pub(super) async fn kill(&self) -> usize {
        let mut killed = HashSet::new();
        let until = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            let targets = living_tree(self.pgid);
            let _ = killpg(self.pgid, Signal::SIGKILL);
            if targets.is_empty() {
                break;
            }
            for pid in targets {
                let _ = kill(pid, Signal::SIGKILL);
                killed.insert(pid);
            }
            if std::time::Instant::now() > until {
                tracing::warn!("processes of PROGRAM's tree are still alive 2 s after SIGKILL");
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        killed.len()
    }
}

/// The living (not zombie) processes of the tree: PROGRAM's group, and every descendant of the
/// wrapper. Read from `/proc` by hand — the fields needed are three numbers of `/proc/PID/stat`
/// (ppid, pgrp, state), not worth a crate.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn living_tree(group: Pid) -> Vec<Pid> {
    let me = nix::unistd::getpid();
    let mut procs: HashMap<i32, (i32, i32, char)> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            && let Some(fields) = parse_stat(&stat)
        {
            procs.insert(pid, fields);
        }
    }
    let mut out = Vec::new();
    for (&pid, &(_, pgrp, state)) in &procs {
        if pid == me.as_raw() || state == 'Z' || state == 'X' {
            continue;
        }
        let mut descends = pgrp == group.as_raw();
        let mut at = pid;
        let mut hops = 0;
        while !descends && hops < 64 {
            match procs.get(&at) {
                Some(&(ppid, _, _)) if ppid == me.as_raw() => descends = true,
                Some(&(ppid, _, _)) if ppid > 1 => at = ppid,
                _ => break,
            }
            hops += 1;
        }
        if descends {
            out.push(Pid::from_raw(pid));
        }
    }
    out
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn living_tree(group: Pid) -> Vec<Pid> {
    // Without /proc and a subreaper, the group is the tree: alive while it can be signalled.
    match killpg(group, None) {
        Ok(()) => vec![group],
        Err(_) => Vec::new(),
    }
}

/// (ppid, pgrp, state) from `/proc/PID/stat`: "pid (comm) state ppid pgrp …", where comm may hold
/// spaces and parentheses, so the fields start after the last ')'.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn parse_stat(stat: &str) -> Option<(i32, i32, char)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((ppid, pgrp, state))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        assert_eq!(
            parse_stat("42 (a) b (c)) S 7 42 42 0 -1 4194560"),
            Some((7, 42, 'S'))
        );
        assert_eq!(parse_stat("garbage"), None);
    }
}
