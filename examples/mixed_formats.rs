//! One storage, tables with different key and value formats, written together in one atomic
//! batch and read back through one consistent snapshot.
//!
//! - `companies`: `String` keys as postcard, `Company` values as FlatBuffers (read in place
//!   through the flatc-generated accessors);
//! - `metrics`: `u64` keys as rkyv, `Metrics` values as bincode (decoded once per guard);
//! - `filings`: `(cik, year)` keys as `OrderedFormat`, the only kind of table with `range`.
//!
//! Run with `cargo run --example mixed_formats [-- STORE_DIR]`.

#[path = "support/company.rs"]
mod company;

use std::path::PathBuf;

use company::Company;
use typed_kv::{BincodeFormat, FlatbuffersFormat, OrderedFormat, PostcardFormat, RkyvFormat, StorageBuilder};

/// A plain serde type, stored with bincode: a guard derefs to a decoded `Metrics`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Metrics {
    revenue_growth: f64,
    operating_margin: f64,
    last_quarter: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (_tmp, path) = match std::env::args_os().nth(1) {
        Some(path) => (None, PathBuf::from(path)),
        None => {
            let tmp = tempfile::tempdir()?;
            let path = tmp.path().join("mixed_formats");
            (Some(tmp), path)
        }
    };
    let storage = StorageBuilder::new(&path).build()?;
    println!("opened a {} store at {}", storage.backend(), path.display());

    // String keys (postcard) -> Company values (FlatBuffers; see examples/support/company.rs
    // for the `FlatbuffersRecord` impl that pairs `Company` with the generated table).
    let companies = storage
        .new_table::<String, Company>("companies")
        .with_key_format(PostcardFormat::new())
        .with_value_format(FlatbuffersFormat::new())
        .build()?;
    // u64 keys (rkyv) -> Metrics values (bincode).
    let metrics = storage
        .new_table::<u64, Metrics>("metrics")
        .with_key_format(RkyvFormat::new())
        .with_value_format(BincodeFormat::new())
        .build()?;
    // (cik, year) keys whose byte order is their `Ord` order -> page counts (postcard).
    let filings = storage
        .new_table::<(u64, u16), u32>("filings")
        .with_key_format(OrderedFormat::new())
        .with_value_format(PostcardFormat::new())
        .build()?;

    // Single-table writes.
    let acme = company::sample(7);
    companies.put(&acme.name, &acme)?;
    metrics.put(
        &acme.cik,
        &Metrics { revenue_growth: 0.042, operating_margin: 0.18, last_quarter: "2024Q4".into() },
    )?;
    filings.put_all((2015..2025u16).map(|year| ((acme.cik, year), 100 + u32::from(year % 7) * 10)))?;

    // FlatBuffers: the guard derefs to a verified view; `root()` gives the generated table.
    if let Some(guard) = companies.get(&acme.name)? {
        let root = guard.root();
        let tickers: Vec<&str> = root.tickers().map(|t| t.iter().collect()).unwrap_or_default();
        println!(
            "companies[{:?}]: cik {}, {} employees, founded {}, tickers {tickers:?}",
            root.name(),
            root.cik(),
            root.employees(),
            root.founded_year()
        );
    }
    // bincode: the guard derefs to the decoded `Metrics`.
    if let Some(m) = metrics.get(&acme.cik)? {
        println!(
            "metrics[{}]: growth {:.1}%, last quarter {}",
            acme.cik,
            m.revenue_growth * 100.0,
            m.last_quarter
        );
    }
    // Ordered keys: a range scan in key order, here five years of one company.
    print!("filings of {} from 2018 to 2022:", acme.cik);
    for entry in filings.range((acme.cik, 2018)..=(acme.cik, 2022))? {
        let ((_, year), pages) = entry?;
        print!(" {year}={}", *pages);
    }
    println!();
    // Values alone, when the keys are not needed: `values()` decodes none of them.
    let mut total_pages = 0;
    for pages in filings.range((acme.cik, 0)..(acme.cik + 1, 0))?.values() {
        total_pages += *pages?;
    }
    println!("all filings of {}: {total_pages} pages", acme.cik);

    // A batch across all three tables: committed all or nothing.
    let newco = company::sample(8);
    let mut batch = storage.batch();
    batch.put(&companies, &newco.name, &newco)?;
    batch.put(
        &metrics,
        &newco.cik,
        &Metrics { revenue_growth: -0.01, operating_margin: 0.05, last_quarter: "2025Q1".into() },
    )?;
    batch.put(&filings, &(newco.cik, 2024), &88)?;
    batch.delete(&filings, &(acme.cik, 2015))?;
    println!("batch: committing {} writes across 3 tables", batch.len());
    batch.commit()?;

    // A snapshot: every read through it sees the same state of every table.
    let snapshot = storage.read()?;
    let company = snapshot.get(&companies, &newco.name)?.ok_or("committed by the batch")?;
    let m = snapshot.get(&metrics, &newco.cik)?.ok_or("committed by the batch")?;
    let years: Vec<u16> = snapshot
        .range(&filings, (acme.cik, 0)..(acme.cik + 1, 0))?
        .map(|entry| entry.map(|((_, year), _)| year))
        .collect::<Result<_, _>>()?;
    println!(
        "snapshot: {} (cik {}) last reported {}; {} has filings for {years:?}",
        company.root().name(),
        company.root().cik(),
        m.last_quarter,
        acme.cik
    );
    println!(
        "snapshot: companies {}, metrics {}, filings {}",
        snapshot.len(&companies)?,
        snapshot.len(&metrics)?,
        snapshot.len(&filings)?
    );
    Ok(())
}
