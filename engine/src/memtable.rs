//! The memtable: the versions committed since the last flush, in memory,
//! and the write batch that fills it.
//!
//! Keys are store keys (namespace prefix + user key). Each key keeps its
//! versions in ascending order, so "the entry as of `v`" is a binary
//! search, and flushing walks keys in order and versions newest first: the
//! order of a segment file.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use smallvec::{smallvec, SmallVec};

use verity_codec::reader::{put_bytes, Reader};
use verity_codec::varint;
use verity_codec::SharedBytes;

use crate::error::{EngineError, Result};
use crate::Namespace;

/// A value as reads return it, or `None` when the key is absent or
/// deleted.
pub type Value = Option<SharedBytes>;

/// What one version wrote to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A whole value (whose allocation it may share with other records
    /// written with it, see [`SharedBytes`]).
    Put(SharedBytes),
    /// A value that is a change to the key's older records (a page delta):
    /// reading it needs the records back to the newest `Put`. Compaction
    /// keeps that chain for every retained version.
    Delta(SharedBytes),
    /// A deletion (tombstone).
    Delete,
}

impl Record {
    /// The bytes of a put or a delta.
    pub fn bytes(&self) -> Option<&SharedBytes> {
        match self {
            Record::Put(b) | Record::Delta(b) => Some(b),
            Record::Delete => None,
        }
    }

    /// True for a put or a deletion: the record needs nothing older.
    pub fn is_whole(&self) -> bool {
        !matches!(self, Record::Delta(_))
    }

    /// The record borrowed.
    pub fn as_ref(&self) -> RecordRef<'_> {
        match self {
            Record::Put(b) => RecordRef::Put(b),
            Record::Delta(b) => RecordRef::Delta(b),
            Record::Delete => RecordRef::Delete,
        }
    }

    /// The value a plain read returns: the bytes of a put or a delta.
    pub fn value(&self) -> Value {
        self.bytes().cloned()
    }

    fn size(&self) -> usize {
        self.bytes().map_or(0, |b| b.len())
    }
}

/// A record borrowed from a block or a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordRef<'a> {
    /// A whole value.
    Put(&'a [u8]),
    /// A change to the older records.
    Delta(&'a [u8]),
    /// A deletion.
    Delete,
}

impl RecordRef<'_> {
    /// The kind byte of the record in WAL bodies and blocks: 0 put,
    /// 1 delete, 2 delta.
    pub fn kind(&self) -> u8 {
        match self {
            RecordRef::Put(_) => 0,
            RecordRef::Delete => 1,
            RecordRef::Delta(_) => 2,
        }
    }

    /// The bytes of a put or a delta.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            RecordRef::Put(b) | RecordRef::Delta(b) => Some(b),
            RecordRef::Delete => None,
        }
    }

    /// An owned copy.
    pub fn to_owned_record(&self) -> Record {
        match self {
            RecordRef::Put(b) => Record::Put(SharedBytes::from(*b)),
            RecordRef::Delta(b) => Record::Delta(SharedBytes::from(*b)),
            RecordRef::Delete => Record::Delete,
        }
    }
}

/// The longest user key the engine takes, in bytes.
pub const MAX_KEY: usize = 64 << 10;
/// The longest value the engine takes, in bytes.
pub const MAX_VALUE: usize = 64 << 20;

/// Store keys up to this many bytes sit inline in the entries of write
/// batches and of the memtable: a namespace byte and a 32-byte key hash,
/// or a page path, fit. Such a key has no allocation of its own, and a
/// comparison reads the entry itself, where a `Vec` key cost an allocation
/// and a free, and a comparison one more cold line (BENCHMARKS.md).
const KEY_INLINE: usize = 40;

/// A store key as write batches, the memtable and reads keep it.
pub type StoreKey = SmallVec<[u8; KEY_INLINE]>;

/// A key's entries in the memtable, oldest first: most keys have one.
type Versions = SmallVec<[(u64, Record); 1]>;

/// The writes of one version: puts and deletes over the three namespaces.
/// A key written twice in one batch keeps its last write.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    entries: Vec<(StoreKey, Record)>,
    bytes: usize,
}

/// The store key of a namespace's user key: its prefix byte, then the key
/// (inline up to `KEY_INLINE` bytes: a read builds it without allocating).
pub fn store_key(ns: Namespace, key: &[u8]) -> StoreKey {
    let mut k = StoreKey::with_capacity(1 + key.len());
    k.push(ns.prefix());
    k.extend_from_slice(key);
    k
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` of `ns` to `value`.
    pub fn put(&mut self, ns: Namespace, key: &[u8], value: &[u8]) -> Result<()> {
        self.push(ns, key, RecordRef::Put(value))
    }

    /// Writes a delta to `key` of `ns`: a change that needs the key's
    /// older records to be read (see [`Record::Delta`]).
    pub fn put_delta(&mut self, ns: Namespace, key: &[u8], delta: &[u8]) -> Result<()> {
        self.push(ns, key, RecordRef::Delta(delta))
    }

    /// Deletes `key` of `ns` (writes a tombstone).
    pub fn delete(&mut self, ns: Namespace, key: &[u8]) -> Result<()> {
        self.push(ns, key, RecordRef::Delete)
    }

    /// Adds `record` (a put, a delta or a tombstone) to `key` of `ns`,
    /// keeping a value that is already in a shared allocation as it is,
    /// where [`WriteBatch::put`] and [`WriteBatch::put_delta`] copy theirs.
    /// The batch and the memtable count the value's own bytes, not the
    /// rest of an allocation it shares ([`SharedBytes::buffer_len`]): a
    /// caller keeping a small range of a large buffer should copy it.
    pub fn push_record(&mut self, ns: Namespace, key: &[u8], record: Record) -> Result<()> {
        self.admit(key, record.size())?;
        self.entries.push((store_key(ns, key), record));
        Ok(())
    }

    fn push(&mut self, ns: Namespace, key: &[u8], record: RecordRef<'_>) -> Result<()> {
        self.admit(key, record.bytes().map_or(0, <[u8]>::len))?;
        self.entries
            .push((store_key(ns, key), record.to_owned_record()));
        Ok(())
    }

    /// Checks a write of `key` with `len` bytes of value, and counts it.
    fn admit(&mut self, key: &[u8], len: usize) -> Result<()> {
        check_key(key)?;
        if len > MAX_VALUE {
            return Err(EngineError::InvalidArgument("value longer than MAX_VALUE"));
        }
        self.bytes += key.len() + len + 16;
        Ok(())
    }

    /// The number of writes in the batch.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the batch holds no writes.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Approximate bytes of keys and values.
    pub fn size_bytes(&self) -> usize {
        self.bytes
    }

    /// Sorts by key and keeps the last write of each key.
    pub(crate) fn normalise(&mut self) {
        // A stable sort keeps writes of one key in the order they were made.
        self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(StoreKey, Record)> = Vec::with_capacity(self.entries.len());
        for e in self.entries.drain(..) {
            match out.last_mut() {
                Some(last) if last.0 == e.0 => *last = e,
                _ => out.push(e),
            }
        }
        self.entries = out;
    }

    /// The entries, in order after [`normalise`](Self::normalise).
    pub(crate) fn entries(&self) -> &[(StoreKey, Record)] {
        &self.entries
    }

    /// The WAL body of the batch:
    /// `count: varint | (key: bytes | kind: u8 | [value: bytes])*`, where
    /// `bytes` is a varint length and the bytes, and kind is 0 for a put,
    /// 1 for a tombstone and 2 for a delta.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// [`encode`](Self::encode), appended to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.bytes + 8);
        varint::put(out, self.entries.len() as u64);
        for (key, value) in &self.entries {
            put_bytes(out, key);
            let r = value.as_ref();
            out.push(r.kind());
            if let Some(b) = r.bytes() {
                put_bytes(out, b);
            }
        }
    }

    /// Decodes a WAL body written by [`encode`](Self::encode).
    pub(crate) fn decode(body: &[u8]) -> std::result::Result<WriteBatch, String> {
        let err = |e: verity_codec::CodecError| e.to_string();
        let mut r = Reader::new(body, "WAL batch");
        let count = r.count(3, u32::MAX as u64).map_err(err)?;
        let mut batch = WriteBatch::new();
        for _ in 0..count {
            let key = r.bytes(MAX_KEY as u64 + 1).map_err(err)?;
            if key.is_empty() {
                return Err("empty store key".to_owned());
            }
            let value = match r.u8().map_err(err)? {
                0 => Record::Put(SharedBytes::from(r.bytes(MAX_VALUE as u64).map_err(err)?)),
                1 => Record::Delete,
                2 => Record::Delta(SharedBytes::from(r.bytes(MAX_VALUE as u64).map_err(err)?)),
                k => return Err(format!("unknown entry kind {k}")),
            };
            batch.bytes += key.len() + value.size() + 16;
            batch.entries.push((StoreKey::from_slice(key), value));
        }
        r.finish().map_err(err)?;
        Ok(batch)
    }
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.len() > MAX_KEY {
        return Err(EngineError::InvalidArgument("key longer than MAX_KEY"));
    }
    Ok(())
}

/// The versions committed since the last flush.
#[derive(Debug, Default)]
pub struct Memtable {
    map: BTreeMap<StoreKey, Versions>,
    bytes: usize,
    entries: usize,
    min_version: Option<u64>,
    max_version: Option<u64>,
}

impl Memtable {
    /// An empty memtable.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the writes of `version`, newer than every version here.
    pub(crate) fn apply(&mut self, version: u64, batch: &WriteBatch) {
        for (key, value) in batch.entries() {
            let size = key.len() + value.size() + 48;
            // One search: the key's copy is a copy of its inline bytes.
            match self.map.entry(key.clone()) {
                Entry::Occupied(mut o) => {
                    let versions = o.get_mut();
                    match versions.last_mut() {
                        Some(last) if last.0 == version => last.1 = value.clone(),
                        _ => versions.push((version, value.clone())),
                    }
                }
                Entry::Vacant(v) => {
                    v.insert(smallvec![(version, value.clone())]);
                }
            }
            self.bytes += size;
            self.entries += 1;
        }
        self.min_version.get_or_insert(version);
        self.max_version = Some(version);
    }

    /// The newest entry of `key` at or below `version`.
    pub fn get(&self, key: &[u8], version: u64) -> Option<(u64, &Record)> {
        let versions = self.map.get(key)?;
        let n = versions.partition_point(|(v, _)| *v <= version);
        versions[..n].last().map(|(v, value)| (*v, value))
    }

    /// Every entry of `key`, oldest first (empty when none).
    pub(crate) fn versions(&self, key: &[u8]) -> &[(u64, Record)] {
        self.map.get(key).map_or(&[], |v| v.as_slice())
    }

    /// Approximate memory held, in bytes.
    pub fn size_bytes(&self) -> usize {
        self.bytes
    }

    /// The number of entries (key, version).
    pub fn len(&self) -> usize {
        self.entries
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The oldest version written here.
    pub fn min_version(&self) -> Option<u64> {
        self.min_version
    }

    /// The newest version written here.
    pub fn max_version(&self) -> Option<u64> {
        self.max_version
    }

    /// Every entry in segment order: keys ascending, versions descending.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], u64, &Record)> + '_ {
        self.map.iter().flat_map(|(key, versions)| {
            versions
                .iter()
                .rev()
                .map(move |(v, value)| (key.as_slice(), *v, value))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn batch_round_trips_and_keeps_the_last_write() -> Result<()> {
        let mut b = WriteBatch::new();
        b.put(Namespace::State, b"b", b"1")?;
        b.put(Namespace::State, b"a", b"2")?;
        b.delete(Namespace::State, b"b")?;
        b.put(Namespace::Pages, b"", b"root")?;
        b.normalise();
        let back = WriteBatch::decode(&b.encode()).map_err(|_| EngineError::Poisoned)?;
        assert_eq!(back.entries(), b.entries());
        assert_eq!(b.len(), 3);
        assert_eq!(
            b.entries()[2],
            (StoreKey::from_slice(b"Sb"), Record::Delete)
        );
        Ok(())
    }

    #[test]
    fn records_pushed_whole_are_the_writes_they_stand_for() -> Result<()> {
        // Ranges of one allocation, as an update's records of a batch of
        // pages are.
        let buf: Arc<[u8]> = Arc::from(&b"<page>"[..]);
        let shared = SharedBytes::slice(&buf, 1..5);
        let mut by_ref = WriteBatch::new();
        by_ref.put(Namespace::Pages, b"p", b"page")?;
        by_ref.put_delta(Namespace::Pages, b"q", b"page")?;
        by_ref.delete(Namespace::State, b"s")?;
        let mut whole = WriteBatch::new();
        whole.push_record(Namespace::Pages, b"p", Record::Put(shared.clone()))?;
        whole.push_record(Namespace::Pages, b"q", Record::Delta(shared.clone()))?;
        whole.push_record(Namespace::State, b"s", Record::Delete)?;
        assert_eq!(whole.entries(), by_ref.entries());
        assert_eq!(whole.size_bytes(), by_ref.size_bytes());
        assert_eq!(whole.encode(), by_ref.encode());
        // The value is kept, not copied.
        assert!(
            matches!(&whole.entries()[0].1, Record::Put(b) if std::ptr::eq(b.as_ptr(), &buf[1]))
        );
        let long = vec![0u8; MAX_KEY + 1];
        assert!(whole
            .push_record(Namespace::State, &long, Record::Delete)
            .is_err());
        assert_eq!(whole.len(), 3);
        Ok(())
    }

    #[test]
    fn memtable_answers_as_of_a_version() -> Result<()> {
        let mut m = Memtable::new();
        for v in [3u64, 5, 9] {
            let mut b = WriteBatch::new();
            b.put(Namespace::State, b"k", &v.to_le_bytes())?;
            b.normalise();
            m.apply(v, &b);
        }
        assert!(m.get(b"Sk", 2).is_none());
        assert_eq!(m.get(b"Sk", 4).map(|e| e.0), Some(3));
        assert_eq!(m.get(b"Sk", 9).map(|e| e.0), Some(9));
        assert_eq!(m.get(b"Sk", 100).map(|e| e.0), Some(9));
        let order: Vec<u64> = m.iter().map(|e| e.1).collect();
        assert_eq!(order, vec![9, 5, 3]);
        Ok(())
    }

    #[test]
    fn keys_inline_and_on_the_heap_keep_one_order() -> Result<()> {
        // Keys of 0 to 99 bytes (store keys of 1 to 100: inline up to
        // `KEY_INLINE`, on the heap beyond), prefixes of one another and
        // not, written over three versions in a scrambled order.
        let key = |i: usize| -> Vec<u8> { (0..i % 100).map(|j| (j * 7 + i / 100) as u8).collect() };
        let mut model: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
        let mut m = Memtable::new();
        for v in 1..=3u64 {
            let mut b = WriteBatch::new();
            for i in (0..300).map(|i| (i * 37 + v as usize) % 300) {
                if i % 3 == v as usize % 3 {
                    continue;
                }
                b.put(Namespace::State, &key(i), &v.to_le_bytes())?;
                let versions = model
                    .entry([&[Namespace::State.prefix()][..], &key(i)].concat())
                    .or_default();
                if versions.last() != Some(&v) {
                    versions.push(v);
                }
            }
            b.normalise();
            let back = WriteBatch::decode(&b.encode()).map_err(|_| EngineError::Poisoned)?;
            assert_eq!(back.entries(), b.entries());
            m.apply(v, &b);
        }
        let expected: Vec<(Vec<u8>, u64)> = model
            .iter()
            .flat_map(|(k, vs)| vs.iter().rev().map(move |v| (k.clone(), *v)))
            .collect();
        let got: Vec<(Vec<u8>, u64)> = m.iter().map(|(k, v, _)| (k.to_vec(), v)).collect();
        assert_eq!(got, expected);
        for (k, vs) in &model {
            let found: Vec<u64> = m.versions(k).iter().map(|e| e.0).collect();
            assert_eq!(&found, vs);
            assert_eq!(m.get(k, 3).map(|e| e.0), vs.last().copied());
        }
        assert!(model.keys().any(|k| k.len() > KEY_INLINE));
        Ok(())
    }

    #[test]
    fn corrupt_batches_are_refused() {
        assert!(WriteBatch::decode(&[5]).is_err());
        assert!(WriteBatch::decode(&[1, 1, b'S', 7]).is_err());
        assert!(WriteBatch::decode(&[1, 0, 0]).is_err());
    }
}
