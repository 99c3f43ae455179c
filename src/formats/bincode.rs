//! [bincode](https://docs.rs/bincode) 2.0 through serde, standard configuration (varints,
//! little-endian). A guard holds the value decoded once.
//!
//! bincode 3.0.0 on crates.io is a tombstone that refuses to compile, hence 2.0.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{FormatError, KeyFormat, ValueFormat};

const ID: &str = "bincode";

/// The bincode format, for keys and values of any serde type. Keys do not sort in `Ord`
/// order (varint, little-endian integers).
#[derive(Debug, Clone, Copy, Default)]
pub struct BincodeFormat;

impl BincodeFormat {
    /// The format.
    pub const fn new() -> Self {
        Self
    }
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn encode<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), FormatError> {
    bincode::serde::encode_into_std_write(value, out, config())
        .map(|_| ())
        .map_err(|e| FormatError::new(ID, e))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FormatError> {
    let (value, read) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(|e| FormatError::new(ID, e))?;
    if read != bytes.len() {
        return Err(FormatError::new(ID, format!("{} trailing bytes after the value", bytes.len() - read)));
    }
    Ok(value)
}

impl<V: Serialize + DeserializeOwned + 'static> ValueFormat<V> for BincodeFormat {
    type View = V;
    type Checked = V;

    const ID: &'static str = ID;
    const BORROWS_BYTES: bool = false;

    fn flags(&self) -> String {
        "standard".into()
    }

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

impl<K: Serialize + DeserializeOwned + 'static> KeyFormat<K> for BincodeFormat {
    const ID: &'static str = ID;

    fn flags(&self) -> String {
        "standard".into()
    }

    fn to_bytes(&self, key: &K, out: &mut Vec<u8>) -> Result<(), FormatError> {
        encode(key, out)
    }

    fn from_bytes(&self, bytes: &[u8]) -> Result<K, FormatError> {
        decode(bytes)
    }
}
