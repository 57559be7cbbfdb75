//! C programs build against the committed header with
//! `-std=c99 -Wall -Wextra -Werror`, link the library cargo just built, and
//! pass: `tests/c/lifecycle.c` (the whole lifecycle and every bad input the
//! header refuses) and `tests/c/quickstart.c` (the README's C quick-start).
//!
//! `VERITY_C_SANITIZE=1` builds them with `-fsanitize=address,undefined`
//! (what `.ci/run` does); `CC` picks the compiler (default `gcc`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory of `libverity.so`: the profile directory above the test
/// binary (`target/<profile>/deps/c_programs-*`). `cargo test` builds the
/// crate's library only as Rust code, so the shared library is built here,
/// with the same cargo, target directory and profile, every time (a library
/// left from an earlier build would test old code).
fn library_dir() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("the test binary's path");
            let dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("the test binary sits in <target>/<profile>/deps");
            let target = dir
                .parent()
                .expect("the profile directory sits in the target directory");
            let mut cargo = Command::new(env!("CARGO"));
            cargo
                .args(["build", "-p", "verity-ffi", "--lib"])
                .arg("--target-dir")
                .arg(target)
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            match dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") => {}
                Some("release") => {
                    cargo.arg("--release");
                }
                Some(profile) => {
                    cargo.args(["--profile", profile]);
                }
                None => panic!("no profile directory above {}", exe.display()),
            }
            let status = cargo.status().expect("could not run cargo");
            assert!(status.success(), "cargo build -p verity-ffi failed");
            assert!(
                dir.join("libverity.so").exists(),
                "no libverity.so in {} after cargo build",
                dir.display()
            );
            dir.to_path_buf()
        })
        .clone()
}

/// Compiles `tests/c/<name>.c` and returns the program's path.
fn build(name: &str) -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = library_dir();
    let sanitize = std::env::var_os("VERITY_C_SANITIZE").is_some_and(|v| v == "1");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(if sanitize {
        format!("{name}-sanitized")
    } else {
        name.to_owned()
    });
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".to_owned());
    let mut cmd = Command::new(&cc);
    cmd.args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-g"])
        .arg("-I")
        .arg(crate_dir.join("include"))
        .arg(crate_dir.join("tests/c").join(format!("{name}.c")))
        .arg("-o")
        .arg(&out);
    if sanitize {
        cmd.args([
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer",
        ]);
    }
    cmd.arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-lverity");
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("could not run {cc}: {e}"));
    assert!(status.success(), "{cc} failed to build tests/c/{name}.c");
    out
}

/// Runs a built program with a fresh directory as its argument.
fn run(program: &Path, store: &Path) {
    let output = Command::new(program)
        .arg(store)
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", program.display()));
    print!("{}", String::from_utf8_lossy(&output.stdout));
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "{} failed: {}",
        program.display(),
        output.status
    );
}

#[test]
fn c_lifecycle_and_bad_inputs_pass() {
    let program = build("lifecycle");
    let dir = tempfile::tempdir().expect("a temporary directory");
    run(&program, dir.path());
}

#[test]
fn the_readme_c_quickstart_builds_and_runs() {
    let program = build("quickstart");
    let dir = tempfile::tempdir().expect("a temporary directory");
    run(&program, &dir.path().join("db"));
}
