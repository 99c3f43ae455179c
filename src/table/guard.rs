//! [`Guard`]: a value read in place, kept alive by whatever the engine needs.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::backends::{RawBytes, ValueBytes};
use crate::formats::{FormatError, ValueFormat};

/// A value read from a table, dereferencing to the format's view: `Archived<V>` for
/// [`RkyvFormat`](crate::RkyvFormat), a [`FlatbuffersView`](crate::FlatbuffersView) for
/// flatbuffers, `V` itself for bincode and postcard, `[u8]` for raw bytes.
///
/// The guard owns what keeps the bytes alive (a redb page, a sled buffer, a RocksDB pinned
/// slice), and borrows from the table or snapshot it came from (`'a`), so it can outlive
/// neither. Validation happened once, when the guard was made; derefs are free.
pub struct Guard<'a, V, F: ValueFormat<V>> {
    bytes: ValueBytes<'a>,
    checked: F::Checked,
    _value: PhantomData<fn() -> V>,
}

impl<'a, V, F: ValueFormat<V>> Guard<'a, V, F> {
    /// Validates `bytes` for `format`, first copying them into an aligned buffer if the
    /// format needs an alignment they lack (counted in `copies`).
    #[inline]
    pub(crate) fn new(bytes: ValueBytes<'a>, format: &F, copies: &AtomicU64) -> Result<Self, FormatError> {
        match bytes {
            // Bytes lent by a snapshot, aligned as the format needs (always, for values the
            // native engine stored aligned): checked where they lie, and only the slice moves.
            ValueBytes::Borrowed(slice) if (slice.as_ptr() as usize).is_multiple_of(F::ALIGN) => {
                let checked = format.check(slice)?;
                let slice = if F::BORROWS_BYTES { slice } else { &[] };
                Ok(Self { bytes: ValueBytes::Borrowed(slice), checked, _value: PhantomData })
            }
            bytes => Self::held(bytes, format, copies),
        }
    }

    /// [`new`](Self::new) for an engine's holder, or for bytes that need an aligned copy.
    fn held(bytes: ValueBytes<'a>, format: &F, copies: &AtomicU64) -> Result<Self, FormatError> {
        let bytes = if F::ALIGN > 1 && !is_stably_aligned(&bytes, F::ALIGN) {
            if F::ALIGN > 16 {
                return Err(FormatError::new(F::ID, "typed-kv aligns values to at most 16 bytes"));
            }
            copies.fetch_add(1, Ordering::Relaxed);
            let mut copy = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
            copy.extend_from_slice(&bytes);
            ValueBytes::Held(RawBytes::Aligned(copy))
        } else {
            bytes
        };
        let checked = format.check(&bytes)?;
        let bytes = if F::BORROWS_BYTES { bytes } else { ValueBytes::Borrowed(&[]) };
        Ok(Self { bytes, checked, _value: PhantomData })
    }

    /// The stored bytes the view reads (empty for formats that decode into an owned value).
    #[inline]
    pub fn raw_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Whether `bytes` are aligned to `align` and stay so when the guard moves: bytes stored
/// inside the holder itself (a small sled `IVec`) move with it, so they never count.
#[inline]
fn is_stably_aligned(bytes: &ValueBytes<'_>, align: usize) -> bool {
    let data = bytes.as_ptr() as usize;
    match bytes {
        // Lent by a snapshot: the bytes are elsewhere, the guard only points at them.
        ValueBytes::Borrowed(_) => data.is_multiple_of(align),
        ValueBytes::Held(raw) => {
            let holder = raw as *const RawBytes<'_> as usize;
            let inline = data >= holder && data < holder + std::mem::size_of::<RawBytes<'_>>();
            !inline && data.is_multiple_of(align)
        }
    }
}

impl<V, F: ValueFormat<V>> Deref for Guard<'_, V, F> {
    type Target = F::View;

    #[inline]
    fn deref(&self) -> &F::View {
        // SAFETY: `check` accepted these very contents in `new`, and they never change: the
        // holder is immutable. They are aligned to `F::ALIGN` at a stable address: `new`
        // copied them into an `AlignedVec` unless they were aligned outside the holder
        // (heap, page, mapping), which moving the guard does not change.
        unsafe { F::view(&self.checked, &self.bytes) }
    }
}

impl<V, F> fmt::Debug for Guard<'_, V, F>
where
    F: ValueFormat<V>,
    F::View: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
