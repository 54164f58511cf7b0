//! `depot run`: open the store, serve HTTP, and drain in order when told to stop.
//!
//! The drain plan, in order:
//! 1. stop accepting — `/readyz` turns `503`, appends get `503 draining`, then (after
//!    `unready_delay_ms`) the listener closes;
//! 2. finish in-flight — open requests finish (bounded by the phase's budget);
//! 3. flush — the group committer commits everything it accepted;
//! 4. close stores — WAL checkpoint, connections closed, clean-shutdown marker written, lock
//!    released;
//! 5. release — temp area removed.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use winddown::commit::{CommitConfig, GroupCommit};
use winddown::host::AppError;
use winddown::{DrainPlan, Host, Phase, Progress, Reporter, ShutdownReport, Stage, TempArea};

use crate::config::{Config, DurabilityMode};
use crate::http::{self, AppState, Server};
use crate::store::{Durability, Store, StoreOptions, Writer};

/// File names in the data directory.
pub mod files {
    /// The single-instance lock; holds the running depot's PID.
    pub const LOCK: &str = "depot.lock";
    /// Where the running depot says where it listens (JSON).
    pub const RUNNING: &str = "depot.running.json";
    /// Progress of a running drain, one JSON line per report, for `depot stop`.
    pub const PROGRESS: &str = "shutdown.progress.jsonl";
    /// The last shutdown's report (JSON).
    pub const LAST_SHUTDOWN: &str = "last-shutdown.json";
    /// Temporary files; swept at start.
    pub const TEMP: &str = "tmp";
    /// The log of a depot the Windows SCM started (it has no console).
    pub const SERVICE_LOG: &str = "depot.log";
}

/// Runs depot until it is told to stop; returns the shutdown report.
pub async fn run(host: Host, config: Config) -> Result<ShutdownReport, AppError> {
    let dir = config.data_dir.clone();
    // The token first: a start that cannot authenticate should fail before it touches the data.
    let auth = config
        .auth_token_file
        .as_deref()
        .map(http::AuthToken::load)
        .transpose()?;
    match &auth {
        Some(_) => tracing::info!("authentication: /v1/* requires the bearer token"),
        None if !config.listen.ip().is_loopback() => tracing::warn!(
            listen = %config.listen,
            "depot listens on a non-loopback address without authentication: anyone who can \
             reach it can read and write every stream; set auth_token_file (docs/SECURITY.md)"
        ),
        None => {}
    }
    create_private_dir(&dir)
        .map_err(|e| format!("cannot create the data directory {}: {e}", dir.display()))?;
    warn_if_shared(&dir);
    let last_shutdown = fs::read(dir.join(files::LAST_SHUTDOWN))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());

    // Opening the store takes the data directory's single-instance lock (`depot.lock`); only
    // then is it safe to sweep the temp area.
    let store = Store::open(
        &dir,
        &StoreOptions {
            durability: match config.durability {
                DurabilityMode::Full => Durability::Full,
                DurabilityMode::Off => Durability::Off,
            },
            ..StoreOptions::default()
        },
    )?;
    let temp = TempArea::open(dir.join(files::TEMP))?;
    tracing::info!(report = %store.report, "store opened");
    if config.durability == DurabilityMode::Off {
        tracing::warn!(
            "durability = \"off\": records are acknowledged before they are on disk; an OS crash \
             or power cut can lose them (a benchmark baseline, not for data you need)"
        );
    }
    let recovery = serde_json::json!({
        "last_run": format!("{:?}", store.report.last_run),
        "summary": store.report.to_string(),
    });
    let metrics = crate::metrics::install();
    crate::metrics::record_last_shutdown(last_shutdown.as_ref());

    let committer = GroupCommit::start(
        store.writer,
        CommitConfig::new("depot")
            .queue_capacity(config.commit_queue)
            .max_batch_items(config.commit_max_batch),
    )?;
    // Forwarding to PostgreSQL (off unless `forward_to` is set): its own task from here on.
    let forwarder = match crate::forward::Settings::from_config(&config)? {
        Some(settings) => Some(crate::forward::Forwarder::start(settings, &store.readers)?),
        None => None,
    };
    let listener = TcpListener::bind(config.listen).await.map_err(|e| {
        format!(
            "cannot listen on {}: {e}; is another program using that port? choose another with --listen",
            config.listen
        )
    })?;
    let state = Arc::new(
        AppState::new(
            committer.clone(),
            store.readers.clone(),
            config.clone(),
            metrics,
            recovery,
            last_shutdown,
        )
        .with_auth(auth),
    );
    if let Some(forwarder) = &forwarder {
        let _ = state.forward.set(forwarder.clone());
    }
    let server = Server::start(
        listener,
        http::router(state.clone()),
        config.max_connections,
        config.header_read_timeout(),
    )?;
    let addr = server.local_addr();
    write_atomically(
        &dir.join(files::RUNNING),
        serde_json::json!({ "pid": std::process::id(), "listen": addr.to_string() })
            .to_string()
            .as_bytes(),
    )?;
    let _ = fs::remove_file(dir.join(files::PROGRESS));
    tracing::info!(listen = %addr, data_dir = %dir.display(), pid = std::process::id(), "depot serving");
    say(format_args!(
        "depot serving on http://{addr} — data in {}",
        dir.display()
    ));

    let plan = drain_plan(
        state,
        server,
        committer,
        store.readers,
        config.unready_delay_ms,
        temp,
        &dir,
    );
    let plan = match &forwarder {
        Some(forwarder) => forwarder.add_phases(plan),
        None => plan,
    };
    host.ready();
    let progress = ProgressFile::create(&dir.join(files::PROGRESS));
    let report = host.drain_with(plan, &progress).await;
    let _ = write_atomically(&dir.join(files::LAST_SHUTDOWN), report.to_json().as_bytes());
    let _ = fs::remove_file(dir.join(files::RUNNING));
    say(format_args!("{report}"));
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn drain_plan(
    state: Arc<AppState>,
    server: Server,
    committer: GroupCommit<Writer>,
    readers: crate::store::Readers,
    unready_delay_ms: u64,
    temp: TempArea,
    dir: &Path,
) -> DrainPlan {
    let connections = Arc::new(Mutex::new(None));
    let writer: Arc<Mutex<Option<Writer>>> = Arc::new(Mutex::new(None));
    let (conns_in, conns_out) = (connections.clone(), connections);
    let (writer_in, writer_out) = (writer.clone(), writer);
    let running_file: PathBuf = dir.join(files::RUNNING);
    let unready_delay = Duration::from_millis(unready_delay_ms);
    // Time to close the listener after the delay.
    let close = Duration::from_millis(500);
    DrainPlan::new()
        .with(
            Phase::new(
                Stage::StopAccepting,
                "readiness off, listener closed",
                move |ctx| async move {
                    state.draining.store(true, Ordering::Release);
                    let delay = unready_delay.min(ctx.remaining().saturating_sub(close));
                    if !delay.is_zero() {
                        ctx.set_progress(
                            "/readyz answers 503; waiting for load balancers to notice",
                        );
                        tokio::time::sleep(delay).await;
                    }
                    *lock_slot(&conns_in) = Some(server.stop_accepting().await);
                    Ok::<_, std::io::Error>(())
                },
            )
            // The whole delay when the stop's budget allows it (at most half of it).
            .wants(if unready_delay.is_zero() {
                Duration::ZERO
            } else {
                unready_delay + close
            }),
        )
        .phase(
            Stage::FinishInFlight,
            "in-flight requests",
            move |_| async move {
                let connections = lock_slot(&conns_out).take();
                if let Some(connections) = connections {
                    connections.finish().await;
                }
                Ok::<_, std::io::Error>(())
            },
        )
        .phase(Stage::Flush, "group commit", move |ctx| async move {
            let drained = committer.drain(ctx.remaining()).await?;
            ctx.set_detail(format!(
                "{} requests flushed; {} commits since start",
                drained.flushed, drained.stats.commits
            ));
            *lock_slot(&writer_in) = drained.sink;
            match drained.poisoned {
                Some(cause) => Err(format!("the store was poisoned: {cause}").into()),
                None => Ok::<_, winddown::PhaseError>(()),
            }
        })
        .phase(
            Stage::CloseStores,
            "sqlite checkpoint and close",
            move |ctx| async move {
                let writer = lock_slot(&writer_out).take();
                let Some(writer) = writer else {
                    return Err::<(), winddown::PhaseError>(
                        "the writer was not handed back by the flush".into(),
                    );
                };
                // Closing the writer closes the readers too.
                drop(readers);
                tokio::task::spawn_blocking(move || writer.close()).await??;
                ctx.set_detail("WAL checkpointed, clean-shutdown marker written");
                Ok(())
            },
        )
        // The lock was released with the writer, after the clean-shutdown marker was written.
        .phase(Stage::Release, "temp area", move |_| async move {
            let _ = fs::remove_file(&running_file);
            temp.release()?;
            Ok::<_, std::io::Error>(())
        })
}

/// Writes a line to stderr for the person at the console, ignoring failure: `eprintln!` panics
/// when stderr is a file on a full disk or a closed pipe, and a message must not cost the process.
pub fn say(text: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{text}");
}

fn lock_slot<T>(slot: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

/// Creates the data directory readable by its owner only.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Warns when the data directory (which depot did not create, or created under another umask)
/// lets other users in: the records, and the database files, are for depot's user only.
fn warn_if_shared(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(dir) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    data_dir = %dir.display(),
                    mode = format!("{mode:o}"),
                    "the data directory is open to other users; chmod 700 it \
                     (under systemd: StateDirectoryMode=0700)"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers never see half —
/// durably: the file is fsynced before the rename and the directory after it, so that a power cut
/// cannot leave an empty file or bring back the previous one (found by the power-cut loop: the
/// shutdown report of a clean stop came back empty).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    // Windows cannot open a directory as a file; NTFS journals directory entries itself.
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Writes each progress report as a JSON line, for `depot stop` to follow.
struct ProgressFile(Mutex<Option<fs::File>>);

impl ProgressFile {
    fn create(path: &Path) -> Self {
        ProgressFile(Mutex::new(fs::File::create(path).ok()))
    }
}

impl Reporter for ProgressFile {
    fn progress(&self, progress: &Progress) {
        use std::io::Write;
        if let Some(file) = lock_slot(&self.0).as_mut()
            && let Ok(line) = serde_json::to_string(progress)
        {
            let _ = writeln!(file, "{line}");
        }
    }

    fn finished(&self, report: &ShutdownReport) {
        use std::io::Write;
        if let Some(file) = lock_slot(&self.0).as_mut() {
            let _ = writeln!(file, "{{\"finished\":{}}}", report.to_json());
        }
    }
}
