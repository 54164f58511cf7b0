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

mod quote;
mod systemctl;
mod unit;

pub use self::quote::*;
pub use self::systemctl::*;
pub use self::unit::*;

use super::command;
use super::{ServiceError, ServiceSpec};
use crate::host::STOP_BUDGET_ENV;
use crate::report::{EXIT_CLEAN, EXIT_CUT_OFF, EXIT_FAILED, EXIT_FORCED};

/// Where [`install`] writes unit files by default.
pub(crate) const UNIT_DIR: &str = "/etc/systemd/system";

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
    /// Where [`install`] writes the unit. Default `/etc/systemd/system`.
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

/// Where [`install`] writes the unit of service `name`.
pub fn unit_path(name: &str, options: &SystemdOptions) -> PathBuf {
    options.unit_dir.join(unit_name(name))
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
            // Issue #14 item 10: a trailing backslash joins the next line to the description.
            spec().display_name("depot \\"),
            spec().display_name("depot \\\n "),
            spec().data_dir("/srv/depot\ndata"),
            spec().data_dir("/srv/depot/../etc"),
            spec().arguments(["x".repeat(LONG_LINE_MAX)]),
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
        for user in [
            "-depot",
            ".depot",
            "dep ot",
            "depot%n",
            "",
            "00",
            "65535",
            "4294967296",
        ] {
            let named = SystemdOptions::new().user(ServiceUser::Named {
                user: user.into(),
                group: None,
            });
            let err = unit_file(&spec().data_dir("/srv/depot"), &named).unwrap_err();
            assert!(
                matches!(err, ServiceError::InvalidSpec(_)),
                "{user:?}: {err}"
            );
        }
        let err = unit_file(&spec().display_name("depot \\"), &SystemdOptions::new()).unwrap_err();
        assert!(err.to_string().contains("ends with a backslash"), "{err}");
    }

    /// A stop budget past what systemd can count is written as `infinity`, not as a number
    /// systemd refuses (and computing the manager's timeout does not overflow).
    #[test]
    fn an_endless_budget_is_infinity() {
        let text = unit_file(
            &spec().stop_budget(Duration::MAX),
            &SystemdOptions::new().watchdog(Some(Duration::MAX)),
        )
        .unwrap();
        assert!(lines(&text).contains(&"TimeoutStopSec=infinity"), "{text}");
        assert!(lines(&text).contains(&"WatchdogSec=infinity"), "{text}");
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
        // The ends trimmed (as systemd would), a comment's trailing backslash dropped.
        let padded = super::tests::spec()
            .display_name("  depot\t")
            .description("ends in \\");
        let text = unit_file(&padded, &SystemdOptions::new()).unwrap();
        assert!(text.contains("\nDescription=depot\n"), "{text}");
        assert!(text.contains("\n# ends in\n"), "{text}");
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
