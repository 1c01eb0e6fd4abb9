//! Record stores over SQL tables: what to read and write ([`TableSpec`]),
//! the statements each dialect spells ([`statements`]), what every
//! executor shares ([`table`]), and one thin executor per database
//! ([`SqliteTable`], [`PgTable`], [`MySqlTable`]), each [`SqlTable`] over
//! that database's sqlx pool.

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
mod statements;
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres", feature = "mysql")),
    allow(dead_code)
)]
mod table;

#[cfg(feature = "mysql")]
pub use mysql::MySqlTable;
#[cfg(feature = "postgres")]
pub use postgres::PgTable;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteTable;

pub(crate) use statements::{Dialect, Statements};

/// A database a [`SqlTable`] runs on: how its statements are spelled.
/// Implemented for the databases this crate has an executor for.
pub trait SqlDatabase: sqlx::Database + private::Sealed {
    #[doc(hidden)]
    const DIALECT: Dialect;
    /// The first word of the store's messages ("sqlite", "postgres").
    const LABEL: &'static str;
}

mod private {
    pub trait Sealed {}
    #[cfg(feature = "sqlite")]
    impl Sealed for sqlx::Sqlite {}
    #[cfg(feature = "postgres")]
    impl Sealed for sqlx::Postgres {}
    #[cfg(feature = "mysql")]
    impl Sealed for sqlx::MySql {}
}

/// A [`RecordStore`](super::RecordStore) over a table (or a query) of a SQL
/// database, on a sqlx pool: [`SqliteTable`], `PgTable` (feature
/// `postgres`) or `MySqlTable` (feature `mysql`). Built the same way on
/// each; see their docs for how
/// column types map to [`Value`](super::Value)s.
pub struct SqlTable<DB: SqlDatabase> {
    pool: sqlx::Pool<DB>,
    table: table::Table,
}

// By hand: a derive would ask the database marker types to be `Clone`.
impl<DB: SqlDatabase> Clone for SqlTable<DB> {
    fn clone(&self) -> Self {
        SqlTable {
            pool: self.pool.clone(),
            table: self.table.clone(),
        }
    }
}

impl<DB: SqlDatabase> std::fmt::Debug for SqlTable<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlTable")
            .field("store", &self.table.describe())
            .finish_non_exhaustive()
    }
}

impl<DB: SqlDatabase> SqlTable<DB> {
    /// The table `table` keyed by `key_column`, every other column a field.
    pub fn new(pool: sqlx::Pool<DB>, table: &str, key_column: &str) -> Self {
        Self::with_spec(pool, TableSpec::table(table, key_column))
    }

    /// The records `spec` describes.
    pub fn with_spec(pool: sqlx::Pool<DB>, spec: TableSpec) -> Self {
        SqlTable {
            pool,
            table: table::Table::new(DB::LABEL, Statements::new(DB::DIALECT, spec)),
        }
    }

    /// The same table, newer by `column` (see [`TableSpec::version_column`]).
    #[must_use]
    pub fn version_column(self, column: &str) -> Self {
        let spec = self.table.spec().clone().version_column(column);
        Self::with_spec(self.pool, spec)
    }

    /// The same table, with only these columns as fields (see
    /// [`TableSpec::columns`]).
    #[must_use]
    pub fn columns(self, columns: &[&str]) -> Self {
        let spec = self.table.spec().clone().columns(columns.iter().copied());
        Self::with_spec(self.pool, spec)
    }

    /// The pool it reads and writes through.
    pub fn pool(&self) -> &sqlx::Pool<DB> {
        &self.pool
    }
}

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
