//! `ProofImage::decode` on arbitrary bytes: never panics, and a decoded
//! proof re-encodes to exactly the input (the format is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use verity_codec::proof::ProofImage;

fuzz_target!(|data: &[u8]| {
    if let Ok(proof) = ProofImage::decode(data) {
        assert_eq!(proof.encoded_len(), data.len());
        assert_eq!(proof.encode(), data);
    }
});
