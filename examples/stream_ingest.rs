//! Bulk ingest from an async stream, a streaming scan, and snapshot isolation.
//!
//! 1. `put_stream_with` stores 200,000 generated companies: the stream is encoded into
//!    chunks, and a writer thread commits each chunk atomically, reporting progress.
//! 2. `with_stream` scans one consistent snapshot as a stream and counts matching entries.
//! 3. A snapshot taken before a write does not see it.
//!
//! Run with `cargo run --example stream_ingest [-- STORE_DIR]` (add `--release` for speed).

#[path = "support/company.rs"]
mod company;

use std::path::PathBuf;

use company::Company;
use futures::executor::block_on;
use futures::future::ready;
use futures::StreamExt;
use typed_kv::{IngestOptions, OrderedFormat, RkyvFormat, StorageBuilder};

const RECORDS: u64 = 200_000;

/// The scan's predicate, on an owned `Company`, to check the scan's count.
fn is_large_listed(c: &Company) -> bool {
    c.employees >= 100_000 && !c.tickers.is_empty()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (_tmp, path) = match std::env::args_os().nth(1) {
        Some(path) => (None, PathBuf::from(path)),
        None => {
            let tmp = tempfile::tempdir()?;
            let path = tmp.path().join("stream_ingest");
            (Some(tmp), path)
        }
    };
    let storage = StorageBuilder::new(&path).build()?;
    println!("opened a {} store at {}", storage.backend(), path.display());

    // Ordered u64 keys, so scans come back in key order; rkyv values, read in place.
    let table = storage
        .new_table::<u64, Company>("companies")
        .with_key_format(OrderedFormat::new())
        .with_value_format(RkyvFormat::new())
        .build()?;
    table.clear()?; // start empty when reusing a store directory

    // 1. Ingest. The stream is lazy: records are generated as the ingest polls for them, and
    // polling pauses while the writer thread is `queue_depth` chunks behind.
    let stream = futures::stream::iter((0..RECORDS).map(|i| (i, company::sample(i))));
    let mut reported = 0;
    let options = IngestOptions::default().on_progress(move |p| {
        // Called on the writer thread after every commit; print at every 50,000 records.
        if p.records / 50_000 > reported {
            reported = p.records / 50_000;
            println!("  progress: {} records, {} bytes, {} commits", p.records, p.bytes, p.chunks);
        }
    });
    let report = block_on(table.put_stream_with(stream, options))?;
    println!(
        "ingested {} records ({:.1} MiB) in {} chunks, {:.2?}: {:.0} records/s",
        report.records,
        report.bytes as f64 / (1 << 20) as f64,
        report.chunks,
        report.elapsed,
        report.records as f64 / report.elapsed.as_secs_f64()
    );
    if report.records != RECORDS {
        return Err(format!("expected {RECORDS} records, the report says {}", report.records).into());
    }

    // 2. Scan. The closure gets a stream of (key, guard) over one snapshot; the guards read
    // the archived companies in place and cannot escape the closure.
    let started = std::time::Instant::now();
    let (seen, matching) = table.with_stream(|s| {
        block_on(s.fold((0u64, 0u64), |(seen, matching), (_, c)| {
            let large_listed = c.employees.to_native() >= 100_000 && !c.tickers.is_empty();
            ready((seen + 1, matching + u64::from(large_listed)))
        }))
    })?;
    println!(
        "with_stream: {matching} of {seen} companies have 100,000+ employees and a ticker ({:.2?})",
        started.elapsed()
    );
    // The generator is deterministic, so the count can be checked against the source.
    let expected = (0..RECORDS).filter(|&i| is_large_listed(&company::sample(i))).count() as u64;
    if (seen, matching) != (RECORDS, expected) {
        return Err(
            format!("scan saw {seen} entries, {matching} matching; expected {RECORDS}, {expected}").into()
        );
    }

    // 3. Snapshot isolation: writes after `snapshot()` are invisible to it. (On sled, which
    // has no snapshots, writers wait for open snapshots instead, and a write from the thread
    // holding one is a `StorageError::Busy`; this example uses the default backend.)
    let snapshot = table.snapshot()?;
    table.put(&RECORDS, &company::sample(RECORDS))?;
    let renamed = Company { name: "Renamed Corp.".into(), ..company::sample(0) };
    table.put(&0, &renamed)?;
    let live_name = table.get(&0)?.map(|c| c.name.to_string());
    let snapshot_name = snapshot.get(&0)?.map(|c| c.name.to_string());
    println!(
        "after put({RECORDS}) and renaming 0: live table has {} entries, snapshot {}",
        table.len()?,
        snapshot.len()?
    );
    println!("  get(0): live {live_name:?}, snapshot {snapshot_name:?}");
    println!("  get({RECORDS}) in the snapshot is none: {}", snapshot.get(&RECORDS)?.is_none());
    if snapshot.len()? != RECORDS
        || snapshot.get(&RECORDS)?.is_some()
        || snapshot_name != Some(company::sample(0).name)
    {
        return Err("the snapshot saw a write made after it".into());
    }
    Ok(())
}
