//! `verity bench` runs end to end on every backend of the build at a tiny
//! size, its roots agree across backends of one trie family, each peer
//! (NOMT, the Jellyfish Merkle Tree) repeats its own roots from the same
//! seed, it writes valid JSON and SVG, and it refuses bad arguments with
//! one line and exit code 2.

mod common;

use common::verity;

fn backends() -> &'static str {
    if cfg!(feature = "rocksdb") {
        "verity,rocksdb,memory"
    } else {
        "verity,memory"
    }
}

/// A run of a few seconds at most.
fn tiny(extra: &[&str]) -> Vec<String> {
    tiny_on(backends(), extra)
}

/// A run of a few seconds at most on `backends`.
fn tiny_on(backends: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "bench",
        "--backend",
        backends,
        "--keys",
        "3000",
        "--blocks",
        "8",
        "--block-size",
        "300",
        "--proofs",
        "100",
        "--read-secs",
        "0.05",
        "--cache-mb",
        "8",
        "--seed",
        "3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn run_ok(args: &[String]) -> String {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = verity(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn every_backend_runs_every_workload_and_the_roots_agree() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let json = tmp.path().join("out.json");
    let plots = tmp.path().join("plots");
    let stdout = run_ok(&tiny(&[
        "--json",
        json.to_str().expect("utf-8 path"),
        "--plot",
        plots.to_str().expect("utf-8 path"),
    ]));
    assert!(stdout.contains("seed 3"), "{stdout}");
    assert!(stdout.contains("roots agree on all"), "{stdout}");
    assert!(stdout.contains("proofs are byte-identical"), "{stdout}");
    for needle in [
        "keys/s",
        "updates/s, merkleized and durable",
        "commit latency p99",
        "bytes written per update",
        "reads/s during commit",
        "disk reads per get",
        "proofs/s, latest",
        "history back",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }

    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("read json"))
            .expect("valid JSON");
    assert_eq!(doc["seed"], 3);
    assert_eq!(doc["roots_agree"], true);
    let names: Vec<&str> = backends().split(',').collect();
    let results = doc["results"].as_array().expect("results");
    for name in &names {
        for workload in ["load", "blocks", "executor", "read", "prove", "history"] {
            let r = results
                .iter()
                .find(|r| r["backend"] == *name && r["workload"] == workload)
                .unwrap_or_else(|| panic!("no result for {name} {workload}"));
            let metrics = r["metrics"].as_object().expect("metrics");
            assert!(!metrics.is_empty());
            assert!(r["ratio_first_to_this"].is_object());
        }
    }
    let blocks = results
        .iter()
        .find(|r| r["backend"] == "verity" && r["workload"] == "blocks")
        .expect("verity blocks");
    assert!(
        blocks["metrics"]["updates_per_s"]["value"]
            .as_f64()
            .expect("a rate")
            > 0.0
    );
    let roots: Vec<&serde_json::Value> = doc["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| &b["final_root"])
        .collect();
    assert_eq!(roots.len(), names.len());
    assert!(roots.windows(2).all(|w| w[0] == w[1]), "{roots:?}");

    for chart in ["throughput.svg", "latency_cdf.svg", "disk_bytes.svg"] {
        let text = std::fs::read_to_string(plots.join(chart)).expect("read svg");
        let svg = roxmltree::Document::parse(&text).expect("well-formed SVG");
        assert_eq!(svg.root_element().tag_name().name(), "svg");
        // One line per backend (the disk chart has no line for `memory`).
        let lines = svg
            .descendants()
            .filter(|n| n.tag_name().name() == "polyline")
            .count();
        assert!(lines >= 2, "{chart} has {lines} lines");
    }

    // The same seed gives the same final root.
    let again = run_ok(&tiny(&["--backend", "verity"]));
    let root = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| l.starts_with("final root"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(root(&stdout)[0], root(&again)[0]);
}

/// Each peer runs every workload next to `verity`; what it cannot do is
/// `n/a`; its roots are its own, and `--check-roots` finds them equal in a
/// second run from the same seed and refuses a file with other roots.
#[cfg(any(feature = "nomt", feature = "jmt"))]
#[test]
fn each_peer_runs_every_workload_and_repeats_its_own_roots() {
    let mut peers = Vec::new();
    if cfg!(feature = "nomt") {
        // Latest version only: no historical figures.
        peers.push(("nomt", false));
    }
    if cfg!(feature = "jmt") {
        peers.push(("jmt", true));
    }
    for (peer, history) in peers {
        let tmp = tempfile::tempdir().expect("tempdir");
        let json = tmp.path().join("first.json");
        let json_arg = json.to_str().expect("utf-8 path");
        let on = format!("verity,{peer}");
        let stdout = run_ok(&tiny_on(&on, &["--json", json_arg]));
        assert!(
            stdout.contains(&format!("{peer}: the only backend of its trie family")),
            "{stdout}"
        );
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).expect("read json"))
                .expect("valid JSON");
        assert_eq!(doc["roots_agree"], true);
        let results = doc["results"].as_array().expect("results");
        let metric = |workload: &str, key: &str| -> serde_json::Value {
            let r = results
                .iter()
                .find(|r| r["backend"] == peer && r["workload"] == workload)
                .unwrap_or_else(|| panic!("no result for {peer} {workload}"));
            r["metrics"][key]["value"].clone()
        };
        for (workload, key) in [
            ("load", "keys_per_s"),
            ("blocks", "updates_per_s"),
            ("executor", "block_time_ms"),
            ("read", "reads_per_s"),
            ("prove", "proofs_per_s"),
            ("prove", "verifies_per_s"),
            ("prove", "proof_bytes"),
            ("history", "reads_per_s_age_0"),
        ] {
            let v = metric(workload, key).as_f64();
            assert!(v.is_some_and(|v| v > 0.0), "{peer} {workload} {key}: {v:?}");
        }
        // No peer reads a version before it is durable.
        assert!(metric("executor", "reads_per_s_during_commit").is_null());
        for (workload, key) in [
            ("read", "reads_per_s_retained"),
            ("prove", "proofs_per_s_historical"),
            ("history", "proofs_per_s_age_50"),
        ] {
            assert_eq!(
                metric(workload, key).is_null(),
                !history,
                "{peer} {workload} {key}"
            );
        }
        // The table shows what the peer cannot do as n/a.
        let line = stdout
            .lines()
            .find(|l| l.contains("reads/s during commit"))
            .expect("executor line");
        assert!(line.contains("n/a"), "{line}");

        // The same seed: the same roots, every version.
        let again = run_ok(&tiny_on(&on, &["--check-roots", json_arg]));
        assert!(
            again.contains("roots of every backend equal those of"),
            "{again}"
        );

        // Other roots in the file: refused.
        let mut doc = doc;
        for b in doc["backends"].as_array_mut().expect("backends") {
            if b["name"] == peer {
                b["roots_digest"] = serde_json::json!("00");
            }
        }
        let other = tmp.path().join("other.json");
        std::fs::write(&other, doc.to_string()).expect("write json");
        let args = tiny_on(&on, &["--check-roots", other.to_str().expect("utf-8 path")]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = verity(&args);
        assert!(!out.status.success());
        let all = common::text(&out);
        assert!(all.contains(&format!("ROOTS DIFFER: {peer}")), "{all}");
    }
}

#[test]
fn a_directory_that_holds_a_store_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_str().expect("utf-8 path");
    let mut args = tiny(&["--dir", dir, "--backend", "verity"]);
    args.extend(["load".to_string()]);
    run_ok(&args);
    assert!(tmp.path().join("verity").is_dir(), "--dir keeps the store");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = verity(&args);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
}

#[test]
fn bad_arguments_give_one_line_and_exit_code_2() {
    for args in [
        &["bench", "--backend", "nosuch"][..],
        &["bench", "nosuch"],
        &["bench", "--keys", "many"],
        &["bench", "--block-size", "0"],
        &["bench", "--threads", "0"],
        &["bench", "--zipf", "-1"],
        &["bench", "--retain", "0"],
        &["bench", "--block-cache-percent", "0"],
        &["bench", "--block-cache-percent", "100"],
        &["bench", "--preset", "huge"],
        &["inspect"],
        &["nosuch"],
    ] {
        let out = verity(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.starts_with("error:"), "{args:?}: {stderr}");
    }
    #[cfg(not(feature = "rocksdb"))]
    {
        let out = verity(&["bench", "--backend", "rocksdb"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("--features rocksdb"));
    }
    #[cfg(not(feature = "nomt"))]
    {
        let out = verity(&["bench", "--backend", "nomt"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("--features nomt"));
    }
    #[cfg(not(feature = "jmt"))]
    {
        let out = verity(&["bench", "--backend", "jmt"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("--features jmt"));
    }
}

#[test]
fn every_command_has_help() {
    for cmd in [
        &["--help"][..],
        &["bench", "--help"],
        &["inspect", "--help"],
        &["check", "--help"],
        &["get", "--help"],
    ] {
        let out = verity(cmd);
        assert!(out.status.success(), "{cmd:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{cmd:?}"
        );
    }
}
