//! typed-kv's native engine: a log-structured, crash-safe store of byte strings whose reads
//! are zero-copy.
//!
//! It works on raw bytes and knows nothing of the typed layer, so it can be used (and lifted
//! out) on its own. The file format is specified byte by byte in `docs/design.md`.
//!
//! # What it is
//!
//! - **Segments are the log.** Every commit appends one batch of records (CRC-32C each) to
//!   the active segment file; segments rotate at [`Options::segment_size`]. Values of tables
//!   written with [`ValueAlign::Sixteen`] start at 16-byte-aligned file offsets, so an rkyv
//!   archive is validated and read in place.
//! - **Reads are zero-copy.** Segments are memory-mapped; a [`Value`] is a reference-counted
//!   segment plus an offset, valid across later writes, rotation and compaction. Every read
//!   that hands out a value first checks its record's CRC-32C ([`Options::verify_reads`]).
//! - **Index in memory.** Per table, immutable sorted runs (key → segment, offset, length):
//!   each commit adds its changes as a new run, small runs are merged as they come and the
//!   recent ones into a base run once they hold a quarter of it. Every commit publishes a new
//!   version with one atomic swap: readers and snapshots never wait for the writer, and the
//!   writer never waits for them.
//! - **Atomic batches, group commit.** A batch's records all survive a crash or none do.
//!   With [`SyncMode::Always`] a commit returns once it is on stable storage, and concurrent
//!   committers share one `fdatasync`.
//! - **Recovery** scans the log from the last index snapshot (hint file); a torn tail of the
//!   newest segment is cut off; damage anywhere else is an [`Error::Corrupt`] naming file and
//!   offset (or, with [`Options::repair`], dropped and reported).
//! - **Compaction** rewrites the live records of mostly-dead segments at the head of the log
//!   and unlinks the old files; deleted keys never come back.
//!
//! # What it is not
//!
//! - Not multi-process: the directory is locked by one [`Db`]; a second gets
//!   [`Error::Locked`].
//! - Not bounded in memory by the data: every key is in memory (about 72 bytes per key of up
//!   to 30 bytes, more for longer keys; see [`Stats::index_bytes`]). Values stay on disk (in
//!   the page cache).
//! - Not safe against other programs writing its files: mapped files that change under the
//!   engine break its reads. Nobody but the engine may write in its directory.
//!
//! # Example
//!
//! ```
//! use typed_kv::engine::{Db, Op, Options, ValueAlign};
//!
//! let dir = tempfile::tempdir()?;
//! let db = Db::open(dir.path(), Options::default())?;
//! let users = db.table("users")?;
//! db.write(&[
//!     Op::Put { table: &users, key: b"ada", value: b"Lovelace", align: ValueAlign::Packed },
//!     Op::Put { table: &users, key: b"alan", value: b"Turing", align: ValueAlign::Packed },
//! ])?;
//! assert_eq!(db.get(&users, b"ada")?.as_deref(), Some(&b"Lovelace"[..]));
//! let snapshot = db.snapshot();
//! let names: Vec<&[u8]> = snapshot.range(&users, ..).map(|entry| entry.map(|(key, _)| key)).collect::<Result<_, _>>()?;
//! assert_eq!(names, [&b"ada"[..], &b"alan"[..]]);
//! assert!(db.delete(&users, b"ada")?);
//! assert_eq!(snapshot.len(&users), 2); // the snapshot still sees both
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod compaction;
mod error;
// For the fuzz targets in `fuzz/` only (cargo feature `fuzzing`): not an API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
#[allow(missing_docs)]
pub mod fuzzing;
mod hint;
mod index;
pub mod io;
mod prefetch;
mod read;
mod record;
mod recovery;
mod segment;
mod table_map;
mod tables;
mod verify;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::{Condvar, Mutex, MutexGuard};

pub use compaction::CompactionStats;
pub use error::{Error, Result};
pub use read::{Key, OwnedRange, Range, Snapshot, Value};
pub use record::{MAX_KEY_LEN, MAX_VALUE_LEN};
pub use recovery::RecoveryReport;
pub use tables::MAX_TABLE_NAME_LEN;
pub use verify::{VerifyProblem, VerifyReport};

use index::Version;
use io::{OsVfs, Vfs};
use writer::{Placement, Syncer, Writer};

/// When a commit reaches stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// Before the commit returns (`fdatasync`; concurrent commits share one). A commit that
    /// returned survives a crash. Readers see a commit only once it is synced.
    #[default]
    Always,
    /// Every interval, in the background. A crash loses at most the commits of the last
    /// interval (and never part of one); they are visible to readers at once.
    Periodic(Duration),
    /// Only on [`Db::flush`] and when the engine is closed. A crash may lose every commit
    /// since (never part of one).
    Never,
}

/// Where a value starts in its segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValueAlign {
    /// Right after its key: the most compact.
    #[default]
    Packed,
    /// At a 16-byte-aligned offset (zero padding after the key), so formats that read in
    /// place (rkyv) get aligned bytes without a copy.
    Sixteen,
}

/// How a [`Db`] is opened.
#[derive(Clone)]
pub struct Options {
    /// Durability of commits. Default: [`SyncMode::Always`].
    pub sync: SyncMode,
    /// Size at which segments rotate (a larger batch gets a segment of its own). Default
    /// 64 MiB.
    pub segment_size: u64,
    /// Write a hint (index snapshot) after this many bytes of log, in the background, so a
    /// crash does not force a full scan. 0: only at close and after compaction. Default
    /// 256 MiB.
    pub checkpoint_bytes: u64,
    /// Compact a sealed segment in the background once this fraction of it is dead. 0.0
    /// disables background compaction. Default 0.5.
    pub compaction_threshold: f64,
    /// On reopen, drop damaged batches of sealed segments (reported in
    /// [`RecoveryReport`]) instead of failing with [`Error::Corrupt`]. Default `false`.
    pub repair: bool,
    /// When a small batch (under 64 KiB), or one at least 64 times this size, would grow the
    /// newest segment's file, write this many zero bytes after it in the same call. Later small commits then land inside the
    /// file instead of growing it, and their `fdatasync` need not also commit the file's new
    /// size to the file system's journal: about 1.5× faster durable single-key commits on
    /// ext4. Recovery reads zeros as the end of the log; a segment is cut back to its last
    /// record when sealed and at a clean close. 0 turns this off. Default 1 MiB.
    pub preallocate: u64,
    /// Check the CRC-32C of a value's record on every read that hands the value out
    /// ([`Db::get`], [`Snapshot::get`], [`Snapshot::get_value`], [`Range`], [`OwnedRange`]),
    /// so that a damaged byte of a segment is [`Error::Corrupt`] and never served. Recovery
    /// does not read the records a hint covers, so without this check a flipped byte there
    /// is handed out as the value. The check reads the record's header and key besides the
    /// value, and hashes them all (hardware CRC-32C): 10-entry range scans take 15–17 %
    /// longer (`docs/benchmarks.md`, "The read path's CRC check"). `false` gives that up:
    /// reads trust the bytes on disk and damage goes unnoticed until [`Db::verify`].
    /// Default `true`.
    pub verify_reads: bool,
    /// The file system (tests inject failures through [`io::FaultyVfs`]).
    pub vfs: Arc<dyn Vfs>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sync: SyncMode::Always,
            segment_size: 64 << 20,
            checkpoint_bytes: 256 << 20,
            compaction_threshold: 0.5,
            repair: false,
            preallocate: 1 << 20,
            verify_reads: true,
            vfs: Arc::new(OsVfs),
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("sync", &self.sync)
            .field("segment_size", &self.segment_size)
            .field("checkpoint_bytes", &self.checkpoint_bytes)
            .field("compaction_threshold", &self.compaction_threshold)
            .field("repair", &self.repair)
            .field("preallocate", &self.preallocate)
            .field("verify_reads", &self.verify_reads)
            .field("vfs", &self.vfs)
            .finish()
    }
}

/// A table of a [`Db`]: its id and name. Ids are never reused, so a handle to a dropped
/// table never reaches a table created later under the same name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Table {
    id: u32,
    name: Arc<str>,
}

impl Table {
    /// A handle from its parts (the typed layer caches ids).
    pub(crate) fn from_parts(id: u32, name: Arc<str>) -> Table {
        Table { id, name }
    }

    /// The table's id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// One write of a batch.
#[derive(Debug, Clone, Copy)]
pub enum Op<'a> {
    /// Sets `key` to `value`.
    Put {
        /// The table.
        table: &'a Table,
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
        /// Where the value starts in the file.
        align: ValueAlign,
    },
    /// Removes `key` (nothing if absent).
    Delete {
        /// The table.
        table: &'a Table,
        /// The key.
        key: &'a [u8],
    },
    /// Removes every key of the table.
    Clear {
        /// The table.
        table: &'a Table,
    },
}

/// Figures about a [`Db`], cheap to take.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Tables.
    pub tables: usize,
    /// Keys, all tables.
    pub keys: u64,
    /// Segment files.
    pub segments: usize,
    /// Bytes of segment files.
    pub log_bytes: u64,
    /// Approximate bytes of live records (keys, values, headers).
    pub live_bytes: u64,
    /// `log_bytes - live_bytes`: what compaction can reclaim.
    pub dead_bytes: u64,
    /// Heap bytes of the index: 72 bytes per entry (a 32-byte key, inline up to 30 bytes, a
    /// location, and the key's 8-byte prefix), keys over 30 bytes, fences and the filters of
    /// recent runs. Entries superseded since the last merge count until it drops them.
    pub index_bytes: u64,
    /// `fdatasync` calls on segments.
    pub fsyncs: u64,
    /// Compactions run (explicit and background).
    pub compactions: u64,
    /// Bytes of live records rewritten by compaction.
    pub bytes_rewritten: u64,
    /// Hints (index snapshots) written.
    pub hints_written: u64,
    /// What the last reopen did.
    pub recovery: RecoveryReport,
    /// Why writes are refused, if an I/O error poisoned the engine.
    pub poisoned: Option<String>,
}

#[derive(Default)]
struct Counters {
    fsyncs: AtomicU64,
    compactions: AtomicU64,
    bytes_rewritten: AtomicU64,
    hints_written: AtomicU64,
}

/// How long the engine waits without a commit before merging recent index runs.
const INDEX_IDLE: Duration = Duration::from_millis(50);

/// What the maintenance thread is asked to do.
#[derive(Default)]
struct Maintenance {
    shutdown: bool,
    wake: bool,
}

/// The shared state of a [`Db`].
pub(crate) struct Inner {
    dir: PathBuf,
    options: Options,
    current: ArcSwap<Version>,
    writer: Mutex<Writer>,
    syncer: Syncer,
    poisoned: AtomicBool,
    poison_cause: Mutex<Option<String>>,
    counters: Counters,
    recovery: RecoveryReport,
    maintenance: Mutex<Maintenance>,
    maintenance_cv: Condvar,
    /// One compaction at a time.
    compaction: Mutex<()>,
    /// One checkpoint at a time: every hint of one version is written through the same
    /// `.tmp` name, so two at once would remove and rename each other's file.
    checkpointing: Mutex<()>,
    /// Held (locked) for the life of the engine.
    _lock: std::fs::File,
}

/// A native engine, open on one directory. Dropping it syncs, writes a hint and releases
/// the directory.
pub struct Db {
    inner: Arc<Inner>,
    maintenance: Option<JoinHandle<()>>,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db").field("dir", &self.inner.dir).finish()
    }
}

impl Db {
    /// Opens the engine in `dir` (created if missing), recovering what the log holds.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Db> {
        let dir = dir.as_ref().to_owned();
        let recovered = recovery::open(&dir, &options)?;
        let synced = recovered.writer.working.seq;
        let inner = Arc::new(Inner {
            current: ArcSwap::from_pointee(recovered.writer.working.clone()),
            writer: Mutex::new(recovered.writer),
            syncer: Syncer::new(synced),
            poisoned: AtomicBool::new(false),
            poison_cause: Mutex::new(None),
            counters: Counters::default(),
            recovery: recovered.report,
            maintenance: Mutex::new(Maintenance::default()),
            maintenance_cv: Condvar::new(),
            compaction: Mutex::new(()),
            checkpointing: Mutex::new(()),
            _lock: recovered.lock,
            dir,
            options,
        });
        let worker = Arc::clone(&inner);
        let maintenance = std::thread::Builder::new()
            .name("typed-kv-maintenance".to_owned())
            .spawn(move || worker.maintain())
            .map_err(|e| Error::io("starting the maintenance thread for", &inner.dir, e))?;
        Ok(Db { inner, maintenance: Some(maintenance) })
    }

    /// The engine's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The table `name`, created (durably) if missing.
    pub fn table(&self, name: &str) -> Result<Table> {
        if let Some(table) = self.find_table(name) {
            return Ok(table);
        }
        tables::check_name(name)?;
        let inner = &self.inner;
        let mut w = inner.lock_writer()?;
        if let Some(&id) = w.working.names.get(name) {
            return Ok(Table { id, name: Arc::from(name) });
        }
        let id = w.tables.next_id;
        let mut dir = w.tables.clone();
        dir.next_id = id.checked_add(1).ok_or_else(|| Error::InvalidTableName {
            name: name.to_owned(),
            reason: "the engine has run out of table ids",
        })?;
        dir.tables.push((id, name.to_owned()));
        inner.change_tables(&mut w, dir, |version| {
            let name: Arc<str> = Arc::from(name);
            version.names.insert(Arc::clone(&name), id);
            version.tables.insert(id, index::TableState { name, map: index::TableMap::new() });
        })?;
        Ok(Table { id, name: Arc::from(name) })
    }

    /// The table `name`, if it exists.
    pub fn find_table(&self, name: &str) -> Option<Table> {
        let version = self.inner.current.load();
        version.names.get(name).map(|&id| Table { id, name: Arc::from(name) })
    }

    /// Whether a table with this id exists now.
    pub(crate) fn has_table_id(&self, id: u32) -> bool {
        self.inner.current.load().tables.contains_key(&id)
    }

    /// Every table, by name.
    pub fn tables(&self) -> Vec<Table> {
        let version = self.inner.current.load();
        version.names.iter().map(|(name, &id)| Table { id, name: Arc::clone(name) }).collect()
    }

    /// Drops table `name` and its keys; `false` if there was none.
    pub fn drop_table(&self, name: &str) -> Result<bool> {
        let inner = &self.inner;
        let mut w = inner.lock_writer()?;
        let Some(&id) = w.working.names.get(name) else { return Ok(false) };
        let mut dir = w.tables.clone();
        dir.tables.retain(|(t, _)| *t != id);
        let mut removed = index::TableMap::new();
        inner.change_tables(&mut w, dir, |version| {
            version.names.remove(name);
            if let Some(state) = version.tables.remove(&id) {
                removed = state.map;
            }
        })?;
        for (key, loc) in removed.held() {
            w.usage.remove(key.as_bytes().len(), loc);
        }
        Ok(true)
    }

    /// The value under `key` in `table`, read in place. Never waits for a writer. Unless
    /// [`Options::verify_reads`] is off, the CRC-32C of the value's record is checked first:
    /// a record that is not what was written is [`Error::Corrupt`] naming the file, the
    /// offset, the table and the key.
    #[inline]
    pub fn get(&self, table: &Table, key: &[u8]) -> Result<Option<Value>> {
        self.get_by_id(table.id, key)
    }

    /// [`get`](Self::get) by table id.
    #[inline]
    pub(crate) fn get_by_id(&self, table: u32, key: &[u8]) -> Result<Option<Value>> {
        let version = self.inner.current.load();
        let Some((segment, loc)) = version.lookup(table, key) else { return Ok(None) };
        read::checked_value(&version, segment, table, key, &loc, self.inner.options.verify_reads)?;
        Ok(Some(Value::new(segment, &loc)))
    }

    /// A consistent view of every table, as of the last published commit.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot { version: self.inner.current.load_full(), verify: self.inner.options.verify_reads }
    }

    /// Applies `ops` atomically, in order (a later op on a key wins), with the engine's
    /// [`SyncMode`].
    pub fn write(&self, ops: &[Op<'_>]) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut w = self.inner.lock_writer()?;
        let seq = self.inner.append(&mut w, ops)?;
        self.inner.finish(w, seq)
    }

    /// Removes `key` from `table`; whether it was there (decided atomically with the write).
    pub fn delete(&self, table: &Table, key: &[u8]) -> Result<bool> {
        let mut w = self.inner.lock_writer()?;
        let present = w.working.table(table.id).is_some_and(|t| t.map.contains_key(key));
        if !present {
            return Ok(false);
        }
        let seq = self.inner.append(&mut w, &[Op::Delete { table, key }])?;
        self.inner.finish(w, seq)?;
        Ok(true)
    }

    /// Makes every commit so far durable (whatever the [`SyncMode`]).
    pub fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    /// Rewrites every segment (the active one is sealed first) so the log holds only live
    /// records, and deletes the hint files, which may point into the deleted segments (the
    /// next [`checkpoint`](Self::checkpoint) or clean close writes a new one).
    pub fn compact(&self) -> Result<CompactionStats> {
        compaction::compact(&self.inner, compaction::Scope::Everything)
    }

    /// Writes a hint (index snapshot) now, so that the next open is fast even after a crash.
    pub fn checkpoint(&self) -> Result<()> {
        self.inner.checkpoint()
    }

    /// Figures about the engine.
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// Bytes of the engine's files.
    pub fn disk_size(&self) -> Result<u64> {
        let mut total = 0;
        let names = self
            .inner
            .options
            .vfs
            .list(&self.inner.dir)
            .map_err(|e| Error::io("listing", &self.inner.dir, e))?;
        for name in names {
            let path = self.inner.dir.join(&name);
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() => total += meta.len(),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("measuring", path, e)),
            }
        }
        Ok(total)
    }
}

impl Drop for Db {
    /// A clean close: stop maintenance, sync, write a hint. Errors are dropped: the log is
    /// the truth and the next open recovers from it.
    fn drop(&mut self) {
        {
            let mut m = self.inner.maintenance.lock();
            m.shutdown = true;
            self.inner.maintenance_cv.notify_all();
        }
        if let Some(handle) = self.maintenance.take() {
            let _ = handle.join();
        }
        if !self.inner.poisoned.load(Ordering::Acquire) && self.inner.flush().is_ok() {
            let _ = self.inner.checkpoint();
            // Leave no preallocated zeros behind: a clean store's files end at their data.
            let _ = self.inner.writer.lock().trim_and_sync();
        }
    }
}

impl Inner {
    fn placement(&self) -> Placement<'_> {
        Placement {
            vfs: &*self.options.vfs,
            dir: &self.dir,
            segment_size: self.options.segment_size,
            preallocate: self.options.preallocate,
        }
    }

    /// The writer, unless the engine is poisoned.
    fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>> {
        let w = self.writer.lock();
        self.check_poison()?;
        Ok(w)
    }

    fn check_poison(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            let cause = self.poison_cause.lock().clone().unwrap_or_default();
            return Err(Error::Poisoned { cause });
        }
        Ok(())
    }

    /// Refuses every later write: after a failed write or fsync the kernel may have dropped
    /// dirty pages, so a retry could report success for lost data.
    fn poison(&self, cause: &str) {
        let mut slot = self.poison_cause.lock();
        if slot.is_none() {
            *slot = Some(cause.to_owned());
        }
        self.poisoned.store(true, Ordering::Release);
    }

    /// Appends a batch; an I/O failure poisons the engine.
    fn append(&self, w: &mut Writer, ops: &[Op<'_>]) -> Result<u64> {
        w.append(&self.placement(), ops, None).inspect_err(|e| {
            if matches!(e, Error::Io { .. }) {
                self.poison(&e.to_string());
            }
        })
    }

    /// Makes batch `seq` durable (per the sync mode) and visible, then releases the writer.
    fn finish(&self, mut w: MutexGuard<'_, Writer>, seq: u64) -> Result<()> {
        let version = Arc::new(w.working.clone());
        let wake = self.wants_maintenance(&mut w);
        match self.options.sync {
            SyncMode::Always => {
                self.syncer.push(seq, version, w.active_file());
                drop(w);
                if wake {
                    self.wake_maintenance();
                }
                self.syncer.wait(
                    seq,
                    &|v| self.current.store(v),
                    &|| {
                        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
                    },
                    &|cause| self.poison(cause),
                )
            }
            SyncMode::Periodic(_) | SyncMode::Never => {
                self.current.store(version);
                drop(w);
                if wake {
                    self.wake_maintenance();
                }
                Ok(())
            }
        }
    }

    /// Whether the maintenance thread has work: a checkpoint is due, a segment was sealed
    /// (it may be compactable), or a table's recent index runs are due for a merge.
    fn wants_maintenance(&self, w: &mut Writer) -> bool {
        let checkpoint = self.options.checkpoint_bytes > 0 && w.since_hint >= self.options.checkpoint_bytes;
        let sealed = std::mem::take(&mut w.rotations) > 0 && self.options.compaction_threshold > 0.0;
        checkpoint || sealed || w.merge_due
    }

    /// Merges recent index runs into their tables' bases, without holding the writer lock
    /// while merging: the tables whose merge is due, or (`idle`) every table with recent
    /// runs. The result is published when every appended batch is synced; otherwise the
    /// next commit publishes it.
    fn merge_index(&self, idle: bool) {
        let jobs: Vec<(u32, table_map::MergeJob)> = {
            let mut w = self.writer.lock();
            let w = &mut *w;
            w.merge_due = false;
            let ids: Vec<u32> = w.working.tables.keys().copied().collect();
            ids.into_iter()
                .filter_map(|id| {
                    let state = w.working.tables.get_mut(&id)?;
                    if !(idle && state.map.has_recent() || state.map.merge_due()) {
                        return None;
                    }
                    Some((id, state.map.freeze(&mut w.usage)?))
                })
                .collect()
        };
        if jobs.is_empty() {
            return;
        }
        let merged: Vec<(u32, table_map::Merged)> =
            jobs.into_iter().map(|(id, job)| (id, job.run())).collect();
        let mut w = self.writer.lock();
        let w = &mut *w;
        let mut installed = false;
        for (id, merged) in merged {
            if let Some(state) = w.working.tables.get_mut(&id) {
                installed |= state.map.install(merged, &mut w.usage);
            }
        }
        if !installed || self.poisoned.load(Ordering::Acquire) {
            return;
        }
        let version = Arc::new(w.working.clone());
        match self.options.sync {
            // Readers see only synced batches: publish only if the working version holds no
            // other (the committer of a pending batch publishes the merge with it).
            SyncMode::Always => self.syncer.publish_if_synced(w.working.seq, || self.current.store(version)),
            SyncMode::Periodic(_) | SyncMode::Never => self.current.store(version),
        }
    }

    fn wake_maintenance(&self) {
        self.maintenance.lock().wake = true;
        self.maintenance_cv.notify_all();
    }

    /// Replaces the table directory file with `dir`, then applies `change` to the index and
    /// publishes it. Every appended batch is synced first, so publishing never exposes an
    /// unsynced one.
    fn change_tables(
        &self,
        w: &mut Writer,
        dir: tables::TableDir,
        change: impl FnOnce(&mut Version),
    ) -> Result<()> {
        self.sync_log(&*w.active_file(), &w.active.segment, w.active.pos)?;
        if let Err(e) = w.write_manifest(&self.placement(), dir) {
            self.poison(&e.to_string());
            return Err(e);
        }
        change(&mut w.working);
        let version = Arc::new(w.working.clone());
        self.syncer.mark_synced(w.working.seq, || self.current.store(version));
        Ok(())
    }

    /// Syncs `file`, the file of `segment`, whose first `written` bytes were written before:
    /// counted, marked in the segment (the sync watermark of later batches), and a failure
    /// poisons the engine.
    fn sync_log(&self, file: &dyn io::VfsFile, segment: &segment::Segment, written: u64) -> Result<()> {
        let synced = file.sync_data().map_err(|e| Error::io("syncing", segment.path(), e));
        match &synced {
            Ok(()) => segment.mark_synced(written),
            Err(e) => self.poison(&e.to_string()),
        }
        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        synced
    }

    fn flush(&self) -> Result<()> {
        // Synced outside the writer lock: committers go on meanwhile.
        let (file, segment, written) = {
            let w = self.writer.lock();
            (w.active_file(), Arc::clone(&w.active.segment), w.active.pos)
        };
        self.sync_log(&*file, &segment, written)
    }

    /// Writes a hint of the latest published version.
    fn checkpoint(&self) -> Result<()> {
        let _one_at_a_time = self.checkpointing.lock();
        let version = self.current.load_full();
        // With `Periodic` and `Never`, the published version may hold batches not yet
        // synced: the hint must not become durable before the log bytes it points at, or a
        // crash leaves a hint whose entries point at bytes that never reached the disk.
        // (Sealed segments were synced when sealed; the active one holds the rest.)
        self.flush()?;
        hint::write(&*self.options.vfs, &self.dir, &version)?;
        self.counters.hints_written.fetch_add(1, Ordering::Relaxed);
        self.writer.lock().since_hint = 0;
        Ok(())
    }

    fn stats(&self) -> Stats {
        let version = self.current.load_full();
        let (live_bytes, log_bytes) = {
            let w = self.writer.lock();
            let log: u64 = version.segments.values().map(|s| s.written()).sum();
            let live: u64 = version.segments.keys().map(|id| w.usage.live(*id)).sum();
            (live, log)
        };
        let keys: u64 = version.tables.values().map(|t| t.map.len() as u64).sum();
        let index_bytes: u64 = version.tables.values().map(|t| t.map.heap_bytes() as u64).sum();
        Stats {
            tables: version.tables.len(),
            keys,
            segments: version.segments.len(),
            log_bytes,
            live_bytes,
            dead_bytes: log_bytes.saturating_sub(live_bytes),
            index_bytes,
            fsyncs: self.counters.fsyncs.load(Ordering::Relaxed),
            compactions: self.counters.compactions.load(Ordering::Relaxed),
            bytes_rewritten: self.counters.bytes_rewritten.load(Ordering::Relaxed),
            hints_written: self.counters.hints_written.load(Ordering::Relaxed),
            recovery: self.recovery.clone(),
            poisoned: self.poison_cause.lock().clone(),
        }
    }

    /// The maintenance thread: periodic syncs, checkpoints and background compaction.
    fn maintain(self: Arc<Self>) {
        let period = match self.options.sync {
            SyncMode::Periodic(d) => Some(d),
            _ => None,
        };
        loop {
            // With recent index runs, wake up after `INDEX_IDLE` too: if no commit came
            // meanwhile, merge them, so reads after a burst of writes search one run.
            let unmerged = |v: &Version| v.tables.values().any(|t| t.map.has_recent());
            let idle_since = {
                let version = self.current.load();
                unmerged(&version).then_some(version.seq)
            };
            let timeout = match (period, idle_since) {
                (Some(d), Some(_)) => Some(d.min(INDEX_IDLE)),
                (Some(d), None) => Some(d),
                (None, Some(_)) => Some(INDEX_IDLE),
                (None, None) => None,
            };
            let mut timed_out = false;
            {
                let mut m = self.maintenance.lock();
                while !m.shutdown && !m.wake {
                    match timeout {
                        Some(d) => {
                            if self.maintenance_cv.wait_for(&mut m, d).timed_out() {
                                timed_out = true;
                                break;
                            }
                        }
                        None => self.maintenance_cv.wait(&mut m),
                    }
                }
                if m.shutdown {
                    return;
                }
                m.wake = false;
            }
            if self.poisoned.load(Ordering::Acquire) {
                continue;
            }
            if period.is_some() {
                let _ = self.flush();
            }
            let idle = timed_out && idle_since.is_some_and(|seq| self.current.load().seq == seq);
            self.merge_index(idle);
            if self.options.compaction_threshold > 0.0 {
                let _ = compaction::compact(
                    &self,
                    compaction::Scope::MostlyDead(self.options.compaction_threshold),
                );
            }
            let due = {
                let w = self.writer.lock();
                self.options.checkpoint_bytes > 0 && w.since_hint >= self.options.checkpoint_bytes
            };
            if due {
                let _ = self.checkpoint();
            }
        }
    }
}
