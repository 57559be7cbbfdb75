//! `--backend rocksdb`: the layered baseline, Verity's trie stored the way
//! node teams store the Jellyfish Merkle Tree in RocksDB.
//!
//! The trie shape and hashing are Verity's (`docs/format.md` §2-3), so the
//! roots and proofs are the same bytes. The storage is the layered design:
//!
//! - column family `nodes`: every trie node is its own key,
//!   `version (u64 BE) | nibble count (u8) | the nibbles, two per byte`.
//!   An internal node lists its children's hashes and the versions that
//!   wrote them (so a child is one point read); a leaf holds its key hash,
//!   value hash and the version of its value.
//! - `values`: `key hash | version (u64 BE)` -> `1 | value` or `0`
//!   (deleted); a read seeks for the newest entry at or below its version.
//! - `stale`: `since (u64 BE) | column family (u8) | key`: entries that
//!   versions from `since` on no longer need; pruning to a floor deletes
//!   every entry stale since a version at or below it.
//! - `meta`: `version (u64 BE)` -> root.
//!
//! One RocksDB `WriteBatch` per version, written with the WAL synced. A
//! commit thread merkleizes and writes versions in order; an update walks
//! the trie from the previous version's root, reading each node it
//! touches, with the 16 subtrees under the root on the rayon pool.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use rayon::prelude::*;
use rocksdb::{ReadOptions, WriteBatch, WriteOptions};
use verity::codec::proof::{ProofImage, ProofNode};
use verity::merkle::hash::{internal_hash, leaf_hash, nibble};
use verity::{key_hash, Hash, KeyHash, Proof, ValueHash, EMPTY};

use super::backend::{
    by_key_hash, Backend, BenchProof, CommitProgress, CommitThread, Ops, Pending, Reader,
};
use super::rocks_tuning::{self, stale_key, TunedDb, META, STALE};

const NODES: &str = "nodes";
const VALUES: &str = "values";
const STALE_NODE: u8 = 0;
const STALE_VALUE: u8 = 1;

/// A trie path: a key-hash prefix of `depth` nibbles (the rest zero).
#[derive(Clone, Copy)]
struct Path32 {
    bytes: KeyHash,
    depth: usize,
}

impl Path32 {
    const ROOT: Path32 = Path32 {
        bytes: [0; 32],
        depth: 0,
    };

    fn of(key: &KeyHash, depth: usize) -> Path32 {
        let mut bytes = [0u8; 32];
        bytes[..depth.div_ceil(2)].copy_from_slice(&key[..depth.div_ceil(2)]);
        if !depth.is_multiple_of(2) {
            bytes[depth / 2] &= 0xf0;
        }
        Path32 { bytes, depth }
    }

    fn child(&self, n: u8) -> Path32 {
        let mut bytes = self.bytes;
        if self.depth.is_multiple_of(2) {
            bytes[self.depth / 2] = n << 4;
        } else {
            bytes[self.depth / 2] |= n;
        }
        Path32 {
            bytes,
            depth: self.depth + 1,
        }
    }

    fn node_key(&self, version: u64) -> Vec<u8> {
        let mut k = Vec::with_capacity(9 + self.depth.div_ceil(2));
        k.extend_from_slice(&version.to_be_bytes());
        k.push(self.depth as u8);
        k.extend_from_slice(&self.bytes[..self.depth.div_ceil(2)]);
        k
    }
}

fn value_key(key: &KeyHash, version: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(key);
    k[32..].copy_from_slice(&version.to_be_bytes());
    k
}

/// A child slot of an internal node as stored.
#[derive(Clone, Copy)]
struct Child {
    hash: Hash,
    version: u64,
    leaf: bool,
}

/// An internal node: its 16 slots.
#[derive(Clone, Copy, Default)]
struct Internal {
    slots: [Option<Child>; 16],
}

impl Internal {
    fn encode(&self) -> Vec<u8> {
        let (mut present, mut leaves) = (0u16, 0u16);
        let mut body = Vec::with_capacity(5 + 40 * 16);
        for (n, c) in self.slots.iter().enumerate() {
            if let Some(c) = c {
                present |= 1 << n;
                if c.leaf {
                    leaves |= 1 << n;
                }
                body.extend_from_slice(&c.version.to_le_bytes());
                body.extend_from_slice(&c.hash);
            }
        }
        let mut out = Vec::with_capacity(5 + body.len());
        out.push(0);
        out.extend_from_slice(&present.to_le_bytes());
        out.extend_from_slice(&leaves.to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn decode(bytes: &[u8]) -> Result<Internal> {
        if bytes.len() < 5 || bytes[0] != 0 {
            bail!("rocksdb baseline: not an internal node");
        }
        let present = u16::from_le_bytes([bytes[1], bytes[2]]);
        let leaves = u16::from_le_bytes([bytes[3], bytes[4]]);
        if bytes.len() != 5 + 40 * present.count_ones() as usize {
            bail!("rocksdb baseline: internal node of {} bytes", bytes.len());
        }
        let mut node = Internal::default();
        let mut at = 5;
        for n in 0..16 {
            if present & (1 << n) != 0 {
                let version = u64::from_le_bytes(bytes[at..at + 8].try_into()?);
                let hash: Hash = bytes[at + 8..at + 40].try_into()?;
                node.slots[n] = Some(Child {
                    hash,
                    version,
                    leaf: leaves & (1 << n) != 0,
                });
                at += 40;
            }
        }
        Ok(node)
    }

    fn slot_hashes(&self) -> [Hash; 16] {
        let mut h = [EMPTY; 16];
        for (n, c) in self.slots.iter().enumerate() {
            if let Some(c) = c {
                h[n] = c.hash;
            }
        }
        h
    }

    /// The binary tree over the slots: `tree[1]` is the node's hash,
    /// `tree[2i]` and `tree[2i + 1]` are the children of `tree[i]`, and
    /// the slots are `tree[16..32]`.
    fn tree(&self) -> [Hash; 32] {
        let mut t = [EMPTY; 32];
        t[16..].copy_from_slice(&self.slot_hashes());
        for i in (1..16).rev() {
            t[i] = internal_hash(&t[2 * i], &t[2 * i + 1]);
        }
        t
    }
}

/// A leaf node.
#[derive(Clone, Copy)]
struct Leaf {
    key: KeyHash,
    value: ValueHash,
    value_version: u64,
    /// Where it is stored: `(node version, depth)`, or `None` if it is new.
    stored: Option<(u64, usize)>,
}

impl Leaf {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(73);
        out.push(1);
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&self.value);
        out.extend_from_slice(&self.value_version.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8], stored: (u64, usize)) -> Result<Leaf> {
        if bytes.len() != 73 || bytes[0] != 1 {
            bail!("rocksdb baseline: not a leaf node");
        }
        Ok(Leaf {
            key: bytes[1..33].try_into()?,
            value: bytes[33..65].try_into()?,
            value_version: u64::from_le_bytes(bytes[65..73].try_into()?),
            stored: Some(stored),
        })
    }

    fn hash(&self) -> Hash {
        leaf_hash(&self.key, &self.value)
    }
}

/// A subtree after an update.
enum Sub {
    Empty,
    Leaf(Leaf),
    /// A leaf slot left as it was (not read).
    KeptLeaf(Child),
    Internal(Child),
}

/// What an update writes.
#[derive(Default)]
struct Out {
    nodes: Vec<(Vec<u8>, Vec<u8>)>,
    stale: Vec<Vec<u8>>,
}

impl Out {
    fn stale(&mut self, since: u64, cf: u8, key: &[u8]) {
        self.stale.push(stale_key(since, cf, key));
    }

    fn merge(&mut self, other: Out) {
        self.nodes.extend(other.nodes);
        self.stale.extend(other.stale);
    }
}

/// One write of a version: key hash and the new value hash (`None`:
/// delete).
type Write = (KeyHash, Option<ValueHash>);

struct Store {
    tuned: TunedDb,
}

impl Store {
    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.tuned.cf(name)
    }

    fn read_internal(&self, path: &Path32, version: u64) -> Result<Internal> {
        let key = path.node_key(version);
        let bytes = self
            .tuned
            .db
            .get_pinned_cf(self.cf(NODES)?, &key)?
            .ok_or_else(|| anyhow!("rocksdb baseline: node missing at version {version}"))?;
        Internal::decode(&bytes)
    }

    fn read_leaf(&self, path: &Path32, version: u64) -> Result<Leaf> {
        let bytes = self
            .tuned
            .db
            .get_pinned_cf(self.cf(NODES)?, path.node_key(version))?
            .ok_or_else(|| anyhow!("rocksdb baseline: leaf missing at version {version}"))?;
        Leaf::decode(&bytes, (version, path.depth))
    }

    /// The subtree at `path` (holding `existing`) after `writes`, all of
    /// whose keys lie under `path`.
    fn update(
        &self,
        version: u64,
        path: Path32,
        existing: Sub,
        writes: &[Write],
        out: &mut Out,
    ) -> Result<Sub> {
        if writes.is_empty() {
            return Ok(existing);
        }
        let existing = match existing {
            Sub::KeptLeaf(c) => Sub::Leaf(self.read_leaf(&path, c.version)?),
            other => other,
        };
        match existing {
            Sub::Internal(c) => {
                let node = self.read_internal(&path, c.version)?;
                let mut children: [Sub; 16] = std::array::from_fn(|_| Sub::Empty);
                for (n, slot) in node.slots.iter().enumerate() {
                    if let Some(s) = slot {
                        children[n] = if s.leaf {
                            Sub::KeptLeaf(*s)
                        } else {
                            Sub::Internal(*s)
                        };
                    }
                }
                self.update_children(version, path, children, writes, Some(c.version), out)
            }
            Sub::Empty | Sub::Leaf(_) | Sub::KeptLeaf(_) => {
                let old = match existing {
                    Sub::Leaf(l) => Some(l),
                    _ => None,
                };
                // The leaf stays unless a write names its key.
                let mut kept = old;
                if let Some(l) = old {
                    if writes.iter().any(|w| w.0 == l.key) {
                        // Rewritten or deleted: its node and its value are
                        // stale from this version on.
                        kept = None;
                        if let Some((v, d)) = l.stored {
                            out.stale(version, STALE_NODE, &Path32::of(&l.key, d).node_key(v));
                        }
                        out.stale(version, STALE_VALUE, &value_key(&l.key, l.value_version));
                    }
                }
                let puts = writes.iter().filter(|w| w.1.is_some()).count();
                match (kept, puts) {
                    (None, 0) => return Ok(Sub::Empty),
                    (Some(l), 0) => return Ok(Sub::Leaf(l)),
                    (None, 1) => {
                        let w = writes.iter().find(|w| w.1.is_some()).expect("one put");
                        return Ok(Sub::Leaf(Leaf {
                            key: w.0,
                            value: w.1.expect("a put"),
                            value_version: version,
                            stored: None,
                        }));
                    }
                    _ => {}
                }
                // Two or more keys: an internal node here.
                let mut children: [Sub; 16] = std::array::from_fn(|_| Sub::Empty);
                if let Some(l) = kept {
                    children[nibble(&l.key, path.depth) as usize] = Sub::Leaf(l);
                }
                self.update_children(version, path, children, writes, None, out)
            }
        }
    }

    /// Applies `writes` to the children of the internal node at `path`
    /// (stored at version `old`, or new) and writes the node, unless it is
    /// left empty or with one leaf, which then moves up.
    fn update_children(
        &self,
        version: u64,
        path: Path32,
        mut children: [Sub; 16],
        writes: &[Write],
        old: Option<u64>,
        out: &mut Out,
    ) -> Result<Sub> {
        let mut groups: Vec<(usize, &[Write])> = Vec::with_capacity(16);
        let mut rest = writes;
        while let Some(first) = rest.first() {
            let n = nibble(&first.0, path.depth);
            let len = rest.partition_point(|w| nibble(&w.0, path.depth) <= n);
            groups.push((n as usize, &rest[..len]));
            rest = &rest[len..];
        }
        if path.depth == 0 && writes.len() >= 256 {
            let inputs: Vec<(usize, Sub, &[Write])> = groups
                .into_iter()
                .map(|(n, w)| (n, std::mem::replace(&mut children[n], Sub::Empty), w))
                .collect();
            let results: Vec<Result<(usize, Sub, Out)>> = inputs
                .into_par_iter()
                .map(|(n, existing, w)| {
                    let mut o = Out::default();
                    let sub = self.update(version, path.child(n as u8), existing, w, &mut o)?;
                    Ok((n, sub, o))
                })
                .collect();
            for r in results {
                let (n, sub, o) = r?;
                children[n] = sub;
                out.merge(o);
            }
        } else {
            for (n, w) in groups {
                let existing = std::mem::replace(&mut children[n], Sub::Empty);
                children[n] = self.update(version, path.child(n as u8), existing, w, out)?;
            }
        }

        let occupied = children.iter().filter(|c| !matches!(c, Sub::Empty)).count();
        let stale_old = |out: &mut Out| {
            if let Some(v) = old {
                out.stale(version, STALE_NODE, &path.node_key(v));
            }
        };
        if path.depth > 0 {
            if occupied == 0 {
                stale_old(out);
                return Ok(Sub::Empty);
            }
            if occupied == 1 {
                let (n, only) = children
                    .iter()
                    .enumerate()
                    .find(|c| !matches!(c.1, Sub::Empty))
                    .expect("one child");
                let lone = match only {
                    Sub::Leaf(l) => Some(*l),
                    Sub::KeptLeaf(c) => Some(self.read_leaf(&path.child(n as u8), c.version)?),
                    _ => None,
                };
                if let Some(l) = lone {
                    stale_old(out);
                    return Ok(Sub::Leaf(l));
                }
            }
        }
        let mut node = Internal::default();
        for (n, child) in children.iter().enumerate() {
            node.slots[n] = match child {
                Sub::Empty => None,
                Sub::KeptLeaf(c) | Sub::Internal(c) => Some(*c),
                Sub::Leaf(l) => {
                    let here = path.depth + 1;
                    let node_version = match l.stored {
                        Some((v, d)) if d == here => v,
                        stored => {
                            if let Some((v, d)) = stored {
                                out.stale(version, STALE_NODE, &Path32::of(&l.key, d).node_key(v));
                            }
                            out.nodes
                                .push((path.child(n as u8).node_key(version), l.encode()));
                            version
                        }
                    };
                    Some(Child {
                        hash: l.hash(),
                        version: node_version,
                        leaf: true,
                    })
                }
            };
        }
        let hash = node.tree()[1];
        stale_old(out);
        out.nodes.push((path.node_key(version), node.encode()));
        Ok(Sub::Internal(Child {
            hash,
            version,
            leaf: false,
        }))
    }

    /// Writes version `version` (the previous one is `version - 1`, or
    /// none when `version` is the first) and syncs the WAL.
    fn commit(&self, version: u64, ops: Ops) -> Result<Hash> {
        // The last write of a key wins.
        let (writes, hashed) = by_key_hash(ops);
        // The root is always an internal node, written at every version.
        let mut out = Out::default();
        let mut children: [Sub; 16] = std::array::from_fn(|_| Sub::Empty);
        let previous = self
            .tuned
            .db
            .get_pinned_cf(self.cf(META)?, (version - 1).to_be_bytes())?
            .is_some()
            .then_some(version - 1);
        if let Some(p) = previous {
            let node = self.read_internal(&Path32::ROOT, p)?;
            for (n, slot) in node.slots.iter().enumerate() {
                if let Some(c) = slot {
                    children[n] = if c.leaf {
                        Sub::KeptLeaf(*c)
                    } else {
                        Sub::Internal(*c)
                    };
                }
            }
        }
        let root = match self.update_children(
            version,
            Path32::ROOT,
            children,
            &hashed,
            previous,
            &mut out,
        )? {
            Sub::Internal(c) => c.hash,
            _ => bail!("rocksdb baseline: the root is not an internal node"),
        };

        let mut batch = WriteBatch::default();
        let (nodes, values, stale, meta) = (
            self.cf(NODES)?,
            self.cf(VALUES)?,
            self.cf(STALE)?,
            self.cf(META)?,
        );
        for (k, v) in &out.nodes {
            batch.put_cf(nodes, k, v);
        }
        for k in &out.stale {
            batch.put_cf(stale, k, []);
        }
        let mut old = Out::default();
        for (k, v) in &writes {
            let vk = value_key(k, version);
            match v {
                Some(v) => {
                    let mut e = Vec::with_capacity(1 + v.len());
                    e.push(1);
                    e.extend_from_slice(v);
                    batch.put_cf(values, vk, e);
                }
                None => {
                    batch.put_cf(values, vk, [0]);
                    // A tombstone is needed only by versions below its own.
                    old.stale(version, STALE_VALUE, &vk);
                }
            }
        }
        for k in &old.stale {
            batch.put_cf(stale, k, []);
        }
        batch.put_cf(meta, version.to_be_bytes(), root);
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.tuned.db.write_opt(batch, &wo)?;
        Ok(root)
    }

    fn get(&self, key: &[u8], version: u64) -> Result<Option<Vec<u8>>> {
        let kh = key_hash(key);
        let mut ro = ReadOptions::default();
        ro.set_prefix_same_as_start(true);
        let mut it = self.tuned.db.raw_iterator_cf_opt(self.cf(VALUES)?, ro);
        it.seek_for_prev(value_key(&kh, version));
        match (it.key(), it.value()) {
            (Some(k), Some(v)) if k.len() == 40 && k[..32] == kh[..] => match v.first() {
                Some(1) => Ok(Some(v[1..].to_vec())),
                Some(0) => Ok(None),
                _ => bail!("rocksdb baseline: bad value entry"),
            },
            _ => {
                it.status()?;
                Ok(None)
            }
        }
    }

    fn root(&self, version: u64) -> Result<Hash> {
        let bytes = self
            .tuned
            .db
            .get_pinned_cf(self.cf(META)?, version.to_be_bytes())?
            .ok_or_else(|| anyhow!("rocksdb baseline: version {version} is not retained"))?;
        Ok(bytes[..].try_into()?)
    }

    /// The inclusion or exclusion proof of `key` at `version`, in Verity's
    /// proof format (`docs/format.md` §7.3).
    fn prove(&self, key: &[u8], version: u64) -> Result<Proof> {
        self.root(version)?;
        let kh = key_hash(key);
        let root = self.read_internal(&Path32::ROOT, version)?;
        let mut nodes = Vec::new();
        self.prove_node(&kh, &Path32::ROOT, &root, &mut nodes)?;
        Ok(Proof::from(ProofImage { nodes }))
    }

    fn prove_node(
        &self,
        kh: &KeyHash,
        path: &Path32,
        node: &Internal,
        out: &mut Vec<ProofNode>,
    ) -> Result<()> {
        let tree = node.tree();
        let target = 16 + nibble(kh, path.depth) as usize;
        // Walk the binary tree from its top (index 1) toward the target
        // slot, in preorder: a left sibling is written before the path
        // side, a right sibling after all of it.
        let mut i = 1;
        let mut pending = Vec::with_capacity(4);
        loop {
            if tree[i] == EMPTY {
                out.push(ProofNode::Empty);
                break;
            }
            if i >= 16 {
                let n = i - 16;
                let child = node.slots[n].expect("a non-empty slot");
                let child_path = path.child(n as u8);
                if child.leaf {
                    let l = self.read_leaf(&child_path, child.version)?;
                    out.push(ProofNode::Leaf {
                        key_hash: l.key,
                        value_hash: l.value,
                    });
                } else {
                    let next = self.read_internal(&child_path, child.version)?;
                    self.prove_node(kh, &child_path, &next, out)?;
                }
                break;
            }
            out.push(ProofNode::Branch);
            // The level of `i` in the binary tree (the top is 0), and
            // whether the target lies under its left child.
            let level = (usize::BITS - 1 - i.leading_zeros()) as usize;
            let left = 2 * i;
            let go_left = target >> (3 - level) == left;
            let side = |h: Hash| {
                if h == EMPTY {
                    ProofNode::Empty
                } else {
                    ProofNode::Hash(h)
                }
            };
            if go_left {
                pending.push(side(tree[left + 1]));
                i = left;
            } else {
                out.push(side(tree[left]));
                i = left + 1;
            }
        }
        // Right siblings come after the whole left side, innermost first.
        while let Some(p) = pending.pop() {
            out.push(p);
        }
        Ok(())
    }

    fn prune(&self, floor: u64) -> Result<()> {
        self.tuned.prune(floor, |tag| match tag {
            STALE_NODE => NODES,
            _ => VALUES,
        })
    }
}

/// The RocksDB-layered backend.
pub(crate) struct RocksBackend {
    store: Arc<Store>,
    commits: CommitThread,
    settings: String,
}

impl RocksBackend {
    /// Opens (creates) the store in `dir`; keeps `retain` versions when
    /// given.
    pub(crate) fn open(
        dir: &Path,
        cache_bytes: usize,
        direct_io: bool,
        retain: Option<u64>,
    ) -> Result<RocksBackend> {
        let tuned = TunedDb::open(
            "rocksdb baseline",
            dir,
            cache_bytes,
            direct_io,
            &[(NODES, false), (VALUES, true)],
        )?;
        let store = Arc::new(Store { tuned });
        let latest = store.tuned.latest()?;
        let worker = store.clone();
        let commits = CommitThread::start(
            "rocksdb baseline",
            latest,
            Box::new(move |version, ops, progress: &CommitProgress| {
                let root = worker.commit(version, ops)?;
                if let Some(keep) = retain {
                    let floor = (version + 1).saturating_sub(keep);
                    if progress.raise_floor(floor) {
                        worker.prune(floor)?;
                    }
                }
                Ok(root)
            }),
        )?;
        Ok(RocksBackend {
            store,
            commits,
            settings: rocks_tuning::settings(cache_bytes, direct_io),
        })
    }
}

struct RocksReader {
    store: Arc<Store>,
    version: u64,
}

impl Reader for RocksReader {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.store.get(key, self.version)
    }

    fn prove(&self, key: &[u8]) -> Result<Box<dyn BenchProof>> {
        Ok(Box::new(self.store.prove(key, self.version)?))
    }

    fn root(&self) -> Result<Hash> {
        self.store.root(self.version)
    }
}

impl Backend for RocksBackend {
    fn name(&self) -> &'static str {
        "rocksdb"
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
        Ok(Arc::new(RocksReader {
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
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::backend::MemoryBackend;

    /// Small key sets and skewed batches, so leaves move down and up,
    /// subtrees empty and refill and keys come back after deletes: every
    /// version's root, value and proof must equal the in-memory trie's.
    #[test]
    fn agrees_with_the_in_memory_trie_version_by_version() {
        let seed = verity_testkit::seed("rocksdb_baseline_agrees");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let tmp = tempfile::tempdir().expect("tempdir");
        let retain = 6;
        let rocks = RocksBackend::open(tmp.path(), 8 << 20, false, Some(retain)).expect("open");
        let memory = MemoryBackend::new(Some(retain));
        // Keys sharing long key-hash prefixes are rare at this size, so
        // the pool is small and reused.
        let pool: Vec<Vec<u8>> = (0..48u32).map(|i| i.to_le_bytes().to_vec()).collect();
        let versions = 60 * verity_testkit::scale() as u64;
        for v in 1..=versions {
            let n = if v % 10 == 0 {
                300
            } else {
                rng.gen_range(0..8)
            };
            let mut ops: Ops = Vec::new();
            for _ in 0..n {
                let k = pool[rng.gen_range(0..pool.len())].clone();
                if rng.gen_bool(0.35) {
                    ops.push((k, None));
                } else {
                    ops.push((k, Some(vec![rng.gen::<u8>(); rng.gen_range(0..4)])));
                }
            }
            let a = rocks
                .commit(ops.clone())
                .expect("commit")
                .wait()
                .expect("wait");
            let b = memory.commit(ops).expect("commit").wait().expect("wait");
            assert_eq!(a, b, "root of version {v} (seed {seed})");
            // Every retained version reads and proves the same.
            let oldest = rocks.oldest();
            assert_eq!(oldest, memory.oldest(), "floor at version {v}");
            for at in oldest..=v {
                let (r, m) = (
                    rocks.reader(at).expect("reader"),
                    memory.reader(at).expect("reader"),
                );
                assert_eq!(r.root().expect("root"), m.root().expect("root"));
                for k in pool.iter().step_by(5) {
                    assert_eq!(
                        r.get(k).expect("get"),
                        m.get(k).expect("get"),
                        "v{at} (seed {seed})"
                    );
                    let p = r.prove(k).expect("prove");
                    assert_eq!(p.encode(), m.prove(k).expect("prove").encode(), "v{at}");
                    let value = r.get(k).expect("get");
                    p.verify(&r.root().expect("root"), k, value.as_deref())
                        .expect("verifies");
                }
            }
            if oldest > 1 {
                assert!(
                    rocks.reader(oldest - 1).is_err(),
                    "pruned version {} readable",
                    oldest - 1
                );
            }
        }
        rocks.close().expect("close");
    }

    #[test]
    fn pruning_deletes_every_stale_node_and_value() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let rocks = RocksBackend::open(tmp.path(), 8 << 20, false, Some(1)).expect("open");
        let mut rng = ChaCha8Rng::seed_from_u64(verity_testkit::seed("rocksdb_prune"));
        for _ in 0..30 {
            let ops: Ops = (0..50)
                .map(|_| {
                    let k = vec![rng.gen_range(0..100u8)];
                    (k, rng.gen_bool(0.8).then(|| vec![1, 2, 3]))
                })
                .collect();
            rocks.commit(ops).expect("commit").wait().expect("wait");
        }
        rocks.close().expect("close");
        // With one version retained, what is left is exactly the latest
        // trie: its nodes and one value entry per live key.
        let store = &rocks.store;
        let count = |cf: &str| {
            let mut it = store.tuned.db.raw_iterator_cf(store.cf(cf).expect("cf"));
            it.seek_to_first();
            let mut n = 0;
            while it.valid() {
                n += 1;
                it.next();
            }
            n
        };
        let latest = rocks.commits.progress().done();
        let reader = rocks.reader(latest).expect("reader");
        let live = (0..100u8)
            .filter(|k| reader.get(&[*k]).expect("get").is_some())
            .count();
        assert_eq!(count(VALUES), live);
        let mut nodes = 0;
        let mut stack = vec![(Path32::ROOT, latest)];
        while let Some((path, v)) = stack.pop() {
            nodes += 1;
            let node = store.read_internal(&path, v).expect("node");
            for (n, c) in node.slots.iter().enumerate() {
                match c {
                    Some(c) if c.leaf => nodes += 1,
                    Some(c) => stack.push((path.child(n as u8), c.version)),
                    None => {}
                }
            }
        }
        assert_eq!(count(NODES), nodes);
        assert_eq!(count(META), 1);
    }
}
