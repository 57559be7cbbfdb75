//! `--backend nomt`: NOMT (the `nomt` crate), a binary Merkle trie over
//! blake3 whose pages live in an on-disk hash table, with values in its
//! own B-tree, committed through its write-ahead log.
//!
//! Keys are the same blake3 key hashes as the other backends' (NOMT's key
//! paths). Its roots and proofs are its own (a binary trie, not Verity's
//! 16-ary one), so they are checked against its own earlier runs, never
//! against Verity's. One session per block: a commit thread begins a
//! session, finishes it with the block's writes (merkleized on
//! `commit_concurrency` workers) and commits it, which returns once the
//! WAL, the B-tree, the metadata and the hash table are synced.
//!
//! NOMT keeps the latest version only: historical reads and proofs are
//! not available. A reader is a session, and a commit waits for every
//! session to end (and a session for a running commit), so reads never
//! run during a commit. On Linux NOMT does all its I/O through io_uring,
//! with O_DIRECT files (no OS page cache, whatever `--direct-io` says).

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use bitvec::order::Msb0;
use bitvec::view::BitView;
use nomt::hasher::Blake3Hasher;
use nomt::proof::{PathProof, PathProofTerminal};
use nomt::trie::LeafData;
use nomt::{IoUringPermission, KeyReadWrite, Nomt, Options, Session, SessionParams};
use parking_lot::Mutex;
use verity::{key_hash, value_hash, Hash};

use super::backend::{
    dedup_by_key_hash, Backend, BenchProof, CommitProgress, CommitThread, Ops, Pending, Reader,
};

const NAME: &str = "nomt backend";

/// Page elision in NOMT 1.0.5 (its constant is not public): the hash
/// table stores a trie page (4 KiB, six levels of the binary trie) only
/// if its subtree holds at least this many leaves; smaller subtrees are
/// rebuilt from the values when needed.
const ELISION_THRESHOLD: u64 = 20;

/// Expected stored pages for `keys` uniformly hashed keys: a page at
/// level `l` covers `keys / 64^l` keys on average, and is stored when a
/// Poisson draw of that mean reaches the elision threshold.
fn expected_pages(keys: u64) -> f64 {
    let mut pages = 0.0;
    let mut count = 1.0f64;
    while count <= 64f64.powi(6) {
        let mean = keys as f64 / count;
        // P[Poisson(mean) >= threshold] = 1 - sum of the first terms.
        let (mut term, mut below) = ((-mean).exp(), 0.0);
        for i in 0..ELISION_THRESHOLD {
            below += term;
            term *= mean / (i + 1) as f64;
        }
        pages += count * (1.0 - below).max(0.0);
        count *= 64.0;
    }
    pages
}

/// Hash-table buckets for a store that will hold up to `keys` keys: the
/// pages expected for a quarter more keys than that (the blocks insert),
/// at most half full (NOMT's documentation warns that performance
/// degrades beyond 90% occupancy and that a full table fails commits; the
/// table cannot grow while open), in whole 4096-bucket steps.
pub(crate) fn buckets_for(keys: u64) -> u32 {
    let pages = expected_pages(keys.saturating_add(keys / 4)) * 2.0;
    let steps = (pages / 4096.0).ceil().max(1.0);
    (steps * 4096.0).min(u32::MAX as f64) as u32
}

/// A proof of NOMT's trie, checked with its verifier.
struct NomtProof(PathProof);

impl BenchProof for NomtProof {
    fn encode(&self) -> Vec<u8> {
        // NOMT has no wire format without its serde or borsh features, so
        // a compact one: the sibling hashes, then the terminal: 1, a
        // leaf's key path and value hash; or 0, the depth (u16 LE) and
        // the path bytes of the empty subtree the key would be in.
        let mut out = Vec::with_capacity(32 * self.0.siblings.len() + 65);
        for s in &self.0.siblings {
            out.extend_from_slice(s);
        }
        match &self.0.terminal {
            PathProofTerminal::Leaf(leaf) => {
                out.push(1);
                out.extend_from_slice(&leaf.key_path);
                out.extend_from_slice(&leaf.value_hash);
            }
            PathProofTerminal::Terminator(position) => {
                let depth = position.depth();
                out.push(0);
                out.extend_from_slice(&depth.to_le_bytes());
                out.extend_from_slice(&position.raw_path()[..(depth as usize).div_ceil(8)]);
            }
        }
        out
    }

    fn verify(&self, root: &Hash, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        let path = key_hash(key);
        let verified = self
            .0
            .verify::<Blake3Hasher>(path.view_bits::<Msb0>(), *root)
            .map_err(|e| anyhow!("nomt proof: {e:?}"))?;
        let confirmed = match value {
            Some(v) => verified.confirm_value(&LeafData {
                key_path: path,
                value_hash: value_hash(v),
            }),
            None => verified.confirm_nonexistence(&path),
        }
        .map_err(|e| anyhow!("nomt proof: {e:?}"))?;
        if !confirmed {
            bail!("nomt proof: the proof does not show this value");
        }
        Ok(())
    }
}

/// The NOMT backend.
pub(crate) struct NomtBackend {
    nomt: Arc<Nomt<Blake3Hasher>>,
    commits: CommitThread,
    /// `roots[v - 1]`: the root of version `v`.
    roots: Arc<Mutex<Vec<Hash>>>,
    settings: String,
}

impl NomtBackend {
    /// Opens (creates) a NOMT store in `dir` sized for `keys` keys, with
    /// `cache_bytes` of page and leaf caches.
    pub(crate) fn open(dir: &Path, cache_bytes: usize, keys: u64, seed: u64) -> Result<Self> {
        match nomt::check_iou_permissions() {
            IoUringPermission::Allowed => {}
            IoUringPermission::Denied => bail!(
                "nomt backend: io_uring is denied here (a seccomp profile, e.g. a container's \
                 default, or kernel.io_uring_disabled); NOMT does all its I/O through it on Linux"
            ),
            IoUringPermission::NotSupported => bail!(
                "nomt backend: io_uring with the flags NOMT needs is not supported here (NOMT \
                 needs Linux 6.0 or newer)"
            ),
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cache_mib = (cache_bytes >> 20).max(2);
        let (page_cache, leaf_cache) = (cache_mib - cache_mib / 4, (cache_mib / 4).max(1));
        let buckets = buckets_for(keys);
        let io_workers = 3;
        let mut o = Options::new();
        o.path(dir);
        o.commit_concurrency(cores);
        o.io_workers(io_workers);
        o.hashtable_buckets(buckets);
        let mut bitbox_seed = [0u8; 16];
        bitbox_seed[..8].copy_from_slice(&seed.to_le_bytes());
        o.bitbox_seed(bitbox_seed);
        o.page_cache_size(page_cache);
        o.leaf_cache_size(leaf_cache);
        let nomt = Arc::new(
            Nomt::<Blake3Hasher>::open(o)
                .with_context(|| format!("nomt backend: opening {}", dir.display()))?,
        );
        if !nomt.is_empty() {
            bail!("nomt backend: {} holds a store already", dir.display());
        }
        let roots = Arc::new(Mutex::new(Vec::new()));
        let (worker, worker_roots) = (nomt.clone(), roots.clone());
        let commits = CommitThread::start(
            NAME,
            0,
            Box::new(move |version, ops, _: &CommitProgress| {
                let actuals = dedup_by_key_hash(ops)
                    .into_iter()
                    .map(|(k, v)| (k, KeyReadWrite::Write(v)))
                    .collect();
                let finished = worker
                    .begin_session(SessionParams::default())
                    .finish(actuals)
                    .with_context(|| format!("nomt backend: merkleizing version {version}"))?;
                let root = finished.root().into_inner();
                finished
                    .commit(&worker)
                    .with_context(|| format!("nomt backend: committing version {version}"))?;
                worker_roots.lock().push(root);
                Ok(root)
            }),
        )?;
        Ok(NomtBackend {
            nomt,
            commits,
            roots,
            settings: format!(
                "commit concurrency {cores} (the cores), {io_workers} io_uring workers, \
                 {buckets} hash-table buckets ({} MiB, sized for {keys} keys plus a quarter at \
                 most half full), page cache {page_cache} MiB + leaf cache {leaf_cache} MiB \
                 (plus about 16 MiB of pinned upper levels), O_DIRECT files, one session per \
                 block, WAL synced per commit",
                (buckets as u64 * 4096) >> 20
            ),
        })
    }
}

/// Reads of the latest version through one session.
struct NomtReader {
    session: Session<Blake3Hasher>,
    root: Hash,
}

impl Reader for NomtReader {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.session.read(key_hash(key))
    }

    fn prove(&self, key: &[u8]) -> Result<Box<dyn BenchProof>> {
        Ok(Box::new(NomtProof(self.session.prove(key_hash(key))?)))
    }

    fn root(&self) -> Result<Hash> {
        Ok(self.root)
    }
}

impl Backend for NomtBackend {
    fn name(&self) -> &'static str {
        "nomt"
    }

    fn family(&self) -> &'static str {
        "nomt (binary, blake3)"
    }

    fn history(&self) -> bool {
        false
    }

    fn settings(&self) -> String {
        self.settings.clone()
    }

    fn commit(&self, ops: Ops) -> Result<Box<dyn Pending>> {
        self.commits.commit(ops)
    }

    /// A session on `version`, once it is committed; only the latest
    /// version can be read. A commit waits until the session ends: do not
    /// hold the reader while waiting for a commit.
    fn reader(&self, version: u64) -> Result<Arc<dyn Reader>> {
        let progress = self.commits.progress();
        progress.wait_for(version)?;
        let latest = progress.done();
        if version != latest || version == 0 {
            bail!("nomt backend: only the latest version ({latest}) can be read, not {version}");
        }
        let session = self.nomt.begin_session(SessionParams::default());
        let root = session.prev_root().into_inner();
        let expected = self.roots.lock().get(version as usize - 1).copied();
        if expected != Some(root) {
            bail!("nomt backend: version {version} was superseded while opening a reader");
        }
        Ok(Arc::new(NomtReader { session, root }))
    }

    fn oldest(&self) -> u64 {
        self.commits.progress().done().max(1)
    }

    fn disk_reads(&self) -> Option<u64> {
        None
    }

    fn reads_staged(&self) -> bool {
        false
    }

    fn close(&self) -> Result<()> {
        self.commits.close()?;
        let u = self.nomt.hash_table_utilization();
        println!(
            "nomt: hash table {} of {} buckets occupied ({:.1}%)",
            u.occupied,
            u.capacity,
            100.0 * u.occupancy_rate()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_table_is_sized_at_most_half_full_for_a_quarter_more_keys() {
        for keys in [1_000u64, 100_000, 1_000_000, 10_000_000] {
            let buckets = buckets_for(keys) as f64;
            assert!(buckets >= 2.0 * expected_pages(keys + keys / 4), "{keys}");
            assert_eq!(buckets as u64 % 4096, 0);
        }
        // Three full levels (1 + 64 + 4096 pages) at 1M keys; the fourth
        // level (262,144 pages) fills up by 10M.
        assert!((expected_pages(1_000_000) - 4161.0).abs() < 1.0);
        assert!(expected_pages(10_000_000) > 260_000.0);
    }
}
