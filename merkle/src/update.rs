//! Batch update: a version's sorted changes in, the new root and the page
//! records to store out.
//!
//! It runs in two phases. The first reads every page the update touches,
//! one trie level of pages at a time, each level in one
//! [`PageSource::pages`] call so a store can submit those reads together
//! (a source whose pages are all in memory, one with a
//! [`PageSource::view`], skips it: the second phase reads each page when
//! it reaches it).
//! The second is pure computation over the pages read: it rewrites the
//! touched paths, keeps the trie canonical (a lone leaf moves up, an empty
//! subtree disappears) and rehashes only the binary nodes above changed
//! slots: those of the pages updated in place in batches of a few pages,
//! each level of binary nodes of the batch computed side by side in the
//! CPU's SIMD lanes (`Rehash`), and the leaf hashes of the whole update
//! up front the same way. A page's child pages are written before the
//! page itself (they depend on nothing in it, and it needs their new
//! hashes), on several threads when many updates fall below the page.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use rayon::prelude::*;
use rustc_hash::FxHashMap as HashMap;
use verity_codec::page::{PageDelta, PageRecord, SlotPos, Terminal};
use verity_codec::varint;
use verity_codec::SharedBytes;

use crate::error::MerkleError;
use crate::hash::{leaf_hash_many, nibble, push_block, Hash, KeyHash, ValueHash, EMPTY};
use crate::page::{
    ChainInfo, Dense, InPlace, InPlacePlan, Leaf, LeafId, Node, NodeId, Page, Rehash, Unhashed, Up,
    VersionedPage, PAGE_LEVELS,
};
use crate::path::PagePath;
use crate::source::{PageSource, PageView};

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
    /// 32 deltas at most, and never more delta bytes than one base. The
    /// byte bound decides for small pages (at 1M keys a base of about 1 KiB
    /// takes about 5 deltas of 190 bytes); the count decides for large ones
    /// (at 10M keys a base of about 10 KiB and deltas of about 250 bytes).
    /// There, 32 against 8 wrote 0.72x the bytes an update and left 0.59x
    /// the bytes on disk a live key, at the same `blocks` rate
    /// (BENCHMARKS.md).
    fn default() -> Self {
        DeltaPolicy {
            max_deltas: 32,
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
    /// The encoded [`PageRecord`]. The records of a batch of pages share
    /// one allocation: a store may keep them as they are (each keeps the
    /// whole allocation alive) or copy them.
    pub record: SharedBytes,
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
    /// Time spent reading pages from the source before computing (only
    /// the root page's read when the source is in memory: the other reads
    /// are part of `compute_time`).
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

/// Fewest updates below a page for its child pages to be updated on
/// several threads.
const PARALLEL_MIN: usize = 256;

/// Fewest pages in a level of the prefetch for their walk to run on several
/// threads.
const PARALLEL_WALK: usize = 128;

struct Ctx<'a> {
    /// The pages read before the update: a level at a time, or only the
    /// root page when the source is in memory.
    pages: &'a HashMap<PagePath, VersionedPage>,
    /// The pages not in `pages`, when the source is in memory.
    view: Option<&'a dyn PageView>,
    version: u64,
    read_version: u64,
    policy: DeltaPolicy,
    /// The update's changes, and the leaf hash of each that sets a value
    /// (computed together up front, see [`leaf_hashes`]).
    updates: &'a [Update],
    leaf_hashes: &'a [Hash],
}

impl Ctx<'_> {
    /// The leaf hashes of `ups`, a part of the update's changes (every
    /// slice of changes the update passes around is one).
    fn leaf_hashes_of(&self, ups: &[Update]) -> Cow<'_, [Hash]> {
        // Where `ups` starts in the changes: a slice that starts at an
        // element of the array and ends within it is that part of it.
        let offset = (ups.as_ptr() as usize).wrapping_sub(self.updates.as_ptr() as usize);
        let start = offset / std::mem::size_of::<Update>();
        let within = offset.is_multiple_of(std::mem::size_of::<Update>())
            && start
                .checked_add(ups.len())
                .is_some_and(|end| end <= self.updates.len());
        if within {
            self.leaf_hashes[start..start + ups.len()].into()
        } else {
            // Not a part of the update's changes: computed here.
            leaf_hashes(ups).into()
        }
    }
}

/// The leaf hash of each change that sets a value (`EMPTY` for a delete),
/// computed several side by side ([`leaf_hash_many`]), on several threads
/// for a large update.
fn leaf_hashes(updates: &[Update]) -> Vec<Hash> {
    /// Changes a thread hashes at a time.
    const PIECE: usize = 1024;
    let hash = |ups: &[Update], out: &mut [Hash]| {
        let mut blocks = Vec::with_capacity(ups.len());
        let mut at = Vec::with_capacity(ups.len());
        for (i, (key_hash, value_hash)) in ups.iter().enumerate() {
            if let Some(v) = value_hash {
                push_block(&mut blocks, key_hash, v);
                at.push(i);
            }
        }
        let mut hashes = vec![EMPTY; blocks.len()];
        leaf_hash_many(&blocks, &mut hashes);
        for (i, h) in at.into_iter().zip(hashes) {
            out[i] = h;
        }
    };
    let mut out = vec![EMPTY; updates.len()];
    if updates.len() >= 2 * PIECE {
        updates
            .par_chunks(PIECE)
            .zip(out.par_chunks_mut(PIECE))
            .for_each(|(ups, out)| hash(ups, out));
    } else {
        hash(updates, &mut out);
    }
    out
}

#[derive(Default)]
struct Out {
    writes: Vec<PageWrite>,
    stale: Vec<StalePage>,
    /// Pages read from the source while updating.
    pages_read: usize,
    /// Where the records of the last writes are in the buffer they are
    /// encoded in, until [`write_records`] shares it (empty otherwise).
    ranges: Vec<Range<usize>>,
}

impl Out {
    fn absorb(&mut self, other: Out) {
        debug_assert!(
            self.ranges.is_empty() && other.ranges.is_empty(),
            "records left unshared"
        );
        let pages_read = self.pages_read + other.pages_read;
        if self.writes.is_empty() && self.stale.is_empty() {
            *self = other;
        } else {
            self.writes.extend(other.writes);
            self.stale.extend(other.stale);
        }
        self.pages_read = pages_read;
    }
}

impl Up {
    /// The slot of `page` that holds what this says.
    fn place(self, page: &mut Dense) -> Node {
        match self {
            Up::Empty => Node::Empty,
            Up::Leaf(leaf, hash) => page.put_hashed_leaf(&mut None, leaf, hash),
            Up::Page(hash) => Node::Page(hash),
        }
    }
}

/// A page to write: an existing page and the updates below it, or a new
/// page and its leaves.
enum Job<'u> {
    Update(PagePath, &'u [Update]),
    Build(PagePath, Vec<(KeyHash, ValueHash)>),
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
    if updates.len() >= PARALLEL_MIN && rayon::current_thread_index().is_none() {
        // A large update runs whole on a thread of the pool, not on the
        // caller's: from outside, every parallel part of it (the leaf
        // hashes, each level of pages) woke the pool's threads while the
        // caller slept, and on a VM of 2 vCPUs the scheduler at times queued
        // both woken threads on one CPU for milliseconds while the other
        // idled (seen in a `sched_switch` trace). Inside the pool the
        // threads find each other's work without sleeping in between.
        return rayon::scope(|_| apply(source, policy, read_version, write_version, updates));
    }
    if write_version <= read_version {
        return Err(MerkleError::InvalidVersion(
            "the version written must be newer than the one read",
        ));
    }
    if let Some(i) = updates.windows(2).position(|w| w[0].0 >= w[1].0) {
        return Err(MerkleError::UnsortedUpdates { index: i + 1 });
    }
    let started = std::time::Instant::now();
    let view = source.view(read_version)?;
    let pages = match &view {
        Some(view) => root_page(&**view)?,
        None => prefetch(source, read_version, updates)?,
    };
    let read_time = started.elapsed();
    let leaf_hashes = leaf_hashes(updates);
    let ctx = Ctx {
        pages: &pages,
        view: view.as_deref(),
        version: write_version,
        read_version,
        policy,
        updates,
        leaf_hashes: &leaf_hashes,
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
        pages_read: pages.len() + out.pages_read,
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

/// The root page alone, for an update that reads the other pages as it
/// reaches them.
fn root_page(view: &dyn PageView) -> Result<HashMap<PagePath, VersionedPage>, MerkleError> {
    let mut pages = HashMap::default();
    if let Some(root) = view.page(&PagePath::ROOT)? {
        pages.insert(PagePath::ROOT, root.into_owned());
    }
    Ok(pages)
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
        let walk = |(path, range): &(PagePath, Range<usize>), wanted: &mut Vec<_>| {
            let page = &pages[path].page;
            child_pages(page, Page::ROOT, path.len(), updates, range.clone(), wanted);
        };
        // A level of thousands of pages is walked on every core (each walk
        // reads a page that is likely cold).
        let wanted: Vec<(PagePath, Range<usize>)> = if frontier.len() >= PARALLEL_WALK {
            frontier
                .par_iter()
                .fold(Vec::new, |mut wanted, entry| {
                    walk(entry, &mut wanted);
                    wanted
                })
                .flatten()
                .collect()
        } else {
            let mut wanted = Vec::new();
            for entry in &frontier {
                walk(entry, &mut wanted);
            }
            wanted
        };
        if wanted.is_empty() {
            break;
        }
        let paths: Vec<PagePath> = wanted.iter().map(|w| w.0).collect();
        let got = source.pages(&paths, version)?;
        pages.reserve(got.len());
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
    page: &Page,
    id: NodeId,
    depth: usize,
    updates: &[Update],
    range: Range<usize>,
    wanted: &mut Vec<(PagePath, Range<usize>)>,
) {
    let groups = nibble_groups(&updates[range.clone()], depth);
    for (n, group) in groups.into_iter().enumerate() {
        let Some(g) = group else { continue };
        let sub = range.start + g.start..range.start + g.end;
        match page.child(id, n) {
            Node::Inner { id: child, .. } => {
                child_pages(page, child, depth + 1, updates, sub, wanted)
            }
            Node::Page(_) => {
                wanted.push((PagePath::from_key(&updates[sub.start].0, depth + 1), sub))
            }
            Node::Empty | Node::Leaf { .. } => {}
        }
    }
}

/// Updates the page at `path` and returns what its parent slot now holds.
///
/// The child pages below it are written first (on several threads when
/// there are many updates): they depend on nothing in this page, and this
/// page needs their new hashes.
fn update_page(
    ctx: &Ctx<'_>,
    path: PagePath,
    ups: &[Update],
    out: &mut Out,
) -> Result<Up, MerkleError> {
    let read;
    let old = match (ctx.pages.get(&path), ctx.view) {
        (Some(page), _) => Some(page),
        (None, Some(view)) if !path.is_root() => {
            read = view.page(&path)?;
            out.pages_read += 1;
            read.as_deref()
        }
        (None, _) => None,
    };
    update_read_page(ctx, path, old, ups, out)
}

/// [`update_page`] of the page read as `old`.
fn update_read_page(
    ctx: &Ctx<'_>,
    path: PagePath,
    old: Option<&VersionedPage>,
    ups: &[Update],
    out: &mut Out,
) -> Result<Up, MerkleError> {
    let mut batch = Batch::default();
    match update_in_batch(ctx, path, old, ups, out, (&mut batch, 0))? {
        Some(up) => Ok(up),
        None => {
            batch.finish(ctx, out);
            Ok(batch.done.first().map_or(Up::Empty, |d| d.1))
        }
    }
}

/// [`update_read_page`] as job `job` of `batch`: the page's update is left
/// in the batch to finish with the others (`None`) when it is an update
/// in place, and done otherwise (the batch's pages are finished first, so
/// the writes keep the order of the jobs).
fn update_in_batch<'p>(
    ctx: &Ctx<'_>,
    path: PagePath,
    old: Option<&'p VersionedPage>,
    ups: &[Update],
    out: &mut Out,
    (batch, job): (&mut Batch<'p>, usize),
) -> Result<Option<Up>, MerkleError> {
    if old.is_none() && !path.is_root() {
        return Err(MerkleError::MissingPage {
            path,
            version: ctx.read_version,
        });
    }
    let depth = path.len();
    // Most pages of a block keep their nodes where they are (or gain a
    // node of two leaves below the root): their copy keeps its layout, and
    // its changes are known without a diff.
    let mut done = None;
    if let Some(o) = old.filter(|_| in_place_enabled()) {
        match update_in_place(ctx, path, o, ups, out, (&mut *batch, job))? {
            InPlaceOutcome::Batched => return Ok(None),
            InPlaceOutcome::FallBack(ran) => done = Some(ran),
            InPlaceOutcome::NotPlanned => {}
        }
    }
    batch.finish(ctx, out);
    // The nodes below the root slots the updates fall into are expanded
    // (and hashed, if the page was read from a record that stores only
    // their hashes); the others stay packed. Room for what the updates can
    // add: an insert adds one leaf and at most one internal node.
    let touched = nibble_groups(ups, depth)
        .iter()
        .enumerate()
        .fold(0u16, |m, (n, g)| if g.is_some() { m | 1 << n } else { m });
    let mut page = match old {
        Some(o) => Dense::for_update(&o.page, touched, ups.len().min(16))
            .map_err(|detail| MerkleError::CorruptPage { path, detail })?,
        None => Dense::default(),
    };
    let done = match done {
        Some(done) => done,
        None => {
            let mut jobs = Vec::new();
            plan_update(&page, Page::ROOT, depth, 0, ups, &mut jobs)?;
            run_jobs(ctx, jobs, ups.len(), out)?
        }
    };
    let mut done = done.into_iter();
    update_node(&mut page, Page::ROOT, depth, 0, ups, &mut done)?;
    if !path.is_root() {
        if let Some(node) = collapse(&mut page, Page::ROOT) {
            let up = match node {
                Node::Leaf { id, hash } => Up::Leaf(*page.leaf(id), hash),
                _ => Up::Empty,
            };
            emit(ctx, path, old, None, out);
            return Ok(Some(up));
        }
    }
    let hash = page.hash();
    let page = page.pack(old.map(|o| &*o.page));
    emit(ctx, path, old, Some(page), out);
    Ok(Some(Up::Page(hash)))
}

/// What [`update_in_place`] did.
enum InPlaceOutcome {
    /// The page is updated and left in the batch to finish.
    Batched,
    /// The page itself collapses: the general update takes over with these
    /// results of the child pages (it plans the same child pages in the
    /// same order).
    FallBack(Vec<Up>),
    /// An update needs a new page, or a new node of more than two leaves:
    /// the general update does it all.
    NotPlanned,
}

/// Updates the page `old` at `path` in place when its nodes stay where
/// they are, but for new nodes of two leaves below its root (see
/// [`Page::plan_in_place`]): its child pages first, then a copy of the
/// page with the changed slots rewritten, left in `batch` as its job `job`
/// to rehash and write with the others.
fn update_in_place<'p>(
    ctx: &Ctx<'_>,
    path: PagePath,
    old: &'p VersionedPage,
    ups: &[Update],
    out: &mut Out,
    (batch, job): (&mut Batch<'p>, usize),
) -> Result<InPlaceOutcome, MerkleError> {
    let depth = path.len();
    let Some(InPlacePlan {
        children,
        added,
        written,
        splits,
    }) = old.page.plan_in_place(depth, ups)
    else {
        return Ok(InPlaceOutcome::NotPlanned);
    };
    let jobs: Vec<_> = children
        .iter()
        .map(|c| {
            let sub = &ups[c.range.clone()];
            Job::Update(PagePath::from_key(&sub[0].0, depth + PAGE_LEVELS), sub)
        })
        .collect();
    if !jobs.is_empty() {
        // The child pages' writes come after those of the pages before.
        batch.finish(ctx, out);
    }
    let ran = run_jobs(ctx, jobs, ups.len(), out)?;
    // A child page that collapsed leaves its lone leaf (or nothing) in its
    // slot, in place too: a leaf the page writes.
    let collapsed = ran.iter().filter(|up| matches!(up, Up::Leaf(..))).count();
    let children: Vec<_> = children.into_iter().zip(ran.iter().copied()).collect();
    let mut changes = CHANGES.with(|c| c.borrow_mut().pop()).unwrap_or_default();
    let leaf_hashes = ctx.leaf_hashes_of(ups);
    let in_place = old
        .page
        .in_place(
            depth,
            (ups, &leaf_hashes),
            &children,
            (added + splits, written + collapsed),
            &mut changes,
        )
        .map_err(|detail| MerkleError::CorruptPage { path, detail })?;
    let Some(in_place) = in_place else {
        CHANGES.with(|c| c.borrow_mut().push(changes));
        return Ok(fall_back(ran));
    };
    #[cfg(test)]
    {
        IN_PLACE.with(|r| r.set(r.get() + 1));
        SPLITS.with(|r| r.set(r.get() + splits));
        COLLAPSED.with(|r| r.set(r.get() + collapsed));
        let emptied = ran.iter().filter(|up| matches!(up, Up::Empty)).count();
        EMPTIED.with(|r| r.set(r.get() + emptied));
    }
    batch.pages.push(Batched {
        job,
        path,
        old,
        in_place,
        changes,
    });
    if batch.pages.len() >= BATCH_PAGES {
        batch.finish(ctx, out);
    }
    Ok(InPlaceOutcome::Batched)
}

/// The changes of a delta, in position order.
type ChangeList = Vec<(SlotPos, Option<Terminal>)>;

/// Most pages rehashed together: one group of AVX-512's 16 lanes a tree
/// level (the root trees of a level of small pages). The pages of a batch
/// are edited, rehashed and written one after the other, so they should
/// stay in the core's caches from one step to the next: one batch of all
/// of a page's child pages (about 40 at 1M keys) measured no faster than
/// the update before batches, batches of 8 1.04x faster than it (and
/// 1.03x faster than batches of one page). 16 measured the same as 8
/// then; with the old pages' lines prefetched (see [`warm`]), 1.02x
/// faster (BENCHMARKS.md).
const BATCH_PAGES: usize = 16;

/// A page updated in place whose binary trees are not rehashed yet.
struct Batched<'p> {
    /// Its job in the batch.
    job: usize,
    path: PagePath,
    old: &'p VersionedPage,
    in_place: InPlace,
    /// The changes from `old`.
    changes: ChangeList,
}

/// Pages updated in place, left to rehash together (see [`Rehash`]) and
/// then write; and what each finished job's parent slot now holds.
#[derive(Default)]
struct Batch<'p> {
    pages: Vec<Batched<'p>>,
    done: Vec<(usize, Up)>,
}

impl Batch<'_> {
    /// Rehashes the pages of the batch and writes them, in the order they
    /// came.
    fn finish(&mut self, ctx: &Ctx<'_>, out: &mut Out) {
        if self.pages.is_empty() {
            return;
        }
        #[cfg(test)]
        if self.pages.len() > 1 {
            BATCHED.with(|r| r.set(r.get() + self.pages.len()));
        }
        REHASH.with(|rehash| {
            // Each page's terminal count is set here, where the page is
            // borrowed to change anyway: `write_page` then finds it set
            // and does not take the page's reference count again (an
            // atomic instruction).
            let mut pages: Vec<(&mut Page, Unhashed)> = self
                .pages
                .iter_mut()
                .map(|b| {
                    let InPlace {
                        page,
                        unhashed,
                        added,
                        removed,
                    } = &mut b.in_place;
                    let page = Arc::make_mut(page);
                    page.set_terminal_count(b.old.page.terminal_count() + *added - *removed);
                    (page, *unhashed)
                })
                .collect();
            rehash.borrow_mut().run(&mut pages);
            // After the rehash, which writes the changed nodes' trees in
            // the pages' own arrays.
            for (page, _) in pages.iter_mut() {
                page.fold_if_due();
            }
        });
        let (pages, done) = (&mut self.pages, &mut self.done);
        write_records(out, |buf, out| {
            for b in pages.drain(..) {
                let InPlace {
                    page,
                    added,
                    removed,
                    ..
                } = b.in_place;
                let hash = page.hash();
                if !b.changes.is_empty() {
                    let changes = (b.old, &b.changes[..], removed, added);
                    write_page(ctx, b.path, Some(changes), page, buf, out);
                }
                done.push((b.job, Up::Page(hash)));
                let mut changes = b.changes;
                changes.clear();
                CHANGES.with(|c| c.borrow_mut().push(changes));
            }
        });
    }
}

/// [`InPlaceOutcome::FallBack`] with the child pages' results `ran`.
fn fall_back(ran: Vec<Up>) -> InPlaceOutcome {
    #[cfg(test)]
    FELL_BACK.with(|r| r.set(r.get() + 1));
    InPlaceOutcome::FallBack(ran)
}

/// Writes the new page at `path` holding `leaves` (sorted, at least two).
fn build_page(
    ctx: &Ctx<'_>,
    path: PagePath,
    leaves: &[(KeyHash, ValueHash)],
    out: &mut Out,
) -> Result<Up, MerkleError> {
    let depth = path.len();
    let mut jobs = Vec::new();
    plan_children(depth, 0, leaves, &mut jobs)?;
    let mut done = run_jobs(ctx, jobs, leaves.len(), out)?.into_iter();
    let mut page = Dense::default();
    build_children(
        &mut page,
        Page::ROOT,
        depth,
        0,
        leaves,
        &mut done,
        &mut None,
    )?;
    let hash = page.hash();
    emit(ctx, path, None, Some(page.pack(None)), out);
    Ok(Up::Page(hash))
}

/// Writes the pages of `jobs`, in parallel when `weight` (the updates
/// below them) is large, and returns what each parent slot now holds, in
/// the order of `jobs`.
fn run_jobs(
    ctx: &Ctx<'_>,
    jobs: Vec<Job<'_>>,
    weight: usize,
    out: &mut Out,
) -> Result<Vec<Up>, MerkleError> {
    let run = |job: &Job<'_>, out: &mut Out| match job {
        Job::Update(path, ups) => update_page(ctx, *path, ups, out),
        Job::Build(path, leaves) => build_page(ctx, *path, leaves, out),
    };
    if jobs.len() < 2 || weight < PARALLEL_MIN {
        if jobs.len() < 2 {
            return jobs.iter().map(|job| run(job, out)).collect();
        }
        let mut read = Vec::with_capacity(jobs.len());
        match ctx.view {
            Some(view) => {
                // Pages in memory: look all of them up, then read the lines
                // each update reads first, a stage at a time (the page
                // root's slot, then the leaf below it), then update them.
                // Within a stage the reads do not wait on one another, so
                // their cache misses overlap (against reading each page
                // where its update starts: 1.1x the blocks of 1M keys for
                // the lookups, 1.05x more for the stages).
                for job in &jobs {
                    read.push(match job {
                        Job::Update(path, _) => {
                            out.pages_read += 1;
                            view.page(path)?
                        }
                        Job::Build(..) => None,
                    });
                }
                warm(&jobs, &read);
            }
            // Pages read before the update.
            None => read.extend(jobs.iter().map(|job| match job {
                Job::Update(path, _) => ctx.pages.get(path).map(Cow::Borrowed),
                Job::Build(..) => None,
            })),
        }
        // The pages updated in place are rehashed and written together,
        // `BATCH_PAGES` at a time (and before a page that is not, to keep
        // the order of the writes).
        let mut done = vec![Up::Empty; jobs.len()];
        let mut batch = Batch {
            pages: Vec::with_capacity(BATCH_PAGES),
            done: Vec::with_capacity(jobs.len()),
        };
        for (i, (job, page)) in jobs.iter().zip(&read).enumerate() {
            match job {
                Job::Update(path, ups) => {
                    let old = page.as_deref();
                    if let Some(up) = update_in_batch(ctx, *path, old, ups, out, (&mut batch, i))? {
                        done[i] = up;
                    }
                }
                Job::Build(path, leaves) => {
                    batch.finish(ctx, out);
                    done[i] = build_page(ctx, *path, leaves, out)?;
                }
            }
        }
        batch.finish(ctx, out);
        for (i, up) in batch.done {
            done[i] = up;
        }
        return Ok(done);
    }
    // One output per piece of work rayon splits off, not one per job: a
    // job below a page root is mostly one small page. A piece's output is
    // sized when it starts for the jobs from its first one on (a page
    // written per job and per update below it, at most about that), but
    // for no more than twice a thread's share of all of them: growing the
    // arrays of page writes copied them again at each doubling (about 400
    // instructions an update at 1M keys, counted with callgrind).
    let mut after: Vec<usize> = jobs
        .iter()
        .rev()
        .scan(0, |sum, job| {
            *sum += 1 + match job {
                Job::Update(_, ups) => ups.len(),
                Job::Build(_, leaves) => leaves.len(),
            };
            Some(*sum)
        })
        .collect();
    after.reverse();
    let share = 2 * after.first().copied().unwrap_or(0) / rayon::current_num_threads().max(1);
    let parts: Vec<(Vec<(usize, Up)>, Out)> = jobs
        .par_iter()
        .enumerate()
        .try_fold(
            || (Vec::new(), Out::default()),
            |(mut nodes, mut o), (i, job)| {
                if nodes.capacity() == 0 {
                    let room = after[i].min(share);
                    nodes.reserve_exact((jobs.len() - i).min(room));
                    o.writes.reserve_exact(room);
                    o.stale.reserve_exact(room);
                }
                nodes.push((i, run(job, &mut o)?));
                Ok::<_, MerkleError>((nodes, o))
            },
        )
        .collect::<Result<_, _>>()?;
    // Sized once for all the parts: growing the arrays part by part
    // copied them again at each doubling (about 250 instructions an
    // update at 1M keys, counted with callgrind).
    let writes = out.writes.len() + parts.iter().map(|p| p.1.writes.len()).sum::<usize>();
    let stale = out.stale.len() + parts.iter().map(|p| p.1.stale.len()).sum::<usize>();
    let mut nodes = vec![Up::Empty; jobs.len()];
    for (done, o) in parts {
        out.absorb(o);
        out.writes.reserve(writes - out.writes.len());
        out.stale.reserve(stale - out.stale.len());
        for (i, node) in done {
            nodes[i] = node;
        }
    }
    Ok(nodes)
}

/// Brings the lines of the pages `read` (of `jobs`) that their updates
/// read first into the cache: every page's struct and own arrays, asked
/// for without waiting ([`Page::prefetch`]: their copies then read them
/// from the cache, 1.07x at 1M keys), then, a stage at a time, the page
/// root's slot of each job's first key and the leaf below it.
fn warm(jobs: &[Job<'_>], read: &[Option<Cow<'_, VersionedPage>>]) {
    let first_key = |job: &Job<'_>| match job {
        Job::Update(path, ups) => ups.first().map(|u| (path.len(), u.0)),
        Job::Build(..) => None,
    };
    for page in read.iter().flatten() {
        page.page.prefetch();
    }
    let slots: Vec<_> = jobs
        .iter()
        .zip(read)
        .map(|(job, page)| {
            let (depth, key) = first_key(job)?;
            Some(page.as_ref()?.page.warm_slot(depth, &key))
        })
        .collect();
    let mut warm = 0u8;
    for ((job, page), slot) in jobs.iter().zip(read).zip(slots) {
        if let (Some((depth, key)), Some(page), Some(slot)) = (first_key(job), page, slot) {
            warm ^= page.page.warm_leaf(depth, &key, slot);
        }
    }
    std::hint::black_box(warm);
}

/// Lists, in the order [`update_node`] meets them, the child pages that
/// `ups` below node `id` (at nibble `depth`, `rel` levels below the page
/// root) update or create.
fn plan_update<'u>(
    page: &Dense,
    id: NodeId,
    depth: usize,
    rel: usize,
    ups: &'u [Update],
    jobs: &mut Vec<Job<'u>>,
) -> Result<(), MerkleError> {
    for (n, g) in nibble_groups(ups, depth).into_iter().enumerate() {
        let Some(g) = g else { continue };
        let sub = &ups[g];
        match page.node(id).children[n] {
            Node::Inner { id: child, .. } => {
                plan_update(page, child, depth + 1, rel + 1, sub, jobs)?
            }
            Node::Page(_) => jobs.push(Job::Update(PagePath::from_key(&sub[0].0, depth + 1), sub)),
            Node::Leaf { id: leaf, .. } => {
                plan_build(depth + 1, rel + 1, Some(page.leaf(leaf)), sub, jobs)?
            }
            Node::Empty => plan_build(depth + 1, rel + 1, None, sub, jobs)?,
        }
    }
    Ok(())
}

/// [`plan_update`] for a slot that held `existing` (or nothing).
fn plan_build(
    depth: usize,
    rel: usize,
    existing: Option<&Leaf>,
    ups: &[Update],
    jobs: &mut Vec<Job<'_>>,
) -> Result<(), MerkleError> {
    // A page is built only below a slot that ends up with two leaves or
    // more; count them before merging.
    let kept = existing.is_some_and(|l| ups.binary_search_by(|u| u.0.cmp(&l.key_hash)).is_err());
    if usize::from(kept) + ups.iter().filter(|u| u.1.is_some()).count() < 2 {
        return Ok(());
    }
    plan_leaves(depth, rel, merge(existing, ups), jobs)
}

/// The pages that [`build`] of `leaves` at `(depth, rel)` creates.
fn plan_leaves(
    depth: usize,
    rel: usize,
    leaves: Vec<(KeyHash, ValueHash)>,
    jobs: &mut Vec<Job<'_>>,
) -> Result<(), MerkleError> {
    if leaves.len() < 2 {
        return Ok(());
    }
    if depth >= 64 {
        return Err(shared_key_hash());
    }
    if rel == PAGE_LEVELS {
        jobs.push(Job::Build(PagePath::from_key(&leaves[0].0, depth), leaves));
        return Ok(());
    }
    plan_children(depth, rel, &leaves, jobs)
}

/// The pages that [`build_children`] of `leaves` below a node at
/// `(depth, rel)` creates.
fn plan_children(
    depth: usize,
    rel: usize,
    leaves: &[(KeyHash, ValueHash)],
    jobs: &mut Vec<Job<'_>>,
) -> Result<(), MerkleError> {
    for g in nibble_groups(leaves, depth).into_iter().flatten() {
        if g.len() >= 2 {
            plan_leaves(depth + 1, rel + 1, leaves[g].to_vec(), jobs)?;
        }
    }
    Ok(())
}

fn shared_key_hash() -> MerkleError {
    MerkleError::InvalidArgument("two leaves share a whole key hash")
}

/// What a planned child page job left for its parent slot.
fn next_done(done: &mut impl Iterator<Item = Up>) -> Result<Up, MerkleError> {
    // The plan and the walk visit the same slots in the same order, so a
    // result is always there; an error instead of a panic all the same.
    done.next().ok_or(MerkleError::InvalidArgument(
        "internal: the update plan and its walk disagree",
    ))
}

/// Applies `ups` below node `id` of `page` (at nibble `depth`, `rel` levels
/// below the page root), taking the child pages' results from `done`, and
/// rehashes the node.
fn update_node(
    page: &mut Dense,
    id: NodeId,
    depth: usize,
    rel: usize,
    ups: &[Update],
    done: &mut impl Iterator<Item = Up>,
) -> Result<(), MerkleError> {
    let mut dirty = 0u16;
    for (n, g) in nibble_groups(ups, depth).into_iter().enumerate() {
        let Some(g) = g else { continue };
        dirty |= 1 << n;
        let sub = &ups[g];
        let new = match page.node(id).children[n] {
            Node::Inner { id: child, .. } => {
                update_node(page, child, depth + 1, rel + 1, sub, done)?;
                match collapse(page, child) {
                    Some(node) => node,
                    None => Node::Inner {
                        id: child,
                        hash: page.node(child).hash(),
                    },
                }
            }
            Node::Page(_) => next_done(done)?.place(page),
            Node::Leaf { id: leaf, .. } => {
                // The leaf's entry is rewritten by the first leaf built in
                // its place, if any.
                let existing = *page.leaf(leaf);
                let mut spare = Some(leaf);
                let leaves = merge(Some(&existing), sub);
                let node = build(page, depth + 1, rel + 1, &leaves, done, &mut spare)?;
                if spare.is_some() {
                    page.drop_leaf();
                }
                node
            }
            Node::Empty => build(page, depth + 1, rel + 1, &merge(None, sub), done, &mut None)?,
        };
        page.node_mut(id).children[n] = new;
    }
    page.node_mut(id).rehash(dirty);
    Ok(())
}

/// What internal node `id` becomes when it is no longer canonical: `Empty`
/// when no slot is occupied, its leaf when a lone leaf is left (the leaf
/// moves up); `None` while it still holds two keys or more.
fn collapse(page: &mut Dense, id: NodeId) -> Option<Node> {
    let node = page.node_mut(id);
    if node.occupied() == 0 {
        return Some(Node::Empty);
    }
    node.lone_leaf()
        .map(|i| std::mem::take(&mut node.children[i]))
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

/// Builds in `page` the canonical subtree holding `leaves` (sorted, unique)
/// at nibble `depth`, `rel` levels below the page root, taking the new
/// child pages from `done` and storing the first leaf in `spare`'s entry
/// (if any).
fn build(
    page: &mut Dense,
    depth: usize,
    rel: usize,
    leaves: &[(KeyHash, ValueHash)],
    done: &mut impl Iterator<Item = Up>,
    spare: &mut Option<LeafId>,
) -> Result<Node, MerkleError> {
    match leaves {
        [] => Ok(Node::Empty),
        [(k, v)] => Ok(page.put_leaf(spare, *k, *v)),
        _ if depth >= 64 => Err(shared_key_hash()),
        _ if rel == PAGE_LEVELS => Ok(next_done(done)?.place(page)),
        _ => {
            let id = page.push_node();
            build_children(page, id, depth, rel, leaves, done, spare)?;
            Ok(Node::Inner {
                id,
                hash: page.node(id).hash(),
            })
        }
    }
}

fn build_children(
    page: &mut Dense,
    id: NodeId,
    depth: usize,
    rel: usize,
    leaves: &[(KeyHash, ValueHash)],
    done: &mut impl Iterator<Item = Up>,
    spare: &mut Option<LeafId>,
) -> Result<(), MerkleError> {
    let mut dirty = 0u16;
    for (n, g) in nibble_groups(leaves, depth).into_iter().enumerate() {
        let Some(g) = g else { continue };
        dirty |= 1 << n;
        let child = build(page, depth + 1, rel + 1, &leaves[g], done, spare)?;
        page.node_mut(id).children[n] = child;
    }
    page.node_mut(id).rehash(dirty);
    Ok(())
}

/// About the length of a base record of `terminals` terminals (leaves take
/// 67 bytes, child references 35; the estimate counts leaves).
fn base_len(terminals: usize) -> usize {
    3 + varint::len(terminals as u64) + 67 * terminals
}

thread_local! {
    /// Arrays for the changes of the pages this thread updates in place,
    /// kept for the next ones.
    static CHANGES: std::cell::RefCell<Vec<ChangeList>> =
        const { std::cell::RefCell::new(Vec::new()) };
    /// This thread's buffers for rehashing pages updated in place.
    static REHASH: std::cell::RefCell<Rehash> = std::cell::RefCell::new(Rehash::default());
    /// The buffer this thread encodes the records of a batch of pages in
    /// (see [`write_records`]).
    static RECORDS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `write`, which writes pages ([`write_page`]) with their records
/// encoded one after the other into this thread's buffer, then copies the
/// buffer into one allocation that the records share ([`SharedBytes`]):
/// one allocation for a batch of pages, where one for each record took a
/// block about 1.03x longer at 1M keys (BENCHMARKS.md).
fn write_records<R>(out: &mut Out, write: impl FnOnce(&mut Vec<u8>, &mut Out) -> R) -> R {
    RECORDS.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        let first = out.writes.len();
        let r = write(&mut buf, out);
        // One range for each write pushed (else a write would keep an
        // empty record).
        assert_eq!(out.writes.len() - first, out.ranges.len());
        if !out.ranges.is_empty() {
            let shared: Arc<[u8]> = Arc::from(&buf[..]);
            for (w, range) in out.writes[first..].iter_mut().zip(out.ranges.drain(..)) {
                w.record = SharedBytes::slice(&shared, range);
            }
        }
        r
    })
}

/// Records the new state of the page at `path`.
fn emit(
    ctx: &Ctx<'_>,
    path: PagePath,
    old: Option<&VersionedPage>,
    new: Option<Page>,
    out: &mut Out,
) {
    write_records(out, |buf, out| emit_into(ctx, path, old, new, buf, out));
}

/// [`emit`], with the record encoded at the end of `buf`.
fn emit_into(
    ctx: &Ctx<'_>,
    path: PagePath,
    old: Option<&VersionedPage>,
    new: Option<Page>,
    buf: &mut Vec<u8>,
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
            let start = buf.len();
            PageRecord::Removed.encode_into(buf);
            out.ranges.push(start..buf.len());
            out.writes.push(PageWrite {
                path,
                page: None,
                record: SharedBytes::default(),
                kind: RecordKind::Removed,
                chain: ChainInfo::default(),
                previous: Some(o.version),
            });
        }
        return;
    };
    match old {
        Some(o) => {
            let (changes, removed, added) = page.changes_since(&o.page);
            if !changes.is_empty() {
                let page = Arc::new(page);
                write_page(
                    ctx,
                    path,
                    Some((o, &changes, removed, added)),
                    page,
                    buf,
                    out,
                );
            }
        }
        None => write_page(ctx, path, None, Arc::new(page), buf, out),
    }
}

/// The changes from a page's previous version: the delta's changes and
/// the number of terminals they remove and add.
type Changes<'a> = (
    &'a VersionedPage,
    &'a [(SlotPos, Option<Terminal>)],
    usize,
    usize,
);

/// Records the new version `page` of the page at `path`: a delta of
/// `old`'s changes, or a base when the page is new or its chain is long
/// enough. The record is encoded at the end of `buf`, and becomes the
/// write's when [`write_records`] shares the buffer.
fn write_page(
    ctx: &Ctx<'_>,
    path: PagePath,
    old: Option<Changes<'_>>,
    mut page: Arc<Page>,
    buf: &mut Vec<u8>,
    out: &mut Out,
) {
    let version = ctx.version;
    let start = buf.len();
    let mut write = None;
    let previous = old.as_ref().map(|o| o.0.version);
    if let Some((o, changes, removed, added)) = old {
        let terminals = o.page.terminal_count() + added - removed;
        if page.terminal_count() != terminals {
            Arc::make_mut(&mut page).set_terminal_count(terminals);
        }
        out.stale.push(StalePage {
            path,
            version: o.version,
            superseded_at: version,
        });
        // A delta while the chain stays short and smaller than a base;
        // the delta is encoded first (its length decides), and dropped
        // when it is not the record written.
        if o.chain.deltas < ctx.policy.max_deltas {
            let base = base_len(page.terminal_count()) as u64;
            let limit = base * u64::from(ctx.policy.max_chain_percent) / 100;
            let hashes = page.slot_hash_parts(PageDelta::slots_touched_by(changes));
            PageDelta::encode_parts_into(buf, PAGE_LEVELS as u8, changes, hashes);
            let chain_bytes = u64::from(o.chain.delta_bytes) + (buf.len() - start) as u64;
            if chain_bytes < limit {
                let chain = ChainInfo {
                    deltas: o.chain.deltas + 1,
                    delta_bytes: chain_bytes as u32,
                };
                write = Some((RecordKind::Delta, chain));
            } else {
                buf.truncate(start);
            }
        }
    }
    let (kind, chain) = write.unwrap_or_else(|| {
        // Encoded straight from the page: building its image, sorting it
        // and encoding that took about 0.1k instructions an update more
        // at 1M keys (BENCHMARKS.md). Tests check it against the image's
        // encoding. It reads every leaf of the page, mostly not in the
        // cache: all are asked for first (1.03x at 1M keys).
        page.prefetch_leaves();
        let terminals = page.encode_base_into(buf);
        #[cfg(test)]
        assert_eq!(
            buf[start..],
            PageRecord::Base(page.to_image()).encode()[..],
            "a base encoded from its page and from its image"
        );
        if page.terminal_count() != terminals {
            Arc::make_mut(&mut page).set_terminal_count(terminals);
        }
        (RecordKind::Base, ChainInfo::default())
    });
    out.ranges.push(start..buf.len());
    out.writes.push(PageWrite {
        path,
        page: Some(page),
        record: SharedBytes::default(),
        kind,
        chain,
        previous,
    });
}

#[cfg(not(test))]
#[inline]
fn in_place_enabled() -> bool {
    true
}

#[cfg(test)]
thread_local! {
    /// Tests turn the update in place off to compare it with the general
    /// update (rayon's threads keep the default, so such a test runs its
    /// update on one thread, its own: below `PARALLEL_MIN` updates, which
    /// `apply` does not move to the pool).
    static IN_PLACE_ENABLED: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

#[cfg(test)]
thread_local! {
    /// Pages this thread updated in place.
    static IN_PLACE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Pages this thread planned in place and then updated by the general
    /// update, because the page itself goes.
    static FELL_BACK: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Pages this thread rehashed in batches of more than one.
    static BATCHED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Root slots this thread's updates in place gave a second leaf (and a
    /// new node below them).
    static SPLITS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Child pages collapsed to a leaf below pages this thread updated in
    /// place.
    static COLLAPSED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Child pages whose keys all went, below pages this thread updated in
    /// place.
    static EMPTIED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
fn in_place_enabled() -> bool {
    IN_PLACE_ENABLED.with(|v| v.get())
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::memory::MemPageStore;

    /// A store that serves every page rebuilt from its records, so the
    /// nodes below page roots are unhashed.
    struct FromRecords<'a>(&'a MemPageStore);

    impl PageSource for FromRecords<'_> {
        fn page(
            &self,
            path: &PagePath,
            version: u64,
        ) -> Result<Option<VersionedPage>, MerkleError> {
            self.0.page_from_records(path, version)
        }
    }

    /// The output of `apply` with the update in place on or off.
    fn run(
        source: &dyn PageSource,
        policy: DeltaPolicy,
        version: u64,
        ups: &[Update],
        in_place: bool,
    ) -> UpdateOutput {
        IN_PLACE_ENABLED.with(|v| v.set(in_place));
        let out = apply(source, policy, version, version + 1, ups);
        IN_PLACE_ENABLED.with(|v| v.set(true));
        out.expect("update")
    }

    fn assert_same(a: &UpdateOutput, b: &UpdateOutput, seed: u64) {
        assert_eq!(a.root, b.root, "seed {seed}");
        assert_eq!(a.stale, b.stale, "seed {seed}");
        assert_eq!(a.writes.len(), b.writes.len(), "seed {seed}");
        for (x, y) in a.writes.iter().zip(&b.writes) {
            assert_eq!(x.path, y.path, "seed {seed}");
            assert_eq!(x.record, y.record, "record of {:?}, seed {seed}", x.path);
            let terminals = |w: &PageWrite| w.page.as_ref().map(|p| p.terminal_count());
            assert_eq!(
                terminals(x),
                terminals(y),
                "terminals of {:?}, seed {seed}",
                x.path
            );
            assert_eq!(x.kind, y.kind, "seed {seed}");
            assert_eq!(x.chain, y.chain, "seed {seed}");
            assert_eq!(x.previous, y.previous, "seed {seed}");
            assert_eq!(x.page, y.page, "page of {:?}, seed {seed}", x.path);
        }
    }

    #[test]
    fn nodes_emptied_or_left_with_one_leaf_in_place_match_the_general_update() {
        // Root slots 0, 3 and 4: dense nodes of nine leaves (they keep their
        // binary trees); root slot 1: a node of two leaves; root slot 2: a
        // leaf.
        let key = |a: u8, b: u8| {
            let mut k = [0u8; 32];
            k[0] = a;
            k[1] = b;
            k
        };
        let dense = |n: u8| (0..9).map(move |m| key(n << 4 | m, 0));
        let pair = [key(0x10, 0), key(0x11, 0)];
        let mut ups: Vec<Update> = dense(0)
            .chain(dense(3))
            .chain(dense(4))
            .chain(pair)
            .chain([key(0x20, 0)])
            .map(|k| (k, Some([7; 32])))
            .collect();
        ups.sort_unstable_by_key(|u| u.0);
        let policy = DeltaPolicy::default();
        let store = MemPageStore::new();
        let out = apply(&store, policy, 0, 1, &ups).expect("update");
        store.apply(&out).expect("apply");
        let steps: [Vec<Update>; 4] = [
            // Eight of slot 0's leaves go and the ninth changes: it moves
            // up, and the node's tree goes.
            dense(0)
                .map(|k| (k, (k == key(0, 0)).then_some([8; 32])))
                .collect(),
            // A leaf below slot 3 changes (its node's tree moved down the
            // page's list of trees).
            vec![(key(0x31, 0), Some([9; 32]))],
            // Both leaves of the pair go, and the leaf of slot 2 changes.
            vec![
                (pair[0], None),
                (pair[1], None),
                (key(0x20, 0), Some([8; 32])),
            ],
            // A leaf of slot 4's node is replaced by a new key in the same
            // slot, and slot 2's leaf by a new key too.
            vec![
                (key(0x42, 0), None),
                (key(0x42, 1), Some([9; 32])),
                (key(0x20, 0), None),
                (key(0x2f, 0), Some([9; 32])),
            ],
        ];
        for (version, mut ups) in (1..).zip(steps) {
            ups.sort_unstable_by_key(|u| u.0);
            let ups = &ups;
            IN_PLACE.with(|r| r.set(0));
            let fast = run(&store, policy, version, ups, true);
            assert_eq!(IN_PLACE.with(|r| r.get()), 1, "step {version} in place");
            let general = run(&store, policy, version, ups, false);
            assert_same(&fast, &general, version);
            // Pages rebuilt from their records know nothing of the layout
            // the updates in place left in the pages the store keeps; in
            // place over them, their nodes are hashed and checked first.
            for in_place in [false, true] {
                let from_records = run(&FromRecords(&store), policy, version, ups, in_place);
                assert_same(&from_records, &general, version);
            }
            store.apply(&fast).expect("apply");
        }
    }

    #[test]
    fn page_versions_share_their_parts_and_fold_their_own() {
        let seed = verity_testkit::seed("page_versions_share_parts");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let store = MemPageStore::new();
        // Keys under one page at depth 2 (first byte 0x5a), dense enough
        // to fill nodes below its root slots (some enough to keep their
        // trees), and a few elsewhere.
        let key = |rng: &mut ChaCha8Rng| {
            let mut k: KeyHash = rng.gen();
            if rng.gen_range(0..8) != 0 {
                k[0] = 0x5a;
            }
            k
        };
        let mut model: std::collections::BTreeMap<KeyHash, ValueHash> = Default::default();
        let mut ups: Vec<Update> = (0..400).map(|_| (key(&mut rng), Some(rng.gen()))).collect();
        ups.sort_unstable_by_key(|u| u.0);
        ups.dedup_by_key(|u| u.0);
        let path = PagePath::from_key(&[0x5a; 32], 2);
        // Per part (leaves, slots, trees): versions that shared the old
        // version's shared elements, versions that folded them.
        let (mut shared, mut folded) = ([0; 3], [0; 3]);
        let mut history = Vec::new();
        for version in 0..300 {
            // The page as the store keeps it in memory, which the update
            // copies (a page older than the newest is rebuilt from its
            // records, and shares nothing).
            let old = store.page(&path, version).expect("read");
            let before = old.as_ref().map(|o| o.page.to_image());
            let out =
                apply(&store, DeltaPolicy::default(), version, version + 1, &ups).expect("update");
            store.apply(&out).expect("apply");
            let new = store
                .page(&path, version + 1)
                .expect("read")
                .filter(|n| n.version == version + 1);
            for (k, v) in &ups {
                match v {
                    Some(v) => model.insert(*k, *v),
                    None => model.remove(k),
                };
            }
            if let (Some(old), Some(new)) = (old, new) {
                // The old version is left as it was.
                assert_eq!(
                    Some(old.page.to_image()),
                    before,
                    "version {version}, seed {seed}"
                );
                if let Err(e) = new.page.check_parts() {
                    panic!("version {version}: {e}, seed {seed}");
                }
                let parts = old.page.sharing().into_iter().zip(new.page.sharing());
                for (i, ((old_shared, ..), (new_shared, own, len, dead))) in parts.enumerate() {
                    // Folded once either grows too far.
                    let fold = crate::page::FOLD[i];
                    assert!(
                        dead * fold.dead <= len,
                        "version {version}, part {i}: {dead} of {len} dead, seed {seed}"
                    );
                    assert!(
                        own * own <= 2 * len * fold.written || !fold.alone && own == len,
                        "version {version}, part {i}: {own} own of {len}, seed {seed}"
                    );
                    if len == own {
                        // Nothing shared to count.
                    } else if std::ptr::eq(old_shared, new_shared) {
                        shared[i] += 1;
                    } else {
                        folded[i] += 1;
                    }
                }
            }
            history.push(model.clone());
            let keys: Vec<KeyHash> = model.keys().copied().collect();
            // New values for a few keys, now and then an insert or a
            // delete (inserts often take the general update, which packs
            // the page anew: rare, so that versions updated in place
            // follow one another).
            ups = (0..rng.gen_range(1..4))
                .map(|_| {
                    let k = keys[rng.gen_range(0..keys.len())];
                    match rng.gen_range(0..40) {
                        0 => (key(&mut rng), Some(rng.gen())),
                        1 if keys.len() > 300 => (k, None),
                        _ => (k, Some(rng.gen())),
                    }
                })
                .collect();
            ups.sort_unstable_by_key(|u| u.0);
            ups.dedup_by_key(|u| u.0);
        }
        // Every version still reads as it was written: none changed a
        // part it shared with an earlier one.
        for (v, model) in (1..).zip(&history) {
            let read = crate::read::leaves(&store, v, &[0; 32], usize::MAX).expect("leaves");
            let want: Vec<_> = model.iter().map(|(k, v)| (*k, *v)).collect();
            assert_eq!(read, want, "version {v}, seed {seed}");
        }
        for (i, part) in ["leaves", "slots", "trees"].iter().enumerate() {
            assert!(
                shared[i] > 0,
                "no version shared its page's {part}, seed {seed}"
            );
            assert!(
                folded[i] > 0,
                "no version folded its page's {part}, seed {seed}"
            );
        }
    }

    /// Counts of [`compare_in_place`]'s rounds (see the thread-locals of
    /// the same names).
    #[derive(Debug, Default)]
    struct InPlaceCounts {
        in_place: usize,
        fell_back: usize,
        batched: usize,
        splits: usize,
        collapsed: usize,
        emptied: usize,
        /// Records written as a range of a buffer shared with others.
        shared_records: usize,
    }

    /// Compares the update in place with the general update over rounds
    /// of blocks of fewer than `block` changes on keys from `key`
    /// (`initial` of them to start with): 40 rounds, and more, up to 400,
    /// until `covered` says the counts show every case the test wants met
    /// (a random run may meet a rare one late).
    fn compare_in_place(
        seed: u64,
        (initial, block): (usize, usize),
        key: impl Fn(&mut ChaCha8Rng) -> KeyHash,
        covered: impl Fn(&InPlaceCounts) -> bool,
    ) -> InPlaceCounts {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let policy = DeltaPolicy {
            max_deltas: 3,
            max_chain_percent: 400,
        };
        let store = MemPageStore::new();
        let mut keys: Vec<KeyHash> = (0..initial).map(|_| key(&mut rng)).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut version = 0;
        for chunk in keys.chunks(250) {
            let ups: Vec<Update> = chunk.iter().map(|k| (*k, Some(rng.gen()))).collect();
            let out = apply(&store, policy, version, version + 1, &ups).expect("update");
            store.apply(&out).expect("apply");
            version += 1;
        }
        let mut counts = InPlaceCounts::default();
        let rounds = 40 * verity_testkit::scale();
        let mut round = 0;
        while round < rounds || (!covered(&counts) && round < 10 * rounds) {
            // Blocks of new values only, then blocks that also insert and
            // delete.
            let mixed = round % 2 == 1;
            round += 1;
            let mut ups: Vec<Update> = Vec::new();
            for _ in 0..rng.gen_range(1..block) {
                let k = keys[rng.gen_range(0..keys.len())];
                let up = match rng.gen_range(0..10) {
                    0 if mixed => (key(&mut rng), Some(rng.gen())),
                    1 if mixed => (k, None),
                    // Two new keys that part at nibble 3 only: one slot of
                    // a page at nibble 2 given two leaves at once.
                    3 if mixed => {
                        let k = key(&mut rng);
                        let mut sibling = k;
                        sibling[1] ^= 0x01;
                        ups.push((sibling, Some(rng.gen())));
                        (k, Some(rng.gen()))
                    }
                    // A key goes and two keys that part from it at nibble
                    // 3 only come: at times a root slot's leaf replaced by
                    // a node of two.
                    5 if mixed => {
                        for flip in [0x01, 0x02] {
                            let mut sibling = k;
                            sibling[1] ^= flip;
                            ups.push((sibling, Some(rng.gen())));
                        }
                        (k, None)
                    }
                    // A key and the two after it go: at times all the keys
                    // of a small page.
                    4 if mixed => {
                        let i = keys.partition_point(|x| *x < k);
                        ups.extend(keys[i + 1..].iter().take(2).map(|k| (*k, None)));
                        (k, None)
                    }
                    // Now and then the value a key already has.
                    2 => (k, crate::read::get(&store, version, &k).expect("get")),
                    _ => (k, Some(rng.gen())),
                };
                ups.push(up);
            }
            ups.sort_unstable_by_key(|u| u.0);
            ups.dedup_by_key(|u| u.0);
            for counter in [
                &IN_PLACE, &FELL_BACK, &BATCHED, &SPLITS, &COLLAPSED, &EMPTIED,
            ] {
                counter.with(|r| r.set(0));
            }
            let fast = run(&store, policy, version, &ups, true);
            counts.in_place += IN_PLACE.with(|r| r.get());
            counts.fell_back += FELL_BACK.with(|r| r.get());
            counts.batched += BATCHED.with(|r| r.get());
            counts.splits += SPLITS.with(|r| r.get());
            counts.collapsed += COLLAPSED.with(|r| r.get());
            counts.emptied += EMPTIED.with(|r| r.get());
            counts.shared_records += fast
                .writes
                .iter()
                .filter(|w| w.record.buffer_len() > w.record.len())
                .count();
            let general = run(&store, policy, version, &ups, false);
            assert_same(&fast, &general, seed);
            // Over pages read from records, nodes below page roots are
            // hashed and checked on the way.
            let records = FromRecords(&store);
            let from_records = run(&records, policy, version, &ups, true);
            assert_same(&from_records, &general, seed);
            for w in fast.writes.iter().chain(&from_records.writes) {
                if let Some(page) = &w.page {
                    if let Err(e) = page.check_parts() {
                        panic!("version {version}, page {:?}: {e}, seed {seed}", w.path);
                    }
                }
            }
            store.apply(&fast).expect("apply");
            keys.extend(ups.iter().filter(|u| u.1.is_some()).map(|u| u.0));
            keys.sort_unstable();
            keys.dedup();
            version += 1;
        }
        counts
    }

    #[test]
    fn updating_in_place_writes_what_the_general_update_writes() {
        let seed = verity_testkit::seed("updating_in_place");
        // Each case the comparison must have met, with what its absence
        // says. A batch's records share their allocation, and are the
        // bytes the general update writes (`assert_same`).
        let unmet = |c: &InPlaceCounts| {
            [
                (c.in_place, "no page was updated in place"),
                (c.batched, "no pages were rehashed together"),
                (c.shared_records, "no records shared an allocation"),
                (
                    c.collapsed,
                    "no child page collapsed below a page updated in place",
                ),
                (
                    c.emptied,
                    "no child page emptied below a page updated in place",
                ),
                (c.fell_back, "no page planned in place went"),
            ]
            .into_iter()
            .find(|&(n, _)| n == 0)
            .map(|(_, what)| what)
        };
        // Keys clustered under a few root slots, so pages have dense and
        // sparse nodes below their roots, leaves in root slots and child
        // pages, and child pages of two or three keys that a delete
        // collapses.
        let key = |rng: &mut ChaCha8Rng| {
            let mut k: KeyHash = rng.gen();
            k[0] &= 0x31;
            k
        };
        let counts = compare_in_place(seed, (1500, 200), key, |c| unmet(c).is_none());
        if let Some(what) = unmet(&counts) {
            panic!("{what}, seed {seed}");
        }
    }

    #[test]
    fn pages_that_share_their_slots_split_and_remove_nodes_in_place() {
        let seed = verity_testkit::seed("shared_pages_split_and_remove_nodes");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let policy = DeltaPolicy::default();
        let store = MemPageStore::new();
        // One page at nibble 2 whose keys crowd under root slots 0 to 2
        // (90 keys: their nodes hold about 40 slots, more than `SHARE_MIN`,
        // so its versions share their slots) and sit alone in root slots 3
        // to 15.
        let under = |rng: &mut ChaCha8Rng, n: u8| {
            let mut k: KeyHash = rng.gen();
            k[0] = 0x01;
            k[1] = (k[1] & 0x0f) | n << 4;
            k
        };
        let mut keys: Vec<KeyHash> = (0..90).map(|i| under(&mut rng, i % 3)).collect();
        keys.extend((3..16).map(|n| under(&mut rng, n)));
        keys.sort_unstable();
        keys.dedup();
        let ups: Vec<Update> = keys.iter().map(|k| (*k, Some(rng.gen()))).collect();
        let out = apply(&store, policy, 0, 1, &ups).expect("update");
        store.apply(&out).expect("apply");
        let path = PagePath::from_key(&keys[0], 2);
        let crowded: Vec<KeyHash> = keys.iter().filter(|k| k[1] >> 4 < 3).copied().collect();
        let mut model: std::collections::BTreeMap<KeyHash, ValueHash> = ups
            .iter()
            .map(|(k, v)| (*k, v.unwrap_or_default()))
            .collect();
        let mut history = vec![model.clone()];
        let (splits_before, removals_before) = (
            crate::page::SHARED_SPLITS.with(|c| c.get()),
            crate::page::SHARED_REMOVALS.with(|c| c.get()),
        );
        let (mut version, mut sharing, rounds) = (1, 0, 60);
        for round in 0..rounds {
            // A new value in a crowded root slot, and in turns: a key that
            // parts from a root slot's lone leaf at nibble 3 only (the
            // slot gets a node of two leaves), or a key of such a node
            // going (the node goes, its other leaf moves up).
            let mut ups: Vec<Update> =
                vec![(crowded[rng.gen_range(0..crowded.len())], Some(rng.gen()))];
            // The keys of root slots 3 to 15, by slot.
            let mut slots: Vec<Vec<KeyHash>> = vec![Vec::new(); 16];
            for k in model.keys().filter(|k| k[1] >> 4 >= 3) {
                slots[usize::from(k[1] >> 4)].push(*k);
            }
            let want = 1 + round % 2;
            let with: Vec<&Vec<KeyHash>> = slots.iter().filter(|s| s.len() == want).collect();
            if !with.is_empty() {
                let slot = with[rng.gen_range(0..with.len())];
                if want == 1 {
                    let mut k = under(&mut rng, slot[0][1] >> 4);
                    k[1] = slot[0][1] ^ 0x01;
                    ups.push((k, Some(rng.gen())));
                } else {
                    ups.push((slot[rng.gen_range(0..2)], None));
                }
            }
            ups.sort_unstable_by_key(|u| u.0);
            ups.dedup_by_key(|u| u.0);
            let fast = run(&store, policy, version, &ups, true);
            let general = run(&store, policy, version, &ups, false);
            assert_same(&fast, &general, seed);
            store.apply(&fast).expect("apply");
            version += 1;
            let page = store.page(&path, version).expect("read").expect("the page");
            if let Err(e) = page.page.check_parts() {
                panic!("version {version}: {e}, seed {seed}");
            }
            let (_, own, len, _) = page.page.sharing()[1];
            sharing += usize::from(own < len);
            for (k, v) in &ups {
                match v {
                    Some(v) => model.insert(*k, *v),
                    None => model.remove(k),
                };
            }
            history.push(model.clone());
        }
        // A version that took its slots whole (it changed most of them)
        // does not stop the versions after it from sharing theirs.
        assert!(
            sharing * 2 >= rounds,
            "{sharing} of {rounds} versions shared their slots, seed {seed}"
        );
        // Every version still reads as it was written.
        for (v, model) in (1..).zip(&history) {
            let read = crate::read::leaves(&store, v, &[0; 32], usize::MAX).expect("leaves");
            let want: Vec<_> = model.iter().map(|(k, v)| (*k, *v)).collect();
            assert_eq!(read, want, "version {v}, seed {seed}");
        }
        let splits = crate::page::SHARED_SPLITS.with(|c| c.get()) - splits_before;
        let removals = crate::page::SHARED_REMOVALS.with(|c| c.get()) - removals_before;
        assert!(
            splits > 0,
            "no root slot of a page sharing its slots was split in place, seed {seed}"
        );
        assert!(
            removals > 0,
            "no node of a page sharing its slots was removed in place, seed {seed}"
        );
    }

    #[test]
    fn splitting_root_slots_in_place_writes_what_the_general_update_writes() {
        let seed = verity_testkit::seed("splitting_root_slots_in_place");
        // Pages of about 20 keys below two root slots: as the pages of
        // leaves of a large tree, they mix leaves in root slots with small
        // nodes below them, so inserts give root slots a second leaf
        // before and after other nodes.
        // Four runs from seeds that follow the printed one.
        let (mut in_place, mut splits) = (0, 0);
        for run in 0..4 {
            let key = |rng: &mut ChaCha8Rng| {
                let mut k: KeyHash = rng.gen();
                k[0] &= 0x01;
                k
            };
            let covered = |c: &InPlaceCounts| c.in_place > 0 && c.splits > 0;
            let counts = compare_in_place(seed.wrapping_add(run), (40, 12), key, covered);
            in_place += counts.in_place;
            splits += counts.splits;
        }
        assert!(in_place > 0, "no page was updated in place, seed {seed}");
        assert!(
            splits > 0,
            "no root slot was given a second leaf in place, seed {seed}"
        );
    }
}
