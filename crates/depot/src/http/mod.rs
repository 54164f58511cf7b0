//! The HTTP API (see `docs/API.md`): records in and out, health, readiness, metrics, status.

pub mod auth;
mod error;
pub mod handlers;
pub mod input;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tracing::Instrument;

pub use auth::{AuthError, AuthToken, TokenError};
pub use error::ApiError;
pub use server::{Connections, Server};

use crate::store::{Readers, StoreError, Writer};
use winddown::commit::GroupCommit;

/// The settings the HTTP layer uses (built from depot's config by the app; the HTTP layer does
/// not see the rest of it).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The address depot listens on (shown in `/v1/status`).
    pub listen: SocketAddr,
    /// The data directory (shown in `/v1/status`).
    pub data_dir: PathBuf,
    /// Largest append body.
    pub max_body_bytes: usize,
    /// Most records in one append.
    pub max_records_per_request: usize,
    /// Largest `limit` a read may ask for.
    pub max_read_limit: usize,
    /// Most payload bytes in one read's page.
    pub max_page_bytes: usize,
    /// How long one request may take.
    pub request_timeout: Duration,
}

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The group committer in front of the store's writer.
    pub committer: GroupCommit<Writer>,
    /// Read-only connections.
    pub readers: Readers,
    /// The settings in force.
    pub settings: Settings,
    /// Set when the drain starts: `/readyz` answers `503`, appends are refused.
    pub draining: AtomicBool,
    /// The Prometheus exporter, if this process could install it.
    pub metrics: Option<PrometheusHandle>,
    /// When depot started.
    pub started: Instant,
    /// When depot started (wall clock).
    pub started_at: SystemTime,
    /// What opening the store found, as JSON.
    pub recovery: serde_json::Value,
    /// The last shutdown's report, as JSON (from the data directory).
    pub last_shutdown: Option<serde_json::Value>,
    /// The bearer token `/v1/*` requests must carry, if `auth_token_file` is set.
    pub auth: Option<AuthToken>,
    /// The PostgreSQL forwarder, when `forward_to` is set (for `/v1/status`).
    pub forward: std::sync::OnceLock<Arc<crate::forward::Forwarder>>,
    next_request_id: AtomicU64,
    request_metrics: RequestMetrics,
}

impl AppState {
    /// The shared state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        committer: GroupCommit<Writer>,
        readers: Readers,
        settings: Settings,
        metrics: Option<PrometheusHandle>,
        recovery: serde_json::Value,
        last_shutdown: Option<serde_json::Value>,
    ) -> Self {
        AppState {
            committer,
            readers,
            settings,
            draining: AtomicBool::new(false),
            metrics,
            started: Instant::now(),
            started_at: SystemTime::now(),
            recovery,
            last_shutdown,
            auth: None,
            forward: std::sync::OnceLock::new(),
            next_request_id: AtomicU64::new(1),
            request_metrics: RequestMetrics::new(),
        }
    }

    /// Requires `token` on every `/v1/*` request (see [`auth`]); `None` leaves them open.
    #[must_use]
    pub fn with_auth(mut self, token: Option<AuthToken>) -> Self {
        self.auth = token;
        self
    }

    /// Whether the drain has started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Runs a blocking read on the blocking pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&Readers) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let readers = self.readers.clone();
        match tokio::task::spawn_blocking(move || f(&readers)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ApiError::from_read(&e)),
            Err(e) => Err(ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the read failed: {e}"),
            )),
        }
    }
}

/// The router with every route and the per-request layers (request id, logs, metrics, timeout,
/// and the bearer token on `/v1/*` when one is configured).
pub fn router(state: Arc<AppState>) -> Router {
    let timeout = state.settings.request_timeout;
    let mut api = Router::new()
        .route("/v1/status", get(handlers::status))
        .route("/v1/streams", get(handlers::streams))
        .route(
            "/v1/streams/{stream}/records",
            get(handlers::read_records).post(handlers::append),
        );
    if let Some(token) = state.auth.clone() {
        api = api.route_layer(middleware::from_fn_with_state(token, auth::require_token));
    }
    Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .merge(api)
        .fallback(handlers::not_found)
        // The timeout inside `observe` (the last layer is the outermost): a request the timeout
        // cuts off is still counted, logged and given its id, and `depot_http_in_flight` comes
        // back down — with the timeout outside, `observe` was dropped halfway and the gauge kept
        // every timed-out request.
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Gives every request an id (echoed as `x-request-id`) and metrics, and logs the requests that
/// failed. The per-request span (`request`, carrying the id into the handler's events) and the
/// `request done` line exist only when `debug` is enabled: at `info` a span per request cost
/// about a seventh of the CPU of an append, and the metrics count every request anyway. A
/// response of 400 or more is logged at `info` (4xx) or `warn` (5xx) with its id, at every level.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let id = state.next_request_id.fetch_add(1, Ordering::Relaxed);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        // `:stream` rather than axum's `{stream}`: braces inside label values trip simple
        // Prometheus text parsers.
        .map(|p| route_label(p.as_str()))
        .unwrap_or(std::borrow::Cow::Borrowed("unmatched"));
    let method = request.method().clone();
    let span = tracing::debug_span!("request", id, %method, route = %route);
    let start = Instant::now();
    state.request_metrics.in_flight.increment(1.0);
    let mut response = if span.is_disabled() {
        next.run(request).await
    } else {
        next.run(request).instrument(span.clone()).await
    };
    state.request_metrics.in_flight.decrement(1.0);
    let status = response.status().as_u16();
    let elapsed = start.elapsed();
    state
        .request_metrics
        .record(&route, &method, status, elapsed.as_secs_f64());
    let elapsed_us = elapsed.as_micros() as u64;
    if status >= 500 {
        tracing::warn!(id, %method, route = %route, status, elapsed_us, "request failed");
    } else if status >= 400 {
        tracing::info!(id, %method, route = %route, status, elapsed_us, "request refused");
    } else {
        span.in_scope(|| tracing::debug!(status, elapsed_us, "request done"));
    }
    response
        .headers_mut()
        .insert("x-request-id", HeaderValue::from(id));
    response
}

/// The route's label: the pattern with `{stream}` written `:stream`. Borrowed for the routes the
/// router has, so that a request does not allocate for it.
fn route_label(pattern: &str) -> std::borrow::Cow<'static, str> {
    use std::borrow::Cow;
    match pattern {
        "/v1/streams/{stream}/records" => Cow::Borrowed("/v1/streams/:stream/records"),
        "/v1/streams" => Cow::Borrowed("/v1/streams"),
        "/v1/status" => Cow::Borrowed("/v1/status"),
        "/healthz" => Cow::Borrowed("/healthz"),
        "/readyz" => Cow::Borrowed("/readyz"),
        "/metrics" => Cow::Borrowed("/metrics"),
        other => Cow::Owned(other.replace("{stream}", ":stream")),
    }
}

/// The handles of `depot_http_in_flight`, `depot_http_requests_total{route,method,status}` and
/// `depot_http_request_duration_seconds{route}`, looked up once (per label combination) instead of
/// per request: `counter!` with owned labels allocates three label strings and a key, hashes them
/// and searches the recorder's registry on every call. Created after the recorder is installed.
struct RequestMetrics {
    in_flight: metrics::Gauge,
    handles: std::sync::RwLock<Vec<RequestHandles>>,
}

struct RequestHandles {
    route: Box<str>,
    method: axum::http::Method,
    status: u16,
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

impl RequestMetrics {
    fn new() -> Self {
        RequestMetrics {
            in_flight: metrics::gauge!("depot_http_in_flight"),
            handles: std::sync::RwLock::new(Vec::new()),
        }
    }

    fn record(&self, route: &str, method: &axum::http::Method, status: u16, seconds: f64) {
        let matches =
            |h: &RequestHandles| h.status == status && h.method == method && &*h.route == route;
        {
            let handles = self.handles.read().unwrap_or_else(|e| e.into_inner());
            if let Some(h) = handles.iter().find(|h| matches(h)) {
                h.requests.increment(1);
                h.duration.record(seconds);
                return;
            }
        }
        let mut handles = self.handles.write().unwrap_or_else(|e| e.into_inner());
        if !handles.iter().any(matches) {
            // Bounded: routes are the router's patterns (or "unmatched"), methods and statuses
            // are few; past a generous cap, stop caching and pay the lookup.
            let fresh = RequestHandles {
                route: route.into(),
                method: method.clone(),
                status,
                requests: metrics::counter!("depot_http_requests_total", "route" => route.to_owned(), "method" => method.to_string(), "status" => status.to_string()),
                duration: metrics::histogram!("depot_http_request_duration_seconds", "route" => route.to_owned()),
            };
            if handles.len() < 256 {
                handles.push(fresh);
            } else {
                fresh.requests.increment(1);
                fresh.duration.record(seconds);
                return;
            }
        }
        if let Some(h) = handles.iter().find(|h| matches(h)) {
            h.requests.increment(1);
            h.duration.record(seconds);
        }
    }
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics").finish_non_exhaustive()
    }
}
