//! Typed tables: [`TableBuilder`] stamps and opens them, [`Table`] reads and writes them.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use crate::backends::{RawBatch, TableHandle};
use crate::catalog::{validate_table_name, TableStamp};
use crate::config::Recreate;
use crate::error::{key_hex, Result, StorageError};
use crate::formats::{FormatError, KeyFormat, OrderPreserving, ValueFormat};
use crate::storage::{Storage, TableLife};

mod guard;
mod iter;
mod stream;

pub use guard::Guard;
pub use iter::{Entries, Keys, Values};
pub use stream::{IngestOptions, IngestProgress, IngestReport, TableStream};

/// Longest encoded key typed-kv accepts, on every backend.
pub const MAX_KEY_LEN: usize = 64 * 1024;
/// Longest encoded value typed-kv accepts, on every backend.
pub const MAX_VALUE_LEN: usize = 1 << 30;

/// Placeholder for a format not chosen yet; [`TableBuilder::build`] needs both chosen.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unset;

/// Chooses a table's formats and schema version, then opens it.
///
/// Made by [`Storage::new_table`]. Building checks the stamp stored with the table (formats,
/// types, schema version) against what is asked for, and acts on a difference as the
/// storage's [`Recreate`] policy says.
#[must_use = "a table builder does nothing until `build` is called"]
pub struct TableBuilder<K, V, KF, VF> {
    storage: Storage,
    name: String,
    key_format: KF,
    value_format: VF,
    version: Option<u64>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> TableBuilder<K, V, Unset, Unset> {
    pub(crate) fn new(storage: Storage, name: &str) -> Self {
        Self {
            storage,
            name: name.to_owned(),
            key_format: Unset,
            value_format: Unset,
            version: None,
            _types: PhantomData,
        }
    }
}

impl<K, V, KF, VF> TableBuilder<K, V, KF, VF> {
    /// The key format.
    pub fn with_key_format<F: KeyFormat<K>>(self, format: F) -> TableBuilder<K, V, F, VF> {
        TableBuilder {
            storage: self.storage,
            name: self.name,
            key_format: format,
            value_format: self.value_format,
            version: self.version,
            _types: PhantomData,
        }
    }

    /// The value format.
    pub fn with_value_format<F: ValueFormat<V>>(self, format: F) -> TableBuilder<K, V, KF, F> {
        TableBuilder {
            storage: self.storage,
            name: self.name,
            key_format: self.key_format,
            value_format: format,
            version: self.version,
            _types: PhantomData,
        }
    }

    /// This table's schema version, instead of the storage's
    /// [`with_version`](crate::StorageBuilder::with_version).
    pub fn with_version(mut self, version: u64) -> Self {
        self.version = Some(version);
        self
    }
}

impl<K, V, KF: KeyFormat<K>, VF: ValueFormat<V>> TableBuilder<K, V, KF, VF> {
    /// The stamp this builder would write.
    fn requested_stamp(&self) -> TableStamp {
        TableStamp {
            key_format: KF::ID.to_owned(),
            key_flags: self.key_format.flags(),
            value_format: VF::ID.to_owned(),
            value_flags: self.value_format.flags(),
            key_type: std::any::type_name::<K>().to_owned(),
            value_type: std::any::type_name::<V>().to_owned(),
            schema_version: self.version.unwrap_or(self.storage.inner.version),
        }
    }

    /// Opens the table, creating and stamping it if new.
    ///
    /// Builders of one storage run one at a time (with [`Storage::drop_table`]): two threads
    /// building a new table both get it, and neither clears what the other wrote. A table
    /// that holds entries but has no stamp is [`StorageError::UnstampedTable`], whatever the
    /// [`Recreate`] policy: its layout is unknown, so it is neither used nor cleared.
    pub fn build(self) -> Result<Table<K, V, KF, VF>> {
        validate_table_name(&self.name)?;
        let requested = self.requested_stamp();
        let storage = &self.storage;
        let engine = &storage.inner.engine;
        let schema = storage.inner.schema.lock();
        let stored = match storage.table_stamp(&self.name) {
            Ok(stamp) => stamp.map(Ok),
            // An undecodable stamp proves damage: the one catalog error `OnValidationFail`
            // answers by recreating the table.
            Err(e) if storage.inner.recreate == Recreate::OnValidationFail && e.proves_damage() => {
                Some(Err(e))
            }
            Err(e) => return Err(e),
        };
        let handle = engine.open_table(&self.name, VF::ALIGN)?;
        let recreate = match &stored {
            None => {
                // Without a stamp the table is new and empty (a crash between creating and
                // stamping leaves it so); entries without a stamp are damage, never cleared.
                let all = Bound::Unbounded;
                if engine.range(&handle, all, all)?.next().is_some() {
                    let entries = engine.len(&handle)?;
                    return Err(StorageError::UnstampedTable { table: self.name.clone(), entries });
                }
                storage.write_stamp(&self.name, &requested)?;
                false
            }
            Some(Err(_)) => true,
            Some(Ok(stored)) => match storage.inner.recreate {
                _ if *stored == requested => false,
                Recreate::OnVersionBump if stored.schema_version < requested.schema_version => true,
                Recreate::OnVersionBump if stored.schema_version > requested.schema_version => {
                    return Err(StorageError::VersionDowngrade {
                        table: self.name.clone(),
                        stored: stored.schema_version,
                        requested: requested.schema_version,
                    })
                }
                Recreate::OnValidationFail => true,
                _ => {
                    return Err(StorageError::TableTypeMismatch {
                        table: self.name.clone(),
                        stored: Box::new(stored.clone()),
                        requested: Box::new(requested.clone()),
                    })
                }
            },
        };
        if recreate {
            // Handles of the old table die first, so none writes the old layout in between;
            // then the data goes before the stamp changes: a crash in between leaves an empty
            // table under its old stamp, which the next build recreates again.
            storage.end_life(&self.name);
            engine.clear(&handle)?;
            storage.write_stamp(&self.name, &requested)?;
        }
        let life = storage.table_life(&self.name);
        drop(schema);
        let aligned_copies = self.storage.aligned_copy_counter(&self.name);
        Ok(Table {
            inner: Arc::new(TableInner {
                storage: self.storage,
                name: self.name,
                handle,
                life,
                key_format: self.key_format,
                value_format: self.value_format,
                aligned_copies,
            }),
            _types: PhantomData,
        })
    }
}

/// A typed table: keys `K` encoded by `KF`, values `V` encoded by `VF`.
///
/// Cheap to clone, `Send + Sync` when its formats are; every clone is the same table.
///
/// ```
/// use typed_kv::{OrderedFormat, RkyvFormat, StorageBuilder};
///
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
/// struct Company { name: String, employees: u32 }
///
/// let dir = tempfile::tempdir()?;
/// let storage = StorageBuilder::new(dir.path()).build()?;
/// let companies = storage
///     .new_table::<u64, Company>("companies")
///     .with_key_format(OrderedFormat::new())
///     .with_value_format(RkyvFormat::new())
///     .build()?;
/// companies.put(&320193, &Company { name: "Apple".into(), employees: 164_000 })?;
/// let guard = companies.get(&320193)?.expect("just written");
/// assert_eq!(guard.name, "Apple"); // read in place from the archived bytes
/// assert!(companies.delete(&320193)?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Table<K, V, KF, VF> {
    inner: Arc<TableInner<KF, VF>>,
    _types: PhantomData<fn() -> (K, V)>,
}

pub(crate) struct TableInner<KF, VF> {
    pub(crate) storage: Storage,
    pub(crate) name: String,
    pub(crate) handle: TableHandle,
    /// Whether the table was dropped since this handle was built.
    pub(crate) life: Arc<TableLife>,
    pub(crate) key_format: KF,
    pub(crate) value_format: VF,
    /// Values of this table copied into an aligned buffer (shared with the storage's stats).
    pub(crate) aligned_copies: Arc<std::sync::atomic::AtomicU64>,
}

impl<K, V, KF, VF> Clone for Table<K, V, KF, VF> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), _types: PhantomData }
    }
}

impl<K, V, KF, VF> fmt::Debug for Table<K, V, KF, VF> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table").field("name", &self.inner.name).field("storage", &self.inner.storage).finish()
    }
}

thread_local! {
    /// Scratch space for encoding keys of point operations, so a `get` allocates nothing.
    static KEY_BUFFER: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    /// Scratch space for encoding the pair of a `put`.
    static PAIR_BUFFER: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// A pair buffer that grew past this (a huge value) is not kept for the thread's next put.
const KEEP_PAIR_BUFFER: usize = 1 << 20;

/// Converts a format error into a storage error for `table`.
pub(crate) fn decode_error(
    table: &str,
    what: &'static str,
    key: Option<&[u8]>,
    source: FormatError,
) -> StorageError {
    StorageError::Decode { table: table.to_owned(), what, key: key.map(key_hex), source }
}

impl<K, V, KF: KeyFormat<K>, VF: ValueFormat<V>> Table<K, V, KF, VF> {
    /// The table's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The storage the table belongs to.
    pub fn storage(&self) -> &Storage {
        &self.inner.storage
    }

    pub(crate) fn inner(&self) -> &TableInner<KF, VF> {
        &self.inner
    }

    /// Runs `f` on the encoding of `key`, in a reused buffer.
    fn with_key<R>(&self, key: &K, f: impl FnOnce(&[u8]) -> Result<R>) -> Result<R> {
        self.inner.with_key(key, f)
    }

    /// The value under `key`, read in place.
    pub fn get(&self, key: &K) -> Result<Option<Guard<'_, V, VF>>> {
        self.inner.check_live()?;
        let engine = &self.inner.storage.inner.engine;
        self.with_key(key, |k| match engine.get(&self.inner.handle, k)? {
            Some(bytes) => self.inner.guard(bytes.into(), k).map(Some),
            None => Ok(None),
        })
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &K) -> Result<bool> {
        self.inner.check_live()?;
        let engine = &self.inner.storage.inner.engine;
        self.with_key(key, |k| Ok(engine.get(&self.inner.handle, k)?.is_some()))
    }

    /// Stores `value` under `key`, replacing any previous value; durable on return with
    /// [`Durability::Immediate`](crate::Durability::Immediate).
    pub fn put(&self, key: &K, value: &V) -> Result<()> {
        let inner = &self.inner;
        inner.check_live()?;
        inner.with_pair(key, value, |key, value| {
            inner.storage.inner.engine.put(&inner.handle, &inner.name, key, value)
        })
    }

    /// Stores every pair in one atomic commit: after a crash, all or none are there.
    /// Items are `(K, V)`, `(&K, &V)` or mixes; see [`KeyValue`].
    pub fn put_all<I>(&self, items: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: KeyValue<K, V>,
    {
        let mut batch = RawBatch::default();
        for item in items {
            self.inner.encode_put(&mut batch, item.key(), item.value())?;
        }
        self.inner.storage.inner.engine.write(&batch)
    }

    /// Removes `key`; whether it had a value.
    pub fn delete(&self, key: &K) -> Result<bool> {
        self.inner.check_live()?;
        let engine = &self.inner.storage.inner.engine;
        self.with_key(key, |k| engine.remove(&self.inner.handle, k))
    }

    /// Removes every entry, atomically. The table's handles stay valid (unlike
    /// [`Storage::drop_table`]).
    pub fn clear(&self) -> Result<()> {
        self.inner.check_live()?;
        self.inner.storage.inner.engine.clear(&self.inner.handle)
    }

    /// Number of entries (O(n) on sled and RocksDB, which keep no count).
    pub fn len(&self) -> Result<u64> {
        self.inner.check_live()?;
        self.inner.storage.inner.engine.len(&self.inner.handle)
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.iter()?.next().transpose()?.is_none())
    }

    /// Every entry, in the order of the encoded keys (key order only for order-preserving
    /// key formats). The iterator sees one consistent state on redb and RocksDB; on sled it
    /// may see writes made while it runs.
    pub fn iter(&self) -> Result<Entries<'_, K, V, KF, VF>> {
        self.inner.check_live()?;
        let raw = self.inner.storage.inner.engine.entries(
            &self.inner.handle,
            Bound::Unbounded,
            Bound::Unbounded,
        )?;
        Ok(Entries::new(raw, &self.inner))
    }

    /// Entries whose keys fall within `range`, in key order. Only for order-preserving key
    /// formats: for others, byte order is not key order and a range would be meaningless.
    pub fn range<R: RangeBounds<K>>(&self, range: R) -> Result<Entries<'_, K, V, KF, VF>>
    where
        KF: OrderPreserving<K>,
    {
        self.inner.check_live()?;
        let engine = &self.inner.storage.inner.engine;
        let raw = self
            .inner
            .with_bounds(&range, |lower, upper| engine.entries(&self.inner.handle, lower, upper))?;
        Ok(Entries::new(raw, &self.inner))
    }

    /// Runs `f` on a stream of every entry of one consistent snapshot, which lives as long as
    /// the call. Items borrow the snapshot, so they cannot escape `f`.
    ///
    /// If an entry cannot be decoded, the stream ends there and `with_stream` returns that
    /// error (whatever `f` returned).
    ///
    /// ```
    /// use futures::{executor::block_on, StreamExt};
    /// use typed_kv::{OrderedFormat, PostcardFormat, StorageBuilder};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let storage = StorageBuilder::new(dir.path()).build()?;
    /// let scores = storage.new_table::<String, u32>("scores")
    ///     .with_key_format(OrderedFormat::new())
    ///     .with_value_format(PostcardFormat::new())
    ///     .build()?;
    /// scores.put_all([("ann".to_string(), 7), ("bob".to_string(), 3), ("cy".to_string(), 9)])?;
    /// let high: Vec<String> = scores.with_stream(|s| {
    ///     block_on(s.filter(|(_, g)| futures::future::ready(**g > 5)).map(|(name, _)| name).collect())
    /// })?;
    /// assert_eq!(high, ["ann", "cy"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_stream<R>(&self, f: impl for<'s> FnOnce(TableStream<'s, K, V, KF, VF>) -> R) -> Result<R> {
        let txn = self.inner.storage.read()?;
        let error = Cell::new(None);
        let entries = txn.raw_range(&self.inner, Bound::Unbounded, Bound::Unbounded)?;
        let result = f(TableStream::new(entries, &error));
        match error.into_inner() {
            Some(e) => Err(e),
            None => Ok(result),
        }
    }

    /// A consistent view of this table for many reads, without a transaction per read.
    pub fn snapshot(&self) -> Result<TableSnapshot<'_, K, V, KF, VF>> {
        self.inner.check_live()?;
        Ok(TableSnapshot { txn: self.inner.storage.read()?, table: self })
    }
}

/// A consistent read view of one table; see [`Table::snapshot`].
pub struct TableSnapshot<'t, K, V, KF, VF> {
    txn: crate::txn::ReadTxn<'t>,
    table: &'t Table<K, V, KF, VF>,
}

impl<K, V, KF: KeyFormat<K>, VF: ValueFormat<V>> TableSnapshot<'_, K, V, KF, VF> {
    /// The value under `key` in this snapshot.
    pub fn get(&self, key: &K) -> Result<Option<Guard<'_, V, VF>>> {
        self.txn.get(self.table, key)
    }

    /// Whether `key` has a value in this snapshot.
    pub fn contains_key(&self, key: &K) -> Result<bool> {
        self.txn.contains_key(self.table, key)
    }

    /// Number of entries in this snapshot.
    pub fn len(&self) -> Result<u64> {
        self.txn.len(self.table)
    }

    /// Whether the table is empty in this snapshot.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Every entry of this snapshot.
    pub fn iter(&self) -> Result<Entries<'_, K, V, KF, VF>> {
        self.txn.iter(self.table)
    }

    /// Entries of this snapshot within `range`, in key order.
    pub fn range<R: RangeBounds<K>>(&self, range: R) -> Result<Entries<'_, K, V, KF, VF>>
    where
        KF: OrderPreserving<K>,
    {
        self.txn.range(self.table, range)
    }
}

impl<KF, VF> TableInner<KF, VF> {
    /// [`StorageError::TableDropped`] once the table was dropped or recreated.
    #[inline]
    pub(crate) fn check_live(&self) -> Result<()> {
        self.life.check(&self.name)
    }

    /// Runs `f` on the encoding of `key` in this thread's reused key buffer, so point reads
    /// allocate nothing. (A nested call, from inside `f`, gets a fresh buffer.)
    pub(crate) fn with_key<K, R>(&self, key: &K, f: impl FnOnce(&[u8]) -> Result<R>) -> Result<R>
    where
        KF: KeyFormat<K>,
    {
        let mut buf = KEY_BUFFER.take();
        buf.clear();
        let result = self.encode_key(key, &mut buf).and_then(|()| f(&buf));
        KEY_BUFFER.set(buf);
        result
    }

    /// Runs `f` on the encodings of `key` and `value`, made in this thread's reused pair
    /// buffer, so a `put` allocates nothing of its own.
    pub(crate) fn with_pair<K, V, R>(
        &self,
        key: &K,
        value: &V,
        f: impl FnOnce(&[u8], &[u8]) -> Result<R>,
    ) -> Result<R>
    where
        KF: KeyFormat<K>,
        VF: ValueFormat<V>,
    {
        let mut buf = PAIR_BUFFER.take();
        buf.clear();
        let result = self.encode_key(key, &mut buf).and_then(|()| {
            let key_end = buf.len();
            // As in a batch: the value's encoding starts 16-aligned relative to the buffer.
            buf.resize(key_end.next_multiple_of(16), 0);
            let value = self.encode_value(value, &mut buf)?;
            f(&buf[..key_end], &buf[value])
        });
        if buf.capacity() <= KEEP_PAIR_BUFFER {
            PAIR_BUFFER.set(buf);
        }
        result
    }

    fn too_large(&self, what: &'static str, len: usize, max: usize) -> Result<()> {
        if len > max {
            return Err(StorageError::TooLarge { table: self.name.clone(), what, len, max });
        }
        Ok(())
    }

    /// Makes a guard of `bytes`, stored under the raw `key`.
    #[inline]
    pub(crate) fn guard<'a, V>(
        &self,
        bytes: crate::backends::ValueBytes<'a>,
        key: &[u8],
    ) -> Result<Guard<'a, V, VF>>
    where
        VF: ValueFormat<V>,
    {
        Guard::new(bytes, &self.value_format, &self.aligned_copies)
            .map_err(|e| decode_error(&self.name, "value", Some(key), e))
    }

    pub(crate) fn encode_key<K>(&self, key: &K, out: &mut Vec<u8>) -> Result<()>
    where
        KF: KeyFormat<K>,
    {
        let start = out.len();
        let encoded = self.key_format.to_bytes(key, out);
        self.check_encoding("key", encoded, out.len() - start, MAX_KEY_LEN)
    }

    /// Appends the encoding of `value` to `out`; where it lies in `out`.
    fn encode_value<V>(&self, value: &V, out: &mut Vec<u8>) -> Result<std::ops::Range<usize>>
    where
        VF: ValueFormat<V>,
    {
        let start = out.len();
        let encoded = self.value_format.to_bytes(value, out);
        self.check_encoding("value", encoded, out.len() - start, MAX_VALUE_LEN)?;
        Ok(start..out.len())
    }

    /// The error of an encoding of `what` that failed, or that took `len` bytes, over `max`.
    fn check_encoding(
        &self,
        what: &'static str,
        encoded: std::result::Result<(), FormatError>,
        len: usize,
        max: usize,
    ) -> Result<()> {
        encoded.map_err(|source| StorageError::Encode { table: self.name.clone(), what, source })?;
        self.too_large(what, len, max)
    }

    pub(crate) fn decode_key<K>(&self, bytes: &[u8]) -> Result<K>
    where
        KF: KeyFormat<K>,
    {
        self.key_format.from_bytes(bytes).map_err(|e| decode_error(&self.name, "key", Some(bytes), e))
    }

    /// Encodes a write into `batch`; `value: None` removes the key.
    pub(crate) fn encode_write<K, V>(&self, batch: &mut RawBatch, key: &K, value: Option<&V>) -> Result<()>
    where
        KF: KeyFormat<K>,
        VF: ValueFormat<V>,
    {
        self.check_live()?;
        let slot = batch.table_slot(&self.name, &self.handle);
        batch.align_buffer();
        let key_start = batch.buffer().len();
        self.encode_key(key, batch.buffer())?;
        let key_end = batch.buffer().len();
        let value = match value {
            Some(value) => {
                batch.align_buffer();
                Some(self.encode_value(value, batch.buffer())?)
            }
            None => None,
        };
        batch.push(slot, key_start..key_end, value);
        Ok(())
    }

    pub(crate) fn encode_put<K, V>(&self, batch: &mut RawBatch, key: &K, value: &V) -> Result<()>
    where
        KF: KeyFormat<K>,
        VF: ValueFormat<V>,
    {
        self.encode_write(batch, key, Some(value))
    }

    /// Runs `f` on the encoded bounds of `range`, encoded in this thread's reused key buffer
    /// (as [`with_key`](Self::with_key)), so starting a range read allocates nothing.
    pub(crate) fn with_bounds<K, R, T>(
        &self,
        range: &R,
        f: impl FnOnce(Bound<&[u8]>, Bound<&[u8]>) -> Result<T>,
    ) -> Result<T>
    where
        KF: KeyFormat<K>,
        R: RangeBounds<K>,
    {
        let mut buf = KEY_BUFFER.take();
        buf.clear();
        let result = self.encode_bound(range.start_bound(), &mut buf).and_then(|lower| {
            let upper = self.encode_bound(range.end_bound(), &mut buf)?;
            let slice = |bound: Bound<std::ops::Range<usize>>| bound.map(|r| buf.get(r).unwrap_or_default());
            f(slice(lower), slice(upper))
        });
        KEY_BUFFER.set(buf);
        result
    }

    /// Appends the encoding of `bound`'s key to `out`, at a multiple of 16 bytes as
    /// `KeyFormat::to_bytes` expects; where it went.
    fn encode_bound<K>(&self, bound: Bound<&K>, out: &mut Vec<u8>) -> Result<Bound<std::ops::Range<usize>>>
    where
        KF: KeyFormat<K>,
    {
        if !matches!(bound, Bound::Unbounded) {
            out.resize(out.len().next_multiple_of(16), 0);
        }
        let start = out.len();
        Ok(match bound {
            Bound::Included(k) => {
                self.encode_key(k, out)?;
                Bound::Included(start..out.len())
            }
            Bound::Excluded(k) => {
                self.encode_key(k, out)?;
                Bound::Excluded(start..out.len())
            }
            Bound::Unbounded => Bound::Unbounded,
        })
    }
}

/// An item for [`Table::put_all`], [`Table::put_stream`] and batches: a key and a value,
/// owned or borrowed.
pub trait KeyValue<K, V> {
    /// The key.
    fn key(&self) -> &K;
    /// The value.
    fn value(&self) -> &V;
}

impl<K, V> KeyValue<K, V> for (K, V) {
    fn key(&self) -> &K {
        &self.0
    }
    fn value(&self) -> &V {
        &self.1
    }
}

impl<K, V> KeyValue<K, V> for (&K, &V) {
    fn key(&self) -> &K {
        self.0
    }
    fn value(&self) -> &V {
        self.1
    }
}

impl<K, V> KeyValue<K, V> for (&K, V) {
    fn key(&self) -> &K {
        self.0
    }
    fn value(&self) -> &V {
        &self.1
    }
}

impl<K, V> KeyValue<K, V> for (K, &V) {
    fn key(&self) -> &K {
        &self.0
    }
    fn value(&self) -> &V {
        self.1
    }
}

impl<K, V, T: KeyValue<K, V>> KeyValue<K, V> for &T {
    fn key(&self) -> &K {
        (**self).key()
    }
    fn value(&self) -> &V {
        (**self).value()
    }
}
