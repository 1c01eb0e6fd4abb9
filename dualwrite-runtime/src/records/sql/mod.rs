//! Record stores over SQL tables: what to read and write ([`TableSpec`]),
//! the statements each dialect spells ([`statements`]), and the executors
//! ([`SqliteTable`]; a server database's executor is the same shape over
//! its pool, with its dialect).

#[cfg(feature = "sqlite")]
mod sqlite;
mod statements;

#[cfg(feature = "sqlite")]
pub use sqlite::SqliteTable;

pub(crate) use statements::{Dialect, Statements};

/// Which table (or query) of a SQL database holds the records, and how.
///
/// - [`table`](Self::table): read and write a table by its key column, every
///   column (or [the ones named](Self::columns)) a field;
/// - [`query`](Self::query): read through a `SELECT` of your own (renamed
///   columns, changed types, a join), whose output has the key column; it
///   is written only if [`writes_to`](Self::writes_to) names a table.
///
/// Names are quoted as identifiers, never spliced in as SQL; the query is
/// SQL you wrote, used as a subquery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub(crate) table: Option<String>,
    pub(crate) query: Option<String>,
    pub(crate) key_column: String,
    pub(crate) columns: Option<Vec<String>>,
    pub(crate) version_column: Option<String>,
}

impl TableSpec {
    /// The table `table`, whose primary (or unique) key is `key_column`.
    pub fn table(table: impl Into<String>, key_column: impl Into<String>) -> Self {
        TableSpec {
            table: Some(table.into()),
            query: None,
            key_column: key_column.into(),
            columns: None,
            version_column: None,
        }
    }

    /// Records read through `select` (a `SELECT` whose output includes
    /// `key_column`, used as a subquery: no trailing `;`, no `ORDER BY`).
    pub fn query(select: impl Into<String>, key_column: impl Into<String>) -> Self {
        TableSpec {
            table: None,
            query: Some(select.into()),
            key_column: key_column.into(),
            columns: None,
            version_column: None,
        }
    }

    /// The table writes go to, for a spec that reads through a query.
    #[must_use]
    pub fn writes_to(mut self, table: impl Into<String>) -> Self {
        self.table = Some(table.into());
        self
    }

    /// The columns that are the record's fields (default: every column
    /// but the key). Written records missing one write `NULL` to it.
    #[must_use]
    pub fn columns<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.columns = Some(columns.into_iter().map(Into::into).collect());
        self
    }

    /// The column whose greater value marks the newer record (an
    /// `updated_at` that sorts, a version counter): with it,
    /// [`IfAbsentOrNewer`](super::PutCondition::IfAbsentOrNewer) replaces
    /// an older record; without it, it only writes where the key is absent.
    #[must_use]
    pub fn version_column(mut self, column: impl Into<String>) -> Self {
        self.version_column = Some(column.into());
        self
    }

    /// "table `accounts`" or "query on `id`", for messages.
    pub(crate) fn describe(&self) -> String {
        match (&self.query, &self.table) {
            (None, Some(table)) => format!("table `{table}`"),
            (Some(_), Some(table)) => format!("query writing to table `{table}`"),
            (Some(_), None) => format!("query keyed by `{}`", self.key_column),
            (None, None) => "nothing".to_owned(),
        }
    }
}
