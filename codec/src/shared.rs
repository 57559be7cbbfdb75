//! [`SharedBytes`]: encoded bytes that share one allocation with others
//! encoded with them.
//!
//! An update encodes a record for every page it writes, about 10k in a
//! block at 1M keys. Each in an allocation of its own, they took up to 8%
//! of a block's time: a cold block for each from the allocator, and a
//! copy into it (BENCHMARKS.md). The records of a batch of pages are
//! encoded one after the other into one buffer instead, and each is a
//! range of it. A store may keep them as they are (the buffer lives while
//! any of its records does) or copy the ones it keeps long.

use std::fmt;
use std::ops::{Deref, Range};
use std::sync::Arc;

/// Bytes that may share their allocation with others: a range of an
/// `Arc<[u8]>`. Cloning takes a reference, never copies. Compared,
/// ordered and hashed as the bytes they hold.
#[derive(Clone, Default)]
pub struct SharedBytes {
    /// The allocation, or `None` for no bytes (which allocates nothing).
    buf: Option<Arc<[u8]>>,
    /// Where the bytes are in `buf`.
    start: u32,
    end: u32,
}

impl SharedBytes {
    /// The bytes `range` of `buf`, sharing it.
    ///
    /// # Panics
    ///
    /// When `range` is not within `buf`, or ends at 4 GiB or more.
    pub fn slice(buf: &Arc<[u8]>, range: Range<usize>) -> SharedBytes {
        assert!(
            range.start <= range.end && range.end <= buf.len(),
            "range {range:?} of a buffer of {} bytes",
            buf.len()
        );
        let end = u32::try_from(range.end).expect("a shared buffer under 4 GiB");
        SharedBytes {
            buf: Some(buf.clone()),
            start: range.start as u32,
            end,
        }
    }

    /// The bytes, as one slice.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        match &self.buf {
            Some(buf) => &buf[self.start as usize..self.end as usize],
            None => &[],
        }
    }

    /// Bytes of the allocation these bytes keep alive (theirs and the
    /// others sharing it), for a store that accounts for its memory.
    pub fn buffer_len(&self) -> usize {
        self.buf.as_deref().map_or(0, <[u8]>::len)
    }
}

impl Deref for SharedBytes {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for SharedBytes {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl From<Arc<[u8]>> for SharedBytes {
    /// All of `buf`, sharing it.
    ///
    /// # Panics
    ///
    /// When `buf` holds 4 GiB or more (as the two conversions below).
    fn from(buf: Arc<[u8]>) -> SharedBytes {
        let len = buf.len();
        SharedBytes::slice(&buf, 0..len)
    }
}

impl From<&[u8]> for SharedBytes {
    /// A copy of `bytes` in an allocation of its own.
    fn from(bytes: &[u8]) -> SharedBytes {
        SharedBytes::from(Arc::<[u8]>::from(bytes))
    }
}

impl From<Vec<u8>> for SharedBytes {
    /// `bytes` in an allocation of their own.
    fn from(bytes: Vec<u8>) -> SharedBytes {
        SharedBytes::from(Arc::<[u8]>::from(bytes))
    }
}

impl PartialEq for SharedBytes {
    fn eq(&self, other: &SharedBytes) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for SharedBytes {}

impl PartialOrd for SharedBytes {
    fn partial_cmp(&self, other: &SharedBytes) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SharedBytes {
    fn cmp(&self, other: &SharedBytes) -> std::cmp::Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl std::hash::Hash for SharedBytes {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_slice(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_share_their_buffer_and_compare_as_bytes() {
        let buf: Arc<[u8]> = Arc::from(&b"abcdef"[..]);
        let a = SharedBytes::slice(&buf, 1..3);
        let b = SharedBytes::slice(&buf, 3..6);
        assert_eq!(&*a, b"bc");
        assert_eq!(&*b, b"def");
        assert_eq!((a.len(), a.buffer_len()), (2, 6));
        assert_eq!(Arc::strong_count(&buf), 3);
        assert_eq!(a, SharedBytes::from(&b"bc"[..]));
        assert_ne!(a, b);
        assert!(a < b);
        // A whole buffer is taken as it is, not copied.
        let whole = SharedBytes::from(buf.clone());
        assert_eq!(whole.buffer_len(), whole.len());
        assert!(std::ptr::eq(whole.as_ptr(), buf.as_ptr()));
        drop((a, b, whole));
        assert_eq!(Arc::strong_count(&buf), 1);
    }

    #[test]
    fn empty_bytes_allocate_nothing() {
        let e = SharedBytes::default();
        assert!(e.is_empty());
        assert_eq!(e.buffer_len(), 0);
        assert_eq!(e, SharedBytes::from(Vec::new()));
        let buf: Arc<[u8]> = Arc::from(&b"xy"[..]);
        assert!(SharedBytes::slice(&buf, 2..2).is_empty());
    }

    #[test]
    #[should_panic(expected = "range")]
    fn a_range_past_the_buffer_panics() {
        let buf: Arc<[u8]> = Arc::from(&b"xy"[..]);
        let _ = SharedBytes::slice(&buf, 1..3);
    }
}
