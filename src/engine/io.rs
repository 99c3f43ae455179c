//! Every file operation of the engine, behind one small interface ([`Vfs`]) so that tests can
//! make the Nth write, fsync, rename, mapping, open or removal fail ([`FaultyVfs`]).
//!
//! The real implementation, [`OsVfs`], is a thin layer over `std::fs` and `memmap2`. The one
//! `unsafe` of this module is the mapping itself.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create it; it must not exist.
    CreateNew,
    /// Open an existing file for reading and writing.
    ReadWrite,
    /// Open an existing file for reading.
    ReadOnly,
}

/// A file system, as the engine uses it.
pub trait Vfs: Send + Sync + fmt::Debug {
    /// Opens `path`.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VfsFile>>;
    /// Names of the entries of directory `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Deletes the file `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (files created, renamed, removed) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Creates `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
}

/// An open file.
pub trait VfsFile: Send + Sync + fmt::Debug {
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Fills `buf` from `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Makes the file's data (and the metadata needed to read it) durable.
    fn sync_data(&self) -> io::Result<()>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Maps `len` bytes from the start of the file, read-only and shared. `len` may exceed
    /// the file's length: pages past the end must not be read until written.
    fn map(&self, len: usize) -> io::Result<Mapping>;
}

/// A read-only shared mapping of a file.
pub struct Mapping {
    map: memmap2::Mmap,
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping").field("len", &self.map.len()).finish()
    }
}

impl Mapping {
    /// Length of the mapping.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Address of the first byte.
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.map.as_ptr()
    }
}

/// The operating system's files.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsVfs;

#[derive(Debug)]
struct OsFile(File);

impl Vfs for OsVfs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VfsFile>> {
        let mut options = OpenOptions::new();
        match mode {
            OpenMode::CreateNew => options.read(true).write(true).create_new(true),
            OpenMode::ReadWrite => options.read(true).write(true),
            OpenMode::ReadOnly => options.read(true),
        };
        Ok(Arc::new(OsFile(options.open(path)?)))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
}

impl VfsFile for OsFile {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn map(&self, len: usize) -> io::Result<Mapping> {
        // SAFETY: memmap2 requires that nobody modifies the mapped file in a way that breaks
        // the references it hands out. The engine holds the directory's exclusive lock, so
        // no other typed-kv user writes these files, and the crate docs state that other
        // programs must not either. Within the engine, bytes are only read through a
        // mapping once written, and written bytes are never rewritten (segments are
        // append-only; whole files are unlinked, never truncated below written data).
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(&self.0)? };
        Ok(Mapping { map })
    }
}

/// A file operation that [`FaultyVfs`] can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultOp {
    /// `write_all_at`. A failing write first writes half of its bytes, as a torn write would.
    Write,
    /// `sync_data` and `sync_dir`.
    Sync,
    /// `rename`.
    Rename,
    /// `map`.
    Map,
    /// `open`, whatever the mode (so also the creation of a file).
    Open,
    /// `remove_file`.
    Remove,
}

const FAULT_OPS: usize = 6;

impl FaultOp {
    fn slot(self) -> usize {
        match self {
            FaultOp::Write => 0,
            FaultOp::Sync => 1,
            FaultOp::Rename => 2,
            FaultOp::Map => 3,
            FaultOp::Open => 4,
            FaultOp::Remove => 5,
        }
    }
}

#[derive(Debug, Default)]
struct FaultState {
    counts: [AtomicU64; FAULT_OPS],
    /// Per operation, the 1-based count at which it fails once.
    fail_at: Mutex<[Option<u64>; FAULT_OPS]>,
}

/// The OS file system with injectable failures: "the Nth write fails". Counts every
/// operation, so a test can first run a workload to count its writes, then replay it
/// failing at each one. Clones share their counters.
#[derive(Debug, Default, Clone)]
pub struct FaultyVfs {
    state: Arc<FaultState>,
}

impl FaultyVfs {
    /// A file system that fails nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the `n`th (1-based, counted from now on or from the start) `op` fail once.
    pub fn fail_nth(&self, op: FaultOp, n: u64) {
        self.state.fail_at.lock()[op.slot()] = Some(n);
    }

    /// How many times `op` ran (failed attempts included).
    pub fn count(&self, op: FaultOp) -> u64 {
        self.state.counts[op.slot()].load(Ordering::SeqCst)
    }

    /// Counts `op` and says whether it must fail.
    fn check(&self, op: FaultOp) -> io::Result<()> {
        let n = self.state.counts[op.slot()].fetch_add(1, Ordering::SeqCst) + 1;
        let mut fail_at = self.state.fail_at.lock();
        if fail_at[op.slot()] == Some(n) {
            fail_at[op.slot()] = None;
            return Err(io::Error::other(format!("injected failure of {op:?} #{n}")));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct FaultyFile {
    inner: Arc<dyn VfsFile>,
    vfs: FaultyVfs,
}

impl Vfs for FaultyVfs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VfsFile>> {
        self.check(FaultOp::Open)?;
        Ok(Arc::new(FaultyFile { inner: OsVfs.open(path, mode)?, vfs: self.clone() }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        OsVfs.list(dir)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check(FaultOp::Rename)?;
        OsVfs.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.check(FaultOp::Remove)?;
        OsVfs.remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.check(FaultOp::Sync)?;
        OsVfs.sync_dir(dir)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        OsVfs.create_dir_all(dir)
    }
}

impl VfsFile for FaultyFile {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if let Err(e) = self.vfs.check(FaultOp::Write) {
            // A torn write: part of the bytes may reach the file.
            self.inner.write_all_at(&buf[..buf.len() / 2], offset)?;
            return Err(e);
        }
        self.inner.write_all_at(buf, offset)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.vfs.check(FaultOp::Sync)?;
        self.inner.sync_data()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }

    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }

    fn map(&self, len: usize) -> io::Result<Mapping> {
        self.vfs.check(FaultOp::Map)?;
        self.inner.map(len)
    }
}
