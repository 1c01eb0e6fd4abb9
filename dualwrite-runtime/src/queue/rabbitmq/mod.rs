//! The reconciliation queue on RabbitMQ quorum queues (feature `rabbitmq`).
//!
//! # Topology
//!
//! Declared idempotently at [`RabbitMqQueue::open`] (for the namespaces
//! given in the options) and on the first use of any other namespace, on
//! the default exchange, all durable quorum queues:
//!
//! - `{prefix}.{namespace}.{target}.p{n}` for `n` in `0..partitions`: the
//!   entries of one namespace and target store (`old` or `new`), a key's
//!   entries always in partition `fingerprint(key) % partitions`. Each has
//!   `x-single-active-consumer`, so across every process that opens the
//!   queue one consumer at a time receives a partition, in order;
//! - `{prefix}.dead`: the dead letters of every namespace.
//!
//! `rabbitmqctl list_queues name type messages messages_unacknowledged
//! consumers` shows them; `messages_unacknowledged` is what is claimed or
//! held by the active consumer.
//!
//! # How the queue calls map onto AMQP
//!
//! - [`append`](ReconciliationQueue::append) publishes a persistent message
//!   on a channel in confirm mode and returns once the broker has confirmed
//!   it (the quorum queue has it on a majority of its replicas).
//! - The process's consumer of each partition has up to `prefetch`
//!   messages delivered and unacknowledged. They are *held* here: a
//!   [`claim`](ReconciliationQueue::claim) hands out, for each key, the
//!   earliest held message of the key, under a lease that exists only in
//!   this process (a worker of another process never sees a held message:
//!   the partition has one active consumer).
//! - [`complete`](ReconciliationQueue::complete) acknowledges the delivery.
//! - [`retry_later`](ReconciliationQueue::retry_later) and
//!   [`release`](ReconciliationQueue::release) keep the delivery
//!   unacknowledged and hold it back here until the delay has passed, so the
//!   key's later messages stay behind it. The attempt count and last error
//!   live here; if the process dies, the broker redelivers the message (to
//!   the next active consumer) and its attempts restart from the broker's
//!   delivery count (`x-delivery-count`).
//! - [`dead_letter`](ReconciliationQueue::dead_letter) publishes the entry
//!   (with its attempts and error) to `{prefix}.dead`, waits for the
//!   confirm, then acknowledges the original: a crash between the two
//!   leaves the entry both dead and pending, never neither.
//! - A lost connection loses every lease and held message (the broker
//!   requeues the unacknowledged messages in their original position); the
//!   next call reconnects and declares the topology again.
//!
//! # What it cannot do
//!
//! [`capabilities`](ReconciliationQueue::capabilities) says it, and
//! [`Builder::build`](crate::Builder::build) refuses the settings that need
//! it: no write-ahead (`prepare`/`commit`: so no
//! [`Delivery::Journaled`](crate::Delivery::Journaled) and no
//! [`key_sync`](crate::Builder::key_sync)); dead letters never block their
//! key (the policy is [`PoisonPolicy::Skip`](super::PoisonPolicy::Skip): a broker cannot keep a message
//! at a queue's head while others pass); a retry delay or a full prefetch
//! window holds back the other keys of the partition, not only the key;
//! [`has_work`](ReconciliationQueue::has_work) and
//! [`has_later_entries`](ReconciliationQueue::has_later_entries) answer for
//! the key's partition (a superset of the key), and count the messages
//! claimed in another process only once the broker reports them; unkeyed
//! writes are refused unless there is a single partition (their order
//! against every key needs one line); `key_entries` is refused (a queue
//! cannot be read without consuming it); `oldest_pending` counts only the
//! messages held by this process.

mod consume;
mod operator;
mod options;
mod publish;
mod topology;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use lapin::acker::Acker;
use lapin::options::BasicAckOptions;
use lapin::{Channel, Connection};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    Claim, DeadLetter, EntryId, Lease, NewEntry, QueueCapabilities, QueueError, QueueStats,
    QueuedEntry, ReconciliationQueue,
};
use crate::op::Key;
use crate::vocabulary::Side;

pub use options::RabbitMqOptions;

/// How long a claim waits for the broker to deliver ready messages.
const DELIVERY_WAIT: Duration = Duration::from_millis(250);

/// The backend's name in errors and [`QueueCapabilities::backend`].
const BACKEND: &str = "RabbitMQ";

/// The reconciliation queue on RabbitMQ: see the [module docs](self) for
/// the topology, how each call maps onto AMQP and what it cannot do.
#[derive(Clone)]
pub struct RabbitMqQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RabbitMqQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqQueue")
            .field("prefix", &self.inner.options.prefix)
            .finish_non_exhaustive()
    }
}

struct Inner {
    options: RabbitMqOptions,
    link: tokio::sync::Mutex<Option<Arc<Link>>>,
    namespaces: Mutex<Vec<String>>,
    held: Mutex<Held>,
    arrived: Notify,
    next_id: AtomicU64,
    next_token: AtomicU64,
    generation: AtomicU64,
}

/// One connection: the publishing channel and the consumers started on it.
struct Link {
    generation: u64,
    connection: Connection,
    publish: Channel,
    consuming: Mutex<HashSet<String>>,
    declared: Mutex<HashSet<String>>,
}

/// What travels in the message's `dualwrite` header (the body is the payload).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    id: u64,
    namespace: String,
    target: Side,
    key: String,
    method: String,
    version: u32,
    reason: String,
    uncertain: bool,
    enqueued_ms: u64,
    attempts: u32,
    #[serde(default)]
    died_ms: u64,
}

#[derive(Default)]
struct Held {
    entries: BTreeMap<u64, HeldEntry>,
    /// Arrival order, for FIFO among a key's held messages.
    next_seq: u64,
}

struct HeldEntry {
    seq: u64,
    generation: u64,
    queue: String,
    meta: Meta,
    payload: Vec<u8>,
    acker: Acker,
    last_error: String,
    ready_at: Instant,
    lease: Option<(u64, Instant)>,
}

fn backend(error: impl std::error::Error + Send + Sync + 'static) -> QueueError {
    QueueError::Backend(Box::new(error))
}

/// Acknowledges a delivery: the broker deletes the message.
async fn ack(acker: &Acker) -> Result<(), QueueError> {
    acker
        .ack(BasicAckOptions::default())
        .await
        .map(|_| ())
        .map_err(backend)
}

fn refused(what: &str) -> QueueError {
    QueueError::Backend(format!("the {BACKEND} queue cannot {what}").into())
}

fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[async_trait]
impl ReconciliationQueue for RabbitMqQueue {
    async fn append(&self, entry: NewEntry) -> Result<EntryId, QueueError> {
        if entry.is_unkeyed() && self.inner.options.partitions > 1 {
            return Err(refused(&format!(
                "order an unkeyed write ({}) against every key over {} partitions: open it with `partitions(1)` for a namespace with unkeyed writes",
                entry.method, self.inner.options.partitions
            )));
        }
        let link = self.link().await?;
        self.declare(&link, &entry.namespace).await?;
        let now = millis(SystemTime::now()) * 1000;
        let id = self
            .inner
            .next_id
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(last.max(now) + 1)
            })
            .map_or(now, |last| last.max(now) + 1);
        let meta = Meta {
            id,
            namespace: entry.namespace.clone(),
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
        let queue =
            self.partition_queue(&entry.namespace, entry.target, self.partition(&entry.key));
        self.publish(&link, &queue, &meta, &entry.payload).await?;
        Ok(EntryId(id))
    }

    fn capabilities(&self) -> QueueCapabilities {
        QueueCapabilities {
            backend: BACKEND,
            write_ahead: false,
            blocking_dead_letters: false,
            key_independent_delays: false,
            exact_key_work: false,
            unkeyed_order: self.inner.options.partitions == 1,
            key_entries: false,
        }
    }

    async fn prepare(&self, _entry: NewEntry, _expiry: Duration) -> Result<EntryId, QueueError> {
        Err(refused("write ahead (prepare): use Delivery::Sync"))
    }

    async fn commit(&self, _id: EntryId) -> Result<(), QueueError> {
        Err(refused("write ahead (commit): use Delivery::Sync"))
    }

    async fn commit_uncertain(&self, _id: EntryId) -> Result<(), QueueError> {
        Err(refused(
            "write ahead (commit_uncertain): use Delivery::Sync",
        ))
    }

    async fn abort(&self, _id: EntryId) -> Result<(), QueueError> {
        Err(refused("write ahead (abort): use Delivery::Sync"))
    }

    async fn has_later_entries(&self, lease: Lease) -> Result<bool, QueueError> {
        let queue = {
            let held = self.inner.held.lock().unwrap();
            let entry = held
                .entries
                .get(&lease.id.0)
                .filter(|entry| entry.lease.is_some_and(|(token, _)| token == lease.token))
                .ok_or(QueueError::LeaseLost(lease.id))?;
            let later_held = held.entries.values().any(|other| {
                other.queue == entry.queue
                    && other.meta.key == entry.meta.key
                    && other.seq > entry.seq
            });
            if later_held {
                return Ok(true);
            }
            entry.queue.clone()
        };
        let link = self.link().await?;
        Ok(self.ready_in(&link, &queue).await? > 0)
    }

    async fn settle_orphan(&self, id: EntryId) -> Result<(), QueueError> {
        if let Some(entry) = self.inner.held.lock().unwrap().entries.get_mut(&id.0) {
            entry.meta.uncertain = false;
        }
        Ok(())
    }

    async fn has_work(&self, namespace: &str, target: Side, key: &Key) -> Result<bool, QueueError> {
        let queue = self.partition_queue(namespace, target, self.partition(key));
        // Held here: known by key. Ready at the broker: known by partition.
        if self
            .inner
            .held
            .lock()
            .unwrap()
            .entries
            .values()
            .any(|entry| {
                entry.meta.namespace == namespace
                    && entry.meta.target == target
                    && entry.meta.key == key.as_str()
            })
        {
            return Ok(true);
        }
        let link = self.link().await?;
        self.declare(&link, namespace).await?;
        Ok(self.ready_in(&link, &queue).await? > 0)
    }

    async fn claim(
        &self,
        namespace: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Claim, QueueError> {
        let link = self.link().await?;
        self.consume(&link, namespace).await?;
        if limit > 0 {
            self.await_deliveries(&link, namespace).await?;
        }
        Ok(self.claim_held(namespace, limit, lease))
    }

    async fn renew(&self, lease: Lease, duration: Duration) -> Result<(), QueueError> {
        self.with_lease(lease, |entry| {
            entry.lease = Some((lease.token, Instant::now() + duration));
        })
    }

    async fn complete(&self, lease: Lease) -> Result<(), QueueError> {
        let entry = self.take(lease)?;
        ack(&entry.acker).await
    }

    async fn retry_later(
        &self,
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

    async fn release(&self, lease: Lease) -> Result<(), QueueError> {
        self.with_lease(lease, |entry| entry.lease = None)
    }

    async fn dead_letter(&self, lease: Lease, error: &str) -> Result<(), QueueError> {
        let (mut meta, payload) =
            self.with_lease(lease, |entry| (entry.meta.clone(), entry.payload.clone()))?;
        let link = self.link().await?;
        meta.attempts += 1;
        meta.reason = error.to_owned();
        meta.died_ms = millis(SystemTime::now());
        self.publish(&link, &self.dead_queue(), &meta, &payload)
            .await?;
        let entry = self.take(lease)?;
        ack(&entry.acker).await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        self.with_dead(async |_, _, letters| {
            Ok(letters
                .into_iter()
                .map(|(meta, payload, _)| DeadLetter {
                    id: EntryId(meta.id),
                    namespace: meta.namespace,
                    target: meta.target,
                    key: Key::from(meta.key),
                    method: meta.method,
                    version: meta.version,
                    payload,
                    attempts: meta.attempts,
                    error: meta.reason,
                    enqueued_at: from_millis(meta.enqueued_ms),
                    died_at: from_millis(meta.died_ms),
                })
                .collect())
        })
        .await
    }

    async fn retry_dead(&self, id: EntryId) -> Result<(), QueueError> {
        self.with_dead(async |queue, link, letters| {
            let (mut meta, payload, acker) = letters
                .into_iter()
                .find(|(meta, _, _)| meta.id == id.0)
                .ok_or(QueueError::NotDead(id))?;
            queue.declare(link, &meta.namespace).await?;
            meta.attempts = 0;
            meta.died_ms = 0;
            let target = queue.partition_queue(
                &meta.namespace,
                meta.target,
                queue.partition(&Key::from(meta.key.as_str())),
            );
            queue.publish(link, &target, &meta, &payload).await?;
            ack(&acker).await
        })
        .await
    }

    async fn drop_dead(&self, id: EntryId) -> Result<(), QueueError> {
        self.with_dead(async |_, _, letters| {
            let (_, _, acker) = letters
                .into_iter()
                .find(|(meta, _, _)| meta.id == id.0)
                .ok_or(QueueError::NotDead(id))?;
            ack(&acker).await
        })
        .await
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let link = self.link().await?;
        let namespaces = self.inner.namespaces.lock().unwrap().clone();
        let mut stats = QueueStats::default();
        for namespace in &namespaces {
            self.declare(&link, namespace).await?;
            for target in [Side::Old, Side::New] {
                let ready: u64 = self
                    .ready_counts(&link, namespace, target)
                    .await?
                    .into_iter()
                    .map(u64::from)
                    .sum();
                stats.target_mut(target).pending += ready;
            }
        }
        {
            let held = self.inner.held.lock().unwrap();
            let now = Instant::now();
            for entry in held.entries.values() {
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
        for letter in self.dead_letters().await? {
            stats.target_mut(letter.target).dead += 1;
        }
        Ok(stats)
    }

    async fn key_entries(
        &self,
        _namespace: &str,
        _target: Side,
        _key: &Key,
    ) -> Result<Vec<QueuedEntry>, QueueError> {
        Err(refused(
            "list a key's entries: a queue cannot be read without consuming it (see `stats` and `dead_letters`)",
        ))
    }

    async fn flush(&self) -> Result<(), QueueError> {
        // Every append returned after its publisher confirm; settles are
        // acknowledgements, which a lost connection turns into redeliveries.
        Ok(())
    }
}
