//! How long the native engine takes to reopen a store of N keys (default 1,000,000, as in the
//! comparison benchmark: 24-byte keys, 150-byte values), with its hint file (index snapshot)
//! and without (a scan of the whole log), and how much memory its index takes per key.
//!
//! ```sh
//! cargo bench --bench reopen                 # N = 1,000,000
//! BENCH_N=100000 cargo bench --bench reopen  # smoke run
//! ```
//!
//! Memory is measured by a counting global allocator: the heap bytes still allocated after an
//! open, minus before it. That is the index (and the engine's small state); memory mapped
//! from the segment files is not heap and is not counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::error::Error;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use typed_kv::engine::{Db, Op, Options, ValueAlign};

type Res<T> = Result<T, Box<dyn Error>>;

const KEY_LEN: usize = 24;
const VALUE_LEN: usize = 150;
const RUNS: usize = 3;

/// Counts the bytes currently allocated on the heap.
struct Counting;

static LIVE_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn heap_bytes() -> u64 {
    LIVE_BYTES.load(Ordering::Relaxed)
}

fn load(dir: &Path, n: usize) -> Res<()> {
    let db = Db::open(dir, Options::default())?;
    let table = db.table("x")?;
    let mut rng = fastrand::Rng::with_seed(3);
    let mut key = [0u8; KEY_LEN];
    let mut value = [0u8; VALUE_LEN];
    for chunk in 0..n.div_ceil(100_000) {
        let count = (n - chunk * 100_000).min(100_000);
        let mut data = Vec::with_capacity(count * (KEY_LEN + VALUE_LEN));
        for _ in 0..count {
            rng.fill(&mut key);
            rng.fill(&mut value);
            data.extend_from_slice(&key);
            data.extend_from_slice(&value);
        }
        let ops: Vec<Op<'_>> = data
            .chunks_exact(KEY_LEN + VALUE_LEN)
            .map(|pair| Op::Put {
                table: &table,
                key: &pair[..KEY_LEN],
                value: &pair[KEY_LEN..],
                align: ValueAlign::Packed,
            })
            .collect();
        db.write(&ops)?;
    }
    Ok(()) // the drop is a clean close: it writes the hint
}

/// Opens the store `RUNS` times; returns the median time, the report of the last open and
/// the index memory per key it measured.
fn reopen(dir: &Path, n: usize) -> Res<(Duration, typed_kv::engine::Stats, f64)> {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..RUNS {
        let before = heap_bytes();
        let started = Instant::now();
        let db = Db::open(dir, Options { checkpoint_bytes: 0, ..Options::default() })?;
        times.push(started.elapsed());
        let grown = heap_bytes().saturating_sub(before);
        let stats = db.stats();
        if stats.keys != n as u64 {
            return Err(format!("reopened with {} keys, expected {n}", stats.keys).into());
        }
        // Closing without writing a new hint would need an option; a clean close rewrites
        // it, which the next run then reads, so every run sees the same files.
        drop(db);
        last = Some((stats, grown as f64 / n as f64));
    }
    times.sort();
    let (stats, per_key) = last.ok_or("no run")?;
    Ok((times[RUNS / 2], stats, per_key))
}

fn main() -> Res<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(()); // `cargo test --benches` lists benchmarks: nothing to list here
    }
    let n: usize =
        std::env::var("BENCH_N").ok().map(|s| s.replace('_', "").parse()).transpose()?.unwrap_or(1_000_000);
    let base = std::env::var_os("BENCH_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-results/tmp"), Into::into);
    std::fs::create_dir_all(&base)?;
    let dir = tempfile::tempdir_in(&base)?;
    eprintln!("loading {n} pairs…");
    load(dir.path(), n)?;

    let (with_hint, stats, per_key) = reopen(dir.path(), n)?;
    println!(
        "reopen with hint: {:.0} ms (median of {RUNS}); hint used: {}; index: {:.0} heap bytes/key measured, {:.0} estimated by Stats::index_bytes",
        with_hint.as_secs_f64() * 1e3,
        stats.recovery.hint_used,
        per_key,
        stats.index_bytes as f64 / n as f64,
    );

    // Without a hint: every open must scan the log. Delete the hint before each open.
    let mut times = Vec::new();
    for _ in 0..RUNS {
        for entry in std::fs::read_dir(dir.path())? {
            let path = entry?.path();
            if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("hint-")) {
                std::fs::remove_file(path)?;
            }
        }
        let started = Instant::now();
        let db = Db::open(dir.path(), Options { checkpoint_bytes: 0, ..Options::default() })?;
        times.push(started.elapsed());
        let report = db.stats().recovery;
        if report.hint_used || db.stats().keys != n as u64 {
            return Err("the scan run used a hint or lost keys".into());
        }
        eprintln!("scan: {} MiB, {} batches", report.bytes_scanned >> 20, report.batches_replayed);
    }
    times.sort();
    println!("reopen by scanning the log: {:.0} ms (median of {RUNS})", times[RUNS / 2].as_secs_f64() * 1e3);
    Ok(())
}
