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
//! Two more patterns measure layouts a version could take instead: the
//! page kept whole as one block of 2,880 bytes (its struct, slots and
//! leaves together, nothing shared) and copied, and an overlay, a
//! 320-byte patch that copies nothing of the old page but holds a
//! reference to it and reads five of its lines.
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
static GLOBAL: verity::alloc::Allocator = verity::alloc::Allocator;

/// Words of the stand-in page struct: 1,456 bytes.
const STRUCT_WORDS: usize = 182;
/// Words of a page's own array: 400 bytes.
const OWN_WORDS: usize = 50;
/// Words of a page's shared leaves: 1 KiB.
const LEAF_WORDS: usize = 128;
/// Bytes of a version's record.
const RECORD_BYTES: usize = 192;
/// Words of a page kept as one block: its struct, packed slots and
/// leaves together, 2,880 bytes.
const ONE_BLOCK_WORDS: usize = STRUCT_WORDS + OWN_WORDS + LEAF_WORDS;
/// Words of an overlay version's patch: 320 bytes (a slot of 40 bytes,
/// the four hashes on its binary tree path, a leaf, room for more).
const PATCH_WORDS: usize = 40;
/// Lines of the old struct an overlay version reads: the first (its
/// count and header), the slot's, and three of its binary tree.
const OVERLAY_LINES: usize = 5;

/// A stand-in page.
struct Page {
    body: Box<[u64; STRUCT_WORDS]>,
    own: Vec<u64>,
    leaves: Arc<[u64]>,
}

/// How a version is kept.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// A copy of the struct, with the parts `own` and `leaves` say.
    Copy,
    /// The whole page (struct, own array and leaves) as one block of
    /// `ONE_BLOCK_WORDS`, nothing shared, copied.
    OneBlock,
    /// No copy of the struct: a small allocation of `PATCH_WORDS` that
    /// holds a reference to the old page (its count taken) and reads
    /// `OVERLAY_LINES` of its lines.
    Overlay,
}

/// What a version copies and allocates.
#[derive(Clone, Copy)]
struct Pattern {
    name: &'static str,
    layout: Layout,
    /// With [`Layout::Copy`]: copy the own array into an allocation of
    /// its own.
    own: bool,
    /// With [`Layout::Copy`]: take a reference to the shared leaves.
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

/// A version of a page: a copy, or an overlay on the old one.
enum Version {
    Copy(Page),
    Overlay(Arc<Page>, Box<[u64; PATCH_WORDS]>),
    OneBlock(Box<[u64; ONE_BLOCK_WORDS]>),
}

impl Version {
    /// A word of the version, read back (untimed) so that every version
    /// is one the program uses.
    fn word(&self) -> u64 {
        match self {
            Version::Copy(p) => p.body[1] + p.own.first().copied().unwrap_or(0),
            Version::Overlay(base, patch) => base.body[0] + patch[1],
            Version::OneBlock(block) => block[1],
        }
    }
}

/// An overlay version of page `i`, `old`: its lines read, its count
/// taken, a patch; and a record if `pattern` says so.
fn overlay(old: &Arc<Page>, i: usize, pattern: Pattern) -> (Version, Option<Vec<u8>>) {
    let mut patch = Box::new([0u64; PATCH_WORDS]);
    let stride = STRUCT_WORDS / OVERLAY_LINES;
    for (l, w) in patch.iter_mut().take(OVERLAY_LINES).enumerate() {
        *w = old.body[(l * stride + i) % STRUCT_WORDS] + 1;
    }
    let record = pattern.record.then(|| vec![patch[0] as u8; RECORD_BYTES]);
    (Version::Overlay(old.clone(), patch), record)
}

/// A version of page `i` kept as one block, `old`.
fn one_block(
    old: &[u64; ONE_BLOCK_WORDS],
    i: usize,
    pattern: Pattern,
) -> (Version, Option<Vec<u8>>) {
    let mut block = Box::new(*old);
    block[i % ONE_BLOCK_WORDS] += 1;
    let record = pattern.record.then(|| vec![block[0] as u8; RECORD_BYTES]);
    (Version::OneBlock(block), record)
}

/// A version of `old`, as `pattern` says.
fn version(old: &Arc<Page>, i: usize, pattern: Pattern) -> (Version, Option<Vec<u8>>) {
    if pattern.layout == Layout::Overlay {
        return overlay(old, i, pattern);
    }
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
    (Version::Copy(Page { body, own, leaves }), record)
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
    let pool: Vec<Arc<Page>> = (0..pages)
        .map(|i| {
            Arc::new(Page {
                body: Box::new([i as u64; STRUCT_WORDS]),
                own: vec![i as u64; OWN_WORDS],
                leaves: vec![i as u64; LEAF_WORDS].into(),
            })
        })
        .collect();
    let patterns = [
        Pattern {
            name: "struct, own array, leaves' reference, record",
            layout: Layout::Copy,
            own: true,
            leaves: true,
            record: true,
        },
        Pattern {
            name: "struct, own array, record",
            layout: Layout::Copy,
            own: true,
            leaves: false,
            record: true,
        },
        Pattern {
            name: "struct and record",
            layout: Layout::Copy,
            own: false,
            leaves: false,
            record: true,
        },
        Pattern {
            name: "struct alone",
            layout: Layout::Copy,
            own: false,
            leaves: false,
            record: false,
        },
        Pattern {
            name: "one block of 2,880 bytes, record",
            layout: Layout::OneBlock,
            own: false,
            leaves: false,
            record: true,
        },
        Pattern {
            name: "overlay on the old page, record",
            layout: Layout::Overlay,
            own: false,
            leaves: false,
            record: true,
        },
        Pattern {
            name: "overlay on the old page alone",
            layout: Layout::Overlay,
            own: false,
            leaves: false,
            record: false,
        },
    ];
    for pattern in patterns {
        // Each pattern gets the same picks, and an untimed block first
        // (the allocator's first use of its memory).
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // The pages as one block each, made only for the pattern that
        // uses them (so the others run on the same memory as before).
        let blocks_pool: Vec<Box<[u64; ONE_BLOCK_WORDS]>> = if pattern.layout == Layout::OneBlock {
            (0..pages)
                .map(|i| Box::new([i as u64; ONE_BLOCK_WORDS]))
                .collect()
        } else {
            Vec::new()
        };
        let mut wall = Duration::ZERO;
        for block in 0..=blocks {
            let mut picks: Vec<usize> = (0..per_block).map(|_| rng.gen_range(0..pages)).collect();
            picks.sort_unstable();
            let t = Instant::now();
            let out: Vec<(Version, Option<Vec<u8>>)> = picks
                .par_iter()
                .with_min_len(64)
                .map(|&i| {
                    if pattern.layout == Layout::OneBlock {
                        one_block(&blocks_pool[i], i, pattern)
                    } else {
                        version(&pool[i], i, pattern)
                    }
                })
                .collect();
            if block > 0 {
                wall += t.elapsed();
            }
            // Untimed, as the merkleization example's "merkleizing".
            std::hint::black_box(out.iter().map(|(v, _)| v.word()).sum::<u64>());
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
