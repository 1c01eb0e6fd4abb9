//! The requests to the writer thread. Each carries the channel of its
//! answer, typed for what its caller waits for; a write's answer is held in
//! its [`Reply`] until the batch that holds the write has committed.

use std::time::Duration;

use tokio::sync::oneshot;

use crate::op::Key;
use crate::queue::{
    Claim, DeadLetter, EntryId, Lease, NewEntry, QueueError, QueueStats, QueuedEntry,
};
use crate::vocabulary::Side;

pub(super) enum Command {
    Write(Write),
    /// Writes that go into one batch, in this order (the writer never
    /// splits them across transactions, unless the batch fails and its
    /// writes are retried one by one).
    Together(Vec<Write>),
    Read(Read),
    Close(oneshot::Sender<()>),
}

/// A write, run in a batch by the writer. `Commit` and `CommitUncertain`
/// have no answer: their callers do not wait (see
/// [`SqliteQueue::commit`](super::SqliteQueue)).
pub(super) enum Write {
    Append(NewEntry, Reply<EntryId>),
    Prepare(NewEntry, Duration, Reply<EntryId>),
    Commit(EntryId),
    CommitUncertain(EntryId),
    Abort(EntryId, Reply<()>),
    HasLater(Lease, Reply<bool>),
    Renew(Lease, Duration, Reply<()>),
    SettleOrphan(EntryId, Reply<()>),
    Flush(Reply<()>),
    Claim {
        namespace: String,
        limit: usize,
        lease: Duration,
        reply: Reply<Claim>,
    },
    Complete(Lease, Reply<()>),
    RetryLater {
        lease: Lease,
        error: String,
        delay: Duration,
        reply: Reply<()>,
    },
    Release(Lease, Reply<()>),
    DeadLetter {
        lease: Lease,
        error: String,
        reply: Reply<()>,
    },
    RetryDead(EntryId, Reply<()>),
    DropDead(EntryId, Reply<()>),
}

impl Write {
    /// The entry this write inserts, its state and how long until it is
    /// ready (or, prepared, until it is presumed orphaned).
    pub(super) fn inserted(&self) -> Option<(&NewEntry, &'static str, Duration)> {
        match self {
            Write::Append(entry, _) => Some((entry, "pending", Duration::ZERO)),
            Write::Prepare(entry, expiry, _) => Some((entry, "prepared", *expiry)),
            _ => None,
        }
    }

    /// The entry this write inserts and where its id goes.
    pub(super) fn insertion(&mut self) -> Option<(&NewEntry, &mut Reply<EntryId>)> {
        match self {
            Write::Append(entry, reply) | Write::Prepare(entry, _, reply) => Some((entry, reply)),
            _ => None,
        }
    }

    /// This write's answer, whatever its type; `None` for the writes whose
    /// callers do not wait.
    pub(super) fn reply(&mut self) -> Option<&mut dyn Answer> {
        match self {
            Write::Commit(_) | Write::CommitUncertain(_) => None,
            Write::Append(_, reply) | Write::Prepare(_, _, reply) => Some(reply),
            Write::HasLater(_, reply) => Some(reply),
            Write::Claim { reply, .. } => Some(reply),
            Write::Abort(_, reply)
            | Write::Renew(_, _, reply)
            | Write::SettleOrphan(_, reply)
            | Write::Flush(reply)
            | Write::Complete(_, reply)
            | Write::RetryLater { reply, .. }
            | Write::Release(_, reply)
            | Write::DeadLetter { reply, .. }
            | Write::RetryDead(_, reply)
            | Write::DropDead(_, reply) => Some(reply),
        }
    }

    /// Makes `error` this write's answer.
    pub(super) fn fail(&mut self, error: QueueError) {
        if let Some(reply) = self.reply() {
            reply.fail(error);
        }
    }

    pub(super) fn describe(&self) -> &'static str {
        match self {
            Write::Append(..) => "append",
            Write::Prepare(..) => "prepare an entry",
            Write::Commit(_) => "commit a prepared entry",
            Write::CommitUncertain(_) => "mark a prepared entry uncertain",
            Write::Abort(..) => "abort a prepared entry",
            Write::Renew(..) => "renew a lease",
            Write::SettleOrphan(..) => "settle an orphan",
            Write::Flush(_) => "flush",
            Write::HasLater(..) => "look for later entries",
            Write::Claim { .. } => "claim entries",
            Write::Complete(..) => "complete an entry",
            Write::RetryLater { .. } => "schedule a retry",
            Write::Release(..) => "release an entry",
            Write::DeadLetter { .. } => "dead-letter an entry",
            Write::RetryDead(..) => "retry a dead letter",
            Write::DropDead(..) => "drop a dead letter",
        }
    }
}

/// The answer channel of a read.
pub(super) type ReadReply<T> = oneshot::Sender<Result<T, QueueError>>;

/// A read, served from the read pool beside the writer.
pub(super) enum Read {
    HasWork {
        namespace: String,
        target: Side,
        key: Key,
        reply: ReadReply<bool>,
    },
    DeadLetters(ReadReply<Vec<DeadLetter>>),
    Stats(ReadReply<QueueStats>),
    KeyEntries {
        namespace: String,
        target: Side,
        key: Key,
        reply: ReadReply<Vec<QueuedEntry>>,
    },
}

impl Read {
    pub(super) fn describe(&self) -> &'static str {
        match self {
            Read::HasWork { .. } => "check for queued work",
            Read::DeadLetters(_) => "list dead letters",
            Read::Stats(_) => "count entries",
            Read::KeyEntries { .. } => "list the entries of a key",
        }
    }
}

/// The answer to a write: the result, once the batch has run it, and the
/// channel to send it down after the commit.
pub(super) struct Reply<T> {
    sender: Option<oneshot::Sender<Result<T, QueueError>>>,
    result: Option<Result<T, QueueError>>,
}

impl<T> Reply<T> {
    pub(super) fn channel() -> (Reply<T>, oneshot::Receiver<Result<T, QueueError>>) {
        let (sender, receiver) = oneshot::channel();
        let reply = Reply {
            sender: Some(sender),
            result: None,
        };
        (reply, receiver)
    }

    /// Sets (or replaces) the result to send.
    pub(super) fn set(&mut self, result: Result<T, QueueError>) {
        self.result = Some(result);
    }

    /// Sends the result; gives it back if the caller stopped listening.
    pub(super) fn send(&mut self) -> Option<Result<T, QueueError>> {
        let result = self.result.take()?;
        match self.sender.take() {
            Some(sender) => sender.send(result).err(),
            None => Some(result),
        }
    }
}

/// What the writer does to the [`Reply`] of every write alike, whatever its
/// type.
pub(super) trait Answer {
    /// Makes `error` the result.
    fn fail(&mut self, error: QueueError);

    /// Sends the result, if the caller still listens.
    fn answer(&mut self);
}

impl<T> Answer for Reply<T> {
    fn fail(&mut self, error: QueueError) {
        self.set(Err(error));
    }

    fn answer(&mut self) {
        let _ = self.send();
    }
}
