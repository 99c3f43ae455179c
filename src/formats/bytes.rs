//! Raw bytes, unchanged: for data that is already encoded, and to measure the typed layer's
//! own overhead.

use super::{FormatError, KeyFormat, OrderPreserving, ValueFormat};

const ID: &str = "bytes";

/// Keys and values that are `Vec<u8>`, stored as they are. A guard derefs to `[u8]`,
/// borrowed from the engine. As keys, byte strings sort lexicographically, which is their
/// `Ord` order, so this format preserves order.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesFormat;

impl BytesFormat {
    /// The format.
    pub const fn new() -> Self {
        Self
    }
}

impl ValueFormat<Vec<u8>> for BytesFormat {
    type View = [u8];
    type Checked = ();

    const ID: &'static str = ID;
    const BORROWS_BYTES: bool = true;

    fn to_bytes(&self, value: &Vec<u8>, out: &mut Vec<u8>) -> Result<(), FormatError> {
        out.extend_from_slice(value);
        Ok(())
    }

    fn check(&self, _bytes: &[u8]) -> Result<(), FormatError> {
        Ok(())
    }

    unsafe fn view<'a>(_checked: &'a (), bytes: &'a [u8]) -> &'a [u8] {
        bytes
    }
}

impl KeyFormat<Vec<u8>> for BytesFormat {
    const ID: &'static str = ID;

    fn to_bytes(&self, key: &Vec<u8>, out: &mut Vec<u8>) -> Result<(), FormatError> {
        out.extend_from_slice(key);
        Ok(())
    }

    fn from_bytes(&self, bytes: &[u8]) -> Result<Vec<u8>, FormatError> {
        Ok(bytes.to_vec())
    }
}

impl OrderPreserving<Vec<u8>> for BytesFormat {}
