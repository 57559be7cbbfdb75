//! The boundary every exported function runs inside: a panic never unwinds
//! into C (it would abort the process), it becomes `VERITY_PANIC` with the
//! panic's message; a failure becomes a status and, when the caller asked
//! for it, a `verity_error`.

#![expect(unsafe_code, reason = "writes the caller's error out-pointer")]

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::verity_error;
use crate::status::{verity_status, Failure, VERITY_OK};

/// The result of a call's body: a status to return (`VERITY_OK` or
/// `VERITY_NOT_FOUND`, neither of which sets `err`), or a failure.
pub(crate) type Outcome = Result<verity_status, Failure>;

/// Runs `body`; a failure or a panic is written to `*err` (when `err` is not
/// NULL) and its status returned.
///
/// # Safety
/// `err` is NULL or points to writable storage for one pointer (each
/// exported function's precondition, stated in its `# Safety` section).
pub(crate) unsafe fn guarded(
    err: *mut *mut verity_error,
    body: impl FnOnce() -> Outcome,
) -> verity_status {
    // The handles a panicking body touched may be half-updated; the status
    // tells the caller to free them and not use them again.
    let failure = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(status)) => return status,
        Ok(Err(failure)) => failure,
        Err(payload) => Failure::panic(payload.as_ref()),
    };
    // SAFETY: passed on from this function's contract.
    unsafe { report(err, &failure) };
    failure.status
}

/// Runs a body that has no status to return (constructors, accessors, free
/// functions): a panic is caught and `fallback` returned instead.
pub(crate) fn quietly<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// Hands a new `verity_error` for `failure` to the caller through `err`.
///
/// # Safety
/// As for [`guarded`].
unsafe fn report(err: *mut *mut verity_error, failure: &Failure) {
    if err.is_null() {
        return;
    }
    let boxed = Box::into_raw(Box::new(verity_error::from_failure(failure)));
    // SAFETY: `err` is not NULL and, by this function's contract, points
    // to storage for one pointer that the caller owns; `write` does not
    // read (or drop) what was there.
    unsafe { err.write(boxed) };
}

/// `Ok(VERITY_OK)`: the body of a call that succeeded.
pub(crate) fn ok() -> Outcome {
    Ok(VERITY_OK)
}

#[cfg(test)]
mod tests {
    use std::ffi::CStr;
    use std::ptr;

    use super::*;
    use crate::error::{verity_error_code, verity_error_free, verity_error_message};
    use crate::status::{VERITY_INVALID_ARGUMENT, VERITY_NOT_FOUND, VERITY_PANIC};

    #[test]
    fn a_panic_becomes_verity_panic_with_its_message() {
        let mut err: *mut verity_error = ptr::null_mut();
        // SAFETY: `err` is a local pointer, then the error `guarded` set,
        // freed once.
        unsafe {
            let status = guarded(&mut err, || panic!("the body gave up"));
            assert_eq!(status, VERITY_PANIC);
            assert!(!err.is_null());
            assert_eq!(verity_error_code(err), VERITY_PANIC);
            let message = CStr::from_ptr(verity_error_message(err));
            let message = message.to_str().expect("UTF-8");
            assert!(message.contains("the body gave up"), "{message}");
            verity_error_free(err);
        }
    }

    #[test]
    fn err_is_set_only_on_failure_and_may_be_null() {
        let mut err: *mut verity_error = ptr::null_mut();
        // SAFETY: `err` is a local pointer or NULL.
        unsafe {
            assert_eq!(guarded(&mut err, ok), VERITY_OK);
            assert!(err.is_null());
            assert_eq!(guarded(&mut err, || Ok(VERITY_NOT_FOUND)), VERITY_NOT_FOUND);
            assert!(err.is_null(), "not found is an answer, not a failure");
            let status = guarded(ptr::null_mut(), || Err(Failure::invalid("no key")));
            assert_eq!(status, VERITY_INVALID_ARGUMENT);
            assert_eq!(guarded(ptr::null_mut(), || panic!("quiet")), VERITY_PANIC);
        }
    }

    #[test]
    fn a_nul_byte_in_a_message_does_not_cut_it() {
        let mut err: *mut verity_error = ptr::null_mut();
        // SAFETY: `err` is a local pointer, then the error `guarded` set,
        // freed once.
        unsafe {
            guarded(&mut err, || Err(Failure::invalid("before\0after")));
            let message = CStr::from_ptr(verity_error_message(err));
            assert!(message.to_string_lossy().ends_with("after"));
            verity_error_free(err);
        }
    }

    #[test]
    fn quietly_returns_the_fallback_on_panic() {
        assert_eq!(quietly(7, || panic!("no")), 7);
        assert_eq!(quietly(7, || 8), 8);
    }
}
