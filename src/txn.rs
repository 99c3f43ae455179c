//! Reads and writes across tables: [`ReadTxn`], a consistent snapshot, and [`WriteBatch`],
//! an atomic commit.

use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use crate::backends::{EngineSnapshot, RawBatch};
use crate::error::{Result, StorageError};
use crate::formats::{KeyFormat, OrderPreserving, ValueFormat};
use crate::storage::{Storage, TableLife};
use crate::table::{Entries, Guard, Table, TableInner};

/// A consistent read view across every table of a storage, made by [`Storage::read`].
///
/// Guards and iterators borrow the snapshot, so they cannot outlive it.
///
/// ```
/// use typed_kv::{OrderedFormat, PostcardFormat, StorageBuilder};
///
/// let dir = tempfile::tempdir()?;
/// let storage = StorageBuilder::new(dir.path()).build()?;
/// let a = storage.new_table::<u32, u32>("a").with_key_format(OrderedFormat::new()).with_value_format(PostcardFormat::new()).build()?;
/// let b = storage.new_table::<u32, u32>("b").with_key_format(OrderedFormat::new()).with_value_format(PostcardFormat::new()).build()?;
///
/// let mut batch = storage.batch();
/// batch.put(&a, &1, &10)?;
/// batch.put(&b, &1, &20)?;
/// batch.commit()?; // both or neither
///
/// let snapshot = storage.read()?;
/// a.put(&1, &11)?; // not seen by the snapshot
/// assert_eq!(*snapshot.get(&a, &1)?.unwrap(), 10);
/// assert_eq!(*snapshot.get(&b, &1)?.unwrap(), 20);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ReadTxn<'s> {
    storage: &'s Storage,
    snapshot: Box<dyn EngineSnapshot + 's>,
}

fn check_storage<K, V, KF, VF>(storage: &Storage, table: &Table<K, V, KF, VF>) -> Result<()>
where
    KF: KeyFormat<K>,
    VF: ValueFormat<V>,
{
    if !storage.same_as(table.storage()) {
        return Err(StorageError::ForeignTable { table: table.name().to_owned() });
    }
    table.inner().check_live()
}

impl<'s> ReadTxn<'s> {
    pub(crate) fn new(storage: &'s Storage) -> Result<Self> {
        Ok(Self { storage, snapshot: storage.inner.engine.snapshot()? })
    }

    /// The value under `key` in `table`.
    pub fn get<'t, K, V, KF, VF>(
        &'t self,
        table: &Table<K, V, KF, VF>,
        key: &K,
    ) -> Result<Option<Guard<'t, V, VF>>>
    where
        KF: KeyFormat<K>,
        VF: ValueFormat<V>,
    {
        check_storage(self.storage, table)?;
        let inner = table.inner();
        inner.with_key(key, |k| match self.snapshot.get(&inner.handle, k)? {
            Some(bytes) => inner.guard(bytes.into(), k).map(Some),
            None => Ok(None),
        })
    }

    /// Whether `key` has a value in `table`.
    pub fn contains_key<K, V, KF, VF>(&self, table: &Table<K, V, KF, VF>, key: &K) -> Result<bool>
    where
        KF: KeyFormat<K>,
        VF: ValueFormat<V>,
    {
        check_storage(self.storage, table)?;
        let inner = table.inner();
        inner.with_key(key, |k| Ok(self.snapshot.get(&inner.handle, k)?.is_some()))
    }

    /// Number of entries of `table`.
    pub fn len<K, V, KF, VF>(&self, table: &Table<K, V, KF, VF>) -> Result<u64>
    where
        KF: KeyFormat<K>,
        VF: ValueFormat<V>,
    {
        check_storage(self.storage, table)?;
        self.snapshot.len(&table.inner().handle)
    }

    /// Every entry of `table`.
    pub fn iter<'t, K, V, KF, VF>(
        &'t self,
        table: &'t Table<K, V, KF, VF>,
    ) -> Result<Entries<'t, K, V, KF, VF>>
    where
        KF: KeyFormat<K>,
        VF: ValueFormat<V>,
    {
        check_storage(self.storage, table)?;
        self.raw_range(table.inner(), Bound::Unbounded, Bound::Unbounded)
    }

    /// Entries of `table` within `range`, in key order.
    pub fn range<'t, K, V, KF, VF, R>(
        &'t self,
        table: &'t Table<K, V, KF, VF>,
        range: R,
    ) -> Result<Entries<'t, K, V, KF, VF>>
    where
        KF: OrderPreserving<K>,
        VF: ValueFormat<V>,
        R: RangeBounds<K>,
    {
        check_storage(self.storage, table)?;
        let inner = table.inner();
        inner.with_bounds(&range, |lower, upper| self.raw_range(inner, lower, upper))
    }

    pub(crate) fn raw_range<'t, K, V, KF, VF>(
        &'t self,
        table: &'t TableInner<KF, VF>,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> Result<Entries<'t, K, V, KF, VF>> {
        table.check_live()?;
        let raw = self.snapshot.entries(&table.handle, lower, upper)?;
        Ok(Entries::new(raw, table))
    }
}

/// Writes to several tables of one storage, committed all or none by
/// [`commit`](Self::commit). Made by [`Storage::batch`]. Reads do not see the batch
/// before it commits; dropping it uncommitted discards it.
#[must_use = "a batch writes nothing until `commit` is called"]
pub struct WriteBatch<'s> {
    storage: &'s Storage,
    raw: RawBatch,
    /// The lives of the tables written, checked again at commit: a table dropped since a
    /// write was added fails the commit.
    lives: Vec<(Arc<TableLife>, String)>,
}

impl<'s> WriteBatch<'s> {
    pub(crate) fn new(storage: &'s Storage) -> Self {
        Self { storage, raw: RawBatch::default(), lives: Vec::new() }
    }

    /// Adds a write of `value` under `key` in `table`.
    pub fn put<K, V, KF, VF>(&mut self, table: &Table<K, V, KF, VF>, key: &K, value: &V) -> Result<&mut Self>
    where
        KF: KeyFormat<K>,
        VF: ValueFormat<V>,
    {
        check_storage(self.storage, table)?;
        table.inner().encode_write(&mut self.raw, key, Some(value))?;
        self.note_life(table.inner());
        Ok(self)
    }

    /// Adds the removal of `key` from `table`.
    pub fn delete<K, V, KF, VF>(&mut self, table: &Table<K, V, KF, VF>, key: &K) -> Result<&mut Self>
    where
        KF: KeyFormat<K>,
        VF: ValueFormat<V>,
    {
        check_storage(self.storage, table)?;
        table.inner().encode_write::<K, V>(&mut self.raw, key, None)?;
        self.note_life(table.inner());
        Ok(self)
    }

    /// Number of writes added.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether no write was added.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Applies every write atomically, in the order added (a later write to a key wins).
    /// Fails with [`StorageError::TableDropped`] if a table written was dropped since.
    pub fn commit(self) -> Result<()> {
        for (life, table) in &self.lives {
            life.check(table)?;
        }
        self.storage.inner.engine.write(&self.raw)
    }

    /// Remembers the life of `table`, once per table.
    fn note_life<KF, VF>(&mut self, table: &TableInner<KF, VF>) {
        if !self.lives.iter().any(|(life, _)| Arc::ptr_eq(life, &table.life)) {
            self.lives.push((Arc::clone(&table.life), table.name.clone()));
        }
    }
}
