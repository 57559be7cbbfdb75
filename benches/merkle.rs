//! Criterion benches of the trie over the in-memory page store:
//! merkleizing a 10k-update block on a 1M-key tree (and, for its bound,
//! one hash compression), proof generation and verification.
//! `VERITY_BENCH_KEYS` changes the tree size.

#![allow(missing_docs)] // criterion_group! generates undocumented functions.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use verity::{verify, KeyHash, MemPageStore, Trie, Update};

/// The same allocator as the `verity` binary, so these figures match its
/// `bench` (the library leaves the allocator to the program that links it).
#[global_allocator]
static GLOBAL: verity::alloc::Allocator = verity::alloc::Allocator;

fn keys_from_env() -> usize {
    std::env::var("VERITY_BENCH_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000)
}

/// A tree of `n` keys at version `n / 100_000 + 1` and its live keys.
fn tree(n: usize, rng: &mut ChaCha8Rng) -> (Trie<MemPageStore>, Vec<KeyHash>, u64) {
    let trie = Trie::new(MemPageStore::new());
    let mut keys = Vec::with_capacity(n);
    let mut version = 0;
    let mut left = n;
    while left > 0 {
        let take = left.min(100_000);
        let mut batch: Vec<Update> = (0..take).map(|_| (rng.gen(), Some(rng.gen()))).collect();
        batch.sort_unstable_by_key(|u| u.0);
        batch.dedup_by(|a, b| a.0 == b.0);
        keys.extend(batch.iter().map(|u| u.0));
        let out = trie.update(version, version + 1, &batch).expect("update");
        trie.source().apply(&out).expect("apply");
        version += 1;
        left -= take;
    }
    (trie, keys, version)
}

fn block(keys: &[KeyHash], size: usize, rng: &mut ChaCha8Rng) -> Vec<Update> {
    let mut batch: Vec<Update> = (0..size)
        .map(|i| match i % 10 {
            0..=6 => (keys[rng.gen_range(0..keys.len())], Some(rng.gen())),
            7 | 8 => (rng.gen(), Some(rng.gen())),
            _ => (keys[rng.gen_range(0..keys.len())], None),
        })
        .collect();
    batch.sort_unstable_by_key(|u| u.0);
    batch.dedup_by(|a, b| a.0 == b.0);
    batch
}

fn benches(c: &mut Criterion) {
    // The hashing bound of merkleization: one leaf hash is one BLAKE3
    // compression of 64 bytes, as every internal hash is.
    let mut g = c.benchmark_group("hash");
    let (a, b) = ([1u8; 32], [2u8; 32]);
    g.bench_function("one compression (64-byte keyed hash)", |bench| {
        bench.iter(|| verity::merkle::hash::leaf_hash(criterion::black_box(&a), &b))
    });
    // Many at once, side by side in the SIMD lanes (an update rehashes the
    // pages it changes this way, a binary level at a time).
    for lanes in [4usize, 8, 16, 64] {
        let blocks: Vec<[u8; 64]> = (0..lanes)
            .map(|i| verity::merkle::hash::block(&[i as u8; 32], &b))
            .collect();
        let mut out = vec![[0u8; 32]; lanes];
        g.throughput(Throughput::Elements(lanes as u64));
        g.bench_function(format!("{lanes} compressions side by side"), |bench| {
            bench.iter(|| {
                verity::merkle::hash::leaf_hash_many(criterion::black_box(&blocks), &mut out)
            })
        });
    }
    g.finish();

    let n = keys_from_env();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (trie, keys, version) = tree(n, &mut rng);

    let mut g = c.benchmark_group(format!("merkleize/{n}-keys"));
    g.sample_size(10);
    let batch = block(&keys, 10_000, &mut rng);
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("10k-update block", |b| {
        b.iter(|| trie.update(version, version + 1, &batch).expect("update"))
    });
    g.finish();

    let mut g = c.benchmark_group(format!("proof/{n}-keys"));
    let root = trie.root(version).expect("root");
    g.bench_function("prove one key", |b| {
        b.iter_batched(
            || keys[rng.gen_range(0..keys.len())],
            |k| trie.prove(version, &[k]).expect("prove"),
            BatchSize::SmallInput,
        )
    });
    let samples: Vec<_> = (0..256)
        .map(|_| {
            let k = keys[rng.gen_range(0..keys.len())];
            let v = trie.get(version, &k).expect("get");
            (k, v, trie.prove(version, &[k]).expect("prove"))
        })
        .collect();
    let mut i = 0;
    g.bench_function("verify one key", |b| {
        b.iter(|| {
            let (k, v, p) = &samples[i % samples.len()];
            i += 1;
            verify(&root, p, &[(*k, *v)]).expect("verify")
        })
    });
    let mut many: Vec<KeyHash> = (0..64)
        .map(|_| keys[rng.gen_range(0..keys.len())])
        .collect();
    many.sort();
    many.dedup();
    g.bench_function("prove 64 keys (multiproof)", |b| {
        b.iter(|| trie.prove(version, &many).expect("prove"))
    });
    g.finish();
}

criterion_group!(merkle, benches);
criterion_main!(merkle);
