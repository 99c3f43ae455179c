//! The hint file: a snapshot of the index, so that reopening reads one sequential file
//! instead of scanning every segment. Layout in `docs/design.md` §3.
//!
//! A hint is only an accelerator: one that fails its checksum, or points at a segment that
//! compaction has since deleted, is ignored and recovery scans the log instead.

use std::collections::BTreeMap;
use std::path::Path;

use super::error::{Error, Result};
use super::index::{IndexKey, Loc, TableMap, Version};
use super::io::{OpenMode, Vfs, VfsFile};
use super::record::{MAX_KEY_LEN, SEGMENT_HEADER_LEN};

/// Version 2: an entry's offset word also says where its record starts (version 1 held the
/// value offset alone; such a hint is rejected and the log scanned).
const MAGIC: [u8; 8] = *b"TKVHNT\0\x02";
const CHUNK: usize = 1 << 20;

/// File name of the hint covering sequence number `seq`.
pub(crate) fn file_name(seq: u64) -> String {
    format!("hint-{seq:020}.tkv")
}

/// The sequence number in a hint file name.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("hint-")?.strip_suffix(".tkv")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Bounded little-endian reads over a byte slice; errors carry the file offset.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: u64,
}

impl<'a> Reader<'a> {
    /// Reads `bytes`, which start at file offset `base`.
    pub(crate) fn new(bytes: &'a [u8], base: u64) -> Self {
        Reader { bytes, pos: 0, base }
    }

    /// File offset of the next byte.
    pub(crate) fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Whether everything was read.
    pub(crate) fn is_empty(&self) -> bool {
        self.pos == self.bytes.len()
    }

    /// The next `len` bytes.
    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8], (u64, String)> {
        let end = self.pos.checked_add(len).filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err((
                self.offset(),
                format!("{len} bytes expected, {} left", self.bytes.len() - self.pos),
            ));
        };
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], (u64, String)> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, (u64, String)> {
        self.array().map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, (u64, String)> {
        self.array().map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self) -> Result<u64, (u64, String)> {
        self.array().map(u64::from_le_bytes)
    }
}

/// An index snapshot read back.
#[derive(Debug)]
pub(crate) struct Hint {
    /// Every batch up to this sequence number is reflected.
    pub(crate) seq: u64,
    /// Where to resume scanning the log.
    pub(crate) resume: (u32, u64),
    /// Entries of each table, by id.
    pub(crate) tables: BTreeMap<u32, TableMap>,
}

/// Writes a hint for `version` into `dir`, durably, then deletes older hints.
pub(crate) fn write(vfs: &dyn Vfs, dir: &Path, version: &Version) -> Result<()> {
    let name = file_name(version.seq);
    let tmp = dir.join(format!("{name}.tmp"));
    let _ = vfs.remove_file(&tmp);
    let file = vfs.open(&tmp, OpenMode::CreateNew).map_err(|e| Error::io("creating", &tmp, e))?;
    let mut out = ChunkedWriter {
        file: &*file,
        path: &tmp,
        buf: Vec::with_capacity(CHUNK + MAX_KEY_LEN + 64),
        written: 0,
        crc: 0,
    };
    out.buf.extend_from_slice(&MAGIC);
    out.buf.extend_from_slice(&version.seq.to_le_bytes());
    out.buf.extend_from_slice(&version.end.0.to_le_bytes());
    out.buf.extend_from_slice(&version.end.1.to_le_bytes());
    out.buf.extend_from_slice(&(version.tables.len() as u32).to_le_bytes());
    for (id, table) in version.tables.iter() {
        out.buf.extend_from_slice(&id.to_le_bytes());
        out.buf.extend_from_slice(&(table.map.len() as u64).to_le_bytes());
        for (key, loc) in table.map.iter() {
            let key = key.as_bytes();
            out.buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.buf.extend_from_slice(key);
            out.buf.extend_from_slice(&loc.segment.to_le_bytes());
            out.buf.extend_from_slice(&loc.packed_offsets().to_le_bytes());
            out.buf.extend_from_slice(&loc.len.to_le_bytes());
            out.buf.extend_from_slice(&loc.seq.to_le_bytes());
            if out.buf.len() >= CHUNK {
                out.flush()?;
            }
        }
    }
    out.flush()?;
    let crc = out.crc.to_le_bytes();
    file.write_all_at(&crc, out.written).map_err(|e| Error::io("writing", &tmp, e))?;
    file.sync_data().map_err(|e| Error::io("syncing", &tmp, e))?;
    let path = dir.join(&name);
    vfs.rename(&tmp, &path).map_err(|e| Error::io("renaming", &tmp, e))?;
    vfs.sync_dir(dir).map_err(|e| Error::io("syncing directory", dir, e))?;
    remove_older(vfs, dir, version.seq);
    Ok(())
}

/// Writes a file sequentially in chunks, keeping a running CRC of what it wrote.
struct ChunkedWriter<'a> {
    file: &'a dyn VfsFile,
    path: &'a Path,
    buf: Vec<u8>,
    written: u64,
    crc: u32,
}

impl ChunkedWriter<'_> {
    fn flush(&mut self) -> Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, &self.buf);
        self.file.write_all_at(&self.buf, self.written).map_err(|e| Error::io("writing", self.path, e))?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

/// Deletes hints older than `seq` (best effort: a stale hint is ignored on reopen anyway).
pub(crate) fn remove_older(vfs: &dyn Vfs, dir: &Path, seq: u64) {
    if let Ok(names) = vfs.list(dir) {
        for name in names {
            if parse_file_name(&name).is_some_and(|s| s < seq) {
                let _ = vfs.remove_file(&dir.join(name));
            }
        }
    }
}

/// Decodes a hint's bytes. `segment_len` gives the written length of each existing segment:
/// an entry outside of one makes the hint unusable (compaction deleted what it points at).
pub(crate) fn decode(bytes: &[u8], segment_len: &dyn Fn(u32) -> Option<u64>) -> Result<Hint, (u64, String)> {
    if bytes.len() < MAGIC.len() + 4 {
        return Err((0, format!("{} bytes are too few for a hint", bytes.len())));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) != crc32c::crc32c(body) {
        return Err((body.len() as u64, "checksum mismatch".to_owned()));
    }
    if body[..6] != MAGIC[..6] {
        return Err((0, "not a typed-kv hint (bad magic)".to_owned()));
    }
    if body[6..8] != MAGIC[6..8] {
        return Err((6, format!("hint format version {} is not supported (expected {})", body[7], MAGIC[7])));
    }
    let mut r = Reader::new(&body[8..], 8);
    let seq = r.u64()?;
    let resume = (r.u32()?, r.u64()?);
    let table_count = r.u32()?;
    let mut tables = BTreeMap::new();
    for _ in 0..table_count {
        let id = r.u32()?;
        let count = r.u64()?;
        let mut entries: Vec<(IndexKey, Loc)> = Vec::new();
        for _ in 0..count {
            let at = r.offset();
            let key_len = r.u32()? as usize;
            if key_len > MAX_KEY_LEN {
                return Err((at, format!("key length {key_len} is over the limit")));
            }
            let key = IndexKey::new(r.take(key_len)?);
            let (segment, packed, len, seq) = (r.u32()?, r.u64()?, r.u32()?, r.u64()?);
            let loc = Loc::from_packed(segment, packed, len, seq)
                .filter(|loc| loc.record() >= SEGMENT_HEADER_LEN as u64)
                .ok_or_else(|| {
                    (at, format!("entry holds impossible offsets {packed:#x} in segment {segment}"))
                })?;
            let end = loc.end();
            if segment_len(loc.segment).is_none_or(|len| end > len) {
                return Err((at, format!("entry points outside segment {}", loc.segment)));
            }
            // Every entry was written before the resume point. One after it could be cut off
            // as a torn tail by the replay that follows, leaving the index pointing at
            // nothing (and the next hint unusable).
            if (loc.segment, end) > resume {
                return Err((at, format!("entry lies after the resume point {resume:?}")));
            }
            if entries.last().is_some_and(|(p, _)| p >= &key) {
                return Err((at, "keys are not in ascending order".to_owned()));
            }
            entries.push((key, loc));
        }
        if tables.insert(id, TableMap::from_sorted(entries)).is_some() {
            return Err((r.offset(), format!("table {id} appears twice")));
        }
    }
    if !r.is_empty() {
        return Err((r.offset(), "bytes after the last entry".to_owned()));
    }
    Ok(Hint { seq, resume, tables })
}

/// The bytes of the hint file `path`.
pub(crate) fn read(vfs: &dyn Vfs, path: &Path) -> Result<Vec<u8>> {
    let file = vfs.open(path, OpenMode::ReadOnly).map_err(|e| Error::io("opening", path, e))?;
    let len = file.size().map_err(|e| Error::io("measuring", path, e))?;
    let len = usize::try_from(len).map_err(|_| Error::corrupt(path, 0, "the hint is too large"))?;
    let mut bytes = vec![0; len];
    file.read_exact_at(&mut bytes, 0).map_err(|e| Error::io("reading", path, e))?;
    Ok(bytes)
}

/// The resume point of a hint's bytes, if its checksum and magic hold, without decoding its
/// entries: recovery checks it against the log before anything else.
pub(crate) fn resume_point(bytes: &[u8]) -> Option<(u32, u64)> {
    let body = bytes.get(..bytes.len().checked_sub(4)?)?;
    let crc = bytes.get(body.len()..)?;
    if u32::from_le_bytes(crc.try_into().ok()?) != crc32c::crc32c(body) || body.get(..8)? != MAGIC {
        return None;
    }
    let mut r = Reader::new(body.get(16..)?, 16);
    Some((r.u32().ok()?, r.u64().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hint resuming at `resume` with one entry of table 1: value at `offset`, `len` bytes,
    /// in a record starting 10 bytes before it.
    fn hint_bytes(resume: (u32, u64), segment: u32, offset: u64, len: u32) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&5u64.to_le_bytes());
        out.extend_from_slice(&resume.0.to_le_bytes());
        out.extend_from_slice(&resume.1.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&1u64.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.push(b'k');
        out.extend_from_slice(&segment.to_le_bytes());
        out.extend_from_slice(&Loc::new(segment, offset - 10, offset, len, 4).packed_offsets().to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&4u64.to_le_bytes());
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    #[test]
    fn entries_after_the_resume_point_make_the_hint_unusable() {
        // Found by the recovery fuzz target: a hint (checksum intact) resuming inside its own
        // entries made recovery cut them off as a torn tail, and the next open failed.
        let segment_len = |id: u32| (id <= 2).then_some(4096);
        let hint =
            decode(&hint_bytes((2, 100), 2, 80, 20), &segment_len).expect("entry ends at the resume point");
        assert_eq!((hint.seq, hint.resume, hint.tables[&1].len()), (5, (2, 100), 1));
        decode(&hint_bytes((2, 100), 1, 4000, 96), &segment_len).expect("entry in an earlier segment");
        for (segment, offset, len) in [(2, 80, 21), (2, 100, 0), (2, 4000, 1)] {
            let (_, reason) = decode(&hint_bytes((1, 4096), segment, offset, len), &segment_len)
                .expect_err("entry after the resume point");
            assert!(reason.contains("after the resume point"), "{reason}");
        }
        let (_, reason) = decode(&hint_bytes((2, 100), 2, 90, 11), &segment_len).expect_err("accepted");
        assert!(reason.contains("after the resume point"), "{reason}");
    }
}
