//! The forwarder's task: read past the cursor, deliver one batch per transaction, advance the
//! cursor; back off when PostgreSQL is away; prune delivered records; stop when told.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres_native_tls::MakeTlsConnector;
use tokio::sync::watch;
use tokio::time::Instant;

use super::backoff::Backoff;
use super::error::ForwardError;
use super::pg::{PgConn, Timeouts};
use super::{Control, Settings, Shared, State};
use crate::store::{Outbox, OutboxRecord, StoreError, UnixMillis};
use winddown::error_chain;

/// How often the backlog is looked at when there is nothing to deliver.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// How often the backlog figures are refreshed while backing off.
const REFRESH: Duration = Duration::from_secs(1);
/// How often retention runs, at most.
const PRUNE_EVERY: Duration = Duration::from_secs(1);
/// Most records one retention pass deletes.
const PRUNE_MAX: usize = 20_000;
/// How long each step of closing after a cut-off may take (cancel, wait, ROLLBACK, close).
const CLOSE_STEP: Duration = Duration::from_millis(500);
/// Back-off bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Successful batches in a row after which a shrunk batch limit doubles again.
const GROW_AFTER: u32 = 4;

/// How many records the next batch may hold: `forward_batch`, halved after each timeout (down to
/// one record: a batch too large for `statement_timeout` would otherwise be retried unchanged
/// for ever), doubled again after [`GROW_AFTER`] successes in a row.
#[derive(Debug)]
pub(super) struct BatchLimit {
    max: usize,
    current: usize,
    successes: u32,
}

impl BatchLimit {
    pub(super) fn new(max: usize) -> BatchLimit {
        BatchLimit {
            max,
            current: max,
            successes: 0,
        }
    }

    pub(super) fn get(&self) -> usize {
        self.current
    }

    /// A batch of `len` records timed out: the next ones hold at most half as many.
    pub(super) fn timed_out(&mut self, len: usize) {
        self.current = (len / 2).clamp(1, self.max);
        self.successes = 0;
    }

    pub(super) fn succeeded(&mut self) {
        self.successes += 1;
        if self.current < self.max && self.successes >= GROW_AFTER {
            self.current = self.current.saturating_mul(2).min(self.max);
            self.successes = 0;
        }
    }
}

pub(super) struct Task {
    pub(super) settings: Settings,
    pub(super) tls: MakeTlsConnector,
    pub(super) outbox: Arc<Mutex<Outbox>>,
    pub(super) shared: Arc<Shared>,
    pub(super) control: watch::Receiver<Control>,
    pub(super) done: watch::Sender<bool>,
}

impl Task {
    pub(super) async fn run(mut self) {
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let mut pg: Option<PgConn> = None;
        let mut turn = 0usize;
        let mut last_prune = Instant::now();
        let mut limit = BatchLimit::new(self.settings.batch);
        self.refresh_backlog().await;
        loop {
            // The handle is gone (depot failed to start): nobody will ever say stop.
            if self.control.has_changed().is_err() {
                break;
            }
            let control = *self.control.borrow_and_update();
            let draining = match control {
                Control::Abort => break,
                Control::Drain { until } if Instant::now() >= until => break,
                Control::Drain { .. } => true,
                Control::Run => false,
            };

            let Some(conn) = pg.as_mut() else {
                self.set_state(State::Connecting);
                match self.connect().await {
                    Ok(conn) => {
                        pg = Some(conn);
                        self.shared.lock().retry_at = None;
                    }
                    Err(e) => {
                        let delay = self.failed(&e, &mut backoff);
                        if draining {
                            break;
                        }
                        self.pause(delay).await;
                    }
                }
                continue;
            };

            let (max, max_bytes) = (limit.get(), self.settings.batch_bytes);
            let batch = self
                .store(move |o| o.next_batch_within(max, max_bytes, turn))
                .await;
            turn = turn.wrapping_add(1);
            let batch = match batch {
                Ok(batch) => batch,
                Err(e) => {
                    let delay = self.failed(&e.into(), &mut backoff);
                    self.pause(delay).await;
                    continue;
                }
            };
            if batch.is_empty() {
                self.set_state(State::CaughtUp);
                self.refresh_backlog().await;
                if draining {
                    break;
                }
                if last_prune.elapsed() >= PRUNE_EVERY {
                    self.prune().await;
                    last_prune = Instant::now();
                }
                self.wait_for_control(IDLE_POLL).await;
                continue;
            }

            self.set_state(State::Delivering);
            let started = Instant::now();
            match self.deliver(conn, &batch).await {
                Ok(delivered) => {
                    let elapsed = started.elapsed();
                    metrics::histogram!("depot_forward_batch_duration_seconds")
                        .record(elapsed.as_secs_f64());
                    metrics::counter!("depot_forward_delivered_total")
                        .increment(batch.len() as u64);
                    metrics::counter!("depot_forward_redelivered_total")
                        .increment(delivered.already_there);
                    metrics::counter!("depot_forward_rejected_total").increment(delivered.rejected);
                    tracing::debug!(
                        records = batch.len(),
                        inserted = delivered.inserted,
                        already_there = delivered.already_there,
                        elapsed_ms = elapsed.as_millis() as u64,
                        "batch delivered to PostgreSQL"
                    );
                    {
                        let mut status = self.shared.lock();
                        status.delivered += batch.len() as u64;
                        status.already_there += delivered.already_there;
                        status.rejected += delivered.rejected;
                        status.batches += 1;
                        status.last_delivery = Some(UnixMillis::now());
                    }
                    // PostgreSQL has the batch; only now does the cursor move. A crash before this
                    // line re-sends the batch, which the primary key makes a no-op.
                    if let Err(e) = self.store(move |o| o.advance(&batch)).await {
                        let delay = self.failed(&e.into(), &mut backoff);
                        self.pause(delay).await;
                        continue;
                    }
                    backoff.reset();
                    limit.succeeded();
                    self.shared.lock().batch_limit = limit.get();
                    self.refresh_backlog().await;
                    if !draining && last_prune.elapsed() >= PRUNE_EVERY {
                        self.prune().await;
                        last_prune = Instant::now();
                    }
                }
                Err(e) => {
                    if e.is_timeout() {
                        limit.timed_out(batch.len());
                        self.shared.lock().batch_limit = limit.get();
                        let bytes: usize = batch.iter().map(|r| r.payload.len()).sum();
                        tracing::warn!(
                            records = batch.len(),
                            bytes,
                            next_limit = limit.get(),
                            "PostgreSQL took too long over a batch; the next batches are smaller"
                        );
                    }
                    let delay = self.failed(&e, &mut backoff);
                    if let Some(conn) = pg.take() {
                        conn.close(true, CLOSE_STEP).await;
                    }
                    if draining || matches!(e, ForwardError::CutOff) {
                        break;
                    }
                    self.pause(delay).await;
                }
            }
        }
        if let Some(conn) = pg.take() {
            conn.close(false, CLOSE_STEP).await;
        }
        self.refresh_backlog().await;
        self.set_state(State::Stopped);
        self.shared.lock().retry_at = None;
        let _ = self.done.send(true);
    }

    /// Connects, unless told to stop first.
    async fn connect(&mut self) -> Result<PgConn, ForwardError> {
        let timeouts = self.timeouts();
        let connect = PgConn::connect(&self.settings.target, &self.tls, timeouts);
        let conn = tokio::select! {
            conn = connect => conn?,
            () = interrupted(self.control.clone()) => return Err(ForwardError::CutOff),
        };
        let (target_id, tables) = (conn.target_id.clone(), conn.tables.clone());
        let (new_target, new_tables) = self
            .store(move |o| Ok((o.bind_target(&target_id)?, o.bind_tables(&tables)?)))
            .await?;
        if new_target {
            tracing::warn!(
                target = %self.shared.target,
                "forward_to now names another PostgreSQL database than the one the delivery \
                 cursors refer to: every record still in the local store will be delivered to it"
            );
        }
        if new_tables {
            tracing::warn!(
                target = %self.shared.target,
                "PostgreSQL's depot_records (or depot_rejected) is not the table the delivery \
                 cursors refer to — it was dropped and created again: every record still in the \
                 local store will be delivered to it"
            );
        }
        if new_target || new_tables {
            // Records that retention deleted after delivering them cannot be sent again: say so,
            // loudly, rather than report a target that lacks them as caught up.
            let pruned = self.store(|o| o.pruned_records()).await?;
            if pruned > 0 {
                let message = format!(
                    "the PostgreSQL tables depot delivers to are new, but {pruned} records \
                     delivered before were already deleted from the local store \
                     (retain_delivered) and cannot be sent again: the new tables lack them"
                );
                tracing::error!(target = %self.shared.target, pruned, "{message}");
                metrics::counter!("depot_forward_errors_total", "kind" => "records_lost_on_target")
                    .increment(1);
                self.shared.lock().last_error = Some((message, UnixMillis::now()));
            }
        }
        tracing::info!(target = %self.shared.target, origin = %self.shared.origin, "connected to PostgreSQL");
        Ok(conn)
    }

    /// Delivers one batch. A stop that comes while the transaction is open cancels the running
    /// statement on the server (PostgreSQL's cancel request, on a separate connection) and waits
    /// briefly for the outcome: a commit that won the race counts as delivered; otherwise the
    /// caller closes the connection with a `ROLLBACK`.
    async fn deliver(
        &self,
        conn: &mut PgConn,
        batch: &[OutboxRecord],
    ) -> Result<super::pg::Delivered, ForwardError> {
        let cancel = conn.cancel_token();
        let timeouts = self.timeouts();
        let origin = self.shared.origin.clone();
        let work = conn.deliver(&origin, batch, timeouts);
        tokio::pin!(work);
        tokio::select! {
            result = &mut work => result,
            () = interrupted(self.control.clone()) => {
                tracing::info!(records = batch.len(), "stop during a delivery: cancelling the PostgreSQL statement");
                if let Ok(Err(e)) = tokio::time::timeout(CLOSE_STEP, cancel.cancel_query(self.tls.clone())).await {
                    tracing::debug!(error = %e, "the cancel request failed");
                }
                match tokio::time::timeout(CLOSE_STEP * 2, &mut work).await {
                    Ok(Ok(delivered)) => Ok(delivered),
                    Ok(Err(_)) | Err(_) => Err(ForwardError::CutOff),
                }
            }
        }
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: self.settings.connect_timeout,
            statement: self.settings.statement_timeout,
        }
    }

    /// Records a failure; returns how long to wait before the next attempt.
    fn failed(&self, e: &ForwardError, backoff: &mut Backoff) -> Duration {
        let attention = e.needs_attention();
        let delay = if attention {
            backoff.longest()
        } else {
            backoff.next_delay()
        };
        let message = error_chain(e);
        metrics::counter!("depot_forward_errors_total", "kind" => e.kind()).increment(1);
        if attention {
            tracing::error!(error = %message, retry_in_ms = delay.as_millis() as u64, "forwarding to PostgreSQL needs attention");
        } else if !matches!(e, ForwardError::CutOff) {
            tracing::warn!(error = %message, retry_in_ms = delay.as_millis() as u64, "forwarding to PostgreSQL failed; will retry");
        }
        let mut status = self.shared.lock();
        status.errors += 1;
        status.last_error = Some((message, UnixMillis::now()));
        status.state = if attention {
            State::NeedsAttention
        } else {
            State::BackingOff
        };
        status.retry_at = Some(std::time::Instant::now() + delay);
        delay
    }

    fn set_state(&self, state: State) {
        self.shared.lock().state = state;
    }

    /// Waits `delay`, refreshing the backlog figures every second; returns early if the control
    /// changes (a stop).
    async fn pause(&mut self, delay: Duration) {
        let end = Instant::now() + delay;
        while Instant::now() < end {
            self.refresh_backlog().await;
            let step = (end - Instant::now()).min(REFRESH);
            if self.wait_for_control(step).await {
                return;
            }
        }
    }

    /// Waits up to `limit`; `true` if the control changed meanwhile.
    async fn wait_for_control(&mut self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.control.changed())
            .await
            .is_ok()
    }

    async fn refresh_backlog(&self) {
        match self.store(|o| o.backlog()).await {
            Ok(backlog) => {
                super::record_backlog(&backlog);
                self.shared.lock().backlog = backlog;
            }
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "cannot measure the forwarding backlog")
            }
        }
    }

    async fn prune(&self) {
        let Some(retention) = self.settings.retention else {
            return;
        };
        let rule = retention.rule(UnixMillis::now());
        match self.store(move |o| o.prune(rule, PRUNE_MAX)).await {
            Ok(0) => {}
            Ok(n) => {
                metrics::counter!("depot_forward_pruned_total").increment(n);
                self.shared.lock().pruned += n;
                tracing::debug!(records = n, %retention, "deleted delivered records");
            }
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "retention of delivered records failed")
            }
        }
    }

    /// Runs `f` on the outbox's connection on the blocking pool.
    async fn store<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut Outbox) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let outbox = self.outbox.clone();
        tokio::task::spawn_blocking(move || {
            let mut outbox = outbox.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut outbox)
        })
        .await
        .unwrap_or_else(|e| {
            Err(StoreError::Closed {
                path: format!("(the outbox task failed: {e})").into(),
            })
        })
    }
}

/// Resolves when the forwarder must stop what it is doing: an abort, or the drain's deadline.
async fn interrupted(mut control: watch::Receiver<Control>) {
    loop {
        let current = *control.borrow_and_update();
        match current {
            Control::Abort => return,
            Control::Drain { until } => {
                tokio::select! {
                    () = tokio::time::sleep_until(until) => return,
                    changed = control.changed() => if changed.is_err() { return },
                }
            }
            Control::Run => {
                if control.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BatchLimit;

    #[test]
    fn the_batch_limit_halves_to_one_and_grows_back() {
        let mut limit = BatchLimit::new(1000);
        limit.timed_out(1000);
        assert_eq!(limit.get(), 500);
        limit.timed_out(37); // a batch the byte budget cut short
        assert_eq!(limit.get(), 18);
        for _ in 0..10 {
            limit.timed_out(limit.get());
        }
        assert_eq!(limit.get(), 1, "never below one record");
        for _ in 0..3 {
            limit.succeeded();
        }
        assert_eq!(limit.get(), 1);
        limit.succeeded();
        assert_eq!(limit.get(), 2);
        for _ in 0..100 {
            limit.succeeded();
        }
        assert_eq!(limit.get(), 1000, "back to forward_batch, not beyond");
    }
}
