//! Reads you can trust: shadow comparison, sampling and rollout by key.
//!
//! In [`Shadow`](crate::Stage::Shadow) and [`Live`](crate::Stage::Live), a
//! read goes to both stores. The caller gets the *serving* store's result
//! (old in `Shadow`, new in `Live`), exactly as if only that store had been
//! called; the other store's result is compared with it, and what the
//! comparison found goes to metrics, to the mismatch-rate guardrail and,
//! when the stores disagree, to the [observers](crate::observe). Nothing the
//! other store or the comparison does (an error, a panic, slowness) changes
//! the caller's result, or delays it by more than the
//! [compare timeout](crate::Builder::compare_timeout) (DESIGN I6).
//!
//! # Concurrent and detached comparison
//!
//! By default both stores are read **concurrently**, within the caller's
//! future: the caller waits for the serving store, then at most the compare
//! timeout more for the other store (so at most the slower of the two, and
//! never more than serving time + timeout), then the comparison runs and
//! the serving result is returned.
//!
//! With the `detached` method option, the other store's read runs in a task
//! of its own and the caller returns as soon as the serving store answers;
//! the comparison happens afterwards. At most
//! [`detached_concurrency`](crate::Builder::detached_concurrency)
//! comparisons run at once: beyond that, calls are served without one and
//! the drop is counted (`dualwrite_comparisons_dropped_total`), never
//! queued. A detached comparison needs the serving value to outlive the
//! call, so the method's `Ok` value must be `Clone + Send + 'static`, its
//! arguments are copied into the task, and both stores must be
//! `Send + Sync + 'static`.
//!
//! How each form of method runs:
//!
//! | method form | concurrent (default) | `detached` |
//! |---|---|---|
//! | `fn .. -> impl Future + Send` | both futures polled together in the caller's future | the other store's future is spawned on the tokio runtime (without `+ Send` in the signature: falls back to concurrent, as native `async fn` does) |
//! | `#[async_trait]` | as above | as above |
//! | native `async fn` | as above | **falls back to concurrent**: the generated code cannot prove the store's future is `Send`, so it cannot spawn it; the caller still waits at most serving time + timeout |
//! | blocking `fn` | **serially**, other store after the serving one, on the caller's thread: a blocking call cannot be raced or interrupted, so the caller pays the other store's time on compared calls; keep the sampling rate low, or use `detached` | the other store is called on tokio's blocking pool (or a thread of its own outside a runtime); the caller pays nothing |
//!
//! # What is compared
//!
//! A read returning `Result<T, E>` is compared on its `Ok` values; an `Err`
//! on one side or both is an outcome of its own ([`ComparisonOutcome`]).
//! Other outputs are compared whole. Values are compared with `PartialEq`,
//! or with the method's `compare = path` (`fn(&T, &T) -> bool`), or after
//! its `normalize = path` (`fn(&T) -> U` with `U: PartialEq`, to ignore
//! differences that do not matter, such as timestamp precision).
//!
//! When both sides are `Err`, the two errors are compared: with the method's
//! `compare_errors = path` (`fn(&E, &E) -> bool`), else with `PartialEq`
//! when `E` has it, else by their `Display` text, else by their `Debug`
//! text (chosen at compile time from what `E` implements); an `E` with none
//! of these cannot be told apart and its errors count as equal. A
//! `detached` comparison runs after the serving result has gone to the
//! caller, so it keeps a copy of the serving error when `E: Clone` (then
//! compares as above), else its `Display` (or `Debug`) text, compared with
//! the other error's; `compare_errors` on a `detached` read needs
//! `E: Clone`, and says so at compile time.
//!
//! | outcome | serving store | compared store | a disagreement? |
//! |---|---|---|---|
//! | `match` | `Ok` | `Ok`, equal value | no |
//! | `value_mismatch` | `Ok` | `Ok`, different value | yes |
//! | `serving_errored` | `Err` | `Ok` | yes |
//! | `compared_errored` | `Ok` | `Err` or panic | yes |
//! | `both_errored` | `Err` | `Err`, equal error | no |
//! | `error_mismatch` | `Err` | `Err`, different error, or panic | yes |
//! | `compared_timed_out` | any | no answer within the timeout | yes |
//! | `comparator_panicked` | any | the comparator (or normaliser, or error comparator) panicked | yes |
//!
//! Every outcome is counted (`dualwrite_comparisons_total`); a disagreement
//! also counts in `dualwrite_mismatches_total` and against the
//! mismatch-rate guardrail, goes to
//! [`Observer::on_mismatch`](crate::observe::Observer::on_mismatch) and is
//! logged at `WARN` by the default observer; an agreement is a `DEBUG`
//! event.
//!
//! # Reads without a key
//!
//! A mismatch is found again by its key. A read without `key = ..` has
//! none, so its report carries
//! [`arguments_hash`](crate::observe::ComparisonReport::arguments_hash): the
//! stable hash ([`Key::fingerprint`](crate::Key::fingerprint)'s, the same in
//! every process) of its arguments as a JSON array, each argument as its
//! JSON when it is `serde::Serialize`, else its `Debug` text as a JSON
//! string, else `null`. With `report_values` the report also carries that
//! array, [`arguments`](crate::observe::ComparisonReport::arguments). The
//! arguments are rendered only for calls that are compared.
//!
//! # Sampling and rollout
//!
//! [`compare_sampling`](crate::Builder::compare_sampling) compares a
//! fraction of calls (each call drawn independently); the others read the
//! serving store only. A [`Rollout`] moves a sticky share of keys one stage
//! ahead (say 10% of keys `Live`, the rest `Shadow`), chosen by a stable
//! hash of the method's `key`, the same on every instance and restart.
//!
//! # Without the attribute
//!
//! The entry points the generated code calls are hidden; this module's
//! public items are the outcome, the rollout and the comparator helpers.

mod compare;
mod detached;
#[doc(hidden)]
pub mod generated;
mod plan;
mod sample;

pub use crate::observe::ComparisonOutcome;
pub use crate::rollout::{bucket, Rollout, RolloutError, BUCKETS};
pub use compare::{equal, normalized, plain_view, result_view};
pub use plan::ReadPlan;

pub(crate) use compare::{judge, Answer};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::observe::Observers;

/// The read settings of one wrapper, with the state they need.
#[derive(Debug)]
pub(crate) struct Reads {
    /// The stage handle reads are routed by (and comparisons recorded in).
    pub(crate) stage: crate::StageHandle,
    /// How long a compared read waits for the other store once the serving
    /// store has answered.
    pub(crate) timeout: Duration,
    /// The fraction of calls compared.
    pub(crate) sampling: f64,
    /// Permits for detached comparisons.
    pub(crate) detached: Arc<Semaphore>,
    pub(crate) observers: Observers,
}

/// The read settings a [`Builder`](crate::Builder) collects.
#[derive(Clone)]
pub(crate) struct ReadSettings {
    pub(crate) timeout: Duration,
    pub(crate) sampling: f64,
    pub(crate) detached_concurrency: usize,
    pub(crate) observers: Vec<Arc<dyn crate::observe::Observer>>,
    pub(crate) default_observer: bool,
    pub(crate) mismatch_guard: Option<crate::stage::MismatchGuard>,
}

impl Default for ReadSettings {
    fn default() -> Self {
        ReadSettings {
            timeout: Duration::from_millis(100),
            sampling: 1.0,
            detached_concurrency: 64,
            observers: Vec::new(),
            default_observer: true,
            mismatch_guard: None,
        }
    }
}

impl ReadSettings {
    /// Checks the settings and builds the wrapper's read state; applies the
    /// observers and guard to `stage`.
    pub(crate) fn build(
        self,
        stage: &crate::StageHandle,
        log_keys: bool,
    ) -> Result<Reads, crate::BuildError> {
        use crate::config::{self, invalid as builder_invalid};
        config::duration("compare_timeout", self.timeout, false)?;
        if !(0.0..=1.0).contains(&self.sampling) {
            return Err(builder_invalid(
                "compare_sampling",
                format!("must be a fraction from 0 to 1, not {}", self.sampling),
            ));
        }
        if self.detached_concurrency == 0 {
            return Err(builder_invalid(
                "detached_concurrency",
                "must be at least 1",
            ));
        }
        if let Some(guard) = self.mismatch_guard {
            guard
                .validate()
                .map_err(|(setting, reason)| builder_invalid(setting, reason))?;
            stage.set_mismatch_guard(guard);
        }
        let mut observers = self.observers;
        if self.default_observer {
            observers.insert(0, Arc::new(crate::observe::TracingObserver::new(log_keys)));
        }
        let observers = Observers::new(observers);
        stage.attach_observers(&observers);
        Ok(Reads {
            stage: stage.clone(),
            timeout: self.timeout,
            sampling: self.sampling,
            detached: Arc::new(Semaphore::new(self.detached_concurrency)),
            observers,
        })
    }
}
