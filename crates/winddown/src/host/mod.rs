//! Hosts: where the program runs, and how it tells its manager what it is doing.
//!
//! [`run`] picks the host the process was started by — the Windows Service Control Manager, systemd
//! (`$NOTIFY_SOCKET`), or a console — wires that host's stop sources into a [`Shutdown`], and hands
//! the program a [`Host`]. The program sets itself up, calls [`Host::ready`], and then
//! [`Host::drain`]s its plan: the host turns the drain's progress into what its manager expects
//! (SCM checkpoints and wait hints, systemd `EXTEND_TIMEOUT_USEC` and `STATUS=`, log lines).

pub mod console;
pub mod scm;
#[cfg(windows)]
mod windows;

use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::progress::{Progress, Reporter};
use crate::report::{EXIT_FAILED, ShutdownReport};
use crate::{Budgets, DrainPlan, Shutdown, drain};

/// Which kind of host the program runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostKind {
    /// A terminal or console window (or a plain `kill`-able process).
    Console,
    /// A systemd service with `Type=notify` (`$NOTIFY_SOCKET` is set).
    Systemd,
    /// A Windows service started by the Service Control Manager.
    WindowsService,
}

/// What a host does besides turning stop sources into triggers: tell its manager that the program
/// is ready, and how the drain goes.
pub trait HostHooks: Reporter {
    /// The program serves now (systemd `READY=1`, SCM `SERVICE_RUNNING`).
    fn ready(&self) {}
    /// A status line for people (systemd `STATUS=`).
    fn status(&self, _line: &str) {}
}

/// Logs progress; what the console host reports.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogProgress;

impl Reporter for LogProgress {
    fn progress(&self, progress: &Progress) {
        tracing::debug!(target: "winddown::progress", checkpoint = progress.checkpoint, "{}", progress.status_line());
    }
}

impl HostHooks for LogProgress {}

/// The program's view of its host.
#[derive(Clone)]
pub struct Host {
    kind: HostKind,
    shutdown: Shutdown,
    hooks: Arc<dyn HostHooks>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Host {
    /// A host of `kind` whose manager is told what `hooks` tell it. Hosts made by [`run`] are
    /// already wired; this is for custom hosts and tests.
    pub fn new(kind: HostKind, shutdown: Shutdown, hooks: Arc<dyn HostHooks>) -> Self {
        Host {
            kind,
            shutdown,
            hooks,
        }
    }

    /// The kind of host.
    pub fn kind(&self) -> HostKind {
        self.kind
    }

    /// The shutdown handle every stop source of this host triggers.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Tells the manager the program serves now.
    pub fn ready(&self) {
        tracing::info!(host = ?self.kind, "ready");
        self.hooks.ready();
    }

    /// A status line for people.
    pub fn status(&self, line: &str) {
        self.hooks.status(line);
    }

    /// Waits for a stop, then drains `plan`, reporting progress to the manager. See [`drain`].
    ///
    /// # Cancellation safety
    /// Not cancel-safe, like [`drain`].
    pub async fn drain(&self, plan: DrainPlan) -> ShutdownReport {
        let reporters: [&dyn Reporter; 2] = [&LogProgress, &*self.hooks as &dyn Reporter];
        drain(plan, &self.shutdown, &reporters).await
    }
}

/// How [`run`] sets up the host.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// The service's name (used by the Windows host for the SCM and the Event Log).
    pub service_name: String,
    /// The stop sources' budgets.
    pub budgets: Budgets,
}

impl HostOptions {
    /// Options for a service called `service_name`, with the default budgets.
    pub fn new(service_name: impl Into<String>) -> Self {
        HostOptions {
            service_name: service_name.into(),
            budgets: Budgets::default(),
        }
    }

    /// Sets the budgets.
    #[must_use]
    pub fn budgets(mut self, budgets: Budgets) -> Self {
        self.budgets = budgets;
        self
    }
}

/// The error a program's start-up can end with.
pub type AppError = Box<dyn Error + Send + Sync + 'static>;

/// The program [`run`] runs, boxed so that a host can keep it in a static (the Windows service
/// dispatcher calls back into a plain function) and hand it back when it does not take it.
pub(crate) type BoxedApp = Box<
    dyn FnOnce(Host) -> Pin<Box<dyn Future<Output = Result<ShutdownReport, AppError>> + Send>>
        + Send,
>;

pub(crate) fn boxed_app<F, Fut>(app: F) -> BoxedApp
where
    F: FnOnce(Host) -> Fut + Send + 'static,
    Fut: Future<Output = Result<ShutdownReport, AppError>> + Send + 'static,
{
    Box::new(move |host| Box::pin(app(host)))
}

/// Runs `app` under the host that started this process, on a new multi-threaded tokio runtime,
/// and returns the process exit code: the report's ([`ShutdownReport::exit_code`]), or
/// [`EXIT_FAILED`] when `app` failed to start.
///
/// `app` gets the [`Host`]; it sets up, calls [`Host::ready`], and returns what [`Host::drain`]
/// returned. The runtime is built here, not by `#[tokio::main]`, because a Windows service's main
/// thread belongs to the service dispatcher.
///
/// On Windows, a process whose parent is `services.exe` runs as the service
/// [`HostOptions::service_name`]: the dispatcher takes the main thread, `app` runs with a
/// [`HostKind::WindowsService`] host reporting to the SCM ([`scm::ScmService`]) and to the Event
/// Log, and the preshutdown budget is the service's configured preshutdown timeout. Any other
/// process gets the console host.
pub fn run<F, Fut>(options: HostOptions, app: F) -> i32
where
    F: FnOnce(Host) -> Fut + Send + 'static,
    Fut: Future<Output = Result<ShutdownReport, AppError>> + Send + 'static,
{
    let app = boxed_app(app);
    // Started by the Service Control Manager: the main thread becomes the service dispatcher's.
    #[cfg(windows)]
    let (options, app) = match windows::run_if_service(options, app) {
        Ok(exit_code) => return exit_code,
        Err(not_a_service) => not_a_service,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return EXIT_FAILED;
        }
    };
    runtime.block_on(async move {
        let shutdown = Shutdown::with_budgets(options.budgets);
        console::listen(&shutdown);
        let host = Host::new(HostKind::Console, shutdown, Arc::new(LogProgress));
        finish(app(host).await)
    })
}

fn finish(result: Result<ShutdownReport, AppError>) -> i32 {
    match result {
        Ok(report) => report.exit_code(),
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            EXIT_FAILED
        }
    }
}
