//! `winddown install|uninstall|start|stop|status`: `winddown run … -- PROGRAM` as a service,
//! through the library's service interface (the SCM on Windows, systemd on Linux, launchd on
//! macOS). The stop settings come from the stop timeout: the drain budget is the stop timeout
//! plus the wrapper's margin, and each backend sets its manager's timeout above that budget
//! (preshutdown timeout, `TimeoutStopSec`, `ExitTimeOut`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use winddown::service::windows::StartMode;
use winddown::service::{self, NativeOptions, ServiceError, ServiceSpec};

use crate::cli::{InstallOptions, StartChoice};
use crate::run::WRAPPER_MARGIN;

/// The stop timeout a service gets when `install` is not given one.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The service: this executable running `winddown run` with the same options, paths made
/// absolute (a service starts in `/` or `system32`), and an explicit stop timeout.
fn spec(options: &InstallOptions) -> Result<ServiceSpec, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find the wrapper's own executable: {e}"))?;
    let mut run = options.run.clone();
    let name = run.service_name();
    let timeout = run.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT);
    run.stop_timeout = Some(timeout);
    run.name = Some(name.clone());
    let program = PathBuf::from(&run.command[0]);
    if program.components().count() > 1 || program.exists() {
        run.command[0] = absolute(&program)?.into_os_string();
    }
    if let Some(dir) = &run.log_dir {
        run.log_dir = Some(absolute(dir)?);
    }
    if let Some(dir) = &run.cwd {
        run.cwd = Some(absolute(dir)?);
    }
    let arguments = run
        .to_args()
        .into_iter()
        .map(|a: OsString| {
            a.into_string().map_err(|a| {
                format!("{a:?} is not valid Unicode: a service's command line must be")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut spec = ServiceSpec::new(&name, exe)
        .display_name(format!("{name} (winddown run)"))
        .description(format!(
            "{} run by winddown: stop signal at once, {:.0} s to drain, then its tree is killed",
            program.display(),
            timeout.as_secs_f64()
        ))
        .arguments(arguments)
        .stop_budget(timeout + WRAPPER_MARGIN);
    if let Some(dir) = &run.log_dir {
        spec = spec.data_dir(dir);
    }
    Ok(spec)
}

fn absolute(path: &Path) -> Result<PathBuf, String> {
    std::path::absolute(path).map_err(|e| format!("cannot resolve {}: {e}", path.display()))
}

fn report(result: Result<i32, String>) -> i32 {
    result.unwrap_or_else(|e| {
        eprintln!("winddown: {e}");
        1
    })
}

fn chain(e: ServiceError) -> String {
    winddown::error_chain(&e)
}

/// Prints a manager's progress line (the SCM's state and checkpoint while a stop drains).
fn show(line: &str) {
    println!("  {line}");
}

/// How long `stop` follows the drain where the manager lets the caller wait (the SCM, launchd).
const FOLLOW: Duration = Duration::from_secs(300);

pub(crate) fn install(options: InstallOptions) -> i32 {
    report(spec(&options).and_then(|spec| install_spec(&spec, &options)))
}

fn install_spec(spec: &ServiceSpec, options: &InstallOptions) -> Result<i32, String> {
    let start = match options.start {
        StartChoice::Auto => StartMode::Automatic,
        StartChoice::Delayed => StartMode::AutomaticDelayed,
        StartChoice::Manual => StartMode::Manual,
    };
    let mut native = NativeOptions::new().start(start);
    if let Some(user) = &options.user {
        native = native.user(user.clone());
    }
    let manager = service::native_with(&native).map_err(chain)?;
    if options.print {
        print!("{}", manager.render(spec).map_err(chain)?);
        return Ok(0);
    }
    let done = manager.install(spec).map_err(chain)?;
    println!("{done}");
    println!("start it with `winddown start --name {}`", spec.name);
    Ok(0)
}

pub(crate) fn uninstall(name: &str) -> i32 {
    report(
        service::native()
            .uninstall(name, &mut show)
            .map_err(chain)
            .map(|done| {
                println!("{done}");
                0
            }),
    )
}

pub(crate) fn start(name: &str) -> i32 {
    report(
        service::native()
            .start(name, &mut show)
            .map_err(chain)
            .map(|status| {
                println!("{status}");
                0
            }),
    )
}

pub(crate) fn stop(name: &str) -> i32 {
    report(
        service::native()
            .stop(name, FOLLOW, &mut show)
            .map_err(chain)
            .map(|status| {
                println!("{status}");
                0
            }),
    )
}

/// Prints the service's status; 0 whenever the manager answered, on every platform.
pub(crate) fn status(name: &str) -> i32 {
    report(service::native().status(name).map_err(chain).map(|status| {
        println!("{status}");
        0
    }))
}
