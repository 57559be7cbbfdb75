//! Bad input gets a typed error, and the Db works on after it.

use verity::{Db, DbError, Options, WriteBatch, MAX_BATCH_WRITES, MAX_KEY_LEN, MAX_VALUE_LEN};

fn works(db: &Db, key: &[u8]) {
    let mut b = WriteBatch::new();
    b.put(key, b"still fine").expect("put");
    let h = db.commit(b).expect("commit");
    h.wait_durable().expect("durable");
    let snap = db.snapshot(h.version()).expect("snapshot");
    assert_eq!(
        snap.get(key).expect("get").as_deref(),
        Some(&b"still fine"[..])
    );
}

#[test]
fn bad_input_is_a_typed_error_and_the_db_works_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path(), Options::laptop()).expect("open");
    let mut b = WriteBatch::new();
    assert!(matches!(b.put(b"", b"x"), Err(DbError::InvalidArgument(_))));
    assert!(matches!(b.delete(b""), Err(DbError::InvalidArgument(_))));
    assert!(matches!(
        b.put(&vec![1; MAX_KEY_LEN + 1], b"x"),
        Err(DbError::InvalidArgument(_))
    ));
    assert!(matches!(
        b.put(b"k", &vec![0; MAX_VALUE_LEN + 1]),
        Err(DbError::InvalidArgument(_))
    ));
    assert!(b.is_empty(), "a refused write is not in the batch");
    // A batch is bounded as a whole too (its WAL record must fit).
    let mut big = WriteBatch::new();
    for i in 0..MAX_BATCH_WRITES {
        big.delete(&(i as u64).to_le_bytes())
            .expect("within the bound");
    }
    assert!(matches!(
        big.delete(b"one more"),
        Err(DbError::InvalidArgument(_))
    ));
    let mut heavy = WriteBatch::new();
    let value = vec![1u8; MAX_VALUE_LEN];
    let refused = (0..8u8)
        .map(|i| heavy.put(&[i], &value))
        .find_map(Result::err);
    assert!(matches!(refused, Some(DbError::InvalidArgument(_))));
    // The longest key and value are taken.
    b.put(&vec![7; MAX_KEY_LEN], &vec![9; 1 << 20])
        .expect("longest key");
    let h = db.commit(b).expect("commit");
    works(&db, b"a");

    // Versions that do not exist, or no longer do.
    let latest = db.stats().latest_staged;
    assert!(matches!(
        db.snapshot(latest + 1),
        Err(DbError::NoSuchVersion { .. })
    ));
    assert!(matches!(
        db.snapshot(u64::MAX),
        Err(DbError::NoSuchVersion { .. })
    ));
    assert!(matches!(
        db.prune(latest + 5),
        Err(DbError::InvalidArgument(_))
    ));
    db.prune(latest).expect("prune");
    assert!(matches!(
        db.snapshot(h.version()),
        Err(DbError::NoSuchVersion { .. })
    ));
    works(&db, b"b");

    // A snapshot taken before the prune reads its version or says it is gone.
    let snap = db.latest().expect("latest");
    works(&db, b"c");
    db.prune(db.stats().latest_durable).expect("prune");
    match snap.get(b"b") {
        Ok(v) => assert_eq!(v.as_deref(), Some(&b"still fine"[..])),
        Err(e) => assert!(matches!(e, DbError::NoSuchVersion { .. }), "{e}"),
    }
    works(&db, b"d");

    // Closed.
    db.close().expect("close");
    assert!(matches!(db.commit(WriteBatch::new()), Err(DbError::Closed)));
    assert!(matches!(db.snapshot(1), Err(DbError::Closed)));
    db.close().expect("a second close is harmless");
}

#[test]
fn bad_options_and_paths_are_typed_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = Options::laptop();
    o.max_in_flight = 0;
    assert!(matches!(
        Db::open(dir.path(), o),
        Err(DbError::InvalidArgument(_))
    ));
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").expect("write");
    match Db::open(&file, Options::laptop()) {
        Err(DbError::Io(_)) => {}
        other => panic!("opening a file as a store: {other:?}"),
    }
    // A directory of something else entirely is left alone and refused.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    std::fs::write(other.join("000001.seg"), b"junk").expect("write");
    assert!(matches!(
        Db::open(&other, Options::laptop()),
        Err(DbError::Corruption { .. })
    ));
    assert!(other.join("000001.seg").exists());
}
