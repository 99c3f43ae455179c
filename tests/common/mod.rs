//! Shared helpers for the integration tests: records, store paths, and raw writes through
//! each engine's own API (to plant bytes typed-kv did not write).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use typed_kv::{DatabaseBackend, Recreate, Storage, StorageBuilder};

/// A realistic small record: strings, a vector, numbers.
#[derive(
    Debug,
    Clone,
    PartialEq,
    serde::Serialize,
    serde::Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug))]
pub struct Record {
    pub id: u64,
    pub name: String,
    pub tags: Vec<String>,
    pub score: f64,
}

impl Record {
    pub fn new(id: u64) -> Self {
        Record {
            id,
            name: format!("record-{id}"),
            tags: (0..(id % 4)).map(|t| format!("tag{t}")).collect(),
            score: id as f64 * 1.5,
        }
    }
}

/// A table of [`Record`]s under ordered `u64` keys, with rkyv values.
pub fn records_table(
    storage: &Storage,
    name: &str,
) -> typed_kv::Table<u64, Record, typed_kv::OrderedFormat, typed_kv::RkyvFormat> {
    try_records_table(storage, name).unwrap()
}

/// [`records_table`], returning the error of a build that fails.
pub fn try_records_table(
    storage: &Storage,
    name: &str,
) -> typed_kv::Result<typed_kv::Table<u64, Record, typed_kv::OrderedFormat, typed_kv::RkyvFormat>> {
    storage
        .new_table::<u64, Record>(name)
        .with_key_format(typed_kv::OrderedFormat::new())
        .with_value_format(typed_kv::RkyvFormat::new())
        .build()
}

/// A table of raw byte keys and values.
pub fn blobs_table(
    storage: &Storage,
    name: &str,
) -> typed_kv::Table<Vec<u8>, Vec<u8>, typed_kv::BytesFormat, typed_kv::BytesFormat> {
    try_blobs_table(storage, name).unwrap()
}

/// [`blobs_table`], returning the error of a build that fails.
pub fn try_blobs_table(
    storage: &Storage,
    name: &str,
) -> typed_kv::Result<typed_kv::Table<Vec<u8>, Vec<u8>, typed_kv::BytesFormat, typed_kv::BytesFormat>> {
    storage
        .new_table::<Vec<u8>, Vec<u8>>(name)
        .with_key_format(typed_kv::BytesFormat::new())
        .with_value_format(typed_kv::BytesFormat::new())
        .build()
}

pub fn open(backend: DatabaseBackend, path: &Path) -> Storage {
    StorageBuilder::new(path).with_backend(backend).build().expect("open storage")
}

pub fn open_with(
    backend: DatabaseBackend,
    path: &Path,
    recreate: Recreate,
    version: u64,
) -> typed_kv::Result<Storage> {
    StorageBuilder::new(path).with_backend(backend).with_recreate(recreate).with_version(version).build()
}

/// Where a backend keeps its own files inside a store directory.
pub fn engine_dir(backend: DatabaseBackend, store: &Path) -> PathBuf {
    store.join(backend.name())
}

/// Whether the tests run as root, whom file permissions do not stop.
pub fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

/// Every file under `dir`, in its subdirectories too, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            files.extend(files_under(&p));
        } else {
            files.push(p);
        }
    }
    files.sort();
    files
}

/// Writes `value` under `key` in `table` through the engine's own API, bypassing typed-kv.
/// The store must be closed.
pub fn raw_put(backend: DatabaseBackend, store: &Path, table: &str, key: &[u8], value: &[u8]) {
    raw_put_in(backend, &engine_dir(backend, store), table, key, value)
}

/// Like [`raw_put`], on an engine database at `dir` itself (for redb: the file `dir/data.redb`,
/// or `dir` when it is not a directory), created if missing.
pub fn raw_put_in(backend: DatabaseBackend, dir: &Path, table: &str, key: &[u8], value: &[u8]) {
    match backend {
        #[cfg(feature = "native")]
        DatabaseBackend::Native => {
            let db = typed_kv::engine::Db::open(dir, typed_kv::engine::Options::default()).unwrap();
            let t = db.table(table).unwrap();
            let align = typed_kv::engine::ValueAlign::Packed;
            db.write(&[typed_kv::engine::Op::Put { table: &t, key, value, align }]).unwrap();
        }
        #[cfg(feature = "redb")]
        DatabaseBackend::Redb => {
            let file = if dir.is_dir() { dir.join("data.redb") } else { dir.to_owned() };
            let db = redb::Database::create(file).unwrap();
            let def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new(table);
            let txn = db.begin_write().unwrap();
            txn.open_table(def).unwrap().insert(key, value).unwrap();
            txn.commit().unwrap();
        }
        #[cfg(feature = "sled")]
        DatabaseBackend::Sled => {
            // sled frees its lock when its last background task ends, a moment after the
            // store was closed; sled offers nothing to wait on, so retry until it is free.
            let started = std::time::Instant::now();
            let db = loop {
                match sled::open(dir) {
                    Ok(db) => break db,
                    Err(e) if started.elapsed() < std::time::Duration::from_secs(5) => {
                        let _ = e;
                        std::thread::yield_now();
                    }
                    Err(e) => panic!("sled stayed locked: {e}"),
                }
            };
            db.open_tree(table).unwrap().insert(key, value).unwrap();
            db.flush().unwrap();
        }
        #[cfg(feature = "rocksdb")]
        DatabaseBackend::RocksDb => {
            let mut opts = rocksdb::Options::default();
            opts.create_if_missing(true);
            // A fresh directory has no database to list yet: only `default` then.
            let cfs = rocksdb::DB::list_cf(&opts, dir).unwrap_or_else(|_| vec!["default".to_owned()]);
            let mut db = rocksdb::DB::open_cf(&opts, dir, &cfs).unwrap();
            if db.cf_handle(table).is_none() {
                db.create_cf(table, &rocksdb::Options::default()).unwrap();
            }
            let cf = db.cf_handle(table).unwrap();
            db.put_cf(&cf, key, value).unwrap();
            db.flush_cf(&cf).unwrap();
        }
        other => panic!("no raw access for {other}"),
    }
}

/// Generates `mod native`, `mod redb`, `mod sled`, `mod rocksdb` (each when compiled in), each with one
/// `#[test]` per listed function, called with that backend.
#[macro_export]
macro_rules! per_backend {
    ($($test:ident),* $(,)?) => {
        #[cfg(feature = "native")]
        mod native {
            $( #[test] fn $test() { super::$test(typed_kv::DatabaseBackend::Native) } )*
        }
        #[cfg(feature = "redb")]
        mod redb {
            $( #[test] fn $test() { super::$test(typed_kv::DatabaseBackend::Redb) } )*
        }
        #[cfg(feature = "sled")]
        mod sled {
            $( #[test] fn $test() { super::$test(typed_kv::DatabaseBackend::Sled) } )*
        }
        #[cfg(feature = "rocksdb")]
        mod rocksdb {
            $( #[test] fn $test() { super::$test(typed_kv::DatabaseBackend::RocksDb) } )*
        }
    };
}

/// A child process that is killed (SIGKILL) and reaped when dropped, so a failing crash test
/// leaves no writer behind.
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every table of a store as plain bytes: table name → key → value (the native engine tests'
/// model of a store).
pub type Tables = std::collections::BTreeMap<String, std::collections::BTreeMap<Vec<u8>, Vec<u8>>>;

/// A readable account of how two stores differ (the first few differences).
pub fn diff_tables(found: &Tables, expected: &Tables) -> String {
    let mut out = Vec::new();
    let names: std::collections::BTreeSet<&String> = found.keys().chain(expected.keys()).collect();
    for name in names {
        let (f, e) = match (found.get(name), expected.get(name)) {
            (Some(f), Some(e)) => (f, e),
            (f, _) => {
                out.push(format!("table {name} {}", if f.is_some() { "unexpected" } else { "missing" }));
                continue;
            }
        };
        for (k, v) in e {
            match f.get(k) {
                None => out.push(format!("{name}: missing {}", String::from_utf8_lossy(k))),
                Some(fv) if fv != v => {
                    out.push(format!("{name}: wrong value under {}", String::from_utf8_lossy(k)))
                }
                Some(_) => {}
            }
        }
        for k in f.keys().filter(|k| !e.contains_key(*k)) {
            out.push(format!("{name}: unexpected {}", String::from_utf8_lossy(k)));
        }
    }
    let more = out.len().saturating_sub(6);
    out.truncate(6);
    format!("{}{}", out.join("; "), if more > 0 { format!("; and {more} more") } else { String::new() })
}
