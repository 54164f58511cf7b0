//! The committer thread: owns the sink, takes batches off the queue, commits, answers.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use super::shared::{Counters, Outcome, Reply, Shared};
use super::{CommitConfig, CommitError, Sink};
use crate::report::error_chain;

/// The body of the committer thread. Returns when intake is closed and the queue is empty.
pub(super) fn run<S: Sink>(shared: Arc<Shared<S>>, sink: S, config: CommitConfig) {
    // Declared first so it is dropped last, after the sink, even when unwinding.
    let _exit = ExitGuard { shared: &shared };
    let mut committer = Committer {
        shared: &shared,
        sink,
        max_items: config.max_batch_items,
        max_bytes: config.max_batch_bytes,
        name: &config.name,
        items: Vec::with_capacity(config.max_batch_items.min(4096)),
        replies: Vec::with_capacity(config.max_batch_items.min(4096)),
    };
    while committer.take_batch() {
        committer.commit_batch();
    }
    committer.hand_back_sink();
}

struct Committer<'a, S: Sink> {
    shared: &'a Shared<S>,
    sink: S,
    max_items: usize,
    max_bytes: usize,
    name: &'a str,
    /// The batch being committed; `replies[i]` answers `items[i]`.
    items: Vec<S::Item>,
    replies: Vec<Reply<S>>,
}

impl<S: Sink> Committer<'_, S> {
    /// Waits for work and takes the next batch. Returns `false` when intake is closed and the
    /// queue is empty: time to stop.
    fn take_batch(&mut self) -> bool {
        let mut state = self.shared.lock();
        while state.queue.is_empty() {
            if state.closed {
                return false;
            }
            state.committer_waiting = true;
            state = self
                .shared
                .work
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            state.committer_waiting = false;
        }
        let mut bytes = 0usize;
        while let Some(next) = state.queue.front() {
            let full = self.items.len() >= self.max_items
                || (!self.items.is_empty() && bytes.saturating_add(next.bytes) > self.max_bytes);
            if full {
                break;
            }
            let Some(pending) = state.queue.pop_front() else {
                break;
            };
            bytes = bytes.saturating_add(pending.bytes);
            self.items.push(pending.item);
            self.replies.push(pending.reply);
        }
        let taken = self.items.len();
        state.in_flight = taken;
        self.shared.metrics.queue_depth.decrement(taken as f64);
        drop(state);
        // The taken items no longer occupy the queue: the next batch gathers while this one commits.
        self.shared.room.add_permits(taken);
        true
    }

    /// Commits the taken batch once and answers every item of it.
    fn commit_batch(&mut self) {
        let batch_items = self.items.len();
        let started = Instant::now();
        let sink = &mut self.sink;
        let items = &self.items[..];
        let result = catch_unwind(AssertUnwindSafe(|| sink.commit(items)));
        let elapsed = started.elapsed();
        self.items.clear();

        let metrics = &self.shared.metrics;
        let counters = &self.shared.counters;
        metrics.commit_seconds.record(elapsed.as_secs_f64());
        metrics.batch_items.record(batch_items as f64);

        let answer: Box<dyn Fn() -> Outcome<S>> = match result {
            Ok(Ok(acks)) if acks.len() == batch_items => {
                Counters::add(&counters.commits, 1);
                Counters::add(&counters.committed_items, batch_items);
                metrics.committed_items.increment(batch_items as u64);
                self.shared.lock().in_flight = 0;
                for (reply, ack) in self.replies.drain(..).zip(acks) {
                    // A submitter that dropped its future no longer listens; its item is durable.
                    let _ = reply.send(Ok(ack));
                }
                return;
            }
            Ok(Ok(acks)) => {
                let returned = acks.len();
                drop(acks);
                let error = CommitError::<S::Error>::AckMismatch {
                    expected: batch_items,
                    returned,
                };
                self.poison(error_chain(&error));
                Box::new(move || {
                    Err(CommitError::AckMismatch {
                        expected: batch_items,
                        returned,
                    })
                })
            }
            Ok(Err(error)) => {
                let poisons = S::poisons(&error);
                let cause = error_chain(&error);
                if poisons {
                    self.poison(cause);
                } else {
                    tracing::warn!(
                        committer = self.name,
                        batch_items,
                        error = %cause,
                        "commit failed; the store says it is unchanged, so the committer goes on"
                    );
                }
                let source = Arc::new(error);
                Box::new(move || {
                    Err(CommitError::Commit {
                        batch_items,
                        source: Arc::clone(&source),
                    })
                })
            }
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                self.poison(format!("the store panicked while committing: {message}"));
                Box::new(move || {
                    Err(CommitError::SinkPanicked {
                        batch_items,
                        message: message.clone(),
                    })
                })
            }
        };
        Counters::add(&counters.failed_commits, 1);
        Counters::add(&counters.failed_items, batch_items);
        metrics.failed_commits.increment(1);
        self.shared.lock().in_flight = 0;
        for reply in self.replies.drain(..) {
            let _ = reply.send(answer());
        }
    }

    /// Refuses all further work and fails everything queued with [`CommitError::Poisoned`].
    /// Runs before the failed batch is answered, so that a submitter who reacts to its error by
    /// submitting again is refused at once.
    fn poison(&self, cause: String) {
        tracing::error!(
            committer = self.name,
            cause = %cause,
            "committer poisoned: it refuses all further items"
        );
        let drained: Vec<_> = {
            let mut state = self.shared.lock();
            state.poisoned.get_or_insert_with(|| cause.clone());
            let drained: Vec<_> = state.queue.drain(..).collect();
            self.shared
                .metrics
                .queue_depth
                .decrement(drained.len() as f64);
            drained
        };
        self.shared.room.close();
        Counters::add(&self.shared.counters.failed_items, drained.len());
        for pending in drained {
            let _ = pending.reply.send(Err(CommitError::Poisoned {
                cause: cause.clone(),
            }));
        }
    }

    /// Gives the sink to the drain waiting for it, or drops it here, on the committer thread.
    fn hand_back_sink(self) {
        let taker = {
            let mut state = self.shared.lock();
            state.stopped = true;
            state.sink_taker.take()
        };
        if let Some(taker) = taker {
            // If the drain gave up waiting, the sink comes back and is dropped here.
            let _ = taker.send(self.sink);
        }
    }
}

/// Runs when the thread ends, normally or by a panic in the committer itself (the sink's panics
/// are caught): closes intake, fails whatever is still queued, and tells drains the thread is done.
struct ExitGuard<'a, S: Sink> {
    shared: &'a Shared<S>,
}

impl<S: Sink> Drop for ExitGuard<'_, S> {
    fn drop(&mut self) {
        let (leftover, refusal_cause) = {
            let mut state = self.shared.lock();
            state.closed = true;
            state.stopped = true;
            state.in_flight = 0;
            state.sink_taker = None;
            if std::thread::panicking() && state.poisoned.is_none() {
                state.poisoned = Some("the committer thread panicked".to_owned());
            }
            let leftover: Vec<_> = state.queue.drain(..).collect();
            (leftover, state.poisoned.clone())
        };
        self.shared.room.close();
        self.shared
            .metrics
            .queue_depth
            .decrement(leftover.len() as f64);
        Counters::add(&self.shared.counters.failed_items, leftover.len());
        for pending in leftover {
            let _ = pending.reply.send(Err(match &refusal_cause {
                Some(cause) => CommitError::Poisoned {
                    cause: cause.clone(),
                },
                None => CommitError::ShuttingDown,
            }));
        }
        self.shared.done.send_replace(true);
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}
