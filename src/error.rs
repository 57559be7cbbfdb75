//! The errors of the [`Db`](crate::Db).

use std::path::PathBuf;
use std::sync::Arc;

use verity_engine::EngineError;
use verity_merkle::MerkleError;

/// What can go wrong in a [`Db`](crate::Db).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// Bytes on disk are not what was written.
    #[error("corruption in {file:?} at offset {offset}: {detail}")]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Where in it.
        offset: u64,
        /// What was wrong.
        detail: String,
    },
    /// An I/O call failed.
    #[error("I/O error: {0}")]
    Io(Arc<EngineError>),
    /// The version is not readable: pruned, or not committed yet.
    #[error("version {version} is not readable (oldest {oldest:?}, latest {latest:?})")]
    NoSuchVersion {
        /// The version asked for.
        version: u64,
        /// The oldest readable version.
        oldest: Option<u64>,
        /// The newest staged version.
        latest: Option<u64>,
    },
    /// The caller passed something the Db cannot take.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The Db was closed.
    #[error("the database is closed")]
    Closed,
    /// An earlier write or sync failed; reopen the Db to recover.
    #[error("the database stopped after a failure; reopen it to recover: {0}")]
    Poisoned(String),
    /// The trie's pages are inconsistent (a damaged page record).
    #[error("trie error: {0}")]
    Trie(Arc<MerkleError>),
}

impl From<EngineError> for DbError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Corruption {
                file,
                offset,
                detail,
            } => DbError::Corruption {
                file,
                offset,
                detail,
            },
            EngineError::NoSuchVersion {
                version,
                oldest,
                latest,
            } => DbError::NoSuchVersion {
                version,
                oldest,
                latest,
            },
            EngineError::InvalidArgument(what) => DbError::InvalidArgument(what),
            EngineError::Closed => DbError::Closed,
            EngineError::Poisoned => DbError::Poisoned("an earlier write or sync failed".into()),
            other => DbError::Io(Arc::new(other)),
        }
    }
}

impl From<MerkleError> for DbError {
    fn from(e: MerkleError) -> Self {
        match e {
            // A failure of the engine under the trie keeps its own type.
            MerkleError::Source(source) => match source.downcast::<EngineError>() {
                Ok(engine) => DbError::from(*engine),
                Err(other) => DbError::Trie(Arc::new(MerkleError::Source(other))),
            },
            other => DbError::Trie(Arc::new(other)),
        }
    }
}

/// The result type of the Db.
pub type Result<T, E = DbError> = std::result::Result<T, E>;
