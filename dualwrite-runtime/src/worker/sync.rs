//! Applying a key-level sync entry ([`records::SYNC_METHOD`]) through the
//! record stores the wrapper was built with, instead of replaying a call.

use super::Worker;
use crate::op::Replay;
use crate::queue::ClaimedEntry;
use crate::records::{self, SyncRequest};

impl<Op, Old, New> Worker<Op, Old, New>
where
    Op: Replay<Old> + Replay<New>,
{
    /// Makes the target's record of the entry's key what the other store
    /// holds, under the key's order guard (no write of this process lands
    /// between the read and the write). The outer `Err` is why the entry
    /// can never be applied (dead-letter it now); the inner result is the
    /// attempt's, retried like a replay's.
    pub(super) async fn apply_sync(
        &self,
        entry: &ClaimedEntry,
    ) -> Result<Result<(), String>, String> {
        let request = SyncRequest::decode(entry.version, &entry.payload)?;
        let Some(pair) = self.shared.records.get(&request.records).cloned() else {
            let known = self.shared.records.names();
            return Err(format!(
                "key-level sync of records `{}` cannot be applied: this wrapper was built without `.sync_records(\"{}\", old, new)` (it knows {}); rebuild it with them, then retry this dead letter",
                request.records,
                request.records,
                if known.is_empty() { "none".to_owned() } else { format!("`{}`", known.join("`, `")) }
            ));
        };
        let _order = self
            .shared
            .locks
            .lock(Op::NAMESPACE, entry.key.clone())
            .await;
        // A sync copies from the other store: never into the store the
        // service now treats as the truth (the stage moved, forced past the
        // guardrail, while the entry waited).
        let stage = self.shared.stage.get();
        if stage.authoritative() == entry.target {
            return Err(format!(
                "key-level sync to the {target} store refused: in stage {stage:?} the {target} store is authoritative, and the sync would copy the {source} store's record over it; drop this dead letter, or queue a sync to the {source} store instead",
                target = entry.target,
                source = entry.target.other(),
            ));
        }
        // Two store calls: bounded like a replay to the authoritative store.
        let bound = self
            .shared
            .lease
            .saturating_sub(self.shared.follower_timeout)
            .max(self.shared.follower_timeout);
        let synced =
            crate::guarded::call(bound, records::sync_key(&pair, entry.target, &request.key)).await;
        Ok(match synced {
            Ok(Ok(outcome)) => {
                tracing::debug!(namespace = %entry.namespace, key = %self.shown(&entry.key), target = %entry.target, ?outcome, "key synced from the authoritative store");
                Ok(())
            }
            Ok(Err(error)) => Err(error.to_string()),
            Err(failure) => Err(failure.to_string()),
        })
    }
}
