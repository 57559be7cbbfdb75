//! The `verity` command line.
//!
//! `verity bench` runs the benchmark: backend `verity` (the `Db`: the trie
//! over the on-disk engine, in a fresh temporary directory unless `--dir`
//! is given) and `memory` (the trie over the in-memory page store: the
//! bound for merkleization alone).

#[path = "verity/db_bench.rs"]
mod db_bench;
#[path = "verity/tools.rs"]
mod tools;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use verity::merkle::hash::thread_compressions;
use verity::{verify, KeyHash, MemPageStore, Trie};

/// The benchmark allocates and frees many page-sized objects per block;
/// mimalloc keeps that off the critical path (the library itself leaves the
/// allocator to the program that links it).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "verity",
    version,
    about = "Verity: a versioned, authenticated state store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmark the store.
    Bench(BenchArgs),
    /// Versions, roots, sizes and compaction state of a store.
    Inspect(tools::InspectArgs),
    /// Verify every checksum and recompute roots from the leaves; exits
    /// non-zero on damage.
    Check(tools::CheckArgs),
    /// Read a key (and prove it).
    Get(tools::GetArgs),
}

#[derive(Parser)]
struct BenchArgs {
    /// Workloads to run, comma separated: load, blocks, read, prove
    /// (`read` runs on the `verity` backend only).
    #[arg(default_value = "load,blocks,read,prove", value_delimiter = ',')]
    workloads: Vec<String>,
    /// Backends, comma separated: verity, memory.
    #[arg(long, default_value = "verity,memory", value_delimiter = ',')]
    backend: Vec<String>,
    /// Directory of the `verity` backend's store (default: a fresh
    /// temporary directory, removed after the run).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Block cache of the `verity` backend in MiB.
    #[arg(long)]
    cache_mb: Option<usize>,
    /// Read segment files with O_DIRECT (bypass the page cache).
    #[arg(long)]
    direct_io: bool,
    /// Keys loaded before the other workloads.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Blocks of the `blocks` workload.
    #[arg(long, default_value_t = 50)]
    blocks: u64,
    /// Operations per block (70% updates, 20% inserts, 10% deletes).
    #[arg(long, default_value_t = 10_000)]
    block_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 110)]
    value_size: usize,
    /// Proofs of the `prove` workload.
    #[arg(long, default_value_t = 20_000)]
    proofs: usize,
    /// Seed of every random choice (printed; a fresh one when absent).
    #[arg(long)]
    seed: Option<u64>,
}

struct Workload {
    rng: ChaCha8Rng,
    live: Vec<KeyHash>,
    value_size: usize,
}

impl Workload {
    fn value(&mut self) -> [u8; 32] {
        let mut v = vec![0u8; self.value_size];
        self.rng.fill(&mut v[..]);
        verity::value_hash(&v)
    }

    fn new_key(&mut self) -> KeyHash {
        let k: [u8; 32] = self.rng.gen();
        verity::key_hash(&k)
    }
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn all_compressions() -> u64 {
    rayon::broadcast(|_| thread_compressions())
        .iter()
        .sum::<u64>()
        + thread_compressions()
}

/// Nanoseconds of one 64-byte keyed BLAKE3 hash on this core.
fn blake3_ns() -> f64 {
    let key = [7u8; 32];
    let mut input = [1u8; 64];
    let n = 2_000_000u32;
    let start = Instant::now();
    for _ in 0..n {
        let h = blake3::keyed_hash(&key, &input);
        input[..32].copy_from_slice(h.as_bytes());
    }
    std::hint::black_box(input);
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

fn bench(args: BenchArgs) -> Result<()> {
    for b in &args.backend {
        if !["verity", "memory"].contains(&b.as_str()) {
            bail!("unknown backend {b:?}; available: verity, memory");
        }
    }
    for w in &args.workloads {
        if !["load", "blocks", "read", "prove"].contains(&w.as_str()) {
            bail!("unknown workload {w:?}; available: load, blocks, read, prove");
        }
    }
    if args.block_size == 0 {
        bail!("--block-size must be at least 1");
    }
    let seed = args.seed.unwrap_or_else(|| rand::thread_rng().gen());
    let threads = rayon::current_num_threads();
    println!("verity bench: seed {seed}, {threads} threads");
    println!(
        "keys {}, blocks {} x {} ops, value size {} B",
        args.keys, args.blocks, args.block_size, args.value_size
    );
    for b in &args.backend {
        println!();
        match b.as_str() {
            "verity" => match &args.dir {
                Some(dir) => db_bench::run(&args, seed, dir)?,
                None => {
                    let tmp = tempfile::tempdir()?;
                    db_bench::run(&args, seed, tmp.path())?;
                }
            },
            _ => bench_memory(&args, seed, threads)?,
        }
    }
    Ok(())
}

fn bench_memory(args: &BenchArgs, seed: u64, threads: usize) -> Result<()> {
    println!("backend memory");
    let ns = blake3_ns();
    println!("blake3: {ns:.0} ns per 64-byte keyed hash on one core");

    let mut w = Workload {
        rng: ChaCha8Rng::seed_from_u64(seed),
        live: Vec::new(),
        value_size: args.value_size,
    };
    let trie = Trie::new(MemPageStore::new());
    let mut version = 0u64;

    // load: the keys in blocks of --block-size (rounded up to at least 10k
    // per block so a large load does not take thousands of versions).
    let load_block = args.block_size.max(10_000);
    let start = Instant::now();
    let mut loaded = 0u64;
    while loaded < args.keys {
        let n = (args.keys - loaded).min(load_block as u64) as usize;
        let mut batch: Vec<_> = (0..n).map(|_| (w.new_key(), Some(w.value()))).collect();
        batch.sort_unstable_by_key(|u| u.0);
        batch.dedup_by(|a, b| a.0 == b.0);
        w.live.extend(batch.iter().map(|u| u.0));
        let out = trie.update(version, version + 1, &batch)?;
        trie.source().apply(&out)?;
        version += 1;
        loaded += n as u64;
    }
    let load_time = start.elapsed();
    if args.workloads.iter().any(|x| x == "load") {
        let stats = trie.source().stats();
        println!(
            "load    {:>10.0} keys/s   ({} keys in {} versions, {:.2?}; {} pages, {:.1} record bytes/key)",
            args.keys as f64 / load_time.as_secs_f64(),
            args.keys,
            version,
            load_time,
            stats.live_pages,
            stats.record_bytes as f64 / args.keys.max(1) as f64
        );
    }

    if args.workloads.iter().any(|x| x == "blocks") && args.blocks > 0 {
        let mut latencies = Vec::new();
        let mut total = Duration::ZERO;
        let mut updates = 0usize;
        let mut compressions = 0u64;
        let mut record_bytes = 0usize;
        let (mut bases, mut deltas) = (0usize, 0usize);
        let (mut read_time, mut compute_time, mut store_time) =
            (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        for _ in 0..args.blocks {
            let mut batch = Vec::with_capacity(args.block_size);
            for _ in 0..args.block_size {
                let r: f64 = w.rng.gen();
                if w.live.is_empty() || (0.7..0.9).contains(&r) {
                    let k = w.new_key();
                    w.live.push(k);
                    batch.push((k, Some(w.value())));
                } else if r < 0.7 {
                    let k = w.live[w.rng.gen_range(0..w.live.len())];
                    batch.push((k, Some(w.value())));
                } else {
                    let i = w.rng.gen_range(0..w.live.len());
                    batch.push((w.live.swap_remove(i), None));
                }
            }
            batch.sort_by_key(|u| u.0);
            // The last operation on a key wins.
            batch.reverse();
            batch.dedup_by(|a, b| a.0 == b.0);
            batch.reverse();
            let before = all_compressions();
            let start = Instant::now();
            let out = trie.update(version, version + 1, &batch)?;
            let merkleized = start.elapsed();
            trie.source().apply(&out)?;
            let took = start.elapsed();
            read_time += out.stats.read_time;
            compute_time += out.stats.compute_time;
            store_time += took - merkleized;
            compressions += all_compressions() - before;
            version += 1;
            latencies.push(took);
            total += took;
            updates += batch.len();
            record_bytes += out.writes.iter().map(|p| p.record.len()).sum::<usize>();
            bases += out.stats.bases;
            deltas += out.stats.deltas;
        }
        latencies.sort();
        let per_update = compressions as f64 / updates as f64;
        let rate = updates as f64 / total.as_secs_f64();
        let bound = threads as f64 * 1e9 / (ns * per_update);
        println!(
            "blocks  {:>10.0} updates/s merkleized  (p50 {:.2?}, p99 {:.2?}, max {:.2?} per block)",
            rate,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0)
        );
        println!(
            "        {per_update:.1} compressions/update; hashing bound on {threads} cores {bound:.0} updates/s: {:.0}% of it",
            100.0 * rate / bound
        );
        println!(
            "        time: {:.0}% reading pages, {:.0}% computing, {:.0}% storing records",
            100.0 * read_time.as_secs_f64() / total.as_secs_f64(),
            100.0 * compute_time.as_secs_f64() / total.as_secs_f64(),
            100.0 * store_time.as_secs_f64() / total.as_secs_f64()
        );
        println!(
            "        {:.1} record bytes/update; {} base pages, {} deltas",
            record_bytes as f64 / updates as f64,
            bases,
            deltas
        );
    }

    if args.workloads.iter().any(|x| x == "prove") && args.proofs > 0 && !w.live.is_empty() {
        for (label, at) in [("latest", version), ("oldest", 1u64.max(version / 2))] {
            let root = trie.root(at)?;
            let mut proofs = Vec::with_capacity(args.proofs);
            let start = Instant::now();
            for _ in 0..args.proofs {
                let k = w.live[w.rng.gen_range(0..w.live.len())];
                let p = trie.prove(at, &[k])?;
                let v = trie.get(at, &k)?;
                proofs.push((k, v, p));
            }
            let prove_time = start.elapsed();
            let bytes: usize = proofs.iter().map(|p| p.2.encoded_len()).sum();
            let start = Instant::now();
            for (k, v, p) in &proofs {
                verify(&root, p, &[(*k, *v)])?;
            }
            let verify_time = start.elapsed();
            println!(
                "prove   {:>10.0} proofs/s at {label} (v{at}), {:.0} verifies/s, mean proof {:.0} B",
                proofs.len() as f64 / prove_time.as_secs_f64(),
                proofs.len() as f64 / verify_time.as_secs_f64(),
                bytes as f64 / proofs.len() as f64
            );
        }
    }
    println!(
        "final root {}",
        blake3::Hash::from(trie.root(version)?).to_hex()
    );
    Ok(())
}

fn main() -> Result<std::process::ExitCode> {
    match Cli::parse().command {
        Command::Bench(args) => bench(args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Inspect(args) => tools::inspect(args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Check(args) => tools::check(args),
        Command::Get(args) => tools::get(args).map(|()| std::process::ExitCode::SUCCESS),
    }
}
