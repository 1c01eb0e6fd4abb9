//! The queue's backend error (the file and the operation that failed) and
//! why a write transaction failed.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use crate::queue::QueueError;

/// What a backend error says first: `SQLite queue <file>: could not <what>`.
pub(super) fn could_not(file: impl fmt::Display, what: &str) -> String {
    format!("SQLite queue {file}: could not {what}")
}

/// A backend failure with the file and the operation that failed.
#[derive(Debug, Clone)]
pub(super) struct BackendError {
    context: String,
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

impl BackendError {
    pub(super) fn new(context: String, source: impl StdError + Send + Sync + 'static) -> Self {
        BackendError {
            context,
            source: Some(Arc::new(source)),
        }
    }

    pub(super) fn message(context: String) -> Self {
        BackendError {
            context,
            source: None,
        }
    }
}

impl From<BackendError> for QueueError {
    fn from(error: BackendError) -> Self {
        QueueError::Backend(Box::new(error))
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.context),
            None => f.write_str(&self.context),
        }
    }
}

impl StdError for BackendError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}

/// Why a write transaction failed.
pub(super) enum TxError {
    /// `BEGIN` failed (the file is locked, unreadable): nothing ran.
    Begin(sqlx::Error),
    /// A statement or the commit failed; the transaction was rolled back.
    Statement(&'static str, sqlx::Error),
}

impl TxError {
    /// A failed statement of a transaction: `Begin` if it could not take the
    /// file's write lock (nothing ran), else `Statement`.
    pub(super) fn of(what: &'static str, error: sqlx::Error) -> TxError {
        if is_busy(&error) {
            TxError::Begin(error)
        } else {
            TxError::Statement(what, error)
        }
    }
}

/// Whether SQLite said the file is locked (by another process).
fn is_busy(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(error) => error
            .code()
            .and_then(|code| code.parse::<i64>().ok())
            .is_some_and(|code| code & 0xff == 5 || code & 0xff == 6),
        _ => false,
    }
}
