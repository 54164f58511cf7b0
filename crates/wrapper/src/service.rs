//! `winddown install|uninstall|start|stop|status`: `winddown run … -- PROGRAM` as a service,
//! through the library's service interface (the SCM on Windows, systemd on Linux, launchd on
//! macOS). The stop settings come from the stop timeout: the drain budget is the stop timeout
//! plus the wrapper's margin, and each backend sets its manager's timeout above that budget
//! (preshutdown timeout, `TimeoutStopSec`, `ExitTimeOut`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use winddown::service::ServiceSpec;

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

pub(crate) fn install(options: InstallOptions) -> i32 {
    report(spec(&options).and_then(|spec| platform::install(&spec, &options)))
}

pub(crate) fn uninstall(name: &str) -> i32 {
    report(platform::uninstall(name))
}

pub(crate) fn start(name: &str) -> i32 {
    report(platform::start(name))
}

pub(crate) fn stop(name: &str) -> i32 {
    report(platform::stop(name))
}

pub(crate) fn status(name: &str) -> i32 {
    report(platform::status(name))
}

#[cfg(target_os = "linux")]
mod platform {
    use super::*;
    use winddown::service::systemd::{self, SystemdOptions};

    pub(super) fn install(spec: &ServiceSpec, options: &InstallOptions) -> Result<i32, String> {
        if options.start != StartChoice::Auto {
            return Err(
                "--start applies to a Windows service; under systemd, `winddown install` \
                        enables the unit (`systemctl disable NAME` makes it start only when asked)"
                    .into(),
            );
        }
        let mut systemd = SystemdOptions::default();
        if let Some(user) = &options.user {
            systemd = systemd.user(systemd::ServiceUser::Named {
                user: user.clone(),
                group: None,
            });
        }
        if options.print {
            print!(
                "{}",
                systemd::unit_file(spec, &systemd).map_err(|e| e.to_string())?
            );
            return Ok(0);
        }
        let path = systemd::install(spec, &systemd).map_err(|e| e.to_string())?;
        println!(
            "installed {} and enabled it; start it with `winddown start --name {}`",
            path.display(),
            spec.name
        );
        Ok(0)
    }

    pub(super) fn uninstall(name: &str) -> Result<i32, String> {
        systemd::uninstall(name, &SystemdOptions::default()).map_err(|e| e.to_string())?;
        println!("stopped, disabled and removed {}", systemd::unit_name(name));
        Ok(0)
    }

    pub(super) fn start(name: &str) -> Result<i32, String> {
        systemd::start(name, &SystemdOptions::default()).map_err(|e| e.to_string())?;
        println!("started {}", systemd::unit_name(name));
        Ok(0)
    }

    pub(super) fn stop(name: &str) -> Result<i32, String> {
        systemd::stop(name, &SystemdOptions::default()).map_err(|e| e.to_string())?;
        println!("stopped {}", systemd::unit_name(name));
        Ok(0)
    }

    pub(super) fn status(name: &str) -> Result<i32, String> {
        let s = systemd::status(name, &SystemdOptions::default()).map_err(|e| e.to_string())?;
        println!(
            "{}: {} ({}), main PID {}, since {}, last exit {:?}",
            s.unit,
            s.active_state,
            s.sub_state,
            s.main_pid.map_or("-".into(), |p| p.to_string()),
            s.since.as_deref().unwrap_or("-"),
            s.last_exit
        );
        Ok(if s.active_state == "active" { 0 } else { 3 })
    }
}

#[cfg(target_os = "macos")]
mod platform {
    use super::*;
    use winddown::service::launchd::{self, LaunchdOptions};

    pub(super) fn install(spec: &ServiceSpec, options: &InstallOptions) -> Result<i32, String> {
        let launchd = LaunchdOptions::default();
        if options.print {
            print!(
                "{}",
                launchd::plist(spec, &launchd).map_err(|e| e.to_string())?
            );
            return Ok(0);
        }
        let path = launchd::install(spec, &launchd).map_err(|e| e.to_string())?;
        println!("installed {}", path.display());
        Ok(0)
    }

    pub(super) fn uninstall(name: &str) -> Result<i32, String> {
        launchd::uninstall(name, &LaunchdOptions::default()).map_err(|e| e.to_string())?;
        Ok(0)
    }

    pub(super) fn start(name: &str) -> Result<i32, String> {
        launchd::start(name, &LaunchdOptions::default()).map_err(|e| e.to_string())?;
        Ok(0)
    }

    pub(super) fn stop(name: &str) -> Result<i32, String> {
        launchd::stop(name, &LaunchdOptions::default()).map_err(|e| e.to_string())?;
        Ok(0)
    }

    pub(super) fn status(name: &str) -> Result<i32, String> {
        let s = launchd::status(name, &LaunchdOptions::default()).map_err(|e| e.to_string())?;
        println!("{}: {}, PID {:?}", s.label, s.state, s.pid);
        Ok(0)
    }
}

#[cfg(windows)]
mod platform {
    use super::*;
    use winddown::service::windows::{
        self as scm, Account, IfInstalled, InstallOptions as ScmOptions, StartMode, Waiting,
    };

    /// How long `start`, `stop` and `uninstall` follow the service before giving up.
    const FOLLOW: Duration = Duration::from_secs(300);

    fn show(w: &Waiting) {
        println!("  {w}");
    }

    pub(super) fn install(spec: &ServiceSpec, options: &InstallOptions) -> Result<i32, String> {
        let start = match options.start {
            StartChoice::Auto => StartMode::Automatic,
            StartChoice::Delayed => StartMode::AutomaticDelayed,
            StartChoice::Manual => StartMode::Manual,
        };
        if options.user.is_some() {
            return Err("--user applies to systemd; a Windows service runs as its virtual account NT SERVICE\\NAME".into());
        }
        let account = Account::Virtual;
        if options.print {
            println!("  name:                {}", spec.name);
            println!(
                "  command line:        \"{}\" {}",
                spec.executable.display(),
                spec.arguments.join(" ")
            );
            println!("  start:               {start}");
            println!("  account:             {}", account.name_for(&spec.name));
            println!(
                "  preshutdown timeout: {:.0} s (stop timeout + {:.0} s for the wrapper, + margin)",
                scm::preshutdown_timeout_for(spec.stop_budget).as_secs_f64(),
                WRAPPER_MARGIN.as_secs_f64()
            );
            return Ok(0);
        }
        let scm_options = ScmOptions::new()
            .start(start)
            .account(account)
            .if_installed(IfInstalled::Keep);
        let done = scm::install(spec, &scm_options).map_err(|e| winddown::error_chain(&e))?;
        println!("{done}");
        match scm::status(&spec.name) {
            Ok(info) => println!("{info}"),
            Err(e) => println!(
                "warning: cannot read the service back: {}",
                winddown::error_chain(&e)
            ),
        }
        Ok(0)
    }

    pub(super) fn uninstall(name: &str) -> Result<i32, String> {
        let done =
            scm::uninstall(name, FOLLOW, &mut show).map_err(|e| winddown::error_chain(&e))?;
        println!("{done}");
        Ok(0)
    }

    pub(super) fn start(name: &str) -> Result<i32, String> {
        let reached = scm::start(name, FOLLOW, &mut show).map_err(|e| winddown::error_chain(&e))?;
        println!("{}", reached.info);
        Ok(0)
    }

    pub(super) fn stop(name: &str) -> Result<i32, String> {
        let reached = scm::stop(name, FOLLOW, &mut show).map_err(|e| winddown::error_chain(&e))?;
        println!("{}", reached.info);
        Ok(0)
    }

    pub(super) fn status(name: &str) -> Result<i32, String> {
        let info = scm::status(name).map_err(|e| winddown::error_chain(&e))?;
        println!("{info}");
        Ok(0)
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
mod platform {
    use super::*;

    const NONE: &str = "no service manager backend for this platform";

    pub(super) fn install(_: &ServiceSpec, _: &InstallOptions) -> Result<i32, String> {
        Err(NONE.into())
    }
    pub(super) fn uninstall(_: &str) -> Result<i32, String> {
        Err(NONE.into())
    }
    pub(super) fn start(_: &str) -> Result<i32, String> {
        Err(NONE.into())
    }
    pub(super) fn stop(_: &str) -> Result<i32, String> {
        Err(NONE.into())
    }
    pub(super) fn status(_: &str) -> Result<i32, String> {
        Err(NONE.into())
    }
}
