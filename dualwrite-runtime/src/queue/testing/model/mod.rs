//! The model-based suite: random sequences of queue operations, each result
//! checked against a small reference model of the semantics every
//! [`ReconciliationQueue`] shares.
//!
//! The suite generates sequences of up to
//! [`max_steps`](ModelConfig::max_steps) operations over two namespaces,
//! both targets and four keys (three keys and [`Key::unkeyed`]): appends
//! (certain and uncertain), prepares with their commits, uncertain commits
//! and aborts, claims, and every way of settling a claim (complete, renew,
//! retry later, release, dead-letter), `settle_orphan`,
//! `has_later_entries`, dead letters retried and dropped, `has_work`,
//! `stats`, `flush`, time passing and, for a
//! [durable](ModelBackend::durable) backend, restarts. After every step
//! (unless [turned off](ModelConfig::check_every_step)) it also compares
//! `stats`, `dead_letters` and `has_work` of every key with the model. On a
//! mismatch [`proptest`] shrinks the sequence, and the
//! [`ModelFailure`] shows the smallest failing sequence, step by step, with
//! what the backend answered.
//!
//! What is generated and checked follows the queue's
//! [`capabilities`](ReconciliationQueue::capabilities), read from a queue
//! opened (and [finished](ModelBackend::finish)) for that before the first
//! case, and two promises the backend states itself,
//! [`ModelBackend::id_order`] and [`ModelBackend::stats_precision`]: see
//! [Capabilities](#capabilities). A backend with every capability (and the
//! defaults of both) is held to everything below.
//!
//! # What is checked
//!
//! - per `(namespace, target, key)` FIFO order: a claim returns only heads
//!   of keys, at most one entry of a key is in flight, and as many entries
//!   as are ready (up to the limit);
//! - unkeyed ordering: an entry of [`Key::unkeyed`] is claimed only once no
//!   entry of another key with a smaller id remains, an entry of another key
//!   only once no unkeyed entry with a smaller id remains, and `has_work`
//!   answers accordingly;
//! - prepared entries: never claimed before their own expiry (wherever they
//!   sit in their key), then claimed as orphans; `commit` makes them pending,
//!   `commit_uncertain` claimable at once as orphans, `abort` removes them
//!   (also once claimed as orphans: the lease is then lost); uncertain
//!   appends are claimed as orphans; an orphan stays one when claimed again
//!   until `settle_orphan`, which also makes a prepared entry pending;
//! - `has_later_entries`: later entries of the key or later unkeyed ones,
//!   and for an unkeyed entry later entries of any key;
//! - leases: settling or renewing with a claim that was taken over (the
//!   lease expired and the entry was claimed again) or whose entry is gone
//!   fails with [`QueueError::LeaseLost`]; an expired claim that nobody took
//!   over still settles; `renew` keeps the entry from being claimed again;
//!   lease tokens are never reused;
//! - retries: `retry_later` counts an attempt and waits for its delay,
//!   `release` counts none, `dead_letter` counts one and makes a dead letter
//!   that blocks its key ([`PoisonPolicy::Block`], the default), listed
//!   oldest first with its error; `retry_dead` puts it back at the head with
//!   no attempts, `drop_dead` removes it, and both refuse an entry that is
//!   not dead with [`QueueError::NotDead`];
//! - `stats` of both targets (pending, in flight, dead, blocked keys,
//!   whether there is an oldest pending entry, `is_empty`);
//! - requests sent at once (appends, prepares, commits and completions,
//!   which a batching backend may run in one transaction) behave as if
//!   sent one after another: of two completions of one claim exactly one
//!   succeeds, the other is late ([`QueueError::LeaseLost`]);
//! - [`complete_and_claim`](ReconciliationQueue::complete_and_claim)
//!   behaves as its completions followed by its claim: a lost claim among
//!   them is refused and removes nothing, one given twice succeeds once,
//!   the claim hands out the entries the completions made heads (and, with
//!   a limit of 0, nothing);
//! - ids strictly increase in append order (also across restarts; see
//!   [`IdOrder`]), and
//!   every field (namespace, target, key, method, version, payload, reason
//!   as the first `last_error`, `enqueued_at`) round-trips exactly.
//!
//! Only the queue's own poison policy is modelled: open the queues with
//! the default, [`PoisonPolicy::Block`] (a backend without
//! `blocking_dead_letters` behaves as [`PoisonPolicy::Skip`], below).
//!
//! # Capabilities
//!
//! Without a capability the suite generates only what the queue serves and
//! relaxes only the checks the missing capability concerns; every other
//! check stays as strict:
//!
//! - without `write_ahead`: no prepare, commit, `commit_uncertain` or
//!   abort steps (nor prepares and commits in bursts); uncertain appends
//!   and `settle_orphan` stay;
//! - without `unkeyed_order`: no entries of [`Key::unkeyed`], and no
//!   `has_work` of it (the backend refuses unkeyed appends);
//! - without `blocking_dead_letters`: a dead letter does not block its key
//!   ([`PoisonPolicy::Skip`]): the key's later entries are claimed past it,
//!   it counts in no `blocked_keys`, and neither `has_work` nor
//!   `has_later_entries` sees it; `retry_dead` puts it back at the *end* of
//!   its key's line, behind every entry appended before the retry (as the
//!   broker queues do: they publish it again), with no attempts and its
//!   dead letter's error as `last_error`;
//! - without `exact_key_work`: `has_work` and `has_later_entries` may answer
//!   `true` where the model says `false` (they answer for a superset of the
//!   key, its partition), never `false` where it says `true`;
//! - without `key_independent_delays`: a claim may hand out fewer entries
//!   than are ready (a retry delay or an entry in flight may hold back
//!   other keys), and an empty claim need not say when more will be ready;
//!   but it hands out at least one when a ready entry's namespace and
//!   target have nothing in flight or waiting out a delay, and it never
//!   hands out an entry the model says is not claimable, so per-key FIFO,
//!   one entry in flight per key and leases stay checked;
//! - [`IdOrder::PerHandle`] (instead of [`IdOrder::Appended`]): a new id
//!   must be unique and greater than the last one appended through the
//!   queue as opened now (after a restart, anything unused); the model
//!   keeps append order itself, not by id; dead letters are listed oldest
//!   dead first (by `died_at`, ties by id);
//! - [`StatsPrecision::Held`] (instead of [`StatsPrecision::Exact`]): of
//!   `pending` and `in_flight` only their sum is exact, `in_flight` lying
//!   between the claims whose lease surely has not expired and every
//!   claim; `oldest_pending` may be missing (never there without pending
//!   or in-flight entries).
//!
//! `key_entries` is not part of the suite.
//!
//! # Time
//!
//! Time passes for real: the suite sleeps, so it works with any clock (the
//! [`InMemoryQueue`](crate::InMemoryQueue) follows tokio's clock, the
//! SQLite queue the wall clock). Every deadline (prepare expiry, lease,
//! retry delay) is either zero, *short* ([`ModelConfig::short_deadline`])
//! or an hour. The model only says an entry is ready once its short
//! deadline was set before a "time passes" step (which sleeps
//! [`ModelConfig::time_step`], longer than the short deadline), and only
//! says it is not ready for an hour-long deadline; in between it accepts
//! either answer, and follows what the backend did. No check depends on
//! how fast the machine is.
//!
//! # Restarts
//!
//! For a durable backend, a restart step calls
//! [`flush`](ReconciliationQueue::flush) and then
//! [`ModelBackend::reopen`]: everything must survive, prepared entries stay
//! prepared, and leased entries stay leased until their lease expires. A
//! claim made before the restart may still be honoured or may be refused
//! with [`QueueError::LeaseLost`]; either is accepted. (The broker queues
//! run without restarts: their leases, attempt counts and last errors live
//! in the process, so after a reopen every held entry is delivered again at
//! once, with the attempts of the broker's delivery count, which the model
//! does not follow.)

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime};

use proptest::arbitrary::any;
use proptest::collection::vec;
use proptest::sample::Index;
use proptest::strategy::{BoxedStrategy, Just, Strategy, Union};
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

use crate::op::Key;
use crate::queue::{
    Claim, ClaimedEntry, DeadLetter, EntryId, Lease, NewEntry, PoisonPolicy, QueueError,
    QueueStats, ReconciliationQueue,
};
use crate::vocabulary::Side;

mod checks;
mod claims;
mod config;
mod profile;
mod reference;
mod run;
mod settles;
mod steps;
mod turnover;
mod writes;

pub use config::{ModelConfig, ModelFailure};
use profile::Profile;
pub use profile::{IdOrder, StatsPrecision};
use reference::*;
use run::*;
use steps::*;

// ---------------------------------------------------------------------------
// The public interface.

/// A queue backend under test: how to open a fresh, empty queue for each
/// generated case and, for a durable backend, how to restart one. The
/// [conformance suite](super::conformance) takes the same backend.
///
/// For a backend without restarts, [`check_fresh`] takes a plain closure.
///
/// ```ignore
/// use dualwrite_runtime::queue::testing::model::{check_backend, ModelBackend, ModelConfig};
/// use dualwrite_runtime::QueueError;
///
/// struct MyBackend { dir: std::path::PathBuf, cases: u64 }
///
/// impl ModelBackend for MyBackend {
///     type Queue = MyQueue;
///
///     async fn open(&mut self) -> Result<MyQueue, QueueError> {
///         self.cases += 1;
///         MyQueue::open(self.dir.join(format!("case-{}", self.cases))).await
///     }
///
///     fn durable(&self) -> bool {
///         true
///     }
///
///     async fn reopen(&mut self, queue: MyQueue) -> Result<MyQueue, QueueError> {
///         let path = queue.path().to_owned();
///         queue.close().await;
///         MyQueue::open(path).await
///     }
/// }
///
/// #[test]
/// fn my_queue_matches_the_model() {
///     let backend = MyBackend { dir: std::env::temp_dir().join("my-queue-model"), cases: 0 };
///     if let Err(failure) = check_backend(&ModelConfig::new().cases(32).with_env(), backend) {
///         panic!("{failure}");
///     }
/// }
/// ```
pub trait ModelBackend {
    /// The queue type.
    type Queue: ReconciliationQueue;

    /// Opens a new, empty queue, with the default poison policy
    /// ([`PoisonPolicy::Block`]). Called once for every generated case
    /// (including every case run while shrinking a failure), once before
    /// them to read the queue's
    /// [`capabilities`](ReconciliationQueue::capabilities) (that queue is
    /// [finished](Self::finish) at once), and once for every conformance
    /// case of that policy.
    fn open(&mut self) -> impl Future<Output = Result<Self::Queue, QueueError>>;

    /// Whether the queue survives a restart, so that the suite generates
    /// restart steps and calls [`reopen`](Self::reopen). Default: `false`.
    fn durable(&self) -> bool {
        false
    }

    /// Restarts a durable queue: closes (or drops) `queue` and opens the same
    /// storage again. The suite calls [`flush`](ReconciliationQueue::flush)
    /// first, so everything the queue acknowledged must be there after the
    /// restart. Only called when [`durable`](Self::durable) is `true`; the
    /// default returns `queue` unchanged.
    fn reopen(
        &mut self,
        queue: Self::Queue,
    ) -> impl Future<Output = Result<Self::Queue, QueueError>> {
        std::future::ready(Ok(queue))
    }

    /// What the backend promises of its entry ids, beyond their being
    /// unique: [`IdOrder::Appended`] (the default: they strictly increase
    /// in append order, also across restarts) or [`IdOrder::PerHandle`].
    fn id_order(&self) -> IdOrder {
        IdOrder::Appended
    }

    /// How exactly the backend's `stats` count: [`StatsPrecision::Exact`]
    /// (the default) or [`StatsPrecision::Held`].
    fn stats_precision(&self) -> StatsPrecision {
        StatsPrecision::Exact
    }

    /// Opens a new, empty queue with the given poison policy, or `Ok(None)`
    /// if the backend cannot be opened with it. The model suite never calls
    /// it; the [conformance suite](super::conformance::check_conformance)
    /// calls it with [`PoisonPolicy::Skip`] for its skip-policy cases (all
    /// its other cases, like the model suite, use [`open`](Self::open)).
    /// The default returns `Ok(None)`: those cases are then not run, and
    /// are listed in
    /// [`ConformanceReport::skipped`](super::conformance::ConformanceReport::skipped).
    fn open_with_policy(
        &mut self,
        policy: PoisonPolicy,
    ) -> impl Future<Output = Result<Option<Self::Queue>, QueueError>> {
        let _ = policy;
        std::future::ready(Ok(None))
    }

    /// Disposes of the queue of a finished case (closing it, removing its
    /// files). Not called for a queue lost in a failed
    /// [`reopen`](Self::reopen) or a panic (the conformance suite still
    /// calls it after a failed case once no task of the case holds the
    /// queue); the default drops it.
    fn finish(&mut self, queue: Self::Queue) -> impl Future<Output = ()> {
        drop(queue);
        std::future::ready(())
    }
}

/// A [`ModelBackend`] without restarts, from a closure that opens a fresh
/// empty queue each time it is called. See [`check_fresh`].
#[derive(Debug, Clone)]
pub struct Fresh<F>(pub F);

impl<F, Fut, Q> ModelBackend for Fresh<F>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Q>,
    Q: ReconciliationQueue,
{
    type Queue = Q;

    async fn open(&mut self) -> Result<Q, QueueError> {
        Ok((self.0)().await)
    }
}

/// Runs the model-based suite against `backend`: [`ModelConfig`]'s number
/// of random cases, each on a fresh queue from [`ModelBackend::open`].
///
/// It builds its own tokio runtime, so call it from a plain `#[test]`, not
/// from inside a runtime (`#[tokio::test]`), and turn the failure into a
/// panic:
///
/// ```ignore
/// use dualwrite_runtime::queue::testing::model::{check_backend, ModelConfig};
///
/// #[test]
/// fn my_queue_matches_the_model() {
///     let config = ModelConfig::new().cases(32).with_env();
///     if let Err(failure) = check_backend(&config, MyBackend::new()) {
///         panic!("{failure}");
///     }
/// }
/// ```
///
/// # Errors
///
/// A [`ModelFailure`] describing the smallest failing sequence found.
pub fn check_backend<B: ModelBackend>(
    config: &ModelConfig,
    mut backend: B,
) -> Result<(), ModelFailure> {
    if let Some(error) = &config.env_error {
        return Err(ModelFailure {
            message: format!("the model suite's settings are wrong: {error}"),
            seed: None,
        });
    }
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(ModelFailure {
            message: "the model suite builds its own tokio runtime: call check_backend from a \
                      plain #[test], not from inside a runtime (#[tokio::test])"
                .to_owned(),
            seed: None,
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| ModelFailure {
            message: format!("the model suite could not start a tokio runtime: {error}"),
            seed: None,
        })?;
    let seed = config.seed.unwrap_or_else(random_seed);
    let durable = backend.durable();
    let ids = backend.id_order();
    let stats = backend.stats_precision();
    // What to generate and check follows the queue's capabilities: read
    // them from a queue opened (and disposed of) for that alone.
    let capabilities = runtime.block_on(async {
        let probe = backend.open().await?;
        let capabilities = probe.capabilities();
        backend.finish(probe).await;
        Ok::<_, QueueError>(capabilities)
    });
    let capabilities = capabilities.map_err(|error| ModelFailure {
        message: format!("opening a queue to read its capabilities failed: {error}"),
        seed: None,
    })?;
    let profile = Profile::new(&capabilities, ids, stats, durable);
    let settings = Settings {
        short: config.short,
        time_step: config
            .time_step
            .max(config.short + Duration::from_millis(5)),
        check_every_step: config.check_every_step,
        profile,
    };
    let proptest_config = Config {
        cases: config.cases,
        max_shrink_iters: config.max_shrink_iters,
        max_shrink_time: u32::try_from(config.max_shrink_time.as_millis()).unwrap_or(u32::MAX),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        proptest_config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes(seed)),
    );
    let backend = RefCell::new(backend);
    let strategy = vec(step_strategy(&profile), 1..=config.max_steps);
    let result = runner.run(&strategy, |steps| {
        let mut backend = backend.borrow_mut();
        runtime
            .block_on(run_case(&mut *backend, &steps, &settings))
            .map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => Ok(()),
        Err(TestError::Fail(reason, steps)) => Err(ModelFailure {
            message: format!(
                "the queue backend does not behave like the model (seed {seed}: rerun with \
                 {}={seed}; smallest failing case found: {} steps)\n{}",
                ModelConfig::SEED_VAR,
                steps.len(),
                reason.message()
            ),
            seed: Some(seed),
        }),
        Err(TestError::Abort(reason)) => Err(ModelFailure {
            message: format!(
                "the model suite was aborted (seed {seed}): {}",
                reason.message()
            ),
            seed: Some(seed),
        }),
    }
}

/// [`check_backend`] for a backend without restarts: `open` must return a
/// fresh, empty queue each time it is called (once per generated case).
///
/// ```ignore
/// use dualwrite_runtime::queue::testing::model::{check_fresh, ModelConfig};
/// use dualwrite_runtime::InMemoryQueue;
///
/// #[test]
/// fn in_memory_queue_matches_the_model() {
///     let config = ModelConfig::new().with_env();
///     if let Err(failure) = check_fresh(&config, || async { InMemoryQueue::new() }) {
///         panic!("{failure}");
///     }
/// }
/// ```
///
/// # Errors
///
/// A [`ModelFailure`] describing the smallest failing sequence found.
pub fn check_fresh<Q, F, Fut>(config: &ModelConfig, open: F) -> Result<(), ModelFailure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Q>,
    Q: ReconciliationQueue,
{
    check_backend(config, Fresh(open))
}

fn random_seed() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|since| since.as_nanos())
            .unwrap_or(0),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// 32 bytes for ChaCha from a `u64` (splitmix64).
fn seed_bytes(seed: u64) -> [u8; 32] {
    let mut state = seed;
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_mut(8) {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes());
    }
    bytes
}
