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

/// The benchmark allocates and frees many page-sized objects per block;
/// mimalloc keeps that off the critical path (the library itself leaves the
/// allocator to the program that links it).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
