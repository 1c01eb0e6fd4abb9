//! Dead letters, written-ahead (prepared) entries and the skip poison
//! policy.

use std::time::Duration;

use super::{append, assert_waits_long, claim_until, drain, entry, value, Queue, LONG, NS, SHORT};
use crate::queue::{EntryId, EntryState};
use crate::{Key, QueueError, Side};

// ---------------------------------------------------------------------------
// Dead letters (the block poison policy).

/// Leaves key `k` with a dead head (`k0`, after one failed attempt) and a
/// pending `k1` behind it; returns the dead entry's id.
async fn make_dead(queue: &Queue) -> EntryId {
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

pub(super) async fn dead_letter_blocks_its_key_only(queue: Queue) {
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

pub(super) async fn retry_dead_resets_and_goes_first(queue: Queue) {
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

pub(super) async fn drop_dead_unblocks(queue: Queue) {
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

pub(super) async fn not_dead_is_refused(queue: Queue) {
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
    let missing = EntryId(id.0 + 1000);
    assert!(matches!(
        queue.retry_dead(missing).await,
        Err(QueueError::NotDead(_))
    ));
}

// ---------------------------------------------------------------------------
// Written-ahead (prepared) entries.

async fn prepare(queue: &Queue, key: &str, value: &str, expiry: Duration) -> EntryId {
    queue
        .prepare(entry(NS, Side::New, key, value), expiry)
        .await
        .expect("prepare")
}

pub(super) async fn prepared_entry_waits_for_commit(queue: Queue) {
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

pub(super) async fn aborted_entry_disappears(queue: Queue) {
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

pub(super) async fn expired_prepared_entry_is_claimed_as_orphan(queue: Queue) {
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

pub(super) async fn has_later_entries_sees_the_rest_of_the_key(queue: Queue) {
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

pub(super) async fn skip_policy_lets_the_key_flow(queue: Queue) {
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

pub(super) async fn skip_policy_drop_dead(queue: Queue) {
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
// The operator's view of one key.

/// `key_entries` lists one key's line, head first, with each entry's state,
/// and nothing of other keys, targets or namespaces.
pub(super) async fn key_entries_shows_a_keys_line_in_order(queue: Queue) {
    let dead = make_dead(&queue).await;
    let prepared = queue
        .prepare(entry(NS, Side::New, "k", "k2"), LONG)
        .await
        .expect("prepare");
    append(&queue, "m", "m0").await;
    append(&queue, "m", "m1").await;
    queue
        .append(entry(NS, Side::Old, "k", "old"))
        .await
        .expect("append for the old store");
    queue
        .append(entry("elsewhere", Side::New, "k", "other namespace"))
        .await
        .expect("append in another namespace");
    let claim = queue.claim(NS, 10, LONG).await.expect("claim");
    let claimed: Vec<String> = claim.entries.iter().map(value).collect();
    assert_eq!(
        claimed,
        ["m0", "old"],
        "k is blocked for the new store only"
    );

    let line = queue
        .key_entries(NS, Side::New, &Key::from("k"))
        .await
        .expect("key_entries");
    let shown: Vec<(EntryState, &[u8])> = line
        .iter()
        .map(|entry| (entry.state, entry.payload.as_slice()))
        .collect();
    assert_eq!(
        shown,
        [
            (EntryState::Dead, &b"k0"[..]),
            (EntryState::Pending, &b"k1"[..]),
            (EntryState::Prepared, &b"k2"[..]),
        ]
    );
    assert_eq!(line[0].id, dead);
    assert_eq!(line[0].attempts, 2);
    assert_eq!(line[0].last_error, "rejected for good");
    assert_eq!(line[0].method, "put");
    assert_eq!(line[2].id, prepared);
    assert!(!line[2].orphaned);

    let other = queue
        .key_entries(NS, Side::New, &Key::from("m"))
        .await
        .expect("key_entries");
    let states: Vec<EntryState> = other.iter().map(|entry| entry.state).collect();
    assert_eq!(states, [EntryState::InFlight, EntryState::Pending]);

    let old = queue
        .key_entries(NS, Side::Old, &Key::from("k"))
        .await
        .expect("key_entries for the old store");
    let states: Vec<EntryState> = old.iter().map(|entry| entry.state).collect();
    assert_eq!(states, [EntryState::InFlight]);
    let none = queue
        .key_entries(NS, Side::New, &Key::from("nothing queued"))
        .await
        .expect("key_entries of an idle key");
    assert!(none.is_empty());
}
