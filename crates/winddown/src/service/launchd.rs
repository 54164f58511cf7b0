//! launchd (macOS): a daemon property list for a [`ServiceSpec`], and `launchctl` to manage it.
//!
//! [`plist`] is a pure function — it runs anywhere and is what a `--print` option prints. The
//! apply functions ([`install`], [`uninstall`], [`start`], [`stop`], [`status`]) only work on macOS
//! and return [`ServiceError::Unsupported`] elsewhere. They are gated at run time
//! (`cfg!(target_os = "macos")`) rather than compiled out, so that this project's Linux and
//! Windows builds still type-check them; off macOS the optimiser drops them.
//!
//! # The stop settings
//! - `ExitTimeOut` = [`ServiceSpec::manager_stop_timeout`] (the budget plus a margin): the time
//!   launchd waits between `SIGTERM` and `SIGKILL`. It has been seen cut to ~5 s when a job is
//!   booted out (`launchctl bootout`, system shutdown), so acknowledge only what is durable.
//! - `EnvironmentVariables` carries [`STOP_BUDGET_ENV`] so the program plans its drain for the
//!   budget.
//! - `KeepAlive = { SuccessfulExit = false }`: launchd restarts the program when it exits with a
//!   non-zero status — a cut-off (3), failed (4) or forced (5) drain, or a crash — and leaves it
//!   stopped after a clean exit (0). `ThrottleInterval` spaces the restarts.
//! - `RunAtLoad`: it starts when loaded (at boot, and by [`install`]).

use std::ffi::OsString;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::command;
use super::{ServiceError, ServiceSpec};
use crate::host::STOP_BUDGET_ENV;

/// Where [`install`] writes daemon property lists by default.
pub(crate) const PLIST_DIR: &str = "/Library/LaunchDaemons";

/// How [`plist`] and [`install`] write the job, beyond the [`ServiceSpec`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LaunchdOptions {
    /// The label's prefix: the label is `<prefix>.<name>`. Default `local`; use your reverse-DNS
    /// name (`com.example`).
    pub label_prefix: String,
    /// `UserName`: the account the daemon runs as (root if `None`).
    pub user_name: Option<String>,
    /// `GroupName`.
    pub group_name: Option<String>,
    /// Where `StandardOutPath` and `StandardErrorPath` go (`<name>.out.log`, `<name>.err.log`).
    /// Default `/usr/local/var/log/<name>`.
    pub log_dir: Option<PathBuf>,
    /// `ThrottleInterval`: the least time between two starts. Default 10 s.
    pub throttle_interval: Duration,
    /// Where [`install`] writes the property list. Default `/Library/LaunchDaemons`.
    pub plist_dir: PathBuf,
    /// The `launchctl` program. Default `/bin/launchctl`.
    pub launchctl: PathBuf,
    /// Whether the apply functions first check that this is macOS ([`LaunchdOptions::launchctl`]
    /// turns it off for a stand-in).
    check_platform: bool,
}

impl Default for LaunchdOptions {
    fn default() -> Self {
        LaunchdOptions {
            label_prefix: "local".to_owned(),
            user_name: None,
            group_name: None,
            log_dir: None,
            throttle_interval: Duration::from_secs(10),
            plist_dir: PathBuf::from(PLIST_DIR),
            launchctl: PathBuf::from("/bin/launchctl"),
            check_platform: true,
        }
    }
}

impl LaunchdOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the label prefix.
    #[must_use]
    pub fn label_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.label_prefix = prefix.into();
        self
    }

    /// Sets the account (and group) the daemon runs as.
    #[must_use]
    pub fn user(mut self, user: impl Into<String>, group: Option<String>) -> Self {
        self.user_name = Some(user.into());
        self.group_name = group;
        self
    }

    /// Sets the log directory.
    #[must_use]
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.log_dir = Some(dir.into());
        self
    }

    /// Sets the restart throttle.
    #[must_use]
    pub fn throttle_interval(mut self, interval: Duration) -> Self {
        self.throttle_interval = interval;
        self
    }

    /// Sets where the property list is written.
    #[must_use]
    pub fn plist_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.plist_dir = dir.into();
        self
    }

    /// Runs `program` instead of `/bin/launchctl`, on any platform: a stand-in for tests, or a
    /// wrapper. The apply functions then skip their macOS check.
    #[must_use]
    pub fn launchctl(mut self, program: impl Into<PathBuf>) -> Self {
        self.launchctl = program.into();
        self.check_platform = false;
        self
    }
}

/// The job's label: `<prefix>.<name>`.
pub fn label(name: &str, options: &LaunchdOptions) -> String {
    if options.label_prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{}.{name}", options.label_prefix)
    }
}

/// Where [`install`] writes the property list of service `name`.
pub fn plist_path(name: &str, options: &LaunchdOptions) -> PathBuf {
    options
        .plist_dir
        .join(format!("{}.plist", label(name, options)))
}

fn log_dir(name: &str, options: &LaunchdOptions) -> PathBuf {
    options
        .log_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/usr/local/var/log").join(name))
}

/// The daemon's property list (XML): the text [`install`] writes, for a `--print` option.
/// Touches nothing.
///
/// # Errors
/// [`ServiceError::InvalidSpec`] for a name or label prefix outside letters, digits, `.`, `_`,
/// `-`; a relative executable, data or log directory; a path that is not UTF-8; text holding a
/// character XML cannot carry (control characters other than tab, newline, carriage return); or
/// [`STOP_BUDGET_ENV`] in the environment (set [`ServiceSpec::stop_budget`] instead).
pub fn plist(spec: &ServiceSpec, options: &LaunchdOptions) -> Result<String, ServiceError> {
    for (what, text) in [
        ("service name", &spec.name),
        ("label prefix", &options.label_prefix),
    ] {
        let valid = text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !valid || (what == "service name" && text.is_empty()) {
            return Err(invalid(format!(
                "{what} {text:?} must be letters, digits, '.', '_' or '-'"
            )));
        }
    }
    let executable = absolute(&spec.executable, "the executable")?;
    let logs = log_dir(&spec.name, options);
    let logs = absolute(&logs, "the log directory")?;

    let mut x = String::new();
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(
        "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \
         \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n",
    );
    x.push_str("<plist version=\"1.0\">\n<dict>\n");
    let mut put = |key: &str, value: String| {
        let _ = writeln!(x, "\t<key>{key}</key>\n{value}");
    };
    put("Label", string(1, &label(&spec.name, options))?);
    let mut args = String::from("\t<array>\n");
    args.push_str(&string(2, executable)?);
    args.push('\n');
    for arg in &spec.arguments {
        args.push_str(&string(2, arg)?);
        args.push('\n');
    }
    args.push_str("\t</array>");
    put("ProgramArguments", args);

    let mut env = String::from("\t<dict>\n");
    let budget = spec.stop_budget.as_millis().to_string();
    let pairs = std::iter::once((STOP_BUDGET_ENV, budget.as_str())).chain(
        spec.environment
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    for (i, (key, value)) in pairs.enumerate() {
        if i > 0 && key == STOP_BUDGET_ENV {
            return Err(invalid(format!(
                "{STOP_BUDGET_ENV} is written from the stop budget; set ServiceSpec::stop_budget instead"
            )));
        }
        let _ = writeln!(
            env,
            "\t\t<key>{}</key>\n{}",
            escape(key)?,
            string(2, value)?
        );
    }
    env.push_str("\t</dict>");
    put("EnvironmentVariables", env);

    put("RunAtLoad", "\t<true/>".to_owned());
    put(
        "KeepAlive",
        "\t<dict>\n\t\t<key>SuccessfulExit</key>\n\t\t<false/>\n\t</dict>".to_owned(),
    );
    put(
        "ThrottleInterval",
        integer(1, options.throttle_interval.as_secs().max(1)),
    );
    put(
        "ExitTimeOut",
        integer(1, spec.manager_stop_timeout().as_secs()),
    );
    let out = format!("{logs}/{}.out.log", spec.name);
    let err = format!("{logs}/{}.err.log", spec.name);
    put("StandardOutPath", string(1, &out)?);
    put("StandardErrorPath", string(1, &err)?);
    if let Some(dir) = &spec.data_dir {
        put(
            "WorkingDirectory",
            string(1, absolute(dir, "the data directory")?)?,
        );
    }
    if let Some(user) = &options.user_name {
        put("UserName", string(1, user)?);
    }
    if let Some(group) = &options.group_name {
        put("GroupName", string(1, group)?);
    }
    x.push_str("</dict>\n</plist>\n");
    Ok(x)
}

fn invalid(message: String) -> ServiceError {
    ServiceError::InvalidSpec(message)
}

fn absolute<'a>(path: &'a Path, what: &str) -> Result<&'a str, ServiceError> {
    let text = path
        .to_str()
        .ok_or_else(|| invalid(format!("{what} {path:?} is not UTF-8")))?;
    if text.starts_with('/') {
        Ok(text)
    } else {
        Err(invalid(format!("{what} {text:?} must be an absolute path")))
    }
}

fn string(indent: usize, text: &str) -> Result<String, ServiceError> {
    Ok(format!(
        "{}<string>{}</string>",
        "\t".repeat(indent),
        escape(text)?
    ))
}

fn integer(indent: usize, n: u64) -> String {
    format!("{}<integer>{n}</integer>", "\t".repeat(indent))
}

/// Escapes `text` for XML character data, refusing what XML 1.0 cannot carry at all.
fn escape(text: &str) -> Result<String, ServiceError> {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {
                return Err(invalid(format!(
                    "{text:?} holds U+{:04X}, which a property list (XML) cannot carry",
                    c as u32
                )));
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The `launchctl` service target: `system/<label>`.
fn target(name: &str, options: &LaunchdOptions) -> String {
    format!("system/{}", label(name, options))
}

fn check_macos(what: &'static str, options: &LaunchdOptions) -> Result<(), ServiceError> {
    if cfg!(target_os = "macos") || !options.check_platform {
        Ok(())
    } else {
        Err(ServiceError::Unsupported {
            what,
            platform: "macOS",
        })
    }
}

fn launchctl(options: &LaunchdOptions, args: &[&str]) -> Result<String, ServiceError> {
    command::run(options.launchctl.as_os_str(), args)
}

/// Installs `spec` as a system daemon: writes its property list (mode 0644), creates the log
/// directory (and the data directory, owned by [`LaunchdOptions::user_name`] if set), boots out
/// an older version of the job if one is loaded, and bootstraps it (`launchctl bootstrap system`;
/// `RunAtLoad` starts it). Returns the property list's path.
///
/// # Errors
/// [`ServiceError::Unsupported`] off macOS (nothing is written), the errors of [`plist`], and the
/// failures of writing files or of `launchctl`.
pub fn install(spec: &ServiceSpec, options: &LaunchdOptions) -> Result<PathBuf, ServiceError> {
    let text = plist(spec, options)?;
    check_macos("installing a launchd daemon", options)?;
    let path = plist_path(&spec.name, options);
    let mut dirs = vec![log_dir(&spec.name, options)];
    dirs.extend(spec.data_dir.clone());
    for dir in &dirs {
        std::fs::create_dir_all(dir).map_err(|source| ServiceError::Io {
            action: "create",
            path: dir.clone(),
            source,
        })?;
        if let Some(user) = &options.user_name {
            let owner = match &options.group_name {
                Some(group) => format!("{user}:{group}"),
                None => user.clone(),
            };
            let dir = dir.to_string_lossy();
            command::run(&OsString::from("/usr/sbin/chown"), &[&owner, &dir])?;
        }
    }
    // Through a temporary file and a rename, so that launchd never reads half a property list.
    super::file::write_atomic(&path, &text)?;
    let target = target(&spec.name, options);
    // A loaded older version would make the bootstrap fail; booting it out stops it (SIGTERM,
    // then SIGKILL after its ExitTimeOut).
    if launchctl(options, &["print", &target]).is_ok() {
        launchctl(options, &["bootout", &target])?;
    }
    let _ = launchctl(options, &["enable", &target]);
    launchctl(options, &["bootstrap", "system", &path.to_string_lossy()])?;
    tracing::info!(plist = %path.display(), "installed and loaded");
    Ok(path)
}

/// Uninstalls service `name`: boots the job out (which stops it) if it is loaded, and removes its
/// property list. Log and data directories are kept.
///
/// # Errors
/// [`ServiceError::Unsupported`] off macOS, [`ServiceError::NotInstalled`] when there is no
/// property list, and the failures of `launchctl bootout` and of the removal.
pub fn uninstall(name: &str, options: &LaunchdOptions) -> Result<(), ServiceError> {
    check_macos("uninstalling a launchd daemon", options)?;
    let path = plist_path(name, options);
    if !path.exists() {
        return Err(ServiceError::NotInstalled {
            name: name.to_owned(),
            path,
        });
    }
    let target = target(name, options);
    if launchctl(options, &["print", &target]).is_ok() {
        launchctl(options, &["bootout", &target])?;
    }
    std::fs::remove_file(&path).map_err(|source| ServiceError::Io {
        action: "remove",
        path,
        source,
    })
}

/// Starts service `name` (`launchctl kickstart`; it must be installed).
///
/// # Errors
/// [`ServiceError::Unsupported`] off macOS, or `launchctl`'s failure.
pub fn start(name: &str, options: &LaunchdOptions) -> Result<(), ServiceError> {
    check_macos("starting a launchd daemon", options)?;
    launchctl(options, &["kickstart", &target(name, options)]).map(drop)
}

/// Asks service `name` to stop: `SIGTERM` (`launchctl kill SIGTERM`), so that it drains with its
/// whole budget — `launchctl kickstart -k` would send `SIGKILL`, and `bootout` may cut the wait
/// to a few seconds. After a clean drain (exit 0) the job stays stopped; after a cut-off or failed
/// one `KeepAlive` restarts it, as it would after a crash. Returns once the signal is sent.
///
/// # Errors
/// [`ServiceError::Unsupported`] off macOS, or `launchctl`'s failure.
pub fn stop(name: &str, options: &LaunchdOptions) -> Result<(), ServiceError> {
    check_macos("stopping a launchd daemon", options)?;
    launchctl(options, &["kill", "SIGTERM", &target(name, options)]).map(drop)
}

/// Reads service `name`'s state (`launchctl print system/<label>`).
///
/// # Errors
/// [`ServiceError::Unsupported`] off macOS, or `launchctl`'s failure (the job is not loaded).
pub fn status(name: &str, options: &LaunchdOptions) -> Result<JobStatus, ServiceError> {
    check_macos("reading a launchd daemon's state", options)?;
    let label = label(name, options);
    let text = launchctl(options, &["print", &target(name, options)])?;
    Ok(JobStatus::parse(&label, &text))
}

/// What `launchctl print` says about a job.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobStatus {
    /// The job's label.
    pub label: String,
    /// `running`, `waiting`, `not running`, …
    pub state: String,
    /// The running process, if any.
    pub pid: Option<u32>,
    /// How many times it was started.
    pub runs: Option<u32>,
    /// Its last exit code, as launchd prints it (`3`, `(never exited)`).
    pub last_exit_code: Option<String>,
}

impl JobStatus {
    /// Parses `launchctl print` output: the job's own `key = value` lines (one tab deep).
    pub fn parse(label: &str, text: &str) -> JobStatus {
        let get = |key: &str| {
            text.lines()
                .filter(|l| l.starts_with('\t') && !l.starts_with("\t\t"))
                .filter_map(|l| l.trim().split_once(" = "))
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.trim().to_owned())
        };
        JobStatus {
            label: label.to_owned(),
            state: get("state").unwrap_or_default(),
            pid: get("pid").and_then(|p| p.parse().ok()),
            runs: get("runs").and_then(|r| r.parse().ok()),
            last_exit_code: get("last exit code"),
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.label, self.state)?;
        if let Some(pid) = self.pid {
            write!(f, "; pid {pid}")?;
        }
        if let Some(code) = &self.last_exit_code {
            write!(f, "; last exit code {code}")?;
        }
        Ok(())
    }
}

// The plist describes macOS paths; on Windows `Path` joins with `\\` and the tests would check
// the host's path rules rather than the plist.
#[cfg(all(test, unix))]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn spec() -> ServiceSpec {
        ServiceSpec::new("depot", "/Applications/Depot Tools/bin/depot")
            .arguments(["serve", "--name=<a & b> \"q\" 'x'", "100% $HOME"])
            .data_dir("/usr/local/var/depot")
            .stop_budget(Duration::from_secs(30))
            .env("RUST_LOG", "info,depot=debug")
            .env("MOTTO", "fish & <chips>")
    }

    /// The top-level dict of a parsed plist, key → value node.
    fn top<'a>(doc: &'a roxmltree::Document<'a>) -> BTreeMap<String, roxmltree::Node<'a, 'a>> {
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "plist");
        let dict = root.children().find(|n| n.is_element()).unwrap();
        assert_eq!(dict.tag_name().name(), "dict");
        let items: Vec<_> = dict.children().filter(|n| n.is_element()).collect();
        items
            .chunks(2)
            .map(|kv| {
                assert_eq!(kv[0].tag_name().name(), "key");
                (kv[0].text().unwrap().to_owned(), kv[1])
            })
            .collect()
    }

    fn strings(node: roxmltree::Node<'_, '_>) -> Vec<String> {
        node.children()
            .filter(|n| n.is_element())
            .map(|n| n.text().unwrap_or("").to_owned())
            .collect()
    }

    #[test]
    fn the_plist_parses_with_the_right_keys_and_values() {
        let options = LaunchdOptions::new()
            .label_prefix("com.example")
            .user("_depot", Some("_depot".into()));
        let text = plist(&spec(), &options).unwrap();
        let doc = roxmltree::Document::parse_with_options(
            &text,
            roxmltree::ParsingOptions {
                allow_dtd: true,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let top = top(&doc);
        let text_of = |key: &str| top[key].text().unwrap().to_owned();
        assert_eq!(text_of("Label"), "com.example.depot");
        assert_eq!(
            strings(top["ProgramArguments"]),
            [
                "/Applications/Depot Tools/bin/depot",
                "serve",
                "--name=<a & b> \"q\" 'x'",
                "100% $HOME"
            ]
        );
        let env = strings(top["EnvironmentVariables"]);
        assert_eq!(
            env,
            [
                "WINDDOWN_STOP_BUDGET_MS",
                "30000",
                "RUST_LOG",
                "info,depot=debug",
                "MOTTO",
                "fish & <chips>"
            ]
        );
        assert_eq!(top["RunAtLoad"].tag_name().name(), "true");
        let keep_alive = strings(top["KeepAlive"]);
        assert_eq!(keep_alive, ["SuccessfulExit", ""]);
        let successful_exit = top["KeepAlive"]
            .children()
            .filter(|n| n.is_element())
            .nth(1)
            .unwrap();
        assert_eq!(successful_exit.tag_name().name(), "false");
        assert_eq!(top["ExitTimeOut"].tag_name().name(), "integer");
        assert_eq!(text_of("ExitTimeOut"), "35");
        assert_eq!(text_of("ThrottleInterval"), "10");
        assert_eq!(
            text_of("StandardOutPath"),
            "/usr/local/var/log/depot/depot.out.log"
        );
        assert_eq!(
            text_of("StandardErrorPath"),
            "/usr/local/var/log/depot/depot.err.log"
        );
        assert_eq!(text_of("WorkingDirectory"), "/usr/local/var/depot");
        assert_eq!(text_of("UserName"), "_depot");
        assert_eq!(text_of("GroupName"), "_depot");
        assert_eq!(
            plist_path("depot", &options),
            Path::new("/Library/LaunchDaemons/com.example.depot.plist")
        );
    }

    #[test]
    fn what_xml_cannot_carry_is_refused() {
        for spec in [
            spec().arguments(["bell\u{7}"]),
            spec().env("WINDDOWN_STOP_BUDGET_MS", "1"),
            ServiceSpec::new("depot", "bin/depot"),
            ServiceSpec::new("de pot", "/bin/depot"),
            spec().data_dir("relative/dir"),
        ] {
            let err = plist(&spec, &LaunchdOptions::new()).unwrap_err();
            assert!(matches!(err, ServiceError::InvalidSpec(_)), "{err}");
        }
        // Tabs and newlines are fine.
        assert!(plist(&spec().arguments(["a\tb\nc"]), &LaunchdOptions::new()).is_ok());
    }

    #[test]
    fn launchctl_print_is_parsed() {
        let text = "system/com.example.depot = {\n\tactive count = 1\n\tpath = \
                    /Library/LaunchDaemons/com.example.depot.plist\n\tstate = running\n\n\
                    \tprogram = /usr/local/bin/depot\n\targuments = {\n\t\t/usr/local/bin/depot\n\t}\n\
                    \tendpoints = {\n\t\tstate = active\n\t}\n\truns = 2\n\tpid = 5123\n\
                    \tlast exit code = 3\n}\n";
        let s = JobStatus::parse("com.example.depot", text);
        assert_eq!(s.state, "running");
        assert_eq!(s.pid, Some(5123));
        assert_eq!(s.runs, Some(2));
        assert_eq!(s.last_exit_code.as_deref(), Some("3"));
        assert_eq!(
            s.to_string(),
            "com.example.depot: running; pid 5123; last exit code 3"
        );
    }

    #[cfg(not(target_os = "macos"))]
    #[test]
    fn applying_off_macos_is_refused_and_touches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let options = LaunchdOptions::new()
            .plist_dir(dir.path())
            .log_dir(dir.path().join("logs"));
        let err = install(&spec(), &options).unwrap_err();
        assert!(matches!(err, ServiceError::Unsupported { .. }), "{err}");
        assert!(err.to_string().contains("--print"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(start("depot", &options).is_err());
        assert!(stop("depot", &options).is_err());
        assert!(status("depot", &options).is_err());
        assert!(uninstall("depot", &options).is_err());
    }
}
