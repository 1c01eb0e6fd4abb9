//! An in-memory queue whose calls a test can make fail or hold, for the
//! tests of what the write path does when its queue misbehaves.

// Each test file uses a different part of it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dualwrite_runtime::queue::{Claim, DeadLetter, EntryId, Lease, NewEntry};
use dualwrite_runtime::{InMemoryQueue, Key, QueueError, QueueStats, ReconciliationQueue, Side};
use tokio::sync::Semaphore;

/// [`InMemoryQueue`] with switches.
pub struct FlakyQueue {
    inner: InMemoryQueue,
    /// How many of the next `abort`s fail.
    pub failing_aborts: AtomicUsize,
    /// Every `append` fails while set.
    pub refuse_appends: AtomicBool,
    /// `stats` waits for a permit here while set.
    pub hold_stats: AtomicBool,
    pub stats_gate: Arc<Semaphore>,
    pub stats_calls: AtomicUsize,
    pub abort_calls: AtomicUsize,
}

impl FlakyQueue {
    pub fn new() -> Self {
        FlakyQueue {
            inner: InMemoryQueue::new(),
            failing_aborts: AtomicUsize::new(0),
            refuse_appends: AtomicBool::new(false),
            hold_stats: AtomicBool::new(false),
            stats_gate: Arc::new(Semaphore::new(0)),
            stats_calls: AtomicUsize::new(0),
            abort_calls: AtomicUsize::new(0),
        }
    }
}

fn refused(what: &str) -> QueueError {
    QueueError::Backend(format!("injected failure: {what}").into())
}

#[async_trait]
impl ReconciliationQueue for FlakyQueue {
    async fn append(&self, entry: NewEntry) -> Result<EntryId, QueueError> {
        if self.refuse_appends.load(Ordering::SeqCst) {
            return Err(refused("append"));
        }
        self.inner.append(entry).await
    }
    async fn prepare(&self, entry: NewEntry, expiry: Duration) -> Result<EntryId, QueueError> {
        self.inner.prepare(entry, expiry).await
    }
    async fn commit(&self, id: EntryId) -> Result<(), QueueError> {
        self.inner.commit(id).await
    }
    async fn commit_uncertain(&self, id: EntryId) -> Result<(), QueueError> {
        self.inner.commit_uncertain(id).await
    }
    async fn abort(&self, id: EntryId) -> Result<(), QueueError> {
        self.abort_calls.fetch_add(1, Ordering::SeqCst);
        let failing =
            self.failing_aborts
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    left.checked_sub(1)
                });
        if failing.is_ok() {
            return Err(refused("abort"));
        }
        self.inner.abort(id).await
    }
    async fn has_later_entries(&self, lease: Lease) -> Result<bool, QueueError> {
        self.inner.has_later_entries(lease).await
    }
    async fn settle_orphan(&self, id: EntryId) -> Result<(), QueueError> {
        self.inner.settle_orphan(id).await
    }
    async fn has_work(&self, namespace: &str, target: Side, key: &Key) -> Result<bool, QueueError> {
        self.inner.has_work(namespace, target, key).await
    }
    async fn claim(
        &self,
        namespace: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Claim, QueueError> {
        self.inner.claim(namespace, limit, lease).await
    }
    async fn renew(&self, lease: Lease, duration: Duration) -> Result<(), QueueError> {
        self.inner.renew(lease, duration).await
    }
    async fn complete(&self, lease: Lease) -> Result<(), QueueError> {
        self.inner.complete(lease).await
    }
    async fn retry_later(
        &self,
        lease: Lease,
        error: &str,
        delay: Duration,
    ) -> Result<(), QueueError> {
        self.inner.retry_later(lease, error, delay).await
    }
    async fn release(&self, lease: Lease) -> Result<(), QueueError> {
        self.inner.release(lease).await
    }
    async fn dead_letter(&self, lease: Lease, error: &str) -> Result<(), QueueError> {
        self.inner.dead_letter(lease, error).await
    }
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        self.inner.dead_letters().await
    }
    async fn retry_dead(&self, id: EntryId) -> Result<(), QueueError> {
        self.inner.retry_dead(id).await
    }
    async fn drop_dead(&self, id: EntryId) -> Result<(), QueueError> {
        self.inner.drop_dead(id).await
    }
    async fn stats(&self) -> Result<QueueStats, QueueError> {
        self.stats_calls.fetch_add(1, Ordering::SeqCst);
        if self.hold_stats.load(Ordering::SeqCst) {
            let _permit = self.stats_gate.acquire().await;
        }
        self.inner.stats().await
    }
    async fn flush(&self) -> Result<(), QueueError> {
        self.inner.flush().await
    }
}
