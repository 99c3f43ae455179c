//! Choices made once, when a storage is built: which engine, what to do with existing data,
//! and how durable a commit is.

use std::fmt;

/// The key-value engine behind a [`Storage`](crate::Storage).
///
/// Every variant exists whatever cargo features are on, so code that names a backend always
/// compiles; building a storage whose backend was not compiled in returns
/// [`StorageError::BackendNotCompiled`](crate::StorageError::BackendNotCompiled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DatabaseBackend {
    /// typed-kv's own log-structured engine ([`crate::engine`]; feature `native`, the
    /// default): values read in place from memory-mapped segments.
    Native,
    /// [redb](https://docs.rs/redb): copy-on-write B-trees in one file (feature `redb`).
    Redb,
    /// [sled](https://docs.rs/sled) 0.34 (feature `sled`).
    Sled,
    /// [RocksDB](https://docs.rs/rocksdb) through `rust-rocksdb` (feature `rocksdb`).
    RocksDb,
}

impl DatabaseBackend {
    /// The backend used when none is chosen: the native engine, or redb in builds without
    /// the `native` feature.
    pub const DEFAULT: DatabaseBackend =
        if cfg!(feature = "native") { DatabaseBackend::Native } else { DatabaseBackend::Redb };

    /// Every backend, compiled in or not.
    pub const ALL: [DatabaseBackend; 4] = [Self::Native, Self::Redb, Self::Sled, Self::RocksDb];

    /// The backend's stable name, as written in a store's marker file.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Redb => "redb",
            Self::Sled => "sled",
            Self::RocksDb => "rocksdb",
        }
    }

    /// The backend named `name` (as given by [`name`](Self::name)).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Whether this build of typed-kv includes the backend.
    pub const fn is_compiled(self) -> bool {
        match self {
            Self::Native => cfg!(feature = "native"),
            Self::Redb => cfg!(feature = "redb"),
            Self::Sled => cfg!(feature = "sled"),
            Self::RocksDb => cfg!(feature = "rocksdb"),
        }
    }

    /// The backends compiled into this build.
    pub fn compiled() -> impl Iterator<Item = DatabaseBackend> {
        Self::ALL.into_iter().filter(|b| b.is_compiled())
    }
}

impl Default for DatabaseBackend {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for DatabaseBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to do with data already at the storage path, and with tables whose stamp no longer
/// matches what the code asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Recreate {
    /// Open what is there or create it; never delete anything. A table whose stamp differs
    /// (formats, types or schema version) is an error.
    #[default]
    IfMissing,
    /// Delete everything at the path and start empty. A wipe cut short by a crash is
    /// finished by the next open, whatever its policy: the store never reopens half deleted.
    Always,
    /// Like `IfMissing`, but a table stamped with a lower schema version than requested is
    /// cleared and restamped; a higher stored version is an error (code older than data).
    OnVersionBump,
    /// Like `IfMissing`, but what is proven wrong is deleted and started empty instead of
    /// failing. Exactly these lead to a wipe:
    /// - the store: its marker `typed-kv.meta` was read and is not a marker of this layout,
    ///   or the engine refused to open its files with an error that proves damage
    ///   ([`StorageError::proves_damage`](crate::StorageError::proves_damage): the native
    ///   engine's `Corrupt`, redb's, sled's and RocksDB's own corruption or unreadable-format
    ///   errors);
    /// - a table (cleared and restamped): its stamp differs from the one asked for (formats,
    ///   types or schema version), or cannot be decoded.
    ///
    /// Everything else is returned and the data kept: I/O errors, permissions, resource limits
    /// (too many open files), a missing engine file, a lock held, anything unknown. A table
    /// that holds entries but has no stamp is
    /// [`StorageError::UnstampedTable`](crate::StorageError::UnstampedTable), never cleared.
    OnValidationFail,
}

/// How durable a commit is when it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Every commit is on stable storage (fsync) before it returns.
    #[default]
    Immediate,
    /// Commits are not synced; a crash may lose recent commits (never a partial one).
    /// Data is synced when the storage is dropped or [`Storage::flush`](crate::Storage::flush)
    /// is called.
    None,
}
