//! The C ABI with arbitrary pointers and lengths: every pointer is NULL or
//! points into the input, every length is arbitrary where the pointer is
//! NULL and within the input where it is not (anything else is undefined
//! behaviour in C too). No call may crash or panic; a NULL pointer with a
//! non-zero length is `VERITY_INVALID_ARGUMENT`; what a successful put
//! committed reads back and proves.
#![no_main]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::ptr::{self, NonNull};
use std::sync::{Mutex, OnceLock};

use ffi::*;
use libfuzzer_sys::fuzz_target;

/// One store for the whole run (opening one per input would measure
/// thread start-up, not the ABI).
struct Db(*mut verity_db);
// SAFETY: the handle is documented as usable from any thread.
unsafe impl Send for Db {}

fn db() -> &'static Mutex<Db> {
    static DB: OnceLock<Mutex<Db>> = OnceLock::new();
    DB.get_or_init(|| {
        // In memory where there is a tmpfs: a durable commit is an fsync.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        };
        let dir = dir.expect("tempdir").keep();
        let path = CString::new(dir.to_str().expect("utf-8")).expect("no NUL");
        let mut db = ptr::null_mut();
        // SAFETY: valid path, NULL options (defaults), writable out.
        let s = unsafe { verity_open(path.as_ptr(), ptr::null(), &mut db, ptr::null_mut()) };
        assert_eq!(s, VERITY_OK);
        Mutex::new(Db(db))
    })
}

/// Reads the input: each argument takes a control byte.
struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    /// A pointer and a length: NULL with an arbitrary length, or a slice
    /// of the input.
    fn buf(&mut self) -> (*const u8, usize, Option<&'a [u8]>) {
        let c = self.byte();
        if c < 24 {
            let len = match c % 3 {
                0 => 0,
                1 => usize::from(self.byte()),
                _ => usize::MAX,
            };
            return (ptr::null(), len, None);
        }
        let len = usize::from(self.byte() % 48);
        let start = self.at.min(self.data.len());
        let end = (start + len).min(self.data.len());
        self.at = end;
        let s = &self.data[start..end];
        (
            if s.is_empty() {
                NonNull::dangling().as_ptr()
            } else {
                s.as_ptr()
            },
            s.len(),
            Some(s),
        )
    }
}

fn free_err(e: *mut verity_error) {
    // SAFETY: NULL or an error the library returned.
    unsafe { verity_error_free(e) }
}

fuzz_target!(|data: &[u8]| {
    let guard = db().lock().expect("lock");
    let db = guard.0;
    let mut input = Input { data, at: 0 };
    // SAFETY (for every call below): pointers are NULL or point into
    // `data` with at most the given length; outputs are local variables.
    unsafe {
        let b = verity_batch_new();
        // What the batch took: the last write of each key.
        let mut took: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for _ in 0..(input.byte() % 6) {
            let (k, kl, ks) = input.buf();
            let mut err = ptr::null_mut();
            let s = if input.byte().is_multiple_of(4) {
                let s = verity_batch_delete(b, k, kl, &mut err);
                if s == VERITY_OK {
                    took.insert(ks.expect("a key").to_vec(), None);
                }
                s
            } else {
                let (v, vl, vs) = input.buf();
                let s = verity_batch_put(b, k, kl, v, vl, &mut err);
                if vs.is_none() && vl > 0 {
                    assert_eq!(s, VERITY_INVALID_ARGUMENT);
                }
                if s == VERITY_OK {
                    took.insert(
                        ks.expect("a key").to_vec(),
                        Some(vs.unwrap_or(&[]).to_vec()),
                    );
                }
                s
            };
            if ks.is_none() {
                assert_eq!(s, VERITY_INVALID_ARGUMENT, "a NULL key was taken");
            }
            assert_eq!(s == VERITY_OK, err.is_null());
            free_err(err);
        }
        let n = verity_batch_len(b);
        let mut version = 0;
        if n > 0 {
            let mut c = ptr::null_mut();
            let mut err = ptr::null_mut();
            assert_eq!(verity_commit(db, b, &mut c, &mut err), VERITY_OK);
            assert_eq!(verity_commit_wait_durable(c, &mut err), VERITY_OK);
            version = verity_commit_version(c);
            verity_commit_free(c);
        }
        // The batch stays the caller's after a commit.
        verity_batch_free(b);
        let mut latest = 0;
        assert_eq!(
            verity_latest_version(db, &mut latest, ptr::null_mut()),
            VERITY_OK
        );
        if latest == 0 {
            return;
        }
        let v = if version > 0 {
            version
        } else {
            1 + u64::from(input.byte()) % latest
        };
        let mut snap = ptr::null_mut();
        assert_eq!(
            verity_snapshot_open(db, v, &mut snap, ptr::null_mut()),
            VERITY_OK
        );
        let mut root = [0u8; 32];
        assert_eq!(
            verity_snapshot_root(snap, root.as_mut_ptr(), ptr::null_mut()),
            VERITY_OK
        );
        // A fuzzed key: read and prove it; the proof verifies its answer.
        let (k, kl, ks) = input.buf();
        let mut value = verity_bytes {
            ptr: ptr::null_mut(),
            len: 0,
        };
        let mut err = ptr::null_mut();
        let s = verity_snapshot_get(snap, k, kl, &mut value, &mut err);
        free_err(err);
        if ks.is_none() || kl == 0 {
            assert_eq!(s, VERITY_INVALID_ARGUMENT);
        }
        let mut proof = verity_bytes {
            ptr: ptr::null_mut(),
            len: 0,
        };
        let p = verity_snapshot_prove(snap, k, kl, &mut proof, ptr::null_mut());
        if s == VERITY_OK || s == VERITY_NOT_FOUND {
            assert_eq!(p, VERITY_OK);
            let vptr = match (s, value.ptr.is_null()) {
                (VERITY_OK, true) => NonNull::dangling().as_ptr(),
                (VERITY_OK, false) => value.ptr.cast_const(),
                _ => ptr::null(),
            };
            let st = verity_verify_proof(
                root.as_ptr(),
                k,
                kl,
                vptr,
                value.len,
                proof.ptr,
                proof.len,
                ptr::null_mut(),
            );
            assert_eq!(st, VERITY_OK, "a proof of the store's own answer fails");
        }
        verity_bytes_free(proof);
        verity_bytes_free(value);
        // Every key the batch wrote reads back as written.
        if version > 0 {
            for (key, want) in &took {
                let mut got = verity_bytes {
                    ptr: ptr::null_mut(),
                    len: 0,
                };
                let s =
                    verity_snapshot_get(snap, key.as_ptr(), key.len(), &mut got, ptr::null_mut());
                match want {
                    Some(want) => {
                        assert_eq!(s, VERITY_OK, "a committed put does not read back");
                        let bytes = if got.len == 0 {
                            &[][..]
                        } else {
                            std::slice::from_raw_parts(got.ptr, got.len)
                        };
                        assert_eq!(bytes, &want[..], "a committed put reads back wrong");
                    }
                    None => assert_eq!(s, VERITY_NOT_FOUND, "a committed delete reads back"),
                }
                verity_bytes_free(got);
            }
        }
        // Fuzzed verification: arbitrary root, key, value and proof bytes.
        let (r, rl, _) = input.buf();
        let root_ptr = if rl >= 32 { r } else { ptr::null() };
        let (k, kl, _) = input.buf();
        let (v, vl, _) = input.buf();
        let (pp, pl, ps) = input.buf();
        let mut err = ptr::null_mut();
        let s = verity_verify_proof(root_ptr, k, kl, v, vl, pp, pl, &mut err);
        free_err(err);
        if ps.is_none() && pl > 0 {
            assert_eq!(s, VERITY_INVALID_ARGUMENT);
        }
        let mut to = [0u8; 32];
        let (e, el, _) = input.buf();
        let from = if input.byte().is_multiple_of(2) {
            root.as_ptr()
        } else {
            ptr::null()
        };
        let mut err = ptr::null_mut();
        let _ = verity_verify_range_proof(
            root.as_ptr(),
            from,
            e,
            el,
            pp,
            pl,
            to.as_mut_ptr(),
            &mut err,
        );
        free_err(err);
        verity_snapshot_free(snap);
    }
});
