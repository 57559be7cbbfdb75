//! `check`: reads every file of a store and reports what is damaged,
//! without changing anything.

use std::path::Path;
use std::sync::Arc;

use crate::engine::{segment_name, store_files};
use crate::error::{EngineError, Result};
use crate::io::IoBackend;
use crate::manifest::Manifest;
use crate::segment::block::cmp_entry;
use crate::segment::Segment;
use crate::wal;

/// What [`check_dir`] found.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct CheckReport {
    /// Files read.
    pub files: usize,
    /// Segment entries read.
    pub entries: u64,
    /// WAL records read.
    pub wal_records: u64,
    /// Segment files no manifest names (left by an unfinished flush or
    /// compaction; the next open removes them).
    pub unnamed: Vec<String>,
    /// Every damaged or unreadable thing found.
    pub problems: Vec<EngineError>,
}

impl CheckReport {
    /// True when nothing is damaged.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Reads the manifest, every segment it names (each block, and the order
/// and version range of every entry) and every WAL file of the store in
/// `dir`.
pub fn check_dir(io: &dyn IoBackend, dir: &Path) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let names = io.list(dir).map_err(|e| EngineError::io("list", dir, e))?;
    let files = store_files(&names);
    report.files += 1;
    let manifest = match Manifest::load(io, dir) {
        Ok(Some(m)) => Some(m),
        Ok(None) => {
            report.problems.push(EngineError::corruption(
                dir.join(crate::manifest::FILE),
                0,
                "no manifest",
            ));
            None
        }
        Err(e) => {
            report.problems.push(e);
            None
        }
    };
    if let Some(m) = &manifest {
        for meta in &m.segments {
            let path = dir.join(segment_name(meta.number));
            report.files += 1;
            match check_segment(io, &path, *meta) {
                Ok(n) => report.entries += n,
                Err(e) => report.problems.push(e),
            }
        }
        for (num, (name, kind)) in &files {
            if *kind == "seg" && !m.segments.iter().any(|s| s.number == *num) {
                report.unnamed.push(name.clone());
            }
        }
    }
    for (num, (name, kind)) in &files {
        if *kind != "wal" || manifest.as_ref().is_some_and(|m| *num < m.min_wal) {
            continue;
        }
        let path = dir.join(name);
        report.files += 1;
        match wal::inspect(io, &path) {
            Ok(r) => {
                report.wal_records += r.records.len() as u64;
                if let Some(cut) = r.cut {
                    report.problems.push(EngineError::corruption(
                        &path,
                        cut.offset,
                        format!(
                            "{} bytes after the last whole record: {}",
                            cut.dropped, cut.reason
                        ),
                    ));
                }
            }
            Err(e) => report.problems.push(e),
        }
    }
    Ok(report)
}

fn check_segment(
    io: &dyn IoBackend,
    path: &Path,
    meta: crate::segment::SegmentMeta,
) -> Result<u64> {
    let seg = Arc::new(Segment::open(io, path, meta)?);
    let mut it = seg.iter();
    let mut prev: Option<(Vec<u8>, u64)> = None;
    let mut n = 0u64;
    while let Some((key, version, _)) = it.next_entry()? {
        if version < meta.min_version || version > meta.max_version {
            return Err(EngineError::corruption(
                path,
                0,
                format!("entry of version {version} outside the segment's range"),
            ));
        }
        if let Some((pk, pv)) = &prev {
            if !cmp_entry(pk, *pv, &key, version).is_lt() {
                return Err(EngineError::corruption(path, 0, "entries out of order"));
            }
        }
        prev = Some((key, version));
        n += 1;
    }
    if n != meta.entries {
        return Err(EngineError::corruption(
            path,
            0,
            format!("{n} entries, the footer says {}", meta.entries),
        ));
    }
    Ok(n)
}
