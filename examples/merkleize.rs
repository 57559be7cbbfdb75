//! Merkleization against its hashing bound: builds a tree of `KEYS` keys
//! (default 1M) over the in-memory page store, then merkleizes `BLOCKS`
//! blocks (default 100) of 10k operations (70% updates, 20% inserts, 10%
//! deletes) on its newest version, each against the same version as the
//! criterion bench does. Prints, per block, the wall time with and without
//! dropping the block's output, the CPU time, the BLAKE3 compressions per
//! update (counted on every thread), one compression's time on this
//! machine, and the share of the hashing bound the blocks reach:
//! `cargo run --release --example merkleize`. The bound is printed twice:
//! with the trie's own compression call (the stricter), and with
//! `blake3::hash` of one 64-byte input, the loop `BENCH.md` measures.
//!
//! The blocks on one version cycle through `BATCHES` (default 8) batches
//! of operations; `BATCHES=1` repeats one, so that its old pages stay in
//! the CPU's caches from block to block.
//!
//! With `CHAIN=1` the blocks are a chain instead: each is applied to the
//! store and the next one built on it, as a node does, and the time the
//! store takes to apply a block is printed too.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use verity::merkle::hash::{leaf_hash, thread_compressions};
use verity::{KeyHash, MemPageStore, Trie, Update};

/// The same allocator as the `verity` binary and the criterion benches.
#[global_allocator]
static GLOBAL: verity::alloc::Allocator = verity::alloc::Allocator;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// CPU time of this process so far (user and system), from `/proc`.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // The kernel's USER_HZ is 100 on every Linux this runs on.
    Some(Duration::from_millis(ticks * 10))
}

/// The mean time of one call of `f`, over two million calls on this
/// thread.
fn time_one<T>(f: impl Fn() -> T) -> Duration {
    let n = 2_000_000u32;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(f());
    }
    t.elapsed() / n
}

/// Compressions counted so far on every thread of rayon's pool and on
/// this one.
fn compressions() -> u64 {
    rayon::broadcast(|_| thread_compressions())
        .iter()
        .sum::<u64>()
        + thread_compressions()
}

fn main() {
    let keys_wanted = env("KEYS", 1_000_000);
    let blocks = env("BLOCKS", 100).max(1);
    let chain = env("CHAIN", 0) != 0;
    let seed = env("SEED", 7) as u64;
    println!("{keys_wanted} keys, {blocks} blocks, seed {seed}");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let trie = Trie::new(MemPageStore::new());
    let mut keys: Vec<KeyHash> = Vec::with_capacity(keys_wanted);
    let mut version = 0;
    while keys.len() < keys_wanted {
        let take = (keys_wanted - keys.len()).min(100_000);
        let mut batch: Vec<Update> = (0..take).map(|_| (rng.gen(), Some(rng.gen()))).collect();
        batch.sort_unstable_by_key(|u| u.0);
        batch.dedup_by(|a, b| a.0 == b.0);
        keys.extend(batch.iter().map(|u| u.0));
        let out = trie.update(version, version + 1, &batch).expect("update");
        trie.source().apply(&out).expect("apply");
        version += 1;
    }
    // `BATCHES` (eight) blocks in turn against one version; in a chain, a
    // block of its own for each version (a block repeated on its own
    // result would write values the keys already have).
    let kinds = if chain {
        blocks
    } else {
        env("BATCHES", 8).max(1)
    };
    let batches: Vec<Vec<Update>> = (0..kinds)
        .map(|_| {
            let mut batch: Vec<Update> = (0..10_000)
                .map(|i| match i % 10 {
                    0..=6 => (keys[rng.gen_range(0..keys.len())], Some(rng.gen())),
                    7 | 8 => (rng.gen(), Some(rng.gen())),
                    _ => (keys[rng.gen_range(0..keys.len())], None),
                })
                .collect();
            batch.sort_unstable_by_key(|u| u.0);
            batch.dedup_by(|a, b| a.0 == b.0);
            batch
        })
        .collect();

    let (mut updates, mut merkleize) = (0usize, Duration::ZERO);
    let hashes_before = compressions();
    let cpu_before = cpu_time();
    let started = Instant::now();
    let mut applying = Duration::ZERO;
    for i in 0..blocks {
        let batch = &batches[i % batches.len()];
        let t = Instant::now();
        let out = trie.update(version, version + 1, batch).expect("update");
        merkleize += t.elapsed();
        updates += batch.len();
        if chain {
            let t = Instant::now();
            trie.source().apply(&out).expect("apply");
            applying += t.elapsed();
            version += 1;
        }
        drop(out);
    }
    let wall = started.elapsed();
    let cpu = cpu_time().zip(cpu_before).map(|(a, b)| a - b);
    let per_update = (compressions() - hashes_before) as f64 / updates as f64;

    // One compression: a leaf hash of 64 bytes, timed on one core; and
    // the bound as `BENCH.md` measures it, `blake3::hash` of one 64-byte
    // input (one compression, with the hasher's setup and output around
    // it).
    let (a, b) = ([1u8; 32], [2u8; 32]);
    let one = time_one(|| leaf_hash(std::hint::black_box(&a), &b));
    let input = [3u8; 64];
    let one_hash = time_one(|| blake3::hash(std::hint::black_box(&input)));

    let per_block = |d: Duration| d.as_secs_f64() * 1e3 / blocks as f64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let bound = cores as f64 / (per_update * one.as_secs_f64());
    let hash_bound = cores as f64 / (per_update * one_hash.as_secs_f64());
    let rate = updates as f64 / merkleize.as_secs_f64();
    if chain {
        println!(
            "a chain: each block applied to the store, {:.2} ms a block",
            per_block(applying)
        );
    }
    let dropped = if chain {
        "applied and dropped"
    } else {
        "dropped"
    };
    println!(
        "per block: {:.2} ms merkleizing, {:.2} ms with the output {dropped}, {} CPU",
        per_block(merkleize),
        per_block(wall),
        cpu.map_or("n/a".into(), |c| format!(
            "{:.2} ms ({:.2} cores)",
            per_block(c),
            c.as_secs_f64() / wall.as_secs_f64()
        )),
    );
    println!(
        "{rate:.0} updates/s; {per_update:.2} compressions per update; one compression {:.1} ns",
        one.as_secs_f64() * 1e9
    );
    println!(
        "hashing bound on {cores} cores: {bound:.0} updates/s; measured / bound: {:.1}%",
        100.0 * rate / bound
    );
    println!(
        "with BENCH.md's compression (blake3::hash of 64 bytes, {:.1} ns): bound {hash_bound:.0} updates/s; measured / bound: {:.1}%",
        one_hash.as_secs_f64() * 1e9,
        100.0 * rate / hash_bound
    );
}
