//! [rkyv](https://docs.rs/rkyv) 0.8: values are read in place, validated once by bytecheck
//! when the guard is made.
//!
//! rkyv archives need aligned bytes. The native engine stores every value 16-byte aligned, so
//! its guards borrow; other engines give unaligned bytes about as often as not, and then the
//! guard copies the value into an aligned buffer it owns (counted in the storage's stats).
//!
//! The archive layout depends on rkyv's features (endianness, alignment, pointer width).
//! typed-kv never turns these on, but another crate in your build could; the table stamp
//! records them so that a changed layout is a clear [`TableTypeMismatch`] on reopen instead of
//! garbage.
//!
//! [`TableTypeMismatch`]: crate::StorageError::TableTypeMismatch

use std::mem::MaybeUninit;

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::{Archive, Deserialize, Portable, Serialize};

use super::{FormatError, KeyFormat, ValueFormat};

const ID: &str = "rkyv";

/// The rkyv format, for keys and values.
///
/// As a value format, a guard dereferences to `Archived<V>`:
///
/// ```
/// use typed_kv::{RkyvFormat, ValueFormat};
///
/// #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
/// struct Point { x: i32, y: i32 }
///
/// let mut bytes = Vec::new();
/// ValueFormat::<Point>::to_bytes(&RkyvFormat::new(), &Point { x: 1, y: 2 }, &mut bytes).unwrap();
/// // Bytes straight from a `Vec<u8>` may be misaligned; guards take care of that for you.
/// let mut aligned = rkyv::util::AlignedVec::<16>::new();
/// aligned.extend_from_slice(&bytes);
/// assert!(ValueFormat::<Point>::check(&RkyvFormat::new(), &aligned).is_ok());
/// ```
///
/// As a key format it does not preserve order (integers are little-endian): use
/// [`OrderedFormat`](crate::OrderedFormat) for tables you scan by range.
#[derive(Debug, Clone, Copy, Default)]
pub struct RkyvFormat;

impl RkyvFormat {
    /// The format.
    pub const fn new() -> Self {
        Self
    }
}

fn rkyv_error(err: rancor::Error) -> FormatError {
    FormatError::new(ID, err)
}

/// The archive layout of this build, e.g. `"le,aligned,ptr32"`.
fn layout_flags() -> String {
    let one = rkyv::to_bytes::<rancor::Error>(&1u32).map(|b| b.first().copied());
    let endian = if matches!(one, Ok(Some(1))) { "le" } else { "be" };
    let aligned = if std::mem::align_of::<rkyv::Archived<u32>>() > 1 { "aligned" } else { "unaligned" };
    let ptr = 8 * std::mem::size_of::<rkyv::Archived<usize>>();
    format!("{endian},{aligned},ptr{ptr}")
}

fn encode<T>(value: &T, out: &mut Vec<u8>) -> Result<(), FormatError>
where
    T: for<'a> Serialize<HighSerializer<Vec<u8>, ArenaHandle<'a>, rancor::Error>>,
{
    // `to_bytes_in` takes its writer by value: lend it the caller's buffer and take it back.
    let buf = std::mem::take(out);
    *out = rkyv::api::high::to_bytes_in(value, buf).map_err(rkyv_error)?;
    Ok(())
}

impl<V> ValueFormat<V> for RkyvFormat
where
    V: Archive + for<'a> Serialize<HighSerializer<Vec<u8>, ArenaHandle<'a>, rancor::Error>> + 'static,
    V::Archived: Portable + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    type View = V::Archived;
    type Checked = ();

    const ID: &'static str = ID;
    const ALIGN: usize = 16;
    const BORROWS_BYTES: bool = true;

    fn flags(&self) -> String {
        layout_flags()
    }

    fn to_bytes(&self, value: &V, out: &mut Vec<u8>) -> Result<(), FormatError> {
        encode(value, out)
    }

    fn check(&self, bytes: &[u8]) -> Result<(), FormatError> {
        rkyv::access::<V::Archived, rancor::Error>(bytes).map(|_| ()).map_err(rkyv_error)
    }

    unsafe fn view<'a>(_checked: &'a (), bytes: &'a [u8]) -> &'a V::Archived {
        // SAFETY: the caller guarantees `check` validated exactly these bytes (bytecheck
        // checked every pointer, length and alignment), and they cannot change while borrowed.
        unsafe { rkyv::access_unchecked::<V::Archived>(bytes) }
    }
}

/// Keys up to this size are decoded from an aligned copy on the stack.
const STACK_KEY: usize = 128;

#[repr(C, align(16))]
struct AlignedStack([MaybeUninit<u8>; STACK_KEY]);

impl<K> KeyFormat<K> for RkyvFormat
where
    K: Archive + for<'a> Serialize<HighSerializer<Vec<u8>, ArenaHandle<'a>, rancor::Error>> + 'static,
    K::Archived: Portable
        + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<K, HighDeserializer<rancor::Error>>,
{
    const ID: &'static str = ID;

    fn flags(&self) -> String {
        layout_flags()
    }

    fn to_bytes(&self, key: &K, out: &mut Vec<u8>) -> Result<(), FormatError> {
        encode(key, out)
    }

    fn from_bytes(&self, bytes: &[u8]) -> Result<K, FormatError> {
        if (bytes.as_ptr() as usize).is_multiple_of(16) {
            return rkyv::from_bytes::<K, rancor::Error>(bytes).map_err(rkyv_error);
        }
        // Engines hand out keys at any alignment; decode from an aligned copy.
        if bytes.len() <= STACK_KEY {
            let mut stack = AlignedStack([MaybeUninit::uninit(); STACK_KEY]);
            let dst = &mut stack.0[..bytes.len()];
            for (d, s) in dst.iter_mut().zip(bytes) {
                d.write(*s);
            }
            // SAFETY: the first `bytes.len()` bytes were all initialised by the loop above.
            let copy = unsafe { std::slice::from_raw_parts(dst.as_ptr().cast::<u8>(), bytes.len()) };
            rkyv::from_bytes::<K, rancor::Error>(copy).map_err(rkyv_error)
        } else {
            let mut copy = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
            copy.extend_from_slice(bytes);
            rkyv::from_bytes::<K, rancor::Error>(&copy).map_err(rkyv_error)
        }
    }
}
