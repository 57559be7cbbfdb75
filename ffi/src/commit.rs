//! `struct verity_commit`: the promise of a staged version (its root, its
//! durability).

#![expect(
    unsafe_code,
    reason = "exported C functions over handles and pointers C passes in"
)]

use std::sync::Arc;

use verity_core::CommitHandle;

use crate::args::{self, out_hash};
use crate::db::Liveness;
use crate::error::verity_error;
use crate::guard::{guarded, ok, quietly};
use crate::status::verity_status;

/// A version staged by `verity_commit`. Thread-safe: any number of threads
/// may wait on one handle. It keeps the database's state alive until freed;
/// after `verity_close` its calls answer `VERITY_CLOSED`.
///
/// C knows it as `struct verity_commit`, without a typedef: `verity_commit`
/// is also the function that stages a batch, and C has one namespace for
/// both (`cbindgen.toml` renames it and declares the tag by hand).
#[derive(Debug)]
pub struct VerityCommit {
    pub(crate) handle: CommitHandle,
    pub(crate) live: Arc<Liveness>,
}

/// The version the batch was given (0 for a NULL `c`: versions start at 1).
///
/// Thread safety: any thread.
///
/// # Safety
/// `c` is NULL or a live commit handle.
#[no_mangle]
pub unsafe extern "C" fn verity_commit_version(c: *const VerityCommit) -> u64 {
    quietly(0, || {
        // SAFETY: the caller promises `c` is NULL or a live handle.
        unsafe { c.as_ref() }.map_or(0, |c| c.handle.version())
    })
}

/// Waits until the version is merkleized and writes its 32-byte state root
/// to `out_root`. A failure of the commit pipeline (`VERITY_IO`,
/// `VERITY_POISONED`, ...) is reported here and by every later call.
///
/// Thread safety: any thread; many may wait at once.
///
/// # Safety
/// `c` is NULL or a live commit handle; `out_root` is NULL or points to 32
/// writable bytes; `err` is NULL or points to writable storage for one
/// pointer.
/// cbindgen:ptrs-as-arrays=[[out_root;32]]
#[no_mangle]
pub unsafe extern "C" fn verity_commit_root(
    c: *mut VerityCommit,
    out_root: *mut u8,
    err: *mut *mut verity_error,
) -> verity_status {
    let body = || {
        // SAFETY: the caller's contract, stated above, for each pointer.
        let (c, mut out) = unsafe { (args::handle(c, "commit")?, out_hash(out_root, "out_root")?) };
        c.live.check()?;
        out.put(c.handle.root()?);
        ok()
    };
    // SAFETY: `err` is NULL or writable (the caller's contract).
    unsafe { guarded(err, body) }
}

/// Waits until the version is durable (its write-ahead log group synced).
///
/// Thread safety: any thread; many may wait at once.
///
/// # Safety
/// `c` is NULL or a live commit handle; `err` is NULL or points to writable
/// storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn verity_commit_wait_durable(
    c: *mut VerityCommit,
    err: *mut *mut verity_error,
) -> verity_status {
    let body = || {
        // SAFETY: the caller's contract, stated above.
        let c = unsafe { args::handle(c, "commit")? };
        c.live.check()?;
        c.handle.wait_durable()?;
        ok()
    };
    // SAFETY: `err` is NULL or writable (the caller's contract).
    unsafe { guarded(err, body) }
}

/// Frees a commit handle (the version stays committed). NULL is accepted
/// and ignored. Valid before and after `verity_close`.
///
/// Ownership: takes `c` back. Thread safety: no other call on `c` may run
/// alongside or after it.
///
/// # Safety
/// `c` is NULL or a handle from `verity_commit`, freed only once.
#[no_mangle]
pub unsafe extern "C" fn verity_commit_free(c: *mut VerityCommit) {
    quietly((), || {
        if !c.is_null() {
            // SAFETY: `c` came from `Box::into_raw` in `verity_commit` and
            // the caller hands it back once.
            drop(unsafe { Box::from_raw(c) });
        }
    })
}
