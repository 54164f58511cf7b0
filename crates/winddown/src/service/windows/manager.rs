//! The Windows calls behind [`super`]: `windows-service`'s `ServiceManager`, plus the crate's
//! `sys` module for what it lacks (preshutdown and delayed-start queries, the Event Log source and
//! environment registry values).

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use windows_service::service::{
    Service, ServiceAccess, ServiceAction, ServiceActionType, ServiceErrorControl,
    ServiceExitCode as WsExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo as WsServiceInfo, ServiceStartType, ServiceState as WsState, ServiceStatus,
    ServiceType,
};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

use super::{
    Account, EVENT_MESSAGE_FILE, FAILURE_RESET, IfInstalled, InstallOptions, InstallOutcome,
    Installed, ManageError, RESTART_DELAYS, Reached, ServiceInfo, StartMode, Step,
    UninstallOutcome, Uninstalled, Wait, Waiting, grant_arguments, preshutdown_timeout_for,
};
use crate::host::scm::{ServiceExitCode, ServiceState};
use crate::service::ServiceSpec;
use crate::sys::windows::{self as sys, io_error};

const ERROR_ACCESS_DENIED: i32 = 5;
const ERROR_SERVICE_ALREADY_RUNNING: i32 = 1056;
const ERROR_SERVICE_DOES_NOT_EXIST: i32 = 1060;
const ERROR_SERVICE_CANNOT_ACCEPT_CTRL: i32 = 1061;
const ERROR_SERVICE_NOT_ACTIVE: i32 = 1062;
const ERROR_SERVICE_MARKED_FOR_DELETE: i32 = 1072;

/// Turns a `windows-service` error into the [`ManageError`] a person can act on.
fn fail(name: &str, action: &'static str) -> impl FnOnce(windows_service::Error) -> ManageError {
    move |e| classify(name, action, io_error(e))
}

fn classify(name: &str, action: &'static str, source: io::Error) -> ManageError {
    match source.raw_os_error() {
        Some(ERROR_ACCESS_DENIED) => ManageError::AccessDenied {
            name: name.to_owned(),
            action,
        },
        Some(ERROR_SERVICE_DOES_NOT_EXIST) => ManageError::NotInstalled {
            name: name.to_owned(),
        },
        _ => ManageError::Windows {
            name: name.to_owned(),
            action,
            source,
        },
    }
}

fn manager(name: &str, access: ServiceManagerAccess) -> Result<ServiceManager, ManageError> {
    ServiceManager::local_computer(None::<&str>, access)
        .map_err(fail(name, "connect to the Service Control Manager for"))
}

fn open(name: &str, access: ServiceAccess) -> Result<Service, ManageError> {
    manager(name, ServiceManagerAccess::CONNECT)?
        .open_service(name, access)
        .map_err(fail(name, "open"))
}

/// Installs the service `spec` describes (see the [module documentation](super) for what it
/// sets). An installed service is left as it is unless `options.if_installed` is
/// [`IfInstalled::Update`]. Steps the SCM refuses beyond creating the service — description,
/// delayed start, preshutdown timeout, failure actions, environment, Event Log source, the data
/// directory's ACL — come back as warnings.
///
/// Needs an elevated prompt.
pub fn install(spec: &ServiceSpec, options: &InstallOptions) -> Result<Installed, ManageError> {
    let name = spec.name.as_str();
    let scm = manager(
        name,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )?;
    let access = ServiceAccess::QUERY_CONFIG
        | ServiceAccess::CHANGE_CONFIG
        | ServiceAccess::QUERY_STATUS
        | ServiceAccess::START;
    let mut warnings = Vec::new();
    let mut account = options.account.clone();
    let (service, outcome) = match scm.open_service(name, access) {
        Ok(service) => match options.if_installed {
            IfInstalled::Keep => {
                return Ok(Installed {
                    name: name.to_owned(),
                    outcome: InstallOutcome::AlreadyInstalled,
                    warnings,
                });
            }
            IfInstalled::Update => {
                let info = service_info(spec, options.start, &account);
                service.change_config(&info).map_err(fail(name, "update"))?;
                (service, InstallOutcome::Updated)
            }
        },
        Err(e) => {
            let e = io_error(e);
            if e.raw_os_error() != Some(ERROR_SERVICE_DOES_NOT_EXIST) {
                return Err(classify(name, "open", e));
            }
            let service = match scm
                .create_service(&service_info(spec, options.start, &account), access)
            {
                Ok(service) => service,
                // A virtual account the SCM refuses (old Windows, Wine): the least-privileged
                // built-in account instead, never LocalSystem behind the caller's back.
                Err(e) if account == Account::Virtual => {
                    warnings.push(format!(
                        r"the SCM refused the virtual account NT SERVICE\{name} ({}); installed as NT AUTHORITY\LocalService instead",
                        io_error(e)
                    ));
                    account = Account::LocalService;
                    scm.create_service(&service_info(spec, options.start, &account), access)
                        .map_err(fail(name, "create"))?
                }
                Err(e) => return Err(fail(name, "create")(e)),
            };
            (service, InstallOutcome::Created)
        }
    };

    let mut step = |what: &str, result: Result<(), io::Error>| {
        if let Err(e) = result {
            warnings.push(format!("cannot set the {what}: {e}"));
        }
    };
    if !spec.description.is_empty() {
        step(
            "description",
            service.set_description(&spec.description).map_err(io_error),
        );
    }
    if options.start == StartMode::AutomaticDelayed || outcome == InstallOutcome::Updated {
        step(
            "delayed automatic start",
            service
                .set_delayed_auto_start(options.start == StartMode::AutomaticDelayed)
                .map_err(io_error),
        );
    }
    let preshutdown =
        preshutdown_timeout_for(spec.stop_budget).min(Duration::from_millis(u64::from(u32::MAX)));
    step(
        "preshutdown timeout",
        service
            .set_preshutdown_timeout(preshutdown)
            .map_err(io_error),
    );
    step(
        "failure actions (restart after 5 s, 30 s, 60 s)",
        service
            .update_failure_actions(failure_actions())
            .map_err(io_error),
    );
    step(
        "failure actions on non-crash failures",
        service
            .set_failure_actions_on_non_crash_failures(true)
            .map_err(io_error),
    );
    if !spec.environment.is_empty() {
        step(
            "environment",
            sys::set_service_environment(name, &spec.environment),
        );
    }
    step(
        "Event Log source",
        sys::register_event_source(name, EVENT_MESSAGE_FILE),
    );
    if let Some(dir) = &spec.data_dir {
        step(
            "data directory's access",
            grant_data_dir(dir, name, &account),
        );
    }
    for w in &warnings {
        tracing::warn!(service = name, "{w}");
    }
    Ok(Installed {
        name: name.to_owned(),
        outcome,
        warnings,
    })
}

fn service_info(spec: &ServiceSpec, start: StartMode, account: &Account) -> WsServiceInfo {
    WsServiceInfo {
        name: spec.name.clone().into(),
        display_name: spec.display_name.clone().into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: match start {
            StartMode::Automatic | StartMode::AutomaticDelayed => ServiceStartType::AutoStart,
            StartMode::Manual => ServiceStartType::OnDemand,
            StartMode::Disabled => ServiceStartType::Disabled,
        },
        error_control: ServiceErrorControl::Normal,
        executable_path: spec.executable.clone(),
        launch_arguments: spec.arguments.iter().map(OsString::from).collect(),
        dependencies: Vec::new(),
        account_name: Some(account.name_for(&spec.name).into()),
        account_password: account.password().map(OsString::from),
    }
}

fn failure_actions() -> ServiceFailureActions {
    ServiceFailureActions {
        reset_period: ServiceFailureResetPeriod::After(FAILURE_RESET),
        reboot_msg: None,
        command: None,
        actions: Some(
            RESTART_DELAYS
                .iter()
                .map(|&delay| ServiceAction {
                    action_type: ServiceActionType::Restart,
                    delay,
                })
                .collect(),
        ),
    }
}

/// Creates the data directory and grants the service's account modify rights on it.
fn grant_data_dir(dir: &Path, name: &str, account: &Account) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    if *account == Account::LocalSystem {
        return Ok(()); // it can already write anywhere
    }
    let account = account.name_for(name);
    let output = Command::new("icacls")
        .args(grant_arguments(dir, &account))
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run icacls: {e}")))?;
    if output.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&output.stderr).trim().to_owned()
        + String::from_utf8_lossy(&output.stdout).trim();
    Err(io::Error::other(format!(
        "icacls {} /grant {account}:(OI)(CI)M failed ({}): {said}",
        dir.display(),
        output.status
    )))
}

/// Stops the service if it runs (waiting up to `timeout`, calling `progress` at every new state or
/// checkpoint), deletes it, and removes its Event Log source.
///
/// Needs an elevated prompt.
pub fn uninstall(
    name: &str,
    timeout: Duration,
    progress: &mut dyn FnMut(&Waiting),
) -> Result<Uninstalled, ManageError> {
    let mut warnings = Vec::new();
    let service = match open(
        name,
        ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
    ) {
        Ok(service) => service,
        Err(ManageError::NotInstalled { .. }) => {
            // A source left by an earlier, interrupted uninstall goes too.
            let _ = sys::unregister_event_source(name);
            return Ok(Uninstalled {
                name: name.to_owned(),
                outcome: UninstallOutcome::NotInstalled,
                warnings,
            });
        }
        Err(e) => return Err(e),
    };
    stop_and_wait(&service, name, timeout, progress)?;
    match service.delete().map_err(io_error) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(ERROR_SERVICE_MARKED_FOR_DELETE) => warnings.push(
            "the service was already marked for deletion; it goes once every handle to it is closed"
                .to_owned(),
        ),
        Err(e) => return Err(classify(name, "delete", e)),
    }
    drop(service);
    if let Err(e) = sys::unregister_event_source(name) {
        warnings.push(format!("cannot remove the Event Log source: {e}"));
    }
    // Deletion completes once the last handle (a Services snap-in, a `sc` in flight) is closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match open(name, ServiceAccess::QUERY_STATUS) {
            Err(ManageError::NotInstalled { .. }) => break,
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    if Instant::now() >= deadline {
        warnings.push(
            "the service is marked for deletion but still listed: something holds a handle to it (close the Services snap-in)"
                .to_owned(),
        );
    }
    Ok(Uninstalled {
        name: name.to_owned(),
        outcome: UninstallOutcome::Removed,
        warnings,
    })
}

/// Starts the service and waits up to `timeout` for `RUNNING`, calling `progress` at every new
/// state or checkpoint.
pub fn start(
    name: &str,
    timeout: Duration,
    progress: &mut dyn FnMut(&Waiting),
) -> Result<Reached, ManageError> {
    let service = open(name, ServiceAccess::QUERY_STATUS | ServiceAccess::START)?;
    let already = match service.start::<&str>(&[]).map_err(io_error) {
        Ok(()) => false,
        Err(e) if e.raw_os_error() == Some(ERROR_SERVICE_ALREADY_RUNNING) => true,
        Err(e) => return Err(classify(name, "start", e)),
    };
    wait_for(&service, name, ServiceState::Running, timeout, progress)?;
    Ok(Reached {
        info: status(name)?,
        already,
    })
}

/// Stops the service and waits up to `timeout` for `STOPPED`, calling `progress` at every new
/// state or checkpoint. A service that stopped with an error code has still stopped: the code is
/// in the returned [`ServiceInfo`].
pub fn stop(
    name: &str,
    timeout: Duration,
    progress: &mut dyn FnMut(&Waiting),
) -> Result<Reached, ManageError> {
    let service = open(name, ServiceAccess::QUERY_STATUS | ServiceAccess::STOP)?;
    let already = stop_and_wait(&service, name, timeout, progress)?;
    Ok(Reached {
        info: status(name)?,
        already,
    })
}

/// Sends STOP unless stopped; waits for `STOPPED`. Returns whether it was stopped already.
fn stop_and_wait(
    service: &Service,
    name: &str,
    timeout: Duration,
    progress: &mut dyn FnMut(&Waiting),
) -> Result<bool, ManageError> {
    let now = query(service, name)?;
    if now.current_state == WsState::Stopped {
        return Ok(true);
    }
    match service.stop().map_err(io_error) {
        Ok(_) => {}
        // Stopping already (or not yet able to take a stop): wait for it all the same.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(ERROR_SERVICE_NOT_ACTIVE | ERROR_SERVICE_CANNOT_ACCEPT_CTRL)
            ) => {}
        Err(e) => return Err(classify(name, "stop", e)),
    }
    wait_for(service, name, ServiceState::Stopped, timeout, progress)?;
    Ok(false)
}

fn query(service: &Service, name: &str) -> Result<ServiceStatus, ManageError> {
    service
        .query_status()
        .map_err(fail(name, "query the status of"))
}

fn wait_for(
    service: &Service,
    name: &str,
    wanted: ServiceState,
    timeout: Duration,
    progress: &mut dyn FnMut(&Waiting),
) -> Result<(), ManageError> {
    let mut wait = Wait::new(name, wanted, timeout, Instant::now());
    loop {
        let s = query(service, name)?;
        match wait.observe(
            state(s.current_state),
            s.checkpoint,
            s.wait_hint,
            exit_code(s.exit_code),
            Instant::now(),
            progress,
        )? {
            Step::Done => return Ok(()),
            Step::Poll(after) => std::thread::sleep(after),
        }
    }
}

/// The service's state, process, exit code and configuration.
pub fn status(name: &str) -> Result<ServiceInfo, ManageError> {
    let service = open(
        name,
        ServiceAccess::QUERY_STATUS | ServiceAccess::QUERY_CONFIG,
    )?;
    let s = query(&service, name)?;
    let config = service
        .query_config()
        .map_err(fail(name, "query the configuration of"))?;
    let delayed = sys::delayed_auto_start(&service).unwrap_or(false);
    let start = match config.start_type {
        ServiceStartType::AutoStart if delayed => Some(StartMode::AutomaticDelayed),
        ServiceStartType::AutoStart => Some(StartMode::Automatic),
        ServiceStartType::OnDemand => Some(StartMode::Manual),
        ServiceStartType::Disabled => Some(StartMode::Disabled),
        ServiceStartType::BootStart | ServiceStartType::SystemStart => None,
    };
    Ok(ServiceInfo {
        name: name.to_owned(),
        state: state(s.current_state),
        pid: s.process_id,
        checkpoint: s.checkpoint,
        wait_hint: s.wait_hint,
        exit_code: exit_code(s.exit_code),
        start,
        account: config
            .account_name
            .map(|a| a.to_string_lossy().into_owned()),
        command_line: Some(config.executable_path),
        preshutdown_timeout: sys::preshutdown_timeout(&service).ok(),
        restart_delays: service.get_failure_actions().ok().map(|f| {
            f.actions
                .unwrap_or_default()
                .iter()
                .filter(|a| a.action_type == ServiceActionType::Restart)
                .map(|a| a.delay)
                .collect()
        }),
    })
}

fn state(s: WsState) -> ServiceState {
    match s {
        WsState::Stopped => ServiceState::Stopped,
        WsState::StartPending => ServiceState::StartPending,
        WsState::StopPending => ServiceState::StopPending,
        WsState::Running => ServiceState::Running,
        WsState::ContinuePending => ServiceState::ContinuePending,
        WsState::PausePending => ServiceState::PausePending,
        WsState::Paused => ServiceState::Paused,
    }
}

fn exit_code(code: WsExitCode) -> ServiceExitCode {
    match code {
        WsExitCode::Win32(c) => ServiceExitCode::Win32(c),
        WsExitCode::ServiceSpecific(c) => ServiceExitCode::ServiceSpecific(c),
    }
}
