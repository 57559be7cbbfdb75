//! A node's block loop with parallel executors: for each block, worker
//! threads read balances from the snapshot of the previous block (whose
//! commit may still be merkleizing and syncing) and compute transfers;
//! the loop then stages the block's writes and goes on to the next block
//! at once. `cargo run --release --example parallel_executor`.

use std::collections::BTreeMap;
use std::thread;

use verity::{Db, Options, WriteBatch};

const ACCOUNTS: u64 = 10_000;
const BLOCKS: u64 = 50;
const TXS_PER_BLOCK: u64 = 2_000;
const EXECUTORS: u64 = 4;

fn account(i: u64) -> Vec<u8> {
    format!("account-{i:05}").into_bytes()
}

fn balance(bytes: Option<Vec<u8>>) -> u64 {
    bytes
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn main() -> Result<(), verity::DbError> {
    let dir = std::env::temp_dir().join(format!("verity-example-{}", std::process::id()));
    let db = Db::open(&dir, Options::laptop())?;

    // Genesis: every account holds 1000.
    let mut genesis = WriteBatch::new();
    for i in 0..ACCOUNTS {
        genesis.put(&account(i), &1000u64.to_le_bytes())?;
    }
    let mut previous = db.commit(genesis)?;

    for block in 1..=BLOCKS {
        // Executors read the previous version while it commits.
        let snapshot = db.snapshot(previous.version())?;
        let results: Vec<BTreeMap<u64, i64>> = thread::scope(|s| {
            let workers: Vec<_> = (0..EXECUTORS)
                .map(|w| {
                    let snapshot = snapshot.clone();
                    s.spawn(move || -> Result<BTreeMap<u64, i64>, verity::DbError> {
                        let mut delta = BTreeMap::new();
                        for t in (w..TXS_PER_BLOCK).step_by(EXECUTORS as usize) {
                            let from = (block * 7919 + t * 104_729) % ACCOUNTS;
                            let to = (from + 1 + t) % ACCOUNTS;
                            let have = balance(snapshot.get(&account(from))?);
                            if have >= 10 {
                                *delta.entry(from).or_insert(0) -= 10;
                                *delta.entry(to).or_insert(0) += 10;
                            }
                        }
                        Ok(delta)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("executor thread"))
                .collect::<Result<_, _>>()
        })?;
        // Merge the executors' changes (a real node resolves conflicts
        // here) and stage the block.
        let mut total: BTreeMap<u64, i64> = BTreeMap::new();
        for r in results {
            for (k, d) in r {
                *total.entry(k).or_insert(0) += d;
            }
        }
        let mut batch = WriteBatch::new();
        for (k, d) in total {
            let now = balance(snapshot.get(&account(k))?) as i64 + d;
            batch.put(&account(k), &(now.max(0) as u64).to_le_bytes())?;
        }
        let handle = db.commit(batch)?;
        if block % 10 == 0 {
            println!(
                "block {block}: version {} staged; root of version {} is {}",
                handle.version(),
                previous.version(),
                hex(&previous.root()?)
            );
        }
        previous = handle;
    }
    previous.wait_durable()?;
    let stats = db.stats();
    println!(
        "{} versions durable, I/O backend {}, page cache hits {} misses {}",
        stats.latest_durable, stats.engine.backend, stats.page_cache_hits, stats.page_cache_misses
    );
    db.close()?;
    // The example's store is temporary.
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
