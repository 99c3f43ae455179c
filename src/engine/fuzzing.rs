//! Thin wrappers over the engine's byte decoders, for the fuzz targets in `fuzz/` and the
//! test that replays their corpora (`tests/fuzz_corpus.rs`). Cargo feature `fuzzing` only:
//! not an API, no stability promised.

use std::ops::Range;

use super::record::{self, Kind, Next, RecordRef, SegmentHeader};
use super::{hint, segment, tables};

/// Length of a segment file header.
pub const SEGMENT_HEADER_LEN: usize = record::SEGMENT_HEADER_LEN;
/// File name of the table directory.
pub const TABLES_FILE: &str = tables::FILE;

/// File name of segment `id`.
pub fn segment_file_name(id: u32) -> String {
    segment::file_name(id)
}

/// File name of the hint covering sequence number `seq`.
pub fn hint_file_name(seq: u64) -> String {
    hint::file_name(seq)
}

/// A decoded record: kind 1 put, 2 tombstone, 3 clear; ranges index the decoded bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: u8,
    pub commit: bool,
    pub aligned: bool,
    pub seq: u64,
    pub table: u32,
    pub key: Range<usize>,
    pub value: Range<usize>,
    pub end: usize,
    pub watermark: Option<u64>,
}

/// [`record::decode`]: `Ok(None)` at the end of the log, `Err` for bad bytes.
pub fn decode_record(bytes: &[u8], base: u64, offset: usize) -> Result<Option<Record>, String> {
    match record::decode(bytes, base, offset) {
        Next::Record(d) => Ok(Some(Record {
            kind: d.kind as u8,
            commit: d.commit,
            aligned: d.aligned,
            seq: d.seq,
            table: d.table,
            key: d.key..d.key + d.key_len,
            value: d.value..d.value + d.value_len,
            end: d.end,
            watermark: d.watermark,
        })),
        Next::End => Ok(None),
        Next::Bad(reason) => Err(reason),
    }
}

/// [`record::encode`] of one record (kind as in [`Record`]; a watermark only with `commit`);
/// returns the offset past it.
/// Panics on an unknown kind: callers pass kinds that [`decode_record`] returned.
#[allow(clippy::too_many_arguments)] // one argument per record field
pub fn encode_record(
    out: &mut Vec<u8>,
    base: u64,
    kind: u8,
    commit: bool,
    aligned: bool,
    seq: u64,
    table: u32,
    key: &[u8],
    value: &[u8],
    watermark: Option<u64>,
) -> usize {
    let kind = match kind {
        1 => Kind::Put,
        2 => Kind::Tombstone,
        3 => Kind::Clear,
        _ => panic!("unknown record kind {kind}"),
    };
    let record = RecordRef { kind, commit, aligned, seq, table, key, value, watermark };
    record::encode(out, base, &record).end
}

/// [`SegmentHeader::decode`]: the segment id and first sequence number.
pub fn decode_segment_header(bytes: &[u8]) -> Result<(u32, u64), String> {
    SegmentHeader::decode(bytes).map(|h| (h.id, h.first_seq))
}

/// [`SegmentHeader::encode`].
pub fn encode_segment_header(id: u32, first_seq: u64) -> [u8; SEGMENT_HEADER_LEN] {
    SegmentHeader { id, first_seq }.encode()
}

/// One index entry of a hint: table, key, and where the value lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HintEntry {
    pub table: u32,
    pub key: Vec<u8>,
    pub segment: u32,
    pub offset: u64,
    pub len: u32,
    pub seq: u64,
}

/// A decoded hint: its sequence number, resume point and entries in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    pub seq: u64,
    pub resume: (u32, u64),
    pub tables: Vec<u32>,
    pub entries: Vec<HintEntry>,
}

/// [`hint::decode`], with `segment_len` giving the written length of each existing segment.
pub fn decode_hint(bytes: &[u8], segment_len: &dyn Fn(u32) -> Option<u64>) -> Result<Hint, (u64, String)> {
    let hint = hint::decode(bytes, segment_len)?;
    let mut entries = Vec::new();
    for (&table, map) in &hint.tables {
        for (key, loc) in map.iter() {
            entries.push(HintEntry {
                table,
                key: key.as_bytes().to_vec(),
                segment: loc.segment,
                offset: loc.offset(),
                len: loc.len,
                seq: loc.seq,
            });
        }
    }
    Ok(Hint { seq: hint.seq, resume: hint.resume, tables: hint.tables.keys().copied().collect(), entries })
}

/// Every table of a table directory: (id, name).
pub type TableList = Vec<(u32, String)>;

/// The segment files of a format-2 table directory: (sealed id, length) and the active id.
pub type FileList = (Vec<(u32, u64)>, u32);

/// [`tables::TableDir::decode`]: the next table id, every table, and the segment files
/// (`None` in format 1).
pub fn decode_table_dir(bytes: &[u8]) -> Result<(u32, TableList, Option<FileList>), (u64, String)> {
    tables::TableDir::decode(bytes)
        .map(|dir| (dir.next_id, dir.tables, dir.files.map(|files| (files.sealed, files.active))))
}

/// [`tables::TableDir::encode`]: format 2 with `files`, else format 1 (an older build's).
pub fn encode_table_dir(next_id: u32, tables: TableList, files: Option<FileList>) -> Vec<u8> {
    let files = files.map(|(sealed, active)| tables::FileSet { sealed, active });
    tables::TableDir { next_id, tables, files }.encode()
}
