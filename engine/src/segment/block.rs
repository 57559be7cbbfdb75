//! Data blocks: the entries of a segment, in order, with an offset table
//! so a lookup is a binary search.
//!
//! Raw layout: `entry* | offset: u32 LE per entry | count: u32 LE`, where
//! an entry is `key: varint length + bytes | version: u64 LE | kind: u8
//! (0 value, 1 tombstone, 2 delta) | [value: varint length + bytes]`. Entries are
//! sorted by key ascending, then version descending. On disk a raw block
//! is [`verity_codec::block`]-encoded (stored or zstd) inside a checksummed
//! [`verity_codec::frame`].

use std::cmp::Ordering;

use verity_codec::reader::{put_bytes, put_u32, put_u64, Reader};
use verity_codec::CodecError;

use crate::memtable::{RecordRef, MAX_KEY, MAX_VALUE};

/// Orders `(key, version)` pairs the way segments store them: key
/// ascending, then version descending (newest first).
pub fn cmp_entry(a_key: &[u8], a_version: u64, b_key: &[u8], b_version: u64) -> Ordering {
    a_key.cmp(b_key).then(b_version.cmp(&a_version))
}

/// One entry of a block, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// The store key.
    pub key: &'a [u8],
    /// The version that wrote it.
    pub version: u64,
    /// What the version wrote.
    pub record: RecordRef<'a>,
}

/// Builds one raw block.
#[derive(Debug, Default)]
pub struct BlockBuilder {
    data: Vec<u8>,
    offsets: Vec<u32>,
}

impl BlockBuilder {
    /// Appends an entry (the caller keeps the order).
    pub fn add(&mut self, key: &[u8], version: u64, record: RecordRef<'_>) {
        self.offsets.push(self.data.len() as u32);
        put_bytes(&mut self.data, key);
        put_u64(&mut self.data, version);
        self.data.push(record.kind());
        if let Some(b) = record.bytes() {
            put_bytes(&mut self.data, b);
        }
    }

    /// Bytes the raw block would take now.
    pub fn size(&self) -> usize {
        self.data.len() + 4 * self.offsets.len() + 4
    }

    /// True when no entry was added.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The raw block; the builder is empty afterwards.
    pub fn finish(&mut self) -> Vec<u8> {
        let raw = self.finish_in_place().to_vec();
        self.clear();
        raw
    }

    /// The raw block, built in the builder's own buffer; [`clear`](Self::clear)
    /// then empties the builder and keeps the buffer for the next block
    /// (a segment writer copies each block once, into its output).
    pub fn finish_in_place(&mut self) -> &[u8] {
        self.data.reserve(4 * self.offsets.len() + 4);
        for &o in &self.offsets {
            put_u32(&mut self.data, o);
        }
        put_u32(&mut self.data, self.offsets.len() as u32);
        self.offsets.clear();
        &self.data
    }

    /// Empties the builder, keeping its buffers.
    pub fn clear(&mut self) {
        self.data.clear();
        self.offsets.clear();
    }
}

/// A decoded raw block, checked for shape: the offset table fits and its
/// offsets increase inside the entry area. Entries are parsed on access,
/// and a malformed one is an error, never a panic.
#[derive(Debug)]
pub struct Block {
    raw: Vec<u8>,
    count: usize,
    /// Where the offset table starts (the end of the entry area).
    table: usize,
}

/// The key and version at the start of an entry.
fn read_key_version<'a>(r: &mut Reader<'a>) -> Result<(&'a [u8], u64), CodecError> {
    let key = r.bytes(MAX_KEY as u64 + 1)?;
    Ok((key, r.u64()?))
}

fn u32_at(raw: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&raw[at..at + 4]);
    u32::from_le_bytes(b)
}

impl Block {
    /// Checks the shape of a raw block.
    pub fn new(raw: Vec<u8>) -> Result<Block, CodecError> {
        let bad = |detail| CodecError::Corrupt {
            what: "segment block",
            offset: 0,
            detail,
        };
        if raw.len() < 4 {
            return Err(bad("block shorter than its count"));
        }
        let count = u32_at(&raw, raw.len() - 4) as usize;
        let table = (raw.len() - 4)
            .checked_sub(count.checked_mul(4).ok_or(bad("entry count overflows"))?)
            .ok_or(bad("offset table larger than the block"))?;
        if count == 0 {
            return Err(bad("empty block"));
        }
        let mut prev = None;
        for i in 0..count {
            let o = u32_at(&raw, table + 4 * i) as usize;
            if o >= table || prev.is_some_and(|p| o <= p) || (i == 0 && o != 0) {
                return Err(bad("entry offsets out of order"));
            }
            prev = Some(o);
        }
        Ok(Block { raw, count, table })
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the block has no entry (never, for a checked block).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes held.
    pub fn size_bytes(&self) -> usize {
        self.raw.len()
    }

    /// A reader over entry `i` (< `len()`).
    fn entry_reader(&self, i: usize) -> Reader<'_> {
        let start = u32_at(&self.raw, self.table + 4 * i) as usize;
        let end = if i + 1 < self.count {
            u32_at(&self.raw, self.table + 4 * (i + 1)) as usize
        } else {
            self.table
        };
        Reader::with_base(&self.raw[start..end], "segment entry", start)
    }

    /// The key and version of entry `i` (< `len()`), without parsing its
    /// record: what a search compares.
    fn key_version(&self, i: usize) -> Result<(&[u8], u64), CodecError> {
        read_key_version(&mut self.entry_reader(i))
    }

    /// Entry `i` (< `len()`).
    pub fn entry(&self, i: usize) -> Result<EntryRef<'_>, CodecError> {
        let mut r = self.entry_reader(i);
        let (key, version) = read_key_version(&mut r)?;
        let record = match r.u8()? {
            0 => RecordRef::Put(r.bytes(MAX_VALUE as u64)?),
            1 => RecordRef::Delete,
            2 => RecordRef::Delta(r.bytes(MAX_VALUE as u64)?),
            _ => return Err(r.corrupt("unknown entry kind")),
        };
        r.finish()?;
        Ok(EntryRef {
            key,
            version,
            record,
        })
    }

    /// The index of the first entry at or after `(key, version)` in segment
    /// order, or `len()` when every entry is before it. For a lookup of "the
    /// newest entry of `key` at or below `version`", that entry is the
    /// answer when its key is `key`.
    pub fn seek(&self, key: &[u8], version: u64) -> Result<usize, CodecError> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (k, v) = self.key_version(mid)?;
            if cmp_entry(k, v, key, version) == Ordering::Less {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Result<Block, CodecError> {
        let mut b = BlockBuilder::default();
        b.add(b"a", 9, RecordRef::Put(b"a9"));
        b.add(b"a", 4, RecordRef::Delete);
        b.add(b"c", 7, RecordRef::Delta(b""));
        Block::new(b.finish())
    }

    #[test]
    fn seek_finds_the_newest_entry_at_or_below_a_version() -> Result<(), CodecError> {
        let b = sample()?;
        assert_eq!(b.len(), 3);
        assert_eq!(b.seek(b"a", 100)?, 0);
        assert_eq!(b.seek(b"a", 9)?, 0);
        assert_eq!(b.seek(b"a", 8)?, 1);
        assert_eq!(b.entry(1)?.record, RecordRef::Delete);
        assert_eq!(b.seek(b"a", 3)?, 2);
        assert_eq!(b.entry(2)?.key, b"c");
        assert_eq!(b.seek(b"b", 3)?, 2);
        assert_eq!(b.seek(b"d", 3)?, 3);
        assert_eq!(b.entry(2)?.record, RecordRef::Delta(b""));
        Ok(())
    }

    #[test]
    fn malformed_blocks_are_errors() -> Result<(), CodecError> {
        assert!(Block::new(vec![]).is_err());
        assert!(Block::new(vec![0, 0, 0, 0]).is_err());
        assert!(Block::new(vec![9, 0, 0, 0]).is_err());
        let mut raw = BlockBuilder::default();
        raw.add(b"k", 1, RecordRef::Put(b"v"));
        let mut raw = raw.finish();
        // Damage the key length: the entry no longer fits its slot.
        raw[0] = 0x7f;
        let b = Block::new(raw)?;
        assert!(b.entry(0).is_err());
        Ok(())
    }
}
