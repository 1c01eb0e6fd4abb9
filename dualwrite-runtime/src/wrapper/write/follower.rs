//! The follower's half of a write: deciding between calling it and
//! queueing, calling it with the timeout and panic isolation, queueing.

use std::fmt::Display;
use std::future::Future;

use tokio::time::Instant;
use tracing::Instrument;

use super::cancel::{report_drift, Owed};
use super::{FollowerPlan, QueueRefused, WriteGuard};
use crate::observe::CallOutcome;
use crate::op::{Key, Operation};
use crate::vocabulary::{Delivery, Side};
use crate::worker::Admission;

impl WriteGuard<'_> {
    /// Decides how the follower gets the write. Call only when
    /// [`has_follower`](Self::has_follower).
    pub async fn follower_plan(&self) -> FollowerPlan {
        if self.delivery == Delivery::Journaled {
            // Only reached when writing ahead failed (fail-open): append now.
            return FollowerPlan::Queue(self.follower(), "journaled delivery".to_owned());
        }
        self.plan_for(&self.key).await
    }

    /// How the follower gets a write of `key`, delivered in the request.
    pub(super) async fn plan_for(&self, key: &Key) -> FollowerPlan {
        let side = self.follower();
        if self.shared.key_sync.is_some() {
            // Cross-instance mode: the follower gets a sync of the key from
            // a worker, never a call (see `KeySync`).
            return FollowerPlan::Queue(side, "cross-instance key sync".to_owned());
        }
        let queue = &self.shared.queue;
        let has_work = if queue.certainly_idle(self.namespace, side, key) {
            Ok(false)
        } else {
            queue.has_work(self.namespace, side, key).await
        };
        match has_work {
            Ok(false) => match self.shared.breakers.admit(side) {
                Admission::Call | Admission::Probe => FollowerPlan::Call(side),
                Admission::Skip => FollowerPlan::Queue(
                    side,
                    "the circuit breaker is open: the follower has been failing".to_owned(),
                ),
            },
            Ok(true) => FollowerPlan::Queue(
                side,
                "the key already had queued work for this store".to_owned(),
            ),
            // If the queue cannot say, calling the follower directly could
            // overtake queued work; queueing is the safe choice (and if the
            // queue is down, the append fails and is reported).
            Err(error) => FollowerPlan::Queue(
                side,
                format!("could not check the queue for earlier work: {error}"),
            ),
        }
    }

    fn record_follower_call(&self, outcome: Result<(), String>) -> Result<(), String> {
        match &outcome {
            Ok(()) => {
                self.set_owed(Owed::Nothing);
                self.shared.breakers.record_success(self.follower());
            }
            Err(_) => self.shared.breakers.record_failure(self.follower()),
        }
        outcome
    }

    /// Awaits a follower write with the timeout, catching panics. Returns
    /// why it failed, if it did.
    pub async fn call_follower<F, T, E>(&self, write: F) -> Result<(), String>
    where
        F: Future<Output = Result<T, E>>,
        E: Display,
    {
        let timeout = self.shared.follower_timeout;
        let started = Instant::now();
        let (outcome, kind) = match crate::guarded::call(
            timeout,
            crate::operation_id::scoped(Some(self.operation_id), write)
                .instrument(self.span.clone()),
        )
        .await
        {
            Ok(Ok(_)) => (Ok(()), CallOutcome::Ok),
            Ok(Err(error)) => (Err(error.to_string()), CallOutcome::Error),
            Err(failure) => (Err(failure.to_string()), failure.outcome()),
        };
        self.record(self.follower(), kind, started);
        self.record_follower_call(outcome)
    }

    /// [`Self::call_follower`] for blocking traits (no timeout can apply).
    pub fn call_follower_blocking<F, T, E>(&self, write: F) -> Result<(), String>
    where
        F: FnOnce() -> Result<T, E>,
        E: Display,
    {
        let started = Instant::now();
        let (outcome, kind) = match self.span.in_scope(|| {
            crate::guarded::caught_blocking(|| {
                crate::operation_id::scoped_blocking(Some(self.operation_id), write)
            })
        }) {
            Ok(Ok(_)) => (Ok(()), CallOutcome::Ok),
            Ok(Err(error)) => (Err(error.to_string()), CallOutcome::Error),
            Err(failure) => (Err(failure.to_string()), failure.outcome()),
        };
        self.record(self.follower(), kind, started);
        self.record_follower_call(outcome)
    }

    /// Queues the operation for `side`.
    ///
    /// # Errors
    ///
    /// The queue refused it: the write is lost to the follower. That is
    /// logged at error level, counted in
    /// [`DualWrite::drift_count`](crate::DualWrite::drift_count) and the
    /// `dualwrite_drift_total` metric; a fail-open write still returns the
    /// authoritative result, a fail-closed one this error.
    pub async fn enqueue<Op: Operation>(
        &self,
        side: Side,
        op: &Op,
        reason: String,
    ) -> Result<(), QueueRefused> {
        self.enqueue_keyed(side, &self.key, op, reason).await
    }

    /// [`Self::enqueue`] under `key`.
    pub(super) async fn enqueue_keyed<Op: Operation>(
        &self,
        side: Side,
        key: &Key,
        op: &Op,
        reason: String,
    ) -> Result<(), QueueRefused> {
        tracing::warn!(
            namespace = self.namespace,
            method = self.method,
            key = %key.shown(self.shared.log_keys),
            follower = %side,
            reason = %reason,
            "follower write not applied; queued for reconciliation"
        );
        let appended = match self.entry(side, key, op, reason, false) {
            Ok(entry) => self.shared.queue.append(entry).await,
            Err(error) => Err(error),
        };
        // Queued or refused (and reported), the follower is owed nothing more.
        self.set_owed(Owed::Nothing);
        match appended {
            Ok(_) => {
                self.shared.stage.note_queued(side);
                self.shared.queued.notify_one();
                Ok(())
            }
            Err(error) => {
                report_drift(self.shared, self.namespace, self.method, key, side, &error);
                Err(self.refusal(side, error))
            }
        }
    }
}
