//! `frame::get` on arbitrary bytes: never panics, and a frame that passes
//! its length and checksum checks re-encodes to exactly the bytes it took.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verity_codec::frame;

/// Payload limit handed to the decoder; larger length fields must be refused.
const MAX_LEN: u32 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if let Ok((payload, used)) = frame::get(data, MAX_LEN, 0) {
        assert!(payload.len() <= MAX_LEN as usize);
        assert_eq!(used, frame::HEADER_LEN + payload.len());
        let mut out = Vec::new();
        frame::put(&mut out, payload).expect("payload below the frame limit");
        assert_eq!(&out[..], &data[..used]);
    }
});
