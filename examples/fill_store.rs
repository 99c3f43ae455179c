//! Makes a store of many records to try the `typed-kv` tool on: `u64` keys
//! (`OrderedFormat`) and 100-byte text values (`BytesFormat`) in the table `records`.
//!
//! `cargo run --release --example fill_store -- PATH BACKEND COUNT`, e.g.
//! `cargo run --release --example fill_store -- /tmp/big-sled sled 1000000`, then
//! `typed-kv copy /tmp/big-sled /tmp/big-native --to-backend native`.

use std::time::Instant;

use typed_kv::{BytesFormat, DatabaseBackend, Durability, OrderedFormat, StorageBuilder};

/// Records per committed batch.
const BATCH: u64 = 10_000;
/// Length of every value.
const VALUE_LEN: usize = 100;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: fill_store PATH BACKEND COUNT";
    let path = args.next().ok_or(usage)?;
    let backend = args.next().ok_or(usage)?;
    let backend = DatabaseBackend::from_name(&backend).ok_or(format!("unknown backend `{backend}`"))?;
    let count: u64 = args.next().ok_or(usage)?.parse()?;

    let started = Instant::now();
    // Batches need not be synced one by one: one flush at the end makes them durable.
    let storage =
        StorageBuilder::new(&path).with_backend(backend).with_durability(Durability::None).build()?;
    let records = storage
        .new_table::<u64, Vec<u8>>("records")
        .with_key_format(OrderedFormat::new())
        .with_value_format(BytesFormat::new())
        .build()?;
    for start in (0..count).step_by(BATCH as usize) {
        let end = (start + BATCH).min(count);
        records.put_all((start..end).map(|i| {
            let mut value =
                format!("record {i:010}: a line of text that stands for a small value, ").into_bytes();
            value.resize(VALUE_LEN, b'.');
            (i, value)
        }))?;
    }
    storage.flush()?;
    println!(
        "wrote {count} records ({VALUE_LEN}-byte values) to {path} ({backend}) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
