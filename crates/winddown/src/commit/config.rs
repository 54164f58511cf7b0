//! How a [`GroupCommit`](super::GroupCommit) batches, queues and acknowledges.

/// What [`GroupCommit::submit`](super::GroupCommit::submit) does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WhenFull {
    /// The submit future waits until the committer has taken enough items off the queue
    /// (back-pressure on the caller). This is the default.
    #[default]
    Wait,
    /// The submit fails at once with [`CommitError::QueueFull`](super::CommitError::QueueFull)
    /// (load shedding: the caller answers "try again later" instead of queueing up latency).
    FailFast,
}

/// Configuration of a [`GroupCommit`](super::GroupCommit).
///
/// Start from [`CommitConfig::default`] (or [`CommitConfig::new`]) and change what you need:
///
/// ```
/// use winddown::commit::{CommitConfig, WhenFull};
///
/// let config = CommitConfig::new("orders")
///     .max_batch_items(512)
///     .queue_capacity(4096)
///     .when_full(WhenFull::FailFast);
/// assert_eq!(config.name(), "orders");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a CommitConfig does nothing until it is passed to GroupCommit::start"]
pub struct CommitConfig {
    pub(crate) name: String,
    pub(crate) max_batch_items: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) when_full: WhenFull,
}

impl Default for CommitConfig {
    /// Name `"default"`, batches of at most 1024 items and 8 MiB, a queue of 8192 items,
    /// [`WhenFull::Wait`].
    fn default() -> Self {
        CommitConfig {
            name: "default".to_owned(),
            max_batch_items: 1024,
            max_batch_bytes: 8 << 20,
            queue_capacity: 8192,
            when_full: WhenFull::Wait,
        }
    }
}

impl CommitConfig {
    /// The default configuration under another name. The name labels the committer thread
    /// (`wd-commit-{name}`; Linux shows its first 15 bytes), the metrics
    /// (`committer="{name}"`) and the logs, so give each committer of a process its own.
    pub fn new(name: impl Into<String>) -> Self {
        CommitConfig {
            name: name.into(),
            ..CommitConfig::default()
        }
    }

    /// At most this many items go into one [`Sink::commit`](super::Sink::commit) call.
    /// `1` turns group commit off (one commit per item).
    ///
    /// # Panics
    ///
    /// If `items` is 0.
    pub fn max_batch_items(mut self, items: usize) -> Self {
        assert!(
            items > 0,
            "CommitConfig::max_batch_items must be at least 1"
        );
        self.max_batch_items = items;
        self
    }

    /// At most this many bytes, as counted by [`Sink::item_bytes`](super::Sink::item_bytes), go
    /// into one commit. A single item larger than this is committed alone rather than refused.
    pub fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes;
        self
    }

    /// At most this many items wait in the queue (not counting the batch being committed).
    ///
    /// # Panics
    ///
    /// If `items` is 0 or more than `u32::MAX`.
    pub fn queue_capacity(mut self, items: usize) -> Self {
        assert!(items > 0, "CommitConfig::queue_capacity must be at least 1");
        assert!(
            u32::try_from(items).is_ok(),
            "CommitConfig::queue_capacity must fit in a u32"
        );
        self.queue_capacity = items;
        self
    }

    /// What a submit does when the queue is full.
    pub fn when_full(mut self, policy: WhenFull) -> Self {
        self.when_full = policy;
        self
    }

    /// The committer's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}
