//! Appends, prepares, commits and aborts, checked against the model.

use super::*;

impl<Q: ReconciliationQueue> Case<'_, Q> {
    /// Checks a new entry's id: unique, and greater than the previous one
    /// (with [`IdOrder::PerHandle`], the previous one appended through the
    /// queue as opened now).
    pub(super) fn check_new_id(&self, id: EntryId) -> Result<(), String> {
        let (last, which) = match self.model.profile.ids {
            IdOrder::Appended => (self.model.last_id(), "the previous one"),
            IdOrder::PerHandle => (
                self.model.handle_last_id,
                "the previous one appended through this queue handle",
            ),
        };
        match last {
            Some(last) if id <= last => Err(format!(
                "the new id #{id} is not greater than {which}, #{last}"
            )),
            _ if self.model.entries.iter().any(|entry| entry.id == id) => {
                Err(format!("the id #{id} was used before"))
            }
            _ => Ok(()),
        }
    }

    pub(super) fn push(
        &mut self,
        id: EntryId,
        fields: &Fields,
        sent: NewEntry,
        state: State,
        from_prepare: bool,
    ) {
        self.model.handle_last_id = Some(id);
        // Serials, unless a retried dead letter took one.
        let order = self.model.next_order;
        self.model.next_order += 1;
        self.model.entries.push(Entry {
            id,
            namespace: fields.namespace,
            target: fields.target,
            key: fields.key,
            orphaned: sent.uncertain,
            last_error: sent.reason.clone(),
            sent,
            state,
            from_prepare,
            uncertain_committed: false,
            attempts: 0,
            enqueued_at: None,
            removed: false,
            order,
        });
    }

    pub(super) async fn append(
        &mut self,
        fields: &Fields,
        uncertain: bool,
    ) -> Result<Done, String> {
        let serial = self.model.entries.len();
        let sent = fields.entry(serial, uncertain);
        let text = format!(
            "append({fields}{})",
            if uncertain { ", uncertain" } else { "" }
        );
        match self.queue()?.append(sent.clone()).await {
            Ok(id) => {
                self.check_new_id(id)
                    .map_err(|why| format!("{text} -> #{id}: {why}"))?;
                self.push(id, fields, sent, State::Pending(Deadline::Passed), false);
                ran(format!("{text} -> #{id}"))
            }
            Err(error) => Err(format!("{text} -> Err({error})")),
        }
    }

    pub(super) async fn prepare(&mut self, fields: &Fields, expiry: Wait) -> Result<Done, String> {
        let serial = self.model.entries.len();
        let sent = fields.entry(serial, false);
        let text = format!("prepare({fields}, expiry {})", expiry.name());
        let duration = self.settings.duration(expiry);
        match self.queue()?.prepare(sent.clone(), duration).await {
            Ok(id) => {
                self.check_new_id(id)
                    .map_err(|why| format!("{text} -> #{id}: {why}"))?;
                let deadline = self.model.deadline(expiry);
                self.push(id, fields, sent, State::Prepared(deadline), true);
                ran(format!("{text} -> #{id}"))
            }
            Err(error) => Err(format!("{text} -> Err({error})")),
        }
    }

    /// An entry made by `prepare`: preferably one still prepared (or, with
    /// `or_orphan`, claimed as an orphan).
    pub(super) fn pick_prepared(&self, pick: Pick, or_orphan: bool) -> Option<usize> {
        let all: Vec<usize> = self
            .model
            .entries
            .iter()
            .enumerate()
            .filter(|(_, entry)| entry.from_prepare)
            .map(|(serial, _)| serial)
            .collect();
        let prepared: Vec<usize> = all
            .iter()
            .copied()
            .filter(|serial| {
                let entry = &self.model.entries[*serial];
                !entry.removed
                    && match entry.state {
                        State::Prepared(_) => true,
                        State::Leased { .. } => or_orphan && entry.orphaned,
                        _ => false,
                    }
            })
            .collect();
        choose(pick, &prepared, &all)
    }

    pub(super) async fn commit(&mut self, pick: Pick, uncertain: bool) -> Result<Done, String> {
        let name = if uncertain {
            "commit_uncertain"
        } else {
            "commit"
        };
        let Some(serial) = self.pick_prepared(pick, false) else {
            return skipped(format!("{name} (skipped: no prepared entry to pick)"));
        };
        let entry = &self.model.entries[serial];
        let id = entry.id;
        let prepared = !entry.removed && matches!(entry.state, State::Prepared(_));
        let before = entry.state_name();
        if prepared && !uncertain && entry.uncertain_committed {
            return skipped(format!(
                "commit(#{id}) (skipped: committing after commit_uncertain is not specified)"
            ));
        }
        let result = if uncertain {
            self.queue()?.commit_uncertain(id).await
        } else {
            self.queue()?.commit(id).await
        };
        let text = format!("{name}(#{id}, {before}) -> {}", show_result(&result));
        if let Err(error) = result {
            return Err(format!("{text}: expected Ok, got {error}"));
        }
        if prepared {
            let entry = &mut self.model.entries[serial];
            if uncertain {
                entry.state = State::Prepared(Deadline::Passed);
                entry.uncertain_committed = true;
            } else {
                entry.state = State::Pending(Deadline::Passed);
            }
        }
        ran(text)
    }

    pub(super) async fn abort(&mut self, pick: Pick) -> Result<Done, String> {
        let Some(serial) = self.pick_prepared(pick, true) else {
            return skipped("abort (skipped: no prepared entry to pick)".to_owned());
        };
        let entry = &self.model.entries[serial];
        let id = entry.id;
        let removable = !entry.removed
            && match entry.state {
                State::Prepared(_) => true,
                State::Leased { .. } => entry.orphaned,
                _ => false,
            };
        if !entry.removed && !removable {
            return skipped(format!(
                "abort(#{id}) (skipped: aborting {}{} entry is not specified)",
                if entry.orphaned {
                    "an orphaned "
                } else {
                    "a committed "
                },
                entry.state.name()
            ));
        }
        let before = entry.state_name();
        let result = self.queue()?.abort(id).await;
        let text = format!("abort(#{id}, {before}) -> {}", show_result(&result));
        if let Err(error) = result {
            return Err(format!("{text}: expected Ok, got {error}"));
        }
        self.model.entries[serial].removed = true;
        ran(text)
    }
}
