//! What the RocksDB-based backends of `verity bench` (`rocksdb` and `jmt`)
//! share, so that they differ only in the tree they store: the tuning of
//! the database and its column families, the index of stale entries and
//! pruning by it, and the block-cache miss counter.
//!
//! The stale index is a column family `stale` with keys
//! `since (u64 BE) | tag (u8) | key`: the entry `key` of the column
//! family named by `tag` is needed only by versions below `since`.
//! Pruning to a floor deletes every entry stale since a version at or
//! below it, and the roots (column family `meta`, `version (u64 BE)`
//! keys) below the floor.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Options,
    SliceTransform, WriteBatch, DB,
};

/// The column family of the stale index.
pub(crate) const STALE: &str = "stale";
/// The column family of the roots, by version.
pub(crate) const META: &str = "meta";

/// The RocksDB settings, in a line (written into BENCHMARKS.md).
pub(crate) fn settings(cache_bytes: usize, direct_io: bool) -> String {
    format!(
        "block cache {} MiB (LRU, shared by all column families), bloom filters 10 bits/key \
         (whole keys for nodes, 32-byte key-hash prefixes for values), 4 KiB blocks, \
         no compression on L0-L1 and zstd below, 64 MiB write buffers, dynamic level sizes, \
         2 background jobs, WAL synced per commit{}",
        cache_bytes >> 20,
        if direct_io { ", O_DIRECT reads" } else { "" }
    )
}

/// The options of one column family; `prefix`: its keys start with a
/// 32-byte key hash, and reads seek within one key hash.
fn cf_options(cache: &Cache, prefix: bool) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_block_size(4096);
    table.set_format_version(5);
    table.set_bloom_filter(10.0, false);
    if prefix {
        table.set_whole_key_filtering(false);
    }
    let mut o = Options::default();
    o.set_block_based_table_factory(&table);
    o.set_write_buffer_size(64 << 20);
    o.set_max_write_buffer_number(4);
    o.set_level_compaction_dynamic_level_bytes(true);
    o.set_compression_per_level(&[
        DBCompressionType::None,
        DBCompressionType::None,
        DBCompressionType::Zstd,
        DBCompressionType::Zstd,
        DBCompressionType::Zstd,
        DBCompressionType::Zstd,
        DBCompressionType::Zstd,
    ]);
    o.set_bottommost_compression_type(DBCompressionType::Zstd);
    if prefix {
        o.set_prefix_extractor(SliceTransform::create_fixed_prefix(32));
        o.set_memtable_prefix_bloom_ratio(0.1);
    }
    o
}

/// A RocksDB opened with the shared tuning.
pub(crate) struct TunedDb {
    /// The database.
    pub(crate) db: DB,
    /// Its options (they hold the statistics).
    opts: Options,
    /// What the backend is called in errors.
    name: &'static str,
}

impl TunedDb {
    /// Opens (creates) the database in `dir` with a block cache of
    /// `cache_bytes` shared by the column families `cfs` (name, and
    /// whether its keys start with a 32-byte key hash), plus `stale` and
    /// `meta`.
    pub(crate) fn open(
        name: &'static str,
        dir: &Path,
        cache_bytes: usize,
        direct_io: bool,
        cfs: &[(&str, bool)],
    ) -> Result<TunedDb> {
        let cache = Cache::new_lru_cache(cache_bytes);
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.increase_parallelism(2);
        opts.set_max_background_jobs(2);
        opts.set_bytes_per_sync(1 << 20);
        opts.set_use_direct_reads(direct_io);
        opts.enable_statistics();
        let descriptors = cfs
            .iter()
            .chain(&[(STALE, false), (META, false)])
            .map(|(cf, prefix)| ColumnFamilyDescriptor::new(*cf, cf_options(&cache, *prefix)))
            .collect::<Vec<_>>();
        let db = DB::open_cf_descriptors(&opts, dir, descriptors)
            .with_context(|| format!("opening RocksDB in {}", dir.display()))?;
        Ok(TunedDb { db, opts, name })
    }

    /// A column family.
    pub(crate) fn cf(&self, cf: &str) -> Result<&ColumnFamily> {
        self.db
            .cf_handle(cf)
            .ok_or_else(|| anyhow!("{}: no column family {cf}", self.name))
    }

    /// The newest version with a root in `meta`, or 0.
    pub(crate) fn latest(&self) -> Result<u64> {
        let mut it = self.db.raw_iterator_cf(self.cf(META)?);
        it.seek_to_last();
        match it.key() {
            Some(k) => Ok(u64::from_be_bytes(k.try_into()?)),
            None => {
                it.status()?;
                Ok(0)
            }
        }
    }

    /// Reads that missed the block cache so far.
    pub(crate) fn block_cache_misses(&self) -> u64 {
        self.opts
            .get_ticker_count(rocksdb::statistics::Ticker::BlockCacheMiss)
    }

    /// Deletes every entry of the stale index stale since a version at or
    /// below `floor` (from the column family `tag_cf(tag)`), and the roots
    /// below `floor`.
    pub(crate) fn prune(&self, floor: u64, tag_cf: impl Fn(u8) -> &'static str) -> Result<()> {
        let stale = self.cf(STALE)?;
        let mut batch = WriteBatch::default();
        let end = (floor + 1).to_be_bytes();
        let mut it = self.db.raw_iterator_cf(stale);
        it.seek_to_first();
        while let Some(k) = it.key() {
            if k[..8] >= end[..] {
                break;
            }
            batch.delete_cf(self.cf(tag_cf(k[8]))?, &k[9..]);
            it.next();
        }
        it.status()?;
        drop(it);
        batch.delete_range_cf(stale, 0u64.to_be_bytes(), end);
        batch.delete_range_cf(self.cf(META)?, 0u64.to_be_bytes(), floor.to_be_bytes());
        self.db.write(batch)?;
        Ok(())
    }
}

/// The stale-index key of entry `key` (of the column family `tag`
/// names), needed only by versions below `since`.
pub(crate) fn stale_key(since: u64, tag: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + key.len());
    k.extend_from_slice(&since.to_be_bytes());
    k.push(tag);
    k.extend_from_slice(key);
    k
}
