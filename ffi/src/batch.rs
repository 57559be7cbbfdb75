//! `verity_batch`: the writes of one version, staged by `verity_commit`.

#![expect(
    unsafe_code,
    reason = "exported C functions over handles and bytes C passes in"
)]

use verity_core::WriteBatch;

use crate::args;
use crate::error::verity_error;
use crate::guard::{guarded, ok, quietly};
use crate::status::verity_status;

/// The writes of one version: puts and deletes, the last write of a key
/// wins. Created by `verity_batch_new`, freed by `verity_batch_free`;
/// `verity_commit` empties it and the caller may fill it again. One thread
/// at a time.
#[derive(Debug, Default)]
pub struct verity_batch {
    pub(crate) batch: WriteBatch,
}

/// A new, empty batch. NULL only if the library panicked.
///
/// Ownership: the caller owns the result and frees it with
/// `verity_batch_free`. Thread safety: any thread.
#[no_mangle]
pub extern "C" fn verity_batch_new() -> *mut verity_batch {
    quietly(std::ptr::null_mut(), || {
        Box::into_raw(Box::new(verity_batch::default()))
    })
}

/// Sets `key` to `value` in the batch. The bytes are copied.
///
/// Keys are 1 to `VERITY_MAX_KEY_LEN` bytes, values up to
/// `VERITY_MAX_VALUE_LEN` (`value` may be NULL when `value_len` is 0: an
/// empty value). A batch holds at most 131072 writes and 64 MiB of keys and
/// values. `VERITY_INVALID_ARGUMENT` otherwise, and the batch is unchanged.
///
/// Ownership: borrows `key` and `value` for the call. Thread safety: not
/// while another thread uses `b`.
///
/// # Safety
/// `b` is NULL or a live batch; `key` and `value` are NULL or point to
/// `key_len` and `value_len` readable bytes; `err` is NULL or points to
/// writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn verity_batch_put(
    b: *mut verity_batch,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    err: *mut *mut verity_error,
) -> verity_status {
    let body = || {
        // SAFETY: the caller's contract, stated above, for each pointer.
        let (b, key, value) = unsafe {
            (
                args::handle_mut(b, "batch")?,
                args::key(key, key_len)?,
                args::value(value, value_len)?,
            )
        };
        b.batch.put(key, value)?;
        ok()
    };
    // SAFETY: `err` is NULL or writable (the caller's contract).
    unsafe { guarded(err, body) }
}

/// Deletes `key` in the batch (deleting an absent key is not an error).
///
/// Ownership: borrows `key` for the call. Thread safety: not while another
/// thread uses `b`.
///
/// # Safety
/// `b` is NULL or a live batch; `key` is NULL or points to `key_len`
/// readable bytes; `err` is NULL or points to writable storage for one
/// pointer.
#[no_mangle]
pub unsafe extern "C" fn verity_batch_delete(
    b: *mut verity_batch,
    key: *const u8,
    key_len: usize,
    err: *mut *mut verity_error,
) -> verity_status {
    let body = || {
        // SAFETY: the caller's contract, stated above, for each pointer.
        let (b, key) = unsafe { (args::handle_mut(b, "batch")?, args::key(key, key_len)?) };
        b.batch.delete(key)?;
        ok()
    };
    // SAFETY: `err` is NULL or writable (the caller's contract).
    unsafe { guarded(err, body) }
}

/// The number of writes in the batch (0 for NULL).
///
/// Thread safety: not while another thread changes `b`.
///
/// # Safety
/// `b` is NULL or a live batch.
#[no_mangle]
pub unsafe extern "C" fn verity_batch_len(b: *const verity_batch) -> usize {
    quietly(0, || {
        // SAFETY: the caller promises `b` is NULL or a live batch.
        unsafe { b.as_ref() }.map_or(0, |b| b.batch.len())
    })
}

/// Frees a batch. NULL is accepted and ignored.
///
/// Ownership: takes `b` back. Thread safety: not while another thread uses
/// `b`.
///
/// # Safety
/// `b` is NULL or a batch from `verity_batch_new`, freed only once.
#[no_mangle]
pub unsafe extern "C" fn verity_batch_free(b: *mut verity_batch) {
    quietly((), || {
        if !b.is_null() {
            // SAFETY: `b` came from `Box::into_raw` in `verity_batch_new` and
            // the caller hands it back once.
            drop(unsafe { Box::from_raw(b) });
        }
    })
}
