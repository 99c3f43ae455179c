//! [`Storage::verify`]: reads every record of every table, checks what can be checked without
//! the Rust types, and reports every problem with table, key and reason.
//!
//! Two passes:
//!
//! 1. **Engine checksums**, where the engine keeps checksums it can check on demand
//!    ([`ChecksumCheck`]): the native engine re-reads every record of every segment against
//!    its CRC-32C and checks its index against the log; redb runs its integrity check (XXH3
//!    of every page; it repairs what it can, so it may write). sled checks its log's CRCs only
//!    when it opens a store; RocksDB checks block checksums as blocks are read, which pass 2
//!    does.
//! 2. **Every record of every table** is read through the engine, and its key and value are
//!    checked as far as the stamped format allows without the Rust type ([`FormatCheck`]):
//!    `bytes` always pass; `ordered` keys of standard types are decoded exactly; flatbuffers
//!    values have their root table's frame checked (fields need the schema); rkyv, bincode
//!    and postcard bytes need the Rust type, so nothing of them is checked beyond their
//!    being readable, and the report says so per table.
//!
//! The report lists what was not checked as plainly as what was: a clean report on a table of
//! rkyv values says that the engine could read every value and its checksums matched, not
//! that every value is a valid archive (a typed guard checks that when it is made).

use std::fmt;
use std::ops::Bound;
use std::path::PathBuf;

use crate::catalog::TableStamp;
use crate::config::DatabaseBackend;
use crate::error::{key_hex, Result, StorageError};
use crate::storage::Storage;
use crate::untyped::{KeyCheck, ValueCheck};

/// Problems listed in a report at most; more are only counted.
pub const MAX_LISTED_PROBLEMS: usize = 1000;

/// What [`Storage::verify`] read, checked and found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// The engine.
    pub backend: DatabaseBackend,
    /// What the engine's own checksum check did.
    pub checksums: ChecksumCheck,
    /// Per table: records read and what was checked of them.
    pub tables: Vec<TableVerify>,
    /// Records read, all tables.
    pub records: u64,
    /// Bytes of keys and values read, all tables.
    pub bytes: u64,
    /// Everything wrong, up to [`MAX_LISTED_PROBLEMS`].
    pub problems: Vec<VerifyProblem>,
    /// Problems found beyond those listed.
    pub unlisted_problems: u64,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.unlisted_problems == 0
    }

    /// Every problem found, listed or not.
    pub fn problem_count(&self) -> u64 {
        self.problems.len() as u64 + self.unlisted_problems
    }
}

/// What verification read of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableVerify {
    /// The table.
    pub name: String,
    /// Its stamp; `None` if the catalog entry is damaged (that is a listed problem).
    pub stamp: Option<TableStamp>,
    /// Records read.
    pub records: u64,
    /// Bytes of keys and values read.
    pub bytes: u64,
    /// What was checked of each key.
    pub keys: FormatCheck,
    /// What was checked of each value.
    pub values: FormatCheck,
    /// rkyv tables: values the engine lent at an address that is not 16-byte aligned, which a
    /// typed guard copies once to read (counted in [`Storage::aligned_copies`] when it does).
    /// Not a problem; 0 on the native engine, which stores such values aligned.
    pub misaligned_values: u64,
}

/// How far the keys or the values of a table could be checked without the Rust type.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatCheck {
    /// Each was decoded as a typed table decodes it: a bad one is a problem.
    Decoded {
        /// How, in words.
        how: String,
    },
    /// Each one's framing (offsets, lengths, alignment) was checked; the contents need the
    /// Rust type or the schema.
    Framing {
        /// What was checked and what was not, in words.
        how: String,
    },
    /// Nothing of the bytes could be checked (beyond the engine reading them).
    NotChecked {
        /// Why, in words.
        why: String,
    },
}

impl fmt::Display for FormatCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatCheck::Decoded { how } => write!(f, "checked: {how}"),
            FormatCheck::Framing { how } => write!(f, "framing checked: {how}"),
            FormatCheck::NotChecked { why } => write!(f, "not checked: {why}"),
        }
    }
}

/// What the engine's own checksum check did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChecksumCheck {
    /// The engine re-read its files against its checksums.
    Checked {
        /// What was checked, in words.
        method: &'static str,
        /// Bytes of the engine's files read.
        bytes: u64,
        /// Records checked, where the engine counts them.
        records: Option<u64>,
    },
    /// The engine has no checksums it can check on demand.
    NotAvailable {
        /// Why, and what it checks instead, in words.
        reason: String,
    },
}

/// One thing wrong: where (table, key, file and offset, as far as known) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyProblem {
    /// The table, when the problem is in one.
    pub table: Option<String>,
    /// The key, as stored, when the problem is in one entry.
    pub key: Option<Vec<u8>>,
    /// The damaged file, when the engine says.
    pub file: Option<PathBuf>,
    /// Where in the file.
    pub offset: Option<u64>,
    /// What is wrong.
    pub reason: String,
}

impl VerifyProblem {
    /// A problem in an entry or a table.
    pub(crate) fn in_table(table: &str, key: Option<&[u8]>, reason: String) -> Self {
        VerifyProblem {
            table: Some(table.to_owned()),
            key: key.map(<[u8]>::to_vec),
            file: None,
            offset: None,
            reason,
        }
    }

    /// A problem at a place of a file, with the table and key it hits if known.
    #[cfg(any(feature = "native", feature = "redb"))]
    pub(crate) fn in_file(
        table: Option<String>,
        key: Option<Vec<u8>>,
        file: PathBuf,
        offset: u64,
        reason: String,
    ) -> Self {
        VerifyProblem { table, key, file: Some(file), offset: Some(offset), reason }
    }
}

impl fmt::Display for VerifyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(table) = &self.table {
            write!(f, "table `{table}`")?;
            if let Some(key) = &self.key {
                write!(f, ", key {}", key_hex(key))?;
            }
            f.write_str(": ")?;
        }
        f.write_str(&self.reason)?;
        if let Some(file) = &self.file {
            write!(f, " ({}", file.display())?;
            if let Some(offset) = self.offset {
                write!(f, " at offset {offset}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// Where a verification is, for [`Storage::verify_with_progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyProgress {
    /// The pass.
    pub stage: VerifyStage,
    /// Bytes ([`VerifyStage::Checksums`]) or records ([`VerifyStage::Records`]) done.
    pub done: u64,
    /// The total, when known in advance.
    pub total: Option<u64>,
}

/// The passes of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyStage {
    /// The engine checks its checksums; progress in bytes of its files.
    Checksums,
    /// Every record of every table is read and checked; progress in records.
    Records,
}

/// Records between progress calls.
const PROGRESS_EVERY: u64 = 16 * 1024;

/// Collects problems up to the listing limit.
struct Problems {
    listed: Vec<VerifyProblem>,
    unlisted: u64,
}

impl Problems {
    fn push(&mut self, problem: VerifyProblem) {
        if self.listed.len() < MAX_LISTED_PROBLEMS {
            self.listed.push(problem);
        } else {
            self.unlisted += 1;
        }
    }
}

impl Storage {
    /// Reads every record of every table and checks it as far as possible without the Rust
    /// types; see the [`VerifyReport`] for what was checked and found. Problems in the data
    /// are in the report; `Err` means verification itself could not run (an I/O error).
    ///
    /// ```
    /// use typed_kv::{OrderedFormat, PostcardFormat, StorageBuilder};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let storage = StorageBuilder::new(dir.path()).build()?;
    /// let names = storage
    ///     .new_table::<u32, String>("names")
    ///     .with_key_format(OrderedFormat::new())
    ///     .with_value_format(PostcardFormat::new())
    ///     .build()?;
    /// names.put(&7, &"seven".to_string())?;
    /// let report = storage.verify()?;
    /// assert!(report.is_ok(), "{:?}", report.problems);
    /// assert_eq!(report.records, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn verify(&self) -> Result<VerifyReport> {
        self.verify_with_progress(|_| {})
    }

    /// [`verify`](Self::verify), calling `progress` now and then.
    pub fn verify_with_progress(&self, mut progress: impl FnMut(&VerifyProgress)) -> Result<VerifyReport> {
        let engine = &self.inner.engine;
        let mut engine_problems = Vec::new();
        let checksums = engine.verify_checksums(
            &mut |done, total| {
                progress(&VerifyProgress { stage: VerifyStage::Checksums, done, total: Some(total) })
            },
            &mut engine_problems,
        )?;
        let mut problems = Problems { listed: Vec::new(), unlisted: 0 };
        for problem in engine_problems {
            problems.push(problem);
        }

        let mut tables = Vec::new();
        let mut handles = Vec::new();
        let mut expected = Some(0u64);
        for (name, stamp) in self.catalog_entries()? {
            let stamp = match stamp {
                Ok(stamp) => Some(stamp),
                Err(e) => {
                    problems.push(VerifyProblem::in_table(&name, None, e.to_string()));
                    None
                }
            };
            let handle = engine.table_for_reading(&name)?;
            let keys = match &handle {
                Some(h) => engine.table_figures(h)?.keys,
                None => Some(0),
            };
            expected = expected.zip(keys).map(|(a, b)| a + b);
            handles.push((name, stamp, handle));
        }

        let mut done = 0u64;
        progress(&VerifyProgress { stage: VerifyStage::Records, done, total: expected });
        for (name, stamp, handle) in handles {
            let damaged = || "the table's stamp is damaged, so its formats are unknown".to_owned();
            let (keys, values) = match &stamp {
                Some(stamp) => (KeyCheck::for_stamp(stamp), ValueCheck::for_stamp(stamp)),
                None => (KeyCheck::Unchecked(damaged()), ValueCheck::Unchecked(damaged())),
            };
            let rkyv = stamp.as_ref().is_some_and(|s| s.value_format == "rkyv");
            let mut table = TableVerify {
                keys: match &stamp {
                    Some(s) => keys.coverage(s),
                    None => FormatCheck::NotChecked { why: damaged() },
                },
                values: match &stamp {
                    Some(s) => values.coverage(s),
                    None => FormatCheck::NotChecked { why: damaged() },
                },
                name,
                stamp,
                records: 0,
                bytes: 0,
                misaligned_values: 0,
            };
            if let Some(handle) = handle {
                for entry in engine.range(&handle, Bound::Unbounded, Bound::Unbounded)? {
                    let (key, value) = match entry {
                        Ok(entry) => entry,
                        // A damaged record (the native engine checks each one it reads):
                        // reported once, by the checksum pass if it found it, and the scan
                        // goes on with the next key.
                        Err(StorageError::Corrupt { path, offset, reason }) => {
                            let known = problems.listed.iter().any(|p| {
                                p.file.as_deref() == Some(path.as_path()) && p.offset == Some(offset)
                            });
                            if !known {
                                let name = Some(table.name.clone());
                                problems.push(VerifyProblem::in_file(name, None, path, offset, reason));
                            }
                            continue;
                        }
                        Err(e) => {
                            let reason =
                                format!("the engine could not read on after {} records: {e}", table.records);
                            problems.push(VerifyProblem::in_table(&table.name, None, reason));
                            break;
                        }
                    };
                    table.records += 1;
                    table.bytes += (key.len() + value.len()) as u64;
                    if let Err(reason) = keys.check(&key) {
                        problems.push(VerifyProblem::in_table(
                            &table.name,
                            Some(&key),
                            format!("key: {reason}"),
                        ));
                    }
                    if let Err(reason) = values.check(&value) {
                        problems.push(VerifyProblem::in_table(
                            &table.name,
                            Some(&key),
                            format!("value: {reason}"),
                        ));
                    }
                    if rkyv && !(value.as_ptr() as usize).is_multiple_of(16) {
                        table.misaligned_values += 1;
                    }
                    done += 1;
                    if done.is_multiple_of(PROGRESS_EVERY) {
                        progress(&VerifyProgress { stage: VerifyStage::Records, done, total: expected });
                    }
                }
            }
            tables.push(table);
        }
        progress(&VerifyProgress { stage: VerifyStage::Records, done, total: expected });
        Ok(VerifyReport {
            backend: self.backend(),
            checksums,
            records: tables.iter().map(|t| t.records).sum(),
            bytes: tables.iter().map(|t| t.bytes).sum(),
            tables,
            problems: problems.listed,
            unlisted_problems: problems.unlisted,
        })
    }
}
