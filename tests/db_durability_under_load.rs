//! With grouped syncs, versions become durable while a producer keeps the
//! pipeline full: group commit never starves durability.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use verity::{Db, Options, SyncPolicy, WriteBatch};

#[test]
fn grouped_sync_makes_progress_while_the_pipeline_stays_full() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::laptop();
    opts.sync = SyncPolicy::Grouped;
    opts.max_in_flight = 2;
    let db = Db::open(dir.path(), opts).expect("open");
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let producer = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut v = 0u64;
            // Never waits: the pipeline stays as full as its bound allows.
            while !stop.load(Ordering::Acquire) {
                v += 1;
                let mut b = WriteBatch::new();
                for i in 0..200u64 {
                    b.put(
                        format!("k{}", (v * 200 + i) % 20_000).as_bytes(),
                        &v.to_le_bytes(),
                    )
                    .expect("put");
                }
                let h = db.commit(b).expect("commit");
                if v <= 20 {
                    tx.send(h).expect("send");
                }
            }
            v
        })
    };
    // Version 20 becomes durable while the producer goes on.
    let h = rx.iter().nth(19).expect("version 20");
    h.wait_durable().expect("durable under load");
    assert!(!producer.is_finished(), "the producer was still committing");
    stop.store(true, Ordering::Release);
    let committed = producer.join().expect("producer");
    assert!(committed >= 20);
    db.close().expect("close");
}
