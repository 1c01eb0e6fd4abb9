//! Behaviour specific to the SQLite queue: durability across reopen, the
//! file's mode and schema version, group commit, unreadable rows. The shared
//! queue behaviour is in `queue_conformance.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dualwrite_runtime::queue::{
    ClaimedEntry, EntryId, NewEntry, PoisonPolicy, SqliteQueue, SqliteQueueOptions,
};
use dualwrite_runtime::{Key, QueueError, ReconciliationQueue, Side};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::Connection;

const NS: &str = "sqlite-tests";
const LONG: Duration = Duration::from_secs(60);
/// A lease or expiry meant to run out during the test.
const SHORT: Duration = Duration::from_millis(50);
/// How long a test waits for a [`SHORT`] lease or expiry to run out before it
/// fails: generous, because every call may wait for an `fsync`.
const DEADLINE: Duration = Duration::from_secs(30);

/// A directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "dualwrite-sqlite-{name}-{}-{nanos}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    fn db(&self) -> PathBuf {
        self.0.join("queue.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn entry(key: &str, value: &str) -> NewEntry {
    NewEntry {
        namespace: NS.to_owned(),
        target: Side::New,
        key: Key::from(key),
        method: "put".to_owned(),
        version: 1,
        payload: value.as_bytes().to_vec(),
        reason: "follower down".to_owned(),
        uncertain: false,
    }
}

/// A connection of the test's own, as an operator's `sqlite3` shell would be.
async fn raw(path: &Path) -> SqliteConnection {
    SqliteConnection::connect_with(
        &SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(Duration::from_secs(5)),
    )
    .await
    .expect("open the file directly")
}

/// Claims up to 64 entries for [`LONG`], handing each claim to `check`,
/// until `done` says the claim had what the test waits for; claims again
/// every 10 ms meanwhile. Entries `check` leaves are released. Fails after
/// [`DEADLINE`].
async fn claim_until(
    queue: &SqliteQueue,
    mut check: impl FnMut(&ClaimedEntry) -> Settle,
) -> Vec<ClaimedEntry> {
    let started = Instant::now();
    loop {
        let claim = queue.claim(NS, 64, LONG).await.expect("claim");
        let mut found = Vec::new();
        for entry in claim.entries {
            match check(&entry) {
                Settle::Release => queue.release(entry.lease).await.expect("release"),
                Settle::Complete => queue.complete(entry.lease).await.expect("complete"),
                Settle::Found => found.push(entry),
            }
        }
        if !found.is_empty() {
            return found;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "what the test waits for was not claimable within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What [`claim_until`] does with a claimed entry.
enum Settle {
    /// Gives it back.
    Release,
    /// Completes it.
    Complete,
    /// It is what the test waits for: returned, still claimed.
    Found,
}

/// Claims and completes everything, returning values per key in order.
async fn drain(queue: &SqliteQueue) -> BTreeMap<String, Vec<String>> {
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    loop {
        let claim = queue.claim(NS, 64, LONG).await.expect("claim");
        if claim.entries.is_empty() {
            assert_eq!(claim.next_ready_in, None);
            return seen;
        }
        for entry in &claim.entries {
            seen.entry(entry.key.to_string())
                .or_default()
                .push(String::from_utf8(entry.payload.clone()).expect("utf-8"));
            queue.complete(entry.lease).await.expect("complete");
        }
    }
}

#[tokio::test]
async fn survives_reopen_with_order_dead_letters_and_leases() {
    let dir = TempDir::new("reopen");
    let queue = SqliteQueue::open(dir.db()).await.expect("open");
    for n in 0..10 {
        for key in ["a", "b", "c"] {
            queue
                .append(entry(key, &format!("{key}{n}")))
                .await
                .expect("append");
        }
    }
    queue.append(entry("dead", "d0")).await.expect("append");
    queue.append(entry("dead", "d1")).await.expect("append");
    // Dead-letter d0, and leave two heads in flight, as a worker killed
    // mid-apply would: one under a lease that outlives the test, one under a
    // lease that runs out.
    let claim = queue.claim(NS, 10, LONG).await.expect("claim");
    for entry in &claim.entries {
        match entry.key.as_str() {
            "dead" => queue
                .dead_letter(entry.lease, "rejected: bad row")
                .await
                .expect("dead_letter"),
            _ => queue.release(entry.lease).await.expect("release"),
        }
    }
    let held = queue.claim(NS, 1, LONG).await.expect("claim");
    assert_eq!(held.entries.len(), 1);
    let held = held.entries[0].clone();
    let lost = queue.claim(NS, 1, SHORT).await.expect("claim");
    assert_eq!(lost.entries.len(), 1);
    let lost = lost.entries[0].clone();
    drop(queue); // the process "dies": nothing settled, nothing closed

    let queue = SqliteQueue::open(dir.db()).await.expect("reopen");
    for key in ["a", "b", "c", "dead"] {
        assert!(
            queue
                .has_work(NS, Side::New, &Key::from(key))
                .await
                .expect("has_work"),
            "the index of keys with work is rebuilt at open ({key})"
        );
    }
    let letters = queue.dead_letters().await.expect("dead letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].payload, b"d0");
    assert_eq!(letters[0].error, "rejected: bad row");
    assert_eq!(letters[0].attempts, 1);
    let stats = queue.stats().await.expect("stats");
    assert_eq!(stats.new.in_flight, 2);
    assert_eq!(stats.new.dead, 1);
    assert_eq!(stats.new.blocked_keys, 1);
    assert_eq!(stats.new.pending, 29);

    // The dead worker's short lease runs out and its entry is claimed again;
    // its long lease holds throughout.
    let again = claim_until(&queue, |entry| {
        assert_ne!(entry.key, held.key, "a lease of a minute was taken over");
        if entry.key == lost.key {
            Settle::Found
        } else {
            Settle::Release
        }
    })
    .await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].lease.id, lost.lease.id);
    assert_eq!(again[0].attempts, 0, "a lost lease is not an attempt");
    assert!(matches!(
        queue.complete(lost.lease).await,
        Err(QueueError::LeaseLost(_))
    ));
    queue.release(again[0].lease).await.expect("release");
    // The long lease survived the reopen: its holder can still settle.
    queue
        .release(held.lease)
        .await
        .expect("the lease taken before the reopen still holds");

    let seen = drain(&queue).await;
    for key in ["a", "b", "c"] {
        let expected: Vec<String> = (0..10).map(|n| format!("{key}{n}")).collect();
        assert_eq!(seen[key], expected, "order of {key} survives the reopen");
    }
    assert!(
        !seen.contains_key("dead"),
        "d1 waits behind its dead letter"
    );
    queue.drop_dead(letters[0].id).await.expect("drop");
    assert_eq!(drain(&queue).await["dead"], ["d1"]);
    queue.close().await;

    let queue = SqliteQueue::open(dir.db()).await.expect("reopen");
    assert!(queue.stats().await.expect("stats").new.is_empty());
    assert!(!queue
        .has_work(NS, Side::New, &Key::from("a"))
        .await
        .expect("has_work"));
    // Ids are never reused, even once the table was empty.
    let id = queue.append(entry("a", "z")).await.expect("append");
    assert_eq!(id.0, 33, "ids 1 to 32 were used before");
    queue.close().await;
}

#[tokio::test]
async fn prepared_entries_and_skipped_dead_letters_survive_reopen() {
    let dir = TempDir::new("prepared");
    let options = || SqliteQueue::options(dir.db()).poison_policy(PoisonPolicy::Skip);
    let queue = options().open().await.expect("open");
    // A dead letter taken out of its key's line.
    queue.append(entry("d", "d0")).await.expect("append");
    queue.append(entry("d", "d1")).await.expect("append");
    let claim = queue.claim(NS, 10, LONG).await.expect("claim");
    assert_eq!(claim.entries.len(), 1);
    assert_eq!(claim.entries[0].payload, b"d0");
    queue
        .dead_letter(claim.entries[0].lease, "rejected")
        .await
        .expect("dead_letter");
    // Writers that died between their write-ahead and their commit: one
    // whose entry outlives the test (`w`), one whose entry expires during it
    // (`x`).
    let waiting = queue
        .prepare(entry("w", "w0"), LONG)
        .await
        .expect("prepare");
    queue.append(entry("w", "w1")).await.expect("append");
    let orphan = queue
        .prepare(entry("x", "x0"), SHORT)
        .await
        .expect("prepare");
    queue.append(entry("x", "x1")).await.expect("append");
    drop(queue);

    let queue = options().open().await.expect("reopen");
    // d flows past its dead letter at once; x0 is claimed as an orphan once
    // its expiry passes, before x1; w waits for its prepared head all along.
    let mut d_claims = 0;
    let found = claim_until(&queue, |entry| {
        assert_ne!(entry.key, Key::from("w"), "w waits for its prepared head");
        if entry.key == Key::from("d") {
            assert_eq!(entry.payload, b"d1", "d flows past its dead letter");
            d_claims += 1;
            return Settle::Complete;
        }
        assert_eq!(entry.lease.id, orphan, "x1 overtook its prepared head");
        Settle::Found
    })
    .await;
    assert_eq!(
        d_claims, 1,
        "d1 is claimed in the first claim, and completed"
    );
    assert_eq!(found.len(), 1);
    assert!(found[0].orphaned);
    queue.complete(found[0].lease).await.expect("complete");
    // The writer of w0 was not dead after all: its commit still counts.
    queue.commit(waiting).await.expect("commit after a reopen");
    let seen = drain(&queue).await;
    assert_eq!(seen["x"], ["x1"]);
    assert_eq!(seen["w"], ["w0", "w1"]);
    assert!(!seen.contains_key("d"), "{seen:?}");
    assert_eq!(queue.dead_letters().await.expect("list").len(), 1);
    assert!(!queue
        .has_work(NS, Side::New, &Key::from("d"))
        .await
        .expect("has_work"));
    queue.close().await;
}

#[cfg(unix)]
#[tokio::test]
async fn files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("mode");
    let queue = SqliteQueue::open(dir.db()).await.expect("open");
    queue.append(entry("k", "v")).await.expect("append");
    for suffix in ["", "-wal", "-shm"] {
        let path = PathBuf::from(format!("{}{suffix}", dir.db().display()));
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", path.display());
    }
    queue.close().await;
}

#[tokio::test]
async fn file_is_inspectable_and_in_wal_mode() {
    let dir = TempDir::new("inspect");
    let queue = SqliteQueue::open(dir.db()).await.expect("open");
    queue.append(entry("k", "{\"v\":1}")).await.expect("append");
    let mut conn = raw(&dir.db()).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut conn)
        .await
        .expect("user_version");
    assert_eq!(version, SqliteQueue::SCHEMA_VERSION);
    // The queries of the module docs.
    let (key, state, payload): (String, String, String) = sqlx::query_as(
        "SELECT key, state, CAST(payload AS TEXT) FROM entries WHERE state <> 'dead' ORDER BY id",
    )
    .fetch_one(&mut conn)
    .await
    .expect("pending work");
    assert_eq!(
        (key.as_str(), state.as_str(), payload.as_str()),
        ("k", "pending", "{\"v\":1}")
    );
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM entries WHERE state = 'dead'")
        .fetch_one(&mut conn)
        .await
        .expect("dead");
    assert_eq!(dead, 0);
    conn.close().await.expect("close");
    queue.close().await;
}

#[tokio::test]
async fn group_commit_acknowledges_only_committed_entries() {
    let dir = TempDir::new("group");
    let queue = SqliteQueue::open(dir.db()).await.expect("open");
    let path = dir.db();
    let mut writers = Vec::new();
    for writer in 0..64 {
        let queue = queue.clone();
        let path = path.clone();
        writers.push(tokio::spawn(async move {
            // Every acknowledged entry is visible to another connection at
            // once: it was committed before the append returned.
            let mut observer = raw(&path).await;
            for n in 0..25 {
                let id = queue
                    .append(entry(&format!("w{writer}"), &format!("{n:02}")))
                    .await
                    .expect("append");
                let found: i64 = sqlx::query_scalar("SELECT count(*) FROM entries WHERE id = ?")
                    .bind(i64::try_from(id.0).expect("id"))
                    .fetch_one(&mut observer)
                    .await
                    .expect("observe");
                assert_eq!(found, 1, "entry {id} acknowledged before it was committed");
            }
            observer.close().await.expect("close");
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    drop(queue); // no orderly close: the acknowledged entries are on disk

    let queue = SqliteQueue::open(&path).await.expect("reopen");
    let stats = queue.stats().await.expect("stats");
    assert_eq!(stats.new.pending, 64 * 25);
    let seen = drain(&queue).await;
    assert_eq!(seen.len(), 64);
    let expected: Vec<String> = (0..25).map(|n| format!("{n:02}")).collect();
    for values in seen.values() {
        assert_eq!(values, &expected);
    }
    queue.close().await;
}

#[tokio::test]
async fn newer_schema_is_refused_untouched() {
    let dir = TempDir::new("newer");
    let queue = SqliteQueue::open(dir.db()).await.expect("open");
    queue.append(entry("k", "v")).await.expect("append");
    queue.close().await;
    let mut conn = raw(&dir.db()).await;
    sqlx::query("PRAGMA user_version = 99")
        .execute(&mut conn)
        .await
        .expect("bump version");
    conn.close().await.expect("close");

    let error = SqliteQueue::open(dir.db())
        .await
        .expect_err("a newer schema must be refused");
    let message = error.to_string();
    assert!(matches!(error, QueueError::Backend(_)));
    assert!(
        message.contains("schema version 99") && message.contains("newer"),
        "unclear error: {message}"
    );
    let mut conn = raw(&dir.db()).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM entries")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    assert_eq!(rows, 1, "the newer file was not changed");
    conn.close().await.expect("close");
}

#[tokio::test]
async fn foreign_files_are_refused() {
    let dir = TempDir::new("foreign");
    let other = dir.0.join("app.db");
    let mut conn = SqliteConnection::connect_with(
        &SqliteConnectOptions::new()
            .filename(&other)
            .create_if_missing(true),
    )
    .await
    .expect("create");
    sqlx::query("CREATE TABLE users (id INTEGER PRIMARY KEY)")
        .execute(&mut conn)
        .await
        .expect("create table");
    conn.close().await.expect("close");
    let message = SqliteQueue::open(&other)
        .await
        .expect_err("not a queue")
        .to_string();
    assert!(message.contains("not a dualwrite queue"), "{message}");

    let text = dir.0.join("notes.txt");
    std::fs::write(
        &text,
        "this is not a database, it is a text file of some length",
    )
    .expect("write");
    let message = SqliteQueue::open(&text)
        .await
        .expect_err("not a database")
        .to_string();
    assert!(message.contains(&text.display().to_string()), "{message}");

    let missing = dir.0.join("no-such-dir").join("queue.db");
    let message = SqliteQueue::open(&missing)
        .await
        .expect_err("no directory")
        .to_string();
    assert!(message.contains("could not create the file"), "{message}");
}

#[tokio::test]
async fn unreadable_rows_are_surfaced_not_fatal() {
    let dir = TempDir::new("garbled");
    let queue = SqliteQueue::open(dir.db()).await.expect("open");
    queue.append(entry("good", "ok")).await.expect("append");
    // Rows written by hand, past the CHECK constraints.
    let mut conn = raw(&dir.db()).await;
    sqlx::raw_sql(
        "PRAGMA ignore_check_constraints = ON;
         INSERT INTO entries (namespace, target, key, method, version, payload, enqueued_at, ready_at)
           VALUES ('sqlite-tests', 'sideways', 'odd-target', 'put', 1, x'00', 0, 0);
         INSERT INTO entries (namespace, target, key, method, version, payload, enqueued_at, ready_at)
           VALUES ('sqlite-tests', 'new', 'odd-version', 'put', 'one', x'7b7d', 0, 0);
         INSERT INTO entries (namespace, target, key, method, version, payload, enqueued_at, ready_at)
           VALUES ('sqlite-tests', 'new', 'odd-method', CAST(x'ff00ff' AS TEXT), 1, x'7b7d', 'yesterday', 0);",
    )
    .execute(&mut conn)
    .await
    .expect("insert garbled rows");
    conn.close().await.expect("close");

    let claim = queue
        .claim(NS, 10, LONG)
        .await
        .expect("claim survives bad rows");
    let by_key: BTreeMap<String, _> = claim
        .entries
        .iter()
        .map(|entry| (entry.key.to_string(), entry))
        .collect();
    assert_eq!(by_key["good"].payload, b"ok");
    let version = by_key["odd-version"];
    assert!(
        version.method.contains("unreadable queue row"),
        "{}",
        version.method
    );
    assert!(version.method.contains("version"), "{}", version.method);
    assert!(
        version.payload.is_empty(),
        "the worker must fail to decode it"
    );
    let method = by_key["odd-method"];
    assert!(method.method.contains("UTF-8"), "{}", method.method);
    assert!(
        !by_key.contains_key("odd-target"),
        "a row without a store cannot be replayed"
    );

    // The worker dead-letters what it cannot decode; the queue did so for
    // the row without a valid target.
    for entry in &claim.entries {
        if entry.key.as_str() == "good" {
            queue.complete(entry.lease).await.expect("complete");
        } else {
            queue
                .dead_letter(entry.lease, "cannot decode")
                .await
                .expect("dead_letter");
        }
    }
    let letters = queue.dead_letters().await.expect("list survives bad rows");
    assert_eq!(letters.len(), 3);
    let odd = letters
        .iter()
        .find(|letter| letter.key.as_str() == "odd-target")
        .expect("listed");
    assert!(odd.error.contains("sideways"), "{}", odd.error);
    queue.stats().await.expect("stats survive bad rows");
    for letter in &letters {
        queue.drop_dead(letter.id).await.expect("drop");
    }
    assert!(queue.dead_letters().await.expect("list").is_empty());
    queue.close().await;
}

/// Appends `count` entries of key `k`, with payloads `k0`, `k1`, ...
async fn append_k(queue: &SqliteQueue, count: usize) -> Vec<EntryId> {
    let mut ids = Vec::new();
    for n in 0..count {
        let id = queue.append(entry("k", &format!("k{n}"))).await;
        ids.push(id.expect("append"));
    }
    ids
}

/// Deletes the entries `ids` from the file as an operator would.
async fn delete_by_hand(path: &Path, ids: &[EntryId]) {
    let mut conn = raw(path).await;
    for id in ids {
        sqlx::query("DELETE FROM entries WHERE id = ?")
            .bind(i64::try_from(id.0).expect("id"))
            .execute(&mut conn)
            .await
            .expect("delete by hand");
    }
    conn.close().await.expect("close");
}

#[tokio::test]
async fn hand_deleted_rows_keep_their_keys_flowing() {
    let dir = TempDir::new("hand-delete");
    let queue = SqliteQueue::open(dir.db()).await.expect("open");
    let ids = append_k(&queue, 4).await;
    // An operator deletes the head and a middle entry with the sqlite3
    // shell while the service runs.
    delete_by_hand(&dir.db(), &[ids[0], ids[2]]).await;
    queue.append(entry("k", "k4")).await.expect("append");
    assert_eq!(drain(&queue).await["k"], ["k1", "k3", "k4"]);
    queue.close().await;
}

/// A file of schema version 1 (no `entries_unkeyed`, the delete trigger
/// without its `WHEN` clause) is upgraded at open, step by step, and its
/// entries and hand deletes behave as in a new file.
#[tokio::test]
async fn older_schemas_are_upgraded_at_open() {
    let dir = TempDir::new("upgrade");
    let queue = SqliteQueue::open(dir.db()).await.expect("open");
    let ids = append_k(&queue, 4).await;
    queue.close().await;
    let mut conn = raw(&dir.db()).await;
    sqlx::raw_sql(
        "DROP INDEX entries_unkeyed; DROP TRIGGER entries_unlink; \
         CREATE TRIGGER entries_unlink AFTER DELETE ON entries BEGIN \
           UPDATE entries SET prev_id = old.prev_id WHERE prev_id = old.id; \
           UPDATE streams SET tail_id = old.prev_id WHERE namespace = old.namespace \
             AND target = old.target AND key = old.key AND tail_id = old.id \
             AND old.prev_id IS NOT NULL; \
           DELETE FROM streams WHERE namespace = old.namespace AND target = old.target \
             AND key = old.key AND tail_id = old.id AND old.prev_id IS NULL; \
         END; PRAGMA user_version = 1;",
    )
    .execute(&mut conn)
    .await
    .expect("make it a version 1 file");
    conn.close().await.expect("close");

    let queue = SqliteQueue::open(dir.db()).await.expect("reopen");
    let mut conn = raw(&dir.db()).await;
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut conn)
        .await
        .expect("user_version");
    assert_eq!(version, SqliteQueue::SCHEMA_VERSION);
    let (indexes, trigger): (i64, String) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM sqlite_master WHERE name = 'entries_unkeyed'), \
           (SELECT sql FROM sqlite_master WHERE name = 'entries_unlink')",
    )
    .fetch_one(&mut conn)
    .await
    .expect("schema");
    assert_eq!(indexes, 1);
    assert!(trigger.contains("WHEN EXISTS"), "{trigger}");
    conn.close().await.expect("close");
    // Hand deletes of a middle entry and of the tail still relink.
    delete_by_hand(&dir.db(), &[ids[1], ids[3]]).await;
    queue.append(entry("k", "k4")).await.expect("append");
    assert_eq!(drain(&queue).await["k"], ["k0", "k2", "k4"]);
    queue.close().await;
}

#[tokio::test]
async fn broken_links_are_repaired_at_open() {
    let dir = TempDir::new("relink");
    let queue = SqliteQueue::open(dir.db()).await.expect("open");
    for n in 0..3 {
        queue
            .append(entry("a", &format!("a{n}")))
            .await
            .expect("append");
        queue
            .append(entry("b", &format!("b{n}")))
            .await
            .expect("append");
    }
    queue.close().await;
    // Hand edits that break the chains: every entry made a head, and the
    // bookkeeping of tails lost.
    let mut conn = raw(&dir.db()).await;
    sqlx::raw_sql("UPDATE entries SET prev_id = NULL; DELETE FROM streams;")
        .execute(&mut conn)
        .await
        .expect("break the links");
    conn.close().await.expect("close");

    let queue = SqliteQueue::open(dir.db()).await.expect("reopen repairs");
    let claim = queue.claim(NS, 10, LONG).await.expect("claim");
    assert_eq!(claim.entries.len(), 2, "one head per key again");
    for entry in &claim.entries {
        queue.release(entry.lease).await.expect("release");
    }
    queue.append(entry("a", "a3")).await.expect("append");
    let seen = drain(&queue).await;
    assert_eq!(seen["a"], ["a0", "a1", "a2", "a3"]);
    assert_eq!(seen["b"], ["b0", "b1", "b2"]);
    queue.close().await;
}

#[tokio::test]
async fn hand_deleted_head_is_repaired_at_open() {
    let dir = TempDir::new("repair");
    let queue = SqliteQueue::open(dir.db()).await.expect("open");
    let first = queue.append(entry("k", "k0")).await.expect("append");
    queue.append(entry("k", "k1")).await.expect("append");
    queue.close().await;
    let mut conn = raw(&dir.db()).await;
    sqlx::query("DELETE FROM entries WHERE id = ?")
        .bind(i64::try_from(first.0).expect("id"))
        .execute(&mut conn)
        .await
        .expect("delete by hand");
    conn.close().await.expect("close");

    let queue = SqliteQueue::open(dir.db()).await.expect("reopen");
    assert_eq!(drain(&queue).await["k"], ["k1"]);
    queue.close().await;
}

#[tokio::test]
async fn multi_process_mode_sees_other_handles_appends() {
    let dir = TempDir::new("shared");
    let one = SqliteQueueOptions::new(dir.db())
        .multi_process(true)
        .open()
        .await
        .expect("open");
    let two = SqliteQueueOptions::new(dir.db())
        .multi_process(true)
        .open()
        .await
        .expect("open again");
    let key = Key::from("k");
    assert!(!two.has_work(NS, Side::New, &key).await.expect("has_work"));
    one.append(entry("k", "v")).await.expect("append");
    assert!(two.has_work(NS, Side::New, &key).await.expect("has_work"));
    let claim = two.claim(NS, 10, LONG).await.expect("claim");
    assert_eq!(claim.entries.len(), 1);
    assert!(one
        .claim(NS, 10, LONG)
        .await
        .expect("claim")
        .entries
        .is_empty());
    two.complete(claim.entries[0].lease)
        .await
        .expect("complete");
    assert!(!one.has_work(NS, Side::New, &key).await.expect("has_work"));
    one.close().await;
    two.close().await;
}

#[tokio::test]
async fn closed_queue_reports_errors() {
    let dir = TempDir::new("closed");
    let queue = SqliteQueue::open(dir.db()).await.expect("open");
    let clone = queue.clone();
    queue.close().await;
    let error = clone.append(entry("k", "v")).await.expect_err("closed");
    assert!(error.to_string().contains("closed"), "{error}");
}

#[test]
fn usable_from_any_runtime_and_blocking_code() {
    // The queue runs its own thread, so it outlives the runtime that opened
    // it and serves plain blocking callers.
    let dir = TempDir::new("runtimes");
    let queue = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(SqliteQueue::open(dir.db()))
        .expect("open");
    let id = futures::executor::block_on(queue.append(entry("k", "v"))).expect("append");
    let claim = futures::executor::block_on(queue.claim(NS, 1, LONG)).expect("claim");
    assert_eq!(claim.entries[0].lease.id, id);
    assert!(
        futures::executor::block_on(queue.has_work(NS, Side::New, &Key::from("k")))
            .expect("has_work")
    );
}

/// Runs `writers` tasks calling `op(writer, n)` for `run_for`; returns how
/// many calls returned and how long it took.
async fn hammer<F, Fut>(writers: usize, run_for: Duration, op: F) -> (u64, Duration)
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let (op, done) = (Arc::clone(&op), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while started.elapsed() < run_for {
                op(writer, n).await;
                n += 1;
            }
            done.fetch_add(n, Ordering::Relaxed);
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    (done.load(Ordering::Relaxed), started.elapsed())
}

/// Claims 64 heads at a time and completes them concurrently, as the
/// worker does, until the queue is empty; returns entries per second.
async fn drain_rate(queue: &SqliteQueue) -> (f64, u64) {
    let started = Instant::now();
    let mut drained = 0u64;
    loop {
        let claim = queue.claim(NS, 64, LONG).await.expect("claim");
        if claim.entries.is_empty() {
            break;
        }
        let completions: Vec<_> = claim
            .entries
            .iter()
            .map(|entry| queue.complete(entry.lease))
            .collect();
        for result in futures::future::join_all(completions).await {
            result.expect("complete");
            drained += 1;
        }
    }
    (drained as f64 / started.elapsed().as_secs_f64(), drained)
}

/// Prints rates of the SQLite queue against one fsync'd transaction per
/// operation on the same file system. Run with
/// `cargo test --release -p dualwrite-runtime --test sqlite_queue -- --ignored --nocapture throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test"]
async fn throughput() {
    let payload = "x".repeat(200);
    let run_for = Duration::from_secs(3);
    let rate = |ops: u64, took: Duration| ops as f64 / took.as_secs_f64();

    // Baseline: plain sqlx, one INSERT per autocommit transaction, WAL and
    // synchronous = FULL.
    let dir_raw = TempDir::new("bench-raw");
    let mut conn = SqliteConnection::connect_with(
        &SqliteConnectOptions::new()
            .filename(dir_raw.db())
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full),
    )
    .await
    .expect("raw open");
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT, v BLOB)")
        .execute(&mut conn)
        .await
        .expect("create");
    let started = Instant::now();
    let mut raw_ops = 0u64;
    while started.elapsed() < run_for {
        sqlx::query("INSERT INTO t (k, v) VALUES (?, ?)")
            .bind(format!("k{raw_ops}"))
            .bind(payload.as_bytes())
            .execute(&mut conn)
            .await
            .expect("insert");
        raw_ops += 1;
    }
    let raw_rate = rate(raw_ops, started.elapsed());
    conn.close().await.expect("close");

    // One append at a time through the queue.
    let dir = TempDir::new("bench-serial");
    let queue = SqliteQueue::open(dir.db()).await.expect("open");
    let serial_queue = queue.clone();
    let serial_payload = payload.clone();
    let (serial, took) = hammer(1, run_for, move |_, n| {
        let (queue, payload) = (serial_queue.clone(), serial_payload.clone());
        async move {
            queue
                .append(entry(&format!("k{}", n % 1000), &payload))
                .await
                .expect("append");
        }
    })
    .await;
    let serial_rate = rate(serial, took);
    queue.close().await;

    // Group commit: 64 concurrent appenders, 16 keys each.
    let dir = TempDir::new("bench-group");
    let queue = SqliteQueue::open(dir.db()).await.expect("open");
    let group_queue = queue.clone();
    let group_payload = payload.clone();
    let (group, took) = hammer(64, run_for, move |writer, n| {
        let (queue, payload) = (group_queue.clone(), group_payload.clone());
        async move {
            queue
                .append(entry(&format!("w{writer}-{}", n % 16), &payload))
                .await
                .expect("append");
        }
    })
    .await;
    let group_rate = rate(group, took);
    queue.close().await;
    let started = Instant::now();
    let queue = SqliteQueue::open(dir.db()).await.expect("reopen");
    let reopen = started.elapsed();
    let (drain_full, drained) = drain_rate(&queue).await;
    queue.close().await;

    // Journaled writes: prepare, then commit, 64 writers, a new key each.
    let dir = TempDir::new("bench-journal");
    let queue = SqliteQueue::open(dir.db()).await.expect("open");
    let journal_queue = queue.clone();
    let journal_payload = payload.clone();
    let (journaled, took) = hammer(64, run_for, move |writer, n| {
        let (queue, payload) = (journal_queue.clone(), journal_payload.clone());
        async move {
            let id = queue
                .prepare(entry(&format!("{writer}-{n}"), &payload), LONG)
                .await
                .expect("prepare");
            queue.commit(id).await.expect("commit");
        }
    })
    .await;
    let journal_rate = rate(journaled, took);
    queue.close().await;
    let queue = SqliteQueue::options(dir.db())
        .durable_settles(false)
        .open()
        .await
        .expect("reopen");
    let (drain_relaxed, drained_relaxed) = drain_rate(&queue).await;
    queue.close().await;

    println!("baseline, one INSERT per fsync'd transaction:  {raw_rate:>8.0} ops/s");
    println!(
        "queue, 1 writer (one transaction per append):  {serial_rate:>8.0} appends/s  ({:.1}x baseline)",
        serial_rate / raw_rate
    );
    println!(
        "queue, 64 writers, group commit:               {group_rate:>8.0} appends/s  ({:.1}x baseline, {:.1}x 1 writer)",
        group_rate / raw_rate,
        group_rate / serial_rate
    );
    println!(
        "queue, 64 writers, prepare + commit:           {journal_rate:>8.0} writes/s   ({:.1}x baseline)",
        journal_rate / raw_rate
    );
    println!("drain, claim 64 + complete ({drained}):         {drain_full:>8.0} entries/s");
    println!(
        "drain, durable_settles(false) ({drained_relaxed}):      {drain_relaxed:>8.0} entries/s"
    );
    println!("reopen with {group} entries: {reopen:?}");
}
