//! Reading what C passes in, and writing what it gets back: every raw
//! pointer of the ABI goes through here, so the checks C relies on (NULL
//! where something is required, NULL with a non-zero length, key and value
//! limits, UTF-8 paths) are made once.
//!
//! Each reader is an `unsafe fn` whose contract is the one the exported
//! functions state in their `# Safety` sections: a non-NULL pointer points
//! to what its type and length say, valid for the whole call.

#![expect(
    unsafe_code,
    reason = "turns the raw pointers C passes in into references"
)]

use std::ffi::{c_char, CStr};
use std::marker::PhantomData;

use crate::status::Failure;
use crate::{VERITY_HASH_LEN, VERITY_MAX_KEY_LEN, VERITY_MAX_VALUE_LEN};

/// The bytes at `(ptr, len)`; `(NULL, 0)` is the empty slice.
///
/// # Safety
/// When `ptr` is not NULL it points to `len` readable bytes that nothing
/// writes during the call.
pub(crate) unsafe fn bytes<'a>(
    ptr: *const u8,
    len: usize,
    what: &str,
) -> Result<&'a [u8], Failure> {
    if ptr.is_null() {
        if len == 0 {
            return Ok(&[]);
        }
        return Err(Failure::invalid(format!(
            "{what} is NULL with a length of {len}"
        )));
    }
    if len > isize::MAX as usize {
        return Err(Failure::invalid(format!("{what} is longer than memory")));
    }
    // SAFETY: `ptr` is not NULL, and the caller promises `len` readable
    // bytes there that nothing writes during the call; `len` fits an
    // `isize`, and a `u8` has no alignment to respect.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A key: 1 to `VERITY_MAX_KEY_LEN` bytes, never NULL.
///
/// # Safety
/// As for [`bytes`].
pub(crate) unsafe fn key<'a>(ptr: *const u8, len: usize) -> Result<&'a [u8], Failure> {
    if ptr.is_null() {
        return Err(Failure::invalid("key is NULL"));
    }
    if len == 0 {
        return Err(Failure::invalid("key is empty"));
    }
    if len > VERITY_MAX_KEY_LEN {
        return Err(Failure::invalid(format!(
            "key of {len} bytes is longer than VERITY_MAX_KEY_LEN ({VERITY_MAX_KEY_LEN})"
        )));
    }
    // SAFETY: passed on from this function's contract.
    unsafe { bytes(ptr, len, "key") }
}

/// A value: up to `VERITY_MAX_VALUE_LEN` bytes; `(NULL, 0)` is empty.
///
/// # Safety
/// As for [`bytes`].
pub(crate) unsafe fn value<'a>(ptr: *const u8, len: usize) -> Result<&'a [u8], Failure> {
    if len > VERITY_MAX_VALUE_LEN {
        return Err(Failure::invalid(format!(
            "value of {len} bytes is longer than VERITY_MAX_VALUE_LEN ({VERITY_MAX_VALUE_LEN})"
        )));
    }
    // SAFETY: passed on from this function's contract.
    unsafe { bytes(ptr, len, "value") }
}

/// A 32-byte hash (a root or a key hash), copied.
///
/// # Safety
/// When `ptr` is not NULL it points to 32 readable bytes.
pub(crate) unsafe fn hash(ptr: *const u8, what: &str) -> Result<[u8; 32], Failure> {
    if ptr.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    // SAFETY: not NULL, and the caller promises 32 readable bytes.
    let bytes = unsafe { std::slice::from_raw_parts(ptr, VERITY_HASH_LEN) };
    let mut out = [0; 32];
    out.copy_from_slice(bytes);
    Ok(out)
}

/// `n` elements at `ptr`; `(NULL, 0)` is the empty slice.
///
/// # Safety
/// When `ptr` is not NULL it points to `n` initialised, aligned `T` that
/// nothing writes during the call.
pub(crate) unsafe fn array<'a, T>(ptr: *const T, n: usize, what: &str) -> Result<&'a [T], Failure> {
    if ptr.is_null() {
        if n == 0 {
            return Ok(&[]);
        }
        return Err(Failure::invalid(format!(
            "{what} is NULL with {n} elements"
        )));
    }
    if n.checked_mul(size_of::<T>())
        .is_none_or(|bytes| bytes > isize::MAX as usize)
    {
        return Err(Failure::invalid(format!("{what} is longer than memory")));
    }
    // SAFETY: not NULL, the size fits an `isize`, and the caller promises
    // `n` initialised and aligned elements that nothing writes meanwhile.
    Ok(unsafe { std::slice::from_raw_parts(ptr, n) })
}

/// A path: a NUL-terminated UTF-8 string, not empty.
///
/// # Safety
/// When `ptr` is not NULL it points to a NUL-terminated string.
pub(crate) unsafe fn path<'a>(ptr: *const c_char) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(Failure::invalid("path is NULL"));
    }
    // SAFETY: not NULL, and the caller promises a NUL-terminated string
    // that lives through the call.
    let path = unsafe { CStr::from_ptr(ptr) };
    let path = path
        .to_str()
        .map_err(|_| Failure::invalid("path is not UTF-8"))?;
    if path.is_empty() {
        return Err(Failure::invalid("path is empty"));
    }
    Ok(path)
}

/// A handle C passes in, borrowed for the call.
///
/// # Safety
/// `ptr` is NULL or a live handle of type `T` from this library that no
/// other thread frees during the call.
pub(crate) unsafe fn handle<'a, T>(ptr: *const T, what: &str) -> Result<&'a T, Failure> {
    // SAFETY: passed on from this function's contract.
    unsafe { ptr.as_ref() }.ok_or_else(|| Failure::invalid(format!("{what} is NULL")))
}

/// A handle C passes in for a call that changes it.
///
/// # Safety
/// As for [`handle`], and no other thread uses the handle during the call.
pub(crate) unsafe fn handle_mut<'a, T>(ptr: *mut T, what: &str) -> Result<&'a mut T, Failure> {
    // SAFETY: passed on from this function's contract.
    unsafe { ptr.as_mut() }.ok_or_else(|| Failure::invalid(format!("{what} is NULL")))
}

/// Where C wants a result written: one `T`, which may be uninitialised.
/// Writing never reads or drops what was there.
pub(crate) struct Out<'a, T> {
    ptr: *mut T,
    call: PhantomData<&'a mut T>,
}

impl<'a, T> Out<'a, T> {
    /// The output at `ptr`, refused when NULL.
    ///
    /// # Safety
    /// When `ptr` is not NULL it points to writable, aligned storage for a
    /// `T` that nothing else uses during the call.
    pub(crate) unsafe fn new(ptr: *mut T, what: &str) -> Result<Out<'a, T>, Failure> {
        if ptr.is_null() {
            return Err(Failure::invalid(format!("{what} is NULL")));
        }
        Ok(Out {
            ptr,
            call: PhantomData,
        })
    }

    /// Writes `value`.
    pub(crate) fn put(&mut self, value: T) {
        // SAFETY: `new`'s contract: writable, aligned storage for a `T`
        // that nothing else uses during the call; `write` drops nothing.
        unsafe { self.ptr.write(value) }
    }
}

/// Where C wants `n` results written (an array it allocated).
pub(crate) struct OutArray<'a, T> {
    ptr: *mut T,
    len: usize,
    call: PhantomData<&'a mut [T]>,
}

impl<'a, T> OutArray<'a, T> {
    /// The array of `n` elements at `ptr`; `(NULL, 0)` is empty.
    ///
    /// # Safety
    /// When `ptr` is not NULL it points to writable, aligned storage for
    /// `n` elements of `T` that nothing else uses during the call.
    pub(crate) unsafe fn new(
        ptr: *mut T,
        n: usize,
        what: &str,
    ) -> Result<OutArray<'a, T>, Failure> {
        if ptr.is_null() && n > 0 {
            return Err(Failure::invalid(format!(
                "{what} is NULL with {n} elements"
            )));
        }
        if n.checked_mul(size_of::<T>())
            .is_none_or(|bytes| bytes > isize::MAX as usize)
        {
            return Err(Failure::invalid(format!("{what} is longer than memory")));
        }
        Ok(OutArray {
            ptr,
            len: n,
            call: PhantomData,
        })
    }

    /// Writes `value` at `index`; an index past the end is a bug of the
    /// library and panics (caught by the guard) rather than writing there.
    pub(crate) fn put(&mut self, index: usize, value: T) {
        assert!(index < self.len, "output index {index} past {}", self.len);
        // SAFETY: `index < len`, and `new`'s contract gives writable,
        // aligned storage for `len` elements; `write` drops nothing.
        unsafe { self.ptr.add(index).write(value) }
    }
}

/// Where C wants a 32-byte hash written.
///
/// # Safety
/// When `ptr` is not NULL it points to 32 writable bytes that nothing else
/// uses during the call.
pub(crate) unsafe fn out_hash<'a>(ptr: *mut u8, what: &str) -> Result<Out<'a, [u8; 32]>, Failure> {
    // SAFETY: 32 writable bytes are a `[u8; 32]`, whose alignment is 1.
    unsafe { Out::new(ptr.cast::<[u8; 32]>(), what) }
}

#[cfg(test)]
mod tests {
    use std::ptr;

    use super::*;
    use crate::status::VERITY_INVALID_ARGUMENT;

    fn refused<T: std::fmt::Debug>(r: Result<T, Failure>) -> String {
        let f = r.expect_err("refused");
        assert_eq!(f.status, VERITY_INVALID_ARGUMENT);
        f.message
    }

    #[test]
    fn null_with_a_length_is_refused_and_null_without_one_is_empty() {
        // SAFETY: every non-NULL pointer below points to as many bytes as
        // its length says.
        unsafe {
            assert!(refused(bytes(ptr::null(), 3, "value")).contains("NULL"));
            assert_eq!(bytes(ptr::null(), 0, "value").expect("empty"), b"");
            assert!(refused(value(ptr::null(), 1)).contains("NULL"));
            assert!(refused(array::<u64>(ptr::null(), 2, "keys")).contains("NULL"));
            assert!(refused(array::<u64>(ptr::dangling(), usize::MAX, "keys")).contains("memory"));
        }
    }

    #[test]
    fn keys_are_one_to_max_key_len_bytes() {
        let long = vec![1u8; VERITY_MAX_KEY_LEN + 1];
        // SAFETY: every non-NULL pointer below points to as many bytes as
        // its length says.
        unsafe {
            assert!(refused(key(ptr::null(), 0)).contains("NULL"));
            assert!(refused(key(long.as_ptr(), 0)).contains("empty"));
            assert!(refused(key(long.as_ptr(), long.len())).contains("VERITY_MAX_KEY_LEN"));
            assert_eq!(key(long.as_ptr(), 2).expect("short key"), &[1, 1]);
        }
    }

    #[test]
    fn oversized_values_are_refused_before_they_are_read() {
        // SAFETY: the length is refused before the pointer is read.
        let r = unsafe { value(ptr::dangling(), VERITY_MAX_VALUE_LEN + 1) };
        assert!(refused(r).contains("VERITY_MAX_VALUE_LEN"));
    }

    #[test]
    fn paths_are_utf8_and_not_empty() {
        // SAFETY: each pointer is a NUL-terminated string or NULL.
        unsafe {
            assert!(refused(path(ptr::null())).contains("NULL"));
            assert!(refused(path(c"\xff\xfe".as_ptr())).contains("UTF-8"));
            assert!(refused(path(c"".as_ptr())).contains("empty"));
            assert_eq!(path(c"/tmp/db".as_ptr()).expect("path"), "/tmp/db");
        }
    }
}
