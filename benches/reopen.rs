//! How long the native engine takes to reopen a store of N keys (default 1,000,000, as in the
//! comparison benchmark: 24-byte keys, 150-byte values), with its hint file (index snapshot)
//! and without (a scan of the whole log), and how much memory its index takes per key.
//!
//! ```sh
//! cargo bench --bench reopen                 # N = 1,000,000
//! BENCH_N=100000 cargo bench --bench reopen  # smoke run
//! ```
//!
//! Memory is measured two ways:
//! - the index's own heap bytes: a counting global allocator, the bytes still allocated after
//!   an open minus before it (the index and the engine's small state);
//! - what the process holds: resident anonymous memory (`RssAnon` of `/proc/self/status`)
//!   after the load, after an open with the hint and after an open that scans the log, each in
//!   a fresh child process, with the highest value a 1 ms sampler saw meanwhile (the peak).
//!   Memory mapped from the segment files is file-backed, not anonymous, and not counted.

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

/// Resident anonymous memory of this process, in bytes (`RssAnon`, Linux only).
fn rss_anon() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs `work` while a thread samples [`rss_anon`] every millisecond; returns what `work`
/// returned and the highest sample (with the values before and after).
fn with_peak_rss<T>(work: impl FnOnce() -> Res<T>) -> Res<(T, u64)> {
    let stop = std::sync::atomic::AtomicBool::new(false);
    let peak = AtomicU64::new(rss_anon().unwrap_or(0));
    let result = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_anon().unwrap_or(0), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let result = work();
        stop.store(true, Ordering::Relaxed);
        result
    })?;
    peak.fetch_max(rss_anon().unwrap_or(0), Ordering::Relaxed);
    Ok((result, peak.load(Ordering::Relaxed)))
}

/// The child's side of a memory phase (`REOPEN_PHASE` = `load`, `open-hint` or `open-scan`):
/// does it, then prints `rss_anon <after> <peak>` for the parent.
fn memory_phase(phase: &str, dir: &Path, n: usize) -> Res<()> {
    let (db, peak) = with_peak_rss(|| match phase {
        "load" => load(dir, n),
        _ => {
            let db = Db::open(dir, Options { checkpoint_bytes: 0, ..Options::default() })?;
            let expect_hint = phase == "open-hint";
            if db.stats().keys != n as u64 || db.stats().recovery.hint_used != expect_hint {
                return Err(format!(
                    "{phase}: {} keys, hint used: {}",
                    db.stats().keys,
                    db.stats().recovery.hint_used
                )
                .into());
            }
            Ok(db)
        }
    })?;
    println!("rss_anon {} {peak}", rss_anon().ok_or("no RssAnon in /proc/self/status")?);
    drop(db);
    Ok(())
}

/// Runs [`memory_phase`] in a child process; returns its RssAnon after the phase and its peak.
fn measure_in_child(phase: &str, dir: &Path, n: usize) -> Res<(u64, u64)> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .env("REOPEN_PHASE", phase)
        .env("REOPEN_DIR", dir)
        .env("BENCH_N", n.to_string())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find_map(|l| l.strip_prefix("rss_anon "));
    match (out.status.success(), line.and_then(|l| l.split_once(' '))) {
        (true, Some((after, peak))) => Ok((after.parse()?, peak.parse()?)),
        _ => Err(format!("{phase} child failed: {}", String::from_utf8_lossy(&out.stderr)).into()),
    }
}

fn delete_hints(dir: &Path) -> Res<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("hint-")) {
            std::fs::remove_file(path)?;
        }
    }
    Ok(())
}

fn load(dir: &Path, n: usize) -> Res<Db> {
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
    Ok(db) // dropping it is a clean close: it writes the hint
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
    if let (Ok(phase), Some(dir)) = (std::env::var("REOPEN_PHASE"), std::env::var_os("REOPEN_DIR")) {
        return memory_phase(&phase, Path::new(&dir), n);
    }
    let base = std::env::var_os("BENCH_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-results/tmp"), Into::into);
    std::fs::create_dir_all(&base)?;
    let dir = tempfile::tempdir_in(&base)?;
    eprintln!("loading {n} pairs…");
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    let per_key = |bytes: u64| bytes as f64 / n as f64;
    let mut memory = Vec::new();
    for phase in ["load", "open-hint", "open-scan"] {
        if phase == "open-scan" {
            delete_hints(dir.path())?;
        }
        let (after, peak) = measure_in_child(phase, dir.path(), n)?;
        memory.push(format!(
            "| {phase} | {:.0} MiB ({:.0} bytes/key) | {:.0} MiB ({:.0} bytes/key) |",
            mib(after),
            per_key(after),
            mib(peak),
            per_key(peak)
        ));
    }
    println!("resident anonymous memory of a process with {n} keys (RssAnon; peak sampled every ms):");
    println!("| phase | after | peak |\n|---|---:|---:|");
    for row in &memory {
        println!("{row}");
    }
    // The scan phase's clean close wrote a new hint, which the timed runs below start from.

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
        delete_hints(dir.path())?;
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
