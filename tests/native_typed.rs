//! The native engine through the typed API, with small segments so that rotation and
//! compaction happen under guards that users hold.
#![cfg(feature = "native")]

mod common;

use common::Record;
use typed_kv::{engine, DatabaseBackend, OrderedFormat, RkyvFormat, Storage, StorageBuilder, Table};

type Records = Table<u64, Record, OrderedFormat, RkyvFormat>;

fn open(dir: &std::path::Path) -> (Storage, Records) {
    let storage = StorageBuilder::new(dir)
        .with_backend(DatabaseBackend::Native)
        .with_native_options(engine::Options {
            segment_size: 64 << 10,
            compaction_threshold: 0.0, // only explicit compactions, so the test decides when
            ..engine::Options::default()
        })
        .build()
        .unwrap();
    let records = storage
        .new_table::<u64, Record>("records")
        .with_key_format(OrderedFormat::new())
        .with_value_format(RkyvFormat::new())
        .build()
        .unwrap();
    (storage, records)
}

/// A record that differs per generation, so old and new values are told apart.
fn record(id: u64, generation: u64) -> Record {
    let mut r = Record::new(id);
    r.name = format!("record-{id}-gen-{generation}");
    r
}

#[test]
fn guards_read_their_values_across_rotation_overwrites_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, records) = open(dir.path());
    // ~2,000 records of ~100 bytes over 64 KiB segments: several rotations.
    for chunk in (0..2_000u64).collect::<Vec<_>>().chunks(100) {
        records.put_all(chunk.iter().map(|&i| (i, record(i, 0)))).unwrap();
    }
    let held: Vec<_> = (0..2_000u64).step_by(97).map(|i| (i, records.get(&i).unwrap().unwrap())).collect();
    let snapshot = records.snapshot().unwrap();

    // Overwrite everything twice (rotating through more segments), delete some, compact.
    for generation in 1..=2 {
        for chunk in (0..2_000u64).collect::<Vec<_>>().chunks(250) {
            records.put_all(chunk.iter().map(|&i| (i, record(i, generation)))).unwrap();
        }
    }
    for i in (0..2_000u64).step_by(3) {
        assert!(records.delete(&i).unwrap());
    }
    storage.compact().unwrap();

    // Guards and the snapshot taken before still read generation 0, in place.
    for (i, guard) in &held {
        assert_eq!(guard.name.as_str(), record(*i, 0).name, "guard of key {i}");
        assert_eq!(guard.id, *i);
    }
    assert_eq!(snapshot.get(&1).unwrap().unwrap().name.as_str(), record(1, 0).name);
    assert_eq!(snapshot.iter().unwrap().count(), 2_000);
    assert_eq!(storage.aligned_copies(), 0, "native copied values to align them");

    // The live view: generation 2, without the deleted keys.
    let check = |records: &Records| {
        for i in 0..2_000u64 {
            match records.get(&i).unwrap() {
                Some(g) => {
                    assert!(i % 3 != 0, "deleted key {i} is back");
                    assert_eq!(g.name.as_str(), record(i, 2).name, "key {i}");
                }
                None => assert_eq!(i % 3, 0, "key {i} is missing"),
            }
        }
    };
    check(&records);
    drop(held);
    drop(snapshot);
    drop((records, storage));

    // After reopening (from the hint written at close, then without it), the same.
    let (storage, records) = open(dir.path());
    check(&records);
    drop((records, storage));
    for entry in std::fs::read_dir(dir.path().join("native")).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_str().unwrap().starts_with("hint-") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let (_storage, records) = open(dir.path());
    check(&records);
}

#[test]
fn compaction_brings_the_store_close_to_its_live_data() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, records) = open(dir.path());
    for chunk in (0..4_000u64).collect::<Vec<_>>().chunks(500) {
        records.put_all(chunk.iter().map(|&i| (i, record(i, 0)))).unwrap();
    }
    for i in (0..4_000u64).filter(|i| i % 2 == 0) {
        records.delete(&i).unwrap();
    }
    let before = storage.disk_size().unwrap();
    storage.compact().unwrap();
    let after = storage.disk_size().unwrap();
    assert!(after < before * 6 / 10, "compaction went from {before} to {after} bytes");
    assert_eq!(records.len().unwrap(), 2_000);
}
