//! API errors: a stable `code`, a message a person can act on, and the right status.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::{Rejected, StoreError};
use winddown::commit::CommitError;

/// An error response: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_secs: Option<u32>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    /// An error with `status`, a stable `code` and a `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// `503 draining`: depot is stopping; try another instance or retry after the restart.
    pub fn draining() -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "depot is shutting down and accepts no new records; retry shortly (it was not stored)",
        )
        .retry_after(5)
    }

    /// `413 body_too_large`.
    pub fn body_too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body exceeds {limit} bytes; split the records over several requests"),
        )
    }

    /// Maps a store or committer failure: nothing of the request was acknowledged.
    pub fn from_commit(e: &CommitError<StoreError>) -> Self {
        match e {
            CommitError::ShuttingDown => ApiError::draining(),
            CommitError::QueueFull { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                format!("{e}; the request was not stored"),
            )
            .retry_after(1),
            CommitError::Commit { source, .. } => match &**source {
                StoreError::DiskFull { .. } => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "disk_full",
                    source.to_string(),
                )
                .retry_after(30),
                StoreError::ReadOnly { .. } => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "read_only",
                    source.to_string(),
                )
                .retry_after(30),
                // An I/O error while committing (a failed fsync) leaves unknown what reached
                // the disk: the records may be there after the restart.
                StoreError::Io { .. } => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_failed",
                    format!(
                        "{source}; the request may have been stored: retry it with the same \
                         Idempotency-Key once depot has restarted"
                    ),
                ),
                other => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_failed",
                    format!("{other}; the request was not stored"),
                ),
            },
            CommitError::Poisoned { .. } | CommitError::SinkPanicked { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("{e}; nothing of this request was stored"),
            ),
            other => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!(
                    "{other}; the request may not have been stored, retry with the same Idempotency-Key"
                ),
            ),
        }
    }

    /// Maps a per-request refusal from the store.
    pub fn from_rejected(r: &Rejected) -> Self {
        match r {
            Rejected::IdempotencyConflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, "idempotency_conflict", r.to_string())
            }
            Rejected::Empty => {
                ApiError::new(StatusCode::BAD_REQUEST, "empty_request", r.to_string())
            }
        }
    }

    /// Maps a read failure.
    pub fn from_read(e: &StoreError) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        )
    }
}

impl From<super::input::InputError> for ApiError {
    fn from(e: super::input::InputError) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, e.code, e.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&Body {
            error: Inner {
                code: self.code,
                message: &self.message,
            },
        })
        .unwrap_or_default();
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
