//! An order-preserving key format: [`OrderedFormat`].
//!
//! Every engine sorts keys as byte strings, lexicographically. The encodings below make that
//! byte order exactly the keys' `Ord` order (for floats, `total_cmp`), so a table keyed with
//! this format can serve `range(..)` straight from the engine's own order.
//!
//! # Encoding
//!
//! This is the on-disk format: changing any row breaks existing files.
//!
//! | Type | Bytes |
//! | --- | --- |
//! | `u8`, `u16`, `u32`, `u64`, `u128` | the value, big-endian, fixed width |
//! | `usize` | as `u64`, so files move between 32- and 64-bit targets |
//! | `i8`, `i16`, `i32`, `i64`, `i128` | the value with its sign bit flipped, big-endian |
//! | `isize` | as `i64` |
//! | `f32`, `f64` | the IEEE 754 bits, all flipped if the sign bit is set, else only the sign bit; big-endian |
//! | `bool` | `00` for `false`, `01` for `true` |
//! | `char` | the scalar value as a big-endian `u32` |
//! | `String`, `Vec<u8>` | the bytes, each `00` written as `00 FF`, then the terminator `00 00` |
//! | `[u8; N]` | the `N` bytes as they are (fixed width, so no terminator) |
//! | `()` | nothing |
//! | `Option<T>` | `None`: `00`; `Some(v)`: `01`, then `v` |
//! | tuples of 1 to 8 elements | the elements' encodings, concatenated |
//!
//! Some keys and their bytes, in hex:
//!
//! | Key | Bytes |
//! | --- | --- |
//! | `258u16` | `01 02` |
//! | `-1i16` | `7F FF` |
//! | `1i16` | `80 01` |
//! | `1.0f32` | `BF 80 00 00` |
//! | `-1.0f32` | `40 7F FF FF` |
//! | `'é'` | `00 00 00 E9` |
//! | `"a\0b"` | `61 00 FF 62 00 00` |
//! | `(Some(7u8), "")` | `01 07 00 00` |
//!
//! # Why the order holds
//!
//! - Big-endian puts the most significant byte first, where a byte comparison looks first.
//! - Flipping the sign bit maps `MIN..=MAX` of a signed type onto `0..=MAX` of the unsigned
//!   type of the same width, in order.
//! - Non-negative floats already sort by their bits; setting the sign bit lifts them above
//!   the negatives. Negative floats sort backwards by their bits, which flipping all of them
//!   undoes. The result is `total_cmp`'s order,
//!   `-NaN < -inf < ... < -0.0 < +0.0 < ... < +inf < +NaN`, and every bit pattern (`-0.0`,
//!   NaN payloads) survives the round trip.
//! - In byte strings the terminator `00 00` sorts below an escaped zero `00 FF`, which sorts
//!   below every other byte, so a string sorts before its extensions:
//!   `"a" < "a\0" < "ab"`.
//! - No encoding is a proper prefix of another encoding of the same type (fixed widths, tags
//!   and the terminator see to that), so the bytes of a tuple compare element by element, like
//!   the tuple: `("a", 9) < ("ab", 0)`.
//!
//! # Decoding
//!
//! Decoding never panics and, with no length prefixes to trust, allocates only in proportion
//! to the bytes it reads. It accepts only canonical encodings: every byte string it accepts is
//! the encoding of exactly one key. [`KeyFormat::from_bytes`] errors say what was wrong and at
//! which byte of the key.

use super::{FormatError, KeyFormat, OrderPreserving};

/// The format's stamp id, also the `format` of its errors.
const FORMAT_ID: &str = "ordered";

fn error(reason: impl std::fmt::Display) -> FormatError {
    FormatError::new(FORMAT_ID, reason)
}

/// A key type with an order-preserving encoding, for [`OrderedFormat`].
///
/// Implementations for your own types must keep the promises the built-in ones keep, which
/// tables rely on for `range(..)`:
///
/// - the byte order of encodings equals the type's `Ord` order;
/// - no encoding is a proper prefix of another encoding of the same type (so the type can sit
///   inside a tuple), which concatenating encodings of `OrderedKey` fields gives for free;
/// - decoding consumes exactly one encoding and never panics on any bytes.
pub trait OrderedKey: Sized {
    /// Appends the encoding of `self` to `out`.
    fn encode_ordered(&self, out: &mut Vec<u8>);

    /// Decodes one value from the front of `input` and advances `input` past it.
    ///
    /// On error, `input` is left at the offending bytes, so that
    /// [`OrderedFormat`]'s `from_bytes` can tell at which byte of the key they are.
    fn decode_ordered(input: &mut &[u8]) -> Result<Self, FormatError>;
}

/// The first `N` bytes of `input` and the bytes after them.
///
/// Callers advance `input` only once they have accepted the bytes, so that on error it points
/// at them.
fn split<'a, const N: usize>(input: &'a [u8], what: &str) -> Result<([u8; N], &'a [u8]), FormatError> {
    match input.split_first_chunk::<N>() {
        Some((head, rest)) => Ok((*head, rest)),
        None => Err(error(format!("truncated {what}: needs {N} bytes, {} left", input.len()))),
    }
}

/// Takes the first `N` bytes of `input`, for types where every bit pattern is valid.
fn take<const N: usize>(input: &mut &[u8], what: &str) -> Result<[u8; N], FormatError> {
    let (head, rest) = split(input, what)?;
    *input = rest;
    Ok(head)
}

macro_rules! unsigned_keys {
    ($($t:ty),*) => {$(
        impl OrderedKey for $t {
            fn encode_ordered(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_be_bytes());
            }

            fn decode_ordered(input: &mut &[u8]) -> Result<Self, FormatError> {
                take(input, stringify!($t)).map(<$t>::from_be_bytes)
            }
        }
    )*};
}

unsigned_keys!(u8, u16, u32, u64, u128);

macro_rules! signed_keys {
    ($($t:ty => $unsigned:ty),*) => {$(
        impl OrderedKey for $t {
            fn encode_ordered(&self, out: &mut Vec<u8>) {
                const SIGN: $unsigned = 1 << (<$unsigned>::BITS - 1);
                out.extend_from_slice(&(self.cast_unsigned() ^ SIGN).to_be_bytes());
            }

            fn decode_ordered(input: &mut &[u8]) -> Result<Self, FormatError> {
                const SIGN: $unsigned = 1 << (<$unsigned>::BITS - 1);
                let bits = <$unsigned>::from_be_bytes(take(input, stringify!($t))?);
                Ok((bits ^ SIGN).cast_signed())
            }
        }
    )*};
}

signed_keys!(i8 => u8, i16 => u16, i32 => u32, i64 => u64, i128 => u128);

impl OrderedKey for usize {
    fn encode_ordered(&self, out: &mut Vec<u8>) {
        // Lossless: no target Rust supports has a usize wider than 64 bits.
        (*self as u64).encode_ordered(out);
    }

    fn decode_ordered(input: &mut &[u8]) -> Result<Self, FormatError> {
        let (bytes, rest) = split(input, "usize")?;
        let value = u64::from_be_bytes(bytes);
        let value = usize::try_from(value).map_err(|_| {
            error(format!("usize {value} does not fit in this target's {} bits", usize::BITS))
        })?;
        *input = rest;
        Ok(value)
    }
}

impl OrderedKey for isize {
    fn encode_ordered(&self, out: &mut Vec<u8>) {
        // Lossless: no target Rust supports has an isize wider than 64 bits.
        (*self as i64).encode_ordered(out);
    }

    fn decode_ordered(input: &mut &[u8]) -> Result<Self, FormatError> {
        let mut rest = *input;
        let value = i64::decode_ordered(&mut rest)?;
        let value = isize::try_from(value).map_err(|_| {
            error(format!("isize {value} does not fit in this target's {} bits", isize::BITS))
        })?;
        *input = rest;
        Ok(value)
    }
}

macro_rules! float_keys {
    ($($t:ty => $bits:ty),*) => {$(
        impl OrderedKey for $t {
            fn encode_ordered(&self, out: &mut Vec<u8>) {
                const SIGN: $bits = 1 << (<$bits>::BITS - 1);
                let bits = self.to_bits();
                let key = if bits & SIGN != 0 { !bits } else { bits | SIGN };
                out.extend_from_slice(&key.to_be_bytes());
            }

            fn decode_ordered(input: &mut &[u8]) -> Result<Self, FormatError> {
                const SIGN: $bits = 1 << (<$bits>::BITS - 1);
                let key = <$bits>::from_be_bytes(take(input, stringify!($t))?);
                // A set top bit marks a non-negative float (see encode).
                let bits = if key & SIGN != 0 { key & !SIGN } else { !key };
                Ok(<$t>::from_bits(bits))
            }
        }
    )*};
}

float_keys!(f32 => u32, f64 => u64);

impl OrderedKey for bool {
    fn encode_ordered(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }

    fn decode_ordered(input: &mut &[u8]) -> Result<Self, FormatError> {
        let ([byte], rest) = split(input, "bool")?;
        let value = match byte {
            0 => false,
            1 => true,
            _ => return Err(error(format!("invalid bool byte 0x{byte:02X}"))),
        };
        *input = rest;
        Ok(value)
    }
}

impl OrderedKey for char {
    fn encode_ordered(&self, out: &mut Vec<u8>) {
        u32::from(*self).encode_ordered(out);
    }

    fn decode_ordered(input: &mut &[u8]) -> Result<Self, FormatError> {
        let (bytes, rest) = split(input, "char")?;
        let scalar = u32::from_be_bytes(bytes);
        let value = char::from_u32(scalar)
            .ok_or_else(|| error(format!("invalid char 0x{scalar:08X}: not a Unicode scalar value")))?;
        *input = rest;
        Ok(value)
    }
}

/// Writes `bytes` with each zero escaped as `00 FF`, then the terminator `00 00`.
fn encode_escaped(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len() + 2);
    let mut chunks = bytes.split(|&b| b == 0);
    if let Some(first) = chunks.next() {
        out.extend_from_slice(first);
    }
    for chunk in chunks {
        out.extend_from_slice(&[0x00, 0xFF]);
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&[0x00, 0x00]);
}

/// Reads what [`encode_escaped`] wrote; `what` names the type in errors.
fn decode_escaped(input: &mut &[u8], what: &str) -> Result<Vec<u8>, FormatError> {
    let unterminated = || error(format!("{what} has no 0x00 0x00 terminator"));
    let mut out = Vec::new();
    let mut rest = *input;
    loop {
        let zero = rest.iter().position(|&b| b == 0).ok_or_else(unterminated)?;
        let (chunk, marker) = rest.split_at(zero);
        out.extend_from_slice(chunk);
        match marker {
            [0x00, 0xFF, tail @ ..] => {
                out.push(0);
                rest = tail;
            }
            [0x00, 0x00, tail @ ..] => {
                *input = tail;
                return Ok(out);
            }
            [0x00, other, ..] => {
                *input = marker;
                return Err(error(format!(
                    "invalid escape 0x00 0x{other:02X} in {what} \
                     (expected 0x00 0xFF, or 0x00 0x00 to end it)"
                )));
            }
            _ => return Err(unterminated()),
        }
    }
}

impl OrderedKey for Vec<u8> {
    fn encode_ordered(&self, out: &mut Vec<u8>) {
        encode_escaped(self, out);
    }

    fn decode_ordered(input: &mut &[u8]) -> Result<Self, FormatError> {
        decode_escaped(input, "byte string")
    }
}

impl OrderedKey for String {
    fn encode_ordered(&self, out: &mut Vec<u8>) {
        encode_escaped(self.as_bytes(), out);
    }

    fn decode_ordered(input: &mut &[u8]) -> Result<Self, FormatError> {
        let start = *input;
        let bytes = decode_escaped(input, "string")?;
        String::from_utf8(bytes).map_err(|e| {
            let valid = e.utf8_error().valid_up_to();
            // Point at the bad byte in the encoding, where each zero before it took two bytes.
            let zeros = e.as_bytes()[..valid].iter().filter(|&&b| b == 0).count();
            *input = start.get(valid + zeros..).unwrap_or(start);
            error("invalid UTF-8 in string")
        })
    }
}

impl<const N: usize> OrderedKey for [u8; N] {
    fn encode_ordered(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }

    fn decode_ordered(input: &mut &[u8]) -> Result<Self, FormatError> {
        take(input, "byte array")
    }
}

impl OrderedKey for () {
    fn encode_ordered(&self, _out: &mut Vec<u8>) {}

    fn decode_ordered(_input: &mut &[u8]) -> Result<Self, FormatError> {
        Ok(())
    }
}

impl<T: OrderedKey> OrderedKey for Option<T> {
    fn encode_ordered(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0x00),
            Some(value) => {
                out.push(0x01);
                value.encode_ordered(out);
            }
        }
    }

    fn decode_ordered(input: &mut &[u8]) -> Result<Self, FormatError> {
        let ([tag], rest) = split(input, "Option tag")?;
        match tag {
            0x00 => {
                *input = rest;
                Ok(None)
            }
            0x01 => {
                *input = rest;
                T::decode_ordered(input).map(Some)
            }
            _ => Err(error(format!("invalid Option tag 0x{tag:02X} (expected 0x00 or 0x01)"))),
        }
    }
}

macro_rules! tuple_keys {
    ($(($($index:tt $T:ident),+))*) => {$(
        impl<$($T: OrderedKey),+> OrderedKey for ($($T,)+) {
            fn encode_ordered(&self, out: &mut Vec<u8>) {
                $(self.$index.encode_ordered(out);)+
            }

            fn decode_ordered(input: &mut &[u8]) -> Result<Self, FormatError> {
                Ok(($($T::decode_ordered(input)?,)+))
            }
        }
    )*};
}

tuple_keys! {
    (0 A)
    (0 A, 1 B)
    (0 A, 1 B, 2 C)
    (0 A, 1 B, 2 C, 3 D)
    (0 A, 1 B, 2 C, 3 D, 4 E)
    (0 A, 1 B, 2 C, 3 D, 4 E, 5 F)
    (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G)
    (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H)
}

/// The order-preserving key format: encoded keys sort, as bytes, like the keys themselves.
///
/// It serves every [`OrderedKey`] type; the [module docs](self) describe the bytes.
///
/// ```
/// use typed_kv::{KeyFormat, OrderedFormat};
///
/// let format = OrderedFormat::new();
/// let (mut low, mut high) = (Vec::new(), Vec::new());
/// format.to_bytes(&("apple".to_string(), -3i32), &mut low).unwrap();
/// format.to_bytes(&("apple".to_string(), 7i32), &mut high).unwrap();
/// assert!(low < high);
///
/// let key: (String, i32) = format.from_bytes(&low).unwrap();
/// assert_eq!(key, ("apple".to_string(), -3));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderedFormat;

impl OrderedFormat {
    /// The format; it has no settings.
    pub const fn new() -> Self {
        Self
    }
}

impl<K: OrderedKey + 'static> KeyFormat<K> for OrderedFormat {
    const ID: &'static str = FORMAT_ID;

    fn to_bytes(&self, key: &K, out: &mut Vec<u8>) -> Result<(), FormatError> {
        key.encode_ordered(out);
        Ok(())
    }

    fn from_bytes(&self, bytes: &[u8]) -> Result<K, FormatError> {
        let mut input = bytes;
        let result = K::decode_ordered(&mut input);
        // Decoders leave `input` at the offending bytes; saturating in case a foreign
        // implementation points it elsewhere.
        let at = bytes.len().saturating_sub(input.len());
        match result {
            Ok(key) if input.is_empty() => Ok(key),
            Ok(_) => Err(error(format!("{} trailing bytes after the key (at byte {at})", input.len()))),
            Err(e) => Err(FormatError::new(e.format, format!("{} (at byte {at})", e.reason))),
        }
    }
}

impl<K: OrderedKey + 'static> OrderPreserving<K> for OrderedFormat {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cmp::Ordering;
    use std::fmt::Debug;

    fn enc<K: OrderedKey + 'static>(key: &K) -> Vec<u8> {
        let mut out = Vec::new();
        OrderedFormat.to_bytes(key, &mut out).unwrap();
        out
    }

    fn dec<K: OrderedKey + 'static>(bytes: &[u8]) -> Result<K, FormatError> {
        OrderedFormat.from_bytes(bytes)
    }

    fn dec_err<K: OrderedKey + Debug + 'static>(bytes: &[u8]) -> String {
        match dec::<K>(bytes) {
            Ok(key) => panic!("{bytes:02X?} decoded as {key:?}"),
            Err(e) => {
                assert_eq!(e.format, "ordered");
                e.reason
            }
        }
    }

    /// The order the encodings must reproduce: `Ord`, except `total_cmp` for floats (also
    /// inside tuples and options). `Equal` means bit for bit equal, NaN payloads included.
    trait Oracle {
        fn oracle_cmp(&self, other: &Self) -> Ordering;
    }

    macro_rules! oracle_via_ord {
        ($($t:ty),*) => {$(
            impl Oracle for $t {
                fn oracle_cmp(&self, other: &Self) -> Ordering {
                    self.cmp(other)
                }
            }
        )*};
    }

    oracle_via_ord!(
        u8,
        u16,
        u32,
        u64,
        u128,
        usize,
        i8,
        i16,
        i32,
        i64,
        i128,
        isize,
        bool,
        char,
        String,
        Vec<u8>,
        ()
    );

    impl<const N: usize> Oracle for [u8; N] {
        fn oracle_cmp(&self, other: &Self) -> Ordering {
            self.cmp(other)
        }
    }

    impl Oracle for f32 {
        fn oracle_cmp(&self, other: &Self) -> Ordering {
            self.total_cmp(other)
        }
    }

    impl Oracle for f64 {
        fn oracle_cmp(&self, other: &Self) -> Ordering {
            self.total_cmp(other)
        }
    }

    impl<T: Oracle> Oracle for Option<T> {
        fn oracle_cmp(&self, other: &Self) -> Ordering {
            match (self, other) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Less,
                (Some(_), None) => Ordering::Greater,
                (Some(a), Some(b)) => a.oracle_cmp(b),
            }
        }
    }

    macro_rules! oracle_tuples {
        ($(($($index:tt $T:ident),+))*) => {$(
            impl<$($T: Oracle),+> Oracle for ($($T,)+) {
                fn oracle_cmp(&self, other: &Self) -> Ordering {
                    Ordering::Equal$(.then_with(|| self.$index.oracle_cmp(&other.$index)))+
                }
            }
        )*};
    }

    oracle_tuples! {
        (0 A)
        (0 A, 1 B)
        (0 A, 1 B, 2 C)
        (0 A, 1 B, 2 C, 3 D)
        (0 A, 1 B, 2 C, 3 D, 4 E)
        (0 A, 1 B, 2 C, 3 D, 4 E, 5 F)
        (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G)
        (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H)
    }

    /// Everything a key type must satisfy, checked on two keys and some bytes.
    fn check_key<K: OrderedKey + Oracle + Debug + 'static>(
        a: &K,
        b: &K,
        extra: &[u8],
        noise: &[u8],
        mutation: (usize, u8),
    ) -> Result<(), TestCaseError> {
        let (ea, eb) = (enc(a), enc(b));

        for (key, bytes) in [(a, &ea), (b, &eb)] {
            let back: K = dec(bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back.oracle_cmp(key), Ordering::Equal, "{:?} came back as {:?}", key, back);
        }

        prop_assert_eq!(
            a.oracle_cmp(b),
            ea.cmp(&eb),
            "{:?} vs {:?} encoded as {:02X?} vs {:02X?}",
            a,
            b,
            ea,
            eb
        );

        let mut long = ea.clone();
        long.extend_from_slice(extra);
        match dec::<K>(&long) {
            Ok(key) => prop_assert!(false, "{:02X?} decoded as {:?}", long, key),
            Err(e) => prop_assert!(e.reason.contains("trailing"), "{}", e.reason),
        }

        // Prefix-freeness, which tuple order relies on.
        for cut in 0..ea.len() {
            prop_assert!(dec::<K>(&ea[..cut]).is_err(), "prefix {:02X?}", &ea[..cut]);
        }

        // Whatever bytes decode (without panicking) must be the one encoding of their key.
        let mut mutated = ea.clone();
        if let Some(byte) = mutated.get_mut(mutation.0 % ea.len().max(1)) {
            *byte = mutation.1;
        }
        for bytes in [noise, &mutated[..]] {
            if let Ok(key) = dec::<K>(bytes) {
                prop_assert_eq!(enc(&key), bytes, "{:?}", key);
            }
        }
        Ok(())
    }

    /// Bytes biased towards the ones escapes and tags are made of.
    fn noise() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop_oneof![Just(0x00u8), Just(0x01), Just(0xFF), any::<u8>()], 0..40)
    }

    /// Short byte strings from a small alphabet, so equal keys, prefixes and zeros are common.
    fn small_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![Just(0x00u8), Just(0x01), Just(b'a'), Just(0xFF), any::<u8>()],
            0..5,
        )
    }

    fn small_string() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just('\0'),
                Just('\u{1}'),
                Just('a'),
                Just('b'),
                Just('é'),
                Just('\u{10FFFF}'),
                any::<char>(),
            ],
            0..5,
        )
        .prop_map(String::from_iter)
    }

    macro_rules! float_strategy {
        ($name:ident, $t:ident, $bits:ty) => {
            /// Every bit pattern (NaN payloads included), plus the values at the edges.
            fn $name() -> impl Strategy<Value = $t> {
                prop_oneof![
                    any::<$bits>().prop_map($t::from_bits),
                    prop::sample::select(vec![
                        0.0,
                        -0.0,
                        1.0,
                        -1.0,
                        $t::MIN_POSITIVE,
                        -$t::MIN_POSITIVE,
                        $t::from_bits(1),
                        $t::MAX,
                        $t::MIN,
                        $t::INFINITY,
                        $t::NEG_INFINITY,
                        $t::NAN,
                        -$t::NAN,
                    ]),
                ]
            }
        };
    }

    float_strategy!(any_f32, f32, u32);
    float_strategy!(any_f64, f64, u64);

    /// Any integer, with the extremes and small values (for equal tuple prefixes) likely.
    macro_rules! int {
        ($t:ty) => {
            prop_oneof![
                any::<$t>(),
                Just(<$t>::MIN),
                Just(<$t>::MAX),
                Just(0 as $t),
                Just(1 as $t),
                Just((0 as $t).wrapping_sub(1)),
            ]
        };
    }

    macro_rules! key_properties {
        ($($name:ident: $strategy:expr;)*) => {
            proptest! {
                $(
                    #[test]
                    fn $name(
                        a in $strategy,
                        b in $strategy,
                        extra in prop::collection::vec(any::<u8>(), 1..4),
                        noise in noise(),
                        mutation in any::<(usize, u8)>(),
                    ) {
                        check_key(&a, &b, &extra, &noise, mutation)?;
                    }
                )*
            }
        };
    }

    key_properties! {
        prop_u8: int!(u8);
        prop_u16: int!(u16);
        prop_u32: int!(u32);
        prop_u64: int!(u64);
        prop_u128: int!(u128);
        prop_usize: int!(usize);
        prop_i8: int!(i8);
        prop_i16: int!(i16);
        prop_i32: int!(i32);
        prop_i64: int!(i64);
        prop_i128: int!(i128);
        prop_isize: int!(isize);
        prop_f32: any_f32();
        prop_f64: any_f64();
        prop_bool: any::<bool>();
        prop_char: any::<char>();
        prop_string: small_string();
        prop_string_any: any::<String>();
        prop_bytes: small_bytes();
        prop_bytes_any: any::<Vec<u8>>();
        prop_array_0: any::<[u8; 0]>();
        prop_array_3: any::<[u8; 3]>();
        prop_array_16: any::<[u8; 16]>();
        prop_unit: any::<()>();
        prop_option_u32: prop::option::of(int!(u32));
        prop_option_string: prop::option::of(small_string());
        prop_option_option_bool: prop::option::of(prop::option::of(any::<bool>()));
        prop_option_unit: prop::option::of(any::<()>());
        prop_tuple_1: (small_string(),);
        prop_tuple_2: (small_string(), int!(i32));
        prop_tuple_3: (small_bytes(), any_f64(), any::<bool>());
        prop_tuple_4: (0u8..2, small_string(), prop::option::of(0i16..2), any_f32());
        prop_tuple_5: (any::<bool>(), small_bytes(), any::<()>(), any::<char>(), int!(u128));
        prop_tuple_6: (
            0u8..2,
            0u16..2,
            0u32..2,
            0u64..2,
            prop::option::of(small_bytes()),
            small_string(),
        );
        prop_tuple_7: (
            any::<bool>(),
            -1i8..1,
            small_string(),
            any::<[u8; 2]>(),
            any_f64(),
            0usize..2,
            int!(isize),
        );
        prop_tuple_8: (
            any::<bool>(),
            any::<bool>(),
            small_bytes(),
            small_string(),
            prop::option::of(any::<bool>()),
            -1i64..1,
            any_f32(),
            int!(u8),
        );
        prop_nested: (
            (small_string(), prop::option::of((0i16..2, any_f32()))),
            prop::option::of((small_bytes(),)),
            (any::<()>(), any::<bool>()),
        );
    }

    proptest! {
        #[test]
        fn prop_arbitrary_bytes_never_panic(bytes in noise()) {
            // The properties above check canonicity; this only needs to finish.
            let _ = dec::<(String, Vec<u8>, Option<char>)>(&bytes);
            let _ = dec::<(bool, f64, usize, isize, [u8; 5])>(&bytes);
            let _ = dec::<Option<Option<(u128, i128, String)>>>(&bytes);
            let _ = dec::<((), (u8,), (f32, (i8, String)))>(&bytes);
        }
    }

    #[test]
    fn golden_encodings() {
        // The table in the module docs; these bytes are the on-disk format.
        assert_eq!(enc(&258u16), [0x01, 0x02]);
        assert_eq!(enc(&-1i16), [0x7F, 0xFF]);
        assert_eq!(enc(&1i16), [0x80, 0x01]);
        assert_eq!(enc(&1.0f32), [0xBF, 0x80, 0x00, 0x00]);
        assert_eq!(enc(&-1.0f32), [0x40, 0x7F, 0xFF, 0xFF]);
        assert_eq!(enc(&'é'), [0x00, 0x00, 0x00, 0xE9]);
        assert_eq!(enc(&"a\0b".to_string()), [0x61, 0x00, 0xFF, 0x62, 0x00, 0x00]);
        assert_eq!(enc(&(Some(7u8), String::new())), [0x01, 0x07, 0x00, 0x00]);
        assert_eq!(enc(&vec![0u8, 0]), [0x00, 0xFF, 0x00, 0xFF, 0x00, 0x00]);
        assert_eq!(enc(&[0u8, 1, 2]), [0x00, 0x01, 0x02]);
        assert_eq!(enc(&None::<u8>), [0x00]);
        assert_eq!(enc(&(true, false)), [0x01, 0x00]);
        assert_eq!(enc(&()), [0u8; 0]);
        assert_eq!(enc(&7usize), enc(&7u64));
        assert_eq!(enc(&-7isize), enc(&-7i64));
        assert_eq!(<OrderedFormat as KeyFormat<u8>>::ID, "ordered");
    }

    #[test]
    fn signed_zero_sorts_below_positive_zero_and_keeps_its_sign() {
        assert!(enc(&-0.0f64) < enc(&0.0f64));
        assert!(enc(&-0.0f32) < enc(&0.0f32));
        assert!(enc(&-f64::MIN_POSITIVE) < enc(&-0.0f64));
        assert!(enc(&0.0f64) < enc(&f64::from_bits(1)));
        assert!(dec::<f64>(&enc(&-0.0f64)).unwrap().is_sign_negative());
        assert!(dec::<f32>(&enc(&-0.0f32)).unwrap().is_sign_negative());
        assert!(dec::<f64>(&enc(&0.0f64)).unwrap().is_sign_positive());
    }

    #[test]
    fn nan_sorts_at_the_ends_and_keeps_its_payload() {
        let ladder =
            [-f64::NAN, f64::NEG_INFINITY, f64::MIN, -1.0, -0.0, 0.0, 1.0, f64::MAX, f64::INFINITY, f64::NAN];
        for pair in ladder.windows(2) {
            assert!(enc(&pair[0]) < enc(&pair[1]), "{} < {}", pair[0], pair[1]);
        }
        let signaling = f64::from_bits(0x7FF0_0000_0000_0001);
        let negative_payload = f64::from_bits(0xFFF8_0000_0000_BEEF);
        for nan in [f64::NAN, -f64::NAN, signaling, negative_payload] {
            assert_eq!(dec::<f64>(&enc(&nan)).unwrap().to_bits(), nan.to_bits());
        }
        let nan32 = f32::from_bits(0x7FC0_1234);
        assert_eq!(dec::<f32>(&enc(&nan32)).unwrap().to_bits(), nan32.to_bits());
        assert!(enc(&f32::INFINITY) < enc(&f32::NAN));
        assert!(enc(&-f32::NAN) < enc(&f32::NEG_INFINITY));
    }

    #[test]
    fn i64_extremes() {
        assert_eq!(enc(&i64::MIN), [0x00; 8]);
        assert_eq!(enc(&i64::MAX), [0xFF; 8]);
        assert_eq!(enc(&-1i64), [0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert_eq!(enc(&0i64), [0x80, 0, 0, 0, 0, 0, 0, 0]);
        assert!(enc(&i64::MIN) < enc(&(i64::MIN + 1)));
        assert!(enc(&-1i64) < enc(&0i64));
        assert_eq!(dec::<i64>(&[0x00; 8]), Ok(i64::MIN));
        assert_eq!(dec::<i64>(&[0xFF; 8]), Ok(i64::MAX));
    }

    #[test]
    fn u128_extremes() {
        assert_eq!(enc(&0u128), [0x00; 16]);
        assert_eq!(enc(&u128::MAX), [0xFF; 16]);
        assert_eq!(dec::<u128>(&[0xFF; 16]), Ok(u128::MAX));
        assert_eq!(dec::<u128>(&[0x00; 16]), Ok(0));
        assert!(enc(&(u128::MAX - 1)) < enc(&u128::MAX));
        assert_eq!(enc(&i128::MIN), [0x00; 16]);
        assert_eq!(dec::<i128>(&[0xFF; 16]), Ok(i128::MAX));
    }

    #[test]
    fn usize_and_isize_outside_the_target_are_rejected() {
        let big = dec::<usize>(&enc(&u64::MAX));
        let small = dec::<isize>(&enc(&i64::MIN));
        if usize::BITS < 64 {
            assert!(big.unwrap_err().reason.contains("does not fit"));
            assert!(small.unwrap_err().reason.contains("does not fit"));
        } else {
            assert_eq!(big, Ok(usize::MAX));
            assert_eq!(small, Ok(isize::MIN));
        }
    }

    #[test]
    fn strings_with_zero_bytes_and_prefixes() {
        let ladder = ["", "\0", "\0\0", "\0\u{1}", "\u{1}", "a", "a\0", "a\0b", "ab", "b"];
        for pair in ladder.windows(2) {
            let (a, b) = (pair[0].to_string(), pair[1].to_string());
            assert!(enc(&a) < enc(&b), "{a:?} < {b:?}");
            let (a, b) = (a.into_bytes(), b.into_bytes());
            assert!(enc(&a) < enc(&b), "{a:?} < {b:?}");
        }
        for s in ladder {
            assert_eq!(dec::<String>(&enc(&s.to_string())).unwrap(), s);
        }
        assert_eq!(dec::<Vec<u8>>(&[0x00, 0xFF, 0x00, 0x00]), Ok(vec![0]));
    }

    #[test]
    fn tuples_compare_element_by_element() {
        let key = |s: &str, n: u32| enc(&(s.to_string(), n));
        assert!(key("a", 9) < key("ab", 0));
        assert!(key("a", 9) < key("a\0", 0));
        assert!(key("a\0", 9) < key("ab", 0));
        assert!(key("a", 0) < key("a", 1));
        assert!(enc(&(None::<u8>, 9u8)) < enc(&(Some(0u8), 0u8)));
        assert!(enc(&(vec![1u8], 0u8)) < enc(&(vec![1u8, 0], 0u8)));
        let nested = ((String::from("x\0"), Some(-2i8)), [1u8, 2], ());
        assert_eq!(dec(&enc(&nested)), Ok(nested));
    }

    #[test]
    fn invalid_utf8_is_rejected_at_its_byte() {
        // "a\0" then a lone continuation byte: the escape makes it byte 4 of the key.
        let bytes = [0x61, 0x00, 0xFF, 0x62, 0x80, 0x00, 0x00];
        let reason = dec_err::<String>(&bytes);
        assert!(reason.contains("UTF-8") && reason.contains("at byte 4"), "{reason}");
        assert_eq!(dec::<Vec<u8>>(&bytes), Ok(vec![0x61, 0x00, 0x62, 0x80]));
        let reason = dec_err::<(u8, String)>(&[0x07, 0xC3, 0x28, 0x00, 0x00]);
        assert!(reason.contains("at byte 1"), "{reason}");
    }

    #[test]
    fn bad_escape_is_rejected() {
        let reason = dec_err::<String>(&[0x61, 0x00, 0x01, 0x00, 0x00]);
        assert!(reason.contains("invalid escape 0x00 0x01") && reason.contains("at byte 1"), "{reason}");
        let reason = dec_err::<(bool, Vec<u8>)>(&[0x01, 0x00, 0xFE]);
        assert!(reason.contains("at byte 1"), "{reason}");
        // Only 0xFF and 0x00 may follow a zero, or encodings would not be canonical.
        for other in 0x01..=0xFE {
            let reason = dec_err::<Vec<u8>>(&[0x00, other, 0x00, 0x00]);
            assert!(reason.contains("invalid escape"), "{reason}");
        }
    }

    #[test]
    fn missing_terminator_is_rejected() {
        for bytes in [&[][..], &[0x61], &[0x61, 0x00], &[0x61, 0x00, 0xFF]] {
            let reason = dec_err::<String>(bytes);
            assert!(reason.contains("terminator"), "{bytes:02X?}: {reason}");
            let reason = dec_err::<Vec<u8>>(bytes);
            assert!(reason.contains("terminator"), "{bytes:02X?}: {reason}");
        }
        let reason = dec_err::<(u8, String)>(&[0x01, 0x61]);
        assert!(reason.contains("at byte 1"), "{reason}");
    }

    #[test]
    fn invalid_bool_char_and_option_tag_are_rejected() {
        let reason = dec_err::<(u8, bool)>(&[0x00, 0x02]);
        assert!(reason.contains("bool") && reason.contains("at byte 1"), "{reason}");
        for scalar in [0xD800u32, 0x11_0000, u32::MAX] {
            let reason = dec_err::<char>(&scalar.to_be_bytes());
            assert!(reason.contains("scalar"), "{reason}");
        }
        let reason = dec_err::<Option<u8>>(&[0x02, 0x00]);
        assert!(reason.contains("Option tag 0x02"), "{reason}");
        let reason = dec_err::<Option<u8>>(&[]);
        assert!(reason.contains("truncated Option tag"), "{reason}");
    }

    #[test]
    fn truncated_and_trailing_bytes_are_rejected_with_their_offset() {
        let reason = dec_err::<(u16, u32)>(&[0x00, 0x01, 0x02, 0x03]);
        assert_eq!(reason, "truncated u32: needs 4 bytes, 2 left (at byte 2)");
        let reason = dec_err::<u16>(&[0x00, 0x01, 0x02]);
        assert_eq!(reason, "1 trailing bytes after the key (at byte 2)");
        let reason = dec_err::<()>(&[0x00]);
        assert_eq!(reason, "1 trailing bytes after the key (at byte 0)");
        let reason = dec_err::<[u8; 4]>(&[1, 2, 3]);
        assert!(reason.contains("needs 4 bytes, 3 left"), "{reason}");
    }
}
