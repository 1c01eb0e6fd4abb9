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
//! `entries_unkeyed`, which orders unkeyed writes against every key).
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
//! batch are one statement. If a statement of a batch fails, the batch is
//! rolled back and its requests are retried one transaction each, so one
//! bad request cannot fail the others. Checkpoints (copying the WAL into
//! the file) run on a connection of their own, beside the writer.
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
//! [`ReconciliationQueue::has_work`] runs on every write, so it answers from
//! an index in process memory of the keys that have entries, built from the
//! `streams` table at open and kept up to date by the writer after each
//! commit. It is exact for entries appended and removed through this
//! [`SqliteQueue`] (and its clones). Entries removed by another process (an
//! operator's tool dropping a dead letter) can leave a key marked busy: its
//! next write is queued rather than applied directly, which is safe, and the
//! mark clears when that entry completes. Entries *appended* by another
//! process are not seen; if several processes append to one file, turn on
//! [`SqliteQueueOptions::multi_process`], and `has_work` queries the file
//! (one primary-key lookup) instead. Claims, leases and settles are safe
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

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, Decode, Row, Sqlite, TypeInfo, ValueRef};
use tokio::sync::{mpsc, oneshot};

use super::{
    Claim, ClaimedEntry, DeadLetter, EntryId, Lease, NewEntry, PoisonPolicy, QueueError,
    QueueStats, ReconciliationQueue,
};
use crate::op::Key;
use crate::stage::Side;

/// `PRAGMA application_id` of a queue file: `"dwqu"`.
const APPLICATION_ID: i64 = 0x6477_7175;

/// The most rows one multi-row `INSERT` holds (13 parameters a row).
const MAX_INSERT_ROWS: usize = 256;

const SCHEMA: &str = r#"
CREATE TABLE entries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace   TEXT    NOT NULL,
    target      TEXT    NOT NULL CHECK (target IN ('old', 'new')),
    key         TEXT    NOT NULL,
    method      TEXT    NOT NULL,
    version     INTEGER NOT NULL CHECK (version BETWEEN 0 AND 4294967295),
    payload     BLOB    NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'pending'
                CHECK (state IN ('prepared', 'pending', 'leased', 'dead')),
    prev_id     INTEGER,
    orphaned    INTEGER NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT    NOT NULL DEFAULT '',
    enqueued_at INTEGER NOT NULL,
    ready_at    INTEGER NOT NULL,
    turn        INTEGER NOT NULL DEFAULT 0,
    lease_token INTEGER NOT NULL DEFAULT 0,
    died_at     INTEGER
);
CREATE INDEX entries_next ON entries (prev_id) WHERE prev_id IS NOT NULL;
CREATE INDEX entries_ready ON entries (namespace, ready_at, turn) WHERE prev_id IS NULL AND state <> 'dead';
CREATE INDEX entries_dead ON entries (id) WHERE state = 'dead';
CREATE INDEX entries_unkeyed ON entries (namespace, target, id) WHERE key = '*';
CREATE TABLE streams (
    namespace TEXT    NOT NULL,
    target    TEXT    NOT NULL,
    key       TEXT    NOT NULL,
    tail_id   INTEGER NOT NULL,
    PRIMARY KEY (namespace, target, key)
) WITHOUT ROWID;
-- Keeps the chains whole when rows are deleted by hand; the queue's own
-- deletes have already relinked, so for them it finds nothing to do.
CREATE TRIGGER entries_unlink AFTER DELETE ON entries BEGIN
    UPDATE entries SET prev_id = old.prev_id,
        ready_at = CASE WHEN old.prev_id IS NULL
            THEN max(ready_at, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
            ELSE ready_at END
        WHERE prev_id = old.id;
    UPDATE streams SET tail_id = old.prev_id
        WHERE namespace = old.namespace AND target = old.target AND key = old.key
          AND tail_id = old.id AND old.prev_id IS NOT NULL;
    DELETE FROM streams
        WHERE namespace = old.namespace AND target = old.target AND key = old.key
          AND tail_id = old.id AND old.prev_id IS NULL;
END;
"#;

/// Schema version 2: the index that orders unkeyed entries against every
/// key of their namespace.
const MIGRATE_1_TO_2: &str =
    "CREATE INDEX IF NOT EXISTS entries_unkeyed ON entries (namespace, target, id) WHERE key = '*';";

/// Counts broken links between entries; 0 for a healthy file.
const CHECK_LINKS: &str = "SELECT \
    (SELECT count(*) FROM entries e WHERE e.prev_id IS NOT NULL AND e.prev_id <> 0 AND NOT EXISTS \
       (SELECT 1 FROM entries p WHERE p.id = e.prev_id AND p.namespace = e.namespace \
        AND p.target = e.target AND p.key = e.key AND p.id < e.id AND p.prev_id IS NOT 0)) \
  + (SELECT count(*) FROM (SELECT 1 FROM entries WHERE prev_id IS NOT NULL AND prev_id <> 0 \
       GROUP BY prev_id HAVING count(*) > 1)) \
  + (SELECT count(*) FROM (SELECT 1 FROM entries WHERE prev_id IS NULL \
       GROUP BY namespace, target, key HAVING count(*) > 1)) \
  + (SELECT count(*) FROM streams s WHERE NOT EXISTS (SELECT 1 FROM entries e \
       WHERE e.id = s.tail_id AND e.namespace = s.namespace AND e.target = s.target AND e.key = s.key \
       AND e.prev_id IS NOT 0)) \
  + (SELECT count(*) FROM entries e WHERE e.prev_id IS NOT 0 AND NOT EXISTS (SELECT 1 FROM streams s \
       WHERE s.namespace = e.namespace AND s.target = e.target AND s.key = e.key AND s.tail_id >= e.id))";

/// Rebuilds every link from the entries' ids and keys.
const REPAIR_LINKS: &str = "\
CREATE INDEX entries_repair ON entries (namespace, target, key, id);
UPDATE entries SET prev_id = (SELECT max(p.id) FROM entries p WHERE p.namespace = entries.namespace
    AND p.target = entries.target AND p.key = entries.key AND p.id < entries.id AND p.prev_id IS NOT 0)
    WHERE prev_id IS NOT 0;
DELETE FROM streams;
INSERT INTO streams (namespace, target, key, tail_id)
    SELECT namespace, target, key, max(id) FROM entries WHERE prev_id IS NOT 0
    GROUP BY namespace, target, key;
DROP INDEX entries_repair;";

/// Settings of a [`SqliteQueue`]; [`SqliteQueue::open`] uses the defaults.
#[derive(Debug, Clone)]
pub struct SqliteQueueOptions {
    path: PathBuf,
    busy_timeout: Duration,
    max_batch: usize,
    multi_process: bool,
    read_connections: u32,
    durable_settles: bool,
    poison: PoisonPolicy,
}

impl SqliteQueueOptions {
    /// Defaults for the queue file at `path`.
    pub fn new(path: impl AsRef<Path>) -> Self {
        SqliteQueueOptions {
            path: path.as_ref().to_path_buf(),
            busy_timeout: Duration::from_secs(5),
            max_batch: 1024,
            multi_process: false,
            read_connections: 2,
            durable_settles: true,
            poison: PoisonPolicy::Block,
        }
    }

    /// What a dead letter does to the later entries of its key (default
    /// [`PoisonPolicy::Block`]). Under [`PoisonPolicy::Skip`] a dead letter
    /// leaves its key's line, and [`retry_dead`](ReconciliationQueue::retry_dead)
    /// puts it back at the *end* of the line, with a new id.
    pub fn poison_policy(mut self, poison: PoisonPolicy) -> Self {
        self.poison = poison;
        self
    }

    /// Whether claims and settles of claimed entries (`claim`, `complete`,
    /// `retry_later`, `release`) wait for `fsync` like appends do (default
    /// `true`). With `false` they are committed with `synchronous = NORMAL`
    /// when no append shares their transaction, which saves an `fsync` per
    /// batch while draining. Nothing acknowledged is lost, but after an
    /// *operating-system*
    /// crash or power loss (not a process crash) the last completions may be
    /// rolled back, and their operations are then applied again, in order,
    /// so a store may briefly hold an older value of a key before the replay
    /// reaches the newest one. Appends, prepares, commits and dead-letter
    /// operations always wait for `fsync`.
    pub fn durable_settles(mut self, durable: bool) -> Self {
        self.durable_settles = durable;
        self
    }

    /// How long a statement waits for another process's lock on the file
    /// before failing (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// The most requests committed in one transaction (default 1024, at
    /// least 1). Larger batches amortise the `fsync` over more callers.
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    /// Whether other processes append to the same file (default `false`).
    /// When they do, [`ReconciliationQueue::has_work`] queries the file
    /// instead of the in-process index of busy keys (see the
    /// [module docs](self)).
    pub fn multi_process(mut self, multi_process: bool) -> Self {
        self.multi_process = multi_process;
        self
    }

    /// Connections used for `stats`, `dead_letters` and, with
    /// [`multi_process`](Self::multi_process), `has_work` (default 2, at
    /// least 1). Reads never wait for the writer (WAL mode).
    pub fn read_connections(mut self, connections: u32) -> Self {
        self.read_connections = connections.max(1);
        self
    }

    /// Opens the queue file, creating it (mode `0600`) and its schema if
    /// needed. See [`SqliteQueue::open`].
    pub async fn open(self) -> Result<SqliteQueue, QueueError> {
        let index = Arc::new(RwLock::new(KeyIndex::default()));
        let (commands, receiver) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let options = self.clone();
        let thread_index = Arc::clone(&index);
        std::thread::Builder::new()
            .name("dualwrite-sqlite-queue".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready_tx.send(Err(BackendError::new(
                            format!(
                                "SQLite queue {}: could not start its runtime",
                                options.path.display()
                            ),
                            error,
                        )));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match Writer::open(&options, thread_index).await {
                        Ok(writer) => {
                            if ready_tx.send(Ok(())).is_ok() {
                                writer.run(receiver).await;
                            } else {
                                writer.close().await;
                            }
                        }
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                        }
                    }
                });
            })
            .map_err(|error| {
                QueueError::Backend(Box::new(BackendError::new(
                    format!(
                        "SQLite queue {}: could not start its writer thread",
                        self.path.display()
                    ),
                    error,
                )))
            })?;
        match ready_rx.await {
            Ok(Ok(())) => Ok(SqliteQueue {
                inner: Arc::new(Inner {
                    commands,
                    index,
                    path: self.path,
                    multi_process: self.multi_process,
                }),
            }),
            Ok(Err(error)) => Err(QueueError::Backend(Box::new(error))),
            Err(_) => Err(QueueError::Backend(Box::new(BackendError::message(
                format!(
                    "SQLite queue {}: the writer thread stopped while opening the file",
                    self.path.display()
                ),
            )))),
        }
    }
}

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
    pub const SCHEMA_VERSION: i64 = 2;

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

    /// Finishes the requests already sent, closes the file and stops the
    /// writer thread. Later calls on clones of this queue fail.
    pub async fn close(self) {
        let (done, finished) = oneshot::channel();
        if self.inner.commands.send(Command::Close(done)).is_ok() {
            let _ = finished.await;
        }
    }

    async fn request(&self, request: Request, what: &str) -> Result<Done, QueueError> {
        let (answer, reply) = oneshot::channel();
        let command = match request {
            Request::Write(write) => Command::Write(write, answer),
            Request::Read(read) => Command::Read(read, answer),
        };
        if self.inner.commands.send(command).is_err() {
            return Err(self.closed(what));
        }
        match reply.await {
            Ok(result) => result,
            Err(_) => Err(self.closed(what)),
        }
    }

    fn closed(&self, what: &str) -> QueueError {
        QueueError::Backend(Box::new(BackendError::message(format!(
            "SQLite queue {}: could not {what}: the queue was closed",
            self.inner.path.display()
        ))))
    }

    fn unexpected(&self, what: &str) -> QueueError {
        QueueError::Backend(Box::new(BackendError::message(format!(
            "SQLite queue {}: could not {what}: the writer answered another request (a bug)",
            self.inner.path.display()
        ))))
    }

    async fn write_unit(&self, write: Write, what: &str) -> Result<(), QueueError> {
        match self.request(Request::Write(write), what).await? {
            Done::Unit => Ok(()),
            _ => Err(self.unexpected(what)),
        }
    }
}

#[async_trait]
impl ReconciliationQueue for SqliteQueue {
    async fn append(&self, entry: NewEntry) -> Result<EntryId, QueueError> {
        match self
            .request(Request::Write(Write::Append(entry)), "append")
            .await?
        {
            Done::Id(id) => Ok(id),
            _ => Err(self.unexpected("append")),
        }
    }

    async fn prepare(&self, entry: NewEntry, expiry: Duration) -> Result<EntryId, QueueError> {
        match self
            .request(
                Request::Write(Write::Prepare(entry, expiry)),
                "prepare an entry",
            )
            .await?
        {
            Done::Id(id) => Ok(id),
            _ => Err(self.unexpected("prepare an entry")),
        }
    }

    /// Hands the commit to the writer thread and returns without waiting for
    /// it: the caller (a journaled write) has nothing to gain from waiting.
    /// The writer applies it in order, before any later request, so a later
    /// claim sees it; if the process dies before it is durable, the entry is
    /// an orphan and the worker replays it to both stores, which is correct.
    async fn commit(&self, id: EntryId) -> Result<(), QueueError> {
        let (answer, _unheard) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Write(Write::Commit(id), answer))
            .map_err(|_| self.closed("commit a prepared entry"))
    }

    /// Fire-and-forget like [`commit`](Self::commit): the writer applies it
    /// before any later request; if it is lost, the entry becomes an orphan
    /// at its own expiry instead.
    async fn commit_uncertain(&self, id: EntryId) -> Result<(), QueueError> {
        let (answer, _unheard) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Write(Write::CommitUncertain(id), answer))
            .map_err(|_| self.closed("mark a prepared entry uncertain"))
    }

    async fn abort(&self, id: EntryId) -> Result<(), QueueError> {
        self.write_unit(Write::Abort(id), "abort a prepared entry")
            .await
    }

    async fn has_later_entries(&self, lease: Lease) -> Result<bool, QueueError> {
        match self
            .request(
                Request::Write(Write::HasLater(lease)),
                "look for later entries",
            )
            .await?
        {
            Done::Bool(later) => Ok(later),
            _ => Err(self.unexpected("look for later entries")),
        }
    }

    async fn has_work(&self, namespace: &str, target: Side, key: &Key) -> Result<bool, QueueError> {
        if !self.inner.multi_process {
            let index = self
                .inner
                .index
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            return Ok(index.must_queue(namespace, target, key));
        }
        let read = Read::HasWork {
            namespace: namespace.to_owned(),
            target,
            key: key.clone(),
        };
        match self
            .request(Request::Read(read), "check for queued work")
            .await?
        {
            Done::Bool(found) => Ok(found),
            _ => Err(self.unexpected("check for queued work")),
        }
    }

    async fn claim(
        &self,
        namespace: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Claim, QueueError> {
        let write = Write::Claim {
            namespace: namespace.to_owned(),
            limit,
            lease,
        };
        match self.request(Request::Write(write), "claim entries").await? {
            Done::Claim(claim) => Ok(claim),
            _ => Err(self.unexpected("claim entries")),
        }
    }

    async fn settle_orphan(&self, id: EntryId) -> Result<(), QueueError> {
        self.write_unit(Write::SettleOrphan(id), "settle an orphan")
            .await
    }

    async fn renew(&self, lease: Lease, duration: Duration) -> Result<(), QueueError> {
        self.write_unit(Write::Renew(lease, duration), "renew a lease")
            .await
    }

    async fn complete(&self, lease: Lease) -> Result<(), QueueError> {
        self.write_unit(Write::Complete(lease), "complete an entry")
            .await
    }

    async fn retry_later(
        &self,
        lease: Lease,
        error: &str,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let write = Write::RetryLater {
            lease,
            error: error.to_owned(),
            delay,
        };
        self.write_unit(write, "schedule a retry").await
    }

    async fn release(&self, lease: Lease) -> Result<(), QueueError> {
        self.write_unit(Write::Release(lease), "release an entry")
            .await
    }

    async fn dead_letter(&self, lease: Lease, error: &str) -> Result<(), QueueError> {
        let write = Write::DeadLetter {
            lease,
            error: error.to_owned(),
        };
        self.write_unit(write, "dead-letter an entry").await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        match self
            .request(Request::Read(Read::DeadLetters), "list dead letters")
            .await?
        {
            Done::DeadLetters(letters) => Ok(letters),
            _ => Err(self.unexpected("list dead letters")),
        }
    }

    async fn retry_dead(&self, id: EntryId) -> Result<(), QueueError> {
        self.write_unit(Write::RetryDead(id), "retry a dead letter")
            .await
    }

    async fn drop_dead(&self, id: EntryId) -> Result<(), QueueError> {
        self.write_unit(Write::DropDead(id), "drop a dead letter")
            .await
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        match self
            .request(Request::Read(Read::Stats), "count entries")
            .await?
        {
            Done::Stats(stats) => Ok(stats),
            _ => Err(self.unexpected("count entries")),
        }
    }

    /// Answered by the writer after every request sent before it has been
    /// committed (and, with relaxed settles, after a checkpoint has synced
    /// the log).
    async fn flush(&self) -> Result<(), QueueError> {
        self.write_unit(Write::Flush, "flush").await
    }
}

// ---------------------------------------------------------------------------
// Requests to the writer thread.

enum Request {
    Write(Write),
    Read(Read),
}

enum Command {
    Write(Write, Answer),
    Read(Read, Answer),
    Close(oneshot::Sender<()>),
}

type Answer = oneshot::Sender<Result<Done, QueueError>>;

enum Write {
    Append(NewEntry),
    Prepare(NewEntry, Duration),
    Commit(EntryId),
    CommitUncertain(EntryId),
    Abort(EntryId),
    HasLater(Lease),
    Renew(Lease, Duration),
    SettleOrphan(EntryId),
    Flush,
    Claim {
        namespace: String,
        limit: usize,
        lease: Duration,
    },
    Complete(Lease),
    RetryLater {
        lease: Lease,
        error: String,
        delay: Duration,
    },
    Release(Lease),
    DeadLetter {
        lease: Lease,
        error: String,
    },
    RetryDead(EntryId),
    DropDead(EntryId),
}

impl Write {
    /// The entry this write inserts, its state and how long until it is
    /// ready (or, prepared, until it is presumed orphaned).
    fn inserted(&self) -> Option<(&NewEntry, &'static str, Duration)> {
        match self {
            Write::Append(entry) => Some((entry, "pending", Duration::ZERO)),
            Write::Prepare(entry, expiry) => Some((entry, "prepared", *expiry)),
            _ => None,
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Write::Append(_) => "append",
            Write::Prepare(..) => "prepare an entry",
            Write::Commit(_) => "commit a prepared entry",
            Write::CommitUncertain(_) => "mark a prepared entry uncertain",
            Write::Abort(_) => "abort a prepared entry",
            Write::Renew(..) => "renew a lease",
            Write::SettleOrphan(_) => "settle an orphan",
            Write::Flush => "flush",
            Write::HasLater(_) => "look for later entries",
            Write::Claim { .. } => "claim entries",
            Write::Complete(_) => "complete an entry",
            Write::RetryLater { .. } => "schedule a retry",
            Write::Release(_) => "release an entry",
            Write::DeadLetter { .. } => "dead-letter an entry",
            Write::RetryDead(_) => "retry a dead letter",
            Write::DropDead(_) => "drop a dead letter",
        }
    }
}

enum Read {
    HasWork {
        namespace: String,
        target: Side,
        key: Key,
    },
    DeadLetters,
    Stats,
}

enum Done {
    Id(EntryId),
    Claim(Claim),
    Unit,
    Bool(bool),
    DeadLetters(Vec<DeadLetter>),
    Stats(QueueStats),
}

// ---------------------------------------------------------------------------
// The in-process index of keys with entries.

#[derive(Debug, Default)]
struct KeyIndex {
    /// namespace -> key -> bit 0: work for the old store, bit 1: for the new.
    keys: HashMap<String, HashMap<Key, u8>>,
    /// namespace -> how many keys have work for (old, new).
    counts: HashMap<String, [usize; 2]>,
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Old => 0,
        Side::New => 1,
    }
}

fn side_bit(side: Side) -> u8 {
    match side {
        Side::Old => 1,
        Side::New => 2,
    }
}

impl KeyIndex {
    fn contains(&self, namespace: &str, target: Side, key: &Key) -> bool {
        self.keys
            .get(namespace)
            .and_then(|keys| keys.get(key))
            .is_some_and(|bits| bits & side_bit(target) != 0)
    }

    /// [`ReconciliationQueue::has_work`]: the key or the namespace's
    /// unkeyed writes; for the unkeyed key, any key of the namespace.
    fn must_queue(&self, namespace: &str, target: Side, key: &Key) -> bool {
        if key.is_unkeyed() {
            self.counts
                .get(namespace)
                .is_some_and(|counts| counts[side_index(target)] > 0)
        } else {
            self.contains(namespace, target, key)
                || self.contains(namespace, target, &Key::unkeyed())
        }
    }

    fn count(&mut self, namespace: &str, target: Side, delta: isize) {
        let counts = self.counts.entry(namespace.to_owned()).or_default();
        let count = &mut counts[side_index(target)];
        *count = count.saturating_add_signed(delta);
        if counts == &[0, 0] {
            self.counts.remove(namespace);
        }
    }

    fn insert(&mut self, namespace: &str, target: Side, key: &Key) {
        let keys = match self.keys.get_mut(namespace) {
            Some(keys) => keys,
            None => self.keys.entry(namespace.to_owned()).or_default(),
        };
        let added = match keys.get_mut(key) {
            Some(bits) => {
                let added = *bits & side_bit(target) == 0;
                *bits |= side_bit(target);
                added
            }
            None => {
                keys.insert(key.clone(), side_bit(target));
                true
            }
        };
        if added {
            self.count(namespace, target, 1);
        }
    }

    fn remove(&mut self, namespace: &str, target: Side, key: &Key) {
        let Some(keys) = self.keys.get_mut(namespace) else {
            return;
        };
        let mut removed = false;
        if let Some(bits) = keys.get_mut(key) {
            removed = *bits & side_bit(target) != 0;
            *bits &= !side_bit(target);
            if *bits == 0 {
                keys.remove(key);
            }
        }
        if keys.is_empty() {
            self.keys.remove(namespace);
        }
        if removed {
            self.count(namespace, target, -1);
        }
    }
}

/// Changes to the index made by one committed transaction.
#[derive(Default)]
struct IndexDelta {
    added: Vec<(String, Side, Key)>,
    emptied: Vec<(String, Side, Key)>,
}

// ---------------------------------------------------------------------------
// Errors.

/// A backend failure with the file and the operation that failed.
#[derive(Debug, Clone)]
struct BackendError {
    context: String,
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

impl BackendError {
    fn new(context: String, source: impl StdError + Send + Sync + 'static) -> Self {
        BackendError {
            context,
            source: Some(Arc::new(source)),
        }
    }

    fn message(context: String) -> Self {
        BackendError {
            context,
            source: None,
        }
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.context),
            None => f.write_str(&self.context),
        }
    }
}

impl StdError for BackendError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}

/// Why a write transaction failed.
enum TxError {
    /// `BEGIN` failed (the file is locked, unreadable): nothing ran.
    Begin(sqlx::Error),
    /// A statement or the commit failed; the transaction was rolled back.
    Statement(&'static str, sqlx::Error),
}

// ---------------------------------------------------------------------------
// The writer: owns the write connection and the read pool.

struct Writer {
    path: PathBuf,
    conn: SqliteConnection,
    reads: SqlitePool,
    index: Arc<RwLock<KeyIndex>>,
    max_batch: usize,
    /// The last `turn` handed out (see [`Writer::next_turn`]).
    last_turn: i64,
    /// Commit claims and completions without `fsync` (see the module docs).
    relaxed_settles: bool,
    /// Whether the connection is in `synchronous = FULL` now.
    full_sync: bool,
    /// Whether the current transaction has begun.
    begun: bool,
    poison: PoisonPolicy,
    /// Wakes the checkpointer after a commit.
    checkpoints: mpsc::Sender<()>,
    checkpointer: tokio::task::JoinHandle<()>,
}

fn now_ms() -> i64 {
    system_time_to_ms(SystemTime::now())
}

fn system_time_to_ms(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

fn ms_to_system_time(ms: i64) -> SystemTime {
    match u64::try_from(ms) {
        Ok(ms) => UNIX_EPOCH + Duration::from_millis(ms),
        Err(_) => UNIX_EPOCH,
    }
}

fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn side_from_str(text: &str) -> Option<Side> {
    match text {
        "old" => Some(Side::Old),
        "new" => Some(Side::New),
        _ => None,
    }
}

/// Creates the file with mode 0600 if it does not exist yet, so that SQLite
/// (and its `-wal` and `-shm` files, which copy the mode) never widen it.
fn create_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                if let Ok(metadata) = std::fs::metadata(path) {
                    let mode = metadata.permissions().mode() & 0o777;
                    if mode & 0o077 != 0 {
                        tracing::warn!(
                            path = %path.display(),
                            mode = format_args!("{mode:o}"),
                            "the reconciliation queue file is readable by other users; queued operations hold your data (chmod 600 it)"
                        );
                    }
                }
            }
            Ok(())
        }
        Err(error) => Err(error),
    }
}

/// The SQL of a multi-row insert of `rows` entries (padded to a power of
/// two). The first parameter is the time; then a row's values are its
/// 1-based position in the batch (NULL for padding, which is skipped),
/// namespace, target, key, method, version, payload, reason, turn, the
/// position of the previous entry of its key in the same statement (or
/// NULL), state, `ready_at` and `orphaned` (the entry is
/// [uncertain](NewEntry::uncertain)). Ids are assigned explicitly as the highest
/// id ever used plus the position, so they follow the order the appends
/// arrived in; `prev_id` links each entry to the previous entry of its key,
/// from the batch or from the key's `streams` row.
fn insert_sql(rows: usize) -> &'static str {
    static SQL: OnceLock<Vec<String>> = OnceLock::new();
    let all = SQL.get_or_init(|| {
        (0..=MAX_INSERT_ROWS.trailing_zeros())
            .map(|power| {
                let rows = 1usize << power;
                // All parameters are anonymous, so that sqlx and SQLite agree
                // on their order.
                let mut sql = String::from(
                    "INSERT INTO entries (id, namespace, target, key, method, version, payload, \
                     state, prev_id, attempts, last_error, enqueued_at, ready_at, turn, lease_token, orphaned) \
                     SELECT b.base + v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, \
                     v.column7, v.column11, \
                     CASE WHEN v.column10 IS NOT NULL THEN b.base + v.column10 \
                     ELSE (SELECT s.tail_id FROM streams s WHERE s.namespace = v.column2 \
                           AND s.target = v.column3 AND s.key = v.column4) END, \
                     0, v.column8, ?, v.column12, v.column9, 0, v.column13 \
                     FROM (SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'entries'), 0), \
                                      coalesce((SELECT max(id) FROM entries), 0)) AS base) AS b, (VALUES ",
                );
                for row in 0..rows {
                    if row > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
                }
                sql.push_str(") AS v WHERE v.column1 IS NOT NULL ORDER BY v.column1");
                sql
            })
            .collect()
    });
    let power = rows.next_power_of_two().trailing_zeros() as usize;
    &all[power.min(all.len() - 1)]
}

/// The whole of a batch of inserts (at most [`MAX_INSERT_ROWS`]) and
/// commits of prepared entries, as one round trip: [`insert_sql`] returning
/// the new ids, the update of the keys' tails (parameter: the number of
/// rows), then, with `commits`, [`COMMIT_PREPARED`].
fn write_ahead_sql(rows: usize, commits: bool) -> &'static str {
    static SQL: OnceLock<[Vec<String>; 2]> = OnceLock::new();
    let all = SQL.get_or_init(|| {
        [false, true].map(|commits| {
            (0..=MAX_INSERT_ROWS.trailing_zeros())
                .map(|power| {
                    format!(
                        "BEGIN IMMEDIATE; {} RETURNING id; {} WHERE id > last_insert_rowid() - ? \
                         GROUP BY namespace, target, key {}; {} COMMIT;",
                        insert_sql(1 << power),
                        UPDATE_TAILS_SELECT,
                        UPDATE_TAILS_CONFLICT,
                        if commits { COMMIT_PREPARED } else { "" },
                    )
                })
                .collect()
        })
    });
    let variants = &all[usize::from(commits)];
    let power = rows.next_power_of_two().trailing_zeros() as usize;
    &variants[power.min(variants.len() - 1)]
}

/// Makes prepared entries pending, ready now. Parameters: the time, the
/// turn, the JSON list of ids.
const COMMIT_PREPARED: &str = "UPDATE entries SET state = 'pending', ready_at = ?, turn = ? \
     WHERE state = 'prepared' AND id IN (SELECT value FROM json_each(?));";

const UPDATE_TAILS_SELECT: &str =
    "INSERT INTO streams (namespace, target, key, tail_id) SELECT namespace, target, key, max(id) FROM entries";
const UPDATE_TAILS_CONFLICT: &str =
    "ON CONFLICT (namespace, target, key) DO UPDATE SET tail_id = excluded.tail_id";

/// The ids of the prepared entries `writes` commit, as a JSON list.
fn commit_list(writes: &[Write]) -> Option<String> {
    let ids: Vec<String> = writes
        .iter()
        .filter_map(|write| match write {
            Write::Commit(id) => Some(lease_id(*id).to_string()),
            _ => None,
        })
        .collect();
    (!ids.is_empty()).then(|| format!("[{}]", ids.join(",")))
}

/// A failed statement of a transaction: `Begin` if it could not take the
/// file's write lock (nothing ran), else `Statement`.
fn tx_error(what: &'static str, error: sqlx::Error) -> TxError {
    if is_busy(&error) {
        TxError::Begin(error)
    } else {
        TxError::Statement(what, error)
    }
}

/// Whether SQLite said the file is locked (by another process).
fn is_busy(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(error) => error
            .code()
            .and_then(|code| code.parse::<i64>().ok())
            .is_some_and(|code| code & 0xff == 5 || code & 0xff == 6),
        _ => false,
    }
}

/// Splits `count` rows into statements of [`MAX_INSERT_ROWS`] rows and a
/// last, smaller one; each is prepared at a power-of-two size (padded), so
/// the writer only ever prepares a handful of distinct insert statements.
fn insert_chunks(mut count: usize) -> Vec<usize> {
    let mut chunks = Vec::new();
    while count > 0 {
        let chunk = count.min(MAX_INSERT_ROWS);
        chunks.push(chunk);
        count -= chunk;
    }
    chunks
}

impl Writer {
    async fn open(
        options: &SqliteQueueOptions,
        index: Arc<RwLock<KeyIndex>>,
    ) -> Result<Writer, BackendError> {
        let path = options.path.clone();
        let shown = path.display().to_string();
        create_file(&path).map_err(|error| {
            BackendError::new(
                format!("SQLite queue {shown}: could not create the file"),
                error,
            )
        })?;
        let connect = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(false)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(options.busy_timeout)
            .foreign_keys(false)
            .thread_name(|id| format!("dualwrite-sqlite-{id}"));
        let mut conn = SqliteConnection::connect_with(&connect)
            .await
            .map_err(|error| {
                BackendError::new(
                    format!("SQLite queue {shown}: could not open the file"),
                    error,
                )
            })?;
        let context = |what: &str| format!("SQLite queue {shown}: could not {what}");
        if let Err(error) = prepare_schema(&mut conn, &shown).await {
            let _ = conn.close().await;
            return Err(error);
        }
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode = WAL")
            .fetch_one(&mut conn)
            .await
            .map_err(|error| BackendError::new(context("switch to WAL mode"), error))?;
        if !mode.eq_ignore_ascii_case("wal") {
            let _ = conn.close().await;
            return Err(BackendError::message(format!(
                "SQLite queue {shown}: the file stayed in journal mode `{mode}`; WAL is required"
            )));
        }
        // Build the index of keys with work.
        let rows = sqlx::query("SELECT namespace, target, key FROM streams")
            .fetch_all(&mut conn)
            .await
            .map_err(|error| BackendError::new(context("read the queued keys"), error))?;
        {
            let mut index = index
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            *index = KeyIndex::default();
            for row in &rows {
                let namespace = lenient_text(row, 0, "namespace");
                let target = lenient_text(row, 1, "target");
                let key = lenient_text(row, 2, "key");
                if let (Ok(namespace), Ok(target), Ok(key)) = (namespace, target, key) {
                    if let Some(target) = side_from_str(&target.value) {
                        index.insert(&namespace.value, target, &Key::from(key.value));
                    }
                }
            }
        }
        // Checkpoints (copying the WAL into the file) run on a connection of
        // their own, beside the writer, rather than inside its commits; the
        // writer only checkpoints by itself if they fall far behind.
        sqlx::query("PRAGMA wal_autocheckpoint = 20000")
            .execute(&mut conn)
            .await
            .map_err(|error| BackendError::new(context("configure checkpoints"), error))?;
        let checkpoint_conn = SqliteConnection::connect_with(&connect)
            .await
            .map_err(|error| BackendError::new(context("open a second connection"), error))?;
        let (checkpoints, wakes) = mpsc::channel(1);
        let checkpointer = tokio::spawn(checkpoint_loop(checkpoint_conn, wakes, shown.clone()));
        let reads = SqlitePoolOptions::new()
            .max_connections(options.read_connections)
            .min_connections(0)
            .connect_lazy_with(connect.journal_mode(SqliteJournalMode::Wal));
        tracing::debug!(path = %shown, keys = rows.len(), "SQLite reconciliation queue opened");
        Ok(Writer {
            path,
            conn,
            reads,
            index,
            max_batch: options.max_batch,
            last_turn: 0,
            relaxed_settles: !options.durable_settles,
            full_sync: true,
            begun: false,
            poison: options.poison,
            checkpoints,
            checkpointer,
        })
    }

    async fn close(self) {
        let Writer {
            conn,
            reads,
            checkpoints,
            checkpointer,
            ..
        } = self;
        drop(checkpoints);
        let _ = checkpointer.await;
        reads.close().await;
        // The last connection to close checkpoints the WAL into the file.
        if let Err(error) = conn.close().await {
            tracing::warn!(%error, "closing the SQLite queue's write connection failed");
        }
    }

    async fn run(mut self, mut receiver: mpsc::UnboundedReceiver<Command>) {
        let mut closing = None;
        while let Some(first) = receiver.recv().await {
            let mut writes: Vec<(Write, Answer)> = Vec::new();
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Write(write, answer) => writes.push((write, answer)),
                    Command::Read(read, answer) => self.spawn_read(read, answer),
                    Command::Close(done) => {
                        closing = Some(done);
                        break;
                    }
                }
                if writes.len() >= self.max_batch {
                    break;
                }
                next = receiver.try_recv().ok();
            }
            if !writes.is_empty() {
                self.execute(writes).await;
            }
            if closing.is_some() {
                break;
            }
        }
        // Requests still in the channel get "closed" when it is dropped.
        receiver.close();
        self.close().await;
        if let Some(done) = closing {
            let _ = done.send(());
        }
    }

    fn context(&self, what: &str) -> String {
        format!("SQLite queue {}: could not {what}", self.path.display())
    }

    fn spawn_read(&self, read: Read, answer: Answer) {
        let pool = self.reads.clone();
        let path = self.path.clone();
        tokio::spawn(async move {
            let result = match read {
                Read::HasWork {
                    namespace,
                    target,
                    key,
                } => sqlx::query_scalar::<_, bool>(
                    // Unkeyed: any key of the namespace; keyed: the key or
                    // the namespace's unkeyed writes.
                    "SELECT EXISTS (SELECT 1 FROM streams WHERE namespace = ?1 AND target = ?2 \
                     AND (?3 = '*' OR key = ?3 OR key = '*'))",
                )
                .bind(namespace)
                .bind(target.as_str())
                .bind(key.as_str().to_owned())
                .fetch_one(&pool)
                .await
                .map(Done::Bool)
                .map_err(|error| ("check for queued work", error)),
                Read::DeadLetters => read_dead_letters(&pool)
                    .await
                    .map(Done::DeadLetters)
                    .map_err(|error| ("list dead letters", error)),
                Read::Stats => read_stats(&pool)
                    .await
                    .map(Done::Stats)
                    .map_err(|error| ("count entries", error)),
            };
            let result = result.map_err(|(what, error)| {
                QueueError::Backend(Box::new(BackendError::new(
                    format!("SQLite queue {}: could not {what}", path.display()),
                    error,
                )))
            });
            let _ = answer.send(result);
        });
    }

    /// Runs a batch of writes in one transaction and answers each after the
    /// commit; if a statement fails, retries them one transaction each.
    async fn execute(&mut self, writes: Vec<(Write, Answer)>) {
        let (writes, answers): (Vec<Write>, Vec<Answer>) = writes.into_iter().unzip();
        let results = match self.transaction(&writes).await {
            Ok(results) => results,
            Err(TxError::Begin(error)) => {
                let error = BackendError::new(self.context("start a transaction"), error);
                writes
                    .iter()
                    .map(|_| Err(QueueError::Backend(Box::new(error.clone()))))
                    .collect()
            }
            Err(TxError::Statement(what, error)) if writes.len() == 1 => {
                vec![Err(QueueError::Backend(Box::new(BackendError::new(
                    self.context(what),
                    error,
                ))))]
            }
            Err(TxError::Statement(what, error)) => {
                tracing::warn!(path = %self.path.display(), batch = writes.len(), %error, failed = what, "a SQLite queue batch failed; retrying its requests one by one");
                let mut results = Vec::with_capacity(writes.len());
                for write in &writes {
                    let result = match self.transaction(std::slice::from_ref(write)).await {
                        Ok(mut one) => one.pop().unwrap_or(Ok(Done::Unit)),
                        Err(TxError::Begin(error)) => Err(QueueError::Backend(Box::new(
                            BackendError::new(self.context("start a transaction"), error),
                        ))),
                        Err(TxError::Statement(what, error)) => Err(QueueError::Backend(Box::new(
                            BackendError::new(self.context(what), error),
                        ))),
                    };
                    results.push(result);
                }
                results
            }
        };
        let flushes = writes.iter().any(|write| matches!(write, Write::Flush));
        let synced = if flushes && self.relaxed_settles {
            // Settles committed with `synchronous = NORMAL` are durable once
            // the log is synced, which a checkpoint does.
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&mut self.conn)
                .await
                .map(|_| ())
                .map_err(|error| BackendError::new(self.context("flush"), error))
        } else {
            Ok(())
        };
        let mut unheard = Vec::new();
        for ((write, answer), result) in writes.iter().zip(answers).zip(results) {
            let result = match (write, &synced) {
                (Write::Flush, Err(error)) => Err(QueueError::Backend(Box::new(error.clone()))),
                _ => result,
            };
            if let Err(Ok(Done::Id(id))) = answer.send(result) {
                if matches!(write, Write::Prepare(..)) {
                    unheard.push(id);
                }
            }
        }
        // A writer that stopped waiting for its prepare (its caller was
        // cancelled) never learns the entry's id, so it cannot commit or
        // abort it, and it has not called the authoritative store: withdraw
        // the entry rather than leave it to become an orphan.
        for id in unheard {
            if let Err(error) = self.transaction(&[Write::Abort(id)]).await {
                let error = match error {
                    TxError::Begin(error) | TxError::Statement(_, error) => error,
                };
                tracing::warn!(path = %self.path.display(), entry = %id, %error, "could not withdraw a written-ahead entry whose writer went away; it is replayed as an orphan after its expiry");
            }
        }
    }

    /// One transaction over `writes`: the results, committed, with the index
    /// already updated.
    async fn transaction(
        &mut self,
        writes: &[Write],
    ) -> Result<Vec<Result<Done, QueueError>>, TxError> {
        let full = !self.relaxed_settles
            || writes.iter().any(|write| {
                !matches!(
                    write,
                    Write::Claim { .. }
                        | Write::Complete(_)
                        | Write::RetryLater { .. }
                        | Write::Release(_)
                        | Write::Renew(..)
                        | Write::HasLater(_)
                )
            });
        if full != self.full_sync {
            let pragma = if full {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            };
            sqlx::query(pragma)
                .execute(&mut self.conn)
                .await
                .map_err(TxError::Begin)?;
            self.full_sync = full;
        }
        let mut delta = IndexDelta::default();
        self.begun = false;
        let write_ahead = writes.len() <= MAX_INSERT_ROWS
            && writes.iter().all(|write| {
                matches!(
                    write,
                    Write::Append(_) | Write::Prepare(..) | Write::Commit(_)
                )
            });
        let results = if write_ahead {
            // The hot path of journaled writes: one round trip to SQLite.
            match self.write_ahead(writes, &mut delta).await {
                Ok(results) => results,
                Err(error) => {
                    self.rollback().await;
                    return Err(if is_busy(&error) {
                        TxError::Begin(error)
                    } else {
                        TxError::Statement("append", error)
                    });
                }
            }
        } else {
            let body = self.body(writes, &mut delta).await;
            let results = match body {
                Ok(results) => results,
                Err(error) => {
                    self.rollback().await;
                    return Err(error);
                }
            };
            if !self.begun {
                return Ok(results);
            }
            let committed = sqlx::query("COMMIT").execute(&mut self.conn).await;
            if let Err(error) = committed {
                self.rollback().await;
                return Err(TxError::Statement("commit", error));
            }
            results
        };
        let _ = self.checkpoints.try_send(());
        let mut index = self
            .index
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (namespace, target, key) in &delta.added {
            index.insert(namespace, *target, key);
        }
        for (namespace, target, key) in &delta.emptied {
            index.remove(namespace, *target, key);
        }
        Ok(results)
    }

    async fn rollback(&mut self) {
        if let Err(error) = sqlx::query("ROLLBACK").execute(&mut self.conn).await {
            // SQLite rolls back by itself after some errors; then there is
            // no transaction left to roll back.
            tracing::debug!(%error, "ROLLBACK of the SQLite queue's transaction failed");
        }
    }

    /// The next fairness tie-breaker: wall-clock microseconds, made strictly
    /// increasing within this process.
    fn next_turn(&mut self) -> i64 {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        self.last_turn = micros.max(self.last_turn.saturating_add(1));
        self.last_turn
    }

    async fn body(
        &mut self,
        writes: &[Write],
        delta: &mut IndexDelta,
    ) -> Result<Vec<Result<Done, QueueError>>, TxError> {
        let now = now_ms();
        let mut results: Vec<Option<Result<Done, QueueError>>> =
            writes.iter().map(|_| None).collect();

        // Appends first, in arrival order, with multi-row inserts; then
        // completions, all in two statements; then the other settles; claims
        // last, so that they see the heads the others promoted.
        self.append_all(writes, &mut results, now, delta)
            .await
            .map_err(|error| tx_error("append", error))?;
        self.complete_all(writes, &mut results, now, delta)
            .await
            .map_err(|error| tx_error("complete an entry", error))?;
        for claims in [false, true] {
            for (at, write) in writes.iter().enumerate() {
                if results[at].is_some() || matches!(write, Write::Claim { .. }) != claims {
                    continue;
                }
                let result = self
                    .apply(write, now, delta)
                    .await
                    .map_err(|error| tx_error(write.describe(), error))?;
                results[at] = Some(result);
            }
        }
        Ok(results
            .into_iter()
            .map(|result| result.unwrap_or(Ok(Done::Unit)))
            .collect())
    }

    /// A batch of at most [`MAX_INSERT_ROWS`] appends, prepares and commits
    /// and nothing else, as one round trip (see [`write_ahead_sql`]).
    async fn write_ahead(
        &mut self,
        writes: &[Write],
        delta: &mut IndexDelta,
    ) -> Result<Vec<Result<Done, QueueError>>, sqlx::Error> {
        let now = now_ms();
        let inserts: Vec<(&NewEntry, &'static str, Duration)> =
            writes.iter().filter_map(Write::inserted).collect();
        let commits = commit_list(writes);
        let turn = self.next_turn();
        let rows = if inserts.is_empty() {
            let sql = self.opening(COMMIT_ONLY);
            sqlx::query(sql)
                .bind(now)
                .bind(turn)
                .bind(commits.as_deref().unwrap_or("[]"))
                .execute(&mut self.conn)
                .await?;
            sqlx::query("COMMIT").execute(&mut self.conn).await?;
            Vec::new()
        } else {
            let sql = write_ahead_sql(inserts.len(), commits.is_some());
            let mut query = self.bind_rows(sqlx::query(sql), now, &inserts);
            query = query.bind(inserts.len() as i64);
            if let Some(commits) = &commits {
                query = query.bind(now).bind(turn).bind(commits.as_str());
            }
            query.fetch_all(&mut self.conn).await?
        };
        let mut ids: Vec<i64> = rows
            .iter()
            .filter_map(|row| lenient_integer(row, 0, "id").ok())
            .collect();
        ids.sort_unstable();
        if ids.len() != inserts.len() {
            return Err(sqlx::Error::Protocol(format!(
                "appending {} queue entries returned {} ids",
                inserts.len(),
                ids.len()
            )));
        }
        let mut ids = ids.into_iter();
        let mut results = Vec::with_capacity(writes.len());
        for write in writes {
            results.push(match write.inserted() {
                Some((entry, _, _)) => {
                    delta
                        .added
                        .push((entry.namespace.clone(), entry.target, entry.key.clone()));
                    let id = ids.next().unwrap_or(0);
                    Ok(Done::Id(EntryId(u64::try_from(id).unwrap_or(0))))
                }
                None => Ok(Done::Unit),
            });
        }
        Ok(results)
    }

    /// Binds the time and the rows of an [`insert_sql`] statement.
    fn bind_rows<'q>(
        &mut self,
        mut query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
        now: i64,
        rows: &[(&'q NewEntry, &'static str, Duration)],
    ) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
        query = query.bind(now);
        // The previous row of the same key in this statement, if any.
        let mut last_of_key: HashMap<(&str, Side, &Key), i64> = HashMap::new();
        for (position, (entry, state, wait)) in (1i64..).zip(rows) {
            let turn = self.next_turn();
            let previous = last_of_key.insert(
                (entry.namespace.as_str(), entry.target, &entry.key),
                position,
            );
            query = query
                .bind(position)
                .bind(entry.namespace.as_str())
                .bind(entry.target.as_str())
                .bind(entry.key.as_str())
                .bind(entry.method.as_str())
                .bind(i64::from(entry.version))
                .bind(entry.payload.as_slice())
                .bind(entry.reason.as_str())
                .bind(turn)
                .bind(previous)
                .bind(*state)
                .bind(now.saturating_add(duration_ms(*wait)))
                .bind(i64::from(entry.uncertain));
        }
        for _ in rows.len()..rows.len().next_power_of_two() {
            for _ in 0..13 {
                query = query.bind(None::<i64>);
            }
        }
        query
    }

    async fn append_all(
        &mut self,
        writes: &[Write],
        results: &mut [Option<Result<Done, QueueError>>],
        now: i64,
        delta: &mut IndexDelta,
    ) -> Result<(), sqlx::Error> {
        let appends: Vec<(usize, (&NewEntry, &'static str, Duration))> = writes
            .iter()
            .enumerate()
            .filter_map(|(at, write)| write.inserted().map(|inserted| (at, inserted)))
            .collect();
        if appends.is_empty() {
            return Ok(());
        }
        self.begin().await?;
        let mut rest = appends.as_slice();
        for chunk in insert_chunks(appends.len()) {
            let (rows, later) = rest.split_at(chunk);
            rest = later;
            let rows_only: Vec<(&NewEntry, &'static str, Duration)> =
                rows.iter().map(|(_, inserted)| *inserted).collect();
            let query = self.bind_rows(sqlx::query(insert_sql(chunk)), now, &rows_only);
            let done = query.execute(&mut self.conn).await?;
            if done.rows_affected() != chunk as u64 {
                return Err(sqlx::Error::Protocol(format!(
                    "inserting {chunk} queue entries inserted {} rows",
                    done.rows_affected()
                )));
            }
            // The last row inserted has the highest position.
            let base = done.last_insert_rowid() - chunk as i64;
            sqlx::query(
                "INSERT INTO streams (namespace, target, key, tail_id) \
                 SELECT namespace, target, key, max(id) FROM entries WHERE id > ? \
                 GROUP BY namespace, target, key \
                 ON CONFLICT (namespace, target, key) DO UPDATE SET tail_id = excluded.tail_id",
            )
            .bind(base)
            .execute(&mut self.conn)
            .await?;
            for (offset, (at, (entry, _, _))) in (1i64..).zip(rows) {
                let id = u64::try_from(base + offset).unwrap_or(0);
                results[*at] = Some(Ok(Done::Id(EntryId(id))));
                delta
                    .added
                    .push((entry.namespace.clone(), entry.target, entry.key.clone()));
            }
        }
        Ok(())
    }

    /// Deletes every completed entry of the batch and promotes the next
    /// entry of each key, in three statements.
    async fn complete_all(
        &mut self,
        writes: &[Write],
        results: &mut [Option<Result<Done, QueueError>>],
        now: i64,
        delta: &mut IndexDelta,
    ) -> Result<(), sqlx::Error> {
        let completes: Vec<(usize, Lease)> = writes
            .iter()
            .enumerate()
            .filter_map(|(at, write)| match write {
                Write::Complete(lease) => Some((at, *lease)),
                _ => None,
            })
            .collect();
        if completes.is_empty() {
            return Ok(());
        }
        let mut leases = String::from("[");
        for (n, (_, lease)) in completes.iter().enumerate() {
            if n > 0 {
                leases.push(',');
            }
            leases.push_str(&format!("[{},{}]", lease_id(lease.id), token(lease.token)));
        }
        leases.push(']');
        let removed = self
            .remove_entries(REMOVE_LEASED, &leases, now, delta)
            .await?;
        let mut removed = removed;
        for (at, lease) in completes {
            // A lease completed twice in one batch: the first one removed
            // the entry, the later ones are late (the in-memory queue and a
            // second batch say the same).
            results[at] = Some(if removed.remove(&lease_id(lease.id)) {
                Ok(Done::Unit)
            } else {
                Err(QueueError::LeaseLost(lease.id))
            });
        }
        Ok(())
    }

    /// Removes the entries that `statements` select from the JSON `ids`,
    /// making each one's successor the head of its key (ready now, at the
    /// back of the line) and dropping the `streams` row of keys left empty.
    /// Returns the ids removed.
    async fn remove_entries(
        &mut self,
        statements: &'static Opening,
        ids: &str,
        now: i64,
        delta: &mut IndexDelta,
    ) -> Result<std::collections::HashSet<i64>, sqlx::Error> {
        let turn = self.next_turn();
        let sql = self.opening(statements);
        let rows = sqlx::query(sql)
            .bind(now)
            .bind(turn)
            .bind(ids)
            .bind(ids)
            .bind(ids)
            .fetch_all(&mut self.conn)
            .await?;
        let mut removed = std::collections::HashSet::new();
        for row in &rows {
            if row.columns().len() == 1 {
                if let Ok(id) = lenient_integer(row, 0, "id") {
                    removed.insert(id);
                }
                continue;
            }
            let text = |at| lenient_text(row, at, "key").map(|text| text.value);
            if let (Ok(namespace), Ok(target), Ok(key)) = (text(0), text(1), text(2)) {
                if let Some(side) = side_from_str(&target) {
                    delta.emptied.push((namespace, side, Key::from(key)));
                }
            }
        }
        Ok(removed)
    }

    /// The statement to run next: `statement` itself, or preceded by
    /// `BEGIN IMMEDIATE` if the transaction has not begun yet.
    fn opening(&mut self, statement: &'static Opening) -> &'static str {
        if std::mem::replace(&mut self.begun, true) {
            statement.plain
        } else {
            statement.begin
        }
    }

    /// Begins the transaction if no statement has yet.
    async fn begin(&mut self) -> Result<(), sqlx::Error> {
        if !std::mem::replace(&mut self.begun, true) {
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut self.conn)
                .await?;
        }
        Ok(())
    }

    /// One write other than an append or a completion, inside the open
    /// transaction. `Err` is a database failure (the batch rolls back);
    /// `Ok(Err(..))` is this request's answer.
    async fn apply(
        &mut self,
        write: &Write,
        now: i64,
        delta: &mut IndexDelta,
    ) -> Result<Result<Done, QueueError>, sqlx::Error> {
        match write {
            // Done in bulk by `append_all` and `complete_all`.
            Write::Append(_) | Write::Prepare(..) | Write::Complete(_) => Ok(Ok(Done::Unit)),
            Write::Commit(id) => {
                let turn = self.next_turn();
                let sql = self.opening(COMMIT_ONLY);
                sqlx::query(sql)
                    .bind(now)
                    .bind(turn)
                    .bind(format!("[{}]", lease_id(*id)))
                    .execute(&mut self.conn)
                    .await?;
                Ok(Ok(Done::Unit))
            }
            Write::Abort(id) => {
                // A prepared entry may sit anywhere in its key's line; the
                // delete trigger relinks its neighbours and the key's tail.
                let sql = self.opening(ABORT_PREPARED);
                let removed = sqlx::query(sql)
                    .bind(lease_id(*id))
                    .fetch_optional(&mut self.conn)
                    .await?;
                if let Some(row) = removed {
                    let text = |at| lenient_text(&row, at, "key").map(|text| text.value);
                    if let (Ok(namespace), Ok(target), Ok(key)) = (text(0), text(1), text(2)) {
                        let busy: bool = sqlx::query_scalar(
                            "SELECT EXISTS (SELECT 1 FROM streams \
                             WHERE namespace = ? AND target = ? AND key = ?)",
                        )
                        .bind(namespace.as_str())
                        .bind(target.as_str())
                        .bind(key.as_str())
                        .fetch_one(&mut self.conn)
                        .await?;
                        if let (false, Some(side)) = (busy, side_from_str(&target)) {
                            delta.emptied.push((namespace, side, Key::from(key)));
                        }
                    }
                }
                Ok(Ok(Done::Unit))
            }
            Write::CommitUncertain(id) => {
                let turn = self.next_turn();
                self.begin().await?;
                sqlx::query(
                    "UPDATE entries SET ready_at = ?, turn = ? WHERE id = ? AND state = 'prepared'",
                )
                .bind(now)
                .bind(turn)
                .bind(lease_id(*id))
                .execute(&mut self.conn)
                .await?;
                Ok(Ok(Done::Unit))
            }
            Write::SettleOrphan(id) => {
                self.begin().await?;
                let turn = self.next_turn();
                sqlx::query(
                    "UPDATE entries SET orphaned = 0, \
                       ready_at = CASE WHEN state = 'prepared' THEN ? ELSE ready_at END, \
                       turn = CASE WHEN state = 'prepared' THEN ? ELSE turn END, \
                       state = CASE WHEN state = 'prepared' THEN 'pending' ELSE state END \
                     WHERE id = ?",
                )
                .bind(now)
                .bind(turn)
                .bind(lease_id(*id))
                .execute(&mut self.conn)
                .await?;
                Ok(Ok(Done::Unit))
            }
            Write::Renew(lease, duration) => {
                self.begin().await?;
                let done = sqlx::query(
                    "UPDATE entries SET ready_at = ? WHERE id = ? AND state = 'leased' AND lease_token = ?",
                )
                .bind(now.saturating_add(duration_ms(*duration)))
                .bind(lease_id(lease.id))
                .bind(token(lease.token))
                .execute(&mut self.conn)
                .await?;
                Ok(settled(done.rows_affected(), lease.id))
            }
            // Everything sent earlier is committed by the time this batch
            // is (requests run in order); `execute` syncs relaxed settles.
            Write::Flush => Ok(Ok(Done::Unit)),
            Write::HasLater(lease) => {
                self.begin().await?;
                let (leased, later): (bool, bool) = sqlx::query_as(
                    // The key's next entry, or a later entry across the
                    // unkeyed barrier (see `ReconciliationQueue`).
                    "SELECT EXISTS (SELECT 1 FROM entries WHERE id = ?1 AND state = 'leased' \
                       AND lease_token = ?2), \
                     EXISTS (SELECT 1 FROM entries WHERE prev_id = ?1) \
                     OR EXISTS (SELECT 1 FROM entries l JOIN entries o \
                       ON o.namespace = l.namespace AND o.target = l.target AND o.id > l.id \
                       AND o.prev_id IS NOT 0 AND (l.key = '*' OR o.key = '*') \
                       WHERE l.id = ?1)",
                )
                .bind(lease_id(lease.id))
                .bind(token(lease.token))
                .fetch_one(&mut self.conn)
                .await?;
                Ok(if leased {
                    Ok(Done::Bool(later))
                } else {
                    Err(QueueError::LeaseLost(lease.id))
                })
            }
            Write::Claim {
                namespace,
                limit,
                lease,
            } => self
                .claim(namespace, *limit, *lease, now)
                .await
                .map(|claim| Ok(Done::Claim(claim))),
            Write::RetryLater {
                lease,
                error,
                delay,
            } => {
                self.begin().await?;
                let turn = self.next_turn();
                let done = sqlx::query(
                    "UPDATE entries SET state = 'pending', attempts = attempts + 1, last_error = ?, \
                     ready_at = ?, turn = ? WHERE id = ? AND state = 'leased' AND lease_token = ?",
                )
                .bind(error.as_str())
                .bind(now.saturating_add(duration_ms(*delay)))
                .bind(turn)
                .bind(lease_id(lease.id))
                .bind(token(lease.token))
                .execute(&mut self.conn)
                .await?;
                Ok(settled(done.rows_affected(), lease.id))
            }
            Write::Release(lease) => {
                self.begin().await?;
                let turn = self.next_turn();
                let done = sqlx::query(
                    "UPDATE entries SET state = 'pending', ready_at = ?, turn = ? \
                     WHERE id = ? AND state = 'leased' AND lease_token = ?",
                )
                .bind(now)
                .bind(turn)
                .bind(lease_id(lease.id))
                .bind(token(lease.token))
                .execute(&mut self.conn)
                .await?;
                Ok(settled(done.rows_affected(), lease.id))
            }
            Write::DeadLetter { lease, error } => {
                self.begin().await?;
                let done = sqlx::query(
                    "UPDATE entries SET state = 'dead', attempts = attempts + 1, last_error = ?, \
                     died_at = ? WHERE id = ? AND state = 'leased' AND lease_token = ?",
                )
                .bind(error.as_str())
                .bind(now)
                .bind(lease_id(lease.id))
                .bind(token(lease.token))
                .execute(&mut self.conn)
                .await?;
                if done.rows_affected() > 0 && self.poison == PoisonPolicy::Skip {
                    self.detach(lease.id, now, delta).await?;
                }
                Ok(settled(done.rows_affected(), lease.id))
            }
            Write::RetryDead(id) => {
                self.begin().await?;
                if let Some(requeued) = self.requeue_detached(*id, now, delta).await? {
                    return Ok(requeued);
                }
                let turn = self.next_turn();
                let done = sqlx::query(
                    "UPDATE entries SET state = 'pending', attempts = 0, ready_at = ?, turn = ?, \
                     died_at = NULL WHERE id = ? AND state = 'dead'",
                )
                .bind(now)
                .bind(turn)
                .bind(lease_id(*id))
                .execute(&mut self.conn)
                .await?;
                Ok(if done.rows_affected() == 0 {
                    Err(QueueError::NotDead(*id))
                } else {
                    Ok(Done::Unit)
                })
            }
            Write::DropDead(id) => {
                let removed = self
                    .remove_entries(REMOVE_DEAD, &format!("[{}]", lease_id(*id)), now, delta)
                    .await?;
                Ok(if removed.contains(&lease_id(*id)) {
                    Ok(Done::Unit)
                } else {
                    Err(QueueError::NotDead(*id))
                })
            }
        }
    }

    /// Under [`PoisonPolicy::Skip`], takes a new dead letter out of its
    /// key's line (`prev_id = 0`): its successor becomes the head, and a key
    /// left with no other entry has no work.
    async fn detach(
        &mut self,
        id: EntryId,
        now: i64,
        delta: &mut IndexDelta,
    ) -> Result<(), sqlx::Error> {
        let turn = self.next_turn();
        let rows = sqlx::query(
            "UPDATE entries SET prev_id = NULL, \
               ready_at = CASE WHEN state = 'prepared' THEN ready_at ELSE ? END, \
               turn = CASE WHEN state = 'prepared' THEN turn ELSE ? END WHERE prev_id = ?; \
             DELETE FROM streams WHERE (namespace, target, key, tail_id) IN \
               (SELECT namespace, target, key, id FROM entries WHERE id = ?) \
             RETURNING namespace, target, key; \
             UPDATE entries SET prev_id = 0 WHERE id = ?;",
        )
        .bind(now)
        .bind(turn)
        .bind(lease_id(id))
        .bind(lease_id(id))
        .bind(lease_id(id))
        .fetch_all(&mut self.conn)
        .await?;
        for row in &rows {
            let text = |at| lenient_text(row, at, "key").map(|text| text.value);
            if let (Ok(namespace), Ok(target), Ok(key)) = (text(0), text(1), text(2)) {
                if let Some(side) = side_from_str(&target) {
                    delta.emptied.push((namespace, side, Key::from(key)));
                }
            }
        }
        Ok(())
    }

    /// Retries a dead letter that [`detach`](Self::detach) took out of its
    /// key's line: it goes back in at the end, as a new entry (new id,
    /// attempts reset). `None` if `id` is not such a dead letter.
    async fn requeue_detached(
        &mut self,
        id: EntryId,
        now: i64,
        delta: &mut IndexDelta,
    ) -> Result<Option<Result<Done, QueueError>>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT namespace, target, key, method, version, payload, last_error, orphaned \
             FROM entries WHERE id = ? AND state = 'dead' AND prev_id = 0",
        )
        .bind(lease_id(id))
        .fetch_optional(&mut self.conn)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let text = |at, name| lenient_text(&row, at, name).map(|text| text.value);
        let (Ok(namespace), Ok(target), Ok(key), Ok(method)) = (
            text(0, "namespace"),
            text(1, "target"),
            text(2, "key"),
            text(3, "method"),
        ) else {
            return Ok(None);
        };
        let (Some(target), Ok(version), Ok(payload)) = (
            side_from_str(&target),
            lenient_integer(&row, 4, "version").map(|version| u32::try_from(version).unwrap_or(0)),
            lenient_bytes(&row, 5, "payload"),
        ) else {
            return Ok(None);
        };
        let entry = NewEntry {
            namespace,
            target,
            key: Key::from(key),
            method,
            version,
            payload,
            reason: text(6, "last_error").unwrap_or_default(),
            // An orphan stays one: whether its first store has it is unknown.
            uncertain: lenient_integer(&row, 7, "orphaned").is_ok_and(|orphaned| orphaned != 0),
        };
        let inserted = [(&entry, "pending", Duration::ZERO)];
        let query = self.bind_rows(sqlx::query(insert_sql(1)), now, &inserted);
        let done = query.execute(&mut self.conn).await?;
        let new_id = done.last_insert_rowid();
        sqlx::query(&format!(
            "{UPDATE_TAILS_SELECT} WHERE id = ? GROUP BY namespace, target, key {UPDATE_TAILS_CONFLICT}"
        ))
        .bind(new_id)
        .execute(&mut self.conn)
        .await?;
        sqlx::query("DELETE FROM entries WHERE id = ?")
            .bind(lease_id(id))
            .execute(&mut self.conn)
            .await?;
        delta
            .added
            .push((entry.namespace.clone(), entry.target, entry.key.clone()));
        Ok(Some(Ok(Done::Unit)))
    }

    async fn claim(
        &mut self,
        namespace: &str,
        limit: usize,
        lease: Duration,
        now: i64,
    ) -> Result<Claim, sqlx::Error> {
        let limit_sql = i64::try_from(limit).unwrap_or(i64::MAX);
        let turn = self.next_turn();
        let sql = self.opening(CLAIM);
        let all_rows = sqlx::query(sql)
            .bind(namespace)
            .bind(now)
            .bind(namespace)
            .bind(now)
            .bind(limit_sql.saturating_add(1))
            .bind(now.saturating_add(duration_ms(lease)))
            .bind(turn)
            .bind(namespace)
            .bind(now)
            .bind(limit_sql)
            .fetch_all(&mut self.conn)
            .await?;
        // The first statement's one row (two columns), then the claimed rows.
        let mut claim = Claim::default();
        let (counts, rows): (Vec<SqliteRow>, Vec<SqliteRow>) = all_rows
            .into_iter()
            .partition(|row| row.columns().len() == 2);
        let next_ready = counts
            .first()
            .and_then(|row| row.try_get::<Option<i64>, _>(0).ok().flatten());
        let ready = counts
            .first()
            .and_then(|row| row.try_get::<i64, _>(1).ok())
            .unwrap_or(0);
        if ready > limit_sql {
            claim.next_ready_in = Some(Duration::ZERO);
        } else {
            claim.next_ready_in = next_ready.map(|at| {
                Duration::from_millis(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
            });
        }
        for row in &rows {
            match read_claimed(row) {
                Ok(entry) => claim.entries.push(entry),
                Err((id, problem)) => {
                    tracing::error!(path = %self.path.display(), id, %problem, "unreadable SQLite queue row dead-lettered");
                    sqlx::query(
                        "UPDATE entries SET state = 'dead', attempts = attempts + 1, last_error = ?, died_at = ? WHERE id = ?",
                    )
                    .bind(format!("unreadable queue row: {problem}"))
                    .bind(now)
                    .bind(id)
                    .execute(&mut self.conn)
                    .await?;
                }
            }
        }
        claim.entries.sort_by_key(|entry| entry.lease.id);
        Ok(claim)
    }
}

/// A statement, and the same preceded by `BEGIN IMMEDIATE` for when it
/// opens the transaction (one round trip less).
struct Opening {
    plain: &'static str,
    begin: &'static str,
}

macro_rules! opening {
    ($($sql:expr),+ $(,)?) => {
        &Opening {
            plain: concat!($($sql),+),
            begin: concat!("BEGIN IMMEDIATE; ", $($sql),+),
        }
    };
}

/// True for a head (`entries`) that must wait for another key's entry: an
/// unkeyed head for any older entry of another key in its namespace and
/// target, a keyed head for an older unkeyed entry (through the partial
/// index `entries_unkeyed`). Entries taken out of line (`prev_id = 0`) do
/// not count.
macro_rules! barrier {
    () => {
        "(entries.key = '*' AND EXISTS (SELECT 1 FROM entries k WHERE k.id < entries.id \
           AND k.namespace = entries.namespace AND k.target = entries.target \
           AND k.key <> '*' AND k.prev_id IS NOT 0)) \
         OR (entries.key <> '*' AND EXISTS (SELECT 1 FROM entries b WHERE b.key = '*' \
           AND b.namespace = entries.namespace AND b.target = entries.target \
           AND b.id < entries.id AND b.prev_id IS NOT 0))"
    };
}

/// Claims heads of keys: first the earliest head not ready yet and the
/// number of ready heads (up to the limit + 1), then the lease of up to
/// `limit` of them, in the order they became ready.
const CLAIM: &Opening = opening!(
    "SELECT \
       (SELECT min(ready_at) FROM entries \
         WHERE namespace = ? AND prev_id IS NULL AND state <> 'dead' AND ready_at > ?), \
       (SELECT count(*) FROM (SELECT 1 FROM entries \
         WHERE namespace = ? AND prev_id IS NULL AND state <> 'dead' AND ready_at <= ? \
         AND NOT (",
    barrier!(),
    ") LIMIT ?)); \
     UPDATE entries SET state = 'leased', lease_token = lease_token + 1, ready_at = ?, turn = ?, \
       orphaned = (orphaned OR state = 'prepared') \
     WHERE id IN (SELECT id FROM entries \
       WHERE namespace = ? AND prev_id IS NULL AND state <> 'dead' AND ready_at <= ? \
       AND NOT (",
    barrier!(),
    ") ORDER BY ready_at, turn LIMIT ?) \
     RETURNING id, lease_token, target, key, method, version, payload, attempts, \
       enqueued_at, last_error, namespace, orphaned"
);

/// Removes completed entries (always heads of their keys), given
/// `[[id, lease_token], ..]` of entries leased with that token: makes each
/// one's successor the head of its key, ready now (parameters: time, turn)
/// unless it is still prepared (a prepared entry keeps its own expiry as its
/// `ready_at`: it becomes an orphan only when that passes, never because the
/// entry ahead of it went away), drops the `streams` row of keys left
/// empty (returning their keys) and deletes the entries (returning their
/// ids). The JSON list is bound three times.
const REMOVE_LEASED: &Opening = opening!(
    "UPDATE entries SET prev_id = NULL, ready_at = CASE WHEN state = 'prepared' THEN ready_at ELSE ? END, \
       turn = CASE WHEN state = 'prepared' THEN turn ELSE ? END WHERE prev_id IN ( \
       SELECT e.id FROM json_each(?) j JOIN entries e ON e.id = json_extract(j.value, '$[0]') \
       AND e.lease_token = json_extract(j.value, '$[1]') AND e.state = 'leased'); \
     DELETE FROM streams WHERE (namespace, target, key, tail_id) IN ( \
       SELECT e.namespace, e.target, e.key, e.id FROM json_each(?) j JOIN entries e \
       ON e.id = json_extract(j.value, '$[0]') AND e.lease_token = json_extract(j.value, '$[1]') \
       AND e.state = 'leased') RETURNING namespace, target, key; \
     DELETE FROM entries WHERE id IN ( \
       SELECT e.id FROM json_each(?) j JOIN entries e ON e.id = json_extract(j.value, '$[0]') \
       AND e.lease_token = json_extract(j.value, '$[1]') AND e.state = 'leased') RETURNING id"
);

/// [`COMMIT_PREPARED`] as an [`Opening`].
const COMMIT_ONLY: &Opening = opening!(
    "UPDATE entries SET state = 'pending', ready_at = ?, turn = ? \
     WHERE state = 'prepared' AND id IN (SELECT value FROM json_each(?));"
);

/// Deletes a prepared entry (parameter: its id), returning its key.
const ABORT_PREPARED: &Opening = opening!(
    "DELETE FROM entries WHERE id = ? AND (state = 'prepared' OR (state = 'leased' AND orphaned = 1)) \
     RETURNING namespace, target, key"
);

/// [`REMOVE_LEASED`] for dead letters (heads, or out of line), given
/// `[id, ..]`.
const REMOVE_DEAD: &Opening = opening!(
    "UPDATE entries SET prev_id = NULL, ready_at = CASE WHEN state = 'prepared' THEN ready_at ELSE ? END, \
       turn = CASE WHEN state = 'prepared' THEN turn ELSE ? END WHERE prev_id IN ( \
       SELECT e.id FROM json_each(?) j JOIN entries e ON e.id = j.value AND e.state = 'dead'); \
     DELETE FROM streams WHERE (namespace, target, key, tail_id) IN ( \
       SELECT e.namespace, e.target, e.key, e.id FROM json_each(?) j JOIN entries e \
       ON e.id = j.value AND e.state = 'dead') RETURNING namespace, target, key; \
     DELETE FROM entries WHERE id IN ( \
       SELECT e.id FROM json_each(?) j JOIN entries e ON e.id = j.value AND e.state = 'dead') \
     RETURNING id"
);

/// Copies committed WAL frames into the database file after commits, at
/// most every 50 ms, without blocking the writer (`PASSIVE`), until the
/// writer goes away.
async fn checkpoint_loop(mut conn: SqliteConnection, mut wakes: mpsc::Receiver<()>, shown: String) {
    while wakes.recv().await.is_some() {
        let started = tokio::time::Instant::now();
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut conn)
            .await
        {
            tracing::warn!(path = %shown, %error, "SQLite queue checkpoint failed; the writer will checkpoint by itself");
        }
        tokio::time::sleep_until(started + Duration::from_millis(50)).await;
    }
    if let Err(error) = conn.close().await {
        tracing::debug!(path = %shown, %error, "closing the SQLite queue's checkpoint connection failed");
    }
}

fn settled(rows: u64, id: EntryId) -> Result<Done, QueueError> {
    if rows == 0 {
        Err(QueueError::LeaseLost(id))
    } else {
        Ok(Done::Unit)
    }
}

fn lease_id(id: EntryId) -> i64 {
    // Ids come from this file and fit; a forged larger one matches nothing.
    i64::try_from(id.0).unwrap_or(-1)
}

fn token(token: u64) -> i64 {
    i64::try_from(token).unwrap_or(-1)
}

/// Checks the file's identity and schema version, creating the schema in a
/// new file, and repairs the links between entries.
async fn prepare_schema(conn: &mut SqliteConnection, shown: &str) -> Result<(), BackendError> {
    let context = |what: &str| format!("SQLite queue {shown}: could not {what}");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *conn)
        .await
        .map_err(|error| BackendError::new(context("lock the file to check its schema"), error))?;
    let result = prepare_schema_locked(conn, shown).await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = sqlx::query(end).execute(&mut *conn).await;
    result?;
    ended.map_err(|error| BackendError::new(context("commit the schema"), error))?;
    Ok(())
}

async fn prepare_schema_locked(
    conn: &mut SqliteConnection,
    shown: &str,
) -> Result<(), BackendError> {
    let context = |what: &str| format!("SQLite queue {shown}: could not {what}");
    let application_id: i64 = sqlx::query_scalar("PRAGMA application_id")
        .fetch_one(&mut *conn)
        .await
        .map_err(|error| BackendError::new(context("read the file's application id"), error))?;
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await
        .map_err(|error| BackendError::new(context("read the schema version"), error))?;
    let objects: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_master")
        .fetch_one(&mut *conn)
        .await
        .map_err(|error| BackendError::new(context("read the schema"), error))?;
    if application_id != 0 && application_id != APPLICATION_ID {
        return Err(BackendError::message(format!(
            "SQLite queue {shown}: the file is not a dualwrite queue (its application_id is {application_id:#x}, a queue's is {APPLICATION_ID:#x}); refusing to touch it"
        )));
    }
    if version > SqliteQueue::SCHEMA_VERSION {
        return Err(BackendError::message(format!(
            "SQLite queue {shown}: the file has schema version {version}, but this build of dualwrite-runtime understands versions up to {}; it was written by a newer release. Upgrade this service (or point it at another file); the file was not changed",
            SqliteQueue::SCHEMA_VERSION
        )));
    }
    if version == 0 {
        if objects > 0 {
            return Err(BackendError::message(format!(
                "SQLite queue {shown}: the file holds a database that is not a dualwrite queue ({objects} schema objects, no queue schema version); refusing to touch it"
            )));
        }
        sqlx::raw_sql(SCHEMA)
            .execute(&mut *conn)
            .await
            .map_err(|error| BackendError::new(context("create the schema"), error))?;
        sqlx::raw_sql(&format!(
            "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {};",
            SqliteQueue::SCHEMA_VERSION
        ))
        .execute(&mut *conn)
        .await
        .map_err(|error| BackendError::new(context("record the schema version"), error))?;
        return Ok(());
    }
    if application_id != APPLICATION_ID {
        return Err(BackendError::message(format!(
            "SQLite queue {shown}: the file has user_version {version} but not the application id of a dualwrite queue; refusing to touch it"
        )));
    }
    if version < SqliteQueue::SCHEMA_VERSION {
        tracing::info!(
            path = shown,
            from = version,
            to = SqliteQueue::SCHEMA_VERSION,
            "upgrading the SQLite queue's schema"
        );
        sqlx::raw_sql(&format!(
            "{MIGRATE_1_TO_2} PRAGMA user_version = {};",
            SqliteQueue::SCHEMA_VERSION
        ))
        .execute(&mut *conn)
        .await
        .map_err(|error| BackendError::new(context("upgrade the schema"), error))?;
    }
    // Every key's entries must form one chain in id order: rows deleted or
    // edited by hand (or a bug) must not block or reorder a key.
    let broken: i64 = sqlx::query_scalar(CHECK_LINKS)
        .fetch_one(&mut *conn)
        .await
        .map_err(|error| BackendError::new(context("check the links between entries"), error))?;
    if broken > 0 {
        tracing::warn!(
            path = shown,
            broken,
            "repairing the links between SQLite queue entries (rows were edited by hand?)"
        );
        sqlx::raw_sql(REPAIR_LINKS)
            .execute(&mut *conn)
            .await
            .map_err(|error| {
                BackendError::new(context("repair the links between entries"), error)
            })?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Reading rows without trusting them.

/// A text column read leniently: `problem` says what was wrong, if anything.
struct Lenient<T> {
    value: T,
    problem: Option<String>,
}

fn lenient_text(row: &SqliteRow, at: usize, name: &str) -> Result<Lenient<String>, String> {
    let raw = row
        .try_get_raw(at)
        .map_err(|error| format!("column `{name}` cannot be read: {error}"))?;
    if raw.is_null() {
        return Err(format!("column `{name}` is NULL"));
    }
    let bytes = <Vec<u8> as Decode<Sqlite>>::decode(raw)
        .map_err(|error| format!("column `{name}` cannot be read: {error}"))?;
    Ok(match String::from_utf8(bytes) {
        Ok(value) => Lenient {
            value,
            problem: None,
        },
        Err(error) => Lenient {
            value: String::from_utf8_lossy(error.as_bytes()).into_owned(),
            problem: Some(format!("column `{name}` is not valid UTF-8")),
        },
    })
}

fn lenient_bytes(row: &SqliteRow, at: usize, name: &str) -> Result<Vec<u8>, String> {
    let raw = row
        .try_get_raw(at)
        .map_err(|error| format!("column `{name}` cannot be read: {error}"))?;
    if raw.is_null() {
        return Err(format!("column `{name}` is NULL"));
    }
    <Vec<u8> as Decode<Sqlite>>::decode(raw)
        .map_err(|error| format!("column `{name}` cannot be read: {error}"))
}

fn lenient_integer(row: &SqliteRow, at: usize, name: &str) -> Result<i64, String> {
    let raw = row
        .try_get_raw(at)
        .map_err(|error| format!("column `{name}` cannot be read: {error}"))?;
    if raw.is_null() {
        return Err(format!("column `{name}` is NULL"));
    }
    let kind = raw.type_info().name().to_owned();
    if kind != "INTEGER" {
        return Err(format!("column `{name}` holds {kind}, not an integer"));
    }
    <i64 as Decode<Sqlite>>::decode(raw)
        .map_err(|error| format!("column `{name}` cannot be read: {error}"))
}

/// Reads a claimed row (`id, lease_token, target, key, method, version,
/// payload, attempts, enqueued_at, last_error, namespace`). A row with
/// unreadable essentials comes back with an empty payload and the problem in
/// its method, so the worker dead-letters it; a row without a usable id,
/// token or target is an `Err` for the queue to dead-letter.
fn read_claimed(row: &SqliteRow) -> Result<ClaimedEntry, (i64, String)> {
    let id = lenient_integer(row, 0, "id").map_err(|problem| (-1, problem))?;
    let lease_token = lenient_integer(row, 1, "lease_token").map_err(|problem| (id, problem))?;
    let target = lenient_text(row, 2, "target").map_err(|problem| (id, problem))?;
    let Some(target) = side_from_str(&target.value) else {
        return Err((
            id,
            format!(
                "column `target` is {:?}, neither \"old\" nor \"new\"",
                target.value
            ),
        ));
    };
    let mut problems = Vec::new();
    let mut text = |at: usize, name: &str| match lenient_text(row, at, name) {
        Ok(Lenient { value, problem }) => {
            problems.extend(problem);
            value
        }
        Err(problem) => {
            problems.push(problem);
            String::new()
        }
    };
    let key = text(3, "key");
    let method = text(4, "method");
    let namespace = text(10, "namespace");
    let version = match lenient_integer(row, 5, "version").map(u32::try_from) {
        Ok(Ok(version)) => version,
        Ok(Err(_)) => {
            problems.push("column `version` is out of range".to_owned());
            0
        }
        Err(problem) => {
            problems.push(problem);
            0
        }
    };
    let payload = match lenient_bytes(row, 6, "payload") {
        Ok(payload) => payload,
        Err(problem) => {
            problems.push(problem);
            Vec::new()
        }
    };
    // Bookkeeping columns: a bad value there does not stop the replay.
    let attempts = lenient_integer(row, 7, "attempts")
        .ok()
        .and_then(|attempts| u32::try_from(attempts).ok())
        .unwrap_or(0);
    let enqueued_at = lenient_integer(row, 8, "enqueued_at")
        .map(ms_to_system_time)
        .unwrap_or(UNIX_EPOCH);
    let last_error = lenient_text(row, 9, "last_error")
        .map(|text| text.value)
        .unwrap_or_default();
    let orphaned = lenient_integer(row, 11, "orphaned").is_ok_and(|orphaned| orphaned != 0);
    let (method, payload) = if problems.is_empty() {
        (method, payload)
    } else {
        (
            format!(
                "{method} (unreadable queue row {id}: {})",
                problems.join("; ")
            ),
            Vec::new(),
        )
    };
    Ok(ClaimedEntry {
        lease: Lease {
            id: EntryId(u64::try_from(id).unwrap_or(0)),
            token: u64::try_from(lease_token).unwrap_or(0),
        },
        namespace,
        target,
        key: Key::from(key),
        method,
        version,
        payload,
        attempts,
        enqueued_at,
        last_error,
        orphaned,
    })
}

async fn read_dead_letters(pool: &SqlitePool) -> Result<Vec<DeadLetter>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, namespace, target, key, method, version, payload, attempts, last_error, \
         enqueued_at, died_at FROM entries WHERE state = 'dead' ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(read_dead_letter).collect())
}

/// Reads a dead row; whatever cannot be read is described in `error`.
fn read_dead_letter(row: &SqliteRow) -> DeadLetter {
    let mut problems = Vec::new();
    let mut text = |at: usize, name: &str| match lenient_text(row, at, name) {
        Ok(Lenient { value, problem }) => {
            problems.extend(problem);
            value
        }
        Err(problem) => {
            problems.push(problem);
            String::new()
        }
    };
    let namespace = text(1, "namespace");
    let target_text = text(2, "target");
    let key = text(3, "key");
    let method = text(4, "method");
    let error = text(8, "last_error");
    let target = side_from_str(&target_text).unwrap_or_else(|| {
        problems.push(format!(
            "column `target` is {target_text:?}, neither \"old\" nor \"new\" (shown as \"new\")"
        ));
        Side::New
    });
    let mut integer = |at: usize, name: &str| match lenient_integer(row, at, name) {
        Ok(value) => value,
        Err(problem) => {
            problems.push(problem);
            0
        }
    };
    let id = integer(0, "id");
    let version = integer(5, "version");
    let attempts = integer(7, "attempts");
    let enqueued_at = integer(9, "enqueued_at");
    let died_at = integer(10, "died_at");
    let payload = lenient_bytes(row, 6, "payload").unwrap_or_else(|problem| {
        problems.push(problem);
        Vec::new()
    });
    let error = if problems.is_empty() {
        error
    } else {
        format!("{error} [unreadable queue row: {}]", problems.join("; "))
    };
    DeadLetter {
        id: EntryId(u64::try_from(id).unwrap_or(0)),
        namespace,
        target,
        key: Key::from(key),
        method,
        version: u32::try_from(version).unwrap_or(0),
        payload,
        attempts: u32::try_from(attempts).unwrap_or(0),
        error,
        enqueued_at: ms_to_system_time(enqueued_at),
        died_at: ms_to_system_time(died_at),
    }
}

async fn read_stats(pool: &SqlitePool) -> Result<QueueStats, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT target, state, count(*), sum(prev_id IS NULL), min(enqueued_at) FROM entries \
         GROUP BY target, state",
    )
    .fetch_all(pool)
    .await?;
    let mut stats = QueueStats::default();
    for row in &rows {
        let (Ok(target), Ok(state)) = (
            lenient_text(row, 0, "target"),
            lenient_text(row, 1, "state"),
        ) else {
            continue;
        };
        let Some(side) = side_from_str(&target.value) else {
            continue;
        };
        let count = u64::try_from(lenient_integer(row, 2, "count").unwrap_or(0)).unwrap_or(0);
        let heads = u64::try_from(lenient_integer(row, 3, "heads").unwrap_or(0)).unwrap_or(0);
        let oldest = lenient_integer(row, 4, "enqueued_at").ok();
        let target = stats.target_mut(side);
        match state.value.as_str() {
            "pending" | "prepared" => target.pending += count,
            "leased" => target.in_flight += count,
            "dead" => {
                target.dead += count;
                target.blocked_keys += heads;
            }
            _ => continue,
        }
        if state.value != "dead" {
            if let Some(oldest) = oldest.map(ms_to_system_time) {
                target.oldest_pending = Some(
                    target
                        .oldest_pending
                        .map_or(oldest, |other| other.min(oldest)),
                );
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_sum_to_the_count() {
        for count in 0..1000 {
            let chunks = insert_chunks(count);
            assert_eq!(chunks.iter().sum::<usize>(), count);
            assert!(chunks.iter().all(|chunk| *chunk <= MAX_INSERT_ROWS));
        }
        assert_eq!(insert_chunks(300), vec![256, 44]);
    }

    #[test]
    fn insert_sql_is_padded_to_a_power_of_two() {
        for rows in 1..=MAX_INSERT_ROWS {
            let slots = insert_sql(rows).matches("(?, ?").count();
            assert_eq!(slots, rows.next_power_of_two(), "{rows} rows");
        }
    }

    #[test]
    fn index_tracks_sides_separately() {
        let mut index = KeyIndex::default();
        let key = Key::from("k");
        index.insert("ns", Side::New, &key);
        assert!(index.contains("ns", Side::New, &key));
        assert!(!index.contains("ns", Side::Old, &key));
        index.insert("ns", Side::Old, &key);
        index.remove("ns", Side::New, &key);
        assert!(index.contains("ns", Side::Old, &key));
        index.remove("ns", Side::Old, &key);
        assert!(index.keys.is_empty());
    }
}
