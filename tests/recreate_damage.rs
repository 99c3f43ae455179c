//! `Recreate` against what is not damage: only bytes proven damaged may lead to a wipe.
//!
//! A store that cannot be opened for a passing reason (too few file descriptors, a file it
//! may not read, a file turned into a directory), or whose engine files were deleted, is an
//! error under every policy but `Always`, and keeps every file. Cases that lower the
//! descriptor limit run in a child process (this test binary again, under `ulimit -n`), so
//! the limit never touches the other tests.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::open_with;
use typed_kv::{DatabaseBackend, OrderedFormat, PostcardFormat, Recreate, Storage, StorageBuilder, Table};

type Counts = Table<u32, u64, OrderedFormat, PostcardFormat>;

/// Keys every seeded store holds.
const KEYS: u32 = 200;

/// Set in a child process to the store it opens.
const CHILD_STORE: &str = "TYPED_KV_RECREATE_DAMAGE_STORE";

/// What a child prints when its open was refused, and when it opened.
const REFUSED: &str = "open refused: ";
const OPENED: &str = "opened with keys: ";

fn counts(storage: &Storage) -> typed_kv::Result<Counts> {
    storage
        .new_table::<u32, u64>("counts")
        .with_key_format(OrderedFormat::new())
        .with_value_format(PostcardFormat::new())
        .build()
}

/// Opens `path` on `backend` with `recreate`; native stores use small segments, so that a
/// seeded store has many segment files.
fn open(backend: DatabaseBackend, path: &Path, recreate: Recreate) -> typed_kv::Result<Storage> {
    let builder = StorageBuilder::new(path).with_backend(backend).with_recreate(recreate).with_version(1);
    #[cfg(feature = "native")]
    let builder = builder.with_native_options(typed_kv::engine::Options {
        segment_size: 64 << 10,
        compaction_threshold: 0.0,
        ..Default::default()
    });
    builder.build()
}

/// A store of `KEYS` entries of 16 KiB each (on the native engine: about 50 segments).
fn seed(backend: DatabaseBackend, path: &Path) {
    let storage = open(backend, path, Recreate::IfMissing).unwrap();
    let t = storage
        .new_table::<u32, Vec<u8>>("blobs")
        .with_key_format(OrderedFormat::new())
        .with_value_format(typed_kv::BytesFormat::new())
        .build()
        .unwrap();
    for k in 0..KEYS {
        t.put(&k, &vec![k as u8; 16 << 10]).unwrap();
    }
    let c = counts(&storage).unwrap();
    c.put_all((0..KEYS).map(|k| (k, u64::from(k) * 10))).unwrap();
}

/// Every file of the store (sled may write to its files while an open fails; none may go).
fn inventory(path: &Path) -> Vec<PathBuf> {
    common::files_under(path).into_iter().filter(|p| !p.ends_with("typed-kv.lock")).collect()
}

/// Every file of `before` is still there.
fn assert_kept(path: &Path, before: &[PathBuf]) {
    let after = inventory(path);
    let gone: Vec<&PathBuf> = before.iter().filter(|p| !after.contains(p)).collect();
    assert!(gone.is_empty(), "every file is kept; gone: {gone:?}");
}

/// The store still opens (plainly) with all its entries.
fn assert_intact(backend: DatabaseBackend, path: &Path) {
    let storage = open(backend, path, Recreate::IfMissing).expect("the store opens again");
    let c = counts(&storage).unwrap();
    assert_eq!(c.len().unwrap(), u64::from(KEYS), "every entry is still there");
    assert_eq!(*c.get(&7).unwrap().unwrap(), 70);
}

/// The open a child makes: `OnValidationFail`, reporting on stdout what happened.
fn child_open(backend: DatabaseBackend, store: &str) {
    match open(backend, Path::new(store), Recreate::OnValidationFail) {
        Err(e) => println!("{REFUSED}{e}"),
        Ok(storage) => {
            let keys =
                counts(&storage).and_then(|c| c.len()).map_or_else(|e| e.to_string(), |n| n.to_string());
            println!("{OPENED}{keys}");
        }
    }
}

/// Runs test `test` of this binary again in a child with at most `fds` open files, opening
/// `store`; what the child printed.
fn run_child_with_fd_limit(test: &str, fds: u32, store: &Path) -> String {
    let exe = std::env::current_exe().expect("test binary path");
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {fds} && exec \"$0\" \"$@\""))
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_STORE, store)
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the child failed: {}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Under a low descriptor limit, `OnValidationFail` either opens the whole store (native maps
/// its sealed segments and keeps one file open, so it needs few descriptors) or returns the
/// error and keeps every file: a resource limit proves nothing about the bytes.
fn low_fd_limit_is_an_error_not_a_wipe(backend: DatabaseBackend, test: &str, fds: u32) {
    if let Ok(store) = std::env::var(CHILD_STORE) {
        return child_open(backend, &store);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    seed(backend, &path);
    if backend == DatabaseBackend::Native {
        let segments = common::files_under(&path.join("native"))
            .iter()
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("seg-")))
            .count();
        assert!(segments as u32 > fds, "{segments} segments, more than the limit of {fds} descriptors");
    }
    let before = inventory(&path);
    let printed = run_child_with_fd_limit(test, fds, &path);
    let whole = format!("{OPENED}{KEYS}\n");
    assert!(
        printed.contains(REFUSED) || printed.contains(&whole),
        "with {fds} file descriptors the open must fail or find all {KEYS} keys; the child printed: {printed}"
    );
    if printed.contains(REFUSED) {
        assert!(printed.contains("Too many open files"), "the error says why; the child printed: {printed}");
    }
    assert_kept(&path, &before);
    assert_intact(backend, &path);
}

#[cfg(feature = "native")]
#[test]
fn native_low_fd_limit_is_an_error_not_a_wipe() {
    low_fd_limit_is_an_error_not_a_wipe(
        DatabaseBackend::Native,
        "native_low_fd_limit_is_an_error_not_a_wipe",
        24,
    );
}

#[cfg(feature = "redb")]
#[test]
fn redb_low_fd_limit_is_an_error_not_a_wipe() {
    low_fd_limit_is_an_error_not_a_wipe(DatabaseBackend::Redb, "redb_low_fd_limit_is_an_error_not_a_wipe", 4);
}

#[cfg(feature = "sled")]
#[test]
fn sled_low_fd_limit_is_an_error_not_a_wipe() {
    low_fd_limit_is_an_error_not_a_wipe(DatabaseBackend::Sled, "sled_low_fd_limit_is_an_error_not_a_wipe", 6);
}

/// An engine file that cannot be read is an error under `OnValidationFail`, not a wipe:
/// `make_unreadable` turns the file at its path into something the engine cannot open.
fn unreadable_file_is_an_error_not_a_wipe(backend: DatabaseBackend, make_unreadable: fn(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    seed(backend, &path);
    let victim = data_file(backend, &path);
    let saved = std::fs::read(&victim).unwrap();
    make_unreadable(&victim);
    let before = inventory(&path);
    let err = open(backend, &path, Recreate::OnValidationFail)
        .map(|_| ())
        .expect_err("an unreadable file must fail");
    assert!(!err.proves_damage(), "an unreadable file proves no damage: {err}");
    assert_kept(&path, &before);
    if victim.is_dir() {
        std::fs::remove_dir(&victim).unwrap();
    } else {
        set_mode(&victim, 0o644);
    }
    std::fs::write(&victim, saved).unwrap();
    assert_intact(backend, &path);
}

/// The engine file a test makes unreadable: native's first segment, redb's database, sled's
/// data file, RocksDB's `CURRENT` (which names its manifest).
fn data_file(backend: DatabaseBackend, store: &Path) -> PathBuf {
    let engine = common::engine_dir(backend, store);
    match backend {
        DatabaseBackend::Native => common::files_under(&engine)
            .into_iter()
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("seg-")))
            .expect("a segment"),
        DatabaseBackend::Redb => engine.join("data.redb"),
        DatabaseBackend::Sled => engine.join("db"),
        _ => engine.join("CURRENT"),
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Whether this process can read a file of mode 000 (root can): then modes prove nothing.
fn modes_are_ignored() -> bool {
    let probe = tempfile::NamedTempFile::new().unwrap();
    set_mode(probe.path(), 0o000);
    std::fs::read(probe.path()).is_ok()
}

fn mode_000_file_is_an_error_not_a_wipe(backend: DatabaseBackend) {
    if modes_are_ignored() {
        eprintln!("skipped: this process reads files of mode 000 (it runs as root)");
        return;
    }
    unreadable_file_is_an_error_not_a_wipe(backend, |p| set_mode(p, 0o000));
}

/// Root-proof stand-in for an unreadable file: a directory where the file was.
fn directory_in_place_of_a_file_is_an_error_not_a_wipe(backend: DatabaseBackend) {
    unreadable_file_is_an_error_not_a_wipe(backend, |p| {
        std::fs::remove_file(p).unwrap();
        std::fs::create_dir(p).unwrap();
    });
}

/// A deleted engine data file is an error naming it under every policy but `Always`, never a
/// new empty store; `Always` starts afresh as asked.
fn deleted_engine_file_is_an_error(backend: DatabaseBackend) {
    for recreate in [Recreate::IfMissing, Recreate::OnVersionBump, Recreate::OnValidationFail] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        seed(backend, &path);
        let victim = match backend {
            DatabaseBackend::Native => common::engine_dir(backend, &path).join("tables.tkv"),
            _ => data_file(backend, &path),
        };
        std::fs::remove_file(&victim).unwrap();
        let err = open(backend, &path, recreate).map(|_| ()).expect_err("a deleted engine file must fail");
        let name = victim.file_name().unwrap().to_string_lossy().into_owned();
        assert!(err.to_string().contains(&name), "{recreate:?}: the error names {name}: {err}");
        assert!(!victim.exists(), "{recreate:?}: no new {name} was made");
        // The whole engine directory gone: the same.
        std::fs::remove_dir_all(common::engine_dir(backend, &path)).unwrap();
        let err = open(backend, &path, recreate).map(|_| ()).expect_err("a deleted engine must fail");
        assert!(err.to_string().contains(backend.name()), "{recreate:?}: the error names the engine: {err}");
        let storage = open(backend, &path, Recreate::Always).unwrap();
        assert!(storage.table_names().unwrap().is_empty());
    }
}

/// A store whose marker predates the "engine created" line opens as before, and gains the line.
fn marker_without_engine_created_opens_as_before(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    seed(backend, &path);
    let marker = path.join("typed-kv.meta");
    let text = std::fs::read_to_string(&marker).unwrap();
    assert!(text.lines().any(|l| l == "engine created"), "the marker says the engine was created: {text}");
    let old: String = text.lines().filter(|l| *l != "engine created").map(|l| format!("{l}\n")).collect();
    std::fs::write(&marker, old).unwrap();
    assert_intact(backend, &path);
    assert!(std::fs::read_to_string(&marker).unwrap().lines().any(|l| l == "engine created"));
}

/// A table with entries but no stamp (its stamp lost) is an error naming it and its entry
/// count under every policy that keeps the store, never a new table cleared of them.
fn entries_without_stamp_are_an_error_not_cleared(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(open(backend, &path, Recreate::IfMissing).unwrap());
    for key in [b"a", b"b", b"c"] {
        common::raw_put(backend, &path, "counts", key, b"raw");
    }
    for recreate in [Recreate::IfMissing, Recreate::OnVersionBump, Recreate::OnValidationFail] {
        let storage = open(backend, &path, recreate).unwrap();
        let err = counts(&storage).map(|_| ()).expect_err("entries without a stamp must fail");
        assert_eq!(
            err.to_string(),
            "table `counts` holds 3 entries but has no stamp in the catalog: its layout is unknown",
            "{recreate:?}"
        );
        assert!(!err.proves_damage(), "{recreate:?}: never answered by a wipe");
    }
}

/// Proven damage still lets `OnValidationFail` start over (the one case that may wipe).
fn garbage_engine_files_are_wiped_under_on_validation_fail(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    seed(backend, &path);
    let victim = data_file(backend, &path);
    std::fs::write(&victim, vec![0xA5u8; 8192]).unwrap();
    if let Err(e) = open_with(backend, &path, Recreate::IfMissing, 1) {
        assert!(e.proves_damage(), "garbage is damage: {e}");
    }
    let storage = open(backend, &path, Recreate::OnValidationFail).unwrap();
    assert!(counts(&storage).unwrap().is_empty().unwrap());
}

per_backend!(
    mode_000_file_is_an_error_not_a_wipe,
    directory_in_place_of_a_file_is_an_error_not_a_wipe,
    deleted_engine_file_is_an_error,
    marker_without_engine_created_opens_as_before,
    garbage_engine_files_are_wiped_under_on_validation_fail,
    entries_without_stamp_are_an_error_not_cleared,
);
