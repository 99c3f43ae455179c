//! [postcard](https://docs.rs/postcard) 1 through serde: compact varint encoding. A guard
//! holds the value decoded once.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{FormatError, KeyFormat, ValueFormat};

const ID: &str = "postcard";

/// The postcard format, for keys and values of any serde type. Keys do not sort in `Ord`
/// order (varints).
#[derive(Debug, Clone, Copy, Default)]
pub struct PostcardFormat;

impl PostcardFormat {
    /// The format.
    pub const fn new() -> Self {
        Self
    }
}

fn encode<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), FormatError> {
    postcard::to_io(value, out).map(|_| ()).map_err(|e| FormatError::new(ID, e))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FormatError> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| FormatError::new(ID, e))?;
    if !rest.is_empty() {
        return Err(FormatError::new(ID, format!("{} trailing bytes after the value", rest.len())));
    }
    Ok(value)
}

impl<V: Serialize + DeserializeOwned + 'static> ValueFormat<V> for PostcardFormat {
    type View = V;
    type Checked = V;

    const ID: &'static str = ID;
    const BORROWS_BYTES: bool = false;

    fn to_bytes(&self, value: &V, out: &mut Vec<u8>) -> Result<(), FormatError> {
        encode(value, out)
    }

    fn check(&self, bytes: &[u8]) -> Result<V, FormatError> {
        decode(bytes)
    }

    unsafe fn view<'a>(checked: &'a V, _bytes: &'a [u8]) -> &'a V {
        checked
    }
}

impl<K: Serialize + DeserializeOwned + 'static> KeyFormat<K> for PostcardFormat {
    const ID: &'static str = ID;

    fn to_bytes(&self, key: &K, out: &mut Vec<u8>) -> Result<(), FormatError> {
        encode(key, out)
    }

    fn from_bytes(&self, bytes: &[u8]) -> Result<K, FormatError> {
        decode(bytes)
    }
}
