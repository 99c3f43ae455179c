//! One table's index: immutable sorted runs of entries, the newest on top of a base run.
//!
//! A commit adds its changes as one new run instead of copying paths of a persistent tree:
//! publishing a version clones a few `Arc`s, whatever the size of the table. Small runs are
//! merged into their predecessor as they come (a binary counter: each entry is copied
//! about log₂(recent entries / commit size) times), and the recent runs are merged into the
//! base once they hold a quarter of it (each entry is copied a few more times, sequentially).
//! A run never changes once made, so a reader's version keeps its runs as long as it
//! likes, and nobody waits for anybody.
//!
//! The smallest commits (a few keys) do not even make a run: their entries are appended to
//! the map's *tail*, a fixed array of slots shared by every version made since it began,
//! where a version sees the slots filled before it was made (a slot never changes once
//! filled). A full tail is sorted into a run. A commit of one key thus costs a slot, not the
//! copy of a small run and the making of its search arrays and filter.
//!
//! Lookups try the tail newest first, then the recent runs newest first, each behind a Bloom
//! filter, then the base. A
//! search in a run bisects its fences (the first 8 key bytes of every 64th entry) to a block,
//! counts the block's prefixes (the first 8 bytes of each key, kept apart from the entries)
//! below the key's, and compares whole keys only where prefixes are equal. A delete in a recent run is a tombstone entry; merging into the base drops it.
//!
//! Accounting rule: every `Some` entry present in a run, superseded or not, is counted once
//! in the writer's [`Usage`]. A superseded one is uncounted when a merge drops it.

use std::cmp::Ordering;
use std::fmt;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, OnceLock};

use super::index::{IndexKey, Loc, Probe, Usage};

/// Entries per fence block of a run.
#[cfg(not(test))]
const BLOCK: usize = 64;
#[cfg(test)]
const BLOCK: usize = 4;
/// A new run is merged into the newest recent run while that one is smaller than this, so
/// single-key commits do not pile up runs.
const SMALL_RUN: usize = 128;
/// The recent runs are merged into the base once they hold this many entries, or a quarter
/// of the base if that is more.
#[cfg(not(test))]
const MIN_BASE_MERGE: usize = 64 * 1024;
#[cfg(test)]
const MIN_BASE_MERGE: usize = 48;
/// A background merge of the recent runs into the base is due once they hold this many
/// entries, or 1/32 of the base if that is more (the writer merges by itself only at 1/4).
const BACKGROUND_MERGE: usize = 4096;
/// Bloom filter bits per entry of a recent run (three bits set per key, in one word: about
/// 3 % false positives).
const FILTER_BITS_PER_ENTRY: usize = 10;
/// Slots of a tail.
#[cfg(not(test))]
const TAIL_SLOTS: usize = 128;
#[cfg(test)]
const TAIL_SLOTS: usize = 6;
/// A commit of at most this many entries (per table) goes to the tail; larger ones make a
/// run.
const TAIL_BATCH: usize = 4;
/// Words of a tail's filter: [`FILTER_BITS_PER_ENTRY`] bits per slot.
const TAIL_FILTER_WORDS: usize = (TAIL_SLOTS * FILTER_BITS_PER_ENTRY).div_ceil(64).next_power_of_two();

/// An index entry: a key and where its value lies, or `None` for a delete that hides an
/// older entry (only in recent runs).
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) key: IndexKey,
    pub(crate) loc: Option<Loc>,
}

// An entry is a 64-byte slot (docs/design.md §6): the index's memory per key depends on it.
const _: () = assert!(std::mem::size_of::<Entry>() == 64);

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} → {:?}", self.key, self.loc)
    }
}

/// Entries sorted by key, each key once, never changed after it is made.
#[derive(Default)]
pub(crate) struct Run {
    entries: Vec<Entry>,
    /// The 8-byte prefix of the first key of each block of [`BLOCK`] entries.
    fences: Vec<u64>,
    /// The 8-byte prefix of every key.
    prefixes: Vec<u64>,
    /// A Bloom filter of the keys (empty: no filter, for the base).
    filter: Vec<u64>,
    /// Heap bytes of the run, keys outside the entries included.
    heap: usize,
}

impl Run {
    fn new(entries: Vec<Entry>, filtered: bool) -> Run {
        let prefixes: Vec<u64> = entries.iter().map(|e| e.key.prefix()).collect();
        let fences: Vec<u64> = prefixes.iter().step_by(BLOCK).copied().collect();
        let filter = if filtered { build_filter(&entries) } else { Vec::new() };
        let heap = entries.capacity() * std::mem::size_of::<Entry>()
            + entries.iter().map(|e| e.key.heap_bytes()).sum::<usize>()
            + (prefixes.capacity() + fences.capacity() + filter.capacity()) * 8;
        Run { entries, fences, prefixes, filter, heap }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    /// The index of the first entry whose key is not less than `probe`'s.
    fn lower_bound(&self, probe: &Probe<'_>) -> usize {
        let prefix = probe.prefix();
        // Entries before the block ahead of the first fence ≥ prefix are smaller; entries
        // from the first block whose fence is > prefix on are larger.
        let after = self.fences.partition_point(|&f| f < prefix);
        let first_block = after.saturating_sub(1);
        // Fences equal to the prefix (keys sharing their first 8 bytes over blocks: small
        // integers in wide keys, a common string prefix) may be many: bisect past them.
        let end_block = after + self.fences[after..].partition_point(|&f| f <= prefix);
        let start = first_block * BLOCK;
        let end = (end_block * BLOCK).min(self.entries.len()).max(start);
        // Within those blocks, the prefixes alone place the probe among keys of other
        // prefixes, and full keys are compared only where prefixes are equal. Counting
        // instead of bisecting loads the prefixes' cache lines in parallel, not one after
        // the other (a bisection of the entries themselves waited on six misses).
        let prefixes = self.prefixes.get(start..end).unwrap_or_default();
        let (less, equal) = if prefixes.len() <= 2 * BLOCK {
            let less = prefixes.iter().map(|&p| usize::from(p < prefix)).sum::<usize>();
            (less, prefixes.iter().map(|&p| usize::from(p == prefix)).sum::<usize>())
        } else {
            // Many blocks of one prefix (keys sharing their first 8 bytes): bisect.
            let less = prefixes.partition_point(|&p| p < prefix);
            (less, prefixes.partition_point(|&p| p <= prefix) - less)
        };
        let (low, high) = (start + less, start + less + equal);
        low + self.entries[low..high].partition_point(|e| e.key.as_bytes() < probe.bytes())
    }

    /// The index of the first entry whose key is greater than `probe`'s.
    fn upper_bound(&self, probe: &Probe<'_>) -> usize {
        let i = self.lower_bound(probe);
        match self.entries.get(i) {
            Some(e) if e.key.as_bytes() == probe.bytes() => i + 1,
            _ => i,
        }
    }

    fn find(&self, probe: &Probe<'_>) -> Option<&Entry> {
        let i = self.lower_bound(probe);
        self.entries.get(i).filter(|e| e.key.as_bytes() == probe.bytes())
    }

    /// The entries within the bounds.
    fn slice(&self, lower: Bound<&Probe<'_>>, upper: Bound<&Probe<'_>>) -> &[Entry] {
        slice_by(&self.entries, lower, upper, |p| self.lower_bound(p), |p| self.upper_bound(p))
    }

    /// Whether the key hashed to `hash` may be in this run.
    #[inline]
    fn may_contain(&self, hash: u64) -> bool {
        if self.filter.is_empty() {
            return true;
        }
        let word = self.filter[(hash >> 40) as usize & (self.filter.len() - 1)];
        let bits = filter_bits(hash);
        word & bits == bits
    }

    /// Heap bytes of this run.
    fn heap_bytes(&self) -> usize {
        self.heap
    }
}

/// The entries of the newest small commits, in commit order, in slots that are filled one
/// by one and never change once filled. Every version made since the tail began shares it
/// and sees the slots filled before it was made ([`TailView::len`]).
struct Tail {
    slots: Box<[OnceLock<Entry>]>,
    /// The prefix of each filled slot's key, scanned before any key is compared.
    prefixes: Box<[AtomicU64]>,
    /// A Bloom filter of the filled slots' keys. Bits are only ever added, so a version may
    /// see bits of later slots: false positives, never false negatives.
    filter: Box<[AtomicU64]>,
}

impl Tail {
    fn new() -> Tail {
        Tail {
            slots: (0..TAIL_SLOTS).map(|_| OnceLock::new()).collect(),
            prefixes: (0..TAIL_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            filter: (0..TAIL_FILTER_WORDS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Fills slot `i` with `entry`; `Err` gives the entry back if the slot was filled already
    /// (by another copy of the map: then the caller starts a tail of its own).
    fn fill(&self, i: usize, entry: Entry) -> Result<(), Entry> {
        let (prefix, hash) = (entry.key.prefix(), hash_key(entry.key.as_bytes()));
        self.slots.get(i).ok_or_else(|| entry.clone())?.set(entry)?;
        // Relaxed: a reader sees these through the version it loaded, which was published
        // (with release) after this write.
        self.prefixes[i].store(prefix, AtomicOrdering::Relaxed);
        self.filter[(hash >> 40) as usize & (TAIL_FILTER_WORDS - 1)]
            .fetch_or(filter_bits(hash), AtomicOrdering::Relaxed);
        Ok(())
    }
}

/// A version's view of a [`Tail`]: its first `len` slots, all filled.
#[derive(Clone)]
struct TailView {
    tail: Arc<Tail>,
    len: usize,
    /// The slots sorted by key, newest entry per key, made on first demand (ranges, `len`).
    sorted: Arc<OnceLock<Vec<Entry>>>,
}

impl TailView {
    /// The visible entries, oldest first.
    fn entries(&self) -> impl DoubleEndedIterator<Item = &Entry> + '_ {
        self.tail.slots[..self.len].iter().filter_map(OnceLock::get)
    }

    /// The entry of `probe`'s key in the newest slot that holds it.
    #[inline]
    fn find(&self, probe: &Probe<'_>, hash: u64) -> Option<&Entry> {
        let word =
            self.tail.filter[(hash >> 40) as usize & (TAIL_FILTER_WORDS - 1)].load(AtomicOrdering::Relaxed);
        let bits = filter_bits(hash);
        if word & bits != bits {
            return None;
        }
        let prefix = probe.prefix();
        (0..self.len).rev().find_map(|i| {
            if self.tail.prefixes[i].load(AtomicOrdering::Relaxed) != prefix {
                return None;
            }
            self.tail.slots[i].get().filter(|e| e.key.as_bytes() == probe.bytes())
        })
    }

    /// The visible entries sorted by key, each key once (its newest entry).
    fn sorted(&self) -> &[Entry] {
        self.sorted.get_or_init(|| sort_newest(self.entries().cloned().collect(), &mut |_, _| {}))
    }

    /// Heap bytes of the tail (shared with other versions: counted by each).
    fn heap_bytes(&self) -> usize {
        TAIL_SLOTS * (std::mem::size_of::<OnceLock<Entry>>() + 8)
            + TAIL_FILTER_WORDS * 8
            + self.entries().map(|e| e.key.heap_bytes()).sum::<usize>()
    }
}

/// The entries of sorted `entries` within the bounds, given the index of the first entry
/// not less than a probe (`lower_bound`) and of the first greater (`upper_bound`).
fn slice_by<'e>(
    entries: &'e [Entry],
    lower: Bound<&Probe<'_>>,
    upper: Bound<&Probe<'_>>,
    lower_bound: impl Fn(&Probe<'_>) -> usize,
    upper_bound: impl Fn(&Probe<'_>) -> usize,
) -> &'e [Entry] {
    let start = match lower {
        Bound::Included(p) => lower_bound(p),
        Bound::Excluded(p) => upper_bound(p),
        Bound::Unbounded => 0,
    };
    let end = match upper {
        Bound::Included(p) => upper_bound(p),
        Bound::Excluded(p) => lower_bound(p),
        Bound::Unbounded => entries.len(),
    };
    entries.get(start..end).unwrap_or(&[])
}

/// [`slice_by`] on a short sorted list (a tail's): plain bisection on whole keys.
fn slice_of<'e>(entries: &'e [Entry], lower: Bound<&Probe<'_>>, upper: Bound<&Probe<'_>>) -> &'e [Entry] {
    let at = |probe: &Probe<'_>, or_equal: bool| {
        entries.partition_point(|e| match e.key.as_bytes().cmp(probe.bytes()) {
            Ordering::Less => true,
            Ordering::Equal => or_equal,
            Ordering::Greater => false,
        })
    };
    slice_by(entries, lower, upper, |p| at(p, false), |p| at(p, true))
}

/// `entries` (in commit order) sorted by key, each key once with its newest entry; the
/// older entries of a key that are puts go to `uncount`.
fn sort_newest(mut entries: Vec<Entry>, uncount: &mut impl FnMut(usize, &Loc)) -> Vec<Entry> {
    // Stable: on one key, entries stay in commit order and the last one wins.
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    keep_newest(&mut entries, uncount);
    entries
}

/// Keeps the last of each run of entries with equal keys (`entries` sorted by key, stably);
/// the older ones that are puts go to `uncount`.
pub(crate) fn keep_newest(entries: &mut Vec<Entry>, uncount: &mut impl FnMut(usize, &Loc)) {
    entries.dedup_by(|later, kept| {
        if later.key != kept.key {
            return false;
        }
        // The later entry takes the kept one's place; the older one is dropped.
        std::mem::swap(later, kept);
        if let Some(old) = &later.loc {
            uncount(later.key.as_bytes().len(), old);
        }
        true
    });
}

/// The three bits of a filter word that `hash` sets.
#[inline]
fn filter_bits(hash: u64) -> u64 {
    (1 << (hash & 63)) | (1 << ((hash >> 6) & 63)) | (1 << ((hash >> 12) & 63))
}

fn build_filter(entries: &[Entry]) -> Vec<u64> {
    let words = (entries.len() * FILTER_BITS_PER_ENTRY).div_ceil(64).next_power_of_two();
    let mut filter = vec![0u64; words];
    for e in entries {
        let hash = hash_key(e.key.as_bytes());
        filter[(hash >> 40) as usize & (words - 1)] |= filter_bits(hash);
    }
    filter
}

/// A fast, well-mixed hash of a key for the filters (not for anything adversarial: a bad
/// spread only costs lookups their shortcut).
#[inline]
fn hash_key(key: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = K ^ key.len() as u64;
    let mut chunks = key.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes([
            chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
        ]);
        h = (h ^ word).wrapping_mul(K).rotate_left(29);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(last)).wrapping_mul(K).rotate_left(29);
    }
    h ^= h >> 32;
    h = h.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    h ^ (h >> 32)
}

/// One table's keys, as a version sees them. Cloning is a few reference counts.
#[derive(Clone, Default)]
pub(crate) struct TableMap {
    /// The bulk of the keys; no tombstones.
    base: Arc<Run>,
    /// Runs of recent commits, oldest first.
    recent: Vec<Arc<Run>>,
    /// Entries in `recent`.
    recent_entries: usize,
    /// The oldest runs of `recent` that a background merge is folding into the base: later
    /// commits do not merge into them.
    frozen: usize,
    /// The newest small commits, newer than every run.
    tail: Option<TailView>,
    /// The number of keys, counted on first demand when `recent` or `tail` is not empty.
    len: Arc<OnceLock<usize>>,
}

impl fmt::Debug for TableMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableMap")
            .field("base", &self.base.len())
            .field("recent", &self.recent.iter().map(|r| r.len()).collect::<Vec<_>>())
            .field("tail", &self.tail.as_ref().map_or(0, |t| t.len))
            .finish()
    }
}

impl TableMap {
    /// An empty map.
    pub(crate) fn new() -> TableMap {
        TableMap::default()
    }

    /// A map of `entries`, which must be sorted by key, each key once.
    pub(crate) fn from_sorted(entries: Vec<(IndexKey, Loc)>) -> TableMap {
        let entries = entries.into_iter().map(|(key, loc)| Entry { key, loc: Some(loc) }).collect();
        TableMap { base: Arc::new(Run::new(entries, false)), ..TableMap::default() }
    }

    /// Where the value of `key` lies.
    #[inline]
    pub(crate) fn get(&self, key: &[u8]) -> Option<Loc> {
        let probe = Probe::new(key);
        if !self.recent.is_empty() || self.tail.is_some() {
            let hash = hash_key(key);
            if let Some(entry) = self.tail.as_ref().and_then(|t| t.find(&probe, hash)) {
                return entry.loc;
            }
            for run in self.recent.iter().rev() {
                if run.may_contain(hash) {
                    if let Some(entry) = run.find(&probe) {
                        return entry.loc;
                    }
                }
            }
        }
        self.base.find(&probe).and_then(|e| e.loc)
    }

    /// Whether `key` is present.
    pub(crate) fn contains_key(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    /// The number of keys: immediate when the recent runs are merged, else counted once per
    /// version (a lookup in the base per recent entry).
    pub(crate) fn len(&self) -> usize {
        if self.recent.is_empty() && self.tail.is_none() {
            return self.base.len();
        }
        *self.len.get_or_init(|| {
            let mut len = self.base.len();
            for (key, loc) in self.recent_merged() {
                let in_base = self.base.find(&Probe::new(key.as_bytes())).is_some();
                match (loc.is_some(), in_base) {
                    (true, false) => len += 1,
                    (false, true) => len -= 1,
                    _ => {}
                }
            }
            len
        })
    }

    /// Every key and location, in key order.
    pub(crate) fn iter(&self) -> Iter<'_> {
        self.range(Bound::Unbounded, Bound::Unbounded)
    }

    /// The keys within the bounds and their locations, in key order.
    pub(crate) fn range(&self, lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> Iter<'_> {
        let (lower, upper) = (lower.map(Probe::new), upper.map(Probe::new));
        let base = self.base.slice(lower.as_ref(), upper.as_ref());
        if self.recent.is_empty() && self.tail.is_none() {
            return Iter::Base(base.iter());
        }
        let mut heads = Vec::with_capacity(self.recent.len() + 2);
        if let Some(tail) = &self.tail {
            heads.push(slice_of(tail.sorted(), lower.as_ref(), upper.as_ref()));
        }
        for run in self.recent.iter().rev() {
            heads.push(run.slice(lower.as_ref(), upper.as_ref()));
        }
        heads.push(base);
        Iter::Merged(Merge { heads })
    }

    /// Every entry held, superseded ones and tombstones included, in no particular order:
    /// what [`Usage`] counts.
    pub(crate) fn held(&self) -> impl Iterator<Item = (&IndexKey, &Loc)> {
        std::iter::once(&self.base)
            .chain(&self.recent)
            .flat_map(|run| run.entries.iter())
            .chain(self.tail.iter().flat_map(TailView::entries))
            .filter_map(|e| Some((&e.key, e.loc.as_ref()?)))
    }

    /// Heap bytes of the index of this table.
    pub(crate) fn heap_bytes(&self) -> usize {
        std::iter::once(&self.base).chain(&self.recent).map(|r| r.heap_bytes()).sum::<usize>()
            + self.recent.capacity() * 8
            + self.tail.as_ref().map_or(0, TailView::heap_bytes)
    }

    /// Adds a commit's changes: `entries` sorted by key, each key once, newer than every
    /// entry of the map. Entries that merges supersede are uncounted from `usage`.
    pub(crate) fn apply(&mut self, entries: Vec<Entry>, usage: &mut Usage) {
        if entries.is_empty() {
            return;
        }
        self.len = Arc::default();
        if self.base.len() == 0
            && self.recent.is_empty()
            && self.tail.is_none()
            && entries.len() > TAIL_BATCH
            && entries.iter().all(|e| e.loc.is_some())
        {
            // A first load becomes the base as it is.
            self.base = Arc::new(Run::new(entries, false));
            return;
        }
        if entries.len() <= TAIL_BATCH {
            let entries = match self.append_to_tail(entries) {
                Ok(()) => return,
                Err(rest) => rest,
            };
            // No room (or the slots were taken by another copy of the map): a new tail.
            self.seal_tail(usage);
            if let Err(rest) = self.append_to_tail(entries) {
                self.push_run(rest, usage);
            }
            return;
        }
        self.seal_tail(usage);
        self.push_run(entries, usage);
    }

    /// Appends `entries` (one commit's) to the tail, starting one if there is none; gives
    /// them back if they do not all fit. Nothing is appended then.
    fn append_to_tail(&mut self, entries: Vec<Entry>) -> Result<(), Vec<Entry>> {
        let view = self.tail.get_or_insert_with(|| TailView {
            tail: Arc::new(Tail::new()),
            len: 0,
            sorted: Arc::default(),
        });
        if view.len + entries.len() > TAIL_SLOTS {
            return Err(entries);
        }
        let start = view.len;
        let mut entries = entries.into_iter();
        while let Some(entry) = entries.next() {
            if let Err(entry) = view.tail.fill(view.len, entry) {
                // Another copy of this map filled the slot: the entries appended so far are
                // in this view's slots, the others go back (with them, re-read from the slots).
                let mut back: Vec<Entry> =
                    view.tail.slots[start..view.len].iter().filter_map(|s| s.get().cloned()).collect();
                back.push(entry);
                back.extend(entries);
                view.len = start;
                if view.len == 0 {
                    self.tail = None;
                }
                return Err(back);
            }
            view.len += 1;
        }
        view.sorted = Arc::default();
        Ok(())
    }

    /// Turns the tail into a recent run.
    fn seal_tail(&mut self, usage: &mut Usage) {
        let Some(view) = self.tail.take() else { return };
        let entries = sort_newest(view.entries().cloned().collect(), &mut uncount(usage));
        if !entries.is_empty() {
            self.push_run(entries, usage);
        }
    }

    /// Adds `entries` (sorted, each key once, newer than every run) as a recent run, and
    /// merges runs as the binary counter says.
    fn push_run(&mut self, entries: Vec<Entry>, usage: &mut Usage) {
        self.recent_entries += entries.len();
        self.recent.push(Arc::new(Run::new(entries, true)));
        while let [.., older, newer] = &self.recent[self.frozen..] {
            if older.len() >= SMALL_RUN && older.len() > 2 * newer.len() {
                break;
            }
            let merged = merge(&older.entries, &newer.entries, false, &mut uncount(usage));
            self.recent_entries = self.recent_entries + merged.len() - (older.len() + newer.len());
            self.recent.truncate(self.recent.len() - 2);
            self.recent.push(Arc::new(Run::new(merged, true)));
        }
        if self.recent_entries >= MIN_BASE_MERGE.max(self.base.len() / 4) {
            self.merge_recent(usage);
        }
    }

    /// Merges every recent run into the base, now.
    pub(crate) fn merge_recent(&mut self, usage: &mut Usage) {
        self.seal_tail(usage);
        let job = MergeJob { base: Arc::clone(&self.base), runs: std::mem::take(&mut self.recent) };
        self.base = job.fold(&mut uncount(usage));
        self.recent_entries = 0;
        self.frozen = 0;
        self.len = Arc::default();
    }

    /// Whether a background merge of the recent runs is due.
    pub(crate) fn merge_due(&self) -> bool {
        self.frozen == 0 && self.recent_entries >= BACKGROUND_MERGE.max(self.base.len() / 32)
    }

    /// Whether there are recent runs (or a tail) to merge.
    pub(crate) fn has_recent(&self) -> bool {
        !self.recent.is_empty() || self.tail.is_some()
    }

    /// Freezes the recent runs (the tail sealed into one first) for a background merge
    /// ([`MergeJob::run`], then [`install`](Self::install)); `None` if there are none or a
    /// merge is under way.
    pub(crate) fn freeze(&mut self, usage: &mut Usage) -> Option<MergeJob> {
        if self.frozen > 0 {
            return None;
        }
        self.seal_tail(usage);
        if self.recent.is_empty() {
            return None;
        }
        self.frozen = self.recent.len();
        Some(MergeJob { base: Arc::clone(&self.base), runs: self.recent.clone() })
    }

    /// Replaces the base and the runs a background merge folded with its result, unless the
    /// map changed under it (cleared, or merged by the writer): then the result is dropped.
    /// Returns whether it was installed.
    pub(crate) fn install(&mut self, merged: Merged, usage: &mut Usage) -> bool {
        let Merged { job, base, superseded } = merged;
        let unchanged = Arc::ptr_eq(&self.base, &job.base)
            && self.frozen == job.runs.len()
            && self.recent.iter().zip(&job.runs).filter(|(a, b)| Arc::ptr_eq(a, b)).count() == job.runs.len();
        if !unchanged {
            return false;
        }
        for (key_len, loc) in &superseded {
            usage.remove(*key_len, loc);
        }
        self.base = base;
        self.recent.drain(..job.runs.len());
        self.recent_entries -= job.runs.iter().map(|r| r.len()).sum::<usize>();
        self.frozen = 0;
        self.len = Arc::default();
        true
    }

    /// The recent runs merged: each key once, its newest entry, tombstones included.
    fn recent_merged(&self) -> impl Iterator<Item = (&IndexKey, Option<&Loc>)> {
        let tail = self.tail.iter().map(|t| t.sorted());
        let heads = tail.chain(self.recent.iter().rev().map(|r| &r.entries[..])).collect();
        MergeAll(Merge { heads })
    }
}

/// A base and the recent runs over it, to fold into a new base.
pub(crate) struct MergeJob {
    base: Arc<Run>,
    /// Oldest first.
    runs: Vec<Arc<Run>>,
}

/// The result of a [`MergeJob`], for [`TableMap::install`].
pub(crate) struct Merged {
    job: MergeJob,
    base: Arc<Run>,
    /// Key length and location of every entry the merge dropped as superseded: what the
    /// writer's [`Usage`] stops counting when the result is installed.
    superseded: Vec<(usize, Loc)>,
}

impl MergeJob {
    /// Folds the runs into a new base: no lock held, the writer goes on meanwhile.
    pub(crate) fn run(self) -> Merged {
        let mut superseded = Vec::new();
        let base = self.fold(&mut |key_len: usize, loc: &Loc| superseded.push((key_len, *loc)));
        Merged { job: self, base, superseded }
    }

    /// The runs merged into the base, newest winning; superseded entries go to `uncount`.
    fn fold(&self, uncount: &mut impl FnMut(usize, &Loc)) -> Arc<Run> {
        let Some((newest, older)) = self.runs.split_last() else { return Arc::clone(&self.base) };
        let mut merged = Vec::new();
        for run in older.iter().rev() {
            let newer = if merged.is_empty() { &newest.entries } else { &merged };
            merged = merge(&run.entries, newer, false, uncount);
        }
        let recent = if older.is_empty() { &newest.entries } else { &merged };
        Arc::new(Run::new(merge(&self.base.entries, recent, true, uncount), false))
    }
}

/// Uncounts superseded entries from `usage`.
fn uncount(usage: &mut Usage) -> impl FnMut(usize, &Loc) + '_ {
    |key_len, loc| usage.remove(key_len, loc)
}

/// Merges two runs, `newer` winning on equal keys; a superseded `Some` entry goes to
/// `uncount`. Into the base, tombstones are dropped.
fn merge(
    older: &[Entry],
    newer: &[Entry],
    into_base: bool,
    uncount: &mut impl FnMut(usize, &Loc),
) -> Vec<Entry> {
    let mut out = Vec::with_capacity(older.len() + newer.len());
    let keep = |e: &Entry| !into_base || e.loc.is_some();
    let (mut i, mut j) = (0, 0);
    while i < older.len() && j < newer.len() {
        let (o, n) = (&older[i], &newer[j]);
        match o.key.cmp(&n.key) {
            Ordering::Less => {
                out.push(o.clone());
                i += 1;
            }
            Ordering::Greater => {
                if keep(n) {
                    out.push(n.clone());
                }
                j += 1;
            }
            Ordering::Equal => {
                if let Some(old) = &o.loc {
                    uncount(o.key.as_bytes().len(), old);
                }
                if keep(n) {
                    out.push(n.clone());
                }
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&older[i..]);
    out.extend(newer[j..].iter().filter(|e| keep(e)).cloned());
    out
}

/// Keys and locations of a [`TableMap::range`], in key order.
pub(crate) enum Iter<'a> {
    /// Only the base: a slice.
    Base(std::slice::Iter<'a, Entry>),
    /// Recent runs over the base.
    Merged(Merge<'a>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a IndexKey, &'a Loc);

    /// Always inlined into range scans, as `engine::Range::next` is (see `RawRange::next_with`).
    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Base(entries) => entries.find_map(|e| Some((&e.key, e.loc.as_ref()?))),
            Iter::Merged(merge) => loop {
                let (key, loc) = merge.next_entry()?;
                if let Some(loc) = loc {
                    return Some((key, loc));
                }
            },
        }
    }
}

/// A merge of runs' remaining entries, newest run first: each key once, from the newest run
/// that holds it.
pub(crate) struct Merge<'a> {
    heads: Vec<&'a [Entry]>,
}

impl<'a> Merge<'a> {
    #[inline]
    fn next_entry(&mut self) -> Option<(&'a IndexKey, Option<&'a Loc>)> {
        let mut best: Option<(usize, &'a Entry)> = None;
        for (i, head) in self.heads.iter().enumerate() {
            if let Some(e) = head.first() {
                if best.is_none_or(|(_, b)| e.key < b.key) {
                    best = Some((i, e));
                }
            }
        }
        let (_, entry) = best?;
        for head in &mut self.heads {
            if head.first().is_some_and(|e| e.key == entry.key) {
                *head = &head[1..];
            }
        }
        Some((&entry.key, entry.loc.as_ref()))
    }
}

/// [`Merge`] over recent runs only, tombstones included.
struct MergeAll<'a>(Merge<'a>);

impl<'a> Iterator for MergeAll<'a> {
    type Item = (&'a IndexKey, Option<&'a Loc>);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next_entry()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::ops::RangeBounds;

    use proptest::prelude::*;

    use super::*;

    fn keys() -> impl Strategy<Value = Vec<u8>> {
        // Few distinct bytes and long shared prefixes: equal 8-byte prefixes across blocks.
        let byte = prop_oneof![Just(0u8), Just(1), Just(255)];
        (proptest::collection::vec(byte, 0..12), 0..3usize).prop_map(|(mut k, pad)| {
            k.splice(0..0, std::iter::repeat_n(7u8, pad * 4));
            k
        })
    }

    /// (key, put or delete) pairs.
    type Batch = Vec<(Vec<u8>, bool)>;

    /// Batches of (key, put or delete), each with what to do after it: nothing, freeze the
    /// recent runs for a background merge, or install the merge frozen earlier.
    fn batches() -> impl Strategy<Value = Vec<(Batch, u8)>> {
        // Half the commits small enough for the tail.
        let entry = || (keys(), any::<bool>());
        let batch = prop_oneof![
            proptest::collection::vec(entry(), 1..=TAIL_BATCH),
            proptest::collection::vec(entry(), 1..40)
        ];
        proptest::collection::vec((batch, 0..4u8), 1..40)
    }

    /// Undoes a test's `freeze` of the map (a job that will never be installed).
    fn job_reset(map: &mut TableMap) {
        map.frozen = 0;
    }

    fn loc(seq: u64, n: u64) -> Loc {
        Loc::new(1, n * 10 + 64, n * 10 + 70, 10, seq)
    }

    /// The sum of what `usage` counts for segment 1.
    fn counted(usage: &Usage) -> u64 {
        usage.live(1)
    }

    fn held_bytes(map: &TableMap) -> u64 {
        map.held().map(|(k, l)| super::super::index::footprint(k.as_bytes().len(), l.len)).sum()
    }

    proptest! {
        #[test]
        fn table_map_matches_a_btreemap(batches in batches(), bounds in (keys(), keys(), 0..3u8, 0..3u8)) {
            let mut map = TableMap::new();
            let mut model: BTreeMap<Vec<u8>, Loc> = BTreeMap::new();
            let mut usage = Usage::default();
            let mut old_versions = Vec::new();
            let mut job = None;
            for (seq, (batch, then)) in batches.iter().enumerate() {
                let seq = seq as u64 + 1;
                old_versions.push((map.clone(), model.clone()));
                let mut pending: Vec<(Vec<u8>, Option<Loc>)> = Vec::new();
                for (n, (key, put)) in batch.iter().enumerate() {
                    let l = put.then(|| loc(seq, n as u64));
                    match l {
                        Some(l) => { model.insert(key.clone(), l); }
                        None => { model.remove(key); }
                    }
                    pending.retain(|(k, _)| k != key);
                    pending.push((key.clone(), l));
                }
                pending.sort_by(|a, b| a.0.cmp(&b.0));
                for (key, l) in &pending {
                    if let Some(l) = l {
                        usage.add(key.len(), l);
                    }
                }
                let entries = pending.into_iter().map(|(k, loc)| Entry { key: IndexKey::new(&k), loc }).collect();
                map.apply(entries, &mut usage);

                prop_assert_eq!(map.len(), model.len());
                prop_assert_eq!(counted(&usage), held_bytes(&map));
                for (key, l) in &model {
                    prop_assert_eq!(map.get(key), Some(*l));
                }
                let all: Vec<(Vec<u8>, Loc)> = map.iter().map(|(k, l)| (k.as_bytes().to_vec(), *l)).collect();
                let expected: Vec<(Vec<u8>, Loc)> = model.iter().map(|(k, l)| (k.clone(), *l)).collect();
                prop_assert_eq!(&all, &expected);
                for (key, _) in batch {
                    prop_assert_eq!(map.get(key), model.get(key).copied());
                }
                match then {
                    1 => job = job.or_else(|| map.freeze(&mut usage)),
                    2 => {
                        if let Some(job) = job.take() {
                            let merged: Merged = job.run();
                            map.install(merged, &mut usage);
                            prop_assert!(map.freeze(&mut usage).is_some() || !map.has_recent());
                            job_reset(&mut map);
                        }
                    }
                    _ => {}
                }
                prop_assert_eq!(counted(&usage), held_bytes(&map));
                prop_assert_eq!(map.len(), model.len());
            }
            // Old versions are untouched by later commits.
            for (old, model) in &old_versions {
                prop_assert_eq!(old.len(), model.len());
                let all: Vec<Vec<u8>> = old.iter().map(|(k, _)| k.as_bytes().to_vec()).collect();
                prop_assert_eq!(all, model.keys().cloned().collect::<Vec<_>>());
            }
            // Ranges, with every kind of bound.
            let (a, b, ka, kb) = bounds;
            let bound = |k: &Vec<u8>, kind: u8| match kind {
                0 => Bound::Included(k.clone()),
                1 => Bound::Excluded(k.clone()),
                _ => Bound::Unbounded,
            };
            let (lower, upper) = (bound(&a, ka), bound(&b, kb));
            fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
                b.as_ref().map(|k| &k[..])
            }
            let got: Vec<Vec<u8>> = map.range(as_ref(&lower), as_ref(&upper)).map(|(k, _)| k.as_bytes().to_vec()).collect();
            let want: Vec<Vec<u8>> = model
                .keys()
                .filter(|k| (lower.as_ref().map(|b| &b[..]), upper.as_ref().map(|b| &b[..])).contains(&&k[..]))
                .cloned()
                .collect();
            prop_assert_eq!(got, want);
            map.merge_recent(&mut usage);
            prop_assert_eq!(counted(&usage), held_bytes(&map));
            prop_assert_eq!(map.len(), model.len());
        }
    }

    #[test]
    fn a_bulk_load_becomes_the_base_and_a_probe_between_fences_finds_nothing() {
        let entries: Vec<(IndexKey, Loc)> =
            (0u64..1000).map(|i| (IndexKey::new(&(i * 2).to_be_bytes()), loc(1, i))).collect();
        let map = TableMap::from_sorted(entries);
        assert_eq!(map.len(), 1000);
        for i in 0u64..1000 {
            assert_eq!(map.get(&(i * 2).to_be_bytes()), Some(loc(1, i)));
            assert_eq!(map.get(&(i * 2 + 1).to_be_bytes()), None);
        }
        let from = 11u64.to_be_bytes();
        let first: Vec<Vec<u8>> = map
            .range(Bound::Included(&from[..]), Bound::Unbounded)
            .take(2)
            .map(|(k, _)| k.as_bytes().to_vec())
            .collect();
        assert_eq!(first, vec![12u64.to_be_bytes().to_vec(), 14u64.to_be_bytes().to_vec()]);
    }

    #[test]
    fn copies_of_a_map_that_append_to_one_tail_each_keep_their_own_entries() {
        let entry = |i: u64, seq: u64| Entry { key: IndexKey::new(&i.to_be_bytes()), loc: Some(loc(seq, i)) };
        let mut usage = Usage::default();
        let mut a = TableMap::new();
        a.apply(vec![entry(1, 1)], &mut usage);
        let mut b = a.clone();
        let snapshot = a.clone();
        // Both copies append after the same slot: the second finds it taken and starts its
        // own tail.
        a.apply(vec![entry(2, 2), entry(3, 2)], &mut usage);
        b.apply(vec![entry(4, 3)], &mut usage);
        b.apply(vec![entry(5, 4)], &mut usage);
        let keys = |m: &TableMap| m.iter().map(|(k, _)| k.as_bytes().to_vec()).collect::<Vec<_>>();
        let be = |i: u64| i.to_be_bytes().to_vec();
        assert_eq!(keys(&a), vec![be(1), be(2), be(3)]);
        assert_eq!(keys(&b), vec![be(1), be(4), be(5)]);
        assert_eq!(keys(&snapshot), vec![be(1)]);
        assert_eq!(a.get(&4u64.to_be_bytes()), None);
        assert_eq!(b.get(&2u64.to_be_bytes()), None);
        assert_eq!((a.len(), b.len(), snapshot.len()), (3, 3, 1));
        // A copy whose append is cut short by a taken slot gets its entries back whole.
        let mut c = snapshot.clone();
        c.apply(vec![entry(6, 5), entry(7, 5)], &mut usage);
        assert_eq!(keys(&c), vec![be(1), be(6), be(7)]);
    }

    #[test]
    fn a_background_merge_installs_under_later_commits_and_is_dropped_after_a_clear() {
        let key = |i: u64| IndexKey::new(&i.to_be_bytes());
        let run = |seq: u64, keys: std::ops::Range<u64>| -> Vec<Entry> {
            keys.map(|i| Entry { key: key(i), loc: Some(loc(seq, i)) }).collect()
        };
        let mut usage = Usage::default();
        let mut map = TableMap::new();
        map.apply(run(1, 0..20), &mut usage);
        map.apply(run(2, 10..15), &mut usage);
        let job = map.freeze(&mut usage).expect("recent runs to merge");
        assert!(map.freeze(&mut usage).is_none(), "one merge at a time");
        map.apply(run(3, 12..13), &mut usage);
        map.apply(vec![Entry { key: key(0), loc: None }], &mut usage);
        assert!(map.install(job.run(), &mut usage));
        assert_eq!(map.base.len(), 20, "the frozen runs are in the base");
        let tail = map.tail.as_ref().map_or(0, |t| t.len);
        assert_eq!(map.recent.iter().map(|r| r.len()).sum::<usize>() + tail, 2, "later commits stay recent");
        assert_eq!(map.len(), 19);
        assert_eq!(map.get(&12u64.to_be_bytes()), Some(loc(3, 12)));
        assert_eq!(map.get(&11u64.to_be_bytes()), Some(loc(2, 11)));
        assert_eq!(map.get(&0u64.to_be_bytes()), None);

        let job = map.freeze(&mut usage).expect("recent runs to merge");
        map = TableMap::new();
        map.apply(run(4, 0..1), &mut usage);
        assert!(!map.install(job.run(), &mut usage), "a merge of a cleared map is dropped");
        assert_eq!(map.len(), 1);
    }
}
