//! [`Entries`]: typed entries decoded from an engine's range iterator, and its halves
//! [`Values`] and [`Keys`], which skip decoding what they do not yield.

use std::marker::PhantomData;

use super::{Guard, TableInner};
use crate::backends::RawRange;
use crate::error::Result;
use crate::formats::{KeyFormat, ValueFormat};

/// Entries of a table, in the order of their encoded keys; each is the decoded key and a
/// [`Guard`] on the value. Made by [`Table::iter`](crate::Table::iter),
/// [`Table::range`](crate::Table::range) and the same methods of snapshots.
///
/// An entry that cannot be decoded is an `Err` item; iteration may go on past it.
///
/// Decoding a key makes an owned `K` (for `Vec<u8>` or `String` keys, an allocation per
/// entry). A scan that needs only the values, or only the keys, costs less through
/// [`values`](Self::values) or [`keys`](Self::keys).
pub struct Entries<'a, K, V, KF, VF> {
    raw: RawRange<'a>,
    table: &'a TableInner<KF, VF>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<'a, K, V, KF, VF> Entries<'a, K, V, KF, VF> {
    pub(crate) fn new(raw: RawRange<'a>, table: &'a TableInner<KF, VF>) -> Self {
        Self { raw, table, _types: PhantomData }
    }

    /// The same entries' values alone: keys are not decoded, so a scan pays nothing for
    /// them (and a key its format cannot decode is no error here).
    ///
    /// ```
    /// use typed_kv::{OrderedFormat, PostcardFormat, StorageBuilder};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let storage = StorageBuilder::new(dir.path()).build()?;
    /// let scores = storage.new_table::<String, u32>("scores")
    ///     .with_key_format(OrderedFormat::new())
    ///     .with_value_format(PostcardFormat::new())
    ///     .build()?;
    /// scores.put_all([("ann".to_string(), 7), ("bob".to_string(), 3), ("cy".to_string(), 9)])?;
    /// let snapshot = scores.snapshot()?;
    /// let mut total = 0;
    /// for score in snapshot.range("b".to_string()..)?.values() {
    ///     total += *score?;
    /// }
    /// assert_eq!(total, 12);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn values(self) -> Values<'a, K, V, KF, VF> {
        Values { entries: self }
    }

    /// The same entries' keys alone: values are neither validated nor decoded.
    pub fn keys(self) -> Keys<'a, K, V, KF, VF> {
        Keys { entries: self }
    }
}

impl<'a, K, V, KF: KeyFormat<K>, VF: ValueFormat<V>> Iterator for Entries<'a, K, V, KF, VF> {
    type Item = Result<(K, Guard<'a, V, VF>)>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let table = self.table;
        self.raw.next_with(|key, value| {
            let decoded = table.decode_key(key)?;
            let guard = table.guard(value, key)?;
            Ok((decoded, guard))
        })
    }
}

/// The values of [`Entries`], without their keys; made by [`Entries::values`].
pub struct Values<'a, K, V, KF, VF> {
    entries: Entries<'a, K, V, KF, VF>,
}

impl<'a, K, V, KF, VF: ValueFormat<V>> Iterator for Values<'a, K, V, KF, VF> {
    type Item = Result<Guard<'a, V, VF>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let table = self.entries.table;
        self.entries.raw.next_with(|key, value| table.guard(value, key))
    }
}

/// The keys of [`Entries`], without their values; made by [`Entries::keys`].
pub struct Keys<'a, K, V, KF, VF> {
    entries: Entries<'a, K, V, KF, VF>,
}

impl<K, V, KF: KeyFormat<K>, VF> Iterator for Keys<'_, K, V, KF, VF> {
    type Item = Result<K>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let table = self.entries.table;
        self.entries.raw.next_with(|key, _| table.decode_key(key))
    }
}
