//! The topology: connecting, reconnecting and declaring the quorum queues.

use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

use super::{
    backend, partition, Held, IdClock, Inner, Link, RabbitMqOptions, RabbitMqQueue, BACKEND,
};
use crate::op::Key;
use crate::queue::broker::{check_namespace, check_options};
use crate::queue::QueueError;
use crate::vocabulary::Side;

pub(super) fn quorum_arguments(single_active: bool) -> FieldTable {
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

pub(super) fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
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
        check_options(
            BACKEND,
            options.partitions,
            options.prefetch,
            &options.prefix,
        )?;
        let queue = RabbitMqQueue {
            inner: Arc::new(Inner {
                namespaces: Mutex::new(options.namespaces.clone()),
                options,
                link: tokio::sync::Mutex::new(None),
                held: Mutex::new(Held::default()),
                in_transit: Mutex::new(std::collections::HashMap::new()),
                arrived: Notify::new(),
                ids: IdClock::new(),
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

    pub(super) fn partition(&self, key: &Key) -> u16 {
        partition(key, self.inner.options.partitions)
    }

    /// The live connection, reconnecting (and forgetting every held
    /// message of the lost one) when it was lost.
    pub(super) async fn link(&self) -> Result<Arc<Link>, QueueError> {
        let mut slot = self.inner.link.lock().await;
        if let Some(link) = slot.as_ref() {
            if link.connection.status().connected() && link.publish.status().connected() {
                return Ok(Arc::clone(link));
            }
            let lost = link.generation;
            self.held().forget(lost);
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
    pub(super) async fn declare(&self, link: &Link, namespace: &str) -> Result<(), QueueError> {
        if link.declared.lock().unwrap().contains(namespace) {
            return Ok(());
        }
        check_namespace(BACKEND, namespace, &[])?;
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
}
