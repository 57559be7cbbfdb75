//! The io_uring backend (Linux only): positional reads, writes and
//! `fdatasync` go through a few submission rings shared by every file the
//! backend opens, and the reads of a [`read_batch`](IoFile::read_batch) are
//! submitted together instead of one system call each.
//!
//! With [`UringOptions::direct`], reads bypass the page cache: each file
//! gets a second descriptor opened with `O_DIRECT`, and every read goes
//! through a bounce buffer aligned to [`DIRECT_ALIGN`] (offset rounded
//! down, length rounded up) before the asked-for bytes are copied out.
//! Writes stay buffered on the normal descriptor, so they may have any
//! size and offset. A file system that refuses `O_DIRECT` gets buffered
//! reads for that file; [`UringFile::direct_active`] and
//! [`UringIo::direct_fallbacks`] tell.
//!
//! Each ring sits behind a mutex that a caller holds from its first
//! submission to its last completion. Every completion it reaps is
//! therefore its own, and the completion's `user_data` is an index into
//! its own requests. A caller takes the first ring no one holds (starting
//! from one chosen per thread), and waits for its thread's ring only when
//! all are held, so as many batches run at once as there are rings: two
//! readers' disk reads do not queue one behind the other, nor a read
//! behind a WAL `fdatasync` (with a single ring they did, and reads under
//! `O_DIRECT` did not scale past one thread).
//!
//! Unsafe code lives in two places: `aligned` (the bounce buffer's
//! allocation) and `run` (handing buffers to the kernel). `run` returns
//! only once the kernel has completed every request it submitted, error
//! or not, so no buffer is freed while the kernel may still use it.

use std::collections::VecDeque;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use io_uring::{opcode, squeue, types, IoUring, Probe};
use parking_lot::{Mutex, MutexGuard};

use crate::io::{IoBackend, IoFile, ReadRequest, StdIo};

use self::aligned::AlignedBuf;

/// Alignment of the buffers, offsets and lengths of `O_DIRECT` reads (a
/// multiple of every logical block size in use).
pub const DIRECT_ALIGN: usize = 4096;

/// Largest transfer handed to the kernel in one request (a multiple of
/// [`DIRECT_ALIGN`]); a longer buffer is moved in several.
const MAX_TRANSFER: usize = 1 << 30;

/// How an [`UringIo`] is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UringOptions {
    /// Submission queue entries: how many requests are in flight at once
    /// (the kernel rounds up to a power of two). A bigger batch is
    /// submitted in turns as completions free entries.
    pub entries: u32,
    /// Read through `O_DIRECT` (writes stay buffered).
    pub direct: bool,
}

impl Default for UringOptions {
    /// 256 entries, buffered reads.
    fn default() -> Self {
        UringOptions {
            entries: 256,
            direct: false,
        }
    }
}

/// Files read and written through one io_uring instance. Directory
/// operations (`exists`, `rename`, `sync_dir`, ...) use the standard
/// library, as [`StdIo`] does.
pub struct UringIo {
    rings: Rings,
    options: UringOptions,
    direct_fallbacks: AtomicU64,
}

impl UringIo {
    /// Sets up a ring of `options.entries` entries and checks that the
    /// kernel runs the operations the backend needs (read, write, fsync:
    /// Linux 5.6 or later). Fails where io_uring is missing or forbidden
    /// (an old kernel, `ENOSYS` or `EPERM` from seccomp, or
    /// `kernel.io_uring_disabled`); the caller then falls back to
    /// [`StdIo`], as [`best_backend`](crate::io::best_backend) does.
    pub fn new(options: UringOptions) -> io::Result<UringIo> {
        let ring = IoUring::new(options.entries)?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        let mut rings = vec![Mutex::new(ring)];
        for _ in 1..ring_count() {
            rings.push(Mutex::new(IoUring::new(options.entries)?));
        }
        for (code, name) in [
            (opcode::Read::CODE, "read"),
            (opcode::Write::CODE, "write"),
            (opcode::Fsync::CODE, "fsync"),
        ] {
            if !probe.is_supported(code) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("the kernel's io_uring has no {name} operation"),
                ));
            }
        }
        Ok(UringIo {
            rings: rings.into(),
            options,
            direct_fallbacks: AtomicU64::new(0),
        })
    }

    /// The options the backend was set up with.
    pub fn options(&self) -> UringOptions {
        self.options
    }

    /// How many files were opened with buffered reads because their file
    /// system refused `O_DIRECT` (always 0 without
    /// [`UringOptions::direct`]).
    pub fn direct_fallbacks(&self) -> u64 {
        self.direct_fallbacks.load(Ordering::Relaxed)
    }

    /// Opens `path` as [`IoBackend::open`] does, returning the concrete
    /// file (to ask it [`UringFile::direct_active`]).
    pub fn open_file(&self, path: &Path, create: bool) -> io::Result<UringFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        let direct = if self.options.direct {
            let opened = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(path);
            self.direct_or_fallback(opened)?
        } else {
            None
        };
        Ok(UringFile {
            file,
            direct,
            rings: Arc::clone(&self.rings),
        })
    }

    /// The `O_DIRECT` descriptor `opened`, or `None` (counted) when the
    /// file system refused `O_DIRECT` (`EINVAL`, as tmpfs before Linux 6.6
    /// does).
    fn direct_or_fallback(&self, opened: io::Result<File>) -> io::Result<Option<File>> {
        match opened {
            Ok(direct) => Ok(Some(direct)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.direct_fallbacks.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

impl fmt::Debug for UringIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringIo")
            .field("options", &self.options)
            .field("direct_fallbacks", &self.direct_fallbacks())
            .finish_non_exhaustive()
    }
}

impl IoBackend for UringIo {
    fn name(&self) -> &'static str {
        "io_uring"
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn IoFile>> {
        Ok(Arc::new(self.open_file(path, create)?))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        StdIo.exists(path)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        StdIo.remove(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdIo.rename(from, to)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        StdIo.list(dir)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        StdIo.create_dir_all(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdIo.sync_dir(dir)
    }
}

/// A file of an [`UringIo`]: reads, writes and syncs go through the
/// backend's ring; `size` and `set_len` are plain system calls.
pub struct UringFile {
    file: File,
    /// The `O_DIRECT` descriptor reads use, when the file system took it.
    direct: Option<File>,
    rings: Rings,
}

impl UringFile {
    /// True when reads bypass the page cache: the backend was asked for
    /// `O_DIRECT` and the file system accepted it.
    pub fn direct_active(&self) -> bool {
        self.direct.is_some()
    }
}

impl fmt::Debug for UringFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringFile")
            .field("fd", &self.file.as_raw_fd())
            .field("direct_active", &self.direct_active())
            .finish_non_exhaustive()
    }
}

/// The aligned span an `O_DIRECT` read covers for one request.
struct Bounce {
    /// `offset` rounded down to [`DIRECT_ALIGN`].
    start: u64,
    /// Where the request's bytes begin in `buf`.
    skip: usize,
    /// Bytes of `buf` that must be read: `skip` plus the request's length.
    need: usize,
    buf: AlignedBuf,
}

impl Bounce {
    fn covering(offset: u64, len: usize) -> io::Result<Bounce> {
        let too_far = || io::Error::new(io::ErrorKind::InvalidInput, "read range overflows");
        const MASK: u64 = DIRECT_ALIGN as u64 - 1;
        if len == 0 {
            // Nothing to read, wherever it is.
            return Ok(Bounce {
                start: offset,
                skip: 0,
                need: 0,
                buf: AlignedBuf::zeroed(0, DIRECT_ALIGN)?,
            });
        }
        let start = offset & !MASK;
        let end = u64::try_from(len)
            .ok()
            .and_then(|len| offset.checked_add(len))
            .and_then(|end| end.checked_add(MASK))
            .map(|end| end & !MASK)
            .ok_or_else(too_far)?;
        let span = usize::try_from(end - start).map_err(|_| too_far())?;
        // `offset - start` is below DIRECT_ALIGN.
        let skip = (offset - start) as usize;
        Ok(Bounce {
            start,
            skip,
            need: skip + len,
            buf: AlignedBuf::zeroed(span, DIRECT_ALIGN)?,
        })
    }
}

impl IoFile for UringFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read_batch(&mut [ReadRequest { offset, buf }])
    }

    fn read_batch(&self, reads: &mut [ReadRequest<'_>]) -> io::Result<()> {
        let Some(direct) = &self.direct else {
            let fd = self.file.as_fd();
            let mut ops: Vec<Op<'_>> = reads
                .iter_mut()
                .map(|r| Op::read(fd, r.buf, r.offset))
                .collect();
            return run(&self.rings, &mut ops);
        };
        let mut bounces = reads
            .iter()
            .map(|r| Bounce::covering(r.offset, r.buf.len()))
            .collect::<io::Result<Vec<_>>>()?;
        let fd = direct.as_fd();
        let mut ops: Vec<Op<'_>> = bounces.iter_mut().map(|b| Op::read_direct(fd, b)).collect();
        run(&self.rings, &mut ops)?;
        drop(ops);
        for (r, b) in reads.iter_mut().zip(&bounces) {
            let len = r.buf.len();
            r.buf
                .copy_from_slice(&b.buf.as_slice()[b.skip..b.skip + len]);
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        run(
            &self.rings,
            &mut [Op::write(self.file.as_fd(), buf, offset)],
        )
    }

    fn sync(&self) -> io::Result<()> {
        run(&self.rings, &mut [Op::datasync(self.file.as_fd())])
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Read,
    Write,
    DataSync,
}

/// One request for the kernel. It borrows its descriptor and buffer for
/// `'a`, so both outlive any [`run`] the request is passed to.
struct Op<'a> {
    kind: OpKind,
    fd: BorrowedFd<'a>,
    /// The buffer: valid for `len` bytes for `'a`, written by the kernel
    /// only for reads (it came from a `&'a mut [u8]` then, from a
    /// `&'a [u8]` for writes).
    ptr: *mut u8,
    len: usize,
    offset: u64,
    /// Bytes that must be moved; a read that meets end of file after
    /// `need` bytes is complete (an `O_DIRECT` read of a rounded-up span).
    need: usize,
    /// Bytes moved so far.
    done: usize,
    /// An `O_DIRECT` read: offsets and lengths must stay multiples of
    /// [`DIRECT_ALIGN`].
    direct: bool,
    _buf: PhantomData<&'a mut [u8]>,
}

/// What a completion means for its request.
enum Progress {
    Done,
    /// Submit the rest (a short transfer, or `EINTR`/`EAGAIN`).
    Again,
    Failed(io::Error),
}

impl<'a> Op<'a> {
    /// Fills `buf` from `offset`.
    fn read(fd: BorrowedFd<'a>, buf: &'a mut [u8], offset: u64) -> Op<'a> {
        Op {
            kind: OpKind::Read,
            fd,
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            offset,
            need: buf.len(),
            done: 0,
            direct: false,
            _buf: PhantomData,
        }
    }

    /// Reads the span of `bounce` through the `O_DIRECT` descriptor `fd`;
    /// end of file may cut it short once `bounce.need` bytes are in.
    fn read_direct(fd: BorrowedFd<'a>, bounce: &'a mut Bounce) -> Op<'a> {
        let buf = bounce.buf.as_mut_slice();
        Op {
            kind: OpKind::Read,
            fd,
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            offset: bounce.start,
            need: bounce.need,
            done: 0,
            direct: true,
            _buf: PhantomData,
        }
    }

    fn write(fd: BorrowedFd<'a>, buf: &'a [u8], offset: u64) -> Op<'a> {
        Op {
            kind: OpKind::Write,
            fd,
            ptr: buf.as_ptr().cast_mut(),
            len: buf.len(),
            offset,
            need: buf.len(),
            done: 0,
            direct: false,
            _buf: PhantomData,
        }
    }

    fn datasync(fd: BorrowedFd<'a>) -> Op<'a> {
        Op {
            kind: OpKind::DataSync,
            fd,
            ptr: std::ptr::null_mut(),
            len: 0,
            offset: 0,
            need: 0,
            done: 0,
            direct: false,
            _buf: PhantomData,
        }
    }

    /// True when there is nothing (more) to ask the kernel.
    fn finished(&self) -> bool {
        self.kind != OpKind::DataSync && self.done >= self.need
    }

    /// The submission for what is left, tagged with `index`.
    fn entry(&self, index: usize) -> squeue::Entry {
        let fd = types::Fd(self.fd.as_raw_fd());
        let chunk = self.len.saturating_sub(self.done).min(MAX_TRANSFER);
        // MAX_TRANSFER fits in a u32.
        let chunk = chunk as u32;
        let ptr = self.ptr.wrapping_add(self.done);
        let offset = self.offset.saturating_add(self.done as u64);
        let entry = match self.kind {
            OpKind::Read => opcode::Read::new(fd, ptr, chunk).offset(offset).build(),
            OpKind::Write => opcode::Write::new(fd, ptr.cast_const(), chunk)
                .offset(offset)
                .build(),
            OpKind::DataSync => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
        };
        entry.user_data(index as u64)
    }

    /// Accounts for a completion with result `res`.
    fn complete(&mut self, res: i32) -> Progress {
        if res < 0 {
            let errno = -res;
            if errno == libc::EINTR || errno == libc::EAGAIN {
                return Progress::Again;
            }
            return Progress::Failed(io::Error::from_raw_os_error(errno));
        }
        if self.kind == OpKind::DataSync {
            return Progress::Done;
        }
        let moved = res as usize;
        self.done += moved;
        if self.done >= self.need {
            return Progress::Done;
        }
        // A transfer of nothing is end of file (or a device that takes no
        // more); with O_DIRECT, a transfer that ends off the alignment is
        // end of file too, and the rest could not be asked for anyway.
        let unaligned = self.direct && !self.done.is_multiple_of(DIRECT_ALIGN);
        if moved == 0 || unaligned {
            return Progress::Failed(match self.kind {
                OpKind::Write => io::Error::from(io::ErrorKind::WriteZero),
                _ => io::Error::from(io::ErrorKind::UnexpectedEof),
            });
        }
        Progress::Again
    }
}

/// The rings of a backend, shared by its files.
type Rings = Arc<[Mutex<IoUring>]>;

/// How many rings a backend sets up: two per core, from 4 to 16. A ring
/// is held from a batch's first submission to its last completion, through
/// a WAL `fdatasync` or a flush's or a compaction's writes too; with one
/// ring per core the update's page reads on the pool's threads waited for
/// those (BENCHMARKS.md).
fn ring_count() -> usize {
    std::thread::available_parallelism().map_or(4, |n| (2 * n.get()).clamp(4, 16))
}

/// This thread's first choice of ring, spread over threads in the order
/// they first ask.
fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    SLOT.with(|s| *s)
}

/// A ring for one batch: the first free one from this thread's slot on,
/// else (all held) this thread's own ring, once its holder lets go.
fn acquire(rings: &[Mutex<IoUring>]) -> MutexGuard<'_, IoUring> {
    let start = thread_slot() % rings.len();
    for i in 0..rings.len() {
        if let Some(guard) = rings[(start + i) % rings.len()].try_lock() {
            return guard;
        }
    }
    rings[start].lock()
}

/// The ring, locked, and how many of the holder's requests the kernel has
/// not completed yet. Dropping it waits for them, so even an unwinding
/// [`run`] frees no buffer the kernel may still write into.
struct InFlight<'r> {
    ring: MutexGuard<'r, IoUring>,
    count: usize,
}

impl InFlight<'_> {
    /// Submits what is queued and waits for at least one completion.
    /// Interrupted or refused-for-now waits return too: the caller reaps
    /// what is there and waits again.
    fn submit_and_wait(&self) {
        match self.ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EAGAIN | libc::EBUSY | libc::ENOMEM)
                ) => {}
            Err(e) => {
                // EBADF, EFAULT, EINVAL: the ring itself is broken. The
                // kernel may still write into buffers the caller lent;
                // returning would let them be freed, so stop here.
                eprintln!("verity-engine: io_uring wait failed with requests in flight: {e}");
                std::process::abort();
            }
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        while self.count > 0 {
            self.submit_and_wait();
            let reaped = self.ring.completion().count();
            self.count = self.count.saturating_sub(reaped);
        }
    }
}

/// Runs `ops` through the ring: submits as many as the ring holds in one
/// call, tops up as completions come back, resubmits the rest of short
/// transfers, and returns once every submitted request has completed. The
/// first error wins; after it nothing new is submitted, but the requests
/// in flight are still waited for.
#[expect(
    unsafe_code,
    reason = "handing buffers to the kernel is what io_uring is; see the SAFETY comment"
)]
fn run(rings: &[Mutex<IoUring>], ops: &mut [Op<'_>]) -> io::Result<()> {
    let mut queue: VecDeque<usize> = (0..ops.len()).filter(|&i| !ops[i].finished()).collect();
    if queue.is_empty() {
        return Ok(());
    }
    let mut flight = InFlight {
        ring: acquire(rings),
        count: 0,
    };
    let depth = flight.ring.params().sq_entries() as usize;
    let mut first_error: Option<io::Error> = None;
    loop {
        if first_error.is_none() {
            let mut sq = flight.ring.submission();
            while flight.count < depth {
                let Some(&i) = queue.front() else { break };
                let entry = ops[i].entry(i);
                // SAFETY: the entry points at `ops[i]`'s descriptor and
                // buffer, which `Op<'a>` borrows (shared for a write,
                // exclusively for a read) for longer than this call. This
                // call does not return, nor does `flight` let go of the
                // ring when unwinding, before the kernel has posted the
                // completion of every entry pushed here, so the buffer is
                // neither freed nor touched by anyone else while the
                // kernel may use it. `entry()` keeps the length within
                // the buffer's bounds (`done <= len`).
                let pushed = unsafe { sq.push(&entry) };
                if pushed.is_err() {
                    break;
                }
                queue.pop_front();
                flight.count += 1;
            }
        }
        if flight.count == 0 {
            break;
        }
        flight.submit_and_wait();
        for cqe in flight.ring.completion() {
            flight.count = flight.count.saturating_sub(1);
            let index = cqe.user_data() as usize;
            let Some(op) = ops.get_mut(index) else {
                first_error.get_or_insert_with(|| {
                    io::Error::other("io_uring completion for an unknown request")
                });
                continue;
            };
            match op.complete(cqe.result()) {
                Progress::Done => {}
                Progress::Again => queue.push_back(index),
                Progress::Failed(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    drop(flight);
    first_error.map_or(Ok(()), Err)
}

/// The one heap buffer with an alignment beyond what `Vec` gives.
mod aligned {
    #![expect(
        unsafe_code,
        reason = "O_DIRECT needs buffers aligned beyond what Vec gives"
    )]

    use std::alloc::{self, Layout};
    use std::io;
    use std::ptr::NonNull;

    /// A zeroed heap buffer whose address is a multiple of its alignment.
    pub(super) struct AlignedBuf {
        ptr: NonNull<u8>,
        layout: Layout,
    }

    impl AlignedBuf {
        /// `len` zero bytes at an address that is a multiple of `align`
        /// (a power of two).
        pub(super) fn zeroed(len: usize, align: usize) -> io::Result<AlignedBuf> {
            let layout = Layout::from_size_align(len, align)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            if len == 0 {
                return Ok(AlignedBuf {
                    ptr: NonNull::dangling(),
                    layout,
                });
            }
            // SAFETY: the layout's size is not zero (checked above).
            let raw = unsafe { alloc::alloc_zeroed(layout) };
            let ptr =
                NonNull::new(raw).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
            Ok(AlignedBuf { ptr, layout })
        }

        pub(super) fn as_slice(&self) -> &[u8] {
            // SAFETY: `ptr` is valid for `layout.size()` initialised bytes
            // (allocated zeroed, or dangling and non-null when the size is
            // zero), owned by `self`, and borrowing `self` shared rules out
            // a mutable borrow of them.
            unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
        }

        pub(super) fn as_mut_slice(&mut self) -> &mut [u8] {
            // SAFETY: as in `as_slice`, and borrowing `self` mutably makes
            // this the only borrow of the bytes.
            unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
        }
    }

    impl Drop for AlignedBuf {
        fn drop(&mut self) {
            if self.layout.size() != 0 {
                // SAFETY: `ptr` came from `alloc_zeroed` with this very
                // layout and is freed only here, once.
                unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use verity_testkit::seed;

    /// The backend, or `None` (printed) where the sandbox has no io_uring:
    /// the test then checks nothing more.
    fn ring_or_skip(test: &str, options: UringOptions) -> Option<UringIo> {
        match UringIo::new(options) {
            Ok(io) => Some(io),
            Err(e) => {
                println!("{test}: io_uring unavailable ({e}); skipped");
                None
            }
        }
    }

    fn both_modes(entries: u32) -> [UringOptions; 2] {
        [false, true].map(|direct| UringOptions { entries, direct })
    }

    /// A file of `len` random bytes, written through `io`.
    fn random_file(
        io: &UringIo,
        dir: &Path,
        rng: &mut ChaCha8Rng,
        len: usize,
    ) -> (UringFile, Vec<u8>) {
        let content: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let file = io.open_file(&dir.join("data"), true).expect("open");
        file.write_at(&content, 0).expect("write");
        file.sync().expect("sync");
        (file, content)
    }

    #[test]
    fn writes_reads_and_syncs_round_trip() {
        for options in both_modes(256) {
            let Some(io) = ring_or_skip("writes_reads_and_syncs_round_trip", options) else {
                return;
            };
            assert_eq!(io.name(), "io_uring");
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("f");
            let file = io.open(&path, true).expect("open");
            assert_eq!(file.size().expect("size"), 0);
            file.write_at(b"hello, ring", 0).expect("write");
            file.write_at(b"!", 5000).expect("write past the end");
            file.sync().expect("sync");
            assert_eq!(file.size().expect("size"), 5001);
            let mut buf = [0u8; 11];
            file.read_at(&mut buf, 0).expect("read");
            assert_eq!(&buf, b"hello, ring");
            let mut hole = [1u8; 4];
            file.read_at(&mut hole, 4996).expect("read the hole");
            assert_eq!(hole, [0, 0, 0, 0]);
            // A read right after a write, before any sync, sees it.
            file.write_at(b"RING", 7).expect("overwrite");
            file.read_at(&mut buf, 0).expect("read");
            assert_eq!(&buf, b"hello, RING");
            file.read_at(&mut [], 1 << 40).expect("an empty read");
            file.read_at(&mut [], (1 << 40) + 1)
                .expect("an unaligned empty read");
            file.set_len(3).expect("truncate");
            assert_eq!(file.size().expect("size"), 3);
            drop(file);
            let reopened = io.open(&path, false).expect("reopen");
            let mut three = [0u8; 3];
            reopened.read_at(&mut three, 0).expect("read");
            assert_eq!(&three, b"hel");
            assert_eq!(std::fs::read(&path).expect("std read"), b"hel");
        }
    }

    #[test]
    fn a_thousand_random_reads_in_one_batch_match_the_file() {
        let seed = seed("a_thousand_random_reads_in_one_batch_match_the_file");
        for options in both_modes(256) {
            let Some(io) = ring_or_skip("a_thousand_random_reads", options) else {
                return;
            };
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let dir = tempfile::tempdir().expect("tempdir");
            let len = 3 << 20;
            let (file, content) = random_file(&io, dir.path(), &mut rng, len + 123);
            let spans: Vec<(usize, usize)> = (0..1000)
                .map(|_| {
                    let n = rng.gen_range(0..=9000);
                    (rng.gen_range(0..=content.len() - n), n)
                })
                .collect();
            let mut bufs: Vec<Vec<u8>> = spans.iter().map(|&(_, n)| vec![0xAA; n]).collect();
            let mut reads: Vec<ReadRequest<'_>> = bufs
                .iter_mut()
                .zip(&spans)
                .map(|(buf, &(at, _))| ReadRequest {
                    offset: at as u64,
                    buf,
                })
                .collect();
            file.read_batch(&mut reads).expect("batch");
            for (buf, &(at, n)) in bufs.iter().zip(&spans) {
                assert!(
                    buf[..] == content[at..at + n],
                    "{options:?}: read of {n} at {at}"
                );
            }
        }
    }

    #[test]
    fn a_batch_bigger_than_the_ring_is_read_in_turns() {
        for options in both_modes(4) {
            let Some(io) = ring_or_skip("a_batch_bigger_than_the_ring", options) else {
                return;
            };
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            let dir = tempfile::tempdir().expect("tempdir");
            let (file, content) = random_file(&io, dir.path(), &mut rng, 100_000);
            let mut bufs = vec![[0u8; 100]; 333];
            let mut reads: Vec<ReadRequest<'_>> = bufs
                .iter_mut()
                .enumerate()
                .map(|(i, buf)| ReadRequest {
                    offset: i as u64 * 300,
                    buf,
                })
                .collect();
            file.read_batch(&mut reads).expect("batch");
            for (i, buf) in bufs.iter().enumerate() {
                assert!(
                    buf[..] == content[i * 300..i * 300 + 100],
                    "{options:?}: read {i}"
                );
            }
        }
    }

    #[test]
    fn reading_past_the_end_is_unexpected_eof_and_the_ring_stays_usable() {
        for options in both_modes(8) {
            let Some(io) = ring_or_skip("reading_past_the_end", options) else {
                return;
            };
            let mut rng = ChaCha8Rng::seed_from_u64(11);
            let dir = tempfile::tempdir().expect("tempdir");
            let (file, content) = random_file(&io, dir.path(), &mut rng, 10_000);
            for (at, n) in [
                (10_000, 1),
                (9_999, 2),
                (5_000, 5_001),
                (1 << 30, 10),
                (0, 20_000),
            ] {
                let mut buf = vec![0u8; n];
                let err = file.read_at(&mut buf, at).expect_err("past the end");
                assert_eq!(
                    err.kind(),
                    io::ErrorKind::UnexpectedEof,
                    "{options:?}: {n} at {at}"
                );
            }
            // One bad read in a batch fails it; the rest still complete,
            // and the next batch finds no stray completions.
            let mut bufs = vec![vec![0u8; 1000]; 40];
            let mut reads: Vec<ReadRequest<'_>> = bufs
                .iter_mut()
                .enumerate()
                .map(|(i, buf)| ReadRequest {
                    offset: if i == 17 { 9_500 } else { i as u64 * 200 },
                    buf,
                })
                .collect();
            let err = file
                .read_batch(&mut reads)
                .expect_err("one read is past the end");
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
            let mut last = [0u8; 1];
            file.read_at(&mut last, 9_999).expect("the last byte");
            assert_eq!(last[0], content[9_999]);
        }
    }

    #[test]
    fn direct_reads_bypass_the_cache_or_record_the_fallback() {
        let Some(io) = ring_or_skip(
            "direct_reads",
            UringOptions {
                entries: 32,
                direct: true,
            },
        ) else {
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (file, content) = random_file(&io, dir.path(), &mut rng, 3 * DIRECT_ALIGN + 77);
        println!(
            "O_DIRECT in {}: {}",
            dir.path().display(),
            if file.direct_active() {
                "accepted"
            } else {
                "refused, buffered reads"
            }
        );
        assert_eq!(io.direct_fallbacks(), u64::from(!file.direct_active()));
        // Unaligned offsets and lengths, spans across blocks, the tail.
        for (at, n) in [
            (0, 1),
            (1, 4095),
            (4095, 2),
            (100, 8000),
            (4096, 4096),
            (12_000, 365),
            (12_364, 1),
        ] {
            let mut buf = vec![0u8; n];
            file.read_at(&mut buf, at as u64).expect("read");
            assert!(buf[..] == content[at..at + n], "{n} at {at}");
        }
        // Buffered writes are seen by direct reads.
        file.write_at(b"fresh", 4094).expect("write");
        let mut buf = [0u8; 5];
        file.read_at(&mut buf, 4094).expect("read");
        assert_eq!(&buf, b"fresh");
    }

    #[test]
    fn a_file_system_refusing_o_direct_gets_buffered_reads() {
        let Some(io) = ring_or_skip(
            "a_file_system_refusing_o_direct",
            UringOptions {
                entries: 8,
                direct: true,
            },
        ) else {
            return;
        };
        let refused = io.direct_or_fallback(Err(io::Error::from_raw_os_error(libc::EINVAL)));
        assert!(matches!(refused, Ok(None)));
        assert_eq!(io.direct_fallbacks(), 1);
        let missing = io.direct_or_fallback(Err(io::Error::from_raw_os_error(libc::ENOENT)));
        assert_eq!(
            missing.map(|_| ()).map_err(|e| e.kind()),
            Err(io::ErrorKind::NotFound)
        );
        assert_eq!(io.direct_fallbacks(), 1);
        // A file without the O_DIRECT descriptor reads buffered.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let (file, content) = random_file(&io, dir.path(), &mut rng, 5000);
        let buffered = UringFile {
            file: file.file.try_clone().expect("dup"),
            direct: None,
            rings: Arc::clone(&io.rings),
        };
        assert!(!buffered.direct_active());
        let mut buf = vec![0u8; 4999];
        buffered.read_at(&mut buf, 1).expect("read");
        assert!(buf[..] == content[1..]);
    }

    #[test]
    fn a_held_ring_sends_the_next_batch_to_another() {
        let Some(io) = ring_or_skip("a_held_ring", UringOptions::default()) else {
            return;
        };
        assert!(io.rings.len() >= 2, "{} rings", io.rings.len());
        let first = acquire(&io.rings);
        let second = acquire(&io.rings);
        assert!(
            !std::ptr::eq(&*first, &*second),
            "one ring handed out twice"
        );
    }

    #[test]
    fn threads_share_the_ring() {
        let Some(io) = ring_or_skip("threads_share_the_ring", UringOptions::default()) else {
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (file, content) = random_file(&io, dir.path(), &mut rng, 1 << 20);
        let other = io.open(&dir.path().join("other"), true).expect("open");
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (file, content, other) = (&file, &content, &other);
                s.spawn(move || {
                    for round in 0..50u64 {
                        let at = ((t * 7919 + round * 104_729) % (1 << 19)) as usize;
                        let mut bufs = vec![[0u8; 512]; 16];
                        let mut reads: Vec<ReadRequest<'_>> = bufs
                            .iter_mut()
                            .enumerate()
                            .map(|(i, buf)| ReadRequest {
                                offset: (at + i * 4000) as u64,
                                buf,
                            })
                            .collect();
                        file.read_batch(&mut reads).expect("batch");
                        for (i, buf) in bufs.iter().enumerate() {
                            let from = at + i * 4000;
                            assert!(buf[..] == content[from..from + 512]);
                        }
                        other.write_at(&round.to_le_bytes(), t * 8).expect("write");
                    }
                });
            }
        });
        other.sync().expect("sync");
        for t in 0..4u64 {
            let mut word = [0u8; 8];
            other.read_at(&mut word, t * 8).expect("read");
            assert_eq!(u64::from_le_bytes(word), 49);
        }
    }

    #[test]
    fn kernel_errors_come_back_as_os_errors() {
        let Some(io) = ring_or_skip("kernel_errors", UringOptions::default()) else {
            return;
        };
        // Every write to /dev/full fails with ENOSPC.
        let full = Path::new("/dev/full");
        if !full.exists() {
            println!("kernel_errors: no /dev/full; skipped");
            return;
        }
        let file = io.open(full, false).expect("open /dev/full");
        let err = file.write_at(b"x", 0).expect_err("/dev/full is full");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
    }

    #[test]
    fn a_zero_entry_ring_is_refused() {
        let result = UringIo::new(UringOptions {
            entries: 0,
            direct: false,
        });
        assert!(result.is_err());
    }
}
