//! Runs every fuzz target's body (fuzz/src/targets.rs) over its committed seed corpus
//! (`fuzz/corpus/<target>/`) and its regression inputs (`fuzz/regressions/<target>/`), so the
//! inputs that once broke a decoder keep being tried on stable Rust, without cargo-fuzz.
//!
//! `cargo test --test fuzz_corpus -- --ignored regenerate_seed_corpus` rewrites the seed
//! corpus from typed-kv's real encoders (fuzz/src/seeds.rs).
#![cfg(feature = "native")]

#[path = "../examples/support/company.rs"]
mod company;
#[path = "../fuzz/src/seeds.rs"]
mod seeds;
#[path = "../fuzz/src/targets.rs"]
mod targets;

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted; none if it does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> =
        entries.map(|entry| entry.expect("directory entry").path()).filter(|path| path.is_file()).collect();
    files.sort();
    files
}

/// Runs `target` over each file of `dir`, naming the file if the body panics.
fn replay(target: &str, body: targets::Body, dir: &Path) -> usize {
    let files = inputs(dir);
    for file in &files {
        let bytes = std::fs::read(file).expect("read input");
        let outcome = std::panic::catch_unwind(|| body(&bytes));
        assert!(outcome.is_ok(), "fuzz target {target} failed on {}", file.display());
    }
    files.len()
}

#[test]
fn seed_corpora_and_regressions_pass() {
    for &(target, body) in targets::TARGETS {
        let seeds = replay(target, body, &fuzz_dir().join("corpus").join(target));
        assert!(seeds > 0, "fuzz/corpus/{target}/ has no seeds");
        replay(target, body, &fuzz_dir().join("regressions").join(target));
    }
}

#[test]
fn seed_generator_still_runs() {
    // The committed seeds are not compared byte for byte (engine layout changes would make
    // them stale without making them useless), but regenerating them must keep working.
    let seeds = seeds::all();
    for &(target, _) in targets::TARGETS {
        assert!(seeds.iter().any(|(t, _, _)| *t == target), "no seed generated for {target}");
    }
}

#[test]
#[ignore = "rewrites fuzz/corpus/: run by hand after a format change"]
fn regenerate_seed_corpus() {
    seeds::write(&fuzz_dir().join("corpus"));
}
