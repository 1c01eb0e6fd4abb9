//! The worker's turnover in one round trip: a batch of nothing but
//! completions and one claim (what
//! [`complete_and_claim`](crate::queue::ReconciliationQueue::complete_and_claim)
//! sends) runs as a single statement list, from `BEGIN IMMEDIATE` to
//! `COMMIT`, like the write-ahead path of journaled writes.

use super::claim::ClaimQuery;
use super::index::IndexDelta;
use super::request::Write;
use super::settle::{answer_completions, bind_removal, completed_leases, removed};
use super::statements::turnover_sql;
use super::values::now_ms;
use super::writer::Writer;

impl Writer {
    /// Whether `writes` are a turnover: completions and at most one claim,
    /// and at least one of either.
    pub(super) fn is_turnover(writes: &[Write]) -> bool {
        let claims = writes
            .iter()
            .filter(|write| matches!(write, Write::Claim { .. }))
            .count();
        !writes.is_empty()
            && claims <= 1
            && writes
                .iter()
                .all(|write| matches!(write, Write::Complete(..) | Write::Claim { .. }))
    }

    /// Runs a turnover (see [`is_turnover`](Self::is_turnover)) and commits
    /// it, setting each write's result. A claimed row that cannot be read
    /// is dead-lettered afterwards, in a transaction of its own: if that
    /// fails, the row stays leased until its lease expires, and is claimed
    /// (and dead-lettered) again.
    pub(super) async fn turnover(
        &mut self,
        writes: &mut [Write],
        delta: &mut IndexDelta,
    ) -> Result<(), sqlx::Error> {
        let now = now_ms();
        let leases = completed_leases(writes);
        let removal_turn = self.next_turn();
        let claim = writes.iter().find_map(|write| match write {
            Write::Claim {
                namespace,
                limit,
                lease,
                ..
            } => Some((namespace.clone(), *limit, *lease)),
            _ => None,
        });
        let claim_turn = self.next_turn();
        let claim = claim.as_ref().map(|(namespace, limit, lease)| ClaimQuery {
            namespace,
            limit: *limit,
            lease: *lease,
            now,
            turn: claim_turn,
        });
        let mut query = sqlx::query(turnover_sql(leases.is_some(), claim.is_some()));
        if let Some(leases) = &leases {
            query = bind_removal(query, now, removal_turn, leases);
        }
        if let Some(claim) = &claim {
            query = claim.bind(query);
        }
        let rows = query.fetch_all(&mut self.conn).await?;
        answer_completions(writes, &mut removed(&rows, delta));
        let Some(claim) = &claim else {
            return Ok(());
        };
        let (claimed, unreadable) = claim.claimed(&rows);
        let mut claimed = Some(claimed);
        for write in writes.iter_mut() {
            if let Write::Claim { reply, .. } = write {
                reply.set(Ok(claimed.take().unwrap_or_default()));
            }
        }
        if !unreadable.is_empty() {
            self.begun = false;
            let dead = async {
                self.begin().await?;
                self.dead_letter_unreadable(&unreadable, now).await?;
                sqlx::query("COMMIT").execute(&mut self.conn).await
            };
            if let Err(error) = dead.await {
                tracing::warn!(path = %self.path.display(), %error, "could not dead-letter unreadable claimed rows; they are claimed again when their leases expire");
                self.rollback().await;
            }
        }
        Ok(())
    }
}
