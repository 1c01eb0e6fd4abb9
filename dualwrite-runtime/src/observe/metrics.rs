//! The metric names and labels, and the functions that record them. On the
//! request path every label value is a `&'static str`, and the store calls'
//! handles are registered once per thread and call site, so recording
//! allocates nothing.

use std::time::{Duration, SystemTime};

use super::ComparisonOutcome;
use super::StageChange;
use crate::queue::QueueStats;
use crate::vocabulary::{Side, Stage};

/// The metric names (see the [module docs](super#metrics) for kinds and labels).
pub mod names {
    /// Counter: store calls made by wrapped methods.
    pub const CALLS: &str = "dualwrite_calls_total";
    /// Histogram (seconds): how long each store call took.
    pub const CALL_DURATION: &str = "dualwrite_call_duration_seconds";
    /// Counter: compared reads, by outcome.
    pub const COMPARISONS: &str = "dualwrite_comparisons_total";
    /// Counter: compared reads whose stores did not agree, by outcome.
    pub const MISMATCHES: &str = "dualwrite_mismatches_total";
    /// Counter: detached comparisons not run, by reason.
    pub const COMPARISONS_DROPPED: &str = "dualwrite_comparisons_dropped_total";
    /// Gauge: queued operations per store and state.
    pub const QUEUE_DEPTH: &str = "dualwrite_queue_depth";
    /// Gauge (seconds): age of the oldest pending operation per store.
    pub const QUEUE_OLDEST_PENDING: &str = "dualwrite_queue_oldest_pending_seconds";
    /// Counter: operations dead-lettered.
    pub const DEAD_LETTERS: &str = "dualwrite_dead_letters_total";
    /// Counter: queued operations applied by the worker.
    pub const RECONCILED: &str = "dualwrite_reconciled_total";
    /// Counter: follower writes lost because the queue refused them
    /// (fail-open), by namespace, method and target. Anything above zero
    /// needs a verify-and-repair pass; each loss is also logged at error
    /// level and counted in `DualWrite::drift_count`.
    pub const DRIFT: &str = "dualwrite_drift_total";
    /// Gauge: the current stage's position in `Stage::ALL`.
    pub const STAGE: &str = "dualwrite_stage";
    /// Counter: stage moves.
    pub const STAGE_CHANGES: &str = "dualwrite_stage_changes_total";
    /// Gauge: 1 while the shared stage source cannot be read.
    pub const STAGE_SOURCE_STALE: &str = "dualwrite_stage_source_stale";
}

/// The label keys.
pub mod labels {
    /// The trait's namespace.
    pub const NAMESPACE: &str = "namespace";
    /// The method's name.
    pub const METHOD: &str = "method";
    /// `old` or `new`: the store called.
    pub const SIDE: &str = "side";
    /// `old` or `new`: the store a queued operation is for.
    pub const TARGET: &str = "target";
    /// What happened (a call's or a comparison's outcome).
    pub const OUTCOME: &str = "outcome";
    /// Why a detached comparison was dropped.
    pub const REASON: &str = "reason";
    /// A queue entry's state: `pending`, `in_flight` or `dead`.
    pub const STATE: &str = "state";
    /// The stage before a move.
    pub const FROM: &str = "from";
    /// The stage after a move.
    pub const TO: &str = "to";
    /// `true` for a forced move.
    pub const FORCED: &str = "forced";
}

/// How one store call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallOutcome {
    Ok,
    Error,
    Panic,
    Timeout,
}

impl CallOutcome {
    fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::Error => "error",
            CallOutcome::Panic => "panic",
            CallOutcome::Timeout => "timeout",
        }
    }
}

/// One store call: counted by outcome, timed unless it timed out.
///
/// This runs on every store call of every wrapped method, so it does not
/// build the metric keys (a label `Vec` each, hashed by the recorder) each
/// time: the handles are registered once per thread and call site and kept
/// (see [`CallHandles`]).
pub(crate) fn record_call(
    namespace: &'static str,
    method: &'static str,
    side: Side,
    outcome: CallOutcome,
    elapsed: Option<Duration>,
) {
    CALL_HANDLES.with(|handles| {
        handles
            .borrow_mut()
            .get(namespace, method, side, outcome)
            .record(elapsed);
    });
}

/// The counter and histogram of one call site (namespace, method, side and
/// outcome); a timed-out call has no duration.
struct CallSite {
    calls: ::metrics::Counter,
    duration: Option<::metrics::Histogram>,
}

impl CallSite {
    fn register(
        namespace: &'static str,
        method: &'static str,
        side: Side,
        outcome: CallOutcome,
    ) -> Self {
        CallSite {
            calls: ::metrics::counter!(
                names::CALLS,
                labels::NAMESPACE => namespace,
                labels::METHOD => method,
                labels::SIDE => side.as_str(),
                labels::OUTCOME => outcome.as_str(),
            ),
            duration: (outcome != CallOutcome::Timeout).then(|| {
                ::metrics::histogram!(
                    names::CALL_DURATION,
                    labels::NAMESPACE => namespace,
                    labels::METHOD => method,
                    labels::SIDE => side.as_str(),
                )
            }),
        }
    }

    fn record(&self, elapsed: Option<Duration>) {
        self.calls.increment(1);
        if let (Some(duration), Some(elapsed)) = (&self.duration, elapsed) {
            duration.record(elapsed.as_secs_f64());
        }
    }
}

/// A call site by its `&'static str`s' addresses and lengths, the side and
/// the outcome: comparing those is enough, and costs no string hashing.
type SiteKey = (usize, usize, usize, usize, u8);

/// The metric handles this thread registered, for the recorder that was in
/// effect (by its address). When the recorder in effect changes (a global
/// recorder installed after the first calls, or a test's local recorder),
/// the handles are registered again with the new one, so no call is
/// counted by a recorder that is no longer in effect. (A local recorder
/// dropped and replaced by another at the same address on the same thread
/// is indistinguishable from it; the global recorder and the no-op one are
/// never replaced.)
#[derive(Default)]
struct CallHandles {
    recorder: usize,
    sites: std::collections::HashMap<SiteKey, CallSite, foldhash::fast::RandomState>,
}

thread_local! {
    static CALL_HANDLES: std::cell::RefCell<CallHandles> = std::cell::RefCell::default();
}

impl CallHandles {
    fn get(
        &mut self,
        namespace: &'static str,
        method: &'static str,
        side: Side,
        outcome: CallOutcome,
    ) -> &CallSite {
        let recorder =
            ::metrics::with_recorder(|recorder| std::ptr::from_ref(recorder).cast::<()>() as usize);
        if recorder != self.recorder {
            self.sites.clear();
            self.recorder = recorder;
        }
        let key = (
            namespace.as_ptr() as usize,
            namespace.len(),
            method.as_ptr() as usize,
            method.len(),
            (side as u8) << 4 | outcome as u8,
        );
        self.sites
            .entry(key)
            .or_insert_with(|| CallSite::register(namespace, method, side, outcome))
    }
}

pub(crate) fn record_comparison(
    namespace: &'static str,
    method: &'static str,
    outcome: ComparisonOutcome,
) {
    ::metrics::counter!(
        names::COMPARISONS,
        labels::NAMESPACE => namespace,
        labels::METHOD => method,
        labels::OUTCOME => outcome.as_str(),
    )
    .increment(1);
    if outcome.is_disagreement() {
        ::metrics::counter!(
            names::MISMATCHES,
            labels::NAMESPACE => namespace,
            labels::METHOD => method,
            labels::OUTCOME => outcome.as_str(),
        )
        .increment(1);
    }
}

pub(crate) fn record_dropped(namespace: &'static str, method: &'static str, reason: &'static str) {
    ::metrics::counter!(
        names::COMPARISONS_DROPPED,
        labels::NAMESPACE => namespace,
        labels::METHOD => method,
        labels::REASON => reason,
    )
    .increment(1);
}

pub(crate) fn record_stage(stage: Stage) {
    ::metrics::gauge!(names::STAGE).set(f64::from(stage.to_u8()));
}

pub(crate) fn record_stage_change(change: &StageChange) {
    ::metrics::counter!(
        names::STAGE_CHANGES,
        labels::FROM => change.from.as_str(),
        labels::TO => change.to.as_str(),
        labels::FORCED => if change.forced.is_some() { "true" } else { "false" },
    )
    .increment(1);
    record_stage(change.to);
}

pub(crate) fn record_stage_source_stale(stale: bool) {
    ::metrics::gauge!(names::STAGE_SOURCE_STALE).set(if stale { 1.0 } else { 0.0 });
}

/// Sets the queue gauges from a snapshot of the queue's stats.
pub(crate) fn record_queue(stats: &QueueStats) {
    let now = SystemTime::now();
    for side in [Side::Old, Side::New] {
        let target = stats.target(side);
        for (state, count) in [
            ("pending", target.pending),
            ("in_flight", target.in_flight),
            ("dead", target.dead),
        ] {
            ::metrics::gauge!(
                names::QUEUE_DEPTH,
                labels::TARGET => side.as_str(),
                labels::STATE => state,
            )
            .set(count as f64);
        }
        let age = target
            .oldest_pending
            .and_then(|oldest| now.duration_since(oldest).ok())
            .unwrap_or_default();
        ::metrics::gauge!(names::QUEUE_OLDEST_PENDING, labels::TARGET => side.as_str())
            .set(age.as_secs_f64());
    }
}

/// A queued operation applied by the worker.
pub(crate) fn record_reconciled(namespace: &str, method: &str, target: Side) {
    ::metrics::counter!(
        names::RECONCILED,
        labels::NAMESPACE => namespace.to_owned(),
        labels::METHOD => method.to_owned(),
        labels::TARGET => target.as_str(),
    )
    .increment(1);
}

/// A follower write the queue refused (fail-open: the follower misses it).
pub(crate) fn record_drift(namespace: &'static str, method: &'static str, target: Side) {
    ::metrics::counter!(
        names::DRIFT,
        labels::NAMESPACE => namespace,
        labels::METHOD => method,
        labels::TARGET => target.as_str(),
    )
    .increment(1);
}

/// An operation dead-lettered by the worker.
pub(crate) fn record_dead_letter(namespace: &str, method: &str, target: Side) {
    ::metrics::counter!(
        names::DEAD_LETTERS,
        labels::NAMESPACE => namespace.to_owned(),
        labels::METHOD => method.to_owned(),
        labels::TARGET => target.as_str(),
    )
    .increment(1);
}
