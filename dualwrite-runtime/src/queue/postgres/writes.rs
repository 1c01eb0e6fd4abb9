//! The writes the trait's calls share: inserting an entry, removing one
//! (and giving its key's next entry a fresh turn), settling a lease.

use std::time::Duration;

use super::PostgresQueue;
use crate::queue::sql::{interval_micros, to_i64};
use crate::queue::{EntryId, Lease, NewEntry, QueueError};

impl PostgresQueue {
    /// Inserts an entry in one statement, so one round trip: its own
    /// transaction, which first takes the advisory locks that make ids
    /// follow the order appends commit (a subquery of volatile calls is
    /// evaluated before the row it feeds, and never folded into it: the
    /// plan's innermost node).
    pub(super) async fn insert(
        &self,
        entry: NewEntry,
        prepared: Option<Duration>,
    ) -> Result<EntryId, QueueError> {
        let (entries, turns) = (&self.tables.entries, &self.tables.aux);
        let line = format!(
            "{}/{}/{}",
            self.tables.prefix,
            entry.namespace,
            entry.target.as_str()
        );
        let (state, wait) = match prepared {
            Some(expiry) => ("prepared", interval_micros(expiry)),
            None => ("pending", 0),
        };
        let lock = if entry.is_unkeyed() {
            "pg_advisory_xact_lock(hashtext($11), 0)"
        } else {
            "pg_advisory_xact_lock_shared(hashtext($11), 0), \
             pg_advisory_xact_lock(hashtext($11), hashtext($3))"
        };
        let sql = format!(
            "INSERT INTO {entries} (namespace, target, key, method, version, payload, state, \
               orphaned, last_error, ready_at, turn) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, \
               now() + make_interval(secs => $10::float8 / 1000000), nextval('{turns}') \
             FROM (SELECT {lock}) AS locked \
             RETURNING id"
        );
        self.retried("append", || {
            sqlx::query_scalar::<_, i64>(&sql)
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
                .bind(&line)
                .fetch_one(&self.pool)
        })
        .await
        .map(|id| EntryId(u64::try_from(id).unwrap_or(0)))
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
        // One statement: its own transaction, one round trip.
        let removed = self
            .retried(what, || {
                let mut query = sqlx::query_scalar::<_, i64>(&sql);
                for bind in binds {
                    query = query.bind(*bind);
                }
                query.fetch_one(&self.pool)
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
