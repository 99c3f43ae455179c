//! File-set damage on every backend, the acceptance test of "never silent".
//!
//! A closed store (three tables, overwrites, deletes, a compaction, durable commits; on
//! native, small segments so that there are several) has each of its files in turn
//! deleted, truncated, swapped with another file of its kind, flipped in one byte or made
//! unreadable (chmod 000), and is then opened under each [`Recreate`] mode, its tables built
//! and read fully (iteration and a point read of every key) and verified. Each case must end
//! in one of:
//!
//! - an error from some step — and then no file of the store deleted or shrunk, unless the
//!   mode is `OnValidationFail` and the damage proves corruption (a flipped byte or two
//!   swapped files: bytes that are there but wrong);
//! - exactly the acknowledged data: every key, every value, no extra key;
//! - under `OnValidationFail` with proven corruption only: tables that are each either
//!   exactly the acknowledged data or empty (the wipe that mode asks for).
//!
//! `Recreate::Always` must open an empty store that keeps what is written next. The intact
//! store is also opened in a child process under low descriptor limits and address-space
//! limits (`ulimit -n`, `ulimit -v`) with each mode: an error or all the data, never a wipe.
//!
//! One `#[test]` per backend and damage class; a failure lists every failing case with
//! backend, file, damage, mode and what happened. `TYPED_KV_DAMAGE_FULL=1` widens the suite
//! (a larger store, flips at every eighth of each file, more limits);
//! `TYPED_KV_DAMAGE_VERBOSE=1` prints every case's outcome.

mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{diff_tables, files_under, try_blobs_table, try_records_table, Record, Tables};
use typed_kv::{
    DatabaseBackend, KeyFormat, OrderedFormat, PostcardFormat, Recreate, Storage, StorageBuilder, Table,
    ValueFormat,
};

/// The schema version every table is stamped with.
const VERSION: u64 = 1;
const RECORDS: &str = "records";
const BLOBS: &str = "blobs";
const COUNTS: &str = "counts";

/// Every mode a damaged store is opened with.
const MODES: [Recreate; 4] =
    [Recreate::IfMissing, Recreate::OnVersionBump, Recreate::OnValidationFail, Recreate::Always];

/// The modes a store under a resource limit is opened with (`Always` wipes by design).
const KEEPING_MODES: [Recreate; 3] =
    [Recreate::IfMissing, Recreate::OnVersionBump, Recreate::OnValidationFail];

fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v != "0")
}

fn full() -> bool {
    env_flag("TYPED_KV_DAMAGE_FULL")
}

fn verbose() -> bool {
    env_flag("TYPED_KV_DAMAGE_VERBOSE")
}

/// Keys first written to each table.
fn keys_per_table() -> u64 {
    if full() {
        600
    } else {
        120
    }
}

fn builder(backend: DatabaseBackend, path: &Path, recreate: Recreate) -> StorageBuilder {
    let builder =
        StorageBuilder::new(path).with_backend(backend).with_recreate(recreate).with_version(VERSION);
    // Small segments, so that the store has several; no background compaction, so that
    // every run makes the same files.
    #[cfg(feature = "native")]
    let builder = builder.with_native_options(typed_kv::engine::Options {
        segment_size: 4 << 10,
        compaction_threshold: 0.0,
        ..Default::default()
    });
    builder
}

// --- The store and its model --------------------------------------------------------------

type Records = Table<u64, Record, OrderedFormat, typed_kv::RkyvFormat>;
type Blobs = Table<Vec<u8>, Vec<u8>, typed_kv::BytesFormat, typed_kv::BytesFormat>;
type Counts = Table<u32, u64, OrderedFormat, PostcardFormat>;

struct StoreTables {
    records: Records,
    blobs: Blobs,
    counts: Counts,
}

fn build_tables(storage: &Storage) -> typed_kv::Result<StoreTables> {
    Ok(StoreTables {
        records: try_records_table(storage, RECORDS)?,
        blobs: try_blobs_table(storage, BLOBS)?,
        counts: storage
            .new_table::<u32, u64>(COUNTS)
            .with_key_format(OrderedFormat::new())
            .with_value_format(PostcardFormat::new())
            .build()?,
    })
}

// Each table's entries in the model as readable bytes, so that a difference prints clearly.
fn record_key(k: &u64) -> Vec<u8> {
    format!("{k:06}").into_bytes()
}
fn parse_record_key(k: &[u8]) -> u64 {
    std::str::from_utf8(k).unwrap().parse().unwrap()
}
fn record_value(r: &Record) -> Vec<u8> {
    format!("{r:?}").into_bytes()
}
fn count_key(k: &u32) -> Vec<u8> {
    format!("{k:06}").into_bytes()
}
fn parse_count_key(k: &[u8]) -> u32 {
    std::str::from_utf8(k).unwrap().parse().unwrap()
}
fn count_value(v: &u64) -> Vec<u8> {
    v.to_string().into_bytes()
}
fn blob_key(i: u64) -> Vec<u8> {
    format!("blob-{i:06}").into_bytes()
}
fn blob_value(i: u64, round: u64) -> Vec<u8> {
    (0..16 + (i * 7 + round) % 90).map(|b| (b + i + round * 31) as u8).collect()
}

/// The tables as written, each kept in step with the acknowledged writes.
struct Writer {
    tables: StoreTables,
    model: Tables,
}

impl Writer {
    fn put_record(&mut self, k: u64, r: Record) {
        self.tables.records.put(&k, &r).unwrap();
        self.model.get_mut(RECORDS).unwrap().insert(record_key(&k), record_value(&r));
    }
    fn delete_record(&mut self, k: u64) {
        self.tables.records.delete(&k).unwrap();
        self.model.get_mut(RECORDS).unwrap().remove(&record_key(&k));
    }
    fn put_blob(&mut self, i: u64, round: u64) {
        self.tables.blobs.put(&blob_key(i), &blob_value(i, round)).unwrap();
        self.model.get_mut(BLOBS).unwrap().insert(blob_key(i), blob_value(i, round));
    }
    fn delete_blob(&mut self, i: u64) {
        self.tables.blobs.delete(&blob_key(i)).unwrap();
        self.model.get_mut(BLOBS).unwrap().remove(&blob_key(i));
    }
    fn put_count(&mut self, k: u32, v: u64) {
        self.tables.counts.put(&k, &v).unwrap();
        self.model.get_mut(COUNTS).unwrap().insert(count_key(&k), count_value(&v));
    }
    fn delete_count(&mut self, k: u32) {
        self.tables.counts.delete(&k).unwrap();
        self.model.get_mut(COUNTS).unwrap().remove(&count_key(&k));
    }
}

/// Makes the store at `path` with durable commits only, closes it, and returns exactly what
/// it acknowledged.
fn write_store(backend: DatabaseBackend, path: &Path) -> Tables {
    let storage = builder(backend, path, Recreate::IfMissing).build().unwrap();
    let model = [RECORDS, BLOBS, COUNTS].into_iter().map(|t| (t.to_owned(), BTreeMap::new())).collect();
    let mut w = Writer { tables: build_tables(&storage).unwrap(), model };
    let n = keys_per_table();
    // Batches of 20, single puts, one batch of a whole table.
    for chunk in (0..n).collect::<Vec<_>>().chunks(20) {
        w.tables.records.put_all(chunk.iter().map(|&k| (k, Record::new(k)))).unwrap();
        for &k in chunk {
            w.model.get_mut(RECORDS).unwrap().insert(record_key(&k), record_value(&Record::new(k)));
        }
    }
    for i in 0..n {
        w.put_blob(i, 0);
    }
    let counts: Vec<(u32, u64)> = (0..n as u32).map(|k| (k, u64::from(k))).collect();
    w.tables.counts.put_all(counts.iter().map(|(k, v)| (k, v))).unwrap();
    for (k, v) in &counts {
        w.model.get_mut(COUNTS).unwrap().insert(count_key(k), count_value(v));
    }
    // Overwrites and deletes, then a compaction: live records rewritten, old files unlinked.
    for k in (0..n).step_by(3) {
        w.put_record(k, Record::new(k + 1000));
    }
    for i in (0..n).step_by(7) {
        w.delete_blob(i);
    }
    for k in (0..n as u32).step_by(5) {
        w.put_count(k, u64::from(k) * 10);
    }
    storage.compact().unwrap();
    // Small commits after it, so that the newest files hold many records, and one batch
    // across the three tables.
    for k in (0..n).step_by(11) {
        w.delete_record(k);
    }
    for k in n..n + n / 4 {
        w.put_record(k, Record::new(k));
    }
    for i in (0..n).step_by(4) {
        w.put_blob(i, 1);
    }
    for k in (0..n as u32).step_by(9) {
        w.delete_count(k);
    }
    let mut batch = storage.batch();
    batch.put(&w.tables.records, &(2 * n), &Record::new(2 * n)).unwrap();
    batch.delete(&w.tables.blobs, &blob_key(1)).unwrap();
    batch.put(&w.tables.counts, &1, &7).unwrap();
    batch.commit().unwrap();
    w.model.get_mut(RECORDS).unwrap().insert(record_key(&(2 * n)), record_value(&Record::new(2 * n)));
    w.model.get_mut(BLOBS).unwrap().remove(&blob_key(1));
    w.model.get_mut(COUNTS).unwrap().insert(count_key(&1), count_value(&7));
    w.model
}

// --- Reading a store back ---------------------------------------------------------------

/// What opening and reading a store gave.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Outcome {
    /// Every step succeeded: the tables as iterated (point reads agreed).
    Read(Tables),
    /// A step failed.
    Failed { step: String, error: String },
    /// No step failed, but a point read disagreed with the iteration.
    Inconsistent(String),
    /// Something panicked instead of returning an error.
    Panicked(String),
}

fn failed(step: impl Into<String>, error: impl fmt::Display) -> Outcome {
    Outcome::Failed { step: step.into(), error: error.to_string().replace('\n', " ") }
}

/// Iterates `table` fully, then reads every key it listed and every key of `expected` with
/// `get`: the entries as model bytes, or the outcome of the first step that failed.
fn read_table<K, V, KF: KeyFormat<K>, VF: ValueFormat<V>>(
    table: &Table<K, V, KF, VF>,
    expected: &BTreeMap<Vec<u8>, Vec<u8>>,
    key_bytes: impl Fn(&K) -> Vec<u8>,
    parse_key: impl Fn(&[u8]) -> K,
    value_bytes: impl Fn(&typed_kv::Guard<'_, V, VF>) -> Vec<u8>,
) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, Outcome> {
    let name = table.name();
    let mut found = BTreeMap::new();
    let entries = table.iter().map_err(|e| failed(format!("iterating `{name}`"), e))?;
    for entry in entries {
        let (key, guard) = entry.map_err(|e| failed(format!("iterating `{name}`"), e))?;
        found.insert(key_bytes(&key), value_bytes(&guard));
    }
    for key in found.keys().chain(expected.keys()) {
        let step = || format!("get `{name}` {}", String::from_utf8_lossy(key));
        let got = table.get(&parse_key(key)).map_err(|e| failed(step(), e))?.map(|g| value_bytes(&g));
        if got.as_ref() != found.get(key) {
            let got = got.map(|v| String::from_utf8_lossy(&v).into_owned());
            return Err(Outcome::Inconsistent(format!(
                "{}: iteration and get disagree (get: {got:?})",
                step()
            )));
        }
    }
    Ok(found)
}

/// [`read_back`], with a panic caught as an outcome of its own, so that one case's panic
/// neither hides the others nor passes for an error.
fn read_back_caught(backend: DatabaseBackend, path: &Path, recreate: Recreate, expected: &Tables) -> Outcome {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_back(backend, path, recreate, expected)))
        .unwrap_or_else(|panic| Outcome::Panicked(panic_message(&*panic)))
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let message = panic.downcast_ref::<&str>().map(|m| m.to_string());
    message.or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_else(|| "(no message)".to_owned())
}

/// Opens the store at `path` with `recreate`, builds its tables, reads them fully and
/// verifies the store; closes it before returning.
fn read_back(backend: DatabaseBackend, path: &Path, recreate: Recreate, expected: &Tables) -> Outcome {
    let storage = match builder(backend, path, recreate).build() {
        Ok(s) => s,
        Err(e) => return failed("open", e),
    };
    let tables = match build_tables(&storage) {
        Ok(t) => t,
        Err(e) => return failed("building the tables", e),
    };
    let none = BTreeMap::new();
    let expect = |t: &str| expected.get(t).unwrap_or(&none);
    let read = || -> Result<Tables, Outcome> {
        let records = read_table(&tables.records, expect(RECORDS), record_key, parse_record_key, |g| {
            record_value(&rkyv::deserialize::<Record, rkyv::rancor::Error>(&**g).unwrap())
        })?;
        let blobs = read_table(&tables.blobs, expect(BLOBS), |k| k.clone(), |k| k.to_vec(), |g| g.to_vec())?;
        let counts =
            read_table(&tables.counts, expect(COUNTS), count_key, parse_count_key, |g| count_value(g))?;
        Ok([(RECORDS, records), (BLOBS, blobs), (COUNTS, counts)]
            .into_iter()
            .map(|(name, entries)| (name.to_owned(), entries))
            .collect())
    };
    let found = match read() {
        Ok(found) => found,
        Err(outcome) => return outcome,
    };
    match storage.verify() {
        Err(e) => return failed("verify", e),
        Ok(report) if !report.is_ok() => {
            let first: Vec<String> = report.problems.iter().take(3).map(|p| p.to_string()).collect();
            return failed("verify", format!("{} problems: {}", report.problem_count(), first.join("; ")));
        }
        Ok(_) => {}
    }
    Outcome::Read(found)
}

// --- Damage ---------------------------------------------------------------------------------

/// One way of damaging one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    Delete,
    TruncateToZero,
    TruncateToHalf,
    TruncateByOneByte,
    /// Its contents exchanged with the next file of the same kind (same directory, same name
    /// but for digits: two segments, two hints).
    SwapWithSameKind,
    /// The byte at `eighths`/8 of the file inverted.
    FlipByte {
        eighths: u64,
    },
    /// chmod 000.
    Unreadable,
}

impl Damage {
    /// Whether the damage leaves a file whose bytes fail the engine's checks (a flip, a swap,
    /// a file cut so that what remains no longer checks out); a missing file or a file that
    /// cannot be read proves nothing (a lost mount, wrong permissions are mended by putting
    /// them back). Where the store records a file's length (native sealed segments), a cut
    /// is missing data, which `native_damage` holds to an error of its own.
    fn proves_corruption(self) -> bool {
        !matches!(self, Damage::Delete | Damage::Unreadable)
    }

    /// Damage that the backend's engine cannot see, stated in README ("Checksums of the other
    /// engines"): sled's recovery takes the first message that fails its CRC for the end of
    /// its log and serves what it rebuilt (spacejam/sled's log recovery), so a flipped or cut
    /// `db` file may open with other values, and an emptied one opens empty. Reported by the
    /// suite, not failed.
    fn is_known_blind_spot(self, backend: DatabaseBackend, file: &Path) -> bool {
        backend == DatabaseBackend::Sled
            && file == Path::new("sled/db")
            && !matches!(self, Damage::Delete | Damage::Unreadable)
    }

    /// Damages `file` (relative to `store`); `None` when the damage does not apply to it
    /// (nothing to truncate, no file of the same kind to swap with). Returns what was done.
    fn apply(self, store: &Path, file: &Path) -> Option<String> {
        let path = store.join(file);
        let len = std::fs::metadata(&path).unwrap().len();
        let truncate = |to: u64| {
            std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(to).unwrap();
            Some(format!("truncated from {len} to {to} bytes"))
        };
        match self {
            Damage::Delete => {
                std::fs::remove_file(&path).unwrap();
                Some("deleted".to_owned())
            }
            Damage::TruncateToZero if len > 0 => truncate(0),
            Damage::TruncateToHalf if len >= 2 => truncate(len / 2),
            Damage::TruncateByOneByte if len >= 2 => truncate(len - 1),
            Damage::SwapWithSameKind => {
                let other = same_kind(store, file)?;
                let (a, b) = (std::fs::read(&path).unwrap(), std::fs::read(store.join(&other)).unwrap());
                std::fs::write(&path, b).unwrap();
                std::fs::write(store.join(&other), a).unwrap();
                Some(format!("swapped with {}", other.display()))
            }
            Damage::FlipByte { eighths } if len > 0 => {
                let at = (len * eighths / 8).min(len - 1);
                let mut bytes = std::fs::read(&path).unwrap();
                bytes[at as usize] = !bytes[at as usize];
                std::fs::write(&path, bytes).unwrap();
                Some(format!("byte {at} of {len} inverted"))
            }
            Damage::Unreadable => {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
                Some("chmod 000".to_owned())
            }
            _ => None,
        }
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::Delete => f.write_str("delete"),
            Damage::TruncateToZero => f.write_str("truncate to 0"),
            Damage::TruncateToHalf => f.write_str("truncate to half"),
            Damage::TruncateByOneByte => f.write_str("truncate by 1 byte"),
            Damage::SwapWithSameKind => f.write_str("swap"),
            Damage::FlipByte { eighths } => write!(f, "flip at {eighths}/8"),
            Damage::Unreadable => f.write_str("chmod 000"),
        }
    }
}

/// The next file after `file` (cyclically) of the same kind: same directory, same name once
/// digits are left out.
fn same_kind(store: &Path, file: &Path) -> Option<PathBuf> {
    let kind = |p: &Path| (p.parent().map(Path::to_owned), name_without_digits(p));
    let all: Vec<PathBuf> = damageable_files(store).into_iter().filter(|p| kind(p) == kind(file)).collect();
    let at = all.iter().position(|p| p == file)?;
    let next = &all[(at + 1) % all.len()];
    (next != file).then(|| next.clone())
}

fn name_without_digits(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().chars().filter(|c| !c.is_ascii_digit()).collect()
}

/// Every file of a closed store but the lock files (typed-kv's and the engines' own),
/// relative to the store.
fn damageable_files(store: &Path) -> Vec<PathBuf> {
    files_under(store)
        .into_iter()
        .filter(|p| !matches!(p.file_name().and_then(|n| n.to_str()), Some("typed-kv.lock" | "LOCK")))
        .map(|p| p.strip_prefix(store).unwrap().to_owned())
        .collect()
}

/// Every damageable file of a store with its size.
fn listing(store: &Path) -> BTreeMap<PathBuf, u64> {
    damageable_files(store)
        .into_iter()
        .map(|p| {
            let len = std::fs::metadata(store.join(&p)).unwrap().len();
            (p, len)
        })
        .collect()
}

/// The files of `before` that are gone or smaller in `after`, if any.
fn losses(before: &BTreeMap<PathBuf, u64>, after: &BTreeMap<PathBuf, u64>) -> Option<String> {
    let lost: Vec<String> = before
        .iter()
        .filter_map(|(p, &len)| match after.get(p) {
            None => Some(format!("deleted {}", p.display())),
            Some(&now) if now < len => Some(format!("shrank {} from {len} to {now} bytes", p.display())),
            Some(_) => None,
        })
        .collect();
    (!lost.is_empty()).then(|| lost.join(", "))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

// --- Judging a case ---------------------------------------------------------------------

/// The first difference between what a case read and the acknowledged data, if any.
fn differs(found: &Tables, expected: &Tables) -> Option<String> {
    (found != expected).then(|| diff_tables(found, expected))
}

/// One line saying what a case gave, for verbose runs.
fn describe(outcome: &Outcome, expected: &Tables) -> String {
    match outcome {
        Outcome::Read(found) => match differs(found, expected) {
            None => "read: exactly the acknowledged data".to_owned(),
            Some(diff) => format!("read: {diff}"),
        },
        Outcome::Failed { step, error } => format!("{step} failed: {error}"),
        Outcome::Inconsistent(what) => what.clone(),
        Outcome::Panicked(message) => format!("panicked: {message}"),
    }
}

/// Whether `outcome` is allowed for a store damaged by `damage` (`None`: undamaged, under a
/// resource limit) and opened with `mode`; `Err` says what went wrong.
fn judge(
    outcome: &Outcome,
    damage: Option<Damage>,
    mode: Recreate,
    expected: &Tables,
    before: &BTreeMap<PathBuf, u64>,
    after: &BTreeMap<PathBuf, u64>,
) -> Result<(), String> {
    let may_wipe = mode == Recreate::OnValidationFail && damage.is_some_and(Damage::proves_corruption);
    match outcome {
        Outcome::Failed { step, error } => match losses(before, after) {
            Some(lost) if !may_wipe => Err(format!("{step} failed ({error}), and typed-kv {lost}")),
            _ => Ok(()),
        },
        Outcome::Inconsistent(what) => Err(what.clone()),
        Outcome::Panicked(message) => Err(format!("panicked: {message}")),
        Outcome::Read(found) => {
            let Some(diff) = differs(found, expected) else { return Ok(()) };
            let wiped_tables_only =
                found.iter().all(|(name, entries)| entries.is_empty() || expected.get(name) == Some(entries));
            if may_wipe && wiped_tables_only {
                Ok(())
            } else {
                Err(format!("opened and read without an error, but not the acknowledged data: {diff}"))
            }
        }
    }
}

/// `Recreate::Always` on a damaged store: an error, or an empty store that keeps what is
/// written next.
fn judge_always(backend: DatabaseBackend, path: &Path) -> Result<(), String> {
    let nothing = Tables::new();
    let found = match read_back(backend, path, Recreate::Always, &nothing) {
        Outcome::Read(found) => found,
        Outcome::Failed { .. } => return Ok(()),
        Outcome::Inconsistent(what) => return Err(what),
        Outcome::Panicked(message) => return Err(format!("panicked: {message}")),
    };
    if found.values().any(|t| !t.is_empty()) {
        return Err(format!("Always left data: {}", diff_tables(&found, &nothing)));
    }
    let storage = builder(backend, path, Recreate::IfMissing).build().map_err(|e| format!("reopen: {e}"))?;
    let tables = build_tables(&storage).map_err(|e| format!("rebuilding the tables: {e}"))?;
    tables.counts.put(&42, &42).map_err(|e| format!("a put after Always: {e}"))?;
    drop((tables, storage));
    let mut expected: Tables =
        [RECORDS, BLOBS, COUNTS].into_iter().map(|t| (t.to_owned(), BTreeMap::new())).collect();
    expected.get_mut(COUNTS).unwrap().insert(count_key(&42), count_value(&42));
    match read_back(backend, path, Recreate::IfMissing, &expected) {
        Outcome::Read(found) => match differs(&found, &expected) {
            None => Ok(()),
            Some(diff) => Err(format!("after Always, a put and a reopen: {diff}")),
        },
        other => Err(format!("after Always, a put and a reopen: {other:?}")),
    }
}

// --- Child processes --------------------------------------------------------------------

const CHILD_STORE: &str = "TYPED_KV_DAMAGE_CHILD_STORE";
const CHILD_BACKEND: &str = "TYPED_KV_DAMAGE_CHILD_BACKEND";
const CHILD_MODE: &str = "TYPED_KV_DAMAGE_CHILD_MODE";
const CHILD_MODEL: &str = "TYPED_KV_DAMAGE_CHILD_MODEL";
const CHILD_LINE: &str = "DAMAGE-CHILD ";

fn mode_name(mode: Recreate) -> &'static str {
    match mode {
        Recreate::IfMissing => "IfMissing",
        Recreate::Always => "Always",
        Recreate::OnVersionBump => "OnVersionBump",
        Recreate::OnValidationFail => "OnValidationFail",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// The child of [`read_in_child`]: reads the store it is given back and prints the outcome.
/// Does nothing in a normal run.
#[test]
fn damage_child() {
    let Some(store) = std::env::var_os(CHILD_STORE) else { return };
    let backend = DatabaseBackend::from_name(&std::env::var(CHILD_BACKEND).unwrap()).unwrap();
    let mode = std::env::var(CHILD_MODE).unwrap();
    let mode = MODES.into_iter().find(|m| mode_name(*m) == mode).unwrap();
    let expected: Tables =
        postcard::from_bytes(&std::fs::read(std::env::var_os(CHILD_MODEL).unwrap()).unwrap()).unwrap();
    let outcome = read_back_caught(backend, Path::new(&store), mode, &expected);
    // On a line of its own: the harness prints the test's name before it.
    println!("\n{CHILD_LINE}{}", hex(&postcard::to_allocvec(&outcome).unwrap()));
}

/// Runs [`read_back`] in a child process started through `wrapper` (a command that execs
/// its arguments: a shell setting a limit, `setpriv`), with `exe` as the test binary.
fn read_in_child(
    wrapper: &[&str],
    exe: &Path,
    backend: DatabaseBackend,
    store: &Path,
    mode: Recreate,
    model_file: &Path,
) -> Outcome {
    let output = Command::new(wrapper[0])
        .args(&wrapper[1..])
        .arg(exe)
        .args(["--exact", "damage_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_STORE, store)
        .env(CHILD_BACKEND, backend.name())
        .env(CHILD_MODE, mode_name(mode))
        .env(CHILD_MODEL, model_file)
        .output()
        .expect("start the child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout.lines().find_map(|l| l.strip_prefix(CHILD_LINE)) {
        Some(line) => postcard::from_bytes(&unhex(line)).unwrap(),
        // The child could not run the test at all, or died in it: an error, not data.
        None => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: String = stderr.lines().rev().take(3).collect::<Vec<_>>().join(" / ");
            failed("the child process", format!("{}: {tail}", output.status))
        }
    }
}

fn write_model(model: &Tables, file: &Path) {
    std::fs::write(file, postcard::to_allocvec(model).unwrap()).unwrap();
}

// --- Running the cases ------------------------------------------------------------------

/// The damage classes, one `#[test]` each per backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Delete,
    Truncate,
    Swap,
    Flip,
    Unreadable,
}

impl Class {
    fn damages(self) -> Vec<Damage> {
        match self {
            Class::Delete => vec![Damage::Delete],
            Class::Truncate => {
                vec![Damage::TruncateToZero, Damage::TruncateToHalf, Damage::TruncateByOneByte]
            }
            Class::Swap => vec![Damage::SwapWithSameKind],
            Class::Flip if full() => (0..8).map(|eighths| Damage::FlipByte { eighths }).collect(),
            // The middle: in the newest native segment, a flipped byte followed by valid records.
            Class::Flip => vec![Damage::FlipByte { eighths: 4 }],
            Class::Unreadable => vec![Damage::Unreadable],
        }
    }

    fn test_name(self) -> &'static str {
        match self {
            Class::Delete => "delete",
            Class::Truncate => "truncate",
            Class::Swap => "swap",
            Class::Flip => "flip",
            Class::Unreadable => "unreadable",
        }
    }
}

/// A failing case, as one line naming everything needed to reproduce it.
fn case_line(backend: DatabaseBackend, file: &str, damage: &str, mode: Recreate, what: &str) -> String {
    format!("file-damage | {backend} | {file} | {damage} | {} | {what}", mode_name(mode))
}

/// A store written for one test, with its acknowledged data.
struct Pristine {
    dir: tempfile::TempDir,
    store: PathBuf,
    model: Tables,
    model_file: PathBuf,
}

impl Pristine {
    fn new(backend: DatabaseBackend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("pristine");
        let model = write_store(backend, &store);
        let model_file = dir.path().join("model");
        write_model(&model, &model_file);
        let pristine = Pristine { dir, store, model, model_file };
        // The undamaged store reads back exactly: the suite's own check of itself.
        let copy = pristine.case_dir(0);
        match read_back(backend, &copy, Recreate::IfMissing, &pristine.model) {
            Outcome::Read(found) => {
                assert_eq!(differs(&found, &pristine.model), None, "{backend}: the intact store")
            }
            other => panic!("{backend}: the intact store: {other:?}"),
        }
        std::fs::remove_dir_all(&copy).unwrap();
        if verbose() {
            for (file, len) in listing(&pristine.store) {
                println!("file-damage | {backend} | store file {} | {len} bytes", file.display());
            }
        }
        pristine
    }

    /// A fresh copy of the store for case `n`.
    fn case_dir(&self, n: usize) -> PathBuf {
        let dir = self.dir.path().join(format!("case-{n}"));
        copy_dir(&self.store, &dir);
        dir
    }
}

/// Fails with every failing case's line, if any.
fn report(backend: DatabaseBackend, test: &str, cases: usize, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed (cargo test --test file_damage {backend}::{test} -- --nocapture):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(cases > 0, "{backend}::{test}: no case ran");
}

/// How a case of chmod 000 is read when permissions do not stop this process (root): in a
/// child process as user `nobody`, or not at all.
enum Unprivileged {
    /// Permissions stop this process: read in place.
    NotNeeded,
    /// A copy of the test binary that `nobody` can run, in a directory kept alive here.
    Child { _dir: tempfile::TempDir, exe: PathBuf },
    /// No way to drop privileges (`setpriv` missing or not allowed).
    Unavailable,
}

const NOBODY: u32 = 65534;

fn unprivileged(probe: &Path) -> Unprivileged {
    std::fs::write(probe, b"probe").unwrap();
    std::fs::set_permissions(probe, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read(probe).is_err() {
        return Unprivileged::NotNeeded;
    }
    let works = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        return Unprivileged::Unavailable;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.path().join("file_damage");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    Unprivileged::Child { _dir: dir, exe }
}

/// Gives `path` and everything under it to `uid`.
fn chown_all(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_all(&entry.unwrap().path(), uid);
        }
    }
}

/// Every file of the store × every damage of `class` × every mode.
fn damage_class(backend: DatabaseBackend, class: Class) {
    let pristine = Pristine::new(backend);
    let privileges = match class {
        Class::Unreadable => unprivileged(&pristine.dir.path().join("probe")),
        _ => Unprivileged::NotNeeded,
    };
    if matches!(privileges, Unprivileged::Unavailable) {
        println!("file-damage | {backend} | chmod 000 skipped: permissions do not stop this process");
        return;
    }
    let mut failures = Vec::new();
    let mut cases = 0;
    for file in damageable_files(&pristine.store) {
        for damage in class.damages() {
            for mode in MODES {
                let case = pristine.case_dir(cases + 1);
                let Some(done) = damage.apply(&case, &file) else {
                    std::fs::remove_dir_all(&case).unwrap();
                    continue;
                };
                cases += 1;
                let before = listing(&case);
                let verdict = if mode == Recreate::Always {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| judge_always(backend, &case)))
                        .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_message(&*panic))))
                } else {
                    let outcome = match &privileges {
                        Unprivileged::Child { exe, .. } => {
                            chown_all(pristine.dir.path(), NOBODY);
                            let wrapper =
                                ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"];
                            read_in_child(&wrapper, exe, backend, &case, mode, &pristine.model_file)
                        }
                        _ => read_back_caught(backend, &case, mode, &pristine.model),
                    };
                    if damage == Damage::Unreadable && case.join(&file).exists() {
                        std::fs::set_permissions(case.join(&file), std::fs::Permissions::from_mode(0o644))
                            .unwrap();
                    }
                    let after = listing(&case);
                    if verbose() {
                        let outcome = describe(&outcome, &pristine.model);
                        println!(
                            "file-damage | {backend} | {} | {damage} | {mode:?} | {outcome}",
                            file.display()
                        );
                    }
                    judge(&outcome, Some(damage), mode, &pristine.model, &before, &after)
                };
                match verdict {
                    Err(what) if damage.is_known_blind_spot(backend, &file) => println!(
                        "file-damage | {backend} | {} | {damage} | {mode:?} | known blind spot of the engine: {what}",
                        file.display()
                    ),
                    Err(what) => {
                        let file = file.display().to_string();
                        failures.push(case_line(backend, &file, &format!("{damage} ({done})"), mode, &what));
                    }
                    Ok(()) => {}
                }
                std::fs::remove_dir_all(&case).unwrap();
            }
        }
    }
    if cases == 0 && class == Class::Swap {
        // redb and sled keep one file of each kind: there is nothing to swap.
        println!("file-damage | {backend} | no two files of one kind: nothing to swap");
        return;
    }
    report(backend, class.test_name(), cases, &failures);
}

/// The intact store opened in a child process under each `ulimit` setting of `limits` (in
/// the unit `ulimit -<flag>` takes), with each keeping mode: an error or all the data, never
/// a wipe; afterwards, without the limit, it still holds all the data.
fn under_limits(backend: DatabaseBackend, flag: char, limits: &[u64], test: &str) {
    let pristine = Pristine::new(backend);
    let exe = std::env::current_exe().unwrap();
    let mut failures = Vec::new();
    let mut cases = 0;
    for &limit in limits {
        let wrapper = format!("ulimit -{flag} {limit}; exec \"$0\" \"$@\"");
        for mode in KEEPING_MODES {
            cases += 1;
            let case = pristine.case_dir(cases);
            let before = listing(&case);
            let outcome =
                read_in_child(&["sh", "-c", &wrapper], &exe, backend, &case, mode, &pristine.model_file);
            let after = listing(&case);
            if verbose() {
                let outcome = describe(&outcome, &pristine.model);
                println!("file-damage | {backend} | ulimit -{flag} {limit} | {mode:?} | {outcome}");
            }
            let verdict = judge(&outcome, None, mode, &pristine.model, &before, &after).and_then(|()| {
                match read_back_caught(backend, &case, Recreate::IfMissing, &pristine.model) {
                    Outcome::Read(found) => match differs(&found, &pristine.model) {
                        None => Ok(()),
                        Some(diff) => Err(format!("reopened without the limit: {diff}")),
                    },
                    other => Err(format!("reopened without the limit: {other:?}")),
                }
            });
            if let Err(what) = verdict {
                failures.push(case_line(backend, "(all)", &format!("ulimit -{flag} {limit}"), mode, &what));
            }
            std::fs::remove_dir_all(&case).unwrap();
        }
    }
    report(backend, test, cases, &failures);
}

// --- The tests --------------------------------------------------------------------------

fn delete(backend: DatabaseBackend) {
    if rocksdb_not_asked(backend) {
        return;
    }
    damage_class(backend, Class::Delete)
}

fn truncate(backend: DatabaseBackend) {
    if rocksdb_not_asked(backend) {
        return;
    }
    damage_class(backend, Class::Truncate)
}

fn swap(backend: DatabaseBackend) {
    if rocksdb_not_asked(backend) {
        return;
    }
    damage_class(backend, Class::Swap)
}

fn flip(backend: DatabaseBackend) {
    if rocksdb_not_asked(backend) {
        return;
    }
    damage_class(backend, Class::Flip)
}

fn unreadable(backend: DatabaseBackend) {
    if rocksdb_not_asked(backend) {
        return;
    }
    damage_class(backend, Class::Unreadable)
}

/// Descriptor limits around what an open needs (the test harness itself takes a few).
fn descriptor_limit(backend: DatabaseBackend) {
    if rocksdb_not_asked(backend) {
        return;
    }
    let limits: Vec<u64> = if full() { (4..=48).collect() } else { vec![6, 8, 10, 12, 16, 24, 32] };
    under_limits(backend, 'n', &limits, "descriptor_limit")
}

/// Address-space limits in KiB, from below what the test binary needs to start up to what
/// an open comfortably fits in.
fn address_space_limit(backend: DatabaseBackend) {
    if rocksdb_not_asked(backend) {
        return;
    }
    let mib: Vec<u64> = if full() { (1..=16).map(|i| i * 32).collect() } else { vec![32, 64, 128, 256, 512] };
    let limits: Vec<u64> = mib.into_iter().map(|m| m << 10).collect();
    under_limits(backend, 'v', &limits, "address_space_limit")
}

/// RocksDB's cases run only with `TYPED_KV_DAMAGE_ROCKSDB=1`: they still fail, on findings
/// not fixed yet (docs/reliability.md §10): a deleted WAL opens without the commits it held
/// (RocksDB's default `kPointInTimeRecovery`), a deleted SST is reported as RocksDB's
/// `Corruption`, which `OnValidationFail` takes for proof and wipes, and the address-space
/// limit hangs the child.
fn rocksdb_not_asked(backend: DatabaseBackend) -> bool {
    let skip = backend == DatabaseBackend::RocksDb && std::env::var_os("TYPED_KV_DAMAGE_ROCKSDB").is_none();
    if skip {
        println!("file-damage | rocksdb | skipped: set TYPED_KV_DAMAGE_ROCKSDB=1 to run (known failures)");
    }
    skip
}

per_backend!(delete, truncate, swap, flip, unreadable, descriptor_limit, address_space_limit);
