//! A bounds-checked cursor over untrusted bytes, and the matching writers.
//!
//! Every read names what it is reading, so an error says what was being
//! decoded and at which offset. Nothing here panics or allocates more than
//! the input holds.

use crate::error::{CodecError, Result};
use crate::varint;

/// A cursor over a byte slice that reads little-endian fixed-width integers,
/// varints and length-prefixed strings, with typed errors.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Added to positions in error reports (the slice's place in its file).
    base: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `bytes` decoding a `what`.
    pub fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self::with_base(bytes, what, 0)
    }

    /// A reader whose error offsets are shifted by `base`.
    pub fn with_base(bytes: &'a [u8], what: &'static str, base: usize) -> Self {
        Reader {
            bytes,
            pos: 0,
            base,
            what,
        }
    }

    /// Position of the next unread byte (relative to the slice).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The absolute offset of the next byte, for error reports.
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// True when every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// A `Corrupt` error at the current offset.
    pub fn corrupt(&self, detail: &'static str) -> CodecError {
        CodecError::Corrupt {
            what: self.what,
            offset: self.offset(),
            detail,
        }
    }

    /// A `Corrupt` error at an earlier position `at` of this slice.
    pub fn corrupt_at(&self, at: usize, detail: &'static str) -> CodecError {
        CodecError::Corrupt {
            what: self.what,
            offset: self.base + at,
            detail,
        }
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(CodecError::Truncated {
                what: self.what,
                offset: self.offset(),
                needed: n - self.remaining(),
            });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Takes the next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    /// Reads a little-endian `u16`.
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads a LEB128 varint.
    pub fn varint(&mut self) -> Result<u64> {
        let (value, used) = varint::get(&self.bytes[self.pos..], self.offset())?;
        self.pos += used;
        Ok(value)
    }

    /// Reads a varint that counts items of at least `min_item_len` bytes
    /// each, and checks that the remaining input can hold that many, so a
    /// corrupt count can never make the caller allocate more than the input.
    pub fn count(&mut self, min_item_len: usize, max: u64) -> Result<usize> {
        let at = self.offset();
        let n = self.varint()?;
        if n > max {
            return Err(CodecError::TooLarge {
                what: self.what,
                len: n,
                max,
            });
        }
        let need = n.saturating_mul(min_item_len.max(1) as u64);
        if need > self.remaining() as u64 {
            return Err(CodecError::Truncated {
                what: self.what,
                offset: at,
                needed: (need - self.remaining() as u64).min(usize::MAX as u64) as usize,
            });
        }
        Ok(n as usize)
    }

    /// Reads a varint length followed by that many bytes; the length may not
    /// exceed `max`.
    pub fn bytes(&mut self, max: u64) -> Result<&'a [u8]> {
        let len = self.count(1, max)?;
        self.take(len)
    }

    /// Fails with `TrailingBytes` unless every byte was read.
    pub fn finish(&self) -> Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(CodecError::TrailingBytes {
                what: self.what,
                extra: self.remaining(),
            })
        }
    }
}

/// Appends a little-endian `u16`.
pub fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends a little-endian `u32`.
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends a little-endian `u64`.
pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends a varint length and the bytes.
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    varint::put(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fixed_width_little_endian() {
        let mut out = Vec::new();
        out.push(7);
        put_u16(&mut out, 0x0102);
        put_u32(&mut out, 0x0304_0506);
        put_u64(&mut out, 0x0708_090a_0b0c_0d0e);
        put_bytes(&mut out, b"abc");
        assert_eq!(&out[1..3], &[0x02, 0x01]);
        let mut r = Reader::new(&out, "test");
        assert_eq!(r.u8(), Ok(7));
        assert_eq!(r.u16(), Ok(0x0102));
        assert_eq!(r.u32(), Ok(0x0304_0506));
        assert_eq!(r.u64(), Ok(0x0708_090a_0b0c_0d0e));
        assert_eq!(r.bytes(16), Ok(&b"abc"[..]));
        assert_eq!(r.finish(), Ok(()));
        assert!(matches!(
            r.u8(),
            Err(CodecError::Truncated { offset: 19, .. })
        ));
    }

    #[test]
    fn length_fields_are_bounded_by_the_input() {
        let mut out = Vec::new();
        crate::varint::put(&mut out, 1 << 40);
        let mut r = Reader::new(&out, "test");
        assert!(matches!(
            r.bytes(u64::MAX),
            Err(CodecError::Truncated { .. })
        ));
        let mut r = Reader::new(&out, "test");
        assert!(matches!(r.bytes(1024), Err(CodecError::TooLarge { .. })));
    }
}
