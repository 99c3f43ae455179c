//! Crash test of the native engine: a child process writes durable batches forever and is
//! killed with SIGKILL at random moments (before its first commit, in the middle of a run of
//! commits, during an explicit compaction, while background compaction and checkpoints run).
//! After every kill the parent reopens the directory and checks that every acknowledged
//! batch survived, that no batch survived in part, and that every value is byte-exact.
//!
//! The child is this test binary itself, running only [`crash_child`] with `TYPED_KV_CRASH_DIR`
//! set; without the variable that test returns at once. The child prints `TKV-START <n>` once
//! open, `TKV-COMPACT <n>` before each explicit `compact()`, and `TKV-ACK <n>` after
//! `write` of batch `n` returned. Batch `n` is a pure function of `n` (see [`batch`]), and
//! every batch also puts its own number under [`LAST`], so the parent knows which prefix of
//! batches the store holds and compares the whole store with a model of that prefix.
//!
//! The number of kills is 200, or `TYPED_KV_CRASH_KILLS`.

#![cfg(feature = "native")]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{ChildStdout, Command, Stdio};
use std::time::Instant;

use common::Reaped;
use typed_kv::engine::{Db, Op, Options, RecoveryReport, SyncMode, Table, ValueAlign};

/// Names the child's engine directory; the child test does nothing without it.
const DIR_VAR: &str = "TYPED_KV_CRASH_DIR";
/// The child test's name (for `--exact`).
const CHILD_TEST: &str = "crash_child";
/// The two tables every batch writes to.
const TABLES: [&str; 2] = ["alpha", "beta"];
/// Key (in `alpha`) holding the number of the last batch applied.
const LAST: &[u8] = b"~last";
/// Keys per table: small, so batches overwrite and delete each other's keys and segments
/// fill with dead records for compaction.
const KEYS: u32 = 96;
/// The child compacts explicitly before every batch whose number is a multiple of this.
const COMPACT_EVERY: u64 = 20;
const SEGMENT_SIZE: u64 = 32 << 10;

/// One write of a batch, owned.
#[derive(Debug, Clone)]
enum Step {
    Put { table: usize, key: Vec<u8>, value: Vec<u8>, align: ValueAlign },
    Delete { table: usize, key: Vec<u8> },
}

/// Contents of the store: (table index, key) → value.
type State = BTreeMap<(usize, Vec<u8>), Vec<u8>>;

/// Batch `n`: 2–6 puts (values of 0 to 3,000 bytes, both alignments) and 0–2 deletes over
/// both tables, plus the put of `n` under [`LAST`] at a random position. Keys may repeat
/// within a batch (the later op wins).
fn batch(n: u64) -> Vec<Step> {
    let mut rng = fastrand::Rng::with_seed(n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xC4A5);
    let key = |rng: &mut fastrand::Rng| format!("key-{:03}", rng.u32(..KEYS)).into_bytes();
    let mut steps = Vec::new();
    for _ in 0..rng.usize(2..=6) {
        let len = if rng.u8(..10) == 0 { rng.usize(1000..3000) } else { rng.usize(0..300) };
        let mut value = vec![0; len];
        rng.fill(&mut value);
        if len >= 8 {
            value[..8].copy_from_slice(&n.to_le_bytes());
        }
        let align = if rng.bool() { ValueAlign::Sixteen } else { ValueAlign::Packed };
        steps.push(Step::Put { table: rng.usize(..2), key: key(&mut rng), value, align });
    }
    for _ in 0..rng.usize(0..=2) {
        steps.push(Step::Delete { table: rng.usize(..2), key: key(&mut rng) });
    }
    let last = Step::Put {
        table: 0,
        key: LAST.to_vec(),
        value: n.to_le_bytes().to_vec(),
        align: ValueAlign::Packed,
    };
    steps.insert(rng.usize(..=steps.len()), last);
    steps
}

fn apply(state: &mut State, steps: &[Step]) {
    for step in steps {
        match step {
            Step::Put { table, key, value, .. } => {
                state.insert((*table, key.clone()), value.clone());
            }
            Step::Delete { table, key } => {
                state.remove(&(*table, key.clone()));
            }
        }
    }
}

fn ops<'a>(steps: &'a [Step], tables: &'a [Table]) -> Vec<Op<'a>> {
    steps
        .iter()
        .map(|step| match step {
            Step::Put { table, key, value, align } => {
                Op::Put { table: &tables[*table], key, value, align: *align }
            }
            Step::Delete { table, key } => Op::Delete { table: &tables[*table], key },
        })
        .collect()
}

/// Everything the store holds, read through a snapshot.
fn dump(db: &Db) -> State {
    let snapshot = db.snapshot();
    let mut state = State::new();
    for (i, name) in TABLES.iter().enumerate() {
        let Some(table) = db.find_table(name) else { continue };
        for entry in snapshot.range(&table, ..) {
            let (key, value) = entry.expect("read");
            state.insert((i, key.to_vec()), value.to_vec());
        }
    }
    state
}

/// The number of the last batch the store holds (0: none).
fn last_batch(state: &State) -> u64 {
    state
        .get(&(0, LAST.to_vec()))
        .map_or(0, |v| u64::from_le_bytes(v[..8].try_into().expect("8-byte counter")))
}

/// A readable account of how two states differ (the first few differences).
fn diff(found: &State, expected: &State) -> String {
    let mut out = Vec::new();
    for (k, v) in expected {
        match found.get(k) {
            None => out.push(format!("missing {}:{}", k.0, String::from_utf8_lossy(&k.1))),
            Some(f) if f != v => out.push(format!(
                "wrong value under {}:{} ({} bytes, expected {})",
                k.0,
                String::from_utf8_lossy(&k.1),
                f.len(),
                v.len()
            )),
            Some(_) => {}
        }
    }
    for k in found.keys().filter(|k| !expected.contains_key(*k)) {
        out.push(format!("unexpected {}:{}", k.0, String::from_utf8_lossy(&k.1)));
    }
    let more = out.len().saturating_sub(8);
    out.truncate(8);
    format!("{}{}", out.join("; "), if more > 0 { format!("; and {more} more") } else { String::new() })
}

fn child_options() -> Options {
    Options {
        sync: SyncMode::Always,
        segment_size: SEGMENT_SIZE,
        checkpoint_bytes: 64 << 10,
        compaction_threshold: 0.3,
        ..Options::default()
    }
}

fn verify_options() -> Options {
    Options { segment_size: SEGMENT_SIZE, compaction_threshold: 0.0, ..Options::default() }
}

/// When the parent kills the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillAt {
    /// Right after spawning: before, during or just after the child's recovery.
    Spawn,
    /// Once the child has opened the store, before its first commit.
    Opened,
    /// When the child announces an explicit compaction (it is compacting when it dies).
    Compaction,
    /// After this many acknowledgements.
    Acks(u64),
}

/// What the parent read from one child.
#[derive(Debug, Default)]
struct Heard {
    start: Option<u64>,
    last_ack: Option<u64>,
    acks: u64,
    compactions: u64,
}

impl Heard {
    /// Takes in one line; true when `kill_at` is reached.
    fn line(&mut self, line: &str, kill_at: KillAt) -> bool {
        let Some(at) = line.find("TKV-") else { return false };
        let mut words = line[at..].split_whitespace();
        let (word, n) = (words.next().unwrap_or(""), words.next().and_then(|n| n.parse::<u64>().ok()));
        let n = n.unwrap_or_else(|| panic!("malformed child line {line:?}"));
        match word {
            "TKV-START" => {
                self.start = Some(n);
                kill_at == KillAt::Opened
            }
            "TKV-COMPACT" => {
                self.compactions += 1;
                kill_at == KillAt::Compaction
            }
            "TKV-ACK" => {
                let expected = self.last_ack.map_or(self.start, |a| Some(a + 1));
                assert_eq!(Some(n), expected, "acknowledgements out of order");
                self.last_ack = Some(n);
                self.acks += 1;
                kill_at == KillAt::Acks(self.acks)
            }
            _ => panic!("unknown child line {line:?}"),
        }
    }
}

/// Sums of the reopens' recovery reports.
#[derive(Debug, Default)]
struct Totals {
    kills: u64,
    acks: u64,
    unacknowledged_survivors: u64,
    kills_in_compaction: u64,
    hints_used: u64,
    hints_rejected: u64,
    batches_replayed: u64,
    bytes_scanned: u64,
    torn_tail_bytes: u64,
    torn_tails: u64,
}

impl Totals {
    fn add(&mut self, report: &RecoveryReport) {
        self.hints_used += u64::from(report.hint_used);
        self.hints_rejected += u64::from(report.hint_rejected.is_some());
        self.batches_replayed += report.batches_replayed;
        self.bytes_scanned += report.bytes_scanned;
        self.torn_tail_bytes += report.torn_tail_bytes;
        self.torn_tails += u64::from(report.torn_tail_bytes > 0);
    }
}

fn spawn_child(dir: &Path, log: &Path) -> (Reaped, BufReader<ChildStdout>) {
    let exe = std::env::current_exe().expect("test binary path");
    let log = std::fs::File::create(log).expect("child log");
    let mut child = Command::new(exe)
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(DIR_VAR, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("child stdout");
    (Reaped(child), BufReader::new(stdout))
}

/// The child: opens the store, continues after the last batch it holds, and writes batches
/// until it is killed (or its output pipe breaks because the parent is gone).
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(DIR_VAR) else { return };
    let db = Db::open(&dir, child_options()).expect("child: open");
    let tables: Vec<Table> = TABLES.iter().map(|name| db.table(name).expect("child: table")).collect();
    let start = db
        .get(&tables[0], LAST)
        .expect("child: read")
        .map_or(0, |v| u64::from_le_bytes(v[..8].try_into().expect("8-byte counter")))
        + 1;
    let mut out = std::io::stdout().lock();
    writeln!(out, "\nTKV-START {start}").expect("child: stdout");
    out.flush().expect("child: stdout");
    for n in start..start + 1_000_000 {
        if n % COMPACT_EVERY == 0 {
            writeln!(out, "TKV-COMPACT {n}").expect("child: stdout");
            out.flush().expect("child: stdout");
            db.compact().expect("child: compact");
        }
        let steps = batch(n);
        db.write(&ops(&steps, &tables)).expect("child: write");
        writeln!(out, "TKV-ACK {n}").expect("child: stdout");
        out.flush().expect("child: stdout");
    }
}

#[test]
fn sigkill_never_loses_an_acknowledged_batch_nor_keeps_part_of_one() {
    let kills: u64 = std::env::var("TYPED_KV_CRASH_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(200);
    let began = Instant::now();
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("db");
    let log = root.path().join("child.log");
    // The model: the store as of batch `applied`.
    let mut model = State::new();
    let mut applied = 0u64;
    let mut totals = Totals::default();
    for iteration in 0..kills {
        let mut rng = fastrand::Rng::with_seed(0x7E57_0000 + iteration);
        let kill_at = match rng.u8(..20) {
            0..=1 => KillAt::Spawn,
            2..=3 => KillAt::Opened,
            4..=6 => KillAt::Compaction,
            _ => KillAt::Acks(rng.u64(1..=25)),
        };
        let (mut child, mut stdout) = spawn_child(&dir, &log);
        let mut heard = Heard::default();
        let mut line = String::new();
        if kill_at != KillAt::Spawn {
            loop {
                line.clear();
                let read = stdout.read_line(&mut line).expect("read child stdout");
                if read == 0 {
                    let status = child.0.wait().expect("child status");
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    panic!("iteration {iteration}: the child exited ({status}) before {kill_at:?}: {log}");
                }
                if heard.line(&line, kill_at) {
                    break;
                }
            }
        }
        child.0.kill().expect("SIGKILL the child");
        child.0.wait().expect("reap the child");
        // Whatever the child printed before it died was acknowledged too.
        loop {
            line.clear();
            if stdout.read_line(&mut line).expect("drain child stdout") == 0 {
                break;
            }
            heard.line(&line, KillAt::Spawn);
        }
        if let Some(start) = heard.start {
            assert_eq!(
                start,
                applied + 1,
                "iteration {iteration}: the child did not resume after batch {applied}"
            );
        }
        totals.kills += 1;
        totals.acks += heard.acks;
        totals.kills_in_compaction += u64::from(kill_at == KillAt::Compaction);

        // Sometimes recover without the hint files, from the log alone.
        if rng.u8(..4) == 0 {
            for entry in std::fs::read_dir(&dir).expect("list the store") {
                let path = entry.expect("dir entry").path();
                if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("hint-")) {
                    std::fs::remove_file(&path).expect("remove a hint");
                }
            }
        }
        let db = Db::open(&dir, verify_options()).unwrap_or_else(|e| {
            panic!("iteration {iteration} ({kill_at:?}): reopen after SIGKILL failed: {e}")
        });
        let report = db.stats().recovery;
        assert!(report.repaired.is_empty(), "iteration {iteration}: nothing may need repair: {report:?}");
        totals.add(&report);
        let found = dump(&db);
        let last = last_batch(&found);
        let acked = heard.last_ack.unwrap_or(applied);
        assert!(
            last == acked || last == acked + 1,
            "iteration {iteration} ({kill_at:?}): the store holds batches up to {last}, but {acked} was the \
             last acknowledged one (only {} may be beyond it); recovery: {report:?}",
            acked + 1
        );
        totals.unacknowledged_survivors += u64::from(last == acked + 1);
        while applied < last {
            applied += 1;
            apply(&mut model, &batch(applied));
        }
        assert!(
            found == model,
            "iteration {iteration} ({kill_at:?}): the store is not batches 1..={last} exactly: {}; recovery: \
             {report:?}",
            diff(&found, &model)
        );
        drop(db);
    }
    eprintln!(
        "native crash test: {} kills ({} during an explicit compaction), {} acknowledged batches, {} batches in \
         the store, {} unacknowledged batches survived; recovery totals: hint used {} times, rejected {} times, \
         {} batches replayed, {} bytes scanned, {} torn tails ({} bytes cut); {:.1} s",
        totals.kills,
        totals.kills_in_compaction,
        totals.acks,
        applied,
        totals.unacknowledged_survivors,
        totals.hints_used,
        totals.hints_rejected,
        totals.batches_replayed,
        totals.bytes_scanned,
        totals.torn_tails,
        totals.torn_tail_bytes,
        began.elapsed().as_secs_f64()
    );
    assert!(totals.acks > kills, "too few acknowledged batches ({}) to mean anything", totals.acks);
}
