//! The retention window: old versions are pruned as new ones commit, the
//! window stays readable and provable, and reading below it is a typed
//! error.

use verity::{key_hash, value_hash, verify, Db, DbError, Options, WriteBatch};

#[test]
fn versions_beyond_the_window_are_pruned_as_commits_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::laptop();
    opts.retain_versions = Some(10);
    opts.memtable_bytes = 64 << 10;
    let db = Db::open(dir.path(), opts).expect("open");
    let mut last = None;
    for v in 1..=100u64 {
        let mut b = WriteBatch::new();
        b.put(b"counter", &v.to_le_bytes()).expect("put");
        b.put(format!("k{}", v % 17).as_bytes(), &[v as u8; 40])
            .expect("put");
        last = Some(db.commit(b).expect("commit"));
    }
    last.expect("commits").wait_durable().expect("durable");
    let stats = db.stats();
    // Pruning runs every 16 versions, so the floor trails by up to 15 more.
    assert!(
        (100 - 10 - 15..=100 - 10).contains(&stats.oldest_retained),
        "oldest retained {}",
        stats.oldest_retained
    );
    assert!(matches!(db.snapshot(1), Err(DbError::NoSuchVersion { .. })));
    for v in stats.oldest_retained..=100 {
        let snap = db.snapshot(v).expect("retained version");
        assert_eq!(
            snap.get(b"counter").expect("get"),
            Some(v.to_le_bytes().to_vec())
        );
        let proof = snap.prove(b"counter").expect("prove");
        let claim = [(key_hash(b"counter"), Some(value_hash(&v.to_le_bytes())))];
        assert!(
            verify(&snap.root().expect("root"), &proof, &claim).is_ok(),
            "proof at {v}"
        );
    }
    println!("{stats:?}");
    // The floor survives a reopen.
    db.close().expect("close");
    let db = Db::open(dir.path(), Options::laptop()).expect("reopen");
    assert_eq!(db.stats().oldest_retained, stats.oldest_retained);
    assert!(matches!(
        db.snapshot(stats.oldest_retained - 1),
        Err(DbError::NoSuchVersion { .. })
    ));
}
