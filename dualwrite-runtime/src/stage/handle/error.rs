//! Why a stage move was refused, and what storing one decided.

use std::time::Duration;

use super::super::source::StageSourceError;
use super::super::window::MismatchRate;
use crate::observe::StageChange;
use crate::queue::{QueueError, TargetStats};
use crate::vocabulary::{Side, Stage};

/// What storing a move decided, to announce once the barrier is released.
pub(super) enum Committed {
    Moved(StageChange),
    Conflict { from: Stage, to: Stage },
    Failed(StageError),
}

/// A stage move that was refused. The stage is unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StageError {
    /// The store about to become authoritative still has queued work.
    #[error(
        "refusing to move from `{from}` to `{to}`: the {side} store would become authoritative while {} pending, {} in-flight and {} dead operations are queued for it; let the worker drain them (retry or drop dead letters), or force the move with a reason",
        backlog.pending, backlog.in_flight, backlog.dead
    )]
    Backlog {
        /// The current stage.
        from: Stage,
        /// The requested stage.
        to: Stage,
        /// The store that would become authoritative.
        side: Side,
        /// Its queued work.
        backlog: TargetStats,
    },
    /// The move stops writes to a store that still has queued work: that
    /// work could be applied after newer writes the store never sees queued
    /// (a written-ahead operation replayed as an orphan, say).
    #[error(
        "refusing to move from `{from}` to `{to}`: the {side} store would stop receiving writes while {} pending, {} in-flight and {} dead operations are queued for it; let the worker drain them (retry or drop dead letters), or force the move with a reason",
        backlog.pending, backlog.in_flight, backlog.dead
    )]
    FollowerBacklog {
        /// The current stage.
        from: Stage,
        /// The requested stage.
        to: Stage,
        /// The store that would stop being written.
        side: Side,
        /// Its queued work.
        backlog: TargetStats,
    },
    /// Leaving `Complete` would make the old store serve data it stopped receiving.
    #[error(
        "refusing to move from `complete` to `{to}`: the old store has not received writes since the move to `complete`; force the move with a reason if you have repaired it"
    )]
    LeavingComplete {
        /// The requested stage.
        to: Stage,
    },
    /// The queue could not be read to check the move.
    #[error("refusing to move from `{from}` to `{to}`: the reconciliation queue could not be checked: {source}")]
    Queue {
        /// The current stage.
        from: Stage,
        /// The requested stage.
        to: Stage,
        /// What the queue said.
        #[source]
        source: QueueError,
    },
    /// Too many recent compared reads disagreed to let the new store serve.
    #[error(
        "refusing to move from `{from}` to `{to}`: {} of the last {} compared reads ({:.2}%) disagreed within {window:?}, above the bound of {:.2}%; fix the cause, reset the comparisons and shadow again, or force the move with a reason",
        rate.disagreements, rate.comparisons, rate.rate() * 100.0, bound * 100.0
    )]
    MismatchRate {
        /// The current stage.
        from: Stage,
        /// The requested stage (or the rollout's).
        to: Stage,
        /// The comparisons in the window.
        rate: MismatchRate,
        /// The guard's bound.
        bound: f64,
        /// The guard's window.
        window: Duration,
    },
    /// The shared stage source could not be read or written, so the move
    /// could not reach the other instances.
    #[error("refusing to move from `{from}` to `{to}`: {source}")]
    Source {
        /// The current stage.
        from: Stage,
        /// The requested stage.
        to: Stage,
        /// What the source said.
        #[source]
        source: StageSourceError,
    },
    /// Another instance moved the shared stage first; this handle now
    /// follows its move.
    #[error("refusing to move from `{from}` to `{to}`: another instance moved the shared stage to `{now}` meanwhile; decide again")]
    Conflict {
        /// The stage this handle was at.
        from: Stage,
        /// The requested stage.
        to: Stage,
        /// The stage the other instance stored.
        now: Stage,
    },
    /// A fenced move was given up: some instances did not acknowledge that
    /// they hold their writes within the fence's patience. Every instance
    /// stays at `from` (the fence was withdrawn).
    #[error("refusing to move from `{from}` to `{to}`: instances {} did not acknowledge the fence within {patience:?} (are they stuck? their acknowledgements expire after the fence's lease); the stage stays `{from}`", .waiting_for.join(", "))]
    Fence {
        /// The current stage.
        from: Stage,
        /// The requested stage.
        to: Stage,
        /// The instances still at an older version.
        waiting_for: Vec<String>,
        /// How long the move waited.
        patience: Duration,
    },
}
