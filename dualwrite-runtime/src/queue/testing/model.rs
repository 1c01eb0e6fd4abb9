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

// ---------------------------------------------------------------------------
// Generated steps.

const NAMESPACES: [&str; 2] = ["model-a", "model-b"];
/// The last one is the unkeyed key.
const KEYS: [&str; 4] = ["k1", "k2", "k3", Key::UNKEYED];
const UNKEYED: usize = 3;
const METHODS: [&str; 3] = ["put", "delete_all", "rename_ünïcode"];
const VERSIONS: [u32; 4] = [0, 1, 7, u32::MAX];
const REASONS: [&str; 3] = ["follower down", "", "timed out ⏱"];
/// A deadline that does not pass during a run.
const FAR: Duration = Duration::from_secs(3600);
/// An id no entry of a case reaches.
const UNKNOWN_ID: EntryId = EntryId(1 << 40);

/// A prepare expiry, lease or delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Now,
    Soon,
    Far,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Complete => "complete",
            Action::Renew(_) => "renew",
            Action::RetryLater(_) => "retry_later",
            Action::Release => "release",
            Action::DeadLetter => "dead_letter",
            Action::HasLater => "has_later_entries",
            Action::SettleOrphan => "settle_orphan",
        }
    }
}

impl Wait {
    fn name(self) -> &'static str {
        match self {
            Wait::Now => "0",
            Wait::Soon => "short",
            Wait::Far => "1h",
        }
    }
}

/// What a new entry holds.
#[derive(Debug, Clone)]
struct Fields {
    namespace: usize,
    target: Side,
    key: usize,
    method: usize,
    version: usize,
    reason: usize,
    payload: Vec<u8>,
}

impl Fields {
    fn entry(&self, serial: usize, uncertain: bool) -> NewEntry {
        let mut payload = format!("{serial}:").into_bytes();
        payload.extend_from_slice(&self.payload);
        NewEntry {
            namespace: NAMESPACES[self.namespace].to_owned(),
            target: self.target,
            key: Key::from(KEYS[self.key]),
            method: METHODS[self.method].to_owned(),
            version: VERSIONS[self.version],
            payload,
            reason: REASONS[self.reason].to_owned(),
            uncertain,
        }
    }
}

impl fmt::Display for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            NAMESPACES[self.namespace], self.target, KEYS[self.key]
        )
    }
}

/// Chooses an entry or a lease when the step runs: among the preferred
/// candidates (live leases, prepared entries, dead letters) or among all.
#[derive(Debug, Clone, Copy)]
struct Pick {
    preferred: bool,
    index: Index,
}

/// What is done with a claim.
#[derive(Debug, Clone, Copy)]
enum Action {
    Complete,
    Renew(Wait),
    RetryLater(Wait),
    Release,
    DeadLetter,
    HasLater,
    SettleOrphan,
}

#[derive(Debug, Clone)]
enum Step {
    Append {
        fields: Fields,
        uncertain: bool,
    },
    Prepare {
        fields: Fields,
        expiry: Wait,
    },
    Commit(Pick),
    CommitUncertain(Pick),
    Abort(Pick),
    AbortUnknown,
    Claim {
        namespace: usize,
        limit: usize,
        lease: Wait,
    },
    /// Settles (or asks about) a claim picked when the step runs.
    Settle(Action, Pick),
    /// Claims, then does the action with every entry claimed: a worker's turn.
    Work {
        namespace: usize,
        limit: usize,
        lease: Wait,
        action: Action,
    },
    RetryDead(Pick),
    DropDead(Pick),
    SettleOrphan(Pick),
    HasWork {
        namespace: usize,
        target: Side,
        key: usize,
    },
    Stats,
    DeadLetters,
    Flush,
    TimePasses,
    Restart,
    /// Inserts, commits and completions sent at once, so that a backend
    /// that batches requests gets them together.
    Burst {
        inserts: Vec<Insert>,
        commits: Vec<Pick>,
        completes: Vec<Pick>,
    },
}

/// An entry appended or prepared in a [`Step::Burst`].
#[derive(Debug, Clone)]
enum Insert {
    Append(Fields, bool),
    Prepare(Fields, Wait),
}

fn weighted<T: fmt::Debug + 'static>(options: Vec<(u32, BoxedStrategy<T>)>) -> BoxedStrategy<T> {
    Union::new_weighted(options).boxed()
}

fn wait(now: u32, soon: u32, far: u32) -> BoxedStrategy<Wait> {
    weighted(vec![
        (now, Just(Wait::Now).boxed()),
        (soon, Just(Wait::Soon).boxed()),
        (far, Just(Wait::Far).boxed()),
    ])
}

fn namespace() -> BoxedStrategy<usize> {
    weighted(vec![(5, Just(0).boxed()), (1, Just(1).boxed())])
}

fn side() -> BoxedStrategy<Side> {
    weighted(vec![
        (1, Just(Side::Old).boxed()),
        (1, Just(Side::New).boxed()),
    ])
}

fn fields() -> BoxedStrategy<Fields> {
    (
        namespace(),
        side(),
        0..KEYS.len(),
        0..METHODS.len(),
        0..VERSIONS.len(),
        0..REASONS.len(),
        vec(any::<u8>(), 0..4),
    )
        .prop_map(
            |(namespace, target, key, method, version, reason, payload)| Fields {
                namespace,
                target,
                key,
                method,
                version,
                reason,
                payload,
            },
        )
        .boxed()
}

fn pick() -> BoxedStrategy<Pick> {
    (proptest::bool::weighted(0.75), any::<Index>())
        .prop_map(|(preferred, index)| Pick { preferred, index })
        .boxed()
}

fn insert() -> BoxedStrategy<Insert> {
    weighted(vec![
        (
            3,
            (fields(), proptest::bool::weighted(0.2))
                .prop_map(|(fields, uncertain)| Insert::Append(fields, uncertain))
                .boxed(),
        ),
        (
            2,
            (fields(), wait(1, 2, 3))
                .prop_map(|(fields, expiry)| Insert::Prepare(fields, expiry))
                .boxed(),
        ),
    ])
}

fn action() -> BoxedStrategy<Action> {
    weighted(vec![
        (6, Just(Action::Complete).boxed()),
        (2, wait(1, 2, 2).prop_map(Action::Renew).boxed()),
        (3, wait(3, 2, 1).prop_map(Action::RetryLater).boxed()),
        (2, Just(Action::Release).boxed()),
        (4, Just(Action::DeadLetter).boxed()),
        (2, Just(Action::HasLater).boxed()),
        (2, Just(Action::SettleOrphan).boxed()),
    ])
}

fn step_strategy(durable: bool) -> BoxedStrategy<Step> {
    let mut options: Vec<(u32, BoxedStrategy<Step>)> = vec![
        (
            14,
            (fields(), proptest::bool::weighted(0.2))
                .prop_map(|(fields, uncertain)| Step::Append { fields, uncertain })
                .boxed(),
        ),
        (
            8,
            (fields(), wait(1, 2, 3))
                .prop_map(|(fields, expiry)| Step::Prepare { fields, expiry })
                .boxed(),
        ),
        (4, pick().prop_map(Step::Commit).boxed()),
        (2, pick().prop_map(Step::CommitUncertain).boxed()),
        (3, pick().prop_map(Step::Abort).boxed()),
        (1, Just(Step::AbortUnknown).boxed()),
        (
            6,
            (namespace(), 1..=4usize, wait(1, 2, 4))
                .prop_map(|(namespace, limit, lease)| Step::Claim {
                    namespace,
                    limit,
                    lease,
                })
                .boxed(),
        ),
        (
            10,
            (action(), pick())
                .prop_map(|(action, pick)| Step::Settle(action, pick))
                .boxed(),
        ),
        (
            8,
            (namespace(), 1..=4usize, wait(1, 2, 4), action())
                .prop_map(|(namespace, limit, lease, action)| Step::Work {
                    namespace,
                    limit,
                    lease,
                    action,
                })
                .boxed(),
        ),
        (2, pick().prop_map(Step::RetryDead).boxed()),
        (2, pick().prop_map(Step::DropDead).boxed()),
        (2, pick().prop_map(Step::SettleOrphan).boxed()),
        (
            2,
            (namespace(), side(), 0..KEYS.len())
                .prop_map(|(namespace, target, key)| Step::HasWork {
                    namespace,
                    target,
                    key,
                })
                .boxed(),
        ),
        (1, Just(Step::Stats).boxed()),
        (1, Just(Step::DeadLetters).boxed()),
        (1, Just(Step::Flush).boxed()),
        (4, Just(Step::TimePasses).boxed()),
        (
            4,
            (vec(insert(), 0..4), vec(pick(), 0..3), vec(pick(), 0..4))
                .prop_map(|(inserts, commits, completes)| Step::Burst {
                    inserts,
                    commits,
                    completes,
                })
                .boxed(),
        ),
    ];
    if durable {
        options.push((2, Just(Step::Restart).boxed()));
    }
    weighted(options)
}

// ---------------------------------------------------------------------------
// The reference model.

/// Whether something holds: surely, perhaps (a short deadline set since the
/// last time step), or surely not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tri {
    Yes,
    Maybe,
    No,
}

#[derive(Debug, Clone, Copy)]
enum Deadline {
    Passed,
    /// Short, set during the given epoch: passed once a time step ended it.
    Soon(u32),
    Far,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Prepared(Deadline),
    Pending(Deadline),
    /// `lease`: the index of the claim that holds it, `None` once a claim
    /// from before a restart was refused.
    Leased {
        until: Deadline,
        lease: Option<usize>,
    },
    Dead {
        died_at: Option<SystemTime>,
    },
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Prepared(_) => "prepared",
            State::Pending(_) => "pending",
            State::Leased { .. } => "leased",
            State::Dead { .. } => "dead",
        }
    }
}

#[derive(Debug)]
struct Entry {
    id: EntryId,
    namespace: usize,
    target: Side,
    key: usize,
    sent: NewEntry,
    state: State,
    /// Claims report it orphaned (uncertain, or claimed once as an orphan).
    orphaned: bool,
    from_prepare: bool,
    uncertain_committed: bool,
    attempts: u32,
    last_error: String,
    enqueued_at: Option<SystemTime>,
    removed: bool,
}

impl Entry {
    fn stream(&self) -> (usize, Side, usize) {
        (self.namespace, self.target, self.key)
    }
}

#[derive(Debug)]
struct LeaseRecord {
    lease: Lease,
    serial: usize,
    /// Taken before a restart: the backend may honour or refuse it.
    doubtful: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseStatus {
    Current,
    Doubtful,
    Stale,
}

#[derive(Debug)]
struct Model {
    entries: Vec<Entry>,
    leases: Vec<LeaseRecord>,
    seen_leases: HashSet<(u64, u64)>,
    epoch: u32,
    started: SystemTime,
}

impl Model {
    fn new() -> Self {
        Model {
            entries: Vec::new(),
            leases: Vec::new(),
            seen_leases: HashSet::new(),
            epoch: 0,
            started: SystemTime::now(),
        }
    }

    fn deadline(&self, wait: Wait) -> Deadline {
        match wait {
            Wait::Now => Deadline::Passed,
            Wait::Soon => Deadline::Soon(self.epoch),
            Wait::Far => Deadline::Far,
        }
    }

    fn passed(&self, deadline: Deadline) -> Tri {
        match deadline {
            Deadline::Passed => Tri::Yes,
            Deadline::Soon(epoch) if self.epoch > epoch => Tri::Yes,
            Deadline::Soon(_) => Tri::Maybe,
            Deadline::Far => Tri::No,
        }
    }

    fn live(&self) -> impl Iterator<Item = (usize, &Entry)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, entry)| !entry.removed)
    }

    fn serial_of(&self, id: EntryId) -> Option<usize> {
        self.entries.iter().position(|entry| entry.id == id)
    }

    fn last_id(&self) -> Option<EntryId> {
        self.entries.last().map(|entry| entry.id)
    }

    /// The first live entry of a key (ids increase with serials).
    fn head(&self, stream: (usize, Side, usize)) -> Option<usize> {
        self.live()
            .find(|(_, entry)| entry.stream() == stream)
            .map(|(serial, _)| serial)
    }

    /// The entry of another key that `serial` waits for (unkeyed ordering).
    fn barrier(&self, serial: usize) -> Option<usize> {
        let me = &self.entries[serial];
        self.live()
            .find(|(_, other)| {
                other.id < me.id
                    && other.namespace == me.namespace
                    && other.target == me.target
                    && other.key != me.key
                    && (me.key == UNKEYED || other.key == UNKEYED)
            })
            .map(|(serial, _)| serial)
    }

    /// Whether a claim may hand out `serial` now, and why not.
    fn readiness(&self, serial: usize) -> (Tri, String) {
        let entry = &self.entries[serial];
        if entry.removed {
            return (Tri::No, "it was removed".to_owned());
        }
        match self.head(entry.stream()) {
            Some(head) if head != serial => {
                return (
                    Tri::No,
                    format!("{} is ahead of it in its key", self.entries[head].id_text()),
                )
            }
            _ => {}
        }
        if let State::Dead { .. } = entry.state {
            return (Tri::No, "it is a dead letter".to_owned());
        }
        if let Some(blocker) = self.barrier(serial) {
            return (
                Tri::No,
                format!(
                    "it must wait for {} of key {} (unkeyed ordering)",
                    self.entries[blocker].id_text(),
                    KEYS[self.entries[blocker].key]
                ),
            );
        }
        let (deadline, what) = match entry.state {
            State::Prepared(deadline) => (deadline, "prepared, expiring"),
            State::Pending(deadline) => (deadline, "pending, ready"),
            State::Leased { until, .. } => (until, "leased, the lease ending"),
            State::Dead { .. } => (Deadline::Far, "dead"),
        };
        let when = match deadline {
            Deadline::Passed => "already",
            Deadline::Soon(_) => "after a short wait",
            Deadline::Far => "in an hour",
        };
        (self.passed(deadline), format!("it is {what} {when}"))
    }

    fn lease_status(&self, index: usize) -> LeaseStatus {
        let record = &self.leases[index];
        let entry = &self.entries[record.serial];
        let held = !entry.removed
            && matches!(entry.state, State::Leased { lease: Some(held), .. } if held == index);
        match (held, record.doubtful) {
            (false, _) => LeaseStatus::Stale,
            (true, false) => LeaseStatus::Current,
            (true, true) => LeaseStatus::Doubtful,
        }
    }

    fn has_work(&self, namespace: usize, target: Side, key: usize) -> bool {
        self.live().any(|(_, entry)| {
            entry.namespace == namespace
                && entry.target == target
                && (key == UNKEYED || entry.key == key || entry.key == UNKEYED)
        })
    }

    /// [`ReconciliationQueue::has_later_entries`]: later entries of the
    /// key, later unkeyed entries, or for an unkeyed entry later entries of
    /// any key (of the namespace and target).
    fn has_later(&self, serial: usize) -> bool {
        let me = &self.entries[serial];
        self.live().any(|(_, other)| {
            other.id > me.id
                && other.namespace == me.namespace
                && other.target == me.target
                && (other.key == me.key || other.key == UNKEYED || me.key == UNKEYED)
        })
    }

    /// (pending, in flight, dead, blocked keys) of a target.
    fn counts(&self, target: Side) -> (u64, u64, u64, u64) {
        let mut counts = (0, 0, 0, 0);
        for (serial, entry) in self.live().filter(|(_, entry)| entry.target == target) {
            match entry.state {
                State::Prepared(_) | State::Pending(_) => counts.0 += 1,
                State::Leased { .. } => counts.1 += 1,
                State::Dead { .. } => {
                    counts.2 += 1;
                    if self.head(entry.stream()) == Some(serial) {
                        counts.3 += 1;
                    }
                }
            }
        }
        counts
    }

    /// Checks an `enqueued_at` the backend reported against earlier reports.
    fn check_enqueued_at(&mut self, serial: usize, at: SystemTime) -> Result<(), String> {
        let slack = Duration::from_secs(60);
        let earliest = self
            .started
            .checked_sub(slack)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let latest = SystemTime::now() + slack;
        let entry = &mut self.entries[serial];
        match entry.enqueued_at {
            Some(known) if known != at => Err(format!(
                "{}: enqueued_at {at:?} differs from the {known:?} reported before",
                entry.id_text()
            )),
            Some(_) => Ok(()),
            None if at < earliest || at > latest => Err(format!(
                "{}: enqueued_at {at:?} is not the time of its append",
                entry.id_text()
            )),
            None => {
                entry.enqueued_at = Some(at);
                Ok(())
            }
        }
    }
}

impl Entry {
    fn id_text(&self) -> String {
        format!("#{}", self.id)
    }

    fn state_name(&self) -> &'static str {
        if self.removed {
            "removed"
        } else {
            self.state.name()
        }
    }
}

// ---------------------------------------------------------------------------
// Running a case.

struct Settings {
    short: Duration,
    time_step: Duration,
    check_every_step: bool,
}

impl Settings {
    fn duration(&self, wait: Wait) -> Duration {
        match wait {
            Wait::Now => Duration::ZERO,
            Wait::Soon => self.short,
            Wait::Far => FAR,
        }
    }
}

async fn run_case<B: ModelBackend>(
    backend: &mut B,
    steps: &[Step],
    settings: &Settings,
) -> Result<(), String> {
    let queue = backend
        .open()
        .await
        .map_err(|error| format!("opening a fresh queue failed: {error}"))?;
    let mut case = Case {
        queue: Some(queue),
        model: Model::new(),
        settings,
    };
    let mut trace = String::new();
    let mut outcome = Ok(());
    for (number, step) in (1..).zip(steps) {
        match case.step(backend, number, step).await {
            Ok(Done { text, ran }) => {
                let _ = writeln!(trace, "{number:>4}. {text}");
                if ran && settings.check_every_step {
                    if let Err(why) = case.check_all().await {
                        let _ = writeln!(trace, "      MISMATCH after step {number}: {why}");
                        outcome = Err(format!("after step {number}: {why}"));
                        break;
                    }
                }
            }
            Err(why) => {
                let _ = writeln!(trace, "{number:>4}. {why}\n      ^ MISMATCH");
                outcome = Err(format!("at step {number}: {why}"));
                break;
            }
        }
    }
    if outcome.is_ok() && !settings.check_every_step {
        if let Err(why) = case.check_all().await {
            let _ = writeln!(trace, "      MISMATCH at the end: {why}");
            outcome = Err(format!("at the end: {why}"));
        }
    }
    if let Some(queue) = case.queue.take() {
        backend.finish(queue).await;
    }
    outcome.map_err(|why| {
        format!(
            "mismatch {why}\n\nthe case as run (`#n` are entry ids, `lease n` the n-th claim of the \
             case):\n{trace}"
        )
    })
}

struct Done {
    text: String,
    /// False for a step skipped because its outcome is not specified.
    ran: bool,
}

fn ran(text: String) -> Result<Done, String> {
    Ok(Done { text, ran: true })
}

fn skipped(text: String) -> Result<Done, String> {
    Ok(Done { text, ran: false })
}

struct Case<'a, Q> {
    queue: Option<Q>,
    model: Model,
    settings: &'a Settings,
}

/// `Err(LeaseLost(id))` for the lease `id`.
fn is_lease_lost<T>(result: &Result<T, QueueError>, id: EntryId) -> bool {
    matches!(result, Err(QueueError::LeaseLost(lost)) if *lost == id)
}

/// `Ok`, `Ok(answer)` (of `has_later_entries`) or `Err(error)`.
fn show_result<T: ShowOk>(result: &Result<T, QueueError>) -> String {
    match result {
        Ok(value) => value.show_ok(),
        Err(error) => format!("Err({error})"),
    }
}

trait ShowOk {
    fn show_ok(&self) -> String;
}

impl ShowOk for () {
    fn show_ok(&self) -> String {
        "Ok".to_owned()
    }
}

impl ShowOk for Option<bool> {
    fn show_ok(&self) -> String {
        match self {
            None => "Ok".to_owned(),
            Some(answer) => format!("Ok({answer})"),
        }
    }
}

impl<Q: ReconciliationQueue> Case<'_, Q> {
    fn queue(&self) -> Result<&Q, String> {
        self.queue
            .as_ref()
            .ok_or_else(|| "the queue was lost in a failed restart".to_owned())
    }

    async fn step<B: ModelBackend<Queue = Q>>(
        &mut self,
        backend: &mut B,
        number: usize,
        step: &Step,
    ) -> Result<Done, String> {
        match step {
            Step::Append { fields, uncertain } => self.append(fields, *uncertain).await,
            Step::Prepare { fields, expiry } => self.prepare(fields, *expiry).await,
            Step::Commit(pick) => self.commit(*pick, false).await,
            Step::CommitUncertain(pick) => self.commit(*pick, true).await,
            Step::Abort(pick) => self.abort(*pick).await,
            Step::AbortUnknown => {
                let result = self.queue()?.abort(UNKNOWN_ID).await;
                let text = format!(
                    "abort(#{UNKNOWN_ID}, never existed) -> {}",
                    show_result(&result)
                );
                match result {
                    Ok(()) => ran(text),
                    Err(_) => Err(format!("{text}: aborting a missing entry must succeed")),
                }
            }
            Step::Claim {
                namespace,
                limit,
                lease,
            } => self.claim(*namespace, *limit, *lease).await,
            Step::Settle(action, pick) => match self.pick_lease(*pick) {
                Some(index) => self.settle(number, *action, index).await,
                None => skipped(format!("{} (skipped: no claim to pick)", action.name())),
            },
            Step::Work {
                namespace,
                limit,
                lease,
                action,
            } => {
                let first = self.model.leases.len();
                let mut text = self.claim(*namespace, *limit, *lease).await?.text;
                for index in first..self.model.leases.len() {
                    match self.settle(number, *action, index).await {
                        Ok(done) => {
                            let _ = write!(text, "\n        then {}", done.text);
                        }
                        Err(why) => return Err(format!("{text}\n        then {why}")),
                    }
                }
                ran(text)
            }
            Step::RetryDead(pick) => self.dead_op(*pick, true).await,
            Step::DropDead(pick) => self.dead_op(*pick, false).await,
            Step::SettleOrphan(pick) => match self.pick_orphan(*pick) {
                Some(serial) => self.settle_orphan(serial, "").await,
                None => skipped("settle_orphan (skipped: no entry to pick)".to_owned()),
            },
            Step::HasWork {
                namespace,
                target,
                key,
            } => {
                let text = format!(
                    "has_work({}, {target}, {})",
                    NAMESPACES[*namespace], KEYS[*key]
                );
                self.check_has_work(*namespace, *target, *key)
                    .await
                    .map_err(|why| format!("{text}: {why}"))?;
                ran(format!(
                    "{text} -> {}",
                    self.model.has_work(*namespace, *target, *key)
                ))
            }
            Step::Stats => {
                self.check_stats().await?;
                ran("stats() -> as modelled".to_owned())
            }
            Step::DeadLetters => {
                self.check_dead_letters().await?;
                ran("dead_letters() -> as modelled".to_owned())
            }
            Step::Flush => match self.queue()?.flush().await {
                Ok(()) => ran("flush() -> Ok".to_owned()),
                Err(error) => Err(format!("flush() -> Err({error})")),
            },
            Step::TimePasses => {
                tokio::time::sleep(self.settings.time_step).await;
                self.model.epoch += 1;
                ran(format!(
                    "time passes ({:?}): every short deadline set so far has passed",
                    self.settings.time_step
                ))
            }
            Step::Burst {
                inserts,
                commits,
                completes,
            } => self.burst(inserts, commits, completes).await,
            Step::Restart => {
                if !backend.durable() {
                    return skipped("restart (skipped: the backend is not durable)".to_owned());
                }
                if let Err(error) = self.queue()?.flush().await {
                    return Err(format!("restart: flush() -> Err({error})"));
                }
                let Some(queue) = self.queue.take() else {
                    return Err("restart: the queue was lost".to_owned());
                };
                match backend.reopen(queue).await {
                    Ok(queue) => self.queue = Some(queue),
                    Err(error) => return Err(format!("restart: reopening failed: {error}")),
                }
                for record in &mut self.model.leases {
                    record.doubtful = true;
                }
                ran(
                    "restart (flush, reopen): claims made so far may be honoured or lost"
                        .to_owned(),
                )
            }
        }
    }

    async fn burst(
        &mut self,
        inserts: &[Insert],
        commits: &[Pick],
        completes: &[Pick],
    ) -> Result<Done, String> {
        let base = self.model.entries.len();
        let sent: Vec<(NewEntry, Option<Wait>, &Fields)> = inserts
            .iter()
            .enumerate()
            .map(|(n, insert)| match insert {
                Insert::Append(fields, uncertain) => {
                    (fields.entry(base + n, *uncertain), None, fields)
                }
                Insert::Prepare(fields, expiry) => {
                    (fields.entry(base + n, false), Some(*expiry), fields)
                }
            })
            .collect();
        let committed: Vec<usize> = commits
            .iter()
            .filter_map(|pick| self.pick_prepared(*pick, false))
            .filter(|serial| !self.model.entries[*serial].uncertain_committed)
            .collect();
        let completed: Vec<usize> = completes
            .iter()
            .filter_map(|pick| self.pick_lease(*pick))
            .collect();
        if sent.is_empty() && committed.is_empty() && completed.is_empty() {
            return skipped("burst (skipped: nothing to send)".to_owned());
        }
        let queue = self.queue()?;
        let settings = self.settings;
        let inserting = futures::future::join_all(sent.iter().map(|(entry, expiry, _)| async {
            match expiry {
                None => queue.append(entry.clone()).await,
                Some(expiry) => {
                    queue
                        .prepare(entry.clone(), settings.duration(*expiry))
                        .await
                }
            }
        }));
        let committing = futures::future::join_all(
            committed
                .iter()
                .map(|serial| queue.commit(self.model.entries[*serial].id)),
        );
        let completing = futures::future::join_all(
            completed
                .iter()
                .map(|index| queue.complete(self.model.leases[*index].lease)),
        );
        let (inserted, commit_results, complete_results) =
            futures::future::join3(inserting, committing, completing).await;

        // What was sent and answered.
        let mut parts = Vec::new();
        for ((entry, expiry, fields), result) in sent.iter().zip(&inserted) {
            let call = match expiry {
                None if entry.uncertain => format!("append({fields}, uncertain)"),
                None => format!("append({fields})"),
                Some(expiry) => format!("prepare({fields}, expiry {})", expiry.name()),
            };
            parts.push(match result {
                Ok(id) => format!("{call} -> #{id}"),
                Err(error) => format!("{call} -> Err({error})"),
            });
        }
        for (serial, result) in committed.iter().zip(&commit_results) {
            let entry = &self.model.entries[*serial];
            parts.push(format!(
                "commit(#{}, {}) -> {}",
                entry.id,
                entry.state_name(),
                show_result(result)
            ));
        }
        for (index, result) in completed.iter().zip(&complete_results) {
            let held = match self.model.lease_status(*index) {
                LeaseStatus::Current => "held",
                LeaseStatus::Doubtful => "held before the restart",
                LeaseStatus::Stale => "lost",
            };
            parts.push(format!(
                "complete(lease {index} of #{}, {held}) -> {}",
                self.model.leases[*index].lease.id,
                show_result(result)
            ));
        }
        let text = format!("at once: {}", parts.join(", "));

        // Inserts: all stored, with new ids; the model files them in id order.
        let mut ids = Vec::new();
        for result in &inserted {
            match result {
                Ok(id) => ids.push(*id),
                Err(error) => return Err(format!("{text}: an insert failed: {error}")),
            }
        }
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|n| ids[*n]);
        for n in order {
            let id = ids[n];
            self.check_new_id(id)
                .map_err(|why| format!("{text}: #{id}: {why}"))?;
            let (entry, expiry, fields) = &sent[n];
            let (state, from_prepare) = match expiry {
                None => (State::Pending(Deadline::Passed), false),
                Some(expiry) => (State::Prepared(self.model.deadline(*expiry)), true),
            };
            self.push(id, fields, entry.clone(), state, from_prepare);
        }
        // Commits: all succeed.
        for (serial, result) in committed.iter().zip(&commit_results) {
            if let Err(error) = result {
                return Err(format!("{text}: a commit failed: {error}"));
            }
            let entry = &mut self.model.entries[*serial];
            if !entry.removed && matches!(entry.state, State::Prepared(_)) {
                entry.state = State::Pending(Deadline::Passed);
            }
        }
        // Completions: of each claim still held exactly one succeeds (at
        // most one of a claim from before a restart), the others are late.
        let mut claims: Vec<usize> = completed.clone();
        claims.sort_unstable();
        claims.dedup();
        for index in claims {
            let results: Vec<&Result<(), QueueError>> = completed
                .iter()
                .zip(&complete_results)
                .filter(|(other, _)| **other == index)
                .map(|(_, result)| result)
                .collect();
            let id = self.model.leases[index].lease.id;
            let succeeded = results.iter().filter(|result| result.is_ok()).count();
            if let Some(Err(error)) = results
                .iter()
                .find(|result| result.is_err() && !is_lease_lost(result, id))
            {
                return Err(format!("{text}: completing lease {index} failed: {error}"));
            }
            let status = self.model.lease_status(index);
            let (fine, expected) = match status {
                LeaseStatus::Current => (succeeded == 1, "exactly one"),
                LeaseStatus::Doubtful => (succeeded <= 1, "at most one"),
                LeaseStatus::Stale => (succeeded == 0, "none"),
            };
            if !fine {
                return Err(format!(
                    "{text}: {succeeded} of {} completions of lease {index} succeeded, expected {expected} (the others are late: LeaseLost)",
                    results.len()
                ));
            }
            let serial = self.model.leases[index].serial;
            let entry = &mut self.model.entries[serial];
            if succeeded == 1 {
                entry.removed = true;
            } else if status == LeaseStatus::Doubtful {
                if let State::Leased { lease, .. } = &mut entry.state {
                    *lease = None;
                }
            }
        }
        ran(text)
    }

    fn check_new_id(&self, id: EntryId) -> Result<(), String> {
        match self.model.last_id() {
            Some(last) if id <= last => Err(format!(
                "the new id #{id} is not greater than the previous one, #{last}"
            )),
            _ if self.model.entries.iter().any(|entry| entry.id == id) => {
                Err(format!("the id #{id} was used before"))
            }
            _ => Ok(()),
        }
    }

    fn push(
        &mut self,
        id: EntryId,
        fields: &Fields,
        sent: NewEntry,
        state: State,
        from_prepare: bool,
    ) {
        self.model.entries.push(Entry {
            id,
            namespace: fields.namespace,
            target: fields.target,
            key: fields.key,
            orphaned: sent.uncertain,
            last_error: sent.reason.clone(),
            sent,
            state,
            from_prepare,
            uncertain_committed: false,
            attempts: 0,
            enqueued_at: None,
            removed: false,
        });
    }

    async fn append(&mut self, fields: &Fields, uncertain: bool) -> Result<Done, String> {
        let serial = self.model.entries.len();
        let sent = fields.entry(serial, uncertain);
        let text = format!(
            "append({fields}{})",
            if uncertain { ", uncertain" } else { "" }
        );
        match self.queue()?.append(sent.clone()).await {
            Ok(id) => {
                self.check_new_id(id)
                    .map_err(|why| format!("{text} -> #{id}: {why}"))?;
                self.push(id, fields, sent, State::Pending(Deadline::Passed), false);
                ran(format!("{text} -> #{id}"))
            }
            Err(error) => Err(format!("{text} -> Err({error})")),
        }
    }

    async fn prepare(&mut self, fields: &Fields, expiry: Wait) -> Result<Done, String> {
        let serial = self.model.entries.len();
        let sent = fields.entry(serial, false);
        let text = format!("prepare({fields}, expiry {})", expiry.name());
        let duration = self.settings.duration(expiry);
        match self.queue()?.prepare(sent.clone(), duration).await {
            Ok(id) => {
                self.check_new_id(id)
                    .map_err(|why| format!("{text} -> #{id}: {why}"))?;
                let deadline = self.model.deadline(expiry);
                self.push(id, fields, sent, State::Prepared(deadline), true);
                ran(format!("{text} -> #{id}"))
            }
            Err(error) => Err(format!("{text} -> Err({error})")),
        }
    }

    /// An entry made by `prepare`: preferably one still prepared (or, with
    /// `or_orphan`, claimed as an orphan).
    fn pick_prepared(&self, pick: Pick, or_orphan: bool) -> Option<usize> {
        let all: Vec<usize> = self
            .model
            .entries
            .iter()
            .enumerate()
            .filter(|(_, entry)| entry.from_prepare)
            .map(|(serial, _)| serial)
            .collect();
        let prepared: Vec<usize> = all
            .iter()
            .copied()
            .filter(|serial| {
                let entry = &self.model.entries[*serial];
                !entry.removed
                    && match entry.state {
                        State::Prepared(_) => true,
                        State::Leased { .. } => or_orphan && entry.orphaned,
                        _ => false,
                    }
            })
            .collect();
        choose(pick, &prepared, &all)
    }

    async fn commit(&mut self, pick: Pick, uncertain: bool) -> Result<Done, String> {
        let name = if uncertain {
            "commit_uncertain"
        } else {
            "commit"
        };
        let Some(serial) = self.pick_prepared(pick, false) else {
            return skipped(format!("{name} (skipped: no prepared entry to pick)"));
        };
        let entry = &self.model.entries[serial];
        let id = entry.id;
        let prepared = !entry.removed && matches!(entry.state, State::Prepared(_));
        let before = entry.state_name();
        if prepared && !uncertain && entry.uncertain_committed {
            return skipped(format!(
                "commit(#{id}) (skipped: committing after commit_uncertain is not specified)"
            ));
        }
        let result = if uncertain {
            self.queue()?.commit_uncertain(id).await
        } else {
            self.queue()?.commit(id).await
        };
        let text = format!("{name}(#{id}, {before}) -> {}", show_result(&result));
        if let Err(error) = result {
            return Err(format!("{text}: expected Ok, got {error}"));
        }
        if prepared {
            let entry = &mut self.model.entries[serial];
            if uncertain {
                entry.state = State::Prepared(Deadline::Passed);
                entry.uncertain_committed = true;
            } else {
                entry.state = State::Pending(Deadline::Passed);
            }
        }
        ran(text)
    }

    async fn abort(&mut self, pick: Pick) -> Result<Done, String> {
        let Some(serial) = self.pick_prepared(pick, true) else {
            return skipped("abort (skipped: no prepared entry to pick)".to_owned());
        };
        let entry = &self.model.entries[serial];
        let id = entry.id;
        let removable = !entry.removed
            && match entry.state {
                State::Prepared(_) => true,
                State::Leased { .. } => entry.orphaned,
                _ => false,
            };
        if !entry.removed && !removable {
            return skipped(format!(
                "abort(#{id}) (skipped: aborting {}{} entry is not specified)",
                if entry.orphaned {
                    "an orphaned "
                } else {
                    "a committed "
                },
                entry.state.name()
            ));
        }
        let before = entry.state_name();
        let result = self.queue()?.abort(id).await;
        let text = format!("abort(#{id}, {before}) -> {}", show_result(&result));
        if let Err(error) = result {
            return Err(format!("{text}: expected Ok, got {error}"));
        }
        self.model.entries[serial].removed = true;
        ran(text)
    }

    async fn claim(&mut self, namespace: usize, limit: usize, lease: Wait) -> Result<Done, String> {
        let text = format!(
            "claim({}, limit {limit}, lease {})",
            NAMESPACES[namespace],
            lease.name()
        );
        let result = self
            .queue()?
            .claim(NAMESPACES[namespace], limit, self.settings.duration(lease))
            .await;
        let claim = match result {
            Ok(claim) => claim,
            Err(error) => return Err(format!("{text} -> Err({error})")),
        };
        let shown = self.show_claim(&claim);
        let text = format!("{text} -> {shown}");
        self.check_claim(namespace, limit, &claim)
            .map_err(|why| format!("{text}: {why}"))?;
        // Apply it.
        let until = self.model.deadline(lease);
        for claimed in &claim.entries {
            let Some(serial) = self.model.serial_of(claimed.lease.id) else {
                continue;
            };
            let index = self.model.leases.len();
            self.model.leases.push(LeaseRecord {
                lease: claimed.lease,
                serial,
                doubtful: false,
            });
            let entry = &mut self.model.entries[serial];
            entry.orphaned = claimed.orphaned;
            entry.state = State::Leased {
                until,
                lease: Some(index),
            };
        }
        ran(text)
    }

    fn show_claim(&self, claim: &Claim) -> String {
        let mut shown = String::from("[");
        for (n, claimed) in claim.entries.iter().enumerate() {
            if n > 0 {
                shown.push_str(", ");
            }
            let lease = self.model.leases.len() + n;
            let _ = write!(
                shown,
                "#{} {}/{} as lease {lease} (token {}, attempts {}{})",
                claimed.lease.id,
                claimed.target,
                claimed.key.as_str(),
                claimed.lease.token,
                claimed.attempts,
                if claimed.orphaned { ", orphaned" } else { "" }
            );
        }
        shown.push(']');
        if let Some(next) = claim.next_ready_in {
            let _ = write!(shown, ", next ready in {next:?}");
        }
        shown
    }

    fn check_claim(&mut self, namespace: usize, limit: usize, claim: &Claim) -> Result<(), String> {
        if claim.entries.len() > limit {
            return Err(format!(
                "{} entries claimed, over the limit",
                claim.entries.len()
            ));
        }
        // The heads of the namespace's keys and whether each is ready.
        let mut streams: Vec<(usize, Side, usize)> = self
            .model
            .live()
            .filter(|(_, entry)| entry.namespace == namespace)
            .map(|(_, entry)| entry.stream())
            .collect();
        streams.sort();
        streams.dedup();
        let heads: Vec<(usize, Tri)> = streams
            .iter()
            .filter_map(|stream| self.model.head(*stream))
            .map(|serial| (serial, self.model.readiness(serial).0))
            .collect();
        let ready: Vec<usize> = heads
            .iter()
            .filter(|(_, ready)| *ready == Tri::Yes)
            .map(|(serial, _)| *serial)
            .collect();
        let mut claimed = HashSet::new();
        for entry in &claim.entries {
            let id = entry.lease.id;
            let Some(serial) = self.model.serial_of(id) else {
                return Err(format!("#{id} was never appended"));
            };
            if !claimed.insert(serial) {
                return Err(format!("#{id} was claimed twice"));
            }
            let (readiness, why) = self.model.readiness(serial);
            if readiness == Tri::No {
                return Err(format!("#{id} must not be claimed: {why}"));
            }
            if !self
                .model
                .seen_leases
                .insert((entry.lease.id.0, entry.lease.token))
            {
                return Err(format!(
                    "the lease (#{id}, token {}) was handed out before",
                    entry.lease.token
                ));
            }
            self.check_claimed_fields(serial, entry)?;
        }
        let wanted = ready.len().min(limit);
        if claim.entries.len() < wanted {
            let missed: Vec<String> = ready
                .iter()
                .filter(|serial| !claimed.contains(*serial))
                .map(|serial| self.model.entries[*serial].id_text())
                .collect();
            return Err(format!(
                "only {} entries claimed, but {} were ready (limit {limit}); not claimed: {}",
                claim.entries.len(),
                ready.len(),
                missed.join(", ")
            ));
        }
        if claim.entries.is_empty() && claim.next_ready_in.is_none() {
            let waiting = heads.iter().find(|(serial, _)| {
                let entry = &self.model.entries[*serial];
                !matches!(entry.state, State::Dead { .. }) && self.model.barrier(*serial).is_none()
            });
            if let Some((serial, _)) = waiting {
                return Err(format!(
                    "nothing claimed and no next_ready_in, but {} will be ready",
                    self.model.entries[*serial].id_text()
                ));
            }
        }
        Ok(())
    }

    fn check_claimed_fields(
        &mut self,
        serial: usize,
        claimed: &ClaimedEntry,
    ) -> Result<(), String> {
        let entry = &self.model.entries[serial];
        let sent = &entry.sent;
        let mut problems = Vec::new();
        if claimed.namespace != sent.namespace {
            problems.push(format!(
                "namespace {:?}, sent {:?}",
                claimed.namespace, sent.namespace
            ));
        }
        if claimed.target != sent.target {
            problems.push(format!("target {}, sent {}", claimed.target, sent.target));
        }
        if claimed.key != sent.key {
            problems.push(format!(
                "key {:?}, sent {:?}",
                claimed.key.as_str(),
                sent.key.as_str()
            ));
        }
        if claimed.method != sent.method {
            problems.push(format!(
                "method {:?}, sent {:?}",
                claimed.method, sent.method
            ));
        }
        if claimed.version != sent.version {
            problems.push(format!(
                "version {}, sent {}",
                claimed.version, sent.version
            ));
        }
        if claimed.payload != sent.payload {
            problems.push(format!(
                "payload {:?}, sent {:?}",
                claimed.payload, sent.payload
            ));
        }
        if claimed.attempts != entry.attempts {
            problems.push(format!(
                "attempts {}, expected {}",
                claimed.attempts, entry.attempts
            ));
        }
        if claimed.last_error != entry.last_error {
            problems.push(format!(
                "last_error {:?}, expected {:?}",
                claimed.last_error, entry.last_error
            ));
        }
        let orphaned = entry.orphaned || matches!(entry.state, State::Prepared(_));
        if claimed.orphaned != orphaned {
            problems.push(format!(
                "orphaned {}, expected {orphaned} ({})",
                claimed.orphaned,
                if orphaned {
                    "an expired or uncertain prepared entry, an uncertain append, or claimed as an orphan before and not settled"
                } else {
                    "a committed or plain appended entry"
                }
            ));
        }
        let id = entry.id;
        if !problems.is_empty() {
            return Err(format!("claimed #{id} with {}", problems.join("; ")));
        }
        self.model.check_enqueued_at(serial, claimed.enqueued_at)
    }

    /// A claim: preferably one still held.
    fn pick_lease(&self, pick: Pick) -> Option<usize> {
        let all: Vec<usize> = (0..self.model.leases.len()).collect();
        let held: Vec<usize> = all
            .iter()
            .copied()
            .filter(|index| self.model.lease_status(*index) != LeaseStatus::Stale)
            .collect();
        choose(pick, &held, &all)
    }

    async fn settle(
        &mut self,
        number: usize,
        action: Action,
        index: usize,
    ) -> Result<Done, String> {
        let lease = self.model.leases[index].lease;
        let serial = self.model.leases[index].serial;
        if let Action::SettleOrphan = action {
            return self
                .settle_orphan(serial, &format!(" (claimed as lease {index})"))
                .await;
        }
        let status = self.model.lease_status(index);
        let id = lease.id;
        let error = format!("error at step {number}");
        let held = match status {
            LeaseStatus::Current => "held",
            LeaseStatus::Doubtful => "held before the restart",
            LeaseStatus::Stale => "lost",
        };
        let queue = self.queue()?;
        let (call, result): (String, Result<Option<bool>, QueueError>) = match action {
            Action::Complete => (
                format!("complete(lease {index} of #{id}, {held})"),
                queue.complete(lease).await.map(|()| None),
            ),
            Action::Renew(wait) => (
                format!("renew(lease {index} of #{id}, {held}, for {})", wait.name()),
                queue
                    .renew(lease, self.settings.duration(wait))
                    .await
                    .map(|()| None),
            ),
            Action::RetryLater(wait) => (
                format!(
                    "retry_later(lease {index} of #{id}, {held}, {error:?}, delay {})",
                    wait.name()
                ),
                queue
                    .retry_later(lease, &error, self.settings.duration(wait))
                    .await
                    .map(|()| None),
            ),
            Action::Release => (
                format!("release(lease {index} of #{id}, {held})"),
                queue.release(lease).await.map(|()| None),
            ),
            Action::DeadLetter => (
                format!("dead_letter(lease {index} of #{id}, {held}, {error:?})"),
                queue.dead_letter(lease, &error).await.map(|()| None),
            ),
            // Handled by `settle_orphan` above.
            Action::SettleOrphan => return Err("settle_orphan is not a settle".to_owned()),
            Action::HasLater => (
                format!("has_later_entries(lease {index} of #{id}, {held})"),
                queue.has_later_entries(lease).await.map(Some),
            ),
        };
        let text = format!("{call} -> {}", show_result(&result));
        match (status, &result) {
            (LeaseStatus::Stale, _) if is_lease_lost(&result, id) => return ran(text),
            // Not specified for a claim no longer held: either answer.
            (LeaseStatus::Stale, Ok(_)) if matches!(action, Action::HasLater) => return ran(text),
            (LeaseStatus::Stale, Ok(_)) => {
                return Err(format!(
                    "{text}: the claim is no longer held, expected LeaseLost"
                ))
            }
            (LeaseStatus::Doubtful, _) if is_lease_lost(&result, id) => {
                if let State::Leased { lease, .. } = &mut self.model.entries[serial].state {
                    *lease = None;
                }
                return ran(text);
            }
            (_, Err(error)) => {
                return Err(format!(
                    "{text}: the claim is held, expected Ok, got {error}"
                ))
            }
            _ => {}
        }
        self.model.leases[index].doubtful = false;
        let deadline_of = |wait: Wait| self.model.deadline(wait);
        let new_state = match action {
            Action::Complete => None,
            Action::Renew(wait) => Some(State::Leased {
                until: deadline_of(wait),
                lease: Some(index),
            }),
            Action::RetryLater(wait) => Some(State::Pending(deadline_of(wait))),
            Action::Release => Some(State::Pending(Deadline::Passed)),
            Action::DeadLetter => Some(State::Dead { died_at: None }),
            Action::SettleOrphan => return ran(text),
            Action::HasLater => {
                let expected = self.model.has_later(serial);
                if let Ok(Some(later)) = result {
                    if later != expected {
                        return Err(format!("{text}: expected {expected}"));
                    }
                }
                return ran(text);
            }
        };
        let entry = &mut self.model.entries[serial];
        match new_state {
            None => entry.removed = true,
            Some(state) => {
                if matches!(action, Action::RetryLater(_) | Action::DeadLetter) {
                    entry.attempts += 1;
                    entry.last_error = error;
                }
                entry.state = state;
            }
        }
        ran(text)
    }

    /// An entry to settle as an orphan: preferably one claimed as an
    /// orphan (or prepared).
    fn pick_orphan(&self, pick: Pick) -> Option<usize> {
        let orphans: Vec<usize> = self
            .model
            .live()
            .filter(|(_, entry)| entry.orphaned || matches!(entry.state, State::Prepared(_)))
            .map(|(serial, _)| serial)
            .collect();
        let all: Vec<usize> = (0..self.model.entries.len()).collect();
        choose(pick, &orphans, &all)
    }

    async fn settle_orphan(&mut self, serial: usize, how: &str) -> Result<Done, String> {
        let entry = &self.model.entries[serial];
        let id = entry.id;
        let before = entry.state_name();
        let orphaned = if entry.orphaned { ", orphaned" } else { "" };
        let result = self.queue()?.settle_orphan(id).await;
        let text = format!(
            "settle_orphan(#{id}{how}, {before}{orphaned}) -> {}",
            show_result(&result)
        );
        if let Err(error) = result {
            return Err(format!("{text}: expected Ok, got {error}"));
        }
        let entry = &mut self.model.entries[serial];
        if !entry.removed {
            // Applied to the store that was authoritative: no longer an
            // orphan, and a prepared entry is pending.
            entry.orphaned = false;
            if let State::Prepared(_) = entry.state {
                entry.state = State::Pending(Deadline::Passed);
            }
        }
        ran(text)
    }

    async fn dead_op(&mut self, pick: Pick, retry: bool) -> Result<Done, String> {
        let name = if retry { "retry_dead" } else { "drop_dead" };
        let dead: Vec<usize> = self
            .model
            .live()
            .filter(|(_, entry)| matches!(entry.state, State::Dead { .. }))
            .map(|(serial, _)| serial)
            .collect();
        // Any entry ever made, or (the last choice) an id never used.
        let all: Vec<usize> = (0..=self.model.entries.len()).collect();
        let Some(choice) = choose(pick, &dead, &all) else {
            return skipped(format!("{name} (skipped: no dead letter to pick)"));
        };
        let serial = (choice < self.model.entries.len()).then_some(choice);
        let (id, is_dead, before) = match serial {
            Some(serial) => {
                let entry = &self.model.entries[serial];
                let before = entry.state_name();
                (entry.id, dead.contains(&serial), before)
            }
            None => (UNKNOWN_ID, false, "never existed"),
        };
        let result = if retry {
            self.queue()?.retry_dead(id).await
        } else {
            self.queue()?.drop_dead(id).await
        };
        let text = format!("{name}(#{id}, {before}) -> {}", show_result(&result));
        match (is_dead, &result) {
            (true, Ok(())) => {}
            (true, Err(error)) => {
                return Err(format!("{text}: it is dead, expected Ok, got {error}"))
            }
            (false, Err(QueueError::NotDead(refused))) if *refused == id => return ran(text),
            (false, _) => return Err(format!("{text}: it is not dead, expected NotDead(#{id})")),
        }
        if let Some(serial) = serial {
            let entry = &mut self.model.entries[serial];
            if retry {
                entry.attempts = 0;
                entry.state = State::Pending(Deadline::Passed);
            } else {
                entry.removed = true;
            }
        }
        ran(text)
    }

    // -- whole-queue checks ------------------------------------------------

    async fn check_all(&mut self) -> Result<(), String> {
        self.check_stats().await?;
        self.check_dead_letters().await?;
        for (namespace, namespace_name) in NAMESPACES.iter().enumerate() {
            for target in [Side::Old, Side::New] {
                for (key, key_name) in KEYS.iter().enumerate() {
                    self.check_has_work(namespace, target, key)
                        .await
                        .map_err(|why| {
                            format!("has_work({namespace_name}, {target}, {key_name}): {why}")
                        })?;
                }
            }
        }
        Ok(())
    }

    async fn check_has_work(
        &self,
        namespace: usize,
        target: Side,
        key: usize,
    ) -> Result<(), String> {
        let answer = self
            .queue()?
            .has_work(NAMESPACES[namespace], target, &Key::from(KEYS[key]))
            .await
            .map_err(|error| format!("failed: {error}"))?;
        let expected = self.model.has_work(namespace, target, key);
        if answer != expected {
            let why = if key == UNKEYED {
                format!(
                    "the namespace has {}entries for {target}",
                    if expected { "" } else { "no " }
                )
            } else {
                format!(
                    "the key and the unkeyed key have {}entries for {target}",
                    if expected { "" } else { "no " }
                )
            };
            return Err(format!("answered {answer}, expected {expected}: {why}"));
        }
        Ok(())
    }

    async fn check_stats(&self) -> Result<(), String> {
        let stats: QueueStats = self
            .queue()?
            .stats()
            .await
            .map_err(|error| format!("stats() failed: {error}"))?;
        for target in [Side::Old, Side::New] {
            let got = stats.target(target);
            let (pending, in_flight, dead, blocked_keys) = self.model.counts(target);
            let mut problems = Vec::new();
            if got.pending != pending {
                problems.push(format!("pending {}, expected {pending}", got.pending));
            }
            if got.in_flight != in_flight {
                problems.push(format!("in_flight {}, expected {in_flight}", got.in_flight));
            }
            if got.dead != dead {
                problems.push(format!("dead {}, expected {dead}", got.dead));
            }
            if got.blocked_keys != blocked_keys {
                problems.push(format!(
                    "blocked_keys {}, expected {blocked_keys}",
                    got.blocked_keys
                ));
            }
            let oldest = pending + in_flight > 0;
            if got.oldest_pending.is_some() != oldest {
                problems.push(format!(
                    "oldest_pending {:?}, expected {}",
                    got.oldest_pending,
                    if oldest { "Some" } else { "None" }
                ));
            }
            let empty = pending + in_flight + dead == 0;
            if got.is_empty() != empty {
                problems.push(format!("is_empty() {}, expected {empty}", got.is_empty()));
            }
            if !problems.is_empty() {
                return Err(format!("stats() of {target}: {}", problems.join("; ")));
            }
        }
        Ok(())
    }

    async fn check_dead_letters(&mut self) -> Result<(), String> {
        let letters: Vec<DeadLetter> = self
            .queue()?
            .dead_letters()
            .await
            .map_err(|error| format!("dead_letters() failed: {error}"))?;
        let expected: Vec<usize> = self
            .model
            .live()
            .filter(|(_, entry)| matches!(entry.state, State::Dead { .. }))
            .map(|(serial, _)| serial)
            .collect();
        let got_ids: Vec<EntryId> = letters.iter().map(|letter| letter.id).collect();
        let expected_ids: Vec<EntryId> = expected
            .iter()
            .map(|serial| self.model.entries[*serial].id)
            .collect();
        if got_ids != expected_ids {
            return Err(format!(
                "dead_letters() listed {}, expected {} (oldest first)",
                show_ids(&got_ids),
                show_ids(&expected_ids)
            ));
        }
        for (letter, serial) in letters.iter().zip(expected) {
            let entry = &self.model.entries[serial];
            let sent = &entry.sent;
            let mut problems = Vec::new();
            if letter.namespace != sent.namespace {
                problems.push(format!(
                    "namespace {:?}, sent {:?}",
                    letter.namespace, sent.namespace
                ));
            }
            if letter.target != sent.target {
                problems.push(format!("target {}, sent {}", letter.target, sent.target));
            }
            if letter.key != sent.key {
                problems.push(format!(
                    "key {:?}, sent {:?}",
                    letter.key.as_str(),
                    sent.key.as_str()
                ));
            }
            if letter.method != sent.method {
                problems.push(format!(
                    "method {:?}, sent {:?}",
                    letter.method, sent.method
                ));
            }
            if letter.version != sent.version {
                problems.push(format!("version {}, sent {}", letter.version, sent.version));
            }
            if letter.payload != sent.payload {
                problems.push(format!(
                    "payload {:?}, sent {:?}",
                    letter.payload, sent.payload
                ));
            }
            if letter.attempts != entry.attempts {
                problems.push(format!(
                    "attempts {}, expected {}",
                    letter.attempts, entry.attempts
                ));
            }
            if letter.error != entry.last_error {
                problems.push(format!(
                    "error {:?}, expected {:?}",
                    letter.error, entry.last_error
                ));
            }
            if let State::Dead {
                died_at: Some(died_at),
            } = entry.state
            {
                if letter.died_at != died_at {
                    problems.push(format!(
                        "died_at {:?}, reported as {died_at:?} before",
                        letter.died_at
                    ));
                }
            }
            let id = entry.id;
            if !problems.is_empty() {
                return Err(format!("dead letter #{id}: {}", problems.join("; ")));
            }
            self.model
                .check_enqueued_at(serial, letter.enqueued_at)
                .map_err(|why| format!("dead letter {why}"))?;
            if let State::Dead { died_at } = &mut self.model.entries[serial].state {
                *died_at = Some(letter.died_at);
            }
        }
        Ok(())
    }
}

/// Picks from `preferred` or from `all`, as the pick says (`None` if that is empty).
fn choose(pick: Pick, preferred: &[usize], all: &[usize]) -> Option<usize> {
    let from = if pick.preferred { preferred } else { all };
    if from.is_empty() {
        None
    } else {
        Some(from[pick.index.index(from.len())])
    }
}

fn show_ids(ids: &[EntryId]) -> String {
    let shown: Vec<String> = ids.iter().map(|id| format!("#{id}")).collect();
    format!("[{}]", shown.join(", "))
}
