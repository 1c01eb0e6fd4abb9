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
//! - ids strictly increase in append order (also across restarts), and
//!   every field (namespace, target, key, method, version, payload, reason
//!   as the first `last_error`, `enqueued_at`) round-trips exactly.
//!
//! Only the default poison policy, [`PoisonPolicy::Block`], is modelled:
//! open the queues with it.
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
//! with [`QueueError::LeaseLost`]; either is accepted.

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
mod reference;
mod run;
mod settles;
mod steps;
mod turnover;
mod writes;

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
    /// (including every case run while shrinking a failure), and once for
    /// every conformance case of that policy.
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

/// Settings of a run of the suite: how many cases, how long, how time
/// passes. [`ModelConfig::new`] has defaults fit for CI.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    cases: u32,
    max_steps: usize,
    short: Duration,
    time_step: Duration,
    check_every_step: bool,
    max_shrink_iters: u32,
    max_shrink_time: Duration,
    seed: Option<u64>,
    env_error: Option<String>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl ModelConfig {
    /// The environment variable [`with_env`](Self::with_env) reads the
    /// number of cases from.
    pub const CASES_VAR: &'static str = "DUALWRITE_MODEL_CASES";
    /// The environment variable [`with_env`](Self::with_env) reads the
    /// random seed from (printed by every [`ModelFailure`]).
    pub const SEED_VAR: &'static str = "DUALWRITE_MODEL_SEED";

    /// 64 cases of up to 40 steps, short deadlines of 25 ms, time steps of
    /// 40 ms, every step followed by a check of `stats`, `dead_letters` and
    /// `has_work`, and a random seed.
    pub fn new() -> Self {
        ModelConfig {
            cases: 64,
            max_steps: 40,
            short: Duration::from_millis(25),
            time_step: Duration::from_millis(40),
            check_every_step: true,
            max_shrink_iters: 2048,
            max_shrink_time: Duration::from_secs(30),
            seed: None,
            env_error: None,
        }
    }

    /// How many random cases to run (at least 1).
    pub fn cases(mut self, cases: u32) -> Self {
        self.cases = cases.max(1);
        self
    }

    /// The most steps in a case (at least 1).
    pub fn max_steps(mut self, steps: usize) -> Self {
        self.max_steps = steps.max(1);
        self
    }

    /// The short deadline: the prepare expiry, lease or retry delay that
    /// has passed after one [time step](Self::time_step). Keep it small;
    /// it must be well above the backend's clock resolution.
    pub fn short_deadline(mut self, short: Duration) -> Self {
        self.short = short;
        self
    }

    /// How long a "time passes" step sleeps. At least the
    /// [short deadline](Self::short_deadline) plus 5 ms is used.
    pub fn time_step(mut self, step: Duration) -> Self {
        self.time_step = step;
        self
    }

    /// Whether every step is followed by comparing `stats`, `dead_letters`
    /// and `has_work` of every key with the model (default `true`).
    pub fn check_every_step(mut self, check: bool) -> Self {
        self.check_every_step = check;
        self
    }

    /// The most cases tried while shrinking a failure (default 2048).
    pub fn max_shrink_iters(mut self, iters: u32) -> Self {
        self.max_shrink_iters = iters;
        self
    }

    /// The longest time spent shrinking a failure (default 30 s).
    pub fn max_shrink_time(mut self, time: Duration) -> Self {
        self.max_shrink_time = time;
        self
    }

    /// The random seed, to replay a run (by default a new one each run).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Applies the environment: [`CASES_VAR`](Self::CASES_VAR)
    /// (`DUALWRITE_MODEL_CASES`) sets the number of cases and
    /// [`SEED_VAR`](Self::SEED_VAR) (`DUALWRITE_MODEL_SEED`) the seed. A
    /// value that is not a number makes the run fail with a message.
    pub fn with_env(mut self) -> Self {
        if let Ok(text) = std::env::var(Self::CASES_VAR) {
            match text.trim().parse::<u32>() {
                Ok(cases) => self = self.cases(cases),
                Err(_) => {
                    self.env_error = Some(format!(
                        "{}={text:?} is not a number of cases",
                        Self::CASES_VAR
                    ))
                }
            }
        }
        if let Ok(text) = std::env::var(Self::SEED_VAR) {
            match text.trim().parse::<u64>() {
                Ok(seed) => self = self.seed(seed),
                Err(_) => {
                    self.env_error = Some(format!("{}={text:?} is not a seed", Self::SEED_VAR))
                }
            }
        }
        self
    }
}

/// Why [`check_backend`] failed: the backend disagreed with the model (or
/// failed, or panicked) on a generated sequence of steps, or the suite
/// could not run.
#[derive(Debug, Clone)]
pub struct ModelFailure {
    message: String,
    seed: Option<u64>,
}

impl ModelFailure {
    /// The report: the first mismatch of the smallest failing sequence
    /// found, and that sequence step by step with the backend's answers.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The seed of the run, for [`ModelConfig::seed`] (or
    /// `DUALWRITE_MODEL_SEED`); `None` if the suite did not start.
    pub fn seed(&self) -> Option<u64> {
        self.seed
    }
}

impl fmt::Display for ModelFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ModelFailure {}

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
    backend: B,
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
    let settings = Settings {
        short: config.short,
        time_step: config
            .time_step
            .max(config.short + Duration::from_millis(5)),
        check_every_step: config.check_every_step,
    };
    let durable = backend.durable();
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
    let strategy = vec(step_strategy(durable), 1..=config.max_steps);
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
