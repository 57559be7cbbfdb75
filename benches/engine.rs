//! Criterion benches of the engine on real files in a temporary directory:
//! point reads with a warm cache, cold point reads through `O_DIRECT`,
//! batched reads on io_uring and on the standard-library fallback, and
//! durable commits on both. After the timed benches, one untimed load
//! prints the write amplification and its breakdown (it runs when no
//! filter is given or the filter names `engine/write_amplification`).
//!
//! Figures that are not timings (disk reads per get, bytes written) go to
//! stderr; nothing here asserts them. The data is seeded with [`SEED`].

#![allow(missing_docs)] // criterion_group! generates undocumented functions.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BatchSize, Criterion, Throughput};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tempfile::TempDir;
use verity::engine::io::{IoBackend, StdIo};
use verity::engine::{Engine, EngineStats, Namespace, Options, WriteBatch};

/// The same allocator as the `verity` binary, so these figures match its
/// `bench` (the library leaves the allocator to the program that links it).
#[global_allocator]
static GLOBAL: verity::alloc::Allocator = verity::alloc::Allocator;

const SEED: u64 = 0x5eed_0001;
/// Keys of the read store, inserted evenly over [`VERSIONS`] versions.
const KEYS: usize = 200_000;
const VERSIONS: u64 = 200;
/// Each version also updates this many keys written before it, so a key
/// has several versions and a historical read skips newer ones.
const UPDATES_PER_VERSION: usize = 1_000;
const VALUE_BYTES: usize = 100;
/// The version the historical reads ask for (the store's middle).
const HISTORICAL: u64 = VERSIONS / 2;
const MEMTABLE_BYTES: usize = 8 << 20;
/// Puts per commit in `engine/commit`.
const COMMIT_BATCH: usize = 1_000;
/// Keys per `get_many` call.
const MANY: usize = 256;
/// Gets (or `get_many` calls) counted for the disk-reads figures.
const PROBES: usize = 10_000;

type Key = [u8; 32];

/// The io_uring backend itself (not [`best_backend`]'s choice): the bench
/// compares it with [`StdIo`], so running without it would mislabel the
/// figures.
///
/// [`best_backend`]: verity::engine::io::best_backend
#[cfg(target_os = "linux")]
fn uring(direct: bool) -> Arc<dyn IoBackend> {
    use verity::engine::uring::{UringIo, UringOptions};
    let io = UringIo::new(UringOptions {
        direct,
        ..Default::default()
    })
    .expect("io_uring is unavailable here; this bench compares it with std");
    Arc::new(io)
}

#[cfg(not(target_os = "linux"))]
fn uring(_direct: bool) -> Arc<dyn IoBackend> {
    panic!("the engine bench compares io_uring with std: Linux only")
}

fn options(memtable_bytes: usize, cache_bytes: usize) -> Options {
    let mut o = Options::default();
    o.memtable_bytes = memtable_bytes;
    o.cache_bytes = cache_bytes;
    o
}

fn open(io: Arc<dyn IoBackend>, dir: &Path, opts: Options) -> Engine {
    Engine::open(io, dir, opts).expect("open the engine")
}

fn value(rng: &mut ChaCha8Rng) -> [u8; VALUE_BYTES] {
    let mut v = [0u8; VALUE_BYTES];
    rng.fill(&mut v[..]);
    v
}

/// The read store: `KEYS` keys, key `i` inserted at version
/// `i / (KEYS / VERSIONS) + 1`, each version also updating
/// `UPDATES_PER_VERSION` older keys. Flushed and compacted, then closed.
struct ReadStore {
    dir: TempDir,
    keys: Vec<Key>,
}

impl ReadStore {
    fn build(rng: &mut ChaCha8Rng) -> ReadStore {
        let dir = tempfile::tempdir().expect("temporary directory");
        let keys: Vec<Key> = (0..KEYS).map(|_| rng.gen()).collect();
        let per_version = KEYS / VERSIONS as usize;
        let started = Instant::now();
        let engine = open(
            uring(false),
            dir.path(),
            options(MEMTABLE_BYTES, Options::default().cache_bytes),
        );
        for v in 1..=VERSIONS {
            let first_new = (v as usize - 1) * per_version;
            let mut batch = WriteBatch::new();
            for k in &keys[first_new..first_new + per_version] {
                batch.put(Namespace::State, k, &value(rng)).expect("put");
            }
            if first_new > 0 {
                let older = &keys[..first_new];
                for k in older.choose_multiple(rng, UPDATES_PER_VERSION.min(first_new)) {
                    batch.put(Namespace::State, k, &value(rng)).expect("put");
                }
            }
            engine.commit(v, batch).expect("commit");
        }
        engine.sync().expect("sync");
        engine.flush().expect("flush");
        engine.compact(false).expect("compact");
        let st = engine.stats();
        eprintln!(
            "read store: {KEYS} keys, {VERSIONS} versions, {} entries written in {:.1?}; \
             {} segments, {:.1} MiB on disk",
            KEYS + (VERSIONS as usize - 1) * UPDATES_PER_VERSION,
            started.elapsed(),
            st.segments,
            st.segment_bytes as f64 / (1 << 20) as f64,
        );
        engine.close().expect("close");
        ReadStore { dir, keys }
    }

    /// `n` keys in a random order, from the first `live` keys.
    fn sample(&self, rng: &mut ChaCha8Rng, live: usize, n: usize) -> Vec<Key> {
        (0..n).map(|_| self.keys[rng.gen_range(0..live)]).collect()
    }

    /// Keys that exist at [`HISTORICAL`].
    fn live_at_historical(&self) -> usize {
        HISTORICAL as usize * (KEYS / VERSIONS as usize)
    }
}

/// Times `get` of `keys` in turn at `version`, each found.
fn bench_get(c: &mut Criterion, id: &str, engine: &Engine, keys: &[Key], version: u64) {
    let mut i = 0;
    c.bench_function(id, |b| {
        b.iter(|| {
            let k = &keys[i % keys.len()];
            i += 1;
            engine
                .get(Namespace::State, k, version)
                .expect("get")
                .expect("the key is present")
        })
    });
}

/// Cache misses (each one a block read from the file) per get of `keys`.
fn reads_per_get(engine: &Engine, keys: &[Key], version: u64) -> f64 {
    let before = engine.stats().cache_misses;
    for k in keys.iter().take(PROBES) {
        engine.get(Namespace::State, k, version).expect("get");
    }
    let n = keys.len().min(PROBES);
    (engine.stats().cache_misses - before) as f64 / n as f64
}

fn describe(label: &str, st: &EngineStats) {
    eprintln!(
        "{label}: backend {}, {} segments, cache {} KiB",
        st.backend,
        st.segments,
        st.cache_bytes >> 10
    );
}

fn reads(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    eprintln!("seed {SEED:#x}");
    let store = ReadStore::build(&mut rng);
    let latest_keys = store.sample(&mut rng, KEYS, 1 << 16);
    let old_keys = store.sample(&mut rng, store.live_at_historical(), 1 << 16);

    // Warm: buffered io_uring, the default 256 MiB cache holds every block.
    {
        let engine = open(
            uring(false),
            store.dir.path(),
            options(MEMTABLE_BYTES, Options::default().cache_bytes),
        );
        for (keys, version) in [(&store.keys[..], VERSIONS), (&old_keys[..], HISTORICAL)] {
            for chunk in keys.chunks(MANY) {
                let refs: Vec<&[u8]> = chunk.iter().map(|k| &k[..]).collect();
                engine
                    .get_many(Namespace::State, &refs, version)
                    .expect("warm the cache");
            }
        }
        describe("warm reads", &engine.stats());
        eprintln!(
            "warm: disk reads per get {:.3} latest, {:.3} historical",
            reads_per_get(&engine, &latest_keys, VERSIONS),
            reads_per_get(&engine, &old_keys, HISTORICAL),
        );
        bench_get(c, "engine/get_latest", &engine, &latest_keys, VERSIONS);
        bench_get(c, "engine/get_historical", &engine, &old_keys, HISTORICAL);
        engine.close().expect("close");
    }

    // Cold: O_DIRECT reads and no block cache, so every block is a disk
    // read.
    {
        let engine = open(uring(true), store.dir.path(), options(MEMTABLE_BYTES, 0));
        describe("cold reads", &engine.stats());
        eprintln!(
            "cold: disk reads per get {:.3} latest, {:.3} historical",
            reads_per_get(&engine, &latest_keys, VERSIONS),
            reads_per_get(&engine, &old_keys, HISTORICAL),
        );
        bench_get(c, "engine/get_cold", &engine, &latest_keys, VERSIONS);
        engine.close().expect("close");
    }

    // Batches of 256 keys with no block cache: io_uring with O_DIRECT (a
    // real disk read per block), and, side by side, io_uring and std both
    // reading through the page cache, which holds the whole store (a
    // like-for-like comparison of the two backends, not of the disk).
    let batches: Vec<Vec<Key>> = latest_keys.chunks(MANY).map(<[Key]>::to_vec).collect();
    let mut g = c.benchmark_group("engine/get_many_256");
    g.throughput(Throughput::Elements(MANY as u64));
    for (id, io) in [
        ("io_uring_direct", uring(true)),
        ("io_uring_page_cache", uring(false)),
        ("std_page_cache", Arc::new(StdIo) as Arc<dyn IoBackend>),
    ] {
        let engine = open(io, store.dir.path(), options(MEMTABLE_BYTES, 0));
        let before = engine.stats().cache_misses;
        let calls = batches.len().min(PROBES / 10);
        for keys in batches.iter().take(calls) {
            let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
            engine
                .get_many(Namespace::State, &refs, VERSIONS)
                .expect("get_many");
        }
        eprintln!(
            "get_many_256/{id}: backend {}, disk reads per call {:.1}",
            engine.stats().backend,
            (engine.stats().cache_misses - before) as f64 / calls as f64,
        );
        let mut i = 0;
        g.bench_function(id, |b| {
            b.iter(|| {
                let refs: Vec<&[u8]> = batches[i % batches.len()].iter().map(|k| &k[..]).collect();
                i += 1;
                engine
                    .get_many(Namespace::State, &refs, VERSIONS)
                    .expect("get_many")
            })
        });
        engine.close().expect("close");
    }
    g.finish();
}

/// Durable commits of `COMMIT_BATCH` fresh keys each, on a store that
/// grows (and flushes and compacts in the background) as the bench runs.
fn commits(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine/commit");
    g.throughput(Throughput::Elements(COMMIT_BATCH as u64));
    for (id, io) in [
        ("io_uring", uring(false)),
        ("std", Arc::new(StdIo) as Arc<dyn IoBackend>),
    ] {
        let dir = tempfile::tempdir().expect("temporary directory");
        let engine = open(
            io,
            dir.path(),
            options(MEMTABLE_BYTES, Options::default().cache_bytes),
        );
        let mut rng = ChaCha8Rng::seed_from_u64(SEED ^ 1);
        let mut batch_of_fresh_keys = || {
            let mut batch = WriteBatch::new();
            for _ in 0..COMMIT_BATCH {
                let k: Key = rng.gen();
                batch
                    .put(Namespace::State, &k, &value(&mut rng))
                    .expect("put");
            }
            batch
        };
        // Where a durable commit's time goes: the commit (WAL buffer and
        // memtable) and the sync, over a first stretch of commits.
        let mut version = 0;
        let (mut in_commit, mut in_sync) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..200 {
            let batch = batch_of_fresh_keys();
            version += 1;
            let t = Instant::now();
            engine.commit(version, batch).expect("commit");
            in_commit += t.elapsed();
            let t = Instant::now();
            engine.sync().expect("sync");
            in_sync += t.elapsed();
        }
        eprintln!(
            "commit/{id}: first {version} commits: commit {} us + sync {} us on average",
            (in_commit / version as u32).as_micros(),
            (in_sync / version as u32).as_micros(),
        );
        g.bench_function(format!("{id}/{COMMIT_BATCH}_puts_synced"), |b| {
            b.iter_batched(
                &mut batch_of_fresh_keys,
                |batch| {
                    version += 1;
                    engine.commit_durable(version, batch).expect("commit");
                },
                BatchSize::SmallInput,
            )
        });
        let st = engine.stats();
        eprintln!(
            "commit/{id}: backend {}, {version} commits, {} flushes, {} compactions, \
             write amplification {:.2}",
            st.backend,
            st.flushes,
            st.compactions,
            st.write_amplification()
        );
        engine.close().expect("close");
    }
    g.finish();
}

/// Entries and versions of the write-amplification load.
const WA_ENTRIES: usize = 2_000_000;
const WA_VERSIONS: u64 = 2_000;
/// Keys are drawn from this many, so most puts after the first few hundred
/// versions overwrite a key.
const WA_KEY_SPACE: usize = 500_000;
const WA_MEMTABLE_BYTES: usize = 4 << 20;
/// Versions kept readable: the floor follows the latest version.
const WA_RETAINED: u64 = 100;

/// Loads `WA_ENTRIES` durable puts and prints what was written per byte
/// of user data. Not a timing: the elapsed time is printed for scale.
fn write_amplification() {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED ^ 2);
    let keys: Vec<Key> = (0..WA_KEY_SPACE).map(|_| rng.gen()).collect();
    let dir = tempfile::tempdir().expect("temporary directory");
    let engine = open(
        uring(false),
        dir.path(),
        options(WA_MEMTABLE_BYTES, Options::default().cache_bytes),
    );
    let per_version = WA_ENTRIES / WA_VERSIONS as usize;
    let started = Instant::now();
    for v in 1..=WA_VERSIONS {
        let mut batch = WriteBatch::new();
        for _ in 0..per_version {
            let k = &keys[rng.gen_range(0..keys.len())];
            batch
                .put(Namespace::State, k, &value(&mut rng))
                .expect("put");
        }
        engine.commit_durable(v, batch).expect("commit");
        if v % WA_RETAINED == 0 {
            engine.prune(v + 1 - WA_RETAINED).expect("prune");
        }
    }
    engine.flush().expect("flush");
    engine.compact(false).expect("compact");
    let elapsed = started.elapsed();
    let st = engine.stats();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "engine/write_amplification: {WA_ENTRIES} puts ({VALUE_BYTES} B values) over \
         {WA_VERSIONS} durable versions, {WA_KEY_SPACE} distinct keys, last \
         {WA_RETAINED} versions retained, memtable {} MiB, backend {}, {:.1?} \
         ({:.0} puts/s)",
        WA_MEMTABLE_BYTES >> 20,
        st.backend,
        elapsed,
        WA_ENTRIES as f64 / elapsed.as_secs_f64(),
    );
    eprintln!(
        "  user {:.1} MiB; written: wal {:.1} MiB, flush {:.1} MiB, compaction {:.1} MiB; \
         {} flushes, {} compactions; {} segments, {:.1} MiB on disk",
        mib(st.user_bytes),
        mib(st.wal_bytes),
        mib(st.flush_bytes),
        mib(st.compaction_bytes),
        st.flushes,
        st.compactions,
        st.segments,
        mib(st.segment_bytes),
    );
    eprintln!(
        "  write amplification {:.2} (wal {:.2} + flush {:.2} + compaction {:.2})",
        st.write_amplification(),
        st.wal_bytes as f64 / st.user_bytes.max(1) as f64,
        st.flush_bytes as f64 / st.user_bytes.max(1) as f64,
        st.compaction_bytes as f64 / st.user_bytes.max(1) as f64,
    );
    engine.close().expect("close");
}

/// True when no filter was given or one of the given ones is part of `id`
/// (criterion's filters are regular expressions; a plain substring is
/// what this looks for).
fn wanted(id: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filters.is_empty() || filters.iter().any(|f| id.contains(f.as_str()))
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
}

criterion_group! {
    name = engine;
    config = config();
    targets = reads, commits
}

fn main() {
    engine();
    if wanted("engine/write_amplification") {
        write_amplification();
    }
    Criterion::default().configure_from_args().final_summary();
}
