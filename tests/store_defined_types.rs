//! Traits whose write arguments name a type each store defines
//! (`Self::Id` of `trait Repo<T> { type Id; }`), and traits with a
//! supertrait whose blanket impl needs `'static`
//! (`impl<T: Db + Clone + 'static> CloneDb for T`), taken unchanged. Their
//! writes are queued while the follower is down, replayed from a reopened
//! SQLite queue by a fresh wrapper, and compared on read.

#![allow(async_fn_in_trait)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use dualwrite_runtime::observe::{ComparisonReport, Observer};
use dualwrite_runtime::queue::SqliteQueue;
use dualwrite_runtime::{dual_write, DualWrite, Stage};
use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(String);

/// A repository of `T`s under ids the store's type names.
#[dual_write]
pub trait Repo<T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static>:
    Send + Sync
{
    type Id: Clone + Ord + Debug + Serialize + DeserializeOwned + Send + Sync + 'static;

    async fn put(&self, id: Self::Id, value: T) -> Result<(), StoreError>;
    async fn put_all(&self, entries: Vec<(Self::Id, T)>) -> Result<(), StoreError>;
    async fn remove(&self, id: &Self::Id) -> Result<bool, StoreError>;
    async fn get(&self, id: &Self::Id) -> Result<Option<T>, StoreError>;
}

/// Lets a `Box<dyn Db>` be cloned: the usual blanket impl asks `'static`.
pub trait CloneDb {
    fn clone_db(&self) -> Box<dyn Db>;
}

impl<T: Db + Clone + 'static> CloneDb for T {
    fn clone_db(&self) -> Box<dyn Db> {
        Box::new(self.clone())
    }
}

#[dual_write]
#[async_trait::async_trait]
pub trait Db: Send + Sync + CloneDb {
    async fn save_name(&self, id: u64, name: &str) -> Result<(), StoreError>;
    async fn get_name(&self, id: u64) -> Result<Option<String>, StoreError>;
}

#[derive(Clone, Default)]
struct Memory<K> {
    rows: Arc<Mutex<BTreeMap<K, String>>>,
    down: Arc<AtomicBool>,
}

impl<K: Ord + Clone> Memory<K> {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError("down".into()))
        } else {
            Ok(())
        }
    }

    fn snapshot(&self) -> BTreeMap<K, String> {
        self.rows.lock().unwrap().clone()
    }
}

/// Ids are `(shard, serial)` pairs in this store.
impl Repo<String> for Memory<(u8, u32)> {
    type Id = (u8, u32);

    async fn put(&self, id: (u8, u32), value: String) -> Result<(), StoreError> {
        self.check()?;
        self.rows.lock().unwrap().insert(id, value);
        Ok(())
    }
    async fn put_all(&self, entries: Vec<((u8, u32), String)>) -> Result<(), StoreError> {
        self.check()?;
        self.rows.lock().unwrap().extend(entries);
        Ok(())
    }
    async fn remove(&self, id: &(u8, u32)) -> Result<bool, StoreError> {
        self.check()?;
        Ok(self.rows.lock().unwrap().remove(id).is_some())
    }
    async fn get(&self, id: &(u8, u32)) -> Result<Option<String>, StoreError> {
        Ok(self.rows.lock().unwrap().get(id).cloned())
    }
}

#[async_trait::async_trait]
impl Db for Memory<u64> {
    async fn save_name(&self, id: u64, name: &str) -> Result<(), StoreError> {
        self.check()?;
        self.rows.lock().unwrap().insert(id, name.to_owned());
        Ok(())
    }
    async fn get_name(&self, id: u64) -> Result<Option<String>, StoreError> {
        Ok(self.rows.lock().unwrap().get(&id).cloned())
    }
}

#[derive(Default)]
struct Mismatches(Mutex<Vec<String>>);

impl Observer for Mismatches {
    fn on_mismatch(&self, report: &ComparisonReport) {
        self.0.lock().unwrap().push(report.method.to_owned());
    }
}

fn queue_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "dualwrite-store-types-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("queue.db")
}

async fn wrapper<S: Clone>(
    old: &S,
    new: &S,
    queue: &std::path::Path,
    stage: Stage,
    mismatches: &Arc<Mismatches>,
) -> DualWrite<S, S> {
    DualWrite::builder(old.clone(), new.clone())
        .queue(SqliteQueue::open(queue).await.unwrap())
        .stage(stage)
        .shared_observer(mismatches.clone())
        .build()
        .unwrap()
}

#[tokio::test]
async fn writes_naming_the_store_s_associated_type_are_replayed_after_a_restart() {
    let queue = queue_path("repo");
    let mismatches = Arc::new(Mismatches::default());
    let (old, new) = (Memory::<(u8, u32)>::default(), Memory::default());
    new.down.store(true, Ordering::SeqCst);
    {
        let repo = wrapper(&old, &new, &queue, Stage::DualWrite, &mismatches).await;
        repo.put((1, 7), "seven".to_owned()).await.unwrap();
        repo.put_all(vec![((2, 1), "one".into()), ((2, 2), "two".into())])
            .await
            .unwrap();
        assert!(repo.remove(&(2, 1)).await.unwrap());
        assert_eq!(repo.queue().stats().await.unwrap().new.pending, 3);
    }
    new.down.store(false, Ordering::SeqCst);
    let repo = wrapper(&old, &new, &queue, Stage::DualWrite, &mismatches).await;
    // The enum carries the id type as a parameter, after the trait's.
    let report = repo.worker::<RepoOp<String, (u8, u32)>>().drain().await;
    assert_eq!((report.applied, report.dead_lettered), (3, 0), "{report:?}");
    assert_eq!(new.snapshot(), old.snapshot());
    assert_eq!(old.snapshot().len(), 2);

    let shadow = wrapper(&old, &new, &queue, Stage::Shadow, &mismatches).await;
    assert_eq!(shadow.get(&(1, 7)).await.unwrap().as_deref(), Some("seven"));
    assert_eq!(shadow.get(&(2, 1)).await.unwrap(), None);
    assert_eq!(*mismatches.0.lock().unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn a_supertrait_needing_static_is_implemented_by_the_wrapper() {
    let queue = queue_path("db");
    let mismatches = Arc::new(Mismatches::default());
    let (old, new) = (Memory::<u64>::default(), Memory::default());
    new.down.store(true, Ordering::SeqCst);
    {
        let repo = wrapper(&old, &new, &queue, Stage::DualWrite, &mismatches).await;
        // The wrapper is a `Db` like any store: boxed, and cloned through
        // the supertrait's blanket impl.
        let db: Box<dyn Db> = Box::new(repo.clone());
        db.clone_db().save_name(1, "ada").await.unwrap();
        assert_eq!(repo.queue().stats().await.unwrap().new.pending, 1);
    }
    new.down.store(false, Ordering::SeqCst);
    let repo = wrapper(&old, &new, &queue, Stage::DualWrite, &mismatches).await;
    let report = repo.worker::<DbOp>().drain().await;
    assert_eq!(report.applied, 1, "{report:?}");
    let shadow = wrapper(&old, &new, &queue, Stage::Shadow, &mismatches).await;
    assert_eq!(shadow.get_name(1).await.unwrap().as_deref(), Some("ada"));
    assert_eq!(*mismatches.0.lock().unwrap(), Vec::<String>::new());
}
