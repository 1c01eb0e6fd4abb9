//! The in-process filter of the keys that have entries, which answers
//! [`ReconciliationQueue::has_work`] without a query for almost every key
//! that has none (see the module docs).
//!
//! It is a counting filter of fixed size: each key with a `streams` row
//! (namespace, target and key, hashed) adds one to a slot, and the removal of
//! that row takes it away again. A slot at zero proves that no key hashing to
//! it has work; a slot above zero only says that some key might, and the
//! queue asks the file. Its memory does not grow with the queue: a million
//! queued keys touch the same [`SLOTS`] bytes as a thousand, where a set of
//! the keys themselves grew by about 94 bytes a key.

use std::collections::HashMap;
use std::hash::BuildHasher;

use crate::op::Key;
use crate::queue::NewEntry;
#[cfg(doc)]
use crate::queue::ReconciliationQueue;
use crate::vocabulary::Side;

/// Slots of the filter, one byte each (2 MiB, allocated zeroed, so only the
/// pages that keys have touched are resident). With `n` keys queued, a key
/// without work finds its slot taken with probability about
/// `1 - exp(-n / SLOTS)`: 0.05% at a thousand keys, 39% at a million (when
/// its writes cost one primary-key lookup in the file more).
pub(super) const SLOTS: usize = 1 << 21;

/// A slot that reached this many keys stays there: it is never decremented
/// again, so it answers "maybe" (and the file decides) for good rather than
/// risk counting below the keys it holds.
const STUCK: u8 = u8::MAX;

/// What the filter knows of a key's work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Work {
    /// No entry for the key, nor (for a keyed write) for the namespace's
    /// unkeyed writes: proven, no query needed.
    None,
    /// Perhaps: the file must be asked.
    Maybe,
}

#[derive(Debug)]
pub(super) struct KeyIndex {
    /// Keys with work hashing to each slot (see [`STUCK`]).
    slots: Box<[u8]>,
    hasher: foldhash::fast::RandomState,
    /// namespace -> how many keys have work for (old, new); never below the
    /// truth (see [`KeyIndex::remove`]).
    counts: HashMap<String, [usize; 2]>,
}

impl Default for KeyIndex {
    fn default() -> Self {
        Self {
            slots: vec![0u8; SLOTS].into_boxed_slice(),
            hasher: foldhash::fast::RandomState::default(),
            counts: HashMap::new(),
        }
    }
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Old => 0,
        Side::New => 1,
    }
}

impl KeyIndex {
    fn slot(&self, namespace: &str, target: Side, key: &str) -> usize {
        let hash = self.hasher.hash_one((namespace, side_index(target), key));
        // SLOTS is a power of two.
        (hash as usize) & (SLOTS - 1)
    }

    fn taken(&self, namespace: &str, target: Side, key: &str) -> bool {
        self.slots[self.slot(namespace, target, key)] != 0
    }

    /// [`ReconciliationQueue::has_work`] as far as the filter can tell: the
    /// key or the namespace's unkeyed writes; for the unkeyed key, any key
    /// of the namespace.
    pub(super) fn work(&self, namespace: &str, target: Side, key: &Key) -> Work {
        let maybe = if key.is_unkeyed() {
            self.counts
                .get(namespace)
                .is_some_and(|counts| counts[side_index(target)] > 0)
        } else {
            self.taken(namespace, target, key.as_str())
                || self.taken(namespace, target, Key::UNKEYED)
        };
        if maybe {
            Work::Maybe
        } else {
            Work::None
        }
    }

    /// A `streams` row was created: the key has work.
    pub(super) fn insert(&mut self, namespace: &str, target: Side, key: &Key) {
        let slot = self.slot(namespace, target, key.as_str());
        let count = &mut self.slots[slot];
        if *count != STUCK {
            *count += 1;
        }
        let counts = match self.counts.get_mut(namespace) {
            Some(counts) => counts,
            None => self.counts.entry(namespace.to_owned()).or_default(),
        };
        counts[side_index(target)] += 1;
    }

    /// A `streams` row was removed: the key has no work left.
    ///
    /// Every removal this queue sees follows the insertion it counted (at
    /// open, from the file, or after a commit), so the counts cannot drop
    /// below the truth; they saturate at zero all the same. Rows removed by
    /// another process are never seen: their keys keep answering "maybe",
    /// which costs a lookup and is safe.
    pub(super) fn remove(&mut self, namespace: &str, target: Side, key: &Key) {
        let slot = self.slot(namespace, target, key.as_str());
        let count = &mut self.slots[slot];
        if *count != STUCK {
            *count = count.saturating_sub(1);
        }
        if let Some(counts) = self.counts.get_mut(namespace) {
            let count = &mut counts[side_index(target)];
            *count = count.saturating_sub(1);
            if counts == &[0, 0] {
                self.counts.remove(namespace);
            }
        }
    }

    /// Records the keys a committed transaction gave a `streams` row to and
    /// took one from. Counting commutes, so the order within a transaction
    /// does not matter.
    pub(super) fn apply(&mut self, delta: &IndexDelta) {
        for (namespace, target, key) in &delta.added {
            self.insert(namespace, *target, key);
        }
        for (namespace, target, key) in &delta.emptied {
            self.remove(namespace, *target, key);
        }
    }
}

/// Changes to the index made by one committed transaction.
#[derive(Default)]
pub(super) struct IndexDelta {
    added: Vec<(String, Side, Key)>,
    emptied: Vec<(String, Side, Key)>,
}

impl IndexDelta {
    /// `entry` was inserted as the head of its key (`prev_id IS NULL`): the
    /// key had no entry, and now has a `streams` row.
    pub(super) fn add_head(&mut self, entry: &NewEntry) {
        self.added
            .push((entry.namespace.clone(), entry.target, entry.key.clone()));
    }

    /// The key's last entry was removed: its `streams` row is gone.
    pub(super) fn empty(&mut self, key: (String, Side, Key)) {
        self.emptied.push(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_without_work_is_proven_idle_and_one_with_work_is_never() {
        let mut index = KeyIndex::default();
        let key = Key::from("k");
        index.insert("ns", Side::New, &key);
        assert_eq!(index.work("ns", Side::New, &key), Work::Maybe);
        assert_eq!(index.work("ns", Side::Old, &key), Work::None);
        assert_eq!(index.work("ns", Side::New, &Key::unkeyed()), Work::Maybe);
        assert_eq!(index.work("other", Side::New, &key), Work::None);
        index.remove("ns", Side::New, &key);
        assert_eq!(index.work("ns", Side::New, &key), Work::None);
        assert!(index.counts.is_empty());
    }

    #[test]
    fn unkeyed_work_makes_every_key_of_its_namespace_maybe() {
        let mut index = KeyIndex::default();
        index.insert("ns", Side::New, &Key::unkeyed());
        for key in ["a", "b", "c"] {
            assert_eq!(index.work("ns", Side::New, &Key::from(key)), Work::Maybe);
        }
        assert_eq!(index.work("ns", Side::Old, &Key::from("a")), Work::None);
    }

    #[test]
    fn keys_sharing_a_slot_keep_it_until_both_are_removed() {
        let mut index = KeyIndex::default();
        // Find two keys that hash to one slot.
        let first = Key::from("0");
        let slot = index.slot("ns", Side::New, first.as_str());
        let second = (1u64..)
            .map(|n| Key::from_display(&n))
            .find(|key| index.slot("ns", Side::New, key.as_str()) == slot)
            .expect("a colliding key");
        index.insert("ns", Side::New, &first);
        index.insert("ns", Side::New, &second);
        index.remove("ns", Side::New, &first);
        assert_eq!(index.work("ns", Side::New, &second), Work::Maybe);
        index.remove("ns", Side::New, &second);
        assert_eq!(index.work("ns", Side::New, &second), Work::None);
    }

    #[test]
    fn a_full_slot_stays_maybe_for_good() {
        let mut index = KeyIndex::default();
        let key = Key::from("k");
        for _ in 0..300 {
            index.insert("ns", Side::New, &key);
        }
        for _ in 0..300 {
            index.remove("ns", Side::New, &key);
        }
        assert_eq!(index.work("ns", Side::New, &key), Work::Maybe);
    }
}
