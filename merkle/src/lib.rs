//! The multi-version Merkle trie of Verity: pure logic over a [`PageSource`].
//!
//! A 16-ary sparse Merkle trie over `blake3(key)` paths, in the Jellyfish
//! shape: a leaf sits at the shallowest nibble depth where its path is
//! unique; the root is always an internal node. An internal node's hash is a
//! binary Merkle tree over its 16 slots. The trie is stored as pages of
//! [`PAGE_LEVELS`] nibble levels, addressed by `(page path, version)`, each
//! new version of a page written as a delta against the previous one with a
//! full base every few versions.
//!
//! This crate knows nothing of files: a store implements [`PageSource`]
//! and stores what [`Trie::update`] returns. [`MemPageStore`] is the
//! in-memory store. Proof verification needs only a root hash.
//!
//! ```
//! use verity_merkle::{hash, verify, MemPageStore, Trie};
//!
//! let trie = Trie::new(MemPageStore::new());
//! let (k, v) = (hash::key_hash(b"alice"), hash::value_hash(b"100"));
//! let out = trie.update(0, 1, &[(k, Some(v))])?;
//! trie.source().apply(&out)?;
//! assert_eq!(trie.get(1, &k)?, Some(v));
//! let proof = trie.prove(1, &[k])?;
//! assert!(verify(&out.root, &proof, &[(k, Some(v))]).is_ok());
//! assert!(verify(&out.root, &proof, &[(k, None)]).is_err());
//! # Ok::<(), verity_merkle::MerkleError>(())
//! ```

pub mod error;
pub mod hash;
pub mod memory;
pub mod page;
pub mod path;
pub mod prefetch;
pub mod proof;
pub mod read;
pub mod source;
pub mod update;

pub use error::{MerkleError, ProofError};
pub use hash::{Hash, KeyHash, ValueHash, EMPTY};
pub use memory::{rebuild as rebuild_page, MemPageStore};
pub use page::{ChainInfo, Page, VersionedPage, PAGE_LEVELS};
pub use path::PagePath;
pub use proof::{verify, verify_range, Proof, RangeProof};
pub use source::{PageSource, PageView};
pub use update::{
    DeltaPolicy, PageWrite, RecordKind, StalePage, Update, UpdateOutput, UpdateStats,
};
pub use verity_codec::SharedBytes;

/// The trie over a page source: reads, updates and proofs at any version the
/// source holds.
#[derive(Debug, Clone)]
pub struct Trie<S> {
    source: S,
    policy: DeltaPolicy,
}

impl<S: PageSource> Trie<S> {
    /// The trie over `source`, with the default [`DeltaPolicy`].
    pub fn new(source: S) -> Self {
        Self::with_policy(source, DeltaPolicy::default())
    }

    /// The trie over `source`, writing deltas by `policy`.
    pub fn with_policy(source: S, policy: DeltaPolicy) -> Self {
        Trie { source, policy }
    }

    /// The page source.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// The root hash as of `version`.
    pub fn root(&self, version: u64) -> Result<Hash, MerkleError> {
        read::root(&self.source, version)
    }

    /// The value hash of `key_hash` as of `version`.
    pub fn get(&self, version: u64, key_hash: &KeyHash) -> Result<Option<ValueHash>, MerkleError> {
        read::get(&self.source, version, key_hash)
    }

    /// Up to `limit` leaves with key hash `>= from` as of `version`, in
    /// key-hash order.
    pub fn leaves(
        &self,
        version: u64,
        from: &KeyHash,
        limit: usize,
    ) -> Result<Vec<(KeyHash, ValueHash)>, MerkleError> {
        read::leaves(&self.source, version, from, limit)
    }

    /// Walks every page as of `version` and recomputes every hash that
    /// reading a page trusts (see [`read::check_pages`]); returns the
    /// number of pages.
    pub fn check_pages(&self, version: u64) -> Result<usize, MerkleError> {
        read::check_pages(&self.source, version)
    }

    /// Applies `updates` (strictly sorted by key hash) to the trie as of
    /// `read_version` and returns version `write_version`: its root, the
    /// page records to store and the records it makes stale. The source is
    /// not changed; the caller stores the output.
    pub fn update(
        &self,
        read_version: u64,
        write_version: u64,
        updates: &[Update],
    ) -> Result<UpdateOutput, MerkleError> {
        update::apply(
            &self.source,
            self.policy,
            read_version,
            write_version,
            updates,
        )
    }

    /// A proof of presence or absence of each of `keys` (strictly sorted)
    /// as of `version`.
    pub fn prove(&self, version: u64, keys: &[KeyHash]) -> Result<Proof, MerkleError> {
        proof::prove(&self.source, version, keys)
    }

    /// Up to `limit` entries from `from` on and a proof that they are
    /// complete; see [`proof::prove_range`].
    pub fn prove_range(
        &self,
        version: u64,
        from: &KeyHash,
        limit: usize,
    ) -> Result<(Vec<(KeyHash, ValueHash)>, RangeProof), MerkleError> {
        proof::prove_range(&self.source, version, from, limit)
    }
}
