//! The cross-instance mode: the follower gets key-level syncs, not calls.

use std::collections::BTreeMap;

use super::{sync_entry, RecordKey};
use crate::op::Key;
use crate::queue::{NewEntry, QueueError};
use crate::vocabulary::Side;

/// Keeps the follower right when many instances of a service write the
/// same keys ([`Builder::key_sync`](crate::Builder::key_sync)).
///
/// # The problem
///
/// The per-key order guard is local to a process. Two instances writing one
/// key can reach the two stores in different orders: A writes the old store,
/// B writes the old store, B writes the new store, A writes the new store.
/// The old store ends with B's value and the new one with A's, and nothing
/// ever notices. No retry fixes it, because every single write succeeded.
///
/// # What this mode does
///
/// With `key_sync`, a write never calls the follower. It writes ahead to
/// the shared queue a *key-level sync* of its key (before the authoritative
/// call, as journaled delivery does), calls the authoritative store, and
/// confirms the entry. A worker of any instance then reads the key's record
/// from the authoritative store *as it is then* and writes it to the
/// follower, or deletes it there if the authoritative store has none
/// ([`records::sync_key`](crate::records::sync_key)). Because each sync
/// copies the current record instead of replaying one call, the order in
/// which instances reached the stores stops mattering: the key's last sync
/// is confirmed after the key's last authoritative write and applied after
/// it, so it copies the final record (I2), and no older record can land
/// after a newer one (I4).
///
/// That needs two things of the deployment:
///
/// - **A shared queue** that keeps one key's entries in order across
///   processes and never leases two of them at once: the PostgreSQL or
///   MySQL queue (or one SQLite file on one host). With a queue per
///   process, two syncs of one key could run at once, and the mode is void.
/// - **Record stores** for the tables the trait writes, registered with
///   [`Builder::sync_records`](crate::Builder::sync_records): a
///   [`PgTable`](crate::records) or `MySqlTable` in a few lines, or your own
///   [`RecordStore`](crate::records::RecordStore).
///
/// # What it costs, and when to pick it
///
/// - Every write makes two queue round trips (write-ahead and confirm),
///   like `journaled` delivery, and the follower is updated by a worker a
///   moment later, not within the call: reads from the follower lag.
/// - Each sync reads the authoritative store once more.
/// - In return, no lock is shared between instances and no instance ever
///   waits for another: a slow or dead instance cannot stall the others.
///
/// Pick it when more than one instance writes the same keys (any service
/// behind a load balancer). A single writer per key (one instance, or keys
/// partitioned by instance) does not need it: the local guard is enough,
/// and `sync` delivery updates the follower within the call.
///
/// The other known design, a per-key lock shared by the instances (for
/// example a PostgreSQL advisory lock held across both writes), is not
/// offered: it holds a database connection per write in flight, adds a
/// round trip to the lock server on every write, and stalls every writer
/// of a key behind a slow follower call.
///
/// # Which records a write syncs
///
/// Each write method syncs the records registered under one name, by the
/// write's key: [`KeySync::records`] names them for every method, and
/// [`KeySync::method`] for one. The key is the record's key as
/// [`RecordKey::Int`] when it is the decimal spelling of an `i64`, else
/// [`RecordKey::Text`]; [`KeySync::text_keys`] keeps every key text. A
/// write without a key (a method declared unkeyed) cannot be synced by key:
/// the queue refuses it with an error naming the method, logged (and
/// returned, for a `fail_closed` method).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySync {
    records: String,
    by_method: BTreeMap<String, String>,
    text_keys: bool,
}

impl KeySync {
    /// Every write method syncs the records registered as `name`.
    pub fn records(name: impl Into<String>) -> Self {
        KeySync {
            records: name.into(),
            by_method: BTreeMap::new(),
            text_keys: false,
        }
    }

    /// The write method `method` (as written in the trait) syncs the
    /// records registered as `records` instead.
    #[must_use]
    pub fn method(mut self, method: impl Into<String>, records: impl Into<String>) -> Self {
        self.by_method.insert(method.into(), records.into());
        self
    }

    /// Every key is a text key, even one that spells an integer.
    #[must_use]
    pub fn text_keys(mut self) -> Self {
        self.text_keys = true;
        self
    }

    /// Every records name it refers to.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.records.as_str()).chain(self.by_method.values().map(String::as_str))
    }

    /// The record key of a write's key.
    pub(crate) fn record_key(&self, key: &Key) -> RecordKey {
        let text = key.as_str();
        match text.parse::<i64>() {
            Ok(number) if !self.text_keys && number.to_string() == text => RecordKey::Int(number),
            _ => RecordKey::Text(text.to_owned()),
        }
    }

    /// The sync entry that stands for a write of `method` on `key`.
    pub(crate) fn entry(
        &self,
        namespace: &str,
        method: &str,
        target: Side,
        key: &Key,
        reason: &str,
    ) -> Result<NewEntry, QueueError> {
        if key.is_unkeyed() {
            return Err(QueueError::KeySync(format!(
                "`{method}` is an unkeyed write, and key-level sync needs the key of the record it writes; give the method a key (`#[dual_write(write, key = ..)]`) or build the wrapper without `key_sync`"
            )));
        }
        let records = self
            .by_method
            .get(method)
            .map_or(self.records.as_str(), String::as_str);
        Ok(sync_entry(
            namespace,
            records,
            target,
            &self.record_key(key),
            reason,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::SyncRequest;

    #[test]
    fn keys_that_spell_integers_sync_integer_records_unless_told_otherwise() {
        let sync = KeySync::records("orders");
        assert_eq!(sync.record_key(&Key::from("42")), RecordKey::Int(42));
        assert_eq!(sync.record_key(&Key::from("-7")), RecordKey::Int(-7));
        // Not the canonical spelling: a text key that happens to hold digits.
        assert_eq!(sync.record_key(&Key::from("007")), RecordKey::from("007"));
        assert_eq!(sync.record_key(&Key::from("a@b")), RecordKey::from("a@b"));
        assert_eq!(
            sync.text_keys().record_key(&Key::from("42")),
            RecordKey::from("42")
        );
    }

    #[test]
    fn a_method_syncs_its_own_records_and_an_unkeyed_write_is_refused_by_name() {
        let sync = KeySync::records("orders").method("upsert_customer", "customers");
        let entry = sync
            .entry("Shop", "upsert_customer", Side::New, &Key::from("9"), "r")
            .unwrap();
        let request = SyncRequest::decode(entry.version, &entry.payload).unwrap();
        assert_eq!(request.records, "customers");
        assert_eq!(entry.key.as_str(), "9");
        let entry = sync
            .entry("Shop", "place_order", Side::New, &Key::from("9"), "r")
            .unwrap();
        assert_eq!(
            SyncRequest::decode(entry.version, &entry.payload)
                .unwrap()
                .records,
            "orders"
        );
        let refused = sync
            .entry("Shop", "clear", Side::New, &Key::unkeyed(), "r")
            .unwrap_err();
        assert!(
            refused.to_string().contains("`clear` is an unkeyed write"),
            "{refused}"
        );
    }
}
