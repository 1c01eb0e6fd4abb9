//! The checks after every step: `has_work`, stats, dead letters.

use super::*;

impl<Q: ReconciliationQueue> Case<'_, Q> {
    pub(super) async fn check_all(&mut self) -> Result<(), String> {
        self.check_stats().await?;
        self.check_dead_letters().await?;
        for (namespace, namespace_name) in NAMESPACES.iter().enumerate() {
            for target in [Side::Old, Side::New] {
                for (key, key_name) in KEYS.iter().enumerate().take(self.model.profile.keys()) {
                    self.check_has_work(namespace, target, key)
                        .await
                        .map_err(|why| {
                            format!("has_work({namespace_name}, {target}, {key_name}): {why}")
                        })?;
                }
            }
        }
        Ok(())
    }

    pub(super) async fn check_has_work(
        &self,
        namespace: usize,
        target: Side,
        key: usize,
    ) -> Result<(), String> {
        let queue = self.queue()?;
        let answer = queue
            .has_work(NAMESPACES[namespace], target, &Key::from(KEYS[key]))
            .await
            .map_err(|error| format!("failed: {error}"))?;
        let expected = self.model.has_work(namespace, target, key);
        if expected && queue.certainly_idle(NAMESPACES[namespace], target, &Key::from(KEYS[key])) {
            return Err("certainly_idle says the key is idle, but it has work".to_owned());
        }
        // Without exact key work, a superset of the key (its partition)
        // may answer: `true` is allowed, `false` only if right.
        let superset = answer && !self.model.profile.exact_key_work;
        if answer != expected && !superset {
            let why = if key == UNKEYED {
                format!(
                    "the namespace has {}entries for {target}",
                    if expected { "" } else { "no " }
                )
            } else {
                format!(
                    "the key and the unkeyed key have {}entries for {target}",
                    if expected { "" } else { "no " }
                )
            };
            return Err(format!("answered {answer}, expected {expected}: {why}"));
        }
        Ok(())
    }

    pub(super) async fn check_stats(&self) -> Result<(), String> {
        let stats: QueueStats = self
            .queue()?
            .stats()
            .await
            .map_err(|error| format!("stats() failed: {error}"))?;
        for target in [Side::Old, Side::New] {
            let got = stats.target(target);
            let (pending, in_flight, dead, blocked_keys) = self.model.counts(target);
            let mut problems = Vec::new();
            let exact = self.model.profile.stats == StatsPrecision::Exact;
            if exact && got.pending != pending {
                problems.push(format!("pending {}, expected {pending}", got.pending));
            }
            if exact && got.in_flight != in_flight {
                problems.push(format!("in_flight {}, expected {in_flight}", got.in_flight));
            }
            // Counted from the leases held: an expired one may be pending.
            let surely = self.model.surely_leased(target);
            if !exact
                && (got.pending + got.in_flight != pending + in_flight
                    || got.in_flight < surely
                    || got.in_flight > in_flight)
            {
                problems.push(format!(
                    "pending {} and in_flight {}, expected {} in all, in_flight from {surely} \
                     (leases surely not expired) to {in_flight}",
                    got.pending,
                    got.in_flight,
                    pending + in_flight
                ));
            }
            if got.dead != dead {
                problems.push(format!("dead {}, expected {dead}", got.dead));
            }
            if got.blocked_keys != blocked_keys {
                problems.push(format!(
                    "blocked_keys {}, expected {blocked_keys}",
                    got.blocked_keys
                ));
            }
            let oldest = pending + in_flight > 0;
            let missing = !exact && got.oldest_pending.is_none();
            if got.oldest_pending.is_some() != oldest && !missing {
                problems.push(format!(
                    "oldest_pending {:?}, expected {}",
                    got.oldest_pending,
                    if oldest { "Some" } else { "None" }
                ));
            }
            let empty = pending + in_flight + dead == 0;
            if got.is_empty() != empty {
                problems.push(format!("is_empty() {}, expected {empty}", got.is_empty()));
            }
            if !problems.is_empty() {
                return Err(format!("stats() of {target}: {}", problems.join("; ")));
            }
        }
        Ok(())
    }

    pub(super) async fn check_dead_letters(&mut self) -> Result<(), String> {
        let letters: Vec<DeadLetter> = self
            .queue()?
            .dead_letters()
            .await
            .map_err(|error| format!("dead_letters() failed: {error}"))?;
        let mut expected: Vec<usize> = self
            .model
            .live()
            .filter(|(_, entry)| matches!(entry.state, State::Dead { .. }))
            .map(|(serial, _)| serial)
            .collect();
        let got_ids: Vec<EntryId> = letters.iter().map(|letter| letter.id).collect();
        if self.model.profile.ids == IdOrder::PerHandle {
            // Ids say nothing of age: oldest dead first, ties by id.
            let mut by_death: Vec<(SystemTime, EntryId)> = letters
                .iter()
                .map(|letter| (letter.died_at, letter.id))
                .collect();
            by_death.sort();
            let sorted: Vec<EntryId> = by_death.into_iter().map(|(_, id)| id).collect();
            if got_ids != sorted {
                return Err(format!(
                    "dead_letters() listed {}, not oldest dead first ({})",
                    show_ids(&got_ids),
                    show_ids(&sorted)
                ));
            }
            // The model's list in the backend's order, if it has them all.
            expected.sort_by_key(|serial| {
                let id = self.model.entries[*serial].id;
                got_ids
                    .iter()
                    .position(|got| *got == id)
                    .unwrap_or(usize::MAX)
            });
        }
        let expected_ids: Vec<EntryId> = expected
            .iter()
            .map(|serial| self.model.entries[*serial].id)
            .collect();
        if got_ids != expected_ids {
            return Err(format!(
                "dead_letters() listed {}, expected {} (oldest first)",
                show_ids(&got_ids),
                show_ids(&expected_ids)
            ));
        }
        for (letter, serial) in letters.iter().zip(expected) {
            let entry = &self.model.entries[serial];
            let mut problems = entry.returned_problems(&Returned {
                namespace: &letter.namespace,
                target: letter.target,
                key: &letter.key,
                method: &letter.method,
                version: letter.version,
                payload: &letter.payload,
                attempts: letter.attempts,
                error_field: "error",
                error: &letter.error,
            });
            if let State::Dead {
                died_at: Some(died_at),
            } = entry.state
            {
                if letter.died_at != died_at {
                    problems.push(format!(
                        "died_at {:?}, reported as {died_at:?} before",
                        letter.died_at
                    ));
                }
            }
            let id = entry.id;
            if !problems.is_empty() {
                return Err(format!("dead letter #{id}: {}", problems.join("; ")));
            }
            self.model
                .check_enqueued_at(serial, letter.enqueued_at)
                .map_err(|why| format!("dead letter {why}"))?;
            if let State::Dead { died_at } = &mut self.model.entries[serial].state {
                *died_at = Some(letter.died_at);
            }
        }
        Ok(())
    }
}
