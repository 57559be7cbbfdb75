//! A decoded page: a trie subtree of [`PAGE_LEVELS`] (two) nibble levels
//! with the hashes inside it cached.
//!
//! The page root keeps the 15 inner hashes of the binary tree over its 16
//! slots, so changing one child rehashes 4 binary nodes, and a proof's
//! siblings are read, not computed. The nodes below the root are sized by
//! their occupancy: their occupied slots only, packed into one array, and
//! their binary tree only when they are dense. A slot holds a leaf's hash
//! and the index of its key and value in the page's leaf array (40 bytes a
//! slot). An update expands the nodes it changes into whole [`Inner`]
//! nodes (a `Dense` page), changes them and packs the page again,
//! copying the slots of the nodes it left alone.
//!
//! A page's record stores the hashes of the page root's slots that are
//! internal nodes, so a page read from the store hashes only its root: the
//! nodes below those slots stay *unhashed* (their slot hash is known, the
//! hashes of their leaves are not) until an update changes them (it hashes
//! them in its expanded copy and checks the stored hash) or a proof passes
//! through them ([`Page::hashed_node`]). Only the page root's children are
//! ever unhashed, and the page root never is; with two levels to a page,
//! their slots are leaves, child pages or empty.

use std::borrow::Cow;
use std::sync::Arc;

use verity_codec::page::{
    BaseEntries, HashParts, PageImage, PageRecord, SlotHashes, SlotPos, Terminal,
};

use crate::error::MerkleError;
use crate::hash::{
    block, internal_hash, internal_hash_many, leaf_hash, leaf_hash_many, nibble, push_block, Hash,
    KeyHash, ValueHash, EMPTY,
};
use crate::path::PagePath;
use crate::prefetch;

/// Nibble levels one page spans below its root node.
pub const PAGE_LEVELS: usize = 2;

/// A leaf's contents, kept in its page's leaf array (its hash is in the
/// slot that refers to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leaf {
    /// The key's path.
    pub key_hash: KeyHash,
    /// The value's hash.
    pub value_hash: ValueHash,
}

/// An array a page's versions share in part: the elements they share, and
/// the ones this version wrote. A page keeps three: its leaves, the packed
/// slots of the nodes below its root, and the binary trees of the dense
/// ones among those nodes.
///
/// A page's new version shares the old one's shared elements (an `Arc`
/// clone in place of copying them) and keeps what it writes in a short
/// array of its own: a new leaf, or a new value of a key it holds; the
/// slots of a node below the root that it changes, copied there whole with
/// its tree ([`Page::own_bottom`]). A shared element is never changed. An
/// id indexes the shared elements first, then the own ones. The own
/// elements are folded into new shared arrays, with the dead ones (shared
/// elements the version replaced) dropped, once copying them with every
/// version costs more than copying all of them once more (see
/// [`Page::fold_if_due`]). A page shares its slots and trees only when it
/// holds `SHARE_MIN` slots or more; a version that took them whole (see
/// [`Page::room_to_own`]) keeps them its own, and the next version that
/// changes at most half of them shares them again.
///
/// At 1M keys a page's leaves take about 1 KB and its packed slots about
/// 0.4 KB; at 10M its leaves about 9.5 KB, its slots about 4.6 KB and its
/// trees about 3.8 KB: a version that copies them all for one update moves
/// that much cold memory (BENCHMARKS.md).
#[derive(Debug, Clone)]
struct Parts<T> {
    /// Ids `0..shared.len()` (none when empty, so that a page without
    /// trees holds no allocation for them).
    shared: Option<Arc<[T]>>,
    /// Ids from `shared.len()` on.
    own: Vec<T>,
}

impl<T> Default for Parts<T> {
    fn default() -> Self {
        Parts {
            shared: None,
            own: Vec::new(),
        }
    }
}

/// A page's leaf array.
type Leaves = Parts<Leaf>;

impl<T: Copy> Parts<T> {
    /// All of `elements`, shared if `share`, else the version's own.
    fn packed(elements: Vec<T>, share: bool) -> Self {
        if share && !elements.is_empty() {
            Parts {
                shared: Some(elements.into()),
                own: Vec::new(),
            }
        } else {
            Parts {
                shared: None,
                own: elements,
            }
        }
    }

    /// The shared elements.
    #[inline]
    fn shared(&self) -> &[T] {
        self.shared.as_deref().unwrap_or(&[])
    }

    /// Where the reference counts of the shared elements are, if any: an
    /// `Arc`'s two counts come just before its data in the standard
    /// library's layout. Only for a prefetch hint, which a wrong address
    /// would only make useless.
    #[inline]
    fn counts(&self) -> Option<*const u8> {
        let data: *const u8 = self.shared.as_deref()?.as_ptr().cast();
        Some(data.wrapping_sub(2 * std::mem::size_of::<usize>()))
    }

    /// Number of shared elements: the first own id.
    #[inline]
    fn shared_len(&self) -> usize {
        self.shared().len()
    }

    /// Element `id`.
    #[inline]
    fn get(&self, id: u32) -> &T {
        let id = id as usize;
        let shared = self.shared();
        match shared.get(id) {
            Some(e) => e,
            None => &self.own[id - shared.len()],
        }
    }

    /// Element `id`, or `None` when there is no such element.
    #[inline]
    fn try_get(&self, id: u32) -> Option<&T> {
        let id = id as usize;
        let shared = self.shared();
        shared
            .get(id)
            .or_else(|| self.own.get(id.checked_sub(shared.len())?))
    }

    /// The `len` elements from id `start`, all shared or all own.
    #[inline]
    fn range(&self, start: u32, len: usize) -> &[T] {
        let start = start as usize;
        let shared = self.shared();
        match start.checked_sub(shared.len()) {
            Some(own) => &self.own[own..own + len],
            None => &shared[start..start + len],
        }
    }

    /// The `len` own elements from id `start`, to change.
    #[inline]
    fn range_mut(&mut self, start: u32, len: usize) -> &mut [T] {
        let own = start as usize - self.shared_len();
        &mut self.own[own..own + len]
    }

    /// Own element `id`, to change.
    #[inline]
    fn own_mut(&mut self, id: u32) -> &mut T {
        let own = id as usize - self.shared_len();
        &mut self.own[own]
    }

    /// Number of ids in use, dead ones included.
    #[inline]
    fn len(&self) -> usize {
        self.shared_len() + self.own.len()
    }

    /// Adds `e` and returns its id.
    #[inline]
    fn push(&mut self, e: T) -> u32 {
        self.own.push(e);
        (self.len() - 1) as u32
    }

    /// Puts `e` in own id `id`, moving the own elements from there on
    /// one id up.
    fn insert(&mut self, id: u32, e: T) {
        let own = id as usize - self.shared_len();
        self.own.insert(own, e);
    }

    /// Removes own element `id`, moving the own elements after it one id
    /// down.
    fn remove(&mut self, id: u32) {
        let own = id as usize - self.shared_len();
        self.own.remove(own);
    }

    /// Copies the `len` shared elements from id `start` to the end of the
    /// own ones and returns the first new id. Own ids are returned as they
    /// are.
    fn adopt(&mut self, start: u32, len: usize) -> u32 {
        let shared = self.shared.as_deref().unwrap_or(&[]);
        let Some(run) = shared.get(start as usize..start as usize + len) else {
            return start;
        };
        let id = (shared.len() + self.own.len()) as u32;
        self.own.extend_from_slice(run);
        id
    }

    /// Puts `e` in the place of element `id`, which nothing will refer to
    /// any more: in the same entry when it is this version's own, in a new
    /// one when it is shared (the shared entry is then dead, and the
    /// returned flag is true). Returns the element's id.
    #[inline]
    fn replace(&mut self, id: u32, e: T) -> (u32, bool) {
        match (id as usize).checked_sub(self.shared_len()) {
            Some(own) => {
                self.own[own] = e;
                (id, false)
            }
            None => (self.push(e), true),
        }
    }

    /// A copy that shares the shared elements, with room for `room` more
    /// of its own.
    fn with_room(&self, room: usize) -> Self {
        let mut own = Vec::new();
        if !self.own.is_empty() || room > 0 {
            // Allocated at its size at once (`reserve_exact` on an empty
            // array takes the path that grows one, about 70 instructions
            // more).
            own = Vec::with_capacity(self.own.len() + room);
            own.extend_from_slice(&self.own);
        }
        Parts {
            shared: self.shared.clone(),
            own,
        }
    }

    /// Room for `more` elements of its own, without growing the array
    /// more than that.
    fn reserve_exact(&mut self, more: usize) {
        if self.own.capacity() == 0 {
            // Allocated at once (see `Parts::with_room`).
            self.own = Vec::with_capacity(more);
        } else {
            self.own.reserve_exact(more);
        }
    }

    /// True when the own elements (copied by every version) or the dead
    /// ones (kept by every version) have grown enough to be worth new
    /// shared arrays: once more than one in `fold.dead` of the ids are
    /// dead, or once the own elements `k` pass `sqrt(2 n w)` for `n`
    /// elements in all and `w` (`fold.written`) written by a version.
    /// Folding every `k / w` versions copies `n` elements once and about
    /// `k / 2` own ones with each version, `n w / k + k / 2` a version, the
    /// least at `k = sqrt(2 n w)`.
    fn should_fold(&self, dead: usize, fold: Fold) -> bool {
        let (own, n) = (self.own.len(), self.len());
        dead * fold.dead > n
            || ((fold.alone || self.shared.is_some()) && own * own > 2 * n * fold.written)
    }

    /// Bytes of memory held: the shared elements in full (a cache holding
    /// several versions of a page counts them once per version).
    fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(self.shared()) + self.own.capacity() * std::mem::size_of::<T>()
    }
}

/// Fewest packed slots for a page to share its slots and trees with its
/// next versions (see [`Parts`]): below that (at 1M keys a page of leaves
/// holds about 9), the whole arrays are copied as they were before they
/// could be shared, where sharing them took more time in a block than it
/// saved (BENCHMARKS.md).
const SHARE_MIN: usize = 32;

/// When a part of a page folds (see `Parts::should_fold`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fold {
    /// About how many elements a version writes to its own.
    pub(crate) written: usize,
    /// The part folds once more than one in `dead` of its ids are dead.
    pub(crate) dead: usize,
    /// Whether own elements fold when nothing is shared: for leaves, a
    /// page the general update wrote; slots and trees are all the
    /// version's own only where it changed most of them, and the next
    /// version likely does too (a page near the root).
    pub(crate) alone: bool,
}

/// When the leaves, the slots and the trees of a page fold. A version
/// writes about a leaf, a run of slots (of up to 16) and a tree. Dead
/// slots and trees cost memory only, once for all the versions that share
/// them: up to as many as the live ones are kept. Dead leaves keep a
/// quarter: a fold of the leaves renumbers every slot too.
pub(crate) const FOLD: [Fold; 3] = [
    Fold {
        written: 1,
        dead: 4,
        alone: true,
    },
    Fold {
        written: 8,
        dead: 2,
        alone: false,
    },
    Fold {
        written: 1,
        dead: 2,
        alone: false,
    },
];

/// Index of an internal node in its page's node array.
pub type NodeId = u32;

/// Index of a leaf in its page's leaf array.
pub type LeafId = u32;

/// A slot of an internal node. Every variant carries its hash, so a node's
/// binary tree is rehashed from its slots alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Node {
    /// Nothing below.
    #[default]
    Empty,
    /// One key: its contents in [`Page::leaf`], and its hash.
    Leaf {
        /// Its index in the page's leaf array.
        id: LeafId,
        /// `leaf_hash(key_hash, value_hash)`.
        hash: Hash,
    },
    /// An internal node of the same page.
    Inner {
        /// Its id in the page: `n + 1` for the node below root slot `n`
        /// of a [`Page`] (the page root is [`Page::ROOT`]); an index of
        /// the node array while an update expands the page.
        id: NodeId,
        /// Its hash.
        hash: Hash,
    },
    /// The root of a child page (only at the page's last level), by hash.
    Page(Hash),
}

impl Node {
    /// The node's hash.
    #[inline]
    pub fn hash(&self) -> Hash {
        match self {
            Node::Empty => EMPTY,
            Node::Leaf { hash, .. } | Node::Inner { hash, .. } | Node::Page(hash) => *hash,
        }
    }

    /// The node's hash, by reference.
    #[inline]
    fn hash_ref(&self) -> &Hash {
        match self {
            Node::Empty => &EMPTY,
            Node::Leaf { hash, .. } | Node::Inner { hash, .. } | Node::Page(hash) => hash,
        }
    }

    /// True for [`Node::Empty`].
    #[inline]
    pub fn is_empty(&self) -> bool {
        matches!(self, Node::Empty)
    }
}

/// An internal node: 16 slots and the binary hash tree over them.
///
/// This is the form a node takes while an update changes it, and the form
/// of a page's root node. A page stores the nodes below its root packed
/// (their occupied slots only, see [`Page`]) and expands one into an
/// `Inner` when an update or a proof needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inner {
    /// The slots, indexed by nibble. In an unhashed node (see
    /// [`Inner::is_hashed`]) the hashes of its leaf slots are not computed.
    pub children: [Node; 16],
    /// Binary tree in heap order: `tree[0]` is the node's hash, the children
    /// of `tree[i]` are `tree[2i+1]` and `tree[2i+2]`, and the children of
    /// `tree[7..15]` are the slot hashes.
    tree: [Hash; 15],
    /// False while the node's hash is known only from its page's record
    /// (in the parent slot) and the hashes inside it are not computed.
    hashed: bool,
    /// True while the slot hashes are known but the binary tree above them
    /// is not computed (a node expanded for an update): the next
    /// [`Inner::rehash`] computes all of it.
    stale: bool,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            children: [Node::Empty; 16],
            tree: [EMPTY; 15],
            hashed: true,
            stale: false,
        }
    }
}

/// Heap index of binary node `index` at `level` (0 = node root, 3 = just
/// above the slots).
#[inline]
pub(crate) fn heap(level: usize, index: usize) -> usize {
    (1 << level) - 1 + index
}

impl Inner {
    /// The node's hash (of a hashed node; an unhashed node's hash is in
    /// its parent slot).
    #[inline]
    pub fn hash(&self) -> Hash {
        debug_assert!(!self.stale, "the hash of a node whose tree is stale");
        self.tree[0]
    }

    /// True when every hash inside the node is computed: always, except
    /// for a node below a page root whose hash came from the page's record
    /// and that nothing has changed since (see the module's notes).
    #[inline]
    pub fn is_hashed(&self) -> bool {
        self.hashed
    }

    /// The hash of binary subtree `index` at `level` (0..=4; level 4 is the
    /// slot itself).
    #[inline]
    pub fn subtree_hash(&self, level: usize, index: usize) -> Hash {
        if level == 4 {
            self.children[index].hash()
        } else {
            self.tree[heap(level, index)]
        }
    }

    /// Recomputes the binary hashes above the slots whose bits are set in
    /// `dirty` (bit `n` = slot `n`), or all of them if the tree is stale.
    pub fn rehash(&mut self, dirty: u16) {
        debug_assert!(self.hashed, "rehashing inside an unhashed node");
        let dirty = if self.stale { 0xffff } else { dirty };
        self.stale = false;
        let children = &self.children;
        if dirty == 0xffff {
            hash_tree_in_lanes(&mut self.tree, |n| children[n].hash());
        } else {
            rehash_tree(&mut self.tree, |n| children[n].hash(), dirty);
        }
    }

    /// Recomputes every binary hash of the node.
    pub fn rehash_all(&mut self) {
        self.rehash(0xffff);
    }

    /// Number of non-empty slots.
    pub fn occupied(&self) -> usize {
        self.children.iter().filter(|c| !c.is_empty()).count()
    }

    /// If exactly one slot is occupied and it holds a leaf, that slot.
    pub fn lone_leaf(&self) -> Option<usize> {
        let mut found = None;
        for (i, c) in self.children.iter().enumerate() {
            match c {
                Node::Empty => {}
                Node::Leaf { .. } if found.is_none() => found = Some(i),
                _ => return None,
            }
        }
        found
    }
}

/// Recomputes the binary hashes of `tree` (heap order, as in [`Inner`])
/// above the slots whose bits are set in `dirty` (bit `n` = slot `n`),
/// reading slot `n`'s hash from `slot(n)`.
fn rehash_tree(tree: &mut [Hash; 15], slot: impl Fn(usize) -> Hash, dirty: u16) {
    let sub = |tree: &[Hash; 15], level: usize, index: usize| {
        if level == 4 {
            slot(index)
        } else {
            tree[heap(level, index)]
        }
    };
    let mut mask = u32::from(dirty);
    for level in (0..4).rev() {
        let mut next = 0u32;
        for j in 0..(1usize << level) {
            if mask & (0b11 << (2 * j)) != 0 {
                let l = sub(tree, level + 1, 2 * j);
                let r = sub(tree, level + 1, 2 * j + 1);
                tree[heap(level, j)] = internal_hash(&l, &r);
                next |= 1 << j;
            }
        }
        mask = next;
    }
}

/// Computes every binary hash of `tree` (heap order, as in [`Inner`])
/// over the slot hashes `slot(n)`: the hashes [`rehash_tree`] computes
/// with every slot dirty, but a level at a time, the level's compressions
/// side by side in the CPU's lanes ([`internal_hash_many`]: 8, 4, 2 and 1
/// at a time, where [`rehash_tree`] runs 15 one after the other). A page
/// read from its records hashes its root's tree, and an update or a proof
/// the tree of each node below it that the record stored by hash only.
fn hash_tree_in_lanes(tree: &mut [Hash; 15], slot: impl Fn(usize) -> Hash) {
    let mut below: [Hash; 16] = std::array::from_fn(slot);
    let mut blocks = [[0u8; 64]; 8];
    let mut hashes = [EMPTY; 8];
    let mut at = [0usize; 8];
    for level in (0..4).rev() {
        let mut k = 0;
        for j in 0..1 << level {
            let (l, r) = (&below[2 * j], &below[2 * j + 1]);
            if *l == EMPTY && *r == EMPTY {
                tree[heap(level, j)] = EMPTY;
            } else {
                blocks[k] = block(l, r);
                at[k] = j;
                k += 1;
            }
        }
        internal_hash_many(&blocks[..k], &mut hashes[..k]);
        for (&j, hash) in at[..k].iter().zip(&hashes) {
            tree[heap(level, j)] = *hash;
        }
        for j in 0..1 << level {
            below[j] = tree[heap(level, j)];
        }
    }
}

/// The hashes of the leaves `slots` refers to (its [`Node::Leaf`]
/// entries; the others are left as they are), computed side by side
/// ([`leaf_hash_many`]).
fn hash_leaves_in_lanes(leaves: &Leaves, slots: &mut [Node]) {
    for slots in slots.chunks_mut(16) {
        let mut blocks = [[0u8; 64]; 16];
        let mut hashes = [EMPTY; 16];
        let mut at = [0usize; 16];
        let mut k = 0;
        for (n, slot) in slots.iter().enumerate() {
            if let Node::Leaf { id, .. } = slot {
                let l = leaves.get(*id);
                blocks[k] = block(&l.key_hash, &l.value_hash);
                at[k] = n;
                k += 1;
            }
        }
        leaf_hash_many(&blocks[..k], &mut hashes[..k]);
        for (&n, h) in at[..k].iter().zip(&hashes) {
            if let Node::Leaf { hash, .. } = &mut slots[n] {
                *hash = *h;
            }
        }
    }
}

/// Where a tree of a [`Rehash`] is.
#[derive(Debug, Clone, Copy)]
enum TreeAt {
    /// The page root's tree.
    Root,
    /// Tree `t` of [`Page::trees`], of the node below root slot `n`.
    Kept { n: usize, t: usize },
    /// The node below root slot `n`, which keeps no tree: its tree is
    /// computed in tree `w` of the rehash's work and dropped.
    Scratch { n: usize, w: usize },
}

/// A binary tree to rehash above the slots in `mask` (bit `i` = slot `i`;
/// then, level by level, the binary nodes that changed).
#[derive(Debug, Clone, Copy)]
struct TreeTask {
    page: usize,
    at: TreeAt,
    mask: u32,
    /// The binary nodes of the level being computed whose children are
    /// both empty (bit `j` = node `j`): they are `EMPTY`, no compression.
    empty: u16,
}

/// Rehashes the binary trees that updates in place left ([`Unhashed`]),
/// of many pages together: the nodes below the page roots, then the page
/// roots, each a binary level at a time, with the compressions of a level
/// (of every tree of every page) computed side by side in the CPU's SIMD
/// lanes ([`internal_hash_many`]). A page's update rehashes a chain of
/// binary nodes, each waiting for the one below: alone, one compression at
/// a time. The rehash computes the same binary nodes as [`rehash_tree`],
/// and keeps the trees [`Page::bottom_tree`] decides.
///
/// Its buffers are kept between runs.
#[derive(Debug, Default)]
pub(crate) struct Rehash {
    tasks: Vec<TreeTask>,
    /// The trees of the nodes that keep none, while they are computed
    /// (a kept tree is computed where the page keeps it).
    work: Vec<[Hash; 15]>,
    /// The inputs of a level's compressions, task by task, node by node.
    blocks: Vec<[u8; 64]>,
    /// The next level's inputs, gathered while a level's results are
    /// written.
    next: Vec<[u8; 64]>,
    hashes: Vec<Hash>,
}

impl Rehash {
    /// Rehashes the trees of `pages`, each left as its [`Unhashed`] says;
    /// afterwards the pages' hashes are valid.
    pub(crate) fn run(&mut self, pages: &mut [(&mut Page, Unhashed)]) {
        self.tasks.clear();
        self.work.clear();
        for (i, (page, unhashed)) in pages.iter_mut().enumerate() {
            let mut bottoms = unhashed.bottoms;
            while bottoms != 0 {
                let n = bottoms.trailing_zeros() as usize;
                bottoms &= bottoms - 1;
                let b = page.bottoms[n];
                debug_assert!(b.hashed, "rehashing an unhashed node");
                // A kept tree above the changed slots; a new tree, or a
                // sparse node's, over the occupied slots (the others are
                // empty, and so is the tree it starts from).
                let (at, mask) = match page.bottom_tree(n) {
                    Some((t, false)) => (TreeAt::Kept { n, t }, unhashed.below[n]),
                    Some((t, true)) => (TreeAt::Kept { n, t }, b.mask),
                    None => {
                        self.work.push([EMPTY; 15]);
                        (
                            TreeAt::Scratch {
                                n,
                                w: self.work.len() - 1,
                            },
                            b.mask,
                        )
                    }
                };
                self.tasks.push(TreeTask {
                    page: i,
                    at,
                    mask: u32::from(mask),
                    empty: 0,
                });
            }
        }
        self.levels(pages);
        for task in &self.tasks {
            let page = &mut *pages[task.page].0;
            let (n, hash) = match task.at {
                TreeAt::Root => continue,
                TreeAt::Kept { n, t } => (n, page.trees.get(t as u32)[0]),
                TreeAt::Scratch { n, w } => (n, self.work[w][0]),
            };
            page.root.children[n] = Node::Inner {
                id: n as NodeId + 1,
                hash,
            };
        }
        // The trees of nodes no longer dense go, once no task refers to
        // them by index.
        for (page, unhashed) in pages.iter_mut() {
            let mut bottoms = unhashed.bottoms;
            while bottoms != 0 {
                let n = bottoms.trailing_zeros() as usize;
                bottoms &= bottoms - 1;
                if (page.bottoms[n].mask.count_ones() as usize) < TREE_MIN {
                    page.drop_tree(n);
                }
            }
        }
        self.tasks.clear();
        for (i, (page, unhashed)) in pages.iter_mut().enumerate() {
            debug_assert!(page.root.hashed, "rehashing inside an unhashed node");
            let dirty = if page.root.stale {
                0xffff
            } else {
                unhashed.root
            };
            page.root.stale = false;
            if dirty != 0 {
                self.tasks.push(TreeTask {
                    page: i,
                    at: TreeAt::Root,
                    mask: u32::from(dirty),
                    empty: 0,
                });
            }
        }
        self.levels(pages);
    }

    /// Computes the tasks' trees, a binary level at a time from the slots
    /// up, as [`rehash_tree`] does for one tree: a kept tree (and the page
    /// root's) where the page keeps it, another in `work`. A task's
    /// results of a level are written and the next level's inputs
    /// gathered in one visit of the task (two visits a level cost about
    /// 70 instructions an update more; BENCHMARKS.md).
    fn levels(&mut self, pages: &mut [(&mut Page, Unhashed)]) {
        let Rehash {
            tasks,
            work,
            blocks,
            next,
            hashes,
        } = self;
        // The lowest level's inputs: the slots' hashes.
        blocks.clear();
        for task in tasks.iter_mut() {
            let page = &*pages[task.page].0;
            let mask = task.mask;
            (task.mask, task.empty) = match task.at {
                TreeAt::Root => {
                    let c = &page.root.children;
                    gather_level(mask, blocks, |j| {
                        (c[2 * j].hash_ref(), c[2 * j + 1].hash_ref())
                    })
                }
                TreeAt::Kept { n, .. } | TreeAt::Scratch { n, .. } => {
                    let (b, slots) = (&page.bottoms[n], &page.slots);
                    gather_level(mask, blocks, |j| {
                        (
                            b.slot_ref(slots, 2 * j).hash_ref(),
                            b.slot_ref(slots, 2 * j + 1).hash_ref(),
                        )
                    })
                }
            };
        }
        for level in (0..4).rev() {
            // The buffer only grows: the compressions overwrite what they
            // use of it.
            if hashes.len() < blocks.len() {
                hashes.resize(blocks.len(), EMPTY);
            }
            let hashes = &mut hashes[..blocks.len()];
            internal_hash_many(blocks, hashes);
            // The results go where the gather found their inputs: task by
            // task, node by node; then the level above is gathered.
            let mut computed = hashes.iter();
            next.clear();
            for task in tasks.iter_mut() {
                let page = &mut *pages[task.page].0;
                let tree = match task.at {
                    TreeAt::Root => &mut page.root.tree,
                    TreeAt::Kept { t, .. } => page.trees.own_mut(t as u32),
                    TreeAt::Scratch { w, .. } => &mut work[w],
                };
                let mut nodes = task.mask;
                while nodes != 0 {
                    let j = nodes.trailing_zeros() as usize;
                    nodes &= nodes - 1;
                    let node = &mut tree[heap(level, j)];
                    if task.empty & (1 << j) != 0 {
                        *node = EMPTY;
                    } else if let Some(hash) = computed.next() {
                        *node = *hash;
                    } else {
                        debug_assert!(false, "fewer hashes than the gather listed");
                    }
                }
                if level > 0 {
                    let tree = &*tree;
                    (task.mask, task.empty) = gather_level(task.mask, next, |j| {
                        (&tree[heap(level, 2 * j)], &tree[heap(level, 2 * j + 1)])
                    });
                }
            }
            debug_assert!(
                computed.next().is_none(),
                "more hashes than the gather listed"
            );
            std::mem::swap(blocks, next);
        }
    }
}

/// Lists the compressions of one level of a [`Rehash`] task's tree above
/// the changed nodes `mask` of the level below: each binary node's input,
/// from its children's hashes `pair(j)`, none for two empty children.
/// Returns the level's changed nodes (bit `j` = node `j`) and those of
/// them whose children are both empty.
#[inline]
fn gather_level<'h>(
    mask: u32,
    blocks: &mut Vec<[u8; 64]>,
    pair: impl Fn(usize) -> (&'h Hash, &'h Hash),
) -> (u32, u16) {
    // Bit 2j: binary node j of this level is above a change.
    let mut pairs = (mask | mask >> 1) & 0x5555;
    let (mut next, mut empty) = (0u32, 0u16);
    while pairs != 0 {
        let j = (pairs.trailing_zeros() / 2) as usize;
        pairs &= pairs - 1;
        next |= 1 << j;
        let (l, r) = pair(j);
        if *l == EMPTY && *r == EMPTY {
            empty |= 1 << j;
        } else {
            push_block(blocks, l, r);
        }
    }
    (next, empty)
}

/// The hash of a node that keeps no binary tree, from its occupied slots
/// `run` (in nibble order; bit `n` of `mask` = slot `n`): only the binary
/// nodes with an occupied slot below them are visited, where
/// [`rehash_tree`] visits all 15 and fills a tree that is then dropped.
fn sparse_tree_hash(mask: u16, run: &[Node]) -> Hash {
    /// The binary node over the `width` slots from `lo`.
    fn below(mask: u16, lo: u32, width: u32, run: &mut std::slice::Iter<'_, Node>) -> Hash {
        let slots = (u32::from(mask) >> lo) & ((1 << width) - 1);
        if slots == 0 {
            EMPTY
        } else if width == 1 {
            run.next().map_or(EMPTY, Node::hash)
        } else {
            let half = width / 2;
            let left = below(mask, lo, half, run);
            let right = below(mask, lo + half, half, run);
            internal_hash(&left, &right)
        }
    }
    below(mask, 0, 16, &mut run.iter())
}

/// Where the packed slots of a node below the page root are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bottom {
    /// Id of its first occupied slot in [`Page::slots`]; the node's run of
    /// slots is all shared or all the page's own.
    start: u32,
    /// Its occupied slots (bit `n` = slot `n`), stored in nibble order.
    mask: u16,
    /// False while its leaf slots' hashes are not computed (the page was
    /// read from a record that stores the node's hash).
    hashed: bool,
    /// Id of its binary tree in [`Page::trees`], or `NO_TREE`.
    tree: u32,
}

impl Bottom {
    /// Index in [`Page::slots`] of slot `m` of the node, where it is
    /// stored if it is occupied, or would be inserted if not.
    #[inline]
    fn index(&self, m: usize) -> usize {
        (self.start + (self.mask & ((1u16 << m) - 1)).count_ones()) as usize
    }

    /// Slot `m` of the node, whose run is in `slots` (its page's).
    #[inline]
    fn slot(&self, slots: &Parts<Node>, m: usize) -> Node {
        *self.slot_ref(slots, m)
    }

    /// [`Bottom::slot`], by reference.
    #[inline]
    fn slot_ref<'s>(&self, slots: &'s Parts<Node>, m: usize) -> &'s Node {
        if self.mask & (1 << m) == 0 {
            &Node::Empty
        } else {
            slots.get(self.index(m) as u32)
        }
    }
}

/// What [`Page::warm_slot`] read of a page.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WarmSlot {
    node: Node,
    bottom: Bottom,
}

#[cfg(test)]
thread_local! {
    /// Root slots that an update in place on this thread gave a second
    /// leaf (`Edit::split`) while the page shared its slots with another
    /// version.
    pub(crate) static SHARED_SPLITS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Nodes below a page root that an update in place on this thread
    /// left empty or with one leaf (`Edit::finish_bottom` removing them)
    /// while the page shared its slots with another version.
    pub(crate) static SHARED_REMOVALS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// [`Bottom::tree`] of a node whose binary tree is not kept.
const NO_TREE: u32 = u32::MAX;

impl Default for Bottom {
    fn default() -> Self {
        Bottom {
            start: 0,
            mask: 0,
            hashed: false,
            tree: NO_TREE,
        }
    }
}

/// Fewest occupied slots for a node below a page root to keep its binary
/// tree: recomputing the tree of a sparse node costs a few compressions
/// (at most 7 for two slots), of a full one 15, on every update or proof
/// through it. The 15 hashes take 480 bytes, as much as 12 slots.
const TREE_MIN: usize = 8;

/// A decoded page: a subtree of [`PAGE_LEVELS`] (two) nibble levels.
///
/// The page root is kept whole, with the binary hash tree over its slots.
/// The internal nodes below it (at most 16, one per root slot) keep only
/// their occupied slots, packed into one array, and their binary tree only
/// when they are dense (`TREE_MIN` slots or more): an update expands the
/// nodes it changes (recomputing a sparse node's tree), and a proof through
/// one expands a copy ([`Page::hashed_node`]). Sized by occupancy, a page
/// holding 15 keys takes about 2.8 KB instead of 8.2 KB, and copying it for
/// an update moves that much less. Leaves sit in one more array. The
/// leaves, and in a page of `SHARE_MIN` slots or more the slots and the
/// trees too, are shared with the page's other versions (see `Parts`): a
/// version copies what it changes, so a page is copied, read and dropped
/// as a few blocks of memory (the root and its bottoms, the slots and
/// trees of the nodes it changed, the leaves it wrote). Its root is internal: a page
/// exists only where the trie has an internal node at a page boundary, and
/// for the trie root.
///
/// The page root has [`NodeId`] [`Page::ROOT`]; the node below root slot
/// `n` has id `n + 1`.
///
/// Two pages are equal when they hold the same terminals at the same
/// positions (their leaves may be numbered differently).
#[derive(Debug, Clone, Default)]
pub struct Page {
    root: Inner,
    bottoms: [Bottom; 16],
    slots: Parts<Node>,
    /// The binary trees of the dense nodes below the root.
    trees: Parts<[Hash; 15]>,
    leaves: Leaves,
    /// Leaves in `leaves` that no slot refers to any more.
    dead_leaves: u32,
    /// Shared slots in `slots` that no node refers to any more (their
    /// nodes' runs moved to the own slots).
    dead_slots: u32,
    /// Shared trees in `trees` that no node refers to any more.
    dead_trees: u32,
    /// Leaves and child references in the page.
    terminals: u32,
}

impl PartialEq for Page {
    fn eq(&self, other: &Page) -> bool {
        self.hash() == other.hash() && self.to_image() == other.to_image()
    }
}

impl Eq for Page {}

/// A page as read from a source: the page, the version that wrote it, and
/// the state of its delta chain.
#[derive(Debug, Clone)]
pub struct VersionedPage {
    /// The version whose commit wrote this page.
    pub version: u64,
    /// The decoded page.
    pub page: Arc<Page>,
    /// Its delta chain, which decides whether the next write is a delta.
    pub chain: ChainInfo,
}

/// How far a page's stored form is from its last base page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChainInfo {
    /// Deltas written since the last base page (0 when this is a base).
    pub deltas: u32,
    /// Encoded bytes of those deltas.
    pub delta_bytes: u32,
}

/// A child page that an update in place changes (see
/// [`Page::plan_in_place`]).
#[derive(Debug, Clone)]
pub(crate) struct ChildUpdate {
    /// The page root's slot above the child page.
    pub(crate) n: u8,
    /// The slot of the node below it that refers to the child page.
    pub(crate) m: u8,
    /// The updates below the child page, as a range of the page's updates.
    pub(crate) range: std::ops::Range<usize>,
}

/// What a written child page leaves in its parent's slot (for the general
/// update and for [`Page::in_place`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Up {
    /// Nothing: every key below the page was deleted.
    Empty,
    /// The lone leaf the page collapsed to, with the leaf's hash: the leaf
    /// moves up into the parent's slot.
    Leaf(Leaf, Hash),
    /// The page, with its new hash.
    Page(Hash),
}

/// An update in place planned by [`Page::plan_in_place`].
#[derive(Debug)]
pub(crate) struct InPlacePlan {
    /// The child pages to update first, in key order.
    pub(crate) children: Vec<ChildUpdate>,
    /// At most how many leaves the update adds to the page.
    pub(crate) added: usize,
    /// At most how many leaf entries the update writes: the leaves it adds
    /// and the leaves whose values it changes.
    pub(crate) written: usize,
    /// Root slots holding a leaf (or given one) that a second leaf turns
    /// into a node below the root: each such node takes the two leaves'
    /// packed slots, at most one more than the leaves added.
    pub(crate) splits: usize,
}

/// A page updated in place (see [`Page::in_place`]).
#[derive(Debug)]
pub(crate) struct InPlace {
    /// The new page (its terminal count is the old page's), its binary
    /// trees not yet rehashed: see [`Unhashed`].
    pub(crate) page: Arc<Page>,
    /// The binary trees of `page` left to rehash.
    pub(crate) unhashed: Unhashed,
    /// Leaves the update added to the page.
    pub(crate) added: usize,
    /// Terminals the update deleted from the page: leaves, and the
    /// references of child pages whose keys all went.
    pub(crate) removed: usize,
}

/// The binary trees of a page that an update in place changed and left to
/// [`Rehash::run`], so that the trees of many pages are rehashed together,
/// a tree level at a time, several compressions side by side
/// ([`internal_hash_many`]). Until then the hashes of the changed root
/// slots that hold internal nodes, and of the page, are not valid.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Unhashed {
    /// Root slots whose hashes changed.
    root: u16,
    /// Root slots whose nodes below changed and stay internal.
    bottoms: u16,
    /// Per such root slot, the slots of the node below it that changed.
    below: [u16; 16],
}

/// A copy of a page being updated in place.
struct Edit<'a> {
    page: &'a mut Page,
    /// Root slots whose hashes changed.
    root_dirty: u16,
    /// Per root slot, the slots of the node below it that changed.
    below: [u16; 16],
    /// Root slots whose nodes below changed and stay internal: their
    /// trees are left to rehash.
    bottoms: u16,
    added: usize,
    removed: usize,
}

impl Edit<'_> {
    /// Puts `node` in root slot `n`, or in slot `m` of the node below it
    /// (hashing that node first if it is unhashed, and adding or removing
    /// the packed slot as the slot fills or empties); returns the slot's
    /// position.
    fn set(&mut self, n: usize, m: Option<usize>, node: Node) -> Result<SlotPos, &'static str> {
        let page = &mut *self.page;
        let pos = match m {
            None => {
                page.root.children[n] = node;
                self.root_dirty |= 1 << n;
                SlotPos::new(1, n as u16)
            }
            Some(m) => {
                page.own_bottom(n);
                // An unhashed node is checked with the slots it was stored
                // with.
                if !page.bottoms[n].hashed {
                    page.hash_bottom(n)?;
                }
                let b = page.bottoms[n];
                let i = b.index(m) as u32;
                match (b.mask & (1 << m) != 0, node.is_empty()) {
                    (true, false) => *page.slots.own_mut(i) = node,
                    (true, true) => {
                        page.slots.remove(i);
                        page.bottoms[n].mask &= !(1 << m);
                        page.shift_runs(n, i, -1);
                    }
                    (false, false) => {
                        page.slots.insert(i, node);
                        page.bottoms[n].mask |= 1 << m;
                        page.shift_runs(n, i, 1);
                    }
                    (false, true) => {}
                }
                self.below[n] |= 1 << m;
                SlotPos::new(2, (n << 4 | m) as u16)
            }
        };
        Ok(pos.unwrap_or_else(unreachable_pos))
    }

    /// Gives the leaf `id` in root slot `n` (or slot `m` of the node below
    /// it) the value `value_hash`, whose leaf hash is `hash`: a new leaf
    /// entry when `id` is shared with the page's other versions, the same
    /// one when it is this version's own. Returns the slot's position.
    fn set_value(
        &mut self,
        n: usize,
        m: Option<usize>,
        id: LeafId,
        (key_hash, value_hash): (&KeyHash, &ValueHash),
        hash: Hash,
    ) -> Result<SlotPos, &'static str> {
        // An unhashed node is checked with the leaves it was stored with,
        // before this one changes.
        if m.is_some() && !self.page.bottoms[n].hashed {
            self.page.hash_bottom(n)?;
        }
        let leaf = Leaf {
            key_hash: *key_hash,
            value_hash: *value_hash,
        };
        let (id, moved) = self.page.leaves.replace(id, leaf);
        self.page.dead_leaves += u32::from(moved);
        self.set(n, m, Node::Leaf { id, hash })
    }

    /// Moves the leaf in root slot `n` (of a page root at nibble `depth`)
    /// into a new node below the slot, where a second leaf is about to
    /// join it, and lists the move as a diff from `old` (the page before
    /// the update) finds it: the leaf added below, and the root slot's
    /// terminal in `old`, if any, removed. The node's hash is set when it
    /// is rehashed (see [`Edit::finish_bottom`]).
    fn split(
        &mut self,
        old: &Page,
        n: usize,
        depth: usize,
        changes: &mut Vec<(SlotPos, Option<Terminal>)>,
    ) -> Result<(), &'static str> {
        let page = &mut *self.page;
        let leaf @ Node::Leaf { id, .. } = page.root.children[n] else {
            return Err(NOT_IN_PLACE);
        };
        let l = *page.leaves.get(id);
        let m = usize::from(nibble(&l.key_hash, depth + 1));
        #[cfg(test)]
        if page.slots.shared_len() > 0 {
            SHARED_SPLITS.with(|c| c.set(c.get() + 1));
        }
        // The node's run goes after the own slots (an emptied run there
        // moves up with them).
        let start = page.slots.push(leaf);
        page.shift_runs(n, start, 1);
        page.bottoms[n] = Bottom {
            start,
            mask: 1 << m,
            hashed: true,
            tree: NO_TREE,
        };
        page.root.children[n] = Node::Inner {
            id: n as NodeId + 1,
            hash: EMPTY,
        };
        self.root_dirty |= 1 << n;
        self.below[n] |= 1 << m;
        let above = SlotPos::new(1, n as u16).unwrap_or_else(unreachable_pos);
        changes.retain(|(pos, _)| *pos != above);
        if !old.root.children[n].is_empty() {
            changes.push((above, None));
        }
        let below = SlotPos::new(2, (n << 4 | m) as u16).unwrap_or_else(unreachable_pos);
        changes.push((below, Some(leaf_terminal(&l.key_hash, &l.value_hash))));
        Ok(())
    }

    /// Leaves the changed node below root slot `n` to rehash, or, when it
    /// is left empty or with one leaf, removes it (the leaf moves up into
    /// the root slot) and lists the changes of that slot as a diff finds
    /// them: every terminal `old` had below it removed, and the leaf added
    /// above.
    fn finish_bottom(
        &mut self,
        old: &Page,
        n: usize,
        changes: &mut Vec<(SlotPos, Option<Terminal>)>,
    ) {
        let page = &mut *self.page;
        self.root_dirty |= 1 << n;
        let b = page.bottoms[n];
        let lone = match (b.mask.count_ones(), page.slots.try_get(b.start)) {
            (0, _) => Node::Empty,
            (1, Some(leaf @ Node::Leaf { .. })) => *leaf,
            _ => {
                // The hash is set by the rehash.
                page.root.children[n] = Node::Inner {
                    id: n as NodeId + 1,
                    hash: EMPTY,
                };
                self.bottoms |= 1 << n;
                return;
            }
        };
        #[cfg(test)]
        if page.slots.shared_len() > 0 {
            SHARED_REMOVALS.with(|c| c.set(c.get() + 1));
        }
        if !lone.is_empty() {
            page.slots.remove(b.start);
            page.shift_runs(n, b.start, -1);
        }
        page.drop_tree(n);
        page.bottoms[n] = Bottom::default();
        page.root.children[n] = lone;
        changes.retain(|(pos, _)| !(pos.depth() == 2 && usize::from(pos.nibble(0)) == n));
        for (m, slot) in old.children(n as NodeId + 1) {
            old.terminals_of(&slot, 2, (n << 4 | m) as u16, |pos, _| {
                changes.push((pos, None))
            });
        }
        if let Node::Leaf { id, .. } = lone {
            let l = *page.leaves.get(id);
            let pos = SlotPos::new(1, n as u16).unwrap_or_else(unreachable_pos);
            changes.push((pos, Some(leaf_terminal(&l.key_hash, &l.value_hash))));
        }
    }
}

/// Puts a delta's changes in position order, keeping the addition where
/// a removal and an addition share a position (`None` sorts first; an
/// unstable sort needs no scratch buffer, and the positions with their
/// kind are unique).
fn sort_changes(changes: &mut Vec<(SlotPos, Option<Terminal>)>) {
    changes.sort_unstable_by_key(|c| (c.0, c.1.is_some()));
    changes.dedup_by(|later, earlier| {
        if later.0 == earlier.0 {
            *earlier = *later;
            true
        } else {
            false
        }
    });
}

/// The terminal of a leaf.
fn leaf_terminal(key_hash: &KeyHash, value_hash: &ValueHash) -> Terminal {
    Terminal::Leaf {
        key_hash: *key_hash,
        value_hash: *value_hash,
    }
}

/// The nibbles at `depth` and `depth + 1` of `key_hash`: its root slot
/// and the slot below that in a page whose root is at nibble `depth`. A
/// page is [`PAGE_LEVELS`] (two) nibbles deep and its root is at an even
/// nibble, so the two are the halves of one byte of the key hash.
#[inline]
fn slot_nibbles(key_hash: &KeyHash, depth: usize) -> (usize, usize) {
    debug_assert!(
        depth.is_multiple_of(PAGE_LEVELS),
        "a page root at nibble {depth}"
    );
    let b = key_hash[depth / 2];
    (usize::from(b >> 4), usize::from(b & 0xf))
}

/// The set bits of `mask`, lowest first.
#[inline]
fn bits(mut mask: u16) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let n = mask.trailing_zeros() as usize;
        mask &= mask.wrapping_sub(1);
        (n < 16).then_some(n)
    })
}

/// The id an expanded page gives a node below its root that the update
/// leaves packed (it is copied from the old page as it is).
const PACKED: NodeId = NodeId::MAX;

impl Page {
    /// Id of the page's root node.
    pub const ROOT: NodeId = 0;

    /// Bytes of memory the decoded page holds: what a cache of pages counts
    /// against its budget.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Page>()
            + self.slots.heap_bytes()
            + self.trees.heap_bytes()
            + self.leaves.heap_bytes()
    }

    /// The page root's hash (the page root is always hashed).
    #[inline]
    pub fn hash(&self) -> Hash {
        self.root.hash()
    }

    /// The page's root node.
    #[inline]
    pub fn root(&self) -> &Inner {
        &self.root
    }

    /// The packed slots of the node below root slot `n`.
    #[inline]
    fn run(&self, n: usize) -> &[Node] {
        let b = &self.bottoms[n];
        self.slots.range(b.start, b.mask.count_ones() as usize)
    }

    /// Slot `n` of internal node `id`.
    #[inline]
    pub fn child(&self, id: NodeId, n: usize) -> Node {
        if id == Self::ROOT {
            return self.root.children[n];
        }
        self.bottoms[id as usize - 1].slot(&self.slots, n)
    }

    /// The occupied slots of internal node `id`, in nibble order.
    pub fn children(&self, id: NodeId) -> impl Iterator<Item = (usize, Node)> + '_ {
        let slots = self.slots_of(id);
        let mut run = slots.runs.iter();
        bits(slots.mask).map(move |n| (n, slots.take(&mut run, n)))
    }

    /// True when the hashes inside internal node `id` are computed (or,
    /// below the page root, its leaf slots' hashes).
    #[inline]
    fn is_hashed(&self, id: NodeId) -> bool {
        id == Self::ROOT || self.bottoms[id as usize - 1].hashed
    }

    /// Internal node `id` with every hash inside it: the page root itself,
    /// or a node below it, expanded and hashed now (what a proof through it
    /// reads; the page, shared by readers, is left as it is).
    pub fn hashed_node(&self, id: NodeId) -> Cow<'_, Inner> {
        if id == Self::ROOT {
            return Cow::Borrowed(&self.root);
        }
        let mut node = self.expand(id as usize - 1);
        if node.stale {
            node.rehash_all();
        }
        Cow::Owned(node)
    }

    /// The node below root slot `n` as an [`Inner`] with every slot hash
    /// computed, and its binary tree if the page keeps it (stale if not).
    fn expand(&self, n: usize) -> Inner {
        let b = self.bottoms[n];
        let mut node = Inner::default();
        match self.trees.try_get(b.tree) {
            Some(tree) => node.tree = *tree,
            None => node.stale = true,
        }
        for (m, slot) in self.children(n as NodeId + 1) {
            node.children[m] = slot;
        }
        if !b.hashed {
            hash_leaves_in_lanes(&self.leaves, &mut node.children);
        }
        node
    }

    /// The node below root slot `n`, expanded for an update: when its slot
    /// hashes were not known, its hash is computed and checked against
    /// `stored` (the root slot's).
    fn expand_checked(&self, n: usize, stored: &Hash) -> Result<Inner, &'static str> {
        let mut node = self.expand(n);
        if !self.bottoms[n].hashed {
            debug_assert!(node.stale, "an unhashed node with a kept tree");
            node.rehash_all();
            if node.hash() != *stored {
                return Err(STORED_HASH_MISMATCH);
            }
        }
        Ok(node)
    }

    /// Recomputes every hash that the page's record stored in place of a
    /// subtree and compares it with the stored one: reading a page trusts
    /// them (its record is checksummed), a check of the store does not.
    pub fn verify_stored_hashes(&self) -> Result<(), &'static str> {
        for (n, child) in self.root.children.iter().enumerate() {
            if let Node::Inner { hash, .. } = child {
                if !self.bottoms[n].hashed {
                    self.expand_checked(n, hash)?;
                }
            }
        }
        Ok(())
    }

    /// The hashes of the page root's slots in `mask` (bit `n` = slot `n`)
    /// that are internal nodes: what the page's records store.
    pub fn slot_hashes(&self, mask: u16) -> SlotHashes {
        let HashParts(mask, hashes) = self.slot_hash_parts(mask);
        bits(mask).map(|n| n as u8).zip(hashes.copied()).collect()
    }

    /// The contents of leaf `id` of this page.
    #[inline]
    pub fn leaf(&self, id: LeafId) -> &Leaf {
        self.leaves.get(id)
    }

    /// Asks the CPU to bring what an update in place of the page reads
    /// first into its caches, without waiting for it: the page's struct
    /// and its own arrays (which the copy copies), and the reference
    /// counts of its shared arrays (which the copy takes). Called for many
    /// pages before they are updated, so their misses overlap.
    pub(crate) fn prefetch(&self) {
        prefetch::value(self);
        prefetch::slice(&self.leaves.own);
        prefetch::slice(&self.slots.own);
        for counts in [
            self.leaves.counts(),
            self.slots.counts(),
            self.trees.counts(),
        ]
        .into_iter()
        .flatten()
        {
            prefetch::bytes(counts, 16);
        }
    }

    /// Asks the CPU to bring all of the page's leaves into its caches,
    /// without waiting: a base record reads every one, in slot order,
    /// where each would otherwise wait for its line in turn.
    pub(crate) fn prefetch_leaves(&self) {
        prefetch::slice(self.leaves.shared());
        prefetch::slice(&self.leaves.own);
    }

    /// The page root's slot on `key_hash`'s path (the page root at nibble
    /// `depth`), and where the node below it keeps its slots: the first of
    /// the two reads of [`Page::warm_leaf`].
    pub(crate) fn warm_slot(&self, depth: usize, key_hash: &KeyHash) -> WarmSlot {
        let n = usize::from(nibble(key_hash, depth));
        WarmSlot {
            node: self.root.children[n],
            bottom: self.bottoms[n],
        }
    }

    /// Reads the leaf that an update of `key_hash` reaches first, given
    /// what [`Page::warm_slot`] read, and returns a byte of it (to be
    /// passed to [`std::hint::black_box`]). The two only bring the lines
    /// an update reads first into the cache: called for many pages, a
    /// stage at a time, their cache misses overlap, where an update of
    /// one page after another waits on each in turn.
    pub(crate) fn warm_leaf(&self, depth: usize, key_hash: &KeyHash, slot: WarmSlot) -> u8 {
        let id = match slot.node {
            Node::Leaf { id, .. } => Some(id),
            Node::Inner { .. } => {
                let m = usize::from(nibble(key_hash, depth + 1));
                match self.slots.try_get(slot.bottom.index(m) as u32) {
                    Some(Node::Leaf { id, .. }) => Some(*id),
                    _ => None,
                }
            }
            Node::Empty | Node::Page(_) => None,
        };
        // A leaf of 64 bytes after an `Arc`'s counts spans two lines.
        id.and_then(|id| self.leaves.try_get(id))
            .map_or(0, |l| l.key_hash[0] ^ l.value_hash[31])
    }

    /// How the page keeps its parts, for tests: for its leaves, its
    /// packed slots and its trees, in this order, the address of the
    /// shared elements, how many elements of its own it has, its ids in
    /// use and how many of them are dead.
    #[cfg(test)]
    pub(crate) fn sharing(&self) -> [(*const u8, usize, usize, usize); 3] {
        fn of<T: Copy>(p: &Parts<T>, dead: u32) -> (*const u8, usize, usize, usize) {
            let shared = p.shared().as_ptr().cast::<u8>();
            (shared, p.own.len(), p.len(), dead as usize)
        }
        [
            of(&self.leaves, self.dead_leaves),
            of(&self.slots, self.dead_slots),
            of(&self.trees, self.dead_trees),
        ]
    }

    /// Checks, for tests, how the page keeps its slots and trees: the runs
    /// of the nodes below the root do not overlap, the own slots and trees
    /// are all in use, and the dead counts are the shared slots and trees
    /// no node uses.
    #[cfg(test)]
    pub(crate) fn check_parts(&self) -> Result<(), String> {
        let (mut runs, mut trees) = (Vec::new(), Vec::new());
        for (n, c) in self.root.children.iter().enumerate() {
            if matches!(c, Node::Inner { .. }) {
                let b = self.bottoms[n];
                runs.push((b.start as usize, b.mask.count_ones() as usize));
                if b.tree != NO_TREE {
                    trees.push(b.tree as usize);
                }
            }
        }
        runs.sort_unstable();
        trees.sort_unstable();
        if runs.windows(2).any(|w| w[0].0 + w[0].1 > w[1].0) {
            return Err(format!("overlapping runs {runs:?}"));
        }
        if trees.windows(2).any(|w| w[0] == w[1]) {
            return Err(format!("a tree kept twice {trees:?}"));
        }
        let shared = self.slots.shared_len();
        let (in_shared, in_own) = runs.iter().fold((0, 0), |(s, o), &(start, len)| {
            if start < shared {
                (s + len, o)
            } else {
                (s, o + len)
            }
        });
        if in_own != self.slots.own.len() || shared - in_shared != self.dead_slots as usize {
            return Err(format!(
                "slots: {in_shared} of {shared} shared and {in_own} of {} own in use, {} dead",
                self.slots.own.len(),
                self.dead_slots
            ));
        }
        let shared = self.trees.shared_len();
        let in_shared = trees.iter().filter(|&&t| t < shared).count();
        let in_own = trees.len() - in_shared;
        if in_own != self.trees.own.len() || shared - in_shared != self.dead_trees as usize {
            return Err(format!(
                "trees: {in_shared} of {shared} shared and {in_own} of {} own in use, {} dead",
                self.trees.own.len(),
                self.dead_trees
            ));
        }
        Ok(())
    }

    /// Number of terminals (what a base record of the page holds).
    #[inline]
    pub fn terminal_count(&self) -> usize {
        self.terminals as usize
    }

    pub(crate) fn set_terminal_count(&mut self, n: usize) {
        self.terminals = n as u32;
    }

    /// The page's terminals in position order (its stored form).
    pub fn to_image(&self) -> PageImage {
        let mut entries = Vec::with_capacity(self.terminals as usize);
        self.collect_terminals(Self::ROOT, 0, 0, &mut entries);
        entries.sort_unstable_by_key(|e: &(SlotPos, Terminal)| e.0);
        PageImage {
            levels: PAGE_LEVELS as u8,
            entries,
            hashes: self.slot_hashes(0xffff),
        }
    }

    /// Appends the page's base record (the [`PageRecord::Base`] of
    /// [`Page::to_image`]) to `out`, encoded straight from the page: its
    /// terminals met in position order (the root's slots, then the slots
    /// below them), with no image built and sorted. Returns the number of
    /// terminals.
    ///
    /// [`PageRecord::Base`]: verity_codec::page::PageRecord::Base
    pub(crate) fn encode_base_into(&self, out: &mut Vec<u8>) -> usize {
        let children = &self.root.children;
        // Below the page root there are nodes one level deep only: their
        // slots are all terminals.
        let count = children
            .iter()
            .zip(&self.bottoms)
            .map(|(c, b)| match c {
                Node::Empty => 0,
                Node::Inner { .. } => b.mask.count_ones() as usize,
                Node::Leaf { .. } | Node::Page(_) => 1,
            })
            .sum();
        // The root's terminals, then those of the nodes below it (one
        // level deep, so all their slots are terminals): position order.
        // A walk with `Page::terminals_of` meets the same terminals, but
        // its dynamic calls cost about 0.1k instructions an update more
        // at 1M keys.
        let terminal = |node: &Node| match *node {
            Node::Leaf { id, .. } => {
                let l = self.leaf(id);
                Some(leaf_terminal(&l.key_hash, &l.value_hash))
            }
            Node::Page(hash) => Some(Terminal::Child { hash }),
            Node::Empty | Node::Inner { .. } => None,
        };
        let pos = |depth: u8, nibbles: usize| {
            SlotPos::new(depth, nibbles as u16).unwrap_or_else(unreachable_pos)
        };
        let entries = |e: &mut BaseEntries<'_>| {
            for (n, c) in children.iter().enumerate() {
                if let Some(t) = terminal(c) {
                    e.push(pos(1, n), &t);
                }
            }
            for (n, c) in children.iter().enumerate() {
                if matches!(c, Node::Inner { .. }) {
                    for (m, slot) in self.children(n as NodeId + 1) {
                        if let Some(t) = terminal(&slot) {
                            e.push(pos(2, n << 4 | m), &t);
                        }
                    }
                }
            }
        };
        PageRecord::encode_base_parts_into(
            out,
            PAGE_LEVELS as u8,
            (count, entries),
            self.slot_hash_parts(0xffff),
        );
        count
    }

    /// The hashes of the page root's slots `mask` (bit `n` = slot `n`)
    /// that hold nodes below the root, by parts, for a record.
    pub(crate) fn slot_hash_parts(&self, mask: u16) -> HashParts<impl Iterator<Item = &Hash>> {
        let children = &self.root.children;
        // A delta's slots are one or two: only those are looked at.
        let inner = bits(mask).fold(0u16, |m, n| match children[n] {
            Node::Inner { .. } => m | 1 << n,
            _ => m,
        });
        HashParts(inner, bits(inner).map(|n| children[n].hash_ref()))
    }

    /// Builds the page at `path` from its stored form, checking its shape.
    /// The page root's slots whose hashes the image holds are left unhashed;
    /// every other hash is computed.
    pub fn from_image(image: &PageImage, path: &PagePath) -> Result<Page, MerkleError> {
        Ok(Dense::from_image(image, path)?.pack(None))
    }

    /// The slot on `key_hash`'s path in this page, whose root is at nibble
    /// `depth`, that holds no internal node of the page: its root slot, its
    /// slot in the node below that root slot (`None` when the root slot is
    /// not an internal node) and what it holds.
    fn slot_of(&self, depth: usize, key_hash: &KeyHash) -> (usize, Option<usize>, Node) {
        let (n, m) = slot_nibbles(key_hash, depth);
        match self.root.children[n] {
            Node::Inner { .. } => (n, Some(m), self.child(n as NodeId + 1, m)),
            node => (n, None, node),
        }
    }

    /// The end of the run of `ups` from `i` on that land in the slot
    /// `(n, m)` of [`Page::slot_of`] (`ups[i]` lands there).
    fn slot_run_end(
        depth: usize,
        ups: &[(KeyHash, Option<ValueHash>)],
        i: usize,
        (n, m): (usize, Option<usize>),
    ) -> usize {
        // The slot's byte of a key hash (both nibbles, or only the root
        // slot's), compared whole.
        let (at, mask) = (depth / 2, if m.is_some() { 0xff } else { 0xf0 });
        let want = (n << 4 | m.unwrap_or(0)) as u8;
        let lands = |k: &KeyHash| k[at] & mask == want;
        // Most runs are one update long: the next update is looked at
        // before a binary search.
        match ups.get(i + 1) {
            Some(u) if lands(&u.0) => i + 2 + ups[i + 2..].partition_point(|u| lands(&u.0)),
            _ => i + 1,
        }
    }

    /// Plans an update that keeps this page's nodes where they are, but
    /// for new nodes of two leaves below the root (see [`Page::in_place`]),
    /// for `ups` strictly sorted by key hash and the
    /// page root at nibble `depth`: each slot the updates reach must end up
    /// holding at most one leaf, or be a child page's reference, or be a
    /// root slot left with two leaves whose paths part at the next nibble
    /// (a new node below the root takes them). Returns, in key order, the
    /// child pages to update first (their slots and their ranges of `ups`)
    /// and how many leaves and slots the update can add, or `None` when a
    /// slot would need a new page or a larger new node below it: the
    /// general update handles those.
    ///
    /// This is the common case of a block: most writes change the value of
    /// a key that exists or insert or delete a key in a slot of its own or
    /// next to the one leaf of a root slot, and the pages above the leaves'
    /// pages only see their child pages' hashes change.
    pub(crate) fn plan_in_place(
        &self,
        depth: usize,
        ups: &[(KeyHash, Option<ValueHash>)],
    ) -> Option<InPlacePlan> {
        // A page of many updates (above the pages of leaves) reads a
        // different slot below its root for most of them: all are asked
        // for first, so that their cache misses overlap.
        if ups.len() > 2 {
            for (key_hash, _) in ups {
                let (n, m) = slot_nibbles(key_hash, depth);
                if let Node::Inner { .. } = self.root.children[n] {
                    let b = &self.bottoms[n];
                    if b.mask & (1 << m) != 0 {
                        prefetch::value(self.slots.get(b.index(m) as u32));
                    }
                }
            }
        }
        let mut plan = InPlacePlan {
            // At most a child page an update, and 256 in a page (16 nodes
            // of 16 slots below its root); a page of leaves has none.
            children: Vec::with_capacity(if ups.len() > 2 { ups.len().min(256) } else { 0 }),
            added: 0,
            written: 0,
            splits: 0,
        };
        let mut i = 0;
        while i < ups.len() {
            let (n, m, node) = self.slot_of(depth, &ups[i].0);
            let end = Self::slot_run_end(depth, ups, i, (n, m));
            let run = &ups[i..end];
            let existing = match node {
                Node::Page(_) => {
                    plan.children.push(ChildUpdate {
                        n: n as u8,
                        m: m? as u8,
                        range: i..end,
                    });
                    i = end;
                    continue;
                }
                Node::Leaf { id, .. } => Some(self.leaves.get(id).key_hash),
                Node::Empty => None,
                Node::Inner { .. } => return None,
            };
            // The leaves the slot holds afterwards: its leaf unless deleted,
            // and every other key given a value.
            let kept = existing.is_some_and(|e| !run.iter().any(|u| u.0 == e && u.1.is_none()));
            let added = run
                .iter()
                .filter(|u| u.1.is_some() && Some(u.0) != existing)
                .count();
            match usize::from(kept) + added {
                0 | 1 => {}
                // A root slot given a second leaf: a new node below the
                // root holds the two, when their paths part at the next
                // nibble (else they need a page of their own).
                2 if m.is_none() => {
                    let mut two = run
                        .iter()
                        .filter(|u| u.1.is_some() && Some(u.0) != existing)
                        .map(|u| u.0)
                        .chain(existing.filter(|_| kept));
                    let (a, b) = (two.next()?, two.next()?);
                    if nibble(&a, depth + 1) == nibble(&b, depth + 1) {
                        return None;
                    }
                    plan.splits += 1;
                }
                _ => return None,
            }
            let changed = existing.is_some_and(|e| run.iter().any(|u| u.0 == e && u.1.is_some()));
            plan.added += added;
            plan.written += added + usize::from(changed);
            i = end;
        }
        Some(plan)
    }

    /// The page after the update planned by [`Page::plan_in_place`], given
    /// what each child page it planned left in its slot (in its order: the
    /// page's new hash, or the lone leaf it collapsed to, or nothing), the
    /// packed slots it can add (its [`InPlacePlan::added`] plus
    /// [`InPlacePlan::splits`]) and the leaves it can write (its
    /// [`InPlacePlan::written`] plus the collapsed child pages' leaves), or
    /// `None` when the page's root is left with a lone leaf or nothing (the
    /// page goes: the general update handles that).
    ///
    /// The result is a copy with the changed slots, and the binary nodes
    /// above them, rewritten in place: a node below the root that is left
    /// with one leaf gives it to the root slot above, and one left empty
    /// goes. `changes` is set to the changes from this page to the copy in
    /// position order, what [`Page::changes_since`] would find, without a
    /// diff. No expanded form, no packing. A root slot's leaf that a second
    /// leaf joins moves into a new node below the slot with it.
    ///
    /// A node below the root whose hashes were not computed (a page read
    /// from a record) is hashed in the copy and checked against its stored
    /// hash before it changes, as [`Dense::for_update`] does.
    ///
    /// `leaf_hashes[i]` is the leaf hash of `ups[i]` (when it sets a
    /// value). The copy's changed binary trees are left to rehash
    /// ([`InPlace::unhashed`]), and then its parts to fold
    /// ([`Page::fold_if_due`]): folded first, the rehash would copy the
    /// changed nodes back to its own.
    pub(crate) fn in_place(
        &self,
        depth: usize,
        (ups, leaf_hashes): (&[(KeyHash, Option<ValueHash>)], &[Hash]),
        children: &[(ChildUpdate, Up)],
        (slots, written): (usize, usize),
        changes: &mut Vec<(SlotPos, Option<Terminal>)>,
    ) -> Result<Option<InPlace>, &'static str> {
        // The copy has room for the slots the update adds, the shared
        // nodes below the root it changes and the leaves it writes, so it
        // seldom grows (reallocates and copies) its arrays: only for a
        // node that turns dense and gets a tree. `Arc::new_cyclic`
        // allocates before it builds the page, which is then moved into
        // the allocation once; `Arc::new` built it on the stack and copied
        // it twice more (about 180 instructions; BENCHMARKS.md).
        let mut copy = Arc::new_cyclic(|new: &std::sync::Weak<Page>| {
            // The allocation is seldom in the cache: its lines are asked
            // for before the copy is built, so that the copy's stores do
            // not each wait for one (1.03x at 1M keys; BENCHMARKS.md).
            prefetch::bytes(new.as_ptr().cast(), std::mem::size_of::<Page>());
            self.copy_with_room(slots, written)
        });
        let page = Arc::make_mut(&mut copy);
        page.room_to_own((depth, ups), slots);
        let mut edit = Edit {
            page,
            root_dirty: 0,
            below: [0; 16],
            bottoms: 0,
            added: 0,
            removed: 0,
        };
        changes.clear();
        let mut collapsed = false;
        let mut children = children.iter();
        let mut i = 0;
        while i < ups.len() {
            let (n, m, node) = self.slot_of(depth, &ups[i].0);
            let end = Self::slot_run_end(depth, ups, i, (n, m));
            let run = &ups[i..end];
            let run_hashes = &leaf_hashes[i..end];
            i = end;
            if let Node::Page(old) = node {
                let (Some((child, now)), Some(m)) = (children.next(), m) else {
                    return Err(NOT_IN_PLACE);
                };
                if (usize::from(child.n), usize::from(child.m)) != (n, m) {
                    return Err(NOT_IN_PLACE);
                }
                match *now {
                    Up::Page(hash) if hash == old => {}
                    Up::Page(hash) => {
                        let pos = edit.set(n, Some(m), Node::Page(hash))?;
                        changes.push((pos, Some(Terminal::Child { hash })));
                    }
                    Up::Leaf(leaf, hash) => {
                        collapsed = true;
                        let id = edit.page.leaves.push(leaf);
                        let pos = edit.set(n, Some(m), Node::Leaf { id, hash })?;
                        changes.push((pos, Some(leaf_terminal(&leaf.key_hash, &leaf.value_hash))));
                    }
                    Up::Empty => {
                        let pos = edit.set(n, Some(m), Node::Empty)?;
                        edit.removed += 1;
                        changes.push((pos, None));
                    }
                }
                continue;
            }
            // Deletes and new values of the slot's leaf first, then the key
            // that takes the slot if it is left empty.
            for ((key_hash, value_hash), &hash) in run.iter().zip(run_hashes) {
                let (_, _, node) = edit.page.slot_of(depth, key_hash);
                let Node::Leaf { id, .. } = node else {
                    continue;
                };
                if edit.page.leaves.get(id).key_hash != *key_hash {
                    continue;
                }
                match value_hash {
                    None => {
                        let pos = edit.set(n, m, Node::Empty)?;
                        edit.page.dead_leaves += 1;
                        edit.removed += 1;
                        changes.push((pos, None));
                    }
                    Some(v) if edit.page.leaves.get(id).value_hash == *v => {}
                    Some(v) => {
                        let pos = edit.set_value(n, m, id, (key_hash, v), hash)?;
                        changes.push((pos, Some(leaf_terminal(key_hash, v))));
                    }
                }
            }
            for ((key_hash, value_hash), &hash) in run.iter().zip(run_hashes) {
                let Some(v) = value_hash else { continue };
                let (_, mut m, slot) = edit.page.slot_of(depth, key_hash);
                match slot {
                    Node::Empty => {}
                    Node::Leaf { id, .. } if edit.page.leaves.get(id).key_hash == *key_hash => {
                        continue;
                    }
                    // The second leaf of a root slot (planned).
                    Node::Leaf { .. } if m.is_none() => {
                        edit.split(self, n, depth, changes)?;
                        m = Some(usize::from(nibble(key_hash, depth + 1)));
                    }
                    _ => return Err(NOT_IN_PLACE),
                }
                let leaf = Leaf {
                    key_hash: *key_hash,
                    value_hash: *v,
                };
                let node = Node::Leaf {
                    id: edit.page.leaves.push(leaf),
                    hash,
                };
                let pos = edit.set(n, m, node)?;
                edit.added += 1;
                changes.push((pos, Some(leaf_terminal(key_hash, v))));
            }
        }
        let changed = (0..16).fold(0u16, |c, n| c | u16::from(edit.below[n] != 0) << n);
        for n in bits(changed) {
            edit.finish_bottom(self, n, changes);
        }
        let Edit {
            page,
            root_dirty,
            below,
            bottoms,
            added,
            removed,
        } = edit;
        // Only a removal, or a child page that collapsed to its leaf, can
        // leave the root with a lone leaf or nothing.
        let shrunk = removed > 0 || collapsed;
        if depth > 0 && shrunk && (page.root.occupied() == 0 || page.root.lone_leaf().is_some()) {
            return Ok(None);
        }
        sort_changes(changes);
        Ok(Some(InPlace {
            page: copy,
            unhashed: Unhashed {
                root: root_dirty,
                bottoms,
                below,
            },
            added,
            removed,
        }))
    }

    /// A copy of the page that shares this page's shared parts, with room
    /// for `leaves` more leaves of its own and, when its slots are all its
    /// own, `room` more slots (with shared slots, see
    /// [`Page::room_to_own`]).
    fn copy_with_room(&self, room: usize, leaves: usize) -> Page {
        let room = if self.slots.shared.is_some() { 0 } else { room };
        Page {
            root: self.root,
            bottoms: self.bottoms,
            slots: self.slots.with_room(room),
            trees: self.trees.with_room(0),
            leaves: self.leaves.with_room(leaves),
            dead_leaves: self.dead_leaves,
            dead_slots: self.dead_slots,
            dead_trees: self.dead_trees,
            terminals: self.terminals,
        }
    }

    /// In a copy made by [`Page::copy_with_room`] that shares slots, the
    /// room for `room` more slots and for the shared slots and trees of
    /// the nodes below the root slots that `ups` (the updates of the page
    /// at nibble `depth`) reach, which an update copies to its own ([`Page::own_bottom`]). A copy
    /// that would copy most of its live shared slots takes all of them
    /// instead, packed, and shares none; a copy of `SHARE_MIN` slots or
    /// more that shares none and whose updates reach at most half of them
    /// shares them again.
    ///
    /// This reads the copy, not the page it copies: reading the page's
    /// nodes before the copy waited on each cold line in turn, where the
    /// copy streams them (1.1x slower at 1M keys).
    fn room_to_own(&mut self, (depth, ups): (usize, &[(KeyHash, Option<ValueHash>)]), room: usize) {
        let all_own = self.slots.shared.is_none();
        if all_own && self.slots.own.len() < SHARE_MIN {
            return;
        }
        let touched = ups.iter().fold(0u16, |t, (key_hash, _)| {
            t | 1 << slot_nibbles(key_hash, depth).0
        });
        if all_own {
            // All the slots of a large page are the copy's own: an earlier
            // version changed most of them (below). When this version
            // changes at most half, its slots and trees become shared
            // arrays again, so that the versions after it share what they
            // leave alone (kept own, a page that once took its slots whole
            // copied them whole ever after).
            if self.touched_slots(touched) * 2 > self.slots.own.len() {
                return;
            }
            self.slots = Parts::packed(std::mem::take(&mut self.slots.own), true);
            self.trees = Parts::packed(std::mem::take(&mut self.trees.own), true);
        }
        let (mut slots, mut trees) = (0, 0);
        let mut rest = touched;
        while rest != 0 {
            let n = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            if matches!(self.root.children[n], Node::Inner { .. }) {
                let b = self.bottoms[n];
                if (b.start as usize) < self.slots.shared_len() {
                    slots += b.mask.count_ones() as usize;
                }
                trees +=
                    usize::from(b.tree != NO_TREE && (b.tree as usize) < self.trees.shared_len());
            }
        }
        if slots * 2 > self.slots.shared_len() - self.dead_slots as usize {
            let (bottoms, trees) = self.packed_bottoms();
            let mut own = Vec::with_capacity(self.live_slots().len() + room);
            for n in 0..16 {
                if matches!(self.root.children[n], Node::Inner { .. }) {
                    own.extend_from_slice(self.run(n));
                }
            }
            self.bottoms = bottoms;
            self.slots = Parts { shared: None, own };
            self.trees = Parts {
                shared: None,
                own: trees,
            };
            (self.dead_slots, self.dead_trees) = (0, 0);
        } else {
            self.slots.reserve_exact(slots + room);
            self.trees.reserve_exact(trees);
        }
    }

    /// The slots of the nodes below the root slots `touched` (bit `n` =
    /// root slot `n`).
    fn touched_slots(&self, touched: u16) -> usize {
        (0..16)
            .filter(|&n| {
                touched & 1 << n != 0 && matches!(self.root.children[n], Node::Inner { .. })
            })
            .map(|n| self.bottoms[n].mask.count_ones() as usize)
            .sum()
    }

    /// The slots of the nodes below the root, run after run in nibble
    /// order: the page's slots without the dead ones.
    fn live_slots(&self) -> impl ExactSizeIterator<Item = &Node> + '_ {
        let inner = |n: &usize| matches!(self.root.children[*n], Node::Inner { .. });
        let len: usize = (0..16)
            .filter(inner)
            .map(|n| self.bottoms[n].mask.count_ones() as usize)
            .sum();
        let mut runs = (0..16).filter(inner).flat_map(|n| self.run(n));
        // A range's length is known: `collect` allocates once. The runs
        // hold exactly `len` slots.
        (0..len).map(move |_| runs.next().unwrap_or(&Node::Empty))
    }

    /// The page's bottoms for its [`Page::live_slots`] packed from id 0,
    /// and the trees they keep, in the same order.
    fn packed_bottoms(&self) -> ([Bottom; 16], Vec<[Hash; 15]>) {
        let mut bottoms = self.bottoms;
        let mut trees = Vec::with_capacity(self.trees.len() - self.dead_trees as usize);
        let mut start = 0;
        for (b, c) in bottoms.iter_mut().zip(&self.root.children) {
            if !matches!(c, Node::Inner { .. }) {
                continue;
            }
            b.start = start;
            start += b.mask.count_ones();
            if let Some(tree) = self.trees.try_get(b.tree) {
                trees.push(*tree);
                b.tree = (trees.len() - 1) as u32;
            }
        }
        (bottoms, trees)
    }

    /// Folds the page's own parts into new shared arrays when they, or
    /// the dead ones, have grown enough (see `Parts::should_fold`; a
    /// version writes about one leaf, one tree, and a run of slots): the
    /// slots and trees, or all of them when the leaves are due (their new
    /// ids change the slots).
    pub(crate) fn fold_if_due(&mut self) {
        let [leaves, slots, trees] = FOLD;
        let leaves = self.leaves.should_fold(self.dead_leaves as usize, leaves);
        if leaves
            || self.slots.should_fold(self.dead_slots as usize, slots)
            || self.trees.should_fold(self.dead_trees as usize, trees)
        {
            fold(self, leaves);
        }
    }

    /// Moves the own runs of the nodes below the root slots other than `n`
    /// by `by` slots where a slot was inserted into (`by` 1) or removed from
    /// (`by` -1) `n`'s run at id `at`: the runs from `at` on, or after it.
    /// An emptied run (its node goes when the edit finishes) may be moved
    /// into another run's ids: it holds none, and nothing is put in it
    /// after its slots were edited (the updates come in key order).
    fn shift_runs(&mut self, n: usize, at: u32, by: i32) {
        for (k, (b, c)) in self.bottoms.iter_mut().zip(&self.root.children).enumerate() {
            let after = if by > 0 { b.start >= at } else { b.start > at };
            if k != n && after && matches!(c, Node::Inner { .. }) {
                b.start = b.start.wrapping_add_signed(by);
            }
        }
    }

    /// Makes the node below root slot `n` this version's own, so that an
    /// update can change it: its run of slots, and its tree if it keeps
    /// one, copied from the shared arrays to the ends of the own ones (the
    /// shared copies are then dead). A page version copies the nodes below
    /// its root that it changes and shares the others (see [`Parts`]).
    #[inline]
    fn own_bottom(&mut self, n: usize) {
        let b = self.bottoms[n];
        if (b.start as usize) < self.slots.shared_len() {
            let len = b.mask.count_ones() as usize;
            self.bottoms[n].start = self.slots.adopt(b.start, len);
            self.dead_slots += len as u32;
        }
        if b.tree != NO_TREE && (b.tree as usize) < self.trees.shared_len() {
            self.bottoms[n].tree = self.trees.adopt(b.tree, 1);
            self.dead_trees += 1;
        }
    }

    /// Computes the leaf hashes of the unhashed node below root slot `n`
    /// and checks the node's hash against the one stored in the root slot.
    fn hash_bottom(&mut self, n: usize) -> Result<(), &'static str> {
        self.own_bottom(n);
        let b = self.bottoms[n];
        let run = self.slots.range_mut(b.start, b.mask.count_ones() as usize);
        hash_leaves_in_lanes(&self.leaves, run);
        // An unhashed node keeps no tree: this computes all of it (and
        // keeps it if the node is dense).
        if self.rehash_bottom(n) != self.root.children[n].hash() {
            return Err(STORED_HASH_MISMATCH);
        }
        self.bottoms[n].hashed = true;
        Ok(())
    }

    /// Recomputes the whole binary tree of the (hashed) node below root
    /// slot `n` and returns the node's hash. Afterwards the page keeps the
    /// node's tree exactly when the node is dense (`TREE_MIN` slots or
    /// more), as packing a page decides.
    fn rehash_bottom(&mut self, n: usize) -> Hash {
        let b = self.bottoms[n];
        let Some((t, _)) = self.bottom_tree(n) else {
            return sparse_tree_hash(b.mask, self.run(n));
        };
        // The slot hashes the rehash reads, taken from the packed run.
        let (t, slots) = (t as u32, &self.slots);
        let tree = &mut self.trees;
        hash_tree_in_lanes(tree.own_mut(t), |m| b.slot(slots, m).hash());
        let hash = self.trees.get(t)[0];
        if (b.mask.count_ones() as usize) < TREE_MIN {
            self.drop_tree(n);
        }
        hash
    }

    /// The tree a rehash of the node below root slot `n` computes in: the
    /// one the page keeps for it, or a new one (all `EMPTY`; `true`) when
    /// the node turned dense, or none for a sparse node that keeps none
    /// (computed over its occupied slots and kept nowhere).
    fn bottom_tree(&mut self, n: usize) -> Option<(usize, bool)> {
        self.own_bottom(n);
        let b = self.bottoms[n];
        if b.tree != NO_TREE {
            Some((b.tree as usize, false))
        } else if b.mask.count_ones() as usize >= TREE_MIN {
            let t = self.trees.push([EMPTY; 15]);
            self.bottoms[n].tree = t;
            Some((t as usize, true))
        } else {
            None
        }
    }

    /// Drops the binary tree the page keeps for the node below root slot
    /// `n`, if any.
    fn drop_tree(&mut self, n: usize) {
        let t = self.bottoms[n].tree;
        if t == NO_TREE {
            return;
        }
        self.bottoms[n].tree = NO_TREE;
        if (t as usize) < self.trees.shared_len() {
            self.dead_trees += 1;
            return;
        }
        self.trees.remove(t);
        for b in self.bottoms.iter_mut() {
            if b.tree != NO_TREE && b.tree > t {
                b.tree -= 1;
            }
        }
    }

    /// The changed slots from `old` to `self`, in position order: the delta
    /// that turns the stored form of `old` into that of `self`, and the
    /// number of terminals it removes and adds. Subtrees with equal hashes
    /// are equal and are skipped without a look inside.
    pub fn changes_since(&self, old: &Page) -> (Vec<(SlotPos, Option<Terminal>)>, usize, usize) {
        // Room for a few changes up front: most deltas hold one to four
        // (growing from empty reallocated twice).
        let mut out = Vec::with_capacity(4);
        let (mut removed, mut added) = (0, 0);
        if self.hash() == old.hash() {
            return (out, removed, added);
        }
        diff(
            (old, Self::ROOT),
            (self, Self::ROOT),
            0,
            0,
            &mut out,
            &mut removed,
            &mut added,
        );
        sort_changes(&mut out);
        (out, removed, added)
    }

    /// Appends the terminals below node `id` (at `depth` nibbles below the
    /// page root along `nibbles`).
    fn collect_terminals(
        &self,
        id: NodeId,
        depth: u8,
        nibbles: u16,
        out: &mut Vec<(SlotPos, Terminal)>,
    ) {
        for (n, child) in self.children(id) {
            self.terminals_of(&child, depth + 1, nibbles << 4 | n as u16, |p, t| {
                out.push((p, t))
            });
        }
    }

    /// Calls `f` on each terminal of the slot `node` at position
    /// `(depth, path)`.
    fn terminals_of(
        &self,
        node: &Node,
        depth: u8,
        path: u16,
        mut f: impl FnMut(SlotPos, Terminal),
    ) {
        self.walk_terminals(node, depth, path, &mut f);
    }

    fn walk_terminals(
        &self,
        node: &Node,
        depth: u8,
        path: u16,
        f: &mut dyn FnMut(SlotPos, Terminal),
    ) {
        let pos = || SlotPos::new(depth, path).unwrap_or_else(unreachable_pos);
        match node {
            Node::Empty => {}
            Node::Leaf { id, .. } => {
                let l = self.leaf(*id);
                f(
                    pos(),
                    Terminal::Leaf {
                        key_hash: l.key_hash,
                        value_hash: l.value_hash,
                    },
                )
            }
            Node::Page(h) => f(pos(), Terminal::Child { hash: *h }),
            Node::Inner { id, .. } => {
                for (n, child) in self.children(*id) {
                    self.walk_terminals(&child, depth + 1, path << 4 | n as u16, f);
                }
            }
        }
    }
}

/// A page expanded for an update (or while it is decoded): every internal
/// node it holds is a whole [`Inner`] in one array (`nodes[0]` is the page
/// root), so the update code changes, adds and rehashes nodes in place.
/// [`Dense::pack`] turns it back into a [`Page`].
///
/// A page expanded from an old page for an update holds only the nodes the
/// update changes: the root slots of the others keep the id `PACKED`, and
/// packing copies those nodes' slots from the old page.
#[derive(Debug, Clone)]
pub(crate) struct Dense {
    nodes: Vec<Inner>,
    leaves: Leaves,
    dead_leaves: u32,
    terminals: u32,
}

impl Default for Dense {
    fn default() -> Self {
        Dense {
            nodes: vec![Inner::default()],
            leaves: Leaves::default(),
            dead_leaves: 0,
            terminals: 0,
        }
    }
}

impl Dense {
    /// `old` expanded for an update below the root slots in `touched` (bit
    /// `n` = slot `n`), with room for `leaves` more leaves and as many
    /// internal nodes. The nodes below touched slots are expanded (and, if
    /// their hashes were not computed, hashed and checked against the
    /// stored hash); the others stay packed in `old`.
    pub(crate) fn for_update(
        old: &Page,
        touched: u16,
        leaves: usize,
    ) -> Result<Dense, &'static str> {
        let mut nodes = Vec::with_capacity(1 + touched.count_ones() as usize + leaves);
        nodes.push(old.root);
        for n in 0..16 {
            if let Node::Inner { hash, .. } = old.root.children[n] {
                let id = if touched & (1 << n) != 0 {
                    nodes.push(old.expand_checked(n, &hash)?);
                    (nodes.len() - 1) as NodeId
                } else {
                    PACKED
                };
                nodes[0].children[n] = Node::Inner { id, hash };
            }
        }
        Ok(Dense {
            nodes,
            leaves: old.leaves.with_room(leaves),
            dead_leaves: old.dead_leaves,
            terminals: old.terminals,
        })
    }

    /// The packed page, taking the nodes left packed from `old` (the page
    /// this one was expanded from). The leaves are folded into a new shared
    /// array when `Parts::should_fold` says so (unreferenced ones cost
    /// memory until then, not time: nothing walks what no slot refers to).
    pub(crate) fn pack(self, old: Option<&Page>) -> Page {
        let mut root = self.nodes[0];
        debug_assert!(root.hashed && !root.stale);
        let keeps_tree = |node: &Inner| node.hashed && !node.stale && node.occupied() >= TREE_MIN;
        let (mut len, mut kept) = (0, 0);
        for (n, child) in root.children.iter().enumerate() {
            if let Node::Inner { id, .. } = child {
                let (slots, tree) = match (*id, old) {
                    (PACKED, Some(o)) => (
                        o.bottoms[n].mask.count_ones() as usize,
                        o.bottoms[n].tree != NO_TREE,
                    ),
                    (PACKED, None) => (0, false),
                    (id, _) => {
                        let node = &self.nodes[id as usize];
                        (node.occupied(), keeps_tree(node))
                    }
                };
                len += slots;
                kept += usize::from(tree);
            }
        }
        let share = len >= SHARE_MIN;
        let mut slots = Vec::with_capacity(len);
        let mut trees = Vec::with_capacity(kept);
        let mut bottoms = [Bottom::default(); 16];
        for (n, bottom) in bottoms.iter_mut().enumerate() {
            let Node::Inner { id, hash } = root.children[n] else {
                continue;
            };
            let start = slots.len() as u32;
            let (mask, hashed, tree) = match (id, old) {
                (PACKED, Some(o)) => {
                    slots.extend_from_slice(o.run(n));
                    let b = o.bottoms[n];
                    (b.mask, b.hashed, o.trees.try_get(b.tree))
                }
                // `for_update` is the only maker of packed ids, and its
                // page is always packed with the page it was expanded from.
                (PACKED, None) => unreachable!("a packed node without the page it is in"),
                (id, _) => {
                    let node = &self.nodes[id as usize];
                    let mut mask = 0u16;
                    for (m, c) in node.children.iter().enumerate() {
                        debug_assert!(!matches!(c, Node::Inner { .. }));
                        if !c.is_empty() {
                            mask |= 1 << m;
                            slots.push(*c);
                        }
                    }
                    (mask, node.hashed, keeps_tree(node).then_some(&node.tree))
                }
            };
            let tree = match tree {
                Some(t) => {
                    trees.push(*t);
                    (trees.len() - 1) as u32
                }
                None => NO_TREE,
            };
            *bottom = Bottom {
                start,
                mask,
                hashed,
                tree,
            };
            root.children[n] = Node::Inner {
                id: n as NodeId + 1,
                hash,
            };
        }
        let mut page = Page {
            root,
            bottoms,
            slots: Parts::packed(slots, share),
            trees: Parts::packed(trees, share),
            leaves: self.leaves,
            dead_leaves: self.dead_leaves,
            dead_slots: 0,
            dead_trees: 0,
            terminals: self.terminals,
        };
        page.fold_if_due();
        page
    }

    /// The page root's hash.
    #[inline]
    pub(crate) fn hash(&self) -> Hash {
        self.nodes[0].hash()
    }

    /// The page's root node.
    #[inline]
    pub(crate) fn root(&self) -> &Inner {
        &self.nodes[0]
    }

    /// The internal node `id` of this page.
    #[inline]
    pub(crate) fn node(&self, id: NodeId) -> &Inner {
        &self.nodes[id as usize]
    }

    /// The internal node `id`, to change (its parent's slot must be updated
    /// with its new hash).
    #[inline]
    pub(crate) fn node_mut(&mut self, id: NodeId) -> &mut Inner {
        &mut self.nodes[id as usize]
    }

    /// The contents of leaf `id` of this page.
    #[inline]
    pub(crate) fn leaf(&self, id: LeafId) -> &Leaf {
        self.leaves.get(id)
    }

    /// A leaf holding `key_hash` and `value_hash`, stored in the entry
    /// `spare` (a leaf no slot refers to any more, taken) or a new one.
    pub(crate) fn put_leaf(
        &mut self,
        spare: &mut Option<LeafId>,
        key_hash: KeyHash,
        value_hash: ValueHash,
    ) -> Node {
        let leaf = Leaf {
            key_hash,
            value_hash,
        };
        self.put_hashed_leaf(spare, leaf, leaf_hash(&key_hash, &value_hash))
    }

    /// [`Dense::put_leaf`] of a leaf whose hash is known.
    pub(crate) fn put_hashed_leaf(
        &mut self,
        spare: &mut Option<LeafId>,
        leaf: Leaf,
        hash: Hash,
    ) -> Node {
        let id = match spare.take() {
            Some(id) => {
                let (id, moved) = self.leaves.replace(id, leaf);
                self.dead_leaves += u32::from(moved);
                id
            }
            None => self.leaves.push(leaf),
        };
        Node::Leaf { id, hash }
    }

    /// Notes that a leaf entry is no longer referred to.
    pub(crate) fn drop_leaf(&mut self) {
        self.dead_leaves += 1;
    }

    /// Adds an empty internal node and returns its id.
    pub(crate) fn push_node(&mut self) -> NodeId {
        self.nodes.push(Inner::default());
        (self.nodes.len() - 1) as NodeId
    }

    /// Builds the page at `path` from its stored form (see
    /// [`Page::from_image`]).
    fn from_image(image: &PageImage, path: &PagePath) -> Result<Dense, MerkleError> {
        let bad = |detail: &'static str| MerkleError::CorruptPage {
            path: *path,
            detail,
        };
        if usize::from(image.levels) != PAGE_LEVELS {
            return Err(bad("page spans a different number of levels"));
        }
        // Sized up front: growing the node array copied it (1,124 bytes a
        // node) about twice over per page read.
        let mut page = Dense::default();
        let leaves = image
            .entries
            .iter()
            .filter(|(_, t)| matches!(t, Terminal::Leaf { .. }))
            .count();
        page.nodes
            .reserve_exact(image.deep_slots().count_ones() as usize);
        page.leaves.reserve_exact(leaves);
        for (pos, terminal) in &image.entries {
            let depth = pos.depth();
            let mut id = Page::ROOT;
            for i in 0..depth - 1 {
                let n = usize::from(pos.nibble(i));
                id = match page.node(id).children[n] {
                    Node::Empty => {
                        let child = page.push_node();
                        page.node_mut(id).children[n] = Node::Inner {
                            id: child,
                            hash: EMPTY,
                        };
                        child
                    }
                    Node::Inner { id: child, .. } => child,
                    _ => return Err(bad("a terminal lies below a leaf")),
                };
            }
            let n = usize::from(pos.nibble(depth - 1));
            if !page.node(id).children[n].is_empty() {
                return Err(bad("two terminals share a slot"));
            }
            let node = match terminal {
                Terminal::Leaf {
                    key_hash,
                    value_hash,
                } => {
                    // The leaf must sit on its own path.
                    let at = path.len();
                    if !path.is_prefix_of(key_hash)
                        || (0..usize::from(depth))
                            .any(|i| nibble(key_hash, at + i) != pos.nibble(i as u8))
                    {
                        return Err(bad("a leaf is not on its key's path"));
                    }
                    // Hashed below, unless the leaf's node stays unhashed.
                    let leaf = Leaf {
                        key_hash: *key_hash,
                        value_hash: *value_hash,
                    };
                    page.put_hashed_leaf(&mut None, leaf, EMPTY)
                }
                Terminal::Child { hash } if *hash == EMPTY => {
                    return Err(bad("a child page reference hashes to the empty subtree"))
                }
                Terminal::Child { hash } => Node::Page(*hash),
            };
            page.node_mut(id).children[n] = node;
        }
        page.terminals = image.entries.len() as u32;
        for (n, stored) in &image.hashes {
            match page.nodes[0].children.get_mut(usize::from(*n)) {
                Some(Node::Inner { id, hash }) => {
                    *hash = *stored;
                    let id = *id;
                    page.node_mut(id).hashed = false;
                }
                _ => {
                    return Err(bad(
                        "a stored hash names a slot that holds no internal node",
                    ))
                }
            }
        }
        page.check_and_hash(Page::ROOT, true).map_err(bad)?;
        if !path.is_root() {
            let root = page.root();
            if root.occupied() == 0 || root.lone_leaf().is_some() {
                return Err(bad("a non-root page holds fewer than two keys"));
            }
        }
        Ok(page)
    }

    /// Computes the hashes of the leaves and hashed inner nodes below `id`,
    /// bottom up, and rejects inner nodes inside the page that hold a lone
    /// leaf (the leaf belongs higher up).
    fn check_and_hash(&mut self, id: NodeId, is_page_root: bool) -> Result<(), &'static str> {
        for n in 0..16 {
            let slot = match self.node(id).children[n] {
                // An unhashed node holds no internal nodes: only its own
                // shape is left to check.
                Node::Inner { id: child, .. } if !self.node(child).hashed => {
                    if self.node(child).lone_leaf().is_some() {
                        return Err(LONE_LEAF);
                    }
                    continue;
                }
                Node::Inner { id: child, .. } => {
                    self.check_and_hash(child, false)?;
                    Node::Inner {
                        id: child,
                        hash: self.node(child).hash(),
                    }
                }
                Node::Empty | Node::Leaf { .. } | Node::Page(_) => continue,
            };
            self.node_mut(id).children[n] = slot;
        }
        let Dense { nodes, leaves, .. } = self;
        let node = &mut nodes[id as usize];
        hash_leaves_in_lanes(leaves, &mut node.children);
        if !is_page_root && node.lone_leaf().is_some() {
            return Err(LONE_LEAF);
        }
        node.rehash_all();
        Ok(())
    }
}

/// Folds the parts of `page` into new shared arrays, each without the
/// dead entries: the runs of the nodes below the root in nibble order with
/// their trees, and, if `leaves`, the leaves that a slot refers to,
/// renumbered in slot order.
fn fold(page: &mut Page, leaves: bool) {
    // At most 256 leaves: a root slot holds one, or a node of at most 16.
    let mut order = [0 as LeafId; 256];
    let mut live = 0;
    let mut renumber = |mut node: Node| {
        if let (true, Node::Leaf { id, .. }) = (leaves, &mut node) {
            order[live] = *id;
            *id = live as LeafId;
            live += 1;
        }
        node
    };
    page.root
        .children
        .iter_mut()
        .for_each(|c| *c = renumber(*c));
    if page.slots.shared.is_none() {
        // The slots are all this version's own (a small page, or one whose
        // version changed most of them, see `Page::room_to_own`), and
        // so are the trees: renumbered where they are.
        if leaves {
            let own = &mut page.slots.own;
            own.iter_mut().for_each(|s| *s = renumber(*s));
            fold_leaves(page, &order[..live]);
        }
        return;
    }
    let (bottoms, trees) = page.packed_bottoms();
    let slots = page.live_slots();
    let share = slots.len() >= SHARE_MIN;
    // Iterators of known length: one exact allocation.
    page.slots = if share {
        Parts {
            shared: Some(slots.map(|s| renumber(*s)).collect()),
            own: Vec::new(),
        }
    } else {
        Parts {
            shared: None,
            own: slots.map(|s| renumber(*s)).collect(),
        }
    };
    page.bottoms = bottoms;
    page.trees = Parts::packed(trees, share);
    (page.dead_slots, page.dead_trees) = (0, 0);
    if leaves {
        fold_leaves(page, &order[..live]);
    }
}

/// Puts the leaves `order` (by old id, in their new order) of `page` into
/// a new shared array, after [`fold`] renumbered the slots.
fn fold_leaves(page: &mut Page, order: &[LeafId]) {
    let old = &page.leaves;
    // A mapped slice iterator knows its length: one exact allocation.
    let leaves: Arc<[Leaf]> = order.iter().map(|&id| *old.get(id)).collect();
    page.leaves = Parts {
        shared: (!order.is_empty()).then_some(leaves),
        own: Vec::new(),
    };
    page.dead_leaves = 0;
}

const LONE_LEAF: &str = "an internal node holds a lone leaf";

const NOT_IN_PLACE: &str = "internal: an update in place meets a change of shape";

const STORED_HASH_MISMATCH: &str = "a stored hash does not match the subtree below it";

/// True when slot `p` of `old` and slot `q` of `new` hold the same subtree.
/// Leaves are compared by hash when both nodes are hashed (`hashed`), and
/// by content otherwise (a leaf in an unhashed node has no hash yet); every
/// other slot's hash is always known.
fn same_slot(old: &Page, p: &Node, new: &Page, q: &Node, hashed: bool) -> bool {
    match (p, q) {
        (Node::Empty, Node::Empty) => true,
        (Node::Leaf { hash: h, .. }, Node::Leaf { hash: k, .. }) if hashed => h == k,
        (Node::Leaf { id: i, .. }, Node::Leaf { id: j, .. }) => old.leaf(*i) == new.leaf(*j),
        (Node::Inner { hash: h, .. }, Node::Inner { hash: k, .. })
        | (Node::Page(h), Node::Page(k)) => h == k,
        _ => false,
    }
}

#[allow(clippy::too_many_arguments)]
fn diff(
    (old, a): (&Page, NodeId),
    (new, b): (&Page, NodeId),
    depth: u8,
    nibbles: u16,
    out: &mut Vec<(SlotPos, Option<Terminal>)>,
    removed: &mut usize,
    added: &mut usize,
) {
    // Called on the page roots and on inner slots whose hashes differ.
    // Comparing leaf hashes leaves the (cold) leaf arrays untouched.
    let hashed = old.is_hashed(a) && new.is_hashed(b);
    let (x, y) = (old.slots_of(a), new.slots_of(b));
    let (mut rx, mut ry) = (x.runs.iter(), y.runs.iter());
    let mut both = x.mask | y.mask;
    while both != 0 {
        let n = both.trailing_zeros() as usize;
        both &= both - 1;
        let (p, q) = (x.take(&mut rx, n), y.take(&mut ry, n));
        if same_slot(old, &p, new, &q, hashed) {
            continue;
        }
        let path = nibbles << 4 | n as u16;
        if let (Node::Inner { id: i, .. }, Node::Inner { id: j, .. }) = (p, q) {
            diff((old, i), (new, j), depth + 1, path, out, removed, added);
            continue;
        }
        old.terminals_of(&p, depth + 1, path, |pos, _| {
            *removed += 1;
            out.push((pos, None));
        });
        new.terminals_of(&q, depth + 1, path, |pos, t| {
            *added += 1;
            out.push((pos, Some(t)));
        });
    }
}

/// The occupied slots of one internal node of a page: the whole slot
/// array of the page root, or the packed run of a node below it.
struct Slots<'a> {
    mask: u16,
    whole: Option<&'a [Node; 16]>,
    runs: &'a [Node],
}

impl Slots<'_> {
    /// Slot `n`, taking it from `run` (this node's packed run, advanced
    /// in nibble order) when the node is packed.
    #[inline]
    fn take(&self, run: &mut std::slice::Iter<'_, Node>, n: usize) -> Node {
        if self.mask & (1 << n) == 0 {
            Node::Empty
        } else if let Some(whole) = self.whole {
            whole[n]
        } else {
            *run.next().unwrap_or(&Node::Empty)
        }
    }
}

impl Page {
    /// The occupied slots of internal node `id`.
    fn slots_of(&self, id: NodeId) -> Slots<'_> {
        if id == Self::ROOT {
            let mask = self.root.children.iter().enumerate().fold(0, |m, (n, c)| {
                if c.is_empty() {
                    m
                } else {
                    m | 1 << n
                }
            });
            Slots {
                mask,
                whole: Some(&self.root.children),
                runs: &[],
            }
        } else {
            let n = id as usize - 1;
            Slots {
                mask: self.bottoms[n].mask,
                whole: None,
                runs: self.run(n),
            }
        }
    }
}

#[cold]
fn unreachable_pos() -> SlotPos {
    // PAGE_LEVELS is at most the codec's MAX_PAGE_LEVELS (checked below), so
    // every depth reached while walking a page is a valid position depth.
    panic!("page deeper than the codec's position range")
}

const _: () =
    assert!(PAGE_LEVELS >= 1 && PAGE_LEVELS <= verity_codec::page::MAX_PAGE_LEVELS as usize);

// A page is its root and the nodes of the level below it, which hold no
// internal nodes: the packed layout, the stored hashes (only the page
// root's children are ever unhashed) and the code that expands and hashes
// those nodes all rely on it.
const _: () = assert!(PAGE_LEVELS == 2);

// A slot is a hash and an index: what keeps a packed slot at 40 bytes and a
// whole node at 16 x 40 + 15 x 32 = 1,120 bytes.
const _: () = assert!(std::mem::size_of::<Node>() <= 40);
