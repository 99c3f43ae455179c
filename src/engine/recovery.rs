//! Opening: lock the directory, map the segments, load the newest usable hint, replay the
//! log after it, and cut off a torn tail. Rules in `docs/design.md` §4.
//!
//! Replay resolves each key by sequence number, not by position: compaction copies live
//! records (with their original sequence numbers) to the head of the log, so a copy may sit
//! after a newer record of another key, or after a tombstone it predates.

use std::collections::{BTreeMap, HashMap};
use std::fs::TryLockError;
use std::path::Path;
use std::sync::Arc;

use super::error::{Error, Result};
use super::hint;
use super::index::{IndexKey, Loc, TableMap, TableState, Usage, Version, MAX_SEGMENT_LEN};
use super::io::{OpenMode, Vfs, VfsFile};
use super::record::{self, Decoded, Kind, Next, SegmentHeader, SEGMENT_HEADER_LEN};
use super::segment::{self, Segment};
use super::table_map::Entry;
use super::tables::{self, TableDir};
use super::writer::{Active, Placement, Writer};
use super::Options;

/// What the last open found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Whether a hint file (index snapshot) was loaded.
    pub hint_used: bool,
    /// Why the newest hint was not used, if one existed and was rejected.
    pub hint_rejected: Option<String>,
    /// Batches replayed from the log (after the hint).
    pub batches_replayed: u64,
    /// Bytes of log scanned.
    pub bytes_scanned: u64,
    /// Bytes cut off the end of the newest segment after its last whole batch: a torn,
    /// never acknowledged tail (with any preallocated zeros after it). A tail of zeros
    /// alone is unused space, not counted.
    pub torn_tail_bytes: u64,
    /// Damaged batches dropped by [`Options::repair`](super::Options::repair): file, offset
    /// and reason of each.
    pub repaired: Vec<String>,
}

/// The result of opening.
pub(crate) struct Recovered {
    pub(crate) writer: Writer,
    pub(crate) report: RecoveryReport,
    pub(crate) lock: std::fs::File,
}

/// A mapped segment during recovery. Only the newest keeps its file open (it becomes the
/// active segment): a mapping needs no descriptor, and a store may hold more segments than
/// the process may open files.
struct Opened {
    segment: Arc<Segment>,
    file: Option<Arc<dyn VfsFile>>,
}

/// Takes the directory's exclusive lock.
fn lock(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("opening", &path, e))?;
    // A process that forks while this one held the lock keeps the lock's open file (and the
    // lock) until its child calls exec, even though the file is close-on-exec: a reopen right
    // after a close may find it held for that moment. Retry briefly before saying "locked".
    let started = std::time::Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if started.elapsed() < LOCK_RETRY_FOR => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(TryLockError::WouldBlock) => return Err(Error::Locked { path: dir.to_owned() }),
            Err(TryLockError::Error(e)) => return Err(Error::io("locking", path, e)),
        }
    }
}

/// How long [`lock`] retries a held lock: far longer than a fork-to-exec window, short enough
/// that a second process learns at once that the store is in use.
const LOCK_RETRY_FOR: std::time::Duration = std::time::Duration::from_millis(250);

pub(crate) fn open(dir: &Path, options: &Options) -> Result<Recovered> {
    let vfs = &*options.vfs;
    vfs.create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    let lock = lock(dir)?;
    let mut report = RecoveryReport::default();
    let names = vfs.list(dir).map_err(|e| Error::io("listing", dir, e))?;
    let mut segment_ids = Vec::new();
    let mut hints = Vec::new();
    for name in &names {
        if name.ends_with(".tmp") {
            // An interrupted hint or table-directory write: never renamed, never used.
            let _ = vfs.remove_file(&dir.join(name));
        } else if let Some(id) = segment::parse_file_name(name) {
            segment_ids.push(id);
        } else if let Some(seq) = hint::parse_file_name(name) {
            hints.push((seq, name.clone()));
        }
    }
    segment_ids.sort_unstable();
    if segment_ids.last() == Some(&u32::MAX) {
        // Only a file renamed by hand can have the last id: no segment could follow it.
        // Refused before recovery changes anything on disk.
        return Err(Error::Corrupt {
            path: dir.join(segment::file_name(u32::MAX)),
            offset: 0,
            reason: "its segment id is the largest possible, so no segment can follow it".into(),
        });
    }
    hints.sort_unstable_by(|a, b| b.cmp(a));
    let (table_dir, migrate) = match tables::read(vfs, dir)? {
        Some(table_dir) => {
            let migrate = table_dir.files.is_none();
            (table_dir, migrate)
        }
        None => {
            new_store_leftovers(vfs, dir, &mut segment_ids, &mut report)?;
            (TableDir::default(), true)
        }
    };
    match &table_dir.files {
        Some(files) => hold_to_manifest(vfs, dir, files, &mut segment_ids, &mut report)?,
        None => remove_interrupted_creation(vfs, dir, &mut segment_ids, &mut report)?,
    }
    // Whether the manifest must be written at the end: a new store, one of format 1, or one
    // whose sealed segments repair changed.
    let mut rewrite_manifest = migrate;
    // Map every segment.
    let mut opened: BTreeMap<u32, Opened> = BTreeMap::new();
    let newest = segment_ids.last().copied();
    for &id in &segment_ids {
        let path = dir.join(segment::file_name(id));
        let file = vfs.open(&path, OpenMode::ReadWrite).map_err(|e| Error::io("opening", &path, e))?;
        let len = file.size().map_err(|e| Error::io("measuring", &path, e))?;
        let capacity =
            if Some(id) == newest { options.segment_size.max(len).next_multiple_of(4096) } else { len };
        let listed_len = table_dir.files.as_ref().and_then(|f| f.sealed_len(id));
        if len < SEGMENT_HEADER_LEN as u64 && listed_len.is_none_or(|listed| len >= listed) {
            return Err(Error::corrupt(path, 0, format!("a segment of {len} bytes has no header")));
        }
        if let Some(listed) = listed_len {
            if len != listed {
                let what = if len < listed { "cut short" } else { "grown" };
                let reason = format!(
                    "the sealed segment is {len} bytes, {} lists it at {listed}: it was {what}",
                    tables::FILE
                );
                // A shorter file whose header is not this segment's was replaced, not cut.
                let mut header = [0u8; SEGMENT_HEADER_LEN];
                let own_header = len >= SEGMENT_HEADER_LEN as u64
                    && file.read_exact_at(&mut header, 0).is_ok()
                    && SegmentHeader::decode(&header).is_ok_and(|h| h.id == id);
                if !options.repair {
                    return Err(if len < listed && (own_header || len < SEGMENT_HEADER_LEN as u64) {
                        Error::missing(path, len, reason)
                    } else {
                        Error::corrupt(path, listed, reason)
                    });
                }
                // Repair keeps what the file holds (its batches are checked as any others)
                // and lists the segment at its new length.
                report.repaired.push(format!("{} at offset {}: {reason}", path.display(), len.min(listed)));
                rewrite_manifest = true;
            }
        }
        let capacity = usize::try_from(capacity)
            .ok()
            .filter(|&c| c as u64 <= MAX_SEGMENT_LEN)
            .ok_or_else(|| Error::corrupt(&path, 0, "segment too large to map"))?;
        let map = file.map(capacity).map_err(|e| Error::io("mapping", &path, e))?;
        let segment = Segment::new(id, path.clone(), map, len);
        match SegmentHeader::decode(segment.written_bytes()) {
            Ok(header) if header.id == id => {}
            Ok(header) => {
                return Err(Error::corrupt(path, 8, format!("the header says segment {}", header.id)));
            }
            Err(reason) => return Err(Error::corrupt(path, 0, reason)),
        }
        let file = (Some(id) == newest).then_some(file);
        opened.insert(id, Opened { segment, file });
    }

    // The newest usable hint. Its resume point is checked first: one past the end of a
    // segment that exists means the segment lost bytes the hint saw written and synced.
    let segment_len = |id: u32| opened.get(&id).map(|o| o.segment.written());
    let mut loaded = None;
    if let Some((_, name)) = hints.first() {
        let path = dir.join(name);
        match hint::read(vfs, &path) {
            Ok(bytes) => {
                let cut_short = hint::resume_point(&bytes).and_then(|(id, resume)| {
                    let len = segment_len(id).filter(|&len| resume > len)?;
                    let reason = format!(
                        "the segment ends at {len} bytes, but {name} resumes at {resume}: it was cut short"
                    );
                    Some(Error::missing(dir.join(segment::file_name(id)), len, reason))
                });
                match cut_short {
                    Some(e) if !options.repair => return Err(e),
                    // Repair scans the log instead, and cuts it where it is damaged.
                    Some(e) => report.hint_rejected = Some(e.to_string()),
                    None => {}
                }
                match hint::decode(&bytes, &segment_len) {
                    _ if report.hint_rejected.is_some() => {}
                    Ok(h) if segment_len(h.resume.0).is_some() => loaded = Some(h),
                    Ok(h) => {
                        report.hint_rejected = Some(format!(
                            "{name}: resume point {:?} is not in the log (compacted since)",
                            h.resume
                        ))
                    }
                    Err((offset, reason)) => {
                        report.hint_rejected = Some(Error::corrupt(path, offset, reason).to_string())
                    }
                }
            }
            Err(e) => report.hint_rejected = Some(e.to_string()),
        }
    }

    let mut version = Version::default();
    for (id, name) in &table_dir.tables {
        let name: Arc<str> = Arc::from(name.as_str());
        version.names.insert(Arc::clone(&name), *id);
        version.tables.insert(*id, TableState { name, map: TableMap::new() });
    }
    for (id, o) in &opened {
        version.segments.insert(*id, Arc::clone(&o.segment));
    }
    let mut start = opened.keys().next().map_or((0, 0), |&id| (id, SEGMENT_HEADER_LEN as u64));
    let mut max_seq = 0;
    if let Some(h) = loaded {
        report.hint_used = true;
        for (id, map) in h.tables {
            // Tables dropped after the hint was written are gone from the directory.
            if let Some(state) = version.tables.get_mut(&id) {
                state.map = map;
            }
        }
        start = h.resume;
        max_seq = h.seq;
    }

    let mut replay = Replay {
        version: &mut version,
        replayed: HashMap::new(),
        deleted: HashMap::new(),
        cleared: HashMap::new(),
        max_seq,
    };
    for (&id, o) in &opened {
        if id < start.0 {
            continue;
        }
        let from = if id == start.0 { start.1 } else { SEGMENT_HEADER_LEN as u64 };
        let is_newest = Some(id) == newest;
        let scanned = replay.segment(o, from as usize, &table_dir)?;
        report.batches_replayed += scanned.batches;
        report.bytes_scanned += scanned.end as u64 - from;
        let len = o.segment.written();
        if let Some((offset, reason)) = scanned.damage {
            let path = o.segment.path();
            // In the newest segment, damage is the torn tail of an unacknowledged write only
            // if no later commit record says the log was durable past it.
            let proof = if is_newest {
                record::durable_commit_after(o.segment.written_bytes(), 0, offset)
            } else {
                None
            };
            let torn = is_newest && proof.is_none();
            let reason = match proof {
                Some(d) => match d.watermark {
                    Some(w) => format!(
                        "{reason}; a valid batch ending at offset {} follows, written once the log was \
                         durable up to offset {w}, so this is damage to durable data, not a torn write",
                        d.end
                    ),
                    None => format!(
                        "{reason}; a valid batch ending at offset {} follows, so this is damage, not a torn write",
                        d.end
                    ),
                },
                None => reason,
            };
            if !torn && !options.repair {
                return Err(Error::corrupt(path, offset as u64, reason));
            }
            if !torn {
                rewrite_manifest = true;
                report.repaired.push(format!(
                    "{} at offset {offset}: {reason} ({} bytes dropped)",
                    path.display(),
                    len - scanned.end as u64
                ));
            } else {
                report.torn_tail_bytes += len - scanned.end as u64;
            }
            cut(vfs, o, scanned.end as u64)?;
        } else if scanned.end as u64 != len {
            // Zeros after the last batch: preallocated space (see `Options::preallocate`) or
            // an append that never reached the file. Nothing was torn; cut them so the next
            // batch follows the last one.
            cut(vfs, o, scanned.end as u64)?;
        }
    }
    replay.finish();
    let max_seq = replay.max_seq;

    let place = Placement { vfs, dir, segment_size: options.segment_size, preallocate: options.preallocate };
    let (active, next_segment_id) = match newest.and_then(|id| opened.remove(&id)) {
        Some(o) => {
            let pos = o.segment.written();
            // Ids below the largest possible were checked above.
            let next = o.segment.id().saturating_add(1);
            let path = o.segment.path();
            let file = o.file.ok_or_else(|| Error::corrupt(path, 0, "the newest segment lost its file"))?;
            // What the log holds now is durable before any batch says so in its watermark
            // (a process killed before its syncs may have left dirty pages behind).
            file.sync_data().map_err(|e| Error::io("syncing", path, e))?;
            o.segment.mark_synced(pos);
            (Active { file, segment: o.segment, pos, file_len: pos }, next)
        }
        None => {
            let active = Writer::create_segment(&place, 1, max_seq + 1, 0)?;
            version.segments.insert(1, Arc::clone(&active.segment));
            (active, 2)
        }
    };
    version.seq = max_seq;
    version.end = (active.segment.id(), active.pos);
    let usage = Usage::recount(&version);
    let mut writer = Writer::new(version, active, max_seq + 1, next_segment_id, usage, table_dir);
    if rewrite_manifest {
        // A new store, or one of format 1 (no segment list): from now on the manifest says
        // which segments must exist. After a repair: their new lengths.
        let tables = writer.tables.clone();
        writer.write_manifest(&place, tables)?;
    }
    Ok(Recovered { writer, report, lock })
}

/// Size of segment file `path`.
fn file_len(vfs: &dyn Vfs, path: &Path) -> Result<u64> {
    let file = vfs.open(path, OpenMode::ReadOnly).map_err(|e| Error::io("opening", path, e))?;
    file.size().map_err(|e| Error::io("measuring", path, e))
}

/// Removes segment `id`, a leftover that holds nothing the store needs.
fn remove_segment(vfs: &dyn Vfs, dir: &Path, id: u32) -> Result<()> {
    let path = dir.join(segment::file_name(id));
    vfs.remove_file(&path).map_err(|e| Error::io("removing", &path, e))
}

/// No table directory: a new store, or one whose first open died after creating its first
/// segment and before writing the manifest, so that no segment holds more than a header.
/// Segments holding records mean the file was lost: an error, never an empty store.
fn new_store_leftovers(
    vfs: &dyn Vfs,
    dir: &Path,
    segment_ids: &mut Vec<u32>,
    report: &mut RecoveryReport,
) -> Result<()> {
    for &id in segment_ids.iter() {
        let len = file_len(vfs, &dir.join(segment::file_name(id)))?;
        if len > SEGMENT_HEADER_LEN as u64 {
            return Err(Error::missing(
                dir.join(tables::FILE),
                0,
                format!(
                    "the table directory and manifest is missing, yet {} holds {len} bytes of records",
                    segment::file_name(id)
                ),
            ));
        }
    }
    for id in segment_ids.drain(..) {
        report.torn_tail_bytes += file_len(vfs, &dir.join(segment::file_name(id)))?;
        remove_segment(vfs, dir, id)?;
    }
    Ok(())
}

/// Holds the segment files to the manifest: a listed segment missing is an error (lengths and
/// headers are checked as they are mapped). Unlisted ones are leftovers: older than the
/// active one, victims of a compaction that published the manifest without them and was
/// cut short before unlinking them; newer, created by a rotation cut short before its
/// manifest, holding their header alone. Both are removed. An unlisted newer segment with
/// more than a header is an error: records are appended only once their segment is listed.
fn hold_to_manifest(
    vfs: &dyn Vfs,
    dir: &Path,
    files: &tables::FileSet,
    segment_ids: &mut Vec<u32>,
    report: &mut RecoveryReport,
) -> Result<()> {
    let mut removed = false;
    for &id in segment_ids.iter().filter(|&&id| !files.lists(id)) {
        if id > files.active {
            let path = dir.join(segment::file_name(id));
            let len = file_len(vfs, &path)?;
            if len > SEGMENT_HEADER_LEN as u64 {
                return Err(Error::corrupt(
                    path,
                    SEGMENT_HEADER_LEN as u64,
                    format!(
                        "{len} bytes in a segment that {} does not list (its newest is {})",
                        tables::FILE,
                        files.active
                    ),
                ));
            }
            report.torn_tail_bytes += len;
        }
        remove_segment(vfs, dir, id)?;
        removed = true;
    }
    if removed {
        vfs.sync_dir(dir).map_err(|e| Error::io("syncing directory", dir, e))?;
    }
    segment_ids.retain(|&id| files.lists(id));
    let listed = files.sealed.iter().map(|&(id, len)| (id, Some(len))).chain([(files.active, None)]);
    for (id, len) in listed {
        if segment_ids.binary_search(&id).is_err() {
            let what = match len {
                Some(len) => format!("sealed at {len} bytes"),
                None => "as the active segment".to_owned(),
            };
            return Err(Error::missing(
                dir.join(segment::file_name(id)),
                0,
                format!("the segment is missing: {} lists it {what}", tables::FILE),
            ));
        }
    }
    Ok(())
}

/// A store of format 1 (no manifest): a newest segment without a valid header was being
/// created when the process died, holds nothing acknowledged, and is removed. One with
/// bytes after its header is damage: records follow a header only once it is synced.
fn remove_interrupted_creation(
    vfs: &dyn Vfs,
    dir: &Path,
    segment_ids: &mut Vec<u32>,
    report: &mut RecoveryReport,
) -> Result<()> {
    while let Some(&id) = segment_ids.last() {
        let path = dir.join(segment::file_name(id));
        let file = vfs.open(&path, OpenMode::ReadOnly).map_err(|e| Error::io("opening", &path, e))?;
        let len = file.size().map_err(|e| Error::io("measuring", &path, e))?;
        let mut header = [0u8; SEGMENT_HEADER_LEN];
        let header_ok = len >= SEGMENT_HEADER_LEN as u64
            && file.read_exact_at(&mut header, 0).is_ok()
            && SegmentHeader::decode(&header).is_ok_and(|h| h.id == id);
        if header_ok {
            break;
        }
        if len > SEGMENT_HEADER_LEN as u64 {
            return Err(match SegmentHeader::decode(&header) {
                Ok(h) => Error::corrupt(path, 8, format!("the header says segment {}", h.id)),
                Err(reason) => Error::corrupt(path, 0, reason),
            });
        }
        drop(file);
        remove_segment(vfs, dir, id)?;
        report.torn_tail_bytes += len;
        segment_ids.pop();
    }
    Ok(())
}

/// Cuts segment `o` at `end`, durably. Its readable length is lowered first: nothing may
/// read past the new end of the file. A sealed segment's file (repair only) is opened for
/// the cut and closed again.
fn cut(vfs: &dyn Vfs, o: &Opened, end: u64) -> Result<()> {
    let path = o.segment.path();
    o.segment.truncate_written(end);
    let file = match &o.file {
        Some(file) => Arc::clone(file),
        None => vfs.open(path, OpenMode::ReadWrite).map_err(|e| Error::io("opening", path, e))?,
    };
    file.set_len(end).map_err(|e| Error::io("truncating", path, e))?;
    file.sync_data().map_err(|e| Error::io("syncing", path, e))
}

/// What scanning one segment found.
struct Scanned {
    /// Offset just past the last whole batch.
    end: usize,
    batches: u64,
    /// Where the first damaged or incomplete batch starts, and what is wrong.
    damage: Option<(usize, String)>,
}

/// Replay state: what tombstones and clears seen so far hide.
struct Replay<'v> {
    version: &'v mut Version,
    /// Per table, what the replay changed over the hint's index: a location, or `None` for
    /// a removed key.
    replayed: HashMap<u32, BTreeMap<IndexKey, Option<Loc>>>,
    /// Highest tombstone sequence number per (table, key).
    deleted: HashMap<(u32, Box<[u8]>), u64>,
    /// Highest clear sequence number per table.
    cleared: HashMap<u32, u64>,
    max_seq: u64,
}

impl Replay<'_> {
    /// Folds what was replayed into the index, leaving one sorted run per table.
    fn finish(&mut self) {
        let mut uncounted = Usage::default();
        for (table, replayed) in self.replayed.drain() {
            let Some(state) = self.version.tables.get_mut(&table) else { continue };
            let entries = replayed.into_iter().map(|(key, loc)| Entry { key, loc }).collect();
            state.map.apply(entries, &mut uncounted);
            state.map.merge_recent(&mut uncounted);
        }
    }

    /// Replays the whole batches of `o` from `from`.
    fn segment(&mut self, o: &Opened, from: usize, tables: &TableDir) -> Result<Scanned> {
        let bytes = o.segment.written_bytes();
        let mut batch: Vec<Decoded> = Vec::new();
        let mut batch_start = from;
        let mut pos = from;
        let mut batches = 0;
        loop {
            match record::decode(bytes, 0, pos) {
                Next::Record(d) => {
                    pos = d.end;
                    batch.push(d);
                    if d.commit {
                        for d in batch.drain(..) {
                            self.apply(o, bytes, &d, tables)?;
                        }
                        batches += 1;
                        batch_start = pos;
                    }
                }
                Next::End => {
                    let rest = &bytes[pos.min(bytes.len())..];
                    let damage = if !batch.is_empty() {
                        Some((batch_start, "the last batch has no commit record".to_owned()))
                    } else if rest.iter().any(|&b| b != 0) {
                        Some((pos, "garbage after the end of the log".to_owned()))
                    } else {
                        None
                    };
                    return Ok(Scanned { end: batch_start, batches, damage });
                }
                Next::Bad(reason) => {
                    return Ok(Scanned {
                        end: batch_start,
                        batches,
                        damage: Some((batch_start, format!("record at offset {pos}: {reason}"))),
                    });
                }
            }
        }
    }

    /// Applies one record, by sequence number.
    fn apply(&mut self, o: &Opened, bytes: &[u8], d: &Decoded, tables: &TableDir) -> Result<()> {
        self.max_seq = self.max_seq.max(d.seq);
        let Some(state) = self.version.tables.get(&d.table) else {
            if d.table >= tables.next_id {
                return Err(Error::corrupt(
                    o.segment.path(),
                    d.key as u64,
                    format!("a record of table id {}, which was never created", d.table),
                ));
            }
            return Ok(()); // a dropped table
        };
        let key = &bytes[d.key..d.key + d.key_len];
        let replayed = self.replayed.entry(d.table).or_default();
        let current = match replayed.get(key) {
            Some(slot) => *slot,
            None => state.map.get(key),
        };
        match d.kind {
            Kind::Put => {
                if self.cleared.get(&d.table).is_some_and(|&s| d.seq < s)
                    || (!self.deleted.is_empty()
                        && self.deleted.get(&(d.table, Box::from(key))).is_some_and(|&s| d.seq < s))
                    || current.is_some_and(|l| l.seq > d.seq)
                {
                    return Ok(());
                }
                let at = d.start as u64;
                let loc = Loc::checked(o.segment.id(), at, d.value as u64, d.value_len as u32, d.seq)
                    .ok_or_else(|| {
                        Error::corrupt(o.segment.path(), at, "a record past the segment size limit")
                    })?;
                replayed.insert(IndexKey::new(key), Some(loc));
            }
            Kind::Tombstone => {
                if current.is_some_and(|l| l.seq <= d.seq) {
                    replayed.insert(IndexKey::new(key), None);
                }
                let seen = self.deleted.entry((d.table, Box::from(key))).or_default();
                *seen = (*seen).max(d.seq);
            }
            Kind::Clear => {
                let seen = self.cleared.entry(d.table).or_default();
                *seen = (*seen).max(d.seq);
                self.finish();
                if let Some(state) = self.version.tables.get_mut(&d.table) {
                    let keep: Vec<(IndexKey, Loc)> = state
                        .map
                        .iter()
                        .filter(|(_, l)| l.seq > d.seq)
                        .map(|(k, l)| (k.clone(), *l))
                        .collect();
                    state.map = TableMap::from_sorted(keep);
                }
            }
        }
        Ok(())
    }
}
