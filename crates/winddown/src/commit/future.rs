//! The futures returned by [`GroupCommit::submit`](super::GroupCommit::submit) and
//! [`GroupCommit::submit_many`](super::GroupCommit::submit_many).

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::sync::oneshot;

use super::shared::Outcome;
use super::{CommitError, Sink};

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
/// What a [`SubmitMany`] resolves with.
type ManyOutcome<S> = Result<Vec<<S as Sink>::Ack>, CommitError<<S as Sink>::Error>>;

/// Resolves with the item's ack once the batch holding it is durable, or with the error that
/// prevented it. Returned by [`GroupCommit::submit`](super::GroupCommit::submit).
///
/// # Cancellation safety
///
/// Dropping this future does not take the item back. If the item was queued (it is, as soon as
/// `submit` returns, whenever the queue had room), it is still committed; you just do not learn the
/// outcome. Only with [`WhenFull::Wait`](super::WhenFull::Wait) and a full queue is the item still
/// held by the future, to be queued when it is first polled and room frees up: dropping it then
/// drops the item unsubmitted.
#[must_use = "the item may be queued already; await the future to learn whether it is durable"]
pub struct Submit<S: Sink> {
    state: SubmitState<S>,
}

enum SubmitState<S: Sink> {
    Queued(oneshot::Receiver<Outcome<S>>),
    Refused(Option<CommitError<S::Error>>),
    WaitingForRoom(Boxed<Outcome<S>>),
}

impl<S: Sink> Submit<S> {
    pub(super) fn queued(receiver: oneshot::Receiver<Outcome<S>>) -> Self {
        Submit {
            state: SubmitState::Queued(receiver),
        }
    }

    pub(super) fn refused(error: CommitError<S::Error>) -> Self {
        Submit {
            state: SubmitState::Refused(Some(error)),
        }
    }

    pub(super) fn waiting(future: Boxed<Outcome<S>>) -> Self {
        Submit {
            state: SubmitState::WaitingForRoom(future),
        }
    }
}

// Every field is a heap pointer or plain data; none is pinned structurally.
impl<S: Sink> Unpin for Submit<S> {}

impl<S: Sink> Future for Submit<S> {
    type Output = Result<S::Ack, CommitError<S::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            SubmitState::Queued(receiver) => {
                Poll::Ready(flatten::<S>(ready!(Pin::new(receiver).poll(cx))))
            }
            SubmitState::Refused(error) => {
                Poll::Ready(Err(error.take().expect("Submit polled after it completed")))
            }
            SubmitState::WaitingForRoom(future) => future.as_mut().poll(cx),
        }
    }
}

impl<S: Sink> fmt::Debug for Submit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            SubmitState::Queued(_) => "queued",
            SubmitState::Refused(_) => "refused",
            SubmitState::WaitingForRoom(_) => "waiting for room",
        };
        f.debug_struct("Submit").field("state", &state).finish()
    }
}

/// Resolves with the acks of all items, in order, once every one is durable, or with the first
/// error (in item order). Returned by [`GroupCommit::submit_many`](super::GroupCommit::submit_many).
///
/// The items are queued together (all or none) and one after the other, but a group larger than
/// the batch bounds, or one that arrives while a batch is being taken, spans several commits. So
/// when this resolves with an error, **some of the items may have been committed** (those of an
/// earlier batch); which ones is not reported. Use [`submit`](super::GroupCommit::submit) per item
/// when you need to know.
///
/// # Cancellation safety
///
/// As for [`Submit`]: dropping the future does not take back items that were queued; they are
/// still committed. Only a group still waiting for room ([`WhenFull::Wait`](super::WhenFull::Wait))
/// is dropped unsubmitted.
#[must_use = "the items may be queued already; await the future to learn whether they are durable"]
pub struct SubmitMany<S: Sink> {
    state: ManyState<S>,
}

enum ManyState<S: Sink> {
    Queued {
        receivers: VecDeque<oneshot::Receiver<Outcome<S>>>,
        acks: Vec<S::Ack>,
    },
    Refused(Option<CommitError<S::Error>>),
    WaitingForRoom(Boxed<ManyOutcome<S>>),
}

impl<S: Sink> SubmitMany<S> {
    pub(super) fn queued(receivers: Vec<oneshot::Receiver<Outcome<S>>>) -> Self {
        SubmitMany {
            state: ManyState::Queued {
                acks: Vec::with_capacity(receivers.len()),
                receivers: receivers.into(),
            },
        }
    }

    pub(super) fn refused(error: CommitError<S::Error>) -> Self {
        SubmitMany {
            state: ManyState::Refused(Some(error)),
        }
    }

    pub(super) fn waiting(future: Boxed<ManyOutcome<S>>) -> Self {
        SubmitMany {
            state: ManyState::WaitingForRoom(future),
        }
    }
}

// As for `Submit`: nothing is pinned structurally.
impl<S: Sink> Unpin for SubmitMany<S> {}

impl<S: Sink> Future for SubmitMany<S> {
    type Output = Result<Vec<S::Ack>, CommitError<S::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            ManyState::Queued { receivers, acks } => {
                while let Some(receiver) = receivers.front_mut() {
                    let ack = flatten::<S>(ready!(Pin::new(receiver).poll(cx)))?;
                    acks.push(ack);
                    receivers.pop_front();
                }
                Poll::Ready(Ok(std::mem::take(acks)))
            }
            ManyState::Refused(error) => Poll::Ready(Err(error
                .take()
                .expect("SubmitMany polled after it completed"))),
            ManyState::WaitingForRoom(future) => future.as_mut().poll(cx),
        }
    }
}

impl<S: Sink> fmt::Debug for SubmitMany<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("SubmitMany");
        match &self.state {
            ManyState::Queued { receivers, acks } => out
                .field("state", &"queued")
                .field("durable", &acks.len())
                .field("waiting", &receivers.len()),
            ManyState::Refused(_) => out.field("state", &"refused"),
            ManyState::WaitingForRoom(_) => out.field("state", &"waiting for room"),
        };
        out.finish()
    }
}

/// An answer from the committer, or [`CommitError::Abandoned`] if it dropped the reply unanswered.
pub(super) fn flatten<S: Sink>(
    answer: Result<Outcome<S>, oneshot::error::RecvError>,
) -> Outcome<S> {
    answer.unwrap_or(Err(CommitError::Abandoned))
}
