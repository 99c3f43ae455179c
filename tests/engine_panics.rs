//! Third-party engines on damaged files, and ingests from inside a snapshot.
//!
//! redb and sled panic on some damaged files instead of returning errors (see
//! `PanicFence` in `src/backends/mod.rs`). Each test here damages a closed store's engine
//! file in ways found to make the engine panic, reopens it and reads everything: every panic
//! must come back as a `StorageError` (`EnginePanicked`, then `Poisoned`), none may reach
//! the caller. A panic hook silences the engines' own panic messages (and only theirs) while
//! these tests run.
//!
//! The last test copies a table into another inside `with_stream` on every backend: it must
//! work, or be `Busy` at once on sled (whose writers wait for snapshots), never hang.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{mpsc, Once};
use std::time::Duration;

use common::{blobs_table, engine_dir, files_under};
use futures::executor::block_on;
use futures::StreamExt;
use typed_kv::{DatabaseBackend, StorageBuilder, StorageError};

const VALUE_SIZE: usize = 1000;

fn key(i: u64) -> Vec<u8> {
    i.to_be_bytes().to_vec()
}

/// Keeps panics raised in redb's or sled's sources off stderr; every other panic (a failing
/// assertion of a test) is printed as usual.
fn quiet_engine_panics() {
    static QUIET: Once = Once::new();
    QUIET.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let file = info.location().map(|l| l.file()).unwrap_or_default();
            if !(file.contains("/redb-") || file.contains("/sled-")) {
                default(info);
            }
        }));
    });
}

/// A closed store at `path` with `entries` values of [`VALUE_SIZE`] bytes in table `blobs`.
fn seed(backend: DatabaseBackend, path: &Path, entries: u64) {
    let storage = StorageBuilder::new(path).with_backend(backend).build().unwrap();
    let t = blobs_table(&storage, "blobs");
    // One durable commit each: on sled, that spreads the pages over several log segments.
    for i in 0..entries {
        t.put(&key(i), &vec![i as u8; VALUE_SIZE]).unwrap();
    }
}

/// How one damaged store answered.
#[derive(Default, Debug)]
struct Outcome {
    /// `EnginePanicked` errors seen.
    panics_contained: usize,
    /// Other errors seen (the engine noticed the damage itself).
    errors: usize,
}

/// Opens the store, reads every key and scans the table, and checks that a contained panic
/// poisons the store: the next call is `Poisoned`.
fn read_everything(backend: DatabaseBackend, path: &Path, entries: u64) -> Outcome {
    let mut outcome = Outcome::default();
    let mut note = |e: &StorageError| match e {
        StorageError::EnginePanicked { backend: b, action, message } => {
            assert_eq!(*b, backend);
            assert!(!action.is_empty() && !message.is_empty(), "{e}");
            assert!(e.to_string().contains("reopened"), "{e}");
            outcome.panics_contained += 1;
        }
        _ => outcome.errors += 1,
    };
    let storage = match StorageBuilder::new(path).with_backend(backend).build() {
        Ok(storage) => storage,
        Err(e) => {
            note(&e);
            return outcome;
        }
    };
    let t = match storage
        .new_table::<Vec<u8>, Vec<u8>>("blobs")
        .with_key_format(typed_kv::BytesFormat::new())
        .with_value_format(typed_kv::BytesFormat::new())
        .build()
    {
        Ok(t) => t,
        Err(e) => {
            note(&e);
            return outcome;
        }
    };
    for i in 0..entries {
        if let Err(e) = t.get(&key(i)) {
            let panicked = matches!(e, StorageError::EnginePanicked { .. });
            note(&e);
            if panicked {
                let again = t.get(&key(i));
                assert!(
                    matches!(again, Err(StorageError::Poisoned { backend: b, .. }) if b == backend),
                    "a read after a contained panic: {again:?}"
                );
                return outcome;
            }
        }
    }
    match t.iter() {
        Ok(iter) => {
            for entry in iter {
                if let Err(e) = entry {
                    note(&e);
                    break;
                }
            }
        }
        Err(e) => note(&e),
    }
    outcome
}

/// Copies the closed store `base` to `case`, damages `file` (relative to it) with `damage`,
/// and reads everything; a panic that reaches this function is returned as its message.
fn try_damage(
    backend: DatabaseBackend,
    base: &Path,
    case: &Path,
    file: &Path,
    entries: u64,
    damage: impl FnOnce(&mut Vec<u8>),
) -> Result<Outcome, String> {
    copy_tree(base, case);
    let target = case.join(file);
    let mut bytes = std::fs::read(&target).unwrap();
    damage(&mut bytes);
    std::fs::write(&target, &bytes).unwrap();
    let result = catch_unwind(AssertUnwindSafe(|| read_everything(backend, case, entries)));
    std::fs::remove_dir_all(case).unwrap();
    result.map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    })
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The engine's one data file in a seeded store (redb: `data.redb`; sled: `db`).
fn data_file(backend: DatabaseBackend, base: &Path, name: &str) -> std::path::PathBuf {
    let file = files_under(&engine_dir(backend, base))
        .into_iter()
        .find(|f| f.file_name().is_some_and(|n| n == name))
        .unwrap_or_else(|| panic!("no {name} in the {backend} store"));
    file.strip_prefix(base).unwrap().to_owned()
}

/// A damage to do to a file's bytes, and its description.
type Damage = (String, Box<dyn FnOnce(&mut Vec<u8>)>);

/// Runs every damage of `damages` on a copy of `base`; asserts that no panic escaped and
/// that the engine did panic (contained) on some of them, so that the test tests something.
fn assert_panics_contained(
    backend: DatabaseBackend,
    base: &Path,
    file: &Path,
    entries: u64,
    damages: Vec<Damage>,
) {
    let scratch = tempfile::tempdir().unwrap();
    let mut escaped = Vec::new();
    let mut contained = 0;
    let mut errors = 0;
    for (i, (what, damage)) in damages.into_iter().enumerate() {
        match try_damage(backend, base, &scratch.path().join(i.to_string()), file, entries, damage) {
            Ok(outcome) => {
                contained += outcome.panics_contained;
                errors += outcome.errors;
            }
            Err(message) => escaped.push(format!("{what}: {message}")),
        }
    }
    eprintln!("{backend}: {contained} panics contained, {errors} other errors");
    assert!(
        escaped.is_empty(),
        "{} panics reached the caller on {backend}:\n{}",
        escaped.len(),
        escaped.join("\n")
    );
    assert!(contained > 0, "no damage made {backend} panic: the test no longer tests the fence");
}

/// Zeroed 4 KiB pages and flipped bytes of redb's file: redb's read paths do not check
/// page checksums (cberner/redb#1334) and panic on the bytes (`btree.rs:1104`,
/// `btree_base.rs:35`, `page_manager.rs:1760`, `types.rs:109` …).
#[cfg(feature = "redb")]
#[test]
fn redb_panics_on_damaged_pages_are_errors() {
    quiet_engine_panics();
    let backend = DatabaseBackend::Redb;
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    seed(backend, &base, 300);
    let file = data_file(backend, &base, "data.redb");
    let len = std::fs::metadata(base.join(&file)).unwrap().len() as usize;
    let mut damages: Vec<Damage> = Vec::new();
    for page in (0..len).step_by(4096) {
        damages.push((
            format!("page at {page} zeroed"),
            Box::new(move |bytes: &mut Vec<u8>| bytes[page..(page + 4096).min(len)].fill(0)),
        ));
    }
    for offset in (0..len.min(32 * 1024)).step_by(61) {
        damages.push((
            format!("byte {offset} flipped"),
            Box::new(move |bytes: &mut Vec<u8>| bytes[offset] ^= 0xff),
        ));
    }
    assert_panics_contained(backend, &base, &file, 300, damages);
}

/// Flipped bytes of sled's log, in a store of several segments: sled recovers up to the
/// damage and then panics writing its snapshot of pages it never saw ("tried to serialize
/// Uninitialized", `serialization.rs:662`, spacejam/sled#1387).
#[cfg(feature = "sled")]
#[test]
fn sled_panics_on_a_damaged_log_are_errors() {
    quiet_engine_panics();
    let backend = DatabaseBackend::Sled;
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    let entries = 3000;
    seed(backend, &base, entries);
    let file = data_file(backend, &base, "db");
    let len = std::fs::metadata(base.join(&file)).unwrap().len() as usize;
    let mut damages: Vec<Damage> = Vec::new();
    for offset in (0..len).step_by(len / 8) {
        damages.push((
            format!("byte {offset} flipped"),
            Box::new(move |bytes: &mut Vec<u8>| bytes[offset] ^= 0xff),
        ));
    }
    assert_panics_contained(backend, &base, &file, entries, damages);
}

/// The natural table copy, `a.with_stream(|s| block_on(b.put_stream(s.map(..))))`, on every
/// backend: it copies, or (sled) is `Busy` at once; it never hangs. A watchdog on this thread
/// waits for the copy's thread with a timeout.
#[test]
fn put_stream_inside_with_stream_never_hangs() {
    for backend in DatabaseBackend::compiled() {
        let dir = tempfile::tempdir().unwrap();
        let storage = StorageBuilder::new(dir.path()).with_backend(backend).build().unwrap();
        let a = blobs_table(&storage, "a");
        let b = blobs_table(&storage, "b");
        a.put_all((0..100u64).map(|i| (key(i), vec![i as u8; 10]))).unwrap();
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            let copied = a
                .with_stream(|s| block_on(b.put_stream(s.map(|(k, guard)| (k, guard.raw_bytes().to_vec())))));
            let _ = done.send((copied, b));
        });
        let (copied, b) = finished
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{backend}: put_stream inside with_stream hung"));
        match backend {
            DatabaseBackend::Sled => match copied {
                Ok(Err(e @ StorageError::Busy { .. })) => {
                    let message = e.to_string();
                    assert!(message.contains("snapshot") && message.contains("sled"), "{message}");
                    assert_eq!(b.len().unwrap(), 0, "nothing is written");
                }
                other => panic!("{backend}: expected Busy, got {other:?}"),
            },
            _ => {
                let report = copied.unwrap().unwrap();
                assert_eq!(report.records, 100, "{backend}");
                assert_eq!(b.len().unwrap(), 100, "{backend}");
                assert_eq!(b.get(&key(42)).unwrap().unwrap().raw_bytes(), &[42u8; 10][..], "{backend}");
            }
        }
    }
}
