//! Damage to any file (a flipped bit, a cut) gives the right data or a
//! typed corruption error on the read that meets it, never wrong data and
//! never a panic; `check` reports damage to the manifest and segments.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{key, ns, run_steps, scale, seed, test_options, workload, Model, Step, KEYS};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use verity_engine::check::check_dir;
use verity_engine::io::IoBackend;
use verity_engine::sim::{CrashMode, SimDisk};
use verity_engine::wal::{HEADER_LEN, SLOTS, SLOT_LEN};
use verity_engine::{Engine, EngineError};

/// Reads every key at a sample of versions; each read is right or a
/// corruption error. Returns the number of corruption errors.
fn read_all(engine: &Engine, model: &Model, what: &str) -> usize {
    let mut errors = 0;
    let Some(latest) = engine.latest() else {
        return 0;
    };
    assert!(
        model.versions.contains_key(&latest),
        "{what}: latest {latest} never committed"
    );
    let from = engine.floor().unwrap_or(0);
    for v in (from..=latest).step_by(5).chain([latest]) {
        let state = model.at(v);
        for k in 0..KEYS {
            match engine.get(ns(k), &key(k), v) {
                Ok(got) => assert_eq!(
                    got.as_deref(),
                    state.get(&k).map(|x| x.as_slice()),
                    "{what}: wrong data for key {k} at {v}"
                ),
                Err(EngineError::Corruption { .. }) => errors += 1,
                Err(e) => panic!("{what}: untyped error {e}"),
            }
        }
    }
    errors
}

#[test]
fn damage_to_any_file_is_detected_never_returned() {
    let seed = seed("damage_to_any_file_is_detected_never_returned");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = Path::new("/db");
    let disk = SimDisk::new();
    let mut steps = workload(seed, 120);
    // Leave segments, and versions only in the WAL.
    steps.insert(steps.len() / 2, Step::Flush);
    let mut model = Model::default();
    let engine = Engine::open(Arc::new(disk.clone()), dir, test_options()).expect("open");
    assert!(run_steps(&engine, &steps, &mut model).is_none());
    assert!(engine.stats().segments >= 1);
    engine.close().expect("close");
    assert!(check_dir(&disk, dir).expect("check").is_ok());

    let names = disk.list(dir).expect("list");
    let trials = 40 * scale() as usize;
    let (mut refused, mut read_errors, mut detected) = (0, 0, 0);
    for name in &names {
        let path = dir.join(name);
        let good = disk.contents(&path).expect("file");
        for t in 0..trials {
            let mut bytes = good.clone();
            let cut = t % 3 == 0;
            let at = rng.gen_range(0..bytes.len());
            let what = if cut {
                bytes.truncate(at);
                format!("{name} cut at {at}")
            } else {
                let bit = rng.gen_range(0..8);
                bytes[at] ^= 1 << bit;
                format!("{name} bit {bit} flipped at {at}")
            };
            disk.set_contents(&path, bytes).expect("damage");
            let report = check_dir(&disk, dir).unwrap_or_else(|e| panic!("{what}: check: {e}"));
            if report.is_ok() {
                // Only a WAL cut at a record boundary looks like a shorter
                // log, and a flip in one of the WAL header's two mark
                // slots leaves the other (a crash may tear one, so a bad
                // slot alone is no damage); everything else is covered by
                // a checksum. The reads below must still be right.
                let wal = name.ends_with(".wal");
                let in_a_slot = SLOTS.iter().any(|&s| (s..s + SLOT_LEN).contains(&at));
                assert!(wal && (cut || in_a_slot), "{what}: check found nothing");
            } else {
                detected += 1;
            }
            match Engine::open(Arc::new(disk.clone()), dir, test_options()) {
                Ok(engine) => read_errors += read_all(&engine, &model, &what),
                Err(EngineError::Corruption { .. }) => refused += 1,
                Err(e) => panic!("{what}: open failed with an untyped error: {e}"),
            }
            // Undo the damage (and whatever recovery did to the file).
            disk.set_contents(&path, good.clone()).expect("restore");
        }
    }
    println!(
        "{} files x {trials} damages: {detected} detected by check, {refused} refused at open, \
         {read_errors} reads gave a corruption error",
        names.len()
    );
}

#[test]
fn a_log_cut_below_the_retention_floor_is_refused_at_open() {
    let disk = SimDisk::new();
    let dir = Path::new("/db");
    let engine = eight_versions(&disk, dir, false);
    // Prune syncs the log first: versions 1 to 8 are in it, durable, in
    // one group (so the synced mark still sits before them). The process
    // then dies without a clean close.
    engine.prune(6).expect("prune");
    disk.crash(CrashMode::DropUnsynced, 0);
    drop(engine);
    let path = dir.join(wal_file(&disk, dir));
    let mut bytes = disk.contents(&path).expect("the WAL");
    // Keep the first half of the records: versions up to about 4 remain,
    // below the floor.
    bytes.truncate(HEADER_LEN + (bytes.len() - HEADER_LEN) / 2);
    disk.set_contents(&path, bytes).expect("cut");
    match Engine::open(Arc::new(disk.clone()), dir, test_options()) {
        Err(EngineError::Corruption { detail, .. }) => {
            assert!(detail.contains("retention floor"), "{detail}");
        }
        Ok(engine) => panic!(
            "opened a log that ends at {:?} below the floor {:?}",
            engine.latest(),
            engine.floor()
        ),
        Err(e) => panic!("untyped error: {e}"),
    }
}

fn wal_file(disk: &SimDisk, dir: &Path) -> String {
    disk.list(dir)
        .expect("list")
        .into_iter()
        .find(|n| n.ends_with(".wal"))
        .expect("a WAL file")
}

/// Eight versions of one key, each synced on its own if `durable`, else
/// left in the log's buffer.
fn eight_versions(disk: &SimDisk, dir: &Path, durable: bool) -> Engine {
    let engine = Engine::open(Arc::new(disk.clone()), dir, test_options()).expect("open");
    for v in 1..=8u64 {
        let mut batch = verity_engine::WriteBatch::new();
        batch
            .put(ns(2), &key(2), &v.to_le_bytes())
            .expect("a small write");
        if durable {
            engine.commit_durable(v, batch).expect("commit");
        } else {
            engine.commit(v, batch).expect("commit");
        }
    }
    engine
}

fn expect_wal_corruption(disk: &SimDisk, dir: &Path, what: &str) {
    match Engine::open(Arc::new(disk.clone()), dir, test_options()) {
        Err(EngineError::Corruption { .. }) => {}
        Ok(engine) => panic!(
            "{what}: opened, recovered to {:?}: acknowledged versions silently lost",
            engine.latest()
        ),
        Err(e) => panic!("{what}: untyped error: {e}"),
    }
}

#[test]
fn damage_to_synced_log_records_is_reported_not_cut_as_a_torn_tail() {
    let disk = SimDisk::new();
    let dir = Path::new("/db");
    let engine = eight_versions(&disk, dir, true);
    // No clean close: the synced mark is the start of the last group.
    disk.crash(CrashMode::DropUnsynced, 0);
    drop(engine);
    let path = dir.join(wal_file(&disk, dir));
    let good = disk.contents(&path).expect("the WAL");
    let mut bytes = good.clone();
    bytes[HEADER_LEN + 10] ^= 0x10;
    disk.set_contents(&path, bytes).expect("flip");
    expect_wal_corruption(&disk, dir, "a bit flipped in the first record");
    // A torn last group is still a crash to recover from.
    let mut bytes = good.clone();
    bytes.truncate(good.len() - 3);
    disk.set_contents(&path, bytes).expect("cut");
    let engine = Engine::open(Arc::new(disk.clone()), dir, test_options()).expect("reopen");
    assert_eq!(engine.latest(), Some(7), "the torn last version is cut");
}

#[test]
fn a_clean_close_seals_the_log_so_any_damage_is_reported() {
    let disk = SimDisk::new();
    let dir = Path::new("/db");
    eight_versions(&disk, dir, true).close().expect("close");
    let path = dir.join(wal_file(&disk, dir));
    let good = disk.contents(&path).expect("the WAL");
    let mut bytes = good.clone();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x01;
    disk.set_contents(&path, bytes).expect("flip");
    expect_wal_corruption(&disk, dir, "a bit flipped in the last record");
    disk.set_contents(&path, good[..good.len() - 3].to_vec())
        .expect("cut");
    expect_wal_corruption(&disk, dir, "the last record cut short");
    // Cut inside the header (found by `verity torture corrupt`): the marks
    // say records followed, so this is not a creation that did not finish.
    for cut in [20, 100, 600, HEADER_LEN - 1, HEADER_LEN] {
        disk.set_contents(&path, good[..cut].to_vec()).expect("cut");
        expect_wal_corruption(&disk, dir, &format!("the log cut to {cut} bytes"));
    }
    // Undamaged, it opens with every version, and appends after them.
    disk.set_contents(&path, good).expect("restore");
    let engine = Engine::open(Arc::new(disk.clone()), dir, test_options()).expect("reopen");
    assert_eq!(engine.latest(), Some(8));
    let mut batch = verity_engine::WriteBatch::new();
    batch.put(ns(2), &key(2), b"nine").expect("a small write");
    engine
        .commit_durable(9, batch)
        .expect("commit after reopen");
}

#[test]
fn a_sealed_log_of_one_group_cut_inside_its_header_is_reported() {
    // One group marks slot 0 with the header's own length, as a new file
    // has it; the seal must still tell the two apart (found by `verity
    // torture corrupt`).
    let disk = SimDisk::new();
    let dir = Path::new("/db");
    let engine = Engine::open(Arc::new(disk.clone()), dir, test_options()).expect("open");
    let mut batch = verity_engine::WriteBatch::new();
    batch.put(ns(2), &key(2), b"one").expect("a small write");
    engine.commit_durable(1, batch).expect("commit");
    engine.close().expect("close");
    let path = dir.join(wal_file(&disk, dir));
    let good = disk.contents(&path).expect("the WAL");
    for cut in [20, 100, 511, 600] {
        disk.set_contents(&path, good[..cut].to_vec()).expect("cut");
        expect_wal_corruption(&disk, dir, &format!("the log cut to {cut} bytes"));
    }
}
