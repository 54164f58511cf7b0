//! The Prometheus exporter behind `GET /metrics`.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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
    metrics::describe_counter!(
        "depot_http_requests_total",
        "HTTP requests by route, method and status"
    );
    metrics::describe_histogram!(
        "depot_http_request_duration_seconds",
        "HTTP request latency"
    );
    metrics::describe_gauge!("depot_http_in_flight", "HTTP requests being served");
    metrics::describe_counter!("depot_records_stored_total", "Records made durable");
    metrics::describe_gauge!(
        "depot_commit_queue_depth",
        "Append requests queued or being committed"
    );
    metrics::describe_gauge!(
        "depot_last_shutdown_phase_seconds",
        "Duration of each phase of the previous shutdown"
    );
}

/// Publishes the previous shutdown's phase durations.
pub fn record_last_shutdown(report: Option<&serde_json::Value>) {
    let Some(phases) = report.and_then(|r| r["phases"].as_array()) else {
        return;
    };
    for phase in phases {
        if let (Some(name), Some(ms)) = (phase["name"].as_str(), phase["duration_ms"].as_u64()) {
            metrics::gauge!("depot_last_shutdown_phase_seconds", "phase" => name.to_owned())
                .set(ms as f64 / 1000.0);
        }
    }
}
