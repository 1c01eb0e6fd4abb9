//! What comparing one read's two results found: counted by the metrics,
//! reported to observers, judged by the stage guardrails. Below all three.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What comparing one read's two results found.
///
/// Results that are `Result<T, E>` are compared on their `Ok` values; an
/// `Err` on either side is an outcome of its own. Other results are compared
/// whole.
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
    /// Both stores answered `Err` (or the serving store `Err` and the
    /// compared store panicked).
    BothErrored,
    /// The compared store did not answer within the bound.
    ComparedTimedOut,
    /// The comparator (or normaliser) panicked.
    ComparatorPanicked,
}

impl ComparisonOutcome {
    /// Every outcome.
    pub const ALL: [ComparisonOutcome; 7] = [
        ComparisonOutcome::Match,
        ComparisonOutcome::ValueMismatch,
        ComparisonOutcome::ServingErrored,
        ComparisonOutcome::ComparedErrored,
        ComparisonOutcome::BothErrored,
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
            ComparisonOutcome::ComparedTimedOut => "compared_timed_out",
            ComparisonOutcome::ComparatorPanicked => "comparator_panicked",
        }
    }

    /// Whether this outcome is evidence that the stores may disagree. Only
    /// a match and two errors are not: a timeout or a panicking comparator
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
