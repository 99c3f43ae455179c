//! [`Storage`]: one open store, the handle every table, snapshot and batch comes from.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::backends::{CompactionReport, Engine, TableHandle};
use parking_lot::Mutex;

use crate::catalog::{catalog_name, TableStamp, CATALOG_TABLE, RESERVED_PREFIX};
use crate::config::{DatabaseBackend, Recreate};
use crate::error::{Result, StorageError};
use crate::table::{TableBuilder, Unset};
use crate::txn::{ReadTxn, WriteBatch};

/// An open store: cheap to clone (an `Arc`), `Send + Sync`, closed when the last clone and
/// the last table made from it are dropped.
///
/// ```
/// use typed_kv::{OrderedFormat, PostcardFormat, StorageBuilder};
///
/// let dir = tempfile::tempdir()?;
/// let storage = StorageBuilder::new(dir.path()).build()?;
/// let names = storage
///     .new_table::<u32, String>("names")
///     .with_key_format(OrderedFormat::new())
///     .with_value_format(PostcardFormat::new())
///     .build()?;
/// names.put(&7, &"seven".to_string())?;
/// assert_eq!(storage.table_names()?, vec!["names".to_string()]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Storage {
    pub(crate) inner: Arc<StorageInner>,
}

pub(crate) struct StorageInner {
    pub(crate) engine: Box<dyn Engine>,
    path: PathBuf,
    pub(crate) recreate: Recreate,
    pub(crate) version: u64,
    pub(crate) catalog: TableHandle,
    /// Values copied into an aligned buffer, per table name (see [`Storage::aligned_copies`]).
    aligned_copies: Mutex<HashMap<String, Arc<AtomicU64>>>,
    /// Compactions that `compact` ran (engines that compact in the background count more).
    pub(crate) compactions: AtomicU64,
    /// Held while stamps are read and changed (building, dropping and recreating tables), so
    /// that two builders of one table never both find it new, nor clear what the other wrote.
    pub(crate) schema: Mutex<()>,
    /// The life of each table built since the store was opened, by name: shared with its
    /// handles, and ended when the table is dropped or recreated.
    lives: Mutex<HashMap<String, Arc<TableLife>>>,
    /// Held (and so locked) for as long as the store is open.
    _lock: std::fs::File,
}

/// Whether a table's handles may still be used: shared by every handle of one table, and
/// ended when the table is dropped or recreated, so that a handle of a dropped table never
/// reads or writes a table of the same name built later.
#[derive(Debug, Default)]
pub(crate) struct TableLife {
    dropped: AtomicBool,
}

impl TableLife {
    /// [`StorageError::TableDropped`] once the table was dropped (one relaxed load: a drop is
    /// seen by operations that start after `drop_table` returned).
    #[inline]
    pub(crate) fn check(&self, table: &str) -> Result<()> {
        if self.dropped.load(Ordering::Relaxed) {
            return Err(StorageError::TableDropped { table: table.to_owned() });
        }
        Ok(())
    }
}

impl Drop for StorageInner {
    fn drop(&mut self) {
        // With `Durability::None`, commits may still be unsynced: give them a last chance.
        // Errors cannot be reported from drop; call `Storage::flush` to see them.
        let _ = self.engine.flush();
    }
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage").field("path", &self.inner.path).field("backend", &self.backend()).finish()
    }
}

impl Storage {
    pub(crate) fn from_engine(
        path: PathBuf,
        engine: Box<dyn Engine>,
        recreate: Recreate,
        version: u64,
        lock: std::fs::File,
    ) -> Result<Self> {
        let catalog = engine.open_table(CATALOG_TABLE, 1)?;
        let inner = StorageInner {
            engine,
            path,
            recreate,
            version,
            catalog,
            aligned_copies: Mutex::new(HashMap::new()),
            compactions: AtomicU64::new(0),
            schema: Mutex::new(()),
            lives: Mutex::new(HashMap::new()),
            _lock: lock,
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Starts building the typed table `name`; see [`TableBuilder`].
    pub fn new_table<K, V>(&self, name: &str) -> TableBuilder<K, V, Unset, Unset> {
        TableBuilder::new(self.clone(), name)
    }

    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The engine behind this storage.
    pub fn backend(&self) -> DatabaseBackend {
        self.inner.engine.backend()
    }

    /// Names of the tables built in this store, sorted.
    pub fn table_names(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let all = std::ops::Bound::Unbounded;
        for entry in self.inner.engine.range(&self.inner.catalog, all, all)? {
            let (key, _) = entry?;
            names.push(catalog_name(&key)?);
        }
        Ok(names)
    }

    /// The stamp (formats, types, schema version) of table `name`, if it exists.
    pub fn table_stamp(&self, name: &str) -> Result<Option<TableStamp>> {
        match self.inner.engine.get(&self.inner.catalog, name.as_bytes())? {
            Some(bytes) => TableStamp::decode(name, &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn write_stamp(&self, name: &str, stamp: &TableStamp) -> Result<()> {
        let mut batch = crate::backends::RawBatch::default();
        let slot = batch.table_slot(CATALOG_TABLE, &self.inner.catalog);
        batch.buffer().extend_from_slice(name.as_bytes());
        let key_end = batch.buffer().len();
        batch.buffer().extend_from_slice(&stamp.encode());
        let value_end = batch.buffer().len();
        batch.push(slot, 0..key_end, Some(key_end..value_end));
        self.inner.engine.write(&batch)
    }

    /// Deletes table `name` with its contents and stamp; `false` if there was no such table.
    ///
    /// Every handle of the table built before (typed [`Table`](crate::Table)s, their
    /// snapshots, batches and streams, [`UntypedTable`](crate::untyped::UntypedTable)s) is
    /// dead from then on: its operations return [`StorageError::TableDropped`], even once a
    /// table of that name is built again. Building the name again starts afresh.
    pub fn drop_table(&self, name: &str) -> Result<bool> {
        if name.starts_with(RESERVED_PREFIX) {
            return Err(StorageError::InvalidTableName {
                name: name.to_owned(),
                reason: "names starting with `__typed_kv` are reserved",
            });
        }
        let _schema = self.inner.schema.lock();
        self.end_life(name);
        let stamped = self.table_stamp(name)?.is_some();
        // The data first: a crash in between leaves a stamp without data, which a rebuild
        // simply reuses, never data without a stamp.
        let existed = self.inner.engine.drop_table(name)?;
        if stamped {
            self.inner.engine.remove(&self.inner.catalog, name.as_bytes())?;
        }
        Ok(existed || stamped)
    }

    /// Reclaims space the engine no longer needs, and says what happened.
    ///
    /// On redb this needs exclusive access: with a snapshot, guard or iterator alive it
    /// returns [`StorageError::Busy`].
    pub fn compact(&self) -> Result<CompactionReport> {
        let report = self.inner.engine.compact()?;
        if matches!(report, CompactionReport::Compacted { .. }) {
            self.inner.compactions.fetch_add(1, Ordering::Relaxed);
        }
        Ok(report)
    }

    /// Makes every commit so far durable (useful with [`Durability::None`](crate::Durability::None)).
    pub fn flush(&self) -> Result<()> {
        self.inner.engine.flush()
    }

    /// Bytes the engine's files take on disk.
    pub fn disk_size(&self) -> Result<u64> {
        self.inner.engine.disk_size()
    }

    /// How many values were copied into an aligned buffer because the engine gave misaligned
    /// bytes to a format that needs alignment (rkyv), since the storage was opened.
    pub fn aligned_copies(&self) -> u64 {
        self.inner.aligned_copies.lock().values().map(|n| n.load(Ordering::Relaxed)).sum()
    }

    /// The life of table `name`, shared by its handles (made when its first handle is).
    pub(crate) fn table_life(&self, name: &str) -> Arc<TableLife> {
        Arc::clone(self.inner.lives.lock().entry(name.to_owned()).or_default())
    }

    /// Ends the life of table `name`: its handles so far are dead, later ones get a new life.
    pub(crate) fn end_life(&self, name: &str) {
        if let Some(life) = self.inner.lives.lock().remove(name) {
            life.dropped.store(true, Ordering::Relaxed);
        }
    }

    /// The counter of aligned copies of table `name`, shared by every typed table of that name.
    pub(crate) fn aligned_copy_counter(&self, name: &str) -> Arc<AtomicU64> {
        Arc::clone(self.inner.aligned_copies.lock().entry(name.to_owned()).or_default())
    }

    /// Aligned copies of table `name` since the storage was opened.
    pub(crate) fn aligned_copies_of(&self, name: &str) -> u64 {
        self.inner.aligned_copies.lock().get(name).map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// Every catalog entry, in name order: the table name (lossy if it is not UTF-8) and its
    /// decoded stamp, or why the entry is damaged (a stamp it cannot decode, a name that is
    /// not UTF-8).
    pub(crate) fn catalog_entries(&self) -> Result<Vec<(String, Result<TableStamp>)>> {
        let all = std::ops::Bound::Unbounded;
        let mut entries = Vec::new();
        for entry in self.inner.engine.range(&self.inner.catalog, all, all)? {
            let (key, value) = entry?;
            let lossy = String::from_utf8_lossy(&key).into_owned();
            let stamp = catalog_name(&key).and_then(|name| TableStamp::decode(&name, &value));
            entries.push((lossy, stamp));
        }
        Ok(entries)
    }

    /// A consistent read view across all tables of this storage. Point reads, scans and
    /// counts through it see the same state, whatever is written meanwhile.
    ///
    /// On sled, which has no snapshots, writers wait while a snapshot is alive.
    pub fn read(&self) -> Result<ReadTxn<'_>> {
        ReadTxn::new(self)
    }

    /// A batch of writes across tables of this storage, committed atomically by
    /// [`WriteBatch::commit`].
    pub fn batch(&self) -> WriteBatch<'_> {
        WriteBatch::new(self)
    }

    pub(crate) fn same_as(&self, other: &Storage) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}
