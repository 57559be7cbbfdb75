//! An in-memory, multi-version page store: the reference [`PageSource`].
//!
//! It keeps what a disk store keeps (every page record as encoded bytes,
//! bases and deltas) and a decoded copy of the newest version of each page.
//! Reads of older versions rebuild the page from its newest base at or
//! below the version and the deltas after it, exactly as a store on disk
//! does, so tests of this store test the record formats too.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;
use rayon::prelude::*;
use rustc_hash::FxHashMap as HashMap;
use verity_codec::page::{PageImage, PageRecord};

use crate::error::MerkleError;
use crate::page::{ChainInfo, Page, VersionedPage};
use crate::path::PagePath;
use crate::source::PageSource;
use crate::update::UpdateOutput;

#[derive(Default)]
struct State {
    /// Decoded newest version of each existing page.
    latest: HashMap<PagePath, VersionedPage>,
    /// Every retained record of each page, by version.
    history: HashMap<PagePath, BTreeMap<u64, Arc<[u8]>>>,
    /// Newest version applied.
    version: u64,
    /// Oldest version still readable.
    floor: u64,
}

/// A multi-version page store in memory.
#[derive(Default)]
pub struct MemPageStore {
    state: RwLock<State>,
}

/// Sizes of a [`MemPageStore`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemStats {
    /// Pages that exist at the newest version.
    pub live_pages: usize,
    /// Records kept over all versions.
    pub records: usize,
    /// Bytes of those records.
    pub record_bytes: usize,
}

impl MemPageStore {
    /// An empty store (every version reads as the empty trie).
    pub fn new() -> Self {
        Self::default()
    }

    /// Newest version applied (0 before the first).
    pub fn version(&self) -> u64 {
        self.state.read().version
    }

    /// Oldest version still readable.
    pub fn floor(&self) -> u64 {
        self.state.read().floor
    }

    /// Stores the records of an update. Versions must be applied in
    /// increasing order.
    pub fn apply(&self, output: &UpdateOutput) -> Result<(), MerkleError> {
        let mut state = self.state.write();
        if output.version <= state.version {
            return Err(MerkleError::InvalidVersion(
                "updates must be applied in increasing version order",
            ));
        }
        // Every record must follow the newest one stored for its page, or a
        // delta would be read against the wrong predecessor.
        for w in &output.writes {
            let newest = state
                .history
                .get(&w.path)
                .and_then(|r| r.keys().next_back().copied());
            let expected = match newest {
                Some(v) if state.latest.contains_key(&w.path) => Some(v),
                _ => None,
            };
            if w.previous != expected {
                return Err(MerkleError::InvalidVersion(
                    "the update was not built on the newest version of the store",
                ));
            }
        }
        for w in &output.writes {
            state
                .history
                .entry(w.path)
                .or_default()
                .insert(output.version, w.record.as_slice().into());
            match &w.page {
                Some(page) => {
                    let vp = VersionedPage {
                        version: output.version,
                        page: page.clone(),
                        chain: w.chain,
                    };
                    state.latest.insert(w.path, vp);
                }
                None => {
                    state.latest.remove(&w.path);
                }
            }
        }
        state.version = output.version;
        Ok(())
    }

    /// Forgets every version below `floor`; `floor` itself stays readable
    /// (the newest record at or below it becomes a base where it was a
    /// delta).
    pub fn prune(&self, floor: u64) -> Result<(), MerkleError> {
        let mut state = self.state.write();
        if floor <= state.floor {
            return Ok(());
        }
        let floor = floor.min(state.version);
        let paths: Vec<PagePath> = state.history.keys().copied().collect();
        for path in paths {
            let rebuilt = match state.history[&path].range(..=floor).next_back() {
                None => continue,
                Some((&v, _)) => (v, rebuild(&state.history[&path], &path, v)?),
            };
            let records = state
                .history
                .get_mut(&path)
                .map(std::mem::take)
                .unwrap_or_default();
            let (v, page) = rebuilt;
            let mut kept: BTreeMap<u64, Arc<[u8]>> =
                records.into_iter().filter(|(ver, _)| *ver > v).collect();
            if let Some(vp) = page {
                kept.insert(v, PageRecord::Base(vp.page.to_image()).encode().into());
            }
            if kept.is_empty() {
                state.history.remove(&path);
            } else {
                state.history.insert(path, kept);
            }
        }
        // Chains of pages rewritten above start at a base now.
        let state = &mut *state;
        for (path, vp) in state.latest.iter_mut() {
            if let Some(records) = state.history.get(path) {
                vp.chain = chain_of(records, vp.version);
            }
        }
        state.floor = floor;
        Ok(())
    }

    /// Record counts and sizes.
    pub fn stats(&self) -> MemStats {
        let state = self.state.read();
        let mut stats = MemStats {
            live_pages: state.latest.len(),
            ..MemStats::default()
        };
        for records in state.history.values() {
            stats.records += records.len();
            stats.record_bytes += records.values().map(|r| r.len()).sum::<usize>();
        }
        stats
    }

    /// The page at `path` as of `version`, always rebuilt from the stored
    /// records (never from the decoded copy of the newest version).
    pub fn page_from_records(
        &self,
        path: &PagePath,
        version: u64,
    ) -> Result<Option<VersionedPage>, MerkleError> {
        let state = self.state.read();
        let Some(records) = state.history.get(path) else {
            return Ok(None);
        };
        match records.range(..=version).next_back() {
            Some((&v, _)) => rebuild(records, path, v),
            None => Ok(None),
        }
    }

    /// The stored record of `path` at exactly `version`, if any.
    pub fn record(&self, path: &PagePath, version: u64) -> Option<Arc<[u8]>> {
        self.state.read().history.get(path)?.get(&version).cloned()
    }
}

/// The chain state of the record at `version`.
fn chain_of(records: &BTreeMap<u64, Arc<[u8]>>, version: u64) -> ChainInfo {
    let mut chain = ChainInfo::default();
    for (_, bytes) in records.range(..=version).rev() {
        if PageRecord::is_delta(bytes) {
            chain.deltas += 1;
            chain.delta_bytes += bytes.len() as u32;
        } else {
            break;
        }
    }
    chain
}

/// Rebuilds the page as of the record at exactly `version` from its base
/// and deltas.
fn rebuild(
    records: &BTreeMap<u64, Arc<[u8]>>,
    path: &PagePath,
    version: u64,
) -> Result<Option<VersionedPage>, MerkleError> {
    let codec = |source| MerkleError::Codec {
        path: *path,
        source,
    };
    let mut chain = Vec::new();
    let mut base: Option<PageImage> = None;
    for (_, bytes) in records.range(..=version).rev() {
        match PageRecord::decode(bytes).map_err(codec)? {
            PageRecord::Base(image) => {
                base = Some(image);
                break;
            }
            PageRecord::Delta(delta) => chain.push((delta, bytes.len())),
            PageRecord::Removed if chain.is_empty() => return Ok(None),
            PageRecord::Removed => {
                return Err(MerkleError::CorruptPage {
                    path: *path,
                    detail: "a delta follows a removal",
                })
            }
        }
    }
    let Some(mut image) = base else {
        return Err(MerkleError::CorruptPage {
            path: *path,
            detail: "a delta chain has no base",
        });
    };
    let mut info = ChainInfo::default();
    for (delta, len) in chain.iter().rev() {
        image = delta.apply(&image).map_err(codec)?;
        info.deltas += 1;
        info.delta_bytes += *len as u32;
    }
    let page = Page::from_image(&image, path)?;
    Ok(Some(VersionedPage {
        version,
        page: Arc::new(page),
        chain: info,
    }))
}

/// The page at `path` as of `version` in `state`.
fn page_in(
    state: &State,
    path: &PagePath,
    version: u64,
) -> Result<Option<VersionedPage>, MerkleError> {
    if version < state.floor {
        return Err(MerkleError::InvalidVersion(
            "version is below the retention floor",
        ));
    }
    let Some(records) = state.history.get(path) else {
        return Ok(None);
    };
    let Some((&v, _)) = records.range(..=version).next_back() else {
        return Ok(None);
    };
    match state.latest.get(path) {
        Some(vp) if vp.version == v => Ok(Some(vp.clone())),
        _ if records.keys().next_back() == Some(&v) => Ok(None),
        _ => rebuild(records, path, v),
    }
}

/// Batches at least this large are read on several threads.
const PARALLEL_READS: usize = 64;

impl PageSource for MemPageStore {
    fn page(&self, path: &PagePath, version: u64) -> Result<Option<VersionedPage>, MerkleError> {
        page_in(&self.state.read(), path, version)
    }

    fn pages(
        &self,
        paths: &[PagePath],
        version: u64,
    ) -> Result<Vec<Option<VersionedPage>>, MerkleError> {
        let state = self.state.read();
        let state: &State = &state;
        if paths.len() >= PARALLEL_READS {
            paths
                .par_iter()
                .map(|p| page_in(state, p, version))
                .collect()
        } else {
            paths.iter().map(|p| page_in(state, p, version)).collect()
        }
    }
}
