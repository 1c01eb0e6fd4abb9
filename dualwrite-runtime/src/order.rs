//! Per-key order guards, used by the write path, the worker's orphan
//! replays and settling, and the stage handle that shares them between
//! wrappers.
//!
//! A keyed write holds its namespace's lock shared and its key's mutex; an
//! unkeyed write (a method without `key = ..`, such as `delete_all()`)
//! holds its namespace's lock exclusively. So two writes of one key, or an
//! unkeyed write and any keyed write of its namespace, never reach the
//! stores in different orders, while writes of different keys run in
//! parallel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{
    Mutex as AsyncMutex, OwnedMutexGuard, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock,
};

use crate::op::Key;

type LockKey = (&'static str, Key);

/// The maps' hasher: foldhash, seeded per process. Every write looks its
/// key up twice (taking and releasing the guard); SipHash, the standard
/// library's default, was a tenth of the instructions of a write in `Off`.
type Hasher = foldhash::fast::RandomState;

/// One async mutex per key that has a write in progress, and one lock per
/// namespace. Key entries are removed when the last holder or waiter lets
/// go, so memory follows the number of keys being written right now, not
/// the number ever written; namespaces are the traits of the program.
#[derive(Debug, Default)]
pub(crate) struct KeyLocks {
    map: Mutex<HashMap<LockKey, Arc<AsyncMutex<()>>, Hasher>>,
    namespaces: Mutex<HashMap<&'static str, Arc<RwLock<()>>, Hasher>>,
}

/// Held for the whole of one write; dropping it lets the next writer of the
/// key (or, for an unkeyed write, of the namespace) in.
pub(crate) struct KeyLockGuard {
    locks: Arc<KeyLocks>,
    held: Held,
}

enum Held {
    Key {
        key: LockKey,
        guard: Option<OwnedMutexGuard<()>>,
        _namespace: OwnedRwLockReadGuard<()>,
    },
    Namespace(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
}

impl KeyLocks {
    fn mutex(&self, key: &LockKey) -> Arc<AsyncMutex<()>> {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(map.entry(key.clone()).or_default())
    }

    fn namespace(&self, namespace: &'static str) -> Arc<RwLock<()>> {
        let mut namespaces = self
            .namespaces
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(namespaces.entry(namespace).or_default())
    }

    /// Waits for the key's turn: the namespace shared, then the key; for the
    /// [unkeyed](Key::is_unkeyed) key, the namespace exclusively.
    pub(crate) async fn lock(self: &Arc<Self>, namespace: &'static str, key: Key) -> KeyLockGuard {
        let namespace_lock = self.namespace(namespace);
        let held = if key.is_unkeyed() {
            Held::Namespace(namespace_lock.write_owned().await)
        } else {
            let shared = namespace_lock.read_owned().await;
            let key = (namespace, key);
            let guard = self.mutex(&key).lock_owned().await;
            Held::Key {
                key,
                guard: Some(guard),
                _namespace: shared,
            }
        };
        KeyLockGuard {
            locks: Arc::clone(self),
            held,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }
}

impl Drop for KeyLockGuard {
    fn drop(&mut self) {
        let Held::Key { key, guard, .. } = &mut self.held else {
            return;
        };
        drop(guard.take());
        let mut map = self
            .locks
            .map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Only the map holds the mutex now: nobody holds or waits for it.
        // Waiters clone the Arc under the map lock, so this cannot race them.
        if map
            .get(key)
            .is_some_and(|mutex| Arc::strong_count(mutex) == 1)
        {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_admits_one_writer_at_a_time_and_is_forgotten_after() {
        let locks = Arc::new(KeyLocks::default());
        let first = locks.lock("ns", Key::from("a")).await;
        let other_key = locks.lock("ns", Key::from("b")).await;
        let waiter = {
            let locks = Arc::clone(&locks);
            tokio::spawn(async move { locks.lock("ns", Key::from("a")).await })
        };
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "a second writer of a held key must wait"
        );
        drop(first);
        let second = waiter.await.unwrap();
        drop(second);
        drop(other_key);
        assert_eq!(locks.len(), 0, "released keys are removed from the map");
    }

    #[tokio::test]
    async fn an_unkeyed_write_waits_for_every_key_of_its_namespace_and_they_for_it() {
        let locks = Arc::new(KeyLocks::default());
        let keyed = locks.lock("ns", Key::from("a")).await;
        let other_namespace = locks.lock("other", Key::unkeyed()).await;
        let unkeyed = {
            let locks = Arc::clone(&locks);
            tokio::spawn(async move { locks.lock("ns", Key::unkeyed()).await })
        };
        tokio::task::yield_now().await;
        assert!(!unkeyed.is_finished(), "unkeyed must wait for keyed writes");
        drop(keyed);
        let unkeyed = unkeyed.await.unwrap();
        let later_keyed = {
            let locks = Arc::clone(&locks);
            tokio::spawn(async move { locks.lock("ns", Key::from("b")).await })
        };
        tokio::task::yield_now().await;
        assert!(
            !later_keyed.is_finished(),
            "a keyed write must wait for an unkeyed one in progress"
        );
        drop(unkeyed);
        drop(later_keyed.await.unwrap());
        drop(other_namespace);
    }
}
