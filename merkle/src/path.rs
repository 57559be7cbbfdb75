//! Page paths: where a page sits in the trie.

use crate::hash::{nibble, KeyHash};

/// The nibble path from the trie root to a page's root node.
///
/// Nibbles are packed two per byte, most significant first; unused nibbles
/// are zero, so two paths are equal exactly when they name the same page.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PagePath {
    bytes: [u8; 32],
    len: u8,
}

impl PagePath {
    /// The root page.
    pub const ROOT: PagePath = PagePath {
        bytes: [0; 32],
        len: 0,
    };

    /// The first `len` nibbles (at most 64) of a key's path.
    pub fn from_key(key_hash: &KeyHash, len: usize) -> PagePath {
        let len = len.min(64);
        let mut bytes = [0u8; 32];
        let full = len / 2;
        bytes[..full].copy_from_slice(&key_hash[..full]);
        if len % 2 == 1 {
            bytes[full] = key_hash[full] & 0xf0;
        }
        PagePath {
            bytes,
            len: len as u8,
        }
    }

    /// Number of nibbles ([`is_root`](Self::is_root) says whether it is 0).
    #[expect(clippy::len_without_is_empty, reason = "is_root is the emptiness test")]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// True for the root page.
    pub fn is_root(&self) -> bool {
        self.len == 0
    }

    /// Nibble `i` (must be below `len`).
    pub fn nibble(&self, i: usize) -> u8 {
        nibble(&self.bytes, i)
    }

    /// The packed nibbles, zero-padded to 32 bytes.
    pub fn as_padded(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// True when the first `len` nibbles of `key_hash` are this path.
    pub fn is_prefix_of(&self, key_hash: &KeyHash) -> bool {
        *self == PagePath::from_key(key_hash, self.len())
    }

    /// The path extended by one nibble.
    pub fn child(&self, n: u8) -> PagePath {
        let mut out = *self;
        let i = self.len();
        if i < 64 {
            if i.is_multiple_of(2) {
                out.bytes[i / 2] = n << 4;
            } else {
                out.bytes[i / 2] |= n & 0xf;
            }
            out.len += 1;
        }
        out
    }

    /// `len` byte followed by the `ceil(len / 2)` packed bytes: the form used
    /// in store keys and in `docs/format.md`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.len().div_ceil(2));
        out.push(self.len);
        out.extend_from_slice(&self.bytes[..self.len().div_ceil(2)]);
        out
    }

    /// Decodes the form written by [`encode`](Self::encode), rejecting
    /// lengths over 64, short input and non-zero padding.
    pub fn decode(bytes: &[u8]) -> Option<PagePath> {
        let (&len, rest) = bytes.split_first()?;
        if len > 64 || rest.len() != usize::from(len).div_ceil(2) {
            return None;
        }
        let mut out = PagePath {
            bytes: [0; 32],
            len,
        };
        out.bytes[..rest.len()].copy_from_slice(rest);
        if len % 2 == 1 && out.bytes[rest.len() - 1] & 0x0f != 0 {
            return None;
        }
        Some(out)
    }
}

impl std::fmt::Debug for PagePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PagePath(")?;
        for i in 0..self.len() {
            write!(f, "{:x}", self.nibble(i))?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_from_keys_children_and_encoding() {
        let mut k = [0u8; 32];
        k[0] = 0xab;
        k[1] = 0xcd;
        let p = PagePath::from_key(&k, 3);
        assert_eq!(format!("{p:?}"), "PagePath(abc)");
        assert_eq!(PagePath::from_key(&k, 2).child(0xc), p);
        assert!(p.is_prefix_of(&k));
        assert_eq!(p.encode(), vec![3, 0xab, 0xc0]);
        assert_eq!(PagePath::decode(&p.encode()), Some(p));
        assert_eq!(PagePath::decode(&[3, 0xab, 0xc1]), None);
        assert_eq!(PagePath::decode(&[65]), None);
        assert_eq!(PagePath::decode(&[]), None);
        assert_eq!(PagePath::decode(&[0]), Some(PagePath::ROOT));
    }
}
