//! The dead letters: reading the dead-letter stream without consuming it,
//! and deleting one of its messages.

use async_nats::HeaderMap;

use super::{backend, Envelope, NatsQueue, HEADER};
use crate::queue::{EntryId, QueueError};

/// The entry's metadata in a message's headers.
pub(super) fn envelope_of(headers: &HeaderMap) -> Result<Envelope, String> {
    let value = headers
        .get(HEADER)
        .ok_or(format!("the message has no `{HEADER}` header"))?;
    Envelope::decode(value.as_str().as_bytes())
}

impl NatsQueue {
    /// Every dead letter with its stream sequence, oldest first.
    pub(super) async fn read_dead(&self) -> Result<Vec<(u64, Envelope, Vec<u8>)>, QueueError> {
        let info = self.inner.dead.get_info().await.map_err(backend)?;
        let mut letters = Vec::new();
        if info.state.messages == 0 {
            return Ok(letters);
        }
        for sequence in info.state.first_sequence..=info.state.last_sequence {
            // Deleted messages (retried or dropped letters) leave gaps.
            let Ok(message) = self.inner.dead.get_raw_message(sequence).await else {
                continue;
            };
            match envelope_of(&message.headers) {
                Ok(meta) => letters.push((sequence, meta, message.payload.to_vec())),
                Err(error) => {
                    tracing::warn!(%error, sequence, "a message in the dead-letter stream is not an entry; left in place");
                }
            }
        }
        letters.sort_by_key(|(_, meta, _)| (meta.died_ms, meta.id));
        Ok(letters)
    }

    /// The dead letter `id`.
    pub(super) async fn find_dead(
        &self,
        id: EntryId,
    ) -> Result<(u64, Envelope, Vec<u8>), QueueError> {
        self.read_dead()
            .await?
            .into_iter()
            .find(|(_, meta, _)| meta.id == id.0)
            .ok_or(QueueError::NotDead(id))
    }

    /// Deletes the dead letter stored at `sequence`.
    pub(super) async fn delete_dead(&self, sequence: u64) -> Result<(), QueueError> {
        self.inner
            .dead
            .delete_message(sequence)
            .await
            .map(|_| ())
            .map_err(backend)
    }
}
