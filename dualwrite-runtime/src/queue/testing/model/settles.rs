//! Settling claims (complete, retry, release, dead-letter, renew) and
//! dead letters (retry, drop), checked against the model.

use super::*;

impl<Q: ReconciliationQueue> Case<'_, Q> {
    /// A claim: preferably one still held.
    pub(super) fn pick_lease(&self, pick: Pick) -> Option<usize> {
        let all: Vec<usize> = (0..self.model.leases.len()).collect();
        let held: Vec<usize> = all
            .iter()
            .copied()
            .filter(|index| self.model.lease_status(*index) != LeaseStatus::Stale)
            .collect();
        choose(pick, &held, &all)
    }

    pub(super) async fn settle(
        &mut self,
        number: usize,
        action: Action,
        index: usize,
    ) -> Result<Done, String> {
        let lease = self.model.leases[index].lease;
        let serial = self.model.leases[index].serial;
        if let Action::SettleOrphan = action {
            return self
                .settle_orphan(serial, &format!(" (claimed as lease {index})"))
                .await;
        }
        let status = self.model.lease_status(index);
        let id = lease.id;
        let error = format!("error at step {number}");
        let held = match status {
            LeaseStatus::Current => "held",
            LeaseStatus::Doubtful => "held before the restart",
            LeaseStatus::Stale => "lost",
        };
        let queue = self.queue()?;
        let (call, result): (String, Result<Option<bool>, QueueError>) = match action {
            Action::Complete => (
                format!("complete(lease {index} of #{id}, {held})"),
                queue.complete(lease).await.map(|()| None),
            ),
            Action::Renew(wait) => (
                format!("renew(lease {index} of #{id}, {held}, for {})", wait.name()),
                queue
                    .renew(lease, self.settings.duration(wait))
                    .await
                    .map(|()| None),
            ),
            Action::RetryLater(wait) => (
                format!(
                    "retry_later(lease {index} of #{id}, {held}, {error:?}, delay {})",
                    wait.name()
                ),
                queue
                    .retry_later(lease, &error, self.settings.duration(wait))
                    .await
                    .map(|()| None),
            ),
            Action::Release => (
                format!("release(lease {index} of #{id}, {held})"),
                queue.release(lease).await.map(|()| None),
            ),
            Action::DeadLetter => (
                format!("dead_letter(lease {index} of #{id}, {held}, {error:?})"),
                queue.dead_letter(lease, &error).await.map(|()| None),
            ),
            // Handled by `settle_orphan` above.
            Action::SettleOrphan => return Err("settle_orphan is not a settle".to_owned()),
            Action::HasLater => (
                format!("has_later_entries(lease {index} of #{id}, {held})"),
                queue.has_later_entries(lease).await.map(Some),
            ),
        };
        let text = format!("{call} -> {}", show_result(&result));
        match (status, &result) {
            (LeaseStatus::Stale, _) if is_lease_lost(&result, id) => return ran(text),
            // Not specified for a claim no longer held: either answer.
            (LeaseStatus::Stale, Ok(_)) if matches!(action, Action::HasLater) => return ran(text),
            (LeaseStatus::Stale, Ok(_)) => {
                return Err(format!(
                    "{text}: the claim is no longer held, expected LeaseLost"
                ))
            }
            (LeaseStatus::Doubtful, _) if is_lease_lost(&result, id) => {
                if let State::Leased { lease, .. } = &mut self.model.entries[serial].state {
                    *lease = None;
                }
                return ran(text);
            }
            (_, Err(error)) => {
                return Err(format!(
                    "{text}: the claim is held, expected Ok, got {error}"
                ))
            }
            _ => {}
        }
        self.model.leases[index].doubtful = false;
        let deadline_of = |wait: Wait| self.model.deadline(wait);
        let new_state = match action {
            Action::Complete => None,
            Action::Renew(wait) => Some(State::Leased {
                until: deadline_of(wait),
                lease: Some(index),
            }),
            Action::RetryLater(wait) => Some(State::Pending(deadline_of(wait))),
            Action::Release => Some(State::Pending(Deadline::Passed)),
            Action::DeadLetter => Some(State::Dead { died_at: None }),
            Action::SettleOrphan => return ran(text),
            Action::HasLater => {
                let expected = self.model.has_later(serial);
                if let Ok(Some(later)) = result {
                    // Without exact key work, a superset of the key may
                    // answer: `true` is allowed, `false` only if right.
                    let superset = later && !self.model.profile.exact_key_work;
                    if later != expected && !superset {
                        return Err(format!("{text}: expected {expected}"));
                    }
                }
                return ran(text);
            }
        };
        let entry = &mut self.model.entries[serial];
        match new_state {
            None => entry.removed = true,
            Some(state) => {
                if matches!(action, Action::RetryLater(_) | Action::DeadLetter) {
                    entry.attempts += 1;
                    entry.last_error = error;
                }
                entry.state = state;
            }
        }
        ran(text)
    }

    /// An entry to settle as an orphan: preferably one claimed as an
    /// orphan (or prepared).
    pub(super) fn pick_orphan(&self, pick: Pick) -> Option<usize> {
        let orphans: Vec<usize> = self
            .model
            .live()
            .filter(|(_, entry)| entry.orphaned || matches!(entry.state, State::Prepared(_)))
            .map(|(serial, _)| serial)
            .collect();
        let all: Vec<usize> = (0..self.model.entries.len()).collect();
        choose(pick, &orphans, &all)
    }

    pub(super) async fn settle_orphan(&mut self, serial: usize, how: &str) -> Result<Done, String> {
        let entry = &self.model.entries[serial];
        let id = entry.id;
        let before = entry.state_name();
        let orphaned = if entry.orphaned { ", orphaned" } else { "" };
        let result = self.queue()?.settle_orphan(id).await;
        let text = format!(
            "settle_orphan(#{id}{how}, {before}{orphaned}) -> {}",
            show_result(&result)
        );
        if let Err(error) = result {
            return Err(format!("{text}: expected Ok, got {error}"));
        }
        let entry = &mut self.model.entries[serial];
        if !entry.removed {
            // Applied to the store that was authoritative: no longer an
            // orphan, and a prepared entry is pending.
            entry.orphaned = false;
            if let State::Prepared(_) = entry.state {
                entry.state = State::Pending(Deadline::Passed);
            }
        }
        ran(text)
    }

    pub(super) async fn dead_op(&mut self, pick: Pick, retry: bool) -> Result<Done, String> {
        let name = if retry { "retry_dead" } else { "drop_dead" };
        let dead: Vec<usize> = self
            .model
            .live()
            .filter(|(_, entry)| matches!(entry.state, State::Dead { .. }))
            .map(|(serial, _)| serial)
            .collect();
        // Any entry ever made, or (the last choice) an id never used.
        let all: Vec<usize> = (0..=self.model.entries.len()).collect();
        let Some(choice) = choose(pick, &dead, &all) else {
            return skipped(format!("{name} (skipped: no dead letter to pick)"));
        };
        let serial = (choice < self.model.entries.len()).then_some(choice);
        let (id, is_dead, before) = match serial {
            Some(serial) => {
                let entry = &self.model.entries[serial];
                let before = entry.state_name();
                (entry.id, dead.contains(&serial), before)
            }
            None => (UNKNOWN_ID, false, "never existed"),
        };
        let result = if retry {
            self.queue()?.retry_dead(id).await
        } else {
            self.queue()?.drop_dead(id).await
        };
        let text = format!("{name}(#{id}, {before}) -> {}", show_result(&result));
        match (is_dead, &result) {
            (true, Ok(())) => {}
            (true, Err(error)) => {
                return Err(format!("{text}: it is dead, expected Ok, got {error}"))
            }
            (false, Err(QueueError::NotDead(refused))) if *refused == id => return ran(text),
            (false, _) => return Err(format!("{text}: it is not dead, expected NotDead(#{id})")),
        }
        if let Some(serial) = serial {
            let entry = &mut self.model.entries[serial];
            if retry {
                entry.attempts = 0;
                entry.state = State::Pending(Deadline::Passed);
                if !self.model.profile.blocking_dead_letters {
                    // It did not block its key: it goes back at the end of
                    // the key's line (the brokers publish it again).
                    entry.order = self.model.next_order;
                    self.model.next_order += 1;
                }
            } else {
                entry.removed = true;
            }
        }
        ran(text)
    }

    // -- whole-queue checks ------------------------------------------------
}
