//! `typed-kv copy`: every table into a store of another (or the same) backend.

use std::path::Path;

use typed_kv::{DatabaseBackend, Durability, Storage, StorageBuilder, StorageError};

use crate::errors::Explained;
use crate::human::{bytes, count, plural};
use crate::progress::{Progress, Unit};
use crate::Failure;

pub(crate) fn run(
    source: &Storage,
    dst: &Path,
    backend: DatabaseBackend,
    overwrite: bool,
    chunk_records: usize,
) -> Result<(), Failure> {
    // Chunks need not be synced one by one: the copy flushes the target once at the end, and
    // a copy cut short is redone with --overwrite anyway.
    let opened = StorageBuilder::new(dst).with_backend(backend).with_durability(Durability::None).build();
    let target = match opened {
        Ok(target) => target,
        Err(StorageError::BackendMismatch { found, .. }) => {
            return Err(Failure::Error(Explained {
                message: format!("{} holds a {found} store, not {backend}", dst.display()),
                hint: Some(format!(
                    "copy into a new directory, or pass --to-backend {found} to copy into this one"
                )),
            }))
        }
        Err(e) => return Err(e.into()),
    };
    let mut progress = Progress::new("copying", Unit::Records);
    let report = source
        .copy_to(&target)
        .overwrite(overwrite)
        .chunk_records(chunk_records)
        .on_progress(|p| {
            let message = format!("copying `{}` ({}/{})", p.table, p.tables_done + 1, p.tables_total);
            progress.set(p.records, p.records_expected, Some(&message));
        })
        .run();
    progress.finish();
    let report = report?;
    let seconds = report.elapsed.as_secs_f64();
    let rate = if seconds > 0.0 { report.records as f64 / seconds } else { 0.0 };
    println!(
        "copied {}, {} ({}) from {} ({}) to {} ({}) in {:.2} s: {} records/s, {}",
        plural(report.tables.len() as u64, "table", "tables"),
        plural(report.records, "record", "records"),
        bytes(report.bytes),
        source.path().display(),
        source.backend(),
        target.path().display(),
        target.backend(),
        seconds,
        count(rate as u64),
        plural(report.chunks, "chunk", "chunks"),
    );
    for table in &report.tables {
        let replaced = if table.replaced { " (replaced the target's table)" } else { "" };
        println!("  `{}`: {}{replaced}", table.name, plural(table.records, "record", "records"));
    }
    Ok(())
}
