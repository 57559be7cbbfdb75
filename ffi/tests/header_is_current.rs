//! The committed `include/verity.h` is what cbindgen makes of `src/` now:
//! C clients build against the committed header, so it may never lag the
//! library. `VERITY_BLESS=1` rewrites it instead of failing.

use std::path::Path;

#[test]
fn committed_header_matches_a_fresh_generation() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml parses");
    let bindings = cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let fresh = String::from_utf8(fresh).expect("the header is UTF-8");

    let path = crate_dir.join("include/verity.h");
    if std::env::var_os("VERITY_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("write include/verity.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != fresh {
        let line = committed
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(fresh.lines().count()));
        panic!(
            "include/verity.h is stale (first difference at line {}); regenerate it with \
             `VERITY_BLESS=1 cargo test -p verity-ffi --test header_is_current` and commit it",
            line + 1
        );
    }
}
