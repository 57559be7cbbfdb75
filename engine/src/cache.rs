//! The block cache: decoded data blocks, bounded in bytes, shared by every
//! reader.
//!
//! 16 shards, each a map and a CLOCK queue under its own lock: a hit marks
//! the block; eviction walks the queue, gives a marked block a second
//! chance and drops the first unmarked one.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::segment::block::Block;

const SHARDS: usize = 16;

type Key = (u64, u64);

#[derive(Default)]
struct Shard {
    map: HashMap<Key, (Arc<Block>, bool)>,
    queue: VecDeque<Key>,
    bytes: usize,
}

/// A byte-bounded cache of decoded blocks, keyed by segment number and
/// block offset.
pub struct BlockCache {
    shards: Vec<Mutex<Shard>>,
    shard_capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("capacity", &(self.shard_capacity * SHARDS))
            .finish()
    }
}

fn shard_of(key: Key) -> usize {
    let h = (key.0 ^ key.1.rotate_left(17)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 60) as usize % SHARDS
}

impl BlockCache {
    /// A cache holding up to about `capacity` bytes of blocks (0 caches
    /// nothing).
    pub fn new(capacity: usize) -> BlockCache {
        BlockCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            shard_capacity: capacity / SHARDS,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The cached block at `offset` of segment `segment`.
    pub fn get(&self, segment: u64, offset: u64) -> Option<Arc<Block>> {
        let key = (segment, offset);
        let mut shard = self.shards[shard_of(key)].lock();
        match shard.map.get_mut(&key) {
            Some((block, used)) => {
                *used = true;
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(block.clone())
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Caches a block, evicting others to stay within the capacity.
    pub fn insert(&self, segment: u64, offset: u64, block: Arc<Block>) {
        let size = block.size_bytes() + 64;
        if size > self.shard_capacity {
            return;
        }
        let key = (segment, offset);
        let mut shard = self.shards[shard_of(key)].lock();
        if shard.map.contains_key(&key) {
            return;
        }
        while shard.bytes + size > self.shard_capacity {
            let Some(victim) = shard.queue.pop_front() else {
                break;
            };
            let second_chance = match shard.map.get_mut(&victim) {
                Some((_, used)) if *used => {
                    *used = false;
                    true
                }
                _ => false,
            };
            if second_chance {
                shard.queue.push_back(victim);
            } else if let Some((b, _)) = shard.map.remove(&victim) {
                shard.bytes -= b.size_bytes() + 64;
            }
        }
        shard.map.insert(key, (block, false));
        shard.queue.push_back(key);
        shard.bytes += size;
    }

    /// Drops every block of `segment` (after the file is deleted).
    pub fn forget_segment(&self, segment: u64) {
        for shard in &self.shards {
            let mut shard = shard.lock();
            let Shard { map, queue, bytes } = &mut *shard;
            map.retain(|k, (b, _)| {
                let keep = k.0 != segment;
                if !keep {
                    *bytes -= b.size_bytes() + 64;
                }
                keep
            });
            queue.retain(|k| k.0 != segment);
        }
    }

    /// Bytes cached now.
    pub fn size_bytes(&self) -> usize {
        self.shards.iter().map(|s| s.lock().bytes).sum()
    }

    /// Lookups that found their block, and lookups that did not.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::block::BlockBuilder;

    fn block(n: usize) -> Arc<Block> {
        let mut b = BlockBuilder::default();
        b.add(b"k", 1, crate::memtable::RecordRef::Put(&vec![7u8; n]));
        Arc::new(Block::new(b.finish()).expect("a block just built"))
    }

    #[test]
    fn stays_within_capacity_and_keeps_used_blocks() {
        let cache = BlockCache::new(16 * 4096);
        for i in 0..1000u64 {
            cache.insert(1, i * 4096, block(1000));
            // Block 0 is read after every insert: the clock keeps it.
            assert!(cache.get(1, 0).is_some(), "block 0 evicted at insert {i}");
        }
        assert!(cache.size_bytes() <= 16 * 4096);
        assert!(cache.get(1, 0).is_some());
        cache.forget_segment(1);
        assert_eq!(cache.size_bytes(), 0);
        assert!(cache.get(1, 0).is_none());
    }
}
