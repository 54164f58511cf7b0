//! `depot backup --to PATH` against a running depot under write load: the copy, restored into a
//! fresh data directory, serves every record acknowledged before the backup began.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::support::{Options, depot_command, serial, start_ok, verify_clean};

fn load(prefix: &str, run: u64, records: Option<u64>, duration: Duration) -> torture::LoadOptions {
    torture::LoadOptions {
        clients: 4,
        streams: 3,
        stream_prefix: prefix.into(),
        records,
        duration: Some(duration),
        run,
        seed: run,
        retries: 0,
        ..torture::LoadOptions::default()
    }
}

/// `stream → last_seq`, from `GET /v1/streams`.
async fn last_seqs(client: &torture::Client) -> BTreeMap<String, u64> {
    let reply = client
        .send(hyper::Method::GET, "/v1/streams", &[], "")
        .await
        .expect("GET /v1/streams");
    reply.json()["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["last_seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_write_load_restores_every_acknowledged_record() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let depot = start_ok(&data, &Options::default()).await;

    // Records acknowledged before the backup: a finished load.
    let before = torture::run_load(
        &depot.client,
        &load("before-", 1, Some(2000), Duration::from_secs(30)),
        &CancellationToken::new(),
    )
    .await;
    assert!(before.acked_records() >= 2000, "{:?}", before.answers);

    // A write load that runs through the backup.
    let stop = CancellationToken::new();
    let during = tokio::spawn({
        let (client, stop) = (depot.client.clone(), stop.clone());
        async move {
            torture::run_load(
                &client,
                &load("during-", 2, None, Duration::from_secs(30)),
                &stop,
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Everything committed at this moment (the streams' last_seq) must be in the copy.
    let committed = last_seqs(&depot.client).await;
    let copy = dir.path().join("backups/depot-copy.sqlite3");
    std::fs::create_dir(copy.parent().unwrap()).unwrap();
    let started = Instant::now();
    let (code, out) = tokio::task::spawn_blocking({
        let (data, copy) = (data.clone(), copy.clone());
        move || depot_command(&data, &["backup", "--to", copy.to_str().unwrap()])
    })
    .await
    .unwrap();
    let took = started.elapsed();
    assert_eq!(code, 0, "{out}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    let during = during.await.unwrap();
    eprintln!(
        "backup under load: {took:?}, {} bytes; {out}; {} records acknowledged by the load running through it",
        std::fs::metadata(&copy).unwrap().len(),
        during.acked_records()
    );
    assert!(
        during.acked_records() > 0,
        "no write load during the backup: {:?}",
        during.answers
    );

    // A second backup to the same path is refused, and leaves the first intact.
    let size = std::fs::metadata(&copy).unwrap().len();
    let (code, out) = depot_command(&data, &["backup", "--to", copy.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("exists"), "{out}");
    assert_eq!(std::fs::metadata(&copy).unwrap().len(), size);
    // No partial file is left beside it.
    let leftovers: Vec<_> = std::fs::read_dir(copy.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");

    // The original's records, for comparison, then it stops.
    let mut original = BTreeMap::new();
    for stream in committed.keys() {
        original.insert(
            stream.clone(),
            depot.client.read_stream(stream).await.unwrap(),
        );
    }
    depot.stop(Duration::from_secs(30)).await;

    // Restore into a fresh data directory and serve it.
    let restored_dir = dir.path().join("restored");
    std::fs::create_dir(&restored_dir).unwrap();
    std::fs::copy(&copy, restored_dir.join("depot.sqlite3")).unwrap();
    let restored = start_ok(&restored_dir, &Options::default()).await;
    verify_clean(
        &restored.client,
        &before,
        "restored copy, records acknowledged before",
    )
    .await;
    for (stream, &last) in &committed {
        let copied = restored.client.read_stream(stream).await.unwrap();
        let source = &original[stream];
        assert!(
            copied.len() as u64 >= last,
            "{stream}: {} records in the copy, {last} committed before the backup began",
            copied.len()
        );
        // The copy is a snapshot: the original's records, from the first, nothing else.
        assert_eq!(
            &source[..copied.len()],
            &copied[..],
            "{stream}: the copy differs from the original"
        );
    }
    restored.stop(Duration::from_secs(30)).await;

    // A stopped depot can be backed up too.
    let second = dir.path().join("backups/stopped.sqlite3");
    let (code, out) = depot_command(&data, &["backup", "--to", second.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_refuses_bad_targets_and_sources_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = depot_command(
        &dir.path().join("no-depot-here"),
        &["backup", "--to", dir.path().join("x").to_str().unwrap()],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no depot store at"), "{out}");
    assert!(!dir.path().join("x").exists());

    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("depot.sqlite3"), b"").unwrap();
    let missing_dir = dir.path().join("nowhere/copy.sqlite3");
    let (code, out) = depot_command(&data, &["backup", "--to", missing_dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not exist; create it first"), "{out}");
}
