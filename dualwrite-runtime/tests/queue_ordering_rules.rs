//! Two ordering rules every queue backend keeps, run against both built-in
//! backends:
//!
//! - A prepared (written-ahead) entry becomes an orphan only when its own
//!   expiry passes, never because the entry ahead of it in its key was
//!   completed, dead-lettered or dropped. (The SQLite backend used to make
//!   it claimable as soon as it became the head, so on a busy key every
//!   journaled write was replayed to the authoritative store.)
//! - Unkeyed entries (writes without a key, such as `delete_all()`) are
//!   ordered against every key of their namespace and target, and
//!   `has_work` and `has_later_entries` say so.

use std::sync::Arc;
use std::time::Duration;

use dualwrite_runtime::queue::{NewEntry, SqliteQueue};
use dualwrite_runtime::{InMemoryQueue, Key, ReconciliationQueue, Side};

type Queue = Arc<dyn ReconciliationQueue>;

const NS: &str = "rules";
const LONG: Duration = Duration::from_secs(60);

fn entry(key: &Key, value: &str) -> NewEntry {
    NewEntry {
        namespace: NS.to_owned(),
        target: Side::New,
        key: key.clone(),
        method: "put".to_owned(),
        version: 1,
        payload: value.as_bytes().to_vec(),
        reason: "test".to_owned(),
        uncertain: false,
    }
}

fn values(claim: &dualwrite_runtime::queue::Claim) -> Vec<String> {
    let mut values: Vec<String> = claim
        .entries
        .iter()
        .map(|entry| String::from_utf8(entry.payload.clone()).unwrap())
        .collect();
    values.sort();
    values
}

async fn prepared_entry_behind_a_completed_head_waits_for_its_commit(queue: Queue) {
    let key = Key::from("busy");
    queue.append(entry(&key, "head")).await.unwrap();
    let prepared = queue
        .prepare(entry(&key, "written ahead"), LONG)
        .await
        .unwrap();
    let head = queue.claim(NS, 10, LONG).await.unwrap();
    assert_eq!(values(&head), ["head"]);
    queue.complete(head.entries[0].lease).await.unwrap();

    let early = queue.claim(NS, 10, LONG).await.unwrap();
    assert!(
        early.entries.is_empty(),
        "a prepared entry became claimable when the head ahead of it completed: {:?}",
        values(&early)
    );
    queue.commit(prepared).await.unwrap();
    let committed = queue.claim(NS, 10, LONG).await.unwrap();
    assert_eq!(values(&committed), ["written ahead"]);
    assert!(
        !committed.entries[0].orphaned,
        "a committed entry is no orphan"
    );
}

async fn prepared_entry_behind_a_dropped_dead_letter_waits_too(queue: Queue) {
    let key = Key::from("poisoned");
    queue.append(entry(&key, "head")).await.unwrap();
    queue
        .prepare(entry(&key, "written ahead"), LONG)
        .await
        .unwrap();
    let head = queue.claim(NS, 10, LONG).await.unwrap();
    queue
        .dead_letter(head.entries[0].lease, "rejected")
        .await
        .unwrap();
    queue.drop_dead(head.entries[0].lease.id).await.unwrap();
    let early = queue.claim(NS, 10, LONG).await.unwrap();
    assert!(early.entries.is_empty(), "{:?}", values(&early));
}

async fn prepared_entry_becomes_an_orphan_at_its_own_expiry(queue: Queue) {
    let key = Key::from("orphan");
    queue.append(entry(&key, "head")).await.unwrap();
    queue
        .prepare(entry(&key, "written ahead"), Duration::from_millis(50))
        .await
        .unwrap();
    let head = queue.claim(NS, 10, LONG).await.unwrap();
    queue.complete(head.entries[0].lease).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let orphan = queue.claim(NS, 10, LONG).await.unwrap();
    assert_eq!(values(&orphan), ["written ahead"]);
    assert!(orphan.entries[0].orphaned);
}

async fn commit_uncertain_makes_a_prepared_entry_an_orphan_now(queue: Queue) {
    let key = Key::from("cancelled");
    let prepared = queue.prepare(entry(&key, "unknown"), LONG).await.unwrap();
    queue.commit_uncertain(prepared).await.unwrap();
    let claim = queue.claim(NS, 10, LONG).await.unwrap();
    assert_eq!(values(&claim), ["unknown"]);
    assert!(claim.entries[0].orphaned, "its first store may not have it");
}

async fn unkeyed_entries_are_ordered_against_every_key(queue: Queue) {
    let (a, b, all) = (Key::from("a"), Key::from("b"), Key::unkeyed());
    queue.append(entry(&a, "a1")).await.unwrap();
    queue.append(entry(&all, "clear")).await.unwrap();
    queue.append(entry(&b, "b1")).await.unwrap();
    // b has no entry of its own before the clear, but must wait for it.
    assert!(
        queue
            .has_work(NS, Side::New, &Key::from("c"))
            .await
            .unwrap(),
        "any key waits for a queued unkeyed write"
    );
    assert!(
        !queue.has_work(NS, Side::Old, &a).await.unwrap(),
        "the other target is separate"
    );

    let first = queue.claim(NS, 10, LONG).await.unwrap();
    assert_eq!(
        values(&first),
        ["a1"],
        "the clear waits for a1, b1 waits for the clear"
    );
    assert!(
        queue
            .has_later_entries(first.entries[0].lease)
            .await
            .unwrap(),
        "the clear follows a1"
    );
    queue.complete(first.entries[0].lease).await.unwrap();

    let second = queue.claim(NS, 10, LONG).await.unwrap();
    assert_eq!(values(&second), ["clear"]);
    assert!(
        queue
            .has_later_entries(second.entries[0].lease)
            .await
            .unwrap(),
        "b1 follows the clear"
    );
    queue.complete(second.entries[0].lease).await.unwrap();

    let third = queue.claim(NS, 10, LONG).await.unwrap();
    assert_eq!(values(&third), ["b1"]);
    assert!(!queue
        .has_later_entries(third.entries[0].lease)
        .await
        .unwrap());
    queue.complete(third.entries[0].lease).await.unwrap();
    assert!(!queue.has_work(NS, Side::New, &all).await.unwrap());
}

async fn an_unkeyed_write_waits_for_any_queued_key(queue: Queue) {
    let all = Key::unkeyed();
    assert!(!queue.has_work(NS, Side::New, &all).await.unwrap());
    queue.append(entry(&Key::from("x"), "x1")).await.unwrap();
    assert!(queue.has_work(NS, Side::New, &all).await.unwrap());
    assert!(
        !queue
            .has_work(NS, Side::New, &Key::from("y"))
            .await
            .unwrap(),
        "keys are independent of each other"
    );
}

async fn settle_orphan_makes_a_retry_go_to_the_target_only(queue: Queue) {
    let key = Key::from("settled");
    let mut uncertain = entry(&key, "maybe");
    uncertain.uncertain = true;
    queue.append(uncertain).await.unwrap();
    let claim = queue.claim(NS, 10, LONG).await.unwrap();
    assert!(
        claim.entries[0].orphaned,
        "an uncertain entry is claimed as an orphan"
    );
    queue
        .settle_orphan(claim.entries[0].lease.id)
        .await
        .unwrap();
    queue
        .retry_later(claim.entries[0].lease, "target down", Duration::ZERO)
        .await
        .unwrap();
    let retry = queue.claim(NS, 10, LONG).await.unwrap();
    assert_eq!(values(&retry), ["maybe"]);
    assert!(
        !retry.entries[0].orphaned,
        "settled: the retry goes to the target only"
    );
}

async fn renew_extends_a_lease_and_refuses_a_lost_one(queue: Queue) {
    let key = Key::from("leased");
    queue.append(entry(&key, "slow")).await.unwrap();
    let claim = queue
        .claim(NS, 10, Duration::from_millis(200))
        .await
        .unwrap();
    let lease = claim.entries[0].lease;
    queue.renew(lease, LONG).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = queue.claim(NS, 10, LONG).await.unwrap();
    assert!(
        again.entries.is_empty(),
        "a renewed lease holds past its first expiry"
    );
    queue.complete(lease).await.unwrap();

    queue.append(entry(&key, "lost")).await.unwrap();
    let claim = queue
        .claim(NS, 10, Duration::from_millis(50))
        .await
        .unwrap();
    let stale = claim.entries[0].lease;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let taken = queue.claim(NS, 10, LONG).await.unwrap();
    assert_eq!(
        taken.entries.len(),
        1,
        "the expired lease was claimed again"
    );
    assert!(matches!(
        queue.renew(stale, LONG).await,
        Err(dualwrite_runtime::QueueError::LeaseLost(_))
    ));
}

/// A stale claim and the live claim of one entry completed together (the
/// SQLite queue commits them in one batch): only the live one succeeds, and
/// the entry is gone. (Found by the model-based suite: the SQLite queue
/// acknowledged whichever completion of the entry came first in the batch.)
async fn only_the_live_claim_completes_beside_a_stale_one(queue: Queue) {
    let keys: Vec<Key> = (0..16).map(|n| Key::from(format!("c{n}"))).collect();
    for key in &keys {
        queue.append(entry(key, "v")).await.unwrap();
    }
    let stale = queue
        .claim(NS, 100, Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(stale.entries.len(), keys.len());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let live = queue.claim(NS, 100, LONG).await.unwrap();
    assert_eq!(
        live.entries.len(),
        keys.len(),
        "every lease expired and was claimed again"
    );
    let mut completions = Vec::new();
    for (old, new) in stale.entries.iter().zip(&live.entries) {
        assert_eq!(old.lease.id, new.lease.id);
        completions.push(queue.complete(old.lease));
        completions.push(queue.complete(new.lease));
    }
    let results = futures::future::join_all(completions).await;
    for (n, pair) in results.chunks(2).enumerate() {
        assert!(
            matches!(pair[0], Err(dualwrite_runtime::QueueError::LeaseLost(_))),
            "entry {n}: the stale claim's completion was accepted: {:?}",
            pair[0]
        );
        assert!(
            pair[1].is_ok(),
            "entry {n}: the live claim's completion was refused: {:?}",
            pair[1]
        );
    }
    assert!(queue.stats().await.unwrap().is_empty());
}

fn sqlite_path(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dualwrite-rules-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("queue.db")
}

macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod in_memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(Arc::new(InMemoryQueue::new())).await;
                }
            )*
        }
        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let path = sqlite_path(stringify!($test));
                    let queue = SqliteQueue::open(&path).await.unwrap();
                    super::$test(Arc::new(queue)).await;
                    let _ = std::fs::remove_dir_all(path.parent().unwrap());
                }
            )*
        }
    };
}

on_both_backends!(
    prepared_entry_behind_a_completed_head_waits_for_its_commit,
    prepared_entry_behind_a_dropped_dead_letter_waits_too,
    prepared_entry_becomes_an_orphan_at_its_own_expiry,
    commit_uncertain_makes_a_prepared_entry_an_orphan_now,
    unkeyed_entries_are_ordered_against_every_key,
    an_unkeyed_write_waits_for_any_queued_key,
    settle_orphan_makes_a_retry_go_to_the_target_only,
    renew_extends_a_lease_and_refuses_a_lost_one,
    only_the_live_claim_completes_beside_a_stale_one,
);

/// `commit` returns before the change is durable; `flush` waits for it. A
/// second connection, reading the file as another process would, sees the
/// entry pending once `flush` returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_makes_fire_and_forget_commits_durable() {
    use sqlx::Connection;
    let path = sqlite_path("flush");
    let queue = SqliteQueue::open(&path).await.unwrap();
    let mut reader = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..50 {
        ids.push(
            queue
                .prepare(entry(&Key::from(format!("k{n}")), "v"), LONG)
                .await
                .unwrap(),
        );
    }
    for id in ids {
        queue.commit(id).await.unwrap();
    }
    queue.flush().await.unwrap();
    let prepared: i64 = sqlx::query_scalar("SELECT count(*) FROM entries WHERE state = 'prepared'")
        .fetch_one(&mut reader)
        .await
        .unwrap();
    assert_eq!(
        prepared, 0,
        "every commit made before the flush is in the file"
    );
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
