//! `depot`: a durable record depot over HTTP. `depot` (or `depot run`) serves; `depot stop` and
//! `depot status` talk to a running one.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use clap::{Parser, Subcommand};
use depot::config::{Config, LogFormat, Overrides};
use depot::manage;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use winddown::{Budgets, HostOptions, StopReason};

/// mimalloc rather than glibc's malloc: a request's buffers are allocated on a tokio worker and
/// freed on the committer thread (and the reverse for its acknowledgement), the pattern glibc's
/// per-thread arenas handle worst. See BENCHMARKS.md for the measurement.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A durable record depot: records are acknowledged only once they are on disk.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// A TOML config file (settings: see docs/CONFIG.md). Environment variables `DEPOT_<KEY>`
    /// override it, and flags override both.
    #[arg(long, global = true, env = "DEPOT_CONFIG")]
    config: Option<PathBuf>,
    /// Address to serve on [default: 127.0.0.1:8080].
    #[arg(long, global = true)]
    listen: Option<SocketAddr>,
    /// Data directory [default: the platform's per-user data directory + /depot].
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Log format [default: text on a terminal, json otherwise].
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    /// Forward every record, exactly once, to this PostgreSQL (a `postgres://` URL or libpq
    /// key=value string) [default: off]. Prefer DEPOT_FORWARD_TO or the config file when it holds
    /// a password: other users can see a command line. See docs/FORWARDING.md.
    #[arg(long, global = true, value_name = "URL")]
    forward_to: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve (the default).
    Run,
    /// Stop the depot that uses this data directory, showing the drain's progress.
    Stop {
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Is it running, where, since when, how many records, how did it last stop.
    Status,
    /// Install depot as a service (SCM on Windows, systemd on Linux, launchd on macOS), with stop
    /// settings derived from its drain budget.
    Install {
        /// Print the unit / plist (on Windows: the service's settings) instead of installing it.
        #[arg(long)]
        print: bool,
        /// How the Windows service starts: at boot, shortly after boot, or only when asked.
        #[arg(long, value_enum, default_value_t = manage::StartChoice::Auto)]
        start: manage::StartChoice,
        /// Bring an installed Windows service's settings up to date (without it, installing
        /// over an installed service says so and changes nothing).
        #[arg(long)]
        update: bool,
    },
    /// Stop and remove the installed service.
    Uninstall,
    /// Start the installed service.
    Start,
    /// Copy the store, consistently, while depot runs (or not): every record acknowledged before
    /// the backup began is in the copy. Refuses an existing target.
    Backup {
        /// The file to write (its directory must exist; the file must not).
        #[arg(long, value_name = "PATH")]
        to: PathBuf,
    },
    /// Replace the installed service's binary (systemd, the SCM, launchd): checks the new one
    /// runs, stops the service (it drains), keeps the old binary as depot.old (depot.exe.old),
    /// starts the new one and waits for /readyz; puts the old one back and starts it if the new
    /// one does not come up.
    Upgrade {
        /// The new depot binary.
        #[arg(long, value_name = "PATH")]
        binary: PathBuf,
        /// How long the new process may take to become ready before the upgrade rolls back.
        #[arg(long, default_value_t = 60, value_name = "SECONDS")]
        timeout: u64,
        /// The systemctl program (tests stand a script in for it; systemd's "does it run here"
        /// check is skipped).
        #[arg(long, hide = true, value_name = "PATH")]
        systemctl: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides {
        listen: cli.listen,
        data_dir: cli.data_dir.clone(),
        log_format: cli.log_format,
        forward_to: cli.forward_to.clone(),
    };
    // vars_os, not vars: a variable that is not UTF-8 (any program may set one) must not panic.
    let loaded = depot::config::depot_vars(std::env::vars_os())
        .and_then(|vars| Config::load(cli.config.as_deref(), vars, &overrides));
    let config = match loaded {
        Ok(config) => config,
        Err(e) => {
            eprintln!("depot: {e}");
            return ExitCode::from(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Run);
    if !matches!(command, Command::Run) {
        for warning in &config.provenance.warnings {
            eprintln!("depot: warning: {warning}");
        }
    }
    let code = match command {
        Command::Run => serve(config),
        Command::Stop { timeout } => {
            let timeout = Duration::from_secs(timeout);
            report(match manage::stop_service(timeout) {
                Some(result) => result,
                None => depot::control::stop(&config.data_dir, timeout).map_err(chain),
            })
        }
        Command::Status => report(match manage::status_service() {
            Some(result) => result,
            None => depot::control::status(&config.data_dir).map_err(chain),
        }),
        Command::Install {
            print,
            start,
            update,
        } => report(
            manage::spec(&config, cli.config.as_deref()).and_then(|spec| {
                manage::install(
                    &spec,
                    &manage::InstallChoices {
                        print,
                        start,
                        update,
                    },
                )
            }),
        ),
        Command::Uninstall => report(manage::uninstall()),
        Command::Start => report(manage::start()),
        Command::Upgrade {
            binary,
            timeout,
            systemctl,
        } => report(
            std::env::current_exe()
                .map_err(|e| format!("cannot find depot's own executable: {e}"))
                .and_then(|installed| {
                    depot::upgrade::upgrade(&depot::upgrade::Upgrade {
                        binary,
                        installed,
                        data_dir: config.data_dir.clone(),
                        ready_timeout: Duration::from_secs(timeout),
                        systemctl,
                    })
                }),
        ),
        Command::Backup { to } => report(
            depot::backup::backup(&config.data_dir, &to)
                .map(|b| {
                    println!("{b}");
                    0
                })
                .map_err(chain),
        ),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// An error and its causes, as one line. (manage's errors are text already.)
fn chain(error: impl std::error::Error) -> String {
    winddown::error_chain(&error)
}

fn report(result: Result<i32, String>) -> i32 {
    result.unwrap_or_else(|e| {
        eprintln!("depot: {e}");
        1
    })
}

fn serve(config: Config) -> i32 {
    // Every file depot creates — the database and its log, the lock, the status files — is for
    // its own user only (SQLite would create the database 0644 otherwise).
    #[cfg(unix)]
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    init_logs(&config);
    for warning in &config.provenance.warnings {
        tracing::warn!("{warning}");
    }
    let mut budgets = Budgets::new();
    if let Some(ms) = config.sigterm_budget_ms {
        budgets.set(StopReason::SigTerm, Duration::from_millis(ms));
    }
    winddown::run(
        HostOptions::new("depot").budgets(budgets),
        move |host| async move {
            depot::app::run(host, config).await.inspect_err(|e| {
                let e: &(dyn std::error::Error + 'static) = e.as_ref();
                depot::app::say(format_args!("depot: {}", winddown::error_chain(e)));
            })
        },
    )
}

fn init_logs(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DEPOT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A Windows service has no console: its log goes to depot.log in its data directory (the
    // Event Log gets the lifecycle events from winddown's host).
    let (writer, to_terminal) =
        match winddown::started_by_scm().then(|| open_service_log(&config.data_dir)) {
            Some(Ok(file)) => (BoxMakeWriter::new(Mutex::new(file)), false),
            _ => (
                BoxMakeWriter::new(std::io::stderr),
                std::io::stderr().is_terminal(),
            ),
        };
    let json = match config.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !to_terminal,
    };
    // A log line that cannot be written (stderr on a full disk, a closed pipe) is dropped:
    // tracing-subscriber would otherwise report it with eprintln!, which panics on that same
    // error — in whichever thread logged, the group committer's included.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .log_internal_errors(false);
    if json {
        builder
            .json()
            .with_current_span(true)
            .log_internal_errors(false)
            .init();
    } else {
        builder.with_ansi(to_terminal).init();
    }
}

/// `<data_dir>/depot.log`, appended to (the directory is created if need be).
fn open_service_log(data_dir: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::create_dir_all(data_dir)?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.join(depot::app::files::SERVICE_LOG))
}
