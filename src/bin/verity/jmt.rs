//! `--backend jmt`: the Jellyfish Merkle Tree of the `jmt` crate over
//! RocksDB, stored the way node teams store it.
//!
//! The tree (16-ary, SHA-256, `jmt::Sha256Jmt`) is the crate's; keys are
//! the same blake3 key hashes as the other backends'. Its roots and proofs
//! are its own, so they are checked against its own earlier runs, never
//! against Verity's. The storage:
//!
//! - column family `nodes`: every tree node under its node key,
//!   `version (u64 BE) | borsh(NodeKey)` (the version first, so a
//!   version's nodes sit together) -> `borsh(Node)`.
//! - `values`: `key hash | version (u64 BE)` -> `1 | value` or `0`
//!   (deleted); a read seeks for the newest entry at or below its version
//!   (the tree's leaves hold value hashes only).
//! - `stale` and `meta` as in `rocks_tuning`. The crate reports the nodes
//!   an update supersedes but not the values, so with `--retain` each
//!   written key's previous value entry is found with one seek and
//!   recorded too; without `--retain` nothing is recorded (nothing is
//!   pruned).
//!
//! One RocksDB `WriteBatch` per version with the WAL synced, on a commit
//! thread, with the RocksDB tuning of the `rocksdb` backend. The crate
//! numbers versions from 0: bench version `v` is tree version `v - 1`.
//! The crate applies an update on one thread.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use jmt::proof::SparseMerkleProof;
use jmt::storage::{LeafNode, Node, NodeKey, TreeReader};
use jmt::{KeyHash, OwnedValue, RootHash, Sha256Jmt, Version};
use rocksdb::{ReadOptions, WriteBatch, WriteOptions};
use verity::{key_hash, Hash};

use super::backend::{
    dedup_by_key_hash, Backend, BenchProof, CommitProgress, CommitThread, Ops, Pending, Reader,
};
use super::rocks_tuning::{self, stale_key, TunedDb, META, STALE};

const NODES: &str = "nodes";
const VALUES: &str = "values";
const STALE_NODE: u8 = 0;
const STALE_VALUE: u8 = 1;
const NAME: &str = "jmt backend";

/// The tree version of bench version `version` (at least 1).
fn tree_version(version: u64) -> Version {
    version - 1
}

/// The `nodes` key of a node: its version first, then the node key.
fn node_key(key: &NodeKey) -> Result<Vec<u8>> {
    let mut k = key.version().to_be_bytes().to_vec();
    borsh::to_writer(&mut k, key).context("jmt backend: encoding a node key")?;
    Ok(k)
}

/// The `values` key of `key`'s value written at tree version `version`.
fn value_key(key: &KeyHash, version: Version) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(&key.0);
    k[32..].copy_from_slice(&version.to_be_bytes());
    k
}

/// The tree's storage.
struct Store {
    tuned: TunedDb,
}

impl Store {
    /// The newest `values` entry of `key` at or below tree version
    /// `version`: its key and whether it holds a value (and which).
    fn value_entry(
        &self,
        key: &KeyHash,
        version: Version,
    ) -> Result<Option<([u8; 40], Option<OwnedValue>)>> {
        let mut ro = ReadOptions::default();
        ro.set_prefix_same_as_start(true);
        let mut it = self
            .tuned
            .db
            .raw_iterator_cf_opt(self.tuned.cf(VALUES)?, ro);
        it.seek_for_prev(value_key(key, version));
        match (it.key(), it.value()) {
            (Some(k), Some(v)) if k.len() == 40 && k[..32] == key.0[..] => {
                let entry: [u8; 40] = k.try_into()?;
                match v.first() {
                    Some(1) => Ok(Some((entry, Some(v[1..].to_vec())))),
                    Some(0) => Ok(Some((entry, None))),
                    _ => bail!("jmt backend: bad value entry"),
                }
            }
            _ => {
                it.status()?;
                Ok(None)
            }
        }
    }

    /// Merkleizes bench version `version` and writes it in one batch with
    /// the WAL synced; records stale entries when `track_stale`.
    fn commit(&self, version: u64, ops: Ops, track_stale: bool) -> Result<Hash> {
        let tv = tree_version(version);
        let writes = dedup_by_key_hash(ops);
        let mut batch = WriteBatch::default();
        let (nodes, values, stale, meta) = (
            self.tuned.cf(NODES)?,
            self.tuned.cf(VALUES)?,
            self.tuned.cf(STALE)?,
            self.tuned.cf(META)?,
        );
        if track_stale {
            for (k, v) in &writes {
                let kh = KeyHash(*k);
                if tv > 0 {
                    if let Some((entry, _)) = self.value_entry(&kh, tv - 1)? {
                        batch.put_cf(stale, stale_key(version, STALE_VALUE, &entry), []);
                    }
                }
                if v.is_none() {
                    // A tombstone is needed only by versions below its own.
                    let entry = value_key(&kh, tv);
                    batch.put_cf(stale, stale_key(version, STALE_VALUE, &entry), []);
                }
            }
        }
        let tree = Sha256Jmt::new(self);
        let (root, update) = tree
            .put_value_set(writes.into_iter().map(|(k, v)| (KeyHash(k), v)), tv)
            .with_context(|| format!("jmt backend: updating the tree to version {version}"))?;
        for (key, node) in update.node_batch.nodes() {
            let bytes = borsh::to_vec(node).context("jmt backend: encoding a node")?;
            batch.put_cf(nodes, node_key(key)?, bytes);
        }
        for ((v, key), value) in update.node_batch.values() {
            let entry = value_key(key, *v);
            match value {
                Some(value) => {
                    let mut e = Vec::with_capacity(1 + value.len());
                    e.push(1);
                    e.extend_from_slice(value);
                    batch.put_cf(values, entry, e);
                }
                None => batch.put_cf(values, entry, [0]),
            }
        }
        if track_stale {
            for s in &update.stale_node_index_batch {
                // Stale since tree version `s`: needed only below bench
                // version `s + 1`.
                let since = s.stale_since_version + 1;
                batch.put_cf(
                    stale,
                    stale_key(since, STALE_NODE, &node_key(&s.node_key)?),
                    [],
                );
            }
        }
        batch.put_cf(meta, version.to_be_bytes(), root.0);
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.tuned.db.write_opt(batch, &wo)?;
        Ok(root.0)
    }

    fn root(&self, version: u64) -> Result<Hash> {
        let bytes = self
            .tuned
            .db
            .get_pinned_cf(self.tuned.cf(META)?, version.to_be_bytes())?
            .with_context(|| format!("jmt backend: version {version} is not retained"))?;
        Ok(bytes[..].try_into()?)
    }

    fn prune(&self, floor: u64) -> Result<()> {
        self.tuned.prune(floor, |tag| match tag {
            STALE_NODE => NODES,
            _ => VALUES,
        })
    }
}

impl TreeReader for Store {
    fn get_node_option(&self, key: &NodeKey) -> Result<Option<Node>> {
        match self
            .tuned
            .db
            .get_pinned_cf(self.tuned.cf(NODES)?, node_key(key)?)?
        {
            Some(bytes) => Ok(Some(
                borsh::from_slice(&bytes).context("jmt backend: decoding a node")?,
            )),
            None => Ok(None),
        }
    }

    fn get_value_option(&self, max_version: Version, key: KeyHash) -> Result<Option<OwnedValue>> {
        Ok(self.value_entry(&key, max_version)?.and_then(|e| e.1))
    }

    fn get_rightmost_leaf(&self) -> Result<Option<(NodeKey, LeafNode)>> {
        // Only the crate's restore from a snapshot asks for it; the bench
        // never restores.
        bail!("jmt backend: restoring a tree from a snapshot is not supported")
    }
}

/// A proof of the tree, checked with the crate's verifier.
struct JmtProof(SparseMerkleProof<sha2::Sha256>);

impl BenchProof for JmtProof {
    fn encode(&self) -> Vec<u8> {
        // Writing into a vector cannot fail.
        borsh::to_vec(&self.0).unwrap_or_default()
    }

    fn verify(&self, root: &Hash, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        self.0
            .verify(RootHash(*root), KeyHash(key_hash(key)), value)
    }
}

/// The Jellyfish Merkle Tree backend.
pub(crate) struct JmtBackend {
    store: Arc<Store>,
    commits: CommitThread,
    settings: String,
}

impl JmtBackend {
    /// Opens (creates) the store in `dir`; keeps `retain` versions when
    /// given.
    pub(crate) fn open(
        dir: &Path,
        cache_bytes: usize,
        direct_io: bool,
        retain: Option<u64>,
    ) -> Result<JmtBackend> {
        let tuned = TunedDb::open(
            NAME,
            dir,
            cache_bytes,
            direct_io,
            &[(NODES, false), (VALUES, true)],
        )?;
        let store = Arc::new(Store { tuned });
        let latest = store.tuned.latest()?;
        let worker = store.clone();
        let commits = CommitThread::start(
            NAME,
            latest,
            Box::new(move |version, ops, progress: &CommitProgress| {
                let root = worker.commit(version, ops, retain.is_some())?;
                if let Some(keep) = retain {
                    let floor = (version + 1).saturating_sub(keep);
                    if progress.raise_floor(floor) {
                        worker.prune(floor)?;
                    }
                }
                Ok(root)
            }),
        )?;
        Ok(JmtBackend {
            store,
            commits,
            settings: format!(
                "jmt 0.12 tree (SHA-256, updates on one thread), nodes under version | node key, \
                 values under key hash | version; {}",
                rocks_tuning::settings(cache_bytes, direct_io)
            ),
        })
    }
}

struct JmtReader {
    store: Arc<Store>,
    version: u64,
}

impl Reader for JmtReader {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Sha256Jmt::new(&*self.store).get(KeyHash(key_hash(key)), tree_version(self.version))
    }

    fn prove(&self, key: &[u8]) -> Result<Box<dyn BenchProof>> {
        let (_, proof) = Sha256Jmt::new(&*self.store)
            .get_with_proof(KeyHash(key_hash(key)), tree_version(self.version))?;
        Ok(Box::new(JmtProof(proof)))
    }

    fn root(&self) -> Result<Hash> {
        self.store.root(self.version)
    }
}

impl Backend for JmtBackend {
    fn name(&self) -> &'static str {
        "jmt"
    }

    fn family(&self) -> &'static str {
        "jmt (SHA-256)"
    }

    fn settings(&self) -> String {
        self.settings.clone()
    }

    fn commit(&self, ops: Ops) -> Result<Box<dyn Pending>> {
        self.commits.commit(ops)
    }

    fn reader(&self, version: u64) -> Result<Arc<dyn Reader>> {
        // Only written versions can be read: wait for it.
        self.commits.progress().wait_retained(version)?;
        Ok(Arc::new(JmtReader {
            store: self.store.clone(),
            version,
        }))
    }

    fn oldest(&self) -> u64 {
        self.commits.progress().oldest()
    }

    fn disk_reads(&self) -> Option<u64> {
        Some(self.store.tuned.block_cache_misses())
    }

    fn reads_staged(&self) -> bool {
        false
    }

    fn close(&self) -> Result<()> {
        self.commits.close()?;
        self.store.tuned.db.flush_wal(true)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// Small key sets with deletes and keys coming back, pruned to a few
    /// versions: every retained version reads as a model of the writes
    /// says, every proof verifies against the version's root (and not
    /// with another value), and pruned versions are refused.
    #[test]
    fn reads_and_proofs_match_a_model_of_the_writes_while_pruning() {
        let seed = verity_testkit::seed("jmt_backend_model");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let tmp = tempfile::tempdir().expect("tempdir");
        let retain = 4;
        let jmt = JmtBackend::open(tmp.path(), 8 << 20, false, Some(retain)).expect("open");
        let pool: Vec<Vec<u8>> = (0..40u32).map(|i| i.to_le_bytes().to_vec()).collect();
        // Per version, the value of each key; and every write: version,
        // key, whether a delete.
        let mut model: Vec<HashMap<Vec<u8>, Vec<u8>>> = vec![HashMap::new()];
        let mut writes: Vec<(u64, Vec<u8>, bool)> = Vec::new();
        let versions = 30 * verity_testkit::scale() as u64;
        for v in 1..=versions {
            let mut state = model[model.len() - 1].clone();
            let mut ops: Ops = Vec::new();
            for _ in 0..rng.gen_range(1..20) {
                let k = pool[rng.gen_range(0..pool.len())].clone();
                if rng.gen_bool(0.3) {
                    state.remove(&k);
                    ops.push((k, None));
                } else {
                    let value = vec![rng.gen::<u8>(); rng.gen_range(1..5)];
                    state.insert(k.clone(), value.clone());
                    ops.push((k, Some(value)));
                }
            }
            model.push(state);
            let mut seen = std::collections::HashSet::new();
            for (k, value) in ops.iter().rev() {
                if seen.insert(k.clone()) {
                    writes.push((v, k.clone(), value.is_none()));
                }
            }
            jmt.commit(ops).expect("commit").wait().expect("wait");
            let oldest = jmt.oldest();
            assert_eq!(oldest, (v + 1).saturating_sub(retain).max(1), "seed {seed}");
            for at in oldest..=v {
                let r = jmt.reader(at).expect("reader");
                let root = r.root().expect("root");
                for k in pool.iter().step_by(3) {
                    let want = model[at as usize].get(k).cloned();
                    assert_eq!(r.get(k).expect("get"), want, "v{at} (seed {seed})");
                    let p = r.prove(k).expect("prove");
                    p.verify(&root, k, want.as_deref()).expect("verifies");
                    assert!(p.verify(&root, k, Some(b"other")).is_err());
                }
            }
            if oldest > 1 {
                assert!(jmt.reader(oldest - 1).is_err(), "seed {seed}");
            }
        }
        jmt.close().expect("close");
        // A value entry is pruned once the floor reaches the version that
        // made it stale: a tombstone its own, a value the next write of
        // its key. Exactly the others are left.
        let floor = jmt.oldest();
        let left = writes
            .iter()
            .filter(|(w, k, delete)| {
                let stale_since = if *delete {
                    Some(*w)
                } else {
                    writes
                        .iter()
                        .filter(|(n, kn, _)| kn == k && n > w)
                        .map(|(n, _, _)| *n)
                        .min()
                };
                stale_since.is_none_or(|s| s > floor)
            })
            .count();
        let store = &jmt.store;
        let mut it = store
            .tuned
            .db
            .raw_iterator_cf(store.tuned.cf(VALUES).expect("cf"));
        it.seek_to_first();
        let mut entries = 0;
        while it.valid() {
            entries += 1;
            it.next();
        }
        assert_eq!(entries, left, "value entries (seed {seed})");
    }
}
