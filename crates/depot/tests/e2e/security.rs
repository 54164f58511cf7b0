//! Security defaults, end to end: bearer-token auth on `/v1/*` (health, readiness and metrics
//! open), the token and record payloads kept out of the logs, owner-only files, a clear start-up
//! error for a bad token file, and a warning when depot listens beyond loopback without auth.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use hyper::Method;
use tokio_util::sync::CancellationToken;
use torture::{Client, LoadOptions};

use crate::support::{self, Options};

const TOKEN: &str = "tok-3f9a1c2b7d4e5f60-secret";

fn token_file(dir: &std::path::Path, token: &str) -> std::path::PathBuf {
    let path = dir.join("token");
    fs::write(&path, format!("{token}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_every_v1_request_needs_it_and_health_stays_open() {
    let _serial = support::serial().await;
    let base = tempfile::tempdir().unwrap();
    let token = token_file(base.path(), TOKEN);
    let options = Options::default().set("DEPOT_AUTH_TOKEN_FILE", token.display());
    let depot = support::start_ok(&base.path().join("data"), &options).await;
    let anonymous = &depot.client;
    let wrong = depot.client_with_token(Some("tok-3f9a1c2b7d4e5f60-secreT"));
    let right = depot.client_with_token(Some(TOKEN));

    for path in ["/healthz", "/readyz", "/metrics"] {
        let reply = anonymous.send(Method::GET, path, &[], "").await.unwrap();
        assert_eq!(reply.status, 200, "{path}");
    }
    let requests = [
        (Method::GET, "/v1/status", ""),
        (Method::GET, "/v1/streams", ""),
        (Method::GET, "/v1/streams/s/records", ""),
        (Method::POST, "/v1/streams/s/records", "{\"x\":1}"),
    ];
    for (method, path, body) in &requests {
        let reply = anonymous
            .send(method.clone(), path, &[], *body)
            .await
            .unwrap();
        assert_eq!(reply.status, 401, "{method} {path}");
        assert_eq!(reply.error_code(), "unauthorized");
        assert_eq!(reply.headers["www-authenticate"], "Bearer realm=\"depot\"");
        let reply = wrong.send(method.clone(), path, &[], *body).await.unwrap();
        assert_eq!(reply.status, 401, "{method} {path}");
        assert_eq!(reply.error_code(), "unauthorized");
        assert!(
            reply.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_token"),
            "{:?}",
            reply.headers
        );
        let reply = right.send(method.clone(), path, &[], *body).await.unwrap();
        assert!(
            reply.status.is_success(),
            "{method} {path}: {}",
            reply.status
        );
    }
    // Other schemes and broken headers are refused too.
    for value in [
        format!("Basic {TOKEN}"),
        TOKEN.to_owned(),
        "Bearer".into(),
        format!("Bearer {TOKEN}x"),
    ] {
        let reply = anonymous
            .send(Method::GET, "/v1/streams", &[("authorization", &value)], "")
            .await
            .unwrap();
        assert_eq!(reply.status, 401, "{value}");
    }
    // The refused POSTs stored nothing: one record, from the one authorized POST.
    assert_eq!(right.read_stream("s").await.unwrap().len(), 1);

    // The torture client with the token: a short load, checked.
    let options = LoadOptions {
        duration: Some(Duration::from_millis(500)),
        ..LoadOptions::default()
    };
    let ledger = torture::run_load(&right, &options, &CancellationToken::new()).await;
    assert_eq!(
        ledger.answers.keys().collect::<Vec<_>>(),
        ["201"],
        "{:?}",
        ledger.answers
    );
    support::verify_clean(&right, &ledger, "with auth").await;
    depot.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_and_record_payloads_stay_out_of_the_logs() {
    let _serial = support::serial().await;
    let base = tempfile::tempdir().unwrap();
    let token = token_file(base.path(), TOKEN);
    for level in ["info", "debug"] {
        let options = Options::default()
            .set("DEPOT_AUTH_TOKEN_FILE", token.display())
            .set("DEPOT_LOG", level);
        let depot = support::start_ok(&base.path().join("data"), &options).await;
        let right = depot.client_with_token(Some(TOKEN));
        let wrong = depot.client_with_token(Some("WRONG-TOKEN-MARKER-0123456789"));
        let records = "/v1/streams/logs/records";
        right
            .send(
                Method::POST,
                records,
                &[],
                "{\"secret\":\"PAYLOAD-MARKER-1\"}",
            )
            .await
            .unwrap();
        right
            .send(
                Method::POST,
                records,
                &[],
                "{\"secret\":\"PAYLOAD-MARKER-2\"",
            )
            .await
            .unwrap();
        right
            .send(
                Method::POST,
                records,
                &[("idempotency-key", "KEY-MARKER")],
                "[\"PAYLOAD-MARKER-3\"]",
            )
            .await
            .unwrap();
        right
            .send(
                Method::POST,
                records,
                &[("idempotency-key", "KEY-MARKER")],
                "[\"PAYLOAD-MARKER-4\"]",
            )
            .await
            .unwrap();
        wrong
            .send(Method::POST, records, &[], "\"PAYLOAD-MARKER-5\"")
            .await
            .unwrap();
        right
            .send(Method::GET, "/v1/streams/logs/records", &[], "")
            .await
            .unwrap();
        let log = depot.log_text();
        depot.stop(Duration::from_secs(10)).await;
        assert!(
            log.contains("store opened"),
            "{level}: the log is empty?\n{log}"
        );
        if level == "debug" {
            assert!(log.contains("request done"), "{log}");
        }
        for secret in [TOKEN, "WRONG-TOKEN-MARKER", "PAYLOAD-MARKER"] {
            assert!(
                !log.contains(secret),
                "{level}: the log holds {secret}:\n{log}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_in_the_data_directory_are_for_the_owner_only() {
    let _serial = support::serial().await;
    let base = tempfile::tempdir().unwrap();
    let data = base.path().join("data"); // created by depot
    let depot = support::start_ok(&data, &Options::default()).await;
    depot
        .client
        .send(Method::POST, "/v1/streams/p/records", &[], "1")
        .await
        .unwrap();
    let check = |when: &str| {
        let mut seen = 0;
        let mut walk = vec![data.clone()];
        while let Some(path) = walk.pop() {
            let meta = fs::metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o777;
            assert_eq!(
                mode & 0o077,
                0,
                "{when}: {} is mode {mode:o}",
                path.display()
            );
            seen += 1;
            if meta.is_dir() {
                walk.extend(fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            }
        }
        seen
    };
    let running = check("running");
    assert!(running >= 6, "only {running} files and directories?");
    depot.stop(Duration::from_secs(10)).await;
    check("stopped");
    assert!(
        !support::start_ok(&data, &Options::default())
            .await
            .log_text()
            .contains("open to other users")
    );

    // A data directory made by someone else, open to all: depot warns.
    let shared = base.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o755)).unwrap();
    let depot = support::start_ok(&shared, &Options::default()).await;
    let log = depot.log_text();
    assert!(
        log.contains("open to other users") && log.contains("chmod 700"),
        "{log}"
    );
    depot.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_file_is_a_start_up_error_naming_it() {
    let _serial = support::serial().await;
    let base = tempfile::tempdir().unwrap();
    let data = base.path().join("data");
    let missing = base.path().join("no-such-token");
    let short = token_file(base.path(), "short");
    for (file, words) in [
        (&missing, &["cannot read", "auth_token_file"][..]),
        (&short, &["at least 16", "auth_token_file"][..]),
    ] {
        let options = Options::default().set("DEPOT_AUTH_TOKEN_FILE", file.display());
        let failed = match support::start(&data, &options).await {
            Ok(_) => panic!("depot started with the token file {}", file.display()),
            Err(failed) => failed,
        };
        assert!(!failed.status.unwrap().success());
        support::assert_no_panic(&failed.log);
        assert!(
            failed.log.contains(file.to_str().unwrap()),
            "{}",
            failed.log
        );
        for word in words {
            assert!(failed.log.contains(word), "{word}: {}", failed.log);
        }
        // Refused before the data directory was touched.
        assert!(!data.join("depot.sqlite3").exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_beyond_loopback_without_a_token_is_warned_about() {
    let _serial = support::serial().await;
    let base = tempfile::tempdir().unwrap();
    // Bound to every interface for a moment; the test talks to it over loopback only.
    let options = Options {
        listen: "0.0.0.0:0".into(),
        ..Options::default()
    };
    let depot = support::start_ok(&base.path().join("data"), &options).await;
    let log = depot.log_text();
    depot.stop(Duration::from_secs(10)).await;
    assert!(
        log.contains("without authentication") && log.contains("auth_token_file"),
        "{log}"
    );

    let token = token_file(base.path(), TOKEN);
    let options = Options::default().set("DEPOT_AUTH_TOKEN_FILE", token.display());
    let depot = support::start_ok(&base.path().join("data"), &options).await;
    let log = depot.log_text();
    depot.stop(Duration::from_secs(10)).await;
    assert!(!log.contains("without authentication"), "{log}");
    let _ = Client::new;
}
