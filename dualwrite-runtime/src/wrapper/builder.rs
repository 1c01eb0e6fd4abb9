use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::breaker::{Breakers, CircuitBreaker};
use super::{locks::KeyLocks, Delivery, DualWrite, Shared};
use crate::queue::ReconciliationQueue;
use crate::stage::{Stage, StageHandle};
use crate::worker::RetryPolicy;

/// A setting [`Builder::build`] refused. Nothing was started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A setting that has no safe default was not given.
    #[error("dualwrite setting `{setting}` is required: {hint}")]
    Missing {
        /// The builder method that sets it.
        setting: &'static str,
        /// What to pass.
        hint: &'static str,
    },
    /// A setting has a value that cannot work.
    #[error("dualwrite setting `{setting}` is invalid: {reason}")]
    Invalid {
        /// The builder method (or `retry.<field>`) that sets it.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

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
    circuit_breaker: Option<CircuitBreaker>,
    worker_concurrency: usize,
    lease: Option<Duration>,
    poll_interval: Duration,
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
            circuit_breaker: Some(CircuitBreaker::default()),
            worker_concurrency: 16,
            lease: None,
            poll_interval: Duration::from_millis(500),
        }
    }

    /// The stage to start in, on a handle of this wrapper's own. Default:
    /// [`Stage::DualWrite`]. Ignored when [`stage_handle`](Self::stage_handle) is given.
    pub fn stage(mut self, stage: Stage) -> Self {
        self.initial_stage = stage;
        self
    }

    /// A stage handle shared with other wrappers, so that they move together.
    pub fn stage_handle(mut self, handle: StageHandle) -> Self {
        self.stage = Some(handle);
        self
    }

    /// The reconciliation queue (required).
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
    /// always applied one after another. Default: 16.
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

    /// Checks the settings and builds the wrapper.
    ///
    /// # Errors
    ///
    /// A [`BuildError`] naming the first setting that is missing or invalid.
    pub fn build(self) -> Result<DualWrite<Old, New>, BuildError> {
        let queue = self.queue.ok_or(BuildError::Missing {
            setting: "queue",
            hint: "pass a reconciliation queue, e.g. `.queue(InMemoryQueue::new())`",
        })?;
        if self.follower_timeout.is_zero() {
            return Err(builder_invalid(
                "follower_timeout",
                "must be greater than zero".into(),
            ));
        }
        if self.worker_concurrency == 0 {
            return Err(builder_invalid(
                "worker_concurrency",
                "must be at least 1".into(),
            ));
        }
        if self.poll_interval.is_zero() {
            return Err(builder_invalid(
                "poll_interval",
                "must be greater than zero".into(),
            ));
        }
        let lease = self
            .lease
            .unwrap_or(self.follower_timeout + Duration::from_secs(30));
        if lease <= self.follower_timeout {
            return Err(builder_invalid(
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
        let stage = self
            .stage
            .unwrap_or_else(|| StageHandle::new(self.initial_stage));
        stage.attach_queue(&queue);
        let shared = Shared {
            stage,
            queue,
            locks: Arc::new(KeyLocks::default()),
            follower_timeout: self.follower_timeout,
            delivery: self.delivery,
            breakers: Breakers::new(self.circuit_breaker),
            retry: self.retry,
            worker_concurrency: self.worker_concurrency,
            lease,
            poll_interval: self.poll_interval,
            queued: Notify::new(),
            drift: AtomicU64::new(0),
        };
        Ok(DualWrite::from_parts(self.old, self.new, shared))
    }
}

pub(crate) fn builder_invalid(setting: &'static str, reason: String) -> BuildError {
    BuildError::Invalid { setting, reason }
}
