//! Errors of the trie and of proof verification.

use verity_codec::CodecError;

use crate::hash::{Hash, KeyHash};
use crate::path::PagePath;

/// Why a trie operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MerkleError {
    /// Stored bytes could not be decoded.
    #[error("page {path:?}: {source}")]
    Codec {
        /// The page being decoded.
        path: PagePath,
        /// What the codec found.
        #[source]
        source: CodecError,
    },
    /// A page decoded but does not have a valid trie shape.
    #[error("corrupt page {path:?}: {detail}")]
    CorruptPage {
        /// The page.
        path: PagePath,
        /// What is wrong.
        detail: &'static str,
    },
    /// A page that the trie structure refers to is missing from the source.
    #[error("page {path:?} missing at version {version}")]
    MissingPage {
        /// The page.
        path: PagePath,
        /// The version read.
        version: u64,
    },
    /// The page source failed.
    #[error("page source: {0}")]
    Source(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Updates were not sorted by key hash, or a key hash appeared twice.
    #[error("updates not strictly sorted by key hash at index {index}")]
    UnsortedUpdates {
        /// Index of the first out-of-order update.
        index: usize,
    },
    /// A version argument is invalid (for example, a write not newer than
    /// the read it builds on).
    #[error("invalid version: {0}")]
    InvalidVersion(&'static str),
    /// An argument is out of its range.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// Keys handed to a proof were not sorted or not unique.
    #[error("keys to prove not strictly sorted at index {index}")]
    UnsortedKeys {
        /// Index of the first out-of-order key.
        index: usize,
    },
}

/// Why a proof was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The proof bytes could not be decoded.
    #[error("proof does not decode: {0}")]
    Codec(#[from] CodecError),
    /// The proof's shape breaks a rule of the trie.
    #[error("malformed proof: {0}")]
    Malformed(&'static str),
    /// The proof hashes to another root.
    #[error("proof hashes to {computed:02x?}, not the expected root")]
    RootMismatch {
        /// The root the proof leads to.
        computed: Hash,
    },
    /// A claimed key lies in a part of the trie the proof does not open.
    #[error("proof does not cover key {key:02x?}")]
    NotCovered {
        /// The key hash.
        key: KeyHash,
    },
    /// The proof shows a different value (or presence/absence) for a key.
    #[error("proof contradicts the claim for key {key:02x?}")]
    WrongClaim {
        /// The key hash.
        key: KeyHash,
    },
    /// Claims were not strictly sorted by key hash.
    #[error("claims not strictly sorted at index {index}")]
    UnsortedClaims {
        /// Index of the first out-of-order claim.
        index: usize,
    },
    /// A range proof leaves part of its range unopened.
    #[error("range proof hides part of its range")]
    IncompleteRange,
    /// The entries of a range differ from those the proof opens.
    #[error("range entries differ from the proof at entry {index}")]
    RangeMismatch {
        /// Index of the first differing entry.
        index: usize,
    },
}
