//! The committed test vectors hold: `docs/test-vectors.txt` lists key/value
//! sets and their roots, so another implementation can check itself.
//!
//! Format: `vector NAME`, then `put KEYHEX VALUEHEX` lines (raw bytes,
//! before hashing), then `root HEXROOT`. Blank lines and `#` comments are
//! ignored. `VERITY_WRITE_VECTORS=1` rewrites the file from the naive root
//! computation (for adding vectors; the roots of existing ones must never
//! change).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use verity_merkle::hash::{key_hash, value_hash};
use verity_merkle::{MemPageStore, Trie};

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/test-vectors.txt")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

type Puts = Vec<(Vec<u8>, Vec<u8>)>;
type Vector = (String, Puts, Option<[u8; 32]>);

fn generated() -> Vec<(String, Puts)> {
    let kv = |k: &str, v: &str| (k.as_bytes().to_vec(), v.as_bytes().to_vec());
    vec![
        ("empty".into(), vec![]),
        ("one key".into(), vec![kv("alice", "100")]),
        (
            "two keys".into(),
            vec![kv("alice", "100"), kv("bob", "200")],
        ),
        ("empty value".into(), vec![kv("k", "")]),
        (
            "sixteen keys".into(),
            (0..16)
                .map(|i| kv(&format!("key-{i:02}"), &format!("value-{i}")))
                .collect(),
        ),
        (
            "two hundred keys".into(),
            (0..200)
                .map(|i| kv(&format!("k{i}"), &format!("v{i}")))
                .collect(),
        ),
    ]
}

fn root_of(puts: &[(Vec<u8>, Vec<u8>)]) -> [u8; 32] {
    let set: BTreeMap<_, _> = puts
        .iter()
        .map(|(k, v)| (key_hash(k), value_hash(v)))
        .collect();
    common::naive_root(&set)
}

fn parse(text: &str) -> Vec<Vector> {
    let mut out: Vec<Vector> = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "vector" => out.push((rest.to_string(), Vec::new(), None)),
            "put" => {
                let (k, v) = rest.split_once(' ').unwrap_or((rest, ""));
                out.last_mut()
                    .expect("put after vector")
                    .1
                    .push((unhex(k), unhex(v)));
            }
            "root" => {
                let r: [u8; 32] = unhex(rest).try_into().expect("32-byte root");
                out.last_mut().expect("root after vector").2 = Some(r);
            }
            _ => panic!("unknown line {line:?}"),
        }
    }
    out
}

#[test]
fn committed_vectors_match_both_root_computations() {
    if std::env::var("VERITY_WRITE_VECTORS").as_deref() == Ok("1") {
        let mut text = String::from(
            "# Verity state-root test vectors (see docs/format.md).\n\
             # `put` lines give raw key and value bytes in hex; `root` is the state root.\n",
        );
        for (name, puts) in generated() {
            text.push_str(&format!("\nvector {name}\n"));
            for (k, v) in &puts {
                text.push_str(&format!("put {} {}\n", hex(k), hex(v)));
            }
            text.push_str(&format!("root {}\n", hex(&root_of(&puts))));
        }
        std::fs::write(path(), text).expect("write vectors");
    }
    let text = std::fs::read_to_string(path()).expect("docs/test-vectors.txt");
    let vectors = parse(&text);
    assert!(vectors.len() >= 6, "vectors missing");
    for (name, puts, root) in vectors {
        let root = root.expect("every vector has a root");
        assert_eq!(root_of(&puts), root, "naive root of {name:?}");
        let trie = Trie::new(MemPageStore::new());
        let mut updates: Vec<_> = puts
            .iter()
            .map(|(k, v)| (key_hash(k), Some(value_hash(v))))
            .collect();
        updates.sort();
        let out = trie.update(0, 1, &updates).expect("update");
        assert_eq!(out.root, root, "trie root of {name:?}");
    }
}
