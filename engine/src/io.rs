//! The I/O seam: every byte the engine reads or writes goes through an
//! [`IoBackend`], so the same engine runs over the operating system's files
//! and over the [`SimDisk`](crate::sim::SimDisk) that tests crash.
//!
//! [`best_backend`] picks the backend for real files: io_uring where the
//! kernel allows it, [`StdIo`] elsewhere or when `VERITY_IO=std` says so.
//!
//! Errors at this seam are plain [`std::io::Error`]s; the engine adds the
//! operation and path when it turns them into an
//! [`EngineError`](crate::EngineError).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// One read of a batch: fill `buf` from `offset`.
#[derive(Debug)]
pub struct ReadRequest<'a> {
    /// Where in the file the read starts.
    pub offset: u64,
    /// Filled completely, or the batch fails.
    pub buf: &'a mut [u8],
}

/// An open file. Safe to share between threads: reads and writes are
/// positional and take `&self`.
pub trait IoFile: Send + Sync {
    /// Fills `buf` from `offset`; reading past the end is an
    /// [`io::ErrorKind::UnexpectedEof`] error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Runs many reads. A backend with asynchronous I/O submits them
    /// together; the default runs them one after another.
    fn read_batch(&self, reads: &mut [ReadRequest<'_>]) -> io::Result<()> {
        for r in reads.iter_mut() {
            self.read_at(r.buf, r.offset)?;
        }
        Ok(())
    }

    /// Writes all of `buf` at `offset`, growing the file if needed. The
    /// bytes are durable only after [`sync`](Self::sync).
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// Makes every write and length change so far durable (`fdatasync`).
    fn sync(&self) -> io::Result<()>;

    /// The file's length in bytes.
    fn size(&self) -> io::Result<u64>;

    /// Cuts or extends the file to `len` bytes (durable after `sync`).
    fn set_len(&self, len: u64) -> io::Result<()>;
}

/// A file system as the engine sees it. Creating, renaming and removing a
/// file are durable only after [`sync_dir`](Self::sync_dir) of its
/// directory.
pub trait IoBackend: Send + Sync {
    /// A short name for stats (`"std"`, `"io_uring"`, `"sim"`).
    fn name(&self) -> &'static str;

    /// Opens `path`, creating it (empty) when `create` is set and it does
    /// not exist.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn IoFile>>;

    /// True when `path` exists.
    fn exists(&self, path: &Path) -> io::Result<bool>;

    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;

    /// Renames a file, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// The names of the files in `dir`, sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;

    /// Creates `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// Makes the creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Takes the exclusive lock of the store in `dir` (the file `LOCK`),
    /// held until the returned guard is dropped; fails with
    /// [`io::ErrorKind::WouldBlock`] when another holder has it. The
    /// default locks the operating system's file.
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))?;
        file.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => io::Error::from(io::ErrorKind::WouldBlock),
            std::fs::TryLockError::Error(e) => e,
        })?;
        Ok(Box::new(file))
    }
}

/// The name of the lock file in a store directory.
pub const LOCK_FILE: &str = "LOCK";

/// Positional reads and writes on the operating system's files (`pread`,
/// `pwrite`, `fdatasync`): the fallback when io_uring is not available.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdIo;

struct StdFile(File);

impl IoFile for StdFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn sync(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

impl IoBackend for StdIo {
    fn name(&self) -> &'static str {
        "std"
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn IoFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(StdFile(file)))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// The environment variable [`best_backend`] reads: `VERITY_IO=std` forces
/// [`StdIo`] (to test or run the fallback on a machine with io_uring);
/// unset or any other value tries io_uring first.
pub const BACKEND_ENV: &str = "VERITY_IO";

/// The backend for real files: the io_uring backend (`"io_uring"`, with
/// `O_DIRECT` reads when `direct` is set) where the kernel sets up a ring,
/// otherwise [`StdIo`] (`"std"`): on other systems, on kernels before 5.6,
/// where seccomp or `kernel.io_uring_disabled` forbid io_uring, or when
/// the environment variable [`BACKEND_ENV`] (`VERITY_IO`) is `std`.
/// [`IoBackend::name`] tells which one it is.
pub fn best_backend(direct: bool) -> Arc<dyn IoBackend> {
    let forced_std = std::env::var_os(BACKEND_ENV).is_some_and(|v| v == "std");
    #[cfg(target_os = "linux")]
    if !forced_std {
        let options = crate::uring::UringOptions {
            direct,
            ..Default::default()
        };
        if let Ok(io) = crate::uring::UringIo::new(options) {
            return Arc::new(io);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (direct, forced_std);
    Arc::new(StdIo)
}
