//! LEB128 variable-length unsigned integers.
//!
//! Seven bits per byte, least significant group first, the high bit set on
//! every byte but the last. A `u64` takes 1 to 10 bytes. Decoding rejects
//! overlong encodings (a final byte of zero after the first byte) and values
//! that overflow 64 bits, so every value has exactly one encoding.

use crate::error::{CodecError, Result};

/// Most bytes a `u64` can take.
pub const MAX_LEN: usize = 10;

/// Appends the LEB128 encoding of `value` to `out`.
pub fn put(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Number of bytes `put` writes for `value`.
pub fn len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Decodes a varint from the start of `bytes`; returns the value and the
/// number of bytes it took. `offset` is only used for error reports.
pub fn get(bytes: &[u8], offset: usize) -> Result<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(MAX_LEN) {
        let group = u64::from(b & 0x7f);
        if i == MAX_LEN - 1 && b > 1 {
            return Err(CodecError::Corrupt {
                what: "varint",
                offset: offset + i,
                detail: "value overflows 64 bits",
            });
        }
        value |= group << (7 * i);
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                return Err(CodecError::Corrupt {
                    what: "varint",
                    offset: offset + i,
                    detail: "overlong encoding",
                });
            }
            return Ok((value, i + 1));
        }
    }
    if bytes.len() >= MAX_LEN {
        return Err(CodecError::Corrupt {
            what: "varint",
            offset: offset + MAX_LEN - 1,
            detail: "more than 10 bytes",
        });
    }
    Err(CodecError::Truncated {
        what: "varint",
        offset: offset + bytes.len(),
        needed: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_encodings() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0]),
            (1, &[1]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ];
        for (value, bytes) in cases {
            let mut out = Vec::new();
            put(&mut out, *value);
            assert_eq!(&out[..], *bytes, "encoding of {value}");
            assert_eq!(len(*value), bytes.len());
            assert_eq!(get(bytes, 0), Ok((*value, bytes.len())));
        }
    }

    #[test]
    fn rejects_overlong_overflow_and_truncation() {
        assert!(matches!(
            get(&[0x80, 0x00], 0),
            Err(CodecError::Corrupt { .. })
        ));
        assert!(matches!(
            get(
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                0
            ),
            Err(CodecError::Corrupt { .. })
        ));
        assert!(matches!(get(&[0x80], 0), Err(CodecError::Truncated { .. })));
        assert!(matches!(get(&[], 0), Err(CodecError::Truncated { .. })));
        assert!(matches!(
            get(&[0x80; 11], 0),
            Err(CodecError::Corrupt { .. })
        ));
    }

    proptest! {
        #[test]
        fn round_trip(value: u64, tail in proptest::collection::vec(any::<u8>(), 0..4)) {
            let mut out = Vec::new();
            put(&mut out, value);
            prop_assert_eq!(out.len(), len(value));
            out.extend_from_slice(&tail);
            prop_assert_eq!(get(&out, 0), Ok((value, len(value))));
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            if let Ok((value, used)) = get(&bytes, 0) {
                let mut out = Vec::new();
                put(&mut out, value);
                prop_assert_eq!(&out[..], &bytes[..used]);
            }
        }
    }
}
