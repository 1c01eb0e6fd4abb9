//! Running a case: the steps, bursts of concurrent requests, restarts.

use super::*;

// ---------------------------------------------------------------------------
// Running a case.

pub(super) struct Settings {
    pub(super) short: Duration,
    pub(super) time_step: Duration,
    pub(super) check_every_step: bool,
    pub(super) profile: Profile,
}

impl Settings {
    pub(super) fn duration(&self, wait: Wait) -> Duration {
        match wait {
            Wait::Now => Duration::ZERO,
            Wait::Soon => self.short,
            Wait::Far => FAR,
        }
    }
}

pub(super) async fn run_case<B: ModelBackend>(
    backend: &mut B,
    steps: &[Step],
    settings: &Settings,
) -> Result<(), String> {
    let queue = backend
        .open()
        .await
        .map_err(|error| format!("opening a fresh queue failed: {error}"))?;
    let mut case = Case {
        queue: Some(queue),
        model: Model::new(settings.profile),
        settings,
    };
    let mut trace = String::new();
    let mut outcome = Ok(());
    for (number, step) in (1..).zip(steps) {
        match case.step(backend, number, step).await {
            Ok(Done { text, ran }) => {
                let _ = writeln!(trace, "{number:>4}. {text}");
                if ran && settings.check_every_step {
                    if let Err(why) = case.check_all().await {
                        let _ = writeln!(trace, "      MISMATCH after step {number}: {why}");
                        outcome = Err(format!("after step {number}: {why}"));
                        break;
                    }
                }
            }
            Err(why) => {
                let _ = writeln!(trace, "{number:>4}. {why}\n      ^ MISMATCH");
                outcome = Err(format!("at step {number}: {why}"));
                break;
            }
        }
    }
    if outcome.is_ok() && !settings.check_every_step {
        if let Err(why) = case.check_all().await {
            let _ = writeln!(trace, "      MISMATCH at the end: {why}");
            outcome = Err(format!("at the end: {why}"));
        }
    }
    if let Some(queue) = case.queue.take() {
        backend.finish(queue).await;
    }
    outcome.map_err(|why| {
        format!(
            "mismatch {why}\n\nthe case as run (`#n` are entry ids, `lease n` the n-th claim of the \
             case):\n{trace}"
        )
    })
}

pub(super) struct Done {
    pub(super) text: String,
    /// False for a step skipped because its outcome is not specified.
    pub(super) ran: bool,
}

pub(super) fn ran(text: String) -> Result<Done, String> {
    Ok(Done { text, ran: true })
}

pub(super) fn skipped(text: String) -> Result<Done, String> {
    Ok(Done { text, ran: false })
}

pub(super) struct Case<'a, Q> {
    pub(super) queue: Option<Q>,
    pub(super) model: Model,
    pub(super) settings: &'a Settings,
}

/// `Err(LeaseLost(id))` for the lease `id`.
pub(super) fn is_lease_lost<T>(result: &Result<T, QueueError>, id: EntryId) -> bool {
    matches!(result, Err(QueueError::LeaseLost(lost)) if *lost == id)
}

/// `Ok`, `Ok(answer)` (of `has_later_entries`) or `Err(error)`.
pub(super) fn show_result<T: ShowOk>(result: &Result<T, QueueError>) -> String {
    match result {
        Ok(value) => value.show_ok(),
        Err(error) => format!("Err({error})"),
    }
}

pub(super) trait ShowOk {
    fn show_ok(&self) -> String;
}

impl ShowOk for () {
    fn show_ok(&self) -> String {
        "Ok".to_owned()
    }
}

impl ShowOk for Option<bool> {
    fn show_ok(&self) -> String {
        match self {
            None => "Ok".to_owned(),
            Some(answer) => format!("Ok({answer})"),
        }
    }
}

impl<Q: ReconciliationQueue> Case<'_, Q> {
    pub(super) fn queue(&self) -> Result<&Q, String> {
        self.queue
            .as_ref()
            .ok_or_else(|| "the queue was lost in a failed restart".to_owned())
    }

    pub(super) async fn step<B: ModelBackend<Queue = Q>>(
        &mut self,
        backend: &mut B,
        number: usize,
        step: &Step,
    ) -> Result<Done, String> {
        match step {
            Step::Append { fields, uncertain } => self.append(fields, *uncertain).await,
            Step::Prepare { fields, expiry } => self.prepare(fields, *expiry).await,
            Step::Commit(pick) => self.commit(*pick, false).await,
            Step::CommitUncertain(pick) => self.commit(*pick, true).await,
            Step::Abort(pick) => self.abort(*pick).await,
            Step::AbortUnknown => {
                let result = self.queue()?.abort(UNKNOWN_ID).await;
                let text = format!(
                    "abort(#{UNKNOWN_ID}, never existed) -> {}",
                    show_result(&result)
                );
                match result {
                    Ok(()) => ran(text),
                    Err(_) => Err(format!("{text}: aborting a missing entry must succeed")),
                }
            }
            Step::Claim {
                namespace,
                limit,
                lease,
            } => self.claim(*namespace, *limit, *lease).await,
            Step::Settle(action, pick) => match self.pick_lease(*pick) {
                Some(index) => self.settle(number, *action, index).await,
                None => skipped(format!("{} (skipped: no claim to pick)", action.name())),
            },
            Step::Work {
                namespace,
                limit,
                lease,
                action,
            } => {
                let first = self.model.leases.len();
                let mut text = self.claim(*namespace, *limit, *lease).await?.text;
                for index in first..self.model.leases.len() {
                    match self.settle(number, *action, index).await {
                        Ok(done) => {
                            let _ = write!(text, "\n        then {}", done.text);
                        }
                        Err(why) => return Err(format!("{text}\n        then {why}")),
                    }
                }
                ran(text)
            }
            Step::Turnover {
                completes,
                namespace,
                limit,
                lease,
            } => self.turnover(completes, *namespace, *limit, *lease).await,
            Step::RetryDead(pick) => self.dead_op(*pick, true).await,
            Step::DropDead(pick) => self.dead_op(*pick, false).await,
            Step::SettleOrphan(pick) => match self.pick_orphan(*pick) {
                Some(serial) => self.settle_orphan(serial, "").await,
                None => skipped("settle_orphan (skipped: no entry to pick)".to_owned()),
            },
            Step::HasWork {
                namespace,
                target,
                key,
            } => {
                let text = format!(
                    "has_work({}, {target}, {})",
                    NAMESPACES[*namespace], KEYS[*key]
                );
                self.check_has_work(*namespace, *target, *key)
                    .await
                    .map_err(|why| format!("{text}: {why}"))?;
                ran(format!(
                    "{text} -> {}",
                    self.model.has_work(*namespace, *target, *key)
                ))
            }
            Step::Stats => {
                self.check_stats().await?;
                ran("stats() -> as modelled".to_owned())
            }
            Step::DeadLetters => {
                self.check_dead_letters().await?;
                ran("dead_letters() -> as modelled".to_owned())
            }
            Step::Flush => match self.queue()?.flush().await {
                Ok(()) => ran("flush() -> Ok".to_owned()),
                Err(error) => Err(format!("flush() -> Err({error})")),
            },
            Step::TimePasses => {
                tokio::time::sleep(self.settings.time_step).await;
                self.model.epoch += 1;
                ran(format!(
                    "time passes ({:?}): every short deadline set so far has passed",
                    self.settings.time_step
                ))
            }
            Step::Burst {
                inserts,
                commits,
                completes,
            } => self.burst(inserts, commits, completes).await,
            Step::Restart => {
                if !backend.durable() {
                    return skipped("restart (skipped: the backend is not durable)".to_owned());
                }
                if let Err(error) = self.queue()?.flush().await {
                    return Err(format!("restart: flush() -> Err({error})"));
                }
                let Some(queue) = self.queue.take() else {
                    return Err("restart: the queue was lost".to_owned());
                };
                match backend.reopen(queue).await {
                    Ok(queue) => self.queue = Some(queue),
                    Err(error) => return Err(format!("restart: reopening failed: {error}")),
                }
                for record in &mut self.model.leases {
                    record.doubtful = true;
                }
                self.model.handle_last_id = None;
                ran(
                    "restart (flush, reopen): claims made so far may be honoured or lost"
                        .to_owned(),
                )
            }
        }
    }

    pub(super) async fn burst(
        &mut self,
        inserts: &[Insert],
        commits: &[Pick],
        completes: &[Pick],
    ) -> Result<Done, String> {
        let base = self.model.entries.len();
        let sent: Vec<(NewEntry, Option<Wait>, &Fields)> = inserts
            .iter()
            .enumerate()
            .map(|(n, insert)| match insert {
                Insert::Append(fields, uncertain) => {
                    (fields.entry(base + n, *uncertain), None, fields)
                }
                Insert::Prepare(fields, expiry) => {
                    (fields.entry(base + n, false), Some(*expiry), fields)
                }
            })
            .collect();
        let committed: Vec<usize> = commits
            .iter()
            .filter_map(|pick| self.pick_prepared(*pick, false))
            .filter(|serial| !self.model.entries[*serial].uncertain_committed)
            .collect();
        let completed: Vec<usize> = completes
            .iter()
            .filter_map(|pick| self.pick_lease(*pick))
            .collect();
        if sent.is_empty() && committed.is_empty() && completed.is_empty() {
            return skipped("burst (skipped: nothing to send)".to_owned());
        }
        let queue = self.queue()?;
        let settings = self.settings;
        let inserting = futures::future::join_all(sent.iter().map(|(entry, expiry, _)| async {
            match expiry {
                None => queue.append(entry.clone()).await,
                Some(expiry) => {
                    queue
                        .prepare(entry.clone(), settings.duration(*expiry))
                        .await
                }
            }
        }));
        let committing = futures::future::join_all(
            committed
                .iter()
                .map(|serial| queue.commit(self.model.entries[*serial].id)),
        );
        let completing = futures::future::join_all(
            completed
                .iter()
                .map(|index| queue.complete(self.model.leases[*index].lease)),
        );
        let (inserted, commit_results, complete_results) =
            futures::future::join3(inserting, committing, completing).await;

        // What was sent and answered.
        let mut parts = Vec::new();
        for ((entry, expiry, fields), result) in sent.iter().zip(&inserted) {
            let call = match expiry {
                None if entry.uncertain => format!("append({fields}, uncertain)"),
                None => format!("append({fields})"),
                Some(expiry) => format!("prepare({fields}, expiry {})", expiry.name()),
            };
            parts.push(match result {
                Ok(id) => format!("{call} -> #{id}"),
                Err(error) => format!("{call} -> Err({error})"),
            });
        }
        for (serial, result) in committed.iter().zip(&commit_results) {
            let entry = &self.model.entries[*serial];
            parts.push(format!(
                "commit(#{}, {}) -> {}",
                entry.id,
                entry.state_name(),
                show_result(result)
            ));
        }
        parts.extend(self.show_completions(&completed, &complete_results));
        let text = format!("at once: {}", parts.join(", "));

        // Inserts: all stored, with new ids; the model files them in id order.
        let mut ids = Vec::new();
        for result in &inserted {
            match result {
                Ok(id) => ids.push(*id),
                Err(error) => return Err(format!("{text}: an insert failed: {error}")),
            }
        }
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|n| ids[*n]);
        for n in order {
            let id = ids[n];
            self.check_new_id(id)
                .map_err(|why| format!("{text}: #{id}: {why}"))?;
            let (entry, expiry, fields) = &sent[n];
            let (state, from_prepare) = match expiry {
                None => (State::Pending(Deadline::Passed), false),
                Some(expiry) => (State::Prepared(self.model.deadline(*expiry)), true),
            };
            self.push(id, fields, entry.clone(), state, from_prepare);
        }
        // Commits: all succeed.
        for (serial, result) in committed.iter().zip(&commit_results) {
            if let Err(error) = result {
                return Err(format!("{text}: a commit failed: {error}"));
            }
            let entry = &mut self.model.entries[*serial];
            if !entry.removed && matches!(entry.state, State::Prepared(_)) {
                entry.state = State::Pending(Deadline::Passed);
            }
        }
        self.take_completions(&completed, &complete_results)
            .map_err(|why| format!("{text}: {why}"))?;
        ran(text)
    }
}

/// Picks from `preferred` or from `all`, as the pick says (`None` if that is empty).
pub(super) fn choose(pick: Pick, preferred: &[usize], all: &[usize]) -> Option<usize> {
    let from = if pick.preferred { preferred } else { all };
    if from.is_empty() {
        None
    } else {
        Some(from[pick.index.index(from.len())])
    }
}

pub(super) fn show_ids(ids: &[EntryId]) -> String {
    let shown: Vec<String> = ids.iter().map(|id| format!("#{id}")).collect();
    format!("[{}]", shown.join(", "))
}
