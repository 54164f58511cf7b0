//! # winddown
//!
//! One shutdown model for every stop source. Whatever asks a program to stop — the Windows Service
//! Control Manager (STOP, PRESHUTDOWN, SHUTDOWN), a console event (Ctrl+C, close, logoff, system
//! shutdown), a Unix signal from a terminal, systemd, launchd or Kubernetes — becomes a
//! [`StopReason`] with the time budget that source really allows. A [`DrainPlan`] of ordered,
//! named phases (stop accepting → finish in-flight → flush → close stores → release) runs within
//! that budget, reports [`Progress`] to the host while it runs, and returns a [`ShutdownReport`].
//!
//! Acknowledging only what is on disk ([`commit`]) makes every stop — even one never announced —
//! lose nothing acknowledged; the drain makes the announced ones tidy and fast.
//!
//! ```no_run
//! use winddown::{DrainPlan, Shutdown, Stage};
//!
//! #[tokio::main]
//! async fn main() {
//!     let shutdown = Shutdown::new();
//!     winddown::host::console::listen(&shutdown); // SIGINT/SIGTERM/… or console events → shutdown
//!     shutdown.tasks().spawn("worker", |stop| async move { stop.cancelled().await });
//!     let plan = DrainPlan::new()
//!         .wait_for_tasks()
//!         .phase(Stage::Flush, "flush", |_| async { Ok::<_, std::io::Error>(()) });
//!     let report = winddown::drain(plan, &shutdown, &winddown::NoProgress).await;
//!     std::process::exit(report.exit_code());
//! }
//! ```
#![warn(missing_docs)]

pub mod commit;
mod guard;
pub mod host;
mod plan;
mod progress;
mod reason;
mod report;
pub mod service;
mod shutdown;
mod sys;
mod tasks;
pub mod testing;

pub use commit::{CommitConfig, CommitError, Durability, GroupCommit, Sink, WhenFull};
pub use guard::{LockError, LockFile, TempArea};
pub use host::{Heartbeat, Host, HostHooks, HostKind, HostOptions, Liveness, run};
pub use plan::{Criticality, DrainPlan, Phase, PhaseContext, PhaseError, Stage, drain};
pub use progress::{NoProgress, PhaseProgress, Progress, ProgressEvent, Reporter};
pub use reason::{Budgets, DrainMode, StopReason, StopSender};
pub use report::{
    CutOffBy, EXIT_CLEAN, EXIT_CUT_OFF, EXIT_FAILED, EXIT_FORCED, Outcome, PhaseOutcome,
    PhaseReport, ShutdownReport, SkipReason, error_chain,
};
pub use shutdown::{Escalation, Shutdown, StopState};
pub use tasks::Tasks;
