//! [`Storage::stats`]: figures about a storage and each of its tables, as far as the engine
//! knows them without reading the data.
//!
//! What each engine tells is listed on [`Storage::stats`].

use crate::backends::TableFigures;
use crate::catalog::TableStamp;
use crate::config::DatabaseBackend;
use crate::error::Result;
use crate::storage::Storage;

/// Figures about a storage and its tables, from [`Storage::stats`]. `None` means the engine
/// does not tell that figure cheaply (see the table in [`Storage::stats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StorageStats {
    /// The engine.
    pub backend: DatabaseBackend,
    /// Every table, in name order.
    pub tables: Vec<TableStats>,
    /// Keys in all tables, if the engine counts every table.
    pub keys: Option<u64>,
    /// Bytes of the engine's files on disk.
    pub disk_bytes: u64,
    /// Bytes of live data (keys, values, record headers) in those files.
    pub live_bytes: Option<u64>,
    /// Bytes a compaction could give back.
    pub reclaimable_bytes: Option<u64>,
    /// Data files (native: segments).
    pub data_files: Option<u64>,
    /// Values copied into an aligned buffer by guards since the storage was opened, all tables.
    pub aligned_copies: u64,
    /// Compactions since the storage was opened: calls of [`Storage::compact`] that
    /// compacted, or on the native engine every compaction, background ones included.
    pub compactions: u64,
}

/// Figures about one table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableStats {
    /// The table's name.
    pub name: String,
    /// How it was created; `None` if its catalog entry is damaged
    /// ([`Storage::verify`] says why).
    pub stamp: Option<TableStamp>,
    /// Keys, if the engine keeps a count.
    pub keys: Option<u64>,
    /// Bytes the table takes in the engine's files, if the engine tells per table.
    pub bytes: Option<u64>,
    /// Values of this table copied into an aligned buffer by guards since the storage was
    /// opened (rkyv values that the engine lent misaligned).
    pub aligned_copies: u64,
}

impl Storage {
    /// Figures about the storage and each table: keys, bytes, aligned copies, compactions.
    ///
    /// Cheap: no data is read. Each figure comes from the engine's own counters or from
    /// typed-kv's; what an engine cannot tell without a scan is `None`:
    ///
    /// | figure | native | redb | sled | RocksDB |
    /// |---|---|---|---|---|
    /// | keys per table | yes | yes | `None` (a count is a full scan) | `None` |
    /// | bytes per table | `None` | `None` (redb would walk every page) | `None` | `None` |
    /// | live, reclaimable bytes, data files | yes | `None` | `None` | `None` |
    ///
    /// Files on disk, aligned copies and compactions are known on every engine. On the
    /// native engine the live-byte figures walk the in-memory index once (no I/O).
    ///
    /// ```
    /// use typed_kv::{OrderedFormat, PostcardFormat, StorageBuilder};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let storage = StorageBuilder::new(dir.path()).build()?; // the native engine
    /// let names = storage
    ///     .new_table::<u32, String>("names")
    ///     .with_key_format(OrderedFormat::new())
    ///     .with_value_format(PostcardFormat::new())
    ///     .build()?;
    /// names.put_all([(1, "one".to_string()), (2, "two".to_string())])?;
    /// let stats = storage.stats()?;
    /// assert_eq!(stats.tables[0].name, "names");
    /// assert_eq!(stats.tables[0].keys, Some(2));
    /// assert_eq!(stats.keys, Some(2));
    /// assert!(stats.disk_bytes > 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> Result<StorageStats> {
        let engine = &self.inner.engine;
        let mut tables = Vec::new();
        for (name, stamp) in self.catalog_entries()? {
            let stamp = stamp.ok();
            let figures = match engine.table_for_reading(&name)? {
                Some(handle) => engine.table_figures(&handle)?,
                None => TableFigures { keys: Some(0), bytes: Some(0) },
            };
            tables.push(TableStats {
                aligned_copies: self.aligned_copies_of(&name),
                name,
                stamp,
                keys: figures.keys,
                bytes: figures.bytes,
            });
        }
        let figures = engine.figures()?;
        let own_compactions = self.inner.compactions.load(std::sync::atomic::Ordering::Relaxed);
        Ok(StorageStats {
            backend: self.backend(),
            keys: tables.iter().map(|t| t.keys).sum(),
            disk_bytes: engine.disk_size()?,
            live_bytes: figures.live_bytes,
            reclaimable_bytes: figures.reclaimable_bytes,
            data_files: figures.files,
            aligned_copies: self.aligned_copies(),
            compactions: figures.compactions.unwrap_or(own_compactions),
            tables,
        })
    }
}
