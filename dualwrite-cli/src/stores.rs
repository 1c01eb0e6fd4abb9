//! The two record stores of `backfill`, `verify` and `repair`: a table or a
//! query per side in a SQL database (SQLite, PostgreSQL, MariaDB or MySQL),
//! checked before any work starts.

use std::sync::Arc;
use std::time::Duration;

use std::path::Path;

#[cfg(feature = "mysql")]
use dualwrite_runtime::records::MySqlTable;
#[cfg(feature = "postgres")]
use dualwrite_runtime::records::PgTable;
use dualwrite_runtime::records::{RecordError, RecordPair, RecordStore, SqliteTable, TableSpec};
use dualwrite_runtime::Side;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

use crate::args::StoresArgs;
use crate::error::CliError;
use crate::location::Location;
use crate::open::check_sqlite_file;

/// What a task does to a side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Reads only: the database is opened read-only.
    Read,
    /// Writes too.
    Write,
}

/// Whether any option names a SQL store (they are refused when the
/// embedding binary supplies its own stores).
pub(crate) fn names_any(args: &StoresArgs) -> bool {
    args.old.is_some()
        || args.new.is_some()
        || args.table.is_some()
        || args.old_table.is_some()
        || args.new_table.is_some()
        || args.old_query.is_some()
        || args.new_query.is_some()
}

/// Opens and checks both sides: the files exist, and the tables, columns
/// and queries are there (SQLite's message names what is missing).
pub(crate) async fn open(
    args: &StoresArgs,
    old: Access,
    new: Access,
) -> Result<RecordPair, CliError> {
    let old = open_side(args, Side::Old, old).await?;
    let new = open_side(args, Side::New, new).await?;
    Ok(RecordPair::shared(old, new))
}

async fn open_side(
    args: &StoresArgs,
    side: Side,
    access: Access,
) -> Result<Arc<dyn RecordStore>, CliError> {
    let name = side.as_str();
    let (location, table, query, key) = match side {
        Side::Old => (&args.old, &args.old_table, &args.old_query, &args.old_key),
        Side::New => (&args.new, &args.new_table, &args.new_query, &args.new_key),
    };
    let location = location.as_ref().ok_or_else(|| {
        CliError::Usage(format!(
            "no {name} database given: pass --{name} <URL> (sqlite:<path>, postgres://.., mysql://..) or set DUALWRITE_{}",
            name.to_ascii_uppercase()
        ))
    })?;
    let role = format!("{name} database");
    let key = key.as_ref().or(args.key.as_ref()).ok_or_else(|| {
        CliError::Usage(format!(
            "no key column for the {name} side: pass --key (both sides) or --{name}-key"
        ))
    })?;
    let table = table.as_ref().or(args.table.as_ref());
    let mut spec = match (query, table) {
        (Some(query), Some(table)) => TableSpec::query(query, key).writes_to(table),
        (Some(query), None) if access == Access::Read => TableSpec::query(query, key),
        (Some(_), None) => {
            return Err(CliError::Usage(format!(
                "the {name} side is written to, but --{name}-query only reads: name the table writes go to with --{name}-table"
            )))
        }
        (None, Some(table)) => TableSpec::table(table, key),
        (None, None) => {
            return Err(CliError::Usage(format!(
                "no table for the {name} side: pass --table (both sides), --{name}-table or --{name}-query"
            )))
        }
    };
    if let Some(version) = &args.version_column {
        spec = spec.version_column(version);
    }
    if !args.columns.is_empty() {
        spec = spec.columns(args.columns.iter().cloned());
    }
    match location {
        Location::Sqlite(path) => open_sqlite(&role, path, spec, access).await,
        #[cfg(feature = "postgres")]
        Location::Postgres(url) => open_postgres(&role, location, url, spec, access).await,
        #[cfg(feature = "mysql")]
        Location::Mysql(url) => open_mysql(&role, location, url, spec, access).await,
        #[cfg(not(feature = "postgres"))]
        Location::Postgres(_) => Err(not_built(&role, location, "postgres")),
        #[cfg(not(feature = "mysql"))]
        Location::Mysql(_) => Err(not_built(&role, location, "mysql")),
    }
}

/// The store, once its check passed; else the check's error (a missing
/// table or column, a bad query), named before any work starts.
fn checked(
    role: &str,
    shown: impl std::fmt::Display,
    store: impl RecordStore,
    check: Result<(), RecordError>,
) -> Result<Arc<dyn RecordStore>, CliError> {
    check.map_err(|error| CliError::store(format!("{role} {shown}: {error}")))?;
    Ok(Arc::new(store))
}

async fn open_sqlite(
    role: &str,
    path: &Path,
    spec: TableSpec,
    access: Access,
) -> Result<Arc<dyn RecordStore>, CliError> {
    check_sqlite_file(role, path)?;
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .read_only(access == Access::Read)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .map_err(|error| {
            CliError::store(format!(
                "{role} {}: cannot open it: {error}",
                path.display()
            ))
        })?;
    let store = SqliteTable::with_spec(pool, spec);
    let check = store.check().await;
    checked(role, path.display(), store, check)
}

/// A pool on the PostgreSQL database at `url`, connected (or the error
/// naming `role` and the URL).
#[cfg(feature = "postgres")]
pub(crate) async fn pg_pool(
    role: &str,
    location: &Location,
    url: &str,
    access: Access,
) -> Result<sqlx::PgPool, CliError> {
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    let options: PgConnectOptions = url
        .parse()
        .map_err(|error| malformed(role, location, error))?;
    // A side that is only read is opened read-only by the server itself.
    let options = match access {
        Access::Read => options.options([("default_transaction_read_only", "on")]),
        Access::Write => options,
    };
    reachable(
        role,
        location,
        <sqlx::PgConnection as sqlx::Connection>::connect_with(&options),
    )
    .await?;
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|error| unreachable(role, location, error))
}

/// A pool on the MySQL or MariaDB database at `url` (`mariadb://` too).
#[cfg(feature = "mysql")]
pub(crate) async fn mysql_pool(
    role: &str,
    location: &Location,
    url: &str,
    access: Access,
) -> Result<sqlx::MySqlPool, CliError> {
    use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
    use sqlx::Executor;
    // `mariadb://` is the same server protocol.
    let url = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("mariadb") => format!("mysql://{rest}"),
        _ => url.to_owned(),
    };
    let options: MySqlConnectOptions = url
        .parse()
        .map_err(|error| malformed(role, location, error))?;
    reachable(
        role,
        location,
        <sqlx::MySqlConnection as sqlx::Connection>::connect_with(&options),
    )
    .await?;
    let read_only = access == Access::Read;
    MySqlPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(CONNECT_TIMEOUT)
        // A side that is only read is opened read-only by the server itself.
        .after_connect(move |connection, _| {
            Box::pin(async move {
                if read_only {
                    connection
                        .execute("SET SESSION TRANSACTION READ ONLY")
                        .await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .map_err(|error| unreachable(role, location, error))
}

/// How long the tool waits for a server database before it gives up.
#[cfg(any(feature = "postgres", feature = "mysql"))]
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects once, for the server's own reason when it cannot be reached
/// (a pool only reports that it timed out, after retrying for the whole
/// timeout).
#[cfg(any(feature = "postgres", feature = "mysql"))]
async fn reachable<C: sqlx::Connection>(
    role: &str,
    location: &Location,
    connect: impl std::future::Future<Output = Result<C, sqlx::Error>>,
) -> Result<(), CliError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(connection)) => {
            let _ = connection.close().await;
            Ok(())
        }
        Ok(Err(error)) => Err(unreachable(role, location, error)),
        Err(_) => Err(CliError::store(format!(
            "{role} {location}: cannot connect: no answer within {} s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// The server's error, for a database that could not be reached or refused
/// the login (the URL is shown without its password).
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn unreachable(role: &str, location: &Location, error: sqlx::Error) -> CliError {
    CliError::store(format!("{role} {location}: cannot connect: {error}"))
}

/// A server URL its driver cannot read (a port that is not a number, an
/// unknown option).
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn malformed(role: &str, location: &Location, error: sqlx::Error) -> CliError {
    CliError::Usage(crate::error::one_line(&format!(
        "{role} {location}: {error}"
    )))
}

#[cfg(feature = "postgres")]
async fn open_postgres(
    role: &str,
    location: &Location,
    url: &str,
    spec: TableSpec,
    access: Access,
) -> Result<Arc<dyn RecordStore>, CliError> {
    let pool = pg_pool(role, location, url, access).await?;
    let store = PgTable::with_spec(pool, spec);
    let check = store.check().await;
    checked(role, location, store, check)
}

#[cfg(feature = "mysql")]
async fn open_mysql(
    role: &str,
    location: &Location,
    url: &str,
    spec: TableSpec,
    access: Access,
) -> Result<Arc<dyn RecordStore>, CliError> {
    let pool = mysql_pool(role, location, url, access).await?;
    let store = MySqlTable::with_spec(pool, spec);
    let check = store.check().await;
    checked(role, location, store, check)
}

#[cfg(not(all(feature = "postgres", feature = "mysql")))]
fn not_built(role: &str, location: &Location, feature: &str) -> CliError {
    CliError::Usage(format!(
        "{role} {location}: this dualwrite was built without its `{feature}` feature (it is on by default)"
    ))
}
