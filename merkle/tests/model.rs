//! The trie agrees with a plain map per version and an independent root.
//!
//! Random histories of inserts, updates and deletes over keys that share
//! long prefixes (so leaves move down and up across page boundaries). After
//! every version: the root equals the naive root of the model's set; every
//! version still retained reads back as its set, through `get`, `leaves`
//! and pages rebuilt from their stored bases and deltas; pruning keeps the
//! floor version readable.

mod common;

use std::collections::BTreeMap;

use common::{apply_batch, naive_root, H};
use proptest::prelude::*;
use verity_codec::page::PageRecord;
use verity_merkle::{
    verify, DeltaPolicy, MemPageStore, MerkleError, Page, PagePath, PageSource, Trie,
    VersionedPage, EMPTY,
};
use verity_testkit::runner;

fn arb_key() -> impl Strategy<Value = H> {
    (
        prop::sample::select(vec![0x00u8, 0x01, 0x10, 0xf0]),
        prop::sample::select(vec![0x00u8, 0x11, 0x1f]),
        any::<[u8; 32]>(),
        any::<bool>(),
    )
        .prop_map(|(a, b, mut k, clustered)| {
            if clustered {
                k[0] = a;
                k[1] = b;
                k[2] &= 0x1f;
            }
            k
        })
}

type Op = (usize, Option<u8>);

/// Keys under the root page's slots 0 and 1, spread over the 16 slots of
/// the node below each, so those nodes are dense (they keep their binary
/// trees) or sparse as the versions insert and delete.
fn arb_dense_key() -> impl Strategy<Value = H> {
    any::<[u8; 32]>().prop_map(|mut k| {
        k[0] &= 0x1f;
        k
    })
}

fn arb_history() -> impl Strategy<Value = (Vec<H>, Vec<Vec<Op>>, u64)> {
    history(arb_key().boxed())
}

fn history(key: BoxedStrategy<H>) -> impl Strategy<Value = (Vec<H>, Vec<Vec<Op>>, u64)> {
    (
        prop::collection::vec(key, 1..48),
        prop::collection::vec(
            prop::collection::vec(
                (any::<usize>(), prop::option::weighted(0.7, any::<u8>())),
                0..24,
            ),
            1..10,
        ),
        0u64..4,
    )
}

fn value(v: u8) -> H {
    *blake3::hash(&[v]).as_bytes()
}

#[test]
fn trie_matches_the_model_at_every_version() {
    let mut runner = runner("trie_matches_the_model_at_every_version", 96);
    runner
        .run(&arb_history(), |(keys, versions, prune_every)| {
            matches_the_model(keys, versions, prune_every)
        })
        .expect("model test");
}

#[test]
fn a_page_root_s_dense_and_sparse_children_match_the_model() {
    let mut runner = runner(
        "a_page_root_s_dense_and_sparse_children_match_the_model",
        64,
    );
    runner
        .run(
            &history(arb_dense_key().boxed()),
            |(keys, versions, prune_every)| matches_the_model(keys, versions, prune_every),
        )
        .expect("model test");
}

/// Applies `versions` of changes to `keys` and checks every version of
/// the trie against a plain map: roots, reads, leaf scans, proofs, and every page
/// rebuilt from its records against the page the update built.
fn matches_the_model(
    keys: Vec<H>,
    versions: Vec<Vec<Op>>,
    prune_every: u64,
) -> Result<(), TestCaseError> {
    let policy = DeltaPolicy {
        max_deltas: 3,
        max_chain_percent: 400,
    };
    let trie = Trie::with_policy(MemPageStore::new(), policy);
    let mut model: Vec<BTreeMap<H, H>> = vec![BTreeMap::new()];
    let mut written: Vec<(PagePath, u64, verity_merkle::Page)> = Vec::new();
    prop_assert_eq!(trie.root(0).expect("root"), EMPTY);
    for (i, ops) in versions.iter().enumerate() {
        let v = i as u64 + 1;
        let mut batch: BTreeMap<H, Option<H>> = BTreeMap::new();
        for (k, val) in ops {
            batch.insert(keys[k % keys.len()], val.map(value));
        }
        let mut next = model[i].clone();
        apply_batch(&mut next, &batch);
        let updates: Vec<_> = batch.into_iter().collect();
        let out = trie.update(v - 1, v, &updates).expect("update");
        prop_assert_eq!(out.root, naive_root(&next), "root of version {}", v);
        for w in &out.writes {
            if let Some(p) = &w.page {
                written.push((w.path, v, (**p).clone()));
            }
        }
        trie.source().apply(&out).expect("apply");
        model.push(next);
        if prune_every > 0 && v.is_multiple_of(prune_every + 1) {
            trie.source().prune(v - 1).expect("prune");
        }
    }
    let floor = trie.source().floor();
    for (v, set) in model.iter().enumerate() {
        let v = v as u64;
        if v < floor {
            prop_assert!(
                trie.root(v).is_err(),
                "version {} below the floor {} must not read",
                v,
                floor
            );
            continue;
        }
        prop_assert_eq!(trie.root(v).expect("root"), naive_root(set));
        let all: Vec<(H, H)> = set.iter().map(|(k, v)| (*k, *v)).collect();
        prop_assert_eq!(
            trie.leaves(v, &[0; 32], usize::MAX).expect("leaves"),
            all.clone()
        );
        if let Some((k, _)) = all.get(all.len() / 2) {
            let tail = trie.leaves(v, k, 3).expect("leaves");
            prop_assert_eq!(
                &tail[..],
                &all[all.len() / 2..(all.len() / 2 + 3).min(all.len())]
            );
        }
        for k in &keys {
            prop_assert_eq!(trie.get(v, k).expect("get"), set.get(k).copied());
        }
        // Every key, present or absent, proved at once and one by one.
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        let claims: Vec<_> = sorted.iter().map(|k| (*k, set.get(k).copied())).collect();
        let root = naive_root(set);
        let proof = trie.prove(v, &sorted).expect("prove");
        prop_assert_eq!(verify(&root, &proof, &claims), Ok(()));
        for claim in &claims {
            let proof = trie.prove(v, &[claim.0]).expect("prove");
            prop_assert_eq!(verify(&root, &proof, &[*claim]), Ok(()));
        }
    }
    // Every page version at or above the floor, rebuilt from its base
    // and deltas, equals the page the update built directly.
    for (path, v, page) in &written {
        if *v >= floor {
            let rebuilt = trie.source().page_from_records(path, *v).expect("rebuild");
            let rebuilt = rebuilt.expect("page exists");
            prop_assert_eq!(&*rebuilt.page, page);
            prop_assert_eq!(rebuilt.page.terminal_count(), page.terminal_count());
        }
    }
    Ok(())
}

#[test]
fn root_depends_only_on_the_state() {
    let mut runner = runner("root_depends_only_on_the_state", 64);
    let strategy = (
        prop::collection::btree_map(arb_key(), any::<u8>(), 0..60),
        prop::collection::vec(arb_key(), 0..10),
        1usize..6,
        any::<u64>(),
    );
    runner
        .run(&strategy, |(set, extra, splits, shuffle)| {
            let set: BTreeMap<H, H> = set.into_iter().map(|(k, v)| (k, value(v))).collect();
            let expected = naive_root(&set);

            // History A: everything in one batch.
            let a = Trie::new(MemPageStore::new());
            let all: Vec<_> = set.iter().map(|(k, v)| (*k, Some(*v))).collect();
            let out = a.update(0, 1, &all).expect("update");
            prop_assert_eq!(out.root, expected);

            // History B: extra keys and wrong values first, then the set in
            // several batches in another order, then the extras deleted.
            let b = Trie::new(MemPageStore::new());
            let mut version = 0;
            let mut commit = |batch: BTreeMap<H, Option<H>>| {
                let updates: Vec<_> = batch.into_iter().collect();
                let out = b.update(version, version + 1, &updates).expect("update");
                b.source().apply(&out).expect("apply");
                version += 1;
                out.root
            };
            let extras: BTreeMap<H, Option<H>> = extra
                .iter()
                .filter(|k| !set.contains_key(*k))
                .map(|k| (*k, Some(value(1))))
                .collect();
            let wrong: BTreeMap<H, Option<H>> = set
                .keys()
                .take(5)
                .map(|k| (*k, Some(value(0xee))))
                .collect();
            commit(extras.clone().into_iter().chain(wrong).collect());
            let mut entries: Vec<_> = set.iter().map(|(k, v)| (*k, Some(*v))).collect();
            let n = entries.len().max(1);
            entries.rotate_left((shuffle as usize) % n);
            for chunk in entries.chunks(n.div_ceil(splits)) {
                commit(chunk.iter().copied().collect());
            }
            let root = commit(extras.keys().map(|k| (*k, None)).collect());
            prop_assert_eq!(root, expected);

            // Deleting everything gives the empty root.
            let root = commit(set.keys().map(|k| (*k, None)).collect());
            prop_assert_eq!(root, EMPTY);
            Ok(())
        })
        .expect("history independence");
}

#[test]
fn the_empty_state_has_the_documented_root() {
    let trie = Trie::new(MemPageStore::new());
    assert_eq!(trie.root(0).expect("root"), common::empty());
    let out = trie.update(0, 1, &[([7; 32], None)]).expect("update");
    assert_eq!(out.root, common::empty());
    assert_eq!(
        blake3::Hash::from(EMPTY).to_hex().as_str(),
        "a261cd3df822320ce6df51000956a5d293bb721ec1fed47e794e36be9d9c96d5"
    );
}

#[test]
fn unsorted_updates_and_stale_versions_are_rejected() {
    let trie = Trie::new(MemPageStore::new());
    let err = trie
        .update(0, 1, &[([2; 32], None), ([1; 32], None)])
        .expect_err("unsorted");
    assert!(matches!(
        err,
        verity_merkle::MerkleError::UnsortedUpdates { index: 1 }
    ));
    let err = trie
        .update(0, 1, &[([1; 32], None), ([1; 32], None)])
        .expect_err("duplicate");
    assert!(matches!(
        err,
        verity_merkle::MerkleError::UnsortedUpdates { index: 1 }
    ));
    assert!(trie.update(3, 3, &[]).is_err());
    let out = trie
        .update(0, 2, &[([1; 32], Some([1; 32]))])
        .expect("update");
    trie.source().apply(&out).expect("apply");
    let older = trie.update(0, 1, &[]).expect("update of an old version");
    assert!(
        trie.source().apply(&older).is_err(),
        "versions apply in order"
    );
}

#[test]
fn an_update_built_on_an_old_version_is_refused() {
    let trie = Trie::new(MemPageStore::new());
    for v in 1..=2u64 {
        let out = trie
            .update(v - 1, v, &[([v as u8; 32], Some([1; 32]))])
            .expect("update");
        trie.source().apply(&out).expect("apply");
    }
    // Built on version 1 while the store holds version 2: its root page
    // record would follow the wrong predecessor.
    let stale = trie
        .update(1, 3, &[([9; 32], Some([1; 32]))])
        .expect("update");
    assert!(matches!(
        trie.source().apply(&stale),
        Err(verity_merkle::MerkleError::InvalidVersion(_))
    ));
    let fresh = trie
        .update(2, 3, &[([9; 32], Some([1; 32]))])
        .expect("update");
    trie.source().apply(&fresh).expect("apply");
}

/// A store that rebuilds every page it serves from its stored records, so
/// updates and proofs always meet pages whose depth-1 nodes are unhashed.
struct FromRecords(MemPageStore);

impl PageSource for FromRecords {
    fn page(&self, path: &PagePath, version: u64) -> Result<Option<VersionedPage>, MerkleError> {
        self.0.page_from_records(path, version)
    }
}

#[test]
fn updates_and_proofs_over_pages_rebuilt_from_records() {
    let mut runner = runner("updates_and_proofs_over_pages_rebuilt_from_records", 96);
    runner
        .run(&arb_history(), |(keys, versions, _)| {
            let policy = DeltaPolicy {
                max_deltas: 3,
                max_chain_percent: 400,
            };
            let trie = Trie::with_policy(FromRecords(MemPageStore::new()), policy);
            let direct = Trie::with_policy(MemPageStore::new(), policy);
            let mut state: BTreeMap<H, H> = BTreeMap::new();
            for (i, ops) in versions.iter().enumerate() {
                let v = i as u64 + 1;
                let mut batch: BTreeMap<H, Option<H>> = BTreeMap::new();
                for (k, val) in ops {
                    batch.insert(keys[k % keys.len()], val.map(value));
                }
                apply_batch(&mut state, &batch);
                let updates: Vec<_> = batch.into_iter().collect();
                let out = trie.update(v - 1, v, &updates).expect("update");
                prop_assert_eq!(out.root, naive_root(&state), "root of version {}", v);
                // The same records as a store that reads its own decoded
                // pages writes: stored hashes change nothing of the output.
                let same = direct.update(v - 1, v, &updates).expect("update");
                let records = |o: &verity_merkle::UpdateOutput| {
                    let mut r: Vec<_> = o
                        .writes
                        .iter()
                        .map(|w| (w.path, w.record.clone()))
                        .collect();
                    r.sort_by_key(|w| w.0);
                    r
                };
                prop_assert_eq!(records(&out), records(&same));
                // A delta stores the new hash of every internal slot it
                // touches, so reading it hashes none of them.
                for w in &out.writes {
                    if let (Ok(PageRecord::Delta(d)), Some(page)) =
                        (PageRecord::decode(&w.record), &w.page)
                    {
                        prop_assert_eq!(&d.hashes, &page.slot_hashes(d.touched_slots()));
                    }
                }
                trie.source().0.apply(&out).expect("apply");
                direct.source().apply(&same).expect("apply");
                let root = out.root;
                for k in &keys {
                    let proof = trie.prove(v, &[*k]).expect("prove");
                    let claim = [(*k, state.get(k).copied())];
                    prop_assert_eq!(verify(&root, &proof, &claim), Ok(()));
                    prop_assert_eq!(proof, direct.prove(v, &[*k]).expect("prove"));
                }
            }
            Ok(())
        })
        .expect("model test");
}

/// A page source of fixed pages.
struct Fixed(Vec<(PagePath, VersionedPage)>);

impl PageSource for Fixed {
    fn page(&self, path: &PagePath, _: u64) -> Result<Option<VersionedPage>, MerkleError> {
        Ok(self.0.iter().find(|p| p.0 == *path).map(|p| p.1.clone()))
    }
}

#[test]
fn a_wrong_stored_hash_is_found_by_an_update_and_a_check() {
    // Three keys under slot 0 of the root page and two under slot 1, none
    // deep enough for a child page: slots 0 and 1 are internal nodes.
    let key = |a: u8, b: u8| {
        let mut k = [0u8; 32];
        k[0] = a;
        k[1] = b;
        k
    };
    let keys = [
        key(0x01, 0),
        key(0x02, 0),
        key(0x03, 0),
        key(0x11, 0),
        key(0x12, 0),
    ];
    let trie = Trie::new(MemPageStore::new());
    let updates: Vec<_> = keys.iter().map(|k| (*k, Some(value(1)))).collect();
    let out = trie.update(0, 1, &updates).expect("update");
    trie.source().apply(&out).expect("apply");
    let bytes = trie
        .source()
        .record(&PagePath::ROOT, 1)
        .expect("root page record");
    let Ok(PageRecord::Base(mut image)) = PageRecord::decode(&bytes) else {
        panic!("the first record of a page is a base");
    };
    assert_eq!(
        image.hashes.iter().map(|h| h.0).collect::<Vec<_>>(),
        [0, 1],
        "a base stores the hash of each internal slot of its root"
    );
    // Rebuilt as stored, the page checks and matches the one built.
    let good = Page::from_image(&image, &PagePath::ROOT).expect("decode");
    assert_eq!(good.verify_stored_hashes(), Ok(()));
    assert_eq!(good.hash(), out.root);
    assert_eq!(trie.check_pages(1).expect("check"), 1);

    image.hashes[1].1[0] ^= 1;
    let bad = Page::from_image(&image, &PagePath::ROOT).expect("a stored hash is trusted");
    assert!(bad.verify_stored_hashes().is_err());
    let bad_root = bad.hash();
    assert_ne!(bad_root, out.root);
    if cfg!(debug_assertions) {
        // Debug builds check every stored hash of a rebuilt page.
        let encoded: std::sync::Arc<[u8]> = PageRecord::Base(image).encode().into();
        assert!(matches!(
            verity_merkle::rebuild_page(&[(1, encoded)], &PagePath::ROOT),
            Err(MerkleError::CorruptPage { .. })
        ));
    }
    let source = Fixed(vec![(
        PagePath::ROOT,
        VersionedPage {
            version: 1,
            page: std::sync::Arc::new(bad),
            chain: Default::default(),
        },
    )]);
    // An update below the damaged slot recomputes it and refuses, and so
    // does a check of the pages.
    let damaged = Trie::new(source);
    assert!(matches!(
        damaged.check_pages(1),
        Err(MerkleError::CorruptPage { .. })
    ));
    assert!(matches!(
        damaged.update(1, 2, &[(key(0x13, 0), Some(value(2)))]),
        Err(MerkleError::CorruptPage { .. })
    ));
    // So does a new value for a key below it (the update that keeps the
    // page's layout and changes only values).
    assert!(matches!(
        damaged.update(1, 2, &[(keys[4], Some(value(2)))]),
        Err(MerkleError::CorruptPage { .. })
    ));
    // A new value below the slot that is intact goes through.
    assert!(damaged.update(1, 2, &[(keys[0], Some(value(2)))]).is_ok());
    // A proof through it recomputes the slot: it proves against the true
    // root, not the damaged page's.
    let proof = damaged.prove(1, &[keys[3]]).expect("prove");
    let claim = [(keys[3], Some(value(1)))];
    assert_eq!(verify(&out.root, &proof, &claim), Ok(()));
    assert!(verify(&bad_root, &proof, &claim).is_err());
}

#[test]
fn a_check_of_the_pages_finds_a_child_reference_that_does_not_match() {
    // Two keys sharing their first two nibbles sit in a child page.
    let key = |last: u8| {
        let mut k = [0u8; 32];
        k[0] = 0x12;
        k[1] = last;
        k
    };
    let trie = Trie::new(MemPageStore::new());
    let out = trie
        .update(
            0,
            1,
            &[(key(0x30), Some(value(1))), (key(0x40), Some(value(1)))],
        )
        .expect("update");
    trie.source().apply(&out).expect("apply");
    let out = trie
        .update(1, 2, &[(key(0x30), Some(value(2)))])
        .expect("update");
    trie.source().apply(&out).expect("apply");
    assert_eq!(trie.check_pages(1).expect("check"), 2);
    assert_eq!(trie.check_pages(2).expect("check"), 2);
    // The root page of version 1 with the child page of version 2.
    let child = PagePath::from_key(&key(0x30), 2);
    let page = |path: &PagePath, v| trie.source().page(path, v).expect("read").expect("page");
    let mixed = Trie::new(Fixed(vec![
        (PagePath::ROOT, page(&PagePath::ROOT, 1)),
        (child, page(&child, 2)),
    ]));
    assert!(matches!(
        mixed.check_pages(1),
        Err(MerkleError::CorruptPage { path, .. }) if path == child
    ));
}
