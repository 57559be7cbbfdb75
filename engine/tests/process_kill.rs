//! A process killed with SIGKILL at a random moment loses no version it
//! acknowledged as durable, and shows nothing half-written.
//!
//! The test runs itself as a child (`VERITY_KILL_CHILD=<dir>`), which
//! commits versions with background flushes and compactions and prints
//! each version once its sync returns; the parent kills it, reopens the
//! store on the best backend and checks every version it can read.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{scale, seed};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use verity_engine::io::best_backend;
use verity_engine::{Engine, Namespace, Options, WriteBatch};

const TEST: &str = "sigkill_at_a_random_moment_loses_no_acknowledged_version";
const KEYS: u64 = 400;

/// The writes of version `v`: 16 puts and, every fifth version, a delete.
fn writes(v: u64) -> Vec<(String, Option<String>)> {
    let mut w: Vec<(String, Option<String>)> = (0..16)
        .map(|i| {
            let k = (v * 31 + i * 7) % KEYS;
            (
                format!("key-{k}"),
                Some(format!("{v}:{i}:").repeat(1 + (k % 9) as usize)),
            )
        })
        .collect();
    if v.is_multiple_of(5) {
        w.push((format!("key-{}", (v * 13) % KEYS), None));
    }
    w
}

fn options() -> Options {
    let mut o = Options::default();
    o.memtable_bytes = 128 << 10;
    o.compaction_fanin = 3;
    o
}

fn child(dir: &Path) {
    let engine = Engine::open(best_backend(false), dir, options()).expect("child open");
    let mut out = std::io::stdout().lock();
    let mut v = engine.latest().map_or(1, |l| l + 1);
    loop {
        let mut batch = WriteBatch::new();
        for (k, val) in writes(v) {
            match val {
                Some(val) => batch.put(Namespace::State, k.as_bytes(), val.as_bytes()),
                None => batch.delete(Namespace::State, k.as_bytes()),
            }
            .expect("batch");
        }
        engine.commit_durable(v, batch).expect("child commit");
        writeln!(out, "acked {v}").expect("stdout");
        out.flush().expect("stdout");
        v += 1;
    }
}

#[test]
fn sigkill_at_a_random_moment_loses_no_acknowledged_version() {
    if let Some(dir) = std::env::var_os("VERITY_KILL_CHILD") {
        child(Path::new(&dir));
        return;
    }
    let seed = seed(TEST);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    for round in 0..3 * scale() {
        // Each round continues the same store: recovery after recovery.
        let mut child = Command::new(&exe)
            .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env("VERITY_KILL_CHILD", dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let kill_after = Duration::from_millis(rng.gen_range(100..1500));
        let start = Instant::now();
        let mut acked = None;
        let mut lines = BufReader::new(stdout).lines();
        // Read acknowledgements until the moment comes, then kill.
        while start.elapsed() < kill_after {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(v) = line.strip_prefix("acked ") {
                        acked = Some(v.parse::<u64>().expect("version"));
                    }
                }
                _ => break,
            }
        }
        child.kill().expect("SIGKILL");
        // Acknowledgements printed before the kill still count.
        for line in lines.map_while(Result::ok) {
            if let Some(v) = line.strip_prefix("acked ") {
                acked = Some(v.parse::<u64>().expect("version"));
            }
        }
        child.wait().expect("reap child");

        let engine = Engine::open(best_backend(false), dir.path(), options()).expect("reopen");
        let latest = engine.latest();
        let segments = engine.stats().segments;
        println!("round {round}: acked {acked:?}, recovered {latest:?}, {segments} segments");
        assert!(
            latest >= acked,
            "round {round}: acknowledged {acked:?}, recovered {latest:?}"
        );
        let Some(latest) = latest else { continue };
        let mut state: BTreeMap<String, String> = BTreeMap::new();
        let mut versions: BTreeMap<u64, BTreeMap<String, String>> = BTreeMap::new();
        for v in 1..=latest {
            for (k, val) in writes(v) {
                match val {
                    Some(val) => state.insert(k, val),
                    None => state.remove(&k),
                };
            }
            if v == latest || rng.gen_ratio(1, 50) {
                versions.insert(v, state.clone());
            }
        }
        for (v, state) in &versions {
            for k in 0..KEYS {
                let k = format!("key-{k}");
                let got = engine.get(Namespace::State, k.as_bytes(), *v).expect("get");
                assert_eq!(
                    got.as_deref(),
                    state.get(&k).map(|s| s.as_bytes()),
                    "round {round}: {k} at version {v}"
                );
            }
        }
        let report = engine.check().expect("check");
        assert!(report.is_ok(), "{:?}", report.problems);
    }
}
