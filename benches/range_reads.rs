//! Range reads on native, typed against raw, interleaved in one process: the range-reads phase
//! of `benches/compare.rs` (scans of 10 entries from random keys, through one snapshot),
//! without the minutes between systems that make that benchmark's ratios swing on a shared
//! machine. See "Typed range reads on native" in `docs/benchmarks.md`.
//!
//! ```sh
//! cargo bench --bench range_reads                          # N = 1,000,000, 500,000 scans
//! RANGE_N=100000 RANGE_SCANS=10000 RANGE_ONLY=bytes \
//!     valgrind --tool=callgrind --toggle-collect='*bytes_scans*' target/release/deps/range_reads-*
//! ```
//!
//! Environment: `RANGE_N` keys (default 1,000,000), `RANGE_SCANS` scans per round (default
//! N/2), `RANGE_ROUNDS` rounds, the median is reported (default 5), `RANGE_ONLY` one of
//! `bytes`, `rkyv`, `bytes-values`, `rkyv-values`, `raw` to load and scan that system alone
//! (for callgrind), `RANGE_DIR` where the stores go (default a temporary directory under
//! `bench-results/`).

use std::ops::Bound;
use std::path::Path;
use std::time::Instant;

use typed_kv::engine::{Db, Op, Options, Table as RawTable, ValueAlign};
use typed_kv::{BytesFormat, Guard, RkyvFormat, StorageBuilder, Table};

#[path = "support/mod.rs"]
mod support;

use support::{env_usize, random_pairs, work_dir, Res, VALUE_LEN};
const SCAN_LEN: usize = 10;

/// The value of the rkyv table: the same 150 bytes, archived as they are.
#[derive(rkyv::Archive, rkyv::Serialize)]
struct Value {
    bytes: [u8; VALUE_LEN],
}

type BytesTable = Table<Vec<u8>, Vec<u8>, BytesFormat, BytesFormat>;
type RkyvTable = Table<Vec<u8>, Value, BytesFormat, RkyvFormat>;

/// The sum of `scan` over one scan from each start key.
#[inline(always)]
fn each_scan(keys: &[Vec<u8>], starts: &[u32], mut scan: impl FnMut(&Vec<u8>) -> Res<u64>) -> Res<u64> {
    starts.iter().try_fold(0, |sum, &i| Ok(sum + scan(&keys[i as usize])?))
}

/// Keys from `key` on.
fn from(key: &Vec<u8>) -> (Bound<&Vec<u8>>, Bound<&Vec<u8>>) {
    (Bound::Included(key), Bound::Unbounded)
}

/// The first byte of an rkyv value, its bytes checked as the raw scan checks them.
fn check_rkyv(guard: &Guard<'_, Value, RkyvFormat>) -> Res<u64> {
    check(guard.raw_bytes())?;
    Ok(u64::from(guard.bytes[0]))
}

#[inline(never)]
fn typed_bytes_scans(table: &BytesTable, keys: &[Vec<u8>], starts: &[u32]) -> Res<u64> {
    let snapshot = table.snapshot()?;
    each_scan(keys, starts, |key| {
        let entries = snapshot.range(from(key))?.take(SCAN_LEN);
        entries.map(|entry| check(&entry?.1)).sum()
    })
}

#[inline(never)]
fn typed_bytes_value_scans(table: &BytesTable, keys: &[Vec<u8>], starts: &[u32]) -> Res<u64> {
    let snapshot = table.snapshot()?;
    each_scan(keys, starts, |key| {
        let values = snapshot.range(from(key))?.values().take(SCAN_LEN);
        values.map(|guard| check(&guard?)).sum()
    })
}

#[inline(never)]
fn typed_rkyv_scans(table: &RkyvTable, keys: &[Vec<u8>], starts: &[u32]) -> Res<u64> {
    let snapshot = table.snapshot()?;
    each_scan(keys, starts, |key| {
        let entries = snapshot.range(from(key))?.take(SCAN_LEN);
        entries.map(|entry| check_rkyv(&entry?.1)).sum()
    })
}

#[inline(never)]
fn typed_rkyv_value_scans(table: &RkyvTable, keys: &[Vec<u8>], starts: &[u32]) -> Res<u64> {
    let snapshot = table.snapshot()?;
    each_scan(keys, starts, |key| {
        let values = snapshot.range(from(key))?.values().take(SCAN_LEN);
        values.map(|guard| check_rkyv(&guard?)).sum()
    })
}

#[inline(never)]
fn raw_scans(db: &Db, table: &RawTable, keys: &[Vec<u8>], starts: &[u32]) -> Res<u64> {
    let snapshot = db.snapshot();
    let mut sum = 0;
    for &i in starts {
        for entry in snapshot.range(table, keys[i as usize].as_slice()..).take(SCAN_LEN) {
            let (_key, value) = entry?;
            sum += check(value)?;
        }
    }
    Ok(sum)
}

fn check(value: &[u8]) -> Res<u64> {
    match value.first() {
        Some(&first) if value.len() == VALUE_LEN => Ok(u64::from(first)),
        _ => Err(format!("read a value of {} bytes, expected {VALUE_LEN}", value.len()).into()),
    }
}

/// With `verify_reads` false, reads skip their records' CRC check.
fn open_bytes(dir: &Path, keys: &[Vec<u8>], values: &[Vec<u8>], verify_reads: bool) -> Res<BytesTable> {
    let native = Options { verify_reads, ..Options::default() };
    let storage = StorageBuilder::new(dir.join(format!("typed-bytes-{verify_reads}")))
        .with_native_options(native)
        .build()?;
    let table = storage
        .new_table::<Vec<u8>, Vec<u8>>("x")
        .with_key_format(BytesFormat::new())
        .with_value_format(BytesFormat::new())
        .build()?;
    table.put_all(keys.iter().zip(values))?;
    Ok(table)
}

fn open_rkyv(dir: &Path, keys: &[Vec<u8>], values: &[Vec<u8>]) -> Res<RkyvTable> {
    let storage = StorageBuilder::new(dir.join("typed-rkyv")).build()?;
    let table = storage
        .new_table::<Vec<u8>, Value>("x")
        .with_key_format(BytesFormat::new())
        .with_value_format(RkyvFormat::new())
        .build()?;
    let values = values.iter().map(|v| {
        let mut bytes = [0; VALUE_LEN];
        bytes.copy_from_slice(v);
        Value { bytes }
    });
    table.put_all(keys.iter().zip(values))?;
    Ok(table)
}

/// With `verify_reads` false, reads skip their records' CRC check.
fn open_raw(dir: &Path, keys: &[Vec<u8>], values: &[Vec<u8>], verify_reads: bool) -> Res<(Db, RawTable)> {
    let db =
        Db::open(dir.join(format!("raw-{verify_reads}")), Options { verify_reads, ..Options::default() })?;
    let table = db.table("x")?;
    let ops: Vec<Op<'_>> = keys
        .iter()
        .zip(values)
        .map(|(key, value)| Op::Put { table: &table, key, value, align: ValueAlign::Packed })
        .collect();
    db.write(&ops)?;
    Ok((db, table))
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() -> Res<()> {
    let n = env_usize("RANGE_N", 1_000_000)?.max(1);
    let scans = env_usize("RANGE_SCANS", n / 2)?;
    let rounds = env_usize("RANGE_ROUNDS", 5)?.max(1);
    let only = std::env::var("RANGE_ONLY").ok();
    let work = work_dir("RANGE_DIR")?;
    let dir = tempfile::Builder::new().prefix("range-reads").tempdir_in(&work)?;

    let mut rng = fastrand::Rng::with_seed(3);
    let (keys, values) = random_pairs(&mut rng, n);
    let starts: Vec<u32> = (0..scans).map(|_| rng.u32(0..n as u32)).collect();

    if let Some(only) = only {
        let sum = match only.as_str() {
            "bytes" => typed_bytes_scans(&open_bytes(dir.path(), &keys, &values, true)?, &keys, &starts)?,
            "rkyv" => typed_rkyv_scans(&open_rkyv(dir.path(), &keys, &values)?, &keys, &starts)?,
            "bytes-values" => {
                typed_bytes_value_scans(&open_bytes(dir.path(), &keys, &values, true)?, &keys, &starts)?
            }
            "rkyv-values" => typed_rkyv_value_scans(&open_rkyv(dir.path(), &keys, &values)?, &keys, &starts)?,
            "raw" => {
                let (db, table) = open_raw(dir.path(), &keys, &values, true)?;
                raw_scans(&db, &table, &keys, &starts)?
            }
            other => {
                return Err(format!(
                    "RANGE_ONLY={other}: expected bytes, rkyv, bytes-values, rkyv-values or raw"
                )
                .into())
            }
        };
        println!("{only}: {scans} scans of {SCAN_LEN}, checksum {sum}");
        return Ok(());
    }

    let bytes = open_bytes(dir.path(), &keys, &values, true)?;
    let rkyv = open_rkyv(dir.path(), &keys, &values)?;
    let (db, raw) = open_raw(dir.path(), &keys, &values, true)?;
    // The read path's CRC check off (`Options::verify_reads = false`): what it costs.
    let unchecked_bytes = open_bytes(dir.path(), &keys, &values, false)?;
    let (unchecked_db, unchecked_raw) = open_raw(dir.path(), &keys, &values, false)?;
    type Scans<'a> = Box<dyn Fn() -> Res<u64> + 'a>;
    let systems: [(&str, Scans<'_>); 7] = [
        ("typed bytes", Box::new(|| typed_bytes_scans(&bytes, &keys, &starts))),
        ("typed rkyv", Box::new(|| typed_rkyv_scans(&rkyv, &keys, &starts))),
        ("typed bytes .values()", Box::new(|| typed_bytes_value_scans(&bytes, &keys, &starts))),
        ("typed rkyv .values()", Box::new(|| typed_rkyv_value_scans(&rkyv, &keys, &starts))),
        ("typed bytes unchecked", Box::new(|| typed_bytes_scans(&unchecked_bytes, &keys, &starts))),
        ("raw engine unchecked", Box::new(|| raw_scans(&unchecked_db, &unchecked_raw, &keys, &starts))),
        ("raw engine", Box::new(|| raw_scans(&db, &raw, &keys, &starts))),
    ];
    let mut times = vec![Vec::new(); systems.len()];
    for _ in 0..rounds {
        let mut sums = Vec::new();
        for ((_, scans), times) in systems.iter().zip(&mut times) {
            let started = Instant::now();
            sums.push(scans()?);
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
        if sums.iter().any(|&sum| sum != sums[0]) {
            return Err(format!("checksums differ: {sums:?}").into());
        }
    }
    let medians: Vec<f64> = times.into_iter().map(median).collect();
    let raw_ms = medians[systems.len() - 1];
    println!("{scans} scans of {SCAN_LEN} over {n} keys, median of {rounds} rounds:");
    for ((name, _), ms) in systems.iter().zip(&medians) {
        println!("  {name:<22} {ms:>7.0} ms  {:.2} × raw", ms / raw_ms);
    }
    Ok(())
}
