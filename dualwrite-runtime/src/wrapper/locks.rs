//! Per-key order guards for the write path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::op::Key;

type LockKey = (&'static str, Key);

/// One async mutex per key that has a write in progress. Entries are removed
/// when the last holder or waiter lets go, so memory follows the number of
/// keys being written right now, not the number ever written.
#[derive(Debug, Default)]
pub(crate) struct KeyLocks {
    map: Mutex<HashMap<LockKey, Arc<AsyncMutex<()>>>>,
}

/// Held for the whole of one write; dropping it lets the next writer of the
/// key in.
pub(crate) struct KeyLockGuard {
    locks: Arc<KeyLocks>,
    key: LockKey,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyLocks {
    fn mutex(&self, key: &LockKey) -> Arc<AsyncMutex<()>> {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(map.entry(key.clone()).or_default())
    }

    pub(crate) async fn lock(self: &Arc<Self>, namespace: &'static str, key: Key) -> KeyLockGuard {
        let key = (namespace, key);
        let guard = self.mutex(&key).lock_owned().await;
        KeyLockGuard {
            locks: Arc::clone(self),
            key,
            guard: Some(guard),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }
}

impl Drop for KeyLockGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self
            .locks
            .map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Only the map holds the mutex now: nobody holds or waits for it.
        // Waiters clone the Arc under the map lock, so this cannot race them.
        if map
            .get(&self.key)
            .is_some_and(|mutex| Arc::strong_count(mutex) == 1)
        {
            map.remove(&self.key);
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
}
