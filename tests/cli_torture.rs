//! `verity torture` in brief: each mode runs a few rounds to the end with
//! no failure and prints its seed; bad arguments are refused. The long
//! runs are in `RELIABILITY.md`.

mod common;

use common::{scale, seed, text, verity};

fn run_ok(args: &[&str]) -> String {
    let out = verity(args);
    let t = text(&out);
    assert!(out.status.success(), "verity {args:?} failed:\n{t}");
    assert!(t.contains("0 failures"), "verity {args:?}:\n{t}");
    t
}

#[test]
fn sim_runs_crash_points_and_checks_each() {
    let seed = seed("sim_runs_crash_points_and_checks_each").to_string();
    let points = (40 * scale()).to_string();
    let t = run_ok(&["torture", "sim", "--points", &points, "--seed", &seed]);
    assert!(t.contains(&format!("seed {seed}")), "{t}");
    assert!(t.contains(&format!("{points} crash points")), "{t}");
}

#[test]
fn kill_sigkills_the_child_and_checks_each_recovery() {
    let seed = seed("kill_sigkills_the_child_and_checks_each_recovery").to_string();
    let rounds = (3 * scale()).to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("t");
    let store = store.to_str().expect("a UTF-8 path");
    let t = run_ok(&[
        "torture",
        "kill",
        "--iterations",
        &rounds,
        "--max-run-ms",
        "400",
        "--seed",
        &seed,
        "--dir",
        store,
    ]);
    assert!(t.contains(&format!("{rounds} SIGKILLs")), "{t}");
    // The directory is in use now: a second run is refused.
    let out = verity(&["torture", "kill", "--iterations", "1", "--dir", store]);
    assert!(!out.status.success());
    assert!(text(&out).contains("not empty"), "{}", text(&out));
}

#[test]
fn corrupt_damages_every_file_kind_and_nothing_reads_wrong() {
    let seed = seed("corrupt_damages_every_file_kind_and_nothing_reads_wrong").to_string();
    let trials = (8 * scale()).to_string();
    let t = run_ok(&["torture", "corrupt", "--trials", &trials, "--seed", &seed]);
    for kind in ["wal", "segment", "manifest"] {
        assert!(
            t.lines().any(|l| l.starts_with(kind)),
            "no {kind} row:\n{t}"
        );
    }
    assert!(t.contains(&format!("seed {seed}")), "{t}");
}

#[test]
fn bad_arguments_are_refused() {
    for args in [
        &["torture"][..],
        &["torture", "sim", "--points", "many"],
        &["torture", "kill", "--seed", "-1"],
    ] {
        let out = verity(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "verity {args:?}: {}",
            text(&out)
        );
    }
}
