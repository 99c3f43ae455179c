//! The read side: values borrowed from mapped segments, and snapshots of the index.

use std::collections::VecDeque;
use std::fmt;
use std::ops::{Bound, Deref, RangeBounds};
use std::sync::Arc;

use super::error::{Error, Result};
use super::index::{IndexKey, Loc, Version};
use super::record::{self, Kind, Next};
use super::segment::Segment;
use super::table_map;
use super::Table;

/// The value at `loc` of `segment`, the newest of `key` in table `table` of `version`.
/// With `verify` (`Options::verify_reads`), the record holding it is decoded and checked
/// first: its CRC-32C (header, key, value), and that it is the put of this table, key,
/// sequence number and length. Any difference is [`Error::Corrupt`] naming the file, the
/// record's offset, the table and the key: the bytes are never handed out. One pass over
/// the record's bytes, no allocation unless it fails.
#[inline(always)]
pub(crate) fn checked_value<'s>(
    version: &Version,
    segment: &'s Segment,
    table: u32,
    key: &[u8],
    loc: &Loc,
    verify: bool,
) -> Result<&'s [u8]> {
    if !verify {
        return segment.bytes(loc.offset(), loc.len as usize).ok_or_else(|| {
            damaged(version, segment, table, key, loc.offset(), "the value lies past the written log")
        });
    }
    let start = loc.record();
    let Some(bytes) = segment.bytes(start, (loc.end() - start) as usize) else {
        return Err(damaged(version, segment, table, key, start, "the record lies past the written log"));
    };
    match record::decode(bytes, start, 0) {
        Next::Record(d)
            if d.kind == Kind::Put
                && d.table == table
                && d.seq == loc.seq
                && d.end == bytes.len()
                && d.value_len == loc.len as usize
                && bytes.get(d.key..d.key + d.key_len) == Some(key) =>
        {
            Ok(&bytes[d.value..])
        }
        Next::Record(_) => Err(damaged(
            version,
            segment,
            table,
            key,
            start,
            "the record there is not the one the index points at (another kind, table, key, batch or length)",
        )),
        Next::End => Err(damaged(version, segment, table, key, start, "no record starts there")),
        Next::Bad(reason) => Err(damaged(version, segment, table, key, start, &reason)),
    }
}

/// The error for a value whose record fails [`checked_value`]'s checks.
#[cold]
#[inline(never)]
fn damaged(version: &Version, segment: &Segment, table: u32, key: &[u8], offset: u64, reason: &str) -> Error {
    let name = version.table(table).map_or_else(|| format!("id {table}"), |t| format!("`{}`", t.name));
    let key = key.escape_ascii();
    Error::corrupt(segment.path(), offset, format!("the record of key \"{key}\" in table {name}: {reason}"))
}

/// A value, read in place from its memory-mapped segment. It holds the segment, so it stays
/// valid after the key is overwritten, the segment compacted or the file deleted. Values of
/// tables written with [`ValueAlign::Sixteen`](super::ValueAlign::Sixteen) start at a
/// 16-byte-aligned address.
#[derive(Clone)]
pub struct Value {
    segment: Arc<Segment>,
    offset: u64,
    len: usize,
}

impl Value {
    /// The value at `loc` of `segment`.
    #[inline]
    pub(crate) fn new(segment: &Arc<Segment>, loc: &Loc) -> Value {
        Value { segment: Arc::clone(segment), offset: loc.offset(), len: loc.len as usize }
    }

    /// The id of the segment holding the value.
    pub fn segment_id(&self) -> u32 {
        self.segment.id()
    }
}

impl Deref for Value {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        // Index entries are checked against the segment when they are made (appended,
        // recovered, or read from a hint), so this is never empty for a real value.
        self.segment.bytes(self.offset, self.len).unwrap_or(&[])
    }
}

impl AsRef<[u8]> for Value {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value").field("segment", &self.segment.id()).field("len", &self.len).finish()
    }
}

/// A consistent view of every table at one commit. Taking one is a reference count
/// increment; holding one costs nothing to writers (they copy the index paths they change).
#[derive(Clone)]
pub struct Snapshot {
    pub(crate) version: Arc<Version>,
    /// Whether reads check each record's CRC (`Options::verify_reads`).
    pub(crate) verify: bool,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot").field("seq", &self.version.seq).finish()
    }
}

impl Snapshot {
    /// The value under `key` in `table`, borrowed from the snapshot: no reference count is
    /// touched, so concurrent readers share nothing. A record that fails its CRC-32C (unless
    /// [`Options::verify_reads`](super::Options::verify_reads) is off) is
    /// [`Error::Corrupt`].
    #[inline]
    pub fn get(&self, table: &Table, key: &[u8]) -> Result<Option<&[u8]>> {
        self.get_by_id(table.id, key)
    }

    /// [`get`](Self::get) by table id.
    #[inline]
    pub(crate) fn get_by_id(&self, table: u32, key: &[u8]) -> Result<Option<&[u8]>> {
        let Some((segment, loc)) = self.version.lookup(table, key) else { return Ok(None) };
        checked_value(&self.version, segment, table, key, &loc, self.verify).map(Some)
    }

    /// The value under `key` in `table`, as a [`Value`] that outlives the snapshot; checked
    /// as [`get`](Self::get) checks it.
    pub fn get_value(&self, table: &Table, key: &[u8]) -> Result<Option<Value>> {
        let Some((segment, loc)) = self.version.lookup(table.id, key) else { return Ok(None) };
        checked_value(&self.version, segment, table.id, key, &loc, self.verify)?;
        Ok(Some(Value::new(segment, &loc)))
    }

    /// The table `name`, if it exists in this snapshot.
    pub fn find_table(&self, name: &str) -> Option<Table> {
        self.version.names.get(name).map(|&id| Table::from_parts(id, Arc::from(name)))
    }

    /// Whether a table with this id exists in this snapshot.
    pub(crate) fn has_table_id(&self, id: u32) -> bool {
        self.version.tables.contains_key(&id)
    }

    /// Whether `table` holds `key`.
    pub fn contains_key(&self, table: &Table, key: &[u8]) -> bool {
        self.version.table(table.id).is_some_and(|t| t.map.contains_key(key))
    }

    /// Number of keys in `table` (0 if it does not exist in this snapshot).
    pub fn len(&self, table: &Table) -> usize {
        self.version.table(table.id).map_or(0, |t| t.map.len())
    }

    /// Whether `table` has no key in this snapshot.
    pub fn is_empty(&self, table: &Table) -> bool {
        self.len(table) == 0
    }

    /// Entries of `table` with keys within `range`, in key order, borrowed from the snapshot.
    /// Each value is checked as [`get`](Self::get) checks it: an entry whose record is
    /// damaged is an `Err` (and the iterator goes on with the next key).
    pub fn range<'s, 'k>(&'s self, table: &Table, range: impl RangeBounds<&'k [u8]>) -> Range<'s> {
        let (lower, upper) = (range.start_bound().map(|k| *k), range.end_bound().map(|k| *k));
        self.range_by_id(table.id, lower, upper)
    }

    /// [`range`](Self::range) by table id.
    pub(crate) fn range_by_id<'s>(
        &'s self,
        table: u32,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> Range<'s> {
        let iter = match self.version.table(table) {
            Some(t) if !is_empty_range(lower, upper) => Some(t.map.range(lower, upper)),
            _ => None,
        };
        Range { iter, version: &self.version, table, verify: self.verify, segment: None }
    }

    /// Like [`range`](Self::range), but the iterator owns the snapshot (and copies no key:
    /// keys are shared with the index). Values are checked as [`get`](Self::get) checks
    /// them.
    pub fn into_range<'k>(self, table: &Table, range: impl RangeBounds<&'k [u8]>) -> OwnedRange {
        OwnedRange {
            snapshot: self,
            table: table.id,
            lower: range.start_bound().map(|k| IndexKey::new(k)),
            upper: range.end_bound().map(|k| IndexKey::new(k)),
            buffer: VecDeque::new(),
            chunk: 8,
            done: false,
        }
    }
}

/// Whether no key can lie within the bounds.
fn is_empty_range(lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> bool {
    match (lower, upper) {
        (Bound::Included(l), Bound::Included(u)) => l > u,
        (Bound::Included(l) | Bound::Excluded(l), Bound::Included(u) | Bound::Excluded(u)) => l >= u,
        _ => false,
    }
}

/// Entries of a [`Snapshot::range`]: keys and values borrowed from the snapshot.
pub struct Range<'s> {
    iter: Option<table_map::Iter<'s>>,
    version: &'s Version,
    table: u32,
    verify: bool,
    /// The segment of the last entry: neighbours in key order mostly share one (a bulk
    /// load, or a batch written in key order), which saves a lookup in the segment map per
    /// entry.
    segment: Option<&'s Segment>,
}

impl<'s> Iterator for Range<'s> {
    /// Key and value, both borrowed from the snapshot, or why the value's record is not
    /// what was written.
    type Item = Result<(&'s [u8], &'s [u8])>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (key, loc) = self.iter.as_mut()?.next()?;
            let segment = match self.segment {
                Some(segment) if segment.id() == loc.segment => segment,
                _ => {
                    // Every index entry's segment is in the same version; skip rather than panic.
                    let Some(segment) = self.version.segments.get(&loc.segment) else { continue };
                    self.segment = Some(segment);
                    segment
                }
            };
            let key = key.as_bytes();
            return Some(
                checked_value(self.version, segment, self.table, key, loc, self.verify)
                    .map(|value| (key, value)),
            );
        }
    }
}

/// A key yielded by an [`OwnedRange`]: inline when short, shared with the index otherwise.
#[derive(Clone)]
pub struct Key(IndexKey);

impl Deref for Key {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Entries of a [`Snapshot::into_range`]: the iterator owns its snapshot. It reads ahead a
/// few entries at a time (a growing chunk), so short scans stay cheap and long ones pay one
/// index descent per chunk.
pub struct OwnedRange {
    snapshot: Snapshot,
    table: u32,
    lower: Bound<IndexKey>,
    upper: Bound<IndexKey>,
    buffer: VecDeque<Result<(IndexKey, Value)>>,
    chunk: usize,
    done: bool,
}

impl OwnedRange {
    fn refill(&mut self) {
        let version = &self.snapshot.version;
        let Some(table) = version.table(self.table) else {
            self.done = true;
            return;
        };
        let lower = match &self.lower {
            Bound::Included(k) => Bound::Included(k.as_bytes()),
            Bound::Excluded(k) => Bound::Excluded(k.as_bytes()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let upper = match &self.upper {
            Bound::Included(k) => Bound::Included(k.as_bytes()),
            Bound::Excluded(k) => Bound::Excluded(k.as_bytes()),
            Bound::Unbounded => Bound::Unbounded,
        };
        if is_empty_range(lower, upper) {
            self.done = true;
            return;
        }
        let mut last = None;
        for (key, loc) in table.map.range(lower, upper).take(self.chunk) {
            if let Some(segment) = version.segments.get(&loc.segment) {
                let checked =
                    checked_value(version, segment, self.table, key.as_bytes(), loc, self.snapshot.verify);
                self.buffer.push_back(checked.map(|_| (key.clone(), Value::new(segment, loc))));
            }
            last = Some(key.clone());
        }
        match last {
            Some(key) => self.lower = Bound::Excluded(key),
            None => self.done = true,
        }
        self.chunk = (self.chunk * 2).min(256);
    }
}

impl Iterator for OwnedRange {
    /// The key and the value, or why the value's record is not what was written.
    type Item = Result<(Key, Value)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffer.is_empty() && !self.done {
            self.refill();
        }
        self.buffer.pop_front().map(|entry| entry.map(|(k, v)| (Key(k), v)))
    }
}
