//! `verity inspect`, `verity check` and `verity get` on a real store;
//! `check` finds a flipped bit in every file kind and names the file.

mod common;

use std::path::Path;

use common::{text, verity};
use verity::{Db, Options, WriteBatch};

/// A store with segment files and versions still in the WAL.
fn build(dir: &Path) {
    let mut o = Options::laptop();
    o.memtable_bytes = 32 << 10;
    let db = Db::open(dir, o).expect("open");
    let mut last = None;
    for v in 0..60u32 {
        let mut b = WriteBatch::new();
        for i in 0..20u32 {
            let k = format!("key-{}", (v * 7 + i) % 300);
            b.put(k.as_bytes(), format!("value {v} {i}").as_bytes())
                .expect("put");
        }
        last = Some(db.commit(b).expect("commit"));
    }
    last.expect("commits").wait_durable().expect("durable");
    db.close().expect("close");
}

#[test]
fn inspect_check_and_get_read_a_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path());
    let d = dir.path().to_str().expect("utf-8 path");
    let out = verity(&["inspect", d]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("versions       0..=60"),
        "{}",
        text(&out)
    );
    let out = verity(&["check", d, "--versions", "4"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("check passed"));
    let out = verity(&["get", d, "key-0", "--version", "1", "--prove"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).starts_with("value 0 0\n"), "{}", text(&out));
    assert!(text(&out).contains("verified against root"));
    let out = verity(&["get", d, "6b65792d30", "--hex"]);
    assert!(out.status.success(), "{}", text(&out));
    // Bad arguments: a one-line error and exit code 2.
    let out = verity(&["get", d]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = verity(&["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn check_finds_a_flipped_bit_in_every_file_kind() {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path());
    let d = dir.path().to_str().expect("utf-8 path");
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().into_string().expect("name"))
        .collect();
    names.sort();
    for kind in [".seg", ".wal", "MANIFEST"] {
        let name = names
            .iter()
            .find(|n| n.ends_with(kind))
            .unwrap_or_else(|| panic!("no {kind} file in {names:?}"));
        let path = dir.path().join(name);
        let good = std::fs::read(&path).expect("read");
        let mut bad = good.clone();
        // A bit in the middle of the file: inside a block, a record or the
        // manifest's payload.
        bad[good.len() / 2] ^= 0x10;
        std::fs::write(&path, &bad).expect("damage");
        let out = verity(&["check", d]);
        assert!(!out.status.success(), "{kind}: {}", text(&out));
        assert!(
            text(&out).contains(name.as_str()),
            "{kind}: the report names the file: {}",
            text(&out)
        );
        std::fs::write(&path, &good).expect("restore");
    }
    let out = verity(&["check", d]);
    assert!(out.status.success(), "{}", text(&out));
}
