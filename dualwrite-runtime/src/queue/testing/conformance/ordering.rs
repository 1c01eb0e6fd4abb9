//! Ordering, claims, leases, retries, fairness, `has_work` and `stats`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::{append, assert_waits_long, claim_until, drain, entry, value, Queue, LONG, NS, SHORT};
use crate::queue::NewEntry;
use crate::{Key, QueueError, Side};

pub(super) async fn fifo_per_key(queue: Queue) {
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

pub(super) async fn concurrent_appends_keep_per_key_order(queue: Queue) {
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

pub(super) async fn ids_increase_in_append_order(queue: Queue) {
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

pub(super) async fn one_in_flight_per_key(queue: Queue) {
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

pub(super) async fn claim_respects_limit_and_namespace(queue: Queue) {
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

pub(super) async fn targets_are_separate_streams(queue: Queue) {
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

pub(super) async fn claimed_entry_carries_its_fields(queue: Queue) {
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

pub(super) async fn lease_expiry_and_lease_lost(queue: Queue) {
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

pub(super) async fn expired_lease_not_reclaimed_can_still_settle(queue: Queue) {
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

pub(super) async fn retry_later_waits_and_counts(queue: Queue) {
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

pub(super) async fn retry_delay_blocks_only_its_key(queue: Queue) {
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

pub(super) async fn release_keeps_attempts(queue: Queue) {
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

pub(super) async fn stats_by_target(queue: Queue) {
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

pub(super) async fn fair_across_keys(queue: Queue) {
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

pub(super) async fn fair_when_keys_exceed_the_limit(queue: Queue) {
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

pub(super) async fn has_work_follows_entries(queue: Queue) {
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

pub(super) async fn empty_queue_is_idle(queue: Queue) {
    let claim = queue.claim(NS, 10, LONG).await.expect("claim");
    assert!(claim.entries.is_empty());
    assert_eq!(claim.next_ready_in, None);
    assert!(queue.dead_letters().await.expect("list").is_empty());
    let zero = queue.claim(NS, 0, LONG).await.expect("claim");
    assert!(zero.entries.is_empty());
}

pub(super) async fn concurrent_claimers_never_share_a_key(queue: Queue) {
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
