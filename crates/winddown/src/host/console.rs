//! The console host: turns the stop sources of a program run in a terminal or console into
//! [`Shutdown`] triggers.
//!
//! - Unix: `SIGINT`, `SIGTERM`, `SIGHUP`, `SIGQUIT`.
//! - Windows: `CTRL_C`, `CTRL_BREAK`, `CTRL_CLOSE`, `CTRL_LOGOFF`, `CTRL_SHUTDOWN`. For the last
//!   three Windows ends the process as soon as the OS handler returns. tokio's handler
//!   (`signal/windows/sys.rs`, since 1.44.0, tokio-rs/tokio#7122; the workspace requires ≥ 1.48)
//!   never returns for them: it parks the OS's handler thread for good once it has passed the event
//!   on, so the drain keeps the whole grace period (5 s) and the process ends when `main` returns
//!   (or when Windows' timeout runs out). That holds only while a receiver exists — with none,
//!   tokio returns `FALSE` and the default handler ends the process at once — which is why
//!   [`listen`]'s task keeps all five for the life of the runtime.
//! - Not for a Windows service: the service host ([`super::scm`]) does not call [`listen`], since
//!   a service process also gets `CTRL_LOGOFF` whenever any user logs off, and its stops come from
//!   the SCM.
//!
//! By default a person's third stop (Ctrl+C, Ctrl+Break, `SIGINT`, `SIGQUIT`) exits the process at
//! once with [`EXIT_FORCED`]: they want out, and nothing acknowledged depends on the drain. A
//! manager's repeated stops (`SIGTERM` sent again, the console's close after a Ctrl+C) never force:
//! see [`crate::StopSender`]. [`ForceAction::Report`] leaves a forced stop to the program instead
//! ([`listen_with`], [`HostOptions::on_force`](super::HostOptions::on_force)).

use tokio::task::JoinHandle;

use super::ForceAction;
use crate::report::EXIT_FORCED;
use crate::{Escalation, Shutdown, StopReason};

/// Starts listening for the console's stop sources; each one triggers `shutdown`. Call it first
/// thing in `main`, inside the runtime, so that a stop during start-up is not lost to the default
/// action (which ends the process without a drain).
///
/// # Panics
/// Outside a tokio runtime, or if the OS refuses the signal handlers (which it does not for these
/// signals).
pub fn listen(shutdown: &Shutdown) -> JoinHandle<()> {
    listen_with(shutdown, ForceAction::Exit)
}

/// Like [`listen`], with what a third trigger does chosen by `on_force`.
///
/// # Panics
/// Like [`listen`].
pub fn listen_with(shutdown: &Shutdown, on_force: ForceAction) -> JoinHandle<()> {
    let sources = sys::sources().expect("installing the console stop handlers");
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut sources = sources;
        while let Some(reason) = sources.next().await {
            on_stop(&shutdown, reason, on_force);
        }
    })
}

/// What every stop source does: trigger, and exit at once when that forced the stop (a person's
/// third), unless the program chose [`ForceAction::Report`].
pub(crate) fn on_stop(shutdown: &Shutdown, reason: StopReason, on_force: ForceAction) {
    if shutdown.trigger(reason) == Escalation::Force && on_force == ForceAction::Exit {
        tracing::error!(
            reason = reason.as_str(),
            exit_code = EXIT_FORCED,
            "third stop request from a person: exiting at once, drain abandoned"
        );
        std::process::exit(EXIT_FORCED);
    }
}

#[cfg(unix)]
mod sys {
    use tokio::signal::unix::{Signal, SignalKind, signal};

    use crate::StopReason;

    pub(super) struct Sources(Vec<(Signal, StopReason)>);

    pub(super) fn sources() -> std::io::Result<Sources> {
        Ok(Sources(vec![
            (signal(SignalKind::interrupt())?, StopReason::SigInt),
            (signal(SignalKind::terminate())?, StopReason::SigTerm),
            (signal(SignalKind::hangup())?, StopReason::SigHup),
            (signal(SignalKind::quit())?, StopReason::SigQuit),
        ]))
    }

    impl Sources {
        pub(super) async fn next(&mut self) -> Option<StopReason> {
            std::future::poll_fn(|cx| {
                for (signal, reason) in &mut self.0 {
                    if signal.poll_recv(cx).is_ready() {
                        return std::task::Poll::Ready(Some(*reason));
                    }
                }
                std::task::Poll::Pending
            })
            .await
        }
    }
}

#[cfg(windows)]
mod sys {
    use tokio::signal::windows::{
        CtrlBreak, CtrlC, CtrlClose, CtrlLogoff, CtrlShutdown, ctrl_break, ctrl_c, ctrl_close,
        ctrl_logoff, ctrl_shutdown,
    };

    use crate::StopReason;

    pub(super) struct Sources {
        c: CtrlC,
        brk: CtrlBreak,
        close: CtrlClose,
        logoff: CtrlLogoff,
        shutdown: CtrlShutdown,
    }

    pub(super) fn sources() -> std::io::Result<Sources> {
        Ok(Sources {
            c: ctrl_c()?,
            brk: ctrl_break()?,
            close: ctrl_close()?,
            logoff: ctrl_logoff()?,
            shutdown: ctrl_shutdown()?,
        })
    }

    impl Sources {
        pub(super) async fn next(&mut self) -> Option<StopReason> {
            tokio::select! {
                Some(()) = self.c.recv() => Some(StopReason::CtrlC),
                Some(()) = self.brk.recv() => Some(StopReason::CtrlBreak),
                Some(()) = self.close.recv() => Some(StopReason::ConsoleClose),
                Some(()) = self.logoff.recv() => Some(StopReason::Logoff),
                Some(()) = self.shutdown.recv() => Some(StopReason::SystemShutdown),
                else => None,
            }
        }
    }
}
