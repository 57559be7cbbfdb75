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

    /// For a store whose pages are all in memory: the pages as of
    /// `version`, read by reference for the length of one update (no lock
    /// taken and no reference count touched per page). An update given a
    /// view reads each page when its walk reaches it, on the thread that
    /// updates the page, instead of a level of pages at a time in
    /// [`PageSource::pages`] calls beforehand. `None` (the default) for a
    /// store with I/O to do.
    fn view(&self, version: u64) -> Result<Option<Box<dyn PageView + '_>>, MerkleError> {
        let _ = version;
        Ok(None)
    }
}

/// The pages of an in-memory store as of one version (see
/// [`PageSource::view`]); the store does not change while a view lives.
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
