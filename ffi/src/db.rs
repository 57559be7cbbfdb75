//! `verity_db`: open, commit, prune, figures, close.
//!
//! The handle owns the `Db`; every snapshot, commit and iterator handle
//! made from it holds the `Db`'s shared state (an `Arc`) and the handle's
//! [`Liveness`], so after `verity_close` they answer `VERITY_CLOSED` and
//! their memory stays valid until they are freed.

#![expect(
    unsafe_code,
    reason = "exported C functions over handles and pointers C passes in"
)]

use std::ffi::c_char;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use verity_core::Db;

use crate::args::{self, Out};
use crate::batch::verity_batch;
use crate::commit::VerityCommit;
use crate::error::verity_error;
use crate::guard::{guarded, ok, quietly};
use crate::options::verity_options;
use crate::status::{verity_status, Failure};

/// Whether the database a handle came from is still open; shared by the
/// database handle and every handle made from it.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    closed: AtomicBool,
}

impl Liveness {
    /// `VERITY_CLOSED` once `verity_close` has begun.
    pub(crate) fn check(&self) -> Result<(), Failure> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Failure::closed());
        }
        Ok(())
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

/// An open database. Thread-safe: any number of threads may call functions
/// on one handle at once, except `verity_close`, which no other call on the
/// same handle may run alongside or follow.
#[derive(Debug)]
pub struct verity_db {
    pub(crate) db: Db,
    pub(crate) live: Arc<Liveness>,
}

impl verity_db {
    /// The `Db`, or `VERITY_CLOSED`.
    pub(crate) fn open_db(&self) -> Result<&Db, Failure> {
        self.live.check()?;
        Ok(&self.db)
    }
}

/// Figures of a database now (`verity_db_stats`). Fields are appended only
/// with a new major ABI version, since the caller allocates the struct.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct verity_stats {
    /// The newest staged version (what `verity_latest_version` returns).
    pub latest_staged: u64,
    /// The newest version whose root is known.
    pub latest_merkleized: u64,
    /// The newest durable version.
    pub latest_durable: u64,
    /// The oldest readable version.
    pub oldest_retained: u64,
    /// Versions staged and not yet merkleized.
    pub in_flight: u64,
    /// Decoded trie pages cached.
    pub page_cache_pages: u64,
    /// Bytes of memory those pages hold.
    pub page_cache_bytes: u64,
    /// Page reads served from the page cache.
    pub page_cache_hits: u64,
    /// Page reads that went to the store.
    pub page_cache_misses: u64,
    /// Bytes in the block cache.
    pub block_cache_bytes: u64,
    /// Block cache hits.
    pub block_cache_hits: u64,
    /// Block cache misses (each one a disk read).
    pub block_cache_misses: u64,
    /// Live segment files.
    pub segment_files: u64,
    /// Bytes of live segment files.
    pub segment_bytes: u64,
    /// Bytes of the current write-ahead log file.
    pub wal_bytes: u64,
    /// Bytes waiting for flush or compaction.
    pub compaction_debt_bytes: u64,
    /// Flushes done since open.
    pub flushes: u64,
    /// Compactions done since open.
    pub compactions: u64,
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Opens (or creates) the store in the directory `path`, a NUL-terminated
/// UTF-8 string. `opts` may be NULL (the defaults of `verity_options_new`).
/// On success `*out` is the new handle; on failure it is set to NULL.
/// `VERITY_BUSY` when the store is open elsewhere (in this process or
/// another); `VERITY_INVALID_ARGUMENT` for a NULL, empty or non-UTF-8 path.
///
/// Ownership: borrows `path` and `opts` (both may be freed after the call);
/// the caller owns `*out` and closes it with `verity_close`. Thread safety:
/// any thread.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `opts` is NULL or live
/// settings; `out` is NULL or points to writable storage for one pointer;
/// `err` is NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn verity_open(
    path: *const c_char,
    opts: *const verity_options,
    out: *mut *mut verity_db,
    err: *mut *mut verity_error,
) -> verity_status {
    let body = || {
        // SAFETY: the caller's contract, stated above, for each pointer.
        let (mut out, path, opts) = unsafe {
            let mut out = Out::new(out, "out")?;
            out.put(std::ptr::null_mut());
            (out, args::path(path)?, opts.as_ref())
        };
        let opts = opts.map(|o| o.opts.clone()).unwrap_or_default();
        let db = Db::open(path, opts)?;
        out.put(Box::into_raw(Box::new(verity_db {
            db,
            live: Arc::new(Liveness::default()),
        })));
        ok()
    };
    // SAFETY: `err` is NULL or writable (the caller's contract).
    unsafe { guarded(err, body) }
}

/// Closes the database: waits until every staged version is durable, stops
/// the commit thread, releases the store (it may be opened again at once)
/// and frees `db`. NULL is accepted and ignored. Snapshot, commit and
/// iterator handles made from `db` stay valid to call and to free; they
/// answer `VERITY_CLOSED`. A failure of the last sync is not reported here:
/// wait for the last commit with `verity_commit_wait_durable` first to see
/// it.
///
/// Ownership: takes `db` back. Thread safety: no other call on `db` may run
/// alongside or after it (calls on handles made from `db` may).
///
/// # Safety
/// `db` is NULL or a handle from `verity_open`, closed only once.
#[no_mangle]
pub unsafe extern "C" fn verity_close(db: *mut verity_db) {
    quietly((), || {
        if db.is_null() {
            return;
        }
        // SAFETY: `db` came from `Box::into_raw` in `verity_open` and the
        // caller hands it back once, with no other call on it running.
        let db = unsafe { Box::from_raw(db) };
        db.live.close();
        // Errors were reported to the commit handles; a caller who needs
        // the last one waits on its last commit before closing.
        let _ = db.db.close();
    })
}

/// Stages the batch's writes as the next version and returns at once with
/// `*out`, the version's commit handle: its root and durability are awaited
/// through it while the caller stages the next version. Waits while the
/// commit pipeline is full (backpressure). The batch is emptied by the call
/// whatever its status (unless an argument is NULL) and stays the caller's,
/// to refill or free. An empty batch is a version with no writes. On
/// failure `*out` is set to NULL.
///
/// Ownership: borrows `b`; the caller owns `*out` and frees it with
/// `verity_commit_free`. Thread safety: any thread; calls on one database
/// are ordered by the database (each gets the next version), and `b` may
/// not be used by another thread during the call.
///
/// # Safety
/// `db` is NULL or a live database handle; `b` is NULL or a live batch;
/// `out` and `err` are NULL or point to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn verity_commit(
    db: *mut verity_db,
    b: *mut verity_batch,
    out: *mut *mut VerityCommit,
    err: *mut *mut verity_error,
) -> verity_status {
    let body = || {
        // SAFETY: the caller's contract, stated above, for each pointer.
        let (handle, b, mut out) = unsafe {
            let mut out = Out::new(out, "out")?;
            out.put(std::ptr::null_mut());
            (args::handle(db, "db")?, args::handle_mut(b, "batch")?, out)
        };
        let batch = std::mem::take(&mut b.batch);
        let staged = handle.open_db()?.commit(batch)?;
        out.put(Box::into_raw(Box::new(VerityCommit {
            handle: staged,
            live: handle.live.clone(),
        })));
        ok()
    };
    // SAFETY: `err` is NULL or writable (the caller's contract).
    unsafe { guarded(err, body) }
}

/// The newest staged version in `*out` (0 for a new store): the newest
/// version `verity_snapshot_open` accepts.
///
/// Thread safety: any thread.
///
/// # Safety
/// `db` is NULL or a live database handle; `out` is NULL or points to a
/// writable `uint64_t`; `err` is NULL or points to writable storage for one
/// pointer.
#[no_mangle]
pub unsafe extern "C" fn verity_latest_version(
    db: *const verity_db,
    out: *mut u64,
    err: *mut *mut verity_error,
) -> verity_status {
    let body = || {
        // SAFETY: the caller's contract, stated above, for each pointer.
        let (db, mut out) = unsafe { (args::handle(db, "db")?, Out::new(out, "out")?) };
        out.put(db.open_db()?.latest()?.version());
        ok()
    };
    // SAFETY: `err` is NULL or writable (the caller's contract).
    unsafe { guarded(err, body) }
}

/// Makes versions below `before_version` unreadable; their history is
/// dropped by compaction. `before_version` may not pass the newest durable
/// version (`VERITY_INVALID_ARGUMENT`). Open snapshots of pruned versions
/// answer `VERITY_VERSION_PRUNED` from then on.
///
/// Thread safety: any thread.
///
/// # Safety
/// `db` is NULL or a live database handle; `err` is NULL or points to
/// writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn verity_prune(
    db: *mut verity_db,
    before_version: u64,
    err: *mut *mut verity_error,
) -> verity_status {
    let body = || {
        // SAFETY: the caller's contract, stated above.
        let db = unsafe { args::handle(db, "db")? };
        db.open_db()?.prune(before_version)?;
        ok()
    };
    // SAFETY: `err` is NULL or writable (the caller's contract).
    unsafe { guarded(err, body) }
}

/// Fills `*out` with figures of the database now.
///
/// Ownership: `out` is the caller's. Thread safety: any thread.
///
/// # Safety
/// `db` is NULL or a live database handle; `out` is NULL or points to a
/// writable `verity_stats`; `err` is NULL or points to writable storage for
/// one pointer.
#[no_mangle]
pub unsafe extern "C" fn verity_db_stats(
    db: *const verity_db,
    out: *mut verity_stats,
    err: *mut *mut verity_error,
) -> verity_status {
    let body = || {
        // SAFETY: the caller's contract, stated above, for each pointer.
        let (db, mut out) = unsafe { (args::handle(db, "db")?, Out::new(out, "out")?) };
        let s = db.open_db()?.stats();
        out.put(verity_stats {
            latest_staged: s.latest_staged,
            latest_merkleized: s.latest_merkleized,
            latest_durable: s.latest_durable,
            oldest_retained: s.oldest_retained,
            in_flight: s.in_flight,
            page_cache_pages: count(s.page_cache_pages),
            page_cache_bytes: count(s.page_cache_bytes),
            page_cache_hits: s.page_cache_hits,
            page_cache_misses: s.page_cache_misses,
            block_cache_bytes: count(s.engine.cache_bytes),
            block_cache_hits: s.engine.cache_hits,
            block_cache_misses: s.engine.cache_misses,
            segment_files: count(s.engine.segments),
            segment_bytes: s.segment_bytes,
            wal_bytes: s.wal_bytes,
            compaction_debt_bytes: s.compaction_debt_bytes,
            flushes: s.engine.flushes,
            compactions: s.engine.compactions,
        });
        ok()
    };
    // SAFETY: `err` is NULL or writable (the caller's contract).
    unsafe { guarded(err, body) }
}
