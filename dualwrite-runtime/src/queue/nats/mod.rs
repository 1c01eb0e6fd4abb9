//! The reconciliation queue on NATS JetStream (feature `nats`).
//!
//! # Topology
//!
//! Declared idempotently at [`NatsQueue::open`] (streams that exist are
//! used as they are), names derived from the options' `prefix`:
//!
//! - the stream `{prefix}_entries` (work-queue retention: a message is
//!   deleted once acknowledged; file storage) on the subjects
//!   `{prefix}.*.*.*`; an entry of namespace `ns` for the target store
//!   `old` or `new` is published on `{prefix}.{ns}.{target}.p{n}`, where
//!   `n = fingerprint(key) % partitions`, so a key's entries are always on
//!   one subject, in the order they were stored;
//! - per namespace, target and partition a durable pull consumer
//!   `{ns}_{target}_p{n}_{instance}` filtered on that subject, with explicit
//!   acks, `ack_wait`, `max_deliver`, a `backoff` of 1, 2 and 4 times the
//!   ack wait, `max_ack_pending` = `prefetch` and `inactive_threshold`,
//!   created by the process that consumes the partition (`instance` names
//!   that process's handle). A work-queue stream allows one consumer per
//!   subject, so across every process that opens the queue one consumer
//!   at a time receives a partition, in order: another process's attempt
//!   is refused by the server and retried on its next claims; once the
//!   owner is gone for `inactive_threshold` the server deletes its
//!   consumer, and the next one starts at the oldest unacknowledged
//!   message;
//! - the stream `{prefix}_dead` (limits retention: reading does not
//!   consume) on the subject `{prefix}.dead`: the dead letters of every
//!   namespace.
//!
//! To look at it with the `nats` CLI:
//!
//! ```text
//! nats stream ls                                   # {prefix}_entries, {prefix}_dead
//! nats stream info {prefix}_entries                # messages = entries pending or held
//! nats stream subjects {prefix}_entries            # depth per partition subject
//! nats consumer ls {prefix}_entries                # which process holds which partition
//! nats consumer info {prefix}_entries {consumer}   # ack pending = held by that process
//! nats stream view {prefix}_dead                   # the dead letters (header Dualwrite-Entry)
//! ```
//!
//! # How the queue calls map onto JetStream
//!
//! - [`append`](ReconciliationQueue::append) publishes the payload with the
//!   entry's metadata in the `Dualwrite-Entry` header (JSON) and returns
//!   once the server's publish acknowledgement says the stream stored it.
//! - The consumer of each partition this process holds has up to
//!   `prefetch` messages delivered and unacknowledged. They are *held*
//!   here: a [`claim`](ReconciliationQueue::claim) hands out, for each key,
//!   the earliest held message of the key, under a lease that exists only
//!   in this process. The queue sends progress (`+WPI`) for every held
//!   message every third of the ack wait, so the server does not deliver
//!   them again while this process lives.
//! - [`complete`](ReconciliationQueue::complete) acknowledges the message
//!   and waits for the server to confirm the acknowledgement.
//! - [`retry_later`](ReconciliationQueue::retry_later) and
//!   [`release`](ReconciliationQueue::release) keep the message
//!   unacknowledged and hold it back here until the delay has passed, so
//!   the key's later messages stay behind it. The attempt count and last
//!   error live here; if the process dies, the next consumer receives the
//!   message again and its attempts restart from the server's delivery
//!   count. A message delivered `max_deliver` times without being settled
//!   (its holders kept dying or stalling) is dead-lettered on that last
//!   delivery: the server would deliver it no more.
//! - [`dead_letter`](ReconciliationQueue::dead_letter) publishes the entry
//!   (with its attempts and error) on `{prefix}.dead`, waits for the
//!   publish acknowledgement, then acknowledges the original: a crash
//!   between the two leaves the entry both dead and pending, never neither.
//!   [`retry_dead`](ReconciliationQueue::retry_dead) publishes it back on
//!   its partition, then deletes it from `{prefix}_dead`;
//!   [`drop_dead`](ReconciliationQueue::drop_dead) deletes it.
//! - A lost delivery, a failed acknowledgement or a consumer error (a
//!   missed heartbeat after a lost connection) gives the partition up: its
//!   held messages and leases are forgotten, and the next claim deletes
//!   the consumer and creates it again, so the server delivers every
//!   unacknowledged message of the partition again, in order (a later
//!   message never overtakes one lost in flight). The client reconnects by
//!   itself.
//!
//! # What it cannot do
//!
//! [`capabilities`](ReconciliationQueue::capabilities) says it, and
//! [`Builder::build`](crate::Builder::build) refuses the settings that need
//! it, naming NATS JetStream and the setting: no write-ahead
//! (`prepare`/`commit`: so only [`Delivery::Sync`](crate::Delivery::Sync),
//! no [`Delivery::Journaled`](crate::Delivery::Journaled) and no
//! [`key_sync`](crate::Builder::key_sync)); dead letters never block their
//! key (the policy is [`PoisonPolicy::Skip`](super::PoisonPolicy::Skip));
//! a retry delay or a full prefetch window holds back the other keys of
//! the partition, not only the key;
//! [`has_work`](ReconciliationQueue::has_work) and
//! [`has_later_entries`](ReconciliationQueue::has_later_entries) answer
//! for the key's partition (a superset of the key); unkeyed writes are
//! refused unless there is a single partition; `key_entries` is refused.
//! [`stats`](ReconciliationQueue::stats) counts every process's entries
//! (the stream's count per subject; `in_flight` is what this process has
//! leased) and the oldest pending entry of any process.

mod consume;
mod dead;
mod options;
mod topology;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::broker::{
    backend, broker_queue_impl, check_namespace, check_unkeyed, from_millis, Envelope, Held,
    IdClock,
};
#[cfg(doc)]
use super::ReconciliationQueue;
use super::{Claim, DeadLetter, EntryId, Lease, NewEntry, QueueError, QueueStats};
use crate::op::Key;
use crate::vocabulary::Side;

pub use options::NatsOptions;

/// How long a claim waits for the server to deliver stored messages.
const DELIVERY_WAIT: Duration = Duration::from_millis(250);

/// The backend's name in errors and
/// [`QueueCapabilities::backend`](super::QueueCapabilities::backend).
const BACKEND: &str = "NATS JetStream";

/// The header that carries an entry's metadata.
const HEADER: &str = "Dualwrite-Entry";

/// What a namespace may not contain: it is a subject token and part of
/// consumer names.
const NAMESPACE_FORBIDDEN: &[char] = &['.', '*', '>', '/', '\\'];

/// The reconciliation queue on NATS JetStream: see the [module docs](self)
/// for the topology, how each call maps onto JetStream and what it cannot
/// do.
#[derive(Clone)]
pub struct NatsQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NatsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsQueue")
            .field("prefix", &self.inner.options.prefix)
            .field("instance", &self.inner.instance)
            .finish_non_exhaustive()
    }
}

struct Inner {
    options: NatsOptions,
    jetstream: jetstream::Context,
    entries: jetstream::stream::Stream,
    dead: jetstream::stream::Stream,
    /// Names this handle's consumers apart from other processes'.
    instance: String,
    namespaces: Mutex<Vec<String>>,
    held: Mutex<Held<jetstream::Message>>,
    /// By partition subject: whether this process consumes it.
    consumers: Mutex<HashMap<String, Consuming>>,
    /// Held while consumers are started, so that concurrent claims do not
    /// start (and delete) the same consumer twice.
    starting: tokio::sync::Mutex<()>,
    arrived: Notify,
    ids: IdClock,
    /// Numbers each consumer this process creates; held messages carry it.
    generation: AtomicU64,
    keeper: Mutex<Option<AbortHandle>>,
}

/// Whether this process consumes a partition.
enum Consuming {
    /// Its consumer runs; its deliveries are held under `generation`.
    Running { generation: u64, task: AbortHandle },
    /// Not consumed here (another process holds it, or it was given up):
    /// try again from `at`.
    Idle { at: Instant },
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(keeper) = self.keeper.lock().unwrap().take() {
            keeper.abort();
        }
        for consuming in self.consumers.lock().unwrap().values() {
            if let Consuming::Running { task, .. } = consuming {
                task.abort();
            }
        }
    }
}

impl NatsQueue {
    fn held(&self) -> MutexGuard<'_, Held<jetstream::Message>> {
        self.inner.held.lock().unwrap()
    }

    fn partitions(&self) -> u16 {
        self.inner.options.partitions
    }

    /// Remembers a namespace (for stats), after checking that the names
    /// can carry it.
    fn learn(&self, namespace: &str) -> Result<(), QueueError> {
        check_namespace(BACKEND, namespace, NAMESPACE_FORBIDDEN)?;
        let mut known = self.inner.namespaces.lock().unwrap();
        if !known.iter().any(|known| known == namespace) {
            known.push(namespace.to_owned());
        }
        Ok(())
    }

    /// Acknowledges a held message and waits for the server's
    /// confirmation; a failure gives its partition up (see the module
    /// docs), so that none of the partition's later messages is handed
    /// out before this one comes back.
    async fn acknowledge(
        &self,
        subject: &str,
        generation: u64,
        message: &jetstream::Message,
    ) -> Result<(), QueueError> {
        match message.double_ack().await {
            Ok(()) => Ok(()),
            Err(error) => {
                self.inner.give_up(subject, generation);
                Err(QueueError::Backend(
                    format!(
                        "{BACKEND} did not confirm the acknowledgement on `{subject}`: {error}"
                    )
                    .into(),
                ))
            }
        }
    }

    /// Entries on the subjects matching `filter`, by subject (those held by
    /// a consumer included).
    async fn counts(&self, filter: &str) -> Result<HashMap<String, usize>, QueueError> {
        use futures::TryStreamExt;
        let info = self
            .inner
            .entries
            .info_with_subjects(filter)
            .await
            .map_err(backend)?;
        info.try_collect().await.map_err(backend)
    }
}

broker_queue_impl!(NatsQueue, BACKEND, {
    async fn append(&self, entry: NewEntry) -> Result<EntryId, QueueError> {
        check_unkeyed(BACKEND, &entry, self.partitions())?;
        self.learn(&entry.namespace)?;
        let id = self.inner.ids.next();
        let subject =
            self.partition_subject(&entry.namespace, entry.target, self.partition(&entry.key));
        let (meta, payload) = Envelope::new(id, entry);
        self.publish(&subject, &meta, payload).await?;
        Ok(EntryId(id))
    }

    async fn has_later_entries(&self, lease: Lease) -> Result<bool, QueueError> {
        let (later_held, subject) = self.held().later_held(lease)?;
        if later_held {
            return Ok(true);
        }
        // A later message held while the server counted is in both counts:
        // look at the held ones again.
        Ok(self.stored_beyond_held(&subject).await? || self.held().later_held(lease)?.0)
    }

    async fn has_work(&self, namespace: &str, target: Side, key: &Key) -> Result<bool, QueueError> {
        // Held here: known by key. Stored and not held here (waiting, or
        // held by another process): known by partition.
        if self.held().has_key(namespace, target, key) {
            return Ok(true);
        }
        self.learn(namespace)?;
        let subject = self.partition_subject(namespace, target, self.partition(key));
        // A message of the key held while the server counted is in both
        // counts (so not beyond the held ones): look at the held ones again.
        Ok(self.stored_beyond_held(&subject).await? || self.held().has_key(namespace, target, key))
    }

    async fn claim(
        &self,
        namespace: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Claim, QueueError> {
        self.learn(namespace)?;
        self.consume(namespace).await?;
        if limit > 0 {
            self.await_deliveries(namespace).await?;
        }
        Ok(self.held().claim(namespace, limit, lease))
    }

    async fn complete(&self, lease: Lease) -> Result<(), QueueError> {
        let entry = self.held().take(lease)?;
        self.acknowledge(&entry.queue, entry.generation, &entry.acker)
            .await
    }

    async fn dead_letter(&self, lease: Lease, error: &str) -> Result<(), QueueError> {
        let (mut meta, payload) = self
            .held()
            .with_lease(lease, |entry| (entry.meta.clone(), entry.payload.clone()))?;
        meta.kill(error);
        self.publish(&self.dead_subject(), &meta, payload).await?;
        let entry = self.held().take(lease)?;
        self.acknowledge(&entry.queue, entry.generation, &entry.acker)
            .await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        Ok(self
            .read_dead()
            .await?
            .into_iter()
            .map(|(_, meta, payload)| meta.into_dead_letter(payload))
            .collect())
    }

    async fn retry_dead(&self, id: EntryId) -> Result<(), QueueError> {
        let (sequence, mut meta, payload) = self.find_dead(id).await?;
        meta.revive();
        let subject =
            self.partition_subject(&meta.namespace, meta.target, self.partition(&meta.key()));
        self.learn(&meta.namespace)?;
        self.publish(&subject, &meta, payload).await?;
        self.delete_dead(sequence).await
    }

    async fn drop_dead(&self, id: EntryId) -> Result<(), QueueError> {
        let (sequence, _, _) = self.find_dead(id).await?;
        self.delete_dead(sequence).await
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let namespaces = self.inner.namespaces.lock().unwrap().clone();
        let mut stats = QueueStats::default();
        let mut held = QueueStats::default();
        self.held().count_into(&mut held);
        for namespace in &namespaces {
            for target in [Side::Old, Side::New] {
                let filter = format!(
                    "{}.{namespace}.{}.*",
                    self.inner.options.prefix,
                    target.as_str()
                );
                for (subject, count) in self.counts(&filter).await? {
                    if count == 0 {
                        continue;
                    }
                    stats.target_mut(target).pending += count as u64;
                    if let Some(enqueued) = self.oldest_on(&subject).await? {
                        let oldest = &mut stats.target_mut(target).oldest_pending;
                        *oldest = Some(oldest.map_or(enqueued, |oldest| oldest.min(enqueued)));
                    }
                }
            }
        }
        for target in [Side::Old, Side::New] {
            let leased = held.target(target).in_flight;
            let counts = stats.target_mut(target);
            counts.in_flight = leased;
            counts.pending = counts.pending.saturating_sub(leased);
        }
        for letter in self.dead_letters().await? {
            stats.target_mut(letter.target).dead += 1;
        }
        Ok(stats)
    }
});

impl NatsQueue {
    /// Whether the stream has messages on `subject` other than those held
    /// here.
    async fn stored_beyond_held(&self, subject: &str) -> Result<bool, QueueError> {
        let stored = self.counts(subject).await?.get(subject).copied();
        Ok(stored.unwrap_or(0) > self.held().count_in(subject))
    }

    /// When the oldest entry stored on `subject` was appended.
    async fn oldest_on(&self, subject: &str) -> Result<Option<std::time::SystemTime>, QueueError> {
        match self
            .inner
            .entries
            .get_first_raw_message_by_subject(subject, 0)
            .await
        {
            Ok(message) => Ok(dead::envelope_of(&message.headers)
                .ok()
                .map(|meta| from_millis(meta.enqueued_ms))),
            // Acknowledged since it was counted.
            Err(_) => Ok(None),
        }
    }
}
