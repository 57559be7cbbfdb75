//! A simulated disk for crash and fault tests.
//!
//! Every file has two images: what was written (what reads see) and what is
//! durable (what survives a crash). A write changes the written image and is
//! queued as pending; `sync` makes the file's pending writes durable. File
//! creations, renames and removals change the namespace at once and become
//! durable with `sync_dir` of their directory.
//!
//! [`SimDisk::crash`] models power loss: the namespace falls back to its
//! durable state, and each file keeps its durable image plus, depending on
//! the [`CrashMode`], none, a random subset (sector by sector) or all but a
//! torn tail of its pending writes. Handles opened before the crash fail
//! from then on, as a dead process's would. [`SimDisk::fail_at`] makes the
//! Nth operation from now return an error (EIO or ENOSPC).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::io::{IoBackend, IoFile};

/// The unit in which unsynced writes reach the disk, or not, in a crash.
pub const SECTOR: usize = 512;

/// What a crash keeps of the writes that were not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Nothing: every file is exactly its durable image.
    DropUnsynced,
    /// Each sector of each pending write reaches the disk or not, at random.
    RandomSectors,
    /// Every pending write but the last of each file, and a random prefix
    /// of that last one.
    TornTail,
}

/// The error an injected fault returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `EIO`.
    Eio,
    /// `ENOSPC`: the disk is full.
    NoSpace,
}

#[derive(Debug, Clone)]
enum Pending {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

#[derive(Debug, Default)]
struct FileData {
    written: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
}

fn apply(image: &mut Vec<u8>, op: &Pending) {
    match op {
        Pending::Write(offset, data) => {
            let start = *offset as usize;
            if image.len() < start + data.len() {
                image.resize(start + data.len(), 0);
            }
            image[start..start + data.len()].copy_from_slice(data);
        }
        Pending::SetLen(len) => image.resize(*len as usize, 0),
    }
}

#[derive(Debug, Default)]
struct State {
    files: Vec<FileData>,
    names: BTreeMap<PathBuf, usize>,
    durable_names: BTreeMap<PathBuf, usize>,
    dirs: BTreeSet<PathBuf>,
    /// Raised by each crash; handles of an older epoch are dead.
    epoch: u64,
    /// Operations so far.
    ops: u64,
    /// Operation count at which to fail, and how.
    fault: Option<(u64, Fault)>,
    /// Operations after this count fail: the power is off until a crash.
    halt_after: Option<u64>,
}

impl State {
    /// Counts an operation and fails it if a fault is due.
    fn tick(&mut self) -> io::Result<()> {
        self.ops += 1;
        if self.halt_after.is_some_and(|h| self.ops > h) {
            return Err(io::Error::other("simulated power loss"));
        }
        match self.fault {
            Some((at, fault)) if at == self.ops => {
                self.fault = None;
                Err(match fault {
                    Fault::Eio => io::Error::other("injected EIO"),
                    Fault::NoSpace => io::Error::from(io::ErrorKind::StorageFull),
                })
            }
            _ => Ok(()),
        }
    }
}

/// A simulated disk, cheap to clone (clones share the disk).
#[derive(Debug, Default, Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

struct SimFile {
    disk: SimDisk,
    id: usize,
    epoch: u64,
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut State, usize) -> io::Result<T>) -> io::Result<T> {
        let mut state = self.disk.state.lock();
        if state.epoch != self.epoch {
            return Err(io::Error::other("file handle from before a crash"));
        }
        state.tick()?;
        f(&mut state, self.id)
    }
}

impl IoFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with(|state, id| {
            let data = &state.files[id].written;
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            match start.checked_add(buf.len()) {
                Some(end) if end <= data.len() => {
                    buf.copy_from_slice(&data[start..end]);
                    Ok(())
                }
                _ => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            }
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with(|state, id| {
            let op = Pending::Write(offset, buf.to_vec());
            let file = &mut state.files[id];
            apply(&mut file.written, &op);
            file.pending.push(op);
            Ok(())
        })
    }

    fn sync(&self) -> io::Result<()> {
        self.with(|state, id| {
            let file = &mut state.files[id];
            for op in std::mem::take(&mut file.pending) {
                apply(&mut file.durable, &op);
            }
            Ok(())
        })
    }

    fn size(&self) -> io::Result<u64> {
        self.with(|state, id| Ok(state.files[id].written.len() as u64))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|state, id| {
            let op = Pending::SetLen(len);
            let file = &mut state.files[id];
            apply(&mut file.written, &op);
            file.pending.push(op);
            Ok(())
        })
    }
}

fn not_found() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// Operations run so far (reads, writes, syncs and namespace changes),
    /// to aim [`fail_at`](Self::fail_at).
    pub fn ops(&self) -> u64 {
        self.state.lock().ops
    }

    /// Makes the `n`th operation from now (1 = the next) fail with `fault`.
    pub fn fail_at(&self, n: u64, fault: Fault) {
        let mut state = self.state.lock();
        state.fault = Some((state.ops + n, fault));
    }

    /// Cuts the power after `n` more operations: every later operation
    /// fails (and changes nothing) until [`crash`](Self::crash). With a
    /// crash afterwards, this stops a workload at any point of its I/O.
    pub fn halt_after(&self, n: u64) {
        let mut state = self.state.lock();
        state.halt_after = Some(state.ops + n);
    }

    /// Cancels a pending fault.
    pub fn clear_fault(&self) {
        self.state.lock().fault = None;
    }

    /// Simulates power loss; `seed` drives the random choices of the mode.
    /// Every handle opened before is dead afterwards.
    pub fn crash(&self, mode: CrashMode, seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut state = self.state.lock();
        for file in &mut state.files {
            let pending = std::mem::take(&mut file.pending);
            match mode {
                CrashMode::DropUnsynced => {}
                CrashMode::RandomSectors => {
                    for op in &pending {
                        match op {
                            Pending::Write(offset, data) => {
                                for (i, chunk) in data.chunks(SECTOR).enumerate() {
                                    if rng.gen_bool(0.5) {
                                        let at = offset + (i * SECTOR) as u64;
                                        apply(
                                            &mut file.durable,
                                            &Pending::Write(at, chunk.to_vec()),
                                        );
                                    }
                                }
                            }
                            Pending::SetLen(_) if rng.gen_bool(0.5) => apply(&mut file.durable, op),
                            Pending::SetLen(_) => {}
                        }
                    }
                }
                CrashMode::TornTail => {
                    if let Some((last, rest)) = pending.split_last() {
                        for op in rest {
                            apply(&mut file.durable, op);
                        }
                        match last {
                            Pending::Write(offset, data) => {
                                let keep = rng.gen_range(0..=data.len());
                                apply(
                                    &mut file.durable,
                                    &Pending::Write(*offset, data[..keep].to_vec()),
                                );
                            }
                            Pending::SetLen(_) => {}
                        }
                    }
                }
            }
            file.written = file.durable.clone();
        }
        state.names = state.durable_names.clone();
        state.epoch += 1;
        state.fault = None;
        state.halt_after = None;
    }

    /// The written image of `path` (what reads see), for tests that damage
    /// files.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.state.lock();
        let id = *state.names.get(path)?;
        Some(state.files[id].written.clone())
    }

    /// Replaces the contents of `path`, written and durable alike (a
    /// corruption that is already on the platter).
    pub fn set_contents(&self, path: &Path, bytes: Vec<u8>) -> io::Result<()> {
        let mut state = self.state.lock();
        let id = *state.names.get(path).ok_or_else(not_found)?;
        let file = &mut state.files[id];
        file.durable = bytes.clone();
        file.written = bytes;
        file.pending.clear();
        Ok(())
    }

    fn parent_of(path: &Path) -> PathBuf {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    }
}

impl IoBackend for SimDisk {
    /// The simulated disk belongs to one test: there is no other process
    /// to keep out.
    fn lock_dir(&self, _dir: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        Ok(Box::new(()))
    }

    fn name(&self) -> &'static str {
        "sim"
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn IoFile>> {
        let mut state = self.state.lock();
        state.tick()?;
        let id = match state.names.get(path) {
            Some(&id) => id,
            None if create => {
                if !state.dirs.contains(&Self::parent_of(path)) {
                    return Err(not_found());
                }
                state.files.push(FileData::default());
                let id = state.files.len() - 1;
                state.names.insert(path.to_path_buf(), id);
                id
            }
            None => return Err(not_found()),
        };
        Ok(Arc::new(SimFile {
            disk: self.clone(),
            id,
            epoch: state.epoch,
        }))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let state = self.state.lock();
        Ok(state.names.contains_key(path) || state.dirs.contains(path))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.tick()?;
        state.names.remove(path).map(|_| ()).ok_or_else(not_found)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.tick()?;
        let id = state.names.remove(from).ok_or_else(not_found)?;
        state.names.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.state.lock();
        if !state.dirs.contains(dir) {
            return Err(not_found());
        }
        Ok(state
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        // Directories are durable at once: the engine creates its own
        // directory before anything in it matters.
        let mut state = self.state.lock();
        let mut at = Some(dir);
        while let Some(d) = at {
            state.dirs.insert(d.to_path_buf());
            at = d.parent();
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.tick()?;
        let state = &mut *state;
        state.durable_names.retain(|p, _| p.parent() != Some(dir));
        for (p, id) in &state.names {
            if p.parent() == Some(dir) {
                state.durable_names.insert(p.clone(), *id);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_data_survive_a_crash_only_once_synced() {
        let disk = SimDisk::new();
        let dir = Path::new("/d");
        disk.create_dir_all(dir).expect("mkdir");
        let a = disk.open(&dir.join("a"), true).expect("create a");
        a.write_at(b"synced", 0).expect("write");
        a.sync().expect("sync");
        disk.sync_dir(dir).expect("sync dir");
        a.write_at(b"lost", 6).expect("write");
        let b = disk.open(&dir.join("b"), true).expect("create b");
        b.write_at(b"never named", 0).expect("write");
        b.sync().expect("sync");
        disk.rename(&dir.join("a"), &dir.join("c")).expect("rename");
        disk.crash(CrashMode::DropUnsynced, 1);
        assert!(a.size().is_err(), "handles die with the crash");
        assert_eq!(disk.list(dir).expect("list"), vec!["a".to_owned()]);
        assert_eq!(disk.contents(&dir.join("a")), Some(b"synced".to_vec()));
    }

    #[test]
    fn faults_fire_once_at_the_chosen_call() {
        let disk = SimDisk::new();
        disk.create_dir_all(Path::new("/d")).expect("mkdir");
        let f = disk.open(Path::new("/d/f"), true).expect("create");
        disk.fail_at(2, Fault::NoSpace);
        f.write_at(b"x", 0).expect("first call passes");
        let err = f.sync().expect_err("second call fails");
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        f.sync().expect("the fault fired once");
    }
}
