//! Writes a segment file from entries given in segment order.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use verity_codec::block::{self as codec_block, Compression};
use verity_codec::frame;
use verity_codec::reader::{put_bytes, put_u32, put_u64};
use verity_codec::varint;
use verity_codec::CodecError;

use super::block::{cmp_entry, BlockBuilder};
use super::filter::{key_hash, Filter};
use super::{Footer, IndexEntry, SegmentMeta};
use crate::error::{EngineError, Result};
use crate::io::{IoBackend, IoFile};
use crate::memtable::RecordRef;

/// Output is written to the file in pieces of this size.
const WRITE_CHUNK: usize = 1 << 20;

/// Builds one segment file. Entries must come in segment order (key
/// ascending, version descending), each `(key, version)` once.
pub struct SegmentWriter {
    file: Arc<dyn IoFile>,
    path: PathBuf,
    number: u64,
    block_size: usize,
    compression: Compression,
    /// Bytes handed to the file so far.
    written: u64,
    out: Vec<u8>,
    block: BlockBuilder,
    last: Option<(Vec<u8>, u64)>,
    index: Vec<IndexEntry>,
    hashes: Vec<u64>,
    entries: u64,
    min_version: u64,
    max_version: u64,
    /// Pacing: called with the bytes of each write before it is made.
    pace: Option<Box<dyn FnMut(usize) + Send>>,
}

impl SegmentWriter {
    /// Creates the file `path` (which must not exist).
    pub fn create(
        io: &dyn IoBackend,
        path: &Path,
        number: u64,
        block_size: usize,
        compression: Compression,
    ) -> Result<SegmentWriter> {
        let err = |op| move |e| EngineError::io(op, path, e);
        if io.exists(path).map_err(err("stat"))? {
            return Err(EngineError::InvalidArgument(
                "the segment file exists already",
            ));
        }
        let file = io.open(path, true).map_err(err("create"))?;
        Ok(SegmentWriter {
            file,
            path: path.to_path_buf(),
            number,
            block_size,
            compression,
            written: 0,
            out: Vec::with_capacity(WRITE_CHUNK + block_size * 2),
            block: BlockBuilder::default(),
            last: None,
            index: Vec::new(),
            hashes: Vec::new(),
            entries: 0,
            min_version: u64::MAX,
            max_version: 0,
            pace: None,
        })
    }

    /// Calls `pace(bytes)` before each write to the file, so a compaction
    /// can hold its write rate down.
    pub fn set_pacer(&mut self, pace: Box<dyn FnMut(usize) + Send>) {
        self.pace = Some(pace);
    }

    /// Entries added so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Bytes the file will take at least (written and buffered).
    pub fn size_estimate(&self) -> u64 {
        self.written + self.out.len() as u64 + self.block.size() as u64
    }

    /// Adds an entry.
    pub fn add(&mut self, key: &[u8], version: u64, record: RecordRef<'_>) -> Result<()> {
        match &self.last {
            Some((k, v)) if cmp_entry(k, *v, key, version).is_ge() => {
                return Err(EngineError::InvalidArgument(
                    "segment entries must come in order",
                ));
            }
            Some((k, _)) if k.as_slice() == key => {}
            _ => self.hashes.push(key_hash(key)),
        }
        self.block.add(key, version, record);
        match &mut self.last {
            Some((k, v)) => {
                k.clear();
                k.extend_from_slice(key);
                *v = version;
            }
            None => self.last = Some((key.to_vec(), version)),
        }
        self.entries += 1;
        self.min_version = self.min_version.min(version);
        self.max_version = self.max_version.max(version);
        if self.block.size() >= self.block_size {
            self.finish_block()?;
        }
        Ok(())
    }

    fn finish_block(&mut self) -> Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        // The block is encoded straight into the output, framed in place.
        let raw = self.block.finish_in_place();
        let offset = self.written + self.out.len() as u64;
        let compression = self.compression;
        let framed = frame::put_with(&mut self.out, |out| {
            codec_block::encode_into(out, raw, compression)
        });
        self.block.clear();
        framed.map_err(|e| match e {
            CodecError::TooLarge { what: "frame", .. } => {
                EngineError::InvalidArgument("segment block too large")
            }
            e => EngineError::corruption(&self.path, self.written, e.to_string()),
        })?;
        let len = (self.written + self.out.len() as u64 - offset) as u32;
        let (key, version) = self.last.clone().unwrap_or_default();
        self.index.push(IndexEntry {
            last_key: key.into_boxed_slice(),
            last_version: version,
            offset,
            len,
        });
        if self.out.len() >= WRITE_CHUNK {
            self.write_out()?;
        }
        Ok(())
    }

    fn write_out(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        if let Some(pace) = &mut self.pace {
            pace(self.out.len());
        }
        self.file
            .write_at(&self.out, self.written)
            .map_err(|e| EngineError::io("write", &self.path, e))?;
        self.written += self.out.len() as u64;
        self.out.clear();
        Ok(())
    }

    /// Writes the filter, index and footer, syncs the file and returns
    /// what the manifest records of it. A segment holds at least one entry.
    pub fn finish(mut self) -> Result<SegmentMeta> {
        if self.entries == 0 {
            return Err(EngineError::InvalidArgument("a segment needs an entry"));
        }
        self.finish_block()?;
        let filter_off = self.written + self.out.len() as u64;
        frame::put(&mut self.out, &Filter::build(&self.hashes).encode())
            .map_err(|_| EngineError::InvalidArgument("segment filter too large"))?;
        let index_off = self.written + self.out.len() as u64;
        let mut index = Vec::with_capacity(self.index.len() * 48);
        varint::put(&mut index, self.index.len() as u64);
        for e in &self.index {
            put_bytes(&mut index, &e.last_key);
            put_u64(&mut index, e.last_version);
            put_u64(&mut index, e.offset);
            put_u32(&mut index, e.len);
        }
        frame::put(&mut self.out, &index)
            .map_err(|_| EngineError::InvalidArgument("segment index too large"))?;
        let end = self.written + self.out.len() as u64;
        let footer = Footer {
            index_off,
            index_len: (end - index_off) as u32,
            filter_off,
            filter_len: (index_off - filter_off) as u32,
            entries: self.entries,
            min_version: self.min_version,
            max_version: self.max_version,
        };
        self.out.extend_from_slice(&footer.encode());
        self.write_out()?;
        self.file
            .sync()
            .map_err(|e| EngineError::io("sync", &self.path, e))?;
        Ok(SegmentMeta {
            number: self.number,
            size: self.written,
            entries: self.entries,
            min_version: self.min_version,
            max_version: self.max_version,
        })
    }
}
