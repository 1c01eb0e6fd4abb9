//! Follower faults against real servers (feature `services`): PostgreSQL
//! old, MariaDB new behind the loopback fault proxy, writes under load
//! while the follower is down, flapping or slow, in each delivery mode
//! (`sync`, `journaled`, and the cross-instance `key_sync`); and a worker
//! process killed mid-batch; and the queue's PostgreSQL briefly unreachable
//! (behind a second proxy), alone and together with the follower, in each
//! delivery mode. In each: nothing acknowledged is lost (both
//! stores end holding exactly what the acknowledged writes left), nothing
//! is left queued or dead, and the stores agree row by row.
//!
//! `cargo test --features services --test real_server_faults`

mod real_servers;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dualwrite_runtime::fault_proxy::FaultProxy;
use dualwrite_runtime::DualWrite;
use real_servers::*;

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Connections refused for 1.5 s.
    Down,
    /// Every connection cut every 80 ms for 1.5 s.
    Flapping,
    /// Every packet 600 ms late (the follower timeout is 500 ms) for 1.5 s.
    Slow,
}

async fn inject(proxy: &FaultProxy, fault: Fault) {
    tokio::time::sleep(Duration::from_millis(100)).await;
    let until = Instant::now() + Duration::from_millis(1_500);
    match fault {
        Fault::Down => {
            proxy.refuse().await;
            tokio::time::sleep_until(until.into()).await;
        }
        Fault::Flapping => {
            while Instant::now() < until {
                proxy.cut();
                tokio::time::sleep(Duration::from_millis(80)).await;
            }
        }
        Fault::Slow => {
            proxy.slow(Duration::from_millis(600));
            tokio::time::sleep_until(until.into()).await;
        }
    }
    proxy.heal().await.unwrap();
}

struct Setup {
    pg: sqlx::PgPool,
    my: sqlx::MySqlPool,
    table: String,
    proxy: FaultProxy,
    queue: QueueAt,
}

impl Setup {
    async fn new(prefix: &str) -> Setup {
        let pg = pg_pool().await;
        let my = mysql_pool(&mysql_url()).await;
        let table = unique_table(prefix);
        create_tables(&pg, &my, &table).await;
        let proxy = FaultProxy::start_to("127.0.0.1:3306").await.unwrap();
        let queue = QueueAt::of(&table);
        queue.install().await;
        Setup {
            pg,
            my,
            table,
            proxy,
            queue,
        }
    }

    async fn repo(&self, mode: Mode) -> DualWrite<PgAccounts, MyAccounts> {
        let url = via(&mysql_url(), self.proxy.addr());
        instance_in(&self.table, &url, &self.queue, mode).await
    }

    /// Checks both stores against what the acknowledged writes left.
    async fn check(&self, expected: &Rows) {
        let (old, new) = rows(&self.pg, &self.my, &self.table).await;
        assert_eq!(
            &old, expected,
            "the old store holds every acknowledged write"
        );
        assert_eq!(
            differing(&old, &new),
            Vec::<i64>::new(),
            "the stores agree row by row"
        );
    }

    async fn clean(self) {
        drop_tables(&self.pg, &self.my, &self.table).await;
        self.queue.uninstall().await;
    }
}

/// Waits (the worker running) until the queue is empty.
async fn drained(repo: &DualWrite<PgAccounts, MyAccounts>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = repo.queue().stats().await.unwrap();
        if stats.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "not drained in 60 s: {stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Four writers on keys of their own (so what they leave is known) while
/// the fault runs; then the drain and the check.
async fn under_load(mode: Mode, fault: Fault) {
    let setup = Setup::new("faults").await;
    let repo = setup.repo(mode).await;
    let worker = repo.spawn_worker();
    let writers: Vec<_> = (0..4_i64)
        .map(|writer| {
            let repo = repo.clone();
            tokio::spawn(async move {
                let mut left = BTreeMap::new();
                let started = Instant::now();
                let mut step = 0_i64;
                while started.elapsed() < Duration::from_millis(2_200) {
                    let key = writer * 100 + step % 7;
                    if step % 5 == 4 {
                        repo.delete_account(key).await.unwrap();
                        left.remove(&key);
                    } else {
                        let owner = format!("w{writer}");
                        repo.put_account(key, owner.clone(), step).await.unwrap();
                        left.insert(key, (owner, step));
                    }
                    step += 1;
                }
                left
            })
        })
        .collect();
    inject(&setup.proxy, fault).await;
    let mut expected = Rows::new();
    for writer in writers {
        expected.extend(writer.await.unwrap());
    }
    drained(&repo).await;
    let report = worker.shutdown().await.expect("the queue flushes");
    assert_eq!(report.dead_lettered, 0, "{report:?}");
    assert!(
        report.applied > 0 || mode == Mode::Sync && matches!(fault, Fault::Flapping),
        "the fault made no write wait for the worker: {report:?}"
    );
    setup.check(&expected).await;
    setup.clean().await;
}

macro_rules! fault_matrix {
    ($($name:ident: $mode:expr, $fault:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            under_load($mode, $fault).await;
        }
    )*};
}

fault_matrix! {
    sync_follower_down_during_load_loses_nothing: Mode::Sync, Fault::Down;
    sync_follower_flapping_loses_nothing: Mode::Sync, Fault::Flapping;
    sync_follower_slow_loses_nothing: Mode::Sync, Fault::Slow;
    journaled_follower_down_during_load_loses_nothing: Mode::Journaled, Fault::Down;
    journaled_follower_flapping_loses_nothing: Mode::Journaled, Fault::Flapping;
    journaled_follower_slow_loses_nothing: Mode::Journaled, Fault::Slow;
    key_sync_follower_down_during_load_loses_nothing: Mode::KeySync, Fault::Down;
    key_sync_follower_flapping_loses_nothing: Mode::KeySync, Fault::Flapping;
    key_sync_follower_slow_loses_nothing: Mode::KeySync, Fault::Slow;
}

/// Four writers on keys of their own while the queue's database (and in
/// `sync`, the follower too) is refused for 1.5 s. A write the queue cannot
/// take is refused (the methods are `fail_closed`) and so not
/// acknowledged; after the outage each writer writes its refused keys again
/// until acknowledged, so what the stores must hold is known.
async fn queue_unreachable_under_load(mode: Mode, follower_down_too: bool) {
    let setup = Setup::new("queue_down").await;
    let queue_proxy = FaultProxy::start_to("127.0.0.1:5432").await.unwrap();
    let queue = setup.queue.via(via(&pg_url(), queue_proxy.addr()));
    let url = via(&mysql_url(), setup.proxy.addr());
    let repo = instance_in(&setup.table, &url, &queue, mode).await;
    let worker = repo.spawn_worker();
    let writers: Vec<_> = (0..4_i64)
        .map(|writer| {
            let repo = repo.clone();
            tokio::spawn(async move {
                let mut left = BTreeMap::new();
                let mut refused = std::collections::BTreeSet::new();
                let mut refusals = 0_usize;
                let started = Instant::now();
                let mut step = 0_i64;
                while started.elapsed() < Duration::from_millis(2_200) {
                    let key = writer * 100 + step % 7;
                    let owner = format!("w{writer}");
                    let written = if step % 5 == 4 {
                        repo.delete_account(key).await
                    } else {
                        repo.put_account(key, owner.clone(), step).await
                    };
                    match written {
                        Ok(()) if step % 5 == 4 => {
                            left.remove(&key);
                            refused.remove(&key);
                        }
                        Ok(()) => {
                            left.insert(key, (owner, step));
                            refused.remove(&key);
                        }
                        Err(_) => {
                            refused.insert(key);
                            refusals += 1;
                        }
                    }
                    step += 1;
                }
                (left, refused, refusals)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Refused: new connections fail, and the pools' open ones are cut.
    queue_proxy.refuse().await;
    queue_proxy.cut();
    if follower_down_too {
        setup.proxy.refuse().await;
        setup.proxy.cut();
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    queue_proxy.heal().await.unwrap();
    setup.proxy.heal().await.unwrap();
    let mut expected = Rows::new();
    let mut refusals = 0;
    for writer in writers {
        let (left, refused, refused_writes) = writer.await.unwrap();
        expected.extend(left);
        refusals += refused_writes;
        for key in refused {
            let owner = format!("again{key}");
            let deadline = Instant::now() + Duration::from_secs(30);
            while repo.put_account(key, owner.clone(), -1).await.is_err() {
                assert!(Instant::now() < deadline, "key {key} still refused");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            expected.insert(key, (owner, -1));
        }
    }
    assert!(refusals > 0, "the outage refused no write");
    drained(&repo).await;
    let report = worker.shutdown().await.expect("the queue flushes");
    assert_eq!(report.dead_lettered, 0, "{report:?}");
    setup.check(&expected).await;
    setup.clean().await;
}

macro_rules! queue_unreachable_matrix {
    ($($name:ident: $mode:expr, $follower_down_too:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            queue_unreachable_under_load($mode, $follower_down_too).await;
        }
    )*};
}

queue_unreachable_matrix! {
    sync_queue_database_briefly_unreachable_loses_nothing: Mode::Sync, false;
    sync_queue_database_unreachable_with_the_follower_down_loses_nothing: Mode::Sync, true;
    journaled_queue_database_briefly_unreachable_loses_nothing: Mode::Journaled, false;
    journaled_queue_database_unreachable_with_the_follower_down_loses_nothing: Mode::Journaled, true;
    key_sync_queue_database_briefly_unreachable_loses_nothing: Mode::KeySync, false;
    key_sync_queue_database_unreachable_with_the_follower_down_loses_nothing: Mode::KeySync, true;
}

const CHILD_TABLE: &str = "DUALWRITE_FAULTS_TABLE";
const CHILD_QUEUE: &str = "DUALWRITE_FAULTS_QUEUE";
const CHILD_MYSQL: &str = "DUALWRITE_FAULTS_MYSQL";

/// Runs in a child process only: a worker draining the queue, until it is
/// killed.
#[test]
#[ignore = "the child half of a_worker_process_killed_mid_batch_loses_nothing"]
fn child_worker_drains_until_killed() {
    let Ok(table) = std::env::var(CHILD_TABLE) else {
        return;
    };
    let queue = QueueAt::with_prefix(&std::env::var(CHILD_QUEUE).unwrap());
    let url = std::env::var(CHILD_MYSQL).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let repo = instance_in(&table, &url, &queue, Mode::Journaled).await;
        loop {
            repo.worker::<AccountsOp>().drain().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_killed_mid_batch_loses_nothing() {
    let setup = Setup::new("killed").await;
    let repo = setup.repo(Mode::Journaled).await;
    // A backlog: 400 journaled writes while nothing drains them.
    let mut expected = Rows::new();
    for step in 0..400_i64 {
        let key = step % 90;
        repo.put_account(key, "backlog".to_owned(), step)
            .await
            .unwrap();
        expected.insert(key, ("backlog".to_owned(), step));
    }
    // A slow follower, so that the child is killed amid its batches.
    setup.proxy.slow(Duration::from_millis(3));
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_worker_drains_until_killed",
            "--ignored",
            "--test-threads=1",
        ])
        .env(CHILD_TABLE, &setup.table)
        .env(CHILD_QUEUE, &setup.queue.prefix)
        .env(CHILD_MYSQL, via(&mysql_url(), setup.proxy.addr()))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Kill it once it has applied some of the backlog, not all.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, new) = rows(&setup.pg, &setup.my, &setup.table).await;
        if new.len() >= 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the child worker applied nothing"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child worker exited"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL, leases held
    child.wait().unwrap();
    let stats = repo.queue().stats().await.unwrap();
    assert!(
        !stats.is_empty(),
        "killed before the end of the backlog: {stats:?}"
    );

    setup.proxy.heal().await.unwrap();
    // Its leases expire (2 s here) and this wrapper's worker takes over.
    let worker = repo.spawn_worker();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !repo.queue().stats().await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "not drained after the kill");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = worker.shutdown().await.expect("flushes");
    assert_eq!(report.dead_lettered, 0, "{report:?}");
    setup.check(&expected).await;
    setup.clean().await;
}
