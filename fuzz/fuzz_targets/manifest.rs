//! `Manifest::decode` on arbitrary bytes: never panics; what decodes
//! encodes to a manifest that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verity_engine::manifest::Manifest;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::decode(data) {
        let bytes = m.encode().expect("a decoded manifest encodes");
        assert_eq!(Manifest::decode(&bytes).expect("decodes again"), m);
    }
});
