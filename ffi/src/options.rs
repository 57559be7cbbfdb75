//! `verity_options`: how `verity_open` runs a database.

#![expect(unsafe_code, reason = "exported C functions over a handle C passes in")]

use std::ffi::c_int;

use verity_core::{Options, SyncPolicy};

use crate::guard::quietly;

/// Settings for `verity_open`. Created by `verity_options_new`, freed by
/// `verity_options_free`; `verity_open` only reads it, so it may be freed
/// right after. One thread at a time.
#[derive(Debug, Clone, Default)]
pub struct verity_options {
    pub(crate) opts: Options,
}

/// New settings with the library's defaults: 1 GiB of caches (256 MiB of
/// blocks, 768 MiB of decoded pages), every
/// version kept until `verity_prune`, group commit (one WAL sync covers the
/// versions that wait together), io_uring where the kernel allows it.
/// NULL only if the library panicked.
///
/// Ownership: the caller owns the result and frees it with
/// `verity_options_free`. Thread safety: any thread.
#[no_mangle]
pub extern "C" fn verity_options_new() -> *mut verity_options {
    quietly(std::ptr::null_mut(), || {
        Box::into_raw(Box::new(verity_options::default()))
    })
}

/// Sets the memory for caches, in bytes: a quarter for the block cache
/// (encoded blocks of the store's files), the rest for decoded trie pages.
/// A NULL `o` is ignored.
///
/// Thread safety: not while another thread uses `o`.
///
/// # Safety
/// `o` is NULL or live settings from `verity_options_new`.
#[no_mangle]
pub unsafe extern "C" fn verity_options_set_cache_bytes(o: *mut verity_options, bytes: u64) {
    quietly((), || {
        // SAFETY: the caller promises `o` is NULL or live settings, used by
        // no other thread during the call.
        if let Some(o) = unsafe { o.as_mut() } {
            let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
            o.opts.split_cache(bytes, 25);
        }
    })
}

/// Keeps the newest `n` versions readable and prunes older ones as new
/// versions commit; 0 (the default) keeps every version until
/// `verity_prune`. A NULL `o` is ignored.
///
/// Thread safety: not while another thread uses `o`.
///
/// # Safety
/// `o` is NULL or live settings from `verity_options_new`.
#[no_mangle]
pub unsafe extern "C" fn verity_options_set_retain_versions(o: *mut verity_options, n: u64) {
    quietly((), || {
        // SAFETY: the caller promises `o` is NULL or live settings, used by
        // no other thread during the call.
        if let Some(o) = unsafe { o.as_mut() } {
            o.opts.retain_versions = (n > 0).then_some(n);
        }
    })
}

/// Non-zero: sync the write-ahead log after every version. Zero (the
/// default): group commit, one sync for the versions that wait together.
/// Either way a version is durable once `verity_commit_wait_durable`
/// returns `VERITY_OK`. A NULL `o` is ignored.
///
/// Thread safety: not while another thread uses `o`.
///
/// # Safety
/// `o` is NULL or live settings from `verity_options_new`.
#[no_mangle]
pub unsafe extern "C" fn verity_options_set_sync(o: *mut verity_options, enabled: c_int) {
    quietly((), || {
        // SAFETY: the caller promises `o` is NULL or live settings, used by
        // no other thread during the call.
        if let Some(o) = unsafe { o.as_mut() } {
            o.opts.sync = if enabled != 0 {
                SyncPolicy::EveryCommit
            } else {
                SyncPolicy::Grouped
            };
        }
    })
}

/// Frees settings. NULL is accepted and ignored.
///
/// Ownership: takes `o` back. Thread safety: not while another thread uses
/// `o`.
///
/// # Safety
/// `o` is NULL or settings from `verity_options_new`, freed only once.
#[no_mangle]
pub unsafe extern "C" fn verity_options_free(o: *mut verity_options) {
    quietly((), || {
        if !o.is_null() {
            // SAFETY: `o` came from `Box::into_raw` in `verity_options_new`
            // and the caller hands it back once.
            drop(unsafe { Box::from_raw(o) });
        }
    })
}
