//! Misuses that must not compile: guards, views and iterators outliving what they borrow, and
//! `range` on keys whose bytes do not sort like the keys. Each case in `tests/ui/` is checked
//! against the compiler's error in its `.stderr` file (regenerate with
//! `TRYBUILD=overwrite cargo test --test compile_fail`, then review the diff).

#[test]
fn compile_fail() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
