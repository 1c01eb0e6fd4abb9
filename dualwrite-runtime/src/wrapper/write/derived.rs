//! The follower's half of a write whose follower gets an operation built
//! from the authoritative result (`#[dual_write(write, follower = path)]`)
//! rather than the call itself: see "Values the authoritative store makes"
//! in the crate docs.

use std::sync::Arc;

use super::cancel::{Owed, OwedOperation};
use super::{FollowerPlan, QueueRefused, WriteGuard};
use crate::op::{replay_on, Key, Operation, Replay};
use crate::queue::QueueError;

/// A built operation, queued under its own key if the caller goes away.
struct Rekeyed<Op> {
    op: Op,
    key: Key,
}

impl<Op: Operation + Clone> OwedOperation for Rekeyed<Op> {
    fn encode(&self, id: crate::OperationId) -> Result<Vec<u8>, QueueError> {
        self.op.encode(id)
    }
    fn method(&self) -> &'static str {
        Operation::method(&self.op)
    }
    fn version(&self) -> u32 {
        Op::VERSION
    }
    fn key(&self) -> Option<Key> {
        Some(self.key.clone())
    }
}

impl WriteGuard<'_> {
    /// From here, a caller going away queues the built operation.
    fn owe_built<Op: Operation + Clone>(&self, op: &Op, key: &Key) {
        self.set_owed(Owed::Follower(Box::new(Rekeyed {
            op: op.clone(),
            key: key.clone(),
        })));
    }

    /// Delivers `op`, built from the authoritative result, to the follower
    /// under `key` (its own method's key): called now, or queued behind the
    /// key's earlier work or when the call fails. It carries this write's
    /// [`OperationId`](crate::OperationId). Call only when
    /// [`has_follower`](Self::has_follower).
    ///
    /// # Errors
    ///
    /// The queue refused it (see [`Self::enqueue`]).
    pub async fn deliver_built<Op, Old, New>(
        &self,
        key: Key,
        op: Op,
        old: &Arc<Old>,
        new: &Arc<New>,
    ) -> Result<(), QueueRefused>
    where
        Op: Replay<Old> + Replay<New> + Clone,
        Old: ?Sized,
        New: ?Sized,
    {
        self.owe_built(&op, &key);
        let reason = match self.plan_for(&key).await {
            FollowerPlan::Call(side) => {
                match self.call_follower(replay_on(&op, side, old, new)).await {
                    Ok(()) => return Ok(()),
                    Err(reason) => reason,
                }
            }
            FollowerPlan::Queue(_, reason) => reason,
        };
        self.enqueue_keyed(self.follower(), &key, &op, reason).await
    }

    /// [`Self::deliver_built`] for blocking traits (no timeout can apply).
    pub fn deliver_built_blocking<Op, Old, New>(
        &self,
        key: Key,
        op: Op,
        old: &Arc<Old>,
        new: &Arc<New>,
    ) -> Result<(), QueueRefused>
    where
        Op: Replay<Old> + Replay<New> + Clone,
        Old: ?Sized,
        New: ?Sized,
    {
        self.owe_built(&op, &key);
        let reason = match futures::executor::block_on(self.plan_for(&key)) {
            FollowerPlan::Call(side) => {
                let call = || futures::executor::block_on(replay_on(&op, side, old, new));
                match self.call_follower_blocking(call) {
                    Ok(()) => return Ok(()),
                    Err(reason) => reason,
                }
            }
            FollowerPlan::Queue(_, reason) => reason,
        };
        futures::executor::block_on(self.enqueue_keyed(self.follower(), &key, &op, reason))
    }
}
