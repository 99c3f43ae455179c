//! [`Storage::copy_to`]: every table of one storage into another, of any backend, as stored.
//!
//! Stamps, keys and value bytes are copied as they are: nothing is decoded, so a copy works
//! for tables of any type and format, and the target opens with the same typed tables.
//!
//! A reader thread scans one consistent snapshot of the source, table by table, and hands
//! chunks of entries over a channel that holds one chunk; the calling thread commits each
//! chunk to the target as one atomic batch. When the target is slower, the reader waits
//! (back-pressure): at most three chunks are in memory at once (one being read, one waiting,
//! one being written), however large the tables.
//!
//! A table's stamp is committed with its first chunk. A copy that stops half way (an error,
//! a crash) leaves the tables copied so far and a part of one; copying again with
//! [`overwrite`](CopyBuilder::overwrite) replaces them.

use std::fmt;
use std::ops::Bound;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::{Duration, Instant};

use crate::backends::{Engine, RawBatch, TableHandle};
use crate::catalog::{catalog_name, TableStamp, CATALOG_TABLE};
use crate::error::{Result, StorageError};
use crate::storage::Storage;
use crate::untyped::value_alignment;

/// Default largest number of records in one chunk (one committed batch).
pub const DEFAULT_CHUNK_RECORDS: usize = 10_000;
/// Default largest size of one chunk's keys and values, in bytes (a single larger record
/// makes a chunk of its own).
pub const DEFAULT_CHUNK_BYTES: usize = 8 << 20;

/// The progress callback of a copy.
type ProgressCallback<'a> = Box<dyn FnMut(&CopyProgress<'_>) + 'a>;

/// Configures a copy; made by [`Storage::copy_to`], run by [`run`](Self::run).
#[must_use = "a copy does nothing until `run` is called"]
pub struct CopyBuilder<'a> {
    source: &'a Storage,
    target: &'a Storage,
    chunk_records: usize,
    chunk_bytes: usize,
    overwrite: bool,
    on_progress: Option<ProgressCallback<'a>>,
}

impl fmt::Debug for CopyBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CopyBuilder")
            .field("source", self.source)
            .field("target", self.target)
            .field("chunk_records", &self.chunk_records)
            .field("chunk_bytes", &self.chunk_bytes)
            .field("overwrite", &self.overwrite)
            .finish_non_exhaustive()
    }
}

/// Where a copy is, passed to the [`on_progress`](CopyBuilder::on_progress) callback after
/// every committed chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyProgress<'p> {
    /// The table being copied.
    pub table: &'p str,
    /// Tables copied completely so far.
    pub tables_done: usize,
    /// Tables to copy.
    pub tables_total: usize,
    /// Records copied so far, all tables.
    pub records: u64,
    /// Bytes of keys and values copied so far, all tables.
    pub bytes: u64,
    /// Records the source holds, if its engine counts them cheaply (not on sled).
    pub records_expected: Option<u64>,
}

/// What a copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyReport {
    /// Per table, in the order copied (name order).
    pub tables: Vec<TableCopy>,
    /// Records copied.
    pub records: u64,
    /// Bytes of keys and values copied.
    pub bytes: u64,
    /// Batches committed to the target.
    pub chunks: u64,
    /// Wall-clock time of the copy.
    pub elapsed: Duration,
}

/// What a copy did for one table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableCopy {
    /// The table.
    pub name: String,
    /// Records copied.
    pub records: u64,
    /// Bytes of keys and values copied.
    pub bytes: u64,
    /// Whether a table of that name in the target was replaced.
    pub replaced: bool,
}

impl Storage {
    /// Prepares a copy of every table of this storage into `target`; see [`CopyBuilder`].
    ///
    /// ```
    /// use typed_kv::{DatabaseBackend, OrderedFormat, PostcardFormat, StorageBuilder};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let source = StorageBuilder::new(dir.path().join("from-sled"))
    ///     .with_backend(DatabaseBackend::Sled)
    ///     .build()?;
    /// let names = source
    ///     .new_table::<u32, String>("names")
    ///     .with_key_format(OrderedFormat::new())
    ///     .with_value_format(PostcardFormat::new())
    ///     .build()?;
    /// names.put_all((0..1000).map(|i| (i, format!("name {i}"))))?;
    ///
    /// let target = StorageBuilder::new(dir.path().join("to-native"))
    ///     .with_backend(DatabaseBackend::Native)
    ///     .build()?;
    /// let mut chunks_seen = 0;
    /// let report = source
    ///     .copy_to(&target)
    ///     .chunk_records(100)
    ///     .on_progress(|p| chunks_seen += usize::from(p.records > 0))
    ///     .run()?;
    /// assert_eq!((report.records, report.chunks), (1000, 10));
    /// assert_eq!(chunks_seen, 10);
    ///
    /// // The target has the same typed table, with the same contents.
    /// let copied = target
    ///     .new_table::<u32, String>("names")
    ///     .with_key_format(OrderedFormat::new())
    ///     .with_value_format(PostcardFormat::new())
    ///     .build()?;
    /// assert_eq!(*copied.get(&999)?.expect("copied"), "name 999");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn copy_to<'a>(&'a self, target: &'a Storage) -> CopyBuilder<'a> {
        CopyBuilder {
            source: self,
            target,
            chunk_records: DEFAULT_CHUNK_RECORDS,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            overwrite: false,
            on_progress: None,
        }
    }
}

impl<'a> CopyBuilder<'a> {
    /// Largest number of records per chunk (one atomic batch); [`DEFAULT_CHUNK_RECORDS`]
    /// by default, at least 1.
    pub fn chunk_records(mut self, records: usize) -> Self {
        self.chunk_records = records.max(1);
        self
    }

    /// Largest bytes of keys and values per chunk; [`DEFAULT_CHUNK_BYTES`] by default. A
    /// record larger than this makes a chunk of its own.
    pub fn chunk_bytes(mut self, bytes: usize) -> Self {
        self.chunk_bytes = bytes.max(1);
        self
    }

    /// Whether a target that already has tables may be copied into (`false` by default: the
    /// copy is refused with [`StorageError::CopyRefused`]). When `true`, each target table
    /// of the same name as a source table is cleared and restamped before it is copied;
    /// target tables the source does not have are left as they are.
    pub fn overwrite(mut self, overwrite: bool) -> Self {
        self.overwrite = overwrite;
        self
    }

    /// Called after every committed chunk, and once when each table is done.
    pub fn on_progress(mut self, callback: impl FnMut(&CopyProgress<'_>) + 'a) -> Self {
        self.on_progress = Some(Box::new(callback));
        self
    }

    /// Runs the copy and makes it durable (the target is flushed at the end).
    pub fn run(self) -> Result<CopyReport> {
        let started = Instant::now();
        let refused =
            |reason: String| StorageError::CopyRefused { target: self.target.path().to_owned(), reason };
        if self.source.same_as(self.target) {
            return Err(refused("it is the source itself".into()));
        }
        let existing = self.target.table_names()?;
        if !existing.is_empty() && !self.overwrite {
            return Err(refused(format!(
                "it already has {} table(s) ({}); ask for overwrite to replace tables of the same names",
                existing.len(),
                list(&existing)
            )));
        }
        let source_engine: &dyn Engine = &*self.source.inner.engine;
        let catalog = &self.source.inner.catalog;
        let (chunk_records, chunk_bytes) = (self.chunk_records, self.chunk_bytes);
        let (sender, receiver) = sync_channel(1);
        let mut writer = Writer {
            source: self.source,
            target: self.target,
            existing,
            on_progress: self.on_progress,
            report: CopyReport {
                tables: Vec::new(),
                records: 0,
                bytes: 0,
                chunks: 0,
                elapsed: Duration::ZERO,
            },
            tables: Vec::new(),
            records_expected: None,
        };
        let written = std::thread::scope(|scope| {
            let reader = std::thread::Builder::new()
                .name("typed-kv-copy-reader".into())
                .spawn_scoped(scope, move || {
                    read_source(source_engine, catalog, chunk_records, chunk_bytes, sender)
                })
                .map_err(|e| {
                    StorageError::io("starting the copy's reader thread for", self.source.path(), e)
                })?;
            let written = writer.run(receiver);
            // The receiver is gone now, so a reader blocked on a full channel wakes and stops.
            match reader.join() {
                Ok(()) => written,
                Err(_) => written.and(Err(refused("the reader thread panicked".into()))),
            }
        });
        written?;
        self.target.flush()?;
        let mut report = writer.report;
        report.elapsed = started.elapsed();
        Ok(report)
    }
}

/// Names for a message, a few of them.
fn list(names: &[String]) -> String {
    let mut shown: Vec<String> = names.iter().take(5).map(|n| format!("`{n}`")).collect();
    if names.len() > 5 {
        shown.push("…".into());
    }
    shown.join(", ")
}

/// What the reader sends.
enum Message {
    /// The source's tables and stamps, first.
    Tables(Vec<(String, TableStamp)>),
    /// Entries of table `table` (an index into the list): keys and values back to back in
    /// `data`, their lengths in `lengths`. Every table has at least one chunk, maybe empty.
    Chunk { table: usize, data: Vec<u8>, lengths: Vec<(u32, u32)>, last: bool },
    /// The reader failed.
    Failed(StorageError),
}

/// Scans a snapshot of the source and sends it in chunks; stops when the receiver is gone.
fn read_source(
    engine: &dyn Engine,
    catalog: &TableHandle,
    chunk_records: usize,
    chunk_bytes: usize,
    sender: SyncSender<Message>,
) {
    if let Err(e) = send_source(engine, catalog, chunk_records, chunk_bytes, &sender) {
        let _ = sender.send(Message::Failed(e));
    }
}

fn send_source(
    engine: &dyn Engine,
    catalog: &TableHandle,
    chunk_records: usize,
    chunk_bytes: usize,
    sender: &SyncSender<Message>,
) -> Result<()> {
    // A send fails only when the writer has stopped (it reports why): then stop too.
    let send = |message| sender.send(message).map_err(drop);
    let snapshot = engine.snapshot()?;
    let all = Bound::Unbounded;
    let mut tables = Vec::new();
    for entry in snapshot.range(catalog, all, all)? {
        let (name, stamp) = entry?;
        let name = catalog_name(&name)?;
        let stamp = TableStamp::decode(&name, &stamp)?;
        tables.push((name, stamp));
    }
    let names: Vec<String> = tables.iter().map(|(n, _)| n.clone()).collect();
    if send(Message::Tables(tables)).is_err() {
        return Ok(());
    }
    for (index, name) in names.iter().enumerate() {
        let Some(handle) = engine.table_for_reading(name)? else {
            if send(Message::Chunk { table: index, data: Vec::new(), lengths: Vec::new(), last: true })
                .is_err()
            {
                return Ok(());
            }
            continue;
        };
        let mut data = Vec::new();
        let mut lengths = Vec::new();
        let mut entries = snapshot.range(&handle, all, all)?.peekable();
        loop {
            let Some(entry) = entries.next() else {
                let chunk = Message::Chunk { table: index, data, lengths, last: true };
                if send(chunk).is_err() {
                    return Ok(());
                }
                break;
            };
            let (key, value) = entry?;
            data.extend_from_slice(&key);
            data.extend_from_slice(&value);
            lengths.push((key.len() as u32, value.len() as u32));
            if lengths.len() >= chunk_records || data.len() >= chunk_bytes {
                let last = entries.peek().is_none();
                let chunk = Message::Chunk {
                    table: index,
                    data: std::mem::take(&mut data),
                    lengths: std::mem::take(&mut lengths),
                    last,
                };
                if send(chunk).is_err() {
                    return Ok(());
                }
                if last {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// The target side of a copy.
struct Writer<'a> {
    source: &'a Storage,
    target: &'a Storage,
    /// Tables the target had before the copy.
    existing: Vec<String>,
    on_progress: Option<ProgressCallback<'a>>,
    report: CopyReport,
    /// The source's tables, with their target handles once opened.
    tables: Vec<(String, TableStamp, Option<TableHandle>)>,
    records_expected: Option<u64>,
}

impl Writer<'_> {
    fn run(&mut self, receiver: Receiver<Message>) -> Result<()> {
        for message in receiver {
            match message {
                Message::Tables(tables) => self.start(tables)?,
                Message::Chunk { table, data, lengths, last } => self.write(table, data, &lengths, last)?,
                Message::Failed(e) => return Err(e),
            }
        }
        // The reader ended: it sent every table, or failed and said so.
        match self.report.tables.len() == self.tables.len() {
            true => Ok(()),
            false => Err(StorageError::CopyRefused {
                target: self.target.path().to_owned(),
                reason: "the reader stopped before the end of the source".into(),
            }),
        }
    }

    fn start(&mut self, tables: Vec<(String, TableStamp)>) -> Result<()> {
        let engine = &self.source.inner.engine;
        let mut expected = Some(0u64);
        for (name, _) in &tables {
            let keys = match engine.table_for_reading(name)? {
                Some(handle) => engine.table_figures(&handle)?.keys,
                None => Some(0),
            };
            expected = expected.zip(keys).map(|(a, b)| a + b);
        }
        self.records_expected = expected;
        self.tables = tables.into_iter().map(|(name, stamp)| (name, stamp, None)).collect();
        Ok(())
    }

    fn write(&mut self, index: usize, data: Vec<u8>, lengths: &[(u32, u32)], last: bool) -> Result<()> {
        let target = &self.target.inner.engine;
        let tables_total = self.tables.len();
        let Some((name, stamp, handle)) = self.tables.get_mut(index) else {
            return Err(StorageError::CopyRefused {
                target: self.target.path().to_owned(),
                reason: format!("the reader sent a chunk of table #{index}, which it did not list"),
            });
        };
        let first = handle.is_none();
        let handle = match handle {
            Some(handle) => handle.clone(),
            None => {
                let opened = target.open_table(name, value_alignment(&stamp.value_format))?;
                let replaced = self.existing.contains(name);
                if replaced {
                    target.clear(&opened)?;
                }
                self.report.tables.push(TableCopy { name: name.clone(), records: 0, bytes: 0, replaced });
                *handle = Some(opened.clone());
                opened
            }
        };
        let bytes = data.len() as u64;
        let mut batch = RawBatch::default();
        let slot = batch.table_slot(name, &handle);
        *batch.buffer() = data;
        let mut at = 0;
        for &(key_len, value_len) in lengths {
            let (key_end, value_end) = (at + key_len as usize, at + (key_len + value_len) as usize);
            batch.push(slot, at..key_end, Some(key_end..value_end));
            at = value_end;
        }
        if first {
            let catalog = &self.target.inner.catalog;
            let catalog_slot = batch.table_slot(CATALOG_TABLE, catalog);
            let start = batch.buffer().len();
            batch.buffer().extend_from_slice(name.as_bytes());
            let key_end = batch.buffer().len();
            batch.buffer().extend_from_slice(&stamp.encode());
            let end = batch.buffer().len();
            batch.push(catalog_slot, start..key_end, Some(key_end..end));
        }
        if !batch.is_empty() {
            target.write(&batch)?;
            self.report.chunks += u64::from(!lengths.is_empty());
        }
        let table = self.report.tables.last_mut().filter(|t| t.name == *name);
        if let Some(table) = table {
            table.records += lengths.len() as u64;
            table.bytes += bytes;
        }
        self.report.records += lengths.len() as u64;
        self.report.bytes += bytes;
        let tables_done = self.report.tables.len() - usize::from(!last);
        if let Some(callback) = &mut self.on_progress {
            callback(&CopyProgress {
                table: name,
                tables_done,
                tables_total,
                records: self.report.records,
                bytes: self.report.bytes,
                records_expected: self.records_expected,
            });
        }
        Ok(())
    }
}
