//! The write-ahead log over the real file system (through `std` and, where
//! the kernel allows, io_uring with buffered and `O_DIRECT` reads) and the
//! simulated disk: round trips, a crash at every sync point, a fault at
//! every I/O call, and damage at every byte. Crashes, faults and damage
//! need the simulated disk, so only the round trip runs on every backend.

mod common;

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use verity_engine::io::{IoBackend, StdIo};
use verity_engine::sim::{CrashMode, Fault, SimDisk};
use verity_engine::wal::{Wal, WalRecord, HEADER_LEN, MAX_BODY};
use verity_engine::EngineError;

use common::seed;

/// `groups` groups of 1..=4 records with bodies of 0..=700 bytes (some
/// records span several sectors).
fn workload(rng: &mut ChaCha8Rng, groups: usize) -> Vec<Vec<WalRecord>> {
    let mut version = 0;
    (0..groups)
        .map(|_| {
            (0..rng.gen_range(1..=4))
                .map(|_| {
                    version += rng.gen_range(1..=3);
                    let len = rng.gen_range(0..=700);
                    WalRecord {
                        version,
                        body: (0..len).map(|_| rng.gen()).collect(),
                    }
                })
                .collect()
        })
        .collect()
}

fn sim_dir() -> (SimDisk, &'static Path) {
    let disk = SimDisk::new();
    let dir = Path::new("/db");
    disk.create_dir_all(dir).expect("mkdir");
    (disk, dir)
}

/// The io_uring backends (buffered and `O_DIRECT` reads) the kernel
/// allows: none where it refuses a ring (printed).
fn uring_backends() -> Vec<Box<dyn IoBackend>> {
    #[cfg(target_os = "linux")]
    {
        use verity_engine::uring::{UringIo, UringOptions};
        let mut backends: Vec<Box<dyn IoBackend>> = Vec::new();
        for direct in [false, true] {
            match UringIo::new(UringOptions {
                direct,
                ..UringOptions::default()
            }) {
                Ok(io) => backends.push(Box::new(io)),
                Err(e) => println!("io_uring unavailable ({e}); not tested"),
            }
        }
        backends
    }
    #[cfg(not(target_os = "linux"))]
    Vec::new()
}

#[test]
fn records_round_trip_on_every_backend() {
    let mut rng = ChaCha8Rng::seed_from_u64(seed("records_round_trip_on_every_backend"));
    let groups = workload(&mut rng, 30);
    let all: Vec<WalRecord> = groups.iter().flatten().cloned().collect();
    let (disk, sim) = sim_dir();
    let uring = uring_backends();
    let mut backends: Vec<(&dyn IoBackend, &Path)> = vec![(&disk, sim)];
    let tmps: Vec<tempfile::TempDir> = (0..=uring.len())
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let real = std::iter::once(&StdIo as &dyn IoBackend).chain(uring.iter().map(|io| &**io));
    backends.extend(real.zip(tmps.iter().map(|t| t.path())));
    for (io, dir) in backends {
        let path = dir.join("wal-1");
        let mut wal = Wal::create(io, &path).expect("create");
        assert!(wal.is_empty());
        assert!(matches!(
            Wal::create(io, &path),
            Err(EngineError::InvalidArgument(_))
        ));
        for group in &groups {
            for r in group {
                wal.append(r.version, &r.body).expect("append");
            }
            wal.sync().expect("sync");
        }
        let last = all.last().map(|r| r.version);
        assert_eq!(wal.last_version(), last);
        assert!(matches!(
            wal.append(1, b"old"),
            Err(EngineError::InvalidArgument(_))
        ));
        drop(wal);
        let (mut wal, recovery) = Wal::open(io, &path).expect("open");
        assert_eq!(recovery.records, all, "backend {}", io.name());
        assert_eq!(recovery.cut, None);
        // Appending after a reopen continues the log.
        let next = last.unwrap_or(0) + 1;
        wal.append(next, b"after reopen").expect("append");
        wal.sync().expect("sync");
        let (_, recovery) = Wal::open(io, &path).expect("reopen");
        assert_eq!(recovery.records.len(), all.len() + 1);
        assert_eq!(recovery.records[all.len()].body, b"after reopen");
    }
}

#[test]
fn bodies_encoded_in_place_are_records_and_an_oversized_one_is_refused_whole() {
    let (disk, dir) = sim_dir();
    let path = dir.join("wal-1");
    let mut wal = Wal::create(&disk, &path).expect("create");
    wal.append(1, b"first").expect("append");
    let len = wal
        .append_with(2, |out| out.extend_from_slice(b"in place"))
        .expect("append_with");
    assert_eq!(len, 8);
    let before = wal.len();
    // One byte over the limit: refused, and the group keeps what it had.
    let refused = wal.append_with(3, |out| out.resize(out.len() + MAX_BODY + 1, 7));
    assert!(matches!(refused, Err(EngineError::InvalidArgument(_))));
    assert_eq!(wal.len(), before);
    assert_eq!(wal.last_version(), Some(2));
    wal.append_with(3, |out| out.extend_from_slice(b"after"))
        .expect("append_with");
    wal.sync().expect("sync");
    drop(wal);
    let (_, recovery) = Wal::open(&disk, &path).expect("open");
    let bodies: Vec<(u64, &[u8])> = recovery
        .records
        .iter()
        .map(|r| (r.version, &r.body[..]))
        .collect();
    assert_eq!(
        bodies,
        vec![
            (1, &b"first"[..]),
            (2, &b"in place"[..]),
            (3, &b"after"[..])
        ]
    );
    assert_eq!(recovery.cut, None);
}

/// Runs `groups` against a fresh log on `disk`, stopping after `stop`
/// groups. With `sync_last` false, the last group is written but its sync
/// fails, so it is on the disk's queue but not acknowledged. Returns how
/// many records were acknowledged durable.
fn run_until(
    disk: &SimDisk,
    dir: &Path,
    groups: &[Vec<WalRecord>],
    stop: usize,
    sync_last: bool,
) -> usize {
    let mut wal = Wal::create(disk, &dir.join("wal")).expect("create");
    let mut acked = 0;
    for (g, group) in groups.iter().enumerate().take(stop) {
        for r in group {
            wal.append(r.version, &r.body).expect("append");
        }
        if g + 1 == stop && !sync_last {
            // The records and the mark are the next two calls; the sync
            // after them fails.
            disk.fail_at(3, Fault::Eio);
            assert!(wal.sync().is_err());
        } else {
            wal.sync().expect("sync");
            acked += group.len();
        }
    }
    acked
}

/// The recovered log must hold every acknowledged record, then possibly
/// more of the written ones, exactly, and nothing else.
fn check_prefix(recovered: &[WalRecord], all: &[WalRecord], acked: usize, what: &str) {
    assert!(
        recovered.len() >= acked,
        "{what}: {} records recovered, {acked} were acknowledged",
        recovered.len()
    );
    assert!(recovered.len() <= all.len(), "{what}: records from nowhere");
    assert_eq!(recovered, &all[..recovered.len()], "{what}: wrong data");
}

#[test]
fn a_crash_at_every_sync_point_keeps_every_acknowledged_record() {
    let seed = seed("a_crash_at_every_sync_point_keeps_every_acknowledged_record");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let groups = workload(&mut rng, 12);
    let all: Vec<WalRecord> = groups.iter().flatten().cloned().collect();
    let modes = [
        CrashMode::DropUnsynced,
        CrashMode::RandomSectors,
        CrashMode::TornTail,
    ];
    let mut crashes = 0;
    for stop in 0..=groups.len() {
        for sync_last in [true, false] {
            for mode in modes {
                for round in 0..4u64 {
                    let (disk, dir) = sim_dir();
                    let acked = run_until(&disk, dir, &groups, stop, sync_last);
                    disk.crash(mode, seed ^ (stop as u64) << 8 ^ round);
                    crashes += 1;
                    let what =
                        format!("stop {stop}, sync_last {sync_last}, {mode:?}, round {round}");
                    let (_, recovery) = Wal::open(&disk, &dir.join("wal")).expect(&what);
                    check_prefix(&recovery.records, &all, acked, &what);
                    // After the cut, the log is whole: reopening finds the
                    // same records and no cut.
                    let (_, again) = Wal::open(&disk, &dir.join("wal")).expect(&what);
                    assert_eq!(again.records, recovery.records, "{what}");
                    assert_eq!(again.cut, None, "{what}");
                }
            }
        }
    }
    println!("{crashes} crashes checked");
}

#[test]
fn a_fault_at_every_io_call_is_typed_poisons_and_recovers() {
    let seed = seed("a_fault_at_every_io_call_is_typed_poisons_and_recovers");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let groups = workload(&mut rng, 6);
    let all: Vec<WalRecord> = groups.iter().flatten().cloned().collect();
    let total = {
        let (disk, dir) = sim_dir();
        let before = disk.ops();
        run_until(&disk, dir, &groups, groups.len(), true);
        disk.ops() - before
    };
    for n in 1..=total {
        for fault in [Fault::Eio, Fault::NoSpace] {
            let (disk, dir) = sim_dir();
            disk.fail_at(n, fault);
            let path = dir.join("wal");
            let mut acked = 0;
            let mut failed = None;
            match Wal::create(&disk, &path) {
                Err(e) => failed = Some(e),
                Ok(mut wal) => {
                    for group in &groups {
                        for r in group {
                            wal.append(r.version, &r.body).expect("append");
                        }
                        match wal.sync() {
                            Ok(()) => acked += group.len(),
                            Err(e) => {
                                // Poisoned from now on.
                                assert!(matches!(wal.sync(), Err(EngineError::Poisoned)));
                                assert!(matches!(
                                    wal.append(u64::MAX, b""),
                                    Err(EngineError::Poisoned)
                                ));
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                }
            }
            let what = format!("fault {fault:?} at call {n}");
            let err = failed.unwrap_or_else(|| panic!("{what}: no error surfaced"));
            assert!(matches!(err, EngineError::Io { .. }), "{what}: {err}");
            assert_eq!(err.is_no_space(), fault == Fault::NoSpace, "{what}");
            disk.crash(CrashMode::RandomSectors, seed ^ n);
            match Wal::open(&disk, &path) {
                Ok((_, recovery)) => check_prefix(&recovery.records, &all, acked, &what),
                // The file's creation never became durable.
                Err(EngineError::Io { source, .. }) => {
                    assert_eq!(source.kind(), std::io::ErrorKind::NotFound, "{what}");
                    assert_eq!(acked, 0, "{what}");
                }
                Err(e) => panic!("{what}: {e}"),
            }
        }
    }
}

#[test]
fn damage_anywhere_gives_a_prefix_or_a_typed_error() {
    let seed = seed("damage_anywhere_gives_a_prefix_or_a_typed_error");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let groups = workload(&mut rng, 4);
    let all: Vec<WalRecord> = groups.iter().flatten().cloned().collect();
    let (disk, dir) = sim_dir();
    run_until(&disk, dir, &groups, groups.len(), true);
    let path = dir.join("wal");
    let good = disk.contents(&path).expect("wal exists");
    // Everything before the synced mark was synced by an earlier group:
    // damage there is reported, never cut away.
    let mark = verity_engine::wal::inspect(&disk, &path)
        .expect("inspect")
        .synced;
    assert!(
        mark > HEADER_LEN as u64,
        "a log of several groups has a mark"
    );
    let (mut prefixes, mut errors) = (0, 0);
    let mut check = |bytes: Vec<u8>, what: String| {
        disk.set_contents(&path, bytes).expect("set");
        match Wal::open(&disk, &path) {
            Ok((_, recovery)) => {
                // Damage past the mark can only shorten the log: whatever
                // is read is exactly what was written.
                check_prefix(&recovery.records, &all, 0, &what);
                if let Some(cut) = &recovery.cut {
                    assert!(
                        cut.offset >= mark || cut.offset == 0,
                        "{what}: cut at {} below the synced mark {mark}",
                        cut.offset
                    );
                }
                prefixes += 1;
            }
            Err(EngineError::Corruption { offset, .. }) => {
                assert!(
                    offset < mark,
                    "{what}: corruption reported at {offset}, past the synced mark {mark}"
                );
                errors += 1;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    };
    for cut in 0..good.len() {
        check(good[..cut].to_vec(), format!("cut at {cut}"));
    }
    for at in 0..good.len() {
        let mut bytes = good.clone();
        bytes[at] ^= 1 << rng.gen_range(0..8);
        check(bytes, format!("flip at {at}"));
    }
    println!("{prefixes} damaged logs read as a prefix, {errors} refused");
}

/// A crash while a log was created can keep any sectors of its header
/// write (found by `verity torture sim`: EIO on the creation's sync, then
/// a power cut keeping random sectors). With no record after it, the file
/// opens empty; with records after it, a bad header is damage.
#[test]
fn a_torn_header_of_a_new_log_opens_empty_but_not_of_one_with_records() {
    let (disk, dir) = sim_dir();
    let path = dir.join("wal");
    let new_log = |bytes: Vec<u8>| {
        let file = disk.open(&path, true).expect("create");
        file.set_len(0).expect("truncate");
        file.write_at(&bytes, 0).expect("write");
        file.sync().expect("sync");
    };
    for len in [0, 100, 512, 1024, HEADER_LEN] {
        // Sector 0 (magic, format, mark) lost; the zero sectors kept.
        new_log(vec![0u8; len]);
        let (mut wal, recovery) = Wal::open(&disk, &path).expect("a torn new log opens");
        assert!(recovery.records.is_empty());
        wal.append(7, b"first").expect("append");
        wal.sync().expect("sync");
        let (_, again) = Wal::open(&disk, &path).expect("reopen");
        assert_eq!(
            again.records.len(),
            1,
            "a record after the header written anew"
        );
    }
    // A whole log with one record, its header then zeroed.
    let mut bytes = disk.contents(&path).expect("the log");
    assert!(bytes.len() > HEADER_LEN);
    bytes[..8].fill(0);
    new_log(bytes);
    match Wal::open(&disk, &path) {
        Err(EngineError::Corruption { offset: 0, .. }) => {}
        Err(e) => panic!("untyped error: {e}"),
        Ok(_) => panic!("a log with records opened past a bad header"),
    }
}

/// A crash tearing the mark slot of the unsynced group leaves the other
/// slot, which holds the mark of the group before (found by `verity
/// torture sim`: a torn mark used to fail its checksum and the log).
#[test]
fn a_torn_mark_slot_falls_back_to_the_other() {
    let seed = seed("a_torn_mark_slot_falls_back_to_the_other");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let groups = workload(&mut rng, 7);
    let all: Vec<WalRecord> = groups.iter().flatten().cloned().collect();
    for crash_seed in 0..64 {
        let (disk, dir) = sim_dir();
        let path = dir.join("wal");
        let mut wal = Wal::create(&disk, &path).expect("create");
        // An odd or even count of groups: the torn write hits either slot.
        let groups = &groups[..6 + crash_seed as usize % 2];
        let (last, synced) = groups.split_last().expect("groups");
        for group in synced {
            for r in group {
                wal.append(r.version, &r.body).expect("append");
            }
            wal.sync().expect("sync");
        }
        // The last group: its records, then its mark slot are written, and
        // the sync after them fails, so the mark write is the torn tail.
        for r in last {
            wal.append(r.version, &r.body).expect("append");
        }
        disk.fail_at(3, Fault::Eio);
        assert!(wal.sync().is_err());
        disk.crash(CrashMode::TornTail, crash_seed);
        let acked = synced.iter().map(Vec::len).sum();
        let (_, recovery) =
            Wal::open(&disk, &path).unwrap_or_else(|e| panic!("crash seed {crash_seed}: {e}"));
        check_prefix(
            &recovery.records,
            &all,
            acked,
            &format!("crash seed {crash_seed}"),
        );
    }
}
