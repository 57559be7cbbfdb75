//! The `verity` command line.
//!
//! `verity bench` runs the benchmark (`bench`, with the store interface in
//! `backend`, the RocksDB-layered baseline in `rocks`, the peers NOMT in
//! `nomt` and the Jellyfish Merkle Tree in `jmt`, the RocksDB tuning
//! `rocks` and `jmt` share in `rocks_tuning`, and the results in
//! `report`); `inspect`, `check` and `get` look into a store (`tools`);
//! `torture` crashes, faults and damages one and checks every recovery
//! (`torture`).

#[path = "verity/backend.rs"]
mod backend;
#[path = "verity/bench.rs"]
mod bench;
#[cfg(feature = "jmt")]
#[path = "verity/jmt.rs"]
mod jmt;
#[cfg(feature = "nomt")]
#[path = "verity/nomt.rs"]
mod nomt;
#[path = "verity/report.rs"]
mod report;
#[cfg(feature = "rocksdb")]
#[path = "verity/rocks.rs"]
mod rocks;
#[cfg(feature = "rocksdb")]
#[path = "verity/rocks_tuning.rs"]
mod rocks_tuning;
#[path = "verity/tools.rs"]
mod tools;
#[path = "verity/torture.rs"]
mod torture;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// The benchmark allocates and frees many page-sized objects per block:
/// mimalloc, with freed blocks kept by size and the next one prefetched
/// (see [`verity::alloc`]; the library itself leaves the allocator to the
/// program that links it).
#[global_allocator]
static GLOBAL: verity::alloc::Allocator = verity::alloc::Allocator;

/// mimalloc's `mi_option_purge_delay`: its index in `mi_option_t`
/// (`mimalloc.h`, the same in mimalloc 2 and 3; `libmimalloc-sys` names no
/// constant for it).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Keeps the memory the program frees in mimalloc for reuse, instead of
/// returning it to the kernel after a delay (`-1`: never), unless
/// `MIMALLOC_PURGE_DELAY` says otherwise. The store's memtables and page
/// versions are freed and allocated again all the time; memory returned
/// and then taken back comes as new pages the kernel zeroes
/// (`clear_page_erms`: 6 to 12% of a `verity bench` run's samples, 3 to
/// 4.5% without purging). `load` ran 1.065x and `blocks` 1.04x faster
/// (medians of 6 pairs, no pair slower) for about 10% more resident
/// memory (BENCHMARKS.md). The live memory stays bounded by the caches
/// and memtables the options size.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    #[expect(unsafe_code, reason = "one call into the allocator's C API")]
    // SAFETY: `mi_option_set` stores an option's value; -1 is a valid
    // purge delay, the index is `mi_option_purge_delay`'s, and it runs
    // before the program starts any thread.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
    }
}

#[derive(Parser)]
#[command(
    name = "verity",
    version,
    about = "Verity: a versioned, authenticated state store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmark the store.
    Bench(Box<bench::BenchArgs>),
    /// Versions, roots, sizes and compaction state of a store.
    Inspect(tools::InspectArgs),
    /// Verify every checksum and recompute roots from the leaves; exits
    /// non-zero on damage.
    Check(tools::CheckArgs),
    /// Read a key (and prove it).
    Get(tools::GetArgs),
    /// Crash, fault and corruption torture: SIGKILLs, power cuts on a
    /// simulated disk, damaged files; every recovery checked.
    Torture(torture::TortureArgs),
}

fn main() -> Result<std::process::ExitCode> {
    keep_freed_memory();
    match Cli::parse().command {
        Command::Bench(args) => match bench::Config::from_args(&args) {
            // Bad arguments: one line and exit code 2, as clap does.
            Err(e) => {
                eprintln!("error: {e}");
                Ok(std::process::ExitCode::from(2))
            }
            Ok(config) => bench::bench(*args, config).map(|()| std::process::ExitCode::SUCCESS),
        },
        Command::Inspect(args) => tools::inspect(args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Check(args) => tools::check(args),
        Command::Get(args) => tools::get(args).map(|()| std::process::ExitCode::SUCCESS),
        Command::Torture(args) => torture::torture(args).map(|()| std::process::ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[expect(unsafe_code, reason = "reads an option through the allocator's C API")]
    fn freed_memory_stays_with_the_allocator() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            eprintln!("MIMALLOC_PURGE_DELAY is set: the program keeps it; nothing to check");
            return;
        }
        // SAFETY: `mi_option_get` reads an option's value; any index is
        // valid to read.
        let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        // The index is the purge delay's: its default is 10 ms in
        // mimalloc 2 and 1000 ms in mimalloc 3. Another value means the
        // enum moved and the constant names another option.
        assert!(
            default == 10 || default == 1000,
            "option {MI_OPTION_PURGE_DELAY} is {default}: not mimalloc's purge delay"
        );
        keep_freed_memory();
        // SAFETY: as above.
        let now = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(now, -1, "the purge delay is not set");
    }
}
