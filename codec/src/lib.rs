//! Every byte format of Verity, and nothing else: no I/O, no hashing rules.
//!
//! - [`varint`] and [`reader`]: LEB128 varints, little-endian fixed-width
//!   integers, length-prefixed bytes, and a bounds-checked [`Reader`].
//! - [`frame`]: CRC-32C checksummed frames for records and blocks.
//! - [`block`]: optionally zstd-compressed blocks.
//! - [`page`]: trie pages, page deltas and the page record stored per
//!   `(page path, version)`.
//! - [`proof`]: Merkle proofs of every kind.
//! - [`shared`]: [`SharedBytes`], encoded records that share one
//!   allocation with others encoded with them.
//!
//! Every decoder takes untrusted bytes and returns a [`CodecError`] instead
//! of panicking; no length field can make it allocate more than its input
//! holds. `docs/format.md` at the repository root describes every byte.
//!
//! ```
//! use verity_codec::page::{PageImage, PageRecord, SlotPos, Terminal};
//!
//! let page = PageImage {
//!     levels: 2,
//!     entries: vec![(
//!         SlotPos::new(1, 0x3).unwrap(),
//!         Terminal::Leaf { key_hash: [0x31; 32], value_hash: [7; 32] },
//!     )],
//!     hashes: Vec::new(), // no slot of this page is an internal node
//! };
//! let bytes = PageRecord::Base(page.clone()).encode();
//! assert_eq!(PageRecord::decode(&bytes)?, PageRecord::Base(page));
//! assert!(PageRecord::decode(&bytes[..bytes.len() - 1]).is_err());
//! # Ok::<(), verity_codec::CodecError>(())
//! ```

pub mod block;
pub mod error;
pub mod frame;
pub mod page;
pub mod proof;
pub mod reader;
pub mod shared;
pub mod varint;

pub use error::{CodecError, Result};
pub use reader::Reader;
pub use shared::SharedBytes;
