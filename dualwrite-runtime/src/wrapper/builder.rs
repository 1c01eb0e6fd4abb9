use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::{Delivery, DualWrite};
use crate::config::{self, BuildError};
use crate::observe::Observer;
use crate::queue::ReconciliationQueue;
use crate::read::ReadSettings;
use crate::records::{KeySync, RecordPair, RecordStore, RecordSyncs};
use crate::stage::{MismatchGuard, Stage, StageHandle};
use crate::worker::RetryPolicy;
use crate::worker::{Breakers, CircuitBreaker, Shared};

/// Configures a [`DualWrite`]. Start with [`DualWrite::builder`].
///
/// ```
/// use std::time::Duration;
/// use dualwrite_runtime::{DualWrite, InMemoryQueue, RetryPolicy, Stage};
///
/// # struct Store;
/// let repo = DualWrite::builder(Store, Store)
///     .queue(InMemoryQueue::new())
///     .stage(Stage::DualWrite)
///     .follower_timeout(Duration::from_millis(250))
///     .retry(RetryPolicy::default().max_attempts(20))
///     .build()?;
/// # Ok::<(), dualwrite_runtime::BuildError>(())
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<Old, New> {
    old: Old,
    new: New,
    stage: Option<StageHandle>,
    initial_stage: Stage,
    queue: Option<Arc<dyn ReconciliationQueue>>,
    retry: RetryPolicy,
    follower_timeout: Duration,
    delivery: Delivery,
    orphan_after: Duration,
    confirm_before_return: bool,
    circuit_breaker: Option<CircuitBreaker>,
    worker_concurrency: usize,
    lease: Option<Duration>,
    poll_interval: Duration,
    log_keys: bool,
    reads: ReadSettings,
    records: RecordSyncs,
    key_sync: Option<KeySync>,
}

impl<Old, New> Builder<Old, New> {
    pub(super) fn new(old: Old, new: New) -> Self {
        Builder {
            old,
            new,
            stage: None,
            initial_stage: Stage::DualWrite,
            queue: None,
            retry: RetryPolicy::default(),
            follower_timeout: Duration::from_secs(1),
            delivery: Delivery::Sync,
            orphan_after: Duration::from_secs(300),
            confirm_before_return: false,
            circuit_breaker: Some(CircuitBreaker::default()),
            worker_concurrency: 64,
            lease: None,
            poll_interval: Duration::from_millis(500),
            log_keys: false,
            reads: ReadSettings::default(),
            records: RecordSyncs::default(),
            key_sync: None,
        }
    }

    /// The stage to start in, on a handle of this wrapper's own. Default:
    /// [`Stage::DualWrite`]. Ignored when [`stage_handle`](Self::stage_handle) is given.
    pub fn stage(mut self, stage: Stage) -> Self {
        self.initial_stage = stage;
        self
    }

    /// A stage handle shared with other wrappers, so that they move together.
    /// Wrappers built with one handle also share the per-key order guard, so
    /// writes of one key through any of them reach both stores in one order.
    pub fn stage_handle(mut self, handle: StageHandle) -> Self {
        self.stage = Some(handle);
        self
    }

    /// The reconciliation queue (required). The embedded durable default is
    /// a [`SqliteQueue`](crate::queue::SqliteQueue), opened before the chain
    /// so that the chain has one error type:
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use dualwrite_runtime::{queue::SqliteQueue, DualWrite};
    /// # struct Store;
    /// let queue = SqliteQueue::open("/var/lib/orders/dualwrite-queue.db").await?;
    /// let repo = DualWrite::builder(Store, Store).queue(queue).build()?;
    /// # let _ = repo; Ok(()) }
    /// ```
    pub fn queue(self, queue: impl ReconciliationQueue) -> Self {
        self.shared_queue(Arc::new(queue))
    }

    /// A reconciliation queue shared with other wrappers or workers.
    pub fn shared_queue(mut self, queue: Arc<dyn ReconciliationQueue>) -> Self {
        self.queue = Some(queue);
        self
    }

    /// How the worker retries a queued operation. Default: [`RetryPolicy::default`].
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// How long a follower write may take, in the request and in the worker,
    /// before it counts as failed and is queued (or retried). Default: 1 s.
    /// Blocking (non-async) methods cannot be interrupted; for them this
    /// bounds nothing.
    pub fn follower_timeout(mut self, timeout: Duration) -> Self {
        self.follower_timeout = timeout;
        self
    }

    /// How writes reach the follower. Default: [`Delivery::Sync`].
    pub fn delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }

    /// With [`Delivery::Journaled`], how long an operation written ahead of
    /// its authoritative write waits for the writer to confirm it before the
    /// worker presumes the writer died mid-write and replays the operation to
    /// both stores. Must exceed the slowest authoritative write. Default: 5 min.
    ///
    /// It also bounds how long a write waits for an uncertain write of its
    /// key (one whose caller was cancelled during the authoritative call) to
    /// be applied to the authoritative store by the worker, once a worker
    /// has run in this process; see [`DualWrite::shutdown`] and the crate
    /// docs on cancellation.
    pub fn orphan_after(mut self, after: Duration) -> Self {
        self.orphan_after = after;
        self
    }

    /// With [`Delivery::Journaled`], whether a write waits for the queue to
    /// take its written-ahead entry's confirmation before it returns.
    /// Default: `false`.
    ///
    /// By default a journaled write returns as soon as the authoritative
    /// store has taken it. The confirmation (which makes the entry available
    /// to the worker) is sent as the write returns and finished in a task
    /// that keeps the key's order guard and the stage barrier until the
    /// queue has taken it, so the next write of the key, a stage move and
    /// [`DualWrite::shutdown`] all wait for it. The write is durable before
    /// it returns either way: its entry was written ahead, and an entry that
    /// is never confirmed (the process died first, or the queue refused the
    /// confirmation) is replayed as an orphan once
    /// [`orphan_after`](Self::orphan_after) has passed, to both stores
    /// unless a later write of its key superseded it.
    ///
    /// `true` makes the caller wait for the queue's answer: one more queue
    /// round trip in every journaled write's latency (a statement for the
    /// PostgreSQL and MySQL queues, a publish for the brokers), in exchange
    /// for an entry that is deliverable when the call returns, so that a
    /// crash right after it does not delay the follower's copy by
    /// `orphan_after`. The SQLite queue takes a confirmation without
    /// waiting for its commit either way (its writer applies requests in
    /// order), so there this setting changes little.
    pub fn confirm_before_return(mut self, wait: bool) -> Self {
        self.confirm_before_return = wait;
        self
    }

    /// The circuit breaker in front of the follower, for `Sync` delivery:
    /// after a run of failures, writes queue at once instead of waiting for a
    /// follower that is down. Default: [`CircuitBreaker::default`].
    pub fn circuit_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.circuit_breaker = Some(breaker);
        self
    }

    /// Calls the follower on every write, however often it fails.
    pub fn without_circuit_breaker(mut self) -> Self {
        self.circuit_breaker = None;
        self
    }

    /// How many keys a worker reconciles at once. Writes of one key are
    /// always applied one after another. Default: 64.
    pub fn worker_concurrency(mut self, keys: usize) -> Self {
        self.worker_concurrency = keys;
        self
    }

    /// How long a worker's claim on a queued operation lasts before another
    /// worker may take it over (for a worker that died). Must exceed the
    /// follower timeout. Default: the follower timeout plus 30 s.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// How often an idle worker looks for work queued by other processes.
    /// Work queued through this wrapper wakes it at once. Default: 500 ms.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Whether logs, errors and the default observer show keys as written
    /// (`true`) or by their stable [fingerprint](crate::Key::fingerprint)
    /// (`false`, the default). Keys are made from arguments (emails, names),
    /// which must not reach logs unless you opt in. Observers you add always
    /// receive the key itself.
    pub fn log_keys(mut self, log_keys: bool) -> Self {
        self.log_keys = log_keys;
        self
    }

    /// The record stores (see [`records`](crate::records)) through which
    /// this wrapper's workers apply key-level sync entries filed as
    /// `name`: `old` and `new` read and write the same data as the two
    /// stores of the trait. Repair queues such entries; give the name it
    /// was given. Call it once per kind of record (table) the trait writes.
    ///
    /// ```no_run
    /// # async fn demo(old_pool: sqlx::SqlitePool, new_pool: sqlx::SqlitePool) -> Result<(), Box<dyn std::error::Error>> {
    /// use dualwrite_runtime::records::SqliteTable;
    /// use dualwrite_runtime::{DualWrite, InMemoryQueue};
    /// # struct Store;
    /// let repo = DualWrite::builder(Store, Store)
    ///     .queue(InMemoryQueue::new())
    ///     .sync_records(
    ///         "accounts",
    ///         SqliteTable::new(old_pool, "accounts", "id"),
    ///         SqliteTable::new(new_pool, "accounts", "id"),
    ///     )
    ///     .build()?;
    /// # let _ = repo; Ok(()) }
    /// ```
    pub fn sync_records(
        mut self,
        name: impl Into<String>,
        old: impl RecordStore,
        new: impl RecordStore,
    ) -> Self {
        self.records.insert(name.into(), RecordPair::new(old, new));
        self
    }

    /// The cross-instance mode ([`KeySync`]): for services whose
    /// instances write the same keys. Writes queue a key-level sync of
    /// their key instead of calling the follower, and a worker copies the
    /// authoritative record to the follower, so the stores agree however the
    /// instances' writes interleave. Delivery is journaled for every method
    /// (a method's own `delivery = ..` is overridden), and the records named
    /// must be registered with [`sync_records`](Self::sync_records).
    ///
    /// ```no_run
    /// # async fn demo(old_pool: sqlx::SqlitePool, new_pool: sqlx::SqlitePool) -> Result<(), Box<dyn std::error::Error>> {
    /// use dualwrite_runtime::records::SqliteTable;
    /// use dualwrite_runtime::queue::SqliteQueue;
    /// use dualwrite_runtime::{DualWrite, KeySync};
    /// # struct Store;
    /// let repo = DualWrite::builder(Store, Store)
    ///     .queue(SqliteQueue::open("shared-queue.db").await?)
    ///     .sync_records("accounts", SqliteTable::new(old_pool, "accounts", "id"), SqliteTable::new(new_pool, "accounts", "id"))
    ///     .key_sync(KeySync::records("accounts"))
    ///     .build()?;
    /// # let _ = repo; Ok(()) }
    /// ```
    pub fn key_sync(mut self, key_sync: KeySync) -> Self {
        self.key_sync = Some(key_sync);
        self
    }

    // ---- Reads and observability (shadow comparison, issue 4) ----------
    // One block, kept together: the settings of `crate::read` and
    // `crate::observe`, checked in `ReadSettings::build`.

    /// How long a compared read waits for the other store once the serving
    /// store has answered; the caller never waits longer than the serving
    /// store plus this. A detached comparison gives the other store the
    /// same time. Default: 100 ms.
    pub fn compare_timeout(mut self, timeout: Duration) -> Self {
        self.reads.timeout = timeout;
        self
    }

    /// The fraction (0 to 1) of reads compared in `Shadow` and `Live`; the
    /// others read the serving store only. Default: 1 (every read).
    pub fn compare_sampling(mut self, fraction: f64) -> Self {
        self.reads.sampling = fraction;
        self
    }

    /// How many detached comparisons may run at once; beyond that, reads
    /// are served without one and the drop is counted. Default: 64.
    pub fn detached_concurrency(mut self, comparisons: usize) -> Self {
        self.reads.detached_concurrency = comparisons;
        self
    }

    /// Adds an observer of mismatches, dead letters and stage changes.
    pub fn observer(self, observer: impl Observer) -> Self {
        self.shared_observer(std::sync::Arc::new(observer))
    }

    /// Adds an observer shared with other wrappers (or kept by the caller).
    pub fn shared_observer(mut self, observer: std::sync::Arc<dyn Observer>) -> Self {
        self.reads.observers.push(observer);
        self
    }

    /// Leaves out the default [`TracingObserver`](crate::observe::TracingObserver).
    pub fn without_tracing_observer(mut self) -> Self {
        self.reads.default_observer = false;
        self
    }

    /// The mismatch-rate guardrail of the stage handle. Default:
    /// [`MismatchGuard::default`] (or what the shared handle has).
    pub fn mismatch_guard(mut self, guard: MismatchGuard) -> Self {
        self.reads.mismatch_guard = Some(guard);
        self
    }

    // ---- end of reads and observability --------------------------------

    /// Checks the settings and builds the wrapper.
    ///
    /// # Errors
    ///
    /// A [`BuildError`] naming the first setting that is missing or invalid.
    pub fn build(self) -> Result<DualWrite<Old, New>, BuildError> {
        let queue = self.queue.ok_or(BuildError::Missing {
            setting: "queue",
            hint: "pass a reconciliation queue: `.queue(SqliteQueue::open(path).await?)` for the embedded SQLite queue, or `.queue(InMemoryQueue::new())` in tests",
        })?;
        config::duration("follower_timeout", self.follower_timeout, false)?;
        if self.worker_concurrency == 0 {
            return Err(config::invalid("worker_concurrency", "must be at least 1"));
        }
        config::duration("orphan_after", self.orphan_after, false)?;
        config::duration("poll_interval", self.poll_interval, false)?;
        let lease = match self.lease {
            Some(lease) => {
                config::duration("lease", lease, false)?;
                lease
            }
            None => self.follower_timeout + Duration::from_secs(30),
        };
        if lease <= self.follower_timeout {
            return Err(config::invalid(
                "lease",
                format!(
                    "{lease:?} must be longer than the follower timeout ({:?}), or a second worker could take over an operation still being applied",
                    self.follower_timeout
                ),
            ));
        }
        self.retry.validate()?;
        if let Some(breaker) = &self.circuit_breaker {
            breaker.validate()?;
        }
        if let Some(key_sync) = &self.key_sync {
            let known = self.records.names();
            if let Some(missing) = key_sync.names().find(|name| !known.contains(name)) {
                return Err(config::invalid(
                    "key_sync",
                    format!(
                        "it syncs the records `{missing}`, but no record stores were registered under that name; add `.sync_records(\"{missing}\", old, new)`"
                    ),
                ));
            }
        }
        let capabilities = queue.capabilities();
        if !capabilities.write_ahead {
            let setting = if self.key_sync.is_some() {
                Some("key_sync")
            } else if self.delivery == Delivery::Journaled {
                Some("delivery")
            } else {
                None
            };
            if let Some(setting) = setting {
                return Err(config::invalid(
                    setting,
                    format!(
                        "the {} reconciliation queue cannot write ahead (prepare, then commit after the authoritative write), which {} needs; use `Delivery::Sync` with this queue, or a queue that writes ahead (SqliteQueue)",
                        capabilities.backend,
                        if setting == "key_sync" { "cross-instance key sync" } else { "`Delivery::Journaled`" },
                    ),
                ));
            }
        }
        let stage = self
            .stage
            .unwrap_or_else(|| StageHandle::new(self.initial_stage));
        stage.attach_queue(&queue);
        let reads = Arc::new(self.reads.build(&stage, self.log_keys)?);
        let shared = Shared {
            locks: stage.key_locks(),
            stage,
            queue,
            follower_timeout: self.follower_timeout,
            // Key-level syncs are always written ahead: a crash between the
            // authoritative write and a later append would lose the sync.
            delivery: if self.key_sync.is_some() {
                Delivery::Journaled
            } else {
                self.delivery
            },
            orphan_after: self.orphan_after,
            confirm_before_return: self.confirm_before_return,
            breakers: Breakers::new(self.circuit_breaker),
            retry: self.retry,
            worker_concurrency: self.worker_concurrency,
            lease,
            poll_interval: self.poll_interval,
            queued: Notify::new(),
            drift: AtomicU64::new(0),
            log_keys: self.log_keys,
            withdrawals: Default::default(),
            uncertain: Default::default(),
            workers_started: Default::default(),
            reads,
            records: self.records,
            key_sync: self.key_sync,
        };
        Ok(DualWrite::from_parts(self.old, self.new, shared))
    }
}
