//! Installing and managing the program as a Windows service, through the Service Control Manager.
//!
//! [`install`] creates the service so that a stop never cuts the drain short, and so that a
//! failed stop is seen:
//! - the preshutdown timeout is the spec's stop budget plus 5 s (the Windows
//!   default, 10 s, is shorter than most drains), and the running service reads it back as its
//!   `PRESHUTDOWN` budget;
//! - failure actions restart the service after 5 s, 30 s, then 60 s, the count reset after a day,
//!   and they also fire on "non-crash failures": a service that reports `STOPPED` with an error
//!   code — which the winddown host does when the drain was not clean;
//! - the service runs as its own virtual account, `NT SERVICE\<name>`, rather than LocalSystem;
//! - its data directory is its own: created with (or, if it exists with a trusted owner, reset
//!   to) a protected DACL — SYSTEM, Administrators and the service's account, nothing inherited
//!   from `%ProgramData%`, which lets every user read — and refused if it exists with another
//!   owner or as a link ([`data_dir_dacl`], [`ManageError::DataDir`]);
//! - its Event Log source is registered, so its lifecycle events read properly in Event Viewer.
//!
//! [`start`], [`stop`] and [`uninstall`] wait for the service to get there, reporting each new
//! state or checkpoint, and give up with a message that says what was last seen. [`status`] tells
//! state, process id, start mode, account and last exit code.
//!
//! Everything here exists on every platform, so that a program's command line is written once;
//! off Windows the functions fail with [`ManageError::Unsupported`].
//!
//! # Under Wine (8.0, as `ci/windows.sh` runs it)
//! Create, update, start, stop, query, delete, the description, the preshutdown timeout (set and
//! read back) and the Event Log source's registry key work. The virtual account is accepted and
//! shown, but Wine runs every service as the Wine user. Refused, and so reported as warnings:
//! delayed automatic start and "failure actions on non-crash failures" (`ERROR_INVALID_LEVEL`).
//! Accepted but without effect: the failure actions themselves (they cannot be read back), the
//! service's `Environment` (not passed to the process). The data directory's owner and protected
//! DACL are set and read back (Wine keeps them), but Wine does not enforce them: every Wine
//! process runs as one user, in the Administrators group.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::host::scm::{ServiceExitCode, ServiceState};

#[cfg(windows)]
mod manager;
#[cfg(windows)]
pub use manager::{install, start, status, stop, uninstall};
#[cfg(not(windows))]
pub use unsupported::{install, start, status, stop, uninstall};

/// What the preshutdown timeout adds to the spec's stop budget: time for the process to exit
/// after the drain, so that the SCM never moves on while the service is still flushing.
pub(crate) const PRESHUTDOWN_SLACK: Duration = Duration::from_secs(5);

/// The message file the Event Log source is registered with: .NET Framework 4's
/// `EventLogMessages.dll` (present on every supported Windows), whose every event id reads "%1",
/// so that Event Viewer shows the service's messages as they are.
// Used by the Windows backend only (windows/manager.rs).
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) const EVENT_MESSAGE_FILE: &str =
    r"%SystemRoot%\Microsoft.NET\Framework64\v4.0.30319\EventLogMessages.dll";

/// The preshutdown timeout [`install`] sets for a stop budget: the budget plus [`PRESHUTDOWN_SLACK`].
pub(crate) fn preshutdown_timeout_for(stop_budget: Duration) -> Duration {
    stop_budget.saturating_add(PRESHUTDOWN_SLACK)
}

/// The restart delays of the failure actions [`install`] sets: first, second, and every later
/// failure. The failure count is reset after [`FAILURE_RESET`].
// Used by the Windows backend only (windows/manager.rs).
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) const RESTART_DELAYS: [Duration; 3] = [
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(60),
];

/// How long the service must run without failing for the failure count to start again.
// Used by the Windows backend only (windows/manager.rs).
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) const FAILURE_RESET: Duration = Duration::from_secs(24 * 60 * 60);

/// How the service is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartMode {
    /// At boot (`SERVICE_AUTO_START`).
    #[default]
    Automatic,
    /// Shortly after the other automatic services (`SERVICE_AUTO_START` plus "delayed").
    AutomaticDelayed,
    /// Only when asked (`SERVICE_DEMAND_START`).
    Manual,
    /// Not at all (`SERVICE_DISABLED`).
    Disabled,
}

impl fmt::Display for StartMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StartMode::Automatic => "automatic",
            StartMode::AutomaticDelayed => "automatic (delayed)",
            StartMode::Manual => "manual",
            StartMode::Disabled => "disabled",
        })
    }
}

/// The account the service runs as.
#[derive(Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Account {
    /// The service's own virtual account, `NT SERVICE\<name>`: no password, no rights beyond
    /// what it is granted, and a distinct identity for the data directory's ACL.
    #[default]
    Virtual,
    /// `NT AUTHORITY\LocalService`: few rights, shared with other services.
    LocalService,
    /// `NT AUTHORITY\NetworkService`: like LocalService, with the machine's network identity.
    NetworkService,
    /// `LocalSystem`: every right on the machine. Avoid.
    LocalSystem,
    /// A user account.
    User {
        /// `DOMAIN\user` or `.\user`.
        name: String,
        /// Its password.
        password: String,
    },
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Account::User { name, .. } => f
                .debug_struct("User")
                .field("name", name)
                .finish_non_exhaustive(),
            other => f.write_str(match other {
                Account::Virtual => "Virtual",
                Account::LocalService => "LocalService",
                Account::NetworkService => "NetworkService",
                _ => "LocalSystem",
            }),
        }
    }
}

impl Account {
    /// The account name the SCM is given for service `service`. LocalSystem is named too
    /// (`LocalSystem`, as the SCM reports it): an update that left it out would keep the old
    /// account.
    pub fn name_for(&self, service: &str) -> String {
        match self {
            Account::Virtual => format!(r"NT SERVICE\{service}"),
            Account::LocalService => r"NT AUTHORITY\LocalService".to_owned(),
            Account::NetworkService => r"NT AUTHORITY\NetworkService".to_owned(),
            Account::LocalSystem => "LocalSystem".to_owned(),
            Account::User { name, .. } => name.clone(),
        }
    }

    #[cfg_attr(not(windows), allow(dead_code))]
    pub(crate) fn password(&self) -> Option<&str> {
        match self {
            Account::User { password, .. } => Some(password),
            _ => None,
        }
    }
}

/// What [`install`] does when the service is already installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IfInstalled {
    /// Say so and change nothing.
    #[default]
    Keep,
    /// Bring its configuration in line with the spec and options.
    Update,
}

/// How to install the service, beyond the [`crate::service::ServiceSpec`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct InstallOptions {
    /// How it starts. Default: automatic.
    pub start: StartMode,
    /// Who it runs as. Default: its virtual account.
    pub account: Account,
    /// What to do if it exists. Default: keep it as it is.
    pub if_installed: IfInstalled,
}

impl InstallOptions {
    /// The defaults: automatic start, virtual account, an existing service kept as it is.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the start mode.
    #[must_use]
    pub fn start(mut self, start: StartMode) -> Self {
        self.start = start;
        self
    }

    /// Sets the account.
    #[must_use]
    pub fn account(mut self, account: Account) -> Self {
        self.account = account;
        self
    }

    /// Sets what to do with an existing service.
    #[must_use]
    pub fn if_installed(mut self, if_installed: IfInstalled) -> Self {
        self.if_installed = if_installed;
        self
    }
}

/// What [`install`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallOutcome {
    /// The service was created.
    Created,
    /// The service existed and was brought up to date ([`IfInstalled::Update`]).
    Updated,
    /// The service existed and was left as it was ([`IfInstalled::Keep`]).
    AlreadyInstalled,
}

/// What [`install`] did, and what it could not do.
#[derive(Debug, Clone)]
#[must_use = "the warnings say what the install could not do"]
pub struct Installed {
    /// The service's name.
    pub name: String,
    /// Created, updated, or left alone.
    pub outcome: InstallOutcome,
    /// Steps that failed without failing the install (for example a virtual account or a
    /// delayed start the SCM does not support), each in words.
    pub warnings: Vec<String>,
}

impl fmt::Display for Installed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.outcome {
            InstallOutcome::Created => write!(f, "service {} installed", self.name)?,
            InstallOutcome::Updated => write!(f, "service {} updated", self.name)?,
            InstallOutcome::AlreadyInstalled => write!(
                f,
                "service {} is already installed; nothing changed (ask for an update to change it)",
                self.name
            )?,
        }
        for w in &self.warnings {
            write!(f, "\nwarning: {w}")?;
        }
        Ok(())
    }
}

/// What [`uninstall`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UninstallOutcome {
    /// The service was stopped if needed and deleted.
    Removed,
    /// There was no such service.
    NotInstalled,
}

/// What [`uninstall`] did, and what it could not do.
#[derive(Debug, Clone)]
#[must_use = "the warnings say what the uninstall could not do"]
pub struct Uninstalled {
    /// The service's name.
    pub name: String,
    /// Removed, or not there.
    pub outcome: UninstallOutcome,
    /// Steps that failed without failing the uninstall, each in words.
    pub warnings: Vec<String>,
}

impl fmt::Display for Uninstalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.outcome {
            UninstallOutcome::Removed => write!(f, "service {} removed", self.name)?,
            UninstallOutcome::NotInstalled => write!(f, "service {} is not installed", self.name)?,
        }
        for w in &self.warnings {
            write!(f, "\nwarning: {w}")?;
        }
        Ok(())
    }
}

/// A service's status and configuration, as [`status`] reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceInfo {
    /// The service's name.
    pub name: String,
    /// Its state.
    pub state: ServiceState,
    /// Its process, while it runs.
    pub pid: Option<u32>,
    /// The checkpoint of a pending state.
    pub checkpoint: u32,
    /// The wait hint of a pending state.
    pub wait_hint: Duration,
    /// The exit code of its last stop (or failed start).
    pub exit_code: ServiceExitCode,
    /// How it starts (`None`: a boot or system start, which is a driver's).
    pub start: Option<StartMode>,
    /// The account it runs as (`LocalSystem` when the SCM names none).
    pub account: Option<String>,
    /// The command line the SCM runs.
    pub command_line: Option<PathBuf>,
    /// Its preshutdown timeout, if it could be read.
    pub preshutdown_timeout: Option<Duration>,
    /// The delays of its restart failure actions, in order (empty: none; `None`: unreadable).
    pub restart_delays: Option<Vec<Duration>>,
}

impl fmt::Display for ServiceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.state)?;
        if let Some(pid) = self.pid {
            write!(f, ", pid {pid}")?;
        }
        if self.state.is_pending() {
            write!(
                f,
                ", checkpoint {}, wait hint {:.1} s",
                self.checkpoint,
                self.wait_hint.as_secs_f64()
            )?;
        }
        write!(f, "\n  last exit code: {}", self.exit_code)?;
        if let Some(start) = self.start {
            write!(f, "\n  start: {start}")?;
        }
        write!(
            f,
            "\n  account: {}",
            self.account.as_deref().unwrap_or("LocalSystem")
        )?;
        if let Some(t) = self.preshutdown_timeout {
            write!(f, "\n  preshutdown timeout: {:.1} s", t.as_secs_f64())?;
        }
        match self.restart_delays.as_deref() {
            Some([]) => write!(f, "\n  on failure: nothing")?,
            Some(delays) => {
                let delays: Vec<_> = delays
                    .iter()
                    .map(|d| format!("{} s", d.as_secs()))
                    .collect();
                write!(f, "\n  on failure: restart after {}", delays.join(", "))?;
            }
            None => {}
        }
        if let Some(cmd) = &self.command_line {
            write!(f, "\n  command line: {}", cmd.display())?;
        }
        Ok(())
    }
}

/// A step of a wait for [`start`], [`stop`] or [`uninstall`]: reported at every new state or
/// checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The service's state.
    pub state: ServiceState,
    /// Its checkpoint.
    pub checkpoint: u32,
    /// Its wait hint.
    pub wait_hint: Duration,
    /// Time waited so far.
    pub waited: Duration,
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (checkpoint {}, wait hint {:.1} s) after {:.1} s",
            self.state,
            self.checkpoint,
            self.wait_hint.as_secs_f64(),
            self.waited.as_secs_f64()
        )
    }
}

/// What [`start`] or [`stop`] found at the end.
#[derive(Debug, Clone)]
pub struct Reached {
    /// The service's status once there.
    pub info: ServiceInfo,
    /// It was there already: nothing was asked of it.
    pub already: bool,
}

/// Why managing a service failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManageError {
    /// There is no service of that name.
    #[error("service {name} is not installed")]
    NotInstalled {
        /// The service's name.
        name: String,
    },
    /// The caller may not do this: services are managed from an elevated prompt.
    #[error("cannot {action} service {name}: access denied (run it from an elevated prompt)")]
    AccessDenied {
        /// The service's name.
        name: String,
        /// What was attempted.
        action: &'static str,
    },
    /// The wait ran out before the service got there.
    #[error(
        "service {name} did not reach {wanted} within {:.0} s; last seen {last}. It may still get there: check `sc query {name}` and the Event Log",
        waited.as_secs_f64()
    )]
    Timeout {
        /// The service's name.
        name: String,
        /// The state waited for.
        wanted: ServiceState,
        /// How long it was waited for.
        waited: Duration,
        /// What was last seen.
        last: Waiting,
    },
    /// The service stopped reporting progress: its checkpoint did not grow within its wait hint.
    #[error(
        "service {name} seems hung: {} checkpoint {} unchanged for {:.1} s, past its wait hint of {:.1} s",
        last.state, last.checkpoint, stalled.as_secs_f64(), last.wait_hint.as_secs_f64()
    )]
    Hung {
        /// The service's name.
        name: String,
        /// What was last seen.
        last: Waiting,
        /// How long the checkpoint stood still.
        stalled: Duration,
    },
    /// The service went somewhere else (it stopped while starting).
    #[error(
        "service {name} is {state} instead of {wanted} (exit code {exit_code}); see the Event Log"
    )]
    Unexpected {
        /// The service's name.
        name: String,
        /// The state waited for.
        wanted: ServiceState,
        /// The state it went to.
        state: ServiceState,
        /// Its exit code.
        exit_code: ServiceExitCode,
    },
    /// Not on Windows: there is no Service Control Manager.
    #[error("cannot manage service {name}: the Service Control Manager exists on Windows only")]
    Unsupported {
        /// The service's name.
        name: String,
    },
    /// The data directory cannot be made the service's own: it exists with a foreign owner, it
    /// is a link, or its access could not be set. Nothing was installed.
    #[error("cannot give service {name} its data directory {}: {reason}", path.display())]
    DataDir {
        /// The service's name.
        name: String,
        /// The data directory.
        path: PathBuf,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// A call to the SCM failed.
    #[error("cannot {action} service {name}")]
    Windows {
        /// The service's name.
        name: String,
        /// What was attempted.
        action: &'static str,
        /// The system's error.
        #[source]
        source: io::Error,
    },
}

/// The judgement of a wait, one status at a time: pure, so that it is tested on every platform.
#[derive(Debug)]
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) struct Wait {
    name: String,
    wanted: ServiceState,
    timeout: Duration,
    started: Instant,
    last: Option<(ServiceState, u32)>,
    last_change: Instant,
}

/// What to do after a status.
#[derive(Debug)]
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) enum Step {
    /// The service got there.
    Done,
    /// Ask again after this long.
    Poll(Duration),
}

/// Slack beyond the wait hint before a still checkpoint counts as hung (a status query lags).
const HUNG_SLACK: Duration = Duration::from_secs(1);

#[cfg_attr(not(windows), allow(dead_code))]
impl Wait {
    pub(crate) fn new(name: &str, wanted: ServiceState, timeout: Duration, now: Instant) -> Self {
        Wait {
            name: name.to_owned(),
            wanted,
            timeout,
            started: now,
            last: None,
            last_change: now,
        }
    }

    /// Judges one status; `report` is called when the state or checkpoint changed.
    pub(crate) fn observe(
        &mut self,
        state: ServiceState,
        checkpoint: u32,
        wait_hint: Duration,
        exit_code: ServiceExitCode,
        now: Instant,
        report: &mut dyn FnMut(&Waiting),
    ) -> Result<Step, ManageError> {
        let seen = Waiting {
            state,
            checkpoint,
            wait_hint,
            waited: now.saturating_duration_since(self.started),
        };
        if self.last != Some((state, checkpoint)) {
            self.last = Some((state, checkpoint));
            self.last_change = now;
            report(&seen);
        }
        if state == self.wanted {
            return Ok(Step::Done);
        }
        if state == ServiceState::Stopped && self.wanted == ServiceState::Running {
            return Err(ManageError::Unexpected {
                name: self.name.clone(),
                wanted: self.wanted,
                state,
                exit_code,
            });
        }
        let stalled = now.saturating_duration_since(self.last_change);
        if state.is_pending() && !wait_hint.is_zero() && stalled > wait_hint + HUNG_SLACK {
            return Err(ManageError::Hung {
                name: self.name.clone(),
                last: seen,
                stalled,
            });
        }
        if seen.waited >= self.timeout {
            return Err(ManageError::Timeout {
                name: self.name.clone(),
                wanted: self.wanted,
                waited: seen.waited,
                last: seen,
            });
        }
        // A tenth of the wait hint, as Microsoft's sample does, but often enough to show progress.
        let poll = (wait_hint / 10).clamp(Duration::from_millis(100), Duration::from_millis(500));
        Ok(Step::Poll(poll.min(self.timeout - seen.waited)))
    }
}

/// Splits a Windows command line into its words as `CommandLineToArgvW` does (the program's
/// path: up to the closing quote, or the first blank; then: `"` groups, `2n` backslashes before a
/// `"` are `n` and the quote acts, `2n+1` are `n` and a literal `"`, other backslashes are
/// literal). Pure, so it runs and is tested everywhere.
///
/// ```
/// use winddown::service::windows::split_command_line;
/// assert_eq!(
///     split_command_line(r#""C:\Program Files\w.exe" run -- C:\app\x.exe "a b" "q\"x""#),
///     [r"C:\Program Files\w.exe", "run", "--", r"C:\app\x.exe", "a b", "q\"x"]
/// );
/// ```
pub fn split_command_line(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    // The program: no escapes at all.
    let mut program = String::new();
    if chars.next_if_eq(&'"').is_some() {
        program.extend(chars.by_ref().take_while(|&c| c != '"'));
    }
    while let Some(c) = chars.next_if(|c| !matches!(c, ' ' | '\t')) {
        program.push(c);
    }
    words.push(program);
    loop {
        while chars.next_if(|c| matches!(c, ' ' | '\t')).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let (mut word, mut quoted) = (String::new(), false);
        while let Some(&c) = chars.peek() {
            match c {
                '\\' => {
                    let mut n = 0;
                    while chars.next_if_eq(&'\\').is_some() {
                        n += 1;
                    }
                    if chars.peek() == Some(&'"') {
                        word.extend(std::iter::repeat_n('\\', n / 2));
                        if n % 2 == 1 {
                            word.push('"');
                            chars.next();
                        }
                    } else {
                        word.extend(std::iter::repeat_n('\\', n));
                    }
                }
                '"' => {
                    chars.next();
                    if quoted && chars.peek() == Some(&'"') {
                        word.push('"');
                        chars.next();
                    } else {
                        quoted = !quoted;
                    }
                }
                ' ' | '\t' if !quoted => break,
                c => {
                    word.push(c);
                    chars.next();
                }
            }
        }
        words.push(word);
    }
    words
}

/// The SID of a service's virtual account, `NT SERVICE\<service>`: `S-1-5-80-` and the SHA-1 of
/// the service name in upper case (UTF-16LE) as five little-endian 32-bit numbers. That is how
/// Windows derives it (`sc showsid <name>` prints the same); computing it needs no lookup, which
/// neither an uninstalled service nor Wine can answer.
///
/// ```
/// use winddown::service::windows::service_sid;
/// assert_eq!(
///     service_sid("TrustedInstaller"),
///     "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464"
/// );
/// ```
pub fn service_sid(service: &str) -> String {
    use sha1::{Digest, Sha1};
    // Windows upper-cases one UTF-16 unit at a time (RtlUpcaseUnicodeString).
    let upcase = |unit: u16| {
        char::from_u32(u32::from(unit))
            .and_then(|c| {
                let mut upper = c.to_uppercase();
                match (upper.next(), upper.next()) {
                    (Some(u), None) if (u as u32) <= 0xFFFF => Some(u as u16),
                    _ => None,
                }
            })
            .unwrap_or(unit)
    };
    let bytes: Vec<u8> = service
        .encode_utf16()
        .map(upcase)
        .flat_map(u16::to_le_bytes)
        .collect();
    let hash = Sha1::digest(&bytes);
    let mut sid = String::from("S-1-5-80");
    for chunk in hash.chunks_exact(4) {
        let part = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        sid.push_str(&format!("-{part}"));
    }
    sid
}

/// The SID of the account a service runs as, where it is known without asking Windows: the
/// virtual account's (computed), LocalService's and NetworkService's (well known). `None` for
/// LocalSystem (which has full access everywhere) and for a named user (looked up at install).
// Used by the Windows backend only (windows/manager.rs).
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) fn account_sid_of(account: &Account, service: &str) -> Option<String> {
    match account {
        Account::Virtual => Some(service_sid(service)),
        Account::LocalService => Some("S-1-5-19".to_owned()),
        Account::NetworkService => Some("S-1-5-20".to_owned()),
        Account::LocalSystem | Account::User { .. } => None,
    }
}

/// The DACL [`install`] gives the data directory, as SDDL: protected (`P`: nothing inherited from
/// `%ProgramData%`, whose ACL lets every local user read what is below it), full control for
/// SYSTEM and Administrators, modify for the service's account (`account_sid`, if it needs an
/// entry), each inherited by every file and folder below (`OICI`).
///
/// ```
/// use winddown::service::windows::data_dir_dacl;
/// assert_eq!(
///     data_dir_dacl(Some("S-1-5-19")),
///     "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;0x1301bf;;;S-1-5-19)"
/// );
/// ```
pub fn data_dir_dacl(account_sid: Option<&str>) -> String {
    let mut sddl = String::from("D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)");
    if let Some(sid) = account_sid {
        // FILE_GENERIC_READ | WRITE | EXECUTE | DELETE: icacls' "M" (modify), not WRITE_DAC.
        sddl.push_str(&format!("(A;OICI;0x1301bf;;;{sid})"));
    }
    sddl
}

/// The owner and DACL of `path` as SDDL (`O:BAD:P(A;OICI;FA;;;SY)…`): what [`install`] left on
/// the data directory, for a status display or a check. Off Windows: [`io::ErrorKind::Unsupported`].
pub fn security(path: &std::path::Path) -> io::Result<String> {
    #[cfg(windows)]
    {
        crate::sys::windows::security_sddl(path)
    }
    #[cfg(not(windows))]
    {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{}: security descriptors are Windows'", path.display()),
        ))
    }
}

/// Whether an existing data directory owned by `owner` may become the service's: only if SYSTEM,
/// Administrators, TrustedInstaller, the service's own account or the account running the install
/// owns it. Anyone else (a local user who created it before the install, to read the service's
/// data or plant files in it) keeps the owner's rights over it whatever its DACL says.
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) fn trusted_owner(owner: &str, account_sid: Option<&str>, installer: &str) -> bool {
    ["S-1-5-18", "S-1-5-32-544"].contains(&owner)
        || owner == service_sid("TrustedInstaller")
        || Some(owner) == account_sid
        || owner == installer
}

/// The functions off Windows: each fails with [`ManageError::Unsupported`].
#[cfg(not(windows))]
mod unsupported {
    use std::time::Duration;

    use super::{
        InstallOptions, Installed, ManageError, Reached, ServiceInfo, Uninstalled, Waiting,
    };
    use crate::service::ServiceSpec;

    fn unsupported<T>(name: &str) -> Result<T, ManageError> {
        Err(ManageError::Unsupported {
            name: name.to_owned(),
        })
    }

    /// Installs the service `spec` describes (Windows only).
    pub fn install(
        spec: &ServiceSpec,
        _options: &InstallOptions,
    ) -> Result<Installed, ManageError> {
        unsupported(&spec.name)
    }

    /// Stops and removes the service (Windows only).
    pub fn uninstall(
        name: &str,
        _timeout: Duration,
        _progress: &mut dyn FnMut(&Waiting),
    ) -> Result<Uninstalled, ManageError> {
        unsupported(name)
    }

    /// Starts the service and waits for `RUNNING` (Windows only).
    pub fn start(
        name: &str,
        _timeout: Duration,
        _progress: &mut dyn FnMut(&Waiting),
    ) -> Result<Reached, ManageError> {
        unsupported(name)
    }

    /// Stops the service and waits for `STOPPED` (Windows only).
    pub fn stop(
        name: &str,
        _timeout: Duration,
        _progress: &mut dyn FnMut(&Waiting),
    ) -> Result<Reached, ManageError> {
        unsupported(name)
    }

    /// The service's status and configuration (Windows only).
    pub fn status(name: &str) -> Result<ServiceInfo, ManageError> {
        unsupported(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn observe(
        wait: &mut Wait,
        state: ServiceState,
        checkpoint: u32,
        hint: Duration,
        at: Instant,
        seen: &mut Vec<Waiting>,
    ) -> Result<Step, ManageError> {
        wait.observe(
            state,
            checkpoint,
            hint,
            ServiceExitCode::NO_ERROR,
            at,
            &mut |w| seen.push(w.clone()),
        )
    }

    #[test]
    fn a_stop_with_growing_checkpoints_is_waited_for_and_shown() {
        let t0 = Instant::now();
        let mut wait = Wait::new("depot", ServiceState::Stopped, 60 * SEC, t0);
        let mut seen = Vec::new();
        for i in 0..40u32 {
            let at = t0 + SEC / 2 * i;
            let step = observe(
                &mut wait,
                ServiceState::StopPending,
                1 + i / 2,
                3 * SEC,
                at,
                &mut seen,
            );
            assert!(
                matches!(step, Ok(Step::Poll(p)) if p <= SEC / 2),
                "{step:?}"
            );
        }
        let done = observe(
            &mut wait,
            ServiceState::Stopped,
            0,
            Duration::ZERO,
            t0 + 20 * SEC,
            &mut seen,
        );
        assert!(matches!(done, Ok(Step::Done)));
        // Shown once per new checkpoint, not once per poll.
        assert_eq!(seen.len(), 21);
        assert_eq!(seen.last().unwrap().state, ServiceState::Stopped);
    }

    #[test]
    fn a_still_checkpoint_past_its_wait_hint_is_hung() {
        let t0 = Instant::now();
        let mut wait = Wait::new("depot", ServiceState::Stopped, 60 * SEC, t0);
        let mut seen = Vec::new();
        assert!(
            observe(
                &mut wait,
                ServiceState::StopPending,
                4,
                2 * SEC,
                t0,
                &mut seen
            )
            .is_ok()
        );
        assert!(
            observe(
                &mut wait,
                ServiceState::StopPending,
                4,
                2 * SEC,
                t0 + 3 * SEC,
                &mut seen
            )
            .is_ok()
        );
        let hung = observe(
            &mut wait,
            ServiceState::StopPending,
            4,
            2 * SEC,
            t0 + 4 * SEC,
            &mut seen,
        );
        let e = hung.unwrap_err();
        assert!(matches!(e, ManageError::Hung { .. }));
        assert_eq!(
            e.to_string(),
            "service depot seems hung: STOP_PENDING checkpoint 4 unchanged for 4.0 s, past its wait hint of 2.0 s"
        );
    }

    #[test]
    fn the_timeout_says_what_was_last_seen() {
        let t0 = Instant::now();
        let mut wait = Wait::new("depot", ServiceState::Stopped, 10 * SEC, t0);
        let mut seen = Vec::new();
        let mut result = Ok(Step::Done);
        for i in 0..=10u32 {
            result = observe(
                &mut wait,
                ServiceState::StopPending,
                i + 1,
                30 * SEC,
                t0 + SEC * i,
                &mut seen,
            );
        }
        let e = result.unwrap_err();
        assert!(matches!(e, ManageError::Timeout { .. }), "{e}");
        assert!(
            e.to_string().starts_with(
                "service depot did not reach STOPPED within 10 s; last seen STOP_PENDING (checkpoint 11"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_service_that_stops_while_starting_failed() {
        let t0 = Instant::now();
        let mut wait = Wait::new("depot", ServiceState::Running, 30 * SEC, t0);
        let e = wait
            .observe(
                ServiceState::Stopped,
                0,
                Duration::ZERO,
                ServiceExitCode::ServiceSpecific(4),
                t0 + SEC,
                &mut |_| {},
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "service depot is STOPPED instead of RUNNING (exit code service-specific 4); see the Event Log"
        );
    }

    #[test]
    fn install_settings_follow_the_spec() {
        assert_eq!(preshutdown_timeout_for(30 * SEC), 35 * SEC);
        assert_eq!(Account::Virtual.name_for("depot"), r"NT SERVICE\depot");
        assert_eq!(Account::LocalSystem.name_for("depot"), "LocalSystem");
        let secret = Account::User {
            name: r".\svc".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{secret:?}").contains("hunter2"));
        // `sc showsid` prints these.
        assert_eq!(
            service_sid("TrustedInstaller"),
            "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464"
        );
        assert_eq!(
            service_sid("trustedinstaller"),
            service_sid("TRUSTEDINSTALLER")
        );
        assert_eq!(
            account_sid_of(&Account::Virtual, "depot"),
            Some(service_sid("depot"))
        );
        assert_eq!(account_sid_of(&Account::LocalSystem, "depot"), None);
        assert_eq!(data_dir_dacl(None), "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)");
        let me = "S-1-5-21-1-2-3-1000";
        let depot = service_sid("depot");
        for owner in ["S-1-5-18", "S-1-5-32-544", me, depot.as_str()] {
            assert!(trusted_owner(owner, Some(&depot), me), "{owner}");
        }
        for owner in ["S-1-5-21-1-2-3-1001", "S-1-5-32-545", "S-1-1-0"] {
            assert!(!trusted_owner(owner, Some(&depot), me), "{owner}");
        }
        let options = InstallOptions::new();
        assert_eq!(options.start, StartMode::Automatic);
        assert_eq!(options.account, Account::Virtual);
        assert_eq!(options.if_installed, IfInstalled::Keep);
        assert_eq!(RESTART_DELAYS.map(|d| d.as_secs()), [5, 30, 60]);
    }
}
