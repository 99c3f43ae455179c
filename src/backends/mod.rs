//! The engines behind a storage, seen as untyped ordered maps of byte strings.
//!
//! [`Engine`] is what every backend implements: named tables, point reads that lend the
//! engine's own bytes ([`RawBytes`]), consistent read snapshots across tables, and atomic
//! write batches across tables. The typed layer above never sees an engine's types.
//!
//! Reads return an enum of the engines' byte holders rather than a boxed trait object, so a
//! `get` costs no allocation of ours.

use std::any::Any;
use std::mem::ManuallyDrop;
use std::ops::{Bound, Deref};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::OnceLock;

use crate::config::{DatabaseBackend, Durability};
use crate::error::{Result, StorageError};
use crate::verify::{ChecksumCheck, VerifyProblem};

#[cfg(feature = "native")]
mod native;
#[cfg(feature = "redb")]
mod redb;
#[cfg(feature = "rocksdb")]
mod rocksdb;
#[cfg(feature = "sled")]
mod sled;

/// Bytes lent by an engine, kept alive by whatever the engine needs (a page, a pinned block,
/// a reference-counted buffer), or owned when the engine could not lend them.
pub(crate) enum RawBytes<'a> {
    /// A value read in place from a native segment mapping (holds the segment).
    #[cfg(feature = "native")]
    Native(crate::engine::Value),
    /// A key of the native engine's index.
    #[cfg(feature = "native")]
    NativeKey(crate::engine::Key),
    /// Bytes borrowed from something the caller holds (a snapshot).
    #[cfg_attr(not(feature = "native"), allow(dead_code))]
    Borrowed(&'a [u8]),
    /// A redb value or key, holding its page and its read transaction (redb may free pages
    /// that no live transaction can see).
    #[cfg(feature = "redb")]
    Redb(::redb::OwnedAccessGuard<&'static [u8]>),
    /// A sled `IVec` (reference counted, or inline when small).
    #[cfg(feature = "sled")]
    Sled(::sled::IVec),
    /// A RocksDB value pinned in the block cache or memtable.
    #[cfg(feature = "rocksdb")]
    RocksPinned(::rocksdb::DBPinnableSlice<'a>),
    /// Bytes the engine could not lend (e.g. RocksDB iterators), copied once.
    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    Owned(Vec<u8>),
    /// Bytes copied into a 16-byte-aligned buffer for a format that needs alignment.
    Aligned(rkyv::util::AlignedVec<16>),
}

impl Deref for RawBytes<'_> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            #[cfg(feature = "native")]
            RawBytes::Native(value) => value,
            #[cfg(feature = "native")]
            RawBytes::NativeKey(key) => key,
            RawBytes::Borrowed(bytes) => bytes,
            #[cfg(feature = "redb")]
            RawBytes::Redb(guard) => guard.value(),
            #[cfg(feature = "sled")]
            RawBytes::Sled(ivec) => ivec,
            #[cfg(feature = "rocksdb")]
            RawBytes::RocksPinned(slice) => slice,
            RawBytes::Owned(vec) => vec,
            RawBytes::Aligned(vec) => vec,
        }
    }
}

/// A table as an engine knows it, resolved once when the typed table is built.
#[derive(Clone, Debug)]
pub(crate) enum TableHandle {
    /// A native table: its name and cached id.
    #[cfg(feature = "native")]
    Native(std::sync::Arc<native::NativeTable>),
    /// redb tables are opened by name inside each transaction.
    #[cfg(feature = "redb")]
    Redb(std::sync::Arc<str>),
    /// A sled tree (cheap to clone).
    #[cfg(feature = "sled")]
    Sled(::sled::Tree),
    /// A RocksDB column family, by name.
    #[cfg(feature = "rocksdb")]
    Rocks(std::sync::Arc<str>),
}

impl TableHandle {
    /// The table's name, for messages.
    pub(crate) fn label(&self) -> String {
        match self {
            #[cfg(feature = "native")]
            TableHandle::Native(table) => table.name().to_owned(),
            #[cfg(feature = "redb")]
            TableHandle::Redb(name) => name.to_string(),
            #[cfg(feature = "sled")]
            TableHandle::Sled(tree) => sled::display_name(tree),
            #[cfg(feature = "rocksdb")]
            TableHandle::Rocks(name) => name.to_string(),
        }
    }

    /// The error for a handle of another engine: a bug in typed-kv, reported, not panicked.
    #[allow(dead_code)]
    pub(crate) fn foreign(backend: DatabaseBackend) -> StorageError {
        StorageError::engine(
            backend,
            "using a table handle",
            "the table belongs to a storage of another backend",
        )
    }
}

/// The entries of a range read: raw key and value, in key order.
pub(crate) type RawIter<'a> = Box<dyn Iterator<Item = Result<(RawBytes<'a>, RawBytes<'a>)>> + 'a>;

/// A value's bytes as the typed layer keeps them in a [`Guard`](crate::Guard): lent by a
/// snapshot, or in an engine's holder.
///
/// Bytes lent by a snapshot are kept apart from the engines' holders: reading them is one
/// branch and dropping them does nothing, where [`RawBytes`] is matched against every
/// engine's holder on each deref and on drop.
pub(crate) enum ValueBytes<'a> {
    /// Bytes borrowed from a snapshot (or none, once a decoding format let go of them).
    Borrowed(&'a [u8]),
    /// An engine's holder of the bytes.
    Held(RawBytes<'a>),
}

impl<'a> From<RawBytes<'a>> for ValueBytes<'a> {
    #[inline]
    fn from(raw: RawBytes<'a>) -> Self {
        match raw {
            RawBytes::Borrowed(bytes) => ValueBytes::Borrowed(bytes),
            raw => ValueBytes::Held(raw),
        }
    }
}

impl Deref for ValueBytes<'_> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            ValueBytes::Borrowed(bytes) => bytes,
            ValueBytes::Held(raw) => raw,
        }
    }
}

/// The entries of a range read as the typed layer iterates them: the native engine's own
/// iterators, unboxed and lending plain slices, or any engine's [`RawIter`].
///
/// A native snapshot's scan thus costs no virtual call, no `Result` and no pair of
/// [`RawBytes`] per entry.
pub(crate) enum RawRange<'a> {
    /// Keys and values borrowed from a native snapshot.
    #[cfg(feature = "native")]
    NativeSnapshot(crate::engine::Range<'a>),
    /// A native range that holds its own snapshot (a read outside a snapshot). Boxed: it is
    /// large, and a boxed iterator is what such reads cost on every engine anyway.
    #[cfg(feature = "native")]
    Native(Box<crate::engine::OwnedRange>),
    /// Any engine's iterator.
    Boxed(RawIter<'a>),
}

impl<'a> RawRange<'a> {
    /// Calls `f` on the next entry's key and value; `None` at the end.
    ///
    /// Always inlined, with the engine's `next`: left to itself the compiler kept both out
    /// of line, and a 10-entry typed scan then moved each entry through two calls and two
    /// copies of a 112-byte `Option<Result<Guard>>` (15 % of the scan's time, A/B).
    #[inline(always)]
    pub(crate) fn next_with<T>(
        &mut self,
        f: impl FnOnce(&[u8], ValueBytes<'a>) -> Result<T>,
    ) -> Option<Result<T>> {
        // The key's holder, for iterators that do not lend keys for `'a` (one call of `f`
        // below, so that it is inlined once).
        let holder: RawBytes<'a>;
        let (key, value) = match self {
            #[cfg(feature = "native")]
            RawRange::NativeSnapshot(range) => match range.next()? {
                Ok((key, value)) => (key, ValueBytes::Borrowed(value)),
                Err(e) => return Some(Err(native::err("reading a range", e))),
            },
            #[cfg(feature = "native")]
            RawRange::Native(range) => {
                let (key, value) = match range.next()? {
                    Ok(entry) => entry,
                    Err(e) => return Some(Err(native::err("reading a range", e))),
                };
                holder = RawBytes::NativeKey(key);
                (&*holder, ValueBytes::Held(RawBytes::Native(value)))
            }
            RawRange::Boxed(iter) => match iter.next()? {
                Ok((key, value)) => {
                    holder = key;
                    (&*holder, ValueBytes::from(value))
                }
                Err(e) => return Some(Err(e)),
            },
        };
        Some(f(key, value))
    }
}

/// Untyped writes to apply atomically, across tables. Keys and values live in one buffer so
/// a large batch costs a few allocations, not two per entry.
#[derive(Default)]
pub(crate) struct RawBatch {
    data: Vec<u8>,
    ops: Vec<RawOp>,
    tables: Vec<(String, TableHandle)>,
}

struct RawOp {
    table: usize,
    key: (usize, usize),
    /// `None` removes the key.
    value: Option<(usize, usize)>,
}

/// The error for a write whose table slot the batch does not have: a bug in typed-kv,
/// reported, not panicked.
#[allow(dead_code)] // not every backend indexes slots itself
pub(crate) fn missing_slot(backend: DatabaseBackend) -> StorageError {
    StorageError::engine(backend, "writing a batch", "a write names a table slot the batch does not have")
}

/// One write of a [`RawBatch`], borrowed from it.
pub(crate) struct RawWrite<'b> {
    /// Index of the table in [`RawBatch::tables`].
    pub(crate) slot: usize,
    pub(crate) key: &'b [u8],
    /// `None` removes the key.
    pub(crate) value: Option<&'b [u8]>,
}

impl RawBatch {
    /// Registers the table `name` in the batch and returns its slot for
    /// [`push_encoded`](Self::push_encoded).
    pub(crate) fn table_slot(&mut self, name: &str, table: &TableHandle) -> usize {
        if let Some(i) = self.tables.iter().position(|(n, _)| n == name) {
            return i;
        }
        self.tables.push((name.to_owned(), table.clone()));
        self.tables.len() - 1
    }

    /// Appends a write of the table in `slot`, whose key and value (`None`: a removal) were
    /// encoded into [`buffer`](Self::buffer) at these ranges.
    pub(crate) fn push(
        &mut self,
        slot: usize,
        key: std::ops::Range<usize>,
        value: Option<std::ops::Range<usize>>,
    ) {
        self.ops.push(RawOp {
            table: slot,
            key: (key.start, key.end),
            value: value.map(|v| (v.start, v.end)),
        });
    }

    /// Pads the buffer to a multiple of 16 bytes, so that an encoding that starts next is
    /// aligned relative to the buffer as it would be in a buffer of its own.
    pub(crate) fn align_buffer(&mut self) {
        let padded = self.data.len().next_multiple_of(16);
        self.data.resize(padded, 0);
    }

    /// The shared buffer that keys and values are encoded into.
    pub(crate) fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.data
    }

    /// Number of writes.
    pub(crate) fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether there is nothing to write.
    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Bytes of keys and values.
    pub(crate) fn payload_bytes(&self) -> usize {
        self.data.len()
    }

    /// The names of the tables this batch writes to, for messages.
    fn table_labels(&self) -> String {
        let names: Vec<String> = self.tables.iter().map(|(name, _)| format!("`{name}`")).collect();
        names.join(", ")
    }

    /// The tables this batch writes to, by slot.
    pub(crate) fn tables(&self) -> impl ExactSizeIterator<Item = &TableHandle> + '_ {
        self.tables.iter().map(|(_, t)| t)
    }

    /// The writes, in the order they were added (a later write to a key wins).
    pub(crate) fn writes(&self) -> impl Iterator<Item = RawWrite<'_>> + '_ {
        self.ops.iter().map(|op| RawWrite {
            slot: op.table,
            key: &self.data[op.key.0..op.key.1],
            value: op.value.map(|(s, e)| &self.data[s..e]),
        })
    }
}

/// What [`Storage::compact`](crate::Storage::compact) did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompactionReport {
    /// The engine compacted; sizes on disk before and after, in bytes.
    Compacted {
        /// Size before.
        before: u64,
        /// Size after.
        after: u64,
    },
    /// The engine was already compact (redb reports this).
    AlreadyCompact {
        /// Size on disk.
        size: u64,
    },
    /// The engine has no explicit compaction; it reclaims space on its own.
    NotSupported {
        /// Why, in words.
        reason: &'static str,
    },
}

/// Options an engine is opened with.
#[derive(Debug, Clone)]
pub(crate) struct EngineOptions {
    pub(crate) durability: Durability,
    /// The engine's files were created before (the store's marker says so): a missing one
    /// is [`StorageError::MissingEngineFile`], never created anew.
    pub(crate) must_exist: bool,
    /// The native engine's own options (its `sync` follows `durability`).
    #[cfg(feature = "native")]
    pub(crate) native: crate::engine::Options,
}

/// A key-value engine: named tables of byte strings in lexicographic key order.
pub(crate) trait Engine: Send + Sync {
    /// Which backend this is.
    fn backend(&self) -> DatabaseBackend;
    /// Opens the table `name`, creating it if missing. Its values' format needs them
    /// aligned to `value_align` bytes (engines that can, store them so).
    fn open_table(&self, name: &str, value_align: usize) -> Result<TableHandle>;
    /// The table `name` for reading only, without creating it or writing anything; `None`
    /// if it does not exist. By default, [`open_table`](Self::open_table).
    fn table_for_reading(&self, name: &str) -> Result<Option<TableHandle>> {
        self.open_table(name, 1).map(Some)
    }
    /// Deletes the table `name` and its contents; `false` if there was none.
    fn drop_table(&self, name: &str) -> Result<bool>;
    /// The value under `key`, lent by the engine.
    fn get<'a>(&'a self, table: &TableHandle, key: &[u8]) -> Result<Option<RawBytes<'a>>>;
    /// Entries of one table with keys within the bounds, in key order. The iterator holds its
    /// own consistent view on redb and RocksDB; on sled, writes made during the scan may or
    /// may not be seen (use a snapshot for a consistent view).
    fn range<'a>(
        &'a self,
        table: &TableHandle,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> Result<RawIter<'a>>;
    /// [`range`](Self::range) as the typed layer iterates it; by default, the boxed `range`.
    fn entries<'a>(
        &'a self,
        table: &TableHandle,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> Result<RawRange<'a>> {
        self.range(table, lower, upper).map(RawRange::Boxed)
    }
    /// Number of entries in the table.
    fn len(&self, table: &TableHandle) -> Result<u64>;
    /// A consistent view of every table.
    fn snapshot<'a>(&'a self) -> Result<Box<dyn EngineSnapshot + 'a>>;
    /// Applies every write of `batch`, all or none, with the storage's durability.
    fn write(&self, batch: &RawBatch) -> Result<()>;
    /// Stores one pair in table `name` (whose handle is `table`), with the storage's
    /// durability: a batch of one, which engines may write without making a batch.
    fn put(&self, table: &TableHandle, name: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let mut batch = RawBatch::default();
        let slot = batch.table_slot(name, table);
        let key_start = batch.buffer().len();
        batch.buffer().extend_from_slice(key);
        let key_end = batch.buffer().len();
        batch.align_buffer();
        let value_start = batch.buffer().len();
        batch.buffer().extend_from_slice(value);
        let value_end = batch.buffer().len();
        batch.push(slot, key_start..key_end, Some(value_start..value_end));
        self.write(&batch)
    }
    /// Removes `key`; whether it was there.
    fn remove(&self, table: &TableHandle, key: &[u8]) -> Result<bool>;
    /// Removes every key of the table, atomically.
    fn clear(&self, table: &TableHandle) -> Result<()>;
    /// Reclaims space.
    fn compact(&self) -> Result<CompactionReport>;
    /// Makes every commit so far durable.
    fn flush(&self) -> Result<()>;
    /// Bytes the engine's files take on disk.
    fn disk_size(&self) -> Result<u64>;

    /// What the engine knows about one table without reading it. Unknown by default.
    fn table_figures(&self, _table: &TableHandle) -> Result<TableFigures> {
        Ok(TableFigures::default())
    }

    /// What the engine knows about itself without reading its data. Unknown by default.
    fn figures(&self) -> Result<EngineFigures> {
        Ok(EngineFigures::default())
    }

    /// Whether this thread may wait for a write made by another thread (an ingest's writer):
    /// an error if that write would wait for something this thread holds, which would never
    /// end. Always fine by default; on sled, writers wait for this thread's snapshots.
    fn may_await_writer(&self) -> Result<()> {
        Ok(())
    }

    /// Re-reads the engine's files and checks its own checksums, if it keeps any that can be
    /// checked on demand: problems go to `problems`, and `progress(bytes_read, bytes_total)`
    /// is called now and then. By default, says why it cannot.
    fn verify_checksums(
        &self,
        _progress: &mut dyn FnMut(u64, u64),
        _problems: &mut Vec<VerifyProblem>,
    ) -> Result<ChecksumCheck> {
        Ok(ChecksumCheck::NotAvailable { reason: no_checksum_check(self.backend()).to_owned() })
    }
}

/// What an engine knows about one table without reading it ([`Engine::table_figures`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TableFigures {
    /// Keys, when the engine keeps a count.
    pub(crate) keys: Option<u64>,
    /// Bytes the table takes in the engine's files, when the engine knows it per table.
    pub(crate) bytes: Option<u64>,
}

/// What an engine knows about itself without reading its data ([`Engine::figures`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct EngineFigures {
    /// Bytes of live data (keys, values, record headers) in the engine's files.
    pub(crate) live_bytes: Option<u64>,
    /// Bytes a compaction could give back.
    pub(crate) reclaimable_bytes: Option<u64>,
    /// Data files (native: segments).
    pub(crate) files: Option<u64>,
    /// Compactions the engine ran since it was opened, background ones included.
    pub(crate) compactions: Option<u64>,
}

/// Why an engine without an on-demand checksum check has none, in words.
fn no_checksum_check(backend: DatabaseBackend) -> &'static str {
    match backend {
        DatabaseBackend::Sled => {
            "sled checks the CRC32 of each log message when it opens the store and when it reads a \
             page from the file, but offers no check of a store that is open (and its recovery takes \
             a message that fails its CRC for the end of the log)"
        }
        DatabaseBackend::RocksDb => {
            "RocksDB checks each SST block's checksum (XXH3) whenever it reads the block from the file, \
             and each WAL record's CRC32C when it replays the WAL on open; typed-kv does not run \
             RocksDB's whole-store check (`VerifyChecksum`)"
        }
        _ => "this engine offers no checksum check",
    }
}

/// A consistent read view across tables; bytes it lends live as long as it does.
pub(crate) trait EngineSnapshot {
    /// The value under `key`.
    fn get<'s>(&'s self, table: &TableHandle, key: &[u8]) -> Result<Option<RawBytes<'s>>>;
    /// Entries with keys within the bounds, in key order.
    fn range<'s>(
        &'s self,
        table: &TableHandle,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> Result<RawIter<'s>>;
    /// [`range`](Self::range) as the typed layer iterates it; by default, the boxed `range`.
    fn entries<'s>(
        &'s self,
        table: &TableHandle,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> Result<RawRange<'s>> {
        self.range(table, lower, upper).map(RawRange::Boxed)
    }
    /// Number of entries.
    fn len(&self, table: &TableHandle) -> Result<u64>;
}

/// Opens the engine `backend` in `dir` (a directory typed-kv owns).
pub(crate) fn open_engine(
    backend: DatabaseBackend,
    dir: &Path,
    options: &EngineOptions,
) -> Result<Box<dyn Engine>> {
    let _ = (dir, options);
    match backend {
        // Our own engine reports damage as errors; it runs unfenced.
        #[cfg(feature = "native")]
        DatabaseBackend::Native => Ok(Box::new(native::NativeEngine::open(dir, options)?)),
        #[cfg(feature = "redb")]
        DatabaseBackend::Redb => Fenced::open(backend, dir, || redb::RedbEngine::open(dir, options)),
        #[cfg(feature = "sled")]
        DatabaseBackend::Sled => Fenced::open(backend, dir, || sled::SledEngine::open(dir, options)),
        #[cfg(feature = "rocksdb")]
        DatabaseBackend::RocksDb => Fenced::open(backend, dir, || rocksdb::RocksEngine::open(dir, options)),
        // Reached in builds without some backend's feature.
        #[allow(unreachable_patterns)]
        other => Err(StorageError::BackendNotCompiled { backend: other }),
    }
}

/// Contains the panics of a third-party engine: every call into it runs under
/// `catch_unwind`, a panic becomes [`StorageError::EnginePanicked`], and every later call is
/// [`StorageError::Poisoned`], since the panic may have left the engine's memory half-updated
/// (an allocator state, a cache, a transaction in flight).
///
/// redb 4.5 and sled 0.34.7 panic on some damaged files rather than returning errors (found
/// by flipping and zeroing bytes of their files; `docs/reliability.md`, findings):
/// - redb parses pages with slicing, `unwrap`s and `unreachable!`s that trust the bytes
///   (`btree.rs:1104`, `btree_base.rs:35` and `:283`, `page_manager.rs:1760`, `types.rs:109`
///   …), since its read paths never check the page checksums (cberner/redb#1334); its
///   repair panics too (cberner/redb#1333, which also shows a caught panic leaving the
///   allocator half-rebuilt: hence the poisoning), and so may dropping the database
///   (cberner/redb#1303: the engine is dropped under the fence as well).
/// - sled panics opening a log with a hole, when it writes the recovered snapshot
///   (`serialization.rs:662`, "tried to serialize Uninitialized", spacejam/sled#1387).
/// - RocksDB's Rust wrapper has `unwrap`s of its own.
///
/// The default panic hook still prints the panic to stderr; the process goes on.
///
/// `catch_unwind` costs nothing on the path that does not panic but the poisoned check, one
/// atomic load; the action's words are only formatted on a panic.
pub(crate) struct PanicFence {
    backend: DatabaseBackend,
    /// The first panic: what was being done, and its message.
    first_panic: OnceLock<(String, String)>,
}

impl PanicFence {
    /// A fence of an engine of `backend` that has not panicked.
    pub(crate) fn new(backend: DatabaseBackend) -> Self {
        Self { backend, first_panic: OnceLock::new() }
    }

    /// Runs `call` unless the engine panicked before; `action` says what it does (with the
    /// table where there is one), for the error.
    #[inline]
    pub(crate) fn run<T>(
        &self,
        action: impl FnOnce() -> String,
        call: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        if let Some((_, message)) = self.first_panic.get() {
            return Err(self.poisoned(action(), message));
        }
        // The engine's state is unwind-safe in the only sense that matters here: after a
        // panic, nothing of it is used again.
        match catch_unwind(AssertUnwindSafe(call)) {
            Ok(result) => result,
            Err(payload) => Err(self.panicked(action(), payload)),
        }
    }

    #[cold]
    fn panicked(&self, action: String, payload: Box<dyn Any + Send>) -> StorageError {
        let message = match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
            (Some(s), _) => (*s).to_owned(),
            (None, Some(s)) => s.clone(),
            (None, None) => "(a panic without a message)".to_owned(),
        };
        // Of two panics at once, the first recorded is the one later calls name.
        let _ = self.first_panic.set((action.clone(), message.clone()));
        StorageError::EnginePanicked { backend: self.backend, action, message }
    }

    #[cold]
    fn poisoned(&self, action: String, message: &str) -> StorageError {
        let earlier = self.first_panic.get().map_or("", |(action, _)| action.as_str());
        StorageError::Poisoned { backend: self.backend, action, panic: format!("while {earlier}: {message}") }
    }

    /// `range` with each step run under the fence (the native engine's own ranges, which
    /// no fenced engine returns, pass as they are).
    fn range<'a>(&'a self, table: &TableHandle, range: RawRange<'a>) -> RawRange<'a> {
        match range {
            RawRange::Boxed(iter) => RawRange::Boxed(self.iter(table, iter)),
            #[allow(unreachable_patterns)]
            other => other,
        }
    }

    /// `iter` with each `next` run under the fence; it ends after an error.
    fn iter<'a>(&'a self, table: &TableHandle, iter: RawIter<'a>) -> RawIter<'a> {
        let table = table.clone();
        let mut iter = Some(Unwinding(ManuallyDrop::new(iter)));
        Box::new(std::iter::from_fn(move || {
            let inner = iter.as_mut()?;
            match self.run(|| format!("scanning table `{}`", table.label()), || Ok(inner.0.next())) {
                Ok(item) => item,
                Err(e) => {
                    // The iterator is dropped (under the fence) and never asked again.
                    iter = None;
                    Some(Err(e))
                }
            }
        }))
    }
}

/// A value that is dropped under `catch_unwind`: an engine's drop may panic too, on the
/// state a damaged file left.
struct Unwinding<T>(ManuallyDrop<T>);

impl<T> Drop for Unwinding<T> {
    fn drop(&mut self) {
        // SAFETY: `self.0` is never used again: this is the value's last use.
        let value = unsafe { ManuallyDrop::take(&mut self.0) };
        let _ = catch_unwind(AssertUnwindSafe(move || drop(value)));
    }
}

impl<T> Deref for Unwinding<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A third-party engine behind a [`PanicFence`].
struct Fenced<E> {
    engine: Unwinding<E>,
    fence: PanicFence,
}

impl<E: Engine + 'static> Fenced<E> {
    /// Opens the engine with `open`, its panics contained too.
    fn open(
        backend: DatabaseBackend,
        dir: &Path,
        open: impl FnOnce() -> Result<E>,
    ) -> Result<Box<dyn Engine>> {
        let fence = PanicFence::new(backend);
        let engine = fence.run(|| format!("opening {}", dir.display()), open)?;
        Ok(Box::new(Fenced { engine: Unwinding(ManuallyDrop::new(engine)), fence }))
    }
}

impl<E: Engine> Fenced<E> {
    /// Runs `call` on the engine under the fence.
    #[inline]
    fn run<'s, T>(
        &'s self,
        action: impl FnOnce() -> String,
        call: impl FnOnce(&'s E) -> Result<T>,
    ) -> Result<T> {
        self.fence.run(action, || call(&self.engine))
    }
}

/// Every call goes through the fence; so do the snapshots' and iterators' calls.
impl<E: Engine> Engine for Fenced<E> {
    fn backend(&self) -> DatabaseBackend {
        self.engine.backend()
    }

    fn open_table(&self, name: &str, value_align: usize) -> Result<TableHandle> {
        self.run(|| format!("opening table `{name}`"), |e| e.open_table(name, value_align))
    }

    fn table_for_reading(&self, name: &str) -> Result<Option<TableHandle>> {
        self.run(|| format!("opening table `{name}`"), |e| e.table_for_reading(name))
    }

    fn drop_table(&self, name: &str) -> Result<bool> {
        self.run(|| format!("deleting table `{name}`"), |e| e.drop_table(name))
    }

    #[inline]
    fn get<'a>(&'a self, table: &TableHandle, key: &[u8]) -> Result<Option<RawBytes<'a>>> {
        self.run(|| format!("reading table `{}`", table.label()), |e| e.get(table, key))
    }

    fn range<'a>(
        &'a self,
        table: &TableHandle,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> Result<RawIter<'a>> {
        let iter =
            self.run(|| format!("scanning table `{}`", table.label()), |e| e.range(table, lower, upper))?;
        Ok(self.fence.iter(table, iter))
    }

    fn entries<'a>(
        &'a self,
        table: &TableHandle,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> Result<RawRange<'a>> {
        let range =
            self.run(|| format!("scanning table `{}`", table.label()), |e| e.entries(table, lower, upper))?;
        Ok(self.fence.range(table, range))
    }

    fn len(&self, table: &TableHandle) -> Result<u64> {
        self.run(|| format!("counting table `{}`", table.label()), |e| e.len(table))
    }

    fn snapshot<'a>(&'a self) -> Result<Box<dyn EngineSnapshot + 'a>> {
        let snapshot = self.run(|| "taking a snapshot".to_owned(), |e| e.snapshot())?;
        Ok(Box::new(FencedSnapshot { snapshot: Unwinding(ManuallyDrop::new(snapshot)), fence: &self.fence }))
    }

    fn write(&self, batch: &RawBatch) -> Result<()> {
        self.run(|| format!("writing a batch to {}", batch.table_labels()), |e| e.write(batch))
    }

    fn put(&self, table: &TableHandle, name: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.run(|| format!("writing table `{name}`"), |e| e.put(table, name, key, value))
    }

    fn remove(&self, table: &TableHandle, key: &[u8]) -> Result<bool> {
        self.run(|| format!("removing from table `{}`", table.label()), |e| e.remove(table, key))
    }

    fn clear(&self, table: &TableHandle) -> Result<()> {
        self.run(|| format!("clearing table `{}`", table.label()), |e| e.clear(table))
    }

    fn compact(&self) -> Result<CompactionReport> {
        self.run(|| "compacting".to_owned(), |e| e.compact())
    }

    fn flush(&self) -> Result<()> {
        self.run(|| "flushing".to_owned(), |e| e.flush())
    }

    fn disk_size(&self) -> Result<u64> {
        self.run(|| "measuring the store".to_owned(), |e| e.disk_size())
    }

    fn table_figures(&self, table: &TableHandle) -> Result<TableFigures> {
        self.run(|| format!("reading the figures of table `{}`", table.label()), |e| e.table_figures(table))
    }

    fn figures(&self) -> Result<EngineFigures> {
        self.run(|| "reading the engine's figures".to_owned(), |e| e.figures())
    }

    fn may_await_writer(&self) -> Result<()> {
        self.run(|| "starting a writer".to_owned(), |e| e.may_await_writer())
    }

    fn verify_checksums(
        &self,
        progress: &mut dyn FnMut(u64, u64),
        problems: &mut Vec<VerifyProblem>,
    ) -> Result<ChecksumCheck> {
        self.run(|| "checking checksums".to_owned(), |e| e.verify_checksums(progress, problems))
    }
}

/// A snapshot of a [`Fenced`] engine, its calls under the engine's fence.
struct FencedSnapshot<'a> {
    snapshot: Unwinding<Box<dyn EngineSnapshot + 'a>>,
    fence: &'a PanicFence,
}

impl EngineSnapshot for FencedSnapshot<'_> {
    #[inline]
    fn get<'s>(&'s self, table: &TableHandle, key: &[u8]) -> Result<Option<RawBytes<'s>>> {
        self.fence.run(|| format!("reading table `{}`", table.label()), || self.snapshot.get(table, key))
    }

    fn range<'s>(
        &'s self,
        table: &TableHandle,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> Result<RawIter<'s>> {
        let iter = self.fence.run(
            || format!("scanning table `{}`", table.label()),
            || self.snapshot.range(table, lower, upper),
        )?;
        Ok(self.fence.iter(table, iter))
    }

    fn entries<'s>(
        &'s self,
        table: &TableHandle,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> Result<RawRange<'s>> {
        let range = self.fence.run(
            || format!("scanning table `{}`", table.label()),
            || self.snapshot.entries(table, lower, upper),
        )?;
        Ok(self.fence.range(table, range))
    }

    fn len(&self, table: &TableHandle) -> Result<u64> {
        self.fence.run(|| format!("counting table `{}`", table.label()), || self.snapshot.len(table))
    }
}

/// Total size of the regular files below `path` (for engines that do not report their own).
///
/// The engine keeps working while we walk: RocksDB deletes obsolete SST files from a
/// background thread, so a file listed a moment ago may be gone when we stat it. Such a file
/// no longer takes space and counts as zero; only `path` itself must exist.
#[cfg(any(feature = "sled", feature = "rocksdb"))]
pub(crate) fn dir_size(path: &Path) -> Result<u64> {
    match size_below(path)? {
        Some(size) => Ok(size),
        None => Err(StorageError::io("measuring", path, std::io::Error::from(std::io::ErrorKind::NotFound))),
    }
}

/// Size of `path` and what lies below it, or `None` if it vanished while we looked.
#[cfg(any(feature = "sled", feature = "rocksdb"))]
fn size_below(path: &Path) -> Result<Option<u64>> {
    let vanished = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if vanished(&e) => return Ok(None),
        Err(e) => return Err(StorageError::io("measuring", path, e)),
    };
    if !meta.is_dir() {
        return Ok(Some(if meta.is_file() { meta.len() } else { 0 }));
    }
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if vanished(&e) => return Ok(None),
        Err(e) => return Err(StorageError::io("listing", path, e)),
    };
    let mut total = 0;
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if vanished(&e) => continue,
            Err(e) => return Err(StorageError::io("listing", path, e)),
        };
        total += size_below(&entry.path())?.unwrap_or(0);
    }
    Ok(Some(total))
}

#[cfg(all(test, any(feature = "sled", feature = "rocksdb")))]
mod tests {
    use super::dir_size;
    use crate::StorageError;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn dir_size_sums_nested_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), [0u8; 10]).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub").join("b"), [0u8; 32]).unwrap();
        assert_eq!(dir_size(dir.path()).unwrap(), 42);
    }

    #[test]
    fn dir_size_of_a_missing_store_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone");
        match dir_size(&missing) {
            Err(StorageError::Io { action, path, source }) => {
                assert_eq!(action, "measuring");
                assert_eq!(path, missing);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("expected an I/O error, got {other:?}"),
        }
    }

    /// RocksDB deletes obsolete SST files from a background thread while `disk_size` walks
    /// the store (CI caught `compact` failing on a vanished `000016.sst`).
    #[test]
    fn dir_size_ignores_files_deleted_while_it_walks() {
        let dir = tempfile::tempdir().unwrap();
        let churn_dir = dir.path().join("sub");
        std::fs::create_dir(&churn_dir).unwrap();
        std::fs::write(dir.path().join("kept"), [0u8; 7]).unwrap();
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for i in 0..4_000 {
                    let file = churn_dir.join(format!("{:06}.sst", i % 16));
                    std::fs::write(&file, [0u8; 100]).unwrap();
                    std::fs::remove_file(&file).unwrap();
                }
                done.store(true, Ordering::Release);
            });
            let mut walks = 0;
            while !done.load(Ordering::Acquire) || walks == 0 {
                let size = dir_size(dir.path()).expect("a vanished file is not an error");
                assert!(size >= 7, "the file that stays is counted: {size}");
                walks += 1;
            }
        });
        assert_eq!(dir_size(dir.path()).unwrap(), 7);
    }
}

/// The fence itself, on a redb handle (any fenced engine would do).
#[cfg(all(test, feature = "redb"))]
mod fence_tests {
    use super::{PanicFence, RawBytes, RawIter};
    use crate::config::DatabaseBackend;
    use crate::StorageError;

    #[test]
    fn a_panic_is_an_error_and_poisons_the_engine() {
        let fence = PanicFence::new(DatabaseBackend::Redb);
        assert_eq!(fence.run(|| "reading".into(), || Ok(7)).unwrap(), 7);
        let panicked =
            fence.run(|| "reading table `t`".into(), || -> crate::Result<()> { panic!("boom {}", 1) });
        match panicked {
            Err(StorageError::EnginePanicked { backend, action, message }) => {
                assert_eq!(backend, DatabaseBackend::Redb);
                assert_eq!(action, "reading table `t`");
                assert_eq!(message, "boom 1");
            }
            other => panic!("expected EnginePanicked, got {other:?}"),
        }
        let mut ran = false;
        let flushed = fence.run(
            || "flushing".into(),
            || {
                ran = true;
                Ok(())
            },
        );
        match flushed {
            Err(e @ StorageError::Poisoned { .. }) => {
                let message = e.to_string();
                assert!(message.contains("flushing"), "{message}");
                assert!(message.contains("reading table `t`: boom 1"), "{message}");
                assert!(message.contains("reopen"), "{message}");
            }
            other => panic!("expected Poisoned, got {other:?}"),
        }
        assert!(!ran, "a poisoned engine is not called");
    }

    #[test]
    fn a_panic_in_an_iterator_ends_it_with_an_error() {
        let fence = PanicFence::new(DatabaseBackend::Sled);
        let handle = super::TableHandle::Redb("t".into());
        let inner: RawIter<'_> = Box::new((0..3u8).map(|i| {
            assert!(i < 1, "damaged page");
            Ok((RawBytes::Owned(vec![i]), RawBytes::Owned(vec![i])))
        }));
        let mut iter = fence.iter(&handle, inner);
        let (key, _) = iter.next().unwrap().unwrap();
        assert_eq!(&*key, &[0]);
        match iter.next() {
            Some(Err(StorageError::EnginePanicked { action, message, .. })) => {
                assert_eq!(action, "scanning table `t`");
                assert_eq!(message, "damaged page");
            }
            other => panic!("expected EnginePanicked, got {:?}", other.map(|r| r.map(|_| ()))),
        }
        assert!(iter.next().is_none(), "the iterator ends after the error");
        assert!(matches!(fence.run(|| "reading".into(), || Ok(())), Err(StorageError::Poisoned { .. })));
    }
}
