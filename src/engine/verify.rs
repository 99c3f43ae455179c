//! [`Db::verify`]: re-reads every record of every segment and checks it against its CRC,
//! then checks that every key of the index points at a record that holds its value.
//!
//! Opening a store replays only the log written after the last hint (index snapshot), so a
//! byte that rots in an older part of a segment goes unnoticed until a read returns it:
//! this is the check that finds it. It reads the mapped segments of one snapshot and never
//! writes, so it runs while writers go on (records they append later are not looked at).
//!
//! It also checks the files themselves: every segment of the snapshot must still exist, a
//! sealed one with exactly its length (the newest at least its), and `tables.tkv` must list
//! each, so a file deleted or cut while the store is open is reported before a reopen
//! refuses it.
//!
//! Every problem names its file and offset, and the live keys whose values lie in the damaged
//! bytes. When a record's checksum fails but its framing (header lengths) still leads to a
//! good record, only that record is damaged; when the framing itself is broken, the rest of
//! its segment cannot be read record by record, and every live key stored there is named.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::index::Version;
use super::io::OpenMode;
use super::record::{self, Kind, Next, SegmentHeader, SEGMENT_HEADER_LEN};
use super::segment::Segment;
use super::{tables, Db};

/// What [`Db::verify`] read and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Segment files read.
    pub segments: usize,
    /// Records whose checksum matched.
    pub records: u64,
    /// Bytes of log read (segment headers included).
    pub bytes: u64,
    /// Keys of the index checked against the records they point at.
    pub keys: u64,
    /// Everything wrong, in file order.
    pub problems: Vec<VerifyProblem>,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One damaged spot of the log, or an index entry that does not match the log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyProblem {
    /// The segment file.
    pub path: PathBuf,
    /// File offset where the damage starts (for an index entry: of the value it points at).
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
    /// Live keys whose values lie in the damaged bytes, as (table name, key). Empty when the
    /// damage hit only records that are no longer live (overwritten or deleted keys), which
    /// a reopen without a hint would still refuse.
    pub keys: Vec<(String, Arc<[u8]>)>,
}

/// How often progress is reported, in bytes of log read.
const PROGRESS_EVERY: u64 = 4 << 20;

impl Db {
    /// Re-reads every record of every segment, checks each CRC, and checks every key of the
    /// index against the record it points at. Reads only; see the module documentation.
    ///
    /// ```
    /// use typed_kv::engine::{Db, Op, Options, ValueAlign};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let db = Db::open(dir.path(), Options::default())?;
    /// let t = db.table("t")?;
    /// db.write(&[Op::Put { table: &t, key: b"k", value: b"v", align: ValueAlign::Packed }])?;
    /// let report = db.verify();
    /// assert!(report.is_ok(), "{:?}", report.problems);
    /// assert_eq!((report.records, report.keys), (1, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn verify(&self) -> VerifyReport {
        self.verify_with_progress(|_, _| {})
    }

    /// [`verify`](Self::verify), calling `progress(bytes_read, bytes_total)` every few MiB.
    pub fn verify_with_progress(&self, mut progress: impl FnMut(u64, u64)) -> VerifyReport {
        let version = self.inner.current.load_full();
        let total: u64 = version.segments.values().map(|s| s.written()).sum();
        let mut report = VerifyReport::default();
        let mut scans = HashMap::new();
        let mut reported = 0;
        for segment in version.segments.values() {
            let scan = scan_segment(segment, &mut report);
            if report.bytes - reported >= PROGRESS_EVERY {
                reported = report.bytes;
                progress(report.bytes, total);
            }
            scans.insert(segment.id(), scan);
        }
        check_index(&version, &scans, &mut report);
        self.check_files(&mut report);
        progress(report.bytes, total);
        report
    }

    /// Checks the segment files against the version and the manifest: each file exists, a
    /// sealed one has exactly its written length, the newest at least its, and the manifest
    /// lists each. Compaction (the only thing that removes segments) waits meanwhile, so a
    /// version loaded now names files that still exist.
    fn check_files(&self, report: &mut VerifyReport) {
        let inner = &*self.inner;
        let _no_compaction = inner.compaction.lock();
        let version = inner.current.load_full();
        let vfs = &*inner.options.vfs;
        let newest = version.segments.keys().next_back().copied();
        let mut problem = |path: PathBuf, offset: u64, reason: String| {
            report.problems.push(VerifyProblem { path, offset, reason, keys: Vec::new() });
        };
        let manifest = match tables::read(vfs, &inner.dir) {
            Ok(Some(tables)) => tables.files,
            Ok(None) => None,
            Err(e) => {
                problem(inner.dir.join(tables::FILE), 0, e.to_string());
                return;
            }
        };
        let Some(files) = manifest else {
            let reason = "the table directory and manifest is missing or lists no segment".to_owned();
            problem(inner.dir.join(tables::FILE), 0, reason);
            return;
        };
        for segment in version.segments.values() {
            let (path, written) = (segment.path(), segment.written());
            let sealed = Some(segment.id()) != newest;
            match vfs.open(path, OpenMode::ReadOnly).and_then(|file| file.size()) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let reason =
                        "the segment file is missing (its mapping still reads until the store closes)";
                    problem(path.to_owned(), 0, reason.to_owned());
                }
                Err(e) => problem(path.to_owned(), 0, format!("the segment file cannot be measured: {e}")),
                Ok(len) if len < written || (sealed && len > written) => {
                    let reason = format!("the segment file is {len} bytes; its log holds {written}");
                    problem(path.to_owned(), len.min(written), reason);
                }
                Ok(_) => {}
            }
            let listed = if segment.id() == files.active {
                Some(None)
            } else {
                files.sealed_len(segment.id()).map(Some)
            };
            match listed {
                None => problem(path.to_owned(), 0, format!("{} does not list the segment", tables::FILE)),
                Some(Some(len)) if sealed && len != written => {
                    let reason =
                        format!("{} lists the segment at {len} bytes; its log holds {written}", tables::FILE);
                    problem(path.to_owned(), len.min(written), reason);
                }
                Some(_) => {}
            }
        }
    }
}

/// What scanning one segment found: where the good values lie and which bytes are damaged.
#[derive(Default)]
struct SegmentScan {
    /// (value offset, value length) of every good `Put` record, in file order.
    values: Vec<(u64, u32)>,
    /// Damaged byte ranges, in file order, with the index of their problem in the report.
    damaged: Vec<(u64, u64, usize)>,
}

impl SegmentScan {
    /// The problem whose damaged range holds `offset`.
    fn damage_at(&self, offset: u64) -> Option<usize> {
        let i = self.damaged.partition_point(|&(start, _, _)| start <= offset);
        let (_, end, problem) = *self.damaged.get(i.checked_sub(1)?)?;
        (offset < end).then_some(problem)
    }

    /// Whether a good record's value lies exactly at `offset` with `len` bytes.
    fn holds_value(&self, offset: u64, len: u32) -> bool {
        self.values.binary_search_by_key(&offset, |&(o, _)| o).is_ok_and(|i| self.values[i].1 == len)
    }
}

fn scan_segment(segment: &Segment, report: &mut VerifyReport) -> SegmentScan {
    let bytes = segment.written_bytes();
    let mut scan = SegmentScan::default();
    report.segments += 1;
    report.bytes += bytes.len() as u64;
    let problem = |report: &mut VerifyReport, scan: &mut SegmentScan, start: usize, end: usize, reason| {
        scan.damaged.push((start as u64, end as u64, report.problems.len()));
        report.problems.push(VerifyProblem {
            path: segment.path().to_owned(),
            offset: start as u64,
            reason,
            keys: Vec::new(),
        });
    };
    match SegmentHeader::decode(bytes) {
        Ok(header) if header.id == segment.id() => {}
        Ok(header) => {
            let reason = format!("the header says segment {}, the file name {}", header.id, segment.id());
            problem(report, &mut scan, 0, SEGMENT_HEADER_LEN, reason);
        }
        Err(reason) => problem(report, &mut scan, 0, SEGMENT_HEADER_LEN, reason),
    }
    let mut pos = SEGMENT_HEADER_LEN;
    while pos < bytes.len() {
        match record::decode(bytes, 0, pos) {
            Next::Record(d) => {
                report.records += 1;
                if d.kind == Kind::Put {
                    scan.values.push((d.value as u64, d.value_len as u32));
                }
                pos = d.end;
            }
            Next::End => {
                if let Some(garbage) = bytes[pos..].iter().position(|&b| b != 0) {
                    let at = pos + garbage;
                    problem(report, &mut scan, at, bytes.len(), "bytes after the end of the log".to_owned());
                }
                break;
            }
            Next::Bad(reason) => match framed_end(bytes, pos) {
                Some(end) if resumes(bytes, end) => {
                    problem(report, &mut scan, pos, end, format!("record: {reason}"));
                    pos = end;
                }
                _ => {
                    let reason = format!(
                        "record: {reason}; its header is damaged too, so the remaining {} bytes of the \
                         segment cannot be read record by record",
                        bytes.len() - pos
                    );
                    problem(report, &mut scan, pos, bytes.len(), reason);
                    break;
                }
            },
        }
    }
    scan
}

/// Whether the log reads on at `offset`: a good record, its end, or the segment's end.
fn resumes(bytes: &[u8], offset: usize) -> bool {
    offset == bytes.len() || matches!(record::decode(bytes, 0, offset), Next::Record(_) | Next::End)
}

/// Where the record at `offset` ends according to its header alone (checksum not checked),
/// if the header is well formed and the record fits in `bytes`.
fn framed_end(bytes: &[u8], offset: usize) -> Option<usize> {
    record::frame(bytes, 0, offset).ok().map(|framed| framed.record.end)
}

/// Checks every key of the index against the scans: its value must be a good record's, and a
/// key whose value lies in damaged bytes is named in that problem.
fn check_index(version: &Version, scans: &HashMap<u32, SegmentScan>, report: &mut VerifyReport) {
    for table in version.tables.values() {
        for (key, loc) in table.map.iter() {
            report.keys += 1;
            let segment = version.segments.get(&loc.segment);
            let (Some(segment), Some(scan)) = (segment, scans.get(&loc.segment)) else {
                report.problems.push(VerifyProblem {
                    path: PathBuf::from(super::segment::file_name(loc.segment)),
                    offset: loc.offset(),
                    reason: format!("the index points at segment {}, which is not in the log", loc.segment),
                    keys: vec![(table.name.to_string(), Arc::from(key.as_bytes()))],
                });
                continue;
            };
            if let Some(problem) = scan.damage_at(loc.offset()) {
                report.problems[problem].keys.push((table.name.to_string(), Arc::from(key.as_bytes())));
            } else if !scan.holds_value(loc.offset(), loc.len) {
                report.problems.push(VerifyProblem {
                    path: segment.path().to_owned(),
                    offset: loc.offset(),
                    reason: format!("the index points at a value of {} bytes that no record holds", loc.len),
                    keys: vec![(table.name.to_string(), Arc::from(key.as_bytes()))],
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Op, Options, ValueAlign};

    fn store(dir: &std::path::Path) -> Db {
        let db = Db::open(dir, Options { compaction_threshold: 0.0, ..Options::default() }).unwrap();
        let t = db.table("t").unwrap();
        for i in 0..20u32 {
            let value = vec![i as u8; 40];
            let align = if i % 2 == 0 { ValueAlign::Sixteen } else { ValueAlign::Packed };
            db.write(&[Op::Put { table: &t, key: &i.to_be_bytes(), value: &value, align }]).unwrap();
        }
        db
    }

    /// The file offset of the value of key `i`.
    fn value_offset(db: &Db, i: u32) -> u64 {
        let t = db.find_table("t").unwrap();
        let version = db.inner.current.load_full();
        version.lookup(t.id(), &i.to_be_bytes()).map(|(_, loc)| loc.offset()).unwrap()
    }

    #[test]
    fn a_clean_log_has_no_problem() {
        let dir = tempfile::tempdir().unwrap();
        let db = store(dir.path());
        let report = db.verify();
        assert!(report.is_ok(), "{:?}", report.problems);
        assert_eq!((report.records, report.keys, report.segments), (20, 20, 1));
    }

    #[test]
    fn a_flipped_value_byte_names_its_record_and_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let offset = {
            let db = store(dir.path());
            value_offset(&db, 7)
        };
        let path = dir.path().join(super::super::segment::file_name(1));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[offset as usize + 3] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        // The hint written at close covers the damaged batch, so opening does not notice.
        let db = Db::open(dir.path(), Options::default()).unwrap();
        let report = db.verify();
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        let problem = &report.problems[0];
        assert_eq!(problem.path, path);
        assert!(problem.offset < offset, "the record starts before its value");
        assert!(problem.reason.contains("checksum mismatch"), "{}", problem.reason);
        assert_eq!(problem.keys, vec![("t".to_owned(), Arc::from(&7u32.to_be_bytes()[..]))]);
        assert_eq!(report.records, 19, "every other record still reads");
    }

    #[test]
    fn a_broken_header_names_every_key_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let offset = {
            let db = store(dir.path());
            value_offset(&db, 17)
        };
        let path = dir.path().join(super::super::segment::file_name(1));
        let mut bytes = std::fs::read(&path).unwrap();
        // Find the record start of key 17 (its key lies just before the value) and break its
        // kind byte, so that its framing cannot be read.
        let key_at = bytes[..offset as usize].windows(4).rposition(|w| w == 17u32.to_be_bytes()).unwrap();
        let start =
            (0..key_at).rev().find(|&s| matches!(record::decode(&bytes, 0, s), Next::Record(_))).unwrap();
        bytes[start + 4] = 0x0f;
        std::fs::write(&path, &bytes).unwrap();
        let db = Db::open(dir.path(), Options::default()).unwrap();
        let report = db.verify();
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        let keys: Vec<u32> = report.problems[0]
            .keys
            .iter()
            .map(|(_, k)| u32::from_be_bytes(k[..].try_into().unwrap()))
            .collect();
        assert_eq!(keys, vec![17, 18, 19]);
    }
}
