//! The route handlers.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

use super::input::{check_stream_name, idempotency_key, split_records};
use super::{ApiError, AppState};
use crate::store::{AppendKind, AppendRequest, UnixMillis};

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: `200` while serving, `503` from the moment the drain starts.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.is_draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "draining" })),
        )
            .into_response()
    } else {
        Json(json!({ "status": "ready" })).into_response()
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let stats = state.committer.stats();
    metrics::gauge!("depot_commit_queue_depth").set((stats.queued + stats.in_flight) as f64);
    crate::metrics::refresh(&state);
    if state.forward.get().is_some()
        && let Ok(backlog) = state.read(|r| r.forward_backlog()).await
    {
        crate::forward::record_backlog(&backlog);
    }
    let text = state
        .metrics
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `GET /v1/status`.
pub async fn status(
    State(state): State<Arc<AppState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let records = state.read(|r| r.total_records()).await?;
    let forward = match state.forward.get() {
        Some(f) => {
            let backlog = state.read(|r| r.forward_backlog()).await.ok();
            f.status_json(backlog)
        }
        None => json!({ "enabled": false }),
    };
    let stats = state.committer.stats();
    Ok(Json(json!({
        "state": if state.is_draining() { "draining" } else { "serving" },
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "listen": state.settings.listen.to_string(),
        "data_dir": state.settings.data_dir.display().to_string(),
        "uptime_secs": state.started.elapsed().as_secs(),
        "started_at_ms": UnixMillis::from(state.started_at).0,
        "records": records,
        "commit": {
            "queued": stats.queued,
            "commits": stats.commits,
            "committed_requests": stats.committed_items,
            "poisoned": stats.poisoned,
        },
        "recovery": state.recovery,
        "last_shutdown": state.last_shutdown,
        "forward": forward,
    })))
}

/// `GET /v1/streams`.
pub async fn streams(
    State(state): State<Arc<AppState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let streams = state.read(|r| r.streams()).await?;
    let streams: Vec<_> = streams
        .into_iter()
        .map(|s| json!({ "name": s.name, "records": s.records, "last_seq": s.last_seq }))
        .collect();
    Ok(Json(json!({ "streams": streams })))
}

/// Query of `GET /v1/streams/{stream}/records`.
#[derive(Debug, Deserialize)]
pub struct ReadQuery {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct OutRecord {
    seq: u64,
    received_at_ms: i64,
    payload: Box<RawValue>,
}

/// The body of a read. A typed struct, not `json!`: `json!` turns each `RawValue` into a
/// `serde_json::Value`, which re-encodes the record (keys sorted, duplicates dropped, numbers
/// rounded to `f64`) and panics on a number `f64` cannot hold (`1e400`).
#[derive(Debug, Serialize)]
pub struct ReadPage {
    stream: String,
    records: Vec<OutRecord>,
    next_after: u64,
}

/// `GET /v1/streams/{stream}/records?after=SEQ&limit=N`.
pub async fn read_records(
    State(state): State<Arc<AppState>>,
    Path(stream): Path<String>,
    query: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ReadPage>, ApiError> {
    check_stream_name(&stream)?;
    let Query(query) = query.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_query",
            format!("{e}; use ?after=<seq>&limit=<n> with whole numbers"),
        )
    })?;
    let max = state.settings.max_read_limit;
    let limit = query.limit.unwrap_or(100.min(max));
    if limit == 0 || limit > max {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_query",
            format!("limit must be between 1 and {max}"),
        ));
    }
    let after = query.after;
    let name = stream.clone();
    // A page ends at `max_page_bytes` of payloads (a larger record comes alone): `next_after` says
    // where the next one starts.
    let max_bytes = state.settings.max_page_bytes;
    let records = state
        .read(move |r| r.read_page(&name, after, limit, max_bytes))
        .await?;
    let next_after = records.last().map(|r| r.seq).unwrap_or(after);
    let records: Vec<OutRecord> = records
        .into_iter()
        .map(|r| OutRecord {
            seq: r.seq,
            received_at_ms: r.received_at.0,
            // Stored payloads were validated as JSON when they were appended.
            payload: RawValue::from_string(r.payload)
                .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("valid JSON")),
        })
        .collect();
    Ok(Json(ReadPage {
        stream,
        records,
        next_after,
    }))
}

/// `POST /v1/streams/{stream}/records`: one JSON value, or an array of them. `201` only once the
/// records are durable.
pub async fn append(
    State(state): State<Arc<AppState>>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if state.is_draining() {
        return Err(ApiError::draining());
    }
    check_stream_name(&stream)?;
    let idempotency_key = idempotency_key(&headers)?;
    let bytes = read_body(body, state.settings.max_body_bytes).await?;
    let payloads = split_records(&bytes, state.settings.max_records_per_request)?;
    let count = payloads.len();
    let request = AppendRequest {
        stream: stream.clone(),
        payloads,
        idempotency_key,
        received_at: UnixMillis::now(),
    };
    let appended = match state.committer.submit(request).await {
        Ok(Ok(appended)) => appended,
        Ok(Err(rejected)) => return Err(ApiError::from_rejected(&rejected)),
        Err(e) => {
            tracing::warn!(error = %e, "append not stored");
            return Err(ApiError::from_commit(&e));
        }
    };
    let replayed = appended.kind == AppendKind::Replayed;
    if !replayed {
        metrics::counter!("depot_records_stored_total").increment(count as u64);
    }
    // A replay answers exactly as the original did: 201 with the original sequence numbers.
    Ok((
        StatusCode::CREATED,
        Json(Appended {
            count: appended.last + 1 - appended.first,
            first_seq: appended.first,
            last_seq: appended.last,
            replayed,
            stream: &stream,
        }),
    )
        .into_response())
}

/// The `201` body of an append. Serialized straight from this struct (no `serde_json::Value`
/// map to build per request); the fields are in the order `json!` wrote them — alphabetical —
/// so the bytes are the same as before.
#[derive(Serialize)]
struct Appended<'a> {
    count: u64,
    first_seq: u64,
    last_seq: u64,
    replayed: bool,
    stream: &'a str,
}

/// Any other path.
pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see docs/API.md",
    )
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok(bytes),
        Err(e) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = source {
                if s.is::<http_body_util::LengthLimitError>() {
                    return Err(ApiError::body_too_large(limit));
                }
                source = s.source();
            }
            Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "body_read_failed",
                format!("could not read the request body ({e}); send it again"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_append_body_has_the_bytes_json_macro_wrote() {
        let body = serde_json::to_string(&Appended {
            count: 2,
            first_seq: 7,
            last_seq: 8,
            replayed: false,
            stream: "s-1",
        })
        .unwrap();
        let before = json!({
            "stream": "s-1",
            "first_seq": 7,
            "last_seq": 8,
            "count": 2,
            "replayed": false,
        })
        .to_string();
        assert_eq!(body, before);
    }
}
