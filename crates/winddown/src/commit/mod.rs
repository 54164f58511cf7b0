//! Group commit: acknowledge an item only once the batch holding it is durable.
//!
//! (Being built — see issue 3. The `Sink` trait below is the contract the stores implement.)

/// A store that makes a batch of items durable. The committer owns it on one thread and calls
/// [`Sink::commit`] with every item that gathered while the previous commit ran.
pub trait Sink: Send + 'static {
    /// What a submitter hands in.
    type Item: Send + 'static;
    /// What a submitter gets back once its item is durable (for depot: the assigned sequence numbers).
    type Ack: Send + 'static;
    /// Why a commit failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Makes the whole batch durable (one transaction, one fsync) and returns one ack per item, in
    /// order. Returning `Ok` is a promise that every item is on stable storage.
    fn commit(&mut self, batch: &[Self::Item]) -> Result<Vec<Self::Ack>, Self::Error>;

    /// How many bytes an item counts for in the batch and queue bounds.
    fn item_bytes(_item: &Self::Item) -> usize {
        0
    }

    /// Whether a failed commit leaves the store in a state it can no longer vouch for (for example a
    /// failed fsync): then the committer is poisoned and refuses all later work. Errors that left the
    /// store unchanged (a rolled-back transaction on a full disk) may return `false`.
    fn poisons(_error: &Self::Error) -> bool {
        true
    }
}
