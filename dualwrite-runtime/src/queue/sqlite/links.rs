//! The chains between a key's entries (`prev_id`, and the key's tail in
//! `streams`), checked at open and rebuilt if rows were inserted, edited or
//! deleted by hand.

use sqlx::SqliteConnection;

use super::error::{could_not, BackendError};

/// Counts broken links between entries; 0 for a healthy file.
const CHECK_LINKS: &str = "SELECT \
    (SELECT count(*) FROM entries e WHERE e.prev_id IS NOT NULL AND e.prev_id <> 0 AND NOT EXISTS \
       (SELECT 1 FROM entries p WHERE p.id = e.prev_id AND p.namespace = e.namespace \
        AND p.target = e.target AND p.key = e.key AND p.id < e.id AND p.prev_id IS NOT 0)) \
  + (SELECT count(*) FROM (SELECT 1 FROM entries WHERE prev_id IS NOT NULL AND prev_id <> 0 \
       GROUP BY prev_id HAVING count(*) > 1)) \
  + (SELECT count(*) FROM (SELECT 1 FROM entries WHERE prev_id IS NULL \
       GROUP BY namespace, target, key HAVING count(*) > 1)) \
  + (SELECT count(*) FROM streams s WHERE NOT EXISTS (SELECT 1 FROM entries e \
       WHERE e.id = s.tail_id AND e.namespace = s.namespace AND e.target = s.target AND e.key = s.key \
       AND e.prev_id IS NOT 0)) \
  + (SELECT count(*) FROM entries e WHERE e.prev_id IS NOT 0 AND NOT EXISTS (SELECT 1 FROM streams s \
       WHERE s.namespace = e.namespace AND s.target = e.target AND s.key = e.key AND s.tail_id >= e.id))";

/// Rebuilds every link from the entries' ids and keys.
const REPAIR_LINKS: &str = "\
CREATE INDEX entries_repair ON entries (namespace, target, key, id);
UPDATE entries SET prev_id = (SELECT max(p.id) FROM entries p WHERE p.namespace = entries.namespace
    AND p.target = entries.target AND p.key = entries.key AND p.id < entries.id AND p.prev_id IS NOT 0)
    WHERE prev_id IS NOT 0;
DELETE FROM streams;
INSERT INTO streams (namespace, target, key, tail_id)
    SELECT namespace, target, key, max(id) FROM entries WHERE prev_id IS NOT 0
    GROUP BY namespace, target, key;
DROP INDEX entries_repair;";

/// Checks that every key's entries form one chain in id order and rebuilds
/// the links if not: rows deleted or edited by hand (or a bug) must not
/// block or reorder a key. Runs inside the transaction that checks the
/// schema.
pub(super) async fn repair(conn: &mut SqliteConnection, shown: &str) -> Result<(), BackendError> {
    let context = |what: &str| could_not(shown, what);
    let broken: i64 = sqlx::query_scalar(CHECK_LINKS)
        .fetch_one(&mut *conn)
        .await
        .map_err(|error| BackendError::new(context("check the links between entries"), error))?;
    if broken > 0 {
        tracing::warn!(
            path = shown,
            broken,
            "repairing the links between SQLite queue entries (rows were edited by hand?)"
        );
        sqlx::raw_sql(REPAIR_LINKS)
            .execute(&mut *conn)
            .await
            .map_err(|error| {
                BackendError::new(context("repair the links between entries"), error)
            })?;
    }
    Ok(())
}
