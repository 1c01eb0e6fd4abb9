//! Operation ids: one per write, the same for every call of it (the
//! authoritative store's, the follower's, every replay), so that a store can
//! tell a repeat from a new write (the inbox pattern in the crate docs).
//!
//! The id travels with the queued operation inside its payload: the op's
//! JSON object gets one more member, `"operation_id"`. The op enum's
//! decoding ignores members it does not know, so payloads with an id decode
//! as before, and payloads queued by builds without ids decode with none.

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::op::Operation;

/// The id of one write operation, made once when the write begins and the
/// same for the authoritative call, the follower call and every replay by
/// the [`Worker`](crate::Worker), also after a restart from a durable
/// queue. A store reads it with [`operation_id`] while it runs the write.
///
/// 128 bits: 64 random bits drawn once per process, then a counter that
/// starts at a random value. It shows as 32 lowercase hex digits, which a
/// PostgreSQL `uuid` column accepts as is (it is not an RFC 9562 UUID: it has
/// no version bits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OperationId(u128);

impl OperationId {
    /// A new id, unique with overwhelming probability across processes.
    pub fn generate() -> Self {
        struct Source {
            process: u64,
            counter: AtomicU64,
        }
        static SOURCE: OnceLock<Source> = OnceLock::new();
        let source = SOURCE.get_or_init(|| {
            let seed = (
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |elapsed| elapsed.as_nanos()),
            );
            Source {
                process: RandomState::new().hash_one(seed),
                counter: AtomicU64::new(RandomState::new().hash_one(seed)),
            }
        });
        let count = source.counter.fetch_add(1, Ordering::Relaxed);
        OperationId((u128::from(source.process) << 64) | u128::from(count))
    }

    /// The id as a number.
    pub fn as_u128(self) -> u128 {
        self.0
    }

    /// An id from a number (one that [`as_u128`](Self::as_u128) gave).
    pub fn from_u128(value: u128) -> Self {
        OperationId(value)
    }
}

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OperationId({self})")
    }
}

/// The text is not 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an operation id is 32 hex digits, got `{0}`")]
pub struct ParseOperationIdError(String);

impl FromStr for OperationId {
    type Err = ParseOperationIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let digits = text.trim();
        if digits.len() != 32 || !digits.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(ParseOperationIdError(text.to_owned()));
        }
        u128::from_str_radix(digits, 16)
            .map(OperationId)
            .map_err(|_| ParseOperationIdError(text.to_owned()))
    }
}

impl Serialize for OperationId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OperationId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

tokio::task_local! {
    static CURRENT: OperationId;
}

/// The id of the write operation this store call belongs to, when the call
/// is made by a [`DualWrite`](crate::DualWrite) write method (on either
/// store) or a [`Worker`](crate::Worker) replay; `None` anywhere else
/// (reads, calls made without the wrapper, a task the store spawned).
///
/// It takes no argument, so the trait stays as it is: a store that wants to
/// skip repeats (see "Writes that are not safe to replay" in the crate docs)
/// asks for it inside its write method.
pub fn operation_id() -> Option<OperationId> {
    CURRENT.try_with(|id| *id).ok()
}

/// Runs `call` with `id` as the [`operation_id`] it sees.
pub(crate) async fn scoped<F: Future>(id: Option<OperationId>, call: F) -> F::Output {
    match id {
        Some(id) => CURRENT.scope(id, call).await,
        None => call.await,
    }
}

/// [`scoped`] for a blocking call, on the calling thread.
pub(crate) fn scoped_blocking<R>(id: Option<OperationId>, call: impl FnOnce() -> R) -> R {
    match id {
        Some(id) => CURRENT.sync_scope(id, call),
        None => call(),
    }
}

/// The payload of a queued operation: the op's JSON object with the id as
/// one more member.
#[derive(Serialize)]
struct Envelope<'a, Op> {
    #[serde(flatten)]
    op: &'a Op,
    operation_id: OperationId,
}

/// Just the id of a payload (members it does not name are skipped).
#[derive(Deserialize)]
struct IdOnly {
    #[serde(default)]
    operation_id: Option<OperationId>,
}

/// Encodes an operation and its id for the queue.
pub(crate) fn encode<Op: Operation>(op: &Op, id: OperationId) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&Envelope {
        op,
        operation_id: id,
    })
}

/// The id a payload carries: `None` for payloads queued by builds without
/// ids (or written by hand), an error if it has one that is malformed.
pub(crate) fn id_of(payload: &[u8]) -> serde_json::Result<Option<OperationId>> {
    serde_json::from_slice::<IdOnly>(payload).map(|envelope| envelope.operation_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_differ_and_round_trip_through_text() {
        let (first, second) = (OperationId::generate(), OperationId::generate());
        assert_ne!(first, second);
        assert_eq!(first.to_string().len(), 32);
        assert_eq!(first.to_string().parse::<OperationId>(), Ok(first));
        assert!("not an id".parse::<OperationId>().is_err());
    }

    #[tokio::test]
    async fn a_store_sees_the_id_only_inside_the_scope() {
        let id = OperationId::generate();
        assert_eq!(operation_id(), None);
        assert_eq!(scoped(Some(id), async { operation_id() }).await, Some(id));
        assert_eq!(scoped_blocking(Some(id), operation_id), Some(id));
        assert_eq!(scoped(None, async { operation_id() }).await, None);
    }
}
