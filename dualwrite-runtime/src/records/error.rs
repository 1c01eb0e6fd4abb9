//! The error of a record store.

/// A record store failed, or was set up wrongly (a missing table or
/// column, a value of a type it cannot hold). The message names the store
/// and what it was doing.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct RecordError {
    context: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
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
        }
    }

    /// An error that is only a message.
    pub fn message(context: impl Into<String>, message: impl Into<String>) -> Self {
        let message: String = message.into();
        RecordError::new(context, message)
    }

    /// What the store was doing.
    pub fn context(&self) -> &str {
        &self.context
    }
}
