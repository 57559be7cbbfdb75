//! `PageRecord::decode` on arbitrary bytes: never panics, and a decoded
//! record re-encodes to exactly the input (the format is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use verity_codec::page::PageRecord;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = PageRecord::decode(data) {
        assert_eq!(record.encode(), data);
    }
});
