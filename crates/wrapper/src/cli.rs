//! The command line: `winddown run|install|uninstall|start|stop|status|upgrade`.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Any program as a service, with winddown's stop guarantees: the stop signal at once, progress
/// to the service manager while it drains, its whole tree killed at the deadline, its exit code
/// passed on.
#[derive(Debug, Parser)]
#[command(name = "winddown", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run PROGRAM under this host (console, systemd, or the Windows SCM) until a stop.
    Run(RunOptions),
    /// Install `winddown run … -- PROGRAM` as a service (SCM, systemd or launchd).
    Install(InstallOptions),
    /// Stop and remove the service.
    Uninstall(NameOnly),
    /// Start the installed service.
    Start(NameOnly),
    /// Stop the service through its manager.
    Stop(NameOnly),
    /// The service's state, as its manager sees it.
    Status(NameOnly),
    /// Replace the wrapped PROGRAM's binary: checks the new one answers --version, stops the
    /// service (it drains), keeps the old binary as PROGRAM.old, starts the service and waits for
    /// it to be running (ready: after its --ready-* probe); puts the old one back and starts it
    /// if the new one does not come up.
    Upgrade(UpgradeOptions),
}

#[derive(Debug, Args)]
pub(crate) struct UpgradeOptions {
    /// The service's name.
    #[arg(long)]
    pub(crate) name: String,
    /// The new PROGRAM binary.
    #[arg(long, value_name = "PATH")]
    pub(crate) binary: PathBuf,
    /// Seconds the new PROGRAM may take to be ready before the upgrade rolls back.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_secs)]
    pub(crate) ready_timeout: Duration,
    /// The systemctl program (tests stand a script in for it).
    #[arg(long, hide = true, value_name = "PATH")]
    pub(crate) systemctl: Option<PathBuf>,
    /// Where the unit files are (with --systemctl).
    #[arg(long, hide = true, value_name = "DIR")]
    pub(crate) unit_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct NameOnly {
    /// The service's name.
    #[arg(long)]
    pub(crate) name: String,
}

/// How the Windows service starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StartChoice {
    /// At boot.
    Auto,
    /// Shortly after boot.
    Delayed,
    /// Only when asked.
    Manual,
}

#[derive(Debug, Args)]
pub(crate) struct InstallOptions {
    /// Print the unit / plist / service settings instead of installing.
    #[arg(long)]
    pub(crate) print: bool,
    /// How the Windows service starts.
    #[arg(long, value_enum, default_value_t = StartChoice::Auto)]
    pub(crate) start: StartChoice,
    /// systemd: run as this existing user (and its group) instead of a transient
    /// `DynamicUser=yes`, which can own a log directory only under /var/lib.
    #[arg(long, value_name = "USER")]
    pub(crate) user: Option<String>,
    #[command(flatten)]
    pub(crate) run: RunOptions,
}

/// Everything `winddown run` takes (and `install` writes into the service's command line).
#[derive(Debug, Clone, Args)]
pub(crate) struct RunOptions {
    /// The service's name: the log source, the SCM service / systemd unit, the log file's name
    /// [default: PROGRAM's file name].
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Seconds PROGRAM may drain after its first stop signal before its whole tree is killed
    /// [default: what the stop source allows, less a margin for the wrapper].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub(crate) stop_timeout: Option<Duration>,
    /// The stop signals, tried in order within the stop timeout. Unix: TERM, INT, HUP, QUIT;
    /// Windows: ctrl-c, ctrl-break, close (WM_CLOSE to its windows) [default: TERM on Unix,
    /// ctrl-c,close on Windows].
    #[arg(long, value_name = "LIST", value_parser = parse_signal_list)]
    pub(crate) stop_signal: Option<SignalList>,
    /// Ready (READY=1 / SERVICE_RUNNING) only once a TCP connection to HOST:PORT succeeds.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "ready_http")]
    pub(crate) ready_tcp: Option<String>,
    /// Ready only once `GET URL` (http://) answers 2xx or 3xx.
    #[arg(long, value_name = "URL")]
    pub(crate) ready_http: Option<String>,
    /// Capture PROGRAM's stdout and stderr as timestamped lines in DIR/NAME.log [default: passed
    /// through].
    #[arg(long, value_name = "DIR")]
    pub(crate) log_dir: Option<PathBuf>,
    /// Rotate the log file when it would grow past this many bytes.
    #[arg(long, value_name = "N", default_value_t = 10 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..))]
    pub(crate) log_max_bytes: u64,
    /// How many rotated log files to keep (NAME.log.1 … NAME.log.N); older ones are removed.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub(crate) log_keep: u32,
    /// Set K=V in PROGRAM's environment (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    pub(crate) env: Vec<(String, String)>,
    /// PROGRAM's working directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) cwd: Option<PathBuf>,
    /// The program to run, and its arguments.
    #[arg(last = true, required = true, value_name = "PROGRAM [ARGS]")]
    pub(crate) command: Vec<OsString>,
}

impl RunOptions {
    /// The service name: `--name`, or PROGRAM's file stem.
    pub(crate) fn service_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            std::path::Path::new(&self.command[0])
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "winddown".to_owned())
        })
    }

    /// The stop signals, or the platform's default.
    pub(crate) fn signals(&self) -> Vec<StopSignal> {
        match &self.stop_signal {
            Some(list) => list.0.clone(),
            None => StopSignal::platform_default(),
        }
    }

    /// The options as arguments of `winddown run`, for a service's command line.
    pub(crate) fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> =
            vec!["run".into(), "--name".into(), self.service_name().into()];
        if let Some(t) = self.stop_timeout {
            args.extend([
                "--stop-timeout".into(),
                format!("{}", t.as_secs_f64()).into(),
            ]);
        }
        if let Some(list) = &self.stop_signal {
            args.extend(["--stop-signal".into(), list.to_string().into()]);
        }
        if let Some(tcp) = &self.ready_tcp {
            args.extend(["--ready-tcp".into(), tcp.into()]);
        }
        if let Some(url) = &self.ready_http {
            args.extend(["--ready-http".into(), url.into()]);
        }
        if let Some(dir) = &self.log_dir {
            args.extend(["--log-dir".into(), dir.clone().into_os_string()]);
            args.extend([
                "--log-max-bytes".into(),
                self.log_max_bytes.to_string().into(),
            ]);
            args.extend(["--log-keep".into(), self.log_keep.to_string().into()]);
        }
        for (k, v) in &self.env {
            args.extend(["--env".into(), format!("{k}={v}").into()]);
        }
        if let Some(cwd) = &self.cwd {
            args.extend(["--cwd".into(), cwd.clone().into_os_string()]);
        }
        args.push("--".into());
        args.extend(self.command.iter().cloned());
        args
    }
}

fn parse_secs(raw: &str) -> Result<Duration, String> {
    match raw.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 => {
            Ok(Duration::from_secs_f64(secs))
        }
        _ => Err(format!(
            "`{raw}` is not a number of seconds between 0 and 86400 (for example 30 or 2.5)"
        )),
    }
}

fn parse_env(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!(
            "`{raw}` is not K=V (for example --env RUST_LOG=info)"
        )),
    }
}

/// A way to ask PROGRAM to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopSignal {
    /// Unix `SIGTERM`.
    Term,
    /// Unix `SIGINT`.
    Int,
    /// Unix `SIGHUP`.
    Hup,
    /// Unix `SIGQUIT`.
    Quit,
    /// Windows `CTRL_C_EVENT` on PROGRAM's console.
    CtrlC,
    /// Windows `CTRL_BREAK_EVENT` on PROGRAM's console.
    CtrlBreak,
    /// Windows `WM_CLOSE` to PROGRAM's top-level windows.
    Close,
}

impl StopSignal {
    pub(crate) fn platform_default() -> Vec<StopSignal> {
        if cfg!(windows) {
            vec![StopSignal::CtrlC, StopSignal::Close]
        } else {
            vec![StopSignal::Term]
        }
    }

    fn for_this_platform(self) -> bool {
        match self {
            StopSignal::Term | StopSignal::Int | StopSignal::Hup | StopSignal::Quit => cfg!(unix),
            StopSignal::CtrlC | StopSignal::CtrlBreak | StopSignal::Close => cfg!(windows),
        }
    }
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopSignal::Term => "TERM",
            StopSignal::Int => "INT",
            StopSignal::Hup => "HUP",
            StopSignal::Quit => "QUIT",
            StopSignal::CtrlC => "ctrl-c",
            StopSignal::CtrlBreak => "ctrl-break",
            StopSignal::Close => "close",
        })
    }
}

impl serde::Serialize for StopSignal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for StopSignal {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let lower = raw.trim().to_ascii_lowercase();
        let name = lower.strip_prefix("sig").unwrap_or(&lower);
        Ok(match name {
            "term" => StopSignal::Term,
            "int" => StopSignal::Int,
            "hup" => StopSignal::Hup,
            "quit" => StopSignal::Quit,
            "ctrl-c" => StopSignal::CtrlC,
            "ctrl-break" => StopSignal::CtrlBreak,
            "close" => StopSignal::Close,
            _ => {
                return Err(format!(
                    "unknown stop signal `{raw}`: use TERM, INT, HUP, QUIT (Unix) or ctrl-c, \
                     ctrl-break, close (Windows)"
                ));
            }
        })
    }
}

/// A comma-separated list of stop signals, tried in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SignalList(pub(crate) Vec<StopSignal>);

impl fmt::Display for SignalList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&names.join(","))
    }
}

fn parse_signal_list(raw: &str) -> Result<SignalList, String> {
    let signals = raw
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(StopSignal::from_str)
        .collect::<Result<Vec<_>, _>>()?;
    if signals.is_empty() {
        return Err("the stop signal list is empty: give at least one, e.g. TERM".to_owned());
    }
    if let Some(other) = signals.iter().find(|s| !s.for_this_platform()) {
        let here = if cfg!(windows) {
            "ctrl-c, ctrl-break, close"
        } else {
            "TERM, INT, HUP, QUIT"
        };
        return Err(format!(
            "stop signal `{other}` does not exist on this platform: use {here}"
        ));
    }
    Ok(SignalList(signals))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_lists_parse_in_order_and_refuse_other_platforms() {
        if cfg!(unix) {
            let list = parse_signal_list("TERM,sigint, quit").unwrap();
            assert_eq!(
                list.0,
                vec![StopSignal::Term, StopSignal::Int, StopSignal::Quit]
            );
            assert_eq!(list.to_string(), "TERM,INT,QUIT");
            let err = parse_signal_list("TERM,ctrl-c").unwrap_err();
            assert!(err.contains("ctrl-c") && err.contains("TERM, INT"), "{err}");
        }
        assert!(
            parse_signal_list("KILL")
                .unwrap_err()
                .contains("unknown stop signal `KILL`")
        );
        assert!(parse_signal_list(",").is_err());
    }

    #[test]
    fn run_options_round_trip_through_a_command_line() {
        let cli = Cli::try_parse_from([
            "winddown",
            "run",
            "--name",
            "svc",
            "--stop-timeout",
            "2.5",
            "--env",
            "A=b=c",
            "--log-dir",
            "/var/log/x",
            "--",
            "prog",
            "--flag",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.stop_timeout, Some(Duration::from_millis(2500)));
        assert_eq!(run.env, vec![("A".to_owned(), "b=c".to_owned())]);
        let mut again = vec![OsString::from("winddown")];
        again.extend(run.to_args());
        let Command::Run(back) = Cli::try_parse_from(again).unwrap().command else {
            panic!("not run")
        };
        assert_eq!(back.command, run.command);
        assert_eq!(back.stop_timeout, run.stop_timeout);
        assert_eq!(back.log_dir, run.log_dir);
        assert_eq!(back.service_name(), "svc");
    }

    #[test]
    fn bad_numbers_are_named() {
        let err = Cli::try_parse_from(["winddown", "run", "--stop-timeout", "soon", "--", "x"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--stop-timeout") && err.contains("soon"),
            "{err}"
        );
    }
}
