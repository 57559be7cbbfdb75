//! Criterion benches of the page formats: encoding and decoding base pages
//! and deltas, and applying a delta.

#![allow(missing_docs)] // criterion_group! generates undocumented functions.

use criterion::{criterion_group, criterion_main, Criterion};
use verity::codec::page::{PageDelta, PageImage, PageRecord, SlotPos, Terminal};

/// A page like the leaf pages of a 1M-key tree: about 15 leaves.
fn page(seed: u8, leaves: u16) -> PageImage {
    let entries = (0..leaves)
        .filter_map(|i| {
            let pos = SlotPos::new(1, i)?;
            let mut key_hash = [seed; 32];
            key_hash[0] = (i as u8) << 4;
            Some((
                pos,
                Terminal::Leaf {
                    key_hash,
                    value_hash: [seed ^ i as u8; 32],
                },
            ))
        })
        .collect();
    PageImage {
        levels: 2,
        entries,
        hashes: Vec::new(),
    }
}

fn benches(c: &mut Criterion) {
    let old = page(1, 15);
    let mut new = old.clone();
    if let Terminal::Leaf { value_hash, .. } = &mut new.entries[3].1 {
        value_hash[0] ^= 0xff;
    }
    new.entries.remove(9);
    let base = PageRecord::Base(old.clone()).encode();
    let delta = PageDelta::between(&old, &new);
    let delta_bytes = PageRecord::Delta(delta.clone()).encode();

    let mut g = c.benchmark_group("page");
    g.bench_function("encode base (15 leaves)", |b| {
        b.iter(|| PageRecord::Base(old.clone()).encode())
    });
    g.bench_function("decode base (15 leaves)", |b| {
        b.iter(|| PageRecord::decode(&base).expect("decode"))
    });
    g.bench_function("diff into delta", |b| {
        b.iter(|| PageDelta::between(&old, &new))
    });
    g.bench_function("encode delta", |b| {
        b.iter(|| PageRecord::Delta(delta.clone()).encode())
    });
    g.bench_function("decode delta", |b| {
        b.iter(|| PageRecord::decode(&delta_bytes).expect("decode"))
    });
    g.bench_function("apply delta", |b| {
        b.iter(|| delta.apply(&old).expect("apply"))
    });
    g.finish();
}

criterion_group!(codec, benches);
criterion_main!(codec);
