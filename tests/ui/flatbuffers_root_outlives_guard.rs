// `FlatbuffersView::root` ties the generated table's lifetime to the guard: a field read
// through it (`name()`, a `&str` into the stored buffer) cannot outlive the guard.
#[path = "../../examples/support/company.rs"]
mod company;

use company::Company;
use typed_kv::*;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let storage = StorageBuilder::new(dir.path()).build().unwrap();
    let table = storage
        .new_table::<u64, Company>("companies")
        .with_key_format(OrderedFormat::new())
        .with_value_format(FlatbuffersFormat::new())
        .build()
        .unwrap();
    let name = {
        let g = table.get(&1).unwrap().unwrap();
        g.root().name()
    };
    println!("{name}");
}
