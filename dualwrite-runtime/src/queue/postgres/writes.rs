//! The writes the trait's calls share: inserting an entry, removing one
//! (and giving its key's next entry a fresh turn), settling a lease.

use std::time::Duration;

use super::statements::Failure;
use super::PostgresQueue;
use crate::queue::sql::{interval_micros, to_i64};
use crate::queue::{EntryId, Lease, NewEntry, QueueError};

impl PostgresQueue {
    pub(super) async fn insert(
        &self,
        entry: NewEntry,
        prepared: Option<Duration>,
    ) -> Result<EntryId, QueueError> {
        let entries = self.tables.entries.clone();
        let turns = self.tables.aux.clone();
        let prefix = self.tables.prefix.clone();
        let (state, wait) = match prepared {
            Some(expiry) => ("prepared", interval_micros(expiry)),
            None => ("pending", 0),
        };
        let entry = &entry;
        let (entries, turns, prefix) = (&entries, &turns, &prefix);
        self.transaction("append", move |mut tx| {
            Box::pin(async move {
                let result: Result<_, Failure> = async {
                let line = format!("{prefix}/{}/{}", entry.namespace, entry.target.as_str());
                let lock = if entry.is_unkeyed() {
                    "SELECT pg_advisory_xact_lock(hashtext($1), 0)"
                } else {
                    "SELECT pg_advisory_xact_lock_shared(hashtext($1), 0), \
                     pg_advisory_xact_lock(hashtext($1), hashtext($2))"
                };
                sqlx::query(lock)
                    .bind(&line)
                    .bind(entry.key.as_str())
                    .execute(&mut *tx)
                    .await?;
                let id: i64 = sqlx::query_scalar(&format!(
                    "INSERT INTO {entries} (namespace, target, key, method, version, payload, state, \
                       orphaned, last_error, ready_at, turn) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now() + make_interval(secs => $10::float8 / 1000000), nextval('{turns}')) \
                     RETURNING id"
                ))
                .bind(&entry.namespace)
                .bind(entry.target.as_str())
                .bind(entry.key.as_str())
                .bind(&entry.method)
                .bind(i64::from(entry.version))
                .bind(&entry.payload)
                .bind(state)
                .bind(entry.uncertain)
                .bind(&entry.reason)
                .bind(wait)
                .fetch_one(&mut *tx)
                .await?;
                Ok(EntryId(u64::try_from(id).unwrap_or(0)))
                }
                .await;
                (tx, result)
            })
        })
        .await
    }

    /// Deletes the entry selected by `condition` (on `id = $1`, further
    /// parameters after) and gives the next entry of its key a fresh turn,
    /// so that it waits behind the heads of other keys; returns whether a
    /// row was deleted.
    pub(super) async fn remove(
        &self,
        what: &str,
        condition: &str,
        binds: &[i64],
    ) -> Result<bool, QueueError> {
        let entries = &self.tables.entries;
        let turns = &self.tables.aux;
        let sql = format!(
            "WITH gone AS (DELETE FROM {entries} WHERE id = $1 AND {condition} \
               RETURNING id, namespace, target, key), \
             next AS (SELECT min(n.id) AS id FROM {entries} n, gone \
               WHERE n.namespace = gone.namespace AND n.target = gone.target AND n.key = gone.key \
               AND n.id > gone.id), \
             bump AS (UPDATE {entries} SET turn = nextval('{turns}') \
               WHERE id = (SELECT id FROM next) AND state <> 'prepared' RETURNING 1) \
             SELECT count(*) FROM gone"
        );
        let binds = binds.to_vec();
        let (sql, binds) = (&sql, &binds);
        let removed = self
            .transaction(what, move |mut tx| {
                Box::pin(async move {
                    let result: Result<_, Failure> = async {
                        let mut query = sqlx::query_scalar::<_, i64>(sql);
                        for bind in binds {
                            query = query.bind(*bind);
                        }
                        Ok(query.fetch_one(&mut *tx).await?)
                    }
                    .await;
                    (tx, result)
                })
            })
            .await?;
        Ok(removed > 0)
    }

    /// Applies `set` to the entry leased with `lease`; [`QueueError::LeaseLost`]
    /// when the claim is no longer held. `$1` is the id, `$2` the token,
    /// `$3` an interval in microseconds, `$4` a text.
    pub(super) async fn settle(
        &self,
        what: &str,
        lease: Lease,
        set: &str,
        micros: i64,
        text: &str,
    ) -> Result<(), QueueError> {
        let sql = format!(
            "UPDATE {} SET {set} WHERE id = $1 AND lease_token = $2 AND state = 'leased' \
             AND $3::bigint IS NOT NULL AND $4::text IS NOT NULL",
            self.tables.entries
        );
        let changed = self
            .execute(
                what,
                &sql,
                &[to_i64(lease.id.0), to_i64(lease.token), micros],
                Some(text),
            )
            .await?;
        if changed == 0 {
            return Err(QueueError::LeaseLost(lease.id));
        }
        Ok(())
    }
}
