use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::time::Instant;

use super::{
    Claim, ClaimedEntry, DeadLetter, EntryId, EntryState, Lease, NewEntry, PoisonPolicy,
    QueueError, QueueStats, QueuedEntry, ReconciliationQueue,
};
use crate::op::Key;
use crate::vocabulary::Side;

/// A reconciliation queue held in process memory.
///
/// Correct in every respect but durability: its contents are lost when the
/// process exits. Use it in tests, or where a restart may lose queued follower
/// writes (a later verify-and-repair pass then finds the gaps). It uses
/// `tokio`'s clock, so tests with a paused clock see retry delays elapse.
#[derive(Debug, Default)]
pub struct InMemoryQueue {
    state: Mutex<State>,
    poison: PoisonPolicy,
}

type StreamKey = (String, Side, Key);

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    next_token: u64,
    entries: HashMap<u64, Stored>,
    /// Entry ids per key, oldest first. A key disappears with its last entry.
    streams: BTreeMap<StreamKey, VecDeque<u64>>,
    /// Where the last claim stopped, so that busy keys cannot starve others.
    cursor: Option<StreamKey>,
}

#[derive(Debug)]
struct Stored {
    entry: NewEntry,
    /// Claimed once as an orphaned prepared entry: stays one until applied.
    orphaned: bool,
    attempts: u32,
    last_error: String,
    enqueued_at: SystemTime,
    status: Status,
}

#[derive(Debug, Clone, Copy)]
enum Status {
    /// Prepared by a writer; claimable as an orphan from `expires_at`.
    Prepared {
        expires_at: Instant,
    },
    Pending {
        ready_at: Instant,
    },
    Leased {
        token: u64,
        until: Instant,
    },
    Dead {
        died_at: SystemTime,
    },
}

/// `now + wait`, saturating at a century from now, so that a huge expiry
/// or delay (`Duration::MAX`) means "practically never", not a panic.
fn later(now: Instant, wait: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(wait.min(CENTURY))
        .unwrap_or(now + Duration::from_secs(365 * 24 * 3600))
}

impl InMemoryQueue {
    /// An empty queue whose dead letters block their key ([`PoisonPolicy::Block`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty queue with the given [`PoisonPolicy`].
    pub fn with_poison_policy(poison: PoisonPolicy) -> Self {
        InMemoryQueue {
            poison,
            ..Self::default()
        }
    }

    /// The first entry of a key that may be worked on: its head, or under
    /// [`PoisonPolicy::Skip`] its first entry that is not dead.
    fn workable(&self, state: &State, ids: &VecDeque<u64>) -> Option<u64> {
        match self.poison {
            PoisonPolicy::Block => ids.front().copied(),
            PoisonPolicy::Skip => ids.iter().copied().find(|id| {
                state
                    .entries
                    .get(id)
                    .is_some_and(|stored| !matches!(stored.status, Status::Dead { .. }))
            }),
        }
    }

    /// Whether an entry counts for ordering: under [`PoisonPolicy::Skip`]
    /// dead entries are out of line.
    fn in_line(&self, stored: &Stored) -> bool {
        self.poison == PoisonPolicy::Block || !matches!(stored.status, Status::Dead { .. })
    }

    /// Whether the head `id` of `stream` must wait for another key's entry:
    /// an unkeyed head waits for every older entry of its namespace and
    /// target; a keyed head waits for older unkeyed entries.
    fn behind_barrier(&self, state: &State, stream: &StreamKey, id: u64) -> bool {
        let (namespace, target, key) = stream;
        let older_in_line = |ids: &VecDeque<u64>| {
            ids.iter().any(|other| {
                *other < id
                    && state
                        .entries
                        .get(other)
                        .is_some_and(|stored| self.in_line(stored))
            })
        };
        if key.is_unkeyed() {
            state
                .streams
                .range((namespace.clone(), *target, Key::from(""))..)
                .take_while(|((ns, side, _), _)| ns == namespace && side == target)
                .any(|((_, _, other), ids)| !other.is_unkeyed() && older_in_line(ids))
        } else {
            state
                .streams
                .get(&(namespace.clone(), *target, Key::unkeyed()))
                .is_some_and(older_in_line)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated
        // in a way that loses entries (every mutation is a single step), so a
        // poisoned lock is still safe to use.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn leased(&mut self, lease: Lease) -> Result<&mut Stored, QueueError> {
        match self.entries.get_mut(&lease.id.0) {
            Some(stored) if matches!(stored.status, Status::Leased { token, .. } if token == lease.token) => {
                Ok(stored)
            }
            _ => Err(QueueError::LeaseLost(lease.id)),
        }
    }

    fn stream_key(entry: &NewEntry) -> StreamKey {
        (entry.namespace.clone(), entry.target, entry.key.clone())
    }

    fn remove(&mut self, id: u64) -> Option<Stored> {
        let stored = self.entries.remove(&id)?;
        let stream_key = Self::stream_key(&stored.entry);
        if let Some(ids) = self.streams.get_mut(&stream_key) {
            ids.retain(|other| *other != id);
            if ids.is_empty() {
                self.streams.remove(&stream_key);
            }
        }
        Some(stored)
    }
}

#[async_trait]
impl ReconciliationQueue for InMemoryQueue {
    fn capabilities(&self) -> super::QueueCapabilities {
        super::QueueCapabilities::full("in-memory")
    }

    async fn append(&self, entry: NewEntry) -> Result<EntryId, QueueError> {
        Ok(self.insert(
            entry,
            Status::Pending {
                ready_at: Instant::now(),
            },
        ))
    }

    async fn prepare(&self, entry: NewEntry, expiry: Duration) -> Result<EntryId, QueueError> {
        Ok(self.insert(
            entry,
            Status::Prepared {
                expires_at: later(Instant::now(), expiry),
            },
        ))
    }

    async fn commit_uncertain(&self, id: EntryId) -> Result<(), QueueError> {
        let mut state = self.lock();
        if let Some(stored) = state.entries.get_mut(&id.0) {
            if matches!(stored.status, Status::Prepared { .. }) {
                stored.status = Status::Prepared {
                    expires_at: Instant::now(),
                };
            }
        }
        Ok(())
    }

    async fn commit(&self, id: EntryId) -> Result<(), QueueError> {
        let mut state = self.lock();
        if let Some(stored) = state.entries.get_mut(&id.0) {
            if matches!(stored.status, Status::Prepared { .. }) {
                stored.status = Status::Pending {
                    ready_at: Instant::now(),
                };
            }
        }
        Ok(())
    }

    async fn abort(&self, id: EntryId) -> Result<(), QueueError> {
        let mut state = self.lock();
        // Also once claimed as an orphan: the writer is alive after all, and
        // its authoritative write failed, so the worker must not replay it.
        let withdrawable = |stored: &Stored| {
            matches!(stored.status, Status::Prepared { .. })
                || (stored.orphaned && matches!(stored.status, Status::Leased { .. }))
        };
        if state.entries.get(&id.0).is_some_and(withdrawable) {
            state.remove(id.0);
        }
        Ok(())
    }

    async fn has_later_entries(&self, lease: Lease) -> Result<bool, QueueError> {
        let mut state = self.lock();
        let (namespace, target, key) = State::stream_key(&state.leased(lease)?.entry);
        let id = lease.id.0;
        let later = |ids: &VecDeque<u64>| ids.iter().any(|other| *other > id);
        let mut streams = state
            .streams
            .range((namespace.clone(), target, Key::from(""))..)
            .take_while(|((ns, side, _), _)| *ns == namespace && *side == target);
        Ok(streams.any(|((_, _, other), ids)| {
            (*other == key || key.is_unkeyed() || other.is_unkeyed()) && later(ids)
        }))
    }

    async fn settle_orphan(&self, id: EntryId) -> Result<(), QueueError> {
        let mut state = self.lock();
        if let Some(stored) = state.entries.get_mut(&id.0) {
            stored.orphaned = false;
            if matches!(stored.status, Status::Prepared { .. }) {
                stored.status = Status::Pending {
                    ready_at: Instant::now(),
                };
            }
        }
        Ok(())
    }

    async fn has_work(&self, namespace: &str, target: Side, key: &Key) -> Result<bool, QueueError> {
        let state = self.lock();
        let busy = |key: &Key| {
            state
                .streams
                .get(&(namespace.to_owned(), target, key.clone()))
                .is_some_and(|ids| {
                    self.workable(&state, ids).is_some() || self.poison == PoisonPolicy::Block
                })
        };
        if key.is_unkeyed() {
            // Any key of the namespace: the unkeyed write goes behind it all.
            return Ok(state
                .streams
                .range((namespace.to_owned(), target, Key::from(""))..)
                .take_while(|((ns, side, _), _)| ns == namespace && *side == target)
                .any(|((_, _, other), _)| busy(other)));
        }
        Ok(busy(key) || busy(&Key::unkeyed()))
    }
    async fn claim(
        &self,
        namespace: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Claim, QueueError> {
        let now = Instant::now();
        let mut guard = self.lock();
        let state = &mut *guard;
        // Start after the key claimed last and wrap around, so that keys with
        // a steady stream of work cannot starve the others.
        let ordered: Vec<(&StreamKey, &VecDeque<u64>)> = match &state.cursor {
            Some(cursor) => state
                .streams
                .range((Bound::Excluded(cursor.clone()), Bound::Unbounded))
                .chain(
                    state
                        .streams
                        .range((Bound::Unbounded, Bound::Included(cursor.clone()))),
                )
                .collect(),
            None => state.streams.iter().collect(),
        };
        let heads: Vec<(StreamKey, u64)> = ordered
            .into_iter()
            .filter(|(key, _)| key.0 == namespace)
            .filter_map(|(key, ids)| self.workable(state, ids).map(|id| (key.clone(), id)))
            .filter(|(key, id)| !self.behind_barrier(state, key, *id))
            .collect();
        let mut claim = Claim::default();
        for (stream_key, id) in heads {
            let Some(stored) = state.entries.get_mut(&id) else {
                continue;
            };
            let ready = match stored.status {
                Status::Pending { ready_at } if ready_at <= now => true,
                Status::Pending { ready_at } => {
                    let wait = ready_at - now;
                    claim.next_ready_in =
                        Some(claim.next_ready_in.map_or(wait, |other| other.min(wait)));
                    false
                }
                Status::Leased { until, .. } if until <= now => true,
                Status::Leased { until, .. } => {
                    let wait = until - now;
                    claim.next_ready_in =
                        Some(claim.next_ready_in.map_or(wait, |other| other.min(wait)));
                    false
                }
                Status::Prepared { expires_at } if expires_at <= now => true,
                Status::Prepared { expires_at } => {
                    let wait = expires_at - now;
                    claim.next_ready_in =
                        Some(claim.next_ready_in.map_or(wait, |other| other.min(wait)));
                    false
                }
                Status::Dead { .. } => false,
            };
            if !ready {
                continue;
            }
            if claim.entries.len() == limit {
                claim.next_ready_in = Some(Duration::ZERO);
                break;
            }
            let orphaned = matches!(stored.status, Status::Prepared { .. }) || stored.orphaned;
            stored.orphaned = orphaned;
            state.next_token += 1;
            let token = state.next_token;
            stored.status = Status::Leased {
                token,
                until: later(now, lease),
            };
            claim.entries.push(ClaimedEntry {
                lease: Lease {
                    id: EntryId(id),
                    token,
                },
                namespace: stored.entry.namespace.clone(),
                target: stored.entry.target,
                key: stored.entry.key.clone(),
                method: stored.entry.method.clone(),
                version: stored.entry.version,
                payload: stored.entry.payload.clone(),
                attempts: stored.attempts,
                enqueued_at: stored.enqueued_at,
                last_error: stored.last_error.clone(),
                orphaned,
            });
            state.cursor = Some(stream_key);
        }
        Ok(claim)
    }

    async fn renew(&self, lease: Lease, duration: Duration) -> Result<(), QueueError> {
        let mut state = self.lock();
        let stored = state.leased(lease)?;
        stored.status = Status::Leased {
            token: lease.token,
            until: later(Instant::now(), duration),
        };
        Ok(())
    }

    async fn complete(&self, lease: Lease) -> Result<(), QueueError> {
        let mut state = self.lock();
        state.leased(lease)?;
        state.remove(lease.id.0);
        Ok(())
    }

    async fn retry_later(
        &self,
        lease: Lease,
        error: &str,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let mut state = self.lock();
        let stored = state.leased(lease)?;
        stored.attempts += 1;
        stored.last_error = error.to_owned();
        stored.status = Status::Pending {
            ready_at: later(Instant::now(), delay),
        };
        Ok(())
    }

    async fn release(&self, lease: Lease) -> Result<(), QueueError> {
        let mut state = self.lock();
        let stored = state.leased(lease)?;
        stored.status = Status::Pending {
            ready_at: Instant::now(),
        };
        Ok(())
    }

    async fn dead_letter(&self, lease: Lease, error: &str) -> Result<(), QueueError> {
        let mut state = self.lock();
        let stored = state.leased(lease)?;
        stored.attempts += 1;
        stored.last_error = error.to_owned();
        stored.status = Status::Dead {
            died_at: SystemTime::now(),
        };
        Ok(())
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        let state = self.lock();
        let mut dead: Vec<DeadLetter> = state
            .entries
            .iter()
            .filter_map(|(id, stored)| match stored.status {
                Status::Dead { died_at } => Some(DeadLetter {
                    id: EntryId(*id),
                    namespace: stored.entry.namespace.clone(),
                    target: stored.entry.target,
                    key: stored.entry.key.clone(),
                    method: stored.entry.method.clone(),
                    version: stored.entry.version,
                    payload: stored.entry.payload.clone(),
                    attempts: stored.attempts,
                    error: stored.last_error.clone(),
                    enqueued_at: stored.enqueued_at,
                    died_at,
                }),
                _ => None,
            })
            .collect();
        dead.sort_by_key(|letter| letter.id);
        Ok(dead)
    }

    async fn retry_dead(&self, id: EntryId) -> Result<(), QueueError> {
        let mut state = self.lock();
        match state.entries.get_mut(&id.0) {
            Some(stored) if matches!(stored.status, Status::Dead { .. }) => {
                stored.attempts = 0;
                stored.status = Status::Pending {
                    ready_at: Instant::now(),
                };
                Ok(())
            }
            _ => Err(QueueError::NotDead(id)),
        }
    }

    async fn drop_dead(&self, id: EntryId) -> Result<(), QueueError> {
        let mut state = self.lock();
        match state.entries.get(&id.0) {
            Some(stored) if matches!(stored.status, Status::Dead { .. }) => {
                state.remove(id.0);
                Ok(())
            }
            _ => Err(QueueError::NotDead(id)),
        }
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let state = self.lock();
        let mut stats = QueueStats::default();
        for stored in state.entries.values() {
            let target = stats.target_mut(stored.entry.target);
            match stored.status {
                Status::Prepared { .. } | Status::Pending { .. } => target.pending += 1,
                Status::Leased { .. } => target.in_flight += 1,
                Status::Dead { .. } => {
                    target.dead += 1;
                    if self.poison == PoisonPolicy::Block {
                        target.blocked_keys += 1;
                    }
                }
            }
            if !matches!(stored.status, Status::Dead { .. }) {
                target.oldest_pending = Some(
                    target
                        .oldest_pending
                        .map_or(stored.enqueued_at, |other| other.min(stored.enqueued_at)),
                );
            }
        }
        Ok(stats)
    }

    async fn key_entries(
        &self,
        namespace: &str,
        target: Side,
        key: &Key,
    ) -> Result<Vec<QueuedEntry>, QueueError> {
        let state = self.lock();
        let stream = (namespace.to_owned(), target, key.clone());
        let Some(ids) = state.streams.get(&stream) else {
            return Ok(Vec::new());
        };
        let entries = ids.iter().filter_map(|id| {
            let stored = state.entries.get(id)?;
            Some(QueuedEntry {
                id: EntryId(*id),
                state: match stored.status {
                    Status::Prepared { .. } => EntryState::Prepared,
                    Status::Pending { .. } => EntryState::Pending,
                    Status::Leased { .. } => EntryState::InFlight,
                    Status::Dead { .. } => EntryState::Dead,
                },
                method: stored.entry.method.clone(),
                version: stored.entry.version,
                payload: stored.entry.payload.clone(),
                attempts: stored.attempts,
                last_error: stored.last_error.clone(),
                enqueued_at: stored.enqueued_at,
                orphaned: stored.orphaned,
            })
        });
        Ok(entries.collect())
    }

    /// Every change is complete when its call returns: nothing to wait for.
    async fn flush(&self) -> Result<(), QueueError> {
        Ok(())
    }
}

impl InMemoryQueue {
    fn insert(&self, entry: NewEntry, status: Status) -> EntryId {
        let mut state = self.lock();
        state.next_id += 1;
        let id = state.next_id;
        let stream_key = State::stream_key(&entry);
        let last_error = entry.reason.clone();
        let orphaned = entry.uncertain;
        state.entries.insert(
            id,
            Stored {
                entry,
                orphaned,
                attempts: 0,
                last_error,
                enqueued_at: SystemTime::now(),
                status,
            },
        );
        state.streams.entry(stream_key).or_default().push_back(id);
        EntryId(id)
    }
}
