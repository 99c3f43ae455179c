//! A segment: one append-only file of records, mapped into memory for reads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::io::Mapping;

/// File name of segment `id`.
pub(crate) fn file_name(id: u32) -> String {
    format!("seg-{id:010}.tkv")
}

/// The segment id in a segment file name.
pub(crate) fn parse_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".tkv")?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A mapped segment. Bytes below [`written`](Self::written) are whole records (or the file
/// header) and never change again; readers only ever see those.
#[derive(Debug)]
pub(crate) struct Segment {
    id: u32,
    path: PathBuf,
    map: Mapping,
    written: AtomicU64,
    /// Bytes known durable: an `fdatasync` of the file completed after they were written.
    /// Commit records carry it as their sync watermark (`docs/design.md` §5).
    synced: AtomicU64,
}

impl Segment {
    /// A segment whose first `written` bytes are readable through `map`.
    pub(crate) fn new(id: u32, path: PathBuf, map: Mapping, written: u64) -> Arc<Self> {
        let written = written.min(map.len() as u64);
        Arc::new(Segment { id, path, map, written: AtomicU64::new(written), synced: AtomicU64::new(0) })
    }

    /// The segment's id.
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// Its file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written and readable.
    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Bytes known durable (see [`mark_synced`](Self::mark_synced)).
    pub(crate) fn synced(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }

    /// Records that the first `len` bytes are durable: call after an `fdatasync` that began
    /// once they were written. Never lowers the mark.
    pub(crate) fn mark_synced(&self, len: u64) {
        self.synced.fetch_max(len, Ordering::AcqRel);
    }

    /// How many bytes the mapping can hold.
    pub(crate) fn capacity(&self) -> u64 {
        self.map.len() as u64
    }

    /// Marks bytes up to `len` as written: the writer calls this after they reached the file.
    pub(crate) fn set_written(&self, len: u64) {
        debug_assert!(len <= self.capacity() && len >= self.written());
        self.written.store(len.min(self.capacity()), Ordering::Release);
    }

    /// Lowers the written length: recovery only, before anyone can read the segment.
    pub(crate) fn truncate_written(&self, len: u64) {
        self.written.store(len.min(self.written()), Ordering::Release);
    }

    /// `len` bytes at `offset`, if they lie within the written part.
    #[inline]
    pub(crate) fn bytes(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let end = offset.checked_add(len as u64)?;
        if end > self.written() {
            return None;
        }
        // SAFETY: `offset..end` lies within the mapping (`written <= map.len()`), so the
        // pointer arithmetic stays inside one allocation. Those bytes were written to the
        // file before `written` was raised past them (release/acquire), lie below the file's
        // end, and are never written again: segments are append-only; recovery cuts a torn
        // tail only after lowering `written` below it, when its own scan borrows are gone and
        // before any reader can see the segment; files are
        // unlinked, never truncated, once readers may map them. The mapping lives as long
        // as `self`, which the returned borrow cannot outlive.
        Some(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(offset as usize), len) })
    }

    /// Everything written so far.
    pub(crate) fn written_bytes(&self) -> &[u8] {
        let written = self.written();
        self.bytes(0, written as usize).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_strangers_are_ignored() {
        assert_eq!(parse_file_name(&file_name(0)), Some(0));
        assert_eq!(parse_file_name(&file_name(u32::MAX)), Some(u32::MAX));
        for stranger in
            ["seg-1.tkv", "seg-00000000001.tkv", "seg-000000000x.tkv", "hint-0000000001.tkv", "LOCK"]
        {
            assert_eq!(parse_file_name(stranger), None, "{stranger}");
        }
    }
}
