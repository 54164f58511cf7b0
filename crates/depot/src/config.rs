//! depot's configuration: defaults, then a TOML file, then `DEPOT_*` environment variables, then
//! command-line flags — each overriding the one before. Checked once at start, with errors that
//! name the bad key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::forward::{ForwardTo, Retention, Target};

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
}

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
        let known: BTreeMap<String, ()> = key_names().into_iter().map(|k| (k, ())).collect();
        for (name, raw) in env {
            let Some(key) = name.strip_prefix("DEPOT_").map(str::to_ascii_lowercase) else {
                continue;
            };
            if matches!(key.as_str(), "config" | "log") {
                continue; // read by the command line itself
            }
            if !known.contains_key(&key) {
                return Err(ConfigError::Invalid {
                    origin: format!("environment variable {name}"),
                    message: format!(
                        "no such setting `{key}`; known: {}",
                        known.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                });
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
            table.insert(key, value);
        }
        let mut config = Config::deserialize(table).map_err(|e| ConfigError::Invalid {
            origin: "configuration".into(),
            message: e.to_string(),
        })?;
        if let Some(listen) = overrides.listen {
            config.listen = listen;
        }
        if let Some(dir) = &overrides.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(format) = overrides.log_format {
            config.log_format = format;
        }
        if let Some(to) = &overrides.forward_to {
            config.forward_to = Some(ForwardTo(to.clone()));
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("max_body_bytes", self.max_body_bytes),
            ("max_records_per_request", self.max_records_per_request),
            ("max_read_limit", self.max_read_limit),
            ("max_connections", self.max_connections),
            ("commit_queue", self.commit_queue),
            ("commit_max_batch", self.commit_max_batch),
            ("forward_batch", self.forward_batch),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::OutOfRange {
                    key,
                    problem: "must be at least 1".into(),
                });
            }
        }
        if self.header_read_timeout_ms == 0 || self.request_timeout_ms == 0 {
            return Err(ConfigError::OutOfRange {
                key: if self.header_read_timeout_ms == 0 {
                    "header_read_timeout_ms"
                } else {
                    "request_timeout_ms"
                },
                problem: "must be at least 1 ms (timeouts cannot be turned off)".into(),
            });
        }
        for (key, value) in [
            (
                "forward_connect_timeout_ms",
                self.forward_connect_timeout_ms,
            ),
            (
                "forward_statement_timeout_ms",
                self.forward_statement_timeout_ms,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::OutOfRange {
                    key,
                    problem: "must be at least 1 ms (timeouts cannot be turned off)".into(),
                });
            }
        }
        // The byte budgets of a page and of a forwarding batch: below 1 KiB every page or batch
        // is one record; above the top, memory is no longer bounded in any useful sense (and a
        // forwarding batch nears PostgreSQL's 1 GiB message limit).
        for (key, value, max) in [
            ("max_page_bytes", self.max_page_bytes, 1usize << 30),
            ("forward_batch_bytes", self.forward_batch_bytes, 256 << 20),
        ] {
            if !(1024..=max).contains(&value) {
                return Err(ConfigError::OutOfRange {
                    key,
                    problem: format!("must be between 1024 and {max} bytes, not {value}"),
                });
            }
        }
        if let Some(to) = &self.forward_to {
            Target::parse(&to.0).map_err(|problem| ConfigError::OutOfRange {
                key: "forward_to",
                problem: format!("is not usable: {problem}"),
            })?;
        }
        Ok(())
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

fn key_names() -> Vec<String> {
    match toml::Value::try_from(Config::default()) {
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
    }
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
            env(&[("DEPOT_MAX_BODDY", "1")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("max_boddy") && e.contains("max_body_bytes"),
            "{e}"
        );

        let e = Config::load(
            None,
            env(&[("DEPOT_COMMIT_QUEUE", "0")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`commit_queue`"), "{e}");
    }

    #[test]
    fn byte_budgets_are_range_checked() {
        let c = Config::load(None, env(&[]), &Overrides::default()).unwrap();
        assert_eq!(
            (c.max_page_bytes, c.forward_batch_bytes),
            (4 << 20, 16 << 20)
        );
        for (var, value, key) in [
            ("DEPOT_MAX_PAGE_BYTES", "100", "`max_page_bytes`"),
            ("DEPOT_MAX_PAGE_BYTES", "2000000000", "`max_page_bytes`"),
            ("DEPOT_FORWARD_BATCH_BYTES", "0", "`forward_batch_bytes`"),
            (
                "DEPOT_FORWARD_BATCH_BYTES",
                "1073741824",
                "`forward_batch_bytes`",
            ),
        ] {
            let e = Config::load(None, env(&[(var, value)]), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains("between 1024 and"), "{e}");
        }
        let c = Config::load(
            None,
            env(&[("DEPOT_MAX_PAGE_BYTES", "65536")]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.max_page_bytes, 65536);
    }
}
