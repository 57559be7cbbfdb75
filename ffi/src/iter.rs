//! `verity_iter`: the entries of a snapshot in key-hash order, a page of
//! entries at a time.

#![expect(
    unsafe_code,
    reason = "exported C functions over handles and pointers C passes in"
)]

use std::collections::VecDeque;
use std::sync::Arc;

use verity_core::{Entry, KeyHash, Snapshot};

use crate::args::{self, Out};
use crate::bytes::verity_bytes;
use crate::db::Liveness;
use crate::error::verity_error;
use crate::guard::{guarded, ok, quietly};
use crate::snapshot::verity_snapshot;
use crate::status::{verity_status, Failure, VERITY_NOT_FOUND};

/// Entries read from the snapshot per refill.
const PAGE_ENTRIES: usize = 256;

/// A cursor over the entries of one version, in key-hash order (the order
/// of the trie, not of the keys). Created by `verity_iter_open`, freed by
/// `verity_iter_free`. One thread at a time. It holds its own reference to
/// the version, so the snapshot it came from may be freed first; after
/// `verity_close` its calls answer `VERITY_CLOSED`.
#[derive(Debug)]
pub struct verity_iter {
    snapshot: Snapshot,
    live: Arc<Liveness>,
    /// Where the next page starts; `None` once the last page was read.
    next_from: Option<KeyHash>,
    page: VecDeque<Entry>,
}

impl verity_iter {
    fn next_entry(&mut self) -> Result<Option<Entry>, Failure> {
        self.live.check()?;
        if self.page.is_empty() {
            let Some(from) = self.next_from else {
                return Ok(None);
            };
            let entries = self.snapshot.iter_from(&from, PAGE_ENTRIES)?;
            self.next_from = match entries.last() {
                Some(last) if entries.len() == PAGE_ENTRIES => successor(&last.key_hash),
                _ => None,
            };
            self.page = entries.into();
        }
        Ok(self.page.pop_front())
    }
}

/// The key hash right after `h`, or `None` after the largest one.
fn successor(h: &KeyHash) -> Option<KeyHash> {
    let mut next = *h;
    for byte in next.iter_mut().rev() {
        if *byte == u8::MAX {
            *byte = 0;
        } else {
            *byte += 1;
            return Some(next);
        }
    }
    None
}

/// Opens a cursor over the snapshot's entries with key hash `>= from`
/// (`from` NULL: from the first entry). Reading waits until the version is
/// merkleized. On failure `*out` is set to NULL.
///
/// Ownership: the caller owns `*out` and frees it with `verity_iter_free`;
/// `s` may be freed before it. Thread safety: any thread.
///
/// # Safety
/// `s` is NULL or a live snapshot; `from` is NULL or points to 32 readable
/// bytes; `out` and `err` are NULL or point to writable storage for one
/// pointer.
/// cbindgen:ptrs-as-arrays=[[from;32]]
#[no_mangle]
pub unsafe extern "C" fn verity_iter_open(
    s: *const verity_snapshot,
    from: *const u8,
    out: *mut *mut verity_iter,
    err: *mut *mut verity_error,
) -> verity_status {
    let body = || {
        // SAFETY: the caller's contract, stated above, for each pointer.
        let (s, from, mut out) = unsafe {
            let mut out = Out::new(out, "out")?;
            out.put(std::ptr::null_mut());
            let s = args::handle(s, "snapshot")?;
            let from = if from.is_null() {
                [0; 32]
            } else {
                args::hash(from, "from")?
            };
            (s, from, out)
        };
        let snapshot = s.open_snapshot()?.clone();
        out.put(Box::into_raw(Box::new(verity_iter {
            snapshot,
            live: s.live.clone(),
            next_from: Some(from),
            page: VecDeque::new(),
        })));
        ok()
    };
    // SAFETY: `err` is NULL or writable (the caller's contract).
    unsafe { guarded(err, body) }
}

/// The next entry: its key in `*out_key`, its value in `*out_value` and,
/// when `out_key_hash` is not NULL, its key hash there. `VERITY_NOT_FOUND`
/// past the last entry (outputs `{NULL, 0}`, `err` not set), and again on
/// every later call.
///
/// Ownership: the caller owns `*out_key` and `*out_value` and frees them
/// with `verity_bytes_free`. Thread safety: not while another thread uses
/// `it`.
///
/// # Safety
/// `it` is NULL or a live cursor; `out_key` and `out_value` are NULL or
/// point to a writable `verity_bytes`; `out_key_hash` is NULL or points to
/// 32 writable bytes; `err` is NULL or points to writable storage for one
/// pointer.
/// cbindgen:ptrs-as-arrays=[[out_key_hash;32]]
#[no_mangle]
pub unsafe extern "C" fn verity_iter_next(
    it: *mut verity_iter,
    out_key: *mut verity_bytes,
    out_value: *mut verity_bytes,
    out_key_hash: *mut u8,
    err: *mut *mut verity_error,
) -> verity_status {
    let body = || {
        // SAFETY: the caller's contract, stated above, for each pointer.
        let (it, mut key_out, mut value_out, hash_out) = unsafe {
            let mut key_out = Out::new(out_key, "out_key")?;
            key_out.put(verity_bytes::EMPTY);
            let mut value_out = Out::new(out_value, "out_value")?;
            value_out.put(verity_bytes::EMPTY);
            let hash_out = if out_key_hash.is_null() {
                None
            } else {
                Some(args::out_hash(out_key_hash, "out_key_hash")?)
            };
            (
                args::handle_mut(it, "iterator")?,
                key_out,
                value_out,
                hash_out,
            )
        };
        let Some(entry) = it.next_entry()? else {
            return Ok(VERITY_NOT_FOUND);
        };
        if let Some(mut hash_out) = hash_out {
            hash_out.put(entry.key_hash);
        }
        key_out.put(verity_bytes::from_vec(entry.key));
        value_out.put(verity_bytes::from_vec(entry.value));
        ok()
    };
    // SAFETY: `err` is NULL or writable (the caller's contract).
    unsafe { guarded(err, body) }
}

/// Frees a cursor. NULL is accepted and ignored. Valid before and after
/// `verity_close`.
///
/// Ownership: takes `it` back. Thread safety: not while another thread uses
/// `it`.
///
/// # Safety
/// `it` is NULL or a cursor from `verity_iter_open`, freed only once.
#[no_mangle]
pub unsafe extern "C" fn verity_iter_free(it: *mut verity_iter) {
    quietly((), || {
        if !it.is_null() {
            // SAFETY: `it` came from `Box::into_raw` in `verity_iter_open`
            // and the caller hands it back once.
            drop(unsafe { Box::from_raw(it) });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::successor;

    #[test]
    fn successor_carries_and_ends_after_the_largest_hash() {
        let mut h = [0u8; 32];
        h[31] = 0xff;
        h[30] = 0x01;
        let mut want = [0u8; 32];
        want[30] = 0x02;
        assert_eq!(successor(&h), Some(want));
        assert_eq!(successor(&[0xff; 32]), None);
    }
}
