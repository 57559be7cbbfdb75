//! Trie pages, page deltas and the page record stored per `(page path, version)`.
//!
//! A page holds the nodes of a trie subtree spanning `levels` nibble levels
//! below its root node. Its content is written as its *terminals*: the
//! non-empty slots that are not internal nodes inside the page, each at a
//! [`SlotPos`] (a nibble path of 1..=`levels` nibbles relative to the page
//! root). A terminal is a leaf (key hash and value hash) at any depth, or,
//! at depth `levels` only, the root hash of a child page. The internal nodes
//! inside the page are implied by the terminals below them and are not
//! written.
//!
//! ```text
//! record := format u8 (=2) | kind u8 | body
//!   kind 1 base    body := levels u8 | count varint | count * (pos u16 LE | terminal) | hashes
//!   kind 2 delta   body := levels u8 | count varint | count * (pos u16 LE | change) | hashes
//!   kind 3 removed body := (nothing)
//! terminal := 1 | key_hash[32] | value_hash[32]      (leaf)
//!           | 2 | child_hash[32]                     (child page)
//! change   := 0 (slot becomes empty) | terminal
//! hashes   := mask u16 LE | popcount(mask) * hash[32]
//! ```
//!
//! `hashes` carries the hashes of page-root slots that are internal nodes
//! (bit `n` of the mask: slot `n`): all of them in a base, those the delta
//! changes in a delta. A reader builds a page without recomputing those
//! subtrees. Format 1, still read, is format 2 without `hashes`.
//!
//! Positions are strictly increasing. The decoder checks the format byte,
//! the kinds and tags, the position ranges and order, and that every stored
//! hash names a slot the record can hold an internal node in; the trie
//! checks the shape (no terminal below a leaf, leaf paths matching their
//! positions).

use crate::error::{CodecError, Result};
use crate::reader::{put_u16, Reader};
use crate::varint;

/// The page record format this build writes (and reads).
pub const PAGE_FORMAT: u8 = 2;

/// The first page record format, without stored slot hashes: still read.
pub const PAGE_FORMAT_1: u8 = 1;

/// The most nibble levels a page may span (positions must fit a `u16`).
pub const MAX_PAGE_LEVELS: u8 = 3;

const KIND_BASE: u8 = 1;
const KIND_DELTA: u8 = 2;
const KIND_REMOVED: u8 = 3;

const TAG_EMPTY: u8 = 0;
const TAG_LEAF: u8 = 1;
const TAG_CHILD: u8 = 2;

/// A 32-byte hash.
pub type Hash32 = [u8; 32];

/// The position of a slot inside a page: `depth` nibbles (1..=3) below the
/// page root, packed most significant nibble first into the low bits.
///
/// Encoded as `u16` = `depth << 12 | nibbles`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotPos(u16);

impl SlotPos {
    /// The position `depth` nibbles below the page root along `nibbles`
    /// (only the low `4 * depth` bits are used). `depth` must be 1..=3.
    pub fn new(depth: u8, nibbles: u16) -> Option<SlotPos> {
        if depth == 0 || depth > MAX_PAGE_LEVELS {
            return None;
        }
        let mask = (1u16 << (4 * u16::from(depth))) - 1;
        Some(SlotPos(u16::from(depth) << 12 | (nibbles & mask)))
    }

    /// Decodes the `u16` form, checking it against a page of `levels`.
    pub fn from_raw(raw: u16, levels: u8) -> Option<SlotPos> {
        let depth = (raw >> 12) as u8;
        if depth == 0 || depth > levels || depth > MAX_PAGE_LEVELS {
            return None;
        }
        let nibbles = raw & 0x0fff;
        if nibbles >> (4 * u16::from(depth)) != 0 {
            return None;
        }
        Some(SlotPos(raw))
    }

    /// The `u16` form.
    pub fn raw(self) -> u16 {
        self.0
    }

    /// Nibbles below the page root (1..=3).
    pub fn depth(self) -> u8 {
        (self.0 >> 12) as u8
    }

    /// The packed nibbles.
    pub fn nibbles(self) -> u16 {
        self.0 & 0x0fff
    }

    /// The `i`-th nibble (0 = just below the page root).
    pub fn nibble(self, i: u8) -> u8 {
        let shift = 4 * u16::from(self.depth() - 1 - i);
        ((self.nibbles() >> shift) & 0xf) as u8
    }
}

/// A non-empty slot of a page that is not an internal node of the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminal {
    /// A leaf: the key's path hash and the value's hash.
    Leaf {
        /// `blake3(key)`, the leaf's path.
        key_hash: Hash32,
        /// `blake3(value)`.
        value_hash: Hash32,
    },
    /// The root of a child page (only at depth `levels`).
    Child {
        /// The child page root's node hash.
        hash: Hash32,
    },
}

/// Stored hashes of page-root slots that are internal nodes, as
/// `(slot, hash)` ordered by slot, each slot once.
pub type SlotHashes = Vec<(u8, Hash32)>;

/// The full content of one page.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PageImage {
    /// Nibble levels the page spans.
    pub levels: u8,
    /// The terminals, ordered by position, each position once.
    pub entries: Vec<(SlotPos, Terminal)>,
    /// The hashes of page-root slots that are internal nodes, where known
    /// (a writer stores all of them; a reader computes any that is
    /// missing).
    pub hashes: SlotHashes,
}

impl PageImage {
    /// The page-root slots that hold a terminal two levels down or deeper,
    /// the only slots that can be internal nodes (bit `n` = slot `n`).
    pub fn deep_slots(&self) -> u16 {
        self.entries
            .iter()
            .filter(|(pos, _)| pos.depth() >= 2)
            .fold(0, |m, (pos, _)| m | 1 << pos.nibble(0))
    }
}

/// The changes that turn one version of a page into the next.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PageDelta {
    /// Nibble levels the page spans.
    pub levels: u8,
    /// Changed slots ordered by position: the new terminal, or `None` where
    /// a terminal was removed.
    pub changes: Vec<(SlotPos, Option<Terminal>)>,
    /// The new hashes of page-root slots that the changes touch and that
    /// are internal nodes afterwards.
    pub hashes: SlotHashes,
}

/// What is stored under `(page path, version)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageRecord {
    /// The full page.
    Base(PageImage),
    /// The changes against the page's previous version.
    Delta(PageDelta),
    /// The page no longer exists from this version on.
    Removed,
}

/// The bit of page-root slot `n` in a 16-bit slot mask; none (0) for a
/// number of 16 or more, which decoded records never hold but a
/// hand-built image may.
fn slot_bit(n: u8) -> u16 {
    1u16.checked_shl(u32::from(n)).unwrap_or(0)
}

impl PageDelta {
    /// The delta that turns `old` into `new` (both ordered by position).
    pub fn between(old: &PageImage, new: &PageImage) -> PageDelta {
        let mut changes = Vec::new();
        let (mut i, mut j) = (0, 0);
        let (a, b) = (&old.entries, &new.entries);
        while i < a.len() || j < b.len() {
            match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) if x.0 == y.0 => {
                    if x.1 != y.1 {
                        changes.push((y.0, Some(y.1)));
                    }
                    i += 1;
                    j += 1;
                }
                (Some(x), Some(y)) if x.0 < y.0 => {
                    changes.push((x.0, None));
                    i += 1;
                }
                (Some(x), None) => {
                    changes.push((x.0, None));
                    i += 1;
                }
                (_, Some(y)) => {
                    changes.push((y.0, Some(y.1)));
                    j += 1;
                }
                (None, None) => break,
            }
        }
        PageDelta {
            levels: new.levels,
            changes,
            hashes: SlotHashes::new(),
        }
    }

    /// The page-root slots the changes touch (bit `n` = slot `n`).
    pub fn touched_slots(&self) -> u16 {
        Self::slots_touched_by(&self.changes)
    }

    /// The page-root slots that `changes` touch (bit `n` = slot `n`).
    pub fn slots_touched_by(changes: &[(SlotPos, Option<Terminal>)]) -> u16 {
        changes.iter().fold(0, |m, (pos, _)| m | 1 << pos.nibble(0))
    }

    /// Appends the record of a delta spanning `levels` with `changes` and
    /// the slot hashes `hashes` (see [`HashParts`]) to `out`: the bytes
    /// `PageRecord::Delta(delta).encode_into` appends for the delta of
    /// those fields, without building it (an update encodes from the lists
    /// and the page it already has).
    pub fn encode_parts_into<'h>(
        out: &mut Vec<u8>,
        levels: u8,
        changes: &[(SlotPos, Option<Terminal>)],
        hashes: HashParts<impl Iterator<Item = &'h Hash32>>,
    ) {
        out.reserve(len_bound(changes.len(), hashes.0.count_ones() as usize));
        out.push(PAGE_FORMAT);
        put_delta(out, levels, changes, hashes);
    }

    /// Applies the delta to `base`, which must span the same levels.
    pub fn apply(&self, base: &PageImage) -> Result<PageImage> {
        if base.levels != self.levels {
            return Err(CodecError::Corrupt {
                what: "page delta",
                offset: 0,
                detail: "delta and base page span different levels",
            });
        }
        let mut entries = Vec::with_capacity(base.entries.len() + self.changes.len());
        let (a, b) = (&base.entries, &self.changes);
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) if x.0 == y.0 => {
                    if let Some(t) = y.1 {
                        entries.push((y.0, t));
                    }
                    i += 1;
                    j += 1;
                }
                (Some(x), Some(y)) if x.0 < y.0 => {
                    entries.push(*x);
                    i += 1;
                }
                (Some(x), None) => {
                    entries.push(*x);
                    i += 1;
                }
                (_, Some(y)) => {
                    match y.1 {
                        Some(t) => entries.push((y.0, t)),
                        None => {
                            return Err(CodecError::Corrupt {
                                what: "page delta",
                                offset: 0,
                                detail: "delta removes a slot the base does not hold",
                            })
                        }
                    }
                    j += 1;
                }
                (None, None) => break,
            }
        }
        // A slot the delta touches keeps only the hash the delta stores.
        let touched = self.touched_slots();
        let mut hashes: SlotHashes = base
            .hashes
            .iter()
            .filter(|(n, _)| touched & slot_bit(*n) == 0)
            .chain(self.hashes.iter())
            .copied()
            .collect();
        hashes.sort_unstable_by_key(|h| h.0);
        Ok(PageImage {
            levels: self.levels,
            entries,
            hashes,
        })
    }

    /// Applies `deltas` (oldest first) to `base` in one pass: the image,
    /// or the error, that applying them one after another with
    /// [`PageDelta::apply`] gives, for deltas as [`PageRecord::decode`]
    /// returns them (hashes only of the slots a delta touches), without
    /// an image per delta in between. A page of 150 terminals read as a
    /// base and 32 deltas copied the base's entries 32 times.
    pub fn apply_chain(base: &PageImage, deltas: &[PageDelta]) -> Result<PageImage> {
        if let [delta] = deltas {
            return delta.apply(base);
        }
        if let Some(m) = deltas.iter().position(|d| d.levels != base.levels) {
            // The deltas before it are applied first, for their error.
            Self::apply_chain(base, &deltas[..m])?;
            return Err(CodecError::Corrupt {
                what: "page delta",
                offset: 0,
                detail: "delta and base page span different levels",
            });
        }
        // Every change, each position's oldest first: the deltas' changes
        // in chain order, sorted stably by position.
        let mut changes: Vec<(SlotPos, Option<Terminal>)> =
            Vec::with_capacity(deltas.iter().map(|d| d.changes.len()).sum());
        for d in deltas {
            changes.extend_from_slice(&d.changes);
        }
        changes.sort_by_key(|c| c.0);
        let (a, b) = (&base.entries, &changes);
        let mut entries = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        loop {
            let pos = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) => x.0.min(y.0),
                (Some(x), None) => x.0,
                (None, Some(y)) => y.0,
                (None, None) => break,
            };
            // The position's terminal in the base, then after each delta
            // that changes it, in order.
            let mut now = match a.get(i) {
                Some(x) if x.0 == pos => {
                    i += 1;
                    Some(x.1)
                }
                _ => None,
            };
            while let Some(y) = b.get(j).filter(|y| y.0 == pos) {
                now = match (y.1, now) {
                    (Some(t), _) => Some(t),
                    (None, Some(_)) => None,
                    (None, None) => {
                        return Err(CodecError::Corrupt {
                            what: "page delta",
                            offset: 0,
                            detail: "delta removes a slot the base does not hold",
                        })
                    }
                };
                j += 1;
            }
            if let Some(t) = now {
                entries.push((pos, t));
            }
        }
        // A slot keeps the hash of the newest delta that touches it (none,
        // if that delta stores none), else the base's.
        // (Slot numbers are below 16 in decoded records; others are left
        // out rather than shifted out of range: `apply` keeps them.)
        let mut slots: [Option<Hash32>; 16] = [None; 16];
        let mut decided = 0u16;
        for d in deltas.iter().rev() {
            let touched = d.touched_slots() & !decided;
            for &(n, h) in &d.hashes {
                if touched & slot_bit(n) != 0 {
                    slots[usize::from(n)] = Some(h);
                }
            }
            decided |= touched;
        }
        for &(n, h) in &base.hashes {
            if slot_bit(n) != 0 && decided & slot_bit(n) == 0 {
                slots[usize::from(n)] = Some(h);
            }
        }
        let hashes = (0..16u8)
            .filter_map(|n| slots[usize::from(n)].map(|h| (n, h)))
            .collect();
        Ok(PageImage {
            levels: base.levels,
            entries,
            hashes,
        })
    }
}

/// At least the length of a base or delta record of `terminals` terminals
/// or changes and `hashes` slot hashes: format, kind, levels, the count, a
/// position and a terminal (at most a tag and two hashes) each, the
/// hashes' mask and the hashes.
fn len_bound(terminals: usize, hashes: usize) -> usize {
    3 + varint::MAX_LEN + terminals * 67 + 2 + hashes * 32
}

/// The body of a delta record, after the format byte.
fn put_delta<'h>(
    out: &mut Vec<u8>,
    levels: u8,
    changes: &[(SlotPos, Option<Terminal>)],
    hashes: HashParts<impl Iterator<Item = &'h Hash32>>,
) {
    out.push(KIND_DELTA);
    out.push(levels);
    varint::put(out, changes.len() as u64);
    for (pos, change) in changes {
        put_u16(out, pos.raw());
        match change {
            Some(t) => put_terminal(out, t),
            None => out.push(TAG_EMPTY),
        }
    }
    put_hashes(out, hashes);
}

/// The body of a base record, after the format byte: its `count`
/// terminals, which `entries` puts in position order, and its hashes.
fn put_base<'h>(
    out: &mut Vec<u8>,
    levels: u8,
    (count, entries): (usize, impl FnOnce(&mut BaseEntries<'_>)),
    hashes: HashParts<impl Iterator<Item = &'h Hash32>>,
) {
    out.push(KIND_BASE);
    out.push(levels);
    varint::put(out, count as u64);
    let mut put = BaseEntries { out, written: 0 };
    entries(&mut put);
    debug_assert_eq!(
        put.written, count,
        "a base record's terminals and its count"
    );
    put_hashes(out, hashes);
}

/// The slot hashes a record holds, given by parts: the page-root slots
/// (bit `n` = slot `n`) and an iterator over their hashes in slot order,
/// which must yield one for each slot.
pub struct HashParts<I>(pub u16, pub I);

impl<'h>
    HashParts<std::iter::Map<std::slice::Iter<'h, (u8, Hash32)>, fn(&(u8, Hash32)) -> &Hash32>>
{
    /// The parts of `hashes` (slot and hash, in slot order), as an image
    /// or a delta holds them.
    pub fn of(hashes: &'h [(u8, Hash32)]) -> Self {
        let mask = hashes.iter().fold(0u16, |m, (n, _)| m | 1 << n);
        HashParts(mask, hashes.iter().map(|(_, h)| h))
    }
}

/// The terminals of a base record being encoded (see
/// [`PageRecord::encode_base_parts_into`]).
pub struct BaseEntries<'a> {
    out: &'a mut Vec<u8>,
    written: usize,
}

impl BaseEntries<'_> {
    /// Appends the terminal `t` at `pos` (after those before it in
    /// position order).
    #[inline]
    pub fn push(&mut self, pos: SlotPos, t: &Terminal) {
        put_u16(self.out, pos.raw());
        put_terminal(self.out, t);
        self.written += 1;
    }
}

/// A record's slot hashes: their slots' mask, then the hashes in slot
/// order.
fn put_hashes<'h>(
    out: &mut Vec<u8>,
    HashParts(mask, hashes): HashParts<impl Iterator<Item = &'h Hash32>>,
) {
    put_u16(out, mask);
    let mut written = 0;
    for h in hashes {
        out.extend_from_slice(h);
        written += 1;
    }
    debug_assert_eq!(written, mask.count_ones(), "slot hashes and their mask");
}

/// Reads a `hashes` field whose slots must all be in `allowed`.
fn get_hashes(r: &mut Reader<'_>, allowed: u16) -> Result<SlotHashes> {
    let at = r.position();
    let mask = r.u16()?;
    if mask & !allowed != 0 {
        return Err(r.corrupt_at(at, "a stored hash names a slot that holds no internal node"));
    }
    let mut hashes = SlotHashes::with_capacity(mask.count_ones() as usize);
    for n in 0..16u8 {
        if mask & (1 << n) != 0 {
            hashes.push((n, r.array()?));
        }
    }
    Ok(hashes)
}

fn put_terminal(out: &mut Vec<u8>, t: &Terminal) {
    match t {
        Terminal::Leaf {
            key_hash,
            value_hash,
        } => {
            out.push(TAG_LEAF);
            out.extend_from_slice(key_hash);
            out.extend_from_slice(value_hash);
        }
        Terminal::Child { hash } => {
            out.push(TAG_CHILD);
            out.extend_from_slice(hash);
        }
    }
}

fn get_terminal(r: &mut Reader<'_>, tag: u8, pos: SlotPos, levels: u8) -> Result<Terminal> {
    match tag {
        TAG_LEAF => Ok(Terminal::Leaf {
            key_hash: r.array()?,
            value_hash: r.array()?,
        }),
        TAG_CHILD => {
            if pos.depth() != levels {
                return Err(r.corrupt("child page reference above the page's last level"));
            }
            Ok(Terminal::Child { hash: r.array()? })
        }
        _ => Err(r.corrupt("unknown slot tag")),
    }
}

impl PageRecord {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// At least the length of the record's encoding (exact but for the
    /// terminal count's varint, counted at its longest).
    pub fn encoded_len_bound(&self) -> usize {
        let (terminals, hashes) = match self {
            PageRecord::Base(page) => (page.entries.len(), page.hashes.len()),
            PageRecord::Delta(delta) => (delta.changes.len(), delta.hashes.len()),
            PageRecord::Removed => return 2,
        };
        len_bound(terminals, hashes)
    }

    /// Appends the encoding of the record to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len_bound());
        out.push(PAGE_FORMAT);
        match self {
            PageRecord::Base(page) => {
                let entries = |e: &mut BaseEntries<'_>| {
                    for (pos, t) in &page.entries {
                        e.push(*pos, t);
                    }
                };
                let count = page.entries.len();
                put_base(
                    out,
                    page.levels,
                    (count, entries),
                    HashParts::of(&page.hashes),
                );
            }
            PageRecord::Delta(delta) => {
                let hashes = HashParts::of(&delta.hashes);
                put_delta(out, delta.levels, &delta.changes, hashes);
            }
            PageRecord::Removed => out.push(KIND_REMOVED),
        }
    }

    /// Appends the record of a base page spanning `levels` with `count`
    /// terminals, which `entries` gives the [`BaseEntries`] in position
    /// order, and the slot hashes `hashes` (see [`HashParts`]) to `out`:
    /// the bytes `PageRecord::Base(image).encode_into` appends for the
    /// image of those fields, without building it (an update encodes a
    /// base straight from its page).
    ///
    /// # Panics
    ///
    /// In a debug build, if `entries` does not put exactly `count`
    /// terminals (the record would be corrupt).
    pub fn encode_base_parts_into<'h>(
        out: &mut Vec<u8>,
        levels: u8,
        (count, entries): (usize, impl FnOnce(&mut BaseEntries<'_>)),
        hashes: HashParts<impl Iterator<Item = &'h Hash32>>,
    ) {
        out.reserve(len_bound(count, hashes.0.count_ones() as usize));
        out.push(PAGE_FORMAT);
        put_base(out, levels, (count, entries), hashes);
    }

    /// True when `bytes` start like a delta record (format and kind bytes
    /// only; the rest is not checked).
    pub fn is_delta(bytes: &[u8]) -> bool {
        matches!(bytes, [PAGE_FORMAT | PAGE_FORMAT_1, KIND_DELTA, ..])
    }

    /// Decodes a record from untrusted bytes, of this format or format 1
    /// (which stores no hashes).
    pub fn decode(bytes: &[u8]) -> Result<PageRecord> {
        let mut r = Reader::new(bytes, "page record");
        let format = r.u8()?;
        if format != PAGE_FORMAT && format != PAGE_FORMAT_1 {
            return Err(CodecError::UnsupportedFormat {
                what: "page record",
                found: format,
                supported: PAGE_FORMAT,
            });
        }
        let kind = r.u8()?;
        let record = match kind {
            KIND_BASE | KIND_DELTA => {
                let levels = r.u8()?;
                if levels == 0 || levels > MAX_PAGE_LEVELS {
                    return Err(r.corrupt_at(2, "page levels out of range"));
                }
                // A slot takes at least 3 bytes (position and tag).
                let count = r.count(3, 1 << 16)?;
                let mut last: Option<SlotPos> = None;
                let mut read_pos = |r: &mut Reader<'_>| -> Result<SlotPos> {
                    let at = r.position();
                    let pos = SlotPos::from_raw(r.u16()?, levels)
                        .ok_or_else(|| r.corrupt_at(at, "slot position out of range"))?;
                    if last.is_some_and(|l| l >= pos) {
                        return Err(r.corrupt_at(at, "slot positions not strictly increasing"));
                    }
                    last = Some(pos);
                    Ok(pos)
                };
                if kind == KIND_BASE {
                    let mut entries = Vec::with_capacity(count);
                    for _ in 0..count {
                        let pos = read_pos(&mut r)?;
                        let tag = r.u8()?;
                        entries.push((pos, get_terminal(&mut r, tag, pos, levels)?));
                    }
                    let mut image = PageImage {
                        levels,
                        entries,
                        hashes: SlotHashes::new(),
                    };
                    if format == PAGE_FORMAT {
                        image.hashes = get_hashes(&mut r, image.deep_slots())?;
                    }
                    PageRecord::Base(image)
                } else {
                    let mut changes = Vec::with_capacity(count);
                    for _ in 0..count {
                        let pos = read_pos(&mut r)?;
                        let tag = r.u8()?;
                        let change = if tag == TAG_EMPTY {
                            None
                        } else {
                            Some(get_terminal(&mut r, tag, pos, levels)?)
                        };
                        changes.push((pos, change));
                    }
                    let mut delta = PageDelta {
                        levels,
                        changes,
                        hashes: SlotHashes::new(),
                    };
                    if format == PAGE_FORMAT {
                        // A delta stores hashes only of slots it changes,
                        // and a page of one level has no internal slots.
                        let allowed = if levels >= 2 {
                            delta.touched_slots()
                        } else {
                            0
                        };
                        delta.hashes = get_hashes(&mut r, allowed)?;
                    }
                    PageRecord::Delta(delta)
                }
            }
            KIND_REMOVED => PageRecord::Removed,
            _ => return Err(r.corrupt_at(1, "unknown page record kind")),
        };
        r.finish()?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_terminal(depth: u8, levels: u8) -> BoxedStrategy<Terminal> {
        let leaf = (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(key_hash, value_hash)| {
            Terminal::Leaf {
                key_hash,
                value_hash,
            }
        });
        if depth == levels {
            prop_oneof![
                leaf,
                any::<[u8; 32]>().prop_map(|hash| Terminal::Child { hash })
            ]
            .boxed()
        } else {
            leaf.boxed()
        }
    }

    fn arb_page() -> impl Strategy<Value = PageImage> {
        (1u8..=3).prop_flat_map(|levels| {
            proptest::collection::btree_map(
                (1u8..=levels, any::<u16>()).prop_filter_map("pos", |(d, n)| SlotPos::new(d, n)),
                Just(()),
                0..24,
            )
            .prop_flat_map(move |positions| {
                let strategies: Vec<_> = positions
                    .keys()
                    .map(|&pos| arb_terminal(pos.depth(), levels).prop_map(move |t| (pos, t)))
                    .collect();
                (strategies, any::<u16>(), any::<[u8; 32]>()).prop_map(
                    move |(entries, pick, seed)| {
                        let mut image = PageImage {
                            levels,
                            entries,
                            hashes: SlotHashes::new(),
                        };
                        // Hashes for some of the slots that can hold an
                        // internal node.
                        let deep = image.deep_slots() & pick;
                        image.hashes = (0..16u8)
                            .filter(|n| deep & (1 << n) != 0)
                            .map(|n| {
                                let mut h = seed;
                                h[0] = n;
                                (n, h)
                            })
                            .collect();
                        image
                    },
                )
            })
        })
    }

    /// A chain of deltas over `base`, one a script: each edits the image
    /// the chain has reached (removes, rewrites and adds terminals, and at
    /// times removes a slot the image does not hold, which `apply`
    /// refuses), and stores hashes of some of the slots it touches.
    fn chain_from(base: &PageImage, scripts: &[Vec<(u8, u16, u8)>]) -> Vec<PageDelta> {
        let levels = base.levels;
        let mut image = base.clone();
        let mut deltas = Vec::new();
        for script in scripts {
            let mut changes = std::collections::BTreeMap::new();
            let held = |image: &PageImage, pos: SlotPos| image.entries.iter().any(|e| e.0 == pos);
            for &(op, at, byte) in script {
                let len = image.entries.len();
                let fresh = SlotPos::new(1 + byte % levels, at).expect("depth in range");
                match op % 8 {
                    0 | 1 if len > 0 => {
                        changes.insert(image.entries[usize::from(at) % len].0, None);
                    }
                    2 | 3 if len > 0 => {
                        let (pos, t) = image.entries[usize::from(at) % len];
                        let t = match t {
                            Terminal::Leaf { key_hash, .. } => Terminal::Leaf {
                                key_hash,
                                value_hash: [byte; 32],
                            },
                            Terminal::Child { .. } => Terminal::Child { hash: [byte; 32] },
                        };
                        changes.insert(pos, Some(t));
                    }
                    7 if !held(&image, fresh) => {
                        changes.insert(fresh, None);
                    }
                    _ if !held(&image, fresh) => {
                        let leaf = Terminal::Leaf {
                            key_hash: [byte; 32],
                            value_hash: [op; 32],
                        };
                        changes.insert(fresh, Some(leaf));
                    }
                    _ => {}
                }
            }
            let changes: Vec<_> = changes.into_iter().collect();
            let touched = PageDelta::slots_touched_by(&changes);
            let pick = script.first().map_or(0, |s| s.1);
            let hashes = (0..16u8)
                .filter(|n| touched & pick & (1 << n) != 0)
                .map(|n| (n, [n ^ (deltas.len() as u8); 32]))
                .collect();
            // Now and then a delta of other levels, which `apply` refuses.
            let delta = match script.first() {
                Some(&(op, _, _)) if op % 32 == 31 => PageDelta {
                    levels: levels % 3 + 1,
                    ..PageDelta::default()
                },
                _ => PageDelta {
                    levels,
                    changes,
                    hashes,
                },
            };
            if let Ok(next) = delta.apply(&image) {
                image = next;
            }
            deltas.push(delta);
        }
        deltas
    }

    proptest! {
        /// Applying a chain in one pass gives what applying its deltas one
        /// after another gives: the same image, or the same error.
        #[test]
        fn a_chain_applied_in_one_pass_is_the_deltas_one_by_one(
            base in arb_page(),
            scripts in proptest::collection::vec(
                proptest::collection::vec((any::<u8>(), any::<u16>(), any::<u8>()), 0..8),
                0..12,
            ),
        ) {
            let deltas = chain_from(&base, &scripts);
            let one_by_one = deltas
                .iter()
                .try_fold(base.clone(), |image, d| d.apply(&image));
            prop_assert_eq!(PageDelta::apply_chain(&base, &deltas), one_by_one);
        }
    }

    #[test]
    fn a_chain_of_other_levels_is_refused_as_one_by_one() {
        let base = PageImage {
            levels: 2,
            ..PageImage::default()
        };
        let absent = SlotPos::new(1, 3).expect("valid");
        let removes_absent = PageDelta {
            levels: 2,
            changes: vec![(absent, None)],
            hashes: SlotHashes::new(),
        };
        let other_levels = PageDelta {
            levels: 3,
            ..PageDelta::default()
        };
        let same = PageDelta {
            levels: 2,
            ..PageDelta::default()
        };
        for deltas in [
            vec![other_levels.clone(), same.clone()],
            vec![same.clone(), other_levels.clone()],
            // The earlier delta's error comes first.
            vec![removes_absent, other_levels],
        ] {
            let one_by_one = deltas
                .iter()
                .try_fold(base.clone(), |image, d| d.apply(&image));
            assert!(one_by_one.is_err());
            assert_eq!(PageDelta::apply_chain(&base, &deltas), one_by_one);
        }
        assert_eq!(
            PageDelta::apply_chain(&base, &[]),
            Ok(base.clone()),
            "no deltas: the base"
        );
    }

    #[test]
    fn slot_positions() {
        let p = SlotPos::new(2, 0xab).expect("valid");
        assert_eq!((p.depth(), p.nibble(0), p.nibble(1)), (2, 0xa, 0xb));
        assert_eq!(p.raw(), 0x20ab);
        assert_eq!(SlotPos::from_raw(0x20ab, 2), Some(p));
        assert_eq!(SlotPos::from_raw(0x20ab, 1), None);
        assert_eq!(SlotPos::from_raw(0x1fab, 3), None);
        assert_eq!(SlotPos::from_raw(0x00ab, 3), None);
        assert_eq!(SlotPos::new(0, 1), None);
    }

    proptest! {
        #[test]
        fn base_and_delta_round_trip(old in arb_page(), new in arb_page()) {
            let record = PageRecord::Base(old.clone());
            prop_assert!(record.encode().len() <= record.encoded_len_bound());
            // The same base encoded by parts.
            let mut parts = Vec::new();
            let hashes = HashParts::of(&old.hashes);
            let entries = |e: &mut BaseEntries<'_>| {
                for (pos, t) in &old.entries {
                    e.push(*pos, t);
                }
            };
            PageRecord::encode_base_parts_into(
                &mut parts,
                old.levels,
                (old.entries.len(), entries),
                hashes,
            );
            prop_assert_eq!(&parts, &record.encode());
            prop_assert_eq!(PageRecord::decode(&record.encode()), Ok(record));
            if old.levels == new.levels {
                let mut delta = PageDelta::between(&old, &new);
                // The delta carries the new page's hashes of the slots it
                // touches; the others come from the old page.
                let touched = delta.touched_slots();
                delta.hashes = new
                    .hashes
                    .iter()
                    .filter(|(n, _)| touched & (1 << n) != 0)
                    .copied()
                    .collect();
                let record = PageRecord::Delta(delta.clone());
                prop_assert!(record.encode().len() <= record.encoded_len_bound());
                let mut parts = Vec::new();
                let hashes = HashParts::of(&delta.hashes);
                PageDelta::encode_parts_into(&mut parts, delta.levels, &delta.changes, hashes);
                prop_assert_eq!(&parts, &record.encode());
                prop_assert_eq!(PageRecord::decode(&record.encode()), Ok(record));
                let applied = delta.apply(&old).expect("apply");
                prop_assert_eq!(&applied.entries, &new.entries);
                let mut want: SlotHashes = old
                    .hashes
                    .iter()
                    .filter(|(n, _)| touched & (1 << n) == 0)
                    .chain(delta.hashes.iter())
                    .copied()
                    .collect();
                want.sort_unstable_by_key(|h| h.0);
                prop_assert_eq!(applied.hashes, want);
            }
        }

        #[test]
        fn format_1_records_still_decode(page in arb_page()) {
            // A format 1 record is a format 2 record without its hashes.
            let mut bytes = PageRecord::Base(PageImage { hashes: SlotHashes::new(), ..page.clone() })
                .encode();
            bytes.truncate(bytes.len() - 2);
            bytes[0] = PAGE_FORMAT_1;
            let record = PageRecord::decode(&bytes).expect("format 1");
            let PageRecord::Base(image) = &record else { panic!("not a base") };
            prop_assert_eq!(&image.entries, &page.entries);
            prop_assert!(image.hashes.is_empty());
            prop_assert_eq!(PageRecord::decode(&record.encode()), Ok(record.clone()));
        }

        #[test]
        fn truncations_and_flips_never_panic(page in arb_page(), at: usize, bit in 0u8..8) {
            let bytes = PageRecord::Base(page).encode();
            for cut in 0..bytes.len() {
                prop_assert!(PageRecord::decode(&bytes[..cut]).is_err());
            }
            let mut bad = bytes.clone();
            let i = at % bad.len();
            bad[i] ^= 1 << bit;
            // A flip gives an error or some other valid record, never a panic.
            if let Ok(other) = PageRecord::decode(&bad) {
                prop_assert_eq!(other.encode(), bad);
            }
        }
    }

    #[test]
    fn removed_round_trips_and_bad_headers_are_typed() {
        let bytes = PageRecord::Removed.encode();
        assert_eq!(PageRecord::decode(&bytes), Ok(PageRecord::Removed));
        assert!(matches!(
            PageRecord::decode(&[9, 1]),
            Err(CodecError::UnsupportedFormat { found: 9, .. })
        ));
        assert!(matches!(
            PageRecord::decode(&[1, 7]),
            Err(CodecError::Corrupt { .. })
        ));
        assert!(matches!(
            PageRecord::decode(&[1, 3, 0]),
            Err(CodecError::TrailingBytes { .. })
        ));
        assert!(matches!(
            PageRecord::decode(&[1, 1, 4, 0]),
            Err(CodecError::Corrupt { .. })
        ));
        assert_eq!(PageRecord::decode(&[1, 3]), Ok(PageRecord::Removed));
        assert!(PageRecord::is_delta(&[1, 2]) && PageRecord::is_delta(&[2, 2]));
        assert!(!PageRecord::is_delta(&[3, 2]) && !PageRecord::is_delta(&[2]));
    }

    #[test]
    fn stored_hashes_must_name_slots_that_can_be_internal() {
        let leaf = Terminal::Leaf {
            key_hash: [7; 32],
            value_hash: [8; 32],
        };
        let pos = |d, n| SlotPos::new(d, n).expect("valid");
        // Slot 3 holds a leaf at depth 1; slot 5 terminals at depth 2.
        let base = |hashes| {
            PageRecord::Base(PageImage {
                levels: 2,
                entries: vec![
                    (pos(1, 3), leaf),
                    (pos(2, 0x51), leaf),
                    (pos(2, 0x52), leaf),
                ],
                hashes,
            })
        };
        let good = base(vec![(5, [9; 32])]);
        assert_eq!(PageRecord::decode(&good.encode()), Ok(good));
        for bad in [vec![(3, [9; 32])], vec![(4, [9; 32])]] {
            assert!(matches!(
                PageRecord::decode(&base(bad).encode()),
                Err(CodecError::Corrupt { .. })
            ));
        }
        // A delta names only slots it changes.
        let delta = |hashes| {
            PageRecord::Delta(PageDelta {
                levels: 2,
                changes: vec![(pos(2, 0x51), None)],
                hashes,
            })
        };
        let good = delta(vec![(5, [9; 32])]);
        assert_eq!(PageRecord::decode(&good.encode()), Ok(good));
        assert!(matches!(
            PageRecord::decode(&delta(vec![(6, [9; 32])]).encode()),
            Err(CodecError::Corrupt { .. })
        ));
        // The hashes are part of the record: one missing is an error.
        let mut cut = base(vec![(5, [9; 32])]).encode();
        cut.truncate(cut.len() - 1);
        assert!(PageRecord::decode(&cut).is_err());
    }
}
