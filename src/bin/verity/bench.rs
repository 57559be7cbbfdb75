//! `verity bench`: the workloads of the benchmark, run on each backend in
//! turn with the same seeded key and value streams, and the results.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Zipf};
use verity::{Hash, Options};

use super::backend::{Backend, MemoryBackend, Ops, Pending, Reader, VerityBackend};
use super::report::{self, Metric, Run, Series};

/// A workload of the benchmark.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub(crate) enum Workload {
    /// Insert `--keys` keys in blocks.
    Load,
    /// Blocks of 70% updates, 20% inserts, 10% deletes, committed
    /// asynchronously.
    Blocks,
    /// Threads reading a snapshot of an earlier block while the next one
    /// commits.
    Executor,
    /// Point reads on the latest and on random retained versions.
    Read,
    /// Inclusion proofs, latest and historical, each verified.
    Prove,
    /// Reads and proofs by version age over the retained history.
    History,
}

/// A backend of the benchmark.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub(crate) enum Kind {
    /// The `Db`: the trie pushed into Verity's own engine.
    Verity,
    /// The same trie, node by node in RocksDB (build with `--features
    /// rocksdb`).
    Rocksdb,
    /// The trie over the in-memory page store: merkleization alone.
    Memory,
    /// NOMT, a peer: its binary trie in its own store, latest version
    /// only (build with `--features nomt`; Linux with io_uring).
    Nomt,
    /// The Jellyfish Merkle Tree (`jmt` crate), a peer, over RocksDB
    /// (build with `--features jmt`).
    Jmt,
}

/// Sizes chosen together.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub(crate) enum Preset {
    /// 1M keys, 100 blocks of 10k operations: about a minute per backend.
    Default,
    /// 10M keys, 100 blocks of 10k operations.
    Large,
}

#[cfg(feature = "rocksdb")]
const DEFAULT_BACKENDS: &str = "verity,rocksdb";
#[cfg(not(feature = "rocksdb"))]
const DEFAULT_BACKENDS: &str = "verity,memory";

/// `verity bench`.
#[derive(Parser, Debug)]
pub(crate) struct BenchArgs {
    /// Workloads to run, comma separated (`load` always runs first: the
    /// others need the loaded keys).
    #[arg(
        value_enum,
        value_delimiter = ',',
        default_value = "load,blocks,executor,read,prove,history"
    )]
    pub(crate) workloads: Vec<Workload>,
    /// Backends, comma separated; ratios are to the first.
    #[arg(long, value_enum, value_delimiter = ',', default_value = DEFAULT_BACKENDS)]
    pub(crate) backend: Vec<Kind>,
    /// Sizes: `default` (1M keys) or `large` (10M keys).
    #[arg(long, value_enum, default_value = "default")]
    pub(crate) preset: Preset,
    /// Keys loaded before the other workloads (default: from the preset).
    #[arg(long)]
    pub(crate) keys: Option<u64>,
    /// Blocks of the `blocks` workload (`executor` runs a quarter as many).
    #[arg(long)]
    pub(crate) blocks: Option<u64>,
    /// Operations per block.
    #[arg(long)]
    pub(crate) block_size: Option<usize>,
    /// Value size in bytes.
    #[arg(long, default_value_t = 110)]
    pub(crate) value_size: usize,
    /// Choose the keys of updates and reads Zipf-distributed with this
    /// exponent (default: uniform).
    #[arg(long)]
    pub(crate) zipf: Option<f64>,
    /// Reader threads of `read` and `executor`.
    #[arg(long, default_value_t = 2)]
    pub(crate) threads: usize,
    /// Cache memory per backend in MiB. `verity` splits it between its
    /// block cache and decoded pages (see `--block-cache-percent`), both
    /// counted in bytes of memory; `rocksdb` gets all of it as block cache.
    #[arg(long, default_value_t = 1024)]
    pub(crate) cache_mb: usize,
    /// Percent of `--cache-mb` that `verity` gives its block cache, the
    /// rest holding decoded pages (1-99). Default: 25, or 90 with
    /// `--direct-io`: a cache far smaller than the trie hits decoded pages
    /// rarely, and the same memory holds about three times as many pages
    /// as stored records (measured in BENCHMARKS.md).
    #[arg(long)]
    pub(crate) block_cache_percent: Option<usize>,
    /// Read files with O_DIRECT (bypass the page cache).
    #[arg(long)]
    pub(crate) direct_io: bool,
    /// Keep this many versions readable (default: all).
    #[arg(long)]
    pub(crate) retain: Option<u64>,
    /// Proofs of the `prove` workload per version, at least (the first
    /// ones are verified and compared between backends; `history` proves
    /// a quarter as many a version).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) proofs: usize,
    /// Seconds each timed phase of `read`, `prove` and `history` lasts,
    /// at least.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) read_secs: f64,
    /// Seed of every random choice (printed; a fresh one when absent).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Directory for the stores, one subdirectory per backend, kept after
    /// the run (default: a fresh temporary directory, removed after).
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    /// Check each backend's roots against those an earlier run with the
    /// same seed and sizes wrote with `--json` to this file (the check of
    /// determinism for backends that have no other backend of their trie
    /// family to agree with).
    #[arg(long)]
    pub(crate) check_roots: Option<PathBuf>,
    /// Write SVG charts into this directory.
    #[arg(long)]
    pub(crate) plot: Option<PathBuf>,
}

/// The sizes and options of a run, after the preset.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) seed: u64,
    pub(crate) keys: u64,
    pub(crate) blocks: u64,
    pub(crate) block_size: usize,
    pub(crate) value_size: usize,
    pub(crate) zipf: Option<f64>,
    pub(crate) threads: usize,
    pub(crate) cache_mb: usize,
    pub(crate) block_cache_percent: usize,
    pub(crate) direct_io: bool,
    pub(crate) retain: Option<u64>,
    pub(crate) proofs: usize,
    pub(crate) read_secs: f64,
    pub(crate) workloads: Vec<Workload>,
}

impl Config {
    /// The run's configuration; an error names the bad argument.
    pub(crate) fn from_args(args: &BenchArgs) -> Result<Config> {
        let (keys, blocks, block_size) = match args.preset {
            Preset::Default => (1_000_000, 100, 10_000),
            Preset::Large => (10_000_000, 100, 10_000),
        };
        let c = Config {
            seed: args.seed.unwrap_or_else(|| rand::thread_rng().gen()),
            keys: args.keys.unwrap_or(keys),
            blocks: args.blocks.unwrap_or(blocks),
            block_size: args.block_size.unwrap_or(block_size),
            value_size: args.value_size,
            zipf: args.zipf,
            threads: args.threads,
            cache_mb: args.cache_mb,
            block_cache_percent: args.block_cache_percent.unwrap_or(if args.direct_io {
                90
            } else {
                25
            }),
            direct_io: args.direct_io,
            retain: args.retain,
            proofs: args.proofs,
            read_secs: args.read_secs,
            workloads: args.workloads.clone(),
        };
        if c.block_size == 0 {
            bail!("--block-size must be at least 1");
        }
        if c.keys == 0 {
            bail!("--keys must be at least 1");
        }
        if c.threads == 0 {
            bail!("--threads must be at least 1");
        }
        if c.cache_mb == 0 {
            bail!("--cache-mb must be at least 1");
        }
        if !(1..=99).contains(&c.block_cache_percent) {
            bail!("--block-cache-percent must be between 1 and 99");
        }
        if c.retain == Some(0) {
            bail!("--retain must be at least 1");
        }
        if let Some(s) = c.zipf {
            if !(s.is_finite() && s > 0.0) {
                bail!("--zipf must be a positive number");
            }
        }
        if !(c.read_secs.is_finite() && c.read_secs > 0.0) {
            bail!("--read-secs must be a positive number");
        }
        #[cfg(not(feature = "rocksdb"))]
        if args.backend.contains(&Kind::Rocksdb) {
            bail!("this build has no rocksdb backend: run `cargo run --release --features rocksdb -- bench`");
        }
        #[cfg(not(feature = "nomt"))]
        if args.backend.contains(&Kind::Nomt) {
            bail!("this build has no nomt backend: run `cargo run --release --features nomt -- bench`");
        }
        #[cfg(not(feature = "jmt"))]
        if args.backend.contains(&Kind::Jmt) {
            bail!(
                "this build has no jmt backend: run `cargo run --release --features jmt -- bench`"
            );
        }
        if c.value_size > verity::MAX_VALUE_LEN {
            bail!("--value-size must be at most {}", verity::MAX_VALUE_LEN);
        }
        if c.block_size.max(10_000) > verity::MAX_BATCH_WRITES {
            bail!("--block-size must be at most {}", verity::MAX_BATCH_WRITES);
        }
        Ok(c)
    }

    fn wants(&self, w: Workload) -> bool {
        self.workloads.contains(&w)
    }

    /// Operations per block of the load.
    fn load_block(&self) -> usize {
        self.block_size.max(10_000)
    }
}

/// The seeded key and value stream: every backend sees the same one.
struct Gen {
    rng: ChaCha8Rng,
    live: Vec<[u8; 32]>,
    value_size: usize,
    zipf: Option<f64>,
}

impl Gen {
    fn new(seed: u64, c: &Config) -> Gen {
        Gen {
            rng: ChaCha8Rng::seed_from_u64(seed),
            live: Vec::new(),
            value_size: c.value_size,
            zipf: c.zipf,
        }
    }

    fn value(&mut self) -> Vec<u8> {
        let mut v = vec![0u8; self.value_size];
        self.rng.fill(&mut v[..]);
        v
    }

    /// An index into `live`, uniform or Zipf (low indices hot).
    fn pick(&mut self) -> usize {
        pick(&mut self.rng, self.live.len(), self.zipf)
    }

    fn inserts(&mut self, n: usize) -> Ops {
        (0..n)
            .map(|_| {
                let k: [u8; 32] = self.rng.gen();
                self.live.push(k);
                (k.to_vec(), Some(self.value()))
            })
            .collect()
    }

    /// A block of the `blocks` mix: 70% updates, 20% inserts, 10% deletes.
    fn block(&mut self, n: usize) -> Ops {
        let mut ops = Vec::with_capacity(n);
        for _ in 0..n {
            let r: f64 = self.rng.gen();
            if self.live.is_empty() || (0.7..0.9).contains(&r) {
                let k: [u8; 32] = self.rng.gen();
                self.live.push(k);
                ops.push((k.to_vec(), Some(self.value())));
            } else if r < 0.7 {
                let i = self.pick();
                let k = self.live[i];
                ops.push((k.to_vec(), Some(self.value())));
            } else {
                let i = self.pick();
                ops.push((self.live.swap_remove(i).to_vec(), None));
            }
        }
        ops
    }
}

fn pick(rng: &mut ChaCha8Rng, len: usize, zipf: Option<f64>) -> usize {
    match zipf.and_then(|s| Zipf::new(len as u64, s).ok()) {
        Some(z) => (z.sample(rng) as usize).clamp(1, len) - 1,
        None => rng.gen_range(0..len),
    }
}

/// Bytes of the files under `dir`.
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Bytes this process has caused to be written to storage
/// (`write_bytes` of `/proc/self/io`), if the kernel reports it.
fn io_write_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/io").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Resident memory of this process (`VmRSS` of `/proc/self/status`), in
/// bytes, if the kernel reports it.
fn resident_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib << 10)
}

fn hex(h: &Hash) -> String {
    blake3::Hash::from(*h).to_hex().to_string()
}

fn progress(len: u64, what: &str) -> ProgressBar {
    if !std::io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} {msg} ({eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what.to_string());
    bar
}

/// One committed version as the tracker saw it.
struct Done {
    ops: usize,
    latency: Duration,
    at: Instant,
}

/// A version to wait for: when its commit was called, its operations.
type Tracked = (Instant, usize, Box<dyn Pending>);

/// Waits for each handed-over version on a thread of its own, in order:
/// records its latency from the commit call, checks its root against the
/// first backend's of the same trie family, and samples the bytes on disk.
struct Tracker {
    tx: Option<mpsc::Sender<Tracked>>,
    thread: Option<std::thread::JoinHandle<Result<Vec<Done>>>>,
    failed: Arc<AtomicBool>,
}

/// What the tracker shares with the run.
struct Roots {
    /// Roots so far, `roots[v - 1]` of version `v`.
    mine: parking_lot::Mutex<Vec<Hash>>,
    /// The roots of the first backend of the same trie family, to agree
    /// with.
    expected: Option<Arc<Vec<Hash>>>,
    expected_name: &'static str,
    /// `(version, bytes on disk)` after each version.
    disk: parking_lot::Mutex<Vec<(u64, u64)>>,
}

impl Tracker {
    fn start(name: &'static str, roots: Arc<Roots>, dir: Option<PathBuf>) -> Tracker {
        let (tx, rx) = mpsc::channel::<Tracked>();
        let failed = Arc::new(AtomicBool::new(false));
        let flag = failed.clone();
        let thread = std::thread::spawn(move || -> Result<Vec<Done>> {
            let mut done = Vec::new();
            for (start, ops, pending) in rx {
                let version = pending.version();
                let root = pending
                    .wait()
                    .inspect_err(|_| flag.store(true, Ordering::Release))?;
                let at = Instant::now();
                {
                    let mut mine = roots.mine.lock();
                    if mine.len() as u64 + 1 != version {
                        flag.store(true, Ordering::Release);
                        bail!("{name}: version {version} committed after {}", mine.len());
                    }
                    if let Some(exp) = &roots.expected {
                        if let Some(e) = exp.get(mine.len()) {
                            if *e != root {
                                flag.store(true, Ordering::Release);
                                bail!(
                                    "ROOTS DIFFER at version {version}: {name} {} but {} {}",
                                    hex(&root),
                                    roots.expected_name,
                                    hex(e)
                                );
                            }
                        }
                    }
                    mine.push(root);
                }
                if let Some(d) = &dir {
                    roots.disk.lock().push((version, dir_bytes(d)));
                }
                done.push(Done {
                    ops,
                    latency: at - start,
                    at,
                });
            }
            Ok(done)
        });
        Tracker {
            tx: Some(tx),
            thread: Some(thread),
            failed,
        }
    }

    fn send(&self, start: Instant, ops: usize, pending: Box<dyn Pending>) -> Result<()> {
        if self.failed.load(Ordering::Acquire) {
            bail!("a commit failed (the error follows when the phase ends)");
        }
        self.tx
            .as_ref()
            .ok_or_else(|| anyhow!("tracker finished"))?
            .send((start, ops, pending))
            .map_err(|_| anyhow!("the commit tracker stopped"))
    }

    fn finish(mut self) -> Result<Vec<Done>> {
        drop(self.tx.take());
        self.thread
            .take()
            .ok_or_else(|| anyhow!("tracker finished"))?
            .join()
            .map_err(|_| anyhow!("the commit tracker panicked"))?
    }
}

/// Runs the tracker over a phase; stops early and reports the tracker's
/// error if one shows.
fn tracked(
    name: &'static str,
    roots: &Arc<Roots>,
    dir: Option<&Path>,
    phase: impl FnOnce(&Tracker) -> Result<()>,
) -> Result<Vec<Done>> {
    let tracker = Tracker::start(name, roots.clone(), dir.map(Path::to_path_buf));
    let r = phase(&tracker);
    let done = tracker.finish();
    match (r, done) {
        (_, Err(e)) => Err(e),
        (Err(e), Ok(_)) => Err(e),
        (Ok(()), Ok(d)) => Ok(d),
    }
}

fn histogram() -> Result<Histogram<u64>> {
    Ok(Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)?)
}

fn open_backend(kind: Kind, c: &Config, dir: Option<&Path>) -> Result<Box<dyn Backend>> {
    let cache = c.cache_mb << 20;
    match kind {
        Kind::Verity => {
            let dir = dir.ok_or_else(|| anyhow!("verity needs a directory"))?;
            let mut opts = Options::default();
            opts.split_cache(cache, c.block_cache_percent);
            opts.direct_io = c.direct_io;
            opts.retain_versions = c.retain;
            Ok(Box::new(VerityBackend::open(dir, opts)?))
        }
        Kind::Memory => Ok(Box::new(MemoryBackend::new(c.retain))),
        #[cfg(feature = "rocksdb")]
        Kind::Rocksdb => {
            let dir = dir.ok_or_else(|| anyhow!("rocksdb needs a directory"))?;
            Ok(Box::new(super::rocks::RocksBackend::open(
                dir,
                cache,
                c.direct_io,
                c.retain,
            )?))
        }
        #[cfg(not(feature = "rocksdb"))]
        Kind::Rocksdb => bail!(
            "this build has no rocksdb backend: build with `cargo run --release --features rocksdb -- bench`"
        ),
        #[cfg(feature = "nomt")]
        Kind::Nomt => {
            let dir = dir.ok_or_else(|| anyhow!("nomt needs a directory"))?;
            Ok(Box::new(super::nomt::NomtBackend::open(
                dir, cache, c.keys, c.seed,
            )?))
        }
        #[cfg(not(feature = "nomt"))]
        Kind::Nomt => bail!(
            "this build has no nomt backend: build with `cargo run --release --features nomt -- bench`"
        ),
        #[cfg(feature = "jmt")]
        Kind::Jmt => {
            let dir = dir.ok_or_else(|| anyhow!("jmt needs a directory"))?;
            Ok(Box::new(super::jmt::JmtBackend::open(
                dir,
                cache,
                c.direct_io,
                c.retain,
            )?))
        }
        #[cfg(not(feature = "jmt"))]
        Kind::Jmt => bail!(
            "this build has no jmt backend: build with `cargo run --release --features jmt -- bench`"
        ),
    }
}

/// Runs every workload on one backend; its roots are checked against the
/// first of `earlier` of the same trie family. With `remove_after` (the
/// bench's own temporary directory) the backend's store is deleted once
/// its figures are taken, so the disk holds one backend's store at a time
/// (at 10M keys the four backends together need more than most hosts
/// have free).
fn run_backend(
    kind: Kind,
    c: &Config,
    base: &Path,
    earlier: &[Run],
    remove_after: bool,
) -> Result<Run> {
    let dir = (kind != Kind::Memory).then(|| base.join(format!("{kind:?}").to_lowercase()));
    if let Some(d) = &dir {
        if d.exists() && std::fs::read_dir(d)?.next().is_some() {
            bail!(
                "{} is not empty: the bench needs fresh stores (pick another --dir)",
                d.display()
            );
        }
        std::fs::create_dir_all(d)?;
    }
    let backend = open_backend(kind, c, dir.as_deref())?;
    let name = backend.name();
    let family = backend.family();
    let settings = backend.settings();
    println!("\n== {name}: {settings}");
    let first = earlier.iter().find(|r| r.family == family);
    let roots = Arc::new(Roots {
        mine: parking_lot::Mutex::new(Vec::new()),
        expected: first.map(|f| Arc::new(f.roots.clone())),
        expected_name: first.map(|f| f.name).unwrap_or(""),
        disk: parking_lot::Mutex::new(Vec::new()),
    });
    let mut run = Run {
        name,
        family,
        settings,
        metrics: Vec::new(),
        series: Series::default(),
        roots: Vec::new(),
        proof_digest: None,
    };
    let mut gen = Gen::new(c.seed, c);
    let r = workloads(
        backend.as_ref(),
        c,
        dir.as_deref(),
        &roots,
        &mut gen,
        &mut run,
    );
    let closed = backend.close();
    r?;
    closed?;
    if let (true, Some(d)) = (remove_after, &dir) {
        std::fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
    }
    run.roots = roots.mine.lock().clone();
    run.series.disk_bytes = roots.disk.lock().clone();
    Ok(run)
}

fn workloads(
    backend: &dyn Backend,
    c: &Config,
    dir: Option<&Path>,
    roots: &Arc<Roots>,
    gen: &mut Gen,
    run: &mut Run,
) -> Result<()> {
    let name = backend.name();
    let size = || dir.map(dir_bytes);

    // load
    let load_blocks = c.keys.div_ceil(c.load_block() as u64);
    let bar = progress(c.keys, "load");
    let start = Instant::now();
    let done = tracked(name, roots, dir, |t| {
        let mut left = c.keys;
        while left > 0 {
            let n = left.min(c.load_block() as u64) as usize;
            let ops = gen.inserts(n);
            let at = Instant::now();
            t.send(at, n, backend.commit(ops)?)?;
            left -= n as u64;
            bar.inc(n as u64);
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    let load_time = done.last().map_or(start, |d| d.at) - start;
    if c.wants(Workload::Load) {
        let m = &mut run.metrics;
        m.push(Metric::new(
            Workload::Load,
            "keys_per_s",
            "keys/s, durable",
            c.keys as f64 / load_time.as_secs_f64(),
        ));
        m.push(Metric::opt(
            Workload::Load,
            "disk_bytes_per_key",
            "bytes on disk per key",
            size().map(|b| b as f64 / c.keys as f64),
        ));
        println!(
            "load: {} keys in {load_blocks} versions, {:.2?}",
            c.keys, load_time
        );
    }

    // blocks
    if c.wants(Workload::Blocks) && c.blocks > 0 {
        let written = io_write_bytes();
        let pages_before = backend.page_cache();
        let bar = progress(c.blocks, "blocks");
        let start = Instant::now();
        let mut updates = 0usize;
        let done = tracked(name, roots, dir, |t| {
            for _ in 0..c.blocks {
                let ops = gen.block(c.block_size);
                updates += ops.len();
                let at = Instant::now();
                let n = ops.len();
                t.send(at, n, backend.commit(ops)?)?;
                bar.inc(1);
            }
            Ok(())
        })?;
        bar.finish_and_clear();
        let end = done.last().map_or(start, |d| d.at);
        let written = written.and_then(|w| Some(io_write_bytes()? - w));
        let mut h = histogram()?;
        let mut prev = start;
        for d in &done {
            h.record(d.latency.as_micros().max(1) as u64)?;
            let gap = (d.at - prev).as_secs_f64().max(1e-9);
            run.series.block_rate.push(d.ops as f64 / gap);
            prev = d.at;
        }
        let mut lat: Vec<f64> = done.iter().map(|d| d.latency.as_secs_f64() * 1e3).collect();
        lat.sort_by(f64::total_cmp);
        run.series.latency_ms = lat;
        let (p50, p99, max) = (
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3,
            h.max() as f64 / 1e3,
        );
        let m = &mut run.metrics;
        let w = Workload::Blocks;
        m.push(Metric::new(
            w,
            "updates_per_s",
            "updates/s, merkleized and durable",
            updates as f64 / (end - start).as_secs_f64(),
        ));
        m.push(Metric::new(
            w,
            "commit_p50_ms",
            "commit latency p50 (ms)",
            p50,
        ));
        m.push(Metric::new(
            w,
            "commit_p99_ms",
            "commit latency p99 (ms)",
            p99,
        ));
        m.push(Metric::new(
            w,
            "commit_max_ms",
            "commit latency max (ms)",
            max,
        ));
        m.push(Metric::new(
            w,
            "commit_p99_over_p50",
            "commit latency p99/p50",
            p99 / p50.max(1e-9),
        ));
        m.push(Metric::opt(
            w,
            "bytes_written_per_update",
            "bytes written per update",
            written.map(|b| b as f64 / updates.max(1) as f64),
        ));
        m.push(Metric::opt(
            w,
            "disk_bytes_per_live_key",
            "bytes on disk per live key",
            size().map(|b| b as f64 / gen.live.len().max(1) as f64),
        ));
        let hit_rate = backend
            .page_cache()
            .zip(pages_before)
            .map(|(after, before)| {
                let hits = after.0 - before.0;
                hits as f64 / (hits + after.1 - before.1).max(1) as f64
            });
        m.push(Metric::opt(
            w,
            "page_cache_hit_rate",
            "decoded-page cache hit rate",
            hit_rate,
        ));
        m.push(Metric::opt(
            w,
            "resident_mib",
            "resident memory of the process (MiB)",
            resident_bytes().map(|b| (b >> 20) as f64),
        ));
        println!(
            "blocks: {} blocks of {} ops in {:.2?}",
            c.blocks,
            c.block_size,
            end - start
        );
    }

    // executor
    if c.wants(Workload::Executor) && c.blocks > 0 {
        executor(backend, c, dir, roots, gen, run)?;
    }

    let latest = roots.mine.lock().len() as u64;
    if let Some(root) = roots.mine.lock().last() {
        println!("final root {} (version {latest})", hex(root));
    }

    if c.wants(Workload::Read) {
        read(backend, c, gen, latest, run)?;
    }
    if c.wants(Workload::Prove) && c.proofs > 0 {
        prove(backend, c, gen, latest, run)?;
    }
    if c.wants(Workload::History) {
        history(backend, c, gen, latest, run)?;
    }
    Ok(())
}

/// One thread per seed reads `per_thread` keys of `live` from `reader`.
fn read_round(
    reader: &Arc<dyn Reader>,
    live: &Arc<Vec<[u8; 32]>>,
    seeds: &[u64],
    per_thread: usize,
    zipf: Option<f64>,
) -> Result<()> {
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = seeds
            .iter()
            .map(|&seed| {
                let (reader, live) = (reader.clone(), live.clone());
                s.spawn(move || -> Result<()> {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed);
                    for _ in 0..per_thread {
                        let k = &live[pick(&mut rng, live.len(), zipf)];
                        std::hint::black_box(reader.get(k)?);
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow!("reader panicked"))??;
        }
        Ok(())
    })
}

/// T threads each read `block_size / T` keys from `snapshot(v - 1)` while
/// `commit(v - 1)` is in flight, then block `v` is committed.
fn executor(
    backend: &dyn Backend,
    c: &Config,
    dir: Option<&Path>,
    roots: &Arc<Roots>,
    gen: &mut Gen,
    run: &mut Run,
) -> Result<()> {
    let name = backend.name();
    let n = (c.blocks / 4).max(1);
    let per_thread = (c.block_size / c.threads).max(1);
    let live = Arc::new(gen.live.clone());
    let bar = progress(n, "executor");
    let mut block_times = Vec::new();
    let (mut reads, mut read_time) = (0u64, Duration::ZERO);
    let mut rng = ChaCha8Rng::seed_from_u64(c.seed ^ 0xe8ec);
    let start = Instant::now();
    tracked(name, roots, dir, |t| {
        let ops = gen.block(c.block_size);
        let mut in_flight = backend.commit(ops)?;
        for i in 0..n {
            let block_start = Instant::now();
            let v = in_flight.version();
            let reader = backend.reader(v)?;
            let seeds: Vec<u64> = (0..c.threads).map(|_| rng.gen()).collect();
            let read_start = Instant::now();
            read_round(&reader, &live, &seeds, per_thread, c.zipf)?;
            read_time += read_start.elapsed();
            reads += (per_thread * c.threads) as u64;
            let ops = gen.block(c.block_size);
            let len = ops.len();
            let at = Instant::now();
            let next = backend.commit(ops)?;
            t.send(at, len, std::mem::replace(&mut in_flight, next))?;
            block_times.push(block_start.elapsed());
            bar.set_position(i + 1);
        }
        t.send(Instant::now(), 0, in_flight)?;
        Ok(())
    })?;
    bar.finish_and_clear();
    let total = start.elapsed();
    let during = reads as f64 / read_time.as_secs_f64().max(1e-9);

    // The same reads with nothing in flight.
    let latest = roots.mine.lock().len() as u64;
    let reader = backend.reader(latest)?;
    let mut rng = ChaCha8Rng::seed_from_u64(c.seed ^ 0x1d1e);
    let idle_start = Instant::now();
    let mut idle_reads = 0u64;
    for _ in 0..n.min(8) {
        let seeds: Vec<u64> = (0..c.threads).map(|_| rng.gen()).collect();
        read_round(&reader, &live, &seeds, per_thread, c.zipf)?;
        idle_reads += (per_thread * c.threads) as u64;
    }
    let idle = idle_reads as f64 / idle_start.elapsed().as_secs_f64().max(1e-9);
    let mean_ms = block_times.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e3
        / block_times.len().max(1) as f64;
    // A backend that reads a version only once it is durable reads with
    // nothing in flight: it has no figure for reads during a commit.
    let staged = backend.reads_staged();
    let w = Workload::Executor;
    let m = &mut run.metrics;
    m.push(Metric::new(w, "block_time_ms", "block time (ms)", mean_ms));
    m.push(Metric::opt(
        w,
        "reads_per_s_during_commit",
        "reads/s during commit",
        staged.then_some(during),
    ));
    m.push(Metric::new(
        w,
        "reads_per_s_idle",
        "reads/s, nothing in flight",
        idle,
    ));
    m.push(Metric::opt(
        w,
        "during_over_idle",
        "reads during commit / idle",
        staged.then_some(during / idle.max(1e-9)),
    ));
    println!(
        "executor: {n} blocks, {} threads x {per_thread} reads each, {:.2?}{}",
        c.threads,
        total,
        if staged {
            ""
        } else {
            " (sequential: this backend reads a version only once it is committed)"
        }
    );
    Ok(())
}

/// Timed point reads: returns reads/s, the latency histogram (ns) and the
/// disk reads per get.
fn timed_reads(
    backend: &dyn Backend,
    c: &Config,
    live: &Arc<Vec<[u8; 32]>>,
    threads: usize,
    versions: (u64, u64),
    seed: u64,
) -> Result<(f64, Histogram<u64>, Option<f64>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let disk_before = backend.disk_reads();
    let start = Instant::now();
    let mut merged = histogram()?;
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (live, stop, count) = (live.clone(), stop.clone(), count.clone());
                s.spawn(move || -> Result<Histogram<u64>> {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (t as u64) << 32);
                    let mut h = histogram()?;
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let v = rng.gen_range(versions.0..=versions.1);
                        let reader = backend.reader(v)?;
                        for _ in 0..64 {
                            let k = &live[pick(&mut rng, live.len(), c.zipf)];
                            let at = Instant::now();
                            std::hint::black_box(reader.get(k)?);
                            h.record(at.elapsed().as_nanos().max(1) as u64)?;
                        }
                        n += 64;
                    }
                    count.fetch_add(n, Ordering::Relaxed);
                    Ok(h)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(c.read_secs));
        stop.store(true, Ordering::Release);
        for h in handles {
            let h = h.join().map_err(|_| anyhow!("reader panicked"))??;
            merged.add(&h)?;
        }
        Ok(())
    })?;
    let elapsed = start.elapsed();
    let n = count.load(Ordering::Relaxed);
    let disk = match (disk_before, backend.disk_reads()) {
        (Some(a), Some(b)) => Some((b - a) as f64 / n.max(1) as f64),
        _ => None,
    };
    Ok((n as f64 / elapsed.as_secs_f64(), merged, disk))
}

fn read(backend: &dyn Backend, c: &Config, gen: &Gen, latest: u64, run: &mut Run) -> Result<()> {
    if gen.live.is_empty() || latest == 0 {
        return Ok(());
    }
    let live = Arc::new(gen.live.clone());
    let (one, _, disk) = timed_reads(backend, c, &live, 1, (latest, latest), c.seed ^ 1)?;
    let (many, h, _) = timed_reads(backend, c, &live, c.threads, (latest, latest), c.seed ^ 2)?;
    let hist = match backend.history() {
        true => {
            let oldest = backend.oldest();
            Some(timed_reads(backend, c, &live, c.threads, (oldest, latest), c.seed ^ 3)?.0)
        }
        false => None,
    };
    let w = Workload::Read;
    let m = &mut run.metrics;
    m.push(Metric::new(
        w,
        "reads_per_s_1_thread",
        "reads/s, latest, 1 thread",
        one,
    ));
    m.push(Metric::new(
        w,
        "reads_per_s",
        &format!("reads/s, latest, {} threads", c.threads),
        many,
    ));
    m.push(Metric::new(
        w,
        "scaling",
        &format!("{} threads / 1 thread", c.threads),
        many / one,
    ));
    m.push(Metric::opt(
        w,
        "reads_per_s_retained",
        &format!("reads/s, random retained versions, {} threads", c.threads),
        hist,
    ));
    m.push(Metric::new(
        w,
        "read_p50_us",
        "read latency p50 (us)",
        h.value_at_quantile(0.5) as f64 / 1e3,
    ));
    m.push(Metric::new(
        w,
        "read_p99_us",
        "read latency p99 (us)",
        h.value_at_quantile(0.99) as f64 / 1e3,
    ));
    m.push(Metric::opt(
        w,
        "disk_reads_per_get",
        "disk reads per get (latest)",
        disk,
    ));
    // Caches that evict only when a version commits (NOMT's) grow past
    // their budget while nothing commits: this shows it.
    m.push(Metric::opt(
        w,
        "resident_mib",
        "resident memory after the reads (MiB)",
        resident_bytes().map(|b| (b >> 20) as f64),
    ));
    Ok(())
}

/// Runs `step` (given how many times it ran before) at least `n` times
/// and for at least `min`; returns how many times it ran, and for how
/// long.
fn at_least(
    (n, min): (usize, Duration),
    mut step: impl FnMut(usize) -> Result<()>,
) -> Result<(usize, Duration)> {
    let start = Instant::now();
    let mut done = 0;
    while done < n || start.elapsed() < min {
        step(done)?;
        done += 1;
    }
    Ok((done, start.elapsed()))
}

/// Proves random keys at `version` for at least `min` and at least `n`
/// of them, and verifies the first `n`; returns proofs/s (of all),
/// verifies/s, and the mean bytes and a digest of the first `n` proofs
/// (the same keys on every backend, whatever their speed).
fn prove_at(
    backend: &dyn Backend,
    gen: &Gen,
    version: u64,
    (n, min): (usize, Duration),
    seed: u64,
    zipf: Option<f64>,
) -> Result<(f64, f64, f64, Hash)> {
    let reader = backend.reader(version)?;
    let root = reader.root()?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut proofs = Vec::with_capacity(n);
    let (done, prove_time) = at_least((n, min), |i| {
        let k = gen.live[pick(&mut rng, gen.live.len(), zipf)];
        let p = reader.prove(&k)?;
        let v = reader.get(&k)?;
        if i < n {
            proofs.push((k, v, p));
        } else {
            std::hint::black_box((v, p));
        }
        Ok(())
    })?;
    let mut digest = blake3::Hasher::new();
    let mut bytes = 0usize;
    for p in &proofs {
        let enc = p.2.encode();
        bytes += enc.len();
        digest.update(&enc);
    }
    let start = Instant::now();
    for (k, v, p) in &proofs {
        p.verify(&root, k, v.as_deref()).with_context(|| {
            format!(
                "a {} proof at version {version} does not verify",
                backend.name()
            )
        })?;
    }
    let verify_time = start.elapsed();
    Ok((
        done as f64 / prove_time.as_secs_f64(),
        n as f64 / verify_time.as_secs_f64(),
        bytes as f64 / n.max(1) as f64,
        *digest.finalize().as_bytes(),
    ))
}

fn prove(backend: &dyn Backend, c: &Config, gen: &Gen, latest: u64, run: &mut Run) -> Result<()> {
    if gen.live.is_empty() || latest == 0 {
        return Ok(());
    }
    let phase = (c.proofs, Duration::from_secs_f64(c.read_secs));
    let (rate, vrate, bytes, digest) = prove_at(backend, gen, latest, phase, c.seed ^ 4, c.zipf)?;
    let older = backend.oldest().max(latest / 2);
    let (hrate, hbytes) = match backend.history() {
        true => {
            let (r, _, b, _) = prove_at(backend, gen, older, phase, c.seed ^ 5, c.zipf)?;
            (Some(r), Some(b))
        }
        false => (None, None),
    };
    run.proof_digest = Some(digest);
    let w = Workload::Prove;
    let m = &mut run.metrics;
    m.push(Metric::new(w, "proofs_per_s", "proofs/s, latest", rate));
    m.push(Metric::new(w, "verifies_per_s", "verifies/s", vrate));
    m.push(Metric::new(
        w,
        "proof_bytes",
        "mean proof bytes, latest",
        bytes,
    ));
    m.push(Metric::opt(
        w,
        "proofs_per_s_historical",
        &format!("proofs/s, version {older}"),
        hrate,
    ));
    m.push(Metric::opt(
        w,
        "proof_bytes_historical",
        "mean proof bytes, historical",
        hbytes,
    ));
    Ok(())
}

fn history(backend: &dyn Backend, c: &Config, gen: &Gen, latest: u64, run: &mut Run) -> Result<()> {
    if gen.live.is_empty() || latest == 0 {
        return Ok(());
    }
    let oldest = backend.oldest();
    let n = (c.proofs / 4).max(1);
    let min = Duration::from_secs_f64(c.read_secs);
    for (i, age) in [0u64, 25, 50, 75, 100].into_iter().enumerate() {
        let v = latest - (latest - oldest) * age / 100;
        // A backend of the latest version only has no figures for older
        // ones.
        let figures = if age > 0 && !backend.history() {
            None
        } else {
            let reader = backend.reader(v)?;
            let mut rng = ChaCha8Rng::seed_from_u64(c.seed ^ 0x4157 ^ i as u64);
            let (done, time) = at_least((n, min), |_| {
                let k = &gen.live[pick(&mut rng, gen.live.len(), c.zipf)];
                std::hint::black_box(reader.get(k)?);
                Ok(())
            })?;
            let reads = done as f64 / time.as_secs_f64();
            let seed = c.seed ^ 0x4158 ^ i as u64;
            let (proofs, _, _, _) = prove_at(backend, gen, v, (n, min), seed, c.zipf)?;
            Some((reads, proofs))
        };
        let at = if figures.is_some() {
            format!(" (v{v})")
        } else {
            String::new()
        };
        let m = &mut run.metrics;
        m.push(Metric::opt(
            Workload::History,
            &format!("reads_per_s_age_{age}"),
            &format!("reads/s at {age}% of history back{at}"),
            figures.map(|f| f.0),
        ));
        m.push(Metric::opt(
            Workload::History,
            &format!("proofs_per_s_age_{age}"),
            &format!("proofs/s at {age}% of history back"),
            figures.map(|f| f.1),
        ));
    }
    Ok(())
}

/// `verity bench`.
pub(crate) fn bench(args: BenchArgs, c: Config) -> Result<()> {
    let mut kinds = Vec::new();
    for k in &args.backend {
        if !kinds.contains(k) {
            kinds.push(*k);
        }
    }
    println!(
        "verity bench: seed {}, {} keys, {} blocks x {} ops, values {} B, {} key choice, {} threads, cache {} MiB{}{}",
        c.seed,
        c.keys,
        c.blocks,
        c.block_size,
        c.value_size,
        match c.zipf {
            Some(s) => format!("zipf {s}"),
            None => "uniform".into(),
        },
        c.threads,
        c.cache_mb,
        if c.direct_io { ", O_DIRECT" } else { "" },
        match c.retain {
            Some(r) => format!(", {r} versions retained"),
            None => String::new(),
        }
    );
    let tmp;
    let base = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let earlier = match &args.check_roots {
        Some(path) => Some(report::EarlierRoots::read(path, &c)?),
        None => None,
    };
    let mut runs: Vec<Run> = Vec::new();
    for k in kinds {
        let run = run_backend(k, &c, &base, &runs, args.dir.is_none())?;
        let first = runs.iter().find(|r| r.family == run.family);
        if let (Some(first), Some(d)) = (first, run.proof_digest) {
            if first.proof_digest.is_some_and(|f| f != d) {
                bail!(
                    "PROOFS DIFFER: {} and {} wrote different proof bytes for the same keys",
                    first.name,
                    run.name
                );
            }
        }
        if let Some(e) = &earlier {
            e.check(&run)?;
        }
        runs.push(run);
    }
    println!();
    let mut families: Vec<&'static str> = Vec::new();
    for r in &runs {
        if !families.contains(&r.family) {
            families.push(r.family);
        }
    }
    for family in families {
        let members: Vec<&Run> = runs.iter().filter(|r| r.family == family).collect();
        if members.len() > 1 {
            println!(
                "roots agree on all {} versions across {}{}",
                members[0].roots.len(),
                members
                    .iter()
                    .map(|r| r.name)
                    .collect::<Vec<_>>()
                    .join(", "),
                if members.iter().all(|r| r.proof_digest.is_some()) {
                    "; proofs are byte-identical"
                } else {
                    ""
                }
            );
        } else if runs.len() > 1 {
            println!(
                "{}: the only backend of its trie family ({family}): its roots are not \
                 compared with the others'",
                members[0].name
            );
        }
    }
    if let Some(e) = &earlier {
        println!(
            "roots of every backend equal those of {} on all versions",
            e.path.display()
        );
    }
    println!();
    report::table(&runs);
    if let Some(path) = &args.json {
        report::json(path, &c, &runs)?;
        println!("results written to {}", path.display());
    }
    if let Some(dir) = &args.plot {
        report::plots(dir, &runs)?;
        println!("charts written to {}", dir.display());
    }
    Ok(())
}
