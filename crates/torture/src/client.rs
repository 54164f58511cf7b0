//! A thin HTTP client for depot's API: post records, read a stream page by page, and send any
//! request a test needs. Every answer is classified by what it says about the records' fate.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, HeaderValue};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::Client as Pool;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::value::RawValue;

/// An HTTP client bound to one depot (`--target`). Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Client {
    pool: Pool<HttpConnector, Full<Bytes>>,
    base: String,
    token: Option<HeaderValue>,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of debug output.
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("auth", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The `error.code` of a depot error body, or `""`.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The connection could not be made: the request was never sent.
    Connect(String),
    /// No answer within the client's timeout: the request may have been processed.
    Timeout,
    /// The connection broke after the request may have been sent.
    Broken(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "cannot connect: {e}"),
            SendError::Timeout => write!(f, "no response within the timeout"),
            SendError::Broken(e) => write!(f, "connection broken: {e}"),
        }
    }
}

impl std::error::Error for SendError {}

/// What a `POST …/records` tells about the records it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostOutcome {
    /// `201`: durable, with these sequence numbers.
    Created {
        /// First sequence number.
        first: u64,
        /// Last sequence number.
        last: u64,
        /// Whether depot answered from an earlier request with the same idempotency key.
        replayed: bool,
    },
    /// An answer that says nothing was stored (`503` draining, overloaded, disk_full, read_only),
    /// or a connection that was never made.
    NotStored(String),
    /// Anything after which the records may or may not be stored: a broken connection, a
    /// timeout, a `408`, a `5xx` that does not promise either way.
    Unknown(String),
    /// A `4xx` that the torture client should never provoke: a bug on one side or the other.
    Rejected(String),
}

/// `503` codes whose documented meaning is "nothing of this request was stored".
const NOT_STORED_CODES: &[&str] = &["draining", "overloaded", "disk_full", "read_only"];

/// One stored record as read back: its sequence number and its text exactly as served.
pub type StoredRecord = (u64, String);

impl Client {
    /// A client for the depot at `target` (`http://127.0.0.1:8080`), sending `token` as a bearer
    /// token if given, giving each request `timeout`.
    pub fn new(target: &str, token: Option<&str>, timeout: Duration) -> Result<Client, String> {
        let base = target.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") {
            return Err(format!(
                "--target must be an http:// URL (depot serves plain HTTP), not {target:?}"
            ));
        }
        let token = token
            .map(|t| {
                HeaderValue::from_str(&format!("Bearer {t}"))
                    .map(|mut v| {
                        v.set_sensitive(true);
                        v
                    })
                    .map_err(|_| "the token holds characters a header cannot carry".to_owned())
            })
            .transpose()?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let pool = Pool::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(2))
            .build(connector);
        Ok(Client {
            pool,
            base,
            token,
            timeout,
        })
    }

    /// The target URL.
    pub fn target(&self) -> &str {
        &self.base
    }

    /// Sends `method path` with `headers` and `body` (and the bearer token, if any) and reads the
    /// whole response.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Reply, SendError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, token.clone());
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(body.into()))
            .map_err(|e| SendError::Connect(format!("cannot build the request: {e}")))?;
        let exchange = async {
            let response = self.pool.request(request).await.map_err(|e| {
                if e.is_connect() {
                    SendError::Connect(chain(&e))
                } else {
                    SendError::Broken(chain(&e))
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| SendError::Broken(chain(&e)))?
                .to_bytes();
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(SendError::Timeout))
    }

    /// Posts `body` (one JSON value or an array) to `stream` with `key` as its Idempotency-Key,
    /// and classifies the answer.
    pub async fn post(&self, stream: &str, key: &str, body: Bytes) -> PostOutcome {
        let path = format!("/v1/streams/{stream}/records");
        let reply = match self
            .send(
                Method::POST,
                &path,
                &[
                    ("content-type", "application/json"),
                    ("idempotency-key", key),
                ],
                body,
            )
            .await
        {
            Ok(reply) => reply,
            Err(SendError::Connect(e)) => return PostOutcome::NotStored(format!("connect: {e}")),
            Err(e @ SendError::Timeout) => return PostOutcome::Unknown(e.to_string()),
            Err(SendError::Broken(e)) => return PostOutcome::Unknown(format!("broken: {e}")),
        };
        #[derive(Deserialize)]
        struct Created {
            first_seq: u64,
            last_seq: u64,
            replayed: bool,
        }
        let status = reply.status;
        if status == StatusCode::CREATED {
            return match serde_json::from_slice::<Created>(&reply.body) {
                Ok(c) => PostOutcome::Created {
                    first: c.first_seq,
                    last: c.last_seq,
                    replayed: c.replayed,
                },
                Err(e) => PostOutcome::Unknown(format!("201 with an unreadable body: {e}")),
            };
        }
        let code = reply.error_code();
        let label = format!("{} {code}", status.as_u16());
        if status == StatusCode::SERVICE_UNAVAILABLE && NOT_STORED_CODES.contains(&code.as_str()) {
            PostOutcome::NotStored(label)
        } else if status.is_client_error() && status != StatusCode::REQUEST_TIMEOUT {
            PostOutcome::Rejected(format!(
                "{label}: {}",
                reply.json()["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
            ))
        } else {
            PostOutcome::Unknown(label)
        }
    }

    /// Reads up to `limit` records of `stream` after sequence number `after`, each payload's text
    /// exactly as served.
    pub async fn read_page(
        &self,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, String> {
        #[derive(Deserialize)]
        struct Page {
            records: Vec<Rec>,
        }
        #[derive(Deserialize)]
        struct Rec {
            seq: u64,
            payload: Box<RawValue>,
        }
        let path = format!("/v1/streams/{stream}/records?after={after}&limit={limit}");
        let reply = self
            .send(Method::GET, &path, &[], Bytes::new())
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        if reply.status != StatusCode::OK {
            return Err(format!(
                "GET {path}: {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ));
        }
        let page: Page = serde_json::from_slice(&reply.body)
            .map_err(|e| format!("GET {path}: unreadable body: {e}"))?;
        Ok(page
            .records
            .into_iter()
            .map(|r| (r.seq, r.payload.get().to_owned()))
            .collect())
    }

    /// Reads every record of `stream`, paging with `after` until a page comes back empty (a page
    /// may hold fewer than `limit` records with more to come: depot ends it at `max_page_bytes`).
    pub async fn read_stream(&self, stream: &str) -> Result<Vec<StoredRecord>, String> {
        const PAGE: usize = 1000;
        let mut all: Vec<StoredRecord> = Vec::new();
        loop {
            let after = all.last().map_or(0, |r| r.0);
            let page = self.read_page(stream, after, PAGE).await?;
            let done = page.is_empty();
            if let Some(&(seq, _)) = page.first()
                && seq <= after
            {
                return Err(format!(
                    "GET {stream} after={after} returned sequence {seq}, not above {after}"
                ));
            }
            all.extend(page);
            if done {
                return Ok(all);
            }
        }
    }

    /// `GET /v1/status`, as JSON.
    pub async fn status(&self) -> Result<serde_json::Value, String> {
        let reply = self
            .send(Method::GET, "/v1/status", &[], Bytes::new())
            .await
            .map_err(|e| format!("GET /v1/status: {e}"))?;
        if reply.status != StatusCode::OK {
            return Err(format!("GET /v1/status: {}", reply.status));
        }
        serde_json::from_slice(&reply.body).map_err(|e| format!("GET /v1/status: {e}"))
    }

    /// `GET /readyz` answered `200`.
    pub async fn is_ready(&self) -> bool {
        matches!(
            self.send(Method::GET, "/readyz", &[], Bytes::new()).await,
            Ok(r) if r.status == StatusCode::OK
        )
    }
}

pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
