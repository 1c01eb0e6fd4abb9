//! The shop's repository and its two sqlx implementations: PostgreSQL (the
//! old store) and MariaDB (the new one). `#[dual_write]` on the trait is
//! the only line the migration adds; neither implementation knows about
//! the other.
//!
//! The schema is the one a real service has: customers with a unique email
//! and an optional phone, orders with a decimal total, a status enum,
//! timestamps with a time zone and optional fields. The two databases spell
//! it differently: PostgreSQL has `NUMERIC`, `TIMESTAMPTZ` and an enum type;
//! MariaDB has `DECIMAL`, `TIMESTAMP(6)` (stored in UTC; sqlx sets the
//! session time zone to UTC) and an `ENUM` column.

use chrono::{DateTime, SubsecRound, Utc};
use dualwrite_runtime::dual_write;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::{MySqlPool, PgPool, Row};

/// A customer, as the service sees it in either database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    /// Unique across customers (in both databases).
    pub email: String,
    /// The name on the account.
    pub name: String,
    /// Optional.
    pub phone: Option<String>,
    /// When the account was opened.
    pub created_at: DateTime<Utc>,
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatus {
    Placed,
    Paid,
    Shipped,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 4] = [
        OrderStatus::Placed,
        OrderStatus::Paid,
        OrderStatus::Shipped,
        OrderStatus::Cancelled,
    ];

    /// The label both databases store.
    pub fn label(self) -> &'static str {
        match self {
            OrderStatus::Placed => "placed",
            OrderStatus::Paid => "paid",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    fn parse(label: &str) -> Result<OrderStatus, ShopError> {
        OrderStatus::ALL
            .into_iter()
            .find(|status| status.label() == label)
            .ok_or_else(|| ShopError(format!("unknown order status {label:?}")))
    }
}

/// An order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The customer who placed it.
    pub customer_id: i64,
    /// The total, in the shop's currency, to the cent.
    #[serde(with = "rust_decimal::serde::str")]
    pub total: Decimal,
    pub status: OrderStatus,
    pub placed_at: DateTime<Utc>,
    /// Set once shipped.
    pub shipped_at: Option<DateTime<Utc>>,
    /// The customer's note, if any.
    pub note: Option<String>,
}

/// A database error, as text (the wrapper compares and queues it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShopError(pub String);

impl From<sqlx::Error> for ShopError {
    fn from(error: sqlx::Error) -> Self {
        ShopError(error.to_string())
    }
}

/// The service's repository. Customer and order ids come from different
/// ranges (orders from [`ORDER_IDS`]), so that their writes are ordered
/// under keys of their own.
#[dual_write]
pub trait Shop: Send + Sync {
    #[dual_write(write, key = id)]
    async fn put_customer(&self, id: i64, customer: Customer) -> Result<(), ShopError>;

    #[dual_write(write, key = id)]
    async fn put_order(&self, id: i64, order: Order) -> Result<(), ShopError>;

    #[dual_write(write, key = id)]
    async fn delete_order(&self, id: i64) -> Result<(), ShopError>;

    #[dual_write(read)]
    async fn customer(&self, id: i64) -> Result<Option<Customer>, ShopError>;

    #[dual_write(read)]
    async fn order(&self, id: i64) -> Result<Option<Order>, ShopError>;
}

/// The first order id: customers are numbered below it.
pub const ORDER_IDS: i64 = 1_000_000;

/// The two tables of one run: `<prefix>_customers` and `<prefix>_orders`.
#[derive(Debug, Clone)]
pub struct Tables {
    pub customers: String,
    pub orders: String,
    /// PostgreSQL's enum type for the status.
    pub status_type: String,
}

impl Tables {
    pub fn new(prefix: &str) -> Tables {
        Tables {
            customers: format!("{prefix}_customers"),
            orders: format!("{prefix}_orders"),
            status_type: format!("{prefix}_status"),
        }
    }
}

/// Timestamps are kept to the microsecond, which both databases store.
pub fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

/// The old store: PostgreSQL.
pub struct PgShop {
    pub pool: PgPool,
    pub tables: Tables,
}

impl PgShop {
    /// Creates the tables (and the status type).
    pub async fn create(&self) -> Result<(), sqlx::Error> {
        let Tables {
            customers,
            orders,
            status_type,
        } = &self.tables;
        for statement in [
            format!("CREATE TYPE {status_type} AS ENUM ('placed', 'paid', 'shipped', 'cancelled')"),
            format!(
                "CREATE TABLE {customers} (id BIGINT PRIMARY KEY, email TEXT NOT NULL UNIQUE, \
                 name TEXT NOT NULL, phone TEXT, created_at TIMESTAMPTZ NOT NULL)"
            ),
            format!(
                "CREATE TABLE {orders} (id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL, \
                 total NUMERIC(12, 2) NOT NULL, status {status_type} NOT NULL, \
                 placed_at TIMESTAMPTZ NOT NULL, shipped_at TIMESTAMPTZ, note TEXT)"
            ),
        ] {
            sqlx::query(&statement).execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Drops what [`create`](Self::create) made.
    pub async fn drop_all(&self) -> Result<(), sqlx::Error> {
        let Tables {
            customers,
            orders,
            status_type,
        } = &self.tables;
        for statement in [
            format!("DROP TABLE IF EXISTS {orders}"),
            format!("DROP TABLE IF EXISTS {customers}"),
            format!("DROP TYPE IF EXISTS {status_type}"),
        ] {
            sqlx::query(&statement).execute(&self.pool).await?;
        }
        Ok(())
    }
}

impl Shop for PgShop {
    async fn put_customer(&self, id: i64, customer: Customer) -> Result<(), ShopError> {
        // PostgreSQL's ON CONFLICT names the key it resolves: an email
        // another customer holds fails with a unique violation.
        sqlx::query(&format!(
            "INSERT INTO {} (id, email, name, phone, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET email = excluded.email, name = excluded.name, \
             phone = excluded.phone, created_at = excluded.created_at",
            self.tables.customers
        ))
        .bind(id)
        .bind(customer.email)
        .bind(customer.name)
        .bind(customer.phone)
        .bind(customer.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn put_order(&self, id: i64, order: Order) -> Result<(), ShopError> {
        sqlx::query(&format!(
            "INSERT INTO {} (id, customer_id, total, status, placed_at, shipped_at, note) \
             VALUES ($1, $2, $3, $4::{}, $5, $6, $7) \
             ON CONFLICT (id) DO UPDATE SET customer_id = excluded.customer_id, \
             total = excluded.total, status = excluded.status, placed_at = excluded.placed_at, \
             shipped_at = excluded.shipped_at, note = excluded.note",
            self.tables.orders, self.tables.status_type
        ))
        .bind(id)
        .bind(order.customer_id)
        .bind(order.total)
        .bind(order.status.label())
        .bind(order.placed_at)
        .bind(order.shipped_at)
        .bind(order.note)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_order(&self, id: i64) -> Result<(), ShopError> {
        sqlx::query(&format!("DELETE FROM {} WHERE id = $1", self.tables.orders))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn customer(&self, id: i64) -> Result<Option<Customer>, ShopError> {
        let row = sqlx::query(&format!(
            "SELECT email, name, phone, created_at FROM {} WHERE id = $1",
            self.tables.customers
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| customer_from(&row)).transpose()
    }

    async fn order(&self, id: i64) -> Result<Option<Order>, ShopError> {
        let row = sqlx::query(&format!(
            "SELECT customer_id, total, status::text AS status, placed_at, shipped_at, note \
             FROM {} WHERE id = $1",
            self.tables.orders
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| order_from(&row)).transpose()
    }
}

/// The new store: MariaDB.
pub struct MyShop {
    pub pool: MySqlPool,
    pub tables: Tables,
}

impl MyShop {
    /// Creates the tables. The email is `utf8mb4_bin`, so that its
    /// uniqueness is PostgreSQL's (case-sensitive): under MariaDB's default
    /// collation `Ann@x` and `ann@x` would collide here and not there.
    pub async fn create(&self) -> Result<(), sqlx::Error> {
        let Tables {
            customers, orders, ..
        } = &self.tables;
        for statement in [
            format!(
                "CREATE TABLE {customers} (id BIGINT PRIMARY KEY, \
                 email VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL UNIQUE, \
                 name VARCHAR(255) NOT NULL, phone VARCHAR(32) NULL, \
                 created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))"
            ),
            format!(
                "CREATE TABLE {orders} (id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL, \
                 total DECIMAL(12, 2) NOT NULL, \
                 status ENUM('placed', 'paid', 'shipped', 'cancelled') NOT NULL, \
                 placed_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), \
                 shipped_at TIMESTAMP(6) NULL DEFAULT NULL, note TEXT NULL)"
            ),
        ] {
            sqlx::query(&statement).execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Drops what [`create`](Self::create) made.
    pub async fn drop_all(&self) -> Result<(), sqlx::Error> {
        for table in [&self.tables.orders, &self.tables.customers] {
            sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }
}

impl Shop for MyShop {
    async fn put_customer(&self, id: i64, customer: Customer) -> Result<(), ShopError> {
        // Not `INSERT .. ON DUPLICATE KEY UPDATE`: with two unique keys
        // (the id and the email) MariaDB updates the row of whichever key
        // collides, so a new customer reusing another's email would rewrite
        // that other customer. An update of this id, else an insert: an
        // email another customer holds fails, as it does in PostgreSQL.
        let mut tx = self.pool.begin().await?;
        let exists = sqlx::query(&format!(
            "SELECT id FROM {} WHERE id = ? FOR UPDATE",
            self.tables.customers
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        let statement = if exists {
            format!(
                "UPDATE {} SET email = ?, name = ?, phone = ?, created_at = ? WHERE id = ?",
                self.tables.customers
            )
        } else {
            format!(
                "INSERT INTO {} (email, name, phone, created_at, id) VALUES (?, ?, ?, ?, ?)",
                self.tables.customers
            )
        };
        sqlx::query(&statement)
            .bind(customer.email)
            .bind(customer.name)
            .bind(customer.phone)
            .bind(customer.created_at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn put_order(&self, id: i64, order: Order) -> Result<(), ShopError> {
        // The primary key is the table's only unique key, so the upsert
        // resolves on it.
        sqlx::query(&format!(
            "INSERT INTO {} (id, customer_id, total, status, placed_at, shipped_at, note) \
             VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE customer_id = VALUES(customer_id), total = VALUES(total), \
             status = VALUES(status), placed_at = VALUES(placed_at), \
             shipped_at = VALUES(shipped_at), note = VALUES(note)",
            self.tables.orders
        ))
        .bind(id)
        .bind(order.customer_id)
        .bind(order.total)
        .bind(order.status.label())
        .bind(order.placed_at)
        .bind(order.shipped_at)
        .bind(order.note)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_order(&self, id: i64) -> Result<(), ShopError> {
        sqlx::query(&format!("DELETE FROM {} WHERE id = ?", self.tables.orders))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn customer(&self, id: i64) -> Result<Option<Customer>, ShopError> {
        let row = sqlx::query(&format!(
            // sqlx reads a `_bin` column as bytes; the cast reads it as text.
            "SELECT CAST(email AS CHAR) AS email, name, phone, created_at FROM {} WHERE id = ?",
            self.tables.customers
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| customer_from(&row)).transpose()
    }

    async fn order(&self, id: i64) -> Result<Option<Order>, ShopError> {
        let row = sqlx::query(&format!(
            "SELECT customer_id, total, CAST(status AS CHAR) AS status, placed_at, shipped_at, note \
             FROM {} WHERE id = ?",
            self.tables.orders
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| order_from(&row)).transpose()
    }
}

fn customer_from<R: Row>(row: &R) -> Result<Customer, ShopError>
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> DateTime<Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    Ok(Customer {
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        phone: row.try_get("phone")?,
        created_at: row.try_get("created_at")?,
    })
}

fn order_from<R: Row>(row: &R) -> Result<Order, ShopError>
where
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Decimal: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> DateTime<Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<DateTime<Utc>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
{
    let status: String = row.try_get("status")?;
    Ok(Order {
        customer_id: row.try_get("customer_id")?,
        total: row.try_get("total")?,
        status: OrderStatus::parse(&status)?,
        placed_at: row.try_get("placed_at")?,
        shipped_at: row.try_get("shipped_at")?,
        note: row.try_get("note")?,
    })
}
