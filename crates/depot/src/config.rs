//! depot's configuration: defaults, then a TOML file, then `DEPOT_*` environment variables, then
//! command-line flags — each overriding the one before. Checked once at start, with errors that
//! name the bad key.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::forward::{ForwardTo, Retention, Settings as ForwardSettings, Target, TargetError};

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable on a terminal, JSON lines otherwise.
    Auto,
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Every setting, with its default. The TOML file uses these names; the environment uses them
/// upper-cased with a `DEPOT_` prefix (`DEPOT_MAX_BODY_BYTES=2097152`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to serve HTTP on. Loopback by default: exposing depot is a decision.
    pub listen: SocketAddr,
    /// Where the database, lock file and temp area live.
    pub data_dir: PathBuf,
    /// Log format.
    pub log_format: LogFormat,
    /// Largest request body accepted (bytes); larger gets `413`.
    pub max_body_bytes: usize,
    /// Most records in one request; more gets `400 too_many_records`.
    pub max_records_per_request: usize,
    /// Most records one read returns.
    pub max_read_limit: usize,
    /// Most payload bytes one read returns (a single larger record still comes, alone): bounds
    /// the memory a page of large records takes.
    pub max_page_bytes: usize,
    /// Most open connections; more wait in the OS backlog.
    pub max_connections: usize,
    /// Time a client gets to send its request headers.
    pub header_read_timeout_ms: u64,
    /// Time a request may take from headers to response.
    pub request_timeout_ms: u64,
    /// Time between `/readyz` turning `503` and the listener closing, for load balancers to notice
    /// (Kubernetes endpoints take a few seconds; a console needs none).
    pub unready_delay_ms: u64,
    /// Override of the SIGTERM drain budget (ms); default: winddown's (20 s).
    pub sigterm_budget_ms: Option<u64>,
    /// Most append requests queued for the group committer; more get `503 overloaded` at once.
    /// Below `max_connections`, so that sustained overload is answered with a fast `503` rather
    /// than with requests waiting in connections until they time out.
    pub commit_queue: usize,
    /// Most append requests in one commit (1 turns group commit off).
    pub commit_max_batch: usize,
    /// Durability of acknowledged writes: `full` (fsync before every acknowledgement; the only
    /// mode that keeps acknowledged records through a power loss) or `off` (SQLite
    /// `synchronous=OFF`, no fsync: a baseline for benchmarks; acknowledged records survive a
    /// crash of the process, but an OS crash or power cut may lose any record acknowledged since
    /// start and may corrupt the database; a clean shutdown syncs everything). See
    /// [`crate::store::Durability`].
    pub durability: DurabilityMode,
    /// A file holding a bearer token that every `/v1/*` request must present
    /// (`Authorization: Bearer <token>`); read once at start. Unset: no authentication, which is
    /// only reasonable on a loopback `listen` address (depot warns otherwise).
    pub auth_token_file: Option<PathBuf>,
    /// PostgreSQL to forward every record to, exactly once: a URL
    /// (`postgres://user:password@host:5432/db?sslmode=verify-full`) or libpq key/value pairs.
    /// Unset (the default): no forwarding. See docs/FORWARDING.md.
    pub forward_to: Option<ForwardTo>,
    /// Most records in one PostgreSQL transaction.
    pub forward_batch: usize,
    /// Most payload bytes in one PostgreSQL transaction (a single larger record still goes,
    /// alone): bounds the forwarder's memory and keeps a batch well under PostgreSQL's 1 GiB
    /// message limit.
    pub forward_batch_bytes: usize,
    /// Time allowed to connect to PostgreSQL (unless the connection string sets
    /// `connect_timeout`).
    pub forward_connect_timeout_ms: u64,
    /// `statement_timeout` of the forwarding session; the client gives up 2 s later.
    pub forward_statement_timeout_ms: u64,
    /// How long delivered records stay in the local store: a duration (`"7d"`, `"12h"`) or a
    /// number of records per stream (`100000`). Unset (the default): keep everything. Records
    /// not yet delivered are never deleted.
    pub retain_delivered: Option<Retention>,
    /// Where each setting came from, and what loading noticed: not a setting.
    #[serde(skip)]
    pub provenance: Provenance,
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The `--config` file.
    File,
    /// An environment variable (its name).
    Env(String),
    /// A command-line flag (its name).
    Flag(&'static str),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File => f.write_str("the config file"),
            Origin::Env(name) => write!(f, "{name}"),
            Origin::Flag(flag) => write!(f, "{flag}"),
        }
    }
}

/// What [`Config::load`] learnt besides the values: `depot install` carries into the service
/// every setting that did not come from the file, and `depot` logs the warnings once it can.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// Setting → where its value came from; a setting left at its default is absent. When
    /// several sources set it, the one that won (flag over variable over file).
    pub origins: BTreeMap<String, Origin>,
    /// `DEPOT_LOG`, the log filter, if set.
    pub log_filter: Option<String>,
    /// Things to warn about: `DEPOT_*` variables that are no setting.
    pub warnings: Vec<String>,
}

/// See [`Config::durability`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// fsync before acknowledging.
    Full,
    /// No fsync (benchmark baseline): SQLite `synchronous=OFF`.
    Off,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: default_data_dir(),
            log_format: LogFormat::Auto,
            max_body_bytes: 1 << 20,
            max_records_per_request: 1000,
            max_read_limit: 1000,
            max_page_bytes: 4 << 20,
            max_connections: 1024,
            header_read_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            unready_delay_ms: 0,
            sigterm_budget_ms: None,
            commit_queue: 512,
            commit_max_batch: 1024,
            durability: DurabilityMode::Full,
            auth_token_file: None,
            forward_to: None,
            forward_batch: 1000,
            forward_batch_bytes: 16 << 20,
            forward_connect_timeout_ms: 10_000,
            forward_statement_timeout_ms: 30_000,
            retain_delivered: None,
            provenance: Provenance::default(),
        }
    }
}

/// Where data lives when nothing says otherwise: systemd's `$STATE_DIRECTORY`, else the
/// platform's per-user data directory (`~/.local/share/depot`, `%LOCALAPPDATA%\depot`,
/// `~/Library/Application Support/depot`), else `./depot-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
        // systemd may list several, separated by ':'; the first is ours.
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        if !first.is_empty() {
            return PathBuf::from(first);
        }
    }
    dirs::data_local_dir()
        .map(|d| d.join("depot"))
        .unwrap_or_else(|| PathBuf::from("depot-data"))
}

/// A configuration that cannot be used, naming the key and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file, or an environment variable, does not fit.
    #[error("{origin}: {message}")]
    Invalid {
        /// The file or variable.
        origin: String,
        /// What is wrong (serde's message names the key).
        message: String,
    },
    /// A value is out of range.
    #[error("config key `{key}` {problem}")]
    OutOfRange {
        /// The key.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// Two settings that cannot be used together.
    #[error("config keys {keys} cannot be used together: {problem}")]
    Conflict {
        /// The keys, as written in the message.
        keys: &'static str,
        /// Why, and what to do.
        problem: String,
    },
}

/// The inclusive range of one numeric setting, checked at start. A new numeric setting adds one
/// line to [`RANGES`] and its range to docs/CONFIG.md (a test compares the two).
struct Range {
    key: &'static str,
    min: u64,
    max: u64,
    /// The value, or `None` when the setting is unset.
    get: fn(&Config) -> Option<u64>,
    /// Why the bounds are what they are, for the message.
    why: &'static str,
}

/// `usize` to `u64` (lossless on every platform depot builds for; saturates otherwise).
fn n(value: usize) -> Option<u64> {
    Some(u64::try_from(value).unwrap_or(u64::MAX))
}

const TIMEOUT: &str = "timeouts cannot be turned off";

/// Every numeric setting's range. The maxima keep each value inside what the code below it can
/// take (a `u32` queue, PostgreSQL's 2^31-1 ms timeouts, memory per request) with room to spare.
#[rustfmt::skip] // a table: one setting a line
const RANGES: &[Range] = &[
    Range { key: "max_body_bytes",               min: 1, max: 256 << 20, get: |c| n(c.max_body_bytes), why: "256 MiB: a body is held in memory while it is parsed" },
    Range { key: "max_records_per_request",      min: 1, max: 100_000,   get: |c| n(c.max_records_per_request), why: "" },
    Range { key: "max_read_limit",               min: 1, max: 100_000,   get: |c| n(c.max_read_limit), why: "" },
    Range { key: "max_page_bytes",               min: 1024, max: 1 << 30, get: |c| n(c.max_page_bytes), why: "below 1 KiB every page is one record; a page is held in memory while it is sent" },
    Range { key: "max_connections",              min: 1, max: 1 << 20,   get: |c| n(c.max_connections), why: "Linux's largest open-file limit" },
    Range { key: "header_read_timeout_ms",       min: 1, max: 3_600_000, get: |c| Some(c.header_read_timeout_ms), why: TIMEOUT },
    Range { key: "request_timeout_ms",           min: 1, max: 3_600_000, get: |c| Some(c.request_timeout_ms), why: TIMEOUT },
    Range { key: "unready_delay_ms",             min: 0, max: 600_000,   get: |c| Some(c.unready_delay_ms), why: "" },
    Range { key: "sigterm_budget_ms",            min: 1, max: 3_600_000, get: |c| c.sigterm_budget_ms, why: "" },
    Range { key: "commit_queue",                 min: 1, max: 1 << 20,   get: |c| n(c.commit_queue), why: "" },
    Range { key: "commit_max_batch",             min: 1, max: 65_536,    get: |c| n(c.commit_max_batch), why: "" },
    Range { key: "forward_batch",                min: 1, max: 100_000,   get: |c| n(c.forward_batch), why: "" },
    Range { key: "forward_batch_bytes",          min: 1024, max: 256 << 20, get: |c| n(c.forward_batch_bytes), why: "a batch is held in memory, and PostgreSQL refuses messages over 1 GiB" },
    Range { key: "forward_connect_timeout_ms",   min: 1, max: 600_000,   get: |c| Some(c.forward_connect_timeout_ms), why: TIMEOUT },
    Range { key: "forward_statement_timeout_ms", min: 1, max: 3_600_000, get: |c| Some(c.forward_statement_timeout_ms), why: "twice it is the session's idle_in_transaction_session_timeout, at most 2147483647 ms in PostgreSQL; timeouts cannot be turned off" },
];

/// Flags that override the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `--forward-to`.
    pub forward_to: Option<String>,
}

/// The `DEPOT_*` variables of `vars` (pass [`std::env::vars_os`]) as text, for [`Config::load`].
/// A `DEPOT_*` variable whose name or value is not UTF-8 is an error naming it; any other
/// variable is not depot's business, whatever its bytes. `DEPOT_CONFIG` is a path, read by the
/// command line as bytes, so it is left out here.
pub fn depot_vars(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (name, value) in vars {
        if !name.as_encoded_bytes().starts_with(b"DEPOT_") || name == "DEPOT_CONFIG" {
            continue;
        }
        match (name.to_str(), value.to_str()) {
            (Some(name), Some(value)) => out.push((name.to_owned(), value.to_owned())),
            _ => {
                return Err(ConfigError::Invalid {
                    origin: format!("environment variable {name:?}"),
                    message: format!(
                        "{} is not valid UTF-8 (it reads {:?}); set it again as UTF-8 text, or \
                         unset it",
                        if name.to_str().is_some() {
                            "its value"
                        } else {
                            "its name"
                        },
                        value.to_string_lossy()
                    ),
                });
            }
        }
    }
    Ok(out)
}

/// Whether `name=value` is one of the variables Kubernetes puts in every pod for each Service
/// of its namespace (service links): for a Service `depot` (or `depot-x`), `DEPOT_SERVICE_HOST`,
/// `DEPOT_SERVICE_PORT`, `DEPOT_SERVICE_PORT_<PORT NAME>`, `DEPOT_PORT`, `DEPOT_PORT_<N>_<PROTO>`
/// and `DEPOT_PORT_<N>_<PROTO>_{PROTO,PORT,ADDR}`. The value must have the shape Kubernetes
/// gives it too, so that `DEPOT_PORT=9000` (a person guessing a setting's name) is still warned
/// about.
fn is_service_link(name: &str, value: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let proto = |s: &str| matches!(s, "TCP" | "UDP" | "SCTP");
    // `tcp://10.0.0.1:8080`, `tcp://[fd00::1]:8080`.
    let url = |s: &str| {
        s.split_once("://").is_some_and(|(scheme, rest)| {
            matches!(scheme, "tcp" | "udp" | "sctp")
                && rest
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && digits(port))
        })
    };
    let words: Vec<&str> = name.split('_').collect();
    let n = words.len();
    // words[0] is DEPOT; the Service's name may go on (`depot-metrics` → DEPOT_METRICS_…).
    let ends = |tail: &[&str]| n > tail.len() && words.ends_with(tail);
    // DEPOT_PORT_<N>_<PROTO> and its _PROTO, _PORT, _ADDR.
    let port_proto =
        |at: usize| at >= 1 && words[at] == "PORT" && digits(words[at + 1]) && proto(words[at + 2]);
    (ends(&["SERVICE", "HOST"]) && !value.is_empty())
        || (ends(&["SERVICE", "PORT"]) && digits(value))
        // DEPOT_SERVICE_PORT_<NAME>: the port's name may itself hold `_` (from `-`).
        || ((1..n.saturating_sub(2)).any(|i| words[i] == "SERVICE" && words[i + 1] == "PORT")
            && digits(value))
        || (ends(&["PORT"]) && url(value))
        || (n >= 4 && port_proto(n - 3) && url(value))
        || (n >= 5
            && port_proto(n - 4)
            && match words[n - 1] {
                "PROTO" => matches!(value, "tcp" | "udp" | "sctp"),
                "PORT" => value == words[n - 3],
                "ADDR" => !value.is_empty(),
                _ => false,
            })
}

impl Config {
    /// Loads the configuration: defaults, the file at `file` (if any), the `DEPOT_*` variables of
    /// `env`, then `overrides`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str::<toml::Table>(&text).map_err(|e| ConfigError::Invalid {
                    origin: path.display().to_string(),
                    message: e.to_string(),
                })?
            }
            None => toml::Table::new(),
        };
        // Check the file on its own first, so its errors name the file.
        if let Some(path) = file {
            Config::deserialize(table.clone()).map_err(|e| ConfigError::Invalid {
                origin: path.display().to_string(),
                message: e.to_string(),
            })?;
        }
        let mut provenance = Provenance::default();
        for key in table.keys() {
            provenance.origins.insert(key.clone(), Origin::File);
        }
        let known = key_names();
        for (name, raw) in env {
            let Some(key) = name.strip_prefix("DEPOT_").map(str::to_ascii_lowercase) else {
                continue;
            };
            match key.as_str() {
                "config" => continue, // read by the command line itself
                "log" => {
                    provenance.log_filter = Some(raw);
                    continue;
                }
                _ => {}
            }
            if !known.contains(&key) {
                // Not fatal: a pod gets DEPOT_* variables it did not ask for (Kubernetes'
                // service links for a Service named `depot`), and refusing to start over one
                // would crash-loop it.
                if !is_service_link(&name, &raw) {
                    provenance.warnings.push(format!(
                        "environment variable {name} is not a depot setting (no setting \
                         `{key}`), so it is ignored; known: {}",
                        known.join(", ")
                    ));
                }
                continue;
            }
            // A number or boolean if it parses as one, a string otherwise.
            let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .filter(|v| !v.is_str())
                .unwrap_or(toml::Value::String(raw));
            let mut single = toml::Table::new();
            single.insert(key.clone(), value.clone());
            Config::deserialize(single).map_err(|e| ConfigError::Invalid {
                origin: format!("environment variable {name}"),
                message: e.to_string(),
            })?;
            table.insert(key.clone(), value);
            provenance.origins.insert(key, Origin::Env(name));
        }
        let mut config = Config::deserialize(table).map_err(|e| ConfigError::Invalid {
            origin: "configuration".into(),
            message: e.to_string(),
        })?;
        if let Some(listen) = overrides.listen {
            config.listen = listen;
            provenance
                .origins
                .insert("listen".into(), Origin::Flag("--listen"));
        }
        if let Some(dir) = &overrides.data_dir {
            config.data_dir = dir.clone();
            provenance
                .origins
                .insert("data_dir".into(), Origin::Flag("--data-dir"));
        }
        if let Some(format) = overrides.log_format {
            config.log_format = format;
            provenance
                .origins
                .insert("log_format".into(), Origin::Flag("--log-format"));
        }
        if let Some(to) = &overrides.forward_to {
            config.forward_to = Some(ForwardTo(to.clone()));
            provenance
                .origins
                .insert("forward_to".into(), Origin::Flag("--forward-to"));
        }
        config.provenance = provenance;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for range in RANGES {
            let Some(value) = (range.get)(self) else {
                continue;
            };
            if !(range.min..=range.max).contains(&value) {
                let why = if range.why.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", range.why)
                };
                return Err(ConfigError::OutOfRange {
                    key: range.key,
                    problem: format!(
                        "is {value}, outside its range {}..={}{why}",
                        range.min, range.max
                    ),
                });
            }
        }
        if self.durability == DurabilityMode::Off && self.forward_to.is_some() {
            return Err(ConfigError::Conflict {
                keys: "`durability = \"off\"` and `forward_to`",
                problem: "after an OS crash or power cut, the local store can lose records \
                          that PostgreSQL already has, and then hand their sequence numbers to \
                          new records or leave the forwarding cursor past its last record (new \
                          records never forwarded); forward with durability = \"full\" (the \
                          default)"
                    .into(),
            });
        }
        if let Some(to) = &self.forward_to {
            Target::parse(&to.0).map_err(|problem| ConfigError::OutOfRange {
                key: "forward_to",
                problem: format!("is not usable: {problem}"),
            })?;
        }
        Ok(())
    }

    /// The forwarding settings, or `None` when `forward_to` is unset.
    pub fn forward_settings(&self) -> Result<Option<ForwardSettings>, TargetError> {
        let Some(to) = &self.forward_to else {
            return Ok(None);
        };
        Ok(Some(ForwardSettings {
            target: Target::parse(&to.0)?,
            batch: self.forward_batch,
            batch_bytes: self.forward_batch_bytes,
            connect_timeout: Duration::from_millis(self.forward_connect_timeout_ms),
            statement_timeout: Duration::from_millis(self.forward_statement_timeout_ms),
            retention: self.retain_delivered,
        }))
    }

    /// [`Config::header_read_timeout_ms`] as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// [`Config::request_timeout_ms`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// Every setting's name, sorted.
fn key_names() -> Vec<String> {
    let mut keys = match toml::Value::try_from(Config::default()) {
        Ok(toml::Value::Table(t)) => {
            let mut keys: Vec<String> = t.keys().cloned().collect();
            // None is not serialized.
            keys.extend(
                [
                    "sigterm_budget_ms",
                    "auth_token_file",
                    "forward_to",
                    "retain_delivered",
                ]
                .map(String::from),
            );
            keys
        }
        _ => Vec::new(),
    };
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("depot.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nmax_body_bytes = 100\ncommit_queue = 7\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&file),
            env(&[
                ("DEPOT_MAX_BODY_BYTES", "200"),
                ("DEPOT_LISTEN", "127.0.0.1:9001"),
                ("PATH", "/bin"),
            ]),
            &Overrides {
                listen: Some("127.0.0.1:9002".parse().unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.max_body_bytes, 200);
        assert_eq!(c.commit_queue, 7);
        assert_eq!(c.listen.port(), 9002);
    }

    #[test]
    fn forwarding_settings_from_file_env_and_flag() {
        let c = Config::load(None, env(&[]), &Overrides::default()).unwrap();
        assert!(c.forward_to.is_none() && c.retain_delivered.is_none());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("depot.toml");
        std::fs::write(
            &file,
            "forward_to = \"host=db user=depot password='p w'\"\nretain_delivered = \"7d\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&file), env(&[]), &Overrides::default()).unwrap();
        assert_eq!(
            c.retain_delivered,
            Some(Retention::Age(Duration::from_secs(7 * 86_400)))
        );
        assert!(
            !format!("{c:?}").contains("p w"),
            "the password shows in {c:?}"
        );
        let c = Config::load(
            Some(&file),
            env(&[
                (
                    "DEPOT_FORWARD_TO",
                    "postgres://depot:pw@db/depot?sslmode=verify-full",
                ),
                ("DEPOT_RETAIN_DELIVERED", "100000"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.retain_delivered, Some(Retention::Count(100_000)));
        assert!(
            c.forward_to
                .unwrap()
                .0
                .starts_with("postgres://depot:pw@db/")
        );
        let c = Config::load(
            Some(&file),
            env(&[]),
            &Overrides {
                forward_to: Some("postgres://other@h/d".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.forward_to.unwrap().0, "postgres://other@h/d");
        let e = Config::load(
            None,
            env(&[("DEPOT_FORWARD_TO", "postgres://u:secret@h/d?sslmode=maybe")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("forward_to") && e.contains("maybe") && !e.contains("secret"),
            "{e}"
        );
        let e = Config::load(
            None,
            env(&[("DEPOT_RETAIN_DELIVERED", "7 days")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("DEPOT_RETAIN_DELIVERED"), "{e}");
    }

    #[test]
    fn errors_name_the_bad_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("depot.toml");
        std::fs::write(&file, "lisen = \"127.0.0.1:9000\"\n").unwrap();
        let e = Config::load(Some(&file), env(&[]), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("lisen") && e.contains("depot.toml"), "{e}");

        let e = Config::load(
            None,
            env(&[("DEPOT_MAX_BODY_BYTES", "lots")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("DEPOT_MAX_BODY_BYTES"), "{e}");

        let e = Config::load(
            None,
            env(&[("DEPOT_COMMIT_QUEUE", "0")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`commit_queue`"), "{e}");
    }

    /// What a pod next to a Service named `depot` (port 8080, named `http`) and one named
    /// `depot-metrics` gets from Kubernetes.
    const SERVICE_LINKS: &[(&str, &str)] = &[
        ("DEPOT_SERVICE_HOST", "10.0.0.11"),
        ("DEPOT_SERVICE_PORT", "8080"),
        ("DEPOT_SERVICE_PORT_HTTP", "8080"),
        ("DEPOT_PORT", "tcp://10.0.0.11:8080"),
        ("DEPOT_PORT_8080_TCP", "tcp://10.0.0.11:8080"),
        ("DEPOT_PORT_8080_TCP_PROTO", "tcp"),
        ("DEPOT_PORT_8080_TCP_PORT", "8080"),
        ("DEPOT_PORT_8080_TCP_ADDR", "10.0.0.11"),
        ("DEPOT_METRICS_SERVICE_HOST", "fd00::12"),
        ("DEPOT_METRICS_SERVICE_PORT", "9090"),
        ("DEPOT_METRICS_SERVICE_PORT_PROM_METRICS", "9090"),
        ("DEPOT_METRICS_PORT", "tcp://[fd00::12]:9090"),
        ("DEPOT_METRICS_PORT_9090_UDP", "udp://[fd00::12]:9090"),
        ("DEPOT_METRICS_PORT_9090_UDP_PROTO", "udp"),
        ("DEPOT_METRICS_PORT_9090_UDP_PORT", "9090"),
        ("DEPOT_METRICS_PORT_9090_UDP_ADDR", "fd00::12"),
    ];

    #[test]
    fn kubernetes_service_links_are_ignored_silently() {
        let mut vars = SERVICE_LINKS.to_vec();
        vars.push(("DEPOT_MAX_BODY_BYTES", "4096"));
        let c = Config::load(None, env(&vars), &Overrides::default()).unwrap();
        assert_eq!(c.max_body_bytes, 4096);
        assert!(
            c.provenance.warnings.is_empty(),
            "{:?}",
            c.provenance.warnings
        );
    }

    #[test]
    fn other_unknown_variables_warn_with_the_known_settings() {
        // A typo, and names that look like service links but do not hold what Kubernetes puts
        // there (a person guessing a setting's name).
        for (name, value) in [
            ("DEPOT_MAX_BODDY", "1"),
            ("DEPOT_PORT", "9000"),
            ("DEPOT_SERVICE_PORT", "http"),
            ("DEPOT_PORT_8080_TCP_PORT", "9090"),
            ("DEPOT_PORT_8080_TCP_PROTO", "quic"),
            ("DEPOT_PORT_8080_TCP_USER", "x"),
            ("DEPOT_SERVICE_HOST", ""),
        ] {
            let c = Config::load(None, env(&[(name, value)]), &Overrides::default())
                .unwrap_or_else(|e| panic!("{name}={value}: {e}"));
            let [w] = &c.provenance.warnings[..] else {
                panic!("{name}={value}: {:?}", c.provenance.warnings);
            };
            assert!(
                w.contains(name) && w.contains("ignored") && w.contains("max_body_bytes"),
                "{w}"
            );
        }
    }

    #[test]
    fn every_numeric_setting_is_checked_against_its_range() {
        for range in RANGES {
            let var = format!("DEPOT_{}", range.key.to_ascii_uppercase());
            let load = |value: u64| {
                Config::load(
                    None,
                    env(&[(&var, &value.to_string())]),
                    &Overrides::default(),
                )
            };
            for ok in [range.min, range.max] {
                let c = load(ok).unwrap_or_else(|e| panic!("{var}={ok}: {e}"));
                assert_eq!((range.get)(&c), Some(ok), "{var}");
            }
            let mut bad = vec![range.max + 1];
            if range.min > 0 {
                bad.push(range.min - 1);
            }
            for value in bad {
                let e = load(value).map(|_| ()).unwrap_err().to_string();
                assert!(
                    e.contains(&format!("`{}`", range.key))
                        && e.contains(&format!("{}..={}", range.min, range.max)),
                    "{var}={value}: {e}"
                );
            }
        }
        // The two the review found: an assert! in the commit queue, and a session timeout
        // PostgreSQL refuses.
        for (var, value) in [
            ("DEPOT_COMMIT_QUEUE", "4294967296"),
            ("DEPOT_FORWARD_STATEMENT_TIMEOUT_MS", "1073741824"),
        ] {
            let e = Config::load(None, env(&[(var, value)]), &Overrides::default())
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(e.contains("outside its range"), "{var}: {e}");
        }
    }

    /// docs/CONFIG.md states each range: the table above and the docs cannot drift apart.
    #[test]
    fn every_range_is_documented() {
        let doc = include_str!("../../../docs/CONFIG.md");
        for range in RANGES {
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", range.key)))
                .unwrap_or_else(|| panic!("no row for {} in docs/CONFIG.md", range.key));
            let documented = format!("{}–{}", range.min, range.max);
            assert!(row.contains(&documented), "{documented} missing from {row}");
        }
    }

    #[test]
    fn durability_off_is_refused_with_forwarding() {
        let to = (
            "DEPOT_FORWARD_TO",
            "postgres://depot@db/depot?sslmode=verify-full",
        );
        let off = ("DEPOT_DURABILITY", "off");
        Config::load(None, env(&[to]), &Overrides::default()).unwrap();
        Config::load(None, env(&[off]), &Overrides::default()).unwrap();
        let e = Config::load(None, env(&[to, off]), &Overrides::default())
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("durability") && e.contains("forward_to") && e.contains("\"full\""),
            "{e}"
        );
    }

    #[test]
    fn provenance_says_where_each_setting_came_from() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("depot.toml");
        std::fs::write(&file, "commit_queue = 7\nmax_read_limit = 5\n").unwrap();
        let c = Config::load(
            Some(&file),
            env(&[("DEPOT_MAX_READ_LIMIT", "6"), ("DEPOT_LOG", "debug")]),
            &Overrides {
                data_dir: Some("/var/lib/x".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let o = &c.provenance.origins;
        assert_eq!(o["commit_queue"], Origin::File);
        assert_eq!(
            o["max_read_limit"],
            Origin::Env("DEPOT_MAX_READ_LIMIT".into())
        );
        assert_eq!(o["data_dir"], Origin::Flag("--data-dir"));
        assert!(!o.contains_key("listen"));
        assert_eq!(c.provenance.log_filter.as_deref(), Some("debug"));
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_variables_are_refused_when_depots_and_ignored_otherwise() {
        use std::os::unix::ffi::OsStrExt;
        let os = |b: &[u8]| std::ffi::OsStr::from_bytes(b).to_owned();
        let vars = depot_vars([
            (os(b"LANG_JUNK"), os(b"\xff\xfe")),
            (os(b"\xffWEIRD"), os(b"x")),
            (os(b"DEPOT_CONFIG"), os(b"/etc/\xff.toml")),
            (os(b"DEPOT_LISTEN"), os(b"127.0.0.1:1")),
            (os(b"PATH"), os(b"/bin")),
        ])
        .unwrap();
        assert_eq!(vars, env(&[("DEPOT_LISTEN", "127.0.0.1:1")]));
        let e = depot_vars([(os(b"DEPOT_AUTH_TOKEN_FILE"), os(b"/etc/\xfftoken"))])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("DEPOT_AUTH_TOKEN_FILE") && e.contains("not valid UTF-8"),
            "{e}"
        );
        let e = depot_vars([(os(b"DEPOT_\xff"), os(b"1"))])
            .unwrap_err()
            .to_string();
        assert!(e.contains("DEPOT_\\xFF") && e.contains("its name"), "{e}");
    }
}
