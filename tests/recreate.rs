//! Each `Recreate` policy on fresh, matching, version-bumped and mismatching stores, on
//! every backend.

mod common;

use std::path::Path;

use common::open_with;
use typed_kv::{
    BincodeFormat, DatabaseBackend, OrderedFormat, PostcardFormat, Recreate, Storage, StorageError, Table,
};

type Counts = Table<u32, u64, OrderedFormat, PostcardFormat>;

fn counts(storage: &Storage) -> typed_kv::Result<Counts> {
    storage
        .new_table::<u32, u64>("counts")
        .with_key_format(OrderedFormat::new())
        .with_value_format(PostcardFormat::new())
        .build()
}

/// Makes a store at `path` with schema version `version` and one entry.
fn seed(backend: DatabaseBackend, path: &Path, version: u64) {
    let storage = open_with(backend, path, Recreate::IfMissing, version).unwrap();
    counts(&storage).unwrap().put(&1, &100).unwrap();
}

fn stored_version(storage: &Storage) -> u64 {
    storage.table_stamp("counts").unwrap().unwrap().schema_version
}

fn if_missing(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    // Fresh: created.
    seed(backend, &path, 1);
    // Matching: opened with its data.
    let storage = open_with(backend, &path, Recreate::IfMissing, 1).unwrap();
    assert_eq!(*counts(&storage).unwrap().get(&1).unwrap().unwrap(), 100);
    drop(storage);
    // Bumped: refused, data kept.
    let storage = open_with(backend, &path, Recreate::IfMissing, 2).unwrap();
    let err = counts(&storage).unwrap_err();
    assert!(matches!(err, StorageError::TableTypeMismatch { .. }), "{err}");
    assert_eq!(stored_version(&storage), 1);
    // Mismatching formats: refused.
    let err = storage
        .new_table::<u32, u64>("counts")
        .with_key_format(OrderedFormat::new())
        .with_value_format(BincodeFormat::new())
        .with_version(1)
        .build()
        .unwrap_err();
    assert!(matches!(err, StorageError::TableTypeMismatch { .. }), "{err}");
}

fn always(backend: DatabaseBackend) {
    // Fresh.
    let dir = tempfile::tempdir().unwrap();
    let storage = open_with(backend, &dir.path().join("db"), Recreate::Always, 1).unwrap();
    assert_eq!(counts(&storage).unwrap().len().unwrap(), 0);
    // Matching or bumped: everything starts empty.
    for (stored, requested) in [(1, 1), (1, 2)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        seed(backend, &path, stored);
        let storage = open_with(backend, &path, Recreate::Always, requested).unwrap();
        assert!(storage.table_names().unwrap().is_empty());
        assert_eq!(counts(&storage).unwrap().len().unwrap(), 0);
    }
    // Mismatching formats: no conflict, the old table is gone.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    seed(backend, &path, 1);
    let storage = open_with(backend, &path, Recreate::Always, 1).unwrap();
    let t = storage
        .new_table::<u32, u64>("counts")
        .with_key_format(OrderedFormat::new())
        .with_value_format(BincodeFormat::new())
        .build()
        .unwrap();
    assert_eq!(t.len().unwrap(), 0);
}

fn on_version_bump(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    // Fresh.
    let storage = open_with(backend, &path, Recreate::OnVersionBump, 1).unwrap();
    counts(&storage).unwrap().put(&1, &100).unwrap();
    drop(storage);
    // Matching: kept.
    let storage = open_with(backend, &path, Recreate::OnVersionBump, 1).unwrap();
    assert_eq!(*counts(&storage).unwrap().get(&1).unwrap().unwrap(), 100);
    drop(storage);
    // Bumped: the table is cleared and restamped, even with new formats.
    let storage = open_with(backend, &path, Recreate::OnVersionBump, 2).unwrap();
    let t = storage
        .new_table::<u32, u64>("counts")
        .with_key_format(OrderedFormat::new())
        .with_value_format(BincodeFormat::new())
        .build()
        .unwrap();
    assert_eq!(t.len().unwrap(), 0);
    assert_eq!(stored_version(&storage), 2);
    t.put(&2, &200).unwrap();
    drop((t, storage));
    // Older code than data: refused, data kept.
    let storage = open_with(backend, &path, Recreate::OnVersionBump, 1).unwrap();
    let err = counts(&storage).unwrap_err();
    match err {
        StorageError::VersionDowngrade { stored, requested, .. } => assert_eq!((stored, requested), (2, 1)),
        other => panic!("expected a downgrade error, got {other}"),
    }
    // Same version, other formats: a mismatch, not a silent wipe.
    let storage2 = storage;
    let err = storage2
        .new_table::<u32, u64>("counts")
        .with_key_format(OrderedFormat::new())
        .with_value_format(PostcardFormat::new())
        .with_version(2)
        .build()
        .unwrap_err();
    assert!(matches!(err, StorageError::TableTypeMismatch { .. }), "{err}");
}

fn on_validation_fail(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    // Fresh and matching.
    seed(backend, &path, 1);
    let storage = open_with(backend, &path, Recreate::OnValidationFail, 1).unwrap();
    assert_eq!(*counts(&storage).unwrap().get(&1).unwrap().unwrap(), 100);
    // Bumped: the table is recreated.
    let bumped = storage
        .new_table::<u32, u64>("counts")
        .with_key_format(OrderedFormat::new())
        .with_value_format(PostcardFormat::new())
        .with_version(2)
        .build()
        .unwrap();
    assert_eq!(bumped.len().unwrap(), 0);
    bumped.put(&3, &300).unwrap();
    drop(bumped);
    // Mismatching: recreated too.
    let t = storage
        .new_table::<u32, u64>("counts")
        .with_key_format(OrderedFormat::new())
        .with_value_format(BincodeFormat::new())
        .with_version(2)
        .build()
        .unwrap();
    assert_eq!(t.len().unwrap(), 0);
    drop((t, storage));

    // A damaged marker: IfMissing refuses, OnValidationFail starts afresh.
    std::fs::write(path.join("typed-kv.meta"), b"garbage").unwrap();
    let err = open_with(backend, &path, Recreate::IfMissing, 1).unwrap_err();
    assert!(matches!(err, StorageError::NotAStore { .. }), "{err}");
    let storage = open_with(backend, &path, Recreate::OnValidationFail, 1).unwrap();
    assert!(storage.table_names().unwrap().is_empty());
    counts(&storage).unwrap().put(&1, &1).unwrap();
}

/// A store whose engine files are destroyed cannot be opened; OnValidationFail rebuilds it.
fn on_validation_fail_rebuilds_a_destroyed_engine(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    seed(backend, &path, 1);
    let engine = common::engine_dir(backend, &path);
    // Replace every engine file by garbage of the same name.
    for entry in common::files_under(&engine) {
        std::fs::write(&entry, vec![0xA5u8; 4096]).unwrap();
    }
    let refused = open_with(backend, &path, Recreate::IfMissing, 1).and_then(|s| counts(&s).map(|t| t.len()));
    assert!(refused.is_err() || matches!(refused, Ok(Err(_))), "a destroyed store opened cleanly");
    let storage = open_with(backend, &path, Recreate::OnValidationFail, 1).unwrap();
    let t = counts(&storage).unwrap();
    t.put(&9, &9).unwrap();
    assert_eq!(t.len().unwrap(), 1);
}

per_backend!(
    if_missing,
    always,
    on_version_bump,
    on_validation_fail,
    on_validation_fail_rebuilds_a_destroyed_engine
);
