//! Publishing with confirms, and reading the dead letters.

use lapin::acker::Acker;
use lapin::options::{BasicGetOptions, BasicPublishOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

use super::consume::decode;
use super::{backend, Envelope, Link, RabbitMqQueue, BACKEND};
use crate::queue::QueueError;

impl RabbitMqQueue {
    /// Publishes on the confirm channel and waits for the broker's confirm.
    pub(super) async fn publish(
        &self,
        link: &Link,
        queue: &str,
        meta: &Envelope,
        payload: &[u8],
    ) -> Result<(), QueueError> {
        let header = meta.encode()?;
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
    pub(super) async fn with_dead<T>(
        &self,
        act: impl AsyncFnOnce(&Self, &Link, Vec<(Envelope, Vec<u8>, Acker)>) -> Result<T, QueueError>,
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
}
