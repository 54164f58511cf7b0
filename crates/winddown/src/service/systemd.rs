//! systemd: a `Type=notify` unit for a [`ServiceSpec`], and `systemctl` to manage it.
//!
//! [`unit_file`] is a pure function — it runs anywhere and is what a `--print` option prints.
//! Only [`install`], [`uninstall`], [`start`], [`stop`] and [`status`] touch the system, and they
//! first check that systemd runs (`/run/systemd/system` exists, the test of `sd_booted(3)`); in a
//! container or on a build machine they fail with [`ServiceError::ManagerNotRunning`] and change
//! nothing.
//!
//! # The stop settings
//! - `Type=notify`, `NotifyAccess=main`: the program says when it serves (`READY=1`) and how its
//!   drain goes (see [`crate::host::systemd`]); only the main process may.
//! - `KillMode=mixed`: `SIGTERM` goes to the main process alone — it stops its own children as part
//!   of its drain — and `SIGKILL` to the whole control group once `TimeoutStopSec` has passed.
//! - `TimeoutStopSec` = [`ServiceSpec::manager_stop_timeout`] (the budget plus a margin), and
//!   `Environment=WINDDOWN_STOP_BUDGET_MS=<budget>` so the program plans its drain for the budget
//!   ([`STOP_BUDGET_ENV`]): the process cannot read `TimeoutStopSec`.
//! - `WatchdogSec`: the program pings at half of it from its runtime (see
//!   [`SystemdHooks::start_watchdog`](crate::host::systemd::SystemdHooks::start_watchdog)).
//!
//! # The sandbox
//! The unit runs the program as a dynamic user (or a named one) with `ProtectSystem=strict`,
//! `ProtectHome=yes`, `PrivateTmp=yes` and the other settings `systemd-analyze security` rates
//! (it rates this unit 1.6, "OK"): the executable must live outside `/home` and `/tmp`
//! (`/usr/local/bin`, `/opt/…`), the program can write only its `StateDirectory=` (or
//! `ReadWritePaths=`), and it may open only `AF_UNIX` (the notify socket), `AF_INET` and `AF_INET6`
//! sockets. Loosen a setting with a drop-in rather than by editing the unit.
//!
//! # Exit codes and restarts
//! winddown exits 0 after a clean stop, 3 when the drain cut something off, 4 when a phase (or the
//! start-up) failed, 5 on a forced exit ([`crate::EXIT_CUT_OFF`], …). None of 3, 4, 5 is listed in
//! `SuccessExitStatus=`, on purpose: they are failures. When the program stops on its own with one
//! of them (an admin's `kill`, a fatal error), `Restart=on-failure` restarts it; when `systemctl
//! stop` asked for the stop, systemd does not restart it, but the unit shows `failed` with the exit
//! status, so a cut-off drain is visible in `systemctl status` instead of passing for a clean one.
//! `StartLimitIntervalSec`/`StartLimitBurst` stop a crash loop (a start-up that always fails with 4).

use std::ffi::OsString;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::command;
use super::{ServiceError, ServiceSpec};
use crate::host::STOP_BUDGET_ENV;
use crate::report::{EXIT_CLEAN, EXIT_CUT_OFF, EXIT_FAILED, EXIT_FORCED};

/// Where [`install`] writes unit files by default.
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// The account the service runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServiceUser {
    /// `DynamicUser=yes`: a transient user allocated when the service starts, owning nothing
    /// outside its `StateDirectory=` (the data directory must be under `/var/lib`).
    Dynamic,
    /// A named user (`User=`), and optionally group (`Group=`), that must exist.
    Named {
        /// The user name.
        user: String,
        /// The group name (the user's primary group if `None`).
        group: Option<String>,
    },
}

/// How [`unit_file`] and [`install`] write the unit, beyond the [`ServiceSpec`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SystemdOptions {
    /// The account the service runs as. Default: [`ServiceUser::Dynamic`].
    pub user: ServiceUser,
    /// `WatchdogSec=`: systemd restarts the service when it goes this long without a ping.
    /// Default 30 s; `None` for no watchdog.
    pub watchdog: Option<Duration>,
    /// `RestartSec=`: the pause before a restart. Default 5 s.
    pub restart_delay: Duration,
    /// `StartLimitIntervalSec=`: the window in which [`SystemdOptions::start_limit_burst`] starts
    /// are allowed. Default 5 min.
    pub start_limit_interval: Duration,
    /// `StartLimitBurst=`: starts allowed per window before systemd gives up. Default 5.
    pub start_limit_burst: u32,
    /// `RestrictAddressFamilies=`. Default `AF_UNIX AF_INET AF_INET6` (`AF_UNIX` is needed for
    /// the notify socket).
    pub address_families: Vec<String>,
    /// `WantedBy=` of `[Install]`. Default `multi-user.target`.
    pub wanted_by: String,
    /// Where [`install`] writes the unit. Default [`UNIT_DIR`].
    pub unit_dir: PathBuf,
    /// The `systemctl` program. Default `systemctl` (found on `PATH`).
    pub systemctl: PathBuf,
    /// Whether the apply functions first check that systemd runs (always, outside this crate's
    /// tests).
    check_running: bool,
}

impl Default for SystemdOptions {
    fn default() -> Self {
        SystemdOptions {
            user: ServiceUser::Dynamic,
            watchdog: Some(Duration::from_secs(30)),
            restart_delay: Duration::from_secs(5),
            start_limit_interval: Duration::from_secs(300),
            start_limit_burst: 5,
            address_families: ["AF_UNIX", "AF_INET", "AF_INET6"]
                .map(String::from)
                .to_vec(),
            wanted_by: "multi-user.target".to_owned(),
            unit_dir: PathBuf::from(UNIT_DIR),
            systemctl: PathBuf::from("systemctl"),
            check_running: true,
        }
    }
}

impl SystemdOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the account.
    #[must_use]
    pub fn user(mut self, user: ServiceUser) -> Self {
        self.user = user;
        self
    }

    /// Sets (or, with `None`, removes) the watchdog.
    #[must_use]
    pub fn watchdog(mut self, watchdog: Option<Duration>) -> Self {
        self.watchdog = watchdog;
        self
    }

    /// Sets the restart pause and the start limit (`burst` starts per `interval`).
    #[must_use]
    pub fn restart(mut self, delay: Duration, interval: Duration, burst: u32) -> Self {
        self.restart_delay = delay;
        self.start_limit_interval = interval;
        self.start_limit_burst = burst;
        self
    }

    /// Sets the address families the service may use.
    #[must_use]
    pub fn address_families<I, S>(mut self, families: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.address_families = families.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the target that wants the service.
    #[must_use]
    pub fn wanted_by(mut self, target: impl Into<String>) -> Self {
        self.wanted_by = target.into();
        self
    }

    /// Sets where the unit is written.
    #[must_use]
    pub fn unit_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.unit_dir = dir.into();
        self
    }

    /// Sets the `systemctl` program.
    #[must_use]
    pub fn systemctl(mut self, program: impl Into<PathBuf>) -> Self {
        self.systemctl = program.into();
        self
    }

    /// Skips the check that systemd runs (`/run/systemd/system` exists) before applying: for a
    /// stand-in [`SystemdOptions::systemctl`] (a test, a container that drives a host's systemd).
    #[must_use]
    pub fn skip_running_check(mut self) -> Self {
        self.check_running = false;
        self
    }

    /// Whether systemd runs here: `/run/systemd/system` exists (`sd_booted(3)`), or the check was
    /// skipped ([`SystemdOptions::skip_running_check`]).
    pub fn systemd_runs(&self) -> bool {
        !self.check_running || Path::new(BOOTED).is_dir()
    }
}

/// The unit's name: `<name>.service`.
pub fn unit_name(name: &str) -> String {
    format!("{name}.service")
}

/// The unit file for `spec`: the text [`install`] writes, for a `--print` option. Touches nothing.
///
/// # Errors
/// [`ServiceError::InvalidSpec`] when something cannot be expressed in a unit file: a name that
/// is not a valid unit name, an executable that is not an absolute path (or holds quotes, a
/// backslash or control characters, which systemd refuses there), an invalid environment variable
/// name or a NUL anywhere, a data directory outside `/var/lib` with [`ServiceUser::Dynamic`], or
/// [`STOP_BUDGET_ENV`] in the environment (set [`ServiceSpec::stop_budget`] instead).
pub fn unit_file(spec: &ServiceSpec, options: &SystemdOptions) -> Result<String, ServiceError> {
    check_unit_name(&spec.name, "service name")?;
    check_unit_name(&options.wanted_by, "WantedBy target")?;
    let executable = spec.executable.to_str().ok_or_else(|| {
        invalid(format!(
            "the executable path {:?} is not UTF-8",
            spec.executable
        ))
    })?;
    check_executable(executable)?;
    for arg in &spec.arguments {
        check_no_nul(arg, "an argument")?;
    }
    for (key, value) in &spec.environment {
        check_env(key, value)?;
    }
    for family in &options.address_families {
        let valid = family == "none"
            || family.strip_prefix("AF_").is_some_and(|rest| {
                !rest.is_empty()
                    && rest
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            });
        if !valid {
            return Err(invalid(format!("invalid address family {family:?}")));
        }
    }
    let storage = data_storage(spec, &options.user)?;

    let mut u = String::new();
    let title = one_line(&spec.display_name);
    let _ = writeln!(
        u,
        "# {}: {title}. Written by winddown's installer; reinstall to change it, or override",
        unit_name(&spec.name)
    );
    let _ = writeln!(
        u,
        "# settings with a drop-in (`systemctl edit {}`).",
        spec.name
    );
    if !spec.description.is_empty() {
        let _ = writeln!(u, "# {}", one_line(&spec.description));
    }
    u.push_str("\n[Unit]\n");
    let _ = writeln!(u, "Description={}", escape_specifiers(&title));
    u.push_str("After=network.target\n");
    u.push_str(
        "# At most StartLimitBurst starts per StartLimitIntervalSec, then systemd gives up.\n",
    );
    let _ = writeln!(
        u,
        "StartLimitIntervalSec={}",
        seconds(options.start_limit_interval)
    );
    let _ = writeln!(u, "StartLimitBurst={}", options.start_limit_burst);

    u.push_str("\n[Service]\n");
    u.push_str("# The program reports READY=1, STATUS=, STOPPING=1 and its drain's progress.\n");
    u.push_str("Type=notify\nNotifyAccess=main\n");
    let mut exec = quote_exec_path(executable);
    for arg in &spec.arguments {
        exec.push(' ');
        exec.push_str(&quote_exec_arg(arg));
    }
    let _ = writeln!(u, "ExecStart={exec}");
    u.push_str("# The drain's budget: TimeoutStopSec is not visible to the program.\n");
    let _ = writeln!(
        u,
        "Environment={}",
        quote_env(STOP_BUDGET_ENV, &spec.stop_budget.as_millis().to_string())
    );
    for (key, value) in &spec.environment {
        let _ = writeln!(u, "Environment={}", quote_env(key, value));
    }

    u.push_str(
        "\n# Stop: SIGTERM to the main process (it drains and stops its own children), then\n\
         # SIGKILL to the whole group once TimeoutStopSec = drain budget + margin has passed.\n",
    );
    u.push_str("KillMode=mixed\n");
    let _ = writeln!(u, "TimeoutStopSec={}", seconds(spec.manager_stop_timeout()));
    if let Some(watchdog) = options.watchdog {
        let _ = writeln!(u, "WatchdogSec={}", seconds(watchdog));
    }
    let _ = writeln!(
        u,
        "# Exit codes {EXIT_CUT_OFF} (drain cut off), {EXIT_FAILED} (failed) and {EXIT_FORCED} \
         (forced) are failures: restarted when\n\
         # the program stopped on its own, shown as failed after `systemctl stop`. They are\n\
         # deliberately not in SuccessExitStatus=."
    );
    u.push_str("Restart=on-failure\n");
    let _ = writeln!(u, "RestartSec={}", seconds(options.restart_delay));

    u.push('\n');
    match &options.user {
        ServiceUser::Dynamic => u.push_str("DynamicUser=yes\n"),
        ServiceUser::Named { user, group } => {
            check_account(user)?;
            let _ = writeln!(u, "User={user}");
            if let Some(group) = group {
                check_account(group)?;
                let _ = writeln!(u, "Group={group}");
            }
        }
    }
    match &storage {
        Storage::None => {}
        Storage::StateDirectory(dir) => {
            let _ = writeln!(u, "StateDirectory={dir}");
            u.push_str("StateDirectoryMode=0700\n");
        }
        Storage::ReadWrite(path) => {
            let _ = writeln!(u, "ReadWritePaths={}", quote_path(path));
        }
    }
    u.push_str("UMask=0077\n");

    u.push_str("\n# Hardening (`systemd-analyze security` rates it).\n");
    for line in [
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectProc=invisible",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "SystemCallErrorNumber=EPERM",
    ] {
        u.push_str(line);
        u.push('\n');
    }
    let _ = writeln!(
        u,
        "RestrictAddressFamilies={}",
        options.address_families.join(" ")
    );

    u.push_str("\n[Install]\n");
    let _ = writeln!(u, "WantedBy={}", options.wanted_by);
    Ok(u)
}

enum Storage {
    None,
    StateDirectory(String),
    ReadWrite(String),
}

/// Where the data directory goes: `StateDirectory=` for a relative path or one under
/// `/var/lib` (systemd creates it, owned by the service's user), `ReadWritePaths=` elsewhere
/// (only with a named user who owns it: a dynamic user owns nothing outside `/var/lib`).
fn data_storage(spec: &ServiceSpec, user: &ServiceUser) -> Result<Storage, ServiceError> {
    let Some(dir) = &spec.data_dir else {
        return Ok(Storage::None);
    };
    let dir = dir
        .to_str()
        .ok_or_else(|| invalid(format!("the data directory {dir:?} is not UTF-8")))?;
    let relative = match dir.strip_prefix("/var/lib/") {
        Some(rest) => Some(rest),
        None if !dir.starts_with('/') => Some(dir),
        None => None,
    };
    match relative {
        Some(rel) => {
            let rel = rel.trim_end_matches('/');
            let valid = !rel.is_empty()
                && rel.split('/').all(|part| {
                    !part.is_empty()
                        && part != "."
                        && part != ".."
                        && part
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                });
            if !valid {
                return Err(invalid(format!(
                    "the data directory {dir:?} cannot be a StateDirectory= \
                     (use letters, digits, '.', '_', '-' and '/' below /var/lib)"
                )));
            }
            Ok(Storage::StateDirectory(rel.to_owned()))
        }
        None if *user == ServiceUser::Dynamic => Err(invalid(format!(
            "the data directory {dir:?} is outside /var/lib: a dynamic user (DynamicUser=yes) \
             cannot own it; put it under /var/lib, or run as a named user who owns it"
        ))),
        None => {
            check_no_nul(dir, "the data directory")?;
            Ok(Storage::ReadWrite(dir.to_owned()))
        }
    }
}

/// Quotes the executable, the first word of `ExecStart=`: `%` is doubled (specifiers) and the
/// word is double-quoted if it holds anything but letters, digits and `/_.,:=+@-`. `$` is left
/// alone: systemd never expands variables in the executable's path (only in the arguments).
///
/// ```
/// use winddown::service::systemd::quote_exec_path;
/// assert_eq!(quote_exec_path("/usr/bin/depot"), "/usr/bin/depot");
/// assert_eq!(quote_exec_path("/opt/my app/50%/$x"), r#""/opt/my app/50%%/$x""#);
/// ```
pub fn quote_exec_path(path: &str) -> String {
    quote(path, Dollar::Keep)
}

/// Quotes one argument of `ExecStart=` so that the program receives exactly `arg`: `%` and `$`
/// are doubled (specifiers, variable expansion), and the word is double-quoted with C escapes
/// (`\"`, `\\`, `\n`, `\xNN`) if it holds anything but letters, digits and `/_.,:=+@-` — which
/// also keeps a lone `;` from separating commands.
///
/// ```
/// use winddown::service::systemd::quote_exec_arg;
/// assert_eq!(quote_exec_arg("--port=8080"), "--port=8080");
/// assert_eq!(quote_exec_arg("a b"), r#""a b""#);
/// assert_eq!(quote_exec_arg("$HOME 100%"), r#""$$HOME 100%%""#);
/// assert_eq!(quote_exec_arg(r#"say "hi"\n"#), r#""say \"hi\"\\n""#);
/// assert_eq!(quote_exec_arg(""), r#""""#);
/// ```
pub fn quote_exec_arg(arg: &str) -> String {
    quote(arg, Dollar::Double)
}

/// Quotes one `KEY=value` assignment of `Environment=`: `%` is doubled, `$` is not (systemd does
/// not expand variables there), and the assignment is double-quoted with C escapes when needed.
///
/// ```
/// use winddown::service::systemd::quote_env;
/// assert_eq!(quote_env("RUST_LOG", "info"), "RUST_LOG=info");
/// assert_eq!(quote_env("GREETING", "50% of $5"), r#""GREETING=50%% of $5""#);
/// ```
pub fn quote_env(key: &str, value: &str) -> String {
    quote(&format!("{key}={value}"), Dollar::Keep)
}

fn quote_path(path: &str) -> String {
    quote(path, Dollar::Keep)
}

#[derive(PartialEq)]
enum Dollar {
    Keep,
    Double,
}

fn quote(word: &str, dollar: Dollar) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_.,:=+@-".contains(c));
    if plain {
        return word.to_owned();
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('"');
    for c in word.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '%' => out.push_str("%%"),
            '$' if dollar == Dollar::Double => out.push_str("$$"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A line for `Description=` or a comment: control characters become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn escape_specifiers(text: &str) -> String {
    text.replace('%', "%%")
}

/// systemd time spans: whole seconds when exact, milliseconds otherwise.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn invalid(message: String) -> ServiceError {
    ServiceError::InvalidSpec(message)
}

fn check_unit_name(name: &str, what: &str) -> Result<(), ServiceError> {
    let valid = !name.is_empty()
        && name.len() <= 240
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":_.-".contains(c))
        && !name.starts_with('.');
    if valid {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} {name:?} is not a valid unit name (letters, digits, ':', '_', '.', '-')"
        )))
    }
}

fn check_executable(path: &str) -> Result<(), ServiceError> {
    if !path.starts_with('/') || path.ends_with('/') {
        return Err(invalid(format!(
            "the executable {path:?} must be an absolute path to a file"
        )));
    }
    if path.chars().any(|c| c.is_control() || "\"'\\".contains(c)) {
        return Err(invalid(format!(
            "the executable path {path:?} holds a quote, a backslash or a control character, \
             which systemd refuses in an executable's path"
        )));
    }
    Ok(())
}

fn check_no_nul(text: &str, what: &str) -> Result<(), ServiceError> {
    if text.contains('\0') {
        Err(invalid(format!("{what} holds a NUL character: {text:?}")))
    } else {
        Ok(())
    }
}

fn check_env(key: &str, value: &str) -> Result<(), ServiceError> {
    let mut chars = key.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(invalid(format!(
            "{key:?} is not a valid environment variable name"
        )));
    }
    if key == STOP_BUDGET_ENV {
        return Err(invalid(format!(
            "{STOP_BUDGET_ENV} is written from the stop budget; set ServiceSpec::stop_budget instead"
        )));
    }
    check_no_nul(value, "an environment value")
}

fn check_account(name: &str) -> Result<(), ServiceError> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(invalid(format!(
            "{name:?} is not a valid user or group name"
        )))
    }
}

/// Where [`install`] writes the unit of service `name`.
pub fn unit_path(name: &str, options: &SystemdOptions) -> PathBuf {
    options.unit_dir.join(unit_name(name))
}

/// The directory whose existence means systemd runs (`sd_booted(3)`).
const BOOTED: &str = "/run/systemd/system";

fn check_running(options: &SystemdOptions) -> Result<(), ServiceError> {
    if options.systemd_runs() {
        Ok(())
    } else {
        Err(ServiceError::ManagerNotRunning {
            manager: "systemd",
            detail: format!("{BOOTED} does not exist: PID 1 is not systemd"),
            what: "unit file",
        })
    }
}

fn systemctl(options: &SystemdOptions, args: &[&str]) -> Result<String, ServiceError> {
    let program: OsString = options.systemctl.clone().into();
    command::run(&program, args)
}

/// Installs `spec`: writes its unit to [`SystemdOptions::unit_dir`] (replacing an older one),
/// runs `systemctl daemon-reload` and `systemctl enable`. Does not start it (see [`start`]).
/// Returns the unit file's path.
///
/// # Errors
/// [`ServiceError::ManagerNotRunning`] when systemd does not run here (nothing is written), the
/// errors of [`unit_file`], and the failures of writing the file or of `systemctl`.
pub fn install(spec: &ServiceSpec, options: &SystemdOptions) -> Result<PathBuf, ServiceError> {
    let text = unit_file(spec, options)?;
    check_running(options)?;
    let path = unit_path(&spec.name, options);
    super::file::write_atomic(&path, &text)?;
    systemctl(options, &["daemon-reload"])?;
    systemctl(options, &["enable", &unit_name(&spec.name)])?;
    tracing::info!(unit = %path.display(), "installed and enabled");
    Ok(path)
}

/// Uninstalls service `name`: `systemctl stop` (a failure is logged, not fatal: the unit goes
/// anyway), `systemctl disable`, removes the unit file, `systemctl daemon-reload`, and clears a
/// failed state (`systemctl reset-failed`, best effort).
///
/// # Errors
/// [`ServiceError::ManagerNotRunning`], [`ServiceError::NotInstalled`] when there is no unit
/// file, and the failures of `systemctl disable`, the removal and the reload.
pub fn uninstall(name: &str, options: &SystemdOptions) -> Result<(), ServiceError> {
    check_unit_name(name, "service name")?;
    check_running(options)?;
    let path = unit_path(name, options);
    if !path.exists() {
        return Err(ServiceError::NotInstalled {
            name: name.to_owned(),
            path,
        });
    }
    let unit = unit_name(name);
    if let Err(e) = systemctl(options, &["stop", &unit]) {
        tracing::warn!(error = %e, "stopping before uninstall failed; uninstalling anyway");
    }
    systemctl(options, &["disable", &unit])?;
    std::fs::remove_file(&path).map_err(|source| ServiceError::Io {
        action: "remove",
        path: path.clone(),
        source,
    })?;
    systemctl(options, &["daemon-reload"])?;
    let _ = systemctl(options, &["reset-failed", &unit]);
    tracing::info!(unit = %path.display(), "uninstalled");
    Ok(())
}

/// Starts service `name` (`systemctl start`, which returns once the program sent `READY=1`).
///
/// # Errors
/// [`ServiceError::ManagerNotRunning`], or `systemctl`'s failure (the start timed out, the
/// program exited).
pub fn start(name: &str, options: &SystemdOptions) -> Result<(), ServiceError> {
    check_unit_name(name, "service name")?;
    check_running(options)?;
    systemctl(options, &["start", &unit_name(name)]).map(drop)
}

/// Stops service `name` (`systemctl stop`, which returns once the program has drained and exited,
/// or was killed at `TimeoutStopSec`).
///
/// # Errors
/// [`ServiceError::ManagerNotRunning`], or `systemctl`'s failure.
pub fn stop(name: &str, options: &SystemdOptions) -> Result<(), ServiceError> {
    check_unit_name(name, "service name")?;
    check_running(options)?;
    systemctl(options, &["stop", &unit_name(name)]).map(drop)
}

/// The properties [`status`] reads with `systemctl show`.
const STATUS_PROPERTIES: &str = "LoadState,ActiveState,SubState,MainPID,StateChangeTimestamp,\
ExecMainExitTimestamp,ExecMainCode,ExecMainStatus,Result";

/// Reads service `name`'s state: `systemctl show -p LoadState,ActiveState,SubState,MainPID,…`.
///
/// # Errors
/// [`ServiceError::ManagerNotRunning`], or `systemctl`'s failure. A unit that is not installed is
/// not an error: its [`UnitStatus::load_state`] is `not-found`.
pub fn status(name: &str, options: &SystemdOptions) -> Result<UnitStatus, ServiceError> {
    check_unit_name(name, "service name")?;
    check_running(options)?;
    let unit = unit_name(name);
    let text = systemctl(options, &["show", &unit, "--property", STATUS_PROPERTIES])?;
    Ok(UnitStatus::parse(&unit, &text))
}

/// What `systemctl show` says about a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnitStatus {
    /// The unit (`depot.service`).
    pub unit: String,
    /// `loaded`, `not-found`, …
    pub load_state: String,
    /// `active`, `activating`, `deactivating`, `inactive`, `failed`.
    pub active_state: String,
    /// `running`, `stop-sigterm`, `dead`, …
    pub sub_state: String,
    /// The main process, while there is one.
    pub main_pid: Option<u32>,
    /// When the unit entered its state, as systemd prints it.
    pub since: Option<String>,
    /// How the main process last exited, if it has.
    pub last_exit: Option<LastExit>,
    /// systemd's verdict on the last run: `success`, `exit-code`, `signal`, `timeout`, `watchdog`, …
    pub result: String,
}

/// How a service's main process last exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LastExit {
    /// It exited with this status.
    Exited(i32),
    /// A signal ended it.
    Killed(i32),
    /// A signal ended it and it dumped core.
    Dumped(i32),
}

impl fmt::Display for LastExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LastExit::Exited(code) => {
                write!(f, "exited with status {code}")?;
                let meaning = match code {
                    EXIT_CLEAN => Some("clean stop"),
                    EXIT_CUT_OFF => Some("drain cut off"),
                    EXIT_FAILED => Some("failed"),
                    EXIT_FORCED => Some("forced exit"),
                    _ => None,
                };
                if let Some(m) = meaning {
                    write!(f, " ({m})")?;
                }
                Ok(())
            }
            LastExit::Killed(signal) => write!(f, "killed by {}", signal_name(signal)),
            LastExit::Dumped(signal) => {
                write!(f, "killed by {} (core dumped)", signal_name(signal))
            }
        }
    }
}

fn signal_name(signal: i32) -> String {
    let name = match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        _ => return format!("signal {signal}"),
    };
    format!("{name} ({signal})")
}

impl UnitStatus {
    /// Parses `systemctl show` output (`Key=value` lines) for `unit`.
    pub fn parse(unit: &str, text: &str) -> UnitStatus {
        let get = |key: &str| {
            text.lines()
                .filter_map(|line| line.split_once('='))
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.trim().to_owned())
                .filter(|v| !v.is_empty() && v != "n/a")
        };
        let main_pid = get("MainPID")
            .and_then(|p| p.parse::<u32>().ok())
            .filter(|&p| p != 0);
        let status = get("ExecMainStatus").and_then(|s| s.parse::<i32>().ok());
        // ExecMainCode is the CLD_* code of waitid(2): 1 exited, 2 killed, 3 dumped.
        let last_exit = match (
            get("ExecMainExitTimestamp"),
            get("ExecMainCode").as_deref(),
            status,
        ) {
            (Some(_), Some("1"), Some(s)) => Some(LastExit::Exited(s)),
            (Some(_), Some("2"), Some(s)) => Some(LastExit::Killed(s)),
            (Some(_), Some("3"), Some(s)) => Some(LastExit::Dumped(s)),
            _ => None,
        };
        UnitStatus {
            unit: unit.to_owned(),
            load_state: get("LoadState").unwrap_or_default(),
            active_state: get("ActiveState").unwrap_or_default(),
            sub_state: get("SubState").unwrap_or_default(),
            main_pid,
            since: get("StateChangeTimestamp"),
            last_exit,
            result: get("Result").unwrap_or_default(),
        }
    }

    /// Whether the unit is installed (its unit file was found).
    pub fn is_installed(&self) -> bool {
        self.load_state != "not-found"
    }
}

impl fmt::Display for UnitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.is_installed() {
            return write!(f, "{}: not installed", self.unit);
        }
        write!(
            f,
            "{}: {} ({})",
            self.unit, self.active_state, self.sub_state
        )?;
        if let Some(since) = &self.since {
            write!(f, " since {since}")?;
        }
        if let Some(pid) = self.main_pid {
            write!(f, "; main PID {pid}")?;
        }
        if let Some(exit) = &self.last_exit {
            write!(f, "; last exit: {exit}")?;
        }
        if !self.result.is_empty() && self.result != "success" {
            write!(f, "; result: {}", self.result)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        ServiceSpec::new("depot", "/usr/local/bin/depot")
            .display_name("depot record store")
            .description("Stores records; acknowledges only what is on disk.")
            .arguments(["serve", "--data", "/var/lib/depot"])
            .data_dir("/var/lib/depot")
            .stop_budget(Duration::from_secs(30))
            .env("RUST_LOG", "info")
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn the_unit_has_the_stop_restart_and_hardening_settings() {
        let text = unit_file(&spec(), &SystemdOptions::default()).unwrap();
        let lines = lines(&text);
        for expected in [
            "[Unit]",
            "Description=depot record store",
            "StartLimitIntervalSec=300s",
            "StartLimitBurst=5",
            "[Service]",
            "Type=notify",
            "NotifyAccess=main",
            "ExecStart=/usr/local/bin/depot serve --data /var/lib/depot",
            "Environment=WINDDOWN_STOP_BUDGET_MS=30000",
            "Environment=RUST_LOG=info",
            "KillMode=mixed",
            "TimeoutStopSec=35s",
            "WatchdogSec=30s",
            "Restart=on-failure",
            "RestartSec=5s",
            "DynamicUser=yes",
            "StateDirectory=depot",
            "StateDirectoryMode=0700",
            "UMask=0077",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "PrivateDevices=yes",
            "ProtectKernelTunables=yes",
            "ProtectControlGroups=yes",
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
            "LockPersonality=yes",
            "MemoryDenyWriteExecute=yes",
            "RestrictRealtime=yes",
            "SystemCallArchitectures=native",
            "[Install]",
            "WantedBy=multi-user.target",
        ] {
            assert!(lines.contains(&expected), "missing {expected:?} in\n{text}");
        }
        // 3, 4 and 5 must stay failures (restart, `failed` state).
        assert!(
            !lines.iter().any(|l| l.starts_with("SuccessExitStatus")),
            "{text}"
        );
        // Sections in order, each key once.
        let unit = text.find("[Unit]").unwrap();
        let service = text.find("[Service]").unwrap();
        let install = text.find("[Install]").unwrap();
        assert!(unit < service && service < install);
        let mut keys: Vec<_> = lines
            .iter()
            .filter(|l| !l.starts_with('#') && l.contains('='))
            .map(|l| l.split_once('=').unwrap().0)
            .filter(|k| *k != "Environment")
            .collect();
        let n = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), n, "a key appears twice:\n{text}");
    }

    #[test]
    fn named_user_watchdog_off_and_a_data_dir_elsewhere() {
        let spec = spec().data_dir("/srv/depot data");
        let options = SystemdOptions::new()
            .user(ServiceUser::Named {
                user: "depot".into(),
                group: Some("depot".into()),
            })
            .watchdog(None)
            .restart(Duration::from_millis(1500), Duration::from_secs(60), 3);
        let text = unit_file(&spec, &options).unwrap();
        let lines = lines(&text);
        for expected in [
            "User=depot",
            "Group=depot",
            "ReadWritePaths=\"/srv/depot data\"",
            "RestartSec=1500ms",
            "StartLimitIntervalSec=60s",
            "StartLimitBurst=3",
        ] {
            assert!(lines.contains(&expected), "missing {expected:?} in\n{text}");
        }
        assert!(!text.contains("DynamicUser"), "{text}");
        assert!(!text.contains("WatchdogSec"), "{text}");
        assert!(!text.contains("StateDirectory"), "{text}");
        // The same directory with a dynamic user cannot work.
        let err = unit_file(&spec, &SystemdOptions::new()).unwrap_err();
        assert!(err.to_string().contains("outside /var/lib"), "{err}");
    }

    #[test]
    fn exec_words_round_trip_systemd_quoting() {
        let cases = [
            ("plain", "plain"),
            ("--listen=127.0.0.1:8080", "--listen=127.0.0.1:8080"),
            ("with space", "\"with space\""),
            ("100%", "\"100%%\""),
            ("$HOME", "\"$$HOME\""),
            ("${HOME}", "\"$${HOME}\""),
            ("say \"hi\"", "\"say \\\"hi\\\"\""),
            ("back\\slash", "\"back\\\\slash\""),
            ("it's", "\"it's\""),
            (";", "\";\""),
            ("line\nbreak\ttab", "\"line\\nbreak\\ttab\""),
            ("bell\u{7}", "\"bell\\x07\""),
            ("", "\"\""),
            ("é", "\"é\""),
        ];
        for (arg, quoted) in cases {
            assert_eq!(quote_exec_arg(arg), quoted, "{arg:?}");
        }
        // The executable keeps `$`: systemd does not expand variables in the path.
        assert_eq!(
            quote_exec_path("/opt/my app/50% $x/bin"),
            "\"/opt/my app/50%% $x/bin\""
        );
        assert_eq!(quote_env("A", "1 2"), "\"A=1 2\"");
        assert_eq!(quote_env("B", "$HOME"), "\"B=$HOME\"");
        assert_eq!(quote_env("C", "50%"), "\"C=50%%\"");
    }

    #[test]
    fn what_systemd_cannot_express_is_refused() {
        let bad = [
            spec().executable_for_test("depot"),
            spec().executable_for_test("/usr/bin/de\"pot"),
            spec().executable_for_test("/usr/bin/"),
            spec().env("1BAD", "x"),
            spec().env("WINDDOWN_STOP_BUDGET_MS", "5"),
            spec().env("NUL", "a\0b"),
            spec().arguments(["a\0b"]),
            spec().data_dir("/var/lib/../etc"),
            spec().data_dir("/srv/depot"),
            spec().name_for_test("depot@"),
            spec().name_for_test(""),
        ];
        for spec in bad {
            let err = unit_file(&spec, &SystemdOptions::new()).unwrap_err();
            assert!(matches!(err, ServiceError::InvalidSpec(_)), "{err}");
        }
        let err = unit_file(
            &spec(),
            &SystemdOptions::new().address_families(["AF_INET; rm"]),
        )
        .unwrap_err();
        assert!(matches!(err, ServiceError::InvalidSpec(_)), "{err}");
    }

    #[test]
    fn description_and_comments_stay_on_one_line() {
        let spec = spec()
            .display_name("depot\n[Service]\nExecStartPre=/bin/evil 100%")
            .description("two\nlines");
        let text = unit_file(&spec, &SystemdOptions::new()).unwrap();
        assert_eq!(text.matches("[Service]\n").count(), 1, "{text}");
        assert!(!text.contains("\nExecStartPre"), "{text}");
        assert!(
            text.contains("Description=depot [Service] ExecStartPre=/bin/evil 100%%\n"),
            "{text}"
        );
    }

    #[test]
    fn status_parses_systemctl_show() {
        let text = "LoadState=loaded\nActiveState=failed\nSubState=failed\nMainPID=0\n\
                    StateChangeTimestamp=Wed 2026-11-25 17:00:00 UTC\n\
                    ExecMainExitTimestamp=Wed 2026-11-25 17:00:00 UTC\nExecMainCode=1\n\
                    ExecMainStatus=3\nResult=exit-code\n";
        let s = UnitStatus::parse("depot.service", text);
        assert_eq!(s.active_state, "failed");
        assert_eq!(s.main_pid, None);
        assert_eq!(s.last_exit, Some(LastExit::Exited(3)));
        assert_eq!(
            s.to_string(),
            "depot.service: failed (failed) since Wed 2026-11-25 17:00:00 UTC; \
             last exit: exited with status 3 (drain cut off); result: exit-code"
        );

        let running = "LoadState=loaded\nActiveState=active\nSubState=running\nMainPID=4242\n\
                       StateChangeTimestamp=Wed 2026-11-25 17:01:00 UTC\n\
                       ExecMainExitTimestamp=\nExecMainCode=0\nExecMainStatus=0\nResult=success\n";
        let s = UnitStatus::parse("depot.service", running);
        assert_eq!(s.main_pid, Some(4242));
        assert_eq!(s.last_exit, None);
        assert_eq!(
            s.to_string(),
            "depot.service: active (running) since Wed 2026-11-25 17:01:00 UTC; main PID 4242"
        );

        let killed = "LoadState=loaded\nActiveState=inactive\nSubState=dead\n\
                      ExecMainExitTimestamp=Wed 2026-11-25 17:02:00 UTC\nExecMainCode=2\n\
                      ExecMainStatus=9\nResult=timeout\n";
        let s = UnitStatus::parse("depot.service", killed);
        assert_eq!(s.last_exit, Some(LastExit::Killed(9)));
        assert!(
            s.to_string()
                .contains("killed by SIGKILL (9); result: timeout"),
            "{s}"
        );

        let missing = UnitStatus::parse(
            "nope.service",
            "LoadState=not-found\nActiveState=inactive\n",
        );
        assert!(!missing.is_installed());
        assert_eq!(missing.to_string(), "nope.service: not installed");
    }

    #[test]
    fn without_systemd_nothing_is_touched_and_the_error_says_why() {
        if Path::new(BOOTED).is_dir() {
            eprintln!("skipped: systemd runs on this machine");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let options = SystemdOptions::new().unit_dir(dir.path());
        let err = install(&spec(), &options).unwrap_err();
        assert!(
            matches!(err, ServiceError::ManagerNotRunning { .. }),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("systemd is not running") && text.contains("--print"),
            "{text}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        for result in [
            start("depot", &options),
            stop("depot", &options),
            uninstall("depot", &options),
            status("depot", &options).map(drop),
        ] {
            assert!(matches!(
                result,
                Err(ServiceError::ManagerNotRunning { .. })
            ));
        }
    }

    /// The apply steps against a stand-in `systemctl` that records its arguments.
    #[cfg(unix)]
    #[test]
    fn install_and_uninstall_run_systemctl_in_order() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("calls");
        let fake = dir.path().join("systemctl");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\necho \"$*\" >> '{}'\n\
                 if [ \"$1\" = show ]; then echo LoadState=loaded; echo ActiveState=active; \
                 echo SubState=running; echo MainPID=77; fi\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let units = dir.path().join("units");
        std::fs::create_dir(&units).unwrap();
        let mut options = SystemdOptions::new().unit_dir(&units).systemctl(&fake);
        options.check_running = false;

        let path = install(&spec(), &options).unwrap();
        assert_eq!(path, units.join("depot.service"));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            unit_file(&spec(), &options).unwrap()
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        start("depot", &options).unwrap();
        let st = status("depot", &options).unwrap();
        assert_eq!(st.main_pid, Some(77));
        stop("depot", &options).unwrap();
        uninstall("depot", &options).unwrap();
        assert!(!path.exists());
        let err = uninstall("depot", &options).unwrap_err();
        assert!(matches!(err, ServiceError::NotInstalled { .. }), "{err}");

        let calls = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            lines(&calls),
            [
                "daemon-reload",
                "enable depot.service",
                "start depot.service",
                &format!("show depot.service --property {STATUS_PROPERTIES}"),
                "stop depot.service",
                "stop depot.service",
                "disable depot.service",
                "daemon-reload",
                "reset-failed depot.service",
            ]
        );

        // A failing systemctl is reported with its stderr.
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'Unit depot.service not found.' >&2\nexit 5\n",
        )
        .unwrap();
        let err = start("depot", &options).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("start depot.service") && text.contains("not found"),
            "{text}"
        );
    }

    impl ServiceSpec {
        fn executable_for_test(mut self, path: &str) -> Self {
            self.executable = PathBuf::from(path);
            self
        }

        fn name_for_test(mut self, name: &str) -> Self {
            self.name = name.to_owned();
            self
        }
    }
}
