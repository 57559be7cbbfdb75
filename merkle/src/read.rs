//! Reads through the trie: the root, one key, and leaves in key-hash order.

use std::sync::Arc;

use crate::error::MerkleError;
use crate::hash::{nibble, Hash, KeyHash, ValueHash, EMPTY};
use crate::page::{Node, NodeId, Page};
use crate::path::PagePath;
use crate::source::PageSource;

/// The page at `path` as of `version`; the root page of a version with no
/// root page is the empty page, any other missing page is an error.
pub(crate) fn load<S: PageSource + ?Sized>(
    source: &S,
    path: &PagePath,
    version: u64,
) -> Result<Arc<Page>, MerkleError> {
    match source.page(path, version)? {
        Some(vp) => Ok(vp.page),
        None if path.is_root() => Ok(Arc::new(Page::default())),
        None => Err(MerkleError::MissingPage {
            path: *path,
            version,
        }),
    }
}

/// The root hash of the trie as of `version`.
pub fn root<S: PageSource + ?Sized>(source: &S, version: u64) -> Result<Hash, MerkleError> {
    Ok(match source.page(&PagePath::ROOT, version)? {
        Some(vp) => vp.page.hash(),
        None => EMPTY,
    })
}

/// The value hash of `key_hash` as of `version`, walking the trie.
pub fn get<S: PageSource + ?Sized>(
    source: &S,
    version: u64,
    key_hash: &KeyHash,
) -> Result<Option<ValueHash>, MerkleError> {
    let mut page = load(source, &PagePath::ROOT, version)?;
    let mut id = Page::ROOT;
    let mut depth = 0;
    loop {
        match page.child(id, usize::from(nibble(key_hash, depth))) {
            Node::Empty => return Ok(None),
            Node::Leaf { id: leaf, .. } => {
                let l = page.leaf(leaf);
                return Ok((l.key_hash == *key_hash).then_some(l.value_hash));
            }
            Node::Inner { id: child, .. } => id = child,
            Node::Page(_) => {
                page = load(source, &PagePath::from_key(key_hash, depth + 1), version)?;
                id = Page::ROOT;
            }
        }
        depth += 1;
    }
}

/// Up to `limit` leaves with key hash `>= from`, in key-hash order, as of
/// `version`.
pub fn leaves<S: PageSource + ?Sized>(
    source: &S,
    version: u64,
    from: &KeyHash,
    limit: usize,
) -> Result<Vec<(KeyHash, ValueHash)>, MerkleError> {
    let mut out = Vec::new();
    if limit > 0 {
        let root = load(source, &PagePath::ROOT, version)?;
        collect(
            source,
            version,
            (&root, Page::ROOT),
            PagePath::ROOT,
            from,
            limit,
            &mut out,
        )?;
    }
    Ok(out)
}

/// The largest key hash under `path`.
fn last_under(path: &PagePath) -> KeyHash {
    let mut hi = [0xffu8; 32];
    let n = path.len();
    hi[..n / 2].copy_from_slice(&path.as_padded()[..n / 2]);
    if n % 2 == 1 {
        hi[n / 2] = path.as_padded()[n / 2] | 0x0f;
    }
    hi
}

fn collect<S: PageSource + ?Sized>(
    source: &S,
    version: u64,
    (page, id): (&Page, NodeId),
    at: PagePath,
    from: &KeyHash,
    limit: usize,
    out: &mut Vec<(KeyHash, ValueHash)>,
) -> Result<(), MerkleError> {
    for (n, child) in page.children(id) {
        if out.len() >= limit {
            break;
        }
        let path = at.child(n as u8);
        if child.is_empty() || last_under(&path) < *from {
            continue;
        }
        match child {
            Node::Empty => {}
            Node::Leaf { id: leaf, .. } => {
                let l = page.leaf(leaf);
                if l.key_hash >= *from {
                    out.push((l.key_hash, l.value_hash));
                }
            }
            Node::Inner { id: child, .. } => {
                collect(source, version, (page, child), path, from, limit, out)?
            }
            Node::Page(_) => {
                let child = load(source, &path, version)?;
                collect(
                    source,
                    version,
                    (&child, Page::ROOT),
                    path,
                    from,
                    limit,
                    out,
                )?;
            }
        }
    }
    Ok(())
}

/// Walks every page of the trie as of `version` and recomputes what reading
/// a page trusts: each hash a page's record stores in place of a subtree,
/// and each child page reference, against the child page's root hash.
/// Returns the number of pages walked.
pub fn check_pages<S: PageSource + ?Sized>(source: &S, version: u64) -> Result<usize, MerkleError> {
    let root = load(source, &PagePath::ROOT, version)?;
    let mut pages = 0;
    check_page(source, version, &root, PagePath::ROOT, &mut pages)?;
    Ok(pages)
}

fn check_page<S: PageSource + ?Sized>(
    source: &S,
    version: u64,
    page: &Page,
    path: PagePath,
    pages: &mut usize,
) -> Result<(), MerkleError> {
    *pages += 1;
    page.verify_stored_hashes()
        .map_err(|detail| MerkleError::CorruptPage { path, detail })?;
    check_below(source, version, page, Page::ROOT, path, pages)
}

fn check_below<S: PageSource + ?Sized>(
    source: &S,
    version: u64,
    page: &Page,
    id: NodeId,
    at: PagePath,
    pages: &mut usize,
) -> Result<(), MerkleError> {
    for (n, child) in page.children(id) {
        let path = at.child(n as u8);
        match child {
            Node::Inner { id, .. } => check_below(source, version, page, id, path, pages)?,
            Node::Page(hash) => {
                let child = load(source, &path, version)?;
                if child.hash() != hash {
                    return Err(MerkleError::CorruptPage {
                        path,
                        detail: "a child page reference does not match the child page",
                    });
                }
                check_page(source, version, &child, path, pages)?;
            }
            Node::Empty | Node::Leaf { .. } => {}
        }
    }
    Ok(())
}
