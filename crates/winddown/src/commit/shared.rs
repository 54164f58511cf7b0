//! State shared by the handles, the submit futures and the committer thread.
//!
//! Invariants (all under `Shared::state`):
//! - An item is in `queue` only while `poisoned` is `None`: poisoning empties the queue and answers
//!   every entry, and admission refuses once `closed` or `poisoned` is set.
//! - `room` holds `capacity - queue.len()` permits while intake is open. A submitter takes permits
//!   before it enters the queue and forgets them once in; the committer gives them back when it
//!   takes items out. `room` is closed exactly when intake closes or the committer is poisoned, so
//!   that submitters waiting for room wake up and are refused.
//! - Every entry's reply is answered exactly once: by the committer after its commit, by poisoning,
//!   or by the exit guard when the thread stops. Dropping a reply unanswered makes its submitter see
//!   [`CommitError::Abandoned`], never a hang.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

#[cfg(feature = "metrics")]
use metrics::{Counter, Gauge, Histogram};
#[cfg(not(feature = "metrics"))]
use noop::{Counter, Gauge, Histogram};
use tokio::sync::{Semaphore, oneshot, watch};

use super::{CommitConfig, CommitError, CommitStats, Sink, WhenFull};

/// What a submitter is finally told about one item.
pub(super) type Outcome<S> = Result<<S as Sink>::Ack, CommitError<<S as Sink>::Error>>;
/// Where the committer sends it.
pub(super) type Reply<S> = oneshot::Sender<Outcome<S>>;

/// An accepted item waiting for its batch.
pub(super) struct Pending<S: Sink> {
    pub(super) item: S::Item,
    pub(super) bytes: usize,
    pub(super) reply: Reply<S>,
}

pub(super) struct State<S: Sink> {
    pub(super) queue: VecDeque<Pending<S>>,
    /// Items taken by the committer for the commit under way.
    pub(super) in_flight: usize,
    /// Intake is closed (drain, close, last handle dropped, thread exit).
    pub(super) closed: bool,
    /// Why the committer refuses all work, once it does.
    pub(super) poisoned: Option<String>,
    /// The committer thread has finished (the sink is handed back or dropped).
    pub(super) stopped: bool,
    /// A drain waiting to be handed the sink when the thread finishes.
    pub(super) sink_taker: Option<oneshot::Sender<S>>,
    /// The committer thread is blocked on `work` (set and cleared by it, under the lock), so an
    /// enqueue must wake it. While it commits, enqueues skip the wake-up: it takes the queue
    /// without waiting when it comes back.
    pub(super) committer_waiting: bool,
}

impl<S: Sink> State<S> {
    /// The error for a submit that arrives when intake is no longer open.
    pub(super) fn refusal(&self) -> CommitError<S::Error> {
        match &self.poisoned {
            Some(cause) => CommitError::Poisoned {
                cause: cause.clone(),
            },
            None => CommitError::ShuttingDown,
        }
    }

    fn is_open(&self) -> bool {
        !self.closed && self.poisoned.is_none()
    }
}

/// Counters behind [`CommitStats`], written by the committer thread only.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) commits: AtomicU64,
    pub(super) committed_items: AtomicU64,
    pub(super) failed_commits: AtomicU64,
    pub(super) failed_items: AtomicU64,
}

impl Counters {
    pub(super) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Metric handles, registered once at start (the recorder must be installed before).
pub(super) struct Metrics {
    pub(super) batch_items: Histogram,
    pub(super) commit_seconds: Histogram,
    pub(super) queue_depth: Gauge,
    pub(super) committed_items: Counter,
    pub(super) failed_commits: Counter,
}

#[cfg(feature = "metrics")]
pub(super) const METRIC_BATCH_ITEMS: &str = "winddown_commit_batch_items";
#[cfg(feature = "metrics")]
pub(super) const METRIC_COMMIT_SECONDS: &str = "winddown_commit_latency_seconds";
#[cfg(feature = "metrics")]
pub(super) const METRIC_QUEUE_DEPTH: &str = "winddown_commit_queue_depth";
#[cfg(feature = "metrics")]
pub(super) const METRIC_COMMITTED_ITEMS: &str = "winddown_commit_items_total";
#[cfg(feature = "metrics")]
pub(super) const METRIC_FAILED_COMMITS: &str = "winddown_commit_failed_commits_total";

/// Without the `metrics` feature: handles that record nothing, so the committer's code is one.
#[cfg(not(feature = "metrics"))]
mod noop {
    #[derive(Debug, Default)]
    pub(crate) struct Counter;
    #[derive(Debug, Default)]
    pub(crate) struct Gauge;
    #[derive(Debug, Default)]
    pub(crate) struct Histogram;

    impl Counter {
        pub(crate) fn increment(&self, _: u64) {}
    }

    impl Gauge {
        pub(crate) fn increment(&self, _: f64) {}
        pub(crate) fn decrement(&self, _: f64) {}
    }

    impl Histogram {
        pub(crate) fn record(&self, _: f64) {}
    }
}

impl Metrics {
    #[cfg(not(feature = "metrics"))]
    fn register(_name: &str) -> Self {
        Metrics {
            batch_items: Histogram,
            commit_seconds: Histogram,
            queue_depth: Gauge,
            committed_items: Counter,
            failed_commits: Counter,
        }
    }

    #[cfg(feature = "metrics")]
    fn register(name: &str) -> Self {
        metrics::describe_histogram!(METRIC_BATCH_ITEMS, "Items per group commit.");
        metrics::describe_histogram!(
            METRIC_COMMIT_SECONDS,
            metrics::Unit::Seconds,
            "Time one Sink::commit call took."
        );
        metrics::describe_gauge!(METRIC_QUEUE_DEPTH, "Items waiting for a commit.");
        metrics::describe_counter!(METRIC_COMMITTED_ITEMS, "Items committed and acknowledged.");
        metrics::describe_counter!(METRIC_FAILED_COMMITS, "Sink::commit calls that failed.");
        let name = name.to_owned();
        Metrics {
            batch_items: metrics::histogram!(METRIC_BATCH_ITEMS, "committer" => name.clone()),
            commit_seconds: metrics::histogram!(METRIC_COMMIT_SECONDS, "committer" => name.clone()),
            queue_depth: metrics::gauge!(METRIC_QUEUE_DEPTH, "committer" => name.clone()),
            committed_items: metrics::counter!(METRIC_COMMITTED_ITEMS, "committer" => name.clone()),
            failed_commits: metrics::counter!(METRIC_FAILED_COMMITS, "committer" => name.clone()),
        }
    }
}

pub(super) struct Shared<S: Sink> {
    pub(super) state: Mutex<State<S>>,
    /// Wakes the committer thread: an item arrived or intake closed.
    pub(super) work: Condvar,
    /// Free places in the queue (see the module invariants).
    pub(super) room: Arc<Semaphore>,
    /// Becomes `true` when the committer thread has finished.
    pub(super) done: watch::Sender<bool>,
    pub(super) counters: Counters,
    pub(super) metrics: Metrics,
    pub(super) capacity: usize,
    pub(super) when_full: WhenFull,
}

impl<S: Sink> Shared<S> {
    pub(super) fn new(config: &CommitConfig) -> Self {
        Shared {
            state: Mutex::new(State {
                queue: VecDeque::with_capacity(config.queue_capacity.min(4096)),
                in_flight: 0,
                closed: false,
                poisoned: None,
                stopped: false,
                sink_taker: None,
                committer_waiting: false,
            }),
            work: Condvar::new(),
            room: Arc::new(Semaphore::new(config.queue_capacity)),
            done: watch::Sender::new(false),
            counters: Counters::default(),
            metrics: Metrics::register(&config.name),
            capacity: config.queue_capacity,
            when_full: config.when_full,
        }
    }

    /// Locks the state. No code panics while holding the lock, but if some did, the state is still
    /// consistent enough to fail everyone cleanly, which beats hanging them.
    pub(super) fn lock(&self) -> MutexGuard<'_, State<S>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts items into the queue, in order, if intake is open. The caller holds `items.len()`
    /// permits of `room` and forgets them on `Ok`.
    pub(super) fn enqueue(
        &self,
        items: impl ExactSizeIterator<Item = (S::Item, usize)>,
    ) -> Result<Vec<oneshot::Receiver<Outcome<S>>>, CommitError<S::Error>> {
        let mut receivers = Vec::with_capacity(items.len());
        let wake = {
            let mut state = self.lock();
            if !state.is_open() {
                return Err(state.refusal());
            }
            for (item, bytes) in items {
                let (reply, receiver) = oneshot::channel();
                state.queue.push_back(Pending { item, bytes, reply });
                receivers.push(receiver);
            }
            // Inside the lock, so that the committer's decrement never overtakes it.
            self.metrics.queue_depth.increment(receivers.len() as f64);
            state.committer_waiting
        };
        if wake {
            self.work.notify_one();
        }
        Ok(receivers)
    }

    /// [`enqueue`](Self::enqueue) for one item, without the `Vec`: the path of every
    /// [`submit`](super::GroupCommit::submit).
    pub(super) fn enqueue_one(
        &self,
        item: S::Item,
        bytes: usize,
    ) -> Result<oneshot::Receiver<Outcome<S>>, CommitError<S::Error>> {
        let (reply, receiver) = oneshot::channel();
        let wake = {
            let mut state = self.lock();
            if !state.is_open() {
                return Err(state.refusal());
            }
            state.queue.push_back(Pending { item, bytes, reply });
            self.metrics.queue_depth.increment(1.0);
            state.committer_waiting
        };
        if wake {
            self.work.notify_one();
        }
        Ok(receiver)
    }

    /// The error for a submitter that found `room` closed.
    pub(super) fn refusal(&self) -> CommitError<S::Error> {
        self.lock().refusal()
    }

    /// Closes intake: later submits get [`CommitError::ShuttingDown`]; accepted items are still
    /// committed. Returns whether this call closed it.
    pub(super) fn close_intake(&self) -> bool {
        let newly = {
            let mut state = self.lock();
            !std::mem::replace(&mut state.closed, true)
        };
        self.room.close();
        self.work.notify_one();
        newly
    }

    pub(super) fn stats(&self) -> CommitStats {
        let (queued, in_flight, poisoned, closed, stopped) = {
            let state = self.lock();
            (
                state.queue.len(),
                state.in_flight,
                state.poisoned.is_some(),
                state.closed,
                state.stopped,
            )
        };
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CommitStats {
            queued,
            in_flight,
            commits: read(&self.counters.commits),
            committed_items: read(&self.counters.committed_items),
            failed_commits: read(&self.counters.failed_commits),
            failed_items: read(&self.counters.failed_items),
            poisoned,
            closed,
            stopped,
        }
    }
}
