//! The write path: append a batch to the active segment, apply it to the writer's index,
//! and make it durable and visible (group commit).
//!
//! One writer at a time holds [`Writer`]: it encodes the batch, writes it with one call,
//! applies it to its working [`Version`] and queues that version. Durability happens after
//! the writer lock is released: the first committer to need a sync becomes the syncer, syncs
//! once for every batch appended so far, and publishes the newest synced version; the others
//! wait on a condition variable. Readers only ever see synced versions (with
//! [`SyncMode::Always`](super::SyncMode::Always)).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::error::{Error, Result};
use super::index::{prefix_of, IndexKey, Loc, TableMap, Usage, Version, MAX_SEGMENT_LEN};
use super::io::{OpenMode, Vfs, VfsFile};
use super::prefetch;
use super::record::{self, Kind, RecordRef, SegmentHeader, MAX_KEY_LEN, MAX_VALUE_LEN, SEGMENT_HEADER_LEN};
use super::segment::{self, Segment};
use super::table_map::{keep_newest, Entry};
use super::tables::{self, FileSet, TableDir};
use super::{Op, ValueAlign};

/// The segment being appended to.
pub(crate) struct Active {
    pub(crate) file: Arc<dyn VfsFile>,
    pub(crate) segment: Arc<Segment>,
    /// Offset where the next batch goes.
    pub(crate) pos: u64,
    /// The file's length: `pos`, or more when zeros were written ahead (preallocation).
    pub(crate) file_len: u64,
}

/// What only the writer touches.
pub(crate) struct Writer {
    /// The index with every appended batch applied, synced or not.
    pub(crate) working: Version,
    pub(crate) active: Active,
    pub(crate) next_seq: u64,
    pub(crate) next_segment_id: u32,
    pub(crate) usage: Usage,
    /// The table directory and manifest as last written.
    pub(crate) tables: TableDir,
    /// Log bytes appended since the last hint.
    pub(crate) since_hint: u64,
    /// Sealed segments since the maintenance thread last looked.
    pub(crate) rotations: u64,
    /// A table's recent index runs are due for a background merge.
    pub(crate) merge_due: bool,
    /// Segment and file offset of the last appended batch.
    pub(crate) last_batch: (u32, u64),
    /// Encoded records on their way to the file, up to [`CHUNK`] bytes at a time.
    buf: Vec<u8>,
    /// File offsets of the records and of their values of the last appended batch, in
    /// write order.
    value_offsets: Vec<(u64, u64)>,
    /// Bytes of the last appended batch.
    batch_len: u64,
    /// The order in which the ops of the batch being appended are written (indices).
    order: Vec<usize>,
}

/// Batches of at least this many ops are written in key order (see [`write_order`]).
const SORTED_BATCH: usize = 64;

/// How many records ahead of the one being encoded the writer prefetches its key and value
/// (and twice as far, its op). Gathering a 1,000,000-pair batch in key order took 1,499 ms
/// without prefetching, 991 ms with it, and 851 ms in the ops' own order (no fsync).
const PREFETCH_AHEAD: usize = 4;

/// The table and key an op writes.
fn target<'a>(op: &Op<'a>) -> (u32, &'a [u8]) {
    match *op {
        Op::Put { table, key, .. } | Op::Delete { table, key } => (table.id, key),
        Op::Clear { table } => (table.id, &[]),
    }
}

/// The record of `op`, with sequence number `seq`, not ending its batch.
fn record_of<'a>(op: &Op<'a>, seq: u64) -> RecordRef<'a> {
    let (kind, table, key, value, aligned) = match *op {
        Op::Put { table, key, value, align } => (Kind::Put, table, key, value, align == ValueAlign::Sixteen),
        Op::Delete { table, key } => (Kind::Tombstone, table, key, &[][..], false),
        Op::Clear { table } => (Kind::Clear, table, &[][..], &[][..], false),
    };
    RecordRef { kind, commit: false, aligned, seq, table: table.id, key, value, watermark: None }
}

/// Drops `buffer`'s allocation when it holds room for far more than `len` items (a
/// buffer of a bulk load before small commits), so it is not kept for good.
fn release_if_oversized<T>(buffer: &mut Vec<T>, len: usize) {
    if buffer.capacity() > (1 << 16).max(4 * len) {
        *buffer = Vec::new();
    }
}

/// The order to write `ops` in, into `order`: as given, or, for a large batch without
/// clears, sorted by table and key (stable: ops on one key keep their order, so the batch
/// means the same). Records written in key order make later scans read the log
/// sequentially instead of jumping around it, as a B-tree's leaves would.
fn write_order(ops: &[Op<'_>], order: &mut Vec<usize>) {
    order.clear();
    order.extend(0..ops.len());
    if ops.len() < SORTED_BATCH || ops.iter().any(|op| matches!(op, Op::Clear { .. })) {
        return;
    }
    // Sort on (table, first 8 key bytes) first: most comparisons end there, as integers.
    let mut keyed: Vec<(u32, u64, usize)> = ops
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let (table, key) = target(op);
            (table, prefix_of(key), i)
        })
        .collect();
    keyed.sort_unstable_by(|a, b| {
        (a.0, a.1)
            .cmp(&(b.0, b.1))
            .then_with(|| target(&ops[a.2]).1.cmp(target(&ops[b.2]).1))
            .then(a.2.cmp(&b.2))
    });
    order.clear();
    order.extend(keyed.into_iter().map(|(_, _, i)| i));
}

/// A batch appended but not yet synced.
struct Pending {
    seq: u64,
    version: Arc<Version>,
    file: Arc<dyn VfsFile>,
}

/// Group-commit state.
#[derive(Default)]
pub(crate) struct SyncState {
    /// Every batch up to this sequence number is durable.
    synced: u64,
    /// The newest version published, by sequence number: publication never goes back.
    published: u64,
    /// A committer is syncing right now.
    syncing: bool,
    /// Appended batches waiting for a sync, oldest first.
    pending: VecDeque<Pending>,
    /// Set when a sync failed: waiters give up with this error.
    failed: Option<String>,
}

/// Where the writer's segments live and how big they grow.
pub(crate) struct Placement<'a> {
    pub(crate) vfs: &'a dyn Vfs,
    pub(crate) dir: &'a Path,
    pub(crate) segment_size: u64,
    /// Zeros written ahead of the end of the log (see `Options::preallocate`).
    pub(crate) preallocate: u64,
}

/// Batches smaller than this are followed by preallocated zeros: a large batch costs far
/// more than the file-size update, and zeros ahead of it would double its disk writes.
const PREALLOCATE_BELOW: usize = 64 << 10;

/// ... and so are batches at least this many times `Options::preallocate` (a bulk load),
/// whose zeros add at most 1/64 to their writes: they get a segment with room for the
/// zeros, so the small commits after a bulk load neither rotate the segment nor grow the
/// file (2.6 ms for the first of them, measured, before this).
const PREALLOCATE_AFTER_RATIO: u64 = 64;

/// Whether a batch of `len` bytes is a bulk load, followed by zeros in a segment with
/// room for them.
fn is_bulk(len: u64, preallocate: u64) -> bool {
    preallocate > 0 && len >= PREALLOCATE_AFTER_RATIO * preallocate
}

/// Whether a batch of `len` bytes is followed by preallocated zeros.
fn preallocates_after(len: u64, preallocate: u64) -> bool {
    (preallocate > 0 && len < PREALLOCATE_BELOW as u64) || is_bulk(len, preallocate)
}

/// A batch is encoded and written this many bytes at a time (at least).
const CHUNK: usize = 1 << 20;

/// Page size used to round mapping capacities.
const PAGE: u64 = 4096;

impl Writer {
    pub(crate) fn new(
        working: Version,
        active: Active,
        next_seq: u64,
        next_segment_id: u32,
        usage: Usage,
        tables: TableDir,
    ) -> Self {
        Writer {
            working,
            active,
            next_seq,
            next_segment_id,
            usage,
            tables,
            since_hint: 0,
            rotations: 0,
            merge_due: false,
            last_batch: (0, 0),
            buf: Vec::new(),
            value_offsets: Vec::new(),
            batch_len: 0,
            order: Vec::new(),
        }
    }

    /// Creates segment `id` with room for at least `min_capacity` bytes, durable in the
    /// directory, and returns it as the active segment to be.
    pub(crate) fn create_segment(
        place: &Placement<'_>,
        id: u32,
        first_seq: u64,
        min_capacity: u64,
    ) -> Result<Active> {
        let path = place.dir.join(segment::file_name(id));
        let file = place.vfs.open(&path, OpenMode::CreateNew).map_err(|e| Error::io("creating", &path, e))?;
        let header = SegmentHeader { id, first_seq }.encode();
        file.write_all_at(&header, 0).map_err(|e| Error::io("writing", &path, e))?;
        file.sync_data().map_err(|e| Error::io("syncing", &path, e))?;
        place.vfs.sync_dir(place.dir).map_err(|e| Error::io("syncing directory", place.dir, e))?;
        let capacity = place.segment_size.max(min_capacity).next_multiple_of(PAGE);
        if capacity > MAX_SEGMENT_LEN {
            let max = MAX_SEGMENT_LEN as usize;
            return Err(Error::TooLarge { what: "segment", len: capacity as usize, max });
        }
        let map = file.map(capacity as usize).map_err(|e| Error::io("mapping", &path, e))?;
        let segment = Segment::new(id, path, map, SEGMENT_HEADER_LEN as u64);
        segment.mark_synced(SEGMENT_HEADER_LEN as u64);
        let pos = SEGMENT_HEADER_LEN as u64;
        Ok(Active { file, segment, pos, file_len: pos })
    }

    /// Seals the active segment (synced, so a sealed segment never ends in a torn batch) and
    /// starts a new one with room for `min_capacity` bytes.
    pub(crate) fn rotate(&mut self, place: &Placement<'_>, min_capacity: u64) -> Result<()> {
        self.trim_and_sync()?;
        let id = self.next_segment_id;
        let next = id.checked_add(1).ok_or_else(|| {
            Error::io("creating a segment in", place.dir, std::io::Error::other("segment ids are exhausted"))
        })?;
        let active =
            Self::create_segment(place, id, self.next_seq, min_capacity + SEGMENT_HEADER_LEN as u64)?;
        self.next_segment_id = next;
        self.working.segments.insert(id, Arc::clone(&active.segment));
        self.active = active;
        self.rotations += 1;
        // Only now is the old segment's length final, and the new one listed: a crash before
        // this leaves the new one unlisted with its header alone, removed on open.
        self.write_manifest(place, self.tables.clone())
    }

    /// The segment files as they stand: every segment of the working version, the sealed
    /// ones with their final lengths.
    fn file_set(&self) -> FileSet {
        let active = self.active.segment.id();
        let sealed = self
            .working
            .segments
            .values()
            .filter(|s| s.id() != active)
            .map(|s| (s.id(), s.written()))
            .collect();
        FileSet { sealed, active }
    }

    /// Replaces the table directory and manifest with `tables` and the current segment
    /// files, durably.
    pub(crate) fn write_manifest(&mut self, place: &Placement<'_>, mut tables: TableDir) -> Result<()> {
        tables.files = Some(self.file_set());
        tables::write(place.vfs, place.dir, &tables)?;
        self.tables = tables;
        Ok(())
    }

    /// Cuts preallocated zeros off the active segment and syncs it: before sealing it, and
    /// at a clean close. Readers never see the zeros (they lie past `written`).
    pub(crate) fn trim_and_sync(&mut self) -> Result<()> {
        let active = &mut self.active;
        let path = active.segment.path();
        if active.file_len > active.pos {
            active.file.set_len(active.pos).map_err(|e| Error::io("truncating", path, e))?;
            active.file_len = active.pos;
        }
        active.file.sync_data().map_err(|e| Error::io("syncing", path, e))?;
        active.segment.mark_synced(active.pos);
        Ok(())
    }

    /// Checks every op against the limits and the tables that exist.
    fn check(&self, ops: &[Op<'_>]) -> Result<()> {
        for op in ops {
            let (table, key, value) = match *op {
                Op::Put { table, key, value, .. } => (table, key, value),
                Op::Delete { table, key } => (table, key, &[][..]),
                Op::Clear { table } => (table, &[][..], &[][..]),
            };
            if key.len() > MAX_KEY_LEN {
                return Err(Error::TooLarge { what: "key", len: key.len(), max: MAX_KEY_LEN });
            }
            if value.len() > MAX_VALUE_LEN {
                return Err(Error::TooLarge { what: "value", len: value.len(), max: MAX_VALUE_LEN });
            }
            if self.working.table(table.id).is_none() {
                return Err(Error::NoSuchTable { name: table.name.to_string() });
            }
        }
        Ok(())
    }

    /// The `position`th record of the batch being appended; the last one carries the sync
    /// watermark `synced`.
    fn record<'a>(
        &self,
        ops: &[Op<'a>],
        seqs: Option<&[u64]>,
        seq: u64,
        position: usize,
        synced: u64,
    ) -> RecordRef<'a> {
        let i = self.order[position];
        let commit = position + 1 == ops.len();
        RecordRef {
            commit,
            watermark: commit.then_some(synced),
            ..record_of(&ops[i], seqs.and_then(|s| s.get(i).copied()).unwrap_or(seq))
        }
    }

    /// At least the bytes the batch takes in the file, whatever its offset: each record's
    /// length with the most padding an aligned value can need, and the commit record's sync
    /// watermark. Computed in the ops' own order, which reads them sequentially, not in
    /// write order.
    fn batch_len_bound(ops: &[Op<'_>], seqs: Option<&[u64]>, seq: u64) -> u64 {
        let pad = record::VALUE_ALIGN as u64 - 1;
        let bound = |(i, op): (usize, &Op<'_>)| {
            let record = record_of(op, seqs.and_then(|s| s.get(i).copied()).unwrap_or(seq));
            let unpadded = RecordRef { aligned: false, ..record };
            record::encoded_len(0, &unpadded) + if record.aligned { pad } else { 0 }
        };
        ops.iter().enumerate().map(bound).sum::<u64>() + record::MAX_VARINT_LEN
    }

    /// Encodes the batch and writes it from `base` on, a chunk at a time: a large batch
    /// goes through a buffer that stays in cache instead of one as large as itself. A small
    /// batch or a bulk load that grows the file is followed by up to `preallocate` zeros
    /// (see [`preallocates_after`]); if the disk has no room for them, the last chunk is
    /// written again without them. Records that reach the file before a failure are a torn batch, which
    /// recovery cuts. Returns where the batch ends and how many zeros follow it.
    fn write_batch(
        &mut self,
        ops: &[Op<'_>],
        seqs: Option<&[u64]>,
        seq: u64,
        base: u64,
        preallocate: u64,
    ) -> std::io::Result<(u64, u64)> {
        let file = Arc::clone(&self.active.file);
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        self.value_offsets.clear();
        let mut chunk_base = base;
        let mut written = Ok(());
        // Read once: a sync completing meanwhile changes nothing about this batch's bytes.
        let synced = self.active.segment.synced();
        for position in 0..ops.len() {
            // Records go out in key order, so their ops, keys and values lie anywhere in
            // memory: ask for them a few records ahead (the op first, then its bytes), so
            // the loads overlap instead of stalling one by one.
            if let Some(&far) = self.order.get(position + 2 * PREFETCH_AHEAD) {
                prefetch::read(std::ptr::from_ref(&ops[far]).cast());
            }
            if let Some(&Op::Put { key, value, .. }) =
                self.order.get(position + PREFETCH_AHEAD).map(|&i| &ops[i])
            {
                prefetch::read(key.as_ptr());
                prefetch::read_lines(value, 4);
            }
            let record = self.record(ops, seqs, seq, position, synced);
            let start = chunk_base + buf.len() as u64;
            let placed = record::encode(&mut buf, chunk_base, &record);
            self.value_offsets.push((start, chunk_base + placed.value_offset as u64));
            if buf.len() >= CHUNK && position + 1 < ops.len() {
                written = file.write_all_at(&buf, chunk_base);
                if written.is_err() {
                    break;
                }
                chunk_base += buf.len() as u64;
                buf.clear();
            }
        }
        let end = chunk_base + buf.len() as u64;
        let mut ahead = 0;
        if written.is_ok() {
            let records = buf.len();
            if end > self.active.file_len && preallocates_after(end - base, preallocate) {
                ahead = preallocate.min(self.active.segment.capacity().saturating_sub(end));
            }
            buf.resize(records + ahead as usize, 0);
            written = file.write_all_at(&buf, chunk_base);
            if ahead > 0 && written.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::StorageFull) {
                // A nearly full disk may still hold the batch without the zeros ahead of it.
                ahead = 0;
                written = file.write_all_at(&buf[..records], chunk_base);
            }
        }
        if buf.capacity() > 2 * CHUNK {
            // One huge small-batch (a value near the limit) does not keep its buffer.
            buf = Vec::new();
        }
        self.buf = buf;
        written.map(|()| (end, ahead))
    }

    /// Appends `ops` as one atomic batch and applies it to the working version. Returns
    /// the batch's sequence number. `seqs` gives compaction copies their original sequence
    /// numbers; they are applied by the caller.
    pub(crate) fn append(
        &mut self,
        place: &Placement<'_>,
        ops: &[Op<'_>],
        seqs: Option<&[u64]>,
    ) -> Result<u64> {
        self.check(ops)?;
        // A bulk load's per-op buffers are not kept for the small commits after it.
        release_if_oversized(&mut self.order, ops.len());
        release_if_oversized(&mut self.value_offsets, ops.len());
        // Compaction copies stay in the order given: the caller maps them back by position.
        if seqs.is_none() {
            write_order(ops, &mut self.order);
        } else {
            self.order.clear();
            self.order.extend(0..ops.len());
        }
        let seq = self.next_seq;
        let worst = Self::batch_len_bound(ops, seqs, seq);
        if self.active.pos + worst > self.active.segment.capacity() {
            let zeros = if is_bulk(worst, place.preallocate) { place.preallocate } else { 0 };
            self.rotate(place, worst + zeros)?;
        }
        let base = self.active.pos;
        let written = self.write_batch(ops, seqs, seq, base, place.preallocate);
        let (end, ahead) = written.map_err(|e| Error::io("appending to", self.active.segment.path(), e))?;
        let batch_len = end - base;
        self.active.file_len = self.active.file_len.max(end + ahead);
        self.last_batch = (self.active.segment.id(), base);
        self.batch_len = batch_len;
        self.active.pos = end;
        self.active.segment.set_written(end);
        self.since_hint += batch_len;
        self.next_seq += 1;
        if seqs.is_none() {
            let segment = self.active.segment.id();
            let changes = self.order.iter().zip(&self.value_offsets).map(|(&i, &(record, offset))| {
                let op = &ops[i];
                let loc = match *op {
                    Op::Put { value, .. } => Some(Loc::new(segment, record, offset, value.len() as u32, seq)),
                    _ => None,
                };
                (op, loc)
            });
            self.merge_due |= apply(&mut self.working, &mut self.usage, changes);
        }
        self.working.seq = seq;
        self.working.end = (self.active.segment.id(), end);
        Ok(seq)
    }

    /// File offsets of the records and of their values of the last appended batch, one
    /// per op.
    pub(crate) fn last_value_offsets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.value_offsets.iter().copied()
    }

    /// Bytes of the last appended batch.
    pub(crate) fn last_batch_len(&self) -> u64 {
        self.batch_len
    }

    /// The file of the active segment.
    pub(crate) fn active_file(&self) -> Arc<dyn VfsFile> {
        Arc::clone(&self.active.file)
    }
}

/// Applies a batch's ops, in log order, with the locations of their values: each table's
/// changes become one run of its index. Returns whether a background merge is due.
fn apply<'o, 'a: 'o>(
    version: &mut Version,
    usage: &mut Usage,
    changes: impl Iterator<Item = (&'o Op<'a>, Option<Loc>)>,
) -> bool {
    let mut merge_due = false;
    let mut pending: Vec<(u32, Entry)> = Vec::new();
    for (op, loc) in changes {
        match *op {
            Op::Put { table, key, .. } | Op::Delete { table, key } => {
                pending.push((table.id, Entry { key: IndexKey::new(key), loc }));
            }
            Op::Clear { table } => {
                merge_due |= add_runs(version, usage, &mut pending);
                let Some(state) = version.tables.get_mut(&table.id) else { continue };
                for (key, old) in state.map.held() {
                    usage.remove(key.as_bytes().len(), old);
                }
                state.map = TableMap::new();
            }
        }
    }
    merge_due | add_runs(version, usage, &mut pending)
}

/// Adds the changes of `pending` (in log order) as one run per table. Returns whether a
/// background merge of a table's runs is due.
pub(crate) fn add_runs(version: &mut Version, usage: &mut Usage, pending: &mut Vec<(u32, Entry)>) -> bool {
    let mut merge_due = false;
    let in_order = |a: &(u32, Entry), b: &(u32, Entry)| a.0.cmp(&b.0).then_with(|| a.1.key.cmp(&b.1.key));
    // Large batches come sorted (see `write_order`). The sort is stable: on one key, the
    // last op wins.
    if !pending.is_sorted_by(|a, b| in_order(a, b).is_le()) {
        pending.sort_by(in_order);
    }
    let mut rest = &mut pending[..];
    while let Some(&(table, _)) = rest.first() {
        let n = rest.iter().take_while(|(t, _)| *t == table).count();
        let (group, tail) = rest.split_at_mut(n);
        rest = tail;
        let Some(state) = version.tables.get_mut(&table) else { continue };
        let mut run: Vec<Entry> = group
            .iter_mut()
            .map(|(_, entry)| std::mem::replace(entry, Entry { key: IndexKey::new(&[]), loc: None }))
            .collect();
        // Not yet counted in `usage`: nothing to uncount.
        keep_newest(&mut run, &mut |_, _| {});
        for entry in &run {
            if let Some(loc) = &entry.loc {
                usage.add(entry.key.as_bytes().len(), loc);
            }
        }
        state.map.apply(run, usage);
        merge_due |= state.map.merge_due();
    }
    pending.clear();
    merge_due
}

/// Group commit: durability and publication of appended batches.
pub(crate) struct Syncer {
    state: Mutex<SyncState>,
    done: Condvar,
}

impl Syncer {
    pub(crate) fn new(synced: u64) -> Self {
        Syncer {
            state: Mutex::new(SyncState { synced, published: synced, ..SyncState::default() }),
            done: Condvar::new(),
        }
    }

    /// Records that every batch up to `seq` is durable, and publishes it with `publish` (the
    /// caller holds the writer lock and synced the log itself). Both happen under the state
    /// lock, as a syncer's publication does: a committer that sees its batch synced returns
    /// only once a version with it is visible to readers.
    pub(crate) fn mark_synced(&self, seq: u64, publish: impl FnOnce()) {
        let mut state = self.state.lock();
        state.synced = state.synced.max(seq);
        state.published = state.published.max(seq);
        while state.pending.front().is_some_and(|p| p.seq <= seq) {
            state.pending.pop_front();
        }
        publish();
        self.done.notify_all();
    }

    /// Publishes a version of the index at batch `seq` with `publish` if every batch up to
    /// `seq` is durable and none newer is published (else a committer publishes later).
    pub(crate) fn publish_if_synced(&self, seq: u64, publish: impl FnOnce()) {
        let state = self.state.lock();
        if state.synced >= seq && state.published <= seq && !state.syncing {
            publish();
        }
    }

    /// Queues the version of batch `seq` (call with the writer lock held, so the queue is
    /// in log order).
    pub(crate) fn push(&self, seq: u64, version: Arc<Version>, file: Arc<dyn VfsFile>) {
        self.state.lock().pending.push_back(Pending { seq, version, file });
    }

    /// Returns once batch `seq` is durable, and published through `publish`. One waiter
    /// syncs for all; `on_sync` counts syncs; `poison` records a failure.
    pub(crate) fn wait(
        &self,
        seq: u64,
        publish: &dyn Fn(Arc<Version>),
        on_sync: &dyn Fn(),
        poison: &dyn Fn(&str),
    ) -> Result<()> {
        let mut state = self.state.lock();
        loop {
            if state.synced >= seq {
                return Ok(());
            }
            if let Some(cause) = &state.failed {
                return Err(Error::Poisoned { cause: cause.clone() });
            }
            if state.syncing {
                self.done.wait(&mut state);
                continue;
            }
            let Some(last) = state.pending.back() else {
                // Nothing pending yet our batch is not synced: cannot happen, but never spin.
                return Err(Error::Poisoned { cause: "a commit vanished from the sync queue".to_owned() });
            };
            let (target, version, file) = (last.seq, Arc::clone(&last.version), Arc::clone(&last.file));
            state.syncing = true;
            drop(state);
            // Earlier batches in sealed segments were synced when their segment was sealed.
            let result = file.sync_data();
            if result.is_ok() {
                if let Some(segment) = version.segments.get(&version.end.0) {
                    segment.mark_synced(version.end.1);
                }
            }
            on_sync();
            state = self.state.lock();
            state.syncing = false;
            match result {
                Ok(()) => {
                    state.synced = state.synced.max(target);
                    while state.pending.front().is_some_and(|p| p.seq <= target) {
                        state.pending.pop_front();
                    }
                    if target > state.published {
                        state.published = target;
                        publish(version);
                    }
                }
                Err(e) => {
                    let cause = format!("fsync failed: {e}");
                    poison(&cause);
                    state.failed = Some(cause);
                }
            }
            self.done.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::release_if_oversized;
    use crate::engine::{Db, Op, Options, ValueAlign};

    #[test]
    fn a_bulk_loads_buffer_is_released_before_small_batches_but_not_between_large_ones() {
        let mut buffer: Vec<usize> = Vec::with_capacity(1_000_000);
        release_if_oversized(&mut buffer, 900_000);
        assert!(buffer.capacity() >= 1_000_000, "kept for a batch of about its size");
        release_if_oversized(&mut buffer, 1);
        assert_eq!(buffer.capacity(), 0, "released before a one-op batch");
        let mut small: Vec<usize> = Vec::with_capacity(1_000);
        release_if_oversized(&mut small, 1);
        assert!(small.capacity() >= 1_000, "a small buffer is kept");
    }

    /// A large batch is written in key order, yet means what it says in op order: a later
    /// op on a key wins, before and after a reopen.
    #[test]
    fn sorted_batches_keep_the_meaning_of_their_op_order() {
        let dir = tempfile::tempdir().unwrap();
        let expect = |db: &Db| {
            let t = db.find_table("t").unwrap();
            for i in 0..100u32 {
                let key = (1000 - i).to_be_bytes();
                let got = db.get(&t, &key).unwrap().map(|v| v.to_vec());
                let want = match i {
                    7 => None,                      // put, then deleted
                    9 => Some(b"again".to_vec()),   // put, deleted, put again
                    11 => Some(b"second".to_vec()), // put twice
                    _ => Some(i.to_le_bytes().to_vec()),
                };
                assert_eq!(got, want, "key {i}");
            }
        };
        {
            let db = Db::open(dir.path(), Options::default()).unwrap();
            let t = db.table("t").unwrap();
            let keys: Vec<[u8; 4]> = (0..100u32).map(|i| (1000 - i).to_be_bytes()).collect();
            let values: Vec<[u8; 4]> = (0..100u32).map(|i| i.to_le_bytes()).collect();
            let put = |i: usize, value: &'static [u8]| Op::Put {
                table: &t,
                key: &keys[i],
                value,
                align: ValueAlign::Packed,
            };
            let mut ops: Vec<Op<'_>> = (0..100)
                .map(|i| Op::Put { table: &t, key: &keys[i], value: &values[i], align: ValueAlign::Packed })
                .collect();
            ops.push(Op::Delete { table: &t, key: &keys[7] });
            ops.push(Op::Delete { table: &t, key: &keys[9] });
            ops.push(put(9, b"again"));
            ops.push(put(11, b"second"));
            db.write(&ops).unwrap();
            expect(&db);
        }
        expect(&Db::open(dir.path(), Options::default()).unwrap());
    }
}
