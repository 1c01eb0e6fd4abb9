//! What comparing one read's two results found: counted by the metrics,
//! reported to observers, judged by the stage guardrails. Below all three.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What comparing one read's two results found.
///
/// Results that are `Result<T, E>` are compared on their `Ok` values; an
/// `Err` on either side is an outcome of its own, and when both sides are
/// `Err` the two errors are compared (see [`BothErrored`](Self::BothErrored)).
/// Other results are compared whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ComparisonOutcome {
    /// Both stores answered `Ok` with values the comparator found equal.
    Match,
    /// Both answered `Ok` with values the comparator found different.
    ValueMismatch,
    /// The serving store answered `Err`, the compared store `Ok`.
    ServingErrored,
    /// The compared store answered `Err` or panicked; the serving store `Ok`.
    ComparedErrored,
    /// Both stores answered `Err` with equal errors (both "not found"):
    /// the stores agree. Errors are compared with the method's
    /// `compare_errors = path`, else with `PartialEq` when the error type
    /// has it, else by their `Display` (or `Debug`) text; an error type with
    /// none of these cannot be told apart and counts as equal.
    BothErrored,
    /// Both stores answered `Err` with errors that differ (or that the
    /// method's `compare_errors` says differ), or the serving store answered
    /// `Err` and the compared store panicked.
    ErrorMismatch,
    /// The compared store did not answer within the bound.
    ComparedTimedOut,
    /// The comparator (or normaliser) panicked.
    ComparatorPanicked,
}

impl ComparisonOutcome {
    /// Every outcome.
    pub const ALL: [ComparisonOutcome; 8] = [
        ComparisonOutcome::Match,
        ComparisonOutcome::ValueMismatch,
        ComparisonOutcome::ServingErrored,
        ComparisonOutcome::ComparedErrored,
        ComparisonOutcome::BothErrored,
        ComparisonOutcome::ErrorMismatch,
        ComparisonOutcome::ComparedTimedOut,
        ComparisonOutcome::ComparatorPanicked,
    ];

    /// The outcome's name in snake case, as used in the `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            ComparisonOutcome::Match => "match",
            ComparisonOutcome::ValueMismatch => "value_mismatch",
            ComparisonOutcome::ServingErrored => "serving_errored",
            ComparisonOutcome::ComparedErrored => "compared_errored",
            ComparisonOutcome::BothErrored => "both_errored",
            ComparisonOutcome::ErrorMismatch => "error_mismatch",
            ComparisonOutcome::ComparedTimedOut => "compared_timed_out",
            ComparisonOutcome::ComparatorPanicked => "comparator_panicked",
        }
    }

    /// Whether this outcome is evidence that the stores may disagree. Only
    /// a match and two equal errors are not: such an outcome is not sent to
    /// [`Observer::on_mismatch`](crate::observe::Observer::on_mismatch), not
    /// logged at `WARN` and not counted in `dualwrite_mismatches_total`. A
    /// timeout or a panicking comparator
    /// proves nothing either way, and the mismatch-rate guardrail counts
    /// what it cannot vouch for against the move.
    pub fn is_disagreement(self) -> bool {
        !matches!(
            self,
            ComparisonOutcome::Match | ComparisonOutcome::BothErrored
        )
    }
}

impl fmt::Display for ComparisonOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
