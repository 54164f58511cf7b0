//! The Windows service host: when the Service Control Manager started the process, the main
//! thread runs the service dispatcher, and `service_main` runs the program under an
//! [`ScmService`] whose statuses go to `SetServiceStatus` and whose lifecycle events go to the
//! Event Log. The protocol itself is portable, in [`super::scm`]; this is only the wiring.
//!
//! # Was the process started by the SCM?
//! Calling the dispatcher is the only sure test, but outside the SCM it fails slowly under Wine
//! (about 10 s before error 1063; Windows fails at once). So the host looks first: the SCM starts
//! a service process as a child of `services.exe`, which a ToolHelp snapshot of the process list
//! shows in about 3 ms, on Windows and under Wine alike. Only if that snapshot fails does the host
//! fall back on the session: a process in session 0 may be a service, so the dispatcher is tried
//! (on Windows it fails at once when it is not one). Session 0 alone is not taken as proof — tasks
//! and children of services run there too — and could not be tested under Wine.
//! Either way a dispatcher that fails with 1063 hands the program back to the console host.

use std::ffi::OsString;
use std::io;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use windows_service::define_windows_service;
use windows_service::service::{
    ServiceAccess, ServiceControlAccept, ServiceExitCode as WsExitCode, ServiceState as WsState,
    ServiceStatus as WsStatus, ServiceType,
};
use windows_service::service_control_handler::{
    self, ServiceControlHandlerResult, ServiceStatusHandle,
};
use windows_service::service_dispatcher;
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

use super::scm::{
    ControlResponse, EventLevel, ScmControl, ScmService, ServiceExitCode, ServiceState,
    ServiceStatus, StatusSink,
};
use super::{BoxedApp, HostOptions};
use crate::Shutdown;
use crate::report::EXIT_FAILED;
use crate::sys::windows::{self as sys, io_error};

/// `ERROR_FAILED_SERVICE_CONTROLLER_CONNECT`: the dispatcher was called outside the SCM.
const NOT_A_SERVICE: i32 = 1063;

/// The program waiting for `service_main`, which the dispatcher calls with no context.
static PENDING: Mutex<Option<(HostOptions, BoxedApp)>> = Mutex::new(None);
/// The exit code `service_main` left for `main`.
static EXIT_CODE: AtomicI32 = AtomicI32::new(EXIT_FAILED);

fn pending() -> MutexGuard<'static, Option<(HostOptions, BoxedApp)>> {
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// The outcome of the look before the dispatcher is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Launch {
    /// The parent is `services.exe`.
    ByScm,
    /// The parent could not be seen, and the process runs in session 0.
    MaybeByScm,
    /// Not a service.
    Console,
}

/// Looked at once per process (a process-list snapshot): [`started_by_scm`] and
/// [`run_if_service`] both ask.
fn launch() -> Launch {
    static LAUNCH: OnceLock<Launch> = OnceLock::new();
    *LAUNCH.get_or_init(look_at_parent)
}

fn look_at_parent() -> Launch {
    match sys::parent_process_image() {
        Ok(Some(parent)) if parent.eq_ignore_ascii_case("services.exe") => Launch::ByScm,
        Ok(_) => Launch::Console,
        Err(e) => {
            tracing::debug!(error = %e, "cannot see the parent process; checking the session");
            match sys::session_id() {
                Ok(0) => Launch::MaybeByScm,
                _ => Launch::Console,
            }
        }
    }
}

/// Whether the SCM (probably) started this process: what [`run_if_service`] checks first.
pub(super) fn started_by_scm() -> bool {
    launch() != Launch::Console
}

/// Runs `app` as the service `options.service_name` if the SCM started this process, and returns
/// the process exit code; otherwise hands `options` and `app` back for the console host.
pub(super) fn run_if_service(
    options: HostOptions,
    app: BoxedApp,
) -> Result<i32, (HostOptions, BoxedApp)> {
    let launch = launch();
    if launch == Launch::Console {
        return Err((options, app));
    }
    let name = options.service_name.clone();
    *pending() = Some((options, app));
    // Returns once the service has reported STOPPED (the SCM then ends the dispatcher).
    let started = service_dispatcher::start(&name, ffi_service_main);
    let back = pending().take();
    match (started, back) {
        (Ok(()), _) => Ok(EXIT_CODE.load(Ordering::SeqCst)),
        (Err(e), Some(back)) => {
            let e = io_error(e);
            if e.raw_os_error() == Some(NOT_A_SERVICE) {
                tracing::debug!(?launch, "not started by the SCM after all; console host");
            } else {
                tracing::warn!(?launch, error = %e, "the service dispatcher failed; console host");
            }
            Err(back)
        }
        (Err(e), None) => {
            tracing::error!(error = %io_error(e), "the service dispatcher failed after the service ran");
            Ok(EXIT_CODE.load(Ordering::SeqCst))
        }
    }
}

define_windows_service!(ffi_service_main, service_main);

/// The SCM's entry point, on a thread of the dispatcher.
fn service_main(_arguments: Vec<OsString>) {
    // The slot is empty only if the SCM started this service twice in one process, which it does
    // not do for an own-process service.
    if let Some((options, app)) = pending().take() {
        serve(options, app);
    }
}

/// Registers the control handler, runs the program on a new runtime, reports STOPPED last.
///
/// The exit code is stored for `main` before STOPPED is reported: the dispatcher may return on
/// the main thread as soon as the SCM has seen STOPPED, before this thread goes on.
fn serve(options: HostOptions, app: BoxedApp) {
    let name = options.service_name;
    let events = sys::EventSource::open(&name)
        .inspect_err(|e| tracing::warn!(error = %e, "cannot open the Event Log source {name}"))
        .ok();
    let preshutdown = read_preshutdown_timeout(&name)
        .inspect_err(
            |e| tracing::warn!(error = %e, "cannot read the preshutdown timeout; assuming 10 s"),
        )
        .ok();
    let sink = Arc::new(WindowsSink {
        handle: OnceLock::new(),
        events,
    });
    let service = ScmService::new(
        name.clone(),
        Shutdown::with_budgets(options.budgets),
        sink.clone(),
    )
    .preshutdown_timeout(preshutdown);

    let handler = service.clone();
    let registered = service_control_handler::register(&name, move |control| {
        // Returns at once: a stop only triggers the shutdown; the drain runs on the runtime.
        match handler.handle(ScmControl::from_raw(control.raw_service_control_type())) {
            ControlResponse::Handled => ServiceControlHandlerResult::NoError,
            ControlResponse::NotImplemented => ServiceControlHandlerResult::NotImplemented,
        }
    });
    match registered {
        Ok(handle) => {
            let _ = sink.handle.set(handle);
        }
        Err(e) => {
            let message = format!("{name}: cannot register the control handler: {e}");
            tracing::error!("{message}");
            sink.log_event(EventLevel::Error, &message);
            return;
        }
    }
    service.starting();

    let result = match super::runtime() {
        Ok(runtime) => {
            let result = runtime.block_on(service.run_app(app));
            // Tasks the program left behind get a moment; STOPPED must not wait on them for ever.
            runtime.shutdown_timeout(super::RUNTIME_SHUTDOWN);
            result
        }
        Err(e) => Err(format!("cannot start the async runtime: {e}").into()),
    };
    EXIT_CODE.store(ScmService::exit_code(&result), Ordering::SeqCst);
    service.stopped(&result);
}

fn read_preshutdown_timeout(name: &str) -> io::Result<Duration> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .map_err(io_error)?;
    let service = manager
        .open_service(name, ServiceAccess::QUERY_CONFIG)
        .map_err(io_error)?;
    sys::preshutdown_timeout(&service)
}

/// The SCM status handle and the Event Log source.
struct WindowsSink {
    /// Set once the control handler is registered; nothing is reported before.
    handle: OnceLock<ServiceStatusHandle>,
    events: Option<sys::EventSource>,
}

impl StatusSink for WindowsSink {
    fn set_status(&self, status: &ServiceStatus) -> io::Result<()> {
        let handle = self.handle.get().ok_or_else(|| {
            io::Error::other("status reported before the control handler was registered")
        })?;
        handle
            .set_service_status(to_windows(status))
            .map_err(io_error)
    }

    fn log_event(&self, level: EventLevel, message: &str) {
        if let Some(events) = &self.events
            && let Err(e) = events.report(level, message)
        {
            tracing::warn!(error = %e, "cannot write to the Event Log");
        }
    }
}

fn to_windows(status: &ServiceStatus) -> WsStatus {
    WsStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: match status.state {
            ServiceState::Stopped => WsState::Stopped,
            ServiceState::StartPending => WsState::StartPending,
            ServiceState::StopPending => WsState::StopPending,
            ServiceState::Running => WsState::Running,
            ServiceState::ContinuePending => WsState::ContinuePending,
            ServiceState::PausePending => WsState::PausePending,
            ServiceState::Paused => WsState::Paused,
        },
        controls_accepted: ServiceControlAccept::from_bits_truncate(status.accepts.bits()),
        exit_code: match status.exit_code {
            ServiceExitCode::Win32(code) => WsExitCode::Win32(code),
            ServiceExitCode::ServiceSpecific(code) => WsExitCode::ServiceSpecific(code),
        },
        checkpoint: status.checkpoint,
        // ScmService keeps it within u32 milliseconds, which windows-service would panic on.
        wait_hint: status.wait_hint,
        process_id: None,
    }
}
