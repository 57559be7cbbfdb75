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

#[inline]
fn keyed64(key: &Hash, a: &Hash, b: &Hash) -> Hash {
    COMPRESSIONS.with(|c| c.set(c.get() + 1));
    // The two halves go in as they are. Copied into one 64-byte block
    // first, the block's two 32-byte stores are read back at once by a
    // wider load where the CPU has 64-byte vectors, which store forwarding
    // cannot serve: the load waits for the stores to reach the cache (one
    // compression took 79.5 ns that way and takes 56.0 ns this way in
    // `cargo bench --bench merkle -- hash` on an AVX-512 Xeon). On a CPU
    // without them the block is a little faster (about 105 against 120 ns
    // on an AMD EPYC); BENCHMARKS.md has both.
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(a);
    hasher.update(b);
    *hasher.finalize().as_bytes()
}

/// The hash of a leaf.
#[inline]
pub fn leaf_hash(key_hash: &KeyHash, value_hash: &ValueHash) -> Hash {
    keyed64(&LEAF_KEY, key_hash, value_hash)
}

/// The hash of an internal binary node over its two children.
#[inline]
pub fn internal_hash(left: &Hash, right: &Hash) -> Hash {
    if *left == EMPTY && *right == EMPTY {
        EMPTY
    } else {
        keyed64(&INTERNAL_KEY, left, right)
    }
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
    fn bits_and_nibbles() {
        let mut p = [0u8; 32];
        p[0] = 0b1010_0101;
        assert_eq!((nibble(&p, 0), nibble(&p, 1)), (0xa, 0x5));
        let bits: Vec<u8> = (0..8).map(|i| bit(&p, i)).collect();
        assert_eq!(bits, [1, 0, 1, 0, 0, 1, 0, 1]);
    }
}
