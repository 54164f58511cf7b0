//! The Prometheus exporter behind `GET /metrics`.
//!
//! Every series the shipped alerts (`docs/prometheus/alerts.yml`) and dashboard
//! (`docs/grafana/depot.json`) query exists from the first scrape, at zero where nothing happened
//! yet — forwarding's included when forwarding is off — so that a rule over a missing series never
//! reads as "fine". A test runs `promtool check metrics` on a live depot and checks every name the
//! rules and the dashboard use against it.

use std::path::Path;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::http::AppState;

/// The append route's label, as `depot_http_*` carry it.
pub const APPEND_ROUTE: &str = "/v1/streams/:stream/records";

/// Outcomes `depot_last_shutdown_outcome` takes: the report's, and `crashed` when the previous
/// run never closed the store (killed, crashed, power cut: no report was written for it).
pub const SHUTDOWN_OUTCOMES: [&str; 5] = ["clean", "cut_off", "failed", "forced", "crashed"];

/// States of the forwarder as `depot_forward_state` exports them (`off` when forwarding is off).
pub const FORWARD_STATES: [&str; 8] = [
    "off",
    "starting",
    "connecting",
    "delivering",
    "caught_up",
    "backing_off",
    "needs_attention",
    "stopped",
];

/// Installs the process-wide recorder and returns the handle that renders it; `None` (logged) if
/// another recorder is already installed.
pub fn install() -> Option<PrometheusHandle> {
    let latency_buckets = [
        0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
    ];
    let size_buckets = [
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
    ];
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("seconds".into()), &latency_buckets)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("items".into()), &size_buckets));
    match builder.and_then(|b| b.install_recorder()) {
        Ok(handle) => {
            describe();
            register_at_zero();
            spawn_upkeep(handle.clone());
            Some(handle)
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics disabled: cannot install the Prometheus recorder");
            None
        }
    }
}

/// `install_recorder` leaves upkeep to the caller: until `run_upkeep` (or a scrape) drains them,
/// histograms keep every recorded sample — two per request — so a depot nobody scraped grew by
/// about 5 MiB a minute under load (depot-bench's RSS soak). Drains every 5 s, as the exporter's
/// own `install` does.
fn spawn_upkeep(handle: PrometheusHandle) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("metrics upkeep not started (no runtime): histograms grow until scraped");
        return;
    };
    runtime.spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            handle.run_upkeep();
        }
    });
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "depot_http_requests_total",
        "HTTP requests by route, method and status"
    );
    describe_histogram!(
        "depot_http_request_duration_seconds",
        "HTTP request latency, from the request's headers to its answer, by route"
    );
    describe_gauge!("depot_http_in_flight", "HTTP requests being served");
    describe_counter!(
        "depot_records_stored_total",
        "Records made durable (acknowledged) since start"
    );
    describe_gauge!(
        "depot_commit_queue_depth",
        "Append requests queued or being committed"
    );
    describe_gauge!(
        "depot_commit_poisoned",
        "1 once a commit failed in a way the store cannot vouch for (an fsync error): nothing is \
         acknowledged any more until depot restarts"
    );
    describe_gauge!(
        "depot_ready",
        "1 while depot serves, 0 from the moment its drain starts (as /readyz)"
    );
    describe_gauge!(
        "depot_start_time_seconds",
        "When this depot process started, in seconds since the Unix epoch"
    );
    describe_gauge!(
        "depot_data_dir_filesystem_avail_bytes",
        "Bytes available to depot on the file system of its data directory"
    );
    describe_gauge!(
        "depot_data_dir_filesystem_size_bytes",
        "Size of the file system of depot's data directory, in bytes"
    );
    describe_gauge!(
        "depot_store_size_bytes",
        "Size of the SQLite store: the database file and its write-ahead log"
    );
    describe_gauge!(
        "depot_forward_enabled",
        "1 when forwarding to PostgreSQL is configured, else 0"
    );
    describe_gauge!(
        "depot_forward_state",
        "1 for the forwarder's current state (off when forwarding is off), 0 for the others"
    );
    describe_gauge!(
        "depot_last_shutdown_phase_seconds",
        "How long each phase of the previous shutdown's drain took"
    );
    describe_gauge!(
        "depot_last_shutdown_phase_budget_seconds",
        "The budget each phase of the previous shutdown's drain was given"
    );
    describe_gauge!(
        "depot_last_shutdown_phase_outcome",
        "1 for how each phase of the previous shutdown's drain ended (done, cut_off, failed, \
         skipped)"
    );
    describe_gauge!(
        "depot_last_shutdown_outcome",
        "1 for how the previous run ended (clean, cut_off, failed, forced, or crashed: it never \
         closed the store), 0 for the others; all 0 on a new data directory"
    );
    describe_gauge!(
        "depot_last_shutdown_duration_seconds",
        "How long the previous shutdown's drain took"
    );
    describe_gauge!(
        "depot_last_shutdown_budget_seconds",
        "The time the previous shutdown allowed its drain"
    );
    describe_gauge!(
        "depot_last_shutdown_timestamp_seconds",
        "When the previous shutdown's drain ended, in seconds since the Unix epoch (0: none)"
    );
    // Forwarding's own (its task describes them too, when it starts).
    describe_gauge!(
        "depot_forward_backlog_records",
        "Records stored locally and not yet delivered to PostgreSQL"
    );
    describe_gauge!(
        "depot_forward_oldest_age_seconds",
        "Age of the oldest record not yet delivered to PostgreSQL (0 when none)"
    );
    describe_counter!(
        "depot_forward_delivered_total",
        "Records confirmed in PostgreSQL (committed) since start"
    );
}

/// Creates the series alerts and panels read, at zero: a counter or gauge that appears only once
/// something happens leaves `rate()`, `absent()`-free rules and panels blind until then.
fn register_at_zero() {
    let _ = metrics::counter!("depot_records_stored_total");
    for status in ["201", "503"] {
        let _ = metrics::counter!("depot_http_requests_total", "route" => APPEND_ROUTE, "method" => "POST", "status" => status);
    }
    let _ = metrics::histogram!("depot_http_request_duration_seconds", "route" => APPEND_ROUTE);
    metrics::gauge!("depot_commit_queue_depth").set(0.0);
    metrics::gauge!("depot_commit_poisoned").set(0.0);
    metrics::gauge!("depot_ready").set(0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    metrics::gauge!("depot_start_time_seconds").set(now.as_secs_f64());
    metrics::gauge!("depot_forward_enabled").set(0.0);
    set_forward_state("off");
    metrics::gauge!("depot_forward_backlog_records").set(0.0);
    metrics::gauge!("depot_forward_oldest_age_seconds").set(0.0);
    let _ = metrics::counter!("depot_forward_delivered_total");
    for outcome in SHUTDOWN_OUTCOMES {
        metrics::gauge!("depot_last_shutdown_outcome", "outcome" => outcome).set(0.0);
    }
    metrics::gauge!("depot_last_shutdown_duration_seconds").set(0.0);
    metrics::gauge!("depot_last_shutdown_budget_seconds").set(0.0);
    metrics::gauge!("depot_last_shutdown_timestamp_seconds").set(0.0);
}

/// Publishes how the previous run ended: the report in `last-shutdown.json` (`report`), unless
/// the store says that run never closed it (`crashed`) — then that report is an older run's, and
/// the outcome is `crashed` (its phases still show, as the last drain that ran).
pub fn record_last_shutdown(report: Option<&serde_json::Value>, crashed: bool) {
    let outcome = if crashed {
        Some("crashed")
    } else {
        report.and_then(|r| r["outcome"].as_str())
    };
    if let Some(outcome) = outcome {
        metrics::gauge!("depot_last_shutdown_outcome", "outcome" => outcome.to_owned()).set(1.0);
    }
    let Some(report) = report else {
        return;
    };
    let seconds = |v: &serde_json::Value| v.as_u64().map(|ms| ms as f64 / 1000.0);
    if let Some(s) = seconds(&report["duration_ms"]) {
        metrics::gauge!("depot_last_shutdown_duration_seconds").set(s);
    }
    if let Some(s) = seconds(&report["budget_ms"]) {
        metrics::gauge!("depot_last_shutdown_budget_seconds").set(s);
    }
    if let (Some(start), Some(took)) = (
        seconds(&report["started_at"]),
        seconds(&report["duration_ms"]),
    ) {
        metrics::gauge!("depot_last_shutdown_timestamp_seconds").set(start + took);
    }
    for phase in report["phases"].as_array().into_iter().flatten() {
        let Some(name) = phase["name"].as_str() else {
            continue;
        };
        if let Some(s) = seconds(&phase["duration_ms"]) {
            metrics::gauge!("depot_last_shutdown_phase_seconds", "phase" => name.to_owned()).set(s);
        }
        if let Some(s) = seconds(&phase["budget_ms"]) {
            metrics::gauge!("depot_last_shutdown_phase_budget_seconds", "phase" => name.to_owned())
                .set(s);
        }
        if let Some(outcome) = phase["outcome"].as_str() {
            metrics::gauge!("depot_last_shutdown_phase_outcome", "phase" => name.to_owned(), "outcome" => outcome.to_owned())
                .set(1.0);
        }
    }
}

/// Marks depot ready (`true`, serving) or not (`false`, its drain started).
fn set_ready(ready: bool) {
    metrics::gauge!("depot_ready").set(if ready { 1.0 } else { 0.0 });
}

/// Brings the gauges that are read rather than counted up to date; called at each scrape.
pub fn refresh(state: &AppState) {
    set_ready(!state.is_draining());
    let poisoned = state.committer.stats().poisoned;
    metrics::gauge!("depot_commit_poisoned").set(if poisoned { 1.0 } else { 0.0 });
    match state.forward.get() {
        Some(forwarder) => {
            metrics::gauge!("depot_forward_enabled").set(1.0);
            let status = forwarder.status_json(None);
            set_forward_state(status["state"].as_str().unwrap_or("starting"));
        }
        None => set_forward_state("off"),
    }
    record_disk(&state.settings.data_dir);
}

fn set_forward_state(current: &str) {
    for state in FORWARD_STATES {
        let value = if state == current { 1.0 } else { 0.0 };
        metrics::gauge!("depot_forward_state", "state" => state).set(value);
    }
}

/// The store's size and its file system's room. A failure (the directory gone) leaves the last
/// figures: the scrape itself must not fail over it.
fn record_disk(data_dir: &Path) {
    let db = data_dir.join(crate::store::DB_FILE);
    let mut wal = db.clone().into_os_string();
    wal.push("-wal");
    let size: u64 = [db.as_os_str(), wal.as_os_str()]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    metrics::gauge!("depot_store_size_bytes").set(size as f64);
    #[cfg(unix)]
    if let Ok(fs) = nix::sys::statvfs::statvfs(data_dir) {
        let block = fs.fragment_size() as f64;
        metrics::gauge!("depot_data_dir_filesystem_avail_bytes")
            .set(fs.blocks_available() as f64 * block);
        metrics::gauge!("depot_data_dir_filesystem_size_bytes").set(fs.blocks() as f64 * block);
    }
}
