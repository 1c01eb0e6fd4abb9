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
//! - [`IdClock`]: entry ids unique across the processes appending to a
//!   queue;
//! - [`Held`]: the messages a process has been delivered and not yet
//!   acknowledged, and the claims (leases) on them, which live only in that
//!   process: per-key FIFO among them, retry delays, stats, and orphans
//!   settled before their delivery;
//! - the checks of options and namespaces, and [`capabilities`], so both
//!   brokers refuse what they cannot do with errors worded alike;
//! - [`broker_queue_impl!`](broker_queue_impl), the trait calls both
//!   answer the same way (write-ahead refused, leases kept here).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{DeadLetter, EntryId, NewEntry, QueueCapabilities, QueueError};
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

/// Entry ids, unique across every process that appends to a queue: each
/// handle counts up from a random start in `[0, 2^63)`.
///
/// A consumer holds the messages it has been delivered by id, and any
/// process may append, so two processes must never give out one id (two
/// messages under one id would hand one payload out and acknowledge the
/// other unread). Ids from a clock are not enough: handles opened the same
/// millisecond, as instances deployed together are, would count through
/// the same ids. Two handles' ranges meet only if one appends within the
/// other's first appends' distance in 2^63: for handles appending 10^9
/// entries each, odds of about 10^-10 per pair.
pub(super) struct IdClock(AtomicU64);

impl IdClock {
    pub(super) fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded from the OS per process (and varies per
        // instance within one); mixing in the pid and the time guards a
        // platform where it is not.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_nanos()),
        );
        IdClock(AtomicU64::new(hasher.finish() >> 1))
    }

    pub(super) fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
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

mod held;
mod queue_impl;

pub(super) use self::held::Held;
pub(super) use self::queue_impl::broker_queue_impl;
