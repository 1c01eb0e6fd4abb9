//! The in-process index of the keys that have entries, which answers
//! [`ReconciliationQueue::has_work`] without a query (see the module docs).

use std::collections::HashMap;

use crate::op::Key;
use crate::queue::NewEntry;
#[cfg(doc)]
use crate::queue::ReconciliationQueue;
use crate::vocabulary::Side;

#[derive(Debug, Default)]
pub(super) struct KeyIndex {
    /// namespace -> key -> bit 0: work for the old store, bit 1: for the new.
    keys: HashMap<String, HashMap<Key, u8>>,
    /// namespace -> how many keys have work for (old, new).
    counts: HashMap<String, [usize; 2]>,
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Old => 0,
        Side::New => 1,
    }
}

fn side_bit(side: Side) -> u8 {
    match side {
        Side::Old => 1,
        Side::New => 2,
    }
}

impl KeyIndex {
    fn contains(&self, namespace: &str, target: Side, key: &Key) -> bool {
        self.keys
            .get(namespace)
            .and_then(|keys| keys.get(key))
            .is_some_and(|bits| bits & side_bit(target) != 0)
    }

    /// [`ReconciliationQueue::has_work`]: the key or the namespace's
    /// unkeyed writes; for the unkeyed key, any key of the namespace.
    pub(super) fn must_queue(&self, namespace: &str, target: Side, key: &Key) -> bool {
        if key.is_unkeyed() {
            self.counts
                .get(namespace)
                .is_some_and(|counts| counts[side_index(target)] > 0)
        } else {
            self.contains(namespace, target, key)
                || self.contains(namespace, target, &Key::unkeyed())
        }
    }

    fn count(&mut self, namespace: &str, target: Side, delta: isize) {
        let counts = self.counts.entry(namespace.to_owned()).or_default();
        let count = &mut counts[side_index(target)];
        *count = count.saturating_add_signed(delta);
        if counts == &[0, 0] {
            self.counts.remove(namespace);
        }
    }

    pub(super) fn insert(&mut self, namespace: &str, target: Side, key: &Key) {
        let keys = match self.keys.get_mut(namespace) {
            Some(keys) => keys,
            None => self.keys.entry(namespace.to_owned()).or_default(),
        };
        let added = match keys.get_mut(key) {
            Some(bits) => {
                let added = *bits & side_bit(target) == 0;
                *bits |= side_bit(target);
                added
            }
            None => {
                keys.insert(key.clone(), side_bit(target));
                true
            }
        };
        if added {
            self.count(namespace, target, 1);
        }
    }

    pub(super) fn remove(&mut self, namespace: &str, target: Side, key: &Key) {
        let Some(keys) = self.keys.get_mut(namespace) else {
            return;
        };
        let mut removed = false;
        if let Some(bits) = keys.get_mut(key) {
            removed = *bits & side_bit(target) != 0;
            *bits &= !side_bit(target);
            if *bits == 0 {
                keys.remove(key);
            }
        }
        if keys.is_empty() {
            self.keys.remove(namespace);
        }
        if removed {
            self.count(namespace, target, -1);
        }
    }

    /// Records the keys a committed transaction gave entries to and left
    /// without.
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
    /// `entry` was inserted: its key has work.
    pub(super) fn add(&mut self, entry: &NewEntry) {
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
    fn index_tracks_sides_separately() {
        let mut index = KeyIndex::default();
        let key = Key::from("k");
        index.insert("ns", Side::New, &key);
        assert!(index.contains("ns", Side::New, &key));
        assert!(!index.contains("ns", Side::Old, &key));
        index.insert("ns", Side::Old, &key);
        index.remove("ns", Side::New, &key);
        assert!(index.contains("ns", Side::Old, &key));
        index.remove("ns", Side::Old, &key);
        assert!(index.keys.is_empty());
    }
}
