//! Keeping a claim while an attempt runs: renewals, and the fence that
//! drops an attempt whose lease is gone (see the [module docs](super)).

use crate::queue::{Lease, QueueError, ReconciliationQueue};

/// Resolves when the attempt must stop: the claim was lost, or the lease
/// runs out by this process's clock before a renewal got through. Renews
/// every third of the lease until then.
pub(super) async fn fence(
    queue: &dyn ReconciliationQueue,
    lease: Lease,
    length: std::time::Duration,
    claimed_at: tokio::time::Instant,
) -> String {
    let mut deadline = claimed_at + length;
    let every = length / 3;
    loop {
        let next = (tokio::time::Instant::now() + every).min(deadline);
        tokio::time::sleep_until(next).await;
        if tokio::time::Instant::now() >= deadline {
            return "the lease ran out before it could be renewed".to_owned();
        }
        let asked_at = tokio::time::Instant::now();
        match queue.renew(lease, length).await {
            Ok(()) => deadline = asked_at + length,
            Err(QueueError::LeaseLost(_)) => {
                return "the claim was lost (the entry was claimed again or withdrawn)".to_owned()
            }
            Err(error) => {
                tracing::warn!(entry = %lease.id, %error, "could not renew a lease; trying again")
            }
        }
    }
}
