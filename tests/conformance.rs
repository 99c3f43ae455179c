//! The conformance suite: every operation of the typed API, run on every compiled backend
//! with the same expectations.

mod common;
#[path = "../examples/support/company.rs"]
mod company;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use common::{open, ArchivedRecord, Record};
use futures::executor::block_on;
use futures::StreamExt;
use typed_kv::{
    BincodeFormat, BytesFormat, DatabaseBackend, IngestOptions, OrderedFormat, PostcardFormat, RkyvFormat,
    Storage, StorageError, Table,
};

type RecordTable = Table<u64, Record, OrderedFormat, RkyvFormat>;

fn records(storage: &Storage) -> RecordTable {
    storage
        .new_table::<u64, Record>("records")
        .with_key_format(OrderedFormat::new())
        .with_value_format(RkyvFormat::new())
        .build()
        .unwrap()
}

/// Reads every entry of a record table into owned values.
fn contents(table: &RecordTable) -> BTreeMap<u64, Record> {
    table
        .iter()
        .unwrap()
        .map(|e| {
            let (k, g) = e.unwrap();
            (k, rkyv::deserialize::<Record, rkyv::rancor::Error>(&*g).unwrap())
        })
        .collect()
}

fn put_get_and_overwrite(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let t = records(&storage);
    assert!(t.get(&1).unwrap().is_none());
    t.put(&1, &Record::new(1)).unwrap();
    {
        let g = t.get(&1).unwrap().unwrap();
        let archived: &ArchivedRecord = &g;
        assert_eq!(archived.name, "record-1");
        assert_eq!(archived.id, 1);
    }
    t.put(&1, &Record::new(100)).unwrap();
    assert_eq!(t.get(&1).unwrap().unwrap().name, "record-100");
    assert!(t.contains_key(&1).unwrap());
    assert!(!t.contains_key(&2).unwrap());
}

fn delete_reports_presence(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let t = records(&storage);
    t.put(&5, &Record::new(5)).unwrap();
    assert!(t.delete(&5).unwrap());
    assert!(!t.delete(&5).unwrap());
    assert!(t.get(&5).unwrap().is_none());
    assert_eq!(t.len().unwrap(), 0);
}

fn put_all_len_clear(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let t = records(&storage);
    let (d1, d2) = (Record::new(1), Record::new(2));
    t.put_all(vec![(&1, &d1), (&2, &d2)]).unwrap();
    t.put_all((3..100).map(|i| (i, Record::new(i)))).unwrap();
    t.put_all(Vec::<(u64, Record)>::new()).unwrap();
    assert_eq!(t.len().unwrap(), 99);
    assert!(!t.is_empty().unwrap());
    let all = contents(&t);
    assert_eq!(all.len(), 99);
    assert!(all.iter().all(|(k, v)| *v == Record::new(*k)));
    t.clear().unwrap();
    assert_eq!(t.len().unwrap(), 0);
    assert!(t.is_empty().unwrap());
    assert!(t.get(&1).unwrap().is_none());
    // The table is still usable after clear.
    t.put(&7, &Record::new(7)).unwrap();
    assert_eq!(t.len().unwrap(), 1);
}

fn put_all_is_all_or_nothing_on_error(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let t = storage
        .new_table::<u32, Vec<u8>>("blobs")
        .with_key_format(OrderedFormat::new())
        .with_value_format(BytesFormat::new())
        .build()
        .unwrap();
    let too_big = vec![0u8; typed_kv::MAX_VALUE_LEN + 1];
    let items = vec![(1u32, vec![1u8]), (2, too_big), (3, vec![3])];
    let err = t.put_all(items).unwrap_err();
    assert!(matches!(err, StorageError::TooLarge { what: "value", .. }), "{err}");
    assert_eq!(t.len().unwrap(), 0, "no item of a failed put_all may be written");
}

fn iteration_and_ranges_follow_key_order(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let t = records(&storage);
    // Inserted out of order, with values whose little-endian bytes would sort differently.
    for i in [300u64, 2, 256, 1, 65536, 255, 0, 1000] {
        t.put(&i, &Record::new(i)).unwrap();
    }
    let keys: Vec<u64> = t.iter().unwrap().map(|e| e.unwrap().0).collect();
    assert_eq!(keys, vec![0, 1, 2, 255, 256, 300, 1000, 65536]);
    let range =
        |r: (Bound<u64>, Bound<u64>)| -> Vec<u64> { t.range(r).unwrap().map(|e| e.unwrap().0).collect() };
    use Bound::*;
    assert_eq!(range((Included(2), Excluded(300))), vec![2, 255, 256]);
    assert_eq!(range((Excluded(2), Included(300))), vec![255, 256, 300]);
    assert_eq!(range((Unbounded, Included(1))), vec![0, 1]);
    assert_eq!(range((Included(1000), Unbounded)), vec![1000, 65536]);
    assert_eq!(range((Included(301), Excluded(999))), Vec::<u64>::new());
    let from_std: Vec<u64> = t.range(255..=256).unwrap().map(|e| e.unwrap().0).collect();
    assert_eq!(from_std, vec![255, 256]);
    // Each guard reads the value of its own key.
    for entry in t.range(..).unwrap() {
        let (k, g) = entry.unwrap();
        assert_eq!(g.id, k);
    }
    // The halves of entries: values alone and keys alone, from the table and a snapshot.
    let ids = |guards: typed_kv::Values<'_, u64, Record, OrderedFormat, RkyvFormat>| -> Vec<u64> {
        guards.map(|g| g.unwrap().id.to_native()).collect()
    };
    assert_eq!(ids(t.range((Excluded(2), Included(300))).unwrap().values()), vec![255, 256, 300]);
    assert_eq!(ids(t.iter().unwrap().values()), keys);
    let snapshot = t.snapshot().unwrap();
    assert_eq!(ids(snapshot.range(1000..).unwrap().values()), vec![1000, 65536]);
    let snapshot_keys: Vec<u64> = snapshot.range(..=1).unwrap().keys().map(Result::unwrap).collect();
    assert_eq!(snapshot_keys, vec![0, 1]);
    let all_keys: Vec<u64> = t.iter().unwrap().keys().map(Result::unwrap).collect();
    assert_eq!(all_keys, keys);
}

fn data_survives_reopen(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(backend, dir.path());
        let t = records(&storage);
        t.put_all((0..500).map(|i| (i, Record::new(i)))).unwrap();
        t.delete(&7).unwrap();
    }
    let storage = open(backend, dir.path());
    let t = records(&storage);
    let all = contents(&t);
    assert_eq!(all.len(), 499);
    assert!(!all.contains_key(&7));
    assert_eq!(all[&499], Record::new(499));
    assert_eq!(storage.table_names().unwrap(), vec!["records".to_string()]);
}

fn with_stream_filters_and_collects(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let t = records(&storage);
    t.put_all((0..1000).map(|i| (i, Record::new(i)))).unwrap();
    let top = t
        .with_stream(|s| {
            block_on(
                s.filter(|(_, g)| futures::future::ready(g.score > 1200.0))
                    .map(|(id, g)| (id, g.name.to_string()))
                    .take(100)
                    .collect::<Vec<_>>(),
            )
        })
        .unwrap();
    assert_eq!(top.len(), 100);
    assert_eq!(top[0], (801, "record-801".to_string()));
    assert!(top.windows(2).all(|w| w[0].0 < w[1].0));
    let count = t.with_stream(|s| block_on(s.count())).unwrap();
    assert_eq!(count, 1000);
}

/// A snapshot taken before a writer runs sees none of its writes, however long it lives.
fn snapshots_ignore_concurrent_writes(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let t = records(&storage);
    t.put_all((0..200).map(|i| (i, Record::new(i)))).unwrap();
    let before = contents(&t);

    let started = Arc::new(Barrier::new(2));
    let seen = t
        .with_stream(|s| {
            let writer = {
                let (t, started) = (t.clone(), started.clone());
                std::thread::spawn(move || {
                    started.wait();
                    t.put_all((0..400).map(|i| (i, Record::new(i + 10_000)))).unwrap();
                    t.delete(&0).unwrap();
                })
            };
            started.wait();
            // On engines with real snapshots the writer finishes while we hold ours; sled
            // makes writers wait for open snapshots, so there it finishes afterwards.
            let writer = if backend != DatabaseBackend::Sled {
                writer.join().unwrap();
                None
            } else {
                Some(writer)
            };
            let seen: BTreeMap<u64, Record> = block_on(
                s.map(|(k, g)| (k, rkyv::deserialize::<Record, rkyv::rancor::Error>(&*g).unwrap())).collect(),
            );
            (seen, writer)
        })
        .unwrap();
    let (seen, writer) = seen;
    if let Some(w) = writer {
        w.join().unwrap();
    }
    assert_eq!(seen, before);
    let after = contents(&t);
    assert_eq!(after.len(), 399);
    assert_eq!(after[&1], Record::new(10_001));
}

fn read_txn_is_consistent_across_tables(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let a = records(&storage);
    let b = storage
        .new_table::<String, u64>("counts")
        .with_key_format(OrderedFormat::new())
        .with_value_format(PostcardFormat::new())
        .build()
        .unwrap();
    let mut batch = storage.batch();
    batch.put(&a, &1, &Record::new(1)).unwrap();
    batch.put(&b, &"records".to_string(), &1).unwrap();
    assert_eq!(batch.len(), 2);
    batch.commit().unwrap();

    let snapshot = storage.read().unwrap();
    let writer = {
        let (a, b) = (a.clone(), b.clone());
        let storage = storage.clone();
        std::thread::spawn(move || {
            let mut batch = storage.batch();
            batch.put(&a, &2, &Record::new(2)).unwrap();
            batch.put(&b, &"records".to_string(), &2).unwrap();
            batch.delete(&a, &1).unwrap();
            batch.commit().unwrap();
        })
    };
    let writer = if backend != DatabaseBackend::Sled {
        writer.join().unwrap();
        // The batch is committed, yet the snapshot still sees the state before it.
        assert_eq!(a.len().unwrap(), 1);
        assert!(a.get(&2).unwrap().is_some());
        None
    } else {
        Some(writer)
    };
    assert_eq!(snapshot.len(&a).unwrap(), 1);
    assert!(snapshot.get(&a, &1).unwrap().is_some());
    assert!(snapshot.get(&a, &2).unwrap().is_none());
    assert_eq!(*snapshot.get(&b, &"records".to_string()).unwrap().unwrap(), 1);
    let keys: Vec<u64> = snapshot.iter(&a).unwrap().map(|e| e.unwrap().0).collect();
    assert_eq!(keys, vec![1]);
    drop(snapshot);
    // Sled's writer waited for the snapshot; now it can finish.
    if let Some(writer) = writer {
        writer.join().unwrap();
    }
    // After the batch: both tables moved together.
    let snapshot = storage.read().unwrap();
    assert!(snapshot.get(&a, &1).unwrap().is_none());
    assert_eq!(snapshot.get(&a, &2).unwrap().unwrap().id, 2);
    assert_eq!(*snapshot.get(&b, &"records".to_string()).unwrap().unwrap(), 2);
}

fn table_snapshot_serves_many_gets(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let t = records(&storage);
    t.put_all((0..100).map(|i| (i, Record::new(i)))).unwrap();
    let snap = t.snapshot().unwrap();
    for i in 0..100 {
        assert_eq!(snap.get(&i).unwrap().unwrap().id, i);
    }
    assert!(snap.contains_key(&99).unwrap());
    assert_eq!(snap.len().unwrap(), 100);
    assert_eq!(snap.range(10..20).unwrap().count(), 10);
}

fn readers_on_many_threads_see_only_written_values(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let t = records(&storage);
    t.put_all((0..100).map(|i| (i, Record::new(i)))).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let (t, stop) = (t.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) || reads < 1000 {
                    let k = (reads * 7 + r) % 100;
                    let g = t.get(&k).unwrap().expect("keys are never deleted");
                    // Every version of key k has id == k + 1000 * version.
                    assert_eq!(g.id % 1000, k);
                    assert_eq!(g.name, format!("record-{}", g.id));
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for version in 1..20u64 {
        t.put_all((0..100).map(|k| (k, Record::new(k + 1000 * version)))).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() >= 1000);
    }
}

fn put_stream_commits_in_chunks(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let t = records(&storage);
    let rows: Vec<(u64, Record)> = (0..5000).map(|i| (i, Record::new(i))).collect();
    let report = block_on(t.put_stream(futures::stream::iter(rows.iter().map(|(k, v)| (k, v))))).unwrap();
    assert_eq!(report.records, 5000);
    assert!(report.bytes > 5000 * 8);
    assert_eq!(report.chunks, 1, "5,000 small records fit in one default chunk");
    assert_eq!(t.len().unwrap(), 5000);

    let options = IngestOptions::default().chunk_records(1000);
    let report = block_on(
        t.put_stream_with(futures::stream::iter((5000..9500).map(|i| (i, Record::new(i)))), options),
    )
    .unwrap();
    assert_eq!(report.records, 4500);
    assert_eq!(report.chunks, 5);
    assert_eq!(contents(&t).len(), 9500);
}

/// The stream is polled only as fast as the writer commits: never more than the chunk being
/// encoded, the queued chunks and the one being committed ahead.
fn put_stream_applies_back_pressure(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let t = records(&storage);
    let committed = Arc::new(AtomicU64::new(0));
    let polled = Arc::new(AtomicU64::new(0));
    let max_ahead = Arc::new(AtomicU64::new(0));
    let chunk = 100u64;
    let options = IngestOptions::default().chunk_records(chunk as usize).queue_depth(1).on_progress({
        let committed = committed.clone();
        move |p| committed.store(p.records, Ordering::SeqCst)
    });
    let stream = futures::stream::iter(0..10_000u64).map({
        let (polled, committed, max_ahead) = (polled.clone(), committed.clone(), max_ahead.clone());
        move |i| {
            let ahead = polled.fetch_add(1, Ordering::SeqCst) + 1 - committed.load(Ordering::SeqCst);
            max_ahead.fetch_max(ahead, Ordering::SeqCst);
            (i, Record::new(i))
        }
    });
    let report = block_on(t.put_stream_with(stream, options)).unwrap();
    assert_eq!(report.records, 10_000);
    assert_eq!(report.chunks, 100);
    let ahead = max_ahead.load(Ordering::SeqCst);
    assert!(ahead <= 3 * chunk + 1, "the stream ran {ahead} records ahead of the commits");
}

/// Yields once to the executor, asking to be polled again.
async fn yield_now() {
    let mut yielded = false;
    futures::future::poll_fn(move |cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

/// While ingest waits for the writer, other tasks of a single-threaded executor run: if
/// commits ran on the executor, the ticking task could not run until ingest ended.
fn put_stream_does_not_block_the_executor(backend: DatabaseBackend) {
    use futures::task::LocalSpawnExt;
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let t = records(&storage);
    let mut pool = futures::executor::LocalPool::new();
    let done = Arc::new(AtomicBool::new(false));
    let ticks = Arc::new(AtomicU64::new(0));
    {
        let (done, ticks) = (done.clone(), ticks.clone());
        pool.spawner()
            .spawn_local(async move {
                while !done.load(Ordering::SeqCst) {
                    ticks.fetch_add(1, Ordering::SeqCst);
                    yield_now().await;
                }
            })
            .unwrap();
    }
    let options = IngestOptions::default().chunk_records(50).queue_depth(1);
    let report = pool
        .run_until(async {
            let r = t
                .put_stream_with(futures::stream::iter((0..5000u64).map(|i| (i, Record::new(i)))), options)
                .await;
            done.store(true, Ordering::SeqCst);
            r
        })
        .unwrap();
    assert_eq!(report.records, 5000);
    assert_eq!(report.chunks, 100);
    let ticks = ticks.load(Ordering::SeqCst);
    assert!(ticks >= 10, "the other task ran only {ticks} times during 100 commits");
}

fn values_in_every_format_round_trip(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let bin = storage
        .new_table::<u64, Record>("bincode")
        .with_key_format(RkyvFormat::new())
        .with_value_format(BincodeFormat::new())
        .build()
        .unwrap();
    let post = storage
        .new_table::<String, Record>("postcard")
        .with_key_format(PostcardFormat::new())
        .with_value_format(PostcardFormat::new())
        .build()
        .unwrap();
    let bytes = storage
        .new_table::<Vec<u8>, Vec<u8>>("bytes")
        .with_key_format(BytesFormat::new())
        .with_value_format(BytesFormat::new())
        .build()
        .unwrap();
    for i in 0..50u64 {
        bin.put(&i, &Record::new(i)).unwrap();
        post.put(&format!("k{i}"), &Record::new(i)).unwrap();
        bytes.put(&i.to_be_bytes().to_vec(), &vec![i as u8; i as usize]).unwrap();
    }
    for i in 0..50u64 {
        assert_eq!(*bin.get(&i).unwrap().unwrap(), Record::new(i));
        assert_eq!(*post.get(&format!("k{i}")).unwrap().unwrap(), Record::new(i));
        assert_eq!(&*bytes.get(&i.to_be_bytes().to_vec()).unwrap().unwrap(), &vec![i as u8; i as usize][..]);
    }
    let keys: Vec<u64> = bin.iter().unwrap().map(|e| e.unwrap().0).collect();
    assert_eq!(keys.len(), 50);
}

fn flatbuffers_values_read_in_place(backend: DatabaseBackend) {
    use company::Company;
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let t = storage
        .new_table::<String, Company>("companies")
        .with_key_format(PostcardFormat::new())
        .with_value_format(typed_kv::FlatbuffersFormat::new())
        .build()
        .unwrap();
    let all: Vec<Company> = (0..50).map(company::sample).collect();
    t.put_all(all.iter().map(|c| (c.name.clone(), c))).unwrap();
    for c in &all {
        let g = t.get(&c.name).unwrap().unwrap();
        let root = g.root();
        assert_eq!(root.name(), c.name);
        assert_eq!(root.cik(), c.cik);
        assert_eq!(Company::from_table(&root), *c);
    }
    let seen = t.with_stream(|s| block_on(s.map(|(k, g)| (k, g.root().cik())).collect::<Vec<_>>())).unwrap();
    assert_eq!(seen.len(), 50);
}

fn empty_keys_and_empty_values(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let t = storage
        .new_table::<Vec<u8>, Vec<u8>>("raw")
        .with_key_format(BytesFormat::new())
        .with_value_format(BytesFormat::new())
        .build()
        .unwrap();
    t.put(&vec![], &vec![]).unwrap();
    t.put(&vec![0], &vec![1]).unwrap();
    assert_eq!(&*t.get(&vec![]).unwrap().unwrap(), &[] as &[u8]);
    let keys: Vec<Vec<u8>> = t.iter().unwrap().map(|e| e.unwrap().0).collect();
    assert_eq!(keys, vec![vec![], vec![0]]);
    assert!(t.delete(&vec![]).unwrap());
    let unit = storage
        .new_table::<(), u32>("unit")
        .with_key_format(OrderedFormat::new())
        .with_value_format(PostcardFormat::new())
        .build()
        .unwrap();
    unit.put(&(), &42).unwrap();
    assert_eq!(*unit.get(&()).unwrap().unwrap(), 42);
}

fn huge_values_and_oversized_keys(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let t = storage
        .new_table::<Vec<u8>, Vec<u8>>("raw")
        .with_key_format(BytesFormat::new())
        .with_value_format(BytesFormat::new())
        .build()
        .unwrap();
    let huge: Vec<u8> = (0..16 << 20).map(|i: u32| (i % 251) as u8).collect();
    t.put(&b"huge".to_vec(), &huge).unwrap();
    assert!(*t.get(&b"huge".to_vec()).unwrap().unwrap() == huge[..]);
    let long_key = vec![7u8; typed_kv::MAX_KEY_LEN + 1];
    let err = t.put(&long_key, &vec![]).unwrap_err();
    assert!(matches!(err, StorageError::TooLarge { what: "key", .. }), "{err}");
    let err = t.get(&long_key).unwrap_err();
    assert!(matches!(err, StorageError::TooLarge { what: "key", .. }), "{err}");
    let max_key = vec![7u8; typed_kv::MAX_KEY_LEN];
    t.put(&max_key, &b"ok".to_vec()).unwrap();
    assert_eq!(&*t.get(&max_key).unwrap().unwrap(), b"ok");
}

/// Bytes typed-kv never wrote, planted with the engine's own API, are an error, not a panic.
fn corrupt_values_are_errors(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(backend, dir.path());
        let t = records(&storage);
        t.put(&1, &Record::new(1)).unwrap();
    }
    let mut key = Vec::new();
    typed_kv::KeyFormat::<u64>::to_bytes(&OrderedFormat::new(), &2, &mut key).unwrap();
    common::raw_put(backend, dir.path(), "records", &key, b"\xffnot an archive of Record at all\x01\x02");
    common::raw_put(backend, dir.path(), "records", b"\x01", b"short key");
    let storage = open(backend, dir.path());
    let t = records(&storage);
    assert_eq!(t.get(&1).unwrap().unwrap().id, 1);
    let err = t.get(&2).unwrap_err();
    match &err {
        StorageError::Decode { table, what, key, .. } => {
            assert_eq!(table, "records");
            assert_eq!(*what, "value");
            assert_eq!(key.as_deref(), Some("0x0000000000000002"));
        }
        other => panic!("expected a decode error, got {other}"),
    }
    let results: Vec<_> = t.iter().unwrap().collect();
    assert_eq!(results.len(), 3);
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    let err = t.with_stream(|s| block_on(s.count())).unwrap_err();
    assert!(matches!(err, StorageError::Decode { .. }), "{err}");
}

fn mismatched_formats_and_versions_on_reopen(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(backend, dir.path());
        records(&storage).put(&1, &Record::new(1)).unwrap();
    }
    let storage = open(backend, dir.path());
    let err = storage
        .new_table::<u64, Record>("records")
        .with_key_format(OrderedFormat::new())
        .with_value_format(BincodeFormat::new())
        .build()
        .unwrap_err();
    match &err {
        StorageError::TableTypeMismatch { table, stored, requested } => {
            assert_eq!(table, "records");
            assert_eq!(stored.value_format, "rkyv");
            assert_eq!(requested.value_format, "bincode");
        }
        other => panic!("expected a type mismatch, got {other}"),
    }
    assert!(err.to_string().contains("rkyv") && err.to_string().contains("bincode"), "{err}");
    let err = storage
        .new_table::<u32, Record>("records")
        .with_key_format(OrderedFormat::new())
        .with_value_format(RkyvFormat::new())
        .build()
        .unwrap_err();
    assert!(matches!(err, StorageError::TableTypeMismatch { .. }), "{err}");
    let err = storage
        .new_table::<u64, Record>("records")
        .with_key_format(OrderedFormat::new())
        .with_value_format(RkyvFormat::new())
        .with_version(3)
        .build()
        .unwrap_err();
    assert!(matches!(err, StorageError::TableTypeMismatch { .. }), "{err}");
    // The data was not touched by the refused builds.
    assert_eq!(records(&storage).get(&1).unwrap().unwrap().id, 1);
}

fn invalid_table_names(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let long = "x".repeat(201);
    for name in ["", "__typed_kv_catalog", "__typed_kvx", "tab\nle", long.as_str()] {
        let err = storage
            .new_table::<u64, u64>(name)
            .with_key_format(OrderedFormat::new())
            .with_value_format(PostcardFormat::new())
            .build()
            .unwrap_err();
        assert!(matches!(err, StorageError::InvalidTableName { .. }), "{name:?}: {err}");
    }
    let ok = "ünïcode names / with spaces";
    storage
        .new_table::<u64, u64>(ok)
        .with_key_format(OrderedFormat::new())
        .with_value_format(PostcardFormat::new())
        .build()
        .unwrap();
    assert_eq!(storage.table_names().unwrap(), vec![ok.to_string()]);
}

fn drop_table_and_list(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let t = records(&storage);
    t.put(&1, &Record::new(1)).unwrap();
    let other = storage
        .new_table::<u64, u64>("other")
        .with_key_format(OrderedFormat::new())
        .with_value_format(PostcardFormat::new())
        .build()
        .unwrap();
    other.put(&1, &1).unwrap();
    assert_eq!(storage.table_names().unwrap(), vec!["other".to_string(), "records".to_string()]);
    assert!(storage.table_stamp("records").unwrap().is_some());
    drop(t);
    assert!(storage.drop_table("records").unwrap());
    assert!(!storage.drop_table("records").unwrap());
    assert_eq!(storage.table_names().unwrap(), vec!["other".to_string()]);
    // Rebuilt under another layout, it starts empty.
    let again = storage
        .new_table::<u64, u64>("records")
        .with_key_format(OrderedFormat::new())
        .with_value_format(PostcardFormat::new())
        .build()
        .unwrap();
    assert_eq!(again.len().unwrap(), 0);
    assert_eq!(*other.get(&1).unwrap().unwrap(), 1);
}

fn compaction_reports_what_it_did(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let t = records(&storage);
    t.put_all((0..5000).map(|i| (i, Record::new(i)))).unwrap();
    for i in 0..4000 {
        t.delete(&i).unwrap();
    }
    let report = storage.compact().unwrap();
    match report {
        typed_kv::CompactionReport::Compacted { before, after } => {
            assert!(after <= before, "{before} -> {after}")
        }
        typed_kv::CompactionReport::AlreadyCompact { size } => assert!(size > 0),
        typed_kv::CompactionReport::NotSupported { reason } => {
            assert_eq!(backend, DatabaseBackend::Sled, "{reason}")
        }
        other => panic!("unexpected report {other:?}"),
    }
    assert_eq!(contents(&t).len(), 1000);
}

/// Compaction with a guard alive is either refused (`Busy`, redb) or done, and the guard
/// keeps reading its value.
fn compaction_with_a_live_guard(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let t = records(&storage);
    t.put_all((0..100).map(|i| (i, Record::new(i)))).unwrap();
    let guard = t.get(&1).unwrap().unwrap();
    // redb refuses (`Busy`) while a read transaction it tracks is alive; an owned guard's
    // transaction does not always count, and then it compacts. Either way the guard must keep
    // reading its own value.
    match storage.compact() {
        Ok(_) => {}
        Err(StorageError::Busy { action: "compaction", .. }) => assert_eq!(backend, DatabaseBackend::Redb),
        Err(e) => panic!("compaction failed: {e}"),
    }
    assert_eq!(guard.id, 1, "the guard still reads its value");
    assert_eq!(guard.name, "record-1");
    drop(guard);
    storage.compact().unwrap();
    assert_eq!(t.len().unwrap(), 100);
}

/// rkyv guards copy misaligned bytes into an aligned buffer, and the storage counts each
/// copy; formats without alignment needs never copy.
fn aligned_copies_are_counted(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let small = storage
        .new_table::<u32, u64>("small")
        .with_key_format(OrderedFormat::new())
        .with_value_format(RkyvFormat::new())
        .build()
        .unwrap();
    let raw = storage
        .new_table::<u32, Vec<u8>>("raw")
        .with_key_format(OrderedFormat::new())
        .with_value_format(BytesFormat::new())
        .build()
        .unwrap();
    for i in 0..10u32 {
        small.put(&i, &(u64::from(i) * 1000)).unwrap();
        raw.put(&i, &vec![1, 2, 3]).unwrap();
    }
    let before = storage.aligned_copies();
    for i in 0..10u32 {
        assert_eq!(raw.get(&i).unwrap().unwrap().len(), 3);
    }
    assert_eq!(storage.aligned_copies(), before, "bytes values never need alignment");
    for i in 0..10u32 {
        let g = small.get(&i).unwrap().unwrap();
        assert_eq!(*g, u64::from(i) * 1000);
        assert_eq!(g.raw_bytes().as_ptr() as usize % 16, 0, "the view reads aligned bytes");
    }
    let copies = storage.aligned_copies() - before;
    assert!(copies <= 10, "{copies} copies for 10 reads");
    if backend == DatabaseBackend::Sled {
        // 8-byte values live inside sled's `IVec` itself and move with it: always copied.
        assert_eq!(copies, 10);
    }
}

fn second_open_is_locked(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let _storage = open(backend, dir.path());
    let err = common::open_with(backend, dir.path(), typed_kv::Recreate::IfMissing, 0).unwrap_err();
    assert!(matches!(err, StorageError::Locked { .. }), "{err}");
}

fn other_backends_files_are_refused(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    drop(open(backend, dir.path()));
    for other in DatabaseBackend::compiled().filter(|b| *b != backend) {
        let err = common::open_with(other, dir.path(), typed_kv::Recreate::IfMissing, 0).unwrap_err();
        match &err {
            StorageError::BackendMismatch { found, requested, .. } => {
                assert_eq!(found, backend.name());
                assert_eq!(*requested, other);
            }
            e => panic!("expected a backend mismatch, got {e}"),
        }
    }
    // A database the engine made outside typed-kv is recognised and left alone.
    let foreign = tempfile::tempdir().unwrap();
    common::raw_put_in(backend, &foreign.path().join("x"), "t", b"k", b"v");
    let err =
        common::open_with(backend, &foreign.path().join("x"), typed_kv::Recreate::Always, 0).unwrap_err();
    assert!(matches!(err, StorageError::NotAStore { .. }), "{err}");
    assert!(err.to_string().contains(backend.name()), "{err}");
}

fn durability_none_keeps_data_after_flush_and_close(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = typed_kv::StorageBuilder::new(dir.path())
            .with_backend(backend)
            .with_durability(typed_kv::Durability::None)
            .build()
            .unwrap();
        let t = records(&storage);
        t.put_all((0..100).map(|i| (i, Record::new(i)))).unwrap();
        storage.flush().unwrap();
        t.put(&100, &Record::new(100)).unwrap();
    }
    let storage = open(backend, dir.path());
    assert_eq!(records(&storage).len().unwrap(), 101);
}

fn tables_of_another_storage_are_refused(backend: DatabaseBackend) {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (s1, s2) = (open(backend, d1.path()), open(backend, d2.path()));
    let t1 = records(&s1);
    let mut batch = s2.batch();
    let err = batch.put(&t1, &1, &Record::new(1)).err().unwrap();
    assert!(matches!(err, StorageError::ForeignTable { .. }), "{err}");
    let err = s2.read().unwrap().get(&t1, &1).err().unwrap();
    assert!(matches!(err, StorageError::ForeignTable { .. }), "{err}");
}

per_backend!(
    put_get_and_overwrite,
    delete_reports_presence,
    put_all_len_clear,
    put_all_is_all_or_nothing_on_error,
    iteration_and_ranges_follow_key_order,
    data_survives_reopen,
    with_stream_filters_and_collects,
    snapshots_ignore_concurrent_writes,
    read_txn_is_consistent_across_tables,
    table_snapshot_serves_many_gets,
    readers_on_many_threads_see_only_written_values,
    put_stream_commits_in_chunks,
    put_stream_applies_back_pressure,
    put_stream_does_not_block_the_executor,
    values_in_every_format_round_trip,
    flatbuffers_values_read_in_place,
    empty_keys_and_empty_values,
    huge_values_and_oversized_keys,
    corrupt_values_are_errors,
    mismatched_formats_and_versions_on_reopen,
    invalid_table_names,
    drop_table_and_list,
    compaction_reports_what_it_did,
    compaction_with_a_live_guard,
    aligned_copies_are_counted,
    second_open_is_locked,
    other_backends_files_are_refused,
    durability_none_keeps_data_after_flush_and_close,
    tables_of_another_storage_are_refused,
);
