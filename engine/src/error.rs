//! The engine's errors.

use std::path::PathBuf;

/// What can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// An I/O call failed.
    #[error("I/O error during {op} of {path:?}: {source}")]
    Io {
        /// The operation (`"read"`, `"write"`, `"sync"`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// Bytes on disk are not what the engine wrote.
    #[error("corruption in {file:?} at offset {offset}: {detail}")]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Where in it the damage was found.
        offset: u64,
        /// What was wrong.
        detail: String,
    },
    /// An earlier write or sync failed, so what is on disk is unknown; the
    /// engine refuses further work until it is reopened.
    #[error("the engine stopped after an I/O failure; reopen it to recover")]
    Poisoned,
    /// The version asked for is not readable: older than the retention
    /// floor, or newer than the newest committed version.
    #[error("version {version} is not readable (oldest {oldest:?}, latest {latest:?})")]
    NoSuchVersion {
        /// The version asked for.
        version: u64,
        /// The oldest readable version, if any.
        oldest: Option<u64>,
        /// The newest committed version, if any.
        latest: Option<u64>,
    },
    /// The engine was shut down.
    #[error("the engine is closed")]
    Closed,
    /// Another engine (in this or another process) has the store open.
    #[error("the store in {0:?} is open elsewhere")]
    Locked(PathBuf),
    /// The caller passed something the engine cannot use.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
}

impl EngineError {
    /// An I/O error with its context.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// A corruption error.
    pub fn corruption(file: impl Into<PathBuf>, offset: u64, detail: impl Into<String>) -> Self {
        EngineError::Corruption {
            file: file.into(),
            offset,
            detail: detail.into(),
        }
    }

    /// True when the error is a full disk.
    pub fn is_no_space(&self) -> bool {
        matches!(self, EngineError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::StorageFull)
    }
}

/// The engine's result type.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
