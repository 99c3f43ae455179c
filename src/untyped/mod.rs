//! Tables read without their Rust types: raw keys and values as stored, with the table's
//! stamp, and decoded where the format allows it without the type.
//!
//! This is what tools use (the `typed-kv` command-line tool, [`Storage::verify`]): code that
//! knows its types should use [`Table`](crate::Table), which validates every value and lends
//! typed views. Reads only: writing untyped bytes would bypass the formats' checks.
//!
//! What can be decoded without the type:
//!
//! - `bytes` keys and values: the bytes themselves.
//! - `ordered` keys, when the stamped key type is made of standard types (integers, floats,
//!   `bool`, `char`, `String`, `Vec<u8>`, `[u8; N]`, `()`, `Option`, tuples): decoded by the
//!   same code a typed table uses, from the type name in the stamp.
//! - Nothing else: rkyv, bincode and postcard need the Rust type, flatbuffers the schema.

mod checks;
mod decoded;
mod flatbuffers_layout;
mod ordered_key;

use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

pub(crate) use checks::{value_alignment, KeyCheck, ValueCheck};
pub(crate) use decoded::hex;
pub use decoded::Decoded;

use crate::backends::{RawBytes, RawIter, TableHandle};
use crate::catalog::TableStamp;
use crate::error::{Result, StorageError};
use crate::formats::FormatError;
use crate::storage::{Storage, TableLife};

/// A table of a storage, read without its Rust types; made by [`Storage::untyped_table`].
///
/// ```
/// use typed_kv::{OrderedFormat, RkyvFormat, StorageBuilder};
///
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
/// struct Filing { pages: u32 }
///
/// let dir = tempfile::tempdir()?;
/// let storage = StorageBuilder::new(dir.path()).build()?;
/// let filings = storage
///     .new_table::<(u64, String), Filing>("filings")
///     .with_key_format(OrderedFormat::new())
///     .with_value_format(RkyvFormat::new())
///     .build()?;
/// filings.put(&(320193, "10-K".to_string()), &Filing { pages: 121 })?;
///
/// let raw = storage.untyped_table("filings")?;
/// assert_eq!(raw.stamp().value_format, "rkyv");
/// for entry in raw.iter()? {
///     let entry = entry?;
///     let key = raw.decode_key(entry.key()).expect("ordered keys of std types decode")?;
///     assert_eq!(key.to_string(), r#"(320193, "10-K")"#);
///     assert!(raw.decode_value(entry.value()).is_none(), "rkyv needs the Rust type");
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct UntypedTable {
    storage: Storage,
    name: String,
    stamp: TableStamp,
    /// `None` when the engine has no table of that name (a stamped table never written).
    handle: Option<TableHandle>,
    /// Whether the table was dropped since this handle was made.
    life: Arc<TableLife>,
    keys: KeyCheck,
    values: ValueCheck,
}

impl fmt::Debug for UntypedTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UntypedTable").field("name", &self.name).field("stamp", &self.stamp).finish()
    }
}

impl Storage {
    /// Table `name` read without its Rust types, for tools; see [`UntypedTable`].
    ///
    /// Errors: [`StorageError::TableNotFound`] if no table of that name was built in this
    /// store, [`StorageError::CorruptCatalog`] if its stamp is damaged.
    pub fn untyped_table(&self, name: &str) -> Result<UntypedTable> {
        let _schema = self.inner.schema.lock();
        let stamp =
            self.table_stamp(name)?.ok_or_else(|| StorageError::TableNotFound { table: name.to_owned() })?;
        let handle = self.inner.engine.table_for_reading(name)?;
        Ok(UntypedTable {
            life: self.table_life(name),
            storage: self.clone(),
            name: name.to_owned(),
            keys: KeyCheck::for_stamp(&stamp),
            values: ValueCheck::for_stamp(&stamp),
            stamp,
            handle,
        })
    }
}

impl UntypedTable {
    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How the table was created: formats, type names, schema version.
    pub fn stamp(&self) -> &TableStamp {
        &self.stamp
    }

    /// Number of entries (O(n) on sled and RocksDB, as [`Table::len`](crate::Table::len)).
    pub fn len(&self) -> Result<u64> {
        self.life.check(&self.name)?;
        match &self.handle {
            Some(handle) => self.storage.inner.engine.len(handle),
            None => Ok(0),
        }
    }

    /// Whether the table has no entry.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Every entry in key order, as stored. On redb and the native engine the iterator reads
    /// one consistent view; on sled, writes made meanwhile may or may not be seen.
    pub fn iter(&self) -> Result<UntypedEntries<'_>> {
        self.life.check(&self.name)?;
        let inner: RawIter<'_> = match &self.handle {
            Some(handle) => self.storage.inner.engine.range(handle, Bound::Unbounded, Bound::Unbounded)?,
            None => Box::new(std::iter::empty()),
        };
        Ok(UntypedEntries { inner })
    }

    /// The key decoded without its Rust type, or `None` if the key format does not allow it
    /// (see the [module documentation](self)). `Some(Err(..))`: the bytes are not a valid key
    /// of the stamped type.
    pub fn decode_key(&self, key: &[u8]) -> Option<std::result::Result<Decoded, FormatError>> {
        self.keys.decode(key)
    }

    /// Whether [`decode_key`](Self::decode_key) decodes this table's keys.
    pub fn decodes_keys(&self) -> bool {
        !matches!(self.keys, KeyCheck::Unchecked(_))
    }

    /// Whether [`decode_value`](Self::decode_value) decodes this table's values.
    pub fn decodes_values(&self) -> bool {
        matches!(self.values, ValueCheck::AnyBytes)
    }

    /// The value decoded without its Rust type, or `None` if the value format does not allow
    /// it (only `bytes` values do).
    pub fn decode_value(&self, value: &[u8]) -> Option<Decoded> {
        self.values.decode(value)
    }
}

/// Entries of an [`UntypedTable`], in key order.
pub struct UntypedEntries<'a> {
    inner: RawIter<'a>,
}

impl<'a> Iterator for UntypedEntries<'a> {
    type Item = Result<UntypedEntry<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|entry| entry.map(|(key, value)| UntypedEntry { key, value }))
    }
}

impl fmt::Debug for UntypedEntries<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UntypedEntries").finish_non_exhaustive()
    }
}

/// One entry of an [`UntypedTable`]: key and value bytes as the engine stores them (lent,
/// not copied, where the engine allows).
pub struct UntypedEntry<'a> {
    key: RawBytes<'a>,
    value: RawBytes<'a>,
}

impl UntypedEntry<'_> {
    /// The key's bytes.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The value's bytes.
    pub fn value(&self) -> &[u8] {
        &self.value
    }
}

impl fmt::Debug for UntypedEntry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UntypedEntry")
            .field("key", &hex(&self.key))
            .field("value_len", &self.value.len())
            .finish()
    }
}
