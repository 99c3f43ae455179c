//! What each format lets typed-kv check of stored bytes without the Rust type, per table
//! stamp: the checks [`Storage::verify`](crate::Storage::verify) runs and the decoding that
//! [`UntypedTable`](super::UntypedTable) offers.
//!
//! | format | keys | values |
//! |---|---|---|
//! | `bytes` | any bytes are valid | any bytes are valid |
//! | `ordered` | decoded exactly when the stamped key type is made of standard types (see `ordered_key.rs`), else not checked | — |
//! | `flatbuffers` | — | the root table's frame (offsets, vtable, bounds, alignment); fields need the schema |
//! | `rkyv` | not checked: bytecheck validates against the type's layout | not checked, for the same reason |
//! | `bincode`, `postcard` | not checked: not self-describing | not checked: not self-describing |

use crate::catalog::TableStamp;
use crate::formats::FormatError;
use crate::verify::FormatCheck;

use super::flatbuffers_layout;
use super::ordered_key::KeyType;
use super::Decoded;

/// Why a format's bytes need the Rust type to be checked, or `None` for formats typed-kv can
/// check some other way.
fn needs_the_type(format: &str) -> Option<String> {
    Some(match format {
        "rkyv" => "rkyv archives are validated (bytecheck) against the Rust type's layout, which only a \
                   typed table knows"
            .to_owned(),
        "bincode" | "postcard" => {
            format!("{format} is not self-describing: only the Rust type says how to read the bytes")
        }
        "bytes" | "ordered" | "flatbuffers" => return None,
        other => format!("`{other}` is not a format typed-kv knows"),
    })
}

/// How keys of a table are checked.
#[derive(Debug, Clone)]
pub(crate) enum KeyCheck {
    /// Any bytes are a key (`bytes`).
    AnyBytes,
    /// Decoded as the stamped standard type (`ordered`).
    Ordered(KeyType),
    /// Not checked, and why.
    Unchecked(String),
}

impl KeyCheck {
    pub(crate) fn for_stamp(stamp: &TableStamp) -> KeyCheck {
        match stamp.key_format.as_str() {
            "bytes" => KeyCheck::AnyBytes,
            "ordered" => match KeyType::parse(&stamp.key_type) {
                Some(ty) => KeyCheck::Ordered(ty),
                None => KeyCheck::Unchecked(format!(
                    "the order-preserving encoding has no tags, and the key type `{}` is not made of \
                     standard types that typed-kv can decode by name",
                    stamp.key_type
                )),
            },
            other => KeyCheck::Unchecked(needs_the_type(other).unwrap_or_default()),
        }
    }

    /// Decodes a key, or `None` if this table's keys cannot be decoded without the type.
    pub(crate) fn decode(&self, key: &[u8]) -> Option<Result<Decoded, FormatError>> {
        match self {
            KeyCheck::AnyBytes => Some(Ok(Decoded::Bytes(key.to_vec()))),
            KeyCheck::Ordered(ty) => Some(ty.decode_key(key)),
            KeyCheck::Unchecked(_) => None,
        }
    }

    /// Checks a key; `Err` says what is wrong.
    pub(crate) fn check(&self, key: &[u8]) -> Result<(), String> {
        match self {
            KeyCheck::Ordered(ty) => ty.decode_key(key).map(drop).map_err(|e| e.to_string()),
            KeyCheck::AnyBytes | KeyCheck::Unchecked(_) => Ok(()),
        }
    }

    /// What [`check`](Self::check) covers.
    pub(crate) fn coverage(&self, stamp: &TableStamp) -> FormatCheck {
        match self {
            KeyCheck::AnyBytes => FormatCheck::Decoded { how: "raw bytes: any bytes are a valid key".into() },
            KeyCheck::Ordered(_) => FormatCheck::Decoded {
                how: format!(
                    "decoded as the stamped key type `{}`, canonical encoding required, as a typed table would",
                    stamp.key_type
                ),
            },
            KeyCheck::Unchecked(why) => FormatCheck::NotChecked { why: why.clone() },
        }
    }
}

/// How values of a table are checked.
#[derive(Debug, Clone)]
pub(crate) enum ValueCheck {
    /// Any bytes are a value (`bytes`).
    AnyBytes,
    /// The root table's frame (`flatbuffers`).
    FlatbuffersRoot,
    /// Not checked, and why.
    Unchecked(String),
}

impl ValueCheck {
    pub(crate) fn for_stamp(stamp: &TableStamp) -> ValueCheck {
        match stamp.value_format.as_str() {
            "bytes" => ValueCheck::AnyBytes,
            "flatbuffers" => ValueCheck::FlatbuffersRoot,
            "ordered" => ValueCheck::Unchecked("`ordered` is a key format".into()),
            other => ValueCheck::Unchecked(needs_the_type(other).unwrap_or_default()),
        }
    }

    /// Decodes a value, or `None` if this table's values cannot be decoded without the type.
    pub(crate) fn decode(&self, value: &[u8]) -> Option<Decoded> {
        match self {
            ValueCheck::AnyBytes => Some(Decoded::Bytes(value.to_vec())),
            ValueCheck::FlatbuffersRoot | ValueCheck::Unchecked(_) => None,
        }
    }

    /// Checks a value; `Err` says what is wrong.
    pub(crate) fn check(&self, value: &[u8]) -> Result<(), String> {
        match self {
            ValueCheck::FlatbuffersRoot => flatbuffers_layout::check_root_table(value),
            ValueCheck::AnyBytes | ValueCheck::Unchecked(_) => Ok(()),
        }
    }

    /// What [`check`](Self::check) covers.
    pub(crate) fn coverage(&self, stamp: &TableStamp) -> FormatCheck {
        match self {
            ValueCheck::AnyBytes => {
                FormatCheck::Decoded { how: "raw bytes: any bytes are a valid value".into() }
            }
            ValueCheck::FlatbuffersRoot => FormatCheck::Framing {
                how: format!(
                    "the root table's offset, vtable and field offsets lie within the buffer, aligned; \
                     what the fields hold needs the generated code of `{}` (its verifier runs when a \
                     typed guard is made)",
                    stamp.value_flags
                ),
            },
            ValueCheck::Unchecked(why) => FormatCheck::NotChecked { why: why.clone() },
        }
    }
}

/// The alignment values of a format need in memory, so that a copy writes them where a
/// typed guard can read them in place: 16 for rkyv and for formats typed-kv does not know
/// (a user's own), 1 for the others.
pub(crate) fn value_alignment(value_format: &str) -> usize {
    match value_format {
        "bytes" | "flatbuffers" | "bincode" | "postcard" | "ordered" => 1,
        _ => 16,
    }
}
