//! The seed corpus of every fuzz target, made by typed-kv's real encoders: a tiny native
//! store's segments, hint and table directory, ordered keys, and values in each format.
//!
//! Run by tests/fuzz_corpus.rs (`regenerate_seed_corpus`, ignored by default); included
//! there with `crate::company` and `crate::targets` beside it.

use std::collections::BTreeMap;
use std::path::Path;

use typed_kv::engine::fuzzing::{self, SEGMENT_HEADER_LEN};
use typed_kv::engine::{Db, Op, Options, SyncMode, ValueAlign};
use typed_kv::{
    BincodeFormat, FlatbuffersFormat, KeyFormat, OrderedFormat, OrderedKey, PostcardFormat, RkyvFormat,
    ValueFormat,
};

use crate::company;
use crate::targets::{FILE_SEPARATOR, FIX_CHECKSUMS, RECOVERY_TABLES};

/// Every seed: target name, file name, bytes.
pub fn all() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let store = TinyStore::new();
    store_seeds(&store, &mut seeds);
    ordered_key_seeds(&mut seeds);
    value_format_seeds(&mut seeds);
    seeds
}

/// The files of a tiny native store: tables a, b, c (ids 1, 2, 3); puts packed and aligned,
/// a delete and a clear, over three segments; closed cleanly, so with a hint.
struct TinyStore {
    segments: Vec<Vec<u8>>,
    hint: Vec<u8>,
    tables: Vec<u8>,
}

impl TinyStore {
    fn new() -> TinyStore {
        let dir = tempfile::tempdir().expect("temporary directory");
        let options = Options {
            sync: SyncMode::Never,
            segment_size: 1024,
            checkpoint_bytes: 0,
            compaction_threshold: 0.0,
            ..Options::default()
        };
        {
            let db = Db::open(dir.path(), options).expect("open");
            let [a, b, c] = RECOVERY_TABLES.map(|name| db.table(name).expect("table"));
            for i in 0u32..12 {
                let key = format!("key-{i:02}");
                let value = vec![b'v'; 700 + 10 * i as usize];
                let align = if i % 2 == 0 { ValueAlign::Packed } else { ValueAlign::Sixteen };
                let table = [&a, &b, &c][i as usize % 3];
                db.write(&[
                    Op::Put { table, key: key.as_bytes(), value: &value, align },
                    Op::Put { table: &a, key: &i.to_be_bytes(), value: b"", align: ValueAlign::Packed },
                ])
                .expect("write");
            }
            db.write(&[Op::Delete { table: &a, key: b"key-00" }, Op::Clear { table: &b }]).expect("write");
            db.write(&[Op::Put { table: &b, key: b"after clear", value: b"x", align: ValueAlign::Sixteen }])
                .expect("write");
        }
        let read = |name: String| std::fs::read(dir.path().join(name)).expect("read");
        // Segments rotate at 4 KiB (the page-rounded segment size): three of them.
        let exists = |id| dir.path().join(fuzzing::segment_file_name(id)).exists();
        assert!((1..=3).all(exists) && !exists(4), "the tiny store does not have three segments");
        let segments: Vec<Vec<u8>> = (1..=3).map(|id| read(fuzzing::segment_file_name(id))).collect();
        let hint_name = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|entry| entry.expect("entry").file_name().into_string().expect("UTF-8 name"))
            .find(|name| name.starts_with("hint-"))
            .expect("a clean close writes a hint");
        TinyStore { segments, hint: read(hint_name), tables: read(fuzzing::TABLES_FILE.to_owned()) }
    }
}

fn prefixed(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut out = prefix.to_vec();
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

fn joined(flags: u8, files: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![flags];
    for (i, file) in files.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(FILE_SEPARATOR);
        }
        out.extend_from_slice(file);
    }
    out
}

fn store_seeds(store: &TinyStore, seeds: &mut Vec<(&'static str, String, Vec<u8>)>) {
    let [s1, s2, s3] = [&store.segments[0][..], &store.segments[1][..], &store.segments[2][..]];
    // record: base 64 (records start after the header) and each segment's records; one
    // whole file from base 0; and single records at odd bases.
    for (i, segment) in store.segments.iter().enumerate() {
        seeds.push((
            "record",
            format!("segment-{}-records", i + 1),
            prefixed(&[64], &[&segment[SEGMENT_HEADER_LEN..]]),
        ));
    }
    seeds.push(("record", "segment-1-whole".into(), prefixed(&[0], &[s1])));
    for (base, aligned, kind) in [(3u8, true, 1u8), (200, false, 2), (17, true, 3)] {
        let mut record = Vec::new();
        fuzzing::encode_record(
            &mut record,
            u64::from(base),
            kind,
            true,
            aligned,
            99,
            2,
            b"k\0y",
            b"value",
            Some(64),
        );
        seeds.push(("record", format!("kind-{kind}-base-{base}"), prefixed(&[base], &[&record])));
    }
    // recovery: the whole store; without its hint; a torn tail; one segment; checksums fixed.
    seeds.push(("recovery", "store-with-hint".into(), joined(0, &[s1, s2, s3, &store.hint])));
    seeds.push(("recovery", "store-without-hint".into(), joined(0, &[s1, s2, s3])));
    seeds.push(("recovery", "store-torn-tail".into(), joined(0, &[s1, s2, &s3[..s3.len() - 7]])));
    seeds.push(("recovery", "first-segment-only".into(), joined(0, &[s1])));
    seeds.push(("recovery", "store-fix-checksums".into(), joined(FIX_CHECKSUMS, &[s1, s2, s3, &store.hint])));
    // hint and table directory: as written, and with the checksum-fixing flag.
    seeds.push(("hint", "hint".into(), prefixed(&[0], &[&store.hint])));
    seeds.push(("hint", "hint-fix-checksum".into(), prefixed(&[FIX_CHECKSUMS], &[&store.hint])));
    seeds.push(("table_dir", "tables".into(), prefixed(&[0], &[&store.tables])));
    let unicode = fuzzing::encode_table_dir(
        9,
        vec![(2, "ünïcode".into()), (8, String::new()), (5, "x".repeat(40))],
        None,
    );
    seeds.push(("table_dir", "unicode-names".into(), prefixed(&[FIX_CHECKSUMS], &[&unicode])));
}

fn ordered_bytes<K: OrderedKey + 'static>(key: &K) -> Vec<u8> {
    let mut out = Vec::new();
    KeyFormat::<K>::to_bytes(&OrderedFormat::new(), key, &mut out).expect("encode");
    out
}

/// An ordered_key input: type `selector`, keys `a` and `b`.
fn key_pair<K: OrderedKey + 'static>(selector: u8, a: &K, b: &K) -> Vec<u8> {
    let (a, b) = (ordered_bytes(a), ordered_bytes(b));
    let len = u8::try_from(a.len()).expect("seed keys are short");
    prefixed(&[selector, len], &[&a, &b])
}

fn ordered_key_seeds(seeds: &mut Vec<(&'static str, String, Vec<u8>)>) {
    // Selectors as in targets::ordered_key.
    let pairs = [
        key_pair(3, &7u64, &u64::MAX),
        key_pair(9, &-5i128, &3i128),
        key_pair(13, &-0.0f64, &f64::NAN),
        key_pair(15, &'é', &'\u{10FFFF}'),
        key_pair(16, &"a\0b".to_owned(), &"ab".to_owned()),
        key_pair(17, &vec![0u8, 0, 255], &vec![]),
        key_pair(21, &Some(Some("x".to_owned())), &Some(None)),
        key_pair(22, &(320193u64, "10-K".to_owned()), &(320193u64, "10-Q".to_owned())),
        key_pair(
            24,
            &(1u8, -2i16, 3u32, -4i64, Some(5u8), [6u8, 7], "eight".to_owned(), ()),
            &(1u8, -2i16, 3u32, -4i64, None, [0u8, 0], String::new(), ()),
        ),
        key_pair(25, &(Some((-1i32, "z".to_owned())), 2.5f64), &(None, -1.0f64)),
    ];
    for pair in pairs {
        seeds.push(("ordered_key", format!("type-{}", pair[0]), pair));
    }
}

fn value<V, F: ValueFormat<V>>(format: F, selector: u8, value: &V) -> Vec<u8> {
    let mut out = vec![selector];
    let mut bytes = Vec::new();
    format.to_bytes(value, &mut bytes).expect("encode");
    out.extend_from_slice(&bytes);
    out
}

fn value_format_seeds(seeds: &mut Vec<(&'static str, String, Vec<u8>)>) {
    let company = company::sample(7);
    let map: BTreeMap<String, (i32, f64)> =
        [("a".to_owned(), (1, 0.5)), ("b".to_owned(), (-2, f64::NAN))].into();
    let names = vec!["alpha".to_owned(), String::new(), "gamma".to_owned()];
    // Selectors as in targets::value_formats.
    let values = [
        value(RkyvFormat::new(), 0, &company),
        value(RkyvFormat::new(), 1, &"a string of some length".to_owned()),
        value(RkyvFormat::new(), 2, &vec![1u32, 2, 3, u32::MAX]),
        value(RkyvFormat::new(), 3, &names),
        value(RkyvFormat::new(), 4, &Some(vec![1u8, 2, 3])),
        value(RkyvFormat::new(), 5, &(9u64, "nine".to_owned(), vec![-1i16, 1])),
        value(FlatbuffersFormat::new(), 6, &company),
        value(BincodeFormat::new(), 7, &company),
        value(BincodeFormat::new(), 9, &names),
        value(BincodeFormat::new(), 11, &map),
        value(BincodeFormat::new(), 12, &('é', true, u128::MAX, vec![0u8, 1])),
        value(PostcardFormat::new(), 13, &company),
        value(PostcardFormat::new(), 15, &names),
        value(PostcardFormat::new(), 17, &map),
        value(PostcardFormat::new(), 18, &('é', true, u128::MAX, vec![0u8, 1])),
        value(RkyvFormat::new(), 19, &BTreeMap::from([(1u32, "one".to_owned()), (2, "two".to_owned())])),
    ];
    for value in values {
        seeds.push(("value_formats", format!("selector-{}", value[0]), value));
    }
}

/// Replaces the seeds in `corpus_dir/<target>/`. Files named `found-*`, inputs kept from
/// fuzzing runs because they reach paths the seeds do not, stay.
pub fn write(corpus_dir: &Path) {
    let seeds = all();
    for (target, _) in crate::targets::TARGETS {
        let dir = corpus_dir.join(target);
        std::fs::create_dir_all(&dir).expect("create corpus directory");
        for entry in std::fs::read_dir(&dir).expect("list corpus directory") {
            let path = entry.expect("directory entry").path();
            if !path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("found-")) {
                std::fs::remove_file(&path).expect("remove old seed");
            }
        }
    }
    for (target, name, bytes) in seeds {
        std::fs::write(corpus_dir.join(target).join(name), bytes).expect("write seed");
    }
}
