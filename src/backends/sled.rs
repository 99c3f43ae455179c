//! sled 0.34: one sled `Tree` per typed-kv table.
//!
//! sled lends values as `IVec`s (reference counted, or inline when small), so reads copy
//! nothing. Writes of one table go through a `sled::Batch`, writes across tables through a
//! sled transaction over their trees; both are atomic, also across a crash.
//!
//! sled has no read snapshots, so they are emulated with an engine-wide `RwLock`: every write
//! takes it exclusively, every snapshot holds it shared for its whole life. A snapshot
//! therefore sees no concurrent write, and **writers wait while any snapshot is alive**. A
//! thread that holds a snapshot and writes to the same store would wait for itself forever;
//! that is reported as [`StorageError::Busy`] instead. Reads outside a snapshot take no lock:
//! a range scan may or may not see writes made while it runs.
//!
//! A `Tree` that was dropped stays dead in sled (every access fails with
//! `CollectionNotFound`), but typed tables built before a `drop_table` must keep working on
//! an empty table of that name, as on the other engines: such handles are resolved again by
//! name.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use sled::transaction::{abort, TransactionError, Transactional, TransactionalTree};
use sled::{IVec, Tree};

use super::{
    dir_size, CompactionReport, Engine, EngineOptions, EngineSnapshot, RawBatch, RawBytes, RawIter,
    TableHandle,
};
use crate::config::{DatabaseBackend, Durability};
use crate::error::{Result, StorageError};

const BACKEND: DatabaseBackend = DatabaseBackend::Sled;
/// sled's own default tree: always present, never a typed-kv table.
const DEFAULT_TREE: &[u8] = b"__sled__default";
/// Prefix escaping table names that would collide with [`DEFAULT_TREE`] (or look escaped), so
/// that every table name maps to its own tree.
const ESCAPE: u8 = b'~';
/// What sled says when another process (or another `Db` in this one) holds the store.
const LOCK_MESSAGE: &str = "could not acquire lock";

/// Source of engine ids, to tell which engines a thread holds snapshots of.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Ids of the engines this thread holds a snapshot of (one entry per snapshot). Snapshot
    /// guards cannot leave their thread, so this is exact.
    static SNAPSHOTS_HELD: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

fn err(action: impl Into<String>, e: sled::Error) -> StorageError {
    match e {
        // sled checked a CRC and found its bytes damaged.
        e @ sled::Error::Corruption { .. } => {
            StorageError::EngineCorrupt { backend: BACKEND, action: action.into(), source: Box::new(e) }
        }
        e => StorageError::engine(BACKEND, action, e),
    }
}

/// The tree of a handle: sled handles carry the tree itself.
fn handle_tree(table: &TableHandle) -> Result<&Tree> {
    #[allow(unreachable_patterns)]
    match table {
        TableHandle::Sled(tree) => Ok(tree),
        _ => Err(TableHandle::foreign(BACKEND)),
    }
}

/// The tree name of table `name`.
fn tree_name(name: &str) -> Vec<u8> {
    let bytes = name.as_bytes();
    let mut tree = Vec::with_capacity(bytes.len() + 1);
    if bytes == DEFAULT_TREE || bytes.first() == Some(&ESCAPE) {
        tree.push(ESCAPE);
    }
    tree.extend_from_slice(bytes);
    tree
}

/// The table name of tree `tree`, `None` for sled's default tree.
fn table_name(tree: &[u8]) -> Option<String> {
    if tree == DEFAULT_TREE {
        return None;
    }
    let bytes = tree.strip_prefix(&[ESCAPE]).unwrap_or(tree);
    Some(String::from_utf8_lossy(bytes).into_owned())
}

/// The table name of a tree, for error messages.
pub(super) fn display_name(tree: &Tree) -> String {
    table_name(&tree.name()).unwrap_or_else(|| "(sled default tree)".to_owned())
}

/// Whether this thread holds a snapshot of engine `id`.
fn holds_snapshot(id: u64) -> bool {
    SNAPSHOTS_HELD.with(|held| held.borrow().contains(&id))
}

/// A sled database; see the module documentation for how snapshots and writes interact.
pub(crate) struct SledEngine {
    db: sled::Db,
    /// sled's data file, kept open to `fsync` it: sled's own flush ends in
    /// `sync_file_range`, which flushes neither the disk's cache nor the file's metadata.
    data_file: std::fs::File,
    dir: PathBuf,
    durability: Durability,
    /// Writes take it exclusively, snapshots shared: sled has no snapshots of its own.
    lock: RwLock<()>,
    /// Tells this engine's snapshots apart from other engines' in [`SNAPSHOTS_HELD`].
    id: u64,
}

/// Opens sled's database in `dir`.
///
/// sled releases its file lock only when its last background task ends, which may be a
/// moment after the previous `Db` was dropped. The caller holds typed-kv's own lock on the
/// store, so no other typed-kv user has it: a sled lock is then that lingering release, or a
/// process that opened the directory without typed-kv. Retry briefly before saying "locked".
fn open_db(dir: &Path) -> Result<sled::Db> {
    const RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(3);
    let started = std::time::Instant::now();
    loop {
        match sled::Config::new().path(dir).open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(ref io)) if io.to_string().contains(LOCK_MESSAGE) => {
                if started.elapsed() > RETRY_FOR {
                    return Err(StorageError::Locked { path: dir.to_owned(), backend: BACKEND });
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            // At open, `Unsupported` is sled finding files of a format it cannot read.
            Err(e @ sled::Error::Unsupported(_)) => {
                let action = format!("opening {}", dir.display());
                return Err(StorageError::EngineCorrupt { backend: BACKEND, action, source: Box::new(e) });
            }
            Err(other) => return Err(err(format!("opening {}", dir.display()), other)),
        }
    }
}

/// Removes what a crash can leave half-written in sled's directory and sled cannot read
/// again. The caller holds typed-kv's lock on the store, so no other process writes here.
///
/// **conf**: sled 0.34 writes `conf` in place (its text, then its CRC: two writes, no rename)
/// when it creates a store, before it creates its data file `db`. A kill between the two
/// leaves a `conf` that fails to parse on every later open ("Read corrupted data"). Without
/// `db` no data was ever written, so such a `conf` is removed and sled writes it again.
///
/// **Snapshots**: sled 0.34 writes a snapshot to `snap.<lsn>.generating`, syncs it and renames it to
/// `snap.<lsn>`, keeping the previous snapshot until then. But when it opens, it takes the
/// last of all files named `snap.*` except `*.in___motion` (the name of unfinished snapshots
/// in older versions), so a `.generating` file left by a crash is read as the newest
/// snapshot, fails its CRC, and the open fails with "Read corrupted data" forever
/// (spacejam/sled#1527). Such a file is unfinished by construction; without it sled reads the
/// previous snapshot and replays its log from there.
fn remove_interrupted_writes(dir: &Path) -> Result<()> {
    let conf = dir.join("conf");
    if conf.exists() && !dir.join("db").exists() {
        std::fs::remove_file(&conf).map_err(|e| StorageError::io("removing", &conf, e))?;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StorageError::io("listing", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("listing", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| StorageError::io("removing", &path, e))?;
        }
    }
    Ok(())
}

impl SledEngine {
    /// Opens (or creates) the database in `dir`.
    pub(crate) fn open(dir: &Path, options: &EngineOptions) -> Result<Self> {
        if options.must_exist {
            // sled creates whatever of these is missing: an empty store in place of the data.
            for name in ["conf", "db"] {
                let path = dir.join(name);
                if !path.exists() {
                    return Err(StorageError::MissingEngineFile { path, backend: BACKEND });
                }
            }
        }
        remove_interrupted_writes(dir)?;
        let db = open_db(dir)?;
        let data_path = dir.join("db");
        let data_file =
            std::fs::File::open(&data_path).map_err(|e| StorageError::io("opening", data_path, e))?;
        Ok(Self {
            db,
            data_file,
            dir: dir.to_owned(),
            durability: options.durability,
            lock: RwLock::new(()),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Takes the write lock. A thread holding a snapshot of this engine would wait for
    /// itself forever: that is an error instead.
    fn write_guard(&self) -> Result<RwLockWriteGuard<'_, ()>> {
        if holds_snapshot(self.id) {
            return Err(StorageError::Busy {
                action: "writing",
                reason: "this thread holds a read snapshot of this sled store, and on sled writers \
                         wait for snapshots to end; drop it (or write from another thread) first"
                    .into(),
            });
        }
        Ok(self.lock.write())
    }

    /// Makes writes durable when the storage asks for it on every commit. Called after the
    /// write lock is released, so that concurrent writers can share one fsync.
    fn sync(&self) -> Result<()> {
        match self.durability {
            Durability::Immediate => self.flush(),
            Durability::None => Ok(()),
        }
    }

    /// The tree now named like `tree`, created if it was dropped. Only under the write lock,
    /// so no drop can race it.
    fn live_tree(&self, tree: &Tree) -> Result<Tree> {
        self.db.open_tree(tree.name()).map_err(|e| err(format!("opening table `{}`", display_name(tree)), e))
    }

    /// The tree now named `name`, if there is one; never creates one. The caller holds
    /// [`lock`](Self::lock), so that no drop can race between the check and the opening.
    fn existing_tree(&self, name: &IVec) -> sled::Result<Option<Tree>> {
        if self.db.tree_names().contains(name) {
            self.db.open_tree(name).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Runs the read `op` on the handle's tree; if sled reports the tree dropped, on the tree
    /// of that name now, or returns `None` if there is none.
    fn read_tree<T>(&self, tree: &Tree, op: impl Fn(&Tree) -> sled::Result<T>) -> sled::Result<Option<T>> {
        match op(tree) {
            Err(sled::Error::CollectionNotFound(_)) => {
                // Recursive: this thread may hold a snapshot (a read guard) already.
                let _guard = self.lock.read_recursive();
                match self.existing_tree(&tree.name())? {
                    Some(current) => op(&current).map(Some),
                    None => Ok(None),
                }
            }
            other => other.map(Some),
        }
    }

    /// Entries of the handle's tree within the bounds.
    fn scan<'x>(&self, tree: &Tree, lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> Result<RawIter<'x>> {
        let name = display_name(tree);
        let mut iter = tree.range::<&[u8], _>((lower, upper));
        let mut first = iter.next();
        if let Some(Err(sled::Error::CollectionNotFound(_))) = first {
            // The handle's tree was dropped: scan the tree of that name now, if any. sled
            // iterators do their first lookup lazily, so this is where it shows.
            let _guard = self.lock.read_recursive();
            let current =
                self.existing_tree(&tree.name()).map_err(|e| err(format!("opening table `{name}`"), e))?;
            let Some(current) = current else { return Ok(Box::new(std::iter::empty())) };
            iter = current.range::<&[u8], _>((lower, upper));
            first = iter.next();
        }
        let Some(first) = first else { return Ok(Box::new(std::iter::empty())) };
        // sled's iterator repeats an error forever: stop after the first one.
        let mut failed = false;
        Ok(Box::new(std::iter::once(first).chain(iter).map_while(move |entry| {
            if failed {
                return None;
            }
            failed = entry.is_err();
            Some(
                entry
                    .map(|(k, v)| (RawBytes::Sled(k), RawBytes::Sled(v)))
                    .map_err(|e| err(format!("scanning table `{name}`"), e)),
            )
        })))
    }

    /// Number of entries of the handle's tree: a full scan, sled keeps no count.
    fn count(&self, tree: &Tree) -> Result<u64> {
        let mut n = 0;
        for entry in self.scan(tree, Bound::Unbounded, Bound::Unbounded)? {
            entry?;
            n += 1;
        }
        Ok(n)
    }

    /// The value under `key` in the handle's tree.
    fn read(&self, tree: &Tree, key: &[u8]) -> Result<Option<IVec>> {
        let value = self
            .read_tree(tree, |t| t.get(key))
            .map_err(|e| err(format!("reading table `{}`", display_name(tree)), e))?;
        Ok(value.flatten())
    }
}

impl Engine for SledEngine {
    fn backend(&self) -> DatabaseBackend {
        BACKEND
    }

    fn open_table(&self, name: &str, _value_align: usize) -> Result<TableHandle> {
        let tree =
            self.db.open_tree(tree_name(name)).map_err(|e| err(format!("creating table `{name}`"), e))?;
        // The tree's creation is a metadata write like any other.
        self.sync()?;
        Ok(TableHandle::Sled(tree))
    }

    /// Opens the tree only if it exists (`open_tree` would create it), without syncing.
    fn table_for_reading(&self, name: &str) -> Result<Option<TableHandle>> {
        let _guard = self.lock.read_recursive();
        let tree = self
            .existing_tree(&IVec::from(tree_name(name)))
            .map_err(|e| err(format!("opening table `{name}`"), e))?;
        Ok(tree.map(TableHandle::Sled))
    }

    fn drop_table(&self, name: &str) -> Result<bool> {
        let existed = {
            let _guard = self.write_guard()?;
            self.db.drop_tree(tree_name(name)).map_err(|e| err(format!("deleting table `{name}`"), e))?
        };
        if existed {
            self.sync()?;
        }
        Ok(existed)
    }

    fn get<'a>(&'a self, table: &TableHandle, key: &[u8]) -> Result<Option<RawBytes<'a>>> {
        Ok(self.read(handle_tree(table)?, key)?.map(RawBytes::Sled))
    }

    /// No lock is taken: sled iterators may see writes made during the scan.
    fn range<'a>(
        &'a self,
        table: &TableHandle,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> Result<RawIter<'a>> {
        self.scan(handle_tree(table)?, lower, upper)
    }

    /// O(n): sled counts by scanning the whole tree.
    fn len(&self, table: &TableHandle) -> Result<u64> {
        self.count(handle_tree(table)?)
    }

    /// Holds the engine's lock shared until dropped: writers wait meanwhile.
    fn snapshot<'a>(&'a self) -> Result<Box<dyn EngineSnapshot + 'a>> {
        // A second snapshot on this thread must not queue behind a waiting writer, which
        // waits for the first one: that would deadlock.
        let guard = if holds_snapshot(self.id) { self.lock.read_recursive() } else { self.lock.read() };
        SNAPSHOTS_HELD.with(|held| held.borrow_mut().push(self.id));
        Ok(Box::new(SledSnapshot {
            engine: self,
            _guard: guard,
            _held: HeldMark { id: self.id, _thread: PhantomData },
        }))
    }

    fn write(&self, batch: &RawBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        {
            let _guard = self.write_guard()?;
            let trees =
                batch.tables().map(|t| self.live_tree(handle_tree(t)?)).collect::<Result<Vec<_>>>()?;
            if trees.is_empty() {
                // Writes without a table: an inconsistent batch, and sled's transaction over
                // no tree would panic.
                return Err(StorageError::engine(
                    BACKEND,
                    "writing a batch",
                    "the batch has writes but no table",
                ));
            }
            if let [tree] = trees.as_slice() {
                // One table: a sled batch is atomic too, and cheaper than a transaction,
                // which reads every key's old value.
                let mut writes = sled::Batch::default();
                for write in batch.writes() {
                    match write.value {
                        Some(value) => writes.insert(write.key, value),
                        None => writes.remove(write.key),
                    }
                }
                tree.apply_batch(writes)
                    .map_err(|e| err(format!("writing table `{}`", display_name(tree)), e))?;
            } else {
                Transactional::<()>::transaction(trees.as_slice(), |views: &Vec<TransactionalTree>| {
                    for write in batch.writes() {
                        let Some(view) = views.get(write.slot) else { return abort(()) };
                        match write.value {
                            Some(value) => view.insert(write.key, value)?,
                            None => view.remove(write.key)?,
                        };
                    }
                    Ok(())
                })
                .map_err(|e| match e {
                    TransactionError::Storage(e) => err("writing a batch across tables", e),
                    TransactionError::Abort(()) => super::missing_slot(BACKEND),
                })?;
            }
        }
        self.sync()
    }

    fn remove(&self, table: &TableHandle, key: &[u8]) -> Result<bool> {
        let tree = handle_tree(table)?;
        let existed = {
            let _guard = self.write_guard()?;
            // A removal from a dropped table finds nothing, and needs not recreate it.
            let removed = match tree.remove(key) {
                Err(sled::Error::CollectionNotFound(_)) => match self.existing_tree(&tree.name()) {
                    Ok(Some(current)) => current.remove(key),
                    Ok(None) => Ok(None),
                    Err(e) => Err(e),
                },
                other => other,
            };
            removed.map_err(|e| err(format!("removing from table `{}`", display_name(tree)), e))?.is_some()
        };
        if existed {
            self.sync()?;
        }
        Ok(existed)
    }

    /// Atomic: one batch removing every key, under the write lock so that no write lands in
    /// between. Holds all keys in memory meanwhile.
    fn clear(&self, table: &TableHandle) -> Result<()> {
        let tree = handle_tree(table)?;
        {
            let _guard = self.write_guard()?;
            let tree = self.live_tree(tree)?;
            let name = display_name(&tree);
            let mut removals = sled::Batch::default();
            for key in tree.iter().keys() {
                removals.remove(key.map_err(|e| err(format!("clearing table `{name}`"), e))?);
            }
            tree.apply_batch(removals).map_err(|e| err(format!("clearing table `{name}`"), e))?;
        }
        self.sync()
    }

    /// A writer on another thread waits for this thread's snapshots to end, which would
    /// never happen if this thread waits for it.
    fn may_await_writer(&self) -> Result<()> {
        if holds_snapshot(self.id) {
            return Err(StorageError::Busy {
                action: "streaming into a table",
                reason: "this thread holds a read snapshot of this sled store (e.g. inside `with_stream`), \
                         and on sled writers wait for snapshots to end, so the stream's writer would wait \
                         for this thread forever; collect the entries and write them once the snapshot \
                         is dropped"
                    .into(),
            });
        }
        Ok(())
    }

    fn compact(&self) -> Result<CompactionReport> {
        Ok(CompactionReport::NotSupported {
            reason: "sled rewrites its log segments in the background; it has no explicit compaction",
        })
    }

    /// sled's `flush` writes everything out (its promise: what was written before it returns
    /// is recovered after a process crash); the `fsync` of its data file makes that hold
    /// after a power loss too, as redb's comparison does for raw sled.
    fn flush(&self) -> Result<()> {
        self.db.flush().map(drop).map_err(|e| err("flushing", e))?;
        self.data_file.sync_all().map_err(|e| StorageError::io("syncing", self.dir.join("db"), e))
    }

    fn disk_size(&self) -> Result<u64> {
        dir_size(&self.dir)
    }
}

/// Records in [`SNAPSHOTS_HELD`] that this thread holds a snapshot, until dropped. Not `Send`,
/// like the guard it accompanies, so it is dropped on the thread that registered it.
struct HeldMark {
    id: u64,
    _thread: PhantomData<*const ()>,
}

impl Drop for HeldMark {
    fn drop(&mut self) {
        SNAPSHOTS_HELD.with(|held| {
            let mut held = held.borrow_mut();
            if let Some(i) = held.iter().position(|&id| id == self.id) {
                held.swap_remove(i);
            }
        });
    }
}

/// A "snapshot": the engine's lock held shared, so that nothing is written while it lives.
struct SledSnapshot<'a> {
    engine: &'a SledEngine,
    _guard: RwLockReadGuard<'a, ()>,
    _held: HeldMark,
}

impl EngineSnapshot for SledSnapshot<'_> {
    fn get<'s>(&'s self, table: &TableHandle, key: &[u8]) -> Result<Option<RawBytes<'s>>> {
        Ok(self.engine.read(handle_tree(table)?, key)?.map(RawBytes::Sled))
    }

    fn range<'s>(
        &'s self,
        table: &TableHandle,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> Result<RawIter<'s>> {
        self.engine.scan(handle_tree(table)?, lower, upper)
    }

    /// O(n), as outside a snapshot.
    fn len(&self, table: &TableHandle) -> Result<u64> {
        self.engine.count(handle_tree(table)?)
    }
}
