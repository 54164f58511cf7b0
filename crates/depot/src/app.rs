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
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use winddown::AppError;
use winddown::commit::{CommitConfig, GroupCommit, WhenFull};
use winddown::instance::Instance;
use winddown::{DrainPlan, Host, Phase, ShutdownReport, Stage, TempArea};

use crate::config::{Config, DurabilityMode};
use crate::http::{self, AppState, Server};
use crate::store::{Durability, Store, StoreOptions, Writer};

/// depot's instance files in `data_dir` (winddown's conventions: `depot.lock`,
/// `depot.running.json`, `shutdown.progress.jsonl`, `last-shutdown.json`), for `depot stop` and
/// `depot status` to find it.
pub fn instance(data_dir: &Path) -> Instance {
    Instance::new(data_dir, "depot")
}

/// depot's own file names in the data directory (besides the [`instance`] files and the store's).
pub mod files {
    /// Temporary files; swept at start.
    pub const TEMP: &str = "tmp";
    /// The log of a depot the Windows SCM started (it has no console).
    pub const SERVICE_LOG: &str = "depot.log";
}

/// Why depot could not start (besides the store's, the token's and forwarding's own errors).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory cannot be created.
    #[error("cannot create the data directory {}: {source}", dir.display())]
    DataDir {
        /// The directory.
        dir: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The listening address cannot be bound.
    #[error(
        "cannot listen on {addr}: {source}; is another program using that port? choose another \
         with --listen"
    )]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
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
    create_private_dir(&dir).map_err(|source| StartError::DataDir {
        dir: dir.clone(),
        source,
    })?;
    warn_if_shared(&dir);
    let instance = instance(&dir);
    let last_shutdown = instance
        .last_shutdown()
        .inspect_err(|e| tracing::warn!(error = %e, "ignoring the last shutdown's report"))
        .ok()
        .flatten()
        .and_then(|report| serde_json::to_value(report).ok());

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
    crate::metrics::record_last_shutdown(
        last_shutdown.as_ref(),
        matches!(store.report.last_run, crate::store::LastRun::Unclean),
    );

    let committer = GroupCommit::start(
        store.writer,
        CommitConfig::new("depot")
            .queue_capacity(config.commit_queue)
            .max_batch_items(config.commit_max_batch)
            // A full queue (`commit_queue` requests already waiting for the disk) is overload:
            // answer `503 overloaded` with `Retry-After` at once rather than hold the request
            // until it times out (API.md).
            .when_full(WhenFull::FailFast),
    )?;
    // Forwarding to PostgreSQL (off unless `forward_to` is set): its own task from here on.
    let forwarder = match config.forward_settings()? {
        Some(settings) => Some(crate::forward::Forwarder::start(settings, &store.readers)?),
        None => None,
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    let state = Arc::new(
        AppState::new(
            committer.clone(),
            store.readers.clone(),
            http::Settings {
                listen: config.listen,
                data_dir: config.data_dir.clone(),
                max_body_bytes: config.max_body_bytes,
                max_records_per_request: config.max_records_per_request,
                max_read_limit: config.max_read_limit,
                max_page_bytes: config.max_page_bytes,
                request_timeout: config.request_timeout(),
            },
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
    instance.announce(
        Some(addr.to_string()),
        Some(env!("CARGO_PKG_VERSION").to_owned()),
    )?;
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
        instance.clone(),
    );
    let plan = match &forwarder {
        Some(forwarder) => forwarder.add_phases(plan),
        None => plan,
    };
    host.ready();
    let report = host.drain_with(plan, &instance.progress_file()).await;
    if let Err(e) = instance.record(&report) {
        tracing::warn!(error = %e, "cannot keep the shutdown report");
    }
    say(format_args!("{report}"));
    Ok(report)
}

/// The drain. The listener phase hands the open connections to the in-flight phase, and the flush
/// phase the writer it got back to the close phase ([`winddown::PhaseContext::put`]).
fn drain_plan(
    state: Arc<AppState>,
    server: Server,
    committer: GroupCommit<Writer>,
    readers: crate::store::Readers,
    unready_delay_ms: u64,
    temp: TempArea,
    instance: Instance,
) -> DrainPlan {
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
                    ctx.put(server.stop_accepting().await);
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
            move |ctx| async move {
                if let Some(connections) = ctx.take::<crate::http::Connections>() {
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
            if let Some(writer) = drained.sink {
                ctx.put(writer);
            }
            match drained.poisoned {
                Some(cause) => Err(format!("the store was poisoned: {cause}").into()),
                None => Ok::<_, winddown::PhaseError>(()),
            }
        })
        .phase(
            Stage::CloseStores,
            "sqlite checkpoint and close",
            move |ctx| async move {
                let Some(writer) = ctx.take::<Writer>() else {
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
        // The lock was released with the writer, after the clean-shutdown marker was written — or,
        // if a connection outlived it (the forwarder's outbox, after its phases were cut off), it
        // stays held until that one closes too: a new depot must not open a WAL still written to.
        .phase(Stage::Release, "temp area", move |_| async move {
            instance.withdraw();
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
