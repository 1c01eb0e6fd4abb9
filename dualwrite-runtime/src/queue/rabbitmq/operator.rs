//! The operator surface: queue names and tearing the topology down.

use super::{backend, RabbitMqQueue};
use crate::queue::QueueError;
use crate::vocabulary::Side;

impl RabbitMqQueue {
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
}
