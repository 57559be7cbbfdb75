//! Optionally zstd-compressed blocks.
//!
//! `kind: u8 (0 = stored, 1 = zstd) | raw_len: varint | body`. A zstd body
//! is one zstd frame whose content is exactly `raw_len` bytes. The decoder
//! refuses a `raw_len` above the caller's limit before allocating, so a
//! corrupt length cannot exhaust memory. Blocks carry no checksum of their
//! own: wrap them in a [`frame`](crate::frame) for that.

use crate::error::{CodecError, Result};
use crate::reader::Reader;
use crate::varint;

const STORED: u8 = 0;
const ZSTD: u8 = 1;

/// How a block body is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// Stored as is.
    None,
    /// Compressed with zstd at the given level (1..=22; 1 to 3 are fast).
    Zstd(i32),
}

/// Encodes `raw` as a block. With zstd, the block is stored uncompressed
/// when compression does not make it smaller.
pub fn encode(raw: &[u8], compression: Compression) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len() + 1 + varint::MAX_LEN);
    encode_into(&mut out, raw, compression)?;
    Ok(out)
}

/// [`encode`], appended to `out` (on an error `out` may hold part of it).
pub fn encode_into(out: &mut Vec<u8>, raw: &[u8], compression: Compression) -> Result<()> {
    if let Compression::Zstd(level) = compression {
        let body = zstd::bulk::compress(raw, level).map_err(|e| CodecError::Compression {
            what: "compress",
            message: e.to_string(),
        })?;
        if body.len() < raw.len() {
            out.push(ZSTD);
            varint::put(out, raw.len() as u64);
            out.extend_from_slice(&body);
            return Ok(());
        }
    }
    out.push(STORED);
    varint::put(out, raw.len() as u64);
    out.extend_from_slice(raw);
    Ok(())
}

/// Decodes a block, refusing one whose raw length exceeds `max_raw_len`.
pub fn decode(bytes: &[u8], max_raw_len: usize) -> Result<Vec<u8>> {
    let mut r = Reader::new(bytes, "block");
    let kind = r.u8()?;
    let raw_len = r.varint()?;
    if raw_len > max_raw_len as u64 {
        return Err(CodecError::TooLarge {
            what: "block",
            len: raw_len,
            max: max_raw_len as u64,
        });
    }
    let raw_len = raw_len as usize;
    let body = &bytes[r.position()..];
    match kind {
        STORED => {
            if body.len() != raw_len {
                return Err(r.corrupt("stored length differs from header"));
            }
            Ok(body.to_vec())
        }
        ZSTD => {
            let out = zstd::bulk::decompress(body, raw_len).map_err(|_| {
                r.corrupt("zstd body does not decompress within the declared length")
            })?;
            if out.len() != raw_len {
                return Err(r.corrupt("zstd body shorter than declared"));
            }
            Ok(out)
        }
        _ => Err(r.corrupt_at(0, "unknown block kind")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn compressible_blocks_shrink_and_round_trip() {
        let raw: Vec<u8> = (0..4096u32).map(|i| (i % 7) as u8).collect();
        let block = encode(&raw, Compression::Zstd(3)).expect("compress");
        assert_eq!(block[0], ZSTD);
        assert!(block.len() < raw.len() / 4);
        assert_eq!(decode(&block, 1 << 20).expect("decode"), raw);
        assert!(matches!(
            decode(&block, 100),
            Err(CodecError::TooLarge { .. })
        ));
    }

    proptest! {
        #[test]
        fn round_trip(raw in proptest::collection::vec(0u8..4, 0..2000), zstd: bool) {
            let c = if zstd { Compression::Zstd(1) } else { Compression::None };
            let block = encode(&raw, c).expect("encode");
            prop_assert_eq!(decode(&block, 1 << 20).expect("decode"), raw);
        }

        #[test]
        fn damaged_blocks_never_panic(raw in proptest::collection::vec(0u8..4, 0..600), at: usize, bit in 0u8..8) {
            let block = encode(&raw, Compression::Zstd(1)).expect("encode");
            for cut in 0..block.len() {
                let _ = decode(&block[..cut], 1 << 20);
            }
            let mut bad = block.clone();
            let i = at % bad.len();
            bad[i] ^= 1 << bit;
            let _ = decode(&bad, 1 << 20);
        }
    }
}
