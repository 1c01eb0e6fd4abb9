//! Completions sent together (in a burst, or with a claim in
//! `complete_and_claim`), checked against the model.

use super::*;

impl<Q: ReconciliationQueue> Case<'_, Q> {
    /// The worker's turnover: completes the picked claims (held or not,
    /// possibly one twice) and claims, in one `complete_and_claim`.
    pub(super) async fn turnover(
        &mut self,
        completes: &[Pick],
        namespace: usize,
        limit: usize,
        lease: Wait,
    ) -> Result<Done, String> {
        let completed: Vec<usize> = completes
            .iter()
            .filter_map(|pick| self.pick_lease(*pick))
            .collect();
        let leases: Vec<Lease> = completed
            .iter()
            .map(|index| self.model.leases[*index].lease)
            .collect();
        let turnover = self
            .queue()?
            .complete_and_claim(
                &leases,
                NAMESPACES[namespace],
                limit,
                self.settings.duration(lease),
            )
            .await;
        let completions = self.show_completions(&completed, &turnover.completed);
        let call = format!(
            "complete_and_claim([{}], {}, limit {limit}, lease {})",
            completions.join(", "),
            NAMESPACES[namespace],
            lease.name()
        );
        if turnover.completed.len() != leases.len() {
            return Err(format!(
                "{call}: {} completion results for {} leases",
                turnover.completed.len(),
                leases.len()
            ));
        }
        let claim = match turnover.claim {
            Ok(claim) => claim,
            Err(error) => return Err(format!("{call} -> claim Err({error})")),
        };
        let text = format!("{call} -> claimed {}", self.show_claim(&claim));
        // The completions come first: the claim may hand out the entries
        // they made heads.
        self.take_completions(&completed, &turnover.completed)
            .map_err(|why| format!("{text}: {why}"))?;
        if limit == 0 {
            if !claim.entries.is_empty() || claim.next_ready_in.is_some() {
                return Err(format!("{text}: a limit of 0 claims nothing"));
            }
            return ran(text);
        }
        self.take_claim(namespace, limit, lease, &claim)
            .map_err(|why| format!("{text}: {why}"))?;
        ran(text)
    }

    /// How each completion (of the claims numbered `completed`) was
    /// answered.
    pub(super) fn show_completions(
        &self,
        completed: &[usize],
        results: &[Result<(), QueueError>],
    ) -> Vec<String> {
        completed
            .iter()
            .zip(results)
            .map(|(index, result)| {
                let held = match self.model.lease_status(*index) {
                    LeaseStatus::Current => "held",
                    LeaseStatus::Doubtful => "held before the restart",
                    LeaseStatus::Stale => "lost",
                };
                format!(
                    "complete(lease {index} of #{}, {held}) -> {}",
                    self.model.leases[*index].lease.id,
                    show_result(result)
                )
            })
            .collect()
    }

    /// Checks completions sent together and files them in the model: of
    /// each claim still held exactly one succeeds (at most one of a claim
    /// from before a restart), the others are late.
    pub(super) fn take_completions(
        &mut self,
        completed: &[usize],
        results: &[Result<(), QueueError>],
    ) -> Result<(), String> {
        let mut claims: Vec<usize> = completed.to_vec();
        claims.sort_unstable();
        claims.dedup();
        for index in claims {
            let results: Vec<&Result<(), QueueError>> = completed
                .iter()
                .zip(results)
                .filter(|(other, _)| **other == index)
                .map(|(_, result)| result)
                .collect();
            let id = self.model.leases[index].lease.id;
            let succeeded = results.iter().filter(|result| result.is_ok()).count();
            if let Some(Err(error)) = results
                .iter()
                .find(|result| result.is_err() && !is_lease_lost(result, id))
            {
                return Err(format!("completing lease {index} failed: {error}"));
            }
            let status = self.model.lease_status(index);
            let (fine, expected) = match status {
                LeaseStatus::Current => (succeeded == 1, "exactly one"),
                LeaseStatus::Doubtful => (succeeded <= 1, "at most one"),
                LeaseStatus::Stale => (succeeded == 0, "none"),
            };
            if !fine {
                return Err(format!(
                    "{succeeded} of {} completions of lease {index} succeeded, expected {expected} (the others are late: LeaseLost)",
                    results.len()
                ));
            }
            let serial = self.model.leases[index].serial;
            let entry = &mut self.model.entries[serial];
            if succeeded == 1 {
                entry.removed = true;
            } else if status == LeaseStatus::Doubtful {
                if let State::Leased { lease, .. } = &mut entry.state {
                    *lease = None;
                }
            }
        }
        Ok(())
    }
}
