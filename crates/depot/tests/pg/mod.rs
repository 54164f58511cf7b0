//! A private PostgreSQL cluster for the tests that forward to one (`forward.rs`, and the power-cut
//! loop's forwarding check in `e2e/powercut.rs`): started from the system's server binaries on
//! 127.0.0.1 and a free port, as the `postgres` user when the tests run as root.
#![allow(dead_code)] // each test target uses its own part

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A PostgreSQL cluster in a temporary directory, listening on 127.0.0.1 only, trust auth; stopped
/// (`-m immediate`) and deleted when dropped.
pub(crate) struct PgCluster {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) bindir: PathBuf,
    pub(crate) port: u16,
    /// The user the server runs as when the tests run as root (PostgreSQL refuses root).
    pub(crate) run_as: Option<String>,
    pub(crate) fsync: bool,
    /// Serve TLS with a self-signed certificate for `localhost` (`server.crt` in `dir`).
    pub(crate) tls: bool,
}

pub(crate) const HOW_TO_ENABLE: &str = "no PostgreSQL server binaries (initdb, pg_ctl) on PATH, in \
    `pg_config --bindir` or in /usr/lib/postgresql/*/bin; install them to run this test \
    (Debian/Ubuntu: apt-get install postgresql, or bash ci/postgres.sh). \
    REQUIRE_POSTGRES_TESTS=1 turns this skip into a failure";

impl PgCluster {
    /// Starts a cluster, or returns `None` after printing why the test is skipped (no PostgreSQL
    /// here). Panics instead when `REQUIRE_POSTGRES_TESTS=1`.
    pub(crate) fn start(test: &str) -> Option<PgCluster> {
        PgCluster::start_with(test, false, false)
    }

    pub(crate) fn start_with(test: &str, fsync: bool, tls: bool) -> Option<PgCluster> {
        let Some(bindir) = find_bindir() else {
            if std::env::var("REQUIRE_POSTGRES_TESTS").as_deref() == Ok("1") {
                panic!("{test}: REQUIRE_POSTGRES_TESTS=1 but {HOW_TO_ENABLE}");
            }
            // Straight to stderr, past the test harness's capture, so that the skip shows.
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {HOW_TO_ENABLE}");
            return None;
        };
        let run_as = is_root().then(|| {
            if user_exists("postgres") {
                "postgres".to_owned()
            } else {
                "nobody".to_owned()
            }
        });
        let dir = tempfile::Builder::new()
            .prefix("depot-pg-")
            .tempdir()
            .unwrap();
        if let Some(user) = &run_as {
            ok(
                Command::new("chown").arg(user).arg(dir.path()).output(),
                "chown",
            );
        }
        let cluster = PgCluster {
            dir,
            bindir,
            port: 0,
            run_as,
            fsync,
            tls,
        };
        if tls {
            let (crt, key) = (
                cluster.dir.path().join("server.crt"),
                cluster.dir.path().join("server.key"),
            );
            ok(
                Command::new("openssl")
                    .args([
                        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    ])
                    .args([
                        "-subj",
                        "/CN=localhost",
                        "-addext",
                        "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    ])
                    .arg("-keyout")
                    .arg(&key)
                    .arg("-out")
                    .arg(&crt)
                    .output(),
                "openssl req (making a test certificate)",
            );
            if let Some(user) = &cluster.run_as {
                ok(
                    Command::new("chown").arg(user).arg(&crt).arg(&key).output(),
                    "chown",
                );
            }
            ok(Command::new("chmod").arg("600").arg(&key).output(), "chmod");
        }
        let data = cluster.data();
        ok(
            cluster
                .pg("initdb")
                .arg("-D")
                .arg(&data)
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
                .arg("--no-sync")
                .output(),
            "initdb",
        );
        let mut cluster = cluster;
        cluster.port = free_port();
        cluster.start_server();
        Some(cluster)
    }

    pub(crate) fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub(crate) fn pg(&self, program: &str) -> Command {
        let path = self.bindir.join(program);
        match &self.run_as {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(path);
                cmd
            }
            None => Command::new(path),
        }
    }

    pub(crate) fn start_server(&self) {
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c max_connections=40 -c fsync={}",
            self.port,
            self.dir.path().display(),
            if self.fsync { "on" } else { "off" }
        );
        if self.tls {
            let dir = self.dir.path().display();
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key"
            ));
        }
        let out = self
            .pg("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "30", "-o", &options, "start"])
            .output();
        if !matches!(&out, Ok(o) if o.status.success()) {
            panic!(
                "pg_ctl start failed: {out:?}\n{}",
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
            );
        }
    }

    /// `pg_ctl stop -m fast`: disconnects every client, rolls back open transactions.
    pub(crate) fn stop_fast(&self) {
        ok(
            self.pg("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-w", "-m", "fast", "stop"])
                .output(),
            "pg_ctl stop",
        );
    }

    pub(crate) fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    pub(crate) async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .expect("connect to the test cluster");
        tokio::spawn(connection);
        client
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .pg("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-w", "-m", "immediate", "stop"])
            .output();
    }
}

pub(crate) fn ok(out: std::io::Result<Output>, what: &str) {
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "{what} failed ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("cannot run {what}: {e}"),
    }
}

/// PostgreSQL's server binaries: `pg_config --bindir`, then PATH, then the newest
/// `/usr/lib/postgresql/*/bin`.
pub(crate) fn find_bindir() -> Option<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                    Some((version, e.path().join("bin")))
                })
                .collect()
        })
        .unwrap_or_default();
    debian.sort();
    from_pg_config
        .into_iter()
        .chain(on_path)
        .chain(debian.into_iter().rev().map(|(_, p)| p))
        .find(|dir| has_server(dir))
}

pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub(crate) fn user_exists(name: &str) -> bool {
    Command::new("id")
        .arg("-u")
        .arg(name)
        .output()
        .is_ok_and(|o| o.status.success())
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
