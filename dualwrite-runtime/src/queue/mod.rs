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
#[cfg(any(feature = "rabbitmq", feature = "nats"))]
mod broker;
pub mod entry;
mod memory;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "nats")]
pub mod nats;
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
mod types;

pub use admin::QueueAdmin;
pub use entry::{EntryState, QueuedEntry};
pub use memory::InMemoryQueue;
#[cfg(feature = "mysql")]
pub use mysql::{MySqlQueue, MySqlQueueOptions};
#[cfg(feature = "nats")]
pub use nats::{NatsOptions, NatsQueue};
#[cfg(feature = "postgres")]
pub use postgres::{PostgresQueue, PostgresQueueOptions};
#[cfg(feature = "rabbitmq")]
pub use rabbitmq::{RabbitMqOptions, RabbitMqQueue};
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub use sql::{SchemaError, ServerQueueOptions, DEFAULT_TABLE_PREFIX};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteQueue, SqliteQueueOptions};
pub use types::{
    Claim, ClaimedEntry, DeadLetter, EntryId, Lease, NewEntry, PoisonPolicy, QueueCapabilities,
    QueueError, QueueStats, TargetStats, Turnover,
};

use std::time::Duration;

use async_trait::async_trait;

use crate::op::Key;
use crate::vocabulary::Side;

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

    /// Whether [`has_work`](Self::has_work) would answer `Ok(false)`, known
    /// at once, without I/O. The write path asks this first, on every write
    /// with a follower, and awaits `has_work` only when it returns `false`.
    /// It must never return `true` for a key that has work; `false` is
    /// always allowed (the default) and only costs the `has_work` call.
    fn certainly_idle(&self, namespace: &str, target: Side, key: &Key) -> bool {
        let _ = (namespace, target, key);
        false
    }

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
