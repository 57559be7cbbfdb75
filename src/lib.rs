//! Verity: a versioned, authenticated key-value state store.
//!
//! Every committed block is a *version*; every retained version can be
//! read and proven against its 32-byte state root. This crate is the facade
//! that node implementations link. Today it offers the multi-version Merkle
//! trie over the in-memory page store, with every proof kind; the on-disk
//! engine, the `Db` with snapshots and asynchronous commits, and the C ABI
//! build on it (see `ARCHITECTURE.md`).
//!
//! ```
//! use verity::{key_hash, value_hash, verify, MemPageStore, Trie};
//!
//! let trie = Trie::new(MemPageStore::new());
//! let mut batch = vec![
//!     (key_hash(b"alice"), Some(value_hash(b"10"))),
//!     (key_hash(b"bob"), Some(value_hash(b"20"))),
//! ];
//! batch.sort();
//! let v1 = trie.update(0, 1, &batch)?;
//! trie.source().apply(&v1)?;
//!
//! let alice = key_hash(b"alice");
//! let proof = trie.prove(1, &[alice])?;
//! assert!(verify(&v1.root, &proof, &[(alice, Some(value_hash(b"10")))]).is_ok());
//! # Ok::<(), verity::MerkleError>(())
//! ```

pub use verity_codec as codec;
pub use verity_engine as engine;
pub use verity_merkle as merkle;

pub use verity_merkle::hash::{key_hash, value_hash};
pub use verity_merkle::{
    verify, verify_range, DeltaPolicy, Hash, KeyHash, MemPageStore, MerkleError, PageSource, Proof,
    ProofError, RangeProof, Trie, Update, UpdateOutput, ValueHash, EMPTY,
};
