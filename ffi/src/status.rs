//! Status codes, and how a failure of the `Db` becomes one.
//!
//! The values are part of the ABI: they are never renumbered, and new ones
//! are appended.

use std::any::Any;

use verity_core::engine::EngineError;
use verity_core::{DbError, MerkleError, ProofError};

/// What a call came to: `VERITY_OK`, or why not.
pub type verity_status = i32;

/// The call did what it says.
pub const VERITY_OK: verity_status = 0;
/// The key (or the next entry of an iterator) is not there. An answer, not
/// a failure: `err` is not set.
pub const VERITY_NOT_FOUND: verity_status = 1;
/// A NULL handle, key or output; a NULL pointer with a non-zero length; an
/// empty or oversized key; an oversized value; a path that is not UTF-8;
/// or an argument the database refuses (a prune past the durable version).
pub const VERITY_INVALID_ARGUMENT: verity_status = 2;
/// Bytes on disk are not what was written.
pub const VERITY_CORRUPTION: verity_status = 3;
/// An I/O call failed.
pub const VERITY_IO: verity_status = 4;
/// The version is older than the oldest retained one.
pub const VERITY_VERSION_PRUNED: verity_status = 5;
/// The version has not been committed (staged) yet.
pub const VERITY_VERSION_UNKNOWN: verity_status = 6;
/// The database was closed (`verity_close`).
pub const VERITY_CLOSED: verity_status = 7;
/// An earlier write or sync failed; close the database and open it again.
pub const VERITY_POISONED: verity_status = 8;
/// The proof does not show the claim under the root (or does not decode).
pub const VERITY_PROOF_INVALID: verity_status = 9;
/// The store is open elsewhere (in this process or another).
pub const VERITY_BUSY: verity_status = 10;
/// The library panicked; the message says where. The handles involved
/// should be freed and not used again.
pub const VERITY_PANIC: verity_status = 11;

/// A failed call on the Rust side: the status it returns and the message
/// its `verity_error` carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) status: verity_status,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(status: verity_status, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }

    /// `VERITY_INVALID_ARGUMENT` with a message naming the argument.
    pub(crate) fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(VERITY_INVALID_ARGUMENT, message)
    }

    /// `VERITY_CLOSED`: a handle whose database was closed.
    pub(crate) fn closed() -> Failure {
        Failure::new(VERITY_CLOSED, "the database is closed")
    }

    /// `VERITY_PROOF_INVALID`.
    pub(crate) fn proof(e: &ProofError) -> Failure {
        Failure::new(VERITY_PROOF_INVALID, format!("proof rejected: {e}"))
    }

    /// `VERITY_PANIC` with the panic's message.
    pub(crate) fn panic(payload: &(dyn Any + Send)) -> Failure {
        let what = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "a panic without a message".to_owned()
        };
        Failure::new(VERITY_PANIC, format!("the library panicked: {what}"))
    }
}

impl From<DbError> for Failure {
    fn from(e: DbError) -> Failure {
        Failure::new(status_of(&e), e.to_string())
    }
}

/// The status of a `Db` failure.
pub(crate) fn status_of(e: &DbError) -> verity_status {
    match e {
        DbError::Corruption { .. } => VERITY_CORRUPTION,
        DbError::Io(engine) => match engine.as_ref() {
            EngineError::Locked(_) => VERITY_BUSY,
            EngineError::Corruption { .. } => VERITY_CORRUPTION,
            EngineError::Poisoned => VERITY_POISONED,
            EngineError::Closed => VERITY_CLOSED,
            EngineError::InvalidArgument(_) => VERITY_INVALID_ARGUMENT,
            _ => VERITY_IO,
        },
        DbError::NoSuchVersion {
            version, latest, ..
        } => match latest {
            Some(latest) if version > latest => VERITY_VERSION_UNKNOWN,
            _ => VERITY_VERSION_PRUNED,
        },
        DbError::InvalidArgument(_) => VERITY_INVALID_ARGUMENT,
        DbError::Closed => VERITY_CLOSED,
        DbError::Poisoned(_) => VERITY_POISONED,
        DbError::Trie(trie) => match trie.as_ref() {
            MerkleError::InvalidArgument(_) => VERITY_INVALID_ARGUMENT,
            MerkleError::InvalidVersion(_) => VERITY_VERSION_UNKNOWN,
            // A page that does not decode, has a bad shape or is missing.
            _ => VERITY_CORRUPTION,
        },
        // A kind of failure newer than this mapping: the I/O class is the
        // one a caller retries or reports, never one it acts on blindly.
        _ => VERITY_IO,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn versions_are_pruned_or_unknown_by_where_they_fall() {
        let missing = |version| DbError::NoSuchVersion {
            version,
            oldest: Some(10),
            latest: Some(20),
        };
        assert_eq!(status_of(&missing(3)), VERITY_VERSION_PRUNED);
        assert_eq!(status_of(&missing(21)), VERITY_VERSION_UNKNOWN);
    }

    #[test]
    fn a_locked_store_is_busy() {
        let locked = DbError::Io(Arc::new(EngineError::Locked("/db".into())));
        assert_eq!(status_of(&locked), VERITY_BUSY);
        let io = DbError::Io(Arc::new(EngineError::io(
            "read",
            "/db/x",
            std::io::Error::other("boom"),
        )));
        assert_eq!(status_of(&io), VERITY_IO);
    }

    #[test]
    fn panic_messages_survive() {
        let caught = std::panic::catch_unwind(|| panic!("at {}", 7)).expect_err("panicked");
        let f = Failure::panic(caught.as_ref());
        assert_eq!(f.status, VERITY_PANIC);
        assert!(f.message.contains("at 7"), "{}", f.message);
    }
}
