//! Verity: a versioned, authenticated key-value state store.
//!
//! Every committed block is a *version*; every retained version can be
//! read and proven against its 32-byte state root. This crate is the facade
//! that node implementations link: the [`Db`] joins the multi-version
//! Merkle trie and the on-disk engine, with snapshots for parallel
//! executors and a commit pipeline.
//!
//! ```
//! use verity::{key_hash, value_hash, verify, Db, Options, WriteBatch};
//!
//! let dir = tempfile::tempdir().expect("temporary directory");
//! let db = Db::open(dir.path(), Options::laptop())?;
//! let mut batch = WriteBatch::new();
//! batch.put(b"alice", b"10")?;
//! let v1 = db.commit(batch)?;
//! // The caller may stage version 2 now; version 1 commits meanwhile.
//! let snapshot = db.snapshot(v1.version())?;
//! assert_eq!(snapshot.get(b"alice")?.as_deref(), Some(&b"10"[..]));
//! let root = v1.root()?;
//! v1.wait_durable()?;
//! let proof = snapshot.prove(b"alice")?;
//! let claim = [(key_hash(b"alice"), Some(value_hash(b"10")))];
//! assert!(verify(&root, &proof, &claim).is_ok());
//! # Ok::<(), verity::DbError>(())
//! ```
//!
//! The trie alone, over the in-memory page store:
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

pub mod alloc;
mod db;
mod error;
mod store;

pub use db::{
    CommitHandle, Db, DbStats, Entry, Options, Snapshot, SyncPolicy, WriteBatch, MAX_BATCH_BYTES,
    MAX_BATCH_WRITES, MAX_KEY_LEN, MAX_VALUE_LEN,
};
pub use error::DbError;

pub use verity_codec as codec;
pub use verity_engine as engine;
pub use verity_merkle as merkle;

pub use verity_merkle::hash::{key_hash, value_hash};
pub use verity_merkle::{
    verify, verify_range, DeltaPolicy, Hash, KeyHash, MemPageStore, MerkleError, PageSource, Proof,
    ProofError, RangeProof, Trie, Update, UpdateOutput, ValueHash, EMPTY,
};
