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
use verity_engine::{Engine, EngineError, Namespace, Record};
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

/// The newest record of a page path, decoded: the page, or `None` when
/// that record removed it.
#[derive(Clone)]
struct Newest {
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
    /// The newest decoded page of each path.
    newest: PageCache<PagePath, Newest>,
    /// Older pages rebuilt for historical reads, by path and the version
    /// of their newest record.
    older: PageCache<(PagePath, u64), VersionedPage>,
    hits: AtomicU64,
    misses: AtomicU64,
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
    /// decoded pages: seven eighths for the newest page of each path, one
    /// eighth for older pages rebuilt for historical reads.
    pub(crate) fn new(engine: Arc<Engine>, capacity_bytes: usize) -> EngineSource {
        let older = capacity_bytes / 8;
        EngineSource {
            newest: PageCache::new(capacity_bytes - older),
            older: PageCache::new(older),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            committed: Mutex::new(Some(engine.latest().unwrap_or(0))),
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
        self.newest.insert_many(output.writes.iter().map(|w| {
            let page = w.page.as_ref().map(|page| VersionedPage {
                version: output.version,
                page: page.clone(),
                chain: w.chain,
            });
            let bytes = page_bytes(page.as_ref());
            let newest = Newest {
                version: output.version,
                page,
            };
            (w.path, newest, bytes)
        }));
    }

    /// Cached pages and their bytes, and cache hits and misses.
    pub(crate) fn cache_stats(&self) -> CacheStats {
        let (n1, b1) = self.newest.size();
        let (n2, b2) = self.older.size();
        CacheStats {
            pages: n1 + n2,
            bytes: b1 + b2,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// The page as of `version`, rebuilt from the engine's records (newest
    /// first from the engine, back to the newest base).
    fn load(&self, path: &PagePath, version: u64) -> Result<Option<VersionedPage>, MerkleError> {
        let chain = self
            .engine
            .chain(Namespace::Pages, &path.encode(), version)
            .map_err(engine_error)?;
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
        if let Some(page) = self.older.get(&(*path, newest), |_| true) {
            return Ok(Some(page));
        }
        records.reverse();
        let page = rebuild_page(&records, path)?;
        if let Some(page) = &page {
            self.older
                .insert((*path, newest), page.clone(), page_bytes(Some(page)));
        }
        Ok(page)
    }
}

impl PageSource for EngineSource {
    fn page(&self, path: &PagePath, version: u64) -> Result<Option<VersionedPage>, MerkleError> {
        if version == 0 {
            // Version 0 is the empty trie, before the first commit.
            return Ok(None);
        }
        if let Some(newest) = self.newest.get(path, |n| n.version <= version) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(newest.page);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        // The Db merkleizes a version while the engine still commits the
        // one before it: a page of that version that is not cached is read
        // once the engine has it.
        if self.engine.latest().unwrap_or(0) < version {
            self.wait_committed(version)?;
        }
        self.load(path, version)
    }

    /// A view that reads each page through [`EngineSource::page`] where the
    /// update's walk reaches it, on the thread that updates it. Without a
    /// view, an update read its pages a level at a time beforehand, one
    /// after another on one thread, and filed them in a map of its own; a
    /// page that is not cached is now read on one of the update's threads
    /// while the others work. `blocks` at 1M keys ran 1.14x faster with
    /// every page cached, and 1.25x with `--direct-io` and 16 MiB of cache
    /// (BENCHMARKS.md).
    fn view(&self, version: u64) -> Result<Option<Box<dyn PageView + '_>>, MerkleError> {
        Ok(Some(Box::new(EngineView {
            source: self,
            version,
        })))
    }
}

/// The pages of an [`EngineSource`] as of one version, for one update.
struct EngineView<'a> {
    source: &'a EngineSource,
    version: u64,
}

impl PageView for EngineView<'_> {
    fn page(&self, path: &PagePath) -> Result<Option<Cow<'_, VersionedPage>>, MerkleError> {
        Ok(self.source.page(path, self.version)?.map(Cow::Owned))
    }
}

/// How a page write is stored in the engine.
pub(crate) fn put_page(
    batch: &mut verity_engine::WriteBatch,
    path: &PagePath,
    kind: RecordKind,
    record: &Arc<[u8]>,
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
