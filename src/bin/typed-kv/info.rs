//! `typed-kv info`: backend, sizes, and every table with its formats, schema version and
//! number of keys.

use typed_kv::Storage;

use crate::human::{bytes, count, maybe_count, plural};
use crate::progress::Progress;
use crate::Failure;

/// `format [flags] (type)`.
fn format_and_type(format: &str, flags: &str, type_name: &str) -> String {
    let flags = if flags.is_empty() { String::new() } else { format!(" [{flags}]") };
    format!("{format}{flags} ({type_name})")
}

pub(crate) fn run(storage: &Storage) -> Result<(), Failure> {
    let stats = storage.stats()?;
    let mut rows = Vec::new();
    let mut total_keys = Some(0u64);
    let mut counting: Option<Progress> = None;
    for table in &stats.tables {
        // Engines without a count (sled) are counted here: a scan, with a spinner.
        let keys = match table.keys {
            Some(keys) => Some(keys),
            None => {
                let progress = counting.get_or_insert_with(|| Progress::spinner("counting keys"));
                progress.set(0, None, Some(&format!("counting keys of `{}`", table.name)));
                storage.untyped_table(&table.name).and_then(|t| t.len()).ok()
            }
        };
        total_keys = total_keys.zip(keys).map(|(a, b)| a + b);
        let (key, value, schema) = match &table.stamp {
            Some(s) => (
                format_and_type(&s.key_format, "", &s.key_type),
                format_and_type(&s.value_format, &s.value_flags, &s.value_type),
                s.schema_version.to_string(),
            ),
            None => ("(damaged stamp)".into(), "(damaged stamp)".into(), "?".into()),
        };
        rows.push([table.name.clone(), maybe_count(keys), key, value, schema]);
    }
    if let Some(progress) = counting {
        progress.finish();
    }

    println!("store    {}", storage.path().display());
    println!("backend  {}", stats.backend);
    let mut disk = bytes(stats.disk_bytes);
    if let (Some(live), Some(reclaimable)) = (stats.live_bytes, stats.reclaimable_bytes) {
        disk.push_str(&format!(" (live {}, reclaimable by compaction {})", bytes(live), bytes(reclaimable)));
    }
    if let Some(files) = stats.data_files {
        disk.push_str(&format!(" in {}", plural(files, "data file", "data files")));
    }
    println!("on disk  {disk}");
    println!("tables   {}, {} keys", count(stats.tables.len() as u64), maybe_count(total_keys));
    if rows.is_empty() {
        return Ok(());
    }
    println!();
    let header = ["TABLE", "KEYS", "KEY FORMAT (TYPE)", "VALUE FORMAT (TYPE)", "SCHEMA"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            let pad = width.saturating_sub(cell.chars().count());
            match i {
                1 => out.push_str(&format!("{}{cell}  ", " ".repeat(pad))),
                4 => out.push_str(cell),
                _ => out.push_str(&format!("{cell}{}  ", " ".repeat(pad))),
            }
        }
        out
    };
    println!("{}", line(header));
    for row in &rows {
        println!("{}", line([&row[0], &row[1], &row[2], &row[3], &row[4]]));
    }
    Ok(())
}
