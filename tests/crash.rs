//! I3 durability: with journaled delivery, every acknowledged write reaches
//! both stores even when the process is killed with SIGKILL at random
//! moments, and after a final drain the stores agree row by row.
//!
//! The parent test starts this same test binary as a child that runs only
//! `child_writes_until_killed`: concurrent writers against SQLite old and new
//! stores with the SQLite queue, a worker running beside them, and a log of
//! every acknowledged write. The parent kills the child at a random moment,
//! starts a new one (which resumes the queue, including the leases and the
//! written-ahead operations the dead child left), and repeats. At the end it
//! drains the queue in-process and checks the stores against the log.

use std::collections::BTreeMap;
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
const CHILD_DIR: &str = "DUALWRITE_CRASH_DIR";
const CHILD_ROUND: &str = "DUALWRITE_CRASH_ROUND";

fn acked_log(dir: &Path) -> PathBuf {
    dir.join("acked.log")
}

async fn open(dir: &Path) -> DualWrite<SqliteKv, SqliteKv> {
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
        let repo = Arc::new(open(&dir).await);
        let log = Arc::new(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(acked_log(&dir))
                .unwrap(),
        ));
        let worker = repo.worker::<KvRepoOp>();
        tokio::spawn(async move { worker.run().await });
        let mut writers = Vec::new();
        for writer in 0..WRITERS {
            let (repo, log) = (Arc::clone(&repo), Arc::clone(&log));
            writers.push(tokio::spawn(async move {
                // Keys are unique per write, so the log says exactly what each
                // store must hold.
                for seq in 0.. {
                    let key = round * 100_000 + writer * 5_000 + seq;
                    let value = u64::from(key) * 3 + 1;
                    if repo.put(key, value).await.is_ok() {
                        // One write(2) per line: a killed process loses no
                        // line it finished, and never leaves half of one.
                        log.lock()
                            .unwrap()
                            .write_all(format!("{key} {value}\n").as_bytes())
                            .unwrap();
                    }
                }
            }));
        }
        for writer in writers {
            writer.await.unwrap();
        }
    });
}

fn acked_lines(dir: &Path) -> usize {
    std::fs::read_to_string(acked_log(dir)).map_or(0, |text| text.lines().count())
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
        // a random moment within the next 150 ms.
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
        let repo = open(&dir).await;
        let report = repo.worker::<KvRepoOp>().drain().await;
        let stats = repo.queue().stats().await.unwrap();
        assert!(stats.new.is_empty() && stats.old.is_empty(), "drained: {stats:?} after {report:?}");

        let acked: BTreeMap<u32, u64> = std::fs::read_to_string(acked_log(&dir))
            .unwrap()
            .lines()
            .map(|line| {
                let (key, value) = line.split_once(' ').unwrap();
                (key.parse().unwrap(), value.parse().unwrap())
            })
            .collect();
        let old = repo.old_store().snapshot().await.unwrap();
        let new = repo.new_store().snapshot().await.unwrap();
        for (key, value) in &acked {
            assert_eq!(old.get(key), Some(value), "acknowledged write {key} is missing from the old store");
            assert_eq!(new.get(key), Some(value), "acknowledged write {key} is missing from the new store");
        }
        let differing: Vec<_> = old
            .keys()
            .chain(new.keys())
            .filter(|key| old.get(key) != new.get(key))
            .collect();
        assert!(differing.is_empty(), "the stores disagree on keys {differing:?}");
        println!(
            "{ROUNDS} kills, {} acknowledged writes, {} rows in each store, final drain: {report:?}",
            acked.len(),
            old.len()
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}
