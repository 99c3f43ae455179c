//! `Storage::stats` on every backend: what each engine tells, per table and in total.

mod common;

use common::{open, Record};
use typed_kv::{CompactionReport, DatabaseBackend};

fn counts_keys_where_the_engine_can(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let records = common::records_table(&storage, "records");
    records.put_all((0..50).map(|i| (i, Record::new(i)))).unwrap();
    let blobs = common::blobs_table(&storage, "blobs");
    blobs.put_all((0..7u8).map(|i| (vec![i], vec![i; 33]))).unwrap();
    for i in 0..50 {
        drop(records.get(&i).unwrap());
        drop(blobs.get(&vec![(i % 7) as u8]).unwrap());
    }

    let stats = storage.stats().unwrap();
    assert_eq!(stats.backend, backend);
    let names: Vec<&str> = stats.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["blobs", "records"]);
    let counted = matches!(backend, DatabaseBackend::Native | DatabaseBackend::Redb);
    let expect = |n: u64| if counted { Some(n) } else { None };
    assert_eq!(stats.tables[0].keys, expect(7), "{backend}: blobs");
    assert_eq!(stats.tables[1].keys, expect(50), "{backend}: records");
    assert_eq!(stats.keys, expect(57), "{backend}");
    assert_eq!(stats.tables[1].stamp.as_ref().map(|s| s.value_format.as_str()), Some("rkyv"));
    assert!(stats.tables.iter().all(|t| t.bytes.is_none()), "{backend}: no engine tells bytes per table");
    assert!(stats.disk_bytes > 0, "{backend}");
    assert_eq!(stats.disk_bytes, storage.disk_size().unwrap(), "{backend}");
    let native = backend == DatabaseBackend::Native;
    assert_eq!(stats.live_bytes.is_some(), native, "{backend}: live bytes");
    assert_eq!(stats.reclaimable_bytes.is_some(), native, "{backend}: reclaimable bytes");
    assert_eq!(stats.data_files.is_some(), native, "{backend}: data files");

    // Aligned copies are counted per table; bytes values never need one; the native engine
    // stores rkyv values aligned, so it never copies.
    assert_eq!(stats.tables[0].aligned_copies, 0, "{backend}: bytes values were copied");
    assert_eq!(stats.aligned_copies, stats.tables[1].aligned_copies, "{backend}");
    assert_eq!(stats.aligned_copies, storage.aligned_copies(), "{backend}");
    if native {
        assert_eq!(stats.aligned_copies, 0, "native copied a value to align it");
    }
}

fn counts_compactions(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let blobs = common::blobs_table(&storage, "blobs");
    for round in 0..3u8 {
        blobs.put_all((0..100u8).map(|i| (vec![i], vec![round; 500]))).unwrap();
    }
    let before = storage.stats().unwrap();
    let compacted = matches!(storage.compact().unwrap(), CompactionReport::Compacted { .. });
    let after = storage.stats().unwrap();
    assert_eq!(after.compactions, before.compactions + u64::from(compacted), "{backend}");
    if backend == DatabaseBackend::Native {
        assert!(compacted, "native always compacts on demand");
        let (dead_before, dead_after) = (before.reclaimable_bytes.unwrap(), after.reclaimable_bytes.unwrap());
        assert!(dead_after < dead_before / 4, "native reclaimable bytes {dead_before} -> {dead_after}");
    }
}

per_backend!(counts_keys_where_the_engine_can, counts_compactions);
