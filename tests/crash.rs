//! I3 durability: with journaled delivery, every acknowledged write reaches
//! both stores (unless a later write of its key replaced it) even when the
//! process is killed with SIGKILL at random moments, and after a final drain
//! the stores agree row by row.
//!
//! The parent test starts this same test binary as a child that runs only
//! `child_writes_until_killed`: concurrent writers against SQLite old and new
//! stores with the SQLite queue, a worker running beside them, and a log of
//! every write started, acknowledged or refused. The writers share a few
//! busy keys, which several of them write at once, and each also rewrites a
//! few keys of its own, so a kill leaves orphaned writes of keys that other
//! writes (of the same child and of the next ones) are queued behind. The
//! parent kills the child at a random moment, starts a new one (which
//! resumes the queue, including the leases and the written-ahead operations
//! the dead child left), and repeats. At the end it drains the queue
//! in-process and checks the stores against the log: they agree row by row,
//! every row holds a value a write of its key actually wrote, no value
//! survives that an acknowledged later write of its key replaced, and a key
//! whose last write was acknowledged (with no other write of it overlapping
//! that one) holds exactly that write's value.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dualwrite_runtime::queue::SqliteQueue;
use dualwrite_runtime::{Delivery, DualWrite, RetryPolicy, Stage};
use dualwrite_suite::{random_below, KvRepo, KvRepoOp, SqliteKv};

const ROUNDS: u32 = 24;
const WRITERS: u32 = 16;
/// Keys every writer writes, several at once.
const BUSY_KEYS: u32 = 8;
/// Keys each writer rewrites on its own, after the busy ones.
const OWN_KEYS: u32 = 4;
const CHILD_DIR: &str = "DUALWRITE_CRASH_DIR";
const CHILD_ROUND: &str = "DUALWRITE_CRASH_ROUND";

fn write_log(dir: &Path) -> PathBuf {
    dir.join("writes.log")
}

/// A value no other write uses, saying which round and writer wrote it.
fn value_of(round: u32, writer: u32, seq: u32) -> u64 {
    (u64::from(round) << 40) | (u64::from(writer) << 32) | u64::from(seq)
}

fn round_of(value: u64) -> u32 {
    u32::try_from(value >> 40).unwrap()
}

async fn open(dir: &Path, concurrency: usize) -> DualWrite<SqliteKv, SqliteKv> {
    let old = SqliteKv::open(&dir.join("old.db")).await.unwrap();
    let new = SqliteKv::open(&dir.join("new.db")).await.unwrap();
    let queue = SqliteQueue::open(dir.join("queue.db")).await.unwrap();
    DualWrite::builder(old, new)
        .queue(queue)
        .stage(Stage::DualWrite)
        .delivery(Delivery::Journaled)
        .follower_timeout(Duration::from_millis(500))
        .lease(Duration::from_secs(1))
        .orphan_after(Duration::from_millis(300))
        .worker_concurrency(concurrency)
        .retry(
            RetryPolicy::default()
                .min_delay(Duration::from_millis(5))
                .max_delay(Duration::from_millis(100)),
        )
        .build()
        .unwrap()
}

/// Runs in the child process only (the parent passes `--ignored`).
#[test]
#[ignore = "the child half of acknowledged_journaled_writes_survive_sigkill"]
fn child_writes_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_DIR).map(PathBuf::from) else {
        return;
    };
    let round: u32 = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        // A worker applying a few keys at a time leaves most keys unclaimed
        // when it is killed, so the next child's worker gets to work (and to
        // the orphans of the busy keys) before it is killed in turn; the
        // final drain takes the default.
        let repo = Arc::new(open(&dir, 8).await);
        let log = Arc::new(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(write_log(&dir))
                .unwrap(),
        ));
        // One write(2) per line, under the lock: a killed process loses no
        // line it finished and never leaves half of one, and the lines are
        // in the order the events happened.
        let record = move |event: char, key: u32, value: u64| {
            log.lock()
                .unwrap()
                .write_all(format!("{event} {key} {value}\n").as_bytes())
                .unwrap();
        };
        let worker = repo.worker::<KvRepoOp>();
        tokio::spawn(async move { worker.run().await });
        let mut writers = Vec::new();
        for writer in 0..WRITERS {
            let (repo, record) = (Arc::clone(&repo), record.clone());
            writers.push(tokio::spawn(async move {
                // Every other write goes to a busy key, shared with every
                // writer; the rest cycle through the writer's own keys.
                for seq in 0.. {
                    let key = if random_below(2) == 0 {
                        u32::try_from(random_below(u64::from(BUSY_KEYS))).unwrap()
                    } else {
                        BUSY_KEYS + writer * OWN_KEYS + seq % OWN_KEYS
                    };
                    let value = value_of(round, writer, seq);
                    // Logged before the write begins, so that every write
                    // that may have reached a store is in the log.
                    record('S', key, value);
                    let outcome = repo.put(key, value).await;
                    record(if outcome.is_ok() { 'A' } else { 'E' }, key, value);
                }
            }));
        }
        for writer in writers {
            writer.await.unwrap();
        }
    });
}

/// How many writes the log says were acknowledged.
fn acked_lines(dir: &Path) -> usize {
    std::fs::read_to_string(write_log(dir)).map_or(0, |text| {
        text.lines().filter(|line| line.starts_with('A')).count()
    })
}

/// One write, as the log tells it.
#[derive(Debug)]
struct Written {
    key: u32,
    value: u64,
    round: u32,
    /// The line that says it began.
    started: usize,
    /// The line that says it returned, and whether it was acknowledged;
    /// `None` if the process was killed while it was in flight.
    ended: Option<(usize, bool)>,
}

impl Written {
    fn acked(&self) -> bool {
        matches!(self.ended, Some((_, true)))
    }

    /// Whether this write certainly reached the stores after `other` did (or
    /// after `other` could): both are of one key and this one was
    /// acknowledged, and either it began in a later process than `other`
    /// (whatever `other` left, orphans included, is ordered before it), or in
    /// the same process after `other` had returned.
    fn supersedes(&self, other: &Written) -> bool {
        self.key == other.key
            && self.acked()
            && (self.round > other.round
                || (self.round == other.round
                    && other.ended.is_some_and(|(ended, _)| self.started > ended)))
    }
}

/// Every write of the log, by value.
fn read_log(dir: &Path) -> BTreeMap<u64, Written> {
    let mut writes: BTreeMap<u64, Written> = BTreeMap::new();
    let text = std::fs::read_to_string(write_log(dir)).unwrap();
    for (line_no, line) in text.lines().enumerate() {
        let mut fields = line.split(' ');
        let (Some(event), Some(key), Some(value), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            panic!("line {line_no} of the log is garbled: {line:?}");
        };
        let (key, value): (u32, u64) = (key.parse().unwrap(), value.parse().unwrap());
        match event {
            "S" => {
                let previous = writes.insert(
                    value,
                    Written {
                        key,
                        value,
                        round: round_of(value),
                        started: line_no,
                        ended: None,
                    },
                );
                assert!(previous.is_none(), "value {value} written twice");
            }
            "A" | "E" => {
                let write = writes
                    .get_mut(&value)
                    .expect("a write ended before it began");
                assert_eq!((write.key, write.ended), (key, None), "line {line_no}");
                write.ended = Some((line_no, event == "A"));
            }
            other => panic!("unknown event {other:?} on line {line_no}"),
        }
    }
    writes
}

#[test]
fn acknowledged_journaled_writes_survive_sigkill() {
    let dir = std::env::temp_dir().join(format!("dualwrite-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let exe = std::env::current_exe().unwrap();

    for round in 0..ROUNDS {
        let before = acked_lines(&dir);
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_writes_until_killed",
                "--ignored",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, &dir)
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // Let the child get going (some writes acknowledged), then kill it at
        // a random moment within the next 150 ms: amid the writes of busy keys
        // and, now and then, amid the replay of orphans an earlier child left.
        let started = Instant::now();
        while acked_lines(&dir) == before && started.elapsed() < Duration::from_secs(20) {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the child exited by itself in round {round}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            acked_lines(&dir) > before,
            "the child acknowledged no write in round {round}"
        );
        std::thread::sleep(Duration::from_millis(random_below(150)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let repo = open(&dir, 64).await;
        let report = repo.worker::<KvRepoOp>().drain().await;
        let stats = repo.queue().stats().await.unwrap();
        assert!(stats.new.is_empty() && stats.old.is_empty(), "drained: {stats:?} after {report:?}");

        let old = repo.old_store().snapshot().await.unwrap();
        let new = repo.new_store().snapshot().await.unwrap();
        let differing: BTreeSet<_> = old
            .keys()
            .chain(new.keys())
            .filter(|key| old.get(key) != new.get(key))
            .collect();
        assert!(differing.is_empty(), "the stores disagree on keys {differing:?}");

        let writes = read_log(&dir);
        let mut by_key: BTreeMap<u32, Vec<&Written>> = BTreeMap::new();
        for write in writes.values() {
            by_key.entry(write.key).or_default().push(write);
        }
        for key in old.keys() {
            assert!(by_key.contains_key(key), "key {key} holds a row no write made");
        }
        let mut exact = 0;
        for (key, of_key) in &by_key {
            // The writes of the key whose value may be the last one: no
            // acknowledged write of the key certainly came after them.
            let possible: Vec<u64> = of_key
                .iter()
                .filter(|write| !of_key.iter().any(|later| later.supersedes(write)))
                .map(|write| write.value)
                .collect();
            match old.get(key) {
                Some(value) => assert!(
                    possible.contains(value),
                    "key {key} holds {value}, which is not among the values its last writes could have left: {possible:?}"
                ),
                None => assert!(
                    !of_key.iter().any(|write| write.acked()),
                    "key {key} had acknowledged writes, but it is missing from both stores"
                ),
            }
            if let [only] = possible[..] {
                if writes[&only].acked() {
                    assert_eq!(old.get(key), Some(&only), "key {key}: its last, acknowledged write is lost");
                    exact += 1;
                }
            }
        }
        assert!(exact > 0, "no key's last write was known exactly; the check above checked little");

        let acked = writes.values().filter(|write| write.acked()).count();
        let refused = writes.values().filter(|write| matches!(write.ended, Some((_, false)))).count();
        let unknown = writes.values().filter(|write| write.ended.is_none()).count();
        println!(
            "{ROUNDS} kills, {} writes of {} keys: {acked} acknowledged, {refused} refused, {unknown} in flight at a kill; \
             {exact} keys' values known exactly; final drain: {report:?}",
            writes.len(),
            by_key.len(),
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}
