//! Applying a unit through `systemctl`, and reading its status back.

use super::*;

/// The directory whose existence means systemd runs (`sd_booted(3)`).
pub(super) const BOOTED: &str = "/run/systemd/system";

pub(super) fn check_running(options: &SystemdOptions) -> Result<(), ServiceError> {
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

pub(super) fn systemctl(options: &SystemdOptions, args: &[&str]) -> Result<String, ServiceError> {
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
    crate::service::file::write_atomic(&path, &text)?;
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

/// Asks systemd to stop service `name` and returns at once (`systemctl stop --no-block`): the
/// caller follows the drain through [`status`] ([`UnitStatus::status_text`] carries the
/// program's `STATUS=` lines). What `ServiceManager::stop` does under systemd.
///
/// # Errors
/// [`ServiceError::ManagerNotRunning`], or `systemctl`'s failure (no such unit).
pub fn request_stop(name: &str, options: &SystemdOptions) -> Result<(), ServiceError> {
    check_unit_name(name, "service name")?;
    check_running(options)?;
    systemctl(options, &["stop", "--no-block", &unit_name(name)]).map(drop)
}

/// `systemctl status NAME --no-pager --lines N`: the unit's state and its journal's last lines,
/// whatever its exit status (3 for a stopped unit); `None` if `systemctl` cannot run.
pub fn recent_log(name: &str, lines: usize, options: &SystemdOptions) -> Option<String> {
    check_unit_name(name, "service name").ok()?;
    check_running(options).ok()?;
    let out = std::process::Command::new(&options.systemctl)
        .args(["status", &unit_name(name), "--no-pager", "--lines"])
        .arg(lines.to_string())
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    Some(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// The words of a unit's first `ExecStart=` line, unquoted as systemd does (systemd.syntax(7):
/// double or single quotes, C escapes, `%%` and `$$`); `None` if the unit has none. The inverse
/// of [`quote_exec_path`] and [`quote_exec_arg`].
///
/// ```
/// use winddown::service::systemd::exec_start;
/// let unit = "[Service]\nExecStart=/usr/bin/w run \"a b\" \"50%% \\\"x\\\"\" $$HOME\n";
/// assert_eq!(exec_start(unit).unwrap(), ["/usr/bin/w", "run", "a b", "50% \"x\"", "$HOME"]);
/// ```
pub fn exec_start(unit: &str) -> Option<Vec<String>> {
    let line = unit
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("ExecStart="))?;
    // Prefixes of the executable (`-`, `@`, `+`, `!`, `:`) are not part of it.
    let line = line.trim_start_matches(['-', '@', '+', '!', ':']);
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else { break };
        let mut word = String::new();
        let quote = matches!(first, '"' | '\'').then(|| {
            chars.next();
            first
        });
        while let Some(c) = chars.next() {
            match c {
                c if Some(c) == quote => break,
                c if quote.is_none() && c.is_whitespace() => break,
                '\\' => match chars.next() {
                    Some('n') => word.push('\n'),
                    Some('t') => word.push('\t'),
                    Some('x') => {
                        let hex: String = (0..2).filter_map(|_| chars.next()).collect();
                        if let Ok(b) = u8::from_str_radix(&hex, 16) {
                            word.push(char::from(b));
                        }
                    }
                    Some(other) => word.push(other),
                    None => {}
                },
                '%' | '$' if chars.peek() == Some(&c) => {
                    chars.next();
                    word.push(c);
                }
                c => word.push(c),
            }
        }
        words.push(word);
    }
    Some(words)
}

/// The properties [`status`] reads with `systemctl show`.
pub(super) const STATUS_PROPERTIES: &str = "LoadState,ActiveState,SubState,MainPID,StateChangeTimestamp,\
ExecMainExitTimestamp,ExecMainCode,ExecMainStatus,Result,StatusText";

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
    /// The program's last `STATUS=` line (winddown's hosts send one for each drain phase).
    pub status_text: Option<String>,
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

pub(super) fn signal_name(signal: i32) -> String {
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
            status_text: get("StatusText"),
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
