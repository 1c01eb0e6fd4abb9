//! The statements a SQL record store runs, spelled per dialect. Only the
//! spelling differs between databases (placeholders, identifier quotes,
//! the upsert clause); the executors bind values in the order given here.

use super::TableSpec;
use crate::records::PutCondition;

/// How one SQL database spells what the statements need.
///
/// Public only because [`SqlDatabase`](super::SqlDatabase) names it; not
/// part of the API.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // a variant is built only with its database's feature
pub enum Dialect {
    /// SQLite 3.24 or later (`ON CONFLICT .. DO UPDATE`).
    Sqlite,
    /// PostgreSQL 9.5 or later.
    Postgres,
    /// MySQL and MariaDB (`ON DUPLICATE KEY UPDATE`).
    MySql,
}

impl Dialect {
    fn placeholder(self, number: usize) -> String {
        match self {
            Dialect::Postgres => format!("${number}"),
            _ => {
                let _ = number;
                "?".to_owned()
            }
        }
    }

    /// SQLite takes backticks too, and unlike a double-quoted name that
    /// matches no column (which it reads as a string literal), a backticked
    /// one is always an identifier: a missing column is an error, not text.
    fn quote(self, identifier: &str) -> String {
        match self {
            Dialect::Postgres => format!("\"{}\"", identifier.replace('"', "\"\"")),
            _ => format!("`{}`", identifier.replace('`', "``")),
        }
    }

    /// The clause after `VALUES (..)` that makes an insert conditional.
    fn on_conflict(
        self,
        key: &str,
        columns: &[String],
        version: Option<&str>,
        table: &str,
        condition: PutCondition,
    ) -> String {
        let key = self.quote(key);
        let update_all = condition == PutCondition::Always;
        let newer_only = version.filter(|_| !update_all);
        if columns.is_empty() || (!update_all && newer_only.is_none()) {
            return match self {
                Dialect::MySql => format!(" ON DUPLICATE KEY UPDATE {key} = {key}"),
                _ => format!(" ON CONFLICT ({key}) DO NOTHING"),
            };
        }
        match self {
            Dialect::MySql => {
                // `ON DUPLICATE KEY UPDATE` fires on a clash with *any*
                // unique column: every assignment first checks that the
                // row is the record's own (not another key's holding the
                // same email), and with a version, that the row's is older.
                let mut guard = format!("{key} = VALUES({key})");
                if let Some(version) = newer_only {
                    let version = self.quote(version);
                    guard.push_str(&format!(
                        " AND ({version} IS NULL OR {version} < VALUES({version}))"
                    ));
                }
                // The version column is assigned last: MySQL evaluates the
                // assignments left to right, and the others compare with
                // its old value.
                let mut ordered: Vec<&String> = columns
                    .iter()
                    .filter(|column| Some(column.as_str()) != newer_only)
                    .collect();
                let version = newer_only.and_then(|version| columns.iter().find(|c| *c == version));
                ordered.extend(version);
                let sets: Vec<String> = ordered
                    .into_iter()
                    .map(|column| {
                        let column = self.quote(column);
                        format!("{column} = IF({guard}, VALUES({column}), {column})")
                    })
                    .collect();
                format!(" ON DUPLICATE KEY UPDATE {}", sets.join(", "))
            }
            _ => {
                let sets: Vec<String> = columns
                    .iter()
                    .map(|column| {
                        let column = self.quote(column);
                        format!("{column} = excluded.{column}")
                    })
                    .collect();
                let mut clause = format!(" ON CONFLICT ({key}) DO UPDATE SET {}", sets.join(", "));
                if let Some(version) = newer_only {
                    let version = self.quote(version);
                    let table = self.quote(table);
                    clause.push_str(&format!(
                        " WHERE {table}.{version} IS NULL OR {table}.{version} < excluded.{version}"
                    ));
                }
                clause
            }
        }
    }
}

/// The statements of one [`TableSpec`] in one [`Dialect`].
#[derive(Debug, Clone)]
pub(crate) struct Statements {
    dialect: Dialect,
    spec: TableSpec,
    /// What rows are read from: the quoted table, or the query as a subquery.
    source: String,
    /// The selected columns: `*`, or the key and the named columns.
    selected: String,
    key: String,
}

impl Statements {
    pub(crate) fn new(dialect: Dialect, spec: TableSpec) -> Self {
        let source = match (&spec.query, &spec.table) {
            (Some(query), _) => format!("({query}) AS dualwrite_source"),
            (None, Some(table)) => dialect.quote(table),
            (None, None) => "(SELECT NULL) AS dualwrite_source".to_owned(),
        };
        let selected = match &spec.columns {
            None => "*".to_owned(),
            Some(columns) => std::iter::once(&spec.key_column)
                .chain(columns.iter().filter(|column| **column != spec.key_column))
                .map(|column| dialect.quote(column))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let key = dialect.quote(&spec.key_column);
        Statements {
            dialect,
            spec,
            source,
            selected,
            key,
        }
    }

    pub(crate) fn spec(&self) -> &TableSpec {
        &self.spec
    }

    /// `SELECT` of the records, with `rest` (a condition, an order) after
    /// the source.
    fn select(&self, rest: &str) -> String {
        format!("SELECT {} FROM {} {rest}", self.selected, self.source)
    }

    /// Binds: the key to read after (when `after`), then the limit.
    pub(crate) fn page(&self, after: bool) -> String {
        let (dialect, key) = (self.dialect, &self.key);
        if after {
            self.select(&format!(
                "WHERE {key} > {} ORDER BY {key} LIMIT {}",
                dialect.placeholder(1),
                dialect.placeholder(2)
            ))
        } else {
            self.select(&format!("ORDER BY {key} LIMIT {}", dialect.placeholder(1)))
        }
    }

    /// Binds: the key.
    pub(crate) fn get(&self) -> String {
        self.select(&format!(
            "WHERE {} = {}",
            self.key,
            self.dialect.placeholder(1)
        ))
    }

    pub(crate) fn count(&self) -> String {
        format!("SELECT COUNT(*) FROM {}", self.source)
    }

    /// The table writes go to, or `None` for a read-only query.
    pub(crate) fn table(&self) -> Option<&str> {
        self.spec.table.as_deref()
    }

    /// Binds, per row: the key, then `columns` in order.
    pub(crate) fn put(
        &self,
        table: &str,
        columns: &[String],
        rows: usize,
        condition: PutCondition,
    ) -> String {
        let dialect = self.dialect;
        let width = columns.len() + 1;
        let (names, conflict) = self.insert_parts(table, columns, condition);
        let values = (0..rows)
            .map(|row| {
                let slots = (1..=width)
                    .map(|slot| dialect.placeholder(row * width + slot))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("({slots})")
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "INSERT INTO {} ({names}) VALUES {values}{conflict}",
            dialect.quote(table)
        )
    }

    #[cfg(any(test, feature = "postgres"))]
    /// PostgreSQL's insert: binds one JSON array of objects (the key and
    /// `columns` by name), which `json_populate_recordset` converts to the
    /// table's own column types (numeric, timestamptz, enums) from their
    /// text, so that values need no per-column type to be bound.
    pub(crate) fn put_json(
        &self,
        table: &str,
        columns: &[String],
        condition: PutCondition,
    ) -> String {
        let dialect = self.dialect;
        let (names, conflict) = self.insert_parts(table, columns, condition);
        let table = dialect.quote(table);
        format!(
            "INSERT INTO {table} ({names}) SELECT {names} FROM json_populate_recordset(NULL::{table}, {}::json){conflict}",
            dialect.placeholder(1)
        )
    }

    /// What every insert of `columns` into `table` spells the same way:
    /// the quoted column list (the key first) and the conditional clause.
    fn insert_parts(
        &self,
        table: &str,
        columns: &[String],
        condition: PutCondition,
    ) -> (String, String) {
        let names = std::iter::once(self.key.clone())
            .chain(columns.iter().map(|column| self.dialect.quote(column)))
            .collect::<Vec<_>>()
            .join(", ");
        let conflict = self.dialect.on_conflict(
            &self.spec.key_column,
            columns,
            self.spec.version_column.as_deref(),
            table,
            condition,
        );
        (names, conflict)
    }

    /// The keys among `count` bound ones that `table` holds, as text.
    #[cfg(any(test, feature = "mysql"))]
    pub(crate) fn present_keys(&self, table: &str, count: usize) -> String {
        let slots = (1..=count)
            .map(|slot| self.dialect.placeholder(slot))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "SELECT CAST({key} AS CHAR) FROM {} WHERE {key} IN ({slots})",
            self.dialect.quote(table),
            key = self.key
        )
    }

    /// Binds: the key.
    pub(crate) fn delete(&self, table: &str) -> String {
        format!(
            "DELETE FROM {} WHERE {} = {}",
            self.dialect.quote(table),
            self.key,
            self.dialect.placeholder(1)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts() -> TableSpec {
        TableSpec::table("accounts", "id")
            .columns(["email", "updated_at"])
            .version_column("updated_at")
    }

    fn columns() -> Vec<String> {
        vec!["email".to_owned(), "updated_at".to_owned()]
    }

    #[test]
    fn postgres_writes_a_batch_from_one_json_parameter_in_the_tables_own_types() {
        let statements = Statements::new(Dialect::Postgres, accounts());
        assert_eq!(
            statements.put_json("accounts", &columns(), PutCondition::IfAbsentOrNewer),
            "INSERT INTO \"accounts\" (\"id\", \"email\", \"updated_at\") \
             SELECT \"id\", \"email\", \"updated_at\" FROM json_populate_recordset(NULL::\"accounts\", $1::json) \
             ON CONFLICT (\"id\") DO UPDATE SET \"email\" = excluded.\"email\", \"updated_at\" = excluded.\"updated_at\" \
             WHERE \"accounts\".\"updated_at\" IS NULL OR \"accounts\".\"updated_at\" < excluded.\"updated_at\""
        );
    }

    #[test]
    fn sqlite_writes_only_newer_versions_in_the_insert_itself() {
        let statements = Statements::new(Dialect::Sqlite, accounts());
        assert_eq!(
            statements.put("accounts", &columns(), 2, PutCondition::IfAbsentOrNewer),
            "INSERT INTO `accounts` (`id`, `email`, `updated_at`) VALUES (?, ?, ?), (?, ?, ?) \
             ON CONFLICT (`id`) DO UPDATE SET `email` = excluded.`email`, `updated_at` = excluded.`updated_at` \
             WHERE `accounts`.`updated_at` IS NULL OR `accounts`.`updated_at` < excluded.`updated_at`"
        );
        assert_eq!(
            statements.page(true),
            "SELECT `id`, `email`, `updated_at` FROM `accounts` WHERE `id` > ? ORDER BY `id` LIMIT ?"
        );
    }

    #[test]
    fn without_a_version_column_only_absent_keys_are_written() {
        let statements = Statements::new(Dialect::Sqlite, TableSpec::table("accounts", "id"));
        assert!(statements
            .put("accounts", &columns(), 1, PutCondition::IfAbsentOrNewer)
            .ends_with("ON CONFLICT (`id`) DO NOTHING"));
        assert!(!statements
            .put("accounts", &columns(), 1, PutCondition::Always)
            .contains("WHERE"));
    }

    #[test]
    fn postgres_numbers_its_placeholders_and_reads_queries_as_subqueries() {
        let spec = TableSpec::query("SELECT order_id AS id, total FROM orders_v1", "id");
        let statements = Statements::new(Dialect::Postgres, spec);
        assert_eq!(
            statements.page(true),
            "SELECT * FROM (SELECT order_id AS id, total FROM orders_v1) AS dualwrite_source WHERE \"id\" > $1 ORDER BY \"id\" LIMIT $2"
        );
        let statements = Statements::new(Dialect::Postgres, accounts());
        assert!(statements
            .put("accounts", &columns(), 2, PutCondition::Always)
            .contains("VALUES ($1, $2, $3), ($4, $5, $6)"));
    }

    #[test]
    fn mysql_changes_only_the_records_own_row_and_assigns_the_version_last() {
        let statements = Statements::new(Dialect::MySql, accounts());
        let guard =
            "`id` = VALUES(`id`) AND (`updated_at` IS NULL OR `updated_at` < VALUES(`updated_at`))";
        assert_eq!(
            statements.put("accounts", &columns(), 1, PutCondition::IfAbsentOrNewer),
            format!(
                "INSERT INTO `accounts` (`id`, `email`, `updated_at`) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE \
                 `email` = IF({guard}, VALUES(`email`), `email`), \
                 `updated_at` = IF({guard}, VALUES(`updated_at`), `updated_at`)"
            )
        );
        // Forced: the row must still be the record's own, not the row of
        // another key that holds the same unique email.
        assert_eq!(
            statements.put("accounts", &columns(), 1, PutCondition::Always),
            "INSERT INTO `accounts` (`id`, `email`, `updated_at`) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE \
             `email` = IF(`id` = VALUES(`id`), VALUES(`email`), `email`), \
             `updated_at` = IF(`id` = VALUES(`id`), VALUES(`updated_at`), `updated_at`)"
        );
        assert_eq!(
            statements.present_keys("accounts", 2),
            "SELECT CAST(`id` AS CHAR) FROM `accounts` WHERE `id` IN (?, ?)"
        );
    }

    #[test]
    fn identifiers_are_quoted_not_spliced() {
        let statements = Statements::new(Dialect::Sqlite, TableSpec::table("a`; DROP", "id"));
        assert_eq!(statements.count(), "SELECT COUNT(*) FROM `a``; DROP`");
        let statements = Statements::new(Dialect::Postgres, TableSpec::table("a\"; DROP", "id"));
        assert_eq!(statements.count(), "SELECT COUNT(*) FROM \"a\"\"; DROP\"");
    }
}
