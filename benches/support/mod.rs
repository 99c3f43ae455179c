//! What the benchmark binaries share: the shape of redb's workload (24-byte random keys,
//! 150-byte random values) and reading numbers from the environment. Each binary uses a
//! part of it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// A benchmark's result: any error, reported by `main`.
pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Key length of redb's workload.
pub const KEY_LEN: usize = 24;
/// Value length of redb's workload.
pub const VALUE_LEN: usize = 150;

/// The number in variable `name` (`_` and `,` allowed as separators), or `default`.
pub fn env_usize(name: &str, default: usize) -> Res<usize> {
    match std::env::var(name) {
        Ok(s) => Ok(s.replace(['_', ','], "").parse().map_err(|e| format!("{name}={s:?}: {e}"))?),
        Err(_) => Ok(default),
    }
}

/// One random key and value of the workload's sizes.
pub fn random_pair(rng: &mut fastrand::Rng) -> (Vec<u8>, Vec<u8>) {
    let mut key = vec![0; KEY_LEN];
    rng.fill(&mut key);
    let mut value = vec![0; VALUE_LEN];
    rng.fill(&mut value);
    (key, value)
}

/// `n` random keys and their values, as two lists.
pub fn random_pairs(rng: &mut fastrand::Rng, n: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    (0..n).map(|_| random_pair(rng)).unzip()
}

/// The directory in variable `name`, or `<crate>/bench-results/`, created.
pub fn work_dir(name: &str) -> Res<PathBuf> {
    let dir = match std::env::var_os(name) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("bench-results"),
    };
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
