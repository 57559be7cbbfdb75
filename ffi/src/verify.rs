//! Proof verification and the hashes it is stated in. No database is
//! needed: a verifier has only a root and the proof bytes.

#![expect(unsafe_code, reason = "exported C functions over pointers C passes in")]

use verity_core::{
    key_hash, value_hash, verify, verify_range, KeyHash, Proof, RangeProof, ValueHash,
};

use crate::args::{self, out_hash};
use crate::error::verity_error;
use crate::guard::{guarded, ok, quietly};
use crate::status::{
    verity_status, Failure, VERITY_INVALID_ARGUMENT, VERITY_OK, VERITY_PROOF_INVALID,
};

/// One claim of a multiproof: `key` is present with `value`, or absent when
/// `value` is NULL (a present empty value is a non-NULL `value` with
/// `value_len` 0).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct verity_claim {
    /// The key (1 to `VERITY_MAX_KEY_LEN` bytes).
    pub key: *const u8,
    /// Bytes of the key.
    pub key_len: usize,
    /// The value, or NULL to claim the key is absent.
    pub value: *const u8,
    /// Bytes of the value (0 when `value` is NULL).
    pub value_len: usize,
}

/// The claim on one key, as the trie states it.
///
/// # Safety
/// `key` and `value` are NULL or point to `key_len` and `value_len`
/// readable bytes.
unsafe fn claim(
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
) -> Result<(KeyHash, Option<ValueHash>), Failure> {
    // SAFETY: passed on from this function's contract.
    let key = unsafe { args::key(key, key_len)? };
    let value = if value.is_null() {
        if value_len != 0 {
            return Err(Failure::invalid(format!(
                "value is NULL (absent) with a length of {value_len}"
            )));
        }
        None
    } else {
        // SAFETY: passed on from this function's contract.
        Some(value_hash(unsafe { args::value(value, value_len)? }))
    };
    Ok((key_hash(key), value))
}

/// Checks that `proof` (from `verity_snapshot_prove`) shows, under `root`,
/// that `key` has `value`, or that `key` is absent when `value` is NULL.
/// `VERITY_OK` when it does, `VERITY_PROOF_INVALID` when it does not or the
/// bytes are not a proof; `VERITY_INVALID_ARGUMENT` for bad arguments (a
/// NULL `value` with a non-zero `value_len` among them).
///
/// Ownership: borrows everything. Thread safety: any thread.
///
/// # Safety
/// `root` is NULL or points to 32 readable bytes; `key`, `value` and
/// `proof` are NULL or point to `key_len`, `value_len` and `proof_len`
/// readable bytes; `err` is NULL or points to writable storage for one
/// pointer.
/// cbindgen:ptrs-as-arrays=[[root;32]]
#[no_mangle]
pub unsafe extern "C" fn verity_verify_proof(
    root: *const u8,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    proof: *const u8,
    proof_len: usize,
    err: *mut *mut verity_error,
) -> verity_status {
    let body = || {
        // SAFETY: the caller's contract, stated above, for each pointer.
        let (root, claim, proof) = unsafe {
            (
                args::hash(root, "root")?,
                claim(key, key_len, value, value_len)?,
                proof_bytes(proof, proof_len)?,
            )
        };
        let proof = Proof::decode(proof).map_err(|e| Failure::proof(&e))?;
        verify(&root, &proof, &[claim]).map_err(|e| Failure::proof(&e))?;
        ok()
    };
    // SAFETY: `err` is NULL or writable (the caller's contract).
    unsafe { guarded(err, body) }
}

/// Proof bytes: never NULL (an empty proof is not a proof of anything).
///
/// # Safety
/// As for [`args::bytes`].
unsafe fn proof_bytes<'a>(proof: *const u8, len: usize) -> Result<&'a [u8], Failure> {
    if proof.is_null() {
        return Err(Failure::invalid("proof is NULL"));
    }
    // SAFETY: passed on from this function's contract.
    unsafe { args::bytes(proof, len, "proof") }
}

/// Checks a multiproof (from `verity_snapshot_prove_many`) against `n`
/// claims, in any order; the same key twice must carry the same claim
/// (else `VERITY_INVALID_ARGUMENT`). Results as for `verity_verify_proof`.
///
/// Ownership: borrows everything. Thread safety: any thread.
///
/// # Safety
/// `root` is NULL or points to 32 readable bytes; `claims` is NULL or
/// points to `n` claims whose pointers each are NULL or point to their
/// lengths in readable bytes; `proof` is NULL or points to `proof_len`
/// readable bytes; `err` is NULL or points to writable storage for one
/// pointer.
/// cbindgen:ptrs-as-arrays=[[root;32]]
#[no_mangle]
pub unsafe extern "C" fn verity_verify_multiproof(
    root: *const u8,
    claims: *const verity_claim,
    n: usize,
    proof: *const u8,
    proof_len: usize,
    err: *mut *mut verity_error,
) -> verity_status {
    let body = || {
        // SAFETY: the caller's contract, stated above, for each pointer.
        let (root, claims, proof) = unsafe {
            let list = args::array(claims, n, "claims")?;
            let mut claims = Vec::with_capacity(list.len());
            for (i, c) in list.iter().enumerate() {
                claims.push(
                    claim(c.key, c.key_len, c.value, c.value_len)
                        .map_err(|f| Failure::invalid(format!("claims[{i}]: {}", f.message)))?,
                );
            }
            (
                args::hash(root, "root")?,
                claims,
                proof_bytes(proof, proof_len)?,
            )
        };
        let claims = sorted_claims(claims)?;
        let proof = Proof::decode(proof).map_err(|e| Failure::proof(&e))?;
        verify(&root, &proof, &claims).map_err(|e| Failure::proof(&e))?;
        ok()
    };
    // SAFETY: `err` is NULL or writable (the caller's contract).
    unsafe { guarded(err, body) }
}

/// Claims sorted by key hash with repeats removed, as `verify` takes them.
fn sorted_claims(
    mut claims: Vec<(KeyHash, Option<ValueHash>)>,
) -> Result<Vec<(KeyHash, Option<ValueHash>)>, Failure> {
    claims.sort_unstable();
    claims.dedup();
    if claims.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(Failure::invalid("two different claims on one key"));
    }
    Ok(claims)
}

/// Checks a range proof (from `verity_snapshot_prove_range`) under `root`:
/// that it starts at `from`, and that `entries` (64 bytes each: key hash
/// then value hash, in key-hash order, as `verity_snapshot_prove_range`
/// returns them) are every entry between `from` and the proof's upper
/// bound, which is written to `out_to` when it is not NULL (a caller
/// syncing state continues after it, unless it is all `0xff`). Results as
/// for `verity_verify_proof`; `entries_len` not a multiple of 64 is
/// `VERITY_INVALID_ARGUMENT`.
///
/// Ownership: borrows everything. Thread safety: any thread.
///
/// # Safety
/// `root` and `from` are NULL or point to 32 readable bytes; `entries` and
/// `proof` are NULL or point to `entries_len` and `proof_len` readable
/// bytes; `out_to` is NULL or points to 32 writable bytes; `err` is NULL or
/// points to writable storage for one pointer.
/// cbindgen:ptrs-as-arrays=[[root;32], [from;32], [out_to;32]]
#[no_mangle]
pub unsafe extern "C" fn verity_verify_range_proof(
    root: *const u8,
    from: *const u8,
    entries: *const u8,
    entries_len: usize,
    proof: *const u8,
    proof_len: usize,
    out_to: *mut u8,
    err: *mut *mut verity_error,
) -> verity_status {
    let body = || {
        // SAFETY: the caller's contract, stated above, for each pointer.
        let (root, from, entries, proof, to_out) = unsafe {
            let to_out = if out_to.is_null() {
                None
            } else {
                Some(out_hash(out_to, "out_to")?)
            };
            (
                args::hash(root, "root")?,
                args::hash(from, "from")?,
                args::bytes(entries, entries_len, "entries")?,
                proof_bytes(proof, proof_len)?,
                to_out,
            )
        };
        if !entries.len().is_multiple_of(64) {
            return Err(Failure::invalid(format!(
                "entries of {} bytes are not 64-byte records",
                entries.len()
            )));
        }
        let entries: Vec<(KeyHash, ValueHash)> = entries
            .chunks_exact(64)
            .map(|e| {
                let mut k = [0; 32];
                let mut v = [0; 32];
                k.copy_from_slice(&e[..32]);
                v.copy_from_slice(&e[32..]);
                (k, v)
            })
            .collect();
        let proof = RangeProof::decode(proof).map_err(|e| Failure::proof(&e))?;
        if proof.from != from {
            return Err(Failure::new(
                VERITY_PROOF_INVALID,
                "proof rejected: the range does not start at `from`",
            ));
        }
        verify_range(&root, &proof, &entries).map_err(|e| Failure::proof(&e))?;
        if let Some(mut to_out) = to_out {
            to_out.put(proof.to);
        }
        ok()
    };
    // SAFETY: `err` is NULL or writable (the caller's contract).
    unsafe { guarded(err, body) }
}

/// Writes the 32-byte hash the trie files `key` under (the order of
/// iteration and range proofs) to `out`. `VERITY_INVALID_ARGUMENT` for a
/// NULL, empty or oversized key, or a NULL `out`.
///
/// Thread safety: any thread.
///
/// # Safety
/// `key` is NULL or points to `key_len` readable bytes; `out` is NULL or
/// points to 32 writable bytes.
/// cbindgen:ptrs-as-arrays=[[out;32]]
#[no_mangle]
pub unsafe extern "C" fn verity_key_hash(
    key: *const u8,
    key_len: usize,
    out: *mut u8,
) -> verity_status {
    quietly(VERITY_INVALID_ARGUMENT, || {
        // SAFETY: the caller's contract, stated above, for each pointer.
        let checked = unsafe { (args::key(key, key_len), out_hash(out, "out")) };
        match checked {
            (Ok(key), Ok(mut out)) => {
                out.put(key_hash(key));
                VERITY_OK
            }
            _ => VERITY_INVALID_ARGUMENT,
        }
    })
}

/// Writes the 32-byte hash the trie stores for `value` (what a range
/// proof's entries carry) to `out`. `value` may be NULL when `value_len`
/// is 0.
///
/// Thread safety: any thread.
///
/// # Safety
/// `value` is NULL or points to `value_len` readable bytes; `out` is NULL
/// or points to 32 writable bytes.
/// cbindgen:ptrs-as-arrays=[[out;32]]
#[no_mangle]
pub unsafe extern "C" fn verity_value_hash(
    value: *const u8,
    value_len: usize,
    out: *mut u8,
) -> verity_status {
    quietly(VERITY_INVALID_ARGUMENT, || {
        // SAFETY: the caller's contract, stated above, for each pointer.
        let checked = unsafe { (args::value(value, value_len), out_hash(out, "out")) };
        match checked {
            (Ok(value), Ok(mut out)) => {
                out.put(value_hash(value));
                VERITY_OK
            }
            _ => VERITY_INVALID_ARGUMENT,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_claims_are_merged_and_conflicting_ones_refused() {
        let k = key_hash(b"k");
        let v = Some(value_hash(b"v"));
        assert_eq!(
            sorted_claims(vec![(k, v), (k, v)]).expect("same"),
            vec![(k, v)]
        );
        let f = sorted_claims(vec![(k, v), (k, None)]).expect_err("conflict");
        assert_eq!(f.status, VERITY_INVALID_ARGUMENT);
    }
}
