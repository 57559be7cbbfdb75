//! The versioned page store of Verity.
//!
//! An [`Engine`] keeps three ordered namespaces (pages, state, meta) of
//! `(key, version) -> value or deletion`, so any retained version of a key
//! is one seek. Commits go to the write-ahead log ([`wal`]) and the
//! [`memtable`]; full memtables are flushed to immutable [`segment`] files,
//! which background compaction merges while dropping history below the
//! retention floor. The [`manifest`] names the live files. Every byte goes
//! through the I/O seam ([`io::IoBackend`]): io_uring on Linux
//! (`uring::UringIo`, chosen by [`io::best_backend`] when the kernel
//! allows), positional reads and writes ([`io::StdIo`]) otherwise, or a
//! simulated disk that crashes and fails on demand ([`sim::SimDisk`]).
//!
//! It is not a trie: it knows nothing of hashing; `verity-merkle` decides
//! what the pages hold.
//!
//! ```
//! use std::sync::Arc;
//! use verity_engine::{Engine, Namespace, Options, WriteBatch};
//! use verity_engine::sim::SimDisk;
//!
//! let disk = Arc::new(SimDisk::new());
//! let engine = Engine::open(disk, "/db".as_ref(), Options::for_tests())?;
//! let mut batch = WriteBatch::new();
//! batch.put(Namespace::State, b"alice", b"10")?;
//! engine.commit_durable(1, batch)?;
//! let mut batch = WriteBatch::new();
//! batch.delete(Namespace::State, b"alice")?;
//! engine.commit_durable(2, batch)?;
//! assert_eq!(engine.get(Namespace::State, b"alice", 1)?.as_deref(), Some(&b"10"[..]));
//! assert_eq!(engine.get(Namespace::State, b"alice", 2)?, None);
//! # Ok::<(), verity_engine::EngineError>(())
//! ```

pub mod cache;
pub mod check;
pub mod engine;
pub mod error;
pub mod io;
pub mod manifest;
pub mod memtable;
pub mod segment;
pub mod sim;
#[cfg(target_os = "linux")]
pub mod uring;
pub mod wal;

pub use engine::{Engine, EngineStats, Found, Options};
pub use error::{EngineError, Result};
pub use memtable::{Record, RecordRef, Value, WriteBatch};
pub use verity_codec::SharedBytes;

/// The three ordered namespaces the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Namespace {
    /// `(page path, version) -> page record` (base page, delta or removal).
    Pages,
    /// `(key hash, version) -> value or tombstone`, with the original key.
    State,
    /// `version -> root hash and commit info`.
    Meta,
}

impl Namespace {
    /// The byte that prefixes every key of the namespace in the store.
    pub fn prefix(self) -> u8 {
        match self {
            Namespace::Pages => b'P',
            Namespace::State => b'S',
            Namespace::Meta => b'M',
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Namespace;

    #[test]
    fn namespace_prefixes_are_distinct() {
        let all = [Namespace::Pages, Namespace::State, Namespace::Meta];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a.prefix(), b.prefix());
            }
        }
    }
}
