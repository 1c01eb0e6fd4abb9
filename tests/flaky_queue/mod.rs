//! An in-memory queue whose calls a test can make fail, hold or watch, for
//! the tests of what the write path and the worker ask of their queue.

// Each test file uses a different part of it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dualwrite_runtime::queue::{Claim, DeadLetter, EntryId, Lease, NewEntry, QueuedEntry};
use dualwrite_runtime::{InMemoryQueue, Key, QueueError, QueueStats, ReconciliationQueue, Side};
use tokio::sync::Semaphore;

/// A queue ([`InMemoryQueue`] unless built [`over`](FlakyQueue::over)
/// another) with switches.
pub struct FlakyQueue<Q = InMemoryQueue> {
    inner: Q,
    /// How many of the next `abort`s fail.
    pub failing_aborts: AtomicUsize,
    /// How many of the next `commit`s fail.
    pub failing_commits: AtomicUsize,
    /// `commit` waits for a permit here while set.
    pub hold_commits: AtomicBool,
    pub commit_gate: Arc<Semaphore>,
    /// Every `append` fails while set.
    pub refuse_appends: AtomicBool,
    /// `stats` waits for a permit here while set.
    pub hold_stats: AtomicBool,
    pub stats_gate: Arc<Semaphore>,
    pub stats_calls: AtomicUsize,
    pub abort_calls: AtomicUsize,
    /// Every call, by method name, in order.
    calls: Mutex<Vec<&'static str>>,
}

impl FlakyQueue {
    pub fn new() -> Self {
        Self::over(InMemoryQueue::new())
    }
}

impl<Q> FlakyQueue<Q> {
    /// `inner` with every switch off.
    pub fn over(inner: Q) -> Self {
        FlakyQueue {
            inner,
            failing_aborts: AtomicUsize::new(0),
            failing_commits: AtomicUsize::new(0),
            hold_commits: AtomicBool::new(false),
            commit_gate: Arc::new(Semaphore::new(0)),
            refuse_appends: AtomicBool::new(false),
            hold_stats: AtomicBool::new(false),
            stats_gate: Arc::new(Semaphore::new(0)),
            stats_calls: AtomicUsize::new(0),
            abort_calls: AtomicUsize::new(0),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// Every call so far, by method name, in order.
    pub fn calls(&self) -> Vec<&'static str> {
        self.calls.lock().unwrap().clone()
    }

    /// How many calls of `method` so far.
    pub fn count(&self, method: &str) -> usize {
        self.calls().iter().filter(|call| **call == method).count()
    }

    fn record(&self, method: &'static str) {
        self.calls.lock().unwrap().push(method);
    }
}

fn refused(what: &str) -> QueueError {
    QueueError::Backend(format!("injected failure: {what}").into())
}

/// Takes one of `left`, if any is left.
fn take_one(left: &AtomicUsize) -> bool {
    left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
        left.checked_sub(1)
    })
    .is_ok()
}

#[async_trait]
impl<Q: ReconciliationQueue> ReconciliationQueue for FlakyQueue<Q> {
    async fn append(&self, entry: NewEntry) -> Result<EntryId, QueueError> {
        self.record("append");
        if self.refuse_appends.load(Ordering::SeqCst) {
            return Err(refused("append"));
        }
        self.inner.append(entry).await
    }
    async fn prepare(&self, entry: NewEntry, expiry: Duration) -> Result<EntryId, QueueError> {
        self.record("prepare");
        self.inner.prepare(entry, expiry).await
    }
    async fn commit(&self, id: EntryId) -> Result<(), QueueError> {
        self.record("commit");
        if self.hold_commits.load(Ordering::SeqCst) {
            let _permit = self.commit_gate.acquire().await;
        }
        if take_one(&self.failing_commits) {
            return Err(refused("commit"));
        }
        self.inner.commit(id).await
    }
    async fn commit_uncertain(&self, id: EntryId) -> Result<(), QueueError> {
        self.record("commit_uncertain");
        self.inner.commit_uncertain(id).await
    }
    async fn abort(&self, id: EntryId) -> Result<(), QueueError> {
        self.record("abort");
        self.abort_calls.fetch_add(1, Ordering::SeqCst);
        if take_one(&self.failing_aborts) {
            return Err(refused("abort"));
        }
        self.inner.abort(id).await
    }
    async fn has_later_entries(&self, lease: Lease) -> Result<bool, QueueError> {
        self.record("has_later_entries");
        self.inner.has_later_entries(lease).await
    }
    async fn settle_orphan(&self, id: EntryId) -> Result<(), QueueError> {
        self.record("settle_orphan");
        self.inner.settle_orphan(id).await
    }
    async fn has_work(&self, namespace: &str, target: Side, key: &Key) -> Result<bool, QueueError> {
        self.record("has_work");
        self.inner.has_work(namespace, target, key).await
    }
    async fn claim(
        &self,
        namespace: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Claim, QueueError> {
        self.record("claim");
        self.inner.claim(namespace, limit, lease).await
    }
    async fn renew(&self, lease: Lease, duration: Duration) -> Result<(), QueueError> {
        self.record("renew");
        self.inner.renew(lease, duration).await
    }
    async fn complete(&self, lease: Lease) -> Result<(), QueueError> {
        self.record("complete");
        self.inner.complete(lease).await
    }
    async fn retry_later(
        &self,
        lease: Lease,
        error: &str,
        delay: Duration,
    ) -> Result<(), QueueError> {
        self.record("retry_later");
        self.inner.retry_later(lease, error, delay).await
    }
    async fn release(&self, lease: Lease) -> Result<(), QueueError> {
        self.record("release");
        self.inner.release(lease).await
    }
    async fn dead_letter(&self, lease: Lease, error: &str) -> Result<(), QueueError> {
        self.record("dead_letter");
        self.inner.dead_letter(lease, error).await
    }
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        self.record("dead_letters");
        self.inner.dead_letters().await
    }
    async fn retry_dead(&self, id: EntryId) -> Result<(), QueueError> {
        self.record("retry_dead");
        self.inner.retry_dead(id).await
    }
    async fn drop_dead(&self, id: EntryId) -> Result<(), QueueError> {
        self.record("drop_dead");
        self.inner.drop_dead(id).await
    }
    async fn stats(&self) -> Result<QueueStats, QueueError> {
        self.record("stats");
        self.stats_calls.fetch_add(1, Ordering::SeqCst);
        if self.hold_stats.load(Ordering::SeqCst) {
            let _permit = self.stats_gate.acquire().await;
        }
        self.inner.stats().await
    }
    async fn key_entries(
        &self,
        namespace: &str,
        target: Side,
        key: &Key,
    ) -> Result<Vec<QueuedEntry>, QueueError> {
        self.record("key_entries");
        self.inner.key_entries(namespace, target, key).await
    }
    async fn flush(&self) -> Result<(), QueueError> {
        self.record("flush");
        self.inner.flush().await
    }
}
