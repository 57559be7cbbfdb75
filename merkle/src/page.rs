//! A decoded page: a trie subtree of [`PAGE_LEVELS`] nibble levels with
//! the hashes inside it cached.
//!
//! An internal node keeps the 15 inner hashes of the binary tree over its
//! 16 slots, so changing one child rehashes 4 binary nodes, and a proof's
//! siblings are read, not computed. A slot holds a leaf's hash and the
//! index of its key and value in the page's leaf array, so a node stays
//! small (40 bytes a slot) however its slots are filled, and copying a
//! page for an update moves little memory.
//!
//! A page's record stores the hashes of the page root's slots that are
//! internal nodes, so a page read from the store hashes only its root: the
//! nodes below those slots stay *unhashed* (their slot hash is known, the
//! hashes inside them are not) until an update changes them (it hashes
//! them in its copy of the page) or a proof passes through them
//! ([`Page::hashed_node`]). Only the page root's children are ever
//! unhashed, and the page root never is; with two levels to a page, an
//! unhashed node's slots are leaves, child pages or empty.

use std::borrow::Cow;
use std::sync::Arc;

use verity_codec::page::{PageImage, SlotHashes, SlotPos, Terminal};

use crate::error::MerkleError;
use crate::hash::{internal_hash, leaf_hash, nibble, Hash, KeyHash, ValueHash, EMPTY};
use crate::path::PagePath;

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
        /// Its index in [`Page::nodes`].
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

    /// True for [`Node::Empty`].
    #[inline]
    pub fn is_empty(&self) -> bool {
        matches!(self, Node::Empty)
    }
}

/// An internal node: 16 slots and the binary hash tree over them.
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
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            children: [Node::Empty; 16],
            tree: [EMPTY; 15],
            hashed: true,
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
        self.tree[0]
    }

    /// True when every hash inside the node is computed: always, except
    /// for a page-root child whose hash came from the page's record and
    /// that nothing has changed or proved since (see the module's notes).
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
    /// `dirty` (bit `n` = slot `n`).
    pub fn rehash(&mut self, dirty: u16) {
        debug_assert!(self.hashed, "rehashing inside an unhashed node");
        let mut mask = u32::from(dirty);
        for level in (0..4).rev() {
            let mut next = 0u32;
            for j in 0..(1usize << level) {
                if mask & (0b11 << (2 * j)) != 0 {
                    let l = self.subtree_hash(level + 1, 2 * j);
                    let r = self.subtree_hash(level + 1, 2 * j + 1);
                    self.tree[heap(level, j)] = internal_hash(&l, &r);
                    next |= 1 << j;
                }
            }
            mask = next;
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

/// A decoded page: a subtree of [`PAGE_LEVELS`] nibble levels whose
/// internal nodes sit in one array (`nodes[0]` is the page's root) and
/// whose leaves sit in another, so a page is copied, read and dropped as
/// two blocks of memory. Its root is internal: a page exists only where
/// the trie has an internal node at a page boundary, and for the trie root.
///
/// Two pages are equal when they hold the same terminals at the same
/// positions (their nodes and leaves may be numbered differently).
#[derive(Debug, Clone)]
pub struct Page {
    nodes: Vec<Inner>,
    leaves: Vec<Leaf>,
    /// Nodes in `nodes` that no slot refers to any more.
    garbage: u32,
    /// Leaves in `leaves` that no slot refers to any more.
    dead_leaves: u32,
    /// Leaves and child references in the page.
    terminals: u32,
}

impl PartialEq for Page {
    fn eq(&self, other: &Page) -> bool {
        self.hash() == other.hash() && self.to_image() == other.to_image()
    }
}

impl Eq for Page {}

impl Default for Page {
    fn default() -> Self {
        Page {
            nodes: vec![Inner::default()],
            leaves: Vec::new(),
            garbage: 0,
            dead_leaves: 0,
            terminals: 0,
        }
    }
}

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

impl Page {
    /// Id of the page's root node.
    pub const ROOT: NodeId = 0;

    /// Bytes of memory the decoded page holds (its node array included):
    /// what a cache of pages counts against its budget.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Page>()
            + self.nodes.capacity() * std::mem::size_of::<Inner>()
            + self.leaves.capacity() * std::mem::size_of::<Leaf>()
    }

    /// A copy to update, with room for `nodes` more internal nodes and
    /// `leaves` more leaves, so the update does not grow (and copy again)
    /// the arrays it just copied.
    pub(crate) fn copy_with_room(&self, nodes: usize, leaves: usize) -> Page {
        let mut n = Vec::with_capacity(self.nodes.len() + nodes);
        n.extend_from_slice(&self.nodes);
        let mut l = Vec::with_capacity(self.leaves.len() + leaves);
        l.extend_from_slice(&self.leaves);
        Page {
            nodes: n,
            leaves: l,
            ..*self
        }
    }

    /// The page root's hash (the page root is always hashed).
    #[inline]
    pub fn hash(&self) -> Hash {
        self.nodes[0].hash()
    }

    /// Internal node `id` with every hash inside it: the node itself, or,
    /// if it is unhashed, a copy hashed now (what a proof through it
    /// reads; the page, shared by readers, is left as it is).
    pub fn hashed_node(&self, id: NodeId) -> Cow<'_, Inner> {
        let node = self.node(id);
        if node.hashed {
            return Cow::Borrowed(node);
        }
        let mut copy = *node;
        for child in copy.children.iter_mut() {
            if let Node::Leaf { id, .. } = child {
                *child = self.hashed_leaf(*id);
            }
        }
        copy.hashed = true;
        copy.rehash_all();
        Cow::Owned(copy)
    }

    /// Computes the hashes inside internal node `id` if it is unhashed, and
    /// checks the node's hash against `stored` (its parent slot's): what an
    /// update does before it changes the node.
    pub(crate) fn ensure_hashed(&mut self, id: NodeId, stored: &Hash) -> Result<(), &'static str> {
        if self.node(id).hashed {
            return Ok(());
        }
        let hashed = self.hashed_node(id).into_owned();
        *self.node_mut(id) = hashed;
        if self.node(id).hash() != *stored {
            return Err(STORED_HASH_MISMATCH);
        }
        Ok(())
    }

    /// Recomputes every hash that the page's record stored in place of a
    /// subtree and compares it with the stored one: reading a page trusts
    /// them (its record is checksummed), a check of the store does not.
    pub fn verify_stored_hashes(&self) -> Result<(), &'static str> {
        for child in &self.root().children {
            if let Node::Inner { id, hash } = child {
                if !self.node(*id).hashed && self.hashed_node(*id).hash() != *hash {
                    return Err(STORED_HASH_MISMATCH);
                }
            }
        }
        Ok(())
    }

    /// The hashes of the page root's slots in `mask` (bit `n` = slot `n`)
    /// that are internal nodes: what the page's records store.
    pub fn slot_hashes(&self, mask: u16) -> SlotHashes {
        self.root()
            .children
            .iter()
            .enumerate()
            .filter_map(|(n, c)| match c {
                Node::Inner { hash, .. } if mask & (1 << n) != 0 => Some((n as u8, *hash)),
                _ => None,
            })
            .collect()
    }

    /// The page's root node.
    #[inline]
    pub fn root(&self) -> &Inner {
        &self.nodes[0]
    }

    /// The internal node `id` of this page.
    #[inline]
    pub fn node(&self, id: NodeId) -> &Inner {
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
    pub fn leaf(&self, id: LeafId) -> &Leaf {
        &self.leaves[id as usize]
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

    /// [`Page::put_leaf`] of a leaf whose hash is known.
    pub(crate) fn put_hashed_leaf(
        &mut self,
        spare: &mut Option<LeafId>,
        leaf: Leaf,
        hash: Hash,
    ) -> Node {
        let id = match spare.take() {
            Some(id) => {
                self.leaves[id as usize] = leaf;
                id
            }
            None => {
                self.leaves.push(leaf);
                (self.leaves.len() - 1) as LeafId
            }
        };
        Node::Leaf { id, hash }
    }

    /// The slot of leaf `id`, with its hash computed.
    fn hashed_leaf(&self, id: LeafId) -> Node {
        let l = self.leaf(id);
        Node::Leaf {
            id,
            hash: leaf_hash(&l.key_hash, &l.value_hash),
        }
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

    /// Notes that a node is no longer referred to.
    pub(crate) fn drop_node(&mut self) {
        self.garbage += 1;
    }

    /// Number of terminals (what a base record of the page holds).
    #[inline]
    pub fn terminal_count(&self) -> usize {
        self.terminals as usize
    }

    pub(crate) fn set_terminal_count(&mut self, n: usize) {
        self.terminals = n as u32;
    }

    /// Drops unreferenced nodes and leaves, renumbering the others in
    /// depth-first order, once they are a quarter of either array (until
    /// then they cost memory, not time: nothing walks what no slot refers
    /// to).
    pub(crate) fn compact(&mut self) {
        if self.garbage as usize * 4 <= self.nodes.len()
            && self.dead_leaves as usize * 4 <= self.leaves.len()
        {
            return;
        }
        let mut nodes = Vec::with_capacity(self.nodes.len() - self.garbage as usize);
        let mut leaves = Vec::with_capacity(self.leaves.len() - self.dead_leaves as usize);
        copy_reachable(self, Self::ROOT, &mut nodes, &mut leaves);
        self.nodes = nodes;
        self.leaves = leaves;
        self.garbage = 0;
        self.dead_leaves = 0;
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

    /// Builds the page at `path` from its stored form, checking its shape.
    /// The page root's slots whose hashes the image holds are left unhashed;
    /// every other hash is computed.
    pub fn from_image(image: &PageImage, path: &PagePath) -> Result<Page, MerkleError> {
        let bad = |detail: &'static str| MerkleError::CorruptPage {
            path: *path,
            detail,
        };
        if usize::from(image.levels) != PAGE_LEVELS {
            return Err(bad("page spans a different number of levels"));
        }
        // Sized up front: growing the node array copied it (1,124 bytes a
        // node) about twice over per page read.
        let mut page = Page::default();
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
            let mut id = Self::ROOT;
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
        page.check_and_hash(Self::ROOT, true).map_err(bad)?;
        if !path.is_root() {
            let root = page.root();
            if root.occupied() == 0 || root.lone_leaf().is_some() {
                return Err(bad("a non-root page holds fewer than two keys"));
            }
        }
        Ok(page)
    }

    /// The changed slots from `old` to `self`, in position order: the delta
    /// that turns the stored form of `old` into that of `self`, and the
    /// number of terminals it removes and adds. Subtrees with equal hashes
    /// are equal and are skipped without a look inside.
    pub fn changes_since(&self, old: &Page) -> (Vec<(SlotPos, Option<Terminal>)>, usize, usize) {
        let mut out = Vec::new();
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
        // Removals were pushed before additions at the same position (and
        // the sort is stable); keep the addition.
        out.sort_by_key(|c| c.0);
        out.dedup_by(|later, earlier| {
            if later.0 == earlier.0 {
                *earlier = *later;
                true
            } else {
                false
            }
        });
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
        for (n, child) in self.node(id).children.iter().enumerate() {
            self.terminals_of(child, depth + 1, nibbles << 4 | n as u16, |p, t| {
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
                for (n, child) in self.node(*id).children.iter().enumerate() {
                    self.walk_terminals(child, depth + 1, path << 4 | n as u16, f);
                }
            }
        }
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
                Node::Leaf { id: leaf, .. } => self.hashed_leaf(leaf),
                Node::Empty | Node::Page(_) => continue,
            };
            self.node_mut(id).children[n] = slot;
        }
        let node = self.node_mut(id);
        if !is_page_root && node.lone_leaf().is_some() {
            return Err(LONE_LEAF);
        }
        node.rehash_all();
        Ok(())
    }
}

const LONE_LEAF: &str = "an internal node holds a lone leaf";

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

/// Copies node `id` of `page` and the nodes and leaves below it into
/// `nodes` and `leaves`, renumbering them.
fn copy_reachable(
    page: &Page,
    id: NodeId,
    nodes: &mut Vec<Inner>,
    leaves: &mut Vec<Leaf>,
) -> NodeId {
    let at = nodes.len();
    nodes.push(page.nodes[id as usize]);
    for n in 0..16 {
        match nodes[at].children[n] {
            Node::Inner { id: child, hash } => {
                let new = copy_reachable(page, child, nodes, leaves);
                nodes[at].children[n] = Node::Inner { id: new, hash };
            }
            Node::Leaf { id: leaf, hash } => {
                leaves.push(*page.leaf(leaf));
                let new = (leaves.len() - 1) as LeafId;
                nodes[at].children[n] = Node::Leaf { id: new, hash };
            }
            Node::Empty | Node::Page(_) => {}
        }
    }
    at as NodeId
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
    let (x, y) = (old.node(a), new.node(b));
    // Comparing leaf hashes leaves the (cold) leaf arrays untouched.
    let hashed = x.hashed && y.hashed;
    for (n, (p, q)) in x.children.iter().zip(y.children.iter()).enumerate() {
        if same_slot(old, p, new, q, hashed) {
            continue;
        }
        let path = nibbles << 4 | n as u16;
        if let (Node::Inner { id: i, .. }, Node::Inner { id: j, .. }) = (p, q) {
            diff((old, *i), (new, *j), depth + 1, path, out, removed, added);
            continue;
        }
        old.terminals_of(p, depth + 1, path, |pos, _| {
            *removed += 1;
            out.push((pos, None));
        });
        new.terminals_of(q, depth + 1, path, |pos, t| {
            *added += 1;
            out.push((pos, Some(t)));
        });
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

// Stored hashes leave only the page root's children unhashed, and the code
// that hashes them later relies on their slots holding no internal nodes.
const _: () = assert!(PAGE_LEVELS <= 2);

// A slot is a hash and an index: what keeps a node at 16 x 40 + 15 x 32 =
// 1,120 bytes, about half what it took with leaves inline.
const _: () = assert!(std::mem::size_of::<Node>() <= 40);
