//! The embedded durable reconciliation queue: one SQLite file.
//!
//! [`SqliteQueue`] keeps queued operations in a SQLite database opened in WAL
//! mode with `synchronous = FULL`, so an entry whose append returned survives
//! a crash of the process or of the machine (DESIGN I3). Concurrent appends
//! are group-committed: they share one transaction and one `fsync`, and each
//! caller is acknowledged only after the commit that holds its entry.
//!
//! ```no_run
//! # async fn demo() -> Result<(), dualwrite_runtime::QueueError> {
//! use dualwrite_runtime::queue::SqliteQueue;
//!
//! let queue = SqliteQueue::open("/var/lib/orders/dualwrite-queue.db").await?;
//! # let _ = queue; Ok(()) }
//! ```
//!
//! # The file
//!
//! The file is created with mode `0600` on Unix (SQLite gives its `-wal` and
//! `-shm` files the same mode). Its schema is created on first open and
//! versioned with `PRAGMA user_version` ([`SqliteQueue::SCHEMA_VERSION`]);
//! `PRAGMA application_id` is `0x64777175` (`"dwqu"`). A file written by a
//! newer build (a higher schema version), or a database that is not a
//! dualwrite queue, is refused with an error rather than guessed at. A file
//! of an older version is upgraded at open (version 2 added the index
//! `entries_unkeyed`, which orders unkeyed writes against every key;
//! version 3 gave the delete trigger a `WHEN` clause, so that the queue's
//! own deletes, which relink first, cost it two lookups and no more).
//!
//! Every queued operation is one row of the table `entries`:
//!
//! | column | meaning |
//! |---|---|
//! | `id` | the [`EntryId`]; increases in append order and is never reused |
//! | `namespace` | the trait the operation belongs to |
//! | `target` | the store that must apply it: `old` or `new` |
//! | `key` | its ordering key; a key's entries are applied in `id` order |
//! | `method` | the write method |
//! | `version` | the payload's encoding version |
//! | `payload` | the operation as JSON, stored as a BLOB (`CAST(payload AS TEXT)` shows it) |
//! | `state` | `prepared` (written ahead, waiting for its writer's commit), `pending`, `leased` (in flight) or `dead` |
//! | `prev_id` | the previous entry of the same key; NULL for the head of the key, the only entry a worker may claim; 0 for a dead letter taken out of line ([`PoisonPolicy::Skip`]) |
//! | `orphaned` | 1 for an entry to apply to the other store first: a prepared entry claimed because its writer never committed it, or an entry queued *uncertain* (its writer was cancelled during the authoritative call) |
//! | `attempts` | failed attempts so far |
//! | `last_error` | the last attempt's error, or why the operation was queued |
//! | `enqueued_at` | when it was appended, in Unix milliseconds |
//! | `ready_at` | Unix milliseconds: pending, when it may be tried (it became the head, or its retry delay ends); leased, when the lease expires; prepared, when it is presumed orphaned |
//! | `turn` | a tie-breaker between keys ready in the same millisecond (microseconds, unique per writer) |
//! | `lease_token` | incremented by every claim; a settle with an older token is refused |
//! | `died_at` | when it was dead-lettered, in Unix milliseconds |
//!
//! A second table, `streams`, holds one row per key with entries
//! (`namespace`, `target`, `key`, and `tail_id`, its newest entry), so that
//! an append finds the entry it goes behind without an index over every
//! entry's key. Open the file read-only with the `sqlite3` shell to look at
//! the queue while the service runs:
//!
//! ```text
//! $ sqlite3 -readonly -header -column /var/lib/orders/dualwrite-queue.db
//!
//! -- counts by store and state
//! SELECT target, state, count(*) FROM entries GROUP BY target, state;
//!
//! -- pending and in-flight work, oldest first
//! SELECT id, namespace, target, key, method, state, attempts, last_error,
//!        datetime(enqueued_at / 1000, 'unixepoch') AS enqueued
//!   FROM entries WHERE state <> 'dead' ORDER BY id;
//!
//! -- dead letters (unless taken out of line, each blocks the later
//! -- entries of its key)
//! SELECT id, namespace, target, key, method, attempts, last_error,
//!        datetime(died_at / 1000, 'unixepoch') AS died
//!   FROM entries WHERE state = 'dead' ORDER BY id;
//!
//! -- the work waiting behind dead letters
//! SELECT e.id, e.namespace, e.target, e.key, e.method
//!   FROM entries e JOIN entries d
//!     ON d.state = 'dead' AND d.prev_id IS NULL AND d.namespace = e.namespace
//!    AND d.target = e.target AND d.key = e.key AND e.id > d.id;
//!
//! -- one operation
//! SELECT CAST(payload AS TEXT) FROM entries WHERE id = 42;
//! ```
//!
//! Retry and drop dead letters through [`ReconciliationQueue::retry_dead`]
//! and [`ReconciliationQueue::drop_dead`] (or the command-line tool) rather
//! than with SQL. A row deleted by hand is still unlinked cleanly (a
//! trigger joins its neighbours), and any other broken link found at open
//! (rows inserted or edited by hand) is repaired then, in `id` order.
//!
//! # Group commit and claims
//!
//! Every operation that changes the file goes to one writer task on a thread
//! of its own, which owns the single write connection. The writer takes
//! every request waiting for it (up to
//! [`max_batch`](SqliteQueueOptions::max_batch)), runs them in one
//! `BEGIN IMMEDIATE` transaction, commits, and only then answers each
//! caller. Appends are written with multi-row `INSERT` statements (padded
//! to a power of two rows, so only a handful of statements are ever
//! prepared); their ids are assigned in the order the requests arrived, so
//! two appends of one key are never reordered. A batch of appends, prepares
//! and commits (the journaled write path) is a single round trip to SQLite.
//! While a commit's `fsync` runs, the next requests queue up and form the
//! next batch, so the batch size follows the load. Completions and claims
//! from the worker share those transactions too; all the completions of a
//! batch are one statement.
//!
//! The worker settles and refills its slots with
//! [`complete_and_claim`](ReconciliationQueue::complete_and_claim): every
//! entry it applied since its last call and a claim for the free slots, as
//! one request that the writer never splits across batches. Its
//! completions run before its claim, so the claim can hand out the next
//! entry of a key it completed. A batch of nothing but completions and one
//! claim (a drain, with no writes arriving) is a single round trip too,
//! `BEGIN IMMEDIATE` to `COMMIT`. With one such call out at a time, a
//! drain at the default `worker_concurrency` of 64 commits one
//! transaction, and one `fsync`, per 64 entries
//! ([`SqliteQueue::transactions`] counts them).
//!
//! If a statement of a batch fails, the batch is rolled back and its
//! requests are retried one transaction each, so one bad request cannot
//! fail the others (a `complete_and_claim` then takes several
//! transactions, still completions first). Checkpoints (copying the WAL
//! into the file) run on a connection of their own, beside the writer.
//!
//! A claim takes, through a partial index, the heads of keys (`prev_id IS
//! NULL`) that are not dead and whose `ready_at` has passed, ordered by
//! `ready_at` and then `turn`. A head's `ready_at` is set when it becomes
//! the head (its predecessor completed), when its retry delay ends, or when
//! its lease expires, so keys are served in the order they became ready: a
//! key with a long backlog gets one turn and then waits behind the keys that
//! were already waiting, and cannot starve them. A claim costs a few index
//! seeks, however many keys and entries the file holds.
//!
//! # `has_work` and other processes
//!
//! [`ReconciliationQueue::has_work`] runs on every write, so it answers
//! first from a filter in process memory of the keys that have entries, built
//! from the `streams` table at open and kept up to date by the writer after
//! each commit: a counting filter of fixed size (2 MiB, however long the
//! queue grows), whose zero proves that a key has no work. A key the filter
//! cannot clear (one with work, or one sharing its slot with a key that has
//! work) is looked up in the file (one primary-key lookup), so the answer is
//! exact for entries appended and removed through this [`SqliteQueue`] (and
//! its clones). Entries removed by another process (an operator's tool
//! dropping a dead letter) leave their key's slot taken, which costs that
//! key's writes the lookup and nothing else. Entries *appended* by another
//! process are not seen by the filter; if several processes append to one
//! file, turn on [`SqliteQueueOptions::multi_process`], and `has_work`
//! always queries the file instead. Claims, leases and settles are safe
//! across processes either way: each transaction takes the file's write
//! lock, waiting up to the [busy timeout](SqliteQueueOptions::busy_timeout).
//!
//! # Times
//!
//! Times are wall-clock Unix milliseconds, so leases and retry delays keep
//! their meaning across restarts. A clock stepping backwards delays ready
//! work by the step; nothing is lost.
//!
//! # Bad data
//!
//! Reading a row never panics. A claimed row whose columns cannot be read
//! (NULLs, wrong types, invalid UTF-8 written by hand) is handed to the
//! worker with an empty payload and the problem in its `method`, so the
//! worker dead-letters it with a readable error and goes on; a row whose
//! `target` is neither `old` nor `new` is dead-lettered by the queue itself.
//! Database errors (I/O, a locked or corrupt file) come back as
//! [`QueueError::Backend`] naming the file and the operation.

// The files of this module, one concern each:
//
// - `options`: the settings and opening (starts the writer thread);
// - `schema`: the tables, the schema version and its upgrades;
// - `links`: checking and repairing the chains between a key's entries;
// - `statements`: the SQL the writer runs more than once or builds;
// - `request`: the requests to the writer thread and their typed answers;
// - `writer`: the writer thread's loop, batches and transactions;
// - `connect`: opening the file, its connections and the checkpointer;
// - `insert`: appends and prepares (multi-row inserts);
// - `settle`: every other write: commits, completions, retries, dead letters;
// - `claim`: leasing the heads of keys;
// - `turnover`: completions and a claim in one round trip (the worker's);
// - `reads`: the read-only requests, served from the read pool;
// - `index`: the in-process index of keys with work (`has_work`);
// - `rows`: decoding rows without trusting them;
// - `values`: how times, ids and sides are stored in columns;
// - `error`: the backend error and the transaction error.

mod claim;
mod connect;
mod error;
mod index;
mod insert;
mod links;
mod options;
mod reads;
mod request;
mod rows;
mod schema;
mod settle;
mod statements;
mod turnover;
mod values;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use self::error::BackendError;
use self::index::{KeyIndex, Work};
use self::request::{Command, Read, Reply, Write};
#[cfg(doc)]
use super::PoisonPolicy;
use super::{
    Claim, DeadLetter, EntryId, Lease, NewEntry, QueueError, QueueStats, QueuedEntry,
    ReconciliationQueue, Turnover,
};
use crate::op::Key;
use crate::vocabulary::Side;

pub use self::options::SqliteQueueOptions;

/// A durable reconciliation queue in a SQLite file. See the
/// [module docs](self) for the file's layout, group commit and guarantees.
///
/// Cheap to clone: clones share the file, the writer and the index. The
/// writer thread stops when the last clone is dropped (or on
/// [`close`](Self::close)).
#[derive(Clone)]
pub struct SqliteQueue {
    inner: Arc<Inner>,
}

struct Inner {
    commands: mpsc::UnboundedSender<Command>,
    index: Arc<RwLock<KeyIndex>>,
    transactions: Arc<AtomicU64>,
    path: PathBuf,
    multi_process: bool,
}

impl fmt::Debug for SqliteQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteQueue")
            .field("path", &self.inner.path)
            .field("multi_process", &self.inner.multi_process)
            .finish_non_exhaustive()
    }
}

impl SqliteQueue {
    /// The schema version this build writes and understands
    /// (`PRAGMA user_version` of the file).
    pub const SCHEMA_VERSION: i64 = 3;

    /// Opens the queue file at `path` with default
    /// [options](SqliteQueueOptions), creating it (mode `0600` on Unix) and
    /// its schema if needed. Fails if the file belongs to a newer build or is
    /// not a dualwrite queue.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteQueue, QueueError> {
        SqliteQueueOptions::new(path).open().await
    }

    /// Options for the queue file at `path`.
    pub fn options(path: impl AsRef<Path>) -> SqliteQueueOptions {
        SqliteQueueOptions::new(path)
    }

    /// The queue file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// How many write transactions this queue (with its clones) has
    /// committed since it was opened. Each is one `fsync` of the log
    /// (unless [settles are relaxed](SqliteQueueOptions::durable_settles)
    /// and it held nothing but them); set beside the requests made, it
    /// shows how well group commit batches them (see "Group commit and
    /// claims" in the [module docs](self)).
    pub fn transactions(&self) -> u64 {
        self.inner.transactions.load(Ordering::Relaxed)
    }

    /// Finishes the requests already sent, closes the file and stops the
    /// writer thread. Later calls on clones of this queue fail.
    pub async fn close(self) {
        let (done, finished) = oneshot::channel();
        if self.inner.commands.send(Command::Close(done)).is_ok() {
            let _ = finished.await;
        }
    }

    /// Sends a write built around its answer channel and waits for the
    /// answer (sent after the commit that holds the write).
    async fn write<T>(&self, write: impl FnOnce(Reply<T>) -> Write) -> Result<T, QueueError> {
        let (reply, answer) = Reply::channel();
        let write = write(reply);
        let what = write.describe();
        self.ask(Command::Write(write), answer, what).await
    }

    /// Sends a read built around its answer channel and waits for the answer.
    async fn read<T>(
        &self,
        read: impl FnOnce(oneshot::Sender<Result<T, QueueError>>) -> Read,
    ) -> Result<T, QueueError> {
        let (reply, answer) = oneshot::channel();
        let read = read(reply);
        let what = read.describe();
        self.ask(Command::Read(read), answer, what).await
    }

    async fn ask<T>(
        &self,
        command: Command,
        answer: oneshot::Receiver<Result<T, QueueError>>,
        what: &str,
    ) -> Result<T, QueueError> {
        if self.inner.commands.send(command).is_err() {
            return Err(self.closed(what));
        }
        self.hear(answer, what).await
    }

    /// Waits for the answer to a request sent; a request the writer dropped
    /// unanswered (the queue closed) fails as `what` on a closed queue.
    async fn hear<T>(
        &self,
        answer: oneshot::Receiver<Result<T, QueueError>>,
        what: &str,
    ) -> Result<T, QueueError> {
        answer.await.unwrap_or_else(|_| Err(self.closed(what)))
    }

    /// Sends a write without waiting for it (see [`commit`](Self::commit)).
    fn tell(&self, write: Write) -> Result<(), QueueError> {
        let what = write.describe();
        self.inner
            .commands
            .send(Command::Write(write))
            .map_err(|_| self.closed(what))
    }

    fn closed(&self, what: &str) -> QueueError {
        let context = error::could_not(self.inner.path.display(), what);
        BackendError::message(format!("{context}: the queue was closed")).into()
    }
}

#[async_trait]
impl ReconciliationQueue for SqliteQueue {
    fn capabilities(&self) -> super::QueueCapabilities {
        super::QueueCapabilities::full("SQLite")
    }

    async fn append(&self, entry: NewEntry) -> Result<EntryId, QueueError> {
        self.write(|reply| Write::Append(entry, reply)).await
    }

    async fn prepare(&self, entry: NewEntry, expiry: Duration) -> Result<EntryId, QueueError> {
        self.write(|reply| Write::Prepare(entry, expiry, reply))
            .await
    }

    /// Hands the commit to the writer thread and returns without waiting for
    /// it: the caller (a journaled write) has nothing to gain from waiting.
    /// The writer applies it in order, before any later request, so a later
    /// claim sees it; if the process dies before it is durable, the entry is
    /// an orphan and the worker replays it to both stores, which is correct.
    async fn commit(&self, id: EntryId) -> Result<(), QueueError> {
        self.tell(Write::Commit(id))
    }

    /// Fire-and-forget like [`commit`](Self::commit): the writer applies it
    /// before any later request; if it is lost, the entry becomes an orphan
    /// at its own expiry instead.
    async fn commit_uncertain(&self, id: EntryId) -> Result<(), QueueError> {
        self.tell(Write::CommitUncertain(id))
    }

    async fn abort(&self, id: EntryId) -> Result<(), QueueError> {
        self.write(|reply| Write::Abort(id, reply)).await
    }

    async fn has_later_entries(&self, lease: Lease) -> Result<bool, QueueError> {
        self.write(|reply| Write::HasLater(lease, reply)).await
    }

    async fn has_work(&self, namespace: &str, target: Side, key: &Key) -> Result<bool, QueueError> {
        if self.certainly_idle(namespace, target, key) {
            return Ok(false);
        }
        self.read(|reply| Read::HasWork {
            namespace: namespace.to_owned(),
            target,
            key: key.clone(),
            reply,
        })
        .await
    }

    /// From the in-process filter (see the module docs); never with
    /// [`multi_process`](SqliteQueueOptions::multi_process), whose entries
    /// appended by other processes the filter cannot see.
    fn certainly_idle(&self, namespace: &str, target: Side, key: &Key) -> bool {
        !self.inner.multi_process
            && self
                .inner
                .index
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .work(namespace, target, key)
                == Work::None
    }

    async fn claim(
        &self,
        namespace: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Claim, QueueError> {
        self.write(|reply| Write::Claim {
            namespace: namespace.to_owned(),
            limit,
            lease,
            reply,
        })
        .await
    }

    async fn settle_orphan(&self, id: EntryId) -> Result<(), QueueError> {
        self.write(|reply| Write::SettleOrphan(id, reply)).await
    }

    async fn renew(&self, lease: Lease, duration: Duration) -> Result<(), QueueError> {
        self.write(|reply| Write::Renew(lease, duration, reply))
            .await
    }

    async fn complete(&self, lease: Lease) -> Result<(), QueueError> {
        self.write(|reply| Write::Complete(lease, reply)).await
    }

    /// One request to the writer, run in one transaction: the completions
    /// (one statement with every other completion of the batch), then the
    /// claim (see "Group commit and claims" in the module docs).
    async fn complete_and_claim(
        &self,
        completed: &[Lease],
        namespace: &str,
        limit: usize,
        lease: Duration,
    ) -> Turnover {
        let mut writes = Vec::with_capacity(completed.len() + 1);
        let mut completions = Vec::with_capacity(completed.len());
        for lease in completed {
            let (reply, answer) = Reply::channel();
            writes.push(Write::Complete(*lease, reply));
            completions.push(answer);
        }
        let claim = (limit > 0).then(|| {
            let (reply, answer) = Reply::channel();
            writes.push(Write::Claim {
                namespace: namespace.to_owned(),
                limit,
                lease,
                reply,
            });
            answer
        });
        if !writes.is_empty() {
            // If the queue is closed, the writes are dropped with their
            // replies, and every answer below says so.
            let _ = self.inner.commands.send(Command::Together(writes));
        }
        let mut results = Vec::with_capacity(completions.len());
        for answer in completions {
            results.push(self.hear(answer, "complete an entry").await);
        }
        let claim = match claim {
            Some(answer) => self.hear(answer, "claim entries").await,
            None => Ok(Claim::default()),
        };
        Turnover {
            completed: results,
            claim,
        }
    }

    async fn retry_later(
        &self,
        lease: Lease,
        error: &str,
        delay: Duration,
    ) -> Result<(), QueueError> {
        self.write(|reply| Write::RetryLater {
            lease,
            error: error.to_owned(),
            delay,
            reply,
        })
        .await
    }

    async fn release(&self, lease: Lease) -> Result<(), QueueError> {
        self.write(|reply| Write::Release(lease, reply)).await
    }

    async fn dead_letter(&self, lease: Lease, error: &str) -> Result<(), QueueError> {
        self.write(|reply| Write::DeadLetter {
            lease,
            error: error.to_owned(),
            reply,
        })
        .await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        self.read(Read::DeadLetters).await
    }

    async fn retry_dead(&self, id: EntryId) -> Result<(), QueueError> {
        self.write(|reply| Write::RetryDead(id, reply)).await
    }

    async fn drop_dead(&self, id: EntryId) -> Result<(), QueueError> {
        self.write(|reply| Write::DropDead(id, reply)).await
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        self.read(Read::Stats).await
    }

    async fn key_entries(
        &self,
        namespace: &str,
        target: Side,
        key: &Key,
    ) -> Result<Vec<QueuedEntry>, QueueError> {
        self.read(|reply| Read::KeyEntries {
            namespace: namespace.to_owned(),
            target,
            key: key.clone(),
            reply,
        })
        .await
    }

    /// Answered by the writer after every request sent before it has been
    /// committed (and, with relaxed settles, after a checkpoint has synced
    /// the log).
    async fn flush(&self) -> Result<(), QueueError> {
        self.write(Write::Flush).await
    }
}
