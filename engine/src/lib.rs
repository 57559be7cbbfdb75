//! The versioned page store of Verity.
//!
//! Built so far: the I/O seam ([`io::IoBackend`]) with the operating
//! system's files ([`io::StdIo`]), an io_uring backend on Linux
//! (`uring::UringIo`; [`io::best_backend`] picks it when the kernel allows)
//! and a simulated disk that crashes and fails on demand
//! ([`sim::SimDisk`]), and the write-ahead log ([`wal::Wal`]). The
//! memtable, segment files, manifest and compaction follow.

pub mod error;
pub mod io;
pub mod sim;
#[cfg(target_os = "linux")]
pub mod uring;
pub mod wal;

pub use error::{EngineError, Result};

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
