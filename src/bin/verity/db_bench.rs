//! `verity bench --backend verity`: the workloads on the `Db` (the trie
//! over the on-disk engine) in a directory of its own.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use verity::{key_hash, value_hash, verify, CommitHandle, Db, Options, WriteBatch};

use super::{percentile, BenchArgs};

/// Keys and values of the run.
struct Keys {
    rng: ChaCha8Rng,
    live: Vec<[u8; 32]>,
    value_size: usize,
}

impl Keys {
    fn value(&mut self) -> Vec<u8> {
        let mut v = vec![0u8; self.value_size];
        self.rng.fill(&mut v[..]);
        v
    }

    /// A block of the `blocks` mix: 70% updates, 20% inserts, 10% deletes.
    fn block(&mut self, ops: usize) -> Result<WriteBatch> {
        let mut batch = WriteBatch::new();
        for _ in 0..ops {
            let r: f64 = self.rng.gen();
            if self.live.is_empty() || (0.7..0.9).contains(&r) {
                let k: [u8; 32] = self.rng.gen();
                self.live.push(k);
                let v = self.value();
                batch.put(&k, &v)?;
            } else if r < 0.7 {
                let k = self.live[self.rng.gen_range(0..self.live.len())];
                let v = self.value();
                batch.put(&k, &v)?;
            } else {
                let i = self.rng.gen_range(0..self.live.len());
                batch.delete(&self.live.swap_remove(i))?;
            }
        }
        Ok(batch)
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Waits for each handle's durability on a thread of its own and records
/// the latency from its commit call.
type Waiter = std::thread::JoinHandle<Result<(Vec<Duration>, Instant)>>;

fn durability_waiter() -> (mpsc::Sender<(Instant, CommitHandle)>, Waiter) {
    let (tx, rx) = mpsc::channel::<(Instant, CommitHandle)>();
    let waiter = std::thread::spawn(move || {
        let mut latencies = Vec::new();
        let mut last = Instant::now();
        for (at, h) in rx {
            h.wait_durable()?;
            last = Instant::now();
            latencies.push(last - at);
        }
        Ok((latencies, last))
    });
    (tx, waiter)
}

pub(crate) fn run(args: &BenchArgs, seed: u64, dir: &Path) -> Result<()> {
    let mut opts = Options::default();
    if let Some(mb) = args.cache_mb {
        opts.cache_bytes = mb << 20;
    }
    opts.direct_io = args.direct_io;
    let db = Db::open(dir, opts)?;
    println!(
        "backend verity: directory {}, I/O {}",
        dir.display(),
        db.stats().engine.backend
    );
    let mut keys = Keys {
        rng: ChaCha8Rng::seed_from_u64(seed),
        live: Vec::new(),
        value_size: args.value_size,
    };
    let wants = |w: &str| args.workloads.iter().any(|x| x == w);

    // load: --keys keys in blocks of at least 10k, committed without
    // waiting.
    let load_block = args.block_size.max(10_000) as u64;
    let start = Instant::now();
    let mut loaded = 0u64;
    let mut last = None;
    while loaded < args.keys {
        let n = (args.keys - loaded).min(load_block);
        let mut batch = WriteBatch::new();
        for _ in 0..n {
            let k: [u8; 32] = keys.rng.gen();
            let v = keys.value();
            batch.put(&k, &v)?;
            keys.live.push(k);
        }
        last = Some(db.commit(batch)?);
        loaded += n;
    }
    if let Some(h) = &last {
        h.wait_durable()?;
    }
    let load_time = start.elapsed();
    if wants("load") {
        println!(
            "load    {:>10.0} keys/s durable  ({} keys in {} versions, {:.2?}; {:.0} bytes on disk per key)",
            args.keys as f64 / load_time.as_secs_f64(),
            args.keys,
            db.stats().latest_durable,
            load_time,
            dir_bytes(dir) as f64 / args.keys.max(1) as f64
        );
    }

    if wants("blocks") && args.blocks > 0 {
        let written_before = db.stats().engine;
        // Pipelined: each block staged while the previous ones commit.
        let (tx, waiter) = durability_waiter();
        let start = Instant::now();
        let mut updates = 0usize;
        for _ in 0..args.blocks {
            let batch = keys.block(args.block_size)?;
            updates += batch.len();
            let at = Instant::now();
            let h = db.commit(batch)?;
            tx.send((at, h))?;
        }
        drop(tx);
        let (mut latencies, end) = waiter
            .join()
            .map_err(|_| anyhow::anyhow!("durability waiter panicked"))??;
        let pipelined = updates as f64 / (end - start).as_secs_f64();
        latencies.sort();
        let stats = db.stats().engine;
        let written = (stats.wal_bytes + stats.flush_bytes + stats.compaction_bytes)
            - (written_before.wal_bytes
                + written_before.flush_bytes
                + written_before.compaction_bytes);
        println!(
            "blocks  {:>10.0} updates/s merkleized and durable, pipelined  (commit to durable p50 {:.2?}, p99 {:.2?}, max {:.2?})",
            pipelined,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0)
        );
        println!(
            "        {:.0} bytes written per update; {:.0} bytes on disk per live key",
            written as f64 / updates.max(1) as f64,
            dir_bytes(dir) as f64 / keys.live.len().max(1) as f64
        );
        // One at a time: wait for each block before staging the next.
        let n = (args.blocks / 4).max(1);
        let start = Instant::now();
        let mut one_updates = 0usize;
        let mut one_lat = Vec::new();
        for _ in 0..n {
            let batch = keys.block(args.block_size)?;
            one_updates += batch.len();
            let at = Instant::now();
            db.commit(batch)?.wait_durable()?;
            one_lat.push(at.elapsed());
        }
        let one = one_updates as f64 / start.elapsed().as_secs_f64();
        one_lat.sort();
        println!(
            "        {:>10.0} updates/s one block at a time ({n} blocks, p50 {:.2?}, p99 {:.2?}): pipelining gains {:.2}x",
            one,
            percentile(&one_lat, 0.5),
            percentile(&one_lat, 0.99),
            pipelined / one
        );
    }

    if wants("prove") && args.proofs > 0 && !keys.live.is_empty() {
        let latest = db.stats().latest_staged;
        for (label, at) in [("latest", latest), ("older", 1u64.max(latest / 2))] {
            let snap = db.snapshot(at)?;
            let root = snap.root()?;
            let mut proofs = Vec::with_capacity(args.proofs);
            let start = Instant::now();
            for _ in 0..args.proofs {
                let k = keys.live[keys.rng.gen_range(0..keys.live.len())];
                let p = snap.prove(&k)?;
                let v = snap.get(&k)?;
                proofs.push((k, v, p));
            }
            let prove_time = start.elapsed();
            let bytes: usize = proofs.iter().map(|p| p.2.encoded_len()).sum();
            let start = Instant::now();
            for (k, v, p) in &proofs {
                verify(
                    &root,
                    p,
                    &[(key_hash(k), v.as_ref().map(|v| value_hash(v)))],
                )?;
            }
            println!(
                "prove   {:>10.0} proofs/s at {label} (v{at}), {:.0} verifies/s, mean proof {:.0} B",
                proofs.len() as f64 / prove_time.as_secs_f64(),
                proofs.len() as f64 / start.elapsed().as_secs_f64(),
                bytes as f64 / proofs.len() as f64
            );
        }
    }
    let latest = db.latest()?;
    println!(
        "final root {} (version {})",
        blake3::Hash::from(latest.root()?).to_hex(),
        latest.version()
    );
    // Reads last: the commits made while reading depend on timing, so the
    // final root above is the seed's alone.
    if wants("read") && !keys.live.is_empty() {
        let live = Arc::new(keys.live.clone());
        let mut single = 0.0;
        for in_flight in [false, true] {
            for threads in [1usize, 2] {
                let rate = read_phase(&db, &live, threads, in_flight, seed, args)?;
                if threads == 1 && !in_flight {
                    single = rate;
                }
                println!(
                    "read    {:>10.0} reads/s, {threads} thread{}, {}  ({:.2}x of 1 thread idle)",
                    rate,
                    if threads == 1 { " " } else { "s" },
                    if in_flight {
                        "commits in flight"
                    } else {
                        "no commit in flight"
                    },
                    rate / single
                );
            }
        }
    }

    let s = db.stats();
    println!(
        "engine: {} segments, {} flushes, {} compactions, block cache {:.0}% hits, page cache {:.0}% hits",
        s.engine.segments,
        s.engine.flushes,
        s.engine.compactions,
        100.0 * s.engine.cache_hits as f64 / (s.engine.cache_hits + s.engine.cache_misses).max(1) as f64,
        100.0 * s.page_cache_hits as f64 / (s.page_cache_hits + s.page_cache_misses).max(1) as f64
    );
    db.close()?;
    Ok(())
}

/// Point reads of live keys on the latest snapshot for one second on
/// `threads` threads; with `in_flight`, a writer commits blocks meanwhile.
fn read_phase(
    db: &Db,
    live: &Arc<Vec<[u8; 32]>>,
    threads: usize,
    in_flight: bool,
    seed: u64,
    args: &BenchArgs,
) -> Result<f64> {
    let snap = db.latest()?;
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let writer = in_flight.then(|| {
        let db = db.clone();
        let stop = stop.clone();
        let (value_size, block) = (args.value_size, args.block_size);
        std::thread::spawn(move || -> Result<()> {
            let mut keys = Keys {
                rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed),
                live: Vec::new(),
                value_size,
            };
            let mut last = None;
            while !stop.load(Ordering::Acquire) {
                last = Some(db.commit(keys.block(block)?)?);
            }
            if let Some(h) = last {
                h.wait_durable()?;
            }
            Ok(())
        })
    });
    let start = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let snap = snap.clone();
                let (live, stop, reads) = (live.clone(), stop.clone(), reads.clone());
                s.spawn(move || -> Result<()> {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ t as u64);
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..64 {
                            let k = &live[rng.gen_range(0..live.len())];
                            std::hint::black_box(snap.get(k)?);
                        }
                        n += 64;
                    }
                    reads.fetch_add(n, Ordering::Relaxed);
                    Ok(())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Release);
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
        }
        Ok(())
    })?;
    let elapsed = start.elapsed();
    if let Some(w) = writer {
        w.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
    }
    Ok(reads.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64())
}
