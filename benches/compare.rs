//! The comparison benchmark: typed-kv on every compiled backend against the raw engines, on the
//! workload of redb's published comparison (`crates/redb-bench-compare` in cberner/redb).
//!
//! Random 24-byte keys and 150-byte values from a fixed seed, then, in order: a bulk load of
//! N pairs in one durable commit, 1,000 durable single-pair commits, 100 durable commits of
//! 1,000 pairs, N random reads on one thread and split over two, N/2 scans of 10 entries, the
//! removal of N/2 keys in one durable commit, and a compaction; sizes on disk are taken after
//! the load, the removals and the compaction.
//!
//! ```sh
//! BENCH_N=20000 cargo bench --bench compare                 # smoke run, default backends
//! cargo bench --all-features --bench compare                # N = 1,000,000, every system
//! BENCH_SYSTEMS=redb,tkv-redb-bytes cargo bench --bench compare
//! ```
//!
//! Environment:
//! - `BENCH_N`: pairs bulk-loaded (default 1,000,000).
//! - `BENCH_SYSTEMS`: comma list of systems to run (default: all compiled; unknown names
//!   are an error that lists the known ones).
//! - `BENCH_OUT`: where the markdown table, the JSON and the SVG go (default
//!   `<crate>/bench-results`).
//! - `BENCH_DIR`: where each system gets its temporary store (default
//!   `<crate>/bench-results/tmp`, on the work tree's disk, so fsync is real; the file system
//!   type is printed, with a warning on tmpfs).
//! - `BENCH_MERGE=1`: keep the systems of an earlier run at the same N that this run did not
//!   run (to split a long run over several invocations). `BENCH_SYSTEMS=none BENCH_MERGE=1`
//!   only renders the table and chart again from the JSON.
//! - `BENCH_REPEAT`: runs of each read phase, the median is reported (default 3).
//! - `BENCH_CACHE_MB`: cache size given to the raw engines that take one (default 1024, the
//!   default of redb and sled, so that raw redb and raw sled run as typed-kv configures them).

use std::collections::BTreeMap;
use std::error::Error;
use std::fs;
use std::ops::{Bound, Range};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};
use typed_kv::{
    BytesFormat, DatabaseBackend, Guard, RkyvFormat, Storage, StorageBuilder, Table, ValueFormat,
};

#[path = "support/mod.rs"]
mod support;

use support::{env_usize, random_pairs, Res, KEY_LEN, VALUE_LEN};

const SEED: u64 = 3;
const INDIVIDUAL_WRITES: usize = 1_000;
const BATCHES: usize = 100;
const BATCH_SIZE: usize = 1_000;
const SCAN_LEN: usize = 10;
const LMDB_MAP_SIZE: usize = 4 << 30;

// ---------------------------------------------------------------------------------------------
// The workload
// ---------------------------------------------------------------------------------------------

/// Every pair any phase writes, generated once from the fixed seed and shared by all systems:
/// `0..n` bulk load, then the individual writes, then the batches.
struct Data {
    n: usize,
    keys: Vec<Vec<u8>>,
    values: Vec<Vec<u8>>,
    /// A fixed-seed permutation of `0..n`: the order of the random reads; its first half
    /// gives the start keys of the range reads.
    order: Vec<u32>,
}

impl Data {
    fn new(n: usize) -> Self {
        let total = n + INDIVIDUAL_WRITES + BATCHES * BATCH_SIZE;
        let mut rng = fastrand::Rng::with_seed(SEED);
        let (keys, values) = random_pairs(&mut rng, total);
        let mut order: Vec<u32> = (0..n as u32).collect();
        rng.shuffle(&mut order);
        Self { n, keys, values, order }
    }

    fn individual(&self) -> Range<usize> {
        self.n..self.n + INDIVIDUAL_WRITES
    }

    fn batch(&self, b: usize) -> Range<usize> {
        let start = self.n + INDIVIDUAL_WRITES + b * BATCH_SIZE;
        start..start + BATCH_SIZE
    }

    fn total(&self) -> usize {
        self.keys.len()
    }

    /// Sum of the first byte of the values read in `order`: what a read phase must return.
    fn checksum(&self, order: &[u32]) -> u64 {
        order.iter().map(|&i| u64::from(self.values[i as usize][0])).sum()
    }
}

/// Checks a value read back and returns its first byte, for the checksum.
fn check_value(value: &[u8]) -> Res<u64> {
    if value.len() != VALUE_LEN {
        return Err(format!("read a value of {} bytes, expected {VALUE_LEN}", value.len()).into());
    }
    Ok(u64::from(value[0]))
}

fn missing(key: &[u8]) -> Box<dyn Error + Send + Sync> {
    format!("key {key:02x?} is missing").into()
}

/// One system under test: a phase per method. Systems are `Sync` so that the two-thread read
/// phase can share one.
trait Bench: Sync {
    /// `range` of the data in one durable commit.
    fn bulk_load(&mut self, data: &Data, range: Range<usize>) -> Res<()>;
    /// Pair `i` in one durable commit of its own.
    fn individual_write(&mut self, data: &Data, i: usize) -> Res<()>;
    /// `range` of the data in one durable commit.
    fn batch_write(&mut self, data: &Data, range: Range<usize>) -> Res<()> {
        self.bulk_load(data, range)
    }
    /// Reads the values of the keys in `order` through one snapshot / read transaction;
    /// returns the checksum of their first bytes.
    fn random_reads(&self, data: &Data, order: &[u32]) -> Res<u64>;
    /// The same without a snapshot (typed-kv's `Table::get`); `None` where there is no such
    /// distinction.
    fn random_reads_plain(&self, _data: &Data, _order: &[u32]) -> Option<Res<u64>> {
        None
    }
    /// Scans up to [`SCAN_LEN`] entries from each key of `starts` through one snapshot;
    /// returns (entries seen, checksum of their values' first bytes).
    fn range_reads(&self, data: &Data, starts: &[u32]) -> Res<(u64, u64)>;
    /// Removes the keys of `range` in one durable commit.
    fn removals(&mut self, data: &Data, range: Range<usize>) -> Res<()>;
    /// Compacts; `false` if the system has no compaction.
    fn compaction(&mut self) -> Res<bool>;
    /// Figures specific to the system (e.g. rkyv's aligned copies), for the JSON.
    fn extra(&self) -> Vec<(&'static str, f64)> {
        Vec::new()
    }
}

// ---------------------------------------------------------------------------------------------
// typed-kv, through its public API only
// ---------------------------------------------------------------------------------------------

/// The rkyv value of the typed-kv rkyv systems: the same 150 payload bytes, archived as they
/// are (an `[u8; 150]` archives to exactly 150 bytes, so sizes stay comparable).
#[derive(rkyv::Archive, rkyv::Serialize)]
struct Value {
    bytes: [u8; VALUE_LEN],
}

type TkvTable<K> = Table<Vec<u8>, <K as ValueKind>::V, BytesFormat, <K as ValueKind>::F>;

/// How a typed-kv system stores its values.
trait ValueKind: 'static {
    type V;
    type F: ValueFormat<Self::V> + Send + Sync;
    fn format() -> Self::F;
    fn put_all(table: &TkvTable<Self>, data: &Data, range: Range<usize>) -> typed_kv::Result<()>;
    fn put(table: &TkvTable<Self>, data: &Data, i: usize) -> typed_kv::Result<()>;
    /// Checks a value read through its guard and returns its first byte.
    fn first_byte(guard: &Guard<'_, Self::V, Self::F>) -> Res<u64>;
}

/// Raw bytes (`Vec<u8>` with `BytesFormat`): the typed layer's own overhead.
struct RawBytesValues;

impl ValueKind for RawBytesValues {
    type V = Vec<u8>;
    type F = BytesFormat;

    fn format() -> BytesFormat {
        BytesFormat::new()
    }

    fn put_all(table: &TkvTable<Self>, data: &Data, range: Range<usize>) -> typed_kv::Result<()> {
        table.put_all(data.keys[range.clone()].iter().zip(&data.values[range]))
    }

    fn put(table: &TkvTable<Self>, data: &Data, i: usize) -> typed_kv::Result<()> {
        table.put(&data.keys[i], &data.values[i])
    }

    fn first_byte(guard: &Guard<'_, Vec<u8>, BytesFormat>) -> Res<u64> {
        check_value(guard)
    }
}

/// rkyv values read in place through guards: what users do.
struct RkyvValues;

impl ValueKind for RkyvValues {
    type V = Value;
    type F = RkyvFormat;

    fn format() -> RkyvFormat {
        RkyvFormat::new()
    }

    fn put_all(table: &TkvTable<Self>, data: &Data, range: Range<usize>) -> typed_kv::Result<()> {
        let values = data.values[range.clone()].iter().map(|v| to_value(v));
        table.put_all(data.keys[range].iter().zip(values))
    }

    fn put(table: &TkvTable<Self>, data: &Data, i: usize) -> typed_kv::Result<()> {
        table.put(&data.keys[i], &to_value(&data.values[i]))
    }

    fn first_byte(guard: &Guard<'_, Value, RkyvFormat>) -> Res<u64> {
        let archived: &ArchivedValue = guard;
        check_value(guard.raw_bytes())?;
        Ok(u64::from(archived.bytes[0]))
    }
}

fn to_value(bytes: &[u8]) -> Value {
    let mut value = Value { bytes: [0; VALUE_LEN] };
    value.bytes.copy_from_slice(bytes);
    value
}

struct TypedKv<K: ValueKind> {
    storage: Storage,
    table: TkvTable<K>,
}

impl<K: ValueKind> TypedKv<K> {
    fn open(backend: DatabaseBackend, dir: &Path) -> Res<Self> {
        Self::open_with(backend, dir, true)
    }

    /// With `verify_reads` false, native reads skip their records' CRC check.
    fn open_with(backend: DatabaseBackend, dir: &Path, verify_reads: bool) -> Res<Self> {
        // Durability::Immediate, the default: every commit is synced before it returns.
        let native = typed_kv::engine::Options { verify_reads, ..Default::default() };
        let storage =
            StorageBuilder::new(dir.join("db")).with_backend(backend).with_native_options(native).build()?;
        let table = storage
            .new_table::<Vec<u8>, K::V>("x")
            .with_key_format(BytesFormat::new())
            .with_value_format(K::format())
            .build()?;
        Ok(Self { storage, table })
    }
}

impl<K: ValueKind> Bench for TypedKv<K>
where
    TkvTable<K>: Sync,
{
    /// `put_all`: one atomic, durable commit of the whole range.
    fn bulk_load(&mut self, data: &Data, range: Range<usize>) -> Res<()> {
        Ok(K::put_all(&self.table, data, range)?)
    }

    fn individual_write(&mut self, data: &Data, i: usize) -> Res<()> {
        Ok(K::put(&self.table, data, i)?)
    }

    /// One `Table::snapshot` serves every get, as redb's comparison reuses one read
    /// transaction.
    fn random_reads(&self, data: &Data, order: &[u32]) -> Res<u64> {
        let snapshot = self.table.snapshot()?;
        let mut sum = 0;
        for &i in order {
            let key = &data.keys[i as usize];
            let guard = snapshot.get(key)?.ok_or_else(|| missing(key))?;
            sum += K::first_byte(&guard)?;
        }
        Ok(sum)
    }

    fn random_reads_plain(&self, data: &Data, order: &[u32]) -> Option<Res<u64>> {
        let read = || {
            let mut sum = 0;
            for &i in order {
                let key = &data.keys[i as usize];
                let guard = self.table.get(key)?.ok_or_else(|| missing(key))?;
                sum += K::first_byte(&guard)?;
            }
            Ok(sum)
        };
        Some(read())
    }

    fn range_reads(&self, data: &Data, starts: &[u32]) -> Res<(u64, u64)> {
        let snapshot = self.table.snapshot()?;
        let (mut seen, mut sum) = (0, 0);
        for &i in starts {
            let start = &data.keys[i as usize];
            let range = (Bound::Included(start), Bound::Unbounded);
            // The workload reads values only (redb's benchmark drops each key), so keys are
            // not decoded: `values()`, as a user who needs no keys would write it.
            for guard in snapshot.range(range)?.values().take(SCAN_LEN) {
                sum += K::first_byte(&guard?)?;
                seen += 1;
            }
        }
        Ok((seen, sum))
    }

    /// One `Storage::batch` of deletes, committed once.
    fn removals(&mut self, data: &Data, range: Range<usize>) -> Res<()> {
        let mut batch = self.storage.batch();
        for key in &data.keys[range] {
            batch.delete(&self.table, key)?;
        }
        Ok(batch.commit()?)
    }

    fn compaction(&mut self) -> Res<bool> {
        Ok(!matches!(self.storage.compact()?, typed_kv::CompactionReport::NotSupported { .. }))
    }

    fn extra(&self) -> Vec<(&'static str, f64)> {
        vec![("aligned_copies", self.storage.aligned_copies() as f64)]
    }
}

// ---------------------------------------------------------------------------------------------
// The raw engines, configured as in redb's comparison
// ---------------------------------------------------------------------------------------------

#[cfg(feature = "native")]
mod raw_native {
    use typed_kv::engine::{Db, Op, Options, Table, ValueAlign};

    use super::*;

    /// typed-kv's native engine through its own byte API (`typed_kv::engine`), without the
    /// typed layer: what the typed columns on native cost on top of it. Durable commits
    /// (`SyncMode::Always`, the default).
    pub struct RawNative {
        db: Db,
        table: Table,
    }

    impl RawNative {
        /// With `verify_reads` false, reads skip their records' CRC check.
        pub fn open(dir: &Path, verify_reads: bool) -> Res<Self> {
            let db = Db::open(dir.join("native"), Options { verify_reads, ..Options::default() })?;
            let table = db.table("x")?;
            Ok(Self { db, table })
        }
    }

    impl Bench for RawNative {
        fn bulk_load(&mut self, data: &Data, range: Range<usize>) -> Res<()> {
            let ops: Vec<Op<'_>> = range
                .map(|i| Op::Put {
                    table: &self.table,
                    key: &data.keys[i],
                    value: &data.values[i],
                    align: ValueAlign::Packed,
                })
                .collect();
            Ok(self.db.write(&ops)?)
        }

        fn individual_write(&mut self, data: &Data, i: usize) -> Res<()> {
            self.bulk_load(data, i..i + 1)
        }

        fn random_reads(&self, data: &Data, order: &[u32]) -> Res<u64> {
            let snapshot = self.db.snapshot();
            let mut sum = 0;
            for &i in order {
                let key = data.keys[i as usize].as_slice();
                let value = snapshot.get(&self.table, key)?.ok_or_else(|| missing(key))?;
                sum += check_value(value)?;
            }
            Ok(sum)
        }

        fn range_reads(&self, data: &Data, starts: &[u32]) -> Res<(u64, u64)> {
            let snapshot = self.db.snapshot();
            let (mut seen, mut sum) = (0, 0);
            for &i in starts {
                let start = data.keys[i as usize].as_slice();
                for entry in snapshot.range(&self.table, start..).take(SCAN_LEN) {
                    let (_key, value) = entry?;
                    sum += check_value(value)?;
                    seen += 1;
                }
            }
            Ok((seen, sum))
        }

        fn removals(&mut self, data: &Data, range: Range<usize>) -> Res<()> {
            let ops: Vec<Op<'_>> =
                data.keys[range].iter().map(|key| Op::Delete { table: &self.table, key }).collect();
            Ok(self.db.write(&ops)?)
        }

        fn compaction(&mut self) -> Res<bool> {
            self.db.compact()?;
            Ok(true)
        }

        fn extra(&self) -> Vec<(&'static str, f64)> {
            let stats = self.db.stats();
            vec![("index_bytes_per_key", stats.index_bytes as f64 / stats.keys.max(1) as f64)]
        }
    }
}

#[cfg(feature = "redb")]
mod raw_redb {
    use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

    use super::*;

    const X: TableDefinition<&[u8], &[u8]> = TableDefinition::new("x");

    /// redb with `set_cache_size(cache)` and `Durability::Immediate` (the default), as redb's
    /// comparison; reads use the lifetime-bound `ReadableTable::get`, as it does.
    pub struct RawRedb {
        db: Database,
    }

    impl RawRedb {
        pub fn open(dir: &Path, cache: usize) -> Res<Self> {
            let db = Database::builder().set_cache_size(cache).create(dir.join("data.redb"))?;
            let txn = db.begin_write()?;
            txn.open_table(X)?;
            txn.commit()?;
            Ok(Self { db })
        }
    }

    impl Bench for RawRedb {
        fn bulk_load(&mut self, data: &Data, range: Range<usize>) -> Res<()> {
            let txn = self.db.begin_write()?;
            {
                let mut table = txn.open_table(X)?;
                for i in range {
                    table.insert(data.keys[i].as_slice(), data.values[i].as_slice())?;
                }
            }
            Ok(txn.commit()?)
        }

        fn individual_write(&mut self, data: &Data, i: usize) -> Res<()> {
            self.bulk_load(data, i..i + 1)
        }

        fn random_reads(&self, data: &Data, order: &[u32]) -> Res<u64> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(X)?;
            let mut sum = 0;
            for &i in order {
                let key = data.keys[i as usize].as_slice();
                let value = ReadableTable::get(&table, key)?.ok_or_else(|| missing(key))?;
                sum += check_value(value.value())?;
            }
            Ok(sum)
        }

        fn range_reads(&self, data: &Data, starts: &[u32]) -> Res<(u64, u64)> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(X)?;
            let (mut seen, mut sum) = (0, 0);
            for &i in starts {
                let start = data.keys[i as usize].as_slice();
                for entry in ReadableTable::range::<&[u8]>(&table, start..)?.take(SCAN_LEN) {
                    let (_key, value) = entry?;
                    sum += check_value(value.value())?;
                    seen += 1;
                }
            }
            Ok((seen, sum))
        }

        fn removals(&mut self, data: &Data, range: Range<usize>) -> Res<()> {
            let txn = self.db.begin_write()?;
            {
                let mut table = txn.open_table(X)?;
                for key in &data.keys[range] {
                    table.remove(key.as_slice())?;
                }
            }
            Ok(txn.commit()?)
        }

        fn compaction(&mut self) -> Res<bool> {
            self.db.compact()?;
            Ok(true)
        }
    }
}

#[cfg(feature = "sled")]
mod raw_sled {
    use super::*;

    /// sled with `cache_capacity(cache)`. Durable commits as in redb's comparison: `flush()`,
    /// then `sync_all` on every file of the directory, because sled's flush only calls
    /// `sync_file_range`, which does not make data durable (spacejam/sled#1351).
    pub struct RawSled {
        db: sled::Db,
        dir: PathBuf,
    }

    impl RawSled {
        pub fn open(dir: &Path, cache: usize) -> Res<Self> {
            let db = sled::Config::new().path(dir).cache_capacity(cache as u64).open()?;
            Ok(Self { db, dir: dir.to_owned() })
        }

        fn sync(&self) -> Res<()> {
            self.db.flush()?;
            for entry in fs::read_dir(&self.dir)? {
                let entry = entry?;
                if entry.file_type()?.is_file() {
                    fs::File::open(entry.path())?.sync_all()?;
                }
            }
            Ok(())
        }
    }

    impl Bench for RawSled {
        fn bulk_load(&mut self, data: &Data, range: Range<usize>) -> Res<()> {
            let mut batch = sled::Batch::default();
            for i in range {
                batch.insert(data.keys[i].as_slice(), data.values[i].as_slice());
            }
            self.db.apply_batch(batch)?;
            self.sync()
        }

        fn individual_write(&mut self, data: &Data, i: usize) -> Res<()> {
            self.db.insert(data.keys[i].as_slice(), data.values[i].as_slice())?;
            self.sync()
        }

        fn random_reads(&self, data: &Data, order: &[u32]) -> Res<u64> {
            let mut sum = 0;
            for &i in order {
                let key = data.keys[i as usize].as_slice();
                let value = self.db.get(key)?.ok_or_else(|| missing(key))?;
                sum += check_value(&value)?;
            }
            Ok(sum)
        }

        fn range_reads(&self, data: &Data, starts: &[u32]) -> Res<(u64, u64)> {
            let (mut seen, mut sum) = (0, 0);
            for &i in starts {
                let start = data.keys[i as usize].as_slice();
                for entry in self.db.range(start..).take(SCAN_LEN) {
                    let (_key, value) = entry?;
                    sum += check_value(&value)?;
                    seen += 1;
                }
            }
            Ok((seen, sum))
        }

        fn removals(&mut self, data: &Data, range: Range<usize>) -> Res<()> {
            let mut batch = sled::Batch::default();
            for key in &data.keys[range] {
                batch.remove(key.as_slice());
            }
            self.db.apply_batch(batch)?;
            self.sync()
        }

        fn compaction(&mut self) -> Res<bool> {
            Ok(false)
        }
    }
}

#[cfg(feature = "rocksdb")]
mod raw_rocksdb {
    use rocksdb::{
        BlockBasedOptions, BottommostLevelCompaction, Cache, CompactOptions, DBCompressionType, Options,
        WriteBatch, WriteBufferManager, WriteOptions, DB,
    };

    use super::*;

    /// RocksDB through rust-rocksdb, written with `WriteBatch`es synced on commit
    /// (`set_sync(true)`), read through one snapshot with pinned gets and a raw iterator.
    pub struct RawRocks {
        db: DB,
        sync: WriteOptions,
        /// Compact as typed-kv does (flush, then force the bottommost level) rather than as
        /// redb's comparison does (a plain `compact_range`).
        typed_kv_compaction: bool,
    }

    impl RawRocks {
        /// Options as redb's comparison: a shared LRU block cache of `cache` bytes, a write
        /// buffer manager of half of it charged to the cache, bloom filters of 10 bits per
        /// key, index and filter blocks in the cache, parallelism = cores. No compression is
        /// set, so RocksDB's default applies: Snappy, which this build lacks, so none.
        pub fn open_tuned(dir: &Path, cache: usize) -> Res<Self> {
            let block_cache = Cache::new_lru_cache(cache);
            let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(
                cache / 2,
                false,
                block_cache.clone(),
            );
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&block_cache);
            table.set_bloom_filter(10.0, false);
            table.set_cache_index_and_filter_blocks(true);
            table.set_pin_l0_filter_and_index_blocks_in_cache(false);
            table.set_pin_top_level_index_and_filter(false);
            let mut options = Options::default();
            options.set_block_based_table_factory(&table);
            options.set_write_buffer_manager(&write_buffers);
            options.set_max_write_buffer_size_to_maintain((cache / 2) as i64);
            options.create_if_missing(true);
            options.increase_parallelism(std::thread::available_parallelism().map_or(1, |n| n.get()) as i32);
            Self::open(dir, &options, false)
        }

        /// Options as typed-kv's RocksDB backend sets them: defaults, LZ4 compression.
        pub fn open_as_typed_kv(dir: &Path) -> Res<Self> {
            let mut options = Options::default();
            options.set_compression_type(DBCompressionType::Lz4);
            options.create_if_missing(true);
            Self::open(dir, &options, true)
        }

        fn open(dir: &Path, options: &Options, typed_kv_compaction: bool) -> Res<Self> {
            let db = DB::open(options, dir)?;
            let mut sync = WriteOptions::default();
            sync.set_sync(true);
            Ok(Self { db, sync, typed_kv_compaction })
        }
    }

    impl Bench for RawRocks {
        fn bulk_load(&mut self, data: &Data, range: Range<usize>) -> Res<()> {
            let mut batch = WriteBatch::default();
            for i in range {
                batch.put(&data.keys[i], &data.values[i]);
            }
            Ok(self.db.write_opt(batch, &self.sync)?)
        }

        fn individual_write(&mut self, data: &Data, i: usize) -> Res<()> {
            Ok(self.db.put_opt(&data.keys[i], &data.values[i], &self.sync)?)
        }

        fn random_reads(&self, data: &Data, order: &[u32]) -> Res<u64> {
            let snapshot = self.db.snapshot();
            let mut sum = 0;
            for &i in order {
                let key = data.keys[i as usize].as_slice();
                let value = snapshot.get_pinned(key)?.ok_or_else(|| missing(key))?;
                sum += check_value(&value)?;
            }
            Ok(sum)
        }

        fn range_reads(&self, data: &Data, starts: &[u32]) -> Res<(u64, u64)> {
            let snapshot = self.db.snapshot();
            let (mut seen, mut sum) = (0, 0);
            for &i in starts {
                let mut iter = snapshot.raw_iterator();
                iter.seek(&data.keys[i as usize]);
                for _ in 0..SCAN_LEN {
                    let Some(value) = iter.value() else { break };
                    sum += check_value(value)?;
                    seen += 1;
                    iter.next();
                }
                iter.status()?;
            }
            Ok((seen, sum))
        }

        fn removals(&mut self, data: &Data, range: Range<usize>) -> Res<()> {
            let mut batch = WriteBatch::default();
            for key in &data.keys[range] {
                batch.delete(key);
            }
            Ok(self.db.write_opt(batch, &self.sync)?)
        }

        fn compaction(&mut self) -> Res<bool> {
            if self.typed_kv_compaction {
                self.db.flush()?;
                let mut options = CompactOptions::default();
                options.set_bottommost_level_compaction(BottommostLevelCompaction::ForceOptimized);
                self.db.compact_range_opt(None::<&[u8]>, None::<&[u8]>, &options);
            } else {
                self.db.compact_range(None::<&[u8]>, None::<&[u8]>);
            }
            Ok(true)
        }
    }
}

mod raw_lmdb {
    use heed::types::Bytes;
    use heed::{CompactionOption, Database, Env, EnvOpenOptions};

    use super::*;

    const DATA_FILE: &str = "data.mdb";
    const COMPACTED_FILE: &str = "data2.mdb";

    /// LMDB through heed, map size 4 GiB and synced commits (LMDB's default), as redb's
    /// comparison; compaction copies the environment with `MDB_CP_COMPACT` and reopens it.
    pub struct RawLmdb {
        env: Option<Env>,
        db: Database<Bytes, Bytes>,
        dir: PathBuf,
    }

    fn open_env(dir: &Path) -> Res<Env> {
        // SAFETY: heed's open is unsafe because LMDB's memory map must not be opened twice in
        // one process nor modified by another one. This directory is a fresh temporary one,
        // opened only here (and again only after this environment was closed).
        Ok(unsafe { EnvOpenOptions::new().map_size(LMDB_MAP_SIZE).open(dir)? })
    }

    impl RawLmdb {
        pub fn open(dir: &Path) -> Res<Self> {
            let env = open_env(dir)?;
            let mut txn = env.write_txn()?;
            let db = env.create_database(&mut txn, None)?;
            txn.commit()?;
            Ok(Self { env: Some(env), db, dir: dir.to_owned() })
        }

        fn env(&self) -> &Env {
            self.env.as_ref().expect("the environment is open outside compaction")
        }
    }

    impl Bench for RawLmdb {
        fn bulk_load(&mut self, data: &Data, range: Range<usize>) -> Res<()> {
            let mut txn = self.env().write_txn()?;
            for i in range {
                self.db.put(&mut txn, &data.keys[i], &data.values[i])?;
            }
            Ok(txn.commit()?)
        }

        fn individual_write(&mut self, data: &Data, i: usize) -> Res<()> {
            self.bulk_load(data, i..i + 1)
        }

        fn random_reads(&self, data: &Data, order: &[u32]) -> Res<u64> {
            let txn = self.env().read_txn()?;
            let mut sum = 0;
            for &i in order {
                let key = data.keys[i as usize].as_slice();
                let value = self.db.get(&txn, key)?.ok_or_else(|| missing(key))?;
                sum += check_value(value)?;
            }
            Ok(sum)
        }

        fn range_reads(&self, data: &Data, starts: &[u32]) -> Res<(u64, u64)> {
            let txn = self.env().read_txn()?;
            let (mut seen, mut sum) = (0, 0);
            for &i in starts {
                let range = (Bound::Included(data.keys[i as usize].as_slice()), Bound::Unbounded);
                for entry in self.db.range(&txn, &range)?.take(SCAN_LEN) {
                    let (_key, value) = entry?;
                    sum += check_value(value)?;
                    seen += 1;
                }
            }
            Ok((seen, sum))
        }

        fn removals(&mut self, data: &Data, range: Range<usize>) -> Res<()> {
            let mut txn = self.env().write_txn()?;
            for key in &data.keys[range] {
                self.db.delete(&mut txn, key)?;
            }
            Ok(txn.commit()?)
        }

        fn compaction(&mut self) -> Res<bool> {
            let env = self.env.take().expect("the environment is open");
            let compacted = self.dir.join(COMPACTED_FILE);
            let mut file = fs::File::create_new(&compacted)?;
            env.copy_to_file(&mut file, CompactionOption::Enabled)?;
            file.sync_all()?;
            drop(file);
            env.prepare_for_closing().wait();
            fs::rename(&compacted, self.dir.join(DATA_FILE))?;
            let env = open_env(&self.dir)?;
            let txn = env.read_txn()?;
            self.db = env.open_database(&txn, None)?.ok_or("the compacted copy has no database")?;
            drop(txn);
            self.env = Some(env);
            Ok(true)
        }
    }
}

mod raw_fjall {
    use fjall::{
        KeyspaceCreateOptions, PersistMode, Readable, SingleWriterTxDatabase, SingleWriterTxKeyspace,
    };

    use super::*;

    /// fjall's single-writer transactional database with `cache_size(cache)`; each commit is
    /// followed by `persist(SyncAll)`, as redb's comparison. Compaction: a major compaction
    /// of the keyspace (redb's comparison does none).
    pub struct RawFjall {
        db: SingleWriterTxDatabase,
        keyspace: SingleWriterTxKeyspace,
    }

    impl RawFjall {
        pub fn open(dir: &Path, cache: usize) -> Res<Self> {
            let db = SingleWriterTxDatabase::builder(dir).cache_size(cache as u64).open()?;
            let keyspace = db.keyspace("x", KeyspaceCreateOptions::default)?;
            Ok(Self { db, keyspace })
        }
    }

    impl Bench for RawFjall {
        fn bulk_load(&mut self, data: &Data, range: Range<usize>) -> Res<()> {
            let mut txn = self.db.write_tx();
            for i in range {
                txn.insert(&self.keyspace, data.keys[i].as_slice(), data.values[i].as_slice());
            }
            txn.commit()?;
            Ok(self.db.persist(PersistMode::SyncAll)?)
        }

        fn individual_write(&mut self, data: &Data, i: usize) -> Res<()> {
            self.bulk_load(data, i..i + 1)
        }

        fn random_reads(&self, data: &Data, order: &[u32]) -> Res<u64> {
            let snapshot = self.db.read_tx();
            let mut sum = 0;
            for &i in order {
                let key = data.keys[i as usize].as_slice();
                let value = snapshot.get(&self.keyspace, key)?.ok_or_else(|| missing(key))?;
                sum += check_value(&value)?;
            }
            Ok(sum)
        }

        fn range_reads(&self, data: &Data, starts: &[u32]) -> Res<(u64, u64)> {
            let snapshot = self.db.read_tx();
            let (mut seen, mut sum) = (0, 0);
            for &i in starts {
                let range: (Bound<&[u8]>, Bound<&[u8]>) =
                    (Bound::Included(data.keys[i as usize].as_slice()), Bound::Unbounded);
                for entry in snapshot.range::<&[u8], _>(&self.keyspace, range).take(SCAN_LEN) {
                    let value = entry.value()?;
                    sum += check_value(&value)?;
                    seen += 1;
                }
            }
            Ok((seen, sum))
        }

        fn removals(&mut self, data: &Data, range: Range<usize>) -> Res<()> {
            let mut txn = self.db.write_tx();
            for key in &data.keys[range] {
                txn.remove(&self.keyspace, key.as_slice());
            }
            txn.commit()?;
            Ok(self.db.persist(PersistMode::SyncAll)?)
        }

        fn compaction(&mut self) -> Res<bool> {
            self.keyspace.inner().major_compact()?;
            Ok(true)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Systems
// ---------------------------------------------------------------------------------------------

/// A system that can be selected: its name, the raw engine a typed-kv system is compared to,
/// and how to open it in a directory.
struct System {
    name: &'static str,
    /// For typed-kv systems, the raw systems to compute the ratio against, first present wins.
    raw: &'static [&'static str],
    open: fn(&Path, &Config) -> Res<Box<dyn Bench>>,
}

fn typed_kv<K: ValueKind>(backend: DatabaseBackend, dir: &Path) -> Res<Box<dyn Bench>>
where
    TkvTable<K>: Sync,
{
    Ok(Box::new(TypedKv::<K>::open(backend, dir)?))
}

/// Every system compiled in, in the column order of the tables.
fn systems() -> Vec<System> {
    let mut systems = Vec::new();
    #[cfg(feature = "native")]
    systems.extend([
        System {
            name: "tkv-native-bytes",
            raw: &["native-engine"],
            open: |d, _| typed_kv::<RawBytesValues>(DatabaseBackend::Native, d),
        },
        System {
            name: "tkv-native-rkyv",
            raw: &["native-engine"],
            open: |d, _| typed_kv::<RkyvValues>(DatabaseBackend::Native, d),
        },
        System {
            name: "native-engine",
            raw: &[],
            open: |d, _| Ok(Box::new(raw_native::RawNative::open(d, true)?)),
        },
        // The same two without the read path's CRC check (`Options::verify_reads = false`):
        // what the check costs.
        System {
            name: "tkv-native-bytes-unchecked",
            raw: &["native-engine-unchecked"],
            open: |d, _| {
                Ok(Box::new(TypedKv::<RawBytesValues>::open_with(DatabaseBackend::Native, d, false)?))
            },
        },
        System {
            name: "native-engine-unchecked",
            raw: &[],
            open: |d, _| Ok(Box::new(raw_native::RawNative::open(d, false)?)),
        },
    ]);
    #[cfg(feature = "redb")]
    systems.extend([
        System {
            name: "tkv-redb-bytes",
            raw: &["redb"],
            open: |d, _| typed_kv::<RawBytesValues>(DatabaseBackend::Redb, d),
        },
        System {
            name: "tkv-redb-rkyv",
            raw: &["redb"],
            open: |d, _| typed_kv::<RkyvValues>(DatabaseBackend::Redb, d),
        },
        System { name: "redb", raw: &[], open: |d, c| Ok(Box::new(raw_redb::RawRedb::open(d, c.cache)?)) },
    ]);
    #[cfg(feature = "sled")]
    systems.extend([
        System {
            name: "tkv-sled-bytes",
            raw: &["sled"],
            open: |d, _| typed_kv::<RawBytesValues>(DatabaseBackend::Sled, d),
        },
        System {
            name: "tkv-sled-rkyv",
            raw: &["sled"],
            open: |d, _| typed_kv::<RkyvValues>(DatabaseBackend::Sled, d),
        },
        System { name: "sled", raw: &[], open: |d, c| Ok(Box::new(raw_sled::RawSled::open(d, c.cache)?)) },
    ]);
    #[cfg(feature = "rocksdb")]
    systems.extend([
        System {
            name: "tkv-rocksdb-bytes",
            raw: &["rocksdb-as-tkv", "rocksdb"],
            open: |d, _| typed_kv::<RawBytesValues>(DatabaseBackend::RocksDb, d),
        },
        System {
            name: "tkv-rocksdb-rkyv",
            raw: &["rocksdb-as-tkv", "rocksdb"],
            open: |d, _| typed_kv::<RkyvValues>(DatabaseBackend::RocksDb, d),
        },
        System {
            name: "rocksdb-as-tkv",
            raw: &[],
            open: |d, _| Ok(Box::new(raw_rocksdb::RawRocks::open_as_typed_kv(d)?)),
        },
        System {
            name: "rocksdb",
            raw: &[],
            open: |d, c| Ok(Box::new(raw_rocksdb::RawRocks::open_tuned(d, c.cache)?)),
        },
    ]);
    systems.extend([
        System { name: "lmdb", raw: &[], open: |d, _| Ok(Box::new(raw_lmdb::RawLmdb::open(d)?)) },
        System { name: "fjall", raw: &[], open: |d, c| Ok(Box::new(raw_fjall::RawFjall::open(d, c.cache)?)) },
    ]);
    systems
}

// ---------------------------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------------------------

struct Config {
    n: usize,
    repeat: usize,
    cache: usize,
    out: PathBuf,
    work: PathBuf,
    merge: bool,
    selected: Vec<String>,
}

impl Config {
    fn from_env(known: &[System]) -> Res<Self> {
        let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let out =
            std::env::var_os("BENCH_OUT").map_or_else(|| crate_dir.join("bench-results"), PathBuf::from);
        let work =
            std::env::var_os("BENCH_DIR").map_or_else(|| crate_dir.join("bench-results/tmp"), PathBuf::from);
        let names: Vec<&str> = known.iter().map(|s| s.name).collect();
        let selected = match std::env::var("BENCH_SYSTEMS") {
            Ok(list) if !list.trim().is_empty() => {
                let mut selected = Vec::new();
                // `none` runs nothing: with BENCH_MERGE=1, it re-renders an earlier run's files.
                for name in list.split(',').map(str::trim).filter(|s| !s.is_empty() && *s != "none") {
                    if !names.contains(&name) {
                        return Err(format!(
                            "BENCH_SYSTEMS: unknown or not compiled system {name:?}; known: {}",
                            names.join(", ")
                        )
                        .into());
                    }
                    selected.push(name.to_owned());
                }
                selected
            }
            _ => names.iter().map(|s| s.to_string()).collect(),
        };
        let n = env_usize("BENCH_N", 1_000_000)?;
        if n < 2 {
            return Err("BENCH_N must be at least 2".into());
        }
        Ok(Self {
            n,
            repeat: env_usize("BENCH_REPEAT", 3)?.max(1),
            cache: env_usize("BENCH_CACHE_MB", 1024)? << 20,
            out,
            work,
            merge: std::env::var("BENCH_MERGE").is_ok_and(|v| v == "1"),
            selected,
        })
    }
}

/// Total size of the files below `path`.
fn dir_size(path: &Path) -> Res<u64> {
    let meta = fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for entry in fs::read_dir(path)? {
        total += dir_size(&entry?.path())?;
    }
    Ok(total)
}

/// The type of the file system holding `path` (from /proc/self/mounts), if known.
fn fs_type(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let (_dev, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(point).then(|| (point.len(), kind.to_owned()))
        })
        .max()
        .map(|(_, kind)| kind)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Runs `f` `repeat` times; the median time in ms.
fn timed_median(repeat: usize, mut f: impl FnMut() -> Res<()>) -> Res<f64> {
    let mut times = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let started = Instant::now();
        f()?;
        times.push(ms(started.elapsed()));
    }
    Ok(median(times))
}

/// Figures of one system, keyed by row id (times in ms, sizes in bytes).
type Figures = BTreeMap<String, f64>;

/// Runs every phase on `system`, stored in `dir`, printing progress.
fn run_system(name: &str, system: &mut dyn Bench, dir: &Path, data: &Data, cfg: &Config) -> Res<Figures> {
    let mut figures = Figures::new();
    let n = data.n;
    let log = |what: &str, t: f64| println!("[{name}] {what}: {t:.0} ms");
    let mut record = |id: &str, value: f64| {
        figures.insert(id.to_owned(), value);
    };

    let started = Instant::now();
    system.bulk_load(data, 0..n)?;
    let t = ms(started.elapsed());
    log(&format!("bulk load of {n} pairs"), t);
    record("bulk_load", t);
    record("size_after_load", dir_size(dir)? as f64);

    let started = Instant::now();
    for i in data.individual() {
        system.individual_write(data, i)?;
    }
    let t = ms(started.elapsed());
    log(&format!("{INDIVIDUAL_WRITES} individual durable writes"), t);
    record("individual_writes", t);

    let started = Instant::now();
    for b in 0..BATCHES {
        system.batch_write(data, data.batch(b))?;
    }
    let t = ms(started.elapsed());
    log(&format!("{BATCHES} durable batches of {BATCH_SIZE}"), t);
    record("batch_writes", t);

    let expected = data.checksum(&data.order);
    let t = timed_median(cfg.repeat, || {
        let sum = system.random_reads(data, &data.order)?;
        if sum != expected {
            return Err(format!("read checksum {sum}, expected {expected}").into());
        }
        Ok(())
    })?;
    log(&format!("{n} random reads through a snapshot (median of {})", cfg.repeat), t);
    record("random_reads", t);

    if system.random_reads_plain(data, &data.order[..1]).is_some() {
        let t = timed_median(cfg.repeat, || {
            let sum = system.random_reads_plain(data, &data.order).expect("supported")?;
            if sum != expected {
                return Err(format!("read checksum {sum}, expected {expected}").into());
            }
            Ok(())
        })?;
        log(&format!("{n} random reads with table.get (median of {})", cfg.repeat), t);
        record("random_reads_get", t);
    }

    let (first, second) = data.order.split_at(n / 2);
    let shared: &dyn Bench = system;
    let t = timed_median(cfg.repeat, || {
        let sums = std::thread::scope(|s| {
            let a = s.spawn(|| shared.random_reads(data, first));
            let b = s.spawn(|| shared.random_reads(data, second));
            (a.join(), b.join())
        });
        let (Ok(a), Ok(b)) = sums else { return Err("a reader thread panicked".into()) };
        let sum = a? + b?;
        if sum != expected {
            return Err(format!("read checksum {sum}, expected {expected}").into());
        }
        Ok(())
    })?;
    log(&format!("{n} random reads on 2 threads (median of {})", cfg.repeat), t);
    record("random_reads_2t", t);

    let starts = &data.order[..n / 2];
    let mut scanned = 0;
    let t = timed_median(cfg.repeat, || {
        let (seen, _sum) = system.range_reads(data, starts)?;
        scanned = seen;
        Ok(())
    })?;
    log(
        &format!("{} range reads of {SCAN_LEN} ({scanned} entries, median of {})", starts.len(), cfg.repeat),
        t,
    );
    record("range_reads", t);
    record("range_entries", scanned as f64);

    let started = Instant::now();
    system.removals(data, 0..n / 2)?;
    let t = ms(started.elapsed());
    log(&format!("removal of {} keys in one durable commit", n / 2), t);
    record("removals", t);
    record("size_after_removals", dir_size(dir)? as f64);

    let started = Instant::now();
    let compacted = system.compaction()?;
    let t = ms(started.elapsed());
    if compacted {
        log("compaction", t);
        record("compaction", t);
    } else {
        println!("[{name}] compaction: not supported");
    }
    record("size_after_compaction", dir_size(dir)? as f64);
    record("live_payload", ((data.total() - n / 2) * (KEY_LEN + VALUE_LEN)) as f64);
    record("payload_after_load", (n * (KEY_LEN + VALUE_LEN)) as f64);
    for (id, value) in system.extra() {
        record(id, value);
    }
    Ok(figures)
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Unit {
    Ms,
    MiB,
}

struct Row {
    id: &'static str,
    label: &'static str,
    unit: Unit,
    /// Whether the best (smallest) value is marked.
    ranked: bool,
}

const ROWS: &[Row] = &[
    Row { id: "bulk_load", label: "bulk load", unit: Unit::Ms, ranked: true },
    Row { id: "individual_writes", label: "individual writes", unit: Unit::Ms, ranked: true },
    Row { id: "batch_writes", label: "batch writes", unit: Unit::Ms, ranked: true },
    Row { id: "random_reads", label: "random reads", unit: Unit::Ms, ranked: true },
    Row { id: "random_reads_get", label: "random reads, `table.get`", unit: Unit::Ms, ranked: true },
    Row { id: "random_reads_2t", label: "random reads, 2 threads", unit: Unit::Ms, ranked: true },
    Row { id: "range_reads", label: "range reads", unit: Unit::Ms, ranked: true },
    Row { id: "removals", label: "removals", unit: Unit::Ms, ranked: true },
    Row { id: "compaction", label: "compaction", unit: Unit::Ms, ranked: true },
    Row { id: "size_after_load", label: "size after bulk load", unit: Unit::MiB, ranked: true },
    Row { id: "size_after_removals", label: "size after removals", unit: Unit::MiB, ranked: true },
    Row { id: "size_after_compaction", label: "size after compaction", unit: Unit::MiB, ranked: true },
    Row { id: "live_payload", label: "live payload (end)", unit: Unit::MiB, ranked: false },
];

fn format_value(unit: Unit, value: f64) -> String {
    match unit {
        Unit::Ms if value < 10.0 => format!("{value:.1}"),
        Unit::Ms => format!("{value:.0}"),
        Unit::MiB => format!("{:.1}", value / (1 << 20) as f64),
    }
}

fn row_label(row: &Row) -> String {
    let unit = match row.unit {
        Unit::Ms => "ms",
        Unit::MiB => "MiB",
    };
    format!("{} ({unit})", row.label)
}

/// The results table: rows are phases, columns systems, the best of each row in bold.
fn markdown_table(results: &[(String, Figures)]) -> String {
    let mut out = String::from("| |");
    for (name, _) in results {
        out.push_str(&format!(" {name} |"));
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(results.len()));
    out.push('\n');
    for row in ROWS {
        let cells: Vec<Option<String>> =
            results.iter().map(|(_, f)| f.get(row.id).map(|&v| format_value(row.unit, v))).collect();
        if cells.iter().all(Option::is_none) {
            continue;
        }
        // Ties at the precision shown are all marked, as in redb's table.
        let best = if row.ranked && results.len() > 1 {
            results
                .iter()
                .filter_map(|(_, f)| f.get(row.id).copied())
                .min_by(f64::total_cmp)
                .map(|v| format_value(row.unit, v))
        } else {
            None
        };
        out.push_str(&format!("| {} |", row_label(row)));
        for cell in cells {
            match cell {
                Some(c) if Some(&c) == best.as_ref() => out.push_str(&format!(" **{c}** |")),
                Some(c) => out.push_str(&format!(" {c} |")),
                None => out.push_str(" n/a |"),
            }
        }
        out.push('\n');
    }
    out
}

/// The raw system a typed-kv system is compared to, among those in `results`.
fn raw_of<'a>(
    system: &str,
    known: &[System],
    results: &'a [(String, Figures)],
) -> Option<&'a (String, Figures)> {
    let raws = known.iter().find(|s| s.name == system)?.raw;
    raws.iter().find_map(|raw| results.iter().find(|(name, _)| name == raw))
}

/// Ratios typed-kv / raw engine, per phase; above 1.05 in bold.
fn ratio_table(results: &[(String, Figures)], known: &[System]) -> String {
    let pairs: Vec<(&String, &Figures, &String, &Figures)> = results
        .iter()
        .filter_map(|(name, f)| raw_of(name, known, results).map(|(raw, rf)| (name, f, raw, rf)))
        .collect();
    if pairs.is_empty() {
        return String::from("(no typed-kv system ran beside its raw engine)\n");
    }
    let mut out = String::from("| typed-kv / raw |");
    for (name, _, raw, _) in &pairs {
        out.push_str(&format!(" {name} / {raw} |"));
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(pairs.len()));
    out.push('\n');
    for row in ROWS.iter().filter(|r| r.ranked) {
        let cells: Vec<Option<f64>> = pairs
            .iter()
            .map(|(_, f, _, rf)| match (f.get(row.id), rf.get(row.id)) {
                (Some(a), Some(b)) if *b > 0.0 => Some(a / b),
                _ => None,
            })
            .collect();
        if cells.iter().all(Option::is_none) {
            continue;
        }
        out.push_str(&format!("| {} |", row.label));
        for cell in cells {
            match cell {
                Some(r) if r > 1.05 => out.push_str(&format!(" **{r:.2}** |")),
                Some(r) => out.push_str(&format!(" {r:.2} |")),
                None => out.push_str(" n/a |"),
            }
        }
        out.push('\n');
    }
    out
}

/// A bar chart of the table: times (log scale) above, sizes below, one colour per system.
fn svg_chart(results: &[(String, Figures)], path: &Path, n: usize) -> Res<()> {
    use plotters::prelude::*;

    // x in thousandths of a phase (integer coordinates, so that key points get labels):
    // phase i spans [1000 i, 1000 (i + 1)), its bars fill the middle 80%.
    const SPAN: i32 = 1000;
    let slot = (SPAN * 8 / 10) / results.len().max(1) as i32;
    let bar_x = |i: usize, j: usize| i as i32 * SPAN + SPAN / 10 + j as i32 * slot;
    let key_points = |rows: usize| (0..rows as i32).map(|i| i * SPAN + SPAN / 2).collect::<Vec<_>>();
    let time_rows: Vec<&Row> = ROWS
        .iter()
        .filter(|r| r.unit == Unit::Ms && results.iter().any(|(_, f)| f.contains_key(r.id)))
        .collect();
    let size_rows: Vec<&Row> = ROWS.iter().filter(|r| r.unit == Unit::MiB).collect();
    let root = SVGBackend::new(path, (1600, 1100)).into_drawing_area();
    root.fill(&WHITE)?;
    // The legend gets a column of its own, so that it hides no bar.
    let (charts, legend) = root.split_horizontally(1400);
    let (top, bottom) = charts.split_vertically(620);
    for (j, (name, _)) in results.iter().enumerate() {
        let y = 60 + 24 * j as i32;
        legend.draw(&Rectangle::new([(8, y), (24, y + 16)], Palette99::pick(j).filled()))?;
        legend.draw(&Text::new(name.as_str(), (32, y + 1), ("sans-serif", 16)))?;
    }

    let max_ms = results
        .iter()
        .flat_map(|(_, f)| time_rows.iter().filter_map(|r| f.get(r.id)))
        .fold(1.0f64, |a, &b| a.max(b));
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!("typed-kv comparison, N = {n}: time per phase (ms, log scale; lower is better)"),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (0..time_rows.len() as i32 * SPAN).with_key_points(key_points(time_rows.len())),
            (1f64..max_ms * 2.0).log_scale(),
        )?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|x| {
            time_rows.get((x / SPAN) as usize).map_or(String::new(), |r| r.label.replace('`', ""))
        })
        .y_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("ms")
        .draw()?;
    for (j, (_, figures)) in results.iter().enumerate() {
        let colour = Palette99::pick(j).to_rgba();
        chart.draw_series(time_rows.iter().enumerate().filter_map(|(i, row)| {
            let v = *figures.get(row.id)?;
            let x0 = bar_x(i, j);
            Some(Rectangle::new([(x0, 1.0), (x0 + slot * 9 / 10, v.max(1.0))], colour.filled()))
        }))?;
    }

    let max_mib = results
        .iter()
        .flat_map(|(_, f)| size_rows.iter().filter_map(|r| f.get(r.id)))
        .fold(1.0f64, |a, &b| a.max(b / (1 << 20) as f64));
    let mut chart = ChartBuilder::on(&bottom)
        .caption("size on disk (MiB; lower is better)", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (0..size_rows.len() as i32 * SPAN).with_key_points(key_points(size_rows.len())),
            0f64..max_mib * 1.1,
        )?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|x| {
            size_rows.get((x / SPAN) as usize).map_or(String::new(), |r| r.label.to_owned())
        })
        .y_desc("MiB")
        .draw()?;
    for (j, (_, figures)) in results.iter().enumerate() {
        let colour = Palette99::pick(j).to_rgba();
        chart.draw_series(size_rows.iter().enumerate().filter_map(|(i, row)| {
            let v = *figures.get(row.id)? / (1 << 20) as f64;
            let x0 = bar_x(i, j);
            Some(Rectangle::new([(x0, 0.0), (x0 + slot * 9 / 10, v)], colour.filled()))
        }))?;
    }
    root.present()?;
    Ok(())
}

fn to_json(cfg: &Config, results: &[(String, Figures)], fs_kind: &str) -> Json {
    let systems: Vec<Json> = results
        .iter()
        .map(|(name, figures)| {
            let figures: serde_json::Map<String, Json> = figures
                .iter()
                .map(|(id, v)| {
                    let unit = ROWS.iter().find(|r| r.id == *id).map(|r| r.unit);
                    let key = match unit {
                        Some(Unit::Ms) => format!("{id}_ms"),
                        Some(Unit::MiB) => format!("{id}_bytes"),
                        None => id.clone(),
                    };
                    (key, json!(v))
                })
                .collect();
            json!({ "name": name, "figures": figures })
        })
        .collect();
    json!({
        "benchmark": "typed-kv compare (redb's comparison workload)",
        "n": cfg.n,
        "key_len": KEY_LEN,
        "value_len": VALUE_LEN,
        "individual_writes": INDIVIDUAL_WRITES,
        "batches": BATCHES,
        "batch_size": BATCH_SIZE,
        "scan_len": SCAN_LEN,
        "read_repeats_median_of": cfg.repeat,
        "raw_cache_bytes": cfg.cache,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "store_fs": fs_kind,
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "systems": systems,
    })
}

/// Systems of an earlier run at the same N, from its JSON.
fn earlier_results(path: &Path, n: usize) -> Vec<(String, Figures)> {
    let Ok(text) = fs::read_to_string(path) else { return Vec::new() };
    let Ok(json) = serde_json::from_str::<Json>(&text) else { return Vec::new() };
    if json["n"].as_u64() != Some(n as u64) {
        return Vec::new();
    }
    let strip =
        |key: &str| key.strip_suffix("_ms").or_else(|| key.strip_suffix("_bytes")).unwrap_or(key).to_owned();
    json["systems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let name = s["name"].as_str()?.to_owned();
            let figures =
                s["figures"].as_object()?.iter().filter_map(|(k, v)| Some((strip(k), v.as_f64()?))).collect();
            Some((name, figures))
        })
        .collect()
}

fn main() -> Res<()> {
    let known = systems();
    let cfg = Config::from_env(&known)?;
    fs::create_dir_all(&cfg.out)?;
    fs::create_dir_all(&cfg.work)?;
    let fs_kind = fs_type(&cfg.work).unwrap_or_else(|| "unknown".into());
    println!(
        "typed-kv compare: N = {}, systems: {}; stores in {} ({fs_kind}); results to {}",
        cfg.n,
        cfg.selected.join(", "),
        cfg.work.display(),
        cfg.out.display()
    );
    if fs_kind == "tmpfs" || fs_kind == "ramfs" {
        println!(
            "warning: {} is in memory ({fs_kind}): fsync costs nothing there; set BENCH_DIR",
            cfg.work.display()
        );
    }
    let started = Instant::now();
    let data = Data::new(cfg.n);
    println!("generated {} pairs in {:.0} ms", data.total(), ms(started.elapsed()));

    let stem = format!("compare-n{}", cfg.n);
    let json_path = cfg.out.join(format!("{stem}.json"));
    let mut results: Vec<(String, Figures)> = Vec::new();
    for system in known.iter().filter(|s| cfg.selected.iter().any(|n| n == s.name)) {
        let dir = tempfile::Builder::new().prefix(system.name).tempdir_in(&cfg.work)?;
        let started = Instant::now();
        let mut bench = (system.open)(dir.path(), &cfg)?;
        let figures = run_system(system.name, bench.as_mut(), dir.path(), &data, &cfg)
            .map_err(|e| format!("{}: {e}", system.name))?;
        drop(bench);
        println!("[{}] done in {:.1} s", system.name, started.elapsed().as_secs_f64());
        results.push((system.name.to_owned(), figures));
    }
    if cfg.merge {
        let earlier = earlier_results(&json_path, cfg.n);
        let kept: Vec<_> =
            earlier.into_iter().filter(|(name, _)| !results.iter().any(|(n, _)| n == name)).collect();
        if !kept.is_empty() {
            println!("merged with {} systems of an earlier run", kept.len());
        }
        results.extend(kept);
        // Column order: as in `systems()`.
        results.sort_by_key(|(name, _)| known.iter().position(|s| s.name == name).unwrap_or(usize::MAX));
    }

    let table = markdown_table(&results);
    let ratios = ratio_table(&results, &known);
    let markdown = format!(
        "N = {} pairs of {KEY_LEN}-byte keys and {VALUE_LEN}-byte values; times in ms (reads: median of {}), \
         sizes in MiB; best of each row in bold.\n\n{table}\nRatios typed-kv / raw engine (above 1.05 in bold):\n\n{ratios}",
        cfg.n, cfg.repeat
    );
    println!("\n{markdown}");
    fs::write(cfg.out.join(format!("{stem}.md")), &markdown)?;
    fs::write(&json_path, serde_json::to_string_pretty(&to_json(&cfg, &results, &fs_kind))?)?;
    svg_chart(&results, &cfg.out.join(format!("{stem}.svg")), cfg.n)?;
    println!("wrote {stem}.md, {stem}.json and {stem}.svg to {}", cfg.out.display());
    Ok(())
}
