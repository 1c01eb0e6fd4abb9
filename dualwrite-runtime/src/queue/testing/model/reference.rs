//! The reference model: what every backend must answer.

use super::*;

// ---------------------------------------------------------------------------
// The reference model.

/// Whether something holds: surely, perhaps (a short deadline set since the
/// last time step), or surely not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tri {
    Yes,
    Maybe,
    No,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Deadline {
    Passed,
    /// Short, set during the given epoch: passed once a time step ended it.
    Soon(u32),
    Far,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum State {
    Prepared(Deadline),
    Pending(Deadline),
    /// `lease`: the index of the claim that holds it, `None` once a claim
    /// from before a restart was refused.
    Leased {
        until: Deadline,
        lease: Option<usize>,
    },
    Dead {
        died_at: Option<SystemTime>,
    },
}

impl State {
    pub(super) fn name(&self) -> &'static str {
        match self {
            State::Prepared(_) => "prepared",
            State::Pending(_) => "pending",
            State::Leased { .. } => "leased",
            State::Dead { .. } => "dead",
        }
    }
}

#[derive(Debug)]
pub(super) struct Entry {
    pub(super) id: EntryId,
    pub(super) namespace: usize,
    pub(super) target: Side,
    pub(super) key: usize,
    pub(super) sent: NewEntry,
    pub(super) state: State,
    /// Claims report it orphaned (uncertain, or claimed once as an orphan).
    pub(super) orphaned: bool,
    pub(super) from_prepare: bool,
    pub(super) uncertain_committed: bool,
    pub(super) attempts: u32,
    pub(super) last_error: String,
    pub(super) enqueued_at: Option<SystemTime>,
    pub(super) removed: bool,
    /// Its place in its key's line: its serial, unless a `retry_dead`
    /// without blocking dead letters appended it again behind the line.
    pub(super) order: usize,
}

/// What a queue handed back for an entry (claimed, or as a dead letter),
/// to compare with what was sent and what the model expects.
pub(super) struct Returned<'a> {
    pub(super) namespace: &'a str,
    pub(super) target: Side,
    pub(super) key: &'a Key,
    pub(super) method: &'a str,
    pub(super) version: u32,
    pub(super) payload: &'a [u8],
    pub(super) attempts: u32,
    /// What the backend calls the last error (`last_error`, `error`).
    pub(super) error_field: &'static str,
    pub(super) error: &'a str,
}

impl Entry {
    /// Every way `got` differs from what was sent and the model's counts.
    pub(super) fn returned_problems(&self, got: &Returned<'_>) -> Vec<String> {
        let sent = &self.sent;
        let mut problems = Vec::new();
        if got.namespace != sent.namespace {
            problems.push(format!(
                "namespace {:?}, sent {:?}",
                got.namespace, sent.namespace
            ));
        }
        if got.target != sent.target {
            problems.push(format!("target {}, sent {}", got.target, sent.target));
        }
        if *got.key != sent.key {
            problems.push(format!(
                "key {:?}, sent {:?}",
                got.key.as_str(),
                sent.key.as_str()
            ));
        }
        if got.method != sent.method {
            problems.push(format!("method {:?}, sent {:?}", got.method, sent.method));
        }
        if got.version != sent.version {
            problems.push(format!("version {}, sent {}", got.version, sent.version));
        }
        if got.payload != sent.payload.as_slice() {
            problems.push(format!(
                "payload {:?}, sent {:?}",
                got.payload, sent.payload
            ));
        }
        if got.attempts != self.attempts {
            problems.push(format!(
                "attempts {}, expected {}",
                got.attempts, self.attempts
            ));
        }
        if got.error != self.last_error {
            problems.push(format!(
                "{} {:?}, expected {:?}",
                got.error_field, got.error, self.last_error
            ));
        }
        problems
    }
}

impl Entry {
    pub(super) fn stream(&self) -> (usize, Side, usize) {
        (self.namespace, self.target, self.key)
    }
}

#[derive(Debug)]
pub(super) struct LeaseRecord {
    pub(super) lease: Lease,
    pub(super) serial: usize,
    /// Taken before a restart: the backend may honour or refuse it.
    pub(super) doubtful: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LeaseStatus {
    Current,
    Doubtful,
    Stale,
}

#[derive(Debug)]
pub(super) struct Model {
    pub(super) profile: Profile,
    pub(super) entries: Vec<Entry>,
    pub(super) leases: Vec<LeaseRecord>,
    pub(super) seen_leases: HashSet<(u64, u64)>,
    pub(super) epoch: u32,
    pub(super) started: SystemTime,
    /// The next [`Entry::order`] past every entry's.
    pub(super) next_order: usize,
    /// The last id appended through the queue as opened now (since the
    /// last restart).
    pub(super) handle_last_id: Option<EntryId>,
}

impl Model {
    pub(super) fn new(profile: Profile) -> Self {
        Model {
            profile,
            entries: Vec::new(),
            leases: Vec::new(),
            seen_leases: HashSet::new(),
            epoch: 0,
            started: SystemTime::now(),
            next_order: 0,
            handle_last_id: None,
        }
    }

    pub(super) fn deadline(&self, wait: Wait) -> Deadline {
        match wait {
            Wait::Now => Deadline::Passed,
            Wait::Soon => Deadline::Soon(self.epoch),
            Wait::Far => Deadline::Far,
        }
    }

    pub(super) fn passed(&self, deadline: Deadline) -> Tri {
        match deadline {
            Deadline::Passed => Tri::Yes,
            Deadline::Soon(epoch) if self.epoch > epoch => Tri::Yes,
            Deadline::Soon(_) => Tri::Maybe,
            Deadline::Far => Tri::No,
        }
    }

    pub(super) fn live(&self) -> impl Iterator<Item = (usize, &Entry)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, entry)| !entry.removed)
    }

    pub(super) fn serial_of(&self, id: EntryId) -> Option<usize> {
        self.entries.iter().position(|entry| entry.id == id)
    }

    pub(super) fn last_id(&self) -> Option<EntryId> {
        self.entries.last().map(|entry| entry.id)
    }

    /// Whether the entry stands in its key's line: live, and not a dead
    /// letter that does not block its key.
    pub(super) fn in_line(&self, entry: &Entry) -> bool {
        !entry.removed
            && (self.profile.blocking_dead_letters || !matches!(entry.state, State::Dead { .. }))
    }

    /// The first entry of a key's line (with blocking dead letters, the
    /// first live entry: ids increase with serials).
    pub(super) fn head(&self, stream: (usize, Side, usize)) -> Option<usize> {
        self.live()
            .filter(|(_, entry)| entry.stream() == stream && self.in_line(entry))
            .min_by_key(|(_, entry)| entry.order)
            .map(|(serial, _)| serial)
    }

    /// The entry of another key that `serial` waits for (unkeyed ordering).
    pub(super) fn barrier(&self, serial: usize) -> Option<usize> {
        let me = &self.entries[serial];
        self.live()
            .find(|(_, other)| {
                self.in_line(other)
                    && other.order < me.order
                    && other.namespace == me.namespace
                    && other.target == me.target
                    && other.key != me.key
                    && (me.key == UNKEYED || other.key == UNKEYED)
            })
            .map(|(serial, _)| serial)
    }

    /// Whether a claim may hand out `serial` now, and why not.
    pub(super) fn readiness(&self, serial: usize) -> (Tri, String) {
        let entry = &self.entries[serial];
        if entry.removed {
            return (Tri::No, "it was removed".to_owned());
        }
        match self.head(entry.stream()) {
            Some(head) if head != serial => {
                return (
                    Tri::No,
                    format!("{} is ahead of it in its key", self.entries[head].id_text()),
                )
            }
            _ => {}
        }
        if let State::Dead { .. } = entry.state {
            return (Tri::No, "it is a dead letter".to_owned());
        }
        if let Some(blocker) = self.barrier(serial) {
            return (
                Tri::No,
                format!(
                    "it must wait for {} of key {} (unkeyed ordering)",
                    self.entries[blocker].id_text(),
                    KEYS[self.entries[blocker].key]
                ),
            );
        }
        let (deadline, what) = match entry.state {
            State::Prepared(deadline) => (deadline, "prepared, expiring"),
            State::Pending(deadline) => (deadline, "pending, ready"),
            State::Leased { until, .. } => (until, "leased, the lease ending"),
            State::Dead { .. } => (Deadline::Far, "dead"),
        };
        let when = match deadline {
            Deadline::Passed => "already",
            Deadline::Soon(_) => "after a short wait",
            Deadline::Far => "in an hour",
        };
        (self.passed(deadline), format!("it is {what} {when}"))
    }

    pub(super) fn lease_status(&self, index: usize) -> LeaseStatus {
        let record = &self.leases[index];
        let entry = &self.entries[record.serial];
        let held = !entry.removed
            && matches!(entry.state, State::Leased { lease: Some(held), .. } if held == index);
        match (held, record.doubtful) {
            (false, _) => LeaseStatus::Stale,
            (true, false) => LeaseStatus::Current,
            (true, true) => LeaseStatus::Doubtful,
        }
    }

    pub(super) fn has_work(&self, namespace: usize, target: Side, key: usize) -> bool {
        self.live().any(|(_, entry)| {
            self.in_line(entry)
                && entry.namespace == namespace
                && entry.target == target
                && (key == UNKEYED || entry.key == key || entry.key == UNKEYED)
        })
    }

    /// [`ReconciliationQueue::has_later_entries`]: later entries of the
    /// key, later unkeyed entries, or for an unkeyed entry later entries of
    /// any key (of the namespace and target).
    pub(super) fn has_later(&self, serial: usize) -> bool {
        let me = &self.entries[serial];
        self.live().any(|(_, other)| {
            self.in_line(other)
                && other.order > me.order
                && other.namespace == me.namespace
                && other.target == me.target
                && (other.key == me.key || other.key == UNKEYED || me.key == UNKEYED)
        })
    }

    /// (pending, in flight, dead, blocked keys) of a target.
    pub(super) fn counts(&self, target: Side) -> (u64, u64, u64, u64) {
        let mut counts = (0, 0, 0, 0);
        for (serial, entry) in self.live().filter(|(_, entry)| entry.target == target) {
            match entry.state {
                State::Prepared(_) | State::Pending(_) => counts.0 += 1,
                State::Leased { .. } => counts.1 += 1,
                State::Dead { .. } => {
                    counts.2 += 1;
                    if self.head(entry.stream()) == Some(serial) {
                        counts.3 += 1;
                    }
                }
            }
        }
        counts
    }

    /// The claimed entries of a target whose lease surely has not expired.
    pub(super) fn surely_leased(&self, target: Side) -> u64 {
        let leased = self.live().filter(|(_, entry)| {
            entry.target == target
                && matches!(entry.state, State::Leased { until, .. } if self.passed(until) == Tri::No)
        });
        leased.count() as u64
    }

    /// Checks an `enqueued_at` the backend reported against earlier reports.
    pub(super) fn check_enqueued_at(
        &mut self,
        serial: usize,
        at: SystemTime,
    ) -> Result<(), String> {
        let slack = Duration::from_secs(60);
        let earliest = self
            .started
            .checked_sub(slack)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let latest = SystemTime::now() + slack;
        let entry = &mut self.entries[serial];
        match entry.enqueued_at {
            Some(known) if known != at => Err(format!(
                "{}: enqueued_at {at:?} differs from the {known:?} reported before",
                entry.id_text()
            )),
            Some(_) => Ok(()),
            None if at < earliest || at > latest => Err(format!(
                "{}: enqueued_at {at:?} is not the time of its append",
                entry.id_text()
            )),
            None => {
                entry.enqueued_at = Some(at);
                Ok(())
            }
        }
    }
}

impl Entry {
    pub(super) fn id_text(&self) -> String {
        format!("#{}", self.id)
    }

    pub(super) fn state_name(&self) -> &'static str {
        if self.removed {
            "removed"
        } else {
            self.state.name()
        }
    }
}
