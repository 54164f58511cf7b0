//! The committer's metrics, read through a real (if tiny) `metrics` recorder. One test in this
//! file, because the recorder is process-wide.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::{ControlledSink, FileSink, Step, disk_dir};
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use winddown::commit::{CommitConfig, CommitError, GroupCommit};

#[derive(Default)]
struct Values(Mutex<Vec<f64>>);

impl HistogramFn for Values {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

/// Keeps every metric labelled `committer="metrics-test"`, by name.
#[derive(Default, Clone)]
struct TestRecorder {
    counters: Arc<Mutex<HashMap<String, Arc<AtomicU64>>>>,
    gauges: Arc<Mutex<HashMap<String, Arc<AtomicU64>>>>,
    histograms: Arc<Mutex<HashMap<String, Arc<Values>>>>,
}

fn ours(key: &Key) -> bool {
    key.labels()
        .any(|label| label.key() == "committer" && label.value() == "metrics-test")
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        if !ours(key) {
            return Counter::noop();
        }
        let mut map = self.counters.lock().unwrap();
        Counter::from_arc(Arc::clone(map.entry(key.name().to_owned()).or_default()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        if !ours(key) {
            return Gauge::noop();
        }
        let mut map = self.gauges.lock().unwrap();
        Gauge::from_arc(Arc::clone(map.entry(key.name().to_owned()).or_default()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        if !ours(key) {
            return Histogram::noop();
        }
        let mut map = self.histograms.lock().unwrap();
        Histogram::from_arc(Arc::clone(map.entry(key.name().to_owned()).or_default()))
    }
}

impl TestRecorder {
    fn counter(&self, name: &str) -> u64 {
        self.counters.lock().unwrap()[name].load(Ordering::Acquire)
    }

    fn gauge(&self, name: &str) -> f64 {
        f64::from_bits(self.gauges.lock().unwrap()[name].load(Ordering::Acquire))
    }

    fn histogram(&self, name: &str) -> Vec<f64> {
        self.histograms.lock().unwrap()[name]
            .0
            .lock()
            .unwrap()
            .clone()
    }
}

#[tokio::test]
async fn the_committer_reports_batches_latency_depth_and_failures() {
    let recorder = TestRecorder::default();
    metrics::set_global_recorder(recorder.clone()).expect("no recorder installed yet");

    let dir = disk_dir("gc-metrics");
    let (sink, mut control) =
        ControlledSink::new(FileSink::create(&dir.path().join("log")).unwrap());
    let committer = GroupCommit::start(sink, CommitConfig::new("metrics-test")).unwrap();

    let first = committer.submit(b"0".to_vec());
    control.next_batch().await;
    assert_eq!(recorder.gauge("winddown_commit_queue_depth"), 0.0);
    let queued: Vec<_> = (1..=5).map(|i| committer.submit(vec![i])).collect();
    assert_eq!(recorder.gauge("winddown_commit_queue_depth"), 5.0);

    control.step(Step::Pass);
    first.await.unwrap();
    control.next_batch().await;
    assert_eq!(recorder.gauge("winddown_commit_queue_depth"), 0.0);
    let failing = committer.submit(b"x".to_vec());
    control.step(Step::Pass);
    for future in queued {
        future.await.unwrap();
    }
    control.next_batch().await;
    control.step(Step::Fail { poisons: false });
    assert!(matches!(failing.await, Err(CommitError::Commit { .. })));

    assert_eq!(recorder.counter("winddown_commit_items_total"), 6);
    assert_eq!(recorder.counter("winddown_commit_failed_commits_total"), 1);
    assert_eq!(
        recorder.histogram("winddown_commit_batch_items"),
        vec![1.0, 5.0, 1.0]
    );
    let latencies = recorder.histogram("winddown_commit_latency_seconds");
    assert_eq!(latencies.len(), 3);
    assert!(
        latencies
            .iter()
            .all(|seconds| *seconds > 0.0 && *seconds < 60.0)
    );
    committer
        .drain(std::time::Duration::from_secs(20))
        .await
        .unwrap();
}
