//! The macro carries the whole vocabulary of a trait: type parameters with
//! bounds and a default, a lifetime parameter, a const parameter, where
//! clauses, associated types (with `Self::Error` in results) and consts,
//! default methods, `#[cfg]` on methods, `self: Arc<Self>`, borrowed
//! arguments (`&str`, `&[T]`, `&T`) and pattern arguments.

// The trait is this test's own: whether its futures are `Send` is not the
// point here (`impl_future_form` covers that).
#![allow(async_fn_in_trait)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use dualwrite_runtime::{dual_write, DualWrite, InMemoryQueue, Operation, Stage};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Something with an id.
pub trait Item: Clone + Debug + PartialEq + Send + Sync + 'static {
    fn id(&self) -> u64;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Widget {
    pub id: u64,
    pub name: String,
}

impl Item for Widget {
    fn id(&self) -> u64 {
        self.id
    }
}

/// The error of a catalog store.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("catalog: {0}")]
pub struct CatalogError(String);

/// A catalog of items of type `T`, in `N` shards, answering queries that
/// borrow `'q` data.
#[dual_write(namespace = "catalog", version = 2)]
pub trait Catalog<'q, T: Item = Widget, const N: usize = 4>: Send + Sync
where
    T: Serialize + DeserializeOwned,
{
    /// The store's error.
    type Error: std::fmt::Display + Debug + Send;
    /// What `stats` returns.
    type Stats: Debug + PartialEq;
    /// The store's name.
    const NAME: &'static str;
    /// Items per page: a const with a default.
    const PAGE: usize = 10;

    /// Stores an item (`T` by value, keyed by a method call on it).
    #[dual_write(write, key = item.id())]
    async fn put_item(&self, item: T) -> Result<(), Self::Error>;

    /// Stores an item given by reference (queued as `T`).
    #[dual_write(write, key = item.id())]
    async fn put_item_ref(&self, item: &T) -> Result<(), Self::Error>;

    /// Tags items: `&str` (queued as `String`) and `&[u64]` (as `Vec<u64>`).
    #[dual_write(write, key = format!("tag/{tag}"))]
    async fn tag_items(&self, tag: &str, ids: &[u64]) -> Result<usize, Self::Error>;

    /// Configured out (`any()` never holds): nothing is generated for it,
    /// and its argument type does not even exist.
    #[cfg(any())]
    #[dual_write(write)]
    async fn purge_everything(&self, confirm: NotAType) -> Result<(), Self::Error>;

    /// Configured in (`not(miri)` holds in every build this test runs in).
    #[cfg(not(miri))]
    #[dual_write(write, key = id)]
    async fn delete_item(&self, id: u64) -> Result<bool, Self::Error>;

    /// A read.
    #[dual_write(read, key = id)]
    async fn get_item(&self, id: u64) -> Result<Option<T>, Self::Error>;

    /// A read with a pattern argument (so it needs a default body) and a
    /// `'q` borrow.
    #[dual_write(read)]
    async fn find_pair(
        &self,
        (a, b): (u64, u64),
        label: &'q str,
    ) -> Result<(Option<T>, &'q str), Self::Error> {
        let _ = (a, b);
        Ok((None, label))
    }

    /// A read through `self: Arc<Self>`, returning an associated type.
    #[dual_write(read)]
    async fn stats(self: Arc<Self>) -> Self::Stats;

    /// A read that uses the const parameter.
    #[dual_write(read)]
    async fn shard_sizes(&self) -> [usize; N];

    /// A default method without options: its body runs against the
    /// wrapper, so the writes it makes are dual-written.
    async fn put_many(&self, items: Vec<T>) -> Result<usize, Self::Error> {
        let count = items.len();
        for item in items {
            self.put_item(item).await?;
        }
        Ok(count)
    }

    /// A default method marked `skip`: forwarded to the serving store,
    /// whose own (or default) body runs.
    #[dual_write(skip)]
    async fn describe(&self) -> String {
        format!("{} with {} shards", Self::NAME, N)
    }
}

#[derive(Debug, Default)]
struct Shelf {
    name: &'static str,
    items: Mutex<BTreeMap<u64, Widget>>,
    tags: Mutex<BTreeMap<String, Vec<u64>>>,
    down: std::sync::atomic::AtomicBool,
}

impl Shelf {
    fn named(name: &'static str) -> Self {
        Shelf {
            name,
            ..Shelf::default()
        }
    }

    fn check(&self) -> Result<(), CatalogError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            Err(CatalogError(format!("{} is down", self.name)))
        } else {
            Ok(())
        }
    }

    fn items(&self) -> BTreeMap<u64, Widget> {
        self.items.lock().unwrap().clone()
    }
}

impl<'q> Catalog<'q> for Shelf {
    type Error = CatalogError;
    type Stats = (usize, usize);
    const NAME: &'static str = "shelf";

    async fn put_item(&self, item: Widget) -> Result<(), CatalogError> {
        self.check()?;
        self.items.lock().unwrap().insert(item.id, item);
        Ok(())
    }

    async fn put_item_ref(&self, item: &Widget) -> Result<(), CatalogError> {
        self.put_item(item.clone()).await
    }

    async fn tag_items(&self, tag: &str, ids: &[u64]) -> Result<usize, CatalogError> {
        self.check()?;
        self.tags
            .lock()
            .unwrap()
            .insert(tag.to_owned(), ids.to_vec());
        Ok(ids.len())
    }

    async fn delete_item(&self, id: u64) -> Result<bool, CatalogError> {
        self.check()?;
        Ok(self.items.lock().unwrap().remove(&id).is_some())
    }

    async fn get_item(&self, id: u64) -> Result<Option<Widget>, CatalogError> {
        Ok(self.items.lock().unwrap().get(&id).cloned())
    }

    async fn find_pair(
        &self,
        (a, b): (u64, u64),
        label: &'q str,
    ) -> Result<(Option<Widget>, &'q str), CatalogError> {
        let items = self.items.lock().unwrap();
        Ok((items.get(&a).or_else(|| items.get(&b)).cloned(), label))
    }

    async fn stats(self: Arc<Self>) -> (usize, usize) {
        (
            self.items.lock().unwrap().len(),
            self.tags.lock().unwrap().len(),
        )
    }

    async fn shard_sizes(&self) -> [usize; 4] {
        let mut sizes = [0; 4];
        for id in self.items.lock().unwrap().keys() {
            sizes[(*id % 4) as usize] += 1;
        }
        sizes
    }

    async fn describe(&self) -> String {
        format!("{} shelf", self.name)
    }
}

type Shelves = DualWrite<Shelf, Shelf>;

fn wrapper(stage: Stage) -> Shelves {
    DualWrite::builder(Shelf::named("old"), Shelf::named("new"))
        .queue(InMemoryQueue::new())
        .stage(stage)
        .build()
        .unwrap()
}

fn widget(id: u64, name: &str) -> Widget {
    Widget {
        id,
        name: name.to_owned(),
    }
}

#[tokio::test]
async fn borrowed_and_owned_arguments_reach_both_stores() {
    let repo = wrapper(Stage::DualWrite);
    repo.put_item(widget(1, "bolt")).await.unwrap();
    repo.put_item_ref(&widget(2, "nut")).await.unwrap();
    assert_eq!(repo.tag_items("small", &[1, 2]).await.unwrap(), 2);
    assert!(repo.delete_item(2).await.unwrap());
    for shelf in [repo.old_store(), repo.new_store()] {
        assert_eq!(shelf.items(), [(1, widget(1, "bolt"))].into());
        assert_eq!(shelf.tags.lock().unwrap().get("small"), Some(&vec![1, 2]));
    }
}

#[tokio::test]
async fn queued_generic_operations_are_replayed() {
    let repo = wrapper(Stage::DualWrite);
    repo.new_store()
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    repo.put_item(widget(1, "bolt")).await.unwrap();
    repo.put_item_ref(&widget(2, "nut")).await.unwrap();
    repo.tag_items("small", &[1, 2]).await.unwrap();
    assert!(repo.delete_item(1).await.unwrap());
    assert_eq!(repo.queue().stats().await.unwrap().new.pending, 4);

    repo.new_store()
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    // The enum carries the trait's type and const parameters.
    let report = repo.worker::<CatalogOp<Widget, 4>>().drain().await;
    assert_eq!(report.applied, 4, "{report:?}");
    assert_eq!(repo.new_store().items(), repo.old_store().items());
    assert_eq!(
        repo.new_store().tags.lock().unwrap().get("small"),
        Some(&vec![1, 2])
    );
}

#[tokio::test]
async fn the_operation_enum_follows_the_trait_options() {
    assert_eq!(<CatalogOp<Widget, 4> as Operation>::NAMESPACE, "catalog");
    assert_eq!(<CatalogOp<Widget, 4> as Operation>::VERSION, 2);
    let op = CatalogOp::<Widget, 4>::TagItems {
        tag: "small".to_owned(),
        ids: vec![1, 2],
    };
    assert_eq!(op.method(), "tag_items");
    let json = serde_json::to_string(&op).unwrap();
    let back: CatalogOp<Widget, 4> = serde_json::from_str(&json).unwrap();
    assert_eq!(back.method(), "tag_items");
}

#[tokio::test]
async fn associated_items_come_from_the_old_store_s_impl() {
    assert_eq!(<Shelves as Catalog>::NAME, "shelf");
    assert_eq!(<Shelves as Catalog>::PAGE, 10);
    let error: <Shelves as Catalog>::Error = CatalogError("x".into());
    assert_eq!(error.to_string(), "catalog: x");
}

#[tokio::test]
async fn reads_with_patterns_lifetimes_const_parameters_and_arc_self() {
    let repo = wrapper(Stage::Live);
    repo.put_item(widget(5, "gear")).await.unwrap();
    repo.old_store()
        .items
        .lock()
        .unwrap()
        .insert(6, widget(6, "only in old"));

    let label = String::from("pair");
    let (found, echoed) = repo.find_pair((6, 5), &label).await.unwrap();
    assert_eq!(found, Some(widget(5, "gear")), "Live reads the new store");
    assert_eq!(echoed, "pair");
    assert_eq!(repo.shard_sizes().await, [0, 1, 0, 0]);
    assert_eq!(Arc::new(repo.clone()).stats().await, (1, 0));
    assert_eq!(repo.describe().await, "new shelf");
}

#[tokio::test]
async fn default_methods_call_through_the_wrapper() {
    let repo = wrapper(Stage::DualWrite);
    repo.new_store()
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let count = repo
        .put_many(vec![widget(1, "bolt"), widget(2, "nut")])
        .await
        .unwrap();
    assert_eq!(count, 2);
    // The default body's `put_item` calls went through the wrapper: the
    // follower missed them, so they were queued.
    assert_eq!(repo.old_store().items().len(), 2);
    assert_eq!(repo.queue().stats().await.unwrap().new.pending, 2);
    repo.new_store()
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    repo.worker::<CatalogOp<Widget, 4>>().drain().await;
    assert_eq!(repo.new_store().items(), repo.old_store().items());
}
