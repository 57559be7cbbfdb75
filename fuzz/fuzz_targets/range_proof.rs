//! `RangeProofImage::decode` on arbitrary bytes: never panics, and a decoded
//! range proof re-encodes to exactly the input (the format is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use verity_codec::proof::RangeProofImage;

fuzz_target!(|data: &[u8]| {
    if let Ok(range) = RangeProofImage::decode(data) {
        assert_eq!(range.encode(), data);
    }
});
