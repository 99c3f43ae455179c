//! Reliability tests of the native engine (`typed_kv::engine`): torn tails, flipped bits,
//! failing I/O, values and snapshots held across compaction, the directory lock, durability
//! modes, group commit, and deleted keys that must never come back.
//!
//! Every check compares the whole store with a model (table → key → value), so a lost, partial
//! or resurrected write shows up as a difference. Loops that reopen a store thousands of times
//! run on `/dev/shm` when it exists (fsync is free there; a reopen's recovery logic is the same).

#![cfg(feature = "native")]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::diff_tables;
use typed_kv::engine::io::{FaultOp, FaultyVfs};
use typed_kv::engine::{Db, Error, Op, Options, Snapshot, SyncMode, Table, ValueAlign};

// ---------------------------------------------------------------------------------------------
// The largest single allocation made by the current thread: a corrupt length field must never
// turn into a huge allocation.

struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: delegates every call to the system allocator unchanged; only records sizes.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

/// Runs `f` and returns its result with the largest allocation this thread made meanwhile.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(Cell::get))
}

/// No allocation made while recovering our small test stores comes near this.
const SANE_ALLOCATION: usize = 16 << 20;

// ---------------------------------------------------------------------------------------------
// Directories and files.

/// A fresh directory, on tmpfs when there is one.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new().prefix("typed-kv-test-").tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("temp dir")
}

/// Copies the engine files of `from` into `to` (created if missing, and replaced if present;
/// it may lie inside `from`).
fn copy_dir(from: &Path, to: &Path) {
    if to.exists() {
        std::fs::remove_dir_all(to).expect("clear the copy");
    }
    std::fs::create_dir_all(to).expect("create the copy");
    for name in file_names(from) {
        if name != "LOCK" && from.join(&name).is_file() {
            std::fs::copy(from.join(&name), to.join(&name)).expect("copy a file");
        }
    }
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list the directory")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Segment files, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    file_names(dir).into_iter().filter(|n| n.starts_with("seg-")).map(|n| dir.join(n)).collect()
}

fn hints(dir: &Path) -> Vec<PathBuf> {
    file_names(dir).into_iter().filter(|n| n.starts_with("hint-")).map(|n| dir.join(n)).collect()
}

fn remove_hints(dir: &Path) {
    for hint in hints(dir) {
        std::fs::remove_file(hint).expect("remove a hint");
    }
}

fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("seg-{id:010}.tkv"))
}

fn segment_id(path: &Path) -> u32 {
    let name = path.file_name().and_then(|n| n.to_str()).expect("file name");
    name.trim_start_matches("seg-").trim_end_matches(".tkv").parse().expect("segment id")
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("file metadata").len()
}

/// Flips bit `bit` (counted from the start of the file) of `path`.
fn flip_bit(path: &Path, bit: u64) {
    let mut bytes = std::fs::read(path).expect("read for a flip");
    bytes[(bit / 8) as usize] ^= 1 << (bit % 8);
    std::fs::write(path, bytes).expect("write the flip");
}

fn append(path: &Path, extra: &[u8]) {
    let mut bytes = std::fs::read(path).expect("read for an append");
    bytes.extend_from_slice(extra);
    std::fs::write(path, bytes).expect("write the append");
}

/// Waits (yielding, never sleeping) until `done` holds; fails after a generous deadline.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

// ---------------------------------------------------------------------------------------------
// The model: what the store must hold.

/// Table name → key → value; tables without keys are listed too.
type Contents = common::Tables;

/// One write of a batch, owned.
#[derive(Debug, Clone)]
enum Step {
    Put(&'static str, Vec<u8>, Vec<u8>, ValueAlign),
    Delete(&'static str, Vec<u8>),
    Clear(&'static str),
}

impl Step {
    fn table(&self) -> &'static str {
        match self {
            Step::Put(t, ..) | Step::Delete(t, _) | Step::Clear(t) => t,
        }
    }
}

fn put(table: &'static str, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Step {
    Step::Put(table, key.into(), value.into(), ValueAlign::Packed)
}

/// `len` bytes that depend on `seed`.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    fastrand::Rng::with_seed(seed).fill(&mut out);
    out
}

fn apply(contents: &mut Contents, steps: &[Step]) {
    for step in steps {
        let table =
            contents.get_mut(step.table()).unwrap_or_else(|| panic!("model: no table {}", step.table()));
        match step {
            Step::Put(_, key, value, _) => {
                table.insert(key.clone(), value.clone());
            }
            Step::Delete(_, key) => {
                table.remove(key);
            }
            Step::Clear(_) => table.clear(),
        }
    }
}

fn applied(contents: &Contents, steps: &[Step]) -> Contents {
    let mut next = contents.clone();
    apply(&mut next, steps);
    next
}

fn empty_tables(names: &[&str]) -> Contents {
    names.iter().map(|n| (n.to_string(), BTreeMap::new())).collect()
}

/// Writes `steps` as one batch (their tables must exist).
fn commit(db: &Db, steps: &[Step]) -> typed_kv::engine::Result<()> {
    let tables: BTreeMap<&str, Table> = steps
        .iter()
        .map(|s| (s.table(), db.find_table(s.table()).unwrap_or_else(|| panic!("no table {}", s.table()))))
        .collect();
    let ops: Vec<Op<'_>> = steps
        .iter()
        .map(|s| match s {
            Step::Put(t, key, value, align) => Op::Put { table: &tables[t], key, value, align: *align },
            Step::Delete(t, key) => Op::Delete { table: &tables[t], key },
            Step::Clear(t) => Op::Clear { table: &tables[t] },
        })
        .collect();
    db.write(&ops)
}

fn dump_snapshot(snapshot: &Snapshot, tables: &[Table]) -> Contents {
    tables
        .iter()
        .map(|table| {
            let entries = snapshot
                .range(table, ..)
                .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())).expect("read"))
                .collect();
            (table.name().to_owned(), entries)
        })
        .collect()
}

/// Everything the store holds.
fn dump(db: &Db) -> Contents {
    dump_snapshot(&db.snapshot(), &db.tables())
}

fn assert_contents(db: &Db, expected: &Contents, what: &str) {
    let found = dump(db);
    assert!(
        found == *expected,
        "{what}: the store differs from the model: {}",
        diff_tables(&found, expected)
    );
}

/// Options without background work, so that every file operation is the test's doing, and
/// without preallocated zeros, so that a segment's length is the end of its last batch (the
/// torn-tail and bit-flip tests find batches by file length; `i_preallocated_zeros…` covers
/// preallocation).
fn quiet(segment_size: u64) -> Options {
    Options {
        segment_size,
        checkpoint_bytes: 0,
        compaction_threshold: 0.0,
        preallocate: 0,
        ..Options::default()
    }
}

/// Reopens `dir` with its hint, then without any, checking the contents both times.
fn reopen_both_ways(dir: &Path, options: &Options, expected: &Contents, what: &str) {
    for with_hint in [true, false] {
        if !with_hint {
            remove_hints(dir);
        }
        let db = Db::open(dir, options.clone()).unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
        let report = db.stats().recovery;
        assert_eq!(report.hint_used, with_hint, "{what}: hint use on reopen: {report:?}");
        assert_contents(
            &db,
            expected,
            &format!("{what}, reopened {}", if with_hint { "with hint" } else { "by scan" }),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// (a) Torn tails.

/// Batch `b` of the torn-tail and bit-flip stores: 1–3 new keys in `a`/`b` (both alignments),
/// the overwrite of a hot key, and (when `deletes`) the delete of a key of batch `b - 3`.
fn small_batch(b: u64, deletes: bool) -> Vec<Step> {
    let mut rng = fastrand::Rng::with_seed(b + 1000);
    let mut steps = Vec::new();
    for i in 0..rng.usize(1..=3) {
        let table = if rng.bool() { "a" } else { "b" };
        let align = if rng.bool() { ValueAlign::Sixteen } else { ValueAlign::Packed };
        let value = bytes(b * 10 + i as u64, rng.usize(0..150));
        steps.push(Step::Put(table, format!("b{b:04}-{i}").into_bytes(), value, align));
    }
    if deletes {
        steps.push(put("a", "hot", bytes(b, 24)));
        if b >= 3 {
            steps.push(Step::Delete("a", format!("b{:04}-0", b - 3).into_bytes()));
            steps.push(Step::Delete("b", format!("b{:04}-0", b - 3).into_bytes()));
        }
    }
    steps
}

/// Which hint a torn-tail reopen finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HintCase {
    /// None: the log is scanned.
    Absent,
    /// One written before the last batches: used when the cut leaves its resume point.
    Middle,
    /// The one written at close: its resume point is the end of the log.
    Final,
}

#[test]
fn a_torn_tail_of_the_newest_segment_is_cut_back_to_whole_batches() {
    let src = scratch();
    let options = || quiet(8 << 10);
    let db = Db::open(src.path(), options()).expect("open");
    db.table("a").expect("table a");
    db.table("b").expect("table b");
    // states[m]: the store after m batches; places[i]: segment and end offset of batch i.
    let mut states = vec![empty_tables(&["a", "b"])];
    let mut places: Vec<(u32, u64)> = Vec::new();
    let mut middle: Option<(String, Vec<u8>)> = None;
    let mut after_middle = 0;
    for b in 0.. {
        assert!(b < 1000, "the store never rotated enough");
        let steps = small_batch(b, true);
        commit(&db, &steps).expect("write");
        states.push(applied(states.last().expect("a state"), &steps));
        let newest = segments(src.path()).pop().expect("a segment");
        let id = segment_id(&newest);
        places.push((id, file_len(&newest)));
        if middle.is_some() {
            after_middle += 1;
            if after_middle == 5 {
                break;
            }
        } else if id >= 3 && places.iter().filter(|p| p.0 == id).count() == 3 {
            db.checkpoint().expect("checkpoint");
            let hint = hints(src.path()).pop().expect("the checkpoint's hint");
            let name = hint.file_name().expect("name").to_string_lossy().into_owned();
            middle = Some((name, std::fs::read(&hint).expect("read the hint")));
        }
    }
    drop(db);
    let (middle_name, middle_bytes) = middle.expect("a middle hint");
    let newest_id = places.last().expect("batches").0;
    assert!(places[places.len() - 6..].iter().all(|p| p.0 == newest_id), "the last batches share a segment");
    let resume = places[places.len() - 6].1;
    let newest_len = places.last().expect("batches").1;
    assert_eq!(hints(src.path()).len(), 1, "one hint after close");

    let work = src.path().join("work");
    let mut cuts: Vec<u64> = vec![0, 1, 31, 63, 64];
    cuts.extend(resume..=newest_len);
    let mut reopens = 0;
    for &cut in &cuts {
        // Batches that end at or before the cut survive; so do all batches of older segments.
        let survivors = places.iter().take_while(|p| p.0 < newest_id || (cut >= 64 && p.1 <= cut)).count();
        let kept_end =
            places[..survivors].iter().filter(|p| p.0 == newest_id).map(|p| p.1).max().unwrap_or(64);
        let torn = if cut < 64 { cut } else { cut - kept_end };
        for case in [HintCase::Absent, HintCase::Middle, HintCase::Final] {
            let what = format!("cut at {cut} of {newest_len}, hint {case:?}");
            copy_dir(src.path(), &work);
            let newest = segment_path(&work, newest_id);
            std::fs::OpenOptions::new()
                .write(true)
                .open(&newest)
                .expect("open")
                .set_len(cut)
                .expect("truncate");
            if case != HintCase::Final {
                remove_hints(&work);
            }
            if case == HintCase::Middle {
                std::fs::write(work.join(&middle_name), &middle_bytes).expect("plant the middle hint");
            }
            // The manifest lists the newest segment, so its header was durable; a hint's
            // resume point was durable too. A cut below either is damage, not a torn write.
            let cut_below_durable = cut < 64
                || match case {
                    HintCase::Absent => false,
                    HintCase::Middle => cut < resume,
                    HintCase::Final => cut < newest_len,
                };
            let opened = Db::open(&work, options());
            reopens += 1;
            if cut_below_durable {
                match opened {
                    Err(Error::Corrupt { path, .. }) | Err(Error::Missing { path, .. }) => {
                        assert_eq!(path, newest, "{what}: the error names the file")
                    }
                    Err(e) => panic!("{what}: expected Corrupt or Missing, got {e}"),
                    Ok(db) => panic!("{what}: the cut went unnoticed: {:?}", db.stats().recovery),
                }
                continue;
            }
            let db = opened.unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
            let report = db.stats().recovery;
            assert_eq!(report.hint_used, case != HintCase::Absent, "{what}: {report:?}");
            assert_eq!(report.hint_rejected, None, "{what}: {report:?}");
            assert_eq!(report.torn_tail_bytes, torn, "{what}: bytes cut: {report:?}");
            assert!(report.repaired.is_empty(), "{what}: {report:?}");
            assert_contents(&db, &states[survivors], &format!("{what} ({survivors} batches survive)"));
            assert_eq!(
                file_len(&newest),
                kept_end,
                "{what}: the file is truncated after the last whole batch"
            );
            // Appending after the cut point works, and the new batch survives a reopen.
            if cut % 16 == 0 {
                let extra = vec![put("b", "extra", bytes(cut, 40))];
                commit(&db, &extra).unwrap_or_else(|e| panic!("{what}: write after recovery: {e}"));
                drop(db);
                let db = Db::open(&work, options()).unwrap_or_else(|e| panic!("{what}: second reopen: {e}"));
                assert_contents(
                    &db,
                    &applied(&states[survivors], &extra),
                    &format!("{what}, then one more batch"),
                );
            }
        }
    }
    eprintln!(
        "torn tails: {} cut points in the last {} bytes of a {newest_len}-byte newest segment, {reopens} reopens",
        cuts.len(),
        newest_len - resume
    );
}

// ---------------------------------------------------------------------------------------------
// (b) Flipped bits and corrupt lengths.

/// A store of unique keys (no overwrite, no delete) over at least four segments, closed: its
/// batches and, per batch, its segment and byte range.
struct Flipped {
    dir: tempfile::TempDir,
    batches: Vec<Vec<Step>>,
    /// Segment id, start and end offset of each batch.
    places: Vec<(u32, u64, u64)>,
}

impl Flipped {
    fn build() -> Flipped {
        let dir = scratch();
        let db = Db::open(dir.path(), quiet(2 << 10)).expect("open");
        db.table("a").expect("table a");
        db.table("b").expect("table b");
        let mut batches = Vec::new();
        let mut places: Vec<(u32, u64, u64)> = Vec::new();
        while segments(dir.path()).len() < 5 {
            let steps = small_batch(batches.len() as u64, false);
            commit(&db, &steps).expect("write");
            let newest = segments(dir.path()).pop().expect("a segment");
            let id = segment_id(&newest);
            let start = places.last().filter(|p| p.0 == id).map_or(64, |p| p.2);
            places.push((id, start, file_len(&newest)));
            batches.push(steps);
        }
        drop(db);
        Flipped { dir, batches, places }
    }

    fn options(&self, repair: bool) -> Options {
        Options { repair, ..quiet(2 << 10) }
    }

    /// The store with the batches `keep` says.
    fn contents(&self, keep: impl Fn(usize) -> bool) -> Contents {
        let mut contents = empty_tables(&["a", "b"]);
        for (i, steps) in self.batches.iter().enumerate() {
            if keep(i) {
                apply(&mut contents, steps);
            }
        }
        contents
    }
}

#[test]
fn b1_a_flipped_bit_in_a_sealed_segment_is_corruption_at_its_batch_or_repaired() {
    let store = Flipped::build();
    let src = store.dir.path();
    let sealed_id = 2;
    let sealed = segment_path(src, sealed_id);
    let len = file_len(&sealed);
    // Every bit of the header and of the first 40 record bytes, and 300 random bits.
    let mut rng = fastrand::Rng::with_seed(0xF11B);
    let mut bits: BTreeSet<u64> = (0..(64 + 40) * 8).collect();
    bits.extend((0..300).map(|_| rng.u64(64 * 8..len * 8)));
    let work = src.join("work");
    let (mut strict, mut repaired) = (0, 0);
    for &bit in &bits {
        let byte = bit / 8;
        let what = format!("bit {bit} (byte {byte} of {len}) of sealed segment {sealed_id}");
        copy_dir(src, &work);
        // Without a hint the whole log is scanned (a hint would skip the sealed segments).
        remove_hints(&work);
        let damaged = segment_path(&work, sealed_id);
        flip_bit(&damaged, bit);
        // The damaged batch: the one holding the byte (offset 0 for the header).
        let batch = store.places.iter().position(|p| p.0 == sealed_id && p.1 <= byte && byte < p.2);
        let expected_offset =
            if byte < 64 { 0 } else { store.places[batch.expect("a batch holds the byte")].1 };
        match Db::open(&work, store.options(false)) {
            Err(Error::Corrupt { path, offset, reason }) => {
                assert_eq!(path, damaged, "{what}: the error names the file ({reason})");
                assert_eq!(offset, expected_offset, "{what}: the error's offset ({reason})");
            }
            Err(e) => panic!("{what}: expected Corrupt, got {e}"),
            Ok(_) => panic!("{what}: the damage went unnoticed"),
        }
        strict += 1;
        let repair = Db::open(&work, store.options(true));
        if byte < 64 {
            // A segment whose header is damaged is not guessed at, even with `repair`.
            match repair {
                Err(Error::Corrupt { path, offset: 0, .. }) => assert_eq!(path, damaged, "{what}"),
                Err(e) => panic!("{what}: with repair, expected Corrupt at 0, got {e}"),
                Ok(_) => panic!("{what}: with repair, a damaged header was accepted"),
            }
            continue;
        }
        let db = repair.unwrap_or_else(|e| panic!("{what}: repair failed: {e}"));
        repaired += 1;
        let report = db.stats().recovery;
        let name = format!("seg-{sealed_id:010}.tkv");
        assert_eq!(report.repaired.len(), 1, "{what}: one drop reported: {report:?}");
        assert!(
            report.repaired[0].contains(&name)
                && report.repaired[0].contains(&format!("offset {expected_offset}")),
            "{what}: the report names file and offset: {report:?}"
        );
        // Dropped: the damaged batch and the rest of its segment; every other batch is whole.
        let expected =
            store.contents(|i| store.places[i].0 != sealed_id || store.places[i].2 <= expected_offset);
        assert_contents(&db, &expected, &format!("{what}, repaired"));
        if repaired % 16 == 1 {
            drop(db);
            let db =
                Db::open(&work, store.options(false)).unwrap_or_else(|e| panic!("{what}: after repair: {e}"));
            assert!(db.stats().recovery.repaired.is_empty(), "{what}: the repair is done once");
            assert_contents(&db, &expected, &format!("{what}, reopened after the repair"));
        }
    }
    eprintln!("bit flips in a sealed segment: {strict} refused opens, {repaired} repaired opens");
}

#[test]
fn b2_a_flipped_bit_in_a_hint_is_ignored_and_the_log_is_scanned() {
    let store = Flipped::build();
    let src = store.dir.path();
    let hint = hints(src).pop().expect("the close's hint");
    let name = hint.file_name().expect("name").to_owned();
    let len = file_len(&hint);
    let mut rng = fastrand::Rng::with_seed(0x41A7);
    let mut bits: BTreeSet<u64> = (0..48 * 8).collect();
    bits.extend((len - 8) * 8..len * 8);
    bits.extend((0..300).map(|_| rng.u64(..len * 8)));
    let expected = store.contents(|_| true);
    let work = src.join("work");
    for &bit in &bits {
        let what = format!("bit {bit} of the {len}-byte hint");
        copy_dir(src, &work);
        flip_bit(&work.join(&name), bit);
        let db =
            Db::open(&work, store.options(false)).unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
        let report = db.stats().recovery;
        assert!(
            !report.hint_used && report.hint_rejected.is_some(),
            "{what}: the hint is rejected: {report:?}"
        );
        assert_contents(&db, &expected, &what);
    }
    eprintln!("bit flips in a hint: {} reopens, all by scan", bits.len());
}

#[test]
fn b3_a_flipped_bit_in_the_table_directory_is_an_error() {
    let store = Flipped::build();
    let src = store.dir.path();
    let len = file_len(&src.join("tables.tkv"));
    let work = src.join("work");
    for bit in 0..len * 8 {
        copy_dir(src, &work);
        let tables = work.join("tables.tkv");
        flip_bit(&tables, bit);
        match Db::open(&work, store.options(true)) {
            Err(Error::Corrupt { path, .. }) => {
                assert_eq!(path, tables, "bit {bit}: the error names the file")
            }
            Err(e) => panic!("bit {bit} of tables.tkv: expected Corrupt, got {e}"),
            Ok(_) => panic!("bit {bit} of tables.tkv: the damage went unnoticed"),
        }
    }
}

/// A store of one committed pair whose only segment is renamed (file name and header) to
/// `id`; the renamed file's path.
fn renumbered_store(dir: &Path, id: u32) -> PathBuf {
    let db = Db::open(dir, quiet(1 << 20)).expect("open");
    db.table("t").expect("table");
    commit(&db, &[put("t", "k", "v")]).expect("commit");
    drop(db);
    remove_hints(dir);
    let [only] = segments(dir).try_into().expect("one segment");
    let mut bytes = std::fs::read(&only).expect("read");
    let (_, first_seq) = typed_kv::engine::fuzzing::decode_segment_header(&bytes).expect("header");
    let header = typed_kv::engine::fuzzing::encode_segment_header(id, first_seq);
    bytes[..header.len()].copy_from_slice(&header);
    let renamed = segment_path(dir, id);
    std::fs::write(&renamed, &bytes).expect("write");
    std::fs::remove_file(&only).expect("remove");
    // The manifest lists the renamed segment.
    let tables = dir.join("tables.tkv");
    let (next_id, names, _) =
        typed_kv::engine::fuzzing::decode_table_dir(&std::fs::read(&tables).expect("read"))
            .expect("manifest");
    let manifest = typed_kv::engine::fuzzing::encode_table_dir(next_id, names, Some((Vec::new(), id)));
    std::fs::write(&tables, manifest).expect("write the manifest");
    renamed
}

#[test]
fn b6_a_segment_renamed_to_the_last_possible_id_is_an_error_not_an_overflow() {
    let dir = scratch();
    let last = renumbered_store(dir.path(), u32::MAX);
    let before = std::fs::read(&last).expect("read");
    match Db::open(dir.path(), quiet(1 << 20)) {
        Err(Error::Corrupt { path, offset: 0, reason }) => {
            assert_eq!(path, last);
            assert!(reason.contains("largest possible"), "{reason}");
        }
        Err(e) => panic!("expected Corrupt naming {}, got {e}", last.display()),
        Ok(_) => panic!("a segment with the last id was opened, and the next rotation would overflow"),
    }
    assert_eq!(std::fs::read(&last).expect("read"), before, "the refused open changed nothing");
}

#[test]
fn b7_a_rotation_past_the_last_segment_id_fails_and_poisons_without_losing_data() {
    let dir = scratch();
    renumbered_store(dir.path(), u32::MAX - 1);
    let db = Db::open(dir.path(), quiet(1 << 20)).expect("the second-to-last id opens");
    let expected = applied(&empty_tables(&["t"]), &[put("t", "k", "v")]);
    assert_contents(&db, &expected, "renumbered store");
    // Larger than the segment's room: it needs a new segment, and no id is left for one.
    let big = vec![7u8; 2 << 20];
    let err = commit(&db, &[put("t", "big", big)]).expect_err("no segment id is left");
    assert!(
        matches!(&err, Error::Io { .. }) && err.to_string().contains("segment ids are exhausted"),
        "{err}"
    );
    assert!(commit(&db, &[put("t", "small", "x")]).is_err(), "the engine refuses writes after the failure");
    drop(db);
    let db = Db::open(dir.path(), quiet(1 << 20)).expect("reopen");
    assert_contents(&db, &expected, "after the failed rotation");
}

/// Batches written as given (under 64 ops) and in key order (64 and more), with keys repeated
/// and deleted within the batch: the last op on a key wins, live and after
/// reopening with and without the hint.
#[test]
fn a2_the_last_op_on_a_key_wins_in_batches_of_every_size() {
    let dir = scratch();
    let options = quiet(1 << 20);
    let db = Db::open(dir.path(), options.clone()).expect("open");
    db.table("t").expect("table");
    let mut expected = empty_tables(&["t"]);
    for (b, len) in [10u64, 1_000, 20_000].into_iter().enumerate() {
        let mut rng = fastrand::Rng::with_seed(b as u64);
        let steps: Vec<Step> = (0..len)
            .map(|i| {
                let key = format!("k{:06}", rng.u64(..len / 2)).into_bytes();
                if rng.u8(..5) == 0 {
                    Step::Delete("t", key)
                } else {
                    Step::Put("t", key, bytes(i + 1000 * b as u64, rng.usize(0..40)), ValueAlign::Packed)
                }
            })
            .collect();
        commit(&db, &steps).expect("commit");
        apply(&mut expected, &steps);
        assert_contents(&db, &expected, &format!("after the batch of {len} ops"));
    }
    drop(db);
    reopen_both_ways(dir.path(), &options, &expected, "batches of every size");
}

#[test]
fn b4_a_damaged_header_of_the_newest_segment_is_corruption_unless_nothing_follows_it() {
    let store = Flipped::build();
    let src = store.dir.path();
    let newest_id = store.places.last().expect("batches").0;
    assert!(store.places.iter().any(|p| p.0 == newest_id), "the newest segment holds batches");
    let work = src.join("work");
    // Records follow the header, so it was whole once: a flip is damage, never a torn creation
    // (which would silently delete acknowledged batches).
    for bit in 0..64 * 8 {
        for repair in [false, true] {
            copy_dir(src, &work);
            remove_hints(&work);
            let newest = segment_path(&work, newest_id);
            flip_bit(&newest, bit);
            match Db::open(&work, store.options(repair)) {
                Err(Error::Corrupt { path, offset: 0, .. }) => assert_eq!(path, newest, "bit {bit}"),
                Err(e) => {
                    panic!("bit {bit} of the newest header (repair {repair}): expected Corrupt at 0, got {e}")
                }
                Ok(db) => panic!(
                    "bit {bit} of the newest header (repair {repair}) went unnoticed: {:?}; {}",
                    db.stats().recovery,
                    diff_tables(&dump(&db), &store.contents(|_| true))
                ),
            }
        }
    }
    // The newest segment, listed in the manifest, cut to a damaged header: its header was
    // synced before the manifest listed it, so this is damage too.
    copy_dir(src, &work);
    remove_hints(&work);
    let newest = segment_path(&work, newest_id);
    std::fs::OpenOptions::new().write(true).open(&newest).expect("open").set_len(64).expect("truncate");
    flip_bit(&newest, 100);
    match Db::open(&work, store.options(false)) {
        Err(Error::Corrupt { path, offset: 0, .. }) => assert_eq!(path, newest),
        Err(e) => {
            panic!("a listed header-only segment with a damaged header: expected Corrupt at 0, got {e}")
        }
        Ok(db) => panic!("a listed segment's damaged header went unnoticed: {:?}", db.stats().recovery),
    }
    // A segment after the newest listed one, with at most a (damaged) header: a rotation
    // interrupted before its manifest, removed.
    for len in [0, 30, 64] {
        copy_dir(src, &work);
        remove_hints(&work);
        let unlisted = segment_path(&work, newest_id + 1);
        let mut header = std::fs::read(segment_path(&work, newest_id)).expect("read")[..len].to_vec();
        if len > 12 {
            header[12] ^= 1;
        }
        std::fs::write(&unlisted, &header).expect("plant the interrupted rotation");
        let db = Db::open(&work, store.options(false)).expect("open after an interrupted rotation");
        assert_eq!(db.stats().recovery.torn_tail_bytes, len as u64, "the header-only segment is cut");
        assert!(!unlisted.exists(), "the header-only segment is removed");
        assert_contents(&db, &store.contents(|_| true), "every segment intact");
    }
}

/// A record header (kind put, last of its batch) claiming a value of 2^30 bytes, then a few
/// bytes: the file is far shorter than the record says.
fn record_claiming_a_gigabyte() -> Vec<u8> {
    let mut record = vec![0xde, 0xad, 0xbe, 0xef, 0x01 | 0x10, 0x05, 0x01, 0x01];
    record.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x04]); // varint 2^30
    record.extend_from_slice(b"k and a few bytes");
    record
}

/// A hint with a valid checksum whose body is `body` (after magic, seq and resume point).
fn forged_hint(resume: (u32, u64), body: &[u8]) -> Vec<u8> {
    let mut hint = b"TKVHNT\0\x01".to_vec();
    hint.extend_from_slice(&u64::MAX.to_le_bytes());
    hint.extend_from_slice(&resume.0.to_le_bytes());
    hint.extend_from_slice(&resume.1.to_le_bytes());
    hint.extend_from_slice(body);
    let crc = crc32c::crc32c(&hint);
    hint.extend_from_slice(&crc.to_le_bytes());
    hint
}

#[test]
fn b5_corrupt_length_fields_are_errors_not_huge_allocations() {
    let store = Flipped::build();
    let src = store.dir.path();
    let everything = store.contents(|_| true);
    let work = src.join("work");
    let record = record_claiming_a_gigabyte();

    // In a sealed segment: Corrupt at the record.
    copy_dir(src, &work);
    remove_hints(&work);
    let sealed = segment_path(&work, 1);
    let at = file_len(&sealed);
    append(&sealed, &record);
    let (result, largest) = largest_allocation(|| Db::open(&work, store.options(false)));
    match result {
        Err(Error::Corrupt { path, offset, reason }) => {
            assert_eq!((path, offset), (sealed.clone(), at), "the error names the record ({reason})");
        }
        Err(e) => panic!("a 1 GiB length in a sealed segment: expected Corrupt, got {e}"),
        Ok(_) => panic!("a 1 GiB length in a sealed segment went unnoticed"),
    }
    assert!(largest < SANE_ALLOCATION, "a corrupt length led to an allocation of {largest} bytes");

    // At the end of the newest segment: a torn tail, cut off.
    copy_dir(src, &work);
    remove_hints(&work);
    let newest = segments(&work).pop().expect("a segment");
    append(&newest, &record);
    let (result, largest) = largest_allocation(|| Db::open(&work, store.options(false)));
    let db = result.unwrap_or_else(|e| panic!("a 1 GiB length at the tail: {e}"));
    assert_eq!(db.stats().recovery.torn_tail_bytes, record.len() as u64, "the bogus record is cut off");
    assert!(largest < SANE_ALLOCATION, "a corrupt length led to an allocation of {largest} bytes");
    assert_contents(&db, &everything, "after cutting a bogus tail record");
    drop(db);

    // Hints whose checksums hold but whose counts and lengths are absurd: rejected, scanned.
    let newest_id = store.places.last().expect("batches").0;
    let resume = (newest_id, 64);
    let mut huge_key = Vec::new();
    huge_key.extend_from_slice(&1u32.to_le_bytes()); // one table
    huge_key.extend_from_slice(&1u32.to_le_bytes()); // id 1
    huge_key.extend_from_slice(&1u64.to_le_bytes()); // one entry
    huge_key.extend_from_slice(&(1u32 << 31).to_le_bytes()); // a 2 GiB key
    huge_key.extend_from_slice(b"key");
    let mut huge_count = Vec::new();
    huge_count.extend_from_slice(&1u32.to_le_bytes());
    huge_count.extend_from_slice(&1u32.to_le_bytes());
    huge_count.extend_from_slice(&u64::MAX.to_le_bytes()); // 2^64 - 1 entries
    huge_count.extend_from_slice(&[7; 40]);
    let huge_tables = u32::MAX.to_le_bytes().to_vec();
    for (what, body) in [("key length", huge_key), ("entry count", huge_count), ("table count", huge_tables)]
    {
        copy_dir(src, &work);
        remove_hints(&work);
        std::fs::write(work.join(format!("hint-{:020}.tkv", u64::MAX - 1)), forged_hint(resume, &body))
            .expect("plant a hint");
        let (result, largest) = largest_allocation(|| Db::open(&work, store.options(false)));
        let db = result.unwrap_or_else(|e| panic!("a hint with a huge {what}: {e}"));
        let report = db.stats().recovery;
        assert!(report.hint_rejected.is_some() && !report.hint_used, "huge {what}: {report:?}");
        assert!(largest < SANE_ALLOCATION, "a hint's {what} led to an allocation of {largest} bytes");
        assert_contents(&db, &everything, &format!("after rejecting a hint with a huge {what}"));
    }

    // A table directory with a valid checksum claiming 2^32 - 1 tables.
    copy_dir(src, &work);
    let mut tables = b"TKVTBL\0\x01".to_vec();
    tables.extend_from_slice(&10u32.to_le_bytes());
    tables.extend_from_slice(&u32::MAX.to_le_bytes());
    tables.extend_from_slice(&[1, 0, 0, 0, 1, 0, b'a']);
    let crc = crc32c::crc32c(&tables);
    tables.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(work.join("tables.tkv"), tables).expect("plant a table directory");
    let (result, largest) = largest_allocation(|| Db::open(&work, store.options(false)));
    match result {
        Err(Error::Corrupt { path, .. }) => assert_eq!(path, work.join("tables.tkv")),
        Err(e) => panic!("a table directory claiming 2^32 - 1 tables: expected Corrupt, got {e}"),
        Ok(_) => panic!("a table directory claiming 2^32 - 1 tables was accepted"),
    }
    assert!(largest < SANE_ALLOCATION, "a table count led to an allocation of {largest} bytes");
}

// ---------------------------------------------------------------------------------------------
// (c) Failing I/O.

/// One step of the fault workload.
#[derive(Debug, Clone)]
enum Action {
    Table(&'static str),
    DropTable(&'static str),
    Batch(Vec<Step>),
    Delete(&'static str, Vec<u8>),
    Compact,
    Checkpoint,
    Flush,
}

fn fault_batch(rng: &mut fastrand::Rng, tables: &[&'static str], big: bool) -> Action {
    let mut steps = Vec::new();
    for _ in 0..rng.usize(1..=4) {
        let table = tables[rng.usize(..tables.len())];
        let len = if big { rng.usize(200..700) } else { rng.usize(0..200) };
        let align = if rng.bool() { ValueAlign::Sixteen } else { ValueAlign::Packed };
        steps.push(Step::Put(
            table,
            format!("k{:02}", rng.u8(..24)).into_bytes(),
            bytes(rng.u64(..), len),
            align,
        ));
    }
    if rng.bool() {
        steps.push(Step::Delete(
            tables[rng.usize(..tables.len())],
            format!("k{:02}", rng.u8(..24)).into_bytes(),
        ));
    }
    Action::Batch(steps)
}

/// The fixed workload: tables created and dropped, batches with rotations, a single delete,
/// a clear, two compactions, a batch written in several chunks, a checkpoint and a flush.
fn fault_actions() -> Vec<Action> {
    let mut rng = fastrand::Rng::with_seed(0xFA17);
    let mut actions = vec![Action::Table("a"), Action::Table("b")];
    actions.extend((0..10).map(|_| fault_batch(&mut rng, &["a", "b"], false)));
    actions.push(Action::Delete("a", b"k03".to_vec()));
    actions.push(Action::Compact);
    actions.push(Action::Table("c"));
    actions.extend((0..4).map(|_| fault_batch(&mut rng, &["a", "c"], true)));
    actions.push(Action::Checkpoint);
    actions.push(Action::Batch(vec![Step::Clear("b"), put("b", "k01", "after the clear")]));
    actions.push(Action::DropTable("c"));
    actions.extend((0..6).map(|_| fault_batch(&mut rng, &["a", "b"], true)));
    // A batch of 3 MB, written a chunk (1 MiB) at a time, then copied by the compaction
    // after it in chunks too: a failure between chunks leaves a torn batch in the file,
    // which must not come back.
    actions.push(Action::Batch(
        (0..5u64)
            .map(|i| {
                Step::Put("a", format!("huge{i}").into_bytes(), bytes(i, 600 << 10), ValueAlign::Sixteen)
            })
            .collect(),
    ));
    actions.push(Action::Compact);
    actions.extend((0..3).map(|_| fault_batch(&mut rng, &["a", "b"], false)));
    actions.push(Action::Flush);
    actions.push(Action::Checkpoint);
    actions
}

fn fault_options(vfs: &FaultyVfs) -> Options {
    Options { vfs: Arc::new(vfs.clone()), ..quiet(2 << 10) }
}

/// The first error of a faulty run.
#[derive(Debug)]
struct Failure {
    /// "open", or the action's index and debug form.
    action: String,
    error: String,
    /// The store if the failed action took effect anyway (it may have).
    maybe: Option<Contents>,
    poisoned: bool,
}

/// What a faulty run did.
#[derive(Debug)]
struct FaultRun {
    /// The store after each acknowledged change (the first: empty).
    acked: Vec<Contents>,
    failure: Option<Failure>,
    /// Operations counted before the clean close, by `FaultOp`.
    before_close: [u64; 4],
    after_close: [u64; 4],
}

const OPS: [FaultOp; 4] = [FaultOp::Write, FaultOp::Sync, FaultOp::Rename, FaultOp::Map];

fn counts(vfs: &FaultyVfs) -> [u64; 4] {
    OPS.map(|op| vfs.count(op))
}

/// Runs one action; for changes, also the store it leads to.
fn perform(db: &Db, action: &Action, before: &Contents) -> (typed_kv::engine::Result<()>, Option<Contents>) {
    let mut after = before.clone();
    match action {
        Action::Table(name) => {
            after.entry(name.to_string()).or_default();
            (db.table(name).map(drop), Some(after))
        }
        Action::DropTable(name) => {
            after.remove(*name);
            let result = db.drop_table(name).map(|dropped| assert!(dropped, "drop_table({name}) found it"));
            (result, Some(after))
        }
        Action::Batch(steps) => {
            apply(&mut after, steps);
            (commit(db, steps), Some(after))
        }
        Action::Delete(name, key) => {
            let present = after.get_mut(*name).expect("model table").remove(key).is_some();
            let table = db.find_table(name).expect("table");
            let result = db.delete(&table, key).map(|found| assert_eq!(found, present, "delete's answer"));
            (result, Some(after))
        }
        Action::Compact => (db.compact().map(drop), None),
        Action::Checkpoint => (db.checkpoint(), None),
        Action::Flush => (db.flush(), None),
    }
}

/// After a failure that poisoned the engine, every write is refused with the first cause.
fn assert_refuses_writes(db: &Db, what: &str) {
    let refused = |e: Error| match e {
        Error::Poisoned { cause } => {
            assert!(cause.contains("injected failure"), "{what}: the cause is the first failure: {cause}")
        }
        e => panic!("{what}: expected Poisoned, got {e}"),
    };
    if let Some(table) = db.tables().into_iter().next() {
        let op = Op::Put { table: &table, key: b"late", value: b"late", align: ValueAlign::Packed };
        refused(db.write(&[op]).expect_err("write after a failure"));
        refused(db.delete(&table, b"k01").expect_err("delete after a failure"));
    }
    refused(db.table("late").expect_err("table creation after a failure"));
    refused(db.drop_table("a").expect_err("drop_table after a failure"));
    refused(db.compact().expect_err("compact after a failure"));
}

/// Runs the workload on `vfs` in `dir`, then closes the store.
fn run_faulty(dir: &Path, vfs: &FaultyVfs) -> FaultRun {
    let mut acked = vec![Contents::new()];
    let db = match Db::open(dir, fault_options(vfs)) {
        Ok(db) => db,
        Err(e) => {
            let failure =
                Failure { action: "open".into(), error: e.to_string(), maybe: None, poisoned: false };
            return FaultRun {
                acked,
                failure: Some(failure),
                before_close: counts(vfs),
                after_close: counts(vfs),
            };
        }
    };
    let mut failure = None;
    for (i, action) in fault_actions().iter().enumerate() {
        let before = acked.last().expect("a state").clone();
        let (result, after) = perform(&db, action, &before);
        match result {
            Ok(()) => acked.extend(after),
            Err(e) => {
                let what = format!("action {i} ({action:?})");
                let poisoned = db.stats().poisoned.is_some();
                // Readers never see what was not acknowledged.
                assert_contents(&db, &before, &format!("{what} failed ({e}); the open store"));
                if poisoned {
                    assert_refuses_writes(&db, &what);
                } else {
                    // Only a hint or a directory sync after compaction may fail without
                    // poisoning: the log itself is intact and durable.
                    assert!(
                        matches!(action, Action::Compact | Action::Checkpoint)
                            && matches!(e, Error::Io { .. }),
                        "{what}: failed without poisoning the engine: {e}"
                    );
                }
                failure = Some(Failure { action: what, error: e.to_string(), maybe: after, poisoned });
                if poisoned {
                    break;
                }
            }
        }
    }
    let before_close = counts(vfs);
    drop(db);
    FaultRun { acked, failure, before_close, after_close: counts(vfs) }
}

#[test]
fn c_failed_io_poisons_the_engine_and_loses_no_acknowledged_commit() {
    let reference_dir = scratch();
    let reference_vfs = FaultyVfs::new();
    let reference = run_faulty(reference_dir.path(), &reference_vfs);
    assert!(
        reference.failure.is_none(),
        "the workload runs without injected failures: {:?}",
        reference.failure
    );
    let again_dir = scratch();
    let again = run_faulty(again_dir.path(), &FaultyVfs::new());
    assert_eq!(
        (again.before_close, again.after_close),
        (reference.before_close, reference.after_close),
        "the workload's file operations are deterministic"
    );
    let mut summary = Vec::new();
    for (slot, op) in OPS.into_iter().enumerate() {
        let (mut poisoned, mut failed_open, mut at_close, mut acked_commits) = (0, 0, 0, 0);
        let (mut not_poisoning, mut unpoisoned) = (0, BTreeSet::new());
        for n in 1..=reference.after_close[slot] {
            let what = format!("{op:?} #{n}");
            let dir = scratch();
            let vfs = FaultyVfs::new();
            vfs.fail_nth(op, n);
            let run = run_faulty(dir.path(), &vfs);
            assert!(vfs.count(op) >= n, "{what}: the failure was reached");
            acked_commits += run.acked.len() - 1;
            if n <= reference.before_close[slot] {
                let failure =
                    run.failure.as_ref().unwrap_or_else(|| panic!("{what}: the workload saw no error"));
                assert!(failure.error.contains("injected failure"), "{what}: {failure:?}");
                if failure.poisoned {
                    poisoned += 1;
                } else if failure.action == "open" {
                    failed_open += 1;
                } else {
                    // The action and the error without the file name and failure number.
                    let kind = failure.action.split(" (").next().unwrap_or_default();
                    let doing = failure.error.split(" /").next().unwrap_or_default();
                    not_poisoning += 1;
                    unpoisoned.insert(format!("{kind} ({doing})"));
                }
            } else {
                // The failure hit the clean close, which reports nothing: the log is the truth.
                assert!(run.failure.is_none(), "{what}: a failure at close: {:?}", run.failure);
                at_close += 1;
            }
            let db = Db::open(dir.path(), quiet(2 << 10))
                .unwrap_or_else(|e| panic!("{what}: reopening with the OS file system failed: {e}"));
            let found = dump(&db);
            let last = run.acked.last().expect("a state");
            let maybe = run.failure.as_ref().and_then(|f| f.maybe.as_ref());
            assert!(
                found == *last || Some(&found) == maybe,
                "{what}: after {} acknowledged changes and {:?}, the reopened store differs: {}",
                run.acked.len() - 1,
                run.failure,
                diff_tables(&found, last)
            );
            // The reopened store takes writes again.
            let table = db.table("after").unwrap_or_else(|e| panic!("{what}: table after reopen: {e}"));
            let op = Op::Put { table: &table, key: b"k", value: b"v", align: ValueAlign::Packed };
            db.write(&[op]).unwrap_or_else(|e| panic!("{what}: write after reopen: {e}"));
        }
        summary.push(format!(
            "{op:?}: {} runs ({poisoned} poisoned, {failed_open} failed opens, {} not poisoning [{}], {at_close} \
             at close), {acked_commits} acknowledged changes in all",
            reference.after_close[slot],
            not_poisoning,
            unpoisoned.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    eprintln!("failing I/O: {}", summary.join("; "));
}

// ---------------------------------------------------------------------------------------------
// (d) Values and snapshots outlive overwrites, rotation and compaction.

#[test]
fn d_held_values_and_snapshots_survive_overwrites_rotation_and_compaction() {
    let dir = scratch();
    let db = Db::open(dir.path(), quiet(4 << 10)).expect("open");
    let t = db.table("t").expect("table");
    let first = bytes(0, 100);
    commit(&db, &[Step::Put("t", b"k".to_vec(), first.clone(), ValueAlign::Sixteen), put("t", "other", "o")])
        .expect("write");
    let snapshot = db.snapshot();
    let snapshot_tables = db.tables();
    let old = dump(&db);
    let mut held = vec![(first.clone(), db.get(&t, b"k").expect("read").expect("k"))];
    assert_eq!(held[0].1.as_ptr() as usize % 16, 0, "a Sixteen value is 16-byte aligned in memory");
    let first_segment = held[0].1.segment_id();
    let mut latest = first;
    for i in 1..=150u64 {
        latest = bytes(i, 150 + i as usize);
        let align = if i % 2 == 0 { ValueAlign::Sixteen } else { ValueAlign::Packed };
        commit(
            &db,
            &[Step::Put("t", b"k".to_vec(), latest.clone(), align), put("t", format!("n{}", i % 10), "x")],
        )
        .expect("overwrite");
        if i % 30 == 0 {
            held.push((latest.clone(), db.get(&t, b"k").expect("read").expect("k")));
        }
    }
    let before = db.stats();
    assert!(before.segments >= 5, "overwrites rotated the log: {before:?}");
    let compaction = db.compact().expect("compact");
    assert!(compaction.segments_compacted >= 5, "{compaction:?}");
    for (_, value) in &held {
        let file = segment_path(dir.path(), value.segment_id());
        assert!(!file.exists(), "compaction deleted segment {} that a held value reads", value.segment_id());
    }
    assert!(!segment_path(dir.path(), first_segment).exists(), "the first value's segment is deleted");
    for (i, (expected, value)) in held.iter().enumerate() {
        assert_eq!(&value[..], &expected[..], "held value {i} reads its own bytes after compaction");
    }
    assert_eq!(db.get(&t, b"k").expect("read").as_deref(), Some(&latest[..]), "the current value");
    assert_eq!(
        snapshot.get(&t, b"k").expect("read").map(|v| v.to_vec()),
        Some(held[0].0.clone()),
        "the snapshot's value"
    );
    let seen = dump_snapshot(&snapshot, &snapshot_tables);
    assert!(seen == old, "the snapshot still sees its state: {}", diff_tables(&seen, &old));
    // The Db itself may go; what was read stays readable.
    drop(db);
    for (i, (expected, value)) in held.iter().enumerate() {
        assert_eq!(&value[..], &expected[..], "held value {i} after the Db was dropped");
    }
    assert!(dump_snapshot(&snapshot, &snapshot_tables) == old, "the snapshot after the Db was dropped");
}

/// Small commits write zeros ahead of the log so that later ones do not grow the file. A
/// crash image (the directory copied while the Db is open) ends in those zeros: reopening it
/// loses nothing and cuts them without calling them torn. A sealed segment and a cleanly
/// closed one end at their last record.
#[test]
fn i_preallocated_zeros_are_cut_at_sealing_close_and_recovery() {
    let dir = scratch();
    let preallocate = 8 << 10;
    let options = || Options { preallocate, ..quiet(32 << 10) };
    let db = Db::open(dir.path(), options()).expect("open");
    db.table("a").expect("table a");
    db.table("b").expect("table b");
    let mut contents = empty_tables(&["a", "b"]);
    let mut grew = 0;
    for b in 0..400 {
        let steps = small_batch(b, true);
        let newest = segments(dir.path()).pop().expect("a segment");
        let before = file_len(&newest);
        commit(&db, &steps).expect("write");
        apply(&mut contents, &steps);
        let after = file_len(&segments(dir.path()).pop().expect("a segment"));
        if segment_id(&newest) == segment_id(&segments(dir.path()).pop().expect("a segment"))
            && after > before
        {
            grew += 1;
        }
    }
    let all = segments(dir.path());
    assert!(all.len() >= 3, "the log rotated: {} segments", all.len());
    // 400 batches of ~350 bytes: about 140 KB grown 8 KiB at a time, about 20 times.
    assert!((1..=40).contains(&grew), "files grew {grew} times in 400 small commits");
    // A bulk load (at least 64 times the preallocation) gets a segment with room for zeros
    // after it: the small commits that follow neither rotate the segment nor grow the file.
    let bulk: Vec<Step> = (0..5u64).map(|i| put("a", format!("bulk{i}"), bytes(i, 120 << 10))).collect();
    commit(&db, &bulk).expect("bulk load");
    apply(&mut contents, &bulk);
    let bulk_segment = segments(dir.path()).pop().expect("a segment");
    let bulk_len = file_len(&bulk_segment);
    for b in 400..410 {
        let steps = small_batch(b, false);
        commit(&db, &steps).expect("write after the bulk load");
        apply(&mut contents, &steps);
        assert_eq!(segments(dir.path()).pop().as_ref(), Some(&bulk_segment), "batch {b} rotated");
        assert_eq!(file_len(&bulk_segment), bulk_len, "batch {b} grew the file");
    }
    let all = segments(dir.path());
    let newest = all.last().expect("a segment");
    let lengths: Vec<u64> = all.iter().map(|p| file_len(p)).collect();

    // A crash image: reopening it keeps every commit and cuts the zeros, untorn.
    let image = dir.path().join("crash");
    copy_dir(dir.path(), &image);
    let reopened = Db::open(&image, options()).expect("reopen the crash image");
    let report = reopened.stats().recovery;
    assert_eq!(report.torn_tail_bytes, 0, "zeros are not a torn tail: {report:?}");
    assert_contents(&reopened, &contents, "the crash image");
    drop(reopened);
    let cut: Vec<u64> = segments(&image).iter().map(|p| file_len(p)).collect();
    let data_end = *cut.last().expect("a segment");
    assert!(
        lengths.last().is_some_and(|&len| len > data_end),
        "zeros lay ahead of the newest segment's data"
    );
    assert_eq!(cut[..cut.len() - 1], lengths[..lengths.len() - 1], "sealed segments had no zeros to cut");

    // A clean close leaves no zeros behind.
    drop(db);
    assert_eq!(file_len(newest), data_end, "a clean close cuts the zeros");
    let reopened = Db::open(dir.path(), options()).expect("reopen");
    assert_eq!(reopened.stats().recovery.torn_tail_bytes, 0);
    assert_contents(&reopened, &contents, "after a clean close");
}

// ---------------------------------------------------------------------------------------------
// (e) One Db per directory.

#[test]
fn e_a_second_open_of_the_same_directory_is_locked_out() {
    let dir = scratch();
    let db = Db::open(dir.path(), Options::default()).expect("open");
    match Db::open(dir.path(), Options::default()) {
        Err(Error::Locked { path }) => assert_eq!(path, dir.path(), "the error names the directory"),
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("two Dbs opened the same directory"),
    }
    let from_thread =
        std::thread::scope(|s| s.spawn(|| Db::open(dir.path(), Options::default()).err()).join());
    let from_thread = from_thread.expect("thread").map(|e| e.to_string());
    assert!(
        from_thread.as_deref().is_some_and(|e| e.contains("locked")),
        "from another thread: {from_thread:?}"
    );
    drop(db);
    Db::open(dir.path(), Options::default()).expect("open again once the first is dropped");
}

// ---------------------------------------------------------------------------------------------
// (f) Durability modes.

#[test]
fn f1_never_syncs_only_on_flush_and_a_clean_close_keeps_everything() {
    let dir = scratch();
    let options = Options { sync: SyncMode::Never, ..quiet(4 << 10) };
    let db = Db::open(dir.path(), options.clone()).expect("open");
    db.table("t").expect("table");
    let mut expected = empty_tables(&["t"]);
    let fsyncs = db.stats().fsyncs;
    let mut write = |i: u64| {
        let steps = vec![
            put("t", format!("k{i:03}"), bytes(i, 100)),
            Step::Delete("t", format!("k{:03}", i / 2).into_bytes()),
        ];
        commit(&db, &steps).expect("write");
        apply(&mut expected, &steps);
    };
    (0..60).for_each(&mut write);
    assert_eq!(db.stats().fsyncs, fsyncs, "Never: commits do not sync");
    db.flush().expect("flush");
    assert!(db.stats().fsyncs > fsyncs, "flush syncs");
    (60..120).for_each(&mut write);
    assert_contents(&db, &expected, "Never, before close");
    drop(db);
    let db = Db::open(dir.path(), options).expect("reopen");
    assert_contents(&db, &expected, "Never, after a clean close");
}

#[test]
fn f2_periodic_syncs_on_its_own() {
    let dir = scratch();
    let options = Options { sync: SyncMode::Periodic(Duration::from_millis(20)), ..quiet(64 << 10) };
    let db = Db::open(dir.path(), options.clone()).expect("open");
    let t = db.table("t").expect("table");
    let fsyncs = db.stats().fsyncs;
    commit(&db, &[put("t", "k", "v")]).expect("write");
    assert_eq!(db.get(&t, b"k").expect("read").as_deref(), Some(&b"v"[..]), "visible before it is synced");
    wait_until("a periodic fsync", || db.stats().fsyncs > fsyncs);
    let synced = db.stats().fsyncs;
    wait_until("a second periodic fsync", || db.stats().fsyncs > synced);
    eprintln!("periodic: {} fsyncs without any flush", db.stats().fsyncs - fsyncs);
    drop(db);
    let db = Db::open(dir.path(), options).expect("reopen");
    assert_eq!(db.get(&t, b"k").expect("read").as_deref(), Some(&b"v"[..]));
}

#[test]
fn f3_always_syncs_every_commit() {
    let dir = scratch();
    let db = Db::open(dir.path(), quiet(64 << 10)).expect("open");
    db.table("t").expect("table");
    let fsyncs = db.stats().fsyncs;
    for i in 0..20u64 {
        commit(&db, &[put("t", format!("k{i}"), "v")]).expect("write");
        assert_eq!(db.stats().fsyncs, fsyncs + i + 1, "commit {i} synced before it returned");
    }
}

// ---------------------------------------------------------------------------------------------
// (g) Group commit.

#[test]
fn g_concurrent_durable_commits_share_fsyncs() {
    const THREADS: u64 = 4;
    const COMMITS: u64 = 200;
    // A real disk, where an fsync takes long enough for committers to queue behind it.
    let dir = tempfile::tempdir().expect("temp dir");
    let options = quiet(1 << 20);
    let db = Db::open(dir.path(), options.clone()).expect("open");
    let t = db.table("t").expect("table");
    let fsyncs = db.stats().fsyncs;
    let began = Instant::now();
    std::thread::scope(|s| {
        for thread in 0..THREADS {
            let (db, t) = (&db, &t);
            s.spawn(move || {
                for i in 0..COMMITS {
                    let key = format!("t{thread}-{i:03}");
                    let value = bytes(thread * 1000 + i, 40);
                    db.write(&[Op::Put {
                        table: t,
                        key: key.as_bytes(),
                        value: &value,
                        align: ValueAlign::Packed,
                    }])
                    .expect("durable write");
                }
            });
        }
    });
    let commits = THREADS * COMMITS;
    let synced = db.stats().fsyncs - fsyncs;
    eprintln!(
        "group commit: {commits} durable commits from {THREADS} threads took {synced} fsyncs in {:.2} s",
        began.elapsed().as_secs_f64()
    );
    assert!(synced < commits, "{synced} fsyncs for {commits} concurrent commits: no commit was grouped");
    let mut expected = empty_tables(&["t"]);
    for thread in 0..THREADS {
        for i in 0..COMMITS {
            expected
                .get_mut("t")
                .expect("t")
                .insert(format!("t{thread}-{i:03}").into_bytes(), bytes(thread * 1000 + i, 40));
        }
    }
    drop(db);
    let db = Db::open(dir.path(), options).expect("reopen");
    assert_contents(&db, &expected, "after concurrent commits");
}

// ---------------------------------------------------------------------------------------------
// (h) Deleted keys never come back.

#[test]
fn h1_deleted_half_stays_deleted_through_compaction_and_reopen() {
    const N: u64 = 400;
    let dir = scratch();
    let options = quiet(4 << 10);
    let db = Db::open(dir.path(), options.clone()).expect("open");
    let t = db.table("t").expect("table");
    let mut expected = empty_tables(&["t"]);
    for chunk in (0..N).collect::<Vec<_>>().chunks(8) {
        let steps: Vec<Step> = chunk.iter().map(|&i| put("t", format!("k{i:04}"), bytes(i, 60))).collect();
        commit(&db, &steps).expect("put");
        apply(&mut expected, &steps);
    }
    // Evens go: half one by one, half in batches.
    for i in (0..N).step_by(2) {
        let key = format!("k{i:04}");
        if i % 4 == 0 {
            assert!(db.delete(&t, key.as_bytes()).expect("delete"), "{key} was there");
        } else {
            commit(&db, &[Step::Delete("t", key.clone().into_bytes())]).expect("delete in a batch");
        }
        expected.get_mut("t").expect("t").remove(key.as_bytes());
    }
    assert!(!db.delete(&t, b"k0000").expect("delete again"), "a deleted key is absent");
    assert_eq!(expected["t"].len() as u64, N / 2);
    drop(db);
    reopen_both_ways(dir.path(), &options, &expected, "deleted half, before compaction");
    let db = Db::open(dir.path(), options.clone()).expect("open");
    let before = db.stats();
    let compaction = db.compact().expect("compact");
    assert!(
        compaction.log_bytes_after < compaction.log_bytes_before,
        "compaction reclaimed space: {compaction:?}"
    );
    assert_contents(&db, &expected, "deleted half, compacted");
    eprintln!(
        "deleted half: log {} → {} bytes ({} segments before)",
        compaction.log_bytes_before, compaction.log_bytes_after, before.segments
    );
    drop(db);
    reopen_both_ways(dir.path(), &options, &expected, "deleted half, after compaction");
}

#[test]
fn h2_tombstones_outlive_a_partial_compaction_that_keeps_older_values() {
    let dir = scratch();
    let options = Options { compaction_threshold: 0.75, ..quiet(4 << 10) };
    let db = Db::open(dir.path(), options.clone()).expect("open");
    let t = db.table("t").expect("table");
    let mut expected = empty_tables(&["t"]);
    // Cold keys in the first segment, which stays mostly live.
    for chunk in (0..40u64).collect::<Vec<_>>().chunks(5) {
        let steps: Vec<Step> = chunk.iter().map(|&i| put("t", format!("c{i:03}"), bytes(i, 60))).collect();
        commit(&db, &steps).expect("put");
        apply(&mut expected, &steps);
    }
    let cold_segment = db.get(&t, b"c000").expect("read").expect("c000").segment_id();
    // Tombstones of a third of them, each with an overwrite of a hot key: these segments die.
    let mut tombstone_segments = BTreeSet::new();
    for i in (0..40u64).step_by(3) {
        let steps =
            vec![Step::Delete("t", format!("c{i:03}").into_bytes()), put("t", "hot", bytes(1000 + i, 150))];
        commit(&db, &steps).expect("delete");
        apply(&mut expected, &steps);
        tombstone_segments.insert(db.get(&t, b"hot").expect("read").expect("hot").segment_id());
    }
    tombstone_segments.remove(&cold_segment);
    assert!(!tombstone_segments.is_empty(), "some tombstones lie in a later segment than the values");
    // Many more overwrites: rotations wake the background compaction.
    let mut i = 0;
    let compacted = |db: &Db| {
        db.stats().compactions > 0
            && tombstone_segments.iter().any(|&s| !segment_path(dir.path(), s).exists())
    };
    while !compacted(&db) && i < 200 {
        let steps = vec![put("t", "hot", bytes(2000 + i, 150))];
        commit(&db, &steps).expect("overwrite");
        apply(&mut expected, &steps);
        i += 1;
    }
    wait_until("a background compaction of a tombstone segment", || compacted(&db));
    assert!(segment_path(dir.path(), cold_segment).exists(), "the cold segment was not compacted");
    assert_contents(&db, &expected, "after background compaction");
    drop(db);
    reopen_both_ways(dir.path(), &options, &expected, "tombstones copied by a partial compaction");
}

#[test]
fn h3_cleared_and_dropped_tables_stay_empty() {
    let dir = scratch();
    let options = quiet(4 << 10);
    let db = Db::open(dir.path(), options.clone()).expect("open");
    db.table("u").expect("table u");
    let old_v = db.table("v").expect("table v");
    let mut expected = empty_tables(&["u"]);
    for chunk in (0..60u64).collect::<Vec<_>>().chunks(6) {
        let steps: Vec<Step> = chunk
            .iter()
            .flat_map(|&i| {
                [put("u", format!("k{i:03}"), bytes(i, 50)), put("v", format!("k{i:03}"), bytes(i, 50))]
            })
            .collect();
        commit(&db, &steps).expect("put");
    }
    // u: a clear, then puts (one in the clear's own batch, one cleared within its batch).
    let after_clear = vec![
        put("u", "x", "cleared in its own batch"),
        Step::Clear("u"),
        put("u", "k001", "new"),
        put("u", "k050", "new too"),
    ];
    commit(&db, &after_clear).expect("clear");
    expected
        .get_mut("u")
        .expect("u")
        .extend([(b"k001".to_vec(), b"new".to_vec()), (b"k050".to_vec(), b"new too".to_vec())]);
    // v: dropped, then created again under the same name.
    assert!(db.drop_table("v").expect("drop"), "v existed");
    assert!(!db.drop_table("v").expect("drop again"), "v is gone");
    let new_v = db.table("v").expect("table v again");
    assert_ne!(new_v.id(), old_v.id(), "a re-created table gets a new id");
    assert!(db.get(&new_v, b"k001").expect("read").is_none(), "the new v starts empty");
    let stale = Op::Put { table: &old_v, key: b"k001", value: b"stale", align: ValueAlign::Packed };
    match db.write(&[stale]) {
        Err(Error::NoSuchTable { name }) => assert_eq!(name, "v"),
        other => panic!("a write through the dropped table's handle: expected NoSuchTable, got {other:?}"),
    }
    let new_steps = vec![put("v", "k002", "new v"), put("v", "z", "new v too")];
    commit(&db, &new_steps).expect("put in the new v");
    expected.insert("v".into(), BTreeMap::new());
    apply(&mut expected, &new_steps);
    assert_contents(&db, &expected, "after clear and re-create");
    drop(db);
    reopen_both_ways(dir.path(), &options, &expected, "clear and re-create, before compaction");
    let db = Db::open(dir.path(), options.clone()).expect("open");
    db.compact().expect("compact");
    assert_contents(&db, &expected, "clear and re-create, compacted");
    drop(db);
    reopen_both_ways(dir.path(), &options, &expected, "clear and re-create, after compaction");
}

// ---------------------------------------------------------------------------------------------
// The index merges recent commits into its base in the background: snapshots taken before,
// during and after those merges keep seeing exactly their own commit.

#[test]
fn snapshots_stay_exact_while_the_index_merges_in_the_background() {
    let dir = scratch();
    let opts = Options { sync: SyncMode::Never, ..Options::default() };
    let db = Db::open(dir.path(), opts).unwrap();
    let t = db.table("t").unwrap();
    let key = |i: u32| (i.wrapping_mul(2_654_435_761)).to_be_bytes();
    type Model = BTreeMap<[u8; 4], Vec<u8>>;
    let mut model = Model::new();
    let mut snapshots: Vec<(Snapshot, Model)> = Vec::new();
    // 40 batches of 500 changes over 6,000 keys: puts, overwrites and deletes, enough to
    // make several background merges due (at 4,096 recent entries).
    for round in 0..40u32 {
        let mut ops = Vec::new();
        let values: Vec<(u32, Vec<u8>)> = (0..500u32)
            .map(|j| ((round * 311 + j * 7) % 6_000, format!("{round}/{j}").into_bytes()))
            .collect();
        let keys: Vec<[u8; 4]> = values.iter().map(|(i, _)| key(*i)).collect();
        for ((i, value), k) in values.iter().zip(&keys) {
            if i % 5 == round % 5 {
                ops.push(Op::Delete { table: &t, key: k });
                model.remove(k);
            } else {
                ops.push(Op::Put { table: &t, key: k, value, align: ValueAlign::Packed });
                model.insert(*k, value.clone());
            }
        }
        db.write(&ops).unwrap();
        if round % 4 == 0 {
            snapshots.push((db.snapshot(), model.clone()));
        }
    }
    snapshots.push((db.snapshot(), model.clone()));
    for (n, (snapshot, model)) in snapshots.iter().enumerate() {
        let seen: BTreeMap<[u8; 4], Vec<u8>> = snapshot
            .range(&t, ..)
            .map(|e| e.map(|(k, v)| (k.try_into().expect("4-byte keys"), v.to_vec())).expect("read"))
            .collect();
        assert!(seen == *model, "snapshot {n} sees {} keys, its commit had {}", seen.len(), model.len());
        assert_eq!(snapshot.len(&t), model.len(), "snapshot {n}");
        for (k, v) in model.iter().step_by(7) {
            assert_eq!(snapshot.get(&t, k).expect("read"), Some(&v[..]), "snapshot {n}");
        }
    }
    drop(snapshots);
    drop(db);
    let db = Db::open(dir.path(), Options::default()).unwrap();
    let t = db.table("t").unwrap();
    let seen: Model = db
        .snapshot()
        .range(&t, ..)
        .map(|e| e.map(|(k, v)| (k.try_into().expect("4-byte keys"), v.to_vec())).expect("read"))
        .collect();
    assert!(seen == model, "after reopen: {} keys, expected {}", seen.len(), model.len());
}
