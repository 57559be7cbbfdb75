//! Helpers shared by the Db's integration tests (each test binary uses
//! some of them).

#![allow(unused_imports, dead_code)]

pub use verity_testkit::{runner, scale, seed};

use std::process::{Command, Output};

/// Runs the `verity` binary of this build.
pub fn verity(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_verity"))
        .args(args)
        .output()
        .expect("run verity")
}

/// Standard output and standard error, for assertions and messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
