//! `PageRecord::decode` on arbitrary bytes: never panics, a decoded record
//! of the current format re-encodes to exactly the input (the format is
//! canonical), and one of format 1 re-encodes to the current format, which
//! decodes to the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verity_codec::page::{PageRecord, PAGE_FORMAT};

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = PageRecord::decode(data) {
        let again = record.encode();
        if data[0] == PAGE_FORMAT {
            assert_eq!(again, data);
        } else {
            assert_eq!(PageRecord::decode(&again), Ok(record));
        }
    }
});
