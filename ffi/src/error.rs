//! `verity_error`: the status and message of a failed call.

#![expect(
    unsafe_code,
    reason = "exported C functions that read a handle C passes in"
)]

use std::ffi::{c_char, CString};

use crate::guard::quietly;
use crate::status::{verity_status, Failure, VERITY_INVALID_ARGUMENT};

/// Why a call failed: a status and a message. Created by the library on
/// failure (only when the caller passed a non-NULL `err`), freed by the
/// caller with `verity_error_free`. Immutable, so it may be read from any
/// thread.
#[derive(Debug)]
pub struct verity_error {
    status: verity_status,
    message: CString,
}

impl verity_error {
    pub(crate) fn from_failure(f: &Failure) -> verity_error {
        // A message never holds a NUL byte, or C would see it cut short.
        let text = f.message.replace('\0', "\u{FFFD}");
        let message = CString::new(text).unwrap_or_default();
        verity_error {
            status: f.status,
            message,
        }
    }
}

/// The status of a failure (never `VERITY_OK`); `VERITY_INVALID_ARGUMENT`
/// for a NULL `e`.
///
/// Thread safety: any thread, as long as `e` is not being freed.
///
/// # Safety
/// `e` is NULL or an error returned by this library and not yet freed.
#[no_mangle]
pub unsafe extern "C" fn verity_error_code(e: *const verity_error) -> verity_status {
    quietly(VERITY_INVALID_ARGUMENT, || {
        // SAFETY: the caller promises `e` is NULL or a live error.
        let e = unsafe { e.as_ref() };
        e.map_or(VERITY_INVALID_ARGUMENT, |e| e.status)
    })
}

/// The message of a failure: a NUL-terminated UTF-8 string owned by `e`,
/// valid until `verity_error_free(e)`. A NULL `e` gives a static empty
/// string (never NULL).
///
/// Thread safety: any thread, as long as `e` is not being freed.
///
/// # Safety
/// `e` is NULL or an error returned by this library and not yet freed.
#[no_mangle]
pub unsafe extern "C" fn verity_error_message(e: *const verity_error) -> *const c_char {
    quietly(c"".as_ptr(), || {
        // SAFETY: the caller promises `e` is NULL or a live error.
        let e = unsafe { e.as_ref() };
        e.map_or(c"".as_ptr(), |e| e.message.as_ptr())
    })
}

/// Frees an error. NULL is accepted and ignored.
///
/// Ownership: takes `e` back; neither `e` nor its message may be used
/// afterwards. Thread safety: no other call may use `e` at the same time.
///
/// # Safety
/// `e` is NULL or an error returned by this library, freed only once.
#[no_mangle]
pub unsafe extern "C" fn verity_error_free(e: *mut verity_error) {
    quietly((), || {
        if !e.is_null() {
            // SAFETY: `e` came from `Box::into_raw` in `guard::report` and
            // the caller hands it back once.
            drop(unsafe { Box::from_raw(e) });
        }
    })
}
