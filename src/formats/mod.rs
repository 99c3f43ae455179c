//! Key and value formats: how typed keys and values become bytes, and back.
//!
//! A table pairs one [`KeyFormat`] for its keys with one [`ValueFormat`] for its values.
//! Formats are small, stateless values (`RkyvFormat::new()`); one format type serves every
//! Rust type it can encode, so the table's `K`/`V` pick the implementation.
//!
//! Key order is a property of the key format: only formats that implement
//! [`OrderPreserving`] promise that byte order equals `Ord` order, and only tables with such
//! a key format offer `range(..)`.

use std::fmt;

pub mod bincode;
pub mod bytes;
pub mod flatbuffers;
pub mod ordered;
pub mod postcard;
pub mod rkyv;

/// Why a format could not encode or decode some bytes.
///
/// The table layer wraps it in [`StorageError`](crate::StorageError) with the table and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    /// The format's stamp id (`"rkyv"`, `"ordered"`, ...).
    pub format: &'static str,
    /// What was wrong, in words.
    pub reason: String,
}

impl FormatError {
    /// An error of `format` for `reason`.
    pub fn new(format: &'static str, reason: impl fmt::Display) -> Self {
        Self { format, reason: reason.to_string() }
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} format: {}", self.format, self.reason)
    }
}

impl std::error::Error for FormatError {}

/// Turns keys of type `K` into bytes and back.
///
/// Decoding is fallible: stored bytes may be corrupt or written by another format.
pub trait KeyFormat<K>: Send + Sync + 'static {
    /// Stable id stamped in the table catalog; reopening with another id is an error.
    const ID: &'static str;

    /// Extra facts about the encoding that change the bytes (endianness, widths...), stamped
    /// beside [`ID`](Self::ID). Empty by default.
    fn flags(&self) -> String {
        String::new()
    }

    /// Appends the encoding of `key` to `out`. `out.len()` is a multiple of 16 on entry, so
    /// an encoding may align its parts relative to `out`'s start.
    fn to_bytes(&self, key: &K, out: &mut Vec<u8>) -> Result<(), FormatError>;

    /// Decodes a whole key; trailing bytes are an error.
    #[allow(clippy::wrong_self_convention)] // the name is the documented API contract
    fn from_bytes(&self, bytes: &[u8]) -> Result<K, FormatError>;
}

/// A key format whose byte order (lexicographic, as every backend sorts) equals `K`'s `Ord`
/// order (for floats: `total_cmp`). Tables offer `range(..)` only with such a format.
pub trait OrderPreserving<K>: KeyFormat<K> {}

/// Turns values of type `V` into bytes, and stored bytes into a view a guard derefs to.
///
/// A guard is made in two steps: [`check`](Self::check) validates the bytes once (and, for
/// formats that decode, keeps the decoded value), then every deref calls
/// [`view`](Self::view), which must be cheap.
pub trait ValueFormat<V>: Send + Sync + 'static {
    /// What a guard dereferences to: `Archived<V>` for rkyv, `V` for formats that decode.
    type View: ?Sized;
    /// What validation leaves for [`view`](Self::view): `()` for zero-copy formats, the
    /// decoded `V` for the others.
    type Checked;

    /// Stable id stamped in the table catalog; reopening with another id is an error.
    const ID: &'static str;
    /// Alignment the bytes given to [`check`](Self::check)/[`view`](Self::view) must have.
    /// The guard copies misaligned bytes into an aligned buffer (and counts the copy).
    const ALIGN: usize = 1;
    /// Whether [`view`](Self::view) reads the stored bytes. When `false`, the guard lets go of
    /// the engine's bytes right after [`check`](Self::check).
    const BORROWS_BYTES: bool;

    /// Extra facts about the encoding that change the bytes, stamped beside [`ID`](Self::ID).
    fn flags(&self) -> String {
        String::new()
    }

    /// Appends the encoding of `value` to `out`. `out.len()` is a multiple of 16 on entry, so
    /// an encoding may align its parts relative to `out`'s start.
    fn to_bytes(&self, value: &V, out: &mut Vec<u8>) -> Result<(), FormatError>;

    /// Validates stored bytes (aligned to [`ALIGN`](Self::ALIGN)); never panics on bad bytes.
    fn check(&self, bytes: &[u8]) -> Result<Self::Checked, FormatError>;

    /// The view of bytes that [`check`](Self::check) accepted.
    ///
    /// # Safety
    ///
    /// `bytes` must have exactly the contents that `check` accepted when it returned
    /// `checked`, at an address aligned to [`ALIGN`](Self::ALIGN).
    unsafe fn view<'a>(checked: &'a Self::Checked, bytes: &'a [u8]) -> &'a Self::View;
}
