//! The `Db`: the trie and the engine joined, with snapshots for parallel
//! executors and a commit pipeline.
//!
//! `commit` validates a batch, gives it the next version, makes it visible
//! to snapshots (an in-memory overlay of staged versions) and hands it to
//! the pipeline thread, which merkleizes it against the previous version,
//! writes the page records, the state entries and the root to the engine as
//! one WAL record, and syncs. The caller meanwhile prepares and stages the
//! next version; at most `max_in_flight` versions wait (then `commit`
//! blocks). A snapshot of version `v` takes the staged versions at or
//! below `v` that the engine does not hold yet and the engine version
//! below them, so it sees exactly `v` while later versions commit.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};
use verity_codec::block::Compression;
use verity_codec::reader::{put_bytes, Reader};
use verity_engine::io::{best_backend, IoBackend, StdIo};
use verity_engine::{Engine, EngineStats, Namespace, Record, SharedBytes};
use verity_merkle::hash::{key_hash, value_hash};
use verity_merkle::{
    DeltaPolicy, Hash, KeyHash, Proof, RangeProof, Trie, UpdateOutput, ValueHash, EMPTY,
};

use crate::error::{DbError, Result};
use crate::store::{put_page, EngineSource};

/// The longest key a batch takes, in bytes.
pub const MAX_KEY_LEN: usize = 64 << 10;
/// The longest value a batch takes, in bytes.
pub const MAX_VALUE_LEN: usize = 16 << 20;
/// Most bytes of keys and values in one batch (the version's WAL record
/// also holds its page records, and is bounded).
pub const MAX_BATCH_BYTES: usize = 64 << 20;
/// Most writes in one batch.
pub const MAX_BATCH_WRITES: usize = 1 << 17;

/// When the pipeline syncs the WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncPolicy {
    /// After every version.
    EveryCommit,
    /// When no further version waits in the pipeline: one sync covers a
    /// group of versions under load (group commit).
    Grouped,
}

/// How a [`Db`] runs. [`Options::default`] suits an NVMe host;
/// [`Options::laptop`] keeps memory small.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Bytes of the engine's block cache.
    pub cache_bytes: usize,
    /// Bytes of decoded trie pages kept in memory (the newest page of each
    /// path, and older pages that historical reads rebuilt, in one budget).
    pub page_cache_bytes: usize,
    /// Keep this many versions readable; older ones are pruned as new ones
    /// commit (`None`: keep everything until [`Db::prune`]).
    pub retain_versions: Option<u64>,
    /// When the WAL is synced.
    pub sync: SyncPolicy,
    /// Use io_uring where the kernel allows it (else positional I/O).
    pub io_uring: bool,
    /// Read segment files with `O_DIRECT` (io_uring only).
    pub direct_io: bool,
    /// Compression of the engine's data blocks.
    pub compression: Compression,
    /// When a page is stored as a delta rather than a base.
    pub delta_policy: DeltaPolicy,
    /// Most versions staged but not yet merkleized; `commit` waits beyond.
    pub max_in_flight: usize,
    /// Bytes of the engine's memtable before a flush.
    pub memtable_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cache_bytes: 256 << 20,
            page_cache_bytes: 768 << 20,
            retain_versions: None,
            sync: SyncPolicy::Grouped,
            io_uring: true,
            direct_io: false,
            compression: Compression::None,
            delta_policy: DeltaPolicy::default(),
            max_in_flight: 4,
            memtable_bytes: 64 << 20,
        }
    }
}

impl Options {
    /// Small caches and memtables: for a laptop or a test.
    pub fn laptop() -> Options {
        Options {
            cache_bytes: 32 << 20,
            page_cache_bytes: 64 << 20,
            memtable_bytes: 8 << 20,
            ..Options::default()
        }
    }

    /// Splits a cache budget of `bytes`: `block_percent` percent (at most
    /// 100) for the block cache, the rest for decoded pages. A quarter
    /// suits a budget that holds the decoded trie; with one far smaller
    /// (and reads that bypass the OS page cache), most of it for blocks,
    /// where the same memory holds about three times as many pages
    /// (measured in BENCHMARKS.md).
    pub fn split_cache(&mut self, bytes: usize, block_percent: usize) {
        let block_percent = block_percent.min(100) as u128;
        self.cache_bytes = (bytes as u128 * block_percent / 100) as usize;
        self.page_cache_bytes = bytes - self.cache_bytes;
    }

    fn check(&self) -> Result<()> {
        if self.max_in_flight == 0 {
            return Err(DbError::InvalidArgument("max_in_flight must be 1 or more"));
        }
        if self.retain_versions == Some(0) {
            return Err(DbError::InvalidArgument(
                "retain_versions must be 1 or more",
            ));
        }
        Ok(())
    }
}

/// The writes of one version. The same key twice: the last write wins.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    bytes: usize,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        check_key(key)?;
        if value.len() > MAX_VALUE_LEN {
            return Err(DbError::InvalidArgument("value longer than MAX_VALUE_LEN"));
        }
        self.reserve(key.len() + value.len())?;
        self.writes.push((key.to_vec(), Some(value.to_vec())));
        Ok(())
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        check_key(key)?;
        self.reserve(key.len())?;
        self.writes.push((key.to_vec(), None));
        Ok(())
    }

    fn reserve(&mut self, bytes: usize) -> Result<()> {
        if self.writes.len() >= MAX_BATCH_WRITES {
            return Err(DbError::InvalidArgument(
                "more than MAX_BATCH_WRITES writes",
            ));
        }
        if self.bytes + bytes > MAX_BATCH_BYTES {
            return Err(DbError::InvalidArgument(
                "batch larger than MAX_BATCH_BYTES",
            ));
        }
        self.bytes += bytes;
        Ok(())
    }

    /// The number of writes.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// True when the batch holds no write.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(DbError::InvalidArgument("empty key"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(DbError::InvalidArgument("key longer than MAX_KEY_LEN"));
    }
    Ok(())
}

/// A write as the overlay keeps it: the key and its value in their state
/// encoding (see [`encode_state`]), or `None` for a deletion.
type Staging = Option<StagedValue>;

/// A staged key and value, encoded once as the engine stores them: the
/// write thread hands the same allocation to the engine's batch, where
/// the overlay kept the key and the value apart and the write encoded
/// them again (three allocations and copies a write, now one).
#[derive(Clone)]
struct StagedValue {
    /// `varint key length | key | value`.
    bytes: SharedBytes,
    /// Where the value starts in `bytes`.
    value_at: usize,
}

impl StagedValue {
    /// `key` and `value` encoded (in `scratch`, then one exactly sized
    /// allocation).
    fn new(scratch: &mut Vec<u8>, key: &[u8], value: &[u8]) -> StagedValue {
        let bytes = encode_state(scratch, key, value);
        StagedValue {
            value_at: bytes.len() - value.len(),
            bytes,
        }
    }

    fn value(&self) -> &[u8] {
        &self.bytes[self.value_at..]
    }
}

/// One entry of a snapshot, as iteration returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key's hash (the order of iteration).
    pub key_hash: KeyHash,
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
}

/// A version staged by `commit`.
struct Staged {
    version: u64,
    /// Sorted by key hash, one write a key (the batch's last): the order
    /// the update and the engine's batch take them in.
    writes: Vec<(KeyHash, Staging)>,
    root: OnceLock<Hash>,
}

struct State {
    /// Staged versions the engine does not hold yet, oldest first.
    staged: VecDeque<Arc<Staged>>,
    latest_staged: u64,
}

struct Progress {
    merkleized: u64,
    durable: u64,
    failed: Option<DbError>,
    closed: bool,
}

struct Shared {
    engine: Arc<Engine>,
    source: EngineSource,
    opts: Options,
    state: Mutex<State>,
    progress: Mutex<Progress>,
    changed: Condvar,
    /// Versions sent to the pipeline and not yet merkleized.
    queued: AtomicUsize,
}

/// The state encoding of a key's value in the engine: the original key
/// (varint length and bytes) followed by the value; encoded in `scratch`,
/// returned in one exactly sized shared allocation (the engine's batch
/// keeps it as it is).
fn encode_state(scratch: &mut Vec<u8>, key: &[u8], value: &[u8]) -> SharedBytes {
    scratch.clear();
    put_bytes(scratch, key);
    scratch.extend_from_slice(value);
    SharedBytes::from(&scratch[..])
}

fn decode_state(bytes: &[u8]) -> Result<(&[u8], &[u8])> {
    let mut r = Reader::new(bytes, "state value");
    let key = r
        .bytes(MAX_KEY_LEN as u64)
        .map_err(|e| DbError::Corruption {
            file: "state namespace".into(),
            offset: 0,
            detail: e.to_string(),
        })?;
    Ok((key, &bytes[r.position()..]))
}

fn meta_key(version: u64) -> [u8; 8] {
    version.to_be_bytes()
}

/// A versioned, authenticated key-value store. Cheap to clone (clones
/// share the store), `Send + Sync`.
#[derive(Clone)]
pub struct Db {
    inner: Arc<DbInner>,
}

struct DbInner {
    shared: Arc<Shared>,
    sender: Mutex<Option<SyncSender<Arc<Staged>>>>,
    pipeline: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("dir", &self.inner.shared.engine.dir())
            .finish()
    }
}

impl Db {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: impl AsRef<Path>, opts: Options) -> Result<Db> {
        let io: Arc<dyn IoBackend> = if opts.io_uring {
            best_backend(opts.direct_io)
        } else {
            Arc::new(StdIo)
        };
        Db::open_with_io(io, path.as_ref(), opts)
    }

    /// Opens the store at `path` over a given I/O backend (a simulated
    /// disk in tests).
    pub fn open_with_io(io: Arc<dyn IoBackend>, path: &Path, opts: Options) -> Result<Db> {
        opts.check()?;
        let mut eo = verity_engine::Options::default();
        eo.cache_bytes = opts.cache_bytes;
        eo.compression = opts.compression;
        eo.memtable_bytes = opts.memtable_bytes;
        let engine = Arc::new(Engine::open(io, path, eo)?);
        let latest = engine.latest().unwrap_or(0);
        let source = EngineSource::new(engine.clone(), opts.page_cache_bytes);
        let shared = Arc::new(Shared {
            engine,
            source,
            state: Mutex::new(State {
                staged: VecDeque::new(),
                latest_staged: latest,
            }),
            progress: Mutex::new(Progress {
                merkleized: latest,
                durable: latest,
                failed: None,
                closed: false,
            }),
            changed: Condvar::new(),
            queued: AtomicUsize::new(0),
            opts,
        });
        let (tx, rx) = sync_channel(shared.opts.max_in_flight);
        let s = shared.clone();
        let pipeline = std::thread::Builder::new()
            .name("verity-commit".into())
            .spawn(move || s.pipeline(rx))
            .map_err(|_| DbError::InvalidArgument("could not start the commit thread"))?;
        Ok(Db {
            inner: Arc::new(DbInner {
                shared,
                sender: Mutex::new(Some(tx)),
                pipeline: Mutex::new(Some(pipeline)),
            }),
        })
    }

    /// Stages `batch` as the next version and returns at once; the handle
    /// tells when its root is known and when it is durable. Waits while
    /// `max_in_flight` versions are in the pipeline.
    pub fn commit(&self, batch: WriteBatch) -> Result<CommitHandle> {
        let shared = &self.inner.shared;
        shared.check_open()?;
        let mut writes: Vec<(KeyHash, Staging)> = Vec::with_capacity(batch.writes.len());
        let mut scratch = Vec::new();
        for (key, value) in batch.writes {
            let kh = key_hash(&key);
            let staging = value.map(|v| StagedValue::new(&mut scratch, &key, &v));
            writes.push((kh, staging));
        }
        // Stable: of two writes of a key, the later stays behind the
        // earlier, and the dedup keeps it.
        writes.sort_by_key(|w| w.0);
        writes.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                std::mem::swap(later, earlier);
            }
            same
        });
        let sender = self.inner.sender.lock();
        let Some(tx) = sender.as_ref() else {
            return Err(DbError::Closed);
        };
        let staged = {
            let mut state = shared.state.lock();
            let version = state.latest_staged + 1;
            let staged = Arc::new(Staged {
                version,
                writes,
                root: OnceLock::new(),
            });
            state.staged.push_back(staged.clone());
            state.latest_staged = version;
            staged
        };
        shared.queued.fetch_add(1, Ordering::AcqRel);
        let _span = tracing::debug_span!("stage", version = staged.version).entered();
        tx.send(staged.clone()).map_err(|_| DbError::Closed)?;
        Ok(CommitHandle {
            staged,
            shared: shared.clone(),
        })
    }

    /// A snapshot of `version`, which must be staged and not pruned.
    pub fn snapshot(&self, version: u64) -> Result<Snapshot> {
        self.inner.shared.snapshot(version)
    }

    /// A snapshot of the newest staged version.
    pub fn latest(&self) -> Result<Snapshot> {
        let v = self.inner.shared.state.lock().latest_staged;
        self.inner.shared.snapshot(v)
    }

    /// Versions below `before` are no longer readable; their history is
    /// dropped by compaction. `before` may not pass the newest durable
    /// version.
    pub fn prune(&self, before: u64) -> Result<()> {
        let shared = &self.inner.shared;
        shared.check_open()?;
        let durable = shared.progress.lock().durable;
        if before > durable {
            return Err(DbError::InvalidArgument(
                "prune may not pass the newest durable version",
            ));
        }
        if before == 0 {
            return Ok(());
        }
        shared.engine.prune(before)?;
        Ok(())
    }

    /// Figures of the store now.
    pub fn stats(&self) -> DbStats {
        let shared = &self.inner.shared;
        let latest_staged = shared.state.lock().latest_staged;
        let (merkleized, durable) = {
            let p = shared.progress.lock();
            (p.merkleized, p.durable)
        };
        let pages = shared.source.cache_stats();
        let engine = shared.engine.stats();
        DbStats {
            latest_staged,
            latest_merkleized: merkleized,
            latest_durable: durable,
            oldest_retained: engine.floor.unwrap_or(0),
            page_cache_pages: pages.pages,
            page_cache_bytes: pages.bytes,
            page_cache_hits: pages.hits,
            page_cache_misses: pages.misses,
            segment_bytes: engine.segment_bytes,
            wal_bytes: engine.wal_file_bytes,
            compaction_debt_bytes: engine.compaction_debt_bytes,
            in_flight: latest_staged.saturating_sub(merkleized),
            engine,
        }
    }

    /// Waits for every staged version to be durable, stops the pipeline
    /// and closes the engine. Later calls return [`DbError::Closed`].
    pub fn close(&self) -> Result<()> {
        self.inner.close()
    }
}

impl DbInner {
    fn close(&self) -> Result<()> {
        // Dropping the sender ends the pipeline after the staged versions.
        drop(self.sender.lock().take());
        if let Some(p) = self.pipeline.lock().take() {
            // The pipeline reports its failures through `progress`; a
            // panic that escaped it is one more.
            if p.join().is_err() {
                self.shared
                    .fail(DbError::Poisoned("the commit thread panicked".into()));
            }
        }
        let shared = &self.shared;
        let failed = {
            let mut p = shared.progress.lock();
            p.closed = true;
            p.failed.clone()
        };
        shared.changed.notify_all();
        // The engine's lock is released here, so the store can be opened
        // again while snapshots of this Db are still alive.
        let shutdown = shared.engine.shutdown();
        match failed {
            Some(e) => Err(e),
            None => Ok(shutdown?),
        }
    }
}

impl Drop for DbInner {
    fn drop(&mut self) {
        // Errors were reported to the handles; nothing more to say here.
        let _ = self.close();
    }
}

/// Figures of a [`Db`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DbStats {
    /// The newest staged version.
    pub latest_staged: u64,
    /// The newest version whose root is known.
    pub latest_merkleized: u64,
    /// The newest durable version.
    pub latest_durable: u64,
    /// The oldest readable version.
    pub oldest_retained: u64,
    /// Decoded trie pages cached.
    pub page_cache_pages: usize,
    /// Bytes of memory those pages hold.
    pub page_cache_bytes: usize,
    /// Page reads served from the cache.
    pub page_cache_hits: u64,
    /// Page reads that went to the engine.
    pub page_cache_misses: u64,
    /// Bytes on disk by kind: segment files (pages, state and roots of
    /// flushed versions) and the current WAL file (versions not yet
    /// flushed).
    pub segment_bytes: u64,
    /// See [`segment_bytes`](Self::segment_bytes).
    pub wal_bytes: u64,
    /// Bytes waiting for flush or compaction.
    pub compaction_debt_bytes: u64,
    /// Versions staged and not yet merkleized.
    pub in_flight: u64,
    /// The engine's figures (I/O backend, bytes, block cache, compaction).
    pub engine: EngineStats,
}

impl Shared {
    fn check_open(&self) -> Result<()> {
        let p = self.progress.lock();
        if p.closed {
            return Err(DbError::Closed);
        }
        if let Some(e) = &p.failed {
            return Err(DbError::Poisoned(e.to_string()));
        }
        Ok(())
    }

    fn snapshot(self: &Arc<Self>, version: u64) -> Result<Snapshot> {
        self.check_open()?;
        let state = self.state.lock();
        let floor = self.engine.floor().unwrap_or(0);
        if version > state.latest_staged || version < floor {
            return Err(DbError::NoSuchVersion {
                version,
                oldest: Some(floor),
                latest: Some(state.latest_staged),
            });
        }
        let in_engine = state
            .staged
            .front()
            .map_or(state.latest_staged, |s| s.version - 1);
        let staged: Vec<Arc<Staged>> = state
            .staged
            .iter()
            .rev()
            .filter(|s| s.version <= version)
            .cloned()
            .collect();
        Ok(Snapshot {
            version,
            base: version.min(in_engine),
            staged: staged.into(),
            shared: self.clone(),
        })
    }

    /// Waits until `version` is merkleized and in the engine.
    fn wait_merkleized(&self, version: u64) -> Result<()> {
        self.wait_until(|p| p.merkleized >= version)
    }

    /// Waits until `version` is durable.
    fn wait_durable(&self, version: u64) -> Result<()> {
        self.wait_until(|p| p.durable >= version)
    }

    fn wait_until(&self, done: impl Fn(&Progress) -> bool) -> Result<()> {
        let mut p = self.progress.lock();
        loop {
            if done(&p) {
                return Ok(());
            }
            if let Some(e) = &p.failed {
                return Err(e.clone());
            }
            if p.closed {
                return Err(DbError::Closed);
            }
            self.changed.wait(&mut p);
        }
    }

    /// The commit thread: merkleizes each staged version and hands it to
    /// the write thread, which commits it to the engine (and syncs) while
    /// this thread merkleizes the next one. The next update finds the
    /// pages it reads in the page cache ([`EngineSource::remember`] runs
    /// before the hand-over), and a page it misses is read once the engine
    /// has it ([`EngineSource::committed`]). Done one after the other on
    /// one thread, a block at 1M keys spent about as long in the engine's
    /// commit, the batch and the sync as in its update (BENCHMARKS.md).
    fn pipeline(&self, rx: Receiver<Arc<Staged>>) {
        // One version waits for the write thread while it writes another.
        let (tx, merkleized) = sync_channel::<(Arc<Staged>, UpdateOutput)>(1);
        std::thread::scope(|scope| {
            let writer = std::thread::Builder::new()
                .name("verity-write".into())
                .spawn_scoped(scope, || self.write_loop(merkleized));
            let writer = match writer {
                Ok(writer) => Some(writer),
                Err(_) => {
                    self.fail(DbError::Poisoned("could not start the write thread".into()));
                    None
                }
            };
            while let Ok(staged) = rx.recv() {
                let failed = self.progress.lock().failed.is_some();
                if failed {
                    self.queued.fetch_sub(1, Ordering::AcqRel);
                    continue;
                }
                // A panic here must reach the waiting handles as a failure,
                // not leave them waiting.
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.merkleize(&staged)
                }));
                let e = match r {
                    Ok(Ok(out)) => match tx.send((staged, out)) {
                        Ok(()) => continue,
                        Err(_) => DbError::Poisoned("the write thread stopped".into()),
                    },
                    Ok(Err(e)) => e,
                    Err(_) => DbError::Poisoned(format!(
                        "the commit thread panicked on version {}",
                        staged.version
                    )),
                };
                self.fail(e);
                self.queued.fetch_sub(1, Ordering::AcqRel);
            }
            drop(tx);
            if writer.is_some_and(|w| w.join().is_err()) {
                self.fail(DbError::Poisoned("the write thread panicked".into()));
            }
        });
    }

    /// The write thread: commits each merkleized version to the engine, in
    /// order, and syncs in groups. It must not use rayon's pool: the next
    /// update, on the pool's threads, may wait for its commits.
    fn write_loop(&self, rx: Receiver<(Arc<Staged>, UpdateOutput)>) {
        let mut unsynced = 0usize;
        let mut last_sync = std::time::Instant::now();
        while let Ok((staged, out)) = rx.recv() {
            let failed = self.progress.lock().failed.is_some();
            if !failed {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.write(&staged, &out)
                }));
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => self.fail(e),
                    Err(_) => self.fail(DbError::Poisoned(format!(
                        "the write thread panicked on version {}",
                        staged.version
                    ))),
                }
            }
            self.queued.fetch_sub(1, Ordering::AcqRel);
            unsynced += 1;
            // Grouped: sync when nothing else waits, and also after a full
            // pipeline's worth of versions or 10 ms, so that a producer that
            // never lets the queue drain still sees its versions durable.
            let sync_now = match self.opts.sync {
                SyncPolicy::EveryCommit => true,
                SyncPolicy::Grouped => {
                    self.queued.load(Ordering::Acquire) == 0
                        || unsynced >= self.opts.max_in_flight
                        || last_sync.elapsed() >= std::time::Duration::from_millis(10)
                }
            };
            if sync_now && self.progress.lock().failed.is_none() {
                if let Err(e) = self.sync() {
                    self.fail(e);
                }
                unsynced = 0;
                last_sync = std::time::Instant::now();
            }
        }
        if self.progress.lock().failed.is_none() {
            if let Err(e) = self.sync() {
                self.fail(e);
            }
        }
    }

    fn fail(&self, e: DbError) {
        tracing::error!(error = %e, "commit pipeline failed; the database is poisoned");
        {
            let mut p = self.progress.lock();
            p.failed.get_or_insert(e);
            self.changed.notify_all();
        }
        // An update waiting for a version the engine will not get now.
        self.source.stop();
    }

    fn sync(&self) -> Result<()> {
        let _span = tracing::debug_span!("sync").entered();
        let durable = self.engine.sync()?.unwrap_or(0);
        let mut p = self.progress.lock();
        p.durable = p.durable.max(durable);
        self.changed.notify_all();
        Ok(())
    }

    /// Computes the root of a staged version and records its pages in the
    /// page cache, for the next update.
    fn merkleize(&self, staged: &Staged) -> Result<UpdateOutput> {
        let v = staged.version;
        let span = tracing::debug_span!("merkleize", version = v, writes = staged.writes.len());
        let _guard = span.enter();
        // In key hash order already (see `Staged::writes`).
        let updates: Vec<(KeyHash, Option<ValueHash>)> = staged
            .writes
            .iter()
            .map(|(kh, w)| (*kh, w.as_ref().map(|w| value_hash(w.value()))))
            .collect();
        let trie = Trie::with_policy(&self.source, self.opts.delta_policy);
        let out = trie.update(v - 1, v, &updates)?;
        self.source.remember(&out);
        Ok(out)
    }

    /// Writes a merkleized version to the engine, then publishes its root.
    fn write(&self, staged: &Staged, out: &UpdateOutput) -> Result<()> {
        let v = staged.version;
        let span = tracing::debug_span!("write", version = v, pages = out.writes.len());
        let _guard = span.enter();
        let mut batch = verity_engine::WriteBatch::new();
        for w in &out.writes {
            put_page(&mut batch, &w.path, w.kind, &w.record)?;
        }
        for (kh, w) in &staged.writes {
            let record = match w {
                Some(w) => Record::Put(w.bytes.clone()),
                None => Record::Delete,
            };
            batch.push_record(Namespace::State, kh, record)?;
        }
        batch.put(Namespace::Meta, &meta_key(v), &out.root)?;
        self.engine.commit(v, batch)?;
        self.source.committed(v);
        let _ = staged.root.set(out.root);
        {
            let mut state = self.state.lock();
            if state.staged.front().is_some_and(|s| s.version == v) {
                state.staged.pop_front();
            }
        }
        {
            let mut p = self.progress.lock();
            p.merkleized = v;
            self.changed.notify_all();
        }
        if let Some(keep) = self.opts.retain_versions {
            // Every 16 versions, so that pruning's sync is amortised.
            if v > keep && v.is_multiple_of(16) {
                self.engine.prune(v - keep)?;
                self.sync()?;
            }
        }
        Ok(())
    }
}

/// The promise of a staged version.
pub struct CommitHandle {
    staged: Arc<Staged>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for CommitHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitHandle")
            .field("version", &self.staged.version)
            .finish()
    }
}

impl CommitHandle {
    /// The version the batch was given.
    pub fn version(&self) -> u64 {
        self.staged.version
    }

    /// The version's state root; waits for merkleization.
    pub fn root(&self) -> Result<Hash> {
        self.shared.wait_merkleized(self.staged.version)?;
        self.try_root()
            .ok_or(DbError::InvalidArgument("root missing after merkleization"))
    }

    /// The root if it is known already.
    pub fn try_root(&self) -> Option<Hash> {
        self.staged.root.get().copied()
    }

    /// Waits until the version is durable (its WAL group synced).
    pub fn wait_durable(&self) -> Result<()> {
        self.shared.wait_durable(self.staged.version)
    }

    /// True when the version is durable.
    pub fn is_durable(&self) -> bool {
        self.shared.progress.lock().durable >= self.staged.version
    }
}

/// A consistent view of one version: cheap to clone, shared by any number
/// of threads, never blocked by commits.
#[derive(Clone)]
pub struct Snapshot {
    version: u64,
    /// The engine version below the staged ones.
    base: u64,
    /// Staged versions at or below `version` not in the engine when the
    /// snapshot was taken, newest first.
    staged: Arc<[Arc<Staged>]>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.version)
            .finish()
    }
}

impl Snapshot {
    /// The version this snapshot sees.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let kh = key_hash(key);
        if let Some(w) = self.staged_write(&kh) {
            return Ok(w.map(|w| w.value().to_vec()));
        }
        if self.base == 0 {
            return Ok(None);
        }
        let stored = self.shared.engine.get(Namespace::State, &kh, self.base)?;
        self.decode(key, stored.as_deref())
    }

    /// The values of many keys, in the order asked; the disk reads of the
    /// batch are submitted together.
    pub fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut out = vec![None; keys.len()];
        let mut pending = Vec::new();
        let mut hashes = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let kh = key_hash(key);
            match self.staged_write(&kh) {
                Some(w) => out[i] = w.map(|w| w.value().to_vec()),
                None => {
                    pending.push(i);
                    hashes.push(kh);
                }
            }
        }
        if self.base > 0 && !pending.is_empty() {
            let refs: Vec<&[u8]> = hashes.iter().map(|h| &h[..]).collect();
            let got = self
                .shared
                .engine
                .get_many(Namespace::State, &refs, self.base)?;
            for (&i, value) in pending.iter().zip(got) {
                out[i] = self.decode(keys[i], value.as_deref())?;
            }
        }
        Ok(out)
    }

    /// The state root of the version (waits for its merkleization).
    pub fn root(&self) -> Result<Hash> {
        if self.version == 0 {
            return Ok(EMPTY);
        }
        if let Some(s) = self.staged.first().filter(|s| s.version == self.version) {
            self.shared.wait_merkleized(self.version)?;
            if let Some(root) = s.root.get() {
                return Ok(*root);
            }
        }
        let stored =
            self.shared
                .engine
                .get(Namespace::Meta, &meta_key(self.version), self.version)?;
        let bytes = stored.ok_or_else(|| DbError::Corruption {
            file: "meta namespace".into(),
            offset: 0,
            detail: format!("no root stored for version {}", self.version),
        })?;
        bytes.as_ref().try_into().map_err(|_| DbError::Corruption {
            file: "meta namespace".into(),
            offset: 0,
            detail: format!("root of version {} is not 32 bytes", self.version),
        })
    }

    /// A proof of the value (or the absence) of `key` against
    /// [`root`](Self::root).
    pub fn prove(&self, key: &[u8]) -> Result<Proof> {
        self.prove_many(&[key])
    }

    /// One proof for many keys (shared siblings once).
    pub fn prove_many(&self, keys: &[&[u8]]) -> Result<Proof> {
        self.shared.wait_merkleized(self.version)?;
        let mut hashes: Vec<KeyHash> = keys.iter().map(|k| key_hash(k)).collect();
        hashes.sort_unstable();
        hashes.dedup();
        let trie = Trie::with_policy(&self.shared.source, self.shared.opts.delta_policy);
        Ok(trie.prove(self.version, &hashes)?)
    }

    /// Up to `limit` entries (key hash, value hash) from `from` on, in
    /// key-hash order, and a proof that no entry between them is missing.
    pub fn prove_range(
        &self,
        from: &KeyHash,
        limit: usize,
    ) -> Result<(Vec<(KeyHash, ValueHash)>, RangeProof)> {
        self.shared.wait_merkleized(self.version)?;
        let trie = Trie::with_policy(&self.shared.source, self.shared.opts.delta_policy);
        Ok(trie.prove_range(self.version, from, limit)?)
    }

    /// Walks every trie page of the version and recomputes every hash that
    /// reading a page trusts (the subtree hashes a page's record stores and
    /// the child page references); returns the number of pages. What
    /// `verity check` runs; a damaged page is a corruption error.
    pub fn check_pages(&self) -> Result<usize> {
        self.shared.wait_merkleized(self.version)?;
        let trie = Trie::with_policy(&self.shared.source, self.shared.opts.delta_policy);
        Ok(trie.check_pages(self.version)?)
    }

    /// Up to `limit` entries with key hash `>= from`, in key-hash order,
    /// with their original keys.
    pub fn iter_from(&self, from: &KeyHash, limit: usize) -> Result<Vec<Entry>> {
        self.shared.wait_merkleized(self.version)?;
        let trie = Trie::with_policy(&self.shared.source, self.shared.opts.delta_policy);
        let leaves = trie.leaves(self.version, from, limit)?;
        let mut out = Vec::with_capacity(leaves.len());
        for (kh, _) in leaves {
            let stored = self
                .shared
                .engine
                .get(Namespace::State, &kh, self.version)?;
            let bytes = stored.ok_or_else(|| DbError::Corruption {
                file: "state namespace".into(),
                offset: 0,
                detail: "a key of the trie has no stored value".into(),
            })?;
            let (key, value) = decode_state(&bytes)?;
            out.push(Entry {
                key_hash: kh,
                key: key.to_vec(),
                value: value.to_vec(),
            });
        }
        Ok(out)
    }

    fn staged_write(&self, kh: &KeyHash) -> Option<Staging> {
        self.staged.iter().find_map(|s| {
            let i = s.writes.binary_search_by(|w| w.0.cmp(kh)).ok()?;
            Some(s.writes[i].1.clone())
        })
    }

    fn decode(&self, key: &[u8], stored: Option<&[u8]>) -> Result<Option<Vec<u8>>> {
        let Some(bytes) = stored else {
            return Ok(None);
        };
        let (stored_key, value) = decode_state(bytes)?;
        // Two keys with one 32-byte hash: never seen; refuse to guess.
        if stored_key != key {
            return Ok(None);
        }
        Ok(Some(value.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_between_threads<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        shared_between_threads::<Db>();
        shared_between_threads::<Snapshot>();
        shared_between_threads::<CommitHandle>();
    }

    #[test]
    fn a_cache_budget_is_split_whole() {
        let mut o = Options::default();
        o.split_cache(1 << 30, 25);
        assert_eq!((o.cache_bytes, o.page_cache_bytes), (256 << 20, 768 << 20));
        o.split_cache(1 << 30, 90);
        assert_eq!(o.cache_bytes + o.page_cache_bytes, 1 << 30);
        assert_eq!(o.cache_bytes, 966_367_641);
        o.split_cache(1000, 250);
        assert_eq!((o.cache_bytes, o.page_cache_bytes), (1000, 0));
        o.split_cache(usize::MAX, 25);
        assert_eq!(o.cache_bytes, usize::MAX / 4);
        assert_eq!(o.cache_bytes + o.page_cache_bytes, usize::MAX);
    }

    #[test]
    fn state_values_round_trip() -> Result<()> {
        let bytes = encode_state(&mut Vec::new(), b"key", b"value");
        assert_eq!(decode_state(&bytes)?, (&b"key"[..], &b"value"[..]));
        assert!(decode_state(&[0x80]).is_err());
        // A staged value is the stored encoding, and its value is found
        // behind length prefixes of one and of two bytes.
        let mut scratch = Vec::new();
        for key_len in [0usize, 1, 127, 128, 300] {
            let key = vec![7u8; key_len];
            let staged = StagedValue::new(&mut scratch, &key, b"the value");
            assert_eq!(staged.value(), b"the value");
            assert_eq!(decode_state(&staged.bytes)?, (&key[..], &b"the value"[..]));
        }
        Ok(())
    }
}
