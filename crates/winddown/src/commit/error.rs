//! The one error type of the group committer.

use std::sync::Arc;
use std::time::Duration;

/// Why an item was not acknowledged as durable, or why a drain did not finish.
///
/// `E` is the sink's [`Sink::Error`](super::Sink::Error). The variants say whether the item may
/// still have reached storage: only [`Commit`](Self::Commit), [`SinkPanicked`](Self::SinkPanicked),
/// [`AckMismatch`](Self::AckMismatch) and [`Abandoned`](Self::Abandoned) concern an item that was
/// handed to the sink; every other variant means the item never left the queue (or never entered it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError<E> {
    /// The sink failed to commit the batch that held this item. The item is not acknowledged; the
    /// sink's error is the [`source`](std::error::Error::source). If the sink said the error
    /// [poisons](super::Sink::poisons) it, the committer is now poisoned.
    #[error(
        "the store failed to commit the batch of {batch_items} items holding this item; \
         it was not acknowledged as durable"
    )]
    Commit {
        /// How many items the failed batch held (all of them got this error).
        batch_items: usize,
        /// The sink's error, shared by every waiter of the batch.
        #[source]
        source: Arc<E>,
    },

    /// The sink panicked while committing the batch that held this item. The item is not
    /// acknowledged and the committer is poisoned: a store that panicked mid-write cannot vouch for
    /// its state.
    #[error(
        "the store panicked while committing the batch of {batch_items} items holding this item \
         ({message}); it was not acknowledged and the committer is now poisoned"
    )]
    SinkPanicked {
        /// How many items the batch held.
        batch_items: usize,
        /// The panic message, if it was a string.
        message: String,
    },

    /// The sink broke its contract: its commit returned `Ok` with a different number of acks than
    /// items. The batch may be on disk, but no ack can be matched to its item, so none is given and
    /// the committer is poisoned.
    #[error(
        "the store returned {returned} acknowledgements for a batch of {expected} items \
         (a bug in the Sink implementation); the committer is now poisoned"
    )]
    AckMismatch {
        /// Items in the batch.
        expected: usize,
        /// Acks the sink returned.
        returned: usize,
    },

    /// The committer was poisoned by an earlier failure and accepts no more items. Items that were
    /// queued when it was poisoned get this too; they were never handed to the sink.
    #[error(
        "the committer refuses items since an earlier commit failed ({cause}); \
         drain it, close the store and reopen it to recover"
    )]
    Poisoned {
        /// The failure that poisoned the committer, as text (with its source chain).
        cause: String,
    },

    /// The queue was full and the committer is configured with
    /// [`WhenFull::FailFast`](super::WhenFull::FailFast). The item was not queued.
    #[error("the commit queue is full ({capacity} items waiting); retry later or shed load")]
    QueueFull {
        /// The queue capacity, in items.
        capacity: usize,
    },

    /// [`GroupCommit::submit_many`](super::GroupCommit::submit_many) was given more items than the
    /// queue can ever hold at once. Nothing was queued.
    #[error(
        "cannot queue {items} items at once: the commit queue holds at most {capacity}; \
         submit them in smaller groups"
    )]
    TooManyItems {
        /// Items in the refused submission.
        items: usize,
        /// The queue capacity, in items.
        capacity: usize,
    },

    /// The committer is draining or has stopped: it accepts no new items. The item was not queued.
    #[error("the committer is shutting down and accepts no new items")]
    ShuttingDown,

    /// The committer thread stopped without saying what became of this item, which it had already
    /// taken for a commit: the item may or may not be durable. This means a bug in the committer.
    #[error(
        "the committer thread stopped before reporting on this item; \
         it may or may not be durable"
    )]
    Abandoned,

    /// [`GroupCommit::drain`](super::GroupCommit::drain) ran out of its budget with items still
    /// queued or being committed. Intake stays closed and the committer keeps committing them; drain
    /// again to wait for the rest.
    #[error(
        "the committer did not finish within its drain budget of {budget:?}; \
         {pending} items were still queued or being committed"
    )]
    DrainTimedOut {
        /// The budget the drain was given.
        budget: Duration,
        /// Items still queued or in the commit under way when the budget ran out.
        pending: usize,
    },

    /// The committer thread could not be started. The sink was dropped.
    #[error("could not start the committer thread")]
    Start {
        /// The error from the OS.
        #[source]
        source: std::io::Error,
    },
}
