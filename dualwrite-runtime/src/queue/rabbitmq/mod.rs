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
//! the key's partition (a superset of the key) from the messages held here
//! and those the broker counts as ready (AMQP counts no unacknowledged
//! ones). A message the broker has pushed to this process's consumer is in
//! neither until its delivery arrives, so after this handle's own append to
//! a partition it consumes they wait (up to 1 s) for the delivery; they
//! still miss the messages another process's consumer has prefetched. With
//! [`Delivery::Sync`](crate::Delivery::Sync) and instances sharing the
//! queue, a write of a key whose earlier write another instance queued can
//! then reach the follower ahead of it; the NATS and database queues count
//! every stored entry. Unkeyed
//! writes are refused unless there is a single partition (their order
//! against every key needs one line); `key_entries` is refused (a queue
//! cannot be read without consuming it); `oldest_pending` counts only the
//! messages held by this process.

mod consume;
mod operator;
mod options;
mod publish;
mod topology;

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lapin::acker::Acker;
use lapin::options::BasicAckOptions;
use lapin::{Channel, Connection};
use tokio::sync::Notify;

use super::broker::{
    await_arrival, backend, broker_queue_impl, check_unkeyed, partition, Envelope, Held, IdClock,
};
#[cfg(doc)]
use super::ReconciliationQueue;
use super::{Claim, DeadLetter, EntryId, Lease, NewEntry, QueueError, QueueStats};
use crate::op::Key;
use crate::vocabulary::Side;

pub use options::RabbitMqOptions;

/// How long a claim waits for the broker to deliver ready messages.
const DELIVERY_WAIT: Duration = Duration::from_millis(250);

/// The backend's name in errors and [`QueueCapabilities::backend`](super::QueueCapabilities::backend).
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
    held: Mutex<Held<Acker>>,
    /// Entries this handle appended to a partition it consumes, by id,
    /// with when: confirmed by the broker, maybe pushed to this process's
    /// consumer already (so no longer counted as ready) and not arrived
    /// yet. Counts wait for them (see `await_in_transit`).
    in_transit: Mutex<std::collections::HashMap<u64, (String, tokio::time::Instant)>>,
    arrived: Notify,
    ids: IdClock,
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

/// Acknowledges a delivery: the broker deletes the message.
async fn ack(acker: &Acker) -> Result<(), QueueError> {
    acker
        .ack(BasicAckOptions::default())
        .await
        .map(|_| ())
        .map_err(backend)
}

impl RabbitMqQueue {
    fn held(&self) -> MutexGuard<'_, Held<Acker>> {
        self.inner.held.lock().unwrap()
    }

    fn partitions(&self) -> u16 {
        self.inner.options.partitions
    }

    /// Waits (up to [`TRANSIT_PATIENCE`]) until this handle's own appends to
    /// the partition queues `queue` selects have arrived at this process's
    /// consumer, so that the broker's ready count and the held messages
    /// together see them: the broker stops counting a message as ready
    /// once it pushes it to a consumer, before the delivery arrives. An
    /// append still missing after [`TRANSIT_PATIENCE`] went to another
    /// process's consumer (another instance is the partition's active
    /// consumer) and is forgotten here. A partition whose prefetch window
    /// is full is not waited for: nothing of it is in transit.
    async fn await_in_transit(&self, queue: impl Fn(&str) -> bool) {
        let deadline = tokio::time::Instant::now() + TRANSIT_PATIENCE;
        loop {
            let waiting = {
                let mut in_transit = self.inner.in_transit.lock().unwrap();
                in_transit.retain(|_, (_, since)| since.elapsed() < TRANSIT_PATIENCE);
                // A partition whose prefetch window is full has nothing in
                // transit: its later messages are still ready, and counted.
                let held = self.held();
                let prefetch = usize::from(self.inner.options.prefetch);
                in_transit
                    .values()
                    .any(|(of, _)| queue(of) && held.count_in(of) < prefetch)
            };
            if !waiting || !await_arrival(&self.inner.arrived, deadline).await {
                return;
            }
        }
    }
}

/// How long an own append may be in transit to this process's consumer
/// before it is taken to have gone to another process's. A delivery
/// arrives within a round trip or two; the margin is for a loaded machine.
/// Where another instance is a partition's active consumer, the first
/// count after each append to it waits this long once.
const TRANSIT_PATIENCE: Duration = Duration::from_secs(1);

broker_queue_impl!(RabbitMqQueue, BACKEND, {
    async fn append(&self, entry: NewEntry) -> Result<EntryId, QueueError> {
        check_unkeyed(BACKEND, &entry, self.partitions())?;
        let link = self.link().await?;
        self.declare(&link, &entry.namespace).await?;
        let id = self.inner.ids.next();
        let queue =
            self.partition_queue(&entry.namespace, entry.target, self.partition(&entry.key));
        // This process consumes the namespace's partitions (it has claimed).
        let consumed = link.consuming.lock().unwrap().contains(&entry.namespace);
        let (meta, payload) = Envelope::new(id, entry);
        if consumed {
            // Before the publish: the delivery may arrive before the
            // confirmation does.
            self.inner
                .in_transit
                .lock()
                .unwrap()
                .insert(id, (queue.clone(), tokio::time::Instant::now()));
        }
        if let Err(error) = self.publish(&link, &queue, &meta, &payload).await {
            self.inner.in_transit.lock().unwrap().remove(&id);
            return Err(error);
        }
        Ok(EntryId(id))
    }

    async fn has_later_entries(&self, lease: Lease) -> Result<bool, QueueError> {
        let (later_held, queue) = self.held().later_held(lease)?;
        if later_held {
            return Ok(true);
        }
        self.await_in_transit(|of| of == queue).await;
        let link = self.link().await?;
        // A later message delivered while the broker counted is no longer
        // ready: look at the held ones again.
        Ok(self.ready_in(&link, &queue).await? > 0 || self.held().later_held(lease)?.0)
    }

    async fn has_work(&self, namespace: &str, target: Side, key: &Key) -> Result<bool, QueueError> {
        let queue = self.partition_queue(namespace, target, self.partition(key));
        // Held here: known by key. Ready at the broker: known by partition.
        if self.held().has_key(namespace, target, key) {
            return Ok(true);
        }
        self.await_in_transit(|of| of == queue).await;
        if self.held().has_key(namespace, target, key) {
            return Ok(true);
        }
        let link = self.link().await?;
        self.declare(&link, namespace).await?;
        // A message of the key delivered while the broker counted is no
        // longer ready: look at the held ones again.
        Ok(self.ready_in(&link, &queue).await? > 0 || self.held().has_key(namespace, target, key))
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
        Ok(self.held().claim(namespace, limit, lease))
    }

    async fn complete(&self, lease: Lease) -> Result<(), QueueError> {
        let entry = self.held().take(lease)?;
        ack(&entry.acker).await
    }

    async fn dead_letter(&self, lease: Lease, error: &str) -> Result<(), QueueError> {
        let (mut meta, payload) = self
            .held()
            .with_lease(lease, |entry| (entry.meta.clone(), entry.payload.clone()))?;
        let link = self.link().await?;
        meta.kill(error);
        self.publish(&link, &self.dead_queue(), &meta, &payload)
            .await?;
        let entry = self.held().take(lease)?;
        ack(&entry.acker).await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        self.with_dead(async |_, _, letters| {
            Ok(letters
                .into_iter()
                .map(|(meta, payload, _)| meta.into_dead_letter(payload))
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
            meta.revive();
            let target =
                queue.partition_queue(&meta.namespace, meta.target, queue.partition(&meta.key()));
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
        self.await_in_transit(|_| true).await;
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
        self.held().count_into(&mut stats);
        for letter in self.dead_letters().await? {
            stats.target_mut(letter.target).dead += 1;
        }
        Ok(stats)
    }
});
