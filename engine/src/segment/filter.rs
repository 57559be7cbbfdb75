//! The filter over a segment's keys (without their versions): a Bloom
//! filter, so a lookup of a key the segment does not hold skips the file
//! without a disk read.
//!
//! Layout: `probes: u8 | bits: the rest`. Bit `i` is bit `i % 8` of byte
//! `i / 8`. A key sets the bits `h, h + d, h + 2d, ...` (mod the bit
//! count) for `probes` steps, where `h` is [`key_hash`] and
//! `d = h.rotate_left(21) | 1`.

use verity_codec::CodecError;

/// Bits of filter per key: about 1% false positives with 7 probes.
pub const BITS_PER_KEY: usize = 10;
const PROBES: u8 = 7;

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

/// A Bloom filter.
#[derive(Debug, Clone)]
pub struct Filter {
    probes: u8,
    bits: Vec<u8>,
}

impl Filter {
    /// A filter over the given key hashes.
    pub fn build(hashes: &[u64]) -> Filter {
        let nbits = (hashes.len() * BITS_PER_KEY).max(64);
        let mut bits = vec![0u8; nbits.div_ceil(8)];
        let nbits = bits.len() as u64 * 8;
        for &h in hashes {
            let (mut at, step) = (h, h.rotate_left(21) | 1);
            for _ in 0..PROBES {
                let i = at % nbits;
                bits[(i / 8) as usize] |= 1 << (i % 8);
                at = at.wrapping_add(step);
            }
        }
        Filter {
            probes: PROBES,
            bits,
        }
    }

    /// False when the key with this hash is surely absent.
    pub fn may_contain(&self, h: u64) -> bool {
        let nbits = self.bits.len() as u64 * 8;
        let (mut at, step) = (h, h.rotate_left(21) | 1);
        for _ in 0..self.probes {
            let i = at % nbits;
            if self.bits[(i / 8) as usize] & (1 << (i % 8)) == 0 {
                return false;
            }
            at = at.wrapping_add(step);
        }
        true
    }

    /// The encoded filter.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.bits.len());
        out.push(self.probes);
        out.extend_from_slice(&self.bits);
        out
    }

    /// Decodes a filter (its frame checksum was checked by the caller).
    pub fn decode(bytes: &[u8]) -> Result<Filter, CodecError> {
        match bytes.split_first() {
            Some((&probes, bits)) if (1..=30).contains(&probes) && !bits.is_empty() => Ok(Filter {
                probes,
                bits: bits.to_vec(),
            }),
            _ => Err(CodecError::Corrupt {
                what: "segment filter",
                offset: 0,
                detail: "bad probe count or empty filter",
            }),
        }
    }

    /// Bytes held.
    pub fn size_bytes(&self) -> usize {
        self.bits.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() -> Result<(), CodecError> {
        let keys: Vec<u64> = (0u32..10_000).map(|i| key_hash(&i.to_le_bytes())).collect();
        let f = Filter::decode(&Filter::build(&keys).encode())?;
        assert!(keys.iter().all(|&h| f.may_contain(h)));
        let fp = (10_000u32..110_000)
            .filter(|i| f.may_contain(key_hash(&i.to_le_bytes())))
            .count();
        // About 1% expected; 3% would mean a broken hash or probe sequence.
        assert!(fp < 3_000, "{fp} false positives in 100000");
        Ok(())
    }

    #[test]
    fn hash_depends_on_every_byte_and_the_length() {
        assert_ne!(key_hash(b""), key_hash(b"\0"));
        assert_ne!(key_hash(b"abcdefghi"), key_hash(b"abcdefghj"));
        assert_ne!(key_hash(b"abcdefgh"), key_hash(b"abcdefgh\0"));
    }
}
