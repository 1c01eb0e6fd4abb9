//! `complete_and_claim`: completions and a claim in one call behave as the
//! completions followed by the claim.

use super::{append, claim_until, entry, value, Queue, LONG, NS, SHORT};
use crate::queue::{ClaimedEntry, Lease, Turnover};
use crate::{Key, QueueError, Side};

async fn turnover(queue: &Queue, completed: &[Lease], limit: usize) -> Turnover {
    queue.complete_and_claim(completed, NS, limit, LONG).await
}

fn claimed(turnover: &Turnover) -> &[ClaimedEntry] {
    match &turnover.claim {
        Ok(claim) => &claim.entries,
        Err(error) => panic!("the claim of complete_and_claim failed: {error}"),
    }
}

fn values(entries: &[ClaimedEntry]) -> Vec<String> {
    let mut values: Vec<String> = entries.iter().map(value).collect();
    values.sort();
    values
}

fn assert_lost(result: &Result<(), QueueError>, lease: Lease, what: &str) {
    assert!(
        matches!(result, Err(QueueError::LeaseLost(id)) if *id == lease.id),
        "{what}: expected LeaseLost(#{}), got {result:?}",
        lease.id
    );
}

pub(super) async fn complete_and_claim_hands_out_the_next_entry_of_a_completed_key(queue: Queue) {
    append(&queue, "a", "a0").await;
    append(&queue, "a", "a1").await;
    append(&queue, "b", "b0").await;
    let first = turnover(&queue, &[], 10).await;
    assert_eq!(values(claimed(&first)), ["a0", "b0"]);
    let leases: Vec<Lease> = claimed(&first).iter().map(|entry| entry.lease).collect();

    let second = turnover(&queue, &leases, 10).await;
    assert_eq!(second.completed.len(), 2, "one result per lease");
    for result in &second.completed {
        assert!(result.is_ok(), "a held lease completes: {result:?}");
    }
    assert_eq!(
        values(claimed(&second)),
        ["a1"],
        "the claim sees the completions: a's next entry is its head now"
    );
    let last = claimed(&second)[0].lease;
    let third = turnover(&queue, &[last], 10).await;
    assert!(third.completed[0].is_ok());
    let claim = third.claim.expect("claim");
    assert!(claim.entries.is_empty());
    assert_eq!(claim.next_ready_in, None, "the queue is empty");
    assert!(queue.stats().await.expect("stats").is_empty());
}

pub(super) async fn complete_and_claim_refuses_a_stale_lease(queue: Queue) {
    append(&queue, "k", "k0").await;
    append(&queue, "k", "k1").await;
    let first = queue.claim(NS, 10, SHORT).await.expect("claim");
    assert_eq!(first.entries.len(), 1);
    let stale = first.entries[0].lease;
    // The lease runs out and the entry is claimed again.
    let again = claim_until(&queue, 10, SHORT).await;
    let fresh = again.entries[0].lease;
    assert_eq!(fresh.id, stale.id);

    let late = turnover(&queue, &[stale], 10).await;
    assert_lost(&late.completed[0], stale, "a stale lease");
    assert!(
        claimed(&late).is_empty(),
        "the stale completion removed nothing: k0 is still in flight and k1 behind it"
    );

    // The live claim given twice, beside the stale one: it succeeds once.
    let settled = turnover(&queue, &[stale, fresh, fresh], 10).await;
    assert_lost(&settled.completed[0], stale, "a stale lease");
    assert!(settled.completed[1].is_ok(), "{:?}", settled.completed[1]);
    assert_lost(&settled.completed[2], fresh, "a lease completed twice");
    assert_eq!(values(claimed(&settled)), ["k1"]);
}

pub(super) async fn complete_and_claim_keeps_the_unkeyed_barrier(queue: Queue) {
    append(&queue, "a", "a0").await;
    queue
        .append(entry(NS, Side::New, Key::UNKEYED, "all"))
        .await
        .expect("append");
    append(&queue, "b", "b0").await;
    let first = turnover(&queue, &[], 10).await;
    assert_eq!(
        values(claimed(&first)),
        ["a0"],
        "the unkeyed entry waits for a0, b0 for the unkeyed one"
    );
    let second = turnover(&queue, &[claimed(&first)[0].lease], 10).await;
    assert!(second.completed[0].is_ok());
    assert_eq!(values(claimed(&second)), ["all"]);
    let third = turnover(&queue, &[claimed(&second)[0].lease], 10).await;
    assert!(third.completed[0].is_ok());
    assert_eq!(values(claimed(&third)), ["b0"]);
}

pub(super) async fn complete_and_claim_with_limit_zero_only_completes(queue: Queue) {
    append(&queue, "k", "k0").await;
    append(&queue, "k", "k1").await;
    let first = queue.claim(NS, 10, LONG).await.expect("claim");
    let done = turnover(&queue, &[first.entries[0].lease], 0).await;
    assert!(done.completed[0].is_ok());
    let claim = done.claim.expect("claim");
    assert!(claim.entries.is_empty(), "a limit of 0 claims nothing");
    assert_eq!(claim.next_ready_in, None);
    let next = queue.claim(NS, 10, LONG).await.expect("claim");
    assert_eq!(
        values(&next.entries),
        ["k1"],
        "k1 was left for a later claim"
    );

    let nothing = turnover(&queue, &[], 0).await;
    assert!(nothing.completed.is_empty());
    assert!(nothing.claim.expect("claim").entries.is_empty());
}

pub(super) async fn complete_and_claim_leaves_prepared_and_dead_entries(queue: Queue) {
    append(&queue, "p", "p0").await;
    queue
        .prepare(entry(NS, Side::New, "p", "p1"), LONG)
        .await
        .expect("prepare");
    append(&queue, "d", "d0").await;
    append(&queue, "d", "d1").await;
    let first = queue.claim(NS, 10, LONG).await.expect("claim");
    assert_eq!(values(&first.entries), ["d0", "p0"]);
    let lease_of = |wanted: &str| {
        first
            .entries
            .iter()
            .find(|entry| value(entry) == wanted)
            .map(|entry| entry.lease)
            .expect("claimed")
    };
    let (d0, p0) = (lease_of("d0"), lease_of("p0"));
    queue
        .dead_letter(d0, "poison")
        .await
        .expect("dead-letter d0");

    let after = turnover(&queue, &[p0], 10).await;
    assert!(after.completed[0].is_ok());
    let claim = after.claim.expect("claim");
    assert!(
        claim.entries.is_empty(),
        "p1 is prepared and d1 waits behind a dead letter: {:?}",
        claim.entries
    );
    let wait = claim
        .next_ready_in
        .expect("the prepared entry is due at its expiry");
    assert!(wait > LONG / 2 && wait <= LONG, "next_ready_in {wait:?}");
    assert_eq!(queue.dead_letters().await.expect("dead letters").len(), 1);
}
