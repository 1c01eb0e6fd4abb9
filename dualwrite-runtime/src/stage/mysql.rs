//! The shared stage in MySQL or MariaDB (feature `mysql`): one row per
//! migration in `{prefix}stage`, beside the reconciliation queue's tables,
//! and the fenced instances' acknowledgements in `{prefix}stage_acks`. Both
//! are part of the queue's schema
//! ([`MySqlQueue::install_schema`](crate::queue::MySqlQueue::install_schema)).
//! Times are the database's clock (microseconds since the epoch, from
//! `UNIX_TIMESTAMP(NOW(6))`), so instances whose clocks disagree still agree
//! on which acknowledgements are alive.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::mysql::MySqlPool;
use sqlx::Row;

use super::source::{
    stage_from_row, Acknowledgement, StageRecord, StageSource, StageSourceError, StoredStage,
};
use super::Stage;

/// The database clock in microseconds since the epoch.
const NOW_MICROS: &str = "CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)";

/// A [`StageSource`] in MySQL/MariaDB tables of the queue's schema, usually
/// from [`MySqlQueue::stage_source`](crate::queue::MySqlQueue::stage_source).
/// Supports fenced moves ([`StageHandle::with_fenced_source`](super::StageHandle::with_fenced_source)).
#[derive(Debug, Clone)]
pub struct MySqlStageSource {
    pool: MySqlPool,
    stage: String,
    acks: String,
    migration: String,
}

impl MySqlStageSource {
    /// The stage of `migration` in the tables under `prefix` (the queue's
    /// table prefix), on `pool`. The tables must exist.
    ///
    /// # Errors
    ///
    /// [`StageSourceError`] naming the missing table and how to create it.
    pub async fn open(
        pool: MySqlPool,
        prefix: &str,
        migration: &str,
    ) -> Result<Self, StageSourceError> {
        let source = MySqlStageSource {
            pool,
            stage: format!("{prefix}stage"),
            acks: format!("{prefix}stage_acks"),
            migration: migration.to_owned(),
        };
        let mut missing = Vec::new();
        for table in [&source.stage, &source.acks] {
            let found: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_name = ?",
            )
            .bind(table)
            .fetch_one(&source.pool)
            .await
            .map_err(|error| source.error("look for the stage tables", error))?;
            if found == 0 {
                missing.push(table.clone());
            }
        }
        if !missing.is_empty() {
            return Err(StageSourceError::new(
                source.describe(),
                format!(
                    "{} missing; create the queue's schema with MySqlQueue::install_schema(&pool, {prefix:?})",
                    missing.join(", ")
                ),
            ));
        }
        Ok(source)
    }

    fn error(&self, what: &str, error: impl std::fmt::Display) -> StageSourceError {
        StageSourceError::new(self.describe(), format!("could not {what}: {error}"))
    }
}

/// The DDL of the stage tables under `prefix`, one statement each, run with
/// the queue's schema.
pub(crate) fn stage_ddl(prefix: &str) -> [String; 2] {
    [
        format!(
            "CREATE TABLE IF NOT EXISTS {prefix}stage (
               migration VARCHAR(190) NOT NULL PRIMARY KEY,
               stage VARCHAR(16) NOT NULL,
               rollout_stage VARCHAR(16) NULL,
               rollout_basis_points BIGINT NULL,
               version BIGINT NOT NULL,
               reason TEXT NULL,
               changed_at BIGINT NOT NULL,
               moving_to VARCHAR(16) NULL
             ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {prefix}stage_acks (
               migration VARCHAR(190) NOT NULL,
               instance VARCHAR(190) NOT NULL,
               version BIGINT NOT NULL,
               expires_at BIGINT NOT NULL,
               PRIMARY KEY (migration, instance)
             ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        ),
    ]
}

/// `sql` with the record's columns and the migration bound, in the order
/// both statements of `store` name them.
fn bound<'q>(
    sql: &'q str,
    record: &'q StageRecord,
    migration: &'q str,
) -> sqlx::query::Query<'q, sqlx::MySql, sqlx::mysql::MySqlArguments> {
    sqlx::query(sql)
        .bind(record.stage.as_str())
        .bind(record.rollout.map(|rollout| rollout.stage().as_str()))
        .bind(
            record
                .rollout
                .map(|rollout| i64::from(rollout.basis_points())),
        )
        .bind(record.reason.as_deref())
        .bind(record.moving_to.map(Stage::as_str))
        .bind(migration)
}

/// MySQL's "duplicate entry" error.
fn is_duplicate(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|error| error.code())
        .is_some_and(|code| code == "23000")
}

#[async_trait]
impl StageSource for MySqlStageSource {
    async fn load(&self) -> Result<Option<StoredStage>, StageSourceError> {
        // Text columns are binary-collated; CAST reads them as text.
        let row = sqlx::query(&format!(
            "SELECT CAST(stage AS CHAR), CAST(rollout_stage AS CHAR), rollout_basis_points, \
               version, CAST(reason AS CHAR), changed_at, CAST(moving_to AS CHAR) \
             FROM {} WHERE migration = ?",
            self.stage
        ))
        .bind(&self.migration)
        .fetch_optional(&self.pool)
        .await
        .map_err(|error| self.error("read the stage", error))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let read = |error: sqlx::Error| self.error("read the stage row", error);
        stage_from_row!(row, read, Duration::from_micros, &self.describe()).map(Some)
    }

    async fn store(
        &self,
        expected: Option<u64>,
        record: &StageRecord,
    ) -> Result<Option<u64>, StageSourceError> {
        let bind = |sql| bound(sql, record, &self.migration);
        let Some(expected) = expected else {
            let insert = format!(
                "INSERT INTO {} (stage, rollout_stage, rollout_basis_points, reason, moving_to, \
                   migration, version, changed_at) VALUES (?, ?, ?, ?, ?, ?, 1, {NOW_MICROS})",
                self.stage
            );
            return match bind(&insert).execute(&self.pool).await {
                Ok(_) => Ok(Some(1)),
                Err(error) if is_duplicate(&error) => Ok(None),
                Err(error) => Err(self.error("store the stage", error)),
            };
        };
        let update = format!(
            "UPDATE {} SET stage = ?, rollout_stage = ?, rollout_basis_points = ?, reason = ?, \
               moving_to = ?, version = version + 1, changed_at = {NOW_MICROS} \
             WHERE migration = ? AND version = ?",
            self.stage
        );
        // Every matching row changes (its version does), so the affected
        // count is 1 exactly when the expected version was current.
        let updated = bind(&update)
            .bind(i64::try_from(expected).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await
            .map_err(|error| self.error("store the stage", error))?;
        Ok((updated.rows_affected() == 1).then_some(expected + 1))
    }

    fn describe(&self) -> String {
        format!(
            "MySQL table {} (migration `{}`)",
            self.stage, self.migration
        )
    }

    async fn acknowledge(
        &self,
        instance: &str,
        version: u64,
        ttl: Duration,
    ) -> Result<(), StageSourceError> {
        let ttl = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX / 2);
        sqlx::query(&format!(
            "INSERT INTO {} (migration, instance, version, expires_at) \
             VALUES (?, ?, ?, {NOW_MICROS} + ?) \
             ON DUPLICATE KEY UPDATE version = VALUES(version), expires_at = VALUES(expires_at)",
            self.acks
        ))
        .bind(&self.migration)
        .bind(instance)
        .bind(i64::try_from(version).unwrap_or(i64::MAX))
        .bind(ttl)
        .execute(&self.pool)
        .await
        .map_err(|error| self.error("acknowledge the stage", error))?;
        Ok(())
    }

    async fn acknowledgements(&self) -> Result<Vec<Acknowledgement>, StageSourceError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(&format!(
            "SELECT CAST(instance AS CHAR), version FROM {} \
             WHERE migration = ? AND expires_at > {NOW_MICROS} ORDER BY instance",
            self.acks
        ))
        .bind(&self.migration)
        .fetch_all(&self.pool)
        .await
        .map_err(|error| self.error("read the instances' acknowledgements", error))?;
        Ok(rows
            .into_iter()
            .map(|(instance, version)| Acknowledgement {
                instance,
                version: u64::try_from(version).unwrap_or(0),
            })
            .collect())
    }
}
