//! A write without a key (here `delete_all`) is ordered against every key
//! of its namespace: a keyed write that comes after it reaches the follower
//! after it, even when the unkeyed write is queued and the keyed one could
//! have been delivered directly; and an unkeyed write waits behind every
//! key's queued work.
//!
//! Checked to bite: before unkeyed entries were ordered against every key,
//! `a_put_after_a_queued_delete_all_is_not_wiped_out` ended with the
//! follower missing key 1 (the put was delivered directly, then the queued
//! `delete_all` replayed over it).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use dualwrite_runtime::{dual_write, DualWrite, InMemoryQueue, Stage};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
struct TableError(String);

#[dual_write(namespace = "table")]
trait Table: Send + Sync {
    #[dual_write(write, key = id)]
    async fn put(&self, id: u32, value: u32) -> Result<(), TableError>;

    /// Unkeyed.
    #[dual_write(write)]
    async fn delete_all(&self) -> Result<(), TableError>;
}

#[derive(Default)]
struct MapTable {
    rows: Mutex<BTreeMap<u32, u32>>,
    calls: Mutex<Vec<String>>,
    down: Mutex<bool>,
}

impl MapTable {
    fn call(&self, call: String) -> Result<(), TableError> {
        if *self.down.lock().unwrap() {
            return Err(TableError("down".into()));
        }
        self.calls.lock().unwrap().push(call);
        Ok(())
    }
}

impl Table for MapTable {
    async fn put(&self, id: u32, value: u32) -> Result<(), TableError> {
        self.call(format!("put({id}, {value})"))?;
        self.rows.lock().unwrap().insert(id, value);
        Ok(())
    }

    async fn delete_all(&self) -> Result<(), TableError> {
        self.call("delete_all".into())?;
        self.rows.lock().unwrap().clear();
        Ok(())
    }
}

fn repo() -> DualWrite<MapTable, MapTable> {
    DualWrite::builder(MapTable::default(), MapTable::default())
        .queue(InMemoryQueue::new())
        .stage(Stage::DualWrite)
        .follower_timeout(Duration::from_millis(50))
        .without_circuit_breaker()
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_put_after_a_queued_delete_all_is_not_wiped_out() {
    let repo = repo();
    repo.put(1, 10).await.unwrap();
    *repo.new_store().down.lock().unwrap() = true;
    repo.delete_all().await.unwrap(); // queued: the follower is down
    *repo.new_store().down.lock().unwrap() = false;
    repo.put(1, 11).await.unwrap(); // the follower is up, but must wait
    assert_eq!(
        repo.queue().stats().await.unwrap().new.pending,
        2,
        "the put was queued behind the delete_all"
    );
    repo.worker::<TableOp>().drain().await;
    assert_eq!(
        *repo.new_store().calls.lock().unwrap(),
        ["put(1, 10)", "delete_all", "put(1, 11)"],
        "the follower applied them in the order the authoritative store did"
    );
    assert_eq!(
        *repo.new_store().rows.lock().unwrap(),
        *repo.old_store().rows.lock().unwrap()
    );
}

#[tokio::test]
async fn a_delete_all_waits_behind_every_key_with_queued_work() {
    let repo = repo();
    *repo.new_store().down.lock().unwrap() = true;
    repo.put(2, 20).await.unwrap(); // queued
    *repo.new_store().down.lock().unwrap() = false;
    repo.delete_all().await.unwrap(); // must not overtake put(2, 20)
    repo.put(3, 30).await.unwrap(); // and this must not overtake it
    repo.worker::<TableOp>().drain().await;
    assert_eq!(
        *repo.new_store().calls.lock().unwrap(),
        ["put(2, 20)", "delete_all", "put(3, 30)"]
    );
    assert_eq!(
        *repo.new_store().rows.lock().unwrap(),
        *repo.old_store().rows.lock().unwrap()
    );
}
