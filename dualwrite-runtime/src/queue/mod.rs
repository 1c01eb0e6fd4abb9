//! The reconciliation queue: writes the follower has not applied yet.
//!
//! When a follower write fails, times out or panics, or when the key already
//! has queued work, the operation is appended here and a
//! [`Worker`](crate::Worker) applies it later. The queue keeps, for every
//! `(namespace, target store, key)`, a FIFO of entries; the worker only ever
//! holds the head of a key, so a key's writes reach the follower in order.
//!
//! Every entry is in exactly one state (DESIGN I7, "no silent loss"):
//!
//! - **pending**: waiting, possibly until a retry delay has passed;
//! - **in flight**: claimed by a worker under a lease; if the worker dies the
//!   lease expires and the entry is claimed again;
//! - **dead**: the retry budget ran out, or the entry could not be decoded.
//!   A dead entry stays at the head of its key and blocks the key's later
//!   entries, preserving order, until an operator retries or drops it
//!   ([`ReconciliationQueue::retry_dead`], [`ReconciliationQueue::drop_dead`]).
//!
//! Backends: [`InMemoryQueue`] (tests, and services that accept losing queued
//! work on restart) and, with the `sqlite` feature (on by default),
//! [`SqliteQueue`], the embedded durable queue in one SQLite file; with the
//! `postgres` feature, `PostgresQueue` (module `postgres`), a durable queue
//! in PostgreSQL tables shared by many processes, whose docs also weigh
//! putting its tables in the old database, the new one or a third; with the
//! `mysql` feature, `MySqlQueue` (module `mysql`), the same in MySQL or
//! MariaDB. Durable backends implement the same trait.
//!
//! # What is shared, and what a backend writes
//!
//! The [`entry`] module draws an entry's life and lists the
//! rules every backend keeps. Written once, for every backend:
//!
//! - the contract: this trait, whose docs say what each call must do, and
//!   [`EntryState`], the four states and their stored spelling;
//! - the encoding: the wrapper serialises an operation into
//!   [`NewEntry::payload`] (JSON, tagged with its namespace and version) and
//!   the worker decodes and checks it; a backend stores the bytes and never
//!   looks inside;
//! - the operator surface: [`QueueAdmin`], built on the trait's operator
//!   calls ([`stats`](ReconciliationQueue::stats),
//!   [`dead_letters`](ReconciliationQueue::dead_letters),
//!   [`retry_dead`](ReconciliationQueue::retry_dead),
//!   [`drop_dead`](ReconciliationQueue::drop_dead),
//!   [`key_entries`](ReconciliationQueue::key_entries));
//! - the proof: with the `testing` feature, `queue::testing` holds the
//!   conformance suite (named scenarios, one per rule) and the model-based
//!   suite (random operation sequences checked against a reference model,
//!   including reopening a durable backend mid-sequence). A backend in
//!   another crate runs both with one call each.
//!
//! A backend writes only its storage: how an entry, its key's line and its
//! lease are kept, and the statements (or broker calls) that move an entry
//! from one state to the next. The SQLite backend shows the shape a SQL
//! backend takes: its folder holds the schema and its migrations, the
//! statements, the decoding of rows (which never trusts a column), and an
//! executor (there, one writer thread that group-commits, because SQLite
//! has one writer). A server database keeps the same tables and the same
//! transitions; its statements differ in dialect (`FOR UPDATE SKIP LOCKED`
//! for claims, `RETURNING` or not) and its executor is a connection pool.
//! The two server backends (features `postgres` and `mysql`) share one
//! core, `queue/sql.rs`: table names, the schema error, the SQL condition
//! that says which entry is the head of its key, row decoding, claim hints
//! and stats; each keeps its dialect (DDL, locks, clock, round trips).
//!
//! # Where to put a server queue's tables
//!
//! The queue holds the follower writes that failed; it is only useful
//! while the follower's database is down if it does not live there.
//!
//! - **In the old database**: no new server to run. While the old store is
//!   authoritative (the early stages) it is the right place: a failing new
//!   store is absorbed. Once the new store is authoritative, the follower
//!   is the old store, and a failure of the old database takes the queue
//!   down with it, so follower writes cannot be queued and writes fail
//!   until it is back. The queue's rows and the worker's claims also load
//!   the production database being migrated away from, and the queue must
//!   move before that database is decommissioned.
//! - **In the new database**: the mirror image: right for the late stages
//!   (new authoritative) and where the queue should stay after the
//!   migration; during the early stages an outage of the new database is
//!   exactly what it cannot absorb.
//! - **In a third database**: independent of both stores' failures in
//!   every stage, and its load is isolated from both; at the price of one
//!   more server to run, back up and watch, whose outage now fails the
//!   writes that need queueing (writes that need none go on).
//!
//! For a migration whose follower outages must never fail writes, use a
//! third database; where a stage-dependent failure mode is acceptable, the
//! database of the store that is authoritative during the riskiest stages.
//!
//! ```text
//!  DualWrite (write path) ──append/prepare/commit/abort/has_work──┐
//!  Worker ──claim/renew/complete/retry_later/dead_letter/settle───┤
//!  QueueAdmin (operators, CLI) ──stats/dead letters/key_entries───┤
//!                                                                 ▼
//!                                              ReconciliationQueue (the contract)
//!                                                   │                │
//!                                            InMemoryQueue      SqliteQueue
//!                                                               schema, statements,
//!                                                               rows, writer thread
//! ```

mod admin;
pub mod entry;
mod memory;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

pub use admin::QueueAdmin;
pub use entry::{EntryState, QueuedEntry};
pub use memory::InMemoryQueue;
#[cfg(feature = "mysql")]
pub use mysql::{MySqlQueue, MySqlQueueOptions};
#[cfg(feature = "postgres")]
pub use postgres::{PostgresQueue, PostgresQueueOptions};
#[cfg(feature = "rabbitmq")]
pub use rabbitmq::{RabbitMqOptions, RabbitMqQueue};
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub use sql::{SchemaError, ServerQueueOptions, DEFAULT_TABLE_PREFIX};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteQueue, SqliteQueueOptions};

use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

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

/// Storage for operations the follower has not applied yet.
///
/// Implementations must keep per-`(namespace, target, key)` FIFO order: an
/// entry is only claimed once every earlier entry of its key is completed
/// (a dead earlier entry blocks it), and at most one entry of a key is in
/// flight at a time.
///
/// # Unkeyed entries
///
/// Entries of the key [`Key::unkeyed`] (writes without a `key`, such as a
/// `delete_all()`) are ordered against *every* key of their namespace and
/// target, by id: an unkeyed entry is claimed only once no entry of another
/// key with a smaller id remains, and an entry of any other key only once no
/// unkeyed entry with a smaller id remains. [`has_work`](Self::has_work)
/// answers accordingly.
///
/// # Prepared entries
///
/// A [prepared](Self::prepare) entry is never claimed before its own expiry
/// passes, wherever it sits in its key's line: an entry ahead of it being
/// completed, dead-lettered or dropped does not make it claimable.
///
/// # Completing and claiming in one call
///
/// The worker settles the entries it applied and refills its slots with
/// one call, [`complete_and_claim`](Self::complete_and_claim). Its default
/// implementation calls [`complete`](Self::complete) and
/// [`claim`](Self::claim), so a backend need not implement it; one whose
/// store can do both in one round trip (one transaction) should, since a
/// drain then pays one round trip per turnover of the worker's slots
/// instead of two. The suites in `queue::testing` (feature `testing`) hold
/// every backend to the same meaning either way.
#[async_trait]
pub trait ReconciliationQueue: Send + Sync + 'static {
    /// What of this contract the backend does. Default: all of it
    /// ([`QueueCapabilities::full`]); a backend that cannot do a part
    /// says so here, and answers the calls it cannot serve with an error.
    fn capabilities(&self) -> QueueCapabilities {
        QueueCapabilities::full("custom")
    }

    /// Appends an entry at the tail of its key. Returns once it is stored.
    async fn append(&self, entry: NewEntry) -> Result<EntryId, QueueError>;

    /// Appends an entry that must not be applied yet, because the
    /// authoritative write it follows is still in progress (journaled
    /// delivery writes ahead like this, so a crash between the two writes
    /// loses nothing). It holds its place in its key's order but is not
    /// claimed until [`commit`](Self::commit)ted; [`abort`](Self::abort)
    /// removes it. If neither comes within `expiry`, the writer is presumed
    /// dead and the entry is claimed as [orphaned](ClaimedEntry::orphaned).
    ///
    /// # Cancel safety
    ///
    /// A caller that stops waiting before this returns never learns the id,
    /// so it can neither commit nor abort the entry. A backend should then
    /// withdraw the entry itself (both built-in backends do: the in-memory
    /// one answers at once, the SQLite one removes an entry whose writer no
    /// longer listens); otherwise it becomes an orphan at its expiry.
    async fn prepare(&self, entry: NewEntry, expiry: Duration) -> Result<EntryId, QueueError>;

    /// Makes a prepared entry pending. Committing an entry that was already
    /// claimed as an orphan does nothing (the worker has it). It may return
    /// before the change is durable, but must take effect before any request
    /// made after it returns: a lost commit only makes the entry an orphan.
    async fn commit(&self, id: EntryId) -> Result<(), QueueError>;

    /// Makes a prepared entry claimable at once as an
    /// [orphan](ClaimedEntry::orphaned), instead of after its expiry: its
    /// writer no longer knows whether the authoritative write happened (the
    /// caller was cancelled during that call). Does nothing to an entry that
    /// is no longer prepared. Like [`commit`](Self::commit) it may return
    /// before the change is durable; a lost change only delays the replay
    /// until the entry's expiry.
    async fn commit_uncertain(&self, id: EntryId) -> Result<(), QueueError>;

    /// Removes a prepared entry whose authoritative write failed, even if a
    /// worker already claimed it as an orphan (that worker's lease is then
    /// lost, and it must not replay the entry). Removing an entry that is
    /// already gone succeeds, so a caller may retry it.
    async fn abort(&self, id: EntryId) -> Result<(), QueueError>;

    /// Whether entries that must follow the claimed entry were appended
    /// after it: later entries of its key, or later unkeyed entries of its
    /// namespace and target; for an unkeyed entry, later entries of any key
    /// of its namespace and target. The worker asks before replaying an
    /// orphaned entry to the store that was authoritative: such a later
    /// write supersedes it there.
    async fn has_later_entries(&self, lease: Lease) -> Result<bool, QueueError>;

    /// Records that an [orphaned](ClaimedEntry::orphaned) or
    /// [uncertain](NewEntry::uncertain) entry has been applied to the store
    /// that was authoritative, so that it is no longer claimed as an orphan
    /// and its next attempt applies it to `target` only. A prepared entry
    /// becomes pending. Does nothing to an entry that is gone.
    async fn settle_orphan(&self, id: EntryId) -> Result<(), QueueError>;

    /// Whether a write of `key` must be queued behind work already queued
    /// for `target`: the key has prepared, pending, in-flight or (under
    /// [`PoisonPolicy::Block`]) dead entries, or the namespace has unkeyed
    /// ones. For the [unkeyed](Key::unkeyed) key itself: whether the
    /// namespace has any entry for `target`.
    async fn has_work(&self, namespace: &str, target: Side, key: &Key) -> Result<bool, QueueError>;

    /// Claims up to `limit` ready entries of `namespace`, each the head of a
    /// different key, for `lease`. Entries whose lease expired are ready again.
    async fn claim(
        &self,
        namespace: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Claim, QueueError>;

    /// Extends a claim to `lease` from now, for an attempt that takes longer
    /// than the lease it was claimed with.
    ///
    /// # Errors
    ///
    /// [`QueueError::LeaseLost`] when the claim is no longer held (it
    /// expired and another claim took the entry, or the entry was aborted):
    /// the attempt must then not be applied.
    async fn renew(&self, lease: Lease, duration: Duration) -> Result<(), QueueError>;

    /// Removes an applied entry.
    async fn complete(&self, lease: Lease) -> Result<(), QueueError>;

    /// Completes applied entries, then claims up to `limit` ready entries
    /// of `namespace` for `lease`, as [`complete`](Self::complete) on each
    /// lease in turn followed by [`claim`](Self::claim) would: a stale lease
    /// is refused with [`QueueError::LeaseLost`] and removes nothing, and
    /// the claim sees the completions (the next entry of a completed key may
    /// be among the claimed). The worker settles its applied entries and
    /// refills its free slots with this one call.
    ///
    /// The default implementation makes those calls (the completions
    /// concurrently, so a backend that batches requests gets them
    /// together). A store that can do it in one round trip should: the
    /// built-in SQLite queue runs it as one transaction, so a drain pays
    /// one `fsync` per turnover of the worker's slots, not one for its
    /// completions and another for its claim.
    async fn complete_and_claim(
        &self,
        completed: &[Lease],
        namespace: &str,
        limit: usize,
        lease: Duration,
    ) -> Turnover {
        let completed =
            futures::future::join_all(completed.iter().map(|lease| self.complete(*lease))).await;
        let claim = if limit == 0 {
            Ok(Claim::default())
        } else {
            self.claim(namespace, limit, lease).await
        };
        Turnover { completed, claim }
    }

    /// Records a failed attempt and makes the entry ready again after `delay`.
    async fn retry_later(
        &self,
        lease: Lease,
        error: &str,
        delay: Duration,
    ) -> Result<(), QueueError>;

    /// Gives the entry back without counting an attempt (graceful shutdown).
    async fn release(&self, lease: Lease) -> Result<(), QueueError>;

    /// Records a final failed attempt and makes the entry a dead letter.
    async fn dead_letter(&self, lease: Lease, error: &str) -> Result<(), QueueError>;

    /// Lists dead letters, oldest first.
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError>;

    /// Makes a dead letter pending again, at the head of its key, with its
    /// attempt count reset.
    async fn retry_dead(&self, id: EntryId) -> Result<(), QueueError>;

    /// Deletes a dead letter for good, unblocking its key.
    async fn drop_dead(&self, id: EntryId) -> Result<(), QueueError>;

    /// Counts by target.
    async fn stats(&self) -> Result<QueueStats, QueueError>;

    /// Every entry of one key of `namespace` for `target`, in its line's
    /// order (the head first), whatever its state; for the unkeyed key,
    /// the namespace's unkeyed entries. For operators
    /// ([`QueueAdmin::key_entries`]): it may scan the whole queue.
    async fn key_entries(
        &self,
        namespace: &str,
        target: Side,
        key: &Key,
    ) -> Result<Vec<QueuedEntry>, QueueError>;

    /// Returns once every change requested before the call (including
    /// [`commit`](Self::commit)s that returned before they were durable) is
    /// durable. Graceful shutdown calls it last.
    async fn flush(&self) -> Result<(), QueueError>;
}
