//! After a crash, every version whose `wait_durable` returned is there with
//! its root, and the newest version is whole: power cuts on the simulated
//! disk at points spread over a workload's I/O, and a child process killed
//! with SIGKILL.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{scale, seed};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use verity::engine::sim::{CrashMode, SimDisk};
use verity::{key_hash, value_hash, Db, MemPageStore, Options, Trie, WriteBatch};

/// The writes of version `v`: deterministic, so any process can replay
/// the history.
fn writes(v: u64) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    (0..12u64)
        .map(|i| {
            let k = (v * 37 + i * 11) % 300;
            let key = format!("key-{k}").into_bytes();
            if (v + i).is_multiple_of(9) {
                (key, None)
            } else {
                (
                    key,
                    Some(format!("{v}/{i}").repeat(1 + (k % 5) as usize).into_bytes()),
                )
            }
        })
        .collect()
}

fn batch(v: u64) -> WriteBatch {
    let mut b = WriteBatch::new();
    for (k, val) in writes(v) {
        match val {
            Some(val) => b.put(&k, &val),
            None => b.delete(&k),
        }
        .expect("batch");
    }
    b
}

type State = BTreeMap<Vec<u8>, Vec<u8>>;

/// States and roots of versions 0..=n, computed apart from the Db.
fn reference(n: u64) -> (Vec<State>, Vec<[u8; 32]>) {
    let trie = Trie::new(MemPageStore::new());
    let mut states = vec![BTreeMap::new()];
    let mut roots = vec![verity::EMPTY];
    for v in 1..=n {
        let mut state = states[v as usize - 1].clone();
        let mut updates = BTreeMap::new();
        for (k, val) in writes(v) {
            updates.insert(key_hash(&k), val.as_ref().map(|x| value_hash(x)));
            match val {
                Some(val) => state.insert(k, val),
                None => state.remove(&k),
            };
        }
        let updates: Vec<_> = updates.into_iter().collect();
        let out = trie.update(v - 1, v, &updates).expect("reference update");
        trie.source().apply(&out).expect("reference apply");
        states.push(state);
        roots.push(out.root);
    }
    (states, roots)
}

/// Checks a reopened Db against the reference; returns its latest version.
fn check(db: &Db, acked: u64, what: &str) -> u64 {
    let latest = db.stats().latest_durable;
    assert!(
        latest >= acked,
        "{what}: durable version {acked} lost (latest {latest})"
    );
    let (states, roots) = reference(latest);
    for v in [acked, latest] {
        if v == 0 {
            continue;
        }
        let snap = db.snapshot(v).expect("snapshot");
        assert_eq!(
            snap.root().expect("root"),
            roots[v as usize],
            "{what}: root of {v}"
        );
        for k in 0..300 {
            let key = format!("key-{k}").into_bytes();
            assert_eq!(
                snap.get(&key).expect("get"),
                states[v as usize].get(&key).cloned(),
                "{what}: key-{k} at {v}"
            );
        }
    }
    latest
}

fn options() -> Options {
    let mut o = Options::laptop();
    o.memtable_bytes = 32 << 10;
    o.io_uring = false;
    o
}

/// [`options`] with no decoded page cached: an update reads every page
/// from the engine, and waits for the version before it to be written.
fn uncached() -> Options {
    let mut o = options();
    o.page_cache_bytes = 0;
    o
}

/// Commits versions on `db` until an error; returns the newest version
/// whose `wait_durable` returned.
fn workload(db: &Db, versions: u64, rng: &mut ChaCha8Rng) -> u64 {
    let mut acked = 0;
    let mut pending = Vec::new();
    let start = db.stats().latest_staged + 1;
    for v in start..start + versions {
        match db.commit(batch(v)) {
            Ok(h) => pending.push(h),
            Err(_) => break,
        }
        if rng.gen_bool(0.3) {
            for h in pending.drain(..) {
                match h.wait_durable() {
                    Ok(()) => acked = h.version(),
                    Err(_) => return acked,
                }
            }
        }
    }
    for h in pending {
        match h.wait_durable() {
            Ok(()) => acked = h.version(),
            Err(_) => break,
        }
    }
    acked
}

#[test]
fn power_cuts_keep_every_durable_version_whole() {
    let seed = seed("power_cuts_keep_every_durable_version_whole");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = Path::new("/db");
    let versions = 60 * u64::from(scale());
    // A clean run counts the I/O operations.
    let disk = SimDisk::new();
    let db = Db::open_with_io(Arc::new(disk.clone()), dir, options()).expect("open");
    assert_eq!(workload(&db, versions, &mut rng), versions);
    db.close().expect("close");
    let total = disk.ops();
    let points = 60 * u64::from(scale());
    for p in 0..points {
        let n = total * p / points + rng.gen_range(0..total / points + 1);
        let mode = [
            CrashMode::DropUnsynced,
            CrashMode::RandomSectors,
            CrashMode::TornTail,
        ][p as usize % 3];
        // Every other run without a page cache: the power cut then also
        // fails the engine commits that the next updates wait for.
        let opts = if p % 2 == 1 { uncached() } else { options() };
        let what = format!(
            "power cut after op {n} of {total} ({mode:?}, {} bytes of page cache)",
            opts.page_cache_bytes
        );
        let disk = SimDisk::new();
        disk.halt_after(n);
        let acked = match Db::open_with_io(Arc::new(disk.clone()), dir, opts) {
            Ok(db) => {
                let acked = workload(&db, versions, &mut rng);
                // The close fails after the power cut; what matters is the
                // state after the crash.
                let _ = db.close();
                acked
            }
            Err(_) => 0,
        };
        disk.crash(mode, seed ^ n);
        let db = Db::open_with_io(Arc::new(disk.clone()), dir, options())
            .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
        let latest = check(&db, acked, &what);
        // Commits go on from the recovered version.
        let h = db.commit(batch(latest + 1)).expect("commit after recovery");
        h.wait_durable().expect("durable after recovery");
        db.close().expect("close");
    }
}

const KILL_TEST: &str = "sigkill_keeps_every_durable_version_whole";

#[test]
fn sigkill_keeps_every_durable_version_whole() {
    if let Some(dir) = std::env::var_os("VERITY_DB_KILL_CHILD") {
        let db = Db::open(Path::new(&dir), options()).expect("child open");
        let mut out = std::io::stdout().lock();
        loop {
            let v = db.stats().latest_staged + 1;
            let h = db.commit(batch(v)).expect("child commit");
            if v.is_multiple_of(3) {
                h.wait_durable().expect("child durable");
                writeln!(out, "durable {v}").expect("stdout");
                out.flush().expect("stdout");
            }
        }
    }
    let seed = seed(KILL_TEST);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    for round in 0..3 * u64::from(scale()) {
        let mut child = Command::new(&exe)
            .args([KILL_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env("VERITY_DB_KILL_CHILD", dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let kill_after = Duration::from_millis(rng.gen_range(200..1500));
        let start = Instant::now();
        let mut acked = 0;
        while start.elapsed() < kill_after {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(v) = line.strip_prefix("durable ") {
                        acked = v.parse().expect("version");
                    }
                }
                _ => break,
            }
        }
        child.kill().expect("SIGKILL");
        for line in lines.map_while(Result::ok) {
            if let Some(v) = line.strip_prefix("durable ") {
                acked = v.parse().expect("version");
            }
        }
        child.wait().expect("reap");
        let db = Db::open(dir.path(), options()).expect("reopen");
        let latest = check(&db, acked, &format!("round {round}"));
        println!("round {round}: durable {acked}, recovered {latest}");
        db.close().expect("close");
    }
}
