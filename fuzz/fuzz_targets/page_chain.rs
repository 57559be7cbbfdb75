//! `PageDelta::apply_chain` on a base page and deltas decoded from
//! arbitrary bytes: never panics, and gives exactly what applying the
//! deltas one after another with `PageDelta::apply` gives, the image or
//! the error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verity_codec::page::{PageDelta, PageRecord};

/// Deltas after the base, at most (the store's chains are up to 32).
const MAX_DELTAS: usize = 40;

fuzz_target!(|data: &[u8]| {
    // Records one after another, each behind its length (2 bytes, little
    // endian); the first must decode to a base, the others to deltas.
    let mut records = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 && records.len() <= MAX_DELTAS {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        let body = &rest[2..];
        let (record, after) = body.split_at(len.min(body.len()));
        records.push(record);
        rest = after;
    }
    let Some((first, more)) = records.split_first() else {
        return;
    };
    let Ok(PageRecord::Base(base)) = PageRecord::decode(first) else {
        return;
    };
    let deltas: Vec<PageDelta> = more
        .iter()
        .filter_map(|r| match PageRecord::decode(r) {
            Ok(PageRecord::Delta(d)) => Some(d),
            _ => None,
        })
        .collect();
    let one_by_one = deltas
        .iter()
        .try_fold(base.clone(), |image, delta| delta.apply(&image));
    assert_eq!(PageDelta::apply_chain(&base, &deltas), one_by_one);
});
