//! A decoded page: a trie subtree of [`PAGE_LEVELS`] nibble levels with
//! every hash inside it cached.
//!
//! An internal node keeps the 15 inner hashes of the binary tree over its
//! 16 slots, so changing one child rehashes 4 binary nodes, and a proof's
//! siblings are read, not computed. Leaves keep their hash too.

use std::sync::Arc;

use verity_codec::page::{PageImage, SlotPos, Terminal};

use crate::error::MerkleError;
use crate::hash::{internal_hash, leaf_hash, nibble, Hash, KeyHash, ValueHash, EMPTY};
use crate::path::PagePath;

/// Nibble levels one page spans below its root node.
pub const PAGE_LEVELS: usize = 2;

/// A leaf with its cached hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leaf {
    /// The key's path.
    pub key_hash: KeyHash,
    /// The value's hash.
    pub value_hash: ValueHash,
    /// `leaf_hash(key_hash, value_hash)`.
    pub hash: Hash,
}

impl Leaf {
    /// A leaf, hashing it.
    pub fn new(key_hash: KeyHash, value_hash: ValueHash) -> Leaf {
        Leaf {
            key_hash,
            value_hash,
            hash: leaf_hash(&key_hash, &value_hash),
        }
    }
}

/// A slot of an internal node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Node {
    /// Nothing below.
    #[default]
    Empty,
    /// One key (kept inline: copying a page copies its leaves without
    /// touching other allocations).
    Leaf(Leaf),
    /// An internal node inside the same page. Versions of a page share the
    /// nodes they have in common; a write copies only the nodes it changes.
    Inner(Arc<Inner>),
    /// The root of a child page (only at the page's last level), by hash.
    Page(Hash),
}

impl Node {
    /// The node's hash.
    #[inline]
    pub fn hash(&self) -> Hash {
        match self {
            Node::Empty => EMPTY,
            Node::Leaf(l) => l.hash,
            Node::Inner(i) => i.hash(),
            Node::Page(h) => *h,
        }
    }

    /// True for [`Node::Empty`].
    pub fn is_empty(&self) -> bool {
        matches!(self, Node::Empty)
    }
}

/// An internal node: 16 slots and the binary hash tree over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inner {
    /// The slots, indexed by nibble.
    pub children: [Node; 16],
    /// Binary tree in heap order: `tree[0]` is the node's hash, the children
    /// of `tree[i]` are `tree[2i+1]` and `tree[2i+2]`, and the children of
    /// `tree[7..15]` are the slot hashes.
    tree: [Hash; 15],
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            children: Default::default(),
            tree: [EMPTY; 15],
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
    /// The node's hash.
    #[inline]
    pub fn hash(&self) -> Hash {
        self.tree[0]
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
                Node::Leaf(_) if found.is_none() => found = Some(i),
                _ => return None,
            }
        }
        found
    }
}

/// A decoded page: its root node is internal (a page exists only where the
/// trie has an internal node at a page boundary, and for the trie root).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    /// The page's root node.
    pub root: Inner,
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
    /// The page root's hash.
    pub fn hash(&self) -> Hash {
        self.root.hash()
    }

    /// The page's terminals in position order (its stored form).
    pub fn to_image(&self) -> PageImage {
        let mut entries = Vec::new();
        collect_terminals(&self.root, 0, 0, &mut entries);
        entries.sort_unstable_by_key(|e: &(SlotPos, Terminal)| e.0);
        PageImage {
            levels: PAGE_LEVELS as u8,
            entries,
        }
    }

    /// Builds the page at `path` from its stored form, checking its shape and
    /// computing every hash.
    pub fn from_image(image: &PageImage, path: &PagePath) -> Result<Page, MerkleError> {
        let bad = |detail: &'static str| MerkleError::CorruptPage {
            path: *path,
            detail,
        };
        if usize::from(image.levels) != PAGE_LEVELS {
            return Err(bad("page spans a different number of levels"));
        }
        let mut root = Inner::default();
        for (pos, terminal) in &image.entries {
            let depth = pos.depth();
            let mut node = &mut root;
            for i in 0..depth - 1 {
                let slot = &mut node.children[usize::from(pos.nibble(i))];
                if slot.is_empty() {
                    *slot = Node::Inner(Arc::default());
                }
                node = match slot {
                    Node::Inner(inner) => Arc::make_mut(inner),
                    _ => return Err(bad("a terminal lies below a leaf")),
                };
            }
            let slot = &mut node.children[usize::from(pos.nibble(depth - 1))];
            if !slot.is_empty() {
                return Err(bad("two terminals share a slot"));
            }
            *slot = match terminal {
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
                    Node::Leaf(Leaf::new(*key_hash, *value_hash))
                }
                Terminal::Child { hash } if *hash == EMPTY => {
                    return Err(bad("a child page reference hashes to the empty subtree"))
                }
                Terminal::Child { hash } => Node::Page(*hash),
            };
        }
        check_and_hash(&mut root, true).map_err(bad)?;
        if !path.is_root() {
            let occupied = root.occupied();
            if occupied == 0 || root.lone_leaf().is_some() {
                return Err(bad("a non-root page holds fewer than two keys"));
            }
        }
        Ok(Page { root })
    }
}

impl Page {
    /// Number of terminals (what a base record of the page holds).
    pub fn terminal_count(&self) -> usize {
        fn count(node: &Inner) -> usize {
            node.children
                .iter()
                .map(|c| match c {
                    Node::Empty => 0,
                    Node::Leaf(_) | Node::Page(_) => 1,
                    Node::Inner(i) => count(i),
                })
                .sum()
        }
        count(&self.root)
    }

    /// The changed slots from `old` to `self`, in position order: the delta
    /// that turns the stored form of `old` into that of `self`. Subtrees
    /// with equal hashes are equal and are skipped without a look inside.
    pub fn changes_since(&self, old: &Page) -> Vec<(SlotPos, Option<Terminal>)> {
        let mut out = Vec::new();
        diff(&old.root, &self.root, 0, 0, &mut out);
        // Removals were pushed before additions at the same position; keep
        // the addition.
        out.sort_by_key(|c| c.0);
        out.dedup_by(|later, earlier| {
            if later.0 == earlier.0 {
                *earlier = *later;
                true
            } else {
                false
            }
        });
        out
    }
}

fn diff(
    old: &Inner,
    new: &Inner,
    depth: u8,
    nibbles: u16,
    out: &mut Vec<(SlotPos, Option<Terminal>)>,
) {
    if old.hash() == new.hash() {
        return;
    }
    for (n, (a, b)) in old.children.iter().zip(new.children.iter()).enumerate() {
        if a.hash() == b.hash() {
            continue;
        }
        let path = nibbles << 4 | n as u16;
        if let (Node::Inner(x), Node::Inner(y)) = (a, b) {
            diff(x, y, depth + 1, path, out);
            continue;
        }
        let mut removed = Vec::new();
        terminals_of(a, depth + 1, path, &mut removed);
        out.extend(removed.into_iter().map(|(p, _)| (p, None)));
        let mut added = Vec::new();
        terminals_of(b, depth + 1, path, &mut added);
        out.extend(added.into_iter().map(|(p, t)| (p, Some(t))));
    }
}

/// Appends the terminals of the slot `node` at position `(depth, path)`.
fn terminals_of(node: &Node, depth: u8, path: u16, out: &mut Vec<(SlotPos, Terminal)>) {
    let pos = || SlotPos::new(depth, path).unwrap_or_else(unreachable_pos);
    match node {
        Node::Empty => {}
        Node::Leaf(l) => out.push((
            pos(),
            Terminal::Leaf {
                key_hash: l.key_hash,
                value_hash: l.value_hash,
            },
        )),
        Node::Page(h) => out.push((pos(), Terminal::Child { hash: *h })),
        Node::Inner(inner) => collect_terminals(inner, depth, path, out),
    }
}

/// Computes the hashes of every inner node, bottom up, and rejects inner
/// nodes inside the page that hold a lone leaf (the leaf belongs higher up).
fn check_and_hash(node: &mut Inner, is_page_root: bool) -> Result<(), &'static str> {
    for child in node.children.iter_mut() {
        if let Node::Inner(inner) = child {
            check_and_hash(Arc::make_mut(inner), false)?;
        }
    }
    if !is_page_root && node.lone_leaf().is_some() {
        return Err("an internal node holds a lone leaf");
    }
    node.rehash_all();
    Ok(())
}

/// Appends the terminals below `node` (at `depth` nibbles below the page
/// root along `nibbles`).
fn collect_terminals(node: &Inner, depth: u8, nibbles: u16, out: &mut Vec<(SlotPos, Terminal)>) {
    for (n, child) in node.children.iter().enumerate() {
        terminals_of(child, depth + 1, nibbles << 4 | n as u16, out);
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
