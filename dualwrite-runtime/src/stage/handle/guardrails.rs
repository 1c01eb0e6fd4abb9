//! The guardrails a move is checked against: queued work, and the recent
//! mismatch rate (see the [handle's docs](super::StageHandle#guardrails)).

use super::super::window::refuses;
use super::{StageError, StageHandle};
use crate::vocabulary::Stage;

impl StageHandle {
    /// Refuses a move that would make a store authoritative, or stop writing
    /// one, while it has queued work.
    pub(super) async fn check_backlog(&self, from: Stage, to: Stage) -> Result<(), StageError> {
        // Queued work must be drained before a store becomes authoritative
        // (it is older than anything the store would then accept), and
        // before a store stops being written (it could land after newer
        // writes the store never sees queued).
        let becomes_authoritative =
            (from.authoritative() != to.authoritative()).then(|| to.authoritative());
        let stops_following = from
            .follower()
            .filter(|side| to.follower() != Some(*side) && to.authoritative() != *side);
        for side in [becomes_authoritative, stops_following]
            .into_iter()
            .flatten()
        {
            let backlog = self
                .backlog(side)
                .await
                .map_err(|source| StageError::Queue { from, to, source })?;
            if backlog.is_empty() {
                continue;
            }
            return Err(if Some(side) == becomes_authoritative {
                StageError::Backlog {
                    from,
                    to,
                    side,
                    backlog,
                }
            } else {
                StageError::FollowerBacklog {
                    from,
                    to,
                    side,
                    backlog,
                }
            });
        }
        Ok(())
    }

    pub(super) fn check_mismatch_rate(&self, from: Stage, to: Stage) -> Result<(), StageError> {
        let guard = self.mismatch_guard();
        let rate = self.inner.comparisons.rate(guard.window_length());
        if refuses(&guard, &rate) {
            return Err(StageError::MismatchRate {
                from,
                to,
                rate,
                bound: guard.bound(),
                window: guard.window_length(),
            });
        }
        Ok(())
    }
}
