//! The `typed-kv` command-line tool, run as a built binary on real stores: every subcommand,
//! every error message, exit codes. Run with `--features cli`.
#![cfg(feature = "cli")]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{open, Record};
use typed_kv::{BytesFormat, DatabaseBackend, OrderedFormat, Storage};

/// Runs `typed-kv` with `args`; stderr is a pipe, so progress bars stay hidden.
fn typed_kv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_typed-kv")).args(args).output().expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the exit code, showing both streams when it is not the expected one.
fn assert_exit(output: &Output, code: i32, what: &str) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        stdout(output),
        stderr(output)
    );
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// Two tables: `ids` (ordered u64 keys, UTF-8 bytes values) and `records` (ordered u64 keys,
/// rkyv values).
fn fill(storage: &Storage) {
    let ids = storage
        .new_table::<u64, Vec<u8>>("ids")
        .with_key_format(OrderedFormat::new())
        .with_value_format(BytesFormat::new())
        .build()
        .unwrap();
    ids.put_all((0..3).map(|i| (i, format!("value {i}").into_bytes()))).unwrap();
    let records = common::records_table(storage, "records");
    records.put_all((0..40).map(|i| (i, Record::new(i)))).unwrap();
}

fn store(backend: DatabaseBackend, path: &Path) {
    let storage = open(backend, path);
    fill(&storage);
}

#[test]
fn info_shows_backend_tables_formats_schema_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    for backend in DatabaseBackend::compiled() {
        let path = dir.path().join(backend.name());
        store(backend, &path);
        let output = typed_kv(&["info", path_arg(&path)]);
        assert_exit(&output, 0, "info");
        let text = stdout(&output);
        assert!(text.contains(&format!("backend  {backend}\n")), "{backend}:\n{text}");
        assert!(text.contains("tables   2, 43 keys"), "{backend}:\n{text}");
        let row = |name: &str| -> Vec<String> {
            let line =
                text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{text}"));
            line.split_whitespace().map(str::to_owned).collect()
        };
        // Name, keys, key format (type), value format (type), schema version.
        assert_eq!(
            row("ids"),
            ["ids", "3", "ordered", "(u64)", "bytes", "(alloc::vec::Vec<u8>)", "0"],
            "{backend}"
        );
        let records = row("records");
        assert_eq!(records[..4], ["records", "40", "ordered", "(u64)"], "{backend}");
        assert_eq!(records[4], "rkyv", "{backend}");
        assert_eq!(records[6..], ["(cli::common::Record)", "0"], "{backend}");
        assert!(stderr(&output).is_empty(), "{backend}: {}", stderr(&output));
    }
}

#[test]
fn verify_passes_a_clean_store_and_says_what_it_checked() {
    let dir = tempfile::tempdir().unwrap();
    for backend in DatabaseBackend::compiled() {
        let path = dir.path().join(backend.name());
        store(backend, &path);
        let output = typed_kv(&["verify", path_arg(&path)]);
        assert_exit(&output, 0, "verify");
        let text = stdout(&output);
        assert!(text.contains("records    43 in 2 tables"), "{backend}:\n{text}");
        assert!(
            text.contains("keys:   checked: decoded as the stamped key type `u64`"),
            "{backend}:\n{text}"
        );
        assert!(text.contains("values: not checked: rkyv archives"), "{backend}:\n{text}");
        assert!(text.ends_with("no problems found\n"), "{backend}:\n{text}");
        // Native and redb check their checksums on demand; sled and RocksDB do not.
        let on_demand = matches!(backend, DatabaseBackend::Native | DatabaseBackend::Redb);
        let checksums = if on_demand { "checksums  checked" } else { "checksums  not checked" };
        assert!(text.contains(checksums), "{backend}:\n{text}");
    }
}

#[cfg(feature = "native")]
#[test]
fn verify_lists_a_flipped_byte_and_exits_with_3() {
    let dir = tempfile::tempdir().unwrap();
    store(DatabaseBackend::Native, dir.path());
    let segment = dir.path().join("native").join("seg-0000000001.tkv");
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes.windows(7).position(|w| w == b"value 1").expect("the value is in the segment");
    bytes[at + 6] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();

    let output = typed_kv(&["verify", path_arg(dir.path())]);
    assert_exit(&output, 3, "verify of a damaged store");
    let text = stdout(&output);
    assert!(text.contains("1 problem found:"), "{text}");
    let problem = text.lines().find(|l| l.contains("checksum mismatch")).unwrap_or_else(|| panic!("{text}"));
    assert!(problem.contains("table `ids`, key 0x0000000000000001: record: checksum mismatch"), "{problem}");
    assert!(problem.contains("seg-0000000001.tkv at offset "), "{problem}");
}

#[test]
fn compact_says_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    for backend in DatabaseBackend::compiled() {
        let path = dir.path().join(backend.name());
        store(backend, &path);
        let output = typed_kv(&["compact", path_arg(&path)]);
        assert_exit(&output, 0, "compact");
        let text = stdout(&output);
        let expected = match backend {
            DatabaseBackend::Sled => "sled cannot compact on demand: ",
            DatabaseBackend::Redb => "(redb)",
            _ => "compacted ",
        };
        assert!(text.contains(expected), "{backend}: {text}");
    }
}

#[test]
fn copy_from_sled_to_native_keeps_every_table_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("sled"), dir.path().join("native"));
    store(DatabaseBackend::Sled, &src);
    let output = typed_kv(&["copy", path_arg(&src), path_arg(&dst), "--to-backend", "native"]);
    assert_exit(&output, 0, "copy");
    let text = stdout(&output);
    assert!(text.starts_with("copied 2 tables, 43 records ("), "{text}");
    assert!(text.contains("(sled) to ") && text.contains("(native) in "), "{text}");
    assert!(text.contains("  `records`: 40 records\n"), "{text}");
    assert!(stderr(&output).is_empty(), "progress bars must stay hidden off a terminal: {}", stderr(&output));

    let info = stdout(&typed_kv(&["info", path_arg(&dst)]));
    assert!(info.contains("backend  native") && info.contains("tables   2, 43 keys"), "{info}");
    for table in ["ids", "records"] {
        let from = typed_kv(&["dump", path_arg(&src), table, "--json"]);
        let to = typed_kv(&["dump", path_arg(&dst), table, "--json"]);
        assert_exit(&to, 0, "dump of the copy");
        assert_eq!(stdout(&from), stdout(&to), "table {table} differs after the copy");
    }
}

#[test]
fn copy_refuses_a_target_with_tables_unless_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("a"), dir.path().join("b"));
    store(DatabaseBackend::DEFAULT, &src);
    store(DatabaseBackend::Sled, &dst);
    let output = typed_kv(&["copy", path_arg(&src), path_arg(&dst), "--to-backend", "sled"]);
    assert_exit(&output, 1, "copy into a store with tables");
    let err = stderr(&output);
    assert!(err.contains("refused: it already has 2 table(s) (`ids`, `records`)"), "{err}");
    assert!(err.contains("hint: pass --overwrite"), "{err}");

    let output = typed_kv(&["copy", path_arg(&src), path_arg(&dst), "--to-backend", "sled", "--overwrite"]);
    assert_exit(&output, 0, "copy --overwrite");
    assert!(
        stdout(&output).contains("`ids`: 3 records (replaced the target's table)"),
        "{}",
        stdout(&output)
    );

    let output = typed_kv(&["copy", path_arg(&src), path_arg(&dst), "--to-backend", "redb"]);
    assert_exit(&output, 1, "copy into a store of another backend");
    let err = stderr(&output);
    assert!(err.contains("holds a sled store, not redb") && err.contains("--to-backend sled"), "{err}");
}

#[test]
fn dump_decodes_what_it_can_and_shows_the_rest_in_hex() {
    let dir = tempfile::tempdir().unwrap();
    store(DatabaseBackend::DEFAULT, dir.path());
    let output = typed_kv(&["dump", path_arg(dir.path()), "ids"]);
    assert_exit(&output, 0, "dump");
    assert_eq!(stdout(&output), "0\t\"value 0\"\n1\t\"value 1\"\n2\t\"value 2\"\n");
    let note = stderr(&output);
    assert!(note.starts_with("# table `ids`: keys ordered `u64`, decoded; values bytes"), "{note}");

    let output = typed_kv(&["dump", path_arg(dir.path()), "records", "--limit", "2"]);
    assert_exit(&output, 0, "dump --limit");
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[1].starts_with("1\t0x"), "rkyv values are shown in hex: {}", lines[1]);
    assert!(stderr(&output).contains("in hex (the format needs the Rust type)"), "{}", stderr(&output));

    let output = typed_kv(&["dump", path_arg(dir.path()), "ids", "--json", "--limit", "1"]);
    assert_exit(&output, 0, "dump --json");
    let line: serde_json::Value = serde_json::from_str(stdout(&output).trim()).expect("a JSON line");
    assert_eq!(line["key"], 0);
    assert_eq!(line["value"], "value 0");
    assert_eq!(line["key_hex"], "0x0000000000000000");
    assert_eq!(line["value_hex"], "0x76616c75652030");
}

#[test]
fn errors_are_explained_and_exit_with_1() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let output = typed_kv(&["info", path_arg(&missing)]);
    assert_exit(&output, 1, "a missing path");
    assert!(
        stderr(&output).contains("error: no typed-kv store at") && stderr(&output).contains("does not exist")
    );
    assert!(!missing.exists(), "reading a missing store created it");

    let path = dir.path().join("store");
    store(DatabaseBackend::DEFAULT, &path);
    let other = if DatabaseBackend::DEFAULT == DatabaseBackend::Sled { "redb" } else { "sled" };
    let output = typed_kv(&["info", path_arg(&path), "--backend", other]);
    assert_exit(&output, 1, "a wrong backend");
    let err = stderr(&output);
    assert!(err.contains(&format!("holds a {} store, not {other}", DatabaseBackend::DEFAULT)), "{err}");
    assert!(err.contains("hint: leave out --backend"), "{err}");

    let output = typed_kv(&["dump", path_arg(&path), "nosuch"]);
    assert_exit(&output, 1, "an unknown table");
    let err = stderr(&output);
    assert!(
        err.contains("has no table named `nosuch`") && err.contains("hint: its tables: ids, records"),
        "{err}"
    );

    {
        let _held = open(DatabaseBackend::DEFAULT, &path);
        let output = typed_kv(&["verify", path_arg(&path)]);
        assert_exit(&output, 1, "a locked store");
        let err = stderr(&output);
        assert!(err.contains("is locked by another user of the store"), "{err}");
        assert!(err.contains("hint: another process"), "{err}");
    }

    let output = typed_kv(&["info"]);
    assert_exit(&output, 2, "a missing argument");
    assert!(stderr(&output).contains("Usage: typed-kv info"), "{}", stderr(&output));
}

#[cfg(feature = "native")]
#[test]
fn a_corrupt_store_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    store(DatabaseBackend::Native, dir.path());
    let tables = dir.path().join("native").join("tables.tkv");
    let mut bytes = std::fs::read(&tables).unwrap();
    bytes[12] ^= 0x01;
    std::fs::write(&tables, &bytes).unwrap();
    for command in ["info", "verify", "compact"] {
        let output = typed_kv(&[command, path_arg(dir.path())]);
        assert_exit(&output, 1, "a corrupt store");
        let err = stderr(&output);
        assert!(
            err.contains("error: the store is corrupt: ") && err.contains("tables.tkv is corrupt at offset"),
            "{err}"
        );
        assert!(err.contains("hint: the store is damaged"), "{err}");
    }
}
