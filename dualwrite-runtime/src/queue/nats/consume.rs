//! Consuming: a durable pull consumer per partition this process holds,
//! whose deliveries become held messages; progress for the held ones;
//! giving a partition up.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::stream::ConsumerErrorKind;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use tokio::time::Instant;

use super::dead::envelope_of;
use super::{Consuming, Inner, NatsQueue, DELIVERY_WAIT};
use crate::queue::broker::{await_arrival, backend};
use crate::queue::QueueError;
use crate::vocabulary::Side;

/// How long a partition another process holds (or that could not be
/// consumed) waits before this process tries to take it again.
const RETRY_TAKE_OVER: Duration = Duration::from_secs(1);

impl NatsQueue {
    /// Starts the consumers of `namespace`'s partitions this process does
    /// not consume yet, where the server lets it (a partition held by
    /// another process is tried again later).
    pub(super) async fn consume(&self, namespace: &str) -> Result<(), QueueError> {
        let _starting = self.inner.starting.lock().await;
        let now = Instant::now();
        let mut failure = None;
        for target in [Side::Old, Side::New] {
            for n in 0..self.inner.options.partitions {
                let subject = self.partition_subject(namespace, target, n);
                let due = match self.inner.consumers.lock().unwrap().get(&subject) {
                    Some(Consuming::Running { .. }) => false,
                    Some(Consuming::Idle { at }) => *at <= now,
                    None => true,
                };
                if !due {
                    continue;
                }
                if let Err(error) = self.start(namespace, target, n, &subject).await {
                    failure = Some(error);
                }
            }
        }
        // A partition that cannot be consumed now does not stop the
        // others; the error still reaches the caller.
        failure.map_or(Ok(()), Err)
    }

    async fn start(
        &self,
        namespace: &str,
        target: Side,
        n: u16,
        subject: &str,
    ) -> Result<(), QueueError> {
        let options = &self.inner.options;
        let name = self.consumer_name(namespace, target, n);
        let idle = || {
            self.inner.consumers.lock().unwrap().insert(
                subject.to_owned(),
                Consuming::Idle {
                    at: Instant::now() + RETRY_TAKE_OVER,
                },
            );
        };
        // This handle's consumer from before a lost connection, if any: its
        // held messages are forgotten, so the partition starts again from
        // its oldest unacknowledged message.
        let _ = self.inner.entries.delete_consumer(&name).await;
        let backoff = (0..3u32)
            .take(usize::from(options.max_deliver) - 1)
            .map(|step| options.ack_wait * 2u32.pow(step))
            .collect();
        let config = pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!("dualwrite partition {subject}")),
            filter_subject: subject.to_owned(),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: options.ack_wait,
            max_deliver: i64::from(options.max_deliver),
            backoff,
            max_ack_pending: i64::from(options.prefetch),
            inactive_threshold: options.inactive_threshold,
            ..Default::default()
        };
        let consumer = match self.inner.entries.create_consumer(config).await {
            Ok(consumer) => consumer,
            Err(error) => {
                idle();
                if let ConsumerErrorKind::JetStream(reason) = error.kind() {
                    if reason.error_code() == ErrorCode::CONSUMER_WQ_CONSUMER_NOT_UNIQUE {
                        // Another process consumes the partition.
                        tracing::trace!(subject, "partition held by another consumer");
                        return Ok(());
                    }
                }
                return Err(backend(error));
            }
        };
        let expires = (options.inactive_threshold / 2).min(Duration::from_secs(30));
        let messages = consumer
            .stream()
            .max_messages_per_batch(usize::from(options.prefetch))
            .expires(expires)
            .heartbeat(expires / 4)
            .messages()
            .await;
        let messages = match messages {
            Ok(messages) => messages,
            Err(error) => {
                idle();
                return Err(backend(error));
            }
        };
        let generation = self.inner.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let task = tokio::spawn(run(
            Arc::downgrade(&self.inner),
            messages,
            generation,
            subject.to_owned(),
        ));
        tracing::debug!(subject, consumer = name, generation, "consuming partition");
        self.inner.consumers.lock().unwrap().insert(
            subject.to_owned(),
            Consuming::Running {
                generation,
                task: task.abort_handle(),
            },
        );
        Ok(())
    }

    /// Waits (up to [`DELIVERY_WAIT`]) until the server has delivered to
    /// this process the stored messages of `namespace` it can: those of
    /// partitions consumed here whose prefetch window has room. So a claim
    /// made right after an append sees it.
    pub(super) async fn await_deliveries(&self, namespace: &str) -> Result<(), QueueError> {
        let deadline = Instant::now() + DELIVERY_WAIT;
        let filter = format!("{}.{namespace}.*.*", self.inner.options.prefix);
        loop {
            let counts = self.counts(&filter).await?;
            let expected = {
                let consumers = self.inner.consumers.lock().unwrap();
                let held = self.held();
                counts.iter().any(|(subject, stored)| {
                    let holding = held.count_in(subject);
                    matches!(consumers.get(subject), Some(Consuming::Running { .. }))
                        && *stored > holding
                        && holding < usize::from(self.inner.options.prefetch)
                })
            };
            if !expected || !await_arrival(&self.inner.arrived, deadline).await {
                return Ok(());
            }
        }
    }

    /// Starts the task that sends progress for every held message each
    /// third of the ack wait, so that the server does not deliver them
    /// again while this process holds them.
    pub(super) fn keep_held(&self) {
        let inner = Arc::downgrade(&self.inner);
        let every = self.inner.options.ack_wait / 3;
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = inner.upgrade() else { return };
                let held: Vec<jetstream::Message> = inner
                    .held
                    .lock()
                    .unwrap()
                    .entries
                    .values()
                    .map(|entry| entry.acker.clone())
                    .collect();
                drop(inner);
                for message in held {
                    let _ = message.ack_with(AckKind::Progress).await;
                }
            }
        });
        *self.inner.keeper.lock().unwrap() = Some(task.abort_handle());
    }
}

/// A partition's deliveries, until a delivery is missing (lost in flight),
/// the consumer fails or the queue is dropped.
async fn run(inner: Weak<Inner>, mut messages: pull::Stream, generation: u64, subject: String) {
    let mut last_delivery = 0;
    while let Some(delivery) = messages.next().await {
        let Some(queue) = inner.upgrade() else { return };
        let message = match delivery {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, subject, "partition consumer failed; giving the partition up");
                queue.give_up(&subject, generation);
                return;
            }
        };
        let (sequence, delivered) = match message.info() {
            Ok(info) => (info.consumer_sequence, info.delivered),
            Err(error) => {
                tracing::warn!(%error, subject, "a delivery without its metadata; giving the partition up");
                queue.give_up(&subject, generation);
                return;
            }
        };
        if sequence != last_delivery + 1 {
            // A delivery was lost (in a cut connection): a later message
            // must not be handed out before it comes back.
            tracing::warn!(
                subject,
                expected = last_delivery + 1,
                got = sequence,
                "a delivery was lost; giving the partition up"
            );
            queue.give_up(&subject, generation);
            return;
        }
        last_delivery = sequence;
        let queue = NatsQueue { inner: queue };
        queue.arrive(generation, &subject, message, delivered).await;
    }
    if let Some(queue) = inner.upgrade() {
        queue.give_up(&subject, generation);
    }
}

impl Inner {
    /// Forgets a partition's held messages and leases (the server
    /// delivers them again, in order, to the consumer created next).
    pub(super) fn give_up(&self, subject: &str, generation: u64) {
        self.held.lock().unwrap().forget(generation);
        let mut consumers = self.consumers.lock().unwrap();
        if let Some(Consuming::Running {
            generation: running,
            task,
        }) = consumers.get(subject)
        {
            if *running == generation {
                task.abort();
                consumers.insert(subject.to_owned(), Consuming::Idle { at: Instant::now() });
            }
        }
    }
}

impl NatsQueue {
    async fn arrive(
        &self,
        generation: u64,
        subject: &str,
        message: jetstream::Message,
        delivered: i64,
    ) {
        let empty = async_nats::HeaderMap::new();
        let mut meta = match envelope_of(message.headers.as_ref().unwrap_or(&empty)) {
            Ok(meta) => meta,
            Err(error) => {
                // Not an entry of this queue: logged, then terminated
                // (the server delivers it no more), as the RabbitMQ queue
                // rejects one.
                tracing::error!(%error, subject, "a message on a partition subject is not a dualwrite entry; dropped");
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
        };
        let redeliveries = u32::try_from(delivered.saturating_sub(1)).unwrap_or(0);
        meta.attempts = meta.attempts.max(redeliveries);
        if delivered >= i64::from(self.inner.options.max_deliver) {
            // The server's last delivery: dead-letter it rather than leave
            // it stored and never delivered.
            let mut dead = meta.clone();
            dead.kill(&format!(
                "delivered {delivered} times (max_deliver) without being settled: its holders died or stalled"
            ));
            let payload = message.payload.to_vec();
            if self
                .publish(&self.dead_subject(), &dead, payload)
                .await
                .is_ok()
                && message.double_ack().await.is_ok()
            {
                return;
            }
        }
        let mut held = self.held();
        if let Some(entry) = held.entries.get_mut(&meta.id) {
            // Delivered again while held (this process stalled past the
            // ack wait): the same message, now acknowledged through this
            // delivery; it keeps its place and lease.
            entry.acker = message;
            entry.generation = generation;
        } else {
            let payload = message.payload.to_vec();
            held.hold(generation, subject, meta, payload, message);
        }
        drop(held);
        self.inner.arrived.notify_waiters();
    }
}
