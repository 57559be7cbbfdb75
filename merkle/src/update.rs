//! Batch update: a version's sorted changes in, the new root and the page
//! records to store out.
//!
//! It runs in two phases. The first reads every page the update touches,
//! one trie level of pages at a time, each level in one
//! [`PageSource::pages`] call so a store can submit those reads together.
//! The second is pure computation over the pages read: it rewrites the
//! touched paths, keeps the trie canonical (a lone leaf moves up, an empty
//! subtree disappears) and rehashes only the binary nodes above changed
//! slots. Subtrees under different nibbles of the top levels are updated on
//! different threads.

use std::ops::Range;
use std::sync::Arc;

use rayon::prelude::*;
use rustc_hash::FxHashMap as HashMap;
use verity_codec::page::{PageDelta, PageRecord};
use verity_codec::varint;

use crate::error::MerkleError;
use crate::hash::{nibble, Hash, KeyHash, ValueHash};
use crate::page::{ChainInfo, Inner, Leaf, Node, Page, VersionedPage, PAGE_LEVELS};
use crate::path::PagePath;
use crate::source::PageSource;

/// One change of a batch: a key hash and its new value hash, or `None` to
/// delete the key.
pub type Update = (KeyHash, Option<ValueHash>);

/// When a page is written whole (a base) instead of as a delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaPolicy {
    /// Most deltas after a base before the next base is written.
    pub max_deltas: u32,
    /// A base is also written once the deltas since the last base would
    /// reach this percentage of the base's size.
    pub max_chain_percent: u32,
}

impl Default for DeltaPolicy {
    /// Eight deltas at most, and never more delta bytes than one base.
    fn default() -> Self {
        DeltaPolicy {
            max_deltas: 8,
            max_chain_percent: 100,
        }
    }
}

/// The kind of a page record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A full page.
    Base,
    /// Changes against the previous version of the page.
    Delta,
    /// The page no longer exists.
    Removed,
}

/// A page record to store under `(path, version)`.
#[derive(Debug, Clone)]
pub struct PageWrite {
    /// The page's path.
    pub path: PagePath,
    /// The page as of the update's version (`None` when removed), for caches.
    pub page: Option<Arc<Page>>,
    /// The encoded [`PageRecord`].
    pub record: Vec<u8>,
    /// What the record holds.
    pub kind: RecordKind,
    /// The page's delta chain including this record.
    pub chain: ChainInfo,
    /// The version of the record this one follows (the page as read), if
    /// any: a delta applies to exactly that record, so a store must refuse
    /// the write when it holds a newer one.
    pub previous: Option<u64>,
}

/// A page record that no version from `superseded_at` on reads.
///
/// It may still be a link of a delta chain that later versions read, so a
/// store drops it only after rewriting later records that depend on it (or
/// once they are stale too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StalePage {
    /// The page's path.
    pub path: PagePath,
    /// The version that wrote the stale record.
    pub version: u64,
    /// The version whose update replaced or removed it.
    pub superseded_at: u64,
}

/// Counts of an update's work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateStats {
    /// Pages read from the source.
    pub pages_read: usize,
    /// Base pages written.
    pub bases: usize,
    /// Deltas written.
    pub deltas: usize,
    /// Pages removed.
    pub removed: usize,
    /// Time spent reading pages from the source.
    pub read_time: std::time::Duration,
    /// Time spent computing the new pages, hashes and records.
    pub compute_time: std::time::Duration,
}

/// The result of a batch update.
#[derive(Debug, Clone)]
pub struct UpdateOutput {
    /// The version written.
    pub version: u64,
    /// The root hash of that version.
    pub root: Hash,
    /// Page records to store under `(path, version)`.
    pub writes: Vec<PageWrite>,
    /// Records superseded by this version.
    pub stale: Vec<StalePage>,
    /// Counts of the work done.
    pub stats: UpdateStats,
}

/// Below this nibble depth, subtrees with enough updates run in parallel.
const PARALLEL_DEPTH: usize = 2;
/// Fewest updates under a node for its children to be split across threads.
const PARALLEL_MIN: usize = 256;

struct Ctx<'a> {
    pages: &'a HashMap<PagePath, VersionedPage>,
    version: u64,
    read_version: u64,
    policy: DeltaPolicy,
}

#[derive(Default)]
struct Out {
    writes: Vec<PageWrite>,
    stale: Vec<StalePage>,
}

impl Out {
    fn absorb(&mut self, other: Out) {
        self.writes.extend(other.writes);
        self.stale.extend(other.stale);
    }
}

/// Applies `updates` (strictly sorted by key hash) to the trie as of
/// `read_version`, producing version `write_version`.
pub fn apply<S: PageSource + ?Sized>(
    source: &S,
    policy: DeltaPolicy,
    read_version: u64,
    write_version: u64,
    updates: &[Update],
) -> Result<UpdateOutput, MerkleError> {
    if write_version <= read_version {
        return Err(MerkleError::InvalidVersion(
            "the version written must be newer than the one read",
        ));
    }
    if let Some(i) = updates.windows(2).position(|w| w[0].0 >= w[1].0) {
        return Err(MerkleError::UnsortedUpdates { index: i + 1 });
    }
    let started = std::time::Instant::now();
    let pages = prefetch(source, read_version, updates)?;
    let read_time = started.elapsed();
    let ctx = Ctx {
        pages: &pages,
        version: write_version,
        read_version,
        policy,
    };
    let mut out = Out::default();
    update_page(&ctx, PagePath::ROOT, updates, &mut out)?;
    let root = match out.writes.iter().find(|w| w.path.is_root()) {
        Some(w) => w.page.as_ref().map_or(crate::hash::EMPTY, |p| p.hash()),
        None => pages
            .get(&PagePath::ROOT)
            .map_or(crate::hash::EMPTY, |p| p.page.hash()),
    };
    let mut stats = UpdateStats {
        pages_read: pages.len(),
        read_time,
        compute_time: started.elapsed() - read_time,
        ..UpdateStats::default()
    };
    for w in &out.writes {
        match w.kind {
            RecordKind::Base => stats.bases += 1,
            RecordKind::Delta => stats.deltas += 1,
            RecordKind::Removed => stats.removed += 1,
        }
    }
    Ok(UpdateOutput {
        version: write_version,
        root,
        writes: out.writes,
        stale: out.stale,
        stats,
    })
}

/// The ranges of `ups` (sorted) under each nibble at `depth`.
fn nibble_groups(ups: &[(KeyHash, impl Sized)], depth: usize) -> [Option<Range<usize>>; 16] {
    let mut groups: [Option<Range<usize>>; 16] = Default::default();
    let mut start = 0;
    while start < ups.len() {
        let n = nibble(&ups[start].0, depth);
        let end = start + ups[start..].partition_point(|u| nibble(&u.0, depth) == n);
        groups[usize::from(n)] = Some(start..end);
        start = end;
    }
    groups
}

/// Reads every page the update will touch, a level of pages per call.
fn prefetch<S: PageSource + ?Sized>(
    source: &S,
    version: u64,
    updates: &[Update],
) -> Result<HashMap<PagePath, VersionedPage>, MerkleError> {
    let mut pages = HashMap::default();
    let Some(root) = source.page(&PagePath::ROOT, version)? else {
        return Ok(pages);
    };
    pages.insert(PagePath::ROOT, root);
    let mut frontier = vec![(PagePath::ROOT, 0..updates.len())];
    while !frontier.is_empty() {
        let mut wanted = Vec::new();
        for (path, range) in &frontier {
            let page = &pages[path].page;
            child_pages(&page.root, path.len(), updates, range.clone(), &mut wanted);
        }
        if wanted.is_empty() {
            break;
        }
        let paths: Vec<PagePath> = wanted.iter().map(|w| w.0).collect();
        let got = source.pages(&paths, version)?;
        frontier = Vec::with_capacity(wanted.len());
        for ((path, range), page) in wanted.into_iter().zip(got) {
            let page = page.ok_or(MerkleError::MissingPage { path, version })?;
            pages.insert(path, page);
            frontier.push((path, range));
        }
    }
    Ok(pages)
}

fn child_pages(
    inner: &Inner,
    depth: usize,
    updates: &[Update],
    range: Range<usize>,
    wanted: &mut Vec<(PagePath, Range<usize>)>,
) {
    let groups = nibble_groups(&updates[range.clone()], depth);
    for (n, group) in groups.into_iter().enumerate() {
        let Some(g) = group else { continue };
        let sub = range.start + g.start..range.start + g.end;
        match &inner.children[n] {
            Node::Inner(child) => child_pages(child, depth + 1, updates, sub, wanted),
            Node::Page(_) => {
                wanted.push((PagePath::from_key(&updates[sub.start].0, depth + 1), sub))
            }
            Node::Empty | Node::Leaf(_) => {}
        }
    }
}

/// Updates the page at `path` and returns what its parent slot now holds.
fn update_page(
    ctx: &Ctx<'_>,
    path: PagePath,
    ups: &[Update],
    out: &mut Out,
) -> Result<Node, MerkleError> {
    let old = ctx.pages.get(&path);
    if old.is_none() && !path.is_root() {
        return Err(MerkleError::MissingPage {
            path,
            version: ctx.read_version,
        });
    }
    let mut root = old.map(|o| o.page.root.clone()).unwrap_or_default();
    update_inner(ctx, &mut root, path.len(), 0, ups, out)?;
    if !path.is_root() {
        if let Some(node) = collapse(&mut root) {
            emit(ctx, path, old, None, out);
            return Ok(node);
        }
    }
    let hash = root.hash();
    emit(ctx, path, old, Some(Page { root }), out);
    Ok(Node::Page(hash))
}

/// What an internal node that is no longer canonical becomes: `Empty` when
/// no slot is occupied, its leaf when a lone leaf is left (the leaf moves
/// up); `None` while it still holds two keys or more.
fn collapse(inner: &mut Inner) -> Option<Node> {
    if inner.occupied() == 0 {
        return Some(Node::Empty);
    }
    inner
        .lone_leaf()
        .map(|i| std::mem::take(&mut inner.children[i]))
}

/// Runs `f` on every child of `inner` that has a group, in parallel near
/// the top of the trie, and rehashes the node.
fn for_each_group<T: Sync>(
    inner: &mut Inner,
    depth: usize,
    items: &[T],
    groups: [Option<Range<usize>>; 16],
    out: &mut Out,
    f: impl Fn(&mut Node, &[T], &mut Out) -> Result<(), MerkleError> + Sync,
) -> Result<(), MerkleError> {
    let mut dirty = 0u16;
    for (n, g) in groups.iter().enumerate() {
        if g.is_some() {
            dirty |= 1 << n;
        }
    }
    if depth < PARALLEL_DEPTH && items.len() >= PARALLEL_MIN {
        let results: Vec<Result<Out, MerkleError>> = inner
            .children
            .par_iter_mut()
            .zip(groups.par_iter())
            .filter_map(|(child, g)| {
                g.as_ref().map(|g| {
                    let mut o = Out::default();
                    f(child, &items[g.clone()], &mut o).map(|()| o)
                })
            })
            .collect();
        for r in results {
            out.absorb(r?);
        }
    } else {
        for (child, g) in inner.children.iter_mut().zip(groups) {
            if let Some(g) = g {
                f(child, &items[g], out)?;
            }
        }
    }
    inner.rehash(dirty);
    Ok(())
}

/// Applies `ups` below the internal node `inner` at nibble `depth`, which
/// sits `rel` levels below its page's root.
fn update_inner(
    ctx: &Ctx<'_>,
    inner: &mut Inner,
    depth: usize,
    rel: usize,
    ups: &[Update],
    out: &mut Out,
) -> Result<(), MerkleError> {
    let groups = nibble_groups(ups, depth);
    for_each_group(inner, depth, ups, groups, out, |child, sub, out| {
        update_slot(ctx, child, depth + 1, rel + 1, sub, out)
    })
}

/// Applies `ups` to the node in `slot`, at nibble `depth`, `rel` levels
/// below its page's root.
fn update_slot(
    ctx: &Ctx<'_>,
    slot: &mut Node,
    depth: usize,
    rel: usize,
    ups: &[Update],
    out: &mut Out,
) -> Result<(), MerkleError> {
    match slot {
        Node::Inner(shared) => {
            let inner = Arc::make_mut(shared);
            update_inner(ctx, inner, depth, rel, ups, out)?;
            if let Some(node) = collapse(inner) {
                *slot = node;
            }
        }
        Node::Page(_) => {
            let path = PagePath::from_key(&ups[0].0, depth);
            *slot = update_page(ctx, path, ups, out)?;
        }
        Node::Leaf(_) | Node::Empty => {
            let existing = match std::mem::take(slot) {
                Node::Leaf(l) => Some(l),
                _ => None,
            };
            let leaves = merge(existing.as_ref(), ups);
            *slot = build(ctx, depth, rel, &leaves, out)?;
        }
    }
    Ok(())
}

/// The leaves of a slot that held `existing` after applying `ups`.
fn merge(existing: Option<&Leaf>, ups: &[Update]) -> Vec<(KeyHash, ValueHash)> {
    let mut leaves = Vec::with_capacity(ups.len() + 1);
    let mut pending = existing.map(|l| (l.key_hash, l.value_hash));
    for (k, v) in ups {
        if let Some(p) = pending {
            if p.0 < *k {
                leaves.push(p);
                pending = None;
            } else if p.0 == *k {
                pending = None;
            }
        }
        if let Some(v) = v {
            leaves.push((*k, *v));
        }
    }
    leaves.extend(pending);
    leaves
}

/// Builds the canonical subtree holding `leaves` (sorted, unique) at nibble
/// `depth`, `rel` levels below its page's root.
fn build(
    ctx: &Ctx<'_>,
    depth: usize,
    rel: usize,
    leaves: &[(KeyHash, ValueHash)],
    out: &mut Out,
) -> Result<Node, MerkleError> {
    match leaves {
        [] => Ok(Node::Empty),
        [(k, v)] => Ok(Node::Leaf(Leaf::new(*k, *v))),
        _ if depth >= 64 => Err(MerkleError::InvalidArgument(
            "two leaves share a whole key hash",
        )),
        _ if rel == PAGE_LEVELS => {
            let path = PagePath::from_key(&leaves[0].0, depth);
            let mut root = Inner::default();
            build_children(ctx, &mut root, depth, 0, leaves, out)?;
            let hash = root.hash();
            emit(ctx, path, None, Some(Page { root }), out);
            Ok(Node::Page(hash))
        }
        _ => {
            let mut inner = Inner::default();
            build_children(ctx, &mut inner, depth, rel, leaves, out)?;
            Ok(Node::Inner(Arc::new(inner)))
        }
    }
}

fn build_children(
    ctx: &Ctx<'_>,
    inner: &mut Inner,
    depth: usize,
    rel: usize,
    leaves: &[(KeyHash, ValueHash)],
    out: &mut Out,
) -> Result<(), MerkleError> {
    let groups = nibble_groups(leaves, depth);
    for_each_group(inner, depth, leaves, groups, out, |child, sub, out| {
        *child = build(ctx, depth + 1, rel + 1, sub, out)?;
        Ok(())
    })
}

/// About the length of a base record of `terminals` terminals (leaves take
/// 67 bytes, child references 35; the estimate counts leaves).
fn base_len(terminals: usize) -> usize {
    3 + varint::len(terminals as u64) + 67 * terminals
}

/// Records the new state of the page at `path`.
fn emit(
    ctx: &Ctx<'_>,
    path: PagePath,
    old: Option<&VersionedPage>,
    new: Option<Page>,
    out: &mut Out,
) {
    let version = ctx.version;
    let Some(page) = new else {
        if let Some(o) = old {
            out.stale.push(StalePage {
                path,
                version: o.version,
                superseded_at: version,
            });
            out.writes.push(PageWrite {
                path,
                page: None,
                record: PageRecord::Removed.encode(),
                kind: RecordKind::Removed,
                chain: ChainInfo::default(),
                previous: Some(o.version),
            });
        }
        return;
    };
    let mut write = None;
    if let Some(o) = old {
        let changes = page.changes_since(&o.page);
        if changes.is_empty() {
            return;
        }
        out.stale.push(StalePage {
            path,
            version: o.version,
            superseded_at: version,
        });
        let levels = PAGE_LEVELS as u8;
        let record = PageRecord::Delta(PageDelta { levels, changes }).encode();
        let chain_bytes = u64::from(o.chain.delta_bytes) + record.len() as u64;
        let base = base_len(page.terminal_count()) as u64;
        let limit = base * u64::from(ctx.policy.max_chain_percent) / 100;
        if o.chain.deltas < ctx.policy.max_deltas && chain_bytes < limit {
            let chain = ChainInfo {
                deltas: o.chain.deltas + 1,
                delta_bytes: chain_bytes as u32,
            };
            write = Some((record, RecordKind::Delta, chain));
        }
    }
    let (record, kind, chain) = write.unwrap_or_else(|| {
        (
            PageRecord::Base(page.to_image()).encode(),
            RecordKind::Base,
            ChainInfo::default(),
        )
    });
    out.writes.push(PageWrite {
        path,
        page: Some(Arc::new(page)),
        record,
        kind,
        chain,
        previous: old.map(|o| o.version),
    });
}
