//! Consuming: deliveries become held entries, claims lease them.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use tokio::time::Instant;

use super::{backend, from_millis, HeldEntry, Inner, Link, Meta, RabbitMqQueue, DELIVERY_WAIT};
use crate::op::Key;
use crate::queue::{Claim, ClaimedEntry, EntryId, Lease, QueueError};
use crate::vocabulary::Side;

pub(super) fn decode(properties: &BasicProperties) -> Result<Meta, String> {
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

    /// Runs `change` on the entry `lease` holds, or refuses a lease no
    /// longer held.
    pub(super) fn with_lease<T>(
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
    pub(super) fn take(&self, lease: Lease) -> Result<HeldEntry, QueueError> {
        let mut held = self.inner.held.lock().unwrap();
        match held.entries.get(&lease.id.0) {
            Some(entry) if entry.lease.is_some_and(|(token, _)| token == lease.token) => {
                Ok(held.entries.remove(&lease.id.0).expect("just seen"))
            }
            _ => Err(QueueError::LeaseLost(lease.id)),
        }
    }

    pub(super) fn claim_held(&self, namespace: &str, limit: usize, lease: Duration) -> Claim {
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
