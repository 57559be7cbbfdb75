//! Byte buffers across the boundary: `verity_bytes` (allocated by the
//! library, freed only by `verity_bytes_free`) and `verity_slice` (borrowed
//! from the caller for one call).

#![expect(unsafe_code, reason = "hands heap buffers to C and takes them back")]

use std::ptr;

use crate::guard::quietly;

/// Bytes the library allocated and the caller owns: a value, a key or a
/// proof. Free it with `verity_bytes_free` (never with `free`). `ptr` is
/// NULL exactly when `len` is 0, so an empty result allocates nothing.
#[repr(C)]
#[derive(Debug)]
pub struct verity_bytes {
    /// The first byte, or NULL when `len` is 0.
    pub ptr: *mut u8,
    /// The number of bytes.
    pub len: usize,
}

impl verity_bytes {
    /// No bytes (`{NULL, 0}`): what an output holds before it is set and
    /// after a failure.
    pub(crate) const EMPTY: verity_bytes = verity_bytes {
        ptr: ptr::null_mut(),
        len: 0,
    };

    /// Hands `bytes` to C.
    pub(crate) fn from_vec(bytes: Vec<u8>) -> verity_bytes {
        if bytes.is_empty() {
            return verity_bytes::EMPTY;
        }
        // A boxed slice has exactly `len` bytes of capacity, so
        // `verity_bytes_free` can rebuild the allocation from `(ptr, len)`.
        let boxed = bytes.into_boxed_slice();
        let len = boxed.len();
        let ptr = Box::into_raw(boxed).cast::<u8>();
        verity_bytes { ptr, len }
    }
}

/// Bytes the caller lends for one call (a key in a batched call). `ptr` may
/// be NULL only when `len` is 0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct verity_slice {
    /// The first byte.
    pub ptr: *const u8,
    /// The number of bytes.
    pub len: usize,
}

/// Frees bytes the library returned. `{NULL, 0}` is accepted and ignored.
///
/// Ownership: takes the buffer back; `b.ptr` may not be used afterwards.
/// Thread safety: any thread, once per buffer.
///
/// # Safety
/// `b` is exactly as the library returned it (same `ptr` and `len`), and is
/// freed only once.
#[no_mangle]
pub unsafe extern "C" fn verity_bytes_free(b: verity_bytes) {
    quietly((), || {
        if b.ptr.is_null() {
            return;
        }
        let slice = ptr::slice_from_raw_parts_mut(b.ptr, b.len);
        // SAFETY: `(ptr, len)` is a boxed slice `from_vec` leaked, handed
        // back once and unchanged (the caller's contract).
        drop(unsafe { Box::from_raw(slice) });
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_through_free() {
        let b = verity_bytes::from_vec(b"value".to_vec());
        assert_eq!(b.len, 5);
        // SAFETY: `b` was just returned by `from_vec`; read, then freed once.
        unsafe {
            assert_eq!(std::slice::from_raw_parts(b.ptr, b.len), b"value");
            verity_bytes_free(b);
        }
    }

    #[test]
    fn empty_bytes_are_null_and_free_accepts_them() {
        let b = verity_bytes::from_vec(Vec::with_capacity(64));
        assert!(b.ptr.is_null());
        assert_eq!(b.len, 0);
        // SAFETY: `{NULL, 0}` is accepted.
        unsafe { verity_bytes_free(b) };
    }
}
