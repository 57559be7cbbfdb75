//! The trie's pages in the engine: a [`PageSource`] over the engine's
//! pages namespace, with the newest decoded page of each path cached.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, RwLock};
use rayon::prelude::*;
use rustc_hash::FxBuildHasher;
use verity_engine::{Engine, EngineError, Namespace, Record, SharedBytes};
use verity_merkle::update::RecordKind;
use verity_merkle::{
    rebuild_page, MerkleError, PagePath, PageSource, PageView, UpdateOutput, VersionedPage,
};

const SHARDS: usize = 64;

/// A key, its value and the value's bytes, for [`PageCache::insert_many`].
type Entry<K, V> = (K, V, usize);

/// Fewest entries for [`PageCache::insert_many`] to fill the shards on
/// several threads.
const PARALLEL_INSERTS: usize = 256;

/// Bytes counted for a cache entry besides its page (key, map slot, queue
/// slot).
const ENTRY_OVERHEAD: usize = 96;

/// The key under which [`EngineSource`] caches the newest page of a path:
/// `(path, NEWEST)`. An older page is cached under `(path, version of its
/// newest record)`.
const NEWEST: u64 = u64::MAX;

/// A record of a page path, decoded: the page, or `None` when that record
/// removed it.
#[derive(Clone)]
struct Decoded {
    version: u64,
    page: Option<VersionedPage>,
}

/// Bytes of memory a cached page holds.
fn page_bytes(page: Option<&VersionedPage>) -> usize {
    ENTRY_OVERHEAD + page.map_or(0, |p| p.page.heap_bytes())
}

struct Slot<V> {
    value: V,
    bytes: usize,
    /// Set by a hit: the CLOCK gives the entry a second chance.
    used: AtomicBool,
}

struct Shard<K, V> {
    map: HashMap<K, Slot<V>, FxBuildHasher>,
    /// The keys of `map` in CLOCK order (a key removed out of turn may
    /// linger; eviction skips it).
    queue: VecDeque<K>,
    bytes: usize,
}

/// Decoded pages bounded in bytes: shards of a map and a CLOCK queue. A
/// hit takes the shard's read lock and marks the entry; an insert evicts
/// unmarked entries (clearing the marks it passes) until the new one fits.
struct PageCache<K, V> {
    shards: Vec<RwLock<Shard<K, V>>>,
    shard_capacity: usize,
}

impl<K: Copy + Eq + Hash, V: Clone> PageCache<K, V> {
    fn new(capacity_bytes: usize) -> Self {
        PageCache {
            shards: (0..SHARDS)
                .map(|_| {
                    RwLock::new(Shard {
                        map: HashMap::default(),
                        queue: VecDeque::new(),
                        bytes: 0,
                    })
                })
                .collect(),
            shard_capacity: capacity_bytes / SHARDS,
        }
    }

    fn shard_index(key: &K) -> usize {
        let h = FxBuildHasher.hash_one(key);
        (h >> 58) as usize % SHARDS
    }

    fn shard(&self, key: &K) -> &RwLock<Shard<K, V>> {
        &self.shards[Self::shard_index(key)]
    }

    /// The cached value of `key` (when `accept` takes it), marked as used.
    fn get(&self, key: &K, accept: impl FnOnce(&V) -> bool) -> Option<V> {
        let shard = self.shard(key).read();
        let slot = shard.map.get(key)?;
        if !accept(&slot.value) {
            return None;
        }
        slot.used.store(true, Ordering::Relaxed);
        Some(slot.value.clone())
    }

    /// Caches `value` (replacing an entry of the same key, which counts as
    /// a use), then evicts others to stay within the capacity. A value
    /// larger than a shard is not kept.
    fn insert(&self, key: K, value: V, bytes: usize) {
        self.insert_locked(&mut self.shard(&key).write(), key, value, bytes);
    }

    /// [`PageCache::insert`] when `admit`, given the value cached under
    /// `key` now (if any), allows it; both under the shard's lock.
    fn insert_if(&self, key: K, value: V, bytes: usize, admit: impl FnOnce(Option<&V>) -> bool) {
        let mut shard = self.shard(&key).write();
        if admit(shard.map.get(&key).map(|slot| &slot.value)) {
            self.insert_locked(&mut shard, key, value, bytes);
        }
    }

    /// [`PageCache::insert`] of every entry of `entries`: a shard's entries
    /// in their order, under one lock each, the shards on the threads of
    /// rayon's pool when there are `PARALLEL_INSERTS` entries or more. A
    /// block at 1M keys records about 9,500 pages, and one after another
    /// on one thread that took 9 to 11 ms of the block (BENCHMARKS.md).
    fn insert_many(&self, entries: impl Iterator<Item = Entry<K, V>>)
    where
        K: Send + Sync,
        V: Send + Sync,
    {
        let mut by_shard: Vec<Vec<Entry<K, V>>> = (0..SHARDS).map(|_| Vec::new()).collect();
        let mut n = 0;
        for entry in entries {
            by_shard[Self::shard_index(&entry.0)].push(entry);
            n += 1;
        }
        if n < PARALLEL_INSERTS {
            // A small version's pages: waking the pool costs more.
            by_shard
                .into_iter()
                .zip(&self.shards)
                .for_each(|(entries, shard)| self.fill(shard, entries));
        } else {
            by_shard
                .into_par_iter()
                .zip(&self.shards)
                .for_each(|(entries, shard)| self.fill(shard, entries));
        }
    }

    /// [`PageCache::insert`] of `entries`, all of `shard`, in their order
    /// under one lock.
    fn fill(&self, shard: &RwLock<Shard<K, V>>, entries: Vec<Entry<K, V>>) {
        if entries.is_empty() {
            return;
        }
        let mut guard = shard.write();
        for (key, value, bytes) in entries {
            self.insert_locked(&mut guard, key, value, bytes);
        }
    }

    /// [`PageCache::insert`] into `shard`, the key's shard, locked.
    fn insert_locked(&self, shard: &mut Shard<K, V>, key: K, value: V, bytes: usize) {
        if bytes > self.shard_capacity {
            // Its key may stay in the queue; eviction skips it.
            if let Some(old) = shard.map.remove(&key) {
                shard.bytes -= old.bytes;
            }
            return;
        }
        match shard.map.get_mut(&key) {
            Some(slot) => {
                shard.bytes = shard.bytes - slot.bytes + bytes;
                slot.value = value;
                slot.bytes = bytes;
                slot.used.store(true, Ordering::Relaxed);
            }
            None => {
                let slot = Slot {
                    value,
                    bytes,
                    used: AtomicBool::new(false),
                };
                shard.map.insert(key, slot);
                shard.queue.push_back(key);
                shard.bytes += bytes;
            }
        }
        while shard.bytes > self.shard_capacity {
            let Some(victim) = shard.queue.pop_front() else {
                break;
            };
            let Some(slot) = shard.map.get(&victim) else {
                continue;
            };
            if slot.used.swap(false, Ordering::Relaxed) {
                shard.queue.push_back(victim);
            } else if let Some(slot) = shard.map.remove(&victim) {
                shard.bytes -= slot.bytes;
            }
        }
    }

    /// Entries and bytes cached now.
    fn size(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(n, b), s| {
            let s = s.read();
            (n + s.map.len(), b + s.bytes)
        })
    }
}

/// Pages read from the engine's pages namespace.
pub(crate) struct EngineSource {
    engine: Arc<Engine>,
    /// Decoded pages, in one budget: the newest page of each path (under
    /// `(path, NEWEST)`), and older pages rebuilt for historical reads
    /// (under their path and the version of their newest record).
    pages: PageCache<(PagePath, u64), Decoded>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// The newest version whose pages the source was given
    /// ([`EngineSource::remember`]), or the engine's newest at the start:
    /// no page has a record past it, so a page read as of it (or later) is
    /// the newest of its path until a later version is remembered.
    frontier: AtomicU64,
    /// The newest version the engine holds as far as this source was told
    /// ([`EngineSource::committed`]), or `None` once the source stopped
    /// ([`EngineSource::stop`]): a read of a newer version that the cache
    /// misses waits for it (see [`EngineSource::page`]).
    committed: Mutex<Option<u64>>,
    advanced: Condvar,
}

fn engine_error(e: EngineError) -> MerkleError {
    MerkleError::Source(Box::new(e))
}

/// Cached pages of an [`EngineSource`].
pub(crate) struct CacheStats {
    pub(crate) pages: usize,
    pub(crate) bytes: usize,
    pub(crate) hits: u64,
    pub(crate) misses: u64,
}

impl EngineSource {
    /// A source over `engine` caching up to about `capacity_bytes` of
    /// decoded pages: the newest page of each path, and older pages rebuilt
    /// for historical reads, evicted alike.
    ///
    /// The two kinds share the budget. The older pages had an eighth of it
    /// apart, and every page an update missed was filed there, where the
    /// update writes a new version of each page it reads and files that
    /// one: at 10M keys the newest pages had seven eighths of the cache,
    /// the other eighth churned, and the hit rate was 0.52 where it is
    /// 0.58 now (BENCHMARKS.md).
    pub(crate) fn new(engine: Arc<Engine>, capacity_bytes: usize) -> EngineSource {
        let latest = engine.latest().unwrap_or(0);
        EngineSource {
            pages: PageCache::new(capacity_bytes),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            frontier: AtomicU64::new(latest),
            committed: Mutex::new(Some(latest)),
            advanced: Condvar::new(),
            engine,
        }
    }

    /// Tells the source that the engine holds `version` (and every older
    /// one): reads of it that wait may go on.
    pub(crate) fn committed(&self, version: u64) {
        let mut committed = self.committed.lock();
        if let Some(c) = committed.as_mut() {
            *c = (*c).max(version);
        }
        self.advanced.notify_all();
    }

    /// Ends every wait for a version the engine will not get now (the Db
    /// failed or closed): those reads, and later ones of versions past the
    /// engine's, return an error.
    pub(crate) fn stop(&self) {
        *self.committed.lock() = None;
        self.advanced.notify_all();
    }

    /// Waits until the engine holds `version`.
    fn wait_committed(&self, version: u64) -> Result<(), MerkleError> {
        let mut committed = self.committed.lock();
        loop {
            match *committed {
                Some(c) if c >= version => return Ok(()),
                Some(_) => self.advanced.wait(&mut committed),
                None if self.engine.latest().unwrap_or(0) >= version => return Ok(()),
                None => return Err(engine_error(EngineError::Poisoned)),
            }
        }
    }

    /// Records the pages an update wrote, before the engine has them: the
    /// next update reads them here while the engine commits them (a read
    /// that misses waits for the commit, see [`EngineSource::page`]).
    pub(crate) fn remember(&self, output: &UpdateOutput) {
        // Before the pages go in: a page read from the engine as of an
        // older version must not be filed as the newest after this (see
        // `EngineSource::load`).
        self.frontier.fetch_max(output.version, Ordering::SeqCst);
        self.pages.insert_many(output.writes.iter().map(|w| {
            let page = w.page.as_ref().map(|page| VersionedPage {
                version: output.version,
                page: page.clone(),
                chain: w.chain,
            });
            let bytes = page_bytes(page.as_ref());
            let newest = Decoded {
                version: output.version,
                page,
            };
            ((w.path, NEWEST), newest, bytes)
        }));
    }

    /// Cached pages and their bytes, and cache hits and misses.
    pub(crate) fn cache_stats(&self) -> CacheStats {
        let (pages, bytes) = self.pages.size();
        CacheStats {
            pages,
            bytes,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// The page as of `version`: an older page cached by the version of
    /// its newest record as of `version` (only that record read), or
    /// rebuilt from the engine's records (newest first from the engine,
    /// back to the newest base) and cached if `file`. Counts a hit or a
    /// miss of the cache.
    fn load(
        &self,
        path: &PagePath,
        version: u64,
        file: bool,
    ) -> Result<Option<VersionedPage>, MerkleError> {
        // The chain stops at its newest record when the cache holds the
        // page it begins, filed by that record's version.
        let mut cached = None;
        let chain = self
            .engine
            .chain_unless(Namespace::Pages, &path.encode(), version, |newest| {
                cached = self.pages.get(&(*path, newest), |_| true);
                cached.is_some()
            })
            .map_err(engine_error)?;
        if let Some(older) = cached {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(older.page);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let mut records = Vec::with_capacity(chain.len());
        for (i, found) in chain.into_iter().enumerate() {
            match found.record {
                Record::Put(bytes) | Record::Delta(bytes) => records.push((found.version, bytes)),
                // The page was removed as of `version`.
                Record::Delete if i == 0 => return Ok(None),
                Record::Delete => {
                    return Err(MerkleError::CorruptPage {
                        path: *path,
                        detail: "a delta follows a removal",
                    })
                }
            }
        }
        let Some(&(newest, _)) = records.first() else {
            return Ok(None);
        };
        records.reverse();
        let page = rebuild_page(&records, path)?;
        if let Some(page) = page.as_ref().filter(|_| file) {
            let bytes = page_bytes(Some(page));
            let entry = Decoded {
                version: newest,
                page: Some(page.clone()),
            };
            // Read as of the frontier, the page is its path's newest: it is
            // filed as such unless a newer one is (an update's own reads
            // are such, and the update then replaces them). `remember`
            // moves the frontier before it files its pages, so a page
            // checked here under the shard's lock after that is an older
            // one, filed by the version of its newest record.
            let mut older = false;
            self.pages
                .insert_if((*path, NEWEST), entry.clone(), bytes, |cached| {
                    older = version < self.frontier.load(Ordering::SeqCst);
                    !older && cached.is_none_or(|c| c.version < newest)
                });
            if older {
                self.pages.insert((*path, newest), entry, bytes);
            }
        }
        Ok(page)
    }
}

impl PageSource for EngineSource {
    fn page(&self, path: &PagePath, version: u64) -> Result<Option<VersionedPage>, MerkleError> {
        self.read(path, version, true)
    }

    /// A view that reads each page through [`EngineSource::read`] where the
    /// update's walk reaches it, on the thread that updates it, and does
    /// not cache the pages it misses: the update writes a new version of
    /// every page it reads, and files that one ([`EngineSource::remember`]).
    /// Without a view, an update read its pages a level at a time
    /// beforehand, one after another on one thread, and filed them in a
    /// map of its own; a page that is not cached is now read on one of the
    /// update's threads while the others work. `blocks` at 1M keys ran
    /// 1.14x faster with every page cached, and 1.25x with `--direct-io`
    /// and 16 MiB of cache (BENCHMARKS.md).
    fn view(&self, version: u64) -> Result<Option<Box<dyn PageView + '_>>, MerkleError> {
        Ok(Some(Box::new(EngineView {
            source: self,
            version,
        })))
    }
}

impl EngineSource {
    /// The page at `path` as of `version`: the cached newest page when it
    /// is that old or older, else rebuilt from the engine's records (and
    /// cached if `file`).
    fn read(
        &self,
        path: &PagePath,
        version: u64,
        file: bool,
    ) -> Result<Option<VersionedPage>, MerkleError> {
        if version == 0 {
            // Version 0 is the empty trie, before the first commit.
            return Ok(None);
        }
        if let Some(newest) = self.pages.get(&(*path, NEWEST), |n| n.version <= version) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(newest.page);
        }
        // The Db merkleizes a version while the engine still commits the
        // one before it: a page of that version that is not cached is read
        // once the engine has it.
        if self.engine.latest().unwrap_or(0) < version {
            self.wait_committed(version)?;
        }
        self.load(path, version, file)
    }
}

/// The pages of an [`EngineSource`] as of one version, for one update.
struct EngineView<'a> {
    source: &'a EngineSource,
    version: u64,
}

impl PageView for EngineView<'_> {
    fn page(&self, path: &PagePath) -> Result<Option<Cow<'_, VersionedPage>>, MerkleError> {
        Ok(self.source.read(path, self.version, false)?.map(Cow::Owned))
    }
}

/// How a page write is stored in the engine.
pub(crate) fn put_page(
    batch: &mut verity_engine::WriteBatch,
    path: &PagePath,
    kind: RecordKind,
    record: &SharedBytes,
) -> Result<(), EngineError> {
    // The record's shared allocation goes into the batch as it is.
    let record = match kind {
        RecordKind::Base => Record::Put(record.clone()),
        RecordKind::Delta => Record::Delta(record.clone()),
        RecordKind::Removed => Record::Delete,
    };
    batch.push_record(Namespace::Pages, &path.encode(), record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_cache_stays_within_its_bytes_and_keeps_used_entries() {
        // 64 shards of 1,000 bytes.
        let cache: PageCache<u64, u64> = PageCache::new(64 * 1000);
        for k in 0..10_000u64 {
            cache.insert(k, k * 2, 100);
            // Key 0 is read after every insert: the clock keeps it.
            assert_eq!(
                cache.get(&0, |_| true),
                Some(0),
                "key 0 evicted at insert {k}"
            );
            let (_, bytes) = cache.size();
            assert!(bytes <= 64 * 1000, "{bytes} bytes cached at insert {k}");
        }
        // A value rejected by `accept` is not returned.
        assert_eq!(cache.get(&0, |v| *v > 0), None);
        // Replacing an entry counts its new size, not both.
        let (n, before) = cache.size();
        cache.insert(0, 7, 300);
        let (n2, after) = cache.size();
        assert!(n2 <= n && after <= before + 200, "{before} -> {after}");
        assert_eq!(cache.get(&0, |_| true), Some(7));
        // A value larger than a shard is not kept and drops the old one.
        cache.insert(0, 9, 2000);
        assert_eq!(cache.get(&0, |_| true), None);
        // Most recently inserted keys are present; most early ones are gone.
        let present = (0..10_000u64)
            .filter(|k| cache.get(k, |_| true).is_some())
            .count();
        assert!((300..=640).contains(&present), "{present} entries cached");
    }

    /// The version under which the source caches `path`'s newest page, and
    /// whether it caches an older page of it under `older`.
    fn cached(source: &EngineSource, path: &PagePath, older: u64) -> (Option<u64>, bool) {
        let newest = source.pages.get(&(*path, NEWEST), |_| true);
        let old = source.pages.get(&(*path, older), |_| true);
        (newest.map(|n| n.version), old.is_some())
    }

    #[test]
    fn a_page_read_at_the_frontier_is_filed_as_newest_and_an_older_one_by_version() {
        use verity_merkle::{hash::key_hash, Trie};
        let engine = Arc::new(
            Engine::open(
                Arc::new(verity_engine::sim::SimDisk::new()),
                std::path::Path::new("/db"),
                verity_engine::Options::for_tests(),
            )
            .expect("open"),
        );
        // Versions 1 and 2, each rewriting the root page; stored in the
        // engine and remembered, as the `Db` does.
        let writer = EngineSource::new(engine.clone(), 64 << 20);
        for v in 1..=2u64 {
            let ups: Vec<_> = (0..40u64)
                .map(|i| (key_hash(&i.to_le_bytes()), Some([v as u8; 32])))
                .collect::<std::collections::BTreeMap<_, _>>()
                .into_iter()
                .collect();
            let out = Trie::new(&writer).update(v - 1, v, &ups).expect("update");
            writer.remember(&out);
            let mut batch = verity_engine::WriteBatch::new();
            for w in &out.writes {
                put_page(&mut batch, &w.path, w.kind, &w.record).expect("put");
            }
            engine.commit(v, batch).expect("commit");
        }
        let root = PagePath::ROOT;
        // A source that starts at version 2 (a reopened `Db`) has none of
        // them cached.
        let source = EngineSource::new(engine.clone(), 64 << 20);
        assert_eq!(cached(&source, &root, 1), (None, false));
        // Read as of version 2, the frontier: its newest page.
        assert!(source.page(&root, 2).expect("read").is_some());
        assert_eq!(cached(&source, &root, 1), (Some(2), false));
        // As of version 1, older: by the version of its newest record,
        // next to the newest, which stays.
        assert!(source.page(&root, 1).expect("read").is_some());
        assert_eq!(cached(&source, &root, 1), (Some(2), true));
        // Read again, it is a hit (the cache is asked once the newest
        // record's version is known, before the rest of the chain is
        // read); as of version 2, a hit on the newest page.
        let before = source.cache_stats();
        let again = source.page(&root, 1).expect("read").expect("a page");
        assert_eq!(again.version, 1);
        let newest = source.page(&root, 2).expect("read").expect("a page");
        assert_eq!(newest.version, 2);
        let after = source.cache_stats();
        assert_eq!(
            (after.hits - before.hits, after.misses - before.misses),
            (2, 0)
        );
        // Another reads as of version 2 after a version 3 was remembered
        // (the frontier moved between its read and its filing): an older
        // page, never the newest, which version 3 may have written.
        let late = EngineSource::new(engine.clone(), 64 << 20);
        late.frontier.store(3, Ordering::SeqCst);
        assert!(late.page(&root, 2).expect("read").is_some());
        assert_eq!(cached(&late, &root, 2), (None, true));
        let stats = late.cache_stats();
        assert_eq!((stats.hits, stats.misses, stats.pages), (0, 1, 1));
        // An update's view files nothing it misses: the update writes a new
        // version of the page, which `remember` files.
        let update = EngineSource::new(engine.clone(), 64 << 20);
        let view = update.view(2).expect("view").expect("a view");
        assert!(view.page(&root).expect("read").is_some());
        drop(view);
        assert_eq!(cached(&update, &root, 2), (None, false));
        assert_eq!(update.cache_stats().misses, 1);
    }

    #[test]
    fn inserting_many_at_once_caches_what_inserting_one_by_one_does() {
        // Keys repeat (a replacement), some values outgrow a shard (not
        // kept), some entries are read between the batches (a second
        // chance), and the batches overflow the shards (evictions).
        let one: PageCache<u64, u64> = PageCache::new(64 * 1000);
        let many: PageCache<u64, u64> = PageCache::new(64 * 1000);
        for batch in 0..20u64 {
            // Odd batches are small enough to fill the shards on one
            // thread.
            let len = if batch % 2 == 0 { 600u64 } else { 100 };
            let entries: Vec<(u64, u64, usize)> = (0..len)
                .map(|i| {
                    let key = (batch * 397 + i * 13) % 5_000;
                    let bytes = if i % 97 == 0 {
                        1_500
                    } else {
                        40 + (i % 7) as usize * 10
                    };
                    (key, batch * 1_000 + i, bytes)
                })
                .collect();
            for &(k, v, b) in &entries {
                one.insert(k, v, b);
            }
            many.insert_many(entries.into_iter());
            for k in (0..5_000u64).step_by(11) {
                assert_eq!(one.get(&k, |_| true), many.get(&k, |_| true), "key {k}");
            }
            assert_eq!(one.size(), many.size(), "after batch {batch}");
        }
        let cached = (0..5_000u64)
            .filter(|k| many.get(k, |_| true).is_some())
            .count();
        assert!(cached > 0 && many.size().1 <= 64 * 1000, "{cached} cached");
    }
}
