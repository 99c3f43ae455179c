//! Simulated crashes below the kernel for the native engine.
//!
//! The engine runs on [`SimVfs`], a [`Vfs`] over the real file system that also keeps, per
//! file, what a power cut would leave: the *durable image* (the contents as of the file's last
//! `sync_data`) and the writes and `set_len`s since, in order. Directory entries are tracked
//! the same way: a file created, renamed or removed is durable only once its directory is
//! synced. `map` is the real file's mapping (a mapping can only come from a real mmap), so the
//! engine reads what it wrote, as it would before a crash. `sync_data` and `sync_dir` do not
//! reach the disk: durability is what the model says, not what the kernel does.
//!
//! A crash run picks a workload script and a crash point (the Nth VFS call); from that call
//! on every call fails, so the engine stops. From the state at the crash point the test builds
//! several *crash images*, each a fresh directory holding only the durable directory entries
//! and, per file, its durable image plus some of its unsynced writes:
//!
//! - `Prefix(s)`: a random prefix of the unsynced writes, in order, the last one torn at an
//!   `s`-byte boundary (`s` = 512 or 4,096: a sector or a page);
//! - `Subset(s)`: every `s`-byte piece of every unsynced write kept or lost independently
//!   (the kernel writes dirty pages back in any order);
//! - `DurableOnly`: no unsynced write at all.
//!
//! Unsynced directory operations are lost (a file created but never dir-synced is gone, an
//! unsynced rename or remove is undone), or with `dir_prefix`, a random prefix of them is kept
//! (ext4 and XFS journal directory changes in order).
//!
//! Each image is opened with the plain `OsVfs` and must open, and hold:
//! - with `SyncMode::Always`, every change acknowledged before the crash, in full, plus at
//!   most the one change in flight, in full or not at all: the store equals the model after
//!   `a` or `a + 1` changes;
//! - with `Periodic` and `Never`, the model after `k` changes for some `k` between the last
//!   durability point (a successful `flush`, table change, compaction or clean reopen) and
//!   the change in flight: a prefix of the history, so no partial batch and no resurrected
//!   delete;
//! - the same store when opened again with its hint files removed (a hint is an accelerator,
//!   never the truth).
//!
//! Number of crash points: 250 by default (about 35 s in a debug build on 2 cores), or
//! `SIM_CRASHES=N`. `SIM_SEED` changes the seed.

#![cfg(feature = "native")]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::diff_tables;
use parking_lot::{Mutex, MutexGuard};
use typed_kv::engine::io::{Mapping, OpenMode, OsVfs, Vfs, VfsFile};
use typed_kv::engine::{Db, Op, Options, SyncMode, Table, ValueAlign};

// ---------------------------------------------------------------------------------------------
// The simulated file system.

/// What the workload is doing, for the report of where crashes fell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Phase {
    Open,
    Write,
    TableChange,
    Compact,
    Checkpoint,
    Flush,
    Close,
}

/// Where a crash point fell: the phase of the workload refined by the file touched.
fn classify(phase: Phase, op: &str, name: &str, rotating: bool, background: bool) -> &'static str {
    if name.starts_with("hint-") {
        if background {
            "hint (background)"
        } else {
            "hint"
        }
    } else if name.starts_with("tables.tkv") {
        "table directory"
    } else if rotating || (op == "create" && name.starts_with("seg-")) {
        "rotation"
    } else if background || phase == Phase::Compact || (op == "remove" && name.starts_with("seg-")) {
        if background && op == "sync" && phase != Phase::Compact {
            "background sync or compaction"
        } else {
            "compaction"
        }
    } else {
        match phase {
            Phase::Open => "open (recovery)",
            Phase::Write => "plain write",
            Phase::TableChange => "table change (log sync)",
            Phase::Compact => "compaction",
            Phase::Checkpoint => "hint",
            Phase::Flush => "flush",
            Phase::Close => "close",
        }
    }
}

/// An unsynced change of a file.
#[derive(Debug, Clone)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

/// What a power cut can leave of a file.
#[derive(Debug, Default)]
struct FileLog {
    durable: Vec<u8>,
    pending: Vec<Pending>,
}

/// An unsynced change of the directory.
#[derive(Debug, Clone)]
enum DirOp {
    Link(String, u64),
    Unlink(String),
}

#[derive(Debug, Default)]
struct SimState {
    calls: u64,
    /// The call that crashes (1-based); every later call fails too.
    crash_at: u64,
    crashed: Option<&'static str>,
    next_id: u64,
    files: HashMap<u64, FileLog>,
    /// The directory as the running engine sees it.
    live: BTreeMap<String, u64>,
    /// The directory as of its last sync.
    durable: BTreeMap<String, u64>,
    /// Directory changes since its last sync, in order.
    dir_log: Vec<DirOp>,
    phase: Option<Phase>,
    /// A segment is being created (from its creation to its mapping).
    rotating: Option<u64>,
    /// Calls per crash-point class (filled in every run, so a dry run shows the coverage).
    calls_by_class: BTreeMap<&'static str, u64>,
}

/// The simulated file system of one engine directory.
#[derive(Debug)]
struct SimFs {
    dir: PathBuf,
    state: Mutex<SimState>,
}

#[derive(Debug, Clone)]
struct SimVfs(Arc<SimFs>);

#[derive(Debug)]
struct SimFile {
    fs: Arc<SimFs>,
    id: u64,
    name: String,
    real: Arc<dyn VfsFile>,
}

fn crash_error() -> io::Error {
    io::Error::other("simulated crash: the machine is off")
}

impl SimFs {
    fn new(dir: &Path, crash_at: u64) -> Arc<SimFs> {
        Arc::new(SimFs {
            dir: dir.to_owned(),
            state: Mutex::new(SimState { crash_at, next_id: 1, ..SimState::default() }),
        })
    }

    /// The simulated file system of a directory that already holds files, all durable.
    fn with_files(dir: &Path, files: &BTreeMap<String, Vec<u8>>, crash_at: u64) -> Arc<SimFs> {
        let fs = SimFs::new(dir, crash_at);
        {
            let mut s = fs.state.lock();
            for (name, bytes) in files {
                let id = s.next_id;
                s.next_id += 1;
                s.files.insert(id, FileLog { durable: bytes.clone(), pending: Vec::new() });
                s.live.insert(name.clone(), id);
            }
            s.durable = s.live.clone();
        }
        fs
    }

    fn set_phase(&self, phase: Phase) {
        self.state.lock().phase = Some(phase);
    }

    fn crashed(&self) -> Option<&'static str> {
        self.state.lock().crashed
    }

    /// Counts a call and says whether the machine is still on; the caller does its work
    /// under the returned guard, so calls are serialised and recorded atomically.
    fn enter(&self, op: &str, name: &str, id: Option<u64>) -> io::Result<MutexGuard<'_, SimState>> {
        let mut s = self.state.lock();
        if s.crashed.is_some() {
            return Err(crash_error());
        }
        s.calls += 1;
        let background = std::thread::current().name() == Some("typed-kv-maintenance");
        let rotating = s.rotating.is_some() && (id == s.rotating || op == "sync_dir");
        let class = classify(s.phase.unwrap_or(Phase::Write), op, name, rotating, background);
        *s.calls_by_class.entry(class).or_default() += 1;
        if s.calls == s.crash_at {
            s.crashed = Some(class);
            return Err(crash_error());
        }
        Ok(s)
    }

    fn name_of(&self, path: &Path) -> String {
        assert_eq!(path.parent(), Some(&*self.dir), "the engine only touches its own directory");
        path.file_name().and_then(|n| n.to_str()).expect("a UTF-8 file name").to_owned()
    }
}

impl Vfs for SimVfs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VfsFile>> {
        let name = self.0.name_of(path);
        let op = if mode == OpenMode::CreateNew { "create" } else { "open" };
        let mut s = self.0.enter(op, &name, None)?;
        let real = OsVfs.open(path, mode)?;
        let id = if mode == OpenMode::CreateNew {
            let id = s.next_id;
            s.next_id += 1;
            s.files.insert(id, FileLog::default());
            s.live.insert(name.clone(), id);
            s.dir_log.push(DirOp::Link(name.clone(), id));
            if name.starts_with("seg-") {
                s.rotating = Some(id);
            }
            id
        } else {
            *s.live.get(&name).expect("a file the model knows")
        };
        Ok(Arc::new(SimFile { fs: Arc::clone(&self.0), id, name, real }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let _s = self.0.enter("list", "", None)?;
        OsVfs.list(dir)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from_name, to_name) = (self.0.name_of(from), self.0.name_of(to));
        let mut s = self.0.enter("rename", &to_name, None)?;
        OsVfs.rename(from, to)?;
        let id = s.live.remove(&from_name).expect("a file the model knows");
        s.live.insert(to_name.clone(), id);
        s.dir_log.push(DirOp::Unlink(from_name));
        s.dir_log.push(DirOp::Link(to_name, id));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let name = self.0.name_of(path);
        let mut s = self.0.enter("remove", &name, None)?;
        OsVfs.remove_file(path)?;
        s.live.remove(&name);
        s.dir_log.push(DirOp::Unlink(name));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        assert_eq!(dir, self.0.dir);
        let mut s = self.0.enter("sync_dir", "", None)?;
        s.durable = s.live.clone();
        s.dir_log.clear();
        Ok(())
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let _s = self.0.enter("mkdir", "", None)?;
        OsVfs.create_dir_all(dir)
    }
}

impl VfsFile for SimFile {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut s = self.fs.enter("write", &self.name, Some(self.id))?;
        self.real.write_all_at(buf, offset)?;
        let file = s.files.get_mut(&self.id).expect("an open file is known");
        file.pending.push(Pending::Write { offset, data: buf.to_vec() });
        Ok(())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let _s = self.fs.enter("read", &self.name, Some(self.id))?;
        self.real.read_exact_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.fs.enter("sync", &self.name, Some(self.id))?;
        let file = s.files.get_mut(&self.id).expect("an open file is known");
        for change in std::mem::take(&mut file.pending) {
            apply_change(&mut file.durable, &change);
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = self.fs.enter("set_len", &self.name, Some(self.id))?;
        self.real.set_len(len)?;
        s.files.get_mut(&self.id).expect("an open file is known").pending.push(Pending::SetLen(len));
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        let _s = self.fs.enter("size", &self.name, Some(self.id))?;
        self.real.size()
    }

    fn map(&self, len: usize) -> io::Result<Mapping> {
        let mut s = self.fs.enter("map", &self.name, Some(self.id))?;
        if s.rotating == Some(self.id) {
            s.rotating = None;
        }
        self.real.map(len)
    }
}

fn apply_change(bytes: &mut Vec<u8>, change: &Pending) {
    match change {
        Pending::Write { offset, data } => write_at(bytes, *offset, data),
        Pending::SetLen(len) => bytes.resize(*len as usize, 0),
    }
}

fn write_at(bytes: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    bytes[offset as usize..end].copy_from_slice(data);
}

/// What survives of the unsynced writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Tear {
    /// A random prefix of the writes, the last one torn at a multiple of the sector size.
    Prefix(u64),
    /// Each sector-sized piece of every write kept or lost on its own.
    Subset(u64),
    /// Only the durable images.
    DurableOnly,
}

const TEARS: [Tear; 5] =
    [Tear::Prefix(512), Tear::Prefix(4096), Tear::Subset(512), Tear::Subset(4096), Tear::DurableOnly];

/// The sector-aligned pieces of a write at `offset`.
fn pieces(offset: u64, len: u64, sector: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = offset;
    let end = offset + len;
    while at < end {
        let next = ((at / sector) + 1) * sector;
        out.push((at, next.min(end)));
        at = next.min(end);
    }
    out
}

/// The files a power cut at this moment leaves, by name.
fn crash_image(
    s: &SimState,
    tear: Tear,
    dir_prefix: bool,
    rng: &mut fastrand::Rng,
) -> BTreeMap<String, Vec<u8>> {
    let mut entries = s.durable.clone();
    if dir_prefix {
        let keep = rng.usize(..=s.dir_log.len());
        for op in &s.dir_log[..keep] {
            match op {
                DirOp::Link(name, id) => entries.insert(name.clone(), *id),
                DirOp::Unlink(name) => entries.remove(name),
            };
        }
    }
    let mut image = BTreeMap::new();
    for (name, id) in entries {
        let file = &s.files[&id];
        let mut bytes = file.durable.clone();
        match tear {
            Tear::DurableOnly => {}
            Tear::Prefix(sector) => {
                let keep = rng.usize(..=file.pending.len());
                for change in &file.pending[..keep] {
                    apply_change(&mut bytes, change);
                }
                if let Some(Pending::Write { offset, data }) = file.pending.get(keep) {
                    // The torn one: its first sectors reached the disk.
                    let parts = pieces(*offset, data.len() as u64, sector);
                    let whole = rng.usize(..parts.len());
                    if whole > 0 {
                        let end = parts[whole - 1].1;
                        write_at(&mut bytes, *offset, &data[..(end - offset) as usize]);
                    }
                }
            }
            Tear::Subset(sector) => {
                for change in &file.pending {
                    match change {
                        Pending::SetLen(_) => {
                            if rng.bool() {
                                apply_change(&mut bytes, change)
                            }
                        }
                        Pending::Write { offset, data } => {
                            for (from, to) in pieces(*offset, data.len() as u64, sector) {
                                if rng.bool() {
                                    let part = &data[(from - offset) as usize..(to - offset) as usize];
                                    write_at(&mut bytes, from, part);
                                }
                            }
                        }
                    }
                }
            }
        }
        image.insert(name, bytes);
    }
    image
}

// ---------------------------------------------------------------------------------------------
// The workload and its model.

/// One write of a batch.
#[derive(Debug, Clone)]
enum Step {
    Put { table: String, key: Vec<u8>, value: Vec<u8>, align: ValueAlign },
    Delete { table: String, key: Vec<u8> },
    Clear { table: String },
}

#[derive(Debug, Clone)]
enum Action {
    CreateTable(String),
    DropTable(String),
    Batch(Vec<Step>),
    Delete(String, Vec<u8>),
    Compact,
    Checkpoint,
    Flush,
    Reopen,
}

impl Action {
    /// Whether the action changes the store (and so has a model state of its own).
    fn changes(&self) -> bool {
        matches!(self, Action::CreateTable(_) | Action::DropTable(_) | Action::Batch(_) | Action::Delete(..))
    }

    fn phase(&self) -> Phase {
        match self {
            Action::CreateTable(_) | Action::DropTable(_) => Phase::TableChange,
            Action::Batch(_) | Action::Delete(..) => Phase::Write,
            Action::Compact => Phase::Compact,
            Action::Checkpoint => Phase::Checkpoint,
            Action::Flush => Phase::Flush,
            Action::Reopen => Phase::Close,
        }
    }
}

/// The store: table name → key → value.
type Model = common::Tables;

fn apply_steps(model: &mut Model, steps: &[Step]) {
    for step in steps {
        match step {
            Step::Put { table, key, value, .. } => {
                model.get_mut(table).expect("a model table").insert(key.clone(), value.clone());
            }
            Step::Delete { table, key } => {
                model.get_mut(table).expect("a model table").remove(key);
            }
            Step::Clear { table } => model.get_mut(table).expect("a model table").clear(),
        }
    }
}

fn apply_action(model: &mut Model, action: &Action) {
    match action {
        Action::CreateTable(name) => {
            model.entry(name.clone()).or_default();
        }
        Action::DropTable(name) => {
            model.remove(name);
        }
        Action::Batch(steps) => apply_steps(model, steps),
        Action::Delete(table, key) => {
            model.get_mut(table).expect("a model table").remove(key);
        }
        _ => {}
    }
}

fn key(rng: &mut fastrand::Rng) -> Vec<u8> {
    format!("k{:03}", rng.u32(..80)).into_bytes()
}

fn value(rng: &mut fastrand::Rng) -> Vec<u8> {
    let len = match rng.u8(..20) {
        0 => rng.usize(4000..9000), // spans pages
        1..=3 => rng.usize(500..2000),
        _ => rng.usize(0..200),
    };
    let mut v = vec![0; len];
    rng.fill(&mut v);
    v
}

fn put(rng: &mut fastrand::Rng, table: &str) -> Step {
    let align = if rng.bool() { ValueAlign::Sixteen } else { ValueAlign::Packed };
    Step::Put { table: table.to_owned(), key: key(rng), value: value(rng), align }
}

/// A workload script: tables created, dropped and re-created, small, large (≥ 64 ops,
/// written in key order) and huge (over 1 MiB, written in chunks) batches with deletes, clears, single deletes, explicit compactions
/// and checkpoints, flushes and clean reopens. With small segments and checkpoints, rotation,
/// background hints and background compaction happen on their own.
fn script(seed: u64) -> Vec<Action> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut actions = vec![Action::CreateTable("t0".into()), Action::CreateTable("t1".into())];
    let mut tables: Vec<String> = vec!["t0".into(), "t1".into()];
    let mut model = Model::new();
    for a in &actions {
        apply_action(&mut model, a);
    }
    let mut next_table = 2;
    for _ in 0..110 {
        let pick = |rng: &mut fastrand::Rng, tables: &[String]| tables[rng.usize(..tables.len())].clone();
        let action = match rng.u8(..100) {
            0..=49 => {
                let mut steps = Vec::new();
                for _ in 0..rng.usize(1..=6) {
                    let t = pick(&mut rng, &tables);
                    if rng.u8(..5) == 0 {
                        steps.push(Step::Delete { table: t, key: key(&mut rng) });
                    } else {
                        steps.push(put(&mut rng, &t));
                    }
                }
                Action::Batch(steps)
            }
            50 => {
                // Huge: over 1 MiB, so the engine writes it in several chunks.
                let t = pick(&mut rng, &tables);
                let steps = (0..3)
                    .map(|_| {
                        let mut value = vec![0; rng.usize(500_000..700_000)];
                        rng.fill(&mut value);
                        let align = if rng.bool() { ValueAlign::Sixteen } else { ValueAlign::Packed };
                        Step::Put { table: t.clone(), key: key(&mut rng), value, align }
                    })
                    .collect();
                Action::Batch(steps)
            }
            51..=59 => {
                // Large: written in key order, with deletes and repeated keys.
                let mut steps = Vec::new();
                for _ in 0..rng.usize(64..=140) {
                    let t = pick(&mut rng, &tables);
                    if rng.u8(..6) == 0 {
                        steps.push(Step::Delete { table: t, key: key(&mut rng) });
                    } else {
                        let mut step = put(&mut rng, &t);
                        if let Step::Put { value, .. } = &mut step {
                            value.truncate(300);
                        }
                        steps.push(step);
                    }
                }
                Action::Batch(steps)
            }
            60..=63 => {
                let t = pick(&mut rng, &tables);
                let mut steps = vec![put(&mut rng, &t), Step::Clear { table: t.clone() }];
                for _ in 0..rng.usize(0..3) {
                    steps.push(put(&mut rng, &t));
                }
                Action::Batch(steps)
            }
            64..=71 => {
                let t = pick(&mut rng, &tables);
                // Mostly keys that exist, so the delete writes a tombstone.
                let existing: Vec<&Vec<u8>> = model[&t].keys().collect();
                let k = if existing.is_empty() || rng.u8(..4) == 0 {
                    key(&mut rng)
                } else {
                    existing[rng.usize(..existing.len())].clone()
                };
                Action::Delete(t, k)
            }
            72..=76 => Action::Compact,
            77..=80 => Action::Checkpoint,
            81..=84 => Action::Flush,
            85..=88 => {
                let name = format!("t{next_table}");
                next_table += 1;
                tables.push(name.clone());
                Action::CreateTable(name)
            }
            89..=91 if tables.len() > 2 => {
                let i = rng.usize(1..tables.len());
                let name = tables.remove(i);
                Action::DropTable(name)
            }
            92..=94 => {
                // Re-create a dropped name (a new id: the old records stay dead).
                let name = format!("t{}", rng.usize(2..next_table.max(3)));
                if next_table == 2 || tables.contains(&name) {
                    Action::Flush
                } else {
                    tables.push(name.clone());
                    Action::CreateTable(name)
                }
            }
            _ => Action::Reopen,
        };
        apply_action(&mut model, &action);
        actions.push(action);
    }
    actions
}

/// Model states: `[0]` empty, `[i]` after the first `i` changes of the script.
fn states(actions: &[Action]) -> Vec<Model> {
    let mut out = vec![Model::new()];
    for action in actions.iter().filter(|a| a.changes()) {
        let mut next = out.last().expect("a state").clone();
        apply_action(&mut next, action);
        out.push(next);
    }
    out
}

fn options(vfs: Arc<dyn Vfs>, sync: SyncMode) -> Options {
    Options {
        sync,
        segment_size: 16 << 10,
        checkpoint_bytes: 24 << 10,
        compaction_threshold: 0.5,
        repair: false,
        // Zeros ahead of small appends, a few times per 16 KiB segment: crash images then
        // hold preallocated tails, synced or not.
        preallocate: 4 << 10,
        verify_reads: true,
        vfs,
    }
}

/// What a run acknowledged.
#[derive(Debug, Default, Clone, Copy)]
struct Acked {
    /// Changes acknowledged.
    changes: usize,
    /// Changes acknowledged before the last durability point.
    durable: usize,
    /// A change was in flight when the run stopped.
    in_flight: bool,
}

fn do_action(db: &Db, action: &Action, model: &Model) -> typed_kv::engine::Result<()> {
    let table = |name: &str| db.find_table(name).unwrap_or_else(|| panic!("table {name} exists"));
    match action {
        Action::CreateTable(name) => db.table(name).map(drop),
        Action::DropTable(name) => db.drop_table(name).map(|found| assert!(found, "drop_table({name})")),
        Action::Batch(steps) => {
            let handles: BTreeMap<&str, Table> = steps
                .iter()
                .map(|s| match s {
                    Step::Put { table: t, .. } | Step::Delete { table: t, .. } | Step::Clear { table: t } => {
                        (t.as_str(), table(t))
                    }
                })
                .collect();
            let ops: Vec<Op<'_>> = steps
                .iter()
                .map(|s| match s {
                    Step::Put { table, key, value, align } => {
                        Op::Put { table: &handles[table.as_str()], key, value, align: *align }
                    }
                    Step::Delete { table, key } => Op::Delete { table: &handles[table.as_str()], key },
                    Step::Clear { table } => Op::Clear { table: &handles[table.as_str()] },
                })
                .collect();
            db.write(&ops)
        }
        Action::Delete(name, key) => {
            let present = model[name].contains_key(key);
            db.delete(&table(name), key).map(|found| assert_eq!(found, present, "delete's answer"))
        }
        Action::Compact => db.compact().map(drop),
        Action::Checkpoint => db.checkpoint(),
        Action::Flush => db.flush(),
        Action::Reopen => unreachable!("handled by the runner"),
    }
}

/// Runs `actions` on `fs` until the end or the crash.
fn run(fs: &Arc<SimFs>, actions: &[Action], states: &[Model], sync: SyncMode) -> Acked {
    let opts = options(Arc::new(SimVfs(Arc::clone(fs))), sync);
    let mut acked = Acked::default();
    fs.set_phase(Phase::Open);
    let Ok(mut db) = Db::open(&fs.dir, opts.clone()) else {
        assert!(fs.crashed().is_some(), "open failed without a crash");
        return acked;
    };
    for action in actions {
        fs.set_phase(action.phase());
        let result = if let Action::Reopen = action {
            drop(db);
            fs.set_phase(Phase::Open);
            match Db::open(&fs.dir, opts.clone()) {
                Ok(reopened) => {
                    db = reopened;
                    // A clean close flushed everything (if it could: it reports nothing).
                    if fs.crashed().is_none() {
                        acked.durable = acked.changes;
                    }
                    continue;
                }
                Err(e) => {
                    assert!(fs.crashed().is_some(), "reopen failed without a crash: {e}");
                    return acked;
                }
            }
        } else {
            do_action(&db, action, &states[acked.changes])
        };
        match result {
            Ok(()) => {
                if action.changes() {
                    acked.changes += 1;
                }
                let durability_point = matches!(
                    action,
                    Action::Flush | Action::Compact | Action::CreateTable(_) | Action::DropTable(_)
                );
                if sync == SyncMode::Always || durability_point {
                    acked.durable = acked.changes;
                }
            }
            Err(e) => {
                assert!(fs.crashed().is_some(), "{action:?} failed without a crash: {e}");
                acked.in_flight = action.changes();
                break;
            }
        }
    }
    fs.set_phase(Phase::Close);
    drop(db);
    acked
}

/// Everything an engine holds.
fn dump(db: &Db) -> Model {
    let snapshot = db.snapshot();
    db.tables()
        .into_iter()
        .map(|t| {
            let entries = snapshot
                .range(&t, ..)
                .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())).expect("read"))
                .collect();
            (t.name().to_owned(), entries)
        })
        .collect()
}

/// A scratch directory, in memory where there is a tmpfs: the recovery opens fsync for real,
/// and thousands of them on a disk would dominate the run.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("a temporary directory")
}

fn write_image(dir: &Path, image: &BTreeMap<String, Vec<u8>>, hints: bool) {
    for (name, bytes) in image {
        if hints || !name.starts_with("hint-") {
            std::fs::write(dir.join(name), bytes).expect("write a crash image file");
        }
    }
}

/// Opens an image with the real file system and returns what it holds.
fn recover(image: &BTreeMap<String, Vec<u8>>, hints: bool) -> Result<Model, String> {
    let dir = scratch();
    write_image(dir.path(), image, hints);
    let opts = Options {
        compaction_threshold: 0.0,
        checkpoint_bytes: 0,
        ..options(Arc::new(OsVfs), SyncMode::Always)
    };
    let db = Db::open(dir.path(), opts).map_err(|e| format!("open failed: {e}"))?;
    let found = dump(&db);
    // The recovered store takes writes and keeps them.
    if let Some(t) = db.tables().first() {
        db.write(&[Op::Put { table: t, key: b"after-crash", value: b"v", align: ValueAlign::Packed }])
            .map_err(|e| format!("write after recovery failed: {e}"))?;
    }
    Ok(found)
}

fn describe_image(image: &BTreeMap<String, Vec<u8>>) -> String {
    image.iter().map(|(n, b)| format!("{n}:{}", b.len())).collect::<Vec<_>>().join(" ")
}

/// Crashes again while recovering `image` (at its `crash_at`th VFS call), and returns what
/// that second power cut leaves (`None` if recovery made fewer calls).
fn crash_during_recovery(
    image: &BTreeMap<String, Vec<u8>>,
    crash_at: u64,
    rng: &mut fastrand::Rng,
) -> Option<BTreeMap<String, Vec<u8>>> {
    let dir = scratch();
    write_image(dir.path(), image, true);
    let fs = SimFs::with_files(dir.path(), image, crash_at);
    fs.set_phase(Phase::Open);
    let opened = Db::open(dir.path(), options(Arc::new(SimVfs(Arc::clone(&fs))), SyncMode::Always));
    if let Err(e) = &opened {
        assert!(fs.crashed().is_some(), "recovery failed without a crash: {e}");
    }
    drop(opened);
    let s = fs.state.lock();
    s.crashed?;
    let tear = TEARS[rng.usize(..TEARS.len())];
    Some(crash_image(&s, tear, rng.bool(), rng))
}

/// Checks one crash image; `Err` says what is wrong.
fn check_image(
    image: &BTreeMap<String, Vec<u8>>,
    states: &[Model],
    lo: usize,
    hi: usize,
) -> Result<(), String> {
    let found = recover(image, true)?;
    let Some(k) = (lo..=hi).rev().find(|&k| states[k] == found) else {
        let near = diff_tables(&found, &states[lo]);
        return Err(format!(
            "the store is none of the states after {lo}..={hi} changes; against state {lo}: {near}"
        ));
    };
    let without_hints = recover(image, false)?;
    if without_hints != found {
        return Err(format!(
            "with its hints the store is state {k}; without them it differs: {}",
            diff_tables(&without_hints, &found)
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The test.

#[derive(Debug, Default)]
struct Figures {
    crash_points: u64,
    images: u64,
    /// Second crashes during the recovery from a first.
    recovery_crashes: u64,
    not_reached: u64,
    by_class: BTreeMap<&'static str, u64>,
    by_mode: BTreeMap<String, u64>,
    acked_changes: u64,
}

const SCRIPTS: u64 = 6;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn simulated_power_cuts_lose_no_acknowledged_commit_and_no_batch_in_part() {
    let crashes = env_u64("SIM_CRASHES", 250);
    let seed = env_u64("SIM_SEED", 0x5EED_C0DE);
    let started = Instant::now();
    let scripts: Vec<(Vec<Action>, Vec<Model>)> = (0..SCRIPTS)
        .map(|i| {
            let actions = script(seed ^ i.wrapping_mul(0x9E37_79B9));
            let states = states(&actions);
            (actions, states)
        })
        .collect();
    let modes = [SyncMode::Always, SyncMode::Never, SyncMode::Periodic(Duration::from_millis(2))];
    // Dry runs: how many calls each (script, mode) makes, and where.
    let mut totals = HashMap::new();
    let mut coverage: BTreeMap<&'static str, u64> = BTreeMap::new();
    for (i, (actions, states)) in scripts.iter().enumerate() {
        for (m, &mode) in modes.iter().enumerate() {
            let dir = scratch();
            let fs = SimFs::new(dir.path(), u64::MAX);
            let acked = run(&fs, actions, states, mode);
            assert_eq!(acked.changes, states.len() - 1, "the dry run acknowledges every change");
            let s = fs.state.lock();
            totals.insert((i, m), s.calls);
            for (class, n) in &s.calls_by_class {
                *coverage.entry(class).or_default() += n;
            }
            let image = crash_image(&s, Tear::DurableOnly, false, &mut fastrand::Rng::with_seed(1));
            check_image(&image, states, states.len() - 1, states.len() - 1)
                .unwrap_or_else(|e| panic!("after a clean run of script {i}: {e}"));
        }
    }
    let calls_per_run: u64 = totals.values().sum::<u64>() / totals.len() as u64;
    eprintln!("dry runs: {calls_per_run} VFS calls per run on average; calls by class: {coverage:?}");

    let mut rng = fastrand::Rng::with_seed(seed);
    let mut figures = Figures::default();
    for c in 0..crashes {
        let script_index = (c % SCRIPTS) as usize;
        // Always, the mode whose promise is strongest, three times in five.
        let m = [0, 0, 0, 1, 2][rng.usize(..5)];
        let mode = modes[m];
        let (actions, states) = &scripts[script_index];
        let total = totals[&(script_index, m)];
        let crash_at = rng.u64(1..=total);
        let dir = scratch();
        let fs = SimFs::new(dir.path(), crash_at);
        let acked = run(&fs, actions, states, mode);
        let s = fs.state.lock();
        let Some(class) = s.crashed else {
            figures.not_reached += 1;
            continue;
        };
        figures.crash_points += 1;
        *figures.by_class.entry(class).or_default() += 1;
        *figures.by_mode.entry(format!("{mode:?}")).or_default() += 1;
        figures.acked_changes += acked.changes as u64;
        let lo = acked.durable;
        let hi = acked.changes + usize::from(acked.in_flight);
        for tear in TEARS {
            for dir_prefix in [false, true] {
                let image = crash_image(&s, tear, dir_prefix, &mut rng);
                figures.images += 1;
                let mut checked = check_image(&image, states, lo, hi);
                if checked.is_ok() && tear == Tear::Prefix(512) && !dir_prefix {
                    // A second power cut while recovering from the first.
                    let at = rng.u64(1..=40);
                    if let Some(again) = crash_during_recovery(&image, at, &mut rng) {
                        figures.recovery_crashes += 1;
                        checked = check_image(&again, states, lo, hi)
                            .map_err(|e| format!("after a second crash at call {at} of recovery: {e}"));
                    }
                }
                if let Err(e) = checked {
                    panic!(
                        "crash {c}: script {script_index}, {mode:?}, crash at call {crash_at} ({class}), \
                         {tear:?}, dir_prefix {dir_prefix}, {} changes acknowledged ({} durable), in flight: \
                         {}: {e}\nimage: {}",
                        acked.changes,
                        acked.durable,
                        acked.in_flight,
                        describe_image(&image)
                    );
                }
            }
        }
    }
    eprintln!(
        "simulated crashes: {} crash points ({} runs ended before their crash point), {} crash images \
         checked ({} of them after a second crash during recovery), {} changes acknowledged before the crashes, in {:.1} s; crash points by class: {:?}; \
         by sync mode: {:?}",
        figures.crash_points,
        figures.not_reached,
        figures.images,
        figures.recovery_crashes,
        figures.acked_changes,
        started.elapsed().as_secs_f64(),
        figures.by_class,
        figures.by_mode
    );
    assert!(figures.crash_points > crashes / 2, "most runs reach their crash point");
}

// ---------------------------------------------------------------------------------------------
// Regression tests for what the simulation found.

/// With `SyncMode::Never`, a checkpoint wrote a hint of the published version, whose last
/// batch was not synced yet: the hint became durable before the log bytes it points at. If
/// the kernel then wrote back only some pages of that batch (here: all but one sector in the
/// middle of its value), the reopened store used the hint and handed out a value with a hole
/// of zeros, and the same store opened without its hint disagreed (the scan cuts the batch).
/// A checkpoint now syncs the log first.
#[test]
fn a_hint_never_reaches_the_disk_before_the_batches_it_points_at() {
    let dir = scratch();
    let fs = SimFs::new(dir.path(), u64::MAX);
    let value: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8 + 1).collect();
    {
        let db = Db::open(dir.path(), options(Arc::new(SimVfs(Arc::clone(&fs))), SyncMode::Never)).unwrap();
        let t = db.table("t").unwrap();
        db.write(&[Op::Put { table: &t, key: b"k", value: &value, align: ValueAlign::Packed }]).unwrap();
        db.checkpoint().unwrap();
        // The power fails here, before any flush.
        std::mem::forget(db);
    }
    let s = fs.state.lock();
    assert!(s.live.keys().any(|n| n.starts_with("hint-")), "the checkpoint wrote a hint");
    // Every unsynced write reached the disk, except the sector at 1,536..2,048 of the file.
    let mut image = BTreeMap::new();
    for (name, id) in &s.durable {
        let file = &s.files[id];
        let mut bytes = file.durable.clone();
        for change in &file.pending {
            if let Pending::Write { offset, data } = change {
                for (from, to) in pieces(*offset, data.len() as u64, 512) {
                    if from != 1536 {
                        write_at(&mut bytes, from, &data[(from - offset) as usize..(to - offset) as usize]);
                    }
                }
            }
        }
        image.insert(name.clone(), bytes);
    }
    let mut empty = Model::new();
    empty.insert("t".to_owned(), BTreeMap::new());
    let mut full = empty.clone();
    full.get_mut("t").unwrap().insert(b"k".to_vec(), value.clone());
    check_image(&image, &[empty, full], 0, 1).unwrap_or_else(|e| panic!("{e}"));
}

/// An explicit checkpoint and the maintenance thread's could run at once. Both write the
/// hint of one version through the same `.tmp` name: one removed the other's file and the
/// loser's rename failed (`checkpoint()` returned a spurious I/O error), or a hint was renamed
/// into place while the other writer was still filling it. Checkpoints now take turns.
#[test]
fn concurrent_checkpoints_do_not_trip_over_each_other() {
    let dir = scratch();
    let opts = Options {
        checkpoint_bytes: 1, // the maintenance thread checkpoints after every commit
        compaction_threshold: 0.0,
        ..options(Arc::new(OsVfs), SyncMode::Never)
    };
    let db = Db::open(dir.path(), opts).unwrap();
    let t = db.table("t").unwrap();
    for i in 0..300u32 {
        let key = i.to_be_bytes();
        db.write(&[Op::Put { table: &t, key: &key, value: b"v", align: ValueAlign::Packed }]).unwrap();
        db.checkpoint().unwrap_or_else(|e| panic!("checkpoint {i}: {e}"));
    }
}
