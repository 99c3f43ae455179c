//! Decoding [`OrderedFormat`](crate::OrderedFormat) keys without their Rust type, from the
//! key type's name in the table stamp.
//!
//! The order-preserving encoding carries no tags (a `u64` is 8 bytes, nothing says so), so
//! bytes alone cannot be decoded. But a stamp records `std::any::type_name` of the key type,
//! and when that names standard types only — integers, floats, `bool`, `char`, `String`,
//! `Vec<u8>`, `[u8; N]`, `()`, `Option<T>` and tuples of them — the key is decoded exactly as
//! the typed table would, by the same [`OrderedKey`] implementations, canonical encoding
//! required. Keys of other types (a user's own `OrderedKey` struct) are not decoded.
//!
//! `type_name` output is not guaranteed stable across compilers; a name this parser does not
//! know only means the key is shown as hex.

use crate::formats::ordered::OrderedKey;
use crate::formats::FormatError;

use super::Decoded;

/// A key type the stamp names, made of standard types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyType {
    U8,
    U16,
    U32,
    U64,
    U128,
    Usize,
    I8,
    I16,
    I32,
    I64,
    I128,
    Isize,
    F32,
    F64,
    Bool,
    Char,
    String,
    ByteVec,
    ByteArray(usize),
    Unit,
    Option(Box<KeyType>),
    Tuple(Vec<KeyType>),
}

/// Longest tuple [`OrderedKey`] is implemented for.
const MAX_TUPLE: usize = 8;

impl KeyType {
    /// The type named by `std::any::type_name` output, if it is made of standard types.
    pub(crate) fn parse(name: &str) -> Option<KeyType> {
        let mut parser = Parser { rest: name.trim() };
        let ty = parser.ty()?;
        parser.rest.trim().is_empty().then_some(ty)
    }

    /// Decodes one value of this type from the front of `input`, advancing it.
    fn decode(&self, input: &mut &[u8]) -> Result<Decoded, FormatError> {
        fn take<T: OrderedKey>(input: &mut &[u8]) -> Result<T, FormatError> {
            T::decode_ordered(input)
        }
        Ok(match self {
            KeyType::U8 => Decoded::UInt(take::<u8>(input)?.into()),
            KeyType::U16 => Decoded::UInt(take::<u16>(input)?.into()),
            KeyType::U32 => Decoded::UInt(take::<u32>(input)?.into()),
            KeyType::U64 => Decoded::UInt(take::<u64>(input)?.into()),
            KeyType::U128 => Decoded::UInt(take::<u128>(input)?),
            KeyType::Usize => Decoded::UInt(take::<u64>(input)?.into()),
            KeyType::I8 => Decoded::Int(take::<i8>(input)?.into()),
            KeyType::I16 => Decoded::Int(take::<i16>(input)?.into()),
            KeyType::I32 => Decoded::Int(take::<i32>(input)?.into()),
            KeyType::I64 => Decoded::Int(take::<i64>(input)?.into()),
            KeyType::I128 => Decoded::Int(take::<i128>(input)?),
            KeyType::Isize => Decoded::Int(take::<i64>(input)?.into()),
            KeyType::F32 => Decoded::Float(take::<f32>(input)?.into()),
            KeyType::F64 => Decoded::Float(take::<f64>(input)?),
            KeyType::Bool => Decoded::Bool(take::<bool>(input)?),
            KeyType::Char => Decoded::Char(take::<char>(input)?),
            KeyType::String => Decoded::Str(take::<String>(input)?),
            KeyType::ByteVec => Decoded::Bytes(take::<Vec<u8>>(input)?),
            KeyType::ByteArray(n) => {
                let Some((head, rest)) = input.split_at_checked(*n) else {
                    return Err(FormatError::new(
                        "ordered",
                        format!("truncated byte array: needs {n} bytes, {} left", input.len()),
                    ));
                };
                *input = rest;
                Decoded::Bytes(head.to_vec())
            }
            KeyType::Unit => Decoded::Unit,
            KeyType::Option(inner) => {
                let Some((&tag, rest)) = input.split_first() else {
                    return Err(FormatError::new("ordered", "truncated Option tag: needs 1 byte, 0 left"));
                };
                match tag {
                    0x00 => {
                        *input = rest;
                        Decoded::Option(None)
                    }
                    0x01 => {
                        *input = rest;
                        Decoded::Option(Some(Box::new(inner.decode(input)?)))
                    }
                    _ => {
                        return Err(FormatError::new(
                            "ordered",
                            format!("invalid Option tag 0x{tag:02X} (expected 0x00 or 0x01)"),
                        ))
                    }
                }
            }
            KeyType::Tuple(items) => {
                Decoded::Tuple(items.iter().map(|item| item.decode(input)).collect::<Result<_, _>>()?)
            }
        })
    }

    /// Decodes a whole key, as `OrderedFormat::from_bytes` would: trailing bytes are an error,
    /// and errors say at which byte of the key they are.
    pub(crate) fn decode_key(&self, bytes: &[u8]) -> Result<Decoded, FormatError> {
        let mut input = bytes;
        let result = self.decode(&mut input);
        let at = bytes.len().saturating_sub(input.len());
        match result {
            Ok(key) if input.is_empty() => Ok(key),
            Ok(_) => Err(FormatError::new(
                "ordered",
                format!("{} trailing bytes after the key (at byte {at})", input.len()),
            )),
            Err(e) => Err(FormatError::new(e.format, format!("{} (at byte {at})", e.reason))),
        }
    }
}

/// A recursive-descent reader of `type_name` output.
struct Parser<'a> {
    rest: &'a str,
}

impl Parser<'_> {
    fn eat(&mut self, token: &str) -> bool {
        let trimmed = self.rest.trim_start();
        match trimmed.strip_prefix(token) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    /// A path such as `alloc::string::String`, without generic arguments.
    fn path(&mut self) -> Option<&str> {
        let trimmed = self.rest.trim_start();
        let end =
            trimmed.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(trimmed.len());
        if end == 0 {
            return None;
        }
        let (path, rest) = trimmed.split_at(end);
        self.rest = rest;
        Some(path)
    }

    fn ty(&mut self) -> Option<KeyType> {
        if self.eat("(") {
            let mut items = Vec::new();
            loop {
                if self.eat(")") {
                    break;
                }
                items.push(self.ty()?);
                if !self.eat(",") {
                    if !self.eat(")") {
                        return None;
                    }
                    break;
                }
            }
            return match items.len() {
                0 => Some(KeyType::Unit),
                n if n <= MAX_TUPLE => Some(KeyType::Tuple(items)),
                _ => None,
            };
        }
        if self.eat("[") {
            if !(self.eat("u8") && self.eat(";")) {
                return None;
            }
            let trimmed = self.rest.trim_start();
            let digits = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
            let n = trimmed[..digits].parse().ok()?;
            self.rest = &trimmed[digits..];
            return self.eat("]").then_some(KeyType::ByteArray(n));
        }
        let path = self.path()?;
        let last = path.rsplit("::").next()?;
        let std_path = |short: &str, full: &[&str]| path == short || full.contains(&path);
        Some(match last {
            "u8" if path == "u8" => KeyType::U8,
            "u16" if path == "u16" => KeyType::U16,
            "u32" if path == "u32" => KeyType::U32,
            "u64" if path == "u64" => KeyType::U64,
            "u128" if path == "u128" => KeyType::U128,
            "usize" if path == "usize" => KeyType::Usize,
            "i8" if path == "i8" => KeyType::I8,
            "i16" if path == "i16" => KeyType::I16,
            "i32" if path == "i32" => KeyType::I32,
            "i64" if path == "i64" => KeyType::I64,
            "i128" if path == "i128" => KeyType::I128,
            "isize" if path == "isize" => KeyType::Isize,
            "f32" if path == "f32" => KeyType::F32,
            "f64" if path == "f64" => KeyType::F64,
            "bool" if path == "bool" => KeyType::Bool,
            "char" if path == "char" => KeyType::Char,
            "String" if std_path("String", &["alloc::string::String", "std::string::String"]) => {
                KeyType::String
            }
            "Vec" if std_path("Vec", &["alloc::vec::Vec", "std::vec::Vec"]) => {
                let ok = self.eat("<") && self.eat("u8") && self.eat(">");
                return ok.then_some(KeyType::ByteVec);
            }
            "Option" if std_path("Option", &["core::option::Option", "std::option::Option"]) => {
                if !self.eat("<") {
                    return None;
                }
                let inner = self.ty()?;
                return self.eat(">").then(|| KeyType::Option(Box::new(inner)));
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyFormat, OrderedFormat};

    fn encode<K: OrderedKey + 'static>(key: &K) -> Vec<u8> {
        let mut out = Vec::new();
        OrderedFormat::new().to_bytes(key, &mut out).unwrap();
        out
    }

    fn decode<K: 'static>(bytes: &[u8]) -> Result<Decoded, FormatError> {
        let ty = KeyType::parse(std::any::type_name::<K>())
            .unwrap_or_else(|| panic!("{} not parsed", std::any::type_name::<K>()));
        ty.decode_key(bytes)
    }

    #[test]
    fn type_names_of_std_keys_decode_as_the_typed_table_would() {
        let key = (7u64, -3i32, "a\0b".to_string(), Some(b"x\0".to_vec()), [1u8, 2], true, 'é', 1.5f64);
        let decoded = decode::<(u64, i32, String, Option<Vec<u8>>, [u8; 2], bool, char, f64)>(&encode(&key));
        assert_eq!(decoded.unwrap().to_string(), r#"(7, -3, "a\0b", Some(0x7800), 0x0102, true, 'é', 1.5)"#);
        assert_eq!(decode::<u64>(&encode(&320193u64)).unwrap(), Decoded::UInt(320193));
        assert_eq!(decode::<(usize,)>(&encode(&(5usize,))).unwrap().to_string(), "(5,)");
        assert_eq!(decode::<()>(&[]).unwrap(), Decoded::Unit);
        assert_eq!(decode::<Option<i8>>(&encode(&None::<i8>)).unwrap(), Decoded::Option(None));
    }

    #[test]
    fn bad_bytes_are_errors_at_a_byte() {
        let err = decode::<u64>(&[1, 2, 3]).unwrap_err();
        assert!(err.reason.contains("truncated"), "{err}");
        let err = decode::<u32>(&[0, 0, 0, 1, 9]).unwrap_err();
        assert!(err.reason.contains("1 trailing bytes"), "{err}");
        let err = decode::<String>(b"ab\0\x07").unwrap_err();
        assert!(err.reason.contains("at byte 2"), "{err}");
    }

    #[test]
    fn other_types_are_not_guessed() {
        for name in ["my_crate::Key", "alloc::vec::Vec<u16>", "[u16; 4]", "&str", "(u8, my::K)", "u64 extra"]
        {
            assert_eq!(KeyType::parse(name), None, "{name}");
        }
    }
}
