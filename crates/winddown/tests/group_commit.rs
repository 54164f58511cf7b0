//! Group commit against a real fsyncing file sink, and against a controlled one for the failure
//! paths. Every wait on the committer has a timeout, so a stranded waiter fails the test instead of
//! hanging it.

mod common;

use std::collections::HashSet;
use std::error::Error as _;
use std::future::Future;
use std::time::Duration;

use common::{ControlledSink, Controller, FileSink, Step, disk_dir};
use winddown::commit::{CommitConfig, CommitError, DrainReport, GroupCommit, Sink, WhenFull};

const PATIENCE: Duration = Duration::from_secs(20);

/// Awaits `future`, failing the test if it takes longer than [`PATIENCE`] (a hung waiter).
async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(PATIENCE, future)
        .await
        .expect("a future on the committer did not resolve: a waiter was left hanging")
}

fn item(i: usize) -> Vec<u8> {
    format!("item-{i}").into_bytes()
}

async fn drain<S: Sink>(committer: &GroupCommit<S>) -> DrainReport<S> {
    committer
        .drain(PATIENCE)
        .await
        .expect("drain finished within budget")
}

fn controlled(
    dir: &tempfile::TempDir,
    config: CommitConfig,
) -> (GroupCommit<ControlledSink>, Controller) {
    let file = FileSink::create(&dir.path().join("log")).unwrap();
    let (sink, controller) = ControlledSink::new(file);
    (GroupCommit::start(sink, config).unwrap(), controller)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_concurrent_submitters_are_all_durable_and_share_commits() {
    const SUBMITTERS: usize = 500;
    let dir = disk_dir("gc-concurrent");
    let path = dir.path().join("log");
    let committer = GroupCommit::start(
        FileSink::create(&path).unwrap(),
        CommitConfig::new("concurrent"),
    )
    .unwrap();

    let tasks: Vec<_> = (0..SUBMITTERS)
        .map(|i| {
            let committer = committer.clone();
            tokio::spawn(async move { (i, committer.submit(item(i)).await) })
        })
        .collect();
    let mut acked = Vec::with_capacity(SUBMITTERS);
    for task in tasks {
        let (i, result) = within(task).await.unwrap();
        acked.push((i, result.expect("commit succeeded")));
    }

    // Every acked item is in the file, under the sequence number it was acked with.
    let records = FileSink::read_all(&path).unwrap();
    assert_eq!(records.len(), SUBMITTERS);
    let seqs: HashSet<u64> = acked.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(
        seqs.len(),
        SUBMITTERS,
        "every item got its own sequence number"
    );
    for (i, seq) in &acked {
        assert_eq!(
            records[*seq as usize],
            item(*i),
            "record {seq} holds item {i}"
        );
    }

    let stats = committer.stats();
    assert_eq!(stats.committed_items, SUBMITTERS as u64);
    assert!(
        stats.commits < SUBMITTERS as u64,
        "concurrent submitters shared commits: {} commits for {SUBMITTERS} items",
        stats.commits
    );
    let report = drain(&committer).await;
    assert_eq!(report.stats.commits, stats.commits);
    assert_eq!(
        report.sink.expect("the sink is handed back").fsyncs,
        stats.commits
    );
}

#[tokio::test]
async fn a_batch_takes_everything_waiting_up_to_the_item_bound() {
    let dir = disk_dir("gc-batching");
    let (committer, mut control) = controlled(&dir, CommitConfig::new("t").max_batch_items(100));

    let first = committer.submit(item(0));
    assert_eq!(control.next_batch().await, vec![item(0)]);
    // The committer is busy: these all wait in the queue (submit queues before returning).
    let rest: Vec<_> = (1..=250).map(|i| committer.submit(item(i))).collect();
    assert_eq!(committer.stats().queued, 250);

    control.step(Step::Pass);
    assert_eq!(within(first).await.unwrap(), 0);
    for expected in [100, 100, 50] {
        assert_eq!(control.next_batch().await.len(), expected);
        control.step(Step::Pass);
    }
    for (i, future) in rest.into_iter().enumerate() {
        assert_eq!(
            within(future).await.unwrap(),
            i as u64 + 1,
            "acks follow submit order"
        );
    }
    assert_eq!(committer.stats().commits, 4);
    drain(&committer).await;
}

#[tokio::test]
async fn a_batch_respects_the_byte_bound_but_takes_an_oversized_item_alone() {
    let dir = disk_dir("gc-bytes");
    // item(i) for i < 10 is 6 bytes, 10 bytes with its length prefix: three fit in 30.
    let (committer, mut control) = controlled(&dir, CommitConfig::new("t").max_batch_bytes(30));
    let first = committer.submit(item(0));
    control.next_batch().await;
    let mut futures: Vec<_> = (1..=4).map(|i| committer.submit(item(i))).collect();
    futures.push(committer.submit(vec![7; 100]));
    futures.push(committer.submit(item(5)));
    control.step(Step::Pass);
    within(first).await.unwrap();
    for expected in [3, 1, 1, 1] {
        assert_eq!(control.next_batch().await.len(), expected);
        control.step(Step::Pass);
    }
    for future in futures {
        within(future).await.unwrap();
    }
    drain(&committer).await;
}

#[tokio::test]
async fn a_poisoning_failure_fails_its_batch_and_everything_after() {
    let dir = disk_dir("gc-poison");
    let (committer, mut control) = controlled(&dir, CommitConfig::new("t"));

    let ok = committer.submit(item(0));
    control.next_batch().await;
    let doomed: Vec<_> = (1..=3).map(|i| committer.submit(item(i))).collect();
    control.step(Step::Pass);
    assert_eq!(within(ok).await.unwrap(), 0);

    assert_eq!(control.next_batch().await.len(), 3);
    // Queued behind the failing batch: they must be failed too, never handed to the sink.
    let queued: Vec<_> = (4..=6).map(|i| committer.submit(item(i))).collect();
    control.step(Step::Fail { poisons: true });

    for future in doomed {
        match within(future).await {
            Err(CommitError::Commit {
                batch_items,
                source,
            }) => {
                assert_eq!(batch_items, 3);
                assert!(source.to_string().contains("injected failure"));
            }
            other => panic!("expected the batch's commit error, got {other:?}"),
        }
    }
    for future in queued {
        match within(future).await {
            Err(CommitError::Poisoned { cause }) => assert!(cause.contains("injected failure")),
            other => panic!("expected Poisoned for a queued item, got {other:?}"),
        }
    }
    // Later submits are refused at once.
    let later = committer.submit(item(7));
    assert!(matches!(
        within(later).await,
        Err(CommitError::Poisoned { .. })
    ));

    let stats = committer.stats();
    assert!(stats.poisoned);
    assert_eq!((stats.commits, stats.failed_commits), (1, 1));
    assert_eq!(stats.failed_items, 6);
    let report = drain(&committer).await;
    assert!(report.poisoned.unwrap().contains("injected failure"));
    assert!(
        report.sink.is_some(),
        "a poisoned sink is still handed back to be closed"
    );
    assert_eq!(
        FileSink::read_all(&dir.path().join("log")).unwrap(),
        vec![item(0)]
    );
}

#[tokio::test]
async fn a_non_poisoning_failure_fails_only_its_batch() {
    let dir = disk_dir("gc-transient");
    let (committer, mut control) = controlled(&dir, CommitConfig::new("t"));

    let first = committer.submit(item(0));
    control.next_batch().await;
    let failing: Vec<_> = (1..=2).map(|i| committer.submit(item(i))).collect();
    control.step(Step::Pass);
    within(first).await.unwrap();

    control.next_batch().await;
    let after = committer.submit(item(3));
    control.step(Step::Fail { poisons: false });
    for future in failing {
        assert!(matches!(
            within(future).await,
            Err(CommitError::Commit { .. })
        ));
    }
    control.next_batch().await;
    control.step(Step::Pass);
    assert_eq!(within(after).await.unwrap(), 1);
    let stats = committer.stats();
    assert!(!stats.poisoned);
    assert_eq!(
        (stats.commits, stats.failed_commits, stats.failed_items),
        (2, 1, 2)
    );
    assert!(drain(&committer).await.poisoned.is_none());
    assert_eq!(
        FileSink::read_all(&dir.path().join("log")).unwrap(),
        vec![item(0), item(3)]
    );
}

#[tokio::test]
async fn a_panicking_sink_fails_its_waiters_and_poisons() {
    let dir = disk_dir("gc-panic");
    let (committer, mut control) = controlled(&dir, CommitConfig::new("t"));

    let in_batch = committer.submit(item(0));
    control.next_batch().await;
    let queued = committer.submit(item(1));
    control.step(Step::Panic);

    match within(in_batch).await {
        Err(CommitError::SinkPanicked {
            batch_items,
            message,
        }) => {
            assert_eq!(batch_items, 1);
            assert!(message.contains("injected panic"));
        }
        other => panic!("expected SinkPanicked, got {other:?}"),
    }
    match within(queued).await {
        Err(CommitError::Poisoned { cause }) => assert!(cause.contains("panicked")),
        other => panic!("expected Poisoned, got {other:?}"),
    }
    assert!(matches!(
        within(committer.submit(item(2))).await,
        Err(CommitError::Poisoned { .. })
    ));
    assert!(committer.stats().poisoned);
    assert!(drain(&committer).await.poisoned.is_some());
}

#[tokio::test]
async fn a_sink_returning_too_few_acks_poisons() {
    let dir = disk_dir("gc-acks");
    let (committer, mut control) = controlled(&dir, CommitConfig::new("t"));
    let future = committer.submit(item(0));
    control.next_batch().await;
    control.step(Step::DropAnAck);
    assert!(matches!(
        within(future).await,
        Err(CommitError::AckMismatch {
            expected: 1,
            returned: 0
        })
    ));
    assert!(committer.stats().poisoned);
    drain(&committer).await;
}

#[tokio::test]
async fn a_full_queue_with_fail_fast_refuses_at_once() {
    let dir = disk_dir("gc-failfast");
    let config = CommitConfig::new("t")
        .queue_capacity(2)
        .when_full(WhenFull::FailFast);
    let (committer, mut control) = controlled(&dir, config);

    let busy = committer.submit(item(0));
    control.next_batch().await;
    let queued = [committer.submit(item(1)), committer.submit(item(2))];
    // The refusal is immediate: no commit has to finish for it.
    let refused = tokio::time::timeout(Duration::from_millis(100), committer.submit(item(3)))
        .await
        .expect("FailFast answers at once");
    assert!(matches!(
        refused,
        Err(CommitError::QueueFull { capacity: 2 })
    ));
    let group = committer.submit_many(vec![item(4)]).await;
    assert!(matches!(group, Err(CommitError::QueueFull { .. })));

    control.step(Step::Pass);
    control.step(Step::Pass);
    within(busy).await.unwrap();
    for future in queued {
        within(future).await.unwrap();
    }
    // Room again.
    control.step(Step::Pass);
    within(committer.submit(item(5))).await.unwrap();
    assert_eq!(drain(&committer).await.stats.committed_items, 4);
}

#[tokio::test]
async fn a_full_queue_with_wait_holds_submitters_until_room_frees() {
    let dir = disk_dir("gc-wait");
    let config = CommitConfig::new("t")
        .queue_capacity(2)
        .when_full(WhenFull::Wait);
    let (committer, mut control) = controlled(&dir, config);

    let busy = committer.submit(item(0));
    control.next_batch().await;
    let queued = [committer.submit(item(1)), committer.submit(item(2))];
    let mut waiting = tokio::spawn({
        let committer = committer.clone();
        async move { committer.submit(item(3)).await }
    });
    // It cannot get in while the queue is full.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut waiting)
            .await
            .is_err()
    );
    assert_eq!(committer.stats().queued, 2);

    control.step(Step::Pass);
    within(busy).await.unwrap();
    // The committer took items 1 and 2: the waiting submitter got in behind them.
    assert_eq!(control.next_batch().await, vec![item(1), item(2)]);
    control.step(Step::Pass);
    control.step(Step::Pass);
    for future in queued {
        within(future).await.unwrap();
    }
    assert_eq!(within(waiting).await.unwrap().unwrap(), 3);
    drain(&committer).await;
}

#[tokio::test]
async fn submitters_waiting_for_room_are_refused_when_the_committer_is_poisoned() {
    let dir = disk_dir("gc-wait-poison");
    let config = CommitConfig::new("t").queue_capacity(1);
    let (committer, mut control) = controlled(&dir, config);

    let busy = committer.submit(item(0));
    control.next_batch().await;
    let queued = committer.submit(item(1));
    let waiting = tokio::spawn({
        let committer = committer.clone();
        async move { committer.submit(item(2)).await }
    });
    tokio::task::yield_now().await;
    control.step(Step::Fail { poisons: true });
    assert!(matches!(
        within(busy).await,
        Err(CommitError::Commit { .. })
    ));
    assert!(matches!(
        within(queued).await,
        Err(CommitError::Poisoned { .. })
    ));
    assert!(matches!(
        within(waiting).await.unwrap(),
        Err(CommitError::Poisoned { .. })
    ));
    drain(&committer).await;
}

#[tokio::test]
async fn drain_commits_everything_accepted_and_refuses_new_items() {
    let dir = disk_dir("gc-drain");
    let path = dir.path().join("log");
    let (committer, mut control) = controlled(&dir, CommitConfig::new("t"));

    let first = committer.submit(item(0));
    control.next_batch().await;
    let accepted: Vec<_> = (1..=20).map(|i| committer.submit(item(i))).collect();
    // Dropping a submit future does not take its item back.
    drop(committer.submit(item(21)));

    let draining = tokio::spawn({
        let committer = committer.clone();
        async move { committer.drain(PATIENCE).await }
    });
    while !committer.stats().closed {
        tokio::task::yield_now().await;
    }
    assert!(matches!(
        within(committer.submit(item(99))).await,
        Err(CommitError::ShuttingDown)
    ));
    assert!(matches!(
        within(committer.submit_many(vec![item(98)])).await,
        Err(CommitError::ShuttingDown)
    ));

    control.step(Step::Pass);
    control.step(Step::Pass);
    let report = within(draining).await.unwrap().unwrap();
    within(first).await.unwrap();
    for future in accepted {
        within(future).await.unwrap();
    }
    assert_eq!(report.flushed, 22);
    assert_eq!(report.stats.committed_items, 22);
    assert_eq!(report.stats.commits, 2);
    assert!(report.stats.stopped);
    assert!(report.poisoned.is_none());
    let sink = report.sink.expect("the drain hands the sink back");
    assert_eq!(sink.inner.path(), path);
    drop(sink);
    let records = FileSink::read_all(&path).unwrap();
    assert_eq!(records, (0..=21).map(item).collect::<Vec<_>>());

    // A second drain finds the committer stopped: same totals, no sink.
    let again = drain(&committer).await;
    assert_eq!(again.stats.committed_items, 22);
    assert!(again.sink.is_none());
}

#[tokio::test]
async fn a_drain_out_of_budget_reports_what_is_pending_and_can_be_retried() {
    let dir = disk_dir("gc-drain-budget");
    let (committer, mut control) = controlled(&dir, CommitConfig::new("t"));

    let busy = committer.submit(item(0));
    control.next_batch().await;
    let queued = committer.submit(item(1));
    match committer.drain(Duration::from_millis(50)).await {
        Err(CommitError::DrainTimedOut { pending, .. }) => assert_eq!(pending, 2),
        other => panic!("expected DrainTimedOut, got {other:?}"),
    }
    // Intake stays closed after the budget ran out.
    assert!(matches!(
        within(committer.submit(item(2))).await,
        Err(CommitError::ShuttingDown)
    ));
    control.step(Step::Pass);
    control.step(Step::Pass);
    let report = drain(&committer).await;
    within(busy).await.unwrap();
    within(queued).await.unwrap();
    assert_eq!(report.stats.committed_items, 2);
    assert!(report.sink.is_some(), "the retried drain gets the sink");
}

#[tokio::test]
async fn dropping_every_handle_still_commits_accepted_items() {
    let dir = disk_dir("gc-drop");
    let path = dir.path().join("log");
    let committer =
        GroupCommit::start(FileSink::create(&path).unwrap(), CommitConfig::new("t")).unwrap();
    let futures: Vec<_> = (0..10).map(|i| committer.submit(item(i))).collect();
    drop(committer);
    for future in futures {
        within(future).await.unwrap();
    }
    assert_eq!(FileSink::read_all(&path).unwrap().len(), 10);
}

#[tokio::test]
async fn submit_many_queues_all_or_nothing_and_keeps_order() {
    let dir = disk_dir("gc-many");
    let path = dir.path().join("log");
    let config = CommitConfig::new("t").queue_capacity(8);
    let committer = GroupCommit::start(FileSink::create(&path).unwrap(), config).unwrap();

    let acks = within(committer.submit_many((0..5).map(item).collect()))
        .await
        .unwrap();
    assert_eq!(acks, vec![0, 1, 2, 3, 4]);
    assert!(
        within(committer.submit_many(Vec::new()))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        within(committer.submit_many((0..9).map(item).collect())).await,
        Err(CommitError::TooManyItems {
            items: 9,
            capacity: 8
        })
    ));
    let report = drain(&committer).await;
    assert_eq!(report.stats.committed_items, 5);
    assert_eq!(FileSink::read_all(&path).unwrap().len(), 5);
}

#[tokio::test]
async fn errors_say_what_failed_and_chain_their_source() {
    let dir = disk_dir("gc-errors");
    let (committer, mut control) = controlled(&dir, CommitConfig::new("t"));
    let future = committer.submit(item(0));
    control.next_batch().await;
    control.step(Step::Fail { poisons: true });
    let error = within(future).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "the store failed to commit the batch of 1 items holding this item; \
         it was not acknowledged as durable"
    );
    assert_eq!(
        error.source().unwrap().to_string(),
        "injected failure (poisons: true)"
    );
    let refused = within(committer.submit(item(1))).await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("injected failure (poisons: true)")
    );
    assert!(refused.source().is_none());
    drain(&committer).await;
}

#[test]
fn handles_and_futures_can_cross_threads() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let dir = disk_dir("gc-send");
    let committer = GroupCommit::start(
        FileSink::create(&dir.path().join("log")).unwrap(),
        CommitConfig::default(),
    )
    .unwrap();
    send_sync(&committer);
    send(&committer.submit(item(0)));
    send(&committer.submit_many(vec![item(1)]));
    send(&committer.drain(PATIENCE));
    send_sync(&CommitError::<std::io::Error>::ShuttingDown);
}
