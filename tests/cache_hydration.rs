//! The cache-hydration example's stores: deletes and expirations reach the
//! cache, shadow reads measure its freshness, and a Redis outage leaves no
//! stale value once the worker has drained. Needs PostgreSQL and Redis (see
//! `examples/local_services`); run with `--features services`.

#[path = "../examples/cache_hydration/cache.rs"]
mod cache;
#[path = "../examples/cache_hydration/catalog.rs"]
mod catalog;
#[path = "../examples/local_services/mod.rs"]
mod local_services;
#[path = "../examples/cache_hydration/proxy.rs"]
mod proxy;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use dualwrite_runtime::queue::SqliteQueue;
use dualwrite_runtime::{DualWrite, Stage, WorkerHandle};
use redis::IntoConnectionInfo;

use cache::ProductCache;
use catalog::{Freshness, Product, ProductCatalog, ProductTable};
use local_services::wait_for;
use proxy::{cache_through_proxy, Proxy};

const TTL: Duration = Duration::from_secs(600);

/// A catalog with its cache behind a proxy, and a second connection to the
/// same keys that bypasses the proxy (to look at Redis during an outage).
struct Hydration {
    repo: DualWrite<ProductTable, ProductCache>,
    proxy: Proxy,
    direct: ProductCache,
    worker: Option<WorkerHandle>,
    dir: PathBuf,
}

impl Hydration {
    async fn start(name: &str, sampling: f64) -> Hydration {
        let run = local_services::run_name(name);
        let dir = local_services::scratch_dir(&run);
        let pool = local_services::postgres().await.unwrap();
        let table = ProductTable::create(pool, &run).await.unwrap();
        let prefix = format!("dualwrite-test:{run}");
        let (cache, proxy) = cache_through_proxy(&prefix, TTL).await.unwrap();
        let server = local_services::redis_url().into_connection_info().unwrap();
        let direct = ProductCache::connect(server, &prefix, TTL).await.unwrap();
        let queue = SqliteQueue::open(dir.join("queue.db")).await.unwrap();
        let repo = DualWrite::builder(table, cache)
            .queue(queue)
            .stage(Stage::Shadow)
            .compare_sampling(sampling)
            .follower_timeout(Duration::from_millis(250))
            .build()
            .unwrap();
        let worker = Some(repo.spawn_worker());
        Hydration {
            repo,
            proxy,
            direct,
            worker,
            dir,
        }
    }

    async fn put(&self, sku: &str, cents: i64) {
        let product = Product::new(sku, &format!("Product {sku}"), cents);
        self.repo.put_product(product).await.unwrap();
    }

    async fn delete(&self, sku: &str) {
        self.repo.delete_product(sku.to_owned()).await.unwrap();
    }

    async fn cached(&self, sku: &str) -> Option<Product> {
        self.direct.get_product(sku.to_owned()).await.unwrap()
    }

    async fn caught_up(&self) {
        wait_for("the queue to empty", Duration::from_secs(30), || async {
            self.repo
                .queue()
                .stats()
                .await
                .ok()?
                .is_empty()
                .then_some(())
        })
        .await
        .unwrap();
    }

    async fn freshness(&self) -> Freshness {
        let database = self.repo.old_store().all().await.unwrap();
        Freshness::of(&database, &self.direct.entries().await.unwrap())
    }

    /// Drains, asserts the cache equals the database, and removes both.
    async fn finish(mut self) {
        self.caught_up().await;
        let report = self.worker.take().unwrap().shutdown().await.unwrap();
        self.repo.shutdown().await.unwrap();
        let database = self.repo.old_store().all().await.unwrap();
        let cached = self.direct.entries().await.unwrap();
        assert_eq!(cached, database, "the cache differs from the database");
        assert_eq!(report.dead_lettered, 0, "{report:?}");
        self.repo.old_store().drop_table().await.unwrap();
        self.direct.clear().await.unwrap();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_in_the_database_deletes_the_cached_key() {
    let run = Hydration::start("cache_delete", 0.0).await;
    run.put("lamp", 3_900).await;
    run.put("desk", 42_000).await;
    assert_eq!(run.cached("lamp").await.unwrap().price_cents, 3_900);
    run.delete("lamp").await;
    assert_eq!(run.cached("lamp").await, None);
    assert!(run
        .repo
        .old_store()
        .all()
        .await
        .unwrap()
        .contains_key("desk"));
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_entry_is_populated_again_by_the_next_write() {
    let run = Hydration::start("cache_expiry", 0.0).await;
    run.repo.new_store().set_ttl(Duration::from_millis(200));
    run.put("lamp", 3_900).await;
    let ttl = run.direct.time_to_live("lamp").await.unwrap().unwrap();
    assert!(ttl <= Duration::from_millis(200), "{ttl:?}");
    wait_for("the entry to expire", Duration::from_secs(5), || async {
        run.cached("lamp").await.is_none().then_some(())
    })
    .await
    .unwrap();
    // The database still has it: a miss, not a delete.
    let row = run.repo.old_store().get_product("lamp".into()).await;
    assert!(row.unwrap().is_some());

    run.repo.new_store().set_ttl(TTL);
    run.put("lamp", 3_500).await;
    assert_eq!(run.cached("lamp").await.unwrap().price_cents, 3_500);
    let ttl = run.direct.time_to_live("lamp").await.unwrap().unwrap();
    assert!(ttl > Duration::from_secs(60), "{ttl:?}");
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_reads_measure_the_cache_freshness_as_the_mismatch_rate() {
    let run = Hydration::start("cache_freshness", 1.0).await;
    let skus: Vec<String> = (0..10).map(|n| format!("sku{n}")).collect();
    for (n, sku) in skus.iter().enumerate() {
        // Half of them expire at once.
        let ttl = if n % 2 == 0 {
            TTL
        } else {
            Duration::from_millis(150)
        };
        run.repo.new_store().set_ttl(ttl);
        run.put(sku, 100).await;
    }
    run.repo.new_store().set_ttl(TTL);
    wait_for(
        "half the entries to expire",
        Duration::from_secs(5),
        || async { (run.direct.entries().await.ok()?.len() == 5).then_some(()) },
    )
    .await
    .unwrap();

    run.repo.stage().reset_comparisons();
    for sku in &skus {
        let served = run.repo.get_product(sku.clone()).await.unwrap();
        assert!(served.is_some(), "reads are the database's: {sku}");
    }
    let rate = run.repo.stage().mismatch_rate();
    assert_eq!((rate.comparisons, rate.disagreements), (10, 5), "{rate:?}");

    // Writes warm them again, and the rate falls to zero.
    for sku in &skus {
        run.put(sku, 200).await;
    }
    run.repo.stage().reset_comparisons();
    for sku in &skus {
        run.repo.get_product(sku.clone()).await.unwrap();
    }
    let rate = run.repo.stage().mismatch_rate();
    assert_eq!((rate.comparisons, rate.disagreements), (10, 0), "{rate:?}");
    run.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_a_redis_outage_leave_no_stale_value_after_the_drain() {
    let run = Hydration::start("cache_outage", 0.5).await;
    for n in 0..8 {
        run.put(&format!("sku{n}"), 100 + n).await;
    }
    assert!(run.freshness().await.has_no_stale_values());

    run.proxy.set_down(true);
    let mut expected: BTreeMap<String, i64> =
        (0..8).map(|n| (format!("sku{n}"), 100 + n)).collect();
    // Changed, deleted, created, created then deleted, deleted then created.
    run.put("sku0", 900).await;
    run.put("sku0", 901).await;
    expected.insert("sku0".into(), 901);
    run.delete("sku1").await;
    run.delete("sku2").await;
    expected.remove("sku1");
    expected.remove("sku2");
    run.put("new1", 500).await;
    expected.insert("new1".into(), 500);
    run.put("gone", 600).await;
    run.delete("gone").await;
    run.delete("sku3").await;
    run.put("sku3", 303).await;
    expected.insert("sku3".into(), 303);
    // Reads keep working: the database serves them.
    let served = run.repo.get_product("sku0".into()).await.unwrap();
    assert_eq!(served.unwrap().price_cents, 901);

    // Every write was acknowledged and waits for the cache, which is stale.
    let waiting = run.repo.queue().stats().await.unwrap().new;
    assert_eq!(waiting.pending + waiting.in_flight, 9, "{waiting:?}");
    let during = run.freshness().await;
    assert_eq!(during.stale.len(), 2, "sku0 and sku3 are stale: {during:?}");
    assert_eq!(
        during.orphaned.len(),
        2,
        "sku1 and sku2 are orphans: {during:?}"
    );

    run.proxy.set_down(false);
    run.caught_up().await;
    let after = run.freshness().await;
    assert!(after.has_no_stale_values(), "{after:?}");
    assert!(after.missing.is_empty(), "{after:?}");
    let cached: BTreeMap<String, i64> = run
        .direct
        .entries()
        .await
        .unwrap()
        .into_iter()
        .map(|(sku, product)| (sku, product.price_cents))
        .collect();
    assert_eq!(cached, expected);
    run.finish().await;
}
