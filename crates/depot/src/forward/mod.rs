//! Forwarding to PostgreSQL: the local store as a durable outbox, delivered exactly once.
//!
//! With `forward_to` set, a [`Forwarder`] task reads the records past each stream's delivery
//! cursor (see [`Outbox`]), inserts them into PostgreSQL's `depot_records` in batches of up to
//! `forward_batch` records and `forward_batch_bytes` of payloads (a larger record goes alone) —
//! halved after a timeout, down to one record, and doubled again after successes — one
//! transaction each, one multi-row
//! `INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING` keyed by `(origin, stream, seq)` — and
//! only after the `COMMIT` advances the cursor in SQLite.
//!
//! # Exactly once
//!
//! - *At least once*: the cursor moves only after PostgreSQL confirmed the commit, and records
//!   past the cursor are never deleted locally; whatever fails in between (a crash, a lost
//!   connection, an unanswered `COMMIT`) leaves the cursor where it was and the batch is sent again.
//! - *At most once*: the primary key `(origin, stream, seq)` makes a re-sent record a no-op. The
//!   origin is a random id made once per data directory (`meta.origin_id`), sequence numbers are
//!   per stream and never reused, so one key names one record. A re-sent record must also be
//!   identical: if PostgreSQL holds a *different* payload under the key (two depots sharing an
//!   origin id after a data directory was copied), the batch is rolled back and forwarding stops
//!   with [`ForwardError::OriginCollision`].
//! - A record whose payload PostgreSQL's `jsonb` refuses (`"\u0000"` in a string) goes, as text
//!   with the reason, to `depot_rejected` under the same key, in the same transaction as the rest
//!   of its batch: each record lands in exactly one of the two tables.
//!
//! # Outages and shutdown
//!
//! Errors back off (100 ms doubling to 30 s, jittered; schema and data problems that retrying will
//! not fix wait the full 30 s) while appends keep being accepted locally; the backlog is in
//! `/metrics` and `/v1/status`. At a stop, forwarding is a best-effort drain phase in
//! [`Stage::FinishInFlight`]: it delivers what it can until its deadline, then cancels the running
//! statement and rolls back; a required phase in [`Stage::Flush`] makes sure the task has ended
//! and the PostgreSQL connection is closed before the store is. The server never keeps an open
//! transaction of ours: besides the `ROLLBACK`, the session runs with
//! `idle_in_transaction_session_timeout`.
//!
//! # Connection
//!
//! One connection (tokio-postgres, TLS by native-tls per `sslmode`), no pool: batches are
//! sequential, and the shutdown must know exactly which connection holds the open transaction.
//! `statement_timeout` is set on the session, and every call also has a client-side timeout.

mod backoff;
mod error;
mod pg;
mod retention;
mod target;
mod task;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use winddown::{DrainPlan, Phase, PhaseError, Stage};

pub use error::ForwardError;
pub use pg::PG_SCHEMA_VERSION;
pub use retention::Retention;
pub use target::{ForwardTo, Target, TargetError, TlsMode};

use crate::store::{Backlog, Outbox, Readers, UnixMillis};

/// The forwarding settings (built from depot's config by
/// `Config::forward_settings` in config.rs: forward/ does not depend on the config).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to.
    pub target: Target,
    /// Most records in one transaction.
    pub batch: usize,
    /// Most payload bytes in one transaction (a single larger record goes alone).
    pub batch_bytes: usize,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// `statement_timeout` on the session (the client waits 2 s more).
    pub statement_timeout: Duration,
    /// What to delete locally once delivered.
    pub retention: Option<Retention>,
}

/// What the forwarder is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    Starting,
    Connecting,
    Delivering,
    CaughtUp,
    BackingOff,
    NeedsAttention,
    Stopped,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Connecting => "connecting",
            State::Delivering => "delivering",
            State::CaughtUp => "caught_up",
            State::BackingOff => "backing_off",
            State::NeedsAttention => "needs_attention",
            State::Stopped => "stopped",
        }
    }
}

/// What the task tells the world.
#[derive(Debug, Default)]
struct Status {
    state: State,
    backlog: Backlog,
    delivered: u64,
    already_there: u64,
    rejected: u64,
    batches: u64,
    errors: u64,
    pruned: u64,
    last_error: Option<(String, UnixMillis)>,
    last_delivery: Option<UnixMillis>,
    retry_at: Option<std::time::Instant>,
    /// Most records in the next batch: `forward_batch`, less after a timeout.
    batch_limit: usize,
}

/// What the task and the handle share.
#[derive(Debug)]
struct Shared {
    origin: String,
    target: String,
    retention: Option<Retention>,
    status: Mutex<Status>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the task is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    /// Forward, back off, retry, forever.
    Run,
    /// Deliver what is there without retrying, then stop; at `until`, cancel and stop.
    Drain { until: tokio::time::Instant },
    /// Cancel what is running, roll back, close, stop.
    Abort,
}

/// The running forwarder: a handle on its task. See the [module docs](self).
#[derive(Debug)]
pub struct Forwarder {
    shared: Arc<Shared>,
    control: watch::Sender<Control>,
    done: watch::Receiver<bool>,
}

impl Forwarder {
    /// Opens the outbox's connection to the store and starts the task on the current runtime.
    pub fn start(settings: Settings, readers: &Readers) -> Result<Arc<Forwarder>, ForwardError> {
        let tls = settings.target.connector().map_err(ForwardError::Setup)?;
        let outbox = Outbox::open(readers)?;
        let origin = outbox.origin_id()?;
        let shared = Arc::new(Shared {
            origin,
            target: settings.target.redacted().to_owned(),
            retention: settings.retention,
            status: Mutex::new(Status {
                batch_limit: settings.batch,
                ..Status::default()
            }),
        });
        describe_metrics();
        let (control_tx, control_rx) = watch::channel(Control::Run);
        let (done_tx, done_rx) = watch::channel(false);
        tracing::info!(target = %shared.target, origin = %shared.origin, batch = settings.batch, batch_bytes = settings.batch_bytes, "forwarding to PostgreSQL");
        let task = task::Task {
            settings,
            tls,
            outbox: Arc::new(Mutex::new(outbox)),
            shared: shared.clone(),
            control: control_rx,
            done: done_tx,
        };
        tokio::spawn(task.run());
        Ok(Arc::new(Forwarder {
            shared,
            control: control_tx,
            done: done_rx,
        }))
    }

    /// This depot's origin id in PostgreSQL.
    pub fn origin(&self) -> &str {
        &self.shared.origin
    }

    /// The `forward` object of `/v1/status`. `backlog` is what the store holds undelivered right
    /// now ([`Readers::forward_backlog`]): the task's own figure is refreshed only between its
    /// batches, so records committed since would not show (and "caught up" would be claimed
    /// with records still to send).
    pub fn status_json(&self, backlog: Option<Backlog>) -> serde_json::Value {
        let s = self.shared.lock();
        let now = UnixMillis::now();
        let backlog = backlog.unwrap_or(s.backlog);
        let state = match s.state {
            State::CaughtUp if backlog.records > 0 => State::Delivering,
            state => state,
        };
        json!({
            "enabled": true,
            "target": self.shared.target,
            "origin": self.shared.origin,
            "state": state.as_str(),
            "backlog_records": backlog.records,
            "backlog_streams": backlog.streams,
            "oldest_undelivered_age_seconds": backlog.oldest.map(|t| (now.0 - t.0).max(0) as f64 / 1000.0),
            "delivered_records": s.delivered,
            "already_there_records": s.already_there,
            "rejected_records": s.rejected,
            "batches": s.batches,
            "errors": s.errors,
            "last_error": s.last_error.as_ref().map(|(message, at)| json!({ "message": message, "at_ms": at.0 })),
            "last_delivered_at_ms": s.last_delivery.map(|t| t.0),
            "retry_in_ms": s.retry_at.map(|t| t.saturating_duration_since(std::time::Instant::now()).as_millis() as u64),
            "batch_limit": s.batch_limit,
            "retain_delivered": self.shared.retention.map(|r| r.to_string()),
            "pruned_records": s.pruned,
        })
    }

    /// Adds the forwarder's two phases to `plan`: "forward to PostgreSQL" (best-effort, in
    /// [`Stage::FinishInFlight`], after the in-flight requests), and "PostgreSQL connection
    /// closed" (required, in [`Stage::Flush`]), which makes sure the task has ended — its
    /// transaction rolled back or committed, its connections closed — before the store closes.
    pub fn add_phases(self: &Arc<Self>, plan: DrainPlan) -> DrainPlan {
        let (drain, stop) = (self.clone(), self.clone());
        plan.with(
            Phase::new(Stage::FinishInFlight, "forward to PostgreSQL", move |ctx| async move {
                // Cut off (deadline, second signal) → the future is dropped → abort.
                let _abort = AbortOnDrop(drain.control.clone());
                let margin = (ctx.remaining() / 4).min(Duration::from_millis(500));
                let before = drain.shared.lock().delivered;
                drain
                    .control
                    .send_replace(Control::Drain { until: ctx.deadline() - margin });
                ctx.set_progress("delivering the backlog to PostgreSQL");
                drain.wait_stopped().await;
                let s = drain.shared.lock();
                let mut detail = format!(
                    "{} records delivered during the drain; {} left in the local store for the next start",
                    s.delivered - before,
                    s.backlog.records
                );
                if s.backlog.records > 0
                    && let Some((error, _)) = &s.last_error
                {
                    detail.push_str(&format!(" (last error: {error})"));
                }
                ctx.set_detail(detail);
                Ok::<_, PhaseError>(())
            })
            .best_effort()
            .weight(4),
        )
        .with(
            Phase::new(Stage::Flush, "PostgreSQL connection closed", move |ctx| async move {
                stop.control.send_replace(Control::Abort);
                stop.wait_stopped().await;
                ctx.set_detail("forwarder stopped; no transaction left open");
                Ok::<_, PhaseError>(())
            })
            .required()
            .weight(1)
            .at_least(Duration::from_secs(2)),
        )
    }

    /// Resolves once the task has ended.
    ///
    /// # Cancellation safety
    /// Cancel-safe.
    async fn wait_stopped(&self) {
        let mut done = self.done.clone();
        let _ = done.wait_for(|stopped| *stopped).await;
    }
}

/// Tells the task to abort when dropped (the drain phase was cut off).
struct AbortOnDrop(watch::Sender<Control>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.send_if_modified(|c| {
            if matches!(c, Control::Drain { .. } | Control::Run) {
                *c = Control::Abort;
                true
            } else {
                false
            }
        });
    }
}

/// Sets the backlog gauges (by the task between batches, and by `/metrics` at each scrape, from
/// [`Readers::forward_backlog`], so that a scrape never shows an older figure).
pub fn record_backlog(backlog: &Backlog) {
    metrics::gauge!("depot_forward_backlog_records").set(backlog.records as f64);
    let age = backlog
        .oldest
        .map_or(0.0, |t| (UnixMillis::now().0 - t.0).max(0) as f64 / 1000.0);
    metrics::gauge!("depot_forward_oldest_age_seconds").set(age);
}

fn describe_metrics() {
    metrics::describe_gauge!(
        "depot_forward_backlog_records",
        "Records stored locally and not yet delivered to PostgreSQL"
    );
    metrics::describe_gauge!(
        "depot_forward_oldest_age_seconds",
        "Age of the oldest record not yet delivered to PostgreSQL (0 when none)"
    );
    metrics::describe_counter!(
        "depot_forward_delivered_total",
        "Records confirmed in PostgreSQL (committed) since start"
    );
    metrics::describe_counter!(
        "depot_forward_redelivered_total",
        "Delivered records PostgreSQL already held (re-sent after a crash or lost reply)"
    );
    metrics::describe_counter!(
        "depot_forward_rejected_total",
        "Records whose payload PostgreSQL's jsonb refused, delivered to depot_rejected instead"
    );
    metrics::describe_counter!(
        "depot_forward_errors_total",
        "Failed connections and batches, by kind"
    );
    metrics::describe_histogram!(
        "depot_forward_batch_duration_seconds",
        "Time to deliver one batch (one PostgreSQL transaction)"
    );
    metrics::describe_counter!(
        "depot_forward_pruned_total",
        "Delivered records deleted from the local store by retain_delivered"
    );
}
