//! The one error type of typed-kv.

use std::path::PathBuf;

use crate::catalog::TableStamp;
use crate::config::DatabaseBackend;
use crate::formats::FormatError;

/// Shorthand for results of typed-kv operations.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A boxed error from an engine (redb, sled, RocksDB).
pub type EngineError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong, with what, where (path, table, key) and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A file-system operation failed.
    #[error("I/O error while {action} {}: {source}", path.display())]
    Io {
        /// What typed-kv was doing.
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The engine reported an error.
    #[error("{backend} error while {action}: {source}")]
    Engine {
        /// Which engine.
        backend: DatabaseBackend,
        /// What typed-kv was doing, naming the table where there is one.
        action: String,
        /// The engine's error.
        #[source]
        source: EngineError,
    },

    /// A file holds bytes the engine did not write there: damage on disk, checked so. The
    /// native engine reports where; [`Recreate::OnValidationFail`](crate::Recreate) starts
    /// the store over.
    #[error("{} is corrupt at offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },

    /// redb, sled or RocksDB found its own files damaged (its corruption error), or written in
    /// a format this build cannot read. Like [`Corrupt`](Self::Corrupt), this proves damage:
    /// [`Recreate::OnValidationFail`](crate::Recreate) starts the store over.
    #[error("{backend} found its files damaged while {action}: {source}")]
    EngineCorrupt {
        /// Which engine.
        backend: DatabaseBackend,
        /// What typed-kv was doing.
        action: String,
        /// The engine's error.
        #[source]
        source: EngineError,
    },

    /// The store's engine was created once (its marker says so), but a file or directory the
    /// engine keeps is gone: deleted or moved. typed-kv does not start a new empty store in
    /// its place.
    #[error("{} is missing: the {backend} engine of this store was created, but its files are gone", path.display())]
    MissingEngineFile {
        /// The missing file or directory.
        path: PathBuf,
        /// The store's backend.
        backend: DatabaseBackend,
    },

    /// The store is on a read-only file system, and opening it needs write access.
    #[error("{} is on a read-only file system; opening it needs write access", path.display())]
    ReadOnlyFileSystem {
        /// The store's path.
        path: PathBuf,
        /// The write that failed.
        #[source]
        source: Box<StorageError>,
    },

    /// A file the store must hold is missing or shorter than the store recorded (native: its
    /// manifest lists every segment and each sealed one's length). What is gone was
    /// acknowledged; nothing proves the bytes that remain wrong, so
    /// [`Recreate::OnValidationFail`](crate::Recreate) does not wipe on it.
    #[error("{} is missing data from offset {offset}: {reason}", path.display())]
    MissingData {
        /// The missing or cut file.
        path: PathBuf,
        /// Where the missing bytes start (0 for a missing file).
        offset: u64,
        /// What the store expected.
        reason: String,
    },

    /// Another process (or another `Storage` in this one) holds the store open.
    #[error("{} is locked by another user of the store ({backend})", path.display())]
    Locked {
        /// The store's path.
        path: PathBuf,
        /// Its backend.
        backend: DatabaseBackend,
    },

    /// The backend was not compiled into this build.
    #[error("backend {backend} is not compiled in (enable the cargo feature `{}`)", backend.name())]
    BackendNotCompiled {
        /// The backend asked for.
        backend: DatabaseBackend,
    },

    /// The path holds a store of another backend.
    #[error("{} holds a {found} store, not {requested}", path.display())]
    BackendMismatch {
        /// The store's path.
        path: PathBuf,
        /// What the path holds, as named in its marker or recognised from its files.
        found: String,
        /// The backend asked for.
        requested: DatabaseBackend,
    },

    /// The path exists but is not a typed-kv store, or its metadata is damaged.
    #[error("{} is not a usable typed-kv store: {reason}", path.display())]
    NotAStore {
        /// The path.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },

    /// Stored bytes of a table could not be decoded by its format.
    #[error("cannot decode {what} in table `{table}`{}: {source}", key_context(key))]
    Decode {
        /// The table.
        table: String,
        /// `"value"` or `"key"`.
        what: &'static str,
        /// The raw key, in hex (shortened), when known.
        key: Option<String>,
        /// The format's reason.
        #[source]
        source: FormatError,
    },

    /// A key or value could not be encoded.
    #[error("cannot encode {what} for table `{table}`: {source}")]
    Encode {
        /// The table.
        table: String,
        /// `"value"` or `"key"`.
        what: &'static str,
        /// The format's reason.
        #[source]
        source: FormatError,
    },

    /// A key or value is larger than typed-kv accepts on every backend.
    #[error("{what} of {len} bytes for table `{table}` is over the limit of {max} bytes")]
    TooLarge {
        /// The table.
        table: String,
        /// `"key"` or `"value"`.
        what: &'static str,
        /// Its encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A table was reopened with formats, types or a schema version other than it was made
    /// with.
    #[error("table `{table}` was created as {stored} but is opened as {requested}")]
    TableTypeMismatch {
        /// The table.
        table: String,
        /// What the catalog holds.
        stored: Box<TableStamp>,
        /// What the code asked for.
        requested: Box<TableStamp>,
    },

    /// The stored schema version is newer than the code's (`Recreate::OnVersionBump`).
    #[error("table `{table}` has schema version {stored}, newer than the requested {requested}")]
    VersionDowngrade {
        /// The table.
        table: String,
        /// Version in the catalog.
        stored: u64,
        /// Version asked for.
        requested: u64,
    },

    /// A table name is empty, too long, or reserved.
    #[error("invalid table name {name:?}: {reason}")]
    InvalidTableName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// A table was used with a snapshot or batch of another storage.
    #[error("table `{table}` belongs to another storage")]
    ForeignTable {
        /// The table.
        table: String,
    },

    /// The table does not exist.
    #[error("no table named `{table}`")]
    TableNotFound {
        /// The name asked for.
        table: String,
    },

    /// The table holds entries but has no stamp in the catalog (the stamp was lost, e.g. with
    /// a damaged or deleted file). Its layout is unknown, so it is neither used nor cleared.
    #[error(
        "table `{table}` holds {entries} entries but has no stamp in the catalog: its layout is unknown"
    )]
    UnstampedTable {
        /// The table.
        table: String,
        /// How many entries it holds.
        entries: u64,
    },

    /// The table was dropped ([`Storage::drop_table`](crate::Storage::drop_table)) or
    /// recreated by a [`Recreate`](crate::Recreate) policy after this handle was built: the
    /// handle is dead, even if a table of that name exists again.
    #[error("table `{table}` was dropped; build it again to use it")]
    TableDropped {
        /// The table.
        table: String,
    },

    /// The catalog of table stamps is damaged.
    #[error("catalog entry of table `{table}` is damaged: {reason}")]
    CorruptCatalog {
        /// The table.
        table: String,
        /// What is wrong.
        reason: String,
    },

    /// The operation needs something the storage cannot give right now, e.g. exclusive access
    /// for redb's compaction while a snapshot is open.
    #[error("{action} is not possible now: {reason}")]
    Busy {
        /// What was asked.
        action: &'static str,
        /// Why not.
        reason: String,
    },

    /// A copy between storages was refused or could not finish
    /// ([`Storage::copy_to`](crate::Storage::copy_to)).
    #[error("copy into {} refused: {reason}", target.display())]
    CopyRefused {
        /// The target storage's path.
        target: PathBuf,
        /// Why.
        reason: String,
    },

    /// No typed-kv store is at the path, and the builder was told not to create one
    /// ([`StorageBuilder::must_exist`](crate::StorageBuilder::must_exist)).
    #[error("no typed-kv store at {}: {reason}", path.display())]
    StoreNotFound {
        /// The path.
        path: PathBuf,
        /// What is there instead.
        reason: &'static str,
    },

    /// A third-party engine (redb, sled, RocksDB) panicked, typically on a damaged file. The
    /// panic was contained, but it may have left the engine's memory inconsistent, so the
    /// store refuses every later call ([`Poisoned`](Self::Poisoned)): reopen it.
    #[error(
        "{backend} panicked while {action}: {message}; the store refuses further use until it is reopened"
    )]
    EnginePanicked {
        /// Which engine.
        backend: DatabaseBackend,
        /// What typed-kv was doing, naming the table where there is one.
        action: String,
        /// The panic's message.
        message: String,
    },

    /// The engine panicked earlier ([`EnginePanicked`](Self::EnginePanicked)), and the store
    /// refuses further use until it is reopened.
    #[error("{backend} store refuses {action}: its engine panicked earlier ({panic}); reopen the store")]
    Poisoned {
        /// Which engine.
        backend: DatabaseBackend,
        /// What was asked, naming the table where there is one.
        action: String,
        /// The earlier panic: what was being done, and its message.
        panic: String,
    },

    /// An ingest worker stopped unexpectedly.
    #[error("ingest into table `{table}` stopped: {reason}")]
    Ingest {
        /// The table.
        table: String,
        /// Why.
        reason: String,
    },
}

fn key_context(key: &Option<String>) -> String {
    match key {
        Some(k) => format!(" at key {k}"),
        None => String::new(),
    }
}

/// Hex of a raw key for error messages, shortened past 32 bytes.
pub(crate) fn key_hex(key: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(2 * key.len().min(32) + 16);
    s.push_str("0x");
    for b in key.iter().take(32) {
        let _ = write!(s, "{b:02x}");
    }
    if key.len() > 32 {
        let _ = write!(s, "… ({} bytes)", key.len());
    }
    s
}

impl StorageError {
    /// Whether this error proves that stored bytes are damaged or in a format this build
    /// does not read: a checked corruption ([`Corrupt`](Self::Corrupt),
    /// [`EngineCorrupt`](Self::EngineCorrupt)) or an undecodable catalog stamp
    /// ([`CorruptCatalog`](Self::CorruptCatalog)). Only such errors let
    /// [`Recreate::OnValidationFail`](crate::Recreate::OnValidationFail) wipe; an I/O error, a
    /// permission, a resource limit or anything else proves nothing about the bytes.
    pub fn proves_damage(&self) -> bool {
        matches!(self, Self::Corrupt { .. } | Self::EngineCorrupt { .. } | Self::CorruptCatalog { .. })
    }

    /// Whether an operating-system error somewhere in this error's chain says the file
    /// system is read-only (`EROFS`).
    pub(crate) fn is_read_only_fs(&self) -> bool {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cause {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::ReadOnlyFilesystem {
                    return true;
                }
            }
            cause = e.source();
        }
        false
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { action, path: path.into(), source }
    }

    pub(crate) fn engine(
        backend: DatabaseBackend,
        action: impl Into<String>,
        source: impl Into<EngineError>,
    ) -> Self {
        Self::Engine { backend, action: action.into(), source: source.into() }
    }
}
