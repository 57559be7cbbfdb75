//! The write-ahead log: one checksummed record per committed version,
//! appended in groups with one sync per group.
//!
//! File layout (see `docs/format.md`): a 4096-byte header (`VRTYWAL\0`, the
//! format byte, two slots of the synced mark with checksums, zeros),
//! then records, each a codec frame (`len u32 | crc32c u32 | payload`) whose
//! payload is `version u64 LE` followed by the record's body.
//!
//! A version is durable once the [`Wal::sync`] that covers it returns. On
//! open, records are read until the first that is torn or damaged; the
//! file is cut there (and the cut synced) so new records follow whole ones.
//! A crash can only damage the unsynced tail, so everything synced is read
//! back exactly.
//!
//! The synced mark tells a torn tail from damage: every group writes the
//! offset up to which earlier syncs made the file durable (the start of
//! the group) to one of two header slots in turn, in the same sync (a torn
//! slot leaves the other), and [`Wal::seal`] marks the
//! whole file at a clean close. A bad record or a file shorter than the
//! mark is damage to synced bytes: a corruption error, never a silent cut.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use verity_codec::frame;

use crate::error::{EngineError, Result};
use crate::io::{IoBackend, IoFile};

/// The first bytes of every WAL file.
pub const MAGIC: [u8; 8] = *b"VRTYWAL\0";
/// The WAL format this code writes and reads.
pub const FORMAT: u8 = 2;
/// Bytes of the file header: a whole page, so that rewriting the synced
/// mark never rewrites a sector that holds records.
pub const HEADER_LEN: usize = 4096;
/// Largest record body.
pub const MAX_BODY: usize = 256 << 20;

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRecord {
    /// The version it commits.
    pub version: u64,
    /// What the layer above wrote.
    pub body: Vec<u8>,
}

/// What opening a log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The whole records, in order.
    pub records: Vec<WalRecord>,
    /// The header's synced mark: every byte before it was synced.
    pub synced: u64,
    /// Where the log was cut and why, if its tail was torn or damaged.
    pub cut: Option<Cut>,
}

/// A tail dropped on open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// Offset of the first record not read back.
    pub offset: u64,
    /// Bytes dropped from there to the old end of the file.
    pub dropped: u64,
    /// What was wrong with the record at `offset`.
    pub reason: String,
}

/// An open log, appending.
pub struct Wal {
    file: Arc<dyn IoFile>,
    path: PathBuf,
    /// End of the records written to the file; every byte before it was
    /// synced (a failed write or sync poisons the log).
    end: u64,
    /// Records appended since the last sync.
    buffer: Vec<u8>,
    /// The mark slot the next group writes (the other holds the newest
    /// mark).
    next_slot: usize,
    /// Newest version appended.
    last: Option<u64>,
    poisoned: bool,
}

/// Where the two synced-mark slots sit in the header: in different
/// sectors, written in turn, so a write torn anywhere leaves the other.
pub const SLOTS: [usize; 2] = [16, 512];
/// Bytes of a slot: `synced u64 LE | crc32c(slot index u8, synced) u32 LE
/// | 4 zero bytes`.
pub const SLOT_LEN: usize = 16;

/// Slot `index` holding mark `synced`.
fn slot(index: usize, synced: u64) -> [u8; SLOT_LEN] {
    let mut b = [0u8; SLOT_LEN];
    b[..8].copy_from_slice(&synced.to_le_bytes());
    let mut covered = [0u8; 9];
    covered[0] = index as u8;
    covered[1..].copy_from_slice(&synced.to_le_bytes());
    b[8..12].copy_from_slice(&frame::checksum(&covered).to_le_bytes());
    b
}

/// A new file's header: magic, format, seven zero bytes, both slots
/// holding `synced`, zeros to the end of the page.
fn header(synced: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8] = FORMAT;
    for (i, &at) in SLOTS.iter().enumerate() {
        h[at..at + SLOT_LEN].copy_from_slice(&slot(i, synced));
    }
    h
}

impl Wal {
    /// Creates an empty log at `path` (which must not exist), durable with
    /// its directory entry when this returns.
    pub fn create(io: &dyn IoBackend, path: &Path) -> Result<Wal> {
        let err = |op| move |e| EngineError::io(op, path, e);
        if io.exists(path).map_err(err("stat"))? {
            return Err(EngineError::InvalidArgument("the WAL file exists already"));
        }
        let file = io.open(path, true).map_err(err("create"))?;
        file.write_at(&header(HEADER_LEN as u64), 0)
            .map_err(err("write"))?;
        file.sync().map_err(err("sync"))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        io.sync_dir(dir)
            .map_err(|e| EngineError::io("sync", dir, e))?;
        Ok(Wal {
            file,
            path: path.to_path_buf(),
            end: HEADER_LEN as u64,
            buffer: Vec::new(),
            next_slot: 0,
            last: None,
            poisoned: false,
        })
    }

    /// Opens the log at `path`, reads its whole records and cuts a torn or
    /// damaged tail.
    pub fn open(io: &dyn IoBackend, path: &Path) -> Result<(Wal, Recovery)> {
        let err = |op| move |e| EngineError::io(op, path, e);
        let (file, recovery, len, next_slot) = read_log(io, path)?;
        let end = match &recovery.cut {
            Some(cut) if cut.offset < HEADER_LEN as u64 => {
                // The file's creation did not finish: write its header anew.
                file.set_len(0).map_err(err("truncate"))?;
                file.write_at(&header(HEADER_LEN as u64), 0)
                    .map_err(err("write"))?;
                HEADER_LEN as u64
            }
            Some(cut) => {
                file.set_len(cut.offset).map_err(err("truncate"))?;
                cut.offset
            }
            None => len as u64,
        };
        // What was read may sit unsynced in the OS (a process that died
        // before its sync): make it durable before any header marks it so.
        file.sync().map_err(err("sync"))?;
        let wal = Wal {
            file,
            path: path.to_path_buf(),
            end,
            buffer: Vec::new(),
            next_slot,
            last: recovery.records.last().map(|r| r.version),
            poisoned: false,
        };
        Ok((wal, recovery))
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the file, including records not yet synced.
    pub fn len(&self) -> u64 {
        self.end + self.buffer.len() as u64
    }

    /// True when the log holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == HEADER_LEN as u64
    }

    /// Newest version appended.
    pub fn last_version(&self) -> Option<u64> {
        self.last
    }

    /// Appends the record of `version` (newer than every version in the
    /// log) to the current group. Nothing is written until [`sync`](Self::sync).
    pub fn append(&mut self, version: u64, body: &[u8]) -> Result<()> {
        self.append_with(version, |out| out.extend_from_slice(body))
            .map(|_| ())
    }

    /// [`append`](Self::append) of the body that `encode` appends to the
    /// buffer it is given: the body is written once, into the group's
    /// buffer, where building it apart copied it twice more. Returns the
    /// body's length. A body longer than `MAX_BODY` is refused and leaves
    /// the group as it was.
    pub fn append_with(
        &mut self,
        version: u64,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<usize> {
        if self.poisoned {
            return Err(EngineError::Poisoned);
        }
        if self.last.is_some_and(|last| version <= last) {
            return Err(EngineError::InvalidArgument("WAL versions must increase"));
        }
        let mut body_len = 0;
        frame::put_with(&mut self.buffer, |out| {
            out.extend_from_slice(&version.to_le_bytes());
            let start = out.len();
            encode(out);
            body_len = out.len() - start;
            if body_len > MAX_BODY {
                return Err(verity_codec::CodecError::TooLarge {
                    what: "WAL record",
                    len: body_len as u64,
                    max: MAX_BODY as u64,
                });
            }
            Ok(())
        })
        .map_err(|_| EngineError::InvalidArgument("WAL record too large"))?;
        self.last = Some(version);
        Ok(body_len)
    }

    /// Writes the current group and syncs it: one write and one sync for
    /// every record appended since the last call. When this returns `Ok`,
    /// those versions are durable. A failure poisons the log.
    pub fn sync(&mut self) -> Result<()> {
        if self.poisoned {
            return Err(EngineError::Poisoned);
        }
        let result = self.write_and_sync();
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    fn write_and_sync(&mut self) -> Result<()> {
        if !self.buffer.is_empty() {
            self.file
                .write_at(&self.buffer, self.end)
                .map_err(|e| EngineError::io("write", &self.path, e))?;
            // Everything before this group is durable; the mark rides on
            // this group's sync. A crash may keep the old mark or the new
            // one: both are at or below what is durable.
            self.write_mark()?;
            self.end += self.buffer.len() as u64;
            self.buffer.clear();
        }
        self.file
            .sync()
            .map_err(|e| EngineError::io("sync", &self.path, e))
    }

    /// Writes `end` (everything before it synced) to the next mark slot.
    fn write_mark(&mut self) -> Result<()> {
        let i = self.next_slot;
        self.file
            .write_at(&slot(i, self.end), SLOTS[i] as u64)
            .map_err(|e| EngineError::io("write", &self.path, e))?;
        self.next_slot = 1 - i;
        Ok(())
    }

    /// Syncs the current group, then marks the whole file synced (a clean
    /// close): afterwards damage anywhere in it is reported, not cut. Both
    /// slots take the mark, one sync each (a crash tears at most one), so
    /// that the header of a log with records never again reads as a new
    /// file's, even cut short.
    pub fn seal(&mut self) -> Result<()> {
        self.sync()?;
        let result = (0..2).try_for_each(|_| {
            self.write_mark()?;
            self.file
                .sync()
                .map_err(|e| EngineError::io("sync", &self.path, e))
        });
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }
}

/// Reads the log at `path` without changing it: its whole records, and
/// where a torn or damaged tail starts.
pub fn inspect(io: &dyn IoBackend, path: &Path) -> Result<Recovery> {
    read_log(io, path).map(|(_, recovery, _, _)| recovery)
}

/// The file, what it holds, its length and the mark slot to write next.
fn read_log(io: &dyn IoBackend, path: &Path) -> Result<(Arc<dyn IoFile>, Recovery, usize, usize)> {
    let err = |op| move |e| EngineError::io(op, path, e);
    let file = io.open(path, false).map_err(err("open"))?;
    let len = file.size().map_err(err("stat"))?;
    let len = usize::try_from(len)
        .map_err(|_| EngineError::corruption(path, 0, "WAL larger than memory"))?;
    let mut bytes = vec![0u8; len];
    file.read_at(&mut bytes, 0).map_err(err("read"))?;
    let (recovery, next_slot) = parse(path, &bytes)?;
    Ok((file, recovery, len, next_slot))
}

/// Checks a log file's header; returns its synced mark (the newer of
/// the two slots that pass their checksums) and the slot to write next.
fn check_header(path: &Path, bytes: &[u8]) -> Result<(u64, usize)> {
    if bytes.len() < HEADER_LEN || bytes[..8] != MAGIC {
        return Err(EngineError::corruption(
            path,
            0,
            "not a WAL file (bad header)",
        ));
    }
    if bytes[8] != FORMAT {
        return Err(EngineError::corruption(
            path,
            8,
            format!("unsupported WAL format {}", bytes[8]),
        ));
    }
    let in_slot = |i: usize| SLOTS.iter().any(|&at| (at + 8..at + SLOT_LEN).contains(&i));
    let is_slot_word = |i: usize| SLOTS.iter().any(|&at| (at..at + 8).contains(&i));
    if let Some(i) = (9..HEADER_LEN).find(|&i| !in_slot(i) && !is_slot_word(i) && bytes[i] != 0) {
        return Err(EngineError::corruption(
            path,
            i as u64,
            "reserved header bytes are not zero",
        ));
    }
    let mut best: Option<(u64, usize)> = None;
    for (i, &at) in SLOTS.iter().enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        let synced = u64::from_le_bytes(word);
        // A slot torn by a crash fails its checksum; the other one then
        // holds the mark of the group before.
        if bytes[at..at + SLOT_LEN] == slot(i, synced) && best.is_none_or(|b| synced > b.0) {
            best = Some((synced, i));
        }
    }
    let Some((synced, newest)) = best else {
        return Err(EngineError::corruption(
            path,
            SLOTS[0] as u64,
            "both of the WAL header's synced marks fail their checksums",
        ));
    };
    if synced < HEADER_LEN as u64 || synced > bytes.len() as u64 {
        return Err(EngineError::corruption(
            path,
            SLOTS[newest] as u64,
            format!(
                "the WAL was synced to byte {synced} but the file holds {} bytes",
                bytes.len()
            ),
        ));
    }
    Ok((synced, 1 - newest))
}

/// Whether `bytes` can be what a crash left of a new file's header: each
/// byte the new header's or zero (a sector never written).
fn torn_new_header(bytes: &[u8]) -> bool {
    let fresh = header(HEADER_LEN as u64);
    bytes.iter().zip(&fresh).all(|(&b, &f)| b == f || b == 0)
}

/// Reads the records of a log file's bytes.
fn parse(path: &Path, bytes: &[u8]) -> Result<(Recovery, usize)> {
    let (synced, next_slot) = match check_header(path, bytes) {
        Ok(found) => found,
        // No record follows the header, and what is there is a new file's
        // header with sectors lost: a crash while the file was created
        // (records are appended only after the header was synced), so
        // nothing in it was ever acknowledged. A header with a mark past
        // it (a log cut short) is damage.
        Err(_) if bytes.len() <= HEADER_LEN && torn_new_header(bytes) => {
            let recovery = Recovery {
                records: Vec::new(),
                synced: 0,
                cut: Some(Cut {
                    offset: 0,
                    dropped: bytes.len() as u64,
                    reason: "the file's creation did not finish (torn header, no record)"
                        .to_owned(),
                }),
            };
            return Ok((recovery, 0));
        }
        Err(e) => return Err(e),
    };
    let mut records = Vec::new();
    let mut at = HEADER_LEN;
    let mut last: Option<u64> = None;
    let mut cut = None;
    while at < bytes.len() {
        let reason = match frame::get(&bytes[at..], (8 + MAX_BODY) as u32, at) {
            Ok((payload, used)) if payload.len() >= 8 => {
                let mut v = [0u8; 8];
                v.copy_from_slice(&payload[..8]);
                let version = u64::from_le_bytes(v);
                if last.is_some_and(|l| version <= l) {
                    // A whole record that breaks the order was not written
                    // by a crash: report it rather than hide data behind it.
                    return Err(EngineError::corruption(
                        path,
                        at as u64,
                        format!("WAL record for version {version} follows a newer one"),
                    ));
                }
                last = Some(version);
                records.push(WalRecord {
                    version,
                    body: payload[8..].to_vec(),
                });
                at += used;
                continue;
            }
            Ok(_) => "record shorter than its version".to_owned(),
            Err(e) => e.to_string(),
        };
        if (at as u64) < synced {
            // Synced bytes do not tear: this is damage, and the records
            // behind it were acknowledged durable.
            return Err(EngineError::corruption(
                path,
                at as u64,
                format!("damaged WAL record in the synced part of the log: {reason}"),
            ));
        }
        cut = Some(Cut {
            offset: at as u64,
            dropped: (bytes.len() - at) as u64,
            reason,
        });
        break;
    }
    Ok((
        Recovery {
            records,
            synced,
            cut,
        },
        next_slot,
    ))
}
