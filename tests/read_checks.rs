//! The native engine checks each record's CRC-32C when a read hands its value out: a byte
//! of a value damaged on disk, under a hint (so recovery never read the record), is an error
//! on every read path, engine and typed, never the damaged bytes. With
//! `Options::verify_reads = false` the bytes are served as they are.
#![cfg(feature = "native")]

mod common;

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use typed_kv::engine::{self, Db, Op, Options, SyncMode, ValueAlign};
use typed_kv::{
    BytesFormat, DatabaseBackend, OrderedFormat, PostcardFormat, RkyvFormat, StorageBuilder, StorageError,
};

use common::{files_under, Record};

/// The segment files of an engine directory.
fn segments(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("seg-")))
        .collect()
}

/// Flips one bit of the only occurrence of `needle` in the segment files under `dir`, at
/// `at` bytes into it; returns the file.
fn damage(dir: &Path, needle: &[u8], at: usize) -> PathBuf {
    let mut found = Vec::new();
    for path in segments(dir) {
        let bytes = std::fs::read(&path).unwrap();
        for (i, w) in bytes.windows(needle.len()).enumerate() {
            if w == needle {
                found.push((path.clone(), i));
            }
        }
    }
    assert_eq!(found.len(), 1, "{:?} is in the segments once", String::from_utf8_lossy(needle));
    let (path, i) = found.pop().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[i + at] ^= 0x04;
    std::fs::write(&path, bytes).unwrap();
    path
}

fn value(i: u32) -> Vec<u8> {
    format!("value {i:04} of the table, long enough to look like a record").into_bytes()
}

/// A closed engine store of tables `packed` (values [`value`] 0 to 19) and `aligned`
/// (100 to 119), 20 keys each, with a hint.
fn engine_store(dir: &Path) {
    let db = Db::open(dir, Options::default()).unwrap();
    let packed = db.table("packed").unwrap();
    let aligned = db.table("aligned").unwrap();
    let mut ops = Vec::new();
    let keys: Vec<[u8; 4]> = (0..20u32).map(|i| i.to_be_bytes()).collect();
    let values: Vec<Vec<u8>> = (0..20).map(value).collect();
    let aligned_values: Vec<Vec<u8>> = (100..120).map(value).collect();
    for i in 0..20 {
        ops.push(Op::Put { table: &packed, key: &keys[i], value: &values[i], align: ValueAlign::Packed });
        let value = &aligned_values[i];
        ops.push(Op::Put { table: &aligned, key: &keys[i], value, align: ValueAlign::Sixteen });
    }
    db.write(&ops).unwrap();
}

fn assert_corrupt(result: Result<impl std::fmt::Debug, engine::Error>, segment: &Path, what: &str) {
    match result {
        Err(engine::Error::Corrupt { path, offset, reason }) => {
            assert_eq!(path, segment, "{what}: the error names the damaged file");
            assert!(offset >= 64, "{what}: offset {offset} is a record's, past the header");
            assert!(reason.contains("checksum mismatch"), "{what}: {reason}");
            assert!(
                reason.contains("table `packed`") && reason.contains("\\x00\\x00\\x00\\x07"),
                "{what}: {reason}"
            );
        }
        other => panic!("{what}: expected Error::Corrupt naming {}, got {other:?}", segment.display()),
    }
}

#[test]
fn a_damaged_value_under_a_hint_is_an_error_on_every_engine_read() {
    let dir = tempfile::tempdir().unwrap();
    engine_store(dir.path());
    let segment = damage(dir.path(), &value(7), 10);

    let db = Db::open(dir.path(), Options::default()).unwrap();
    assert!(db.stats().recovery.hint_used, "the hint covers the damaged record: recovery does not read it");
    let t = db.find_table("packed").unwrap();
    let key = 7u32.to_be_bytes();
    assert_corrupt(db.get(&t, &key), &segment, "Db::get");
    let snapshot = db.snapshot();
    assert_corrupt(snapshot.get(&t, &key), &segment, "Snapshot::get");
    assert_corrupt(snapshot.get_value(&t, &key), &segment, "Snapshot::get_value");

    let entries: Vec<_> = snapshot.range(&t, ..).collect();
    assert_eq!(entries.len(), 20, "one item per key, the damaged one an error");
    for (i, entry) in entries.into_iter().enumerate() {
        if i == 7 {
            assert_corrupt(entry, &segment, "Range");
        } else {
            assert_eq!(entry.unwrap(), (&(i as u32).to_be_bytes()[..], &value(i as u32)[..]));
        }
    }
    let owned: Vec<_> = snapshot.clone().into_range(&t, ..).collect();
    assert_eq!(owned.len(), 20);
    for (i, entry) in owned.into_iter().enumerate() {
        if i == 7 {
            assert_corrupt(entry, &segment, "OwnedRange");
        } else {
            let (k, v) = entry.unwrap();
            assert_eq!((&k[..], &v[..]), (&(i as u32).to_be_bytes()[..], &value(i as u32)[..]));
        }
    }
    let aligned = db.find_table("aligned").unwrap();
    assert_eq!(db.get(&aligned, &key).unwrap().as_deref(), Some(&value(107)[..]));
}

#[test]
fn without_verify_reads_a_damaged_value_is_served_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    engine_store(dir.path());
    damage(dir.path(), &value(7), 10);

    let db = Db::open(dir.path(), Options { verify_reads: false, ..Options::default() }).unwrap();
    let t = db.find_table("packed").unwrap();
    let mut damaged = value(7);
    damaged[10] ^= 0x04;
    assert_eq!(db.get(&t, &7u32.to_be_bytes()).unwrap().as_deref(), Some(&damaged[..]));
    let snapshot = db.snapshot();
    assert_eq!(snapshot.get(&t, &7u32.to_be_bytes()).unwrap(), Some(&damaged[..]));
    let (_, v) = snapshot.range(&t, &7u32.to_be_bytes()[..]..).next().unwrap().unwrap();
    assert_eq!(v, &damaged[..]);
}

#[test]
fn a_hint_of_the_previous_format_is_rejected_and_the_log_scanned() {
    let dir = tempfile::tempdir().unwrap();
    engine_store(dir.path());
    let hint = files_under(dir.path())
        .into_iter()
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("hint-")))
        .expect("a clean close writes a hint");
    // Version 1 held value offsets only: the same bytes with the old version byte and a
    // checksum that holds.
    let mut bytes = std::fs::read(&hint).unwrap();
    bytes[7] = 1;
    let body = bytes.len() - 4;
    let crc = crc32c::crc32c(&bytes[..body]);
    bytes[body..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&hint, bytes).unwrap();

    let db = Db::open(dir.path(), Options::default()).unwrap();
    let recovery = db.stats().recovery;
    assert!(!recovery.hint_used);
    let rejected = recovery.hint_rejected.expect("the hint is rejected");
    assert!(rejected.contains("version 1"), "{rejected}");
    let t = db.find_table("packed").unwrap();
    for i in 0..20u32 {
        assert_eq!(db.get(&t, &i.to_be_bytes()).unwrap().as_deref(), Some(&value(i)[..]));
    }
}

/// A typed store of a bytes, a postcard and an rkyv table, each with one record whose value
/// holds `needle-<table>`, closed (so with a hint).
fn typed_store(dir: &Path, verify_reads: bool) -> typed_kv::Storage {
    StorageBuilder::new(dir)
        .with_backend(DatabaseBackend::Native)
        .with_native_options(engine::Options { verify_reads, ..engine::Options::default() })
        .build()
        .unwrap()
}

fn needle_record(table: &str) -> Record {
    Record { name: format!("needle-{table}-0123456789"), ..Record::new(3) }
}

macro_rules! typed_tables {
    ($storage:expr) => {{
        let storage = &$storage;
        let bytes = storage
            .new_table::<Vec<u8>, Vec<u8>>("bytes")
            .with_key_format(BytesFormat::new())
            .with_value_format(BytesFormat::new())
            .build()
            .unwrap();
        let postcard = storage
            .new_table::<u64, Record>("postcard")
            .with_key_format(OrderedFormat::new())
            .with_value_format(PostcardFormat::new())
            .build()
            .unwrap();
        let rkyv = storage
            .new_table::<u64, Record>("rkyv")
            .with_key_format(OrderedFormat::new())
            .with_value_format(RkyvFormat::new())
            .build()
            .unwrap();
        (bytes, postcard, rkyv)
    }};
}

fn write_typed(dir: &Path) {
    let storage = typed_store(dir, true);
    let (bytes, postcard, rkyv) = typed_tables!(storage);
    for i in 0..5u64 {
        let value = if i == 3 { needle_record("bytes").name.into_bytes() } else { vec![i as u8; 40] };
        bytes.put(&i.to_be_bytes().to_vec(), &value).unwrap();
        let record = |table| if i == 3 { needle_record(table) } else { Record::new(i) };
        postcard.put(&i, &record("postcard")).unwrap();
        rkyv.put(&i, &record("rkyv")).unwrap();
    }
}

fn unit<T>(result: typed_kv::Result<T>) -> typed_kv::Result<()> {
    result.map(|_| ())
}

fn assert_typed_corrupt<T>(result: typed_kv::Result<T>, segment: &Path, table: &str, what: &str) {
    match result {
        Err(StorageError::Corrupt { path, reason, .. }) => {
            assert_eq!(path, segment, "{table} {what}: the error names the damaged file");
            assert!(reason.contains(&format!("table `{table}`")), "{table} {what}: {reason}");
            assert!(reason.contains("checksum mismatch"), "{table} {what}: {reason}");
        }
        Err(other) => panic!("{table} {what}: expected StorageError::Corrupt, got {other}"),
        Ok(_) => panic!("{table} {what}: the damaged value was handed out"),
    }
}

#[test]
fn typed_reads_of_a_damaged_value_under_a_hint_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    write_typed(dir.path());
    let native = dir.path().join("native");
    let damaged: Vec<(&str, PathBuf)> = ["bytes", "postcard", "rkyv"]
        .into_iter()
        .map(|table| (table, damage(&native, needle_record(table).name.as_bytes(), 9)))
        .collect();

    let storage = typed_store(dir.path(), true);
    let (bytes, postcard, rkyv) = typed_tables!(storage);
    let key = 3u64.to_be_bytes().to_vec();
    let segment = |table: &str| damaged.iter().find(|(t, _)| *t == table).unwrap().1.clone();

    assert_typed_corrupt(bytes.get(&key).map(|g| g.map(|v| v.to_vec())), &segment("bytes"), "bytes", "get");
    assert_typed_corrupt(
        postcard.get(&3).map(|g| g.map(|v| v.name.clone())),
        &segment("postcard"),
        "postcard",
        "get",
    );
    assert_typed_corrupt(rkyv.get(&3).map(|g| g.map(|v| v.name.len())), &segment("rkyv"), "rkyv", "get");

    let read = storage.read().unwrap();
    assert_typed_corrupt(
        read.get(&bytes, &key).map(|g| g.is_some()),
        &segment("bytes"),
        "bytes",
        "snapshot get",
    );
    assert_typed_corrupt(
        read.get(&postcard, &3).map(|g| g.is_some()),
        &segment("postcard"),
        "postcard",
        "snapshot get",
    );
    assert_typed_corrupt(read.get(&rkyv, &3).map(|g| g.is_some()), &segment("rkyv"), "rkyv", "snapshot get");

    // Ranges, inside and outside a snapshot, through entries, values and keys.
    let third = |items: Vec<typed_kv::Result<()>>| {
        assert_eq!(items.len(), 5, "one item per key");
        items.into_iter().nth(3).unwrap()
    };
    assert_typed_corrupt(
        third(bytes.iter().unwrap().map(unit).collect()),
        &segment("bytes"),
        "bytes",
        "iter",
    );
    let values = postcard.iter().unwrap().values().map(unit).collect();
    assert_typed_corrupt(third(values), &segment("postcard"), "postcard", "values");
    let keys = rkyv.iter().unwrap().keys().map(unit).collect();
    assert_typed_corrupt(third(keys), &segment("rkyv"), "rkyv", "keys");
    let in_snapshot = read.range(&rkyv, 0..).unwrap().values().map(unit).collect();
    assert_typed_corrupt(third(in_snapshot), &segment("rkyv"), "rkyv", "snapshot range");
    let table_snapshot = postcard.snapshot().unwrap();
    let in_table_snapshot = table_snapshot.iter().unwrap().map(unit).collect();
    assert_typed_corrupt(third(in_table_snapshot), &segment("postcard"), "postcard", "table snapshot iter");

    // The other records read as written.
    assert_eq!(postcard.get(&2).unwrap().unwrap().name, Record::new(2).name);
    assert_eq!(rkyv.get(&4).unwrap().unwrap().name.as_str(), Record::new(4).name);
}

#[test]
fn typed_reads_without_verify_reads_serve_the_damaged_bytes() {
    let dir = tempfile::tempdir().unwrap();
    write_typed(dir.path());
    damage(&dir.path().join("native"), needle_record("bytes").name.as_bytes(), 9);
    let storage = typed_store(dir.path(), false);
    let (bytes, _, _) = typed_tables!(storage);
    let mut damaged = needle_record("bytes").name.into_bytes();
    damaged[9] ^= 0x04;
    assert_eq!(bytes.get(&3u64.to_be_bytes().to_vec()).unwrap().map(|v| v.to_vec()), Some(damaged));
}

/// The written contents of [`mutation_template`]: (table, key, value).
fn template_contents() -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..24u32 {
        out.push(("packed", i.to_be_bytes().to_vec(), value(i)));
        out.push(("aligned", i.to_be_bytes().to_vec(), value(i + 100)));
    }
    out
}

/// A closed store of [`template_contents`] over several small segments, with a hint.
fn mutation_template(dir: &Path) {
    let options = Options { sync: SyncMode::Never, segment_size: 1 << 10, ..Options::default() };
    let db = Db::open(dir, options).unwrap();
    let packed = db.table("packed").unwrap();
    let aligned = db.table("aligned").unwrap();
    for (table, key, value) in template_contents() {
        let (table, align) =
            if table == "packed" { (&packed, ValueAlign::Packed) } else { (&aligned, ValueAlign::Sixteen) };
        db.write(&[Op::Put { table, key: &key, value: &value, align }]).unwrap();
    }
}

/// What every read of the damaged store returned that it must not have: bytes that differ
/// from the ones written, or a written key missing.
fn wrong_reads(dir: &Path) -> Vec<String> {
    let Ok(db) = Db::open(dir, Options::default()) else { return Vec::new() }; // refusing is fine
    let mut wrong = Vec::new();
    let snapshot = db.snapshot();
    for (table, key, value) in template_contents() {
        let t = db.find_table(table).expect("the table directory is not mutated");
        match db.get(&t, &key) {
            Ok(Some(got)) if got[..] != value[..] => wrong.push(format!("get {table} {key:?}: wrong bytes")),
            Ok(None) => wrong.push(format!("get {table} {key:?}: missing")),
            _ => {}
        }
        if snapshot.get(&t, &key).is_ok_and(|got| got != Some(&value[..])) {
            wrong.push(format!("snapshot get {table} {key:?}: {:?}", snapshot.get(&t, &key)));
        }
    }
    let contents = template_contents();
    for t in db.tables() {
        for (key, got) in snapshot.range(&t, ..).flatten() {
            let written = contents.iter().find(|(n, k, _)| *n == t.name() && k == key);
            if written.is_none_or(|(_, _, v)| v[..] != got[..]) {
                wrong.push(format!("range {} {key:?}: wrong bytes", t.name()));
            }
        }
    }
    wrong
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any single damaged byte of a closed store's segments: every read returns an error or
    /// the bytes written, nothing else.
    #[test]
    fn one_damaged_byte_never_makes_a_read_return_other_bytes(pick in any::<prop::sample::Index>(), flip in 1..=255u8) {
        let template = tempfile::tempdir().unwrap();
        mutation_template(template.path());
        let files = segments(template.path());
        let sizes: Vec<u64> = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).collect();
        let mut at = pick.index(sizes.iter().sum::<u64>() as usize) as u64;
        let file = files.iter().zip(&sizes).find(|(_, &size)| {
            let here = at < size;
            if !here {
                at -= size;
            }
            here
        }).unwrap().0;
        let mut bytes = std::fs::read(file).unwrap();
        bytes[at as usize] ^= flip;
        std::fs::write(file, bytes).unwrap();
        let wrong = wrong_reads(template.path());
        prop_assert!(wrong.is_empty(), "{} byte {at} ^ {flip:#04x}: {wrong:?}", file.display());
    }
}
