//! The manifest: which segments are live, which WAL files still matter,
//! the newest flushed version and the retention floor.
//!
//! `MANIFEST` is `magic "VRTYMAN\0" | format: u8 | 7 zero bytes | frame
//! (payload)`. It is replaced whole: the new one is written to
//! `MANIFEST.tmp`, synced, renamed over `MANIFEST`, and the directory is
//! synced. A crash leaves the old manifest or the new one, never a mix; a
//! `MANIFEST.tmp` found at open is an unfinished write and is removed.

use std::path::Path;

use verity_codec::frame;
use verity_codec::reader::{put_u64, Reader};
use verity_codec::varint;

use crate::error::{EngineError, Result};
use crate::io::IoBackend;
use crate::segment::SegmentMeta;

/// The manifest's file name.
pub const FILE: &str = "MANIFEST";
/// The name a new manifest is written under before it is renamed.
pub const TMP_FILE: &str = "MANIFEST.tmp";
/// The first bytes of a manifest.
pub const MAGIC: [u8; 8] = *b"VRTYMAN\0";
/// The manifest format this build writes and reads.
pub const FORMAT: u8 = 1;
const HEADER_LEN: usize = 16;
/// A manifest larger than this is damage, not a manifest.
const MAX_PAYLOAD: u32 = 256 << 20;

/// What the manifest records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// The next file number to hand out (segments and WAL files share the
    /// numbering).
    pub next_file: u64,
    /// WAL files numbered below this hold only flushed versions.
    pub min_wal: u64,
    /// Every version up to this one is in the segments.
    pub last_flushed: Option<u64>,
    /// Versions below this are no longer readable.
    pub floor: Option<u64>,
    /// The live segments, oldest versions first; their version ranges do
    /// not overlap.
    pub segments: Vec<SegmentMeta>,
}

impl Manifest {
    /// The file's bytes.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut payload = Vec::with_capacity(64 + 40 * self.segments.len());
        put_u64(&mut payload, self.next_file);
        put_u64(&mut payload, self.min_wal);
        let flags = u8::from(self.last_flushed.is_some()) | (u8::from(self.floor.is_some()) << 1);
        payload.push(flags);
        put_u64(&mut payload, self.last_flushed.unwrap_or(0));
        put_u64(&mut payload, self.floor.unwrap_or(0));
        varint::put(&mut payload, self.segments.len() as u64);
        for s in &self.segments {
            for v in [s.number, s.size, s.entries, s.min_version, s.max_version] {
                put_u64(&mut payload, v);
            }
        }
        let mut out = Vec::with_capacity(HEADER_LEN + 8 + payload.len());
        out.extend_from_slice(&MAGIC);
        out.push(FORMAT);
        out.extend_from_slice(&[0u8; 7]);
        frame::put(&mut out, &payload)
            .map_err(|_| EngineError::InvalidArgument("manifest too large"))?;
        Ok(out)
    }

    /// Decodes a manifest file's bytes; the error says what is wrong and
    /// where.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Manifest, (u64, String)> {
        if bytes.len() < HEADER_LEN || bytes[..8] != MAGIC {
            return Err((0, "not a manifest (bad magic)".to_owned()));
        }
        if bytes[8] != FORMAT {
            return Err((8, format!("unsupported manifest format {}", bytes[8])));
        }
        if bytes[9..HEADER_LEN].iter().any(|&b| b != 0) {
            return Err((9, "reserved header bytes are not zero".to_owned()));
        }
        let at = HEADER_LEN as u64;
        let (payload, used) = frame::get(&bytes[HEADER_LEN..], MAX_PAYLOAD, HEADER_LEN)
            .map_err(|e| (at, e.to_string()))?;
        if HEADER_LEN + used != bytes.len() {
            return Err((at + used as u64, "bytes after the manifest".to_owned()));
        }
        let err = |e: verity_codec::CodecError| (at, e.to_string());
        let mut r = Reader::new(payload, "manifest");
        let next_file = r.u64().map_err(err)?;
        let min_wal = r.u64().map_err(err)?;
        let flags = r.u8().map_err(err)?;
        if flags & !3 != 0 {
            return Err((at, format!("unknown manifest flags {flags:#x}")));
        }
        let last_flushed = r.u64().map_err(err)?;
        let floor = r.u64().map_err(err)?;
        let n = r.count(40, u32::MAX as u64).map_err(err)?;
        let mut segments = Vec::with_capacity(n);
        for _ in 0..n {
            let mut f = [0u64; 5];
            for v in &mut f {
                *v = r.u64().map_err(err)?;
            }
            segments.push(SegmentMeta {
                number: f[0],
                size: f[1],
                entries: f[2],
                min_version: f[3],
                max_version: f[4],
            });
        }
        r.finish().map_err(err)?;
        let m = Manifest {
            next_file,
            min_wal,
            last_flushed: (flags & 1 != 0).then_some(last_flushed),
            floor: (flags & 2 != 0).then_some(floor),
            segments,
        };
        for pair in m.segments.windows(2) {
            if pair[0].max_version >= pair[1].min_version {
                return Err((at, "segment version ranges overlap".to_owned()));
            }
        }
        let mut numbers: Vec<u64> = m.segments.iter().map(|s| s.number).collect();
        numbers.sort_unstable();
        if numbers.windows(2).any(|w| w[0] == w[1]) {
            return Err((at, "a segment is listed twice".to_owned()));
        }
        for s in &m.segments {
            if s.number >= m.next_file || s.min_version > s.max_version || s.max_version == u64::MAX
            {
                return Err((at, format!("segment {} is out of range", s.number)));
            }
        }
        if m.min_wal > m.next_file || m.last_flushed == Some(u64::MAX) || m.floor == Some(u64::MAX)
        {
            return Err((at, "manifest fields out of range".to_owned()));
        }
        Ok(m)
    }

    /// Reads the manifest of `dir`, or `None` when there is none.
    pub fn load(io: &dyn IoBackend, dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(FILE);
        let err = |op| {
            let path = path.clone();
            move |e| EngineError::io(op, path, e)
        };
        if !io.exists(&path).map_err(err("stat"))? {
            return Ok(None);
        }
        let file = io.open(&path, false).map_err(err("open"))?;
        let len = file.size().map_err(err("stat"))?;
        if len > u64::from(MAX_PAYLOAD) + 64 {
            return Err(EngineError::corruption(&path, 0, "manifest too large"));
        }
        let mut bytes = vec![0u8; len as usize];
        file.read_at(&mut bytes, 0).map_err(err("read"))?;
        Manifest::decode(&bytes)
            .map(Some)
            .map_err(|(offset, detail)| EngineError::corruption(&path, offset, detail))
    }

    /// Replaces the manifest of `dir` with this one, durably.
    pub fn store(&self, io: &dyn IoBackend, dir: &Path) -> Result<()> {
        let tmp = dir.join(TMP_FILE);
        let path = dir.join(FILE);
        let bytes = self.encode()?;
        if io
            .exists(&tmp)
            .map_err(|e| EngineError::io("stat", &tmp, e))?
        {
            io.remove(&tmp)
                .map_err(|e| EngineError::io("remove", &tmp, e))?;
        }
        let file = io
            .open(&tmp, true)
            .map_err(|e| EngineError::io("create", &tmp, e))?;
        file.write_at(&bytes, 0)
            .map_err(|e| EngineError::io("write", &tmp, e))?;
        file.sync().map_err(|e| EngineError::io("sync", &tmp, e))?;
        io.rename(&tmp, &path)
            .map_err(|e| EngineError::io("rename", &tmp, e))?;
        io.sync_dir(dir)
            .map_err(|e| EngineError::io("sync", dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let m = Manifest {
            next_file: 9,
            min_wal: 7,
            last_flushed: Some(41),
            floor: None,
            segments: vec![
                SegmentMeta {
                    number: 3,
                    size: 100,
                    entries: 4,
                    min_version: 1,
                    max_version: 20,
                },
                SegmentMeta {
                    number: 5,
                    size: 200,
                    entries: 9,
                    min_version: 21,
                    max_version: 41,
                },
            ],
        };
        let bytes = m.encode().expect("small manifest");
        assert_eq!(Manifest::decode(&bytes), Ok(m.clone()));
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(Manifest::decode(&b).is_err(), "flip at {i} accepted");
        }
        for len in 0..bytes.len() {
            assert!(
                Manifest::decode(&bytes[..len]).is_err(),
                "cut at {len} accepted"
            );
        }
        // Well framed but inconsistent: refused too.
        let mut twice = m.clone();
        twice.segments[1].number = 3;
        assert!(Manifest::decode(&twice.encode().expect("encode")).is_err());
        let mut late_wal = m.clone();
        late_wal.min_wal = 10;
        assert!(Manifest::decode(&late_wal.encode().expect("encode")).is_err());
        let mut max = m;
        max.floor = Some(u64::MAX);
        assert!(Manifest::decode(&max.encode().expect("encode")).is_err());
    }
}
