// A guard borrows the table it came from: dropping the table while the guard is in use must
// not compile (the guard may hold the engine's bytes, which the table keeps alive).
use typed_kv::*;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Record {
    name: String,
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let storage = StorageBuilder::new(dir.path()).build().unwrap();
    let table = storage
        .new_table::<u64, Record>("records")
        .with_key_format(OrderedFormat::new())
        .with_value_format(RkyvFormat::new())
        .build()
        .unwrap();
    let guard = table.get(&1).unwrap().unwrap();
    drop(table);
    println!("{}", guard.name);
}
