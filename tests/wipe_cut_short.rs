//! A wipe cut short (`Recreate::Always`, or `OnValidationFail` rebuilding a store) must never
//! leave part of a store that opens as a whole one: the marker says "being wiped" before the
//! first file goes, and every later open finishes the wipe.
//!
//! - The state a cut-short wipe leaves (the "being wiped" marker, some engine files gone) is
//!   made by hand, on every backend, and opened with each policy and with `must_exist`.
//! - A child process (this binary, running only [`wipe_child`]) reopens its store with
//!   `Recreate::Always` again and again, each time writing one generation of chunks, and the
//!   parent kills it with SIGKILL at random moments around the wipe. After every kill the
//!   store must hold a prefix of one generation's chunks, or nothing: never keys of two
//!   generations, a hole, or a store that does not open.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{engine_dir, files_under, open_with, Reaped};
use typed_kv::{
    BytesFormat, DatabaseBackend, OrderedFormat, Recreate, Storage, StorageBuilder, StorageError, Table,
};

type Chunks = Table<u32, Vec<u8>, OrderedFormat, BytesFormat>;

fn chunks(storage: &Storage) -> typed_kv::Result<Chunks> {
    storage
        .new_table::<u32, Vec<u8>>("chunks")
        .with_key_format(OrderedFormat::new())
        .with_value_format(BytesFormat::new())
        .build()
}

/// The marker a wipe writes before deleting anything (the format of `docs/design.md`'s
/// store layout; written by hand here to make the state a cut-short wipe leaves).
const WIPING_MARKER: &str = "typed-kv store being wiped\nlayout 1\n";

/// A store with data, then the state of its wipe cut short: the "being wiped" marker and
/// half of the engine's files gone.
fn half_wiped(backend: DatabaseBackend, path: &Path) {
    let storage = open_with(backend, path, Recreate::IfMissing, 0).unwrap();
    let table = chunks(&storage).unwrap();
    for key in 0..200u32 {
        table.put(&key, &vec![7; 300]).unwrap();
    }
    drop(table);
    drop(storage);
    std::fs::write(path.join("typed-kv.meta"), WIPING_MARKER).unwrap();
    let files = files_under(&engine_dir(backend, path));
    assert!(!files.is_empty(), "{backend}: the store has engine files");
    for file in files.iter().step_by(2) {
        std::fs::remove_file(file).unwrap();
    }
}

fn a_cut_short_wipe_is_finished_by_the_next_open(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");

    // `must_exist` finds no store there, and says why; nothing is touched.
    half_wiped(backend, &path);
    let left = files_under(&path);
    let err = StorageBuilder::new(&path).must_exist().build().unwrap_err();
    assert!(
        matches!(&err, StorageError::StoreNotFound { reason, .. } if reason.contains("wipe")),
        "{backend}: {err}"
    );
    assert_eq!(files_under(&path), left, "{backend}: must_exist changed the directory");

    // Every policy, even the one that never deletes anything, finishes the wipe and starts
    // empty: what the wipe left is no store, and the wipe was asked for.
    for recreate in
        [Recreate::IfMissing, Recreate::OnVersionBump, Recreate::OnValidationFail, Recreate::Always]
    {
        half_wiped(backend, &path);
        let storage = open_with(backend, &path, recreate, 0)
            .unwrap_or_else(|e| panic!("{backend}, {recreate:?}: open after a cut-short wipe: {e}"));
        assert_eq!(storage.backend(), backend);
        let table = chunks(&storage).unwrap();
        assert!(table.get(&0).unwrap().is_none(), "{backend}, {recreate:?}: old data survived the wipe");
        table.put(&1, &vec![1; 10]).unwrap();
        drop(table);
        drop(storage);
        // And it is a store again: the plain marker is back.
        let reopened = StorageBuilder::new(&path).must_exist().build().unwrap();
        assert_eq!(chunks(&reopened).unwrap().get(&1).unwrap().unwrap()[..], [1; 10]);
    }
}

fn a_cut_short_wipe_may_change_the_backend(backend: DatabaseBackend) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    half_wiped(backend, &path);
    // Being wiped, the store has no backend to mismatch: any backend may take the path.
    let other = DatabaseBackend::Native;
    let storage = open_with(other, &path, Recreate::IfMissing, 0).unwrap();
    assert_eq!(storage.backend(), other);
    assert!(chunks(&storage).unwrap().get(&0).unwrap().is_none());
    if other != backend {
        assert!(!engine_dir(backend, &path).exists(), "{backend}: the old engine's directory is left");
    }
}

// --- SIGKILL around `Recreate::Always` -------------------------------------------------------

const CHILD_DIR_VAR: &str = "TYPED_KV_WIPE_CHILD_DIR";
const CHILD_BACKEND_VAR: &str = "TYPED_KV_WIPE_CHILD_BACKEND";
/// Chunks per generation: each one commit, so a store holds many of them.
const CHUNKS: u32 = 24;
/// Keys per chunk.
const CHUNK_KEYS: u32 = 16;
/// Bytes per value.
const VALUE_LEN: usize = 1024;

/// The value of `key` in generation `generation`: the generation, the key, then a payload.
fn value(generation: u64, key: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(VALUE_LEN);
    v.extend_from_slice(&generation.to_le_bytes());
    v.extend_from_slice(&key.to_le_bytes());
    v.resize(VALUE_LEN, (generation as u8) ^ (key as u8));
    v
}

fn child_storage(backend: DatabaseBackend, dir: &Path, recreate: Recreate) -> typed_kv::Result<Storage> {
    let mut builder = StorageBuilder::new(dir).with_backend(backend).with_recreate(recreate);
    #[cfg(feature = "native")]
    if backend == DatabaseBackend::Native {
        // Small segments: a store of many files, whose wipe takes long enough to be cut.
        builder = builder.with_native_options(typed_kv::engine::Options {
            segment_size: 32 << 10,
            ..typed_kv::engine::Options::default()
        });
    }
    builder.build()
}

/// The child: reopens the store with `Recreate::Always` and writes a generation of chunks,
/// forever. Prints `TKV-WIPE <g>` before each open.
#[test]
fn wipe_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_VAR) else { return };
    let backend = std::env::var(CHILD_BACKEND_VAR).ok().and_then(|b| DatabaseBackend::from_name(&b));
    let backend = backend.expect("child: backend");
    let mut out = std::io::stdout().lock();
    for generation in 1u64.. {
        writeln!(out, "TKV-WIPE {generation}").expect("child: stdout");
        out.flush().expect("child: stdout");
        let storage = child_storage(backend, Path::new(&dir), Recreate::Always).expect("child: open");
        let table = chunks(&storage).expect("child: table");
        for chunk in 0..CHUNKS {
            let keys = chunk * CHUNK_KEYS..(chunk + 1) * CHUNK_KEYS;
            table.put_all(keys.map(|k| (k, value(generation, k)))).expect("child: put_all");
        }
    }
}

/// What a store may hold after a kill: nothing, or chunks `0..n` of one generation.
fn check_store(backend: DatabaseBackend, dir: &Path, iteration: u32) -> Option<(u64, u32)> {
    let storage = child_storage(backend, dir, Recreate::IfMissing)
        .unwrap_or_else(|e| panic!("{backend}, kill {iteration}: reopen failed: {e}"));
    let table = chunks(&storage).unwrap_or_else(|e| panic!("{backend}, kill {iteration}: table: {e}"));
    let mut generation = None;
    let mut count = 0u32;
    for entry in table.iter().unwrap() {
        let (key, guard) = entry.unwrap_or_else(|e| panic!("{backend}, kill {iteration}: entry: {e}"));
        let g = u64::from_le_bytes(guard[..8].try_into().unwrap());
        assert_eq!(key, count, "{backend}, kill {iteration}: a hole before key {key}");
        assert_eq!(
            *generation.get_or_insert(g),
            g,
            "{backend}, kill {iteration}: key {key} of another generation"
        );
        assert_eq!(&guard[..], value(g, key).as_slice(), "{backend}, kill {iteration}: key {key} damaged");
        count += 1;
    }
    assert_eq!(count % CHUNK_KEYS, 0, "{backend}, kill {iteration}: part of a chunk ({count} keys)");
    generation.map(|g| (g, count / CHUNK_KEYS))
}

fn a_kill_around_recreate_always_leaves_one_generations_prefix_or_nothing(backend: DatabaseBackend) {
    let kills: u32 = std::env::var("TYPED_KV_WIPE_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(30);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("db");
    let log = work.path().join("child.log");
    let mut rng = fastrand::Rng::with_seed(0x3195 ^ backend.name().len() as u64);
    let (mut emptied, mut kept, mut mid_wipe) = (0, 0, 0);
    for iteration in 0..kills {
        let exe = std::env::current_exe().unwrap();
        let mut child = Reaped(
            Command::new(exe)
                .args(["--exact", "wipe_child", "--nocapture", "--test-threads=1"])
                .env(CHILD_DIR_VAR, &dir)
                .env(CHILD_BACKEND_VAR, backend.name())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
        // Kill once the child starts its second wipe, when there is a whole store to wipe.
        let mut line = String::new();
        loop {
            line.clear();
            if stdout.read_line(&mut line).unwrap() == 0 {
                let status = child.0.wait().unwrap();
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("{backend}, kill {iteration}: the child exited ({status}): {log}");
            }
            if line.trim() == "TKV-WIPE 2" {
                break;
            }
        }
        // The randomness of the kill's moment, not a wait for anything: at once, or within
        // the few milliseconds a wipe of this store takes.
        let micros = rng.u64(0..4_000);
        if micros >= 500 {
            std::thread::sleep(Duration::from_micros(micros));
        }
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        let marker = std::fs::read_to_string(dir.join("typed-kv.meta")).unwrap_or_default();
        mid_wipe += u32::from(marker == WIPING_MARKER);
        match check_store(backend, &dir, iteration) {
            None => emptied += 1,
            Some(_) => kept += 1,
        }
    }
    println!(
        "wipe kills | {backend} | {kills} kills, {mid_wipe} in the middle of a wipe | {emptied} left an empty \
         store | {kept} a generation's prefix"
    );
}

per_backend!(
    a_cut_short_wipe_is_finished_by_the_next_open,
    a_cut_short_wipe_may_change_the_backend,
    a_kill_around_recreate_always_leaves_one_generations_prefix_or_nothing
);
