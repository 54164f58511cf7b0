//! `depot install | uninstall | start`, and the service-manager side of `stop` and `status`:
//! the Service Control Manager on Windows, systemd on Linux, launchd on macOS. The settings that
//! matter at a stop (preshutdown timeout, `TimeoutStopSec`, `ExitTimeOut`) come from depot's drain
//! budget through [`winddown::service`].

use std::path::PathBuf;
use std::time::Duration;

use winddown::service::ServiceSpec;

use crate::config::Config;

/// The service's name under every manager.
pub const SERVICE_NAME: &str = "depot";

/// When the installed Windows service starts (`depot install --start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StartChoice {
    /// At boot (automatic).
    Auto,
    /// Shortly after the other automatic services (automatic, delayed start).
    Delayed,
    /// Only when asked (`depot start`, `sc start depot`).
    Manual,
}

/// What `depot install` was asked for beyond the service's spec.
#[derive(Debug, Clone, Copy)]
pub struct InstallChoices {
    /// Print what would be installed instead of installing it.
    pub print: bool,
    /// The Windows start mode.
    pub start: StartChoice,
    /// Bring an installed Windows service up to date instead of leaving it alone.
    pub update: bool,
}

/// What `depot install` installs: this executable, running `depot run` with the same listen
/// address and data directory, with the drain budget the stop settings derive from.
pub fn spec(config: &Config, config_file: Option<&std::path::Path>) -> Result<ServiceSpec, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find depot's own executable: {e}"))?;
    let mut args = vec![
        "run".to_owned(),
        "--listen".to_owned(),
        config.listen.to_string(),
    ];
    if let Some(file) = config_file {
        // The service starts in another directory (system32 on Windows, / under systemd).
        let file = std::path::absolute(file)
            .map_err(|e| format!("cannot resolve {}: {e}", file.display()))?;
        args.push("--config".into());
        args.push(file.display().to_string());
    }
    let budget = Duration::from_millis(config.sigterm_budget_ms.unwrap_or(30_000));
    let spec = ServiceSpec::new(SERVICE_NAME, exe)
        .display_name("depot record store")
        .description("Durable record depot: acknowledges a record only once it is on disk")
        .stop_budget(budget);
    Ok(if cfg!(target_os = "linux") {
        // systemd gives the service /var/lib/depot as its StateDirectory= and says so in
        // $STATE_DIRECTORY, which depot's default data directory follows.
        spec.arguments(args).data_dir("/var/lib/depot")
    } else {
        // A Windows service runs as its own account: the installing user's per-user data
        // directory is not its own, so the default becomes %ProgramData%\depot.
        let mut dir = std::path::absolute(&config.data_dir)
            .map_err(|e| format!("cannot resolve {}: {e}", config.data_dir.display()))?;
        if let (true, Some(program_data)) = (
            cfg!(windows) && dir == crate::config::default_data_dir(),
            std::env::var_os("ProgramData"),
        ) {
            dir = PathBuf::from(program_data).join("depot");
        }
        args.push("--data-dir".into());
        args.push(dir.display().to_string());
        spec.arguments(args).data_dir(dir)
    })
}

/// `depot install [--print] [--start …] [--update]`.
pub fn install(spec: &ServiceSpec, choices: &InstallChoices) -> Result<i32, String> {
    #[cfg(not(windows))]
    if choices.start != StartChoice::Auto || choices.update {
        return Err(
            "--start and --update apply to a Windows service; under systemd, \
             `depot install` replaces the unit and enables it (`systemctl disable depot` \
             makes it start only when asked)"
                .into(),
        );
    }
    platform::install(spec, choices)
}

/// `depot uninstall`.
pub fn uninstall() -> Result<i32, String> {
    platform::uninstall()
}

/// `depot start`.
pub fn start() -> Result<i32, String> {
    platform::start()
}

/// `depot stop` when depot is installed as a service: `Some(exit code)`; `None` to fall back to
/// stopping a console depot.
pub fn stop_service(timeout: Duration) -> Option<Result<i32, String>> {
    platform::stop(timeout)
}

/// `depot status` for an installed service: `Some(exit code)` after printing; `None` if depot is
/// not installed as a service here.
pub fn status_service() -> Option<Result<i32, String>> {
    platform::status()
}

#[cfg(target_os = "linux")]
mod platform {
    use super::*;
    use winddown::service::systemd::{self, SystemdOptions};

    fn installed(options: &SystemdOptions) -> bool {
        systemd::unit_path(SERVICE_NAME, options).exists()
            && std::path::Path::new("/run/systemd/system").exists()
    }

    pub(super) fn install(spec: &ServiceSpec, choices: &InstallChoices) -> Result<i32, String> {
        let options = SystemdOptions::default();
        if choices.print {
            print!(
                "{}",
                systemd::unit_file(spec, &options).map_err(|e| e.to_string())?
            );
            return Ok(0);
        }
        let path: PathBuf = systemd::install(spec, &options).map_err(|e| e.to_string())?;
        println!(
            "installed {} and enabled it; start it with `depot start`",
            path.display()
        );
        Ok(0)
    }

    pub(super) fn uninstall() -> Result<i32, String> {
        systemd::uninstall(SERVICE_NAME, &SystemdOptions::default()).map_err(|e| e.to_string())?;
        println!(
            "stopped, disabled and removed {}",
            systemd::unit_name(SERVICE_NAME)
        );
        Ok(0)
    }

    pub(super) fn start() -> Result<i32, String> {
        systemd::start(SERVICE_NAME, &SystemdOptions::default()).map_err(|e| e.to_string())?;
        println!("started {}", systemd::unit_name(SERVICE_NAME));
        Ok(0)
    }

    pub(super) fn stop(_timeout: Duration) -> Option<Result<i32, String>> {
        let options = SystemdOptions::default();
        installed(&options).then(|| {
            systemd::stop(SERVICE_NAME, &options).map_err(|e| e.to_string())?;
            println!("stopped {}", systemd::unit_name(SERVICE_NAME));
            Ok(0)
        })
    }

    pub(super) fn status() -> Option<Result<i32, String>> {
        let options = SystemdOptions::default();
        installed(&options).then(|| {
            let s = systemd::status(SERVICE_NAME, &options).map_err(|e| e.to_string())?;
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
        })
    }
}

#[cfg(target_os = "macos")]
mod platform {
    use super::*;
    use winddown::service::launchd::{self, LaunchdOptions};

    pub(super) fn install(spec: &ServiceSpec, choices: &InstallChoices) -> Result<i32, String> {
        let options = LaunchdOptions::default();
        if choices.print {
            print!(
                "{}",
                launchd::plist(spec, &options).map_err(|e| e.to_string())?
            );
            return Ok(0);
        }
        let path: PathBuf = launchd::install(spec, &options).map_err(|e| e.to_string())?;
        println!("installed {}", path.display());
        Ok(0)
    }

    pub(super) fn uninstall() -> Result<i32, String> {
        launchd::uninstall(SERVICE_NAME, &LaunchdOptions::default()).map_err(|e| e.to_string())?;
        Ok(0)
    }

    pub(super) fn start() -> Result<i32, String> {
        launchd::start(SERVICE_NAME, &LaunchdOptions::default()).map_err(|e| e.to_string())?;
        Ok(0)
    }

    pub(super) fn stop(_timeout: Duration) -> Option<Result<i32, String>> {
        let options = LaunchdOptions::default();
        launchd::plist_path(SERVICE_NAME, &options)
            .exists()
            .then(|| {
                launchd::stop(SERVICE_NAME, &options).map_err(|e| e.to_string())?;
                Ok(0)
            })
    }

    pub(super) fn status() -> Option<Result<i32, String>> {
        let options = LaunchdOptions::default();
        launchd::plist_path(SERVICE_NAME, &options)
            .exists()
            .then(|| {
                let s = launchd::status(SERVICE_NAME, &options).map_err(|e| e.to_string())?;
                println!("{}: {}, PID {:?}", s.label, s.state, s.pid);
                Ok(0)
            })
    }
}

#[cfg(windows)]
mod platform {
    use super::*;
    use winddown::service::windows::{
        self as scm, Account, IfInstalled, InstallOptions, StartMode, Waiting,
    };

    fn show(w: &Waiting) {
        println!("  {w}");
    }

    fn installed() -> bool {
        scm::status(SERVICE_NAME).is_ok()
    }

    pub(super) fn install(spec: &ServiceSpec, choices: &InstallChoices) -> Result<i32, String> {
        let start = match choices.start {
            StartChoice::Auto => StartMode::Automatic,
            StartChoice::Delayed => StartMode::AutomaticDelayed,
            StartChoice::Manual => StartMode::Manual,
        };
        let account = Account::Virtual;
        if choices.print {
            print_settings(spec, start, &account);
            return Ok(0);
        }
        let options = InstallOptions::new()
            .start(start)
            .account(account)
            .if_installed(if choices.update {
                IfInstalled::Update
            } else {
                IfInstalled::Keep
            });
        let done = scm::install(spec, &options).map_err(|e| winddown::error_chain(&e))?;
        println!("{done}");
        if done.outcome != scm::InstallOutcome::AlreadyInstalled {
            // What the SCM now holds, read back rather than echoed.
            match scm::status(SERVICE_NAME) {
                Ok(info) => println!("{info}"),
                Err(e) => println!(
                    "warning: cannot read the service back: {}",
                    winddown::error_chain(&e)
                ),
            }
            if let Some(dir) = &spec.data_dir {
                println!("  data directory: {}", dir.display());
            }
            println!(
                "start it with `depot start`; it logs to {} and to Event Viewer > Windows Logs > \
                 Application, source {SERVICE_NAME}",
                spec.data_dir.as_deref().map_or_else(
                    || "its data directory".to_owned(),
                    |d| d.join(crate::app::files::SERVICE_LOG).display().to_string()
                )
            );
        }
        Ok(0)
    }

    /// The settings an administrator checks after an install, in the words of `sc qc`.
    fn print_settings(spec: &ServiceSpec, start: StartMode, account: &Account) {
        let mut command = format!("\"{}\"", spec.executable.display());
        for arg in &spec.arguments {
            command.push(' ');
            if arg.is_empty() || arg.contains([' ', '\t', '"']) {
                command.push_str(&format!("\"{}\"", arg.replace('"', "\\\"")));
            } else {
                command.push_str(arg);
            }
        }
        println!("  name:                {}", spec.name);
        println!("  display name:        {}", spec.display_name);
        println!("  command line:        {command}");
        println!("  start:               {start}");
        println!("  account:             {}", account.name_for(&spec.name));
        println!(
            "  preshutdown timeout: {:.0} s (drain budget {:.0} s)",
            scm::preshutdown_timeout_for(spec.stop_budget).as_secs_f64(),
            spec.stop_budget.as_secs_f64()
        );
        if let Some(dir) = &spec.data_dir {
            println!(
                "  data directory:      {} (modify rights for the account)",
                dir.display()
            );
        }
    }

    pub(super) fn uninstall() -> Result<i32, String> {
        let done = scm::uninstall(SERVICE_NAME, Duration::from_secs(120), &mut show)
            .map_err(|e| winddown::error_chain(&e))?;
        println!("{done}");
        Ok(0)
    }

    pub(super) fn start() -> Result<i32, String> {
        let reached = scm::start(SERVICE_NAME, Duration::from_secs(60), &mut show)
            .map_err(|e| winddown::error_chain(&e))?;
        println!("{}", reached.info);
        Ok(0)
    }

    pub(super) fn stop(timeout: Duration) -> Option<Result<i32, String>> {
        installed().then(|| {
            let reached = scm::stop(SERVICE_NAME, timeout, &mut show)
                .map_err(|e| winddown::error_chain(&e))?;
            println!("{}", reached.info);
            Ok(0)
        })
    }

    pub(super) fn status() -> Option<Result<i32, String>> {
        scm::status(SERVICE_NAME).ok().map(|info| {
            println!("{info}");
            Ok(0)
        })
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
mod platform {
    use super::*;

    const NONE: &str = "no service manager backend for this platform";

    pub(super) fn install(_: &ServiceSpec, _: &InstallChoices) -> Result<i32, String> {
        Err(NONE.into())
    }
    pub(super) fn uninstall() -> Result<i32, String> {
        Err(NONE.into())
    }
    pub(super) fn start() -> Result<i32, String> {
        Err(NONE.into())
    }
    pub(super) fn stop(_: Duration) -> Option<Result<i32, String>> {
        None
    }
    pub(super) fn status() -> Option<Result<i32, String>> {
        None
    }
}
