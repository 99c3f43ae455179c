//! `Table::put_stream` ingest throughput per compiled backend: 1,000,000 small records
//! (`u64` ordered keys, a 24-byte rkyv record) streamed into a fresh table with the default
//! `IngestOptions` (10,000-record chunks, each one durable commit).
//!
//! Not a criterion benchmark: one ingest takes seconds, on a fresh store each time, so
//! criterion's sampling (at least 10 samples, with warm-up) would take minutes per backend
//! and measure an ever-growing store. Each backend instead ingests `INGEST_REPEAT` times
//! (default 3) into a new store, and the median records/s is printed, with a markdown table
//! written to `<crate>/bench-results/ingest-n{N}.md`.
//!
//! ```sh
//! cargo bench --bench ingest                      # default backends, 1,000,000 records
//! INGEST_N=100000 cargo bench --all-features --bench ingest
//! ```
//!
//! Stores go to `BENCH_DIR` (default `<crate>/bench-results/tmp`, on a real disk).

use std::path::PathBuf;
use std::time::Instant;

use futures::executor::block_on;
use typed_kv::{DatabaseBackend, IngestReport, OrderedFormat, RkyvFormat, StorageBuilder};

#[path = "support/mod.rs"]
mod support;

use support::{env_usize, Res};

/// A small record: a sensor reading.
#[derive(rkyv::Archive, rkyv::Serialize)]
struct Reading {
    at: u64,
    value: f64,
    sensor: u32,
    flags: u16,
}

fn ingest(backend: DatabaseBackend, work: &std::path::Path, n: u64) -> Res<IngestReport> {
    let dir = tempfile::Builder::new().prefix("ingest").tempdir_in(work)?;
    let storage = StorageBuilder::new(dir.path().join("db")).with_backend(backend).build()?;
    let table = storage
        .new_table::<u64, Reading>("readings")
        .with_key_format(OrderedFormat::new())
        .with_value_format(RkyvFormat::new())
        .build()?;
    let records = (0..n).map(|i| {
        let reading = Reading {
            at: 1_700_000_000 + i,
            value: i as f64 * 0.5,
            sensor: (i % 977) as u32,
            flags: (i % 7) as u16,
        };
        (i, reading)
    });
    let report = block_on(table.put_stream(futures::stream::iter(records)))?;
    if report.records != n {
        return Err(format!("{backend}: {} records committed, expected {n}", report.records).into());
    }
    let check = table.get(&(n - 1))?.ok_or("the last record is missing")?;
    if check.at.to_native() != 1_700_000_000 + n - 1 {
        return Err("the last record reads back wrong".into());
    }
    Ok(report)
}

fn main() -> Res<()> {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work =
        std::env::var_os("BENCH_DIR").map_or_else(|| crate_dir.join("bench-results/tmp"), PathBuf::from);
    let out = std::env::var_os("BENCH_OUT").map_or_else(|| crate_dir.join("bench-results"), PathBuf::from);
    std::fs::create_dir_all(&work)?;
    std::fs::create_dir_all(&out)?;
    let n = env_usize("INGEST_N", 1_000_000)? as u64;
    let repeat = env_usize("INGEST_REPEAT", 3)?.max(1);
    // `cargo bench` passes `--bench`; a name filter selects backends.
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();

    let mut table = format!(
        "put_stream of {n} records (u64 ordered keys, 24-byte rkyv values), default IngestOptions \
         (10,000 records per durable commit); median of {repeat}.\n\n\
         | backend | records/s | MiB/s (encoded) | commits | time (ms) |\n|---|---:|---:|---:|---:|\n"
    );
    for backend in DatabaseBackend::compiled() {
        if !filter.is_empty() && !filter.iter().any(|f| backend.name().contains(f.as_str())) {
            continue;
        }
        let mut reports = Vec::with_capacity(repeat);
        for run in 0..repeat {
            let started = Instant::now();
            let report = ingest(backend, &work, n)?;
            println!(
                "[{backend}] run {}: {} records in {:.0} ms ({:.0} records/s, {} commits; {:.0} ms with setup)",
                run + 1,
                report.records,
                report.elapsed.as_secs_f64() * 1e3,
                report.records as f64 / report.elapsed.as_secs_f64(),
                report.chunks,
                started.elapsed().as_secs_f64() * 1e3
            );
            reports.push(report);
        }
        reports.sort_by_key(|r| r.elapsed);
        let median = reports[reports.len() / 2];
        let secs = median.elapsed.as_secs_f64();
        table.push_str(&format!(
            "| {backend} | {:.0} | {:.1} | {} | {:.0} |\n",
            median.records as f64 / secs,
            median.bytes as f64 / (1 << 20) as f64 / secs,
            median.chunks,
            secs * 1e3
        ));
    }
    println!("\n{table}");
    std::fs::write(out.join(format!("ingest-n{n}.md")), &table)?;
    Ok(())
}
