//! The table directory and manifest: which tables exist, by name and id, and which segment
//! files the store must hold (each sealed one with its exact length). A small file replaced
//! atomically (written aside, synced, renamed, directory synced) whenever a table is created
//! or dropped and whenever the set of segments changes (rotation, compaction). Layout in
//! `docs/design.md` §3.
//!
//! Table ids are never reused, so the records of a dropped table are dead by their id alone.

use std::path::Path;

use super::error::{Error, Result};
use super::io::{OpenMode, Vfs};

/// The file's name in the engine's directory.
pub(crate) const FILE: &str = "tables.tkv";
const TMP: &str = "tables.tkv.tmp";
/// Format 2: tables, then the segment files.
const MAGIC: [u8; 8] = *b"TKVTBL\0\x02";
/// Format 1 (older builds): tables only. Read, and replaced by format 2 on open.
const MAGIC_V1: [u8; 8] = *b"TKVTBL\0\x01";
/// Longest table name, in bytes.
pub const MAX_TABLE_NAME_LEN: usize = 1024;

/// The tables that exist, and the segment files that must.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableDir {
    /// The id the next created table gets.
    pub(crate) next_id: u32,
    /// Id and name of every table.
    pub(crate) tables: Vec<(u32, String)>,
    /// The segment files; `None` in a format-1 file, which did not list them.
    pub(crate) files: Option<FileSet>,
}

impl Default for TableDir {
    /// A new store's: no table, ids from 1, no segment yet.
    fn default() -> Self {
        TableDir { next_id: 1, tables: Vec::new(), files: None }
    }
}

/// The segment files a store holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileSet {
    /// Every sealed segment, by ascending id, with its length (final once sealed).
    pub(crate) sealed: Vec<(u32, u64)>,
    /// The active segment: newer than every sealed one, its length not final.
    pub(crate) active: u32,
}

impl FileSet {
    /// The listed length of sealed segment `id`.
    pub(crate) fn sealed_len(&self, id: u32) -> Option<u64> {
        self.sealed.binary_search_by_key(&id, |&(s, _)| s).ok().map(|i| self.sealed[i].1)
    }

    /// Whether segment `id` is listed.
    pub(crate) fn lists(&self, id: u32) -> bool {
        id == self.active || self.sealed_len(id).is_some()
    }
}

impl TableDir {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.tables.iter().map(|(_, n)| n.len() + 6).sum::<usize>());
        out.extend_from_slice(if self.files.is_some() { &MAGIC } else { &MAGIC_V1 });
        out.extend_from_slice(&self.next_id.to_le_bytes());
        out.extend_from_slice(&(self.tables.len() as u32).to_le_bytes());
        for (id, name) in &self.tables {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
        }
        if let Some(files) = &self.files {
            out.extend_from_slice(&(files.sealed.len() as u32).to_le_bytes());
            for (id, len) in &files.sealed {
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&len.to_le_bytes());
            }
            out.extend_from_slice(&files.active.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads the file's bytes, or says what is wrong with them and where.
    pub(crate) fn decode(bytes: &[u8]) -> Result<TableDir, (u64, String)> {
        if bytes.len() < MAGIC.len() + 12 {
            return Err((0, format!("{} bytes are too few for a table directory", bytes.len())));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) != crc32c::crc32c(body) {
            return Err((body.len() as u64, "checksum mismatch".to_owned()));
        }
        let lists_files = match <[u8; 8]>::try_from(&body[..8]) {
            Ok(MAGIC) => true,
            Ok(MAGIC_V1) => false,
            _ => return Err((0, "not a typed-kv table directory (bad magic or version)".to_owned())),
        };
        let mut reader = super::hint::Reader::new(&body[8..], 8);
        let next_id = reader.u32()?;
        let count = reader.u32()?;
        let mut tables = Vec::new();
        for _ in 0..count {
            let id = reader.u32()?;
            let len = reader.u16()? as usize;
            let at = reader.offset();
            let name = std::str::from_utf8(reader.take(len)?)
                .map_err(|_| (at, "a table name is not UTF-8".to_owned()))?;
            if id >= next_id {
                return Err((at, format!("table id {id} is not below the next id {next_id}")));
            }
            tables.push((id, name.to_owned()));
        }
        let files = if lists_files { Some(decode_files(&mut reader)?) } else { None };
        if !reader.is_empty() {
            return Err((reader.offset(), "bytes after the end".to_owned()));
        }
        Ok(TableDir { next_id, tables, files })
    }
}

/// Reads the segment list of a format-2 file.
fn decode_files(reader: &mut super::hint::Reader<'_>) -> Result<FileSet, (u64, String)> {
    let count = reader.u32()?;
    let mut sealed: Vec<(u32, u64)> = Vec::new();
    for _ in 0..count {
        let at = reader.offset();
        let id = reader.u32()?;
        let len = reader.u64()?;
        if sealed.last().is_some_and(|&(last, _)| last >= id) {
            return Err((at, format!("segment {id} is listed out of order")));
        }
        sealed.push((id, len));
    }
    let at = reader.offset();
    let active = reader.u32()?;
    if sealed.last().is_some_and(|&(last, _)| last >= active) {
        return Err((at, format!("the active segment {active} is not the newest listed")));
    }
    Ok(FileSet { sealed, active })
}

/// Checks a table name.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_TABLE_NAME_LEN {
        "it is longer than 1024 bytes"
    } else {
        return Ok(());
    };
    Err(Error::InvalidTableName { name: name.to_owned(), reason })
}

/// Reads the directory's table file; `None` if there is none yet.
pub(crate) fn read(vfs: &dyn Vfs, dir: &Path) -> Result<Option<TableDir>> {
    let path = dir.join(FILE);
    let file = match vfs.open(&path, OpenMode::ReadOnly) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("opening", path, e)),
    };
    let len = file.size().map_err(|e| Error::io("measuring", &path, e))?;
    if len > (1 << 30) {
        return Err(Error::corrupt(path, 0, format!("a table directory of {len} bytes is implausible")));
    }
    let mut bytes = vec![0; len as usize];
    file.read_exact_at(&mut bytes, 0).map_err(|e| Error::io("reading", &path, e))?;
    TableDir::decode(&bytes).map(Some).map_err(|(offset, reason)| Error::corrupt(path, offset, reason))
}

/// Replaces the table file with `tables`, durably.
pub(crate) fn write(vfs: &dyn Vfs, dir: &Path, tables: &TableDir) -> Result<()> {
    let tmp = dir.join(TMP);
    match vfs.remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("removing", tmp, e)),
    }
    let file = vfs.open(&tmp, OpenMode::CreateNew).map_err(|e| Error::io("creating", &tmp, e))?;
    file.write_all_at(&tables.encode(), 0).map_err(|e| Error::io("writing", &tmp, e))?;
    file.sync_data().map_err(|e| Error::io("syncing", &tmp, e))?;
    let path = dir.join(FILE);
    vfs.rename(&tmp, &path).map_err(|e| Error::io("renaming", &tmp, e))?;
    vfs.sync_dir(dir).map_err(|e| Error::io("syncing directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_every_damage_is_an_error() {
        let files = FileSet { sealed: vec![(2, 4096), (5, 1 << 40)], active: 7 };
        for files in [None, Some(files)] {
            let dir = TableDir { next_id: 5, tables: vec![(1, "a".into()), (4, "ünïcode".into())], files };
            let bytes = dir.encode();
            assert_eq!(TableDir::decode(&bytes), Ok(dir));
            for i in 0..bytes.len() {
                let mut bad = bytes.clone();
                bad[i] ^= 0x08;
                assert!(TableDir::decode(&bad).is_err(), "damage at {i} unnoticed");
            }
            for len in 0..bytes.len() {
                assert!(TableDir::decode(&bytes[..len]).is_err(), "cut at {len} unnoticed");
            }
        }
    }
}
