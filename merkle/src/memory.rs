//! An in-memory, multi-version page store: the reference [`PageSource`].
//!
//! It keeps what a disk store keeps (every page record as encoded bytes,
//! bases and deltas) and a decoded copy of the newest version of each page.
//! Reads of older versions rebuild the page from its newest base at or
//! below the version and the deltas after it, exactly as a store on disk
//! does, so tests of this store test the record formats too.

use std::borrow::Cow;
use std::hash::BuildHasher;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use rayon::prelude::*;
use rustc_hash::{FxBuildHasher, FxHashMap as HashMap};
use verity_codec::page::{PageDelta, PageImage, PageRecord};
use verity_codec::SharedBytes;

use crate::error::MerkleError;
use crate::page::{ChainInfo, Page, VersionedPage};
use crate::path::PagePath;
use crate::source::{PageSource, PageView};
use crate::update::{PageWrite, UpdateOutput};

/// Records of one page, oldest first, kept as the update wrote them
/// (sharing an allocation with the other records of their batch of pages,
/// which lives while any of them is kept).
type Records = Vec<(u64, SharedBytes)>;

/// Everything the store holds of one page path.
#[derive(Default)]
struct Entry {
    /// Decoded newest version, while the page exists.
    latest: Option<VersionedPage>,
    /// Every retained record, by increasing version.
    records: Records,
}

impl Entry {
    /// Index just past the newest record at or below `version`.
    fn upto(&self, version: u64) -> usize {
        self.records.partition_point(|r| r.0 <= version)
    }
}

/// Pages are spread over this many independently locked maps, so an update's
/// records are filed on every core at once.
const SHARDS: usize = 64;

/// Pages this close to the root (the root page, and the pages at depths 2
/// and 4) are found by index, not hashed: at 1M keys that is every page.
const DENSE_DEPTH: usize = 4;

/// The index of a page at most [`DENSE_DEPTH`] nibbles deep among all such
/// pages, or `None` for a deeper one: the root is 0, the pages at depth 2
/// follow in path order, then those at depth 4.
fn dense_index(path: &PagePath) -> Option<usize> {
    let b = path.as_padded();
    match path.len() {
        0 => Some(0),
        2 => Some(1 + usize::from(b[0])),
        4 => Some(257 + (usize::from(b[0]) << 8 | usize::from(b[1]))),
        _ => None,
    }
}

const _: () = assert!(DENSE_DEPTH == 2 * crate::page::PAGE_LEVELS);

/// One shard of the store: the pages near the root that fall into it by
/// index, the deeper ones by hash.
///
/// A page read by an update is found in one cache miss by index where a
/// hash map takes two that depend on each other (its control bytes, then
/// the entry).
#[derive(Default)]
struct Shard {
    /// Slot `i` holds the page of dense index `i * SHARDS + shard`, if any.
    dense: Vec<Option<(PagePath, Entry)>>,
    /// The pages deeper than [`DENSE_DEPTH`].
    deep: HashMap<PagePath, Entry>,
}

impl Shard {
    /// The entry of `path`, if the shard holds one.
    fn get(&self, path: &PagePath) -> Option<&Entry> {
        match dense_index(path) {
            Some(i) => self.dense.get(i / SHARDS)?.as_ref().map(|(_, e)| e),
            None => self.deep.get(path),
        }
    }

    /// The entry of `path`, made empty if there is none.
    fn entry(&mut self, path: PagePath) -> &mut Entry {
        match dense_index(&path) {
            Some(i) => {
                let i = i / SHARDS;
                if self.dense.len() <= i {
                    self.dense.resize_with(i + 1, || None);
                }
                &mut self.dense[i]
                    .get_or_insert_with(|| (path, Entry::default()))
                    .1
            }
            None => self.deep.entry(path).or_default(),
        }
    }

    /// Forgets the entry of `path`.
    fn remove(&mut self, path: &PagePath) {
        match dense_index(path) {
            Some(i) => {
                if let Some(slot) = self.dense.get_mut(i / SHARDS) {
                    *slot = None;
                }
            }
            None => {
                self.deep.remove(path);
            }
        }
    }

    /// Every entry with its path.
    fn iter_mut(&mut self) -> impl Iterator<Item = (&PagePath, &mut Entry)> {
        let dense = self.dense.iter_mut().flatten().map(|(p, e)| (&*p, e));
        dense.chain(self.deep.iter_mut())
    }

    /// Every entry.
    fn values(&self) -> impl Iterator<Item = &Entry> {
        let dense = self.dense.iter().flatten().map(|(_, e)| e);
        dense.chain(self.deep.values())
    }
}

#[derive(Default, Clone, Copy)]
struct Meta {
    /// Newest version applied.
    version: u64,
    /// Oldest version still readable.
    floor: u64,
}

/// A multi-version page store in memory.
///
/// Readers hold `meta` for reading across a read (recursively, so a
/// nested read on the same thread never waits behind a queued writer), so
/// `prune` (which holds it for writing while it rewrites records) never
/// shows them a half-pruned page. `apply` only adds records above every version a reader
/// can ask for, so it runs beside readers and takes `meta` just to publish
/// the new version; `writer` keeps applies and prunes one at a time.
pub struct MemPageStore {
    writer: Mutex<()>,
    meta: RwLock<Meta>,
    shards: Box<[RwLock<Shard>]>,
}

impl Default for MemPageStore {
    fn default() -> Self {
        MemPageStore {
            writer: Mutex::new(()),
            meta: RwLock::default(),
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
        }
    }
}

/// Sizes of a [`MemPageStore`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemStats {
    /// Pages that exist at the newest version.
    pub live_pages: usize,
    /// Records kept over all versions.
    pub records: usize,
    /// Bytes of those records.
    pub record_bytes: usize,
}

fn shard_of(path: &PagePath) -> usize {
    match dense_index(path) {
        Some(i) => i % SHARDS,
        None => (FxBuildHasher.hash_one(path) >> 58) as usize % SHARDS,
    }
}

impl MemPageStore {
    /// An empty store (every version reads as the empty trie).
    pub fn new() -> Self {
        Self::default()
    }

    /// Newest version applied (0 before the first).
    pub fn version(&self) -> u64 {
        self.meta.read_recursive().version
    }

    /// Oldest version still readable.
    pub fn floor(&self) -> u64 {
        self.meta.read_recursive().floor
    }

    /// Stores the records of an update. Versions must be applied in
    /// increasing order, each built on the newest version stored.
    pub fn apply(&self, output: &UpdateOutput) -> Result<(), MerkleError> {
        let _writer = self.writer.lock();
        if output.version <= self.version() {
            return Err(MerkleError::InvalidVersion(
                "updates must be applied in increasing version order",
            ));
        }
        let mut by_shard: Vec<Vec<&PageWrite>> = vec![Vec::new(); SHARDS];
        for w in &output.writes {
            by_shard[shard_of(&w.path)].push(w);
        }
        // Every record must follow the newest one stored for its page, or a
        // delta would be read against the wrong predecessor. Checked for
        // all pages before any is changed.
        let consistent = by_shard.par_iter().enumerate().all(|(i, writes)| {
            let shard = self.shards[i].read();
            writes.iter().all(|w| {
                let expected = shard
                    .get(&w.path)
                    .and_then(|e| e.latest.as_ref().and(e.records.last()))
                    .map(|r| r.0);
                w.previous == expected
            })
        });
        if !consistent {
            return Err(MerkleError::InvalidVersion(
                "the update was not built on the newest version of the store",
            ));
        }
        let version = output.version;
        by_shard.par_iter().enumerate().for_each(|(i, writes)| {
            let mut shard = self.shards[i].write();
            for w in writes {
                let entry = shard.entry(w.path);
                entry.records.push((version, w.record.clone()));
                entry.latest = w.page.as_ref().map(|page| VersionedPage {
                    version,
                    page: page.clone(),
                    chain: w.chain,
                });
            }
        });
        self.meta.write().version = version;
        Ok(())
    }

    /// Forgets every version below `floor`; `floor` itself stays readable
    /// (the newest record at or below it becomes a base where it was a
    /// delta).
    pub fn prune(&self, floor: u64) -> Result<(), MerkleError> {
        let _writer = self.writer.lock();
        let mut meta = self.meta.write();
        if floor <= meta.floor {
            return Ok(());
        }
        let floor = floor.min(meta.version);
        self.shards
            .par_iter()
            .try_for_each(|shard| prune_shard(&mut shard.write(), floor))?;
        meta.floor = floor;
        Ok(())
    }

    /// Record counts and sizes.
    pub fn stats(&self) -> MemStats {
        let mut stats = MemStats::default();
        for shard in self.shards.iter() {
            for entry in shard.read().values() {
                stats.live_pages += usize::from(entry.latest.is_some());
                stats.records += entry.records.len();
                stats.record_bytes += entry.records.iter().map(|r| r.1.len()).sum::<usize>();
            }
        }
        stats
    }

    /// The page at `path` as of `version`, always rebuilt from the stored
    /// records (never from the decoded copy of the newest version).
    pub fn page_from_records(
        &self,
        path: &PagePath,
        version: u64,
    ) -> Result<Option<VersionedPage>, MerkleError> {
        let _meta = self.read_guard(version)?;
        let shard = self.shards[shard_of(path)].read();
        let Some(entry) = shard.get(path) else {
            return Ok(None);
        };
        match entry.upto(version) {
            0 => Ok(None),
            n => rebuild(&entry.records[..n], path),
        }
    }

    /// The stored record of `path` at exactly `version`, if any.
    pub fn record(&self, path: &PagePath, version: u64) -> Option<SharedBytes> {
        let _meta = self.meta.read_recursive();
        let shard = self.shards[shard_of(path)].read();
        let records = &shard.get(path)?.records;
        let i = records.binary_search_by_key(&version, |r| r.0).ok()?;
        Some(records[i].1.clone())
    }
}

/// Drops the records of `shard` that no version from `floor` on reads,
/// rewriting the newest record at or below `floor` as a base.
fn prune_shard(shard: &mut Shard, floor: u64) -> Result<(), MerkleError> {
    let mut emptied = Vec::new();
    for (path, entry) in shard.iter_mut() {
        let n = entry.upto(floor);
        if n == 0 {
            continue;
        }
        let at = entry.records[n - 1].0;
        let rebuilt = rebuild(&entry.records[..n], path)?;
        let mut kept: Records = Vec::with_capacity(entry.records.len() - n + 1);
        if let Some(vp) = rebuilt {
            kept.push((at, PageRecord::Base(vp.page.to_image()).encode().into()));
        }
        kept.extend(entry.records.drain(n..));
        entry.records = kept;
        if let Some(latest) = &mut entry.latest {
            // The chain of a page rewritten above starts at a base now.
            latest.chain = chain_of(&entry.records);
        }
        if entry.records.is_empty() {
            emptied.push(*path);
        }
    }
    for path in emptied {
        shard.remove(&path);
    }
    Ok(())
}

/// The chain state of the last of `records`.
fn chain_of(records: &[(u64, SharedBytes)]) -> ChainInfo {
    let mut chain = ChainInfo::default();
    for (_, bytes) in records.iter().rev() {
        if PageRecord::is_delta(bytes) {
            chain.deltas += 1;
            chain.delta_bytes += bytes.len() as u32;
        } else {
            break;
        }
    }
    chain
}

/// Rebuilds the page at `path` as of the last of `records` (oldest first,
/// not empty) from its newest base and the deltas after it: what a store
/// that keeps page records does to read a page. A removal as the last
/// record gives `None`.
pub fn rebuild<B: AsRef<[u8]>>(
    records: &[(u64, B)],
    path: &PagePath,
) -> Result<Option<VersionedPage>, MerkleError> {
    let version = records.last().map_or(0, |r| r.0);
    let codec = |source| MerkleError::Codec {
        path: *path,
        source,
    };
    let mut chain = Vec::new();
    let mut info = ChainInfo::default();
    let mut base: Option<PageImage> = None;
    for (_, bytes) in records.iter().rev() {
        match PageRecord::decode(bytes.as_ref()).map_err(codec)? {
            PageRecord::Base(image) => {
                base = Some(image);
                break;
            }
            PageRecord::Delta(delta) => {
                chain.push(delta);
                info.deltas += 1;
                info.delta_bytes += bytes.as_ref().len() as u32;
            }
            PageRecord::Removed if chain.is_empty() => return Ok(None),
            PageRecord::Removed => {
                return Err(MerkleError::CorruptPage {
                    path: *path,
                    detail: "a delta follows a removal",
                })
            }
        }
    }
    let Some(mut image) = base else {
        return Err(MerkleError::CorruptPage {
            path: *path,
            detail: "a delta chain has no base",
        });
    };
    if !chain.is_empty() {
        // Oldest first, applied in one pass.
        chain.reverse();
        image = PageDelta::apply_chain(&image, &chain).map_err(codec)?;
    }
    let page = Page::from_image(&image, path)?;
    // Debug builds (the tests) check every stored hash a page is read with.
    #[cfg(debug_assertions)]
    page.verify_stored_hashes()
        .map_err(|detail| MerkleError::CorruptPage {
            path: *path,
            detail,
        })?;
    Ok(Some(VersionedPage {
        version,
        page: Arc::new(page),
        chain: info,
    }))
}

/// The page at `path` as of `version` in `shard`.
fn page_in(
    shard: &Shard,
    path: &PagePath,
    version: u64,
) -> Result<Option<VersionedPage>, MerkleError> {
    Ok(page_ref(shard, path, version)?.map(Cow::into_owned))
}

/// [`page_in`], borrowing the newest version of the page from the shard.
fn page_ref<'a>(
    shard: &'a Shard,
    path: &PagePath,
    version: u64,
) -> Result<Option<Cow<'a, VersionedPage>>, MerkleError> {
    let Some(entry) = shard.get(path) else {
        return Ok(None);
    };
    // The newest version, the one an update reads, without a search of
    // the records (the latest page is the newest record).
    if let Some(vp) = entry.latest.as_ref().filter(|vp| vp.version <= version) {
        return Ok(Some(Cow::Borrowed(vp)));
    }
    let n = entry.upto(version);
    if n == 0 {
        return Ok(None);
    }
    let v = entry.records[n - 1].0;
    match &entry.latest {
        Some(vp) if vp.version == v => Ok(Some(Cow::Borrowed(vp))),
        _ if n == entry.records.len() => Ok(None),
        _ => Ok(rebuild(&entry.records[..n], path)?.map(Cow::Owned)),
    }
}

/// The pages of a [`MemPageStore`] as of one version: every shard held for
/// reading (and the floor, against a prune), so a read takes no lock.
struct MemView<'a> {
    _meta: RwLockReadGuard<'a, Meta>,
    shards: Vec<RwLockReadGuard<'a, Shard>>,
    version: u64,
}

impl PageView for MemView<'_> {
    fn page(&self, path: &PagePath) -> Result<Option<Cow<'_, VersionedPage>>, MerkleError> {
        page_ref(&self.shards[shard_of(path)], path, self.version)
    }
}

/// Batches at least this large are read on several threads.
const PARALLEL_READS: usize = 64;

impl MemPageStore {
    fn read_page(
        &self,
        path: &PagePath,
        version: u64,
    ) -> Result<Option<VersionedPage>, MerkleError> {
        page_in(&self.shards[shard_of(path)].read(), path, version)
    }

    /// Holds off pruning while a read runs, after checking the version
    /// against the floor.
    ///
    /// Recursive: a thread that holds the guard across a parallel read may
    /// run another read while it waits, and a queued `prune` must not make
    /// that second read wait on the first.
    fn read_guard(&self, version: u64) -> Result<RwLockReadGuard<'_, Meta>, MerkleError> {
        let meta = self.meta.read_recursive();
        if version < meta.floor {
            return Err(MerkleError::InvalidVersion(
                "version is below the retention floor",
            ));
        }
        Ok(meta)
    }
}

impl PageSource for MemPageStore {
    fn page(&self, path: &PagePath, version: u64) -> Result<Option<VersionedPage>, MerkleError> {
        let _meta = self.read_guard(version)?;
        self.read_page(path, version)
    }

    fn pages(
        &self,
        paths: &[PagePath],
        version: u64,
    ) -> Result<Vec<Option<VersionedPage>>, MerkleError> {
        let _meta = self.read_guard(version)?;
        if paths.len() >= PARALLEL_READS {
            paths
                .par_iter()
                .map(|p| self.read_page(p, version))
                .collect()
        } else {
            paths.iter().map(|p| self.read_page(p, version)).collect()
        }
    }

    fn view(&self, version: u64) -> Result<Option<Box<dyn PageView + '_>>, MerkleError> {
        let meta = self.read_guard(version)?;
        // Recursive: a writer queued on a shard does not make these wait
        // on a reader of the same thread.
        let shards = self.shards.iter().map(|s| s.read_recursive()).collect();
        Ok(Some(Box::new(MemView {
            _meta: meta,
            shards,
            version,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::key_hash;
    use crate::{Trie, Update};

    #[test]
    fn pages_near_the_root_have_distinct_dense_slots() {
        let mut seen = vec![false; 1 + 256 + 65536];
        let mut paths = vec![PagePath::ROOT];
        for a in 0..=255u8 {
            paths.push(PagePath::from_key(&[a; 32], 2));
            for b in 0..=255u8 {
                let mut key = [0; 32];
                (key[0], key[1]) = (a, b);
                paths.push(PagePath::from_key(&key, 4));
            }
        }
        for path in &paths {
            let i = dense_index(path).expect("a page at most four nibbles deep");
            assert!(
                !std::mem::replace(&mut seen[i], true),
                "{path:?} shares {i}"
            );
        }
        assert!(seen.iter().all(|s| *s));
        for len in [1, 3, 5, 6, 64] {
            assert_eq!(dense_index(&PagePath::from_key(&[7; 32], len)), None);
        }
    }

    /// Keys spread over the trie, and keys sharing three bytes, so that
    /// the store holds pages by index and deeper pages by hash.
    fn keys() -> Vec<[u8; 32]> {
        let mut keys: Vec<_> = (0u32..3000).map(|i| key_hash(&i.to_le_bytes())).collect();
        for i in 0u8..40 {
            let mut k = key_hash(&[i]);
            k[..3].copy_from_slice(&[0xab, 0xcd, 0xef]);
            keys.push(k);
        }
        keys.sort_unstable();
        keys
    }

    fn write(trie: &Trie<MemPageStore>, version: u64, ups: &[Update]) {
        let out = trie.update(version - 1, version, ups).expect("update");
        trie.source().apply(&out).expect("apply");
    }

    #[test]
    fn pruning_past_removed_pages_keeps_what_a_fresh_store_holds() {
        let keys = keys();
        let trie = Trie::new(MemPageStore::new());
        let all: Vec<Update> = keys.iter().map(|k| (*k, Some([1; 32]))).collect();
        write(&trie, 1, &all);
        let deep = [0xab, 0xcd, 0xef];
        let deep = PagePath::from_key(keys.iter().find(|k| k[..3] == deep).expect("key"), 6);
        assert!(trie.source().page(&deep, 1).expect("read").is_some());
        // Every other key goes, and every key of the deep pages.
        let gone: Vec<Update> = keys
            .iter()
            .enumerate()
            .filter(|(i, k)| i % 2 == 0 || k[..3] == [0xab, 0xcd, 0xef])
            .map(|(_, k)| (*k, None))
            .collect();
        write(&trie, 2, &gone);
        assert!(trie.source().page(&deep, 2).expect("read").is_none());
        assert!(trie.source().page(&deep, 1).expect("read").is_some());
        trie.source().prune(2).expect("prune");

        let kept: Vec<Update> = all
            .iter()
            .filter(|u| !gone.iter().any(|g| g.0 == u.0))
            .copied()
            .collect();
        let fresh = Trie::new(MemPageStore::new());
        write(&fresh, 1, &kept);
        let (pruned, fresh) = (trie.source().stats(), fresh.source().stats());
        assert_eq!(pruned.live_pages, fresh.live_pages);
        assert_eq!(pruned.records, fresh.live_pages, "one base per live page");
        let entries = |s: &MemPageStore| -> usize {
            s.shards.iter().map(|sh| sh.read().values().count()).sum()
        };
        assert_eq!(
            entries(trie.source()),
            fresh.live_pages,
            "no entry left empty"
        );
        assert_eq!(trie.source().record(&deep, 1), None);
        assert_eq!(
            trie.source()
                .page_from_records(&deep, 2)
                .expect("read")
                .map(|p| p.version),
            None
        );
    }
}
