//! The behaviour every reconciliation queue backend must have, run against
//! each backend: [`InMemoryQueue`] and, with the `sqlite` feature,
//! `SqliteQueue`.
//!
//! The in-memory queue follows tokio's clock and the SQLite queue the wall
//! clock (in milliseconds), and every SQLite call may wait for an `fsync`,
//! so the shared behaviours never assume that a call returns within a short
//! real-time window: "not claimable yet" is asserted only for leases, delays
//! and expiries of a minute ([`LONG`]), and "claimable once a short delay
//! has passed" by claiming until the entry comes, with a generous deadline
//! ([`claim_until`]). Exact windows (not claimable 1 ms before the end of a
//! delay, claimable at its end) are checked on the in-memory queue under
//! tokio's paused clock, in `paused_clock`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use dualwrite_runtime::queue::{Claim, ClaimedEntry, EntryId, NewEntry, PoisonPolicy};
use dualwrite_runtime::{InMemoryQueue, Key, QueueError, ReconciliationQueue, Side};

type Queue = Arc<dyn ReconciliationQueue>;

const NS: &str = "conformance";
const LONG: Duration = Duration::from_secs(60);
/// A lease, delay or expiry meant to run out during the test.
const SHORT: Duration = Duration::from_millis(50);
/// How long [`claim_until`] keeps trying: far beyond [`SHORT`], so that only
/// a queue that never hands the entry out fails.
const DEADLINE: Duration = Duration::from_secs(30);

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

fn value(entry: &ClaimedEntry) -> String {
    String::from_utf8(entry.payload.clone()).expect("utf-8 payload")
}

fn assert_one_per_key(entries: &[ClaimedEntry]) {
    let keys: BTreeSet<_> = entries
        .iter()
        .map(|entry| (entry.target, entry.key.clone()))
        .collect();
    assert_eq!(keys.len(), entries.len(), "two entries of one key claimed");
}

/// Claims and completes everything of `NS`, returning the values per key in
/// the order they were claimed.
async fn drain(queue: &Queue, limit: usize) -> BTreeMap<String, Vec<String>> {
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for _ in 0..10_000 {
        let claim = queue.claim(NS, limit, LONG).await.expect("claim");
        if claim.entries.is_empty() {
            assert_eq!(claim.next_ready_in, None, "drain found work not ready");
            return seen;
        }
        assert!(claim.entries.len() <= limit);
        assert_one_per_key(&claim.entries);
        for entry in &claim.entries {
            seen.entry(entry.key.to_string())
                .or_default()
                .push(value(entry));
            queue.complete(entry.lease).await.expect("complete");
        }
    }
    panic!("the queue never drained");
}

/// Claims (one at a time, each for [`LONG`]) until a claim returns entries,
/// and returns that claim. Every empty claim on the way must report work
/// ahead (`next_ready_in`), no longer away than `at_most`. Fails after
/// [`DEADLINE`].
async fn claim_until(queue: &Queue, limit: usize, at_most: Duration) -> Claim {
    let started = std::time::Instant::now();
    loop {
        let claim = queue.claim(NS, limit, LONG).await.expect("claim");
        if !claim.entries.is_empty() {
            return claim;
        }
        let wait = claim
            .next_ready_in
            .expect("an entry waiting for its time is not idleness");
        assert!(wait <= at_most, "next_ready_in {wait:?} beyond {at_most:?}");
        assert!(
            started.elapsed() < DEADLINE,
            "nothing became claimable within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts that the claim's `next_ready_in` is that of something due in
/// [`LONG`]: more than half of it away, and not more than all of it.
fn assert_waits_long(claim: &Claim) {
    let wait = claim.next_ready_in.expect("waiting work is not idleness");
    assert!(
        wait > LONG / 2 && wait <= LONG,
        "next_ready_in {wait:?}, expected up to {LONG:?}"
    );
}

// ---------------------------------------------------------------------------
// The behaviours.

async fn fifo_per_key(queue: Queue) {
    for n in 0..5 {
        append(&queue, "a", &format!("a{n}")).await;
        append(&queue, "b", &format!("b{n}")).await;
    }
    append(&queue, "c", "c0").await;
    let seen = drain(&queue, 8).await;
    assert_eq!(seen["a"], ["a0", "a1", "a2", "a3", "a4"]);
    assert_eq!(seen["b"], ["b0", "b1", "b2", "b3", "b4"]);
    assert_eq!(seen["c"], ["c0"]);
}

async fn concurrent_appends_keep_per_key_order(queue: Queue) {
    let mut tasks = Vec::new();
    for writer in 0..16 {
        let queue = Arc::clone(&queue);
        tasks.push(tokio::spawn(async move {
            for n in 0..40 {
                append(&queue, &format!("k{writer}"), &format!("{n:03}")).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    let seen = drain(&queue, 5).await;
    assert_eq!(seen.len(), 16);
    let expected: Vec<String> = (0..40).map(|n| format!("{n:03}")).collect();
    for values in seen.values() {
        assert_eq!(values, &expected);
    }
}

async fn ids_increase_in_append_order(queue: Queue) {
    let mut last = None;
    for n in 0..20 {
        let id = queue
            .append(entry(NS, Side::New, &format!("k{}", n % 3), "v"))
            .await
            .expect("append");
        if let Some(last) = last {
            assert!(id > last, "ids must increase: {last} then {id}");
        }
        last = Some(id);
    }
}

async fn one_in_flight_per_key(queue: Queue) {
    append(&queue, "k", "first").await;
    append(&queue, "k", "second").await;
    let claim = queue.claim(NS, 10, LONG).await.expect("claim");
    assert_eq!(claim.entries.len(), 1, "only the head of a key is claimed");
    assert_eq!(value(&claim.entries[0]), "first");

    let again = queue.claim(NS, 10, LONG).await.expect("claim");
    assert!(
        again.entries.is_empty(),
        "the key already has one in flight"
    );
    assert_waits_long(&again); // the lease of the entry in flight

    queue
        .complete(claim.entries[0].lease)
        .await
        .expect("complete");
    let next = queue.claim(NS, 10, LONG).await.expect("claim");
    assert_eq!(next.entries.len(), 1);
    assert_eq!(value(&next.entries[0]), "second");
}

async fn claim_respects_limit_and_namespace(queue: Queue) {
    for key in ["a", "b", "c"] {
        append(&queue, key, key).await;
    }
    queue
        .append(entry("other", Side::New, "a", "elsewhere"))
        .await
        .expect("append");
    let first = queue.claim(NS, 2, LONG).await.expect("claim");
    assert_eq!(first.entries.len(), 2);
    assert_eq!(
        first.next_ready_in,
        Some(Duration::ZERO),
        "more work is ready beyond the limit"
    );
    assert!(first.entries.iter().all(|entry| entry.namespace == NS));
    let second = queue.claim(NS, 2, LONG).await.expect("claim");
    assert_eq!(second.entries.len(), 1);
    let other = queue.claim("other", 10, LONG).await.expect("claim");
    assert_eq!(other.entries.len(), 1);
    assert_eq!(value(&other.entries[0]), "elsewhere");
    assert_eq!(other.entries[0].namespace, "other");
}

async fn targets_are_separate_streams(queue: Queue) {
    queue
        .append(entry(NS, Side::Old, "k", "to-old"))
        .await
        .expect("append");
    queue
        .append(entry(NS, Side::New, "k", "to-new"))
        .await
        .expect("append");
    let claim = queue.claim(NS, 10, LONG).await.expect("claim");
    assert_eq!(claim.entries.len(), 2, "one head per (target, key)");
    let targets: BTreeSet<Side> = claim.entries.iter().map(|entry| entry.target).collect();
    assert_eq!(targets, BTreeSet::from([Side::Old, Side::New]));
}

async fn claimed_entry_carries_its_fields(queue: Queue) {
    let before = std::time::SystemTime::now() - Duration::from_secs(1);
    let id = queue
        .append(NewEntry {
            namespace: NS.to_owned(),
            target: Side::Old,
            key: Key::from("order/7"),
            method: "update_order".to_owned(),
            version: 3,
            payload: b"{\"x\":1}".to_vec(),
            reason: "timed out".to_owned(),
            uncertain: false,
        })
        .await
        .expect("append");
    let claim = queue.claim(NS, 1, LONG).await.expect("claim");
    let entry = &claim.entries[0];
    assert_eq!(entry.lease.id, id);
    assert_eq!(entry.namespace, NS);
    assert_eq!(entry.target, Side::Old);
    assert_eq!(entry.key, Key::from("order/7"));
    assert_eq!(entry.method, "update_order");
    assert_eq!(entry.version, 3);
    assert_eq!(entry.payload, b"{\"x\":1}");
    assert_eq!(entry.attempts, 0);
    assert_eq!(entry.last_error, "timed out");
    assert!(entry.enqueued_at >= before);
}

async fn lease_expiry_and_lease_lost(queue: Queue) {
    // `held` is claimed for a minute, `k` for a moment: `k` comes back once
    // its lease has run out, `held` never does meanwhile.
    append(&queue, "held", "h").await;
    let held = queue.claim(NS, 1, LONG).await.expect("claim");
    assert_eq!(held.entries.len(), 1);
    let held = held.entries[0].lease;
    append(&queue, "k", "v").await;
    let first = queue.claim(NS, 10, SHORT).await.expect("claim");
    assert_eq!(first.entries.len(), 1, "only k is free");
    assert_eq!(first.entries[0].key, Key::from("k"));
    let stale = first.entries[0].lease;

    let second = claim_until(&queue, 10, SHORT).await;
    assert_eq!(
        second.entries.len(),
        1,
        "an expired lease is claimable again, an unexpired one is not: {:?}",
        second.entries
    );
    assert_eq!(second.entries[0].key, Key::from("k"));
    let fresh = second.entries[0].lease;
    assert_eq!(fresh.id, stale.id);
    assert_ne!(fresh.token, stale.token);
    assert_eq!(second.entries[0].attempts, 0, "an expiry is not an attempt");

    for result in [
        queue.complete(stale).await,
        queue
            .retry_later(stale, "late", Duration::from_millis(1))
            .await,
        queue.release(stale).await,
        queue.dead_letter(stale, "late").await,
        queue.renew(stale, LONG).await,
    ] {
        assert!(
            matches!(result, Err(QueueError::LeaseLost(id)) if id == stale.id),
            "stale lease accepted: {result:?}"
        );
    }
    queue.complete(fresh).await.expect("the fresh lease works");
    assert!(matches!(
        queue.complete(fresh).await,
        Err(QueueError::LeaseLost(_))
    ));
    assert!(!queue
        .has_work(NS, Side::New, &Key::from("k"))
        .await
        .expect("has_work"));
    queue
        .complete(held)
        .await
        .expect("the long lease held all along");
    assert!(queue.stats().await.expect("stats").new.is_empty());
}

async fn expired_lease_not_reclaimed_can_still_settle(queue: Queue) {
    append(&queue, "k", "v").await;
    let claim = queue
        .claim(NS, 1, Duration::from_millis(30))
        .await
        .expect("claim");
    // The lease ran from some moment before `claim` returned: it has run out
    // after this sleep, however long the claim took.
    tokio::time::sleep(Duration::from_millis(100)).await;
    queue
        .complete(claim.entries[0].lease)
        .await
        .expect("nobody else claimed it, so the lease still holds");
    let stats = queue.stats().await.expect("stats");
    assert!(stats.new.is_empty(), "{stats:?}");
}

async fn retry_later_waits_and_counts(queue: Queue) {
    // `later` is retried in a minute, `soon` in a moment.
    append(&queue, "later", "l").await;
    append(&queue, "soon", "s").await;
    let claim = queue.claim(NS, 10, LONG).await.expect("claim");
    assert_eq!(claim.entries.len(), 2);
    for entry in &claim.entries {
        let delay = if entry.key == Key::from("later") {
            LONG
        } else {
            SHORT
        };
        queue
            .retry_later(entry.lease, "boom", delay)
            .await
            .expect("retry_later");
    }
    let stats = queue.stats().await.expect("stats");
    assert_eq!(
        (stats.new.pending, stats.new.in_flight),
        (2, 0),
        "{stats:?}"
    );

    // Until `soon` is ready, the claims report it as the next work.
    let ready = claim_until(&queue, 10, SHORT).await;
    assert_eq!(
        ready.entries.len(),
        1,
        "claimed before its delay: {:?}",
        ready.entries
    );
    assert_eq!(ready.entries[0].key, Key::from("soon"));
    assert_eq!(ready.entries[0].attempts, 1);
    assert_eq!(ready.entries[0].last_error, "boom");

    let waiting = queue.claim(NS, 10, LONG).await.expect("claim");
    assert!(waiting.entries.is_empty(), "claimed before its delay");
    assert_waits_long(&waiting);
    let stats = queue.stats().await.expect("stats");
    assert_eq!(
        (stats.new.pending, stats.new.in_flight),
        (1, 1),
        "{stats:?}"
    );
}

async fn retry_delay_blocks_only_its_key(queue: Queue) {
    append(&queue, "slow", "s0").await;
    append(&queue, "slow", "s1").await;
    append(&queue, "fast", "f0").await;
    let claim = queue.claim(NS, 10, LONG).await.expect("claim");
    assert_eq!(claim.entries.len(), 2);
    for entry in &claim.entries {
        if entry.key == Key::from("slow") {
            queue
                .retry_later(entry.lease, "down", LONG)
                .await
                .expect("retry_later");
        } else {
            queue.complete(entry.lease).await.expect("complete");
        }
    }
    let next = queue.claim(NS, 10, LONG).await.expect("claim");
    assert!(
        next.entries.is_empty(),
        "s1 must wait behind s0: {:?}",
        next.entries
    );
    assert_waits_long(&next); // s0's retry delay
}

async fn release_keeps_attempts(queue: Queue) {
    append(&queue, "k", "v").await;
    let claim = queue.claim(NS, 1, LONG).await.expect("claim");
    queue
        .release(claim.entries[0].lease)
        .await
        .expect("release");
    let again = queue.claim(NS, 1, LONG).await.expect("claim");
    assert_eq!(again.entries.len(), 1, "a released entry is ready at once");
    assert_eq!(again.entries[0].attempts, 0);
    assert_eq!(again.entries[0].lease.id, claim.entries[0].lease.id);
}

/// Leaves key `k` with a dead head (`k0`, after one failed attempt) and a
/// pending `k1` behind it; returns the dead entry's id.
async fn make_dead(queue: &Queue) -> dualwrite_runtime::queue::EntryId {
    append(queue, "k", "k0").await;
    append(queue, "k", "k1").await;
    let claim = queue.claim(NS, 10, LONG).await.expect("claim");
    assert_eq!(claim.entries.len(), 1);
    queue
        .retry_later(claim.entries[0].lease, "first failure", Duration::ZERO)
        .await
        .expect("retry_later");
    let claim = queue.claim(NS, 10, LONG).await.expect("claim");
    let lease = claim.entries[0].lease;
    queue
        .dead_letter(lease, "rejected for good")
        .await
        .expect("dead_letter");
    lease.id
}

async fn dead_letter_blocks_its_key_only(queue: Queue) {
    let dead = make_dead(&queue).await;
    append(&queue, "other", "o0").await;

    let claim = queue.claim(NS, 10, LONG).await.expect("claim");
    assert_eq!(claim.entries.len(), 1, "only the other key flows");
    assert_eq!(value(&claim.entries[0]), "o0");
    queue
        .complete(claim.entries[0].lease)
        .await
        .expect("complete");
    let blocked = queue.claim(NS, 10, LONG).await.expect("claim");
    assert!(blocked.entries.is_empty());
    assert_eq!(
        blocked.next_ready_in, None,
        "only dead and blocked work left: idle"
    );

    let letters = queue.dead_letters().await.expect("dead_letters");
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.id, dead);
    assert_eq!(letter.key, Key::from("k"));
    assert_eq!(letter.namespace, NS);
    assert_eq!(letter.target, Side::New);
    assert_eq!(letter.method, "put");
    assert_eq!(letter.payload, b"k0");
    assert_eq!(letter.attempts, 2);
    assert_eq!(letter.error, "rejected for good");
    assert!(letter.died_at >= letter.enqueued_at);

    assert!(queue
        .has_work(NS, Side::New, &Key::from("k"))
        .await
        .expect("has_work"));
    let stats = queue.stats().await.expect("stats");
    assert_eq!(stats.new.dead, 1);
    assert_eq!(stats.new.blocked_keys, 1);
    assert_eq!(stats.new.pending, 1);
    assert_eq!(stats.new.in_flight, 0);
    assert!(!stats.new.is_empty());
}

async fn retry_dead_resets_and_goes_first(queue: Queue) {
    let dead = make_dead(&queue).await;
    queue.retry_dead(dead).await.expect("retry_dead");
    assert!(queue.dead_letters().await.expect("list").is_empty());
    let claim = queue.claim(NS, 10, LONG).await.expect("claim");
    assert_eq!(claim.entries.len(), 1);
    assert_eq!(
        value(&claim.entries[0]),
        "k0",
        "back at the head of its key"
    );
    assert_eq!(claim.entries[0].attempts, 0, "attempts reset");
    assert!(matches!(
        queue.retry_dead(dead).await,
        Err(QueueError::NotDead(id)) if id == dead
    ));
    queue
        .complete(claim.entries[0].lease)
        .await
        .expect("complete");
    let seen = drain(&queue, 10).await;
    assert_eq!(seen["k"], ["k1"]);
}

async fn drop_dead_unblocks(queue: Queue) {
    let dead = make_dead(&queue).await;
    queue.drop_dead(dead).await.expect("drop_dead");
    assert!(matches!(
        queue.drop_dead(dead).await,
        Err(QueueError::NotDead(_))
    ));
    let seen = drain(&queue, 10).await;
    assert_eq!(seen["k"], ["k1"]);
    assert!(queue.dead_letters().await.expect("list").is_empty());
    assert!(!queue
        .has_work(NS, Side::New, &Key::from("k"))
        .await
        .expect("has_work"));
    assert!(queue.stats().await.expect("stats").new.is_empty());
}

async fn not_dead_is_refused(queue: Queue) {
    let id = queue
        .append(entry(NS, Side::New, "k", "v"))
        .await
        .expect("append");
    assert!(matches!(
        queue.retry_dead(id).await,
        Err(QueueError::NotDead(_))
    ));
    assert!(matches!(
        queue.drop_dead(id).await,
        Err(QueueError::NotDead(_))
    ));
    let claim = queue.claim(NS, 1, LONG).await.expect("claim");
    assert!(matches!(
        queue.drop_dead(id).await,
        Err(QueueError::NotDead(_))
    ));
    queue.complete(claim.entries[0].lease).await.expect("ok");
    let missing = dualwrite_runtime::queue::EntryId(id.0 + 1000);
    assert!(matches!(
        queue.retry_dead(missing).await,
        Err(QueueError::NotDead(_))
    ));
}

async fn stats_by_target(queue: Queue) {
    assert_eq!(
        queue.stats().await.expect("stats"),
        Default::default(),
        "empty queue"
    );
    let before = std::time::SystemTime::now() - Duration::from_secs(1);
    queue
        .append(entry(NS, Side::New, "a", "1"))
        .await
        .expect("append");
    queue
        .append(entry(NS, Side::New, "a", "2"))
        .await
        .expect("append");
    queue
        .append(entry(NS, Side::New, "b", "3"))
        .await
        .expect("append");
    queue
        .append(entry(NS, Side::Old, "a", "4"))
        .await
        .expect("append");
    let claim = queue.claim(NS, 1, LONG).await.expect("claim");
    let claimed_target = claim.entries[0].target;

    let stats = queue.stats().await.expect("stats");
    let total = |side: Side| {
        let target = stats.target(side);
        target.pending + target.in_flight
    };
    assert_eq!(total(Side::New), 3);
    assert_eq!(total(Side::Old), 1);
    assert_eq!(stats.target(claimed_target).in_flight, 1);
    assert_eq!(stats.target(claimed_target.other()).in_flight, 0);
    for side in [Side::Old, Side::New] {
        let oldest = stats.target(side).oldest_pending.expect("oldest");
        assert!(oldest >= before && oldest <= std::time::SystemTime::now());
        assert_eq!(stats.target(side).dead, 0);
        assert_eq!(stats.target(side).blocked_keys, 0);
    }
}

async fn fair_across_keys(queue: Queue) {
    for n in 0..30 {
        append(&queue, "busy", &format!("busy{n}")).await;
    }
    for key in ["a", "b", "c"] {
        append(&queue, key, key).await;
    }
    // One at a time: the busy key must not take every turn.
    let mut order = Vec::new();
    for _ in 0..6 {
        let claim = queue.claim(NS, 1, LONG).await.expect("claim");
        let entry = &claim.entries[0];
        order.push(entry.key.to_string());
        queue.complete(entry.lease).await.expect("complete");
    }
    for key in ["a", "b", "c"] {
        assert!(
            order.iter().any(|seen| seen == key),
            "key {key} starved by the busy key: {order:?}"
        );
    }
    let seen = drain(&queue, 2).await;
    assert_eq!(seen["busy"].len(), 27, "the rest of the busy key, in order");
    let expected: Vec<String> = (3..30).map(|n| format!("busy{n}")).collect();
    assert_eq!(seen["busy"], expected);
}

async fn fair_when_keys_exceed_the_limit(queue: Queue) {
    // Ten keys with backlogs, claimed two at a time: every key gets a turn
    // before any key gets a second one.
    for round in 0..3 {
        for key in 0..10 {
            append(&queue, &format!("k{key}"), &format!("{round}")).await;
        }
    }
    let mut turns = Vec::new();
    while turns.len() < 10 {
        let claim = queue.claim(NS, 2, LONG).await.expect("claim");
        assert_eq!(claim.entries.len(), 2);
        for entry in &claim.entries {
            turns.push(entry.key.to_string());
            queue.complete(entry.lease).await.expect("complete");
        }
    }
    let distinct: BTreeSet<&String> = turns.iter().collect();
    assert_eq!(
        distinct.len(),
        10,
        "a key had a second turn before every key had one: {turns:?}"
    );
}

async fn has_work_follows_entries(queue: Queue) {
    let key = Key::from("k");
    assert!(!queue.has_work(NS, Side::New, &key).await.expect("has_work"));
    append(&queue, "k", "v").await;
    assert!(queue.has_work(NS, Side::New, &key).await.expect("has_work"));
    assert!(!queue.has_work(NS, Side::Old, &key).await.expect("has_work"));
    assert!(!queue
        .has_work("other", Side::New, &key)
        .await
        .expect("has_work"));
    assert!(!queue
        .has_work(NS, Side::New, &Key::from("k2"))
        .await
        .expect("has_work"));
    let claim = queue.claim(NS, 1, LONG).await.expect("claim");
    assert!(
        queue.has_work(NS, Side::New, &key).await.expect("has_work"),
        "in flight is work"
    );
    queue
        .retry_later(claim.entries[0].lease, "x", Duration::ZERO)
        .await
        .expect("retry");
    assert!(queue.has_work(NS, Side::New, &key).await.expect("has_work"));
    let claim = queue.claim(NS, 1, LONG).await.expect("claim");
    queue
        .complete(claim.entries[0].lease)
        .await
        .expect("complete");
    assert!(!queue.has_work(NS, Side::New, &key).await.expect("has_work"));
}

async fn empty_queue_is_idle(queue: Queue) {
    let claim = queue.claim(NS, 10, LONG).await.expect("claim");
    assert!(claim.entries.is_empty());
    assert_eq!(claim.next_ready_in, None);
    assert!(queue.dead_letters().await.expect("list").is_empty());
    let zero = queue.claim(NS, 0, LONG).await.expect("claim");
    assert!(zero.entries.is_empty());
}

async fn concurrent_claimers_never_share_a_key(queue: Queue) {
    for key in 0..20 {
        for n in 0..5 {
            append(&queue, &format!("k{key}"), &format!("{n}")).await;
        }
    }
    let active: Arc<std::sync::Mutex<BTreeSet<String>>> = Default::default();
    let applied: Arc<std::sync::Mutex<BTreeMap<String, Vec<String>>>> = Default::default();
    let mut workers = Vec::new();
    for _ in 0..4 {
        let queue = Arc::clone(&queue);
        let active = Arc::clone(&active);
        let applied = Arc::clone(&applied);
        workers.push(tokio::spawn(async move {
            loop {
                let claim = queue.claim(NS, 3, LONG).await.expect("claim");
                if claim.entries.is_empty() {
                    if claim.next_ready_in.is_none() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                for entry in &claim.entries {
                    assert!(
                        active.lock().unwrap().insert(entry.key.to_string()),
                        "key {} claimed twice at once",
                        entry.key
                    );
                }
                tokio::task::yield_now().await;
                for entry in &claim.entries {
                    applied
                        .lock()
                        .unwrap()
                        .entry(entry.key.to_string())
                        .or_default()
                        .push(value(entry));
                    active.lock().unwrap().remove(&entry.key.to_string());
                    queue.complete(entry.lease).await.expect("complete");
                }
            }
        }));
    }
    for worker in workers {
        worker.await.expect("worker");
    }
    let applied = applied.lock().unwrap();
    assert_eq!(applied.len(), 20);
    for values in applied.values() {
        assert_eq!(values, &["0", "1", "2", "3", "4"]);
    }
}

// ---------------------------------------------------------------------------
// Written-ahead (prepared) entries.

async fn prepare(queue: &Queue, key: &str, value: &str, expiry: Duration) -> EntryId {
    queue
        .prepare(entry(NS, Side::New, key, value), expiry)
        .await
        .expect("prepare")
}

async fn prepared_entry_waits_for_commit(queue: Queue) {
    let first = prepare(&queue, "k", "k0", LONG).await;
    append(&queue, "k", "k1").await;
    let key = Key::from("k");
    assert!(queue.has_work(NS, Side::New, &key).await.expect("has_work"));
    let claim = queue.claim(NS, 10, LONG).await.expect("claim");
    assert!(claim.entries.is_empty(), "a prepared head holds its key");
    // A prepared entry is work, not idleness: it is due at its expiry.
    assert_waits_long(&claim);
    let stats = queue.stats().await.expect("stats");
    assert_eq!(stats.new.pending, 2);

    queue.commit(first).await.expect("commit");
    let claim = queue.claim(NS, 10, LONG).await.expect("claim");
    assert_eq!(claim.entries.len(), 1);
    assert_eq!(claim.entries[0].lease.id, first);
    assert_eq!(value(&claim.entries[0]), "k0");
    assert!(!claim.entries[0].orphaned);
    queue
        .complete(claim.entries[0].lease)
        .await
        .expect("complete");
    assert_eq!(drain(&queue, 10).await["k"], ["k1"]);
    queue
        .commit(first)
        .await
        .expect("committing an entry that is gone is harmless");
}

async fn aborted_entry_disappears(queue: Queue) {
    let key = Key::from("k");
    let lone = prepare(&queue, "k", "never", LONG).await;
    queue.abort(lone).await.expect("abort");
    assert!(!queue.has_work(NS, Side::New, &key).await.expect("has_work"));
    assert!(queue.stats().await.expect("stats").new.is_empty());

    let head = prepare(&queue, "k", "never either", LONG).await;
    append(&queue, "k", "k1").await;
    queue.abort(head).await.expect("abort");
    assert_eq!(
        drain(&queue, 10).await["k"],
        ["k1"],
        "the next entry moves up"
    );
    assert!(!queue.has_work(NS, Side::New, &key).await.expect("has_work"));
    queue.abort(head).await.expect("aborting twice is harmless");

    // Aborted in the middle and at the end of a key's line.
    append(&queue, "k", "k2").await;
    let middle = prepare(&queue, "k", "not me", LONG).await;
    append(&queue, "k", "k3").await;
    let tail = prepare(&queue, "k", "nor me", LONG).await;
    queue.abort(tail).await.expect("abort");
    queue.abort(middle).await.expect("abort");
    append(&queue, "k", "k4").await;
    assert_eq!(drain(&queue, 10).await["k"], ["k2", "k3", "k4"]);
}

async fn expired_prepared_entry_is_claimed_as_orphan(queue: Queue) {
    let id = prepare(&queue, "k", "k0", SHORT).await;
    append(&queue, "k", "k1").await;
    // k1 never overtakes its prepared head: the first claim that returns
    // anything returns the orphan.
    let claim = claim_until(&queue, 10, SHORT).await;
    assert_eq!(claim.entries.len(), 1, "{:?}", claim.entries);
    let orphan = &claim.entries[0];
    assert_eq!(orphan.lease.id, id);
    assert!(orphan.orphaned, "its writer never committed it");
    queue
        .commit(id)
        .await
        .expect("a late commit changes nothing");
    queue
        .retry_later(orphan.lease, "store down", Duration::ZERO)
        .await
        .expect("retry_later (the late commit left the lease alone)");
    let again = queue.claim(NS, 10, LONG).await.expect("claim");
    assert_eq!(again.entries.len(), 1);
    assert!(
        again.entries[0].orphaned,
        "an orphan stays one until applied"
    );
    queue
        .complete(again.entries[0].lease)
        .await
        .expect("complete");
    let next = queue.claim(NS, 10, LONG).await.expect("claim");
    assert!(!next.entries[0].orphaned);
    assert_eq!(value(&next.entries[0]), "k1");
}

async fn has_later_entries_sees_the_rest_of_the_key(queue: Queue) {
    append(&queue, "k", "k0").await;
    append(&queue, "other", "o0").await;
    let claim = queue.claim(NS, 10, LONG).await.expect("claim");
    let lease = claim
        .entries
        .iter()
        .find(|entry| entry.key == Key::from("k"))
        .expect("k claimed")
        .lease;
    assert!(!queue.has_later_entries(lease).await.expect("has_later"));
    append(&queue, "k", "k1").await;
    assert!(queue.has_later_entries(lease).await.expect("has_later"));
    queue.complete(lease).await.expect("complete");
    assert!(matches!(
        queue.has_later_entries(lease).await,
        Err(QueueError::LeaseLost(_))
    ));
}

// ---------------------------------------------------------------------------
// The skip poison policy.

async fn skip_policy_lets_the_key_flow(queue: Queue) {
    append(&queue, "k", "k0").await;
    append(&queue, "k", "k1").await;
    let claim = queue.claim(NS, 10, LONG).await.expect("claim");
    queue
        .dead_letter(claim.entries[0].lease, "rejected")
        .await
        .expect("dead_letter");
    let next = queue.claim(NS, 10, LONG).await.expect("claim");
    assert_eq!(next.entries.len(), 1, "the dead letter does not block k");
    assert_eq!(value(&next.entries[0]), "k1");
    queue
        .complete(next.entries[0].lease)
        .await
        .expect("complete");

    let key = Key::from("k");
    assert!(
        !queue.has_work(NS, Side::New, &key).await.expect("has_work"),
        "only a dead letter left: new writes need not queue"
    );
    let stats = queue.stats().await.expect("stats");
    assert_eq!(stats.new.dead, 1);
    assert_eq!(stats.new.blocked_keys, 0);
    assert_eq!(stats.new.pending, 0);

    let letters = queue.dead_letters().await.expect("list");
    assert_eq!(letters.len(), 1);
    queue.retry_dead(letters[0].id).await.expect("retry_dead");
    assert!(queue.dead_letters().await.expect("list").is_empty());
    assert!(queue.has_work(NS, Side::New, &key).await.expect("has_work"));
    assert_eq!(
        drain(&queue, 10).await["k"],
        ["k0"],
        "the retried letter is applied"
    );
}

async fn skip_policy_drop_dead(queue: Queue) {
    append(&queue, "k", "k0").await;
    let claim = queue.claim(NS, 10, LONG).await.expect("claim");
    queue
        .dead_letter(claim.entries[0].lease, "rejected")
        .await
        .expect("dead_letter");
    append(&queue, "k", "k1").await;
    let id = queue.dead_letters().await.expect("list")[0].id;
    queue.drop_dead(id).await.expect("drop_dead");
    assert_eq!(drain(&queue, 10).await["k"], ["k1"]);
    assert!(queue.stats().await.expect("stats").new.is_empty());
}

// ---------------------------------------------------------------------------
// Backends.

fn memory_queue(poison: PoisonPolicy) -> Queue {
    Arc::new(InMemoryQueue::with_poison_policy(poison))
}

#[cfg(feature = "sqlite")]
mod sqlite_support {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use dualwrite_runtime::queue::{PoisonPolicy, SqliteQueue};

    /// A directory under the system's temp dir, removed on drop.
    pub(crate) struct TempDir(pub(crate) PathBuf);

    impl TempDir {
        pub(crate) fn new(name: &str) -> Self {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|since| since.as_nanos())
                .unwrap_or(0);
            let path = std::env::temp_dir().join(format!(
                "dualwrite-conformance-{name}-{}-{nanos}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&path).expect("create temp dir");
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub(crate) async fn sqlite_queue(name: &str, poison: PoisonPolicy) -> (Queue, TempDir) {
        let dir = TempDir::new(name);
        let queue = SqliteQueue::options(dir.0.join("queue.db"))
            .poison_policy(poison)
            .open()
            .await
            .expect("open the SQLite queue");
        (Arc::new(queue), dir)
    }
}

macro_rules! conformance {
    ($module:ident, $poison:expr; $($name:ident),* $(,)?) => {
        mod $module {
            mod memory {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        crate::$name(crate::memory_queue($poison)).await;
                    }
                )*
            }

            #[cfg(feature = "sqlite")]
            mod sqlite {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let (queue, dir) =
                            crate::sqlite_support::sqlite_queue(stringify!($name), $poison).await;
                        crate::$name(queue).await;
                        drop(dir);
                    }
                )*
            }
        }
    };
}

conformance!(
    block, dualwrite_runtime::queue::PoisonPolicy::Block;
    fifo_per_key,
    concurrent_appends_keep_per_key_order,
    ids_increase_in_append_order,
    one_in_flight_per_key,
    claim_respects_limit_and_namespace,
    targets_are_separate_streams,
    claimed_entry_carries_its_fields,
    lease_expiry_and_lease_lost,
    expired_lease_not_reclaimed_can_still_settle,
    retry_later_waits_and_counts,
    retry_delay_blocks_only_its_key,
    release_keeps_attempts,
    dead_letter_blocks_its_key_only,
    retry_dead_resets_and_goes_first,
    drop_dead_unblocks,
    not_dead_is_refused,
    stats_by_target,
    fair_across_keys,
    fair_when_keys_exceed_the_limit,
    has_work_follows_entries,
    empty_queue_is_idle,
    concurrent_claimers_never_share_a_key,
    prepared_entry_waits_for_commit,
    aborted_entry_disappears,
    expired_prepared_entry_is_claimed_as_orphan,
    has_later_entries_sees_the_rest_of_the_key,
);

conformance!(
    skip, dualwrite_runtime::queue::PoisonPolicy::Skip;
    fifo_per_key,
    one_in_flight_per_key,
    lease_expiry_and_lease_lost,
    retry_later_waits_and_counts,
    fair_across_keys,
    has_work_follows_entries,
    prepared_entry_waits_for_commit,
    skip_policy_lets_the_key_flow,
    skip_policy_drop_dead,
);

/// Exact time windows, on the in-memory queue under tokio's paused clock
/// (time moves only by `advance`): what the shared behaviours above can only
/// bound, because the SQLite queue follows the wall clock.
mod paused_clock {
    use std::time::Duration;

    use dualwrite_runtime::queue::PoisonPolicy;
    use dualwrite_runtime::{InMemoryQueue, Key, QueueError, Side};
    use tokio::time::advance;

    use crate::{append, entry, Queue, LONG, NS};

    const WINDOW: Duration = Duration::from_millis(100);
    const JUST_BEFORE: Duration = Duration::from_millis(99);
    const MS: Duration = Duration::from_millis(1);

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
