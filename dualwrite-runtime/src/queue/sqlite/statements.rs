//! The SQL statements the writer runs more than once or builds: the
//! multi-row inserts, the upkeep of the keys' tails in `streams`, commits of
//! prepared entries, claims and removals. The one-off statements of a single
//! request stay beside the code that binds them.

use std::sync::OnceLock;

/// The most rows one multi-row `INSERT` holds (13 parameters a row).
pub(super) const MAX_INSERT_ROWS: usize = 256;

/// A statement, and the same preceded by `BEGIN IMMEDIATE` for when it
/// opens the transaction (one round trip less).
pub(super) struct Opening {
    pub(super) plain: &'static str,
    pub(super) begin: &'static str,
}

macro_rules! opening {
    ($($sql:expr),+ $(,)?) => {
        &Opening {
            plain: concat!($($sql),+),
            begin: concat!("BEGIN IMMEDIATE; ", $($sql),+),
        }
    };
}

/// Points the `streams` row of every key with an entry selected by `$ids`
/// (a condition on `entries`) at the key's newest such entry, creating the
/// row if the key had none.
macro_rules! update_tails {
    ($ids:literal) => {
        concat!(
            "INSERT INTO streams (namespace, target, key, tail_id) \
             SELECT namespace, target, key, max(id) FROM entries WHERE ",
            $ids,
            " GROUP BY namespace, target, key \
             ON CONFLICT (namespace, target, key) DO UPDATE SET tail_id = excluded.tail_id"
        )
    };
}

/// [`update_tails!`] for the entries after an id (parameter: the id).
pub(super) const UPDATE_TAILS_AFTER: &str = update_tails!("id > ?");

/// [`update_tails!`] for one entry (parameter: its id).
pub(super) const UPDATE_TAIL_OF: &str = update_tails!("id = ?");

/// The entries after an id (parameter: the id) that are the heads of their
/// keys: inserted where the key had no entry, so its `streams` row is new.
pub(super) const HEADS_AFTER: &str = "SELECT id FROM entries WHERE id > ? AND prev_id IS NULL";

/// Makes prepared entries pending, ready now. Parameters: the time, the
/// turn, the JSON list of ids.
pub(super) const COMMIT_PREPARED: &Opening = opening!(
    "UPDATE entries SET state = 'pending', ready_at = ?, turn = ? \
     WHERE state = 'prepared' AND id IN (SELECT value FROM json_each(?));"
);

/// Deletes a prepared entry (parameter: its id), returning its key.
pub(super) const ABORT_PREPARED: &Opening = opening!(
    "DELETE FROM entries WHERE id = ? AND (state = 'prepared' OR (state = 'leased' AND orphaned = 1)) \
     RETURNING namespace, target, key"
);

/// True for a head (`entries`) that must wait for another key's entry: an
/// unkeyed head for any older entry of another key in its namespace and
/// target, a keyed head for an older unkeyed entry (through the partial
/// index `entries_unkeyed`). Entries taken out of line (`prev_id = 0`) do
/// not count.
macro_rules! barrier {
    () => {
        "(entries.key = '*' AND EXISTS (SELECT 1 FROM entries k WHERE k.id < entries.id \
           AND k.namespace = entries.namespace AND k.target = entries.target \
           AND k.key <> '*' AND k.prev_id IS NOT 0)) \
         OR (entries.key <> '*' AND EXISTS (SELECT 1 FROM entries b WHERE b.key = '*' \
           AND b.namespace = entries.namespace AND b.target = entries.target \
           AND b.id < entries.id AND b.prev_id IS NOT 0))"
    };
}

/// The name of the first column of [`CLAIM`]'s counts row.
pub(super) const COUNTS_COLUMN: &str = "next_ready_at";

/// Claims heads of keys: first the earliest head not ready yet and the
/// number of ready heads (up to the limit + 1), in a row whose first column
/// is [`COUNTS_COLUMN`], then the lease of up to `limit` of them, in the
/// order they became ready.
pub(super) const CLAIM: &Opening = opening!(
    "SELECT \
       (SELECT min(ready_at) FROM entries \
         WHERE namespace = ? AND prev_id IS NULL AND state <> 'dead' AND ready_at > ?) \
         AS next_ready_at, \
       (SELECT count(*) FROM (SELECT 1 FROM entries \
         WHERE namespace = ? AND prev_id IS NULL AND state <> 'dead' AND ready_at <= ? \
         AND NOT (",
    barrier!(),
    ") LIMIT ?)) AS ready_heads; \
     UPDATE entries SET state = 'leased', lease_token = lease_token + 1, ready_at = ?, turn = ?, \
       orphaned = (orphaned OR state = 'prepared') \
     WHERE id IN (SELECT id FROM entries \
       WHERE namespace = ? AND prev_id IS NULL AND state <> 'dead' AND ready_at <= ? \
       AND NOT (",
    barrier!(),
    ") ORDER BY ready_at, turn LIMIT ?) \
     RETURNING id, lease_token, target, key, method, version, payload, attempts, \
       enqueued_at, last_error, namespace, orphaned"
);

/// Removes the entries `e` that `$selected` (a join condition between
/// `json_each(?) j` and `entries e`) picks out of a JSON list: makes each
/// one's successor the head of its key, ready now (parameters: time, turn)
/// unless it is still prepared (a prepared entry keeps its own expiry as its
/// `ready_at`: it becomes an orphan only when that passes, never because the
/// entry ahead of it went away), drops the `streams` row of keys left empty
/// (returning their keys) and deletes the entries (returning their ids and
/// lease tokens).
/// The JSON list is bound three times.
macro_rules! remove {
    ($selected:literal) => {
        opening!(
            "UPDATE entries SET prev_id = NULL, \
               ready_at = CASE WHEN state = 'prepared' THEN ready_at ELSE ? END, \
               turn = CASE WHEN state = 'prepared' THEN turn ELSE ? END WHERE prev_id IN ( \
               SELECT e.id FROM json_each(?) j JOIN entries e ON ",
            $selected,
            "); \
             DELETE FROM streams WHERE (namespace, target, key, tail_id) IN ( \
               SELECT e.namespace, e.target, e.key, e.id FROM json_each(?) j JOIN entries e ON ",
            $selected,
            ") RETURNING namespace, target, key; \
             DELETE FROM entries WHERE id IN ( \
               SELECT e.id FROM json_each(?) j JOIN entries e ON ",
            $selected,
            ") RETURNING id, lease_token"
        )
    };
}

/// [`remove!`] for completed entries (always heads of their keys), given
/// the JSON object `{"id": lease_token, ..}` of entries leased with that
/// token. An object rather than a list of pairs: `json_each` yields each
/// member's key and value from one parse of the text, where pairs took two
/// `json_extract` calls an entry in each of the three statements. A key
/// given twice (a stale claim beside the current one) is yielded twice.
pub(super) const REMOVE_LEASED: &Opening =
    remove!("e.id = CAST(j.key AS INTEGER) AND e.lease_token = j.value AND e.state = 'leased'");

/// [`remove!`] for dead letters (heads, or out of line), given `[id, ..]`.
pub(super) const REMOVE_DEAD: &Opening = remove!("e.id = j.value AND e.state = 'dead'");

/// The SQL of a multi-row insert of `rows` entries (padded to a power of
/// two). The first parameter is the time; then a row's values are its
/// 1-based position in the batch (NULL for padding, which is skipped),
/// namespace, target, key, method, version, payload, reason, turn, the
/// position of the previous entry of its key in the same statement (or
/// NULL), state, `ready_at` and `orphaned` (the entry is
/// [uncertain](crate::queue::NewEntry::uncertain)). Ids are assigned explicitly as the highest
/// id ever used plus the position, so they follow the order the appends
/// arrived in; `prev_id` links each entry to the previous entry of its key,
/// from the batch or from the key's `streams` row.
pub(super) fn insert_sql(rows: usize) -> &'static str {
    static SQL: OnceLock<Vec<String>> = OnceLock::new();
    let all = SQL.get_or_init(|| {
        (0..=MAX_INSERT_ROWS.trailing_zeros())
            .map(|power| {
                let rows = 1usize << power;
                // All parameters are anonymous, so that sqlx and SQLite agree
                // on their order.
                let mut sql = String::from(
                    "INSERT INTO entries (id, namespace, target, key, method, version, payload, \
                     state, prev_id, attempts, last_error, enqueued_at, ready_at, turn, lease_token, orphaned) \
                     SELECT b.base + v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, \
                     v.column7, v.column11, \
                     CASE WHEN v.column10 IS NOT NULL THEN b.base + v.column10 \
                     ELSE (SELECT s.tail_id FROM streams s WHERE s.namespace = v.column2 \
                           AND s.target = v.column3 AND s.key = v.column4) END, \
                     0, v.column8, ?, v.column12, v.column9, 0, v.column13 \
                     FROM (SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'entries'), 0), \
                                      coalesce((SELECT max(id) FROM entries), 0)) AS base) AS b, (VALUES ",
                );
                for row in 0..rows {
                    if row > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
                }
                sql.push_str(") AS v WHERE v.column1 IS NOT NULL ORDER BY v.column1");
                sql
            })
            .collect()
    });
    by_size(all, rows)
}

/// The whole of a batch of inserts (at most [`MAX_INSERT_ROWS`]) and
/// commits of prepared entries, as one round trip: [`insert_sql`] returning
/// the new ids and whether each is the head of its key, the update of the keys' tails (parameter: the number of
/// rows), then, with `commits`, [`COMMIT_PREPARED`].
pub(super) fn write_ahead_sql(rows: usize, commits: bool) -> &'static str {
    static SQL: OnceLock<[Vec<String>; 2]> = OnceLock::new();
    let all = SQL.get_or_init(|| {
        [false, true].map(|commits| {
            (0..=MAX_INSERT_ROWS.trailing_zeros())
                .map(|power| {
                    format!(
                        "BEGIN IMMEDIATE; {} RETURNING id, prev_id IS NULL; {}; {} COMMIT;",
                        insert_sql(1 << power),
                        update_tails!("id > last_insert_rowid() - ?"),
                        if commits { COMMIT_PREPARED.plain } else { "" },
                    )
                })
                .collect()
        })
    });
    by_size(&all[usize::from(commits)], rows)
}

/// A turnover in one round trip: `BEGIN IMMEDIATE`, with `completes`
/// [`REMOVE_LEASED`], with `claims` [`CLAIM`], and `COMMIT`. Their
/// parameters follow in that order.
pub(super) fn turnover_sql(completes: bool, claims: bool) -> &'static str {
    static SQL: OnceLock<[String; 4]> = OnceLock::new();
    let all = SQL.get_or_init(|| {
        [(false, false), (false, true), (true, false), (true, true)].map(|(completes, claims)| {
            let mut sql = String::from("BEGIN IMMEDIATE; ");
            for (included, statement) in [(completes, REMOVE_LEASED), (claims, CLAIM)] {
                if included {
                    sql.push_str(statement.plain);
                    sql.push_str("; ");
                }
            }
            sql.push_str("COMMIT;");
            sql
        })
    });
    &all[usize::from(completes) * 2 + usize::from(claims)]
}

/// The statement of `sizes` (one per power of two) for `rows` rows.
fn by_size(sizes: &[String], rows: usize) -> &str {
    let power = rows.next_power_of_two().trailing_zeros() as usize;
    &sizes[power.min(sizes.len() - 1)]
}

/// Splits `count` rows into statements of [`MAX_INSERT_ROWS`] rows and a
/// last, smaller one; each is prepared at a power-of-two size (padded), so
/// the writer only ever prepares a handful of distinct insert statements.
pub(super) fn insert_chunks(mut count: usize) -> Vec<usize> {
    let mut chunks = Vec::new();
    while count > 0 {
        let chunk = count.min(MAX_INSERT_ROWS);
        chunks.push(chunk);
        count -= chunk;
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_sum_to_the_count() {
        for count in 0..1000 {
            let chunks = insert_chunks(count);
            assert_eq!(chunks.iter().sum::<usize>(), count);
            assert!(chunks.iter().all(|chunk| *chunk <= MAX_INSERT_ROWS));
        }
        assert_eq!(insert_chunks(300), vec![256, 44]);
    }

    #[test]
    fn insert_sql_is_padded_to_a_power_of_two() {
        for rows in 1..=MAX_INSERT_ROWS {
            let slots = insert_sql(rows).matches("(?, ?").count();
            assert_eq!(slots, rows.next_power_of_two(), "{rows} rows");
        }
    }
}
