//! Merkle proofs on the wire.
//!
//! Every proof kind (one key, many keys, a key range) is the same shape: the
//! part of the trie's binary hashing tree that the verifier needs, written in
//! preorder. Subtrees the verifier does not need are replaced by their hash.
//!
//! ```text
//! proof       := format u8 (=1) | count varint | count * node      (preorder)
//! node        := 0 (empty subtree)
//!              | 1 | hash[32]                 (opaque subtree, not empty)
//!              | 2 | key_hash[32] | value_hash[32]   (a leaf)
//!              | 3                            (a branch: its two children follow)
//! range proof := format u8 (=1) | from[32] | to[32] | proof
//! ```
//!
//! The decoder checks that the nodes form exactly one tree no deeper than
//! 256 levels (a key hash has 256 bits) and that no byte is left over.

use crate::error::{CodecError, Result};
use crate::page::Hash32;
use crate::reader::Reader;
use crate::varint;

/// The proof format this build writes and reads.
pub const PROOF_FORMAT: u8 = 1;

/// The deepest a proof tree can go: one level per bit of a key hash.
pub const MAX_PROOF_DEPTH: usize = 256;

const TAG_EMPTY: u8 = 0;
const TAG_HASH: u8 = 1;
const TAG_LEAF: u8 = 2;
const TAG_BRANCH: u8 = 3;

/// One node of a proof tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofNode {
    /// An empty subtree.
    Empty,
    /// A subtree given only by its hash.
    Hash(Hash32),
    /// A leaf.
    Leaf {
        /// The leaf's key hash.
        key_hash: Hash32,
        /// The leaf's value hash.
        value_hash: Hash32,
    },
    /// A branch; its left subtree, then its right subtree, follow.
    Branch,
}

/// A decoded proof: its nodes in preorder.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProofImage {
    /// The nodes in preorder.
    pub nodes: Vec<ProofNode>,
}

/// A range proof: the bounds it proves complete, and its proof tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeProofImage {
    /// Lowest key hash of the range (inclusive).
    pub from: Hash32,
    /// Highest key hash of the range (inclusive).
    pub to: Hash32,
    /// The proof tree.
    pub proof: ProofImage,
}

impl ProofImage {
    /// Bytes of the encoding.
    pub fn encoded_len(&self) -> usize {
        let body: usize = self
            .nodes
            .iter()
            .map(|n| match n {
                ProofNode::Empty | ProofNode::Branch => 1,
                ProofNode::Hash(_) => 33,
                ProofNode::Leaf { .. } => 65,
            })
            .sum();
        1 + varint::len(self.nodes.len() as u64) + body
    }

    /// Encodes the proof.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(PROOF_FORMAT);
        varint::put(out, self.nodes.len() as u64);
        for node in &self.nodes {
            match node {
                ProofNode::Empty => out.push(TAG_EMPTY),
                ProofNode::Hash(h) => {
                    out.push(TAG_HASH);
                    out.extend_from_slice(h);
                }
                ProofNode::Leaf {
                    key_hash,
                    value_hash,
                } => {
                    out.push(TAG_LEAF);
                    out.extend_from_slice(key_hash);
                    out.extend_from_slice(value_hash);
                }
                ProofNode::Branch => out.push(TAG_BRANCH),
            }
        }
    }

    /// Decodes a proof from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<ProofImage> {
        let mut r = Reader::new(bytes, "proof");
        let proof = Self::read(&mut r)?;
        r.finish()?;
        Ok(proof)
    }

    fn read(r: &mut Reader<'_>) -> Result<ProofImage> {
        let format = r.u8()?;
        if format != PROOF_FORMAT {
            return Err(CodecError::UnsupportedFormat {
                what: "proof",
                found: format,
                supported: PROOF_FORMAT,
            });
        }
        let count = r.count(1, u64::MAX)?;
        let mut nodes = Vec::with_capacity(count);
        // pending[i] = children still to read of the i-th open branch.
        let mut pending: Vec<u8> = Vec::new();
        for i in 0..count {
            if i > 0 && pending.is_empty() {
                return Err(r.corrupt("nodes after the end of the proof tree"));
            }
            let at = r.position();
            let node = match r.u8()? {
                TAG_EMPTY => ProofNode::Empty,
                TAG_HASH => ProofNode::Hash(r.array()?),
                TAG_LEAF => ProofNode::Leaf {
                    key_hash: r.array()?,
                    value_hash: r.array()?,
                },
                TAG_BRANCH => ProofNode::Branch,
                _ => return Err(r.corrupt_at(at, "unknown proof node tag")),
            };
            if let Some(top) = pending.last_mut() {
                *top -= 1;
            }
            if node == ProofNode::Branch {
                if pending.len() >= MAX_PROOF_DEPTH {
                    return Err(r.corrupt_at(at, "proof deeper than 256 levels"));
                }
                pending.push(2);
            }
            while pending.last() == Some(&0) {
                pending.pop();
            }
            nodes.push(node);
        }
        if count == 0 || !pending.is_empty() {
            return Err(CodecError::Truncated {
                what: "proof",
                offset: r.offset(),
                needed: 1,
            });
        }
        Ok(ProofImage { nodes })
    }
}

impl RangeProofImage {
    /// Encodes the range proof.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(65 + self.proof.encoded_len());
        out.push(PROOF_FORMAT);
        out.extend_from_slice(&self.from);
        out.extend_from_slice(&self.to);
        self.proof.encode_into(&mut out);
        out
    }

    /// Decodes a range proof from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<RangeProofImage> {
        let mut r = Reader::new(bytes, "range proof");
        let format = r.u8()?;
        if format != PROOF_FORMAT {
            return Err(CodecError::UnsupportedFormat {
                what: "range proof",
                found: format,
                supported: PROOF_FORMAT,
            });
        }
        let from = r.array()?;
        let to = r.array()?;
        let proof = ProofImage::read(&mut r)?;
        r.finish()?;
        Ok(RangeProofImage { from, to, proof })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_tree(depth: u32) -> BoxedStrategy<Vec<ProofNode>> {
        let leafish = prop_oneof![
            Just(ProofNode::Empty),
            any::<[u8; 32]>().prop_map(ProofNode::Hash),
            (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(key_hash, value_hash)| {
                ProofNode::Leaf {
                    key_hash,
                    value_hash,
                }
            }),
        ]
        .prop_map(|n| vec![n]);
        if depth == 0 {
            return leafish.boxed();
        }
        prop_oneof![
            leafish,
            (arb_tree(depth - 1), arb_tree(depth - 1)).prop_map(|(l, r)| {
                let mut v = vec![ProofNode::Branch];
                v.extend(l);
                v.extend(r);
                v
            }),
        ]
        .boxed()
    }

    proptest! {
        #[test]
        fn round_trip(nodes in arb_tree(6), from: [u8; 32], to: [u8; 32]) {
            let proof = ProofImage { nodes };
            let bytes = proof.encode();
            prop_assert_eq!(bytes.len(), proof.encoded_len());
            prop_assert_eq!(ProofImage::decode(&bytes), Ok(proof.clone()));
            let range = RangeProofImage { from, to, proof };
            prop_assert_eq!(RangeProofImage::decode(&range.encode()), Ok(range));
        }

        #[test]
        fn damaged_proofs_never_panic(nodes in arb_tree(5), at: usize, bit in 0u8..8) {
            let bytes = ProofImage { nodes }.encode();
            for cut in 0..bytes.len() {
                prop_assert!(ProofImage::decode(&bytes[..cut]).is_err());
            }
            let mut bad = bytes.clone();
            let i = at % bad.len();
            bad[i] ^= 1 << bit;
            if let Ok(other) = ProofImage::decode(&bad) {
                prop_assert_eq!(other.encode(), bad);
            }
        }
    }

    #[test]
    fn malformed_trees_are_rejected() {
        // A branch with one child.
        assert!(ProofImage::decode(&[1, 2, 3, 0]).is_err());
        // Two roots.
        assert!(ProofImage::decode(&[1, 2, 0, 0]).is_err());
        // No node at all.
        assert!(ProofImage::decode(&[1, 0]).is_err());
        // A chain of 257 branches.
        let mut deep = vec![1];
        crate::varint::put(&mut deep, 257 * 2 + 1);
        for _ in 0..257 {
            deep.extend_from_slice(&[3, 0]);
        }
        deep.push(0);
        assert!(ProofImage::decode(&deep).is_err());
    }
}
