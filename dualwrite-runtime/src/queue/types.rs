//! The queue's data: entries to append and claimed, leases, claims, dead
//! letters, counts, errors and a backend's capabilities; the contract that
//! moves them, [`ReconciliationQueue`], is in the module root.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

#[cfg(doc)]
use super::ReconciliationQueue;
use crate::op::Key;
use crate::vocabulary::Side;

/// What a dead letter does to the later entries of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoisonPolicy {
    /// Later entries of the key wait behind the dead one until an operator
    /// retries or drops it, so the key's writes still reach the store in
    /// order. The key is counted in [`TargetStats::blocked_keys`]; new writes
    /// of the key are queued behind it too.
    #[default]
    Block,
    /// Later entries of the key go ahead without the dead one. The store may
    /// then hold a state the authoritative store never had (the dead write
    /// is missing between two applied ones); retrying the dead letter later
    /// replays it out of order. Choose it only for writes that do not depend
    /// on each other (e.g. full upserts).
    Skip,
}

/// Identifies one queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EntryId(pub u64);

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// An operation to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// The trait the operation belongs to ([`Operation::NAMESPACE`](crate::Operation::NAMESPACE)).
    pub namespace: String,
    /// The store that must apply it.
    pub target: Side,
    /// Its ordering key.
    pub key: Key,
    /// The write method, for operators; the payload holds it too.
    pub method: String,
    /// The encoding version of the payload.
    pub version: u32,
    /// The serialised operation.
    pub payload: Vec<u8>,
    /// Why it was queued rather than applied directly (the follower's error,
    /// "timed out", "key has queued work", ...).
    pub reason: String,
    /// Whether the store that was authoritative may have missed the write:
    /// its caller was cancelled while the authoritative call ran, so nobody
    /// knows whether it landed. The worker then treats the entry like an
    /// [orphan](ClaimedEntry::orphaned): it applies it to the other store
    /// first (unless a later write of the key superseded it there), then to
    /// `target`.
    pub uncertain: bool,
}

impl NewEntry {
    /// The key every unkeyed write of a namespace is filed under
    /// ([`Key::unkeyed`]): an entry of it is ordered against every key of
    /// its namespace and target (see [`ReconciliationQueue`]).
    pub fn is_unkeyed(&self) -> bool {
        self.key.is_unkeyed()
    }
}

/// A claim on an entry, held by one worker until it completes, retries,
/// releases or dead-letters the entry. A claim whose lease expired and was
/// taken by another worker is refused with [`QueueError::LeaseLost`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The entry.
    pub id: EntryId,
    /// Distinguishes this claim from later claims of the same entry.
    pub token: u64,
}

/// An entry handed to a worker.
#[derive(Debug, Clone)]
pub struct ClaimedEntry {
    /// The claim to complete, retry or dead-letter it with.
    pub lease: Lease,
    /// The trait the operation belongs to.
    pub namespace: String,
    /// The store that must apply it.
    pub target: Side,
    /// Its ordering key.
    pub key: Key,
    /// The write method.
    pub method: String,
    /// The encoding version of the payload.
    pub version: u32,
    /// The serialised operation.
    pub payload: Vec<u8>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When the entry was appended.
    pub enqueued_at: SystemTime,
    /// The error of the last failed attempt, or why it was queued.
    pub last_error: String,
    /// The entry was [prepared](ReconciliationQueue::prepare) by a writer
    /// that neither committed nor aborted it in time (it died between
    /// preparing and finishing its authoritative write), or was queued
    /// [uncertain](NewEntry::uncertain), or [committed
    /// uncertain](ReconciliationQueue::commit_uncertain). The worker applies
    /// it to the other store first (the one that was authoritative), unless
    /// a later entry of the key supersedes it there, then to `target`, so
    /// both end up holding it.
    pub orphaned: bool,
}

/// The result of [`ReconciliationQueue::claim`].
#[derive(Debug, Clone, Default)]
pub struct Claim {
    /// Claimed entries, at most one per key.
    pub entries: Vec<ClaimedEntry>,
    /// When no entry is ready, how long until the earliest pending one is.
    pub next_ready_in: Option<Duration>,
}

/// The result of [`ReconciliationQueue::complete_and_claim`]: what became of
/// each completion, and the claim made after them.
#[derive(Debug)]
pub struct Turnover {
    /// One result per lease given, in their order, each what
    /// [`complete`](ReconciliationQueue::complete) would have answered:
    /// [`QueueError::LeaseLost`] for a claim no longer held, and for every
    /// completion of a claim but one when it is given more than once.
    pub completed: Vec<Result<(), QueueError>>,
    /// The claim, made after the completions, so that it can hand out the
    /// entries they made heads of their keys. Empty, without asking the
    /// store, when the `limit` is 0.
    pub claim: Result<Claim, QueueError>,
}

/// A dead-lettered entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The entry, for [`ReconciliationQueue::retry_dead`] and [`ReconciliationQueue::drop_dead`].
    pub id: EntryId,
    /// The trait the operation belongs to.
    pub namespace: String,
    /// The store that was to apply it.
    pub target: Side,
    /// Its ordering key; later entries of this key wait behind it.
    pub key: Key,
    /// The write method.
    pub method: String,
    /// The encoding version of the payload.
    pub version: u32,
    /// The serialised operation.
    pub payload: Vec<u8>,
    /// Attempts made.
    pub attempts: u32,
    /// The last error (the store's, or the decode error).
    pub error: String,
    /// When the entry was appended.
    pub enqueued_at: SystemTime,
    /// When it was dead-lettered.
    pub died_at: SystemTime,
}

/// Counts for one target store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetStats {
    /// Entries waiting (including those blocked behind a dead letter).
    pub pending: u64,
    /// Entries claimed by a worker.
    pub in_flight: u64,
    /// Dead letters.
    pub dead: u64,
    /// Keys whose head is a dead letter, so their later entries wait.
    pub blocked_keys: u64,
    /// When the oldest pending or in-flight entry was appended.
    pub oldest_pending: Option<SystemTime>,
}

impl TargetStats {
    /// True when the store has nothing pending, in flight or dead.
    pub fn is_empty(&self) -> bool {
        self.pending == 0 && self.in_flight == 0 && self.dead == 0
    }
}

/// Counts for both target stores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Work for the old store (queued while the new one is authoritative).
    pub old: TargetStats,
    /// Work for the new store.
    pub new: TargetStats,
}

impl QueueStats {
    /// True when neither store has anything pending, in flight or dead.
    pub fn is_empty(&self) -> bool {
        self.old.is_empty() && self.new.is_empty()
    }

    /// The counts of one target.
    pub fn target(&self, side: Side) -> &TargetStats {
        match side {
            Side::Old => &self.old,
            Side::New => &self.new,
        }
    }

    pub(crate) fn target_mut(&mut self, side: Side) -> &mut TargetStats {
        match side {
            Side::Old => &mut self.old,
            Side::New => &mut self.new,
        }
    }
}

/// A failure of the queue itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The backend failed (I/O, database, connection).
    #[error("reconciliation queue backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The lease expired and another worker claimed the entry.
    #[error("the lease on queue entry {0} was lost: it expired and the entry was claimed again")]
    LeaseLost(EntryId),
    /// No dead letter has that id.
    #[error(
        "queue entry {0} is not a dead letter (it does not exist, or is pending or in flight)"
    )]
    NotDead(EntryId),
    /// The operation could not be serialised.
    #[error("the operation could not be encoded for the queue: {0}")]
    Encode(#[source] serde_json::Error),
    /// In the cross-instance mode ([`KeySync`](crate::KeySync)), the write
    /// cannot be turned into a key-level sync (it has no key).
    #[error("cross-instance key sync cannot queue this write: {0}")]
    KeySync(String),
}

/// What a backend can do of the contract of [`ReconciliationQueue`].
///
/// A table does all of it ([`QueueCapabilities::full`], the trait's
/// default); a message broker cannot. [`Builder::build`](crate::Builder::build)
/// refuses a setting that needs what the queue lacks, naming the backend and
/// the setting, and the conformance suite (`queue::testing`) skips the cases
/// a backend declares it cannot pass, listing them as skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueCapabilities {
    /// The backend's name, for errors (`"SQLite"`, `"RabbitMQ"`).
    pub backend: &'static str,
    /// [`prepare`](ReconciliationQueue::prepare), `commit`,
    /// `commit_uncertain` and `abort`: what
    /// [`Delivery::Journaled`](crate::Delivery::Journaled) and
    /// [`key_sync`](crate::Builder::key_sync) need.
    pub write_ahead: bool,
    /// A dead letter can block its key ([`PoisonPolicy::Block`]); without
    /// it the queue behaves as [`PoisonPolicy::Skip`].
    pub blocking_dead_letters: bool,
    /// A retry delay, an entry in flight or a dead letter holds back only
    /// its own key; without it, other keys (of a partition) may wait too.
    pub key_independent_delays: bool,
    /// [`has_work`](ReconciliationQueue::has_work) and
    /// [`has_later_entries`](ReconciliationQueue::has_later_entries) answer
    /// for the key alone, with what every process queued; without it they
    /// answer for a superset of the key (its partition).
    pub exact_key_work: bool,
    /// Unkeyed entries are ordered against every key (without it the
    /// backend refuses to append them).
    pub unkeyed_order: bool,
    /// [`key_entries`](ReconciliationQueue::key_entries) lists a key's line.
    pub key_entries: bool,
}

impl QueueCapabilities {
    /// Everything of the contract, for a backend named `backend`.
    pub const fn full(backend: &'static str) -> Self {
        QueueCapabilities {
            backend,
            write_ahead: true,
            blocking_dead_letters: true,
            key_independent_delays: true,
            exact_key_work: true,
            unkeyed_order: true,
            key_entries: true,
        }
    }
}
