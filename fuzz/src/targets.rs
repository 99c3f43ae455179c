//! The fuzz target bodies: each takes arbitrary bytes, feeds them to a decoder of untrusted
//! bytes, and panics only when an invariant breaks (the decoders themselves must never panic,
//! only return errors). Input layouts are described on each function; docs/reliability.md (section 5)
//! has the overview.
//!
//! Included by the fuzz crate (`fuzz/src/lib.rs`) and by tests/fuzz_corpus.rs, which both
//! provide `crate::company`.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::Path;

use typed_kv::engine::fuzzing::{self, SEGMENT_HEADER_LEN};
use typed_kv::engine::{Db, Op, Options, SyncMode, ValueAlign};
use typed_kv::{
    BincodeFormat, FlatbuffersFormat, FlatbuffersView, KeyFormat, OrderedFormat, OrderedKey, PostcardFormat,
    RkyvFormat, ValueFormat,
};

use crate::company::Company;

/// A target's body.
pub type Body = fn(&[u8]);

/// Every target, by name (the names of `fuzz_targets/*.rs` and of the corpus directories).
pub const TARGETS: &[(&str, Body)] = &[
    ("record", record),
    ("recovery", recovery),
    ("hint", hint),
    ("table_dir", table_dir),
    ("ordered_key", ordered_key),
    ("value_formats", value_formats),
];

/// The native record decoder (`src/engine/record.rs`).
///
/// Input: byte 0 is the file offset of byte 1 (0..=255; alignment padding depends on it),
/// the rest is a segment's record area. Decodes record after record as recovery does; each
/// record must lie within the bytes, have an aligned value if it says so, and survive
/// encode → decode with the same fields. Also decodes the bytes as a segment header.
pub fn record(data: &[u8]) {
    let Some((&base, bytes)) = data.split_first() else { return };
    let base = u64::from(base);
    if let Ok((id, first_seq)) = fuzzing::decode_segment_header(bytes) {
        let again = fuzzing::encode_segment_header(id, first_seq);
        assert_eq!(fuzzing::decode_segment_header(&again), Ok((id, first_seq)));
    }
    let mut pos = 0;
    loop {
        let record = match fuzzing::decode_record(bytes, base, pos) {
            Ok(Some(record)) => record,
            Ok(None) | Err(_) => return,
        };
        assert!(record.key.start > pos && record.key.end <= record.value.start, "{record:?} at {pos}");
        assert!(record.value.end == record.end && record.end <= bytes.len(), "{record:?} at {pos}");
        assert!(
            !record.aligned || (base + record.value.start as u64).is_multiple_of(16),
            "{record:?} at {pos}"
        );
        assert!((1..=3).contains(&record.kind), "{record:?}");
        // Encoded afresh at the same file offset, the record decodes to the same fields.
        let (key, value) = (&bytes[record.key.clone()], &bytes[record.value.clone()]);
        let mut again = Vec::new();
        let end = fuzzing::encode_record(
            &mut again,
            base + pos as u64,
            record.kind,
            record.commit,
            record.aligned,
            record.seq,
            record.table,
            key,
            value,
            record.watermark,
        );
        let decoded = fuzzing::decode_record(&again, base + pos as u64, 0)
            .expect("a re-encoded record decodes")
            .expect("a re-encoded record is not the end");
        assert_eq!(
            (decoded.kind, decoded.commit, decoded.aligned),
            (record.kind, record.commit, record.aligned)
        );
        assert_eq!((decoded.seq, decoded.table, decoded.end), (record.seq, record.table, end));
        assert_eq!(decoded.watermark, record.watermark);
        assert_eq!((&again[decoded.key.clone()], &again[decoded.value.clone()]), (key, value));
        pos = record.end;
    }
}

/// Separates the files of a [`recovery`] input.
pub const FILE_SEPARATOR: &[u8] = b"\xF0-next-file-\x0F";
/// Flag (byte 0 of [`recovery`] and [`hint`] inputs): recompute checksums first.
pub const FIX_CHECKSUMS: u8 = 1;
/// The tables every [`recovery`] store has: ids 1, 2, 3.
pub const RECOVERY_TABLES: [&str; 3] = ["a", "b", "c"];

/// Recovery: opening a store whose files are the input.
///
/// Input: byte 0 holds flags ([`FIX_CHECKSUMS`]); the rest is split at [`FILE_SEPARATOR`]
/// into segment files 1, 2, 3 (an empty part is no file) and a hint file, beside a valid
/// table directory of tables a, b, c. The store is opened once with `repair` off and once
/// with it on, each on a fresh copy. Opening may fail (with an error), never panic or hang;
/// when it succeeds, every value reads back, `verify` runs, a new write succeeds, and a
/// reopen without repair sees exactly what the first open saw plus that write.
pub fn recovery(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else { return };
    let mut parts: Vec<Vec<u8>> =
        split(rest, FILE_SEPARATOR).into_iter().take(4).map(<[u8]>::to_vec).collect();
    if flags & FIX_CHECKSUMS != 0 {
        for part in parts.iter_mut().take(3) {
            fix_segment_checksums(part);
        }
        if let Some(hint) = parts.get_mut(3) {
            fix_trailing_checksum(hint);
        }
    }
    for repair in [false, true] {
        let dir = tempfile::tempdir().expect("temporary directory");
        write_store(dir.path(), &parts);
        open_and_check(dir.path(), repair);
    }
}

fn split<'a>(mut bytes: &'a [u8], separator: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    while let Some(at) = bytes.windows(separator.len()).position(|w| w == separator) {
        parts.push(&bytes[..at]);
        bytes = &bytes[at + separator.len()..];
    }
    parts.push(bytes);
    parts
}

/// The options of the recovery target: small segments, no background work.
fn recovery_options(repair: bool) -> Options {
    Options {
        sync: SyncMode::Never,
        segment_size: 64 << 10,
        checkpoint_bytes: 0,
        compaction_threshold: 0.0,
        repair,
        ..Options::default()
    }
}

fn write_store(dir: &Path, parts: &[Vec<u8>]) {
    let tables = RECOVERY_TABLES.iter().zip(1..).map(|(name, id)| (id, (*name).to_owned())).collect();
    std::fs::write(dir.join(fuzzing::TABLES_FILE), fuzzing::encode_table_dir(4, tables, None))
        .expect("write");
    for (id, part) in (1..=3).zip(parts) {
        if !part.is_empty() {
            std::fs::write(dir.join(fuzzing::segment_file_name(id)), part).expect("write");
        }
    }
    if let Some(hint) = parts.get(3) {
        std::fs::write(dir.join(fuzzing::hint_file_name(1)), hint).expect("write");
    }
}

type Contents = BTreeMap<(String, Vec<u8>), Vec<u8>>;

/// Every entry of every table, or the first read error (a damaged record a hint covers).
fn contents(db: &Db) -> Result<Contents, typed_kv::engine::Error> {
    let snapshot = db.snapshot();
    let mut out = Contents::new();
    for table in db.tables() {
        for entry in snapshot.range(&table, ..) {
            let (key, value) = entry?;
            out.insert((table.name().to_owned(), key.to_vec()), value.to_vec());
        }
    }
    Ok(out)
}

fn open_and_check(dir: &Path, repair: bool) {
    let Ok(db) = Db::open(dir, recovery_options(repair)) else { return };
    // A damaged record under a hint is an error when read: as good an outcome as a refused open.
    let Ok(mut expected) = contents(&db) else { return };
    let _ = db.verify();
    let table = db.table("a").expect("table a exists");
    let written =
        db.write(&[Op::Put { table: &table, key: b"after", value: b"recovery", align: ValueAlign::Sixteen }]);
    if written.is_ok() {
        expected.insert(("a".to_owned(), b"after".to_vec()), b"recovery".to_vec());
        assert_eq!(contents(&db).expect("reads back"), expected, "the write is visible");
    }
    drop(db);
    let db = Db::open(dir, recovery_options(false))
        .unwrap_or_else(|e| panic!("a store that opened (repair {repair}) fails to reopen: {e}"));
    assert_eq!(
        contents(&db).expect("reads back after reopening"),
        expected,
        "reopening (first open with repair {repair}) changed the contents"
    );
}

/// Rewrites a segment's header checksum and each record's checksum, as far as the records'
/// lengths make sense (layout in docs/design.md §2), so mutations reach past them.
pub fn fix_segment_checksums(segment: &mut [u8]) {
    if segment.len() < SEGMENT_HEADER_LEN {
        return;
    }
    let crc = crc32c::crc32c(&segment[..60]);
    segment[60..64].copy_from_slice(&crc.to_le_bytes());
    let mut pos = SEGMENT_HEADER_LEN;
    while let Some(end) = fix_record_checksum(segment, pos) {
        pos = end;
    }
}

/// Fixes the checksum of the record at `pos`; the offset past it, if it is whole.
fn fix_record_checksum(bytes: &mut [u8], pos: usize) -> Option<usize> {
    let rest = bytes.get(pos..)?;
    if rest.len() < 5 || rest[..5].iter().all(|&b| b == 0) {
        return None;
    }
    let aligned = rest[4] & 0x20 != 0;
    let mut at = 5;
    let mut lengths = [0u64; 4];
    for length in &mut lengths {
        *length = varint(rest, &mut at)?;
    }
    if rest[4] & 0x40 != 0 {
        varint(rest, &mut at)?; // the commit record's sync watermark
    }
    let key = at;
    let key_len = usize::try_from(lengths[2]).ok()?;
    let value_len = usize::try_from(lengths[3]).ok()?;
    let mut value = key.checked_add(key_len)?;
    if aligned {
        value = (pos + value).next_multiple_of(16) - pos;
    }
    let end = value.checked_add(value_len)?;
    if end > rest.len() {
        return None;
    }
    let mut crc = crc32c::crc32c(&rest[4..key]);
    crc = crc32c::crc32c_append(crc, &rest[key..key + key_len]);
    crc = crc32c::crc32c_append(crc, &rest[value..end]);
    bytes[pos..pos + 4].copy_from_slice(&crc.to_le_bytes());
    Some(pos + end)
}

fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Replaces the last 4 bytes with the CRC-32C of the others (hint and table directory).
pub fn fix_trailing_checksum(bytes: &mut [u8]) {
    if let Some(body_len) = bytes.len().checked_sub(4) {
        let crc = crc32c::crc32c(&bytes[..body_len]);
        bytes[body_len..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Written length of segment `id` for the [`hint`] target: segments 1 to 4 exist.
fn hint_segment_len(id: u32) -> Option<u64> {
    (1..=4).contains(&id).then(|| 4096 << id)
}

/// The hint-file reader (`src/engine/hint.rs`).
///
/// Input: byte 0 holds flags ([`FIX_CHECKSUMS`]), the rest is the hint file. Segments 1 to 4
/// exist (8, 16, 32, 64 KiB). A hint it accepts has tables in ascending, distinct order,
/// keys ascending within each table, entries inside their segments and before the resume
/// point, and no more entries than its bytes can hold.
pub fn hint(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else { return };
    let mut bytes = rest.to_vec();
    if flags & FIX_CHECKSUMS != 0 {
        fix_trailing_checksum(&mut bytes);
    }
    let Ok(hint) = fuzzing::decode_hint(&bytes, &hint_segment_len) else { return };
    assert!(hint.tables.windows(2).all(|w| w[0] < w[1]), "{:?}", hint.tables);
    // Header 32 bytes, checksum 4, 12 per table, 28 plus the key per entry.
    let least = 36 + 12 * hint.tables.len() + hint.entries.iter().map(|e| 28 + e.key.len()).sum::<usize>();
    assert_eq!(least, bytes.len(), "the hint's entries do not account for its bytes");
    for pair in hint.entries.windows(2) {
        assert!(
            pair[0].table < pair[1].table || (pair[0].table == pair[1].table && pair[0].key < pair[1].key)
        );
    }
    for entry in &hint.entries {
        let len = hint_segment_len(entry.segment).expect("entry in a segment that exists");
        assert!(entry.offset + u64::from(entry.len) <= len, "{entry:?}");
        assert!(
            (entry.segment, entry.offset + u64::from(entry.len)) <= hint.resume,
            "{entry:?} after resume"
        );
        assert!(entry.key.len() <= typed_kv::engine::MAX_KEY_LEN);
    }
}

/// The table-directory reader (`src/engine/tables.rs`).
///
/// Input: byte 0 holds flags ([`FIX_CHECKSUMS`]), the rest is the file. A directory it
/// accepts has every id below the next id, and encodes back to exactly its bytes.
pub fn table_dir(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else { return };
    let mut bytes = rest.to_vec();
    if flags & FIX_CHECKSUMS != 0 {
        fix_trailing_checksum(&mut bytes);
    }
    let Ok((next_id, tables, files)) = fuzzing::decode_table_dir(&bytes) else { return };
    assert!(tables.iter().all(|(id, _)| *id < next_id), "{next_id} {tables:?}");
    assert_eq!(fuzzing::encode_table_dir(next_id, tables, files), bytes, "not canonical");
}

/// The order-preserving key decoder (`src/formats/ordered.rs`) for one key type.
///
/// Input: byte 0 picks the key type, byte 1 the length of key `a`; then `a`'s bytes, then
/// key `b`'s. Whatever decodes must encode back to exactly its bytes (the format is
/// canonical), and when both decode, their byte order must equal the keys' order.
pub fn ordered_key(data: &[u8]) {
    let [selector, a_len, rest @ ..] = data else { return };
    let (a, b) = rest.split_at(usize::from(*a_len).min(rest.len()));
    match selector % 26 {
        0 => ordered::<u8>(a, b, Ord::cmp),
        1 => ordered::<u16>(a, b, Ord::cmp),
        2 => ordered::<u32>(a, b, Ord::cmp),
        3 => ordered::<u64>(a, b, Ord::cmp),
        4 => ordered::<u128>(a, b, Ord::cmp),
        5 => ordered::<i8>(a, b, Ord::cmp),
        6 => ordered::<i16>(a, b, Ord::cmp),
        7 => ordered::<i32>(a, b, Ord::cmp),
        8 => ordered::<i64>(a, b, Ord::cmp),
        9 => ordered::<i128>(a, b, Ord::cmp),
        10 => ordered::<usize>(a, b, Ord::cmp),
        11 => ordered::<isize>(a, b, Ord::cmp),
        12 => ordered::<f32>(a, b, f32::total_cmp),
        13 => ordered::<f64>(a, b, f64::total_cmp),
        14 => ordered::<bool>(a, b, Ord::cmp),
        15 => ordered::<char>(a, b, Ord::cmp),
        16 => ordered::<String>(a, b, Ord::cmp),
        17 => ordered::<Vec<u8>>(a, b, Ord::cmp),
        18 => ordered::<[u8; 5]>(a, b, Ord::cmp),
        19 => ordered::<()>(a, b, Ord::cmp),
        20 => ordered::<Option<u32>>(a, b, Ord::cmp),
        21 => ordered::<Option<Option<String>>>(a, b, Ord::cmp),
        22 => ordered::<(u64, String)>(a, b, Ord::cmp),
        23 => ordered::<(String, Vec<u8>, bool, char)>(a, b, Ord::cmp),
        24 => ordered::<(u8, i16, u32, i64, Option<u8>, [u8; 2], String, ())>(a, b, Ord::cmp),
        _ => ordered::<(Option<(i32, String)>, f64)>(a, b, |x, y| {
            x.0.cmp(&y.0).then_with(|| x.1.total_cmp(&y.1))
        }),
    }
}

fn ordered<K: OrderedKey + Debug + 'static>(a: &[u8], b: &[u8], cmp: fn(&K, &K) -> Ordering) {
    let format = OrderedFormat::new();
    let decode = |bytes: &[u8]| -> Option<K> {
        let key: K = KeyFormat::<K>::from_bytes(&format, bytes).ok()?;
        let mut again = Vec::new();
        KeyFormat::<K>::to_bytes(&format, &key, &mut again).expect("ordered keys always encode");
        assert_eq!(again, bytes, "{key:?} was decoded from other bytes than its encoding");
        Some(key)
    };
    if let (Some(x), Some(y)) = (decode(a), decode(b)) {
        assert_eq!(cmp(&x, &y), a.cmp(b), "order of {x:?} and {y:?} differs from their bytes'");
    }
}

/// Each value format's guard constructor (`ValueFormat::check`, then `view`).
///
/// Input: byte 0 picks the format and type; the rest are the stored bytes. `check` must
/// return an error or accept; what it accepts is read through `view` completely (rkyv:
/// deserialized; flatbuffers: every field copied; bincode, postcard: re-encoded and decoded
/// again to an equal value).
pub fn value_formats(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else { return };
    match selector % 20 {
        0 => rkyv_value::<Company>(bytes),
        1 => rkyv_value::<String>(bytes),
        2 => rkyv_value::<Vec<u32>>(bytes),
        3 => rkyv_value::<Vec<String>>(bytes),
        4 => rkyv_value::<Option<Vec<u8>>>(bytes),
        5 => rkyv_value::<(u64, String, Vec<i16>)>(bytes),
        6 => flatbuffers_company(bytes),
        7 => serde_value::<Company, _>(BincodeFormat::new(), bytes),
        8 => serde_value::<String, _>(BincodeFormat::new(), bytes),
        9 => serde_value::<Vec<String>, _>(BincodeFormat::new(), bytes),
        10 => serde_value::<Option<Vec<u64>>, _>(BincodeFormat::new(), bytes),
        11 => serde_value::<BTreeMap<String, (i32, f64)>, _>(BincodeFormat::new(), bytes),
        12 => serde_value::<(char, bool, u128, Vec<u8>), _>(BincodeFormat::new(), bytes),
        13 => serde_value::<Company, _>(PostcardFormat::new(), bytes),
        14 => serde_value::<String, _>(PostcardFormat::new(), bytes),
        15 => serde_value::<Vec<String>, _>(PostcardFormat::new(), bytes),
        16 => serde_value::<Option<Vec<u64>>, _>(PostcardFormat::new(), bytes),
        17 => serde_value::<BTreeMap<String, (i32, f64)>, _>(PostcardFormat::new(), bytes),
        18 => serde_value::<(char, bool, u128, Vec<u8>), _>(PostcardFormat::new(), bytes),
        _ => rkyv_value::<BTreeMap<u32, String>>(bytes),
    }
}

fn rkyv_value<V>(bytes: &[u8])
where
    RkyvFormat: ValueFormat<V, View = V::Archived, Checked = ()>,
    V: rkyv::Archive,
    V::Archived: rkyv::Deserialize<V, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
{
    let format = RkyvFormat::new();
    // The engine hands rkyv 16-byte-aligned bytes (RkyvFormat::ALIGN).
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    if ValueFormat::<V>::check(&format, &aligned).is_err() {
        return;
    }
    // SAFETY: `check` accepted exactly these bytes, 16-byte aligned, just above.
    let archived = unsafe { <RkyvFormat as ValueFormat<V>>::view(&(), &aligned) };
    rkyv::deserialize::<V, rkyv::rancor::Error>(archived).expect("a checked archive deserializes");
}

fn flatbuffers_company(bytes: &[u8]) {
    let format = FlatbuffersFormat::new();
    if ValueFormat::<Company>::check(&format, bytes).is_err() {
        return;
    }
    // SAFETY: `check` accepted exactly these bytes just above (`ALIGN` is 1).
    let view: &FlatbuffersView<Company> =
        unsafe { <FlatbuffersFormat as ValueFormat<Company>>::view(&(), bytes) };
    let company = Company::from_table(&view.root());
    let mut again = Vec::new();
    format.to_bytes(&company, &mut again).expect("a company encodes");
    ValueFormat::<Company>::check(&format, &again).expect("a re-encoded company checks");
}

fn serde_value<V, F>(format: F, bytes: &[u8])
where
    F: ValueFormat<V, View = V, Checked = V>,
    V: PartialEq + Debug,
{
    let Ok(value) = format.check(bytes) else { return };
    let mut again = Vec::new();
    format.to_bytes(&value, &mut again).expect("a decoded value encodes");
    let decoded = format.check(&again).expect("a re-encoded value decodes");
    // NaN is not equal to itself: compare NaN-bearing values by their encodings instead.
    if decoded != value {
        let mut twice = Vec::new();
        format.to_bytes(&decoded, &mut twice).expect("encodes");
        assert_eq!(twice, again, "{value:?} did not survive encode and decode");
    }
}
