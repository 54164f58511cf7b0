//! A Windows service under `winddown`: one program that installs, starts, stops and removes
//! itself, and runs as the service when the SCM starts it (or as a console program otherwise).
//! Its drain has an in-flight phase of about 3 s, so that `sc query` can watch `STOP_PENDING`
//! with growing checkpoints before `STOPPED`.
//!
//! ```text
//! scm_service install [--name N] [--manual] [--account virtual|local-service|local-system] [--update]
//! scm_service start|stop|status|uninstall [--name N]
//! scm_service run [--name N] [--data DIR]     # what the SCM runs; also works in a console
//! ```
//!
//! The service writes its log to `DIR\service.log` and one JSON report per stop to
//! `DIR\reports.jsonl` (DIR defaults to `<name>-data` beside the executable). A file named
//! `fail-flush` in DIR makes the flush phase fail, to see a non-clean stop reach the SCM as a
//! service-specific exit code.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use winddown::{DrainPlan, HostOptions, Stage};

const DEFAULT_NAME: &str = "winddown-scm-example";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let name = value("--name").unwrap_or_else(|| DEFAULT_NAME.to_owned());
    let exe = std::env::current_exe().expect("the path of this program");
    let data = value("--data")
        .map(PathBuf::from)
        .unwrap_or_else(|| exe.with_file_name(format!("{name}-data")));
    let command = args.first().map(String::as_str).unwrap_or("run");
    let code = match command {
        "run" => run(name, &data),
        "install" | "uninstall" | "start" | "stop" | "status" => {
            manage(command, &name, &exe, &data, &flag, value("--account"))
        }
        other => {
            eprintln!("unknown command {other:?}: run, install, uninstall, start, stop, status");
            2
        }
    };
    std::process::exit(code);
}

/// The service itself.
fn run(name: String, data: &Path) -> i32 {
    if let Err(e) = std::fs::create_dir_all(data) {
        eprintln!("cannot create {}: {e}", data.display());
        return 1;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.join("service.log"));
    match log {
        Ok(file) => tracing_subscriber::fmt()
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .init(),
        Err(e) => eprintln!("cannot open the log in {}: {e}", data.display()),
    }
    let data = data.to_owned();
    winddown::run(HostOptions::new(name), move |host| async move {
        // Set by `install` in the service's registry key; the SCM passes it on.
        let installed_by = std::env::var("SCM_EXAMPLE_INSTALLED_BY").unwrap_or_default();
        tracing::info!(host = ?host.kind(), pid = std::process::id(), %installed_by, "serving");
        host.ready();
        let fail_flush = data.join("fail-flush");
        let plan = DrainPlan::new()
            .phase(Stage::StopAccepting, "close intake", |_| async {
                Ok::<_, std::io::Error>(())
            })
            .phase(
                Stage::FinishInFlight,
                "in-flight requests",
                |ctx| async move {
                    for done in 0..6 {
                        ctx.set_progress(format!("{done} of 6 requests answered"));
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    ctx.set_detail("6 requests answered");
                    Ok::<_, std::io::Error>(())
                },
            )
            .phase(Stage::Flush, "flush", move |_| async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if fail_flush.exists() {
                    return Err(std::io::Error::other("flush failed (fail-flush marker)"));
                }
                Ok(())
            });
        let report = host.drain(plan).await;
        let line = report.to_json() + "\n";
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join("reports.jsonl"))?
            .write_all(line.as_bytes())?;
        Ok(report)
    })
}

fn manage(
    command: &str,
    name: &str,
    exe: &Path,
    data: &Path,
    flag: &dyn Fn(&str) -> bool,
    account: Option<String>,
) -> i32 {
    use winddown::service::ServiceSpec;
    use winddown::service::windows::{
        self as svc, Account, IfInstalled, InstallOptions, StartMode,
    };

    let mut progress = |w: &svc::Waiting| println!("  {w}");
    let wait = Duration::from_secs(60);
    let result = match command {
        "install" => {
            let spec = ServiceSpec::new(name, exe)
                .display_name(format!("winddown example ({name})"))
                .description("Shows the winddown drain through the Service Control Manager.")
                .arguments(["run", "--name", name, "--data", &data.to_string_lossy()])
                .data_dir(data)
                .stop_budget(Duration::from_secs(20))
                .env("SCM_EXAMPLE_INSTALLED_BY", "winddown");
            let account = match account.as_deref() {
                None | Some("virtual") => Account::Virtual,
                Some("local-service") => Account::LocalService,
                Some("local-system") => Account::LocalSystem,
                Some(other) => {
                    eprintln!("unknown account {other:?}: virtual, local-service, local-system");
                    return 2;
                }
            };
            let options = InstallOptions::new()
                .start(if flag("--manual") {
                    StartMode::Manual
                } else {
                    StartMode::Automatic
                })
                .account(account)
                .if_installed(if flag("--update") {
                    IfInstalled::Update
                } else {
                    IfInstalled::Keep
                });
            svc::install(&spec, &options).map(|done| done.to_string())
        }
        "uninstall" => svc::uninstall(name, wait, &mut progress).map(|done| done.to_string()),
        "start" => svc::start(name, wait, &mut progress).map(|r| {
            let already = if r.already {
                " (it was running already)"
            } else {
                ""
            };
            format!("started{already}\n{}", r.info)
        }),
        "stop" => svc::stop(name, wait, &mut progress).map(|r| {
            let already = if r.already {
                " (it was stopped already)"
            } else {
                ""
            };
            format!("stopped{already}\n{}", r.info)
        }),
        _ => svc::status(name).map(|info| info.to_string()),
    };
    match result {
        Ok(text) => {
            println!("{text}");
            0
        }
        Err(e) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("error: {text}");
            1
        }
    }
}
