//! Key-level sync: make the follower's record of a key what the
//! authoritative store holds now. Queued as an entry the worker recognises
//! by its method, [`SYNC_METHOD`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{PutCondition, RecordError, RecordKey, RecordStore};
use crate::queue::NewEntry;
use crate::vocabulary::Side;

/// The method of a sync entry. No trait method can be called this (it is
/// not a Rust identifier), so a worker tells sync entries from operations
/// by it before decoding anything.
pub const SYNC_METHOD: &str = "dualwrite:sync_key";

/// The encoding version of a sync entry's payload.
pub(crate) const SYNC_VERSION: u32 = 1;

/// A sync entry's payload: which record stores, and which key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SyncRequest {
    /// The name the record stores were registered under
    /// ([`Builder::sync_records`](crate::Builder::sync_records)).
    pub(crate) records: String,
    pub(crate) key: RecordKey,
}

impl SyncRequest {
    pub(crate) fn decode(version: u32, payload: &[u8]) -> Result<SyncRequest, String> {
        if version != SYNC_VERSION {
            return Err(format!(
                "key-level sync entry encoded with version {version}, but this build reads version {SYNC_VERSION}"
            ));
        }
        serde_json::from_slice(payload)
            .map_err(|error| format!("cannot decode key-level sync entry: {error}"))
    }
}

/// The queue entry that syncs `key` of the record stores registered as
/// `records`, to `target`, filed under `namespace` (the trait's, so that it
/// takes its place in the key's line among the trait's writes, and the
/// trait's worker applies it).
pub fn sync_entry(
    namespace: &str,
    records: &str,
    target: Side,
    key: &RecordKey,
    reason: &str,
) -> NewEntry {
    let request = SyncRequest {
        records: records.to_owned(),
        key: key.clone(),
    };
    NewEntry {
        namespace: namespace.to_owned(),
        target,
        key: key.queue_key(),
        method: SYNC_METHOD.to_owned(),
        version: SYNC_VERSION,
        // A struct of a string and an integer or string always serialises.
        payload: serde_json::to_vec(&request).unwrap_or_default(),
        reason: reason.to_owned(),
        uncertain: false,
    }
}

/// The record stores of both sides of one migration, for key-level sync.
#[derive(Clone)]
pub struct RecordPair {
    old: Arc<dyn RecordStore>,
    new: Arc<dyn RecordStore>,
}

impl RecordPair {
    /// The old store's records and the new store's.
    pub fn new(old: impl RecordStore, new: impl RecordStore) -> Self {
        RecordPair {
            old: Arc::new(old),
            new: Arc::new(new),
        }
    }

    /// Record stores shared with something else (a backfill, a verify).
    pub fn shared(old: Arc<dyn RecordStore>, new: Arc<dyn RecordStore>) -> Self {
        RecordPair { old, new }
    }

    /// One side's store.
    pub fn side(&self, side: Side) -> &Arc<dyn RecordStore> {
        match side {
            Side::Old => &self.old,
            Side::New => &self.new,
        }
    }
}

impl fmt::Debug for RecordPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordPair")
            .field("old", &self.old.describe())
            .field("new", &self.new.describe())
            .finish()
    }
}

/// What [`sync_key`] did to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncOutcome {
    /// The authoritative store's record was written to the target.
    Written,
    /// The authoritative store has no such record; the target's was deleted.
    Deleted,
    /// Neither store has such a record.
    AlreadyAbsent,
}

/// Makes `target`'s record of `key` what the other side holds now: reads
/// it there, writes it to `target` ([`PutCondition::Always`]), or deletes
/// it from `target` when the other side has none.
///
/// Alone this is a read then a write: a write of the key landing between
/// them is lost from `target`. The worker calls it under the key's order
/// guard, at the head of the key's line, which is what makes it safe
/// beside live writes; call it directly only when nothing else writes the
/// key (a repair of a store offline).
pub async fn sync_key(
    pair: &RecordPair,
    target: Side,
    key: &RecordKey,
) -> Result<SyncOutcome, RecordError> {
    let source = pair.side(target.other());
    let target_store = pair.side(target);
    match source.get(key).await? {
        Some(record) => {
            target_store
                .put(std::slice::from_ref(&record), PutCondition::Always)
                .await?;
            Ok(SyncOutcome::Written)
        }
        None if target_store.delete(key).await? => Ok(SyncOutcome::Deleted),
        None => Ok(SyncOutcome::AlreadyAbsent),
    }
}

/// The record stores a wrapper's workers apply sync entries with, by name.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecordSyncs {
    pairs: BTreeMap<String, RecordPair>,
}

impl RecordSyncs {
    pub(crate) fn insert(&mut self, name: String, pair: RecordPair) {
        self.pairs.insert(name, pair);
    }

    pub(crate) fn get(&self, name: &str) -> Option<&RecordPair> {
        self.pairs.get(name)
    }

    pub(crate) fn names(&self) -> Vec<&str> {
        self.pairs.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_entry_files_under_the_records_queue_key_and_reads_back() {
        let entry = sync_entry(
            "Accounts",
            "accounts",
            Side::New,
            &RecordKey::Int(7),
            "repair",
        );
        assert_eq!(entry.key.as_str(), "7");
        assert_eq!(entry.method, SYNC_METHOD);
        let request = SyncRequest::decode(entry.version, &entry.payload).unwrap();
        assert_eq!(request.key, RecordKey::Int(7));
        assert_eq!(request.records, "accounts");
        let text = sync_entry("Accounts", "accounts", Side::New, &RecordKey::from("7"), "");
        assert_eq!(
            SyncRequest::decode(text.version, &text.payload)
                .unwrap()
                .key,
            RecordKey::from("7")
        );
    }

    #[test]
    fn another_encoding_version_is_refused_by_name() {
        let error = SyncRequest::decode(9, b"{}").unwrap_err();
        assert!(error.contains("version 9"), "{error}");
    }
}
