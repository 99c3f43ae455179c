//! RocksDB through rust-rocksdb 0.25: one column family per typed-kv table.
//!
//! Point reads pin the value in the block cache or memtable (`DBPinnableSlice`), so they copy
//! nothing. Iterators lend each entry only until they move on, so range reads copy every key
//! and value once. A `WriteBatch` is atomic across column families; snapshots and iterators
//! are RocksDB's own, so they are consistent without holding any lock.
//!
//! RocksDB cannot tell whether a delete removed anything, so `remove` reads then deletes; to
//! keep that atomic, every write of this engine goes through one mutex.
//!
//! Handles name their column family; a table dropped under a live handle reads as empty, and
//! the next write through the handle creates it again, as on the other engines.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rocksdb::{
    BottommostLevelCompaction, BoundColumnFamily, ColumnFamilyDescriptor, CompactOptions, DBCompressionType,
    DBRawIteratorWithThreadMode, DBWithThreadMode, ErrorKind, MultiThreaded, Options, ReadOptions,
    SnapshotWithThreadMode, WriteBatch, WriteOptions, DEFAULT_COLUMN_FAMILY_NAME,
};

use super::{
    dir_size, CompactionReport, Engine, EngineOptions, EngineSnapshot, RawBatch, RawBytes, RawIter,
    TableHandle,
};
use crate::config::{DatabaseBackend, Durability};
use crate::error::{Result, StorageError};

const BACKEND: DatabaseBackend = DatabaseBackend::RocksDb;
/// Prefix escaping table names that would collide with RocksDB's `default` column family (or
/// look escaped), so that every table name maps to its own column family.
const ESCAPE: char = '~';

/// The multi-threaded flavour: column families can be created and dropped through `&self`.
type Db = DBWithThreadMode<MultiThreaded>;
/// A column family handle, valid as long as it is held even if the family is dropped.
type Cf<'a> = Arc<BoundColumnFamily<'a>>;

fn err(action: impl Into<String>, e: rocksdb::Error) -> StorageError {
    match e.kind() {
        // RocksDB checked a checksum or a file's contents and found them damaged.
        rocksdb::ErrorKind::Corruption => {
            StorageError::EngineCorrupt { backend: BACKEND, action: action.into(), source: Box::new(e) }
        }
        _ => StorageError::engine(BACKEND, action, e),
    }
}

/// The column family name a handle carries.
fn handle_name(table: &TableHandle) -> Result<&str> {
    #[allow(unreachable_patterns)]
    match table {
        TableHandle::Rocks(name) => Ok(name),
        _ => Err(TableHandle::foreign(BACKEND)),
    }
}

/// The column family of table `name`.
fn cf_name(name: &str) -> Cow<'_, str> {
    if name == DEFAULT_COLUMN_FAMILY_NAME || name.starts_with(ESCAPE) {
        Cow::Owned(format!("{ESCAPE}{name}"))
    } else {
        Cow::Borrowed(name)
    }
}

/// The table of column family `cf`; `None` for RocksDB's `default`.
fn table_name(cf: &str) -> Option<&str> {
    if cf == DEFAULT_COLUMN_FAMILY_NAME {
        return None;
    }
    Some(cf.strip_prefix(ESCAPE).unwrap_or(cf))
}

/// The table of column family `cf`, for error messages.
fn display_name(cf: &str) -> &str {
    table_name(cf).unwrap_or(cf)
}

/// Options of every column family. Defaults, but with the one compression compiled in.
fn cf_options() -> Options {
    let mut options = Options::default();
    options.set_compression_type(DBCompressionType::Lz4);
    options
}

/// Whether opening failed because another process (or another handle in this one) holds
/// RocksDB's `LOCK` file. RocksDB words it "While lock file: …/LOCK: Resource temporarily
/// unavailable" for another process and "lock hold by current process … No locks available"
/// for this one.
fn is_lock_error(e: &rocksdb::Error) -> bool {
    let message: &str = e.as_ref();
    e.kind() == ErrorKind::IOError
        && (message.contains("While lock file")
            || message.contains("lock hold by current process")
            || message.contains("No locks available")
            || (message.contains("LOCK") && message.contains("Resource temporarily unavailable")))
}

/// The smallest key after `key`: keys are byte strings, so `key` followed by a zero byte.
fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

/// Read options bounding an iterator to the range, or `None` when the range is empty.
/// RocksDB's bounds are an inclusive lower and an exclusive upper one: the other kinds
/// become the successor key.
fn bounded(lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> Option<ReadOptions> {
    let lower = match lower {
        Bound::Included(key) => Some(key.to_vec()),
        Bound::Excluded(key) => Some(successor(key)),
        Bound::Unbounded => None,
    };
    let upper = match upper {
        Bound::Included(key) => Some(successor(key)),
        Bound::Excluded(key) => Some(key.to_vec()),
        Bound::Unbounded => None,
    };
    if let (Some(lower), Some(upper)) = (&lower, &upper) {
        if lower >= upper {
            return None;
        }
    }
    let mut options = ReadOptions::default();
    if let Some(lower) = lower {
        options.set_iterate_lower_bound(lower);
    }
    if let Some(upper) = upper {
        options.set_iterate_upper_bound(upper);
    }
    Some(options)
}

/// A RocksDB database in one directory.
pub(crate) struct RocksEngine {
    db: Db,
    dir: PathBuf,
    /// Options for column families created later, as for those opened.
    cf_options: Options,
    /// Synced or not, per the storage's durability.
    write_options: WriteOptions,
    /// Taken by every write, so that `remove`'s read-then-delete is atomic with respect to
    /// the other writes of this engine.
    write_lock: Mutex<()>,
    /// Names of all column families (`default` included): rust-rocksdb does not list the
    /// open ones. Taken exclusively to create or drop one, shared to take a snapshot, so a
    /// snapshot's set of tables matches its data.
    cfs: RwLock<BTreeSet<String>>,
}

impl RocksEngine {
    /// Opens (or creates) the database in `dir` with all its column families.
    pub(crate) fn open(dir: &Path, options: &EngineOptions) -> Result<Self> {
        let open_err = |e: rocksdb::Error| {
            if is_lock_error(&e) {
                StorageError::Locked { path: dir.to_owned(), backend: BACKEND }
            } else {
                err(format!("opening {}", dir.display()), e)
            }
        };
        if options.must_exist && !dir.join("CURRENT").exists() {
            return Err(StorageError::MissingEngineFile { path: dir.join("CURRENT"), backend: BACKEND });
        }
        let mut db_options = cf_options();
        // A store whose engine was created is never made anew in place of missing files.
        db_options.create_if_missing(!options.must_exist);
        db_options.create_missing_column_families(true);
        // RocksDB must be told every column family to open; listing fails on a directory
        // without a database yet (no `CURRENT` file), which has only `default`.
        let names = match Db::list_cf(&db_options, dir) {
            Ok(names) => names,
            Err(_) if !dir.join("CURRENT").exists() => vec![DEFAULT_COLUMN_FAMILY_NAME.to_owned()],
            Err(e) => return Err(open_err(e)),
        };
        let cf_options = cf_options();
        let descriptors =
            names.iter().map(|name| ColumnFamilyDescriptor::new(name.as_str(), cf_options.clone()));
        let db = Db::open_cf_descriptors(&db_options, dir, descriptors).map_err(open_err)?;
        let mut write_options = WriteOptions::default();
        write_options.set_sync(matches!(options.durability, Durability::Immediate));
        let mut cfs: BTreeSet<String> = names.into_iter().collect();
        cfs.insert(DEFAULT_COLUMN_FAMILY_NAME.to_owned());
        Ok(Self {
            db,
            dir: dir.to_owned(),
            cf_options,
            write_options,
            write_lock: Mutex::new(()),
            cfs: RwLock::new(cfs),
        })
    }

    /// The column family `name`, created if missing (a table dropped under a live handle
    /// comes back empty). Only under the write lock, so no other writer creates it meanwhile.
    fn cf_for_write(&self, name: &str) -> Result<Cf<'_>> {
        if let Some(cf) = self.db.cf_handle(name) {
            return Ok(cf);
        }
        let mut cfs = self.cfs.write();
        self.db
            .create_cf(name, &self.cf_options)
            .map_err(|e| err(format!("creating table `{}`", display_name(name)), e))?;
        cfs.insert(name.to_owned());
        self.db.cf_handle(name).ok_or_else(|| {
            StorageError::engine(
                BACKEND,
                format!("opening table `{}`", display_name(name)),
                "the column family is missing right after its creation",
            )
        })
    }

    /// Writes `batch` with the storage's durability.
    fn commit(&self, batch: WriteBatch, action: impl FnOnce() -> String) -> Result<()> {
        self.db.write_opt(batch, &self.write_options).map_err(|e| err(action(), e))
    }
}

impl Engine for RocksEngine {
    fn backend(&self) -> DatabaseBackend {
        BACKEND
    }

    fn open_table(&self, name: &str, _value_align: usize) -> Result<TableHandle> {
        let cf = cf_name(name);
        let _guard = self.write_lock.lock();
        self.cf_for_write(&cf)?;
        Ok(TableHandle::Rocks(Arc::from(cf.as_ref())))
    }

    fn drop_table(&self, name: &str) -> Result<bool> {
        let cf = cf_name(name);
        let _guard = self.write_lock.lock();
        let mut cfs = self.cfs.write();
        if self.db.cf_handle(&cf).is_none() {
            return Ok(false);
        }
        self.db.drop_cf(&cf).map_err(|e| err(format!("deleting table `{name}`"), e))?;
        cfs.remove(cf.as_ref());
        Ok(true)
    }

    /// Pinned, not copied.
    fn get<'a>(&'a self, table: &TableHandle, key: &[u8]) -> Result<Option<RawBytes<'a>>> {
        let name = handle_name(table)?;
        let Some(cf) = self.db.cf_handle(name) else { return Ok(None) };
        let value = self
            .db
            .get_pinned_cf(&cf, key)
            .map_err(|e| err(format!("reading table `{}`", display_name(name)), e))?;
        Ok(value.map(RawBytes::RocksPinned))
    }

    /// Consistent: a RocksDB iterator reads from an implicit snapshot taken when it is made.
    /// Copies every entry (see [`RocksIter`]).
    fn range<'a>(
        &'a self,
        table: &TableHandle,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> Result<RawIter<'a>> {
        let name = handle_name(table)?;
        let Some(cf) = self.db.cf_handle(name) else { return Ok(Box::new(std::iter::empty())) };
        let Some(options) = bounded(lower, upper) else { return Ok(Box::new(std::iter::empty())) };
        let iter = self.db.raw_iterator_cf_opt(&cf, options);
        Ok(Box::new(RocksIter::new(iter, cf, name)))
    }

    /// O(n): RocksDB keeps only an estimate of the number of keys.
    fn len(&self, table: &TableHandle) -> Result<u64> {
        let name = handle_name(table)?;
        let Some(cf) = self.db.cf_handle(name) else { return Ok(0) };
        count(self.db.raw_iterator_cf(&cf), name)
    }

    fn snapshot<'a>(&'a self) -> Result<Box<dyn EngineSnapshot + 'a>> {
        // Handles are taken with the snapshot, under the lock that creating and dropping
        // tables take, so a table dropped later stays readable through this snapshot (RocksDB
        // keeps a dropped column family while a handle to it lives).
        let cfs = self.cfs.read();
        let tables = cfs.iter().filter_map(|name| Some((name.clone(), self.db.cf_handle(name)?))).collect();
        let snapshot = self.db.snapshot();
        drop(cfs);
        Ok(Box::new(RocksSnapshot { snapshot, tables }))
    }

    /// One `WriteBatch`: atomic across column families, and synced before it returns with
    /// `Durability::Immediate`.
    fn write(&self, batch: &RawBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let _guard = self.write_lock.lock();
        let cfs = batch.tables().map(|t| self.cf_for_write(handle_name(t)?)).collect::<Result<Vec<_>>>()?;
        let mut writes = WriteBatch::default();
        for write in batch.writes() {
            let Some(cf) = cfs.get(write.slot) else { return Err(super::missing_slot(BACKEND)) };
            match write.value {
                Some(value) => writes.put_cf(cf, write.key, value),
                None => writes.delete_cf(cf, write.key),
            }
        }
        self.commit(writes, || "writing a batch".to_owned())
    }

    /// Reads then deletes under the write lock, so that no other write of this engine comes
    /// in between.
    fn remove(&self, table: &TableHandle, key: &[u8]) -> Result<bool> {
        let name = handle_name(table)?;
        let _guard = self.write_lock.lock();
        // A removal from a dropped table finds nothing, and needs not recreate it.
        let Some(cf) = self.db.cf_handle(name) else { return Ok(false) };
        let action = || format!("removing from table `{}`", display_name(name));
        let existed = self.db.get_pinned_cf(&cf, key).map_err(|e| err(action(), e))?.is_some();
        if existed {
            let mut writes = WriteBatch::default();
            writes.delete_cf(&cf, key);
            self.commit(writes, action)?;
        }
        Ok(existed)
    }

    /// One range deletion from the empty key to the last key, plus that key: atomic, and
    /// O(1) in size whatever the table holds. Under the write lock, so no key can land past
    /// the last one meanwhile.
    fn clear(&self, table: &TableHandle) -> Result<()> {
        let name = handle_name(table)?;
        let _guard = self.write_lock.lock();
        let cf = self.cf_for_write(name)?;
        let action = || format!("clearing table `{}`", display_name(name));
        let last = {
            let mut iter = self.db.raw_iterator_cf(&cf);
            iter.seek_to_last();
            let last = iter.key().map(<[u8]>::to_vec);
            iter.status().map_err(|e| err(action(), e))?;
            last
        };
        let Some(last) = last else { return Ok(()) };
        let mut writes = WriteBatch::default();
        writes.delete_range_cf(&cf, &[][..], last.as_slice());
        writes.delete_cf(&cf, &last);
        self.commit(writes, action)
    }

    /// Flushes every memtable, then compacts every column family fully, bottommost level
    /// included, so that deleted and overwritten entries are gone.
    fn compact(&self) -> Result<CompactionReport> {
        let before = self.disk_size()?;
        let names: Vec<String> = self.cfs.read().iter().cloned().collect();
        let mut options = CompactOptions::default();
        options.set_bottommost_level_compaction(BottommostLevelCompaction::ForceOptimized);
        for name in &names {
            // Dropped meanwhile: nothing to compact.
            let Some(cf) = self.db.cf_handle(name) else { continue };
            self.db.flush_cf(&cf).map_err(|e| err(format!("flushing table `{}`", display_name(name)), e))?;
            self.db.compact_range_cf_opt(&cf, None::<&[u8]>, None::<&[u8]>, &options);
        }
        Ok(CompactionReport::Compacted { before, after: self.disk_size()? })
    }

    /// Syncs the write-ahead log: every write so far is then durable, synced or not.
    fn flush(&self) -> Result<()> {
        self.db.flush_wal(true).map_err(|e| err("syncing the write-ahead log", e))
    }

    fn disk_size(&self) -> Result<u64> {
        dir_size(&self.dir)
    }
}

/// Counts the entries `iter` yields: RocksDB has no exact count.
fn count(mut iter: DBRawIteratorWithThreadMode<'_, Db>, name: &str) -> Result<u64> {
    iter.seek_to_first();
    let mut n = 0;
    while iter.valid() {
        n += 1;
        iter.next();
    }
    iter.status().map_err(|e| err(format!("counting table `{}`", display_name(name)), e))?;
    Ok(n)
}

/// Where a [`RocksIter`] stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum IterState {
    /// Not positioned yet: the first `next` seeks, so making the iterator costs no I/O.
    Unstarted,
    /// On an entry already returned.
    Running,
    /// Past the end, or failed.
    Done,
}

/// A range read. A raw iterator lends its key and value only until it moves, so each entry is
/// copied into [`RawBytes::Owned`].
struct RocksIter<'a> {
    /// Declared first so it is dropped before the column family handle it reads.
    iter: DBRawIteratorWithThreadMode<'a, Db>,
    /// Keeps the column family readable even if the table is dropped during the scan.
    _cf: Cf<'a>,
    /// Column family name, for error messages.
    name: String,
    state: IterState,
}

impl<'a> RocksIter<'a> {
    /// Wraps `iter` over column family `cf`, named `name`.
    fn new(iter: DBRawIteratorWithThreadMode<'a, Db>, cf: Cf<'a>, name: &str) -> Self {
        Self { iter, _cf: cf, name: name.to_owned(), state: IterState::Unstarted }
    }
}

impl<'a> Iterator for RocksIter<'a> {
    type Item = Result<(RawBytes<'a>, RawBytes<'a>)>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.state {
            IterState::Done => return None,
            // The read options carry the lower bound: seeking to the first key seeks to it.
            IterState::Unstarted => self.iter.seek_to_first(),
            IterState::Running => self.iter.next(),
        }
        if let Some((key, value)) = self.iter.item() {
            self.state = IterState::Running;
            return Some(Ok((RawBytes::Owned(key.to_vec()), RawBytes::Owned(value.to_vec()))));
        }
        self.state = IterState::Done;
        match self.iter.status() {
            Ok(()) => None,
            Err(e) => Some(Err(err(format!("scanning table `{}`", display_name(&self.name)), e))),
        }
    }
}

/// A RocksDB snapshot with the column families that existed when it was taken.
struct RocksSnapshot<'a> {
    /// Declared first so it is released before the handles.
    snapshot: SnapshotWithThreadMode<'a, Db>,
    /// Handles by column family name.
    tables: HashMap<String, Cf<'a>>,
}

impl<'a> RocksSnapshot<'a> {
    /// The column family of a handle, if it existed when the snapshot was taken.
    fn cf<'s, 't>(&'s self, table: &'t TableHandle) -> Result<Option<(&'t str, &'s Cf<'a>)>> {
        let name = handle_name(table)?;
        Ok(self.tables.get(name).map(|cf| (name, cf)))
    }
}

impl EngineSnapshot for RocksSnapshot<'_> {
    /// Pinned, not copied.
    fn get<'s>(&'s self, table: &TableHandle, key: &[u8]) -> Result<Option<RawBytes<'s>>> {
        let Some((name, cf)) = self.cf(table)? else { return Ok(None) };
        let value = self
            .snapshot
            .get_pinned_cf_opt(cf, key, ReadOptions::default())
            .map_err(|e| err(format!("reading table `{}`", display_name(name)), e))?;
        Ok(value.map(RawBytes::RocksPinned))
    }

    fn range<'s>(
        &'s self,
        table: &TableHandle,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> Result<RawIter<'s>> {
        let Some((name, cf)) = self.cf(table)? else { return Ok(Box::new(std::iter::empty())) };
        let Some(options) = bounded(lower, upper) else { return Ok(Box::new(std::iter::empty())) };
        let iter = self.snapshot.raw_iterator_cf_opt(cf, options);
        Ok(Box::new(RocksIter::new(iter, Arc::clone(cf), name)))
    }

    /// O(n), as outside a snapshot.
    fn len(&self, table: &TableHandle) -> Result<u64> {
        let Some((name, cf)) = self.cf(table)? else { return Ok(0) };
        count(self.snapshot.raw_iterator_cf(cf), name)
    }
}
