//! `verity bench` runs end to end and reports every figure it promises,
//! and refuses what it does not offer with a clear message.

use std::process::Command;

fn verity(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_verity"))
        .args(args)
        .output()
        .expect("run verity")
}

/// A run of a few seconds at most.
const SMALL: &[&str] = &[
    "bench",
    "--keys",
    "5000",
    "--blocks",
    "3",
    "--block-size",
    "500",
    "--proofs",
    "50",
    "--seed",
    "3",
];

#[test]
fn a_small_bench_reports_load_blocks_and_proofs() {
    let out = verity(SMALL);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "seed 3",
        "keys/s",
        "updates/s merkleized",
        "compressions/update",
        "proofs/s",
        "reads/s",
        "backend verity",
        "backend memory",
        "final root",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    // The same seed gives the same final roots.
    let again = verity(SMALL);
    let roots = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.starts_with("final root"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(roots(&stdout).len(), 2, "{stdout}");
    assert_eq!(
        roots(&stdout),
        roots(&String::from_utf8_lossy(&again.stdout))
    );
}

#[test]
fn unknown_backends_and_workloads_are_refused() {
    let out = verity(&["bench", "--backend", "nosuch"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuch"));
    let out = verity(&["bench", "nosuch"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuch"));
}
