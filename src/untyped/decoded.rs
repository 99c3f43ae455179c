//! [`Decoded`]: a key or value decoded without its Rust type, for display.

use std::fmt;

/// A key or value decoded without its Rust type (see [`UntypedTable::decode_key`]).
///
/// `Display` writes it like a Rust literal: `42`, `-3`, `"text"`, `Some(7)`, `(1, "a")`;
/// byte strings as text when they are UTF-8 without control characters (but tabs and line
/// breaks), else in hex (`0x00ff`).
///
/// [`UntypedTable::decode_key`]: super::UntypedTable::decode_key
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Decoded {
    /// `()`.
    Unit,
    /// A `bool`.
    Bool(bool),
    /// An unsigned integer of any width.
    UInt(u128),
    /// A signed integer of any width.
    Int(i128),
    /// An `f32` or `f64`.
    Float(f64),
    /// A `char`.
    Char(char),
    /// A `String`.
    Str(String),
    /// A byte string (`Vec<u8>`, `[u8; N]`, or raw bytes).
    Bytes(Vec<u8>),
    /// An `Option`.
    Option(Option<Box<Decoded>>),
    /// A tuple.
    Tuple(Vec<Decoded>),
}

/// `0x` and the bytes in lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut out = String::with_capacity(2 + 2 * bytes.len());
    out.push_str("0x");
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

impl fmt::Display for Decoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decoded::Unit => f.write_str("()"),
            Decoded::Bool(b) => write!(f, "{b}"),
            Decoded::UInt(n) => write!(f, "{n}"),
            Decoded::Int(n) => write!(f, "{n}"),
            Decoded::Float(x) => write!(f, "{x:?}"),
            Decoded::Char(c) => write!(f, "{c:?}"),
            Decoded::Str(s) => write!(f, "{s:?}"),
            Decoded::Bytes(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) if !text.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) => {
                    write!(f, "{text:?}")
                }
                _ => f.write_str(&hex(bytes)),
            },
            Decoded::Option(None) => f.write_str("None"),
            Decoded::Option(Some(inner)) => write!(f, "Some({inner})"),
            Decoded::Tuple(items) => {
                f.write_str("(")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                if items.len() == 1 {
                    f.write_str(",")?;
                }
                f.write_str(")")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_like_rust_literals() {
        let key = Decoded::Tuple(vec![
            Decoded::UInt(7),
            Decoded::Int(-3),
            Decoded::Str("a\"b".into()),
            Decoded::Option(Some(Box::new(Decoded::Bytes(vec![0xff, 0])))),
            Decoded::Bytes(b"text".to_vec()),
        ]);
        assert_eq!(key.to_string(), r#"(7, -3, "a\"b", Some(0xff00), "text")"#);
        assert_eq!(Decoded::Tuple(vec![Decoded::Unit]).to_string(), "((),)");
        assert_eq!(Decoded::Float(1.0).to_string(), "1.0");
    }
}
