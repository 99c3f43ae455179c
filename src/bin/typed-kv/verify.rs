//! `typed-kv verify`: every record of every table, checked; problems listed, exit code 3.

use typed_kv::{ChecksumCheck, Storage, VerifyStage};

use crate::human::{bytes, count, plural};
use crate::progress::{Progress, Unit};
use crate::Failure;

pub(crate) fn run(storage: &Storage) -> Result<(), Failure> {
    let mut checksums = Progress::new("engine checksums", Unit::Bytes);
    let mut records: Option<Progress> = None;
    let report = storage.verify_with_progress(|p| match p.stage {
        VerifyStage::Records => records
            .get_or_insert_with(|| Progress::new("reading records", Unit::Records))
            .set(p.done, p.total, None),
        _ => checksums.set(p.done, p.total, None),
    })?;
    checksums.finish();
    if let Some(progress) = records {
        progress.finish();
    }

    println!("store      {} ({})", storage.path().display(), report.backend);
    match &report.checksums {
        ChecksumCheck::Checked { method, bytes: read, records } => {
            let records =
                records.map(|r| format!(", {}", plural(r, "record", "records"))).unwrap_or_default();
            println!("checksums  checked {}{records}: {method}", bytes(*read));
        }
        ChecksumCheck::NotAvailable { reason } => println!("checksums  not checked: {reason}"),
        other => println!("checksums  {other:?}"),
    }
    println!(
        "records    {} in {} ({} of keys and values), all read",
        count(report.records),
        plural(report.tables.len() as u64, "table", "tables"),
        bytes(report.bytes)
    );
    for table in &report.tables {
        println!("table `{}`: {}", table.name, plural(table.records, "record", "records"));
        println!("  keys:   {}", table.keys);
        println!("  values: {}", table.values);
        if table.misaligned_values > 0 {
            println!(
                "  {} stored misaligned: a typed guard copies each once to read it (not a problem)",
                plural(table.misaligned_values, "value is", "values are")
            );
        }
    }
    if report.is_ok() {
        println!("no problems found");
        return Ok(());
    }
    println!("{} found:", plural(report.problem_count(), "problem", "problems"));
    for problem in &report.problems {
        println!("  {problem}");
    }
    if report.unlisted_problems > 0 {
        println!("  … and {} more", count(report.unlisted_problems));
    }
    Err(Failure::Problems)
}
