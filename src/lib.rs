//! # typed-kv
//!
//! Typed tables over pluggable embedded key-value stores, with zero-copy reads.
//!
//! A [`StorageBuilder`] picks the engine once ([`DatabaseBackend`]: typed-kv's own
//! [native engine](engine), the default, or redb, sled, RocksDB);
//! each table picks a key format and a value format; [`Table::get`] returns a [`Guard`]
//! that reads the value in place (rkyv, flatbuffers) or decoded once (bincode, postcard).
//!
//! ```
//! use typed_kv::{DatabaseBackend, OrderedFormat, RkyvFormat, StorageBuilder};
//!
//! #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
//! struct Filing { cik: u64, form: String, pages: u32 }
//!
//! let dir = tempfile::tempdir()?;
//! let storage = StorageBuilder::new(dir.path().join("db"))
//!     .with_backend(DatabaseBackend::Native) // the default
//!     .build()?;
//! let filings = storage
//!     .new_table::<(u64, u32), Filing>("filings")
//!     .with_key_format(OrderedFormat::new())
//!     .with_value_format(RkyvFormat::new())
//!     .build()?;
//! filings.put(&(320193, 2024), &Filing { cik: 320193, form: "10-K".into(), pages: 121 })?;
//! let guard = filings.get(&(320193, 2024))?.expect("stored above");
//! assert_eq!(guard.form, "10-K"); // `&ArchivedFiling`, validated, read in place
//! for entry in filings.range((320193, 0)..(320194, 0))? {
//!     let (key, filing) = entry?;
//!     assert_eq!(key.0, filing.cik);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## What it is
//!
//! - **Typed**: tables are `Table<K, V, KeyFormat, ValueFormat>`; every table is stamped in
//!   the store with its formats, type names and schema version, and reopening it otherwise is
//!   a [`StorageError::TableTypeMismatch`], not garbage. See [`Recreate`] for migrations.
//! - **Zero-copy**: guards hold the engine's own bytes (the native engine's memory-mapped
//!   segments, redb `AccessGuard`, sled `IVec`, RocksDB pinned slices). rkyv needs
//!   16-byte-aligned bytes: the native engine stores them so; when another engine gives
//!   misaligned ones, the guard copies them once into an aligned buffer and counts it
//!   ([`Storage::aligned_copies`]).
//! - **Safe on bad bytes**: every decode is validated (rkyv with bytecheck, flatbuffers with
//!   its verifier); corrupt data is a [`StorageError::Decode`] naming table and key.
//! - **Atomic and consistent**: [`Table::put_all`] and [`WriteBatch`] commit all or nothing,
//!   across tables; [`Storage::read`] and [`Table::with_stream`] read one snapshot.
//! - **Streams**: [`Table::put_stream`] ingests an async stream in chunked commits on a
//!   writer thread, with back-pressure; [`Table::with_stream`] lends a snapshot's entries to
//!   a closure as a stream.
//!
//! ## What it is not
//!
//! - Not a query engine: no secondary indexes, no joins. Keys are ordered only with an
//!   order-preserving key format ([`OrderedFormat`], [`BytesFormat`]); only those tables
//!   have `range`.
//! - Not multi-process: one process opens a store at a time ([`StorageError::Locked`]).
//! - Not for stores whose keys do not fit in memory on the native engine: it keeps every key
//!   in an in-memory index (about 72 bytes per key of up to 30 bytes); values stay on disk.
//!   Nobody but typed-kv may write its files while they are mapped.
//! - Writes are batches, not read-write transactions: a [`WriteBatch`] does not read its
//!   own writes.
//!
//! ## Limits
//!
//! Keys up to [`MAX_KEY_LEN`] bytes and values up to [`MAX_VALUE_LEN`] bytes once encoded,
//! on every backend. Table names: 1 to 200 bytes, no control characters, not starting with
//! `__typed_kv`. sled has no snapshots: typed-kv emulates them by making writers wait while a
//! snapshot is open. `len` is O(n) on sled and RocksDB.
//!
//! ## Operating a store
//!
//! - [`Storage::copy_to`] copies every table, stamps and bytes as stored, into a storage of
//!   any backend, in atomic chunks with back-pressure: the way from one engine to another.
//! - [`Storage::stats`]: keys, bytes on disk, aligned copies and compactions, per table and
//!   in total, as far as the engine tells without reading the data.
//! - [`Storage::verify`] reads every record, checks the engine's checksums where it keeps
//!   them and each key and value as far as its format allows without the Rust type, and
//!   reports problems with table, key and reason.
//! - [`Storage::untyped_table`] reads a table without its Rust types, for tools.
//! - The `typed-kv` command-line tool (cargo feature `cli`) does all this from a shell:
//!   `typed-kv info | verify | compact | copy | dump`.
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod backends;
mod builder;
mod catalog;
mod config;
mod copy;
#[cfg(feature = "native")]
pub mod engine;
mod error;
pub mod formats;
mod stats;
mod storage;
mod table;
mod txn;
pub mod untyped;
mod verify;

pub use backends::CompactionReport;
pub use builder::StorageBuilder;
pub use catalog::TableStamp;
pub use config::{DatabaseBackend, Durability, Recreate};
pub use copy::{
    CopyBuilder, CopyProgress, CopyReport, TableCopy, DEFAULT_CHUNK_BYTES, DEFAULT_CHUNK_RECORDS,
};
pub use error::{EngineError, Result, StorageError};
pub use formats::bincode::BincodeFormat;
pub use formats::bytes::BytesFormat;
pub use formats::flatbuffers::{FlatbuffersFormat, FlatbuffersRecord, FlatbuffersView};
pub use formats::ordered::{OrderedFormat, OrderedKey};
pub use formats::postcard::PostcardFormat;
pub use formats::rkyv::RkyvFormat;
pub use formats::{FormatError, KeyFormat, OrderPreserving, ValueFormat};
pub use stats::{StorageStats, TableStats};
pub use storage::Storage;
pub use table::{
    Entries, Guard, IngestOptions, IngestProgress, IngestReport, KeyValue, Keys, Table, TableBuilder,
    TableSnapshot, TableStream, Unset, Values, MAX_KEY_LEN, MAX_VALUE_LEN,
};
pub use txn::{ReadTxn, WriteBatch};
pub use untyped::{UntypedEntries, UntypedEntry, UntypedTable};
pub use verify::{
    ChecksumCheck, FormatCheck, TableVerify, VerifyProblem, VerifyProgress, VerifyReport, VerifyStage,
    MAX_LISTED_PROBLEMS,
};
