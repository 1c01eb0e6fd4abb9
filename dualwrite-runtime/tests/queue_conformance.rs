//! The queue conformance suite (`queue::testing::conformance`) against both
//! built-in backends, [`InMemoryQueue`] and, with the `sqlite` feature,
//! `SqliteQueue`, each with both poison policies; and, for the in-memory
//! queue alone, exact time windows under tokio's paused clock.

#[cfg(feature = "sqlite")]
mod support;

use dualwrite_runtime::queue::testing::conformance::{check_conformance, ConformanceReport};
use dualwrite_runtime::queue::testing::model::ModelBackend;
use dualwrite_runtime::queue::PoisonPolicy;
use dualwrite_runtime::{InMemoryQueue, QueueError};

/// The cases of the suite: 32 with the block policy, 11 with the skip
/// policy. Every one must run on both backends.
const CASES: usize = 43;

fn assert_all_ran(report: &ConformanceReport) {
    assert!(
        report.skipped().is_empty(),
        "skipped: {:?}",
        report.skipped()
    );
    assert_eq!(report.passed().len(), CASES, "{:?}", report.passed());
}

/// Fresh in-memory queues, of either policy.
struct MemoryBackend;

impl ModelBackend for MemoryBackend {
    type Queue = InMemoryQueue;

    async fn open(&mut self) -> Result<InMemoryQueue, QueueError> {
        Ok(InMemoryQueue::new())
    }

    async fn open_with_policy(
        &mut self,
        policy: PoisonPolicy,
    ) -> Result<Option<InMemoryQueue>, QueueError> {
        Ok(Some(InMemoryQueue::with_poison_policy(policy)))
    }
}

#[test]
fn in_memory_queue_conforms() {
    match check_conformance(MemoryBackend) {
        Ok(report) => assert_all_ran(&report),
        Err(failure) => panic!("{failure}"),
    }
}

#[cfg(feature = "sqlite")]
#[test]
fn sqlite_queue_conforms() {
    match check_conformance(support::SqliteBackend::new("queue-conformance")) {
        Ok(report) => assert_all_ran(&report),
        Err(failure) => panic!("{failure}"),
    }
}

#[tokio::test]
async fn conformance_refuses_to_run_inside_a_runtime() {
    let failure = check_conformance(MemoryBackend).expect_err("inside a runtime");
    assert_eq!(failure.failures().len(), 1);
    assert!(failure.failures()[0]
        .message()
        .contains("own tokio runtime"));
}

/// Exact time windows, on the in-memory queue under tokio's paused clock
/// (time moves only by `advance`): what the conformance suite can only
/// bound, because the SQLite queue follows the wall clock.
mod paused_clock {
    use std::time::Duration;

    use dualwrite_runtime::queue::{NewEntry, PoisonPolicy};
    use dualwrite_runtime::{InMemoryQueue, Key, QueueError, ReconciliationQueue, Side};
    use tokio::time::advance;

    type Queue = std::sync::Arc<dyn ReconciliationQueue>;

    const NS: &str = "conformance";
    const LONG: Duration = Duration::from_secs(60);

    const WINDOW: Duration = Duration::from_millis(100);
    const JUST_BEFORE: Duration = Duration::from_millis(99);
    const MS: Duration = Duration::from_millis(1);

    fn entry(namespace: &str, target: Side, key: &str, value: &str) -> NewEntry {
        NewEntry {
            namespace: namespace.to_owned(),
            target,
            key: Key::from(key),
            method: "put".to_owned(),
            version: 1,
            payload: value.as_bytes().to_vec(),
            reason: "follower down".to_owned(),
            uncertain: false,
        }
    }

    async fn append(queue: &Queue, key: &str, value: &str) {
        queue
            .append(entry(NS, Side::New, key, value))
            .await
            .expect("append");
    }

    fn queue() -> Queue {
        std::sync::Arc::new(InMemoryQueue::with_poison_policy(PoisonPolicy::Block))
    }

    async fn claimed(queue: &Queue) -> usize {
        queue
            .claim(NS, 10, LONG)
            .await
            .expect("claim")
            .entries
            .len()
    }

    async fn next_ready_in(queue: &Queue) -> Option<Duration> {
        let claim = queue.claim(NS, 10, LONG).await.expect("claim");
        assert!(claim.entries.is_empty(), "{:?}", claim.entries);
        claim.next_ready_in
    }

    #[tokio::test(start_paused = true)]
    async fn retry_delay_ends_exactly() {
        let queue = queue();
        append(&queue, "k", "v").await;
        let claim = queue.claim(NS, 1, LONG).await.expect("claim");
        queue
            .retry_later(claim.entries[0].lease, "boom", WINDOW)
            .await
            .expect("retry_later");
        assert_eq!(next_ready_in(&queue).await, Some(WINDOW));
        advance(JUST_BEFORE).await;
        assert_eq!(next_ready_in(&queue).await, Some(MS));
        advance(MS).await;
        let ready = queue.claim(NS, 10, LONG).await.expect("claim");
        assert_eq!(ready.entries.len(), 1);
        assert_eq!(ready.entries[0].attempts, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn lease_ends_exactly_and_renewal_counts_from_now() {
        let queue = queue();
        append(&queue, "k", "v").await;
        let first = queue.claim(NS, 1, WINDOW).await.expect("claim");
        let lease = first.entries[0].lease;
        assert_eq!(next_ready_in(&queue).await, Some(WINDOW));
        advance(JUST_BEFORE).await;
        assert_eq!(next_ready_in(&queue).await, Some(MS));
        // Renewed 1 ms before it ran out: a whole new window from now.
        queue.renew(lease, WINDOW).await.expect("renew");
        advance(JUST_BEFORE).await;
        assert_eq!(next_ready_in(&queue).await, Some(MS));
        advance(MS).await;
        let second = queue.claim(NS, 10, LONG).await.expect("claim");
        assert_eq!(second.entries.len(), 1, "the lease ran out");
        assert_eq!(second.entries[0].lease.id, lease.id);
        assert!(matches!(
            queue.renew(lease, WINDOW).await,
            Err(QueueError::LeaseLost(id)) if id == lease.id
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn prepared_entry_is_an_orphan_exactly_at_its_expiry() {
        let queue = queue();
        let id = queue
            .prepare(entry(NS, Side::New, "k", "k0"), WINDOW)
            .await
            .expect("prepare");
        append(&queue, "k", "k1").await;
        assert_eq!(next_ready_in(&queue).await, Some(WINDOW));
        advance(JUST_BEFORE).await;
        assert_eq!(next_ready_in(&queue).await, Some(MS));
        advance(MS).await;
        let claim = queue.claim(NS, 10, LONG).await.expect("claim");
        assert_eq!(claim.entries.len(), 1);
        assert_eq!(claim.entries[0].lease.id, id);
        assert!(claim.entries[0].orphaned);
        assert_eq!(claimed(&queue).await, 0, "k1 waits behind the orphan");
        assert!(queue
            .has_work(NS, Side::New, &Key::from("k"))
            .await
            .expect("has_work"));
    }
}
