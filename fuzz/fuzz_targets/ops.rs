//! Operation sequences through the public `Db` API on the simulated disk,
//! against a model (a `BTreeMap` per version): puts, deletes, commits,
//! reads and proofs at retained versions, prunes, reopens and power cuts.
//! Every answer must match the model; nothing may panic.
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use verity::engine::sim::{CrashMode, SimDisk};
use verity::{key_hash, value_hash, verify, Db, DbError, Options, WriteBatch};

type State = BTreeMap<Vec<u8>, Vec<u8>>;
/// The batch being built: the last write of each key.
type Staged = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

fn options() -> Options {
    let mut o = Options::laptop();
    o.memtable_bytes = 4 << 10;
    o.cache_bytes = 64 << 10;
    o.page_cache_bytes = 64 << 10;
    o
}

fn open(disk: &SimDisk) -> Db {
    Db::open_with_io(Arc::new(disk.clone()), Path::new("/db"), options()).expect("open")
}

fn key(b: u8) -> Vec<u8> {
    format!("k{}", b % 24).into_bytes()
}

fuzz_target!(|data: &[u8]| {
    let disk = SimDisk::new();
    let mut db = open(&disk);
    // versions[v] is the state of version v; version 0 is empty.
    let mut versions: Vec<State> = vec![State::new()];
    let mut floor = 0u64;
    let mut batch = WriteBatch::new();
    let mut staged = Staged::new();
    let mut ops = data.chunks(3);
    let mut n = 0;
    while let Some(&[op, a, b]) = ops.next() {
        n += 1;
        if n > 64 {
            break;
        }
        let latest = versions.len() as u64 - 1;
        match op % 8 {
            0 | 1 => {
                let value = vec![b; usize::from(a % 5) * usize::from(b % 40)];
                batch.put(&key(a), &value).expect("put");
                staged.insert(key(a), Some(value));
            }
            2 => {
                batch.delete(&key(a)).expect("delete");
                staged.insert(key(a), None);
            }
            3 => {
                let mut state = versions[latest as usize].clone();
                for (k, v) in std::mem::take(&mut staged) {
                    match v {
                        Some(v) => state.insert(k, v),
                        None => state.remove(&k),
                    };
                }
                let h = db.commit(std::mem::take(&mut batch)).expect("commit");
                h.wait_durable().expect("durable");
                assert_eq!(h.version(), latest + 1);
                versions.push(state);
            }
            4 => {
                let v = floor.max(u64::from(b) % (latest + 1));
                let snap = db.snapshot(v).expect("a retained version");
                let got = snap.get(&key(a)).expect("get");
                assert_eq!(
                    got.as_ref(),
                    versions[v as usize].get(&key(a)),
                    "key {a} at {v}"
                );
                let root = snap.root().expect("root");
                let proof = snap.prove(&key(a)).expect("prove");
                let claim = got.as_ref().map(|x| value_hash(x));
                verify(&root, &proof, &[(key_hash(&key(a)), claim)]).expect("proof verifies");
            }
            5 if latest > 0 => {
                let to = u64::from(a) % (latest + 1);
                db.prune(to).expect("prune");
                floor = floor.max(to);
                if floor >= 1 {
                    assert!(matches!(
                        db.snapshot(floor - 1),
                        Err(DbError::NoSuchVersion { .. })
                    ));
                }
            }
            6 => {
                db.close().expect("close");
                db = open(&disk);
            }
            7 => {
                // Power cut: every commit above was durable, so nothing is
                // lost; the batch being built is.
                disk.crash(CrashMode::RandomSectors, u64::from(b));
                drop(db);
                db = open(&disk);
                batch = WriteBatch::new();
                staged.clear();
            }
            _ => {}
        }
        let s = db.stats();
        assert_eq!(s.latest_durable, versions.len() as u64 - 1);
    }
    db.close().expect("close");
});
