//! Helpers shared by Verity's tests (a dev-dependency only).
//!
//! Every randomised test takes its seed from [`seed`], which prints it, so
//! a failure is replayed with `VERITY_SEED=<n>`; long runs multiply their
//! work by [`scale`] (`VERITY_SCALE=<n>`, default 1).

use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use rand::Rng;

/// The seed of a randomised test: `VERITY_SEED` or a fresh one, printed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("VERITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    println!("{test}: VERITY_SEED={seed}");
    seed
}

/// A scale factor for long runs: `VERITY_SCALE` (default 1).
pub fn scale() -> u32 {
    std::env::var("VERITY_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// A proptest runner seeded by [`seed`], without failure files.
pub fn runner(test: &str, cases: u32) -> TestRunner {
    let s = seed(test);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&s.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}
