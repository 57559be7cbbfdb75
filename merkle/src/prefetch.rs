//! Cache prefetch hints, this crate's one place of `unsafe` code.
//!
//! An update reads old pages that are mostly not in the CPU's caches and
//! writes their new versions into memory that is not either. A hint asks
//! for a line without waiting for it, so the misses of many pages (or of a
//! page and its copy's allocation) overlap, where the loads and stores of
//! the update waited on each in turn (each hint is measured in
//! BENCHMARKS.md: the old pages' structs and own arrays alone took a block
//! of 1M keys 1.07x faster). [`bytes`] is public for the allocator of
//! Verity's programs (`verity::alloc`), which prefetches the block an
//! allocation will get next.
#![expect(unsafe_code)]

/// Size of a cache line on the CPUs this runs on.
const LINE: usize = 64;

/// Asks the CPU to bring the cache lines holding the `len` bytes from `p`
/// into its caches. `p` need not be valid: a prefetch is a hint that never
/// faults and changes nothing.
#[inline]
pub fn bytes(p: *const u8, len: usize) {
    if len == 0 {
        return;
    }
    // Every line from the one holding the first byte to the one holding
    // the last.
    let skew = p as usize % LINE;
    let lines = (skew + len).div_ceil(LINE);
    let first = p.wrapping_sub(skew);
    for i in 0..lines {
        line(first.wrapping_add(i * LINE));
    }
}

/// [`bytes`] of the whole of `value`.
#[inline]
pub(crate) fn value<T>(value: &T) {
    bytes(std::ptr::from_ref(value).cast(), std::mem::size_of::<T>());
}

/// [`bytes`] of the elements of `slice`.
#[inline]
pub(crate) fn slice<T>(slice: &[T]) {
    bytes(slice.as_ptr().cast(), std::mem::size_of_val(slice));
}

/// Prefetches the line holding `p`.
#[inline]
fn line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 CPU has (it is
    // in the target's baseline). The instruction reads no memory a program
    // can see: it never faults, whatever the address, and writes nothing.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetching_changes_nothing_and_takes_any_address() {
        let data: Vec<u64> = (0..100).collect();
        slice(&data);
        value(&data[3]);
        bytes(std::ptr::null(), 4096);
        bytes(usize::MAX as *const u8, 200);
        bytes(data.as_ptr().cast(), 0);
        assert_eq!(data, (0..100).collect::<Vec<u64>>());
    }
}
