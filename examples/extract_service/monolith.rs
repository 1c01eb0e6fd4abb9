//! The monolith's own implementation: profiles in PostgreSQL.
//!
//! It accepts any email, as it always has; the new service validates them,
//! which is how a permanent rejection arises in the example.

use dualwrite_runtime::operation_id;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::Row;

use crate::profiles::{Profile, ProfileError, ProfileRepository};

/// Profiles in the table `<name>` and the ids of the increments applied in
/// `<name>_applied` (the inbox pattern).
pub struct MonolithProfiles {
    pool: PgPool,
    table: String,
}

impl MonolithProfiles {
    /// Creates the tables; `name` must be an SQL identifier unique to this
    /// run ([`run_name`](crate::local_services::run_name)).
    pub async fn create(pool: PgPool, name: &str) -> Result<MonolithProfiles, sqlx::Error> {
        let table = name.to_owned();
        sqlx::query(&format!(
            "CREATE TABLE {table} (id BIGINT PRIMARY KEY, email TEXT NOT NULL,
                 name TEXT NOT NULL, points BIGINT NOT NULL DEFAULT 0)"
        ))
        .execute(&pool)
        .await?;
        sqlx::query(&format!(
            "CREATE TABLE {table}_applied (operation UUID PRIMARY KEY)"
        ))
        .execute(&pool)
        .await?;
        Ok(MonolithProfiles { pool, table })
    }

    /// Drops the tables.
    pub async fn drop_tables(&self) -> Result<(), sqlx::Error> {
        let table = &self.table;
        sqlx::query(&format!("DROP TABLE IF EXISTS {table}, {table}_applied"))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn from_row(row: PgRow) -> Result<Profile, ProfileError> {
    Ok(Profile {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        points: row.try_get("points")?,
    })
}

impl ProfileRepository for MonolithProfiles {
    async fn save_profile(&self, profile: Profile) -> Result<(), ProfileError> {
        let table = &self.table;
        sqlx::query(&format!(
            "INSERT INTO {table} (id, email, name) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET email = excluded.email, name = excluded.name"
        ))
        .bind(profile.id)
        .bind(&profile.email)
        .bind(&profile.name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_profile(&self, id: i64) -> Result<(), ProfileError> {
        let table = &self.table;
        sqlx::query(&format!("DELETE FROM {table} WHERE id = $1"))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn add_loyalty_points(&self, id: i64, points: i64) -> Result<(), ProfileError> {
        let table = &self.table;
        let mut tx = self.pool.begin().await?;
        // The inbox: the id is recorded in the transaction that adds the
        // points, so a replay of an applied increment finds it and stops.
        if let Some(op) = operation_id() {
            let recorded = sqlx::query(&format!(
                "INSERT INTO {table}_applied (operation) VALUES ($1::uuid) ON CONFLICT DO NOTHING"
            ))
            .bind(op.to_string())
            .execute(&mut *tx)
            .await?;
            if recorded.rows_affected() == 0 {
                return Ok(());
            }
        }
        let added = sqlx::query(&format!(
            "UPDATE {table} SET points = points + $1 WHERE id = $2"
        ))
        .bind(points)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if added.rows_affected() == 0 {
            return Err(ProfileError::NotFound(id));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_profile(&self, id: i64) -> Result<Option<Profile>, ProfileError> {
        let table = &self.table;
        let query = format!("SELECT id, email, name, points FROM {table} WHERE id = $1");
        let row = sqlx::query(&query)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(from_row).transpose()
    }

    async fn list_profiles(&self) -> Result<Vec<Profile>, ProfileError> {
        let table = &self.table;
        let query = format!("SELECT id, email, name, points FROM {table} ORDER BY id");
        let rows = sqlx::query(&query).fetch_all(&self.pool).await?;
        rows.into_iter().map(from_row).collect()
    }
}
