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

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::StreamExt;
use lapin::acker::Acker;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    Claim, ClaimedEntry, DeadLetter, EntryId, Lease, NewEntry, QueueCapabilities, QueueError,
    QueueStats, QueuedEntry, ReconciliationQueue,
};
use crate::op::Key;
use crate::vocabulary::Side;

/// How long a claim waits for the broker to deliver ready messages.
const DELIVERY_WAIT: Duration = Duration::from_millis(250);

/// The backend's name in errors and [`QueueCapabilities::backend`].
const BACKEND: &str = "RabbitMQ";

/// How [`RabbitMqQueue::open`] connects and names its topology.
#[derive(Debug, Clone)]
pub struct RabbitMqOptions {
    url: String,
    prefix: String,
    partitions: u16,
    prefetch: u16,
    namespaces: Vec<String>,
}

impl RabbitMqOptions {
    /// The broker at `url` (`amqp://user:password@host:port/vhost`), queue
    /// names starting `dualwrite.`, 16 partitions, 32 messages held per
    /// partition.
    pub fn new(url: impl Into<String>) -> Self {
        RabbitMqOptions {
            url: url.into(),
            prefix: "dualwrite".to_owned(),
            partitions: 16,
            prefetch: 32,
            namespaces: Vec::new(),
        }
    }

    /// The first part of every queue name (one per service or migration).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How many partition queues each namespace and target has. Keys are
    /// spread over them; more partitions let more keys be applied at once.
    /// Changing it for a queue that holds messages reorders keys: drain
    /// first. With 1, unkeyed writes are accepted (one line orders them).
    pub fn partitions(mut self, partitions: u16) -> Self {
        self.partitions = partitions;
        self
    }

    /// How many unacknowledged messages the consumer of one partition holds
    /// (AMQP prefetch): the most entries of a partition in flight or
    /// waiting out a retry delay at once.
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// A namespace whose queues are declared at open (others are declared
    /// on first use); [`stats`](ReconciliationQueue::stats) counts these.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespaces.push(namespace.into());
        self
    }
}

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

fn quorum_arguments(single_active: bool) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    if single_active {
        arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    }
    arguments
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

fn decode(properties: &BasicProperties) -> Result<Meta, String> {
    let headers = properties
        .headers()
        .as_ref()
        .ok_or("the message has no headers")?;
    let value = headers
        .inner()
        .get("dualwrite")
        .ok_or("the message has no `dualwrite` header")?;
    let text = value
        .as_long_string()
        .ok_or("the `dualwrite` header is not a string")?;
    serde_json::from_slice(text.as_bytes())
        .map_err(|error| format!("the `dualwrite` header does not decode: {error}"))
}

fn delivery_count(properties: &BasicProperties) -> u32 {
    properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get("x-delivery-count").cloned())
        .and_then(|value| match value {
            AMQPValue::LongLongInt(count) => u32::try_from(count).ok(),
            AMQPValue::LongInt(count) => u32::try_from(count).ok(),
            AMQPValue::LongUInt(count) => Some(count),
            _ => None,
        })
        .unwrap_or(0)
}

impl RabbitMqQueue {
    /// Connects, declares the dead-letter queue and the partitions of every
    /// namespace in `options`.
    ///
    /// # Errors
    ///
    /// [`QueueError::Backend`] when the options are invalid (0 partitions
    /// or prefetch, an empty prefix), the broker cannot be reached, or a
    /// queue exists with other arguments (declared by another version).
    pub async fn open(options: RabbitMqOptions) -> Result<Self, QueueError> {
        if options.partitions == 0 {
            return Err(QueueError::Backend(
                "RabbitMQ queue option `partitions` must be at least 1".into(),
            ));
        }
        if options.prefetch == 0 {
            return Err(QueueError::Backend(
                "RabbitMQ queue option `prefetch` must be at least 1".into(),
            ));
        }
        if options.prefix.is_empty() {
            return Err(QueueError::Backend(
                "RabbitMQ queue option `prefix` must not be empty".into(),
            ));
        }
        let seed = millis(SystemTime::now()) * 1000;
        let queue = RabbitMqQueue {
            inner: Arc::new(Inner {
                namespaces: Mutex::new(options.namespaces.clone()),
                options,
                link: tokio::sync::Mutex::new(None),
                held: Mutex::new(Held::default()),
                arrived: Notify::new(),
                next_id: AtomicU64::new(seed),
                next_token: AtomicU64::new(1),
                generation: AtomicU64::new(0),
            }),
        };
        let link = queue.link().await?;
        let namespaces = queue.inner.namespaces.lock().unwrap().clone();
        for namespace in namespaces {
            queue.declare(&link, &namespace).await?;
        }
        Ok(queue)
    }

    /// The name of the queue of `namespace`, `target` and partition `n`.
    pub fn partition_queue(&self, namespace: &str, target: Side, n: u16) -> String {
        format!(
            "{}.{namespace}.{}.p{n}",
            self.inner.options.prefix,
            target.as_str()
        )
    }

    /// The name of the dead-letter queue.
    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.inner.options.prefix)
    }

    /// Every queue this handle has declared, dead-letter queue last: for
    /// tests and tools that delete a queue's topology.
    pub fn queue_names(&self) -> Vec<String> {
        let namespaces = self.inner.namespaces.lock().unwrap().clone();
        let mut names = Vec::new();
        for namespace in &namespaces {
            for target in [Side::Old, Side::New] {
                for n in 0..self.inner.options.partitions {
                    names.push(self.partition_queue(namespace, target, n));
                }
            }
        }
        names.push(self.dead_queue());
        names
    }

    /// Deletes every queue of [`queue_names`](Self::queue_names) with its
    /// messages, and closes the connection.
    pub async fn destroy(self) -> Result<(), QueueError> {
        let link = self.link().await?;
        let channel = link.connection.create_channel().await.map_err(backend)?;
        for name in self.queue_names() {
            channel
                .queue_delete(&name, Default::default())
                .await
                .map_err(backend)?;
        }
        // The queues are gone; a close that races the broker's own
        // teardown of the channels changes nothing.
        let _ = link.connection.close(200, "destroyed").await;
        Ok(())
    }

    fn partition(&self, key: &Key) -> u16 {
        (key.fingerprint() % u64::from(self.inner.options.partitions)) as u16
    }

    /// The live connection, reconnecting (and forgetting every held
    /// message of the lost one) when it was lost.
    async fn link(&self) -> Result<Arc<Link>, QueueError> {
        let mut slot = self.inner.link.lock().await;
        if let Some(link) = slot.as_ref() {
            if link.connection.status().connected() && link.publish.status().connected() {
                return Ok(Arc::clone(link));
            }
            let lost = link.generation;
            self.inner
                .held
                .lock()
                .unwrap()
                .entries
                .retain(|_, held| held.generation != lost);
            let _ = link.connection.close(200, "reconnecting").await;
        }
        let properties = ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio::current());
        let connection = Connection::connect(&self.inner.options.url, properties)
            .await
            .map_err(backend)?;
        let publish = connection.create_channel().await.map_err(backend)?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(backend)?;
        publish
            .queue_declare(&self.dead_queue(), durable(), quorum_arguments(false))
            .await
            .map_err(backend)?;
        let link = Arc::new(Link {
            generation: self.inner.generation.fetch_add(1, Ordering::SeqCst) + 1,
            connection,
            publish,
            consuming: Mutex::new(HashSet::new()),
            declared: Mutex::new(HashSet::new()),
        });
        *slot = Some(Arc::clone(&link));
        Ok(link)
    }

    /// Declares the partition queues of `namespace` (once per connection).
    async fn declare(&self, link: &Link, namespace: &str) -> Result<(), QueueError> {
        if link.declared.lock().unwrap().contains(namespace) {
            return Ok(());
        }
        if namespace.is_empty() || namespace.contains(char::is_whitespace) {
            return Err(QueueError::Backend(
                format!("the {BACKEND} queue cannot name queues after the namespace {namespace:?}: it is empty or has whitespace").into(),
            ));
        }
        for target in [Side::Old, Side::New] {
            for n in 0..self.inner.options.partitions {
                link.publish
                    .queue_declare(
                        &self.partition_queue(namespace, target, n),
                        durable(),
                        quorum_arguments(true),
                    )
                    .await
                    .map_err(backend)?;
            }
        }
        link.declared.lock().unwrap().insert(namespace.to_owned());
        let mut known = self.inner.namespaces.lock().unwrap();
        if !known.iter().any(|known| known == namespace) {
            known.push(namespace.to_owned());
        }
        Ok(())
    }

    /// Starts this process's consumers of `namespace`'s partitions (once per
    /// connection): their deliveries become held entries.
    async fn consume(&self, link: &Arc<Link>, namespace: &str) -> Result<(), QueueError> {
        self.declare(link, namespace).await?;
        if !link.consuming.lock().unwrap().insert(namespace.to_owned()) {
            return Ok(());
        }
        let started = self.start_consumers(link, namespace).await;
        if started.is_err() {
            link.consuming.lock().unwrap().remove(namespace);
        }
        started
    }

    async fn start_consumers(&self, link: &Arc<Link>, namespace: &str) -> Result<(), QueueError> {
        let channel = link.connection.create_channel().await.map_err(backend)?;
        channel
            .basic_qos(
                self.inner.options.prefetch,
                BasicQosOptions { global: false },
            )
            .await
            .map_err(backend)?;
        for target in [Side::Old, Side::New] {
            for n in 0..self.inner.options.partitions {
                let queue = self.partition_queue(namespace, target, n);
                let mut consumer = channel
                    .basic_consume(
                        &queue,
                        "",
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(backend)?;
                let inner = Arc::downgrade(&self.inner);
                let generation = link.generation;
                tokio::spawn(async move {
                    while let Some(Ok(delivery)) = consumer.next().await {
                        let Some(inner) = inner.upgrade() else { return };
                        inner.arrive(generation, &queue, delivery).await;
                    }
                });
            }
        }
        Ok(())
    }

    /// Publishes on the confirm channel and waits for the broker's confirm.
    async fn publish(
        &self,
        link: &Link,
        queue: &str,
        meta: &Meta,
        payload: &[u8],
    ) -> Result<(), QueueError> {
        let header = serde_json::to_string(meta).map_err(QueueError::Encode)?;
        let mut headers = FieldTable::default();
        headers.insert("dualwrite".into(), AMQPValue::LongString(header.into()));
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(headers);
        let confirm = link
            .publish
            .basic_publish(
                "",
                queue,
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                payload,
                properties,
            )
            .await
            .map_err(backend)?
            .await
            .map_err(backend)?;
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(QueueError::Backend(
                format!("{BACKEND} returned the message: no queue `{queue}` (deleted while open?)")
                    .into(),
            )),
            Confirmation::Nack(_) => Err(QueueError::Backend(
                format!("{BACKEND} refused to store the message for `{queue}` (nack)").into(),
            )),
            Confirmation::NotRequested => Err(QueueError::Backend(
                "the publishing channel is not in confirm mode".into(),
            )),
        }
    }

    /// Reads every dead letter (unacknowledged, on a channel of its own),
    /// hands them to `act`, then closes the channel so that those not
    /// acknowledged go back.
    async fn with_dead<T>(
        &self,
        act: impl AsyncFnOnce(&Self, &Link, Vec<(Meta, Vec<u8>, Acker)>) -> Result<T, QueueError>,
    ) -> Result<T, QueueError> {
        let link = self.link().await?;
        let channel = link.connection.create_channel().await.map_err(backend)?;
        let mut letters = Vec::new();
        while let Some(message) = channel
            .basic_get(&self.dead_queue(), BasicGetOptions { no_ack: false })
            .await
            .map_err(backend)?
        {
            let delivery = message.delivery;
            match decode(&delivery.properties) {
                Ok(meta) => letters.push((meta, delivery.data, delivery.acker)),
                Err(error) => {
                    tracing::warn!(%error, "a message in the dead-letter queue is not an entry; left in place");
                }
            }
        }
        letters.sort_by_key(|(meta, _, _)| (meta.died_ms, meta.id));
        let result = act(self, &link, letters).await;
        let _ = channel.close(200, "dead letters read").await;
        result
    }

    /// Runs `change` on the entry `lease` holds, or refuses a lease no
    /// longer held.
    fn with_lease<T>(
        &self,
        lease: Lease,
        change: impl FnOnce(&mut HeldEntry) -> T,
    ) -> Result<T, QueueError> {
        let mut held = self.inner.held.lock().unwrap();
        match held.entries.get_mut(&lease.id.0) {
            Some(entry) if entry.lease.is_some_and(|(token, _)| token == lease.token) => {
                Ok(change(entry))
            }
            _ => Err(QueueError::LeaseLost(lease.id)),
        }
    }

    /// Takes a leased entry out of the held set (to ack or dead-letter it).
    fn take(&self, lease: Lease) -> Result<HeldEntry, QueueError> {
        let mut held = self.inner.held.lock().unwrap();
        match held.entries.get(&lease.id.0) {
            Some(entry) if entry.lease.is_some_and(|(token, _)| token == lease.token) => {
                Ok(held.entries.remove(&lease.id.0).expect("just seen"))
            }
            _ => Err(QueueError::LeaseLost(lease.id)),
        }
    }

    fn claim_held(&self, namespace: &str, limit: usize, lease: Duration) -> Claim {
        let now = Instant::now();
        let mut held = self.inner.held.lock().unwrap();
        let mut by_seq: Vec<(&u64, &mut HeldEntry)> = held
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
            let token = self.inner.next_token.fetch_add(1, Ordering::SeqCst);
            entry.lease = Some((token, now + lease));
            claim.entries.push(ClaimedEntry {
                lease: Lease {
                    id: EntryId(*id),
                    token,
                },
                namespace: entry.meta.namespace.clone(),
                target: entry.meta.target,
                key: Key::from(entry.meta.key.as_str()),
                method: entry.meta.method.clone(),
                version: entry.meta.version,
                payload: entry.payload.clone(),
                attempts: entry.meta.attempts,
                enqueued_at: from_millis(entry.meta.enqueued_ms),
                last_error: entry.last_error.clone(),
                orphaned: entry.meta.uncertain,
            });
        }
        claim.next_ready_in = if more_ready {
            Some(Duration::ZERO)
        } else if claim.entries.is_empty() {
            next
        } else {
            None
        };
        claim
    }

    /// Waits (up to [`DELIVERY_WAIT`]) until the broker has delivered to
    /// this process's consumers the ready messages of `namespace` it can:
    /// those of partitions whose prefetch window has room. So a claim made
    /// right after an append sees it.
    async fn await_deliveries(&self, link: &Link, namespace: &str) -> Result<(), QueueError> {
        let deadline = Instant::now() + DELIVERY_WAIT;
        loop {
            let mut expected = false;
            for target in [Side::Old, Side::New] {
                let counts = self.ready_counts(link, namespace, target).await?;
                let held = self.inner.held.lock().unwrap();
                for (n, ready) in counts.into_iter().enumerate() {
                    if ready == 0 {
                        continue;
                    }
                    let queue = self.partition_queue(namespace, target, n as u16);
                    let holding = held
                        .entries
                        .values()
                        .filter(|entry| entry.queue == queue)
                        .count();
                    if holding < usize::from(self.inner.options.prefetch) {
                        expected = true;
                    }
                }
            }
            let now = Instant::now();
            if !expected || now >= deadline {
                return Ok(());
            }
            let arrived = self.inner.arrived.notified();
            let _ = tokio::time::timeout((deadline - now).min(Duration::from_millis(20)), arrived)
                .await;
        }
    }

    /// Ready messages the broker has for the partitions of `namespace`
    /// (passive declares; not those delivered and unacknowledged).
    async fn ready_counts(
        &self,
        link: &Link,
        namespace: &str,
        target: Side,
    ) -> Result<Vec<u32>, QueueError> {
        let mut counts = Vec::new();
        for n in 0..self.inner.options.partitions {
            counts.push(
                self.ready_in(link, &self.partition_queue(namespace, target, n))
                    .await?,
            );
        }
        Ok(counts)
    }

    async fn ready_in(&self, link: &Link, queue: &str) -> Result<u32, QueueError> {
        let declared = link
            .publish
            .queue_declare(
                queue,
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(backend)?;
        Ok(declared.message_count())
    }
}

impl Inner {
    async fn arrive(&self, generation: u64, queue: &str, delivery: lapin::message::Delivery) {
        let mut meta = match decode(&delivery.properties) {
            Ok(meta) => meta,
            Err(error) => {
                // Not an entry of this queue: keep it out of the way, in
                // the dead-letter queue's place it cannot be listed from,
                // by rejecting it without requeue (RabbitMQ drops it) only
                // after logging, so an operator sees what was lost.
                tracing::error!(%error, queue, "a message in a partition queue is not a dualwrite entry; dropped");
                let _ = delivery.acker.reject(Default::default()).await;
                return;
            }
        };
        meta.attempts = meta.attempts.max(delivery_count(&delivery.properties));
        let mut held = self.held.lock().unwrap();
        let seq = held.next_seq;
        held.next_seq += 1;
        let last_error = meta.reason.clone();
        held.entries.insert(
            meta.id,
            HeldEntry {
                seq,
                generation,
                queue: queue.to_owned(),
                meta,
                payload: delivery.data,
                acker: delivery.acker,
                last_error,
                ready_at: Instant::now(),
                lease: None,
            },
        );
        drop(held);
        self.arrived.notify_waiters();
    }
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
