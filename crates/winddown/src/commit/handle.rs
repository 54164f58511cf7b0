//! The [`GroupCommit`] handle, its stats and its drain report.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::TryAcquireError;
use tokio::sync::oneshot;

use super::committer;
use super::future::{Submit, SubmitMany, flatten};
use super::shared::Shared;
use super::{CommitConfig, CommitError, Sink, WhenFull};

/// A group committer: many submitters, one sink on one thread, one commit per batch.
///
/// Cheap to clone (an [`Arc`]); every clone feeds the same queue. When the last clone is dropped
/// without a [`drain`](Self::drain), intake closes, the thread still commits what was accepted and
/// then drops the sink on its own thread — but nobody waits for it, so a process that exits right
/// after may cut that short. Drain before exiting.
///
/// ```no_run
/// # async fn demo<S: winddown::commit::Sink>(sink: S, item: S::Item)
/// #     -> Result<(), winddown::commit::CommitError<S::Error>> {
/// use std::time::Duration;
/// use winddown::commit::{CommitConfig, GroupCommit};
///
/// let committer = GroupCommit::start(sink, CommitConfig::new("orders"))?;
/// let ack = committer.submit(item).await?; // the item is durable now
/// # let _ = ack;
/// // At shutdown: refuse new items, commit the accepted ones, get the store back to close it.
/// let report = committer.drain(Duration::from_secs(5)).await?;
/// drop(report.sink);
/// # Ok(()) }
/// ```
pub struct GroupCommit<S: Sink> {
    inner: Arc<Inner<S>>,
}

/// Owned by the handles only: when the last one goes, intake closes.
struct Inner<S: Sink> {
    shared: Arc<Shared<S>>,
}

impl<S: Sink> Drop for Inner<S> {
    fn drop(&mut self) {
        self.shared.close_intake();
    }
}

impl<S: Sink> Clone for GroupCommit<S> {
    fn clone(&self) -> Self {
        GroupCommit {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: Sink> fmt::Debug for GroupCommit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupCommit")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<S: Sink> GroupCommit<S> {
    /// Moves `sink` onto a new committer thread (named `wd-commit-{name}`) and returns the handle.
    ///
    /// Install the `metrics` recorder before calling this: the metric handles are registered here.
    ///
    /// # Errors
    ///
    /// [`CommitError::Start`] if the OS refuses the thread; the sink is dropped.
    pub fn start(sink: S, config: CommitConfig) -> Result<Self, CommitError<S::Error>> {
        let shared = Arc::new(Shared::new(&config));
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(format!("wd-commit-{}", config.name))
            .spawn(move || committer::run(thread_shared, sink, config))
            .map_err(|source| CommitError::Start { source })?;
        Ok(GroupCommit {
            inner: Arc::new(Inner { shared }),
        })
    }

    /// Queues `item` and returns a future that resolves with its ack once the batch holding it is
    /// durable (the [`Sink::commit`](super::Sink::commit) that wrote it returned `Ok`), or with
    /// the error that prevented it.
    ///
    /// The item is queued during this call when the queue has room, so items submitted one after
    /// the other from one task are committed in that order. When the queue is full,
    /// [`WhenFull::FailFast`] makes the future resolve at once with [`CommitError::QueueFull`];
    /// [`WhenFull::Wait`] makes it wait for room first. A poisoned or closing committer refuses the
    /// item at once ([`CommitError::Poisoned`], [`CommitError::ShuttingDown`]).
    ///
    /// # Cancellation safety
    ///
    /// Dropping the future does **not** un-submit the item: once queued it may still be committed,
    /// and you will not learn its outcome. See [`Submit`].
    pub fn submit(&self, item: S::Item) -> Submit<S> {
        let shared = &self.inner.shared;
        let bytes = S::item_bytes(&item);
        match shared.room.try_acquire_many(1) {
            Ok(permit) => match shared.enqueue_one(item, bytes) {
                Ok(receiver) => {
                    permit.forget();
                    Submit::queued(receiver)
                }
                Err(refusal) => Submit::refused(refusal),
            },
            Err(TryAcquireError::Closed) => Submit::refused(shared.refusal()),
            Err(TryAcquireError::NoPermits) => match shared.when_full {
                WhenFull::FailFast => Submit::refused(CommitError::QueueFull {
                    capacity: shared.capacity,
                }),
                WhenFull::Wait => {
                    let shared = Arc::clone(shared);
                    Submit::waiting(Box::pin(async move {
                        let Ok(permit) = Arc::clone(&shared.room).acquire_many_owned(1).await
                        else {
                            return Err(shared.refusal());
                        };
                        let receiver = shared.enqueue_one(item, bytes)?;
                        permit.forget();
                        drop(shared);
                        flatten::<S>(receiver.await)
                    }))
                }
            },
        }
    }

    /// Queues all `items` together (all or none, contiguous and in order) and returns a future
    /// that resolves with their acks once all are durable, or with the first error.
    ///
    /// The group may span several batches, so after an error some items may be committed: see
    /// [`SubmitMany`]. An empty group resolves at once with no acks.
    ///
    /// # Errors
    ///
    /// As [`submit`](Self::submit), and [`CommitError::TooManyItems`] if the group is larger than
    /// the queue capacity.
    ///
    /// # Cancellation safety
    ///
    /// Dropping the future does **not** un-submit the items. See [`SubmitMany`].
    pub fn submit_many(&self, items: Vec<S::Item>) -> SubmitMany<S> {
        let shared = &self.inner.shared;
        if items.is_empty() {
            return SubmitMany::queued(Vec::new());
        }
        let count = items.len();
        let permits = match u32::try_from(count) {
            Ok(permits) if count <= shared.capacity => permits,
            _ => {
                return SubmitMany::refused(CommitError::TooManyItems {
                    items: count,
                    capacity: shared.capacity,
                });
            }
        };
        // Sized before taking the lock: `item_bytes` is the sink's code.
        let sized: Vec<(S::Item, usize)> = items
            .into_iter()
            .map(|item| {
                let bytes = S::item_bytes(&item);
                (item, bytes)
            })
            .collect();
        match shared.room.try_acquire_many(permits) {
            Ok(permit) => match shared.enqueue(sized.into_iter()) {
                Ok(receivers) => {
                    permit.forget();
                    SubmitMany::queued(receivers)
                }
                Err(refusal) => SubmitMany::refused(refusal),
            },
            Err(TryAcquireError::Closed) => SubmitMany::refused(shared.refusal()),
            Err(TryAcquireError::NoPermits) => match shared.when_full {
                WhenFull::FailFast => SubmitMany::refused(CommitError::QueueFull {
                    capacity: shared.capacity,
                }),
                WhenFull::Wait => {
                    let shared = Arc::clone(shared);
                    SubmitMany::waiting(Box::pin(async move {
                        let Ok(permit) = Arc::clone(&shared.room).acquire_many_owned(permits).await
                        else {
                            return Err(shared.refusal());
                        };
                        let receivers = shared.enqueue(sized.into_iter())?;
                        permit.forget();
                        drop(shared);
                        SubmitMany::<S>::queued(receivers).await
                    }))
                }
            },
        }
    }

    /// Closes intake without waiting: later submits, and submitters still waiting for room, get
    /// [`CommitError::ShuttingDown`]; everything already queued is still committed. Returns `true`
    /// if this call closed it, `false` if it was already closed. [`drain`](Self::drain) does this
    /// first; call it alone to stop intake early in a shutdown and drain later.
    pub fn close(&self) -> bool {
        self.inner.shared.close_intake()
    }

    /// Shuts the committer down: closes intake (like [`close`](Self::close)), waits until every
    /// item accepted before is committed (or failed), stops the thread and hands back the sink so
    /// that the caller can close the store. Waits at most `budget`.
    ///
    /// The sink goes to the drain that is waiting when the thread stops; a second concurrent drain,
    /// or one called after the thread stopped, gets the report with `sink: None`. If no drain is
    /// waiting then, the sink is dropped on the committer thread.
    ///
    /// Must be called within a Tokio runtime with the time driver enabled.
    ///
    /// # Errors
    ///
    /// [`CommitError::DrainTimedOut`] if items were still queued or being committed when the budget
    /// ran out. A committer that ends poisoned is not an error here: see
    /// [`DrainReport::poisoned`].
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe in the sense that matters at shutdown: dropping the future (or running out of
    /// budget) leaves intake closed and the committer still committing what it accepted. Call
    /// `drain` again to keep waiting and, if it is waiting when the thread stops, get the sink. If
    /// nobody waits, the thread drops the sink itself when it is done.
    pub async fn drain(&self, budget: Duration) -> Result<DrainReport<S>, CommitError<S::Error>> {
        let shared = &self.inner.shared;
        let mut done = shared.done.subscribe();
        let committed_before = shared.stats().committed_items;
        let mut sink = {
            let mut state = shared.lock();
            let wanted = !state.stopped
                && state
                    .sink_taker
                    .as_ref()
                    .is_none_or(oneshot::Sender::is_closed);
            wanted.then(|| {
                let (taker, sink) = oneshot::channel();
                state.sink_taker = Some(taker);
                sink
            })
        };
        shared.close_intake();
        let finished = tokio::time::timeout(budget, done.wait_for(|done| *done))
            .await
            .is_ok();
        let stats = shared.stats();
        if !finished {
            return Err(CommitError::DrainTimedOut {
                budget,
                pending: stats.queued + stats.in_flight,
            });
        }
        let poisoned = shared.lock().poisoned.clone();
        Ok(DrainReport {
            flushed: stats.committed_items - committed_before,
            stats,
            poisoned,
            // The thread sends the sink before it signals `done`.
            sink: sink.as_mut().and_then(|sink| sink.try_recv().ok()),
        })
    }

    /// A snapshot of the queue and counters; cheap (one short lock), for tests and status pages.
    pub fn stats(&self) -> CommitStats {
        self.inner.shared.stats()
    }
}

/// Counters and state of a [`GroupCommit`], from [`GroupCommit::stats`]. Totals are since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CommitStats {
    /// Items waiting in the queue.
    pub queued: usize,
    /// Items in the commit under way.
    pub in_flight: usize,
    /// Successful commits (batches).
    pub commits: u64,
    /// Items committed and acknowledged.
    pub committed_items: u64,
    /// Commits that failed (error, panic, or wrong number of acks).
    pub failed_commits: u64,
    /// Items that got an error after they were accepted: those of failed commits, and those still
    /// queued when the committer was poisoned.
    pub failed_items: u64,
    /// The committer is poisoned and refuses all items.
    pub poisoned: bool,
    /// Intake is closed: by [`GroupCommit::close`], [`GroupCommit::drain`], the last handle being
    /// dropped, or the thread's exit.
    pub closed: bool,
    /// The committer thread has finished.
    pub stopped: bool,
}

/// What a finished [`GroupCommit::drain`] reports.
#[non_exhaustive]
pub struct DrainReport<S> {
    /// Items committed between the start of this drain and the end of the thread: what the
    /// shutdown flushed.
    pub flushed: u64,
    /// The totals since start, when the thread stopped.
    pub stats: CommitStats,
    /// Why the committer ended poisoned, if it did: items queued after the failure were refused.
    pub poisoned: Option<String>,
    /// The sink, for the caller to close; `None` if another drain took it or the thread had
    /// already dropped it. After a poisoning failure it is handed back too (close it, do not
    /// write to it).
    pub sink: Option<S>,
}

impl<S> fmt::Debug for DrainReport<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainReport")
            .field("flushed", &self.flushed)
            .field("stats", &self.stats)
            .field("poisoned", &self.poisoned)
            .field("sink", &self.sink.as_ref().map(|_| "returned"))
            .finish()
    }
}
