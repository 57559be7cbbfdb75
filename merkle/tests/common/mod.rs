//! Shared helpers of the trie tests: an independent, naive root computation
//! written from `docs/format.md` alone, and seeded randomness.

#![allow(dead_code)]

use std::collections::BTreeMap;

pub type H = [u8; 32];

fn keyed(domain: &str, a: &H, b: &H) -> H {
    let key = *blake3::hash(domain.as_bytes()).as_bytes();
    let mut input = Vec::with_capacity(64);
    input.extend_from_slice(a);
    input.extend_from_slice(b);
    *blake3::keyed_hash(&key, &input).as_bytes()
}

pub fn empty() -> H {
    *blake3::hash(b"verity/v1/empty").as_bytes()
}

fn nib(k: &H, i: usize) -> usize {
    usize::from(if i.is_multiple_of(2) {
        k[i / 2] >> 4
    } else {
        k[i / 2] & 15
    })
}

fn pair(l: H, r: H) -> H {
    if l == empty() && r == empty() {
        empty()
    } else {
        keyed("verity/v1/internal", &l, &r)
    }
}

fn subtree(entries: &[(H, H)], depth: usize, root: bool) -> H {
    if !root {
        match entries {
            [] => return empty(),
            [(k, v)] => return keyed("verity/v1/leaf", k, v),
            _ => {}
        }
    }
    let mut level: Vec<H> = (0..16)
        .map(|n| {
            let under: Vec<(H, H)> = entries
                .iter()
                .filter(|(k, _)| nib(k, depth) == n)
                .copied()
                .collect();
            subtree(&under, depth + 1, false)
        })
        .collect();
    while level.len() > 1 {
        level = level.chunks(2).map(|c| pair(c[0], c[1])).collect();
    }
    level[0]
}

/// Applies a batch of puts (`Some`) and deletes (`None`) to a state.
pub fn apply_batch(state: &mut BTreeMap<H, H>, batch: &BTreeMap<H, Option<H>>) {
    for (k, val) in batch {
        match val {
            Some(val) => state.insert(*k, *val),
            None => state.remove(k),
        };
    }
}

/// The root of a key-hash -> value-hash set, computed the slow, obvious way.
pub fn naive_root(set: &BTreeMap<H, H>) -> H {
    let entries: Vec<(H, H)> = set.iter().map(|(k, v)| (*k, *v)).collect();
    subtree(&entries, 0, true)
}

/// The seed of a randomised test: `VERITY_SEED` or a fresh one, printed.
#[allow(unused_imports)]
pub use verity_testkit::seed;
