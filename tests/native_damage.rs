//! Damage that recovery must report, never absorb: a flipped bit in the newest segment with
//! valid commits after it, missing, truncated or swapped files, and a store with more
//! segments than the process may open files.
//!
//! The descriptor-limit test lowers `RLIMIT_NOFILE`, which is process-wide: it re-runs this
//! test binary (only [`descriptor_limit_child`], with `TYPED_KV_FD_DIR` set) under
//! `sh -c 'ulimit -n …'`, and the child opens the store.

#![cfg(feature = "native")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use typed_kv::engine::{Db, Op, Options, SyncMode, ValueAlign};

/// Names the child's engine directory; the child test does nothing without it.
const FD_DIR_VAR: &str = "TYPED_KV_FD_DIR";
/// The descriptor limit the child runs under.
const FD_LIMIT: usize = 32;

fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new().prefix("typed-kv-test-").tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("temp dir")
}

fn names_starting(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list the directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)))
        .collect();
    names.sort();
    names
}

/// Segment files, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    names_starting(dir, "seg-")
}

/// Options without background work or preallocated zeros: every file operation is the test's.
fn quiet(segment_size: u64) -> Options {
    Options {
        segment_size,
        checkpoint_bytes: 0,
        compaction_threshold: 0.0,
        preallocate: 0,
        ..Options::default()
    }
}

/// Key `i` of the test stores, and its value.
fn pair(i: u32) -> (Vec<u8>, Vec<u8>) {
    (format!("key-{i:06}").into_bytes(), format!("value of key {i} ").repeat(4).into_bytes())
}

/// Every pair of table `t`.
fn contents(db: &Db) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let t = db.find_table("t").expect("table t");
    db.snapshot()
        .range(&t, ..)
        .map(|entry| entry.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect::<Result<_, _>>()
        .expect("every record reads")
}

fn expected(keys: std::ops::Range<u32>) -> BTreeMap<Vec<u8>, Vec<u8>> {
    keys.map(pair).collect()
}

/// Puts keys `keys` into table `t`, one batch each.
fn put_each(db: &Db, keys: std::ops::Range<u32>) {
    let t = db.table("t").expect("table t");
    for i in keys {
        let (key, value) = pair(i);
        db.write(&[Op::Put { table: &t, key: &key, value: &value, align: ValueAlign::Packed }]).expect("put");
    }
}

// ---------------------------------------------------------------------------------------------
// More segments than file descriptors.

/// Segments of the descriptor-limit store: far more than the child may open files.
const MANY_SEGMENTS: usize = 4 * FD_LIMIT;

#[test]
fn a_store_with_more_segments_than_the_descriptor_limit_opens() {
    let dir = scratch();
    let keys = {
        let db = Db::open(dir.path(), Options { sync: SyncMode::Never, ..quiet(4096) }).expect("open");
        let mut n = 0;
        while segments(dir.path()).len() < MANY_SEGMENTS {
            put_each(&db, n..n + 10);
            n += 10;
        }
        n
    };
    let exe = std::env::current_exe().expect("test binary path");
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {FD_LIMIT} && exec \"$0\" \"$@\""))
        .arg(exe)
        .args(["--exact", "descriptor_limit_child", "--nocapture", "--test-threads=1"])
        .env(FD_DIR_VAR, dir.path())
        .env("TYPED_KV_FD_KEYS", keys.to_string())
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("TKV-OPENED"),
        "the child failed to open {} segments under `ulimit -n {FD_LIMIT}` ({}):\n{stdout}\n{stderr}",
        segments(dir.path()).len(),
        output.status
    );
}

/// The child: opens the store under the parent's descriptor limit, checks every key, writes
/// past a rotation and reopens.
#[test]
fn descriptor_limit_child() {
    let Some(dir) = std::env::var_os(FD_DIR_VAR) else { return };
    let keys: u32 = std::env::var("TYPED_KV_FD_KEYS").expect("key count").parse().expect("a number");
    let options = Options { sync: SyncMode::Never, ..quiet(4096) };
    let db = Db::open(&dir, options.clone()).unwrap_or_else(|e| panic!("child: open: {e}"));
    assert!(db.stats().segments >= MANY_SEGMENTS, "child: {} segments", db.stats().segments);
    assert_eq!(contents(&db), expected(0..keys), "child: contents");
    put_each(&db, keys..keys + 40);
    drop(db);
    let db = Db::open(&dir, options).unwrap_or_else(|e| panic!("child: reopen: {e}"));
    assert_eq!(contents(&db), expected(0..keys + 40), "child: contents after more writes");
    println!("TKV-OPENED");
}

// ---------------------------------------------------------------------------------------------
// Damage in the newest segment with durable batches after it.

/// Where `needle` first occurs in the file `path`.
fn find_in(path: &Path, needle: &[u8]) -> usize {
    let bytes = std::fs::read(path).expect("read");
    bytes.windows(needle.len()).position(|w| w == needle).expect("the bytes are in the file")
}

fn flip_bit(path: &Path, byte: usize, bit: u8) {
    let mut bytes = std::fs::read(path).expect("read for a flip");
    bytes[byte] ^= 1 << bit;
    std::fs::write(path, bytes).expect("write the flip");
}

fn remove_hints(dir: &Path) {
    for hint in names_starting(dir, "hint-") {
        std::fs::remove_file(hint).expect("remove a hint");
    }
}

#[test]
fn a_flipped_bit_before_durable_batches_of_the_newest_segment_is_corruption_not_a_torn_tail() {
    let dir = scratch();
    {
        let db = Db::open(dir.path(), quiet(64 << 20)).expect("open");
        put_each(&db, 0..1000);
    }
    let [segment] = segments(dir.path()).try_into().expect("one segment holds the store");
    let len = std::fs::metadata(&segment).expect("metadata").len();
    // A bit of the value of key 10, near the start of the segment.
    let key_at = find_in(&segment, &pair(10).0);
    flip_bit(&segment, key_at + pair(10).0.len() + 3, 2);
    remove_hints(dir.path());
    match Db::open(dir.path(), quiet(64 << 20)) {
        Err(typed_kv::engine::Error::Corrupt { path, offset, reason }) => {
            assert_eq!(path, segment, "the error names the file");
            let offset = offset as usize;
            assert!(
                offset < key_at && key_at - offset < 16,
                "offset {offset} is the record of key 10 ({key_at})"
            );
            assert!(reason.contains("not a torn write"), "{reason}");
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(db) => panic!(
            "the damage was taken for a torn tail: {:?}, {} of 1000 keys left",
            db.stats().recovery,
            contents(&db).len()
        ),
    }
    assert_eq!(std::fs::metadata(&segment).expect("metadata").len(), len, "the refused open cut nothing");

    let db = Db::open(dir.path(), Options { repair: true, ..quiet(64 << 20) }).expect("repair opens");
    let report = db.stats().recovery;
    assert_eq!(report.torn_tail_bytes, 0, "{report:?}");
    let [repaired] = &report.repaired[..] else { panic!("one repaired drop: {report:?}") };
    assert!(repaired.contains(&segment.display().to_string()), "{repaired}");
    assert_eq!(contents(&db), expected(0..10), "the batches before the damage are kept");
    assert!(db.verify().is_ok(), "{:?}", db.verify().problems);
    drop(db);
    let db = Db::open(dir.path(), quiet(64 << 20)).expect("reopens after the repair");
    assert_eq!(contents(&db), expected(0..10));
}

// ---------------------------------------------------------------------------------------------
// Missing, truncated and unlisted files.

/// A closed store of `keys` keys over at least three segments (the last one active), with
/// the hint its close wrote.
fn sealed_store(keys: u32) -> tempfile::TempDir {
    let dir = scratch();
    let db = Db::open(dir.path(), quiet(4096)).expect("open");
    put_each(&db, 0..keys);
    drop(db);
    assert!(segments(dir.path()).len() >= 3, "the store has sealed segments");
    assert_eq!(names_starting(dir.path(), "hint-").len(), 1, "the close wrote a hint");
    dir
}

/// Opens `dir` and expects `Error::Corrupt` or, for acknowledged bytes gone,
/// `Error::Missing`, naming `file`; returns its reason.
fn expect_corrupt(dir: &Path, file: &Path, what: &str) -> String {
    match Db::open(dir, quiet(4096)) {
        Err(typed_kv::engine::Error::Corrupt { path, reason, .. })
        | Err(typed_kv::engine::Error::Missing { path, reason, .. }) => {
            assert_eq!(path, file, "{what}: the error names the file ({reason})");
            reason
        }
        Err(e) => panic!("{what}: expected Corrupt naming {}, got {e}", file.display()),
        Ok(db) => panic!("{what}: opened anyway, {} keys, {:?}", db.stats().keys, db.stats().recovery),
    }
}

fn truncate(path: &Path, by: u64) {
    let file = std::fs::OpenOptions::new().write(true).open(path).expect("open");
    let len = file.metadata().expect("metadata").len();
    file.set_len(len - by).expect("truncate");
}

#[test]
fn a_missing_table_directory_is_an_error_not_an_empty_store() {
    let dir = sealed_store(200);
    let tables = dir.path().join("tables.tkv");
    std::fs::remove_file(&tables).expect("remove tables.tkv");
    let reason = expect_corrupt(dir.path(), &tables, "tables.tkv deleted");
    assert!(reason.contains("missing"), "{reason}");
}

#[test]
fn a_deleted_or_cut_newest_segment_is_an_error_even_with_a_hint() {
    for (what, damage) in [("deleted", None), ("cut by one byte", Some(1)), ("cut by 500 bytes", Some(500))] {
        let dir = sealed_store(200);
        let newest = segments(dir.path()).pop().expect("a segment");
        match damage {
            None => std::fs::remove_file(&newest).expect("remove"),
            Some(by) => truncate(&newest, by),
        }
        let reason = expect_corrupt(dir.path(), &newest, &format!("newest segment {what}"));
        assert!(reason.contains(if damage.is_none() { "missing" } else { "cut short" }), "{what}: {reason}");
    }
}

#[test]
fn a_deleted_cut_or_swapped_sealed_segment_is_an_error() {
    for what in ["deleted", "cut at a batch boundary", "cut by one byte", "swapped"] {
        let dir = sealed_store(200);
        remove_hints(dir.path());
        let all = segments(dir.path());
        let sealed = &all[1];
        match what {
            "deleted" => std::fs::remove_file(sealed).expect("remove"),
            "cut at a batch boundary" => {
                // Cut right after the first record of the segment: a whole batch ends there,
                // so only the manifest can tell.
                let bytes = std::fs::read(sealed).expect("read");
                let second = find_in_bytes(&bytes[64..], b"key-") + 64;
                let end = find_in_bytes(&bytes[second + 4..], b"key-") + second + 4;
                let record_start = (64..end)
                    .rev()
                    .find(|&s| {
                        typed_kv::engine::fuzzing::decode_record(&bytes, 0, s).is_ok_and(|r| r.is_some())
                    })
                    .expect("a record starts before the second key");
                let file = std::fs::OpenOptions::new().write(true).open(sealed).expect("open");
                file.set_len(record_start as u64).expect("truncate");
            }
            "cut by one byte" => truncate(sealed, 1),
            _ => {
                // Another sealed segment's bytes under this one's name.
                std::fs::copy(&all[0], sealed).expect("copy");
            }
        }
        let reason = expect_corrupt(dir.path(), sealed, &format!("sealed segment {what}"));
        eprintln!("sealed segment {what}: {reason}");
    }
}

fn find_in_bytes(bytes: &[u8], needle: &[u8]) -> usize {
    bytes.windows(needle.len()).position(|w| w == needle).expect("found")
}

#[test]
fn verify_reports_a_segment_deleted_or_cut_while_the_store_is_open() {
    let dir = scratch();
    let db = Db::open(dir.path(), quiet(4096)).expect("open");
    put_each(&db, 0..200);
    assert!(db.verify().is_ok(), "{:?}", db.verify().problems);
    let all = segments(dir.path());
    std::fs::remove_file(&all[0]).expect("remove");
    // A copy cut short, renamed over the original: the open mapping still reads the old one.
    let cut = all[1].with_extension("cut");
    std::fs::copy(&all[1], &cut).expect("copy");
    truncate(&cut, 10);
    std::fs::rename(&cut, &all[1]).expect("rename");
    let report = db.verify();
    let named: Vec<&Path> = report.problems.iter().map(|p| p.path.as_path()).collect();
    assert!(named.contains(&all[0].as_path()), "the missing segment is reported: {:?}", report.problems);
    assert!(named.contains(&all[1].as_path()), "the short segment is reported: {:?}", report.problems);
}

#[test]
fn a_store_without_a_manifest_is_migrated_and_then_held_to_it() {
    let dir = sealed_store(200);
    // Rewrite tables.tkv in format 1 (no segment list), as an older build wrote it.
    let tables = dir.path().join("tables.tkv");
    let (next_id, names, files) =
        typed_kv::engine::fuzzing::decode_table_dir(&std::fs::read(&tables).expect("read")).expect("decode");
    assert!(files.is_some(), "this build writes the segment list");
    std::fs::write(&tables, typed_kv::engine::fuzzing::encode_table_dir(next_id, names, None))
        .expect("write");
    let db = Db::open(dir.path(), quiet(4096)).expect("a format-1 store opens");
    assert_eq!(contents(&db), expected(0..200));
    drop(db);
    let (_, _, files) =
        typed_kv::engine::fuzzing::decode_table_dir(&std::fs::read(&tables).expect("read")).expect("decode");
    let (sealed, active) = files.expect("the open wrote the segment list");
    let ids: Vec<u32> = sealed.iter().map(|&(id, _)| id).chain([active]).collect();
    let on_disk: Vec<u32> = segments(dir.path())
        .iter()
        .map(|p| p.file_name().and_then(|n| n.to_str()).expect("name")[4..14].parse().expect("id"))
        .collect();
    assert_eq!(ids, on_disk, "the manifest lists every segment");
    let first = segments(dir.path()).remove(0);
    std::fs::remove_file(&first).expect("remove");
    expect_corrupt(dir.path(), &first, "a segment of a migrated store deleted");
}

#[test]
fn a_compaction_victim_left_behind_after_its_manifest_is_removed_on_open() {
    let dir = sealed_store(200);
    let victim = segments(dir.path()).remove(0);
    let bytes = std::fs::read(&victim).expect("read the victim");
    {
        let db = Db::open(dir.path(), quiet(4096)).expect("open");
        // Overwrite a key whose record lies in the victim: the stale copy must not come back.
        let t = db.table("t").expect("table t");
        db.write(&[Op::Put { table: &t, key: &pair(0).0, value: b"new", align: ValueAlign::Packed }])
            .expect("put");
        db.compact().expect("compact");
    }
    assert!(!victim.exists(), "compaction unlinked the victim");
    // What a crash between the manifest without the victim and its unlink leaves.
    std::fs::write(&victim, &bytes).expect("put the victim back");
    remove_hints(dir.path());
    let db = Db::open(dir.path(), quiet(4096)).expect("open with a leftover victim");
    assert!(!victim.exists(), "the unlisted leftover is removed");
    let mut want = expected(0..200);
    want.insert(pair(0).0, b"new".to_vec());
    assert_eq!(contents(&db), want);
}
