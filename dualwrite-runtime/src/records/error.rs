//! The error of a record store.

use super::RecordKey;

/// A record store failed, or was set up wrongly (a missing table or
/// column, a value of a type it cannot hold). The message names the store
/// and what it was doing.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct RecordError {
    context: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
    conflicting: Option<Vec<RecordKey>>,
}

impl RecordError {
    /// `source` happened while doing `context` ("reading accounts after key 7").
    pub fn new(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        RecordError {
            context: context.into(),
            source: source.into(),
            conflicting: None,
        }
    }

    /// An error that is only a message.
    pub fn message(context: impl Into<String>, message: impl Into<String>) -> Self {
        let message: String = message.into();
        RecordError::new(context, message)
    }

    /// A write refused because records clash with other rows on a unique
    /// column other than the key (a customer's email another customer
    /// holds). `keys` are the records that may clash: exactly those, or
    /// the whole batch when the database does not say which. Nothing of
    /// the write was kept.
    pub fn conflict(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
        keys: Vec<RecordKey>,
    ) -> Self {
        RecordError {
            conflicting: Some(keys),
            ..RecordError::new(context, source)
        }
    }

    /// What the store was doing.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// For a write refused on a unique column other than the key
    /// ([`conflict`](Self::conflict)): the records that may clash. A
    /// backfill copying beside live writes syncs those keys from the
    /// source instead (the copy was stale; the row holding the value is
    /// another key's, synced in its turn).
    pub fn conflicting_keys(&self) -> Option<&[RecordKey]> {
        self.conflicting.as_deref()
    }
}
