//! The store interface of `verity bench`: every backend runs the same
//! workload code above it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use parking_lot::{Mutex, RwLock};
use rayon::prelude::*;
use verity::{
    key_hash, value_hash, verify, CommitHandle, Db, Hash, KeyHash, MemPageStore, Options, Proof,
    Snapshot, Trie, ValueHash, WriteBatch,
};

/// The writes of one block: key, and value (`None`: delete). The last
/// write of a key wins.
pub(crate) type Ops = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// The writes of a block by key hash, ascending, the last write of a key
/// winning.
pub(crate) fn dedup_by_key_hash(ops: Ops) -> HashedOps {
    // Hashed and sorted on every thread of the pool (the sort is stable):
    // on one thread this took 3 to 4.5 ms of a block of 10k operations.
    let mut writes: HashedOps = ops
        .into_par_iter()
        .map(|(k, v)| (key_hash(&k), v))
        .collect();
    writes.reverse();
    writes.par_sort_by_key(|w| w.0);
    writes.dedup_by(|a, b| a.0 == b.0);
    writes
}

/// The writes of a block by key hash, ascending, the last write of a key
/// winning; and the same with value hashes (the trie's updates).
pub(crate) fn by_key_hash(ops: Ops) -> (HashedOps, Vec<(KeyHash, Option<ValueHash>)>) {
    let writes = dedup_by_key_hash(ops);
    let updates = writes
        .par_iter()
        .map(|(k, v)| (*k, v.as_ref().map(|v| value_hash(v))))
        .collect();
    (writes, updates)
}

/// Writes by key hash: `(key hash, value or None)`.
pub(crate) type HashedOps = Vec<(KeyHash, Option<Vec<u8>>)>;

/// A version handed to a backend and not yet known to be durable.
pub(crate) trait Pending: Send {
    /// The version.
    fn version(&self) -> u64;
    /// Waits until the version is merkleized and durable; its root.
    fn wait(self: Box<Self>) -> Result<Hash>;
}

/// The trie family of Verity's own trie (`verity`, `rocksdb`, `memory`):
/// the same shape and hashing, so the same roots and proof bytes.
pub(crate) const VERITY_FAMILY: &str = "verity trie";

/// A proof of one key in a backend's own format, checked by that
/// backend's own verifier.
pub(crate) trait BenchProof: Send {
    /// Its bytes, in the format the backend's verifier takes.
    fn encode(&self) -> Vec<u8>;
    /// Checks that the proof shows `key` holding `value` (`None`: absent)
    /// under `root`.
    fn verify(&self, root: &Hash, key: &[u8], value: Option<&[u8]>) -> Result<()>;
}

impl BenchProof for Proof {
    fn encode(&self) -> Vec<u8> {
        Proof::encode(self)
    }

    fn verify(&self, root: &Hash, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        Ok(verify(
            root,
            self,
            &[(key_hash(key), value.map(value_hash))],
        )?)
    }
}

/// Reads of one version, from any thread.
pub(crate) trait Reader: Send + Sync {
    /// The value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// The inclusion or exclusion proof of `key`.
    fn prove(&self, key: &[u8]) -> Result<Box<dyn BenchProof>>;
    /// The state root.
    fn root(&self) -> Result<Hash>;
}

/// A versioned, authenticated store under test.
pub(crate) trait Backend: Send + Sync {
    /// Its name on the command line.
    fn name(&self) -> &'static str;
    /// Its trie family: backends of one family compute the same roots and
    /// proof bytes from the same writes, and the bench checks that they
    /// do; roots of different families are never compared.
    fn family(&self) -> &'static str {
        VERITY_FAMILY
    }
    /// Whether versions before the latest can be read and proved.
    fn history(&self) -> bool {
        true
    }
    /// Its settings, in a line.
    fn settings(&self) -> String;
    /// Hands over the next version; returns at once or when the backend
    /// has room for it.
    fn commit(&self, ops: Ops) -> Result<Box<dyn Pending>>;
    /// A reader of `version`. A backend that cannot read a version before
    /// it is committed waits for it here.
    fn reader(&self, version: u64) -> Result<Arc<dyn Reader>>;
    /// The oldest version still readable.
    fn oldest(&self) -> u64;
    /// Blocks read from files so far (cache misses), if it counts them.
    fn disk_reads(&self) -> Option<u64>;
    /// Page reads served by a cache of decoded trie pages and page reads
    /// that missed it, so far, if the store has such a cache.
    fn page_cache(&self) -> Option<(u64, u64)> {
        None
    }
    /// Whether a version can be read while it commits (before it is
    /// durable).
    fn reads_staged(&self) -> bool;
    /// Waits for everything handed over, syncs, and stops background work.
    fn close(&self) -> Result<()>;
}

/// `verity`: the `Db`.
pub(crate) struct VerityBackend {
    db: Db,
    page_cache_bytes: usize,
    cache_bytes: usize,
}

impl VerityBackend {
    /// Opens (creates) a `Db` in `dir`.
    pub(crate) fn open(dir: &Path, opts: Options) -> Result<VerityBackend> {
        let (page_cache_bytes, cache_bytes) = (opts.page_cache_bytes, opts.cache_bytes);
        Ok(VerityBackend {
            db: Db::open(dir, opts)?,
            page_cache_bytes,
            cache_bytes,
        })
    }
}

impl Pending for CommitHandle {
    fn version(&self) -> u64 {
        CommitHandle::version(self)
    }

    fn wait(self: Box<Self>) -> Result<Hash> {
        self.wait_durable()?;
        Ok(self.root()?)
    }
}

impl Reader for Snapshot {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(Snapshot::get(self, key)?)
    }

    fn prove(&self, key: &[u8]) -> Result<Box<dyn BenchProof>> {
        Ok(Box::new(Snapshot::prove(self, key)?))
    }

    fn root(&self) -> Result<Hash> {
        Ok(Snapshot::root(self)?)
    }
}

impl Backend for VerityBackend {
    fn name(&self) -> &'static str {
        "verity"
    }

    fn settings(&self) -> String {
        let s = self.db.stats();
        format!(
            "block cache {} MiB, page cache {} MiB, I/O {}, WAL synced per group of commits",
            self.cache_bytes >> 20,
            self.page_cache_bytes >> 20,
            s.engine.backend
        )
    }

    fn commit(&self, ops: Ops) -> Result<Box<dyn Pending>> {
        let mut batch = WriteBatch::new();
        for (k, v) in ops {
            match v {
                Some(v) => batch.put(&k, &v)?,
                None => batch.delete(&k)?,
            }
        }
        Ok(Box::new(self.db.commit(batch)?))
    }

    fn reader(&self, version: u64) -> Result<Arc<dyn Reader>> {
        Ok(Arc::new(self.db.snapshot(version)?))
    }

    fn oldest(&self) -> u64 {
        self.db.stats().oldest_retained.max(1)
    }

    fn disk_reads(&self) -> Option<u64> {
        Some(self.db.stats().engine.cache_misses)
    }

    fn page_cache(&self) -> Option<(u64, u64)> {
        let s = self.db.stats();
        Some((s.page_cache_hits, s.page_cache_misses))
    }

    fn reads_staged(&self) -> bool {
        true
    }

    fn close(&self) -> Result<()> {
        Ok(self.db.close()?)
    }
}

/// Values of the `memory` backend: per key hash, its versions ascending.
type Values = HashMap<KeyHash, Vec<(u64, Option<Arc<[u8]>>)>>;

struct MemoryInner {
    trie: Trie<MemPageStore>,
    values: RwLock<Values>,
    roots: RwLock<Vec<Hash>>,
    retain: Option<u64>,
    floor: Mutex<u64>,
}

/// `memory`: the trie over the in-memory page store, merkleized in the
/// commit call (the bound for merkleization alone; nothing is durable).
pub(crate) struct MemoryBackend {
    inner: Arc<MemoryInner>,
    commit: Mutex<()>,
}

impl MemoryBackend {
    /// An empty store keeping `retain` versions when given.
    pub(crate) fn new(retain: Option<u64>) -> MemoryBackend {
        MemoryBackend {
            inner: Arc::new(MemoryInner {
                trie: Trie::new(MemPageStore::new()),
                values: RwLock::new(HashMap::new()),
                roots: RwLock::new(vec![verity::EMPTY]),
                retain,
                floor: Mutex::new(1),
            }),
            commit: Mutex::new(()),
        }
    }
}

struct Ready {
    version: u64,
    root: Hash,
}

impl Pending for Ready {
    fn version(&self) -> u64 {
        self.version
    }

    fn wait(self: Box<Self>) -> Result<Hash> {
        Ok(self.root)
    }
}

struct MemoryReader {
    inner: Arc<MemoryInner>,
    version: u64,
}

impl MemoryReader {
    fn check(&self) -> Result<()> {
        if self.version < *self.inner.floor.lock() {
            bail!("memory backend: version {} is not retained", self.version);
        }
        Ok(())
    }
}

impl Reader for MemoryReader {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check()?;
        let values = self.inner.values.read();
        let Some(list) = values.get(&key_hash(key)) else {
            return Ok(None);
        };
        let i = list.partition_point(|e| e.0 <= self.version);
        Ok(i.checked_sub(1)
            .and_then(|i| list[i].1.as_ref())
            .map(|v| v.to_vec()))
    }

    fn prove(&self, key: &[u8]) -> Result<Box<dyn BenchProof>> {
        self.check()?;
        Ok(Box::new(
            self.inner.trie.prove(self.version, &[key_hash(key)])?,
        ))
    }

    fn root(&self) -> Result<Hash> {
        self.check()?;
        Ok(self.inner.trie.root(self.version)?)
    }
}

impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn settings(&self) -> String {
        "the trie over the in-memory page store; nothing durable".into()
    }

    fn commit(&self, ops: Ops) -> Result<Box<dyn Pending>> {
        let _one = self.commit.lock();
        let version = self.inner.roots.read().len() as u64;
        let (writes, updates) = by_key_hash(ops);
        // The values are filed while the trie merkleizes (4 to 9 ms of a
        // block of 10k operations, one after the other): no reader sees
        // them before the version's root is pushed below.
        let (out, ()) = rayon::join(
            || -> Result<_> {
                let out = self.inner.trie.update(version - 1, version, &updates)?;
                self.inner.trie.source().apply(&out)?;
                Ok(out)
            },
            || {
                let mut values = self.inner.values.write();
                for (k, v) in writes {
                    values
                        .entry(k)
                        .or_default()
                        .push((version, v.map(Arc::from)));
                }
            },
        );
        let out = out?;
        self.inner.roots.write().push(out.root);
        if let Some(keep) = self.inner.retain {
            let floor = (version + 1).saturating_sub(keep).max(1);
            let mut f = self.inner.floor.lock();
            if floor > *f {
                *f = floor;
                self.inner.trie.source().prune(floor)?;
            }
        }
        Ok(Box::new(Ready {
            version,
            root: out.root,
        }))
    }

    fn reader(&self, version: u64) -> Result<Arc<dyn Reader>> {
        if version == 0 || version >= self.inner.roots.read().len() as u64 {
            return Err(anyhow!("memory backend: no version {version}"));
        }
        let r = MemoryReader {
            inner: self.inner.clone(),
            version,
        };
        r.check()?;
        Ok(Arc::new(r))
    }

    fn oldest(&self) -> u64 {
        *self.inner.floor.lock()
    }

    fn disk_reads(&self) -> Option<u64> {
        None
    }

    fn reads_staged(&self) -> bool {
        true
    }

    fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// Where a commit thread stands.
#[cfg(any(feature = "rocksdb", feature = "nomt"))]
#[derive(Default)]
struct Progress {
    /// Newest version merkleized and durable.
    done: u64,
    /// Oldest version still readable.
    #[cfg(feature = "rocksdb")]
    floor: u64,
    failed: Option<String>,
}

/// The progress of a [`CommitThread`], shared with its commit function and
/// with readers.
#[cfg(any(feature = "rocksdb", feature = "nomt"))]
pub(crate) struct CommitProgress {
    name: &'static str,
    progress: Mutex<Progress>,
    cond: parking_lot::Condvar,
}

#[cfg(any(feature = "rocksdb", feature = "nomt"))]
impl CommitProgress {
    /// Waits until `version` is durable; an error if a commit failed.
    pub(crate) fn wait_for(&self, version: u64) -> Result<()> {
        let mut p = self.progress.lock();
        loop {
            if let Some(e) = &p.failed {
                bail!("{}: commit failed: {e}", self.name);
            }
            if p.done >= version {
                return Ok(());
            }
            self.cond.wait(&mut p);
        }
    }

    /// The newest durable version.
    #[cfg(any(feature = "nomt", test))]
    pub(crate) fn done(&self) -> u64 {
        self.progress.lock().done
    }

    /// The oldest readable version (0 until something is pruned).
    #[cfg(feature = "rocksdb")]
    pub(crate) fn floor(&self) -> u64 {
        self.progress.lock().floor
    }

    /// The oldest version a reader may ask for (at least 1).
    #[cfg(feature = "rocksdb")]
    pub(crate) fn oldest(&self) -> u64 {
        self.floor().max(1)
    }

    /// Waits until `version` is durable, then checks that it is still
    /// retained: what a reader of a store with pruning needs first.
    #[cfg(feature = "rocksdb")]
    pub(crate) fn wait_retained(&self, version: u64) -> Result<()> {
        self.wait_for(version)?;
        if version < self.floor() || version == 0 {
            bail!("{}: version {version} is not retained", self.name);
        }
        Ok(())
    }

    /// Raises the oldest readable version to `floor`, before the versions
    /// below it are deleted (readers asking for them from then on are
    /// refused); false if it already was at least that.
    #[cfg(feature = "rocksdb")]
    pub(crate) fn raise_floor(&self, floor: u64) -> bool {
        let mut p = self.progress.lock();
        if floor > p.floor {
            p.floor = floor;
            true
        } else {
            false
        }
    }
}

/// The function that merkleizes and durably writes one version (the
/// version, its writes, the shared progress) and returns its root.
#[cfg(any(feature = "rocksdb", feature = "nomt"))]
pub(crate) type CommitFn = Box<dyn FnMut(u64, Ops, &CommitProgress) -> Result<Hash> + Send>;

/// A version handed to a commit thread, and where its root goes.
#[cfg(any(feature = "rocksdb", feature = "nomt"))]
type Job = (u64, Ops, std::sync::mpsc::Sender<Result<Hash, String>>);

/// Versions committed in order on a thread of their own: `commit` returns
/// at once (or when four versions already wait), and a version's
/// [`Pending`] gives its root once it is durable. Backends whose store
/// commits synchronously (`rocksdb`, `jmt`, `nomt`) run on one.
#[cfg(any(feature = "rocksdb", feature = "nomt"))]
pub(crate) struct CommitThread {
    progress: Arc<CommitProgress>,
    tx: Mutex<Option<std::sync::mpsc::SyncSender<Job>>>,
    next: Mutex<u64>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[cfg(any(feature = "rocksdb", feature = "nomt"))]
impl CommitThread {
    /// Starts the thread of backend `name`, whose newest durable version
    /// is `latest`, committing with `commit`.
    pub(crate) fn start(name: &'static str, latest: u64, mut commit: CommitFn) -> Result<Self> {
        let progress = Arc::new(CommitProgress {
            name,
            progress: Mutex::new(Progress {
                done: latest,
                ..Progress::default()
            }),
            cond: parking_lot::Condvar::new(),
        });
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(4);
        let worker = progress.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-commit"))
            .spawn(move || {
                for (version, ops, reply) in rx {
                    let r = commit(version, ops, &worker);
                    let mut p = worker.progress.lock();
                    match &r {
                        Ok(_) => p.done = version,
                        Err(e) => p.failed = Some(format!("{e:#}")),
                    }
                    drop(p);
                    worker.cond.notify_all();
                    let _ = reply.send(r.map_err(|e| format!("{e:#}")));
                }
            })?;
        Ok(CommitThread {
            progress,
            tx: Mutex::new(Some(tx)),
            next: Mutex::new(latest + 1),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The progress, for readers.
    pub(crate) fn progress(&self) -> &Arc<CommitProgress> {
        &self.progress
    }

    /// Hands over the next version.
    pub(crate) fn commit(&self, ops: Ops) -> Result<Box<dyn Pending>> {
        let name = self.progress.name;
        let mut next = self.next.lock();
        let version = *next;
        let (reply, rx) = std::sync::mpsc::channel();
        self.tx
            .lock()
            .as_ref()
            .ok_or_else(|| anyhow!("{name}: closed"))?
            .send((version, ops, reply))
            .map_err(|_| anyhow!("{name}: the commit thread stopped"))?;
        *next += 1;
        Ok(Box::new(ThreadPending {
            name,
            version,
            reply: rx,
        }))
    }

    /// Waits for every version handed over and stops the thread; the
    /// first commit error, if any.
    pub(crate) fn close(&self) -> Result<()> {
        let name = self.progress.name;
        drop(self.tx.lock().take());
        if let Some(t) = self.thread.lock().take() {
            t.join()
                .map_err(|_| anyhow!("{name}: the commit thread panicked"))?;
        }
        if let Some(e) = &self.progress.progress.lock().failed {
            bail!("{name}: {e}");
        }
        Ok(())
    }
}

/// A version on a [`CommitThread`].
#[cfg(any(feature = "rocksdb", feature = "nomt"))]
struct ThreadPending {
    name: &'static str,
    version: u64,
    reply: std::sync::mpsc::Receiver<Result<Hash, String>>,
}

#[cfg(any(feature = "rocksdb", feature = "nomt"))]
impl Pending for ThreadPending {
    fn version(&self) -> u64 {
        self.version
    }

    fn wait(self: Box<Self>) -> Result<Hash> {
        self.reply
            .recv()
            .map_err(|_| anyhow!("{}: the commit thread stopped", self.name))?
            .map_err(|e| anyhow!("{}: {e}", self.name))
    }
}
