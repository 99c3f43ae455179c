//! A tour of typed-kv's main API on one table: put, get, put_all, put_stream, with_stream,
//! delete and compact.
//!
//! Run it with `cargo run --example quickstart`, which works in a temporary directory, or
//! `cargo run --example quickstart -- /tmp/qs` to keep the store at `/tmp/qs` (running it
//! again on the same path reopens the store and rewrites the same data).

use std::path::PathBuf;

use futures::executor::block_on;
use futures::StreamExt;
use typed_kv::{RkyvFormat, StorageBuilder};

/// The value type: rkyv's derives generate `ArchivedCikData`, the in-place view a guard
/// derefs to (its `String` fields become `ArchivedString`s, which deref to `str`).
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct CikData {
    name: String,
    state: String,
    filings: u32,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Where the store lives: the first argument, or a temporary directory (deleted when
    // `_tmp` is dropped at the end of `main`).
    let (_tmp, path) = match std::env::args_os().nth(1) {
        Some(path) => (None, PathBuf::from(path)),
        None => {
            let tmp = tempfile::tempdir()?;
            let path = tmp.path().join("quickstart");
            (Some(tmp), path)
        }
    };

    // No `with_backend`: the default backend, typed-kv's native engine.
    let storage = StorageBuilder::new(&path).build()?;
    println!("opened a {} store at {}", storage.backend(), path.display());

    // A table picks a key format and a value format. rkyv keys are compact but not ordered,
    // so this table has no `range` (see the mixed_formats example for an ordered one).
    let table = storage
        .new_table::<u64, CikData>("ciks")
        .with_key_format(RkyvFormat::new())
        .with_value_format(RkyvFormat::new())
        .build()?;

    // put / get: the guard reads the archived value in place, validated once.
    let apple = CikData { name: "Apple Inc.".into(), state: "CA".into(), filings: 2_113 };
    table.put(&320193, &apple)?;
    {
        let guard = table.get(&320193)?.ok_or("320193 was just written")?;
        let archived: &ArchivedCikData = &guard;
        println!("get(320193): {} ({}), {} filings", archived.name, archived.state, archived.filings);
    } // guards borrow the table: drop them once done (compaction below needs that too)

    // put_all: several pairs in one atomic commit; owned or borrowed pairs both work.
    let d1 = CikData { name: "One Corp.".into(), state: "DE".into(), filings: 10 };
    let d2 = CikData { name: "Two Ltd.".into(), state: "NY".into(), filings: 20 };
    table.put_all(vec![(&1, &d1), (&2, &d2)])?;
    println!("put_all: 2 records, table now has {} entries", table.len()?);

    // put_stream: ingest an async stream in chunked commits on a writer thread. Any executor
    // works; `block_on` is the simplest.
    let rows = (1_000..26_000u64).map(|cik| {
        let data = CikData {
            name: format!("Company {cik}"),
            state: ["CA", "DE", "NY", "TX"][(cik % 4) as usize].into(),
            filings: (cik % 500) as u32,
        };
        (cik, data)
    });
    let report = block_on(table.put_stream(futures::stream::iter(rows)))?;
    println!(
        "put_stream: {} records ({} bytes) in {} commits, {:?}",
        report.records, report.bytes, report.chunks, report.elapsed
    );

    // with_stream: one consistent snapshot lent to a closure as a stream of (key, guard).
    // Guards cannot leave the closure, so copy out what you need (here the name). rkyv keys
    // come in byte order, not numeric order.
    let busy_in_texas = table.with_stream(|s| {
        block_on(
            s.filter(|(_, g)| futures::future::ready(g.state == "TX" && g.filings >= 400))
                .map(|(cik, g)| (cik, g.name.to_string()))
                .take(100)
                .collect::<Vec<_>>(),
        )
    })?;
    println!("with_stream: took the first {} Texan companies with 400+ filings", busy_in_texas.len());
    if let Some((cik, name)) = busy_in_texas.first() {
        println!("  e.g. {cik}: {name}");
    }

    // delete: whether the key was there; afterwards `get` finds nothing.
    let deleted = table.delete(&2)?;
    println!("delete(2): {deleted}, get(2) is none: {}", table.get(&2)?.is_none());

    // compact: reclaim space (on redb, no guard, iterator or snapshot may be alive then).
    let compaction = storage.compact()?;
    println!("compact: {compaction:?}");
    println!("done: {} entries in `{}`", table.len()?, table.name());
    Ok(())
}
