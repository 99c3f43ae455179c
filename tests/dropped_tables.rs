//! Handles of a dropped (or recreated) table are dead on every backend: every operation
//! through them fails with `TableDropped`, even once a table of that name is built again,
//! and none of them reads or writes the new table. A cleared table's handles stay valid.

mod common;

use futures::executor::block_on;
use typed_kv::{DatabaseBackend, OrderedFormat, PostcardFormat, Recreate, Storage, StorageError, Table};

type Counts = Table<u32, u64, OrderedFormat, PostcardFormat>;
type Names = Table<u32, String, OrderedFormat, PostcardFormat>;

fn counts(storage: &Storage) -> Counts {
    storage
        .new_table::<u32, u64>("t")
        .with_key_format(OrderedFormat::new())
        .with_value_format(PostcardFormat::new())
        .build()
        .unwrap()
}

fn names(storage: &Storage) -> Names {
    storage
        .new_table::<u32, String>("t")
        .with_key_format(OrderedFormat::new())
        .with_value_format(PostcardFormat::new())
        .build()
        .unwrap()
}

/// `result` is the dropped-table error for table `t`.
#[track_caller]
fn assert_dropped<T: std::fmt::Debug>(what: &str, result: typed_kv::Result<T>) {
    match result {
        Err(e) => assert!(
            e.to_string() == "table `t` was dropped; build it again to use it",
            "{what}: expected the dropped-table error, got {e}"
        ),
        Ok(v) => panic!("{what} through a dropped table's handle succeeded: {v:?}"),
    }
}

/// Every operation of a typed handle, its snapshots, batches, streams and the untyped view.
fn assert_every_operation_fails(storage: &Storage, old: &Counts, untyped: &typed_kv::UntypedTable) {
    assert_dropped("put", old.put(&1, &7));
    assert_dropped("put_all", old.put_all([(2, 8)]));
    assert_dropped("get", old.get(&1).map(|g| g.map(|g| *g)));
    assert_dropped("contains_key", old.contains_key(&1));
    assert_dropped("delete", old.delete(&1));
    assert_dropped("clear", old.clear());
    assert_dropped("len", old.len());
    assert_dropped("is_empty", old.is_empty());
    assert_dropped("iter", old.iter().map(|_| ()));
    assert_dropped("range", old.range(0..10).map(|_| ()));
    assert_dropped("snapshot", old.snapshot().map(|_| ()));
    assert_dropped("with_stream", old.with_stream(|_| ()));
    assert_dropped("put_stream", block_on(old.put_stream(futures::stream::iter([(3u32, 9u64)]))));
    let mut batch = storage.batch();
    assert_dropped("batch put", batch.put(old, &4, &10).map(|_| ()));
    assert_dropped("batch delete", batch.delete(old, &4).map(|_| ()));
    let txn = storage.read().unwrap();
    assert_dropped("read get", txn.get(old, &1).map(|g| g.map(|g| *g)));
    assert_dropped("read contains_key", txn.contains_key(old, &1));
    assert_dropped("read len", txn.len(old));
    assert_dropped("read iter", txn.iter(old).map(|_| ()));
    assert_dropped("read range", txn.range(old, 0..10).map(|_| ()));
    assert_dropped("untyped len", untyped.len());
    assert_dropped("untyped iter", untyped.iter().map(|_| ()));
}

fn dropped_and_rebuilt_table_handles_are_dead(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = common::open(backend, dir.path());
    let old = counts(&storage);
    old.put(&1, &100).unwrap();
    let untyped = storage.untyped_table("t").unwrap();
    // A batch made before the drop and committed after it.
    let mut early = storage.batch();
    early.put(&old, &5, &50).unwrap();
    // On sled, writers (the drop too) wait for snapshots: none is held across the drop there.
    let snapshot = (backend != DatabaseBackend::Sled).then(|| old.snapshot().unwrap());

    assert!(storage.drop_table("t").unwrap());
    assert_dropped("a batch made before the drop", early.commit());
    if let Some(snapshot) = snapshot {
        assert_dropped("a snapshot made before the drop", snapshot.get(&1).map(|g| g.map(|g| *g)));
    }
    assert_every_operation_fails(&storage, &old, &untyped);

    // Rebuilt by name, with another value type: the old handle stays dead, and nothing it
    // tried reached the new table.
    let new = names(&storage);
    assert_every_operation_fails(&storage, &old, &untyped);
    assert_eq!(new.len().unwrap(), 0, "no write of the old handle reached the new table");
    new.put(&1, &"one".to_string()).unwrap();
    assert_dropped("get after the rebuild", old.get(&1).map(|g| g.map(|g| *g)));
    assert_eq!(new.get(&1).unwrap().unwrap().as_str(), "one");
    assert_eq!(storage.untyped_table("t").unwrap().len().unwrap(), 1, "a new untyped view works");
}

fn cleared_table_handles_stay_valid(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = common::open(backend, dir.path());
    let t = counts(&storage);
    let other = counts(&storage);
    t.put(&1, &100).unwrap();
    other.clear().unwrap();
    assert_eq!(t.len().unwrap(), 0);
    t.put(&2, &200).unwrap();
    assert_eq!(*other.get(&2).unwrap().unwrap(), 200);
}

/// A table recreated by `OnValidationFail` (another layout asked for) is a new table: the
/// handles of the old one are dead like those of a dropped table.
fn recreated_table_handles_are_dead(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = common::open_with(backend, dir.path(), Recreate::OnValidationFail, 0).unwrap();
    let old = counts(&storage);
    old.put(&1, &100).unwrap();
    let new = names(&storage);
    assert_dropped("put after a recreation", old.put(&2, &200));
    assert_eq!(new.len().unwrap(), 0);
    // The same layout again is the same table: its handles share one life.
    let again = names(&storage);
    again.put(&3, &"three".to_string()).unwrap();
    assert_eq!(new.len().unwrap(), 1);
}

/// `drop_table` of a name never built is `false`, and leaves other tables' handles alone.
fn dropping_another_table_leaves_handles_alone(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = common::open(backend, dir.path());
    let t = counts(&storage);
    assert!(!storage.drop_table("other").unwrap());
    t.put(&1, &1).unwrap();
    match storage.drop_table("__typed_kv_catalog") {
        Err(StorageError::InvalidTableName { .. }) => {}
        other => panic!("the catalog cannot be dropped: {other:?}"),
    }
    assert_eq!(t.len().unwrap(), 1);
}

per_backend!(
    dropped_and_rebuilt_table_handles_are_dead,
    cleared_table_handles_stay_valid,
    recreated_table_handles_are_dead,
    dropping_another_table_leaves_handles_alone,
);
