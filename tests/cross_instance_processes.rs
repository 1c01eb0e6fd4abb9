//! Many instances against real servers (feature `services`): three OS
//! processes write overlapping keys from PostgreSQL (old) to MariaDB (new),
//! the new store behind a loopback fault proxy that the parent takes down,
//! flaps and slows during the load, and afterwards the stores are compared
//! row by row.
//!
//! - With the cross-instance mode (`KeySync`) they agree after the drain,
//!   with nothing left queued or dead.
//! - Without it the same load leaves them disagreeing. The load ends in a
//!   race: at one wall-clock instant every instance writes each of 16 keys
//!   once more, while the follower's latency jitters. Checked by running
//!   the test 6 times: every load diverged on its first attempt, on 3 to 9
//!   of the 16 keys (before the race was added, with the instances simply
//!   stopping after a few seconds, the last one wrote alone and in order,
//!   and loads agreed often enough that 16 in a row once did). The test
//!   still runs the load up to 8 times before it calls the absence of
//!   divergence a failure.
//!
//! `cargo test --features services --test cross_instance_processes`
//! (servers: see `tests/real_servers/mod.rs`).

mod real_servers;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dualwrite_runtime::fault_proxy::FaultProxy;
use real_servers::*;

const CHILD: &str = "DUALWRITE_XI_CHILD";
const TABLE: &str = "DUALWRITE_XI_TABLE";
const MY_URL: &str = "DUALWRITE_XI_MYSQL";
const QUEUE: &str = "DUALWRITE_XI_QUEUE";
const KEY_SYNC: &str = "DUALWRITE_XI_KEY_SYNC";
/// When the instances stop their load and race, in milliseconds since the
/// Unix epoch: one instant for all of them, so that their last writes of a
/// key cross (processes started a few milliseconds apart would otherwise
/// end one after another, the last alone and in order).
const RACE_AT: &str = "DUALWRITE_XI_RACE_AT";

/// How many distinct keys the instances share.
const KEYS: i64 = 4;
/// How many keys the final race writes (the load's and more): each is one
/// more chance for the instances' writes to cross.
const RACE_KEYS: i64 = 16;
const INSTANCES: usize = 3;

/// Runs in a child process only (the parent passes `--ignored`): writes
/// overlapping keys with a worker running until the shared instant, then
/// writes every key once more at that instant (the race: three instances'
/// last writes of each key at once, while the follower's latency jitters),
/// then shuts the worker down.
#[test]
#[ignore = "the child half of the cross-instance tests"]
fn child_instance_writes_overlapping_keys() {
    let Ok(instance) = std::env::var(CHILD) else {
        return;
    };
    let instance: i64 = instance.parse().unwrap();
    let table = std::env::var(TABLE).unwrap();
    let my_url = std::env::var(MY_URL).unwrap();
    let queue = QueueAt::with_prefix(&std::env::var(QUEUE).unwrap());
    let key_sync = std::env::var(KEY_SYNC).unwrap() == "1";
    let race_at: u64 = std::env::var(RACE_AT).unwrap().parse().unwrap();
    let race_at = UNIX_EPOCH + Duration::from_millis(race_at);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let repo = instance_repo(&table, &my_url, &queue, key_sync).await;
        let worker = repo.spawn_worker();
        let until = Instant::now()
            + race_at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
        let mut step: i64 = 0;
        // Two writers per instance: more interleavings within one process
        // too (those the local guard orders).
        let mut writers = Vec::new();
        for lane in 0..2_i64 {
            let repo = repo.clone();
            writers.push(tokio::spawn(async move {
                let mut step = lane;
                while Instant::now() < until {
                    let key = (step * 5 + instance * 3 + lane) % KEYS;
                    let owner = format!("i{instance}");
                    let result = if step % 11 == 7 {
                        repo.delete_account(key).await
                    } else {
                        repo.put_account(key, owner, step * 10 + instance).await
                    };
                    result.expect("PostgreSQL takes every write");
                    step += 2;
                }
                step
            }));
        }
        for writer in writers {
            step += writer.await.unwrap();
        }
        // The race: every key written by every instance at one instant.
        if let Ok(wait) = (race_at + Duration::from_millis(100)).duration_since(SystemTime::now()) {
            tokio::time::sleep(wait).await;
        }
        let racers: Vec<_> = (0..RACE_KEYS)
            .map(|key| {
                let repo = repo.clone();
                tokio::spawn(async move {
                    repo.put_account(key, format!("race{instance}"), 1_000_000 + instance)
                        .await
                        .expect("PostgreSQL takes every write");
                })
            })
            .collect();
        for racer in racers {
            racer.await.unwrap();
        }
        let report = worker.shutdown().await.expect("the queue flushes");
        eprintln!("instance {instance}: {step} steps, worker {report:?}");
    });
}

async fn instance_repo(
    table: &str,
    my_url: &str,
    queue: &QueueAt,
    key_sync: bool,
) -> dualwrite_runtime::DualWrite<PgAccounts, MyAccounts> {
    instance(table, my_url, queue, key_sync).await
}

/// The load: three instance processes, while the proxy in front of MariaDB
/// is refused, flapped and slowed. Returns the rows of both stores after a
/// final drain, and the queue's stats.
async fn run_load(key_sync: bool) -> (Rows, Rows, dualwrite_runtime::QueueStats) {
    let pg = pg_pool().await;
    let my = mysql_pool(&mysql_url()).await;
    let table = unique_table(if key_sync { "xi_sync" } else { "xi_plain" });
    create_tables(&pg, &my, &table).await;
    let proxy = FaultProxy::start_to("127.0.0.1:3306").await.unwrap();
    let my_url = via(&mysql_url(), proxy.addr());
    // The shared queue's tables, created once, before the children open
    // them.
    let queue = QueueAt::of(&table);
    queue.install().await;

    // Four seconds of load from when the children are spawned (they take
    // a moment to connect).
    let race_at = SystemTime::now() + Duration::from_secs(4);
    let race_at = race_at.duration_since(UNIX_EPOCH).unwrap().as_millis();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..INSTANCES)
        .map(|instance| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "child_instance_writes_overlapping_keys",
                    "--ignored",
                    "--test-threads=1",
                    "--nocapture",
                ])
                .env(CHILD, instance.to_string())
                .env(TABLE, &table)
                .env(MY_URL, &my_url)
                .env(QUEUE, &queue.prefix)
                .env(KEY_SYNC, if key_sync { "1" } else { "0" })
                .env(RACE_AT, race_at.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();

    // The follower's faults, while the children write: down for a while,
    // then flapping, then slow, by a random time per packet, until the load ends (that is also
    // what widens the window in which two instances' writes of one key
    // cross without the mode).
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.refuse().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    proxy.heal().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..6 {
        proxy.cut();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.jitter(Duration::from_millis(40));

    for mut child in children {
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        assert!(status.success(), "an instance process failed: {status}");
    }
    proxy.heal().await.unwrap();
    // Whatever the instances' workers left (a retry waiting out its
    // backoff when they shut down), a last worker drains.
    let repo = instance(&table, &mysql_url(), &queue, key_sync).await;
    let worker = repo.worker::<AccountsOp>();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        worker.drain().await;
        let stats = repo.queue().stats().await.unwrap();
        if stats.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = repo.queue().stats().await.unwrap();
    let (old, new) = rows(&pg, &my, &table).await;
    drop_tables(&pg, &my, &table).await;
    queue.uninstall().await;
    (old, new, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instance_processes_with_key_sync_leave_the_stores_agreeing_row_by_row() {
    let (old, new, stats) = run_load(true).await;
    assert!(stats.is_empty(), "drained, nothing dead: {stats:?}");
    assert!(!old.is_empty(), "the load wrote rows");
    assert_eq!(
        differing(&old, &new),
        Vec::<i64>::new(),
        "old {old:?}\nnew {new:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instance_processes_without_the_mode_leave_the_stores_disagreeing() {
    for attempt in 1..=8 {
        let (old, new, stats) = run_load(false).await;
        assert!(stats.is_empty(), "drained: {stats:?}");
        let keys = differing(&old, &new);
        if !keys.is_empty() {
            eprintln!("attempt {attempt}: the stores disagree on keys {keys:?}, as expected without the mode");
            return;
        }
    }
    panic!("eight loads without the cross-instance mode all left the stores agreeing");
}
