//! What the message-broker backends (RabbitMQ, NATS JetStream) share.
//!
//! A broker keeps each entry as a message on one of a fixed set of
//! *partitions* per namespace and target (a key always on the same one, so
//! a partition consumed by one consumer at a time keeps each key's order).
//! Written here once:
//!
//! - the [`Envelope`]: the entry's metadata that travels beside the payload
//!   (in a message header, as JSON), and how it becomes a [`DeadLetter`];
//! - [`partition`]: which partition a key is on;
//! - [`IdClock`]: entry ids that grow across restarts (microseconds since
//!   the epoch, then one more per append);
//! - [`Held`]: the messages a process has been delivered and not yet
//!   acknowledged, and the claims (leases) on them, which live only in that
//!   process: per-key FIFO among them, retry delays, stats;
//! - the checks of options and namespaces, and [`capabilities`], so both
//!   brokers refuse what they cannot do with errors worded alike;
//! - [`broker_queue_impl!`](broker_queue_impl), the trait calls both
//!   answer the same way (write-ahead refused, leases kept here).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    Claim, ClaimedEntry, DeadLetter, EntryId, Lease, NewEntry, QueueCapabilities, QueueError,
    QueueStats,
};
use crate::op::Key;
use crate::vocabulary::Side;

/// What travels beside the payload of every broker message (the body is
/// the payload).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Envelope {
    pub(super) id: u64,
    pub(super) namespace: String,
    pub(super) target: Side,
    pub(super) key: String,
    pub(super) method: String,
    pub(super) version: u32,
    pub(super) reason: String,
    pub(super) uncertain: bool,
    pub(super) enqueued_ms: u64,
    pub(super) attempts: u32,
    #[serde(default)]
    pub(super) died_ms: u64,
}

impl Envelope {
    /// The envelope of a new entry, and its payload.
    pub(super) fn new(id: u64, entry: NewEntry) -> (Envelope, Vec<u8>) {
        let envelope = Envelope {
            id,
            namespace: entry.namespace,
            target: entry.target,
            key: entry.key.as_str().to_owned(),
            method: entry.method,
            version: entry.version,
            reason: entry.reason,
            uncertain: entry.uncertain,
            enqueued_ms: millis(SystemTime::now()),
            attempts: 0,
            died_ms: 0,
        };
        (envelope, entry.payload)
    }

    /// The header's text.
    pub(super) fn encode(&self) -> Result<String, QueueError> {
        serde_json::to_string(self).map_err(QueueError::Encode)
    }

    /// Reads a header's text.
    pub(super) fn decode(text: &[u8]) -> Result<Envelope, String> {
        serde_json::from_slice(text)
            .map_err(|error| format!("the `dualwrite` header does not decode: {error}"))
    }

    /// The key, as the queue's calls take it.
    pub(super) fn key(&self) -> Key {
        Key::from(self.key.as_str())
    }

    /// Records the final failed attempt before the entry is published as a
    /// dead letter.
    pub(super) fn kill(&mut self, error: &str) {
        self.attempts += 1;
        self.reason = error.to_owned();
        self.died_ms = millis(SystemTime::now());
    }

    /// Resets a dead letter to be published again as a pending entry.
    pub(super) fn revive(&mut self) {
        self.attempts = 0;
        self.died_ms = 0;
    }

    pub(super) fn into_dead_letter(self, payload: Vec<u8>) -> DeadLetter {
        DeadLetter {
            id: EntryId(self.id),
            namespace: self.namespace,
            target: self.target,
            key: Key::from(self.key),
            method: self.method,
            version: self.version,
            payload,
            attempts: self.attempts,
            error: self.reason,
            enqueued_at: from_millis(self.enqueued_ms),
            died_at: from_millis(self.died_ms),
        }
    }
}

/// The partition a key's entries are on, of `partitions`.
pub(super) fn partition(key: &Key, partitions: u16) -> u16 {
    (key.fingerprint() % u64::from(partitions)) as u16
}

/// Entry ids: microseconds since the epoch at the first append, then one
/// more than the last (so ids of one process grow, and a restarted process
/// starts above the ids it handed out before, barring a clock step back).
pub(super) struct IdClock(AtomicU64);

impl IdClock {
    pub(super) fn new() -> Self {
        IdClock(AtomicU64::new(millis(SystemTime::now()) * 1000))
    }

    pub(super) fn next(&self) -> u64 {
        let now = millis(SystemTime::now()) * 1000;
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(last.max(now) + 1)
            })
            .map_or(now, |last| last.max(now) + 1)
    }
}

pub(super) fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

pub(super) fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A broker client's error as the queue's.
pub(super) fn backend(error: impl std::error::Error + Send + Sync + 'static) -> QueueError {
    QueueError::Backend(Box::new(error))
}

/// A call of the contract the broker cannot serve.
pub(super) fn refused(backend: &str, what: &str) -> QueueError {
    QueueError::Backend(format!("the {backend} queue cannot {what}").into())
}

/// What a broker queue of `partitions` partitions does of the contract.
pub(super) fn capabilities(backend: &'static str, partitions: u16) -> QueueCapabilities {
    QueueCapabilities {
        backend,
        write_ahead: false,
        blocking_dead_letters: false,
        key_independent_delays: false,
        exact_key_work: false,
        unkeyed_order: partitions == 1,
        key_entries: false,
    }
}

/// Refuses an unkeyed entry over several partitions: its order against
/// every key needs one line.
pub(super) fn check_unkeyed(
    backend: &str,
    entry: &NewEntry,
    partitions: u16,
) -> Result<(), QueueError> {
    if entry.is_unkeyed() && partitions > 1 {
        return Err(refused(
            backend,
            &format!(
                "order an unkeyed write ({}) against every key over {partitions} partitions: open it with `partitions(1)` for a namespace with unkeyed writes",
                entry.method
            ),
        ));
    }
    Ok(())
}

/// Checks the options every broker queue has.
pub(super) fn check_options(
    backend: &str,
    partitions: u16,
    prefetch: u16,
    prefix: &str,
) -> Result<(), QueueError> {
    if partitions == 0 {
        return Err(invalid_option(backend, "`partitions` must be at least 1"));
    }
    if prefetch == 0 {
        return Err(invalid_option(backend, "`prefetch` must be at least 1"));
    }
    if prefix.is_empty() {
        return Err(invalid_option(backend, "`prefix` must not be empty"));
    }
    Ok(())
}

/// An option the backend cannot open with: `what` names it and says why.
pub(super) fn invalid_option(backend: &str, what: &str) -> QueueError {
    QueueError::Backend(format!("{backend} queue option {what}").into())
}

/// Waits until a delivery arrives (`arrived` is notified) or 20 ms pass,
/// unless `deadline` has passed: then returns `false` at once.
pub(super) async fn await_arrival(arrived: &Notify, deadline: Instant) -> bool {
    let now = Instant::now();
    if now >= deadline {
        return false;
    }
    let arrival = arrived.notified();
    let _ = tokio::time::timeout((deadline - now).min(Duration::from_millis(20)), arrival).await;
    true
}

/// Refuses a namespace the broker's names cannot carry: empty, with
/// whitespace, or with one of `forbidden`.
pub(super) fn check_namespace(
    backend: &str,
    namespace: &str,
    forbidden: &[char],
) -> Result<(), QueueError> {
    if namespace.is_empty()
        || namespace.contains(char::is_whitespace)
        || namespace.contains(forbidden)
    {
        let also = if forbidden.is_empty() {
            String::new()
        } else {
            format!(" or one of {forbidden:?}")
        };
        return Err(QueueError::Backend(
            format!("the {backend} queue cannot name queues after the namespace {namespace:?}: it is empty or has whitespace{also}").into(),
        ));
    }
    Ok(())
}

/// The messages this process has been delivered and not acknowledged, by
/// entry id; `A` acknowledges one.
pub(super) struct Held<A> {
    pub(super) entries: BTreeMap<u64, HeldEntry<A>>,
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

pub(super) struct HeldEntry<A> {
    seq: u64,
    /// The connection (or consumer) it was delivered on.
    pub(super) generation: u64,
    /// The partition it came from.
    pub(super) queue: String,
    pub(super) meta: Envelope,
    pub(super) payload: Vec<u8>,
    pub(super) acker: A,
    last_error: String,
    ready_at: Instant,
    lease: Option<(u64, Instant)>,
}

impl<A> Held<A> {
    /// Holds a delivered message, after every message held before it.
    pub(super) fn hold(
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
    pub(super) fn with_lease<T>(
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
    pub(super) fn take(&mut self, lease: Lease) -> Result<HeldEntry<A>, QueueError> {
        match self.entries.get(&lease.id.0) {
            Some(entry) if entry.is_leased_by(lease) => {
                Ok(self.entries.remove(&lease.id.0).expect("just seen"))
            }
            _ => Err(QueueError::LeaseLost(lease.id)),
        }
    }

    pub(super) fn renew(&mut self, lease: Lease, duration: Duration) -> Result<(), QueueError> {
        self.with_lease(lease, |entry| {
            entry.lease = Some((lease.token, Instant::now() + duration));
        })
    }

    /// Keeps the message unacknowledged and holds it back for `delay`.
    pub(super) fn retry_later(
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

    pub(super) fn release(&mut self, lease: Lease) -> Result<(), QueueError> {
        self.with_lease(lease, |entry| entry.lease = None)
    }

    pub(super) fn settle_orphan(&mut self, id: EntryId) {
        if let Some(entry) = self.entries.get_mut(&id.0) {
            entry.meta.uncertain = false;
        }
    }

    /// Whether a later message of the leased entry's key is held; and the
    /// entry's partition, where the broker may have more.
    pub(super) fn later_held(&self, lease: Lease) -> Result<(bool, String), QueueError> {
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
    pub(super) fn has_key(&self, namespace: &str, target: Side, key: &Key) -> bool {
        self.entries.values().any(|entry| {
            entry.meta.namespace == namespace
                && entry.meta.target == target
                && entry.meta.key == key.as_str()
        })
    }

    /// How many messages of partition `queue` are held.
    pub(super) fn count_in(&self, queue: &str) -> usize {
        self.entries
            .values()
            .filter(|entry| entry.queue == queue)
            .count()
    }

    /// Forgets the messages delivered on a lost connection (the broker
    /// delivers them again).
    pub(super) fn forget(&mut self, generation: u64) {
        self.entries.retain(|_, held| held.generation != generation);
    }

    /// Counts the held messages: leased ones in flight, the others pending;
    /// the oldest enqueued of them.
    pub(super) fn count_into(&self, stats: &mut QueueStats) {
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
    pub(super) fn claim(&mut self, namespace: &str, limit: usize, lease: Duration) -> Claim {
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

/// `impl ReconciliationQueue for $queue { $calls }` with the calls every
/// broker queue answers alike added to the backend's own `$calls`:
/// `capabilities`, the write-ahead calls (refused), the lease calls on the
/// held messages, `key_entries` (refused: a queue cannot be read without
/// consuming it) and `flush` (every append returned after the broker
/// stored it). The type needs `fn held(&self) -> MutexGuard<'_, Held<_>>`
/// and `fn partitions(&self) -> u16`. (A macro around the whole `impl`, so
/// that `async_trait` sees every call expanded.)
macro_rules! broker_queue_impl {
    ($queue:ty, $backend:expr, { $($calls:tt)* }) => {
        #[::async_trait::async_trait]
        impl $crate::queue::ReconciliationQueue for $queue {
        $($calls)*

        fn capabilities(&self) -> $crate::queue::QueueCapabilities {
            $crate::queue::broker::capabilities($backend, self.partitions())
        }

        async fn prepare(
            &self,
            _entry: $crate::queue::NewEntry,
            _expiry: ::std::time::Duration,
        ) -> Result<$crate::queue::EntryId, $crate::queue::QueueError> {
            Err($crate::queue::broker::refused(
                $backend,
                "write ahead (prepare): use Delivery::Sync",
            ))
        }

        async fn commit(
            &self,
            _id: $crate::queue::EntryId,
        ) -> Result<(), $crate::queue::QueueError> {
            Err($crate::queue::broker::refused(
                $backend,
                "write ahead (commit): use Delivery::Sync",
            ))
        }

        async fn commit_uncertain(
            &self,
            _id: $crate::queue::EntryId,
        ) -> Result<(), $crate::queue::QueueError> {
            Err($crate::queue::broker::refused(
                $backend,
                "write ahead (commit_uncertain): use Delivery::Sync",
            ))
        }

        async fn abort(&self, _id: $crate::queue::EntryId) -> Result<(), $crate::queue::QueueError> {
            Err($crate::queue::broker::refused(
                $backend,
                "write ahead (abort): use Delivery::Sync",
            ))
        }

        async fn settle_orphan(
            &self,
            id: $crate::queue::EntryId,
        ) -> Result<(), $crate::queue::QueueError> {
            self.held().settle_orphan(id);
            Ok(())
        }

        async fn renew(
            &self,
            lease: $crate::queue::Lease,
            duration: ::std::time::Duration,
        ) -> Result<(), $crate::queue::QueueError> {
            self.held().renew(lease, duration)
        }

        async fn retry_later(
            &self,
            lease: $crate::queue::Lease,
            error: &str,
            delay: ::std::time::Duration,
        ) -> Result<(), $crate::queue::QueueError> {
            self.held().retry_later(lease, error, delay)
        }

        async fn release(&self, lease: $crate::queue::Lease) -> Result<(), $crate::queue::QueueError> {
            self.held().release(lease)
        }

        async fn key_entries(
            &self,
            _namespace: &str,
            _target: $crate::vocabulary::Side,
            _key: &$crate::op::Key,
        ) -> Result<Vec<$crate::queue::QueuedEntry>, $crate::queue::QueueError> {
            Err($crate::queue::broker::refused(
                $backend,
                "list a key's entries: a queue cannot be read without consuming it (see `stats` and `dead_letters`)",
            ))
        }

        async fn flush(&self) -> Result<(), $crate::queue::QueueError> {
            // Every append returned after the broker stored it; settles are
            // acknowledgements, which a lost connection turns into
            // redeliveries.
            Ok(())
        }
        }
    };
}
pub(super) use broker_queue_impl;
