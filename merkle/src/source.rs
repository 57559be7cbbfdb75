//! Where the trie reads its pages from.

use crate::error::MerkleError;
use crate::page::VersionedPage;
use crate::path::PagePath;

/// A multi-version store of pages, as the trie sees it.
///
/// `page(path, v)` returns the page at `path` as of version `v`: the newest
/// version `<= v` that wrote it, or `None` if no page exists there at `v`
/// (never written, or removed). Implementations must be safe to share
/// between the threads that hash disjoint subtrees.
pub trait PageSource: Sync {
    /// The page at `path` as of `version`.
    fn page(&self, path: &PagePath, version: u64) -> Result<Option<VersionedPage>, MerkleError>;

    /// Many pages as of one version, in the order asked. A store with real
    /// I/O overrides this to submit all its reads at once.
    fn pages(
        &self,
        paths: &[PagePath],
        version: u64,
    ) -> Result<Vec<Option<VersionedPage>>, MerkleError> {
        paths.iter().map(|p| self.page(p, version)).collect()
    }

    /// True when every page is in memory, so reading one costs no I/O: an
    /// update then reads each page when its walk reaches it, on the thread
    /// that updates the page, instead of a level of pages at a time in
    /// [`PageSource::pages`] calls beforehand. False unless a store says so.
    fn in_memory(&self) -> bool {
        false
    }
}

impl<T: PageSource + ?Sized> PageSource for &T {
    fn page(&self, path: &PagePath, version: u64) -> Result<Option<VersionedPage>, MerkleError> {
        (**self).page(path, version)
    }

    fn pages(
        &self,
        paths: &[PagePath],
        version: u64,
    ) -> Result<Vec<Option<VersionedPage>>, MerkleError> {
        (**self).pages(paths, version)
    }

    fn in_memory(&self) -> bool {
        (**self).in_memory()
    }
}
