//! Proofs of every kind, and their verification.
//!
//! The trie's hash is a binary Merkle tree over key-hash bits (each 16-ary
//! node is the binary tree over its slots), so every proof is the part of
//! that binary tree the verifier needs, in preorder: opened branches,
//! leaves, empty subtrees, and the hashes of subtrees left closed.
//!
//! - one key or many keys ([`prove`]): the union of the keys' paths; each
//!   sibling appears once however many keys share it. A key is proven
//!   present by its leaf, absent by an empty subtree or another key's leaf
//!   on its path.
//! - a range ([`prove_range`]): every subtree that meets the range is
//!   opened to its leaves, so the verifier learns the whole set of keys in
//!   the range and can check it against the claimed entries.
//!
//! Verification ([`verify`], [`verify_range`]) needs only the root and
//! rejects any proof that does not hash to it or that breaks a shape rule.

use verity_codec::proof::{ProofImage, ProofNode, RangeProofImage};

use crate::error::{MerkleError, ProofError};
use crate::hash::{bit, internal_hash, leaf_hash, Hash, KeyHash, ValueHash, EMPTY};
use crate::page::{Inner, Node, Page};
use crate::path::PagePath;
use crate::read::{leaves, load};
use crate::source::PageSource;

/// A proof for a set of keys (one or many): their presence with values,
/// or their absence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    image: ProofImage,
}

/// A proof that a list of entries is every key of the trie between two
/// key hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeProof {
    /// Lowest key hash covered (inclusive).
    pub from: KeyHash,
    /// Highest key hash covered (inclusive).
    pub to: KeyHash,
    image: ProofImage,
}

impl Proof {
    /// The wire form (see `docs/format.md`).
    pub fn encode(&self) -> Vec<u8> {
        self.image.encode()
    }

    /// Decodes a proof from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Proof, ProofError> {
        Ok(Proof {
            image: ProofImage::decode(bytes)?,
        })
    }

    /// Bytes of the wire form.
    pub fn encoded_len(&self) -> usize {
        self.image.encoded_len()
    }

    /// The proof tree.
    pub fn image(&self) -> &ProofImage {
        &self.image
    }
}

impl From<ProofImage> for Proof {
    /// A proof from a tree built elsewhere (another store of the same
    /// trie). Nothing is checked here: [`verify`] checks every rule.
    fn from(image: ProofImage) -> Proof {
        Proof { image }
    }
}

impl RangeProof {
    /// The wire form (see `docs/format.md`).
    pub fn encode(&self) -> Vec<u8> {
        RangeProofImage {
            from: self.from,
            to: self.to,
            proof: self.image.clone(),
        }
        .encode()
    }

    /// Decodes a range proof from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<RangeProof, ProofError> {
        let image = RangeProofImage::decode(bytes)?;
        Ok(RangeProof {
            from: image.from,
            to: image.to,
            image: image.proof,
        })
    }

    /// Bytes of the wire form (format byte, both bounds, proof tree).
    pub fn encoded_len(&self) -> usize {
        65 + self.image.encoded_len()
    }
}

/// What a proof must open.
#[derive(Clone, Copy)]
enum Target<'a> {
    Keys(&'a [KeyHash]),
    Range { from: &'a KeyHash, to: &'a KeyHash },
}

/// True when the subtree of key hashes starting with the first `bits` bits
/// of `prefix` meets `[from, to]`.
fn meets(prefix: &KeyHash, bits: usize, from: &KeyHash, to: &KeyHash) -> bool {
    let mut lo = *prefix;
    let mut hi = *prefix;
    for i in bits..256 {
        let mask = 0x80u8 >> (i % 8);
        lo[i / 8] &= !mask;
        hi[i / 8] |= mask;
    }
    lo <= *to && hi >= *from
}

fn with_bit(prefix: &KeyHash, i: usize) -> KeyHash {
    let mut p = *prefix;
    p[i / 8] |= 0x80 >> (i % 8);
    p
}

impl<'a> Target<'a> {
    fn wants(&self, prefix: &KeyHash, bits: usize) -> bool {
        match self {
            Target::Keys(keys) => !keys.is_empty(),
            Target::Range { from, to } => meets(prefix, bits, from, to),
        }
    }

    fn split(&self, bits: usize) -> (Target<'a>, Target<'a>) {
        match *self {
            Target::Keys(keys) => {
                let mid = keys.partition_point(|k| bit(k, bits) == 0);
                (Target::Keys(&keys[..mid]), Target::Keys(&keys[mid..]))
            }
            range => (range, range),
        }
    }
}

struct Prover<'s, S: ?Sized> {
    source: &'s S,
    version: u64,
    nodes: Vec<ProofNode>,
}

impl<S: PageSource + ?Sized> Prover<'_, S> {
    fn closed(&mut self, hash: Hash) {
        self.nodes.push(if hash == EMPTY {
            ProofNode::Empty
        } else {
            ProofNode::Hash(hash)
        });
    }

    /// Emits binary node `index` at `level` of `inner`, which sits at nibble
    /// `depth`; `prefix` holds the path bits above it.
    fn inner(
        &mut self,
        (page, inner): (&Page, &Inner),
        depth: usize,
        level: usize,
        index: usize,
        prefix: KeyHash,
        target: Target<'_>,
    ) -> Result<(), MerkleError> {
        let bits = 4 * depth + level;
        let hash = inner.subtree_hash(level, index);
        if hash == EMPTY || !target.wants(&prefix, bits) {
            self.closed(hash);
            return Ok(());
        }
        if level == 4 {
            return self.node(page, &inner.children[index], depth + 1, prefix, target);
        }
        self.nodes.push(ProofNode::Branch);
        let (left, right) = target.split(bits);
        self.inner((page, inner), depth, level + 1, 2 * index, prefix, left)?;
        self.inner(
            (page, inner),
            depth,
            level + 1,
            2 * index + 1,
            with_bit(&prefix, bits),
            right,
        )
    }

    fn node(
        &mut self,
        page: &Page,
        node: &Node,
        depth: usize,
        prefix: KeyHash,
        target: Target<'_>,
    ) -> Result<(), MerkleError> {
        match node {
            Node::Empty => self.nodes.push(ProofNode::Empty),
            Node::Leaf { id, .. } => {
                let l = page.leaf(*id);
                self.nodes.push(ProofNode::Leaf {
                    key_hash: l.key_hash,
                    value_hash: l.value_hash,
                })
            }
            Node::Inner { id, .. } => {
                let inner = page.hashed_node(*id);
                self.inner((page, &inner), depth, 0, 0, prefix, target)?
            }
            Node::Page(_) => {
                let child = load(
                    self.source,
                    &PagePath::from_key(&prefix, depth),
                    self.version,
                )?;
                self.inner((&child, child.root()), depth, 0, 0, prefix, target)?;
            }
        }
        Ok(())
    }

    fn run(source: &S, version: u64, target: Target<'_>) -> Result<ProofImage, MerkleError> {
        let root = load(source, &PagePath::ROOT, version)?;
        let mut prover = Prover {
            source,
            version,
            nodes: Vec::new(),
        };
        prover.inner((&root, root.root()), 0, 0, 0, [0; 32], target)?;
        Ok(ProofImage {
            nodes: prover.nodes,
        })
    }
}

/// A proof of presence or absence for each of `keys` (strictly sorted) as
/// of `version`.
pub fn prove<S: PageSource + ?Sized>(
    source: &S,
    version: u64,
    keys: &[KeyHash],
) -> Result<Proof, MerkleError> {
    if let Some(i) = keys.windows(2).position(|w| w[0] >= w[1]) {
        return Err(MerkleError::UnsortedKeys { index: i + 1 });
    }
    Ok(Proof {
        image: Prover::run(source, version, Target::Keys(keys))?,
    })
}

/// Up to `limit` (at least 1) entries with key hash `>= from` as of
/// `version`, and a proof that they are all the entries between `from` and
/// the proof's `to` (the last entry returned, or the largest key hash when
/// fewer than `limit` remain).
pub fn prove_range<S: PageSource + ?Sized>(
    source: &S,
    version: u64,
    from: &KeyHash,
    limit: usize,
) -> Result<(Vec<(KeyHash, ValueHash)>, RangeProof), MerkleError> {
    if limit == 0 {
        return Err(MerkleError::InvalidArgument(
            "a range proof needs a limit of at least one entry",
        ));
    }
    let entries = leaves(source, version, from, limit)?;
    let to = match entries.last() {
        Some((k, _)) if entries.len() == limit => *k,
        _ => [0xff; 32],
    };
    let image = Prover::run(source, version, Target::Range { from, to: &to })?;
    Ok((
        entries,
        RangeProof {
            from: *from,
            to,
            image,
        },
    ))
}

/// What the verifier checks along the way.
enum Check<'a> {
    Claims(&'a [(KeyHash, Option<ValueHash>)]),
    Range {
        from: &'a KeyHash,
        to: &'a KeyHash,
        found: Vec<(KeyHash, ValueHash)>,
    },
}

struct Verifier<'a> {
    nodes: &'a [ProofNode],
    pos: usize,
}

impl Verifier<'_> {
    fn walk(
        &mut self,
        bits: usize,
        prefix: KeyHash,
        check: &mut Check<'_>,
    ) -> Result<Hash, ProofError> {
        let node = *self
            .nodes
            .get(self.pos)
            .ok_or(ProofError::Malformed("proof ends early"))?;
        self.pos += 1;
        match node {
            ProofNode::Empty => {
                if let Check::Claims(claims) = check {
                    if let Some(c) = claims.iter().find(|c| c.1.is_some()) {
                        return Err(ProofError::WrongClaim { key: c.0 });
                    }
                }
                Ok(EMPTY)
            }
            ProofNode::Hash(h) => {
                if h == EMPTY {
                    return Err(ProofError::Malformed("an empty subtree written as a hash"));
                }
                match check {
                    Check::Claims([first, ..]) => {
                        return Err(ProofError::NotCovered { key: first.0 })
                    }
                    Check::Range { from, to, .. } if meets(&prefix, bits, from, to) => {
                        return Err(ProofError::IncompleteRange)
                    }
                    _ => {}
                }
                Ok(h)
            }
            ProofNode::Leaf {
                key_hash,
                value_hash,
            } => {
                if bits == 0 || !bits.is_multiple_of(4) {
                    return Err(ProofError::Malformed("a leaf off a nibble boundary"));
                }
                if (0..bits).any(|i| bit(&key_hash, i) != bit(&prefix, i)) {
                    return Err(ProofError::Malformed("a leaf off its key's path"));
                }
                match check {
                    Check::Claims(claims) => {
                        for (k, v) in claims.iter() {
                            let shown = (*k == key_hash).then_some(value_hash);
                            if *v != shown {
                                return Err(ProofError::WrongClaim { key: *k });
                            }
                        }
                    }
                    Check::Range { from, to, found } => {
                        if key_hash >= **from && key_hash <= **to {
                            found.push((key_hash, value_hash));
                        }
                    }
                }
                Ok(leaf_hash(&key_hash, &value_hash))
            }
            ProofNode::Branch => {
                if bits >= 256 {
                    return Err(ProofError::Malformed("a branch below the last key bit"));
                }
                let (left, right) = match check {
                    Check::Claims(claims) => {
                        let mid = claims.partition_point(|c| bit(&c.0, bits) == 0);
                        let l = self.walk(bits + 1, prefix, &mut Check::Claims(&claims[..mid]))?;
                        let r = self.walk(
                            bits + 1,
                            with_bit(&prefix, bits),
                            &mut Check::Claims(&claims[mid..]),
                        )?;
                        (l, r)
                    }
                    range => {
                        let l = self.walk(bits + 1, prefix, range)?;
                        let r = self.walk(bits + 1, with_bit(&prefix, bits), range)?;
                        (l, r)
                    }
                };
                if left == EMPTY && right == EMPTY {
                    return Err(ProofError::Malformed("a branch over two empty subtrees"));
                }
                Ok(internal_hash(&left, &right))
            }
        }
    }

    fn run(root: &Hash, image: &ProofImage, check: &mut Check<'_>) -> Result<(), ProofError> {
        let mut v = Verifier {
            nodes: &image.nodes,
            pos: 0,
        };
        let computed = v.walk(0, [0; 32], check)?;
        if v.pos != image.nodes.len() {
            return Err(ProofError::Malformed("nodes after the proof tree"));
        }
        if computed != *root {
            return Err(ProofError::RootMismatch { computed });
        }
        Ok(())
    }
}

/// Checks that `proof` shows, under `root`, every claim: `(key, Some(value))`
/// present with that value hash, `(key, None)` absent. Claims must be
/// strictly sorted by key hash.
pub fn verify(
    root: &Hash,
    proof: &Proof,
    claims: &[(KeyHash, Option<ValueHash>)],
) -> Result<(), ProofError> {
    if let Some(i) = claims.windows(2).position(|w| w[0].0 >= w[1].0) {
        return Err(ProofError::UnsortedClaims { index: i + 1 });
    }
    Verifier::run(root, &proof.image, &mut Check::Claims(claims))
}

/// Checks that `entries` are exactly the keys, with their value hashes, of
/// the trie under `root` with key hash in `[proof.from, proof.to]`.
pub fn verify_range(
    root: &Hash,
    proof: &RangeProof,
    entries: &[(KeyHash, ValueHash)],
) -> Result<(), ProofError> {
    if proof.from > proof.to {
        return Err(ProofError::Malformed("range bounds out of order"));
    }
    let mut check = Check::Range {
        from: &proof.from,
        to: &proof.to,
        found: Vec::new(),
    };
    Verifier::run(root, &proof.image, &mut check)?;
    let Check::Range { found, .. } = check else {
        return Err(ProofError::Malformed("range check lost its state"));
    };
    if found.len() != entries.len() || found != entries {
        let index = found
            .iter()
            .zip(entries)
            .position(|(a, b)| a != b)
            .unwrap_or(found.len().min(entries.len()));
        return Err(ProofError::RangeMismatch { index });
    }
    Ok(())
}
