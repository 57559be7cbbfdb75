//! Segment files: immutable sorted runs of `(store key, version) -> value
//! or tombstone`, written by a flush or a compaction.
//!
//! File layout (see `docs/format.md`): data blocks, each a checksummed
//! frame, then the filter frame, then the index frame, then a 72-byte
//! footer. The footer names where the index and filter are and carries the
//! entry count and the version range; it is checksummed too, so every byte
//! of a segment is covered by a checksum checked on the read that meets it.

pub mod block;
pub mod filter;
pub mod reader;
pub mod writer;

use verity_codec::reader::Reader;
use verity_codec::{frame, CodecError};

pub use reader::{Segment, SegmentIter};
pub use writer::SegmentWriter;

/// The first bytes of a segment footer.
pub const MAGIC: [u8; 8] = *b"VRTYSEG\0";
/// The segment format this build writes: 2, whose filter is blocked (one
/// cache line a lookup, see `filter`).
pub const FORMAT: u8 = 2;
/// The oldest segment format this build reads: 1, the same but for its
/// classic filter.
pub const MIN_FORMAT: u8 = 1;
/// Bytes of the footer.
pub const FOOTER_LEN: usize = 72;

/// What the manifest and the footer record of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentMeta {
    /// The file number (`{number:06}.seg`).
    pub number: u64,
    /// Bytes of the file.
    pub size: u64,
    /// Entries (key, version) in it.
    pub entries: u64,
    /// The oldest version of an entry in it.
    pub min_version: u64,
    /// The newest version of an entry in it.
    pub max_version: u64,
}

/// The footer's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Footer {
    pub index_off: u64,
    pub index_len: u32,
    pub filter_off: u64,
    pub filter_len: u32,
    pub entries: u64,
    pub min_version: u64,
    pub max_version: u64,
}

impl Footer {
    pub(crate) fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut f = [0u8; FOOTER_LEN];
        f[..8].copy_from_slice(&MAGIC);
        f[8] = FORMAT;
        f[12..16].copy_from_slice(&self.index_len.to_le_bytes());
        f[16..24].copy_from_slice(&self.index_off.to_le_bytes());
        f[24..32].copy_from_slice(&self.filter_off.to_le_bytes());
        f[32..36].copy_from_slice(&self.filter_len.to_le_bytes());
        f[40..48].copy_from_slice(&self.entries.to_le_bytes());
        f[48..56].copy_from_slice(&self.min_version.to_le_bytes());
        f[56..64].copy_from_slice(&self.max_version.to_le_bytes());
        let crc = frame::checksum(&f[..68]);
        f[68..72].copy_from_slice(&crc.to_le_bytes());
        f
    }

    /// Decodes and checks a footer read from the end of a file of
    /// `file_len` bytes.
    pub(crate) fn decode(f: &[u8; FOOTER_LEN], file_len: u64) -> Result<Footer, String> {
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&f[68..72]);
        let (expected, found) = (u32::from_le_bytes(crc), frame::checksum(&f[..68]));
        if expected != found {
            return Err(format!(
                "footer checksum mismatch (expected {expected:#010x}, found {found:#010x})"
            ));
        }
        if f[..8] != MAGIC {
            return Err("not a segment file (bad magic)".to_owned());
        }
        if !(MIN_FORMAT..=FORMAT).contains(&f[8]) {
            return Err(format!("unsupported segment format {}", f[8]));
        }
        if f[9..12]
            .iter()
            .chain(&f[36..40])
            .chain(&f[64..68])
            .any(|&b| b != 0)
        {
            return Err("reserved footer bytes are not zero".to_owned());
        }
        let mut r = Reader::new(&f[12..64], "segment footer");
        let read = |r: &mut Reader| -> Result<Footer, CodecError> {
            let index_len = r.u32()?;
            let index_off = r.u64()?;
            let filter_off = r.u64()?;
            let filter_len = r.u32()?;
            r.u32()?;
            Ok(Footer {
                index_off,
                index_len,
                filter_off,
                filter_len,
                entries: r.u64()?,
                min_version: r.u64()?,
                max_version: r.u64()?,
            })
        };
        let footer = read(&mut r).map_err(|e| e.to_string())?;
        let body_end = file_len.saturating_sub(FOOTER_LEN as u64);
        let fits = |off: u64, len: u32| {
            off.checked_add(u64::from(len))
                .is_some_and(|e| e <= body_end)
        };
        if !fits(footer.index_off, footer.index_len) || !fits(footer.filter_off, footer.filter_len)
        {
            return Err("footer points outside the file".to_owned());
        }
        if footer.min_version > footer.max_version {
            return Err("footer version range is inverted".to_owned());
        }
        Ok(footer)
    }
}

/// One block as the index lists it: the last entry of the block and where
/// the block's frame is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub last_key: Box<[u8]>,
    pub last_version: u64,
    pub offset: u64,
    pub len: u32,
}

/// The first 8 bytes of `key` as a big-endian integer, zero-padded. Zero
/// is the least byte, so `key_prefix(a) < key_prefix(b)` implies `a < b`
/// in byte order; equal prefixes decide nothing.
pub(crate) fn key_prefix(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod prefix_tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::key_prefix;

    /// An index search decides on prefixes alone only where they differ,
    /// so a smaller prefix must mean a smaller key: keys of every length
    /// from a small alphabet (zero bytes, shared prefixes, one key the
    /// prefix of another), compared pair by pair.
    #[test]
    fn a_smaller_prefix_means_a_smaller_key() {
        let seed = verity_testkit::seed("a_smaller_prefix_means_a_smaller_key");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let keys: Vec<Vec<u8>> = (0..400)
            .map(|_| {
                let len = rng.gen_range(0..12);
                (0..len)
                    .map(|_| [0u8, 1, 0xff][rng.gen_range(0..3)])
                    .collect()
            })
            .collect();
        for a in &keys {
            for b in &keys {
                if key_prefix(a) < key_prefix(b) {
                    assert!(a < b, "{a:?} {b:?} (seed {seed})");
                }
                if a == b {
                    assert_eq!(key_prefix(a), key_prefix(b));
                }
            }
        }
        assert_eq!(key_prefix(b"ab"), key_prefix(b"ab\0"));
        assert!(key_prefix(b"ab") < key_prefix(b"ab\0\x01"));
    }
}

#[cfg(test)]
mod footer_tests {
    use super::*;
    use crate::cache::BlockCache;
    use crate::io::StdIo;
    use crate::memtable::{Record, RecordRef};
    use verity_codec::block::Compression;

    /// A segment as format 1 wrote it (footer format 1, a classic filter
    /// of the same length, built by hand from `docs/format.md`) opens,
    /// and every key is found through its filter.
    #[test]
    fn a_format_one_segment_opens_and_finds_its_keys() -> crate::error::Result<()> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("000001.seg");
        let keys: Vec<Vec<u8>> = (0u32..3_000)
            .map(|i| format!("key{i:06}").into_bytes())
            .collect();
        let mut w = SegmentWriter::create(&StdIo, &path, 1, 4096, Compression::None)?;
        for (i, k) in keys.iter().enumerate() {
            w.add(k, 7, RecordRef::Put(&(i as u32).to_le_bytes()))?;
        }
        let meta = w.finish()?;

        let mut bytes = std::fs::read(&path).expect("read the segment");
        let mut fb = [0u8; FOOTER_LEN];
        let footer_at = bytes.len() - FOOTER_LEN;
        fb.copy_from_slice(&bytes[footer_at..]);
        let footer = Footer::decode(&fb, bytes.len() as u64).expect("footer");
        let (at, len) = (footer.filter_off as usize, footer.filter_len as usize);
        // The classic layout, as long as the blocked filter it replaces
        // (its frame header and layout byte aside).
        let hashes: Vec<u64> = keys.iter().map(|k| filter::key_hash(k)).collect();
        let classic = filter::classic_by_hand(&hashes, len - frame::HEADER_LEN - 1);
        let mut framed = Vec::new();
        frame::put(&mut framed, &classic).expect("frame");
        assert_eq!(framed.len(), len);
        bytes[at..at + len].copy_from_slice(&framed);
        bytes[footer_at + 8] = 1;
        let crc = frame::checksum(&bytes[footer_at..footer_at + 68]);
        bytes[footer_at + 68..].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&path, &bytes).expect("write the segment");

        let segment = Segment::open(&StdIo, &path, meta)?;
        let cache = BlockCache::new(1 << 20);
        for (i, k) in keys.iter().enumerate() {
            let mut found = None;
            segment.walk_key(k, 7, filter::key_hash(k), &cache, |v, r| {
                found = Some((v, r));
                None
            })?;
            let want = (i as u32).to_le_bytes();
            assert!(
                matches!(&found, Some((7, Record::Put(v))) if v[..] == want[..]),
                "key {i}: {found:?}"
            );
        }
        Ok(())
    }

    /// Format 2 is written; formats 1 (the classic filter) and 2 are read,
    /// and the others refused.
    #[test]
    fn footers_of_formats_one_and_two_are_read() {
        let footer = Footer {
            index_off: 100,
            index_len: 20,
            filter_off: 60,
            filter_len: 40,
            entries: 3,
            min_version: 1,
            max_version: 2,
        };
        let file_len = 120 + FOOTER_LEN as u64;
        let encoded = footer.encode();
        assert_eq!(encoded[8], 2);
        for format in 0..=4u8 {
            let mut f = encoded;
            f[8] = format;
            let crc = frame::checksum(&f[..68]);
            f[68..72].copy_from_slice(&crc.to_le_bytes());
            let decoded = Footer::decode(&f, file_len);
            if (1..=2).contains(&format) {
                assert_eq!(decoded, Ok(footer), "format {format}");
            } else {
                assert_eq!(decoded, Err(format!("unsupported segment format {format}")));
            }
        }
    }
}
