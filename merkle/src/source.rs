//! Where the trie reads its pages from.

use std::borrow::Cow;

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

    /// For a store that serves one page at a time well: the pages as of
    /// `version` for the length of one update. An update given a view
    /// reads each page when its walk reaches it, on the thread that
    /// updates the page, instead of a level of pages at a time in
    /// [`PageSource::pages`] calls beforehand (no map of a level's pages
    /// is built, and the reads run on every thread of the update). A store
    /// in memory lends its pages by reference (no lock taken and no
    /// reference count touched per page); a store with a cache reads the
    /// pages it misses where the walk meets them. `None` (the default) for
    /// a store whose [`PageSource::pages`] submits a level's reads
    /// together.
    fn view(&self, version: u64) -> Result<Option<Box<dyn PageView + '_>>, MerkleError> {
        let _ = version;
        Ok(None)
    }
}

/// The pages of a store as of one version (see [`PageSource::view`]):
/// what it returns for a path does not change while the view lives.
pub trait PageView: Sync {
    /// The page at `path`: borrowed from the store, or built for the view.
    fn page(&self, path: &PagePath) -> Result<Option<Cow<'_, VersionedPage>>, MerkleError>;
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

    fn view(&self, version: u64) -> Result<Option<Box<dyn PageView + '_>>, MerkleError> {
        (**self).view(version)
    }
}
