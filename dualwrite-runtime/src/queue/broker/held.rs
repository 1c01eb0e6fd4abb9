//! [`Held`]: the messages a process has been delivered and not yet
//! acknowledged, and the claims (leases) on them, which live only in that
//! process: per-key FIFO among them, retry delays, stats.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use super::{from_millis, Envelope};
use crate::op::Key;
use crate::queue::{Claim, ClaimedEntry, EntryId, Lease, QueueError, QueueStats};
use crate::vocabulary::Side;

/// The messages this process has been delivered and not acknowledged, by
/// entry id; `A` acknowledges one.
pub(in crate::queue) struct Held<A> {
    pub(in crate::queue) entries: BTreeMap<u64, HeldEntry<A>>,
    /// Arrival order, for FIFO among a key's held messages.
    next_seq: u64,
    next_token: u64,
}

impl<A> Default for Held<A> {
    fn default() -> Self {
        Held {
            entries: BTreeMap::new(),
            next_seq: 0,
            next_token: 1,
        }
    }
}

pub(in crate::queue) struct HeldEntry<A> {
    seq: u64,
    /// The connection (or consumer) it was delivered on.
    pub(in crate::queue) generation: u64,
    /// The partition it came from.
    pub(in crate::queue) queue: String,
    pub(in crate::queue) meta: Envelope,
    pub(in crate::queue) payload: Vec<u8>,
    pub(in crate::queue) acker: A,
    last_error: String,
    ready_at: Instant,
    lease: Option<(u64, Instant)>,
}

impl<A> Held<A> {
    /// Holds a delivered message, after every message held before it.
    pub(in crate::queue) fn hold(
        &mut self,
        generation: u64,
        queue: &str,
        meta: Envelope,
        payload: Vec<u8>,
        acker: A,
    ) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let last_error = meta.reason.clone();
        self.entries.insert(
            meta.id,
            HeldEntry {
                seq,
                generation,
                queue: queue.to_owned(),
                meta,
                payload,
                acker,
                last_error,
                ready_at: Instant::now(),
                lease: None,
            },
        );
    }

    /// Runs `change` on the entry `lease` holds, or refuses a lease no
    /// longer held.
    pub(in crate::queue) fn with_lease<T>(
        &mut self,
        lease: Lease,
        change: impl FnOnce(&mut HeldEntry<A>) -> T,
    ) -> Result<T, QueueError> {
        match self.entries.get_mut(&lease.id.0) {
            Some(entry) if entry.is_leased_by(lease) => Ok(change(entry)),
            _ => Err(QueueError::LeaseLost(lease.id)),
        }
    }

    /// Takes a leased entry out (to acknowledge or dead-letter it).
    pub(in crate::queue) fn take(&mut self, lease: Lease) -> Result<HeldEntry<A>, QueueError> {
        match self.entries.get(&lease.id.0) {
            Some(entry) if entry.is_leased_by(lease) => {
                Ok(self.entries.remove(&lease.id.0).expect("just seen"))
            }
            _ => Err(QueueError::LeaseLost(lease.id)),
        }
    }

    pub(in crate::queue) fn renew(
        &mut self,
        lease: Lease,
        duration: Duration,
    ) -> Result<(), QueueError> {
        self.with_lease(lease, |entry| {
            entry.lease = Some((lease.token, Instant::now() + duration));
        })
    }

    /// Keeps the message unacknowledged and holds it back for `delay`.
    pub(in crate::queue) fn retry_later(
        &mut self,
        lease: Lease,
        error: &str,
        delay: Duration,
    ) -> Result<(), QueueError> {
        self.with_lease(lease, |entry| {
            entry.lease = None;
            entry.meta.attempts += 1;
            entry.last_error = error.to_owned();
            entry.ready_at = Instant::now() + delay;
        })
    }

    pub(in crate::queue) fn release(&mut self, lease: Lease) -> Result<(), QueueError> {
        self.with_lease(lease, |entry| entry.lease = None)
    }

    pub(in crate::queue) fn settle_orphan(&mut self, id: EntryId) {
        if let Some(entry) = self.entries.get_mut(&id.0) {
            entry.meta.uncertain = false;
        }
    }

    /// Whether a later message of the leased entry's key is held; and the
    /// entry's partition, where the broker may have more.
    pub(in crate::queue) fn later_held(&self, lease: Lease) -> Result<(bool, String), QueueError> {
        let entry = self
            .entries
            .get(&lease.id.0)
            .filter(|entry| entry.is_leased_by(lease))
            .ok_or(QueueError::LeaseLost(lease.id))?;
        let later = self.entries.values().any(|other| {
            other.queue == entry.queue && other.meta.key == entry.meta.key && other.seq > entry.seq
        });
        Ok((later, entry.queue.clone()))
    }

    /// Whether a message of the key is held.
    pub(in crate::queue) fn has_key(&self, namespace: &str, target: Side, key: &Key) -> bool {
        self.entries.values().any(|entry| {
            entry.meta.namespace == namespace
                && entry.meta.target == target
                && entry.meta.key == key.as_str()
        })
    }

    /// How many messages of partition `queue` are held.
    pub(in crate::queue) fn count_in(&self, queue: &str) -> usize {
        self.entries
            .values()
            .filter(|entry| entry.queue == queue)
            .count()
    }

    /// Forgets the messages delivered on a lost connection (the broker
    /// delivers them again).
    pub(in crate::queue) fn forget(&mut self, generation: u64) {
        self.entries.retain(|_, held| held.generation != generation);
    }

    /// Counts the held messages: leased ones in flight, the others pending;
    /// the oldest enqueued of them.
    pub(in crate::queue) fn count_into(&self, stats: &mut QueueStats) {
        let now = Instant::now();
        for entry in self.entries.values() {
            let target = stats.target_mut(entry.meta.target);
            if entry.lease.is_some_and(|(_, until)| until > now) {
                target.in_flight += 1;
            } else {
                target.pending += 1;
            }
            let enqueued = from_millis(entry.meta.enqueued_ms);
            target.oldest_pending = Some(
                target
                    .oldest_pending
                    .map_or(enqueued, |oldest| oldest.min(enqueued)),
            );
        }
    }

    /// Leases, for each key of `namespace`, its earliest held message if it
    /// is ready, up to `limit` of them.
    pub(in crate::queue) fn claim(
        &mut self,
        namespace: &str,
        limit: usize,
        lease: Duration,
    ) -> Claim {
        let now = Instant::now();
        let mut next_token = self.next_token;
        let mut by_seq: Vec<(&u64, &mut HeldEntry<A>)> = self
            .entries
            .iter_mut()
            .filter(|(_, entry)| entry.meta.namespace == namespace)
            .collect();
        by_seq.sort_by_key(|(_, entry)| entry.seq);
        let mut seen = HashSet::new();
        let mut claim = Claim::default();
        let mut next: Option<Duration> = None;
        let mut more_ready = false;
        for (id, entry) in by_seq {
            if !seen.insert((entry.meta.target, entry.meta.key.clone())) {
                continue;
            }
            let free_at = match entry.lease {
                Some((_, until)) => until.max(entry.ready_at),
                None => entry.ready_at,
            };
            if free_at > now {
                let wait = free_at - now;
                next = Some(next.map_or(wait, |next| next.min(wait)));
                continue;
            }
            if claim.entries.len() == limit {
                more_ready = true;
                continue;
            }
            let token = next_token;
            next_token += 1;
            entry.lease = Some((token, now + lease));
            claim.entries.push(ClaimedEntry {
                lease: Lease {
                    id: EntryId(*id),
                    token,
                },
                namespace: entry.meta.namespace.clone(),
                target: entry.meta.target,
                key: entry.meta.key(),
                method: entry.meta.method.clone(),
                version: entry.meta.version,
                payload: entry.payload.clone(),
                attempts: entry.meta.attempts,
                enqueued_at: from_millis(entry.meta.enqueued_ms),
                last_error: entry.last_error.clone(),
                orphaned: entry.meta.uncertain,
            });
        }
        self.next_token = next_token;
        claim.next_ready_in = if more_ready {
            Some(Duration::ZERO)
        } else if claim.entries.is_empty() {
            next
        } else {
            None
        };
        claim
    }
}

impl<A> HeldEntry<A> {
    fn is_leased_by(&self, lease: Lease) -> bool {
        self.lease.is_some_and(|(token, _)| token == lease.token)
    }
}
