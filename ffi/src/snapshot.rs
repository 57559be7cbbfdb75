//! `verity_snapshot`: a consistent view of one version; reads and proofs.

#![expect(
    unsafe_code,
    reason = "exported C functions over handles and pointers C passes in"
)]

use std::sync::Arc;

use verity_core::Snapshot;

use crate::args::{self, out_hash, Out, OutArray};
use crate::bytes::{verity_bytes, verity_slice};
use crate::db::{verity_db, Liveness};
use crate::error::verity_error;
use crate::guard::{guarded, ok, quietly};
use crate::status::{verity_status, Failure, VERITY_NOT_FOUND};

/// Most entries one range proof covers: a larger limit is taken as this.
pub const VERITY_MAX_RANGE_ENTRIES: usize = 65536;

/// A consistent view of one version. Thread-safe: any number of threads may
/// read through one handle at once; commits never block it. It keeps the
/// database's state alive until freed; after `verity_close` its calls
/// answer `VERITY_CLOSED`.
#[derive(Debug)]
pub struct verity_snapshot {
    pub(crate) snapshot: Snapshot,
    pub(crate) live: Arc<Liveness>,
}

impl verity_snapshot {
    /// The snapshot, or `VERITY_CLOSED`.
    pub(crate) fn open_snapshot(&self) -> Result<&Snapshot, Failure> {
        self.live.check()?;
        Ok(&self.snapshot)
    }
}

/// Opens a snapshot of `version`, which must be staged (at most
/// `verity_latest_version`: else `VERITY_VERSION_UNKNOWN`) and not pruned
/// (else `VERITY_VERSION_PRUNED`). Version 0 is the empty state before the
/// first commit. A staged version's values are readable at once; its root
/// and proofs wait until it is merkleized. On failure `*out` is set to
/// NULL.
///
/// Ownership: the caller owns `*out` and frees it with
/// `verity_snapshot_free`. Thread safety: any thread.
///
/// # Safety
/// `db` is NULL or a live database handle; `out` and `err` are NULL or
/// point to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn verity_snapshot_open(
    db: *mut verity_db,
    version: u64,
    out: *mut *mut verity_snapshot,
    err: *mut *mut verity_error,
) -> verity_status {
    let body = || {
        // SAFETY: the caller's contract, stated above, for each pointer.
        let (db, mut out) = unsafe {
            let mut out = Out::new(out, "out")?;
            out.put(std::ptr::null_mut());
            (args::handle(db, "db")?, out)
        };
        let snapshot = db.open_db()?.snapshot(version)?;
        out.put(Box::into_raw(Box::new(verity_snapshot {
            snapshot,
            live: db.live.clone(),
        })));
        ok()
    };
    // SAFETY: `err` is NULL or writable (the caller's contract).
    unsafe { guarded(err, body) }
}

/// The version the snapshot sees (0 for a NULL `s`).
///
/// Thread safety: any thread.
///
/// # Safety
/// `s` is NULL or a live snapshot.
#[no_mangle]
pub unsafe extern "C" fn verity_snapshot_version(s: *const verity_snapshot) -> u64 {
    quietly(0, || {
        // SAFETY: the caller promises `s` is NULL or a live snapshot.
        unsafe { s.as_ref() }.map_or(0, |s| s.snapshot.version())
    })
}

/// The value of `key` in `*out_value`, or `VERITY_NOT_FOUND` when the key
/// is absent (then `*out_value` is `{NULL, 0}` and `err` is not set). An
/// empty value is `{NULL, 0}` with `VERITY_OK`.
///
/// Ownership: borrows `key`; the caller owns `*out_value` and frees it with
/// `verity_bytes_free`. Thread safety: any thread.
///
/// # Safety
/// `s` is NULL or a live snapshot; `key` is NULL or points to `key_len`
/// readable bytes; `out_value` is NULL or points to a writable
/// `verity_bytes`; `err` is NULL or points to writable storage for one
/// pointer.
#[no_mangle]
pub unsafe extern "C" fn verity_snapshot_get(
    s: *const verity_snapshot,
    key: *const u8,
    key_len: usize,
    out_value: *mut verity_bytes,
    err: *mut *mut verity_error,
) -> verity_status {
    let body = || {
        // SAFETY: the caller's contract, stated above, for each pointer.
        let (s, key, mut out) = unsafe {
            let mut out = Out::new(out_value, "out_value")?;
            out.put(verity_bytes::EMPTY);
            (args::handle(s, "snapshot")?, args::key(key, key_len)?, out)
        };
        match s.open_snapshot()?.get(key)? {
            Some(value) => {
                out.put(verity_bytes::from_vec(value));
                ok()
            }
            None => Ok(VERITY_NOT_FOUND),
        }
    };
    // SAFETY: `err` is NULL or writable (the caller's contract).
    unsafe { guarded(err, body) }
}

/// The values of `n` keys at once (the disk reads are submitted together):
/// for each `i < n`, `out_found[i]` is 1 and `out_values[i]` the value when
/// `keys[i]` is present, else 0 and `{NULL, 0}`. Every key is checked as in
/// `verity_snapshot_get`; on failure every output is `{NULL, 0}` and 0.
///
/// Ownership: borrows `keys` and the bytes they point to; `out_values` and
/// `out_found` are arrays of `n` the caller allocated; the caller owns each
/// `out_values[i]` and frees it with `verity_bytes_free`. Thread safety:
/// any thread.
///
/// # Safety
/// `s` is NULL or a live snapshot; `keys` is NULL or points to `n`
/// `verity_slice`, each NULL or pointing to its `len` readable bytes;
/// `out_values` and `out_found` are NULL or point to `n` writable elements;
/// `err` is NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn verity_snapshot_get_many(
    s: *const verity_snapshot,
    keys: *const verity_slice,
    n: usize,
    out_values: *mut verity_bytes,
    out_found: *mut u8,
    err: *mut *mut verity_error,
) -> verity_status {
    let body = || {
        // SAFETY: the caller's contract, stated above, for each pointer.
        let (s, keys, mut values, mut found) = unsafe {
            let mut values = OutArray::new(out_values, n, "out_values")?;
            let mut found = OutArray::new(out_found, n, "out_found")?;
            for i in 0..n {
                values.put(i, verity_bytes::EMPTY);
                found.put(i, 0);
            }
            let s = args::handle(s, "snapshot")?;
            (s, key_list(keys, n)?, values, found)
        };
        let got = s.open_snapshot()?.get_many(&keys)?;
        for (i, value) in got.into_iter().enumerate() {
            if let Some(value) = value {
                values.put(i, verity_bytes::from_vec(value));
                found.put(i, 1);
            }
        }
        ok()
    };
    // SAFETY: `err` is NULL or writable (the caller's contract).
    unsafe { guarded(err, body) }
}

/// The keys of a batched call, each checked.
///
/// # Safety
/// `keys` is NULL or points to `n` `verity_slice`, each NULL or pointing to
/// its `len` readable bytes, for the whole call.
pub(crate) unsafe fn key_list<'a>(
    keys: *const verity_slice,
    n: usize,
) -> Result<Vec<&'a [u8]>, Failure> {
    // SAFETY: passed on from this function's contract.
    let slices = unsafe { args::array(keys, n, "keys")? };
    slices
        .iter()
        .enumerate()
        .map(|(i, k)| {
            // SAFETY: passed on from this function's contract.
            unsafe { args::key(k.ptr, k.len) }
                .map_err(|f| Failure::invalid(format!("keys[{i}]: {}", f.message)))
        })
        .collect()
}

/// The 32-byte state root of the snapshot's version, written to
/// `out_root`; waits until the version is merkleized.
///
/// Thread safety: any thread.
///
/// # Safety
/// `s` is NULL or a live snapshot; `out_root` is NULL or points to 32
/// writable bytes; `err` is NULL or points to writable storage for one
/// pointer.
/// cbindgen:ptrs-as-arrays=[[out_root;32]]
#[no_mangle]
pub unsafe extern "C" fn verity_snapshot_root(
    s: *const verity_snapshot,
    out_root: *mut u8,
    err: *mut *mut verity_error,
) -> verity_status {
    let body = || {
        // SAFETY: the caller's contract, stated above, for each pointer.
        let (s, mut out) = unsafe {
            (
                args::handle(s, "snapshot")?,
                out_hash(out_root, "out_root")?,
            )
        };
        out.put(s.open_snapshot()?.root()?);
        ok()
    };
    // SAFETY: `err` is NULL or writable (the caller's contract).
    unsafe { guarded(err, body) }
}

/// A proof of the value, or of the absence, of `key` against the
/// snapshot's root, in its wire form (`docs/format.md`, section 7), in
/// `*out_proof`; checked by `verity_verify_proof`. Waits until the version
/// is merkleized.
///
/// Ownership: borrows `key`; the caller owns `*out_proof` and frees it with
/// `verity_bytes_free`. Thread safety: any thread.
///
/// # Safety
/// `s` is NULL or a live snapshot; `key` is NULL or points to `key_len`
/// readable bytes; `out_proof` is NULL or points to a writable
/// `verity_bytes`; `err` is NULL or points to writable storage for one
/// pointer.
#[no_mangle]
pub unsafe extern "C" fn verity_snapshot_prove(
    s: *const verity_snapshot,
    key: *const u8,
    key_len: usize,
    out_proof: *mut verity_bytes,
    err: *mut *mut verity_error,
) -> verity_status {
    let body = || {
        // SAFETY: the caller's contract, stated above, for each pointer.
        let (s, key, mut out) = unsafe {
            let mut out = Out::new(out_proof, "out_proof")?;
            out.put(verity_bytes::EMPTY);
            (args::handle(s, "snapshot")?, args::key(key, key_len)?, out)
        };
        let proof = s.open_snapshot()?.prove(key)?;
        out.put(verity_bytes::from_vec(proof.encode()));
        ok()
    };
    // SAFETY: `err` is NULL or writable (the caller's contract).
    unsafe { guarded(err, body) }
}

/// One proof for `n` keys (a multiproof: shared nodes appear once), each
/// shown present with its value or absent; checked by
/// `verity_verify_multiproof`. Keys may repeat and come in any order.
///
/// Ownership: borrows `keys`; the caller owns `*out_proof` and frees it
/// with `verity_bytes_free`. Thread safety: any thread.
///
/// # Safety
/// `s` is NULL or a live snapshot; `keys` is NULL or points to `n`
/// `verity_slice`, each NULL or pointing to its `len` readable bytes;
/// `out_proof` is NULL or points to a writable `verity_bytes`; `err` is
/// NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn verity_snapshot_prove_many(
    s: *const verity_snapshot,
    keys: *const verity_slice,
    n: usize,
    out_proof: *mut verity_bytes,
    err: *mut *mut verity_error,
) -> verity_status {
    let body = || {
        // SAFETY: the caller's contract, stated above, for each pointer.
        let (s, keys, mut out) = unsafe {
            let mut out = Out::new(out_proof, "out_proof")?;
            out.put(verity_bytes::EMPTY);
            (args::handle(s, "snapshot")?, key_list(keys, n)?, out)
        };
        let proof = s.open_snapshot()?.prove_many(&keys)?;
        out.put(verity_bytes::from_vec(proof.encode()));
        ok()
    };
    // SAFETY: `err` is NULL or writable (the caller's contract).
    unsafe { guarded(err, body) }
}

/// A range proof, for state sync: up to `limit` entries (1 to
/// `VERITY_MAX_RANGE_ENTRIES`; larger is taken as the maximum) with key
/// hash `>= from`, in key-hash order, and a proof that no entry between
/// `from` and the proof's upper bound is missing.
///
/// `*out_entries` holds the entries back to back, 64 bytes each: the key
/// hash (`verity_key_hash`) then the value hash (`verity_value_hash`);
/// their number is `len / 64`. `*out_proof` is the range proof's wire form;
/// `verity_verify_range_proof` checks both and gives the upper bound (the
/// last entry's key hash when `limit` entries came back, else all `0xff`:
/// the range reached the end).
///
/// Ownership: the caller owns both outputs and frees them with
/// `verity_bytes_free`. Thread safety: any thread.
///
/// # Safety
/// `s` is NULL or a live snapshot; `from` is NULL or points to 32 readable
/// bytes; `out_entries` and `out_proof` are NULL or point to a writable
/// `verity_bytes`; `err` is NULL or points to writable storage for one
/// pointer.
/// cbindgen:ptrs-as-arrays=[[from;32]]
#[no_mangle]
pub unsafe extern "C" fn verity_snapshot_prove_range(
    s: *const verity_snapshot,
    from: *const u8,
    limit: usize,
    out_entries: *mut verity_bytes,
    out_proof: *mut verity_bytes,
    err: *mut *mut verity_error,
) -> verity_status {
    let body = || {
        // SAFETY: the caller's contract, stated above, for each pointer.
        let (s, from, mut entries_out, mut proof_out) = unsafe {
            let mut entries_out = Out::new(out_entries, "out_entries")?;
            entries_out.put(verity_bytes::EMPTY);
            let mut proof_out = Out::new(out_proof, "out_proof")?;
            proof_out.put(verity_bytes::EMPTY);
            let s = args::handle(s, "snapshot")?;
            (s, args::hash(from, "from")?, entries_out, proof_out)
        };
        if limit == 0 {
            return Err(Failure::invalid(
                "a range proof needs a limit of at least 1",
            ));
        }
        let limit = limit.min(VERITY_MAX_RANGE_ENTRIES);
        let (entries, proof) = s.open_snapshot()?.prove_range(&from, limit)?;
        let mut flat = Vec::with_capacity(entries.len() * 64);
        for (key_hash, value_hash) in &entries {
            flat.extend_from_slice(key_hash);
            flat.extend_from_slice(value_hash);
        }
        entries_out.put(verity_bytes::from_vec(flat));
        proof_out.put(verity_bytes::from_vec(proof.encode()));
        ok()
    };
    // SAFETY: `err` is NULL or writable (the caller's contract).
    unsafe { guarded(err, body) }
}

/// Frees a snapshot. NULL is accepted and ignored. Valid before and after
/// `verity_close`.
///
/// Ownership: takes `s` back. Thread safety: no other call on `s` may run
/// alongside or after it.
///
/// # Safety
/// `s` is NULL or a handle from `verity_snapshot_open`, freed only once.
#[no_mangle]
pub unsafe extern "C" fn verity_snapshot_free(s: *mut verity_snapshot) {
    quietly((), || {
        if !s.is_null() {
            // SAFETY: `s` came from `Box::into_raw` in
            // `verity_snapshot_open` and the caller hands it back once.
            drop(unsafe { Box::from_raw(s) });
        }
    })
}
