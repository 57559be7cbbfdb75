//! Reads a segment file: the footer, filter and index at open (kept in
//! memory), data blocks on demand through the block cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use verity_codec::block as codec_block;
use verity_codec::frame;
use verity_codec::reader::Reader;

use super::block::{cmp_entry, Block};
use super::filter::Filter;
use super::{key_prefix, Footer, IndexEntry, SegmentMeta, FOOTER_LEN};
use crate::cache::BlockCache;
use crate::error::{EngineError, Result};
use crate::io::{IoBackend, IoFile, ReadRequest};
use crate::memtable::{Record, MAX_KEY, MAX_VALUE};

/// The largest raw block a reader accepts: one entry of the largest key
/// and value always fits.
const MAX_RAW_BLOCK: usize = MAX_VALUE + MAX_KEY + (1 << 20);
/// The largest block frame on disk.
const MAX_BLOCK_FRAME: u32 = (MAX_RAW_BLOCK + 64) as u32;

/// The number of entries equal to `prefix` at the start of `tail`, which
/// is sorted and holds nothing smaller: an exponential search from the
/// start. The run is nearly always 0 to 2 entries long, and a binary
/// search over the whole tail (the rest of the index) read about
/// `log2(tail.len())` cold lines to find that out: it was a third of
/// [`Segment::locate`]'s samples at 10M keys (BENCHMARKS.md).
fn run_len(tail: &[u64], prefix: u64) -> usize {
    // Every entry up to an equal one is equal: the tail is sorted and
    // starts at `prefix` or above.
    let mut end = 1;
    while end <= tail.len() && tail[end - 1] == prefix {
        end *= 2;
    }
    let start = end / 2;
    start + tail[start..end.min(tail.len())].partition_point(|p| *p == prefix)
}

/// An open segment file.
pub struct Segment {
    meta: SegmentMeta,
    path: PathBuf,
    file: Arc<dyn IoFile>,
    index: Vec<IndexEntry>,
    /// [`key_prefix`] of each index entry's last key, densely, so a
    /// lookup's binary search touches 8 bytes an entry (not a whole entry
    /// and its key's allocation) and compares whole keys only where the
    /// first 8 bytes tie.
    prefixes: Vec<u64>,
    filter: Filter,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("meta", &self.meta)
            .field("path", &self.path)
            .field("blocks", &self.index.len())
            .finish()
    }
}

impl Segment {
    /// Opens the segment at `path` and checks its footer against what the
    /// manifest recorded (`meta`).
    pub fn open(io: &dyn IoBackend, path: &Path, meta: SegmentMeta) -> Result<Segment> {
        let err = |op| move |e| EngineError::io(op, path, e);
        let corrupt = |offset, detail: String| EngineError::corruption(path, offset, detail);
        let file = io.open(path, false).map_err(err("open"))?;
        let size = file.size().map_err(err("stat"))?;
        if size != meta.size {
            return Err(corrupt(
                size.min(meta.size),
                format!("segment is {size} bytes, the manifest says {}", meta.size),
            ));
        }
        if size < FOOTER_LEN as u64 {
            return Err(corrupt(0, "segment shorter than its footer".to_owned()));
        }
        let footer_at = size - FOOTER_LEN as u64;
        let mut fb = [0u8; FOOTER_LEN];
        file.read_at(&mut fb, footer_at).map_err(err("read"))?;
        let footer = Footer::decode(&fb, size).map_err(|d| corrupt(footer_at, d))?;
        if (footer.entries, footer.min_version, footer.max_version)
            != (meta.entries, meta.min_version, meta.max_version)
        {
            return Err(corrupt(
                footer_at,
                "footer disagrees with the manifest".to_owned(),
            ));
        }
        let read_frame = |off: u64, len: u32| -> Result<Vec<u8>> {
            let mut buf = vec![0u8; len as usize];
            file.read_at(&mut buf, off).map_err(err("read"))?;
            let (payload, used) = frame::get(&buf, len.saturating_sub(8), off as usize)
                .map_err(|e| corrupt(off, e.to_string()))?;
            if used != buf.len() {
                return Err(corrupt(
                    off,
                    "frame shorter than the footer says".to_owned(),
                ));
            }
            Ok(payload.to_vec())
        };
        let filter_bytes = read_frame(footer.filter_off, footer.filter_len)?;
        let filter =
            Filter::decode(&filter_bytes).map_err(|e| corrupt(footer.filter_off, e.to_string()))?;
        let index_bytes = read_frame(footer.index_off, footer.index_len)?;
        let index = parse_index(&index_bytes, footer.filter_off)
            .map_err(|d| corrupt(footer.index_off, d))?;
        let prefixes = index.iter().map(|e| key_prefix(&e.last_key)).collect();
        Ok(Segment {
            meta,
            path: path.to_path_buf(),
            file,
            index,
            prefixes,
            filter,
        })
    }

    /// What the manifest records of the segment.
    pub fn meta(&self) -> &SegmentMeta {
        &self.meta
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The number of data blocks.
    pub fn blocks(&self) -> usize {
        self.index.len()
    }

    /// Bytes of index and filter held in memory.
    pub fn memory_bytes(&self) -> usize {
        self.filter.size_bytes()
            + self
                .index
                .iter()
                .map(|e| e.last_key.len() + 40)
                .sum::<usize>()
            + self.prefixes.len() * std::mem::size_of::<u64>()
    }

    /// The block that would hold the newest entry of `key` at or below
    /// `version`, or `None` when the filter or the index rule it out.
    pub fn locate(&self, key: &[u8], version: u64, hash: u64) -> Option<usize> {
        if version < self.meta.min_version || !self.filter.may_contain(hash) {
            return None;
        }
        // A smaller prefix means a smaller key and a larger one a larger
        // key; only the run of equal prefixes needs whole comparisons.
        let prefix = key_prefix(key);
        let lo = self.prefixes.partition_point(|p| *p < prefix);
        let ties = run_len(&self.prefixes[lo..], prefix);
        let i = lo
            + self.index[lo..lo + ties]
                .partition_point(|e| cmp_entry(&e.last_key, e.last_version, key, version).is_lt());
        (i < self.index.len()).then_some(i)
    }

    /// The newest entry of `key` at or below `version` in block `i`.
    pub fn find_in(
        &self,
        block: &Block,
        i: usize,
        key: &[u8],
        version: u64,
    ) -> Result<Option<(u64, Record)>> {
        let at = self.index[i].offset;
        let corrupt =
            |e: verity_codec::CodecError| EngineError::corruption(&self.path, at, e.to_string());
        let j = block.seek(key, version).map_err(corrupt)?;
        if j == block.len() {
            return Ok(None);
        }
        let e = block.entry(j).map_err(corrupt)?;
        if e.key != key {
            return Ok(None);
        }
        Ok(Some((e.version, e.record.to_owned_record())))
    }

    /// Hands `take` the entries of `key` in this segment, newest first,
    /// from the newest at or below `version`: one search, then the
    /// entries that follow it (a key's versions are adjacent, newest
    /// first, in segment order), where a lookup per entry searched the
    /// filter, the index and the block again. `take` gets each entry's
    /// version and record and returns the version to go on at or below,
    /// or `None` to stop (a point lookup stops at the first). Returns
    /// `Ok(true)` when `take` stopped, and `Ok(false)` when the segment
    /// holds no more entries of `key` (older segments may).
    pub fn walk_key(
        &self,
        key: &[u8],
        version: u64,
        hash: u64,
        cache: &BlockCache,
        mut take: impl FnMut(u64, Record) -> Option<u64>,
    ) -> Result<bool> {
        let Some(mut i) = self.locate(key, version, hash) else {
            return Ok(false);
        };
        let mut block = self.block(i, cache)?;
        let corrupt = |i: usize, e: verity_codec::CodecError| {
            EngineError::corruption(&self.path, self.index[i].offset, e.to_string())
        };
        let mut j = block.seek(key, version).map_err(|e| corrupt(i, e))?;
        let mut at = version;
        loop {
            if j == block.len() {
                i += 1;
                if i == self.index.len() {
                    return Ok(false);
                }
                block = self.block(i, cache)?;
                j = 0;
                continue;
            }
            let e = block.entry(j).map_err(|e| corrupt(i, e))?;
            if e.key != key {
                return Ok(false);
            }
            if e.version > at {
                return Err(corrupt(
                    i,
                    verity_codec::CodecError::Corrupt {
                        what: "segment block",
                        offset: 0,
                        detail: "a key's versions are out of order",
                    },
                ));
            }
            match take(e.version, e.record.to_owned_record()) {
                Some(next) => at = next,
                None => return Ok(true),
            }
            j += 1;
        }
    }

    /// Block `i`, from the cache or the disk.
    pub fn block(&self, i: usize, cache: &BlockCache) -> Result<Arc<Block>> {
        let e = &self.index[i];
        if let Some(b) = cache.get(self.meta.number, e.offset) {
            return Ok(b);
        }
        let mut buf = vec![0u8; e.len as usize];
        self.file
            .read_at(&mut buf, e.offset)
            .map_err(|err| EngineError::io("read", &self.path, err))?;
        let block = Arc::new(self.decode_block(&buf, e.offset)?);
        cache.insert(self.meta.number, e.offset, block.clone());
        Ok(block)
    }

    /// Blocks `blocks` (indexes), the ones not cached read in one batch.
    pub fn read_blocks(&self, blocks: &[usize], cache: &BlockCache) -> Result<Vec<Arc<Block>>> {
        let mut out: Vec<Option<Arc<Block>>> = blocks
            .iter()
            .map(|&i| cache.get(self.meta.number, self.index[i].offset))
            .collect();
        let missing: Vec<usize> = (0..blocks.len()).filter(|&k| out[k].is_none()).collect();
        if missing.is_empty() {
            return Ok(out.into_iter().flatten().collect());
        }
        let mut bufs: Vec<Vec<u8>> = missing
            .iter()
            .map(|&k| vec![0u8; self.index[blocks[k]].len as usize])
            .collect();
        let mut reqs: Vec<ReadRequest<'_>> = bufs
            .iter_mut()
            .zip(&missing)
            .map(|(buf, &k)| ReadRequest {
                offset: self.index[blocks[k]].offset,
                buf: buf.as_mut_slice(),
            })
            .collect();
        self.file
            .read_batch(&mut reqs)
            .map_err(|err| EngineError::io("read", &self.path, err))?;
        drop(reqs);
        for (buf, &k) in bufs.iter().zip(&missing) {
            let offset = self.index[blocks[k]].offset;
            let block = Arc::new(self.decode_block(buf, offset)?);
            cache.insert(self.meta.number, offset, block.clone());
            out[k] = Some(block);
        }
        Ok(out.into_iter().flatten().collect())
    }

    fn decode_block(&self, buf: &[u8], offset: u64) -> Result<Block> {
        let corrupt = |d: String| EngineError::corruption(&self.path, offset, d);
        let (payload, used) = frame::get(buf, MAX_BLOCK_FRAME, offset as usize)
            .map_err(|e| corrupt(e.to_string()))?;
        if used != buf.len() {
            return Err(corrupt(
                "block frame shorter than the index says".to_owned(),
            ));
        }
        let raw =
            codec_block::decode(payload, MAX_RAW_BLOCK).map_err(|e| corrupt(e.to_string()))?;
        Block::new(raw).map_err(|e| corrupt(e.to_string()))
    }

    /// Every entry in order, read block by block past the cache.
    pub fn iter(self: &Arc<Self>) -> SegmentIter {
        SegmentIter {
            segment: self.clone(),
            next_block: 0,
            block: None,
            next_entry: 0,
        }
    }
}

fn parse_index(bytes: &[u8], data_end: u64) -> std::result::Result<Vec<IndexEntry>, String> {
    let err = |e: verity_codec::CodecError| e.to_string();
    let mut r = Reader::new(bytes, "segment index");
    let n = r.count(21, u32::MAX as u64).map_err(err)?;
    let mut index = Vec::with_capacity(n);
    let mut expect_at = 0u64;
    for _ in 0..n {
        let key = r.bytes(MAX_KEY as u64 + 1).map_err(err)?;
        let last_version = r.u64().map_err(err)?;
        let offset = r.u64().map_err(err)?;
        let len = r.u32().map_err(err)?;
        if offset != expect_at || len < 8 || offset + u64::from(len) > data_end {
            return Err("index blocks do not tile the data area".to_owned());
        }
        if let Some(prev) = index.last() {
            let prev: &IndexEntry = prev;
            if !cmp_entry(&prev.last_key, prev.last_version, key, last_version).is_lt() {
                return Err("index keys out of order".to_owned());
            }
        }
        expect_at = offset + u64::from(len);
        index.push(IndexEntry {
            last_key: key.into(),
            last_version,
            offset,
            len,
        });
    }
    r.finish().map_err(err)?;
    if expect_at != data_end || index.is_empty() {
        return Err("index blocks do not tile the data area".to_owned());
    }
    Ok(index)
}

/// One owned entry: store key, version, record.
pub type OwnedEntry = (Vec<u8>, u64, Record);

/// Reads a segment's entries in order.
pub struct SegmentIter {
    segment: Arc<Segment>,
    next_block: usize,
    block: Option<Block>,
    next_entry: usize,
}

impl SegmentIter {
    /// The next entry, or `None` at the end.
    pub fn next_entry(&mut self) -> Result<Option<OwnedEntry>> {
        loop {
            if let Some(block) = &self.block {
                if self.next_entry < block.len() {
                    let at = self.segment.index[self.next_block - 1].offset;
                    let e = block.entry(self.next_entry).map_err(|e| {
                        EngineError::corruption(&self.segment.path, at, e.to_string())
                    })?;
                    self.next_entry += 1;
                    return Ok(Some((
                        e.key.to_vec(),
                        e.version,
                        e.record.to_owned_record(),
                    )));
                }
            }
            if self.next_block == self.segment.index.len() {
                return Ok(None);
            }
            let e = &self.segment.index[self.next_block];
            let mut buf = vec![0u8; e.len as usize];
            self.segment
                .file
                .read_at(&mut buf, e.offset)
                .map_err(|err| EngineError::io("read", &self.segment.path, err))?;
            self.block = Some(self.segment.decode_block(&buf, e.offset)?);
            self.next_block += 1;
            self.next_entry = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::run_len;

    proptest! {
        /// The exponential search finds the run a binary search over the
        /// whole tail finds, for runs of every length (the tail starts at
        /// the prefix or above, as the index's tail after the lower bound).
        #[test]
        fn run_len_is_the_run_of_equal_prefixes(
            run in 0usize..70,
            rest in proptest::collection::vec(1u64..1000, 0..200),
        ) {
            let prefix = 500u64;
            let mut tail = vec![prefix; run];
            tail.extend(rest.iter().map(|p| p + prefix));
            tail.sort_unstable();
            prop_assert_eq!(run_len(&tail, prefix), run);
            prop_assert_eq!(run_len(&tail, prefix), tail.partition_point(|p| *p == prefix));
        }
    }
}
