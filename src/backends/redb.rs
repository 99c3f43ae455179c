//! redb 4: one redb table per typed-kv table, keys and values as `&[u8]`.
//!
//! redb lends values through `OwnedAccessGuard`s that keep their page and their read
//! transaction alive, so reads copy nothing. (Not the plain `AccessGuard<'static>` of
//! `ReadOnlyTable::get`: it outlives its transaction, and a later commit may free the page
//! under it, which redb's own debug assertions catch.) Compaction needs `&mut Database` and no live read transaction: the database sits
//! behind a `RwLock` whose write side only `compact` takes, and live guards make it report
//! [`StorageError::Busy`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use redb::{
    CompactionError, Database, DatabaseError, ReadOnlyTable, ReadTransaction, ReadableDatabase,
    ReadableTableMetadata, TableDefinition, TableError,
};

use super::{
    CompactionReport, Engine, EngineOptions, EngineSnapshot, RawBatch, RawBytes, RawIter, TableFigures,
    TableHandle,
};
use crate::config::{DatabaseBackend, Durability};
use crate::error::{Result, StorageError};
use crate::verify::{ChecksumCheck, VerifyProblem};

const BACKEND: DatabaseBackend = DatabaseBackend::Redb;
/// The database file inside the storage directory.
pub(crate) const FILE_NAME: &str = "data.redb";

type Bytes = &'static [u8];
/// A table opened for reading; `Arc` so the snapshot's cache can hand it out.
type RawTable = ReadOnlyTable<Bytes, Bytes>;

fn definition(name: &str) -> TableDefinition<'_, Bytes, Bytes> {
    TableDefinition::new(name)
}

fn err(action: impl Into<String>, e: impl Into<redb::Error>) -> StorageError {
    let e = e.into();
    if proves_damage(&e) {
        return StorageError::EngineCorrupt { backend: BACKEND, action: action.into(), source: Box::new(e) };
    }
    StorageError::engine(BACKEND, action, Box::new(e))
}

/// Whether redb checked its bytes and found them damaged, or in a format this redb cannot
/// read. Its header checks report `InvalidData` ("Not a redb database: magic number
/// mismatch"), which the OS never does.
fn proves_damage(e: &redb::Error) -> bool {
    match e {
        redb::Error::Corrupted(_) | redb::Error::UpgradeRequired(_) => true,
        redb::Error::Io(io) => io.kind() == std::io::ErrorKind::InvalidData,
        _ => false,
    }
}

fn handle_name(table: &TableHandle) -> Result<&str> {
    #[allow(unreachable_patterns)]
    match table {
        TableHandle::Redb(name) => Ok(name),
        _ => Err(TableHandle::foreign(BACKEND)),
    }
}

pub(crate) struct RedbEngine {
    db: RwLock<Database>,
    file: PathBuf,
    durability: redb::Durability,
}

/// A new database while redb initialises it, renamed to [`FILE_NAME`] once it is whole.
const NEW_FILE_NAME: &str = "data.redb.new";

/// Creates an empty database at `file` that is whole or absent after a crash.
///
/// redb sizes a new file, writes its header, and writes its magic number last; a crash in
/// between leaves a file that every later open refuses ("Not a redb database: magic number
/// mismatch"). So the database is made under [`NEW_FILE_NAME`], closed, and renamed into
/// place; a leftover of an earlier attempt is replaced. The caller holds the store's lock.
fn create_whole(dir: &Path, file: &Path) -> Result<()> {
    let new = dir.join(NEW_FILE_NAME);
    match std::fs::remove_file(&new) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StorageError::io("removing", &new, e)),
    }
    let db = Database::builder().create(&new).map_err(|e| err(format!("creating {}", new.display()), e))?;
    drop(db);
    std::fs::rename(&new, file).map_err(|e| StorageError::io("renaming", &new, e))?;
    crate::catalog::sync_dir(dir)
}

impl RedbEngine {
    pub(crate) fn open(dir: &Path, options: &EngineOptions) -> Result<Self> {
        let file = dir.join(FILE_NAME);
        if options.must_exist && !file.exists() {
            return Err(StorageError::MissingEngineFile { path: file, backend: BACKEND });
        }
        if !file.exists() {
            create_whole(dir, &file)?;
        }
        // A database that exists is opened, never created: `create` would make a missing
        // file anew.
        let db = Database::builder().open(&file).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => {
                StorageError::Locked { path: dir.to_owned(), backend: BACKEND }
            }
            other => err(format!("opening {}", file.display()), other),
        })?;
        let durability = match options.durability {
            Durability::Immediate => redb::Durability::Immediate,
            Durability::None => redb::Durability::None,
        };
        Ok(Self { db: RwLock::new(db), file, durability })
    }

    fn begin_read(&self) -> Result<ReadTransaction> {
        self.db.read().begin_read().map_err(|e| err("beginning a read transaction", e))
    }

    fn begin_write(&self, db: &Database, durability: redb::Durability) -> Result<redb::WriteTransaction> {
        let mut txn = db.begin_write().map_err(|e| err("beginning a write transaction", e))?;
        txn.set_durability(durability).map_err(|e| err("setting durability", e))?;
        Ok(txn)
    }

    fn commit(&self, txn: redb::WriteTransaction, action: &str) -> Result<()> {
        txn.commit().map_err(|e| err(format!("committing {action}"), e))
    }
}

/// Opens `name` for reading; `None` if the table was never written in this snapshot.
fn open_read(txn: &ReadTransaction, name: &str) -> Result<Option<RawTable>> {
    match txn.open_table(definition(name)) {
        Ok(table) => Ok(Some(table)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(err(format!("opening table `{name}`"), e)),
    }
}

impl Engine for RedbEngine {
    fn backend(&self) -> DatabaseBackend {
        BACKEND
    }

    fn open_table(&self, name: &str, _value_align: usize) -> Result<TableHandle> {
        let db = self.db.read();
        let txn = self.begin_write(&db, self.durability)?;
        txn.open_table(definition(name)).map_err(|e| err(format!("creating table `{name}`"), e))?;
        self.commit(txn, &format!("creation of table `{name}`"))?;
        Ok(TableHandle::Redb(Arc::from(name)))
    }

    fn table_for_reading(&self, name: &str) -> Result<Option<TableHandle>> {
        let exists = open_read(&self.begin_read()?, name)?.is_some();
        Ok(exists.then(|| TableHandle::Redb(Arc::from(name))))
    }

    fn drop_table(&self, name: &str) -> Result<bool> {
        let db = self.db.read();
        let txn = self.begin_write(&db, self.durability)?;
        let existed =
            txn.delete_table(definition(name)).map_err(|e| err(format!("deleting table `{name}`"), e))?;
        self.commit(txn, &format!("deletion of table `{name}`"))?;
        Ok(existed)
    }

    fn get<'a>(&'a self, table: &TableHandle, key: &[u8]) -> Result<Option<RawBytes<'a>>> {
        let name = handle_name(table)?;
        let txn = self.db.read().begin_read().map_err(|e| err("beginning a read transaction", e))?;
        let Some(table) = open_read(&txn, name)? else { return Ok(None) };
        let value = table.get_owned(key).map_err(|e| err(format!("reading table `{name}`"), e))?;
        Ok(value.map(RawBytes::Redb))
    }

    fn range<'a>(
        &'a self,
        table: &TableHandle,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> Result<RawIter<'a>> {
        let name = handle_name(table)?;
        match open_read(&self.begin_read()?, name)? {
            Some(t) => scan(&t, name, lower, upper),
            None => Ok(Box::new(std::iter::empty())),
        }
    }

    fn len(&self, table: &TableHandle) -> Result<u64> {
        let snapshot = RedbSnapshot { txn: self.begin_read()?, tables: RefCell::new(HashMap::new()) };
        snapshot.len(table)
    }

    fn snapshot<'a>(&'a self) -> Result<Box<dyn EngineSnapshot + 'a>> {
        let txn = self.db.read().begin_read().map_err(|e| err("beginning a read transaction", e))?;
        Ok(Box::new(RedbSnapshot { txn, tables: RefCell::new(HashMap::new()) }))
    }

    fn write(&self, batch: &RawBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let db = self.db.read();
        let txn = self.begin_write(&db, self.durability)?;
        {
            let mut tables = Vec::with_capacity(batch.tables().len());
            for handle in batch.tables() {
                let name = handle_name(handle)?;
                let table = txn
                    .open_table(definition(name))
                    .map_err(|e| err(format!("opening table `{name}`"), e))?;
                tables.push((name, table));
            }
            for write in batch.writes() {
                let (name, table) = &mut tables[write.slot];
                match write.value {
                    Some(value) => table.insert(write.key, value).map(drop),
                    None => table.remove(write.key).map(drop),
                }
                .map_err(|e| err(format!("writing table `{name}`"), e))?;
            }
        }
        self.commit(txn, "a write batch")
    }

    fn remove(&self, table: &TableHandle, key: &[u8]) -> Result<bool> {
        let name = handle_name(table)?;
        let db = self.db.read();
        let txn = self.begin_write(&db, self.durability)?;
        let existed = {
            let mut table =
                txn.open_table(definition(name)).map_err(|e| err(format!("opening table `{name}`"), e))?;
            let old = table.remove(key).map_err(|e| err(format!("removing from table `{name}`"), e))?;
            old.is_some()
        };
        self.commit(txn, &format!("a removal from table `{name}`"))?;
        Ok(existed)
    }

    fn clear(&self, table: &TableHandle) -> Result<()> {
        let name = handle_name(table)?;
        let db = self.db.read();
        let txn = self.begin_write(&db, self.durability)?;
        // Deleting and recreating the table in one transaction is atomic and O(1) in pages
        // touched, unlike removing every key.
        txn.delete_table(definition(name)).map_err(|e| err(format!("clearing table `{name}`"), e))?;
        txn.open_table(definition(name)).map_err(|e| err(format!("recreating table `{name}`"), e))?;
        self.commit(txn, &format!("clearing of table `{name}`"))
    }

    fn compact(&self) -> Result<CompactionReport> {
        let before = self.disk_size()?;
        // Make non-durable commits durable first: compaction works on the persistent state.
        self.flush()?;
        let mut db = self.db.write();
        match db.compact() {
            Ok(true) => Ok(CompactionReport::Compacted { before, after: self.disk_size()? }),
            Ok(false) => Ok(CompactionReport::AlreadyCompact { size: before }),
            Err(CompactionError::TransactionInProgress) => Err(StorageError::Busy {
                action: "compaction",
                reason: "redb compacts only when no read snapshot, guard or iterator is alive; drop them and retry"
                    .into(),
            }),
            Err(e) => Err(err("compacting", e)),
        }
    }

    fn flush(&self) -> Result<()> {
        let db = self.db.read();
        let txn = self.begin_write(&db, redb::Durability::Immediate)?;
        self.commit(txn, "a flush")
    }

    fn disk_size(&self) -> Result<u64> {
        std::fs::metadata(&self.file)
            .map(|m| m.len())
            .map_err(|e| StorageError::io("measuring", &self.file, e))
    }

    /// Keys from redb's count (O(1)). redb can tell the bytes of a table, but only by walking
    /// every page of it, which is not cheap: not asked.
    fn table_figures(&self, table: &TableHandle) -> Result<TableFigures> {
        Ok(TableFigures { keys: Some(self.len(table)?), bytes: None })
    }

    /// redb's `check_integrity`: every page against its XXH3 checksum, and the allocator
    /// state. It needs exclusive access, and repairs what it can (so it may write).
    fn verify_checksums(
        &self,
        progress: &mut dyn FnMut(u64, u64),
        problems: &mut Vec<VerifyProblem>,
    ) -> Result<ChecksumCheck> {
        let size = self.disk_size()?;
        progress(0, size);
        let mut db = self.db.write();
        let outcome = db.check_integrity();
        drop(db);
        progress(size, size);
        let damaged = |reason: String| {
            VerifyProblem::in_file(
                None,
                None,
                self.file.clone(),
                0,
                format!("{reason} (redb integrity check)"),
            )
        };
        match outcome {
            Ok(true) => {}
            Ok(false) => problems.push(damaged("redb found damaged pages and repaired the file".into())),
            Err(DatabaseError::TransactionInProgress) => {
                return Ok(ChecksumCheck::NotAvailable {
                    reason: "redb checks its pages only when no snapshot, guard or iterator of the store \
                             is alive, and one was"
                        .into(),
                })
            }
            Err(DatabaseError::Storage(redb::StorageError::Corrupted(reason))) => {
                problems.push(damaged(reason))
            }
            Err(e) => return Err(err("checking integrity", e)),
        }
        Ok(ChecksumCheck::Checked {
            method: "redb's integrity check: XXH3 checksum of every page, allocator state",
            bytes: size,
            records: None,
        })
    }
}

/// A range of `table`. redb's iterator holds its transaction and pages itself, so the result
/// may live as long as the caller wants.
fn scan<'x>(table: &RawTable, name: &str, lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> Result<RawIter<'x>> {
    let name = name.to_owned();
    let range =
        table.range_owned::<&[u8]>((lower, upper)).map_err(|e| err(format!("scanning table `{name}`"), e))?;
    Ok(Box::new(range.map(move |entry| {
        entry
            .map(|(k, v)| (RawBytes::Redb(k), RawBytes::Redb(v)))
            .map_err(|e| err(format!("scanning table `{name}`"), e))
    })))
}

struct RedbSnapshot {
    txn: ReadTransaction,
    /// Tables opened so far: opening costs a lookup in the table tree.
    tables: RefCell<HashMap<String, Option<Arc<RawTable>>>>,
}

impl RedbSnapshot {
    fn table(&self, handle: &TableHandle) -> Result<Option<Arc<RawTable>>> {
        let name = handle_name(handle)?;
        if let Some(table) = self.tables.borrow().get(name) {
            return Ok(table.clone());
        }
        let table = open_read(&self.txn, name)?.map(Arc::new);
        self.tables.borrow_mut().insert(name.to_owned(), table.clone());
        Ok(table)
    }
}

impl EngineSnapshot for RedbSnapshot {
    fn get<'s>(&'s self, table: &TableHandle, key: &[u8]) -> Result<Option<RawBytes<'s>>> {
        let Some(t) = self.table(table)? else { return Ok(None) };
        let name = handle_name(table)?;
        let value = t.get_owned(key).map_err(|e| err(format!("reading table `{name}`"), e))?;
        Ok(value.map(RawBytes::Redb))
    }

    fn range<'s>(
        &'s self,
        table: &TableHandle,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> Result<RawIter<'s>> {
        match self.table(table)? {
            Some(t) => scan(&t, handle_name(table)?, lower, upper),
            None => Ok(Box::new(std::iter::empty())),
        }
    }

    fn len(&self, table: &TableHandle) -> Result<u64> {
        let Some(t) = self.table(table)? else { return Ok(0) };
        let name = handle_name(table)?;
        t.len().map_err(|e| err(format!("counting table `{name}`"), e))
    }
}
