//! The README's C and Go quick-starts are, byte for byte, the programs the
//! tests build and run (`tests/c/quickstart.c`, built by `c_programs.rs`;
//! `go/examples/quickstart/main.go`, built by the Go package's tests), so
//! they compile as written.

use std::path::Path;

/// The fenced blocks of `lang` in a Markdown text.
fn blocks<'a>(markdown: &'a str, lang: &str) -> Vec<&'a str> {
    let fence = format!("```{lang}\n");
    let mut out = Vec::new();
    let mut rest = markdown;
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let Some(end) = body.find("```\n").or_else(|| body.find("```")) else {
            break;
        };
        out.push(&body[..end]);
        rest = &body[end..];
        rest = rest.get(3..).unwrap_or_default();
    }
    out
}

fn check(lang: &str, program: &str) {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(crate_dir.join("../README.md")).expect("README.md");
    let source = std::fs::read_to_string(crate_dir.join(program)).expect("the program");
    assert!(
        blocks(&readme, lang).contains(&source.as_str()),
        "README.md has no ```{lang} block equal to ffi/{program}; copy the file into it"
    );
}

#[test]
fn the_c_quickstart_is_the_tested_program() {
    check("c", "tests/c/quickstart.c");
}

#[test]
fn the_go_quickstart_is_the_tested_program() {
    check("go", "go/examples/quickstart/main.go");
}
