//! `Wal::open` on arbitrary file contents: a typed error or the records
//! it holds, never a panic; an opened log takes a new record, and reopens
//! with the old records followed by the new one.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use verity_engine::io::IoBackend;
use verity_engine::sim::SimDisk;
use verity_engine::wal::Wal;

fuzz_target!(|data: &[u8]| {
    let disk = SimDisk::new();
    let dir = Path::new("/w");
    disk.create_dir_all(dir).expect("mkdir");
    let path = dir.join("000001.wal");
    let file = disk.open(&path, true).expect("create");
    file.write_at(data, 0).expect("write");
    file.sync().expect("sync");
    let Ok((mut wal, found)) = Wal::open(&disk, &path) else {
        return;
    };
    let Some(next) = found
        .records
        .last()
        .map_or(Some(1), |r| r.version.checked_add(1))
    else {
        return;
    };
    wal.append(next, b"after recovery").expect("append");
    wal.sync().expect("sync");
    drop(wal);
    let (_, again) = Wal::open(&disk, &path).expect("reopen what was just written");
    assert_eq!(again.records.len(), found.records.len() + 1);
    assert_eq!(again.records[..found.records.len()], found.records[..]);
    assert_eq!(again.records.last().map(|r| r.version), Some(next));
    assert!(again.cut.is_none());
});
