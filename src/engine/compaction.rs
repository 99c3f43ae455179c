//! Compaction: copy the live records of victim segments to the head of the log, then unlink
//! the victims. Rules in `docs/design.md` §7.
//!
//! Copies keep their original sequence numbers, so recovery resolves them against anything
//! else in the log by sequence number. A tombstone (or clear) is dropped only when every
//! segment older than its own is a victim too: otherwise an older segment may still hold a
//! value it hides, which would come back at the next recovery (Bitcask's rule). Victims are
//! unlinked oldest first, so a crash in between never leaves a hidden value without its
//! tombstone.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::error::{Error, Result};
use super::hint;
use super::index::{IndexKey, Loc, Version};
use super::record::{self, Kind, Next, SEGMENT_HEADER_LEN};
use super::segment::Segment;
use super::table_map::Entry;
use super::writer::add_runs;
use super::{Inner, Op, Table, ValueAlign};

/// Which segments to compact.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope {
    /// Every segment: the active one is sealed first.
    Everything,
    /// Sealed segments at least this fraction dead.
    MostlyDead(f64),
}

/// What a compaction did. Sizes count segment files only; hint files are deleted by a
/// compaction (they may point into deleted segments) and written again at the next
/// checkpoint or clean close.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactionStats {
    /// Segments rewritten and deleted.
    pub segments_compacted: usize,
    /// Bytes of log before.
    pub log_bytes_before: u64,
    /// Bytes of log after.
    pub log_bytes_after: u64,
    /// Live records copied.
    pub records_rewritten: u64,
    /// Bytes appended by the copies.
    pub bytes_rewritten: u64,
}

/// Records copied per writer-lock hold, so writers are never blocked for long.
const CHUNK_BYTES: usize = 8 << 20;

fn log_bytes(version: &Version) -> u64 {
    version.segments.values().map(|s| s.written()).sum()
}

pub(crate) fn compact(inner: &Inner, scope: Scope) -> Result<CompactionStats> {
    let _one_at_a_time = inner.compaction.lock();
    let mut stats = CompactionStats::default();
    let victims: Vec<Arc<Segment>> = {
        let mut w = inner.lock_writer()?;
        if matches!(scope, Scope::Everything) && w.active.pos > SEGMENT_HEADER_LEN as u64 {
            let place = inner.placement();
            w.rotate(&place, 0).inspect_err(|e| inner.poison(&e.to_string()))?;
        }
        let active = w.active.segment.id();
        stats.log_bytes_before = log_bytes(&w.working);
        w.working
            .segments
            .values()
            .filter(|s| s.id() != active)
            .filter(|s| match scope {
                Scope::Everything => true,
                Scope::MostlyDead(threshold) => {
                    let written = s.written().max(1);
                    let dead = written.saturating_sub(w.usage.live(s.id()));
                    dead as f64 / written as f64 >= threshold
                }
            })
            .cloned()
            .collect()
    };
    if victims.is_empty() {
        stats.log_bytes_after = stats.log_bytes_before;
        return Ok(stats);
    }
    let victim_ids: BTreeSet<u32> = victims.iter().map(|s| s.id()).collect();
    // The oldest segment that stays: tombstones of victims older than it may go.
    let oldest_kept = {
        let version = inner.current.load();
        version.segments.keys().copied().find(|id| !victim_ids.contains(id)).unwrap_or(u32::MAX)
    };
    for victim in &victims {
        copy_live(inner, victim, victim.id() < oldest_kept, &mut stats)?;
    }
    {
        let mut w = inner.lock_writer()?;
        for victim in &victims {
            w.working.segments.remove(&victim.id());
            w.usage.forget(victim.id());
        }
        stats.log_bytes_after = log_bytes(&w.working);
        publish_synced(inner, &mut w)?;
        // Hints may point into the victims. Rather than write a new one now (it would take
        // as much room as a fifth of the live data of small records), drop them: the next
        // checkpoint or the clean close writes a fresh one, and until then a crash means a
        // scan. They go before the manifest changes: a hint left behind never resumes in a
        // listed segment past its end.
        hint::remove_older(&*inner.options.vfs, &inner.dir, u64::MAX);
        // The manifest without the victims: from now on they are leftovers, deleted on open
        // if a crash comes before the unlinks below.
        let place = inner.placement();
        let tables = w.tables.clone();
        w.write_manifest(&place, tables).inspect_err(|e| inner.poison(&e.to_string()))?;
    }
    // Oldest first, each unlink durable before the next. A failure poisons the engine:
    // which files are gone is then unknown until a reopen reads the manifest.
    let vfs = &*inner.options.vfs;
    for victim in &victims {
        let unlinked =
            vfs.remove_file(victim.path()).map_err(|e| Error::io("removing", victim.path(), e)).and_then(
                |()| vfs.sync_dir(&inner.dir).map_err(|e| Error::io("syncing directory", &inner.dir, e)),
            );
        if let Err(e) = unlinked {
            inner.poison(&e.to_string());
            return Err(e);
        }
    }
    stats.segments_compacted = victims.len();
    inner.counters.compactions.fetch_add(1, Ordering::Relaxed);
    inner.counters.bytes_rewritten.fetch_add(stats.bytes_rewritten, Ordering::Relaxed);
    Ok(stats)
}

/// Syncs the active segment, then publishes the writer's version: the copies (and any batch
/// appended meanwhile) are durable before anyone sees them.
fn publish_synced(inner: &Inner, w: &mut super::writer::Writer) -> Result<()> {
    inner.sync_log(&*w.active_file(), &w.active.segment, w.active.pos)?;
    let version = Arc::new(w.working.clone());
    inner.syncer.mark_synced(w.working.seq, || inner.current.store(version));
    Ok(())
}

/// One record to copy.
struct Copy {
    table: Table,
    kind: Kind,
    key: (usize, usize),
    value: (usize, usize),
    aligned: bool,
    seq: u64,
}

/// Copies the live records of `victim` to the head of the log, chunk by chunk.
fn copy_live(
    inner: &Inner,
    victim: &Segment,
    drop_tombstones: bool,
    stats: &mut CompactionStats,
) -> Result<()> {
    let bytes = victim.written_bytes();
    let mut pos = SEGMENT_HEADER_LEN;
    while pos < bytes.len() {
        let mut w = inner.lock_writer()?;
        let mut copies: Vec<Copy> = Vec::new();
        let chunk_end = pos + CHUNK_BYTES;
        while pos < bytes.len() && pos < chunk_end {
            let d = match record::decode(bytes, 0, pos) {
                Next::Record(d) => d,
                Next::End => {
                    pos = bytes.len();
                    break;
                }
                Next::Bad(reason) => return Err(Error::corrupt(victim.path(), pos as u64, reason)),
            };
            pos = d.end;
            let Some(state) = w.working.table(d.table) else { continue };
            let key = &bytes[d.key..d.key + d.key_len];
            let live = match d.kind {
                Kind::Put => state
                    .map
                    .get(key)
                    .is_some_and(|l| l.segment == victim.id() && l.offset() == d.value as u64),
                Kind::Tombstone => !drop_tombstones && !state.map.contains_key(key),
                Kind::Clear => !drop_tombstones,
            };
            if live {
                copies.push(Copy {
                    table: Table { id: d.table, name: Arc::clone(&state.name) },
                    kind: d.kind,
                    key: (d.key, d.key + d.key_len),
                    value: (d.value, d.value + d.value_len),
                    aligned: d.aligned,
                    seq: d.seq,
                });
            }
        }
        if copies.is_empty() {
            continue;
        }
        let ops: Vec<Op<'_>> = copies
            .iter()
            .map(|c| {
                let key = &bytes[c.key.0..c.key.1];
                match c.kind {
                    Kind::Put => Op::Put {
                        table: &c.table,
                        key,
                        value: &bytes[c.value.0..c.value.1],
                        align: if c.aligned { ValueAlign::Sixteen } else { ValueAlign::Packed },
                    },
                    Kind::Tombstone => Op::Delete { table: &c.table, key },
                    Kind::Clear => Op::Clear { table: &c.table },
                }
            })
            .collect();
        let seqs: Vec<u64> = copies.iter().map(|c| c.seq).collect();
        let place = inner.placement();
        w.append(&place, &ops, Some(&seqs)).inspect_err(|e| {
            if matches!(e, Error::Io { .. }) {
                inner.poison(&e.to_string());
            }
        })?;
        stats.bytes_rewritten += w.last_batch_len();
        stats.records_rewritten += copies.len() as u64;
        let segment = w.last_batch.0;
        let offsets: Vec<(u64, u64)> = w.last_value_offsets().collect();
        // The copies become the newest entries of their keys: the writer lock has been held
        // since they were found live, so nothing newer exists.
        let mut moved = Vec::with_capacity(copies.len());
        for (c, (record, offset)) in copies.iter().zip(offsets) {
            if c.kind != Kind::Put {
                continue;
            }
            let key = &bytes[c.key.0..c.key.1];
            let new = Loc::new(segment, record, offset, (c.value.1 - c.value.0) as u32, c.seq);
            moved.push((c.table.id, Entry { key: IndexKey::new(key), loc: Some(new) }));
        }
        let writer = &mut *w;
        writer.merge_due |= add_runs(&mut writer.working, &mut writer.usage, &mut moved);
        publish_synced(inner, &mut w)?;
    }
    Ok(())
}
