//! The worker's loop: attempts in flight, and one queue call at a time that
//! completes the attempts that landed and refills the free slots
//! ([`complete_and_claim`](crate::ReconciliationQueue::complete_and_claim)).
//!
//! An attempt that applied its entry does not complete it itself: it hands
//! its lease back to the loop ("landed"), which sends every landed lease
//! and a claim for the free slots in one call. While that call is out,
//! further attempts land and wait for the next one, so the calls follow the
//! load the way the SQLite queue's group commit does: a drain costs one
//! round trip (one transaction) per turnover of the slots, not one for the
//! completions and another for the claim. Before sending, the loop lets the
//! attempts that are ready finish (yielding to the runtime until no more
//! do), so that a call carries every attempt that was about to land rather
//! than the first.
//!
//! A failed attempt (retry, dead letter) and the other settles are still
//! recorded by the attempt itself, as they are rare.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use futures::future::{BoxFuture, Either};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;

use super::{Outcome, Worker, WorkerReport};
use crate::op::Replay;
use crate::queue::{Lease, Turnover};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Until {
    Stopped,
    Idle,
}

/// The call out to the queue.
type Call = BoxFuture<'static, (Sent, Turnover)>;

/// What a call carried, and when it was sent (the leases of the entries it
/// claims are counted from then).
struct Sent {
    completed: Vec<Lease>,
    limit: usize,
    at: Instant,
}

/// What the loop waited for.
enum Event {
    Turned(Sent, Turnover),
    Finished(Outcome),
    /// Work was queued, or the time to claim again has come.
    Woken,
    /// A stop was asked for.
    Stop,
}

impl<Op, Old, New> Worker<Op, Old, New>
where
    Op: Replay<Old> + Replay<New>,
{
    pub(super) async fn run_loop(&self, until: Until) -> WorkerReport {
        self.running.send_modify(|running| *running += 1);
        // Counted down when the run returns or its future is dropped.
        self.shared
            .workers_started
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _running = super::RunningGuard(&self.running);
        let namespace = Op::NAMESPACE;
        let concurrency = self.shared.worker_concurrency;
        let poll_interval = self.shared.poll_interval;
        // `run` honours a stop requested before it started; `drain` only a
        // stop requested while it drains, so a stopped worker can still be
        // drained (after a shutdown, in tests and tools).
        let mut stop = self.stop.subscribe();
        let baseline = match until {
            Until::Stopped => 0,
            Until::Idle => *stop.borrow(),
        };
        let mut report = WorkerReport::default();
        // Attempts, and the task settling uncertain writes when one runs.
        let mut in_flight = FuturesUnordered::new();
        let mut settling = false;
        // Applied entries whose completion has not been sent yet.
        let mut landed: Vec<Lease> = Vec::new();
        let mut call: Option<Call> = None;
        // Whether the last claim found nothing more ready: claim again only
        // alongside completions, or once woken or `claim_at` has come.
        let mut exhausted = false;
        // Whether the last claim found the queue empty (for `drain`).
        let mut idle = false;
        let mut claim_at = Instant::now();
        let mut queue_failures = 0u32;
        let mut gauges_updated: Option<Instant> = None;
        tracing::debug!(namespace, ?until, "reconciliation worker started");
        loop {
            let stopping = *stop.borrow_and_update() != baseline;
            if !stopping && !settling && self.shared.uncertain.has_unsettled(namespace) {
                settling = true;
                in_flight.push(Either::Right(self.settle_uncertain()));
            }
            if call.is_none() {
                let mut attempts = in_flight.len() - usize::from(settling);
                if attempts > 0 {
                    // Let the attempts that are ready land first.
                    let mut finished = take_ready(&mut in_flight).await;
                    while !finished.is_empty() {
                        for outcome in finished {
                            exhausted &=
                                !self.finished(&mut report, outcome, &mut landed, &mut settling);
                        }
                        tokio::task::yield_now().await;
                        finished = take_ready(&mut in_flight).await;
                    }
                    attempts = in_flight.len() - usize::from(settling);
                }
                let free = concurrency.saturating_sub(attempts);
                let claiming = !stopping
                    && free > 0
                    && (queue_failures == 0 || Instant::now() >= claim_at)
                    && (!exhausted || !landed.is_empty() || Instant::now() >= claim_at);
                if claiming || !landed.is_empty() {
                    let limit = if claiming { free } else { 0 };
                    let completed = std::mem::take(&mut landed);
                    let queue = std::sync::Arc::clone(&self.shared.queue);
                    let lease = self.shared.lease;
                    idle = false;
                    call = Some(Box::pin(async move {
                        let at = Instant::now();
                        let turnover = queue
                            .complete_and_claim(&completed, namespace, limit, lease)
                            .await;
                        let sent = Sent {
                            completed,
                            limit,
                            at,
                        };
                        (sent, turnover)
                    }));
                }
            }
            if call.is_none() && in_flight.is_empty() {
                if stopping || (until == Until::Idle && idle) {
                    break;
                }
                // Idle: refresh the queue-depth gauges, at most once a poll.
                if gauges_updated.is_none_or(|at| at.elapsed() >= poll_interval) {
                    gauges_updated = Some(Instant::now());
                    if let Ok(stats) = self.shared.queue.stats().await {
                        crate::observe::record_queue(&stats);
                    }
                }
            }
            // A claim is wanted once woken: slots are free, none is out.
            let wants_claim = !stopping
                && call.is_none()
                && concurrency > in_flight.len() - usize::from(settling);
            let event = tokio::select! {
                (sent, turnover) = called(&mut call) => Event::Turned(sent, turnover),
                Some(outcome) = in_flight.next(), if !in_flight.is_empty() => Event::Finished(outcome),
                () = self.shared.queued.notified(), if wants_claim => Event::Woken,
                () = tokio::time::sleep_until(claim_at), if wants_claim => Event::Woken,
                _ = stop.changed() => Event::Stop,
            };
            match event {
                Event::Turned(sent, turnover) => {
                    call = None;
                    for (lease, result) in sent.completed.iter().zip(turnover.completed) {
                        let outcome = match result {
                            Ok(()) => Outcome::Applied,
                            Err(error) => {
                                tracing::error!(entry = %lease.id, %error, "reconciliation worker could not complete an applied entry; it is applied again when its lease expires");
                                Outcome::QueueError
                            }
                        };
                        self.count(&mut report, outcome);
                    }
                    match turnover.claim {
                        // Nothing was claimed: nothing learnt.
                        Ok(_) if sent.limit == 0 => {}
                        Ok(claim) => {
                            queue_failures = 0;
                            idle = claim.entries.is_empty() && claim.next_ready_in.is_none();
                            // Fewer than asked for (or none asked): nothing
                            // more is ready until `next_ready_in`.
                            exhausted = claim.next_ready_in != Some(std::time::Duration::ZERO);
                            let wait = claim
                                .next_ready_in
                                .map_or(poll_interval, |ready_in| ready_in.min(poll_interval));
                            claim_at = Instant::now() + wait;
                            for entry in claim.entries {
                                tracing::trace!(namespace, key = %self.shown(&entry.key), method = %entry.method, target = %entry.target, "claimed");
                                in_flight.push(Either::Left(self.attempt_fenced(entry, sent.at)));
                            }
                        }
                        Err(error) => {
                            queue_failures = queue_failures.saturating_add(1);
                            self.count(&mut report, Outcome::QueueError);
                            let wait = self
                                .shared
                                .retry
                                .delay_after(queue_failures)
                                .min(poll_interval * 10);
                            claim_at = Instant::now() + wait;
                            tracing::error!(namespace, %error, retry_in = ?wait, "reconciliation worker could not claim work");
                        }
                    }
                }
                Event::Finished(outcome) => {
                    exhausted &= !self.finished(&mut report, outcome, &mut landed, &mut settling);
                }
                // A failed queue's back-off still holds (`claim_at`).
                Event::Woken => exhausted = false,
                Event::Stop => {}
            }
        }
        tracing::debug!(namespace, ?report, "reconciliation worker stopped");
        report
    }

    /// Files what an attempt (or the settling task) came to. True if it
    /// changed the queue in a way the last claim did not see (a retry
    /// delay, a dead letter, a withdrawal), so that claiming again is worth
    /// it even if that claim found nothing more: the next claim tells when
    /// the retry is due.
    fn finished(
        &self,
        report: &mut WorkerReport,
        outcome: Outcome,
        landed: &mut Vec<Lease>,
        settling: &mut bool,
    ) -> bool {
        match outcome {
            // Its completion goes with a claim anyway.
            Outcome::Landed(lease) => {
                landed.push(lease);
                false
            }
            Outcome::Settled => {
                *settling = false;
                true
            }
            outcome => {
                self.count(report, outcome);
                true
            }
        }
    }
}

/// The outcomes of the attempts that finish when polled now, without
/// waiting for any other.
async fn take_ready<S>(in_flight: &mut S) -> Vec<Outcome>
where
    S: futures::Stream<Item = Outcome> + Unpin,
{
    std::future::poll_fn(|cx| {
        let mut finished = Vec::new();
        while let Poll::Ready(Some(outcome)) = in_flight.poll_next_unpin(cx) {
            finished.push(outcome);
        }
        Poll::Ready(finished)
    })
    .await
}

/// The answer to the call out, or never if none is.
fn called(call: &mut Option<Call>) -> impl Future<Output = (Sent, Turnover)> + '_ {
    std::future::poll_fn(move |cx| match call.as_mut() {
        Some(call) => Pin::new(call).poll(cx),
        None => Poll::Pending,
    })
}
