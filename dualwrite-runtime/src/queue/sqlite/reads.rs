//! The read-only requests (`has_work` across processes, `dead_letters`,
//! `stats`, `key_entries`), served from the read pool beside the writer: in WAL mode they
//! never wait for it.

use std::path::Path;

use sqlx::SqlitePool;

use super::error::{could_not, BackendError};
use super::request::{Read, ReadReply};
use super::rows::{read_dead_letter, read_queued, read_stats};

/// Answers `read` from `pool` on a task of its own.
pub(super) fn spawn(pool: &SqlitePool, path: &Path, read: Read) {
    let pool = pool.clone();
    let path = path.to_path_buf();
    tokio::spawn(async move {
        let what = read.describe();
        let context = || could_not(path.display(), what);
        match read {
            Read::HasWork {
                namespace,
                target,
                key,
                reply,
            } => {
                let found = sqlx::query_scalar::<_, bool>(
                    // Unkeyed: any key of the namespace; keyed: the key or
                    // the namespace's unkeyed writes.
                    "SELECT EXISTS (SELECT 1 FROM streams WHERE namespace = ?1 AND target = ?2 \
                     AND (?3 = '*' OR key = ?3 OR key = '*'))",
                )
                .bind(namespace)
                .bind(target.as_str())
                .bind(key.as_str().to_owned())
                .fetch_one(&pool)
                .await;
                answer(reply, found, context);
            }
            Read::DeadLetters(reply) => {
                let rows = sqlx::query(
                    "SELECT id, namespace, target, key, method, version, payload, attempts, \
                     last_error, enqueued_at, died_at FROM entries WHERE state = 'dead' ORDER BY id",
                )
                .fetch_all(&pool)
                .await;
                let letters = rows.map(|rows| rows.iter().map(read_dead_letter).collect());
                answer(reply, letters, context);
            }
            Read::Stats(reply) => {
                let rows = sqlx::query(
                    "SELECT target, state, count(*), sum(prev_id IS NULL), min(enqueued_at) \
                     FROM entries GROUP BY target, state",
                )
                .fetch_all(&pool)
                .await;
                answer(reply, rows.map(|rows| read_stats(&rows)), context);
            }
            Read::KeyEntries {
                namespace,
                target,
                key,
                reply,
            } => {
                // An operator's request: a scan (no index covers an
                // entry's key), in id order, which is the line's order.
                let rows = sqlx::query(
                    "SELECT id, state, method, version, payload, attempts, last_error, \
                     enqueued_at, orphaned FROM entries \
                     WHERE namespace = ? AND target = ? AND key = ? ORDER BY id",
                )
                .bind(namespace)
                .bind(target.as_str())
                .bind(key.as_str().to_owned())
                .fetch_all(&pool)
                .await;
                let entries = rows.map(|rows| rows.iter().map(read_queued).collect());
                answer(reply, entries, context);
            }
        }
    });
}

fn answer<T>(
    reply: ReadReply<T>,
    result: Result<T, sqlx::Error>,
    context: impl FnOnce() -> String,
) {
    let _ = reply.send(result.map_err(|error| BackendError::new(context(), error).into()));
}
