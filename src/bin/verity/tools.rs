//! `verity inspect`, `verity check` and `verity get`: looking into a store
//! directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use verity::engine::check::check_dir;
use verity::engine::io::StdIo;
use verity::merkle::hash::{key_hash, value_hash};
use verity::{verify, Db, MemPageStore, Options, Snapshot, Trie};

/// `verity inspect DIR`.
#[derive(Parser)]
pub(crate) struct InspectArgs {
    /// The store directory.
    dir: PathBuf,
}

/// `verity check DIR`.
#[derive(Parser)]
pub(crate) struct CheckArgs {
    /// The store directory.
    dir: PathBuf,
    /// Most retained versions whose roots are recomputed from their
    /// leaves (the newest and the oldest first, then evenly spread).
    #[arg(long, default_value_t = 3)]
    versions: usize,
}

/// `verity get DIR KEY`.
#[derive(Parser)]
pub(crate) struct GetArgs {
    /// The store directory.
    dir: PathBuf,
    /// The key (UTF-8; with `--hex`, hexadecimal).
    key: String,
    /// Read this version (default: the newest).
    #[arg(long)]
    version: Option<u64>,
    /// Also prove the answer and verify the proof against the root.
    #[arg(long)]
    prove: bool,
    /// The key is given in hexadecimal.
    #[arg(long)]
    hex: bool,
}

fn open(dir: &Path) -> Result<Db> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    Db::open(dir, Options::laptop()).with_context(|| format!("opening {}", dir.display()))
}

/// Lower-case hexadecimal.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes from hexadecimal.
pub(crate) fn unhex(s: &str) -> Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        bail!("hexadecimal key of odd length");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).context("not hexadecimal"))
        .collect()
}

pub(crate) fn inspect(args: InspectArgs) -> Result<()> {
    let db = open(&args.dir)?;
    let s = db.stats();
    println!("store          {}", args.dir.display());
    println!("I/O backend    {}", s.engine.backend);
    println!(
        "versions       {}..={} ({} durable)",
        s.oldest_retained, s.latest_staged, s.latest_durable
    );
    if s.latest_staged > 0 {
        let latest = db.latest()?;
        println!("latest root    {}", hex(&latest.root()?));
        if s.oldest_retained > 0 && s.oldest_retained < s.latest_staged {
            println!(
                "oldest root    {}",
                hex(&db.snapshot(s.oldest_retained)?.root()?)
            );
        }
    }
    println!(
        "on disk        {} bytes in {} segment files, {} bytes of WAL",
        s.segment_bytes, s.engine.segments, s.wal_bytes
    );
    println!(
        "compaction     {} bytes of debt, {} frozen memtables",
        s.compaction_debt_bytes, s.engine.frozen
    );
    db.close()?;
    Ok(())
}

/// Recomputes the root of `snap`'s version from its leaves in a fresh
/// in-memory trie and checks every value against its hash in the trie.
fn recompute(snap: &Snapshot) -> Result<([u8; 32], usize)> {
    let mut leaves = Vec::new();
    let mut from = [0u8; 32];
    loop {
        let page = snap.iter_from(&from, 4096)?;
        let Some(last) = page.last() else { break };
        let next = last.key_hash;
        for e in &page {
            leaves.push((e.key_hash, Some(value_hash(&e.value))));
            if key_hash(&e.key) != e.key_hash {
                bail!("a stored key does not hash to its place in the trie");
            }
        }
        if page.len() < 4096 {
            break;
        }
        // The next key hash after the last one read.
        from = next;
        let mut i = 31;
        loop {
            from[i] = from[i].wrapping_add(1);
            if from[i] != 0 || i == 0 {
                break;
            }
            i -= 1;
        }
        if from == [0u8; 32] {
            break;
        }
    }
    // The trie holds value hashes: a value that does not match its hash
    // changes the recomputed root.
    let trie = Trie::new(MemPageStore::new());
    let out = trie.update(0, 1, &leaves)?;
    Ok((out.root, leaves.len()))
}

pub(crate) fn check(args: CheckArgs) -> Result<std::process::ExitCode> {
    if !args.dir.is_dir() {
        bail!("{} is not a directory", args.dir.display());
    }
    let damaged = check_store(&args.dir, args.versions, &mut std::io::stdout().lock())?;
    Ok(if damaged {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    })
}

/// What `verity check` does, reporting to `out`: every checksum, then the
/// roots of up to `versions` retained versions recomputed from their
/// leaves, and their pages rehashed (`Snapshot::check_pages`). `Ok(true)`
/// when it found damage; an error when the store does not open or read.
pub(crate) fn check_store(dir: &Path, versions: usize, out: &mut dyn Write) -> Result<bool> {
    let report = check_dir(&StdIo, dir)?;
    writeln!(
        out,
        "files: {} read, {} segment entries, {} WAL records",
        report.files, report.entries, report.wal_records
    )?;
    for name in &report.unnamed {
        writeln!(
            out,
            "note: {name} is named by no manifest (left by an unfinished flush or compaction)"
        )?;
    }
    if !report.is_ok() {
        for p in &report.problems {
            writeln!(out, "DAMAGED: {p}")?;
        }
        writeln!(out, "check failed: {} problems", report.problems.len())?;
        return Ok(true);
    }
    let io = Arc::new(StdIo);
    let db = Db::open_with_io(io, dir, Options::laptop())?;
    let s = db.stats();
    let (oldest, latest) = (s.oldest_retained.max(1), s.latest_staged);
    let mut chosen = Vec::new();
    if latest >= oldest && versions > 0 {
        chosen.push(latest);
        chosen.push(oldest);
        let n = versions.saturating_sub(2) as u64;
        for i in 1..=n {
            chosen.push(oldest + (latest - oldest) * i / (n + 1));
        }
        chosen.sort_unstable();
        chosen.dedup();
        chosen.truncate(versions);
    }
    let mut bad = 0;
    for v in chosen {
        let snap = db.snapshot(v)?;
        let stored = snap.root()?;
        match recompute(&snap).and_then(|r| Ok((r, snap.check_pages()?))) {
            Ok(((root, n), pages)) if root == stored => writeln!(
                out,
                "version {v}: root {} recomputed from {n} leaves, {pages} pages rehashed",
                hex(&root)
            )?,
            Ok(((root, _), _)) => {
                bad += 1;
                writeln!(
                    out,
                    "DAMAGED: version {v}: stored root {} but the leaves give {}",
                    hex(&stored),
                    hex(&root)
                )?;
            }
            Err(e) => {
                bad += 1;
                writeln!(out, "DAMAGED: version {v}: {e:#}")?;
            }
        }
    }
    db.close()?;
    if bad > 0 {
        writeln!(out, "check failed: {bad} versions do not recompute")?;
        return Ok(true);
    }
    writeln!(out, "check passed")?;
    Ok(false)
}

pub(crate) fn get(args: GetArgs) -> Result<()> {
    let key = if args.hex {
        unhex(&args.key)?
    } else {
        args.key.into_bytes()
    };
    let db = open(&args.dir)?;
    let snap = match args.version {
        Some(v) => db.snapshot(v)?,
        None => db.latest()?,
    };
    let value = snap.get(&key)?;
    match &value {
        Some(v) => match std::str::from_utf8(v) {
            Ok(text) if !text.chars().any(char::is_control) => println!("{text}"),
            _ => println!("0x{}", hex(v)),
        },
        None => println!("(absent)"),
    }
    if args.prove {
        let root = snap.root()?;
        let proof = snap.prove(&key)?;
        let claim = [(key_hash(&key), value.as_ref().map(|v| value_hash(v)))];
        verify(&root, &proof, &claim)?;
        println!(
            "proof: {} bytes, verified against root {} of version {}",
            proof.encoded_len(),
            hex(&root),
            snap.version()
        );
    }
    db.close()?;
    Ok(())
}
