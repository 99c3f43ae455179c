//! `typed-kv`: look inside a typed-kv store, check it, compact it, copy it to another
//! backend, and dump a table, without writing code.
//!
//! Exit codes: 0 when all went well, 1 when the command could not do its work (the message
//! says why), 2 for a command line clap refuses, 3 when `verify` found problems.

mod compact;
mod copy;
mod dump;
mod errors;
mod human;
mod info;
mod progress;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use typed_kv::{DatabaseBackend, Storage, StorageBuilder};

/// Operate typed-kv stores: inspect, verify, compact, copy between backends, dump.
#[derive(Debug, Parser)]
#[command(name = "typed-kv", version, about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the backend, the tables with their formats and schema versions, counts and sizes.
    Info {
        /// The store's directory.
        path: PathBuf,
        #[command(flatten)]
        backend: BackendArg,
    },
    /// Read every record of every table and check it: engine checksums where the engine has
    /// them, and each key and value as far as its format allows without the Rust type.
    /// Exits with 3 if anything is wrong.
    Verify {
        /// The store's directory.
        path: PathBuf,
        #[command(flatten)]
        backend: BackendArg,
    },
    /// Reclaim space the engine no longer needs.
    Compact {
        /// The store's directory.
        path: PathBuf,
        #[command(flatten)]
        backend: BackendArg,
    },
    /// Copy every table (stamps, keys and values as stored) into another store, of any
    /// backend. DST is created if missing; a DST that has tables is refused unless
    /// --overwrite.
    Copy {
        /// The source store's directory.
        src: PathBuf,
        /// The target store's directory.
        dst: PathBuf,
        /// The target's backend.
        #[arg(long, value_enum)]
        to_backend: BackendName,
        /// Replace target tables of the same names (others are kept).
        #[arg(long)]
        overwrite: bool,
        /// Records per committed chunk.
        #[arg(long, default_value_t = typed_kv::DEFAULT_CHUNK_RECORDS)]
        chunk_records: usize,
    },
    /// Print a table's keys and values, decoded where the format allows it without the Rust
    /// type, else in hex.
    Dump {
        /// The store's directory.
        path: PathBuf,
        /// The table.
        table: String,
        /// Print at most this many entries.
        #[arg(long)]
        limit: Option<u64>,
        /// One JSON object per line (JSON Lines) instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        backend: BackendArg,
    },
}

/// `--backend`, for commands that open an existing store.
#[derive(Debug, clap::Args)]
struct BackendArg {
    /// The backend the store must be of (by default, the one its marker names).
    #[arg(long, value_enum)]
    backend: Option<BackendName>,
}

/// Backend names as typed on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum BackendName {
    Native,
    Redb,
    Sled,
    Rocksdb,
}

impl From<BackendName> for DatabaseBackend {
    fn from(name: BackendName) -> Self {
        match name {
            BackendName::Native => DatabaseBackend::Native,
            BackendName::Redb => DatabaseBackend::Redb,
            BackendName::Sled => DatabaseBackend::Sled,
            BackendName::Rocksdb => DatabaseBackend::RocksDb,
        }
    }
}

/// Why a command did not succeed.
enum Failure {
    /// It could not do its work.
    Error(errors::Explained),
    /// It did its work and found problems (verify).
    Problems,
    /// Whoever read the output stopped reading (`typed-kv dump … | head`): not an error.
    OutputClosed,
}

impl From<typed_kv::StorageError> for Failure {
    fn from(e: typed_kv::StorageError) -> Self {
        Failure::Error(errors::explain(e))
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Failure::OutputClosed;
        }
        Failure::Error(errors::Explained { message: format!("writing the output: {e}"), hint: None })
    }
}

/// Opens the existing store at `path`, on the backend its marker names unless `backend`
/// says which one it must be.
fn open_existing(path: &std::path::Path, backend: &BackendArg) -> Result<Storage, typed_kv::StorageError> {
    let builder = StorageBuilder::new(path).must_exist();
    match backend.backend {
        Some(name) => builder.with_backend(name.into()).build(),
        None => builder.build(),
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Info { path, backend } => info::run(&open_existing(&path, &backend)?),
        Command::Verify { path, backend } => verify::run(&open_existing(&path, &backend)?),
        Command::Compact { path, backend } => compact::run(&open_existing(&path, &backend)?),
        Command::Copy { src, dst, to_backend, overwrite, chunk_records } => {
            let source = open_existing(&src, &BackendArg { backend: None })?;
            copy::run(&source, &dst, to_backend.into(), overwrite, chunk_records)
        }
        Command::Dump { path, table, limit, json, backend } => {
            dump::run(&open_existing(&path, &backend)?, &table, limit, json)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Problems) => ExitCode::from(3),
        Err(Failure::OutputClosed) => ExitCode::SUCCESS,
        Err(Failure::Error(explained)) => {
            eprintln!("typed-kv: error: {}", explained.message);
            if let Some(hint) = explained.hint {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(1)
        }
    }
}
