//! The product catalog: a read-heavy entity, its repository trait, and its
//! authoritative store in PostgreSQL.

use std::collections::BTreeMap;
use std::fmt;

use dualwrite_runtime::dual_write;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::Row;

/// A product, as the database and the cache hold it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
}

impl Product {
    pub fn new(sku: &str, name: &str, price_cents: i64) -> Product {
        let (sku, name) = (sku.to_owned(), name.to_owned());
        Product {
            sku,
            name,
            price_cents,
        }
    }
}

impl fmt::Display for Product {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (dollars, cents) = (self.price_cents / 100, self.price_cents % 100);
        write!(f, "{} ({}, ${dollars}.{cents:02})", self.sku, self.name)
    }
}

/// Why a catalog call failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cache error: {0}")]
    Cache(#[from] redis::RedisError),
    #[error("the cache entry {key} is not a product: {error}")]
    Corrupt {
        key: String,
        error: serde_json::Error,
    },
}

/// The repository trait the catalog service already had, plus the attribute.
#[dual_write(namespace = "catalog")]
pub trait ProductCatalog: Send + Sync {
    /// Creates or replaces a product: safe to replay.
    #[dual_write(write, key = product.sku)]
    async fn put_product(&self, product: Product) -> Result<(), CatalogError>;

    /// Deletes a product; one already gone is not an error.
    #[dual_write(write, key = sku)]
    async fn delete_product(&self, sku: String) -> Result<(), CatalogError>;

    #[dual_write(read, key = sku)]
    async fn get_product(&self, sku: String) -> Result<Option<Product>, CatalogError>;
}

/// The authoritative store: the table `<name>`.
pub struct ProductTable {
    pool: PgPool,
    table: String,
}

impl ProductTable {
    /// Creates the table; `name` must be an SQL identifier unique to the run.
    pub async fn create(pool: PgPool, name: &str) -> Result<ProductTable, sqlx::Error> {
        let table = name.to_owned();
        sqlx::query(&format!(
            "CREATE TABLE {table} (sku TEXT PRIMARY KEY, name TEXT NOT NULL,
                 price_cents BIGINT NOT NULL)"
        ))
        .execute(&pool)
        .await?;
        Ok(ProductTable { pool, table })
    }

    /// Every product, by SKU.
    pub async fn all(&self) -> Result<BTreeMap<String, Product>, CatalogError> {
        let query = format!("SELECT sku, name, price_cents FROM {}", self.table);
        let rows = sqlx::query(&query).fetch_all(&self.pool).await?;
        let products = rows.into_iter().map(from_row);
        products.map(|p| p.map(|p| (p.sku.clone(), p))).collect()
    }

    /// Drops the table.
    pub async fn drop_table(&self) -> Result<(), sqlx::Error> {
        let query = format!("DROP TABLE IF EXISTS {}", self.table);
        sqlx::query(&query).execute(&self.pool).await?;
        Ok(())
    }
}

fn from_row(row: PgRow) -> Result<Product, CatalogError> {
    Ok(Product {
        sku: row.try_get("sku")?,
        name: row.try_get("name")?,
        price_cents: row.try_get("price_cents")?,
    })
}

impl ProductCatalog for ProductTable {
    async fn put_product(&self, product: Product) -> Result<(), CatalogError> {
        sqlx::query(&format!(
            "INSERT INTO {} (sku, name, price_cents) VALUES ($1, $2, $3)
             ON CONFLICT (sku) DO UPDATE SET name = excluded.name,
                 price_cents = excluded.price_cents",
            self.table
        ))
        .bind(&product.sku)
        .bind(&product.name)
        .bind(product.price_cents)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_product(&self, sku: String) -> Result<(), CatalogError> {
        let query = format!("DELETE FROM {} WHERE sku = $1", self.table);
        sqlx::query(&query).bind(&sku).execute(&self.pool).await?;
        Ok(())
    }

    async fn get_product(&self, sku: String) -> Result<Option<Product>, CatalogError> {
        let query = format!(
            "SELECT sku, name, price_cents FROM {} WHERE sku = $1",
            self.table
        );
        let row = sqlx::query(&query)
            .bind(&sku)
            .fetch_optional(&self.pool)
            .await?;
        row.map(from_row).transpose()
    }
}

/// How the cache stands against the database, entry by entry.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Freshness {
    /// Cached and equal to the database's row.
    pub fresh: Vec<String>,
    /// Not cached (never written since, or expired): a miss, not an error.
    pub missing: Vec<String>,
    /// Cached with a value the database no longer has: `(cached, database)`.
    pub stale: Vec<(Product, Product)>,
    /// Cached although the database has no such product (deleted).
    pub orphaned: Vec<Product>,
}

impl Freshness {
    /// Compares every database row with the cache and every cache entry
    /// with the database.
    pub fn of(
        database: &BTreeMap<String, Product>,
        cache: &BTreeMap<String, Product>,
    ) -> Freshness {
        let mut freshness = Freshness::default();
        for (sku, row) in database {
            match cache.get(sku) {
                Some(cached) if cached == row => freshness.fresh.push(sku.clone()),
                Some(cached) => freshness.stale.push((cached.clone(), row.clone())),
                None => freshness.missing.push(sku.clone()),
            }
        }
        let orphans = cache.iter().filter(|(sku, _)| !database.contains_key(*sku));
        freshness.orphaned = orphans.map(|(_, cached)| cached.clone()).collect();
        freshness
    }

    /// No cache entry disagrees with the database (misses are fine).
    pub fn has_no_stale_values(&self) -> bool {
        self.stale.is_empty() && self.orphaned.is_empty()
    }
}
