//! The memory cost of a page version, without the trie: what writing
//! about 9,300 new page versions a block costs when each only copies
//! memory, the way a 10k-update block at 1M keys does (BENCHMARKS.md).
//!
//! A pool of `PAGES` (default 65,536, the pages at nibble depth 4 of 1M
//! keys) stand-in pages, each a 1,456-byte struct (the size of
//! `verity::merkle::Page`), an array of 400 bytes of its own (its packed
//! slots) and 1 KiB of shared leaves. A block picks `PER_BLOCK` (default
//! 9,300) of them at random and, on rayon's pool, makes a version of
//! each: a new struct copied from the old one, a new own array copied
//! from the old one, the shared leaves' reference count taken, one word
//! of each changed, and a 192-byte record; the block's versions are then
//! dropped (untimed), as the merkleization example drops each block's
//! output. Each pattern runs the same blocks, after an untimed one.
//! Printed: a block's time, and the time of a thread a version takes
//! (the block's time on every thread of the pool, shared out among its
//! versions), for that pattern and for lighter ones:
//! `cargo run --release --example page_version_floor`.
//!
//! Nothing here hashes or decides anything: it is the floor that copying
//! a page per version sets on this machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// The same allocator as the `verity` binary and the merkleization
/// example.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Words of the stand-in page struct: 1,456 bytes.
const STRUCT_WORDS: usize = 182;
/// Words of a page's own array: 400 bytes.
const OWN_WORDS: usize = 50;
/// Words of a page's shared leaves: 1 KiB.
const LEAF_WORDS: usize = 128;
/// Bytes of a version's record.
const RECORD_BYTES: usize = 192;

/// A stand-in page.
struct Page {
    body: Box<[u64; STRUCT_WORDS]>,
    own: Vec<u64>,
    leaves: Arc<[u64]>,
}

/// What a version copies and allocates.
#[derive(Clone, Copy)]
struct Pattern {
    name: &'static str,
    /// Copy the own array into an allocation of its own.
    own: bool,
    /// Take a reference to the shared leaves.
    leaves: bool,
    /// Allocate a record.
    record: bool,
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A version of `old`, as `pattern` says.
fn version(old: &Page, i: usize, pattern: Pattern) -> (Page, Option<Vec<u8>>) {
    let mut body = Box::new(*old.body);
    body[i % STRUCT_WORDS] += 1;
    let mut own = Vec::new();
    if pattern.own {
        own.reserve_exact(old.own.len() + 2);
        own.extend_from_slice(&old.own);
        own[i % OWN_WORDS] += 1;
    }
    let leaves = if pattern.leaves {
        old.leaves.clone()
    } else {
        EMPTY.with(Arc::clone)
    };
    let record = pattern
        .record
        .then(|| vec![(body[0] + leaves.first().copied().unwrap_or(0)) as u8; RECORD_BYTES]);
    (Page { body, own, leaves }, record)
}

thread_local! {
    /// The leaves of a version that takes no reference to its page's.
    static EMPTY: Arc<[u64]> = Arc::from(&[][..]);
}

fn main() {
    let pages = env("PAGES", 65_536);
    let per_block = env("PER_BLOCK", 9_300);
    let blocks = env("BLOCKS", 100).max(1);
    let seed = env("SEED", 7) as u64;
    println!(
        "{pages} pages, {per_block} versions a block, {blocks} blocks, seed {seed}, {} threads",
        rayon::current_num_threads()
    );
    let pool: Vec<Page> = (0..pages)
        .map(|i| Page {
            body: Box::new([i as u64; STRUCT_WORDS]),
            own: vec![i as u64; OWN_WORDS],
            leaves: vec![i as u64; LEAF_WORDS].into(),
        })
        .collect();
    let patterns = [
        Pattern {
            name: "struct, own array, leaves' reference, record",
            own: true,
            leaves: true,
            record: true,
        },
        Pattern {
            name: "struct, own array, record",
            own: true,
            leaves: false,
            record: true,
        },
        Pattern {
            name: "struct and record",
            own: false,
            leaves: false,
            record: true,
        },
        Pattern {
            name: "struct alone",
            own: false,
            leaves: false,
            record: false,
        },
    ];
    for pattern in patterns {
        // Each pattern gets the same picks, and an untimed block first
        // (the allocator's first use of its memory).
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut wall = Duration::ZERO;
        for block in 0..=blocks {
            let mut picks: Vec<usize> = (0..per_block).map(|_| rng.gen_range(0..pages)).collect();
            picks.sort_unstable();
            let t = Instant::now();
            let out: Vec<(Page, Option<Vec<u8>>)> = picks
                .par_iter()
                .with_min_len(64)
                .map(|&i| version(&pool[i], i, pattern))
                .collect();
            if block > 0 {
                wall += t.elapsed();
            }
            // Untimed, as the merkleization example's "merkleizing".
            drop(out);
        }
        // Every thread of the pool is busy while a block runs: a version
        // takes the block's time on all of them, shared out.
        let versions = (blocks * per_block) as f64;
        let threads = rayon::current_num_threads() as f64;
        println!(
            "{:<48} {:7.2} ms a block, {:6.0} ns of a thread a version",
            pattern.name,
            wall.as_secs_f64() * 1e3 / blocks as f64,
            wall.as_secs_f64() * threads * 1e9 / versions,
        );
    }
}
