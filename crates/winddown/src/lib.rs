//! # winddown
//!
//! One shutdown model for every stop source. Whatever asks a program to stop — the Windows Service
//! Control Manager (STOP, PRESHUTDOWN, SHUTDOWN), a console event (Ctrl+C, close, logoff, system
//! shutdown), a Unix signal from a terminal, systemd, launchd or Kubernetes — becomes a
//! [`StopReason`] with the time budget that source really allows. A [`DrainPlan`] of ordered,
//! named phases (stop accepting → finish in-flight → flush → close stores → release) runs within
//! that budget, reports [`Progress`] to the host while it runs, and returns a [`ShutdownReport`].
//!
//! Acknowledging only what is on disk (`winddown::commit`) makes every stop — even one never announced —
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
//!
//! # Features
//!
//! Every feature is on by default; `default-features = false` leaves the core — [`StopReason`],
//! [`Shutdown`], [`DrainPlan`], the hosts ([`run`], [`host`]), [`ShutdownReport`], [`LockFile`]
//! and [`TempArea`] — with no JSON, no metrics and nothing store-related.
//!
//! | feature | what it adds |
//! |---|---|
//! | `commit` | `winddown::commit`: group commit, acknowledging an item once its batch is durable |
//! | `metrics` | the group commit's metrics through the `metrics` facade (implies `commit`) |
//! | `serde` | `Serialize`/`Deserialize` for reasons, progress and reports; `ShutdownReport::to_json` |
//! | `service` | `winddown::service`: install, start, stop and remove a systemd unit, a launchd job or a Windows service |
//! | `testing` | `winddown::testing`: simulate any stop in a program's own tests |
//! | `instance` | `winddown::instance`: the run file, the progress file a stop follows, the last report; `stop`/`status` (implies `serde`) |
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "commit")]
#[cfg_attr(docsrs, doc(cfg(feature = "commit")))]
pub mod commit;
mod guard;
pub mod host;
#[cfg(feature = "instance")]
#[cfg_attr(docsrs, doc(cfg(feature = "instance")))]
pub mod instance;
mod plan;
mod progress;
mod reason;
mod report;
#[cfg(feature = "service")]
#[cfg_attr(docsrs, doc(cfg(feature = "service")))]
pub mod service;
mod shutdown;
mod sys;
mod tasks;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

pub use guard::{LockError, LockFile, TempArea};
pub use host::liveness::{Heartbeat, Liveness, Stale};
pub use host::program::{
    AppError, ForceAction, Host, HostHooks, HostKind, HostOptions, STOP_BUDGET_ENV, run,
    started_by_scm,
};
pub use plan::{Criticality, DrainPlan, Phase, PhaseContext, PhaseError, Stage, drain};
pub use progress::{NoProgress, PhaseProgress, Progress, ProgressEvent, Reporter};
pub use reason::{Budgets, CustomStop, DrainMode, StopReason, StopSender};
pub use report::{
    CutOffBy, EXIT_CLEAN, EXIT_CUT_OFF, EXIT_FAILED, EXIT_FORCED, Outcome, PhaseOutcome,
    PhaseReport, ShutdownReport, SkipReason, error_chain,
};
pub use shutdown::{Escalation, Shutdown, StopState};
pub use tasks::Tasks;
