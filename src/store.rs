//! The trie's pages in the engine: a [`PageSource`] over the engine's
//! pages namespace, with the newest decoded page of each path cached.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use verity_engine::{Engine, EngineError, Namespace, Record};
use verity_merkle::update::RecordKind;
use verity_merkle::{rebuild_page, MerkleError, PagePath, PageSource, UpdateOutput, VersionedPage};

const SHARDS: usize = 64;

/// The newest record of a page path, decoded: the page, or `None` when
/// that record removed it.
#[derive(Clone)]
struct Newest {
    version: u64,
    page: Option<VersionedPage>,
}

/// Pages read from the engine's pages namespace.
pub(crate) struct EngineSource {
    engine: Arc<Engine>,
    shards: Vec<RwLock<HashMap<PagePath, Newest>>>,
    /// Older pages rebuilt for historical reads, by path and the version
    /// of their newest record.
    older: Vec<RwLock<HashMap<(PagePath, u64), VersionedPage>>>,
    /// Most paths cached per shard.
    shard_capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

fn engine_error(e: EngineError) -> MerkleError {
    MerkleError::Source(Box::new(e))
}

impl EngineSource {
    /// A source over `engine` caching up to `capacity` pages.
    pub(crate) fn new(engine: Arc<Engine>, capacity: usize) -> EngineSource {
        EngineSource {
            engine,
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            older: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            shard_capacity: capacity.div_ceil(SHARDS).max(1),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn shard_index(&self, path: &PagePath) -> usize {
        let h = rustc_hash::FxBuildHasher.hash_one(path);
        (h >> 58) as usize % SHARDS
    }

    fn shard(&self, path: &PagePath) -> &RwLock<HashMap<PagePath, Newest>> {
        &self.shards[self.shard_index(path)]
    }

    /// Records the pages an update wrote (after the engine has them).
    pub(crate) fn remember(&self, output: &UpdateOutput) {
        for w in &output.writes {
            let newest = Newest {
                version: output.version,
                page: w.page.as_ref().map(|page| VersionedPage {
                    version: output.version,
                    page: page.clone(),
                    chain: w.chain,
                }),
            };
            let mut shard = self.shard(&w.path).write();
            if shard.len() >= self.shard_capacity && !shard.contains_key(&w.path) {
                // Make room: drop an arbitrary entry (its page is read
                // from the engine again when needed).
                if let Some(victim) = shard.keys().next().copied() {
                    shard.remove(&victim);
                }
            }
            shard.insert(w.path, newest);
        }
    }

    /// Cached pages, and cache hits and misses.
    pub(crate) fn cache_stats(&self) -> (usize, u64, u64) {
        let pages = self.shards.iter().map(|s| s.read().len()).sum();
        (
            pages,
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
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
        let shard = &self.older[self.shard_index(path)];
        if let Some(page) = shard.read().get(&(*path, newest)) {
            return Ok(Some(page.clone()));
        }
        records.reverse();
        let page = rebuild_page(&records, path)?;
        if let Some(page) = &page {
            let mut shard = shard.write();
            if shard.len() >= self.shard_capacity {
                // Make room: drop an arbitrary entry.
                if let Some(victim) = shard.keys().next().copied() {
                    shard.remove(&victim);
                }
            }
            shard.insert((*path, newest), page.clone());
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
        if let Some(newest) = self.shard(path).read().get(path) {
            if newest.version <= version {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(newest.page.clone());
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        self.load(path, version)
    }
}

/// How a page write is stored in the engine.
pub(crate) fn put_page(
    batch: &mut verity_engine::WriteBatch,
    path: &PagePath,
    kind: RecordKind,
    record: &[u8],
) -> Result<(), EngineError> {
    let key = path.encode();
    match kind {
        RecordKind::Base => batch.put(Namespace::Pages, &key, record),
        RecordKind::Delta => batch.put_delta(Namespace::Pages, &key, record),
        RecordKind::Removed => batch.delete(Namespace::Pages, &key),
    }
}
