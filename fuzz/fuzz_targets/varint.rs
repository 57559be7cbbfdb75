//! `varint::get` on arbitrary bytes: never panics, and a decoded value
//! re-encodes to exactly the bytes it was read from (one encoding per value).
#![no_main]

use libfuzzer_sys::fuzz_target;
use verity_codec::varint;

fuzz_target!(|data: &[u8]| {
    if let Ok((value, used)) = varint::get(data, 0) {
        assert!((1..=varint::MAX_LEN).contains(&used) && used <= data.len());
        assert_eq!(used, varint::len(value));
        let mut out = Vec::new();
        varint::put(&mut out, value);
        assert_eq!(&out[..], &data[..used]);
    }
});
