//! Misuses that must not compile: guards, views and iterators outliving what they borrow, and
//! `range` on keys whose bytes do not sort like the keys. Each case in `tests/ui/` is checked
//! against the compiler's error in its `.stderr` file (regenerate with
//! `TRYBUILD=overwrite cargo test --test compile_fail`, then review the diff).
//!
//! Not in builds with the `rocksdb` feature: trybuild compiles the crate again in a target
//! directory of its own, with the same features, which would rebuild RocksDB's C++ (20+
//! minutes). The lifetimes checked here belong to the typed layer, not to any backend;
//! `.ci/run` runs this test with the default features.
#![cfg(not(feature = "rocksdb"))]

#[test]
fn compile_fail() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
