//! Every proof kind verifies for what is true and for nothing else.
//!
//! Over a trie with several versions (inserts, updates, deletes): single-key
//! proofs of present and absent keys at the latest and historical versions,
//! multiproofs, and range proofs paging through the whole state. Every
//! single-byte change of an encoded proof, every wrong value, wrong key and
//! wrong root, and a range with one entry left out, are rejected.

mod common;

use std::collections::BTreeMap;

use common::{apply_batch, naive_root, seed, H};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use verity_merkle::{verify, verify_range, MemPageStore, Proof, ProofError, RangeProof, Trie};

struct Fixture {
    trie: Trie<MemPageStore>,
    /// The state and root of each version, index = version.
    versions: Vec<(BTreeMap<H, H>, H)>,
    rng: ChaCha8Rng,
}

fn fixture(test: &str, keys: usize) -> Fixture {
    let mut rng = ChaCha8Rng::seed_from_u64(seed(test));
    let trie = Trie::new(MemPageStore::new());
    let mut versions = vec![(BTreeMap::new(), verity_merkle::EMPTY)];
    let mut state: BTreeMap<H, H> = BTreeMap::new();
    for v in 1..=4u64 {
        let mut batch: BTreeMap<H, Option<H>> = BTreeMap::new();
        for _ in 0..keys {
            batch.insert(rng.gen(), Some(rng.gen()));
        }
        // Update and delete some existing keys.
        for (i, k) in state.keys().enumerate() {
            match i % 7 {
                0 => batch.insert(*k, Some(rng.gen())),
                1 => batch.insert(*k, None),
                _ => None,
            };
        }
        apply_batch(&mut state, &batch);
        let updates: Vec<_> = batch.into_iter().collect();
        let out = trie.update(v - 1, v, &updates).expect("update");
        assert_eq!(out.root, naive_root(&state));
        trie.source().apply(&out).expect("apply");
        versions.push((state.clone(), out.root));
    }
    Fixture {
        trie,
        versions,
        rng,
    }
}

impl Fixture {
    /// A key present at `v` and one absent (possibly present at another
    /// version).
    fn present_and_absent(&mut self, v: usize) -> (H, H, H) {
        let set = &self.versions[v].0;
        let i = self.rng.gen_range(0..set.len());
        let (k, val) = set.iter().nth(i).map(|(k, v)| (*k, *v)).expect("non-empty");
        let absent = loop {
            let k: H = if self.rng.gen_bool(0.5) {
                // Shares a long prefix with a present key.
                let mut k = k;
                k[31] ^= 1 + self.rng.gen::<u8>() % 255;
                k
            } else {
                self.rng.gen()
            };
            if !set.contains_key(&k) {
                break k;
            }
        };
        (k, val, absent)
    }
}

#[test]
fn single_key_proofs_at_every_version() {
    let mut f = fixture("single_key_proofs_at_every_version", 400);
    for v in 1..f.versions.len() {
        let root = f.versions[v].1;
        for _ in 0..40 {
            let (k, val, absent) = f.present_and_absent(v);
            let p = f.trie.prove(v as u64, &[k]).expect("prove");
            assert_eq!(verify(&root, &p, &[(k, Some(val))]), Ok(()));
            assert!(matches!(
                verify(&root, &p, &[(k, Some([9; 32]))]),
                Err(ProofError::WrongClaim { .. })
            ));
            assert!(verify(&root, &p, &[(k, None)]).is_err());
            assert!(
                verify(&[3; 32], &p, &[(k, Some(val))]).is_err(),
                "wrong root"
            );
            // The proof of `k` says nothing true of another key holding its
            // value (it may prove that key absent, when their paths meet).
            assert!(
                verify(&root, &p, &[(absent, Some(val))]).is_err(),
                "proof of another key"
            );

            let q = f.trie.prove(v as u64, &[absent]).expect("prove absent");
            assert_eq!(verify(&root, &q, &[(absent, None)]), Ok(()));
            assert!(verify(&root, &q, &[(absent, Some(val))]).is_err());
            assert!(
                verify(&root, &q, &[(k, None)]).is_err(),
                "proof of another key"
            );

            // Round trip through the wire form.
            assert_eq!(Proof::decode(&p.encode()).expect("decode"), p);
        }
        // A proof of an older version does not verify against a newer root
        // when the key changed between them.
        if v > 1 {
            let (k, val, _) = f.present_and_absent(v);
            if f.versions[v - 1].0.get(&k) != Some(&val) {
                let p = f.trie.prove(v as u64, &[k]).expect("prove");
                assert!(verify(&f.versions[v - 1].1, &p, &[(k, Some(val))]).is_err());
            }
        }
    }
}

#[test]
fn every_single_byte_change_of_a_proof_is_rejected() {
    let mut f = fixture("every_single_byte_change_of_a_proof_is_rejected", 300);
    let v = f.versions.len() - 1;
    let root = f.versions[v].1;
    let (k, val, absent) = f.present_and_absent(v);
    let cases = [
        (
            f.trie.prove(v as u64, &[k]).expect("prove"),
            vec![(k, Some(val))],
        ),
        (
            f.trie.prove(v as u64, &[absent]).expect("prove"),
            vec![(absent, None)],
        ),
    ];
    for (proof, claims) in cases {
        let bytes = proof.encode();
        assert_eq!(verify(&root, &proof, &claims), Ok(()));
        for i in 0..bytes.len() {
            for delta in 1..=255u8 {
                let mut bad = bytes.clone();
                bad[i] = bad[i].wrapping_add(delta);
                if let Ok(p) = Proof::decode(&bad) {
                    assert!(
                        verify(&root, &p, &claims).is_err(),
                        "byte {i} + {delta} still verifies"
                    );
                }
            }
        }
        // Every truncation too.
        for cut in 0..bytes.len() {
            assert!(Proof::decode(&bytes[..cut]).is_err());
        }
    }
}

#[test]
fn multiproofs_share_siblings_and_check_every_claim() {
    let mut f = fixture("multiproofs_share_siblings_and_check_every_claim", 300);
    for v in 1..f.versions.len() {
        let root = f.versions[v].1;
        let mut claims = BTreeMap::new();
        for _ in 0..12 {
            let (k, val, absent) = f.present_and_absent(v);
            claims.insert(k, Some(val));
            claims.insert(absent, None);
        }
        let claims: Vec<(H, Option<H>)> = claims.into_iter().collect();
        let keys: Vec<H> = claims.iter().map(|c| c.0).collect();
        let proof = f.trie.prove(v as u64, &keys).expect("prove");
        assert_eq!(verify(&root, &proof, &claims), Ok(()));
        let singles: usize = keys
            .iter()
            .map(|k| f.trie.prove(v as u64, &[*k]).expect("prove").encoded_len())
            .sum();
        assert!(
            proof.encoded_len() < singles,
            "{} >= {}",
            proof.encoded_len(),
            singles
        );
        // A subset of the keys is covered too.
        assert_eq!(verify(&root, &proof, &claims[..3]), Ok(()));
        // Each wrong claim is caught.
        for i in 0..claims.len() {
            let mut bad = claims.clone();
            bad[i].1 = match bad[i].1 {
                Some(_) => None,
                None => Some([1; 32]),
            };
            assert!(verify(&root, &proof, &bad).is_err());
        }
        // A random key cannot be claimed present (it is either outside the
        // opened paths, or the proof shows it absent).
        let mut extra = claims.clone();
        let outside: H = f.rng.gen();
        if !keys.contains(&outside) {
            extra.push((outside, Some([4; 32])));
            extra.sort();
            assert!(verify(&root, &proof, &extra).is_err());
        }
        // Unsorted claims are refused.
        let mut unsorted = claims.clone();
        unsorted.swap(0, 1);
        assert!(matches!(
            verify(&root, &proof, &unsorted),
            Err(ProofError::UnsortedClaims { .. })
        ));
    }
    assert!(f.trie.prove(1, &[[2; 32], [1; 32]]).is_err());
}

#[test]
fn range_proofs_page_through_the_whole_state() {
    let mut f = fixture("range_proofs_page_through_the_whole_state", 250);
    for v in 1..f.versions.len() {
        let root = f.versions[v].1;
        let all: Vec<(H, H)> = f.versions[v].0.iter().map(|(k, v)| (*k, *v)).collect();
        let limit = f.rng.gen_range(1..60);
        let mut from = [0u8; 32];
        let mut seen = Vec::new();
        loop {
            let (entries, proof) = f
                .trie
                .prove_range(v as u64, &from, limit)
                .expect("prove range");
            assert_eq!(verify_range(&root, &proof, &entries), Ok(()));
            let decoded = RangeProof::decode(&proof.encode()).expect("decode");
            assert_eq!(verify_range(&root, &decoded, &entries), Ok(()));
            if !entries.is_empty() {
                // One entry left out, one entry added, one value changed.
                let mut missing = entries.clone();
                missing.remove(f.rng.gen_range(0..missing.len()));
                assert!(matches!(
                    verify_range(&root, &proof, &missing),
                    Err(ProofError::RangeMismatch { .. })
                ));
                let mut changed = entries.clone();
                changed[0].1[0] ^= 1;
                assert!(verify_range(&root, &proof, &changed).is_err());
            }
            let mut added = entries.clone();
            added.push(([0xff; 32], [0; 32]));
            assert!(verify_range(&root, &proof, &added).is_err());
            assert!(verify_range(&[5; 32], &proof, &entries).is_err());
            seen.extend_from_slice(&entries);
            if proof.to == [0xff; 32] {
                break;
            }
            // A proof cannot be stretched past its bound while keys follow.
            let mut stretched = RangeProof::decode(&proof.encode()).expect("decode");
            stretched.to = [0xff; 32];
            let more_follow = all.last().is_some_and(|(k, _)| *k > proof.to);
            assert_eq!(
                verify_range(&root, &stretched, &entries).is_err(),
                more_follow
            );
            // The next page starts just after the last key.
            let mut next = proof.to;
            for b in next.iter_mut().rev() {
                let (n, carry) = b.overflowing_add(1);
                *b = n;
                if !carry {
                    break;
                }
            }
            from = next;
        }
        assert_eq!(seen, all, "pages of version {v} cover exactly its state");
    }
    assert!(f.trie.prove_range(1, &[0; 32], 0).is_err());
}

#[test]
fn proofs_over_the_empty_and_tiny_tries() {
    let trie = Trie::new(MemPageStore::new());
    let empty = trie.root(0).expect("root");
    let p = trie.prove(0, &[[1; 32]]).expect("prove");
    assert_eq!(verify(&empty, &p, &[([1; 32], None)]), Ok(()));
    assert!(verify(&empty, &p, &[([1; 32], Some([0; 32]))]).is_err());
    let (entries, range) = trie.prove_range(0, &[0; 32], 10).expect("range");
    assert!(entries.is_empty());
    assert_eq!(verify_range(&empty, &range, &[]), Ok(()));

    let out = trie
        .update(0, 1, &[([1; 32], Some([2; 32]))])
        .expect("update");
    trie.source().apply(&out).expect("apply");
    let p = trie.prove(1, &[[1; 32]]).expect("prove");
    assert_eq!(verify(&out.root, &p, &[([1; 32], Some([2; 32]))]), Ok(()));
    let q = trie.prove(1, &[[0x11; 32]]).expect("prove");
    assert_eq!(verify(&out.root, &q, &[([0x11; 32], None)]), Ok(()));
}
