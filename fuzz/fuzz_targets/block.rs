//! `block::decode` on arbitrary bytes: never panics, never returns more than
//! the raw length limit, and the decoded bytes stored again without
//! compression decode back to themselves. A stored (uncompressed) block has
//! one encoding only, so it must re-encode to exactly the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verity_codec::block::{self, Compression};

/// Raw length limit handed to the decoder; larger headers must be refused.
const MAX_RAW_LEN: usize = 1 << 20;

/// The kind byte of a stored block.
const STORED: u8 = 0;

fuzz_target!(|data: &[u8]| {
    if let Ok(raw) = block::decode(data, MAX_RAW_LEN) {
        assert!(raw.len() <= MAX_RAW_LEN);
        let stored = block::encode(&raw, Compression::None).expect("stored encoding");
        let again = block::decode(&stored, MAX_RAW_LEN).expect("re-encoded block decodes");
        assert_eq!(again, raw);
        if data[0] == STORED {
            assert_eq!(stored, data);
        }
    }
});
