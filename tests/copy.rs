//! `Storage::copy_to`: every pair of compiled backends, tables of every format; refusal of a
//! non-empty target, overwrite, progress.

mod common;
#[path = "../examples/support/company.rs"]
mod company;

use std::path::Path;

use common::{open, Record};
use company::{sample, Company};
use typed_kv::{
    BincodeFormat, BytesFormat, DatabaseBackend, FlatbuffersFormat, OrderedFormat, PostcardFormat,
    RkyvFormat, Storage, StorageError, TableStamp,
};

/// Table names [`fill`] makes, in name order.
const TABLES: [&str; 6] = ["blobs", "companies", "empty", "names", "records", "scores"];

type Typed<K, V, KF, VF> = typed_kv::Result<typed_kv::Table<K, V, KF, VF>>;

// The typed tables `fill` writes, opened the same way on both sides of a copy.
fn records(storage: &Storage) -> Typed<u64, Record, OrderedFormat, RkyvFormat> {
    storage
        .new_table("records")
        .with_key_format(OrderedFormat::new())
        .with_value_format(RkyvFormat::new())
        .build()
}

fn names(storage: &Storage) -> Typed<(String, i32), String, OrderedFormat, PostcardFormat> {
    storage
        .new_table("names")
        .with_key_format(OrderedFormat::new())
        .with_value_format(PostcardFormat::new())
        .with_version(3)
        .build()
}

fn scores(storage: &Storage) -> Typed<u32, Record, BincodeFormat, BincodeFormat> {
    storage
        .new_table("scores")
        .with_key_format(BincodeFormat::new())
        .with_value_format(BincodeFormat::new())
        .build()
}

fn companies(storage: &Storage) -> Typed<u64, Company, OrderedFormat, FlatbuffersFormat> {
    storage
        .new_table("companies")
        .with_key_format(OrderedFormat::new())
        .with_value_format(FlatbuffersFormat::new())
        .build()
}

fn blobs(storage: &Storage) -> Typed<Vec<u8>, Vec<u8>, BytesFormat, BytesFormat> {
    storage
        .new_table("blobs")
        .with_key_format(BytesFormat::new())
        .with_value_format(BytesFormat::new())
        .build()
}

/// Six tables of different formats, 1,003 records in all, with an empty value and one value
/// larger than a copy chunk.
fn fill(storage: &Storage) -> u64 {
    let records = records(storage).unwrap();
    records.put_all((0..400).map(|i| (i, Record::new(i)))).unwrap();
    let names = names(storage).unwrap();
    names.put_all((-100..100i32).map(|i| ((format!("name {}", i.abs()), i), format!("value {i}")))).unwrap();
    let scores = scores(storage).unwrap();
    scores.put_all((0..200).map(|i| (i, Record::new(u64::from(i))))).unwrap();
    let companies = companies(storage).unwrap();
    companies.put_all((0..200).map(|i| (i, sample(i)))).unwrap();
    let blobs = blobs(storage).unwrap();
    blobs.put(&b"empty".to_vec(), &Vec::new()).unwrap();
    blobs.put(&b"large".to_vec(), &vec![0xAB; 200 << 10]).unwrap();
    blobs.put(&vec![0, 255, 0], &b"binary key".to_vec()).unwrap();
    storage
        .new_table::<u8, u8>("empty")
        .with_key_format(OrderedFormat::new())
        .with_value_format(PostcardFormat::new())
        .build()
        .unwrap();
    400 + 200 + 200 + 200 + 3
}

/// Every table's stamp and entries, as stored.
type Contents = Vec<(String, TableStamp, Vec<(Vec<u8>, Vec<u8>)>)>;

fn contents(storage: &Storage) -> Contents {
    storage
        .table_names()
        .unwrap()
        .into_iter()
        .map(|name| {
            let table = storage.untyped_table(&name).unwrap();
            let entries = table
                .iter()
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (e.key().to_vec(), e.value().to_vec())
                })
                .collect();
            (name, table.stamp().clone(), entries)
        })
        .collect()
}

/// Builds every table of [`fill`] with its types on `storage` and reads a value of each: the
/// stamps match (no `TableTypeMismatch`) and guards validate the copied bytes.
fn open_typed(storage: &Storage, context: &str) {
    let records = records(storage).unwrap_or_else(|e| panic!("{context}: records: {e}"));
    assert_eq!(records.get(&399).unwrap().expect("copied").name, "record-399", "{context}");
    let names = names(storage).unwrap_or_else(|e| panic!("{context}: names: {e}"));
    assert_eq!(*names.get(&("name 7".into(), -7)).unwrap().expect("copied"), "value -7", "{context}");
    let scores = scores(storage).unwrap_or_else(|e| panic!("{context}: scores: {e}"));
    assert_eq!(*scores.get(&5).unwrap().expect("copied"), Record::new(5), "{context}");
    let companies = companies(storage).unwrap_or_else(|e| panic!("{context}: companies: {e}"));
    let company = companies.get(&42).unwrap().expect("copied");
    assert_eq!(Company::from_table(&company.root()), sample(42), "{context}");
    let blobs = blobs(storage).unwrap_or_else(|e| panic!("{context}: blobs: {e}"));
    assert_eq!(blobs.get(&b"large".to_vec()).unwrap().expect("copied").len(), 200 << 10, "{context}");
    assert_eq!(blobs.get(&b"empty".to_vec()).unwrap().expect("copied").len(), 0, "{context}");
}

fn copy_between(from: DatabaseBackend, to: DatabaseBackend, dir: &Path) {
    let context = format!("{from} -> {to}");
    let source = open(from, &dir.join(format!("{from}-source")));
    let total = fill(&source);
    let expected = contents(&source);
    let target_path = dir.join(format!("{from}-to-{to}"));
    let target = open(to, &target_path);

    let mut seen = Vec::new();
    let report = source
        .copy_to(&target)
        .chunk_records(64)
        .chunk_bytes(64 << 10)
        .on_progress(|p| {
            seen.push((p.table.to_owned(), p.tables_done, p.tables_total, p.records, p.records_expected))
        })
        .run()
        .unwrap_or_else(|e| panic!("{context}: {e}"));

    assert_eq!(report.records, total, "{context}");
    let names: Vec<&str> = report.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, TABLES, "{context}");
    assert!(report.tables.iter().all(|t| !t.replaced), "{context}");
    assert_eq!(report.tables.iter().map(|t| t.records).sum::<u64>(), total, "{context}");
    // 400 records in chunks of 64 make 7 chunks, 200 make 4; the 200 KiB value ends the
    // chunk of blobs at once; the empty table commits only its stamp (no chunk).
    assert_eq!(report.chunks, 7 + 4 + 4 + 4 + 1, "{context}");
    assert!(seen.windows(2).all(|w| w[0].3 <= w[1].3), "{context}: progress went back: {seen:?}");
    let last = seen.last().expect("progress was reported");
    assert_eq!((last.1, last.2, last.3), (6, 6, total), "{context}: {last:?}");
    let expected_count =
        if matches!(from, DatabaseBackend::Native | DatabaseBackend::Redb) { Some(total) } else { None };
    assert_eq!(last.4, expected_count, "{context}: records_expected");
    assert_eq!(contents(&target), expected, "{context}: the target differs");

    // After closing and reopening, the target opens with the same typed tables.
    drop(target);
    let reopened = open(to, &target_path);
    assert_eq!(contents(&reopened), expected, "{context}: the reopened target differs");
    open_typed(&reopened, &context);
    if to == DatabaseBackend::Native {
        // The copy stored rkyv values aligned, as a typed write would: guards copy nothing.
        assert_eq!(reopened.aligned_copies(), 0, "{context}: rkyv values were copied misaligned");
    }
}

#[test]
fn every_pair_of_backends_copies_every_table_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    for from in DatabaseBackend::compiled() {
        for to in DatabaseBackend::compiled() {
            copy_between(from, to, dir.path());
        }
    }
}

#[test]
fn a_target_with_tables_is_refused_unless_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let source = open(DatabaseBackend::Sled, &dir.path().join("source"));
    fill(&source);
    let target = open(DatabaseBackend::Native, &dir.path().join("target"));
    let records = records(&target).unwrap();
    records.put(&100_000, &Record::new(100_000)).unwrap();
    let kept = target
        .new_table::<u8, u8>("target-only")
        .with_key_format(OrderedFormat::new())
        .with_value_format(PostcardFormat::new())
        .build()
        .unwrap();
    kept.put(&1, &1).unwrap();

    let refused = source.copy_to(&target).run();
    match refused {
        Err(StorageError::CopyRefused { reason, .. }) => {
            assert!(reason.contains("`records`") && reason.contains("overwrite"), "{reason}")
        }
        other => panic!("expected CopyRefused, got {other:?}"),
    }
    assert!(records.get(&100_000).unwrap().is_some(), "a refused copy changed the target");

    let report = source.copy_to(&target).overwrite(true).run().unwrap();
    let replaced: Vec<&str> = report.tables.iter().filter(|t| t.replaced).map(|t| t.name.as_str()).collect();
    assert_eq!(replaced, ["records"]);
    assert!(records.get(&100_000).unwrap().is_none(), "the replaced table kept a key the source lacks");
    assert_eq!(records.len().unwrap(), 400);
    assert_eq!(*kept.get(&1).unwrap().expect("kept"), 1, "a table the source lacks was touched");
    let mut source_tables = contents(&source);
    let mut target_tables = contents(&target);
    target_tables.retain(|(name, _, _)| name != "target-only");
    source_tables.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(target_tables, source_tables);
}

#[test]
fn a_storage_cannot_be_copied_into_itself() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(DatabaseBackend::DEFAULT, dir.path());
    match storage.copy_to(&storage.clone()).run() {
        Err(StorageError::CopyRefused { reason, .. }) => {
            assert!(reason.contains("source itself"), "{reason}")
        }
        other => panic!("expected CopyRefused, got {other:?}"),
    }
}

#[test]
fn an_empty_source_copies_nothing_and_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let source = open(DatabaseBackend::DEFAULT, &dir.path().join("a"));
    let target = open(DatabaseBackend::DEFAULT, &dir.path().join("b"));
    let report = source.copy_to(&target).run().unwrap();
    assert_eq!((report.records, report.chunks, report.tables.len()), (0, 0, 0));
    assert!(target.table_names().unwrap().is_empty());
}
