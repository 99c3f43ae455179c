//! The native engine ([`crate::engine`]) as a typed-kv backend.
//!
//! Values are lent straight from the engine's mapped segments ([`engine::Value`]), and keys
//! of range reads are shared with its index: reads copy nothing. Tables whose value format
//! needs alignment are written with 16-byte-aligned values, so rkyv guards never copy.
//!
//! A handle holds its table's id. The id of a dropped table is never reused, so a handle
//! whose table was dropped is dead: reads and writes through it are
//! [`StorageError::TableDropped`], even once a table of that name exists again (the typed
//! layer says so first, for every backend; the id makes it hold here at the engine too). A
//! snapshot that does not hold the id (made before the table, or after its drop) holds no
//! entries of it.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use super::{
    missing_slot, CompactionReport, Engine, EngineFigures, EngineOptions, EngineSnapshot, RawBatch, RawBytes,
    RawIter, RawRange, TableFigures, TableHandle,
};
use crate::catalog::NATIVE_TABLES_FILE;
use crate::config::{DatabaseBackend, Durability};
use crate::engine::{self, Db, Op, SyncMode, ValueAlign};
use crate::error::{Result, StorageError};
use crate::verify::{ChecksumCheck, VerifyProblem};

const BACKEND: DatabaseBackend = DatabaseBackend::Native;

/// A typed-kv table on the native engine.
#[derive(Debug)]
pub(crate) struct NativeTable {
    name: Arc<str>,
    /// The table's engine id.
    id: u32,
    align: ValueAlign,
}

impl NativeTable {
    /// The table's name.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    fn cached(&self) -> engine::Table {
        engine::Table::from_parts(self.id, Arc::clone(&self.name))
    }
}

fn handle(table: &TableHandle) -> Result<&NativeTable> {
    #[allow(unreachable_patterns)]
    match table {
        TableHandle::Native(t) => Ok(t),
        _ => Err(TableHandle::foreign(BACKEND)),
    }
}

/// The error for a handle whose table was dropped.
fn dropped(t: &NativeTable) -> StorageError {
    StorageError::TableDropped { table: t.name.to_string() }
}

/// The typed-kv error for an engine error, while doing `action`.
pub(crate) fn err(action: impl Into<String>, e: engine::Error) -> StorageError {
    match e {
        engine::Error::Io { action, path, source } => StorageError::Io { action, path, source },
        engine::Error::Locked { path } => StorageError::Locked { path, backend: BACKEND },
        engine::Error::Corrupt { path, offset, reason } => StorageError::Corrupt { path, offset, reason },
        engine::Error::Missing { path, offset, reason } => StorageError::MissingData { path, offset, reason },
        other => StorageError::engine(BACKEND, action, Box::new(other)),
    }
}

/// The typed-kv error for an engine error while reading table `table` (a damaged record
/// is [`StorageError::Corrupt`], naming its file, offset, table and key).
#[cold]
pub(crate) fn read_err(table: &str, e: engine::Error) -> StorageError {
    err(format!("reading table `{table}`"), e)
}

/// The native engine in one directory.
pub(crate) struct NativeEngine {
    db: Db,
}

impl NativeEngine {
    pub(crate) fn open(dir: &Path, options: &EngineOptions) -> Result<Self> {
        // The engine writes its table directory as soon as a table exists, and a storage
        // always has its catalog table: once the engine was created, the file is there.
        let tables = dir.join(NATIVE_TABLES_FILE);
        if options.must_exist && !tables.exists() {
            return Err(StorageError::MissingEngineFile { path: tables, backend: BACKEND });
        }
        let sync = match options.durability {
            Durability::Immediate => SyncMode::Always,
            Durability::None => SyncMode::Never,
        };
        let db = Db::open(dir, engine::Options { sync, ..options.native.clone() })
            .map_err(|e| err(format!("opening {}", dir.display()), e))?;
        Ok(NativeEngine { db })
    }

    /// The table of `handle`, or [`StorageError::TableDropped`] if it was dropped.
    fn current(&self, t: &NativeTable) -> Result<engine::Table> {
        if self.db.has_table_id(t.id) {
            return Ok(t.cached());
        }
        Err(dropped(t))
    }
}

impl Engine for NativeEngine {
    fn backend(&self) -> DatabaseBackend {
        BACKEND
    }

    fn open_table(&self, name: &str, value_align: usize) -> Result<TableHandle> {
        let table = self.db.table(name).map_err(|e| err(format!("opening table `{name}`"), e))?;
        let align = if value_align > 1 { ValueAlign::Sixteen } else { ValueAlign::Packed };
        Ok(TableHandle::Native(Arc::new(NativeTable { name: Arc::from(name), id: table.id(), align })))
    }

    fn table_for_reading(&self, name: &str) -> Result<Option<TableHandle>> {
        Ok(self.db.find_table(name).map(|table| {
            TableHandle::Native(Arc::new(NativeTable {
                name: Arc::from(name),
                id: table.id(),
                align: ValueAlign::Packed,
            }))
        }))
    }

    fn drop_table(&self, name: &str) -> Result<bool> {
        self.db.drop_table(name).map_err(|e| err(format!("deleting table `{name}`"), e))
    }

    /// Lent from the mapping: no copy, no allocation.
    #[inline]
    fn get<'a>(&'a self, table: &TableHandle, key: &[u8]) -> Result<Option<RawBytes<'a>>> {
        let t = handle(table)?;
        if let Some(value) = self.db.get_by_id(t.id, key).map_err(|e| read_err(&t.name, e))? {
            return Ok(Some(RawBytes::Native(value)));
        }
        if self.db.has_table_id(t.id) {
            return Ok(None); // a plain miss
        }
        Err(dropped(t))
    }

    fn range<'a>(
        &'a self,
        table: &TableHandle,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> Result<RawIter<'a>> {
        let t = handle(table)?;
        let table = self.current(t)?;
        let entries = self.db.snapshot().into_range(&table, (lower, upper));
        let name = Arc::clone(&t.name);
        Ok(Box::new(entries.map(move |entry| {
            let (key, value) = entry.map_err(|e| read_err(&name, e))?;
            Ok((RawBytes::NativeKey(key), RawBytes::Native(value)))
        })))
    }

    /// The engine's own range iterator: no virtual call and no pair of `RawBytes` per entry.
    fn entries<'a>(
        &'a self,
        table: &TableHandle,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> Result<RawRange<'a>> {
        let table = self.current(handle(table)?)?;
        Ok(RawRange::Native(Box::new(self.db.snapshot().into_range(&table, (lower, upper)))))
    }

    fn len(&self, table: &TableHandle) -> Result<u64> {
        let table = self.current(handle(table)?)?;
        Ok(self.db.snapshot().len(&table) as u64)
    }

    fn snapshot<'a>(&'a self) -> Result<Box<dyn EngineSnapshot + 'a>> {
        Ok(Box::new(NativeSnapshot { snapshot: self.db.snapshot() }))
    }

    fn write(&self, batch: &RawBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let tables = batch
            .tables()
            .map(|t| {
                let t = handle(t)?;
                Ok((self.current(t)?, t.align))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut ops = Vec::with_capacity(batch.len());
        for write in batch.writes() {
            let Some((table, align)) = tables.get(write.slot) else { return Err(missing_slot(BACKEND)) };
            ops.push(match write.value {
                Some(value) => Op::Put { table, key: write.key, value, align: *align },
                None => Op::Delete { table, key: write.key },
            });
        }
        self.db.write(&ops).map_err(|e| {
            // Name the tables, so the error says what the failed write was about.
            let names: Vec<String> =
                batch.tables().filter_map(|t| handle(t).ok()).map(|t| format!("`{}`", t.name)).collect();
            let what = if names.len() == 1 { "table" } else { "tables" };
            err(format!("writing a batch to {what} {}", names.join(", ")), e)
        })
    }

    /// One op, without the batch's buffers and table list.
    fn put(&self, table: &TableHandle, _name: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let t = handle(table)?;
        let table = self.current(t)?;
        self.db
            .write(&[Op::Put { table: &table, key, value, align: t.align }])
            .map_err(|e| err(format!("writing a batch to table `{}`", t.name), e))
    }

    fn remove(&self, table: &TableHandle, key: &[u8]) -> Result<bool> {
        let t = handle(table)?;
        let table = self.current(t)?;
        self.db.delete(&table, key).map_err(|e| err(format!("removing from table `{}`", t.name), e))
    }

    fn clear(&self, table: &TableHandle) -> Result<()> {
        let t = handle(table)?;
        let table = self.current(t)?;
        self.db
            .write(&[Op::Clear { table: &table }])
            .map_err(|e| err(format!("clearing table `{}`", t.name), e))
    }

    fn compact(&self) -> Result<CompactionReport> {
        let before = self.disk_size()?;
        self.db.compact().map_err(|e| err("compacting", e))?;
        Ok(CompactionReport::Compacted { before, after: self.disk_size()? })
    }

    fn flush(&self) -> Result<()> {
        self.db.flush().map_err(|e| err("syncing", e))
    }

    fn disk_size(&self) -> Result<u64> {
        self.db.disk_size().map_err(|e| err("measuring", e))
    }

    /// Keys from the index (O(1)); bytes per table are not tracked.
    fn table_figures(&self, table: &TableHandle) -> Result<TableFigures> {
        let keys = self.len(table)?;
        Ok(TableFigures { keys: Some(keys), bytes: None })
    }

    /// From the engine's own counters ([`Db::stats`]), which walk the in-memory index once.
    fn figures(&self) -> Result<EngineFigures> {
        let stats = self.db.stats();
        Ok(EngineFigures {
            live_bytes: Some(stats.live_bytes),
            reclaimable_bytes: Some(stats.dead_bytes),
            files: Some(stats.segments as u64),
            compactions: Some(stats.compactions),
        })
    }

    /// Every record of every segment against its CRC-32C, and the index against the log
    /// ([`Db::verify`]).
    fn verify_checksums(
        &self,
        progress: &mut dyn FnMut(u64, u64),
        problems: &mut Vec<VerifyProblem>,
    ) -> Result<ChecksumCheck> {
        let report = self.db.verify_with_progress(progress);
        for problem in report.problems {
            let reason = format!("{} (native engine)", problem.reason);
            if problem.keys.is_empty() {
                problems.push(VerifyProblem::in_file(None, None, problem.path, problem.offset, reason));
                continue;
            }
            for (table, key) in problem.keys {
                let key = Some(key.to_vec());
                let at = (problem.path.clone(), problem.offset);
                problems.push(VerifyProblem::in_file(Some(table), key, at.0, at.1, reason.clone()));
            }
        }
        Ok(ChecksumCheck::Checked {
            method: "CRC-32C of every record of every segment; every index entry against its record",
            bytes: report.bytes,
            records: Some(report.records),
        })
    }
}

/// A consistent view: one published version of the engine's index.
struct NativeSnapshot {
    snapshot: engine::Snapshot,
}

impl NativeSnapshot {
    /// The table of `handle` in this snapshot; `None` if the snapshot does not hold it.
    fn table(&self, table: &TableHandle) -> Result<Option<engine::Table>> {
        let t = handle(table)?;
        Ok(self.snapshot.has_table_id(t.id).then(|| t.cached()))
    }

    /// The id of the table of `handle`, if this snapshot holds it.
    #[inline]
    fn table_id(&self, table: &TableHandle) -> Result<Option<u32>> {
        let t = handle(table)?;
        Ok(self.snapshot.has_table_id(t.id).then_some(t.id))
    }
}

impl EngineSnapshot for NativeSnapshot {
    /// Borrowed from the snapshot: no copy, and no shared counter touched.
    #[inline]
    fn get<'s>(&'s self, table: &TableHandle, key: &[u8]) -> Result<Option<RawBytes<'s>>> {
        let t = handle(table)?;
        // A miss, or a table this snapshot does not hold: nothing either way.
        Ok(self.snapshot.get_by_id(t.id, key).map_err(|e| read_err(&t.name, e))?.map(RawBytes::Borrowed))
    }

    fn range<'s>(
        &'s self,
        table: &TableHandle,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> Result<RawIter<'s>> {
        let Some(id) = self.table_id(table)? else { return Ok(Box::new(std::iter::empty())) };
        let name = Arc::clone(&handle(table)?.name);
        let entries = self.snapshot.range_by_id(id, lower, upper);
        Ok(Box::new(entries.map(move |entry| {
            let (key, value) = entry.map_err(|e| read_err(&name, e))?;
            Ok((RawBytes::Borrowed(key), RawBytes::Borrowed(value)))
        })))
    }

    /// The engine's range iterator itself: no box, and keys and values lent as slices.
    #[inline]
    fn entries<'s>(
        &'s self,
        table: &TableHandle,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> Result<RawRange<'s>> {
        let Some(id) = self.table_id(table)? else {
            return Ok(RawRange::Boxed(Box::new(std::iter::empty())));
        };
        Ok(RawRange::NativeSnapshot(self.snapshot.range_by_id(id, lower, upper)))
    }

    fn len(&self, table: &TableHandle) -> Result<u64> {
        Ok(self.table(table)?.map_or(0, |t| self.snapshot.len(&t) as u64))
    }
}
