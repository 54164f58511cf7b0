//! Optional bearer-token authentication (`auth_token_file`): every `/v1/*` request must carry
//! `Authorization: Bearer <token>`; `/healthz`, `/readyz` and `/metrics` stay open.
//!
//! `/metrics` stays open on purpose: it carries counts and latencies by route template (never
//! stream names, payloads or paths), and with one all-powerful token, protecting it would mean
//! handing the write token to every Prometheus that scrapes it — a worse trade than the little
//! it reveals. Put it behind the network if even that is too much.
//!
//! The token is read once at start, compared in constant time, and never logged: its `Debug` is
//! redacted and no log line carries request headers.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// Shortest token accepted: 16 characters (128 bits as hex would be 32).
pub const MIN_TOKEN_LEN: usize = 16;

/// What to do about a bad token file.
const REMEDY: &str = "put a random token in it, e.g. `openssl rand -hex 32 > FILE; chmod 600 FILE`";

/// Why the auth token file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// It cannot be read.
    #[error(
        "cannot read the auth token file {} (config key auth_token_file): {source}; {REMEDY}",
        path.display()
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// What it holds is not a usable token.
    #[error(
        "the auth token file {} (config key auth_token_file) {problem}; {REMEDY}",
        path.display()
    )]
    Token {
        /// The file.
        path: PathBuf,
        /// What is wrong with the token.
        problem: TokenError,
    },
}

/// What is wrong with a token's text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Shorter than [`MIN_TOKEN_LEN`].
    #[error("holds a token of {0} characters; at least {MIN_TOKEN_LEN} are required")]
    TooShort(usize),
    /// Not visible ASCII.
    #[error("holds characters other than visible ASCII (a bearer token travels in a header)")]
    NotVisibleAscii,
}

/// The bearer token every `/v1/*` request must present.
#[derive(Clone)]
pub struct AuthToken(Arc<[u8]>);

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

impl AuthToken {
    /// Reads the token from `path`: the file's text without surrounding whitespace, at least
    /// [`MIN_TOKEN_LEN`] visible ASCII characters. Warns (without refusing) when the file is
    /// readable by others than its owner.
    pub fn load(path: &Path) -> Result<AuthToken, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let token = AuthToken::new(text.trim()).map_err(|problem| AuthError::Token {
            path: path.to_path_buf(),
            problem,
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(
                    file = %path.display(),
                    mode = format!("{:o}", meta.permissions().mode() & 0o777),
                    "the auth token file is readable by other users; chmod 600 it"
                );
            }
        }
        Ok(token)
    }

    /// A token from its text; `Err` says what is wrong with it.
    pub fn new(text: &str) -> Result<AuthToken, TokenError> {
        if text.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort(text.len()));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::NotVisibleAscii);
        }
        Ok(AuthToken(Arc::from(text.as_bytes())))
    }

    /// Whether `presented` is the token. Takes the same time whatever `presented` holds (it
    /// depends only on the token's length).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = &self.0;
        let mut diff = (expected.len() ^ presented.len()) as u64;
        for (i, &e) in expected.iter().enumerate() {
            let p = presented.get(i).copied().unwrap_or(0);
            diff |= u64::from(e ^ p);
        }
        std::hint::black_box(diff) == 0
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Missing,
    Invalid,
}

/// Reads `Authorization: Bearer <token>` and checks it.
fn check(token: &AuthToken, request: &Request) -> Result<(), Refusal> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(Refusal::Missing)?;
    let value = value.as_bytes();
    let (scheme, rest) = value
        .iter()
        .position(|&b| b == b' ')
        .map(|at| value.split_at(at))
        .ok_or(Refusal::Invalid)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(Refusal::Invalid);
    }
    let presented = rest.trim_ascii();
    if token.matches(presented) {
        Ok(())
    } else {
        Err(Refusal::Invalid)
    }
}

/// The middleware: passes requests that carry the token, answers `401 unauthorized` (with
/// `WWW-Authenticate: Bearer`) to the others before their body is read.
pub async fn require_token(
    State(token): State<AuthToken>,
    request: Request,
    next: Next,
) -> Response {
    match check(&token, &request) {
        Ok(()) => next.run(request).await,
        Err(refusal) => unauthorized(refusal),
    }
}

fn unauthorized(refusal: Refusal) -> Response {
    let (message, challenge) = match refusal {
        Refusal::Missing => (
            "this depot requires a bearer token: send `Authorization: Bearer <token>`",
            r#"Bearer realm="depot""#,
        ),
        Refusal::Invalid => (
            "the bearer token is not valid for this depot",
            r#"Bearer realm="depot", error="invalid_token""#,
        ),
    };
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(auth: Option<&[u8]>) -> Request {
        let mut builder = Request::builder().uri("/v1/status");
        if let Some(value) = auth {
            builder = builder.header(
                header::AUTHORIZATION,
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        builder.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn only_the_exact_token_passes() {
        let token = AuthToken::new("0123456789abcdef-token").unwrap();
        assert_eq!(
            check(&token, &request(Some(b"Bearer 0123456789abcdef-token"))),
            Ok(())
        );
        assert_eq!(
            check(&token, &request(Some(b"bearer  0123456789abcdef-token "))),
            Ok(())
        );
        assert_eq!(check(&token, &request(None)), Err(Refusal::Missing));
        for bad in [
            &b"Bearer 0123456789abcdef-toke"[..],
            b"Bearer 0123456789abcdef-tokenX",
            b"Bearer 0123456789abcdef-tokeN",
            b"Basic 0123456789abcdef-token",
            b"0123456789abcdef-token",
            b"Bearer",
            b"Bearer ",
            b"Bearer \xff\xfe",
        ] {
            assert_eq!(
                check(&token, &request(Some(bad))),
                Err(Refusal::Invalid),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn weak_or_unsendable_tokens_are_refused_and_debug_is_redacted() {
        assert!(AuthToken::new("short").is_err());
        assert!(AuthToken::new("has a space in the middle").is_err());
        assert!(AuthToken::new("ünïcödé-töken-long-enough").is_err());
        let token = AuthToken::new("s3cret-s3cret-s3cret").unwrap();
        assert!(!format!("{token:?}").contains("s3cret"));
    }
}
