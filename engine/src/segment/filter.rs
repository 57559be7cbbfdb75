//! The filter over a segment's keys (without their versions): a Bloom
//! filter, so a lookup of a key the segment does not hold skips the file
//! without a disk read.
//!
//! Layout: `layout: u8 | bits: the rest`, bit `i` being bit `i % 8` of
//! byte `i / 8`. Two layouts (docs/format.md):
//!
//! - *blocked* (`layout = 0x80 | probes`, what segment format 2 writes): the
//!   bits are blocks of 512 (64 bytes, one cache line). A key sets
//!   `probes` bits of one block: block `(h * blocks) >> 64` (128-bit
//!   product), and in it the bits given by successive 9-bit fields of
//!   `g = mix(h)`, from the lowest. A lookup reads one cache line.
//! - *classic* (`layout = probes`, 1 to 30, what format 1 wrote): a
//!   key sets the bits `h, h + d, h + 2d, ...` (mod the bit count) for
//!   `probes` steps, where `d = h.rotate_left(21) | 1`. A lookup of a key
//!   the filter holds reads `probes` cache lines, each at a division.
//!
//! `h` is [`key_hash`]. At 10M keys the classic probes took 43% of
//! `Segment::locate`'s samples, itself a tenth of the commit threads'
//! (BENCHMARKS.md).

use verity_codec::CodecError;

/// Bits of filter per key: about 1% false positives with 7 probes.
pub const BITS_PER_KEY: usize = 10;
const PROBES: u8 = 7;
/// The layout byte's flag for the blocked layout.
const BLOCKED: u8 = 0x80;
/// Bytes of a block of the blocked layout.
const BLOCK_BYTES: usize = 64;

/// A 64-bit hash of a key for the filter (fixed; part of the format).
pub fn key_hash(key: &[u8]) -> u64 {
    const M: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = M ^ (key.len() as u64).wrapping_mul(0xff51_afd7_ed55_8ccd);
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(M);
        h ^= h >> 29;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(M);
        h ^= h >> 29;
    }
    h = (h ^ (h >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The bits within its block that a key of hash `h` sets, one 9-bit field
/// each (fixed; part of the format).
#[inline]
fn block_bits(h: u64) -> u64 {
    let g = (h ^ (h >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    g ^ (g >> 29)
}

/// One block of the blocked layout, aligned so that it is one cache line.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Block([u8; BLOCK_BYTES]);

impl Default for Block {
    fn default() -> Self {
        Block([0; BLOCK_BYTES])
    }
}

/// The bits of a filter, in its layout.
#[derive(Debug, Clone)]
enum Bits {
    Blocked(Vec<Block>),
    Classic(Vec<u8>),
}

/// A Bloom filter.
#[derive(Debug, Clone)]
pub struct Filter {
    probes: u8,
    bits: Bits,
}

impl Filter {
    /// A filter over the given key hashes, in the blocked layout.
    pub fn build(hashes: &[u64]) -> Filter {
        let count = (hashes.len() * BITS_PER_KEY)
            .div_ceil(BLOCK_BYTES * 8)
            .max(1);
        let mut blocks = vec![Block::default(); count];
        for &h in hashes {
            let block = &mut blocks[Self::block_of(h, count)].0;
            let mut g = block_bits(h);
            for _ in 0..PROBES {
                let b = (g & 511) as usize;
                block[b / 8] |= 1 << (b % 8);
                g >>= 9;
            }
        }
        Filter {
            probes: PROBES,
            bits: Bits::Blocked(blocks),
        }
    }

    /// The block of a key of hash `h`, of `count` blocks.
    #[inline]
    fn block_of(h: u64, count: usize) -> usize {
        ((u128::from(h) * count as u128) >> 64) as usize
    }

    /// False when the key with this hash is surely absent.
    pub fn may_contain(&self, h: u64) -> bool {
        match &self.bits {
            Bits::Blocked(blocks) => {
                let block = &blocks[Self::block_of(h, blocks.len())].0;
                let mut g = block_bits(h);
                let mut all = true;
                for _ in 0..self.probes {
                    let b = (g & 511) as usize;
                    all &= block[b / 8] & (1 << (b % 8)) != 0;
                    g >>= 9;
                }
                all
            }
            Bits::Classic(bits) => {
                let nbits = bits.len() as u64 * 8;
                let (mut at, step) = (h, h.rotate_left(21) | 1);
                for _ in 0..self.probes {
                    let i = at % nbits;
                    if bits[(i / 8) as usize] & (1 << (i % 8)) == 0 {
                        return false;
                    }
                    at = at.wrapping_add(step);
                }
                true
            }
        }
    }

    /// The encoded filter.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.size_bytes());
        match &self.bits {
            Bits::Blocked(blocks) => {
                out.push(BLOCKED | self.probes);
                for b in blocks {
                    out.extend_from_slice(&b.0);
                }
            }
            Bits::Classic(bits) => {
                out.push(self.probes);
                out.extend_from_slice(bits);
            }
        }
        out
    }

    /// Decodes a filter (its frame checksum was checked by the caller).
    pub fn decode(bytes: &[u8]) -> Result<Filter, CodecError> {
        let corrupt = |detail| CodecError::Corrupt {
            what: "segment filter",
            offset: 0,
            detail,
        };
        let Some((&layout, bits)) = bytes.split_first() else {
            return Err(corrupt("empty filter"));
        };
        let probes = layout & !BLOCKED;
        if bits.is_empty() {
            return Err(corrupt("empty filter"));
        }
        if layout & BLOCKED != 0 {
            // Nine bits a probe, from one 64-bit hash.
            if !(1..=7).contains(&probes) {
                return Err(corrupt("bad probe count"));
            }
            if !bits.len().is_multiple_of(BLOCK_BYTES) {
                return Err(corrupt("blocked filter not in whole blocks"));
            }
            let blocks = bits
                .chunks_exact(BLOCK_BYTES)
                .map(|c| {
                    let mut b = Block::default();
                    b.0.copy_from_slice(c);
                    b
                })
                .collect();
            return Ok(Filter {
                probes,
                bits: Bits::Blocked(blocks),
            });
        }
        if !(1..=30).contains(&probes) {
            return Err(corrupt("bad probe count"));
        }
        Ok(Filter {
            probes,
            bits: Bits::Classic(bits.to_vec()),
        })
    }

    /// Bytes held.
    pub fn size_bytes(&self) -> usize {
        match &self.bits {
            Bits::Blocked(blocks) => blocks.len() * BLOCK_BYTES,
            Bits::Classic(bits) => bits.len(),
        }
    }
}

/// The classic layout (probes 7) of `hashes` in `bit_bytes` bytes of
/// bits, built as `docs/format.md` writes it, apart from the filter's own
/// code: what format 1 segments hold, for the tests that read them.
#[cfg(test)]
pub(crate) fn classic_by_hand(hashes: &[u64], bit_bytes: usize) -> Vec<u8> {
    let nbits = (bit_bytes * 8) as u64;
    let mut encoded = vec![0u8; 1 + bit_bytes];
    encoded[0] = 7;
    for &h in hashes {
        let (mut at, step) = (h, h.rotate_left(21) | 1);
        for _ in 0..7 {
            let i = at % nbits;
            encoded[1 + (i / 8) as usize] |= 1 << (i % 8);
            at = at.wrapping_add(step);
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The false positives among 100,000 keys not in `f`.
    fn false_positives(f: &Filter) -> usize {
        (10_000u32..110_000)
            .filter(|i| f.may_contain(key_hash(&i.to_le_bytes())))
            .count()
    }

    fn keys() -> Vec<u64> {
        (0u32..10_000).map(|i| key_hash(&i.to_le_bytes())).collect()
    }

    #[test]
    fn no_false_negatives_and_few_false_positives() -> Result<(), CodecError> {
        let keys = keys();
        let f = Filter::decode(&Filter::build(&keys).encode())?;
        assert!(matches!(f.bits, Bits::Blocked(_)));
        assert!(keys.iter().all(|&h| f.may_contain(h)));
        // About 1% expected for 10 bits a key in 512-bit blocks (0.9%
        // for these keys); 2% would mean a broken hash or bit choice.
        let fp = false_positives(&f);
        assert!(fp < 2_000, "{fp} false positives in 100000");
        Ok(())
    }

    /// The blocked layout as `docs/format.md` writes it, computed here
    /// apart from the filter's code.
    #[test]
    fn blocked_layout_is_the_documented_one() -> Result<(), CodecError> {
        let keys = keys();
        let blocks = (keys.len() * 10).div_ceil(512);
        let mut want = vec![0x87u8];
        want.resize(1 + blocks * 64, 0);
        for &h in &keys {
            let block = ((h as u128 * blocks as u128) >> 64) as usize;
            let g = (h ^ (h >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            let g = g ^ (g >> 29);
            for i in 0..7 {
                let bit = ((g >> (9 * i)) & 511) as usize;
                want[1 + block * 64 + bit / 8] |= 1 << (bit % 8);
            }
        }
        assert_eq!(Filter::build(&keys).encode(), want);
        Ok(())
    }

    /// A filter of the classic layout (what format 1 segments hold),
    /// built by hand as `docs/format.md` writes it, still answers.
    #[test]
    fn classic_layout_still_reads() -> Result<(), CodecError> {
        let keys = keys();
        let encoded = classic_by_hand(&keys, keys.len() * 10 / 8);
        let f = Filter::decode(&encoded)?;
        assert!(matches!(f.bits, Bits::Classic(_)));
        assert!(keys.iter().all(|&h| f.may_contain(h)));
        let fp = false_positives(&f);
        assert!(fp < 3_000, "{fp} false positives in 100000");
        assert_eq!(f.encode(), encoded);
        Ok(())
    }

    #[test]
    fn bad_filters_are_refused() {
        let block = [0u8; 64];
        let with = |layout: u8, bits: &[u8]| {
            let mut v = vec![layout];
            v.extend_from_slice(bits);
            v
        };
        for bad in [
            vec![],
            vec![7],
            vec![0x87],
            with(0, &block),
            with(31, &block),
            with(0x80, &block),
            with(0x88, &block),
            with(0x87, &block[..63]),
            with(0x87, &[0; 65]),
        ] {
            assert!(Filter::decode(&bad).is_err(), "{bad:?} decoded");
        }
        assert!(Filter::decode(&with(0x87, &block)).is_ok());
        assert!(Filter::decode(&with(30, &block[..1])).is_ok());
    }

    #[test]
    fn hash_depends_on_every_byte_and_the_length() {
        assert_ne!(key_hash(b""), key_hash(b"\0"));
        assert_ne!(key_hash(b"abcdefghi"), key_hash(b"abcdefghj"));
        assert_ne!(key_hash(b"abcdefgh"), key_hash(b"abcdefgh\0"));
    }
}
