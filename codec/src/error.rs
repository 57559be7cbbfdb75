//! The one error type of the codec.

/// Why bytes could not be decoded (or a value could not be encoded).
///
/// Every decoder in this crate takes untrusted bytes and returns one of these
/// instead of panicking. Offsets are relative to the start of the buffer that
/// was handed to the decoder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The bytes are not a valid encoding of `what`.
    #[error("corrupt {what} at offset {offset}: {detail}")]
    Corrupt {
        /// The kind of thing being decoded.
        what: &'static str,
        /// Byte offset of the first bad byte.
        offset: usize,
        /// What exactly is wrong.
        detail: &'static str,
    },
    /// The bytes end before `what` is complete.
    #[error("truncated {what} at offset {offset}: {needed} more bytes needed")]
    Truncated {
        /// The kind of thing being decoded.
        what: &'static str,
        /// Offset at which more bytes were expected.
        offset: usize,
        /// How many more bytes were needed at least.
        needed: usize,
    },
    /// A stored checksum does not match the bytes it covers.
    #[error("checksum mismatch in {what} at offset {offset}: expected {expected:#010x}, found {found:#010x}")]
    ChecksumMismatch {
        /// The kind of thing being decoded.
        what: &'static str,
        /// Offset of the checksummed region.
        offset: usize,
        /// The checksum stored in the bytes.
        expected: u32,
        /// The checksum computed over the bytes.
        found: u32,
    },
    /// The format byte names a format this build does not understand.
    #[error("unsupported {what} format {found} (this build reads up to {supported})")]
    UnsupportedFormat {
        /// The kind of thing being decoded.
        what: &'static str,
        /// The format byte found.
        found: u8,
        /// The newest format this build reads.
        supported: u8,
    },
    /// A length field exceeds the limit for `what`.
    #[error("{what} too large: {len} bytes, limit {max}")]
    TooLarge {
        /// The kind of thing being decoded or encoded.
        what: &'static str,
        /// The length found.
        len: u64,
        /// The limit that applies.
        max: u64,
    },
    /// The bytes decoded completely but more bytes follow.
    #[error("{extra} trailing bytes after {what}")]
    TrailingBytes {
        /// The kind of thing that was decoded.
        what: &'static str,
        /// How many bytes were left over.
        extra: usize,
    },
    /// zstd failed to compress or decompress a block.
    #[error("zstd {what}: {message}")]
    Compression {
        /// `compress` or `decompress`.
        what: &'static str,
        /// The message of the zstd library.
        message: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = CodecError> = std::result::Result<T, E>;
