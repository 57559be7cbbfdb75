//! The program allocator (`verity::alloc::Allocator`) as this test
//! binary's global allocator: threads that allocate, free each other's
//! blocks and exit, and a trie updated and proven on rayon's pool, all on
//! it. Every block is checked to hold what its owner wrote.

use std::sync::mpsc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use verity::merkle::hash::{key_hash, value_hash};
use verity::{verify, MemPageStore, Trie, Update};

#[global_allocator]
static GLOBAL: verity::alloc::Allocator = verity::alloc::Allocator;

/// A block of `len` bytes, each `fill`, with its fill.
fn block(len: usize, fill: u8) -> (u8, Vec<u8>) {
    (fill, vec![fill; len])
}

fn check((fill, block): &(u8, Vec<u8>)) {
    assert!(
        block.iter().all(|b| b == fill),
        "a block of {} bytes was written by someone else",
        block.len()
    );
}

#[test]
fn threads_that_free_each_others_blocks_and_exit_keep_every_block_whole() {
    let seed = verity_testkit::seed(
        "threads_that_free_each_others_blocks_and_exit_keep_every_block_whole",
    );
    for round in 0..6u64 {
        let (send, receive) = mpsc::channel::<Vec<(u8, Vec<u8>)>>();
        // Frees what the others send it, as a store drops what the update
        // threads allocated.
        let freer = std::thread::spawn(move || {
            let mut held = 0usize;
            for blocks in receive {
                for b in &blocks {
                    check(b);
                }
                held += blocks.len();
            }
            held
        });
        let workers: Vec<_> = (0..6u64)
            .map(|t| {
                let send = send.clone();
                std::thread::spawn(move || {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (round << 8) ^ t);
                    let mut live: Vec<(u8, Vec<u8>)> = Vec::new();
                    for i in 0..20_000u32 {
                        let len = match rng.gen_range(0..20) {
                            0 => rng.gen_range(2049..20_000),
                            _ => rng.gen_range(1..2049),
                        };
                        live.push(block(len, i as u8));
                        if live.len() > 500 {
                            let keep = live.split_off(250);
                            let gone = std::mem::replace(&mut live, keep);
                            if rng.gen() {
                                send.send(gone).expect("the freeing thread runs");
                            } else {
                                gone.iter().for_each(check);
                            }
                        }
                        if rng.gen_range(0..8) == 0 {
                            // Grown and shrunk across the size classes.
                            let at = rng.gen_range(0..live.len());
                            let (fill, block) = &mut live[at];
                            block.resize(rng.gen_range(1..4096), *fill);
                            block.shrink_to_fit();
                        }
                    }
                    live.iter().for_each(check);
                })
            })
            .collect();
        drop(send);
        for w in workers {
            w.join().expect("a worker");
        }
        let freed = freer.join().expect("the freeing thread");
        assert!(
            freed > 0,
            "round {round}: no blocks freed on another thread"
        );
    }
}

#[test]
fn a_trie_updated_and_proven_on_the_pool_agrees_with_one_built_at_once() {
    let seed =
        verity_testkit::seed("a_trie_updated_and_proven_on_the_pool_agrees_with_one_built_at_once");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let keys: Vec<_> = (0..60_000u32).map(|i| key_hash(&i.to_le_bytes())).collect();
    let trie = Trie::new(MemPageStore::new());
    let mut state = std::collections::BTreeMap::new();
    for version in 0..8u64 {
        let mut batch: Vec<Update> = (0..8_000)
            .map(|_| {
                let key = keys[rng.gen_range(0..keys.len())];
                let value = (rng.gen_range(0..5) > 0).then(|| value_hash(&rng.gen::<[u8; 8]>()));
                (key, value)
            })
            .collect();
        batch.sort_by_key(|u| u.0);
        batch.dedup_by_key(|u| u.0);
        let out = trie.update(version, version + 1, &batch).expect("update");
        trie.source().apply(&out).expect("apply");
        for (k, v) in &batch {
            match v {
                Some(v) => state.insert(*k, *v),
                None => state.remove(k),
            };
        }
        // The same state in one update of a fresh trie: the same root.
        let all: Vec<Update> = state.iter().map(|(k, v)| (*k, Some(*v))).collect();
        let fresh = Trie::new(MemPageStore::new());
        let once = fresh.update(0, 1, &all).expect("update");
        assert_eq!(
            out.root,
            once.root,
            "version {}: the roots differ",
            version + 1
        );
        let mut asked: Vec<_> = keys.iter().step_by(997).copied().collect();
        asked.sort_unstable();
        let proof = trie.prove(version + 1, &asked).expect("prove");
        let claims: Vec<_> = asked.iter().map(|k| (*k, state.get(k).copied())).collect();
        verify(&out.root, &proof, &claims).expect("the proof verifies");
    }
}

/// Frees its block when its thread exits, from a thread-local's
/// destructor: before or after the allocator's own has emptied the
/// thread's stacks.
struct FreedAtExit(Option<(u8, Vec<u8>)>);

impl Drop for FreedAtExit {
    fn drop(&mut self) {
        if let Some(held) = self.0.take() {
            check(&held);
            // Freed now; then blocks of every kept size asked and freed
            // again, after the thread's stacks may be gone.
            drop(held);
            let more: Vec<_> = (1..20).map(|i| block(i * 100, i as u8)).collect();
            more.iter().for_each(check);
        }
    }
}

thread_local! {
    static FREED_AT_EXIT: std::cell::RefCell<FreedAtExit> =
        const { std::cell::RefCell::new(FreedAtExit(None)) };
}

#[test]
fn blocks_freed_by_thread_locals_at_a_threads_exit_are_whole() {
    for round in 0..200u32 {
        let first = round % 2 == 0;
        std::thread::spawn(move || {
            let fill = round as u8;
            if first {
                // Set before the thread keeps any block: its destructor
                // runs after the allocator's.
                FREED_AT_EXIT.with(|f| f.borrow_mut().0 = Some(block(1000, fill)));
            }
            let churn: Vec<_> = (0..300).map(|i| block(130 + i * 6, fill)).collect();
            churn.iter().for_each(check);
            drop(churn);
            if !first {
                // Set after: its destructor runs before the allocator's.
                FREED_AT_EXIT.with(|f| f.borrow_mut().0 = Some(block(1000, fill)));
            }
        })
        .join()
        .expect("a thread");
    }
}
