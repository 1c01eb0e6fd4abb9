//! Bad configuration is refused at build time with an error naming the
//! setting, and the stage guardrails refuse unsafe moves.

use std::time::Duration;

use dualwrite_runtime::{BuildError, DualWrite, InMemoryQueue, RetryPolicy, Stage, StageError};
use dualwrite_suite::{Fault, FaultyStore, KvRepo, KvRepoOp};

fn setting_of(error: BuildError) -> &'static str {
    match error {
        BuildError::Missing { setting, .. } | BuildError::Invalid { setting, .. } => setting,
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn invalid_settings_are_refused_by_name() {
    let builder =
        || DualWrite::builder(FaultyStore::new(), FaultyStore::new()).queue(InMemoryQueue::new());
    let cases = [
        (
            DualWrite::builder(FaultyStore::new(), FaultyStore::new())
                .build()
                .unwrap_err(),
            "queue",
        ),
        (
            builder()
                .follower_timeout(Duration::ZERO)
                .build()
                .unwrap_err(),
            "follower_timeout",
        ),
        (
            builder().worker_concurrency(0).build().unwrap_err(),
            "worker_concurrency",
        ),
        (
            builder().poll_interval(Duration::ZERO).build().unwrap_err(),
            "poll_interval",
        ),
        (
            builder()
                .follower_timeout(Duration::from_secs(5))
                .lease(Duration::from_secs(5))
                .build()
                .unwrap_err(),
            "lease",
        ),
        (
            builder()
                .retry(RetryPolicy::default().max_attempts(0))
                .build()
                .unwrap_err(),
            "retry.max_attempts",
        ),
        (
            builder()
                .retry(RetryPolicy::default().factor(f32::NAN))
                .build()
                .unwrap_err(),
            "retry.factor",
        ),
    ];
    for (error, setting) in cases {
        let message = error.to_string();
        assert!(message.contains(setting), "{message}");
        assert_eq!(setting_of(error), setting);
    }
}

/// `Duration::MAX` (a natural way to write "never") used to panic when the
/// runtime added it to a clock reading; every duration setting is checked
/// at build time instead, and the error names it.
#[test]
fn durations_too_long_for_a_clock_are_refused_by_name() {
    use dualwrite_runtime::CircuitBreaker;
    let builder =
        || DualWrite::builder(FaultyStore::new(), FaultyStore::new()).queue(InMemoryQueue::new());
    let never = Duration::MAX;
    let cases = [
        (
            builder().follower_timeout(never).build().unwrap_err(),
            "follower_timeout",
        ),
        (builder().lease(never).build().unwrap_err(), "lease"),
        (
            builder().orphan_after(never).build().unwrap_err(),
            "orphan_after",
        ),
        (
            builder().poll_interval(never).build().unwrap_err(),
            "poll_interval",
        ),
        (
            builder().compare_timeout(never).build().unwrap_err(),
            "compare_timeout",
        ),
        (
            builder()
                .circuit_breaker(CircuitBreaker::new(3, never))
                .build()
                .unwrap_err(),
            "circuit_breaker.cooldown",
        ),
        (
            builder()
                .retry(RetryPolicy::default().max_delay(never))
                .build()
                .unwrap_err(),
            "retry.max_delay",
        ),
    ];
    for (error, setting) in cases {
        let message = error.to_string();
        assert!(message.contains(&format!("`{setting}`")), "{message}");
        assert!(message.contains("a year"), "{message}");
        assert_eq!(setting_of(error), setting);
    }
}

/// The in-memory queue takes huge expiries and delays without overflowing.
#[tokio::test]
async fn the_in_memory_queue_takes_any_duration() {
    use dualwrite_runtime::queue::NewEntry;
    use dualwrite_runtime::{Key, ReconciliationQueue, Side};
    let queue = InMemoryQueue::new();
    let entry = NewEntry {
        namespace: "kv".into(),
        target: Side::New,
        key: Key::from("1"),
        method: "put".into(),
        version: 1,
        payload: Vec::new(),
        reason: "test".into(),
        uncertain: false,
    };
    queue.prepare(entry.clone(), Duration::MAX).await.unwrap();
    queue.append(entry).await.unwrap();
    let claim = queue.claim("kv", 10, Duration::MAX).await.unwrap();
    assert!(
        claim.entries.is_empty(),
        "the prepared head never expires into an orphan"
    );
}

#[tokio::test]
async fn the_new_store_cannot_become_authoritative_while_it_has_queued_work() {
    let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
        .queue(InMemoryQueue::new())
        .stage(Stage::Shadow)
        .build()
        .unwrap();
    repo.new_store().script([Fault::Error]);
    repo.put(1, 1).await.unwrap();

    let refused = repo.stage().set(Stage::Live).await.unwrap_err();
    assert!(
        matches!(
            refused,
            StageError::Backlog {
                side: dualwrite_runtime::Side::New,
                ..
            }
        ),
        "{refused}"
    );
    assert!(refused.to_string().contains("1 pending"), "{refused}");
    assert_eq!(
        repo.stage().get(),
        Stage::Shadow,
        "a refused move changes nothing"
    );
    // Moves that keep the old store authoritative are fine.
    repo.stage().set(Stage::DualWrite).await.unwrap();

    repo.worker::<KvRepoOp>().drain().await;
    let change = repo.stage().set(Stage::Live).await.unwrap();
    assert_eq!(
        (change.from, change.to, change.forced),
        (Stage::DualWrite, Stage::Live, None)
    );
}

#[tokio::test]
async fn leaving_complete_needs_force_with_a_reason() {
    let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
        .queue(InMemoryQueue::new())
        .stage(Stage::Complete)
        .build()
        .unwrap();
    let refused = repo.stage().set(Stage::RampDown).await.unwrap_err();
    assert!(
        matches!(
            refused,
            StageError::LeavingComplete {
                to: Stage::RampDown
            }
        ),
        "{refused}"
    );
    let forced = repo
        .stage()
        .force(Stage::RampDown, "old store repaired by backfill #42")
        .await
        .unwrap();
    assert_eq!(
        forced.forced.as_deref(),
        Some("old store repaired by backfill #42")
    );
    assert_eq!(repo.stage().get(), Stage::RampDown);
}

#[tokio::test]
async fn a_move_that_stops_writing_a_store_with_queued_work_is_refused() {
    let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
        .queue(InMemoryQueue::new())
        .stage(Stage::RampDown)
        .build()
        .unwrap();
    // The old store is the follower in RampDown; one write misses it.
    repo.old_store().script([Fault::Error]);
    repo.put(3, 1).await.unwrap();

    let refused = repo.stage().set(Stage::Complete).await.unwrap_err();
    assert!(
        matches!(
            refused,
            StageError::FollowerBacklog {
                side: dualwrite_runtime::Side::Old,
                ..
            }
        ),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("would stop receiving writes"),
        "{refused}"
    );
    repo.worker::<KvRepoOp>().drain().await;
    repo.stage().set(Stage::Complete).await.unwrap();
}
