//! Claims, checked against the model: heads only, in order, every field.

use super::*;

impl<Q: ReconciliationQueue> Case<'_, Q> {
    pub(super) async fn claim(
        &mut self,
        namespace: usize,
        limit: usize,
        lease: Wait,
    ) -> Result<Done, String> {
        let text = format!(
            "claim({}, limit {limit}, lease {})",
            NAMESPACES[namespace],
            lease.name()
        );
        let result = self
            .queue()?
            .claim(NAMESPACES[namespace], limit, self.settings.duration(lease))
            .await;
        let claim = match result {
            Ok(claim) => claim,
            Err(error) => return Err(format!("{text} -> Err({error})")),
        };
        let text = format!("{text} -> {}", self.show_claim(&claim));
        self.take_claim(namespace, limit, lease, &claim)
            .map_err(|why| format!("{text}: {why}"))?;
        ran(text)
    }

    /// Checks a claim the backend made against the model, and files its
    /// leases in the model.
    pub(super) fn take_claim(
        &mut self,
        namespace: usize,
        limit: usize,
        lease: Wait,
        claim: &Claim,
    ) -> Result<(), String> {
        self.check_claim(namespace, limit, claim)?;
        let until = self.model.deadline(lease);
        for claimed in &claim.entries {
            let Some(serial) = self.model.serial_of(claimed.lease.id) else {
                continue;
            };
            let index = self.model.leases.len();
            self.model.leases.push(LeaseRecord {
                lease: claimed.lease,
                serial,
                doubtful: false,
            });
            let entry = &mut self.model.entries[serial];
            entry.orphaned = claimed.orphaned;
            entry.state = State::Leased {
                until,
                lease: Some(index),
            };
        }
        Ok(())
    }

    pub(super) fn show_claim(&self, claim: &Claim) -> String {
        let mut shown = String::from("[");
        for (n, claimed) in claim.entries.iter().enumerate() {
            if n > 0 {
                shown.push_str(", ");
            }
            let lease = self.model.leases.len() + n;
            let _ = write!(
                shown,
                "#{} {}/{} as lease {lease} (token {}, attempts {}{})",
                claimed.lease.id,
                claimed.target,
                claimed.key.as_str(),
                claimed.lease.token,
                claimed.attempts,
                if claimed.orphaned { ", orphaned" } else { "" }
            );
        }
        shown.push(']');
        if let Some(next) = claim.next_ready_in {
            let _ = write!(shown, ", next ready in {next:?}");
        }
        shown
    }

    pub(super) fn check_claim(
        &mut self,
        namespace: usize,
        limit: usize,
        claim: &Claim,
    ) -> Result<(), String> {
        if claim.entries.len() > limit {
            return Err(format!(
                "{} entries claimed, over the limit",
                claim.entries.len()
            ));
        }
        // The heads of the namespace's keys and whether each is ready.
        let mut streams: Vec<(usize, Side, usize)> = self
            .model
            .live()
            .filter(|(_, entry)| entry.namespace == namespace)
            .map(|(_, entry)| entry.stream())
            .collect();
        streams.sort();
        streams.dedup();
        let heads: Vec<(usize, Tri)> = streams
            .iter()
            .filter_map(|stream| self.model.head(*stream))
            .map(|serial| (serial, self.model.readiness(serial).0))
            .collect();
        let ready: Vec<usize> = heads
            .iter()
            .filter(|(_, ready)| *ready == Tri::Yes)
            .map(|(serial, _)| *serial)
            .collect();
        let mut claimed = HashSet::new();
        for entry in &claim.entries {
            let id = entry.lease.id;
            let Some(serial) = self.model.serial_of(id) else {
                return Err(format!("#{id} was never appended"));
            };
            if !claimed.insert(serial) {
                return Err(format!("#{id} was claimed twice"));
            }
            let (readiness, why) = self.model.readiness(serial);
            if readiness == Tri::No {
                return Err(format!("#{id} must not be claimed: {why}"));
            }
            if !self
                .model
                .seen_leases
                .insert((entry.lease.id.0, entry.lease.token))
            {
                return Err(format!(
                    "the lease (#{id}, token {}) was handed out before",
                    entry.lease.token
                ));
            }
            self.check_claimed_fields(serial, entry)?;
        }
        // Without key-independent delays, a retry delay or an entry in
        // flight may hold back other keys: fewer may be claimed (and
        // nothing said of when more will be ready).
        let all_ready = self.model.profile.key_independent_delays;
        let wanted = ready.len().min(limit);
        if all_ready && claim.entries.len() < wanted {
            let missed: Vec<String> = ready
                .iter()
                .filter(|serial| !claimed.contains(*serial))
                .map(|serial| self.model.entries[*serial].id_text())
                .collect();
            return Err(format!(
                "only {} entries claimed, but {} were ready (limit {limit}); not claimed: {}",
                claim.entries.len(),
                ready.len(),
                missed.join(", ")
            ));
        }
        // Still, with nothing of a ready head's target in flight or waiting
        // out a delay, nothing holds it back: something is claimed.
        if !all_ready && claim.entries.is_empty() && limit > 0 {
            let free = ready.iter().find(|serial| !self.held_back(**serial));
            if let Some(serial) = free {
                return Err(format!(
                    "nothing claimed, but {} is ready and nothing of its namespace and target is \
                     in flight or waiting out a delay to hold it back",
                    self.model.entries[*serial].id_text()
                ));
            }
        }
        if all_ready && claim.entries.is_empty() && claim.next_ready_in.is_none() {
            let waiting = heads.iter().find(|(serial, _)| {
                let entry = &self.model.entries[*serial];
                !matches!(entry.state, State::Dead { .. }) && self.model.barrier(*serial).is_none()
            });
            if let Some((serial, _)) = waiting {
                return Err(format!(
                    "nothing claimed and no next_ready_in, but {} will be ready",
                    self.model.entries[*serial].id_text()
                ));
            }
        }
        Ok(())
    }

    /// Whether an entry of the namespace and target of `serial` is in
    /// flight or waiting out a delay, which may hold `serial` back without
    /// key-independent delays.
    fn held_back(&self, serial: usize) -> bool {
        let me = &self.model.entries[serial];
        self.model.live().any(|(_, other)| {
            other.namespace == me.namespace
                && other.target == me.target
                && match other.state {
                    State::Leased { .. } => true,
                    State::Pending(deadline) => self.model.passed(deadline) != Tri::Yes,
                    State::Prepared(_) | State::Dead { .. } => false,
                }
        })
    }

    pub(super) fn check_claimed_fields(
        &mut self,
        serial: usize,
        claimed: &ClaimedEntry,
    ) -> Result<(), String> {
        let entry = &self.model.entries[serial];
        let mut problems = entry.returned_problems(&Returned {
            namespace: &claimed.namespace,
            target: claimed.target,
            key: &claimed.key,
            method: &claimed.method,
            version: claimed.version,
            payload: &claimed.payload,
            attempts: claimed.attempts,
            error_field: "last_error",
            error: &claimed.last_error,
        });
        let orphaned = entry.orphaned || matches!(entry.state, State::Prepared(_));
        if claimed.orphaned != orphaned {
            problems.push(format!(
                "orphaned {}, expected {orphaned} ({})",
                claimed.orphaned,
                if orphaned {
                    "an expired or uncertain prepared entry, an uncertain append, or claimed as an orphan before and not settled"
                } else {
                    "a committed or plain appended entry"
                }
            ));
        }
        let id = entry.id;
        if !problems.is_empty() {
            return Err(format!("claimed #{id} with {}", problems.join("; ")));
        }
        self.model.check_enqueued_at(serial, claimed.enqueued_at)
    }
}
