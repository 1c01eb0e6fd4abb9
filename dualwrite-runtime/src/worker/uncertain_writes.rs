//! Writes whose authoritative outcome is unknown, until the worker settles
//! them there.
//!
//! A caller cancelled during the authoritative call (or an authoritative
//! store that panicked) leaves a write that may or may not have landed. It
//! is queued *uncertain*, so that it reaches both stores in the end; and it
//! is registered here, so that the worker applies it to the authoritative
//! store again at once, out of the follower's queue order (which may be
//! stuck behind a follower that is down). Until then, a later write of an
//! overlapping key (the same key; any key of the namespace, if either write
//! is unkeyed) waits, without holding the key's guard, because if it
//! reached the authoritative store first the replay would land after it and
//! the stores would disagree. A write waits for at most `orphan_after` once
//! a worker has run in this process (the authoritative store is failing or
//! slow meanwhile, so the write would most likely fail too), or the lease
//! length when none ever ran; past that it goes ahead with an error logged.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::op::Key;
use crate::queue::EntryId;
use crate::vocabulary::Side;

/// One uncertain write, as the worker needs it to settle it.
#[derive(Debug, Clone)]
pub(crate) struct UncertainWrite {
    pub(crate) id: EntryId,
    pub(crate) namespace: String,
    pub(crate) key: Key,
    /// The store whose outcome is unknown.
    pub(crate) authoritative: Side,
    pub(crate) method: String,
    pub(crate) version: u32,
    pub(crate) payload: Vec<u8>,
}

#[derive(Debug, Default)]
struct Entries {
    /// Waiting to be settled; `true` while a worker is settling it.
    pending: Vec<(UncertainWrite, bool)>,
    /// Settled in the authoritative store by the worker, until their queue
    /// entry is done with: a claim of one as an orphan must not apply it
    /// there again.
    settled: Vec<EntryId>,
}

#[derive(Debug, Default)]
pub(crate) struct Uncertain {
    entries: Mutex<Entries>,
    /// How many writes are pending, so that the write path (which asks on
    /// every write) takes the lock only when there are some.
    pending: AtomicUsize,
    settled: Notify,
}

impl Uncertain {
    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records an uncertain write queued as `write.id`.
    pub(crate) fn register(&self, write: UncertainWrite) {
        let mut entries = self.entries();
        entries.pending.push((write, false));
        self.pending.store(entries.pending.len(), Ordering::SeqCst);
    }

    /// Takes entry `id` off the pending list (recording it settled when
    /// `applied`) and wakes the writes waiting, if it was there.
    fn remove(&self, id: EntryId, applied: bool) {
        let removed = {
            let mut entries = self.entries();
            let before = entries.pending.len();
            entries.pending.retain(|(write, _)| write.id != id);
            if applied {
                entries.settled.push(id);
            }
            self.pending.store(entries.pending.len(), Ordering::SeqCst);
            before != entries.pending.len()
        };
        if removed {
            self.settled.notify_waiters();
        }
    }

    /// The next write of `namespace` to settle, marked as being settled.
    pub(crate) fn next_to_settle(&self, namespace: &str) -> Option<UncertainWrite> {
        let mut entries = self.entries();
        let (write, settling) = entries
            .pending
            .iter_mut()
            .find(|(write, settling)| !settling && write.namespace == namespace)?;
        *settling = true;
        Some(write.clone())
    }

    /// Whether `namespace` has writes to settle that no worker is settling.
    pub(crate) fn has_unsettled(&self, namespace: &str) -> bool {
        if self.pending.load(Ordering::SeqCst) == 0 {
            return false;
        }
        self.entries()
            .pending
            .iter()
            .any(|(write, settling)| !settling && write.namespace == namespace)
    }

    /// Settling failed for now: another try later.
    pub(crate) fn retry_later(&self, id: EntryId) {
        if let Some((_, settling)) = self
            .entries()
            .pending
            .iter_mut()
            .find(|(write, _)| write.id == id)
        {
            *settling = false;
        }
    }

    /// The write reached the authoritative store (`applied`), or will not
    /// be settled by this process (it was superseded, withdrawn, or dead):
    /// writes waiting for it go ahead.
    pub(crate) fn settle(&self, id: EntryId, applied: bool) {
        self.remove(id, applied);
    }

    /// Whether entry `id` still waits to be settled.
    pub(crate) fn is_pending(&self, id: EntryId) -> bool {
        self.entries()
            .pending
            .iter()
            .any(|(write, _)| write.id == id)
    }

    /// Whether the worker already applied entry `id` to the authoritative
    /// store.
    pub(crate) fn is_settled(&self, id: EntryId) -> bool {
        self.entries().settled.contains(&id)
    }

    /// The entry is done with (applied to its target, withdrawn or dead).
    pub(crate) fn forget(&self, id: EntryId) {
        self.entries().settled.retain(|other| *other != id);
        self.remove(id, false);
    }

    /// The uncertain write a write of `key` must wait for, if any.
    pub(crate) fn blocking(&self, namespace: &str, key: &Key) -> Option<EntryId> {
        // Registered under the key's guard, which the caller holds: a write
        // registered before the caller took it is counted here.
        if self.pending.load(Ordering::SeqCst) == 0 {
            return None;
        }
        self.entries()
            .pending
            .iter()
            .find(|(write, _)| {
                write.namespace == namespace
                    && (write.key == *key || write.key.is_unkeyed() || key.is_unkeyed())
            })
            .map(|(write, _)| write.id)
    }

    /// Resolves when some uncertain write is settled. Create it (and
    /// enable it) before checking [`blocking`](Self::blocking) again, so no
    /// settle is missed.
    pub(crate) fn settled(&self) -> tokio::sync::futures::Notified<'_> {
        self.settled.notified()
    }
}
