//! A stage move, as observers and metrics see it. Below the stage handle,
//! which makes them.

use crate::rollout::Rollout;
use crate::vocabulary::Stage;

/// A stage move that took place.
#[derive(Debug, Clone, PartialEq)]
pub struct StageChange {
    /// The stage before.
    pub from: Stage,
    /// The stage now.
    pub to: Stage,
    /// The reason given to [`StageHandle::force`](crate::StageHandle::force), if the move was forced.
    pub forced: Option<String>,
    /// The rollout by key in force after the move.
    pub rollout: Option<Rollout>,
}
