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

/// Decodes a whole value, with a byte limit so that a corrupt length prefix is an error, not
/// an allocation of up to 2^64 bytes (bincode allocates a string's claimed length before
/// reading it: without a limit, a few bad bytes abort the process).
///
/// Through serde, bincode counts against the limit each primitive's size in memory (at most
/// 16 bytes, for at least 1 byte of input) and each owned string or byte buffer's length (all
/// of it read from the input): a limit of 16 times the input never refuses valid bytes.
/// Limits are type-level constants, so this takes the smallest power of 16 above that: a
/// corrupt prefix allocates at most 256 times the length of the value.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FormatError> {
    macro_rules! with_limit_above_16_times_len {
        ($($bits:literal)*) => {
            $(if bytes.len() <= 1 << ($bits - 4) {
                return decode_with(bytes, config().with_limit::<{ 1 << $bits }>());
            })*
        };
    }
    with_limit_above_16_times_len!(12 16 20 24 28);
    // Values are at most MAX_VALUE_LEN (2^30) bytes: 2^36 covers them.
    #[cfg(target_pointer_width = "64")]
    with_limit_above_16_times_len!(32 36);
    decode_with(bytes, config().with_limit::<{ usize::MAX }>())
}

fn decode_with<T: DeserializeOwned>(
    bytes: &[u8],
    config: impl bincode::config::Config,
) -> Result<T, FormatError> {
    let (value, read) =
        bincode::serde::decode_from_slice(bytes, config).map_err(|e| FormatError::new(ID, e))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A string length prefix (varint tag 0xFD: a u64 follows) claiming `len` bytes.
    fn claimed_string(len: u64) -> Vec<u8> {
        let mut bytes = vec![0xFD];
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(b"only a few bytes follow");
        bytes
    }

    #[test]
    fn a_corrupt_length_prefix_is_an_error_not_an_allocation() {
        // Found by the value_formats fuzz target: bincode allocated the claimed length before
        // reading, so a few corrupt bytes aborted the process (allocation failure) or
        // panicked (capacity overflow).
        for len in [1 << 40, 1 << 62, u64::MAX] {
            let err = decode::<String>(&claimed_string(len)).expect_err("accepted");
            assert_eq!(err.format, "bincode");
            let mut nested = vec![2, b'o', b'k'];
            nested.extend_from_slice(&claimed_string(len));
            assert!(decode::<(String, String)>(&nested).is_err(), "accepted a second string of {len}");
        }
    }

    #[test]
    fn the_limit_never_refuses_valid_values_at_its_steps() {
        // u128 zeros claim 16 bytes of limit for 1 byte of input, the most of any type;
        // strings and byte buffers claim their length. Encodings just below, at and above
        // each step of the limit (input lengths 2^8, 2^12, 2^16).
        for step in [256usize, 4096, 65536] {
            for encoded in [step - 1, step, step + 1] {
                let zeros = vec![0u128; encoded - 3]; // a 3-byte length prefix from 251 on
                let mut out = Vec::new();
                encode(&zeros, &mut out).expect("encode");
                assert_eq!(out.len(), encoded);
                assert_eq!(decode::<Vec<u128>>(&out).expect("decode"), zeros);
                let text = "z".repeat(encoded - 3);
                out.clear();
                encode(&text, &mut out).expect("encode");
                assert_eq!(decode::<String>(&out).expect("decode"), text);
            }
        }
    }
}
