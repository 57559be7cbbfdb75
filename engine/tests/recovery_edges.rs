//! Recovery's edge cases: a WAL tail that was written but never synced,
//! WAL file numbers that pass a power of ten, and a second opener.

use std::path::Path;
use std::sync::Arc;

use verity_engine::io::{IoBackend, StdIo};
use verity_engine::manifest::Manifest;
use verity_engine::sim::{CrashMode, Fault, SimDisk};
use verity_engine::wal::Wal;
use verity_engine::{Engine, EngineError, Namespace, Options, WriteBatch};

fn put(v: u64) -> WriteBatch {
    let mut b = WriteBatch::new();
    b.put(Namespace::State, b"k", &v.to_le_bytes())
        .expect("put");
    b
}

#[test]
fn an_unsynced_tail_replayed_at_open_is_made_durable_before_it_counts() {
    let disk = SimDisk::new();
    let dir = Path::new("/db");
    let engine = Engine::open(Arc::new(disk.clone()), dir, Options::for_tests()).expect("open");
    engine.commit_durable(1, put(1)).expect("commit 1");
    engine.commit(2, put(2)).expect("commit 2");
    engine.commit(3, put(3)).expect("commit 3");
    // The group's write reaches the page cache, its sync fails.
    disk.fail_at(2, Fault::Eio);
    assert!(engine.sync().is_err());
    drop(engine);
    // A restart (no power loss) replays versions 2 and 3 from the page
    // cache; once open says they are durable, a prune may rely on it.
    let engine = Engine::open(Arc::new(disk.clone()), dir, Options::for_tests()).expect("reopen");
    assert_eq!(engine.durable(), Some(3));
    engine.prune(3).expect("prune");
    drop(engine);
    disk.crash(CrashMode::DropUnsynced, 7);
    let engine = Engine::open(Arc::new(disk.clone()), dir, Options::for_tests()).expect("reopen");
    assert_eq!(engine.latest(), Some(3));
    assert_eq!(
        engine
            .get(Namespace::State, b"k", 3)
            .expect("get")
            .as_deref(),
        Some(&3u64.to_le_bytes()[..])
    );
}

#[test]
fn wal_files_replay_in_number_order_past_a_power_of_ten() {
    let disk = SimDisk::new();
    let dir = Path::new("/db");
    disk.create_dir_all(dir).expect("mkdir");
    // Two live WAL files whose names sort the other way round as strings.
    for (n, v) in [(999_999u64, 1u64), (1_000_000, 2)] {
        let mut wal = Wal::create(&disk, &dir.join(format!("{n:06}.wal"))).expect("wal");
        let mut b = put(v);
        b.put(Namespace::State, format!("only-{v}").as_bytes(), b"x")
            .expect("put");
        wal.append(v, &b.encode()).expect("append");
        wal.sync().expect("sync");
    }
    let m = Manifest {
        next_file: 1_000_001,
        min_wal: 999_999,
        ..Manifest::default()
    };
    m.store(&disk, dir).expect("manifest");
    let engine = Engine::open(Arc::new(disk.clone()), dir, Options::for_tests()).expect("open");
    assert_eq!(engine.latest(), Some(2));
    assert!(engine
        .get(Namespace::State, b"only-1", 1)
        .expect("get")
        .is_some());
    assert!(engine
        .get(Namespace::State, b"only-2", 2)
        .expect("get")
        .is_some());
}

#[test]
fn a_second_opener_is_refused_while_the_store_is_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(Arc::new(StdIo), dir.path(), Options::for_tests()).expect("open");
    match Engine::open(Arc::new(StdIo), dir.path(), Options::for_tests()) {
        Err(EngineError::Locked(_)) => {}
        other => panic!("a second open: {other:?}"),
    }
    drop(engine);
    Engine::open(Arc::new(StdIo), dir.path(), Options::for_tests()).expect("open after close");
}
