//! Errors of the native engine.

use std::path::PathBuf;

/// What went wrong in the native engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file operation failed.
    #[error("I/O error while {action} {}: {source}", path.display())]
    Io {
        /// What the engine was doing.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A file holds bytes that are not what the engine wrote.
    #[error("{} is corrupt at offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A file the store must hold is missing or shorter than the store recorded: deleted or
    /// cut by something other than the engine. Unlike [`Error::Corrupt`], nothing proves the
    /// bytes that are there wrong; what is gone was acknowledged.
    #[error("{} is missing data from offset {offset}: {reason}", path.display())]
    Missing {
        /// The missing or cut file.
        path: PathBuf,
        /// Where the missing bytes start (0 for a missing file).
        offset: u64,
        /// What the store expected.
        reason: String,
    },
    /// Another handle (in this process or another) has the directory open.
    #[error("{} is locked by another user", path.display())]
    Locked {
        /// The engine's directory.
        path: PathBuf,
    },
    /// An earlier write or fsync failed; the engine refuses writes until it is reopened.
    #[error("the engine refuses writes after an earlier failure ({cause}); reopen it to recover")]
    Poisoned {
        /// The first failure.
        cause: String,
    },
    /// A key or value is over the format's limit.
    #[error("{what} of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// "key" or "value".
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A write names a table that does not exist (any more).
    #[error("no table named `{name}`")]
    NoSuchTable {
        /// The table's name.
        name: String,
    },
    /// A table name is empty or too long.
    #[error("invalid table name {name:?}: {reason}")]
    InvalidTableName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { action, path: path.into(), source }
    }

    pub(crate) fn missing(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        Error::Missing { path: path.into(), offset, reason: reason.into() }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        Error::Corrupt { path: path.into(), offset, reason: reason.into() }
    }
}

/// Results of the native engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;
