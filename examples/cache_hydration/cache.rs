//! The follower: the catalog in Redis, one JSON value per product under
//! `<prefix>:<sku>`, each written with a time to live.
//!
//! As a dual-write follower the cache is written, not filled on misses: a
//! put sets the key (with a fresh TTL), a delete deletes it. An expired key
//! is a miss until the next write of the product sets it again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, ConnectionInfo};

use crate::catalog::{CatalogError, Product, ProductCatalog};

/// The catalog cache.
pub struct ProductCache {
    redis: ConnectionManager,
    prefix: String,
    ttl_ms: AtomicU64,
}

impl ProductCache {
    /// Connects to Redis; entries are kept under `prefix` (unique to the
    /// run) for `ttl` after each write.
    pub async fn connect(
        server: ConnectionInfo,
        prefix: &str,
        ttl: Duration,
    ) -> Result<ProductCache, redis::RedisError> {
        let client = redis::Client::open(server)?;
        // Short timeouts and few reconnection attempts: a request must not
        // wait long for a cache that is down; the write is queued instead
        // and the next command connects again.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_millis(500))
            .set_response_timeout(Duration::from_millis(500))
            .set_number_of_retries(2)
            .set_factor(10)
            .set_max_delay(200);
        let redis = ConnectionManager::new_with_config(client, config).await?;
        let cache = ProductCache {
            redis,
            prefix: prefix.to_owned(),
            ttl_ms: AtomicU64::new(0),
        };
        cache.set_ttl(ttl);
        Ok(cache)
    }

    /// The TTL of entries written from now on.
    pub fn set_ttl(&self, ttl: Duration) {
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.ttl_ms.store(millis, Ordering::SeqCst);
    }

    fn key(&self, sku: &str) -> String {
        format!("{}:{sku}", self.prefix)
    }

    /// Every cached product, by SKU (`SCAN` over the prefix).
    pub async fn entries(&self) -> Result<BTreeMap<String, Product>, CatalogError> {
        let mut redis = self.redis.clone();
        let pattern = format!("{}:*", self.prefix);
        // SCAN by hand: every page's error is returned, none skipped.
        let (mut keys, mut cursor) = (Vec::new(), 0_u64);
        loop {
            let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut redis)
                .await?;
            keys.extend(page);
            match next {
                0 => break,
                more => cursor = more,
            }
        }
        let mut entries = BTreeMap::new();
        for key in keys {
            let sku = key[self.prefix.len() + 1..].to_owned();
            if let Some(product) = self.get_product(sku.clone()).await? {
                entries.insert(sku, product);
            }
        }
        Ok(entries)
    }

    /// How long the product's entry has left, if it is cached.
    pub async fn time_to_live(&self, sku: &str) -> Result<Option<Duration>, CatalogError> {
        let mut redis = self.redis.clone();
        let millis: i64 = redis.pttl(self.key(sku)).await?;
        Ok(u64::try_from(millis).ok().map(Duration::from_millis))
    }

    /// Deletes every key under the prefix.
    pub async fn clear(&self) -> Result<(), CatalogError> {
        let skus: Vec<String> = self.entries().await?.into_keys().collect();
        for sku in skus {
            self.delete_product(sku).await?;
        }
        Ok(())
    }
}

impl ProductCatalog for ProductCache {
    async fn put_product(&self, product: Product) -> Result<(), CatalogError> {
        let value = serde_json::to_string(&product).map_err(|error| CatalogError::Corrupt {
            key: self.key(&product.sku),
            error,
        })?;
        let ttl = self.ttl_ms.load(Ordering::SeqCst);
        let mut redis = self.redis.clone();
        let () = redis.pset_ex(self.key(&product.sku), value, ttl).await?;
        Ok(())
    }

    async fn delete_product(&self, sku: String) -> Result<(), CatalogError> {
        let mut redis = self.redis.clone();
        let _deleted: u64 = redis.del(self.key(&sku)).await?;
        Ok(())
    }

    async fn get_product(&self, sku: String) -> Result<Option<Product>, CatalogError> {
        let mut redis = self.redis.clone();
        let key = self.key(&sku);
        let value: Option<String> = redis.get(&key).await?;
        let parsed = value.map(|value| serde_json::from_str(&value));
        parsed
            .transpose()
            .map_err(|error| CatalogError::Corrupt { key, error })
    }
}
