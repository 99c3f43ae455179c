//! [`Entries`]: typed entries decoded from an engine's range iterator.

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
pub struct Entries<'a, K, V, KF, VF> {
    raw: RawRange<'a>,
    table: &'a TableInner<KF, VF>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<'a, K, V, KF, VF> Entries<'a, K, V, KF, VF> {
    pub(crate) fn new(raw: RawRange<'a>, table: &'a TableInner<KF, VF>) -> Self {
        Self { raw, table, _types: PhantomData }
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
