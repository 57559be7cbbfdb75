//! Checksummed framing for records and blocks.
//!
//! A frame is `len: u32 LE | crc32c(payload): u32 LE | payload[len]`. The
//! reader checks the length against a limit before touching the payload and
//! the checksum before returning it, so a torn or flipped frame is a typed
//! error, never wrong data.

use crate::error::{CodecError, Result};
use crate::reader::Reader;

/// Bytes of a frame header (length and checksum).
pub const HEADER_LEN: usize = 8;

/// The CRC-32C (Castagnoli) of `bytes`, the checksum of every frame.
pub fn checksum(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// Appends a frame holding `payload` to `out`; fails (and appends
/// nothing) if the payload is 4 GiB or larger.
pub fn put(out: &mut Vec<u8>, payload: &[u8]) -> Result<()> {
    // Refused before it is copied.
    if u32::try_from(payload.len()).is_err() {
        return Err(too_large(payload.len()));
    }
    put_with(out, |out| {
        out.extend_from_slice(payload);
        Ok(())
    })
}

/// Appends a frame whose payload `write` appends to `out` (after the
/// header's room), so the payload is written once, in place, where
/// [`put`] copies a payload built elsewhere. Fails, and leaves `out` as
/// it was, if `write` fails or the payload is 4 GiB or larger.
pub fn put_with(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    if let Err(e) = write(out) {
        out.truncate(start);
        return Err(e);
    }
    let payload = &out[start + HEADER_LEN..];
    let Ok(len) = u32::try_from(payload.len()) else {
        let len = payload.len();
        out.truncate(start);
        return Err(too_large(len));
    };
    let sum = checksum(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
    Ok(())
}

/// The error of a payload of `len` bytes, 4 GiB or more.
fn too_large(len: usize) -> CodecError {
    CodecError::TooLarge {
        what: "frame",
        len: len as u64,
        max: u64::from(u32::MAX),
    }
}

/// Reads one frame from the start of `bytes`; returns its payload and the
/// number of bytes the frame took. `max_len` bounds the payload length;
/// `base` is the offset of `bytes` in its file, for error reports.
pub fn get(bytes: &[u8], max_len: u32, base: usize) -> Result<(&[u8], usize)> {
    let mut r = Reader::with_base(bytes, "frame", base);
    let len = r.u32()?;
    if len > max_len {
        return Err(CodecError::TooLarge {
            what: "frame",
            len: u64::from(len),
            max: u64::from(max_len),
        });
    }
    let expected = r.u32()?;
    let payload = r.take(len as usize)?;
    let found = checksum(payload);
    if found != expected {
        return Err(CodecError::ChecksumMismatch {
            what: "frame",
            offset: base,
            expected,
            found,
        });
    }
    Ok((payload, HEADER_LEN + len as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn checksum_is_crc32c() {
        // The standard check value of CRC-32C.
        assert_eq!(checksum(b"123456789"), 0xe306_9283);
    }

    proptest! {
        #[test]
        fn round_trip(payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut out = Vec::new();
            put(&mut out, &payload).expect("small payload");
            let (got, used) = get(&out, 1 << 20, 0).expect("valid frame");
            prop_assert_eq!(got, &payload[..]);
            prop_assert_eq!(used, out.len());
        }

        #[test]
        fn frames_written_in_place_are_the_format_s_frames(
            prefix in proptest::collection::vec(any::<u8>(), 0..20),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            // The frame as the format defines it, built here by hand.
            let mut put_out = prefix.clone();
            put_out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            put_out.extend_from_slice(&checksum(&payload).to_le_bytes());
            put_out.extend_from_slice(&payload);
            let mut by_put = prefix.clone();
            put(&mut by_put, &payload).expect("small payload");
            prop_assert_eq!(&by_put, &put_out);
            let mut with_out = prefix.clone();
            put_with(&mut with_out, |out| {
                out.extend_from_slice(&payload);
                Ok(())
            })
            .expect("small payload");
            prop_assert_eq!(&with_out, &put_out);
            // A payload that fails to write leaves nothing behind.
            let failed = put_with(&mut with_out, |out| {
                out.extend_from_slice(&payload);
                Err(CodecError::Corrupt { what: "test", offset: 0, detail: "refused" })
            });
            prop_assert!(failed.is_err());
            prop_assert_eq!(&with_out, &put_out);
        }

        #[test]
        fn every_truncation_and_flip_is_an_error(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            flip_at: usize,
            flip_bit in 0u8..8,
        ) {
            let mut out = Vec::new();
            put(&mut out, &payload).expect("small payload");
            for cut in 0..out.len() {
                prop_assert!(get(&out[..cut], 1 << 20, 0).is_err());
            }
            let at = flip_at % out.len();
            out[at] ^= 1 << flip_bit;
            prop_assert!(get(&out, 1 << 20, 0).is_err());
        }
    }
}
