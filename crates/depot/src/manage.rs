//! `depot install | uninstall | start`, and the service-manager side of `stop` and `status`:
//! the Service Control Manager on Windows, systemd on Linux, launchd on macOS. The settings that
//! matter at a stop (preshutdown timeout, `TimeoutStopSec`, `ExitTimeOut`) come from depot's drain
//! budget through [`winddown::service`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use winddown::error_chain;
use winddown::service::windows::StartMode;
use winddown::service::{self, NativeOptions, Outcome, ServiceManager, ServiceSpec};

use crate::config::{Config, Origin, Overrides};

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

/// What `depot install` installs: this executable, running `depot run` with the settings
/// `install` was given — the config file (by its absolute path), the listen address and data
/// directory as flags, and every other setting that did not come from the file as its
/// `DEPOT_<KEY>` variable in the service's environment (the unit's `Environment=`, the SCM's
/// service environment, the plist's `EnvironmentVariables`). A setting that cannot be carried
/// that way (`forward_to`, which may hold a password, from a flag or variable; a data directory
/// systemd's dynamic user cannot own) makes it refuse, naming each one and how to set it in the
/// config file, so the service never runs with settings other than the ones given.
pub fn spec(config: &Config, config_file: Option<&Path>) -> Result<ServiceSpec, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find depot's own executable: {e}"))?;
    let mut args = vec![
        "run".to_owned(),
        "--listen".to_owned(),
        config.listen.to_string(),
    ];
    let config_file = match config_file {
        // The service starts in another directory (system32 on Windows, / under systemd).
        Some(file) => Some(
            std::path::absolute(file)
                .map_err(|e| format!("cannot resolve {}: {e}", file.display()))?,
        ),
        None => None,
    };
    if let Some(file) = &config_file {
        args.push("--config".into());
        args.push(file.display().to_string());
    }
    let budget = Duration::from_millis(config.sigterm_budget_ms.unwrap_or(30_000));
    let mut spec = ServiceSpec::new(SERVICE_NAME, exe)
        .display_name("depot record store")
        .description("Durable record depot: acknowledges a record only once it is on disk")
        .stop_budget(budget);
    let mut refused = Vec::new();
    for (key, value) in carried(config, &mut refused) {
        spec = spec.env(key, value);
    }
    let data_dir_origin = config.provenance.origins.get("data_dir");
    let data_dir = if cfg!(target_os = "linux") {
        match data_dir_origin {
            // systemd gives the service /var/lib/depot as its StateDirectory= and says so in
            // $STATE_DIRECTORY, which depot's default data directory follows.
            None => {
                spec = spec.data_dir("/var/lib/depot");
                None
            }
            Some(origin) => {
                let dir = std::path::absolute(&config.data_dir)
                    .map_err(|e| format!("cannot resolve {}: {e}", config.data_dir.display()))?;
                if dir.starts_with("/var/lib") && dir != Path::new("/var/lib") {
                    spec = spec.data_dir(&dir);
                    Some(dir)
                } else {
                    refused.push(format!(
                        "data_dir = {} (from {origin}): the systemd service runs as a dynamic \
                         user, which can own only a directory below /var/lib; choose one there \
                         (--data-dir /var/lib/NAME, or data_dir in the config file), or leave \
                         it unset for /var/lib/depot",
                        dir.display()
                    ));
                    None
                }
            }
        }
    } else {
        // A Windows service runs as its own account: the installing user's per-user data
        // directory is not its own, so the default becomes %ProgramData%\depot.
        let mut dir = std::path::absolute(&config.data_dir)
            .map_err(|e| format!("cannot resolve {}: {e}", config.data_dir.display()))?;
        if let (true, None, Some(program_data)) = (
            cfg!(windows),
            data_dir_origin,
            std::env::var_os("ProgramData"),
        ) {
            dir = PathBuf::from(program_data).join("depot");
        }
        spec = spec.data_dir(&dir);
        Some(dir)
    };
    if let Some(dir) = &data_dir {
        args.push("--data-dir".into());
        args.push(dir.display().to_string());
    }
    let spec = spec.arguments(args);
    if refused.is_empty() {
        refused = differences(config, config_file.as_deref(), &spec);
    }
    if !refused.is_empty() {
        return Err(format!(
            "install cannot carry {} into the service, so it installed nothing:\n  - {}",
            if refused.len() == 1 {
                "this setting"
            } else {
                "these settings"
            },
            refused.join("\n  - ")
        ));
    }
    Ok(spec)
}

/// The `DEPOT_<KEY>` variables that carry every setting that did not come from the config file
/// (nor is carried as a flag); what cannot be carried goes to `refused`.
fn carried(config: &Config, refused: &mut Vec<String>) -> Vec<(String, String)> {
    let values = match toml::Value::try_from(config) {
        Ok(toml::Value::Table(table)) => table,
        _ => toml::Table::new(),
    };
    let mut vars = Vec::new();
    for (key, origin) in &config.provenance.origins {
        if *origin == Origin::File || key == "listen" || key == "data_dir" {
            continue;
        }
        if key == "forward_to" {
            refused.push(format!(
                "forward_to (from {origin}): it may hold a password, and a service's settings \
                 can be read by every local user; put `forward_to = \"…\"` in a config file \
                 that only the service's administrators can read, and install with \
                 --config FILE"
            ));
            continue;
        }
        let value = match values.get(key) {
            Some(toml::Value::String(s)) => s.clone(),
            Some(v @ (toml::Value::Integer(_) | toml::Value::Boolean(_))) => v.to_string(),
            _ => {
                refused.push(format!(
                    "{key} (from {origin}): its value cannot be written as a variable; put it \
                     in the config file and install with --config FILE"
                ));
                continue;
            }
        };
        vars.push((format!("DEPOT_{}", key.to_ascii_uppercase()), value));
    }
    if let Some(filter) = &config.provenance.log_filter {
        vars.push(("DEPOT_LOG".to_owned(), filter.clone()));
    }
    vars
}

/// The check behind [`spec`]'s promise: the configuration the service will load from what it is
/// given (its config file, its environment, `--listen`) is the one `install` was given. Each
/// setting that differs is named. `data_dir` is left out: [`spec`] gives it as `--data-dir`, or
/// leaves it to the service manager's default (`/var/lib/depot`, `%ProgramData%\depot`).
fn differences(config: &Config, config_file: Option<&Path>, spec: &ServiceSpec) -> Vec<String> {
    let overrides = Overrides {
        listen: Some(config.listen),
        data_dir: Some(config.data_dir.clone()),
        ..Overrides::default()
    };
    let service = match Config::load(config_file, spec.environment.clone(), &overrides) {
        Ok(service) => service,
        Err(e) => return vec![format!("the service would not start: {e}")],
    };
    let table = |c: &Config| match toml::Value::try_from(c) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    };
    let (given, loaded) = (table(config), table(&service));
    let mut keys: Vec<&String> = given.keys().chain(loaded.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|key| *key != "data_dir" && given.get(*key) != loaded.get(*key))
        .map(|key| {
            let origin = config
                .provenance
                .origins
                .get(key)
                .map_or_else(|| "its default".to_owned(), ToString::to_string);
            format!(
                "{key} (from {origin}): the service would not read it back the same; put it in \
                 the config file and install with --config FILE"
            )
        })
        .collect()
}

/// The manager of this system, with what `depot install` was asked for.
fn manager(start: StartChoice) -> Result<Box<dyn ServiceManager>, String> {
    let start = match start {
        StartChoice::Auto => StartMode::Automatic,
        StartChoice::Delayed => StartMode::AutomaticDelayed,
        StartChoice::Manual => StartMode::Manual,
    };
    service::native_with(&NativeOptions::new().start(start)).map_err(|e| error_chain(&e))
}

/// Prints a manager's progress line (the SCM's state and checkpoint while a stop drains).
fn show(line: &str) {
    println!("  {line}");
}

/// `depot install [--print] [--start …] [--update]`.
pub fn install(spec: &ServiceSpec, choices: &InstallChoices) -> Result<i32, String> {
    let manager = manager(choices.start)?;
    if choices.update && manager.install_replaces() {
        return Err(format!(
            "--update applies to a Windows service; under {}, `depot install` replaces the \
             service's definition (and enables it: `systemctl disable depot` makes it start only \
             when asked)",
            manager.manager()
        ));
    }
    if !spec.environment.is_empty() {
        let vars: Vec<String> = spec
            .environment
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        eprintln!(
            "depot: the service {} these settings besides its config file and flags: {}",
            if choices.print { "would get" } else { "gets" },
            vars.join(" ")
        );
    }
    if choices.print {
        print!("{}", manager.render(spec).map_err(|e| error_chain(&e))?);
        return Ok(0);
    }
    let done = if choices.update {
        manager.update(spec)
    } else {
        manager.install(spec)
    }
    .map_err(|e| error_chain(&e))?;
    println!("{done}");
    if done.outcome != Outcome::AlreadyInstalled {
        if let Some(dir) = &spec.data_dir {
            println!("  data directory: {}", dir.display());
        }
        let log = spec.data_dir.as_deref().map_or_else(
            || "its data directory".to_owned(),
            |d| d.join(crate::app::files::SERVICE_LOG).display().to_string(),
        );
        if done.definition.is_none() {
            // The SCM has no journal: depot writes its own log file and the Event Log.
            println!(
                "start it with `depot start`; it logs to {log} and to Event Viewer > Windows \
                 Logs > Application, source {SERVICE_NAME}"
            );
        } else {
            println!("start it with `depot start`");
        }
    }
    Ok(0)
}

/// `depot uninstall`.
pub fn uninstall() -> Result<i32, String> {
    let manager = service::native();
    let done = manager
        .uninstall(SERVICE_NAME, &mut show)
        .map_err(|e| error_chain(&e))?;
    println!("{done}");
    Ok(0)
}

/// `depot start`.
pub fn start() -> Result<i32, String> {
    let status = service::native()
        .start(SERVICE_NAME, &mut show)
        .map_err(|e| error_chain(&e))?;
    println!("{status}");
    Ok(0)
}

/// `depot stop` when depot is installed as a service: `Some(exit code)`; `None` to fall back to
/// stopping a console depot.
pub fn stop_service(timeout: Duration) -> Option<Result<i32, String>> {
    let manager = service::native();
    manager.is_installed(SERVICE_NAME).then(|| {
        let status = manager
            .stop(SERVICE_NAME, timeout, &mut show)
            .map_err(|e| error_chain(&e))?;
        println!("{status}");
        Ok(0)
    })
}

/// `depot status` for an installed service: `Some(exit code)` after printing (0 whenever the
/// manager answered); `None` if depot is not installed as a service here.
pub fn status_service() -> Option<Result<i32, String>> {
    let manager = service::native();
    manager.is_installed(SERVICE_NAME).then(|| {
        let status = manager.status(SERVICE_NAME).map_err(|e| error_chain(&e))?;
        println!("{status}");
        Ok(0)
    })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::config::Overrides;

    /// The last check of [`spec`]: a setting given to `install` that the service would not load
    /// the same (here, a variable lost on the way) is named, with where it came from.
    #[test]
    fn a_setting_the_service_would_not_get_is_named() {
        let config = Config::load(
            None,
            [
                ("DEPOT_COMMIT_QUEUE".to_owned(), "100".to_owned()),
                ("DEPOT_MAX_READ_LIMIT".to_owned(), "7".to_owned()),
            ],
            &Overrides::default(),
        )
        .unwrap();
        let mut spec = spec(&config, None).unwrap();
        assert!(differences(&config, None, &spec).is_empty());
        spec.environment.retain(|(k, _)| k != "DEPOT_COMMIT_QUEUE");
        let found = differences(&config, None, &spec);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("commit_queue (from DEPOT_COMMIT_QUEUE)"),
            "{found:?}"
        );
    }
}
