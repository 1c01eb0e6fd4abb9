//! [`Held`]: the messages a process has been delivered and not yet
//! acknowledged, and the claims (leases) on them, which live only in that
//! process: per-key FIFO among them, retry delays, stats.

use std::collections::{BTreeMap, HashSet, VecDeque};
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
    /// Entries settled as orphans before they were delivered here (an
    /// uncertain write the worker settles out of the queue's order, a dead
    /// letter): their delivery arrives settled. The latest
    /// [`SETTLED_KEPT`] of them, since one consumed elsewhere never
    /// arrives.
    settled: VecDeque<u64>,
}

/// How many orphans settled before their delivery [`Held`] remembers.
const SETTLED_KEPT: usize = 4096;

impl<A> Default for Held<A> {
    fn default() -> Self {
        Held {
            entries: BTreeMap::new(),
            next_seq: 0,
            next_token: 1,
            settled: VecDeque::new(),
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
        mut meta: Envelope,
        payload: Vec<u8>,
        acker: A,
    ) {
        if let Some(at) = self.settled.iter().position(|id| *id == meta.id) {
            self.settled.remove(at);
            meta.uncertain = false;
        }
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

    /// Settles a held entry as an orphan, or remembers the settlement for
    /// its delivery (in this process only, like the leases).
    pub(in crate::queue) fn settle_orphan(&mut self, id: EntryId) {
        match self.entries.get_mut(&id.0) {
            Some(entry) => entry.meta.uncertain = false,
            None if !self.settled.contains(&id.0) => {
                if self.settled.len() == SETTLED_KEPT {
                    self.settled.pop_front();
                }
                self.settled.push_back(id.0);
            }
            None => {}
        }
    }

    /// Whether a later message that must follow the leased entry is held
    /// (of its key, an unkeyed one, or for an unkeyed entry of any key, on
    /// its partition); and the entry's partition, where the broker may have
    /// more.
    pub(in crate::queue) fn later_held(&self, lease: Lease) -> Result<(bool, String), QueueError> {
        let entry = self
            .entries
            .get(&lease.id.0)
            .filter(|entry| entry.is_leased_by(lease))
            .ok_or(QueueError::LeaseLost(lease.id))?;
        let later = self.entries.values().any(|other| {
            other.queue == entry.queue
                && other.seq > entry.seq
                && (other.meta.key == entry.meta.key
                    || other.meta.key == Key::UNKEYED
                    || entry.meta.key == Key::UNKEYED)
        });
        Ok((later, entry.queue.clone()))
    }

    /// Whether a held message makes `has_work` of the key true: one of the
    /// key, an unkeyed one, or for the unkeyed key any one (of the
    /// namespace and target).
    pub(in crate::queue) fn has_key(&self, namespace: &str, target: Side, key: &Key) -> bool {
        self.entries.values().any(|entry| {
            entry.meta.namespace == namespace
                && entry.meta.target == target
                && (entry.meta.key == key.as_str()
                    || entry.meta.key == Key::UNKEYED
                    || key.is_unkeyed())
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
        // Unkeyed ordering (only over one partition, so arrival order is the
        // line's): an unkeyed message waits for every earlier message of a
        // key, a message of a key for every earlier unkeyed one (of its
        // target). The targets with such an earlier message:
        let mut unkeyed_before = HashSet::new();
        let mut keyed_before = HashSet::new();
        let mut claim = Claim::default();
        let mut next: Option<Duration> = None;
        let mut more_ready = false;
        for (id, entry) in by_seq {
            let target = entry.meta.target;
            let unkeyed = entry.meta.key == Key::UNKEYED;
            let barred = if unkeyed {
                keyed_before.contains(&target)
            } else {
                unkeyed_before.contains(&target)
            };
            if unkeyed {
                unkeyed_before.insert(target);
            } else {
                keyed_before.insert(target);
            }
            if !seen.insert((target, entry.meta.key.clone())) || barred {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::NewEntry;

    fn envelope(id: u64, uncertain: bool) -> (Envelope, Vec<u8>) {
        keyed(id, "k", uncertain)
    }

    fn keyed(id: u64, key: &str, uncertain: bool) -> (Envelope, Vec<u8>) {
        Envelope::new(
            id,
            NewEntry {
                namespace: "ns".to_owned(),
                target: Side::New,
                key: Key::from(key),
                method: "put".to_owned(),
                version: 1,
                payload: b"x".to_vec(),
                reason: String::new(),
                uncertain,
            },
        )
    }

    /// An uncertain entry settled as an orphan before its delivery (the
    /// worker settles uncertain writes out of the queue's order) is not
    /// claimed as an orphan; one settled while held neither; one never
    /// settled is.
    #[test]
    fn an_orphan_settled_before_its_delivery_arrives_settled() {
        let mut held = Held::<()>::default();
        held.settle_orphan(EntryId(7));
        for id in [7, 8, 9] {
            let (meta, payload) = envelope(id, true);
            held.hold(0, "p0", meta, payload, ());
        }
        held.settle_orphan(EntryId(8));
        let mut orphaned = Vec::new();
        for _ in 0..3 {
            let claim = held.claim("ns", 1, Duration::from_secs(60));
            let claimed = &claim.entries[0];
            orphaned.push((claimed.lease.id.0, claimed.orphaned));
            held.take(claimed.lease).unwrap();
        }
        assert_eq!(orphaned, [(7, false), (8, false), (9, true)]);
        assert!(held.settled.is_empty());
    }

    fn claimed_ids(held: &mut Held<()>) -> Vec<u64> {
        let claim = held.claim("ns", 10, Duration::from_secs(60));
        claim.entries.iter().map(|entry| entry.lease.id.0).collect()
    }

    /// Over one partition (the only way unkeyed writes are accepted), an
    /// unkeyed message waits for the earlier messages of every key, and
    /// the later messages of every key wait for it; `has_work` and
    /// `has_later_entries` see them across keys.
    #[test]
    fn unkeyed_messages_keep_their_order_against_every_key() {
        let mut held = Held::<()>::default();
        for (id, key) in [(1, "k1"), (2, Key::UNKEYED), (3, "k2")] {
            let (meta, payload) = keyed(id, key, false);
            held.hold(0, "p0", meta, payload, ());
        }
        assert!(
            held.has_key("ns", Side::New, &Key::from("k3")),
            "an unkeyed one is held"
        );
        assert!(
            held.has_key("ns", Side::New, &Key::unkeyed()),
            "some are held"
        );
        assert!(!held.has_key("ns", Side::Old, &Key::unkeyed()));
        let claim = held.claim("ns", 10, Duration::from_secs(60));
        assert_eq!(claim.entries.len(), 1, "only k1's, before the unkeyed one");
        let first = claim.entries[0].lease;
        assert_eq!(first.id.0, 1);
        assert!(held.later_held(first).unwrap().0, "the unkeyed one follows");
        held.take(first).unwrap();
        let claim = held.claim("ns", 10, Duration::from_secs(60));
        assert_eq!(claim.entries.len(), 1, "the unkeyed one, before k2's");
        let unkeyed = claim.entries[0].lease;
        assert_eq!(unkeyed.id.0, 2);
        assert!(held.later_held(unkeyed).unwrap().0, "k2's follows");
        held.take(unkeyed).unwrap();
        assert_eq!(claimed_ids(&mut held), [3]);
        assert!(!held.has_key("ns", Side::New, &Key::from("k1")));
    }
}
