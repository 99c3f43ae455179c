//! What a store records about itself: a marker file naming its backend, and a stamp per table
//! naming its formats, types and schema version.
//!
//! The marker (`typed-kv.meta`, a few lines of text) sits at the top of the storage
//! directory, beside the engine's own directory, so that opening a path with the wrong
//! backend is recognised before any engine touches its files. Stamps live inside the engine,
//! in the internal table [`CATALOG_TABLE`], so they commit atomically with the data.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::DatabaseBackend;
use crate::error::{Result, StorageError};

/// File at the top of a storage directory naming what made it.
pub(crate) const MARKER_FILE: &str = "typed-kv.meta";
/// Lock file held for as long as a `Storage` is open.
pub(crate) const LOCK_FILE: &str = "typed-kv.lock";
/// The marker while it is written, before it is renamed into place.
const MARKER_TMP_FILE: &str = "typed-kv.meta.tmp";
/// The marker's first line.
const MARKER_MAGIC: &str = "typed-kv store";
/// The marker's first line while the store is being wiped. It differs from
/// [`MARKER_MAGIC`] so that no reader of the plain marker takes a half-wiped store for a store.
const WIPING_MAGIC: &str = "typed-kv store being wiped";
/// The marker's line saying that the engine's first open succeeded, so that its files exist
/// and a missing one is lost data, never a store to create. A marker without it (a store made
/// by an older build, or whose first open was cut short) opens as before: the engine creates
/// what is missing, and the line is added once it opened.
const ENGINE_CREATED: &str = "engine created";
/// Version of the directory layout and catalog encoding.
const LAYOUT_VERSION: u32 = 1;
/// The native engine's table directory, in the engine's directory: written as soon as a
/// table exists (a storage always has its catalog table).
pub(crate) const NATIVE_TABLES_FILE: &str = "tables.tkv";
/// The internal table holding stamps, keyed by table name.
pub(crate) const CATALOG_TABLE: &str = "__typed_kv_catalog";
/// Table names starting with this are typed-kv's own.
pub(crate) const RESERVED_PREFIX: &str = "__typed_kv";

/// How a table was created: its formats, types and schema version.
///
/// Stored in the catalog when a table is first built and compared on every later build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableStamp {
    /// Key format id (`"ordered"`, `"rkyv"`, ...).
    pub key_format: String,
    /// Key format flags (layout facts that change the bytes).
    pub key_flags: String,
    /// Value format id.
    pub value_format: String,
    /// Value format flags.
    pub value_flags: String,
    /// `std::any::type_name` of the key type.
    pub key_type: String,
    /// `std::any::type_name` of the value type.
    pub value_type: String,
    /// Schema version given with `with_version` (0 by default).
    pub schema_version: u64,
}

impl TableStamp {
    /// Whether formats and types are the same (the schema version aside).
    pub fn same_layout(&self, other: &TableStamp) -> bool {
        TableStamp { schema_version: other.schema_version, ..self.clone() } == *other
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![LAYOUT_VERSION as u8];
        // Serialising strings and integers into a Vec cannot fail.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    pub(crate) fn decode(table: &str, bytes: &[u8]) -> Result<Self> {
        let corrupt = |reason: String| StorageError::CorruptCatalog { table: table.to_owned(), reason };
        match bytes.split_first() {
            Some((&v, rest)) if u32::from(v) == LAYOUT_VERSION => {
                postcard::from_bytes(rest).map_err(|e| corrupt(format!("undecodable stamp: {e}")))
            }
            Some((v, _)) => Err(corrupt(format!("stamp version {v}, this build reads {LAYOUT_VERSION}"))),
            None => Err(corrupt("empty stamp".into())),
        }
    }
}

impl fmt::Display for TableStamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flags = |s: &str| if s.is_empty() { String::new() } else { format!(" [{s}]") };
        write!(
            f,
            "`{}` keys in {}{}, `{}` values in {}{}, schema version {}",
            self.key_type,
            self.key_format,
            flags(&self.key_flags),
            self.value_type,
            self.value_format,
            flags(&self.value_flags),
            self.schema_version
        )
    }
}

/// The table name of a catalog key. Names are UTF-8 (they come from `&str`), so a key that is
/// not is damage, reported with its bytes.
pub(crate) fn catalog_name(key: &[u8]) -> Result<String> {
    String::from_utf8(key.to_vec()).map_err(|_| StorageError::CorruptCatalog {
        table: String::from_utf8_lossy(key).into_owned(),
        reason: format!("the table name is not UTF-8 ({})", crate::error::key_hex(key)),
    })
}

/// Checks a user-given table name.
pub(crate) fn validate_table_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > 200 {
        "it is longer than 200 bytes"
    } else if name.starts_with(RESERVED_PREFIX) {
        "names starting with `__typed_kv` are reserved"
    } else if name.chars().any(char::is_control) {
        "it contains control characters"
    } else {
        return Ok(());
    };
    Err(StorageError::InvalidTableName { name: name.to_owned(), reason })
}

/// What a storage directory holds, judged before any engine opens it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DirState {
    /// Nothing there (or an empty directory): a new store.
    Empty,
    /// A typed-kv store of this backend.
    Store {
        /// The backend its marker names.
        backend: DatabaseBackend,
        /// Whether the marker says the engine's files were created (see [`ENGINE_CREATED`]).
        engine_created: bool,
    },
    /// A typed-kv store whose wipe was cut short (its marker says so): what is left of it
    /// is no store, and the next open finishes the wipe.
    Wiping,
}

/// Reads the marker of `dir`, or recognises what else is there.
pub(crate) fn inspect_dir(dir: &Path) -> Result<DirState> {
    let meta = match std::fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DirState::Empty),
        Err(e) => return Err(StorageError::io("inspecting", dir, e)),
    };
    if !meta.is_dir() {
        let what = match std::fs::read(dir).ok().as_deref().map(|b| &b[..b.len().min(9)]) {
            Some(b"\x8a\x08\x04\x02\x01\x03\x00\x00\x00") | Some([b'r', b'e', b'd', b'b', ..]) => {
                "a file (it looks like a redb database made outside typed-kv); typed-kv stores are directories"
            }
            _ => "a file; typed-kv stores are directories",
        };
        return Err(StorageError::NotAStore { path: dir.to_owned(), reason: what.into() });
    }
    let marker = dir.join(MARKER_FILE);
    match std::fs::read_to_string(&marker) {
        Ok(text) => parse_marker(dir, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let entries: Vec<String> = std::fs::read_dir(dir)
                .map_err(|e| StorageError::io("listing", dir, e))?
                .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                // A marker's temporary file alone (with the lock) is a creation that was
                // interrupted before the marker was renamed into place: nothing else exists yet.
                .filter(|n| n != LOCK_FILE && n != MARKER_TMP_FILE)
                .collect();
            if entries.is_empty() {
                return Ok(DirState::Empty);
            }
            Err(foreign_dir(dir, &entries))
        }
        Err(e) => Err(StorageError::io("reading", marker, e)),
    }
}

/// The error for a non-empty directory without a marker, naming the engine if it looks like one.
fn foreign_dir(dir: &Path, entries: &[String]) -> StorageError {
    let has = |n: &str| entries.iter().any(|e| e == n);
    let found =
        if has(NATIVE_TABLES_FILE) || entries.iter().any(|e| e.starts_with("seg-") && e.ends_with(".tkv")) {
            Some("typed-kv native")
        } else if has("CURRENT") && has("IDENTITY") {
            Some("rocksdb")
        } else if has("conf") && has("db") {
            Some("sled")
        } else if entries.iter().any(|e| e.ends_with(".redb")) {
            Some("redb")
        } else {
            None
        };
    match found {
        Some(engine) => StorageError::NotAStore {
            path: dir.to_owned(),
            reason: format!("it holds a {engine} database made outside typed-kv (no {MARKER_FILE})"),
        },
        None => {
            let mut listed: Vec<&str> = entries.iter().take(5).map(String::as_str).collect();
            if entries.len() > 5 {
                listed.push("…");
            }
            StorageError::NotAStore {
                path: dir.to_owned(),
                reason: format!(
                    "the directory is not empty and has no {MARKER_FILE} (found {})",
                    listed.join(", ")
                ),
            }
        }
    }
}

fn parse_marker(dir: &Path, text: &str) -> Result<DirState> {
    let bad = |reason: String| StorageError::NotAStore { path: dir.to_owned(), reason };
    let mut lines = text.lines();
    match lines.next() {
        Some(MARKER_MAGIC) => {}
        Some(WIPING_MAGIC) => return Ok(DirState::Wiping),
        _ => return Err(bad(format!("{MARKER_FILE} does not start with `{MARKER_MAGIC}`"))),
    }
    let mut backend = None;
    let mut layout = None;
    let mut engine_created = false;
    for line in lines {
        if line == ENGINE_CREATED {
            engine_created = true;
            continue;
        }
        match line.split_once(' ') {
            Some(("backend", name)) => backend = Some(name.to_owned()),
            Some(("layout", v)) => layout = v.parse::<u32>().ok(),
            _ => {}
        }
    }
    if layout != Some(LAYOUT_VERSION) {
        let found = layout.map_or_else(|| "no readable layout version".to_owned(), |v| format!("layout {v}"));
        return Err(bad(format!("{MARKER_FILE} has {found}, this build reads layout {LAYOUT_VERSION}")));
    }
    let name = backend.ok_or_else(|| bad(format!("{MARKER_FILE} names no backend")))?;
    DatabaseBackend::from_name(&name)
        .map(|backend| DirState::Store { backend, engine_created })
        .ok_or_else(|| bad(format!("{MARKER_FILE} names an unknown backend `{name}`")))
}

/// Writes the marker of a `backend` store atomically; `engine_created` once the engine's
/// first open succeeded (its files exist).
pub(crate) fn write_marker(dir: &Path, backend: DatabaseBackend, engine_created: bool) -> Result<()> {
    let mut text = format!("{MARKER_MAGIC}\nlayout {LAYOUT_VERSION}\nbackend {}\n", backend.name());
    if engine_created {
        text.push_str(ENGINE_CREATED);
        text.push('\n');
    }
    replace_marker(dir, &text)
}

/// Marks the store as being wiped, atomically: from now on it opens as [`DirState::Wiping`]
/// until a new marker is written, so a wipe cut short is finished, never taken for a store.
pub(crate) fn mark_wiping(dir: &Path) -> Result<()> {
    replace_marker(dir, &format!("{WIPING_MAGIC}\nlayout {LAYOUT_VERSION}\n"))
}

/// Replaces the marker with `text`: temporary file, fsync, rename, fsync of the directory.
fn replace_marker(dir: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let tmp = dir.join(MARKER_TMP_FILE);
    let mut file = std::fs::File::create(&tmp).map_err(|e| StorageError::io("creating", &tmp, e))?;
    file.write_all(text.as_bytes()).map_err(|e| StorageError::io("writing", &tmp, e))?;
    file.sync_all().map_err(|e| StorageError::io("syncing", &tmp, e))?;
    let marker = dir.join(MARKER_FILE);
    std::fs::rename(&tmp, &marker).map_err(|e| StorageError::io("renaming", &tmp, e))?;
    sync_dir(dir)
}

/// Makes a directory's entries (creations, renames) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StorageError::io("syncing", dir, e))
}
