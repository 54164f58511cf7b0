//! One interface over every service manager: [`ServiceManager`], implemented by [`Systemd`],
//! [`Launchd`] and [`Scm`] on top of the backend modules' functions, with one error type
//! ([`ServiceError`]), one status ([`Status`]) and one install result ([`Installed`]).
//! [`native`] picks the manager of the running system, so a program's `install`/`start`/`stop`/
//! `status` commands need no platform code of their own.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::launchd::{self, LaunchdOptions};
use super::systemd::{self, ServiceUser, SystemdOptions};
use super::windows::{self as scm, Account, IfInstalled, InstallOptions, StartMode};
use super::{ServiceError, ServiceSpec};
use crate::host::scm::ServiceState;

/// Receives the lines a manager reports while it follows a start, stop or uninstall (the SCM's
/// state, checkpoint and wait hint; launchd's wait for the job to exit).
pub type Progress<'a> = &'a mut dyn FnMut(&str);

/// A service manager: renders, installs, updates, removes, starts, stops and reads a service.
///
/// Every method fails with a [`ServiceError`] whose source chain keeps the system's reason (print
/// it with [`crate::error_chain`]). A service that is not installed is not an error for
/// [`ServiceManager::status`]: its [`Status::state`] is [`State::NotInstalled`].
pub trait ServiceManager: Send + Sync {
    /// The manager's name: `systemd`, `launchd`, `the Service Control Manager`.
    fn manager(&self) -> &'static str;

    /// What [`ServiceManager::install`] would install, as text for a person or for installing by
    /// hand (the unit file, the property list, the SCM settings in the words of `sc qc`).
    fn render(&self, spec: &ServiceSpec) -> Result<String, ServiceError>;

    /// Installs `spec`; an installed one is replaced (systemd, launchd) or kept as it is (SCM:
    /// [`Installed::outcome`] is [`Outcome::AlreadyInstalled`]; see [`ServiceManager::update`]).
    fn install(&self, spec: &ServiceSpec) -> Result<Installed, ServiceError>;

    /// Installs `spec`, bringing an installed service's definition up to date.
    fn update(&self, spec: &ServiceSpec) -> Result<Installed, ServiceError>;

    /// Whether [`ServiceManager::install`] replaces an installed definition (systemd, launchd);
    /// `false` where only [`ServiceManager::update`] does (the SCM).
    fn install_replaces(&self) -> bool {
        true
    }

    /// Stops (draining) and removes service `name`; returns one line for a person saying what
    /// was done.
    fn uninstall(&self, name: &str, progress: Progress<'_>) -> Result<String, ServiceError>;

    /// Starts service `name` and returns its status once the manager says it started.
    fn start(&self, name: &str, progress: Progress<'_>) -> Result<Status, ServiceError>;

    /// Stops service `name`, following its drain for at most `timeout` and passing its progress
    /// to `progress` (the SCM's checkpoints, systemd's `STATUS=` lines, launchd's wait); returns
    /// the status it reached. Under systemd and launchd a service still stopping at `timeout` is
    /// not an error: a last progress line says so, with its state (the SCM's backend fails with
    /// its timeout error).
    fn stop(
        &self,
        name: &str,
        timeout: Duration,
        progress: Progress<'_>,
    ) -> Result<Status, ServiceError>;

    /// Service `name`'s state.
    fn status(&self, name: &str) -> Result<Status, ServiceError>;

    /// Whether service `name` is installed under this manager and the manager runs here.
    fn is_installed(&self, name: &str) -> bool;

    /// The last `lines` lines the manager logged for service `name` (systemd's journal, through
    /// `systemctl status`), for a person reading why it failed; `None` where the manager keeps
    /// no log of its own (the SCM, launchd: the service's own log file is the place).
    fn recent_log(&self, name: &str, lines: usize) -> Option<String> {
        let _ = (name, lines);
        None
    }

    /// The command line installed service `name` runs, split into its words as the manager will
    /// (systemd: the unit's `ExecStart=`; the SCM: its image path), for a caller that needs what
    /// an install wrote (`winddown upgrade` finds the wrapped program there); `Ok(None)` where
    /// this manager cannot say.
    fn command(&self, name: &str) -> Result<Option<Vec<String>>, ServiceError> {
        let _ = name;
        Ok(None)
    }
}

/// Where a service is, in one word for every manager.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// The manager does not know the service.
    NotInstalled,
    /// Installed and not running.
    Stopped,
    /// Starting.
    Starting,
    /// Running.
    Running,
    /// Stopping (draining).
    Stopping,
    /// Stopped after a failure (systemd's `failed`).
    Failed,
    /// Something else, in the manager's words.
    Other(String),
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::NotInstalled => f.write_str("not installed"),
            State::Stopped => f.write_str("stopped"),
            State::Starting => f.write_str("starting"),
            State::Running => f.write_str("running"),
            State::Stopping => f.write_str("stopping"),
            State::Failed => f.write_str("failed"),
            State::Other(s) => f.write_str(s),
        }
    }
}

/// A service's status, the same for every manager.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The service's name.
    pub name: String,
    /// Where it is.
    pub state: State,
    /// Its main process, while it runs.
    pub pid: Option<u32>,
    /// The manager's own account of it (its `Display`), one or more lines.
    pub detail: String,
}

impl Status {
    fn not_installed(name: &str) -> Status {
        Status {
            name: name.to_owned(),
            state: State::NotInstalled,
            pid: None,
            detail: String::new(),
        }
    }

    /// The exit status a `status` command returns: 0 running, 3 otherwise (as `systemctl
    /// status` and LSB init scripts do).
    pub fn exit_code(&self) -> i32 {
        if self.state == State::Running { 0 } else { 3 }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.detail.is_empty() {
            write!(f, "{}: {}", self.name, self.state)
        } else {
            f.write_str(&self.detail)
        }
    }
}

/// What an install did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// There was no such service; now there is.
    Created,
    /// An installed service's definition was replaced.
    Updated,
    /// The service was installed already and was left as it was.
    AlreadyInstalled,
}

/// The result of [`ServiceManager::install`] and [`ServiceManager::update`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Installed {
    /// The service's name.
    pub name: String,
    /// The file that defines it (the unit file, the property list); `None` under the SCM, which
    /// keeps services in the registry.
    pub definition: Option<PathBuf>,
    /// What was done.
    pub outcome: Outcome,
    /// What went wrong without stopping the install (an ACL that could not be set).
    pub warnings: Vec<String>,
    /// One line for a person: what was done and what to do next.
    pub summary: String,
}

impl fmt::Display for Installed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary)?;
        for warning in &self.warnings {
            write!(f, "\nwarning: {warning}")?;
        }
        Ok(())
    }
}

/// What [`native_with`] was asked for beyond the [`ServiceSpec`], in terms every manager reads
/// (or refuses with a reason).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct NativeOptions {
    /// When the service starts: only the SCM has a choice; systemd and launchd refuse anything but
    /// [`StartMode::Automatic`].
    pub start: Option<StartMode>,
    /// The account to run as (systemd `User=`, launchd `UserName`); the SCM refuses it (a
    /// service runs as its virtual account).
    pub user: Option<String>,
}

impl NativeOptions {
    /// No choices: the managers' defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the start mode.
    #[must_use]
    pub fn start(mut self, start: StartMode) -> Self {
        self.start = Some(start);
        self
    }

    /// Sets the account.
    #[must_use]
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }
}

/// The manager of the running system, with its defaults: the SCM on Windows, launchd on macOS,
/// systemd elsewhere (its apply methods fail with [`ServiceError::ManagerNotRunning`] where
/// `/run/systemd/system` does not exist; [`ServiceManager::render`] works everywhere).
pub fn native() -> Box<dyn ServiceManager> {
    if cfg!(windows) {
        Box::new(Scm::new())
    } else if cfg!(target_os = "macos") {
        Box::new(Launchd::new(LaunchdOptions::default()))
    } else {
        Box::new(Systemd::new(SystemdOptions::default()))
    }
}

/// [`native`] with `options`.
///
/// # Errors
/// [`ServiceError::InvalidSpec`] for a choice the manager cannot express, naming it and what to
/// do instead.
pub fn native_with(options: &NativeOptions) -> Result<Box<dyn ServiceManager>, ServiceError> {
    if cfg!(windows) {
        if options.user.is_some() {
            return Err(ServiceError::InvalidSpec(
                "a user (--user) applies to systemd and launchd; a Windows service runs as its \
                 virtual account NT SERVICE\\NAME"
                    .into(),
            ));
        }
        let mut scm = Scm::new();
        scm.options = scm.options.start(options.start.unwrap_or_default());
        return Ok(Box::new(scm));
    }
    if options.start.is_some_and(|s| s != StartMode::Automatic) {
        return Err(ServiceError::InvalidSpec(
            "--start applies to a Windows service; under systemd the install enables the \
             unit (`systemctl disable NAME` makes it start only when asked), and launchd \
             starts the job when it loads"
                .into(),
        ));
    }
    if cfg!(target_os = "macos") {
        let mut o = LaunchdOptions::default();
        if let Some(user) = &options.user {
            o = o.user(user.clone(), None);
        }
        Ok(Box::new(Launchd::new(o)))
    } else {
        let mut o = SystemdOptions::default();
        if let Some(user) = &options.user {
            o = o.user(ServiceUser::Named {
                user: user.clone(),
                group: None,
            });
        }
        Ok(Box::new(Systemd::new(o)))
    }
}

/// systemd, through `systemctl`.
#[derive(Debug, Clone, Default)]
pub struct Systemd {
    /// How units are written and where, and which `systemctl` runs.
    pub options: SystemdOptions,
}

impl Systemd {
    /// systemd with `options`.
    pub fn new(options: SystemdOptions) -> Self {
        Systemd { options }
    }

    /// systemd driven by `systemctl` at `program`, without checking that systemd runs here: for
    /// a stand-in `systemctl` (tests), or one that reaches the host's systemd from a container.
    pub fn with_systemctl(program: impl Into<PathBuf>) -> Self {
        Systemd::new(
            SystemdOptions::default()
                .systemctl(program)
                .skip_running_check(),
        )
    }
}

/// An install that writes a definition file (systemd's unit, launchd's property list) at
/// `path` through `write`: [`Outcome::Updated`] when one was there, and a summary naming the file
/// and what else was `done`.
fn install_file(
    spec: &ServiceSpec,
    path: &std::path::Path,
    write: impl FnOnce() -> Result<PathBuf, ServiceError>,
    done: &str,
) -> Result<Installed, ServiceError> {
    let existed = path.exists();
    let path = write()?;
    Ok(Installed {
        name: spec.name.clone(),
        summary: format!("installed {} {done}", path.display()),
        definition: Some(path),
        outcome: if existed {
            Outcome::Updated
        } else {
            Outcome::Created
        },
        warnings: Vec::new(),
    })
}

fn unit_status(name: &str, s: &systemd::UnitStatus) -> Status {
    let state = if !s.is_installed() {
        State::NotInstalled
    } else {
        match s.active_state.as_str() {
            "active" | "reloading" => State::Running,
            "activating" => State::Starting,
            "deactivating" => State::Stopping,
            "inactive" => State::Stopped,
            "failed" => State::Failed,
            other => State::Other(other.to_owned()),
        }
    };
    Status {
        name: name.to_owned(),
        state,
        pid: s.main_pid,
        detail: s.to_string(),
    }
}

impl ServiceManager for Systemd {
    fn manager(&self) -> &'static str {
        "systemd"
    }

    fn render(&self, spec: &ServiceSpec) -> Result<String, ServiceError> {
        systemd::unit_file(spec, &self.options)
    }

    fn install(&self, spec: &ServiceSpec) -> Result<Installed, ServiceError> {
        install_file(
            spec,
            &systemd::unit_path(&spec.name, &self.options),
            || systemd::install(spec, &self.options),
            "and enabled it",
        )
    }

    fn update(&self, spec: &ServiceSpec) -> Result<Installed, ServiceError> {
        self.install(spec)
    }

    fn uninstall(&self, name: &str, progress: Progress<'_>) -> Result<String, ServiceError> {
        progress(&format!(
            "stopping {} (it drains)",
            systemd::unit_name(name)
        ));
        systemd::uninstall(name, &self.options)?;
        Ok(format!(
            "stopped, disabled and removed {}",
            systemd::unit_name(name)
        ))
    }

    fn start(&self, name: &str, _progress: Progress<'_>) -> Result<Status, ServiceError> {
        systemd::start(name, &self.options)?;
        self.status(name)
    }

    /// `systemctl stop --no-block`, then follows the unit, passing on each new `STATUS=` line
    /// of its drain, until it is inactive or failed, or `timeout`.
    fn stop(
        &self,
        name: &str,
        timeout: Duration,
        progress: Progress<'_>,
    ) -> Result<Status, ServiceError> {
        let unit = systemd::unit_name(name);
        systemd::request_stop(name, &self.options)?;
        progress(&format!(
            "stopping {unit} (systemctl stop --no-block); following its drain for up to {:.0} s",
            timeout.as_secs_f64()
        ));
        follow_stop(timeout, progress, |_| {
            let s = systemd::status(name, &self.options)?;
            let line = s.status_text.as_ref().map(|text| format!("{unit}: {text}"));
            Ok((unit_status(name, &s), line))
        })
    }

    fn status(&self, name: &str) -> Result<Status, ServiceError> {
        let s = systemd::status(name, &self.options)?;
        Ok(unit_status(name, &s))
    }

    fn is_installed(&self, name: &str) -> bool {
        self.options.systemd_runs() && systemd::unit_path(name, &self.options).exists()
    }

    fn recent_log(&self, name: &str, lines: usize) -> Option<String> {
        systemd::recent_log(name, lines, &self.options)
    }

    fn command(&self, name: &str) -> Result<Option<Vec<String>>, ServiceError> {
        let path = systemd::unit_path(name, &self.options);
        let text = std::fs::read_to_string(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ServiceError::NotInstalled {
                name: name.to_owned(),
                path: path.clone(),
            },
            _ => ServiceError::Io {
                action: "read",
                path: path.clone(),
                source,
            },
        })?;
        Ok(systemd::exec_start(&text))
    }
}

/// launchd, through `launchctl`.
#[derive(Debug, Clone, Default)]
pub struct Launchd {
    /// How property lists are written and where, and which `launchctl` runs.
    pub options: LaunchdOptions,
}

impl Launchd {
    /// launchd with `options`.
    pub fn new(options: LaunchdOptions) -> Self {
        Launchd { options }
    }

    /// launchd driven by `launchctl` at `program`, on any platform (a stand-in for tests).
    pub fn with_launchctl(program: impl Into<PathBuf>) -> Self {
        Launchd::new(LaunchdOptions::default().launchctl(program))
    }
}

/// How often a stop is followed: [`Launchd::stop`] asks whether the job has exited,
/// [`Systemd::stop`] reads the unit's state and status line.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Follows a stop already asked for: `read` (given the time since the start) returns the
/// service's status and a line for a person, every [`FOLLOW_POLL`], until the service is neither
/// running nor stopping, or `timeout` has passed. Each line unlike the one before goes to
/// `progress`; at the timeout a last line says that the service had not stopped, with its state.
/// Returns the last status read.
fn follow_stop(
    timeout: Duration,
    progress: Progress<'_>,
    mut read: impl FnMut(Duration) -> Result<(Status, Option<String>), ServiceError>,
) -> Result<Status, ServiceError> {
    let started = Instant::now();
    let mut last: Option<String> = None;
    loop {
        let elapsed = started.elapsed();
        let (status, line) = read(elapsed)?;
        if let Some(line) = line
            && last.as_ref() != Some(&line)
        {
            progress(&line);
            last = Some(line);
        }
        if !matches!(status.state, State::Running | State::Stopping) {
            return Ok(status);
        }
        if elapsed >= timeout {
            progress(&format!(
                "not stopped after {:.1} s; no longer following it (its manager goes on \
                 stopping it): {status}",
                elapsed.as_secs_f64()
            ));
            return Ok(status);
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

impl ServiceManager for Launchd {
    fn manager(&self) -> &'static str {
        "launchd"
    }

    fn render(&self, spec: &ServiceSpec) -> Result<String, ServiceError> {
        launchd::plist(spec, &self.options)
    }

    fn install(&self, spec: &ServiceSpec) -> Result<Installed, ServiceError> {
        install_file(
            spec,
            &launchd::plist_path(&spec.name, &self.options),
            || launchd::install(spec, &self.options),
            "and loaded it (it starts at load)",
        )
    }

    fn update(&self, spec: &ServiceSpec) -> Result<Installed, ServiceError> {
        self.install(spec)
    }

    fn uninstall(&self, name: &str, progress: Progress<'_>) -> Result<String, ServiceError> {
        progress(&format!(
            "booting out {}",
            launchd::label(name, &self.options)
        ));
        launchd::uninstall(name, &self.options)?;
        Ok(format!(
            "booted out and removed {}",
            launchd::plist_path(name, &self.options).display()
        ))
    }

    fn start(&self, name: &str, _progress: Progress<'_>) -> Result<Status, ServiceError> {
        launchd::start(name, &self.options)?;
        self.status(name)
    }

    /// Sends `SIGTERM` and follows the job until it is no longer running, or `timeout`.
    fn stop(
        &self,
        name: &str,
        timeout: Duration,
        progress: Progress<'_>,
    ) -> Result<Status, ServiceError> {
        launchd::stop(name, &self.options)?;
        follow_stop(timeout, progress, |elapsed| {
            let status = self.status(name)?;
            let line = (status.state == State::Running).then(|| {
                format!(
                    "{name}: still running (PID {}), {:.1} s into its drain",
                    status.pid.map_or_else(|| "?".to_owned(), |p| p.to_string()),
                    elapsed.as_secs_f64()
                )
            });
            Ok((status, line))
        })
    }

    fn status(&self, name: &str) -> Result<Status, ServiceError> {
        if !launchd::plist_path(name, &self.options).exists() {
            return Ok(Status::not_installed(name));
        }
        let s = launchd::status(name, &self.options)?;
        let state = match s.state.as_str() {
            "running" => State::Running,
            "not running" | "exited" => State::Stopped,
            "spawn scheduled" | "xpcproxy" => State::Starting,
            other => State::Other(other.to_owned()),
        };
        Ok(Status {
            name: name.to_owned(),
            state,
            pid: s.pid,
            detail: s.to_string(),
        })
    }

    fn is_installed(&self, name: &str) -> bool {
        launchd::plist_path(name, &self.options).exists()
    }
}

/// The Windows Service Control Manager. Off Windows every apply method fails with
/// [`scm::ManageError::Unsupported`] (inside [`ServiceError::Scm`]); [`ServiceManager::render`]
/// works everywhere.
#[derive(Debug, Clone)]
pub struct Scm {
    /// The start mode and account; `if_installed` is set by install (keep) and update (update).
    pub options: InstallOptions,
    /// How long start and uninstall follow the service before giving up.
    pub follow: Duration,
}

impl Default for Scm {
    fn default() -> Self {
        Scm::new()
    }
}

impl Scm {
    /// The SCM with an automatic start, the virtual account, and five minutes' following.
    pub fn new() -> Self {
        Scm {
            options: InstallOptions::new()
                .start(StartMode::Automatic)
                .account(Account::Virtual),
            follow: Duration::from_secs(300),
        }
    }

    fn install_with(
        &self,
        spec: &ServiceSpec,
        if_installed: IfInstalled,
    ) -> Result<Installed, ServiceError> {
        let options = self.options.clone().if_installed(if_installed);
        let done = scm::install(spec, &options)?;
        let mut summary = done.to_string();
        if done.outcome != scm::InstallOutcome::AlreadyInstalled {
            // What the SCM now holds, read back rather than echoed.
            match scm::status(&spec.name) {
                Ok(info) => summary = format!("{summary}\n{info}"),
                Err(e) => {
                    summary = format!(
                        "{summary}\nwarning: cannot read the service back: {}",
                        crate::error_chain(&e)
                    )
                }
            }
        }
        Ok(Installed {
            name: done.name,
            definition: None,
            outcome: match done.outcome {
                scm::InstallOutcome::Created => Outcome::Created,
                scm::InstallOutcome::Updated => Outcome::Updated,
                scm::InstallOutcome::AlreadyInstalled => Outcome::AlreadyInstalled,
            },
            warnings: done.warnings,
            summary,
        })
    }
}

fn scm_status(info: &scm::ServiceInfo) -> Status {
    let state = match info.state {
        ServiceState::Stopped => State::Stopped,
        ServiceState::StartPending => State::Starting,
        ServiceState::StopPending => State::Stopping,
        ServiceState::Running => State::Running,
        other => State::Other(format!("{other:?}")),
    };
    Status {
        name: info.name.clone(),
        state,
        pid: info.pid,
        detail: info.to_string(),
    }
}

impl ServiceManager for Scm {
    fn manager(&self) -> &'static str {
        "the Service Control Manager"
    }

    /// The settings an administrator checks after an install, in the words of `sc qc`.
    fn render(&self, spec: &ServiceSpec) -> Result<String, ServiceError> {
        use std::fmt::Write as _;
        let mut command = format!("\"{}\"", spec.executable.display());
        for arg in &spec.arguments {
            command.push(' ');
            if arg.is_empty() || arg.contains([' ', '\t', '"']) {
                let _ = write!(command, "\"{}\"", arg.replace('"', "\\\""));
            } else {
                command.push_str(arg);
            }
        }
        let mut out = String::new();
        let _ = writeln!(out, "  name:                {}", spec.name);
        let _ = writeln!(out, "  display name:        {}", spec.display_name);
        let _ = writeln!(out, "  command line:        {command}");
        let _ = writeln!(out, "  start:               {}", self.options.start);
        let _ = writeln!(
            out,
            "  account:             {}",
            self.options.account.name_for(&spec.name)
        );
        let _ = writeln!(
            out,
            "  preshutdown timeout: {:.0} s (drain budget {:.0} s)",
            scm::preshutdown_timeout_for(spec.stop_budget).as_secs_f64(),
            spec.stop_budget.as_secs_f64()
        );
        if let Some(dir) = &spec.data_dir {
            let _ = writeln!(
                out,
                "  data directory:      {} (modify rights for the account)",
                dir.display()
            );
        }
        for (key, value) in &spec.environment {
            let _ = writeln!(out, "  environment:         {key}={value}");
        }
        Ok(out)
    }

    fn install(&self, spec: &ServiceSpec) -> Result<Installed, ServiceError> {
        self.install_with(spec, IfInstalled::Keep)
    }

    fn update(&self, spec: &ServiceSpec) -> Result<Installed, ServiceError> {
        self.install_with(spec, IfInstalled::Update)
    }

    fn install_replaces(&self) -> bool {
        false
    }

    fn uninstall(&self, name: &str, progress: Progress<'_>) -> Result<String, ServiceError> {
        let done = scm::uninstall(name, self.follow, &mut |w| progress(&w.to_string()))?;
        Ok(done.to_string())
    }

    fn start(&self, name: &str, progress: Progress<'_>) -> Result<Status, ServiceError> {
        let reached = scm::start(name, self.follow, &mut |w| progress(&w.to_string()))?;
        Ok(scm_status(&reached.info))
    }

    fn stop(
        &self,
        name: &str,
        timeout: Duration,
        progress: Progress<'_>,
    ) -> Result<Status, ServiceError> {
        let reached = scm::stop(name, timeout, &mut |w| progress(&w.to_string()))?;
        Ok(scm_status(&reached.info))
    }

    fn status(&self, name: &str) -> Result<Status, ServiceError> {
        match scm::status(name) {
            Ok(info) => Ok(scm_status(&info)),
            Err(scm::ManageError::NotInstalled { .. }) => Ok(Status::not_installed(name)),
            Err(e) => Err(e.into()),
        }
    }

    fn is_installed(&self, name: &str) -> bool {
        scm::status(name).is_ok()
    }

    fn command(&self, name: &str) -> Result<Option<Vec<String>>, ServiceError> {
        let info = scm::status(name)?;
        Ok(info
            .command_line
            .map(|c| scm::split_command_line(&c.to_string_lossy())))
    }
}
