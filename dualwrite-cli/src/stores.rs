//! The two record stores of `backfill`, `verify` and `repair`: a table or a
//! query per side in a SQL database, checked before any work starts.

use std::sync::Arc;
use std::time::Duration;

use dualwrite_runtime::records::{RecordPair, RecordStore, SqliteTable, TableSpec};
use dualwrite_runtime::Side;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

use crate::args::StoresArgs;
use crate::error::CliError;
use crate::open::{check_sqlite_file, sqlite_file};

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
            "no {name} database given: pass --{name} sqlite:<path> or set DUALWRITE_{}",
            name.to_ascii_uppercase()
        ))
    })?;
    let role = format!("{name} database");
    let path = sqlite_file(&role, location)?;
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
    check_sqlite_file(&role, path)?;
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
    store
        .check()
        .await
        .map_err(|error| CliError::store(format!("{role} {}: {error}", path.display())))?;
    Ok(Arc::new(store))
}
