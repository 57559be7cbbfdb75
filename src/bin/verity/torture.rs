//! `verity torture`: the whole-system proof that the store keeps its
//! promises under crashes, faults and damaged files.
//!
//! Every mode runs one seeded workload through the public API: the writes
//! of version `v` are a pure function of `(seed, v)`, so a supervisor that
//! never saw the writer can recompute any version's key/value set, and its
//! root from a trie built afresh (a different history, hence an independent
//! check: the root depends on the state alone).
//!
//! - `kill`: a child process commits with several versions in flight,
//!   reads and proves snapshots on two threads, prunes, and (with small
//!   memtables) flushes and compacts all the time, appending `pending` and
//!   `done` lines (with roots) to a synced log around each operation. The
//!   supervisor SIGKILLs it at seeded random moments, reopens the store and
//!   checks it against the log and the model; the next child goes on from
//!   the recovered store.
//! - `sim`: the same workload on the simulated disk in one process, with
//!   power cuts at random operations (unsynced writes dropped, sectors
//!   torn) and injected EIO and ENOSPC, thousands of crash points a minute.
//! - `corrupt`: a real store, copied once per trial, with bits flipped,
//!   ranges overwritten or the file cut in every kind of file; `verity
//!   check` and every read must report a typed corruption error or give the
//!   right data.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::{Args, Subcommand};
use parking_lot::RwLock;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use verity::engine::io::StdIo;
use verity::engine::sim::{CrashMode, Fault, SimDisk};
use verity::{
    key_hash, value_hash, verify, Db, DbError, Hash, MemPageStore, Options, Snapshot, Trie,
    WriteBatch,
};

use crate::tools::{check_store, hex};

/// Arguments of `verity torture`.
#[derive(Args)]
pub(crate) struct TortureArgs {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// SIGKILL a child process running the workload at random moments,
    /// reopen the store and check it.
    Kill(KillArgs),
    /// Power cuts and injected I/O errors on the simulated disk.
    Sim(SimArgs),
    /// Damage every kind of file of a real store and read it back.
    Corrupt(CorruptArgs),
    /// The child process of `kill`.
    #[command(hide = true)]
    Child(ChildArgs),
}

#[derive(Args, Clone, Copy)]
struct Limits {
    /// Seed of every random choice (default: from the clock). Printed at
    /// the start; the same seed repeats the same run.
    #[arg(long)]
    seed: Option<u64>,
    /// Stop after this many seconds even if iterations remain.
    #[arg(long)]
    secs: Option<f64>,
}

impl Limits {
    fn seed(&self) -> u64 {
        self.seed.unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            t.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
        })
    }

    fn deadline(&self) -> Option<Instant> {
        self.secs
            .map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)))
    }
}

fn past(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

#[derive(Args)]
struct KillArgs {
    #[command(flatten)]
    limits: Limits,
    /// SIGKILL rounds (each: start a child, kill it, reopen and check).
    #[arg(long, default_value_t = 20)]
    iterations: u64,
    /// Directory for the store and the log (default: a temporary one).
    /// Must be empty or absent.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Longest time a child runs before it is killed, in milliseconds.
    #[arg(long, default_value_t = 1500)]
    max_run_ms: u64,
}

#[derive(Args)]
struct SimArgs {
    #[command(flatten)]
    limits: Limits,
    /// Crash points (each: run to a random operation, crash or fail it,
    /// reopen and check).
    #[arg(long, default_value_t = 1000)]
    points: u64,
}

#[derive(Args)]
struct CorruptArgs {
    #[command(flatten)]
    limits: Limits,
    /// Damaged copies of the store to check.
    #[arg(long, default_value_t = 200)]
    trials: u64,
    /// Directory for the store and its copies (default: a temporary one).
    /// Must be empty or absent.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print every trial: the file, the damage and the outcome.
    #[arg(long)]
    verbose: bool,
}

#[derive(Args)]
struct ChildArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    log: PathBuf,
    #[arg(long)]
    seed: u64,
}

/// Runs `verity torture`.
pub(crate) fn torture(args: TortureArgs) -> Result<()> {
    match args.mode {
        Mode::Kill(a) => kill(a),
        Mode::Sim(a) => sim(a),
        Mode::Corrupt(a) => corrupt(a),
        Mode::Child(a) => child(a),
    }
}

// ---------------------------------------------------------------------
// The workload and its model

/// One write of a version: key index and value (`None`: a deletion).
type KeyWrite = (u64, Option<Vec<u8>>);

/// The seeded writes: version `v` is a pure function of `(seed, v)`.
#[derive(Clone, Copy)]
struct Workload {
    seed: u64,
    keys: u64,
}

fn key(i: u64) -> Vec<u8> {
    format!("torture-key-{i:06}").into_bytes()
}

impl Workload {
    fn rng(&self, v: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(self.seed ^ v.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    fn writes(&self, v: u64) -> Vec<KeyWrite> {
        let mut rng = self.rng(v);
        let n = rng.gen_range(1..=32);
        (0..n)
            .map(|_| {
                // A quarter of the writes go to a few hot keys, so pages
                // grow long delta chains.
                let k = if rng.gen_bool(0.25) {
                    rng.gen_range(0..self.keys.min(16))
                } else {
                    rng.gen_range(0..self.keys)
                };
                if rng.gen_bool(0.15) {
                    return (k, None);
                }
                let len = match rng.gen_range(0..100) {
                    0 => rng.gen_range(4096..=20_000),
                    1..=20 => rng.gen_range(100..=600),
                    _ => rng.gen_range(0..=64),
                };
                let mut value = vec![0u8; len];
                rng.fill(&mut value[..]);
                (k, Some(value))
            })
            .collect()
    }

    fn batch(&self, v: u64) -> Result<WriteBatch> {
        let mut b = WriteBatch::new();
        for (k, value) in self.writes(v) {
            match value {
                Some(value) => b.put(&key(k), &value)?,
                None => b.delete(&key(k))?,
            }
        }
        Ok(b)
    }
}

/// The expected state of every version from `floor` on, kept as each
/// key's history of `(version, index of the write in that version)`.
struct Model {
    w: Workload,
    applied: u64,
    history: Vec<Vec<(u64, Option<u32>)>>,
}

impl Model {
    fn new(w: Workload) -> Self {
        Model {
            w,
            applied: 0,
            history: vec![Vec::new(); w.keys as usize],
        }
    }

    fn advance_to(&mut self, v: u64) {
        while self.applied < v {
            self.applied += 1;
            let at = self.applied;
            for (i, (k, value)) in self.w.writes(at).into_iter().enumerate() {
                let h = &mut self.history[k as usize];
                let entry = (at, value.map(|_| i as u32));
                // The same key twice in a version: the last write wins.
                match h.last_mut() {
                    Some(last) if last.0 == at => *last = entry,
                    _ => h.push(entry),
                }
            }
        }
    }

    /// Drops history no version at or above `floor` needs.
    fn forget_below(&mut self, floor: u64) {
        for h in &mut self.history {
            let keep_from = h.partition_point(|e| e.0 <= floor).saturating_sub(1);
            h.drain(..keep_from);
        }
    }

    fn value_at(&self, k: u64, v: u64) -> Option<Vec<u8>> {
        assert!(v <= self.applied, "model asked beyond what it applied");
        let h = &self.history[k as usize];
        let i = h.partition_point(|e| e.0 <= v).checked_sub(1)?;
        let (at, index) = h[i];
        let index = index? as usize;
        self.w.writes(at).swap_remove(index).1
    }

    fn state_at(&self, v: u64) -> Vec<Option<Vec<u8>>> {
        (0..self.w.keys).map(|k| self.value_at(k, v)).collect()
    }

    /// The root of version `v`, from a trie built afresh from its state.
    fn root_at(&self, v: u64) -> Result<Hash> {
        let mut updates: Vec<_> = (0..self.w.keys)
            .filter_map(|k| {
                self.value_at(k, v)
                    .map(|x| (key_hash(&key(k)), Some(value_hash(&x))))
            })
            .collect();
        updates.sort_unstable_by_key(|a| a.0);
        Ok(Trie::new(MemPageStore::new()).update(0, 1, &updates)?.root)
    }
}

/// The options every mode runs with: memtables and caches so small that
/// flushes, compactions and disk reads happen all the time.
fn options() -> Options {
    let mut o = Options::laptop();
    o.memtable_bytes = 48 << 10;
    o.cache_bytes = 256 << 10;
    o.page_cache_bytes = 512 << 10;
    o.max_in_flight = 4;
    o
}

/// What a recovered store must show.
struct Expect<'a> {
    /// The newest version acknowledged durable.
    acked: u64,
    /// The newest acknowledged prune floor.
    floor: u64,
    /// Roots the writer saw, by version.
    roots: &'a BTreeMap<u64, Hash>,
}

/// Figures of the checks, for the summary.
#[derive(Default)]
struct Tally {
    versions_checked: u64,
    values_checked: u64,
    proofs_checked: u64,
}

/// Checks a reopened store against the model; returns its newest version.
fn check_recovered(
    db: &Db,
    model: &mut Model,
    expect: &Expect<'_>,
    rng: &mut ChaCha8Rng,
    tally: &mut Tally,
) -> Result<u64> {
    let s = db.stats();
    let latest = s.latest_durable;
    ensure!(
        latest >= expect.acked,
        "durable version {} lost: the store recovered to {latest}",
        expect.acked
    );
    ensure!(
        s.oldest_retained >= expect.floor,
        "prune to {} was acknowledged but the store reads from {}",
        expect.floor,
        s.oldest_retained
    );
    if expect.floor >= 2 {
        match db.snapshot(expect.floor - 1) {
            Err(DbError::NoSuchVersion { .. }) => {}
            Err(e) => bail!("pruned version {}: {e}", expect.floor - 1),
            Ok(_) => bail!("pruned version {} is readable", expect.floor - 1),
        }
    }
    model.advance_to(latest);
    let oldest = s.oldest_retained.max(1);
    if latest < oldest {
        return Ok(latest);
    }
    // Every retained version's root: the writer's, or for versions it never
    // saw durable, the model's.
    for v in oldest..=latest {
        let root = db.snapshot(v)?.root()?;
        let want = match expect.roots.get(&v) {
            Some(r) => *r,
            None => model.root_at(v)?,
        };
        ensure!(
            root == want,
            "root of version {v}: {} but expected {}",
            hex(&root),
            hex(&want)
        );
        tally.versions_checked += 1;
    }
    // Whole states and proofs of a few versions.
    let mut sample = vec![latest, rng.gen_range(oldest..=latest)];
    if expect.acked >= oldest {
        sample.push(expect.acked);
    }
    sample.sort_unstable();
    sample.dedup();
    for v in sample {
        let snap = db.snapshot(v)?;
        let root = snap.root()?;
        ensure!(
            root == model.root_at(v)?,
            "root of version {v} differs from the state's root"
        );
        check_state(&snap, model, v, tally)?;
        for _ in 0..4 {
            check_proof(&snap, model, &root, rng.gen_range(0..model.w.keys), tally)?;
        }
    }
    Ok(latest)
}

fn check_state(snap: &Snapshot, model: &Model, v: u64, tally: &mut Tally) -> Result<()> {
    let keys: Vec<Vec<u8>> = (0..model.w.keys).map(key).collect();
    let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
    let got = snap.get_many(&refs)?;
    for (k, (got, want)) in got.iter().zip(model.state_at(v)).enumerate() {
        ensure!(
            *got == want,
            "version {v}, key {k}: read {:?} bytes, expected {:?}",
            got.as_ref().map(Vec::len),
            want.as_ref().map(Vec::len)
        );
    }
    tally.values_checked += model.w.keys;
    Ok(())
}

fn check_proof(
    snap: &Snapshot,
    model: &Model,
    root: &Hash,
    k: u64,
    tally: &mut Tally,
) -> Result<()> {
    let v = snap.version();
    let kb = key(k);
    let proof = snap.prove(&kb)?;
    let want = model.value_at(k, v).map(|x| value_hash(&x));
    verify(root, &proof, &[(key_hash(&kb), want)])
        .map_err(|e| anyhow!("proof of key {k} at version {v} does not verify: {e}"))?;
    // The same proof must not show anything else.
    let wrong = match want {
        Some(mut h) => {
            h[0] ^= 1;
            Some(h)
        }
        None => Some(value_hash(b"never written")),
    };
    ensure!(
        verify(root, &proof, &[(key_hash(&kb), wrong)]).is_err(),
        "proof of key {k} at version {v} verifies a wrong value"
    );
    tally.proofs_checked += 1;
    Ok(())
}

// ---------------------------------------------------------------------
// kill: a child process and SIGKILL

/// Keys of the `kill` and `corrupt` workloads.
const KILL_KEYS: u64 = 2000;

/// The child's log: one line per event, synced before the operation it
/// announces and after the one it reports.
struct Log {
    file: File,
}

impl Log {
    /// Opens the log to append to it. A line the last child was killed
    /// in the middle of (its end not written, so not synced: the event it
    /// was to announce or report never happened or was never reported)
    /// is cut off first; appended to, it would run into the next line.
    fn open(path: &Path) -> Result<Log> {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut text = Vec::new();
        (&file).read_to_end(&mut text)?;
        if text.last().is_some_and(|&b| b != b'\n') {
            let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            file.set_len(whole as u64)?;
            file.sync_data()?;
        }
        Ok(Log { file })
    }

    fn line(&mut self, line: &str) -> Result<()> {
        self.file.write_all(format!("{line}\n").as_bytes())?;
        self.file.sync_data()?;
        Ok(())
    }
}

/// What the log says the child was told.
#[derive(Default)]
struct LogState {
    acked: u64,
    floor: u64,
    roots: BTreeMap<u64, Hash>,
    lines: u64,
}

fn read_log(path: &Path) -> Result<LogState> {
    let mut st = LogState::default();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(st),
        Err(e) => return Err(e.into()),
    };
    let mut text = String::new();
    BufReader::new(file).read_to_string(&mut text)?;
    // Whole lines only: the kill can cut the last one.
    for line in text.split_inclusive('\n') {
        let Some(line) = line.strip_suffix('\n') else {
            break;
        };
        st.lines += 1;
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some("done"), Some(v), Some(root)) => {
                let v: u64 = v.parse()?;
                let root = crate::tools::unhex(root)?
                    .try_into()
                    .map_err(|_| anyhow!("log: a root of the wrong length"))?;
                st.acked = st.acked.max(v);
                st.roots.insert(v, root);
            }
            (Some("prune-done"), Some(b), _) => st.floor = st.floor.max(b.parse()?),
            (Some("pending" | "prune-pending" | "open"), Some(_), _) => {}
            _ => bail!("log: a line that is none of its kinds: {line:?}"),
        }
    }
    Ok(st)
}

fn fresh_dir(dir: Option<PathBuf>) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    match dir {
        Some(d) => {
            if d.exists() {
                ensure!(
                    fs::read_dir(&d)?.next().is_none(),
                    "{} is not empty",
                    d.display()
                );
            }
            fs::create_dir_all(&d)?;
            Ok((d, None))
        }
        None => {
            let t = tempfile::tempdir()?;
            Ok((t.path().to_path_buf(), Some(t)))
        }
    }
}

fn kill(args: KillArgs) -> Result<()> {
    let seed = args.limits.seed();
    let deadline = args.limits.deadline();
    println!("torture kill: seed {seed}");
    let (base, _tmp) = fresh_dir(args.dir)?;
    let (dir, log) = (base.join("db"), base.join("expected.log"));
    let exe = std::env::current_exe()?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut model = Model::new(Workload {
        seed,
        keys: KILL_KEYS,
    });
    let mut tally = Tally::default();
    let mut rounds = 0;
    let start = Instant::now();
    while rounds < args.iterations && !past(deadline) {
        let mut child = Command::new(&exe)
            .args(["torture", "child", "--seed", &seed.to_string()])
            .arg("--dir")
            .arg(&dir)
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting the child")?;
        let run = Duration::from_millis(rng.gen_range(20..=args.max_run_ms.max(21)));
        let exited = wait_or_kill(&mut child, run)?;
        if let Some(status) = exited {
            bail!("round {rounds}: the child exited by itself ({status}); seed {seed}");
        }
        let st = read_log(&log)?;
        let db = Db::open(&dir, options())
            .with_context(|| format!("round {rounds}: reopen after SIGKILL; seed {seed}"))?;
        let expect = Expect {
            acked: st.acked,
            floor: st.floor,
            roots: &st.roots,
        };
        let latest = check_recovered(&db, &mut model, &expect, &mut rng, &mut tally)
            .with_context(|| format!("round {rounds}: after SIGKILL; seed {seed}"))?;
        db.close()?;
        model.forget_below(st.floor);
        rounds += 1;
        if rounds % 50 == 0 || rounds == args.iterations {
            println!(
                "round {rounds}: durable {} recovered {latest}, floor {} ({:.0} s)",
                st.acked,
                st.floor,
                start.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "torture kill: {rounds} SIGKILLs, each recovered and checked: {} version roots, {} values, {} proofs; 0 failures (seed {seed}, {:.0} s)",
        tally.versions_checked,
        tally.values_checked,
        tally.proofs_checked,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Lets the child run for `run`, then SIGKILLs it; `Some(status)` if it
/// ended on its own first.
fn wait_or_kill(child: &mut Child, run: Duration) -> Result<Option<std::process::ExitStatus>> {
    let end = Instant::now() + run;
    while Instant::now() < end {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // `Child::kill` is SIGKILL on Unix.
    child.kill()?;
    child.wait()?;
    Ok(None)
}

/// The child: commits, reads, proves and prunes until it is killed. Any
/// wrong answer ends it with a message and exit code 3.
fn child(args: ChildArgs) -> Result<()> {
    if let Err(e) = child_run(&args) {
        eprintln!("torture child: FAILED: {e:#}");
        std::process::exit(3);
    }
    Ok(())
}

fn child_run(args: &ChildArgs) -> Result<()> {
    let w = Workload {
        seed: args.seed,
        keys: KILL_KEYS,
    };
    let db = Arc::new(Db::open(&args.dir, options())?);
    let mut log = Log::open(&args.log)?;
    let start = db.stats().latest_durable;
    log.line(&format!("open {start}"))?;
    let mut model = Model::new(w);
    model.advance_to(start);
    let model = Arc::new(RwLock::new(model));
    let roots: Arc<RwLock<BTreeMap<u64, Hash>>> = Arc::default();
    let durable = Arc::new(AtomicU64::new(start));
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed ^ start ^ u64::from(std::process::id()));
    for t in 0..2u64 {
        let (db, model, roots, durable) =
            (db.clone(), model.clone(), roots.clone(), durable.clone());
        let mut rng = ChaCha8Rng::seed_from_u64(rng.gen::<u64>() ^ t);
        std::thread::spawn(move || {
            if let Err(e) = reader(&db, &model, &roots, &durable, &mut rng) {
                eprintln!("torture child: reader FAILED: {e:#}");
                std::process::exit(3);
            }
        });
    }
    let mut in_flight = VecDeque::new();
    let mut floor = db.stats().oldest_retained;
    let mut v = start;
    loop {
        v += 1;
        model.write().advance_to(v);
        log.line(&format!("pending {v}"))?;
        in_flight.push_back(db.commit(w.batch(v)?)?);
        let depth = rng.gen_range(0..=3);
        while in_flight.len() > depth {
            let h = in_flight.pop_front().expect("non-empty");
            h.wait_durable()?;
            let root = h.root()?;
            log.line(&format!("done {} {}", h.version(), hex(&root)))?;
            roots.write().insert(h.version(), root);
            durable.store(h.version(), Ordering::SeqCst);
        }
        let d = durable.load(Ordering::SeqCst);
        if rng.gen_ratio(1, 25) && d > floor + 30 {
            let b = d - rng.gen_range(5..=25);
            log.line(&format!("prune-pending {b}"))?;
            db.prune(b)?;
            log.line(&format!("prune-done {b}"))?;
            floor = b;
        }
    }
}

/// A reader thread of the child: snapshots of random durable versions,
/// values and proofs against the model.
fn reader(
    db: &Db,
    model: &RwLock<Model>,
    roots: &RwLock<BTreeMap<u64, Hash>>,
    durable: &AtomicU64,
    rng: &mut ChaCha8Rng,
) -> Result<()> {
    loop {
        let hi = durable.load(Ordering::SeqCst);
        let lo = db.stats().oldest_retained.max(1);
        if hi < lo {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        let v = rng.gen_range(lo..=hi);
        match read_one(db, model, roots, v, rng) {
            Ok(()) | Err(DbOrCheck::Db(DbError::NoSuchVersion { .. })) => {}
            Err(DbOrCheck::Db(e)) => bail!("reading version {v}: {e}"),
            Err(DbOrCheck::Check(e)) => return Err(e),
        }
    }
}

enum DbOrCheck {
    Db(DbError),
    Check(anyhow::Error),
}

impl From<DbError> for DbOrCheck {
    fn from(e: DbError) -> Self {
        DbOrCheck::Db(e)
    }
}

fn read_one(
    db: &Db,
    model: &RwLock<Model>,
    roots: &RwLock<BTreeMap<u64, Hash>>,
    v: u64,
    rng: &mut ChaCha8Rng,
) -> std::result::Result<(), DbOrCheck> {
    let snap = db.snapshot(v)?;
    let root = snap.root()?;
    if let Some(want) = roots.read().get(&v) {
        if root != *want {
            return Err(DbOrCheck::Check(anyhow!(
                "root of version {v} changed: {} then {}",
                hex(want),
                hex(&root)
            )));
        }
    }
    let keys: Vec<u64> = (0..8).map(|_| rng.gen_range(0..KILL_KEYS)).collect();
    for &k in &keys {
        let got = snap.get(&key(k))?;
        let want = model.read().value_at(k, v);
        if got != want {
            // A prune may have passed `v` while reading; then the read is
            // refused, never wrong. Anything else is a wrong answer.
            return Err(DbOrCheck::Check(anyhow!(
                "version {v}, key {k}: read {:?} bytes, expected {:?}",
                got.as_ref().map(Vec::len),
                want.as_ref().map(Vec::len)
            )));
        }
    }
    let k = keys[0];
    let proof = snap.prove(&key(k))?;
    let want = model.read().value_at(k, v).map(|x| value_hash(&x));
    if let Err(e) = verify(&root, &proof, &[(key_hash(&key(k)), want)]) {
        return Err(DbOrCheck::Check(anyhow!(
            "proof of key {k} at version {v}: {e}"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------
// sim: the simulated disk

/// Keys of the `sim` workload (smaller: thousands of checks a minute).
const SIM_KEYS: u64 = 300;

/// Crash points on one disk before starting afresh (bounds the model).
const POINTS_PER_DISK: u64 = 100;

/// What went wrong at a crash point.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Power lost after the operation.
    Power(CrashMode),
    /// The operation fails; the process then dies and restarts (the OS
    /// keeps what was written) or the power goes too.
    Fault(Fault, Option<CrashMode>),
}

fn sim(args: SimArgs) -> Result<()> {
    let seed = args.limits.seed();
    let deadline = args.limits.deadline();
    println!("torture sim: seed {seed}");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = Path::new("/db");
    let start = Instant::now();
    let mut tally = Tally::default();
    let (mut points, mut faults, mut crashes, mut versions) = (0u64, 0u64, 0u64, 0u64);
    let mut ops_per_version = 50.0f64;
    'disks: while points < args.points && !past(deadline) {
        let disk = SimDisk::new();
        let w = Workload {
            seed: rng.gen(),
            keys: SIM_KEYS,
        };
        let mut model = Model::new(w);
        let mut roots = BTreeMap::new();
        let (mut acked, mut floor) = (0u64, 0u64);
        let mut db = Db::open_with_io(Arc::new(disk.clone()), dir, options())
            .context("opening a fresh simulated disk")?;
        for _ in 0..POINTS_PER_DISK {
            if points >= args.points || past(deadline) {
                db.close()?;
                break 'disks;
            }
            let span = (ops_per_version * 12.0).max(10.0) as u64;
            let n = rng.gen_range(1..=span);
            let cut = match rng.gen_range(0..10) {
                0 => Cut::Fault(Fault::Eio, None),
                1 => Cut::Fault(Fault::NoSpace, Some(CrashMode::DropUnsynced)),
                2 => Cut::Fault(Fault::Eio, Some(CrashMode::RandomSectors)),
                _ => Cut::Power(
                    [
                        CrashMode::DropUnsynced,
                        CrashMode::RandomSectors,
                        CrashMode::TornTail,
                    ][rng.gen_range(0..3)],
                ),
            };
            match cut {
                Cut::Power(_) => disk.halt_after(n),
                Cut::Fault(f, _) => disk.fail_at(n, f),
            }
            let ops0 = disk.ops();
            let what = format!("crash point {points} ({cut:?} at operation {n}); seed {seed}");
            let run = sim_workload(&db, &w, &mut rng, &mut acked, &mut floor, &mut roots);
            let (done, failed_at) = run;
            versions += done;
            if done > 0 {
                let per = (disk.ops() - ops0) as f64 / done as f64;
                ops_per_version = 0.9 * ops_per_version + 0.1 * per;
            }
            if let Some(e) = &failed_at {
                // Only the injected fault or the power cut may fail it.
                ensure!(
                    !matches!(e, SimFailure::Wrong(_)),
                    "{what}: {}",
                    e.message()
                );
            }
            // The process ends: what it wrote is in the OS or lost with
            // the power.
            let _ = db.close();
            drop(db);
            match cut {
                Cut::Power(mode) | Cut::Fault(_, Some(mode)) => {
                    disk.crash(mode, rng.gen());
                    crashes += 1;
                }
                Cut::Fault(_, None) => disk.clear_fault(),
            }
            if matches!(cut, Cut::Fault(..)) {
                faults += 1;
            }
            db = Db::open_with_io(Arc::new(disk.clone()), dir, options())
                .with_context(|| format!("{what}: reopen"))?;
            let expect = Expect {
                acked,
                floor,
                roots: &roots,
            };
            let latest = check_recovered(&db, &mut model, &expect, &mut rng, &mut tally)
                .with_context(|| what.clone())?;
            // Roots of versions past the recovered one are void: those
            // versions will be written again (with the same writes).
            roots.retain(|&v, _| v <= latest);
            model.forget_below(floor);
            points += 1;
            if points % 500 == 0 {
                println!(
                    "{points} crash points ({faults} faults, {crashes} power cuts), {versions} versions ({:.0} s)",
                    start.elapsed().as_secs_f64()
                );
            }
        }
        db.close()?;
    }
    println!(
        "torture sim: {points} crash points ({crashes} power cuts, {faults} injected I/O errors), {versions} versions committed, {} version roots, {} values and {} proofs checked; 0 failures (seed {seed}, {:.0} s)",
        tally.versions_checked,
        tally.values_checked,
        tally.proofs_checked,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

enum SimFailure {
    /// An error from the store (expected once the fault hits).
    Store(DbError),
    /// A wrong answer.
    Wrong(String),
}

impl SimFailure {
    fn message(&self) -> String {
        match self {
            SimFailure::Store(e) => e.to_string(),
            SimFailure::Wrong(m) => m.clone(),
        }
    }
}

impl From<DbError> for SimFailure {
    fn from(e: DbError) -> Self {
        SimFailure::Store(e)
    }
}

/// Up to 40 versions with a few in flight, old snapshots read back, and
/// prunes; stops at the first error. Returns the versions committed and
/// the error.
fn sim_workload(
    db: &Db,
    w: &Workload,
    rng: &mut ChaCha8Rng,
    acked: &mut u64,
    floor: &mut u64,
    roots: &mut BTreeMap<u64, Hash>,
) -> (u64, Option<SimFailure>) {
    let mut done = 0;
    let mut run = || -> std::result::Result<(), SimFailure> {
        let mut in_flight = VecDeque::new();
        let first = db.stats().latest_staged + 1;
        for v in first..first + 40 {
            let batch = w.batch(v).map_err(|e| SimFailure::Wrong(e.to_string()))?;
            in_flight.push_back(db.commit(batch)?);
            done += 1;
            let depth = rng.gen_range(0..=3);
            while in_flight.len() > depth {
                let h: verity::CommitHandle = in_flight.pop_front().expect("non-empty");
                h.wait_durable()?;
                roots.insert(h.version(), h.root()?);
                *acked = h.version();
            }
            if rng.gen_ratio(1, 8) && *acked > *floor + 12 {
                let b = *acked - rng.gen_range(2..=10);
                db.prune(b)?;
                *floor = b;
            }
            if rng.gen_ratio(1, 4) && *acked >= (*floor).max(1) {
                // A durable version read back while commits go on.
                let v = rng.gen_range((*floor).max(1)..=*acked);
                let snap = db.snapshot(v)?;
                let root = snap.root()?;
                if roots.get(&v).is_some_and(|r| *r != root) {
                    return Err(SimFailure::Wrong(format!("root of version {v} changed")));
                }
            }
        }
        for h in in_flight {
            h.wait_durable()?;
            roots.insert(h.version(), h.root()?);
            *acked = h.version();
        }
        Ok(())
    };
    let r = run();
    (done, r.err())
}

// ---------------------------------------------------------------------
// corrupt: damaged files of a real store

/// How a damaged copy ended.
#[derive(Default)]
struct Outcomes {
    /// `verity check` reported the damage.
    check_detected: u64,
    /// Reads gave a typed corruption error.
    read_detected: u64,
    /// Every read gave the right data (the damage hit bytes nothing reads,
    /// or a redundant copy).
    intact: u64,
    /// A WAL cut before the end of its first mark slot: the same bytes as
    /// a crash while the log was created, which recovery must accept, so
    /// the versions in it are lost (see `RELIABILITY.md`).
    crash_like: u64,
    /// Wrong data, a panic, or an untyped error: failures.
    failures: Vec<String>,
}

fn corrupt(args: CorruptArgs) -> Result<()> {
    let seed = args.limits.seed();
    let deadline = args.limits.deadline();
    println!("torture corrupt: seed {seed}");
    let (base, _tmp) = fresh_dir(args.dir)?;
    let clean = base.join("clean");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let w = Workload {
        seed,
        keys: KILL_KEYS,
    };
    // The store: flushed segments, a compaction or two, a prune, and
    // versions still in the WAL.
    let (latest, floor, roots) = {
        let db = Db::open(&clean, options())?;
        let mut roots = BTreeMap::new();
        let mut floor = 0;
        for v in 1..=160 {
            let h = db.commit(w.batch(v)?)?;
            h.wait_durable()?;
            roots.insert(v, h.root()?);
            if v == 100 {
                db.prune(60)?;
                floor = 60;
            }
        }
        db.close()?;
        (160u64, floor, roots)
    };
    let mut model = Model::new(w);
    model.advance_to(latest);
    let mut files: Vec<(String, PathBuf)> = fs::read_dir(&clean)?
        .map(|e| {
            let p = e?.path();
            Ok((file_kind(&p), p))
        })
        .collect::<Result<_>>()?;
    files.sort();
    let mut kinds: Vec<String> = files.iter().map(|f| f.0.clone()).collect();
    kinds.dedup();
    println!(
        "store: {} files ({}), versions {floor}..={latest}",
        files.len(),
        kinds.join(", ")
    );
    let mut by_kind: BTreeMap<String, Outcomes> = BTreeMap::new();
    let start = Instant::now();
    let mut trials = 0;
    while trials < args.trials && !past(deadline) {
        let kind = &kinds[trials as usize % kinds.len()];
        let of_kind: Vec<&PathBuf> = files
            .iter()
            .filter(|f| &f.0 == kind)
            .map(|f| &f.1)
            .collect();
        let victim = of_kind[rng.gen_range(0..of_kind.len())];
        let copy = base.join(format!("trial-{trials}"));
        copy_dir(&clean, &copy)?;
        let target = copy.join(victim.file_name().expect("a file name"));
        let (damage, cut_to) = damage_file(&target, &mut rng)?;
        let out = by_kind.entry(kind.clone()).or_default();
        let expect = Expect {
            acked: latest,
            floor,
            roots: &roots,
        };
        let result = catch_unwind(AssertUnwindSafe(|| {
            judge_damaged(&copy, &mut model, &expect, &mut rng)
        }));
        if args.verbose {
            let said = match &result {
                Ok(Ok(j)) => format!("{j:?}"),
                Ok(Err(e)) => format!("FAILED: {e:#}"),
                Err(_) => "FAILED: panicked".into(),
            };
            println!(
                "trial {trials}: {} ({} bytes): {damage}: {said}",
                victim.display(),
                fs::metadata(victim)?.len()
            );
        }
        match result {
            Ok(Ok(Judged::CheckDetected)) => out.check_detected += 1,
            Ok(Ok(Judged::ReadDetected)) => out.read_detected += 1,
            Ok(Ok(Judged::Intact)) => out.intact += 1,
            // The store was closed cleanly: every version is synced, and
            // losing one without an error is a failure.
            Ok(Ok(Judged::VersionsLost(_)))
                if kind == "wal" && cut_to.is_some_and(crash_like_cut) =>
            {
                out.crash_like += 1
            }
            Ok(Ok(Judged::VersionsLost(latest))) => out.failures.push(format!(
                "{damage} in {}: opened at version {latest}, versions lost without an error",
                victim.display()
            )),
            Ok(Err(e)) => out
                .failures
                .push(format!("{damage} in {}: {e:#}", victim.display())),
            Err(_) => out
                .failures
                .push(format!("{damage} in {}: panicked", victim.display())),
        }
        fs::remove_dir_all(&copy)?;
        trials += 1;
    }
    println!(
        "{:<10} {:>8} {:>8} {:>8} {:>10} {:>8}",
        "file", "check", "read", "intact", "crash-like", "FAILED"
    );
    let mut failures = Vec::new();
    for (kind, o) in &by_kind {
        println!(
            "{kind:<10} {:>8} {:>8} {:>8} {:>10} {:>8}",
            o.check_detected,
            o.read_detected,
            o.intact,
            o.crash_like,
            o.failures.len()
        );
        failures.extend(o.failures.iter().cloned());
    }
    for f in &failures {
        println!("FAILED: {f}");
    }
    ensure!(
        failures.is_empty(),
        "torture corrupt: {} of {trials} damaged copies gave wrong data, a panic or an untyped error (seed {seed})",
        failures.len()
    );
    println!(
        "torture corrupt: {trials} damaged copies, each detected or read right; 0 failures (seed {seed}, {:.0} s)",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn file_kind(p: &Path) -> String {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    match p.extension().and_then(|e| e.to_str()) {
        Some("wal") => "wal".into(),
        Some("seg") => "segment".into(),
        _ if name.starts_with("MANIFEST") => "manifest".into(),
        _ => "other".into(),
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from)? {
        let p = e?.path();
        fs::copy(&p, to.join(p.file_name().expect("a file name")))?;
    }
    Ok(())
}

/// Whether a WAL cut to `len` bytes may be what a crash while the log was
/// created leaves: its first mark slot's synced offset is not all there,
/// so the header can read as a new file's.
fn crash_like_cut(len: usize) -> bool {
    len < verity::engine::wal::SLOTS[0] + 8
}

/// Flips bits, overwrites a range or cuts the file; says what it did, and
/// the length it cut the file to.
fn damage_file(path: &Path, rng: &mut ChaCha8Rng) -> Result<(String, Option<usize>)> {
    let mut bytes = fs::read(path)?;
    if bytes.is_empty() {
        bytes.push(rng.gen());
        fs::write(path, &bytes)?;
        return Ok(("a byte appended to an empty file".into(), None));
    }
    let mut cut = None;
    let what = match rng.gen_range(0..10) {
        0..=5 => {
            let n = rng.gen_range(1..=4);
            let mut at = Vec::new();
            for _ in 0..n {
                let i = rng.gen_range(0..bytes.len());
                bytes[i] ^= 1 << rng.gen_range(0..8);
                at.push(i);
            }
            format!("bits flipped at {at:?}")
        }
        6..=7 => {
            let i = rng.gen_range(0..bytes.len());
            let len = rng.gen_range(1..=512).min(bytes.len() - i);
            rng.fill(&mut bytes[i..i + len]);
            format!("{len} bytes overwritten at {i}")
        }
        _ => {
            let keep = rng.gen_range(0..bytes.len());
            bytes.truncate(keep);
            cut = Some(keep);
            format!("cut to {keep} bytes")
        }
    };
    fs::write(path, &bytes)?;
    Ok((what, cut))
}

#[derive(Debug)]
enum Judged {
    CheckDetected,
    ReadDetected,
    Intact,
    VersionsLost(u64),
}

/// A typed report of damage: what a reader may get instead of data.
fn is_corruption(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<DbError>(),
            Some(DbError::Corruption { .. } | DbError::Trie(_))
        ) || matches!(
            c.downcast_ref::<verity::engine::EngineError>(),
            Some(verity::engine::EngineError::Corruption { .. })
        )
    })
}

/// `verity check`, then every version read back.
fn judge_damaged(
    dir: &Path,
    model: &mut Model,
    expect: &Expect<'_>,
    rng: &mut ChaCha8Rng,
) -> Result<Judged> {
    let check = check_store(dir, 4, &mut std::io::sink());
    let check_found = match &check {
        Ok(damaged) => *damaged,
        Err(e) if is_corruption(e) => true,
        Err(e) => bail!("verity check failed without a corruption report: {e:#}"),
    };
    let read = read_back(dir, model, expect, rng);
    match read {
        Err(e) if is_corruption(&e) => Ok(if check_found {
            Judged::CheckDetected
        } else {
            Judged::ReadDetected
        }),
        Err(e) => Err(e),
        Ok(latest) if latest < expect.acked => Ok(Judged::VersionsLost(latest)),
        Ok(_) if check_found => Ok(Judged::CheckDetected),
        Ok(_) => Ok(Judged::Intact),
    }
}

/// Opens the store and reads every retained version; returns the newest.
/// Any answer that is neither right nor a typed error is an error here.
fn read_back(
    dir: &Path,
    model: &mut Model,
    expect: &Expect<'_>,
    rng: &mut ChaCha8Rng,
) -> Result<u64> {
    let db = Db::open_with_io(Arc::new(StdIo), dir, options())?;
    let s = db.stats();
    let latest = s.latest_durable;
    let mut tally = Tally::default();
    let oldest = s.oldest_retained.max(1);
    ensure!(
        oldest >= expect.floor,
        "pruned versions came back: the store reads from {oldest}"
    );
    for v in oldest..=latest {
        let snap = db.snapshot(v)?;
        let root = snap.root()?;
        ensure!(
            expect.roots.get(&v) == Some(&root),
            "root of version {v} is wrong"
        );
        check_state(&snap, model, v, &mut tally)?;
        check_proof(
            &snap,
            model,
            &root,
            rng.gen_range(0..model.w.keys),
            &mut tally,
        )?;
    }
    db.close()?;
    Ok(latest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_cut_by_the_kill_is_dropped_and_the_next_child_starts_a_new_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let root = hex(&[7u8; 32]);
        // A child killed in the middle of its third line.
        fs::write(
            &path,
            format!("open 1\ndone 1 {root}\ndone 2 {}", &root[..33]),
        )
        .expect("write");
        let st = read_log(&path).expect("a cut last line is not an error");
        assert_eq!((st.acked, st.lines), (1, 2));
        // The next child appends after the whole lines only.
        let mut log = Log::open(&path).expect("open");
        log.line(&format!("done 2 {root}")).expect("line");
        let st = read_log(&path).expect("read");
        assert_eq!((st.acked, st.lines), (2, 3));
        assert_eq!(st.roots.get(&2), Some(&[7u8; 32]));
        // A whole line that is none of the log's kinds is an error.
        fs::write(&path, "open 1\nnonsense\n").expect("write");
        assert!(read_log(&path).is_err());
    }
}
