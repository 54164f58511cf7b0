//! [`Target`]: the `forward_to` connection string, its TLS mode, and a form safe to show.
//!
//! Both of libpq's forms are accepted: a URL (`postgres://user:pass@host:5432/db?sslmode=require`)
//! and key/value pairs (`host=db user=depot password='s e c' sslmode=verify-full`). tokio-postgres
//! parses everything but the TLS settings it does not know (`sslmode=verify-ca|verify-full`,
//! `sslrootcert`); those are taken out here first and applied to the TLS connector, with libpq's
//! meanings.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use postgres_native_tls::MakeTlsConnector;
use serde::{Deserialize, Serialize};
use tokio_postgres::config::{Host, SslMode};

/// The `forward_to` setting as written: a secret (it may hold a password), so `Debug` shows only
/// the [`Target::redacted`] form.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct ForwardTo(pub String);

impl fmt::Debug for ForwardTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Target::parse(&self.0) {
            Ok(target) => write!(f, "ForwardTo({})", target.redacted()),
            Err(_) => f.write_str("ForwardTo(<unparsable>)"),
        }
    }
}

/// Why a `forward_to` cannot be used. The message never repeats the connection string (it may
/// hold a password).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// The text does not parse (libpq's syntax, or tokio-postgres's).
    #[error("{problem}")]
    Syntax {
        /// What is wrong, and where.
        problem: String,
    },
    /// tokio-postgres does not accept it.
    #[error("not a PostgreSQL connection string: {source}")]
    Postgres {
        /// tokio-postgres's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A setting it must have is missing.
    #[error("the connection string names no {what}")]
    Missing {
        /// What, and how to add it.
        what: &'static str,
    },
    /// `sslrootcert` cannot be read.
    #[error("cannot read sslrootcert {}: {source}", path.display())]
    RootCert {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `sslrootcert` does not hold a PEM certificate, or TLS cannot be set up.
    #[error("{what}: {source}")]
    Tls {
        /// What depot was doing.
        what: String,
        /// native-tls's error.
        #[source]
        source: native_tls::Error,
    },
}

fn syntax(problem: impl Into<String>) -> TargetError {
    TargetError::Syntax {
        problem: problem.into(),
    }
}

/// How the connection is protected: libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// No TLS.
    Disable,
    /// TLS if the server offers it (`allow` and `prefer`, libpq's default); the certificate is
    /// not checked unless `sslrootcert` is given.
    Prefer,
    /// TLS or no connection; the certificate is not checked unless `sslrootcert` is given.
    Require,
    /// TLS, and the server's certificate must chain to a trusted root (the system's, or
    /// `sslrootcert`); the host name is not checked.
    VerifyCa,
    /// TLS, a trusted certificate, and the host name must match it. Use this across a network.
    VerifyFull,
}

impl TlsMode {
    fn parse(value: &str) -> Result<TlsMode, TargetError> {
        Ok(match value {
            "disable" => TlsMode::Disable,
            "allow" | "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            other => {
                return Err(syntax(format!(
                    "sslmode={other:?} is not one of disable, allow, prefer, require, verify-ca, \
                     verify-full"
                )));
            }
        })
    }

    /// The name libpq uses.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }
}

/// A parsed `forward_to`.
#[derive(Clone)]
pub struct Target {
    config: tokio_postgres::Config,
    tls: TlsMode,
    root_cert: Option<PathBuf>,
    redacted: String,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Target").field(&self.redacted).finish()
    }
}

impl Target {
    /// Parses a URL or key/value connection string. The error says what is wrong without
    /// repeating the string (it may hold a password).
    pub fn parse(text: &str) -> Result<Target, TargetError> {
        let text = text.trim();
        let is_url = text.starts_with("postgres://") || text.starts_with("postgresql://");
        let (rest, tls, root_cert) = if is_url {
            take_url_tls(text)?
        } else {
            take_key_value_tls(text)?
        };
        let mut config = tokio_postgres::Config::from_str(&rest)
            .map_err(|source| TargetError::Postgres { source })?;
        if config.get_user().is_none() {
            return Err(TargetError::Missing {
                what: "user (add user=NAME, or NAME@ in a URL)",
            });
        }
        if config.get_hosts().is_empty() {
            return Err(TargetError::Missing {
                what: "host (add host=NAME, or @HOST in a URL)",
            });
        }
        config.ssl_mode(match tls {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
        });
        let redacted = redact(&config, tls);
        Ok(Target {
            config,
            tls,
            root_cert,
            redacted,
        })
    }

    /// The target without its password: `postgres://user@host:port/db?sslmode=…`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The TLS mode.
    pub fn tls_mode(&self) -> TlsMode {
        self.tls
    }

    /// The connection settings for tokio-postgres (password included).
    pub(super) fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The TLS connector for this target's mode (reads `sslrootcert`, if given).
    pub fn connector(&self) -> Result<MakeTlsConnector, TargetError> {
        let mut builder = native_tls::TlsConnector::builder();
        if let Some(path) = &self.root_cert {
            let pem = std::fs::read(path).map_err(|source| TargetError::RootCert {
                path: path.clone(),
                source,
            })?;
            let cert =
                native_tls::Certificate::from_pem(&pem).map_err(|source| TargetError::Tls {
                    what: format!("sslrootcert {} is not a PEM certificate", path.display()),
                    source,
                })?;
            builder.add_root_certificate(cert);
            builder.disable_built_in_roots(true);
        }
        match (self.tls, &self.root_cert) {
            (TlsMode::VerifyFull, _) => {}
            // libpq: with a root certificate, `require` (and `prefer`) check the chain.
            (TlsMode::VerifyCa, _) | (TlsMode::Require | TlsMode::Prefer, Some(_)) => {
                builder.danger_accept_invalid_hostnames(true);
            }
            (TlsMode::Require | TlsMode::Prefer | TlsMode::Disable, None) => {
                builder.danger_accept_invalid_certs(true);
            }
            (TlsMode::Disable, Some(_)) => {}
        }
        let connector = builder.build().map_err(|source| TargetError::Tls {
            what: "cannot set up TLS".into(),
            source,
        })?;
        Ok(MakeTlsConnector::new(connector))
    }
}

/// Takes `sslmode` and `sslrootcert` out of a URL's query.
fn take_url_tls(url: &str) -> Result<(String, TlsMode, Option<PathBuf>), TargetError> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut tls = TlsMode::Prefer;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match percent_decode(key)?.as_str() {
            "sslmode" => tls = TlsMode::parse(&percent_decode(value)?)?,
            "sslrootcert" => root_cert = Some(PathBuf::from(percent_decode(value)?)),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, tls, root_cert))
}

fn percent_decode(text: &str) -> Result<String, TargetError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| syntax("a bad %-escape in the connection URL"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| syntax("the connection URL is not UTF-8 once decoded"))
}

/// Takes `sslmode` and `sslrootcert` out of a key/value string, re-quoting the rest.
fn take_key_value_tls(text: &str) -> Result<(String, TlsMode, Option<PathBuf>), TargetError> {
    let mut tls = TlsMode::Prefer;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for (key, value) in key_values(text)? {
        match key.as_str() {
            "sslmode" => tls = TlsMode::parse(&value)?,
            "sslrootcert" => root_cert = Some(PathBuf::from(value)),
            _ => kept.push(format!(
                "{key}='{}'",
                value.replace('\\', "\\\\").replace('\'', "\\'")
            )),
        }
    }
    Ok((kept.join(" "), tls, root_cert))
}

/// libpq's key/value syntax: `key = value` pairs separated by spaces; values may be single-quoted,
/// with `\` escaping the next character.
fn key_values(text: &str) -> Result<Vec<(String, String)>, TargetError> {
    let mut chars = text.chars().peekable();
    let mut pairs = Vec::new();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(syntax(format!(
                "expected `=` after `{key}` in the connection string"
            )));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => {
                        return Err(syntax(format!(
                            "unterminated quote in the value of `{key}`"
                        )));
                    }
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

fn redact(config: &tokio_postgres::Config, tls: TlsMode) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) if name.contains(':') => format!("[{name}]:{port}"),
                Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect();
    format!(
        "postgres://{}@{}/{}?sslmode={}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config
            .get_dbname()
            .unwrap_or(config.get_user().unwrap_or("")),
        tls.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password_when_shown() {
        let t = Target::parse("postgres://depot:s3cret@db.example:6432/events?sslmode=verify-full")
            .unwrap();
        assert_eq!(
            t.redacted(),
            "postgres://depot@db.example:6432/events?sslmode=verify-full"
        );
        assert_eq!(t.tls_mode(), TlsMode::VerifyFull);
        assert_eq!(t.config().get_password(), Some(&b"s3cret"[..]));
        assert_eq!(t.config().get_ssl_mode(), SslMode::Require);
        assert!(!format!("{t:?}").contains("s3cret"));
        assert!(!format!("{:?}", ForwardTo("postgres://u:s3cret@h/d".into())).contains("s3cret"));
    }

    #[test]
    fn key_value_strings_keep_quoted_values() {
        let t = Target::parse(
            "host = 127.0.0.1 port=5433 user=depot password='a \\'b\\' c' dbname=d sslmode=disable",
        )
        .unwrap();
        assert_eq!(t.config().get_password(), Some(&b"a 'b' c"[..]));
        assert_eq!(t.tls_mode(), TlsMode::Disable);
        assert_eq!(
            t.redacted(),
            "postgres://depot@127.0.0.1:5433/d?sslmode=disable"
        );
    }

    #[test]
    fn defaults_and_mistakes() {
        let t = Target::parse("postgresql://u@h").unwrap();
        assert_eq!(t.tls_mode(), TlsMode::Prefer);
        assert_eq!(t.redacted(), "postgres://u@h:5432/u?sslmode=prefer");
        let t = Target::parse(
            "postgres://u@h/d?sslrootcert=%2Fetc%2Fca.pem&sslmode=verify-ca&application_name=x",
        )
        .unwrap();
        assert_eq!(
            t.root_cert.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
        assert_eq!(t.config().get_application_name(), Some("x"));
        assert!(
            Target::parse("postgres://u@h/d?sslmode=sometimes")
                .unwrap_err()
                .to_string()
                .contains("sometimes")
        );
        assert!(
            Target::parse("postgres://h/d")
                .unwrap_err()
                .to_string()
                .contains("no user")
        );
        let e = Target::parse("host=h user=u password='open")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unterminated") && !e.contains("open"), "{e}");
        assert!(
            Target::parse("postgres://u:pw@h/d?nonsense=1")
                .unwrap_err()
                .to_string()
                .len()
                > 10
        );
    }

    #[test]
    fn connectors_build_for_every_mode() {
        for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            let t = Target::parse(&format!("postgres://u@h/d?sslmode={mode}")).unwrap();
            assert!(t.connector().is_ok(), "{mode}");
        }
        let t = Target::parse("postgres://u@h/d?sslrootcert=/nonexistent/ca.pem").unwrap();
        let Err(e) = t.connector() else {
            panic!("a missing sslrootcert was accepted")
        };
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        // The OS's reason stays reachable as the source, and is said once in the chain.
        let source = std::error::Error::source(&e).expect("the io::Error as the source");
        assert!(
            source.downcast_ref::<std::io::Error>().is_some(),
            "{source:?}"
        );
        let chain = winddown::error_chain(&e);
        assert_eq!(chain, e.to_string(), "the cause is said once");
    }
}
