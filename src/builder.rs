//! [`StorageBuilder`]: where a storage lives, on which engine, and what to do with what is
//! already there.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::backends::{open_engine, EngineOptions};
use crate::catalog::{inspect_dir, mark_wiping, sync_dir, write_marker, DirState, LOCK_FILE, MARKER_FILE};
use crate::config::{DatabaseBackend, Durability, Recreate};
use crate::error::{Result, StorageError};
use crate::storage::Storage;

/// Configures and opens a [`Storage`].
///
/// ```
/// use typed_kv::{DatabaseBackend, Recreate, StorageBuilder};
///
/// let dir = tempfile::tempdir()?;
/// let storage = StorageBuilder::new(dir.path().join("db"))
///     .with_backend(DatabaseBackend::Redb)
///     .with_recreate(Recreate::IfMissing)
///     .with_version(1)
///     .build()?;
/// assert_eq!(storage.backend(), DatabaseBackend::Redb);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct StorageBuilder {
    path: PathBuf,
    backend: DatabaseBackend,
    recreate: Recreate,
    version: u64,
    durability: Durability,
    #[cfg(feature = "native")]
    native: crate::engine::Options,
    /// Whether [`with_backend`](Self::with_backend) was called.
    backend_chosen: bool,
    /// Refuse to create a store (see [`must_exist`](Self::must_exist)).
    must_exist: bool,
}

impl StorageBuilder {
    /// A storage in the directory `path` (created if missing), on the default backend.
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_owned(),
            backend: DatabaseBackend::DEFAULT,
            recreate: Recreate::default(),
            version: 0,
            durability: Durability::default(),
            #[cfg(feature = "native")]
            native: crate::engine::Options::default(),
            backend_chosen: false,
            must_exist: false,
        }
    }

    /// The engine to use.
    pub fn with_backend(mut self, backend: DatabaseBackend) -> Self {
        self.backend = backend;
        self.backend_chosen = true;
        self
    }

    /// Opens only a store that is already there, never creates one: a missing path or an
    /// empty directory is [`StorageError::StoreNotFound`]. Unless
    /// [`with_backend`](Self::with_backend) chose one, the store opens on the backend its
    /// marker names; a chosen backend that differs is [`StorageError::BackendMismatch`].
    /// For tools that open stores they did not make.
    ///
    /// ```
    /// use typed_kv::{DatabaseBackend, StorageBuilder, StorageError};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let missing = StorageBuilder::new(dir.path().join("nothing")).must_exist().build();
    /// assert!(matches!(missing, Err(StorageError::StoreNotFound { .. })));
    ///
    /// drop(StorageBuilder::new(dir.path()).with_backend(DatabaseBackend::Sled).build()?);
    /// let reopened = StorageBuilder::new(dir.path()).must_exist().build()?;
    /// assert_eq!(reopened.backend(), DatabaseBackend::Sled);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn must_exist(mut self) -> Self {
        self.must_exist = true;
        self
    }

    /// What to do with existing data; see [`Recreate`].
    pub fn with_recreate(mut self, recreate: Recreate) -> Self {
        self.recreate = recreate;
        self
    }

    /// The schema version stamped on tables built from this storage (0 by default); a table
    /// can override it with [`TableBuilder::with_version`](crate::TableBuilder::with_version).
    pub fn with_version(mut self, version: u64) -> Self {
        self.version = version;
        self
    }

    /// How durable each commit is; [`Durability::Immediate`] by default.
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Options of the native engine: segment size, checkpoints, background compaction,
    /// repair on open, the file system. Its `sync` mode is not taken from here but from
    /// [`with_durability`](Self::with_durability). Other backends ignore these.
    ///
    /// ```
    /// use typed_kv::{engine, StorageBuilder};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let storage = StorageBuilder::new(dir.path())
    ///     .with_native_options(engine::Options { segment_size: 8 << 20, ..Default::default() })
    ///     .build()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "native")]
    pub fn with_native_options(mut self, options: crate::engine::Options) -> Self {
        self.native = options;
        self
    }

    /// Opens the storage, creating, keeping or wiping what is at the path as
    /// [`with_recreate`](Self::with_recreate) says.
    ///
    /// Only a directory that typed-kv made (it has a `typed-kv.meta` marker) is ever wiped;
    /// any other non-empty path is an error whatever the policy.
    pub fn build(self) -> Result<Storage> {
        let Self {
            path,
            mut backend,
            recreate,
            version,
            durability,
            #[cfg(feature = "native")]
            native,
            backend_chosen,
            must_exist,
        } = self;
        if must_exist {
            backend = existing_backend(&path, backend_chosen.then_some(backend))?;
        }
        if !backend.is_compiled() {
            return Err(StorageError::BackendNotCompiled { backend });
        }
        // Judge what is there before creating anything, so a foreign file is left untouched.
        let state = match inspect_dir(&path) {
            Ok(state) => Some(state),
            Err(e) if may_wipe_uninspectable(recreate, &path, &e) => None,
            Err(e) => return Err(e),
        };
        std::fs::create_dir_all(&path).map_err(|e| StorageError::io("creating", &path, e))?;
        let (lock, read_only_fs) = lock_dir(&path, backend)?;
        let options = EngineOptions {
            durability,
            must_exist: false,
            #[cfg(feature = "native")]
            native,
        };
        let opened = Opening { path: &path, backend, recreate, options }.open(state);
        let (engine, engine_created) = opened.map_err(|e| match e {
            // Every backend writes when it opens: on a read-only file system that fails
            // somewhere, with an OS error that does not say why the store needs writing.
            e @ (StorageError::Io { .. } | StorageError::Engine { .. })
                if read_only_fs || e.is_read_only_fs() =>
            {
                StorageError::ReadOnlyFileSystem { path: path.clone(), source: Box::new(e) }
            }
            other => other,
        })?;
        let storage = Storage::from_engine(path.clone(), engine, recreate, version, lock)?;
        if !engine_created {
            // The engine's files exist now (the catalog table was just made): from here on
            // a missing one is lost data, not a store to create.
            write_marker(&path, backend, true)?;
        }
        Ok(storage)
    }
}

/// A store being opened under its lock: what is asked for.
struct Opening<'p> {
    path: &'p Path,
    backend: DatabaseBackend,
    recreate: Recreate,
    options: EngineOptions,
}

impl Opening<'_> {
    /// Wipes or creates what `state` and the policy say, then opens the engine; the engine,
    /// and whether the marker already said that its files were created.
    fn open(mut self, state: Option<DirState>) -> Result<(Box<dyn crate::backends::Engine>, bool)> {
        let path = self.path;
        let (wipe, engine_created) = match state {
            // A wipe cut short is finished, whatever the policy: it was asked for, and what
            // it left is no longer a store.
            None | Some(DirState::Wiping) => (true, false),
            Some(DirState::Empty) => (false, false),
            Some(DirState::Store { .. }) if self.recreate == Recreate::Always => (true, false),
            Some(DirState::Store { backend: found, .. }) if found != self.backend => {
                return Err(StorageError::BackendMismatch {
                    path: path.to_owned(),
                    found: found.name().to_owned(),
                    requested: self.backend,
                });
            }
            Some(DirState::Store { engine_created, .. }) => (false, engine_created),
        };
        if wipe {
            wipe_store(path)?;
        }
        if wipe || state == Some(DirState::Empty) {
            write_marker(path, self.backend, false)?;
        }
        self.options.must_exist = engine_created;
        let engine_dir = path.join(self.backend.name());
        match open_engine_in(self.backend, &engine_dir, &self.options) {
            Ok(engine) => Ok((engine, engine_created)),
            // Only bytes proven damaged are answered by a wipe: an I/O error, a permission, a
            // resource limit or a missing file says nothing about the data, which is kept.
            Err(e) if self.recreate == Recreate::OnValidationFail && e.proves_damage() => {
                wipe_store(path)?;
                write_marker(path, self.backend, false)?;
                self.options.must_exist = false;
                Ok((open_engine_in(self.backend, &engine_dir, &self.options)?, false))
            }
            Err(e) => Err(e),
        }
    }
}

/// The backend of the store at `path`, for [`StorageBuilder::must_exist`]: an error if there
/// is none, or if it is not `chosen` (when given).
fn existing_backend(path: &Path, chosen: Option<DatabaseBackend>) -> Result<DatabaseBackend> {
    let not_found = |reason| StorageError::StoreNotFound { path: path.to_owned(), reason };
    if !path.exists() {
        return Err(not_found("the path does not exist"));
    }
    match inspect_dir(path)? {
        DirState::Empty => Err(not_found("the directory is empty")),
        DirState::Wiping => Err(not_found("a wipe of the store there was cut short")),
        DirState::Store { backend: found, .. } => match chosen {
            Some(requested) if requested != found => Err(StorageError::BackendMismatch {
                path: path.to_owned(),
                found: found.name().to_owned(),
                requested,
            }),
            _ => Ok(found),
        },
    }
}

/// Whether a failed inspection of a directory that carries typed-kv's marker may be
/// answered by wiping: under `Always` (a wipe was asked for anyway), and under
/// `OnValidationFail` when the marker was read and is damaged (not when it could not be read).
fn may_wipe_uninspectable(recreate: Recreate, path: &Path, e: &StorageError) -> bool {
    let ours = path.join(MARKER_FILE).is_file();
    match recreate {
        Recreate::Always => ours,
        Recreate::OnValidationFail => ours && matches!(e, StorageError::NotAStore { .. }),
        _ => false,
    }
}

fn open_engine_in(
    backend: DatabaseBackend,
    dir: &Path,
    options: &EngineOptions,
) -> Result<Box<dyn crate::backends::Engine>> {
    if options.must_exist && !dir.is_dir() {
        return Err(StorageError::MissingEngineFile { path: dir.to_owned(), backend });
    }
    std::fs::create_dir_all(dir).map_err(|e| StorageError::io("creating", dir, e))?;
    open_engine(backend, dir, options)
}

/// Takes the storage's lock file, so that two users never wipe or open one store at once;
/// the file, and whether the store is on a read-only file system.
///
/// The lock file is opened for writing, so that it can be created. Where it cannot be (a
/// read-only file system, a read-only lock file), it is opened for reading: an `flock`
/// works on a read-only descriptor just as well.
fn lock_dir(dir: &Path, backend: DatabaseBackend) -> Result<(std::fs::File, bool)> {
    let lock_path = dir.join(LOCK_FILE);
    let writable = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path);
    let (file, read_only_fs) = match writable {
        Ok(file) => (file, false),
        Err(e) if matches!(e.kind(), ErrorKind::ReadOnlyFilesystem | ErrorKind::PermissionDenied) => {
            let read_only_fs = e.kind() == ErrorKind::ReadOnlyFilesystem;
            match std::fs::File::open(&lock_path) {
                Ok(file) => (file, read_only_fs),
                Err(_) if read_only_fs => {
                    let source = Box::new(StorageError::io("creating", &lock_path, e));
                    return Err(StorageError::ReadOnlyFileSystem { path: dir.to_owned(), source });
                }
                Err(_) => return Err(StorageError::io("opening", &lock_path, e)),
            }
        }
        Err(e) => return Err(StorageError::io("opening", &lock_path, e)),
    };
    // A process that forks while this one held the lock keeps the lock (its open file is
    // duplicated into the child until exec) for a moment: a reopen right after a close may
    // find it held. Retry briefly before saying "locked".
    let started = std::time::Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok((file, read_only_fs)),
            Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < LOCK_RETRY_FOR => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StorageError::Locked { path: dir.to_owned(), backend })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(StorageError::io("locking", &lock_path, e)),
        }
    }
}

/// How long [`lock_dir`] retries a held lock: far longer than a fork-to-exec window, short
/// enough that a second process learns at once that the store is in use.
const LOCK_RETRY_FOR: std::time::Duration = std::time::Duration::from_millis(250);

/// Deletes everything in a store directory but its lock file.
fn wipe_store(dir: &Path) -> Result<()> {
    // First the marker says "being wiped": a wipe cut short then leaves a directory that
    // every later open wipes again, never a part of a store that opens as a whole one.
    if dir.join(MARKER_FILE).is_file() {
        mark_wiping(dir)?;
    }
    let entries = std::fs::read_dir(dir).map_err(|e| StorageError::io("listing", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("listing", dir, e))?;
        if entry.file_name() == LOCK_FILE || entry.file_name() == MARKER_FILE {
            continue;
        }
        let p = entry.path();
        let removed = if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        removed.map_err(|e| StorageError::io("removing", &p, e))?;
    }
    // The marker goes last, once the rest is durably gone: a wipe cut short leaves a store
    // marked as being wiped, never unmarked leftovers that typed-kv would refuse to touch
    // as a foreign directory.
    sync_dir(dir)?;
    let marker = dir.join(MARKER_FILE);
    match std::fs::remove_file(&marker) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StorageError::io("removing", &marker, e)),
    }
    sync_dir(dir)
}
