//! Settling uncertain writes in the authoritative store out of the queue's
//! order, so that later writes of their keys can go ahead (see the
//! wrapper's `uncertain.rs`).

use super::{decode_parts, Outcome, Worker};
use crate::op::Replay;

impl<Op, Old, New> Worker<Op, Old, New>
where
    Op: Replay<Old> + Replay<New>,
{
    /// Applies uncertain writes of this namespace to the store that was
    /// authoritative, out of the queue's order, so that later writes of
    /// their keys, which wait for it, can go ahead (see the wrapper's
    /// `uncertain.rs`). Their queue entries then go to the follower in
    /// order, as usual.
    pub(super) async fn settle_uncertain(&self) -> Outcome {
        while let Some(write) = self.shared.uncertain.next_to_settle(Op::NAMESPACE) {
            let _order = self
                .shared
                .locks
                .lock(Op::NAMESPACE, write.key.clone())
                .await;
            // An orphan attempt may have settled it while this waited for
            // the key; applying it again now could land after a later write.
            if !self.shared.uncertain.is_pending(write.id) {
                continue;
            }
            let op = match decode_parts::<Op>(
                &write.namespace,
                &write.method,
                write.version,
                &write.payload,
            ) {
                Ok(op) => op,
                Err(refused) => {
                    // The queue entry is dead-lettered when it is claimed.
                    tracing::error!(entry = %write.id, error = %refused.reason, "an uncertain write is not replayed to the authoritative store: {}", refused.what);
                    self.shared.uncertain.settle(write.id, false);
                    continue;
                }
            };
            match self.replay_to_authoritative(&op, write.authoritative).await {
                Ok(()) => {
                    self.shared.uncertain.settle(write.id, true);
                    if let Err(error) = self.shared.queue.settle_orphan(write.id).await {
                        tracing::warn!(entry = %write.id, %error, "could not record that an uncertain write reached the authoritative store; its replay applies it there again (idempotent)");
                    }
                }
                Err(error) => {
                    tracing::warn!(entry = %write.id, key = %self.shown(&write.key), authoritative = %write.authoritative, %error, "could not apply an uncertain write to the authoritative store; trying again");
                    self.shared.uncertain.retry_later(write.id);
                    tokio::time::sleep(self.shared.retry.delay_after(1)).await;
                    return Outcome::Settled;
                }
            }
        }
        Outcome::Settled
    }
}
