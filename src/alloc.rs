//! The allocator Verity's programs use: mimalloc, with freed small blocks
//! kept in stacks by size, and the block each size's next allocation will
//! get asked of the CPU's cache ahead of time.
//!
//! A block of a trie update writes a new version of every page it
//! changes (about 10,000 pages at 1M keys), each into memory freed long
//! before and no longer in any cache: every line of a new page's copy
//! waited for its line from memory. mimalloc keeps its free blocks in
//! lists threaded through the blocks themselves, so which block comes
//! next is known only when the one before is taken, too late to fetch it.
//! [`Allocator`] keeps the freed blocks of up to [`MAX_SIZE`] bytes in
//! arrays of pointers instead (a stack per size class and thread, and one
//! shared by all threads), and each time it hands out a block it
//! prefetches the lines of the one the next allocation of that size will
//! get: by the time the program writes that block, its lines are in the
//! cache (1.2x faster blocks of 1M keys; BENCHMARKS.md, "Freed blocks
//! kept by size, the next one prefetched").
//!
//! The library does not install it: a program chooses it with
//! `#[global_allocator]`, as the `verity` binary, the examples and the
//! benches do.
//!
//! Memory it keeps: at most [`THREAD_BLOCKS`] blocks of each class on
//! each thread (about 2 MiB a thread if every class were full, far less
//! in practice), and at most [`SHARED_LIMIT`] bytes shared (blocks and
//! the pointers to them); what would go beyond that goes back to
//! mimalloc. A thread's blocks go to the shared stacks when it exits (a
//! thread-local's destructor; a thread whose first block kept here is
//! freed by a destructor that runs after those, such as a POSIX thread
//! key's, keeps it: such a thread leaks its stacks, at most
//! [`THREAD_BLOCKS`] blocks a class).
//!
//! The module is the library's one place of `unsafe` code: an
//! allocator's every method is.
#![expect(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use mimalloc::MiMalloc;

/// A cache line.
const LINE: usize = 64;

/// The largest block of the classes [`TINY_STEP`] apart.
const TINY: usize = 64;

/// Bytes between one size class and the next up to [`TINY`]: a word.
const TINY_STEP: usize = 8;

/// The largest block of the classes [`SMALL_STEP`] apart (from [`TINY`]
/// on); from there on they are a cache line apart. Every class of
/// mimalloc's up to [`MAX_SIZE`] is one of these, so a block rounded up
/// to its class here takes no more memory from mimalloc than it would
/// have alone.
const SMALL: usize = 256;

/// Bytes between one size class and the next from [`TINY`] to [`SMALL`].
const SMALL_STEP: usize = 16;

/// The largest block kept in the stacks; larger ones go straight to
/// mimalloc, as do blocks aligned to more than [`MAX_ALIGN`].
pub const MAX_SIZE: usize = 2048;

/// Classes [`TINY_STEP`] apart.
const TINY_CLASSES: usize = TINY / TINY_STEP;

/// Classes [`SMALL_STEP`] apart.
const SMALL_CLASSES: usize = (SMALL - TINY) / SMALL_STEP;

/// Size classes kept: `1..=8` bytes, `9..=16`, ..., `57..=64`, then
/// `65..=80`, ..., `241..=256`, then `257..=320`, ..., `1985..=2048`.
const CLASSES: usize = TINY_CLASSES + SMALL_CLASSES + (MAX_SIZE - SMALL) / LINE;

/// The largest alignment of a block kept in the stacks. A class whose
/// size is a multiple of it is allocated from mimalloc with it, the
/// others (sizes of an odd number of words) with a word's; a request
/// aligned to more than a word gets a class of the first kind.
pub const MAX_ALIGN: usize = 16;

/// Blocks a thread keeps of each class.
pub const THREAD_BLOCKS: usize = 64;

/// Blocks moved at a time between a thread's stack and the shared one.
const BATCH: usize = 32;

/// The most bytes the shared stacks keep, all classes together.
pub const SHARED_LIMIT: usize = 64 << 20;

/// The program's allocator: mimalloc behind stacks of freed blocks (see
/// the module's notes). One per program, as its `#[global_allocator]`:
/// the stacks are the process's, whatever value of the type is called.
///
/// ```
/// #[global_allocator]
/// static GLOBAL: verity::alloc::Allocator = verity::alloc::Allocator;
///
/// fn main() {
///     let page = vec![7u8; 1472];
///     assert!(page.iter().all(|&b| b == 7));
/// }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Allocator;

/// A thread's stacks, one per class, newest block last.
struct Local {
    len: [usize; CLASSES],
    blocks: [[*mut u8; THREAD_BLOCKS]; CLASSES],
    state: State,
}

/// Whether a thread's stacks are in use.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Empty, and nothing is set to empty them at the thread's exit.
    New,
    /// [`FLUSH`] empties them when the thread exits.
    Active,
    /// The thread is exiting and its stacks are emptied: its blocks go
    /// straight to mimalloc.
    Closed,
}

thread_local! {
    /// This thread's stacks. Constant-initialized and without a
    /// destructor: reachable at every point of a thread's life, in the
    /// other thread-locals' destructors too.
    static LOCAL: UnsafeCell<Local> = const {
        UnsafeCell::new(Local {
            len: [0; CLASSES],
            blocks: [[std::ptr::null_mut(); THREAD_BLOCKS]; CLASSES],
            state: State::New,
        })
    };

    /// Its destructor moves this thread's blocks to the shared stacks
    /// when the thread exits. Touched once a thread holds a block.
    static FLUSH: Flush = const { Flush };
}

/// See [`FLUSH`].
struct Flush;

impl Drop for Flush {
    fn drop(&mut self) {
        close();
    }
}

/// Moves this thread's blocks to the shared stacks (or to mimalloc), and
/// sends the blocks it frees from now on straight to mimalloc.
fn close() {
    let _ = LOCAL.try_with(|cell| {
        // SAFETY: only this thread reaches its `Local`, and no other
        // reference to it is live: every other one is taken and dropped
        // within one call of this module, and nothing called while it
        // lives calls the global allocator (the shared stacks and mimalloc
        // do not).
        let local = unsafe { &mut *cell.get() };
        local.state = State::Closed;
        for class in 0..CLASSES {
            let len = local.len[class];
            spill(local, class, len);
        }
    });
}

/// A stack of freed blocks of one class, shared by all threads: an array
/// of pointers in memory of mimalloc's.
struct Shared {
    blocks: *mut *mut u8,
    len: usize,
    cap: usize,
}

// SAFETY: a `Shared` is only reached under its mutex; the blocks it
// points to are free memory that no thread refers to.
unsafe impl Send for Shared {}

/// The shared stacks, one per class.
static SHARED: [Mutex<Shared>; CLASSES] = [const {
    Mutex::new(Shared {
        blocks: std::ptr::null_mut(),
        len: 0,
        cap: 0,
    })
}; CLASSES];

/// Bytes the shared stacks hold, all classes together: their blocks, and
/// the pointers to them (for the smallest class, as many bytes again).
static SHARED_BYTES: AtomicUsize = AtomicUsize::new(0);

/// How many blocks each shared stack holds, written under its lock: read
/// without it, so that a thread finds an empty shared stack without
/// taking its lock (as every allocation of a class nobody frees would).
static SHARED_LEN: [AtomicUsize; CLASSES] = [const { AtomicUsize::new(0) }; CLASSES];

/// What one block costs [`SHARED_LIMIT`] in the shared stack of `class`.
#[inline]
fn shared_cost(class: usize) -> usize {
    class_size(class) + std::mem::size_of::<*mut u8>()
}

/// The class of a block of `layout`, if one keeps it.
#[inline]
fn class_of(layout: &Layout) -> Option<usize> {
    let (size, align) = (layout.size(), layout.align());
    if align > MAX_ALIGN || size > MAX_SIZE {
        return None;
    }
    // A request aligned to 16 gets a class whose size is a multiple of 16
    // (allocated aligned to 16): its size rounded up to one is a class's
    // size up to 256, and every class above is a multiple of 64. (No
    // caller asks for zero bytes: the trait forbids it.)
    let size = if align > TINY_STEP {
        size.next_multiple_of(MAX_ALIGN)
    } else {
        size
    };
    Some(if size <= TINY {
        size.saturating_sub(1) / TINY_STEP
    } else if size <= SMALL {
        TINY_CLASSES + (size - TINY - 1) / SMALL_STEP
    } else {
        TINY_CLASSES + SMALL_CLASSES + (size - SMALL - 1) / LINE
    })
}

/// The size of a block of `class`.
#[inline]
fn class_size(class: usize) -> usize {
    if class < TINY_CLASSES {
        (class + 1) * TINY_STEP
    } else if class < TINY_CLASSES + SMALL_CLASSES {
        TINY + (class + 1 - TINY_CLASSES) * SMALL_STEP
    } else {
        SMALL + (class + 1 - TINY_CLASSES - SMALL_CLASSES) * LINE
    }
}

/// The layout every block of `class` is allocated from mimalloc with.
#[inline]
fn class_layout(class: usize) -> Layout {
    let size = class_size(class);
    let align = if size.is_multiple_of(MAX_ALIGN) {
        MAX_ALIGN
    } else {
        TINY_STEP
    };
    match Layout::from_size_align(size, align) {
        Ok(layout) => layout,
        // A multiple of 8 up to 2 KiB, aligned to 8 or 16 (then a
        // multiple of it): always valid.
        Err(_) => unreachable!("a class layout is valid"),
    }
}

/// The shared stack of `class`, locked (a panic cannot happen while it is
/// held, but a poisoned lock would still hold a valid stack).
fn shared(class: usize) -> MutexGuard<'static, Shared> {
    SHARED[class].lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `f` on this thread's stacks, unless the thread is exiting; sets
/// their flush at the thread's exit when they first hold a block.
#[inline]
fn with_local<R>(f: impl FnOnce(&mut Local) -> R) -> Option<R> {
    let (result, first) = LOCAL
        .try_with(|cell| {
            // SAFETY: as in `close`: this thread's `Local`, and no
            // other reference to it is live while this one is.
            let local = unsafe { &mut *cell.get() };
            if local.state == State::Closed {
                return None;
            }
            let result = f(local);
            let first = local.state == State::New && local.len.iter().any(|&n| n > 0);
            if first {
                local.state = State::Active;
            }
            Some((result, first))
        })
        .ok()
        .flatten()?;
    // Its first touch sets its destructor, which may allocate: the
    // reference to `Local` is dropped by now, and the state is set, so such
    // an allocation takes the usual path. Past its destructor (a block
    // freed by another thread-local's), the thread keeps no block.
    if first && FLUSH.try_with(|_| ()).is_err() {
        close();
    }
    Some(result)
}

/// Moves up to a batch of blocks of `class` from the shared stack to
/// this thread's (which is empty).
fn refill(local: &mut Local, class: usize) {
    if SHARED_LEN[class].load(Ordering::Relaxed) == 0 {
        return;
    }
    let mut stack = shared(class);
    let n = stack.len.min(BATCH);
    if n == 0 {
        return;
    }
    let from = stack.len - n;
    // SAFETY: `blocks` holds `len` initialized pointers, and `from + n`
    // is `len`.
    let taken = unsafe { std::slice::from_raw_parts(stack.blocks.add(from), n) };
    local.blocks[class][..n].copy_from_slice(taken);
    stack.len = from;
    SHARED_LEN[class].store(from, Ordering::Relaxed);
    SHARED_BYTES.fetch_sub(n * shared_cost(class), Ordering::Relaxed);
    drop(stack);
    local.len[class] = n;
}

/// Moves the `n` oldest blocks of this thread's stack of `class` to the
/// shared stack, or to mimalloc what the shared one has no room for.
fn spill(local: &mut Local, class: usize, n: usize) {
    let cost = shared_cost(class);
    let mut kept = 0;
    if n > 0 {
        let mut stack = shared(class);
        // The bytes are reserved before the blocks move, so that spills of
        // several classes at once keep to the limit together.
        let reserved = SHARED_BYTES.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bytes| {
            let wanted = n.min(SHARED_LIMIT.saturating_sub(bytes) / cost);
            (wanted > 0).then_some(bytes + wanted * cost)
        });
        if let Ok(before) = reserved {
            let wanted = n.min(SHARED_LIMIT.saturating_sub(before) / cost);
            if grow(&mut stack, wanted) {
                // SAFETY: `grow` made room for `wanted` more pointers
                // after the `len` in use; a thread's stack and the shared
                // one do not overlap.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        local.blocks[class].as_ptr(),
                        stack.blocks.add(stack.len),
                        wanted,
                    );
                }
                stack.len += wanted;
                SHARED_LEN[class].store(stack.len, Ordering::Relaxed);
                kept = wanted;
            } else {
                SHARED_BYTES.fetch_sub(wanted * cost, Ordering::Relaxed);
            }
        }
    }
    for &block in &local.blocks[class][kept..n] {
        // SAFETY: every block in a stack was allocated from mimalloc with
        // its class's layout, and is free.
        unsafe { MiMalloc.dealloc(block, class_layout(class)) };
    }
    let len = local.len[class];
    local.blocks[class].copy_within(n..len, 0);
    local.len[class] = len - n;
}

/// Makes room in `stack` for `more` pointers; false if mimalloc has no
/// memory for it.
fn grow(stack: &mut Shared, more: usize) -> bool {
    let needed = stack.len + more;
    if needed <= stack.cap {
        return true;
    }
    let cap = needed.max(2 * stack.cap).max(256);
    let (Ok(old), Ok(new)) = (
        Layout::array::<*mut u8>(stack.cap),
        Layout::array::<*mut u8>(cap),
    ) else {
        return false;
    };
    let blocks = if stack.cap == 0 {
        // SAFETY: `new` has a non-zero size.
        unsafe { MiMalloc.alloc(new) }
    } else {
        // SAFETY: `blocks` was allocated from mimalloc with the layout
        // `old`, and the new size is not zero.
        unsafe { MiMalloc.realloc(stack.blocks.cast(), old, new.size()) }
    };
    if blocks.is_null() {
        return false;
    }
    stack.blocks = blocks.cast();
    stack.cap = cap;
    true
}

/// A freed block of `class` from the stacks, if they hold one; the next
/// one's lines are prefetched.
#[inline]
fn take(class: usize) -> Option<*mut u8> {
    with_local(|local| {
        if local.len[class] == 0 {
            refill(local, class);
        }
        let len = local.len[class].checked_sub(1)?;
        let block = local.blocks[class][len];
        local.len[class] = len;
        if len == 0 {
            refill(local, class);
        }
        if let Some(&next) = local.blocks[class][..local.len[class]].last() {
            verity_merkle::prefetch::bytes(next, class_size(class));
        }
        Some(block)
    })
    .flatten()
}

/// Keeps `block` of `class` in this thread's stack; false if the thread
/// is exiting.
#[inline]
fn give(class: usize, block: *mut u8) -> bool {
    with_local(|local| {
        if local.len[class] == THREAD_BLOCKS {
            spill(local, class, BATCH);
        }
        let len = local.len[class];
        local.blocks[class][len] = block;
        local.len[class] = len + 1;
    })
    .is_some()
}

impl Allocator {
    /// Bytes the shared stacks hold now, their blocks and the pointers to
    /// them (the threads' own stacks not counted).
    pub fn shared_bytes() -> usize {
        SHARED_BYTES.load(Ordering::Relaxed)
    }
}

// SAFETY: every block handed out is either mimalloc's for the caller's
// layout, or a block of the layout's class (at least its size, aligned to
// `MAX_ALIGN`, at least its alignment) that is free: it was freed to the
// stacks, which hold a block once and hand it out once.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(&layout) else {
            // SAFETY: the caller's layout, as the trait requires.
            return unsafe { MiMalloc.alloc(layout) };
        };
        match take(class) {
            Some(block) => block,
            // SAFETY: a class layout has a non-zero size.
            None => unsafe { MiMalloc.alloc(class_layout(class)) },
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(&layout) else {
            // SAFETY: the caller's layout, as the trait requires.
            return unsafe { MiMalloc.alloc_zeroed(layout) };
        };
        match take(class) {
            Some(block) => {
                // SAFETY: the block holds at least `layout.size()` bytes.
                unsafe { block.write_bytes(0, layout.size()) };
                block
            }
            // SAFETY: a class layout has a non-zero size.
            None => unsafe { MiMalloc.alloc_zeroed(class_layout(class)) },
        }
    }

    #[inline]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(class) = class_of(&layout) else {
            // SAFETY: allocated by `alloc` with this layout, which gave it
            // to mimalloc as it is.
            return unsafe { MiMalloc.dealloc(block, layout) };
        };
        if !give(class, block) {
            // SAFETY: a block of a class comes from mimalloc with the
            // class's layout.
            unsafe { MiMalloc.dealloc(block, class_layout(class)) };
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the trait's caller guarantees that `new_size`, rounded
        // up to the alignment, does not overflow `isize`.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class_of(&layout), class_of(&new)) {
            // SAFETY: mimalloc's block for `layout`, as the caller's.
            (None, None) => unsafe { MiMalloc.realloc(block, layout, new_size) },
            // A block of the class already holds `new_size` bytes.
            (Some(a), Some(b)) if a == b => block,
            _ => {
                // SAFETY: `new` is a valid layout of non-zero size (the
                // caller's guarantees).
                let moved = unsafe { self.alloc(new) };
                if !moved.is_null() {
                    // SAFETY: both blocks hold the smaller of the two
                    // sizes, and they are distinct (the old one is live).
                    unsafe {
                        std::ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                }
                moved
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A live block of the tests: where it is, its layout, and the byte
    /// it is filled with.
    struct Block {
        at: *mut u8,
        layout: Layout,
        fill: u8,
    }

    // SAFETY: the tests move blocks between threads to free them there;
    // a block is only reached by the thread that holds its `Block`.
    unsafe impl Send for Block {}

    fn alloc(layout: Layout, fill: u8) -> Block {
        // SAFETY: the tests' layouts have non-zero sizes.
        let at = unsafe { Allocator.alloc(layout) };
        assert!(!at.is_null(), "allocation of {layout:?} failed");
        assert_eq!(at as usize % layout.align(), 0, "misaligned {layout:?}");
        // SAFETY: the block holds `layout.size()` bytes.
        unsafe { at.write_bytes(fill, layout.size()) };
        Block { at, layout, fill }
    }

    fn check_and_free(block: Block) {
        // SAFETY: the block is live and holds `layout.size()` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(block.at, block.layout.size()) };
        assert!(
            bytes.iter().all(|&b| b == block.fill),
            "a block of {:?} was written by someone else",
            block.layout
        );
        // SAFETY: allocated by `Allocator` with this layout.
        unsafe { Allocator.dealloc(block.at, block.layout) };
    }

    fn random_layout(rng: &mut ChaCha8Rng) -> Layout {
        let size = match rng.gen_range(0..10) {
            0 => rng.gen_range(MAX_SIZE + 1..4 * MAX_SIZE),
            _ => rng.gen_range(1..=MAX_SIZE),
        };
        let align = [1, 8, 16, 32, 64][rng.gen_range(0..5)];
        Layout::from_size_align(size, align).expect("a valid layout")
    }

    #[test]
    fn live_blocks_are_never_handed_out_twice_on_any_thread() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let seed = verity_testkit::seed("live_blocks_are_never_handed_out_twice_on_any_thread");
        let (to_free, freed) = std::sync::mpsc::channel::<Block>();
        // Frees on another thread whatever this one sends it, as a store
        // drops what the update threads allocated.
        let freer = std::thread::spawn(move || {
            for block in freed {
                check_and_free(block);
            }
        });
        let workers: Vec<_> = (0..4u64)
            .map(|t| {
                let to_free = to_free.clone();
                std::thread::spawn(move || {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ t);
                    let mut live: Vec<Block> = Vec::new();
                    for i in 0..40_000u32 {
                        match rng.gen_range(0..4) {
                            0 | 1 => live.push(alloc(random_layout(&mut rng), i as u8)),
                            2 if !live.is_empty() => {
                                let block = live.swap_remove(rng.gen_range(0..live.len()));
                                check_and_free(block);
                            }
                            _ if !live.is_empty() => {
                                let block = live.swap_remove(rng.gen_range(0..live.len()));
                                to_free.send(block).expect("the freeing thread runs");
                            }
                            _ => {}
                        }
                    }
                    for block in live {
                        check_and_free(block);
                    }
                })
            })
            .collect();
        drop(to_free);
        for worker in workers {
            worker.join().expect("a worker thread");
        }
        freer.join().expect("the freeing thread");
    }

    #[test]
    fn resized_blocks_keep_their_bytes_and_zeroed_ones_are_zero() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let seed = verity_testkit::seed("resized_blocks_keep_their_bytes_and_zeroed_ones_are_zero");
        // On a thread of its own, joined while the lock is held: its
        // blocks reach the shared stacks before the next test counts them.
        on_a_thread(move || {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            for _ in 0..20_000 {
                let old = random_layout(&mut rng);
                let mut block = alloc(old, 0xa5);
                let new_size = random_layout(&mut rng).size();
                // SAFETY: allocated with `old`; the new size is not zero.
                let at = unsafe { Allocator.realloc(block.at, old, new_size) };
                assert!(!at.is_null());
                assert_eq!(at as usize % old.align(), 0, "misaligned after a resize");
                // SAFETY: the block holds at least the smaller size.
                let kept = unsafe { std::slice::from_raw_parts(at, old.size().min(new_size)) };
                assert!(kept.iter().all(|&b| b == 0xa5), "a resize lost bytes");
                block.at = at;
                block.layout = Layout::from_size_align(new_size, old.align()).expect("valid");
                // SAFETY: the block holds `new_size` bytes.
                unsafe { at.write_bytes(0xa5, new_size) };
                check_and_free(block);

                // From the stacks, dirty, whenever they hold a block of its
                // class: zeroed all the same.
                let layout = random_layout(&mut rng);
                // SAFETY: a non-zero size.
                let at = unsafe { Allocator.alloc_zeroed(layout) };
                assert!(!at.is_null());
                // SAFETY: the block holds `layout.size()` bytes.
                let bytes = unsafe { std::slice::from_raw_parts(at, layout.size()) };
                assert!(bytes.iter().all(|&b| b == 0), "a zeroed block is not");
                // SAFETY: allocated with `layout`.
                unsafe { Allocator.dealloc(at, layout) };
            }
        });
    }

    #[test]
    fn an_exiting_thread_leaves_its_blocks_to_the_others() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let layout = Layout::from_size_align(MAX_SIZE, 8).expect("valid");
        let class = CLASSES - 1;
        let freed: Vec<usize> = on_a_thread(move || {
            let live: Vec<Block> = (0..10).map(|_| alloc(layout, 7)).collect();
            let at = live.iter().map(|b| b.at as usize).collect();
            for block in live {
                check_and_free(block);
            }
            // This thread's stack holds them until it exits.
            at
        });
        let shared = shared_blocks(class);
        for at in &freed {
            assert!(
                shared.contains(at),
                "a block of the exited thread was not shared"
            );
        }
        // The next thread that asks gets them back, each whole and free.
        let mut got = on_a_thread(move || {
            let again: Vec<Block> = (0..10).map(|_| alloc(layout, 9)).collect();
            let got: Vec<usize> = again.iter().map(|b| b.at as usize).collect();
            for block in again {
                check_and_free(block);
            }
            got
        });
        let mut freed = freed;
        got.sort_unstable();
        freed.sort_unstable();
        assert_eq!(got, freed, "the shared blocks were not handed out again");
    }

    #[test]
    fn the_shared_stacks_keep_no_more_than_their_limit() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let layout = Layout::from_size_align(MAX_SIZE, 8).expect("valid");
        let blocks = 3 * SHARED_LIMIT / MAX_SIZE / 2;
        std::thread::spawn(move || {
            let live: Vec<Block> = (0..blocks).map(|_| alloc(layout, 5)).collect();
            for block in live {
                check_and_free(block);
            }
        })
        .join()
        .expect("the thread");
        let shared = Allocator::shared_bytes();
        assert!(
            shared <= SHARED_LIMIT,
            "{shared} bytes shared, over the limit"
        );
        assert!(
            shared >= SHARED_LIMIT - shared_cost(CLASSES - 1),
            "{shared} bytes shared: the freed blocks were not kept up to the limit"
        );
        let counted: usize = (0..CLASSES)
            .map(|c| shared_blocks(c).len() * shared_cost(c))
            .sum();
        assert_eq!(counted, shared, "the shared bytes are miscounted");
    }

    #[test]
    fn every_size_has_the_smallest_class_that_holds_it() {
        assert_eq!(class_size(CLASSES - 1), MAX_SIZE);
        for align in [1, 2, 4, 8, 16] {
            let mut last = 0;
            for size in 1..=MAX_SIZE {
                let layout = Layout::from_size_align(size, align).expect("valid");
                let class = class_of(&layout).expect("a kept size");
                let block = class_layout(class);
                assert!(block.size() >= size, "size {size} in a smaller class");
                assert!(
                    block.align() >= align,
                    "size {size} in a class less aligned"
                );
                let smaller = (0..class).filter(|&c| class_layout(c).align() >= align);
                assert!(
                    smaller.into_iter().all(|c| class_size(c) < size),
                    "size {size}, aligned to {align}, not in the smallest class that holds it"
                );
                assert!(class >= last, "classes out of order at size {size}");
                last = class;
            }
        }
        let over = Layout::from_size_align(MAX_SIZE + 1, 1).expect("valid");
        let aligned = Layout::from_size_align(1024, 32).expect("valid");
        assert_eq!((class_of(&over), class_of(&aligned)), (None, None));
    }

    /// Runs `f` on a new thread and waits until it has exited (its
    /// thread-locals' destructors run before `join` returns).
    fn on_a_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(f).join().expect("the test's thread")
    }

    /// The tests that count what the shared stacks hold run one at a time,
    /// each allocating on threads it waits for.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    fn shared_blocks(class: usize) -> Vec<usize> {
        let stack = shared(class);
        (0..stack.len)
            // SAFETY: `blocks` holds `len` initialized pointers.
            .map(|i| unsafe { *stack.blocks.add(i) } as usize)
            .collect()
    }
}
