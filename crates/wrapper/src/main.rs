//! `winddown`: any existing program as a service, with winddown's stop guarantees.
//!
//! `winddown run [OPTIONS] -- PROGRAM [ARGS]` hosts PROGRAM in a console, under systemd
//! (`Type=notify`) or under the Windows Service Control Manager; `install`, `uninstall`, `start`,
//! `stop`, `status` and `upgrade` manage it as a service. See README.md, "Any program as a service".

mod child;
mod cli;
mod logs;
mod ready;
mod report;
mod run;
mod service;
mod upgrade;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    let cli = cli::Cli::parse();
    let scm = winddown::started_by_scm();
    init_logging(&cli, scm);
    let code = match cli.command {
        cli::Command::Run(options) => run::run(options),
        cli::Command::Install(options) => service::install(options),
        cli::Command::Uninstall(n) => service::uninstall(&n.name),
        cli::Command::Start(n) => service::start(&n.name),
        cli::Command::Stop(n) => service::stop(&n.name),
        cli::Command::Status(n) => service::status(&n.name),
        cli::Command::Upgrade(options) => upgrade::upgrade(&options),
    };
    std::process::exit(code);
}

/// The wrapper's own log: stderr (the terminal, or the journal under systemd); under the SCM,
/// which gives a service no stderr, `NAME.winddown.log` in the log directory when there is one.
fn init_logging(cli: &cli::Cli, scm: bool) {
    let filter = EnvFilter::try_from_env("WINDDOWN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let file = match (&cli.command, scm) {
        (cli::Command::Run(o), true) => o.log_dir.as_ref().and_then(|dir| {
            std::fs::create_dir_all(dir).ok()?;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("{}.winddown.log", o.service_name())))
                .ok()
        }),
        _ => None,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match file {
        Some(file) => builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .init(),
        None => builder.with_writer(std::io::stderr).init(),
    }
}
