//! The engine: a versioned store of three namespaces over the WAL,
//! memtables, segment files and the manifest.
//!
//! A commit appends its batch to the WAL (buffered) and to the memtable,
//! and is visible to readers at once; [`Engine::sync`] writes and syncs the
//! WAL group, and then every version committed so far is durable. When the
//! memtable grows past its bound it is frozen (the WAL is synced and a new
//! WAL file started) and flushed to a segment by a background thread (or
//! inline when `background` is off). Segments cover disjoint version
//! ranges, oldest first; compaction merges adjacent ones and drops what the
//! retention floor makes unreachable. A read looks at the memtable, the
//! frozen memtables and the segments, newest first, and stops at the first
//! entry at or below its version.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
use verity_codec::block::Compression;

use crate::cache::BlockCache;
use crate::error::{EngineError, Result};
use crate::io::IoBackend;
use crate::manifest::{self, Manifest};
use crate::memtable::{store_key, Memtable, Record, StoreKey, Value, WriteBatch};
use crate::segment::filter::key_hash;
use crate::segment::reader::OwnedEntry;
use crate::segment::{Segment, SegmentIter, SegmentMeta, SegmentWriter};
use crate::wal::{self, Wal};
use crate::Namespace;

/// How the engine runs. [`Options::default`] suits an NVMe host.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// The memtable is frozen and flushed when it holds this many bytes.
    pub memtable_bytes: usize,
    /// Commits wait while more than this many frozen memtables are not yet
    /// flushed.
    pub max_frozen: usize,
    /// Target size of a data block (4 to 16 KiB).
    pub block_size: usize,
    /// Compression of data blocks.
    pub compression: Compression,
    /// Bytes of decoded blocks to cache.
    pub cache_bytes: usize,
    /// Flush and compact on background threads (off: inline, in the commit
    /// that fills the memtable; deterministic, for tests).
    pub background: bool,
    /// How many adjacent segments of one size tier are merged at once.
    pub compaction_fanin: usize,
    /// Upper bound of the compaction write rate, in bytes per second.
    pub compaction_rate: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            memtable_bytes: 64 << 20,
            max_frozen: 4,
            block_size: 4096,
            compression: Compression::None,
            cache_bytes: 256 << 20,
            background: true,
            compaction_fanin: 4,
            compaction_rate: None,
        }
    }
}

impl Options {
    /// Small bounds and inline work: many flushes and compactions from a
    /// little data, the same way on every run.
    pub fn for_tests() -> Options {
        Options {
            memtable_bytes: 16 << 10,
            max_frozen: 2,
            block_size: 4096,
            compression: Compression::None,
            cache_bytes: 1 << 20,
            background: false,
            compaction_fanin: 3,
            compaction_rate: None,
        }
    }

    fn check(&self) -> Result<()> {
        if !(4096..=16384).contains(&self.block_size) {
            return Err(EngineError::InvalidArgument(
                "block_size must be 4 to 16 KiB",
            ));
        }
        if self.compaction_fanin < 2 {
            return Err(EngineError::InvalidArgument(
                "compaction_fanin must be 2 or more",
            ));
        }
        if self.max_frozen == 0 {
            return Err(EngineError::InvalidArgument("max_frozen must be 1 or more"));
        }
        if self.compaction_rate == Some(0) {
            return Err(EngineError::InvalidArgument(
                "compaction_rate must be positive",
            ));
        }
        Ok(())
    }
}

/// What a read found: the record and the version that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The version of the entry.
    pub version: u64,
    /// What that version wrote.
    pub record: Record,
}

/// Figures of a running engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineStats {
    /// The I/O backend in use (`"io_uring"`, `"std"`, `"sim"`).
    pub backend: &'static str,
    /// The newest committed version.
    pub latest: Option<u64>,
    /// The newest durable version.
    pub durable: Option<u64>,
    /// The oldest readable version.
    pub floor: Option<u64>,
    /// Bytes in the memtable.
    pub memtable_bytes: usize,
    /// Frozen memtables waiting for their flush.
    pub frozen: usize,
    /// Live segment files.
    pub segments: usize,
    /// Bytes of live segment files.
    pub segment_bytes: u64,
    /// Bytes of the current WAL file (the versions not yet flushed are in
    /// it and in older WAL files still live).
    pub wal_file_bytes: u64,
    /// Bytes the engine would rewrite to catch up: frozen memtables
    /// waiting for their flush plus the segments the compaction policy
    /// would merge now.
    pub compaction_debt_bytes: u64,
    /// Bytes in the block cache.
    pub cache_bytes: usize,
    /// Block cache hits.
    pub cache_hits: u64,
    /// Block cache misses (each one a disk read).
    pub cache_misses: u64,
    /// Bytes of keys and values committed.
    pub user_bytes: u64,
    /// Bytes written to the WAL.
    pub wal_bytes: u64,
    /// Bytes written by flushes.
    pub flush_bytes: u64,
    /// Bytes written by compactions.
    pub compaction_bytes: u64,
    /// Flushes done.
    pub flushes: u64,
    /// Compactions done.
    pub compactions: u64,
    /// Obsolete files whose removal failed (harmless: the next open
    /// removes them).
    pub cleanup_failures: u64,
    /// True after a failed write or sync.
    pub poisoned: bool,
}

impl EngineStats {
    /// Bytes written to disk per byte of user data.
    pub fn write_amplification(&self) -> f64 {
        let written = self.wal_bytes + self.flush_bytes + self.compaction_bytes;
        written as f64 / self.user_bytes.max(1) as f64
    }
}

/// A memtable that no longer takes writes, waiting for its flush.
struct Frozen {
    mem: Memtable,
    /// The WAL file started when it was frozen: every older WAL file holds
    /// only versions of this memtable or older ones.
    next_wal: u64,
}

/// What a reader searches below the memtable.
#[derive(Default)]
struct View {
    /// Newest first.
    frozen: Vec<Arc<Frozen>>,
    /// Oldest versions first.
    segments: Vec<Arc<Segment>>,
}

struct Writer {
    wal: Wal,
}

#[derive(Default)]
struct Work {
    shutdown: bool,
    /// Raised by every event a worker may act on.
    generation: u64,
}

#[derive(Default)]
struct Counters {
    user: AtomicU64,
    wal: AtomicU64,
    flush: AtomicU64,
    compaction: AtomicU64,
    flushes: AtomicU64,
    compactions: AtomicU64,
    cleanup_failures: AtomicU64,
}

struct Shared {
    /// Held while the engine is open: one process per store.
    lock: Mutex<Option<Box<dyn std::any::Any + Send + Sync>>>,
    /// Set by `shutdown`.
    closed: AtomicBool,
    io: Arc<dyn IoBackend>,
    dir: PathBuf,
    opts: Options,
    cache: BlockCache,
    writer: Mutex<Writer>,
    mem: RwLock<Memtable>,
    view: RwLock<Arc<View>>,
    manifest: Mutex<Manifest>,
    flush_lock: Mutex<()>,
    compact_lock: Mutex<()>,
    next_file: AtomicU64,
    /// Each of these is the version plus one; 0 means none.
    latest: AtomicU64,
    durable: AtomicU64,
    floor: AtomicU64,
    poisoned: AtomicBool,
    work: Mutex<Work>,
    work_cv: Condvar,
    /// Signalled when a frozen memtable is flushed.
    flushed_cv: Condvar,
    counters: Counters,
}

fn load(a: &AtomicU64) -> Option<u64> {
    a.load(Ordering::Acquire).checked_sub(1)
}

fn store(a: &AtomicU64, v: Option<u64>) {
    a.store(v.map_or(0, |v| v + 1), Ordering::Release);
}

/// The file name of WAL file `n`.
pub fn wal_name(n: u64) -> String {
    format!("{n:06}.wal")
}

/// The file name of segment file `n`.
pub fn segment_name(n: u64) -> String {
    format!("{n:06}.seg")
}

/// The number and kind of an engine file name (`"wal"` or `"seg"`).
fn parse_name(name: &str) -> Option<(u64, &'static str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() < 6 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = stem.parse().ok()?;
    match ext {
        "wal" => Some((n, "wal")),
        "seg" => Some((n, "seg")),
        _ => None,
    }
}

/// A versioned store of pages, state and metadata.
pub struct Engine {
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dir", &self.shared.dir)
            .field("latest", &load(&self.shared.latest))
            .finish()
    }
}

impl Engine {
    /// Opens the store in `dir`, creating it when the directory holds no
    /// store. Recovery reads the manifest, removes files it does not name,
    /// and replays the WAL after the last flushed version up to the first
    /// torn or damaged record.
    pub fn open(io: Arc<dyn IoBackend>, dir: &Path, opts: Options) -> Result<Engine> {
        opts.check()?;
        io.create_dir_all(dir)
            .map_err(|e| EngineError::io("create", dir, e))?;
        let lock = io.lock_dir(dir).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                EngineError::Locked(dir.to_path_buf())
            } else {
                EngineError::io("lock", dir, e)
            }
        })?;
        let names = io.list(dir).map_err(|e| EngineError::io("list", dir, e))?;
        let tmp = dir.join(manifest::TMP_FILE);
        if names.iter().any(|n| n == manifest::TMP_FILE) {
            io.remove(&tmp)
                .map_err(|e| EngineError::io("remove", &tmp, e))?;
        }
        let files: Vec<(u64, &str, &String)> = names
            .iter()
            .filter_map(|n| parse_name(n).map(|(num, kind)| (num, kind, n)))
            .collect();
        // The manifest read below may be a rename that is not durable yet
        // (a kill between the rename and the directory sync): make it
        // durable before removing the files it no longer names.
        io.sync_dir(dir)
            .map_err(|e| EngineError::io("sync", dir, e))?;
        let mut m = match Manifest::load(&*io, dir)? {
            Some(m) => m,
            None if files.is_empty() => {
                let m = Manifest {
                    next_file: 1,
                    min_wal: 1,
                    ..Manifest::default()
                };
                m.store(&*io, dir)?;
                m
            }
            None => {
                return Err(EngineError::corruption(
                    dir.join(manifest::FILE),
                    0,
                    "the manifest is missing but store files are present",
                ))
            }
        };
        let max_seen = files.iter().map(|f| f.0 + 1).max().unwrap_or(0);
        let next_file = m.next_file.max(max_seen);
        // Files no manifest names: a flush or compaction that did not
        // finish, or WAL files whose versions are all flushed.
        let live: std::collections::HashSet<u64> = m.segments.iter().map(|s| s.number).collect();
        let mut wals = Vec::new();
        for &(num, kind, name) in &files {
            let stale = match kind {
                "seg" => !live.contains(&num),
                _ => num < m.min_wal,
            };
            if stale {
                let path = dir.join(name);
                io.remove(&path)
                    .map_err(|e| EngineError::io("remove", &path, e))?;
            } else if kind == "wal" {
                wals.push(num);
            }
        }
        // Replay in file-number order (names sort as strings: 1000000
        // before 999999).
        wals.sort_unstable();
        let mut segments = Vec::with_capacity(m.segments.len());
        for meta in &m.segments {
            let path = dir.join(segment_name(meta.number));
            if !io
                .exists(&path)
                .map_err(|e| EngineError::io("stat", &path, e))?
            {
                return Err(EngineError::corruption(
                    &path,
                    0,
                    "a live segment file is missing",
                ));
            }
            segments.push(Arc::new(Segment::open(&*io, &path, *meta)?));
        }
        // Replay the WAL files in order; only the last may have a torn tail.
        let mut mem = Memtable::new();
        let mut last = m.last_flushed;
        let mut writer_wal = None;
        for (i, &num) in wals.iter().enumerate() {
            let path = dir.join(wal_name(num));
            let recovery = if i + 1 < wals.len() {
                // Only the last file can have a torn tail: the others were
                // synced whole before the next one was started.
                let recovery = wal::inspect(&*io, &path)?;
                if let Some(cut) = &recovery.cut {
                    return Err(EngineError::corruption(
                        &path,
                        cut.offset,
                        format!(
                            "damaged record in a WAL file that is not the last: {}",
                            cut.reason
                        ),
                    ));
                }
                recovery
            } else {
                let (w, recovery) = Wal::open(&*io, &path)?;
                writer_wal = Some(w);
                recovery
            };
            for rec in recovery.records {
                if m.last_flushed.is_some_and(|f| rec.version <= f) {
                    continue;
                }
                if rec.version == u64::MAX {
                    return Err(EngineError::corruption(
                        &path,
                        0,
                        "WAL record of the reserved version u64::MAX",
                    ));
                }
                if last.is_some_and(|l| rec.version <= l) {
                    return Err(EngineError::corruption(
                        &path,
                        0,
                        format!("WAL record of version {} is out of order", rec.version),
                    ));
                }
                let mut batch = WriteBatch::decode(&rec.body).map_err(|d| {
                    EngineError::corruption(
                        &path,
                        0,
                        format!("WAL record of version {}: {d}", rec.version),
                    )
                })?;
                batch.normalise();
                mem.apply(rec.version, &batch);
                last = Some(rec.version);
            }
        }
        // A prune syncs the WAL before it raises the floor, so a log that
        // ends below the floor has lost records it had synced: damage, not
        // a crash.
        if let Some(floor) = m.floor {
            if last.is_none_or(|l| l < floor) {
                let path = wals
                    .last()
                    .map_or_else(|| dir.join("MANIFEST"), |&n| dir.join(wal_name(n)));
                return Err(EngineError::corruption(
                    &path,
                    0,
                    format!(
                        "the log ends at version {} but the retention floor is {floor}: synced records are missing",
                        last.map_or_else(|| "none".to_owned(), |l| l.to_string())
                    ),
                ));
            }
        }
        let mut next = next_file;
        let wal = match writer_wal {
            Some(mut w) => {
                // Records replayed from the page cache after a kill may
                // never have been synced: make them durable before calling
                // them so (a prune may rely on it).
                w.sync()?;
                w
            }
            None => {
                let n = next;
                next += 1;
                Wal::create(&*io, &dir.join(wal_name(n)))?
            }
        };
        m.next_file = next;
        let floor = m.floor;
        let shared = Arc::new(Shared {
            lock: Mutex::new(Some(lock)),
            closed: AtomicBool::new(false),
            cache: BlockCache::new(opts.cache_bytes),
            io,
            dir: dir.to_path_buf(),
            writer: Mutex::new(Writer { wal }),
            mem: RwLock::new(mem),
            view: RwLock::new(Arc::new(View {
                frozen: Vec::new(),
                segments,
            })),
            manifest: Mutex::new(m),
            flush_lock: Mutex::new(()),
            compact_lock: Mutex::new(()),
            next_file: AtomicU64::new(next),
            latest: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            floor: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            work: Mutex::new(Work::default()),
            work_cv: Condvar::new(),
            flushed_cv: Condvar::new(),
            counters: Counters::default(),
            opts,
        });
        store(&shared.latest, last);
        store(&shared.durable, last);
        store(&shared.floor, floor);
        let mut workers = Vec::new();
        if shared.opts.background {
            for job in [Job::Flush, Job::Compact] {
                let s = shared.clone();
                let handle = std::thread::Builder::new()
                    .name(format!("verity-{job:?}").to_lowercase())
                    .spawn(move || s.worker(job))
                    .map_err(|e| EngineError::io("spawn", "worker thread", e))?;
                workers.push(handle);
            }
        }
        Ok(Engine {
            shared,
            workers: Mutex::new(workers),
        })
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The newest committed version.
    pub fn latest(&self) -> Option<u64> {
        load(&self.shared.latest)
    }

    /// The newest durable version.
    pub fn durable(&self) -> Option<u64> {
        load(&self.shared.durable)
    }

    /// The oldest readable version (the retention floor), if one was set.
    pub fn floor(&self) -> Option<u64> {
        load(&self.shared.floor)
    }

    /// Commits `batch` as `version`, newer than every committed version.
    /// The version is readable when this returns and durable after the
    /// next [`sync`](Self::sync). When the commit fills the memtable, it
    /// also syncs the WAL and starts a new one; if that I/O fails, the
    /// error is returned, the engine is poisoned, and the version may
    /// still be found after a reopen (its fate is unknown, as with any
    /// write whose sync failed).
    pub fn commit(&self, version: u64, mut batch: WriteBatch) -> Result<()> {
        let s = &*self.shared;
        s.check_poisoned()?;
        if version == u64::MAX {
            return Err(EngineError::InvalidArgument("version u64::MAX is reserved"));
        }
        let mut writer = s.writer.lock();
        if load(&s.latest).is_some_and(|l| version <= l) {
            return Err(EngineError::InvalidArgument("versions must increase"));
        }
        batch.normalise();
        let body_len = writer
            .wal
            .append_with(version, |out| batch.encode_into(out))?;
        s.counters
            .user
            .fetch_add(batch.size_bytes() as u64, Ordering::Relaxed);
        s.counters
            .wal
            .fetch_add(body_len as u64 + 16, Ordering::Relaxed);
        let full = {
            let mut mem = s.mem.write();
            mem.apply(version, &batch);
            store(&s.latest, Some(version));
            mem.size_bytes() >= s.opts.memtable_bytes
        };
        if full {
            s.freeze(&mut writer)?;
            drop(writer);
            s.after_freeze()?;
        }
        Ok(())
    }

    /// Writes and syncs the WAL group: every version committed so far is
    /// durable when this returns `Ok`. Returns the newest durable version.
    /// A failure poisons the engine.
    pub fn sync(&self) -> Result<Option<u64>> {
        let s = &*self.shared;
        s.check_poisoned()?;
        let mut writer = s.writer.lock();
        let latest = load(&s.latest);
        if latest == load(&s.durable) {
            return Ok(latest);
        }
        s.poison_on_err(writer.wal.sync())?;
        store(&s.durable, latest);
        Ok(latest)
    }

    /// Commits and syncs: `version` is durable when this returns `Ok`.
    pub fn commit_durable(&self, version: u64, batch: WriteBatch) -> Result<()> {
        self.commit(version, batch)?;
        self.sync().map(|_| ())
    }

    /// The value of `key` in `ns` as of `version`, `None` when it is absent
    /// or deleted.
    pub fn get(&self, ns: Namespace, key: &[u8], version: u64) -> Result<Value> {
        Ok(self
            .get_entry(ns, key, version)?
            .and_then(|f| f.record.value()))
    }

    /// The records of `key` in `ns` at or below `version`, newest first,
    /// back to and including the newest whole one (a put or a deletion):
    /// what reading a delta-encoded key as of `version` needs. Empty when
    /// the key was never written; ends with a delta only if the writer
    /// wrote a delta with no whole record before it.
    pub fn chain(&self, ns: Namespace, key: &[u8], version: u64) -> Result<Vec<Found>> {
        self.chain_unless(ns, key, version, |_| false)
    }

    /// [`Engine::chain`], or only its newest record when `held` returns
    /// true for that record's version: for a caller that may hold what
    /// the chain would give (a page decoded from it, filed by the version
    /// of its newest record), which then reads one record, not the whole
    /// chain back to a whole one. `held` may run while the engine holds a
    /// lock of its memtables: it must not call the engine.
    pub fn chain_unless(
        &self,
        ns: Namespace,
        key: &[u8],
        version: u64,
        held: impl FnMut(u64) -> bool,
    ) -> Result<Vec<Found>> {
        let s = &*self.shared;
        s.check_readable(version)?;
        let out = s.chain(&store_key(ns, key), version, held)?;
        s.recheck_readable(version)?;
        Ok(out)
    }

    /// The newest entry of `key` in `ns` at or below `version` (a value or
    /// a deletion), with the version that wrote it.
    pub fn get_entry(&self, ns: Namespace, key: &[u8], version: u64) -> Result<Option<Found>> {
        let s = &*self.shared;
        s.check_readable(version)?;
        let found = s.lookup(&store_key(ns, key), version)?;
        s.recheck_readable(version)?;
        Ok(found)
    }

    /// The values of many keys of `ns` as of `version`. The blocks each
    /// segment must supply are read in one batch (one submission on
    /// io_uring).
    pub fn get_many(&self, ns: Namespace, keys: &[&[u8]], version: u64) -> Result<Vec<Value>> {
        let s = &*self.shared;
        s.check_readable(version)?;
        let mut out: Vec<Value> = vec![None; keys.len()];
        let store_keys: Vec<StoreKey> = keys.iter().map(|k| store_key(ns, k)).collect();
        let mut pending: Vec<usize> = Vec::new();
        let view = {
            let mem = s.mem.read();
            for (i, key) in store_keys.iter().enumerate() {
                match mem.get(key, version) {
                    Some((_, record)) => out[i] = record.value(),
                    None => pending.push(i),
                }
            }
            s.view.read().clone()
        };
        for f in &view.frozen {
            pending.retain(|&i| match f.mem.get(&store_keys[i], version) {
                Some((_, record)) => {
                    out[i] = record.value();
                    false
                }
                None => true,
            });
        }
        let hashes: Vec<u64> = store_keys.iter().map(|k| key_hash(k)).collect();
        let mut done = vec![false; keys.len()];
        for seg in view.segments.iter().rev() {
            if pending.is_empty() {
                break;
            }
            if seg.meta().min_version > version {
                continue;
            }
            let located: Vec<(usize, usize)> = pending
                .iter()
                .filter_map(|&i| {
                    seg.locate(&store_keys[i], version, hashes[i])
                        .map(|b| (i, b))
                })
                .collect();
            let mut blocks: Vec<usize> = located.iter().map(|&(_, b)| b).collect();
            blocks.sort_unstable();
            blocks.dedup();
            let read = seg.read_blocks(&blocks, &s.cache)?;
            for &(i, b) in &located {
                let k = blocks.binary_search(&b).unwrap_or(0);
                if let Some((_, record)) = seg.find_in(&read[k], b, &store_keys[i], version)? {
                    out[i] = record.value();
                    done[i] = true;
                }
            }
            pending.retain(|&i| !done[i]);
        }
        s.recheck_readable(version)?;
        Ok(out)
    }

    /// Raises the retention floor: versions below `floor` are no longer
    /// readable, and compaction drops what only they could see. Syncs the
    /// WAL first (the floor may not pass the newest durable version); the
    /// new floor is durable when this returns.
    pub fn prune(&self, floor: u64) -> Result<()> {
        let s = &*self.shared;
        // The floor must never pass what a crash keeps: sync first.
        self.sync()?;
        if load(&s.durable).is_none_or(|l| floor > l) {
            return Err(EngineError::InvalidArgument(
                "the floor may not pass the newest version",
            ));
        }
        let mut m = s.manifest.lock();
        if m.floor.is_some_and(|f| floor <= f) {
            return Ok(());
        }
        let mut next = m.clone();
        next.floor = Some(floor);
        s.poison_on_err(next.store(&*s.io, &s.dir))?;
        *m = next;
        store(&s.floor, Some(floor));
        drop(m);
        s.notify();
        if !s.opts.background {
            s.compact_some()?;
        }
        Ok(())
    }

    /// Freezes the memtable and writes every frozen memtable to segments;
    /// returns when they are in the manifest.
    pub fn flush(&self) -> Result<()> {
        let s = &*self.shared;
        s.check_poisoned()?;
        {
            let mut writer = s.writer.lock();
            if s.mem.read().max_version().is_some() {
                s.freeze(&mut writer)?;
            }
        }
        while s.flush_one()? {}
        s.notify();
        Ok(())
    }

    /// Merges segments until the compaction policy is content; with
    /// `full`, merges every segment into one.
    pub fn compact(&self, full: bool) -> Result<()> {
        let s = &*self.shared;
        s.check_poisoned()?;
        if full {
            let _guard = s.compact_lock.lock();
            let n = s.view.read().segments.len();
            if n > 1 || (n == 1 && s.floor_pending()) {
                s.compact_range(0..n)?;
            }
            Ok(())
        } else {
            s.compact_some()
        }
    }

    /// Figures of the engine now.
    pub fn stats(&self) -> EngineStats {
        let s = &*self.shared;
        let view = s.view.read().clone();
        let (cache_hits, cache_misses) = s.cache.hits_and_misses();
        // One lock at a time: a guard kept alive across the struct below
        // would take the writer lock inside the memtable lock, the reverse
        // of a commit's order.
        let memtable_bytes = s.mem.read().size_bytes();
        let wal_file_bytes = s.writer.lock().wal.len();
        let c = &s.counters;
        EngineStats {
            backend: s.io.name(),
            latest: load(&s.latest),
            durable: load(&s.durable),
            floor: load(&s.floor),
            memtable_bytes,
            frozen: view.frozen.len(),
            segments: view.segments.len(),
            segment_bytes: view.segments.iter().map(|s| s.meta().size).sum(),
            wal_file_bytes,
            compaction_debt_bytes: {
                let metas: Vec<SegmentMeta> = view.segments.iter().map(|s| *s.meta()).collect();
                let merge = pick(&metas, load(&s.floor), s.opts.compaction_fanin)
                    .map_or(0, |r| metas[r].iter().map(|m| m.size).sum::<u64>());
                merge
                    + view
                        .frozen
                        .iter()
                        .map(|f| f.mem.size_bytes() as u64)
                        .sum::<u64>()
            },
            cache_bytes: s.cache.size_bytes(),
            cache_hits,
            cache_misses,
            user_bytes: c.user.load(Ordering::Relaxed),
            wal_bytes: c.wal.load(Ordering::Relaxed),
            flush_bytes: c.flush.load(Ordering::Relaxed),
            compaction_bytes: c.compaction.load(Ordering::Relaxed),
            flushes: c.flushes.load(Ordering::Relaxed),
            compactions: c.compactions.load(Ordering::Relaxed),
            cleanup_failures: c.cleanup_failures.load(Ordering::Relaxed),
            poisoned: s.poisoned.load(Ordering::Acquire),
        }
    }

    /// The live segments' metadata, oldest versions first.
    pub fn segments(&self) -> Vec<SegmentMeta> {
        self.shared
            .view
            .read()
            .segments
            .iter()
            .map(|s| *s.meta())
            .collect()
    }

    /// Scans every file of the store (holding flushes and compactions
    /// back meanwhile) and reports what is damaged.
    pub fn check(&self) -> Result<crate::check::CheckReport> {
        let s = &*self.shared;
        let _f = s.flush_lock.lock();
        let _c = s.compact_lock.lock();
        crate::check::check_dir(&*s.io, &s.dir)
    }

    /// Syncs the WAL and stops the background threads.
    pub fn close(self) -> Result<()> {
        self.shutdown()
    }

    /// Syncs the WAL, stops the background threads and releases the
    /// store's lock; every later call returns [`EngineError::Closed`].
    /// For owners that share the engine (`close` takes it by value).
    pub fn shutdown(&self) -> Result<()> {
        let s = &*self.shared;
        let result = if s.poisoned.load(Ordering::Acquire) || s.closed.load(Ordering::Acquire) {
            Ok(())
        } else {
            self.sync().and_then(|_| {
                // A clean close marks the whole WAL synced, so any later
                // damage to it is reported rather than cut as a torn tail.
                let mut writer = s.writer.lock();
                s.poison_on_err(writer.wal.seal())
            })
        };
        s.closed.store(true, Ordering::Release);
        self.stop();
        // Another opener may take the store now.
        drop(s.lock.lock().take());
        result
    }

    fn stop(&self) {
        self.shared.work.lock().shutdown = true;
        self.shared.work_cv.notify_all();
        self.shared.flushed_cv.notify_all();
        let workers = std::mem::take(&mut *self.workers.lock());
        for w in workers {
            // A worker that panicked has nothing more to say here; its
            // panic already poisoned nothing we rely on.
            let _ = w.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug, Clone, Copy)]
enum Job {
    Flush,
    Compact,
}

impl Shared {
    fn check_poisoned(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(EngineError::Closed)
        } else if self.poisoned.load(Ordering::Acquire) {
            Err(EngineError::Poisoned)
        } else {
            Ok(())
        }
    }

    fn poison_on_err<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.poisoned.store(true, Ordering::Release);
            self.flushed_cv.notify_all();
        }
        r
    }

    /// The newest entry of a store key at or below `version`.
    fn lookup(&self, key: &[u8], version: u64) -> Result<Option<Found>> {
        let mut found = None;
        self.walk(key, version, |version, record| {
            found = Some(Found { version, record });
            None
        })?;
        Ok(found)
    }

    /// The records of store key `key` at or below `version`, newest first,
    /// back to and including the newest whole one (see [`Engine::chain`]),
    /// in one [`Shared::walk`]: a lookup per record (with a lower version
    /// each time) searched every memtable and segment filter again for
    /// each, and the holding segment's index and block.
    ///
    /// It stops after the newest record when `held` returns true for its
    /// version (see [`Engine::chain_unless`]).
    fn chain(
        &self,
        key: &[u8],
        version: u64,
        mut held: impl FnMut(u64) -> bool,
    ) -> Result<Vec<Found>> {
        let mut out = Vec::new();
        self.walk(key, version, |version, record| {
            let whole = record.is_whole();
            let newest = out.is_empty();
            out.push(Found { version, record });
            if newest && held(version) {
                return None;
            }
            version.checked_sub(1).filter(|_| !whole)
        })?;
        Ok(out)
    }

    /// Hands `take` the entries of store key `key`, newest first from the
    /// newest at or below `version`, until it returns `None`; otherwise it
    /// returns the version to go on at or below. The sources are read once
    /// each, newest first (the memtable, the frozen memtables, the
    /// segments), taking from each the key's entries at or below that
    /// version: every entry of the key in turn, because the sources cover
    /// disjoint version ranges, a newer source's above an older one's.
    fn walk(
        &self,
        key: &[u8],
        version: u64,
        mut take: impl FnMut(u64, Record) -> Option<u64>,
    ) -> Result<()> {
        /// Takes a memtable's entries of the key (`versions`, oldest
        /// first) at or below `at`, newest first; false once `take` stops.
        fn from_memtable(
            versions: &[(u64, Record)],
            at: &mut u64,
            take: &mut impl FnMut(u64, Record) -> Option<u64>,
        ) -> bool {
            let n = versions.partition_point(|(v, _)| *v <= *at);
            for (v, record) in versions[..n].iter().rev() {
                match take(*v, record.clone()) {
                    Some(next) => *at = next,
                    None => return false,
                }
            }
            true
        }
        let mut at = version;
        let view = {
            let mem = self.mem.read();
            if !from_memtable(mem.versions(key), &mut at, &mut take) {
                return Ok(());
            }
            self.view.read().clone()
        };
        for f in &view.frozen {
            if !from_memtable(f.mem.versions(key), &mut at, &mut take) {
                return Ok(());
            }
        }
        let hash = key_hash(key);
        for seg in view.segments.iter().rev() {
            if seg.meta().min_version > at {
                continue;
            }
            let stopped = seg.walk_key(key, at, hash, &self.cache, |v, record| {
                let next = take(v, record);
                if let Some(next) = next {
                    at = next;
                }
                next
            })?;
            if stopped {
                break;
            }
        }
        Ok(())
    }

    /// After a read: when a prune passed `version` meanwhile, a compaction
    /// may have dropped what the read needed, so its answer is not trusted.
    fn recheck_readable(&self, version: u64) -> Result<()> {
        let floor = load(&self.floor);
        if floor.is_some_and(|f| version < f) {
            return Err(EngineError::NoSuchVersion {
                version,
                oldest: floor,
                latest: load(&self.latest),
            });
        }
        Ok(())
    }

    fn check_readable(&self, version: u64) -> Result<()> {
        self.check_poisoned()?;
        let latest = load(&self.latest);
        let floor = load(&self.floor);
        if latest.is_none_or(|l| version > l) || floor.is_some_and(|f| version < f) {
            return Err(EngineError::NoSuchVersion {
                version,
                oldest: floor.or(latest.map(|_| 0)),
                latest,
            });
        }
        Ok(())
    }

    fn notify(&self) {
        self.work.lock().generation += 1;
        self.work_cv.notify_all();
    }

    /// Moves the memtable to the frozen list and starts a new WAL file.
    fn freeze(&self, writer: &mut Writer) -> Result<()> {
        self.poison_on_err(writer.wal.sync())?;
        store(&self.durable, load(&self.latest));
        let number = self.next_file.fetch_add(1, Ordering::AcqRel);
        let wal = self.poison_on_err(Wal::create(&*self.io, &self.dir.join(wal_name(number))))?;
        writer.wal = wal;
        let mut mem = self.mem.write();
        let frozen = Arc::new(Frozen {
            mem: std::mem::take(&mut *mem),
            next_wal: number,
        });
        let mut view = self.view.write();
        let mut next = View {
            frozen: Vec::with_capacity(view.frozen.len() + 1),
            segments: view.segments.clone(),
        };
        next.frozen.push(frozen);
        next.frozen.extend(view.frozen.iter().cloned());
        *view = Arc::new(next);
        Ok(())
    }

    /// After a freeze: flush inline, or wake the flusher and wait while too
    /// many frozen memtables are pending.
    fn after_freeze(&self) -> Result<()> {
        if !self.opts.background {
            while self.flush_one()? {}
            return self.compact_some();
        }
        self.notify();
        let mut work = self.work.lock();
        while self.view.read().frozen.len() > self.opts.max_frozen && !work.shutdown {
            self.check_poisoned()?;
            self.flushed_cv
                .wait_for(&mut work, Duration::from_millis(100));
        }
        self.check_poisoned()
    }

    /// Writes the oldest frozen memtable to a segment; false when there was
    /// none.
    fn flush_one(&self) -> Result<bool> {
        let _guard = self.flush_lock.lock();
        let Some(frozen) = self.view.read().frozen.last().cloned() else {
            return Ok(false);
        };
        let r = self.write_flush(&frozen);
        self.poison_on_err(r)?;
        // Taking the lock orders this wake-up after a waiter's check.
        let _work = self.work.lock();
        self.flushed_cv.notify_all();
        Ok(true)
    }

    /// A writer for a new segment file with the next file number.
    fn new_segment(&self) -> Result<(PathBuf, SegmentWriter)> {
        let number = self.next_file.fetch_add(1, Ordering::AcqRel);
        let path = self.dir.join(segment_name(number));
        let w = SegmentWriter::create(
            &*self.io,
            &path,
            number,
            self.opts.block_size,
            self.opts.compression,
        )?;
        Ok((path, w))
    }

    fn write_flush(&self, frozen: &Arc<Frozen>) -> Result<()> {
        let segment = if !frozen.mem.is_empty() {
            let (path, mut w) = self.new_segment()?;
            for (key, version, record) in frozen.mem.iter() {
                w.add(key, version, record.as_ref())?;
            }
            let meta = w.finish()?;
            self.counters.flush.fetch_add(meta.size, Ordering::Relaxed);
            Some(Arc::new(Segment::open(&*self.io, &path, meta)?))
        } else {
            None
        };
        let mut m = self.manifest.lock();
        let mut next = m.clone();
        if let Some(seg) = &segment {
            next.segments.push(*seg.meta());
        }
        next.last_flushed = frozen.mem.max_version().or(next.last_flushed);
        let old_min_wal = next.min_wal;
        next.min_wal = frozen.next_wal;
        next.next_file = self.next_file.load(Ordering::Acquire);
        next.store(&*self.io, &self.dir)?;
        *m = next;
        {
            let mut view = self.view.write();
            let mut segments = view.segments.clone();
            segments.extend(segment);
            let frozen_list = view
                .frozen
                .iter()
                .filter(|f| !Arc::ptr_eq(f, frozen))
                .cloned()
                .collect();
            *view = Arc::new(View {
                frozen: frozen_list,
                segments,
            });
        }
        drop(m);
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        // The WAL files before the new minimum hold only flushed versions.
        // A failed removal is harmless: the next open removes them.
        for n in old_min_wal..frozen.next_wal {
            self.remove_obsolete(&self.dir.join(wal_name(n)));
        }
        Ok(())
    }

    /// Removes a file no manifest names any more; a failure is counted,
    /// not returned (the next open removes the file).
    fn remove_obsolete(&self, path: &Path) {
        match self.io.remove(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => {
                self.counters
                    .cleanup_failures
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn floor_pending(&self) -> bool {
        load(&self.floor).is_some()
    }

    /// Runs the compaction policy until it picks nothing.
    fn compact_some(&self) -> Result<()> {
        loop {
            let _guard = self.compact_lock.lock();
            let segments = self.view.read().segments.clone();
            let metas: Vec<SegmentMeta> = segments.iter().map(|s| *s.meta()).collect();
            let Some(range) = pick(&metas, load(&self.floor), self.opts.compaction_fanin) else {
                return Ok(());
            };
            self.compact_range(range)?;
        }
    }

    /// Merges the segments at `range` of the current list into one.
    fn compact_range(&self, range: Range<usize>) -> Result<()> {
        let r = self.merge(range);
        self.poison_on_err(r)
    }

    fn merge(&self, range: Range<usize>) -> Result<()> {
        let inputs: Vec<Arc<Segment>> = self.view.read().segments[range.clone()].to_vec();
        let bottom = range.start == 0;
        let floor = load(&self.floor);
        let mut iters: Vec<SegmentIter> = inputs.iter().map(|s| s.iter()).collect();
        let mut heads: Vec<Option<OwnedEntry>> = Vec::with_capacity(iters.len());
        for it in &mut iters {
            heads.push(it.next_entry()?);
        }
        let (path, mut w) = self.new_segment()?;
        if let Some(rate) = self.opts.compaction_rate {
            w.set_pacer(pacer(rate));
        }
        let mut current: Option<Vec<u8>> = None;
        // Per key: whether an entry at or below the floor was met, and
        // whether the entries kept below the floor end in a whole record.
        let (mut below_floor, mut chain_whole) = (false, false);
        loop {
            // The smallest head in segment order; segments are version
            // disjoint, so equal keys never tie on version.
            let mut best: Option<usize> = None;
            for (i, h) in heads.iter().enumerate() {
                if let Some((k, v, _)) = h {
                    let better = match best.and_then(|b| heads[b].as_ref()) {
                        Some((bk, bv, _)) => {
                            crate::segment::block::cmp_entry(k, *v, bk, *bv).is_lt()
                        }
                        None => true,
                    };
                    if better {
                        best = Some(i);
                    }
                }
            }
            let Some(i) = best else { break };
            let Some((key, version, record)) = heads[i].take() else {
                break;
            };
            heads[i] = iters[i].next_entry()?;
            if current.as_deref() != Some(key.as_slice()) {
                current = Some(key.clone());
                (below_floor, chain_whole) = (false, false);
            }
            if floor.is_some_and(|f| version <= f) {
                // The newest entry at or below the floor is reachable, and
                // if it is a delta, so is every record back to a whole
                // one; nothing older is. A deletion there needs no record
                // at the bottom, where nothing older can reappear.
                if below_floor && chain_whole {
                    continue;
                }
                let newest = !below_floor;
                below_floor = true;
                chain_whole = record.is_whole();
                if newest && bottom && record == Record::Delete {
                    continue;
                }
            }
            w.add(&key, version, record.as_ref())?;
        }
        let output = if w.entries() > 0 {
            let meta = w.finish()?;
            self.counters
                .compaction
                .fetch_add(meta.size, Ordering::Relaxed);
            Some(Arc::new(Segment::open(&*self.io, &path, meta)?))
        } else {
            drop(w);
            self.io
                .remove(&path)
                .map_err(|e| EngineError::io("remove", &path, e))?;
            None
        };
        let numbers: Vec<u64> = inputs.iter().map(|s| s.meta().number).collect();
        let mut m = self.manifest.lock();
        let mut next = m.clone();
        let at = next
            .segments
            .iter()
            .position(|s| s.number == numbers[0])
            .ok_or(EngineError::InvalidArgument("compaction inputs vanished"))?;
        next.segments
            .splice(at..at + numbers.len(), output.iter().map(|s| *s.meta()));
        next.next_file = self.next_file.load(Ordering::Acquire);
        next.store(&*self.io, &self.dir)?;
        *m = next;
        {
            let mut view = self.view.write();
            let mut segments = view.segments.clone();
            segments.splice(at..at + numbers.len(), output);
            *view = Arc::new(View {
                frozen: view.frozen.clone(),
                segments,
            });
        }
        drop(m);
        self.counters.compactions.fetch_add(1, Ordering::Relaxed);
        for n in numbers {
            self.cache.forget_segment(n);
            // Readers holding the old view keep their open handles; a
            // failed removal is redone by the next open.
            self.remove_obsolete(&self.dir.join(segment_name(n)));
        }
        Ok(())
    }

    fn worker(&self, job: Job) {
        let mut seen = 0;
        loop {
            {
                let mut work = self.work.lock();
                while work.generation == seen && !work.shutdown {
                    self.work_cv.wait(&mut work);
                }
                if work.shutdown {
                    return;
                }
                seen = work.generation;
            }
            if self.poisoned.load(Ordering::Acquire) {
                continue;
            }
            // Errors poison the engine; the next call reports them.
            let _ = match job {
                Job::Flush => (|| {
                    let mut flushed = false;
                    while self.flush_one()? {
                        flushed = true;
                    }
                    // Wake the compactor, only for new work: a wake-up for
                    // nothing would wake this thread again, and again.
                    if flushed {
                        self.notify();
                    }
                    Ok::<(), EngineError>(())
                })(),
                Job::Compact => self.compact_some(),
            };
        }
    }
}

/// A pacer that sleeps so that writes average at most `rate` bytes a
/// second.
fn pacer(rate: u64) -> Box<dyn FnMut(usize) + Send> {
    let start = Instant::now();
    let mut total = 0u64;
    Box::new(move |bytes| {
        total += bytes as u64;
        let due = Duration::from_secs_f64(total as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    })
}

/// The size tier of a segment: segments within a factor of `fanin` of each
/// other share a tier.
fn tier(size: u64, fanin: usize) -> u32 {
    let mut t = 0;
    let mut bound = 1u64 << 20;
    while size > bound && t < 32 {
        bound = bound.saturating_mul(fanin as u64);
        t += 1;
    }
    t
}

/// The compaction policy. Returns the adjacent segments to merge:
/// 1. the newest run of `fanin` adjacent segments in one size tier;
/// 2. else, when segments after the oldest lie wholly below the retention
///    floor and hold at least a `fanin`-th of the oldest one's bytes, the
///    oldest through the last of them (so history below the floor is
///    dropped in proportion to what accumulates).
pub(crate) fn pick(segs: &[SegmentMeta], floor: Option<u64>, fanin: usize) -> Option<Range<usize>> {
    let tiers: Vec<u32> = segs.iter().map(|s| tier(s.size, fanin)).collect();
    let mut run_end = segs.len();
    for i in (0..segs.len()).rev() {
        if i + 1 < segs.len() && tiers[i] != tiers[i + 1] {
            run_end = i + 1;
        }
        if run_end - i >= fanin {
            return Some(i..i + fanin);
        }
    }
    let floor = floor?;
    let below = segs.iter().take_while(|s| s.max_version <= floor).count();
    if below >= 2 {
        let newer: u64 = segs[1..below].iter().map(|s| s.size).sum();
        if newer.saturating_mul(fanin as u64) >= segs[0].size {
            return Some(0..below);
        }
    }
    None
}

/// The files of a store directory, by kind, for `check`.
pub(crate) fn store_files(names: &[String]) -> BTreeMap<u64, (String, &'static str)> {
    names
        .iter()
        .filter_map(|n| parse_name(n).map(|(num, kind)| (num, (n.clone(), kind))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(number: u64, size: u64, v: Range<u64>) -> SegmentMeta {
        SegmentMeta {
            number,
            size,
            entries: 1,
            min_version: v.start,
            max_version: v.end - 1,
        }
    }

    #[test]
    fn policy_merges_a_full_tier_and_history_below_the_floor() {
        let small = |n: u64| meta(n, 1000, n * 10..n * 10 + 10);
        assert_eq!(pick(&[small(1), small(2)], None, 3), None);
        assert_eq!(pick(&[small(1), small(2), small(3)], None, 3), Some(0..3));
        let big = meta(0, 50 << 20, 0..10);
        let segs = [big, small(1), small(2), small(3)];
        assert_eq!(pick(&segs, None, 3), Some(1..4));
        // Below the floor, little new history: not yet worth a rewrite.
        assert_eq!(pick(&segs[..3], Some(25), 3), None);
        let segs = [meta(0, 3000, 0..10), small(1), small(2)];
        assert_eq!(pick(&segs, Some(25), 4), Some(0..2));
    }

    #[test]
    fn file_names_parse_back() {
        assert_eq!(parse_name(&wal_name(7)), Some((7, "wal")));
        assert_eq!(parse_name(&segment_name(1234567)), Some((1234567, "seg")));
        assert_eq!(parse_name("MANIFEST"), None);
        assert_eq!(parse_name("12.seg"), None);
        assert_eq!(parse_name("000001.txt"), None);
    }
}
