//! Keeping a cache warm: PostgreSQL is authoritative for the product
//! catalog, and Redis follows it as a dual-write follower that never takes
//! over.
//!
//! The catalog is read far more than it is written. With `#[dual_write]` on
//! its `ProductCatalog` trait (`catalog.rs`), every write goes to PostgreSQL
//! and then to Redis (`cache.rs`): a put sets the product's key with a TTL,
//! a delete deletes it. When Redis is unreachable the writes are queued and
//! the worker replays them in per-key order once it is back, deletes
//! included, so no stale value survives the outage.
//!
//! # Why the stage stays at `Shadow`
//!
//! A migration walks on to `Live` and `Complete`; a cache never does. It
//! evicts, expires and restarts empty, so it cannot be the authoritative
//! store or serve every read. The wrapper stays at `Shadow` for good:
//! writes go to both, reads through the wrapper are served by PostgreSQL,
//! and a sampled share of them is also read from Redis and compared. The
//! mismatch rate of those comparisons is the cache's freshness as readers
//! would see it: misses (expired or never written) and, if anything went
//! wrong, stale values. The hot read path itself (`hot_read` below) reads
//! the cache directly and goes to the database on a miss or a cache error,
//! without filling the cache: the next write does, so a reader can never
//! put back a value a concurrent write just replaced.
//!
//! # When dual-writing a cache beats cache-aside invalidation
//!
//! Cache-aside: readers fill the cache on a miss, writers delete the key.
//! Dual-writing the cache is better when
//!
//! - **reads are hot and a miss is expensive**: after a write the entry is
//!   already there with the new value, where invalidation turns every write
//!   into a miss (and, on a hot key, a stampede of readers loading it);
//! - **the write has the whole cached value** (the record as stored), so
//!   writing it costs one `SET`, not a read back;
//! - **a failed cache write must not be forgotten**: a lost invalidation
//!   leaves a stale entry until its TTL; here the write is queued and
//!   replayed, and the queue shows what the cache still owes.
//!
//! It is not better when
//!
//! - **writes outnumber reads** or most keys are cold: every write pays for
//!   a cache entry nobody reads, where cache-aside caches only what is read;
//! - **the cached value is derived** (joined from several tables, rendered):
//!   the write does not have it, and deleting the key is simpler than
//!   recomputing it on every write;
//! - **other writers bypass this service** (other services, scripts, SQL by
//!   hand): their writes never reach the cache, and only the TTL bounds how
//!   long it is stale;
//! - **several instances write the same key at once**: the per-key order is
//!   kept within one process, so two instances can set the cache in the
//!   opposite order to their database commits and leave the older value
//!   until the next write or the TTL. A delete is immune to this, which is
//!   why cache-aside invalidates rather than sets. Keep a TTL either way.
//!
//! ```text
//! cargo run --features services --example cache_hydration
//! ```
//!
//! It needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379
//! (`DUALWRITE_POSTGRES_URL`, `DUALWRITE_REDIS_URL` to point elsewhere):
//! `bash .ci/services` starts them. The Redis outage is a TCP proxy of the
//! example's own (`proxy.rs`) between the client and the server, which the
//! example cuts and restores. The table and the keys (under
//! `dualwrite-example:<run>:`) are named for the run and removed at the end.
//! The exit code is 1 if the cache ends with a value the database does not
//! have.

mod cache;
mod catalog;
#[path = "../local_services/mod.rs"]
mod local_services;
mod proxy;

use std::error::Error;
use std::process::ExitCode;
use std::time::Duration;

use dualwrite_runtime::queue::SqliteQueue;
use dualwrite_runtime::{DualWrite, Stage};

use cache::ProductCache;
use catalog::{CatalogError, Freshness, Product, ProductCatalog, ProductTable};
use local_services::wait_for;
use proxy::{cache_through_proxy, Proxy};

type Repo = DualWrite<ProductTable, ProductCache>;

/// The TTL of cache entries: long, as for a catalog; the expiry phase
/// shortens it for one write.
const TTL: Duration = Duration::from_secs(3600);

#[tokio::main]
async fn main() -> ExitCode {
    local_services::run_example("cache", |dir| async move { run(&dir).await }).await
}

/// Sets up both stores, runs the phases, and compares the cache with the
/// database; `Ok(true)` if no cached value differs.
async fn run(dir: &std::path::Path) -> Result<bool, Box<dyn Error>> {
    let name = local_services::run_name("cache_products");
    let prefix = format!("dualwrite-example:{name}");
    let (cache, proxy) = cache_through_proxy(&prefix, TTL).await?;
    let table = ProductTable::create(local_services::postgres().await?, &name).await?;
    println!("Products are in PostgreSQL (table {name}), cached in Redis under {prefix}:");

    let repo = DualWrite::builder(table, cache)
        .queue(SqliteQueue::open(dir.join("queue.db")).await?)
        // For good: see the module docs.
        .stage(Stage::Shadow)
        // Half the reads through the wrapper are also read from the cache.
        .compare_sampling(0.5)
        // A cache that does not answer within this is skipped and queued.
        .follower_timeout(Duration::from_millis(250))
        .build()?;
    let worker = repo.spawn_worker();
    let walked = hydrate(&repo, &proxy).await;
    let stopped = worker.shutdown().await;
    repo.shutdown().await?;
    walked?;
    stopped?;

    let fresh = compare(&repo).await?;
    if fresh {
        repo.old_store().drop_table().await?;
        repo.new_store().clear().await?;
    } else {
        println!("The table {name} and the keys under {prefix}: are kept to look into.");
    }
    Ok(fresh)
}

async fn put(repo: &Repo, sku: &str, name: &str, cents: i64) -> Result<(), CatalogError> {
    let product = Product::new(sku, name, cents);
    println!("  put {product}");
    repo.put_product(product).await
}

async fn delete(repo: &Repo, sku: &str) -> Result<(), CatalogError> {
    println!("  deleted {sku}");
    repo.delete_product(sku.to_owned()).await
}

/// Reads every SKU `rounds` times through the wrapper and prints the
/// sampled freshness.
async fn read_traffic(repo: &Repo, skus: &[&str], rounds: usize) -> Result<(), CatalogError> {
    repo.stage().reset_comparisons();
    for _ in 0..rounds {
        for sku in skus {
            repo.get_product((*sku).to_owned()).await?;
        }
    }
    let rate = repo.stage().mismatch_rate();
    let reads = rounds * skus.len();
    println!(
        "  {reads} reads served by PostgreSQL; {} sampled against the cache, {} found it \
         cold or stale ({:.0}%)",
        rate.comparisons,
        rate.disagreements,
        rate.rate() * 100.0
    );
    Ok(())
}

/// The service's hot read path: the cache, or the database when the cache
/// misses or fails. Prints which answered.
async fn hot_read(repo: &Repo, sku: &str) -> Result<Option<Product>, CatalogError> {
    let cached = repo.new_store().get_product(sku.to_owned()).await;
    if let Ok(Some(product)) = cached {
        println!("  hot read of {sku}: {product}, from the cache");
        return Ok(Some(product));
    }
    let why = match cached {
        Err(_) => "the cache failed",
        _ => "a cache miss",
    };
    let product = repo.old_store().get_product(sku.to_owned()).await?;
    let shown = product
        .as_ref()
        .map_or("nothing".into(), Product::to_string);
    println!("  hot read of {sku}: {why}, so {shown} from PostgreSQL");
    Ok(product)
}

/// Prints what the cache holds for `sku`.
async fn show_cached(repo: &Repo, sku: &str) -> Result<(), CatalogError> {
    let cache = repo.new_store();
    match cache.get_product(sku.to_owned()).await? {
        Some(product) => {
            let ttl = cache.time_to_live(sku).await?.unwrap_or_default();
            let ttl = match ttl.as_secs() {
                0 => format!("{} ms", ttl.as_millis()),
                seconds => format!("{seconds} s"),
            };
            println!("  cache: {product}, expires in {ttl}");
        }
        None => println!("  cache: nothing for {sku}"),
    }
    Ok(())
}

/// Waits until the worker has replayed everything queued for the cache.
async fn caught_up(repo: &Repo) -> Result<(), Box<dyn Error>> {
    Ok(local_services::drained(&repo.queue(), Duration::from_secs(30)).await?)
}

const SKUS: [&str; 5] = ["lamp", "desk", "chair", "shelf", "rug"];

async fn hydrate(repo: &Repo, proxy: &Proxy) -> Result<(), Box<dyn Error>> {
    println!("\nPhase 1: writes go to PostgreSQL, then the cache");
    put(repo, "lamp", "Desk lamp", 3_900).await?;
    put(repo, "desk", "Oak desk", 42_000).await?;
    put(repo, "chair", "Task chair", 18_500).await?;
    put(repo, "shelf", "Wall shelf", 6_400).await?;
    put(repo, "rug", "Wool rug", 12_000).await?;
    show_cached(repo, "desk").await?;
    hot_read(repo, "desk").await?;
    read_traffic(repo, &SKUS, 20).await?;

    println!("\nPhase 2: a delete in the database deletes the key in the cache");
    delete(repo, "shelf").await?;
    show_cached(repo, "shelf").await?;

    println!("\nPhase 3: an entry expires, and the next write of it populates it again");
    repo.new_store().set_ttl(Duration::from_millis(300));
    put(repo, "lamp", "Desk lamp", 3_500).await?;
    repo.new_store().set_ttl(TTL);
    show_cached(repo, "lamp").await?;
    let expired = wait_for("the entry to expire", Duration::from_secs(5), || async {
        let cached = repo.new_store().get_product("lamp".into()).await;
        matches!(cached, Ok(None)).then_some(())
    });
    expired.await?;
    show_cached(repo, "lamp").await?;
    hot_read(repo, "lamp").await?;
    println!("  shadow reads count the cold entry:");
    read_traffic(repo, &["lamp"], 20).await?;
    put(repo, "lamp", "Desk lamp", 3_500).await?;
    show_cached(repo, "lamp").await?;

    println!("\nPhase 4: Redis is unreachable; the catalog keeps working");
    proxy.set_down(true);
    put(repo, "desk", "Oak desk", 39_900).await?;
    delete(repo, "chair").await?;
    put(repo, "stool", "Bar stool", 7_500).await?;
    put(repo, "bench", "Garden bench", 21_000).await?;
    delete(repo, "bench").await?;
    hot_read(repo, "desk").await?;
    let waiting = repo.queue().stats().await?.new;
    println!(
        "  every write succeeded; {} wait for the cache",
        waiting.pending + waiting.in_flight
    );
    println!("  (Redis itself still holds the old desk and the deleted chair until the drain)");
    proxy.set_down(false);
    println!("  Redis is reachable again; the worker replays the writes in order");
    caught_up(repo).await?;
    show_cached(repo, "desk").await?;
    show_cached(repo, "chair").await?;
    show_cached(repo, "bench").await?;
    read_traffic(
        repo,
        &["lamp", "desk", "chair", "rug", "stool", "bench"],
        20,
    )
    .await?;
    println!("\nThe stage stays at `shadow`: the cache follows, it never takes over.");
    Ok(())
}

/// Compares every product and every cache entry.
async fn compare(repo: &Repo) -> Result<bool, Box<dyn Error>> {
    println!("\nComparing the cache with the database, entry by entry");
    let database = repo.old_store().all().await?;
    let cached = repo.new_store().entries().await?;
    let freshness = Freshness::of(&database, &cached);
    for (cached, row) in &freshness.stale {
        println!("  STALE: the cache has {cached}, the database {row}");
    }
    for cached in &freshness.orphaned {
        println!("  STALE: the cache has {cached}, which the database deleted");
    }
    // Every product's last write set a long TTL, so a miss here is a write
    // the cache never got.
    for sku in &freshness.missing {
        println!("  MISSING: the cache has nothing for {sku}");
    }
    let fresh = freshness.has_no_stale_values() && freshness.missing.is_empty();
    match fresh {
        true => println!(
            "  The cache agrees with the database: {} products, none stale.",
            freshness.fresh.len()
        ),
        false => println!("  The cache DISAGREES with the database."),
    }
    Ok(fresh)
}
