//! The hashing rules of the trie, byte for byte (see `docs/format.md`).
//!
//! - key hash (the leaf's path): `blake3(key)`
//! - value hash: `blake3(value)`
//! - leaf: `blake3_keyed(LEAF_KEY, key_hash || value_hash)`
//! - internal binary node: `EMPTY` if both children are `EMPTY`, else
//!   `blake3_keyed(INTERNAL_KEY, left || right)`
//! - empty subtree: `EMPTY`
//!
//! `LEAF_KEY = blake3("verity/v1/leaf")`,
//! `INTERNAL_KEY = blake3("verity/v1/internal")`,
//! `EMPTY = blake3("verity/v1/empty")`. Each hashed input is exactly 64
//! bytes, so every leaf and internal hash is one BLAKE3 compression; the keys
//! separate the domains without spending input bytes on a tag.

/// A 32-byte hash.
pub type Hash = [u8; 32];

/// `blake3(key)`: the 256-bit path of a key in the trie.
pub type KeyHash = [u8; 32];

/// `blake3(value)`.
pub type ValueHash = [u8; 32];

/// The BLAKE3 key of leaf hashes: `blake3("verity/v1/leaf")`.
pub const LEAF_KEY: Hash = [
    0x2e, 0xaa, 0x9c, 0x2d, 0x1e, 0x53, 0x25, 0xd2, 0x6b, 0x78, 0x51, 0x91, 0x8e, 0x82, 0xfc, 0xb0,
    0x26, 0x5a, 0x5a, 0x9a, 0x7b, 0xb9, 0x3b, 0x26, 0xa0, 0x64, 0x4c, 0x55, 0xbd, 0xdc, 0xd1, 0xdc,
];

/// The BLAKE3 key of internal hashes: `blake3("verity/v1/internal")`.
pub const INTERNAL_KEY: Hash = [
    0x33, 0xa2, 0x72, 0xcc, 0xd3, 0x6c, 0x69, 0xb5, 0x80, 0xca, 0x1d, 0xb2, 0xda, 0x63, 0x70, 0x14,
    0xb1, 0xa7, 0x00, 0x85, 0xed, 0xbd, 0xea, 0xf3, 0xdc, 0x79, 0xb1, 0xbc, 0xad, 0x11, 0x52, 0x92,
];

/// The hash of an empty subtree, and the root of the empty state:
/// `blake3("verity/v1/empty")`.
pub const EMPTY: Hash = [
    0xa2, 0x61, 0xcd, 0x3d, 0xf8, 0x22, 0x32, 0x0c, 0xe6, 0xdf, 0x51, 0x00, 0x09, 0x56, 0xa5, 0xd2,
    0x93, 0xbb, 0x72, 0x1e, 0xc1, 0xfe, 0xd4, 0x7e, 0x79, 0x4e, 0x36, 0xbe, 0x9d, 0x9c, 0x96, 0xd5,
];

/// `blake3(key)`.
pub fn key_hash(key: &[u8]) -> KeyHash {
    *blake3::hash(key).as_bytes()
}

/// `blake3(value)`.
pub fn value_hash(value: &[u8]) -> ValueHash {
    *blake3::hash(value).as_bytes()
}

thread_local! {
    static COMPRESSIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// BLAKE3 compressions this thread has spent on leaf and internal hashes
/// since it started (a counter for benchmarks; it costs one thread-local
/// add per hash).
pub fn thread_compressions() -> u64 {
    COMPRESSIONS.with(|c| c.get())
}

/// BLAKE3's `CHUNK_START` flag (`hash_many` sets it on an input's first
/// block).
const CHUNK_START: u8 = 1;
/// BLAKE3's `CHUNK_END` flag (`hash_many` sets it on an input's last
/// block).
const CHUNK_END: u8 = 2;

/// The BLAKE3 flags of a keyed hash whose whole input is one 64-byte
/// block: `CHUNK_START | CHUNK_END | ROOT | KEYED_HASH`.
const ONE_BLOCK_KEYED: u8 = CHUNK_START | CHUNK_END | 8 | 16;

/// A BLAKE3 key as the compression function's eight little-endian words.
const fn key_words(key: &Hash) -> [u32; 8] {
    let mut words = [0u32; 8];
    let mut i = 0;
    while i < 8 {
        words[i] = u32::from_le_bytes([key[4 * i], key[4 * i + 1], key[4 * i + 2], key[4 * i + 3]]);
        i += 1;
    }
    words
}

const LEAF_WORDS: [u32; 8] = key_words(&LEAF_KEY);
const INTERNAL_WORDS: [u32; 8] = key_words(&INTERNAL_KEY);

/// The fastest BLAKE3 compression this CPU runs (detected once).
static PLATFORM: std::sync::LazyLock<blake3::platform::Platform> =
    std::sync::LazyLock::new(blake3::platform::Platform::detect);

/// `blake3_keyed(key, a || b)`: one compression.
///
/// A 64-byte input is one block, so its keyed hash is the compression of
/// that block with the key as chaining value, counter 0 and the flags of a
/// lone, final, root chunk (`ONE_BLOCK_KEYED`). The compression is called
/// directly: through `blake3::Hasher` the same hash took about 1.75x as
/// long (its chunk state, buffer and finalization around the one
/// compression; BENCHMARKS.md). `blake3::platform` is the crate's own
/// dispatch to its SIMD compressions, public but outside its documented
/// API, so the workspace pins the crate's exact version, and the tests
/// check this function against `blake3::keyed_hash`. The compression
/// reads the block in 16-byte loads, which the stores of its two halves
/// forward to; `blake3::keyed_hash` of such a block stalled on an AVX-512
/// Xeon, where a wider load of the block waited for those stores to reach
/// the cache (BENCHMARKS.md).
#[inline]
fn keyed64(key: &[u32; 8], a: &Hash, b: &Hash) -> Hash {
    COMPRESSIONS.with(|c| c.set(c.get() + 1));
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(a);
    block[32..].copy_from_slice(b);
    let mut cv = *key;
    PLATFORM.compress_in_place(&mut cv, &block, 64, 0, ONE_BLOCK_KEYED);
    blake3::platform::le_bytes_from_words_32(&cv)
}

/// The hash of a leaf.
#[inline]
pub fn leaf_hash(key_hash: &KeyHash, value_hash: &ValueHash) -> Hash {
    keyed64(&LEAF_WORDS, key_hash, value_hash)
}

/// The hash of an internal binary node over its two children.
#[inline]
pub fn internal_hash(left: &Hash, right: &Hash) -> Hash {
    if *left == EMPTY && *right == EMPTY {
        EMPTY
    } else {
        keyed64(&INTERNAL_WORDS, left, right)
    }
}

/// The most blocks one call of [`hash_many`] hands to the compression at
/// once: the lanes of AVX-512 (AVX2 takes 8 at a time, SSE4.1 4).
const LANES: usize = 16;

/// `out[i] = blake3_keyed(key, blocks[i])` for 64-byte blocks, computed
/// several at a time in the SIMD lanes of the CPU: where one compression
/// takes about 70 ns on an AVX2 core, eight side by side take about 19 ns
/// each (BENCHMARKS.md). Like [`keyed64`], this calls `blake3::platform`
/// directly: `hash_many` with one block per input, counter 0 and the flags
/// of a lone, final, root chunk computes exactly the one-block keyed hash
/// (the tests check it against `blake3::keyed_hash`).
fn hash_many(key: &[u32; 8], blocks: &[[u8; 64]], out: &mut [Hash]) {
    assert_eq!(blocks.len(), out.len(), "one output per block");
    COMPRESSIONS.with(|c| c.set(c.get() + blocks.len() as u64));
    let degree = PLATFORM.simd_degree().clamp(1, LANES);
    for (blocks, out) in blocks.chunks(degree).zip(out.chunks_mut(degree)) {
        // A group of lanes not filled is filled with copies of the first
        // block: BLAKE3's `hash_many` computes a group of 16, 8 or 4
        // inputs at once and the rest one at a time, so 15 inputs took
        // 2.9x as long as 16 and 7 twice as long as 8 (BENCHMARKS.md).
        let lanes = match blocks.len() {
            n @ 0..=2 => n,
            n => n.next_power_of_two().min(degree),
        };
        let mut refs = [&blocks[0]; LANES];
        for (r, b) in refs.iter_mut().zip(blocks) {
            *r = b;
        }
        let compress = |into: &mut [Hash]| {
            PLATFORM.hash_many(
                &refs[..into.len()],
                key,
                0,
                blake3::IncrementCounter::No,
                ONE_BLOCK_KEYED & !(CHUNK_START | CHUNK_END),
                CHUNK_START,
                CHUNK_END,
                into.as_flattened_mut(),
            )
        };
        if lanes == blocks.len() {
            compress(out);
        } else {
            let mut wide = [EMPTY; LANES];
            compress(&mut wide[..lanes]);
            out.copy_from_slice(&wide[..blocks.len()]);
        }
    }
}

/// The 64-byte block `a || b`.
#[inline]
pub fn block(a: &Hash, b: &Hash) -> [u8; 64] {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(a);
    block[32..].copy_from_slice(b);
    block
}

/// Appends the [`block`] `a || b` to `blocks`, written in place
/// (`blocks.push(block(a, b))` builds it on the stack and copies it
/// twice: about 16 instructions a block).
#[inline]
pub(crate) fn push_block(blocks: &mut Vec<[u8; 64]>, a: &Hash, b: &Hash) {
    let at = blocks.len();
    blocks.push([0; 64]);
    let (left, right) = blocks[at].split_at_mut(32);
    left.copy_from_slice(a);
    right.copy_from_slice(b);
}

/// Leaf hashes of many leaves at once: `out[i]` is the [`leaf_hash`] of
/// `blocks[i]` (a [`block`] of a key hash and a value hash).
///
/// # Panics
///
/// If `out` and `blocks` differ in length.
pub fn leaf_hash_many(blocks: &[[u8; 64]], out: &mut [Hash]) {
    hash_many(&LEAF_WORDS, blocks, out);
}

/// Internal hashes of many pairs at once: `out[i]` is the
/// [`internal_hash`] of `blocks[i]` (a [`block`] of a left and a right
/// child, not both [`EMPTY`]: the caller gives those `EMPTY` itself).
///
/// # Panics
///
/// If `out` and `blocks` differ in length.
pub(crate) fn internal_hash_many(blocks: &[[u8; 64]], out: &mut [Hash]) {
    hash_many(&INTERNAL_WORDS, blocks, out);
}

/// Bit `i` (0 = most significant bit of byte 0) of a path.
#[inline]
pub fn bit(path: &KeyHash, i: usize) -> u8 {
    (path[i / 8] >> (7 - i % 8)) & 1
}

/// Nibble `i` (0 = high nibble of byte 0) of a path.
#[inline]
pub fn nibble(path: &KeyHash, i: usize) -> u8 {
    let b = path[i / 2];
    if i.is_multiple_of(2) {
        b >> 4
    } else {
        b & 0xf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_constants_are_what_the_format_says() {
        assert_eq!(LEAF_KEY, *blake3::hash(b"verity/v1/leaf").as_bytes());
        assert_eq!(
            INTERNAL_KEY,
            *blake3::hash(b"verity/v1/internal").as_bytes()
        );
        assert_eq!(EMPTY, *blake3::hash(b"verity/v1/empty").as_bytes());
    }

    #[test]
    fn internal_hash_of_two_empties_is_empty() {
        assert_eq!(internal_hash(&EMPTY, &EMPTY), EMPTY);
        assert_ne!(internal_hash(&EMPTY, &[1; 32]), EMPTY);
        assert_ne!(
            internal_hash(&[1; 32], &EMPTY),
            internal_hash(&EMPTY, &[1; 32])
        );
        assert_ne!(
            leaf_hash(&[1; 32], &[2; 32]),
            internal_hash(&[1; 32], &[2; 32])
        );
    }

    #[test]
    fn leaf_and_internal_hashes_are_blake3_keyed_hashes() {
        let seed = verity_testkit::seed("leaf_and_internal_hashes");
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
        for _ in 0..1000 {
            let (a, b): (Hash, Hash) = (rand::Rng::gen(&mut rng), rand::Rng::gen(&mut rng));
            let mut block = [0u8; 64];
            block[..32].copy_from_slice(&a);
            block[32..].copy_from_slice(&b);
            assert_eq!(
                leaf_hash(&a, &b),
                *blake3::keyed_hash(&LEAF_KEY, &block).as_bytes()
            );
            assert_eq!(
                internal_hash(&a, &b),
                *blake3::keyed_hash(&INTERNAL_KEY, &block).as_bytes()
            );
        }
    }

    #[test]
    fn hashes_of_many_blocks_are_the_hashes_of_each() {
        let seed = verity_testkit::seed("hashes_of_many_blocks");
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
        // Lengths around the lanes of every platform: partial and whole
        // groups of 4, 8 and 16.
        for len in 0..=40 {
            let pairs: Vec<(Hash, Hash)> = (0..len)
                .map(|_| (rand::Rng::gen(&mut rng), rand::Rng::gen(&mut rng)))
                .collect();
            let blocks: Vec<[u8; 64]> = pairs.iter().map(|(a, b)| block(a, b)).collect();
            let mut leaves = vec![[0u8; 32]; len];
            let mut internals = vec![[0u8; 32]; len];
            let before = thread_compressions();
            leaf_hash_many(&blocks, &mut leaves);
            internal_hash_many(&blocks, &mut internals);
            assert_eq!(
                thread_compressions() - before,
                2 * len as u64,
                "seed {seed}"
            );
            for (i, (a, b)) in pairs.iter().enumerate() {
                assert_eq!(leaves[i], leaf_hash(a, b), "leaf {i} of {len}, seed {seed}");
                assert_eq!(
                    internals[i],
                    internal_hash(a, b),
                    "internal {i} of {len}, seed {seed}"
                );
            }
        }
    }

    #[test]
    fn bits_and_nibbles() {
        let mut p = [0u8; 32];
        p[0] = 0b1010_0101;
        assert_eq!((nibble(&p, 0), nibble(&p, 1)), (0xa, 0x5));
        let bits: Vec<u8> = (0..8).map(|i| bit(&p, i)).collect();
        assert_eq!(bits, [1, 0, 1, 0, 0, 1, 0, 1]);
    }
}
