//! typed-kv's fuzz target bodies. Each `fuzz_targets/<name>.rs` calls `targets::<name>`;
//! tests/fuzz_corpus.rs runs the same functions over the committed corpora on stable Rust.

#[path = "../../examples/support/company.rs"]
pub mod company;
pub mod targets;
