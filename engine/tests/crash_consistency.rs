//! A crash at any point of a workload's I/O loses no acknowledged version
//! and exposes nothing half-written.
//!
//! The workload (commits, syncs, flushes, compactions, prunes) runs on the
//! simulated disk with the power cut after its nth I/O operation, for every
//! n (`VERITY_SCALE` multiplies the workload), each crash dropping unsynced
//! writes, keeping a random subset of their sectors, or tearing the last.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{run_steps, scale, seed, test_options, verify, workload, Model};
use verity_engine::sim::{CrashMode, SimDisk};
use verity_engine::{Engine, Namespace, WriteBatch};

const MODES: [CrashMode; 3] = [
    CrashMode::DropUnsynced,
    CrashMode::RandomSectors,
    CrashMode::TornTail,
];

#[test]
fn no_acknowledged_version_is_lost_at_any_crash_point() {
    let seed = seed("no_acknowledged_version_is_lost_at_any_crash_point");
    let steps = workload(seed, 100 * u64::from(scale()));
    let dir = Path::new("/db");

    // A clean run counts the I/O operations.
    let disk = SimDisk::new();
    let engine = Engine::open(Arc::new(disk.clone()), dir, test_options()).expect("open");
    let mut model = Model::default();
    assert!(run_steps(&engine, &steps, &mut model).is_none());
    let total = disk.ops();
    let stats = engine.stats();
    assert!(
        stats.flushes > 0 && stats.compactions > 0,
        "workload too small: {stats:?}"
    );
    drop(engine);
    println!("{total} I/O operations, {} versions", model.versions.len());

    for n in 0..=total {
        let mode = MODES[(n % 3) as usize];
        let what = format!("crash after op {n} ({mode:?})");
        let disk = SimDisk::new();
        disk.halt_after(n);
        let mut model = Model::default();
        if let Ok(engine) = Engine::open(Arc::new(disk.clone()), dir, test_options()) {
            run_steps(&engine, &steps, &mut model);
        }
        disk.crash(mode, seed ^ n);
        let engine = Engine::open(Arc::new(disk.clone()), dir, test_options())
            .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
        let latest = verify(&engine, &model, &what);
        let report = engine.check().expect("check");
        assert!(report.is_ok(), "{what}: {:?}", report.problems);
        // The store takes new versions after recovery.
        let next = latest.map_or(0, |l| l + 1);
        let mut batch = WriteBatch::new();
        batch
            .put(Namespace::State, b"after", b"crash")
            .expect("put");
        engine
            .commit_durable(next, batch)
            .expect("commit after recovery");
        drop(engine);
        let engine = Engine::open(Arc::new(disk.clone()), dir, test_options()).expect("reopen");
        assert_eq!(engine.latest(), Some(next), "{what}");
        assert_eq!(
            engine
                .get(Namespace::State, b"after", next)
                .expect("get")
                .as_deref(),
            Some(&b"crash"[..])
        );
    }
}
