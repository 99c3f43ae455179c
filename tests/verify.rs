//! `Storage::verify` on every backend: a clean store passes and says what it checked; bytes
//! planted through the engines' own APIs, and bytes flipped in native segment files, are
//! reported with table, key and reason.

mod common;
#[path = "../examples/support/company.rs"]
mod company;

use common::{open, raw_put, Record};
use company::{sample, Company};
use typed_kv::{
    BytesFormat, ChecksumCheck, DatabaseBackend, FlatbuffersFormat, FormatCheck, OrderedFormat,
    PostcardFormat, Storage, VerifyReport,
};

/// Four tables: ordered/rkyv, ordered/flatbuffers, bytes/bytes, ordered (custom-free)/postcard.
fn fill(storage: &Storage) {
    let records = common::records_table(storage, "records");
    records.put_all((0..100).map(|i| (i, Record::new(i)))).unwrap();
    let companies = storage
        .new_table::<u64, Company>("companies")
        .with_key_format(OrderedFormat::new())
        .with_value_format(FlatbuffersFormat::new())
        .build()
        .unwrap();
    companies.put_all((0..50).map(|i| (i, sample(i)))).unwrap();
    let blobs = common::blobs_table(storage, "blobs");
    blobs.put_all((0..20u8).map(|i| (vec![i], format!("blob {i}").into_bytes()))).unwrap();
    let names = storage
        .new_table::<(String, u32), String>("names")
        .with_key_format(OrderedFormat::new())
        .with_value_format(PostcardFormat::new())
        .build()
        .unwrap();
    names.put_all((0..30).map(|i| ((format!("n{i}"), i), format!("name {i}")))).unwrap();
}

fn table<'r>(report: &'r VerifyReport, name: &str) -> &'r typed_kv::TableVerify {
    report.tables.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no table {name} in {report:?}"))
}

fn a_clean_store_passes_and_says_what_was_checked(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    fill(&storage);
    let mut stages = Vec::new();
    let report = storage.verify_with_progress(|p| stages.push(p.stage)).unwrap();
    assert!(report.is_ok(), "{backend}: {:?}", report.problems);
    assert_eq!(report.records, 200, "{backend}");
    assert_eq!(report.tables.len(), 4, "{backend}");
    assert!(stages.contains(&typed_kv::VerifyStage::Records), "{backend}: no progress on records");

    let checked = |check: &FormatCheck| matches!(check, FormatCheck::Decoded { .. });
    let records = table(&report, "records");
    assert_eq!(records.records, 100);
    assert!(checked(&records.keys), "{backend}: ordered u64 keys: {}", records.keys);
    assert!(
        matches!(&records.values, FormatCheck::NotChecked { why } if why.contains("rkyv")),
        "{backend}: rkyv values: {}",
        records.values
    );
    if backend == DatabaseBackend::Native {
        assert_eq!(records.misaligned_values, 0, "native stores rkyv values aligned");
    }
    let companies = table(&report, "companies");
    assert!(
        matches!(&companies.values, FormatCheck::Framing { how } if how.contains("typed_kv_example.Company")),
        "{backend}: flatbuffers values: {}",
        companies.values
    );
    let blobs = table(&report, "blobs");
    assert!(checked(&blobs.keys) && checked(&blobs.values), "{backend}: bytes");
    let names = table(&report, "names");
    assert!(checked(&names.keys), "{backend}: (String, u32) keys: {}", names.keys);
    assert!(matches!(names.values, FormatCheck::NotChecked { .. }), "{backend}: postcard: {}", names.values);

    match (&report.checksums, backend) {
        (ChecksumCheck::Checked { records, .. }, DatabaseBackend::Native) => {
            // Every record of the log: the data, the catalog's stamps.
            assert!(records.is_some_and(|r| r >= 204), "{records:?}")
        }
        (ChecksumCheck::Checked { method, .. }, DatabaseBackend::Redb) => assert!(method.contains("redb")),
        (ChecksumCheck::NotAvailable { reason }, DatabaseBackend::Sled) => assert!(reason.contains("sled")),
        (ChecksumCheck::NotAvailable { reason }, DatabaseBackend::RocksDb) => {
            assert!(reason.contains("RocksDB"))
        }
        (other, _) => panic!("{backend}: unexpected checksum check {other:?}"),
    }
}

fn bad_keys_and_values_are_reported_with_table_and_key(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    drop({
        let storage = open(backend, dir.path());
        fill(&storage);
        storage
    });
    // A key of 3 bytes in a table of u64 keys, and a value that is no FlatBuffer.
    raw_put(backend, dir.path(), "records", &[1, 2, 3], b"whatever");
    raw_put(backend, dir.path(), "companies", &7u64.to_be_bytes(), &[0xff; 12]);

    let storage = open(backend, dir.path());
    let report = storage.verify().unwrap();
    assert_eq!(report.problems.len(), 2, "{backend}: {:#?}", report.problems);
    let key_problem = report.problems.iter().find(|p| p.table.as_deref() == Some("records")).unwrap();
    assert_eq!(key_problem.key.as_deref(), Some(&[1, 2, 3][..]), "{backend}");
    assert!(key_problem.reason.contains("key") && key_problem.reason.contains("truncated"), "{key_problem}");
    let value_problem = report.problems.iter().find(|p| p.table.as_deref() == Some("companies")).unwrap();
    assert_eq!(value_problem.key.as_deref(), Some(&7u64.to_be_bytes()[..]), "{backend}");
    assert!(value_problem.reason.starts_with("value: "), "{value_problem}");
    assert_eq!(report.records, 201, "{backend}: every record is still read");
    assert!(!report.is_ok());
}

/// A byte of a value flipped in a native segment file: opening does not notice (the hint
/// covers that part of the log), `verify` does, naming the file, offset, table and key.
#[cfg(feature = "native")]
#[test]
fn a_flipped_byte_in_a_native_segment_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let marker = b"PLANTED-VALUE-0042".to_vec();
    drop({
        let storage = open(DatabaseBackend::Native, dir.path());
        fill(&storage);
        let blobs = storage
            .new_table::<Vec<u8>, Vec<u8>>("blobs")
            .with_key_format(BytesFormat::new())
            .with_value_format(BytesFormat::new())
            .build()
            .unwrap();
        blobs.put(&b"victim".to_vec(), &marker).unwrap();
        storage
    });
    let segment = common::engine_dir(DatabaseBackend::Native, dir.path()).join("seg-0000000001.tkv");
    let mut bytes = std::fs::read(&segment).unwrap();
    let at =
        bytes.windows(marker.len()).position(|w| w == marker).expect("the value is in the first segment");
    bytes[at + 3] ^= 0x20;
    std::fs::write(&segment, &bytes).unwrap();

    let storage = open(DatabaseBackend::Native, dir.path());
    let report = storage.verify().unwrap();
    assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
    let problem = &report.problems[0];
    assert_eq!(problem.table.as_deref(), Some("blobs"));
    assert_eq!(problem.key.as_deref(), Some(&b"victim"[..]));
    assert_eq!(problem.file.as_deref(), Some(segment.as_path()));
    let offset = problem.offset.expect("an offset");
    assert!(offset < at as u64 && at as u64 - offset < 64, "the record starts just before its value");
    assert!(problem.reason.contains("checksum mismatch"), "{problem}");
    let shown = problem.to_string();
    assert!(
        shown.contains("table `blobs`, key 0x76696374696d") && shown.contains("seg-0000000001.tkv"),
        "{shown}"
    );
}

per_backend!(
    a_clean_store_passes_and_says_what_was_checked,
    bad_keys_and_values_are_reported_with_table_and_key
);
