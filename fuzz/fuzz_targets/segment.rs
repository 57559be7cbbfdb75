//! Segment files: arbitrary bytes opened as one, and segments written from
//! entries the input chooses.
//!
//! First byte even: the rest is a whole segment file, opened with the
//! manifest's record taken from its footer (as a manifest that agrees with
//! the file would hold it). `Segment::open` gives a typed error or a
//! segment; reading every entry, and looking each one's key up at its
//! version, gives answers or typed errors, never a panic.
//!
//! First byte odd: the rest describes entries (keys from a four-letter
//! alphabet, so that many share their first 8 bytes, several versions
//! each; puts, deltas and tombstones), written by `SegmentWriter` in
//! blocks of a size the input picks, stored or compressed with zstd. The
//! segment must open; its entries must come back in segment order; every
//! key must be found at each of its versions, between them and above
//! them, with all its older entries after; a key it does not hold must not
//! be found.
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use verity_codec::block::Compression;
use verity_engine::cache::BlockCache;
use verity_engine::io::IoBackend;
use verity_engine::segment::filter::key_hash;
use verity_engine::segment::reader::Segment;
use verity_engine::segment::writer::SegmentWriter;
use verity_engine::segment::{SegmentMeta, FOOTER_LEN};
use verity_engine::sim::SimDisk;
use verity_engine::Record;

/// Entries of one written segment, at most.
const MAX_ENTRIES: usize = 2_000;

/// Lookups of an arbitrary file's entries, at most.
const MAX_LOOKUPS: usize = 1_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        arbitrary_file(rest);
    } else {
        written(rest);
    }
});

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// The segment's file on a fresh simulated disk (its directory made).
fn segment_path(disk: &SimDisk) -> &'static Path {
    disk.create_dir_all(Path::new("/s")).expect("mkdir");
    Path::new("/s/000001.seg")
}

fn arbitrary_file(bytes: &[u8]) {
    if bytes.len() < FOOTER_LEN {
        return;
    }
    // The footer's entry count and version range, at the offsets
    // `docs/format.md` gives them (the engine's footer decoder is its own).
    let footer = &bytes[bytes.len() - FOOTER_LEN..];
    let meta = SegmentMeta {
        number: 1,
        size: bytes.len() as u64,
        entries: u64_at(footer, 40),
        min_version: u64_at(footer, 48),
        max_version: u64_at(footer, 56),
    };
    let disk = SimDisk::new();
    let path = segment_path(&disk);
    let file = disk.open(path, true).expect("create");
    file.write_at(bytes, 0).expect("write");
    file.sync().expect("sync");
    let Ok(segment) = Segment::open(&disk, path, meta) else {
        return;
    };
    let segment = Arc::new(segment);
    let cache = BlockCache::new(1 << 20);
    let mut iter = segment.iter();
    let mut lookups = 0;
    while let Ok(Some((key, version, _))) = iter.next_entry() {
        if lookups < MAX_LOOKUPS {
            lookups += 1;
            let _ = segment.walk_key(&key, version, key_hash(&key), &cache, |_, _| None);
        }
    }
}

/// Reads the input a byte at a time, as zeros past its end.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }
}

/// A segment's entries in segment order: key ascending, version descending.
type Model = BTreeMap<(Vec<u8>, std::cmp::Reverse<u64>), Record>;

fn written(bytes: &[u8]) {
    let mut input = Input(bytes);
    let block_size = 64 + usize::from(input.u16() % 4096);
    let compression = if input.byte() % 2 == 0 {
        Compression::None
    } else {
        Compression::Zstd(1)
    };
    let mut model = Model::new();
    while !input.0.is_empty() && model.len() < MAX_ENTRIES {
        // A store key: a namespace byte, then up to 23 letters of a
        // four-letter alphabet.
        let len = usize::from(input.byte() % 24);
        let mut key = vec![b'S'];
        key.extend((0..len).map(|_| b'a' + input.byte() % 4));
        let version = u64::from(input.u16());
        let value: Vec<u8> = (0..input.byte() % 16).map(|_| input.byte()).collect();
        let record = match input.byte() % 3 {
            0 => Record::Put(value.into()),
            1 => Record::Delta(value.into()),
            _ => Record::Delete,
        };
        model.insert((key, std::cmp::Reverse(version)), record);
    }
    if model.is_empty() {
        return;
    }
    let disk = SimDisk::new();
    let path = segment_path(&disk);
    let mut writer =
        SegmentWriter::create(&disk, path, 1, block_size, compression).expect("create");
    for ((key, version), record) in &model {
        writer
            .add(key, version.0, record.as_ref())
            .expect("entries in order");
    }
    let meta = writer.finish().expect("finish");
    let segment = Arc::new(Segment::open(&disk, path, meta).expect("a written segment opens"));

    let mut iter = segment.iter();
    let mut read = Vec::new();
    while let Some(entry) = iter.next_entry().expect("a written segment reads") {
        read.push(entry);
    }
    let expected: Vec<_> = model
        .iter()
        .map(|((k, v), r)| (k.clone(), v.0, r.clone()))
        .collect();
    assert_eq!(read, expected, "entries in segment order");

    let cache = BlockCache::new(1 << 16);
    let mut by_key: BTreeMap<&[u8], Vec<(u64, &Record)>> = BTreeMap::new();
    for ((k, v), r) in &model {
        by_key.entry(k).or_default().push((v.0, r));
    }
    for (key, versions) in &by_key {
        // Every version, one below and one above each: the entries at or
        // below, newest first.
        let mut at: Vec<u64> = versions
            .iter()
            .flat_map(|(v, _)| [v.saturating_sub(1), *v, v.saturating_add(1)])
            .collect();
        at.sort_unstable();
        at.dedup();
        for q in at {
            let want: Vec<(u64, Record)> = versions
                .iter()
                .filter(|(v, _)| *v <= q)
                .map(|(v, r)| (*v, (*r).clone()))
                .collect();
            let mut got = Vec::new();
            let stopped = segment
                .walk_key(key, q, key_hash(key), &cache, |v, r| {
                    got.push((v, r));
                    v.checked_sub(1)
                })
                .expect("a written segment reads");
            assert_eq!(got, want, "the entries of a key at or below {q}");
            // The walk stops itself only after an entry at version 0.
            assert_eq!(stopped, got.last().is_some_and(|e| e.0 == 0));
        }
        // A key with a letter outside the alphabet is absent.
        let mut other = key.to_vec();
        other.push(b'z');
        let found = segment
            .walk_key(&other, u64::MAX, key_hash(&other), &cache, |_, _| None)
            .expect("a written segment reads");
        assert!(!found, "a key the segment does not hold was found");
    }
}
