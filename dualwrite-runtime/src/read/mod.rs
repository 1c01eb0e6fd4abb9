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
