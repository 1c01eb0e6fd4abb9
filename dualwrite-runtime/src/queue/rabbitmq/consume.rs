//! Consuming: deliveries become held entries, claims lease them.

use std::sync::Arc;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use tokio::time::Instant;

use super::{backend, Envelope, Inner, Link, RabbitMqQueue, DELIVERY_WAIT};
use crate::queue::broker::await_arrival;
use crate::queue::QueueError;
use crate::vocabulary::Side;

pub(super) fn decode(properties: &BasicProperties) -> Result<Envelope, String> {
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
    Envelope::decode(text.as_bytes())
}

pub(super) fn delivery_count(properties: &BasicProperties) -> u32 {
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
    /// Starts this process's consumers of `namespace`'s partitions (once per
    /// connection): their deliveries become held entries.
    pub(super) async fn consume(
        &self,
        link: &Arc<Link>,
        namespace: &str,
    ) -> Result<(), QueueError> {
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

    pub(super) async fn start_consumers(
        &self,
        link: &Arc<Link>,
        namespace: &str,
    ) -> Result<(), QueueError> {
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

    /// Waits (up to [`DELIVERY_WAIT`]) until the broker has delivered to
    /// this process's consumers the ready messages of `namespace` it can:
    /// those of partitions whose prefetch window has room. So a claim made
    /// right after an append sees it.
    pub(super) async fn await_deliveries(
        &self,
        link: &Link,
        namespace: &str,
    ) -> Result<(), QueueError> {
        let deadline = Instant::now() + DELIVERY_WAIT;
        loop {
            let mut expected = false;
            for target in [Side::Old, Side::New] {
                let counts = self.ready_counts(link, namespace, target).await?;
                let held = self.held();
                for (n, ready) in counts.into_iter().enumerate() {
                    if ready == 0 {
                        continue;
                    }
                    let queue = self.partition_queue(namespace, target, n as u16);
                    let holding = held.count_in(&queue);
                    if holding < usize::from(self.inner.options.prefetch) {
                        expected = true;
                    }
                }
            }
            if !expected || !await_arrival(&self.inner.arrived, deadline).await {
                return Ok(());
            }
        }
    }

    /// Ready messages the broker has for the partitions of `namespace`
    /// (passive declares; not those delivered and unacknowledged).
    pub(super) async fn ready_counts(
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

    pub(super) async fn ready_in(&self, link: &Link, queue: &str) -> Result<u32, QueueError> {
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
    pub(super) async fn arrive(
        &self,
        generation: u64,
        queue: &str,
        delivery: lapin::message::Delivery,
    ) {
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
        self.in_transit.lock().unwrap().remove(&meta.id);
        self.held
            .lock()
            .unwrap()
            .hold(generation, queue, meta, delivery.data, delivery.acker);
        self.arrived.notify_waiters();
    }
}
