//! The shared stage in PostgreSQL (feature `postgres`): one row per
//! migration in `{prefix}stage`, beside the reconciliation queue's tables,
//! and the fenced instances' acknowledgements in `{prefix}stage_acks`. Both
//! are part of the queue's schema
//! ([`PostgresQueue::install_schema`](crate::queue::PostgresQueue::install_schema)).
//! Times (when a stage changed, when an acknowledgement expires) are the
//! database's clock, so instances whose clocks disagree still agree on
//! which acknowledgements are alive.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgPool;
use sqlx::Row;

use super::source::{
    stage_from_row, Acknowledgement, StageRecord, StageSource, StageSourceError, StoredStage,
};
use super::Stage;

/// A [`StageSource`] in PostgreSQL tables of the queue's schema, usually
/// from [`PostgresQueue::stage_source`](crate::queue::PostgresQueue::stage_source).
/// Supports fenced moves ([`StageHandle::with_fenced_source`](super::StageHandle::with_fenced_source)).
#[derive(Debug, Clone)]
pub struct PostgresStageSource {
    pool: PgPool,
    stage: String,
    acks: String,
    migration: String,
}

impl PostgresStageSource {
    /// The stage of `migration` in the tables under `prefix` (the queue's
    /// table prefix), on `pool`. The tables must exist.
    ///
    /// # Errors
    ///
    /// [`StageSourceError`] naming the missing table and how to create it.
    pub async fn open(
        pool: PgPool,
        prefix: &str,
        migration: &str,
    ) -> Result<Self, StageSourceError> {
        let source = PostgresStageSource {
            pool,
            stage: format!("{prefix}stage"),
            acks: format!("{prefix}stage_acks"),
            migration: migration.to_owned(),
        };
        let missing: Vec<String> = sqlx::query_scalar(
            "SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(t) IS NULL",
        )
        .bind(vec![source.stage.clone(), source.acks.clone()])
        .fetch_all(&source.pool)
        .await
        .map_err(|error| source.error("look for the stage tables", error))?;
        if !missing.is_empty() {
            return Err(StageSourceError::new(
                source.describe(),
                format!(
                    "{} missing; create the queue's schema with PostgresQueue::install_schema(&pool, {prefix:?})",
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

/// The DDL of the stage tables under `prefix`, run with the queue's schema.
pub(crate) fn stage_ddl(prefix: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {prefix}stage (
           migration text PRIMARY KEY,
           stage text NOT NULL,
           rollout_stage text,
           rollout_basis_points bigint,
           version bigint NOT NULL,
           reason text,
           changed_at timestamptz NOT NULL DEFAULT now(),
           moving_to text
         );
         CREATE TABLE IF NOT EXISTS {prefix}stage_acks (
           migration text NOT NULL,
           instance text NOT NULL,
           version bigint NOT NULL,
           expires_at timestamptz NOT NULL,
           PRIMARY KEY (migration, instance)
         );"
    )
}

#[async_trait]
impl StageSource for PostgresStageSource {
    async fn load(&self) -> Result<Option<StoredStage>, StageSourceError> {
        let row = sqlx::query(&format!(
            "SELECT stage, rollout_stage, rollout_basis_points, version, reason, \
               (extract(epoch from changed_at) * 1000000)::bigint, moving_to \
             FROM {} WHERE migration = $1",
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
        let rollout_stage = record.rollout.map(|rollout| rollout.stage().as_str());
        let basis_points = record
            .rollout
            .map(|rollout| i64::from(rollout.basis_points()));
        let expected = expected.map(|version| i64::try_from(version).unwrap_or(i64::MAX));
        let sql = match expected {
            None => format!(
                "INSERT INTO {} (stage, rollout_stage, rollout_basis_points, reason, moving_to, migration, version) \
                 VALUES ($1, $2, $3, $4, $5, $6, 1) ON CONFLICT (migration) DO NOTHING \
                 RETURNING version",
                self.stage
            ),
            Some(_) => format!(
                "UPDATE {} SET stage = $1, rollout_stage = $2, rollout_basis_points = $3, reason = $4, \
                   moving_to = $5, version = version + 1, changed_at = now() \
                 WHERE migration = $6 AND version = $7 RETURNING version",
                self.stage
            ),
        };
        let mut query = sqlx::query_scalar::<_, i64>(&sql)
            .bind(record.stage.as_str())
            .bind(rollout_stage)
            .bind(basis_points)
            .bind(&record.reason)
            .bind(record.moving_to.map(Stage::as_str))
            .bind(&self.migration);
        if let Some(expected) = expected {
            query = query.bind(expected);
        }
        let stored = query
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| self.error("store the stage", error))?;
        Ok(stored.map(|version| u64::try_from(version).unwrap_or(0)))
    }

    fn describe(&self) -> String {
        format!(
            "PostgreSQL table {} (migration `{}`)",
            self.stage, self.migration
        )
    }

    async fn acknowledge(
        &self,
        instance: &str,
        version: u64,
        ttl: Duration,
    ) -> Result<(), StageSourceError> {
        let ttl = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX);
        sqlx::query(&format!(
            "INSERT INTO {} (migration, instance, version, expires_at) \
             VALUES ($1, $2, $3, now() + make_interval(secs => $4::float8 / 1000000)) \
             ON CONFLICT (migration, instance) DO UPDATE \
             SET version = excluded.version, expires_at = excluded.expires_at",
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
            "SELECT instance, version FROM {} WHERE migration = $1 AND expires_at > now() \
             ORDER BY instance",
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
