//! The proof verifiers on hostile proofs: proofs decoded from arbitrary
//! bytes, and valid proofs with bytes changed. Verification never panics,
//! and never accepts a claim that is false in the tree the root commits to
//! (a key's wrong value, a present key claimed absent, an absent key
//! claimed present, a range with an entry missing or added).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use verity_merkle::hash::{key_hash, value_hash};
use verity_merkle::{
    verify, verify_range, Hash, KeyHash, MemPageStore, Proof, RangeProof, Trie, ValueHash,
};

/// Keys `0..48` are present with value `value-i`; `48..64` are absent.
const KEYS: usize = 64;
const PRESENT: usize = 48;

struct Fixture {
    root: Hash,
    keys: Vec<KeyHash>,
    values: Vec<ValueHash>,
    /// Valid encodings to mutate: single-key, multi-key and range proofs.
    proofs: Vec<Vec<u8>>,
    ranges: Vec<Vec<u8>>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let keys: Vec<KeyHash> = (0..KEYS)
            .map(|i| key_hash(format!("key-{i}").as_bytes()))
            .collect();
        let values: Vec<ValueHash> = (0..KEYS)
            .map(|i| value_hash(format!("value-{i}").as_bytes()))
            .collect();
        let mut updates: Vec<_> = (0..PRESENT).map(|i| (keys[i], Some(values[i]))).collect();
        updates.sort_unstable_by_key(|u| u.0);
        let trie = Trie::new(MemPageStore::new());
        let out = trie.update(0, 1, &updates).expect("update");
        trie.source().apply(&out).expect("apply");
        let mut proofs = Vec::new();
        for set in [&[0usize][..], &[50], &[1, 2, 3], &[4, 49, 60, 10, 11]] {
            let mut ks: Vec<KeyHash> = set.iter().map(|&i| keys[i]).collect();
            ks.sort_unstable();
            proofs.push(trie.prove(1, &ks).expect("prove").encode());
        }
        let mut ranges = Vec::new();
        for (from, limit) in [([0u8; 32], 8), ([0x80u8; 32], 100), ([0x40; 32], 1)] {
            let (_, proof) = trie.prove_range(1, &from, limit).expect("range");
            ranges.push(proof.encode());
        }
        Fixture {
            root: out.root,
            keys,
            values,
            proofs,
            ranges,
        }
    })
}

/// The bytes to verify: the input itself, or a valid encoding with the
/// input's `(offset, xor)` pairs applied.
fn bytes(mode: u8, rest: &[u8], valid: &[Vec<u8>]) -> Vec<u8> {
    if mode & 1 == 0 || rest.is_empty() {
        return rest.to_vec();
    }
    let mut b = valid[rest[0] as usize % valid.len()].clone();
    for pair in rest[1..].chunks(3) {
        if let [hi, lo, x] = *pair {
            let at = (usize::from(hi) << 8 | usize::from(lo)) % b.len().max(1);
            if let Some(byte) = b.get_mut(at) {
                *byte ^= x;
            }
        } else if let [cut] = *pair {
            b.truncate(usize::from(cut) % (b.len() + 1));
        }
    }
    b
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 2 == 0 {
        let b = bytes(mode, rest, &f.proofs);
        let Ok(proof) = Proof::decode(&b) else { return };
        // Claims from the top bits of the mode and the first bytes: key
        // `i` claimed with its value, absent, or a wrong value.
        let mut claims: Vec<(KeyHash, Option<ValueHash>, bool)> = Vec::new();
        for (j, &c) in rest.iter().take(1 + (mode >> 5) as usize).enumerate() {
            let i = (c as usize + j) % KEYS;
            let truth = (i < PRESENT).then(|| f.values[i]);
            let (claim, honest) = match c >> 6 {
                0 | 1 => (truth, true),
                2 => (None, truth.is_none()),
                _ => (Some(f.values[(i + 1) % KEYS]), false),
            };
            claims.push((f.keys[i], claim, honest));
        }
        claims.sort_by_key(|c| c.0);
        claims.dedup_by_key(|c| c.0);
        let plain: Vec<_> = claims.iter().map(|c| (c.0, c.1)).collect();
        if verify(&f.root, &proof, &plain).is_ok() {
            assert!(
                claims.iter().all(|c| c.2),
                "a false claim verified: {claims:?}"
            );
        }
    } else {
        let b = bytes(mode, rest, &f.ranges);
        let Ok(proof) = RangeProof::decode(&b) else {
            return;
        };
        // The true entries of the proof's range, then one dropped or one
        // added from outside the tree.
        let mut entries: Vec<(KeyHash, ValueHash)> = (0..PRESENT)
            .map(|i| (f.keys[i], f.values[i]))
            .filter(|e| e.0 >= proof.from && e.0 <= proof.to)
            .collect();
        entries.sort_unstable();
        let honest = match mode >> 6 {
            0 | 1 => true,
            2 if !entries.is_empty() => {
                entries.remove(rest.first().copied().unwrap_or(0) as usize % entries.len());
                false
            }
            _ => {
                let extra = (f.keys[PRESENT], f.values[PRESENT]);
                if extra.0 < proof.from || extra.0 > proof.to {
                    return;
                }
                entries.push(extra);
                entries.sort_unstable();
                false
            }
        };
        if verify_range(&f.root, &proof, &entries).is_ok() {
            assert!(honest, "a false range verified");
        }
    }
});
