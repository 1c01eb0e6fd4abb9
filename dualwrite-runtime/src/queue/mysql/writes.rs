//! The writes the trait's calls share: inserting an entry, removing one
//! (and giving its key's next entry a fresh turn), settling a lease.

use std::time::Duration;

use super::statements::{as_text, bind_all, Arg};
use super::{MySqlQueue, MAX_ERROR, MAX_KEY, MAX_NAMESPACE, NOW, SERVER};
use crate::queue::sql::{interval_micros, to_i64};
use crate::queue::{EntryId, Lease, NewEntry, QueueError};

impl MySqlQueue {
    pub(super) async fn insert(
        &self,
        entry: NewEntry,
        prepared: Option<Duration>,
    ) -> Result<EntryId, QueueError> {
        if entry.namespace.chars().count() > MAX_NAMESPACE {
            return Err(QueueError::Backend(
                format!(
                    "{SERVER} queue: namespace {:?} is longer than {MAX_NAMESPACE} characters",
                    entry.namespace
                )
                .into(),
            ));
        }
        if entry.key.as_str().chars().count() > MAX_KEY {
            return Err(QueueError::Backend(
                format!("{SERVER} queue: a key of namespace {:?} is longer than {MAX_KEY} characters; the queue's tables hold keys up to that length", entry.namespace).into(),
            ));
        }
        let (state, wait) = match prepared {
            Some(expiry) => ("prepared", interval_micros(expiry)),
            None => ("pending", 0),
        };
        let lock = format!(
            "INSERT INTO {} (namespace, target) VALUES (?, ?) ON DUPLICATE KEY UPDATE namespace = namespace",
            self.tables.aux
        );
        let insert = format!(
            "INSERT INTO {} (namespace, target, `key`, method, version, payload, state, orphaned, \
               last_error, enqueued_at, ready_at, turn) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, {NOW}, {NOW} + ?, {NOW})",
            self.tables.entries
        );
        let last_error: String = entry.reason.chars().take(MAX_ERROR).collect();
        self.transaction("append", move |conn| {
            let (lock, insert, entry, last_error) = (
                lock.clone(),
                insert.clone(),
                entry.clone(),
                last_error.clone(),
            );
            Box::pin(async move {
                sqlx::query(&lock)
                    .bind(&entry.namespace)
                    .bind(entry.target.as_str())
                    .execute(&mut *conn)
                    .await?;
                let done = sqlx::query(&insert)
                    .bind(&entry.namespace)
                    .bind(entry.target.as_str())
                    .bind(entry.key.as_str())
                    .bind(&entry.method)
                    .bind(i64::from(entry.version))
                    .bind(&entry.payload)
                    .bind(state)
                    .bind(entry.uncertain)
                    .bind(&last_error)
                    .bind(wait)
                    .execute(&mut *conn)
                    .await?;
                Ok(EntryId(done.last_insert_id()))
            })
        })
        .await
    }

    /// Deletes the entry `id` when it meets `condition` (its `?`s bound to
    /// `args`) and gives the next entry of its key a fresh turn, so that it
    /// waits behind the heads of other keys; returns whether a row was
    /// deleted.
    pub(super) async fn remove(
        &self,
        what: &str,
        id: EntryId,
        condition: &str,
        args: Vec<Arg>,
    ) -> Result<bool, QueueError> {
        let entries = &self.tables.entries;
        let find = format!(
            "SELECT {}, {}, {} FROM {entries} WHERE id = ? AND {condition} FOR UPDATE",
            as_text("namespace"),
            as_text("target"),
            as_text("key")
        );
        let delete = format!("DELETE FROM {entries} WHERE id = ?");
        let next = format!(
            "SELECT MIN(id) FROM {entries} WHERE namespace = ? AND target = ? AND `key` = ? AND id > ?"
        );
        let bump =
            format!("UPDATE {entries} SET turn = {NOW} WHERE id = ? AND state <> 'prepared'");
        let id = to_i64(id.0);
        self.transaction(what, move |conn| {
            let (find, delete, next, bump, args) = (
                find.clone(),
                delete.clone(),
                next.clone(),
                bump.clone(),
                args.clone(),
            );
            Box::pin(async move {
                let line: Option<(String, String, String)> =
                    bind_all(sqlx::query(&find).bind(id), &args)
                        .try_map(|row: sqlx::mysql::MySqlRow| {
                            use sqlx::Row;
                            Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
                        })
                        .fetch_optional(&mut *conn)
                        .await?;
                let Some((namespace, target, key)) = line else {
                    return Ok(false);
                };
                sqlx::query(&delete).bind(id).execute(&mut *conn).await?;
                let successor: Option<i64> = sqlx::query_scalar(&next)
                    .bind(&namespace)
                    .bind(&target)
                    .bind(&key)
                    .bind(id)
                    .fetch_one(&mut *conn)
                    .await?;
                if let Some(successor) = successor {
                    sqlx::query(&bump)
                        .bind(successor)
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(true)
            })
        })
        .await
    }

    /// Applies `set` (its `?`s bound to `args`) to the entry leased with
    /// `lease`; [`QueueError::LeaseLost`] when the claim is no longer held.
    pub(super) async fn settle(
        &self,
        what: &str,
        lease: Lease,
        set: &str,
        mut args: Vec<Arg>,
    ) -> Result<(), QueueError> {
        let sql = format!(
            "UPDATE {} SET {set} WHERE id = ? AND lease_token = ? AND state = 'leased'",
            self.tables.entries
        );
        args.push(Arg::Int(to_i64(lease.id.0)));
        args.push(Arg::Int(to_i64(lease.token)));
        if self.execute(what, sql, args).await? == 0 {
            return Err(QueueError::LeaseLost(lease.id));
        }
        Ok(())
    }
}
