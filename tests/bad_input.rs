//! Bad input everywhere: one test per kind of bad input, on every backend where it applies,
//! each asserting the exact [`StorageError`] variant and that its message says what, where
//! (table, key, file) and why. Every checked error is printed as one row,
//!
//! ```text
//! bad-input | <input> | <backend> | <variant> | <message>
//! ```
//!
//! so `cargo test --test bad_input -- --nocapture --test-threads=1 | grep '^bad-input'`
//! gives the whole table (it is copied into `docs/reliability.md`, section 7).
//!
//! A read-only directory and a full disk need a file system that says so, which root's
//! permission bypass defeats: as root, the tests mount a read-only bind mount and a small
//! tmpfs (and unmount them with a guard); without the right to mount they fall back to file
//! permissions (read-only, non-root) or the native engine's file layer (full disk), and the
//! row says which was used.
//!
//! Some of these inputs are also tried elsewhere (conformance: formats, names, limits,
//! locking, other backends' files; recreate: policies; verify and native_engine: damaged
//! files); this file is the one place where each is tried with its message checked.

// Some imports and helpers serve only the native engine's rows (its file layer, options).
#![cfg_attr(not(feature = "native"), allow(unused_imports, dead_code))]

mod common;

#[cfg(feature = "native")]
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
#[cfg(feature = "native")]
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::{open, open_with, raw_put, records_table, Record};
use typed_kv::{
    BincodeFormat, BytesFormat, DatabaseBackend, OrderedFormat, PostcardFormat, Recreate, RkyvFormat,
    Storage, StorageBuilder, StorageError, MAX_KEY_LEN, MAX_VALUE_LEN,
};

/// The variant's name, for the assertions and the printed table.
fn variant(e: &StorageError) -> &'static str {
    match e {
        StorageError::Io { .. } => "Io",
        StorageError::Engine { .. } => "Engine",
        StorageError::Corrupt { .. } => "Corrupt",
        StorageError::Locked { .. } => "Locked",
        StorageError::BackendNotCompiled { .. } => "BackendNotCompiled",
        StorageError::BackendMismatch { .. } => "BackendMismatch",
        StorageError::NotAStore { .. } => "NotAStore",
        StorageError::Decode { .. } => "Decode",
        StorageError::Encode { .. } => "Encode",
        StorageError::TooLarge { .. } => "TooLarge",
        StorageError::TableTypeMismatch { .. } => "TableTypeMismatch",
        StorageError::VersionDowngrade { .. } => "VersionDowngrade",
        StorageError::InvalidTableName { .. } => "InvalidTableName",
        StorageError::ForeignTable { .. } => "ForeignTable",
        StorageError::TableNotFound { .. } => "TableNotFound",
        StorageError::CorruptCatalog { .. } => "CorruptCatalog",
        StorageError::Busy { .. } => "Busy",
        StorageError::CopyRefused { .. } => "CopyRefused",
        StorageError::StoreNotFound { .. } => "StoreNotFound",
        StorageError::Ingest { .. } => "Ingest",
        StorageError::EngineCorrupt { .. } => "EngineCorrupt",
        StorageError::MissingEngineFile { .. } => "MissingEngineFile",
        StorageError::ReadOnlyFileSystem { .. } => "ReadOnlyFileSystem",
        StorageError::UnstampedTable { .. } => "UnstampedTable",
        StorageError::TableDropped { .. } => "TableDropped",
        _ => "(a variant added later)",
    }
}

/// Asserts that `result` is the error `expected` whose message contains every excerpt, and
/// prints it as a row of the table.
#[track_caller]
fn expect_error<T>(
    input: &str,
    backend: DatabaseBackend,
    result: typed_kv::Result<T>,
    expected: &str,
    excerpts: &[&str],
) -> StorageError {
    let Err(e) = result else { panic!("{input} on {backend}: no error, expected {expected}") };
    let message = e.to_string();
    assert_eq!(variant(&e), expected, "{input} on {backend}: {message}");
    for excerpt in excerpts {
        assert!(message.contains(excerpt), "{input} on {backend}: message lacks {excerpt:?}: {message}");
    }
    println!("bad-input | {input} | {backend} | {} | {message}", variant(&e));
    e
}

fn path_str(path: &Path) -> String {
    path.display().to_string()
}

/// A store with table `records` holding record 1.
fn seeded(backend: DatabaseBackend, path: &Path) {
    let storage = open(backend, path);
    records_table(&storage, "records").put(&1, &Record::new(1)).unwrap();
}

fn wrong_key_format_on_reopen(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    seeded(backend, dir.path());
    let storage = open(backend, dir.path());
    let built = storage
        .new_table::<u64, Record>("records")
        .with_key_format(BincodeFormat::new())
        .with_value_format(RkyvFormat::new())
        .build();
    expect_error(
        "key format changed (ordered -> bincode)",
        backend,
        built,
        "TableTypeMismatch",
        &["`records`", "keys in ordered", "keys in bincode"],
    );
    let built = storage
        .new_table::<u32, Record>("records")
        .with_key_format(OrderedFormat::new())
        .with_value_format(RkyvFormat::new())
        .build();
    expect_error(
        "key type changed (u64 -> u32)",
        backend,
        built,
        "TableTypeMismatch",
        &["`records`", "`u64`", "`u32`"],
    );
    assert_eq!(records_table(&storage, "records").get(&1).unwrap().unwrap().id, 1, "data untouched");
}

fn wrong_value_format_on_reopen(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    seeded(backend, dir.path());
    let storage = open(backend, dir.path());
    let built = storage
        .new_table::<u64, Record>("records")
        .with_key_format(OrderedFormat::new())
        .with_value_format(PostcardFormat::new())
        .build();
    expect_error(
        "value format changed (rkyv -> postcard)",
        backend,
        built,
        "TableTypeMismatch",
        &["`records`", "values in rkyv", "values in postcard"],
    );
    let built = storage
        .new_table::<u64, Vec<u8>>("records")
        .with_key_format(OrderedFormat::new())
        .with_value_format(BytesFormat::new())
        .build();
    expect_error(
        "value type changed (Record -> Vec<u8>)",
        backend,
        built,
        "TableTypeMismatch",
        &["`records`", "Record", "Vec<u8>"],
    );
    assert_eq!(records_table(&storage, "records").get(&1).unwrap().unwrap().id, 1, "data untouched");
}

fn schema_version_bump(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    seeded(backend, dir.path());
    // Without a policy for it, a new schema version is a mismatch, not a silent wipe.
    let storage = open_with(backend, dir.path(), Recreate::IfMissing, 1).unwrap();
    let built = storage
        .new_table::<u64, Record>("records")
        .with_key_format(OrderedFormat::new())
        .with_value_format(RkyvFormat::new())
        .build();
    expect_error(
        "schema version bumped (0 -> 1) under Recreate::IfMissing",
        backend,
        built,
        "TableTypeMismatch",
        &["`records`", "schema version 0", "schema version 1"],
    );
    drop(storage);
    // Code older than the data.
    drop(
        open_with(backend, dir.path(), Recreate::OnVersionBump, 5)
            .map(|s| records_table(&s, "records"))
            .unwrap(),
    );
    let storage = open_with(backend, dir.path(), Recreate::OnVersionBump, 4).unwrap();
    let built = storage
        .new_table::<u64, Record>("records")
        .with_key_format(OrderedFormat::new())
        .with_value_format(RkyvFormat::new())
        .build();
    expect_error(
        "schema version older than the store's (5 -> 4) under Recreate::OnVersionBump",
        backend,
        built,
        "VersionDowngrade",
        &["`records`", "schema version 5", "requested 4"],
    );
}

/// Replaces the catalog stamp of `records` with `stamp`, through the engine's own API.
fn plant_stamp(backend: DatabaseBackend, path: &Path, stamp: &[u8]) {
    raw_put(backend, path, "__typed_kv_catalog", b"records", stamp);
}

fn build_records(storage: &Storage) -> typed_kv::Result<()> {
    storage
        .new_table::<u64, Record>("records")
        .with_key_format(OrderedFormat::new())
        .with_value_format(RkyvFormat::new())
        .build()
        .map(drop)
}

fn catalog_stamp_version_bump(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    seeded(backend, dir.path());
    plant_stamp(backend, dir.path(), &[2, 0, 0, 0]);
    let storage = open(backend, dir.path());
    expect_error(
        "catalog stamp of a newer layout (stamp version 2)",
        backend,
        build_records(&storage),
        "CorruptCatalog",
        &["`records`", "stamp version 2, this build reads 1"],
    );
    expect_error(
        "catalog stamp of a newer layout, read by table_stamp",
        backend,
        storage.table_stamp("records"),
        "CorruptCatalog",
        &["`records`", "stamp version 2"],
    );
}

fn corrupt_catalog_stamp(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    seeded(backend, dir.path());
    plant_stamp(backend, dir.path(), b"\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff");
    {
        let storage = open(backend, dir.path());
        expect_error(
            "catalog stamp: undecodable bytes",
            backend,
            build_records(&storage),
            "CorruptCatalog",
            &["`records`", "undecodable stamp"],
        );
        let report = storage.verify().unwrap();
        assert!(
            report.problems.iter().any(|p| p.to_string().contains("records")),
            "verify reports the damaged stamp: {:?}",
            report.problems
        );
    }
    plant_stamp(backend, dir.path(), b"");
    let storage = open(backend, dir.path());
    expect_error(
        "catalog stamp: empty",
        backend,
        build_records(&storage),
        "CorruptCatalog",
        &["`records`", "empty stamp"],
    );
}

/// A catalog entry whose table name is not UTF-8 (table names are `&str` in the API, so
/// this can only come from bytes on disk).
fn non_utf8_table_name_in_catalog(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    seeded(backend, dir.path());
    raw_put(backend, dir.path(), "__typed_kv_catalog", b"bad\xffname", b"\x01");
    let storage = open(backend, dir.path());
    expect_error(
        "catalog entry with a non-UTF-8 table name: table_names",
        backend,
        storage.table_names(),
        "CorruptCatalog",
        &["bad\u{fffd}name", "not UTF-8", "0x626164ff6e616d65"],
    );
    let target = tempfile::tempdir().unwrap();
    let target = open(backend, target.path());
    expect_error(
        "catalog entry with a non-UTF-8 table name: copy_to",
        backend,
        storage.copy_to(&target).run(),
        "CorruptCatalog",
        &["bad\u{fffd}name", "not UTF-8"],
    );
    // verify reports it as a problem (and goes on); stats lists it without a stamp.
    let report = storage.verify().unwrap();
    let problem = report.problems.iter().map(|p| p.to_string()).find(|p| p.contains("not UTF-8"));
    assert!(problem.as_deref().is_some_and(|p| p.contains("0x626164ff6e616d65")), "{:?}", report.problems);
    let stats = storage.stats().unwrap();
    assert!(stats.tables.iter().any(|t| t.name == "bad\u{fffd}name" && t.stamp.is_none()));
    // The good table still works.
    assert_eq!(records_table(&storage, "records").get(&1).unwrap().unwrap().id, 1);
}

/// Rewrites the store's marker file.
fn write_marker(path: &Path, text: &str) {
    std::fs::write(path.join("typed-kv.meta"), text).unwrap();
}

fn marker_layout_bump(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    seeded(backend, dir.path());
    write_marker(dir.path(), &format!("typed-kv store\nlayout 2\nbackend {}\n", backend.name()));
    expect_error(
        "store marker of a newer layout (layout 2)",
        backend,
        open_with(backend, dir.path(), Recreate::IfMissing, 0),
        "NotAStore",
        &[&path_str(dir.path()), "typed-kv.meta has layout 2, this build reads layout 1"],
    );
}

fn corrupt_marker(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    seeded(backend, dir.path());
    write_marker(dir.path(), "\u{0}\u{1}garbage");
    expect_error(
        "store marker: garbage",
        backend,
        open_with(backend, dir.path(), Recreate::IfMissing, 0),
        "NotAStore",
        &[&path_str(dir.path()), "typed-kv.meta does not start with `typed-kv store`"],
    );
    write_marker(dir.path(), "typed-kv store\nlayout 1\nbackend lmdb\n");
    expect_error(
        "store marker: unknown backend",
        backend,
        open_with(backend, dir.path(), Recreate::IfMissing, 0),
        "NotAStore",
        &[&path_str(dir.path()), "unknown backend `lmdb`"],
    );
    write_marker(dir.path(), &format!("typed-kv store\nlayout two\nbackend {}\n", backend.name()));
    expect_error(
        "store marker: unreadable layout",
        backend,
        open_with(backend, dir.path(), Recreate::IfMissing, 0),
        "NotAStore",
        &[&path_str(dir.path()), "has no readable layout version"],
    );
    write_marker(dir.path(), "typed-kv store\nlayout 1\n");
    expect_error(
        "store marker: no backend",
        backend,
        open_with(backend, dir.path(), Recreate::IfMissing, 0),
        "NotAStore",
        &[&path_str(dir.path()), "names no backend"],
    );
}

fn ordered_key(key: u64) -> Vec<u8> {
    let mut out = Vec::new();
    typed_kv::KeyFormat::<u64>::to_bytes(&OrderedFormat::new(), &key, &mut out).unwrap();
    out
}

fn corrupt_stored_value(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    seeded(backend, dir.path());
    raw_put(backend, dir.path(), "records", &ordered_key(2), b"\xffnot an rkyv Record\x01\x02");
    let storage = open(backend, dir.path());
    let t = records_table(&storage, "records");
    let excerpts = ["value", "`records`", "key 0x0000000000000002", "rkyv"];
    expect_error("stored value of the wrong layout: get", backend, t.get(&2), "Decode", &excerpts);
    let read = storage.read().unwrap();
    expect_error(
        "stored value of the wrong layout: snapshot get",
        backend,
        read.get(&t, &2),
        "Decode",
        &excerpts,
    );
    drop(read);
    let bad: Vec<_> = t.iter().unwrap().filter_map(Result::err).collect();
    assert_eq!(bad.len(), 1);
    expect_error(
        "stored value of the wrong layout: iter",
        backend,
        Err::<(), _>(bad.into_iter().next().unwrap()),
        "Decode",
        &excerpts,
    );
    expect_error(
        "stored value of the wrong layout: with_stream",
        backend,
        t.with_stream(|s| futures::executor::block_on(futures::StreamExt::count(s))),
        "Decode",
        &excerpts,
    );
    let bad: Vec<_> = t.iter().unwrap().values().filter_map(Result::err).collect();
    assert_eq!(bad.len(), 1, "values(): the bad value is an error, the others read");
    expect_error(
        "stored value of the wrong layout: iter().values()",
        backend,
        Err::<(), _>(bad.into_iter().next().unwrap()),
        "Decode",
        &excerpts,
    );
    let keys: Vec<u64> = t.iter().unwrap().keys().collect::<Result<_, _>>().unwrap();
    assert!(keys.contains(&2), "keys() neither validates nor decodes values: {keys:?}");
    assert_eq!(t.get(&1).unwrap().unwrap().id, 1, "good values still read");
}

fn corrupt_stored_key(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    seeded(backend, dir.path());
    raw_put(backend, dir.path(), "records", b"\x01\x02\x03", b"value under a 3-byte key");
    let storage = open(backend, dir.path());
    let t = records_table(&storage, "records");
    let bad: Vec<_> = t.iter().unwrap().filter_map(Result::err).collect();
    assert_eq!(bad.len(), 1);
    expect_error(
        "stored key that is not an ordered u64 (3 bytes)",
        backend,
        Err::<(), _>(bad.into_iter().next().unwrap()),
        "Decode",
        &["key", "`records`", "key 0x010203", "ordered"],
    );
    let bad: Vec<_> = t.iter().unwrap().keys().filter_map(Result::err).collect();
    assert_eq!(bad.len(), 1, "keys(): the bad key is an error, the others decode");
    // values() decodes no key: under the bad key, a good value reads.
    let good = rkyv::to_bytes::<rkyv::rancor::Error>(&Record::new(9)).unwrap();
    drop(t);
    drop(storage);
    raw_put(backend, dir.path(), "records", b"\x01\x02\x03", &good);
    let storage = open(backend, dir.path());
    let t = records_table(&storage, "records");
    let ids: Vec<u64> = t.iter().unwrap().values().map(|g| g.unwrap().id.to_native()).collect();
    assert!(ids.contains(&9), "values() skipped or failed on the undecodable key: {ids:?}");
    expect_error(
        "stored key that is not an ordered u64: iter().keys()",
        backend,
        Err::<(), _>(bad.into_iter().next().unwrap()),
        "Decode",
        &["key", "`records`", "key 0x010203", "ordered"],
    );
}

fn raw(storage: &Storage) -> Raw {
    common::blobs_table(storage, "raw")
}

fn oversized_keys(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let t = raw(&storage);
    let at_limit = vec![7u8; MAX_KEY_LEN];
    t.put(&at_limit, &b"ok".to_vec()).unwrap();
    assert_eq!(&*t.get(&at_limit).unwrap().unwrap(), b"ok", "a key of exactly MAX_KEY_LEN works");
    let over = vec![7u8; MAX_KEY_LEN + 1];
    let excerpts = ["key of 65537 bytes", "`raw`", "limit of 65536 bytes"];
    expect_error("key one byte over MAX_KEY_LEN: put", backend, t.put(&over, &vec![]), "TooLarge", &excerpts);
    expect_error("key one byte over MAX_KEY_LEN: get", backend, t.get(&over), "TooLarge", &excerpts);
    expect_error("key one byte over MAX_KEY_LEN: delete", backend, t.delete(&over), "TooLarge", &excerpts);
    expect_error(
        "key one byte over MAX_KEY_LEN: range bound",
        backend,
        t.range(over.clone()..),
        "TooLarge",
        &excerpts,
    );
    expect_error(
        "key one byte over MAX_KEY_LEN: put_all (nothing written)",
        backend,
        t.put_all([(vec![1u8], vec![1u8]), (over.clone(), vec![])]),
        "TooLarge",
        &excerpts,
    );
    assert!(t.get(&vec![1u8]).unwrap().is_none(), "a refused put_all writes nothing");
    let mut batch = storage.batch();
    expect_error(
        "key one byte over MAX_KEY_LEN: batch",
        backend,
        batch.put(&t, &over, &vec![]).map(drop),
        "TooLarge",
        &excerpts,
    );
}

/// One oversized value at a time: each takes 2 GiB of memory (the value and its encoding).
static HUGE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn oversized_values(backend: DatabaseBackend) {
    let _one_at_a_time = HUGE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let t = raw(&storage);
    let over = vec![1u8; MAX_VALUE_LEN + 1];
    expect_error(
        "value one byte over MAX_VALUE_LEN (1 GiB)",
        backend,
        t.put(&b"k".to_vec(), &over),
        "TooLarge",
        &["value of 1073741825 bytes", "`raw`", "limit of 1073741824 bytes"],
    );
    drop(over);
    assert!(t.get(&b"k".to_vec()).unwrap().is_none());
}

/// A value of exactly MAX_VALUE_LEN: 1 GiB written and read back, so not in the default run.
fn value_at_the_limit(backend: DatabaseBackend) {
    if std::env::var_os("TYPED_KV_HUGE_VALUES").is_none() {
        println!("value at MAX_VALUE_LEN on {backend}: skipped (set TYPED_KV_HUGE_VALUES=1)");
        return;
    }
    let _one_at_a_time = HUGE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let t = raw(&storage);
    let value: Vec<u8> = (0..MAX_VALUE_LEN).map(|i| (i % 251) as u8).collect();
    t.put(&b"k".to_vec(), &value).unwrap();
    assert!(*t.get(&b"k".to_vec()).unwrap().unwrap() == value[..]);
    println!("value at MAX_VALUE_LEN on {backend}: written and read back");
}

fn invalid_table_names(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let build = |name: &str| {
        storage
            .new_table::<u64, u64>(name)
            .with_key_format(OrderedFormat::new())
            .with_value_format(PostcardFormat::new())
            .build()
    };
    let long = "x".repeat(201);
    let rows: [(&str, &str, &str); 6] = [
        ("table name empty", "", "it is empty"),
        ("table name of 201 bytes", &long, "longer than 200 bytes"),
        ("table name reserved (the catalog)", "__typed_kv_catalog", "reserved"),
        ("table name reserved (prefix)", "__typed_kvx", "reserved"),
        ("table name with a newline", "tab\nle", "control characters"),
        ("table name with a NUL", "tab\0le", "control characters"),
    ];
    for (input, name, why) in rows {
        let quoted = format!("{name:?}");
        expect_error(input, backend, build(name), "InvalidTableName", &[&quoted, why]);
    }
    expect_error(
        "drop_table of the catalog",
        backend,
        storage.drop_table("__typed_kv_catalog"),
        "InvalidTableName",
        &["\"__typed_kv_catalog\"", "reserved"],
    );
    build(&"y".repeat(200)).expect("a name of exactly 200 bytes is valid");
    build("ünïcode / with spaces").expect("any other UTF-8 is valid");
    assert_eq!(storage.table_names().unwrap().len(), 2, "refused names made no table");
}

/// A store path that is not UTF-8 works; errors show it (lossily).
fn non_utf8_store_path(backend: DatabaseBackend) {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(std::ffi::OsStr::from_bytes(b"store-\xff"));
    let storage = open(backend, &path);
    records_table(&storage, "records").put(&1, &Record::new(1)).unwrap();
    expect_error(
        "store path not UTF-8, opened twice",
        backend,
        open_with(backend, &path, Recreate::IfMissing, 0),
        "Locked",
        &["store-\u{fffd}", "locked"],
    );
    drop(storage);
    assert_eq!(records_table(&open(backend, &path), "records").get(&1).unwrap().unwrap().id, 1);
    // Everything stayed under that path: no engine wrote to a lossy (U+FFFD) twin of it.
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(entries, [path.file_name().unwrap()]);
}

fn second_open_in_this_process(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let _storage = open(backend, dir.path());
    expect_error(
        "second open of a store in the same process",
        backend,
        open_with(backend, dir.path(), Recreate::IfMissing, 0),
        "Locked",
        &[&path_str(dir.path()), "locked by another user", backend.name()],
    );
    // `Recreate::Always` must not wipe a store someone has open.
    expect_error(
        "second open with Recreate::Always",
        backend,
        open_with(backend, dir.path(), Recreate::Always, 0),
        "Locked",
        &[&path_str(dir.path())],
    );
}

const CHILD_DIR: &str = "TYPED_KV_BAD_INPUT_LOCKED_DIR";
const CHILD_BACKEND: &str = "TYPED_KV_BAD_INPUT_LOCKED_BACKEND";

/// The child of [`second_process`]: opens the store it is given and prints the error. Does
/// nothing in a normal run.
#[test]
fn locked_child() {
    let (Some(dir), Some(backend)) = (std::env::var_os(CHILD_DIR), std::env::var(CHILD_BACKEND).ok()) else {
        return;
    };
    let backend = DatabaseBackend::from_name(&backend).unwrap();
    match open_with(backend, Path::new(&dir), Recreate::Always, 0) {
        // On a line of its own: the harness prints the test's name before it.
        Ok(_) => println!("\nCHILD-OPENED"),
        Err(e) => println!("\nCHILD-ERROR {} | {e}", variant(&e)),
    }
}

fn second_process(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(backend, dir.path());
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "locked_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .env(CHILD_BACKEND, backend.name())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line =
        stdout.lines().find(|l| l.starts_with("CHILD-")).unwrap_or_else(|| panic!("child said: {stdout}"));
    let Some((found, message)) = line.strip_prefix("CHILD-ERROR ").and_then(|l| l.split_once(" | ")) else {
        panic!("a second process opened a store in use: {line}")
    };
    assert_eq!(found, "Locked", "{message}");
    assert!(
        message.contains(&path_str(dir.path())) && message.contains("locked by another user"),
        "{message}"
    );
    println!("bad-input | second process opens a store in use (Recreate::Always) | {backend} | {found} | {message}");
    drop(storage);
    assert!(stdout.contains("1 passed"), "the child test ran: {stdout}");
}

fn path_is_a_file(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a store").unwrap();
    expect_error(
        "store path is a file",
        backend,
        open_with(backend, &file, Recreate::Always, 0),
        "NotAStore",
        &[&path_str(&file), "a file; typed-kv stores are directories"],
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"not a store", "the file is untouched");
    let nested = file.join("db");
    expect_error(
        "store path under a file",
        backend,
        open_with(backend, &nested, Recreate::IfMissing, 0),
        "Io",
        &[&path_str(&nested), "Not a directory"],
    );
}

fn store_of_another_backend(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    seeded(backend, dir.path());
    for other in DatabaseBackend::compiled().filter(|b| *b != backend) {
        let expected = format!("holds a {backend} store, not {other}");
        expect_error(
            &format!("store of another backend, opened as {other}"),
            backend,
            open_with(other, dir.path(), Recreate::IfMissing, 0),
            "BackendMismatch",
            &[&path_str(dir.path()), &expected],
        );
    }
    // An engine database made outside typed-kv, even with Recreate::Always, is left alone.
    let foreign = tempfile::tempdir().unwrap();
    let path = foreign.path().join("x");
    common::raw_put_in(backend, &path, "t", b"k", b"v");
    let expected = match backend {
        DatabaseBackend::Native => "typed-kv native database made outside typed-kv",
        _ => "database made outside typed-kv",
    };
    expect_error(
        "engine database without typed-kv's marker (Recreate::Always)",
        backend,
        open_with(backend, &path, Recreate::Always, 0),
        "NotAStore",
        &[&path_str(&path), backend.name(), expected],
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    expect_error(
        "non-empty directory of other files",
        backend,
        open_with(backend, dir.path(), Recreate::Always, 0),
        "NotAStore",
        &[&path_str(dir.path()), "no typed-kv.meta", "notes.txt"],
    );
    assert!(dir.path().join("notes.txt").exists());
}

// --- Read-only directory and full disk -------------------------------------------------

/// A mount made by a test, unmounted (lazily, should a file still be open) when dropped.
struct Mounted(PathBuf);

impl Mounted {
    /// Runs `mount args... target`; `None` if mounting is not allowed here.
    fn new(args: &[&str], target: &Path) -> Option<Mounted> {
        std::fs::create_dir_all(target).unwrap();
        let status = Command::new("mount").args(args).arg(target).status().ok()?;
        status.success().then(|| Mounted(target.to_owned()))
    }

    fn remount(&self, options: &str) -> bool {
        Command::new("mount")
            .args(["-o", options])
            .arg(&self.0)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn read_only_directory(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("rw");
    seeded(backend, &store);
    let view = dir.path().join("ro");
    // Root ignores permission bits: only a read-only mount makes root's writes fail.
    let mounted = if common::is_root() {
        Mounted::new(&["--bind", store.to_str().unwrap()], &view).filter(|m| m.remount("remount,bind,ro"))
    } else {
        None
    };
    let how = if mounted.is_some() {
        "a read-only bind mount"
    } else if !common::is_root() {
        copy_tree(&store, &view);
        set_read_only(&view, true);
        "directory permissions (not root)"
    } else {
        println!("read-only directory on {backend}: skipped (root, and mounting is not allowed)");
        return;
    };
    let e = expect_error(
        &format!("store in a read-only directory ({how})"),
        backend,
        open_with(backend, &view, Recreate::IfMissing, 0),
        // A read-only file system is named as such; permissions are a plain I/O error.
        if mounted.is_some() { "ReadOnlyFileSystem" } else { "Io" },
        &[&path_str(&view)],
    );
    let source = std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_default();
    assert!(source.contains("Read-only file system") || source.contains("Permission denied"), "{e}");
    if mounted.is_some() {
        assert!(e.to_string().contains("opening it needs write access"), "{e}");
        // The lock is taken on a descriptor opened for reading: what fails is a write after it.
        assert!(!source.contains("typed-kv.lock"), "the lock file opens read-only: {source}");
    }
    if mounted.is_none() {
        set_read_only(&view, false);
    }
    drop(mounted);
    assert_eq!(records_table(&open(backend, &store), "records").get(&1).unwrap().unwrap().id, 1);
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn set_read_only(dir: &Path, read_only: bool) {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            set_read_only(&entry.path(), read_only);
        }
    }
    let mode = if read_only { 0o555 } else { 0o755 };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Value of key `i` in the full-disk tests: 8 KiB, distinct per key.
fn filler(i: u64) -> Vec<u8> {
    (0..8192u64).map(|j| (i.wrapping_mul(31).wrapping_add(j) % 251) as u8).collect()
}

type Raw = typed_kv::Table<Vec<u8>, Vec<u8>, BytesFormat, BytesFormat>;

/// Writes until the disk is full; returns how many writes were acknowledged and the error.
fn fill_until_full(t: &Raw) -> (u64, StorageError) {
    for i in 0..100_000u64 {
        if let Err(e) = t.put(&i.to_be_bytes().to_vec(), &filler(i)) {
            return (i, e);
        }
    }
    panic!("800 MB written and the disk is not full");
}

fn assert_acknowledged(t: &Raw, acknowledged: u64) {
    read_acknowledged(t, acknowledged).unwrap();
}

/// Reads back every acknowledged write: an error if the store cannot read, a panic if it
/// reads a wrong value or misses one.
fn read_acknowledged(t: &Raw, acknowledged: u64) -> typed_kv::Result<()> {
    for i in 0..acknowledged {
        let got = t.get(&i.to_be_bytes().to_vec())?;
        assert!(got.as_deref() == Some(&filler(i)[..]), "acknowledged write {i} of {acknowledged} lost");
    }
    Ok(())
}

fn full_disk(backend: DatabaseBackend) {
    if !common::is_root() {
        println!(
            "full disk on {backend}: a small tmpfs needs root; see full_disk_through_the_engine_file_layer"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("tmpfs");
    let Some(mounted) = Mounted::new(&["-t", "tmpfs", "-o", "size=2m", "tmpfs"], &mnt) else {
        println!("full disk on {backend}: skipped (mounting a tmpfs is not allowed here)");
        return;
    };
    let store = mnt.join("db");
    let acknowledged = {
        // An engine that needs more than the disk to start (none here so far) must say so.
        let opened = open_with(backend, &store, Recreate::IfMissing, 0).and_then(|storage| {
            let t = storage.new_table::<Vec<u8>, Vec<u8>>("raw").with_key_format(BytesFormat::new());
            t.with_value_format(BytesFormat::new()).build()
        });
        let t = match opened {
            Ok(t) => t,
            Err(e) => {
                let input = "full disk (2 MiB tmpfs) when creating the store";
                expect_error(input, backend, Err::<(), _>(e), "Engine", &["No space left on device"]);
                return;
            }
        };
        let (acknowledged, e) = fill_until_full(&t);
        let message = e.to_string();
        assert!(
            message.contains("No space left on device") || message.contains("os error 28"),
            "a full disk must say so: {message}"
        );
        println!(
            "bad-input | full disk (2 MiB tmpfs), after {acknowledged} acknowledged 8 KiB writes | {backend} | {} | {message}",
            variant(&e)
        );
        // The native engine still reads everything acknowledged; other engines may fail
        // reads on a full disk too (sled does): an error, never a panic.
        match read_acknowledged(&t, acknowledged) {
            Ok(()) => println!(
                "full disk on {backend}: all {acknowledged} acknowledged writes read back before reopening"
            ),
            Err(e) if backend != DatabaseBackend::Native => {
                println!("full disk on {backend}: reading before reopening: {} | {e}", variant(&e))
            }
            Err(e) => panic!("full disk on {backend}: reads failed: {e}"),
        }
        let next = t.put(&b"after".to_vec(), &b"x".to_vec());
        if backend == DatabaseBackend::Native {
            expect_error(
                "write after a full disk, before reopening",
                backend,
                next,
                "Engine",
                &["refuses writes after an earlier failure", "No space left on device", "reopen"],
            );
        } else {
            match next {
                Ok(()) => println!("full disk on {backend}: a tiny write after the error succeeded"),
                Err(e) => {
                    println!("full disk on {backend}: a tiny write after the error: {} | {e}", variant(&e))
                }
            }
        }
        acknowledged
    };
    // Reopening on the still-full disk must not panic; then with room again, everything
    // acknowledged is there.
    let reopened = open_with(backend, &store, Recreate::IfMissing, 0).and_then(|storage| {
        let t = storage.new_table::<Vec<u8>, Vec<u8>>("raw").with_key_format(BytesFormat::new());
        t.with_value_format(BytesFormat::new()).build()
    });
    match reopened.and_then(|t| read_acknowledged(&t, acknowledged)) {
        Ok(()) => println!("full disk on {backend}: reopened while still full, {acknowledged} writes intact"),
        Err(e) => println!("full disk on {backend}: reopening while still full: {} | {e}", variant(&e)),
    }
    assert!(mounted.remount("remount,size=64m"), "growing the tmpfs");
    let storage = open(backend, &store);
    let t = raw(&storage);
    assert_acknowledged(&t, acknowledged);
    t.put(&b"after".to_vec(), &b"x".to_vec()).expect("writes work again after a reopen with room");
    drop(t);
    println!(
        "full disk on {backend}: reopened with room, all {acknowledged} acknowledged writes intact, writable"
    );
    drop(storage);
    drop(mounted);
}

/// The engine's file layer with a disk that fills after `room` bytes: every later write
/// fails with ENOSPC (and writes what fits first, as a real disk would).
#[cfg(feature = "native")]
mod small_disk {
    use super::*;
    use typed_kv::engine::io::{Mapping, OpenMode, OsVfs, Vfs, VfsFile};

    #[derive(Debug)]
    pub struct SmallDisk {
        pub room: Arc<AtomicU64>,
        /// Writes longer than this fail with ENOSPC and write nothing (a disk whose free
        /// extents are too small for them).
        pub max_write: u64,
    }

    #[derive(Debug)]
    struct SmallFile {
        inner: Arc<dyn VfsFile>,
        room: Arc<AtomicU64>,
        max_write: u64,
    }

    impl Vfs for SmallDisk {
        fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VfsFile>> {
            Ok(Arc::new(SmallFile {
                inner: OsVfs.open(path, mode)?,
                room: Arc::clone(&self.room),
                max_write: self.max_write,
            }))
        }
        fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
            OsVfs.list(dir)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            OsVfs.rename(from, to)
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            OsVfs.remove_file(path)
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            OsVfs.sync_dir(dir)
        }
        fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
            OsVfs.create_dir_all(dir)
        }
    }

    impl VfsFile for SmallFile {
        fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            let len = buf.len() as u64;
            if len > self.max_write {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            let granted =
                self.room.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| Some(r.saturating_sub(len)));
            let room = granted.unwrap_or(0);
            if room >= len {
                return self.inner.write_all_at(buf, offset);
            }
            self.inner.write_all_at(&buf[..room as usize], offset)?;
            Err(io::Error::from_raw_os_error(28)) // ENOSPC
        }
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            self.inner.read_exact_at(buf, offset)
        }
        fn sync_data(&self) -> io::Result<()> {
            self.inner.sync_data()
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.inner.set_len(len)
        }
        fn size(&self) -> io::Result<u64> {
            self.inner.size()
        }
        fn map(&self, len: usize) -> io::Result<Mapping> {
            self.inner.map(len)
        }
    }
}

/// The full disk of [`full_disk`] without root: the native engine's file layer runs out of
/// room after 4 MiB written (room for the engine's 1 MiB of preallocated zeros and a few
/// hundred 8 KiB writes). Runs everywhere.
#[cfg(feature = "native")]
#[test]
fn full_disk_through_the_engine_file_layer() {
    let backend = DatabaseBackend::Native;
    let dir = tempfile::tempdir().unwrap();
    let room = Arc::new(AtomicU64::new(4 << 20));
    let options = |room: &Arc<AtomicU64>| typed_kv::engine::Options {
        vfs: Arc::new(small_disk::SmallDisk { room: Arc::clone(room), max_write: u64::MAX }),
        ..Default::default()
    };
    let build =
        |room: &Arc<AtomicU64>| StorageBuilder::new(dir.path()).with_native_options(options(room)).build();
    let acknowledged = {
        let storage = build(&room).unwrap();
        let t = raw(&storage);
        let (acknowledged, e) = fill_until_full(&t);
        let e = expect_error(
            &format!("full disk (engine file layer, 4 MiB), after {acknowledged} acknowledged 8 KiB writes"),
            backend,
            Err::<(), _>(e),
            "Io",
            &["appending to", "seg-", "No space left on device"],
        );
        drop(e);
        assert_acknowledged(&t, acknowledged);
        room.store(u64::MAX, Ordering::SeqCst); // room again: the engine must still refuse
        expect_error(
            "write after a full disk, before reopening (engine file layer)",
            backend,
            t.put(&b"after".to_vec(), &b"x".to_vec()),
            "Engine",
            &["refuses writes after an earlier failure", "No space left on device", "reopen"],
        );
        acknowledged
    };
    let storage = build(&room).unwrap();
    let t = raw(&storage);
    assert_acknowledged(&t, acknowledged);
    t.put(&b"after".to_vec(), &b"x".to_vec()).unwrap();
    println!(
        "full disk (engine file layer): reopened, all {acknowledged} acknowledged writes intact, writable"
    );
}

/// A disk with room for small writes but not for the native engine's 1 MiB of zeros ahead
/// of the log: appends go on without the zeros, and nothing is poisoned.
#[cfg(feature = "native")]
#[test]
fn no_room_for_preallocated_zeros_is_not_a_full_disk() {
    let dir = tempfile::tempdir().unwrap();
    let vfs = small_disk::SmallDisk { room: Arc::new(AtomicU64::new(u64::MAX)), max_write: 256 << 10 };
    let options = typed_kv::engine::Options { vfs: Arc::new(vfs), ..Default::default() };
    let storage = StorageBuilder::new(dir.path()).with_native_options(options).build().unwrap();
    let t = raw(&storage);
    for i in 0..100u64 {
        t.put(&i.to_be_bytes().to_vec(), &filler(i)).expect("a small write fits");
    }
    assert_acknowledged(&t, 100);
    println!("no room for preallocated zeros: 100 small durable writes went on without them");
}

/// The native engine's own API refuses oversized keys and values and bad table names too.
#[cfg(feature = "native")]
#[test]
fn native_engine_raw_limits() {
    use typed_kv::engine::{Db, Error, Op, Options, ValueAlign, MAX_TABLE_NAME_LEN};
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options::default()).unwrap();
    let t = db.table("t").unwrap();
    let key = vec![0u8; typed_kv::engine::MAX_KEY_LEN + 1];
    let e = db.write(&[Op::Put { table: &t, key: &key, value: b"", align: ValueAlign::Packed }]).unwrap_err();
    assert!(matches!(e, Error::TooLarge { what: "key", .. }), "{e}");
    assert!(e.to_string().contains("key of 65537 bytes is over the limit of 65536 bytes"), "{e}");
    println!(
        "bad-input | engine API: key one byte over its limit | native (raw) | engine::Error::TooLarge | {e}"
    );
    for (input, name, why) in [
        ("engine API: empty table name", String::new(), "empty"),
        (
            "engine API: table name over 1024 bytes",
            "n".repeat(MAX_TABLE_NAME_LEN + 1),
            "longer than 1024 bytes",
        ),
    ] {
        let e = db.table(&name).unwrap_err();
        assert!(matches!(e, Error::InvalidTableName { .. }) && e.to_string().contains(why), "{e}");
        println!(
            "bad-input | {input} | native (raw) | engine::Error::InvalidTableName | {}",
            shorten(&e.to_string())
        );
    }
}

fn shorten(s: &str) -> String {
    if s.len() > 120 {
        format!(
            "{}…",
            &s[..s.char_indices().take_while(|(i, _)| *i < 120).last().map_or(0, |(i, c)| i + c.len_utf8())]
        )
    } else {
        s.to_owned()
    }
}

per_backend!(
    wrong_key_format_on_reopen,
    wrong_value_format_on_reopen,
    schema_version_bump,
    catalog_stamp_version_bump,
    corrupt_catalog_stamp,
    non_utf8_table_name_in_catalog,
    marker_layout_bump,
    corrupt_marker,
    corrupt_stored_value,
    corrupt_stored_key,
    oversized_keys,
    oversized_values,
    value_at_the_limit,
    invalid_table_names,
    non_utf8_store_path,
    second_open_in_this_process,
    second_process,
    path_is_a_file,
    store_of_another_backend,
    read_only_directory,
    full_disk,
);
