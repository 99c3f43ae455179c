//! Model-based property tests: random sequences of operations on a storage with three typed
//! tables, checked after every step against one `BTreeMap` per table, on every backend.
//!
//! The tables differ in key and value formats, so each format's encoding, ordering and
//! validation takes part:
//!
//! - `events`: `(i16, String)` keys, order-preserving ([`OrderedFormat`]: signed integers and
//!   strings with `\0` in them), rkyv values read in place;
//! - `notes`: raw byte keys ([`BytesFormat`], the empty key included), bincode values;
//! - `blobs`: `u64` keys ([`OrderedFormat`]), raw byte values (empty ones included).
//!
//! Keys come from a dozen per table, so overwrites and deletes of present keys are common;
//! range bounds also use keys that are never written. Values are usually small, sometimes
//! empty, rarely 64 KiB to 1 MiB.
//!
//! Operations: put, put_all (duplicates inside included), delete (present or absent, its
//! answer checked), clear, range with random bounds (inclusive, exclusive, unbounded, inverted
//! or empty), `with_stream` and `Table::snapshot`, a `Storage::read` snapshot that must not
//! see writes made while it lives (on sled those writes must fail with `Busy`; a compaction
//! inside it must fail with `Busy` on redb and leave the snapshot readable elsewhere),
//! `WriteBatch`es across all tables (committed, or dropped and without effect), `put_stream`
//! in small chunks, `compact`, and close + reopen. On native, a reopen also follows a close
//! that could not sync nor write its index hint (the file system fails every write from then
//! on, as after a crash), so recovery replays the log from an older hint.
//!
//! After every step every table is compared with its model: `iter` (contents and order),
//! `len`, `is_empty`, `get` and `contains_key` of every key of the key space.
//!
//! Variants: one per compiled backend, plus native with 4 KiB segments, a low background
//! compaction threshold and frequent hints, so rotation, background compaction and
//! checkpoints happen within short sequences.
//!
//! Cases per variant: [`DEFAULT_CASES`], or `PROPTEST_CASES`. Failures are shrunk to a minimal
//! sequence, saved in `tests/model.proptest-regressions` (replayed first on every run), and
//! kept as named regression tests at the end of this file.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::executor::block_on;
use futures::StreamExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use typed_kv::{
    BincodeFormat, BytesFormat, CompactionReport, DatabaseBackend, Guard, IngestOptions, OrderPreserving,
    OrderedFormat, RkyvFormat, Storage, StorageBuilder, StorageError, Table, ValueFormat,
};

/// Cases per variant when `PROPTEST_CASES` is not set: the whole file runs in well under a
/// minute on a loaded 2-core machine.
const DEFAULT_CASES: u32 = 48;
/// Longest operation sequence of a case.
const MAX_STEPS: usize = 40;
/// Keys that writes use (indices into each table's key list).
const WRITE_KEYS: u8 = 10;
/// Keys that range bounds and reads use: the write keys and a few never written.
const ALL_KEYS: u8 = 13;

// ---------------------------------------------------------------------------------------
// The three tables

/// An rkyv value: a number, a string and a payload of any size.
#[derive(Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Event {
    id: u64,
    label: String,
    payload: Vec<u8>,
}

impl Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Event {{ id: {}, label: {:?}, payload: {} }}",
            self.id,
            self.label,
            bytes_summary(&self.payload)
        )
    }
}

/// A bincode value.
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Note {
    text: String,
    flag: Option<u16>,
    blob: Vec<u8>,
}

impl Debug for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Note {{ text: {:?}, flag: {:?}, blob: {} }}",
            self.text,
            self.flag,
            bytes_summary(&self.blob)
        )
    }
}

/// Length and first bytes, so that a failure with a 1 MiB value stays readable.
fn bytes_summary(bytes: &[u8]) -> String {
    format!(
        "{} bytes {:02x?}{}",
        bytes.len(),
        &bytes[..bytes.len().min(8)],
        if bytes.len() > 8 { "…" } else { "" }
    )
}

/// The recipe of a value: small, so that shrunk sequences print short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ValueSpec {
    seed: u8,
    len: usize,
}

impl ValueSpec {
    fn bytes(&self) -> Vec<u8> {
        (0..self.len).map(|i| self.seed.wrapping_add((i as u8).wrapping_mul(31)) ^ (i >> 8) as u8).collect()
    }
}

/// One typed table of the model: its key list, how values are made from a [`ValueSpec`], and
/// how a guard is read back into an owned value.
trait Kind {
    type K: Ord + Clone + Debug + 'static;
    type V: PartialEq + Clone + Debug + 'static;
    type KF: OrderPreserving<Self::K>;
    type VF: ValueFormat<Self::V>;
    const NAME: &'static str;
    /// Key number `ix` (< [`ALL_KEYS`]); the first [`WRITE_KEYS`] are the ones written.
    fn key(ix: u8) -> Self::K;
    fn value(spec: &ValueSpec) -> Self::V;
    fn owned(view: &<Self::VF as ValueFormat<Self::V>>::View) -> Self::V;
    fn open(storage: &Storage) -> typed_kv::Result<TableOf<Self>>;
}

type TableOf<X> = Table<<X as Kind>::K, <X as Kind>::V, <X as Kind>::KF, <X as Kind>::VF>;
type Model<X> = BTreeMap<<X as Kind>::K, <X as Kind>::V>;
/// Entries read back, owned, in key order.
type Pairs<X> = Vec<(<X as Kind>::K, <X as Kind>::V)>;

struct Events;
struct Notes;
struct Blobs;

impl Kind for Events {
    type K = (i16, String);
    type V = Event;
    type KF = OrderedFormat;
    type VF = RkyvFormat;
    const NAME: &'static str = "events";

    fn key(ix: u8) -> (i16, String) {
        let (n, s) = [
            (-300, ""),
            (-300, "a"),
            (-1, ""),
            (-1, "\0"),
            (0, ""),
            (0, "a"),
            (0, "a\0"),
            (0, "a\0b"),
            (1, "é"),
            (256, "zz"),
            // Never written: bounds between and around the written keys.
            (i16::MIN, ""),
            (0, "a\u{1}"),
            (i16::MAX, "\u{10FFFF}"),
        ][usize::from(ix)];
        (n, s.to_owned())
    }

    fn value(spec: &ValueSpec) -> Event {
        let label = if spec.seed.is_multiple_of(3) { String::new() } else { format!("event-{}", spec.seed) };
        Event { id: u64::from(spec.seed) << 40 | spec.len as u64, label, payload: spec.bytes() }
    }

    fn owned(view: &ArchivedEvent) -> Event {
        rkyv::deserialize::<Event, rkyv::rancor::Error>(view).expect("a validated archive deserializes")
    }

    fn open(storage: &Storage) -> typed_kv::Result<TableOf<Self>> {
        storage
            .new_table::<(i16, String), Event>(Self::NAME)
            .with_key_format(OrderedFormat::new())
            .with_value_format(RkyvFormat::new())
            .build()
    }
}

impl Kind for Notes {
    type K = Vec<u8>;
    type V = Note;
    type KF = BytesFormat;
    type VF = BincodeFormat;
    const NAME: &'static str = "notes";

    fn key(ix: u8) -> Vec<u8> {
        let keys: [&[u8]; 13] = [
            b"",
            b"\0",
            b"\0\0",
            b"a",
            b"a\0",
            b"ab",
            b"b",
            b"\x7f",
            b"\xff",
            b"\xff\xff",
            // Never written.
            b"\0\x01",
            b"aa",
            b"\xff\xff\xff",
        ];
        keys[usize::from(ix)].to_vec()
    }

    fn value(spec: &ValueSpec) -> Note {
        Note {
            text: "n".repeat(usize::from(spec.seed % 5)),
            flag: (spec.seed % 2 == 1).then_some(u16::from(spec.seed) * 257),
            blob: spec.bytes(),
        }
    }

    fn owned(view: &Note) -> Note {
        view.clone()
    }

    fn open(storage: &Storage) -> typed_kv::Result<TableOf<Self>> {
        storage
            .new_table::<Vec<u8>, Note>(Self::NAME)
            .with_key_format(BytesFormat::new())
            .with_value_format(BincodeFormat::new())
            .build()
    }
}

impl Kind for Blobs {
    type K = u64;
    type V = Vec<u8>;
    type KF = OrderedFormat;
    type VF = BytesFormat;
    const NAME: &'static str = "blobs";

    fn key(ix: u8) -> u64 {
        [0, 1, 2, 255, 256, 257, 65_535, 65_536, 1 << 32, u64::MAX, 3, 1 << 20, u64::MAX - 1][usize::from(ix)]
    }

    fn value(spec: &ValueSpec) -> Vec<u8> {
        spec.bytes()
    }

    fn owned(view: &[u8]) -> Vec<u8> {
        view.to_vec()
    }

    fn open(storage: &Storage) -> typed_kv::Result<TableOf<Self>> {
        storage
            .new_table::<u64, Vec<u8>>(Self::NAME)
            .with_key_format(OrderedFormat::new())
            .with_value_format(BytesFormat::new())
            .build()
    }
}

// ---------------------------------------------------------------------------------------
// Operations

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Events,
    Notes,
    Blobs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BoundSpec {
    Unbounded,
    Included(u8),
    Excluded(u8),
}

impl BoundSpec {
    fn bound<X: Kind>(self) -> Bound<X::K> {
        match self {
            BoundSpec::Unbounded => Bound::Unbounded,
            BoundSpec::Included(ix) => Bound::Included(X::key(ix)),
            BoundSpec::Excluded(ix) => Bound::Excluded(X::key(ix)),
        }
    }
}

/// One write of a batch or of the writes made while a snapshot lives; `None` deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Write {
    table: Which,
    key: u8,
    value: Option<ValueSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Put {
        table: Which,
        key: u8,
        value: ValueSpec,
    },
    PutAll {
        table: Which,
        items: Vec<(u8, ValueSpec)>,
    },
    Delete {
        table: Which,
        key: u8,
    },
    Clear {
        table: Which,
    },
    Range {
        table: Which,
        lower: BoundSpec,
        upper: BoundSpec,
    },
    /// `with_stream`, then `Table::snapshot` (iter, len, range, get).
    Stream {
        table: Which,
        lower: BoundSpec,
        upper: BoundSpec,
    },
    /// A `Storage::read` snapshot that lives across `writes` (and a compaction).
    Snapshot {
        writes: Vec<Write>,
        compact_inside: bool,
        lower: BoundSpec,
        upper: BoundSpec,
    },
    Batch {
        writes: Vec<Write>,
        commit: bool,
    },
    PutStream {
        table: Which,
        items: Vec<(u8, ValueSpec)>,
        chunk_records: usize,
    },
    Compact,
    /// Close and reopen; `clean: false` makes the close fail to sync and to write its hint,
    /// on native (other backends close cleanly).
    Reopen {
        clean: bool,
    },
}

fn which() -> impl Strategy<Value = Which> {
    prop_oneof![Just(Which::Events), Just(Which::Notes), Just(Which::Blobs)]
}

fn write_key() -> impl Strategy<Value = u8> {
    0..WRITE_KEYS
}

fn value_spec() -> impl Strategy<Value = ValueSpec> {
    // Shrinks towards the first choices: empty, then small values.
    let len = prop_oneof![
        20 => Just(0usize),
        150 => 1usize..48,
        40 => 48usize..5000,
        1 => 65_536usize..=1 << 20,
    ];
    (any::<u8>(), len).prop_map(|(seed, len)| ValueSpec { seed, len })
}

fn bound_spec() -> impl Strategy<Value = BoundSpec> {
    prop_oneof![
        1 => Just(BoundSpec::Unbounded),
        2 => (0..ALL_KEYS).prop_map(BoundSpec::Included),
        2 => (0..ALL_KEYS).prop_map(BoundSpec::Excluded),
    ]
}

fn write() -> impl Strategy<Value = Write> {
    (which(), write_key(), prop::option::weighted(0.75, value_spec())).prop_map(|(table, key, value)| Write {
        table,
        key,
        value,
    })
}

fn items() -> impl Strategy<Value = Vec<(u8, ValueSpec)>> {
    prop::collection::vec((write_key(), value_spec()), 0..8)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        20 => (which(), write_key(), value_spec()).prop_map(|(table, key, value)| Op::Put { table, key, value }),
        8 => (which(), items()).prop_map(|(table, items)| Op::PutAll { table, items }),
        12 => (which(), write_key()).prop_map(|(table, key)| Op::Delete { table, key }),
        2 => which().prop_map(|table| Op::Clear { table }),
        10 => (which(), bound_spec(), bound_spec())
            .prop_map(|(table, lower, upper)| Op::Range { table, lower, upper }),
        3 => (which(), bound_spec(), bound_spec())
            .prop_map(|(table, lower, upper)| Op::Stream { table, lower, upper }),
        4 => (prop::collection::vec(write(), 0..5), prop::bool::weighted(0.3), bound_spec(), bound_spec())
            .prop_map(|(writes, compact_inside, lower, upper)| Op::Snapshot { writes, compact_inside, lower, upper }),
        8 => (prop::collection::vec(write(), 0..8), prop::bool::weighted(0.8))
            .prop_map(|(writes, commit)| Op::Batch { writes, commit }),
        3 => (which(), items(), 1usize..4)
            .prop_map(|(table, items, chunk_records)| Op::PutStream { table, items, chunk_records }),
        3 => Just(Op::Compact),
        4 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..=MAX_STEPS)
}

// ---------------------------------------------------------------------------------------
// Variants and the store under test

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// A backend with its default options.
    Plain(DatabaseBackend),
    /// Native with 4 KiB segments, background compaction at 20 % dead, a hint every 8 KiB.
    #[cfg(feature = "native")]
    NativeTinySegments,
}

impl Variant {
    fn backend(self) -> DatabaseBackend {
        match self {
            Variant::Plain(backend) => backend,
            #[cfg(feature = "native")]
            Variant::NativeTinySegments => DatabaseBackend::Native,
        }
    }
}

type TestResult = Result<(), TestCaseError>;

/// A library call that must succeed; its error fails the case (and gets shrunk).
fn lib<T>(result: typed_kv::Result<T>, what: &str) -> Result<T, TestCaseError> {
    result.map_err(|e| TestCaseError::fail(format!("{what}: {e}")))
}

#[derive(Default)]
struct Models {
    events: Model<Events>,
    notes: Model<Notes>,
    blobs: Model<Blobs>,
}

impl Clone for Models {
    fn clone(&self) -> Self {
        Models { events: self.events.clone(), notes: self.notes.clone(), blobs: self.blobs.clone() }
    }
}

struct Tables {
    events: TableOf<Events>,
    notes: TableOf<Notes>,
    blobs: TableOf<Blobs>,
}

/// Calls `f::<Kind>(&table, &mut model, args…)` for the table `which` names.
macro_rules! on_table {
    ($which:expr, $tables:expr, $models:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $which {
            Which::Events => $f::<Events>(&$tables.events, &mut $models.events, $($arg),*),
            Which::Notes => $f::<Notes>(&$tables.notes, &mut $models.notes, $($arg),*),
            Which::Blobs => $f::<Blobs>(&$tables.blobs, &mut $models.blobs, $($arg),*),
        }
    };
}

/// A file system for the native engine that fails every write, sync and rename once
/// `crashed` is set: the close that follows cannot sync nor write its hint, like a process
/// that died. (The files keep what was written before, as the page cache would.)
#[cfg(feature = "native")]
mod crash_vfs {
    use std::io;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use typed_kv::engine::io::{Mapping, OpenMode, OsVfs, Vfs, VfsFile};

    #[derive(Debug, Default)]
    pub struct CrashVfs {
        crashed: Arc<AtomicBool>,
    }

    impl CrashVfs {
        pub fn crash(&self) {
            self.crashed.store(true, Ordering::SeqCst);
        }
    }

    fn check(crashed: &AtomicBool) -> io::Result<()> {
        if crashed.load(Ordering::SeqCst) {
            return Err(io::Error::other("the model test crashed this file system"));
        }
        Ok(())
    }

    #[derive(Debug)]
    struct CrashFile {
        inner: Arc<dyn VfsFile>,
        crashed: Arc<AtomicBool>,
    }

    impl Vfs for CrashVfs {
        fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VfsFile>> {
            if mode != OpenMode::ReadOnly {
                check(&self.crashed)?;
            }
            Ok(Arc::new(CrashFile { inner: OsVfs.open(path, mode)?, crashed: self.crashed.clone() }))
        }
        fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
            OsVfs.list(dir)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            check(&self.crashed)?;
            OsVfs.rename(from, to)
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            check(&self.crashed)?;
            OsVfs.remove_file(path)
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            check(&self.crashed)?;
            OsVfs.sync_dir(dir)
        }
        fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
            OsVfs.create_dir_all(dir)
        }
    }

    impl VfsFile for CrashFile {
        fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            check(&self.crashed)?;
            self.inner.write_all_at(buf, offset)
        }
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            self.inner.read_exact_at(buf, offset)
        }
        fn sync_data(&self) -> io::Result<()> {
            check(&self.crashed)?;
            self.inner.sync_data()
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            check(&self.crashed)?;
            self.inner.set_len(len)
        }
        fn size(&self) -> io::Result<u64> {
            self.inner.size()
        }
        fn map(&self, len: usize) -> io::Result<Mapping> {
            self.inner.map(len)
        }
    }
}

/// The storage under test, its tables, and the model.
struct Harness {
    variant: Variant,
    dir: tempfile::TempDir,
    /// `None` only while reopening.
    open: Option<(Storage, Tables)>,
    models: Models,
    #[cfg(feature = "native")]
    vfs: std::sync::Arc<crash_vfs::CrashVfs>,
}

impl Harness {
    fn new(variant: Variant) -> Result<Self, TestCaseError> {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(format!("tempdir: {e}")))?;
        let mut harness = Harness {
            variant,
            dir,
            open: None,
            models: Models::default(),
            #[cfg(feature = "native")]
            vfs: Default::default(),
        };
        harness.open()?;
        Ok(harness)
    }

    fn backend(&self) -> DatabaseBackend {
        self.variant.backend()
    }

    fn open(&mut self) -> TestResult {
        // Only native sets engine options on the builder.
        #[cfg_attr(not(feature = "native"), allow(unused_mut))]
        let mut builder = StorageBuilder::new(self.dir.path().join("db")).with_backend(self.backend());
        #[cfg(feature = "native")]
        {
            self.vfs = Default::default();
            let vfs: std::sync::Arc<dyn typed_kv::engine::io::Vfs> = self.vfs.clone();
            let options = match self.variant {
                Variant::NativeTinySegments => typed_kv::engine::Options {
                    segment_size: 4 << 10,
                    compaction_threshold: 0.2,
                    checkpoint_bytes: 8 << 10,
                    vfs,
                    ..Default::default()
                },
                Variant::Plain(_) => typed_kv::engine::Options { vfs, ..Default::default() },
            };
            builder = builder.with_native_options(options);
        }
        let storage = lib(builder.build(), "opening the storage")?;
        let tables = Tables {
            events: lib(Events::open(&storage), "building table events")?,
            notes: lib(Notes::open(&storage), "building table notes")?,
            blobs: lib(Blobs::open(&storage), "building table blobs")?,
        };
        self.open = Some((storage, tables));
        Ok(())
    }

    fn reopen(&mut self, clean: bool) -> TestResult {
        #[cfg(feature = "native")]
        if !clean && self.backend() == DatabaseBackend::Native {
            self.vfs.crash();
        }
        let _ = clean;
        // Tables hold the storage too: dropping both closes it.
        self.open = None;
        self.open()
    }

    fn apply(&mut self, op: &Op) -> TestResult {
        let backend = self.backend();
        let (storage, tables) = self.open.as_ref().expect("open");
        let models = &mut self.models;
        match op {
            Op::Put { table, key, value } => on_table!(table, tables, models, put(*key, value)),
            Op::PutAll { table, items } => on_table!(table, tables, models, put_all(items)),
            Op::Delete { table, key } => on_table!(table, tables, models, delete(*key)),
            Op::Clear { table } => on_table!(table, tables, models, clear()),
            Op::Range { table, lower, upper } => on_table!(table, tables, models, range(*lower, *upper)),
            Op::Stream { table, lower, upper } => on_table!(table, tables, models, stream(*lower, *upper)),
            Op::Snapshot { writes, compact_inside, lower, upper } => {
                snapshot(backend, storage, tables, models, writes, *compact_inside, *lower, *upper)
            }
            Op::Batch { writes, commit } => batch(storage, tables, models, writes, *commit),
            Op::PutStream { table, items, chunk_records } => {
                on_table!(table, tables, models, put_stream(items, *chunk_records))
            }
            Op::Compact => compact(backend, storage),
            Op::Reopen { clean } => self.reopen(*clean),
        }
    }

    /// Every table against its model.
    fn check(&mut self) -> TestResult {
        let (_, tables) = self.open.as_ref().expect("open");
        let models = &mut self.models;
        on_table!(Which::Events, tables, models, check_table())?;
        on_table!(Which::Notes, tables, models, check_table())?;
        on_table!(Which::Blobs, tables, models, check_table())
    }
}

// ---------------------------------------------------------------------------------------
// Each operation, on one table and its model

fn put<X: Kind>(table: &TableOf<X>, model: &mut Model<X>, key: u8, value: &ValueSpec) -> TestResult {
    let (key, value) = (X::key(key), X::value(value));
    lib(table.put(&key, &value), "put")?;
    model.insert(key, value);
    Ok(())
}

fn put_all<X: Kind>(table: &TableOf<X>, model: &mut Model<X>, items: &[(u8, ValueSpec)]) -> TestResult {
    let items: Vec<(X::K, X::V)> = items.iter().map(|(k, v)| (X::key(*k), X::value(v))).collect();
    lib(table.put_all(&items), "put_all")?;
    // In order: a later item with the same key wins.
    model.extend(items);
    Ok(())
}

fn delete<X: Kind>(table: &TableOf<X>, model: &mut Model<X>, key: u8) -> TestResult {
    let key = X::key(key);
    let existed = lib(table.delete(&key), "delete")?;
    prop_assert_eq!(existed, model.remove(&key).is_some(), "delete of {:?} in {}: its answer", key, X::NAME);
    Ok(())
}

fn clear<X: Kind>(table: &TableOf<X>, model: &mut Model<X>) -> TestResult {
    lib(table.clear(), "clear")?;
    model.clear();
    Ok(())
}

/// The model's entries within the bounds. Not `BTreeMap::range`, which panics on inverted
/// bounds: the library must return nothing for them, not panic.
fn model_range<X: Kind>(model: &Model<X>, lower: &Bound<X::K>, upper: &Bound<X::K>) -> Vec<(X::K, X::V)> {
    let above = |k: &X::K| match lower {
        Bound::Unbounded => true,
        Bound::Included(b) => k >= b,
        Bound::Excluded(b) => k > b,
    };
    let below = |k: &X::K| match upper {
        Bound::Unbounded => true,
        Bound::Included(b) => k <= b,
        Bound::Excluded(b) => k < b,
    };
    model.iter().filter(|(k, _)| above(k) && below(k)).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Reads entries into owned pairs.
fn collect<'a, X: Kind + 'a>(
    entries: impl Iterator<Item = typed_kv::Result<(X::K, Guard<'a, X::V, X::VF>)>>,
    what: &str,
) -> Result<Pairs<X>, TestCaseError> {
    let mut out = Vec::new();
    for entry in entries {
        let (key, guard) = lib(entry, what)?;
        out.push((key, X::owned(&guard)));
    }
    Ok(out)
}

/// Fails with the first difference between what the library returned and the model.
fn same_entries<X: Kind>(found: &[(X::K, X::V)], expected: &[(X::K, X::V)], what: &str) -> TestResult {
    if found == expected {
        return Ok(());
    }
    let keys = |entries: &[(X::K, X::V)]| entries.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    let first = found.iter().zip(expected).position(|(f, e)| f != e);
    Err(TestCaseError::fail(format!(
        "{what} of table {}: {} entries, model has {}\n  keys found: {:?}\n  model keys: {:?}\n  first difference: {}",
        X::NAME,
        found.len(),
        expected.len(),
        keys(found),
        keys(expected),
        match first {
            Some(i) => format!("found {:?}, model {:?}", found[i], expected[i]),
            None => "one is a prefix of the other".to_owned(),
        }
    )))
}

fn range<X: Kind>(
    table: &TableOf<X>,
    model: &mut Model<X>,
    lower: BoundSpec,
    upper: BoundSpec,
) -> TestResult {
    let (lower, upper) = (lower.bound::<X>(), upper.bound::<X>());
    let expected = model_range::<X>(model, &lower, &upper);
    let what = format!("range ({lower:?}, {upper:?})");
    let found = collect::<X>(lib(table.range((lower, upper)), &what)?, &what)?;
    same_entries::<X>(&found, &expected, &what)
}

fn stream<X: Kind>(
    table: &TableOf<X>,
    model: &mut Model<X>,
    lower: BoundSpec,
    upper: BoundSpec,
) -> TestResult {
    let expected: Vec<(X::K, X::V)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let streamed = lib(
        table.with_stream(|s| block_on(s.map(|(k, guard)| (k, X::owned(&guard))).collect::<Vec<_>>())),
        "with_stream",
    )?;
    same_entries::<X>(&streamed, &expected, "with_stream")?;

    let snapshot = lib(table.snapshot(), "Table::snapshot")?;
    let found = collect::<X>(lib(snapshot.iter(), "snapshot iter")?, "snapshot iter")?;
    same_entries::<X>(&found, &expected, "Table::snapshot iter")?;
    prop_assert_eq!(lib(snapshot.len(), "snapshot len")?, model.len() as u64);
    prop_assert_eq!(lib(snapshot.is_empty(), "snapshot is_empty")?, model.is_empty());
    let (lower, upper) = (lower.bound::<X>(), upper.bound::<X>());
    let expected = model_range::<X>(model, &lower, &upper);
    let what = format!("Table::snapshot range ({lower:?}, {upper:?})");
    let found = collect::<X>(lib(snapshot.range((lower, upper)), &what)?, &what)?;
    same_entries::<X>(&found, &expected, &what)?;
    for ix in 0..ALL_KEYS {
        let key = X::key(ix);
        let got = lib(snapshot.get(&key), "snapshot get")?.map(|g| X::owned(&g));
        prop_assert_eq!(got.as_ref(), model.get(&key), "Table::snapshot get {:?} of {}", key, X::NAME);
        prop_assert_eq!(lib(snapshot.contains_key(&key), "snapshot contains_key")?, model.contains_key(&key));
    }
    Ok(())
}

fn put_stream<X: Kind>(
    table: &TableOf<X>,
    model: &mut Model<X>,
    items: &[(u8, ValueSpec)],
    chunk_records: usize,
) -> TestResult {
    let items: Vec<(X::K, X::V)> = items.iter().map(|(k, v)| (X::key(*k), X::value(v))).collect();
    let options = IngestOptions::default().chunk_records(chunk_records);
    let report =
        lib(block_on(table.put_stream_with(futures::stream::iter(items.clone()), options)), "put_stream")?;
    prop_assert_eq!(report.records, items.len() as u64, "put_stream records");
    // A chunk ends at `chunk_records` items or earlier (at 4 MiB): never fewer chunks.
    let least = items.len().div_ceil(chunk_records) as u64;
    prop_assert!(
        report.chunks >= least && report.chunks <= items.len() as u64,
        "put_stream of {} items by {chunk_records}: {} chunks",
        items.len(),
        report.chunks
    );
    model.extend(items);
    Ok(())
}

fn compact(backend: DatabaseBackend, storage: &Storage) -> TestResult {
    let report = lib(storage.compact(), "compact")?;
    let expected_kind = match report {
        CompactionReport::NotSupported { .. } => backend == DatabaseBackend::Sled,
        _ => backend != DatabaseBackend::Sled,
    };
    prop_assert!(expected_kind, "compact on {backend}: {report:?}");
    Ok(())
}

/// Adds one write to a batch (the model is updated only if the batch commits).
fn batch_write<X: Kind>(
    table: &TableOf<X>,
    pending: &mut Model<X>,
    batch: &mut typed_kv::WriteBatch<'_>,
    key: u8,
    value: Option<ValueSpec>,
) -> TestResult {
    let key = X::key(key);
    match value {
        Some(v) => {
            let v = X::value(&v);
            lib(batch.put(table, &key, &v).map(drop), "batch put")?;
            pending.insert(key, v);
        }
        None => {
            lib(batch.delete(table, &key).map(drop), "batch delete")?;
            pending.remove(&key);
        }
    }
    Ok(())
}

fn batch(
    storage: &Storage,
    tables: &Tables,
    models: &mut Models,
    writes: &[Write],
    commit: bool,
) -> TestResult {
    let mut pending = models.clone();
    let mut batch = storage.batch();
    for w in writes {
        on_table!(w.table, tables, pending, batch_write(&mut batch, w.key, w.value))?;
    }
    prop_assert_eq!(batch.len(), writes.len());
    prop_assert_eq!(batch.is_empty(), writes.is_empty());
    if commit {
        lib(batch.commit(), "batch commit")?;
        *models = pending;
    } else {
        // Dropped without commit: no effect (the check after the step proves it).
        drop(batch);
    }
    Ok(())
}

/// One write while a snapshot lives: applied, or on sled refused with `Busy` (its writers
/// wait for snapshots, and this thread holds one).
fn write_during_snapshot<X: Kind>(
    table: &TableOf<X>,
    model: &mut Model<X>,
    backend: DatabaseBackend,
    key: u8,
    value: Option<ValueSpec>,
) -> TestResult {
    let key = X::key(key);
    let result = match value {
        Some(v) => {
            let v = X::value(&v);
            table.put(&key, &v).map(|()| {
                model.insert(key.clone(), v);
            })
        }
        None => table.delete(&key).map(|existed| {
            let had = model.remove(&key).is_some();
            assert_eq!(existed, had, "delete of {key:?} in {} during a snapshot: its answer", X::NAME);
        }),
    };
    match (backend, result) {
        (DatabaseBackend::Sled, Err(StorageError::Busy { .. })) => Ok(()),
        (DatabaseBackend::Sled, other) => {
            Err(TestCaseError::fail(format!("a write on sled while this thread holds a snapshot: {other:?}")))
        }
        (_, result) => lib(result, "a write while a snapshot lives"),
    }
}

/// The snapshot sees the state of when it was taken, in every table.
fn check_snapshot_table<X: Kind>(
    table: &TableOf<X>,
    model: &mut Model<X>,
    snapshot: &typed_kv::ReadTxn<'_>,
    lower: BoundSpec,
    upper: BoundSpec,
) -> TestResult {
    let expected: Vec<(X::K, X::V)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let found = collect::<X>(lib(snapshot.iter(table), "ReadTxn iter")?, "ReadTxn iter")?;
    same_entries::<X>(&found, &expected, "Storage::read snapshot iter")?;
    prop_assert_eq!(
        lib(snapshot.len(table), "ReadTxn len")?,
        model.len() as u64,
        "ReadTxn len of {}",
        X::NAME
    );
    let (lower, upper) = (lower.bound::<X>(), upper.bound::<X>());
    let expected = model_range::<X>(model, &lower, &upper);
    let what = format!("Storage::read snapshot range ({lower:?}, {upper:?})");
    let found = collect::<X>(lib(snapshot.range(table, (lower, upper)), &what)?, &what)?;
    same_entries::<X>(&found, &expected, &what)?;
    for ix in 0..ALL_KEYS {
        let key = X::key(ix);
        let got = lib(snapshot.get(table, &key), "ReadTxn get")?.map(|g| X::owned(&g));
        prop_assert_eq!(got.as_ref(), model.get(&key), "ReadTxn get {:?} of {}", key, X::NAME);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn snapshot(
    backend: DatabaseBackend,
    storage: &Storage,
    tables: &Tables,
    models: &mut Models,
    writes: &[Write],
    compact_inside: bool,
    lower: BoundSpec,
    upper: BoundSpec,
) -> TestResult {
    let mut before = models.clone();
    let snapshot = lib(storage.read(), "Storage::read")?;
    for w in writes {
        on_table!(w.table, tables, models, write_during_snapshot(backend, w.key, w.value))?;
    }
    if compact_inside {
        match (backend, storage.compact()) {
            (DatabaseBackend::Redb, Err(StorageError::Busy { .. })) => {}
            (DatabaseBackend::Redb, other) => {
                return Err(TestCaseError::fail(format!("redb compaction with a live snapshot: {other:?}")))
            }
            (_, result) => {
                lib(result, "compact while a snapshot lives")?;
            }
        }
    }
    on_table!(Which::Events, tables, before, check_snapshot_table(&snapshot, lower, upper))?;
    on_table!(Which::Notes, tables, before, check_snapshot_table(&snapshot, lower, upper))?;
    on_table!(Which::Blobs, tables, before, check_snapshot_table(&snapshot, lower, upper))
}

fn check_table<X: Kind>(table: &TableOf<X>, model: &mut Model<X>) -> TestResult {
    let expected: Vec<(X::K, X::V)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let found = collect::<X>(lib(table.iter(), "iter")?, "iter")?;
    same_entries::<X>(&found, &expected, "iter")?;
    prop_assert_eq!(lib(table.len(), "len")?, model.len() as u64, "len of {}", X::NAME);
    prop_assert_eq!(lib(table.is_empty(), "is_empty")?, model.is_empty(), "is_empty of {}", X::NAME);
    for ix in 0..ALL_KEYS {
        let key = X::key(ix);
        let got = lib(table.get(&key), "get")?.map(|g| X::owned(&g));
        prop_assert_eq!(got.as_ref(), model.get(&key), "get {:?} of {}", key, X::NAME);
        prop_assert_eq!(lib(table.contains_key(&key), "contains_key")?, model.contains_key(&key));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Running

/// Applies `ops` in order, checking every table after each one (the native regression
/// tests replay their shrunk sequences with it).
#[cfg(feature = "native")]
fn run_case(variant: Variant, ops: &[Op]) -> TestResult {
    run_counted(variant, ops, &AtomicU64::new(0))
}

/// [`run_case`], adding the steps done to `steps`.
fn run_counted(variant: Variant, ops: &[Op], steps: &AtomicU64) -> TestResult {
    let mut harness = Harness::new(variant)?;
    harness.check()?;
    for (i, op) in ops.iter().enumerate() {
        harness.apply(op).map_err(|e| TestCaseError::fail(format!("step {i} {op:?}: {e}")))?;
        harness.check().map_err(|e| TestCaseError::fail(format!("after step {i} {op:?}: {e}")))?;
        steps.fetch_add(1, Ordering::Relaxed);
    }
    // The model outlives a last clean reopen.
    harness.reopen(true)?;
    harness.check().map_err(|e| TestCaseError::fail(format!("after the final reopen: {e}")))
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(DEFAULT_CASES)
}

fn model_matches_btreemap(variant: Variant) {
    let config = Config {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/model.proptest-regressions"
        )))),
        source_file: Some(file!()),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let started = std::time::Instant::now();
    let (runs, steps) = (AtomicU64::new(0), AtomicU64::new(0));
    let result = runner.run(&ops(), |ops| {
        runs.fetch_add(1, Ordering::Relaxed);
        run_counted(variant, &ops, &steps)
    });
    if let Err(e) = result {
        panic!("{variant:?}: {e}\n{runner}");
    }
    // Runs include the saved regression cases, replayed first.
    eprintln!(
        "model {variant:?}: {} cases ({} runs), {} steps, each followed by a full check, {:.1} s",
        cases(),
        runs.load(Ordering::Relaxed),
        steps.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
}

/// One `#[test]` per variant.
macro_rules! variants {
    ($($test:ident),* $(,)?) => {
        #[cfg(feature = "native")]
        mod native {
            $( #[test] fn $test() { super::$test(super::Variant::Plain(typed_kv::DatabaseBackend::Native)) } )*
        }
        #[cfg(feature = "native")]
        mod native_tiny_segments {
            $( #[test] fn $test() { super::$test(super::Variant::NativeTinySegments) } )*
        }
        #[cfg(feature = "redb")]
        mod redb {
            $( #[test] fn $test() { super::$test(super::Variant::Plain(typed_kv::DatabaseBackend::Redb)) } )*
        }
        #[cfg(feature = "sled")]
        mod sled {
            $( #[test] fn $test() { super::$test(super::Variant::Plain(typed_kv::DatabaseBackend::Sled)) } )*
        }
        #[cfg(feature = "rocksdb")]
        mod rocksdb {
            $( #[test] fn $test() { super::$test(super::Variant::Plain(typed_kv::DatabaseBackend::RocksDb)) } )*
        }
    };
}

variants!(model_matches_btreemap);

// ---------------------------------------------------------------------------------------
// Regressions found by the model

/// Found by the model on native with tiny segments: a write returned while readers still saw
/// the version before it. A compaction published its version in two steps, first marking
/// its sequence number synced (which lets a committer whose batch it covers return), then
/// storing the version; a committer returning in between read its own write's key as it
/// was before (a deleted key still there, an overwritten value back). Here one thread
/// writes and reads back while another compacts without pause.
#[cfg(feature = "native")]
#[test]
fn native_write_is_visible_when_it_returns_during_compactions() {
    use std::sync::atomic::AtomicBool;
    use typed_kv::engine::{Db, Op as EngineOp, Options, ValueAlign};

    /// Stops the compactor however the writers end, so a failed assertion cannot hang the scope.
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    const WRITERS: u8 = 4;
    let dir = tempfile::tempdir().unwrap();
    let options = Options { segment_size: 4 << 10, compaction_threshold: 0.0, ..Default::default() };
    let db = Db::open(dir.path(), options).unwrap();
    let table = db.table("t").unwrap();
    let writes: u32 =
        std::env::var("TYPED_KV_MODEL_RACE_WRITES").ok().and_then(|n| n.parse().ok()).unwrap_or(500);
    let stop = AtomicBool::new(false);
    let (compactions, stale) = std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let compactor = s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                db.compact().unwrap();
                n += 1;
            }
            n
        });
        // Each writer owns 4 keys: what it reads back right after a write is what it wrote.
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (db, table) = (&db, &table);
                s.spawn(move || {
                    let mut model: [Option<u32>; 4] = [None; 4];
                    let mut stale = Vec::new();
                    for i in 0..writes {
                        let slot = (i * 3 % 4) as usize;
                        let key = [w, slot as u8];
                        if i % 3 == 2 {
                            let existed = db.delete(table, &key).unwrap();
                            assert_eq!(
                                existed,
                                model[slot].take().is_some(),
                                "writer {w}, write {i}: delete's answer"
                            );
                        } else {
                            let value = i.to_le_bytes();
                            let put =
                                EngineOp::Put { table, key: &key, value: &value, align: ValueAlign::Packed };
                            db.write(&[put]).unwrap();
                            model[slot] = Some(i);
                        }
                        let got = db
                            .get(table, &key)
                            .unwrap()
                            .map(|v| u32::from_le_bytes(v[..4].try_into().unwrap()));
                        if got != model[slot] {
                            stale.push(format!(
                                "writer {w}, write {i}: key {key:?} reads {got:?}, not {:?}",
                                model[slot]
                            ));
                        }
                    }
                    stale
                })
            })
            .collect();
        let stale: Vec<String> = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
        drop(_stop);
        (compactor.join().unwrap(), stale)
    });
    eprintln!(
        "{} writes read back during {compactions} compactions: {} stale",
        writes * u32::from(WRITERS),
        stale.len()
    );
    assert!(compactions > 0, "no compaction ran during the writes");
    assert!(
        stale.is_empty(),
        "{} writes not visible when they returned: {:?}",
        stale.len(),
        &stale[..stale.len().min(5)]
    );
}

/// The sequence the model shrank the bug above to, on native with 4 KiB segments (shrinking
/// stalled at 23 steps: the failure depends on when the background compaction runs, so it
/// showed in about 1 run in 20 here). A write of step 12 or a delete of step 22 was not
/// visible when it returned. Replayed a few times.
#[cfg(feature = "native")]
#[test]
fn native_tiny_segments_writes_visible_during_background_compaction() {
    use BoundSpec::{Excluded, Included, Unbounded};
    use Which::{Blobs, Events, Notes};
    let v = |seed: u8, len: usize| ValueSpec { seed, len };
    let put = |table, key, value| Op::Put { table, key, value };
    let range = |table, lower, upper| Op::Range { table, lower, upper };
    let write = |table, key, value| Write { table, key, value };
    let ops = vec![
        put(Notes, 3, v(71, 45)),
        Op::Snapshot {
            writes: vec![
                write(Events, 1, Some(v(62, 16))),
                write(Notes, 0, None),
                write(Events, 9, Some(v(94, 1864))),
            ],
            compact_inside: false,
            lower: Included(4),
            upper: Excluded(10),
        },
        Op::PutAll {
            table: Events,
            items: vec![(7, v(165, 1113)), (2, v(72, 3)), (8, v(16, 0)), (6, v(121, 23)), (0, v(5, 0))],
        },
        put(Events, 2, v(126, 0)),
        range(Notes, Excluded(3), Unbounded),
        put(Events, 4, v(246, 47)),
        Op::PutAll {
            table: Blobs,
            items: vec![
                (5, v(25, 1367)),
                (5, v(43, 32)),
                (2, v(58, 532)),
                (0, v(229, 3287)),
                (7, v(239, 19)),
                (8, v(106, 14)),
            ],
        },
        range(Blobs, Excluded(5), Excluded(9)),
        put(Blobs, 3, v(156, 1301)),
        Op::Batch { writes: vec![write(Events, 2, Some(v(253, 34)))], commit: true },
        Op::PutStream { table: Events, items: vec![(5, v(223, 43))], chunk_records: 2 },
        put(Notes, 8, v(172, 2505)),
        put(Events, 5, v(37, 0)),
        range(Events, Excluded(7), Excluded(7)),
        Op::PutAll { table: Blobs, items: vec![(2, v(16, 0))] },
        put(Events, 7, v(189, 25)),
        range(Events, Unbounded, Included(10)),
        range(Events, Included(7), Excluded(12)),
        range(Blobs, Unbounded, Excluded(10)),
        Op::Delete { table: Events, key: 4 },
        Op::PutAll { table: Blobs, items: vec![(3, v(76, 2998)), (3, v(158, 31))] },
        Op::Delete { table: Blobs, key: 5 },
        Op::Delete { table: Events, key: 8 },
    ];
    for run in 0..8 {
        if let Err(e) = run_case(Variant::NativeTinySegments, &ops) {
            panic!("run {run}: {e}");
        }
    }
}
