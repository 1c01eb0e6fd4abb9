//! What a migration lets you see: observers, `metrics` and `tracing`.
//!
//! # Observers
//!
//! An [`Observer`] is told about the events an operator acts on: a compared
//! read whose stores disagreed ([`ComparisonReport`]), an operation the
//! reconciliation worker gave up on ([`DeadLetterReport`]), a stage move
//! ([`StageChange`]), and a shared stage source that cannot be read
//! ([`StageSourceReport`]). Publish them to a channel, a pager, a table of
//! mismatched keys for a later repair. Register observers with
//! [`Builder::observer`](crate::Builder::observer); every wrapper starts with
//! a [`TracingObserver`], which turns them into `tracing` events.
//!
//! Observer methods are called on the request path (or the worker's, or a
//! detached comparison's task) and must return quickly: hand slow work to a
//! channel. A panic in an observer is caught and logged; it never reaches the
//! caller.
//!
//! Argument values never appear in reports, spans, events or metrics. The
//! exceptions are explicit: the ordering key (`key = ..`) is in comparison
//! and dead-letter reports given to observers, because a mismatch is only
//! actionable with it (an observer you register has opted in); a read
//! without `key` is identified instead by a stable hash of its arguments
//! ([`ComparisonReport::arguments_hash`]), and the arguments themselves are
//! in its report only when the method is marked `report_values`; the values
//! the stores returned are in a comparison report only for methods marked
//! `report_values` (their output must be `Debug`). Keys are made from
//! arguments, so logs, errors and the default [`TracingObserver`] show a key
//! by its stable [fingerprint](crate::Key::fingerprint) (`#` and 16 hex
//! digits, the same in every process) unless the wrapper is built with
//! [`log_keys(true)`](crate::Builder::log_keys); likewise, the default
//! observer logs a keyless read's arguments (with `report_values`) only
//! under `log_keys(true)`, and otherwise their hash alone.
//!
//! # Metrics
//!
//! Recorded through the [`metrics`](https://docs.rs/metrics) facade: install
//! any recorder (Prometheus, StatsD, OpenTelemetry) and these appear. The
//! names are constants in [`names`], the label keys in [`labels`].
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `dualwrite_calls_total` | counter | `namespace`, `method`, `side`, `outcome` | store calls made by wrapped methods; `outcome` is `ok`, `error`, `panic` or `timeout` |
//! | `dualwrite_call_duration_seconds` | histogram | `namespace`, `method`, `side` | how long each store call took (a timed-out call is not recorded) |
//! | `dualwrite_comparisons_total` | counter | `namespace`, `method`, `outcome` | compared reads, by [`ComparisonOutcome::as_str`] (`match`, `value_mismatch`, ...) |
//! | `dualwrite_mismatches_total` | counter | `namespace`, `method`, `outcome` | compared reads whose stores did not agree: every outcome but `match` and `both_errored` (see [`ComparisonOutcome::is_disagreement`]) |
//! | `dualwrite_comparisons_dropped_total` | counter | `namespace`, `method`, `reason` | detached comparisons not run: `saturated` (the concurrency bound was reached), `no_runtime` (no tokio runtime to run them on), `cancelled` (the caller gave up before the serving store answered) |
//! | `dualwrite_queue_depth` | gauge | `target`, `state` | queued operations for a store, by `state`: `pending`, `in_flight`, `dead` |
//! | `dualwrite_queue_oldest_pending_seconds` | gauge | `target` | age of the oldest pending operation (0 when none) |
//! | `dualwrite_dead_letters_total` | counter | `namespace`, `method`, `target` | operations dead-lettered by the worker |
//! | `dualwrite_reconciled_total` | counter | `namespace`, `method`, `target` | queued operations the worker applied |
//! | `dualwrite_drift_total` | counter | `namespace`, `method`, `target` | follower writes lost because the queue refused them (fail-open); each needs a repair |
//! | `dualwrite_stage` | gauge | - | the current stage, as its position in [`Stage::ALL`](crate::Stage::ALL) (`off` = 0 ... `complete` = 5) |
//! | `dualwrite_stage_changes_total` | counter | `from`, `to`, `forced` | stage moves; `forced` is `true` or `false` |
//! | `dualwrite_stage_source_stale` | gauge | - | 1 while the shared stage source cannot be read (the last known stage is kept), else 0 |
//!
//! `side` and `target` are `old` or `new`; `namespace` and `method` name the
//! trait and method as the attribute knows them. Queue gauges are refreshed
//! by [`DualWrite::record_queue_metrics`](crate::DualWrite::record_queue_metrics).
//!
//! # Tracing
//!
//! Every call of a wrapped read runs in an `info` span named
//! `dualwrite.read` with the fields `namespace`, `method`, `stage` (the stage
//! the call was routed by, after rollout by key), `side` (the serving store)
//! and `compared` (the other store, or `none` when the call is not compared).
//! A detached comparison runs in its own span, `dualwrite.detached_compare`,
//! which follows from the call's. Matches are `debug` events, disagreements
//! `warn` events (from the [`TracingObserver`]).

mod change;
mod metrics;
mod observers;
mod outcome;

pub use self::metrics::{labels, names};
pub use observers::TracingObserver;

pub(crate) use self::metrics::{
    record_call, record_comparison, record_dropped, record_queue, record_stage,
    record_stage_change, record_stage_source_stale, CallOutcome,
};
// For the reconciliation worker: `record_reconciled` when it applies a queued
// operation; dead letters go through `Observers::dead_letter`, which counts.
pub(crate) use self::metrics::record_reconciled;
// For the write path: a follower write the queue refused.
pub(crate) use self::metrics::record_drift;
pub(crate) use observers::{merged as merged_observers, Observers};

pub use change::StageChange;
pub use outcome::ComparisonOutcome;

use std::time::Duration;

use crate::op::Key;
use crate::vocabulary::{Side, Stage};

/// Told about the events of a migration. Every method has an empty default,
/// so implement only what you publish.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use dualwrite_runtime::observe::{ComparisonReport, Observer};
///
/// /// Collects the keys whose stores disagreed, for a repair job.
/// #[derive(Default)]
/// struct MismatchedKeys(Mutex<Vec<String>>);
///
/// impl Observer for MismatchedKeys {
///     fn on_mismatch(&self, report: &ComparisonReport) {
///         if let Some(key) = &report.key {
///             self.0.lock().unwrap().push(key.to_string());
///         }
///     }
/// }
/// ```
pub trait Observer: Send + Sync + 'static {
    /// A compared read whose stores did not agree: every outcome that
    /// [is a disagreement](ComparisonOutcome::is_disagreement), so neither
    /// [`Match`](ComparisonOutcome::Match) nor two equal errors
    /// ([`BothErrored`](ComparisonOutcome::BothErrored)). The caller
    /// already has (or will get) the serving store's result; nothing here
    /// can change it.
    fn on_mismatch(&self, report: &ComparisonReport) {
        let _ = report;
    }

    /// An operation the reconciliation worker gave up on: its retry budget
    /// ran out, or it could not be decoded. It waits in the queue for an
    /// operator to retry or drop it.
    fn on_dead_letter(&self, report: &DeadLetterReport) {
        let _ = report;
    }

    /// A stage move, made here or (through a shared stage source) by
    /// another instance. A forced move carries its reason.
    fn on_stage_change(&self, change: &StageChange) {
        let _ = change;
    }

    /// The shared stage source could not be read; this instance keeps the
    /// stage it last knew until it can. Called once when the source becomes
    /// unreadable, not on every failed poll.
    fn on_stage_source_error(&self, report: &StageSourceReport) {
        let _ = report;
    }
}

/// One compared read, as its observers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ComparisonReport {
    /// The trait (its namespace).
    pub namespace: &'static str,
    /// The read method.
    pub method: &'static str,
    /// The call's key (`key = ..`), if the method has one.
    pub key: Option<Key>,
    /// The stage the call was routed by: the base stage, or the rollout's
    /// stage for a key in the rollout.
    pub stage: Stage,
    /// The store whose result the caller got.
    pub serving: Side,
    /// The store it was compared against.
    pub compared: Side,
    /// What the comparison found.
    pub outcome: ComparisonOutcome,
    /// How long the serving store took.
    pub serving_elapsed: Duration,
    /// How long the compared store took, if it answered in time.
    pub compared_elapsed: Option<Duration>,
    /// Whether the comparison ran detached, after the caller had its result.
    pub detached: bool,
    /// The serving store's result (`{:?}`), for methods marked `report_values`.
    pub serving_value: Option<String>,
    /// The compared store's result (`{:?}`, or its panic), for methods marked
    /// `report_values`.
    pub compared_value: Option<String>,
    /// For a read without `key`, what identifies the call instead: a stable
    /// hash of its arguments (64-bit FNV-1a, spread by MurmurHash3's
    /// `fmix64`, of the [`arguments`](Self::arguments) text; the same in
    /// every process, platform and release for the same arguments). Logs
    /// show it as `#` and 16 hex digits. `None` for a read with `key`.
    pub arguments_hash: Option<u64>,
    /// For a read without `key` marked `report_values`, its arguments as a
    /// JSON array: each argument's JSON when its type is `serde::Serialize`,
    /// else its `Debug` text as a JSON string, else `null` (such an
    /// argument does not tell calls apart). An argument whose JSON depends
    /// on iteration order (a `HashMap`) can hash differently from one
    /// process to the next.
    pub arguments: Option<String>,
}

/// An operation dead-lettered by the reconciliation worker.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetterReport {
    /// The trait (its namespace).
    pub namespace: String,
    /// The write method.
    pub method: String,
    /// The store that could not apply it.
    pub target: Side,
    /// Its ordering key.
    pub key: Key,
    /// How many times it was tried.
    pub attempts: u32,
    /// The last error (the store's error text, or the decode error).
    pub error: String,
}

impl DeadLetterReport {
    /// A report of `method` on `key` dead-lettered for `target` after
    /// `attempts` tries, with its last `error`.
    pub fn new(
        namespace: impl Into<String>,
        method: impl Into<String>,
        target: Side,
        key: Key,
        attempts: u32,
        error: impl Into<String>,
    ) -> Self {
        DeadLetterReport {
            namespace: namespace.into(),
            method: method.into(),
            target,
            key,
            attempts,
            error: error.into(),
        }
    }
}

/// The shared stage source could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StageSourceReport {
    /// The stage this instance keeps using meanwhile.
    pub kept_stage: Stage,
    /// Why the source could not be read.
    pub error: String,
}
