//! The conformance suite: fixed cases, each a short scenario on a fresh
//! queue, of the behaviours every [`ReconciliationQueue`] backend must have.
//!
//! Where the [model suite](super::model) explores random sequences of
//! operations against a reference model, these cases pin down named
//! behaviours one by one: per-key FIFO order (also under concurrent
//! appends and concurrent claimers), one entry of a key in flight, claim
//! limits, namespaces and targets, every field of an entry, lease expiry
//! and [`LeaseLost`](crate::QueueError::LeaseLost), retry delays and
//! attempts, `release`, dead letters (blocking their key, `retry_dead`,
//! `drop_dead`, [`NotDead`](crate::QueueError::NotDead)), `stats`,
//! fairness across keys, `has_work`, prepared entries (commit, abort,
//! expiry into orphans), `has_later_entries`,
//! [`complete_and_claim`](ReconciliationQueue::complete_and_claim) (its
//! claim sees its completions, a stale lease in it is refused), and the
//! [`PoisonPolicy::Skip`] policy.
//!
//! # Running it
//!
//! [`check_conformance`] takes the same [`ModelBackend`] as the model
//! suite, so one implementation serves both. It runs every case (each on a
//! fresh queue from [`ModelBackend::open`], disposed of with
//! [`ModelBackend::finish`] afterwards), catches a case's panic or failed
//! assertion, and reports *all* failing cases by name with their messages,
//! not just the first. It builds its own multi-thread tokio runtime (two
//! worker threads), so call it from a plain `#[test]`, not from
//! `#[tokio::test]`. It prints nothing.
//!
//! # Poison policies
//!
//! Most cases run on queues from [`ModelBackend::open`], which must use the
//! default policy, [`PoisonPolicy::Block`]: their names start with
//! `block/`. The cases named `skip/…` (some of the above again, and two of
//! the skip policy itself) need a queue with [`PoisonPolicy::Skip`], which
//! the suite asks for with [`ModelBackend::open_with_policy`]. That method
//! returns `Ok(None)` unless the backend implements it; the skip cases are
//! then not run, and are listed in [`ConformanceReport::skipped`] (a
//! backend without a skip policy still passes). Assert that the list is
//! empty if the backend does support the policy.
//!
//! # Capabilities
//!
//! A backend that cannot do part of the contract (a message broker: no
//! write-ahead, no blocking dead letters, ...) says so in
//! [`ReconciliationQueue::capabilities`]. A case that needs a part the
//! queue lacks is not run, and is listed in
//! [`ConformanceReport::skipped`]; the built-in backends declare every
//! part, so for them every case runs. Assert the exact skipped list for a
//! backend that declares less, so that a case it should pass is never
//! skipped unnoticed.
//!
//! # Time
//!
//! Time passes for real, and no case assumes that a call returns within a
//! short window: "not claimable yet" is asserted only for leases, delays
//! and expiries of a minute, and "claimable once a short delay (50 ms) has
//! passed" by claiming until the entry comes, for up to 30 seconds. A case
//! that has not finished after two minutes fails.
//!
//! # Example
//!
//! A third-party backend running both suites from its own tests:
//!
//! ```ignore
//! use dualwrite_runtime::queue::testing::conformance::check_conformance;
//! use dualwrite_runtime::queue::testing::model::{check_backend, ModelBackend, ModelConfig};
//! use dualwrite_runtime::queue::PoisonPolicy;
//! use dualwrite_runtime::QueueError;
//!
//! struct MyBackend;
//!
//! impl ModelBackend for MyBackend {
//!     type Queue = MyQueue;
//!
//!     async fn open(&mut self) -> Result<MyQueue, QueueError> {
//!         MyQueue::connect_fresh(PoisonPolicy::Block).await
//!     }
//!
//!     // Without this, the `skip/…` conformance cases are skipped.
//!     async fn open_with_policy(
//!         &mut self,
//!         policy: PoisonPolicy,
//!     ) -> Result<Option<MyQueue>, QueueError> {
//!         MyQueue::connect_fresh(policy).await.map(Some)
//!     }
//!
//!     async fn finish(&mut self, queue: MyQueue) {
//!         queue.destroy().await;
//!     }
//! }
//!
//! #[test]
//! fn my_queue_matches_the_model() {
//!     if let Err(failure) = check_backend(&ModelConfig::new().with_env(), MyBackend) {
//!         panic!("{failure}");
//!     }
//! }
//!
//! #[test]
//! fn my_queue_conforms() {
//!     match check_conformance(MyBackend) {
//!         Ok(report) => assert!(report.skipped().is_empty(), "{:?}", report.skipped()),
//!         Err(failure) => panic!("{failure}"),
//!     }
//! }
//! ```

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::model::ModelBackend;
use crate::queue::{Claim, ClaimedEntry, NewEntry, PoisonPolicy, QueueCapabilities};
use crate::{Key, ReconciliationQueue, Side};

mod dead_and_prepared;
mod ordering;
mod turnover;

// ---------------------------------------------------------------------------
// The public interface.

/// What a run of [`check_conformance`] that found no failure did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConformanceReport {
    passed: Vec<String>,
    skipped: Vec<String>,
}

impl ConformanceReport {
    /// The cases that ran and passed, by name (e.g. `block/fifo_per_key`).
    pub fn passed(&self) -> &[String] {
        &self.passed
    }

    /// The cases not run because [`ModelBackend::open_with_policy`] gave no
    /// queue for their policy (the `skip/…` cases, unless the backend
    /// implements it).
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }
}

/// One failing case of [`check_conformance`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseFailure {
    case: String,
    message: String,
}

impl CaseFailure {
    /// The case's name, e.g. `block/retry_dead_resets_and_goes_first`
    /// (`check_conformance` if the suite could not start).
    pub fn case(&self) -> &str {
        &self.case
    }

    /// Why it failed: the panic message of the failed assertion, the
    /// backend's error, or a timeout.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for CaseFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.case, self.message)
    }
}

/// Why [`check_conformance`] failed: every failing case, or why the suite
/// could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConformanceFailure {
    failures: Vec<CaseFailure>,
    report: ConformanceReport,
}

impl ConformanceFailure {
    /// The failing cases, in the order they ran (never empty).
    pub fn failures(&self) -> &[CaseFailure] {
        &self.failures
    }

    /// The cases that passed or were skipped meanwhile.
    pub fn report(&self) -> &ConformanceReport {
        &self.report
    }

    fn setup(message: String) -> Self {
        ConformanceFailure {
            failures: vec![CaseFailure {
                case: "check_conformance".to_owned(),
                message,
            }],
            report: ConformanceReport::default(),
        }
    }
}

impl fmt::Display for ConformanceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ran = self.failures.len() + self.report.passed.len();
        write!(
            f,
            "the queue backend failed {} of {ran} conformance cases ({} skipped):",
            self.failures.len(),
            self.report.skipped.len()
        )?;
        for failure in &self.failures {
            write!(f, "\n\n{failure}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConformanceFailure {}

/// Runs every conformance case against `backend`, each on a fresh queue,
/// and reports every failing case. See the [module docs](self) for the
/// poison policies and an example.
///
/// It builds its own tokio runtime (multi-thread, two workers): call it
/// from a plain `#[test]`, not from inside a runtime.
///
/// # Errors
///
/// A [`ConformanceFailure`] listing each failing case with its message
/// (a failed assertion, a panic, an error from the backend, or a case that
/// did not finish within two minutes), or saying why the suite could not
/// start (called from inside a tokio runtime, or no runtime could be
/// built).
pub fn check_conformance<B: ModelBackend>(
    mut backend: B,
) -> Result<ConformanceReport, ConformanceFailure> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(ConformanceFailure::setup(
            "the conformance suite builds its own tokio runtime: call check_conformance from a \
             plain #[test], not from inside a runtime (#[tokio::test])"
                .to_owned(),
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| {
            ConformanceFailure::setup(format!(
                "the conformance suite could not start a tokio runtime: {error}"
            ))
        })?;
    let mut report = ConformanceReport::default();
    let mut failures = Vec::new();
    let groups: [(&str, Option<PoisonPolicy>, &[Case]); 2] = [
        ("block", None, BLOCK_CASES),
        ("skip", Some(PoisonPolicy::Skip), SKIP_CASES),
    ];
    for (group, policy, cases) in groups {
        for case in cases {
            let name = format!("{group}/{}", case.name);
            match run_case(&runtime, &mut backend, policy, case) {
                Outcome::Passed => report.passed.push(name),
                Outcome::Skipped => report.skipped.push(name),
                Outcome::Failed(message) => failures.push(CaseFailure {
                    case: name,
                    message,
                }),
            }
        }
    }
    if failures.is_empty() {
        Ok(report)
    } else {
        Err(ConformanceFailure { failures, report })
    }
}

// ---------------------------------------------------------------------------
// Running the cases.

type Queue = Arc<dyn ReconciliationQueue>;

/// One case: a name, the scenario, run on a fresh queue, and what of the
/// contract it needs beyond the core (a backend whose
/// [`capabilities`](ReconciliationQueue::capabilities) lack one of them has
/// the case skipped, and listed in [`ConformanceReport::skipped`]).
struct Case {
    name: &'static str,
    run: fn(Queue) -> BoxFuture<'static, ()>,
    needs: &'static [Need],
}

/// A part of the contract a case needs (see [`QueueCapabilities`]).
#[derive(Clone, Copy)]
enum Need {
    WriteAhead,
    BlockingDeadLetters,
    KeyIndependentDelays,
    ExactKeyWork,
    UnkeyedOrder,
    KeyEntries,
}

impl Need {
    fn met_by(self, capabilities: &QueueCapabilities) -> bool {
        match self {
            Need::WriteAhead => capabilities.write_ahead,
            Need::BlockingDeadLetters => capabilities.blocking_dead_letters,
            Need::KeyIndependentDelays => capabilities.key_independent_delays,
            Need::ExactKeyWork => capabilities.exact_key_work,
            Need::UnkeyedOrder => capabilities.unkeyed_order,
            Need::KeyEntries => capabilities.key_entries,
        }
    }
}

macro_rules! cases {
    ($($module:ident :: $name:ident $([$($need:ident),*])?),* $(,)?) => {
        &[$(Case {
            name: stringify!($name),
            run: |queue| Box::pin($module::$name(queue)),
            needs: &[$($(Need::$need),*)?],
        }),*]
    };
}

/// The cases run on queues of the default policy, [`PoisonPolicy::Block`].
const BLOCK_CASES: &[Case] = cases![
    ordering::fifo_per_key,
    ordering::concurrent_appends_keep_per_key_order,
    ordering::ids_increase_in_append_order,
    ordering::one_in_flight_per_key,
    ordering::claim_respects_limit_and_namespace,
    ordering::targets_are_separate_streams,
    ordering::claimed_entry_carries_its_fields,
    ordering::lease_expiry_and_lease_lost,
    ordering::expired_lease_not_reclaimed_can_still_settle,
    ordering::retry_later_waits_and_counts,
    ordering::retry_delay_blocks_only_its_key [KeyIndependentDelays],
    ordering::release_keeps_attempts,
    dead_and_prepared::dead_letter_blocks_its_key_only [BlockingDeadLetters],
    dead_and_prepared::retry_dead_resets_and_goes_first [BlockingDeadLetters],
    dead_and_prepared::drop_dead_unblocks [BlockingDeadLetters],
    dead_and_prepared::not_dead_is_refused,
    ordering::stats_by_target,
    ordering::fair_across_keys [KeyIndependentDelays],
    ordering::fair_when_keys_exceed_the_limit [KeyIndependentDelays],
    ordering::has_work_follows_entries [ExactKeyWork],
    ordering::empty_queue_is_idle,
    ordering::concurrent_claimers_never_share_a_key,
    dead_and_prepared::prepared_entry_waits_for_commit [WriteAhead],
    dead_and_prepared::aborted_entry_disappears [WriteAhead],
    dead_and_prepared::expired_prepared_entry_is_claimed_as_orphan [WriteAhead],
    dead_and_prepared::has_later_entries_sees_the_rest_of_the_key [WriteAhead, ExactKeyWork],
    dead_and_prepared::key_entries_shows_a_keys_line_in_order [KeyEntries],
    turnover::complete_and_claim_hands_out_the_next_entry_of_a_completed_key,
    turnover::complete_and_claim_refuses_a_stale_lease,
    turnover::complete_and_claim_keeps_the_unkeyed_barrier [UnkeyedOrder],
    turnover::complete_and_claim_with_limit_zero_only_completes,
    turnover::complete_and_claim_leaves_prepared_and_dead_entries [WriteAhead],
];

/// The cases run on queues of [`PoisonPolicy::Skip`]: what must not change
/// with the policy, and the policy itself.
const SKIP_CASES: &[Case] = cases![
    ordering::fifo_per_key,
    ordering::one_in_flight_per_key,
    ordering::lease_expiry_and_lease_lost,
    ordering::retry_later_waits_and_counts,
    ordering::fair_across_keys[KeyIndependentDelays],
    ordering::has_work_follows_entries[ExactKeyWork],
    dead_and_prepared::prepared_entry_waits_for_commit[WriteAhead],
    dead_and_prepared::skip_policy_lets_the_key_flow,
    dead_and_prepared::skip_policy_drop_dead,
    turnover::complete_and_claim_hands_out_the_next_entry_of_a_completed_key,
    turnover::complete_and_claim_refuses_a_stale_lease,
];

/// How long a case may take before it fails as hung.
const CASE_TIMEOUT: Duration = Duration::from_secs(120);

enum Outcome {
    Passed,
    Skipped,
    Failed(String),
}

fn run_case<B: ModelBackend>(
    runtime: &tokio::runtime::Runtime,
    backend: &mut B,
    policy: Option<PoisonPolicy>,
    case: &Case,
) -> Outcome {
    let opened = catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(async {
            match policy {
                None => backend.open().await.map(Some),
                Some(policy) => backend.open_with_policy(policy).await,
            }
        })
    }));
    let queue = match opened {
        Ok(Ok(Some(queue))) => Arc::new(queue),
        Ok(Ok(None)) => return Outcome::Skipped,
        Ok(Err(error)) => return Outcome::Failed(format!("could not open a queue: {error}")),
        Err(panic) => {
            return Outcome::Failed(format!(
                "opening a queue panicked: {}",
                panic_message(&*panic)
            ))
        }
    };
    let shared: Queue = Arc::clone(&queue) as Queue;
    let capabilities = shared.capabilities();
    if !case.needs.iter().all(|need| need.met_by(&capabilities)) {
        drop(shared);
        if let Ok(queue) = Arc::try_unwrap(queue) {
            let _ = catch_unwind(AssertUnwindSafe(|| runtime.block_on(backend.finish(queue))));
        }
        return Outcome::Skipped;
    }
    let run = case.run;
    let ran = catch_unwind(AssertUnwindSafe(|| {
        // The timer needs the runtime: made inside `block_on`.
        runtime.block_on(async move { tokio::time::timeout(CASE_TIMEOUT, run(shared)).await })
    }));
    let mut outcome = match ran {
        Ok(Ok(())) => Outcome::Passed,
        Ok(Err(_)) => Outcome::Failed(format!("did not finish within {CASE_TIMEOUT:?}")),
        Err(panic) => Outcome::Failed(panic_message(&*panic)),
    };
    // A task of a failed case may still hold the queue: then it is dropped
    // with the last clone instead of disposed of.
    if let Ok(queue) = Arc::try_unwrap(queue) {
        let finished = catch_unwind(AssertUnwindSafe(|| runtime.block_on(backend.finish(queue))));
        if let (Err(panic), Outcome::Passed) = (finished, &outcome) {
            outcome = Outcome::Failed(format!(
                "disposing of the queue panicked: {}",
                panic_message(&*panic)
            ));
        }
    }
    outcome
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "panicked (with a payload that is not a string)".to_owned()
    }
}

// ---------------------------------------------------------------------------
// What the cases share.

const NS: &str = "conformance";
const LONG: Duration = Duration::from_secs(60);
/// A lease, delay or expiry meant to run out during the test.
const SHORT: Duration = Duration::from_millis(50);
/// How long [`claim_until`] keeps trying: far beyond [`SHORT`], so that only
/// a queue that never hands the entry out fails.
const DEADLINE: Duration = Duration::from_secs(30);

fn entry(namespace: &str, target: Side, key: &str, value: &str) -> NewEntry {
    NewEntry {
        namespace: namespace.to_owned(),
        target,
        key: Key::from(key),
        method: "put".to_owned(),
        version: 1,
        payload: value.as_bytes().to_vec(),
        reason: "follower down".to_owned(),
        uncertain: false,
    }
}

async fn append(queue: &Queue, key: &str, value: &str) {
    queue
        .append(entry(NS, Side::New, key, value))
        .await
        .expect("append");
}

fn value(entry: &ClaimedEntry) -> String {
    String::from_utf8(entry.payload.clone()).expect("utf-8 payload")
}

fn assert_one_per_key(entries: &[ClaimedEntry]) {
    let keys: BTreeSet<_> = entries
        .iter()
        .map(|entry| (entry.target, entry.key.clone()))
        .collect();
    assert_eq!(keys.len(), entries.len(), "two entries of one key claimed");
}

/// Claims and completes everything of `NS`, returning the values per key in
/// the order they were claimed.
async fn drain(queue: &Queue, limit: usize) -> BTreeMap<String, Vec<String>> {
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for _ in 0..10_000 {
        let claim = queue.claim(NS, limit, LONG).await.expect("claim");
        if claim.entries.is_empty() {
            assert_eq!(claim.next_ready_in, None, "drain found work not ready");
            return seen;
        }
        assert!(claim.entries.len() <= limit);
        assert_one_per_key(&claim.entries);
        for entry in &claim.entries {
            seen.entry(entry.key.to_string())
                .or_default()
                .push(value(entry));
            queue.complete(entry.lease).await.expect("complete");
        }
    }
    panic!("the queue never drained");
}

/// Claims (one at a time, each for [`LONG`]) until a claim returns entries,
/// and returns that claim. Every empty claim on the way must report work
/// ahead (`next_ready_in`), no longer away than `at_most`. Fails after
/// [`DEADLINE`].
async fn claim_until(queue: &Queue, limit: usize, at_most: Duration) -> Claim {
    let started = std::time::Instant::now();
    loop {
        let claim = queue.claim(NS, limit, LONG).await.expect("claim");
        if !claim.entries.is_empty() {
            return claim;
        }
        let wait = claim
            .next_ready_in
            .expect("an entry waiting for its time is not idleness");
        assert!(wait <= at_most, "next_ready_in {wait:?} beyond {at_most:?}");
        assert!(
            started.elapsed() < DEADLINE,
            "nothing became claimable within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts that the claim's `next_ready_in` is that of something due in
/// [`LONG`]: more than half of it away, and not more than all of it.
fn assert_waits_long(claim: &Claim) {
    let wait = claim.next_ready_in.expect("waiting work is not idleness");
    assert!(
        wait > LONG / 2 && wait <= LONG,
        "next_ready_in {wait:?}, expected up to {LONG:?}"
    );
}
