//! What can stop a command, and the exit code each kind gets.

use std::process::ExitCode;

/// How a command ended, as its exit code says (documented in `--help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done, nothing found (exit 0).
    Clean,
    /// Done, differences found (exit 1): dead letters in `status`.
    DifferencesFound,
}

impl Outcome {
    /// The process exit code.
    pub fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Clean => ExitCode::SUCCESS,
            Outcome::DifferencesFound => ExitCode::from(1),
        }
    }
}

/// Why a command did not run, or was refused. Its `Display` is the one line
/// the tool prints.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line asks for something impossible (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A store could not be opened, read or written (exit 3).
    #[error("{0}")]
    Store(String),
    /// The operation was understood and the store reached, but refused
    /// (exit 4).
    #[error("{0}")]
    Refused(String),
}

impl CliError {
    /// The process exit code.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CliError::Usage(_) => 2,
            CliError::Store(_) => 3,
            CliError::Refused(_) => 4,
        })
    }

    /// A store error from anything displayable, on one line.
    pub(crate) fn store(message: impl std::fmt::Display) -> Self {
        CliError::Store(one_line(&message.to_string()))
    }

    /// A refusal, on one line.
    pub(crate) fn refused(message: impl std::fmt::Display) -> Self {
        CliError::Refused(one_line(&message.to_string()))
    }
}

/// Joins the lines of a message (a driver's error can span several) so the
/// tool's error stays one line.
pub(crate) fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}
