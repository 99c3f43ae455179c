//! `typed-kv dump`: a table's entries, decoded where the format allows it without the Rust
//! type, else in hex. Text: one `key<TAB>value` line per entry. JSON Lines: one object per
//! entry, `{"key": …, "value": …, "key_hex": "0x…", "value_hex": "0x…"}`, where `key` and
//! `value` are the decoded forms (`null` when the format needs the Rust type) and the hex
//! fields are the bytes as stored.

use std::io::{BufWriter, Write};

use serde_json::{json, Value as Json};
use typed_kv::untyped::Decoded;
use typed_kv::{FormatError, Storage, StorageError, UntypedTable};

use crate::errors::Explained;
use crate::Failure;

/// `0x` and lowercase hex.
fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 + 2 * bytes.len());
    out.push_str("0x");
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A decoded key or value as JSON: numbers as numbers (strings past 64 bits), byte strings as
/// text when they are UTF-8, else as hex strings.
fn to_json(decoded: &Decoded) -> Json {
    match decoded {
        Decoded::Unit => Json::Null,
        Decoded::Bool(b) => json!(b),
        Decoded::UInt(n) => u64::try_from(*n).map_or_else(|_| json!(n.to_string()), |n| json!(n)),
        Decoded::Int(n) => i64::try_from(*n).map_or_else(|_| json!(n.to_string()), |n| json!(n)),
        Decoded::Float(x) => serde_json::Number::from_f64(*x).map_or(Json::Null, Json::Number),
        Decoded::Char(c) => json!(c.to_string()),
        Decoded::Str(s) => json!(s),
        Decoded::Bytes(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => json!(text),
            Err(_) => json!(hex(bytes)),
        },
        Decoded::Option(None) => Json::Null,
        Decoded::Option(Some(inner)) => to_json(inner),
        Decoded::Tuple(items) => Json::Array(items.iter().map(to_json).collect()),
        other => json!(other.to_string()),
    }
}

/// Says on stderr how keys and values will be shown, so stdout holds only data.
fn describe(table: &UntypedTable) {
    let stamp = table.stamp();
    let shown = |decodable: bool, needs: &str| {
        if decodable {
            "decoded".to_owned()
        } else {
            format!("in hex ({needs})")
        }
    };
    let (key_decodable, value_decodable) = (table.decodes_keys(), table.decodes_values());
    let key_needs = match stamp.key_format.as_str() {
        "ordered" => "this key type cannot be decoded by name",
        _ => "the format needs the Rust type",
    };
    let value_needs = match stamp.value_format.as_str() {
        "flatbuffers" => "flatbuffers needs the schema",
        _ => "the format needs the Rust type",
    };
    eprintln!(
        "# table `{}`: keys {} `{}`, {}; values {} `{}`, {}",
        table.name(),
        stamp.key_format,
        stamp.key_type,
        shown(key_decodable, key_needs),
        stamp.value_format,
        stamp.value_type,
        shown(value_decodable, value_needs),
    );
}

pub(crate) fn run(storage: &Storage, name: &str, limit: Option<u64>, json: bool) -> Result<(), Failure> {
    let table = match storage.untyped_table(name) {
        Ok(table) => table,
        Err(StorageError::TableNotFound { .. }) => {
            let names = storage.table_names()?;
            let hint = if names.is_empty() {
                "the store has no tables".to_owned()
            } else {
                format!("its tables: {}", names.join(", "))
            };
            return Err(Failure::Error(Explained {
                message: format!("{} has no table named `{name}`", storage.path().display()),
                hint: Some(hint),
            }));
        }
        Err(e) => return Err(e.into()),
    };
    describe(&table);
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let limit = limit.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    for entry in table.iter()?.take(limit) {
        let entry = entry?;
        let key = table.decode_key(entry.key());
        let value = table.decode_value(entry.value());
        if json {
            let (key_json, key_error) = match &key {
                Some(Ok(decoded)) => (to_json(decoded), None),
                Some(Err(e)) => (Json::Null, Some(e.to_string())),
                None => (Json::Null, None),
            };
            let mut object = json!({
                "key": key_json,
                "value": value.as_ref().map_or(Json::Null, to_json),
                "key_hex": hex(entry.key()),
                "value_hex": hex(entry.value()),
            });
            if let (Some(error), Some(map)) = (key_error, object.as_object_mut()) {
                map.insert("key_error".into(), json!(error));
            }
            writeln!(out, "{object}")?;
        } else {
            let key_text = match &key {
                Some(Ok(decoded)) => decoded.to_string(),
                Some(Err(FormatError { reason, .. })) => {
                    format!("{} (not a valid key: {reason})", hex(entry.key()))
                }
                None => hex(entry.key()),
            };
            let value_text = value.map_or_else(|| hex(entry.value()), |v| v.to_string());
            writeln!(out, "{key_text}\t{value_text}")?;
        }
    }
    out.flush()?;
    Ok(())
}
